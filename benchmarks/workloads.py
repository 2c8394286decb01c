"""The workloads of cedf's benchmarks, and one training step of each on every contender.

One training step is ``Forward(); Backward(L); UpdateParameters()`` (plain SGD)
on a fixed batch. Hidden layers are sigmoid; the head is softmax +
cross-entropy, or sigmoid + binary cross-entropy for the one-output case.

Contenders: cedf on either backend, the lecture's EDF in NumPy
(`cedf.lecture`), PyTorch eager when installed, and the floor: the matrix
products that a step cannot avoid (forward, dW of every layer, dX of every
layer but the first), done by NumPy's BLAS into ready buffers. The same floor
through SciPy's BLAS, the OpenBLAS build cedf falls back to (SciPy's wheels and
NumPy's each bring their own, and they differ), tells what that build costs.
"""
import numpy as np

#: name -> (batch, layer widths)
WORKLOADS = {
    "logreg2d": (1000, (2, 1)),
    "mlp_digits": (128, (64, 32, 10)),
    "mlp_mnist": (128, (784, 256, 10)),
    "mlp_large": (1024, (784, 1024, 10)),
}


def data(workload, dtype, seed=0):
    """A fixed random batch for `workload`: X (batch, inputs) and integer labels."""
    batch, widths = WORKLOADS[workload]
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, widths[0])).astype(dtype)
    n_classes = 2 if widths[-1] == 1 else widths[-1]
    return X, rng.integers(0, n_classes, batch)


def _build(edf, workload, dtype):
    """The workload's graph in `edf` (cedf or the lecture's module); returns (x, loss, output)."""
    X, labels = data(workload, dtype)
    _, widths = WORKLOADS[workload]
    np.random.seed(0)
    edf.clear_compgraph()
    edf.DT = dtype
    edf.learning_rate = 0.01
    x, y = edf.Input(), edf.Input()
    x.value, y.value = X, labels
    h = x
    for n_in, n_out in zip(widths[:-2], widths[1:-1]):
        h = edf.Sigmoid(edf.Affine(edf.AffineParams(n_in, n_out), h))
    logits = edf.Affine(edf.AffineParams(widths[-2], widths[-1]), h)
    if widths[-1] == 1:
        p = edf.Sigmoid(logits)
        return x, edf.BCELoss(p, y), p
    p = edf.Softmax(logits)
    return x, edf.CrossEntropyLoss(p, y), p


def edf_step(edf, workload, dtype):
    """A training step of the graph built in `edf` (cedf, either backend, or cedf.lecture)."""
    _, L, _ = _build(edf, workload, dtype)

    def step():
        edf.Forward()
        edf.Backward(L)
        edf.UpdateParameters()
    return step


def edf_forward(edf, workload, dtype):
    """Forward alone (inference) of the graph built in `edf`."""
    _build(edf, workload, dtype)
    return edf.Forward


def torch_step(workload, dtype):
    """The same step in PyTorch eager mode on the CPU: forward, backward, SGD."""
    import torch

    X, labels = data(workload, dtype)
    _, widths = WORKLOADS[workload]
    tdtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    layers = []
    for n_in, n_out in zip(widths[:-2], widths[1:-1]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.Sigmoid()]
    layers.append(torch.nn.Linear(widths[-2], widths[-1]))
    model = torch.nn.Sequential(*layers).to(tdtype)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.from_numpy(X)
    if widths[-1] == 1:
        y = torch.from_numpy(labels.astype(dtype))
        loss_fn = lambda out: torch.nn.functional.binary_cross_entropy(torch.sigmoid(out[:, 0]), y)  # noqa: E731
    else:
        y = torch.from_numpy(labels)
        loss_fn = lambda out: torch.nn.functional.cross_entropy(out, y)  # noqa: E731

    def step():
        opt.zero_grad()
        loss_fn(model(x)).backward()
        opt.step()
    return step


class _Floor:
    """The products of one step, by NumPy's BLAS into buffers allocated once."""

    def __init__(self, workload, dtype):
        X, _ = data(workload, dtype)
        _, widths = WORKLOADS[workload]
        rng = np.random.default_rng(1)
        batch = X.shape[0]
        self.x = X
        self.W = [rng.standard_normal((i, o)).astype(dtype) for i, o in zip(widths[:-1], widths[1:])]
        self.h = [np.empty((batch, o), dtype) for o in widths[1:]]        # layer outputs
        self.g = [rng.standard_normal((batch, o)).astype(dtype) for o in widths[1:]]  # dL/d(output)
        self.dW = [np.empty_like(W) for W in self.W]
        self.dX = [np.empty((batch, i), dtype) for i in widths[1:-1]]     # dX of layers 2..n
        self.matmul = np.matmul   # matmul(a, b, out=out): out = a @ b

    def forward(self):
        inp = self.x
        for W, out in zip(self.W, self.h):
            self.matmul(inp, W, out=out)
            inp = out

    def step(self):
        self.forward()
        inputs = [self.x] + self.h[:-1]
        for k in range(len(self.W)):
            self.matmul(inputs[k].T, self.g[k], out=self.dW[k])
            if k > 0:
                self.matmul(self.g[k], self.W[k].T, out=self.dX[k - 1])


class _ScipyFloor(_Floor):
    """The same products through SciPy's BLAS wrappers (``scipy.linalg.blas``).

    The wrappers take Fortran-ordered arrays without a copy, and a C-ordered
    array's transpose is one: row-major ``out = a @ b`` is column-major
    ``out.T = b.T @ a.T``, each operand passed as it is stored (a transposed
    view goes in as its Fortran-ordered self, with the transpose flag set).
    A wrapper call costs less than `np.matmul`'s (1.7 against 2.6 us for a
    2 x 2 product here).
    """

    def __init__(self, workload, dtype):
        super().__init__(workload, dtype)
        from scipy.linalg import blas
        gemm = blas.sgemm if self.x.dtype == np.float32 else blas.dgemm

        def stored(m):
            return (m.T, False) if m.flags.c_contiguous else (m, True)

        def matmul(a, b, out):
            (b_, trans_b), (a_, trans_a) = stored(b), stored(a)
            gemm(1.0, b_, a_, c=out.T, overwrite_c=True, trans_a=trans_b, trans_b=trans_a)
        self.matmul = matmul


def _floor(workload, dtype, blas):
    return (_ScipyFloor if blas == "scipy" else _Floor)(workload, dtype)


def floor_step(workload, dtype, blas="numpy"):
    return _floor(workload, dtype, blas).step


def floor_forward(workload, dtype, blas="numpy"):
    return _floor(workload, dtype, blas).forward
