"""BatchNorm and LayerNorm: kernels against the reference, nodes against PyTorch and central
differences, the compiled plan against the node-by-node path, modes, checkpoints, bad input."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cedf as edf
from cedf import _kernels, plan, reference
from helpers import assert_close, rtol_for

DTYPES = st.sampled_from([np.float32, np.float64])


@pytest.fixture(autouse=True)
def training_mode():
    """Each test starts and ends in training mode (clearing a graph keeps its mode)."""
    edf.train()
    yield
    edf.train()


def data(seed, shape, dtype=np.float64, scale=1.0, shift=0.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + shift).astype(dtype)


def both(name, arrays, outputs):
    """Kernel `name` of the reference and of the compiled module on copies of `arrays`: the outputs of each."""
    results = []
    for module in (reference, _kernels):
        args = [a.copy() if isinstance(a, np.ndarray) else a for a in arrays]
        getattr(module, name)(*args)
        results.append([args[i] for i in outputs])
    return results


def check(name, arrays, outputs, dtype):
    ref, comp = both(name, arrays, outputs)
    for i, r, c in zip(outputs, ref, comp):
        assert_close(c, r, rtol_for(r.dtype if r.dtype == np.float64 else dtype), f"{name} output {i}")


# -- kernels: compiled against the reference ---------------------------------------------------

@given(N=st.integers(0, 6), C=st.integers(1, 5), S=st.integers(0, 7), dtype=DTYPES, training=st.booleans(),
       momentum=st.sampled_from([0.0, 0.1, 1.0]), shift=st.sampled_from([0.0, 50.0]), seed=st.integers(0, 1000))
def test_batch_norm_kernels(N, C, S, dtype, training, momentum, shift, seed):
    training = training and N * S >= 2
    x = data(seed, (N, C, S), dtype, 3.0, shift)
    w, b = data(seed + 1, C, dtype), data(seed + 2, C, dtype)
    rm, rv = data(seed + 3, C, dtype), np.abs(data(seed + 4, C, dtype)) + 0.5
    mean, invstd, out = np.empty(C), np.empty(C), np.empty((N, C, S), dtype)
    check("batch_norm_forward", [x, w, b, rm, rv, training, momentum, 1e-5, mean, invstd, out], [3, 4, 8, 9, 10],
          dtype)
    reference.batch_norm_forward(x, w, b, rm, rv, training, momentum, 1e-5, mean, invstd, out)
    g = data(seed + 5, (N, C, S), dtype)
    grads = [data(seed + 6, (N, C, S), dtype), data(seed + 7, C, dtype), data(seed + 8, C, dtype)]
    check("batch_norm_backward", [x, w, g, mean, invstd, training, *grads], [6, 7, 8], dtype)
    check("batch_norm_backward", [x, w, g, mean, invstd, training, None, None, grads[2]], [8], dtype)


@given(R=st.integers(0, 8), F=st.integers(1, 9), dtype=DTYPES, shift=st.sampled_from([0.0, 50.0]),
       seed=st.integers(0, 1000))
def test_layer_norm_kernels(R, F, dtype, shift, seed):
    x = data(seed, (R, F), dtype, 2.0, shift)
    w, b = data(seed + 1, F, dtype), data(seed + 2, F, dtype)
    mean, invstd, out = np.empty(R), np.empty(R), np.empty((R, F), dtype)
    check("layer_norm_forward", [x, w, b, 1e-5, mean, invstd, out], [4, 5, 6], dtype)
    reference.layer_norm_forward(x, w, b, 1e-5, mean, invstd, out)
    g = data(seed + 5, (R, F), dtype)
    grads = [data(seed + 6, (R, F), dtype), data(seed + 7, F, dtype), data(seed + 8, F, dtype)]
    check("layer_norm_backward", [x, w, g, mean, invstd, *grads], [5, 6, 7], dtype)
    check("layer_norm_backward", [x, w, g, mean, invstd, grads[0], None, None], [5], dtype)


def test_kernels_refuse_mismatched_buffers():
    x, c = np.zeros((4, 3, 2)), np.zeros(3)
    with pytest.raises(ValueError, match="batch_norm_forward: bias has shape"):
        _kernels.batch_norm_forward(x, c, np.zeros(2), c.copy(), c.copy(), True, 0.1, 1e-5, c.copy(), c.copy(), x)
    with pytest.raises(ValueError, match="training needs 2 or more values per channel"):
        _kernels.batch_norm_forward(x[:1, :, :1].copy(), c, c, c.copy(), c.copy(), True, 0.1, 1e-5, c.copy(),
                                    c.copy(), np.zeros((1, 3, 1)))
    with pytest.raises(ValueError, match="layer_norm_backward: g has shape"):
        _kernels.layer_norm_backward(np.zeros((2, 3)), c, np.zeros((3, 2)), np.zeros(2), np.zeros(2), None, None, None)


# -- the nodes against PyTorch (float64) ---------------------------------------------------------

SHAPES = [(8, 3), (5, 3, 7), (4, 2, 3, 5)]


def torch_grads(fn, x, *params):
    """fn's output and the gradient of sum(output * G) for a fixed random G, w.r.t. x and params."""
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    tp = [torch.tensor(p, requires_grad=True) for p in params]
    out = fn(tx, *tp)
    G = torch.tensor(data(99, tuple(out.shape)))
    (out * G).sum().backward()
    return out.detach().numpy(), G.numpy(), [tx.grad.numpy()] + [p.grad.numpy() for p in tp]


