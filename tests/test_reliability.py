"""What an adversary found (issue 13): labels and graphs changed under a running step, refused
steps, nodes changed after they were planned, and the errors that named nothing.

Each test is the reproduction of one finding, with the expected behaviour checked against
the reference backend or an independently computed value.
"""
import ctypes
import threading

import numpy as np
import pytest

import cedf as edf
from cedf import _kernels, reference
from conftest import reference_requested
from helpers import assert_close, on_both

BACKENDS = pytest.mark.parametrize("backend", ["numpy", "cython"])
COMPILED = pytest.mark.skipif(reference_requested(), reason="the compiled kernels are not in use (CEDF_BACKEND=numpy)")


def mlp(loss="ce", batch=64, n_in=6, hidden=7, classes=4, seed=0, dtype=np.float64):
    """x -> Affine -> LeakyReLU h -> Affine a -> Softmax + CrossEntropyLoss, or Sigmoid + BCELoss."""
    np.random.seed(seed)
    rng = np.random.default_rng(seed)
    edf.DT = dtype
    x, y = edf.Input(), edf.Input()
    x.value = rng.standard_normal((batch, n_in))
    y.value = rng.integers(0, classes if loss == "ce" else 2, batch)
    h = edf.LeakyReLU(edf.Affine(edf.AffineParams(n_in, hidden), x), slope=0.1)
    a = edf.Affine(edf.AffineParams(hidden, classes if loss == "ce" else 1), h)
    L = edf.CrossEntropyLoss(edf.Softmax(a), y) if loss == "ce" else edf.BCELoss(edf.Sigmoid(a), y)
    return x, y, h, a, L


def everything(L):
    """Every value and gradient of the graph, copied."""
    nodes = edf.CompNodes + edf.Parameters
    return [np.array(n.value) for n in nodes] + [np.array(n.grad) for n in nodes]


def train(L, steps=3):
    for _ in range(steps):
        edf.Forward()
        edf.Backward(L)
        edf.UpdateParameters()


def assert_same_runs(comp, ref, rtol=1e-12):
    assert len(comp) == len(ref)
    for i, (c, r) in enumerate(zip(comp, ref)):
        assert_close(c, r, rtol, f"array {i}", scale=1.0)   # the values and gradients are of order 1


# -- 1. labels written by another thread while a step runs ----------------------------------------

class Toggler:
    """A thread that writes `bad` and `good` in turn into labels[-1] until stopped.

    Each write is one 8-byte store (through ctypes), so that labels[-1] only ever holds one of the
    two: NumPy's item assignment copies through memcpy, which AddressSanitizer's build intercepts
    and may copy byte by byte, and a step then met a mix of 1.0's and 2**40's bytes (2**-8).
    """

    def __init__(self, labels, good, bad):
        assert labels.dtype in (np.int64, np.float64) and labels.flags.c_contiguous
        kind = ctypes.c_int64 if labels.dtype == np.int64 else ctypes.c_double
        self.last = kind.from_address(labels.ctypes.data + (labels.size - 1) * 8)
        self.labels = labels   # kept alive while the thread writes into it
        self.good, self.bad = labels.dtype.type(good).item(), labels.dtype.type(bad).item()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self):
        while not self.stop.is_set():
            self.last.value = self.bad
            self.last.value = self.good

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


@COMPILED
@pytest.mark.parametrize("loss", [edf.CrossEntropyLoss, edf.SoftmaxCrossEntropyLoss])
@pytest.mark.parametrize("label_dtype", [np.int64, np.float64])
def test_labels_written_during_planned_steps_never_crash_nor_leak_into_a_step(loss, label_dtype):
    """The plan once checked int64 labels and then read the user's array again without the GIL:
    a label set to 2**40 in between made the loop read far out of bounds (SIGSEGV).

    Every step now either refuses the bad label or computes exactly what the good labels give.
    """
    edf.set_backend("cython")
    edf.DT = np.float64
    rng = np.random.default_rng(3)
    n, classes = 50_000, 3   # a long loop, so that the other thread writes while it runs
    x, y = edf.Input(), edf.Input()
    x.value = rng.standard_normal((n, 4))
    labels = rng.integers(0, classes, n).astype(label_dtype)
    y.value = labels
    scores = edf.Affine(edf.AffineParams(4, classes), x)
    L = loss(edf.Softmax(scores) if loss is edf.CrossEntropyLoss else scores, y)
    edf.Forward()
    edf.Forward()
    assert edf.current_graph()._planned
    edf.Backward(L)
    expected_loss, expected_grad = np.array(L.value), np.array(edf.Parameters[0].grad)

    refused = good = 0
    with Toggler(labels, labels[-1], 2 ** 40):
        for _ in range(60):
            try:
                edf.Forward()
                edf.Backward(L)
            except ValueError as exc:
                assert "outside [0, 3)" in str(exc)
                refused += 1
                continue
            good += 1
            # Backward read the labels Forward copied, so the two agree with each other, and
            # with the good labels: a step never mixes in the bad one.
            np.testing.assert_array_equal(L.value, expected_loss)
            np.testing.assert_array_equal(edf.Parameters[0].grad, expected_grad)
    assert refused + good == 60


