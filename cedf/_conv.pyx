# cython: language_level=3
"""Convolution, compiled: im2col, one GEMM per product, col2im.

The same two kernels as `cedf/reference.py`'s convolution section (read it
first: layout, `cols`, 1-D as 2-D with H = 1), callable from Python, and the
same loops as the plan's operations CONV_FWD and CONV_BWD (`PLAN_OPS`).

Design, for the small batched convolutions people learn with (MNIST-1D's CNN:
100 examples of 40 positions, 25 channels):
- The whole batch is unfolded into one matrix, cols (C kh kw, N Ho Wo), and
  each product is one GEMM over the batch: W (O, C kh kw) @ cols in the
  forward; g cols^T (dW) and W^T g (the unfolded dx) in the backward. One call
  of N Ho Wo columns instead of N calls of Ho Wo: a GEMM of 25 x 75 by 75 x 10,
  one per example, spends most of its time in BLAS's call and packing.
- The price of one GEMM over the batch is its layout, (O, N, Ho Wo) where the
  value is (N, O, Ho Wo): the forward transposes it into the value in the pass
  that adds the bias (which a pass over the value costs anyway), and the
  backward transposes g once into (O, N Ho Wo), in the pass that sums the bias
  gradient; that one copy serves both backward products.
- dx (the scatter-add col2im, and the GEMM before it) is computed only when
  the input takes a gradient: the first convolution reads an Input, and skips
  it entirely, as the first Affine skips dX.
- The unfolding and its inverse move a tap's row of cols for the whole batch
  in one C call (csrc/conv.h): at MNIST-1D's sizes a row is 100 segments of 5
  to 10 numbers, and entering a loop per segment cost more than the copying.
  Measured here (one thread, CPU time, the step of benchmarks/conv_step.py):
  439 us per step with a loop per segment, 391 us so; the GEMMs alone 230 us.
- The scratch of the Python-callable kernels is allocated per call; the
  plan's operations use buffers the node allocated once (`cedf.conv`).

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


cdef inline void _span(Py_ssize_t j, Py_ssize_t pad, Py_ssize_t stride, Py_ssize_t length, Py_ssize_t out_length,
                       Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """The output positions [lo, hi) whose tap `j` reads inside the input: 0 <= o stride + j - pad < length."""
    cdef Py_ssize_t first = pad - j, last = length - 1 + pad - j
    lo[0] = (first + stride - 1) // stride if first > 0 else 0
    hi[0] = min(out_length, last // stride + 1) if last >= 0 else 0
    if hi[0] < lo[0]:
        hi[0] = lo[0]


cdef extern from "conv.h" nogil:
    void cedf_gather_rows_f32(float* dst, const float* src, Py_ssize_t rows, Py_ssize_t dst_step,
                              Py_ssize_t src_step, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t n, Py_ssize_t stride)
    void cedf_gather_rows_f64(double* dst, const double* src, Py_ssize_t rows, Py_ssize_t dst_step,
                              Py_ssize_t src_step, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t n, Py_ssize_t stride)
    void cedf_scatter_rows_f32(float* dst, const float* src, Py_ssize_t rows, Py_ssize_t dst_step,
                               Py_ssize_t src_step, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t stride)
    void cedf_scatter_rows_f64(double* dst, const double* src, Py_ssize_t rows, Py_ssize_t dst_step,
                               Py_ssize_t src_step, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t stride)
    void cedf_unbatch_f32(const float* work, const float* b, float* out, Py_ssize_t n, Py_ssize_t o, Py_ssize_t p)
    void cedf_unbatch_f64(const double* work, const double* b, double* out, Py_ssize_t n, Py_ssize_t o,
                          Py_ssize_t p)
    void cedf_batch_f32(const float* g, float* work, Py_ssize_t n, Py_ssize_t o, Py_ssize_t p)
    void cedf_batch_f64(const double* g, double* work, Py_ssize_t n, Py_ssize_t o, Py_ssize_t p)


cdef inline void _gather(floating* dst, const floating* src, Py_ssize_t rows, Py_ssize_t dst_step,
                         Py_ssize_t src_step, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t n,
                         Py_ssize_t stride) noexcept nogil:
    # Constant strides, so that the compiler vectorises the copy (1-D MNIST's stride 2 included).
    if floating is float:
        if stride == 1:
            cedf_gather_rows_f32(dst, src, rows, dst_step, src_step, lo, hi, n, 1)
        elif stride == 2:
            cedf_gather_rows_f32(dst, src, rows, dst_step, src_step, lo, hi, n, 2)
        else:
            cedf_gather_rows_f32(dst, src, rows, dst_step, src_step, lo, hi, n, stride)
    else:
        if stride == 1:
            cedf_gather_rows_f64(dst, src, rows, dst_step, src_step, lo, hi, n, 1)
        elif stride == 2:
            cedf_gather_rows_f64(dst, src, rows, dst_step, src_step, lo, hi, n, 2)
        else:
            cedf_gather_rows_f64(dst, src, rows, dst_step, src_step, lo, hi, n, stride)


cdef inline void _scatter(floating* dst, const floating* src, Py_ssize_t rows, Py_ssize_t dst_step,
                          Py_ssize_t src_step, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t stride) noexcept nogil:
    if floating is float:
        if stride == 1:
            cedf_scatter_rows_f32(dst, src, rows, dst_step, src_step, lo, hi, 1)
        elif stride == 2:
            cedf_scatter_rows_f32(dst, src, rows, dst_step, src_step, lo, hi, 2)
        else:
            cedf_scatter_rows_f32(dst, src, rows, dst_step, src_step, lo, hi, stride)
    else:
        if stride == 1:
            cedf_scatter_rows_f64(dst, src, rows, dst_step, src_step, lo, hi, 1)
        elif stride == 2:
            cedf_scatter_rows_f64(dst, src, rows, dst_step, src_step, lo, hi, 2)
        else:
            cedf_scatter_rows_f64(dst, src, rows, dst_step, src_step, lo, hi, stride)


cdef void im2col(const floating* x, floating* cols, const Geometry* g) noexcept nogil:
    """cols[(c, i, j), (n, oh, ow)] = x[n, c, oh sh + i - ph, ow sw + j - pw], 0 in the padding.

    Tap by tap and output row by output row, each call covers the whole batch (csrc/conv.h).
    """
    cdef Py_ssize_t c, i, j, oh, ih, lo, hi, p = g.ho * g.wo, cols_n = g.n * p, image = g.c * g.h * g.w
    cdef floating* dst
    for c in range(g.c):
        for i in range(g.kh):
            for j in range(g.kw):
                _span(j, g.pw, g.sw, g.w, g.wo, &lo, &hi)
                for oh in range(g.ho):
                    dst = cols + ((c * g.kh + i) * g.kw + j) * cols_n + oh * g.wo
                    ih = oh * g.sh + i - g.ph
                    if ih < 0 or ih >= g.h:   # a row of padding
                        _gather(dst, x, g.n, p, 0, 0, 0, g.wo, 1)
                    else:
                        _gather(dst, x + (c * g.h + ih) * g.w + j - g.pw, g.n, p, image, lo, hi, g.wo, g.sw)


cdef void col2im(const floating* dcols, floating* gx, const Geometry* g) noexcept nogil:
    """gx[n, c, oh sh + i - ph, ow sw + j - pw] += dcols[(c, i, j), (n, oh, ow)], padding dropped."""
    cdef Py_ssize_t c, i, j, oh, ih, lo, hi, p = g.ho * g.wo, cols_n = g.n * p, image = g.c * g.h * g.w
    for c in range(g.c):
        for i in range(g.kh):
            for j in range(g.kw):
                _span(j, g.pw, g.sw, g.w, g.wo, &lo, &hi)
                for oh in range(g.ho):
                    ih = oh * g.sh + i - g.ph
                    if 0 <= ih < g.h:
                        _scatter(gx + (c * g.h + ih) * g.w + j - g.pw,
                                 dcols + ((c * g.kh + i) * g.kw + j) * cols_n + oh * g.wo,
                                 g.n, image, p, lo, hi, g.sw)


cdef void conv_forward_loop(const floating* x, const floating* W, const floating* b, floating* out,
                            floating* cols, floating* work, const Geometry* g) noexcept nogil:
    """out = W @ im2col(x) + b, through work (O, N Ho Wo), transposed into out (N, O, Ho Wo)."""
    cdef Py_ssize_t p = g.ho * g.wo, cols_n = g.n * p, ck = g.c * g.kh * g.kw
    im2col(x, cols, g)
    if g.o == 0 or cols_n == 0:
        return
    if ck > 0:
        gemm(False, False, <int>g.o, <int>cols_n, <int>ck, 1, W, <int>ck, cols, <int>cols_n, 0, work, <int>cols_n)
    else:
        memset(work, 0, g.o * cols_n * sizeof(floating))
    if floating is float:
        cedf_unbatch_f32(work, b, out, g.n, g.o, p)
    else:
        cedf_unbatch_f64(work, b, out, g.n, g.o, p)


cdef void conv_backward_loop(const floating* W, const floating* g_out, const floating* cols, floating* work,
                             floating* dcols, floating* gx, bint acc_x, floating* gW, bint acc_W,
                             floating* gb, bint acc_b, const Geometry* g) noexcept nogil:
    """work = g_out as (O, N Ho Wo); gb (+)= its row sums; gW (+)= work cols^T; gx (+)= col2im(W^T work).

    gx, gW, gb NULL: not wanted (dcols is read only for gx). Sums are taken in double.
    """
    cdef Py_ssize_t o, p = g.ho * g.wo, cols_n = g.n * p, ck = g.c * g.kh * g.kw
    cdef double s
    if floating is float:
        cedf_batch_f32(g_out, work, g.n, g.o, p)
    else:
        cedf_batch_f64(g_out, work, g.n, g.o, p)
    if gb != NULL:
        for o in range(g.o):
            s = long_sum(work + o * cols_n, cols_n)
            gb[o] = <floating>(gb[o] + s if acc_b else s)
    if gW != NULL:
        if g.o > 0 and ck > 0 and cols_n > 0:
            gemm(False, True, <int>g.o, <int>ck, <int>cols_n, 1, work, <int>cols_n, cols, <int>cols_n,
                 acc_W, gW, <int>ck)
        elif not acc_W:
            memset(gW, 0, g.o * ck * sizeof(floating))
    if gx != NULL:
        if not acc_x:
            memset(gx, 0, g.n * g.c * g.h * g.w * sizeof(floating))
        if g.o > 0 and ck > 0 and cols_n > 0:
            gemm(True, False, <int>ck, <int>cols_n, <int>g.o, 1, W, <int>ck, work, <int>cols_n, 0, dcols,
                 <int>cols_n)
            col2im(dcols, gx, g)


# -- the plan's operations (cedf/_plan_op.pxd) ------------------------------------------------
# m, n, k = N, C, O; d = H, W, kh, kw, sh, sw, ph, pw, Ho, Wo.

cdef inline Geometry _op_geometry(const Op* op) noexcept nogil:
    cdef Geometry g
    g.n, g.c, g.o = op.m, op.n, op.k
    g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.ho, g.wo = (op.d[0], op.d[1], op.d[2], op.d[3], op.d[4],
                                                                op.d[5], op.d[6], op.d[7], op.d[8], op.d[9])
    return g


cdef void conv_fwd_op(const Op* op, void** ptr) noexcept nogil:
    """a: x, W, b, out, cols, work."""
    cdef Geometry g = _op_geometry(op)
    if op.f64:
        conv_forward_loop(<double*>arg(op, ptr, 0), <double*>arg(op, ptr, 1), <double*>arg(op, ptr, 2),
                          <double*>arg(op, ptr, 3), <double*>arg(op, ptr, 4), <double*>arg(op, ptr, 5), &g)
    else:
        conv_forward_loop(<float*>arg(op, ptr, 0), <float*>arg(op, ptr, 1), <float*>arg(op, ptr, 2),
                          <float*>arg(op, ptr, 3), <float*>arg(op, ptr, 4), <float*>arg(op, ptr, 5), &g)


cdef void conv_bwd_op(const Op* op, void** ptr) noexcept nogil:
    """a: W, g, cols, work, dcols, gx, gW, gb; acc: gx, gW, gb."""
    cdef Geometry g = _op_geometry(op)
    if op.f64:
        conv_backward_loop(<double*>arg(op, ptr, 0), <double*>arg(op, ptr, 1), <double*>arg(op, ptr, 2),
                           <double*>arg(op, ptr, 3), <double*>arg(op, ptr, 4), <double*>arg(op, ptr, 5),
                           op.acc[0], <double*>arg(op, ptr, 6), op.acc[1], <double*>arg(op, ptr, 7), op.acc[2], &g)
    else:
        conv_backward_loop(<float*>arg(op, ptr, 0), <float*>arg(op, ptr, 1), <float*>arg(op, ptr, 2),
                           <float*>arg(op, ptr, 3), <float*>arg(op, ptr, 4), <float*>arg(op, ptr, 5),
                           op.acc[0], <float*>arg(op, ptr, 6), op.acc[1], <float*>arg(op, ptr, 7), op.acc[2], &g)


PLAN_OPS = {"CONV_FWD": plan_op(conv_fwd_op), "CONV_BWD": plan_op(conv_bwd_op)}


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
    return g


cdef inline const floating* _data(const floating[::1] flat) noexcept nogil:
    return &flat[0] if flat.shape[0] else NULL


cdef inline tuple _shape4(const floating[:, :, :, ::1] a):
    return (a.shape[0], a.shape[1], a.shape[2], a.shape[3])


def conv_forward(const floating[:, :, :, ::1] x not None, const floating[:, :, :, ::1] W not None,
                 const floating[::1] b not None, floating[:, :, :, ::1] out not None,
                 floating[:, ::1] cols not None, stride, padding):
    """out = conv(x, W) + b and cols = im2col(x): x (N, C, H, W), W (O, C, kh, kw), b (O,),
    out (N, O, Ho, Wo), cols (C kh kw, N Ho Wo); stride and padding pairs."""
    cdef Geometry g = _geometry("conv_forward", _shape4(x), _shape4(W), stride, padding)
    _expect("conv_forward", "b", (b.shape[0],), (g.o,))
    _expect("conv_forward", "out", _shape4(out), (g.n, g.o, g.ho, g.wo))
    _expect("conv_forward", "cols", (cols.shape[0], cols.shape[1]), (g.c * g.kh * g.kw, g.n * g.ho * g.wo))
    cdef floating[::1] work = np.empty(g.o * g.n * g.ho * g.wo, np.float64 if floating is double else np.float32)
    cdef floating[::1] out_flat = np.asarray(out).reshape(-1)
    cdef floating[::1] cols_flat = np.asarray(cols).reshape(-1)
    cdef const floating[::1] x_flat = np.asarray(x).reshape(-1)
    cdef const floating[::1] W_flat = np.asarray(W).reshape(-1)
    with nogil:
        conv_forward_loop(_data(x_flat), _data(W_flat), _data(b), <floating*>_data(out_flat),
                          <floating*>_data(cols_flat), <floating*>_data(work), &g)


def conv_backward(const floating[:, ::1] cols not None, const floating[:, :, :, ::1] W not None,
                  const floating[:, :, :, ::1] g not None, floating[:, :, :, ::1] gx,
                  floating[:, :, :, ::1] gW, floating[::1] gb, stride, padding):
    """Given g = dL/dout (N, O, Ho, Wo) and the forward's cols: gW += g cols^T, gb += sums of g,
    gx += col2im(W^T g) (None skips; gx's shape is x's, (N, C, H, W))."""
    cdef Geometry geo
    if gx is not None:
        geo = _geometry("conv_backward", _shape4(gx), _shape4(W), stride, padding)
    else:
        # Nothing is scattered back into x: its size is not needed, only g's.
        _pair("conv_backward", "stride", stride, 1)
        _pair("conv_backward", "padding", padding, 0)
        geo.n, geo.o, geo.c, geo.kh, geo.kw = g.shape[0], W.shape[0], W.shape[1], W.shape[2], W.shape[3]
        geo.ho, geo.wo = g.shape[2], g.shape[3]
        geo.h = geo.w = geo.ph = geo.pw = 0
        geo.sh = geo.sw = 1
        _blas_size("conv_backward", geo.n * geo.ho * geo.wo)
        _blas_size("conv_backward", geo.c * geo.kh * geo.kw)
    cdef Py_ssize_t ck = geo.c * geo.kh * geo.kw, cols_n = geo.n * geo.ho * geo.wo
    _expect("conv_backward", "g", _shape4(g), (geo.n, geo.o, geo.ho, geo.wo))
    _expect("conv_backward", "cols", (cols.shape[0], cols.shape[1]), (ck, cols_n))
    if gW is not None:
        _expect("conv_backward", "gW", _shape4(gW), _shape4(W))
    if gb is not None:
        _expect("conv_backward", "gb", (gb.shape[0],), (geo.o,))
    dtype = np.float64 if floating is double else np.float32
    cdef floating[::1] work = np.empty(geo.o * cols_n, dtype)
    cdef floating[::1] dcols = np.empty(ck * cols_n if gx is not None else 0, dtype)
    cdef const floating[::1] cols_flat = np.asarray(cols).reshape(-1)
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
        conv_backward_loop(_data(W_flat), _data(g_flat), _data(cols_flat), <floating*>_data(work),
                           <floating*>_data(dcols), gx_ptr, True, gW_ptr, True, gb_ptr, True, &geo)
