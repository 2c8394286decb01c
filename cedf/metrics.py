"""Classification metrics that take a graph's output as it comes.

`accuracy` and `confusion_matrix` accept predictions as class indices, as
class probabilities (n, C) such as a ``Softmax`` node's value (the argmax is
the prediction), or as probabilities of class 1, (n,) or (n, 1), such as a
``Sigmoid`` node's value before ``BCELoss`` (1 where p >= 0.5). Labels are
class indices, (n,) or (n, 1), integers or integral floats, as the losses take
them. Plain NumPy, no scikit-learn needed.
"""
import numpy as np

__all__ = ["accuracy", "confusion_matrix"]


def _as_column(name, what, a):
    """`a` as a 1-D array: (n,) as is, (n, 1) raveled."""
    if a.ndim == 2 and a.shape[1] == 1:
        return a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name}: {what} must have shape (n,) or (n, 1), got {a.shape}")
    return a


def _indices(name, what, a):
    """1-D class indices from integers, booleans or integral floats, checked to be >= 0."""
    if a.dtype == np.bool_:
        return a.astype(np.int64)
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{name}: {what} must hold numbers, got dtype {a.dtype}")
    if a.dtype.kind == "f" and (not np.all(np.isfinite(a)) or np.any(a != np.round(a))):
        raise ValueError(f"{name}: {what} must be integral class indices; "
                         f"it holds non-integral or non-finite values")
    # Checked before the cast, which would wrap a uint64 or a float beyond int64 round to negative
    # (NumPy compares either with the Python int 2**63 exactly).
    top = a.max() if a.size and a.dtype.kind in "uf" else 0
    if top >= 2 ** 63:
        raise ValueError(f"{name}: {what} holds the class index {top}, too large to be one "
                         f"(labels are 0, 1, ..., classes - 1)")
    out = a.astype(np.int64)
    if out.size and out.min() < 0:
        raise ValueError(f"{name}: {what} holds the negative class index {out.min()}")
    return out


def _labels(name, y_true):
    return _indices(name, "y_true", _as_column(name, "y_true", np.asarray(y_true)))


def class_indices(name, y_true):
    """Labels as 1-D int64 class indices, as `accuracy` reads them; ValueError naming `name` if they are not."""
    return _labels(name, y_true)


def _predictions(name, y_pred):
    """Predicted class indices, and the number of classes the form of y_pred implies (0 if none)."""
    a = np.asarray(y_pred)
    if a.ndim == 2 and a.shape[1] >= 2:
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{name}: y_pred must hold numbers, got dtype {a.dtype}")
        if a.dtype.kind == "f" and np.isnan(a).any():
            raise ValueError(f"{name}: y_pred holds NaN probabilities")
        return np.argmax(a, axis=1).astype(np.int64), a.shape[1]
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim != 1:
        raise ValueError(f"{name}: y_pred must have shape (n,), (n, 1) or (n, C) with C >= 2, got {a.shape}")
    if a.dtype.kind == "f":
        if np.isnan(a).any():
            raise ValueError(f"{name}: y_pred holds NaN")
        if np.all((a >= 0) & (a <= 1)):
            # Probabilities of class 1. Integral 0.0/1.0 indices land on the same side, so
            # reading them as probabilities is never wrong.
            return (a >= 0.5).astype(np.int64), 2
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise ValueError(f"{name}: y_pred must be probabilities of class 1 in [0, 1] or integral "
                             f"class indices; it holds values that are neither")
    return _indices(name, "y_pred", a), 0


def _pair(name, y_true, y_pred):
    t = _labels(name, y_true)
    p, implied = _predictions(name, y_pred)
    if len(t) != len(p):
        raise ValueError(f"{name}: y_true has {len(t)} examples but y_pred has {len(p)}")
    return t, p, implied


def accuracy(y_true, y_pred):
    """The fraction of examples whose predicted class equals the label, as a float.

    `y_pred` may be class indices, probabilities (n, C) (argmax), or binary
    probabilities of class 1, (n,) or (n, 1) (threshold 0.5); see the module
    docstring. Raises ValueError on mismatched lengths, bad shapes or no examples.
    """
    t, p, _ = _pair("accuracy", y_true, y_pred)
    if len(t) == 0:
        raise ValueError("accuracy: no examples; the accuracy of nothing is undefined")
    return float(np.mean(t == p))


def confusion_matrix(y_true, y_pred, n_classes=None):
    """Counts ``C[i, j]`` of examples with label i predicted as j: rows true, columns predicted.

    Returns an int64 (n_classes, n_classes) array; its diagonal holds the
    correct predictions and it sums to the number of examples. `y_pred` takes
    the same forms as in `accuracy`. Without `n_classes` the size is the
    largest class index seen plus one, and at least the number of classes
    that probability predictions imply (C columns, or 2 for binary), so an
    absent class still gets its row. With `n_classes`, a label or prediction
    outside ``[0, n_classes)`` raises ValueError.
    """
    t, p, implied = _pair("confusion_matrix", y_true, y_pred)
    seen = int(max(t.max(initial=-1), p.max(initial=-1))) + 1
    if n_classes is None:
        k = max(seen, implied)
    else:
        if not isinstance(n_classes, (int, np.integer)) or isinstance(n_classes, (bool, np.bool_)) \
                or n_classes < 1:
            raise ValueError(f"confusion_matrix: n_classes must be a positive integer, got {n_classes!r}")
        k = int(n_classes)
        for what, a in (("y_true", t), ("y_pred", p)):
            if a.size and a.max() >= k:
                raise ValueError(f"confusion_matrix: {what} holds class {a.max()}, "
                                 f"outside [0, {k}) for n_classes={k}")
    # One bincount over the flattened (true, predicted) cell index counts every cell at once.
    counts = np.bincount(t * k + p, minlength=k * k)
    return counts.reshape(k, k).astype(np.int64, copy=False)
