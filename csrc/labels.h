/*
 * Labels checked as they are copied into a buffer of cedf's own (see
 * cedf/_loops.pxd, copy_class_labels and copy_binary_labels, for why): every
 * loop here reads the caller's array once per label, branch-free, so that it
 * vectorises (compiled for x86-64-v3 too, CEDF_MULTIVERSION), and only when a
 * label was bad looks for the first one, to name it. Written in Cython, with
 * an early exit and int64 -> float conversions (AVX2 has none), a logistic
 * regression's step (1000 examples, float32) took 3.8 us with int64 labels and
 * 3.0 with float32 ones here; 3.1 with int64 labels and these loops
 * (benchmarks/compare.py, two runs).
 *
 * cedf_class_labels_*: out = y as int64 class indices in [0, c); -1, or the row
 *   of the first label that is not (its value then in out[row] for int64
 *   labels, in *bad_value for float ones).
 * cedf_binary_labels_*: out = y as 0/1 in the loss's float dtype; -1, or the row
 *   of the first label that, so rounded, is not 0 or 1 (its value in *bad_value).
 */
#ifndef CEDF_LABELS_H
#define CEDF_LABELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "pointwise.h"   /* CEDF_MULTIVERSION */

CEDF_MULTIVERSION static ptrdiff_t cedf_class_labels_i64(const int64_t *y, int64_t *out, ptrdiff_t n, ptrdiff_t c,
                                                         double *bad_value)
{
    int bad = 0;
    (void)bad_value;
    for (ptrdiff_t i = 0; i < n; i++) {
        int64_t v = y[i];
        out[i] = v;
        bad |= (uint64_t)v >= (uint64_t)c;   /* a negative label wraps to a huge one */
    }
    if (bad)
        for (ptrdiff_t i = 0; i < n; i++)
            if ((uint64_t)out[i] >= (uint64_t)c) return i;   /* in the copy: what was checked */
    return -1;
}

/* Float labels: whole numbers in [0, c). A bad one is made 0 before its
 * conversion (an out-of-range float to int conversion is undefined in C), and
 * c < 2^31 converts through int32, which AVX2 converts in vectors. */
#define CEDF_FLOAT_CLASS_LABELS(Y, SFX, FLOOR)                                                  \
    CEDF_MULTIVERSION static ptrdiff_t cedf_class_labels_##SFX(const Y *y, int64_t *out, ptrdiff_t n, \
                                                               ptrdiff_t c, double *bad_value)   \
    {                                                                                          \
        int bad = 0;                                                                           \
        const Y top = (Y)c;                                                                    \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            Y v = y[i];                                                                        \
            int ok = (v >= 0) & (v < top) & (v == FLOOR(v));   /* NaN fails every test */       \
            out[i] = (int64_t)(int32_t)(ok ? v : (Y)0);                                        \
            bad |= !ok;                                                                        \
        }                                                                                      \
        if (!bad) return -1;                                                                   \
        /* The row to name, from the caller's array again: only a message depends on it. */    \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            Y v = y[i];                                                                        \
            if (!((v >= 0) & (v < top) & (v == FLOOR(v)))) { *bad_value = v; return i; }       \
        }                                                                                      \
        *bad_value = NAN;   /* changed back meanwhile: the step is refused all the same */     \
        return 0;                                                                              \
    }

CEDF_FLOAT_CLASS_LABELS(float, f32, floorf)
CEDF_FLOAT_CLASS_LABELS(double, f64, floor)

/* 0/1 labels into the loss's dtype T. An int64 label is checked as an integer and
 * written as a select of 0 or 1 (no int64 -> float conversion); a float one is
 * rounded to T and checked after the rounding, as the node checks its labels. */
#define CEDF_BINARY_LABELS(T, TS)                                                              \
    CEDF_MULTIVERSION static ptrdiff_t cedf_binary_labels_i64_##TS(const int64_t *y, T *out, ptrdiff_t n, \
                                                                   double *bad_value)           \
    {                                                                                          \
        int bad = 0;                                                                           \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            int64_t v = y[i];                                                                  \
            out[i] = v == 1 ? (T)1 : (T)0;                                                     \
            bad |= (uint64_t)v > 1;                                                            \
        }                                                                                      \
        if (!bad) return -1;                                                                   \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            int64_t v = y[i];                                                                  \
            if ((uint64_t)v > 1) { *bad_value = (double)(T)v; return i; }                      \
        }                                                                                      \
        *bad_value = NAN;                                                                      \
        return 0;                                                                              \
    }                                                                                          \
                                                                                               \
    CEDF_BINARY_FLOAT_LABELS(float, f32, T, TS)                                                \
    CEDF_BINARY_FLOAT_LABELS(double, f64, T, TS)

#define CEDF_BINARY_FLOAT_LABELS(Y, YS, T, TS)                                                 \
    CEDF_MULTIVERSION static ptrdiff_t cedf_binary_labels_##YS##_##TS(const Y *y, T *out, ptrdiff_t n, \
                                                                      double *bad_value)        \
    {                                                                                          \
        int bad = 0;                                                                           \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            T v = (T)y[i];                                                                     \
            out[i] = v;                                                                        \
            bad |= (v != 0) & (v != 1);                                                        \
        }                                                                                      \
        if (!bad) return -1;                                                                   \
        for (ptrdiff_t i = 0; i < n; i++)                                                      \
            if (out[i] != 0 && out[i] != 1) { *bad_value = out[i]; return i; }                 \
        return -1;                                                                             \
    }

CEDF_BINARY_LABELS(float, f32)
CEDF_BINARY_LABELS(double, f64)

#endif
