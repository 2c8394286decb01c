"""MaxPool and AvgPool (cedf/pooling.py, cedf/_pooling.pyx): kernels, nodes, plan, errors.

- The compiled kernels against the reference (cedf/reference.py) on random
  shapes, windows and strides (overlapping ones too), both dtypes; MaxPool's
  indices exactly, ties and NaNs included.
- Closed forms: a tie sends the whole gradient to the first maximum; AvgPool's
  gradient is g / size times the number of windows over a position.
- The nodes against PyTorch's max_pool1d/2d and avg_pool1d/2d, values and input
  gradients in float64 to 1e-10 (continuous random data: no ties).
- Central differences (gradcheck), the planned path against the node-by-node
  one over several steps of training with Adam, and the errors bad input gets.
"""
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cedf as edf
from cedf import _kernels, _pooling, nodes, plan, reference
from helpers import assert_close, rtol_for

DTYPES = st.sampled_from([np.float32, np.float64])
POOLS = pytest.mark.parametrize("pool", [edf.MaxPool, edf.AvgPool], ids=["MaxPool", "AvgPool"])
FLOATS = pytest.mark.parametrize("dtype", [np.float32, np.float64])


@st.composite
def geometries(draw, one_d=None, least=0):
    """(N, C, H, W) and a window (kh, kw, sh, sw) that fits; one_d (or a coin) makes H = kh = sh = 1.
    N and C are `least` or more."""
    one_d = draw(st.booleans()) if one_d is None else one_d
    n, c = draw(st.integers(least, 3)), draw(st.integers(least, 3))
    h = 1 if one_d else draw(st.integers(1, 9))
    w = draw(st.integers(1, 12))
    kh = 1 if one_d else draw(st.integers(1, h))
    kw = draw(st.integers(1, w))
    # Strides below the window make windows overlap; above it, positions that no window covers.
    sh = 1 if one_d else draw(st.integers(1, kh + 2))
    sw = draw(st.integers(1, kw + 2))
    return (n, c, h, w), (kh, kw, sh, sw)


