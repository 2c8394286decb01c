"""The compiled plan path (`cedf.plan`, `cedf._engine`): later steps of a graph give the reference's results.

On the compiled backend the first Forward of a graph runs node by node and
builds a plan; later Forward/Backward/UpdateParameters run it in one call. The
plan fuses Softmax -> CrossEntropyLoss and Sigmoid -> BCELoss backward, writes
gradients instead of adding them, folds a hidden layer's bias into its Sigmoid's
passes, and leaves the loss values (and a Sigmoid-fed Affine's value) to be
computed when read. Every test here trains a fresh graph on the
reference ("numpy") and on "cython" with the same script, compares step after
step, and checks that the compiled run really went through the plan
(``current_graph()._planned``), so that the plan, not the nodes, is what passed.

The last tests pin bugs of the plan path that these tests found (all fixed).
"""
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cedf as edf
from helpers import Tanh, assert_close, mlps, on_both, random_mlp, rtol_for, snapshot

FLOATS = pytest.mark.parametrize("dtype", [np.float32, np.float64])
LOSSES = pytest.mark.parametrize("loss", ["ce", "bce"])


# -- helpers ---------------------------------------------------------------

def planned():
    return edf.current_graph()._planned


def updated(state=None):
    """The parameters' values, as snapshot() entries without a gradient.

    Given the snapshot taken before UpdateParameters, each carries ``learning_rate`` times
    its gradient's scale: a value that moved from zero by ``learning_rate * grad`` holds that
    gradient's rounding, which is relative to the gradient's scale, not to the tiny value.
    """
    n = len(edf.Parameters)
    scales = [edf.learning_rate * scale for *_, scale in state[-n:]] if state else [0.0] * n
    return [(f"updated Parameter#{i}", p.value.copy(), None, scale, 0.0)
            for i, (p, scale) in enumerate(zip(edf.Parameters, scales))]


def step(L):
    """One training step: (whether Forward ran the plan, every value and gradient, the updated parameters)."""
    edf.Forward()
    ran_plan = planned()
    edf.Backward(L)
    state = snapshot()
    edf.UpdateParameters()
    return ran_plan, state + updated(state)


def rtol_at(dtype, step_index):
    # Updates let float32 rounding differences grow a little; the first step is held to rtol_for.
    return rtol_for(dtype) * (10 if np.dtype(dtype) == np.float32 and step_index else 1)


def assert_states(comp, ref, rtol, where=""):
    """Two snapshot()-like lists agree: same names, values and gradients within `rtol`.

    The reference's scales apply (see helpers.snapshot). A parameter's value is checked
    where an update made it, in updated() with that update's scale, not again in the
    next snapshot.
    """
    assert [name for name, *_ in comp] == [name for name, *_ in ref], f"{where}: the graphs differ"
    for (name, rv, rg, value_scale, grad_scale), (_, cv, cg, *_) in zip(ref, comp):
        if not name.startswith("Parameter#"):
            assert_close(cv, rv, rtol, f"{where}{name}.value", value_scale)
        if rg is not None:
            assert_close(cg, rg, rtol, f"{where}{name}.grad", grad_scale)


def assert_runs(comp, ref, dtype):
    """Two lists of step() results agree step by step."""
    assert len(comp) == len(ref)
    for i, ((_, c), (_, r)) in enumerate(zip(comp, ref)):
        assert_states(c, r, rtol_at(dtype, i), f"step {i}: ")


def assert_identical(comp, clean, where=""):
    """Two runs on the same backend with equal data are bit for bit the same."""
    assert len(comp) == len(clean)
    for i, ((cp, c), (kp, k)) in enumerate(zip(comp, clean)):
        assert cp == kp, f"{where}step {i}: ran the plan {cp}, the clean run {kp}"
        assert_states(c, k, 0.0, f"{where}step {i}: ")


def labels(rng, loss, n, classes):
    return rng.integers(0, classes if loss == "ce" else 2, n)


def classifier(loss="ce", dtype=np.float32, batch=16, n_in=5, hidden=8, classes=10, seed=0):
    """x -> Affine -> Sigmoid h -> Affine -> Softmax + CrossEntropyLoss, or Sigmoid + BCELoss.

    Returns the nodes and the clean data (X, Y) in a namespace; the data is set.
    """
    np.random.seed(seed)
    rng = np.random.default_rng(seed)
    edf.DT = dtype
    g = SimpleNamespace(x=edf.Input(), y=edf.Input())
    g.X = rng.standard_normal((batch, n_in)).astype(dtype)
    g.Y = labels(rng, loss, batch, classes)
    g.x.value, g.y.value = g.X, g.Y
    g.first = edf.AffineParams(n_in, hidden)
    g.h = edf.Sigmoid(edf.Affine(g.first, g.x))
    if loss == "ce":
        g.p = edf.Softmax(edf.Affine(edf.AffineParams(hidden, classes), g.h))
        g.L = edf.CrossEntropyLoss(g.p, g.y)
    else:
        g.p = edf.Sigmoid(edf.Affine(edf.AffineParams(hidden, 1), g.h))
        g.L = edf.BCELoss(g.p, g.y)
    edf.learning_rate = 0.25
    return g


