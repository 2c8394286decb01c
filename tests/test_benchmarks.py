"""The benchmarks' floors measure the right products.

`benchmarks/workloads.py` times the matrix products of a training step by
NumPy's BLAS (the floor the performance targets are set against) and by
SciPy's (the BLAS that cedf calls); both must compute the same products, or
the comparison between them says nothing.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

WORKLOADS = Path(__file__).resolve().parents[1] / "benchmarks" / "workloads.py"


def _workloads():
    spec = importlib.util.spec_from_file_location("cedf_bench_workloads", WORKLOADS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not WORKLOADS.exists(), reason="benchmarks/ is not beside tests/")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("workload", ["logreg2d", "mlp_digits", "mlp_mnist"])
def test_the_scipy_floor_computes_the_numpy_floors_products(workload, dtype):
    w = _workloads()
    floors = [w._Floor(workload, dtype), w._ScipyFloor(workload, dtype)]
    for floor in floors:
        floor.step()
    numpy_floor, scipy_floor = floors
    outputs = lambda f: f.h + f.dW + f.dX  # noqa: E731
    rtol = 1e-4 if dtype == np.float32 else 1e-12
    for got, want in zip(outputs(scipy_floor), outputs(numpy_floor), strict=True):
        assert got.dtype == want.dtype and got.flags.c_contiguous
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())
    # ... and what the floor reads is the workload's batch, not something else.
    x, _ = w.data(workload, dtype)
    np.testing.assert_array_equal(scipy_floor.x, x)
    np.testing.assert_allclose(scipy_floor.h[0], x @ scipy_floor.W[0], rtol=rtol, atol=rtol * np.abs(x @ scipy_floor.W[0]).max())
