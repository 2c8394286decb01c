"""cedf.optim: SGD and Adam (compiled against reference, against PyTorch's rules), and full-batch minimize."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cedf as edf
from cedf import _kernels, reference
from helpers import adam_by_hand, assert_close, lecture_training, rtol_for

FLOATS = pytest.mark.parametrize("dtype", [np.float32, np.float64])


# -- the update kernels: compiled against the reference --------------------------------

def _adam_on_both(value, grad, m, v, eps, weight_decay, step):
    """One Adam update (lr 1e-3, betas 0.9, 0.999) of copies of (value, m, v) by the compiled kernel and
    by the reference: {"comp": [value, m, v], "ref": [...]}."""
    out = {}
    for name, kernels in (("ref", reference), ("comp", _kernels)):
        state = [value.copy(), m.copy(), v.copy()]
        kernels.adam_update(state[0], grad, state[1], state[2], 1e-3, 0.9, 0.999, eps, weight_decay, step)
        out[name] = state
    return out

@given(n=st.integers(0, 300), dtype=st.sampled_from([np.float32, np.float64]),
       momentum=st.sampled_from([0.0, 0.5, 0.9]), nesterov=st.booleans(), first=st.booleans(),
       weight_decay=st.sampled_from([0.0, 1e-2]), seed=st.integers(0, 2**16))
def test_sgd_update_kernel_matches_the_reference(n, dtype, momentum, nesterov, first, weight_decay, seed):
    rng = np.random.default_rng(seed)
    value, grad, buf = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    out = {}
    for name, kernels in (("ref", reference), ("comp", _kernels)):
        v, b = value.copy(), buf.copy() if momentum else None
        kernels.sgd_update(v, grad, b, 0.1, momentum, weight_decay, nesterov and momentum > 0, first)
        out[name] = (v, b)
    assert_close(out["comp"][0], out["ref"][0], rtol_for(dtype), "value", scale=np.max(np.abs(value), initial=0))
    if momentum:
        assert_close(out["comp"][1], out["ref"][1], rtol_for(dtype), "momentum buffer")


@given(n=st.integers(0, 300), dtype=st.sampled_from([np.float32, np.float64]), step=st.integers(1, 50),
       weight_decay=st.sampled_from([0.0, 1e-2]), seed=st.integers(0, 2**16))
def test_adam_update_kernel_matches_the_reference(n, dtype, step, weight_decay, seed):
    rng = np.random.default_rng(seed)
    value, grad, m = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    v = rng.random(n).astype(dtype)
    out = _adam_on_both(value, grad, m, v, 1e-8, weight_decay, step)
    for what, c, r in zip(("value", "m", "v"), out["comp"], out["ref"]):
        assert_close(c, r, rtol_for(dtype), what)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 203, 1000])
def test_adam_update_in_double_is_the_divided_quotient_to_a_few_ulp(n):
    """Where the CPU has AVX-512, the float64 loop multiplies by a refined reciprocal instead of dividing
    (csrc/optim.h): its updates are the divided ones within a few ulp, for every length (a masked tail)
    and divisors over a wide range. From value 0 without weight decay the new value is the update itself."""
    rng = np.random.default_rng(n)
    grad = rng.standard_normal(n) * np.exp(rng.uniform(-20, 20, n))
    m = rng.standard_normal(n)
    v = rng.random(n) * np.exp(rng.uniform(-40, 10, n))
    out = _adam_on_both(np.zeros(n), grad, m, v, 1e-8, 0.0, 3)
    for what, c, r in zip(("value", "m", "v"), out["comp"], out["ref"]):
        np.testing.assert_allclose(c, r, rtol=1e-15, atol=0, err_msg=what)


def test_adam_update_in_double_divides_where_a_reciprocal_would_not_do():
    """eps = 0 with v = 0 (an infinite or NaN quotient), a gradient whose square overflows (v = inf, an
    update of 0), in the first vector of eight and in the tail: as the reference's division gives them."""
    grad = np.array([0.0, 0.0, 1e200, 0.5, 0.0, 0.0, 3.0, 1.0, 1e200, 0.0, 0.0])
    m = np.array([0.0, 1.0, 0.0, 1.0, -1.0, 0.0, 1.0, 1.0, 0.0, 2.0, 0.0])
    v = np.array([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0])
    with np.errstate(all="ignore"):
        out = _adam_on_both(np.ones(len(grad)), grad, m, v, 0.0, 0.0, 1)
    ref = out["ref"][0]
    assert np.isnan(ref).sum() == 3 and np.isinf(ref).sum() == 3 and np.all(ref[[2, 8]] == 1), "the case lost its edges"
    for what, c, r in zip(("value", "m", "v"), out["comp"], out["ref"]):
        np.testing.assert_allclose(c, r, rtol=1e-15, atol=0, err_msg=what)


