# cython: language_level=3
"""cedf's one gateway to BLAS.

Every matrix product of the compiled backend goes through `gemm` below: SciPy's
`cython_blas` hands us the BLAS that SciPy itself links (OpenBLAS in its
wheels) as plain C function pointers, callable without the GIL, so no BLAS
needs to be found at build time.

BLAS is column-major and cedf's buffers are row-major (C order). A row-major
matrix read as column-major is its transpose, so the row-major product
C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T: the
same call with the operands swapped and m and n exchanged.
"""

from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


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
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb,
              <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb,
              <double*>a, &lda, &beta, c, &ldc)
