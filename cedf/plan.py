"""Compiling a graph into programs of the compiled engine (`cedf._engine`).

On the compiled backend, the first `Forward` of a graph runs node by node
(which checks every input and allocates every buffer) and then compiles the
graph into programs: forward, backward (one per loss) and update. Later steps
run each program in one call without the GIL, as long as the graph and the
shapes and dtypes of its inputs stay the same; anything else raises `Replan`,
the step goes back through the nodes, which raise the clear errors, and the
plan is built anew.

What compiling buys, besides the calls:
- Elementwise work folded into passes that touch the data anyway: an Affine
  read only by a Sigmoid, a (leaky) ReLU of slope >= 0 or a Softmax gets its
  bias added by that node's pass (its own value, with the bias, is made when
  read; its product is written by BLAS alone, ``beta = 0``), and its bias
  gradient summed by that node's backward pass (a Softmax's when fused with
  its CrossEntropyLoss).
- No work that nobody needs. An Input takes no gradient, so the first Affine
  skips its dX product. The per-example loss values, which only a person
  reads, are computed when read (see `nodes._Lazy`).
- Fusion: Softmax -> CrossEntropyLoss backward is one pass, ``g (p - onehot)``,
  and Sigmoid -> BCELoss backward is ``g (p - y)``, when the loss is the only
  consumer of the Softmax or Sigmoid.
- Write, not accumulate: the first contribution to a gradient buffer writes it
  (BLAS ``beta = 0``), so no buffer is zeroed only to be overwritten; only
  gradients that receive nothing are filled with zeros.

Labels are checked as they are copied into buffers of the plan's own, before
anything is computed, and the copies become the ones the losses read only
once every label of the step passed: a step refused for its labels leaves
every value, and the loss values still to compute, as the last good step left
them, and no other thread writing the user's label array can make a loop read
out of bounds. Backward reads the labels its Forward copied.

How a node compiles: the lecture's nodes are cases of `GraphPlan`'s builders
below, with the fusions between them. A node added since carries its own
``_plan_forward(plan, b)`` and ``_plan_backward(plan, b, g, target)``, next to
its ``forward`` and ``backward``, which add the node's operations (the
engine's, or its kernel module's, see `cedf._plan_op`) to the program under
construction `b` (a `_Builder`): ``b.value(input, shape, dtype)`` is the buffer
of an input's value, ``b.fixed(array)`` a buffer the node allocated itself,
`g` its own gradient's buffer and ``target(input)`` the (buffer, accumulate)
of the gradient it sends to an input, (None, False) for an Input. The plan
asks each node; nothing here changes when one is added.

Layouts: a convolution computes position-major and batch-last, (H, W, C, N)
(`cedf/_conv.pyx` says why), and the plan keeps the values and gradients of a chain of them in that
layout, so that nothing is transposed between layers: a Conv, the elementwise
nodes after it (ReLU), the Conv that reads them, up to the Flatten that makes
the batch (N, F) again. A node is kept batch-last (`batch_last`) when it writes
so (``_writes_batch_last``: Conv; ``_elementwise`` nodes of a batch-last input)
and every reader reads so (``_reads_batch_last``: Conv, Flatten, Reshape; or
an elementwise node kept batch-last). Its ``.value`` and ``.grad`` are then
views of the plan's batch-last buffers in the user's layout (transposed), so
what a user reads is the step's numbers, without a copy; the node-by-node
path, which wants C-contiguous arrays, makes its own again.

Graphs with nodes other than cedf's own (a user's NumPy node, a subclass), or
whose layers mix dtypes, keep running node by node.
"""
import numpy as np

from . import _engine, _kernels
from ._engine import Binding, Program
from .backend import Replan
from .nodes import (Affine, BCELoss, CrossEntropyLoss, Input, LeakyReLU, Parameter, ReLU, Sigmoid, Softmax,
                    SoftmaxCrossEntropyLoss, Tanh, _float_dtype, _labels_like, inputs_of, set_quietly,
                    writable_buffer)

