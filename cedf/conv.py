"""Convolution layers: `ConvParams` (the kernel and bias) and `Conv`, 1-D or 2-D.

Layout channels-first, as PyTorch: x (N, C, L) in 1-D, (N, C, H, W) in 2-D;
the kernel W (out, in, k) or (out, in, kh, kw) decides which. Zero padding,
cross-correlation (no kernel flip), output length floor((L + 2p - k) / s) + 1.

The kernels (`conv_forward`, `conv_backward` of the backend) know only the 2-D
case: a 1-D convolution is handed to them as the 2-D one of x (N, C, 1, L)
and W (O, C, 1, k), views of the same buffers. The backward reads x as the
forward read it (the node keeps a copy); dx is computed only when x takes a
gradient (not for an Input). `cedf/_conv.pyx` says how the compiled loops
compute without unfolding x, and why position-major: in the plan, a Conv's
value and gradient are kept so when every reader takes them so (`cedf.plan`,
`batch_last`).
"""
import numpy as np

from . import backend
from .nodes import BuiltinNode, Parameter, ParameterHolder, _check_node, _reuse

_INT = (int, np.integer)


def _is_int(value):
    return isinstance(value, _INT) and not isinstance(value, bool)


_BLAS_LIMIT = 2 ** 31 - 1   # BLAS's dimensions are C ints


def _ints(owner, name, value, least, ranks=(1, 2)):
    """`value` as a tuple of 1 or 2 ints >= least (an int is a tuple of one), else a clear ValueError."""
    entries = (value,) if _is_int(value) else value
    try:
        ok = len(entries) in ranks and all(_is_int(v) and v >= least for v in entries)
    except TypeError:
        ok = False
    if not ok:
        what = "a positive integer" if least == 1 else "a non-negative integer"
        raise ValueError(f"{owner}: {name} must be {what} or a pair of them (height, width), got {value!r}")
    return tuple(int(v) for v in entries)


class ConvParams(ParameterHolder):
    """The parameters of a convolution: ``W`` (out, in, k) or (out, in, kh, kw), and ``b`` (out,).

    An int `kernel_size` makes a 1-D kernel, a pair (kh, kw) a 2-D one. ``W`` is
    drawn uniformly from ±sqrt(3 / fan_in), fan_in = in_channels * k (kh * kw),
    with NumPy's global random state, as `AffineParams`; ``b`` starts at zero.
    With a `name`, the parameters are named "<name>.W" and "<name>.b".
    """

    def __init__(self, in_channels, out_channels, kernel_size, name=None):
        for arg, n in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not _is_int(n) or n < 1:
                raise ValueError(f"ConvParams: {arg} must be a positive integer, got {n!r}")
        kernel = _ints("ConvParams", "kernel_size", kernel_size, 1)
        fan_in = int(in_channels) * int(np.prod(kernel))
        bound = np.sqrt(3 / fan_in)
        self.W = Parameter(np.random.uniform(-bound, bound, (int(out_channels), int(in_channels)) + kernel),
                           name=None if name is None else f"{name}.W")
        self.b = Parameter(np.zeros(int(out_channels)), name=None if name is None else f"{name}.b")



def _plan_ops():
    from . import _conv   # compiled; only a plan (which needs the compiled engine) asks
    return _conv.PLAN_OPS


