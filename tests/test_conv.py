"""Conv and ConvParams (cedf/conv.py) and their kernels (cedf/_conv.pyx, the reference's conv section).

- The compiled kernels against the NumPy reference on random geometries (hypothesis), both dtypes;
  again with batches of 8 to 21, whose transposes fill whole vector blocks.
- Both against PyTorch's conv1d/conv2d: values, dW, db and dx in float64 to 1e-10, the kernels on
  random geometries, the node (planned and node by node, both backends) on a grid.
- The planned path against the node-by-node one over several Adam steps (MNIST-1D's CNN, a 2-D CNN).
- What the plan runs: CONV_FWD and CONV_BWD, no dx (no col2im) for a Conv reading an Input.
- Finite differences (gradcheck) of the node path with dx; the plan's are in test_plan_gradients.py.
- Bad input: clear errors naming Conv/ConvParams and what was expected.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cedf as edf
from cedf import _conv, _kernels, plan, reference
from helpers import assert_close, rtol_for

DTYPES = st.sampled_from([np.float32, np.float64])


def rand(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


@st.composite
def geometries(draw, max_batch=4, min_batch=0):
    """(x shape, W shape, stride, padding) of a 2-D convolution whose kernel fits the padded input;
    a third of them 1-D ones as the node hands them over (H = 1, kh = 1, stride and padding (1, s), (0, p))."""
    one_d = draw(st.integers(0, 2)) == 0
    n, c, o = draw(st.integers(min_batch, max_batch)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dims = []
    for axis in range(2):
        if one_d and axis == 0:
            dims.append((1, 1, 1, 0))
            continue
        size, pad, stride = draw(st.integers(1, 9)), draw(st.integers(0, 2)), draw(st.integers(1, 3))
        k = draw(st.integers(1, size + 2 * pad))
        dims.append((size, k, stride, pad))
    (h, kh, sh, ph), (w, kw, sw, pw) = dims
    return (n, c, h, w), (o, c, kh, kw), (sh, sw), (ph, pw)


def out_shape(x_shape, w_shape, stride, padding):
    (n, _, h, w), (o, _, kh, kw) = x_shape, w_shape
    return n, o, (h + 2 * padding[0] - kh) // stride[0] + 1, (w + 2 * padding[1] - kw) // stride[1] + 1


def run_kernels(module, x, W, b, g, stride, padding, skip=()):
    """conv_forward then conv_backward of `module`, gradients added into random buffers: all outputs."""
    rng = np.random.default_rng(99)
    out = np.full(out_shape(x.shape, W.shape, stride, padding), np.nan, x.dtype)
    module.conv_forward(x, W, b, out, stride, padding)
    grads = {name: rand(rng, a.shape, x.dtype) for name, a in (("gx", x), ("gW", W), ("gb", b))}
    for name in skip:
        grads[name] = None
    module.conv_backward(x, W, g, grads["gx"], grads["gW"], grads["gb"], stride, padding)
    return {"out": out, **{k: v for k, v in grads.items() if v is not None}}


@given(geometry=geometries(), dtype=DTYPES, seed=st.integers(0, 2**32 - 1),
       skip=st.sampled_from([(), ("gx",), ("gW", "gb"), ("gx", "gW", "gb")]))
def test_compiled_kernels_agree_with_the_reference(geometry, dtype, seed, skip):
    x_shape, w_shape, stride, padding = geometry
    rng = np.random.default_rng(seed)
    x, W, b = rand(rng, x_shape, dtype), rand(rng, w_shape, dtype), rand(rng, w_shape[0], dtype)
    g = rand(rng, out_shape(*geometry), dtype)
    ref = run_kernels(reference, x, W, b, g, stride, padding, skip)
    comp = run_kernels(_kernels, x, W, b, g, stride, padding, skip)
    assert ref.keys() == comp.keys()
    for name in ref:
        assert_close(comp[name], ref[name], rtol_for(dtype), name)


@given(geometry=geometries(min_batch=8, max_batch=21), dtype=DTYPES, seed=st.integers(0, 2**32 - 1))
def test_compiled_kernels_agree_with_the_reference_on_batches_of_whole_vector_blocks(geometry, dtype, seed):
    """Batches of 8 to 21: the transposes between the layouts (csrc/conv.h) move whole blocks of
    8 x 8 floats or 4 x 4 doubles through vector registers, and adding into gx, and the edges."""
    test_compiled_kernels_agree_with_the_reference.hypothesis.inner_test(geometry, dtype, seed, ())


@pytest.mark.parametrize("geometry", [
    ((7, 25, 1, 19), (25, 25, 1, 3), (1, 2), (0, 1)),    # MNIST-1D's middle layer: 25 x 75 outputs a row
    ((3, 17, 6, 7), (30, 17, 3, 3), (2, 1), (1, 2)),     # 2-D, windows clipped by the padding on all sides
], ids=["1-D", "2-D"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_kernels_agree_with_the_reference_where_dW_takes_one_product_per_tap(geometry, dtype):
    """Beyond _conv.SMALL_TN_MAX outputs per kernel row (O kw C), dW is summed one tap at a time."""
    assert geometry[1][0] * geometry[1][3] * geometry[1][1] > 1200
    for seed in range(3):
        test_compiled_kernels_agree_with_the_reference.hypothesis.inner_test(geometry, dtype, seed, ())


@given(geometry=geometries(max_batch=3), seed=st.integers(0, 2**32 - 1))
def test_kernels_agree_with_torch(geometry, seed):
    torch = pytest.importorskip("torch")
    x_shape, w_shape, stride, padding = geometry
    rng = np.random.default_rng(seed)
    x, W, b = rand(rng, x_shape), rand(rng, w_shape), rand(rng, w_shape[0])
    g = rand(rng, out_shape(*geometry))
    xt, Wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    out = torch.nn.functional.conv2d(xt, Wt, bt, stride=stride, padding=padding)
    (out * torch.tensor(g)).sum().backward()
    for module in (reference, _kernels):
        got = run_kernels(module, x, W, b, g, stride, padding)
        assert_close(got["out"], out.detach().numpy(), 1e-10, f"{module.__name__} out")
        grads = {"gx": np.zeros_like(x), "gW": np.zeros_like(W), "gb": np.zeros_like(b)}
        module.conv_backward(x, W, g, grads["gx"], grads["gW"], grads["gb"], stride, padding)
        for name, t in (("gx", xt), ("gW", Wt), ("gb", bt)):
            assert_close(grads[name], t.grad.numpy(), 1e-10, f"{module.__name__} {name}")


# -- the node -----------------------------------------------------------------------------

#: (x shape, kernel_size, out channels, stride, padding): 1-D, then 2-D.
GRID = [
    ((3, 2, 9), 3, 4, 1, 0),
    ((2, 3, 10), 4, 2, 2, 1),
    ((4, 1, 40), 5, 5, 2, 1),
    ((2, 2, 5), 5, 3, 3, 2),
    ((2, 1, 1), 3, 2, 1, 1),
    ((2, 3, 6, 5), (3, 2), 4, (1, 2), (1, 0)),
    ((3, 2, 7, 7), (3, 3), 2, 2, 1),
    ((1, 1, 4, 4), (4, 4), 1, 1, 0),
    ((2, 2, 5, 8), (2, 3), 3, (3, 1), (2, 1)),
]


def conv_graph(x_value, kernel_size, n_out, stride, padding, labels, seed=0):
    """x -> Reshape (a node, so that the Conv sends it dx) -> Conv -> Flatten -> SoftmaxCrossEntropyLoss."""
    np.random.seed(seed)
    x, y = edf.Input(), edf.Input()
    x.value, y.value = x_value, labels
    h = edf.Reshape(x, x_value.shape[1:])
    params = edf.ConvParams(x_value.shape[1], n_out, kernel_size)
    params.b.value[...] = np.random.standard_normal(n_out)
    conv = edf.Conv(params, h, stride=stride, padding=padding)
    loss = edf.SoftmaxCrossEntropyLoss(edf.Flatten(conv), y)
    return h, params, conv, loss


@pytest.mark.parametrize("backend, planned", [("numpy", False), ("cython", False), ("cython", True)],
                         ids=["reference", "compiled node by node", "planned"])
@pytest.mark.parametrize("case", GRID, ids=lambda c: f"{len(c[0]) - 2}-D {c[0]} k{c[1]} s{c[3]} p{c[4]}")
def test_node_agrees_with_torch(case, planned, backend):
    torch = pytest.importorskip("torch")
    x_shape, kernel_size, n_out, stride, padding = case
    edf.set_backend(backend)
    edf.DT = np.float64
    rng = np.random.default_rng(len(x_shape) * 100 + x_shape[-1])
    X = rng.standard_normal(x_shape)
    h, params, conv, loss = conv_graph(X, kernel_size, n_out, stride, padding, None)
    xt = torch.tensor(X, requires_grad=True)
    Wt, bt = (torch.tensor(p.value, requires_grad=True) for p in (params.W, params.b))
    fn = torch.nn.functional.conv1d if len(x_shape) == 3 else torch.nn.functional.conv2d
    out = fn(xt, Wt, bt, stride=stride, padding=padding)
    loss.y.value = rng.integers(0, out[0].numel(), x_shape[0])
    torch.nn.functional.cross_entropy(out.flatten(1), torch.tensor(loss.y.value)).backward()
    for _ in range(2 if planned else 1):
        edf.Forward()
    edf.Backward(loss)
    assert edf.current_graph()._planned == planned
    assert_close(conv.value, out.detach().numpy(), 1e-10, "value")
    assert_close(params.W.grad, Wt.grad.numpy(), 1e-10, "dW")
    assert_close(params.b.grad, bt.grad.numpy(), 1e-10, "db")
    assert_close(h.grad, xt.grad.numpy(), 1e-10, "dx")


def test_node_gradients_agree_with_central_differences():
    """The node-by-node path with dx (gradcheck's check of an Input runs the nodes' backward);
    the plan's gradients are checked in test_plan_gradients.py."""
    edf.DT = np.float64
    rng = np.random.default_rng(3)
    np.random.seed(3)
    x, y = edf.Input(), edf.Input()
    x.value, y.value = rng.standard_normal((2, 2, 5, 6)), rng.integers(0, 3, 2)
    h = edf.Tanh(edf.Conv(edf.ConvParams(2, 3, (3, 2)), x, stride=(2, 1), padding=(1, 0)))
    h = edf.Tanh(edf.Conv(edf.ConvParams(3, 2, (2, 2)), h, stride=2, padding=1))
    loss = edf.SoftmaxCrossEntropyLoss(edf.Affine(edf.AffineParams(2 * 2 * 3, 3), edf.Flatten(h)), y)
    result = edf.gradcheck(loss, tol=1e-6, inputs=[x])
    assert result.passed, str(result)


