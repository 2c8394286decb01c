# cython: language_level=3
"""cedf's one gateway to BLAS.

Every matrix product of the compiled backend goes through `gemm` below, and
the parameter update through `axpy`. They call one of two BLAS libraries:

- NumPy's own (its wheels' OpenBLAS, 64-bit integers), when `cedf.backend`
  found it at import (see csrc/numpy_blas.h): one thread pool with the user's
  NumPy code, and the faster build here;
- otherwise SciPy's, through `scipy.linalg.cython_blas`, which hands us the
  BLAS that SciPy links as plain C function pointers. Both are called without
  the GIL, and neither needs a BLAS found at build time.

BLAS is column-major and cedf's buffers are row-major (C order). A row-major
matrix read as column-major is its transpose, so the row-major product
C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T: the
same call with the operands swapped and m and n exchanged.

A product whose result is a single row or column (logistic regression's one
output, a batch of one) goes to gemv instead: OpenBLAS's gemm packs its
operands for blocking first, which for a 1000 x 2 by 2 x 1 product cost 9 us
here against about 1 us for gemv. A gemv whose matrix has at most eight rows
(column-major: the dot products are that short, or there are that few of them)
runs in loops of our own, csrc/small_gemv.h, not in BLAS.
"""

from cython cimport floating
from libc.stdint cimport int64_t
from scipy.linalg.cython_blas cimport daxpy, dgemm, dgemv, saxpy, sgemm, sgemv


cdef extern from "numpy_blas.h" nogil:
    ctypedef void (*cedf_sgemm64_t)(const char*, const char*, const int64_t*, const int64_t*, const int64_t*,
                                    const float*, const float*, const int64_t*, const float*, const int64_t*,
                                    const float*, float*, const int64_t*) noexcept
    ctypedef void (*cedf_dgemm64_t)(const char*, const char*, const int64_t*, const int64_t*, const int64_t*,
                                    const double*, const double*, const int64_t*, const double*, const int64_t*,
                                    const double*, double*, const int64_t*) noexcept
    ctypedef void (*cedf_sgemv64_t)(const char*, const int64_t*, const int64_t*, const float*, const float*,
                                    const int64_t*, const float*, const int64_t*, const float*, float*,
                                    const int64_t*) noexcept
    ctypedef void (*cedf_dgemv64_t)(const char*, const int64_t*, const int64_t*, const double*, const double*,
                                    const int64_t*, const double*, const int64_t*, const double*, double*,
                                    const int64_t*) noexcept
    ctypedef void (*cedf_saxpy64_t)(const int64_t*, const float*, const float*, const int64_t*, float*,
                                    const int64_t*) noexcept
    ctypedef void (*cedf_daxpy64_t)(const int64_t*, const double*, const double*, const int64_t*, double*,
                                    const int64_t*) noexcept
    ctypedef struct cedf_numpy_blas_t:
        cedf_sgemm64_t sgemm
        cedf_dgemm64_t dgemm
        cedf_sgemv64_t sgemv
        cedf_dgemv64_t dgemv
        cedf_saxpy64_t saxpy
        cedf_daxpy64_t daxpy
    cedf_numpy_blas_t cedf_numpy_blas


cdef inline int use_numpy_blas(addresses) except -1:
    """Call NumPy's BLAS from now on: `addresses` maps sgemm, dgemm, sgemv, dgemv,
    saxpy and daxpy to their function addresses; None goes back to SciPy's."""
    global cedf_numpy_blas
    if addresses is None:
        cedf_numpy_blas.sgemm = cedf_numpy_blas.dgemm = NULL
        cedf_numpy_blas.sgemv = cedf_numpy_blas.dgemv = NULL
        cedf_numpy_blas.saxpy = cedf_numpy_blas.daxpy = NULL
        return 0
    for name in ("sgemm", "dgemm", "sgemv", "dgemv", "saxpy", "daxpy"):
        if not addresses.get(name):
            raise ValueError(f"use_numpy_blas: no address for {name} in {addresses!r}")
    cedf_numpy_blas.sgemm = <cedf_sgemm64_t><size_t>addresses["sgemm"]
    cedf_numpy_blas.dgemm = <cedf_dgemm64_t><size_t>addresses["dgemm"]
    cedf_numpy_blas.sgemv = <cedf_sgemv64_t><size_t>addresses["sgemv"]
    cedf_numpy_blas.dgemv = <cedf_dgemv64_t><size_t>addresses["dgemv"]
    cedf_numpy_blas.saxpy = <cedf_saxpy64_t><size_t>addresses["saxpy"]
    cedf_numpy_blas.daxpy = <cedf_daxpy64_t><size_t>addresses["daxpy"]
    return 0


