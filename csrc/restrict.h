/*
 * CEDF_RESTRICT: C99's restrict (no buffer a pointer reaches overlaps another's), which
 * spares the compiler the run-time overlap test before each vectorised loop; MSVC's C
 * spells it __restrict.
 */
#ifndef CEDF_RESTRICT_H
#define CEDF_RESTRICT_H

#if defined(_MSC_VER)
#define CEDF_RESTRICT __restrict
#else
#define CEDF_RESTRICT restrict
#endif

#endif