_COMPILED = (Affine, Sigmoid, Softmax, CrossEntropyLoss, BCELoss, Tanh, LeakyReLU, ReLU, SoftmaxCrossEntropyLoss)
_CLASSES = (CrossEntropyLoss, SoftmaxCrossEntropyLoss)   # losses of class indices
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# An Affine's input gradient g @ A^T is computed as g @ At, At = A^T copied into a buffer of
# the plan's, when the product has at most this many multiply-adds. OpenBLAS runs untransposed
# (and g @ B^T) products of up to 100 x 100 x 100 in small-matrix kernels on the calling
# thread; g @ A^T takes its general path instead, with packing and, above 2^18 multiply-adds,
# both threads, and the passes after it then read what the other core wrote. In the
# 40-100-100-10 MLP's fit step (per-op timing in the plan, Adam, float32) the 100 x 100
# layer's backward took 54.9 -> 46.9 us on one BLAS thread and 84.2 -> 46.3 us on two, the
# ReLU backward before it 14.0 -> 1.5 us and Adam's update of its weights 21.5 -> 6.0 us on
# two; the copy costs a few microseconds. Larger layers gain nothing from it (1024 x 10 x 1024:
# 819 against 869 us, NumPy, one thread).
_UNTRANSPOSED_MAX = 100 * 100 * 100


def compiled(node):
    """Whether the plan compiles `node`: one of the lecture's nodes, or one of cedf's node classes
    that says itself how it compiles. A class of the user's, a subclass of cedf's included, runs
    node by node: its forward may differ from what the plan would run."""
    cls = type(node)
    return cls in _COMPILED or (hasattr(cls, "_plan_forward") and cls.__module__.startswith("cedf."))


class _NotCompilable(Exception):
    """The graph is valid but outside what the engine runs (mixed dtypes)."""


def _array(value):
    """np.asarray(value), or Replan for what is no array of numbers (a ragged list): the node says so."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        raise Replan("data") from None
    if arr.dtype.kind not in "biuf":
        raise Replan("data")
    return arr


def _cast(arr, dtype):
    try:
        with np.errstate(over="raise"):
            return np.asarray(arr, dtype=dtype, order="C")
    except FloatingPointError:
        raise Replan("range") from None   # the node says what is wrong


def _converter(dtype, shape, own_dtype):
    """How a binding makes a usable array of awkward data (a list, a Fortran array, integers).

    `own_dtype`: the reader computes in its data's own float dtype (a Sigmoid, a
    loss), not in its parameters' (an Affine): data of another float dtype needs
    another plan.
    """
    def convert(value):
        arr = _array(value)
        if arr.shape != shape:
            raise Replan("shape")
        if own_dtype and _float_dtype(arr) != dtype:
            raise Replan("dtype")
        return _cast(arr, dtype)
    return convert


def _parameter_converter(dtype, shape):
    """A parameter read in another layout is copied; in another dtype, its layer changes dtype: replan."""
    def convert(value):
        arr = _array(value)
        if arr.dtype != dtype or arr.shape != shape:
            raise Replan("parameter")
        return np.asarray(arr, order="C")
    return convert


def _exact(value):
    # What the plan writes in place (a parameter's value, updated; its gradient)
    # must be the array itself: anything else needs the nodes' judgement.
    raise Replan("parameter")


def _class_converter(node, n, n_classes):
    def convert(value):
        y = _array(value)
        if y.shape not in ((n,), (n, 1)):
            raise Replan("labels")
        return node._class_indices(n, n_classes)
    return convert


def _label_message(check, fallback):
    """What a refused label check says: the node's own message, from its own check of y.value.

    `fallback` formats the label the engine found, should y.value have changed since
    (another thread), so that the node's check passes.
    """
    def message(value):
        try:
            check()
        except ValueError as exc:
            return str(exc)
        return fallback.format(value=value)
    return message


def _binary_converter(n, dtype):
    """Labels as the node reads them: in the loss's float dtype (int64 is read as it is, exactly)."""
    def convert(value):
        y = _array(value)
        if y.shape not in ((n,), (n, 1)):
            raise Replan("labels")
        return _cast(_labels_like("BCELoss", y, n), dtype)
    return convert


def _base_of(bases, array):
    """The batch-last buffer of which `array` is the plan's view (`GraphPlan.bases`), else `array`."""
    view, base = bases.get(id(array), (None, None))
    return base if view is array and array is not None else array


