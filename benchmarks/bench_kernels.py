"""Each kernel alone: time and peak memory of one call, per backend, dtype and size.

"cython" is `cedf._kernels`, "numpy" is `cedf.reference`: the same functions with
the same signatures, so every benchmark runs one line on either module. The
sizes are the layers of the workloads in workloads.py (their affine shapes,
hidden activations and heads). Backward kernels add into their gradient buffers,
as the nodes use them, so the buffers are made once and never reset.
"""
import importlib

import numpy as np

BACKENDS = {"cython": "cedf._kernels", "numpy": "cedf.reference"}
DTYPES = ["float32", "float64"]


class _Kernels:
    param_names = ["backend", "dtype", "size"]

    def setup(self, backend, dtype, size):
        self.k = importlib.import_module(BACKENDS[backend])
        self.rng = np.random.default_rng(0)
        self.dtype = np.dtype(dtype)
        self.make(*(int(n) for n in size.split("x")))

    def normal(self, *shape):
        return self.rng.standard_normal(shape).astype(self.dtype)

    def zeros(self, *shape):
        return np.zeros(shape, self.dtype)

    # Peak memory of the very calls that time_forward and time_backward time:
    # the reference's temporaries (float64 copies, g @ A.T) show up here.
    def peakmem_forward(self, *params):
        self.time_forward(*params)

    def peakmem_backward(self, *params):
        self.time_backward(*params)


class Affine(_Kernels):
    """out = x @ A + b; backward computes all three of gx, gA and gb."""
    # batch x inputs x outputs: the layers of logreg2d, mlp_digits, mlp_mnist and mlp_large
    params = [list(BACKENDS), DTYPES,
              ["1000x2x1", "128x64x32", "128x784x256", "1024x784x1024", "1024x1024x10"]]

    def make(self, batch, n_in, n_out):
        self.x, self.A, self.b = self.normal(batch, n_in), self.normal(n_in, n_out), self.normal(n_out)
        self.out, self.g = self.zeros(batch, n_out), self.normal(batch, n_out)
        self.gx, self.gA, self.gb = self.zeros(batch, n_in), self.zeros(n_in, n_out), self.zeros(n_out)

    def time_forward(self, *_):
        self.k.affine_forward(self.x, self.A, self.b, self.out)

    def time_backward(self, *_):
        self.k.affine_backward(self.x, self.A, self.g, self.gx, self.gA, self.gb)


class Sigmoid(_Kernels):
    """Elementwise over a flat buffer, as the node passes any shape."""
    # logreg2d's output, mlp_mnist's and mlp_large's hidden layers
    params = [list(BACKENDS), DTYPES, ["1000", "32768", "1048576"]]

    def make(self, n):
        self.x, self.out = self.normal(n), self.zeros(n)
        self.s = 1 / (1 + np.exp(-self.x))
        self.g, self.gx = self.normal(n), self.zeros(n)

    def time_forward(self, *_):
        self.k.sigmoid_forward(self.x, self.out)

    def time_backward(self, *_):
        self.k.sigmoid_backward(self.s, self.g, self.gx)


class Tanh(Sigmoid):
    """The same buffers as Sigmoid's, so that the two activations compare directly."""

    def make(self, n):
        super().make(n)
        self.t = np.tanh(self.x)

    def time_forward(self, *_):
        self.k.tanh_forward(self.x, self.out)

    def time_backward(self, *_):
        self.k.tanh_backward(self.t, self.g, self.gx)


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Softmax(_Kernels):
    """Row-wise softmax of a batch x classes block."""
    params = [list(BACKENDS), DTYPES, ["128x10", "1024x10", "1024x1000"]]

    def make(self, batch, n_classes):
        self.x, self.out = self.normal(batch, n_classes), self.zeros(batch, n_classes)
        self.p = _softmax(self.x)
        self.g, self.gx = self.normal(batch, n_classes), self.zeros(batch, n_classes)

    def time_forward(self, *_):
        self.k.softmax_forward(self.x, self.out)

    def time_backward(self, *_):
        self.k.softmax_backward(self.p, self.g, self.gx)


class CrossEntropy(_Kernels):
    """-log p[i, label_i] of softmax outputs, int64 labels; backward touches one entry per row."""
    params = [list(BACKENDS), DTYPES, ["128x10", "1024x10", "1024x1000"]]

    def make(self, batch, n_classes):
        self.p = _softmax(self.normal(batch, n_classes))
        self.labels = self.rng.integers(0, n_classes, batch, dtype=np.int64)
        self.out = self.zeros(batch)
        self.g = np.full(batch, 1 / batch, self.dtype)
        self.gp = self.zeros(batch, n_classes)

    def time_forward(self, *_):
        self.k.cross_entropy_forward(self.p, self.labels, self.out)

    def time_backward(self, *_):
        self.k.cross_entropy_backward(self.p, self.labels, self.g, self.gp)


class BCE(_Kernels):
    """Binary cross-entropy of flat probabilities against labels in {0, 1}."""
    params = [list(BACKENDS), DTYPES, ["1000", "32768", "1048576"]]

    def make(self, n):
        self.p = self.rng.uniform(0.01, 0.99, n).astype(self.dtype)
        self.y = self.rng.integers(0, 2, n).astype(self.dtype)
        self.out = self.zeros(n)
        self.g = np.full(n, 1 / n, self.dtype)
        self.gp = self.zeros(n)

    def time_forward(self, *_):
        self.k.bce_forward(self.p, self.y, self.out)

    def time_backward(self, *_):
        self.k.bce_backward(self.p, self.y, self.g, self.gp)

