"""The compiled kernels against the NumPy reference, kernel by kernel.

Hypothesis draws the shapes (empty ones included) and the data; each kernel runs
on copies of the same buffers under both implementations, and outputs and
accumulated gradients must agree to 1e-12 (float64) or 1e-5 (float32).
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cedf import _kernels, reference
from helpers import assert_close, rtol_for

DTYPES = st.sampled_from([np.float32, np.float64])
SIZES = st.integers(0, 40)


def both(name, *arrays, outputs):
    """Run kernel `name` of each backend on its own copies of `arrays`; return the copies at `outputs`."""
    results = []
    for module in (reference, _kernels):
        args = [a.copy() if isinstance(a, np.ndarray) else a for a in arrays]   # scalars pass as they are
        getattr(module, name)(*args)
        results.append([args[i] for i in outputs])
    return results


def check(name, arrays, outputs, dtype):
    ref, comp = both(name, *arrays, outputs=outputs)
    for i, (r, c) in enumerate(zip(ref, comp)):
        assert_close(c, r, rtol_for(dtype), f"{name} output {outputs[i]}")


def data(seed, shape, dtype, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def probabilities(seed, shape, dtype):
    """Rows that sum to one and stay away from 0, like a Softmax output."""
    e = np.exp(data(seed, shape, np.float64))
    return (e / e.sum(axis=-1, keepdims=True)).astype(dtype)


@given(B=SIZES, n_in=SIZES, n_out=SIZES, dtype=DTYPES, seed=st.integers(0, 2**32 - 1))
def test_affine(B, n_in, n_out, dtype, seed):
    x, A, b = data(seed, (B, n_in), dtype), data(seed + 1, (n_in, n_out), dtype), data(seed + 2, n_out, dtype)
    check("affine_forward", [x, A, b, data(seed + 3, (B, n_out), dtype)], [3], dtype)
    g = data(seed + 4, (B, n_out), dtype)
    grads = [data(seed + 5, (B, n_in), dtype), data(seed + 6, (n_in, n_out), dtype), data(seed + 7, n_out, dtype)]
    check("affine_backward", [x, A, g, *grads], [3, 4, 5], dtype)


@given(B=SIZES, n_in=SIZES, n_out=SIZES, dtype=DTYPES, skip=st.sampled_from([3, 4, 5]))
def test_affine_backward_skips_gradients_given_as_none(B, n_in, n_out, dtype, skip):
    arrays = [data(1, (B, n_in), dtype), data(2, (n_in, n_out), dtype), data(3, (B, n_out), dtype),
              data(4, (B, n_in), dtype), data(5, (n_in, n_out), dtype), data(6, n_out, dtype)]
    arrays[skip] = None
    check("affine_backward", arrays, [i for i in (3, 4, 5) if i != skip], dtype)


@given(n=st.integers(0, 300), dtype=DTYPES, scale=st.sampled_from([0.1, 3.0, 30.0]), seed=st.integers(0, 1000))
def test_sigmoid(n, dtype, scale, seed):
    # scale 30 puts most inputs beyond the clip at +-10.
    x = data(seed, n, dtype, scale)
    check("sigmoid_forward", [x, np.empty(n, dtype)], [1], dtype)
    s = 1 / (1 + np.exp(-np.clip(x, -10, 10)))
    check("sigmoid_backward", [s, data(seed + 1, n, dtype), data(seed + 2, n, dtype)], [2], dtype)


@given(B=SIZES, C=st.integers(1, 40), dtype=DTYPES, scale=st.sampled_from([0.1, 3.0, 30.0]), seed=st.integers(0, 1000))
def test_softmax(B, C, dtype, scale, seed):
    # scale 30 makes the floor at -10 bite.
    x = data(seed, (B, C), dtype, scale)
    check("softmax_forward", [x, np.empty((B, C), dtype)], [1], dtype)
    p = probabilities(seed, (B, C), dtype)
    check("softmax_backward", [p, data(seed + 1, (B, C), dtype), data(seed + 2, (B, C), dtype)], [2], dtype)


@given(B=SIZES, C=st.integers(1, 40), dtype=DTYPES, seed=st.integers(0, 1000))
def test_cross_entropy(B, C, dtype, seed):
    p = probabilities(seed, (B, C), dtype)
    labels = np.random.default_rng(seed).integers(0, C, B)
    check("cross_entropy_forward", [p, labels, np.empty(B, dtype)], [2], dtype)
    check("cross_entropy_backward", [p, labels, data(seed + 1, B, dtype), data(seed + 2, (B, C), dtype)],
          [3], dtype)


@given(n=st.integers(0, 300), dtype=DTYPES, seed=st.integers(0, 1000))
def test_bce(n, dtype, seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(1e-4, 1 - 1e-4, n).astype(dtype)
    y = rng.integers(0, 2, n).astype(dtype)
    check("bce_forward", [p, y, np.empty(n, dtype)], [2], dtype)
    check("bce_backward", [p, y, data(seed + 1, n, dtype), data(seed + 2, n, dtype)], [3], dtype)


@given(n=st.integers(0, 300), dtype=DTYPES, scale=st.sampled_from([0.1, 3.0, 30.0]), seed=st.integers(0, 1000))
def test_tanh(n, dtype, scale, seed):
    x = data(seed, n, dtype, scale)
    check("tanh_forward", [x, np.empty(n, dtype)], [1], dtype)
    t = np.tanh(x)
    check("tanh_backward", [t, data(seed + 1, n, dtype), data(seed + 2, n, dtype)], [2], dtype)


# tanh is computed in the buffer's precision (csrc/pointwise.h), not rounded from
# double: held to a few ulp of the exact value, which the normwise 1e-5 of float32
# above would not notice. The exact value is a long double's where that is wider
# than double (x86-64 Linux); elsewhere float64 is compared with libm's own tanh,
# itself within about 2 ulp.
EXTENDED = np.finfo(np.longdouble).nmant > np.finfo(np.float64).nmant
TANH_ULPS = 2.0


def tanh_inputs(dtype):
    """A dense sweep of [-20, 20], magnitudes from the least subnormal to the largest
    float, and the neighbourhoods of the kernel's switches (0.625, the clip at 20) and
    of the points where tanh rounds to 1 (9.0 in float32, 19.1 in float64)."""
    f = np.finfo(dtype)
    rng = np.random.default_rng(14)
    wide = np.exp2(rng.uniform(np.log2(float(f.smallest_subnormal)), np.log2(float(f.max)), 100_000))
    parts = [np.linspace(-20, 20, 400_001), rng.uniform(-20, 20, 200_000), rng.uniform(-1, 1, 100_000),
             wide * rng.choice([-1, 1], wide.size)]
    parts = [p.astype(dtype) for p in parts]
    for c in (0.625, 20, 19.06, 9.01, 1, 0.5, 0.25):
        c = dtype(c)
        parts.append(c + np.arange(-200, 201).astype(dtype) * np.spacing(c))
    x = np.concatenate(parts)
    return np.concatenate([x, -x])


def ulp_error(y, x, dtype):
    """|y - tanh(x)| in ulps of tanh(x) in `dtype`, the exact value in the widest float here."""
    wide = np.longdouble if EXTENDED else np.float64   # float64 is exact enough for float32's ulps
    exact = np.tanh(x.astype(wide))
    _, e = np.frexp(exact)
    f = np.finfo(dtype)
    ulp = np.ldexp(wide(1), np.maximum(e - 1, f.minexp) - f.nmant)
    return np.abs(y.astype(wide) - exact) / ulp


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_is_within_two_ulp(dtype):
    x = tanh_inputs(dtype)
    y = np.empty_like(x)
    _kernels.tanh_forward(x, y)
    worst = float(np.max(ulp_error(y, x, dtype)))
    # Measured 1.46 ulp (float32, every float) and 1.53 (float64, 2.6e6 points).
    bound = TANH_ULPS if EXTENDED or dtype == np.float32 else TANH_ULPS + 2
    assert worst <= bound, f"tanh {np.dtype(dtype).name}: {worst:.2f} ulp from the exact value"
    assert np.array_equal(y[: x.size // 2], -y[x.size // 2:]), "tanh is odd"
    # Below 2^-13 (float32) or 2^-27 (float64) tanh x rounds to x itself, subnormals included.
    tiny = np.abs(x) < np.ldexp(1.0, -13 if dtype == np.float32 else -27)
    assert np.array_equal(y[tiny], x[tiny])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("alone", [False, True], ids=["together", "one by one"])
def test_tanh_special_values(dtype, alone):
    # "one by one" runs each value through the loop's scalar remainder, not its vector body.
    f = np.finfo(dtype)
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, f.max, -f.max, f.smallest_subnormal,
                  -f.smallest_subnormal, f.tiny, -f.tiny, 20, -20, 1e4, -1e4, 10, -10, 0.625, -0.625], dtype)
    y = np.empty_like(x)
    if alone:
        for i in range(x.size):
            _kernels.tanh_forward(x[i:i + 1], y[i:i + 1])
    else:
        _kernels.tanh_forward(x, y)
    expected = np.tanh(x.astype(np.float64)).astype(dtype)
    assert np.array_equal(np.signbit(y), np.signbit(x)), "tanh keeps the sign, of zeros and NaNs too"
    nan = np.isnan(x)
    assert np.isnan(y[nan]).all()
    assert np.array_equal(y[~nan][:-2], expected[~nan][:-2]), (x, y)   # all but +-0.625: exactly the rounded tanh
    assert float(np.max(ulp_error(y[-2:], x[-2:], dtype))) <= TANH_ULPS


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_gradient_near_saturation_keeps_its_digits(dtype):
    # 1 - t^2 for t close to +-1 cancels: it is computed as (1 - t)(1 + t), each
    # factor exact or rounded once, so the local gradient stays within 2 eps of its
    # exact value at the rounded t (1 - t * t in double lost digits there).
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-19, 19, 20_000), np.linspace(-8, 8, 1001)])
    t = np.tanh(x).astype(dtype)
    t = t[np.abs(t) < 1]
    g = rng.uniform(0.5, 2, t.size).astype(dtype)
    gx = np.zeros_like(t)
    _kernels.tanh_backward(t, g, gx)
    wide = np.longdouble if EXTENDED else np.float64
    tw = t.astype(wide)
    exact = g.astype(wide) * ((1 - tw) * (1 + tw))   # to 2^-63 in a long double
    rel = np.abs(gx.astype(wide) - exact) / exact
    bound = 2 if EXTENDED or dtype == np.float32 else 4
    assert float(np.max(rel)) <= bound * np.finfo(dtype).eps


def ulps(y, exact, dtype):
    """|y - exact| in ulps of `exact` in `dtype` (a subnormal's ulp is the least subnormal)."""
    wide = exact.dtype.type
    _, e = np.frexp(exact)
    f = np.finfo(dtype)
    return np.abs(y.astype(wide) - exact) / np.ldexp(wide(1), np.maximum(e - 1, f.minexp) - f.nmant)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_logits_over_the_whole_range_of_exp(dtype):
    # Rows (0, s): the shifted logit s sweeps down past where exp(s) leaves the normal
    # numbers (-87 in float32, -708 in float64) and rounds to 0 (-104, -745), where
    # the kernel's own exp (csrc/pointwise.h) has to keep rounding as libm's does.
    # Against the exact softmax and loss of a long double (double elsewhere).
    wide = np.longdouble if EXTENDED else np.float64
    bottom = -110 if dtype == np.float32 else -760
    s = np.concatenate([np.linspace(bottom, 0, 200_001), [-0.0, -np.inf]]).astype(dtype)
    z = np.stack([np.zeros_like(s), s], axis=1)
    p, out = np.empty_like(z), np.empty(len(s), dtype)
    _kernels.cross_entropy_logits_forward(z, np.ones(len(s), np.int64), p, out)
    e = np.exp(s.astype(wide))
    bound = 2 if dtype == np.float32 else 3 if EXTENDED else 4   # measured 1.44 (float32) and 2.14 ulp
    for got, exact, what in ((p[:, 1], e / (1 + e), "p of the lower logit"), (p[:, 0], 1 / (1 + e), "p of the max"),
                             (out[:-1], np.log1p(e[:-1]) - s[:-1].astype(wide), "loss")):
        worst = ulps(got, exact, dtype)
        assert float(np.max(worst)) <= bound, f"{what}: {float(np.max(worst)):.2f} ulp at s = {s[np.argmax(worst)]}"
    underflow = e < wide(float(np.finfo(dtype).smallest_subnormal)) / 2
    assert underflow.sum() > 1000 and np.all(p[underflow, 1] == 0), "exp rounds to 0 where it underflows"
    assert np.isinf(out[-1]) and out[-1] > 0, "a label whose logit is -inf costs +inf"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_logits_special_values(dtype):
    z = np.array([[0, -np.inf, 1], [np.nan, 0, 1], [1, np.nan, 0], [np.inf, 0, 1], [-np.inf, -np.inf, 0],
                  [1e30, -1e30, 0]], dtype)
    labels = np.array([0, 1, 2, 1, 2, 0])
    with np.errstate(all="ignore"):
        (p_ref, out_ref), (p, out) = both("cross_entropy_logits_forward", z, labels, np.empty_like(z),
                                          np.empty(len(z), dtype), outputs=[2, 3])
    assert np.array_equal(np.isnan(p), np.isnan(p_ref)) and np.array_equal(np.isnan(out), np.isnan(out_ref))
    assert_close(p, p_ref, rtol_for(dtype), "p")
    assert_close(out, out_ref, rtol_for(dtype), "loss")


@given(n=st.integers(0, 300), dtype=DTYPES, slope=st.sampled_from([0.0, 0.01, 0.2, -0.5]), seed=st.integers(0, 1000))
def test_leaky_relu(n, dtype, slope, seed):
    x = data(seed, n, dtype)
    x[: n // 10] = 0   # the kink itself
    check("leaky_relu_forward", [x, np.empty(n, dtype), slope], [1], dtype)
    check("leaky_relu_backward", [x, data(seed + 1, n, dtype), data(seed + 2, n, dtype), slope], [2], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_in_its_own_precision_is_the_double_rounded_once_bit_for_bit(dtype):
    # The plain ReLU's loops skip the conversions to double (csrc/pointwise.h); every
    # special value against the rule computed in double and rounded once, bit for bit
    # (signs of zeros, and NaNs from infinite gradients, included).
    f = np.finfo(dtype)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, f.max, -f.max, f.tiny, -f.tiny,
                        f.smallest_subnormal, -f.smallest_subnormal, 1.0, -1.0], dtype)
    rng = np.random.default_rng(3)
    x, g, gx = (np.concatenate([np.repeat(special, special.size), np.tile(special, special.size),
                                rng.standard_normal(999).astype(dtype)])[order].copy()
                for order in (slice(None), slice(None, None, -1), rng.permutation(2 * special.size ** 2 + 999)))
    bits = np.uint32 if dtype == np.float32 else np.uint64
    out = np.empty_like(x)
    _kernels.leaky_relu_forward(x, out, 0.0)
    np.testing.assert_array_equal(out.view(bits), np.where(x < 0, dtype(0), x).view(bits))
    # (The kernel accumulates, as a node's backward does; the plan's loop that writes
    # instead differs only by the start, 0 in place of gx.)
    got = gx.copy()
    with np.errstate(invalid="ignore", over="ignore"):
        _kernels.leaky_relu_backward(x, g, got, 0.0)
        expected = (gx.astype(np.float64) + g.astype(np.float64) * np.where(x > 0, 1.0, 0.0)).astype(dtype)
    nan = np.isnan(expected)   # (a NaN's sign is the arithmetic's choice, not the rule's)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(bits), expected[~nan].view(bits))


@given(n=st.integers(0, 300), dtype=DTYPES, seed=st.integers(0, 1000), skip=st.sampled_from([None, 1, 2]))
def test_add(n, dtype, seed, skip):
    x, y = data(seed, n, dtype), data(seed + 1, n, dtype)
    check("add_forward", [x, y, np.empty(n, dtype)], [2], dtype)
    grads = [data(seed + 2, n, dtype), data(seed + 3, n, dtype)]
    if skip is not None:
        grads[skip - 1] = None
    check("add_backward", [data(seed + 4, n, dtype), *grads], [i for i in (1, 2) if i != skip], dtype)


@given(B=SIZES, C=st.integers(1, 40), dtype=DTYPES, scale=st.sampled_from([0.1, 3.0, 300.0]), seed=st.integers(0, 1000))
def test_cross_entropy_logits(B, C, dtype, scale, seed):
    z = data(seed, (B, C), dtype, scale)
    labels = np.random.default_rng(seed).integers(0, C, B)
    check("cross_entropy_logits_forward", [z, labels, np.empty((B, C), dtype), np.empty(B, dtype)], [2, 3], dtype)
    p = probabilities(seed, (B, C), dtype)
    check("cross_entropy_logits_backward", [p, labels, data(seed + 1, B, dtype), data(seed + 2, (B, C), dtype)],
          [3], dtype)


@given(n=st.integers(0, 300), dtype=DTYPES, scale=st.sampled_from([0.1, 3.0, 300.0]), soft=st.booleans(),
       seed=st.integers(0, 1000))
def test_bce_logits(n, dtype, scale, soft, seed):
    rng = np.random.default_rng(seed)
    z = data(seed, n, dtype, scale)
    y = (rng.random(n) if soft else rng.integers(0, 2, n)).astype(dtype)
    check("bce_logits_forward", [z, y, np.empty(n, dtype)], [2], dtype)
    check("bce_logits_backward", [z, y, data(seed + 1, n, dtype), data(seed + 2, n, dtype)], [3], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_at_certainty_is_exact(dtype):
    # p = 1 with y = 1 and p = 0 with y = 0 cost nothing; the opposite costs infinity, never NaN.
    p = np.array([1, 0, 0, 1], dtype)
    y = np.array([1, 0, 1, 0], dtype)
    for module in (reference, _kernels):
        out = np.empty(4, dtype)
        with np.errstate(divide="ignore"):
            module.bce_forward(p, y, out)
        assert out.tolist() == [0, 0, np.inf, np.inf]


# The compiled kernels check what their unchecked loops rely on, even when
# called directly, bypassing the nodes.

def test_kernels_reject_mismatched_shapes():
    f = np.float64
    with pytest.raises(ValueError, match=r"affine_forward: A has shape \(3, 2\), expected \(4, 2\)"):
        _kernels.affine_forward(np.ones((5, 4)), np.ones((3, 2)), np.ones(2), np.empty((5, 2)))
    with pytest.raises(ValueError, match="affine_forward: out has shape"):
        _kernels.affine_forward(np.ones((5, 4)), np.ones((4, 2)), np.ones(2), np.empty((4, 2)))
    with pytest.raises(ValueError, match="affine_backward: gx has shape"):
        _kernels.affine_backward(np.ones((5, 4)), np.ones((4, 2)), np.ones((5, 2)), np.ones((5, 3)), None, None)
    with pytest.raises(ValueError, match="sigmoid_forward: out has shape"):
        _kernels.sigmoid_forward(np.ones(5, f), np.empty(4, f))
    with pytest.raises(ValueError, match="softmax_backward: gx has shape"):
        _kernels.softmax_backward(np.ones((2, 3)), np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="bce_forward: y has shape"):
        _kernels.bce_forward(np.ones(3), np.ones(2), np.empty(3))


@pytest.mark.parametrize("kernel", ["cross_entropy_forward", "cross_entropy_backward"])
@pytest.mark.parametrize("label", [-1, 3, 2**62])
def test_kernels_reject_labels_out_of_range(kernel, label):
    p = np.full((2, 3), 1 / 3)
    labels = np.array([0, label], np.int64)
    args = [p, labels, np.empty(2)] if kernel.endswith("forward") else [p, labels, np.ones(2), np.zeros((2, 3))]
    with pytest.raises(ValueError, match=rf"{kernel}: label {label} at row 1 is outside \[0, 3\)"):
        getattr(_kernels, kernel)(*args)


def test_kernels_reject_wrong_dtype_and_layout():
    with pytest.raises((ValueError, TypeError)):
        _kernels.sigmoid_forward(np.ones(4, np.float32), np.empty(4, np.float64))
    with pytest.raises((ValueError, TypeError)):
        _kernels.affine_forward(np.ones((4, 3)).T, np.ones((4, 2)), np.ones(2), np.empty((3, 2)))
    with pytest.raises((ValueError, TypeError)):
        _kernels.sigmoid_forward(np.ones(4, np.int64), np.empty(4, np.int64))
