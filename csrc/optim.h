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

#endif
