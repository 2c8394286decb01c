"""Normalisation layers: `BatchNorm` and `LayerNorm`, with a learnt scale and shift.

Both normalise x to zero mean and unit variance, then scale and shift it by
their Parameters ``weight`` (ones) and ``bias`` (zeros), one per feature, made
at construction so that optimisers and checkpoints see them. Both compute in
their parameters' dtype (data of another dtype is converted, as an Affine
does), with statistics in double (see the kernels, `cedf/_normalization.pyx`).

BatchNorm's statistics are per channel, over the batch and the positions of
(N, F), (N, C, L) or (N, C, H, W); in training mode they are the batch's and
update the running statistics ``running_mean`` and ``running_var`` (arrays of
the node's, not Parameters: nothing differentiates them, `cedf.save` stores
them), which evaluation mode (`cedf.eval`, `predict`, `evaluate`) uses
instead. LayerNorm's are per example, over the last axis, the same in both
modes. The compiled plan reads the graph's mode when it runs, so switching
mode keeps the plan.
"""
import numpy as np

from . import backend
from .nodes import BuiltinNode, Parameter, _check_node, _name, _reuse, set_quietly, writable_buffer


def _channels_view(x):
    """BatchNorm's (N, C, S) view of x's shape: S positions per channel (1 for (N, F))."""
    return (x.shape[0], x.shape[1], int(np.prod(x.shape[2:], dtype=np.int64)))


def _not_compilable(why):
    from .plan import _NotCompilable   # the plan is built only where the compiled modules are
    return _NotCompilable(why)


def _features_of(node, axis):
    """The size of axis `axis` (1 or -1) of what `node` will compute, read from the layer that makes
    it before anything ran: a Conv's output channels, an Affine's outputs, through the nodes that keep
    that axis (activations, Dropout, pooling, the normalisations, Add); None when it cannot be told."""
    from .conv import Conv
    from .dropout import Dropout
    from .nodes import Add, Affine, Sigmoid, Softmax, Tanh, LeakyReLU
    from .pooling import AvgPool, MaxPool

    keep = (Sigmoid, Softmax, Tanh, LeakyReLU, Dropout, _Normalization) + ((MaxPool, AvgPool) if axis == 1 else ())
    for _ in range(1000):   # a chain of nodes, not a cycle (a graph has none): bounded anyway
        if isinstance(node, Affine):
            return int(np.shape(node.params.A.value)[1])
        if isinstance(node, Conv) and axis == 1:
            return int(np.shape(node.params.W.value)[0])
        if isinstance(node, Add):
            node = node.a
        elif isinstance(node, keep):
            node = node.x
        else:
            return None
    return None


