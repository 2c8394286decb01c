"""The lecture's figures, from your own models (matplotlib: ``pip install 'cedf[plot]'``).

- `logistic_regression_1d`: the slides' 1-D sequence: the data, the fitted
  sigmoid(w x + b), the probability that the model gives each sample's own
  class, and its -log, the sample's loss.
- `decision_boundary`: a 2-D classifier's probability field over the plane,
  its 0.5 contour and the data.
- `training_curves`: loss and accuracy per epoch, training against validation
  (a `cedf.History` from `cedf.fit`).
- `gradcheck_errors`: the worst relative error per parameter of a gradient check.

Each returns a matplotlib Figure, made without pyplot (no window, no global
state), and saves it as PNG when given a `path`.
"""
import numpy as np

from .training import predict

# The slides' colours for the two classes.
NEGATIVE, POSITIVE = "#1f78b4", "#e31a1c"


def _figure(ncols=1, nrows=1, size=(5.0, 3.6)):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("cedf.plot needs matplotlib: pip install 'cedf[plot]'") from None
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes.ravel()


def _done(fig, path):
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _sigmoid(z):
    return 0.5 * (1 + np.tanh(np.asarray(z, dtype=np.float64) / 2))


def logistic_regression_1d(x, y, w, b, path=None):
    """The slides' four panels for 1-D data x with labels y in {0, 1} and a fit sigmoid(w x + b)."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y).ravel()
    w, b = float(np.ravel(w)[0]), float(np.ravel(b)[0])
    grid = np.linspace(x.min() - 0.5, x.max() + 0.5, 400)
    f = _sigmoid(w * x + b)
    own = np.where(y == 1, f, 1 - f)   # the probability of each sample's own class
    fig, (data, fit, prob, loss) = _figure(4, 1, size=(4.0, 3.2))
    for ax, title in ((data, "data"), (fit, r"$f(x) = \sigma(w_0 + w_1 x)$"),
                      (prob, "probability of the own class"), (loss, r"$-\log$ of it: the loss")):
        ax.set_title(title)
        ax.set_xlabel("x")
    for cls, colour, name in ((0, NEGATIVE, "negative"), (1, POSITIVE, "positive")):
        mask = y == cls
        data.scatter(x[mask], np.full(mask.sum(), cls), c=colour, s=18, label=name)
        fit.scatter(x[mask], np.full(mask.sum(), cls), c=colour, s=12, alpha=0.6)
        prob.vlines(x[mask], 0, own[mask], colors=colour, lw=1.5)
        loss.vlines(x[mask], 0, -np.log(own[mask]), colors=colour, lw=1.5)
    data.set_yticks([0, 1])
    data.legend(loc="center right")
    fit.plot(grid, _sigmoid(w * grid + b), "k-")
    fit.axhline(0.5, color="0.7", lw=0.8, ls="--")
    prob.set_ylim(0, 1.05)
    return _done(fig, path)


def decision_boundary(output, x, X, y, path=None, resolution=200, margin=0.5):
    """The probabilities of node `output` (fed by Input `x`) over the plane around 2-D data X, and the data.

    For one output (a sigmoid) the field is the probability of class 1, with
    its 0.5 contour; for several (a softmax) it is the predicted class.
    """
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y).ravel()
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"decision_boundary: X must be (n, 2), got shape {X.shape}")
    lo, hi = X.min(axis=0) - margin, X.max(axis=0) + margin
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = np.column_stack([g0.ravel(), g1.ravel()])
    p = np.asarray(predict(output, x, grid, batch_size=4096), dtype=np.float64)
    fig, (ax,) = _figure()
    if p.ndim == 1 or p.shape[1] == 1:
        field = p.reshape(g0.shape)
        image = ax.contourf(g0, g1, field, levels=np.linspace(0, 1, 21), cmap="RdBu_r", alpha=0.8)
        ax.contour(g0, g1, field, levels=[0.5], colors="k", linewidths=1.5)
        fig.colorbar(image, ax=ax, label="P(class 1)")
    else:
        ax.contourf(g0, g1, p.argmax(axis=1).reshape(g0.shape), levels=np.arange(p.shape[1] + 1) - 0.5,
                    cmap="tab10", alpha=0.35)
    if y.max(initial=0) <= 1:
        colours = np.where(y == 1, POSITIVE, NEGATIVE)
        ax.scatter(X[:, 0], X[:, 1], c=colours, edgecolors="white", linewidths=0.6, s=20)
    else:
        ax.scatter(X[:, 0], X[:, 1], c=y, cmap="tab10", edgecolors="white", linewidths=0.6, s=20)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title("decision boundary")
    return _done(fig, path)


def training_curves(history, path=None):
    """Loss and accuracy per epoch from a `cedf.History`, training and (if recorded) validation.

    Epochs on whole-number ticks; the accuracy in percent, as `fit`'s reports print it.
    """
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    fig, (loss, accuracy) = _figure(2)
    epochs = np.arange(1, history.epochs + 1)
    for ax, train, val, name in ((loss, history.loss, history.val_loss, "loss"),
                                 (accuracy, history.accuracy, history.val_accuracy, "accuracy")):
        scale = 100 if ax is accuracy else 1
        ax.plot(epochs, np.multiply(train, scale), "o-", label="training", ms=3)
        if val:
            ax.plot(epochs[:len(val)], np.multiply(val, scale), "s-", label="validation", ms=3)
        if history.best_epoch is not None:
            ax.axvline(history.best_epoch + 1, color="0.6", ls=":", label="kept")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name)
        ax.legend()
    accuracy.yaxis.set_major_formatter(PercentFormatter(100))
    return _done(fig, path)


def gradcheck_errors(result, path=None):
    """The worst relative error per checked array of a `cedf.gradcheck` result, against its tolerance."""
    names = list(result.errors)
    errors = np.array([result.errors[n] for n in names], dtype=np.float64)
    failed = ~(errors <= result.tol)   # NaN fails
    shown = np.where(np.isfinite(errors), np.maximum(errors, 1e-17), 1.0)   # NaN/inf: a full bar
    fig, (ax,) = _figure(size=(5.5, 0.35 * len(names) + 1.5))
    ax.barh(names, shown, color=np.where(failed, POSITIVE, NEGATIVE))
    ax.axvline(result.tol, color="k", ls="--", label=f"tol {result.tol:g}")
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("relative error, backprop against central differences")
    ax.set_title("gradient check: " + ("passed" if result.passed else "FAILED"))
    ax.legend()
    return _done(fig, path)
