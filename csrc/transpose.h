/*
 * The 2-D transpose of a row-major matrix, dst (cols x rows) = src (rows x cols), or
 * dst += src^T: the moves between a batch's two layouts (cedf/_conv.pyx: a convolution's
 * channels-first input and output, a Flatten of a batch-last chain) and an Affine's
 * weights turned for its backward (cedf/_loops.pxd, affine_backward), whose g @ A^T
 * then runs as an untransposed product.
 */
#ifndef CEDF_TRANSPOSE_H
#define CEDF_TRANSPOSE_H

#include <stddef.h>

#include "restrict.h"

#define CEDF_TRANSPOSE_SCALAR(T, SUFFIX)                                                         \
    /* dst (cols x rows, rows ld apart) = src (rows x cols, rows ls apart) transposed, or +=     \
     * when acc. In tiles of 16 x 16,                                                           \
     * which both matrices' cache lines hold while a tile is moved. Without vectors: compilers    \
     * do not vectorise it (the AVX blocks below replace it where they can). */                   \
    static inline void cedf_transpose_scalar_##SUFFIX(const T *CEDF_RESTRICT src, ptrdiff_t ls,   \
                                                      T *CEDF_RESTRICT dst, ptrdiff_t ld,        \
                                                      ptrdiff_t rows, ptrdiff_t cols, int acc)   \
    {                                                                                            \
        enum { TILE = 16 };                                                                      \
        for (ptrdiff_t i0 = 0; i0 < rows; i0 += TILE) {                                          \
            ptrdiff_t i1 = i0 + TILE < rows ? i0 + TILE : rows;                                  \
            for (ptrdiff_t j0 = 0; j0 < cols; j0 += TILE) {                                      \
                ptrdiff_t j1 = j0 + TILE < cols ? j0 + TILE : cols;                              \
                for (ptrdiff_t j = j0; j < j1; j++) {                                            \
                    T *d = dst + j * ld;                                                         \
                    const T *s = src + j;                                                        \
                    if (acc)                                                                     \
                        for (ptrdiff_t i = i0; i < i1; i++)                                      \
                            d[i] += s[i * ls];                                                   \
                    else                                                                         \
                        for (ptrdiff_t i = i0; i < i1; i++)                                      \
                            d[i] = s[i * ls];                                                    \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }

CEDF_TRANSPOSE_SCALAR(float, f32)
CEDF_TRANSPOSE_SCALAR(double, f64)
#undef CEDF_TRANSPOSE_SCALAR

/*
 * The transposes with AVX, where the CPU has it (checked per call: a load and a test):
 * square blocks (8 x 8 floats, 4 x 4 doubles) moved through registers by the usual
 * unpack and shuffle sequence, rows read and written whole; the edges left over by
 * the scalar loop. Measured on this machine's EPYC (C, gcc -O3, best of 20 runs of
 * 200, one run): a (125, 100) float batch, the Flatten of the MNIST-1D CNN, 1.75 us
 * against 8.09 us in tiles of scalars (doubles 2.44 against 8.55), (40, 100) floats
 * 0.64 against 4.59 us.
 */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define CEDF_AVX __attribute__((target("avx")))

CEDF_AVX static inline __m256 cedf_avx_acc_ps(__m256 v, const float *d, int acc)
{
    return acc ? _mm256_add_ps(v, _mm256_loadu_ps(d)) : v;
}

CEDF_AVX static inline __m256d cedf_avx_acc_pd(__m256d v, const double *d, int acc)
{
    return acc ? _mm256_add_pd(v, _mm256_loadu_pd(d)) : v;
}

/* d[c * ld + r] (+)= s[r * ls + c] for r, c < 8. */
CEDF_AVX static inline void cedf_block8_f32(const float *CEDF_RESTRICT s, ptrdiff_t ls,
                                            float *CEDF_RESTRICT d, ptrdiff_t ld, int acc)
{
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(s + i * ls);
    for (int i = 0; i < 8; i += 2) {   /* pairs of rows interleaved */
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {   /* then quads: each 128-bit lane holds a column's 4 rows */
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {      /* rows 0-3 and 4-7 of column c, and of column c + 4 */
        float *lo = d + c * ld, *hi = d + (c + 4) * ld;
        _mm256_storeu_ps(lo, cedf_avx_acc_ps(_mm256_permute2f128_ps(r[c], r[c + 4], 0x20), lo, acc));
        _mm256_storeu_ps(hi, cedf_avx_acc_ps(_mm256_permute2f128_ps(r[c], r[c + 4], 0x31), hi, acc));
    }
}

/* d[c * ld + r] (+)= s[r * ls + c] for r, c < 4. */
CEDF_AVX static inline void cedf_block4_f64(const double *CEDF_RESTRICT s, ptrdiff_t ls,
                                            double *CEDF_RESTRICT d, ptrdiff_t ld, int acc)
{
    __m256d r0 = _mm256_loadu_pd(s), r1 = _mm256_loadu_pd(s + ls);
    __m256d r2 = _mm256_loadu_pd(s + 2 * ls), r3 = _mm256_loadu_pd(s + 3 * ls);
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(d, cedf_avx_acc_pd(_mm256_permute2f128_pd(t0, t2, 0x20), d, acc));
    _mm256_storeu_pd(d + ld, cedf_avx_acc_pd(_mm256_permute2f128_pd(t1, t3, 0x20), d + ld, acc));
    _mm256_storeu_pd(d + 2 * ld, cedf_avx_acc_pd(_mm256_permute2f128_pd(t0, t2, 0x31), d + 2 * ld, acc));
    _mm256_storeu_pd(d + 3 * ld, cedf_avx_acc_pd(_mm256_permute2f128_pd(t1, t3, 0x31), d + 3 * ld, acc));
}

/* The whole blocks by `BLOCK`, then one number at a time the rest: the last cols % B of each
 * row above the last rows % B, and those rows whole. */
#define CEDF_AVX_TRANSPOSE(T, SUFFIX, B, BLOCK)                                                  \
    CEDF_AVX static void cedf_transpose_avx_##SUFFIX(const T *CEDF_RESTRICT src, ptrdiff_t ls,    \
                                                     T *CEDF_RESTRICT dst, ptrdiff_t ld,         \
                                                     ptrdiff_t rows, ptrdiff_t cols, int acc)    \
    {                                                                                            \
        ptrdiff_t rb = rows - rows % B, cb = cols - cols % B;                                    \
        for (ptrdiff_t i = 0; i < rb; i += B)                                                    \
            for (ptrdiff_t j = 0; j < cb; j += B)                                                \
                BLOCK(src + i * ls + j, ls, dst + j * ld + i, ld, acc);                          \
        for (ptrdiff_t i = 0; i < rows; i++)                                                     \
            for (ptrdiff_t j = i < rb ? cb : 0; j < cols; j++)                                   \
                dst[j * ld + i] = acc ? dst[j * ld + i] + src[i * ls + j] : src[i * ls + j];     \
    }

CEDF_AVX_TRANSPOSE(float, f32, 8, cedf_block8_f32)
CEDF_AVX_TRANSPOSE(double, f64, 4, cedf_block4_f64)
#undef CEDF_AVX_TRANSPOSE
#define CEDF_HAVE_AVX() __builtin_cpu_supports("avx")
#else
#define CEDF_HAVE_AVX() 0
#define cedf_transpose_avx_f32 cedf_transpose_scalar_f32
#define cedf_transpose_avx_f64 cedf_transpose_scalar_f64
#endif

/* The transposes that cedf calls, with AVX where the CPU has it: of a contiguous matrix, and
 * the swap of a batch's outer and inner axes, (a, c, b) <-> (b, c, a): per entry k of the middle
 * axis, the (a x b) matrix whose rows are c b apart transposed into rows c a apart. With
 * (N, C, S) that is a channels-first batch into the plan's position-major layout (S, C, N),
 * and the same call with (S, C, N) takes it back. */
#define CEDF_TRANSPOSE(T, SUFFIX)                                                                \
    static inline void cedf_transpose_strided_##SUFFIX(const T *CEDF_RESTRICT src, ptrdiff_t ls,  \
                                                       T *CEDF_RESTRICT dst, ptrdiff_t ld,       \
                                                       ptrdiff_t rows, ptrdiff_t cols, int acc)  \
    {                                                                                            \
        if (CEDF_HAVE_AVX())                                                                     \
            cedf_transpose_avx_##SUFFIX(src, ls, dst, ld, rows, cols, acc);                      \
        else                                                                                     \
            cedf_transpose_scalar_##SUFFIX(src, ls, dst, ld, rows, cols, acc);                   \
    }                                                                                            \
    static inline void cedf_transpose_##SUFFIX(const T *CEDF_RESTRICT src, T *CEDF_RESTRICT dst,  \
                                               ptrdiff_t rows, ptrdiff_t cols, int acc)          \
    {                                                                                            \
        cedf_transpose_strided_##SUFFIX(src, cols, dst, rows, rows, cols, acc);                  \
    }                                                                                            \
    static inline void cedf_swap_axes_##SUFFIX(const T *CEDF_RESTRICT src, T *CEDF_RESTRICT dst,  \
                                               ptrdiff_t a, ptrdiff_t c, ptrdiff_t b, int acc)   \
    {                                                                                            \
        if (c == 1) {                                                                            \
            cedf_transpose_##SUFFIX(src, dst, a, b, acc);                                        \
            return;                                                                              \
        }                                                                                        \
        for (ptrdiff_t k = 0; k < c; k++)                                                        \
            cedf_transpose_strided_##SUFFIX(src + k * b, c * b, dst + k * a, c * a, a, b, acc);  \
    }

CEDF_TRANSPOSE(float, f32)
CEDF_TRANSPOSE(double, f64)
#undef CEDF_TRANSPOSE


#endif
