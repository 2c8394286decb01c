# cython: language_level=3
"""Compiled kernels of `cedf.dropout`: inverted dropout's forward and backward, and its plan operations.

The mask is the counter-based one of the reference (`cedf/reference.py`, the
Dropout section): element i of step t of a node seeded s is kept when the top
53 bits of splitmix64 are at least floor(p 2^53), the same integers in C as in
NumPy, so the compiled kernels, the plan and the reference drop the same
elements, bit for bit. No generator state is carried from element to element
(each element's bits are a function of (s, t, i)), so nothing but the step
counter needs keeping between steps, and a loop could be split anywhere.
"""
from cython cimport floating
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy, memset

from cedf._args cimport _expect
from cedf._plan_op cimport Op, arg, plan_op

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* splitmix64 (Steele, Lea, Flood 2014): the state advances by the golden gamma, the output mixes it. */
    static inline uint64_t cedf_splitmix64(uint64_t state, uint64_t i) {
        uint64_t z = state + (i + 1) * 0x9E3779B97F4A7C15ULL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    /* v if keep (0 or 1), else +0.0, without a branch: the mask is random, and a branch on it was
       mispredicted half the time (the forward of 50 000 float32 at p = 0.5 took 280 us with
       `keep ? v : 0.0`, which gcc compiled to a jump, and 52 us at p = 0). */
    static inline double cedf_kept(double v, int keep) {
        uint64_t bits;
        memcpy(&bits, &v, sizeof bits);
        bits &= (uint64_t)0 - (uint64_t)keep;
        memcpy(&v, &bits, sizeof v);
        return v;
    }
    """
    uint64_t cedf_splitmix64(uint64_t state, uint64_t i) noexcept nogil
    double cedf_kept(double v, int keep) noexcept nogil


cdef void _dropout(const floating* x, uint64_t* state, uint64_t threshold, double scale, uint8_t* mask,
                   floating* out, Py_ssize_t n) noexcept nogil:
    """One training step: the mask of step state[1], applied; then the step advances."""
    cdef uint64_t key = cedf_splitmix64(state[0], state[1])
    cdef Py_ssize_t i
    cdef bint keep
    for i in range(n):
        keep = (cedf_splitmix64(key, <uint64_t>i) >> 11) >= threshold
        mask[i] = keep
        out[i] = <floating>cedf_kept(x[i] * scale, keep)
    state[1] += 1


cdef void _dropout_grad(const floating* g, const uint8_t* mask, double scale, floating* gx, bint acc,
                        Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if acc:
        for i in range(n):
            gx[i] = <floating>(gx[i] + cedf_kept(g[i] * scale, mask[i] != 0))
    else:
        for i in range(n):
            gx[i] = <floating>cedf_kept(g[i] * scale, mask[i] != 0)


def dropout_forward(const floating[::1] x, uint64_t[::1] state, uint64_t threshold, double scale,
                    uint8_t[::1] mask, floating[::1] out):
    """One training step of inverted dropout on flat x (see the reference); advances state[1]."""
    cdef Py_ssize_t n = x.shape[0]
    _expect("dropout_forward", "state", (state.shape[0],), (2,))
    _expect("dropout_forward", "mask", (mask.shape[0],), (n,))
    _expect("dropout_forward", "out", (out.shape[0],), (n,))
    with nogil:
        _dropout(&x[0] if n else NULL, &state[0], threshold, scale, &mask[0] if n else NULL,
                 &out[0] if n else NULL, n)


def dropout_backward(const floating[::1] g, const uint8_t[::1] mask, double scale, floating[::1] gx):
    """gx += g scale where the mask kept the element."""
    cdef Py_ssize_t n = g.shape[0]
    _expect("dropout_backward", "mask", (mask.shape[0],), (n,))
    _expect("dropout_backward", "gx", (gx.shape[0],), (n,))
    if not n:
        return
    with nogil:
        _dropout_grad(&g[0], &mask[0], scale, &gx[0], True, n)


# -- The plan's operations (cedf/_plan_op.pxd) -----------------------------------------------
#
# `used` holds the scale the forward applied (1 / (1 - p) in training, 1 in evaluation, where
# every element is kept): the backward differentiates what the forward computed, whatever the
# mode is by the time it runs.

cdef void _fwd(floating dtype, const Op* op, void** ptr) noexcept nogil:
    cdef floating* x = <floating*>arg(op, ptr, 0)
    cdef floating* out = <floating*>arg(op, ptr, 5)
    cdef double* used = <double*>arg(op, ptr, 4)
    if (<int64_t*>arg(op, ptr, 2))[0]:
        _dropout(x, <uint64_t*>arg(op, ptr, 1), <uint64_t>op.s[0], op.s[1], <uint8_t*>arg(op, ptr, 3), out, op.m)
        used[0] = op.s[1]
    else:
        if op.m:
            memcpy(out, x, op.m * sizeof(floating))
            memset(arg(op, ptr, 3), 1, op.m)
        used[0] = 1.0


cdef void dropout_fwd_op(const Op* op, void** ptr) noexcept nogil:
    """x, state (uint64 seed, step), training (int64), mask (uint8), used (float64), out; m = size;
    s = threshold (an integer below 2^53, exact in a double), scale."""
    if op.f64:
        _fwd(<double>0, op, ptr)
    else:
        _fwd(<float>0, op, ptr)


cdef void dropout_bwd_op(const Op* op, void** ptr) noexcept nogil:
    """g, mask, used, gx (acc 0); m = size."""
    cdef double scale = (<double*>arg(op, ptr, 2))[0]
    if op.f64:
        _dropout_grad(<double*>arg(op, ptr, 0), <uint8_t*>arg(op, ptr, 1), scale, <double*>arg(op, ptr, 3),
                      op.acc[0], op.m)
    else:
        _dropout_grad(<float*>arg(op, ptr, 0), <uint8_t*>arg(op, ptr, 1), scale, <float*>arg(op, ptr, 3),
                      op.acc[0], op.m)


PLAN_OPS = {
    "DROPOUT_FWD": plan_op(dropout_fwd_op),
    "DROPOUT_BWD": plan_op(dropout_bwd_op),
}
