"""Compiling a graph into programs of the compiled engine (`cedf._engine`).

On the compiled backend, the first `Forward` of a graph runs node by node
(which checks every input and allocates every buffer) and then compiles the
graph into three programs: forward, backward (one per loss) and update. Later
steps run each program in one call without the GIL, as long as the graph and
the shapes of its inputs stay the same; anything else sends the step back
through the nodes, which raise the clear errors, and the plan is built anew.

What compiling buys, besides the calls:
- No work that nobody needs. An Input takes no gradient, so the first Affine
  skips its dX product. The per-example loss values and the gradient of a
  Softmax or Sigmoid that is differentiated together with its loss are left
  uncomputed until someone reads them (see `nodes._Lazy`).
- Fusion: Softmax -> CrossEntropyLoss backward is one pass, ``g (p - onehot)``,
  and Sigmoid -> BCELoss backward is ``g (p - y)``, when the loss is the only
  consumer of the Softmax or Sigmoid.
- Write, not accumulate: the first contribution to a gradient buffer writes it
  (BLAS ``beta = 0``), so no buffer is zeroed only to be overwritten; only
  gradients that receive nothing are filled with zeros.

Graphs with nodes other than cedf's own (a user's NumPy node, a subclass) keep
running node by node: their inputs and what they do with gradients are theirs.
"""
import numpy as np

from . import _engine, _kernels
from ._engine import Binding, Program
from .backend import Replan
from .nodes import (Affine, BCELoss, CrossEntropyLoss, Input, Parameter, Sigmoid, Softmax,
                    _float_dtype, _labels_like)

_COMPILED = (Affine, Sigmoid, Softmax, CrossEntropyLoss, BCELoss)
_FLOATS = (np.float32, np.float64)


def compilable(graph):
    """Whether every node of `graph` is one the engine knows."""
    return (all(type(c) in _COMPILED for c in graph.CompNodes)
            and all(type(p) is Parameter for p in graph.Parameters))


def _converter(dtype, shape):
    """How a binding makes a usable array of an awkward one (a list, a Fortran array, float64)."""
    def convert(value):
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf" or arr.shape != shape:
            raise Replan("shape")
        return np.ascontiguousarray(arr, dtype=dtype)
    return convert


def _no_conversion(value):
    # Parameters are updated in place: a copy would silently drop the update.
    raise Replan("parameter")


def _class_converter(node, n, n_classes):
    def convert(value):
        y = np.asarray(value)
        if y.dtype.kind not in "biuf" or y.shape not in ((n,), (n, 1)):
            raise Replan("labels")
        return node._class_indices(n, n_classes)
    return convert


def _binary_converter(n):
    def convert(value):
        y = np.asarray(value)
        if y.dtype.kind not in "biuf" or y.shape not in ((n,), (n, 1)):
            raise Replan("labels")
        y = _labels_like("BCELoss", y, n)
        return np.ascontiguousarray(y, dtype=y.dtype if y.dtype in _FLOATS else np.int64)
    return convert


class _Builder:
    """The buffer table and operations of one program under construction."""

    def __init__(self):
        self.buffers, self.ops, self.messages = [], [], []
        self._index = {}

    def _add(self, key, buffer):
        if key not in self._index:
            self._index[key] = len(self.buffers)
            self.buffers.append(buffer)
        return self._index[key]

    def fixed(self, array):
        return self._add(id(array), array)

    def bound(self, owner, attr, shape, dtypes, convert, writable=False):
        return self._add((id(owner), attr), Binding(owner, attr, shape, dtypes, convert, writable))

    def value(self, node, shape, dtype):
        """The buffer holding `node`'s value as the consumer reads it."""
        if isinstance(node, _COMPILED):
            return self.fixed(node._value)
        return self.bound(node, "value", shape, (dtype,), _converter(dtype, shape))

    def op(self, code, dtype, dims, args, accs=(), scalar=0.0, message=None):
        self.ops.append((code, dtype == np.float64, dims, args, accs, scalar))
        self.messages.append(message)

    def program(self):
        return Program(self.buffers, self.ops, self.messages)


