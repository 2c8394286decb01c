/*
 * Point functions of cedf's kernels: the maths of one element, in double.
 *
 * The Cython loops in cedf/_loops.pxd call these for float32 and float64
 * buffers. The losses are computed in double, which keeps float32 results
 * within one rounding of the exact value (as scikit-learn's loss kernels do);
 * exp, the hot spot of sigmoid, tanh and softmax, has a version per precision
 * so that their loops vectorise. Keeping the formulas here, apart from the loops,
 * puts each on a few lines beside the lecture's.
 */
#ifndef CEDF_POINTWISE_H
#define CEDF_POINTWISE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The lecture's Sigmoid clips its input to [-10, 10] before exponentiating. */
#define CEDF_SIGMOID_CLIP 10.0
/* The lecture's Softmax floors the max-shifted logits at -10. */
#define CEDF_SOFTMAX_FLOOR (-10.0)

/*
 * exp for the arguments cedf's kernels give it: |x| <= 10.5 (sigmoid inputs
 * are clipped to [-10, 10], softmax's shifted logits lie in [-10, 0]) or NaN.
 *
 * libm's exp is a function call per element that no compiler vectorises, and
 * it was three quarters of a sigmoid's time; this one is plain arithmetic that
 * -O3 turns into SIMD code. Cody-Waite range reduction x = n ln2 + r, the
 * Cephes polynomial (float) or Pade form (double) for exp(r), then 2^n built in
 * the exponent bits. Measured against long-double exp on 2e6 points of
 * [-10.5, 10.5]: at most 1.0 ulp (float) and 1.6 ulp (double). NaN propagates
 * through the arithmetic; |x| > 87 would overflow the exponent bits and is
 * never passed.
 */
static inline float cedf_f32_from_bits(int32_t i) { float f; memcpy(&f, &i, 4); return f; }
static inline int32_t cedf_f32_bits(float f) { int32_t i; memcpy(&i, &f, 4); return i; }
static inline double cedf_f64_from_bits(int64_t i) { double f; memcpy(&f, &i, 8); return f; }
static inline int64_t cedf_f64_bits(double f) { int64_t i; memcpy(&i, &f, 8); return i; }

/* exp(x) = exp(r) 2^n: returns exp(r), sets n (cedf_expf below, and the unbounded one). */
static inline float cedf_expf_pieces(float x, int32_t *n)
{
    /* Adding 1.5 * 2^23 rounds x log2(e) to an integer n, left in the low bits
     * (subtracted as unsigned: a NaN's bits would overflow a signed subtraction). */
    const float magic = 12582912.0f;
    float t = x * 1.44269504088896341f + magic;
    *n = (int32_t)((uint32_t)cedf_f32_bits(t) - (uint32_t)cedf_f32_bits(magic));
    float fn = t - magic;
    float r = x - fn * 0.693359375f - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    return p * r * r + r + 1.0f;
}

/* 2^n for a normal power of two (-126 <= n <= 127); unsigned, so that a NaN's n shifts harmlessly. */
static inline float cedf_f32_power(int32_t n) { return cedf_f32_from_bits((int32_t)(((uint32_t)n + 127u) << 23)); }
static inline double cedf_f64_power(int64_t n) { return cedf_f64_from_bits((int64_t)(((uint64_t)n + 1023u) << 52)); }

static inline float cedf_expf(float x)
{
    int32_t n;
    float e = cedf_expf_pieces(x, &n);
    return e * cedf_f32_power(n);
}

/* The double exp in pieces: exp(x) = (q + p) / (q - p) 2^n (Cephes' Pade form);
 * returns n. */
static inline int64_t cedf_exp_pieces(double x, double *p, double *q)
{
    const double magic = 6755399441055744.0;  /* 1.5 * 2^52 */
    double t = x * 1.4426950408889634074 + magic;
    int64_t n = (int64_t)((uint64_t)cedf_f64_bits(t) - (uint64_t)cedf_f64_bits(magic));
    double fn = t - magic;
    double r = x - fn * 6.93145751953125e-1 - fn * 1.42860682030941723212e-6;
    double rr = r * r;
    *p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
              + 9.99999999999999999910e-1);
    *q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
          + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0;
    return n;
}

