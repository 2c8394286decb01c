# cython: language_level=3
"""The pooling kernels, compiled: MaxPool and AvgPool, forward and backward.

Same functions, signatures and contract as the pooling section of
`cedf/reference.py` (the specification): forward kernels write `out`, backward
kernels add into `gx`. Each also exists as a plan operation (`PLAN_OPS`) that
the nodes of `cedf.pooling` put into a compiled plan, and which writes or adds
into `gx` as the plan says (``acc``).

Design:
- One loop per operation for both ranks and both dtypes: a 1-D input (N, C, L)
  is a 2-D one (N, C, 1, L) pooled by a 1 x size window, and `floating` covers
  float32 and float64.
- The loops are memory-bound: they go output row by output row, and along a
  chunk of a row at once for each position of the window (the innermost loop
  reads x at the stride, with no branch, and vectorises), rather than window
  by window. A 1-D input whose windows tile its length is one long row.
- MaxPool's forward records, for each output, where in its plane the window's
  first maximum was (the flat index h W + w, PyTorch's return_indices); its
  backward adds each output's gradient there. The backward reads each index
  once and skips one outside the plane, so that an index array which another
  thread writes meanwhile cannot make it write out of bounds (an index array
  from Python is a caller's); the plan's own index buffer is written only by
  the forward loop, and is never out of the plane.
- AvgPool sums each window in double and rounds the mean once; its backward
  adds g / (kh kw) in double to every position of the window, rounding once
  per addition, as the reference's ``gx += share`` does.
- Windows that overlap (stride < size) need nothing special: a backward adds
  into gx, so a position in two windows gets both contributions. A gradient
  written (``acc`` false) is zeroed first: positions that no window covers
  (the floor of the output length) get zero, and the others a sum.

Every Python-callable kernel checks the window, the shapes of its buffers and
their layout (the memoryview types) with the GIL held, then runs its loop
without it.
"""
from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memset

from cedf._args cimport _expect
from cedf._plan_op cimport Op, arg, plan_op


cdef struct Window:
    Py_ssize_t planes      # N C
    Py_ssize_t H, W        # an input plane
    Py_ssize_t kh, kw      # the window
    Py_ssize_t sh, sw      # its strides
    Py_ssize_t OH, OW      # an output plane


# -- the loops --------------------------------------------------------------------------
# A chunk: the outputs whose running maxima, sums or shares of the gradient are kept on
# the stack while the window's positions are visited.
cdef enum:
    CHUNK = 256


cdef inline void _zero(floating* gx, Py_ssize_t n) noexcept nogil:
    if n:
        memset(gx, 0, n * sizeof(floating))


cdef inline bint _as_one_row(const Window* w, Window* row) noexcept nogil:
    """Whether each output row's windows continue where the previous row's end, as in a 1-D
    pooling whose windows tile the length (kh = sh = 1, W = OW sw): then `row` is the whole
    input as one row, and the loops run along it rather than along rows of a few outputs
    each (rows of 10 outputs made the loops' set-up most of the time)."""
    if w.kh != 1 or w.sh != 1 or w.W != w.OW * w.sw or w.planes * w.H <= 1:
        return False
    row[0] = w[0]
    row.planes, row.H, row.OH = 1, 1, 1
    row.W, row.OW = w.planes * w.H * w.W, w.planes * w.H * w.OW
    return True


cdef void max_forward(const floating* x, floating* out, int64_t* argmax, const Window* w) noexcept nogil:
    cdef Window row
    cdef Py_ssize_t p, q, shift, outputs = w.OH * w.OW
    cdef int64_t* where
    cdef Py_ssize_t exact = min(_exact_offsets, <Py_ssize_t>1 << 53)
    if floating is float:
        exact = min(exact, 1 << 24)
    if (w.kh - 1) * w.W + w.kw > exact:
        max_forward_wide(x, out, argmax, w)
    elif _as_one_row(w, &row):
        max_rows(x, out, argmax, &row)
        for p in range(1, w.planes):   # positions in the one row, made positions in each plane
            where, shift = argmax + p * outputs, p * w.H * w.W
            for q in range(outputs):
                where[q] -= shift
    else:
        max_rows(x, out, argmax, w)