class _Builder:
    """The buffer table and operations of one program under construction.

    `forward`: the builder of the forward program, for a backward one: the arrays
    it binds are read as that program's last run read them (`Binding.following`).
    """

    def __init__(self, bases=None, forward=None):
        # id(view) -> (view, base): the batch-last nodes' values and gradients (GraphPlan.bases)
        self.bases = {} if bases is None else bases
        self.buffers, self.ops, self.messages = [], [], []
        self.stage = {}   # op index -> 0 or 1: run first (see `op`)
        self._index = {}
        self._forward = forward

    def _add(self, key, buffer):
        if key not in self._index:
            self._index[key] = len(self.buffers)
            self.buffers.append(buffer)
        return self._index[key]

    def fixed(self, array):
        """The buffer of an array of the plan's or a node's own (a batch-last view: its base)."""
        array = _base_of(self.bases, array)
        return self._add(id(array), array)

    def bound(self, owner, attr, shape, dtypes, convert, writable=False, kind=None, column=False):
        if len(shape) > _engine.MAX_DIMS:
            raise _NotCompilable(f"{len(shape)} dimensions")
        key = (id(owner), attr, shape, dtypes, writable, kind, column)
        if key not in self._index and self._forward is not None and key in self._forward._index:
            return self._add(key, self._forward.buffers[self._forward._index[key]].following())
        return self._add(key, Binding(owner, attr, shape, dtypes, convert, writable, column))

    def value(self, node, shape, dtype, own_dtype=True):
        """The buffer holding `node`'s value as a consumer of `dtype` reads it (see `_converter`)."""
        if compiled(node):
            if node._value.dtype != dtype or node._value.shape != shape:
                raise _NotCompilable(f"{type(node).__name__} feeds a layer of another dtype")
            return self.fixed(node._value)
        if isinstance(node, Parameter):
            return self.bound(node, "value", shape, (dtype,), _parameter_converter(dtype, shape))
        return self.bound(node, "value", shape, (dtype,), _converter(dtype, shape, own_dtype), kind=own_dtype)

    def op(self, code, dtype, dims, args, accs=(), scalars=(), message=None, geometry=(), stage=None):
        """An operation: `code` of the engine's, or a kernel module's plan operation (a capsule).

        `stage` 0 or 1 moves it before every other (the labels' checks, then their commits).
        """
        if stage is not None:
            self.stage[len(self.ops)] = stage
        self.ops.append((code, dtype == np.float64, dims, args, accs, scalars, geometry))
        self.messages.append(message)

    def program(self, nodes, parameters):
        program = Program(self.buffers, self.ops, self.messages)
        program.guard(nodes, parameters)
        return program


