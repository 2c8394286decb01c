"""Finite input never gives NaN, an infinity or a floating-point warning; huge logits give finite losses."""
import warnings

import numpy as np
import pytest

import cedf as edf

from helpers import assert_close, both_backends


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


def lecture_p(z, head):
    """The lecture's head on logits z, in float64 (`cedf.lecture`): a softmax whose shifted logits are
    floored at -10, or a sigmoid of its input clipped to +-10."""
    z = np.asarray(z, dtype=np.float64)
    if head == "softmax":
        with np.errstate(over="ignore"):   # -max - max overflows to -inf in float64: floored all the same
            ex = np.exp(np.maximum(-10, z - z.max(axis=1, keepdims=True)))
        return ex / ex.sum(axis=1, keepdims=True)
    return 1 / (1 + np.exp(-np.clip(z, -10, 10)))


def lecture_loss(p, y, head):
    """From the probabilities p: the per-example loss, and the gradients of the batch mean with respect
    to p and (through the head, as the lecture's backward computes it) to the logits."""
    p = np.asarray(p, dtype=np.float64)
    B = len(p)
    if head == "softmax":
        onehot = np.eye(p.shape[1])[y]
        return -np.log(p[np.arange(B), y]), -onehot / (B * p), (p - onehot) / B
    t = np.asarray(y, np.float64).reshape(p.shape)
    loss = (-t * np.log(p) - (1 - t) * np.log(1 - p)).ravel()
    return loss, (p - t) / (B * p * (1 - p)), (p - t) / B


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_huge_logits_give_finite_losses_and_gradients(dtype, head):
    logits = extreme_logits(dtype, 64, 4 if head == "softmax" else 1)
    labels = np.arange(64) % (4 if head == "softmax" else 2)

    def run():
        edf.clear_compgraph()
        edf.DT = dtype
        np.random.seed(0)
        x, big, y = edf.Input(), edf.Input(), edf.Input()
        x.value = logits
        # Through a layer: inputs up to 1e30, so that the products stay finite.
        big.value = np.clip(logits, -1e30, 1e30)
        y.value = labels
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
                nodes = edf.CompNodes + edf.Parameters
                out.append(([np.array(c.value) for c in nodes], [np.array(c.grad) for c in nodes]))
        finally:
            e.__exit__(None, None, None)
            w.__exit__(None, None, None)
        return out

    ref, comp = both_backends(run)
    for run_out in (ref, comp):
        for values, grads in run_out:
            for a in values + grads:
                assert np.all(np.isfinite(a)), "a loss or gradient is not finite"
    # Every number against the lecture's formulas. Nodes: the layer, the head on the data, L, the head on
    # the layer, M; then the layer's A and b.
    tol = 1e-5 if dtype == np.float32 else 1e-12
    big = np.clip(logits, -1e30, 1e30).astype(np.float64)
    for run_out in (ref, comp):
        for step, (values, grads) in enumerate(run_out):
            layer, A, b = values[0].astype(np.float64), values[5].astype(np.float64), values[6].astype(np.float64)
            # The layer: x A + b, to the rounding of its terms.
            assert_close(layer, big @ A + b, tol, "layer", scale=np.max(np.abs(big) @ np.abs(A) + np.abs(b)))
            on_data = step % 2 == 0
            head_node, loss_node = (1, 2) if on_data else (3, 4)
            got_p = values[head_node].astype(np.float64)
            np.testing.assert_allclose(got_p, lecture_p(logits if on_data else layer, head), rtol=tol, atol=tol,
                                       err_msg=f"step {step}: p")
            # The rest from the p computed: near p = 1, 1 - p is that of the rounded p.
            loss, dp, dz = lecture_loss(got_p, labels, head)
            np.testing.assert_allclose(values[loss_node], loss, rtol=tol * 10, atol=tol, err_msg=f"step {step}: loss")
            assert_close(grads[head_node].astype(np.float64), dp, tol * 10, f"step {step}: dL/dp")
            np.testing.assert_allclose(grads[loss_node], 1 / 64, rtol=1e-7, err_msg=f"step {step}: seed")
            if not on_data:
                # Through the layer: dL/dz = (p - onehot) / B, and the parameters' gradients from it.
                assert_close(grads[0].astype(np.float64), dz, tol * 10, f"step {step}: dL/dz")
                assert_close(grads[5].astype(np.float64), big.T @ dz, tol * 10, f"step {step}: dL/dA",
                             scale=np.max(np.abs(big.T) @ np.abs(dz)))
                assert_close(grads[6].astype(np.float64), dz.sum(axis=0), tol * 10, f"step {step}: dL/db",
                             scale=np.max(np.abs(dz).sum(axis=0)))
            else:
                for g in grads[:1] + grads[3:]:   # nothing reaches the layer from L
                    assert not np.any(g), f"step {step}: a gradient of the layer's branch from L"


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


@pytest.mark.parametrize("dtype, margin", [(np.float32, 95.0), (np.float64, 720.0)])
def test_a_planned_step_flushes_subnormals_to_zero_and_puts_the_thread_back(dtype, margin):
    """Wrong classes learnt with a margin beyond the dtype's normal range have subnormal probabilities;
    the plan computes with them flushed to zero (csrc/denormals.h: reading or making one is a hundred
    times slower on x86), exactly where they are below the smallest normal number, and NumPy in the
    same thread still computes with them afterwards."""
    tiny = np.finfo(dtype).tiny
    z = np.array([[0.0, -margin, -3.0], [-margin, 0.0, -margin - 1], [1.0, 2.0, 0.5]], dtype)
    labels = np.array([0, 1, 2])
    edf.clear_compgraph()
    edf.DT = dtype
    logits, y = edf.Parameter(z.copy()), edf.Input()
    y.value = labels
    loss = edf.SoftmaxCrossEntropyLoss(logits, y)
    for _ in range(2):   # node by node, then the compiled plan
        edf.Forward()
        edf.Backward(loss)
    assert edf.current_graph()._planned
    z64 = z.astype(np.float64)
    p = np.exp(z64 - z64.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dz = ((p - np.eye(3)[labels]) / 3).astype(dtype)
    below = (dz != 0) & (np.abs(dz) < tiny)
    assert below.sum() == 3, "the case lost its subnormal gradients"
    grad = np.array(logits.grad)
    assert np.all(grad[below] == 0), f"subnormal gradients were not flushed: {grad[below]}"
    assert_close(grad[~below], dz[~below], 1e-6 if dtype == np.float32 else 1e-14, "dL/dz")
    np.testing.assert_allclose(np.array(loss.value), -np.log(p[np.arange(3), labels]), rtol=1e-6)
    # The control register is the caller's again: NumPy's products still underflow gradually.
    assert dtype(tiny) * dtype(0.25) == tiny / 4 != 0
