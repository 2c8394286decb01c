/*
 * The one loop of cedf/_conv.pyx that is not a product: the bias written into each
 * output position (the products are then added to it, BLAS's beta = 1, so that no
 * pass zeroes the output first). The transposes between a batch's layouts are in
 * transpose.h.
 *
 * The pointers are restrict (no buffer here overlaps another), which spares the
 * compiler the run-time overlap test before the vectorised loop; static inline,
 * so that the constant arguments of the callers reach the loop.
 */
#ifndef CEDF_CONV_H
#define CEDF_CONV_H

#include <stddef.h>

#include "transpose.h"

#define CEDF_CONV_LOOPS(T, SUFFIX)                                                               \
    /* a[r, :] = bias[r] for the `rows` rows of `length` numbers of a. */                        \
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