def test_update_kernels_check_their_buffers():
    v = np.zeros(4)
    with pytest.raises(ValueError, match=r"sgd_update: grad has shape \(3,\), expected \(4,\)"):
        _kernels.sgd_update(v, np.zeros(3), None, 0.1, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match=r"adam_update: v has shape \(5,\), expected \(4,\)"):
        _kernels.adam_update(v, np.zeros(4), np.zeros(4), np.zeros(5), 0.1, 0.9, 0.999, 1e-8, 0.0, 1)
    with pytest.raises(ValueError, match="adam_update: step must be 1 or more"):
        _kernels.adam_update(v, np.zeros(4), np.zeros(4), np.zeros(4), 0.1, 0.9, 0.999, 1e-8, 0.0, 0)


# -- the optimiser objects ---------------------------------------------------------------

def torch_rule_sgd(steps, w, grads, lr, momentum, nesterov, weight_decay):
    """torch.optim.SGD's algorithm as its documentation states it (dampening 0)."""
    buf = None
    for g in grads[:steps]:
        g = g + weight_decay * w
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + g
            g = g + momentum * buf if nesterov else buf
        w = w - lr * g
    return w


def torch_rule_adam(steps, w, grads, lr, b1, b2, eps, weight_decay):
    """torch.optim.Adam's algorithm as its documentation states it (amsgrad off)."""
    m = v = np.zeros_like(w)
    for t, g in enumerate(grads[:steps], start=1):
        g = g + weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return w


def run_optimiser(make, grads, w0, backend):
    """Steps of the optimiser `make(params)` on a Parameter, with the given gradient sequence."""
    edf.set_backend(backend)
    edf.clear_compgraph()
    edf.DT = w0.dtype
    p = edf.Parameter(w0)
    opt = make([p])
    for g in grads:
        p.grad = g.astype(w0.dtype)
        opt.step()
    return p.value


OPTIMISERS = {
    "sgd": (lambda ps: edf.optim.SGD(ps, lr=0.1),
            lambda w, gs: torch_rule_sgd(len(gs), w, gs, 0.1, 0.0, False, 0.0)),
    "momentum": (lambda ps: edf.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2),
                 lambda w, gs: torch_rule_sgd(len(gs), w, gs, 0.1, 0.9, False, 1e-2)),
    "nesterov": (lambda ps: edf.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True),
                 lambda w, gs: torch_rule_sgd(len(gs), w, gs, 0.05, 0.8, True, 0.0)),
    "adam": (lambda ps: edf.optim.Adam(ps, lr=1e-2),
             lambda w, gs: torch_rule_adam(len(gs), w, gs, 1e-2, 0.9, 0.999, 1e-8, 0.0)),
    "adam_wd": (lambda ps: edf.optim.Adam(ps, lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
                lambda w, gs: torch_rule_adam(len(gs), w, gs, 3e-3, 0.8, 0.99, 1e-6, 0.1)),
}


@FLOATS
@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_optimisers_follow_pytorchs_update_rules(name, backend, dtype):
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((6, 4)).astype(dtype)
    grads = [rng.standard_normal((6, 4)) for _ in range(20)]
    make, rule = OPTIMISERS[name]
    got = run_optimiser(make, grads, w0, backend)
    expected = rule(w0.astype(np.float64), [g.astype(dtype).astype(np.float64) for g in grads])
    np.testing.assert_allclose(got, expected, rtol=1e-6 if dtype == np.float64 else 2e-6, atol=1e-6)


