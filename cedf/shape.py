"""Nodes that change only the shape of their input: `Flatten` and `Reshape`.

Each example keeps its numbers in order (C order), so the value is the input's
data under another shape and the gradient is the incoming one under the
input's shape. The value is a copy, in a buffer of the node's own, as every
node's is (a view would change when the input's buffer does).
"""
import math

import numpy as np

from . import backend
from .nodes import BuiltinNode, _check_node, _name


class _Reshaping(BuiltinNode):
    """Subclasses give `_shape(x_shape)`: the value's shape for an input of that shape."""

    # A batch-last x (a convolution's, in the plan: cedf.plan) is transposed back into (N, ...).
    _reads_batch_last = True

    def __init__(self, x):
        self.x = _check_node(_name(self), "x", x)
        self._register()

    def forward(self):
        x = self._operand(self.x, "x")
        if x.ndim < 1:
            raise ValueError(f"{_name(self)}: x must have a batch axis (B, ...), got a scalar")
        out = self._output(self._shape(x.shape), x.dtype)
        self._in_shape = x.shape
        out.reshape(-1)[...] = x.reshape(-1)

    def backward(self):
        gx, pass_on = self._grad_sink(self.x, self._in_shape, self.value.dtype)
        if gx is None:
            return
        backend.kernels.add_backward(self._incoming().reshape(-1), gx.reshape(-1), None)
        if pass_on:
            self.x.addgrad(gx)

    def _plan_forward(self, plan, prog):
        value = self._value
        x = prog.value(self.x, self._in_shape, value.dtype)
        if plan.batch_last(self.x):   # x (S, C, N), position-major -> the value (N, C S)
            prog.op(_swap_axes(), value.dtype, _swapped(self._in_shape)[::-1], [x, prog.fixed(value)])
        else:
            prog.op(backend._engine.COPY, value.dtype, (value.nbytes,), [x, prog.fixed(value)])

    def _plan_backward(self, plan, prog, g, target):
        gx, acc = target(self.x)
        if gx is None:
            return
        value = self._value
        if plan.batch_last(self.x):   # g (N, C S) -> x's gradient (S, C, N)
            prog.op(_swap_axes(), value.dtype, _swapped(self._in_shape), [g, gx], (acc,))
        else:
            prog.op(backend._engine.ACCUMULATE, value.dtype, (value.size,), [g, gx], (acc,))


def _swap_axes():
    from . import _conv   # compiled; only a plan (which needs the compiled engine) asks
    return _conv.PLAN_OPS["SWAP_AXES"]


def _swapped(shape):
    """(N, C, S) for a batch of `shape` (N, C, ...), S its positions: the axes the plan's
    position-major layout (S, C, N) swaps (cedf.plan)."""
    return (shape[0], shape[1] if len(shape) > 1 else 1, math.prod(shape[2:]))


class Flatten(_Reshaping):
    """(B, d1, d2, ...) -> (B, d1 * d2 * ...): a convolution's channels and positions as one
    feature vector per example, for the Affine that follows."""

    def _shape(self, x_shape):
        return (x_shape[0], int(np.prod(x_shape[1:], dtype=np.int64)))


class Reshape(_Reshaping):
    """(B, ...) -> (B, *shape): each example's values under a new shape (one entry may be -1)."""

    def __init__(self, x, shape):
        self.shape = self._check_shape(shape)
        super().__init__(x)

    def _check_shape(self, shape, graph=None):
        entries = (shape,) if isinstance(shape, (int, np.integer)) else shape
        try:
            ok = all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in entries)
            entries = tuple(int(d) for d in entries) if ok else None
        except TypeError:
            entries = None
        if not entries or any(d < -1 or d == 0 for d in entries) or entries.count(-1) > 1:
            raise ValueError(f"Reshape: shape must be a tuple of positive integers per example "
                             f"(one may be -1), got {shape!r}")
        return entries

    def _shape(self, x_shape):
        # Python's integers, which do not overflow: a product of huge sizes must not wrap to 0.
        n, per = x_shape[0], math.prod(x_shape[1:])
        known = math.prod(d for d in self.shape if d != -1)
        shape = tuple(per // known if d == -1 else d for d in self.shape)   # (no entry is 0)
        if math.prod(shape) != per:
            raise ValueError(f"Reshape: each example of x has shape {x_shape[1:]} ({per} values), which "
                             f"cannot be reshaped to {self.shape}")
        return (n,) + shape
