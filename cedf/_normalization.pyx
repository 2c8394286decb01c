# cython: language_level=3
"""Compiled kernels of `cedf.normalization`: BatchNorm and LayerNorm, forward and backward.

The same functions as the normalisation section of `cedf/reference.py` (read
it first: the (N, C, S) and (R, F) views, what each buffer holds), checked with
the GIL held and run without it, and the plan's operations (`PLAN_OPS`), which
run the same loops, so the planned path and the node-by-node path compute the
same numbers.

Statistics and gradient sums are accumulated in double whatever the dtype, and
each output is rounded once: a float32 channel of a million values summed in
float would lose the mean's low digits, and with them the variance's. Two
passes (mean, then squared deviations) rather than one of sums and sums of
squares, whose difference cancels catastrophically when the mean is large.
BatchNorm's loops run channel by channel over the (N, C, S) layout: each
channel's values are N runs of S contiguous numbers.
"""
from cython cimport floating
from libc.math cimport sqrt
from libc.stdint cimport int64_t

import numpy as np

from cedf._args cimport _expect
from cedf._plan_op cimport Op, arg, plan_op


cdef inline void _put(floating* p, double v, bint acc) noexcept nogil:
    """Write v, or add it (a later contribution to a gradient): in double, rounded once."""
    p[0] = <floating>(p[0] + v) if acc else <floating>v


# Channels of at least this many contiguous positions are summed run by run; shorter ones ((N, F)
# above all, one value per run) row by row into one sum per channel, the channels side by side.
DEF LONG_RUN = 8


cdef inline double _run_sum(const floating* a, Py_ssize_t n) noexcept nogil:
    """sum a[i]. Four running sums, added at the end: a single one waits out each add's latency.
    With these, a training BatchNorm of 100 x 25 x 20 float32 takes 35 us forward and 51-59 us
    backward, against 79 and 71 us with one sum per channel (builds run in turn, best of 15 x 200
    calls each, on this shared 2-core machine); (N, F) = (100, 100) went 27 -> 27 us forward and
    26 -> 31 us backward."""
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        s0 += a[i]
        s1 += a[i + 1]
        s2 += a[i + 2]
        s3 += a[i + 3]
        i += 4
    while i < n:
        s0 += a[i]
        i += 1
    return (s0 + s1) + (s2 + s3)


cdef inline double _run_squares(const floating* a, Py_ssize_t n, double mu) noexcept nogil:
    """sum (a[i] - mu)^2, four running sums as `_run_sum`."""
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, d0, d1, d2, d3
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        d0, d1, d2, d3 = a[i] - mu, a[i + 1] - mu, a[i + 2] - mu, a[i + 3] - mu
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
        i += 4
    while i < n:
        d0 = a[i] - mu
        s0 += d0 * d0
        i += 1
    return (s0 + s1) + (s2 + s3)


cdef inline double _run_products(const floating* g, const floating* a, Py_ssize_t n, double mu) noexcept nogil:
    """sum g[i] (a[i] - mu), four running sums as `_run_sum`."""
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        s0 += g[i] * (a[i] - mu)
        s1 += g[i + 1] * (a[i + 1] - mu)
        s2 += g[i + 2] * (a[i + 2] - mu)
        s3 += g[i + 3] * (a[i + 3] - mu)
        i += 4
    while i < n:
        s0 += g[i] * (a[i] - mu)
        i += 1
    return (s0 + s1) + (s2 + s3)


cdef void _channel_sums(const floating* x, const double* mu, bint squares, double* sums,
                        Py_ssize_t N, Py_ssize_t C, Py_ssize_t S) noexcept nogil:
    """Per channel c of (N, C, S): sums[c] = sum x, or with `squares` sum (x - mu[c])^2."""
    cdef Py_ssize_t n, c, s, at
    cdef double d
    if S >= LONG_RUN:
        for c in range(C):
            sums[c] = 0.0
            for n in range(N):
                at = (n * C + c) * S
                sums[c] += _run_squares(x + at, S, mu[c]) if squares else _run_sum(x + at, S)
        return
    for c in range(C):
        sums[c] = 0.0
    # Row by row, no branch inside: the channels' sums are independent, so they pipeline.
    if squares:
        for n in range(N):
            for c in range(C):
                at = (n * C + c) * S
                for s in range(S):
                    d = x[at + s] - mu[c]
                    sums[c] += d * d
    else:
        for n in range(N):
            for c in range(C):
                at = (n * C + c) * S
                for s in range(S):
                    sums[c] += x[at + s]