class GraphPlan:
    """The compiled programs of one graph, for the shapes and dtypes it was built for.

    It holds the graph's lists, not the graph (which holds the plan): no cycle.
    """

    def __init__(self, graph):
        self.nodes, self.parameters = graph.CompNodes, graph.Parameters
        #: The graph's mode (int64, 1 in training, 0 in evaluation), read by the operations of
        #: the nodes that train and evaluate differently (Dropout, BatchNorm) at every run.
        self.training = graph._training
        self.mode_ran = np.ones(1, np.int64)   # the mode of the forward program's last run (Graph._replay_forward)
        self.consumers = {id(c): [] for c in graph.CompNodes}
        self._node_of = {id(c): c for c in graph.CompNodes}
        for c in graph.CompNodes:
            for source in inputs_of(c):
                if id(source) in self.consumers:
                    self.consumers[id(source)].append(c)
        # Affines read only by a Sigmoid, a (leaky) ReLU or a Softmax: that node adds their
        # bias (forward) and sums their bias gradient (backward), a Sigmoid unless fused with
        # a BCELoss, a Softmax only when fused with its CrossEntropyLoss. A ReLU's backward
        # then reads its own output for the sign of its input, which only a slope >= 0 keeps
        # (a slope set later drops the plan).
        self._bias_in_activation = {id(c.x) for c in graph.CompNodes
                                    if (isinstance(c, (Sigmoid, Softmax))
                                        or (isinstance(c, LeakyReLU) and c.slope >= 0))
                                    and isinstance(c.x, Affine) and self.consumers[id(c.x)] == [c]}
        self._labels_of = {}   # id(loss) -> (staged, checked): its labels, copied by the forward
        self.bases = {}
        self._batch_last = self._choose_batch_last()
        for node in self.nodes:
            if id(node) in self._batch_last:
                node._value = self._batch_last_view(node, "_batch_last_value", node._value)
        self._lock = graph.lock
        # Set by the forward program, under the graph's lock, once it ran: only then may a
        # backward program run (it reads the labels and values that run left). A dict of
        # its own, so that the program holding it holds nothing that holds the program.
        self.state = {"forward_ran": False}
        self._retired = False
        self.nodes_run = tuple(graph.CompNodes)   # what the forward program runs (Graph._replay_forward)
        # (owner, attribute) -> (owner, attribute, what that forward read): attributes of the
        # nodes set since this plan was dropped, put back while Graph._replay_forward runs.
        self.changed = {}
        self._forward = self._build_forward()
        self._backward = {}
        self._last_loss = self._last_backward = None
        self.last_batch = None   # the batch size of the loss of the last backward run (Graph.batch)
        self._update = self._build_update()
        # Forward and update are the programs' own run methods: no Python frame of ours per step.
        self.forward = self._forward.run
        self.update = self._update.run if self._update is not None else _no_update

    # -- layouts (see the module's docstring) --------------------------------

    def batch_last(self, node):
        """Whether the plan keeps `node`'s value and gradient position-major and batch-last, (..., C, N)."""
        return id(node) in self._batch_last

    def _choose_batch_last(self):
        chosen = set()
        for c in self.nodes:   # in creation order: an input before its readers
            if getattr(c, "_writes_batch_last", False) or (getattr(c, "_elementwise", False)
                                                           and id(c.x) in chosen):
                chosen.add(id(c))

        def keeps(c):
            if getattr(c, "_elementwise", False) and id(c.x) not in chosen:
                return False
            return all(getattr(r, "_reads_batch_last", False) or (getattr(r, "_elementwise", False)
                                                                   and id(r) in chosen)
                       for r in self.consumers[id(c)])
        while True:
            dropped = {i for i in chosen if not keeps(self._node_of[i])}
            if not dropped:
                return chosen
            chosen -= dropped

    def _batch_last_view(self, node, attr, array):
        """A position-major copy of `array` (N, C, ...), (..., C, N), in a buffer the node keeps, as a
        view in its layout."""
        to_base = tuple(range(2, array.ndim)) + (1, 0)
        shape = tuple(array.shape[i] for i in to_base)
        base = node.__dict__.get(attr)
        if base is None or base.shape != shape or base.dtype != array.dtype:
            base = np.empty(shape, array.dtype)
            node.__dict__[attr] = base
        base[...] = array.transpose(to_base)
        view = base.transpose(np.argsort(to_base))
        self.bases[id(view)] = (view, base)
        return view

    # -- forward -----------------------------------------------------------

    def _build_forward(self):
        b, lazy = _Builder(self.bases), []
        self._forward_builder = b   # what the backward programs read through (`_Builder`)
        for node in self.nodes:
            dtype = node._value.dtype
            if hasattr(node, "_plan_forward"):
                node._plan_forward(self, b)
            elif isinstance(node, Affine):
                n, n_in = node._x.shape
                n_out = node._value.shape[1]
                bias = None if id(node) in self._bias_in_activation else b.value(node.params.b, (n_out,), dtype)
                b.op(_engine.AFFINE_FWD, dtype, (n, n_in, n_out),
                     [b.value(node.x, (n, n_in), dtype, own_dtype=False), b.value(node.params.A, (n_in, n_out), dtype),
                      bias, b.fixed(node._value)])
            elif isinstance(node, (Sigmoid, LeakyReLU)) and id(node.x) in self._bias_in_activation:
                rows, cols = node._value.shape
                code, slope = (_engine.BIAS_SIGMOID_FWD, 0.0) if isinstance(node, Sigmoid) else (
                    _engine.BIAS_LEAKY_FWD, node.slope)
                bias, copy = self._fused_bias(b, node.x, lazy)
                b.op(code, dtype, (rows, cols), [b.fixed(node.x._value), bias, b.fixed(node._value), copy],
                     scalars=(slope,))
            elif isinstance(node, Sigmoid):
                b.op(_engine.SIGMOID_FWD, dtype, (node._value.size,),
                     [b.value(node.x, node._value.shape, dtype), b.fixed(node._value)])
            elif isinstance(node, Softmax):
                classes = node._value.shape[-1]
                args = [b.value(node.x, node._value.shape, dtype), b.fixed(node._value)]
                if id(node.x) in self._bias_in_activation:
                    args += self._fused_bias(b, node.x, lazy)
                b.op(_engine.SOFTMAX_FWD, dtype, (node._value.size // classes, classes), args)
            elif isinstance(node, (Tanh, LeakyReLU)):
                code, slope = (_engine.TANH_FWD, 0.0) if isinstance(node, Tanh) else (_engine.LEAKY_FWD, node.slope)
                b.op(code, dtype, (node._value.size,),
                     [b.value(node.x, node._value.shape, dtype), b.fixed(node._value)], scalars=(slope,))
            elif isinstance(node, SoftmaxCrossEntropyLoss):
                n, classes = node._z.shape
                b.op(_engine.CE_LOGITS_FWD, dtype, (n, classes),
                     [b.value(node.x, node._z.shape, dtype), self._labels(b, node), b.fixed(node._p_buf),
                      b.fixed(node._value)])
            else:
                lazy.extend((node, self._loss_values(node, labels)) for labels in self._loss_forward(b, node, dtype))
        # Labels are checked before anything is computed, and committed (copied where
        # the losses read them) only when all passed: see the module's docstring.
        b.op(_engine.COPY, np.float64, (self.training.nbytes,), [b.fixed(self.training), b.fixed(self.mode_ran)])
        order = sorted(range(len(b.ops)), key=lambda i: b.stage.get(i, 2))
        b.ops, b.messages = [b.ops[i] for i in order], [b.messages[i] for i in order]
        program = self._program(b)
        program.after = [(node.__dict__, "_pending_value", compute) for node, compute in lazy]
        program.after.append((self.state, "forward_ran", True))
        return program

    def _program(self, b):
        program = b.program(self.nodes, self.parameters)
        program.serialise(self._lock)
        return program

    @property
    def forward_ran(self):
        return self.state["forward_ran"]

    def forward_bindings(self):
        """The forward program's bound arrays (Inputs', Parameters' values), as Bindings."""
        return [buf for buf in self._forward_builder.buffers if isinstance(buf, Binding)]

    def labels_read(self):
        """(labels Input, "value", the labels its last forward run read, as checked): a replay of
        that forward (`Graph._replay_forward`) reads these, whatever y.value holds by then."""
        return [(node.y, "value", self._labels_of[id(node)][1]) for node in self.nodes_run
                if id(node) in self._labels_of and isinstance(node.y, Input)]   # (a node's: its own forward's)

    def retire(self):
        """Make the forward and update programs refuse to run (Replan): the graph changed.

        The backward programs still differentiate the forward that ran, on what it read
        and left (`Graph.Backward` runs them for a plan dropped between Forward and
        Backward), as long as the graph holds the nodes that forward ran.
        """
        self._retired = True
        for program in (self._forward, self._update):
            if program is not None:
                program.retire()

    def _labels(self, b, node, backward=False):
        """The index of the loss's checked labels: int64 class indices, or 0/1 in its float dtype.

        The forward copies them from ``y.value`` (see the module's docstring); a
        backward reads that copy, as the node's backward reads its forward's.
        """
        ce = isinstance(node, CrossEntropyLoss)
        if isinstance(node, _CLASSES):
            (n, classes), dtype = (node._p if ce else node._z).shape, np.int64
        else:
            n, classes, dtype = node._p.shape[0], 2, node._value.dtype
        if id(node) not in self._labels_of:
            self._labels_of[id(node)] = (np.empty(n, dtype), np.empty(n, dtype))
        staged, checked = self._labels_of[id(node)]
        if backward:
            return b.fixed(checked)
        name, loss_dtype = type(node).__name__, node._value.dtype
        # Integral float labels are read as they are, as int64 ones: the check converts them.
        if isinstance(node, _CLASSES):
            # Labels (n,) or (n, 1), as the node takes them.
            y = b.bound(node.y, "value", (n,), (np.int64, np.float32, np.float64), _class_converter(node, n, classes),
                        kind=id(node), column=True)   # each loss converts by its own rules
            message = _label_message(lambda: node._class_indices(n, classes),
                                     f"{name}: label {{value}} is outside [0, {classes})")
            b.op(_engine.CLASS_LABELS, loss_dtype, (n, classes), [y, b.fixed(staged)], message=message, stage=0)
        else:
            y = b.bound(node.y, "value", (n,), (np.int64, np.float32, np.float64), _binary_converter(n, dtype),
                        kind=id(node), column=True)
            message = _label_message(lambda: node._labels(n, dtype), "BCELoss: y must hold labels 0 or 1, got {value}")
            b.op(_engine.BINARY_LABELS, dtype, (n,), [y, b.fixed(staged)], message=message, stage=0)
        b.op(_engine.COPY, loss_dtype, (staged.nbytes,), [b.fixed(staged), b.fixed(checked)], stage=1)
        return b.fixed(checked)

    def _loss_forward(self, b, node, dtype):
        """Emit a loss's forward; returns [labels index] when its values are left lazy."""
        p = b.value(node.x, node._p.shape, dtype)
        labels = self._labels(b, node)
        if not self.consumers[id(node)] and compiled(node.x):
            return [labels]   # nobody in the graph reads the losses: compute them if a user does
        n = node._p.shape[0]
        if isinstance(node, CrossEntropyLoss):
            b.op(_engine.CE_FWD, dtype, (n, node._p.shape[1]), [p, labels, b.fixed(node._value)])
        else:
            b.op(_engine.BCE_FWD, dtype, (n,), [p, labels, b.fixed(node._value)])
        return []

    def _fused_bias(self, b, affine, lazy):
        """The buffers of an Affine's bias added by the node reading it: the bias, and a copy
        that the forward makes of it, from which the Affine's own value, x @ A + b, is made
        only if someone reads it (`lazy`)."""
        value = affine._value
        copy = np.empty(value.shape[1], value.dtype)
        lazy.append((affine, self._add_bias(value, copy)))
        return [b.value(affine.params.b, copy.shape, value.dtype), b.fixed(copy)]

    @staticmethod
    def _add_bias(u, bias):
        """What makes an Affine's value from the product the forward left and the bias it used."""
        return lambda: np.add(u, bias, out=u)

    def _loss_values(self, node, label_index):
        """What computes a loss's values from the buffers that the forward program last ran on.

        Only arrays are captured, not the plan: the node holds this function, and a
        node that held its graph's plan would make a cycle (see `cedf.nodes`).
        """
        p, out, labels = node.x._value, node._value, self._labels_of[id(node)][1]
        if isinstance(node, CrossEntropyLoss):
            return lambda: _kernels.cross_entropy_forward(p, labels, out)
        return lambda: _kernels.bce_forward(p.reshape(p.shape[0]), labels, out)

    # -- backward ----------------------------------------------------------

    def _build_backward(self, loss):
        b = _Builder(self.bases, forward=self._forward_builder)
        written = set()
        grads = {}   # id(node) -> (buffer index, value it is shaped like)

        read = {id(buf.owner): buf.array for buf in self.forward_bindings()
                if buf.attr == "value" and buf.array is not None}

        def grad_of(node):
            if id(node) not in grads:
                value = node.value if isinstance(node, Parameter) else node._value
                if type(value) is not np.ndarray:
                    raise Replan("parameter")   # (a list): converted node by node, as the forward converted it
                seen = read.get(id(node))
                if seen is not None and (seen.shape != value.shape or seen.dtype != value.dtype):
                    # A value replaced since the forward read it: its gradient, shaped as that
                    # forward's, does not fit; node by node says so.
                    raise Replan("parameter")
                if id(node) in self._batch_last:
                    if _base_of(self.bases, node.grad) is node.grad:   # not this plan's view
                        set_quietly(node, "grad", self._batch_last_view(node, "_batch_last_grad",
                                                                        np.zeros(value.shape, value.dtype)))
                elif not writable_buffer(node.grad, value.shape, value.dtype):
                    set_quietly(node, "grad", np.zeros_like(value, order="C"))
                if isinstance(node, Parameter):
                    index = b.bound(node, "grad", value.shape, (value.dtype,), _exact, writable=True)
                else:
                    index = b.fixed(node.grad)
                grads[id(node)] = (index, value)
            return grads[id(node)][0]

        def target(node):
            """(index, accumulate?) for a gradient sent to `node`; index None for an Input."""
            if isinstance(node, Input):
                return None, False
            index = grad_of(node)
            acc = index in written
            written.add(index)
            return index, acc

        for node in self.nodes + self.parameters:
            grad_of(node)
        n_loss = loss._value.shape[0] if loss._value.ndim else 1
        seed, _ = target(loss)
        b.op(_engine.FILL, loss._value.dtype, (loss._value.size,), [seed], scalars=(1.0 / max(n_loss, 1),))

        fused = set()
        bias_done = set()   # Affines whose bias gradient the backward of the node reading them summed
        for node in reversed(self.nodes):
            if id(node) in fused:
                continue
            dtype, g = node._value.dtype, grad_of(node)
            if g not in written:
                # No consumer sent this node anything (it is not upstream of the loss):
                # its gradient is zero and so is everything it would send.
                b.op(_engine.FILL, dtype, (node._value.size,), [g])
                written.add(g)
                continue
            if hasattr(node, "_plan_backward"):
                node._plan_backward(self, b, g, target)
            elif isinstance(node, Affine):
                A = node.params.A
                n, n_in = node._x.shape
                n_out = node._value.shape[1]
                x, Av = b.value(node.x, (n, n_in), dtype, own_dtype=False), b.value(A, (n_in, n_out), dtype)
                (gx, ax), (gA, aA) = target(node.x), target(A)
                gb, ab = (None, False) if id(node) in bias_done else target(node.params.b)
                At = (b.fixed(np.empty((n_out, n_in), dtype))
                      if gx is not None and n * n_in * n_out <= _UNTRANSPOSED_MAX else None)
                b.op(_engine.AFFINE_BWD, dtype, (n, n_in, n_out), [x, Av, g, gx, gA, gb, At], (ax, aA, ab))
            elif isinstance(node, Sigmoid):
                gx, acc = target(node.x)
                if gx is not None:
                    if id(node.x) in self._bias_in_activation:
                        # The Affine's bias gradient is the column sums of what this pass writes.
                        rows, cols = node._value.shape
                        gb, ab = self._fused_bias_gradient(node.x, target, bias_done)
                    else:
                        rows, cols, gb, ab = 1, node._value.size, None, False
                    b.op(_engine.SIGMOID_BWD, dtype, (rows, cols), [b.fixed(node._value), g, gx, gb], (acc, ab))
            elif isinstance(node, Softmax):
                gx, acc = target(node.x)
                if gx is not None:
                    classes = node._value.shape[-1]
                    b.op(_engine.SOFTMAX_BWD, dtype, (node._value.size // classes, classes),
                         [b.fixed(node._value), g, gx], (acc,))
            elif isinstance(node, Tanh):
                gx, acc = target(node.x)
                if gx is not None:
                    b.op(_engine.TANH_BWD, dtype, (node._value.size,), [b.fixed(node._value), g, gx], (acc,))
            elif isinstance(node, LeakyReLU):
                gx, acc = target(node.x)
                if gx is not None and id(node.x) in self._bias_in_activation:
                    # The Affine's value (made only if read) is not there to read: the output's
                    # sign is its sign. The Affine's bias gradient: the column sums written here.
                    rows, cols = node._value.shape
                    gb, ab = self._fused_bias_gradient(node.x, target, bias_done)
                    b.op(_engine.LEAKY_BIAS_BWD, dtype, (rows, cols), [b.fixed(node._value), g, gx, gb], (acc, ab),
                         scalars=(node.slope,))
                elif gx is not None:   # the slope applies where the input is negative: read the input
                    b.op(_engine.LEAKY_BWD, dtype, (node._value.size,),
                         [b.value(node.x, node._value.shape, dtype), g, gx], (acc,), scalars=(node.slope,))
            elif isinstance(node, SoftmaxCrossEntropyLoss):
                gz, acc = target(node.x)
                if gz is not None:
                    b.op(_engine.CE_LOGITS_BWD, dtype, node._z.shape,
                         [b.fixed(node._p_buf), self._labels(b, node, backward=True), g, gz], (acc,))
            else:
                self._loss_backward(b, node, g, target, fused, bias_done)

        for index, value in grads.values():
            if index not in written:
                b.op(_engine.FILL, value.dtype, (value.size,), [index])
        return self._program(b)

    @staticmethod
    def _fused_bias_gradient(affine, target, bias_done):
        """The (buffer, accumulate) of an Affine's bias gradient, which the backward of the node
        reading it sums: that Affine's own backward then leaves it alone."""
        bias_done.add(id(affine))
        return target(affine.params.b)

    def _loss_backward(self, b, node, g, target, fused, bias_done):
        dtype, n = node._value.dtype, node._p.shape[0]
        labels = self._labels(b, node, backward=True)
        source, ce = node.x, isinstance(node, CrossEntropyLoss)
        if isinstance(source, Softmax if ce else Sigmoid) and self.consumers[id(source)] == [node]:
            # Differentiate the pair in one pass, which also writes the Softmax's/Sigmoid's gradient.
            fused.add(id(source))
            (gx, acc), (gp, _) = target(source.x), target(source)
            code = _engine.SOFTMAX_CE_BWD if ce else _engine.SIGMOID_BCE_BWD
            dims = (n, node._p.shape[1]) if ce else (source._value.size,)
            if gx is None:   # the Softmax/Sigmoid reads an Input: only its own gradient is wanted
                code = _engine.CE_BWD if ce else _engine.BCE_BWD
                b.op(code, dtype, dims, [b.fixed(source._value), labels, g, gp], (False,))
            elif ce and id(source.x) in self._bias_in_activation:
                # The Affine's bias gradient: the column sums of what this pass writes.
                gb, ab = self._fused_bias_gradient(source.x, target, bias_done)
                b.op(code, dtype, dims, [b.fixed(source._value), labels, g, gx, gp, gb], (acc, ab))
            else:
                b.op(code, dtype, dims, [b.fixed(source._value), labels, g, gx, gp], (acc,))
            return
        gp, acc = target(source)
        if gp is not None:
            p = b.value(source, node._p.shape, dtype)
            if ce:
                b.op(_engine.CE_BWD, dtype, (n, node._p.shape[1]), [p, labels, g, gp], (acc,))
            else:
                b.op(_engine.BCE_BWD, dtype, (n,), [p, labels, g, gp], (acc,))

    def backward(self, loss):
        """Run the backward program for `loss`; raises Replan when the plan no longer fits, or
        when its forward program has not run (it reads what that run left)."""
        if not self.state["forward_ran"]:   # once True, True for this plan: no lock needed
            raise Replan("forward")
        if loss is not self._last_loss:
            program = self._backward.get(id(loss))
            if program is None:
                with self._lock:   # built from the nodes as they are: not while another thread changes them
                    if not any(c is loss for c in self.nodes):
                        raise Replan("loss")   # the node-by-node Backward says what is wrong
                    # A node made since the forward ran has no value to differentiate (a program
                    # built now is guarded against later changes, as every program is).
                    if tuple(self.nodes) != self.nodes_run:   # compared by identity: nodes have no __eq__
                        raise Replan("graph")
                    program = self._backward[id(loss)] = self._build_backward(loss)
            self._last_loss, self._last_backward = loss, program
            self.last_batch = loss._value.shape[0] if loss._value.ndim else 1
        self._last_backward.run()

    # -- update ------------------------------------------------------------

    def _build_update(self):
        """The SGD program (run with the learning rate), or None if a parameter is not a float array."""
        program = update_program(self.parameters, _engine.SGD)
        if program is not None:
            program.guard(self.nodes, self.parameters)
            program.serialise(self._lock)
        return program


def update_program(params, code, state_of=lambda p: (), scalars=()):
    """One update per parameter in one program: operation `code` on (value, grad, *state_of(p)).

    Run with the learning rate (``program.run(lr)``). The values and gradients are
    bound: read afresh at every run, and a parameter whose value or gradient is
    no longer a C-contiguous array of its dtype and shape raises Replan (its
    caller then updates through the kernels one by one, which convert or
    raise). `state_of(p)` gives buffers of the caller's own (an optimiser's
    moments), None for one not in use. None when a value is not a float array.
    """
    b = _Builder()
    for p in params:
        value = p.value
        if type(value) is not np.ndarray or value.dtype not in _FLOATS:
            return None
        shape, dtype = value.shape, value.dtype
        args = [b.bound(p, "value", shape, (dtype,), _exact, writable=True), b.bound(p, "grad", shape, (dtype,), _exact)]
        args += [None if s is None else b.fixed(s) for s in state_of(p)]
        b.op(code, dtype, (value.size,), args, scalars=scalars)
    return Program(b.buffers, b.ops, b.messages)


def _no_update(learning_rate):
    raise Replan("update")


def build(graph):
    """The plan of `graph`, right after a node-by-node Forward; None if the engine cannot run it."""
    if not (all(compiled(c) for c in graph.CompNodes)
            and all(type(p) is Parameter and type(p.value) is np.ndarray for p in graph.Parameters)):
        return None
    if any(c._value is None or c._value.dtype not in _FLOATS for c in graph.CompNodes):
        return None
    try:
        return GraphPlan(graph)
    except _NotCompilable:
        return None
