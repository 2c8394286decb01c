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