class _Normalization(BuiltinNode):
    """What BatchNorm and LayerNorm share: their arguments, parameters, and how they read them.

    Subclasses give `_FEATURE_AXIS` (where x holds the features), `_NDIMS`
    (the ranks x may have) and `_VIEW` (what x's axes are, for messages).
    """

    _stats = _scratch = None

    def __init__(self, x, num_features=None, eps=1e-5, name=None):
        self.x = _check_node(_name(self), "x", x)
        if num_features is None:
            num_features = self._inferred_features(x)
        self.num_features = self._check_num_features(num_features)
        self.eps = self._check_eps(eps)
        self.name = self._check_name(name)
        n = self.num_features
        self.weight = Parameter(np.ones(n), name=None if name is None else f"{name}.weight")
        self.bias = Parameter(np.zeros(n), name=None if name is None else f"{name}.bias")

    _UNPLANNED = frozenset()   # its name names its statistics in checkpoints: checked when set, as the rest

    def _check_name(self, name, graph=None):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{_name(self)}: name must be a str or None, got {type(name).__name__}")
        return name

    def _inferred_features(self, x):
        value = getattr(x, "value", None)
        shape = np.shape(value) if value is not None else None
        if shape is None:
            found = _features_of(x, self._FEATURE_AXIS)
            if found is not None:
                return found
        if shape is None or len(shape) not in self._NDIMS:
            got = "x has no value yet" if shape is None else f"x.value has shape {shape}"
            raise ValueError(f"{_name(self)}: give num_features (the size of x's axis {self._FEATURE_AXIS}, "
                             f"{self._VIEW}): {got}, so it cannot be read from x")
        return shape[self._FEATURE_AXIS]

    def _check_num_features(self, n, graph=None):
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ValueError(f"{_name(self)}: num_features must be a positive integer, got {n!r}")
        return int(n)

    def _check_eps(self, eps, graph=None):
        if not isinstance(eps, (int, float, np.floating)) or isinstance(eps, bool) or not (0 < eps < np.inf):
            raise ValueError(f"{_name(self)}: eps must be a positive finite number, got {eps!r}")
        return float(eps)

    def _operands(self):
        """weight, bias and x, checked: x in the weight's dtype, with num_features features."""
        w = self._operand(self.weight, "weight", ndims=(1,))
        b = self._operand(self.bias, "bias", dtype=w.dtype, ndims=(1,))
        x = self._operand(self.x, "x", dtype=w.dtype)
        if x.ndim not in self._NDIMS:
            raise ValueError(f"{_name(self)}: x must be {self._VIEW}, got shape {x.shape}")
        n = x.shape[self._FEATURE_AXIS]
        if n != self.num_features:
            raise ValueError(f"{_name(self)}: x has {n} features on axis {self._FEATURE_AXIS} (shape {x.shape}), "
                             f"but the node was made for num_features={self.num_features}; make it for {n}")
        for role, p in (("weight", w), ("bias", b)):
            if p.shape != (n,):
                raise ValueError(f"{_name(self)}: {role} has shape {p.shape}, expected ({n},), one per feature")
        return w, b, x

    def _sinks(self):
        x, n = self._x, self.num_features
        return [(self.x,) + self._grad_sink(self.x, x.shape, x.dtype),
                (self.weight,) + self._grad_sink(self.weight, (n,), x.dtype),
                (self.bias,) + self._grad_sink(self.bias, (n,), x.dtype)]

    def _release(self):
        super()._release()
        self._stats = self._scratch = None
        self.__dict__.pop("_w", None)

    def _parameter_buffers(self, prog, dtype):
        n = self.num_features
        return [prog.value(self.weight, (n,), dtype), prog.value(self.bias, (n,), dtype)]


