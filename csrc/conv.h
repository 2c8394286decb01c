/*
 * The loops of cedf/_conv.pyx that move numbers: im2col, col2im and the two transposes.
 *
 * A convolution of MNIST-1D's size unfolds 7,500 segments of 5 to 10 numbers per
 * layer, so the cost of entering a loop is most of the cost of the loop: each
 * function here runs the segments of one tap for the whole batch (one row per
 * example), with nothing recomputed between them. The pointers are restrict (the
 * unfolded buffer and the input never overlap), which spares the compiler the
 * run-time overlap test before each vectorised copy; static inline, so that the
 * constant strides the callers pass (1, 2) reach the loops.
 */
#ifndef CEDF_CONV_H
#define CEDF_CONV_H

#include <stddef.h>

/* GCC would turn the short zeroing and copying loops below into a memset or
 * memmove call per run of 5-19 numbers (nine such calls in the forward loop). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#endif

#define CEDF_CONV_LOOPS(T, SUFFIX)                                                               \
    /* For each of `rows` rows: dst[:n] = src[::stride] over [lo, hi), zeros elsewhere (the        \
     * padding); then dst += dst_step, src += src_step. */                                       \
    static inline void cedf_gather_rows_##SUFFIX(T *restrict dst, const T *restrict src,          \
                                                 ptrdiff_t rows, ptrdiff_t dst_step,              \
                                                 ptrdiff_t src_step, ptrdiff_t lo, ptrdiff_t hi,  \
                                                 ptrdiff_t n, ptrdiff_t stride)                   \
    {                                                                                            \
        for (ptrdiff_t r = 0; r < rows; r++, dst += dst_step, src += src_step) {                 \
            for (ptrdiff_t q = 0; q < lo; q++)                                                   \
                dst[q] = 0;                                                                      \
            for (ptrdiff_t q = lo; q < hi; q++)                                                  \
                dst[q] = src[q * stride];                                                        \
            for (ptrdiff_t q = hi; q < n; q++)                                                   \
                dst[q] = 0;                                                                      \
        }                                                                                        \
    }                                                                                            \
    /* For each of `rows` rows: dst[::stride] += src over [lo, hi); then the steps. */            \
    static inline void cedf_scatter_rows_##SUFFIX(T *restrict dst, const T *restrict src,         \
                                                  ptrdiff_t rows, ptrdiff_t dst_step,             \
                                                  ptrdiff_t src_step, ptrdiff_t lo, ptrdiff_t hi, \
                                                  ptrdiff_t stride)                               \
    {                                                                                            \
        for (ptrdiff_t r = 0; r < rows; r++, dst += dst_step, src += src_step)                   \
            for (ptrdiff_t q = lo; q < hi; q++)                                                  \
                dst[q * stride] += src[q];                                                       \
    }                                                                                            \
    /* out[i, o, :] = work[o, i p : (i + 1) p] + b[o]: one GEMM's product over the batch, in the   \
     * value's layout (N, O, P), its bias added in the same pass. */                              \
    static inline void cedf_unbatch_##SUFFIX(const T *restrict work, const T *restrict b,         \
                                             T *restrict out, ptrdiff_t n, ptrdiff_t o,           \
                                             ptrdiff_t p)                                         \
    {                                                                                            \
        for (ptrdiff_t i = 0; i < n; i++)                                                        \
            for (ptrdiff_t c = 0; c < o; c++) {                                                  \
                const T *src = work + (c * n + i) * p;                                           \
                T *dst = out + (i * o + c) * p, bias = b[c];                                     \
                for (ptrdiff_t q = 0; q < p; q++)                                                \
                    dst[q] = src[q] + bias;                                                      \
            }                                                                                    \
    }                                                                                            \
    /* work[o, i p : (i + 1) p] = g[i, o, :]: the gradient (N, O, P) as one matrix (O, N P). */  \
    static inline void cedf_batch_##SUFFIX(const T *restrict g, T *restrict work, ptrdiff_t n,    \
                                           ptrdiff_t o, ptrdiff_t p)                              \
    {                                                                                            \
        for (ptrdiff_t i = 0; i < n; i++)                                                        \
            for (ptrdiff_t c = 0; c < o; c++) {                                                  \
                const T *src = g + (i * o + c) * p;                                              \
                T *dst = work + (c * n + i) * p;                                                 \
                for (ptrdiff_t q = 0; q < p; q++)                                                \
                    dst[q] = src[q];                                                             \
            }                                                                                    \
    }

CEDF_CONV_LOOPS(float, f32)
CEDF_CONV_LOOPS(double, f64)

#undef CEDF_CONV_LOOPS

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#endif