cdef void _channel_gradient_sums(const floating* x, const floating* g, const double* mu, double* db, double* dw,
                                 Py_ssize_t N, Py_ssize_t C, Py_ssize_t S) noexcept nogil:
    """Per channel c: db[c] = sum g, dw[c] = sum g (x - mu[c]), as `_channel_sums`, in one pass over
    short runs."""
    cdef Py_ssize_t n, c, s, at
    if S >= LONG_RUN:
        for c in range(C):
            db[c] = dw[c] = 0.0
            for n in range(N):
                at = (n * C + c) * S
                db[c] += _run_sum(g + at, S)
                dw[c] += _run_products(g + at, x + at, S, mu[c])
        return
    for c in range(C):
        db[c] = dw[c] = 0.0
    for n in range(N):
        for c in range(C):
            at = (n * C + c) * S
            for s in range(S):
                db[c] += g[at + s]
                dw[c] += g[at + s] * (x[at + s] - mu[c])


cdef void _batch_norm_forward(const floating* x, const floating* w, const floating* b, floating* running_mean,
                              floating* running_var, bint training, double momentum, double eps, double* mean,
                              double* invstd, floating* out, Py_ssize_t N, Py_ssize_t C,
                              Py_ssize_t S) noexcept nogil:
    cdef Py_ssize_t n, c, s, at, count = N * S
    cdef double var, k, shift
    if training:
        _channel_sums(x, NULL, False, mean, N, C, S)
        for c in range(C):
            mean[c] /= count
        _channel_sums(x, mean, True, invstd, N, C, S)   # the variances, until 1 / std replaces them
        for c in range(C):
            var = invstd[c] / count
            running_mean[c] = <floating>((1 - momentum) * running_mean[c] + momentum * mean[c])
            running_var[c] = <floating>((1 - momentum) * running_var[c] + momentum * var * count / (count - 1))
            invstd[c] = 1 / sqrt(var + eps)
    else:
        for c in range(C):
            mean[c], invstd[c] = running_mean[c], 1 / sqrt(running_var[c] + eps)
    for n in range(N):
        for c in range(C):
            k = invstd[c] * w[c]
            shift = b[c] - mean[c] * k
            at = (n * C + c) * S
            for s in range(S):
                out[at + s] = <floating>(x[at + s] * k + shift)


cdef void _batch_norm_backward(const floating* x, const floating* w, const floating* g, const double* mean,
                               const double* invstd, bint training, double* sums, floating* gx, bint acc_x,
                               floating* gw, bint acc_w, floating* gb, bint acc_b, Py_ssize_t N, Py_ssize_t C,
                               Py_ssize_t S) noexcept nogil:
    """`sums` is scratch of 2 C doubles: the bias's and the weight's gradient per channel, then
    what the input's gradient takes of them, db / M and invstd dw / M."""
    cdef Py_ssize_t n, c, s, at, count = N * S
    cdef double* db = sums
    cdef double* dw = sums + C
    cdef double k, a, q, mu
    _channel_gradient_sums(x, g, mean, db, dw, N, C, S)
    for c in range(C):
        dw[c] *= invstd[c]
        if gw != NULL:
            _put(gw + c, dw[c], acc_w)
        if gb != NULL:
            _put(gb + c, db[c], acc_b)
        # Divided once here, not per (example, channel): for (N, F), a division per value.
        db[c] /= count
        dw[c] *= invstd[c] / count
    if gx == NULL:
        return
    for n in range(N):
        for c in range(C):
            k, a, q, mu = w[c] * invstd[c], db[c], dw[c], mean[c]
            at = (n * C + c) * S
            if training:
                # k (g - db / M - xhat dw / M), xhat = (x - mean) invstd: affine in g and x per channel.
                for s in range(S):
                    _put(gx + at + s, k * (g[at + s] - a - (x[at + s] - mu) * q), acc_x)
            else:
                for s in range(S):
                    _put(gx + at + s, k * g[at + s], acc_x)


