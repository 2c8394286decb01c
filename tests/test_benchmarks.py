"""The benchmarks measure what they say.

`benchmarks/workloads.py` times the matrix products of a training step by
NumPy's BLAS (the floor the performance targets are set against) and by
SciPy's (the BLAS cedf falls back to); both must compute the same products, or
the comparison between them says nothing. `benchmarks/compare.py` judges the
targets by a paired ratio, whose arithmetic is checked on known sleeps.
"""
import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

WORKLOADS = Path(__file__).resolve().parents[1] / "benchmarks" / "workloads.py"
COMPARE = WORKLOADS.parent / "compare.py"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _workloads():
    return _load("cedf_bench_workloads", WORKLOADS)


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


@pytest.mark.skipif(not COMPARE.exists(), reason="benchmarks/ is not beside tests/")
def test_the_paired_ratio_is_the_median_of_back_to_back_ratios():
    compare = _load("cedf_bench_compare", COMPARE)
    order = []

    def sleeper(name, seconds):
        def fn():
            order.append(name)
            time.sleep(seconds)
        return lambda: fn

    ratio, pairs = compare.paired_ratio(sleeper("a", 0.004), sleeper("b", 0.002), pairs=6, budget=0.002)
    assert pairs == 6
    assert 1.4 < ratio < 2.6   # 4 ms against 2 ms, plus each sleep's overshoot
    # The budget makes each timing one call: the last twelve calls are the six
    # pairs, whose first member alternates.
    assert order[-12:] == ["a", "b", "b", "a"] * 3
