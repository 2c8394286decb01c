"""Bad input raises a clear exception naming the node; awkward but valid input gives the clean input's answer."""
import numpy as np
import pytest

import cedf as edf

BACKENDS = pytest.mark.parametrize("backend", ["cython", "numpy"])


@pytest.fixture(autouse=True, params=["cython", "numpy"])
def backend(request):
    edf.set_backend(request.param)
    return request.param


def classifier(n_in=5, n_classes=3, loss="ce"):
    edf.clear_compgraph()
    np.random.seed(0)
    x, y = edf.Input(), edf.Input()
    params = edf.AffineParams(n_in, n_classes if loss == "ce" else 1)
    if loss == "ce":
        p = edf.Softmax(edf.Affine(params, x))
        L = edf.CrossEntropyLoss(p, y)
    else:
        p = edf.Sigmoid(edf.Affine(params, x))
        L = edf.BCELoss(p, y)
    return x, y, params, L


def step(L):
    edf.Forward()
    edf.Backward(L)
    return [np.array(L.value)] + [p.grad.copy() for p in edf.Parameters]


def test_feature_mismatch_is_reported_at_forward():
    x, y, _, L = classifier(n_in=5)
    x.value, y.value = np.ones((4, 6)), np.zeros(4, int)
    with pytest.raises(ValueError, match="Affine: x has 6 features, A expects 5"):
        edf.Forward()


def test_an_input_never_set_is_named():
    x, y, _, L = classifier()
    y.value = np.zeros(4, int)
    with pytest.raises(ValueError, match=r"Affine: its input x \(Input\) has no value"):
        edf.Forward()
    x.value = np.ones((4, 5))
    y.value = None
    with pytest.raises(ValueError, match="CrossEntropyLoss: its input y .* has no value"):
        edf.Forward()


@pytest.mark.parametrize("labels, message", [
    ([0, 1, 3, 0], r"label 3 is outside \[0, 3\)"),
    ([0, -1, 2, 0], r"label -1 is outside \[0, 3\)"),
    ([0, 1, 2**62, 0], r"label 4611686018427387904 is outside"),
    (np.array([0, 1, 2**64 - 1, 0], np.uint64), r"label 18446744073709551615 is outside \[0, 3\)"),
    ([0.0, 1.5, 2.0, 0.0], r"y must hold whole class indices, got 1.5"),
    ([0.0, np.nan, 2.0, 0.0], r"y must hold whole class indices, got nan"),
    ([0.0, 1e300, 2.0, 0.0], r"label 1e\+300 is outside"),
    (["a", "b", "c", "d"], r"y must hold integer class indices, got dtype <U1"),
])
def test_bad_class_labels_raise(labels, message):
    x, y, _, L = classifier()
    x.value, y.value = np.ones((4, 5)), labels
    with pytest.raises((ValueError, TypeError), match="CrossEntropyLoss: " + message):
        edf.Forward()


def test_batch_mismatch_between_x_and_y_raises():
    x, y, _, L = classifier()
    x.value, y.value = np.ones((4, 5)), np.zeros(3, int)
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: y has shape \(3,\), expected \(4,\)"):
        edf.Forward()
    x, y, _, L = classifier(loss="bce")
    x.value, y.value = np.ones((4, 5)), np.zeros(5)
    with pytest.raises(ValueError, match=r"BCELoss: y has shape \(5,\), expected \(4,\)"):
        edf.Forward()


@pytest.mark.parametrize("labels", [[0, 1, 2, 1], [0, 1, 0.5, 1], [0, 1, np.nan, 1], [0, 1, -1, 1]])
def test_bce_labels_must_be_zero_or_one(labels):
    x, y, _, L = classifier(loss="bce")
    x.value, y.value = np.ones((4, 5)), labels
    with pytest.raises(ValueError, match="BCELoss: y must hold labels 0 or 1"):
        edf.Forward()


def test_bce_needs_one_probability_per_example():
    x, y = edf.Input(), edf.Input()
    x.value, y.value = np.full((4, 2), 0.5), np.zeros(4)
    edf.BCELoss(x, y)
    with pytest.raises(ValueError, match=r"BCELoss: p has shape \(4, 2\), expected \(B, 1\) or \(B,\)"):
        edf.Forward()


def test_backward_before_forward_raises():
    x, y, _, L = classifier()
    x.value, y.value = np.ones((4, 5)), np.zeros(4, int)
    with pytest.raises(RuntimeError, match="Affine: it has no value yet; call Forward"):
        edf.Backward(L)


