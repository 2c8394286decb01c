"""Shared fixtures, and the guard that the tests run against the installed, compiled cedf.

The tests must exercise what `pip install` built, never the source tree's
uncompiled files: pytest runs with ``--import-mode=importlib`` (pyproject.toml)
so the source tree is not put on sys.path, and the session stops at once if
``import cedf`` found the source tree anyway (``python -m pytest`` from the
repository root does that, since ``-m`` puts the current directory first).
It stops too when the installed cedf was built from other sources than those
of the checkout the tests come from (a stale install: see cedf/_sources.py).
"""
import os
from pathlib import Path

import pytest
from hypothesis import settings

import cedf as edf
from helpers import stale_install

REPO = Path(__file__).resolve().parents[1]

# CI runs the same examples every time (derandomize); HYPOTHESIS_PROFILE=stress
# draws many more, at random, to hunt for a failing case.
settings.register_profile("ci", max_examples=100, derandomize=True, deadline=None, print_blob=True)
settings.register_profile("stress", max_examples=1000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_sessionstart(session):
    where = Path(edf.__file__).resolve().parent
    if where == REPO / "cedf":
        pytest.exit(
            f"cedf was imported from the source tree ({where}), not from the installed package. "
            "Install it (pip install '.[test]') and run `pytest` (not `python -m pytest`) so the "
            "tests exercise the compiled build.",
            returncode=4,
        )
    problem = stale_install(REPO)
    if problem:
        pytest.exit(problem, returncode=4)


def reference_requested():
    """True when this run asked to run on the NumPy reference (CEDF_BACKEND=numpy)."""
    return os.environ.get("CEDF_BACKEND") == "numpy"


#: For a test of what only the compiled backend has (its plan): skipped, with the reason, on the reference.
compiled_only = pytest.mark.skipif(reference_requested(), reason="checks the compiled plan, which the NumPy "
                                   "reference (CEDF_BACKEND=numpy, this run's backend) does not build")


@pytest.fixture(autouse=True)
def fresh_engine():
    """Each test starts on an empty graph with the package defaults, and leaves them so."""
    saved = edf.DT, edf.learning_rate, edf.get_backend()
    edf.clear_compgraph()
    yield
    edf.DT, edf.learning_rate = saved[:2]
    edf.set_backend(saved[2])
    edf.clear_compgraph()
