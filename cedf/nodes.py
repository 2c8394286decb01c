"""The nodes of a computation graph: the lecture's three kinds and its layers.

`Input` holds data, `Parameter` holds what training changes, and every `CompNode`
computes its ``value`` from its inputs in ``forward`` and, in ``backward``, adds
its local gradient times its own ``grad`` into its inputs with ``addgrad``. Each
node knows only its own derivative; the walk over the graph is in `cedf.graph`.

The arithmetic is done by the kernels of the backend in use (`cedf.backend`).
What stays here is what keeps those kernels safe: each node converts its inputs
to C-contiguous arrays of its dtype and checks their shapes before it calls a
kernel, and raises an exception naming itself when something does not fit.

Values and gradients live in buffers that a node allocates once and reuses as
long as the batch shape stays the same; copy a ``.value`` you want to keep
across steps.

A node belongs to the graph it was created in, which holds it; the node holds
its graph only weakly, so that a graph nobody holds is freed at once, with its
nodes and buffers, by reference counting (no cycle for the garbage collector).
What a compiled plan depends on (a node's inputs, its parameters, a slope, its
``.value`` or ``.grad`` array) may be changed after construction: setting a
public attribute of one of cedf's nodes checks the new value as the
constructor does and drops the graph's plan, so the next step follows it.
"""
import weakref

import numpy as np

import cedf

from . import backend

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def default_dtype():
    """``cedf.DT`` as a dtype, after checking that it is one the engine computes in."""
    try:
        dtype = None if cedf.DT is None else np.dtype(cedf.DT)
    except TypeError:
        dtype = None
    if dtype is None or dtype not in _FLOATS:   # (NumPy finds None equal to float64)
        raise TypeError(f"cedf.DT must be np.float32 or np.float64, got {cedf.DT!r}: the kernels compute in "
                        f"those two; set edf.DT = np.float32 (the default) or edf.DT = np.float64")
    return dtype


def _float_dtype(arr):
    """The dtype a node computes in for input `arr`: its own if float32/64, else cedf.DT."""
    return arr.dtype if arr.dtype in _FLOATS else default_dtype()


def _name(node):
    return type(node).__name__


_ANY_GRAPH = object()   # what an Input belongs to: it holds data, not part of a graph


def _check_node(owner, role, node, graph=None):
    """`node`, after checking that it is a node that a node of `graph` (default: the current one) may read."""
    if not hasattr(node, "addgrad"):
        raise TypeError(
            f"{owner}: {role} must be a cedf node (Input, Parameter or CompNode), "
            f"got {type(node).__name__}; wrap data in an Input and set its .value"
        )
    home = getattr(node, "_graph", _ANY_GRAPH)
    if home is None:
        raise ValueError(f"{owner}: {role} ({_name(node)}) belongs to a graph that was cleared or no longer "
                         f"exists; create it again in the current graph")
    if home is not _ANY_GRAPH and home is not (cedf.graph.current_graph() if graph is None else graph):
        raise ValueError(f"{owner}: {role} ({_name(node)}) belongs to another graph; "
                         f"a graph's nodes can only read nodes of the same graph")
    return node


def _asarray(node, role, value):
    """np.asarray(value), with NumPy's complaint about a ragged list turned into one naming the node."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{_name(node)}: {role} must be an array of numbers of one shape ({exc})") from None


def _reuse(buf, shape, dtype):
    """`buf` if it already has this shape and dtype, else a new empty array."""
    if buf is not None and buf.shape == shape and buf.dtype == dtype:
        return buf
    return np.empty(shape, dtype)


def writable_buffer(arr, shape, dtype):
    """Whether `arr` is an ndarray of this shape and dtype that a kernel may write in place."""
    return (type(arr) is np.ndarray and arr.shape == shape and arr.dtype == dtype
            and arr.flags.c_contiguous and arr.flags.writeable)


def zero_grad(node):
    """Set ``node.grad`` to zeros shaped like its value, reusing the array it has when it fits."""
    value = node.value
    if value is None:
        raise RuntimeError(f"{_name(node)}: it has no value yet; call Forward() before Backward()")
    value = np.asarray(value)
    dtype = _float_dtype(value)
    grad = getattr(node, "grad", None)
    if writable_buffer(grad, value.shape, dtype):
        grad.fill(0)
    else:
        set_quietly(node, "grad", np.zeros(value.shape, dtype))


def set_quietly(node, name, value):
    """Set an attribute of a node as the engine's own bookkeeping: a plan of the graph is kept."""
    if isinstance(node, BuiltinNode):
        object.__setattr__(node, name, value)
    else:
        setattr(node, name, value)


