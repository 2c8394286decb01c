# cython: language_level=3
"""Convolution, compiled: im2col, one GEMM per product, col2im, in the batch-last layout.

The same two kernels as `cedf/reference.py`'s convolution section (read it
first: layout, `cols`, 1-D as 2-D with H = 1), callable from Python, and the
same loops as the plan's operations CONV_FWD and CONV_BWD (`PLAN_OPS`).

Design, for the small batched convolutions people learn with (MNIST-1D's CNN:
100 examples of 40 positions, 25 channels):
- The whole batch is unfolded into one matrix, cols (C kh kw, Ho Wo N), and
  each product is one GEMM over the batch: W (O, C kh kw) @ cols in the
  forward; g cols^T (dW) and W^T g (the unfolded dx) in the backward. One call
  of Ho Wo N columns instead of N calls of Ho Wo: a GEMM of 25 x 75 by 75 x 10,
  one per example, spends most of its time in BLAS's call and packing.
- The columns are ordered (oh, ow, n), the example last, and the loops read x
  and write dx batch-last, (C, H, W, N): a row of cols is then a run of whole
  blocks of N numbers (csrc/conv.h), and the GEMM's product W @ cols is the
  output already batch-last, (O, Ho, Wo, N). Between layers, the plan keeps
  the values and gradients batch-last (`cedf.plan`, `batch_last`): a Conv, a
  ReLU after it, the next Conv, a Flatten at the end transposes once. A buffer
  in the user's layout, channels-first, is transposed into `work` on the way
  in and out of work on the way out (the Python-callable kernels' case).
  Measured here (one BLAS thread, CPU time, the step of benchmarks/conv_step.py):
  1.63x its GEMMs' time with the channels-first unfolding, 1.30x so.
- dx (the GEMM and col2im) is computed only when the input takes a gradient:
  the first convolution reads an Input and skips it, as the first Affine skips dX.
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
    bint x_inner, out_inner   # x (and dx), the output (and its gradient) batch-last


cdef inline void _span(Py_ssize_t j, Py_ssize_t pad, Py_ssize_t stride, Py_ssize_t length, Py_ssize_t out_length,
                       Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """The output positions [lo, hi) whose tap `j` reads inside the input: 0 <= o stride + j - pad < length."""
    cdef Py_ssize_t first = pad - j, last = length - 1 + pad - j
    lo[0] = (first + stride - 1) // stride if first > 0 else 0
    hi[0] = min(out_length, last // stride + 1) if last >= 0 else 0
    if hi[0] < lo[0]:
        hi[0] = lo[0]


cdef extern from "conv.h" nogil:
    void cedf_copy_blocks_f32(float* dst, const float* src, Py_ssize_t blocks, Py_ssize_t block, Py_ssize_t step)
    void cedf_copy_blocks_f64(double* dst, const double* src, Py_ssize_t blocks, Py_ssize_t block,
                              Py_ssize_t step)
    void cedf_add_blocks_f32(float* dst, const float* src, Py_ssize_t blocks, Py_ssize_t block, Py_ssize_t step)
    void cedf_add_blocks_f64(double* dst, const double* src, Py_ssize_t blocks, Py_ssize_t block, Py_ssize_t step)
    void cedf_fill_row_bias_f32(float* a, const float* bias, Py_ssize_t rows, Py_ssize_t length)
    void cedf_fill_row_bias_f64(double* a, const double* bias, Py_ssize_t rows, Py_ssize_t length)
    void cedf_transpose_f32(const float* src, float* dst, Py_ssize_t rows, Py_ssize_t cols, int acc)
    void cedf_transpose_f64(const double* src, double* dst, Py_ssize_t rows, Py_ssize_t cols, int acc)


cdef inline void transpose(const floating* src, floating* dst, Py_ssize_t rows, Py_ssize_t cols,
                           bint acc) noexcept nogil:
    """dst (cols x rows) (+)= src (rows x cols)^T: (N, F) <-> (F, N), a batch in and out of batch-last."""
    if floating is float:
        cedf_transpose_f32(src, dst, rows, cols, acc)
    else:
        cedf_transpose_f64(src, dst, rows, cols, acc)


cdef void im2col(const floating* x, floating* cols, const Geometry* g) noexcept nogil:
    """cols[(c, i, j), (oh, ow, n)] = x[c, oh sh + i - ph, ow sw + j - pw, n] (x batch-last), 0 in the padding."""
    cdef Py_ssize_t c, i, j, oh, ih, lo, hi, a, z, n = g.n, row = g.ho * g.wo * g.n
    cdef floating* dst
    for c in range(g.c):
        for i in range(g.kh):
            for j in range(g.kw):
                _span(j, g.pw, g.sw, g.w, g.wo, &lo, &hi)
                for oh in range(g.ho):
                    dst = cols + ((c * g.kh + i) * g.kw + j) * row + oh * g.wo * n
                    ih = oh * g.sh + i - g.ph
                    a, z = lo, hi
                    if ih < 0 or ih >= g.h:   # a row of padding
                        a = z = 0
                    memset(dst, 0, a * n * sizeof(floating))
                    if z > a:
                        if floating is float:
                            cedf_copy_blocks_f32(dst + a * n, x + ((c * g.h + ih) * g.w + a * g.sw + j - g.pw) * n,
                                                 z - a, n, g.sw * n)
                        else:
                            cedf_copy_blocks_f64(dst + a * n, x + ((c * g.h + ih) * g.w + a * g.sw + j - g.pw) * n,
                                                 z - a, n, g.sw * n)
                    memset(dst + z * n, 0, (g.wo - z) * n * sizeof(floating))


cdef void col2im(const floating* dcols, floating* dx, const Geometry* g) noexcept nogil:
    """dx[c, oh sh + i - ph, ow sw + j - pw, n] += dcols[(c, i, j), (oh, ow, n)] (dx batch-last), padding dropped."""
    cdef Py_ssize_t c, i, j, oh, ih, lo, hi, n = g.n, row = g.ho * g.wo * g.n
    cdef const floating* src
    cdef floating* dst
    for c in range(g.c):
        for i in range(g.kh):
            for j in range(g.kw):
                _span(j, g.pw, g.sw, g.w, g.wo, &lo, &hi)
                if hi <= lo:
                    continue
                for oh in range(g.ho):
                    ih = oh * g.sh + i - g.ph
                    if 0 <= ih < g.h:
                        src = dcols + ((c * g.kh + i) * g.kw + j) * row + (oh * g.wo + lo) * n
                        dst = dx + ((c * g.h + ih) * g.w + lo * g.sw + j - g.pw) * n
                        if floating is float:
                            cedf_add_blocks_f32(dst, src, hi - lo, n, g.sw * n)
                        else:
                            cedf_add_blocks_f64(dst, src, hi - lo, n, g.sw * n)


cdef void conv_forward_loop(const floating* x, const floating* W, const floating* b, floating* out,
                            floating* cols, floating* work, const Geometry* g) noexcept nogil:
    """out = W @ im2col(x) + b, batch-last or through work: see the module's docstring.

    work holds max(C H W, O Ho Wo) N numbers unless x and out are both batch-last.
    """
    cdef Py_ssize_t p = g.ho * g.wo, cols_n = g.n * p, ck = g.c * g.kh * g.kw, image = g.c * g.h * g.w
    cdef floating* dst = out if g.out_inner else work
    if not g.x_inner:
        transpose(x, work, g.n, image, False)
        x = work
    im2col(x, cols, g)
    if g.o == 0 or cols_n == 0:
        return
    # The bias first and the product added to it (beta 1): BLAS then skips the pass that
    # zeroes its output (beta 0), and no second pass adds the bias.
    if floating is float:
        cedf_fill_row_bias_f32(dst, b, g.o, cols_n)
    else:
        cedf_fill_row_bias_f64(dst, b, g.o, cols_n)
    if ck > 0:
        gemm(False, False, <int>g.o, <int>cols_n, <int>ck, 1, W, <int>ck, cols, <int>cols_n, 1, dst, <int>cols_n)
    if not g.out_inner:
        transpose(work, out, g.o * p, g.n, False)


cdef void conv_backward_loop(const floating* W, const floating* g_out, const floating* cols, floating* work,
                             floating* dcols, floating* gx, bint acc_x, floating* gW, bint acc_W,
                             floating* gb, bint acc_b, const Geometry* g) noexcept nogil:
    """gb (+)= the row sums of g (O, Ho Wo N); gW (+)= g cols^T; gx (+)= col2im(W^T g).

    g_out, gx batch-last or through work, as in the forward. gx, gW, gb NULL: not
    wanted (dcols is read only for gx). Sums are taken in double.
    """
    cdef Py_ssize_t o, p = g.ho * g.wo, cols_n = g.n * p, ck = g.c * g.kh * g.kw, image = g.c * g.h * g.w
    cdef double s
    if not g.out_inner:
        transpose(g_out, work, g.n, g.o * p, False)
        g_out = work
    if gb != NULL:
        for o in range(g.o):
            s = long_sum(g_out + o * cols_n, cols_n)
            gb[o] = <floating>(gb[o] + s if acc_b else s)
    if gW != NULL:
        if g.o > 0 and ck > 0 and cols_n > 0:
            gemm(False, True, <int>g.o, <int>ck, <int>cols_n, 1, g_out, <int>cols_n, cols, <int>cols_n,
                 acc_W, gW, <int>ck)
        elif not acc_W:
            memset(gW, 0, g.o * ck * sizeof(floating))
    if gx == NULL:
        return
    cdef bint product = g.o > 0 and ck > 0 and cols_n > 0
    if product:
        gemm(True, False, <int>ck, <int>cols_n, <int>g.o, 1, W, <int>ck, g_out, <int>cols_n, 0, dcols,
             <int>cols_n)
    if g.x_inner:
        if not acc_x:
            memset(gx, 0, g.n * image * sizeof(floating))
        if product:
            col2im(dcols, gx, g)
    else:
        # work (g, batch-last) was read for the last time by the product above.
        memset(work, 0, g.n * image * sizeof(floating))
        if product:
            col2im(dcols, work, g)
        transpose(work, gx, image, g.n, acc_x)


cdef void transpose_op(const Op* op, void** ptr) noexcept nogil:
    """a: src (m, n), dst (n, m); acc: dst. A batch into or out of batch-last (Flatten's)."""
    if op.f64:
        transpose(<double*>arg(op, ptr, 0), <double*>arg(op, ptr, 1), op.m, op.n, op.acc[0])
    else:
        transpose(<float*>arg(op, ptr, 0), <float*>arg(op, ptr, 1), op.m, op.n, op.acc[0])


# -- the plan's operations (cedf/_plan_op.pxd) ------------------------------------------------
# m, n, k = N, C, O; d = H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, and whether x and the output
# are batch-last (1) or channels-first (0).

cdef inline Geometry _op_geometry(const Op* op) noexcept nogil:
    cdef Geometry g
    g.n, g.c, g.o = op.m, op.n, op.k
    g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.ho, g.wo = (op.d[0], op.d[1], op.d[2], op.d[3], op.d[4],
                                                                op.d[5], op.d[6], op.d[7], op.d[8], op.d[9])
    g.x_inner, g.out_inner = op.d[10] != 0, op.d[11] != 0
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


PLAN_OPS = {"CONV_FWD": plan_op(conv_fwd_op), "CONV_BWD": plan_op(conv_bwd_op), "TRANSPOSE": plan_op(transpose_op)}


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


def conv_forward(const floating[:, :, :, ::1] x not None, const floating[:, :, :, ::1] W not None,
                 const floating[::1] b not None, floating[:, :, :, ::1] out not None,
                 floating[:, ::1] cols not None, stride, padding):
    """out = conv(x, W) + b and cols = im2col(x): x (N, C, H, W), W (O, C, kh, kw), b (O,),
    out (N, O, Ho, Wo), cols (C kh kw, Ho Wo N); stride and padding pairs."""
    cdef Geometry g = _geometry("conv_forward", _shape4(x), _shape4(W), stride, padding)
    _expect("conv_forward", "b", (b.shape[0],), (g.o,))
    _expect("conv_forward", "out", _shape4(out), (g.n, g.o, g.ho, g.wo))
    _expect("conv_forward", "cols", (cols.shape[0], cols.shape[1]), (g.c * g.kh * g.kw, g.n * g.ho * g.wo))
    cdef floating[::1] work = np.empty(g.n * max(g.o * g.ho * g.wo, g.c * g.h * g.w),
                                       np.float64 if floating is double else np.float32)
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
        geo.x_inner = geo.out_inner = False
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
    cdef floating[::1] work = np.empty(max(geo.o * cols_n, geo.n * geo.c * geo.h * geo.w), dtype)
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
