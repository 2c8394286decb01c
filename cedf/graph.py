"""Computation graphs: the lecture's global lists of nodes, the three functions
that walk them, and `Graph`, the object that holds a pair of such lists.

As in the lecture, nodes append themselves to `CompNodes` or `Parameters` when
they are created, so creation order is a valid evaluation order: `Forward` runs
the list front to back, `Backward` back to front. The lists belong to a `Graph`;
`cedf.CompNodes`, `cedf.Parameters` and the module-level `Forward`,
`Backward`, `UpdateParameters` and `clear_compgraph` are those of the current
graph. That is the lecture's global graph unless a ``with cedf.Graph() as g:``
block makes ``g`` current, for the thread that runs the block: several graphs
can live side by side, be trained in turn, or be trained in two threads at
once (the kernels run without the GIL).

On the compiled backend a graph of cedf's own nodes is also compiled into a
plan (`cedf.plan`) after its first Forward, and later steps run the plan: the
same results, without a Python call per node.

One graph driven from several threads at once is safe: each graph has a lock,
and its Forward, Backward and UpdateParameters (and every change to its nodes
that drops its plan) take turns on it, so a step never reads a buffer that
another thread's step replaces. Separate graphs run in parallel.

A Forward that raises leaves no value half computed: when the plan refuses a
step (bad labels) it has changed nothing, and when a node raises midway the
nodes before it, which computed from the refused inputs, raise too when their
``.value`` is read, naming the error, until a Forward succeeds; the others keep
the last good step's values.
"""
import contextlib
import math
import threading

import numpy as np

import cedf

from . import backend
from .backend import Replan
from .nodes import Parameter, inputs_of, refuse_values, zero_grad

if backend._engine is not None:
    from . import plan

_ABSENT = object()   # an attribute the owner's __dict__ does not hold (the class's default is read)


def _put(owner, attr, value):
    if value is _ABSENT:
        owner.__dict__.pop(attr, None)
    else:
        owner.__dict__[attr] = value