def mnist1d_cnn(dtype, seed=0):
    """Issue 15's CNN on random data: x (100, 1, 40), three Conv -> ReLU, Flatten, Affine, loss."""
    edf.DT = dtype
    np.random.seed(seed)
    rng = np.random.default_rng(seed)
    x, y = edf.Input(), edf.Input()
    x.value, y.value = rng.standard_normal((100, 1, 40)).astype(np.float32), rng.integers(0, 10, 100)
    h = x
    for c, k in ((1, 5), (25, 3), (25, 3)):
        h = edf.ReLU(edf.Conv(edf.ConvParams(c, 25, k), h, stride=2, padding=1))
    return edf.SoftmaxCrossEntropyLoss(edf.Affine(edf.AffineParams(125, 10), edf.Flatten(h)), y)


def cnn_2d(dtype, seed=0):
    """8 x 8 images, Conv 3x3 -> ReLU -> Conv 3x3 stride 2 -> Tanh -> Affine: a conv reading a conv."""
    edf.DT = dtype
    np.random.seed(seed)
    rng = np.random.default_rng(seed)
    x, y = edf.Input(), edf.Input()
    x.value, y.value = rng.standard_normal((16, 1, 8, 8)), rng.integers(0, 10, 16)
    h = edf.ReLU(edf.Conv(edf.ConvParams(1, 4, (3, 3)), x, padding=1))
    h = edf.Tanh(edf.Conv(edf.ConvParams(4, 6, (3, 3)), h, stride=2, padding=(1, 0)))
    return edf.SoftmaxCrossEntropyLoss(edf.Affine(edf.AffineParams(6 * 4 * 3, 10), edf.Flatten(h)), y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("model", [mnist1d_cnn, cnn_2d])
def test_planned_training_equals_node_by_node_training(model, dtype):
    results = []
    for planned in (True, False):
        edf.clear_compgraph()
        edf.set_backend("cython")
        loss = model(dtype)
        graph = edf.current_graph()
        opt = edf.optim.Adam(graph.Parameters, lr=1e-2)
        losses = []
        for _ in range(6):
            if planned:
                graph.Forward()
            else:
                graph._forward_node_by_node()
            losses.append(float(np.mean(loss.value)))
            graph.Backward(loss)
            opt.step()
        assert graph._planned == planned
        results.append((losses, [p.value.copy() for p in graph.Parameters]))
    (planned_losses, planned_params), (node_losses, node_params) = results
    assert_close(planned_losses, node_losses, rtol_for(dtype), "losses")
    for a, b in zip(planned_params, node_params):
        assert_close(a, b, rtol_for(dtype), "parameters after 6 Adam steps")
    assert node_losses[-1] < node_losses[0], "training lowers the loss"


def branching_cnn(n):
    """Convolutions the plan keeps batch-last (a chain through ReLU and Tanh, a Conv reading a
    Conv) and ones it cannot (a Conv read by a MaxPool), summed into one loss."""
    edf.DT = np.float64
    np.random.seed(3)
    rng = np.random.default_rng(n)
    x, y = edf.Input(), edf.Input()
    x.value, y.value = rng.standard_normal((n, 2, 11)), rng.integers(0, 3, n)
    c1 = edf.Conv(edf.ConvParams(2, 3, 3), x, stride=2, padding=1)        # (n, 3, 6)
    r1 = edf.ReLU(c1)
    c2 = edf.Conv(edf.ConvParams(3, 4, 2), r1)                          # (n, 4, 5)
    t = edf.Tanh(c2)
    c3 = edf.Conv(edf.ConvParams(4, 2, 3), t, padding=1)                # (n, 2, 5), read by a MaxPool
    c4 = edf.Conv(edf.ConvParams(3, 2, 3), c1, stride=3)                # (n, 2, 2), a Conv of a Conv
    logits = [edf.Affine(edf.AffineParams(20, 3), edf.Flatten(t)),
              edf.Affine(edf.AffineParams(4, 3), edf.Flatten(edf.MaxPool(c3, 2))),
              edf.Affine(edf.AffineParams(4, 3), edf.Flatten(c4))]
    loss = edf.SoftmaxCrossEntropyLoss(edf.Add(edf.Add(logits[0], logits[1]), logits[2]), y)
    return loss, {"c1": c1, "r1": r1, "c2": c2, "t": t, "c3": c3, "c4": c4}


def test_the_plan_keeps_conv_chains_batch_last_and_every_value_and_gradient_reads_as_the_reference():
    """Batch-last values and gradients (cedf.plan's layouts) are views in the user's layout: after
    planned steps, and after a new batch size makes a new plan, every node reads as NumPy's."""
    runs = {}
    for backend in ("numpy", "cython"):
        edf.clear_compgraph()
        edf.set_backend(backend)
        loss, named = branching_cnn(6)
        graph, seen = edf.current_graph(), []
        for n in (6, 6, 6, 4, 4, 4):
            if n != named["c1"].x.value.shape[0]:
                rng = np.random.default_rng(n)
                named["c1"].x.value, loss.y.value = rng.standard_normal((n, 2, 11)), rng.integers(0, 3, n)
            graph.Forward()
            graph.Backward(loss)
            graph.UpdateParameters()
            seen.append([(c.value.copy(), c.grad.copy()) for c in graph.CompNodes])
        runs[backend] = seen
        if backend == "cython":
            assert graph._planned
            kept = {name for name, node in named.items() if graph._plan.batch_last(node)}
            assert kept == {"c1", "r1", "c2", "t", "c4"}
            assert not named["t"].value.flags.c_contiguous and not named["t"].grad.flags.c_contiguous
            assert named["c3"].value.flags.c_contiguous
    for step, (ref, got) in enumerate(zip(runs["numpy"], runs["cython"])):
        for i, ((v_ref, g_ref), (v, g)) in enumerate(zip(ref, got)):
            assert_close(v, v_ref, 1e-10, f"step {step}: value of node {i}")
            assert_close(g, g_ref, 1e-10, f"step {step}: gradient of node {i}")


@pytest.fixture
def conv_ops(monkeypatch):
    """The CONV_* operations of every program built, as (name, args)."""
    made = []
    names = {capsule: name for name, capsule in _conv.PLAN_OPS.items()}
    build = plan.Program

    def recording(buffers, ops, messages=None):
        made.extend((names[code], args) for code, _, _, args, *_ in ops if code in names)
        return build(buffers, ops, messages)
    monkeypatch.setattr(plan, "Program", recording)
    return made


def test_the_plan_skips_dx_of_a_conv_reading_an_input_and_reuses_its_buffers(conv_ops):
    """MNIST-1D's CNN, planned: the first Conv's CONV_BWD gets no gx and reads x from its forward's
    copy, the others both from the plan's buffers; ReLU's ops run between them; the scratch is one
    buffer of the node's across steps."""
    edf.set_backend("cython")
    loss = mnist1d_cnn(np.float32)
    graph = edf.current_graph()
    convs = [n for n in graph.CompNodes if isinstance(n, edf.Conv)]
    edf.Forward()
    work = [c._work for c in convs]
    for _ in range(3):
        edf.Forward()
        edf.Backward(loss)
        edf.UpdateParameters()
    assert graph._planned
    assert all(a is b for a, b in zip(work, [c._work for c in convs]))
    backward = [args for name, args in conv_ops if name == "CONV_BWD"]
    assert [name for name, _ in conv_ops].count("CONV_FWD") == 3 and len(backward) == 3
    # Backward runs the nodes in reverse: the first Conv's operation comes last.
    assert backward[-1][0] is None and backward[-1][4] is None, "the first Conv computed dx for an Input"
    assert all(args[0] is not None and args[4] is not None for args in backward[:-1])
    # ReLU after a Conv in the plan: the value passed to the ReLU is the Conv's own buffer.
    relu = graph.CompNodes[1]
    assert isinstance(relu, edf.ReLU) and np.array_equal(relu.value, np.maximum(convs[0].value, 0))


def test_a_float64_input_feeds_a_float32_conv():
    """The Conv computes in its parameters' dtype, as Affine: x is converted (node and plan)."""
    edf.set_backend("cython")
    edf.DT = np.float32
    rng = np.random.default_rng(0)
    x, y = edf.Input(), edf.Input()
    x.value, y.value = rng.standard_normal((4, 2, 9)), rng.integers(0, 3, 4)
    conv = edf.Conv(edf.ConvParams(2, 3, 3), x, stride=2)
    loss = edf.SoftmaxCrossEntropyLoss(edf.Affine(edf.AffineParams(12, 3), edf.Flatten(conv)), y)
    values = []
    for _ in range(2):
        edf.Forward()
        values.append(conv.value.copy())
        edf.Backward(loss)
    assert edf.current_graph()._planned
    assert conv.value.dtype == np.float32 and np.array_equal(values[0], values[1])
    W, b = conv.params.W.value, conv.params.b.value
    expected = np.empty((4, 3, 1, 4), np.float32)
    reference.conv_forward(x.value.astype(np.float32)[:, :, None], W[:, :, None], b, expected, (1, 2), (0, 0))
    assert_close(conv.value, expected[:, :, 0], 1e-5, "value")


def test_conv_params():
    np.random.seed(5)
    p = edf.ConvParams(3, 4, 5, name="c1")
    np.random.seed(5)
    expected = np.random.uniform(-np.sqrt(3 / 15), np.sqrt(3 / 15), (4, 3, 5))
    assert p.W.value.shape == (4, 3, 5) and p.W.value.dtype == edf.DT
    assert np.array_equal(p.W.value, expected.astype(edf.DT))
    assert np.array_equal(p.b.value, np.zeros(4, edf.DT))
    assert (p.W.name, p.b.name) == ("c1.W", "c1.b")
    q = edf.ConvParams(2, 6, (3, 2))
    bound = np.sqrt(3 / (2 * 3 * 2))
    assert q.W.value.shape == (6, 2, 3, 2) and np.abs(q.W.value).max() <= bound and q.W.name is None


def test_swapping_a_conv_parameter_drops_the_plan():
    edf.set_backend("cython")
    edf.DT = np.float64
    loss = cnn_2d(np.float64)
    conv = edf.current_graph().CompNodes[0]
    edf.Forward()
    edf.Forward()
    assert edf.current_graph()._planned
    conv.params.W = edf.Parameter(conv.params.W.value * 2)
    assert edf.current_graph()._plan is None
    edf.Forward()
    edf.Backward(loss)
    assert np.array_equal(conv.params.W.grad.shape, conv.params.W.value.shape)


# -- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    ((0, 2, 3), "ConvParams: in_channels must be a positive integer, got 0"),
    ((2, -1, 3), "ConvParams: out_channels must be a positive integer, got -1"),
    ((2.0, 2, 3), "ConvParams: in_channels must be a positive integer, got 2.0"),
    ((True, 2, 3), "ConvParams: in_channels must be a positive integer"),
    ((2, 2, 0), r"ConvParams: kernel_size must be a positive integer or a pair of them \(height, width\), got 0"),
    ((2, 2, (3, 0)), "ConvParams: kernel_size must be a positive integer or a pair"),
    ((2, 2, (1, 2, 3)), "ConvParams: kernel_size must be"),
    ((2, 2, "3"), "ConvParams: kernel_size must be"),
    ((2, 2, 2.5), "ConvParams: kernel_size must be"),
])
def test_bad_conv_params(args, message):
    with pytest.raises(ValueError, match=message):
        edf.ConvParams(*args)


