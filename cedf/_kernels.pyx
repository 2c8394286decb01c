"""The compiled backend: cedf's kernels as Cython loops over C-contiguous buffers.

Same functions, same signatures and same contract as `cedf/reference.py` (read
its docstring first): forward kernels write `out`, backward kernels add into the
gradient buffers they are given and skip those given as None.

Design:
- One function per kernel, fused over float32 and float64 (`floating`), so
  there is one loop to read and no copy per dtype.
- The maths of one element lives in small C functions in `csrc/pointwise.h`,
  computed in double; the loops here only walk the buffers.
- Matrix products go to BLAS through `cedf/_blas.pxd`, with `beta = 1` so
  that a bias prefilled into `out`, or a gradient accumulated in place, costs
  no extra pass.
- Every shape is checked with the GIL held before the loop starts; the loops
  themselves run without the GIL and without bounds checks (the build turns
  those on for the checked CI run: CEDF_CHECKED=1).
"""
from cython cimport floating
from libc.limits cimport INT_MAX
from libc.math cimport exp, log
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from cedf._blas cimport gemm

cdef extern from "pointwise.h" nogil:
    double cedf_sigmoid(double x)
    double cedf_sigmoid_grad(double s, double g)
    double cedf_bce(double p, double y)
    double cedf_bce_grad(double p, double y, double g)
    double CEDF_SOFTMAX_FLOOR


cdef int _expect(str kernel, str name, tuple got, tuple expected) except -1:
    if got != expected:
        raise ValueError(f"{kernel}: {name} has shape {got}, expected {expected}")
    return 0


cdef int _blas_size(str kernel, Py_ssize_t n) except -1:
    # BLAS takes 32-bit int dimensions; refuse rather than wrap around.
    if n > INT_MAX:
        raise ValueError(f"{kernel}: dimension {n} exceeds the BLAS limit {INT_MAX}")
    return <int>n


def affine_forward(const floating[:, ::1] x, const floating[:, ::1] A,
                   const floating[::1] b, floating[:, ::1] out):
    """out = x @ A + b, with x of shape (B, nIn), A (nIn, nOut), b (nOut,)."""
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = A.shape[1], i, j
    _expect("affine_forward", "A", (A.shape[0], n_out), (n_in, n_out))
    _expect("affine_forward", "b", (b.shape[0],), (n_out,))
    _expect("affine_forward", "out", (out.shape[0], out.shape[1]), (n, n_out))
    cdef int m_ = _blas_size("affine_forward", n)
    cdef int k_ = _blas_size("affine_forward", n_in)
    cdef int n_ = _blas_size("affine_forward", n_out)
    with nogil:
        for i in range(n):
            for j in range(n_out):
                out[i, j] = b[j]
        if m_ > 0 and n_ > 0 and k_ > 0:
            gemm(False, False, m_, n_, k_, 1, &x[0, 0], k_, &A[0, 0], n_,
                 1, &out[0, 0], n_)


def affine_backward(const floating[:, ::1] x, const floating[:, ::1] A,
                    const floating[:, ::1] g, floating[:, ::1] gx,
                    floating[:, ::1] gA, floating[::1] gb):
    """Given g = dL/dout: gx += g A^T, gA += x^T g, gb += sum_i g_i (None skips)."""
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = A.shape[1], i, j
    _expect("affine_backward", "A", (A.shape[0], n_out), (n_in, n_out))
    _expect("affine_backward", "g", (g.shape[0], g.shape[1]), (n, n_out))
    if gx is not None:
        _expect("affine_backward", "gx", (gx.shape[0], gx.shape[1]), (n, n_in))
    if gA is not None:
        _expect("affine_backward", "gA", (gA.shape[0], gA.shape[1]), (n_in, n_out))
    if gb is not None:
        _expect("affine_backward", "gb", (gb.shape[0],), (n_out,))
    cdef int m_ = _blas_size("affine_backward", n)
    cdef int k_ = _blas_size("affine_backward", n_in)
    cdef int n_ = _blas_size("affine_backward", n_out)
    cdef bint nonempty = m_ > 0 and n_ > 0 and k_ > 0
    with nogil:
        if gx is not None and nonempty:
            gemm(False, True, m_, k_, n_, 1, &g[0, 0], n_, &A[0, 0], n_,
                 1, &gx[0, 0], k_)
        if gA is not None and nonempty:
            gemm(True, False, k_, n_, m_, 1, &x[0, 0], k_, &g[0, 0], n_,
                 1, &gA[0, 0], n_)
        if gb is not None:
            for i in range(n):
                for j in range(n_out):
                    gb[j] += g[i, j]


def sigmoid_forward(const floating[::1] x, floating[::1] out):
    """out = 1 / (1 + exp(-clip(x, -10, 10))), elementwise over flat buffers."""
    cdef Py_ssize_t n = x.shape[0], i
    _expect("sigmoid_forward", "out", (out.shape[0],), (n,))
    with nogil:
        for i in range(n):
            out[i] = <floating>cedf_sigmoid(x[i])