cdef void _layer_norm_forward(const floating* x, const floating* w, const floating* b, double eps,
                              double* mean, double* invstd, floating* out, Py_ssize_t R,
                              Py_ssize_t F) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef const floating* row
    cdef double mu, inv
    for r in range(R):
        row = x + r * F
        mu = _run_sum(row, F) / F
        inv = 1 / sqrt(_run_squares(row, F, mu) / F + eps)
        mean[r], invstd[r] = mu, inv
        for j in range(F):   # locals, not invstd[r]: a double out might alias it, and it would be reloaded
            out[r * F + j] = <floating>((row[j] - mu) * inv * w[j] + b[j])


cdef void _layer_norm_backward(const floating* x, const floating* w, const floating* g, const double* mean,
                               const double* invstd, double* sums, floating* gx, bint acc_x, floating* gw,
                               bint acc_w, floating* gb, bint acc_b, Py_ssize_t R,
                               Py_ssize_t F) noexcept nogil:
    """`sums` is scratch of 2 F doubles: the weight's and the bias's gradient, summed over the rows."""
    cdef Py_ssize_t r, j, i
    cdef double h_sum, hx_sum, h, xhat
    for j in range(2 * F):
        sums[j] = 0.0
    for r in range(R):
        h_sum = hx_sum = 0.0
        for j in range(F):
            i = r * F + j
            xhat = (x[i] - mean[r]) * invstd[r]
            h = g[i] * w[j]
            h_sum += h
            hx_sum += h * xhat
            sums[j] += g[i] * xhat
            sums[F + j] += g[i]
        if gx == NULL:
            continue
        for j in range(F):
            i = r * F + j
            xhat = (x[i] - mean[r]) * invstd[r]
            _put(gx + i, invstd[r] * (g[i] * w[j] - h_sum / F - xhat * hx_sum / F), acc_x)
    for j in range(F):
        if gw != NULL:
            _put(gw + j, sums[j], acc_w)
        if gb != NULL:
            _put(gb + j, sums[F + j], acc_b)


# -- Python-callable kernels (the nodes' node-by-node path, the tests) -------------------------

cdef inline floating* _opt(floating[::1] a) noexcept nogil:
    return &a[0] if a is not None and a.shape[0] else NULL


def batch_norm_forward(const floating[:, :, ::1] x, const floating[::1] weight, const floating[::1] bias,
                       floating[::1] running_mean, floating[::1] running_var, bint training, double momentum,
                       double eps, double[::1] mean, double[::1] invstd, floating[:, :, ::1] out):
    """out = weight (x - mean) / sqrt(var + eps) + bias per channel of x (N, C, S); see the reference."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    for name, a in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var), ("mean", mean), ("invstd", invstd)):
        _expect("batch_norm_forward", name, (a.shape[0],), (C,))
    _expect("batch_norm_forward", "out", (out.shape[0], out.shape[1], out.shape[2]), (N, C, S))
    if training and N * S < 2:
        raise ValueError(f"batch_norm_forward: training needs 2 or more values per channel, got {N * S}")
    if not C:
        return
    with nogil:
        _batch_norm_forward(&x[0, 0, 0] if N * S else NULL, &weight[0], &bias[0], &running_mean[0],
                            &running_var[0], training, momentum, eps, &mean[0], &invstd[0],
                            &out[0, 0, 0] if N * S else NULL, N, C, S)


def batch_norm_backward(const floating[:, :, ::1] x, const floating[::1] weight, const floating[:, :, ::1] g,
                        const double[::1] mean, const double[::1] invstd, bint training,
                        floating[:, :, ::1] gx, floating[::1] gweight, floating[::1] gbias):
    """gx, gweight, gbias += the gradients of batch_norm_forward (None skips); see the reference."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    for name, a in (("weight", weight), ("mean", mean), ("invstd", invstd)):
        _expect("batch_norm_backward", name, (a.shape[0],), (C,))
    _expect("batch_norm_backward", "g", (g.shape[0], g.shape[1], g.shape[2]), (N, C, S))
    if gx is not None:
        _expect("batch_norm_backward", "gx", (gx.shape[0], gx.shape[1], gx.shape[2]), (N, C, S))
    for name, a in (("gweight", gweight), ("gbias", gbias)):
        if a is not None:
            _expect("batch_norm_backward", name, (a.shape[0],), (C,))
    if not C:
        return
    cdef bint full = N * S != 0
    cdef floating* gx_ = &gx[0, 0, 0] if gx is not None and full else NULL
    cdef double[::1] sums = np.empty(2 * C)
    with nogil:
        _batch_norm_backward(&x[0, 0, 0] if full else NULL, &weight[0], &g[0, 0, 0] if full else NULL,
                             &mean[0], &invstd[0], training, &sums[0], gx_, True, _opt(gweight), True, _opt(gbias),
                             True, N, C, S)


