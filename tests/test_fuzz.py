"""Fuzzing: awkward, extreme and invalid input to every node and to whole graphs, on both backends.

The property (issue 4). Whatever a user puts in ``x.value``, ``y.value`` or a
parameter's ``.value`` -- any NumPy numeric dtype, bool, object or string
arrays; Fortran order, strided or reversed views, read-only, byte-swapped or
unaligned arrays; 0-d to 4-D shapes; Python lists; NaN and infinities; empty
batches; class labels that are negative, too large, fractional, NaN or huge --
a training step either

- gives the reference backend's values and gradients (normwise, as
  `helpers.assert_close`; NaN in the same places, the same infinities), or
- raises a TypeError, ValueError or RuntimeError whose message starts with the
  name of the node that reads the value ("Affine: ", "BCELoss: ", ...),

and both backends agree on which, in the same call, with the same exception
type. The compiled backend must not warn where the reference does not.

Every case runs on a fresh graph (its first Forward runs node by node) and
after two good steps (the compiled backend then runs its plan, whose bindings
re-read every input at every step); good steps follow, which must give the
reference's results again and run the plan again (recovery). The odd step runs
UpdateParameters with a learning rate of 0: the update path is exercised, but
huge gradients from huge data do not turn the next steps into ill-conditioned
problems on which two correct backends may differ.

The bugs these properties found are fixed; a test per bug, at the end of this
file (FIXED BUGS), pins each on the input that showed it.
"""
import copy
import warnings
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import currently_in_test_context, event, given
from hypothesis import strategies as st

import cedf as edf
from helpers import rtol_for, through_sigmoid

NUMERIC = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
           "float16", "float32", "float64", "longdouble", "complex64", "complex128")
DTYPES = NUMERIC + ("bool", "object", "str")
REAL = tuple(d for d in NUMERIC if not d.startswith("complex")) + ("bool",)
LAYOUTS = ("C", "F", "strided", "reversed", "readonly", "byteswapped", "unaligned", "list")
# A parameter updated in place must stay a writable float array: other values raise
# "Parameter: ..." at the update (test_parameter_value_that_cannot_be_updated), not drawn here.
PARAM_DTYPES = ("float16", "float32", "float64", "longdouble", "complex64", "complex128", "object", "str")
PARAM_LAYOUTS = ("C", "F", "strided", "reversed", "byteswapped", "unaligned")
# Entries planted in data. Magnitudes stay where no sum of a few products overflows
# in one summation order and not in another (1e300 in float64, 1e30 in float32).
SPECIALS = (np.nan, np.inf, -np.inf, 1e300, -1e300, 1e30, -2.0 ** 62, 0.0, -0.0, 1e-300)
GRAPH_DTYPES = st.sampled_from([np.float32, np.float64])
LEARNING_RATE = 0.1


# -- values, made afresh for every run ---------------------------------------------------------

@dataclass(frozen=True)
class Data:
    """A value for a slot: `values` (a float64 array, or a list of exact Python numbers) cast to
    `dtype` (None: as NumPy infers), reshaped to `shape` and laid out as `layout`. Made afresh
    for each run, since a run may change it in place."""

    values: object
    dtype: object = "float64"
    layout: str = "C"
    shape: tuple = None
    beyond: bool = False    # longdouble only: one entry beyond float64's range

    def make(self):
        if self.values is None:
            return None
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = cast(self.values, self.dtype, self.beyond)
            return lay_out(arr if self.shape is None else arr.reshape(self.shape), self.layout)

    def apply(self, owner, attr):
        setattr(owner, attr, self.make())


@dataclass(frozen=True)
class InPlace:
    """One entry of the slot's current array changed in place: the plan sees the same array object."""

    index: int
    value: object

    def apply(self, owner, attr):
        arr = getattr(owner, attr)
        if arr.size:
            with np.errstate(all="ignore"):
                arr.flat[self.index % arr.size] = self.value


@dataclass(frozen=True)
class Exactly:
    """A Python object set as it is (what NumPy cannot make an array of: a ragged list)."""

    value: object

    def apply(self, owner, attr):
        setattr(owner, attr, copy.deepcopy(self.value))