cdef void max_rows(const floating* x, floating* out, int64_t* argmax, const Window* w) noexcept nogil:
    # Output row by output row, in chunks of outputs: each chunk starts as its windows' first
    # positions, and every other position of the window, in row-major order, is compared along
    # the chunk at once. The position of the maximum so far is kept as its offset in the
    # window, h W + w, in the float type itself (exact below 2^24, checked), so that the
    # select is as wide as the comparison: the loop has no branch and the compiler vectorises
    # it (a branch per element, mispredicted on random data, made it 7 ns an element here).
    cdef Py_ssize_t W = w.W, kh = w.kh, kw = w.kw, sh = w.sh, sw = w.sw, OH = w.OH, OW = w.OW
    cdef Py_ssize_t p, oh, o0, n, ow, i, j, at, d
    cdef const floating* src
    cdef floating best[CHUNK]
    cdef floating offset[CHUNK]
    cdef floating v, b, here
    cdef bint take
    for p in range(w.planes):
        for oh in range(OH):
            for o0 in range(0, OW, 256):   # CHUNK (range needs a literal step)
                n = min(<Py_ssize_t>CHUNK, OW - o0)
                at = oh * sh * W + o0 * sw
                src = x + at
                for ow in range(n):
                    best[ow] = src[ow * sw]
                    offset[ow] = 0
                for i in range(kh):
                    for j in range(1 if i == 0 else 0, kw):
                        d = i * W + j
                        src = x + at + d
                        here = <floating>d
                        for ow in range(n):
                            v, b = src[ow * sw], best[ow]
                            # Strictly greater: a tie keeps the first. A NaN wins over a
                            # number (and the first NaN stays), so that it propagates, as in
                            # PyTorch: not (v <= b) holds for v > b and for a NaN v.
                            take = (not (v <= b)) & (b == b)
                            best[ow] = v if take else b
                            offset[ow] = here if take else offset[ow]
                for ow in range(n):
                    out[oh * OW + o0 + ow] = best[ow]
                    argmax[oh * OW + o0 + ow] = at + ow * sw + <Py_ssize_t>offset[ow]
        x += w.H * W
        out += OH * OW
        argmax += OH * OW


# The largest window offset max_forward keeps in a float; lowered by the tests (below) so
# that they run max_forward_wide on small inputs.
cdef Py_ssize_t _exact_offsets = 1 << 53


def _limit_exact_offsets(Py_ssize_t limit):
    """For the tests: offsets beyond `limit` go to max_forward_wide; returns the previous limit."""
    global _exact_offsets
    previous, _exact_offsets = _exact_offsets, limit
    return previous


cdef void max_forward_wide(const floating* x, floating* out, int64_t* argmax, const Window* w) noexcept nogil:
    """max_forward for windows whose offsets a float cannot hold exactly: one window at a time."""
    cdef Py_ssize_t p, o, oh, ow, i, j, at, best_at
    cdef floating best, v
    for p in range(w.planes):
        for oh in range(w.OH):
            for ow in range(w.OW):
                at = oh * w.sh * w.W + ow * w.sw
                best, best_at = x[at], at
                for i in range(w.kh):
                    for j in range(w.kw):
                        v = x[at + i * w.W + j]
                        if (not (v <= best)) and best == best:
                            best, best_at = v, at + i * w.W + j
                o = oh * w.OW + ow
                out[o], argmax[o] = best, best_at
        x += w.H * w.W
        out += w.OH * w.OW
        argmax += w.OH * w.OW


cdef Py_ssize_t max_backward(const int64_t* argmax, const floating* g, floating* gx, bint acc,
                             const Window* w) noexcept nogil:
    """gx (+)= g at the argmax positions; -1, or the first output whose index is outside its plane
    (skipped: see the module's docstring)."""
    cdef Py_ssize_t p, o, k, bad = -1
    cdef Py_ssize_t plane = w.H * w.W, outputs = w.OH * w.OW
    if not acc:
        _zero(gx, w.planes * plane)
    for p in range(w.planes):
        for o in range(outputs):
            k = argmax[o]   # read once: what is checked is what is used
            if <size_t>k < <size_t>plane:
                gx[k] += g[o]
            elif bad < 0:
                bad = p * outputs + o
        argmax += outputs
        g += outputs
        gx += plane
    return bad


cdef void avg_forward(const floating* x, floating* out, const Window* w) noexcept nogil:
    cdef Window row
    avg_forward_rows(x, out, &row if _as_one_row(w, &row) else w)


cdef void avg_forward_rows(const floating* x, floating* out, const Window* w) noexcept nogil:
    cdef Py_ssize_t p, oh, o0, n, ow, i, j
    cdef const floating* src
    cdef double total[CHUNK]
    cdef double area = <double>(w.kh * w.kw)
    for p in range(w.planes):
        for oh in range(w.OH):
            for o0 in range(0, w.OW, 256):   # CHUNK
                n = min(<Py_ssize_t>CHUNK, w.OW - o0)
                for ow in range(n):
                    total[ow] = 0
                for i in range(w.kh):
                    for j in range(w.kw):
                        src = x + (oh * w.sh + i) * w.W + o0 * w.sw + j
                        for ow in range(n):
                            total[ow] += src[ow * w.sw]
                for ow in range(n):
                    out[oh * w.OW + o0 + ow] = <floating>(total[ow] / area)
        x += w.H * w.W
        out += w.OH * w.OW