def out_shape(shape, window):
    n, c, h, w = shape
    kh, kw, sh, sw = window
    return (n, c, (h - kh) // sh + 1, (w - kw) // sw + 1)


def data(rng, shape, dtype, kind="normal"):
    if kind == "ties":   # few distinct values: many windows with several maxima
        return rng.integers(0, 3, shape).astype(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    if kind == "nan":
        x[rng.random(shape) < 0.2] = np.nan
    return x


# -- 1. the compiled kernels against the reference --------------------------------------

@given(geometry=geometries(), dtype=DTYPES, kind=st.sampled_from(["normal", "ties", "nan"]),
       seed=st.integers(0, 2**32 - 1))
def test_maxpool_kernels_agree_with_the_reference(geometry, dtype, kind, seed):
    shape, window = geometry
    rng = np.random.default_rng(seed)
    x, oshape = data(rng, shape, dtype, kind), out_shape(shape, window)
    results = []
    for module in (reference, _kernels):
        out, argmax = np.full(oshape, 7, dtype), np.full(oshape, -1, np.int64)
        module.maxpool_forward(x, out, argmax, *window)
        results.append((out, argmax))
    (ref_out, ref_arg), (out, argmax) = results
    # The same comparisons on the same numbers: the same winners, bit for bit.
    np.testing.assert_array_equal(argmax, ref_arg)
    np.testing.assert_array_equal(out, ref_out)
    n, c, h, w = shape
    assert np.all((0 <= argmax) & (argmax < h * w))
    g, gx = data(rng, oshape, dtype), data(rng, shape, dtype)
    results = []
    for module in (reference, _kernels):
        acc = gx.copy()
        module.maxpool_backward(g, ref_arg, acc)
        results.append(acc)
    assert_close(results[1], results[0], rtol_for(dtype), "maxpool_backward gx")


@given(geometry=geometries(), dtype=DTYPES, seed=st.integers(0, 2**32 - 1))
def test_avgpool_kernels_agree_with_the_reference(geometry, dtype, seed):
    shape, window = geometry
    rng = np.random.default_rng(seed)
    x, oshape = data(rng, shape, dtype), out_shape(shape, window)
    outs = []
    for module in (reference, _kernels):
        out = np.full(oshape, 7, dtype)
        module.avgpool_forward(x, out, *window)
        outs.append(out)
    assert_close(outs[1], outs[0], rtol_for(dtype), "avgpool_forward out")
    g, gx = data(rng, oshape, dtype), data(rng, shape, dtype)
    results = []
    for module in (reference, _kernels):
        acc = gx.copy()
        module.avgpool_backward(g, acc, *window)
        results.append(acc)
    assert_close(results[1], results[0], rtol_for(dtype), "avgpool_backward gx")


@given(geometry=geometries(), dtype=DTYPES, kind=st.sampled_from(["normal", "ties", "nan"]),
       seed=st.integers(0, 2**32 - 1))
def test_maxpool_for_windows_too_wide_for_float_offsets(geometry, dtype, kind, seed):
    """The loop one window at a time, which the vectorised one leaves windows spanning 2^24
    positions or more to (float32 holds their offsets inexactly): made to run on small ones."""
    shape, window = geometry
    x, oshape = data(np.random.default_rng(seed), shape, dtype, kind), out_shape(shape, window)
    results = []
    for module in (reference, _kernels):
        out, argmax = np.full(oshape, 7, dtype), np.full(oshape, -1, np.int64)
        previous = _pooling._limit_exact_offsets(0)
        try:
            module.maxpool_forward(x, out, argmax, *window)
        finally:
            _pooling._limit_exact_offsets(previous)
        results.append((out, argmax))
    np.testing.assert_array_equal(results[1][1], results[0][1])
    np.testing.assert_array_equal(results[1][0], results[0][0])


def test_maxpool_backward_refuses_indices_outside_the_plane():
    g, gx = np.ones((1, 2, 1, 2)), np.zeros((1, 2, 1, 4))
    for bad in (4, -1):
        argmax = np.array([[[[0, 1]], [[2, bad]]]], np.int64)
        with pytest.raises(ValueError, match=r"maxpool_backward: argmax holds an index outside its plane of 4 "
                                             r"positions \(output 3, flat\)"):
            _kernels.maxpool_backward(g, argmax, gx)
        assert gx[0, 0, 0].tolist() == [1, 1, 0, 0]   # the valid ones were added, nothing out of bounds
        gx[...] = 0


@pytest.mark.parametrize("call, message", [
    (lambda: _kernels.maxpool_forward(np.zeros((1, 1, 1, 3)), np.zeros((1, 1, 1, 1)),
                                      np.zeros((1, 1, 1, 1), np.int64), 1, 4, 1, 1),
     r"maxpool_forward: window \(1, 4\) is larger than the input's planes \(1, 3\)"),
    (lambda: _kernels.avgpool_forward(np.zeros((1, 1, 2, 3)), np.zeros((1, 1, 1, 1)), 1, 2, 0, 1),
     r"avgpool_forward: window \(1, 2\) and strides \(0, 1\) must be positive"),
    (lambda: _kernels.avgpool_forward(np.zeros((1, 1, 2, 4)), np.zeros((1, 1, 2, 2)), 1, 2, 1, 1),
     r"avgpool_forward: out has shape \(1, 1, 2, 2\), expected \(1, 1, 2, 3\)"),
    (lambda: _kernels.maxpool_forward(np.zeros((1, 1, 2, 4)), np.zeros((1, 1, 1, 2)),
                                      np.zeros((1, 1, 1, 3), np.int64), 2, 2, 2, 2),
     r"maxpool_forward: argmax has shape \(1, 1, 1, 3\), expected \(1, 1, 1, 2\)"),
    (lambda: _kernels.avgpool_backward(np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 2, 4)), 2, 2, 2, 2),
     r"avgpool_backward: g has shape \(1, 1, 1, 1\), expected \(1, 1, 1, 2\)"),
    (lambda: _kernels.maxpool_backward(np.zeros((1, 1, 1, 2)), np.zeros((1, 1, 1, 3), np.int64),
                                       np.zeros((1, 1, 2, 4))),
     r"maxpool_backward: argmax has shape \(1, 1, 1, 3\), expected \(1, 1, 1, 2\)"),
    (lambda: _kernels.maxpool_backward(np.zeros((1, 2, 1, 2)), np.zeros((1, 2, 1, 2), np.int64),
                                       np.zeros((1, 1, 2, 4))),
     r"maxpool_backward: g has shape \(1, 2\), expected \(1, 1\)"),
])
def test_kernels_check_their_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_kernels_refuse_a_layout_their_loops_cannot_read():
    x = np.zeros((1, 1, 4, 4))[:, :, :, ::2]   # not C-contiguous
    with pytest.raises(ValueError, match="contiguous"):
        _kernels.avgpool_forward(x, np.zeros((1, 1, 2, 1)), 2, 2, 2, 2)
    with pytest.raises((ValueError, TypeError)):   # float and double mixed
        _kernels.avgpool_forward(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 1, 1), np.float32), 2, 2, 2, 2)


