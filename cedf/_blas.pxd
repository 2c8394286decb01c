# cython: language_level=3
"""cedf's one gateway to BLAS.

Every matrix product of the compiled backend goes through `gemm` below, and
the parameter update through `axpy`: SciPy's
`cython_blas` hands us the BLAS that SciPy itself links (OpenBLAS in its
wheels) as plain C function pointers, callable without the GIL, so no BLAS
needs to be found at build time.

BLAS is column-major and cedf's buffers are row-major (C order). A row-major
matrix read as column-major is its transpose, so the row-major product
C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T: the
same call with the operands swapped and m and n exchanged.

A product whose result is a single row or column (logistic regression's one
output, a batch of one) goes to gemv instead: OpenBLAS's gemm packs its
operands for blocking first, which for a 1000 x 2 by 2 x 1 product cost 9 us
here against about 1 us for gemv.
"""

from cython cimport floating
from scipy.linalg.cython_blas cimport daxpy, dgemm, dgemv, saxpy, sgemm, sgemv


cdef inline void axpy(Py_ssize_t n, floating alpha, const floating* x, floating* y) noexcept nogil:
    """y += alpha x over n elements (in pieces that fit BLAS's int).

    OpenBLAS splits a long axpy over the threads that the step's products have
    just woken: a parameter update of 200,000 floats took a third of the time of
    cedf's own single-threaded loop here.
    """
    cdef int one = 1, piece
    cdef Py_ssize_t done = 0
    while done < n:
        piece = <int>min(n - done, <Py_ssize_t>0x40000000)
        if floating is float:
            saxpy(&piece, &alpha, <float*>x + done, &one, y + done, &one)
        else:
            daxpy(&piece, &alpha, <double*>x + done, &one, y + done, &one)
        done += piece


cdef inline void gemv(bint trans, int m, int n, floating alpha, const floating* a, int lda,
                      const floating* x, int incx, floating beta, floating* y, int incy) noexcept nogil:
    """Column-major y = alpha * op(A) x + beta * y, A stored m x n with leading dimension lda."""
    cdef char t = b'T' if trans else b'N'
    if floating is float:
        sgemv(&t, &m, &n, &alpha, <float*>a, &lda, <float*>x, &incx, &beta, y, &incy)
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
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb,
              <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb,
              <double*>a, &lda, &beta, c, &ldc)