/* Cephes' 1 + 2 p / (q - p): the rounding of the small term is scaled down. */
static inline double cedf_exp(double x)
{
    double p, q;
    int64_t n = cedf_exp_pieces(x, &p, &q);
    return (1.0 + 2.0 * (p / (q - p))) * cedf_f64_power(n);
}

/*
 * exp(x) for every x <= 0, and NaN: the max-shifted logits of a softmax with
 * no floor (SoftmaxCrossEntropyLoss), unbounded below. The same arithmetic, but
 * x is clamped where exp rounds to 0 anyway, and 2^n is applied as two normal
 * factors, so that a result in the subnormal range is rounded once, as libm's,
 * instead of its exponent bits wrapping around.
 */
static inline float cedf_expf_nonpositive(float x)
{
    x = x < -104.0f ? -104.0f : x;   /* exp(-104) is below half the smallest subnormal */
    int32_t n;
    float e = cedf_expf_pieces(x, &n);
    return e * cedf_f32_power(n / 2) * cedf_f32_power(n - n / 2);
}

static inline double cedf_exp_nonpositive(double x)
{
    x = x < -746.0 ? -746.0 : x;     /* likewise: exp(-746) rounds to 0 */
    double p, q;
    int64_t n = cedf_exp_pieces(x, &p, &q);
    return (1.0 + 2.0 * (p / (q - p))) * cedf_f64_power(n / 2) * cedf_f64_power(n - n / 2);
}

/*
 * exp(x) as a fraction: returns num, sets den, exp(x) = num / den. The sigmoid
 * folds den into its own division, e / (1 + e) = num / (den + num), and so
 * divides once per element instead of twice. With the clip on |x| below, the
 * sigmoid kernel over 1M doubles went from 1.83 to 1.29 ns per element here
 * (floats: 0.84 to 0.63, float's exp having no division), and stayed within
 * 2.3 ulp of a long-double sigmoid on 1M points of [-12, 12] (2.5 before).
 */
static inline double cedf_exp_fraction(double x, double *den)
{
    double p, q;
    int64_t n = cedf_exp_pieces(x, &p, &q);
    *den = q - p;
    return (q + p) * cedf_f64_power(n);
}

static inline float cedf_expf_fraction(float x, float *den)
{
    *den = 1.0f;
    return cedf_expf(x);
}

/*
 * tanh, for the loops below, in the buffer's precision: libm's tanh is a call
 * per element (14 ns here). Two forms, both evaluated and one selected, so that
 * the loop has no branch and vectorises:
 * - a = |x| >= 0.625: tanh a = 1 - 2 e / (1 + e), e = exp(-2a) from the exp
 *   above; the subtracted term is below 0.45 and the result above 0.55, so its
 *   few ulp of error are about one of the result's;
 * - below: Cephes' tanh, a + a z num / den with z = a^2, a rational of degree
 *   2/3 in z (double) or a polynomial of degree 4 (float, den = 1), where
 *   1 - 2 e / (1 + e) would cancel.
 * tanh rounds to 1 beyond 19.1 (double) or 9.1 (float), so exp's argument is
 * clipped at 20: it stays in exp's range and +-inf give +-1. Measured against
 * long-double tanh: at most 1.46 ulp for every float, 1.53 ulp on 2.6e6
 * doubles (dense in [-20, 20], tiny, huge, subnormal; 1.57 in the baseline
 * build, without FMA); glibc's tanh has 2.08 on the same doubles. Over 1M
 * elements the AVX2 loop takes 1.07 ns per double and 0.52 per float, the
 * sigmoid's 0.69 and 0.37 (baseline build: 3.4 and 1.7, sigmoid 2.2 and 1.2).
 * One fraction of exp's pieces alone, (1 - e) / (1 + e) with no rational, ran
 * at the sigmoid's speed but lost 2.7-4.3 ulp below |x| = 0.5, having no exact
 * leading term there.
 */
#define CEDF_TANH_CLIP 20.0
#define CEDF_TANH_SMALL 0.625