@pytest.mark.parametrize("kwargs, message", [
    ({"stride": 0}, r"Conv: stride must be a positive integer or a pair of them \(height, width\), got 0"),
    ({"stride": -2}, "Conv: stride must be a positive integer"),
    ({"stride": 1.5}, "Conv: stride must be a positive integer"),
    ({"stride": (1, 0)}, "Conv: stride must be a positive integer"),
    ({"stride": True}, "Conv: stride must be a positive integer"),
    ({"padding": -1}, "Conv: padding must be a non-negative integer or a pair of them"),
    ({"padding": (1, 2, 3)}, "Conv: padding must be a non-negative integer"),
    ({"padding": None}, "Conv: padding must be a non-negative integer"),
])
def test_bad_stride_or_padding(kwargs, message):
    with pytest.raises(ValueError, match=message):
        edf.Conv(edf.ConvParams(1, 2, 3), edf.Input(), **kwargs)


def test_params_must_be_conv_params():
    with pytest.raises(TypeError, match="Conv: params must be a ConvParams, got AffineParams"):
        edf.Conv(edf.AffineParams(2, 2), edf.Input())
    with pytest.raises(TypeError, match="Conv: x must be a cedf node"):
        edf.Conv(edf.ConvParams(1, 2, 3), np.zeros((2, 1, 5)))


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@pytest.mark.parametrize("x_shape, kernel, kwargs, message", [
    ((4, 40), 5, {}, r"Conv: x must be 3-D \(N, C, L\) for the 1-D kernel W of shape \(2, 1, 5\), got shape "
                     r"\(4, 40\); a batch of sequences \(N, L\) is x.reshape\(N, 1, L\)"),
    ((4, 1, 8, 8), 3, {}, r"Conv: x must be 3-D \(N, C, L\) for the 1-D kernel"),
    ((4, 1, 8), (3, 3), {}, r"Conv: x must be 4-D \(N, C, H, W\) for the 2-D kernel W of shape \(2, 1, 3, 3\)"),
    ((4, 3, 40), 5, {}, r"Conv: x has 3 channels \(shape \(4, 3, 40\)\), but W \(shape \(2, 1, 5\), "
                        r"\(out, in, ...\)\) expects 1 input channels"),
    ((4, 1, 3), 5, {}, r"Conv: the kernel \(length 5\) is longer than the padded input \(length 3 \+ 2 x "
                       r"padding 0 = 3\); pad more or use a smaller kernel"),
    ((4, 1, 3), 6, {"padding": 1}, r"Conv: the kernel \(length 6\) is longer than the padded input \(length 3 "
                                   r"\+ 2 x padding 1 = 5\)"),
    ((4, 1, 8, 2), (3, 3), {}, r"Conv: the kernel \(width 3\) is longer than the padded input \(width 2"),
    ((4, 1, 8), 3, {"stride": (1, 2)}, r"Conv: stride \(1, 2\) is a pair, but the kernel is 1-D \(W has shape "
                                       r"\(2, 1, 3\)\): give one integer"),
    ((4, 1, 8), 3, {"padding": (0, 1)}, r"Conv: padding \(0, 1\) is a pair, but the kernel is 1-D"),
])
def test_bad_input_is_named(x_shape, kernel, kwargs, message, backend):
    edf.set_backend(backend)
    x = edf.Input()
    x.value = np.zeros(x_shape)
    edf.Conv(edf.ConvParams(1, 2, kernel), x, **kwargs)
    with pytest.raises(ValueError, match=message):
        edf.Forward()