# -- 1. many steps, random graphs -------------------------------------------



@given(spec=mlps(x_param=True))
def test_planned_steps_agree_with_reference(spec):
    """Every value, gradient and updated parameter after each of four steps; steps 2-4 run the plan."""
    def train():
        L, _ = random_mlp(**spec)
        edf.learning_rate = 0.1
        return [step(L) for _ in range(4)]

    ref, comp = on_both(train)
    assert [ran for ran, _ in comp] == [False, True, True, True]
    assert_runs(comp, ref, spec["dtype"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [300, 7], ids=["large and small products", "small products"])
def test_both_forms_of_an_affines_input_gradient_agree_with_reference(batch, dtype):
    """The plan computes an Affine's g @ A^T as g @ At (At a transposed copy of A) up to
    `cedf.plan._UNTRANSPOSED_MAX` multiply-adds and through BLAS's transpose above: with a
    batch of 300 the 64 x 64 layer (1.2 million) takes the second form, the 64 x 10 one
    the first; with 7, all take the first."""
    from cedf import plan
    assert 7 * 64 * 64 <= 300 * 64 * 10 <= plan._UNTRANSPOSED_MAX < 300 * 64 * 64

    def train():
        L, _ = random_mlp(seed=3, dtype=dtype, depth=3, widths=[20, 64, 64, 10], batch=batch, loss="ce",
                          x_param=True)
        edf.learning_rate = 0.1
        return [step(L) for _ in range(4)]

    ref, comp = on_both(train)
    assert [ran for ran, _ in comp] == [False, True, True, True]
    assert_runs(comp, ref, dtype)


# -- 2. lazy loss values and fused gradients -----------------------------------

@FLOATS
@LOSSES
@pytest.mark.parametrize("read", ["after Forward", "after UpdateParameters"])
def test_lazy_loss_values_and_fused_gradients_are_right_when_read(loss, dtype, read):
    """L.value and the Softmax's/Sigmoid's .grad (fused with the loss) equal the reference's."""
    def train():
        g = classifier(loss, dtype, batch=40)
        for _ in range(3):
            edf.Forward()
            edf.Backward(g.L)
            edf.UpdateParameters()
        edf.Forward()
        ran_plan = planned()
        value = np.array(g.L.value) if read == "after Forward" else None
        edf.Backward(g.L)
        if read == "after UpdateParameters":
            edf.UpdateParameters()
            value = np.array(g.L.value)
        return ran_plan, value, np.array(g.p.grad), np.array(g.h.grad)

    ref, comp = on_both(train)
    assert comp[0], "the fourth step did not run the plan"
    rtol = rtol_at(dtype, 1)
    assert_close(comp[1], ref[1], rtol, "L.value")
    assert_close(comp[2], ref[2], rtol, f"{'Softmax' if loss == 'ce' else 'Sigmoid'}.grad")
    assert_close(comp[3], ref[3], rtol, "hidden Sigmoid.grad")


@FLOATS
@LOSSES
def test_training_does_not_need_the_lazy_results_read(loss, dtype):
    """Parameters after six steps in which nobody reads L.value or any gradient (and the step size changes)."""
    def train():
        g = classifier(loss, dtype, batch=40)
        ran = []
        for rate in (0.3, 0.1, 0.5, 0.05, 0.2, 0.4):
            edf.learning_rate = rate
            edf.Forward()
            ran.append(planned())
            edf.Backward(g.L)
            edf.UpdateParameters()
        return ran, updated()

    ref, comp = on_both(train)
    assert comp[0][1:] == [True] * 5
    assert_states(comp[1], ref[1], rtol_at(dtype, 1))


@FLOATS
def test_a_sigmoid_fed_affine_value_read_after_the_update(dtype):
    """The plan leaves x A + b of an Affine read only by a Sigmoid to be made when read:
    from the bias of its Forward, not the one UpdateParameters has changed since."""
    def train():
        g = classifier("ce", dtype, batch=40)
        edf.learning_rate = 5.0   # a large step, so that a stale bias would show
        for _ in range(3):
            step(g.L)
        edf.Forward()
        ran_plan = planned()
        edf.Backward(g.L)
        edf.UpdateParameters()
        return ran_plan, np.array(g.h.x.value), np.array(g.h.value)

    ref, comp = on_both(train)
    assert comp[0], "the fourth step did not run the plan"
    assert_close(comp[1], ref[1], rtol_at(dtype, 3), "hidden Affine.value")
    assert_close(comp[2], ref[2], rtol_at(dtype, 3), "hidden Sigmoid.value")


# -- 3. the batch size changes ---------------------------------------------------

@FLOATS
@LOSSES
def test_batch_size_changes_between_planned_steps(loss, dtype):
    batches = (32, 32, 7, 7, 32, 1, 1, 300, 300, 32)

    def train():
        g = classifier(loss, dtype, batch=32, classes=4)
        out = []
        for i, n in enumerate(batches):
            rng = np.random.default_rng(100 + i)
            g.x.value = rng.standard_normal((n, 5))
            g.y.value = labels(rng, loss, n, 4)
            out.append(step(g.L))
        return out

    ref, comp = on_both(train)
    # A plan rebuilt for a new batch size is used again by the next step of that size.
    for i in range(1, len(batches)):
        if batches[i] == batches[i - 1]:
            assert comp[i][0], f"step {i} (batch {batches[i]}, as before) did not run the plan"
    assert_runs(comp, ref, dtype)


# -- 4. the graph grows -----------------------------------------------------------

@FLOATS
@pytest.mark.parametrize("where", ["hidden", "softmax", "user node"])
def test_graph_growing_after_planned_steps(where, dtype):
    """A second head added after planned steps: on the hidden layer, on the Softmax (which then has
    two consumers, so its CrossEntropyLoss is no longer fused), or behind a user's node."""
    def train():
        g = classifier("ce", dtype, classes=4)
        out = [step(g.L) for _ in range(2)]
        source = {"hidden": g.h, "softmax": g.p, "user node": None}[where]
        if source is None:
            source = Tanh(g.h)
        z = edf.Input()
        z.value = np.random.default_rng(7).integers(0, 2, len(g.Y))
        width = 4 if source is g.p else 8
        L2 = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(width, 1), source)), z)
        for L in (g.L, g.L, L2, L2):
            out.append(step(L))
        return out, edf.current_graph()._plan is None

    (ref, _), (comp, no_plan) = on_both(train)
    if where == "user node":
        assert no_plan and not any(ran for ran, _ in comp[2:])
    else:
        assert [ran for ran, _ in comp] == [False, True, False, True, True, True]
    assert_runs(comp, ref, dtype)


