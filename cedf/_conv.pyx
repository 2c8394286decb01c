# cython: language_level=3
"""Convolution, compiled: one product per output position and kernel row, position-major.

The same two kernels as `cedf/reference.py`'s convolution section (layout; 1-D
as 2-D with H = 1), callable from Python, and the same loops as the plan's
operations CONV_FWD and CONV_BWD (`PLAN_OPS`).

Design, for the small batched convolutions people learn with (MNIST-1D's CNN:
100 examples of 40 positions, 25 channels):
- The loops keep a batch position-major and batch-last, (H, W, C, N): the
  numbers of every example at one channel side by side, the channels of one
  position after each other. Under one kernel row at one output position, the
  input a window reads is then a run of whole (C, N) blocks, a (taps C x N)
  matrix in place: each output position, (O x N), is the bias plus one GEMM
  per kernel row, with the kernel turned to (O, kh, kw, C) so that its columns
  for those taps are one run too. Nothing is unfolded (no im2col, no col2im):
  the backward's products read g's position and that window again (dW) and add
  into dx's window (dx), the windows' overlap summed by BLAS's beta = 1. Where
  a window hangs over the padding, its taps are clipped (`_taps`).
- Measured here (MNIST-1D's middle layer, 25 x 75 by 75 x 100 per position,
  float32, one thread, OpenBLAS 0.3.31 through SciPy): the forward's ten
  products 20 us against 41 us for W @ cols over the unfolded batch (one
  GEMM of 25 x 75 by 75 x 1000), which also needed the unfolding; dx's 20 us
  against 41 us, plus the folding back; dW's 43 against 47 us. Products of
  100 columns stay in OpenBLAS's small-matrix kernels on the calling thread.
- Between layers, the plan keeps the values and gradients position-major
  (`cedf.plan`, `batch_last`): a Conv, a ReLU after it, the next Conv, a
  Flatten at the end swaps the axes once. A buffer in the user's layout,
  channels-first (N, C, H, W), is turned into `work` on the way in and out of
  work on the way out (the Python-callable kernels' case, and a first Conv
  reading an Input); the backward reads the forward's turned copy of x.
- dx is computed only when the input takes a gradient: the first convolution
  reads an Input and skips it, as the first Affine skips dX.
- The scratch of the Python-callable kernels is allocated per call; the
  plan's operations use a buffer the node allocated once (`cedf.conv`).

The loops are plain C over raw pointers, without the GIL; every size was
checked before (here with the GIL held, or by the node that built the plan).
"""
from cython cimport floating
from libc.limits cimport INT_MAX
from libc.string cimport memset

import numpy as np

from cedf._args cimport _blas_size, _expect
from cedf._blas cimport gemm, use_numpy_blas
from cedf._loops cimport long_sum
from cedf._plan_op cimport Op, arg, plan_op


def _use_numpy_blas(addresses):
    """This module's products call NumPy's BLAS at `addresses`, or SciPy's for None (cedf.backend.set_blas)."""
    use_numpy_blas(addresses)


cdef struct Geometry:
    Py_ssize_t n, c, h, w, o, kh, kw, sh, sw, ph, pw, ho, wo
    bint x_inner, out_inner   # x (and dx), the output (and its gradient) batch-last


cdef enum:
    SMALL_TN_MAX = 1200   # OpenBLAS 0.3 (SkylakeX kernels): see conv_backward_loop