def test_bad_bias_and_a_bad_attribute_set_later():
    x = edf.Input()
    x.value = np.zeros((2, 1, 8))
    params = edf.ConvParams(1, 2, 3)
    conv = edf.Conv(params, x)
    params.b.value = np.zeros(3)
    with pytest.raises(ValueError, match=r"Conv: b has shape \(3,\), W has 2 output channels so b must be \(2,\)"):
        edf.Forward()
    params.b.value = np.zeros(2)
    edf.Forward()
    kernel = params.W.value
    params.W.value = np.zeros((2, 1, 0))
    with pytest.raises(ValueError, match=r"Conv: W has shape \(2, 1, 0\); every size of a kernel"):
        edf.Forward()
    params.W.value = kernel
    with pytest.raises(ValueError, match="Conv: stride must be a positive integer"):
        conv.stride = 0
    assert conv.stride == 1
    conv.stride = 2
    edf.Forward()
    assert conv.value.shape == (2, 2, 3)


def test_kernels_refuse_what_does_not_fit():
    """The Python-callable kernels check every shape before their loops (no crash, no wrong number)."""
    x, W, b = np.zeros((2, 3, 1, 8)), np.zeros((4, 3, 1, 3)), np.zeros(4)
    out = np.zeros((2, 4, 1, 6))
    _kernels.conv_forward(x, W, b, out, (1, 1), (0, 0))
    with pytest.raises(ValueError, match="conv_forward: out has shape"):
        _kernels.conv_forward(x, W, b, np.zeros((2, 4, 1, 5)), (1, 1), (0, 0))
    with pytest.raises(ValueError, match="conv_forward: W has shape"):
        _kernels.conv_forward(x, np.zeros((4, 2, 1, 3)), b, out, (1, 1), (0, 0))
    with pytest.raises(ValueError, match="conv_forward: kernel"):
        _kernels.conv_forward(x, np.zeros((4, 3, 1, 9)), b, out, (1, 1), (0, 0))
    with pytest.raises(ValueError, match="conv_forward: stride must be integers of at least 1"):
        _kernels.conv_forward(x, W, b, out, (1, 0), (0, 0))
    with pytest.raises(ValueError, match="conv_forward: padding must be a pair"):
        _kernels.conv_forward(x, W, b, out, (1, 1), 0)
    g = np.zeros((2, 4, 1, 6))
    with pytest.raises(ValueError, match="conv_backward: gx has shape"):
        _kernels.conv_backward(x, W, g, np.zeros((2, 3, 1, 9)), None, None, (1, 1), (0, 0))
    with pytest.raises(ValueError, match="conv_backward: g has shape"):
        _kernels.conv_backward(np.zeros((2, 3, 1, 9)), W, g, None, np.zeros_like(W), None, (1, 1), (0, 0))
    with pytest.raises(ValueError, match="conv_backward: gW has shape"):
        _kernels.conv_backward(x, W, g, None, np.zeros((4, 3, 1, 2)), None, (1, 1), (0, 0))
    with pytest.raises(ValueError, match="conv_backward: gb has shape"):
        _kernels.conv_backward(x, W, g, None, None, np.zeros(5), (1, 1), (0, 0))
    with pytest.raises(ValueError, match="conv_backward: g has shape"):
        _kernels.conv_backward(x, W, np.zeros((2, 5, 1, 6)), None, None, None, (1, 1), (0, 0))


