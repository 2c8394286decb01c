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
        return {name for name in dir(module) if name.endswith(("_forward", "_backward"))}

    assert kernels(_kernels) == kernels(reference)
    assert len(kernels(reference)) == 10
