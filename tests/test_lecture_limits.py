"""The lecture's numerics at their limits: the Sigmoid's clip at +-10 and the Softmax's floor at -10.

cedf promises the lecture's numbers, and the lecture clips every sigmoid input to
[-10, 10] and floors every max-shifted softmax logit at -10 (`cedf.lecture`).
The other tests draw most of their data inside those limits, and where they go
beyond, compare one backend with the other, which share the constants: a clip
or a floor moved in both would go unseen. Here logits far beyond the limits, at
them and just inside go through small graphs, and each value and gradient is
held to its closed form (in terms of exp(-10)) and to `cedf.lecture`'s, on the
NumPy reference, on the compiled kernels node by node, and through the compiled
plan (the graph's second Forward, its Backward).

In float64 only: in float32, 1 - s at the clip (4.5e-5) keeps three digits,
too few to tell its closed form from a neighbour's.
"""
import numpy as np
import pytest

import cedf as edf
from cedf import lecture

E = np.exp(-10.0)   # what the limits leave of a logit beyond them

#: Logits across the Sigmoid's clip, and what the lecture's clip makes of them.
LOGITS = np.array([-1e3, -30, -10.5, -10, -9.5, -0.5, 0.5, 9.5, 10, 10.5, 30, 1e3])
CLIPPED = np.array([-10, -10, -10, -10, -9.5, -0.5, 0.5, 9.5, 10, 10, 10, 10])

#: Rows of class logits, and what shifting by the row's max and the lecture's floor make of them.
ROWS = np.array([[0, -30, -50, -9.5],
                 [100, 70, 89.5, 100],
                 [-1e3, -1e3, -1010, -970],
                 [0, -10, -10, -10],
                 [1, -2, 3, 0.5],
                 [5, 5, 5, 5]])
FLOORED = np.array([[0, -10, -10, -9.5],
                    [0, -10, -10, 0],
                    [-10, -10, -10, 0],
                    [0, -10, -10, -10],
                    [-2, -5, 0, -2.5],
                    [0, 0, 0, 0]])

BIAS = 0.25   # a bias the layers add back exactly: the plan adds it in the Sigmoid's own pass

# Relative errors allowed, element by element. A probability is a few roundings
# of its closed form (the backends' exp are within 2 ulp). A loss or a gradient
# near the clip is made from 1 - s, p - 1 or log(p) of a p close to 1, whose
# rounding is that of s or p, about 1e-16, relative to 1 - s = 4.5e-5: 2e-12 at
# most; 1e-10 leaves room for a few of them.
VALUES = 1e-14
NEAR_ONE = 1e-10

RUNS = pytest.mark.parametrize("backend, planned", [("numpy", False), ("cython", False), ("cython", True)],
                               ids=["numpy", "cython node by node", "cython plan"])


@pytest.fixture(autouse=True)
def float64(monkeypatch):
    edf.DT = np.float64
    monkeypatch.setattr(lecture, "DT", np.float64)
    lecture.clear_compgraph()
    yield
    lecture.clear_compgraph()


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def identity_layer(module, x, n):
    """An Affine of `module` that gives back x + BIAS exactly (A the identity)."""
    params = module.AffineParams(n, n)
    params.A.value = np.eye(n)
    params.b.value = np.full(n, BIAS)
    return module.Affine(params, x)


def bce_graph(module):
    """Each logit with label 1 and with label 0: Affine -> Sigmoid -> BCELoss (fused in the plan)."""
    x, y = module.Input(), module.Input()
    x.value = np.concatenate([LOGITS, LOGITS])[:, None] - BIAS
    y.value = np.repeat([1.0, 0.0], len(LOGITS))
    a = identity_layer(module, x, 1)
    s = module.Sigmoid(a)
    return module.BCELoss(s, y), dict(a=a, s=s)


def ce_graph(module):
    """Each row with each label: Affine -> Softmax -> CrossEntropyLoss (fused in the plan)."""
    x, y = module.Input(), module.Input()
    x.value = np.repeat(ROWS, 4, axis=0) - BIAS
    y.value = np.tile(np.arange(4), len(ROWS))
    a = identity_layer(module, x, 4)
    p = module.Softmax(a)
    return module.CrossEntropyLoss(p, y), dict(a=a, p=p)


def hidden_graph(module):
    """The logits into a hidden Sigmoid, read by a layer: its own backward pass in the plan, not fused."""
    np.random.seed(3)
    x, y = module.Input(), module.Input()
    x.value = np.tile(LOGITS, (5, 1)) - BIAS
    y.value = np.arange(5) % 3
    a = identity_layer(module, x, len(LOGITS))
    h = module.Sigmoid(a)
    L = module.CrossEntropyLoss(module.Softmax(module.Affine(module.AffineParams(len(LOGITS), 3), h)), y)
    return L, dict(a=a, h=h)