@pytest.mark.parametrize("planned", [False, True], ids=["node by node", "planned"])
def test_an_empty_batch(planned):
    """A batch of no examples after a warm-up: an empty value, zero gradients, no crash."""
    edf.set_backend("cython")
    edf.DT = np.float64
    loss = cnn_2d(np.float64)
    graph = edf.current_graph()
    x, y = graph.CompNodes[0].x, loss.y
    for _ in range(2):
        edf.Forward()
    x.value, y.value = np.zeros((0, 1, 8, 8)), np.zeros(0, np.int64)
    for _ in range(2 if planned else 1):
        edf.Forward()
    edf.Backward(loss)
    assert graph._planned == planned
    conv = graph.CompNodes[0]
    assert conv.value.shape == (0, 4, 8, 8)
    assert np.array_equal(conv.params.W.grad, np.zeros_like(conv.params.W.value))
    assert np.array_equal(conv.params.b.grad, np.zeros_like(conv.params.b.value))


def test_bad_input_on_the_plan_path_raises_the_nodes_error_then_recovers():
    edf.set_backend("cython")
    loss = mnist1d_cnn(np.float32)
    graph = edf.current_graph()
    x = graph.CompNodes[0].x
    good = x.value
    for _ in range(2):
        edf.Forward()
    assert graph._planned
    for bad, message in ((np.zeros((100, 2, 40)), r"Conv: x has 2 channels"),
                         (np.zeros((100, 40)), r"Conv: x must be 3-D \(N, C, L\)"),
                         (np.zeros((100, 1, 2)), r"Conv: the kernel \(length 5\) is longer than the padded input")):
        x.value = bad
        with pytest.raises(ValueError, match=message):
            edf.Forward()
    x.value = good
    for _ in range(2):
        edf.Forward()
        edf.Backward(loss)
    assert graph._planned


