/*
 * The optimisers' update loops (cedf.optim.SGD and Adam), PyTorch's rules, one
 * element at a time in the parameter's own precision, as PyTorch computes them:
 * a float32 parameter's update in float32. In double, as the other point
 * functions are, Adam's square root and division per element could not be
 * vectorised in float32's eight lanes: with the 40-100-100-10 MLP's 15,000
 * parameters an Adam step took 1.61 times an SGD step here, 1.05 with these
 * loops (one rough timing each, on a busy machine; benchmarks/compare.py's
 * paired ratio, on a quiet one: 1.03-1.05).
 *
 * Compiled thrice where GCC allows (x86-64 baseline, x86-64-v3 and x86-64-v4;
 * CEDF_MULTIVERSION, see pointwise.h); the square root vectorises because
 * setup.py compiles with -fno-math-errno (cedf never reads errno).
 */
#ifndef CEDF_OPTIM_H
#define CEDF_OPTIM_H

#include <math.h>
#include <stddef.h>

#include "pointwise.h"   /* CEDF_MULTIVERSION */
#include "restrict.h"

/*
 * cedf_sgd_*: g = grad + wd value; with momentum (buf not NULL) buf = g on the
 *   first step, else momentum buf + g, and g = buf, or g + momentum buf
 *   (Nesterov); value -= lr g.
 * cedf_adam_*: g = grad + wd value; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
 *   value -= lr / c1 * m / (sqrt(v) / sqrt(c2) + eps), c = 1 - beta^t the bias
 *   corrections of step t. The division by sqrt(c2) is a product with its
 *   reciprocal (one division per element, not two): an ulp from PyTorch's.
 */
#define CEDF_OPTIM_LOOPS(T, SFX, SQRT)                                                            \
    CEDF_MULTIVERSION static void cedf_sgd_##SFX(T *CEDF_RESTRICT value, const T *CEDF_RESTRICT grad, \
                                                 T *CEDF_RESTRICT buf, ptrdiff_t n, double lr,  \
                                                 double momentum, double weight_decay,          \
                                                 int nesterov, int first)                       \
    {                                                                                          \
        const T rate = (T)lr, mu = (T)momentum, wd = (T)weight_decay;                          \
        if (buf == NULL) {                                                                     \
            for (ptrdiff_t i = 0; i < n; i++) value[i] -= rate * (grad[i] + wd * value[i]);    \
            return;                                                                            \
        }                                                                                      \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            T g = grad[i] + wd * value[i];                                                     \
            T b = first ? g : mu * buf[i] + g;                                                 \
            buf[i] = b;                                                                        \
            value[i] -= rate * (nesterov ? g + mu * b : b);                                    \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    CEDF_MULTIVERSION static void cedf_adam_##SFX(T *CEDF_RESTRICT value, const T *CEDF_RESTRICT grad, \
                                                  T *CEDF_RESTRICT m, T *CEDF_RESTRICT v,       \
                                                  ptrdiff_t n, double lr, double beta1,         \
                                                  double beta2, double eps, double weight_decay, \
                                                  double correction1, double correction2)       \
    {                                                                                          \
        const T b1 = (T)beta1, b2 = (T)beta2, a1 = (T)(1 - beta1), a2 = (T)(1 - beta2);        \
        const T step = (T)(lr / correction1), scale = (T)(1 / sqrt(correction2));              \
        const T e = (T)eps, wd = (T)weight_decay;                                              \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            T g = grad[i] + wd * value[i];                                                     \
            T mi = b1 * m[i] + a1 * g;                                                         \
            T vi = b2 * v[i] + a2 * g * g;                                                     \
            m[i] = mi;                                                                         \
            v[i] = vi;                                                                         \
            value[i] -= step * mi / (SQRT(vi) * scale + e);                                    \
        }                                                                                      \
    }

CEDF_OPTIM_LOOPS(float, f32, sqrtf)
CEDF_OPTIM_LOOPS(double, f64, sqrt)

/*
 * Adam in double on a CPU with AVX-512: the loop above, but the division by
 * sqrt(v) / sqrt(c2) + eps taken as a product with a reciprocal refined from
 * the CPU's 14-bit estimate (rcp14: one Newton step, 28 bits, then one on the
 * quotient itself, which squares its error again: within an ulp or so of the
 * divided quotient; the tests hold it to 1e-15). A double
 * division is the slowest operation of the loop: with the 15,210 parameters of
 * the 40-100-100-10 MLP in cache, the update took 22.0 us with it and 13.4 us
 * without (1.45 and 0.88 ns per element; best of 7 x 200 calls on an Intel Xeon
 * with AVX-512); with mlp_mnist's 203,530, out of cache, 283 against 230 us. A divisor outside
 * [2^-1000, 2^1000] (eps = 0 with v = 0, an infinite or NaN v) is divided, so
 * that infinities and NaNs come out as the division's.
 *
 * Whole vectors are loaded and stored plainly and only the last n % 8
 * elements through masks: on a Zen 5 EPYC, masking every vector made the
 * update of those 15,210 doubles 8.7-9.5 us against 5.5-6.6 us (C, 5 x 200
 * calls).
 */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(_WIN32)