def cast(values, dtype, beyond=False):
    if isinstance(values, list):
        return np.array(values, dtype=dtype)
    values = np.asarray(values)   # a 0-d array, not a NumPy scalar
    if dtype in ("str", "object"):
        return values.astype(dtype)
    if dtype == "bool":
        return np.asarray(values != 0)
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        # Infinities stand for the type's extremes; the clip keeps float64 from rounding past them.
        info = np.iinfo(dt)
        lo, hi = max(info.min, -2 ** 62), min(info.max, 2 ** 62)
        out = np.asarray(np.clip(np.nan_to_num(np.round(values), nan=0.0, posinf=hi, neginf=lo), lo, hi)).astype(dt)
        out[np.isposinf(values)], out[np.isneginf(values)] = info.max, info.min
        return out
    out = values.astype(dt)
    if beyond and dt == np.longdouble and out.size:
        out.flat[0] = np.longdouble(1e300) * np.longdouble(1e300)
    return out


def lay_out(arr, layout):
    if layout == "list":
        return arr.tolist()
    if layout == "readonly":
        arr = arr.copy()
        arr.flags.writeable = False
        return arr
    if layout == "byteswapped":
        return arr.astype(arr.dtype.newbyteorder()) if arr.dtype.kind in "iufc" else arr
    if layout == "unaligned":
        if arr.dtype.kind not in "iufc" or arr.dtype.itemsize == 1:
            return arr
        raw = np.zeros(arr.nbytes + 1, np.uint8)
        out = raw[1:].view(arr.dtype).reshape(arr.shape)
        out[...] = arr
        return out
    if arr.ndim == 0 or layout == "C":
        return arr
    if layout == "F":
        return np.asfortranarray(arr)
    if layout == "strided":
        big = np.zeros(tuple(2 * n for n in arr.shape), arr.dtype)
        view = big[tuple(slice(None, None, 2) for _ in arr.shape)]
        view[...] = arr
        return view
    assert layout == "reversed"
    flip = tuple(slice(None, None, -1) for _ in arr.shape)
    return arr[flip].copy()[flip]


def clean(values, dtype):
    return Data(np.asarray(values, np.float64), np.dtype(dtype).name)


# -- strategies ---------------------------------------------------------------------------------

def seeds():
    return st.integers(0, 2 ** 32 - 1)


@st.composite
def arrays(draw, shape, dtypes=DTYPES, layouts=LAYOUTS, specials=SPECIALS, low=None):
    """Data of this shape in an awkward dtype and layout, with a few special entries planted.

    With `low`, the values are drawn uniformly in [low, 1) (probabilities, mostly)."""
    rng = np.random.default_rng(draw(seeds()))
    if low is None:
        values = np.asarray(rng.standard_normal(shape) * draw(st.sampled_from([1.0, 1e-3, 1e3])))
    else:
        values = np.asarray(rng.uniform(low, 1.0, shape))
    if values.size:
        for _ in range(draw(st.integers(0, 3))):
            values.flat[draw(st.integers(0, values.size - 1))] = draw(st.sampled_from(specials))
    dtype = draw(st.sampled_from(dtypes))
    return Data(values, dtype, draw(st.sampled_from(layouts)),
                beyond=dtype == "longdouble" and draw(st.booleans()))


def shapes(min_dims=0, max_dims=4, max_side=4):
    return st.lists(st.integers(0, max_side), min_size=min_dims, max_size=max_dims).map(tuple)


def feature_shapes(batch, n_in):
    """Mostly (batch, n_in); else what an Affine refuses: other widths or numbers of dimensions."""
    return st.one_of(st.just((batch, n_in)), st.just((batch, n_in)),
                     st.sampled_from([(batch, n_in + 1), (n_in,), (), (batch, 1, n_in), (batch, 0)]))


def holds(dtype, value):
    """Whether `dtype` holds `value` as a label would be written in it: ints in range, 0/1 as bool."""
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        return isinstance(value, int) and np.iinfo(dt).min <= value <= np.iinfo(dt).max
    return dt.kind == "f" or (isinstance(value, int) and value in (0, 1))