@pytest.mark.parametrize("kernel", [3, (3, 3)], ids=["1-D", "2-D"])
def test_a_one_tuple_stride_or_padding_is_its_integer(kernel):
    # (2,) is 2, as the pools read it (a 2-D kernel took it for a pair and failed in Forward).
    edf.DT = np.float64
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 2, 7) if kernel == 3 else (2, 2, 7, 7))
    values = []
    for stride, padding in ((2, 1), ((2,), (1,))):
        np.random.seed(0)
        with edf.Graph() as g:
            x = edf.Input()
            x.value = X
            c = edf.Conv(edf.ConvParams(2, 3, kernel), x, stride=stride, padding=padding)
            g.Forward()
            values.append(c.value.copy())
    np.testing.assert_array_equal(values[1], values[0])


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_a_stride_or_padding_beyond_cs_integers_is_computed_or_refused_by_name(backend):
    # A stride of 2**70 was a bare OverflowError from the compiled kernels (it gives one output
    # position, as a stride of the padded length does); a padding of 2**62 wrapped around in
    # the kernel's size check and named a negative size.
    edf.set_backend(backend)
    edf.DT = np.float64
    try:
        x = edf.Input()
        x.value = np.random.default_rng(0).standard_normal((2, 3, 10))
        params = edf.ConvParams(3, 4, 3)
        huge, padded = edf.Conv(params, x, stride=2 ** 70, padding=1), edf.Conv(params, x, stride=12, padding=1)
        for _ in range(2):   # node by node, then the plan on the compiled backend
            edf.Forward()
            assert huge.value.shape == (2, 4, 1)
            np.testing.assert_array_equal(huge.value, padded.value)
        edf.clear_compgraph()
        x = edf.Input()
        x.value = np.zeros((2, 3, 10))
        edf.Conv(edf.ConvParams(3, 4, 3), x, padding=2 ** 62)
        with pytest.raises(ValueError, match=r"Conv: x of shape \(2, 3, 10\) padded by 4611686018427387904 gives 2 x "
                                             r"9223372036854775816 output positions, beyond the 2147483647"):
            edf.Forward()
    finally:
        edf.set_backend("cython")