# -- 2. closed forms --------------------------------------------------------------------

def backprop(pool_node, g):
    """x's gradient from the node's own backward, given its incoming gradient g."""
    x = pool_node.x
    x.caught = np.zeros(np.shape(x.value))
    nodes.set_quietly(pool_node, "grad", np.array(g, dtype=pool_node.value.dtype))
    pool_node.backward()
    return x.caught


class Catching(edf.Input):
    """An Input that keeps the gradient a node sends it (a plain Input takes none)."""

    def addgrad(self, delta):
        self.caught = self.caught + delta


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_a_tie_sends_the_whole_gradient_to_the_first_maximum(backend):
    edf.set_backend(backend)
    edf.DT = np.float64
    x = Catching()
    # 1-D, overlapping windows of 3 at stride 1 over a constant: each window's first position wins.
    x.value = np.full((2, 1, 6), 5.0)
    p = edf.MaxPool(x, 3, stride=1)
    p.forward()
    g = np.arange(1, 9, dtype=np.float64).reshape(2, 1, 4)
    assert p.value.tolist() == np.full((2, 1, 4), 5.0).tolist()
    expected = np.zeros((2, 1, 6))
    expected[:, :, :4] = g
    np.testing.assert_array_equal(backprop(p, g), expected)
    # 2-D: the window's maxima at (0, 1) and (1, 0): row-major order makes (0, 1) the first.
    x.value = np.array([[[[0.0, 2.0], [2.0, 1.0]]]])
    p = edf.MaxPool(x, 2)
    p.forward()
    np.testing.assert_array_equal(backprop(p, [[[[3.0]]]]), [[[[0.0, 3.0], [0.0, 0.0]]]])


def test_a_nan_is_the_maximum_and_takes_the_gradient():
    x = Catching()
    x.value = np.array([[[1.0, np.nan, 3.0, np.nan, 2.0, 0.0]]])
    p = edf.MaxPool(x, 3)
    p.forward()
    assert np.isnan(p.value[0, 0, 0]) and np.isnan(p.value[0, 0, 1])
    np.testing.assert_array_equal(backprop(p, [[[1.0, 2.0]]]), [[[0.0, 1.0, 0.0, 2.0, 0.0, 0.0]]])


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("L, k, s", [(7, 3, 1), (9, 4, 2), (10, 3, 3), (11, 3, 4), (5, 5, 1)])
def test_avgpool_spreads_g_over_each_window(backend, L, k, s):
    edf.set_backend(backend)
    edf.DT = np.float64
    x = Catching()
    x.value = np.arange(2.0 * L).reshape(1, 2, L)
    p = edf.AvgPool(x, k, stride=s)
    p.forward()
    starts = np.arange(0, L - k + 1, s)
    np.testing.assert_allclose(p.value[0, 0], starts + (k - 1) / 2, rtol=1e-15)   # the mean of an arithmetic run
    # A gradient of 1 everywhere: each position gets 1/k per window over it.
    covering = [np.sum((starts <= i) & (i < starts + k)) for i in range(L)]
    np.testing.assert_allclose(backprop(p, np.ones(p.value.shape))[0, 1], np.array(covering) / k, rtol=1e-15)