cdef inline void _taps(Py_ssize_t o, Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t k, Py_ssize_t length,
                       Py_ssize_t* first, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Output position `o` reads input positions first + t for the taps t in [0, k); [lo, hi) of them
    fall inside the input (the rest in the padding): first = o stride - pad."""
    first[0] = o * stride - pad
    lo[0] = -first[0] if first[0] < 0 else 0
    hi[0] = length - first[0] if first[0] + k > length else k
    if hi[0] < lo[0]:
        hi[0] = lo[0]


cdef extern from "conv.h" nogil:
    void cedf_fill_row_bias_f32(float* a, const float* bias, Py_ssize_t rows, Py_ssize_t length)
    void cedf_fill_row_bias_f64(double* a, const double* bias, Py_ssize_t rows, Py_ssize_t length)
    void cedf_transpose_f32(const float* src, float* dst, Py_ssize_t rows, Py_ssize_t cols, int acc)
    void cedf_transpose_f64(const double* src, double* dst, Py_ssize_t rows, Py_ssize_t cols, int acc)
    void cedf_swap_axes_f32(const float* src, float* dst, Py_ssize_t a, Py_ssize_t c, Py_ssize_t b, int acc)
    void cedf_swap_axes_f64(const double* src, double* dst, Py_ssize_t a, Py_ssize_t c, Py_ssize_t b, int acc)


cdef inline void transpose(const floating* src, floating* dst, Py_ssize_t rows, Py_ssize_t cols,
                           bint acc) noexcept nogil:
    """dst (cols x rows) (+)= src (rows x cols)^T."""
    if floating is float:
        cedf_transpose_f32(src, dst, rows, cols, acc)
    else:
        cedf_transpose_f64(src, dst, rows, cols, acc)


cdef inline void swap_axes(const floating* src, floating* dst, Py_ssize_t a, Py_ssize_t c, Py_ssize_t b,
                           bint acc) noexcept nogil:
    """dst (b, c, a) (+)= src (a, c, b) with its outer and inner axes swapped: (N, C, S) <-> (S, C, N)."""
    if floating is float:
        cedf_swap_axes_f32(src, dst, a, c, b, acc)
    else:
        cedf_swap_axes_f64(src, dst, a, c, b, acc)


cdef inline Py_ssize_t work_size(const Geometry* g) noexcept nogil:
    """The numbers `work` holds: the kernel turned to (O, kh, kw, C) and its gradient, the output
    (or g) position-major, and x and dx position-major (see `region`)."""
    return 2 * g.o * g.c * g.kh * g.kw + g.n * (g.o * g.ho * g.wo + 2 * g.c * g.h * g.w)


def work_numbers(n, c, o, h, w, kh, kw, ho, wo):
    """How many numbers a plan's Conv gives its operations as `work` (`work_size`)."""
    cdef Geometry g
    g.n, g.c, g.o, g.h, g.w, g.kh, g.kw, g.ho, g.wo = n, c, o, h, w, kh, kw, ho, wo
    return work_size(&g)


cdef inline floating* region(floating* work, const Geometry* g, int which) noexcept nogil:
    """The parts of `work`, in order: 0 the kernel turned to (O, kh, kw, C), so that a tap's
    channels are one run; 1 its gradient, turned back into gW; 2 the output (or g) position-major,
    (Ho, Wo, O, N), and 3 x and 4 dx position-major, (H, W, C, N), when the caller's are
    channels-first (the backward reads the forward's 3)."""
    cdef Py_ssize_t kernel = g.o * g.c * g.kh * g.kw, sizes[4]
    sizes[0], sizes[1], sizes[2], sizes[3] = kernel, kernel, g.n * g.o * g.ho * g.wo, g.n * g.c * g.h * g.w
    cdef int i
    for i in range(which):
        work += sizes[i]
    return work


cdef void turn_kernel(const floating* W, floating* wp, const Geometry* g) noexcept nogil:
    """wp (O, kh kw, C) = W (O, C, kh kw), each output channel's (C x kh kw) transposed."""
    cdef Py_ssize_t o, taps = g.kh * g.kw, size = g.c * taps
    for o in range(g.o):
        transpose(W + o * size, wp + o * size, g.c, taps, False)


cdef void conv_forward_loop(const floating* x, const floating* W, const floating* b, floating* out,
                            floating* work, const Geometry* g) noexcept nogil:
    """out = conv(x, W) + b, position-major, one product per output position and kernel row.

    Position-major, (H, W, C, N), the input under one kernel row at one output
    position is a run of whole (C, N) blocks, a (taps C x N) matrix with no copy:
    each output position (Ho, Wo, ·) (O x N) is b plus W's columns of those taps
    times it. x and out are the plan's position-major buffers, or the caller's
    channels-first ones, turned through `work` (work_size numbers).
    """
    cdef Py_ssize_t oh, ow, i, fh, ilo, ihi, fw, jlo, jhi
    cdef Py_ssize_t row = g.kh * g.kw * g.c, block = g.c * g.n, plane = g.o * g.n
    cdef floating* wp = region(work, g, 0)
    cdef floating* dst = out if g.out_inner else region(work, g, 2)
    cdef floating* pos
    if not g.x_inner:
        swap_axes(x, region(work, g, 3), g.n, g.c, g.h * g.w, False)
        x = region(work, g, 3)
    turn_kernel(W, wp, g)
    cdef bint product = g.o > 0 and g.n > 0 and g.c > 0
    for oh in range(g.ho):
        _taps(oh, g.sh, g.ph, g.kh, g.h, &fh, &ilo, &ihi)
        for ow in range(g.wo):
            _taps(ow, g.sw, g.pw, g.kw, g.w, &fw, &jlo, &jhi)
            pos = dst + (oh * g.wo + ow) * plane
            # The bias first and the products added to it (beta 1): no pass zeroes the output.
            if floating is float:
                cedf_fill_row_bias_f32(pos, b, g.o, g.n)
            else:
                cedf_fill_row_bias_f64(pos, b, g.o, g.n)
            if not product or jhi <= jlo:
                continue
            for i in range(ilo, ihi):
                gemm(False, False, <int>g.o, <int>g.n, <int>((jhi - jlo) * g.c), 1, wp + (i * g.kw + jlo) * g.c,
                     <int>row, x + ((fh + i) * g.w + fw + jlo) * block, <int>g.n, 1, pos, <int>g.n)
    if not g.out_inner:
        swap_axes(dst, out, g.ho * g.wo, g.o, g.n, False)


cdef void conv_backward_loop(const floating* x, const floating* W, const floating* g_out, floating* work,
                             floating* gx, bint acc_x, floating* gW, bint acc_W,
                             floating* gb, bint acc_b, const Geometry* g) noexcept nogil:
    """gb (+)= the sums of g over positions and batch; gW (+)= the sum over output positions
    and kernel rows of g's position (O x N) times the input it read, transposed; gx (+)=
    W's columns of those taps, transposed, times g's position, added where they were read.

    x, g_out and gx as in the forward (the forward's turned x, in work, when channels-first);
    gx, gW, gb NULL: not wanted. Sums are taken in double.
    """
    cdef Py_ssize_t o, p, oh, ow, i, j, fh, ilo, ihi, fw, jlo, jhi, taps, group
    cdef Py_ssize_t row = g.kh * g.kw * g.c, block = g.c * g.n, plane = g.o * g.n, positions = g.ho * g.wo
    cdef Py_ssize_t image = g.c * g.h * g.w
    cdef double s
    cdef const floating* pos
    cdef floating* wp = region(work, g, 0)
    cdef floating* dwp = region(work, g, 1)
    cdef floating* dx = gx if g.x_inner else region(work, g, 4)
    cdef bint product = g.o > 0 and g.n > 0 and g.c > 0
    # dW's products, g's position (O x N) times a kernel row's input (taps C x N) transposed (both
    # operands summed along their rows), run in OpenBLAS's small-matrix kernel only up to
    # SMALL_TN_MAX outputs, and take its general path (packing) above: a row of MNIST-1D's middle
    # layers gives 25 x 75, and one product per tap, 25 x 25 each, took 41 against 48 us a layer.
    cdef bint per_tap = g.o * g.kw * g.c > SMALL_TN_MAX
    if not g.out_inner:
        swap_axes(g_out, region(work, g, 2), g.n, g.o, positions, False)
        g_out = region(work, g, 2)
    if not g.x_inner:
        x = region(work, g, 3)
    if gb != NULL:
        for o in range(g.o):
            s = 0
            for p in range(positions):
                s += long_sum(g_out + p * plane + o * g.n, g.n)
            gb[o] = <floating>(gb[o] + s if acc_b else s)
    if gW != NULL:
        memset(dwp, 0, g.o * row * sizeof(floating))
    if gx != NULL:
        turn_kernel(W, wp, g)
        if not (g.x_inner and acc_x):
            memset(dx, 0, g.n * image * sizeof(floating))
    if product and (gW != NULL or gx != NULL):
        for oh in range(g.ho):
            _taps(oh, g.sh, g.ph, g.kh, g.h, &fh, &ilo, &ihi)
            for ow in range(g.wo):
                _taps(ow, g.sw, g.pw, g.kw, g.w, &fw, &jlo, &jhi)
                if jhi <= jlo:
                    continue
                pos, taps = g_out + (oh * g.wo + ow) * plane, (jhi - jlo) * g.c
                group = 1 if per_tap else jhi - jlo   # the taps of one dW product
                for i in range(ilo, ihi):
                    j = jlo
                    while gW != NULL and j < jhi:
                        gemm(False, True, <int>g.o, <int>(group * g.c), <int>g.n, 1, pos, <int>g.n,
                             x + ((fh + i) * g.w + fw + j) * block, <int>g.n, 1, dwp + (i * g.kw + j) * g.c,
                             <int>row)
                        j += group
                    if gx != NULL:
                        gemm(True, False, <int>taps, <int>g.n, <int>g.o, 1, wp + (i * g.kw + jlo) * g.c, <int>row,
                             pos, <int>g.n, 1, dx + ((fh + i) * g.w + fw + jlo) * block, <int>g.n)
    if gW != NULL:
        # dwp (O, kh kw, C) -> gW (O, C, kh kw), per output channel
        for o in range(g.o):
            transpose(dwp + o * row, gW + o * row, g.kh * g.kw, g.c, acc_W)
    if gx != NULL and not g.x_inner:
        swap_axes(dx, gx, g.h * g.w, g.c, g.n, acc_x)


cdef void swap_axes_op(const Op* op, void** ptr) noexcept nogil:
    """a: src (m, n, k), dst (k, n, m); acc: dst. A batch into or out of the plan's position-major
    layout, (N, C, S) <-> (S, C, N) (a Flatten's)."""
    if op.f64:
        swap_axes(<double*>arg(op, ptr, 0), <double*>arg(op, ptr, 1), op.m, op.n, op.k, op.acc[0])
    else:
        swap_axes(<float*>arg(op, ptr, 0), <float*>arg(op, ptr, 1), op.m, op.n, op.k, op.acc[0])


# -- the plan's operations (cedf/_plan_op.pxd) ------------------------------------------------
# m, n, k = N, C, O; d = H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, and whether x and the output
# are position-major (1) or channels-first (0).

cdef inline Geometry _op_geometry(const Op* op) noexcept nogil:
    cdef Geometry g
    g.n, g.c, g.o = op.m, op.n, op.k
    g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.ho, g.wo = (op.d[0], op.d[1], op.d[2], op.d[3], op.d[4],
                                                                op.d[5], op.d[6], op.d[7], op.d[8], op.d[9])
    g.x_inner, g.out_inner = op.d[10] != 0, op.d[11] != 0
    return g


cdef void conv_fwd_op(const Op* op, void** ptr) noexcept nogil:
    """a: x, W, b, out, work."""
    cdef Geometry g = _op_geometry(op)
    if op.f64:
        conv_forward_loop(<double*>arg(op, ptr, 0), <double*>arg(op, ptr, 1), <double*>arg(op, ptr, 2),
                          <double*>arg(op, ptr, 3), <double*>arg(op, ptr, 4), &g)
    else:
        conv_forward_loop(<float*>arg(op, ptr, 0), <float*>arg(op, ptr, 1), <float*>arg(op, ptr, 2),
                          <float*>arg(op, ptr, 3), <float*>arg(op, ptr, 4), &g)


cdef void conv_bwd_op(const Op* op, void** ptr) noexcept nogil:
    """a: x (position-major; else None: the forward's copy in work), W, g, work, gx, gW, gb;
    acc: gx, gW, gb."""
    cdef Geometry g = _op_geometry(op)
    if op.f64:
        conv_backward_loop(<double*>arg(op, ptr, 0), <double*>arg(op, ptr, 1), <double*>arg(op, ptr, 2),
                           <double*>arg(op, ptr, 3), <double*>arg(op, ptr, 4), op.acc[0],
                           <double*>arg(op, ptr, 5), op.acc[1], <double*>arg(op, ptr, 6), op.acc[2], &g)
    else:
        conv_backward_loop(<float*>arg(op, ptr, 0), <float*>arg(op, ptr, 1), <float*>arg(op, ptr, 2),
                           <float*>arg(op, ptr, 3), <float*>arg(op, ptr, 4), op.acc[0],
                           <float*>arg(op, ptr, 5), op.acc[1], <float*>arg(op, ptr, 6), op.acc[2], &g)


PLAN_OPS = {"CONV_FWD": plan_op(conv_fwd_op), "CONV_BWD": plan_op(conv_bwd_op), "SWAP_AXES": plan_op(swap_axes_op)}


# -- the kernels, callable from Python ----------------------------------------------------------

cdef tuple _pair(str kernel, str name, value, Py_ssize_t least):
    try:
        a, b = value
        a, b = int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"{kernel}: {name} must be a pair of integers, got {value!r}") from None
    if a < least or b < least:
        raise ValueError(f"{kernel}: {name} must be integers of at least {least}, got {value!r}")
    return a, b