cdef void avg_backward(const floating* g, floating* gx, bint acc, const Window* w) noexcept nogil:
    cdef Window row
    avg_backward_rows(g, gx, acc, &row if _as_one_row(w, &row) else w)


cdef void avg_backward_rows(const floating* g, floating* gx, bint acc, const Window* w) noexcept nogil:
    cdef Py_ssize_t p, oh, o0, n, ow, i, j
    cdef floating* dst
    cdef double share[CHUNK]
    cdef double area = <double>(w.kh * w.kw)
    if not acc:
        _zero(gx, w.planes * w.H * w.W)
    for p in range(w.planes):
        for oh in range(w.OH):
            for o0 in range(0, w.OW, 256):   # CHUNK
                n = min(<Py_ssize_t>CHUNK, w.OW - o0)
                for ow in range(n):
                    share[ow] = g[oh * w.OW + o0 + ow] / area
                for i in range(w.kh):
                    for j in range(w.kw):
                        # Within one (i, j) the outputs' positions are distinct (sw >= 1):
                        # the loop has no dependence, whatever the overlap of the windows.
                        dst = gx + (oh * w.sh + i) * w.W + o0 * w.sw + j
                        for ow in range(n):
                            dst[ow * w.sw] = <floating>(dst[ow * w.sw] + share[ow])
        g += w.OH * w.OW
        gx += w.H * w.W


# -- the Python-callable kernels: checks with the GIL, loops without ----------------------

cdef Window _window(str kernel, tuple x_shape, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                    Py_ssize_t sw) except *:
    """The geometry of pooling an input of shape (N, C, H, W), after checking the window fits."""
    cdef Window w
    if min(kh, kw, sh, sw) < 1:
        raise ValueError(f"{kernel}: window ({kh}, {kw}) and strides ({sh}, {sw}) must be positive")
    if kh > x_shape[2] or kw > x_shape[3]:
        raise ValueError(f"{kernel}: window ({kh}, {kw}) is larger than the input's planes "
                         f"({x_shape[2]}, {x_shape[3]})")
    w.planes = x_shape[0] * x_shape[1]
    w.H, w.W, w.kh, w.kw, w.sh, w.sw = x_shape[2], x_shape[3], kh, kw, sh, sw
    w.OH, w.OW = (w.H - kh) // sh + 1, (w.W - kw) // sw + 1
    return w


cdef inline tuple _shape(const Py_ssize_t* shape):
    return (shape[0], shape[1], shape[2], shape[3])


# Data pointers of possibly empty 4-D memoryviews (&a[0, 0, 0, 0] is out of bounds when a
# has no element; the loops then never dereference the pointer).
cdef inline bint _empty(tuple shape):
    return 0 in shape


def maxpool_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                    int64_t[:, :, :, ::1] argmax, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw):
    """out = the max of each window of x (N, C, H, W); argmax (int64, out's shape) = where it is,
    as the flat index h W + w in its channel's plane; the first maximum wins a tie, a NaN counts
    as the maximum."""
    cdef tuple shape = _shape(x.shape)
    cdef Window w = _window("maxpool_forward", shape, kh, kw, sh, sw)
    cdef tuple expected = (shape[0], shape[1], w.OH, w.OW)
    _expect("maxpool_forward", "out", _shape(out.shape), expected)
    _expect("maxpool_forward", "argmax", _shape(argmax.shape), expected)
    if _empty(expected):
        return
    with nogil:
        max_forward(&x[0, 0, 0, 0], &out[0, 0, 0, 0], &argmax[0, 0, 0, 0], &w)


def maxpool_backward(const floating[:, :, :, ::1] g, const int64_t[:, :, :, ::1] argmax,
                     floating[:, :, :, ::1] gx):
    """gx (N, C, H, W) += g (N, C, OH, OW) at the positions argmax names (the forward's)."""
    cdef tuple shape = _shape(gx.shape), out_shape = _shape(g.shape)
    _expect("maxpool_backward", "argmax", _shape(argmax.shape), out_shape)
    _expect("maxpool_backward", "g", out_shape[:2], shape[:2])
    cdef Window w   # the window itself is not needed: the indices say where each output came from
    w.planes, w.H, w.W, w.OH, w.OW = shape[0] * shape[1], shape[2], shape[3], out_shape[2], out_shape[3]
    w.kh = w.kw = w.sh = w.sw = 0
    if _empty(shape) or _empty(out_shape):
        return
    cdef Py_ssize_t bad
    with nogil:
        bad = max_backward(&argmax[0, 0, 0, 0], &g[0, 0, 0, 0], &gx[0, 0, 0, 0], True, &w)
    if bad >= 0:
        raise ValueError(f"maxpool_backward: argmax holds an index outside its plane of {w.H * w.W} "
                         f"positions (output {bad}, flat); it must be what maxpool_forward wrote")