class Input:
    """Data fed to the graph: set ``.value`` before `Forward`. Takes no gradient.

    `name`, if given, labels it in drawings (`cedf.draw`).
    """

    value = None

    def __init__(self, name=None):
        self.name = name

    def addgrad(self, delta):
        pass


class _Member:
    """What belongs to a graph: a weak reference to it (see the module's docstring)."""

    _graph_ref = None

    @property
    def _graph(self):
        """The graph this belongs to; None once it was cleared or freed."""
        ref = self._graph_ref
        return ref() if ref is not None else None

    def _join(self, nodes_of):
        """Join the current graph: append to the list that `nodes_of(graph)` gives."""
        graph = cedf.graph.current_graph()
        self._graph_ref = weakref.ref(graph)
        nodes_of(graph).append(self)


def describe(p):
    """How messages name a parameter: by its name, else by its shape."""
    name = getattr(p, "name", None)
    return f"Parameter {name!r}" if name is not None else f"Parameter (unnamed, shape {np.shape(p.value)})"


class Parameter(_Member):
    """A trainable array: ``.value`` (in cedf.DT), ``.grad``, updated by `UpdateParameters`.

    `name`, if given, is the parameter's key in a checkpoint (`cedf.save`).
    """

    value = None
    grad = None

    def __init__(self, value, name=None):
        dtype = default_dtype()
        try:
            self.value = np.array(value, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Parameter: value must be an array of real numbers ({exc})") from None
        self.name = name
        self._join(lambda graph: graph.Parameters)

    def addgrad(self, delta):
        # A per-example gradient has an extra leading batch axis: sum it out.
        if np.ndim(delta) > self.value.ndim:
            delta = np.sum(delta, axis=0)
        if np.shape(delta) != np.shape(self.grad):   # `+=` would broadcast it silently, or fail unnamed
            raise ValueError(f"{describe(self)}: a backward added a gradient of shape {np.shape(delta)} to .grad, "
                             f"which has the shape of .value, {np.shape(self.grad)}: if .value was replaced since "
                             f"Forward(), run Forward() again before Backward(); a node of your own must add a "
                             f"gradient shaped like its parameter")
        self.grad += delta

    def check_update(self):
        """Raise what `UpdateParameters` would: the graph checks every parameter before it updates one."""
        if self.grad is None:
            raise RuntimeError(f"{describe(self)}: UpdateParameters() needs its gradient, and .grad is None: "
                               f"call Backward(L) first (and leave .grad to cedf)")
        value = self.value
        if isinstance(value, np.ndarray) and (value.dtype.kind != "f" or not value.flags.writeable):
            what = f"dtype {value.dtype}" if value.dtype.kind != "f" else "a read-only array"
            raise TypeError(f"Parameter: UpdateParameters needs a writable float array as .value, got {what}")
        if np.shape(self.grad) != np.shape(value):   # `value -= lr * grad` would broadcast it silently
            raise ValueError(f"{describe(self)}: .grad has shape {np.shape(self.grad)}, .value {np.shape(value)}")

    def UpdateParameters(self):
        self.check_update()
        value = self.value
        if not isinstance(value, np.ndarray):   # a list: `value - step` makes it an array, as in the lecture
            self.value = value - cedf.learning_rate * self.grad
            return
        value -= cedf.learning_rate * self.grad


class _Lazy:
    """An attribute that the compiled plan may leave to be computed when it is read.

    The plan (`cedf.plan`) skips work whose result no other node needs: the
    per-example loss values, during training, cost a logarithm each and only a
    person reads them; an Affine read only by a Sigmoid, a ReLU or a Softmax
    need not add its bias into its own value. It leaves a function in ``_pending_<name>`` instead, and
    reading the attribute runs it, so ``.value`` is always there for a user who
    asks. The function reads buffers that only the next Forward overwrites,
    and that Forward leaves a new one.

    A Forward that raised midway leaves `_Refused` instead, so that a value
    half of whose inputs are new is never read as if it were a result.
    """

    def __set_name__(self, owner, name):
        self.slot, self.pending = f"_{name}", f"_pending_{name}"

    def __get__(self, node, owner=None):
        if node is None:
            return self
        compute = getattr(node, self.pending)
        if compute is not None:
            if type(compute) is not _Refused:
                setattr(node, self.pending, None)
            compute()
        return getattr(node, self.slot)

    def __set__(self, node, value):
        setattr(node, self.pending, None)
        setattr(node, self.slot, value)


class CompNode:
    """Base class of computed nodes: ``.value``, ``.grad``, ``addgrad(delta)``.

    A node of your own subclasses it, appends itself to ``cedf.CompNodes`` in
    ``__init__``, sets ``self.value`` in ``forward()`` and calls its inputs'
    ``addgrad`` in ``backward()``, exactly as in the lecture.
    """

    value = _Lazy()
    _value = _pending_value = None
    grad = None

    def addgrad(self, delta):
        self.grad += delta


class _Refused:
    """A node's value after a Forward that raised: reading it raises, naming that error."""

    def __init__(self, node, error):
        self.node, self.error = _name(node), f"{type(error).__name__}: {error}"

    def __call__(self):
        raise RuntimeError(f"{self.node}: no value: the last Forward() was refused ({self.error}); "
                           f"fix what it names and run Forward() again")


def refuse_values(nodes, error):
    """Make the values of `nodes` unreadable after a Forward that raised `error` midway."""
    for node in nodes:
        if isinstance(node, CompNode):
            node.__dict__["_pending_value"] = _Refused(node, error)


class BuiltinNode(CompNode, _Member):
    """Base of cedf's own nodes: checked inputs, reused buffers, direct gradient routing."""

    _value_buf = None
    _UNPLANNED = frozenset({"name"})   # public attributes that no computation reads

    def _register(self):
        default_dtype()   # a bad cedf.DT is named now, not at the first Forward
        self._join(lambda graph: graph.CompNodes)

    def __setattr__(self, name, value):
        # Private names are the node's own bookkeeping; a public one is what it computes from.
        graph = self._graph if name[0] != "_" and name not in self._UNPLANNED else None
        if graph is None:
            object.__setattr__(self, name, value)
            return
        old = self.__dict__.get(name)
        check = getattr(self, f"_check_{name}", None)
        if check is not None:
            value = check(value, graph)
        elif _is_node(old):
            value = _check_node(_name(self), name, value, graph)
        with graph.lock:   # not under a step that another thread runs
            graph.attribute_changing(self, name)
            object.__setattr__(self, name, value)

    def _release(self):
        """Drop every buffer (the graph was cleared)."""
        self._value_buf = None
        for attr in ("_x", "_A", "_p", "_y", "_z", "_p_buf"):
            self.__dict__.pop(attr, None)

    def _operand(self, node, role, dtype=None, ndims=None):
        """`node.value` as a C-contiguous float array of `dtype`, after checking it."""
        if self._graph is None:
            raise RuntimeError(f"{_name(self)}: its graph was cleared (clear_compgraph) or no longer exists; "
                               f"create the node again")
        value = node.value
        if value is None:
            if isinstance(node, CompNode) and not any(c is node for c in self._graph.CompNodes):
                raise ValueError(
                    f"{_name(self)}: its input {role} ({_name(node)}) is not in the graph, so Forward() never "
                    f"computes it: a node of your own must add itself in its __init__, with "
                    f"edf.CompNodes.append(self), as the lecture's nodes do"
                )
            raise ValueError(
                f"{_name(self)}: its input {role} ({_name(node)}) has no value; "
                f"set .value of every Input before Forward()"
            )
        arr = _asarray(self, role, value)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{_name(self)}: {role} must hold real numbers, got dtype {arr.dtype}")
        if ndims is not None and arr.ndim not in ndims:
            expected = " or ".join(f"{n}-D" for n in ndims)
            fix = ""
            if arr.ndim == 1 and 2 in ndims:
                fix = (f"; a batch is (examples, features): X.reshape(-1, 1) for one feature per example, "
                       f"X[None] for one example")
            raise ValueError(f"{_name(self)}: {role} must be {expected}, got shape {arr.shape}{fix}")
        dtype = dtype if dtype is not None else _float_dtype(arr)
        try:
            with np.errstate(over="raise"):
                return np.asarray(arr, dtype=dtype, order="C")
        except FloatingPointError:
            raise ValueError(f"{_name(self)}: {role} holds values beyond the range of {np.dtype(dtype)} "
                             f"(largest {np.finfo(dtype).max:.4g}), which it computes in: scale the data "
                             f"(e.g. standardise it), or compute in float64 (edf.DT = np.float64 before "
                             f"building the graph)") from None

    def _output(self, shape, dtype):
        """The node's value buffer for this shape and dtype, allocated on first use."""
        self._value = self._value_buf = _reuse(self._value_buf, shape, dtype)
        self._pending_value = None
        return self._value_buf

    def _incoming(self):
        """``self.grad`` (the gradient from the consumers) as a buffer shaped like the value."""
        grad = np.asarray(self.grad, dtype=self.value.dtype, order="C")
        if grad.shape != self.value.shape:
            raise ValueError(
                f"{_name(self)}: .grad has shape {grad.shape}, expected {self.value.shape} like .value"
            )
        return grad

    @staticmethod
    def _grad_sink(node, shape, dtype):
        """Where to add the gradient for input `node`: ``(buffer, pass_on)``.

        An Input takes none: ``(None, False)``. A node with the stock ``addgrad``
        whose ``.grad`` is a buffer of the right shape and dtype is added into in
        place. Any other node (one with its own ``addgrad``, a ``.grad`` of
        another dtype) gets a zeroed scratch buffer to hand to its ``addgrad``
        afterwards (`pass_on`).
        """
        addgrad = type(node).addgrad
        if addgrad is Input.addgrad:
            return None, False
        if addgrad in (CompNode.addgrad, Parameter.addgrad) and writable_buffer(node.grad, shape, dtype):
            return node.grad, False
        return np.zeros(shape, dtype), True

    @staticmethod
    def _pass_on(sinks):
        """Hand each scratch gradient of `sinks`, (node, buffer, pass_on) as `_grad_sink` gave them,
        to its node's own ``addgrad``."""
        for node, delta, pass_on in sinks:
            if pass_on:
                node.addgrad(delta)


def _is_node(obj):
    if isinstance(obj, type):   # a node class kept as an attribute is not a node
        return False
    return isinstance(obj, (Input, Parameter, CompNode)) or (hasattr(obj, "addgrad") and hasattr(obj, "value"))


def inputs_of(node):
    """The nodes that `node` reads, found from its attributes (so a user's node is covered too):
    nodes, lists of nodes, and the nodes of a parameter holder (AffineParams)."""
    if isinstance(node, (Input, Parameter)):
        return []
    found = []
    for name, value in vars(node).items():
        if name.startswith("_") or name in ("value", "grad"):
            continue
        if _is_node(value):
            found.append(value)
        elif isinstance(value, (list, tuple)):   # a node reading several inputs
            found.extend(v for v in value if _is_node(v))
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            found.extend(v for v in vars(value).values() if _is_node(v))
    return found


def upstream(node):
    """`node` and every node it depends on, each once, `node` first."""
    order, seen, stack = [], set(), [node]
    while stack:
        current = stack.pop()
        if id(current) not in seen:
            seen.add(id(current))
            order.append(current)
            stack.extend(inputs_of(current))
    return order


class ParameterHolder:
    """What holds a layer's parameters (AffineParams, ConvParams): a parameter swapped for another
    after construction is checked as the layer checks its parameters, and the graph's plan (which
    reads the old one) is dropped."""

    def __setattr__(self, name, value):
        old = self.__dict__.get(name)
        graph = old._graph if isinstance(old, Parameter) else None
        if graph is None:
            object.__setattr__(self, name, value)
            return
        _check_node(type(self).__name__, name, value, graph)
        with graph.lock:
            graph.attribute_changing(self, name)
            object.__setattr__(self, name, value)


class AffineParams(ParameterHolder):
    """The parameters of an affine layer: ``A`` (nInputs, nOutputs) and ``b`` (nOutputs,).

    ``A`` is drawn uniformly from ±sqrt(3 / nInputs) with NumPy's global random
    state, as in the lecture, so ``np.random.seed`` reproduces a run. With a
    `name`, the parameters are named "<name>.A" and "<name>.b" in checkpoints.
    """

    def __init__(self, nInputs, nOutputs, name=None):
        for arg, n in (("nInputs", nInputs), ("nOutputs", nOutputs)):
            if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
                raise ValueError(f"AffineParams: {arg} must be a positive integer, got {n!r}")
        bound = np.sqrt(3 / nInputs)
        self.A = Parameter(np.random.uniform(-bound, bound, (nInputs, nOutputs)),
                           name=None if name is None else f"{name}.A")
        self.b = Parameter(np.zeros(nOutputs), name=None if name is None else f"{name}.b")


class Affine(BuiltinNode):
    """``x @ A + b`` for a batch x of shape (B, nInputs)."""

    def __init__(self, params, x):
        self.params = self._check_params(params)
        self.x = _check_node("Affine", "x", x)
        self._register()

    @staticmethod
    def _check_params(params, graph=None):
        if not (hasattr(params, "A") and hasattr(params, "b")):
            raise TypeError(f"Affine: params must be an AffineParams, got {type(params).__name__}")
        _check_node("Affine", "A", params.A, graph)
        _check_node("Affine", "b", params.b, graph)
        return params

    def forward(self):
        A = self._operand(self.params.A, "A", ndims=(2,))
        b = self._operand(self.params.b, "b", dtype=A.dtype, ndims=(1,))
        x = self._operand(self.x, "x", dtype=A.dtype, ndims=(2,))
        n_in, n_out = A.shape
        if x.shape[1] != n_in:
            raise ValueError(f"Affine: x has {x.shape[1]} features, A expects {n_in}")
        if b.shape != (n_out,):
            raise ValueError(f"Affine: b has shape {b.shape}, A has {n_out} outputs so b must be ({n_out},)")
        self._x, self._A = x, A
        backend.kernels.affine_forward(x, A, b, self._output((x.shape[0], n_out), A.dtype))

    def backward(self):
        x, A = self._x, self._A
        gx, pass_x = self._grad_sink(self.x, x.shape, x.dtype)
        gA, pass_A = self._grad_sink(self.params.A, A.shape, A.dtype)
        gb, pass_b = self._grad_sink(self.params.b, (A.shape[1],), A.dtype)
        backend.kernels.affine_backward(x, A, self._incoming(), gx, gA, gb)
        self._pass_on(((self.x, gx, pass_x), (self.params.A, gA, pass_A), (self.params.b, gb, pass_b)))


class _Elementwise(BuiltinNode):
    """A function of each element: the value has x's shape, the gradient is local per element.

    Subclasses give `_forward(x, out)` and `_backward(g, gx)` on flat buffers.
    """

    # Any layout in, the same layout out: the plan keeps it batch-last when x is (cedf.plan).
    _elementwise = True

    def __init__(self, x):
        self.x = _check_node(_name(self), "x", x)
        self._register()

    def forward(self):
        x = self._operand(self.x, "x")
        self._x = x
        out = self._output(x.shape, x.dtype)
        self._forward(x.reshape(-1), out.reshape(-1))

    def backward(self):
        gx, pass_on = self._grad_sink(self.x, self.value.shape, self.value.dtype)
        if gx is None:
            return
        self._backward(self._incoming().reshape(-1), gx.reshape(-1))
        if pass_on:
            self.x.addgrad(gx)


class Sigmoid(_Elementwise):
    """The logistic function 1 / (1 + exp(-x)), input clipped to [-10, 10] as in the lecture."""

    def _forward(self, x, out):
        backend.kernels.sigmoid_forward(x, out)

    def _backward(self, g, gx):
        backend.kernels.sigmoid_backward(self.value.reshape(-1), g, gx)


class Tanh(_Elementwise):
    """tanh(x); its local gradient is 1 - tanh(x)^2."""

    def _forward(self, x, out):
        backend.kernels.tanh_forward(x, out)

    def _backward(self, g, gx):
        backend.kernels.tanh_backward(self.value.reshape(-1), g, gx)


class LeakyReLU(_Elementwise):
    """x where x >= 0 and slope * x below; the gradient at 0 is slope's, as in PyTorch."""

    def __init__(self, x, slope=0.01):
        self.slope = self._check_slope(slope)
        super().__init__(x)

    def _check_slope(self, slope, graph=None):
        if not isinstance(slope, (int, float, np.floating)) or isinstance(slope, bool) or not np.isfinite(slope):
            raise ValueError(f"{_name(self)}: slope must be a finite number, got {slope!r}")
        return float(slope)

    def _forward(self, x, out):
        backend.kernels.leaky_relu_forward(x, out, self.slope)

    def _backward(self, g, gx):
        backend.kernels.leaky_relu_backward(self._x.reshape(-1), g, gx, self.slope)


class ReLU(LeakyReLU):
    """max(x, 0); the gradient at 0 is 0."""

    def __init__(self, x):
        super().__init__(x, slope=0.0)


class Add(BuiltinNode):
    """``a + b`` for two inputs of one shape (no broadcasting): a residual connection ``h + f(h)``.

    Its gradient passes on unchanged to both terms (twice to an input given as both).
    """

    def __init__(self, a, b):
        self.a = _check_node("Add", "a", a)
        self.b = _check_node("Add", "b", b)
        self._register()

    def forward(self):
        a = self._operand(self.a, "a")
        b = self._operand(self.b, "b", dtype=a.dtype)
        if a.shape != b.shape:
            raise ValueError(f"Add: a has shape {a.shape} and b {b.shape}; they must be equal (Add does not "
                             f"broadcast: reshape one, or add a bias with an Affine)")
        out = self._output(a.shape, a.dtype)
        backend.kernels.add_forward(a.reshape(-1), b.reshape(-1), out.reshape(-1))

    def backward(self):
        shape, dtype = self.value.shape, self.value.dtype
        ga, pass_a = self._grad_sink(self.a, shape, dtype)
        gb, pass_b = self._grad_sink(self.b, shape, dtype)
        backend.kernels.add_backward(self._incoming().reshape(-1), _flat(ga), _flat(gb))
        self._pass_on(((self.a, ga, pass_a), (self.b, gb, pass_b)))

    def _plan_forward(self, plan, prog):
        value = self._value
        prog.op(backend._engine.ADD, value.dtype, (value.size,),
                [prog.value(self.a, value.shape, value.dtype), prog.value(self.b, value.shape, value.dtype),
                 prog.fixed(value)])

    def _plan_backward(self, plan, prog, g, target):
        for term in (self.a, self.b):
            gt, acc = target(term)
            if gt is not None:
                prog.op(backend._engine.ACCUMULATE, self._value.dtype, (self._value.size,), [g, gt], (acc,))


def _flat(buffer):
    return None if buffer is None else buffer.reshape(-1)


class Softmax(BuiltinNode):
    """Softmax over the last axis (the classes), each row shifted by its max and floored at -10."""

    def __init__(self, x):
        self.x = _check_node("Softmax", "x", x)
        self._register()

    def forward(self):
        x = self._operand(self.x, "x")
        if x.ndim == 0 or x.shape[-1] == 0:
            raise ValueError(f"Softmax: x must have a last axis of at least one class, got shape {x.shape}")
        out = self._output(x.shape, x.dtype)
        rows = (-1, x.shape[-1])
        backend.kernels.softmax_forward(x.reshape(rows), out.reshape(rows))

    def backward(self):
        gx, pass_on = self._grad_sink(self.x, self.value.shape, self.value.dtype)
        if gx is None:
            return
        rows = (-1, self.value.shape[-1])
        backend.kernels.softmax_backward(self.value.reshape(rows), self._incoming().reshape(rows),
                                         gx.reshape(rows))
        if pass_on:
            self.x.addgrad(gx)


def _labels_like(owner, labels, n):
    """Check that `labels` has one entry per example: shape (n,) or (n, 1)."""
    if labels.shape not in ((n,), (n, 1)):
        raise ValueError(f"{owner}: y has shape {labels.shape}, expected ({n},), one label per example")
    return labels.reshape(n)


def _class_indices(node, n, n_classes, role="p"):
    """node.y.value as int64 class indices, checked to be integral and in [0, n_classes)."""
    if node.y.value is None:
        raise ValueError(f"{_name(node)}: its input y (Input) has no value; set y.value before Forward()")
    y = _asarray(node, "y", node.y.value)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{_name(node)}: y must hold integer class indices, got dtype {y.dtype}")
    # A copy of our own, checked: the kernels index by it, and Backward reads what Forward read.
    y = _labels_like(_name(node), y, n).copy()
    if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.floor(y))):
        bad = y[~(np.isfinite(y) & (y == np.floor(y)))][0]
        raise ValueError(f"{_name(node)}: y must hold whole class indices, got {bad}")
    if n and (y.min() < 0 or y.max() >= n_classes):
        bad = y[(y < 0) | (y >= n_classes)][0]
        raise ValueError(
            f"{_name(node)}: label {bad} is outside [0, {n_classes}) ({role} has {n_classes} classes)"
        )
    return np.ascontiguousarray(y, dtype=np.int64)