#include <immintrin.h>
#define CEDF_ADAM_F64_AVX512 1

typedef struct {
    __m512d b1, b2, a1, a2, step, scale, e, wd, two, low, high;
} cedf_adam_f64x8_rule;

/* One vector of eight: m and v updated in place, the new value returned. */
__attribute__((target("avx512f"), unused, always_inline))
static inline __m512d cedf_adam_f64x8(const cedf_adam_f64x8_rule *r, __m512d x, __m512d grad,
                                      __m512d *m, __m512d *v)
{
    __m512d g = _mm512_fmadd_pd(r->wd, x, grad);
    __m512d mi = *m = _mm512_fmadd_pd(r->b1, *m, _mm512_mul_pd(r->a1, g));
    __m512d vi = *v = _mm512_fmadd_pd(r->b2, *v, _mm512_mul_pd(_mm512_mul_pd(r->a2, g), g));
    __m512d num = _mm512_mul_pd(r->step, mi);
    __m512d d = _mm512_fmadd_pd(_mm512_sqrt_pd(vi), r->scale, r->e);
    __m512d inv = _mm512_rcp14_pd(d);
    inv = _mm512_mul_pd(inv, _mm512_fnmadd_pd(d, inv, r->two));
    __m512d q = _mm512_mul_pd(num, inv);
    q = _mm512_fmadd_pd(inv, _mm512_fnmadd_pd(d, q, num), q);
    __mmask8 ordinary = _mm512_cmp_pd_mask(d, r->low, _CMP_GE_OQ) & _mm512_cmp_pd_mask(d, r->high, _CMP_LE_OQ);
    if (ordinary != 0xFF)   /* the zeros past a tail's end may be divided too: they are not stored */
        q = _mm512_mask_div_pd(q, (__mmask8)~ordinary, num, d);
    return _mm512_sub_pd(x, q);
}

__attribute__((target("avx512f"), unused))
static void cedf_adam_f64_avx512(double *CEDF_RESTRICT value, const double *CEDF_RESTRICT grad,
                                 double *CEDF_RESTRICT m, double *CEDF_RESTRICT v, ptrdiff_t n,
                                 double lr, double beta1, double beta2, double eps,
                                 double weight_decay, double correction1, double correction2)
{
    const cedf_adam_f64x8_rule r = {
        _mm512_set1_pd(beta1), _mm512_set1_pd(beta2), _mm512_set1_pd(1 - beta1), _mm512_set1_pd(1 - beta2),
        _mm512_set1_pd(lr / correction1), _mm512_set1_pd(1 / sqrt(correction2)), _mm512_set1_pd(eps),
        _mm512_set1_pd(weight_decay), _mm512_set1_pd(2), _mm512_set1_pd(0x1p-1000), _mm512_set1_pd(0x1p1000)};
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m512d mi = _mm512_loadu_pd(m + i), vi = _mm512_loadu_pd(v + i);
        __m512d x = cedf_adam_f64x8(&r, _mm512_loadu_pd(value + i), _mm512_loadu_pd(grad + i), &mi, &vi);
        _mm512_storeu_pd(m + i, mi);
        _mm512_storeu_pd(v + i, vi);
        _mm512_storeu_pd(value + i, x);
    }
    if (i < n) {
        const __mmask8 k = (__mmask8)((1u << (n - i)) - 1);
        __m512d mi = _mm512_maskz_loadu_pd(k, m + i), vi = _mm512_maskz_loadu_pd(k, v + i);
        __m512d x = cedf_adam_f64x8(&r, _mm512_maskz_loadu_pd(k, value + i), _mm512_maskz_loadu_pd(k, grad + i),
                                    &mi, &vi);
        _mm512_mask_storeu_pd(m + i, k, mi);
        _mm512_mask_storeu_pd(v + i, k, vi);
        _mm512_mask_storeu_pd(value + i, k, x);
    }
}
#endif

/* Adam in double: the AVX-512 loop where the CPU has it, else the clones above. */
static inline void cedf_adam_double(double *value, const double *grad, double *m, double *v, ptrdiff_t n,
                                    double lr, double beta1, double beta2, double eps, double weight_decay,
                                    double correction1, double correction2)
{
#ifdef CEDF_ADAM_F64_AVX512
    if (__builtin_cpu_supports("avx512f")) {
        cedf_adam_f64_avx512(value, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, correction1, correction2);
        return;
    }
#endif
    cedf_adam_f64(value, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, correction1, correction2);
}

#endif