@COMPILED
@pytest.mark.parametrize("kernel", ["cross_entropy_forward", "cross_entropy_backward",
                                    "cross_entropy_logits_forward", "cross_entropy_logits_backward"])
def test_kernels_read_labels_they_checked(kernel):
    """The node-by-node kernels too: each label is checked as it is copied, the loops read the copy."""
    rng = np.random.default_rng(4)
    n, classes = 200_000, 3
    p = rng.uniform(0.1, 1.0, (n, classes))
    labels = rng.integers(0, classes, n)
    g = rng.standard_normal(n)
    forward = kernel.endswith("forward")

    def call(kernels, labels):
        out = np.zeros(n) if forward else np.zeros((n, classes))
        if kernel == "cross_entropy_forward":
            kernels.cross_entropy_forward(p, labels, out)
        elif kernel == "cross_entropy_backward":
            kernels.cross_entropy_backward(p, labels, g, out)
        elif kernel == "cross_entropy_logits_forward":
            kernels.cross_entropy_logits_forward(p, labels, np.empty_like(p), out)
        else:
            kernels.cross_entropy_logits_backward(p, labels, g, out)
        return out

    expected = call(reference, labels.copy())
    with Toggler(labels, labels[-1], 2 ** 40):
        for _ in range(40):
            try:
                got = call(_kernels, labels)
            except ValueError as exc:
                assert str(exc) == f"{kernel}: label 1099511627776 at row {n - 1} is outside [0, 3)"
            else:
                assert_close(got, expected, 1e-12, kernel)


# -- 2. one graph, several threads --------------------------------------------------------------