# -- 5. two losses ---------------------------------------------------------------------

def two_heads(dtype, ce_first=True, batch=24):
    """A shared hidden layer h with a Softmax + CrossEntropyLoss head and a Sigmoid + BCELoss head."""
    np.random.seed(1)
    rng = np.random.default_rng(1)
    edf.DT = dtype
    g = SimpleNamespace(x=edf.Input(), y=edf.Input(), z=edf.Input())
    g.x.value = rng.standard_normal((batch, 5))
    g.y.value = rng.integers(0, 3, batch)
    g.z.value = rng.integers(0, 2, batch)
    g.h = edf.Sigmoid(edf.Affine(edf.AffineParams(5, 6), g.x))

    def ce_head():
        g.ce_params = edf.AffineParams(6, 3)
        g.ce_nodes = [edf.Affine(g.ce_params, g.h)]
        g.ce_nodes.append(edf.Softmax(g.ce_nodes[0]))
        g.L_ce = edf.CrossEntropyLoss(g.ce_nodes[1], g.y)
        g.ce_nodes.append(g.L_ce)

    def bce_head():
        g.bce_params = edf.AffineParams(6, 1)
        g.bce_nodes = [edf.Affine(g.bce_params, g.h)]
        g.bce_nodes.append(edf.Sigmoid(g.bce_nodes[0]))
        g.L_bce = edf.BCELoss(g.bce_nodes[1], g.z)
        g.bce_nodes.append(g.L_bce)

    for head in ((ce_head, bce_head) if ce_first else (bce_head, ce_head)):
        head()
    edf.learning_rate = 0.1
    return g


def all_zero(nodes, params):
    return all(not np.any(n.grad) for n in nodes) and not any(
        np.any(p.grad) for p in (params.A, params.b))