# -- 3. against PyTorch --------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["max", "avg"])
@given(geometry=geometries(least=1), seed=st.integers(0, 2**32 - 1))
def test_values_and_input_gradients_match_pytorch(kind, geometry, seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    (n, c, h, w), (kh, kw, sh, sw) = geometry
    one_d = h == 1 and kh == 1 and sh == 1 and seed % 2   # H = 1 also runs as 2-D, for the other half
    shape = (n, c, w) if one_d else (n, c, h, w)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal(shape)
    edf.DT = np.float64
    x = Catching()
    x.value = X
    size, stride = (kw, sw) if one_d else ((kh, kw), (sh, sw))
    node = (edf.MaxPool if kind == "max" else edf.AvgPool)(x, size, stride=stride)
    node.forward()
    G = rng.standard_normal(node.value.shape)
    t = torch.tensor(X, requires_grad=True)
    fn = {("max", True): F.max_pool1d, ("max", False): F.max_pool2d,
          ("avg", True): F.avg_pool1d, ("avg", False): F.avg_pool2d}[kind, bool(one_d)]
    out = fn(t, size, stride)
    (out * torch.tensor(G)).sum().backward()
    assert_close(node.value, out.detach().numpy(), 1e-10, "value")
    assert_close(backprop(node, G), t.grad.numpy(), 1e-10, "x's gradient")


def test_maxpool_records_pytorchs_indices():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 4, 9, 11))
    edf.DT = np.float64
    x = edf.Input()
    x.value = X
    p = edf.MaxPool(x, (3, 2), stride=(2, 3))
    p.forward()
    _, indices = torch.nn.functional.max_pool2d(torch.tensor(X), (3, 2), (2, 3), return_indices=True)
    np.testing.assert_array_equal(p._argmax, indices.numpy())


# -- 4. central differences and the plan ------------------------------------------------------

def p_shape(shape, size, stride):
    """The per-example shape of pooling (C, H, W) by size and stride as the nodes take them."""
    kh, kw = (1, size) if np.ndim(size) == 0 and shape[1] == 1 else ((size, size) if np.ndim(size) == 0 else size)
    stride = (kh, kw) if stride is None else stride
    sh, sw = (1, stride) if np.ndim(stride) == 0 and shape[1] == 1 else (
        (stride, stride) if np.ndim(stride) == 0 else stride)
    return out_shape((1,) + shape, (kh, kw, sh, sw))[1:]


def cnn(pool, dtype, size, stride, two_d=False, seed=0, batch=6):
    """x (B, 12) -> Affine -> Tanh -> Reshape (C, L) or (C, H, W) -> pool -> Flatten -> Affine ->
    SoftmaxCrossEntropyLoss: the pool's gradient reaches the first layer's parameters."""
    np.random.seed(seed)
    rng = np.random.default_rng(seed)
    edf.DT = dtype
    x, y = edf.Input(), edf.Input()
    x.value = rng.standard_normal((batch, 5)).astype(dtype)
    y.value = rng.integers(0, 3, batch)
    h = edf.Tanh(edf.Affine(edf.AffineParams(5, 24), x))
    r = edf.Reshape(h, (2, 3, 4) if two_d else (3, 8))
    p = pool(r, size, stride=stride)
    n_out = int(np.prod(p_shape((2, 3, 4) if two_d else (3, 1, 8), size, stride)))
    return x, y, edf.SoftmaxCrossEntropyLoss(edf.Affine(edf.AffineParams(n_out, 3), edf.Flatten(p)), y)


@POOLS
@pytest.mark.parametrize("size, stride, two_d", [(3, 1, False), (2, None, False), (3, 2, False),
                                                 ((2, 3), (1, 1), True), (2, None, True)])
def test_gradients_agree_with_central_differences(pool, size, stride, two_d):
    edf.set_backend("cython")
    _, _, L = cnn(pool, np.float64, size, stride, two_d)
    result = edf.gradcheck(L, tol=1e-6)
    assert result.planned, str(result)
    assert result.passed, str(result)


@POOLS
def test_gradients_to_an_input_agree_with_central_differences(pool):
    edf.DT = np.float64
    x, y = edf.Input(), edf.Input()
    rng = np.random.default_rng(5)
    x.value, y.value = rng.standard_normal((4, 2, 5, 7)), rng.integers(0, 3, 4)
    p = pool(x, (3, 2), stride=(1, 2))
    L = edf.SoftmaxCrossEntropyLoss(edf.Affine(edf.AffineParams(2 * 3 * 3, 3), edf.Flatten(p)), y)
    result = edf.gradcheck(L, tol=1e-6, inputs=[x])
    assert result.passed, str(result)


def training(pool, dtype, steps, two_d):
    """Parameters and values after `steps` steps of Adam on the small CNN, and whether each step was planned."""
    _, _, L = cnn(pool, dtype, (2, 2) if two_d else 3, 1 if two_d else 2, two_d, batch=16)
    opt = edf.optim.Adam(edf.Parameters, lr=1e-2)
    g, ran, states = edf.current_graph(), [], []
    for _ in range(steps):
        edf.Forward()
        ran.append(g._planned)
        edf.Backward(L)
        opt.step()
        states.append([np.array(p.value) for p in g.Parameters] + [np.array(L.value)]
                      + [np.array(c.value) for c in g.CompNodes])
    return ran, states