@BACKENDS
def test_one_graph_driven_by_four_threads_takes_turns(backend):
    """Threads that each set x.value and run Forward on one graph once freed an array another
    thread's loop still read (heap-use-after-free in tanh_forward). Steps now take turns on the
    graph's lock; a thread that holds it across its own sequence sees its own results."""
    edf.set_backend(backend)
    edf.DT = np.float64
    np.random.seed(0)
    x = edf.Input()
    x.value = np.zeros((2000, 30))
    h = edf.Tanh(edf.Affine(edf.AffineParams(30, 40), x))
    g = edf.current_graph()
    A, b = edf.Parameters[0].value, edf.Parameters[1].value
    errors = []

    def careless(c):   # another thread may replace x.value between these two lines: allowed
        for _ in range(150):
            x.value = np.full((2000, 30), c)
            g.Forward()

    def careful(c):
        expected = np.tanh(np.full((2000, 30), c) @ A + b)
        for _ in range(150):
            with g.lock:
                x.value = np.full((2000, 30), c)
                g.Forward()
                got = h.value.copy()
            if not np.allclose(got, expected, rtol=1e-12, atol=0):
                errors.append(c)

    def recording(target):
        def run(c):
            try:
                target(c)
            except Exception as exc:   # a thread's exception would not fail the test by itself
                errors.append(repr(exc))
        return run

    threads = [threading.Thread(target=recording(careless), args=(c,)) for c in (0.1, 0.2)]
    threads += [threading.Thread(target=recording(careful), args=(c,)) for c in (0.3, 0.4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@COMPILED
def test_a_program_takes_its_graphs_lock_and_refuses_to_run_once_retired():
    """The plan's programs take the graph's lock in C (the planned steps take no Python lock), and a
    plan dropped for a change refuses to run its forward: an old handle cannot run a stale program."""
    edf.set_backend("cython")
    edf.DT = np.float64
    x = edf.Input()
    x.value = np.random.default_rng(0).standard_normal((100, 8))
    h = edf.LeakyReLU(edf.Affine(edf.AffineParams(8, 8), x))
    g = edf.current_graph()
    edf.Forward()
    edf.Forward()
    plan = g._plan
    forward = plan.forward   # the program itself
    done = threading.Event()
    other = threading.Thread(target=lambda: (forward(), done.set()))
    with g.lock:
        other.start()
        assert not done.wait(0.3), "the program ran while another thread held the graph's lock"
    other.join(5)
    assert done.is_set()
    h.slope = 0.5
    with pytest.raises(edf.backend.Replan):
        forward()
    # Its backward still differentiates the forward that ran (Graph.Backward runs it), at the
    # slope set since, as the node's own backward, which reads its slope when it runs.
    A = edf.Parameters[0]
    plan.backward(h)
    u = x.value @ A.value + edf.Parameters[1].value
    np.testing.assert_allclose(A.grad, x.value.T @ np.where(u > 0, 1.0, 0.5) / len(u), rtol=1e-12)


@COMPILED
def test_a_program_started_again_from_within_its_run_is_refused():
    """Reentry (x.value's conversion running the graph again) is refused, not a corrupted run."""
    edf.set_backend("cython")
    edf.DT = np.float64
    x = edf.Input()
    x.value = np.ones((4, 2))
    edf.Tanh(edf.Affine(edf.AffineParams(2, 2), x))
    edf.Forward()
    edf.Forward()

    class Sneaky:
        def __array__(self, dtype=None, copy=None):
            edf.Forward()
            return np.ones((4, 2))

    x.value = Sneaky()
    with pytest.raises(RuntimeError, match="a compiled program was started while it ran"):
        edf.Forward()


# -- 3. a refused step changes nothing readable -------------------------------------------------

@BACKENDS
@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_a_step_refused_for_its_labels_leaves_the_lazy_loss_values(backend, loss):
    """After two good Forwards, a third with a label out of range raised, but L.value then gave
    values computed from the refused labels (the plan's label copy was already overwritten)."""
    edf.set_backend(backend)
    x, y, h, a, L = mlp(loss)
    edf.Forward()
    edf.Forward()
    p = np.array(L.x.value, dtype=np.float64)
    good = np.array(y.value)
    expected = (-np.log(p[np.arange(len(good)), good]) if loss == "ce"
                else -np.where(good == 1, np.log(p[:, 0]), np.log1p(-p[:, 0])))
    bad = good.astype(np.float64)
    bad[np.flatnonzero(good == 0)[0]] = 2.0 if loss == "bce" else 7.0   # read as a 1, 2.0 would change the loss
    y.value = bad
    with pytest.raises(ValueError, match="BCELoss: y must hold labels 0 or 1, got 2.0" if loss == "bce"
                       else r"CrossEntropyLoss: label 7.0 is outside \[0, 4\)"):
        edf.Forward()
    np.testing.assert_allclose(L.value, expected, rtol=1e-12)


@COMPILED
def test_a_step_refused_by_its_second_loss_keeps_the_first_losss_values():
    """Labels are committed only when every loss's labels passed."""
    edf.set_backend("cython")
    x, y, h, a, L = mlp("ce")
    z = edf.Input()
    z.value = np.arange(64) % 2
    M = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(7, 1), h)), z)
    edf.Forward()
    edf.Forward()
    assert edf.current_graph()._planned
    p = np.array(L.x.value)
    expected = -np.log(p[np.arange(64), y.value])
    y.value = np.roll(y.value, 1)   # new, valid labels for the first loss...
    z.value = np.full(64, 3)        # ...and bad ones for the second
    with pytest.raises(ValueError, match="BCELoss: y must hold labels 0 or 1, got 3"):
        edf.Forward()
    np.testing.assert_allclose(L.value, expected, rtol=1e-12)


