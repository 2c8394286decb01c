"""The main job, `python -m cedf.demo`, runs from a fresh folder and writes its figures."""
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import cedf as edf
from helpers import lecture_training

# The demo's run in test_demo_trains_times_and_writes_figures, and the same parts run here in-process.
ARGS = dict(epochs=3, steps=30, batch_size=32, hidden=32)


def test_demo_trains_times_and_writes_figures(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    run = subprocess.run([sys.executable, "-m", "cedf.demo", "--out", "figs", "--epochs", str(ARGS["epochs"]),
                          "--steps", str(ARGS["steps"]), "--batch-size", str(ARGS["batch_size"]),
                          "--hidden", str(ARGS["hidden"])],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    # The backend the run asked for: CEDF_BACKEND=numpy runs the demo on the reference too.
    assert f"backend {os.environ.get('CEDF_BACKEND') or 'cython'}" in out
    assert out.count("  epoch ") == 3 and "held-out accuracy" in out
    assert "logistic regression, batch 400" in out and "faster compiled" in out
    assert f"figures written to {tmp_path / 'figs'}" in out

    # The figures are those that the demo's parts draw in-process, whose content the test below checks.
    from matplotlib.image import imread
    figures = demo_figures(tmp_path / "in-process")
    for name in ("decision_boundary_2d.png", "logistic_regression_1d.png", "training_curves.png"):
        np.testing.assert_array_equal(imread(tmp_path / "figs" / name), imread(tmp_path / "in-process" / name),
                                      err_msg=f"{name} is not the figure checked in-process")
    assert set(figures) == {"decision_boundary", "logistic_regression_1d", "training_curves"}
    dot = (tmp_path / "figs" / "logistic_regression_graph.dot").read_text()
    assert dot.startswith("digraph cedf {")
    # The graph as training runs it, the 400 training points (not the decision boundary's grid).
    assert '"Affine\\n400×1\\n' in dot and '"Input\\n400×2\\n' in dot, dot


def demo_figures(out):
    """The demo's three models trained and drawn in-process into `out` (as its main does, with ARGS):
    name of the cedf.plot function -> (its arguments, the figure it returned)."""
    from cedf import demo as demo_module
    from cedf import plot

    drawn = {}

    def recorded(name):
        def draw(*args, **kwargs):
            figure = getattr(plot, name)(*args, **kwargs)
            drawn[name] = args, figure
            return figure
        return draw

    os.makedirs(out, exist_ok=True)
    shown = SimpleNamespace(**{name: recorded(name) for name in
                               ("decision_boundary", "logistic_regression_1d", "training_curves")})
    saved = demo_module.plot
    demo_module.plot = shown
    try:
        demo_module.logistic_regression(str(out), ARGS["steps"])
        demo_module.logistic_regression_1d(str(out))
        demo_module.mlp_digits(str(out), ARGS["epochs"], ARGS["batch_size"], ARGS["hidden"])
    finally:
        demo_module.plot = saved
    return drawn


def test_demo_figures_show_the_models_numbers(tmp_path, capsys):
    figures = demo_figures(tmp_path)
    capsys.readouterr()

    # 2-D logistic regression: the parameters are the lecture's EDF's after the same steps, the
    # scatter is the data, and the drawn 0.5 contour is the line x A + b = 0.
    (p, x, X, labels), fig = figures["decision_boundary"]
    params = p.x.params
    with edf.Graph():
        np.random.seed(0)
        edf.DT = np.float32
        start = edf.AffineParams(2, 1)
    _, expected, _ = lecture_training(X, labels, [start.A.value, start.b.value], steps=ARGS["steps"], lr=1.0,
                                      dtype=np.float32, head="bce")
    np.testing.assert_allclose(params.A.value, expected[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(params.b.value, expected[1], rtol=1e-4, atol=1e-5)
    ax = fig.axes[0]
    (points,) = [c for c in ax.collections if type(c).__name__ == "PathCollection"]
    np.testing.assert_array_equal(points.get_offsets(), X)
    (half,) = [c for c in ax.collections if list(getattr(c, "levels", [])) == [0.5]]
    vertices = np.concatenate([path.vertices for path in half.get_paths()])
    A, b = params.A.value[:, 0].astype(np.float64), float(params.b.value[0])
    spacing = (np.ptp(X, axis=0).max() + 1.0) / 199   # decision_boundary's grid: 200 points, margins 0.5
    assert len(vertices) > 10
    assert np.max(np.abs(vertices @ A + b)) < spacing * np.abs(A).sum()

    # 1-D logistic regression: the curve drawn is sigmoid(w x + b) of the fitted parameters, and those
    # are the optimum: the mean loss's gradient (p - y) x, (p - y) vanishes there (to minimize's tol=1e-6
    # on the step, a few 1e-5 here; away from the optimum it is of order 0.1).
    (X1, y1, w, b1), fig = figures["logistic_regression_1d"]
    w, b1 = float(np.ravel(w)[0]), float(np.ravel(b1)[0])
    curve = fig.axes[1].lines[0]
    np.testing.assert_allclose(curve.get_ydata(), 1 / (1 + np.exp(-(w * curve.get_xdata() + b1))), rtol=1e-9,
                               atol=1e-15)
    z = np.clip(w * X1[:, 0] + b1, -10, 10)
    residual = 1 / (1 + np.exp(-z)) - y1
    assert abs(np.mean(residual * X1[:, 0])) < 1e-3 and abs(np.mean(residual)) < 1e-3

    # Training curves: the lines are the history, whose last validation accuracy is the model's own.
    (history,), fig = figures["training_curves"]
    loss_ax, accuracy_ax = fig.axes
    lines = {line.get_label(): line.get_ydata() for line in loss_ax.lines}
    np.testing.assert_array_equal(lines["training"], history.loss)
    np.testing.assert_array_equal(lines["validation"], history.val_loss)
    lines = {line.get_label(): line.get_ydata() for line in accuracy_ax.lines}
    np.testing.assert_array_equal(lines["validation"], np.multiply(history.val_accuracy, 100))
    assert history.epochs == ARGS["epochs"]


def demo(*args, cwd):
    return subprocess.run([sys.executable, "-m", "cedf.demo", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_demo_help_describes_every_option_and_version_prints(tmp_path):
    run = demo("--help", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "The lecture's two models trained on cedf's compiled engine" in run.stdout
    for option, words in (("--out DIR", "folder for the figures"), ("--epochs N", "passes of the MLP"),
                          ("--batch-size N", "examples per mini-batch"), ("--hidden N", "hidden layer"),
                          ("--steps N", "gradient descent steps"), ("--version", "version")):
        line = next((line for line in run.stdout.splitlines() if line.strip().startswith(option)), "")
        assert words in line, f"no help for {option}:\n{run.stdout}"
    import cedf
    version = demo("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"cedf {cedf.__version__}"


@pytest.mark.parametrize("option, value", [("--epochs", "0"), ("--batch-size", "-3"), ("--steps", "ten"),
                                           ("--hidden", "2.5")])
def test_demo_refuses_bad_values_before_it_runs(option, value, tmp_path):
    run = demo(option, value, "--out", "figs", cwd=tmp_path)
    assert run.returncode == 2
    assert f"argument {option}: expected a positive integer, got" in run.stderr
    assert run.stdout == "" and not (tmp_path / "figs").exists()