@POOLS
@FLOATS
@pytest.mark.parametrize("two_d", [False, True], ids=["1-D", "2-D"])
def test_planned_training_equals_node_by_node(pool, dtype, two_d, monkeypatch):
    edf.set_backend("cython")
    ran, planned = training(pool, dtype, 6, two_d)
    assert ran[1:] == [True] * 5, "the plan did not run"
    edf.clear_compgraph()
    with monkeypatch.context() as m:
        m.setattr(plan, "build", lambda graph: None)   # no plan: every step node by node, same kernels
        ran, by_node = training(pool, dtype, 6, two_d)
    assert not any(ran)
    for step, (a, b) in enumerate(zip(planned, by_node)):
        for i, (u, v) in enumerate(zip(a, b)):
            assert_close(u, v, rtol_for(dtype), f"step {step}, array {i}")
    edf.clear_compgraph()
    edf.set_backend("numpy")   # and the reference, node by node
    _, reference_run = training(pool, dtype, 6, two_d)
    for i, (u, v) in enumerate(zip(planned[-1], reference_run[-1])):
        assert_close(u, v, 1e-3 if dtype == np.float32 else 1e-9, f"last step, array {i} against the reference")


def test_the_input_of_the_brief_planned():
    """Input (N, C, L) -> MaxPool -> Flatten -> Affine -> SoftmaxCrossEntropyLoss: planned steps, no gradient
    for the Input, the same parameters as node by node."""
    def run():
        np.random.seed(0)
        rng = np.random.default_rng(0)
        edf.DT = np.float64
        x, y = edf.Input(), edf.Input()
        x.value, y.value = rng.standard_normal((20, 3, 10)), rng.integers(0, 4, 20)
        L = edf.SoftmaxCrossEntropyLoss(edf.Affine(edf.AffineParams(12, 4), edf.Flatten(edf.MaxPool(x, 3, 2))), y)
        opt, ran = edf.optim.Adam(edf.Parameters, lr=1e-2), []
        for _ in range(4):
            edf.Forward()
            ran.append(edf.current_graph()._planned)
            edf.Backward(L)
            opt.step()
        return ran, [p.value.copy() for p in edf.Parameters]
    edf.set_backend("cython")
    ran, planned = run()
    assert ran == [False, True, True, True]
    edf.clear_compgraph()
    edf.set_backend("numpy")
    _, ref = run()
    for u, v in zip(planned, ref):
        assert_close(u, v, 1e-10)


@POOLS
def test_a_new_batch_size_and_a_new_window_are_followed(pool):
    edf.set_backend("cython")
    edf.DT = np.float64
    x = edf.Input()
    x.value = np.random.default_rng(0).standard_normal((4, 2, 9))
    p = pool(x, 3)
    g = edf.current_graph()
    for value in (x.value, x.value[:3].copy()):
        x.value = value
        edf.Forward()
        edf.Forward()
        assert g._planned and p.value.shape == (len(value), 2, 3)
    p.stride = 2   # drops the plan: the next Forward uses the new window
    edf.Forward()
    assert p.value.shape == (3, 2, 4)
    expected = np.empty((3, 2, 1, 4))
    reference_kernel = reference.maxpool_forward if pool is edf.MaxPool else reference.avgpool_forward
    args = (np.empty((3, 2, 1, 4), np.int64),) if pool is edf.MaxPool else ()
    reference_kernel(x.value.reshape(3, 2, 1, 9), expected, *args, 1, 3, 1, 2)
    edf.Forward()
    assert g._planned
    assert_close(p.value, expected.reshape(3, 2, 4), 1e-15)


def test_the_plan_runs_the_pooling_operations(monkeypatch):
    names = {capsule: name for name, capsule in _pooling.PLAN_OPS.items()}
    made, build = [], plan.Program

    def recording(buffers, ops, messages=None):
        made.extend(names[op[0]] for op in ops if op[0] in names)
        return build(buffers, ops, messages)
    monkeypatch.setattr(plan, "Program", recording)
    edf.set_backend("cython")
    _, _, L = cnn(edf.MaxPool, np.float64, 3, 2)
    edf.Forward()
    edf.Forward()
    edf.Backward(L)
    assert made == ["MAXPOOL_FWD", "MAXPOOL_BWD"]


# -- 5. bad input ---------------------------------------------------------------------------