/* Returns num and sets den, tanh(a) = a + a z num / den for |a| <= 0.625, z = a^2. */
static inline double cedf_tanh_rational(double z, double *den)
{
    *den = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z
           + 4.84406305325125486048e3;
    return (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z
           - 1.61468768441708447952e3;
}

static inline float cedf_tanhf_rational(float z, float *den)
{
    *den = 1.0f;
    return (((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z
            + 1.33314422036e-1f) * z - 3.33332819422e-1f;
}

/* Binary cross-entropy of one example with a hard label y in {0, 1}.
 * Only the term that the label selects is evaluated, so that p = 0 or p = 1
 * give the exact infinity or zero instead of 0 * log(0) = NaN; log1p keeps
 * -log(1 - p) accurate for small p. */
static inline double cedf_bce(double p, double y)
{
    return (y > 0.5) ? -log(p) : -log1p(-p);
}

/* d bce / dp = (p - y) / (p (1 - p)), branch by branch. */
static inline double cedf_bce_grad(double p, double y, double g)
{
    return (y > 0.5) ? -g / p : g / (1.0 - p);
}

/* Leaky ReLU: x for x >= 0, slope x below (ReLU: slope 0, exactly 0 even for
 * -inf, where 0 * -inf would be NaN). NaN fails the test and propagates. */
static inline double cedf_leaky_relu(double x, double slope)
{
    return x < 0 ? (slope != 0 ? slope * x : 0.0) : x;
}

/* Its derivative: 1 above 0, slope at and below (PyTorch's choice at 0). */
static inline double cedf_leaky_relu_grad(double x, double slope)
{
    return x > 0 ? 1.0 : slope;
}

/* The logistic function of an unclipped z, exp taken of -|z| only: no overflow. */
static inline double cedf_sigmoid_exact(double z)
{
    double e = exp(-fabs(z));
    return z >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

/* Binary cross-entropy of sigmoid(z) against y in [0, 1], straight from the logit:
 * max(z, 0) - z y + log(1 + exp(-|z|)), finite for every finite z. */
static inline double cedf_bce_logits(double z, double y)
{
    return (z > 0 ? z : 0.0) - z * y + log1p(exp(-fabs(z)));
}

/*
 * The exp-heavy loops as whole-array functions. With GCC on x86-64 Linux they
 * are compiled three times, for the x86-64 baseline (SSE2), x86-64-v3 (AVX2 and
 * FMA) and x86-64-v4 (AVX-512), and the loader picks one for the CPU it runs on
 * (target_clones, an ifunc): measured here, sigmoid over 4096 floats went from
 * 2.3 to 0.7 ns per element, over doubles from 9.0 to 1.8 (with 1 / (1 + e);
 * the 1 - t form below costs 15-20 % more, measured in C). AVX-512, on this
 * machine's AMD EPYC: Adam's update of 203,530 doubles 190 -> 108 us (its
 * square roots and divisions, twice as many to a vector), sigmoid over 1000
 * doubles 1.8 -> 1.0-1.3 us (timeit, one run each). No -march flag is needed,
 * so the same wheel still runs on older CPUs. Elsewhere they are compiled once.
 */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__x86_64__) && defined(__linux__)
#define CEDF_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), unused))
#elif defined(__GNUC__)
#define CEDF_MULTIVERSION __attribute__((unused))
#else  /* MSVC: no attributes */
#define CEDF_MULTIVERSION
#endif

/*
 * The loops, written once and instantiated for float (f32, with cedf_expf)
 * and double (f64, with cedf_exp), each in the buffer's own precision so that
 * it vectorises.
 *
 * cedf_sigmoid_*: the lecture's sigmoid, 1 / (1 + exp(-clip(x, -10, 10))),
 *   computed as 1 - t (x >= 0) or t (x < 0), t = e / (1 + e), e = exp(-|x|):
 *   1 / (1 + e) would round 1 + e first and lose most digits of a small e, so a
 *   sigmoid near 1 came out an ulp off, and 1 - s, the gradient's factor, a
 *   thousandth off in float32; this way s is the correctly rounded value but for
 *   near-ties, as the reference's. NaN fails both comparisons and propagates.
 * cedf_sigmoid_array_*: out = sigmoid(x).
 * cedf_bias_sigmoid_*: s = sigmoid(u + b), b added to every row: the bias of an
 *   Affine added in the pass of the Sigmoid that reads it, not in one of its own.
 * cedf_tanh_array_*: out = tanh(x), from the two forms above (tanh |x| =
 *   lead + scale num / den, with one division for either).
 * cedf_sigmoid_backward_*: gx (+)= g s (1 - s), the lecture's local gradient in terms of
 *   the output; with gb, the bias gradient of the Affine before the Sigmoid (the column
 *   sums of what is written) is summed in the same pass. Here rather than in Cython
 *   for the clones: in the engine's baseline build this loop was the largest of its
 *   own in an mlp_digits float64 step (perf), two doubles to a vector.
 * cedf_column_sums_*: out (+)= the sums of the c columns of g (n x c), row after row: an
 *   Affine's bias gradient (a ReLU MLP's, whose activations fuse none).
 * cedf_sigmoid_bce_backward_*: a Sigmoid followed by BCE, differentiated
 *   together: gx (+)= g (p - y), and the Sigmoid's own gradient gp = g / -p or
 *   g / (1 - p) (selected without a branch, so that the loop vectorises). Here
 *   rather than in Cython for the x86-64-v3 clone: the division runs four
 *   doubles to a vector instead of two.
 * cedf_softmax_exp_*: x = exp(max(x, floor)) in place, the exponentials of
 *   max-shifted softmax logits for all rows in one call (a call per row of ten
 *   classes cost more than its arithmetic).
 * cedf_logits_exp_*: x = exp(x) in place for x <= 0 without a floor, the same
 *   for SoftmaxCrossEntropyLoss (libm's exp took 6.6 us of the CNN's step for
 *   two exponentials of each of its 1,000 logits).
 */
#define CEDF_LOOPS(T, SFX, EXP, EXP_FRACTION, TANH_RATIONAL, EXP_NONPOSITIVE)                           \
    static inline T cedf_sigmoid_##SFX(T x)                                                \
    {                                                                                      \
        /* Clipping |x|, not x: one min (NaN fails the test and stays NaN). */             \
        T a = (T)fabs(x);                                                                  \
        a = a > (T)CEDF_SIGMOID_CLIP ? (T)CEDF_SIGMOID_CLIP : a;                           \
        T den, num = EXP_FRACTION(-a, &den);   /* exp(-|x|) = num / den <= 1 */            \
        T t = num / (den + num);     /* the smaller of s and 1 - s, to a few ulp */         \
        return x < 0 ? t : (T)1 - t;                                                       \
    }                                                                                      \
                                                                                           \
    CEDF_MULTIVERSION static void cedf_sigmoid_array_##SFX(const T *x, T *out, ptrdiff_t n) \
    {                                                                                      \
        for (ptrdiff_t i = 0; i < n; i++) out[i] = cedf_sigmoid_##SFX(x[i]);               \
    }                                                                                      \
                                                                                           \
    CEDF_MULTIVERSION static void cedf_bias_sigmoid_##SFX(const T *u, const T *b, T *s,    \
                                                          ptrdiff_t rows, ptrdiff_t cols)  \
    {                                                                                      \
        if (cols == 1) { /* one output (logistic regression): one long loop, not rows of one */ \
            for (ptrdiff_t r = 0; r < rows; r++) s[r] = cedf_sigmoid_##SFX(u[r] + b[0]);   \
            return;                                                                        \
        }                                                                                  \
        for (ptrdiff_t r = 0; r < rows; r++)                                               \
            for (ptrdiff_t j = 0; j < cols; j++)                                           \
                s[r * cols + j] = cedf_sigmoid_##SFX(u[r * cols + j] + b[j]);              \
    }                                                                                      \
                                                                                           \
    static inline T cedf_tanh_##SFX(T x)                                                   \
    {                                                                                      \
        T a = (T)fabs(x), z = a * a;                                                       \
        /* Only exp's argument is clipped: a clipped a made GCC fold the clipped lanes     \
           into constants, blended back in (7 % slower). NaN stays NaN, inf gives 1. */    \
        T c = a > (T)CEDF_TANH_CLIP ? (T)CEDF_TANH_CLIP : a;                               \
        T eden, e = EXP_FRACTION(-2 * c, &eden);   /* exp(-2|x|) = e / eden */              \
        T rden, rnum = TANH_RATIONAL(z, &rden);                                            \
        /* tanh |x| = lead + scale num / den either way: one division, not two. */         \
        int small = a < (T)CEDF_TANH_SMALL;                                                \
        T lead = small ? a : (T)1;                                                         \
        T scale = small ? a * z : (T)-2;                                                   \
        T num = small ? rnum : e;                                                          \
        T den = small ? rden : eden + e;                                                   \
        return (T)copysign(lead + scale * (num / den), x);   /* -0.0 stays -0.0 */         \
    }                                                                                      \
                                                                                           \
    CEDF_MULTIVERSION static void cedf_tanh_array_##SFX(const T *x, T *out, ptrdiff_t n)  \
    {                                                                                      \
        for (ptrdiff_t i = 0; i < n; i++) out[i] = cedf_tanh_##SFX(x[i]);                  \
    }                                                                                      \
                                                                                           \
    CEDF_MULTIVERSION static void cedf_sigmoid_backward_##SFX(const T *s, const T *g, T *gx, int acc, \
                                                              T *gb, int acc_b, ptrdiff_t rows,   \
                                                              ptrdiff_t cols)                     \
    {                                                                                      \
        if (gb == NULL) {                                                                  \
            for (ptrdiff_t i = 0; i < rows * cols; i++)                                    \
                gx[i] = (acc ? gx[i] : (T)0) + g[i] * s[i] * ((T)1 - s[i]);                \
            return;                                                                        \
        }                                                                                  \
        if (!acc_b)                                                                        \
            for (ptrdiff_t j = 0; j < cols; j++) gb[j] = 0;                                \
        for (ptrdiff_t r = 0; r < rows; r++)                                               \
            for (ptrdiff_t j = 0; j < cols; j++) {                                         \
                ptrdiff_t k = r * cols + j;                                                \
                T v = g[k] * s[k] * ((T)1 - s[k]);                                         \
                gx[k] = (acc ? gx[k] : (T)0) + v;                                          \
                gb[j] += v;                                                                \
            }                                                                              \
    }                                                                                      \
                                                                                           \
    CEDF_MULTIVERSION static void cedf_column_sums_##SFX(const T *g, T *out, int acc, ptrdiff_t n, \
                                                         ptrdiff_t c)                      \
    {                                                                                      \
        if (!acc)                                                                          \
            for (ptrdiff_t j = 0; j < c; j++) out[j] = 0;                                  \
        for (ptrdiff_t i = 0; i < n; i++)                                                  \
            for (ptrdiff_t j = 0; j < c; j++) out[j] += g[i * c + j];                      \
    }                                                                                      \
                                                                                           \
    CEDF_MULTIVERSION static void cedf_sigmoid_bce_backward_##SFX(const T *p, const T *y, const T *g, \
                                                                  T *gx, int acc, T *gp, ptrdiff_t n) \
    {                                                                                      \
        for (ptrdiff_t i = 0; i < n; i++) {                                                \
            gx[i] = (acc ? gx[i] : (T)0) + g[i] * (p[i] - y[i]);                           \
            gp[i] = g[i] / (y[i] > (T)0.5 ? -p[i] : (T)1 - p[i]);                          \
        }                                                                                  \
    }                                                                                      \
                                                                                           \
    CEDF_MULTIVERSION static void cedf_softmax_exp_##SFX(T *x, ptrdiff_t n)                \
    {                                                                                      \
        for (ptrdiff_t i = 0; i < n; i++) {                                                \
            T v = x[i] < (T)CEDF_SOFTMAX_FLOOR ? (T)CEDF_SOFTMAX_FLOOR : x[i];             \
            x[i] = EXP(v);                                                                 \
        }                                                                                  \
    }                                                                                      \
                                                                                           \
    CEDF_MULTIVERSION static void cedf_logits_exp_##SFX(T *x, ptrdiff_t n)                 \
    {                                                                                      \
        for (ptrdiff_t i = 0; i < n; i++) x[i] = EXP_NONPOSITIVE(x[i]);                    \
    }

