"""cedf keeps the lecture's API and its numbers: the slides' code runs unchanged and agrees with the slides' EDF."""
import numpy as np
import pytest

import cedf as edf
from cedf import lecture as lecture_edf
from helpers import Tanh


def lecture_mlp(module, X, labels, n_hidden, n_labels, steps, user_node=False):
    """The lecture's example, word for word, against `module` (cedf or the slides' EDF); returns the losses."""
    np.random.seed(1234)
    module.clear_compgraph()
    x = module.Input()
    y = module.Input()
    x.value = X
    y.value = labels
    params_1 = module.AffineParams(X.shape[1], n_hidden)
    params_2 = module.AffineParams(n_hidden, n_labels)
    h = module.Sigmoid(module.Affine(params_1, x))
    if user_node:
        h = Tanh(h) if module is edf else LectureTanh(h)
    p = module.Softmax(module.Affine(params_2, h))
    L = module.CrossEntropyLoss(p, y)
    losses = []
    for i in range(steps):
        module.Forward()
        module.Backward(L)
        module.UpdateParameters()
        losses.append(float(np.mean(L.value)))
    return losses, [q.value.copy() for q in module.Parameters], [q.grad.copy() for q in module.Parameters]


class LectureTanh(lecture_edf.CompNode):
    def __init__(self, x):
        lecture_edf.CompNodes.append(self)
        self.x = x

    def forward(self):
        self.value = np.tanh(self.x.value)

    def backward(self):
        self.x.addgrad(self.grad * (1 - self.value ** 2))


@pytest.fixture
def lecture_settings():
    saved = lecture_edf.DT, lecture_edf.learning_rate
    yield
    lecture_edf.DT, lecture_edf.learning_rate = saved


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 2e-4)])
@pytest.mark.parametrize("user_node", [False, True])
def test_mlp_training_agrees_with_the_lecture(backend, dtype, rtol, user_node, lecture_settings):
    edf.set_backend(backend)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 12))
    labels = rng.integers(0, 5, 64)
    results = []
    for module in (lecture_edf, edf):
        module.DT = dtype
        module.learning_rate = 0.5
        results.append(lecture_mlp(module, X, labels, 16, 5, steps=50, user_node=user_node))
    (lec_loss, lec_params, lec_grads), (our_loss, our_params, our_grads) = results
    np.testing.assert_allclose(our_loss, lec_loss, rtol=rtol)
    for ours, theirs in zip(our_params + our_grads, lec_params + lec_grads):
        assert ours.dtype == dtype
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * np.abs(theirs).max())
    assert our_loss[-1] < our_loss[0]


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_logistic_regression_agrees_with_the_lecture(backend, lecture_settings):
    edf.set_backend(backend)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 2))
    labels = (X.sum(axis=1) + rng.standard_normal(200) > 0).astype(float)
    runs = []
    for module in (lecture_edf, edf):
        module.DT = np.float64
        module.learning_rate = 1.0
        np.random.seed(7)
        module.clear_compgraph()
        x, y = module.Input(), module.Input()
        x.value, y.value = X, labels
        L = module.BCELoss(module.Sigmoid(module.Affine(module.AffineParams(2, 1), x)), y)
        for _ in range(30):
            module.Forward()
            module.Backward(L)
            module.UpdateParameters()
        runs.append([p.value.copy() for p in module.Parameters] + [L.value.copy()])
    for ours, theirs in zip(runs[1], runs[0]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10)


def test_package_settings_have_the_lecture_defaults():
    assert edf.DT is np.float32
    assert edf.learning_rate == 0.001
    assert edf.CompNodes == [] and edf.Parameters == []


def test_learning_rate_is_read_at_update_time():
    edf.DT = np.float64
    p = edf.Parameter(np.ones(3))
    p.grad = np.array([1.0, 2.0, 3.0])
    edf.learning_rate = 0.5
    edf.UpdateParameters()
    np.testing.assert_array_equal(p.value, [0.5, 0.0, -0.5])