@POOLS
@pytest.mark.parametrize("size, stride, message", [
    (0, None, "size must be a positive int, or a pair of them for 2-D pooling, got 0"),
    (-2, None, "size must be a positive int"),
    (1.5, None, "size must be a positive int"),
    (True, None, "size must be a positive int"),
    ("2", None, "size must be a positive int"),
    ((2, 2, 2), None, r"size must be a positive int, or a pair of them for 2-D pooling, got \(2, 2, 2\)"),
    ((2, 0), None, "size must be a positive int"),
    (2, 0, "stride must be a positive int, or a pair of them for 2-D pooling, got 0"),
    (2, (1, -1), "stride must be a positive int"),
])
def test_bad_sizes_and_strides_are_named(pool, size, stride, message):
    x = edf.Input()
    with pytest.raises(ValueError, match=f"{pool.__name__}: {message}"):
        pool(x, size, stride=stride)
    node = pool(x, 2)
    with pytest.raises(ValueError, match=f"{pool.__name__}: {message}"):   # set later: checked the same
        node.size, node.stride = size, stride


@POOLS
@pytest.mark.parametrize("shape, size, stride, message", [
    ((4, 6), 2, None, r"x must be \(N, C, L\) for 1-D pooling or \(N, C, H, W\) for 2-D, got shape \(4, 6\); "
                      r"a batch of single-channel signals \(N, L\) is Reshape\(x, \(1, L\)\)"),
    ((1, 1, 2, 2, 2), 2, None, r"x must be \(N, C, L\) for 1-D pooling or \(N, C, H, W\) for 2-D, got shape"),
    ((2, 3, 4), 5, None, r"the window \(5\) is larger than x's positions \(4, x has shape \(2, 3, 4\)\); "
                         r"give a smaller size, or pool a larger input"),
    ((2, 3, 4, 5), (2, 6), None, r"the window \(2 x 6\) is larger than x's positions \(4 x 5"),
    ((2, 3, 4, 5), 5, None, r"the window \(5 x 5\) is larger than x's positions \(4 x 5"),
    ((2, 3, 4), (2, 2), None, r"size \(2, 2\) is a pair, for 2-D pooling of \(N, C, H, W\); x has shape "
                              r"\(2, 3, 4\), \(N, C, L\): give one int"),
    ((2, 3, 4), 2, (1, 1), r"stride \(1, 1\) is a pair, for 2-D pooling"),
])
def test_bad_inputs_are_named(pool, shape, size, stride, message):
    x = edf.Input()
    x.value = np.zeros(shape)
    pool(x, size, stride=stride)
    with pytest.raises(ValueError, match=f"{pool.__name__}: {message}"):
        edf.Forward()


@POOLS
def test_bad_input_after_planned_steps_is_named(pool):
    edf.set_backend("cython")
    x = edf.Input()
    x.value = np.zeros((2, 3, 8))
    pool(x, 4)
    edf.Forward()
    edf.Forward()
    assert edf.current_graph()._planned
    x.value = np.zeros((2, 3, 3))   # the plan refuses the shape; the node names the problem
    with pytest.raises(ValueError, match=re.escape(f"{pool.__name__}: the window (4) is larger than x's positions (3")):
        edf.Forward()


@POOLS
def test_a_node_of_another_graph_or_no_node_is_refused(pool):
    with pytest.raises(TypeError, match=f"{pool.__name__}: x must be a cedf node"):
        pool(np.zeros((1, 1, 4)), 2)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@pytest.mark.parametrize("pool", ["MaxPool", "AvgPool"])
def test_a_stride_beyond_cs_integers_is_one_window(pool, backend):
    # A stride of 2**70 was a bare OverflowError on both backends; it pools one window, as a
    # stride of the input's length does, forward and backward.
    edf.set_backend(backend)
    edf.DT = np.float64
    try:
        x = edf.Parameter(np.random.default_rng(4).standard_normal((2, 3, 9)))
        huge, plain = getattr(edf, pool)(x, 4, stride=2 ** 70), getattr(edf, pool)(x, 4, stride=9)
        L = edf.Sigmoid(edf.Add(huge, plain))
        for _ in range(2):   # node by node, then the plan on the compiled backend
            edf.Forward()
            edf.Backward(L)
            assert huge.value.shape == (2, 3, 1)
            np.testing.assert_array_equal(huge.value, plain.value)
            np.testing.assert_array_equal(huge.grad, plain.grad)
    finally:
        edf.set_backend("cython")
