/*
 * How the extension was compiled, for the tests to check (cedf._kernels.SANITIZED).
 *
 * CEDF_SANITIZED is 1 when this translation unit is compiled with
 * AddressSanitizer (setup.py's CEDF_SANITIZE=address): GCC defines
 * __SANITIZE_ADDRESS__, clang answers __has_feature(address_sanitizer).
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

#endif
