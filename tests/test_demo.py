"""The main job, `python -m cedf.demo`, runs from a fresh folder and writes its figures."""
import os
import subprocess
import sys

import numpy as np


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
    assert (tmp_path / "figs" / "logistic_regression_graph.dot").read_text().startswith("digraph cedf {")
