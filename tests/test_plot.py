"""cedf.plot: each figure is made from small data, shows what it should, and saves a real PNG."""
import io

import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.image import imread

import cedf as edf
from cedf import plot
from cedf.gradient_check import GradcheckResult


def assert_shows(path, figure):
    """The PNG at `path` is `figure` drawn (the figure whose content the tests below check), and not blank."""
    drawn = io.BytesIO()
    figure.savefig(drawn, dpi=110, format="png")
    drawn.seek(0)
    pixels = imread(path)
    np.testing.assert_array_equal(pixels, imread(drawn), err_msg=f"{path.name} is not the figure drawn")
    rgb = np.round(pixels[..., :3].reshape(-1, 3) * 255).astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1],
                                                                                        dtype=np.uint32)
    assert len(np.unique(rgb)) > 16, f"{path.name} has only {len(np.unique(rgb))} distinct colours"


def sigmoid_model(w=(1.0, 2.0), b=0.5):
    """p = sigmoid(x A + b) with A and b set by hand: its 0.5 contour is the line x A + b = 0."""
    x = edf.Input()
    params = edf.AffineParams(2, 1)
    params.A.value[:, 0], params.b.value[:] = w, b
    return edf.Sigmoid(edf.Affine(params, x)), x


def softmax_model():
    """Three classes, each winning around its own centre of `three_clusters`."""
    x = edf.Input()
    params = edf.AffineParams(2, 3)
    params.A.value[...] = [[-4.0, 4.0, 0.0], [-2.0, -2.0, 4.0]]
    params.b.value[...] = 0.0
    return edf.Softmax(edf.Affine(params, x)), x


def three_clusters(n=30):
    rng = np.random.default_rng(0)
    centres = np.array([[-2.0, -1.0], [2.0, -1.0], [0.0, 2.0]])
    y = np.arange(n) % 3
    return centres[y] + 0.4 * rng.standard_normal((n, 2)), y


def history(validation=True):
    h = edf.History(loss=[1.0, 0.6, 0.4, 0.45], accuracy=[0.5, 0.7, 0.8, 0.85])
    if validation:
        h.val_loss, h.val_accuracy, h.best_epoch = [1.1, 0.7, 0.5, 0.55], [0.45, 0.65, 0.75, 0.7], 2
    return h


def scatter_offsets(ax):
    """The points of the axes' scatter plot (the data)."""
    (points,) = [c for c in ax.collections if type(c).__name__ == "PathCollection"]
    return np.asarray(points.get_offsets())


# Every function of cedf.plot, on small data: name -> a call taking `path`.
FIGURES = {
    "logistic_regression_1d": lambda path: plot.logistic_regression_1d(
        *edf.data.logistic_1d(n=20), w=2.0, b=0.1, path=path),
    "decision_boundary_sigmoid": lambda path: plot.decision_boundary(
        *sigmoid_model(), *edf.data.blobs(n=40), path=path, resolution=40),
    "decision_boundary_softmax": lambda path: plot.decision_boundary(
        *softmax_model(), *three_clusters(), path=path, resolution=40),
    "training_curves": lambda path: plot.training_curves(history(), path=path),
    "gradcheck_errors": lambda path: plot.gradcheck_errors(
        GradcheckResult(errors={"A": 1e-9, "b": 1e-3}, tol=1e-5), path=path),
}


