"""Helpers shared by the tests: comparison with tolerances, random graphs, gradient checks, the stale-install check."""
import importlib.util
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

import cedf as edf

#: The BLAS libraries the compiled kernels can call here (cedf.set_blas): SciPy's always, NumPy's when found.
BLAS_LIBRARIES = ["scipy"] + (["numpy"] if edf.backend._numpy_blas is not None else [])


def assert_close(actual, expected, rtol, what="", scale=0.0):
    """Normwise relative agreement: max|actual - expected| <= rtol * max(max|expected|, scale).

    Scaling by the largest entry, not entry by entry, is what a different but
    equally exact summation order (two BLAS builds, a fused loop) can promise:
    entries that cancel to nearly zero carry the rounding of their parts.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if expected.size == 0:
        return
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), f"{what}: NaNs differ"
    finite = np.isfinite(expected)
    assert np.array_equal(actual[~finite], expected[~finite], equal_nan=True), f"{what}: infinities differ"
    scale = max(np.max(np.abs(expected[finite]), initial=0.0), scale, np.finfo(expected.dtype).tiny)
    err = np.max(np.abs(actual[finite].astype(np.float64) - expected[finite]), initial=0.0)
    assert err <= rtol * scale, f"{what}: max abs error {err:.3g} exceeds {rtol:g} x {scale:.3g}"


RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def both_backends(fn):
    """Run `fn` under the reference and then the compiled backend: (reference result, compiled result)."""
    before = edf.get_backend()
    try:
        edf.set_backend("numpy")
        ref = fn()
        edf.set_backend("cython")
        comp = fn()
    finally:
        edf.set_backend(before)
    return ref, comp


def on_both(script):
    """`script()` on a fresh graph under the reference, then under the compiled backend: (ref, comp)."""
    out = []
    for name in ("numpy", "cython"):
        edf.clear_compgraph()
        edf.set_backend(name)
        out.append(script())
    return out


def rtol_for(dtype):
    """The agreement that the compiled backend owes the reference: 1e-12 in float64, 1e-5 in float32."""
    return {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}[np.dtype(dtype)]


class Tanh(edf.CompNode):
    """A node written by a user in NumPy, exactly as the lecture's exercises ask."""

    def __init__(self, x):
        edf.CompNodes.append(self)
        self.x = x

    def forward(self):
        self.value = np.tanh(self.x.value)

    def backward(self):
        self.x.addgrad(self.grad * (1 - self.value ** 2))


class Add(edf.CompNode):
    """A user's node with two inputs, to give a node two consumers (fan-out)."""

    def __init__(self, a, b):
        edf.CompNodes.append(self)
        self.a, self.b = a, b

    def forward(self):
        self.value = self.a.value + self.b.value

    def backward(self):
        self.a.addgrad(self.grad)
        self.b.addgrad(self.grad)


def random_mlp(seed, dtype, depth, widths, batch, loss, user_node=False, x_param=False):
    """Build an MLP in the current graph: `depth` Affine layers of random widths.

    Hidden layers are Sigmoid; the head is Softmax + CrossEntropyLoss (loss="ce")
    or Sigmoid + BCELoss with one output (loss="bce"). With `user_node`, a
    user-written Tanh sits after the first hidden layer and its output feeds two
    Affines summed by a user-written Add. With `x_param`, the data is a
    Parameter so that its gradient is computed too. Returns (loss node, x node).
    """
    rng = np.random.default_rng(seed)
    np.random.seed(seed)
    edf.DT = dtype
    X = rng.standard_normal((batch, widths[0]))
    if x_param:
        x = edf.Parameter(X)
    else:
        x = edf.Input()
        x.value = X.astype(dtype)
    h = x
    for i in range(depth - 1):
        h = edf.Sigmoid(edf.Affine(edf.AffineParams(widths[i], widths[i + 1]), h))
        if user_node and i == 0:
            t = Tanh(h)
            h = Add(edf.Affine(edf.AffineParams(widths[1], widths[1]), t),
                    edf.Affine(edf.AffineParams(widths[1], widths[1]), t))
    y = edf.Input()
    if loss == "ce":
        n_classes = widths[depth]
        p = edf.Softmax(edf.Affine(edf.AffineParams(widths[depth - 1], n_classes), h))
        y.value = rng.integers(0, n_classes, batch)
        L = edf.CrossEntropyLoss(p, y)
    else:
        p = edf.Sigmoid(edf.Affine(edf.AffineParams(widths[depth - 1], 1), h))
        y.value = rng.integers(0, 2, batch)
        L = edf.BCELoss(p, y)
    return L, x


