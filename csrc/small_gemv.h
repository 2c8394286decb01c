/*
 * y = alpha op(A) x + beta y for a column-major A of m <= CEDF_SMALL_GEMV_M rows
 * (stored with lda = m) and n columns, x and y contiguous: the matrix-vector
 * products of an Affine whose other side is short. Logistic regression on two
 * features is the one the lecture starts with: its forward, (1000 x 2) @ (2 x 1),
 * is gemv 'T' with m = 2, and its weight gradient, x^T @ g, gemv 'N' with m = 2.
 * OpenBLAS's gemv kernels are made for long columns: over 1000 x 2 they took
 * 386-900 ns (dgemv_t 513-900, sgemv_t 477-483, dgemv_n 386-404, sgemv_n
 * 420-428), these loops 86-175 ns ('T' 86-89 in float, 172-175 in double; 'N'
 * 139-143 and 155-157), in C, gcc -O3, the x86-64-v4 clone, 20,000 calls, three
 * runs, on a Zen 5 host.
 *
 * m is made a constant for each case (1 to 8), so that the loops are unrolled
 * over it and vectorised over the n columns. The sums run in the buffer's
 * precision, as BLAS's do, in another order than BLAS's (the 'N' loop keeps
 * eight partial sums per row). As in BLAS, beta = 0 writes y without reading
 * it, so that a NaN left in it does not come through.
 */
#ifndef CEDF_SMALL_GEMV_H
#define CEDF_SMALL_GEMV_H

#include <stddef.h>

#include "pointwise.h"   /* CEDF_MULTIVERSION */

#define CEDF_SMALL_GEMV_M 8

#if defined(__GNUC__)
#define CEDF_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define CEDF_ALWAYS_INLINE static inline
#endif

/* The cases of m = M, untransposed (2 M) and transposed (2 M + 1). */
#define CEDF_SMALL_GEMV_CASES(SFX, M)                                                            \
    case 2 * (M): cedf_small_gemv_n_##SFX(M, n, alpha, a, x, beta, y); break;                    \
    case 2 * (M) + 1: cedf_small_gemv_t_##SFX(M, n, alpha, a, x, beta, y); break;

#define CEDF_SMALL_GEMV(T, SFX)                                                                  \
    /* y[j] = alpha sum_i A[i + j m] x[i] + beta y[j], j < n: a short dot product per column. */ \
    CEDF_ALWAYS_INLINE void cedf_small_gemv_t_##SFX(ptrdiff_t m, ptrdiff_t n, T alpha,          \
                                                    const T *a, const T *x, T beta, T *y)       \
    {                                                                                           \
        T xs[CEDF_SMALL_GEMV_M];                                                                \
        for (ptrdiff_t i = 0; i < m; i++) xs[i] = x[i];                                         \
        for (ptrdiff_t j = 0; j < n; j++) {                                                     \
            T s = 0;                                                                            \
            for (ptrdiff_t i = 0; i < m; i++) s += a[i + j * m] * xs[i];                        \
            y[j] = beta == 0 ? alpha * s : alpha * s + beta * y[j];                             \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    /* y[i] = alpha sum_j A[i + j m] x[j] + beta y[i], i < m: m long sums, eight apiece. */      \
    CEDF_ALWAYS_INLINE void cedf_small_gemv_n_##SFX(ptrdiff_t m, ptrdiff_t n, T alpha,          \
                                                    const T *a, const T *x, T beta, T *y)       \
    {                                                                                           \
        T acc[CEDF_SMALL_GEMV_M][8] = {{0}};                                                    \
        ptrdiff_t j = 0;                                                                        \
        for (; j + 8 <= n; j += 8)                                                              \
            for (ptrdiff_t l = 0; l < 8; l++)                                                   \
                for (ptrdiff_t i = 0; i < m; i++) acc[i][l] += a[i + (j + l) * m] * x[j + l];   \
        for (ptrdiff_t i = 0; i < m; i++) {                                                     \
            T s = ((acc[i][0] + acc[i][1]) + (acc[i][2] + acc[i][3]))                           \
                  + ((acc[i][4] + acc[i][5]) + (acc[i][6] + acc[i][7]));                        \
            for (ptrdiff_t q = j; q < n; q++) s += a[i + q * m] * x[q];                         \
            y[i] = beta == 0 ? alpha * s : alpha * s + beta * y[i];                             \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    /* The two for m = 1 to CEDF_SMALL_GEMV_M, each case with m a constant. */                  \
    CEDF_MULTIVERSION static void cedf_small_gemv_##SFX(int trans, ptrdiff_t m, ptrdiff_t n,    \
                                                        T alpha, const T *a, const T *x, T beta, \
                                                        T *y)                                   \
    {                                                                                           \
        switch (m * 2 + (trans != 0)) {                                                         \
        CEDF_SMALL_GEMV_CASES(SFX, 1) CEDF_SMALL_GEMV_CASES(SFX, 2)                             \
        CEDF_SMALL_GEMV_CASES(SFX, 3) CEDF_SMALL_GEMV_CASES(SFX, 4)                             \
        CEDF_SMALL_GEMV_CASES(SFX, 5) CEDF_SMALL_GEMV_CASES(SFX, 6)                             \
        CEDF_SMALL_GEMV_CASES(SFX, 7) CEDF_SMALL_GEMV_CASES(SFX, 8)                             \
        default: break;   /* the caller passes 1 <= m <= CEDF_SMALL_GEMV_M only */              \
        }                                                                                       \
    }

CEDF_SMALL_GEMV(float, f32)
CEDF_SMALL_GEMV(double, f64)

#endif
