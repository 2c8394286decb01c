"""The examples in examples/ run as a student would run them, and draw real figures.

Each script runs in a subprocess of its own (`python examples/<name>.py --out
DIR`, from a scratch directory, so it imports the installed cedf). They all
start together and run side by side: most of their time is spent importing.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# Each example, and the PNG files it must write.
FIGURES = {
    "logistic_regression_1d": ["logistic_regression_1d.png"],
    "logistic_regression_2d": ["decision_boundary_2d.png"],
    "mlp_digits": ["training_curves.png"],
    "custom_node": ["gradcheck.png"],
}


def assert_not_blank(path):
    """The PNG at `path` shows something: its pixels vary, in more than a few colours."""
    from matplotlib.image import imread

    pixels = imread(path)[..., :3].reshape(-1, 3)
    rgb = np.round(pixels * 255).astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
    colours = len(np.unique(rgb))
    assert pixels.std() > 0.05, f"{path.name} is (nearly) one colour: pixel std {pixels.std():.3g}"
    assert colours > 16, f"{path.name} has only {colours} distinct colours"


def start(name, *args, cwd):
    """`python examples/<name>.py *args` in directory `cwd`, with matplotlib's non-interactive backend."""
    return subprocess.Popen([sys.executable, str(EXAMPLES / f"{name}.py"), *args], cwd=cwd,
                            env=dict(os.environ, MPLBACKEND="Agg"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process, timeout=60):
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every example run once with --out DIR, and custom_node.py once without: key -> (run, DIR)."""
    started = {}
    for name in FIGURES:
        out = tmp_path_factory.mktemp(name)
        started[name] = start(name, "--out", str(out), cwd=out), out
    cwd = tmp_path_factory.mktemp("default_out")
    started["default --out"] = start("custom_node", cwd=cwd), cwd
    return {key: (finish(process), out) for key, (process, out) in started.items()}


@pytest.fixture(scope="module")
def trainings(tmp_path_factory):
    """The examples that train for a while and draw nothing, run side by side: name -> run."""
    pytest.importorskip("mnist1d")
    started = {}
    for name in ("mnist1d_table", "cnn_digits"):
        started[name] = start(name, cwd=tmp_path_factory.mktemp(name))
    return {name: finish(process, timeout=600) for name, process in started.items()}


def test_mnist1d_reproduces_the_papers_table(trainings):
    """Issue 15's bar: at least 31, 64 and 92 % (the paper's notebook ran 31.5, 64.6 and 92.3)."""
    run = trainings["mnist1d_table"]
    assert run.returncode == 0, f"mnist1d_table.py exited with {run.returncode}:\n{run.stdout}\n{run.stderr}"
    found = {name: (int(paper), float(ours)) for name, paper, ours in
             re.findall(r"^(logistic regression|MLP|CNN) +(\d+)% +([\d.]+)%", run.stdout, re.MULTILINE)}
    assert found.keys() == {"logistic regression", "MLP", "CNN"}, run.stdout
    assert {name: paper for name, (paper, _) in found.items()} == {"logistic regression": 32, "MLP": 68, "CNN": 94}
    for name, bar in (("logistic regression", 31), ("MLP", 64), ("CNN", 92)):
        assert found[name][1] >= bar, f"{name}: {found[name][1]} % < {bar} %\n{run.stdout}"


def test_cnn_digits_reaches_98_percent(trainings):
    run = trainings["cnn_digits"]
    assert run.returncode == 0, f"cnn_digits.py exited with {run.returncode}:\n{run.stdout}\n{run.stderr}"
    accuracy = float(re.search(r"test loss [\d.]+, accuracy ([\d.]+)%", run.stdout).group(1))
    assert accuracy >= 98, run.stdout


@pytest.mark.parametrize("name", list(FIGURES))
def test_example_runs_and_writes_its_figures(runs, name):
    run, out = runs[name]
    assert run.returncode == 0, f"{name}.py exited with {run.returncode}:\n{run.stdout}\n{run.stderr}"
    for figure in FIGURES[name]:
        path = out / figure
        assert path.is_file(), f"{name}.py did not write {figure}:\n{run.stdout}"
        assert str(path) in run.stdout, f"{name}.py did not print the path of {figure}"
        assert_not_blank(path)


def test_logistic_regression_1d_classifies_the_data(runs):
    run, _ = runs["logistic_regression_1d"]
    accuracy = float(re.search(r"accuracy ([\d.]+)%", run.stdout).group(1))
    assert accuracy >= 85, run.stdout


def test_logistic_regression_2d_converges_and_writes_the_graph(runs):
    run, out = runs["logistic_regression_2d"]
    grad_norm = float(re.search(r"gradient norm ([\d.e+-]+)", run.stdout).group(1))
    assert grad_norm < 1e-6, run.stdout
    dot = (out / "logistic_regression_2d.dot").read_text()
    assert dot.startswith("digraph") and "BCEWithLogitsLoss" in dot
    if shutil.which("dot") is None:   # the subprocess saw the same PATH
        assert "not on PATH" in run.stdout
        assert not (out / "logistic_regression_2d.png").exists()
    else:
        assert_not_blank(out / "logistic_regression_2d.png")


def test_mlp_digits_learns_the_digits(runs):
    run, _ = runs["mlp_digits"]
    accuracy = float(re.search(r"validation loss [\d.]+, accuracy ([\d.]+)%", run.stdout).group(1))
    assert accuracy >= 90, run.stdout


def test_custom_node_passes_its_gradient_check(runs):
    run, _ = runs["custom_node"]
    assert "gradcheck: passed" in run.stdout
    assert "Input#0" in run.stdout   # the input was checked too


def test_out_defaults_to_figures_in_the_current_directory(runs):
    run, cwd = runs["default --out"]
    assert run.returncode == 0, run.stderr
    assert_not_blank(cwd / "figures" / "gradcheck.png")