cdef inline void axpy(Py_ssize_t n, floating alpha, const floating* x, floating* y) noexcept nogil:
    """y += alpha x over n elements (in pieces that fit BLAS's int).

    OpenBLAS splits a long axpy over the threads that the step's products have
    just woken: a parameter update of 200,000 floats took a third of the time of
    cedf's own single-threaded loop here.
    """
    cdef int one = 1, piece
    cdef int64_t one64 = 1, n64 = n
    cdef Py_ssize_t done = 0
    # Each function pointer is read once: another thread may switch the BLAS meanwhile.
    cdef cedf_saxpy64_t saxpy64 = cedf_numpy_blas.saxpy
    cdef cedf_daxpy64_t daxpy64 = cedf_numpy_blas.daxpy
    if floating is float:
        if saxpy64 != NULL:
            saxpy64(&n64, &alpha, x, &one64, y, &one64)
            return
    else:
        if daxpy64 != NULL:
            daxpy64(&n64, &alpha, x, &one64, y, &one64)
            return
    while done < n:
        piece = <int>min(n - done, <Py_ssize_t>0x40000000)
        if floating is float:
            saxpy(&piece, &alpha, <float*>x + done, &one, y + done, &one)
        else:
            daxpy(&piece, &alpha, <double*>x + done, &one, y + done, &one)
        done += piece


cdef extern from "small_gemv.h" nogil:
    int CEDF_SMALL_GEMV_M
    void cedf_small_gemv_f32(int trans, Py_ssize_t m, Py_ssize_t n, float alpha, const float* a,
                             const float* x, float beta, float* y)
    void cedf_small_gemv_f64(int trans, Py_ssize_t m, Py_ssize_t n, double alpha, const double* a,
                             const double* x, double beta, double* y)


cdef inline void gemv(bint trans, int m, int n, floating alpha, const floating* a, int lda,
                      const floating* x, int incx, floating beta, floating* y, int incy) noexcept nogil:
    """Column-major y = alpha * op(A) x + beta * y, A stored m x n with leading dimension lda."""
    cdef char t = b'T' if trans else b'N'
    if 1 <= m <= CEDF_SMALL_GEMV_M and lda == m and incx == 1 and incy == 1:
        # A short side (logistic regression's few features): loops of our own, which took a
        # fifth to two fifths of OpenBLAS's time for 1000 x 2 (csrc/small_gemv.h).
        if floating is float:
            cedf_small_gemv_f32(trans, m, n, alpha, a, x, beta, y)
        else:
            cedf_small_gemv_f64(trans, m, n, alpha, a, x, beta, y)
        return
    cdef int64_t m64 = m, n64 = n, lda64 = lda, incx64 = incx, incy64 = incy
    cdef cedf_sgemv64_t sgemv64 = cedf_numpy_blas.sgemv
    cdef cedf_dgemv64_t dgemv64 = cedf_numpy_blas.dgemv
    if floating is float:
        if sgemv64 != NULL:
            sgemv64(&t, &m64, &n64, &alpha, a, &lda64, x, &incx64, &beta, y, &incy64)
        else:
            sgemv(&t, &m, &n, &alpha, <float*>a, &lda, <float*>x, &incx, &beta, y, &incy)
    else:
        if dgemv64 != NULL:
            dgemv64(&t, &m64, &n64, &alpha, a, &lda64, x, &incx64, &beta, y, &incy64)
        else:
            dgemv(&t, &m, &n, &alpha, <double*>a, &lda, <double*>x, &incx, &beta, y, &incy)


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    """Row-major C (m x n) = alpha * op(A) @ op(B) + beta * C.

    op(A) is m x k and op(B) is k x n; lda, ldb and ldc are the row lengths
    of the arrays as stored. Callers skip empty products: BLAS rejects
    leading dimensions of zero.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if n == 1:
        # C is a column: c = op(A) b, with b the single column of op(B).
        gemv(not trans_a, k if not trans_a else m, m if not trans_a else k, alpha, a, lda,
             b, 1 if trans_b else ldb, beta, c, ldc)
        return
    if m == 1:
        # C is a row: c = op(B)^T a, with a the single row of op(A).
        gemv(trans_b, k if trans_b else n, n if trans_b else k, alpha, b, ldb,
             a, lda if trans_a else 1, beta, c, 1)
        return
    cdef int64_t m64 = m, n64 = n, k64 = k, lda64 = lda, ldb64 = ldb, ldc64 = ldc
    cdef cedf_sgemm64_t sgemm64 = cedf_numpy_blas.sgemm
    cdef cedf_dgemm64_t dgemm64 = cedf_numpy_blas.dgemm
    if floating is float:
        if sgemm64 != NULL:
            sgemm64(&tb, &ta, &n64, &m64, &k64, &alpha, b, &ldb64, a, &lda64, &beta, c, &ldc64)
        else:
            sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        if dgemm64 != NULL:
            dgemm64(&tb, &ta, &n64, &m64, &k64, &alpha, b, &ldb64, a, &lda64, &beta, c, &ldc64)
        else:
            dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)
