/*
 * The inner loops of im2col and col2im (cedf/_conv.pyx): one row segment each.
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
    }

CEDF_CONV_LOOPS(float, f32)
CEDF_CONV_LOOPS(double, f64)

#undef CEDF_CONV_LOOPS

#endif