@st.composite
def labels(draw, n, classes, binary=False):
    """Labels for `n` examples: valid in an awkward dtype, layout or shape, or invalid in one way."""
    rng = np.random.default_rng(draw(seeds()))
    values = [int(v) for v in rng.integers(0, 2 if binary else classes, n)]
    kind = draw(st.sampled_from(["valid", "valid", "bad value", "bad shape", "bad dtype", "none"]))
    layout = draw(st.sampled_from(LAYOUTS))
    shape = draw(st.sampled_from([(n,), (n, 1)]))
    if kind == "none":
        return Data(None)
    if kind == "bad shape":
        shape = draw(st.sampled_from([(n + 1,), (max(n - 1, 0),), (n, 2), (), (1, n + 1), (n, 1, 1)]))
        return Data(np.resize(np.array(values, np.float64), shape), "int64", layout)
    if kind == "bad dtype":
        return Data(values, draw(st.sampled_from(["str", "object", "complex64", "complex128"])), layout, shape)
    if kind == "bad value":
        bad = draw(st.sampled_from(
            [2, -1, 3, 2 ** 62, 2 ** 64 - 1, 0.5, -0.5, np.nan, np.inf, 1e300] if binary else
            [-1, classes, classes + 7, 0.5, classes - 0.5, -0.5, np.nan, np.inf, -np.inf,
             2 ** 62, 2 ** 63 - 1, 2 ** 64 - 1, 1e300, -1e300, 1e-300]))
        if n == 0:
            return Data([bad], None, layout)
        values[draw(st.integers(0, n - 1))] = bad
    dtype = draw(st.sampled_from([d for d in REAL if all(holds(d, v) for v in values)] + [None]))
    return Data(values, dtype, layout, shape)


# -- running a scenario on one backend -----------------------------------------------------------

@dataclass(frozen=True)
class Step:
    actions: tuple     # ((slot, Data, InPlace or Exactly), ...), applied in order before the step
    lr: float = LEARNING_RATE


@dataclass
class Outcome:
    error: tuple         # (call, exception type, message), or None
    planned: bool        # whether Forward ran the compiled plan
    state: list          # snapshot() entries, then the updated parameters
    warned: list         # RuntimeWarning messages


def run(backend, build, steps):
    """Build a fresh graph and run `steps` on `backend`: one Outcome per step.

    A parameter that a step replaced gets a copy of its previous value back at
    the next step, as a user would restore it.
    """
    edf.set_backend(backend)
    edf.clear_compgraph()
    g = build()
    saved, out, drift = {}, [], {}
    for step in steps:
        for slot, value in saved.items():
            setattr(*g.slots[slot], value)
        saved = {}
        for slot, action in step.actions:
            owner, attr = g.slots[slot]
            if isinstance(owner, edf.Parameter) and slot not in saved:
                saved[slot] = np.array(owner.value)
            action.apply(owner, attr)
        out.append(attempt(g.L, step.lr, drift))
    return out


def attempt(L, lr, drift):
    """Forward, Backward and UpdateParameters: the Outcome.

    `drift` (parameter index -> scale) accumulates what the updates so far may have
    rounded each parameter's value by: learning rate times its gradient's scale, per step.
    """
    call, planned, state = "Forward", None, []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            edf.Forward()
            planned = edf.current_graph()._planned
            call = "Backward"
            edf.Backward(L)
            state = snapshot()
            call = "UpdateParameters"
            edf.learning_rate = lr
            edf.UpdateParameters()
            n = len(edf.Parameters)
            for i, (name, _, _, _, grad_scale) in enumerate(state[len(state) - n:]):
                drift[i] = drift.get(i, 0.0) + lr * grad_scale
                state.append((f"updated {name}", np.array(edf.Parameters[i].value), None, drift[i], 0.0))
            error = None
        except Exception as exc:   # what was raised is the result
            error = (call, type(exc), str(exc))
    warned = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    return Outcome(error, planned, state, warned)


def _abs(a):
    return np.nan_to_num(np.abs(np.asarray(a, np.float64)), nan=0.0, posinf=0.0, neginf=0.0)


