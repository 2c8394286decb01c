"""cedf.gradcheck: backprop against central differences, for cedf's nodes and a user's."""
import numpy as np
import pytest

import cedf as edf
from helpers import Tanh


class WrongTanh(Tanh):
    """A user's node whose backward forgets the derivative: gradcheck must catch it."""

    def backward(self):
        self.x.addgrad(self.grad)


def mlp(node=Tanh, loss="ce"):
    edf.DT = np.float64
    np.random.seed(0)
    rng = np.random.default_rng(0)
    x, y = edf.Input(), edf.Input()
    x.value = rng.standard_normal((12, 4))
    h = node(edf.Affine(edf.AffineParams(4, 5, name="hidden"), x))
    h = edf.Sigmoid(edf.Affine(edf.AffineParams(5, 6), h))
    if loss == "ce":
        y.value = rng.integers(0, 3, 12)
        L = edf.CrossEntropyLoss(edf.Softmax(edf.Affine(edf.AffineParams(6, 3), h)), y)
    else:
        y.value = rng.integers(0, 2, 12)
        L = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(6, 1), h)), y)
    return x, L


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_backprop_agrees_with_central_differences(backend, loss):
    edf.set_backend(backend)
    x, L = mlp(loss=loss)
    before = [p.value.copy() for p in edf.Parameters] + [x.value.copy()]
    result = edf.gradcheck(L, inputs=[x])
    assert result.passed and result.worst < 1e-6, str(result)
    assert list(result.errors) == ["hidden.A", "hidden.b", "Parameter#2", "Parameter#3",
                                   "Parameter#4", "Parameter#5", "Input#0"]
    for a, b in zip([p.value for p in edf.Parameters] + [x.value], before):
        np.testing.assert_array_equal(a, b)
    assert type(x) is edf.Input


def test_a_wrong_gradient_is_reported():
    x, L = mlp(node=WrongTanh)
    result = edf.gradcheck(L)
    assert not result.passed
    # Only what lies before the wrong node is wrong.
    assert result.errors["hidden.A"] > 1e-2 and result.errors["Parameter#5"] < 1e-6
    assert "hidden.A" in str(result) and "exceeds tol" in str(result)
    with pytest.raises(AssertionError, match="gradcheck: FAILED"):
        edf.gradcheck(L, raise_on_failure=True)


def test_the_loss_must_belong_to_the_graph():
    _, L = mlp()
    with edf.Graph() as other:
        with pytest.raises(ValueError, match="gradcheck: the loss CrossEntropyLoss is not a node of the graph"):
            edf.gradcheck(L, graph=other)


@pytest.mark.parametrize("backend, check_input, node, planned", [
    ("cython", False, edf.Tanh, (True, True)),      # the plan's own gradients and quotients
    ("cython", True, edf.Tanh, (False, True)),      # an Input's gradient: the nodes' backprop
    ("cython", False, Tanh, (False, False)),        # a user's node: no plan at all
    ("numpy", False, edf.Tanh, (False, False)),
])
def test_the_result_says_whether_the_plan_ran(backend, check_input, node, planned):
    edf.set_backend(backend)
    x, L = mlp(node=node)
    result = edf.gradcheck(L, inputs=[x] if check_input else ())
    assert result.passed and result.worst < 1e-6, str(result)
    assert (result.planned_backprop, result.planned_quotients) == planned
    assert result.planned == all(planned)
    ran = {True: "the compiled plan", False: "node by node"}
    assert f"backprop {ran[planned[0]]}, quotients {ran[planned[1]]}" in str(result).splitlines()[0]


def test_a_graph_not_run_yet_is_checked_through_its_plan():
    edf.set_backend("cython")
    _, L = mlp(node=edf.Tanh)
    assert edf.current_graph()._plan is None
    result = edf.gradcheck(L)
    assert result.planned and result.passed, str(result)


def float32_classifier(scale=1.0):
    """The lecture's MLP in cedf's default float32, its first layer's weights scaled by `scale`."""
    edf.DT = np.float32
    np.random.seed(0)
    x, y = edf.Input(), edf.Input()
    x.value, y.value = np.random.default_rng(0).standard_normal((20, 4)), np.arange(20) % 3
    first = edf.AffineParams(4, 4)
    first.A.value *= scale
    h = edf.Sigmoid(edf.Affine(first, x))
    return edf.CrossEntropyLoss(edf.Softmax(edf.Affine(edf.AffineParams(4, 3), h)), y)


def test_a_float32_graph_is_checked_in_float64_and_left_as_it_was():
    L = float32_classifier()
    edf.Forward()
    arrays = [p.value for p in edf.Parameters]
    values = [a.copy() for a in arrays]
    loss = L.value.copy()
    result = edf.gradcheck(L)
    # In float32 the quotients alone are off by about 1e-3 (the "FAILED 0.173").
    assert result.passed and result.worst < 1e-6, str(result)
    assert "checked in float64: the graph's 4 float32 parameters were copied to float64" in str(result)
    for p, a, v in zip(edf.Parameters, arrays, values):
        assert p.value is a and p.value.dtype == np.float32
        np.testing.assert_array_equal(p.value, v)
    np.testing.assert_array_equal(L.value, loss)
    assert L.value.dtype == np.float32


def test_a_failure_at_the_lectures_clip_says_it_is_the_kink():
    L = float32_classifier(scale=40.0)   # sigmoid inputs far beyond +-10
    result = edf.gradcheck(L)
    assert not result.passed
    assert any(note.startswith("Sigmoid: its input is clipped to [-10, 10], as in the lecture, and ")
               and "the lecture's kink, not a wrong backward" in note for note in result.notes), str(result)
    assert "note: Sigmoid: its input is clipped" in str(result)
    # Away from the kink there is no such note.
    assert not any("clipped" in note for note in edf.gradcheck(float32_classifier()).notes)