@pytest.mark.parametrize("name", list(FIGURES))
def test_makes_a_figure_and_saves_it_only_when_given_a_path(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    figure = FIGURES[name](None)
    assert isinstance(figure, Figure)
    assert list(tmp_path.iterdir()) == []
    path = tmp_path / f"{name}.png"
    assert isinstance(FIGURES[name](path), Figure)
    assert_shows(path, figure)


def test_logistic_regression_1d_draws_the_fit_and_each_sample_loss():
    x, y = edf.data.logistic_1d(n=20)
    w, b = np.array([[2.0]]), np.array([0.1])   # as AffineParams holds them
    fig = plot.logistic_regression_1d(x, y, w, b)
    assert len(fig.axes) == 4
    data, fit, _, loss = fig.axes
    curve = fit.lines[0]
    grid, f = curve.get_xdata(), curve.get_ydata()
    np.testing.assert_allclose(f, 1 / (1 + np.exp(-(2.0 * grid + 0.1))), rtol=1e-12)
    assert grid.min() < x.min() and grid.max() > x.max()
    # One bar per sample in the loss panel, of height -log p(own class).
    p = 1 / (1 + np.exp(-(2.0 * x[:, 0] + 0.1)))
    expected = -np.log(np.where(y == 1, p, 1 - p))
    segments = [s for c in loss.collections for s in c.get_segments()]
    heights = {round(s[0][0], 9): s[1][1] for s in segments}
    assert len(segments) == len(x)
    np.testing.assert_allclose([heights[round(v, 9)] for v in x[:, 0]], expected, rtol=1e-9)
    assert [t.get_text() for t in data.get_legend().get_texts()] == ["negative", "positive"]


def test_decision_boundary_of_a_sigmoid_follows_the_line_where_p_is_one_half():
    p, x = sigmoid_model(w=(1.0, 2.0), b=0.5)
    X, y = edf.data.blobs(n=40)
    fig = plot.decision_boundary(p, x, X, y, resolution=100)
    ax, colorbar = fig.axes
    assert colorbar.get_ylabel() == "P(class 1)"
    (half,) = [c for c in ax.collections if list(getattr(c, "levels", [])) == [0.5]]
    vertices = np.concatenate([path.vertices for path in half.get_paths()])
    assert len(vertices) > 10
    # On the contour, x1 + 2 x2 + 0.5 = 0, to within the grid's spacing.
    spacing = (np.ptp(X, axis=0).max() + 1.0) / 99
    assert np.max(np.abs(vertices @ [1.0, 2.0] + 0.5)) < spacing
    np.testing.assert_array_equal(scatter_offsets(ax), X)


def test_decision_boundary_of_a_softmax_colours_the_predicted_classes():
    p, x = softmax_model()
    X, y = three_clusters()
    fig = plot.decision_boundary(p, x, X, y, resolution=50)
    (ax,) = fig.axes   # no colorbar: a class, not a probability
    (regions,) = [c for c in ax.collections if hasattr(c, "levels")]
    np.testing.assert_array_equal(regions.levels, [-0.5, 0.5, 1.5, 2.5])
    np.testing.assert_array_equal(scatter_offsets(ax), X)
    # Each point of the plane (away from a boundary by more than the grid's spacing) lies in the region
    # of the class whose logit x A + b is largest there.
    rng = np.random.default_rng(1)
    points = rng.uniform(X.min(axis=0) - 0.5, X.max(axis=0) + 0.5, (500, 2))
    logits = points @ np.array([[-4.0, 4.0, 0.0], [-2.0, -2.0, 4.0]])
    top = np.sort(logits, axis=1)
    clear = top[:, -1] - top[:, -2] > 8 * (np.ptp(X, axis=0).max() + 1.0) / 49
    inside = np.array([[path.contains_point(point) for path in regions.get_paths()] for point in points[clear]])
    assert clear.sum() > 300 and inside.shape[1] == 3
    np.testing.assert_array_equal(inside, np.eye(3, dtype=bool)[logits[clear].argmax(axis=1)])


@pytest.mark.parametrize("shape", [(10, 3), (10,), (10, 1), (2, 5, 2)])
def test_decision_boundary_rejects_data_that_is_not_2d_points(shape):
    p, x = sigmoid_model()
    with pytest.raises(ValueError, match=r"decision_boundary: X must be \(n, 2\)"):
        plot.decision_boundary(p, x, np.zeros(shape), np.zeros(shape[0]))


def test_training_curves_with_validation():
    h = history(validation=True)
    loss, accuracy = plot.training_curves(h).axes
    for ax, train, val, scale in ((loss, h.loss, h.val_loss, 1), (accuracy, h.accuracy, h.val_accuracy, 100)):
        lines = {line.get_label(): line for line in ax.lines}
        assert set(lines) == {"training", "validation", "kept"}
        np.testing.assert_array_equal(lines["training"].get_xdata(), [1, 2, 3, 4])
        np.testing.assert_array_equal(lines["training"].get_ydata(), np.multiply(train, scale))
        np.testing.assert_array_equal(lines["validation"].get_ydata(), np.multiply(val, scale))
        assert list(lines["kept"].get_xdata()) == [3, 3]   # best_epoch 2 is the third epoch


def test_training_curves_tick_whole_epochs_and_show_accuracy_in_percent():
    fig = plot.training_curves(history(validation=True))
    fig.canvas.draw()
    loss, accuracy = fig.axes
    for ax in (loss, accuracy):
        ticks = ax.get_xticks()
        assert np.all(ticks == np.round(ticks)), ticks
    labels = [t.get_text() for t in accuracy.get_yticklabels() if t.get_text()]
    assert labels and all(label.endswith("%") for label in labels), labels


def test_training_curves_without_validation():
    h = history(validation=False)
    loss, accuracy = plot.training_curves(h).axes
    for ax, train, scale in ((loss, h.loss, 1), (accuracy, h.accuracy, 100)):
        assert [line.get_label() for line in ax.lines] == ["training"]
        np.testing.assert_array_equal(ax.lines[0].get_ydata(), np.multiply(train, scale))


def bars(ax):
    """name -> (width, colour) of a horizontal bar chart."""
    names = [t.get_text() for t in ax.get_yticklabels()]
    return {name: (bar.get_width(), to_hex(bar.get_facecolor())) for name, bar in zip(names, ax.patches)}


def test_gradcheck_errors_marks_the_arrays_that_fail():
    result = GradcheckResult(errors={"layer.A": 2e-9, "layer.b": 3e-2}, tol=1e-5)
    (ax,) = plot.gradcheck_errors(result).axes
    assert "FAILED" in ax.get_title()
    assert bars(ax) == {"layer.A": (2e-9, plot.NEGATIVE), "layer.b": (3e-2, plot.POSITIVE)}
    (threshold,) = [line for line in ax.lines if line.get_label() == "tol 1e-05"]
    assert list(threshold.get_xdata()) == [1e-5, 1e-5]


def test_gradcheck_errors_of_a_real_check():
    edf.DT = np.float64
    np.random.seed(0)
    x, y = edf.Input(), edf.Input()
    x.value, y.value = np.random.randn(4, 3), np.array([0, 1, 1, 0])
    L = edf.CrossEntropyLoss(edf.Softmax(edf.Affine(edf.AffineParams(3, 2, name="out"), x)), y)
    result = edf.gradcheck(L, inputs=[x])
    assert result.passed
    (ax,) = plot.gradcheck_errors(result).axes
    assert ax.get_title() == "gradient check: passed"
    shown = bars(ax)
    assert list(shown) == ["out.A", "out.b", "Input#0"]
    assert all(colour == plot.NEGATIVE for _, colour in shown.values())


def test_gradcheck_errors_marks_nan_as_failing():
    result = GradcheckResult(errors={"A": float("nan"), "b": 1e-9}, tol=1e-5)
    (ax,) = plot.gradcheck_errors(result).axes
    shown = bars(ax)
    assert shown["A"][1] == plot.POSITIVE and shown["A"][0] > result.tol
    assert shown["b"] == (1e-9, plot.NEGATIVE)
