"""docs/tutorial.ipynb, the lecture step by step: stored without outputs, and it runs from top to bottom.

The notebook checks itself where it can (the backward pass by hand against cedf's,
the gradient check of a node of one's own): an assertion that fails there fails here.
It runs in a fresh kernel from a scratch folder, so that it imports the installed cedf.
"""
import json
import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"
needs_notebook = pytest.mark.skipif(not NOTEBOOK.exists(), reason="docs/ is not beside tests/")


@needs_notebook
def test_the_notebook_is_stored_without_outputs():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert len(code) >= 8
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, "".join(cell["source"])[:80]


@needs_notebook
def test_the_notebook_runs_and_shows_its_figures(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()   # raises on an error
    code = [c for c in notebook.cells if c.cell_type == "code"]
    text = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert images == 3, "the 1-D and 2-D logistic regressions and the training curves: one figure each"
    assert f"backend {os.environ.get('CEDF_BACKEND') or 'cython'}" in text   # the kernel inherits the run's
    assert "gradcheck: passed" in text
    drawing = next(o for c in code if "edf.draw(L2)" in c.source for o in c.outputs)
    assert "digraph cedf {" in drawing["data"]["text/plain"] or "image/svg+xml" in drawing["data"]
