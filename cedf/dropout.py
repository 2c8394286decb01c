"""Dropout: each value zeroed with probability p in training mode, kept and scaled by 1 / (1 - p)
(inverted dropout, so evaluation needs no rescaling); the identity in evaluation mode.

The mask of a step is a function of the node's seed, its step counter and the
element's index (splitmix64, the same integers in C and NumPy: see the Dropout
section of `cedf/reference.py`), not of a generator's running state. So the
node-by-node path, the compiled plan and the reference drop the same
elements, and a run is reproducible: the seed is drawn from NumPy's global
random state when the node is made (``np.random.seed`` before building the
graph fixes it), and the counter advances by one at every training Forward,
whichever path runs it. The plan reads the graph's mode when it runs, so
switching mode keeps the plan.
"""
import numpy as np

from . import backend
from .nodes import BuiltinNode, _check_node, _reuse

#: Elements are kept when 53 random bits, as an integer, are at least floor(p 2^53).
_BITS = 53


class Dropout(BuiltinNode):
    """Inverted dropout of x (any shape): in training mode each value is zeroed with probability
    `p` and the others multiplied by 1 / (1 - p); in evaluation mode x passes unchanged.
    Its gradient is the incoming one through the same mask and scale."""

    _mask = None

    def __init__(self, x, p=0.5):
        self.x = _check_node("Dropout", "x", x)
        self.p = self._check_p(p)
        # [seed, step]: all the randomness there is (see the module's docstring).
        self._state = np.array([np.random.randint(0, 2**64, dtype=np.uint64), 0], dtype=np.uint64)
        self._used = np.ones(1)   # the scale the last Forward applied: what its backward differentiates
        self._register()

    def _check_p(self, p, graph=None):
        if not isinstance(p, (int, float, np.floating)) or isinstance(p, bool) or not 0 <= p < 1:
            raise ValueError(f"Dropout: p is the probability of zeroing a value and must be in [0, 1), got {p!r} "
                             f"(p = 1 would zero everything and scale by 1 / 0)")
        return float(p)

    def _saved_state(self, rewind=False):
        """A function that puts this node's step back as it is now (`Graph._run_nodes`); with
        `rewind`, the step is first set to the one the last Forward drew its mask at, so that
        a Forward run again draws the same mask (`Graph._replay_forward`)."""
        saved = self._state.copy()
        if rewind and self._used[0] != 1.0:   # that Forward drew a mask (in evaluation mode, none)
            self._state[1] -= np.uint64(1)

        def put_back():
            self._state[...] = saved
        return put_back

    def _threshold_and_scale(self):
        return int(self.p * 2**_BITS), 1 / (1 - self.p)

    def forward(self):
        x = self._operand(self.x, "x")
        out = self._output(x.shape, x.dtype)
        self._mask = mask = _reuse(self._mask, (x.size,), np.uint8)
        if self._graph.training:
            threshold, scale = self._threshold_and_scale()
            backend.kernels.dropout_forward(x.reshape(-1), self._state, threshold, scale, mask, out.reshape(-1))
            self._used[0] = scale
        else:
            out[...] = x
            mask.fill(1)
            self._used[0] = 1.0

    def backward(self):
        gx, pass_on = self._grad_sink(self.x, self.value.shape, self.value.dtype)
        if gx is None:
            return
        backend.kernels.dropout_backward(self._incoming().reshape(-1), self._mask, float(self._used[0]),
                                         gx.reshape(-1))
        if pass_on:
            self.x.addgrad(gx)

    def _release(self):
        super()._release()
        self._mask = None

    def _plan_forward(self, plan, prog):
        from . import _dropout
        value = self._value
        threshold, scale = self._threshold_and_scale()
        prog.op(_dropout.PLAN_OPS["DROPOUT_FWD"], value.dtype, (value.size,),
                [prog.value(self.x, value.shape, value.dtype), prog.fixed(self._state), prog.fixed(plan.training),
                 prog.fixed(self._mask), prog.fixed(self._used), prog.fixed(value)],
                scalars=(float(threshold), scale))

    def _plan_backward(self, plan, prog, g, target):
        from . import _dropout
        gx, acc = target(self.x)
        if gx is not None:
            prog.op(_dropout.PLAN_OPS["DROPOUT_BWD"], self._value.dtype, (self._value.size,),
                    [g, prog.fixed(self._mask), prog.fixed(self._used), gx], (acc,))
