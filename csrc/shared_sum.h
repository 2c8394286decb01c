/*
 * What cedf/_allreduce.pyx needs below Cython: an arrival counter that several
 * processes add to and read through memory they share (an MPI shared-memory
 * window), a polite wait on it, and the weighed sum of the ranks' gradients.
 *
 * The counter's add is a full barrier (acq_rel): every store of this rank's
 * gradients into its slot is visible to a rank that sees the new count, and
 * a load that sees everyone's count (acquire) is ordered before the reads of
 * their slots. GCC and clang builtins; MSVC's interlocked intrinsics.
 */
#ifndef CEDF_SHARED_SUM_H
#define CEDF_SHARED_SUM_H

#include <stddef.h>
#include <stdint.h>

#include "pointwise.h"   /* CEDF_MULTIVERSION */

#if defined(_MSC_VER)
#include <intrin.h>
#include <windows.h>
static inline void cedf_arrive(uint64_t *counter) { _InterlockedExchangeAdd64((volatile long long *)counter, 1); }
static inline uint64_t cedf_arrivals(uint64_t *counter)
{
    return (uint64_t)_InterlockedCompareExchange64((volatile long long *)counter, 0, 0);
}
static inline void cedf_pause(void) { YieldProcessor(); }
static inline void cedf_yield(void) { SwitchToThread(); }
#else
#include <sched.h>
static inline void cedf_arrive(uint64_t *counter) { __atomic_fetch_add(counter, 1, __ATOMIC_ACQ_REL); }
static inline uint64_t cedf_arrivals(uint64_t *counter) { return __atomic_load_n(counter, __ATOMIC_ACQUIRE); }
static inline void cedf_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
static inline void cedf_yield(void) { sched_yield(); }
#endif

/*
 * Wait until *counter >= target, for at most `rounds` rounds; returns whether
 * it got there. It spins first (the other ranks of a step arrive within
 * microseconds when each has a core), then gives its core away at every try,
 * so that ranks that oversubscribe the cores (3 ranks on 2) still progress.
 */
static inline int cedf_wait_arrivals(uint64_t *counter, uint64_t target, long rounds)
{
    for (int spin = 0; spin < 20000; spin++) {
        if (cedf_arrivals(counter) >= target) return 1;
        cedf_pause();
    }
    for (long r = 0; r < rounds; r++) {
        if (cedf_arrivals(counter) >= target) return 1;
        cedf_yield();
    }
    return cedf_arrivals(counter) >= target;
}

/*
 * out[i] = sum over the ranks s, in rank order, of w[s] slot[s][i]: the same
 * sum in the same order on every rank, so that all get the same bits. A rank
 * of weight 0 (no example in this step) is left out, whatever its slot holds.
 */
#define CEDF_SHARED_SUM(T, SFX)                                                                  \
    CEDF_MULTIVERSION static void cedf_weighed_sum_##SFX(T *out, T *const *slot, const double *w, \
                                                        ptrdiff_t ranks, ptrdiff_t n)            \
    {                                                                                            \
        int first = 1;                                                                           \
        for (ptrdiff_t s = 0; s < ranks; s++) {                                                  \
            if (w[s] == 0) continue;                                                             \
            const T ws = (T)w[s], *g = slot[s];                                                  \
            if (first)                                                                           \
                for (ptrdiff_t i = 0; i < n; i++) out[i] = ws * g[i];                            \
            else                                                                                 \
                for (ptrdiff_t i = 0; i < n; i++) out[i] += ws * g[i];                           \
            first = 0;                                                                           \
        }                                                                                        \
    }

CEDF_SHARED_SUM(float, f32)
CEDF_SHARED_SUM(double, f64)

#endif
