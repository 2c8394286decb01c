"""Whole graphs: the compiled engine against the reference, and backprop against finite differences."""
import numpy as np
import pytest
from hypothesis import given

import cedf as edf
from helpers import assert_close, both_backends, mean_loss, mlps, numeric_grad, random_mlp, rtol_for, snapshot


@given(spec=mlps(user_node=True))
def test_random_graphs_agree_with_reference(spec):
    """Values and gradients of every node after three training steps, on both backends."""
    edf.clear_compgraph()
    L, _ = random_mlp(**spec)
    edf.learning_rate = 0.1
    start = [p.value.copy() for p in edf.Parameters]

    def train():
        for p, v in zip(edf.Parameters, start):
            p.value[...] = v
        # A parameter's value carries the rounding of every update so far: learning
        # rate times its gradient's scale, per step (a bias that moved from 0 to 1e-5).
        n, drift = len(edf.Parameters), np.zeros(len(edf.Parameters))
        for _ in range(3):
            edf.Forward()
            edf.Backward(L)
            state = snapshot()
            state[-n:] = [(name, v, g, max(vs, d), gs) for (name, v, g, vs, gs), d in zip(state[-n:], drift)]
            drift += [edf.learning_rate * gs for *_, gs in state[-n:]]
            edf.UpdateParameters()
        return state + [(f"updated Parameter#{i}", p.value.copy(), None, d, 0.0)
                        for i, (p, d) in enumerate(zip(edf.Parameters, drift))]

    ref, comp = both_backends(train)
    # Three steps let float32 rounding differences grow a little; one step is held to 1e-5 below.
    rtol = rtol_for(spec["dtype"]) * (10 if spec["dtype"] == np.float32 else 1)
    for (name, rv, rg, value_scale, grad_scale), (_, cv, cg, *_) in zip(ref, comp):
        assert_close(cv, rv, rtol, f"{name}.value", value_scale)
        if rg is not None:
            assert_close(cg, rg, rtol, f"{name}.grad", grad_scale)


@given(spec=mlps(user_node=True))
def test_one_step_agrees_with_reference(spec):
    edf.clear_compgraph()
    L, _ = random_mlp(**spec)

    def step():
        edf.Forward()
        edf.Backward(L)
        return snapshot()

    ref, comp = both_backends(step)
    for (name, rv, rg, value_scale, grad_scale), (_, cv, cg, *_) in zip(ref, comp):
        assert_close(cv, rv, rtol_for(spec["dtype"]), f"{name}.value", value_scale)
        assert_close(cg, rg, rtol_for(spec["dtype"]), f"{name}.grad", grad_scale)


def gradcheck(L, entries_per_parameter=12, seed=0):
    """Worst error between backprop and central differences, relative to each parameter's largest gradient.

    Scaled per parameter, not per entry: the difference quotient carries an
    absolute rounding error (about 1e-10 here) that would swamp tiny entries.
    """
    edf.Forward()
    edf.Backward(L)
    analytic = [p.grad.copy() for p in edf.Parameters]
    rng = np.random.default_rng(seed)
    worst = 0.0
    for p, grad in zip(edf.Parameters, analytic):
        flat = rng.choice(p.value.size, min(entries_per_parameter, p.value.size), replace=False)
        indices = [np.unravel_index(i, p.value.shape) for i in flat]
        numeric = np.array([numeric_grad(L, p, index) for index in indices])
        backprop = np.array([grad[index] for index in indices])
        scale = max(np.max(np.abs(backprop)), np.max(np.abs(numeric)), 1e-7)
        worst = max(worst, np.max(np.abs(numeric - backprop)) / scale)
    return worst


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@pytest.mark.parametrize("loss", ["ce", "bce"])
@pytest.mark.parametrize("seed", range(6))
def test_gradients_match_finite_differences(backend, loss, seed):
    """Every node's backward, the input's gradient and a user's NumPy nodes in the middle included."""
    edf.set_backend(backend)
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(2, 5))
    widths = [int(w) for w in rng.integers(2, 9, depth + 1)]
    L, x = random_mlp(seed, np.float64, depth, widths, batch=int(rng.integers(1, 20)), loss=loss,
                      user_node=bool(seed % 2), x_param=True)
    assert x in edf.Parameters  # so gradcheck covers dL/dx, the first Affine's input gradient
    assert gradcheck(L) < 1e-5


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_gradcheck_catches_a_wrong_gradient(backend):
    """The check above can fail: a node with a deliberately wrong backward is caught."""
    edf.set_backend(backend)

    class WrongSquare(edf.CompNode):
        def __init__(self, x):
            edf.CompNodes.append(self)
            self.x = x

        def forward(self):
            self.value = self.x.value ** 2

        def backward(self):
            self.x.addgrad(self.grad * 3 * self.x.value)  # should be 2 x

    edf.DT = np.float64
    x = edf.Input()
    x.value = np.random.default_rng(0).standard_normal((5, 3))
    y = edf.Input()
    y.value = np.array([0, 1, 2, 1, 0])
    L = edf.CrossEntropyLoss(edf.Softmax(WrongSquare(edf.Affine(edf.AffineParams(3, 3), x))), y)
    assert gradcheck(L) > 1e-2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_size_can_change_between_steps(dtype):
    L, x = random_mlp(3, dtype, 3, [5, 7, 6, 4], batch=10, loss="ce")
    y = L.y

    def run():
        out = []
        for batch in (10, 3, 17, 1, 10):
            rng = np.random.default_rng(batch)
            x.value = rng.standard_normal((batch, 5))
            y.value = rng.integers(0, 4, batch)
            out.append(mean_loss(L))
            edf.Backward(L)
            out.extend(p.grad.copy() for p in edf.Parameters)
        return out

    ref, comp = both_backends(run)
    for r, c in zip(ref, comp):
        assert_close(np.asarray(c), np.asarray(r), rtol_for(dtype))