def node_grads(node, G):
    """The node's gradients for an incoming G: run its backward with .grad = G, the inputs' .grad zeroed."""
    for p in (node.x, node.weight, node.bias):
        if hasattr(p, "grad") and p.grad is not None:
            p.grad[...] = 0
    node.grad = G.copy()
    x = node.x
    x.grad = np.zeros_like(x.value)
    x.__class__ = _Catching
    try:
        node.backward()
    finally:
        x.__class__ = edf.Input
    return [x.grad, node.weight.grad, node.bias.grad]


class _Catching(edf.Input):
    """An Input that keeps the gradient sent to it, for the comparisons with PyTorch."""

    def addgrad(self, delta):
        self.grad += delta


def prepared(node):
    for p in (node.weight, node.bias):
        p.grad = np.zeros_like(p.value)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_against_torch(shape, training):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    edf.set_backend("cython")
    edf.DT = np.float64
    x = edf.Input()
    C = shape[1]
    bn = edf.BatchNorm(x, num_features=C, momentum=0.3, eps=1e-3)
    bn.weight.value[...] = data(5, C)
    bn.bias.value[...] = data(6, C)
    rm, rv = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)
    # Several training steps move the running statistics; compare them, then the mode under test.
    for step in range(4):
        x.value = data(step, shape, scale=2.0, shift=1.0)
        edf.Forward()
        expected = F.batch_norm(torch.tensor(x.value), rm, rv, torch.tensor(bn.weight.value),
                                torch.tensor(bn.bias.value), training=True, momentum=0.3, eps=1e-3)
        assert_close(bn.value, expected.numpy(), 1e-10, "training value")
        assert_close(bn.running_mean, rm.numpy(), 1e-10, "running_mean")
        assert_close(bn.running_var, rv.numpy(), 1e-10, "running_var")
    if not training:
        edf.eval()
    x.value = data(7, shape, scale=2.0, shift=1.0)
    edf.current_graph().release_plan()   # node by node: the backward below reads what its forward kept
    edf.Forward()
    prepared(bn)
    value, G, expected = torch_grads(
        lambda tx, w, b: F.batch_norm(tx, rm.clone(), rv.clone(), w, b, training=training, momentum=0.3, eps=1e-3),
        x.value, bn.weight.value, bn.bias.value)
    assert_close(bn.value, value, 1e-10, "value")
    for got, want, what in zip(node_grads(bn, G), expected, ("x", "weight", "bias")):
        assert_close(got, want, 1e-10, f"gradient of {what}")