def snapshot():
    """(name, value, grad, value scale, grad scale) for every node and parameter, in creation order.

    The scales are those of `helpers.snapshot` (|x||A|+|b| for an Affine's value, the backward
    pass run on absolute values for a gradient) over the finite entries only: NaN and
    infinities are compared exactly, and must not make the finite entries' check vacuous.
    """
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        nodes = edf.CompNodes + edf.Parameters
        values = [np.array(n.value) for n in nodes]   # reads the values the plan leaves lazy
        value_scale, mag = {}, {}
        for node in edf.CompNodes:
            if isinstance(node, edf.Affine):
                u = _abs(node.x.value) @ _abs(node.params.A.value) + _abs(node.params.b.value)
                value_scale[id(node)] = np.max(u, initial=0.0)

        def send(node, arr):
            if not isinstance(node, edf.Input):
                mag[id(node)] = mag.get(id(node), 0) + arr

        for node in reversed(edf.CompNodes):
            m = mag[id(node)] = np.maximum(_abs(node.grad), mag.get(id(node), 0))
            if isinstance(node, edf.Affine):
                send(node.x, m @ _abs(node.params.A.value).T)
                send(node.params.A, _abs(node.x.value).T @ m)
                send(node.params.b, m.sum(axis=0))
            elif isinstance(node, edf.Sigmoid):
                send(node.x, through_sigmoid(m, np.asarray(node.value)))
            elif isinstance(node, edf.Softmax):
                p = _abs(node.value)
                send(node.x, p * (m + np.sum(p * m, axis=-1, keepdims=True)))
            else:   # a loss: -log p has slope 1/p, -log(1 - p) 1/(1 - p)
                p = _abs(node.x.value)
                m = m.reshape(m.shape + (1,) * (p.ndim - 1))
                send(node.x, np.broadcast_to(m / np.maximum(np.minimum(p, np.abs(1 - p)), 1e-30), p.shape))
        return [(f"{type(n).__name__}#{i}", v, np.array(n.grad), value_scale.get(id(n), 0.0),
                 float(np.max(mag.get(id(n), 0.0), initial=0.0))) for i, (n, v) in enumerate(zip(nodes, values))]


# -- comparing two runs ------------------------------------------------------------------------

