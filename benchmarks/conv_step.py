"""The MNIST-1D CNN's training step (issue 15): cedf's planned step against PyTorch eager, and
against the floor of the step as issue 15 defines it, its im2col GEMMs alone (cedf computes the
same sums as smaller products per output position, see cedf/_conv.pyx). Prints timings; used by
nothing else.

    python benchmarks/conv_step.py [--rounds 7] [--threads 1] [--clock process]

The model, float32, batch 100: x (100, 1, 40); Conv(1->25, k5, s2, p1) -> ReLU -> Conv(25->25,
k3, s2, p1) -> ReLU -> Conv(25->25, k3, s2, p1) -> ReLU -> Flatten -> Affine(125->10) ->
SoftmaxCrossEntropyLoss, Adam. A step is Forward, Backward, the optimiser's step. Each round
times every contestant (median of 15 timings of 100 steps, in us per step), alternating, so
that a machine shared with other work slows them alike; the medians over rounds are printed.
The floor: the GEMMs of the three convolutions' forward and backward (dX for the two that
need it), float32, as np.matmul calls into preallocated outputs (the same OpenBLAS as cedf's).
--threads 1 runs everything on one thread (cedf's and NumPy's BLAS, torch); --clock process
times CPU time instead of wall time, which a machine busy with other work disturbs less (for
one thread only: it adds up the threads).
"""
import argparse
import time

import numpy as np

import cedf as edf

N, L, CH, CLASSES = 100, 40, 25, 10
LAYERS = [(1, 5), (CH, 3), (CH, 3)]   # (in channels, kernel), stride 2 and padding 1 each


def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((N, 1, L)).astype(np.float32), rng.integers(0, CLASSES, N)


def cedf_step():
    X, Y = data()
    edf.DT = np.float32
    np.random.seed(0)
    g = edf.Graph()
    with g:
        x, y = edf.Input(), edf.Input()
        x.value, y.value = X, Y
        h = x
        for c, k in LAYERS:
            h = edf.ReLU(edf.Conv(edf.ConvParams(c, CH, k), h, stride=2, padding=1))
        loss = edf.SoftmaxCrossEntropyLoss(edf.Affine(edf.AffineParams(CH * 5, CLASSES), edf.Flatten(h)), y)
    opt = edf.optim.Adam(g.Parameters, lr=1e-2)

    def step():
        g.Forward()
        g.Backward(loss)
        opt.step()
    step()
    step()
    assert g._planned
    return step


def torch_step(threads):
    import torch
    torch.set_num_threads(threads)
    X, Y = data()
    torch.manual_seed(0)
    layers = []
    for c, k in LAYERS:
        layers += [torch.nn.Conv1d(c, CH, k, stride=2, padding=1), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(CH * 5, CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return step


def floor_step():
    """The convolutions' GEMMs alone: W @ cols, g cols^T, W^T g (not for the first layer)."""
    rng = np.random.default_rng(0)
    products = []
    length = L
    for i, (c, k) in enumerate(LAYERS):
        length = (length + 2 - k) // 2 + 1
        ck, cols_n = c * k, N * length
        W, cols = rng.standard_normal((CH, ck), np.float32), rng.standard_normal((ck, cols_n), np.float32)
        g, out = rng.standard_normal((CH, cols_n), np.float32), np.empty((CH, cols_n), np.float32)
        gW, dcols = np.empty((CH, ck), np.float32), np.empty((ck, cols_n), np.float32)
        products += [(W, cols, out), (g, cols.T, gW)]
        if i:
            products.append((W.T, g, dcols))

    def step():
        for a, b, out in products:
            np.matmul(a, b, out=out)
    return step


def median_us(step, clock=time.perf_counter, calls=100, timings=15):
    for _ in range(20):
        step()
    samples = []
    for _ in range(timings):
        start = clock()
        for _ in range(calls):
            step()
        samples.append((clock() - start) / calls * 1e6)
    return float(np.median(samples))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, choices=[1], help="one thread for every contestant")
    parser.add_argument("--clock", choices=["wall", "process"], default="wall")
    args = parser.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.threads:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(limits=1, user_api="blas")   # noqa: F841 (held for the run)
        edf.set_num_threads(1)
    contestants = {"cedf": cedf_step(), "floor (conv GEMMs)": floor_step()}
    try:
        import torch
        if not args.threads:
            contestants[f"torch eager, {torch.get_num_threads()} threads"] = torch_step(torch.get_num_threads())
        contestants["torch eager, 1 thread"] = torch_step(1)
    except ImportError:
        pass
    times = {name: [] for name in contestants}
    for _ in range(args.rounds):
        for name, step in contestants.items():
            if name.startswith("torch"):
                torch.set_num_threads(int(name.split(", ")[1].split()[0]))
            times[name].append(median_us(step, clock))
    medians = {name: float(np.median(t)) for name, t in times.items()}
    for name, t in medians.items():
        print(f"{name:<28} {t:8.1f} us/step   (rounds: {', '.join(f'{v:.0f}' for v in times[name])})")
    cedf_us = medians["cedf"]
    print(f"cedf / floor {cedf_us / medians['floor (conv GEMMs)']:.2f}")
    for name, t in medians.items():
        if name.startswith("torch"):
            print(f"{name} / cedf {t / cedf_us:.2f}")


if __name__ == "__main__":
    main()