@pytest.mark.parametrize("shape", SHAPES)
def test_layer_norm_against_torch(shape):
    torch = pytest.importorskip("torch")
    edf.DT = np.float64
    x = edf.Input()
    x.value = data(1, shape, scale=2.0, shift=1.0)
    ln = edf.LayerNorm(x, eps=1e-4)
    assert ln.num_features == shape[-1]
    ln.weight.value[...] = data(5, shape[-1])
    ln.bias.value[...] = data(6, shape[-1])
    edf.Forward()
    prepared(ln)
    value, G, expected = torch_grads(
        lambda tx, w, b: torch.nn.functional.layer_norm(tx, (shape[-1],), w, b, eps=1e-4),
        x.value, ln.weight.value, ln.bias.value)
    assert_close(ln.value, value, 1e-10, "value")
    for got, want, what in zip(node_grads(ln, G), expected, ("x", "weight", "bias")):
        assert_close(got, want, 1e-10, f"gradient of {what}")


# -- the plan: the same as node by node, modes switched without a new plan -------------------------

def cnn_like(dtype, seed=0, dropout=False):
    """x (N, C, L) -> BatchNorm -> ReLU -> Flatten -> LayerNorm -> Affine -> BatchNorm [-> Dropout] -> Affine
    -> loss, in a graph of its own."""
    edf.DT = dtype
    np.random.seed(seed)
    g = edf.Graph()
    with g:
        x, y = edf.Input(), edf.Input()
        x.value = data(seed, (6, 3, 4), scale=2.0, shift=1.0)
        y.value = np.arange(6) % 3
        bn = edf.BatchNorm(x, num_features=3, name="bn")
        h = edf.LayerNorm(edf.Flatten(edf.ReLU(bn)), num_features=12)
        bn2 = edf.BatchNorm(edf.Affine(edf.AffineParams(12, 5), h), num_features=5)
        head = edf.Dropout(bn2, p=0.5) if dropout else bn2
        loss = edf.SoftmaxCrossEntropyLoss(edf.Affine(edf.AffineParams(5, 3), head), y)
    return g, x, loss, [bn, bn2]


def train(g, x, loss, steps, planned):
    opt = edf.optim.Adam(g.Parameters, lr=0.05)
    values = []
    for step in range(steps):
        x.value = data(100 + step, x.value.shape, scale=2.0, shift=1.0)
        g.Forward()
        g.Backward(loss)
        opt.step()
        assert (g._plan is not None) == planned
        values.append(np.array(loss.value))
    return values


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_plan_trains_as_the_nodes_do(dtype, monkeypatch):
    edf.set_backend("cython")
    g1, x1, loss1, bns1 = cnn_like(dtype)
    planned = train(g1, x1, loss1, 6, planned=True)
    with monkeypatch.context() as m:
        m.setattr(plan, "build", lambda graph: None)
        g2, x2, loss2, bns2 = cnn_like(dtype)
        nodes = train(g2, x2, loss2, 6, planned=False)
    # The same loops on the same buffers: equal, not only close.
    for a, b in zip(planned, nodes):
        np.testing.assert_array_equal(a, b)
    for p, q in zip(g1.Parameters, g2.Parameters):
        np.testing.assert_array_equal(p.value, q.value)
    for a, b in zip(bns1, bns2):
        np.testing.assert_array_equal(a.running_mean, b.running_mean)
        np.testing.assert_array_equal(a.running_var, b.running_var)


def planned_cnn():
    """cnn_like in float64 after three steps on the compiled backend: its graph, x, loss, first
    BatchNorm and plan."""
    edf.set_backend("cython")
    g, x, loss, (bn, _) = cnn_like(np.float64)
    for _ in range(3):
        g.Forward()
        g.Backward(loss)
    assert g._plan is not None
    return g, x, loss, bn, g._plan


def normalised(bn, x, mean, var):
    """What BatchNorm `bn` makes of x (N, C, L) with these statistics."""
    return (x - mean[:, None]) / np.sqrt(var[:, None] + bn.eps) * bn.weight.value[:, None] + bn.bias.value[:, None]