def sigmoid_backward(const floating[::1] s, const floating[::1] g, floating[::1] gx):
    """gx += g * s * (1 - s), with s the forward output."""
    cdef Py_ssize_t n = s.shape[0], i
    _expect("sigmoid_backward", "g", (g.shape[0],), (n,))
    _expect("sigmoid_backward", "gx", (gx.shape[0],), (n,))
    with nogil:
        for i in range(n):
            gx[i] += <floating>cedf_sigmoid_grad(s[i], g[i])


def softmax_forward(const floating[:, ::1] x, floating[:, ::1] out):
    """Row-wise softmax of x (B, C): shift by the row max, floor at -10, exponentiate, normalise."""
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], i, j
    cdef double top, shifted, total
    cdef double* e
    _expect("softmax_forward", "out", (out.shape[0], out.shape[1]), (n, c))
    if n > 0 and c == 0:
        raise ValueError("softmax_forward: x has no columns")
    # The exponentials of a row are kept in double and divided before the one
    # rounding to the buffer's dtype: a probability near 1 rounded twice can
    # be one float32 step off, and 1 - p, which the backward pass uses, would
    # then be off by up to 1e-3 relative.
    e = <double*>malloc(max(c, 1) * sizeof(double))
    if e == NULL:
        raise MemoryError()
    with nogil:
        for i in range(n):
            top = x[i, 0]
            for j in range(1, c):
                if x[i, j] > top:
                    top = x[i, j]
            total = 0
            for j in range(c):
                shifted = x[i, j] - top
                if shifted < CEDF_SOFTMAX_FLOOR:
                    shifted = CEDF_SOFTMAX_FLOOR
                e[j] = exp(shifted)
                total += e[j]
            for j in range(c):
                out[i, j] = <floating>(e[j] / total)
    free(e)


def softmax_backward(const floating[:, ::1] p, const floating[:, ::1] g, floating[:, ::1] gx):
    """gx += p * (g - sum_j p_j g_j) per row, with p the forward output."""
    cdef Py_ssize_t n = p.shape[0], c = p.shape[1], i, j
    cdef double dot
    _expect("softmax_backward", "g", (g.shape[0], g.shape[1]), (n, c))
    _expect("softmax_backward", "gx", (gx.shape[0], gx.shape[1]), (n, c))
    with nogil:
        for i in range(n):
            dot = 0
            for j in range(c):
                dot += p[i, j] * g[i, j]
            for j in range(c):
                gx[i, j] += <floating>(p[i, j] * (g[i, j] - dot))


cdef int _check_labels(str kernel, const int64_t[::1] labels, Py_ssize_t n, Py_ssize_t c) except -1:
    # The loops index p[i, labels[i]] unchecked: every label must be in range first.
    cdef Py_ssize_t i
    _expect(kernel, "labels", (labels.shape[0],), (n,))
    for i in range(n):
        if labels[i] < 0 or labels[i] >= c:
            raise ValueError(f"{kernel}: label {labels[i]} at row {i} is outside [0, {c})")
    return 0


def cross_entropy_forward(const floating[:, ::1] p, const int64_t[::1] labels, floating[::1] out):
    """out_i = -log p[i, labels_i] for probabilities p (B, C) and int64 labels (B,)."""
    cdef Py_ssize_t n = p.shape[0], i
    _check_labels("cross_entropy_forward", labels, n, p.shape[1])
    _expect("cross_entropy_forward", "out", (out.shape[0],), (n,))
    with nogil:
        for i in range(n):
            out[i] = <floating>(-log(p[i, labels[i]]))


def cross_entropy_backward(const floating[:, ::1] p, const int64_t[::1] labels,
                           const floating[::1] g, floating[:, ::1] gp):
    """gp[i, labels_i] += -g_i / p[i, labels_i]; every other entry of row i gets nothing."""
    cdef Py_ssize_t n = p.shape[0], i, k
    _check_labels("cross_entropy_backward", labels, n, p.shape[1])
    _expect("cross_entropy_backward", "g", (g.shape[0],), (n,))
    _expect("cross_entropy_backward", "gp", (gp.shape[0], gp.shape[1]), (n, p.shape[1]))
    with nogil:
        for i in range(n):
            k = labels[i]
            gp[i, k] += <floating>(-g[i] / <double>p[i, k])


def bce_forward(const floating[::1] p, const floating[::1] y, floating[::1] out):
    """out_i = -y_i log p_i - (1 - y_i) log(1 - p_i) for hard labels y_i in {0, 1}."""
    cdef Py_ssize_t n = p.shape[0], i
    _expect("bce_forward", "y", (y.shape[0],), (n,))
    _expect("bce_forward", "out", (out.shape[0],), (n,))
    with nogil:
        for i in range(n):
            out[i] = <floating>cedf_bce(p[i], y[i])


def bce_backward(const floating[::1] p, const floating[::1] y, const floating[::1] g,
                 floating[::1] gp):
    """gp_i += g_i * (p_i - y_i) / (p_i (1 - p_i)), branch by branch as in the forward."""
    cdef Py_ssize_t n = p.shape[0], i
    _expect("bce_backward", "y", (y.shape[0],), (n,))
    _expect("bce_backward", "g", (g.shape[0],), (n,))
    _expect("bce_backward", "gp", (gp.shape[0],), (n,))
    with nogil:
        for i in range(n):
            gp[i] += <floating>cedf_bce_grad(p[i], y[i], g[i])
