"""The compiled extension is the engine under test, unless a run asks for the reference."""
import importlib.machinery
from pathlib import Path

import pytest

import cedf as edf
from conftest import reference_requested


def test_the_compiled_backend_is_in_use():
    if reference_requested():
        pytest.skip("this run asked for the NumPy reference (CEDF_BACKEND=numpy)")
    assert edf.get_backend() == "cython", (
        "the compiled kernels are not in use: cedf warned at import that they could not be loaded"
    )


def test_the_kernels_are_a_compiled_extension():
    from cedf import _kernels

    assert Path(_kernels.__file__).name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_set_backend_switches_and_rejects_unknown_names():
    edf.set_backend("numpy")
    assert edf.get_backend() == "numpy"
    assert edf.backend.kernels is edf.reference
    edf.set_backend("cython")
    assert edf.get_backend() == "cython"
    with pytest.raises(ValueError, match="unknown backend 'torch'"):
        edf.set_backend("torch")


def test_reference_and_kernels_have_the_same_functions():
    from cedf import _kernels, reference

    def kernels(module):
        return {name for name in dir(module) if name.endswith(("_forward", "_backward", "_update"))}

    assert kernels(_kernels) == kernels(reference)
    assert len(kernels(reference)) >= 22   # the set itself is what the line above compares


def test_thread_count_setting_limits_blas_and_keeps_results():
    import numpy as np
    from threadpoolctl import threadpool_info

    from helpers import random_mlp, snapshot

    def run():
        edf.clear_compgraph()
        L, _ = random_mlp(0, np.float64, 2, [300, 200, 10], batch=256, loss="ce")
        for _ in range(2):
            edf.Forward()
            edf.Backward(L)
        return snapshot()

    before = run()
    try:
        edf.set_num_threads(1)
        assert edf.get_num_threads() == 1
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
        during = run()
    finally:
        edf.set_num_threads(None)
    for (name, v0, g0, *_), (_, v1, g1, *_) in zip(before, during):
        np.testing.assert_allclose(v1, v0, rtol=1e-12, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=1e-14, err_msg=name)
    with pytest.raises(ValueError, match="expected a positive integer or None, got 0"):
        edf.set_num_threads(0)