def test_eval_and_train_switch_the_plan_without_rebuilding_it():
    g, x, loss, bn, compiled = planned_cnn()
    with g:
        edf.eval()
        before = bn.running_mean.copy()
        g.Forward()
        assert g._plan is compiled
        np.testing.assert_array_equal(bn.running_mean, before)   # evaluation leaves them alone
        xv = x.value
        assert_close(bn.value, normalised(bn, xv, bn.running_mean, bn.running_var), 1e-12,
                     "evaluation mode: the running statistics")
        edf.train()
        g.Forward()
        assert g._plan is compiled
        mean = xv.mean(axis=(0, 2))
        expected = (xv - mean[:, None]) / np.sqrt(xv.var(axis=(0, 2))[:, None] + bn.eps) * bn.weight.value[:, None]
        assert_close(bn.value, expected + bn.bias.value[:, None], 1e-12, "training mode: the batch's statistics")
        assert_close(bn.running_mean, 0.9 * before + 0.1 * mean, 1e-12, "running_mean moved")


def test_the_backward_differentiates_the_mode_its_forward_ran_in():
    """A Backward after the mode changed still differentiates what its Forward computed."""
    edf.set_backend("cython")
    g, x, loss, _ = cnn_like(np.float64)
    with g:
        for _ in range(2):
            g.Forward()
        g.Backward(loss)
        expected = [p.grad.copy() for p in g.Parameters]
        g.Forward()
        edf.eval()
        g.Backward(loss)
        for p, e in zip(g.Parameters, expected):
            np.testing.assert_array_equal(p.grad, e)


def test_predict_runs_in_evaluation_mode_and_restores_training():
    edf.set_backend("cython")
    g, x, loss, (bn, _) = cnn_like(np.float64)
    with g:
        for _ in range(3):
            g.Forward()
        X = data(5, (4, 3, 4))
        got = edf.predict(bn, x, X)
        assert g.training
        expected = ((X - bn.running_mean[:, None]) / np.sqrt(bn.running_var[:, None] + bn.eps)
                    * bn.weight.value[:, None] + bn.bias.value[:, None])
        assert_close(got, expected, 1e-12, "predict")


# -- bad input -------------------------------------------------------------------------------------

def test_num_features_is_read_from_the_input_or_asked_for():
    x = edf.Input()
    with pytest.raises(ValueError, match=r"BatchNorm: give num_features .* x has no value yet"):
        edf.BatchNorm(x)
    with pytest.raises(ValueError, match=r"LayerNorm: give num_features .* x has no value yet"):
        edf.LayerNorm(edf.ReLU(x))
    x.value = np.zeros((4, 5, 6))
    assert edf.BatchNorm(x).num_features == 5
    assert edf.LayerNorm(x).num_features == 6
    x.value = np.zeros(4)
    with pytest.raises(ValueError, match=r"BatchNorm: give num_features .* x.value has shape \(4,\)"):
        edf.BatchNorm(x)