def test_backward_of_a_node_outside_the_graph_raises():
    x, y, _, L = classifier()
    edf.clear_compgraph()
    with pytest.raises(ValueError, match="Backward: the loss CrossEntropyLoss is not a node of this graph"):
        edf.Backward(L)


def test_backward_of_a_value_says_it_takes_the_loss_node():
    x, y, _, L = classifier()
    x.value, y.value = np.ones((4, 5)), np.zeros(4, int)
    edf.Forward()
    with pytest.raises(TypeError, match=r"Backward takes the loss node, not a value: call Backward\(L\) .* got a "
                                        r"float32"):
        edf.Backward(L.value.mean())


@pytest.mark.parametrize("rate", ["0.5", None, [0.5], True, np.float32(np.inf)])
def test_a_learning_rate_that_is_no_number_is_named(rate, monkeypatch):
    x, y, params, L = classifier()
    x.value, y.value = np.ones((4, 5)), np.zeros(4, int)
    edf.Forward()
    edf.Backward(L)
    before = params.A.value.copy()
    monkeypatch.setattr(edf, "learning_rate", rate)
    with pytest.raises(TypeError, match=r"edf.learning_rate must be a finite number, got .*: set e.g. "
                                        r"edf.learning_rate = 0.5"):
        edf.UpdateParameters()
    np.testing.assert_array_equal(params.A.value, before)
    monkeypatch.setattr(edf, "learning_rate", 2)   # an int is a number: the step it gives
    edf.UpdateParameters()
    np.testing.assert_allclose(params.A.value, before - 2 * params.A.grad, rtol=1e-6)


def test_a_node_of_your_own_missing_from_the_graph_is_named():
    class MyTanh(edf.CompNode):
        def __init__(self, x):   # forgot edf.CompNodes.append(self)
            self.x = x

        def forward(self):
            self.value = np.tanh(self.x.value)

    edf.clear_compgraph()
    x, y = edf.Input(), edf.Input()
    x.value, y.value = np.ones((4, 5)), np.zeros(4, int)
    L = edf.CrossEntropyLoss(edf.Softmax(edf.Affine(edf.AffineParams(5, 3), MyTanh(x))), y)
    with pytest.raises(ValueError, match=r"Affine: its input x \(MyTanh\) is not in the graph, so Forward\(\) "
                                         r"never computes it: .* edf.CompNodes.append\(self\)"):
        edf.Forward()
    del L


def test_a_parameter_replaced_by_the_wrong_shape_raises():
    x, y, params, L = classifier()
    x.value, y.value = np.ones((4, 5)), np.zeros(4, int)
    params.A.value = np.ones((6, 3), np.float32)
    with pytest.raises(ValueError, match="Affine: x has 5 features, A expects 6"):
        edf.Forward()
    params.A.value = np.ones((5, 3), np.float32)
    params.b.value = np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"Affine: b has shape \(4,\), A has 3 outputs"):
        edf.Forward()
    params.b.value = np.ones((1, 3), np.float32)
    with pytest.raises(ValueError, match=r"Affine: b must be 1-D, got shape \(1, 3\)"):
        edf.Forward()


@pytest.mark.parametrize("value, error, message", [
    (np.ones(5), ValueError, r"Affine: x must be 2-D, got shape \(5,\); a batch is \(examples, features\): "
                             r"X.reshape\(-1, 1\) for one feature per example, X\[None\] for one example"),
    (np.ones((2, 2, 5)), ValueError, r"Affine: x must be 2-D, got shape \(2, 2, 5\)"),
    (np.array([["a"] * 5] * 4), TypeError, "Affine: x must hold real numbers, got dtype <U1"),
    (np.ones((4, 5), dtype=object), TypeError, "Affine: x must hold real numbers, got dtype object"),
    (np.ones((4, 5), dtype=complex), TypeError, "Affine: x must hold real numbers, got dtype complex128"),
])
def test_unusable_data_raises(value, error, message):
    x, y, _, L = classifier()
    x.value, y.value = value, np.zeros(4, int)
    with pytest.raises(error, match=message):
        edf.Forward()


