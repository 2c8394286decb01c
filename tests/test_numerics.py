"""Finite input never gives NaN, an infinity or a floating-point warning; huge logits give finite losses."""
import warnings

import numpy as np
import pytest

import cedf as edf

from helpers import both_backends


def extreme_logits(dtype, rows, cols):
    """Rows of logits from 0 to the dtype's largest finite values, of both signs, and ties."""
    big = np.finfo(dtype).max
    pool = np.array([0, 1, -1, 1e4, -1e4, 1e30, -1e30, big, -big, big / 3, -big / 3], dtype)
    rng = np.random.default_rng(0)
    return pool[rng.integers(0, len(pool), (rows, cols))]


def strict():
    """Every warning an error, every floating-point exception of NumPy an error."""
    w = warnings.catch_warnings()
    w.__enter__()
    warnings.simplefilter("error")
    e = np.errstate(all="raise")
    e.__enter__()
    return w, e


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_huge_logits_give_finite_losses_and_gradients(dtype, head):
    logits = extreme_logits(dtype, 64, 4 if head == "softmax" else 1)

    def run():
        edf.clear_compgraph()
        edf.DT = dtype
        np.random.seed(0)
        x, big, y = edf.Input(), edf.Input(), edf.Input()
        x.value = logits
        # Through a layer: inputs up to 1e30, so that the products stay finite.
        big.value = np.clip(logits, -1e30, 1e30)
        y.value = np.arange(64) % (4 if head == "softmax" else 2)
        scale = edf.Affine(edf.AffineParams(logits.shape[1], logits.shape[1]), big)
        if head == "softmax":
            L = edf.CrossEntropyLoss(edf.Softmax(x), y)
            M = edf.CrossEntropyLoss(edf.Softmax(scale), y)
        else:
            L = edf.BCELoss(edf.Sigmoid(x), y)
            M = edf.BCELoss(edf.Sigmoid(scale), y)
        out = []
        w, e = strict()
        try:
            for loss in (L, M, L, M):   # twice: node by node, then the compiled plan
                edf.Forward()
                edf.Backward(loss)
                out.append([np.array(c.value) for c in edf.CompNodes] + [np.array(c.grad) for c in edf.CompNodes])
        finally:
            e.__exit__(None, None, None)
            w.__exit__(None, None, None)
        return out

    ref, comp = both_backends(run)
    for run_out in (ref, comp):
        for arrays in run_out:
            for a in arrays:
                assert np.all(np.isfinite(a)), "a loss or gradient is not finite"
    # Straight from the data, both backends agree. Through the layer they need not:
    # logits of 1e30 that differ in their last bit (two BLAS builds) differ by 1e23.
    direct = [1, 2]   # CompNodes: the layer, the head on the data, L, the head on the layer, M
    n = len(ref[0]) // 2
    for r, c in zip(ref[::2], comp[::2]):   # the steps of L
        for i in direct + [n + i for i in direct]:
            np.testing.assert_allclose(c[i], r[i], rtol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_data_beyond_the_graphs_dtype_is_refused_not_cast_to_infinity(backend):
    edf.set_backend(backend)
    edf.DT = np.float32
    x, y = edf.Input(), edf.Input()
    L = edf.CrossEntropyLoss(edf.Softmax(edf.Affine(edf.AffineParams(3, 2), x)), y)
    x.value, y.value = np.ones((5, 3)), np.zeros(5, int)
    for _ in range(2):   # the second step runs the compiled plan
        edf.Forward()
        edf.Backward(L)
    x.value = np.full((5, 3), 1e300)   # finite in float64, not in float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"Affine: x holds values beyond the range of float32 .*: scale the "
                                             r"data .* or compute in float64 \(edf.DT = np.float64"):
            edf.Forward()