cdef Geometry _geometry(str kernel, tuple x_shape, tuple w_shape, stride, padding) except *:
    """The convolution's geometry for x of `x_shape` (N, C, H, W) and W of `w_shape` (O, C, kh, kw)."""
    cdef Geometry g
    n, c, h, w = x_shape
    o, _, kh, kw = w_shape
    _expect(kernel, "W", w_shape, (o, c, kh, kw))
    sh, sw = _pair(kernel, "stride", stride, 1)
    ph, pw = _pair(kernel, "padding", padding, 0)
    # In Python's integers: a padding or stride of any size is refused by name, or computed,
    # not wrapped around (or an OverflowError) in C's.
    padded = (h + 2 * ph, w + 2 * pw)
    if kh < 1 or kw < 1 or padded[0] < kh or padded[1] < kw:
        raise ValueError(f"{kernel}: kernel {(kh, kw)} does not fit the padded input {padded}")
    ho, wo = (padded[0] - kh) // sh + 1, (padded[1] - kw) // sw + 1
    for size in (o, c * kh * kw, n * ho * wo, padded[0] * padded[1]):
        if size > INT_MAX:
            raise ValueError(f"{kernel}: the convolution of x {x_shape} by W {w_shape} with stride {(sh, sw)} and "
                             f"padding {(ph, pw)} has a dimension of {size}, beyond the BLAS limit {INT_MAX}")
    # A stride beyond the padded input makes one output position, as the padded size does.
    g.n, g.c, g.h, g.w, g.o, g.kh, g.kw = n, c, h, w, o, kh, kw
    g.sh, g.sw, g.ph, g.pw, g.ho, g.wo = min(sh, padded[0]), min(sw, padded[1]), ph, pw, ho, wo
    g.x_inner = g.out_inner = False   # the caller's arrays are channels-first
    return g