class BatchNorm(_Normalization):
    """Batch normalisation (Ioffe and Szegedy 2015) per feature of (N, F), per channel of (N, C, L)
    and (N, C, H, W): ``weight (x - mean) / sqrt(var + eps) + bias``.

    In training mode mean and var are the batch's (over N and the positions; var
    biased), and ``running = (1 - momentum) running + momentum batch`` moves the
    running statistics (running_var by the unbiased variance), as PyTorch does;
    in evaluation mode the running statistics normalise. `num_features` is read
    from x's value when x has one. With `name`, its parameters are
    "<name>.weight" and "<name>.bias" and its statistics "<name>.running_mean"
    and "<name>.running_var" in a checkpoint.
    """

    _FEATURE_AXIS, _NDIMS, _VIEW = 1, (2, 3, 4), "(N, F), (N, C, L) or (N, C, H, W)"
    _STATISTICS = ("running_mean", "running_var")   # what cedf.save stores beside the parameters

    def __init__(self, x, num_features=None, momentum=0.1, eps=1e-5, name=None):
        super().__init__(x, num_features, eps, name)
        self.momentum = self._check_momentum(momentum)
        dtype = self.weight.value.dtype
        self.running_mean = np.zeros(self.num_features, dtype)
        self.running_var = np.ones(self.num_features, dtype)
        self._register()

    def _check_momentum(self, momentum, graph=None):
        if not isinstance(momentum, (int, float, np.floating)) or isinstance(momentum, bool) or not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm: momentum must be a number in [0, 1], got {momentum!r}")
        return float(momentum)

    def _check_statistic(self, name, value):
        try:
            arr = np.array(value, dtype=np.float64 if np.asarray(value).dtype.kind != "f" else None, order="C")
        except (TypeError, ValueError) as exc:
            raise TypeError(f"BatchNorm: {name} must be an array of real numbers ({exc})") from None
        if arr.dtype.kind != "f" or arr.shape != (self.num_features,):
            raise ValueError(f"BatchNorm: {name} must be a float array of shape ({self.num_features},), one per "
                             f"channel, got dtype {arr.dtype} and shape {arr.shape}")
        return arr

    def _check_running_mean(self, value, graph=None):
        return self._check_statistic("running_mean", value)

    def _check_running_var(self, value, graph=None):
        return self._check_statistic("running_var", value)

    def _running(self, dtype):
        """The running statistics as buffers the kernels update in place, in the layer's dtype."""
        return self._statistic("running_mean", dtype), self._statistic("running_var", dtype)

    def _statistic(self, name, dtype):
        """Statistic `name` as a writable buffer of `dtype`: what it is, or a copy put in its place
        (an array the user made read-only, or of another dtype, is not written)."""
        stat = getattr(self, name)
        if not writable_buffer(stat, (self.num_features,), dtype):
            stat = np.array(self._check_statistic(name, stat), dtype=dtype)
            set_quietly(self, name, stat)
        return stat

    def _saved_state(self, rewind=False):
        """A function that puts the running statistics back as they are now (`Graph._run_nodes`).
        A Forward run again (`rewind`, `Graph._replay_forward`) needs them as they are: in
        training they are not read, in evaluation not changed."""
        saved = [(name, getattr(self, name), np.array(getattr(self, name), copy=True)) for name in self._STATISTICS]

        def put_back():
            for name, array, values in saved:
                if getattr(self, name) is array and isinstance(array, np.ndarray) and array.flags.writeable:
                    array[...] = values
                else:
                    set_quietly(self, name, values)
        return put_back

    def forward(self):
        w, b, x = self._operands()
        n, c, positions = _channels_view(x)
        training = self._graph.training
        if training and n * positions < 2:
            raise ValueError(f"BatchNorm: in training mode it needs more than one value per channel, and x has "
                             f"shape {x.shape}: use a batch of 2 or more, or evaluation mode (edf.eval())")
        running_mean, running_var = self._running(w.dtype)
        self._x, self._w = x, w
        self._stats = stats = _reuse(self._stats, (2 * c + 1,), np.float64)
        self._scratch = _reuse(self._scratch, (2 * c,), np.float64)   # the plan's backward sums here
        out = self._output(x.shape, w.dtype)
        backend.kernels.batch_norm_forward(x.reshape(n, c, positions), w, b, running_mean, running_var, training,
                                           self.momentum, self.eps, stats[:c], stats[c:2 * c],
                                           out.reshape(n, c, positions))
        stats[2 * c] = training   # what the backward differentiates (see cedf/_normalization.pyx)

    def backward(self):
        x, c = self._x, self.num_features
        view = _channels_view(x)
        (_, gx, _), (_, gw, _), (_, gb, _) = sinks = self._sinks()
        backend.kernels.batch_norm_backward(x.reshape(view), self._w, self._incoming().reshape(view),
                                            self._stats[:c], self._stats[c:2 * c], bool(self._stats[2 * c]),
                                            None if gx is None else gx.reshape(view), gw, gb)
        self._pass_on(sinks)

    def _plan_forward(self, plan, prog):
        # The running statistics are bound, read at every run as the node's forward reads them:
        # one replaced (cedf.load, a user's assignment) or made read-only is followed.
        from . import _normalization
        x, out = self._x, self._value
        n, c, positions = view = _channels_view(x)
        if n * positions < 2:
            # Training mode would refuse this batch, and the plan cannot raise: the node says so.
            raise _not_compilable("one value per channel")
        prog.op(_normalization.PLAN_OPS["BATCH_NORM_FWD"], out.dtype, view,
                [prog.value(self.x, x.shape, out.dtype, own_dtype=False), *self._parameter_buffers(prog, out.dtype),
                 *(prog.bound(self, name, (c,), (out.dtype,), lambda _, name=name: self._statistic(name, out.dtype),
                              writable=True) for name in self._STATISTICS), prog.fixed(plan.training),
                 prog.fixed(self._stats), prog.fixed(out)],
                scalars=(self.momentum, self.eps))

    def _plan_backward(self, plan, prog, g, target):
        from . import _normalization
        x, out = self._x, self._value
        c = x.shape[1]
        (gx, ax), (gw, aw), (gb, ab) = target(self.x), target(self.weight), target(self.bias)
        prog.op(_normalization.PLAN_OPS["BATCH_NORM_BWD"], out.dtype, _channels_view(x),
                [prog.value(self.x, x.shape, out.dtype, own_dtype=False), prog.value(self.weight, (c,), out.dtype),
                 g, prog.fixed(self._stats), gx, gw, gb, prog.fixed(self._scratch)], (ax, aw, ab))