def assert_agree(actual, expected, rtol, what, scale=0.0):
    """`helpers.assert_close` where NaN may occur: NaN and infinities where the reference has them."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if expected.dtype.kind != "f":
        assert np.array_equal(actual, expected), f"{what}: differs"
        return
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    assert np.array_equal(np.isnan(a), np.isnan(e)), f"{what}: NaNs differ"
    finite = np.isfinite(e)
    assert np.array_equal(a[np.isinf(e)], e[np.isinf(e)]), f"{what}: infinities differ"
    scale = max(np.max(np.abs(e[finite]), initial=0.0), scale, np.finfo(np.float64).tiny)
    err = np.max(np.abs(a[finite] - e[finite]), initial=0.0)
    assert err <= rtol * scale, f"{what}: max abs error {err:.3g} exceeds {rtol:g} x {scale:.3g}"


def tolerance(state, step):
    """rtol_for the least precise float array of the graph; float32 rounding grows over updates."""
    single = any(a.dtype.kind == "f" and a.dtype.itemsize <= 4
                 for _, v, g, *_ in state for a in (v, g) if a is not None)
    return rtol_for(np.float32) * (10 if step else 1) if single else rtol_for(np.float64)


def describe(o):
    return f"raised {o.error[1].__name__} in {o.error[0]}: {o.error[2]}" if o.error else "gave values"


def assert_same_outcomes(ref, comp, reader, where):
    """Step by step: the same error (call, type, a message naming `reader`), or agreeing values.

    `reader`: the node that reads the odd value, or a tuple of names that may be it.
    """
    assert len(ref) == len(comp)
    prefixes = tuple(f"{name}: " for name in ((reader,) if isinstance(reader, str) else reader))
    for i, (r, c) in enumerate(zip(ref, comp)):
        at = f"{where}, step {i}"
        assert (r.error is None) == (c.error is None), f"{at}: the reference {describe(r)}, cedf {describe(c)}"
        assert not c.warned or r.warned, f"{at}: cedf warned {c.warned}, the reference did not"
        if r.error:
            assert c.error[:2] == r.error[:2], f"{at}: the reference {describe(r)}, cedf {describe(c)}"
            for o in (r, c):
                assert issubclass(o.error[1], (TypeError, ValueError, RuntimeError)), f"{at}: {describe(o)}"
                assert o.error[2].startswith(prefixes), f"{at}: {describe(o)}; expected {' or '.join(prefixes)}..."
            continue
        rtol = tolerance(r.state, i)
        assert [e[0] for e in c.state] == [e[0] for e in r.state], f"{at}: the graphs differ"
        for (name, rv, rg, value_scale, grad_scale), (_, cv, cg, *_) in zip(r.state, c.state):
            # A parameter's value is checked where the last update made it, with that update's scale.
            if not name.startswith("Parameter#"):
                assert_agree(cv, rv, rtol, f"{at}: {name}.value", value_scale)
            if rg is not None:
                assert_agree(cg, rg, rtol, f"{at}: {name}.grad", grad_scale)


def schedules(good, odd):
    """The odd step on a fresh graph, and after two good steps (planned on cedf); good steps after."""
    return {"fresh graph": [odd, good, good], "after two planned steps": [good, good, odd, good, good]}


def check(build, reader, plans):
    """Run every schedule of `plans` (name -> steps) on both backends and compare.

    Steps with a learning rate of 0 are the odd ones. The good steps must succeed
    on the reference and match it on cedf, and a good step that repeats the one
    before (same data shapes) must run the compiled plan.
    """
    for where, steps in plans.items():
        ref = run("numpy", build, steps)
        comp = run("cython", build, steps)
        for i, step in enumerate(steps):
            assert not step.lr or ref[i].error is None, f"{where}, step {i}: good data {describe(ref[i])}"
        assert_same_outcomes(ref, comp, reader, where)
        for i, step in enumerate(steps):
            if not step.lr and currently_in_test_context():   # for --hypothesis-show-statistics
                event(f"{where}: odd step " + (f"raised {comp[i].error[1].__name__}" if comp[i].error else
                                               "ran the plan" if comp[i].planned else "ran node by node"))
        for i in range(1, len(steps)):
            if steps[i] is steps[i - 1] and steps[i].lr:
                assert comp[i].planned, f"{where}, step {i}: cedf did not run the plan"


def odd(*actions):
    return Step(tuple(actions), lr=0.0)


# -- one property per node ---------------------------------------------------------------------

def affine_graph(dtype, n_in, n_out, head):
    def build():
        np.random.seed(0)
        edf.DT = dtype
        g = SimpleNamespace(x=edf.Input())
        params = edf.AffineParams(n_in, n_out)
        affine = edf.Affine(params, g.x)
        # Read by a Sigmoid, the plan adds the Affine's bias in the Sigmoid's pass.
        g.L = edf.Sigmoid(affine) if head == "sigmoid" else affine
        g.slots = {"x": (g.x, "value"), "A": (params.A, "value"), "b": (params.b, "value")}
        return g
    return build


@given(data=st.data())
def test_affine(data):
    """x, A or b of an Affine (alone, or read by a Sigmoid) replaced by anything."""
    draw = data.draw
    dtype, head = draw(GRAPH_DTYPES), draw(st.sampled_from(["none", "sigmoid"]))
    n_in, n_out, batch = draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(0, 6))
    rng = np.random.default_rng(draw(seeds()))
    good = Step((("x", clean(rng.standard_normal((batch, n_in)), dtype)),))
    slot = draw(st.sampled_from(["x", "x", "A", "b"]))
    if slot == "x":
        value = draw(arrays(draw(feature_shapes(draw(st.sampled_from([batch, batch, 0, 1, 7])), n_in))))
        step = odd(("x", value))
    else:
        shape = (n_in, n_out) if slot == "A" else (n_out,)
        shape = draw(st.sampled_from([shape, shape, shape, (), (n_out + 1, n_in), shape + (1,)]))
        step = odd(*good.actions, (slot, draw(arrays(shape, PARAM_DTYPES, PARAM_LAYOUTS))))
    check(affine_graph(dtype, n_in, n_out, head), "Affine", schedules(good, step))


def pointwise_graph(node, dtype, source, start):
    def build():
        edf.DT = dtype
        x = edf.Input() if source == "input" else edf.Parameter(start.make())
        g = SimpleNamespace(L=node(x), slots={"x": (x, "value")})
        return g
    return build


@pytest.mark.parametrize("node", [edf.Sigmoid, edf.Softmax], ids=["Sigmoid", "Softmax"])
@given(data=st.data())
def test_sigmoid_and_softmax(node, data):
    """The data of a Sigmoid or Softmax: from an Input (any shape), or a Parameter (gradients too)."""
    draw = data.draw
    dtype, source = draw(GRAPH_DTYPES), draw(st.sampled_from(["input", "parameter"]))
    # Good data has a last axis: a 0-d input makes a (1,) value (np.ascontiguousarray), which a
    # plan never fits, so 0-d data is only drawn as the odd step's.
    good_shape = draw(shapes(min_dims=1).map(lambda s: s if node is edf.Sigmoid else s[:-1] + (s[-1] or 1,)))
    odd_shape = draw(st.one_of(st.just(good_shape), shapes(max_dims=6)))
    specials = SPECIALS
    if source == "input":
        value = draw(arrays(odd_shape, specials=specials))
        # Good data in the graph's dtype: odd data of the other float dtype needs another plan.
        good_dtype = dtype
    else:
        value, good_dtype = draw(arrays(odd_shape, PARAM_DTYPES, PARAM_LAYOUTS, specials)), dtype
    start = clean(np.random.default_rng(draw(seeds())).standard_normal(good_shape), good_dtype)
    good = Step((("x", start),) if source == "input" else ())
    check(pointwise_graph(node, dtype, source, start), node.__name__, schedules(good, odd(("x", value))))


def loss_graph(loss, dtype, source, n_in, classes):
    def build():
        np.random.seed(1)
        edf.DT = dtype
        g = SimpleNamespace(x=edf.Input(), y=edf.Input())
        g.slots = {"x": (g.x, "value"), "y": (g.y, "value")}
        p = g.x
        if source == "layer":
            ce = loss is edf.CrossEntropyLoss
            params = edf.AffineParams(n_in, classes if ce else 1)
            g.slots.update(A=(params.A, "value"), b=(params.b, "value"))
            p = (edf.Softmax if ce else edf.Sigmoid)(edf.Affine(params, g.x))
        g.L = loss(p, g.y)
        return g
    return build


@pytest.mark.parametrize("loss", [edf.CrossEntropyLoss, edf.BCELoss], ids=["CrossEntropyLoss", "BCELoss"])
@given(data=st.data())
def test_losses(loss, data):
    """The labels of a loss after a Softmax/Sigmoid layer; or of a loss whose p is an Input, and p."""
    draw = data.draw
    ce = loss is edf.CrossEntropyLoss
    dtype, source = draw(GRAPH_DTYPES), draw(st.sampled_from(["layer", "input"]))
    n_in, batch = draw(st.integers(1, 4)), draw(st.integers(0, 6))
    classes = draw(st.integers(1, 5)) if ce else 1
    p_shape = (classes,) if ce else draw(st.sampled_from([(), (1,)]))   # one example's p
    rng = np.random.default_rng(draw(seeds()))

    def x_of(n, data_dtype):
        if source == "input":
            return clean(rng.uniform(0.01, 1.0, (n,) + p_shape), data_dtype)
        return clean(rng.standard_normal((n, n_in)), data_dtype)

    n = draw(st.sampled_from([batch, batch, 0, 1, 7]))
    y = draw(labels(n, classes, binary=not ce))
    x, good_dtype = x_of(n, dtype), dtype
    if source == "input" and draw(st.booleans()):
        shape = draw(st.sampled_from([(n,) + p_shape] * 3 + [(n,), (), (n, classes, 1), (n, classes + 1)]))
        x = draw(arrays(shape, low=-0.5, specials=SPECIALS + (1.0,)))
        good_dtype = dtype   # as in test_sigmoid_and_softmax
    good = Step((("x", x_of(batch, good_dtype)),
                 ("y", clean(rng.integers(0, classes if ce else 2, batch), np.int64))))
    check(loss_graph(loss, dtype, source, n_in, classes), loss.__name__, schedules(good, odd(("x", x), ("y", y))))


# -- whole graphs, with batch sizes that change between steps --------------------------------------

def mlp_graph(dtype, widths, loss):
    """x -> (Affine -> Sigmoid) * (len(widths) - 2) -> Affine -> Softmax + CE, or Sigmoid + BCE (one output)."""
    def build():
        np.random.seed(2)
        edf.DT = dtype
        g = SimpleNamespace(x=edf.Input(), y=edf.Input())
        g.slots = {"x": (g.x, "value"), "y": (g.y, "value")}
        h = g.x
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            params = edf.AffineParams(n_in, n_out)
            g.slots.update({f"A{i}": (params.A, "value"), f"b{i}": (params.b, "value")})
            h = edf.Affine(params, h)
            h = edf.Softmax(h) if i == len(widths) - 2 and loss == "ce" else edf.Sigmoid(h)
        g.L = edf.CrossEntropyLoss(h, g.y) if loss == "ce" else edf.BCELoss(h, g.y)
        return g
    return build


@given(data=st.data())
def test_whole_graphs_with_changing_batch_sizes(data):
    """An MLP trained on batches of changing sizes (empty ones too), with one odd step among them:
    odd data, labels or parameters, or any of them changed in place, behind the plan's back."""
    draw = data.draw
    dtype, loss = draw(GRAPH_DTYPES), draw(st.sampled_from(["ce", "bce"]))
    depth = draw(st.integers(1, 3))
    widths = draw(st.lists(st.integers(1, 6), min_size=depth + 1, max_size=depth + 1))
    if loss == "bce":
        widths[-1] = 1
    rng = np.random.default_rng(draw(seeds()))
    sizes = draw(st.lists(st.sampled_from([0, 1, 2, 3, 7, 16]), min_size=3, max_size=3))
    # Integral float labels too: the BCELoss plan reads float64 labels in place, as it does int64 ones.
    label_dtype = draw(st.sampled_from([np.int64, np.float64]))

    def good(n):
        return Step((("x", clean(rng.standard_normal((n, widths[0])), dtype)),
                     ("y", clean(rng.integers(0, widths[-1] if loss == "ce" else 2, n), label_dtype))))

    kind = draw(st.sampled_from(["x", "y", "x in place", "y in place", "parameter", "parameter in place"]))
    specials = SPECIALS
    n = draw(st.sampled_from([sizes[1], 0, 5]))
    fresh = good(n).actions
    if kind == "x":
        change = [("x", draw(arrays(draw(feature_shapes(n, widths[0])), specials=specials)))]
    elif kind == "y":
        y = draw(labels(n, widths[-1], binary=loss == "bce"))
        change = [("y", y)]
    elif kind == "x in place":
        change = [("x", InPlace(draw(st.integers(0, 99)), draw(st.sampled_from(specials))))]
    elif kind == "y in place":
        bad = [0, 1, -1, 2, widths[-1], 2 ** 62] + ([0.5, -0.5, np.nan, np.inf] if label_dtype is np.float64 else [])
        change = [("y", InPlace(draw(st.integers(0, 99)), draw(st.sampled_from(bad))))]
    else:
        i = draw(st.integers(0, depth - 1))
        name, shape = draw(st.sampled_from([(f"A{i}", (widths[i], widths[i + 1])), (f"b{i}", (widths[i + 1],))]))
        if kind == "parameter":
            change = [(name, draw(arrays(shape, PARAM_DTYPES, PARAM_LAYOUTS, specials)))]
        else:
            change = [(name, InPlace(draw(st.integers(0, 99)), draw(st.sampled_from(specials))))]
    reader = {"y": "CrossEntropyLoss" if loss == "ce" else "BCELoss"}.get(kind[0], "Affine")
    # In place, after planned steps: the arrays of the step before, which the plan has bound.
    warm_odd = odd(*change) if "in place" in kind else odd(*fresh, *change)
    warm_up = [good(sizes[0])] * 2 + [good(sizes[1])] * 2
    recovery = good(sizes[2])
    check(mlp_graph(dtype, widths, loss), reader, {
        "fresh graph": [odd(*fresh, *change), recovery, recovery],
        "after planned steps": warm_up + [warm_odd, recovery, recovery],
    })


