"""cedf.show_config() and cedf.config.config(): what the installed cedf is and what it runs on."""
import io
import os
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import scipy

import cedf as edf
from cedf.config import config
from helpers import BLAS_LIBRARIES

KEYS = {"cedf", "python", "platform", "numpy", "scipy", "backend", "compiled", "compiled_path",
        "compiled_error", "openmp", "sanitized", "blas_library", "blas", "blas_found_as", "num_threads", "cpu_count",
        "threadpools"}


@pytest.fixture
def restore_threads():
    yield
    edf.set_num_threads(None)


def test_config_has_every_key_and_the_installed_versions():
    c = config()
    assert set(c) == KEYS
    assert c["cedf"] == version("cedf") == edf.__version__
    assert c["cedf"] != "unknown"
    assert c["numpy"] == np.__version__ and c["scipy"] == scipy.__version__
    assert c["python"].endswith(".".join(map(str, sys.version_info[:3])))
    assert c["cpu_count"] == os.cpu_count()


def test_config_reports_the_backend_in_use():
    assert config()["backend"] == edf.get_backend()
    edf.set_backend("numpy")
    assert config()["backend"] == "numpy"
    edf.set_backend("cython")
    assert config()["backend"] == "cython"


def test_config_reports_the_compiled_extension_and_how_it_was_built():
    from cedf import _kernels

    c = config()
    assert c["compiled"] is True and c["compiled_error"] is None
    assert Path(c["compiled_path"]) == Path(_kernels.__file__) and Path(c["compiled_path"]).is_file()
    assert c["openmp"] is _kernels.OPENMP and isinstance(c["openmp"], bool)
    assert c["sanitized"] is _kernels.SANITIZED
    if os.environ.get("CEDF_EXPECT_SANITIZER"):
        assert c["sanitized"] is True


@pytest.mark.skipif("CEDF_EXPECT_OPENMP" not in os.environ,
                    reason="CEDF_EXPECT_OPENMP is not set (1: a CEDF_OPENMP=1 build is under test, 0: a default one)")
def test_the_build_has_openmp_as_requested():
    assert config()["openmp"] is (os.environ["CEDF_EXPECT_OPENMP"] == "1")


@pytest.mark.parametrize("library", BLAS_LIBRARIES)
def test_config_names_the_blas_library_that_cedf_calls(library):
    before = edf.get_blas()
    edf.set_blas(library)
    try:
        c = config()
    finally:
        edf.set_blas(before)
    assert c["blas_library"] == library
    blas = c["blas"]
    assert blas is not None, c["blas_found_as"]
    assert blas["user_api"] == "blas" and blas["internal_api"] in ("openblas", "mkl", "blis", "flexiblas")
    assert Path(blas["filepath"]).is_file()
    assert blas["num_threads"] >= 1
    assert blas in c["threadpools"]
    if library == "numpy":   # the library in NumPy's wheel, not SciPy's
        package = Path(np.__file__).resolve().parent
        assert str(Path(blas["filepath"]).resolve()).startswith((str(package), str(package) + ".libs"))


def test_config_follows_the_thread_limit(restore_threads):
    edf.set_num_threads(1)
    c = config()
    assert c["num_threads"] == edf.get_num_threads() == 1
    assert c["blas"]["num_threads"] == 1
    edf.set_num_threads(None)
    assert config()["num_threads"] == edf.get_num_threads()


def test_show_config_prints_each_fact():
    buffer = io.StringIO()
    edf.show_config(file=buffer)
    text = buffer.getvalue()
    c = config()
    assert text.startswith(f"cedf {edf.__version__}\n")
    for fact in (f"numpy:      {np.__version__}", f"scipy:      {scipy.__version__}",
                 f"backend:    {edf.get_backend()}", c["compiled_path"], c["blas"]["filepath"],
                 c["blas"]["internal_api"], f"{c['num_threads']} for the matrix products",
                 f"{os.cpu_count()} CPUs"):
        assert fact in text, f"{fact!r} missing from:\n{text}"
    assert f"OpenMP:     {'yes' if c['openmp'] else 'no'}" in text
    assert f"AddressSanitizer: {'yes' if c['sanitized'] else 'no'}" in text


def test_show_config_writes_to_stdout_by_default(capsys):
    assert edf.show_config() is None
    assert capsys.readouterr().out.startswith(f"cedf {edf.__version__}\n")
    assert "show_config" in edf.__all__
