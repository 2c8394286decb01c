"""The computation graph: the lecture's global lists of nodes and the three
functions that walk them.

As in the lecture, nodes append themselves to `CompNodes` or `Parameters` when
they are created, so creation order is a valid evaluation order: `Forward` runs
the list front to back, `Backward` back to front. A `Graph` holds the two lists;
the package-level `cedf.CompNodes` and `cedf.Parameters` are those of the
current graph.
"""
import cedf

from .nodes import zero_grad


class Graph:
    """The nodes of one computation graph, in creation order."""

    def __init__(self):
        self.CompNodes = []
        self.Parameters = []


_current = Graph()


def current_graph():
    """The graph that new nodes join and that Forward/Backward/UpdateParameters run."""
    return _current


def clear_compgraph():
    """Start a new, empty graph (the lecture's ``edf.clear_compgraph()``)."""
    global _current
    _current = Graph()


def Forward():
    """Compute every node's value, in creation order."""
    for c in _current.CompNodes:
        c.forward()


def Backward(loss):
    """Backpropagate the mean of `loss` over the batch into every ``.grad``.

    Every gradient is zeroed, ``loss.grad`` is seeded with 1/B (B = the batch
    size, the length of ``loss.value``), and the nodes run backward in reverse
    creation order, each adding into its inputs' gradients.
    """
    if not any(c is loss for c in _current.CompNodes):
        raise ValueError(f"Backward: the loss {type(loss).__name__} is not a node of the current graph")
    for c in _current.CompNodes + _current.Parameters:
        zero_grad(c)
    n = len(loss.value) if loss.value.ndim else 1
    loss.grad[...] = 1.0 / max(n, 1)
    for c in reversed(_current.CompNodes):
        c.backward()


def UpdateParameters():
    """One gradient-descent step, ``value -= cedf.learning_rate * grad``, for every parameter."""
    for p in _current.Parameters:
        p.UpdateParameters()