CEDF_LOOPS(float, f32, cedf_expf, cedf_expf_fraction, cedf_tanhf_rational, cedf_expf_nonpositive)
CEDF_LOOPS(double, f64, cedf_exp, cedf_exp_fraction, cedf_tanh_rational, cedf_exp_nonpositive)

/*
 * The row loops of the softmax, its losses and the Affine's bias, over rows of
 * a few classes (ten for the digits) or a hidden layer's width. Inlined from
 * Cython into the engine's baseline build they ran two doubles or four floats
 * to a vector; here they are compiled per instruction set like the loops above.
 * cedf_fill_rows_*: every row of out (rows x cols) = b, an Affine's bias, which
 *   BLAS then adds its product to.
 * cedf_shift_by_max_*: o = x - max(x) row by row; top, if not NULL, gets the
 *   maxima. The max is a select in order, as before (a NaN after the first
 *   element is passed over, and the row comes out NaN either way). With b not
 *   NULL, x + b (b added to every row: the bias of the Affine a Softmax reads,
 *   whose product BLAS then writes alone) in place of x.
 * cedf_normalize_rows_*: o = o / sum(o) row by row, the sum in double and in
 *   order, o scaled by its reciprocal in double and rounded once; with loss
 *   (z_y - max, from cedf_shift_by_max), loss = log(sum) - loss, the
 *   cross-entropy of the logits.
 * cedf_softmax_ce_backward_*: a Softmax followed by the cross-entropy,
 *   differentiated together: gx (+)= g (p - onehot(y)), and the Softmax's own
 *   gradient gp, -g / p at the label and zero elsewhere; with gb not NULL,
 *   the bias gradient of the Affine before (the column sums of what is added
 *   to gx) summed in the same pass.
 * cedf_logits_ce_backward_*: gz (+)= g (p - onehot(y)) in double, rounded once
 *   (SoftmaxCrossEntropyLoss's backward).
 * The labels are checked before any of these runs (the plan's label copy).
 */