class LayerNorm(_Normalization):
    """Layer normalisation (Ba, Kiros and Hinton 2016) over the last axis of x (N, ..., F):
    ``weight (x - mean) / sqrt(var + eps) + bias``, each example's (and position's) F values by
    their own mean and biased variance, the same in training and evaluation. `num_features` (F)
    is read from x's value when x has one; `name` names the parameters as BatchNorm's."""

    _FEATURE_AXIS, _NDIMS, _VIEW = -1, (2, 3, 4), "(N, F), (N, L, F) or (N, C, L, F), features last"

    def __init__(self, x, num_features=None, eps=1e-5, name=None):
        super().__init__(x, num_features, eps, name)
        self._register()

    def forward(self):
        w, b, x = self._operands()
        rows, f = x.size // x.shape[-1], x.shape[-1]
        self._x, self._w = x, w
        self._stats = stats = _reuse(self._stats, (2 * rows,), np.float64)
        self._scratch = _reuse(self._scratch, (2 * f,), np.float64)   # the plan's backward sums here
        out = self._output(x.shape, w.dtype)
        backend.kernels.layer_norm_forward(x.reshape(rows, f), w, b, self.eps, stats[:rows], stats[rows:],
                                           out.reshape(rows, f))

    def backward(self):
        x = self._x
        view, rows = (x.size // x.shape[-1], x.shape[-1]), x.size // x.shape[-1]
        (_, gx, _), (_, gw, _), (_, gb, _) = sinks = self._sinks()
        backend.kernels.layer_norm_backward(x.reshape(view), self._w, self._incoming().reshape(view),
                                            self._stats[:rows], self._stats[rows:],
                                            None if gx is None else gx.reshape(view), gw, gb)
        self._pass_on(sinks)

    def _plan_forward(self, plan, prog):
        from . import _normalization
        x, out = self._x, self._value
        prog.op(_normalization.PLAN_OPS["LAYER_NORM_FWD"], out.dtype, (x.size // x.shape[-1], x.shape[-1]),
                [prog.value(self.x, x.shape, out.dtype, own_dtype=False), *self._parameter_buffers(prog, out.dtype),
                 prog.fixed(self._stats), prog.fixed(out)],
                scalars=(self.eps,))

    def _plan_backward(self, plan, prog, g, target):
        from . import _normalization
        x, out = self._x, self._value
        f = x.shape[-1]
        (gx, ax), (gw, aw), (gb, ab) = target(self.x), target(self.weight), target(self.bias)
        prog.op(_normalization.PLAN_OPS["LAYER_NORM_BWD"], out.dtype, (x.size // f, f),
                [prog.value(self.x, x.shape, out.dtype, own_dtype=False), prog.value(self.weight, (f,), out.dtype),
                 g, prog.fixed(self._stats), prog.fixed(self._scratch), gx, gw, gb], (ax, aw, ab))
