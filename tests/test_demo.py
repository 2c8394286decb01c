"""The main job, `python -m cedf.demo`, runs from a fresh folder and writes its figures."""
import os
import subprocess
import sys

import numpy as np
import pytest


def test_demo_trains_times_and_writes_figures(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    run = subprocess.run([sys.executable, "-m", "cedf.demo", "--out", "figs", "--epochs", "3", "--steps", "30"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    # The backend the run asked for: CEDF_BACKEND=numpy runs the demo on the reference too.
    assert f"backend {os.environ.get('CEDF_BACKEND') or 'cython'}" in out
    assert out.count("  epoch ") == 3 and "held-out accuracy" in out
    assert "logistic regression, batch 400" in out and "faster compiled" in out
    assert f"figures written to {tmp_path / 'figs'}" in out

    from matplotlib.image import imread
    for name in ("decision_boundary_2d.png", "logistic_regression_1d.png", "training_curves.png"):
        image = imread(tmp_path / "figs" / name)
        assert image.std() > 0.05, f"{name} looks blank"
    dot = (tmp_path / "figs" / "logistic_regression_graph.dot").read_text()
    assert dot.startswith("digraph cedf {")
    # The graph as training runs it, the 400 training points (not the decision boundary's grid).
    assert '"Affine\\n400×1\\n' in dot and '"Input\\n400×2\\n' in dot, dot


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