class CrossEntropyLoss(BuiltinNode):
    """Per-example ``-log p[i, y_i]`` for class probabilities p (B, C) and class indices y (B,)."""

    def __init__(self, x, y):
        self.x = _check_node("CrossEntropyLoss", "p", x)
        self.y = _check_node("CrossEntropyLoss", "y", y)
        self._register()

    def _class_indices(self, n, n_classes):
        return _class_indices(self, n, n_classes)

    def forward(self):
        p = self._operand(self.x, "p", ndims=(2,))
        self._p = p
        self._y = self._class_indices(p.shape[0], p.shape[1])
        backend.kernels.cross_entropy_forward(p, self._y, self._output((p.shape[0],), p.dtype))

    def backward(self):
        p = self._p
        gp, pass_on = self._grad_sink(self.x, p.shape, p.dtype)
        if gp is None:
            return
        backend.kernels.cross_entropy_backward(p, self._y, self._incoming(), gp)
        if pass_on:
            self.x.addgrad(gp)


class BCELoss(BuiltinNode):
    """Per-example binary cross-entropy ``-y log p - (1 - y) log(1 - p)``, p (B, 1) or (B,), y in {0, 1}."""

    def __init__(self, x, y):
        self.x = _check_node("BCELoss", "p", x)
        self.y = _check_node("BCELoss", "y", y)
        self._register()

    def forward(self):
        p = self._operand(self.x, "p", ndims=(1, 2))
        if p.ndim == 2 and p.shape[1] != 1:
            raise ValueError(f"BCELoss: p has shape {p.shape}, expected (B, 1) or (B,): one probability per example")
        n = p.shape[0]
        self._p, self._y = p, self._labels(n, p.dtype)
        backend.kernels.bce_forward(p.reshape(n), self._y, self._output((n,), p.dtype))

    def _labels(self, n, dtype):
        """y.value as 0/1 labels in `dtype`: a copy of our own (Backward reads what Forward read), checked."""
        y = _labels_like("BCELoss", self._operand(self.y, "y", dtype=dtype), n).copy()
        if not np.all((y == 0) | (y == 1)):
            raise ValueError(f"BCELoss: y must hold labels 0 or 1, got {y[(y != 0) & (y != 1)][0]}")
        return y

    def backward(self):
        p = self._p
        gp, pass_on = self._grad_sink(self.x, p.shape, p.dtype)
        if gp is None:
            return
        n = p.shape[0]
        backend.kernels.bce_backward(p.reshape(n), self._y, self._incoming(), gp.reshape(n))
        if pass_on:
            self.x.addgrad(gp)