# -- FIXED BUGS ------------------------------------------------------------------------------------
# Each test is the property above on the one input that broke it, now fixed.

def a_layer(loss=edf.BCELoss, dtype=np.float64):
    """Affine -> Sigmoid + BCELoss (or Softmax + CrossEntropyLoss, 3 classes) on 4 examples of 2 features."""
    good = Step((("x", clean(np.linspace(-1, 1, 8).reshape(4, 2), dtype)), ("y", clean([0, 1, 0, 1], np.int64))))
    return loss_graph(loss, dtype, "layer", 2, 3), good


def on_an_input(node, dtype, value):
    """`node` reading an Input (a loss: its p, with 0/1 labels) and good data of `dtype`."""
    x = clean(np.full((4, 1), 0.3), dtype)
    if node in (edf.Sigmoid, edf.Softmax):
        return pointwise_graph(node, dtype, "input", x), Step((("x", x),)), odd(("x", value))
    y = ("y", clean([0, 0, 0, 0], np.int64))
    return loss_graph(node, dtype, "input", 1, 1), Step((("x", x), y)), odd(("x", value), y)


@pytest.mark.parametrize("node", [edf.Sigmoid, edf.Softmax, edf.CrossEntropyLoss, edf.BCELoss],
                         ids=lambda n: n.__name__)