@st.composite
def mlps(draw, user_node=False, x_param=False):
    """Arguments of `random_mlp`: depth 1 to 4, widths 1 to 64, batch 1 to 300, both dtypes and losses.

    With `user_node` or `x_param` true, those options are drawn too.
    """
    depth = draw(st.integers(1, 4))
    return dict(
        seed=draw(st.integers(0, 2**31)),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        depth=depth,
        widths=draw(st.lists(st.integers(1, 64), min_size=depth + 1, max_size=depth + 1)),
        batch=draw(st.integers(1, 300)),
        loss=draw(st.sampled_from(["ce", "bce"])),
        user_node=user_node and draw(st.booleans()) and depth >= 2,
        x_param=x_param and draw(st.booleans()),
    )


def through_sigmoid(m, s):
    """The magnitude of a gradient sent back through a Sigmoid of output s, given that of the incoming m.

    The local gradient s (1 - s) is computed from the rounded s: an ulp of s
    moves it by |1 - 2s| ulp(s), which near saturation is a thousandth of it in
    float32. Two backends may round s differently (rarely, near ties), so the
    scale holds that term, in units of the dtype's tolerance.
    """
    s = np.asarray(s)
    rounding = 2 * np.abs(1 - 2 * s.astype(np.float64)) * np.spacing(np.abs(s)) / rtol_for(s.dtype)
    return m * (np.abs(s * (1 - s.astype(np.float64))) + rounding)


def _magnitudes():
    """Per node and parameter, the largest entry of the lecture's backward pass run on absolute values.

    That is what the rounding of a gradient is relative to: a gradient that is
    a sum of terms which cancel (g A^T, x^T g, a bias's batch sum) is exact
    only to a fraction of its terms, and the fraction carries on through the
    nodes before it.
    """
    mag = {}

    def send(node, arr):
        if not isinstance(node, edf.Input):
            mag[id(node)] = mag.get(id(node), 0) + arr

    for node in reversed(edf.CompNodes):
        if node.grad is None:
            continue
        m = np.maximum(np.abs(np.asarray(node.grad, np.float64)), mag.get(id(node), 0))
        mag[id(node)] = m
        if isinstance(node, edf.Affine):
            x = np.abs(np.asarray(node.x.value, np.float64))
            A = np.abs(node.params.A.value.astype(np.float64))
            send(node.x, m @ A.T)
            send(node.params.A, x.T @ m)
            send(node.params.b, m.sum(axis=0))
        elif isinstance(node, edf.Sigmoid):
            send(node.x, through_sigmoid(m, node.value))
        elif isinstance(node, Tanh):
            s = np.asarray(node.value, np.float64)
            send(node.x, m * (1 - s ** 2))
        elif isinstance(node, edf.Softmax):
            p = np.asarray(node.value, np.float64)
            send(node.x, p * (m + np.sum(p * m, axis=-1, keepdims=True)))
        elif isinstance(node, (edf.CrossEntropyLoss, edf.BCELoss)):
            p = np.asarray(node.x.value, np.float64)
            send(node.x, np.broadcast_to(m.reshape(len(m), 1) / np.maximum(np.minimum(p, 1 - p), 1e-30), p.shape))
        elif isinstance(node, Add):
            send(node.a, m)
            send(node.b, m)
    return {key: np.max(value, initial=0.0) for key, value in mag.items()}


def snapshot():
    """Every value and gradient of the current graph, in creation order:
    (name, value, grad, value scale, grad scale).

    The scales are what rounding errors are measured against, besides the
    array's own largest entry. A sum whose terms cancel cannot be more exact
    than its terms (the textbook bound for a rounded sum): an Affine's value
    x A + b is scaled by |x| |A| + |b|, and every gradient by the backward pass
    run on absolute values (`_magnitudes`).
    """
    value_scale = {}
    for node in edf.CompNodes:
        if isinstance(node, edf.Affine):
            x = np.abs(np.asarray(node.x.value, np.float64))
            A, b = np.abs(node.params.A.value.astype(np.float64)), np.abs(node.params.b.value.astype(np.float64))
            value_scale[id(node)] = np.max(x @ A + b, initial=0.0)
    grad_scale = _magnitudes()
    nodes = edf.CompNodes + edf.Parameters
    return [(f"{type(n).__name__}#{i}", np.array(n.value), np.array(n.grad),
             value_scale.get(id(n), 0.0), grad_scale.get(id(n), 0.0)) for i, n in enumerate(nodes)]