def test_nodes_need_nodes_as_inputs():
    with pytest.raises(TypeError, match="Sigmoid: x must be a cedf node .* got ndarray"):
        edf.Sigmoid(np.ones(3))
    with pytest.raises(TypeError, match="Affine: params must be an AffineParams"):
        edf.Affine(np.ones((3, 2)), edf.Input())
    with pytest.raises(TypeError, match="CrossEntropyLoss: y must be a cedf node"):
        edf.CrossEntropyLoss(edf.Input(), [0, 1])


@pytest.mark.parametrize("n_in, n_out", [(0, 3), (3, 0), (-1, 2), (2.5, 2), (True, 2)])
def test_affine_params_need_positive_integer_sizes(n_in, n_out):
    with pytest.raises(ValueError, match="AffineParams: n(Inputs|Outputs) must be a positive integer"):
        edf.AffineParams(n_in, n_out)


def test_softmax_needs_classes():
    x = edf.Input()
    x.value = np.ones((4, 0))
    edf.Softmax(x)
    with pytest.raises(ValueError, match=r"Softmax: x must have a last axis of at least one class, got shape \(4, 0\)"):
        edf.Forward()


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_awkward_but_valid_input_gives_the_clean_answer(loss):
    rng = np.random.default_rng(3)
    clean_x = rng.standard_normal((6, 5)).astype(np.float32)
    clean_y = rng.integers(0, 3 if loss == "ce" else 2, 6)
    x, y, _, L = classifier(loss=loss)
    x.value, y.value = clean_x, clean_y
    step(L)
    expected = step(L)   # the second step runs the compiled plan, if the backend has one
    wide = np.zeros((6, 10), np.float64)
    wide[:, ::2] = clean_x
    variants = [
        (np.asfortranarray(clean_x), clean_y),                 # Fortran order
        (wide[:, ::2], clean_y),                               # a strided view, float64
        (clean_x.astype(np.float64), clean_y.astype(np.int8)),  # other dtypes
        (clean_x.tolist(), clean_y.tolist()),                  # lists
        (clean_x, clean_y.astype(np.float64)),                 # integral float labels
        (clean_x, clean_y.reshape(6, 1)),                      # a column of labels
        (clean_x.astype(">f4"), clean_y.astype(">i8")),        # big-endian
    ]
    for xv, yv in variants:
        x.value, y.value = xv, yv
        for got, want in zip(step(L), expected):
            np.testing.assert_array_equal(got, want)


def test_integer_and_bool_data_are_converted():
    x, y, _, L = classifier()
    x.value, y.value = np.arange(20).reshape(4, 5) % 2, [0, 1, 2, 0]
    step(L)
    expected = step(L)
    x.value = (np.arange(20).reshape(4, 5) % 2).astype(bool)
    for got, want in zip(step(L), expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_empty_batch_gives_empty_results(loss):
    x, y, _, L = classifier(loss=loss)
    x.value, y.value = np.ones((0, 5)), np.zeros(0, int)
    out = step(L)
    assert out[0].shape == (0,)
    for g in out[1:]:
        assert not g.any()


@pytest.mark.parametrize("shape", [(2**62, 2**62, -1), (2**40, 2**40), (-1, 2**63)])
def test_a_reshape_to_sizes_whose_product_overflows_int64_is_refused_clearly(shape):
    # The product was taken in int64, wrapped to 0, and divided by: a ZeroDivisionError.
    x = edf.Input()
    x.value = np.zeros((2, 12))
    edf.Reshape(x, shape)
    with pytest.raises(ValueError, match=r"Reshape: each example of x has shape \(12,\) \(12 values\), which cannot"):
        edf.Forward()


def test_a_gradient_of_another_shape_added_to_a_parameter_is_refused_by_name():
    # A node of the user's whose backward adds a (1,) gradient to a (3,) parameter: `grad += delta`
    # broadcast it into every entry, a silently wrong gradient.
    class Shift(edf.CompNode):
        def __init__(self, x, b):
            edf.CompNodes.append(self)
            self.x, self.b = x, b

        def forward(self):
            self.value = self.x.value + self.b.value

        def backward(self):
            self.b.addgrad(np.sum(self.grad).reshape(1))   # the bug: a sum over every entry

    edf.DT = np.float64
    x = edf.Input()
    x.value = np.ones((4, 3))
    b = edf.Parameter(np.zeros(3), name="shift")
    L = edf.Sigmoid(Shift(x, b))
    edf.Forward()
    with pytest.raises(ValueError, match=r"Parameter 'shift': a backward added a gradient of shape \(1,\) to "
                                         r"\.grad, which has the shape of \.value, \(3,\)"):
        edf.Backward(L)
