"""Gradient checking: backpropagation against the symmetric difference quotient.

The lecture checks a node's gradient numerically: nudge one entry of a
parameter by ±eps, run the graph forward, and compare
``(L(θ + eps) - L(θ - eps)) / (2 eps)`` with what `Backward` computed.
`gradcheck` does that for every entry of every parameter (and, on request, of
every Input) of a graph, with user-written nodes too, and reports the worst
relative error per array. In float32 the quotient itself is only good to
about 1e-3, so a graph whose parameters are float32 (cedf's default) is
checked in float64: its parameters' values are replaced by float64 copies for
the check (every node then computes in float64) and put back afterwards, the
same arrays as before. Where the lecture's numerics put a kink on purpose (a
Sigmoid's input clipped at ±10, a Softmax's shifted logits floored at -10),
the quotient and the backprop disagree without a bug: the report says so.

It checks the graph as training runs it: on the compiled backend, a graph's
compiled plan (`cedf.plan`) once it has one, for the backprop and for every
Forward of the quotients, so that the plan's own gradients are what is
checked. Checking Inputs needs their gradients, which the plan never computes:
then the backprop runs node by node. The result says which ran.
"""
from dataclasses import dataclass, field

import numpy as np

from . import nodes
from .graph import graph_of


@dataclass
class GradcheckResult:
    """Per checked array: max |numeric - backprop| / max(|numeric|, |backprop|, floor), its worst relative error.

    `planned_backprop`: the gradients compared are those of the graph's compiled
    plan (False: its nodes' own backward, one by one). `planned_quotients`: every
    Forward of the difference quotients ran the plan.
    """

    errors: dict = field(default_factory=dict)
    tol: float = 0.0
    planned_backprop: bool = False
    planned_quotients: bool = False
    #: Said below the errors: in which dtype it was checked, and the kinks active at the point checked.
    notes: list = field(default_factory=list)

    @property
    def planned(self):
        """Whether the compiled plan ran throughout: the backprop and every quotient."""
        return self.planned_backprop and self.planned_quotients

    @property
    def passed(self):
        return all(e <= self.tol for e in self.errors.values())

    @property
    def worst(self):
        return max(self.errors.values(), default=0.0)

    def __str__(self):
        ran = {True: "the compiled plan", False: "node by node"}
        lines = [f"gradcheck: {'passed' if self.passed else 'FAILED'} (tol {self.tol:g}; "
                 f"backprop {ran[self.planned_backprop]}, quotients {ran[self.planned_quotients]})"]
        lines += [f"  {name:<24} {err:.3g}{'' if err <= self.tol else '  <-- exceeds tol'}"
                  for name, err in self.errors.items()]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


class _WatchedInput(nodes.Input):
    def addgrad(self, delta):
        self._caught += delta


def _mean_loss(graph, loss, planned):
    """The batch-mean loss after a Forward of the graph; whether that Forward ran the plan is appended to `planned`."""
    graph.Forward()
    planned.append(graph._planned)
    return float(np.mean(np.asarray(loss.value, dtype=np.float64)))


def _relative_error(numeric, backprop, floor):
    # Near an optimum every gradient is tiny and the quotient's rounding (about
    # 1e-16 |L| / eps) is all that is left: below `floor`, the error is absolute.
    scale = max(np.max(np.abs(numeric), initial=0.0), np.max(np.abs(backprop), initial=0.0), floor)
    diff = np.max(np.abs(numeric - backprop), initial=0.0)
    return 0.0 if diff == 0 else diff / scale


def _kinks(graph):
    """What the lecture's clip and floor do at the point checked: a note per node where they are active."""
    from .reference import SIGMOID_CLIP, SOFTMAX_FLOOR

    notes = []
    for node in graph.CompNodes:
        if type(node) not in (nodes.Sigmoid, nodes.Softmax):
            continue
        x = np.asarray(node.x.value, dtype=np.float64)
        if isinstance(node, nodes.Sigmoid):
            active = int(np.count_nonzero(np.abs(x) >= SIGMOID_CLIP))
            what = f"its input is clipped to [-{SIGMOID_CLIP:g}, {SIGMOID_CLIP:g}], as in the lecture"
        else:
            rows = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
            active = int(np.count_nonzero(rows - rows.max(axis=1, keepdims=True) <= SOFTMAX_FLOOR))
            what = f"its shifted logits are floored at {SOFTMAX_FLOOR:g}, as in the lecture"
        if active:
            notes.append(f"{type(node).__name__}: {what}, and {active} entries are at or beyond it here: the "
                         f"gradient is 0 there while a nudge moves the loss, so errors next to it are the "
                         f"lecture's kink, not a wrong backward (check at points away from it)")
    return notes