cdef inline const floating* _data(const floating[::1] flat) noexcept nogil:
    return &flat[0] if flat.shape[0] else NULL


cdef inline tuple _shape4(const floating[:, :, :, ::1] a):
    return (a.shape[0], a.shape[1], a.shape[2], a.shape[3])


cdef inline floating* _work(floating[::1] work) noexcept nogil:
    return &work[0] if work.shape[0] else NULL


def conv_forward(const floating[:, :, :, ::1] x not None, const floating[:, :, :, ::1] W not None,
                 const floating[::1] b not None, floating[:, :, :, ::1] out not None, stride, padding):
    """out = conv(x, W) + b: x (N, C, H, W), W (O, C, kh, kw), b (O,), out (N, O, Ho, Wo);
    stride and padding pairs."""
    cdef Geometry g = _geometry("conv_forward", _shape4(x), _shape4(W), stride, padding)
    _expect("conv_forward", "b", (b.shape[0],), (g.o,))
    _expect("conv_forward", "out", _shape4(out), (g.n, g.o, g.ho, g.wo))
    cdef floating[::1] work = np.empty(work_size(&g), np.float64 if floating is double else np.float32)
    cdef floating[::1] out_flat = np.asarray(out).reshape(-1)
    cdef const floating[::1] x_flat = np.asarray(x).reshape(-1)
    cdef const floating[::1] W_flat = np.asarray(W).reshape(-1)
    with nogil:
        conv_forward_loop(_data(x_flat), _data(W_flat), _data(b), <floating*>_data(out_flat), _work(work), &g)


