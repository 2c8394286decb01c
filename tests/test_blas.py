"""The compiled kernels on either BLAS: NumPy's own or SciPy's (cedf.set_blas).

Every product shape that takes its own path in `_blas.pxd` (gemm; gemv for a
result of one column or one row; axpy for the update) must give the
reference's numbers on each library, and a planned training step must give
the same parameters on both.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import cedf as edf
from cedf import _kernels, reference
from conftest import compiled_only
from helpers import BLAS_LIBRARIES
from helpers import assert_close, random_mlp, rtol_for


def _numpy_ships_ilp64_openblas():
    """NumPy's wheels: scipy-openblas built with 64-bit integers, the BLAS cedf can call."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:
        return False
    return blas.get("name") == "scipy-openblas" and "USE64BITINT" in str(blas.get("openblas configuration", ""))


@pytest.fixture
def blas_library():
    before = edf.get_blas()
    yield
    edf.set_blas(before)


def test_numpy_blas_is_used_where_numpy_ships_it():
    # Not a silent fallback: where NumPy is the usual wheel, cedf must find its BLAS.
    if not _numpy_ships_ilp64_openblas():
        pytest.skip("this NumPy was not built with scipy-openblas64")
    assert "numpy" in BLAS_LIBRARIES, edf.backend._numpy_blas_error
    if not os.environ.get("CEDF_BLAS"):
        assert edf.get_blas() == "numpy"


# (batch, n_in, n_out): a general product, one output column (gemv), a batch of one (gemv);
# a gemv of at most eight rows runs in cedf's own loops (csrc/small_gemv.h): logistic
# regression's 1000 x 2, eight and nine features (the last of those loops, the first of
# BLAS's), a batch of one with eight and nine outputs.
SHAPES = [(7, 5, 3), (64, 33, 1), (1, 9, 4), (1, 1, 1), (130, 2, 1),
          (1000, 2, 1), (37, 8, 1), (37, 9, 1), (1, 6, 8), (1, 6, 9), (1, 8, 1)]


@pytest.mark.parametrize("library", BLAS_LIBRARIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_affine_kernels_match_the_reference_on_each_blas(library, dtype, shape, blas_library):
    edf.set_blas(library)
    n, n_in, n_out = shape
    rng = np.random.default_rng(sum(shape))
    x, A, b, g = (rng.standard_normal(s).astype(dtype) for s in ((n, n_in), (n_in, n_out), (n_out,), (n, n_out)))
    outs = {}
    for name, k in (("reference", reference), ("compiled", _kernels)):
        out = np.empty((n, n_out), dtype)
        k.affine_forward(x, A, b, out)
        gx, gA, gb = np.full_like(x, 0.5), np.full_like(A, 0.5), np.full_like(b, 0.5)   # backward adds
        k.affine_backward(x, A, g, gx, gA, gb)
        outs[name] = (out, gx, gA, gb)
    for got, want, what in zip(outs["compiled"], outs["reference"], ("out", "gx", "gA", "gb")):
        assert_close(got, want, rtol_for(dtype), f"{library} {what}")


@compiled_only
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_planned_training_run_is_the_same_on_both(dtype, blas_library):
    if len(BLAS_LIBRARIES) < 2:
        pytest.skip("NumPy's BLAS cannot be called here: " + str(edf.backend._numpy_blas_error))
    results = []
    for library in BLAS_LIBRARIES:
        edf.set_blas(library)
        edf.clear_compgraph()
        np.random.seed(0)
        rng = np.random.default_rng(0)
        x, y = edf.Input(), edf.Input()
        x.value, y.value = rng.standard_normal((40, 30)).astype(dtype), rng.integers(0, 4, 40)
        first = edf.AffineParams(30, 50)   # the update of 1,500 weights: one axpy
        L = edf.CrossEntropyLoss(edf.Softmax(edf.Affine(edf.AffineParams(50, 4), edf.Sigmoid(edf.Affine(first, x)))), y)
        for _ in range(5):
            edf.Forward()
            edf.Backward(L)
            edf.UpdateParameters()
        assert edf.current_graph()._planned
        results.append([p.value.copy() for p in edf.Parameters])
    for got, want in zip(*results, strict=True):
        assert_close(got, want, 10 * rtol_for(dtype), "parameters after 5 steps")


def _small_net(dtype, batch, seed):
    """Two features -> 3 -> 1 with Sigmoids and BCELoss (`random_mlp`), in a graph of its own:
    gemv of two and three rows in each direction (the Sigmoids add the bias, so the forward
    products write with beta = 0)."""
    with edf.Graph() as graph:
        L, x = random_mlp(seed, dtype, depth=2, widths=[2, 3], batch=batch, loss="bce")
    return graph, x, L


@compiled_only
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1000, 1])
def test_a_nan_batch_leaves_nothing_behind_in_the_products(dtype, batch, blas_library):
    # A product written with beta = 0 must not read what its output held (BLAS's rule): after a
    # batch of NaNs, the plan's buffers hold NaN, and the next batch's loss and gradients must be
    # those of a graph that never saw it.
    graph, x, L = _small_net(dtype, batch, seed=3)
    fresh, _, fresh_L = _small_net(dtype, batch, seed=3)
    for g, loss in ((graph, L), (fresh, fresh_L)):
        g.Forward()   # the first Forward runs node by node and builds the plan
        g.Backward(loss)
    good = x.value.copy()
    x.value = np.full_like(good, np.nan)
    graph.Forward()
    graph.Backward(L)
    assert graph._planned and np.isnan(L.value).all()
    assert all(np.isnan(p.grad).all() for p in graph.Parameters)
    x.value = good
    for g, loss in ((graph, L), (fresh, fresh_L)):
        g.Forward()
        g.Backward(loss)
        assert g._planned
    assert_close(L.value, fresh_L.value, rtol_for(dtype), "loss")
    for p, q in zip(graph.Parameters, fresh.Parameters, strict=True):
        assert np.isfinite(p.grad).all()
        assert_close(p.grad, q.grad, rtol_for(dtype), "gradient")


def test_set_blas_refuses_what_it_cannot_do(blas_library):
    with pytest.raises(ValueError, match=r"cedf.set_blas: unknown BLAS 'mkl', expected one of \('numpy', 'scipy'\)"):
        edf.set_blas("mkl")
    if "numpy" not in BLAS_LIBRARIES:
        with pytest.raises(RuntimeError, match="cedf.set_blas: cannot call NumPy's BLAS"):
            edf.set_blas("numpy")


@pytest.mark.parametrize("asked", BLAS_LIBRARIES)
def test_the_environment_variable_chooses(asked):
    code = "import cedf; print(cedf.get_blas())"
    env = dict(os.environ, CEDF_BLAS=asked)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    assert out.stdout.strip() == asked
