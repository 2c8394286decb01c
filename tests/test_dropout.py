"""Dropout: the mask bit for bit in C and NumPy, its statistics, its gradient in closed form, modes,
the compiled plan against the node-by-node path, reproducibility, bad input."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cedf as edf
from cedf import _kernels, plan, reference


@pytest.fixture(autouse=True)
def training_mode():
    """Each test starts and ends in training mode (clearing a graph keeps its mode)."""
    edf.train()
    yield
    edf.train()


def data(seed, shape, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@given(n=st.integers(0, 300), dtype=st.sampled_from([np.float32, np.float64]),
       p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 0.999]), seed=st.integers(0, 2**64 - 1), step=st.integers(0, 2**64 - 2))
def test_compiled_and_reference_drop_the_same_elements_bit_for_bit(n, dtype, p, seed, step):
    x = data(n, n, dtype)
    threshold, scale = int(p * 2**53), 1 / (1 - p)
    results = []
    for module in (reference, _kernels):
        state, mask, out = np.array([seed, step], np.uint64), np.empty(n, np.uint8), np.empty(n, dtype)
        module.dropout_forward(x, state, threshold, scale, mask, out)
        assert state.tolist() == [seed, step + 1]
        g, gx = data(n + 1, n, dtype), data(n + 2, n, dtype)
        module.dropout_backward(g, mask, scale, gx)
        results.append((mask, out, gx))
    for ref, comp in zip(*results):
        np.testing.assert_array_equal(comp, ref)
    mask, out, gx = results[1]
    np.testing.assert_array_equal(out, np.where(mask == 1, (x.astype(np.float64) * scale).astype(dtype), 0))


def test_the_bits_are_splitmix64():
    """Known outputs of splitmix64 seeded with 0 (the C reference implementation's): the key of step 0,
    then its stream."""
    key = reference._splitmix64(np.array([0], np.uint64) + reference._GOLDEN)
    assert int(key[0]) == 0xE220A8397B1DCDAF
    with np.errstate(over="ignore"):
        stream = reference._splitmix64(np.array([2], np.uint64) * reference._GOLDEN)
    assert int(stream[0]) == 0x6E789E6AA1B965F4


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_the_fraction_kept_is_one_minus_p_within_a_binomial_bound(p):
    n, steps = 200_000, 3
    x = np.ones(n)
    state = np.array([12345, 0], np.uint64)
    mask, out = np.empty(n, np.uint8), np.empty(n)
    for _ in range(steps):
        _kernels.dropout_forward(x, state, int(p * 2**53), 1 / (1 - p), mask, out)
        kept = mask.mean()
        # Six standard deviations of a binomial fraction: a wrong threshold (p vs 1 - p, a bit lost) is far outside.
        assert abs(kept - (1 - p)) < 6 * np.sqrt(p * (1 - p) / n), kept
        # Inverted dropout keeps the mean.
        assert abs(out.mean() - 1) < 6 * np.sqrt(p / (1 - p) / n)
    # Steps draw different masks, and neighbours are not correlated.
    first = mask.copy()
    _kernels.dropout_forward(x, state, int(p * 2**53), 1 / (1 - p), mask, out)
    assert 0 < np.mean(first != mask)
    a, b = mask[:-1].astype(float), mask[1:].astype(float)
    assert abs(np.corrcoef(a, b)[0, 1]) < 6 / np.sqrt(n)


def network(p=0.5, seed=0, dtype=np.float64):
    edf.DT = dtype
    np.random.seed(seed)
    g = edf.Graph()
    with g:
        x, y = edf.Input(), edf.Input()
        x.value = data(seed, (16, 6))
        y.value = np.arange(16) % 3
        h = edf.Tanh(edf.Affine(edf.AffineParams(6, 20), x))
        d = edf.Dropout(h, p=p)
        loss = edf.SoftmaxCrossEntropyLoss(edf.Affine(edf.AffineParams(20, 3), d), y)
    return g, x, d, loss


def test_evaluation_mode_is_the_identity_and_training_scales_the_kept():
    edf.set_backend("cython")
    g, x, d, loss = network(p=0.25)
    with g:
        for _ in range(3):
            g.Forward()
            h = d.x.value
            kept = d.value != 0
            assert 0 < kept.mean() < 1
            np.testing.assert_array_equal(d.value[kept], h[kept] * (1 / 0.75))   # x times the scale, rounded once
        edf.eval()
        g.Forward()
        np.testing.assert_array_equal(d.value, d.x.value)
        assert g._planned


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("planned", [True, False])
def test_the_gradient_is_the_mask_times_g_over_one_minus_p(mode, planned, monkeypatch):
    """Closed form: d out / d x is 1 / (1 - p) where kept, 0 where dropped (1 everywhere in evaluation)."""
    edf.set_backend("cython")
    if not planned:
        monkeypatch.setattr(plan, "build", lambda graph: None)
    g, x, d, loss = network(p=0.4)
    with g:
        getattr(edf, mode)()
        for _ in range(2):
            g.Forward()
        g.Backward(loss)
        assert g._planned == planned
        kept = d.value != 0 if mode == "train" else np.ones(d.value.shape, bool)
        scale = 1 / 0.6 if mode == "train" else 1.0
        # The Tanh's gradient is what the Dropout sent it: reconstruct it from the Dropout's own.
        np.testing.assert_allclose(d.x.grad, np.where(kept, d.grad * scale, 0), rtol=1e-15, atol=0)


def train(g, x, loss, steps):
    opt = edf.optim.Adam(g.Parameters, lr=0.05)
    out = []
    for step in range(steps):
        x.value = data(50 + step, x.value.shape)
        g.Forward()
        g.Backward(loss)
        opt.step()
        out.append(np.array(loss.value))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_plan_draws_the_masks_the_nodes_draw(dtype, monkeypatch):
    edf.set_backend("cython")
    g1, x1, d1, loss1 = network(dtype=dtype)
    planned = train(g1, x1, loss1, 6)
    assert g1._planned
    with monkeypatch.context() as m:
        m.setattr(plan, "build", lambda graph: None)
        g2, x2, d2, loss2 = network(dtype=dtype)
        nodes = train(g2, x2, loss2, 6)
        assert not g2._planned
    for a, b in zip(planned, nodes):
        np.testing.assert_array_equal(a, b)
    for p, q in zip(g1.Parameters, g2.Parameters):
        np.testing.assert_array_equal(p.value, q.value)
    assert d1._state.tolist() == d2._state.tolist() == [d1._state[0], 6]


def test_a_seeded_run_is_reproduced_and_another_seed_differs():
    edf.set_backend("cython")
    runs = []
    for seed in (3, 3, 4):
        g, x, d, loss = network(seed=seed)
        x.value = data(0, (16, 6))   # the same data: only the seed differs
        with g:
            g.Forward()
            g.Forward()
            runs.append(d.value != 0)
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_the_counter_advances_only_in_training():
    edf.set_backend("cython")
    g, x, d, loss = network()
    with g:
        g.Forward()
        g.Forward()
        edf.eval()
        g.Forward()
        edf.train()
        g.Forward()
        assert g._planned
    assert int(d._state[1]) == 3


def test_predict_runs_in_evaluation_mode_and_restores_training():
    edf.set_backend("cython")
    g, x, d, loss = network()
    with g:
        g.Forward()
        X = data(7, (5, 6))
        got = edf.predict(d, x, X)
        assert g.training
        np.testing.assert_allclose(got, np.tanh(X @ d.x.x.params.A.value + d.x.x.params.b.value), rtol=1e-13)
        step = int(d._state[1])
        g.Forward()
        assert int(d._state[1]) == step + 1
        assert (d.value == 0).any()


@pytest.mark.parametrize("p", [1, 1.0, -0.1, float("nan"), "0.5", True])
def test_p_outside_zero_one_is_refused(p):
    with pytest.raises(ValueError, match=r"Dropout: p is the probability of zeroing a value and must be in \[0, 1\)"):
        edf.Dropout(edf.Input(), p=p)
    d = edf.Dropout(edf.Input(), p=0.3)
    with pytest.raises(ValueError, match=r"Dropout: p .* must be in \[0, 1\)"):
        d.p = p
    assert d.p == 0.3


def test_p_zero_keeps_everything():
    x = edf.Input()
    x.value = data(1, (50, 4))
    d = edf.Dropout(x, p=0)
    edf.Forward()
    np.testing.assert_array_equal(d.value, x.value)