def mean_loss(L):
    edf.Forward()
    return float(np.mean(L.value, dtype=np.float64))


def numeric_grad(L, param, index, eps=1e-6):
    """Central difference of the batch-mean loss with respect to one entry of a parameter."""
    old = param.value[index]
    param.value[index] = old + eps
    up = mean_loss(L)
    param.value[index] = old - eps
    down = mean_loss(L)
    param.value[index] = old
    return (up - down) / (2 * eps)


def load_sources_module(root):
    """`root`/cedf/_sources.py (the fingerprint of a checkout), loaded by its path, not as cedf's."""
    spec = importlib.util.spec_from_file_location("_checkout_sources", Path(root) / "cedf" / "_sources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stale_install(root, installed=None):
    """Why the installed cedf does not match the sources of checkout `root`, or None when it does.

    `installed` is the fingerprint the build wrote (default: that of the
    installed cedf._source_hash; a build without that module predates it, so
    it is stale too). A folder without cedf/_sources.py is no checkout of
    this cedf: nothing to compare.
    """
    if not (Path(root) / "cedf" / "_sources.py").is_file():
        return None
    if installed is None:
        try:
            from cedf._source_hash import SOURCE_HASH as installed
        except ImportError:
            installed = "(none: built before builds recorded their sources)"
    expected = load_sources_module(root).source_hash(root)
    if installed == expected:
        return None
    return (f"the installed cedf was built from other sources than this checkout: run pip install '.[test]' "
            f"again (checkout {root}: sources {expected[:12]}; installed {Path(edf.__file__).parent}: "
            f"built from {installed[:12]})")


def lecture_training(X, labels, values, steps=1, lr=0.001, dtype=np.float32, head="ce", batches=None,
                     update=None):
    """The slides' EDF (`cedf.lecture`, plain NumPy) training the lecture's MLP from given parameters.

    `values` are the parameters in cedf's order (A1, b1, A2, b2, ...): an
    Affine per pair, a Sigmoid between them, and the head on the last one:
    Softmax + CrossEntropyLoss (head "ce") or Sigmoid + BCELoss ("bce").
    Each step is Forward, Backward, UpdateParameters: `steps` of them on the
    whole data, or one on each index array of `batches` in turn; `update`, if
    given, replaces UpdateParameters: it is called with the module's
    Parameters (their .value and .grad) and updates the values. Returns (the
    mean loss of each step, the parameters after, the last step's gradients),
    in float64. The module's settings are put back afterwards.
    """
    from cedf import lecture

    saved = lecture.DT, lecture.learning_rate
    lecture.DT, lecture.learning_rate = dtype, lr
    try:
        lecture.clear_compgraph()
        x, y = lecture.Input(), lecture.Input()
        params = [lecture.Parameter(np.array(v, dtype=dtype)) for v in values]
        h = x
        for i in range(0, len(params), 2):
            layer = lecture.AffineParams.__new__(lecture.AffineParams)
            layer.A, layer.b = params[i], params[i + 1]
            h = lecture.Affine(layer, h)
            if i + 2 < len(params):
                h = lecture.Sigmoid(h)
        if head == "ce":
            L = lecture.CrossEntropyLoss(lecture.Softmax(h), y)
        else:
            L = lecture.BCELoss(lecture.Sigmoid(h), y)
        X, labels = np.asarray(X, dtype=dtype), np.asarray(labels)
        steps_of = [slice(None)] * steps if batches is None else batches
        losses = []
        for index in steps_of:
            x.value, y.value = X[index], labels[index]
            lecture.Forward()
            lecture.Backward(L)
            lecture.UpdateParameters() if update is None else update(params)
            losses.append(float(np.mean(L.value, dtype=np.float64)))
        return (losses, [p.value.astype(np.float64) for p in params],
                [p.grad.astype(np.float64) for p in params])
    finally:
        lecture.DT, lecture.learning_rate = saved
        lecture.clear_compgraph()


def adam_by_hand(lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """PyTorch's Adam as its documentation writes it, for `lecture_training(update=...)`."""
    state = {}

    def update(params):
        for i, p in enumerate(params):
            m, v, t = state.get(i, (0.0, 0.0, 0))
            t += 1
            m = betas[0] * m + (1 - betas[0]) * p.grad
            v = betas[1] * v + (1 - betas[1]) * p.grad ** 2
            p.value = p.value - lr * (m / (1 - betas[0] ** t)) / (np.sqrt(v / (1 - betas[1] ** t)) + eps)
            state[i] = m, v, t
    return update