def train_layers(make, backend, dtype, steps=12, change=None, upset=None):
    """`steps` optimiser steps on three parameters of a graph's shapes, gradients given;
    `change(opt)` after step 5 (a hyperparameter), `upset(params)` before step 6 (a layout).
    Returns the values and whether each step ran the optimiser's compiled program."""
    edf.set_backend(backend)
    edf.clear_compgraph()
    edf.DT = dtype
    rng = np.random.default_rng(7)
    params = [edf.Parameter(rng.standard_normal(shape)) for shape in ((6, 4), (4,), (3, 5))]
    opt = make(params)
    compiled = []
    for i in range(steps):
        if i == 5 and change is not None:
            change(opt)
        if i == 5 and upset is not None:
            upset(params)
        for p in params:
            p.grad = rng.standard_normal(p.value.shape).astype(dtype)
        opt.step()
        compiled.append(opt._program is not None)
    return [p.value.copy() for p in params], compiled


@FLOATS
@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_the_compiled_step_updates_every_parameter_as_the_reference(name, dtype):
    """On the compiled backend one program updates all the parameters: the reference's numbers."""
    make = OPTIMISERS[name][0]
    comp, compiled = train_layers(make, "cython", dtype)
    ref, _ = train_layers(make, "numpy", dtype)
    assert all(compiled)
    for c, r in zip(comp, ref):
        assert_close(c, r, rtol_for(dtype), name)


@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_a_step_the_program_cannot_take_keeps_the_optimisers_state(name):
    """A parameter in Fortran order (or any layout the program refuses) is stepped through the kernels
    one by one, on the same moments; the next step compiles again. Same numbers as without."""
    make = OPTIMISERS[name][0]
    plain, _ = train_layers(make, "cython", np.float64)

    def fortran(params):
        params[2].value = np.asfortranarray(params[2].value)

    upset, compiled = train_layers(make, "cython", np.float64, upset=fortran)
    assert compiled == [True] * 5 + [False] + [True] * 6
    for a, b in zip(upset, plain):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name, change", [
    ("momentum", lambda opt: setattr(opt, "momentum", 0.5)),
    ("momentum", lambda opt: setattr(opt, "weight_decay", 0.2)),
    ("sgd", lambda opt: setattr(opt, "momentum", 0.9)),            # momentum switched on: a fresh buffer
    ("nesterov", lambda opt: setattr(opt, "nesterov", False)),
    ("adam", lambda opt: setattr(opt, "beta1", 0.5)),
    ("adam_wd", lambda opt: setattr(opt, "eps", 1e-3)),
    ("adam", lambda opt: setattr(opt, "lr", 0.1)),
])
def test_a_hyperparameter_changed_between_steps_is_followed(name, change):
    make = OPTIMISERS[name][0]
    comp, compiled = train_layers(make, "cython", np.float64, change=change)
    ref, _ = train_layers(make, "numpy", np.float64, change=change)
    assert all(compiled)
    for c, r in zip(comp, ref):
        assert_close(c, r, 1e-12, name)


@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_optimisers_match_torch_itself(name):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (it is not a test dependency)")
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal((5, 3))
    grads = [rng.standard_normal((5, 3)) for _ in range(20)]
    t = torch.tensor(w0.copy(), requires_grad=True)
    kwargs = {"sgd": dict(lr=0.1), "momentum": dict(lr=0.1, momentum=0.9, weight_decay=1e-2),
              "nesterov": dict(lr=0.05, momentum=0.8, nesterov=True)}
    if name.startswith("adam"):
        opt = torch.optim.Adam([t], **({"lr": 1e-2} if name == "adam" else
                                       dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)))
    else:
        opt = torch.optim.SGD([t], **kwargs[name])
    for g in grads:
        t.grad = torch.tensor(g)
        opt.step()
    got = run_optimiser(OPTIMISERS[name][0], grads, w0, "cython")
    np.testing.assert_allclose(got, t.detach().numpy(), rtol=1e-6, atol=1e-9)


