"""cedf.metrics: accuracy and the confusion matrix, by hand and against scikit-learn."""
import numpy as np
import pytest

from cedf import metrics

# ---------------------------------------------------------------- small cases by hand


def test_accuracy_of_class_indices():
    assert metrics.accuracy([0, 1, 2, 2], [0, 2, 2, 2]) == 0.75
    assert metrics.accuracy(np.array([[3], [1]]), np.array([3, 0])) == 0.5  # (n, 1) labels
    assert metrics.accuracy([1.0, 2.0], [1, 2]) == 1.0  # integral float labels, as the losses take
    assert isinstance(metrics.accuracy([0], [0]), float)


def test_accuracy_of_class_probabilities_takes_the_argmax():
    p = np.array([[0.7, 0.2, 0.1],
                  [0.1, 0.3, 0.6],
                  [0.2, 0.5, 0.3],
                  [0.4, 0.4, 0.2]])  # a tie goes to the first class, as np.argmax does
    assert metrics.accuracy([0, 2, 1, 0], p) == 1.0
    assert metrics.accuracy([0, 2, 0, 1], p) == 0.5
    assert metrics.accuracy([1, 0], np.array([[-3.0, 2.0], [5.0, -1.0]])) == 1.0  # logits work too


@pytest.mark.parametrize("shape", [(5,), (5, 1)])
def test_accuracy_of_binary_probabilities_thresholds_at_one_half(shape):
    p = np.array([0.1, 0.5, 0.49, 0.99, 0.0]).reshape(shape)
    assert metrics.accuracy([0, 1, 0, 1, 0], p) == 1.0
    assert metrics.accuracy([1, 1, 1, 1, 1], p) == 0.4


def test_predictions_as_integral_floats_or_booleans():
    assert metrics.accuracy([0, 1, 1], np.array([0.0, 1.0, 0.0])) == 2 / 3
    assert metrics.accuracy([0, 3, 2], np.array([0.0, 3.0, 1.0])) == 2 / 3  # beyond [0, 1]: indices
    assert metrics.accuracy([0, 1, 1], np.array([False, True, True])) == 1.0


def test_confusion_matrix_by_hand():
    cm = metrics.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 0, 2, 2])
    np.testing.assert_array_equal(cm, [[1, 1, 0],
                                       [0, 1, 0],
                                       [1, 0, 2]])
    assert cm.dtype == np.int64
    # A larger n_classes keeps rows and columns for classes that never occur.
    np.testing.assert_array_equal(metrics.confusion_matrix([1, 1], [1, 0], n_classes=3),
                                  [[0, 0, 0], [1, 1, 0], [0, 0, 0]])


def test_confusion_matrix_size_follows_the_form_of_the_predictions():
    # Binary probabilities: always 2 x 2, even when only class 0 occurs.
    np.testing.assert_array_equal(metrics.confusion_matrix([0, 0], [0.2, 0.3]), [[2, 0], [0, 0]])
    # Probabilities over 4 classes: 4 x 4, though only classes 0 and 1 occur.
    p = np.array([[0.9, 0.1, 0.0, 0.0], [0.2, 0.8, 0.0, 0.0]])
    cm = metrics.confusion_matrix([0, 0], p)
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert metrics.confusion_matrix([], [], n_classes=3).tolist() == [[0] * 3] * 3


# ---------------------------------------------------------------- against scikit-learn


@pytest.mark.parametrize("seed", range(12))
def test_against_scikit_learn(seed):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 300)), int(rng.integers(2, 12))
    y_true = rng.integers(0, k, n)
    # Predictions right about half the time, so the off-diagonal cells are populated too.
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, k, n))
    expected = sk.confusion_matrix(y_true, y_pred, labels=np.arange(k))
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred, n_classes=k), expected)
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(sk.accuracy_score(y_true, y_pred), abs=1e-15)

    probs = rng.random((n, k))
    probs /= probs.sum(axis=1, keepdims=True)
    argmax = probs.argmax(axis=1)
    assert metrics.accuracy(y_true, probs) == pytest.approx(sk.accuracy_score(y_true, argmax), abs=1e-15)
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, probs),
                                  sk.confusion_matrix(y_true, argmax, labels=np.arange(k)))

    labels01, p1 = rng.integers(0, 2, n), rng.random((n, 1))
    hard = (p1[:, 0] >= 0.5).astype(int)
    assert metrics.accuracy(labels01, p1) == pytest.approx(sk.accuracy_score(labels01, hard), abs=1e-15)
    np.testing.assert_array_equal(metrics.confusion_matrix(labels01, p1),
                                  sk.confusion_matrix(labels01, hard, labels=[0, 1]))


def test_confusion_matrix_properties():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 5, 1000), rng.integers(0, 5, 1000)
    cm = metrics.confusion_matrix(y_true, y_pred)
    assert cm.shape == (5, 5) and cm.sum() == 1000
    np.testing.assert_array_equal(cm.sum(axis=1), np.bincount(y_true, minlength=5))
    np.testing.assert_array_equal(cm.sum(axis=0), np.bincount(y_pred, minlength=5))
    assert np.trace(cm) / 1000 == metrics.accuracy(y_true, y_pred)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", [metrics.accuracy, metrics.confusion_matrix])
@pytest.mark.parametrize("y_true, y_pred, match", [
    ([0, 1, 1], [0, 1], "y_true has 3 examples but y_pred has 2"),
    ([0, 1], np.zeros((3, 4)), "y_true has 2 examples but y_pred has 3"),
    (np.zeros((2, 2)), [0, 1], r"y_true must have shape \(n,\) or \(n, 1\), got \(2, 2\)"),
    ([0, 1], np.zeros((2, 2, 2)), r"y_pred must have shape .* got \(2, 2, 2\)"),
    ([0, 1], np.zeros((2, 0)), r"y_pred must have shape"),
    ([0, 1.5], [0, 1], "y_true must be integral class indices"),
    ([0, -1], [0, 1], "y_true holds the negative class index -1"),
    ([0, 1], [0, -2], "y_pred holds the negative class index -2"),
    ([0, 1], [0.5, np.nan], "y_pred holds NaN"),
    ([0, 1], np.array([[0.5, np.nan], [0.2, 0.8]]), "y_pred holds NaN"),
    ([0, 1], [0.5, 1.5], "y_pred must be probabilities of class 1 in \\[0, 1\\] or integral class indices"),
    (["a", "b"], [0, 1], "y_true must hold numbers"),
])
def test_bad_input_is_named(fn, y_true, y_pred, match):
    with pytest.raises(ValueError, match=f"^{fn.__name__}: {match}"):
        fn(y_true, y_pred)


def test_accuracy_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="^accuracy: no examples"):
        metrics.accuracy(np.array([], int), np.array([], int))


@pytest.mark.parametrize("n_classes", [0, -1, 2.0, True])
def test_confusion_matrix_rejects_a_bad_n_classes(n_classes):
    with pytest.raises(ValueError, match="n_classes must be a positive integer"):
        metrics.confusion_matrix([0, 1], [1, 0], n_classes=n_classes)


def test_confusion_matrix_rejects_classes_beyond_n_classes():
    with pytest.raises(ValueError, match=r"y_true holds class 3, outside \[0, 3\)"):
        metrics.confusion_matrix([0, 3], [0, 1], n_classes=3)
    with pytest.raises(ValueError, match=r"y_pred holds class 2, outside \[0, 2\)"):
        metrics.confusion_matrix([0, 1], np.zeros((2, 3)) + [0, 0, 1], n_classes=2)
