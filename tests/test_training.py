"""The lecture's models learn: an MLP on the bundled digits and logistic regression on the slides' blobs."""
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import cedf as edf
from helpers import lecture_training


def digits_mlp(epochs, dtype=np.float32):
    """The lecture's MLP trained on the bundled digits, batches of 32: (p, x, y, the data, the
    parameters before, the batches, each step's mean loss)."""
    digits = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.25, random_state=0, stratify=digits.target)
    np.random.seed(1234)
    edf.DT = dtype
    x, y = edf.Input(), edf.Input()
    params_1 = edf.AffineParams(64, 32)
    params_2 = edf.AffineParams(32, 10)
    h = edf.Sigmoid(edf.Affine(params_1, x))
    p = edf.Softmax(edf.Affine(params_2, h))
    L = edf.CrossEntropyLoss(p, y)
    edf.learning_rate = 0.5
    before = [q.value.copy() for q in edf.Parameters]
    rng = np.random.default_rng(0)
    batches, losses = [], []
    for epoch in range(epochs):
        order = rng.permutation(len(X_train))
        for start in range(0, len(order), 32):
            batch = order[start:start + 32]
            batches.append(batch)
            x.value, y.value = X_train[batch], y_train[batch]
            edf.Forward()
            edf.Backward(L)
            edf.UpdateParameters()
            losses.append(float(np.mean(L.value, dtype=np.float64)))
    return p, x, y, (X_train, y_train, X_test, y_test), before, batches, losses


def test_mlp_learns_the_digits():
    p, x, y, (_, _, X_test, y_test), _, _, _ = digits_mlp(epochs=30)
    x.value, y.value = X_test, y_test
    edf.Forward()
    accuracy = np.mean(np.argmax(p.value, axis=1) == y_test)
    assert accuracy > 0.90, accuracy


def test_mlp_on_the_digits_trains_as_the_lectures_edf_step_for_step():
    """Every parameter after 3 epochs (126 steps) is the slides' EDF's: an accuracy bar alone would pass
    with a bias gradient taken from one row or a parameter never updated."""
    _, _, _, (X_train, y_train, _, _), before, batches, losses = digits_mlp(epochs=3, dtype=np.float64)
    lecture_losses, lecture_after, _ = lecture_training(X_train, y_train, before, lr=0.5, dtype=np.float64,
                                                        batches=batches)
    np.testing.assert_allclose(losses, lecture_losses, rtol=1e-10)
    for q, expected in zip(edf.Parameters, lecture_after):
        np.testing.assert_allclose(q.value, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


def blobs(n, rng):
    """The slides' 2-D data: Gaussian blobs with identity covariance around (1, 1) (label 1) and (-1, -1) (label 0)."""
    labels = rng.integers(0, 2, n)
    X = rng.standard_normal((n, 2)) + np.where(labels[:, None] == 1, 1.0, -1.0)
    return X, labels


def test_logistic_regression_separates_the_blobs():
    rng = np.random.default_rng(0)
    X_train, y_train = blobs(1000, rng)
    X_test, y_test = blobs(5000, rng)
    np.random.seed(0)
    x, y = edf.Input(), edf.Input()
    p = edf.Sigmoid(edf.Affine(edf.AffineParams(2, 1), x))
    L = edf.BCELoss(p, y)
    edf.learning_rate = 0.5
    x.value, y.value = X_train, y_train
    for _ in range(200):
        edf.Forward()
        edf.Backward(L)
        edf.UpdateParameters()
    x.value, y.value = X_test, y_test
    edf.Forward()
    accuracy = np.mean((p.value[:, 0] > 0.5) == y_test)
    # The Bayes rate of these blobs is Phi(sqrt(2)) = 92.1 %.
    assert accuracy > 0.90, accuracy


def test_logistic_regression_on_the_blobs_is_the_lectures_edf_step_for_step():
    rng = np.random.default_rng(0)
    X, labels = blobs(1000, rng)
    np.random.seed(0)
    edf.DT = np.float64
    x, y = edf.Input(), edf.Input()
    L = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(2, 1), x)), y)
    edf.learning_rate = 0.5
    before = [q.value.copy() for q in edf.Parameters]
    x.value, y.value = X, labels
    losses = []
    for _ in range(200):
        edf.Forward()
        edf.Backward(L)
        edf.UpdateParameters()
        losses.append(float(np.mean(L.value)))
    lecture_losses, lecture_after, _ = lecture_training(X, labels, before, steps=200, lr=0.5, dtype=np.float64,
                                                        head="bce")
    np.testing.assert_allclose(losses, lecture_losses, rtol=1e-10)
    for q, expected in zip(edf.Parameters, lecture_after):
        np.testing.assert_allclose(q.value, expected, rtol=1e-10, atol=1e-12)