def run(build, module, planned=False):
    """Build the graph, run Forward (twice: planned) and Backward; every value and gradient, and the loss's."""
    L, nodes = build(module)
    module.Forward()
    if planned:
        module.Forward()
        assert edf.current_graph()._planned, "the second Forward did not run the plan"
    module.Backward(L)
    if planned:
        assert edf.current_graph()._planned, "Backward left the plan"
    out = {name: (np.array(n.value), np.array(n.grad)) for name, n in nodes.items()}
    out["L"] = (np.array(L.value), None)
    return out


def run_both(build, backend, planned):
    edf.set_backend(backend)
    ours, theirs = run(build, edf, planned), run(build, lecture)
    for name, (value, grad) in theirs.items():
        np.testing.assert_allclose(ours[name][0], value, rtol=NEAR_ONE if name == "L" else VALUES, atol=0,
                                   err_msg=f"{name}.value, the lecture's")
        if grad is not None:
            np.testing.assert_allclose(ours[name][1], grad, rtol=NEAR_ONE, atol=0,
                                       err_msg=f"{name}.grad, the lecture's")
    return ours


@RUNS
def test_sigmoid_and_bce_beyond_the_clip(backend, planned):
    out = run_both(bce_graph, backend, planned)
    n = 2 * len(LOGITS)
    s = sigmoid(np.concatenate([CLIPPED, CLIPPED]))
    y = np.repeat([1.0, 0.0], len(LOGITS))
    np.testing.assert_allclose(out["s"][0][:, 0], s, rtol=VALUES, atol=0)
    beyond = np.abs(np.concatenate([LOGITS, LOGITS])) >= 10
    # sigmoid(30) is sigmoid(10): 1 / (1 + exp(-10)), and sigmoid(-30) is exp(-10) / (1 + exp(-10)).
    np.testing.assert_allclose(out["s"][0][beyond, 0], np.where(np.concatenate([LOGITS, LOGITS])[beyond] > 0,
                                                                1 / (1 + E), E / (1 + E)), rtol=VALUES, atol=0)
    # The loss of a logit beyond the clip is that of +-10: log(1 + e) when the label agrees, 10 + log(1 + e) not.
    agrees = (np.concatenate([LOGITS, LOGITS]) > 0) == (y == 1)
    np.testing.assert_allclose(out["L"][0][beyond], np.where(agrees[beyond], np.log1p(E), 10 + np.log1p(E)),
                               rtol=NEAR_ONE, atol=0)
    np.testing.assert_allclose(out["L"][0], np.where(y == 1, -np.log(s), -np.log1p(-s)), rtol=NEAR_ONE, atol=0)
    # The lecture's gradients: its Sigmoid does not know it clipped, so they are those at +-10, not 0.
    np.testing.assert_allclose(out["s"][1][:, 0], (s - y) / (s * (1 - s)) / n, rtol=NEAR_ONE, atol=0)
    np.testing.assert_allclose(out["a"][1][:, 0], (s - y) / n, rtol=NEAR_ONE, atol=0)


@RUNS
def test_softmax_and_cross_entropy_below_the_floor(backend, planned):
    out = run_both(ce_graph, backend, planned)
    n = 4 * len(ROWS)
    p = np.repeat(np.exp(FLOORED) / np.exp(FLOORED).sum(axis=1, keepdims=True), 4, axis=0)
    labels = np.tile(np.arange(4), len(ROWS))
    rows = np.arange(n)
    np.testing.assert_allclose(out["p"][0], p, rtol=VALUES, atol=0)
    # A class 30 or 50 below the row's best is worth exp(-10) of it, as one exactly 10 below.
    first = out["p"][0][0]
    np.testing.assert_allclose(first, np.array([1, E, E, np.exp(-9.5)]) / (1 + 2 * E + np.exp(-9.5)),
                               rtol=VALUES, atol=0)
    np.testing.assert_allclose(out["L"][0][1], 10 + np.log(1 + 2 * E + np.exp(-9.5)), rtol=NEAR_ONE, atol=0)
    np.testing.assert_allclose(out["L"][0], -np.log(p[rows, labels]), rtol=NEAR_ONE, atol=0)
    onehot = np.eye(4)[labels]
    np.testing.assert_allclose(out["p"][1], -onehot / np.where(onehot, p, 1) / n, rtol=NEAR_ONE, atol=0)
    # Below the floor the lecture's gradient is still p - onehot, as if nothing were floored.
    np.testing.assert_allclose(out["a"][1], (p - onehot) / n, rtol=NEAR_ONE, atol=0)


@RUNS
def test_a_hidden_sigmoid_beyond_the_clip(backend, planned):
    out = run_both(hidden_graph, backend, planned)
    s = sigmoid(np.tile(CLIPPED, (5, 1)))
    np.testing.assert_allclose(out["h"][0], s, rtol=VALUES, atol=0)
    # Its local gradient s (1 - s), at +-10 where clipped: exp(-10) / (1 + exp(-10))^2, not 0.
    local = out["a"][1] / out["h"][1]
    np.testing.assert_allclose(local, s * (1 - s), rtol=NEAR_ONE, atol=0)
    np.testing.assert_allclose(local[:, np.abs(LOGITS) >= 10], E / (1 + E) ** 2, rtol=NEAR_ONE, atol=0)