def layer_norm_forward(const floating[:, ::1] x, const floating[::1] weight, const floating[::1] bias, double eps,
                       double[::1] mean, double[::1] invstd, floating[:, ::1] out):
    """out = weight (x - mean) / sqrt(var + eps) + bias, each row of x (R, F) by its own statistics."""
    cdef Py_ssize_t R = x.shape[0], F = x.shape[1]
    if F == 0:
        raise ValueError("layer_norm_forward: x has no features to normalise over")
    for name, a in (("weight", weight), ("bias", bias)):
        _expect("layer_norm_forward", name, (a.shape[0],), (F,))
    for name, a in (("mean", mean), ("invstd", invstd)):
        _expect("layer_norm_forward", name, (a.shape[0],), (R,))
    _expect("layer_norm_forward", "out", (out.shape[0], out.shape[1]), (R, F))
    if not R:
        return
    with nogil:
        _layer_norm_forward(&x[0, 0], &weight[0], &bias[0], eps, &mean[0], &invstd[0], &out[0, 0], R, F)


def layer_norm_backward(const floating[:, ::1] x, const floating[::1] weight, const floating[:, ::1] g,
                        const double[::1] mean, const double[::1] invstd, floating[:, ::1] gx,
                        floating[::1] gweight, floating[::1] gbias):
    """gx, gweight, gbias += the gradients of layer_norm_forward (None skips); see the reference."""
    cdef Py_ssize_t R = x.shape[0], F = x.shape[1]
    if F == 0:
        raise ValueError("layer_norm_backward: x has no features")
    _expect("layer_norm_backward", "weight", (weight.shape[0],), (F,))
    for name, a in (("mean", mean), ("invstd", invstd)):
        _expect("layer_norm_backward", name, (a.shape[0],), (R,))
    _expect("layer_norm_backward", "g", (g.shape[0], g.shape[1]), (R, F))
    if gx is not None:
        _expect("layer_norm_backward", "gx", (gx.shape[0], gx.shape[1]), (R, F))
    for name, a in (("gweight", gweight), ("gbias", gbias)):
        if a is not None:
            _expect("layer_norm_backward", name, (a.shape[0],), (F,))
    cdef double[::1] sums = np.empty(2 * F)
    cdef floating* gx_ = &gx[0, 0] if gx is not None and R else NULL
    with nogil:
        _layer_norm_backward(&x[0, 0] if R else NULL, &weight[0], &g[0, 0] if R else NULL,
                             &mean[0] if R else NULL, &invstd[0] if R else NULL, &sums[0], gx_, True,
                             _opt(gweight), True, _opt(gbias), True, R, F)


# -- The plan's operations (cedf/_plan_op.pxd) -------------------------------------------------
#
# BatchNorm's `stats` buffer holds 2 C + 1 doubles: the mean and 1 / sqrt(var + eps) the forward
# used, then 1.0 if those were the batch's (training) and 0.0 if the running ones: the backward
# differentiates what the forward computed, whatever the mode is by the time it runs.

