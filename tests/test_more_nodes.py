"""Tanh, ReLU, LeakyReLU and the losses on logits: both backends agree, central differences agree with both."""
import warnings

import numpy as np
import pytest

import cedf as edf
from helpers import assert_close, both_backends, rtol_for

FLOATS = pytest.mark.parametrize("dtype", [np.float32, np.float64])
ACTIVATIONS = {
    "Tanh": edf.Tanh,
    "ReLU": edf.ReLU,
    "LeakyReLU": lambda x: edf.LeakyReLU(x, slope=0.1),
}
HEADS = ["SoftmaxCrossEntropyLoss", "BCEWithLogitsLoss"]


def network(activation, head, dtype, batch=40, seed=0):
    """x -> Affine -> activation -> Affine -> activation -> Affine -> loss on logits."""
    rng = np.random.default_rng(seed)
    np.random.seed(seed)
    edf.DT = dtype
    x, y = edf.Input(), edf.Input()
    x.value = rng.standard_normal((batch, 6)).astype(dtype)
    h = x
    for n_in, n_out in ((6, 9), (9, 7)):
        h = ACTIVATIONS[activation](edf.Affine(edf.AffineParams(n_in, n_out), h))
    if head == "SoftmaxCrossEntropyLoss":
        y.value = rng.integers(0, 4, batch)
        L = edf.SoftmaxCrossEntropyLoss(edf.Affine(edf.AffineParams(7, 4), h), y)
    else:
        y.value = rng.random(batch)   # soft targets
        L = edf.BCEWithLogitsLoss(edf.Affine(edf.AffineParams(7, 1), h), y)
    return x, L


def run(activation, head, dtype, steps=4):
    edf.clear_compgraph()
    _, L = network(activation, head, dtype)
    edf.learning_rate = 0.5
    out = []
    for _ in range(steps):
        edf.Forward()
        edf.Backward(L)
        out.append([(c.value.copy(), c.grad.copy()) for c in edf.CompNodes]
                   + [(p.value.copy(), p.grad.copy()) for p in edf.Parameters])
        edf.UpdateParameters()
    run.planned = edf.current_graph()._planned
    return out


@FLOATS
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_training_steps_agree_between_backends(activation, head, dtype):
    ref, comp = both_backends(lambda: run(activation, head, dtype))
    # On the compiled backend, steps after the first run the compiled plan; BCEWithLogitsLoss
    # (soft targets, which the plan's label check does not take) keeps its graph node by node.
    assert run.planned == (head == "SoftmaxCrossEntropyLoss")
    for step, (r_step, c_step) in enumerate(zip(ref, comp)):
        for i, ((rv, rg), (cv, cg)) in enumerate(zip(r_step, c_step)):
            # Entries that cancel carry the rounding of their terms: scale by the step's largest gradient.
            scale = max(np.max(np.abs(g), initial=0) for _, g in r_step)
            assert_close(cv, rv, rtol_for(dtype) * 10, f"step {step} value {i}")
            assert_close(cg, rg, rtol_for(dtype) * 10, f"step {step} grad {i}", scale=scale)


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_central_differences_agree_with_backprop(activation, head, backend):
    edf.set_backend(backend)
    x, L = network(activation, head, np.float64, batch=12)
    result = edf.gradcheck(L, inputs=[x])
    assert result.worst < 1e-6, str(result)


@FLOATS
def test_losses_on_logits_equal_the_lecture_pairs_where_nothing_is_clipped(dtype):
    rng = np.random.default_rng(1)
    edf.DT = dtype
    z, c, b = edf.Input(), edf.Input(), edf.Input()
    z.value = rng.standard_normal((30, 5)).astype(dtype)   # within 10 of each row's max: no floor
    c.value, b.value = rng.integers(0, 5, 30), rng.integers(0, 2, 30)
    fused = edf.SoftmaxCrossEntropyLoss(z, c)
    pair = edf.CrossEntropyLoss(edf.Softmax(z), c)
    z1 = edf.Input()
    z1.value = z.value[:, :1].copy()
    fused_b = edf.BCEWithLogitsLoss(z1, b)
    pair_b = edf.BCELoss(edf.Sigmoid(z1), b)
    edf.Forward()
    assert_close(fused.value, pair.value, rtol_for(dtype) * 10, "cross-entropy")
    assert_close(fused.probabilities, edf.CompNodes[1].value, rtol_for(dtype) * 10, "probabilities")
    assert_close(fused_b.value, pair_b.value, rtol_for(dtype) * 10, "binary cross-entropy")


