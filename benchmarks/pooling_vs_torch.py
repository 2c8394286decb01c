"""cedf's pooling kernels against PyTorch's, on MNIST-1D-sized activations: (100, 25, 20).

Run ``python benchmarks/pooling_vs_torch.py`` with cedf and torch installed. Each
number is the best of 7 runs of 1000 calls, in microseconds per call; torch runs
on one thread, its input requiring a gradient (as in training: the max-pool then
records its indices) and its backward through autograd. A rough comparison:
on a shared machine the numbers move by a factor of two from run to run.
(Not an asv benchmark: asv imports this module, which does nothing then.)
"""
import timeit

import numpy as np

SHAPE = (100, 25, 20)
WINDOWS = [(2, 2), (3, 2), (3, 1)]   # (size, stride)


def best(fn, number=1000, repeat=7):
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def measure(dtype, size, stride):
    import torch

    from cedf import _kernels

    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE).astype(dtype)
    x4 = x.reshape(SHAPE[0], SHAPE[1], 1, SHAPE[2])   # the kernels' (N, C, H, W), H = 1
    length = (SHAPE[2] - size) // stride + 1
    out = np.empty((SHAPE[0], SHAPE[1], 1, length), dtype)
    argmax = np.empty(out.shape, np.int64)
    g, gx = rng.standard_normal(out.shape).astype(dtype), np.zeros_like(x4)
    window = (1, size, 1, stride)
    _kernels.maxpool_forward(x4, out, argmax, *window)
    t = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(g.reshape(SHAPE[0], SHAPE[1], length))
    F = torch.nn.functional
    t_max, t_avg = F.max_pool1d(t, size, stride), F.avg_pool1d(t, size, stride)
    return {
        "max forward": (best(lambda: _kernels.maxpool_forward(x4, out, argmax, *window)),
                        best(lambda: F.max_pool1d(t, size, stride))),
        "max backward": (best(lambda: _kernels.maxpool_backward(g, argmax, gx)),
                         best(lambda: torch.autograd.grad(t_max, t, tg, retain_graph=True))),
        "avg forward": (best(lambda: _kernels.avgpool_forward(x4, out, *window)),
                        best(lambda: F.avg_pool1d(t, size, stride))),
        "avg backward": (best(lambda: _kernels.avgpool_backward(g, gx, *window)),
                         best(lambda: torch.autograd.grad(t_avg, t, tg, retain_graph=True))),
    }


def main():
    import torch

    torch.set_num_threads(1)
    print(f"{'input (100, 25, 20)':<32} {'cedf us':>9} {'torch us':>9} {'torch / cedf':>13}")
    for dtype in (np.float32, np.float64):
        for size, stride in WINDOWS:
            for what, (ours, theirs) in measure(dtype, size, stride).items():
                label = f"{np.dtype(dtype).name} size {size} stride {stride} {what}"
                print(f"{label:<32} {ours:9.1f} {theirs:9.1f} {theirs / ours:12.1f}x")


if __name__ == "__main__":
    main()