def avgpool_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw):
    """out = the mean of each window of x (N, C, H, W), summed in double."""
    cdef tuple shape = _shape(x.shape)
    cdef Window w = _window("avgpool_forward", shape, kh, kw, sh, sw)
    cdef tuple expected = (shape[0], shape[1], w.OH, w.OW)
    _expect("avgpool_forward", "out", _shape(out.shape), expected)
    if _empty(expected):
        return
    with nogil:
        avg_forward(&x[0, 0, 0, 0], &out[0, 0, 0, 0], &w)


def avgpool_backward(const floating[:, :, :, ::1] g, floating[:, :, :, ::1] gx,
                     Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw):
    """gx (N, C, H, W) += g / (kh kw) at every position of each window, in double."""
    cdef tuple shape = _shape(gx.shape)
    cdef Window w = _window("avgpool_backward", shape, kh, kw, sh, sw)
    _expect("avgpool_backward", "g", _shape(g.shape), (shape[0], shape[1], w.OH, w.OW))
    if _empty(shape):
        return
    with nogil:
        avg_backward(&g[0, 0, 0, 0], &gx[0, 0, 0, 0], True, &w)


# -- plan operations (cedf/_plan_op.pxd) ------------------------------------------------------
# m = planes (N C); d = H, W, kh, kw, sh, sw, OH, OW; the plan built them from the node's
# checked forward, so nothing here can fail.

cdef inline Window _op_window(const Op* op) noexcept nogil:
    cdef Window w
    w.planes = op.m
    w.H, w.W, w.kh, w.kw, w.sh, w.sw, w.OH, w.OW = op.d[0], op.d[1], op.d[2], op.d[3], op.d[4], op.d[5], \
        op.d[6], op.d[7]
    return w


cdef void maxpool_fwd_op(const Op* op, void** ptr) noexcept nogil:
    # a: x, out, argmax
    cdef Window w = _op_window(op)
    if op.f64:
        max_forward(<const double*>arg(op, ptr, 0), <double*>arg(op, ptr, 1), <int64_t*>arg(op, ptr, 2), &w)
    else:
        max_forward(<const float*>arg(op, ptr, 0), <float*>arg(op, ptr, 1), <int64_t*>arg(op, ptr, 2), &w)


cdef void maxpool_bwd_op(const Op* op, void** ptr) noexcept nogil:
    # a: argmax, g, gx; acc: gx
    cdef Window w = _op_window(op)
    if op.f64:
        max_backward(<const int64_t*>arg(op, ptr, 0), <const double*>arg(op, ptr, 1), <double*>arg(op, ptr, 2),
                     op.acc[0], &w)
    else:
        max_backward(<const int64_t*>arg(op, ptr, 0), <const float*>arg(op, ptr, 1), <float*>arg(op, ptr, 2),
                     op.acc[0], &w)


cdef void avgpool_fwd_op(const Op* op, void** ptr) noexcept nogil:
    # a: x, out
    cdef Window w = _op_window(op)
    if op.f64:
        avg_forward(<const double*>arg(op, ptr, 0), <double*>arg(op, ptr, 1), &w)
    else:
        avg_forward(<const float*>arg(op, ptr, 0), <float*>arg(op, ptr, 1), &w)


cdef void avgpool_bwd_op(const Op* op, void** ptr) noexcept nogil:
    # a: g, gx; acc: gx
    cdef Window w = _op_window(op)
    if op.f64:
        avg_backward(<const double*>arg(op, ptr, 0), <double*>arg(op, ptr, 1), op.acc[0], &w)
    else:
        avg_backward(<const float*>arg(op, ptr, 0), <float*>arg(op, ptr, 1), op.acc[0], &w)


PLAN_OPS = {
    "MAXPOOL_FWD": plan_op(maxpool_fwd_op),
    "MAXPOOL_BWD": plan_op(maxpool_bwd_op),
    "AVGPOOL_FWD": plan_op(avgpool_fwd_op),
    "AVGPOOL_BWD": plan_op(avgpool_bwd_op),
}
