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

Labels come in two kinds (`LABELS`): int64 class indices, and the same
numbers as float32 ("integral floats", what the lecture's
``y.value = Load(labels)`` often gives). A cedf step must be as fast with
either.

The training loop (issue 14) runs on `MLP_MNIST1D`, a 40-100-100-10 MLP with
ReLU hidden layers and `SoftmaxCrossEntropyLoss` (the fused softmax and
cross-entropy that PyTorch's `CrossEntropyLoss` also is), batch 100, on 4000
synthetic examples the size of MNIST-1D (`mnist1d_data`): a step with
`cedf.optim.Adam` or `SGD` against the bare step (`optimizer_step`,
`sgd_step`), an epoch of `cedf.fit` (`fit_epoch`), and the whole training
of 30 epochs by cedf's `fit`, PyTorch eager and scikit-learn's
`MLPClassifier` (`cedf_training`, `torch_training`, `sklearn_training`).
Those cedf graphs live in a `cedf.Graph` of their own each, so that two of them
(an Adam step and a bare step) can be timed in turns.
"""
import warnings
from types import SimpleNamespace

import numpy as np

#: name -> (batch, layer widths)
WORKLOADS = {
    "logreg2d": (1000, (2, 1)),
    "mlp_digits": (128, (64, 32, 10)),
    "mlp_mnist": (128, (784, 256, 10)),
    "mlp_large": (1024, (784, 1024, 10)),
}

#: The label kinds a step is measured with: int64 class indices, or the same whole numbers as float32.
LABELS = ("int64", "float32")

#: The MNIST-1D-sized MLP of issue 14 (not in WORKLOADS: its hidden layers are ReLU, which the
#: lecture's EDF lacks, so it has no row in the step table).
MLP_MNIST1D = "mlp_mnist1d"
MNIST1D = SimpleNamespace(batch=100, widths=(40, 100, 100, 10), examples=4000, epochs=30, lr=1e-2)


def _spec(workload):
    """(batch, widths, hidden activation, head) of `workload`."""
    if workload == MLP_MNIST1D:
        return MNIST1D.batch, MNIST1D.widths, "ReLU", "SoftmaxCrossEntropyLoss"
    batch, widths = WORKLOADS[workload]
    return batch, widths, "Sigmoid", ("BCELoss" if widths[-1] == 1 else "CrossEntropyLoss")


def as_labels(labels, kind):
    """Integer class indices as `kind` (one of LABELS): int64, or float32 holding the same whole numbers."""
    if kind not in LABELS:
        raise ValueError(f"labels must be one of {LABELS}, got {kind!r}")
    return np.asarray(labels).astype(np.dtype(kind))


def mnist1d_data(n=MNIST1D.examples, dtype=np.float32, labels="int64", seed=0):
    """`n` synthetic examples the shape of MNIST-1D: X (n, 40) in `dtype`, labels of 10 classes.

    Each class is a random centre in 40 dimensions plus Gaussian noise, so
    that training has something to learn (the contenders' losses can be
    compared), but it is not MNIST-1D: only the sizes are.
    """
    n_in, n_classes = MNIST1D.widths[0], MNIST1D.widths[-1]
    rng = np.random.default_rng(seed)
    Y = rng.integers(0, n_classes, n)
    centres = rng.standard_normal((n_classes, n_in))
    X = (centres[Y] + 2.0 * rng.standard_normal((n, n_in))).astype(dtype)
    return X, as_labels(Y, labels)


def data(workload, dtype, seed=0, labels="int64"):
    """A fixed random batch for `workload`: X (batch, inputs) and class labels of kind `labels`.

    For MLP_MNIST1D, the first batch of `mnist1d_data`.
    """
    if workload == MLP_MNIST1D:
        X, Y = mnist1d_data(dtype=dtype, labels=labels, seed=seed)
        return X[:MNIST1D.batch], Y[:MNIST1D.batch]
    batch, widths = WORKLOADS[workload]
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, widths[0])).astype(dtype)
    n_classes = 2 if widths[-1] == 1 else widths[-1]
    return X, as_labels(rng.integers(0, n_classes, batch), labels)


def _build(edf, workload, dtype, labels="int64"):
    """The workload's graph in `edf` (cedf or the lecture's module), in its current graph.

    Returns (x, y, loss, output): the Inputs, holding the workload's batch, the
    loss node and the probabilities (of the Softmax, the loss's, or the Sigmoid).
    """
    X, Y = data(workload, dtype, labels=labels)
    _, widths, hidden, head = _spec(workload)
    np.random.seed(0)
    edf.clear_compgraph()
    edf.DT = dtype
    edf.learning_rate = 0.01
    x, y = edf.Input(), edf.Input()
    x.value, y.value = X, Y
    h = x
    for n_in, n_out in zip(widths[:-2], widths[1:-1]):
        h = getattr(edf, hidden)(edf.Affine(edf.AffineParams(n_in, n_out), h))
    logits = edf.Affine(edf.AffineParams(widths[-2], widths[-1]), h)
    if head == "BCELoss":
        p = edf.Sigmoid(logits)
        return x, y, edf.BCELoss(p, y), p
    if head == "SoftmaxCrossEntropyLoss":
        loss = edf.SoftmaxCrossEntropyLoss(logits, y)
        return x, y, loss, loss
    p = edf.Softmax(logits)
    return x, y, edf.CrossEntropyLoss(p, y), p


def edf_step(edf, workload, dtype, labels="int64"):
    """A training step of the graph built in `edf` (cedf, either backend, or cedf.lecture)."""
    _, _, L, _ = _build(edf, workload, dtype, labels)

    def step():
        edf.Forward()
        edf.Backward(L)
        edf.UpdateParameters()
    return step


def edf_forward(edf, workload, dtype):
    """Forward alone (inference) of the graph built in `edf`."""
    _build(edf, workload, dtype)
    return edf.Forward


def cedf_net(workload, dtype, labels="int64"):
    """The workload's graph in cedf, in a `cedf.Graph` of its own (not the current graph).

    Returns a namespace: graph, x, y, loss, output.
    """
    import cedf

    with cedf.Graph() as graph:
        x, y, loss, output = _build(cedf, workload, dtype, labels)
    return SimpleNamespace(graph=graph, x=x, y=y, loss=loss, output=output)


def sgd_step(workload, dtype, labels="int64"):
    """The bare step, ``Forward(); Backward(L); UpdateParameters()``, of a graph of its own.

    The function has `.net` (see `cedf_net`) and `.optimizer` (None) for the tests.
    """
    net = cedf_net(workload, dtype, labels)
    graph, loss = net.graph, net.loss

    def step():
        graph.Forward()
        graph.Backward(loss)
        graph.UpdateParameters()
    step.net, step.optimizer = net, None
    return step


def make_optimizer(name, params, lr):
    """``cedf.optim.Adam(params, lr=lr)`` or ``cedf.optim.SGD(params, lr=lr)``."""
    import cedf

    return {"adam": cedf.optim.Adam, "sgd": cedf.optim.SGD}[name](params, lr=lr)


def optimizer_step(workload, dtype, labels="int64", optimizer="adam", lr=1e-3):
    """``Forward(); Backward(L); opt.step()`` with ``opt = cedf.optim.Adam(cedf.Parameters, lr=lr)`` (or SGD).

    The learning rate is small because the step runs thousands of times on one
    batch: a fast one would drive the logits to where the losses saturate. The
    function has `.net` and `.optimizer`.
    """
    import cedf

    net = cedf_net(workload, dtype, labels)
    with net.graph:
        opt = make_optimizer(optimizer, cedf.Parameters, lr)
    graph, loss = net.graph, net.loss

    def step():
        graph.Forward()
        graph.Backward(loss)
        opt.step()
    step.net, step.optimizer = net, opt
    return step


def fit_epoch(dtype=np.float32, labels="int64", optimizer="adam"):
    """One epoch of ``cedf.fit`` over `mnist1d_data` (MLP_MNIST1D, batch 100, progress=False).

    Each call runs ``fit(..., epochs=1)`` with the same optimiser (its state
    carries over, as over a longer fit's epochs) and a fresh shuffle, and
    returns fit's History. The function has `.net`, `.optimizer`, `.data`
    (X, Y) and `.steps` (mini-batches per epoch), for the tests and for the
    denominator of compare.py's target: `.steps` bare steps.
    """
    import cedf

    X, Y = mnist1d_data(dtype=dtype, labels=labels)
    net = cedf_net(MLP_MNIST1D, dtype, labels)
    opt = make_optimizer(optimizer, net.graph.Parameters, MNIST1D.lr)
    rng = np.random.default_rng(0)

    def epoch():
        return cedf.fit(net.loss, net.x, net.y, X, Y, epochs=1, batch_size=MNIST1D.batch,
                        optimizer=opt, progress=False, seed=rng)
    epoch.net, epoch.optimizer, epoch.data = net, opt, (X, Y)
    epoch.steps = -(-len(X) // MNIST1D.batch)
    return epoch


def steps_of(step, n):
    """A function that runs `step` `n` times (the denominator of the fit target)."""
    def run():
        for _ in range(n):
            step()
    return run


# The whole training of issue 14, item 6: MLP_MNIST1D for `epochs` epochs over (X, Y), Adam
# lr 1e-2, batch 100, shuffled every epoch, by cedf's fit, PyTorch eager and scikit-learn. Each
# function builds its model (untimed) and returns a namespace: train() trains it from where it
# is and returns per-epoch (mean loss, accuracy) pairs (scikit-learn: its loss_curve_ losses),
# n_parameters() counts the trainable numbers, model is the model.

def cedf_training(X, Y, epochs=MNIST1D.epochs, seed=0):
    """``cedf.fit(loss, x, y, X, Y, epochs, batch_size=100, optimizer=Adam(lr=1e-2), progress=False)``."""
    import cedf

    net = cedf_net(MLP_MNIST1D, X.dtype.type, "int64")
    opt = make_optimizer("adam", net.graph.Parameters, MNIST1D.lr)

    def train():
        history = cedf.fit(net.loss, net.x, net.y, X, Y, epochs=epochs, batch_size=MNIST1D.batch,
                           optimizer=opt, progress=False, seed=seed)
        return list(zip(history.loss, history.accuracy))
    return SimpleNamespace(train=train, model=net, optimizer=opt,
                           n_parameters=lambda: sum(p.value.size for p in net.graph.Parameters))


_torch_default_threads = None


def import_torch():
    """`torch`, and the number of threads it starts with (recorded at its first import here,
    before anything sets it), or an ImportError."""
    global _torch_default_threads
    import torch

    if _torch_default_threads is None:
        _torch_default_threads = torch.get_num_threads()
    return torch


def torch_default_threads():
    import_torch()
    return _torch_default_threads


def torch_mlp(widths=MNIST1D.widths):
    """Linear and ReLU layers of `widths`, the last Linear without an activation (the loss takes logits)."""
    torch = import_torch()
    layers = []
    for n_in, n_out in zip(widths[:-2], widths[1:-1]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(widths[-2], widths[-1]))
    return torch.nn.Sequential(*layers)


def torch_training(X, Y, epochs=MNIST1D.epochs, threads=None, seed=0):
    """The same training in PyTorch eager, written as a user would, without a DataLoader.

    Every epoch: ``torch.randperm``, then slices of it index X and Y; per batch
    ``zero_grad``, the model, ``CrossEntropyLoss``, ``backward``, ``torch.optim.Adam``'s
    ``step``, and the running loss and accuracy (``.item()``), which fit reports
    too. `threads`: torch.set_num_threads for the training (put back after);
    None leaves torch's threads as they are.
    """
    torch = import_torch()
    torch.manual_seed(seed)
    model = torch_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=MNIST1D.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, Yt = torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(np.asarray(Y, dtype=np.int64))
    generator = torch.Generator().manual_seed(seed)
    n, batch = len(Xt), MNIST1D.batch

    def train():
        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            history = []
            for _ in range(epochs):
                order = torch.randperm(n, generator=generator)
                total = correct = 0.0
                for start in range(0, n, batch):
                    index = order[start:start + batch]
                    xb, yb = Xt[index], Yt[index]
                    opt.zero_grad()
                    logits = model(xb)
                    loss = loss_fn(logits, yb)
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(index)
                    correct += (logits.argmax(1) == yb).sum().item()
                history.append((total / n, correct / n))
            return history
        finally:
            torch.set_num_threads(before)
    return SimpleNamespace(train=train, model=model, optimizer=opt,
                           n_parameters=lambda: sum(p.numel() for p in model.parameters()))


def import_sklearn():
    """`sklearn.neural_network` (MLPClassifier), or an ImportError."""
    import sklearn.neural_network

    return sklearn.neural_network


def sklearn_mlp(epochs=MNIST1D.epochs, seed=0):
    """scikit-learn's `MLPClassifier` of the same architecture and training, running every epoch.

    ``tol=0`` and an ``n_iter_no_change`` above `epochs` keep it from stopping
    early; ``alpha=0`` drops its default L2 penalty, which the other contenders
    do not have.
    """
    return import_sklearn().MLPClassifier(hidden_layer_sizes=MNIST1D.widths[1:-1], activation="relu", solver="adam", alpha=0.0,
                         batch_size=MNIST1D.batch, learning_rate_init=MNIST1D.lr, max_iter=epochs, tol=0.0,
                         n_iter_no_change=epochs + 1, shuffle=True, random_state=seed)


def sklearn_training(X, Y, epochs=MNIST1D.epochs, seed=0):
    """``MLPClassifier(...).fit(X, Y)`` (see `sklearn_mlp`); its ConvergenceWarning at max_iter is silenced.

    Its weights are made inside fit, so n_parameters() counts them after train().
    """
    from sklearn.exceptions import ConvergenceWarning

    model = sklearn_mlp(epochs, seed)

    def train():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, Y)
        return [(loss, None) for loss in model.loss_curve_]

    def n_parameters():
        if not hasattr(model, "coefs_"):
            raise RuntimeError("sklearn_training: the MLPClassifier makes its weights in fit: train() first")
        return sum(a.size for a in model.coefs_ + model.intercepts_)
    return SimpleNamespace(train=train, model=model, optimizer=None, n_parameters=n_parameters)


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


def _untransposed(W, batch):
    """W^T as the floor multiplies by it in dX = g @ W^T: a C-ordered copy where cedf's plan
    uses one (see `_Floor`), else the transposed view."""
    from cedf.plan import _UNTRANSPOSED_MAX

    small = batch * W.shape[0] * W.shape[1] <= _UNTRANSPOSED_MAX
    return np.ascontiguousarray(W.T) if small else W.T


class _Floor:
    """The products of one step, by NumPy's BLAS into buffers allocated once."""

    def __init__(self, workload, dtype):
        X, _ = data(workload, dtype)
        _, widths, _, _ = _spec(workload)
        rng = np.random.default_rng(1)
        batch = X.shape[0]
        self.x = X
        self.W = [rng.standard_normal((i, o)).astype(dtype) for i, o in zip(widths[:-1], widths[1:])]
        self.h = [np.empty((batch, o), dtype) for o in widths[1:]]        # layer outputs
        self.g = [rng.standard_normal((batch, o)).astype(dtype) for o in widths[1:]]  # dL/d(output)
        self.dW = [np.empty_like(W) for W in self.W]
        self.dX = [np.empty((batch, i), dtype) for i in widths[1:-1]]     # dX of layers 2..n
        # dX = g @ W^T in the form cedf's plan computes it: against a transposed copy of W up
        # to cedf.plan._UNTRANSPOSED_MAX multiply-adds (an untransposed product, which OpenBLAS
        # runs in its small-matrix kernels), by BLAS's transpose above. The copy is not a
        # product and is made here once; cedf makes it at every step.
        self.Wt = [_untransposed(W, batch) for W in self.W]
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
                self.matmul(self.g[k], self.Wt[k], out=self.dX[k - 1])


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


# -- the MNIST-1D CNN of issue 15 ---------------------------------------------------------------
# The paper's model (Greydanus & Kobak): three Conv1d of 25 channels, each followed by a ReLU,
# then 125 -> 10; batch 100 of (1, 40), Adam lr 1e-2, float32. One step: Forward, Backward and
# Adam's step, in cedf (planned), PyTorch eager and the floor (the products alone).

CNN_MNIST1D = SimpleNamespace(batch=100, length=40, classes=10, lr=1e-2,
                              convs=((1, 25, 5, 2, 1), (25, 25, 3, 2, 1), (25, 25, 3, 2, 1)))  # in, out, k, s, p


def _conv_lengths(length=CNN_MNIST1D.length):
    """The input length of each Conv and the length the last one gives."""
    lengths = [length]
    for _, _, k, s, p in CNN_MNIST1D.convs:
        lengths.append((lengths[-1] + 2 * p - k) // s + 1)
    return lengths


def cnn_data(dtype=np.float32, seed=0):
    """A batch (100, 1, 40) of synthetic signals and labels 0-9 (only the sizes are MNIST-1D's)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((CNN_MNIST1D.batch, 1, CNN_MNIST1D.length)).astype(dtype)
    return X, rng.integers(0, CNN_MNIST1D.classes, CNN_MNIST1D.batch)


def cnn_step(dtype=np.float32):
    """``Forward(); Backward(L); opt.step()`` of the CNN in cedf, Adam, in a graph of its own."""
    import cedf

    X, Y = cnn_data(dtype)
    cedf.DT, before = dtype, cedf.DT
    np.random.seed(0)
    try:
        with cedf.Graph() as graph:
            x, y = cedf.Input(), cedf.Input()
            x.value, y.value = X, Y
            h = x
            for c_in, c_out, k, s, p in CNN_MNIST1D.convs:
                h = cedf.ReLU(cedf.Conv(cedf.ConvParams(c_in, c_out, k), h, stride=s, padding=p))
            features = CNN_MNIST1D.convs[-1][1] * _conv_lengths()[-1]
            loss = cedf.SoftmaxCrossEntropyLoss(cedf.Affine(cedf.AffineParams(features, CNN_MNIST1D.classes),
                                                            cedf.Flatten(h)), y)
            opt = cedf.optim.Adam(graph.Parameters, lr=1e-4)   # small: the step runs thousands of times
    finally:
        cedf.DT = before

    def step():
        graph.Forward()
        graph.Backward(loss)
        opt.step()
    step.graph, step.loss = graph, loss
    return step


def torch_cnn_step(dtype=np.float32):
    """The same step in PyTorch eager: zero_grad, the model, cross_entropy, backward, Adam's step."""
    torch = import_torch()
    X, Y = cnn_data(dtype)
    torch.manual_seed(0)
    layers = []
    for c_in, c_out, k, s, p in CNN_MNIST1D.convs:
        layers += [torch.nn.Conv1d(c_in, c_out, k, stride=s, padding=p), torch.nn.ReLU()]
    features = CNN_MNIST1D.convs[-1][1] * _conv_lengths()[-1]
    layers += [torch.nn.Flatten(), torch.nn.Linear(features, CNN_MNIST1D.classes)]
    model = torch.nn.Sequential(*layers).to({np.float32: torch.float32, np.float64: torch.float64}[dtype])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = torch.from_numpy(X), torch.from_numpy(Y)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


class _CnnFloor:
    """The products of one CNN step by NumPy's BLAS into ready buffers, as issue 15 defines its
    floor: per Conv, on its unfolded (im2col) input U (C k, N L_out), the forward W U, the weight
    gradient G U^T and (all but the first) the unfolded input's gradient W^T G; the Affine's three
    products as in `_Floor`. No unfolding, no folding back, no activation, no loss, no update.
    cedf computes the same sums as smaller products, one per output position (cedf/_conv.pyx),
    which take less time than these here: this floor is the issue's yardstick, not a lower bound
    of cedf's own products."""

    def __init__(self, dtype=np.float32):
        rng = np.random.default_rng(1)
        n, lengths = CNN_MNIST1D.batch, _conv_lengths()
        self.convs = []
        for (c_in, c_out, k, _, _), l_out in zip(CNN_MNIST1D.convs, lengths[1:]):
            W = rng.standard_normal((c_out, c_in * k)).astype(dtype)
            U = rng.standard_normal((c_in * k, n * l_out)).astype(dtype)
            G = rng.standard_normal((c_out, n * l_out)).astype(dtype)
            self.convs.append((W, U, G, np.empty((c_out, n * l_out), dtype), np.empty_like(W), np.empty_like(U)))
        features = CNN_MNIST1D.convs[-1][1] * lengths[-1]
        self.h = rng.standard_normal((n, features)).astype(dtype)
        self.A = rng.standard_normal((features, CNN_MNIST1D.classes)).astype(dtype)
        self.g = rng.standard_normal((n, CNN_MNIST1D.classes)).astype(dtype)
        self.At = _untransposed(self.A, n)
        self.out, self.dA, self.dh = np.empty_like(self.g), np.empty_like(self.A), np.empty_like(self.h)

    def step(self):
        mm = np.matmul
        for i, (W, U, G, out, dW, dU) in enumerate(self.convs):
            mm(W, U, out=out)
            mm(G, U.T, out=dW)
            if i > 0:
                mm(W.T, G, out=dU)
        mm(self.h, self.A, out=self.out)
        mm(self.h.T, self.g, out=self.dA)
        mm(self.g, self.At, out=self.dh)


def cnn_floor_step(dtype=np.float32):
    return _CnnFloor(dtype).step