def test_dt_sets_the_dtype_of_new_parameters_and_buffers():
    edf.DT = np.float64
    params = edf.AffineParams(3, 2)
    assert params.A.value.dtype == np.float64 and params.b.value.dtype == np.float64
    x = edf.Input()
    x.value = np.arange(6).reshape(2, 3)  # integers become DT
    s = edf.Sigmoid(x)
    edf.Forward()
    assert s.value.dtype == np.float64
    edf.DT = np.float32
    assert edf.Parameter([1, 2]).value.dtype == np.float32


def test_graph_lists_hold_nodes_in_creation_order_and_clear_starts_anew():
    x = edf.Input()
    params = edf.AffineParams(4, 3)
    a = edf.Affine(params, x)
    s = edf.Sigmoid(a)
    p = edf.Softmax(s)
    assert edf.CompNodes == [a, s, p]
    assert edf.Parameters == [params.A, params.b]
    edf.clear_compgraph()
    assert edf.CompNodes == [] and edf.Parameters == []


def test_affine_params_are_drawn_like_the_lecture():
    np.random.seed(1234)
    params = edf.AffineParams(50, 20)
    np.random.seed(1234)
    bound = np.sqrt(3 / 50)
    expected = np.random.uniform(-bound, bound, (50, 20)).astype(np.float32)
    np.testing.assert_array_equal(params.A.value, expected)
    np.testing.assert_array_equal(params.b.value, np.zeros(20, np.float32))
    assert np.abs(params.A.value).max() <= bound


def test_parameter_addgrad_sums_over_the_batch_axis():
    p = edf.Parameter(np.zeros((2, 3)))
    p.grad = np.zeros((2, 3), np.float32)
    p.addgrad(np.ones((5, 2, 3)))
    np.testing.assert_array_equal(p.grad, np.full((2, 3), 5))
    p.addgrad(np.ones((2, 3)))
    np.testing.assert_array_equal(p.grad, np.full((2, 3), 6))


def test_input_ignores_gradients():
    x = edf.Input()
    x.addgrad(np.ones(3))
    assert not hasattr(x, "grad")


@pytest.mark.parametrize("batch", [1, 7, 300])
def test_backward_seeds_the_batch_mean(batch):
    x, y = edf.Input(), edf.Input()
    x.value = np.random.default_rng(0).standard_normal((batch, 3))
    y.value = np.zeros(batch, int)
    L = edf.CrossEntropyLoss(edf.Softmax(edf.Affine(edf.AffineParams(3, 2), x)), y)
    edf.Forward()
    edf.Backward(L)
    np.testing.assert_allclose(L.grad, np.full(batch, 1 / batch, np.float32))
    # Every intermediate node's gradient is there for a user to read.
    assert all(c.grad.shape == c.value.shape for c in edf.CompNodes)


def test_gradients_are_zeroed_by_each_backward():
    x, y = edf.Input(), edf.Input()
    x.value = np.ones((4, 3))
    y.value = np.array([0, 1, 0, 1])
    L = edf.CrossEntropyLoss(edf.Softmax(edf.Affine(edf.AffineParams(3, 2), x)), y)
    edf.Forward()
    edf.Backward(L)
    first = [p.grad.copy() for p in edf.Parameters]
    edf.Backward(L)
    for before, p in zip(first, edf.Parameters):
        np.testing.assert_array_equal(p.grad, before)


def test_a_node_feeding_two_consumers_sums_their_gradients():
    edf.DT = np.float64
    x = edf.Input()
    x.value = np.random.default_rng(2).standard_normal((5, 3))
    s = edf.Sigmoid(x)
    a = edf.Sigmoid(s)
    b = edf.Softmax(s)
    edf.Forward()
    for node in (s, a, b):
        node.grad = np.zeros_like(node.value)
    a.grad[...] = 1.0
    b.grad[...] = np.arange(15.0).reshape(5, 3)
    b.backward()
    a.backward()
    expected = a.value * (1 - a.value) + b.value * (b.grad - np.sum(b.value * b.grad, axis=1, keepdims=True))
    np.testing.assert_allclose(s.grad, expected, rtol=1e-12)