class Graph:
    """The nodes of one computation graph, in creation order.

    ``with Graph() as g:`` makes `g` the current graph of this thread for the
    block: new nodes join it and the module-level functions run it. The methods
    below run it from anywhere.
    """

    def __init__(self):
        #: One step at a time (see the module's docstring). Hold it yourself to make a
        #: sequence atomic: ``with g.lock: x.value = X; g.Forward(); out = L.value.copy()``.
        self.lock = backend._engine.StepLock() if backend._engine is not None else threading.RLock()
        self._nodes, self._parameters = [], []
        self._plan = None           # the compiled plan, once built
        # A plan dropped after its forward ran (release_plan): its last run's inputs, for a
        # Backward that must then run node by node (`_replay_forward`). None once a Forward
        # runs node by node.
        self._replay = None
        self._predicted = False     # predict() ran since the last Forward: no Backward (see there)
        # The mode, as the nodes that train and evaluate differently read it (Dropout,
        # BatchNorm): an array, which the compiled plan reads at every run, so that a
        # change of mode needs no new plan.
        self._training = np.ones(1, np.int64)
        self._batch = None          # the last node-by-node Backward's batch size (see `batch`)

    @property
    def batch(self):
        """The batch size of the last Backward (its gradients are means over that many examples),
        None before one: how `cedf.distributed` weighs this process's gradients."""
        plan = self._plan
        if plan is not None and plan.last_batch is not None:   # the last Backward ran the plan
            return plan.last_batch
        return self._batch

    @property
    def training(self):
        """True in training mode (the default), False in evaluation mode (`eval`)."""
        return bool(self._training[0])

    def train(self):
        """Training mode: Dropout drops, BatchNorm normalises by the batch's statistics and tracks them."""
        with self.lock:   # not in the middle of another thread's step
            self._training[0] = 1
        return self

    def eval(self):
        """Evaluation mode: Dropout passes its input through, BatchNorm uses its running statistics."""
        with self.lock:
            self._training[0] = 0
        return self

    @contextlib.contextmanager
    def evaluating(self):
        """Evaluation mode for a `with` block, then the mode it had (`predict`, `evaluate`)."""
        with self.lock:
            before = self._training[0]
            self._training[0] = 0
            try:
                yield self
            finally:
                self._training[0] = before

    @property
    def _planned(self):
        """Whether the plan's forward program ran since the plan was built (then Backward runs the plan's)."""
        plan = self._plan
        return plan is not None and plan.forward_ran

    # The lists may be replaced as a whole, too: the plan, built for the old ones, goes.
    @property
    def CompNodes(self):
        return self._nodes

    @CompNodes.setter
    def CompNodes(self, nodes):
        with self.lock:
            self.release_plan()
            self._nodes = nodes

    @property
    def Parameters(self):
        return self._parameters

    @Parameters.setter
    def Parameters(self, parameters):
        with self.lock:
            self.release_plan()
            self._parameters = parameters

    def __repr__(self):
        return f"<cedf.Graph: {len(self.CompNodes)} nodes, {len(self.Parameters)} parameters>"

    def __enter__(self):
        _local.stack.append(self)
        _local.graph = self
        return self

    def __exit__(self, *exc_info):
        stack = _local.stack
        if not stack or stack[-1] is not self:
            raise RuntimeError("Graph: `with` blocks of graphs must close in the order they opened")
        stack.pop()
        _local.graph = stack[-1] if stack else _default

    # The plan's programs take the lock themselves, in C, and refuse to run (Replan)
    # once the plan was released: the planned paths below need no Python lock.

    def Forward(self):
        """Compute every node's value, in creation order."""
        plan = self._plan
        if plan is not None and backend.kernels is backend._kernels:
            try:
                plan.forward()
                return
            except Replan:
                pass
        self._forward_node_by_node()

    def release_plan(self):
        """Drop the compiled plan (the next Forward runs node by node and builds a new one)."""
        with self.lock:
            plan = self._plan
            if plan is None:
                return
            if plan.forward_ran:
                # Loss values the plan left to compute read buffers that are about to change.
                for c in self.CompNodes:
                    c.value
            plan.retire()
            self._plan = None
            self._replay = plan

    def attribute_changing(self, owner, name):
        """Drop the plan before a node (or a layer's parameter holder) `owner` sets `name`: its
        programs read the attribute as it is now. So does the forward it ran, which a Backward
        may have to run again node by node (`_replay_forward`): that replay puts it back."""
        with self.lock:
            self.release_plan()
            last = self._replay
            if last is not None and last.forward_ran:
                last.changed.setdefault((id(owner), name), (owner, name, owner.__dict__.get(name, _ABSENT)))

    def _forward_node_by_node(self):
        with self.lock:
            self.release_plan()
            self._replay = None
            self._predicted = False
            self._run_nodes(self.CompNodes)
            if backend.kernels is backend._kernels:   # the compiled backend: compile the graph
                self._plan = plan.build(self)

    @staticmethod
    def _run_nodes(nodes):
        """Every node's forward, in order; a Forward that raises leaves no state changed (running
        statistics, a Dropout's step: the nodes' `_saved_state`) and no value readable."""
        restore = [c._saved_state() for c in nodes if hasattr(c, "_saved_state")]
        done, before = 0, None
        try:
            for c in nodes:
                before = c.__dict__.get("_value")
                c.forward()
                done += 1
        except BaseException as exc:
            for put_back in restore:
                put_back()
            # The nodes that ran hold values of the refused inputs; the one that raised
            # had checked them first, unless it took a new buffer already.
            ran = nodes[:done + (nodes[done].__dict__.get("_value") is not before)]
            refuse_values(ran, exc)
            raise

    def _replay_forward(self, last):
        """Run the forward of plan `last`'s last run again, node by node, so that the nodes hold
        what their own backward needs: on the arrays that run read (whatever the Inputs and
        Parameters hold now), in its training or evaluation mode, with every node's state
        (running statistics, a Dropout's step) as it was then and put back afterwards. Only
        the nodes that plan ran: a node made since has no value, and Backward says so, as
        node by node."""
        read = [(b.owner, b.attr, b.array) for b in last.forward_bindings() if b.array is not None]
        # With the nodes' attributes that forward read (a Dropout's p, a Conv's stride): set
        # since, they would make another forward than the one this Backward differentiates.
        # And its labels as it checked them (they may have been changed in place since).
        read += list(last.changed.values()) + last.labels_read()
        now = [(owner, attr, owner.__dict__.get(attr, _ABSENT)) for owner, attr, _ in read]
        restore = [c._saved_state(rewind=True) for c in last.nodes_run if hasattr(c, "_saved_state")]
        mode = int(self._training[0])
        try:
            for owner, attr, array in read:
                _put(owner, attr, array)   # (no __setattr__: nothing to check, no plan to drop)
            self._training[0] = last.mode_ran[0]   # in the mode that forward ran in
            self._run_nodes(list(last.nodes_run))
        finally:
            self._training[0] = mode
            # Backwards: an attribute put twice (an Input's labels) gets what the first saw.
            for (owner, attr, array), (_, _, put) in reversed(list(zip(now, read))):
                if owner.__dict__.get(attr, _ABSENT) is put:   # not if another thread assigned meanwhile
                    _put(owner, attr, array)
            for put_back in restore:
                put_back()

    def Backward(self, loss):
        """Backpropagate the mean of `loss` over the batch into every ``.grad``.

        Every gradient is zeroed, ``loss.grad`` is seeded with 1/B (B = the batch
        size, the length of ``loss.value``), and the nodes run backward in reverse
        creation order, each adding into its inputs' gradients.
        """
        plan = self._plan
        if plan is None:
            if self._predicted:
                raise RuntimeError("Backward: predict() ran since the last Forward(), and the nodes hold its values: "
                                   "call Forward() on the training batch again before Backward()")
            plan = self._replay   # dropped after its forward ran: its backward still differentiates that forward
        # ... unless a node's attribute was set since: a node's own backward reads it as it is
        # now (a LeakyReLU's slope), the dropped plan's as it was. Node by node, then.
        if plan is not None and backend.kernels is backend._kernels and not plan.changed:
            try:
                plan.backward(loss)   # (it notes the loss's batch size: `batch`)
                if plan is not self._plan:
                    self._batch = plan.last_batch
                return
            except Replan:
                pass
        with self.lock:
            if not any(c is loss for c in self.CompNodes):
                if not hasattr(loss, "addgrad"):
                    raise TypeError(f"Backward takes the loss node, not a value: call Backward(L) with the "
                                    f"node L = edf.CrossEntropyLoss(...) itself, got a {type(loss).__name__}")
                raise ValueError(f"Backward: the loss {type(loss).__name__} is not a node of this graph")
            last = self._plan if self._plan is not None else self._replay
            if last is not None and last.forward_ran:
                # The last Forward ran a plan, so the nodes hold nothing of it: the nodes' own
                # backward needs what their own forward saw.
                self.release_plan()
                self._replay = None
                self._replay_forward(last)
            # Every gradient this Backward writes is this Backward's, as the plan's are: a
            # Parameter that a node reads but the graph does not list (a frozen layer) too.
            listed = {id(p) for p in self.Parameters}
            unlisted = {id(p): p for c in self.CompNodes for p in inputs_of(c)
                        if isinstance(p, Parameter) and id(p) not in listed}
            for c in self.CompNodes + self.Parameters + list(unlisted.values()):
                zero_grad(c)
            n = len(loss.value) if loss.value.ndim else 1
            loss.grad[...] = 1.0 / max(n, 1)
            for c in reversed(self.CompNodes):
                c.backward()
            self._batch = n

    def UpdateParameters(self):
        """One gradient-descent step, ``value -= cedf.learning_rate * grad``, for every parameter."""
        plan = self._plan
        rate = cedf.learning_rate
        if type(rate) is not float or not math.isfinite(rate):
            rate = learning_rate()   # which says what is wrong
        if plan is not None and backend.kernels is backend._kernels:
            try:
                plan.update(rate)
                return
            except Replan:
                pass
        with self.lock:
            # All checked first: a step refused for one parameter updates none.
            for p in self.Parameters:
                getattr(p, "check_update", lambda: None)()
            for p in self.Parameters:
                p.UpdateParameters()

    def clear(self):
        """Forget every node and free their buffers; the graph stays usable for new nodes.

        The nodes are marked as cleared: building a node on one, or running one,
        raises an error instead of computing with buffers that are gone. A
        parameter keeps its ``.value``, so that a trained model can still be read
        or saved; its gradient is freed. The graph goes back to training mode.
        """
        with self.lock:
            self.release_plan()
            self._replay = None     # nothing of the cleared nodes runs again
            self._training[0] = 1   # a new model starts in training mode
            for node in self.CompNodes + self.Parameters:
                node._graph_ref = None   # first: what follows is no change of a live graph's node
                node.grad = None
                if not isinstance(node, cedf.nodes.Parameter):
                    node.value = None
                if isinstance(node, cedf.nodes.BuiltinNode):
                    node._release()
            self._nodes, self._parameters = [], []