@FLOATS
@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_losses_on_huge_logits_are_finite_and_exact(backend, dtype):
    edf.set_backend(backend)
    edf.DT = dtype
    big = np.finfo(dtype).max / 4
    z, y, z1, y1 = edf.Input(), edf.Input(), edf.Input(), edf.Input()
    z.value = np.array([[big, -big, 0], [-big, -big, big], [1e30, 1e30, -1e30]], dtype)
    y.value = [0, 0, 2]
    z1.value = np.array([big, -big, big, -big, 1e30], dtype)
    y1.value = np.array([1, 0, 0, 1, 0.5])
    z_pass, z1_pass = _Pass(z), _Pass(z1)
    L = edf.SoftmaxCrossEntropyLoss(z_pass, y)
    M = edf.BCEWithLogitsLoss(z1_pass, y1)
    # The gradients of the logits in closed form, (softmax(z) - onehot(y)) / B and (sigmoid(z) - y) / B:
    # the softmax of these rows is exactly one-hot, or one half on each of the two tied 1e30.
    dz = np.array([[0, 0, 0], [-1, 0, 1], [0.5, 0.5, -1]]) / 3
    dz1 = np.array([0, 0, 1, -1, 0.5]) / 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):   # twice: the second step reuses the first's buffers
            for loss, logits, expected in ((L, z_pass, dz), (M, z1_pass, dz1)):
                edf.Forward()
                edf.Backward(loss)
                assert logits.grad.dtype == dtype
                np.testing.assert_allclose(logits.grad, expected.astype(dtype), rtol=1e-6, atol=0)
    assert np.all(np.isfinite(L.value)) and np.all(np.isfinite(M.value))
    # Exact values: a confident right answer costs 0, a confident wrong one costs the margin.
    np.testing.assert_allclose(L.value, np.array([0, 2 * big, 2e30], np.float64).astype(dtype), rtol=1e-6)
    np.testing.assert_allclose(M.value, np.array([0, 0, big, big, 5e29], np.float64).astype(dtype), rtol=1e-6)


class _Pass(edf.CompNode):
    """A user's identity node, so that the logits have a gradient to check."""

    def __init__(self, x):
        edf.CompNodes.append(self)
        self.x = x

    def forward(self):
        self.value = np.asarray(self.x.value)

    def backward(self):
        pass


@pytest.mark.parametrize("build, message", [
    (lambda x, y: edf.LeakyReLU(x, slope=float("nan")), "LeakyReLU: slope must be a finite number"),
    (lambda x, y: edf.SoftmaxCrossEntropyLoss(x, y) and setattr(y, "value", [0, 1, 5]),
     r"SoftmaxCrossEntropyLoss: label 5 is outside \[0, 4\) \(logits has 4 classes\)"),
    (lambda x, y: edf.SoftmaxCrossEntropyLoss(x, y) and setattr(y, "value", [0, 1.5, 2]),
     r"SoftmaxCrossEntropyLoss: y must hold whole class indices, got 1.5"),
    (lambda x, y: edf.BCEWithLogitsLoss(x, y),
     r"BCEWithLogitsLoss: logits has shape \(3, 4\), expected \(B, 1\) or \(B,\)"),
    (lambda x, y: edf.BCEWithLogitsLoss(edf.Affine(edf.AffineParams(4, 1), x), y) and setattr(y, "value", [0, 1.5, 1]),
     r"BCEWithLogitsLoss: y must hold targets in \[0, 1\], got 1.5"),
    (lambda x, y: edf.Tanh("x"), "Tanh: x must be a cedf node"),
])
def test_bad_input_is_named(build, message):
    x, y = edf.Input(), edf.Input()
    x.value, y.value = np.ones((3, 4)), [0, 1, 1]
    with pytest.raises((ValueError, TypeError), match=message):
        build(x, y)
        edf.Forward()


def test_bad_labels_after_planned_steps_are_named():
    edf.set_backend("cython")
    _, L = network("ReLU", "SoftmaxCrossEntropyLoss", np.float32)
    for _ in range(2):
        edf.Forward()
        edf.Backward(L)
    assert edf.current_graph()._planned
    good = L.y.value.copy()
    L.y.value = np.where(np.arange(len(good)) == 3, 7, good)
    with pytest.raises(ValueError, match=r"SoftmaxCrossEntropyLoss: label 7 is outside \[0, 4\) \(logits has 4 classes\)"):
        edf.Forward()
    L.y.value = good
    edf.Forward()
    edf.Backward(L)
    assert edf.current_graph()._planned
