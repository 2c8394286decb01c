/*
 * The loops of cedf/_conv.pyx that move numbers: the unfolding (im2col) and its
 * inverse (col2im); the transposes between the two layouts of a batch are in
 * transpose.h.
 *
 * The convolutions compute in the batch-last layout, (C, H, W, N): the number of
 * every example at one channel and position side by side. There, a row of the
 * unfolded matrix is a run of whole blocks of N numbers (one per output position),
 * so the unfolding and its inverse copy and add blocks of 100 numbers (MNIST-1D's
 * batch) instead of the 7,500 segments of 5 to 10 numbers per layer that the
 * channels-first layout cuts them into, where entering each loop cost more than
 * its copying. A stride of 1 makes the blocks of one row one run.
 *
 * The pointers are restrict (no buffer here overlaps another), which spares the
 * compiler the run-time overlap test before each vectorised loop; static inline,
 * so that the constant arguments of the callers reach the loops.
 */
#ifndef CEDF_CONV_H
#define CEDF_CONV_H

#include <stddef.h>
#include <string.h>

#include "transpose.h"

#define CEDF_CONV_LOOPS(T, SUFFIX)                                                               \
    /* dst[b block + q] = src[b step + q] for `blocks` blocks of `block` numbers. */              \
    static inline void cedf_copy_blocks_##SUFFIX(T *CEDF_RESTRICT dst, const T *CEDF_RESTRICT src, \
                                                 ptrdiff_t blocks, ptrdiff_t block,               \
                                                 ptrdiff_t step)                                  \
    {                                                                                            \
        if (step == block) {                                                                     \
            memcpy(dst, src, (size_t)(blocks * block) * sizeof(T));                              \
            return;                                                                              \
        }                                                                                        \
        for (ptrdiff_t b = 0; b < blocks; b++)                                                   \
            memcpy(dst + b * block, src + b * step, (size_t)block * sizeof(T));                  \
    }                                                                                            \
    /* dst[b step + q] += src[b block + q] for `blocks` blocks of `block` numbers. */             \
    static inline void cedf_add_blocks_##SUFFIX(T *CEDF_RESTRICT dst, const T *CEDF_RESTRICT src, \
                                                ptrdiff_t blocks, ptrdiff_t block,                \
                                                ptrdiff_t step)                                   \
    {                                                                                            \
        if (step == block) {                                                                     \
            block *= blocks;                                                                     \
            blocks = 1;                                                                          \
        }                                                                                        \
        for (ptrdiff_t b = 0; b < blocks; b++, dst += step, src += block)                        \
            for (ptrdiff_t q = 0; q < block; q++)                                                \
                dst[q] += src[q];                                                                \
    }                                                                                            \
    /* a[r, :] = bias[r] for the `rows` rows of `length` numbers of a: a bias, batch-last. */      \
    static inline void cedf_fill_row_bias_##SUFFIX(T *CEDF_RESTRICT a, const T *CEDF_RESTRICT bias, \
                                                   ptrdiff_t rows, ptrdiff_t length)             \
    {                                                                                            \
        for (ptrdiff_t r = 0; r < rows; r++, a += length) {                                      \
            T v = bias[r];                                                                       \
            for (ptrdiff_t q = 0; q < length; q++)                                               \
                a[q] = v;                                                                        \
        }                                                                                        \
    }

CEDF_CONV_LOOPS(float, f32)
CEDF_CONV_LOOPS(double, f64)

#undef CEDF_CONV_LOOPS

#endif