_default = Graph()          # the lecture's global graph


class _Current(threading.local):
    """Per thread: the graphs of the open `with` blocks, and the innermost of them, the current
    graph, kept apart so that the lecture's ``Forward()`` finds it in one attribute: through a
    function that looked in the stack, ``Forward()`` of a one-example graph took 0.71 us, the
    graph's own ``Forward`` 0.36 (now 0.56 and 0.59)."""

    def __init__(self):
        self.stack, self.graph = [], _default


_local = _Current()


def current_graph():
    """The graph that new nodes join and that Forward/Backward/UpdateParameters run."""
    return _local.graph


def graph_of(node, graph=None, owner="cedf", role=""):
    """`graph`, or else the graph that `node` belongs to, checked to hold `node` (named `role` in messages)."""
    if graph is None:
        graph = getattr(node, "_graph", None)
        if graph is None and getattr(node, "_graph_ref", None) is not None:
            # Nodes hold their graph weakly (cedf.nodes): a graph nobody kept is gone.
            raise ValueError(f"{owner}: the graph of {role}{type(node).__name__} no longer exists, since nothing held "
                             f"it after its `with` block; keep it (`with edf.Graph() as g:`) and pass graph=g")
        graph = graph if graph is not None else current_graph()
    if not any(c is node for c in graph.CompNodes):
        raise ValueError(f"{owner}: {role}{type(node).__name__} is not a node of the graph")
    return graph


def learning_rate():
    """``cedf.learning_rate`` as a float, after checking that it is a finite number."""
    rate = cedf.learning_rate
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)) or not np.isfinite(rate):
        raise TypeError(f"edf.learning_rate must be a finite number, got {rate!r} ({type(rate).__name__}): "
                        f"set e.g. edf.learning_rate = 0.5")
    return float(rate)


def train():
    """Put the current graph in training mode (`Graph.train`)."""
    return current_graph().train()


def eval():   # noqa: A001  (the name PyTorch gives it; cedf.eval, not the builtin)
    """Put the current graph in evaluation mode (`Graph.eval`)."""
    return current_graph().eval()


def clear_compgraph():
    """Empty the current graph and free its buffers (the lecture's ``edf.clear_compgraph()``)."""
    current_graph().clear()


def Forward():
    """Compute every node's value, in creation order (see `Graph.Forward`)."""
    _local.graph.Forward()


def Backward(loss):
    """Backpropagate the mean of `loss` over the batch into every ``.grad`` (see `Graph.Backward`)."""
    _local.graph.Backward(loss)


def UpdateParameters():
    """One gradient-descent step for every parameter of the current graph (see `Graph.UpdateParameters`)."""
    _local.graph.UpdateParameters()