@pytest.mark.parametrize("layout", ["C", "list"])
def test_fixed_pointwise_node_on_an_input_keeps_the_plans_dtype(node, layout):
    # The nodes compute in float64 (the data's dtype); the plan of float32 steps converts it to float32.
    build, good, step = on_an_input(node, np.float32, Data(np.full((4, 1), 0.3), "float64", layout))
    check(build, node.__name__, schedules(good, step))


@pytest.mark.parametrize("node", [edf.Sigmoid, edf.Softmax], ids=lambda n: n.__name__)
def test_fixed_five_dimensional_input(node):
    build, good, step = on_an_input(node, np.float64, clean(np.full((1, 2, 1, 2, 3), 0.3), np.float64))
    check(build, node.__name__, schedules(good, step))


def test_fixed_softmax_of_a_row_with_nan():
    build, good, step = on_an_input(edf.Softmax, np.float64, clean([[np.nan, 1.0, 2.0]], np.float64))
    check(build, "Softmax", schedules(good, step))


@pytest.mark.parametrize("dtype", ["float16", "longdouble", ">f8", ">f4"])
def test_fixed_bce_labels_in_other_float_dtypes(dtype):
    build, good = a_layer()
    check(build, "BCELoss", schedules(good, odd(good.actions[0], ("y", Data([0, 1, 0.5, 1], dtype)))))


