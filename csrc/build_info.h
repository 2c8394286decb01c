/*
 * How the extension was compiled, for the tests and cedf.show_config() to
 * check (cedf._kernels.SANITIZED, cedf._kernels.OPENMP).
 *
 * CEDF_SANITIZED is 1 when this translation unit is compiled with
 * AddressSanitizer (setup.py's CEDF_SANITIZE=address): GCC defines
 * __SANITIZE_ADDRESS__, clang answers __has_feature(address_sanitizer).
 *
 * CEDF_OPENMP is 1 when it is compiled with OpenMP (setup.py's CEDF_OPENMP=1,
 * when the compiler has it): every compiler that enables OpenMP defines
 * _OPENMP (GCC and clang with -fopenmp, Apple clang with -Xpreprocessor
 * -fopenmp, MSVC with /openmp).
 */
#ifndef CEDF_BUILD_INFO_H
#define CEDF_BUILD_INFO_H

#if defined(__SANITIZE_ADDRESS__)
#define CEDF_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CEDF_SANITIZED 1
#endif
#endif

#ifndef CEDF_SANITIZED
#define CEDF_SANITIZED 0
#endif

#if defined(_OPENMP)
#define CEDF_OPENMP 1
#else
#define CEDF_OPENMP 0
#endif

#endif