#define CEDF_ROW_LOOPS(T, SFX)                                                                  \
    CEDF_MULTIVERSION static void cedf_fill_rows_##SFX(const T *b, T *out, ptrdiff_t rows,      \
                                                       ptrdiff_t cols)                          \
    {                                                                                           \
        for (ptrdiff_t r = 0; r < rows; r++)                                                    \
            for (ptrdiff_t j = 0; j < cols; j++) out[r * cols + j] = b[j];                      \
    }                                                                                           \
                                                                                                \
    CEDF_MULTIVERSION static void cedf_shift_by_max_##SFX(const T *x, const T *b, T *o, T *top, \
                                                          ptrdiff_t rows, ptrdiff_t cols)       \
    {                                                                                           \
        if (cols < 1) return;   /* no max to shift by */                                        \
        for (ptrdiff_t r = 0; r < rows; r++) {                                                  \
            const T *row = x + r * cols;                                                        \
            T *out = o + r * cols;                                                              \
            if (b != NULL) {    /* the biased row into o, then shifted there */                 \
                for (ptrdiff_t j = 0; j < cols; j++) out[j] = row[j] + b[j];                    \
                row = out;                                                                      \
            }                                                                                   \
            T m = row[0];                                                                       \
            for (ptrdiff_t j = 1; j < cols; j++) m = row[j] > m ? row[j] : m;                   \
            for (ptrdiff_t j = 0; j < cols; j++) out[j] = row[j] - m;                           \
            if (top != NULL) top[r] = m;                                                        \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    CEDF_MULTIVERSION static void cedf_normalize_rows_##SFX(T *o, T *loss, ptrdiff_t rows,      \
                                                            ptrdiff_t cols)                     \
    {                                                                                           \
        for (ptrdiff_t r = 0; r < rows; r++) {                                                  \
            T *row = o + r * cols;                                                              \
            double total = 0;                                                                   \
            for (ptrdiff_t j = 0; j < cols; j++) total += row[j];                               \
            double scale = 1 / total;                                                           \
            for (ptrdiff_t j = 0; j < cols; j++) row[j] = (T)(row[j] * scale);                  \
            if (loss != NULL) loss[r] = (T)(log(total) - loss[r]);                              \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    CEDF_MULTIVERSION static void cedf_softmax_ce_backward_##SFX(const T *p, const int64_t *labels, \
                                                                 const T *g, T *gx, int acc,    \
                                                                 T *gp, T *gb, int acc_b,       \
                                                                 ptrdiff_t rows, ptrdiff_t cols) \
    {                                                                                           \
        memset(gp, 0, (size_t)(rows * cols) * sizeof(T));                                       \
        if (gb != NULL && !acc_b)                                                               \
            for (ptrdiff_t j = 0; j < cols; j++) gb[j] = 0;                                     \
        for (ptrdiff_t r = 0; r < rows; r++) {                                                  \
            T gr = g[r];                                                                        \
            ptrdiff_t y = labels[r], k = r * cols + y;                                          \
            if (gb == NULL) {                                                                   \
                for (ptrdiff_t j = 0; j < cols; j++)                                            \
                    gx[r * cols + j] = (acc ? gx[r * cols + j] : (T)0) + gr * p[r * cols + j];  \
                gx[k] -= gr;                                                                    \
            } else {                                                                            \
                for (ptrdiff_t j = 0; j < cols; j++) {                                          \
                    T v = gr * p[r * cols + j] - (j == y ? gr : (T)0);                          \
                    gx[r * cols + j] = (acc ? gx[r * cols + j] : (T)0) + v;                     \
                    gb[j] += v;                                                                 \
                }                                                                               \
            }                                                                                   \
            gp[k] = (T)(-gr / (double)p[k]);                                                    \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    CEDF_MULTIVERSION static void cedf_logits_ce_backward_##SFX(const T *p, const int64_t *labels, \
                                                                const T *g, T *gz, int acc,     \
                                                                ptrdiff_t rows, ptrdiff_t cols) \
    {                                                                                           \
        for (ptrdiff_t r = 0; r < rows; r++) {                                                  \
            double gr = g[r];                                                                   \
            int64_t y = labels[r];                                                              \
            for (ptrdiff_t j = 0; j < cols; j++) {                                              \
                ptrdiff_t k = r * cols + j;                                                     \
                gz[k] = (T)((acc ? (double)gz[k] : 0.0) + gr * p[k] - (j == y ? gr : 0.0));     \
            }                                                                                   \
        }                                                                                       \
    }

CEDF_ROW_LOOPS(float, f32)
CEDF_ROW_LOOPS(double, f64)

/*
 * The (leaky) ReLU's loops: each element in double, rounded once, as before,
 * but compiled for x86-64-v3 too, where the conversions to and from double run
 * four to a vector. Compiled by Cython for the baseline alone the forward took
 * 4.0 us for a 100 x 100 float32 batch here, this one 1.0 us (four such passes
 * in each step of the 40-100-100-10 MLP; the step itself moved by less than
 * the run-to-run spread).
 * The plain ReLU (slope 0) runs in the buffer's own precision instead, eight
 * floats to a vector and no conversions, with the same results bit for bit:
 * its forward only selects, and its backward adds g or g * 0 (so that an
 * infinite g still gives NaN, as the reference's) to gx or to 0 (a -0 becomes
 * +0, as it did), a sum of two floats that double would round to the same
 * float (53 >= 2 * 24 + 2 bits).
 * cedf_leaky_relu_array_*: out = leaky_relu(x).
 * cedf_leaky_relu_grad_array_*: gx (+)= g * leaky_relu'(x) (acc: add, else write).
 * cedf_bias_leaky_relu_*: out = leaky_relu(u + b), b added to every row: the bias
 *   of an Affine added in the pass of the (leaky) ReLU that reads it, as
 *   cedf_bias_sigmoid does for a Sigmoid. The product is then written alone
 *   (BLAS beta = 0), not added onto rows filled with the bias: in fit's step of
 *   the 40-100-100-10 MLP (float64, perf) OpenBLAS's beta = 1 kernel cost 8 %
 *   more per multiply-add than its beta = 0 one, and the fill 1.1 % of the step.
 * cedf_leaky_relu_grad_rows_*: the same gradient, with gb the bias gradient of
 *   that Affine (the column sums of what is written) summed in the same pass.
 *   Its x may be the ReLU's output y instead of its input: for a slope >= 0,
 *   y > 0 exactly where x > 0.
 */
#define CEDF_LEAKY_LOOPS(T, SFX)                                                                \
    CEDF_MULTIVERSION static void cedf_leaky_relu_array_##SFX(const T *x, T *out, ptrdiff_t n,  \
                                                              double slope)                     \
    {                                                                                           \
        if (slope == 0) {                                                                       \
            for (ptrdiff_t i = 0; i < n; i++) out[i] = x[i] < 0 ? (T)0 : x[i];                  \
            return;                                                                             \
        }                                                                                       \
        for (ptrdiff_t i = 0; i < n; i++) out[i] = (T)cedf_leaky_relu(x[i], slope);             \
    }                                                                                           \
                                                                                                \
    CEDF_MULTIVERSION static void cedf_leaky_relu_grad_array_##SFX(const T *x, const T *g, T *gx, \
                                                                   int acc, ptrdiff_t n,        \
                                                                   double slope)                \
    {                                                                                           \
        if (slope == 0 && acc) {                                                                \
            for (ptrdiff_t i = 0; i < n; i++) gx[i] += x[i] > 0 ? g[i] : g[i] * (T)0;           \
            return;                                                                             \
        }                                                                                       \
        if (slope == 0) {                                                                       \
            for (ptrdiff_t i = 0; i < n; i++) gx[i] = (T)0 + (x[i] > 0 ? g[i] : g[i] * (T)0); \
            return;                                                                             \
        }                                                                                       \
        for (ptrdiff_t i = 0; i < n; i++)                                                       \
            gx[i] = (T)((acc ? (double)gx[i] : 0.0) + (double)g[i] * cedf_leaky_relu_grad(x[i], slope)); \
    }                                                                                           \
                                                                                                \
    CEDF_MULTIVERSION static void cedf_bias_leaky_relu_##SFX(const T *u, const T *b, T *out,    \
                                                             ptrdiff_t rows, ptrdiff_t cols,    \
                                                             double slope)                      \
    {                                                                                           \
        for (ptrdiff_t r = 0; r < rows; r++) {                                                  \
            const T *ur = u + r * cols;                                                         \
            T *o = out + r * cols;                                                              \
            if (slope == 0)                                                                     \
                for (ptrdiff_t j = 0; j < cols; j++) {                                          \
                    T x = ur[j] + b[j];                                                         \
                    o[j] = x < 0 ? (T)0 : x;                                                    \
                }                                                                               \
            else                                                                                \
                for (ptrdiff_t j = 0; j < cols; j++) o[j] = (T)cedf_leaky_relu(ur[j] + b[j], slope); \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    CEDF_MULTIVERSION static void cedf_leaky_relu_grad_rows_##SFX(const T *x, const T *g, T *gx, \
                                                                  int acc, T *gb, int acc_b,    \
                                                                  ptrdiff_t rows, ptrdiff_t cols, \
                                                                  double slope)                 \
    {                                                                                           \
        if (!acc_b)                                                                             \
            for (ptrdiff_t j = 0; j < cols; j++) gb[j] = 0;                                     \
        for (ptrdiff_t r = 0; r < rows; r++) {                                                  \
            const ptrdiff_t k = r * cols;                                                       \
            if (slope == 0)                                                                     \
                for (ptrdiff_t j = 0; j < cols; j++) {                                          \
                    T v = x[k + j] > 0 ? g[k + j] : g[k + j] * (T)0;                            \
                    gx[k + j] = (acc ? gx[k + j] : (T)0) + v;                                   \
                    gb[j] += v;                                                                 \
                }                                                                               \
            else                                                                                \
                for (ptrdiff_t j = 0; j < cols; j++) {                                          \
                    T v = (T)((double)g[k + j] * cedf_leaky_relu_grad(x[k + j], slope));        \
                    gx[k + j] = (acc ? gx[k + j] : (T)0) + v;                                   \
                    gb[j] += v;                                                                 \
                }                                                                               \
        }                                                                                       \
    }

CEDF_LEAKY_LOOPS(float, f32)
CEDF_LEAKY_LOOPS(double, f64)

#endif