cdef void _bn_fwd(floating dtype, const Op* op, void** ptr) noexcept nogil:
    cdef Py_ssize_t C = op.n
    cdef double* stats = <double*>arg(op, ptr, 6)
    cdef bint training = (<int64_t*>arg(op, ptr, 5))[0] != 0
    _batch_norm_forward(<floating*>arg(op, ptr, 0), <floating*>arg(op, ptr, 1), <floating*>arg(op, ptr, 2),
                        <floating*>arg(op, ptr, 3), <floating*>arg(op, ptr, 4), training, op.s[0], op.s[1],
                        stats, stats + C, <floating*>arg(op, ptr, 7), op.m, C, op.k)
    stats[2 * C] = 1.0 if training else 0.0


cdef void batch_norm_fwd_op(const Op* op, void** ptr) noexcept nogil:
    """x, weight, bias, running_mean, running_var, training (int64), stats, out; m, n, k = N, C, S;
    s = momentum, eps."""
    if op.f64:
        _bn_fwd(<double>0, op, ptr)
    else:
        _bn_fwd(<float>0, op, ptr)


cdef void _bn_bwd(floating dtype, const Op* op, void** ptr) noexcept nogil:
    cdef Py_ssize_t C = op.n
    cdef double* stats = <double*>arg(op, ptr, 3)
    _batch_norm_backward(<floating*>arg(op, ptr, 0), <floating*>arg(op, ptr, 1), <floating*>arg(op, ptr, 2),
                         stats, stats + C, stats[2 * C] != 0, <double*>arg(op, ptr, 7), <floating*>arg(op, ptr, 4),
                         op.acc[0], <floating*>arg(op, ptr, 5), op.acc[1], <floating*>arg(op, ptr, 6), op.acc[2],
                         op.m, C, op.k)


cdef void batch_norm_bwd_op(const Op* op, void** ptr) noexcept nogil:
    """x, weight, g, stats, gx, gweight, gbias (acc 0-2), scratch (2 C doubles); m, n, k = N, C, S."""
    if op.f64:
        _bn_bwd(<double>0, op, ptr)
    else:
        _bn_bwd(<float>0, op, ptr)


cdef void _ln_fwd(floating dtype, const Op* op, void** ptr) noexcept nogil:
    cdef double* stats = <double*>arg(op, ptr, 3)
    _layer_norm_forward(<floating*>arg(op, ptr, 0), <floating*>arg(op, ptr, 1), <floating*>arg(op, ptr, 2),
                        op.s[0], stats, stats + op.m, <floating*>arg(op, ptr, 4), op.m, op.n)


cdef void layer_norm_fwd_op(const Op* op, void** ptr) noexcept nogil:
    """x, weight, bias, stats (mean, invstd: 2 R doubles), out; m, n = R, F; s = eps."""
    if op.f64:
        _ln_fwd(<double>0, op, ptr)
    else:
        _ln_fwd(<float>0, op, ptr)


cdef void _ln_bwd(floating dtype, const Op* op, void** ptr) noexcept nogil:
    cdef double* stats = <double*>arg(op, ptr, 3)
    _layer_norm_backward(<floating*>arg(op, ptr, 0), <floating*>arg(op, ptr, 1), <floating*>arg(op, ptr, 2),
                         stats, stats + op.m, <double*>arg(op, ptr, 4), <floating*>arg(op, ptr, 5), op.acc[0],
                         <floating*>arg(op, ptr, 6), op.acc[1], <floating*>arg(op, ptr, 7), op.acc[2],
                         op.m, op.n)


cdef void layer_norm_bwd_op(const Op* op, void** ptr) noexcept nogil:
    """x, weight, g, stats, scratch (2 F doubles), gx, gweight, gbias (acc 0-2); m, n = R, F."""
    if op.f64:
        _ln_bwd(<double>0, op, ptr)
    else:
        _ln_bwd(<float>0, op, ptr)


PLAN_OPS = {
    "BATCH_NORM_FWD": plan_op(batch_norm_fwd_op),
    "BATCH_NORM_BWD": plan_op(batch_norm_bwd_op),
    "LAYER_NORM_FWD": plan_op(layer_norm_fwd_op),
    "LAYER_NORM_BWD": plan_op(layer_norm_bwd_op),
}