@pytest.mark.parametrize("make, message", [
    (lambda x: edf.BatchNorm(x, num_features=0), "BatchNorm: num_features must be a positive integer, got 0"),
    (lambda x: edf.BatchNorm(x, 3, momentum=1.5), r"BatchNorm: momentum must be a number in \[0, 1\], got 1.5"),
    (lambda x: edf.BatchNorm(x, 3, eps=0), "BatchNorm: eps must be a positive finite number, got 0"),
    (lambda x: edf.LayerNorm(x, 3, eps=float("nan")), "LayerNorm: eps must be a positive finite number"),
    (lambda x: edf.LayerNorm(x, 2.5), "LayerNorm: num_features must be a positive integer, got 2.5"),
    (lambda x: edf.BatchNorm("x", 3), "BatchNorm: x must be a cedf node"),
])
def test_bad_arguments_are_named(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make(edf.Input())


def test_bad_inputs_are_named_before_anything_runs():
    x = edf.Input()
    bn, ln = edf.BatchNorm(x, num_features=3), edf.LayerNorm(x, num_features=3)
    x.value = np.zeros((4, 5))
    with pytest.raises(ValueError, match=r"BatchNorm: x has 5 features on axis 1 \(shape \(4, 5\)\), but the "
                                         r"node was made for num_features=3"):
        bn.forward()
    with pytest.raises(ValueError, match=r"LayerNorm: x has 5 features on axis -1"):
        ln.forward()
    x.value = np.zeros(3)
    with pytest.raises(ValueError, match=r"BatchNorm: x must be \(N, F\), \(N, C, L\) or \(N, C, H, W\), got "
                                         r"shape \(3,\)"):
        bn.forward()
    x.value = np.zeros((1, 3))
    with pytest.raises(ValueError, match="BatchNorm: in training mode it needs more than one value per channel"):
        bn.forward()
    edf.eval()
    bn.forward()   # evaluation mode normalises one example by the running statistics
    with pytest.raises(ValueError, match="BatchNorm: running_var must be a float array of shape"):
        bn.running_var = np.ones(4)
    bn.weight.value = np.ones(4)
    with pytest.raises(ValueError, match=r"BatchNorm: weight has shape \(4,\), expected \(3,\)"):
        bn.forward()


def test_a_batch_of_one_in_evaluation_runs_node_by_node_and_says_so_in_training():
    """The plan cannot raise, so a graph the training mode would refuse is left to the nodes."""
    edf.set_backend("cython")
    x = edf.Input()
    x.value = np.ones((1, 3))
    bn = edf.BatchNorm(x)
    edf.eval()
    for _ in range(2):
        edf.Forward()
    assert edf.current_graph()._plan is None
    edf.train()
    with pytest.raises(ValueError, match="BatchNorm: in training mode it needs more than one value"):
        edf.Forward()
    assert bn.running_var.tolist() == [1, 1, 1]


def test_planned_gradients_in_evaluation_mode_agree_with_central_differences():
    """Evaluation mode's backward (the running statistics held fixed; Dropout the identity), planned."""
    edf.set_backend("cython")
    g, x, loss, (bn, bn2) = cnn_like(np.float64, dropout=True)
    with g:
        train(g, x, loss, 3, planned=True)   # running statistics away from zeros and ones
        edf.eval()
        for _ in range(2):
            g.Forward()
        assert g._planned
        result = edf.gradcheck(loss, tol=1e-6)
        assert result.planned_backprop and result.planned_quotients, str(result)
        assert result.passed, str(result)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_the_nodes_on_the_reference_backend_agree_with_the_compiled_ones(dtype, mode):
    def run():
        g, x, loss, bns = cnn_like(dtype)
        with g:
            getattr(edf, mode)()
            steps = []
            for step in range(3):
                g.Forward()
                g.Backward(loss)
                steps.append([np.array(loss.value)] + [p.grad.copy() for p in g.Parameters])
            running = [b.running_var.copy() for b in bns]
            edf.train()
        return steps, running
    edf.set_backend("numpy")
    ref = run()
    edf.set_backend("cython")
    comp = run()
    # float32: the layers' sums in the dtype (BLAS) differ by a few ulps, amplified through normalisation
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    for step, (r_step, c_step) in enumerate(zip(ref[0], comp[0])):
        # Normwise over the step's gradients: two of them (LayerNorm's shift, the bias before the
        # second BatchNorm) are zero exactly, each normalisation removing what they add, so they
        # hold nothing but the rounding of terms the size of the others, in either backend.
        assert_close(c_step[0], r_step[0], rtol, f"step {step}, loss")
        scale = max(float(np.max(np.abs(r))) for r in r_step[1:])
        for i, (r, c) in enumerate(zip(r_step[1:], c_step[1:])):
            assert_close(c, r, rtol, f"step {step}, gradient {i}", scale=scale)
    for i, (r, c) in enumerate(zip(*(run_[1] for run_ in (ref, comp)))):
        assert_close(c, r, rtol, f"running variance {i}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradcheck_in_training_mode_leaves_the_running_statistics_as_they_were(dtype):
    edf.DT = dtype
    np.random.seed(0)
    x, y = edf.Input(), edf.Input()
    x.value = np.random.default_rng(0).standard_normal((8, 3, 5))
    y.value = np.arange(8) % 2
    bn = edf.BatchNorm(x)
    L = edf.SoftmaxCrossEntropyLoss(edf.Affine(edf.AffineParams(15, 2), edf.Flatten(bn)), y)
    edf.Forward()
    mean, var = bn.running_mean.copy(), bn.running_var.copy()
    result = edf.gradcheck(L)
    assert result.passed, str(result)
    np.testing.assert_array_equal(bn.running_mean, mean)   # hundreds of Forwards ran, none counts
    np.testing.assert_array_equal(bn.running_var, var)


def test_clearing_a_graph_puts_it_back_in_training_mode():
    edf.eval()
    assert not edf.current_graph().training
    edf.clear_compgraph()
    assert edf.current_graph().training


def test_after_a_float64_check_of_a_float32_batchnorm_training_follows_its_statistics():
    """The check gives the node float64 statistics for a while: the plan afterwards reads the node's own."""
    edf.DT = np.float32
    np.random.seed(0)
    x, y = edf.Input(), edf.Input()
    x.value = np.random.default_rng(0).standard_normal((8, 3, 5)).astype(np.float32)
    y.value = np.arange(8) % 2
    bn = edf.BatchNorm(x)
    L = edf.SoftmaxCrossEntropyLoss(edf.Affine(edf.AffineParams(15, 2), edf.Flatten(bn)), y)
    edf.Forward()
    edf.gradcheck(L)
    before = bn.running_mean.copy()
    for _ in range(2):
        edf.Forward()
    batch_mean = x.value.mean(axis=(0, 2), dtype=np.float64)
    expected = before
    for _ in range(2):
        expected = 0.9 * expected + 0.1 * batch_mean
    np.testing.assert_allclose(bn.running_mean, expected, rtol=1e-5)
    assert bn.running_mean.dtype == np.float32


def test_the_feature_count_is_read_from_the_layer_before_when_x_has_no_value_yet():
    x = edf.Input()   # no value: the layers tell
    conv = edf.Conv(edf.ConvParams(1, 7, 3), x)
    bn = edf.BatchNorm(edf.MaxPool(edf.Dropout(edf.ReLU(conv)), 2))
    assert bn.num_features == 7 and bn.weight.value.shape == (7,)
    with pytest.raises(ValueError, match=r"LayerNorm: give num_features .* x has no value yet"):
        edf.LayerNorm(conv)   # a Conv's last axis is its length, which its input decides
    with edf.Graph():
        h = edf.Affine(edf.AffineParams(5, 4), edf.Input())
        assert edf.LayerNorm(edf.Add(edf.Tanh(h), h)).num_features == 4
        assert edf.BatchNorm(h).num_features == 4
    x.value = np.random.default_rng(0).standard_normal((4, 1, 12))
    edf.Forward()
    assert bn.value.shape == (4, 7, 5)


def test_the_plan_follows_statistics_replaced_or_frozen_behind_its_back(tmp_path):
    # The plan held the arrays the statistics were in when it was built: cedf.load put a loaded
    # statistic into a new array (the old one read-only) without dropping the plan, which went
    # on normalising with the old one; and in training the plan wrote into an array the user
    # had made read-only, which the node by node Forward leaves alone (it takes a copy).
    g, x, loss, bn, compiled = planned_cnn()
    with g:
        edf.save(tmp_path / "m.npz", graph=g)
        saved_mean, saved_var = bn.running_mean.copy(), bn.running_var.copy()
        g.Forward()   # training: the statistics move on from the saved ones
        assert g._plan is compiled and not np.array_equal(bn.running_mean, saved_mean)
        frozen = bn.running_mean
        frozen.flags.writeable = False
        kept = frozen.copy()
        edf.load(tmp_path / "m.npz", graph=g)
        np.testing.assert_array_equal(bn.running_mean, saved_mean)
        edf.eval()
        g.Forward()
        assert_close(bn.value, normalised(bn, x.value, saved_mean, saved_var), 1e-12,
                     "evaluation after load: the loaded statistics")
        edf.train()
        bn.running_var.flags.writeable = False
        frozen_var = bn.running_var
        g.Forward()
        xv = x.value
        assert_close(bn.running_mean, 0.9 * saved_mean + 0.1 * xv.mean(axis=(0, 2)), 1e-12, "running_mean moved")
        assert_close(bn.running_var, 0.9 * saved_var + 0.1 * xv.var(axis=(0, 2), ddof=1), 1e-12, "running_var moved")
        np.testing.assert_array_equal(frozen, kept)   # the read-only arrays: not written
        np.testing.assert_array_equal(frozen_var, saved_var)