@FLOATS
@pytest.mark.parametrize("ce_first", [True, False])
def test_two_losses_in_one_graph(ce_first, dtype):
    """Backward(L1) then Backward(L2): each zeroes every gradient, the other head's included."""
    def train():
        g = two_heads(dtype, ce_first)
        out, zeros = [], []
        for _ in range(3):
            edf.Forward()
            ran_plan = planned()
            edf.Backward(g.L_ce)
            out.append((ran_plan, snapshot()))
            zeros.append(all_zero(g.bce_nodes, g.bce_params))
            edf.Backward(g.L_bce)
            out.append((ran_plan, snapshot()))
            zeros.append(all_zero(g.ce_nodes, g.ce_params))
            edf.UpdateParameters()
            out.append((ran_plan, updated(out[-1][1])))
        return out, zeros

    (ref, _), (comp, zeros) = on_both(train)
    assert [ran for ran, _ in comp] == [False] * 3 + [True] * 6
    assert all(zeros), "a head off the loss's path kept a nonzero gradient"
    for i, ((_, c), (_, r)) in enumerate(zip(comp, ref)):
        assert_states(c, r, rtol_at(dtype, i // 3), f"{['Backward(CE)', 'Backward(BCE)', 'update'][i % 3]} "
                                                    f"of step {i // 3}: ")


# -- 6. fan-out ------------------------------------------------------------------------------

def fan_out(dtype, batch=20):
    """Nodes with two consumers and a parameter used twice, so that gradients meet:

        h = Sigmoid(Affine(P1, x))                       h feeds two Affines
        u = Sigmoid(Affine(T, Sigmoid(Affine(T, h))))    T used twice: its gradient sums two products
        p = Softmax(Affine(P2, u));  L1 = CE(p, y)       p feeds L1 and an Affine: CE not fused
        q = Sigmoid(Affine(P3, p));  L2 = BCE(q, z)      q feeds L2 and an Affine: BCE not fused
        L3 = BCE(Sigmoid(Affine(P4, q)), z)
        L4 = BCE(Sigmoid(Affine(P5, h)), z)              the second consumer of h
    """
    np.random.seed(2)
    rng = np.random.default_rng(2)
    edf.DT = dtype
    x, y, z = edf.Input(), edf.Input(), edf.Input()
    x.value = rng.standard_normal((batch, 4))
    y.value = rng.integers(0, 3, batch)
    z.value = rng.integers(0, 2, batch)
    h = edf.Sigmoid(edf.Affine(edf.AffineParams(4, 6), x))
    T = edf.AffineParams(6, 6)
    u = edf.Sigmoid(edf.Affine(T, edf.Sigmoid(edf.Affine(T, h))))
    p = edf.Softmax(edf.Affine(edf.AffineParams(6, 3), u))
    L1 = edf.CrossEntropyLoss(p, y)
    q = edf.Sigmoid(edf.Affine(edf.AffineParams(3, 1), p))
    L2 = edf.BCELoss(q, z)
    L3 = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(1, 1), q)), z)
    L4 = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(6, 1), h)), z)
    edf.learning_rate = 0.1
    return [L1, L2, L3, L4]