@pytest.mark.parametrize("label", [1e-50, 1 + 1e-10])
def test_fixed_bce_float64_labels_that_round_to_0_or_1_in_float32(label):
    build, good = a_layer(dtype=np.float32)
    check(build, "BCELoss", schedules(good, odd(good.actions[0], ("y", Data([0, 1, label, 1], "float64")))))


def test_fixed_bce_label_message_names_the_label_given():
    build, good = a_layer()
    steps = [good, good, odd(good.actions[0], ("y", Data([0, 1, 2 ** 64 - 1, 1], "uint64")))]
    ref, comp = run("numpy", build, steps), run("cython", build, steps)
    assert comp[2].error == ref[2].error


def test_fixed_parameter_value_a_list():
    build, good = a_layer()
    A = Data(np.full((2, 1), 0.5), "float64", "list")
    check(build, "Affine", schedules(good, odd(*good.actions, ("A", A))))


@pytest.mark.parametrize("dtype, layout", [("int64", "C"), ("bool", "C"), ("float64", "readonly")])
def test_fixed_parameter_value_that_cannot_be_updated(dtype, layout):
    build, good = a_layer()
    A = Data(np.full((2, 1), 1.0), dtype, layout)
    check(build, ("Affine", "Parameter", "UpdateParameters"), schedules(good, odd(*good.actions, ("A", A))))


@pytest.mark.parametrize("slot", ["x", "y"])
def test_fixed_ragged_list(slot):
    build, good = a_layer(edf.CrossEntropyLoss)
    ragged = Exactly([[0.1, 0.2], [0.3]] if slot == "x" else [0, [1, 2], 0, 1])
    actions = dict(good.actions, **{slot: ragged})
    check(build, "Affine" if slot == "x" else "CrossEntropyLoss", schedules(good, odd(*actions.items())))