@BACKENDS
def test_a_forward_refused_midway_makes_what_it_overwrote_unreadable(backend):
    """Nodes that ran before the one that raised hold values of the refused input: they say so."""
    edf.set_backend(backend)
    x, y, h, a, L = mlp("ce")
    edf.Forward()
    edf.Forward()
    last = np.array(L.value)
    x.value = 3 * x.value
    y.value = np.full(64, 9)   # h and a are computed from the new x, then the loss refuses the labels
    edf.current_graph().release_plan()   # the node-by-node path: the plan would refuse before computing
    with pytest.raises(ValueError, match=r"label 9 is outside \[0, 4\)"):
        edf.Forward()
    for node in (h, a):
        with pytest.raises(RuntimeError, match=rf"{type(node).__name__}: no value: the last Forward\(\) was "
                                               r"refused \(ValueError: CrossEntropyLoss: label 9"):
            node.value
    np.testing.assert_array_equal(L.value, last)   # the loss had not run: its value stands
    with pytest.raises(RuntimeError, match="no value: the last Forward"):
        edf.Backward(L)
    y.value = np.zeros(64, int)
    edf.Forward()   # a good step makes everything readable again
    assert np.isfinite(h.value).all() and np.isfinite(L.value).all()


# -- 4. nodes changed after they were planned ---------------------------------------------------

def _change_then_train(change):
    def script():
        x, y, h, a, L = mlp("ce")
        spare = edf.AffineParams(7, 4)   # made before the plan, so that the lists do not grow later
        ones = edf.Parameter(np.ones((7, 4)))
        train(L, 2)
        change(h, a, L, spare, ones)
        train(L, 2)
        return everything(L)
    return script


CHANGES = {
    "slope": lambda h, a, L, spare, ones: setattr(h, "slope", 0.5),
    # Planned with the bias in the ReLU's pass, whose backward reads the output's sign: a slope
    # below 0 must rebuild the plan with the pair apart.
    "slope below 0": lambda h, a, L, spare, ones: setattr(h, "slope", -0.5),
    "params": lambda h, a, L, spare, ones: setattr(a, "params", spare),
    "params.A": lambda h, a, L, spare, ones: setattr(a.params, "A", ones),
    "x": lambda h, a, L, spare, ones: setattr(L.x, "x", edf.CompNodes[0]),   # Softmax of the first Affine
    "grad": lambda h, a, L, spare, ones: setattr(h, "grad", np.zeros_like(h.grad)),
    "value": lambda h, a, L, spare, ones: setattr(h, "value", np.zeros_like(h.value)),
    "CompNodes": lambda h, a, L, spare, ones: setattr(edf.current_graph(), "CompNodes", list(edf.CompNodes)),
}


@pytest.mark.parametrize("change", list(CHANGES.values()), ids=list(CHANGES))
def test_a_node_changed_after_it_was_planned_is_followed(change):
    """The plan once ignored these changes, while the NumPy backend followed them."""
    ref, comp = on_both(_change_then_train(change))
    assert_same_runs(comp, ref)


@BACKENDS
def test_a_list_entry_replaced_after_planning_is_run(backend):
    """A node put in another's place in CompNodes (same length): Forward computes the new one."""
    edf.set_backend(backend)
    x, y, h, a, L = mlp("ce")
    other = edf.CrossEntropyLoss(L.x, y)
    edf.CompNodes.remove(other)
    train(L, 2)
    edf.CompNodes[edf.CompNodes.index(L)] = other
    y.value = np.roll(y.value, 3)
    edf.Forward()
    p = np.array(L.x.value)
    np.testing.assert_allclose(other.value, -np.log(p[np.arange(64), y.value]), rtol=1e-12)


@BACKENDS
def test_a_grad_replaced_by_the_user_receives_the_gradient(backend):
    edf.set_backend(backend)
    x, y, h, a, L = mlp("ce")
    train(L, 2)
    mine = np.zeros_like(h.grad)
    h.grad = mine
    edf.Forward()
    edf.Backward(L)
    assert h.grad is mine and np.abs(mine).max() > 0
    expected = np.array(mine)
    edf.Forward()
    edf.Backward(L)   # planned now, writing into the same array
    assert h.grad is mine
    np.testing.assert_allclose(mine, expected, rtol=1e-12)


