"""The lecture's models learn: an MLP on the bundled digits and logistic regression on the slides' blobs."""
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import cedf as edf


def test_mlp_learns_the_digits():
    digits = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.25, random_state=0, stratify=digits.target)
    np.random.seed(1234)
    x, y = edf.Input(), edf.Input()
    params_1 = edf.AffineParams(64, 32)
    params_2 = edf.AffineParams(32, 10)
    h = edf.Sigmoid(edf.Affine(params_1, x))
    p = edf.Softmax(edf.Affine(params_2, h))
    L = edf.CrossEntropyLoss(p, y)
    edf.learning_rate = 0.5
    rng = np.random.default_rng(0)
    for epoch in range(30):
        order = rng.permutation(len(X_train))
        for start in range(0, len(order), 32):
            batch = order[start:start + 32]
            x.value, y.value = X_train[batch], y_train[batch]
            edf.Forward()
            edf.Backward(L)
            edf.UpdateParameters()
    x.value, y.value = X_test, y_test
    edf.Forward()
    accuracy = np.mean(np.argmax(p.value, axis=1) == y_test)
    assert accuracy > 0.90, accuracy


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