@FLOATS
def test_fan_out_on_the_plan_path(dtype):
    """Gradients through nodes with two consumers and a shared parameter, for each loss in turn."""
    def train():
        losses = fan_out(dtype)
        out = []
        for _ in range(3):
            edf.Forward()
            ran_plan = planned()
            for L in losses:
                edf.Backward(L)
                out.append((ran_plan, snapshot()))
            edf.UpdateParameters()
            out.append((ran_plan, updated(out[-1][1])))
        return out

    ref, comp = on_both(train)
    assert [ran for ran, _ in comp] == [False] * 5 + [True] * 10
    for i, ((_, c), (_, r)) in enumerate(zip(comp, ref)):
        assert_states(c, r, rtol_at(dtype, i // 5), f"step {i // 5}, entry {i % 5}: ")


# -- 7. awkward input after warm-up ----------------------------------------------------

def _strided(a):
    wide = np.zeros((a.shape[0], 2 * a.shape[1]), np.float64)
    wide[:, ::2] = a
    return wide[:, ::2]


def _replace_value(g):
    g.replaced = g.first.A.value.copy()
    g.first.A.value = g.replaced


def _fortran_value(g):
    g.replaced = np.asfortranarray(g.first.A.value)
    g.first.A.value = g.replaced


AWKWARD = {
    "Fortran x": lambda g: setattr(g.x, "value", np.asfortranarray(g.X)),
    "float64 x": lambda g: setattr(g.x, "value", g.X.astype(np.float64)),
    "strided float64 x": lambda g: setattr(g.x, "value", _strided(g.X)),
    "list x": lambda g: setattr(g.x, "value", g.X.tolist()),
    "int32 y": lambda g: setattr(g.y, "value", g.Y.astype(np.int32)),
    "float y": lambda g: setattr(g.y, "value", g.Y.astype(np.float64)),
    "float32 y": lambda g: setattr(g.y, "value", g.Y.astype(np.float32)),
    "column y": lambda g: setattr(g.y, "value", g.Y.reshape(-1, 1)),
    "list y": lambda g: setattr(g.y, "value", g.Y.tolist()),
    "new A.value": _replace_value,
    "Fortran A.value": _fortran_value,
    "A.grad replaced": lambda g: setattr(g.first.A, "grad", np.full_like(g.first.A.value, 7.0)),
    "A.grad None": lambda g: setattr(g.first.A, "grad", None),
    "b.grad float64": lambda g: setattr(g.first.b, "grad", np.ones(g.first.b.value.shape, np.float64)),
}
# The plan cannot write these gradients: Backward runs through the nodes, whose unfused
# Softmax/Sigmoid and loss round differently from the plan's fused pass.
THROUGH_THE_NODES = {"A.grad None", "b.grad float64"}


@LOSSES
@pytest.mark.parametrize("variant", list(AWKWARD))
def test_awkward_input_on_the_plan_path(variant, loss):
    """After two planned steps, one step with awkward but valid input gives the clean input's results."""
    def train(change):
        edf.clear_compgraph()
        g = classifier(loss)
        out = [step(g.L) for _ in range(2)]
        g.x.value, g.y.value = g.X, g.Y
        if change:
            AWKWARD[variant](g)
        out.append(step(g.L))
        g.x.value, g.y.value = g.X, g.Y
        out.append(step(g.L))
        return out, g

    edf.set_backend("cython")
    clean, _ = train(False)
    got, g = train(True)
    assert got[2][0], "the awkward step did not run the plan"
    if variant in THROUGH_THE_NODES:
        assert_identical(got[:2], clean[:2])
        assert_runs(got[2:], clean[2:], np.float32)
    else:
        assert_identical(got, clean, f"{variant}: ")
    if variant in ("new A.value", "Fortran A.value"):
        # The updates landed in the array the parameter holds now.
        assert g.first.A.value is g.replaced
        first_A = {name: value for name, value, *_ in clean[-1][1]}["updated Parameter#0"]
        np.testing.assert_array_equal(g.replaced, first_A)


@LOSSES
def test_update_uses_a_gradient_the_user_replaced(loss):
    """A gradient replaced between Backward and UpdateParameters (clipped, scaled) is the one applied."""
    def train():
        g = classifier(loss, np.float64)
        out = []
        for _ in range(4):
            edf.Forward()
            ran_plan = planned()
            edf.Backward(g.L)
            g.first.A.grad = np.clip(g.first.A.grad, -1e-3, 1e-3)
            g.first.b.grad = g.first.b.grad * 0.5
            edf.UpdateParameters()
            out.append((ran_plan, updated()))
        return out

    ref, comp = on_both(train)
    assert [ran for ran, _ in comp] == [False, True, True, True]
    assert_runs(comp, ref, np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lr", [0.0, 0.25])
def test_planned_update_matches_the_lectures_rule(dtype, lr):
    """value -= lr * grad on the plan (BLAS axpy) as node by node: NaN from 0 * inf included."""
    def train():
        g = classifier("ce", dtype, hidden=300)   # a first layer of 1,500 weights
        edf.learning_rate = lr
        out = []
        for step in range(3):
            edf.Forward()
            ran_plan = planned()
            edf.Backward(g.L)
            if step == 2:
                g.first.A.grad[0, :3] = [np.inf, -np.inf, np.nan]
            edf.UpdateParameters()
            out.append((ran_plan, g.first.A.value.copy()))
        return out

    with np.errstate(invalid="ignore"):   # the reference's 0 * inf
        ref, comp = on_both(train)   # (conftest restores the learning rate)
    assert [ran for ran, _ in comp] == [False, True, True]
    for (_, c), (_, r) in zip(comp, ref):
        np.testing.assert_array_equal(np.isnan(c), np.isnan(r))
        np.testing.assert_allclose(c, r, rtol=rtol_for(dtype))
    assert np.isnan(comp[-1][1][0, :3]).all() if lr == 0 else np.isinf(comp[-1][1][0, :2]).all()


# -- 8. bad input after warm-up ----------------------------------------------------------

def _set_label(g, value, dtype=None):
    y = np.array(g.Y, dtype=dtype)
    y[3] = value
    g.y.value = y


def _label_in_place(g, value):
    # The same array object as in the planned steps, changed behind the plan's back.
    g.y.value = np.array(g.Y)
    edf.Forward()
    g.y.value[3] = value


CE_OUTSIDE = r"CrossEntropyLoss: label {} is outside \[0, 10\)"
NOT_BINARY = r"BCELoss: y must hold labels 0 or 1"
SIX_FEATURES = r"Affine: x has 6 features, A expects 5"
BAD = {
    "label 12": ("ce", lambda g: _set_label(g, 12), CE_OUTSIDE.format(12) + r" \(p has 10 classes\)"),
    "label -1": ("ce", lambda g: _set_label(g, -1), CE_OUTSIDE.format(-1)),
    "label 12 in place": ("ce", lambda g: _label_in_place(g, 12), CE_OUTSIDE.format(12)),
    "int32 label 12": ("ce", lambda g: _set_label(g, 12, np.int32), CE_OUTSIDE.format(12)),
    "label 1.5": ("ce", lambda g: _set_label(g, 1.5, np.float64),
                  r"CrossEntropyLoss: y must hold whole class indices, got 1.5"),
    "CE y None": ("ce", lambda g: setattr(g.y, "value", None),
                  r"CrossEntropyLoss: its input y \(Input\) has no value"),
    "CE y short": ("ce", lambda g: setattr(g.y, "value", np.zeros(15, int)),
                   r"CrossEntropyLoss: y has shape \(15,\), expected \(16,\)"),
    "BCE label 0.5": ("bce", lambda g: _set_label(g, 0.5, np.float64), NOT_BINARY + ", got 0.5"),
    "BCE label nan": ("bce", lambda g: _set_label(g, np.nan, np.float32), NOT_BINARY + ", got nan"),
    "BCE label 2": ("bce", lambda g: _set_label(g, 2), NOT_BINARY),
    "BCE label 3 in place": ("bce", lambda g: _label_in_place(g, 3), NOT_BINARY),
    "CE 6 features": ("ce", lambda g: setattr(g.x, "value", np.ones((16, 6))), SIX_FEATURES),
    "BCE 6 features": ("bce", lambda g: setattr(g.x, "value", np.ones((16, 6))), SIX_FEATURES),
    "x None": ("ce", lambda g: setattr(g.x, "value", None), r"Affine: its input x \(Input\) has no value"),
    "x 1-D": ("bce", lambda g: setattr(g.x, "value", np.ones(16)), r"Affine: x must be 2-D, got shape \(16,\)"),
}


@pytest.mark.parametrize("loss, spoil, message", list(BAD.values()), ids=list(BAD))
def test_bad_input_on_the_plan_path_raises_then_recovers(loss, spoil, message):
    """The node-by-node error, raised after planned steps; fixed input then trains as if nothing happened."""
    def train(bad):
        edf.clear_compgraph()
        g = classifier(loss)
        out = [step(g.L) for _ in range(2)]
        if bad:
            spoil(g)
            with pytest.raises((ValueError, TypeError), match=message):
                edf.Forward()
        g.x.value, g.y.value = g.X, g.Y
        out += [step(g.L) for _ in range(2)]
        return out

    edf.set_backend("cython")
    clean = train(False)
    got = train(True)
    assert got[-1][0], "the plan was not used again after the error"
    assert_identical(got[:2], clean[:2])
    # Errors found by the nodes drop the plan, and the next step runs node by node: not bit for bit the plan.
    assert_runs(got[2:], clean[2:], np.float32)


@pytest.mark.parametrize("loss, spoil", [
    pytest.param("ce", lambda g: _set_label(g, 12), id="label 12"),
    pytest.param("ce", lambda g: _label_in_place(g, 12), id="label 12 in place"),
    pytest.param("bce", lambda g: _set_label(g, 0.5, np.float64), id="BCE label 0.5"),
    pytest.param("bce", lambda g: _set_label(g, 2), id="BCE label 2"),   # the plan once said 'got 2', not 2.0
])
def test_bad_input_message_is_the_node_by_node_one(loss, spoil):
    """The message itself, not only its start, is the one the nodes give."""
    def fail():
        g = classifier(loss)
        for _ in range(2):
            step(g.L)
        spoil(g)
        with pytest.raises(ValueError) as err:
            edf.Forward()
        return str(err.value)

    ref, comp = on_both(fail)
    assert comp == ref


# -- 9. switching backend ------------------------------------------------------------------

@FLOATS
@LOSSES
def test_switching_backend_between_and_within_steps(loss, dtype):
    """Backends chosen per call (Forward, Backward, UpdateParameters) give a pure reference run's results."""
    C, N = "cython", "numpy"
    schedule = [(C, C, C), (C, C, C), (N, N, N), (N, N, N), (C, C, C), (C, C, C),
                (C, N, C), (C, C, N), (N, C, C), (C, C, C), (C, C, C)]

    def train(schedule):
        edf.clear_compgraph()
        g = classifier(loss, dtype)
        out = []
        for forward, backward, update in schedule:
            edf.set_backend(forward)
            edf.Forward()
            ran_plan = planned()
            edf.set_backend(backward)
            edf.Backward(g.L)
            state = snapshot()
            edf.set_backend(update)
            edf.UpdateParameters()
            out.append((ran_plan, state + updated(state)))
        return out

    ref = train([(N, N, N)] * len(schedule))
    comp = train(schedule)
    # Whole steps on the compiled backend after one on it run the plan.
    assert all(comp[i][0] for i in (1, 5, 6, 10))
    assert_runs(comp, ref, dtype)


# -- 10. a user's node ------------------------------------------------------------------------

class DoubledAffine(edf.Affine):
    """A subclass of a compiled node that changes what it computes: 2 (x A + b)."""

    def forward(self):
        super().forward()
        self.value = 2 * self.value

    def backward(self):
        self.grad = 2 * self.grad
        super().backward()


@LOSSES
@pytest.mark.parametrize("user", ["Tanh", "subclass"])
def test_graph_with_a_user_node_runs_node_by_node(user, loss):
    def train():
        if user == "Tanh":
            L, _ = random_mlp(11, np.float64, 3, [5, 7, 6, 4], batch=30, loss=loss, user_node=True)
        else:
            g = classifier(loss, np.float64)
            L = (edf.CrossEntropyLoss if loss == "ce" else edf.BCELoss)(
                (edf.Softmax if loss == "ce" else edf.Sigmoid)(
                    DoubledAffine(edf.AffineParams(8, 10 if loss == "ce" else 1), g.h)), g.y)
        edf.learning_rate = 0.1
        out, no_plan = [], []
        for _ in range(3):
            out.append(step(L))
            no_plan.append(edf.current_graph()._plan is None)
        return out, no_plan

    (ref, _), (comp, no_plan) = on_both(train)
    assert not any(ran for ran, _ in comp)
    assert all(no_plan), "a graph with a user's node was compiled"
    assert_runs(comp, ref, np.float64)


# -- 11. the empty batch ------------------------------------------------------------------------

@FLOATS
@LOSSES
def test_empty_batch_after_warm_up(loss, dtype):
    batches = (16, 16, 0, 0, 16, 16, 0)

    def train():
        g = classifier(loss, dtype)
        out = []
        for i, n in enumerate(batches):
            rng = np.random.default_rng(i)
            g.x.value = rng.standard_normal((n, 5))
            g.y.value = labels(rng, loss, n, 10)
            before = [p.value.copy() for p in edf.Parameters]
            out.append(step(g.L))
            if n == 0:
                assert np.shape(g.L.value) == (0,)
                assert not any(np.any(p.grad) for p in edf.Parameters)
                for p, old in zip(edf.Parameters, before):
                    np.testing.assert_array_equal(p.value, old)
        return out

    ref, comp = on_both(train)
    assert comp[1][0] and comp[5][0]
    assert_runs(comp, ref, dtype)


# -- regressions: bugs of the plan path that these tests found ------------------------------

@LOSSES
def test_backward_of_a_fused_node_after_backward_of_its_loss(loss):
    """Backward(p) of the Softmax/Sigmoid fused with L, after Backward(L): p.grad is the seed 1/B.

    A lazy gradient left by Backward(L) once outlived the next Backward and read zeros.
    """
    def run():
        g = classifier(loss, np.float64)
        for _ in range(2):
            step(g.L)
        edf.Forward()
        edf.Backward(g.L)
        edf.Backward(g.p)   # the lecture's Backward takes any node
        return planned(), np.array(g.p.grad)

    ref, comp = on_both(run)
    assert comp[0]
    assert_close(comp[1], ref[1], rtol_for(np.float64), "Softmax/Sigmoid .grad")


@LOSSES
def test_a_fused_gradient_read_after_the_next_forward(loss):
    """A Forward does not change the gradients of the last Backward.

    A lazy Softmax/Sigmoid gradient, not read before the next Forward, was once
    computed from that Forward's values.
    """
    def train():
        g = classifier(loss, np.float64)
        for _ in range(3):
            edf.Forward()
            edf.Backward(g.L)   # p.grad not read here
            edf.UpdateParameters()
        edf.Forward()
        return planned(), np.array(g.p.grad)

    ref, comp = on_both(train)
    assert comp[0]
    assert_close(comp[1], ref[1], rtol_for(np.float64), "Softmax/Sigmoid .grad")


def test_gradients_survive_a_forward_of_another_batch_size():
    """Evaluating on another batch between Backward and UpdateParameters keeps the gradients and the step.

    The plan rebuilt for the new batch once replaced every gradient (zeros, np.empty).
    """
    def train():
        g = classifier("ce", np.float64)
        for _ in range(2):
            step(g.L)
        edf.Forward()
        edf.Backward(g.L)
        g.x.value, g.y.value = g.X[:5], g.Y[:5]
        edf.Forward()
        grads = [(f"gradient of Parameter#{i}", p.grad.copy(), None, 0.0, 0.0) for i, p in enumerate(edf.Parameters)]
        edf.UpdateParameters()
        return grads + updated()

    ref, comp = on_both(train)
    assert_states(comp, ref, rtol_for(np.float64))


def test_a_bce_and_a_cross_entropy_sharing_float_labels():
    """One Input of 0./1. labels for a BCELoss (made first) and a CrossEntropyLoss.

    The two losses once shared one plan binding, and the cross-entropy read the float labels as int64.
    """
    def train():
        np.random.seed(3)
        rng = np.random.default_rng(3)
        edf.DT = np.float64
        x, y = edf.Input(), edf.Input()
        x.value = rng.standard_normal((12, 4))
        y.value = rng.integers(0, 2, 12).astype(np.float64)
        h = edf.Sigmoid(edf.Affine(edf.AffineParams(4, 5), x))
        L1 = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(5, 1), h)), y)
        L2 = edf.CrossEntropyLoss(edf.Softmax(edf.Affine(edf.AffineParams(5, 2), h)), y)
        edf.learning_rate = 0.1
        return [step(L) for L in (L2, L1, L2, L1)]

    ref, comp = on_both(train)
    assert [ran for ran, _ in comp][1:] == [True] * 3
    assert_runs(comp, ref, np.float64)