class Conv(BuiltinNode):
    """The convolution of x with ``params.W``, plus ``params.b``: 1-D or 2-D as the kernel is.

    x (N, C, L) -> (N, out, L_out) with a kernel (out, C, k), or (N, C, H, W) ->
    (N, out, H_out, W_out) with (out, C, kh, kw). `stride` (>= 1) and `padding`
    (zeros on each side, >= 0) are ints, or pairs (height, width) in 2-D.
    Computes in the parameters' dtype, as `Affine`.
    """

    _xs = _work = None
    # The plan may keep the value batch-last (cedf.plan, `batch_last`); x may come so.
    _writes_batch_last = _reads_batch_last = True

    def __init__(self, params, x, stride=1, padding=0):
        self.params = self._check_params(params)
        self.x = _check_node("Conv", "x", x)
        self.stride = self._check_stride(stride)
        self.padding = self._check_padding(padding)
        self._register()

    @staticmethod
    def _check_params(params, graph=None):
        if not (hasattr(params, "W") and hasattr(params, "b")):
            raise TypeError(f"Conv: params must be a ConvParams, got {type(params).__name__}")
        _check_node("Conv", "W", params.W, graph)
        _check_node("Conv", "b", params.b, graph)
        return params

    def _check_stride(self, stride, graph=None):
        entries = _ints("Conv", "stride", stride, 1)
        return entries[0] if _is_int(stride) else entries

    def _check_padding(self, padding, graph=None):
        entries = _ints("Conv", "padding", padding, 0)
        return entries[0] if _is_int(padding) else entries

    def _pairs(self, two_d, W):
        """(stride, padding) as the 2-D kernels take them: pairs, (1, s) and (0, p) in 1-D."""
        pairs = []
        for name, value in (("stride", self.stride), ("padding", self.padding)):
            if not _is_int(value) and len(value) == 1:
                value = value[0]   # (s,) is s, as the pools read it
            if _is_int(value):
                value = (value, value) if two_d else (1 if name == "stride" else 0, value)
            elif not two_d:
                raise ValueError(f"Conv: {name} {value!r} is a pair, but the kernel is 1-D (W has shape "
                                 f"{W.shape}): give one integer")
            pairs.append(value)
        return tuple(pairs)

    def forward(self):
        W = self._operand(self.params.W, "W", ndims=(3, 4))
        b = self._operand(self.params.b, "b", dtype=W.dtype, ndims=(1,))
        x = self._operand(self.x, "x", dtype=W.dtype)
        two_d = W.ndim == 4
        n_out, channels = W.shape[:2]
        if 0 in W.shape:
            raise ValueError(f"Conv: W has shape {W.shape}; every size of a kernel (out, in, ...) must be positive")
        if x.ndim != W.ndim:
            layout, hint = ("(N, C, H, W)", "") if two_d else ("(N, C, L)", "; a batch of sequences (N, L) is "
                                                                 "x.reshape(N, 1, L)")
            raise ValueError(f"Conv: x must be {W.ndim}-D {layout} for the {W.ndim - 2}-D kernel W of shape "
                             f"{W.shape}, got shape {x.shape}{hint}")
        if x.shape[1] != channels:
            raise ValueError(f"Conv: x has {x.shape[1]} channels (shape {x.shape}), but W (shape {W.shape}, "
                             f"(out, in, ...)) expects {channels} input channels")
        if b.shape != (n_out,):
            raise ValueError(f"Conv: b has shape {b.shape}, W has {n_out} output channels so b must be ({n_out},)")
        stride, padding = self._pairs(two_d, W)
        x4 = x if two_d else x.reshape(x.shape[0], channels, 1, x.shape[2])
        W4 = W if two_d else W.reshape(n_out, channels, 1, W.shape[2])
        (n, _, h, w), (kh, kw) = x4.shape, W4.shape[2:]
        for size, k, pad, axis in ((h, kh, padding[0], "height"), (w, kw, padding[1], "width")):
            if size + 2 * pad < k:
                where = f"{axis} " if two_d else "length "
                raise ValueError(f"Conv: the kernel ({where}{k}) is longer than the padded input ({where}{size} "
                                 f"+ 2 x padding {pad} = {size + 2 * pad}); pad more or use a smaller kernel")
        ho, wo = (h + 2 * padding[0] - kh) // stride[0] + 1, (w + 2 * padding[1] - kw) // stride[1] + 1
        # Refused before a buffer is made for it: the kernels' matrices are BLAS's, of int sizes.
        if n * ho * wo > _BLAS_LIMIT or (h + 2 * padding[0]) * (w + 2 * padding[1]) > _BLAS_LIMIT:
            raise ValueError(f"Conv: x of shape {x.shape} padded by {self.padding} gives {n} x {ho * wo} output "
                             f"positions, beyond the {_BLAS_LIMIT} a matrix of BLAS holds: use a smaller padding")
        # A stride beyond the padded input gives one position, as the padded size does (and fits C's integers).
        stride = (min(stride[0], h + 2 * padding[0]), min(stride[1], w + 2 * padding[1]))
        out = self._output((n, n_out, ho, wo) if two_d else (n, n_out, wo), W.dtype)
        # The backward reads x as this forward read it (x.value may be changed in place before it).
        self._xs = _reuse(self._xs, x4.shape, W.dtype)
        np.copyto(self._xs, x4)
        self._W, self._x_shape, self._pair_args = W, x.shape, (stride, padding)
        backend.kernels.conv_forward(self._xs, W4, b, out.reshape(n, n_out, ho, wo), stride, padding)

    def _shapes(self):
        """x, W and the output as the 2-D kernels see them (4-D)."""
        n, n_out = self._value.shape[:2]
        if self._W.ndim == 4:
            return self._x_shape, self._W.shape, self._value.shape
        return ((n, self._x_shape[1], 1, self._x_shape[2]), (n_out, self._W.shape[1], 1, self._W.shape[2]),
                (n, n_out, 1, self._value.shape[2]))

    def backward(self):
        W, dtype = self._W, self._W.dtype
        x4, W4, out4 = self._shapes()
        gx, pass_x = self._grad_sink(self.x, self._x_shape, dtype)
        gW, pass_W = self._grad_sink(self.params.W, W.shape, dtype)
        gb, pass_b = self._grad_sink(self.params.b, (W.shape[0],), dtype)
        backend.kernels.conv_backward(self._xs, W.reshape(W4), self._incoming().reshape(out4),
                                      None if gx is None else gx.reshape(x4), None if gW is None else gW.reshape(W4),
                                      gb, *self._pair_args)
        self._pass_on(((self.x, gx, pass_x), (self.params.W, gW, pass_W), (self.params.b, gb, pass_b)))

    def _release(self):
        super()._release()
        for attr in ("_xs", "_work", "_W"):
            self.__dict__.pop(attr, None)

    # -- the compiled plan: one CONV_FWD and one CONV_BWD (cedf/_conv.pyx) ---------------------

    def _geometry(self):
        """(m, n, k) and the geometry of the plan's operations: N, C, O; H, W, kh, kw, sh, sw, ph, pw, Ho, Wo."""
        (n, c, h, w), (o, _, kh, kw), (_, _, ho, wo) = self._shapes()
        (sh, sw), (ph, pw) = self._pair_args
        return (n, c, o), (h, w, kh, kw, sh, sw, ph, pw, ho, wo)

    def _parameters(self, prog):
        W = self._W
        return prog.value(self.params.W, W.shape, W.dtype), prog.value(self.params.b, (W.shape[0],), W.dtype)

    def _plan_work(self, plan):
        """The geometry with the layouts, and the scratch (`cedf._conv.region`): the kernel turned
        and its gradient; the output or g, x and dx position-major, where the plan's are not."""
        value, (sizes, geometry) = self._value, self._geometry()
        layouts = (int(plan.batch_last(self.x)), int(plan.batch_last(self)))
        from . import _conv
        size = _conv.work_numbers(*sizes, *geometry[:4], *geometry[8:10])
        self._work = _reuse(self._work, (size,), value.dtype)
        return sizes, geometry + layouts

    def _plan_forward(self, plan, prog):
        value, dims = self._value, self._plan_work(plan)
        W, b = self._parameters(prog)
        x = prog.value(self.x, self._x_shape, value.dtype, own_dtype=False)
        prog.op(_plan_ops()["CONV_FWD"], value.dtype, dims[0], [x, W, b, prog.fixed(value), prog.fixed(self._work)],
                geometry=dims[1])

    def _plan_backward(self, plan, prog, g, target):
        value, dims = self._value, self._plan_work(plan)
        (gx, ax), (gW, aW), (gb, ab) = target(self.x), target(self.params.W), target(self.params.b)
        # A channels-first x is read from the forward's position-major copy, in work.
        x = prog.value(self.x, self._x_shape, value.dtype, own_dtype=False) if plan.batch_last(self.x) else None
        W, _ = self._parameters(prog)
        prog.op(_plan_ops()["CONV_BWD"], value.dtype, dims[0], [x, W, g, prog.fixed(self._work), gx, gW, gb],
                (ax, aW, ab), geometry=dims[1])