class GraphPlan:
    """The compiled programs of one graph, for the shapes it was built for."""

    def __init__(self, graph):
        self.graph = graph
        self.signature = (len(graph.CompNodes), len(graph.Parameters))
        self.consumers = {id(c): [] for c in graph.CompNodes}
        for c in graph.CompNodes:
            if id(c.x) in self.consumers:
                self.consumers[id(c.x)].append(c)
            if isinstance(c, (CrossEntropyLoss, BCELoss)) and id(c.y) in self.consumers:
                self.consumers[id(c.y)].append(c)
        self._forward, self._lazy_values = self._build_forward()
        self._backward = {}
        self._update = self._build_update()

    def valid(self):
        return self.signature == (len(self.graph.CompNodes), len(self.graph.Parameters))

    # -- forward -----------------------------------------------------------

    def _build_forward(self):
        b, lazy = _Builder(), []
        self._binary = {}   # id(BCELoss) -> its float copy of the labels, shared by the programs
        for node in self.graph.CompNodes:
            dtype = node._value.dtype
            if isinstance(node, Affine):
                A, bias = node.params.A, node.params.b
                n, n_in = node._x.shape
                n_out = A.value.shape[1]
                x = b.value(node.x, (n, n_in), dtype)
                b.op(_engine.AFFINE_FWD, dtype, (n, n_in, n_out),
                     [x, b.value(A, (n_in, n_out), dtype), b.value(bias, (n_out,), dtype), b.fixed(node._value)])
            elif isinstance(node, Sigmoid):
                shape = node._value.shape
                b.op(_engine.SIGMOID_FWD, dtype, (node._value.size,),
                     [b.value(node.x, shape, dtype), b.fixed(node._value)])
            elif isinstance(node, Softmax):
                shape = node._value.shape
                rows, classes = node._value.size // shape[-1], shape[-1]
                b.op(_engine.SOFTMAX_FWD, dtype, (rows, classes),
                     [b.value(node.x, shape, dtype), b.fixed(node._value)])
            else:
                lazy.extend(self._loss_forward(b, node, dtype))
        program = b.program()
        return program, [(node, self._loss_values(program, node, index)) for node, index in lazy]

    def _labels(self, b, node):
        """The loss's labels, checked: int64 class indices, or 0/1 in a float buffer."""
        p = node._p
        n = p.shape[0]
        if isinstance(node, CrossEntropyLoss):
            labels = b.bound(node.y, "value", (n,), (np.int64,), _class_converter(node, n, p.shape[1]))
            b.op(_engine.CHECK_CLASSES, p.dtype, (n, p.shape[1]), [labels],
                 message=f"CrossEntropyLoss: label {{value}} is outside [0, {p.shape[1]}) "
                         f"(p has {p.shape[1]} classes)")
            return labels
        y = b.bound(node.y, "value", (n,), (np.int64, np.float32, np.float64), _binary_converter(n))
        # A buffer of the plan's own: node._y may be the user's array itself.
        buffer = self._binary.setdefault(id(node), np.empty(n, p.dtype))
        labels = b.fixed(buffer)
        b.op(_engine.BINARY_LABELS, p.dtype, (n,), [y, labels],
             message="BCELoss: y must hold labels 0 or 1, got {value}")
        return labels

    def _loss_forward(self, b, node, dtype):
        """Emit a loss's forward; returns [(node, labels index)] when its values are left lazy."""
        p = b.value(node.x, node._p.shape, dtype)
        labels = self._labels(b, node)
        if self.consumers[id(node)] or not isinstance(node.x, _COMPILED):
            n = node._p.shape[0]
            if isinstance(node, CrossEntropyLoss):
                b.op(_engine.CE_FWD, dtype, (n, node._p.shape[1]), [p, labels, b.fixed(node._value)])
            else:
                b.op(_engine.BCE_FWD, dtype, (n,), [p, labels, b.fixed(node._value)])
            return []
        # Nobody in the graph reads the per-example losses: compute them when a user does.
        return [(node, labels)]

    def _loss_values(self, program, node, label_index):
        """What computes a loss's values from the buffers that `program` last used."""
        p, out = node.x._value, node._value
        if isinstance(node, CrossEntropyLoss):
            return lambda: _kernels.cross_entropy_forward(p, program.bound(label_index), out)
        n = p.shape[0]
        return lambda: _kernels.bce_forward(p.reshape(n), program.bound(label_index), out)

    def forward(self):
        """Run the forward program; raises Replan when the plan no longer fits."""
        if not self.valid():
            raise Replan("graph")
        self._forward.run()
        for node, compute in self._lazy_values:
            node._pending_value = compute

    # -- backward ----------------------------------------------------------

    def _build_backward(self, loss):
        b, lazy = _Builder(), []
        written = set()
        grads = {}   # id(node) -> (buffer index, node) of every gradient this program owns

        def grad_of(node):
            if id(node) not in grads:
                if isinstance(node, Parameter):
                    index = b.bound(node, "grad", node.value.shape, (node.value.dtype,), _no_conversion, True)
                else:
                    index = b.fixed(node._grad)
                grads[id(node)] = (index, node)
            return grads[id(node)][0]

        def target(node):
            """(index, accumulate?) for a gradient sent to `node`; index None for an Input."""
            if isinstance(node, Input):
                return None, False
            index = grad_of(node)
            acc = index in written
            written.add(index)
            return index, acc

        for node in self.graph.CompNodes:
            grad_of(node)
        for p in self.graph.Parameters:
            grad_of(p)
        n_loss = loss._value.shape[0] if loss._value.ndim else 1
        seed, _ = target(loss)
        b.op(_engine.FILL, loss._value.dtype, (loss._value.size,), [seed], scalar=1.0 / max(n_loss, 1))

        fused, lazy = set(), []
        for node in reversed(self.graph.CompNodes):
            if id(node) in fused:
                continue
            dtype = node._value.dtype
            g = grad_of(node)
            if g not in written:
                # No consumer sent this node anything (it is not upstream of the loss):
                # its gradient is zero and so is everything it would send.
                b.op(_engine.FILL, dtype, (node._value.size,), [g], scalar=0.0)
                written.add(g)
                continue
            if isinstance(node, Affine):
                A, bias = node.params.A, node.params.b
                n, n_in = node._x.shape
                n_out = A.value.shape[1]
                x = b.value(node.x, (n, n_in), dtype)
                Av = b.value(A, (n_in, n_out), dtype)
                (gx, ax), (gA, aA), (gb, ab) = target(node.x), target(A), target(bias)
                b.op(_engine.AFFINE_BWD, dtype, (n, n_in, n_out), [x, Av, g, gx, gA, gb], (ax, aA, ab))
            elif isinstance(node, Sigmoid):
                gx, acc = target(node.x)
                if gx is not None:
                    b.op(_engine.SIGMOID_BWD, dtype, (node._value.size,), [b.fixed(node._value), g, gx], (acc,))
            elif isinstance(node, Softmax):
                gx, acc = target(node.x)
                if gx is not None:
                    shape = node._value.shape
                    b.op(_engine.SOFTMAX_BWD, dtype, (node._value.size // shape[-1], shape[-1]),
                         [b.fixed(node._value), g, gx], (acc,))
            else:
                lazy.extend(self._loss_backward(b, node, g, target, fused))

        skipped = {id(source) for source, _, _ in lazy}
        for index, node in grads.values():
            if index not in written and id(node) not in skipped:
                value = node.value if isinstance(node, Parameter) else node._value
                b.op(_engine.FILL, value.dtype, (value.size,), [index], scalar=0.0)
        program = b.program()
        return program, [(source, self._loss_gradient(program, loss_node, source, labels))
                         for source, loss_node, labels in lazy]

    def _loss_backward(self, b, node, g, target, fused):
        """Emit a loss's backward; returns [(source, loss, labels index)] when it was fused."""
        dtype, n = node._value.dtype, node._p.shape[0]
        labels = self._labels(b, node)
        source = node.x
        ce = isinstance(node, CrossEntropyLoss)
        if isinstance(source, Softmax if ce else Sigmoid) and self.consumers[id(source)] == [node]:
            # Differentiate the pair at once; the Softmax/Sigmoid gradient is computed if read.
            fused.add(id(source))
            gx, acc = target(source.x)
            if gx is not None:
                code = _engine.SOFTMAX_CE_BWD if ce else _engine.SIGMOID_BCE_BWD
                dims = (n, node._p.shape[1]) if ce else (source._value.size,)
                b.op(code, dtype, dims, [b.fixed(source._value), labels, g, gx], (acc,))
            return [(source, node, labels)]
        gp, acc = target(source)
        if gp is not None:
            p = b.value(source, node._p.shape, dtype)
            if ce:
                b.op(_engine.CE_BWD, dtype, (n, node._p.shape[1]), [p, labels, g, gp], (acc,))
            else:
                b.op(_engine.BCE_BWD, dtype, (n,), [p, labels, g, gp], (acc,))
        return []

    def _loss_gradient(self, program, loss, source, label_index):
        """What computes dL/d(source) for a Softmax/Sigmoid whose gradient the fused pass skipped."""
        p, grad, n = source._value, source._grad, loss._p.shape[0]

        def compute():
            grad.fill(0)
            labels = program.bound(label_index)
            if isinstance(loss, CrossEntropyLoss):
                _kernels.cross_entropy_backward(p, labels, loss._grad, grad)
            else:
                _kernels.bce_backward(p.reshape(n), labels, loss._grad, grad.reshape(n))
        return compute

    def backward(self, loss):
        """Run the backward program for `loss`; raises Replan when the plan no longer fits."""
        if not self.valid():
            raise Replan("graph")
        programs = self._backward.get(id(loss))
        if programs is None:
            if not any(c is loss for c in self.graph.CompNodes):
                raise Replan("loss")   # the node-by-node Backward says what is wrong
            programs = self._backward[id(loss)] = self._build_backward(loss)
        program, lazy = programs
        program.run()
        for node, compute in lazy:
            node._pending_grad = compute

    # -- update ------------------------------------------------------------

    def _build_update(self):
        b = _Builder()
        for p in self.graph.Parameters:
            shape, dtype = p.value.shape, p.value.dtype
            if dtype not in _FLOATS:
                return None
            value = b.bound(p, "value", shape, (dtype,), _no_conversion, writable=True)
            grad = b.bound(p, "grad", shape, (dtype,), _no_conversion)
            b.op(_engine.SGD, dtype, (p.value.size,), [value, grad])
        return b.program()

    def update(self, learning_rate):
        if self._update is None or not self.valid():
            raise Replan("update")
        self._update.run(learning_rate)


def build(graph):
    """The plan of `graph`, right after a node-by-node Forward; None if it cannot be compiled."""
    if not compilable(graph):
        return None
    for node in graph.CompNodes:
        if node._value is None or node._value.dtype not in _FLOATS:
            return None
    for node in graph.CompNodes:
        # Gradient buffers, owned by the plan, that Backward writes.
        node._grad = np.empty_like(node._value)
        node._pending_grad = None
    for p in graph.Parameters:
        p.grad = np.zeros(p.value.shape, _float_dtype(p.value))
    return GraphPlan(graph)