@pytest.mark.parametrize("first, second", [(np.float64, np.float32), (np.float32, np.float64)])
def test_layers_of_two_dtypes(first, second):
    """cedf.DT changed while building: each layer computes in its parameters' dtype, as the nodes do.

    The plan once read the first layer's buffer reinterpreted in the second's dtype: garbage
    for float64 -> float32, and writes past the buffer (a segfault) for float32 -> float64.
    """
    def train():
        np.random.seed(4)
        rng = np.random.default_rng(4)
        x, y = edf.Input(), edf.Input()
        x.value, y.value = rng.standard_normal((10, 5)), rng.integers(0, 3, 10)
        edf.DT = first
        h = edf.Sigmoid(edf.Affine(edf.AffineParams(5, 4), x))
        edf.DT = second
        L = edf.CrossEntropyLoss(edf.Softmax(edf.Affine(edf.AffineParams(4, 3), h)), y)
        edf.learning_rate = 0.1
        return [step(L) for _ in range(3)]

    ref, comp = on_both(train)
    assert_runs(comp, ref, np.float32)


def test_a_parameter_replaced_by_another_float_dtype():
    """A float32 layer's parameters replaced by float64 arrays: that layer computes in float64, as the nodes do.

    The plan once kept converting them back to float32.
    """
    def train():
        g = classifier("ce", np.float32)
        out = [step(g.L) for _ in range(2)]
        g.first.A.value = g.first.A.value.astype(np.float64)
        g.first.b.value = g.first.b.value.astype(np.float64)
        out += [step(g.L) for _ in range(2)]
        return out

    ref, comp = on_both(train)
    assert_runs(comp, ref, np.float32)


