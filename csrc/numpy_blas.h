/*
 * NumPy's own BLAS, which cedf's kernels call when they can (see cedf/backend.py).
 *
 * NumPy's wheels carry an OpenBLAS of their own beside SciPy's, built with
 * 64-bit integers (scipy-openblas64), whose Fortran-style functions are
 * exported as scipy_<name>_64_. Calling it puts cedf's products in the same
 * thread pool as the user's NumPy code, and here it was also the faster build
 * (NumPy's OpenBLAS 0.3.31 against SciPy's 0.3.30): the products of an
 * mlp_mnist float32 or mlp_large step took 5-17 % longer through SciPy's.
 *
 * cedf/backend.py looks the functions up when cedf is imported and hands their
 * addresses to each compiled module (`_use_numpy_blas`). Each module holds its
 * own copy of this table (it is static); all NULL means SciPy's cython_blas.
 */
#ifndef CEDF_NUMPY_BLAS_H
#define CEDF_NUMPY_BLAS_H

#include <stdint.h>

typedef void (*cedf_sgemm64_t)(const char *, const char *, const int64_t *, const int64_t *, const int64_t *,
                               const float *, const float *, const int64_t *, const float *, const int64_t *,
                               const float *, float *, const int64_t *);
typedef void (*cedf_dgemm64_t)(const char *, const char *, const int64_t *, const int64_t *, const int64_t *,
                               const double *, const double *, const int64_t *, const double *, const int64_t *,
                               const double *, double *, const int64_t *);
typedef void (*cedf_sgemv64_t)(const char *, const int64_t *, const int64_t *, const float *, const float *,
                               const int64_t *, const float *, const int64_t *, const float *, float *,
                               const int64_t *);
typedef void (*cedf_dgemv64_t)(const char *, const int64_t *, const int64_t *, const double *, const double *,
                               const int64_t *, const double *, const int64_t *, const double *, double *,
                               const int64_t *);
typedef void (*cedf_saxpy64_t)(const int64_t *, const float *, const float *, const int64_t *, float *,
                               const int64_t *);
typedef void (*cedf_daxpy64_t)(const int64_t *, const double *, const double *, const int64_t *, double *,
                               const int64_t *);

typedef struct {
    cedf_sgemm64_t sgemm;
    cedf_dgemm64_t dgemm;
    cedf_sgemv64_t sgemv;
    cedf_dgemv64_t dgemv;
    cedf_saxpy64_t saxpy;
    cedf_daxpy64_t daxpy;
} cedf_numpy_blas_t;

static cedf_numpy_blas_t cedf_numpy_blas;

#endif
