/*
 * Point functions of cedf's kernels: the maths of one element, in double.
 *
 * The Cython loops in cedf/_kernels.pyx call these for float32 and float64
 * buffers alike; doing the arithmetic in double keeps float32 results within
 * one rounding of the exact value (as scikit-learn's loss kernels do), and
 * keeping them here, apart from the loops, puts each formula on one line
 * beside the lecture's.
 */
#ifndef CEDF_POINTWISE_H
#define CEDF_POINTWISE_H

#include <math.h>

/* The lecture's Sigmoid clips its input to [-10, 10] before exponentiating. */
#define CEDF_SIGMOID_CLIP 10.0
/* The lecture's Softmax floors the max-shifted logits at -10. */
#define CEDF_SOFTMAX_FLOOR (-10.0)

static inline double cedf_sigmoid(double x)
{
    if (x > CEDF_SIGMOID_CLIP) x = CEDF_SIGMOID_CLIP;
    else if (x < -CEDF_SIGMOID_CLIP) x = -CEDF_SIGMOID_CLIP;
    /* NaN fails both comparisons and propagates, as it does in NumPy. */
    return 1.0 / (1.0 + exp(-x));
}

/* d sigmoid / dx written in terms of the output s, as the lecture does
 * (the clip is not differentiated, also as the lecture does). */
static inline double cedf_sigmoid_grad(double s, double g)
{
    return g * s * (1.0 - s);
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

#endif