class SoftmaxCrossEntropyLoss(BuiltinNode):
    """Per-example ``logsumexp(z_i) - z[i, y_i]``: Softmax and CrossEntropyLoss of logits z (B, C) in one node.

    Unlike the lecture's pair, nothing is clipped or floored: the loss is exact
    and finite for every finite logit (up to a quarter of the dtype's largest
    value), and its gradient is ``p - onehot(y)``. ``.probabilities`` holds the
    softmax of the last Forward.
    """

    _p_buf = None

    def __init__(self, x, y):
        self.x = _check_node("SoftmaxCrossEntropyLoss", "logits", x)
        self.y = _check_node("SoftmaxCrossEntropyLoss", "y", y)
        self._register()

    @property
    def probabilities(self):
        return self._p_buf

    def _class_indices(self, n, n_classes):
        return _class_indices(self, n, n_classes, role="logits")

    def forward(self):
        z = self._operand(self.x, "logits", ndims=(2,))
        if z.shape[1] == 0:
            raise ValueError(f"SoftmaxCrossEntropyLoss: logits must have at least one class, got shape {z.shape}")
        self._z = z
        self._y = self._class_indices(z.shape[0], z.shape[1])
        self._p_buf = _reuse(self._p_buf, z.shape, z.dtype)
        backend.kernels.cross_entropy_logits_forward(z, self._y, self._p_buf,
                                                     self._output((z.shape[0],), z.dtype))

    def backward(self):
        z = self._z
        gz, pass_on = self._grad_sink(self.x, z.shape, z.dtype)
        if gz is None:
            return
        backend.kernels.cross_entropy_logits_backward(self._p_buf, self._y, self._incoming(), gz)
        if pass_on:
            self.x.addgrad(gz)