def test_adam_trains_an_mlp_in_place_of_update_parameters():
    from sklearn.datasets import load_digits
    digits = load_digits()
    X, Y = digits.data[:600] / 16.0, digits.target[:600]
    np.random.seed(0)
    edf.DT = np.float32
    x, y = edf.Input(), edf.Input()
    h = edf.Sigmoid(edf.Affine(edf.AffineParams(64, 32), x))
    p = edf.Softmax(edf.Affine(edf.AffineParams(32, 10), h))
    L = edf.CrossEntropyLoss(p, y)
    opt = edf.optim.Adam(edf.Parameters, lr=1e-2)
    rng = np.random.default_rng(0)
    for epoch in range(15):
        for batch in np.array_split(rng.permutation(len(X)), 10):
            x.value, y.value = X[batch], Y[batch]
            edf.Forward()
            edf.Backward(L)
            opt.step()
    x.value, y.value = X, Y
    edf.Forward()
    assert np.mean(np.argmax(p.value, axis=1) == Y) > 0.95


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_an_optimiser_trains_the_mlp_as_the_lectures_edf_with_its_rule_written_out(name):
    """Where an accuracy bar passes with a bias gradient from one row or a parameter never updated:
    every parameter after 30 steps equals the slides' EDF's, its gradients and the rule by hand."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    X, Y = digits.data[:600] / 16.0, digits.target[:600]
    np.random.seed(0)
    edf.DT = np.float64
    x, y = edf.Input(), edf.Input()
    h = edf.Sigmoid(edf.Affine(edf.AffineParams(64, 32), x))
    L = edf.CrossEntropyLoss(edf.Softmax(edf.Affine(edf.AffineParams(32, 10), h)), y)
    before = [q.value.copy() for q in edf.Parameters]
    opt = edf.optim.Adam(edf.Parameters, lr=1e-2) if name == "adam" else edf.optim.SGD(edf.Parameters, lr=0.5)
    rng = np.random.default_rng(0)
    batches = [batch for _ in range(3) for batch in np.array_split(rng.permutation(len(X)), 10)]
    for batch in batches:
        x.value, y.value = X[batch], Y[batch]
        edf.Forward()
        edf.Backward(L)
        opt.step()
    _, after, _ = lecture_training(X, Y, before, lr=0.5, dtype=np.float64, batches=batches,
                                   update=adam_by_hand(lr=1e-2) if name == "adam" else None)
    for q, expected in zip(edf.Parameters, after):
        np.testing.assert_allclose(q.value, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


@pytest.mark.parametrize("make, message", [
    (lambda ps: edf.optim.SGD(ps, lr=0), r"SGD: lr must be > 0"),
    (lambda ps: edf.optim.SGD(ps, lr=0.1, nesterov=True), "SGD: nesterov needs a momentum above 0"),
    (lambda ps: edf.optim.Adam(ps, betas=(1.0, 0.9)), r"Adam: betas\[0\] must be in \[0.0, 1.0\)"),
    (lambda ps: edf.optim.SGD([np.zeros(3)], lr=0.1), "SGD: params must be Parameters"),
    (lambda ps: edf.optim.Adam([]), "Adam: no parameters to optimise"),
])
def test_optimiser_arguments_are_checked(make, message):
    p = edf.Parameter(np.zeros(3))
    with pytest.raises((ValueError, TypeError), match=message):
        make([p])


def test_step_before_backward_raises():
    p = edf.Parameter(np.zeros(3))
    with pytest.raises(RuntimeError, match=r"SGD: Parameter \(unnamed, shape \(3,\)\) has no gradient; "
                                           r"call Backward\(L\) before step\(\)"):
        edf.optim.SGD([p], lr=0.1).step()


# -- full-batch minimisation -------------------------------------------------------------

def logistic_problem(method_dtype=np.float64):
    """Overlapping 2-D blobs (so the optimum is finite) and a logistic regression on them."""
    rng = np.random.default_rng(3)
    X = np.vstack([rng.normal([-1, 0.5], 1.0, (150, 2)), rng.normal([1, -0.5], 1.0, (150, 2))])
    labels = np.repeat([0, 1], 150)
    edf.DT = method_dtype
    np.random.seed(0)
    x, y = edf.Input(), edf.Input()
    x.value, y.value = X, labels
    params = edf.AffineParams(2, 1)
    L = edf.BCELoss(edf.Sigmoid(edf.Affine(params, x)), y)
    return X, labels, params, L


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_lbfgs_reaches_scikit_learns_logistic_regression_optimum(backend):
    from sklearn.linear_model import LogisticRegression

    edf.set_backend(backend)
    X, labels, params, L = logistic_problem()
    result = edf.optim.minimize(L, method="L-BFGS-B", tol=1e-10)
    assert result.success, result.message
    import sklearn
    # No penalty: penalty=None, spelt C=inf since scikit-learn 1.8.
    unpenalised = dict(C=np.inf) if tuple(map(int, sklearn.__version__.split(".")[:2])) >= (1, 8) else dict(penalty=None)
    sk = LogisticRegression(**unpenalised, tol=1e-12, max_iter=10_000).fit(X, labels)
    ours = np.concatenate([params.A.value.ravel(), params.b.value])
    theirs = np.concatenate([sk.coef_.ravel(), sk.intercept_])
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)


@pytest.mark.parametrize("method", ["gd", "CG", "BFGS"])
def test_the_slides_other_methods_reach_the_same_optimum(method):
    _, _, params, L = logistic_problem()
    lbfgs = edf.optim.minimize(L, method="L-BFGS-B", tol=1e-10)
    for p in edf.Parameters:
        p.value[...] = 0
    result = edf.optim.minimize(L, method=method, tol=1e-7, max_iter=5000)
    assert result.success and result.grad_norm < 1e-7, result
    np.testing.assert_allclose(result.x, lbfgs.x, rtol=1e-5, atol=1e-5)   # |error| ~ gtol / curvature
    np.testing.assert_allclose(np.concatenate([params.A.value.ravel(), params.b.value]), result.x)


def test_gradient_descent_stops_when_the_gradient_is_small_and_never_goes_uphill():
    _, _, _, L = logistic_problem()
    seen = []
    edf.Forward()
    start = float(np.mean(L.value))
    result = edf.optim.minimize(L, method="gd", tol=1e-3)
    seen.append(result.fun)
    assert result.grad_norm < 1e-3 and result.fun < start
    again = edf.optim.minimize(L, method="gd", tol=1e-3)
    assert again.nit == 0 and again.fun == pytest.approx(result.fun)


def test_success_means_the_gradient_got_below_tol():
    # The lecture's clipped Sigmoid: where |x A + b| > 10 its gradient is not the
    # loss's, and L-BFGS stalls above a tight tolerance; it must not claim success.
    X, labels = edf.data.blobs(n=200, seed=0)
    edf.DT = np.float64
    np.random.seed(0)
    x, y = edf.Input(), edf.Input()
    x.value, y.value = X * 3, labels
    L = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(2, 1), x)), y)
    for method in ("L-BFGS-B", "gd"):
        result = edf.optim.minimize(L, method=method, tol=1e-10, max_iter=300)
        assert result.success == (result.grad_norm <= 1e-10)


# -- what a user may change between steps (each case differed between the backends, or was
# -- accepted unchecked, before) ---------------------------------------------------------------

def _two_layer_steps(backend, make, meddle, steps=4):
    """Parameters after `steps` Adam/SGD steps on a small net, `meddle(opt, params)` before the second."""
    edf.set_backend(backend)
    try:
        edf.DT = np.float64
        np.random.seed(0)
        rng = np.random.default_rng(3)
        with edf.Graph() as g:
            x, y = edf.Input(), edf.Input()
            x.value, y.value = rng.standard_normal((6, 3)), rng.integers(0, 2, 6)
            first, second = edf.AffineParams(3, 4), edf.AffineParams(4, 2)
            L = edf.SoftmaxCrossEntropyLoss(edf.Affine(second, edf.Tanh(edf.Affine(first, x))), y)
            opt = make([first.A, first.b])
            for step in range(steps):
                if step == 1:
                    meddle(opt, (second.A, second.b))
                g.Forward()
                g.Backward(L)
                opt.step()
            return [p.value.copy() for p in g.Parameters]
    finally:
        edf.set_backend("cython")


@pytest.mark.parametrize("meddle", [
    lambda opt, more: opt.params.append(more[0]),
    lambda opt, more: opt.params.__setitem__(0, more[0]),
    lambda opt, more: opt.params.__delitem__(1),
], ids=["append", "replace", "delete"])
@pytest.mark.parametrize("make", [lambda ps: edf.optim.Adam(ps, lr=0.05), lambda ps: edf.optim.SGD(ps, lr=0.1)],
                         ids=["Adam", "SGD"])
def test_the_compiled_step_follows_opt_params_changed_in_place(make, meddle):
    ref, got = (_two_layer_steps(backend, make, meddle) for backend in ("numpy", "cython"))
    moved = _two_layer_steps("numpy", make, lambda opt, more: None)
    assert any(not np.allclose(a, b) for a, b in zip(ref, moved)), "the change made no difference to test"
    for r, c in zip(ref, got):
        assert_close(c, r, 1e-12)


@pytest.mark.parametrize("make, name, value, message", [
    (lambda ps: edf.optim.Adam(ps), "beta1", 1.0, r"Adam: betas\[0\] must be in \[0.0, 1.0\)"),
    (lambda ps: edf.optim.Adam(ps), "lr", float("nan"), r"Adam: lr must be > 0.0, a finite number, got nan"),
    (lambda ps: edf.optim.Adam(ps), "eps", -1e-8, r"Adam: eps must be >= 0.0"),
    (lambda ps: edf.optim.SGD(ps, lr=0.1), "lr", float("inf"), r"SGD: lr must be > 0.0, a finite number"),
    (lambda ps: edf.optim.SGD(ps, lr=0.1), "momentum", "0.9", r"SGD: momentum must be >= 0.0"),
])
def test_a_hyperparameter_set_between_steps_is_checked_as_by_the_constructor(make, name, value, message):
    opt = make([edf.Parameter(np.zeros(3))])
    with pytest.raises(ValueError, match=message):
        setattr(opt, name, value)


def test_a_numpy_scalar_learning_rate_is_a_float_on_both_backends():
    # A float32 rate would make the NumPy backend compute the step in float32 (NumPy 2's promotion).
    def set_rate(opt, more):
        opt.lr = np.float32(0.01)
        assert type(opt.lr) is float
    make = lambda ps: edf.optim.Adam(ps, lr=0.05)   # noqa: E731
    ref, got = (_two_layer_steps(backend, make, set_rate) for backend in ("numpy", "cython"))
    for r, c in zip(ref, got):
        assert_close(c, r, 1e-12)


@pytest.mark.parametrize("rate", [float("nan"), float("inf"), -float("inf")])
def test_a_learning_rate_that_is_not_finite_is_refused(rate):
    p = edf.Parameter(np.ones(3))
    p.grad = np.ones(3)
    before, edf.learning_rate = edf.learning_rate, rate
    try:
        with pytest.raises(TypeError, match="edf.learning_rate must be a finite number"):
            edf.UpdateParameters()
    finally:
        edf.learning_rate = before
    np.testing.assert_array_equal(p.value, 1.0)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@pytest.mark.parametrize("kind", ["list", "big-endian"])
def test_a_step_takes_a_list_or_a_big_endian_value_as_the_kernels_do(backend, kind):
    edf.set_backend(backend)
    try:
        value = np.array([1.0, -2.0, 3.0])
        p = edf.Parameter(value)
        p.value = value.tolist() if kind == "list" else value.astype(">f8")
        p.grad = np.array([0.5, 0.5, -1.0])
        edf.optim.SGD([p], lr=0.1).step()
        np.testing.assert_array_equal(p.value, value - 0.1 * p.grad)
        assert p.value.dtype == np.float64 and p.value.dtype.isnative
    finally:
        edf.set_backend("cython")


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@pytest.mark.parametrize("make", [lambda ps: edf.optim.Adam(ps), lambda ps: edf.optim.SGD(ps, lr=0.1)],
                         ids=["Adam", "SGD"])
def test_a_step_refused_for_a_read_only_value_updates_nothing(backend, make):
    edf.set_backend(backend)
    try:
        p, q = edf.Parameter(np.ones(3), name="p"), edf.Parameter(np.ones(2), name="q")
        p.grad, q.grad = np.ones(3), np.ones(2)
        q.value.flags.writeable = False
        opt = make([p, q])
        with pytest.raises(ValueError, match="Parameter 'q' has a read-only .value"):
            opt.step()
        np.testing.assert_array_equal(p.value, 1.0)
        q.value = np.ones(2, q.value.dtype)
        opt.step()   # the refused step left no state behind: this one is a first step
        fresh = make([edf.Parameter(np.ones(3)), edf.Parameter(np.ones(2))])
        for r in fresh.params:
            r.grad = np.ones(r.value.shape)
        fresh.step()
        for a, b in zip(opt.params, fresh.params):
            np.testing.assert_array_equal(a.value, b.value)
    finally:
        edf.set_backend("cython")