def conv_backward(const floating[:, :, :, ::1] x not None, const floating[:, :, :, ::1] W not None,
                  const floating[:, :, :, ::1] g not None, floating[:, :, :, ::1] gx,
                  floating[:, :, :, ::1] gW, floating[::1] gb, stride, padding):
    """Given x, the forward's input (N, C, H, W), and g = dL/dout (N, O, Ho, Wo): gW += dL/dW,
    gb += the sums of g, gx += dL/dx (None skips)."""
    cdef Geometry geo = _geometry("conv_backward", _shape4(x), _shape4(W), stride, padding)
    _expect("conv_backward", "g", _shape4(g), (geo.n, geo.o, geo.ho, geo.wo))
    if gx is not None:
        _expect("conv_backward", "gx", _shape4(gx), _shape4(x))
    if gW is not None:
        _expect("conv_backward", "gW", _shape4(gW), _shape4(W))
    if gb is not None:
        _expect("conv_backward", "gb", (gb.shape[0],), (geo.o,))
    cdef floating[::1] work = np.empty(work_size(&geo), np.float64 if floating is double else np.float32)
    cdef const floating[::1] x_flat = np.asarray(x).reshape(-1)
    cdef const floating[::1] W_flat = np.asarray(W).reshape(-1)
    cdef const floating[::1] g_flat = np.asarray(g).reshape(-1)
    cdef floating* gx_ptr = NULL
    cdef floating* gW_ptr = NULL
    cdef floating* gb_ptr = NULL
    cdef floating[::1] flat
    if gx is not None:
        flat = np.asarray(gx).reshape(-1)
        gx_ptr = <floating*>_data(flat)
    if gW is not None:
        flat = np.asarray(gW).reshape(-1)
        gW_ptr = <floating*>_data(flat)
    if gb is not None:
        gb_ptr = <floating*>_data(gb)
    with nogil:
        # As the plan's backward reads the forward's: x position-major, in work.
        swap_axes(_data(x_flat), region(_work(work), &geo, 3), geo.n, geo.c, geo.h * geo.w, False)
        conv_backward_loop(NULL, _data(W_flat), _data(g_flat), _work(work), gx_ptr, True, gW_ptr, True,
                           gb_ptr, True, &geo)