@LOSSES
def test_loss_values_after_a_failed_forward_are_the_last_good_ones(loss):
    """The nodes leave L.value as the last successful Forward made it when a Forward raises."""
    def train():
        g = classifier(loss, np.float64)
        for _ in range(2):
            step(g.L)
        edf.Forward()                       # L.value not read: it stays lazy
        g.x.value = 3 * g.X
        _set_label(g, 12)                   # outside [0, 10) and not 0 or 1
        with pytest.raises(ValueError):
            edf.Forward()
        return np.array(g.L.value)

    ref, comp = on_both(train)
    assert_close(comp, ref, rtol_for(np.float64), "L.value")


@LOSSES
def test_a_step_refused_by_its_first_binding_keeps_the_last_runs_loss_values(loss):
    """A run refused while reading x (its first binding) must not roll back bindings it never read.

    It once reset the labels binding to what preceded the program's first run (nothing), so
    the lazy loss values, read after the refused step, found no labels at all.
    """
    def train(read_before):
        edf.clear_compgraph()
        g = classifier(loss)
        step(g.L)       # node by node; builds the plan
        edf.Forward()   # the forward program's first run: it binds x, the labels, ...; loss values stay lazy
        assert planned()
        before = np.array(g.L.value) if read_before else None
        g.x.value = np.full(g.X.shape, "a")   # refused by the first binding, then by the Affine
        with pytest.raises(TypeError, match="Affine: x must hold real numbers"):
            edf.Forward()
        return before if read_before else np.array(g.L.value)

    edf.set_backend("cython")
    assert_close(train(read_before=False), train(read_before=True), 0.0, "loss values read after the refused step")