def test_rewiring_to_another_graphs_node_raises_as_at_construction():
    x, y, h, a, L = mlp("ce")
    train(L, 2)
    with edf.Graph() as elsewhere:
        stranger = edf.Sigmoid(edf.Input())
        other = edf.Parameter(np.ones((7, 4)))
    with pytest.raises(ValueError, match=r"Softmax: x \(Sigmoid\) belongs to another graph"):
        L.x.x = stranger
    with pytest.raises(TypeError, match="Softmax: x must be a cedf node"):
        L.x.x = np.zeros(3)
    with pytest.raises(ValueError, match=r"AffineParams: A \(Parameter\) belongs to another graph"):
        a.params.A = other
    with pytest.raises(ValueError, match="LeakyReLU: slope must be a finite number, got nan"):
        h.slope = float("nan")
    with pytest.raises(TypeError, match="Affine: params must be an AffineParams"):
        a.params = 3
    # Nothing was changed, and a refused change keeps the plan.
    assert L.x.x is a and h.slope == 0.1 and a.params.A is edf.Parameters[2]
    assert elsewhere.Parameters == [other]
    edf.Forward()
    assert edf.current_graph()._planned == (edf.get_backend() == "cython")


# -- 8. errors that named nothing ---------------------------------------------------------------

@pytest.mark.parametrize("dt", [np.int32, np.float16, np.bool_, None, "float128x"])
def test_a_bad_dtype_setting_is_named(dt):
    edf.DT = dt
    with pytest.raises(TypeError, match=r"cedf.DT must be np.float32 or np.float64, got .*set edf.DT = np.float32"):
        edf.AffineParams(2, 3)
    with pytest.raises(TypeError, match=r"cedf.DT must be np.float32 or np.float64"):
        edf.Sigmoid(edf.Input())


@BACKENDS
def test_update_before_any_backward_says_to_call_backward(backend):
    edf.set_backend(backend)
    x, y, h, a, L = mlp("ce")
    edf.Forward()
    with pytest.raises(RuntimeError, match=r"Parameter \(unnamed, shape \(6, 7\)\): UpdateParameters\(\) needs "
                                           r"its gradient, and .grad is None: call Backward\(L\) first"):
        edf.UpdateParameters()


@BACKENDS
def test_a_grad_replaced_by_none_is_named(backend):
    edf.set_backend(backend)
    np.random.seed(0)
    x, y = edf.Input(), edf.Input()
    x.value, y.value = np.ones((4, 2)), np.array([0, 1, 0, 1])
    params = edf.AffineParams(2, 1, name="out")
    L = edf.BCELoss(edf.Sigmoid(edf.Affine(params, x)), y)
    train(L, 2)
    params.b.grad = None
    before = params.A.value.copy()
    with pytest.raises(RuntimeError, match=r"Parameter 'out.b': UpdateParameters\(\) needs its gradient"):
        edf.UpdateParameters()
    np.testing.assert_array_equal(params.A.value, before)   # refused for one parameter: none updated
    params.b.grad = np.zeros(3)
    with pytest.raises(ValueError, match=r"Parameter 'out.b': .grad has shape \(3,\), .value \(1,\)"):
        edf.UpdateParameters()
    params.b.grad = None
    opt = edf.optim.SGD(edf.Parameters, lr=0.1)
    with pytest.raises(RuntimeError, match=r"SGD: Parameter 'out.b' has no gradient; call Backward\(L\)"):
        opt.step()