def gradcheck(loss, eps=1e-6, tol=1e-5, floor=1e-4, inputs=(), graph=None, raise_on_failure=False):
    """Compare ``Backward(loss)`` with central differences for every parameter of the graph.

    The graph runs as training runs it: through its compiled plan where it
    has one (a graph that has not run yet gets one from its first Forward,
    here), both for the backprop and for the quotients. `inputs` lists Input
    nodes to check as well (their gradient is what a node sends them through
    ``addgrad``, caught here; an Input itself keeps none); their backprop
    runs node by node, as the plan computes no gradient for an Input.
    The loss differentiated is the mean of ``loss.value``, as in
    `Backward`. Each array's error is relative to its largest gradient, or to
    `floor` if that is smaller. Returns a `GradcheckResult`; with `raise_on_failure`, raises
    AssertionError listing the errors when one exceeds `tol`. Parameters and
    inputs are left exactly as they were; a float32 graph is checked in
    float64 (see the module's docstring), and the result's notes say so.
    """
    graph = graph_of(loss, graph, "gradcheck", "the loss ")
    # A training BatchNorm updates its running statistics at every Forward: the check's
    # hundreds of Forwards must not move them (what cedf.save stores beside the parameters).
    # (A float64 check of a float32 graph gives the node float64 statistics: the arrays are put back too.)
    statistics = [(c, name, getattr(c, name)) for c in graph.CompNodes for name in getattr(c, "_STATISTICS", ())]
    kept = [array.copy() for _, _, array in statistics]
    try:
        return _in_float64(loss, eps, tol, floor, inputs, graph, raise_on_failure)
    finally:
        for (node, name, array), value in zip(statistics, kept):
            array[...] = value
            if getattr(node, name) is not array:
                nodes.set_quietly(node, name, array)
                graph.release_plan()   # a plan built meanwhile reads the array the node had then


def _in_float64(loss, eps, tol, floor, inputs, graph, raise_on_failure):
    """The check, of a float32 graph on float64 copies of its parameters (see the module's docstring)."""
    single = [p for p in graph.Parameters if getattr(p.value, "dtype", None) == np.float32]
    if not single:
        return _gradcheck(loss, eps, tol, floor, inputs, graph, raise_on_failure, [])
    originals = [(p, p.value, p.grad) for p in single]
    try:
        for p in single:
            p.value = p.value.astype(np.float64)
        note = (f"checked in float64: the graph's {len(single)} float32 parameters were copied to float64 for "
                f"the check, and put back (in float32 the quotient is good to about 1e-3 only)")
        return _gradcheck(loss, eps, tol, floor, inputs, graph, raise_on_failure, [note])
    finally:
        for p, value, grad in originals:
            p.value, p.grad = value, grad
        graph.Forward()   # the graph's values as they were, in float32


def _gradcheck(loss, eps, tol, floor, inputs, graph, raise_on_failure, notes):
    names = {}
    for i, p in enumerate(graph.Parameters):
        names[id(p)] = getattr(p, "name", None) or f"Parameter#{i}"
    arrays = [(names[id(p)], p) for p in graph.Parameters]
    arrays += [(getattr(x, "name", None) or f"Input#{i}", x) for i, x in enumerate(inputs)]

    # Backprop. An Input normally takes no gradient (the nodes and the plan skip it):
    # a checked one becomes, for this Backward, an Input whose addgrad keeps what it gets.
    checked = [x for _, x in arrays[len(graph.Parameters):]]
    for x in checked:
        if not isinstance(x, nodes.Input):
            raise TypeError(f"gradcheck: inputs must be Input nodes, got {type(x).__name__}")
        value = np.asarray(x.value)   # a writable copy of its own, nudged below
        x.value = np.array(value, dtype=value.dtype if value.dtype.kind == "f" else np.float64)
        x.__class__, x._caught = _WatchedInput, np.zeros(np.shape(x.value))
    try:
        if checked:
            graph._forward_node_by_node()   # the plan would skip the inputs' gradients
        else:
            graph.Forward()
            if graph._plan is not None and not graph._planned:
                graph.Forward()   # that Forward built the plan: later ones run it
        graph.Backward(loss)
        # A Backward that could not run the plan ran the nodes, after a Forward of theirs.
        planned_backprop = graph._planned
        backprop = {id(node): np.array(node._caught if node in checked else node.grad, dtype=np.float64)
                    for _, node in arrays}
    finally:
        for x in checked:
            x.__class__ = nodes.Input
            del x._caught

    result = GradcheckResult(tol=tol, planned_backprop=bool(planned_backprop))
    planned = []
    for name, node in arrays:
        value = node.value
        original = value.copy()
        numeric = np.zeros(value.shape, dtype=np.float64)
        try:
            for index in np.ndindex(value.shape):
                value[index] = original[index] + eps
                up = _mean_loss(graph, loss, planned)
                value[index] = original[index] - eps
                down = _mean_loss(graph, loss, planned)
                value[index] = original[index]
                numeric[index] = (up - down) / (2 * eps)
        finally:
            value[...] = original
        result.errors[name] = _relative_error(numeric, backprop[id(node)], floor)
    result.planned_quotients = bool(planned) and all(planned)
    graph.Forward()   # values as they were before the check
    result.notes = notes + (_kinks(graph) if not result.passed else [])
    if raise_on_failure and not result.passed:
        raise AssertionError(str(result))
    return result
