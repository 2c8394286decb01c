"""Pooling nodes: `MaxPool` and `AvgPool`, 1-D or 2-D by the rank of their input.

Channels first, as in PyTorch: an input (N, C, L) is pooled along L by windows
of `size` positions, an input (N, C, H, W) over H and W by windows of
(kh, kw) = `size` (an int for a square window); `stride` (an int, or a pair in
2-D) defaults to the size. No padding: an output has floor((L - size) /
stride) + 1 positions along each axis (PyTorch's ceil_mode=False), and the
input positions that no window covers get no gradient.

One kernel serves both ranks: a 1-D input is pooled as (N, C, 1, L) by a
1 x size window (`cedf._pooling`, `cedf.reference`). MaxPool's gradient goes to
the first maximum of each window, whose position its forward records in an
index buffer that it reuses across steps; AvgPool's spreads g / (window size)
evenly over the window. Windows that overlap (stride < size) add up their
contributions.
"""
import numpy as np

from . import backend
from .nodes import BuiltinNode, _check_node, _name, _reuse


def _positive_ints(owner, role, value):
    """`value` as a tuple of one or two positive ints, or ValueError naming `owner`."""
    entries = value if isinstance(value, (tuple, list)) else (value,)
    if not (1 <= len(entries) <= 2 and all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1
                                           for k in entries)):
        raise ValueError(f"{owner}: {role} must be a positive int, or a pair of them for 2-D pooling, got {value!r}")
    return tuple(int(k) for k in entries)


class _Pool(BuiltinNode):
    """Subclasses give the kernels (`_forward`, `_backward`) and the plan's operations' names."""

    def __init__(self, x, size, stride=None):
        self.x = _check_node(_name(self), "x", x)
        self.size = self._check_size(size)
        self.stride = self._check_stride(stride)
        self._register()

    def _check_size(self, size, graph=None):
        return self._checked("size", size)

    def _check_stride(self, stride, graph=None):
        return None if stride is None else self._checked("stride", stride)

    def _checked(self, role, value):
        """An int as an int, a pair (or a list) as a tuple: a list changed later changes nothing."""
        entries = _positive_ints(_name(self), role, value)
        return entries if isinstance(value, (tuple, list)) else entries[0]

    def _window(self, x_shape):
        """((kh, kw), (sh, sw)) for an input of this shape: a 1-D input has kh = sh = 1."""
        one_d = len(x_shape) == 3
        pairs = []
        for role, value in (("size", self.size), ("stride", self.size if self.stride is None else self.stride)):
            entries = _positive_ints(_name(self), role, value)
            if one_d and len(entries) == 2:
                raise ValueError(f"{_name(self)}: {role} {value!r} is a pair, for 2-D pooling of (N, C, H, W); "
                                 f"x has shape {x_shape}, (N, C, L): give one int")
            pairs.append((1,) + entries if one_d else entries if len(entries) == 2 else entries * 2)
        return pairs

    def forward(self):
        x = self._operand(self.x, "x")
        if x.ndim not in (3, 4):
            raise ValueError(f"{_name(self)}: x must be (N, C, L) for 1-D pooling or (N, C, H, W) for 2-D, got "
                             f"shape {x.shape}; a batch of single-channel signals (N, L) is Reshape(x, (1, L))")
        (kh, kw), (sh, sw) = self._window(x.shape)
        n, c, h, w = x.shape if x.ndim == 4 else (x.shape[0], x.shape[1], 1, x.shape[2])
        if kh > h or kw > w:
            window, positions = ((f"{kw}", f"{w}") if x.ndim == 3 else (f"{kh} x {kw}", f"{h} x {w}"))
            raise ValueError(f"{_name(self)}: the window ({window}) is larger than x's positions ({positions}, "
                             f"x has shape {x.shape}); give a smaller size, or pool a larger input")
        oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
        sh, sw = min(sh, h), min(sw, w)   # beyond the input: one window, as a stride of its length (and a C integer)
        self._in_shape, self._window_of = x.shape, (kh, kw, sh, sw)
        self._as_2d = (n, c, h, w), (n, c, oh, ow)   # the input's and the value's shapes, as the kernels see them
        self._geometry = (n * c, (h, w, kh, kw, sh, sw, oh, ow))   # m and d of the plan's operations
        out = self._output((n, c, oh, ow) if x.ndim == 4 else (n, c, ow), x.dtype)
        self._forward(x.reshape(n, c, h, w), out.reshape(n, c, oh, ow))

    def backward(self):
        gx, pass_on = self._grad_sink(self.x, self._in_shape, self.value.dtype)
        if gx is None:
            return
        x_shape, value_shape = self._as_2d
        self._backward(self._incoming().reshape(value_shape), gx.reshape(x_shape))
        if pass_on:
            self.x.addgrad(gx)

    def _plan_forward(self, plan, prog):
        from . import _pooling
        value = self._value
        planes, geometry = self._geometry
        prog.op(_pooling.PLAN_OPS[self._FWD], value.dtype, (planes,),
                [prog.value(self.x, self._in_shape, value.dtype), prog.fixed(value)] + self._saved(prog),
                geometry=geometry)

    def _plan_backward(self, plan, prog, g, target):
        from . import _pooling
        gx, acc = target(self.x)
        if gx is not None:
            planes, geometry = self._geometry
            prog.op(_pooling.PLAN_OPS[self._BWD], self._value.dtype, (planes,), self._saved(prog) + [g, gx],
                    (acc,), geometry=geometry)

    def _saved(self, prog):
        """The buffers the forward leaves for the backward, as the plan's operations take them."""
        return []


class MaxPool(_Pool):
    """The maximum of each window: `size` positions of (N, C, L), or (kh, kw) of (N, C, H, W).

    Its gradient goes to the first maximum of each window (row-major in 2-D).
    """

    _FWD, _BWD = "MAXPOOL_FWD", "MAXPOOL_BWD"
    _argmax = None

    def _forward(self, x, out):
        self._argmax = _reuse(self._argmax, out.shape, np.int64)
        backend.kernels.maxpool_forward(x, out, self._argmax, *self._window_of)

    def _backward(self, g, gx):
        backend.kernels.maxpool_backward(g, self._argmax, gx)

    def _saved(self, prog):
        return [prog.fixed(self._argmax)]

    def _release(self):
        super()._release()
        self._argmax = None


class AvgPool(_Pool):
    """The mean of each window: `size` positions of (N, C, L), or (kh, kw) of (N, C, H, W).

    Its gradient spreads g / (window size) evenly over the window.
    """

    _FWD, _BWD = "AVGPOOL_FWD", "AVGPOOL_BWD"

    def _forward(self, x, out):
        backend.kernels.avgpool_forward(x, out, *self._window_of)

    def _backward(self, g, gx):
        backend.kernels.avgpool_backward(g, gx, *self._window_of)
