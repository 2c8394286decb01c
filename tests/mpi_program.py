"""What tests/test_distributed.py runs under mpiexec: one training on every rank, results to files.

    mpiexec -n N python mpi_program.py CASE OUT_DIR

Every rank writes OUT_DIR/rank<r>.npz: the parameters after training (p0, p1, ...),
how the gradients were summed (transport), and, for the fit case, the History
(loss, accuracy); or OUT_DIR/rank<r>.txt with the
error it raised. The test process computes what one process gives on the global
batch itself, with cedf alone, and compares.
"""
import sys
from pathlib import Path

import numpy as np

import cedf as edf
from cedf import distributed as dist
from cedf import optim

GLOBAL_BATCH, STEPS, FEATURES, HIDDEN, CLASSES = 101, 20, 5, 7, 3


def data():
    rng = np.random.default_rng(0)
    n = GLOBAL_BATCH * STEPS
    return rng.standard_normal((n, FEATURES)), rng.integers(0, CLASSES, n)


def build(seed, hidden=HIDDEN):
    """The MLP, its parameters drawn from `seed` (each rank its own: broadcast_parameters makes them equal)."""
    np.random.seed(seed)
    edf.DT = np.float64
    edf.clear_compgraph()
    x, y = edf.Input(), edf.Input()
    h = edf.Tanh(edf.Affine(edf.AffineParams(FEATURES, hidden, name="hidden"), x))
    L = edf.SoftmaxCrossEntropyLoss(edf.Affine(edf.AffineParams(hidden, CLASSES, name="out"), h), y)
    return x, y, L


def make_optimizer(kind):
    edf.learning_rate = 0.1
    return optim.Adam(edf.Parameters, lr=0.01) if kind == "adam" else None


def steps(kind, rank, size):
    """The lecture's loop on this rank's share of each global batch."""
    X, Y = data()
    x, y, L = build(seed=rank)
    dist.broadcast_parameters()
    opt = make_optimizer(kind)
    lo, hi = dist.share(GLOBAL_BATCH, rank, size)
    for step in range(STEPS):
        batch = slice(step * GLOBAL_BATCH, (step + 1) * GLOBAL_BATCH)
        x.value, y.value = X[batch][lo:hi], Y[batch][lo:hi]
        edf.Forward()
        edf.Backward(L)
        dist.allreduce_gradients()
        opt.step() if opt is not None else edf.UpdateParameters()
    return {}


def fit(batch_size, rank):
    X, Y = data()
    x, y, L = build(seed=rank)
    history = edf.fit(L, x, y, X, Y, epochs=3, batch_size=batch_size, optimizer=make_optimizer("adam"),
                      seed=5, progress=False, distributed=True)
    return {"loss": history.loss, "accuracy": history.accuracy}


def mismatched(rank):
    build(seed=0, hidden=HIDDEN + (rank == 1))
    dist.broadcast_parameters()
    return {}


def bad_batch(rank):
    """Rank 1 passes a batch that is no number of examples: every rank must refuse the step, none wait."""
    X, Y = data()
    x, y, L = build(seed=0)
    dist.broadcast_parameters()
    x.value, y.value = X[:10], Y[:10]
    edf.Forward()
    edf.Backward(L)
    dist.allreduce_gradients(batch=float("nan") if rank == 1 else None)
    return {}


def regraph(rank, size, who):
    """A step, then the graph built anew (new parameters, another hidden width) by rank 1 alone
    (`who` "one") or by every rank ("all"), then another step: the ranks must all refuse it, or
    all make their fused buffers anew and sum; none may wait for the others forever."""
    X, Y = data()
    lo, hi = dist.share(GLOBAL_BATCH, rank, size)
    for step, hidden in enumerate((HIDDEN, HIDDEN + 1)):
        if step == 0 or who == "all" or rank == 1:
            x, y, L = build(seed=0, hidden=hidden)
        if step == 0:
            dist.broadcast_parameters()
        x.value, y.value = X[:GLOBAL_BATCH][lo:hi], Y[:GLOBAL_BATCH][lo:hi]
        edf.Forward()
        edf.Backward(L)
        dist.allreduce_gradients()
    return {f"g{i}": p.grad for i, p in enumerate(edf.Parameters)}


def hostile(rank, kind):
    """Use that is wrong on some rank(s), after one good step: every rank must raise, none wait."""
    X, Y = data()
    x, y, L = build(seed=0)
    dist.broadcast_parameters()
    x.value, y.value = X[:10], Y[:10]
    for step in range(2):
        if kind == "no_backward" and step == 0:
            if rank == 0:
                edf.Forward()
                edf.Backward(L)
            dist.allreduce_gradients()
            continue
        edf.Forward()
        edf.Backward(L)
        if step == 0:
            dist.allreduce_gradients()
            continue
        if kind == "value_shape" and rank == 1:   # a parameter's value replaced by one of another shape
            edf.Parameters[0].value = np.zeros((FEATURES, HIDDEN + 1))
        if kind == "new_graph" and rank == 1:     # the model built again in a graph of its own
            with edf.Graph() as g:
                x, y, L = build(seed=0), None, None
            dist.allreduce_gradients(g, batch=10)
        elif kind == "huge_batch":
            dist.allreduce_gradients(batch=2 ** 40 + 5 if rank == 0 else None)
        elif kind == "zero_total":
            dist.allreduce_gradients(batch=0, total=0)
        elif kind == "no_examples":
            dist.allreduce_gradients(batch=0)
        else:
            dist.allreduce_gradients()
    return {}


def transport_alone(rank):
    """Rank 0 alone asks how the gradients are summed (as benchmarks/distributed_steps.py does)."""
    build(seed=0)
    dist.broadcast_parameters()
    asked = dist.transport() if rank == 0 else ""
    dist._comm("test").Barrier()
    return {"asked": asked}


def checkpoint(out, rank):
    """Train, save by rank 0, scramble every rank's parameters, load: rank 0's values everywhere."""
    steps("sgd", rank, dist.size())
    dist.save(out / "model.npz")
    saved = [p.value.copy() for p in edf.Parameters]
    for p in edf.Parameters:
        p.value[...] = rank + 1.0
    dist.load(out / "model.npz")
    return {"saved": np.concatenate([v.ravel() for v in saved])}


def main():
    case, out = sys.argv[1], Path(sys.argv[2])
    rank, size = dist.init()
    try:
        if case in ("sgd", "adam"):
            extra = steps(case, rank, size)
        elif case.startswith("fit"):
            extra = fit(int(case[3:]), rank)
        elif case == "mismatched":
            extra = mismatched(rank)
        elif case == "bad_batch":
            extra = bad_batch(rank)
        elif case.startswith("regraph_"):
            extra = regraph(rank, size, case[len("regraph_"):])
        elif case.startswith("hostile_"):
            extra = hostile(rank, case[len("hostile_"):])
        elif case == "transport_alone":
            extra = transport_alone(rank)
        elif case == "checkpoint":
            extra = checkpoint(out, rank)
        else:
            raise SystemExit(f"unknown case {case}")
    except Exception as exc:
        (out / f"rank{rank}.txt").write_text(f"{type(exc).__name__}: {exc}")
        return
    params = {f"p{i}": p.value for i, p in enumerate(edf.Parameters)}
    np.savez(out / f"rank{rank}.npz", size=size, transport=dist.transport(), **params, **extra)


if __name__ == "__main__":
    main()