class BCEWithLogitsLoss(BuiltinNode):
    """Per-example binary cross-entropy of sigmoid(z), from the logits z (B, 1) or (B,) directly.

    ``max(z, 0) - z y + log(1 + exp(-|z|))``: no clipping, finite for every
    finite logit; gradient ``sigmoid(z) - y``. Targets y may be any values in
    [0, 1] (soft labels), not only 0 and 1.
    """

    def __init__(self, x, y):
        self.x = _check_node("BCEWithLogitsLoss", "logits", x)
        self.y = _check_node("BCEWithLogitsLoss", "y", y)
        self._register()

    def forward(self):
        z = self._operand(self.x, "logits", ndims=(1, 2))
        if z.ndim == 2 and z.shape[1] != 1:
            raise ValueError(f"BCEWithLogitsLoss: logits has shape {z.shape}, expected (B, 1) or (B,): "
                             f"one logit per example")
        n = z.shape[0]
        y = _labels_like("BCEWithLogitsLoss", self._operand(self.y, "y", dtype=z.dtype), n).copy()
        if not np.all((y >= 0) & (y <= 1)):
            raise ValueError(f"BCEWithLogitsLoss: y must hold targets in [0, 1], got {y[~((y >= 0) & (y <= 1))][0]}")
        self._z, self._y = z, y
        backend.kernels.bce_logits_forward(z.reshape(n), y, self._output((n,), z.dtype))

    def backward(self):
        z = self._z
        gz, pass_on = self._grad_sink(self.x, z.shape, z.dtype)
        if gz is None:
            return
        n = z.shape[0]
        backend.kernels.bce_logits_backward(z.reshape(n), self._y, self._incoming(), gz.reshape(n))
        if pass_on:
            self.x.addgrad(gz)