@COMPILED
def test_setting_any_public_attribute_of_any_node_drops_the_plan():
    """The rule holds for every node of cedf's, by construction (BuiltinNode.__setattr__), so
    that a node added later follows it without code of its own."""
    edf.set_backend("cython")
    edf.DT = np.float64
    rng = np.random.default_rng(0)
    x, y, z = edf.Input(), edf.Input(), edf.Input()
    x.value, y.value, z.value = rng.standard_normal((8, 3)), rng.integers(0, 3, 8), rng.integers(0, 2, 8)
    a = edf.Affine(edf.AffineParams(3, 3), x)
    hidden = [cls(a) for cls in (edf.Sigmoid, edf.Tanh, edf.ReLU, edf.LeakyReLU, edf.Softmax)]
    added = edf.Add(hidden[0], edf.Flatten(edf.Reshape(hidden[2], (1, 3))))
    signals = edf.Reshape(hidden[3], (1, 3))
    [edf.MaxPool(signals, 2, stride=1), edf.AvgPool(signals, 2)]
    normalised = edf.Dropout(edf.LayerNorm(edf.BatchNorm(added, num_features=3), num_features=3), p=0.2)
    [edf.CrossEntropyLoss(hidden[-1], y), edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(3, 1), a)), z),
     edf.SoftmaxCrossEntropyLoss(edf.Add(hidden[1], normalised), y)]
    seq = edf.Conv(edf.ConvParams(1, 1, 3), edf.Reshape(a, (1, 3)), padding=1)
    edf.Conv(edf.ConvParams(1, 2, (1, 2)), edf.Reshape(seq, (1, 1, 3)), stride=(1, 2))
    g = edf.current_graph()
    classes = {type(node) for node in g.CompNodes}

    def public_subclasses(cls):
        for sub in cls.__subclasses__():
            yield from public_subclasses(sub)
            if sub.__module__.startswith("cedf.") and not sub.__name__.startswith("_"):
                yield sub
    # Every node the plan covers (BCEWithLogitsLoss keeps its graph node by node, see cedf.plan).
    assert classes == set(public_subclasses(edf.nodes.BuiltinNode)) - {edf.BCEWithLogitsLoss}
    for node in list(g.CompNodes):
        for name in [n for n in vars(node) if not n.startswith("_")] + ["value", "grad"]:
            edf.Forward()
            edf.Forward()
            assert g._planned
            setattr(node, name, getattr(node, name))
            assert g._plan is None, f"{type(node).__name__}.{name} = ... kept the plan"


def test_the_nodes_of_a_graph_nobody_kept_say_so():
    """Nodes hold their graph weakly (a dropped graph is freed at once): using the nodes of a
    graph that nobody kept after its `with` block names the fix, instead of a graph mix-up."""
    with edf.Graph():
        x, y = edf.Input(), edf.Input()
        L = edf.BCELoss(edf.Sigmoid(edf.Affine(edf.AffineParams(2, 1), x)), y)
    message = r"the graph of the loss BCELoss no longer exists, .* keep it \(`with edf.Graph\(\) as g:`\)"
    with pytest.raises(ValueError, match="fit: " + message):
        edf.fit(L, x, y, np.zeros((4, 2)), np.zeros(4), epochs=1)
    with pytest.raises(ValueError, match="gradcheck: " + message):
        edf.gradcheck(L)
    with pytest.raises(ValueError, match="minimize: " + message):
        edf.optim.minimize(L)
    x.value, y.value = np.zeros((4, 2)), np.zeros(4)
    with pytest.raises(RuntimeError, match="Affine: its graph was cleared .* or no longer exists"):
        L.x.x.forward()


# -- labels as users give them (issue 14) -------------------------------------------------------

@COMPILED
@pytest.mark.parametrize("loss", ["ce", "bce"])
@pytest.mark.parametrize("dtype", [np.int64, np.float32, np.float64])
@pytest.mark.parametrize("column", [False, True])
def test_labels_as_integral_floats_or_a_column_are_read_by_the_plan_as_they_are(loss, dtype, column):
    """Integral float labels, and labels of shape (n, 1), go straight into the plan's checked copy: the
    numbers of int64 labels, no conversion in Python per step (the binding keeps the user's array)."""
    edf.set_backend("cython")
    x, y, h, a, L = mlp(loss)
    good = np.array(y.value)
    train(L, 2)
    expected = everything(L)
    edf.clear_compgraph()
    x, y, h, a, L = mlp(loss)
    labels = good.astype(dtype)
    y.value = labels.reshape(-1, 1) if column else labels
    train(L, 2)
    assert_same_runs(everything(L), expected, 0.0)
    program, bound = edf.current_graph()._plan._forward, []
    while True:   # every buffer the forward program last ran on
        try:
            bound.append(program.bound(len(bound)))
        except IndexError:
            break
    assert any(b is y.value for b in bound), "the labels were converted, not read as they are"
    bad = y.value.copy()
    bad.flat[3] = 7.5 if dtype != np.int64 else 7
    y.value = bad
    message = (r"y must hold whole class indices, got 7.5" if loss == "ce" and dtype != np.int64
               else r"label 7 is outside \[0, 4\)" if loss == "ce" else r"y must hold labels 0 or 1, got 7")
    with pytest.raises(ValueError, match=message):
        edf.Forward()
