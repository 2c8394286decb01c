"""The computation graph: the lecture's global lists of nodes and the three
functions that walk them.

As in the lecture, nodes append themselves to `CompNodes` or `Parameters` when
they are created, so creation order is a valid evaluation order: `Forward` runs
the list front to back, `Backward` back to front. A `Graph` holds the two lists;
the package-level `cedf.CompNodes` and `cedf.Parameters` are those of the
current graph.

On the compiled backend a graph of cedf's own nodes is also compiled into a
plan (`cedf.plan`) after its first Forward, and later steps run the plan: the
same results, without a Python call per node.
"""
import cedf

from . import backend
from .backend import Replan
from .nodes import zero_grad

if backend._engine is not None:
    from . import plan


class Graph:
    """The nodes of one computation graph, in creation order."""

    def __init__(self):
        self.CompNodes = []
        self.Parameters = []
        self._plan = None           # the compiled plan, once built
        self._planned = False       # whether the last Forward ran the plan


_current = Graph()


def current_graph():
    """The graph that new nodes join and that Forward/Backward/UpdateParameters run."""
    return _current


def clear_compgraph():
    """Start a new, empty graph (the lecture's ``edf.clear_compgraph()``)."""
    global _current
    _current = Graph()


def _forward_node_by_node(g):
    if g._planned:
        # Loss values the plan left to compute read buffers that are about to change.
        for c in g.CompNodes:
            c.value
    g._plan = None
    g._planned = False
    for c in g.CompNodes:
        c.forward()
    if backend.kernels is backend._kernels:   # the compiled backend: compile the graph
        g._plan = plan.build(g)


def Forward():
    """Compute every node's value, in creation order."""
    g = _current
    if g._plan is not None and backend.kernels is backend._kernels:
        try:
            g._plan.forward()
            g._planned = True
            return
        except Replan:
            pass
    _forward_node_by_node(g)


def Backward(loss):
    """Backpropagate the mean of `loss` over the batch into every ``.grad``.

    Every gradient is zeroed, ``loss.grad`` is seeded with 1/B (B = the batch
    size, the length of ``loss.value``), and the nodes run backward in reverse
    creation order, each adding into its inputs' gradients.
    """
    g = _current
    if g._planned:
        if backend.kernels is backend._kernels:
            try:
                g._plan.backward(loss)
                return
            except Replan:
                pass
        # The nodes' own backward needs what their own forward saw.
        _forward_node_by_node(g)
    if not any(c is loss for c in g.CompNodes):
        raise ValueError(f"Backward: the loss {type(loss).__name__} is not a node of the current graph")
    for c in g.CompNodes + g.Parameters:
        zero_grad(c)
    n = len(loss.value) if loss.value.ndim else 1
    loss.grad[...] = 1.0 / max(n, 1)
    for c in reversed(g.CompNodes):
        c.backward()


def UpdateParameters():
    """One gradient-descent step, ``value -= cedf.learning_rate * grad``, for every parameter."""
    g = _current
    if g._plan is not None and backend.kernels is backend._kernels:
        try:
            g._plan.update(cedf.learning_rate)
            return
        except Replan:
            pass
    for p in g.Parameters:
        p.UpdateParameters()
