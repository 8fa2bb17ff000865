/* Atomics, a futex-backed event count and a monotonic clock for logpipe's
 * ring buffer. Everything here is callable without the GIL.
 *
 * Atomics are the GCC/Clang __atomic builtins on plain integers, so Cython can
 * declare the fields as ordinary uint64_t and the orderings stay explicit at
 * each call site.
 *
 * The event count is how blocked threads park without polling: a waiter reads
 * the epoch, re-checks its condition, then sleeps in futex(WAIT) only while
 * the epoch is unchanged. A notifier publishes its change, issues a full fence
 * and looks at the waiter count: no waiter, no system call, which keeps the
 * uncontended fast path free of syscalls and shared writes.
 */
#ifndef LOGPIPE_LP_SYNC_H
#define LOGPIPE_LP_SYNC_H

#ifndef __linux__
#error "logpipe's ring buffer parks threads on a Linux futex; other platforms are not supported yet"
#endif

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- constants -------------------------------------------------------- */
#define LP_CLOSED_BIT 0x8000000000000000ULL /* in enqueue_pos: the ring is closed */
#define LP_SLOT_HEADER 16                   /* sequence (8), length (4), offset (4) */
#define LP_OUT_OF_LINE 0x80000000u          /* in a slot's offset: the record is a pointer to its copy */
#define LP_SPIN_LIMIT 200                   /* pause loops before parking (~2-5 us) */
#define LP_MAIN_THREAD_SLICE 0.05           /* longest park of the main thread between signal checks */
#define LP_TAKE_CHUNK 1024                  /* most records one batch claim takes */

#ifdef Py_GIL_DISABLED
#define LP_FREE_THREADED 1
#else
#define LP_FREE_THREADED 0
#endif

/* ---- atomics ---------------------------------------------------------- */
#define lp_load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define lp_load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define lp_store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define lp_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/* Strong CAS for a claim that must not fail spuriously: a consumer that
 * committed to a set of positions either gets exactly them or learns that
 * another consumer moved the position. */
static inline int lp_cas_strong_u64(uint64_t *p, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_RELAXED);
}

static inline int lp_cas_u64(uint64_t *p, uint64_t *expected, uint64_t desired) {
    /* Weak CAS: callers loop anyway. acq_rel on success orders the claim with
     * the slot accesses that follow it; relaxed on failure reloads cheaply. */
    return __atomic_compare_exchange_n(p, expected, desired, 1, __ATOMIC_ACQ_REL,
                                       __ATOMIC_RELAXED);
}
static inline uint64_t lp_fetch_or_u64(uint64_t *p, uint64_t v) {
    return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST);
}
static inline uint64_t lp_fetch_add_u64(uint64_t *p, uint64_t v) {
    return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL);
}
static inline uint32_t lp_fetch_add_u32(uint32_t *p, uint32_t v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
static inline uint32_t lp_fetch_sub_u32(uint32_t *p, uint32_t v) {
    return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST);
}
static inline int lp_cas_strong_u32(uint32_t *p, uint32_t expected, uint32_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
}
static inline uint64_t lp_fetch_sub_u64(uint64_t *p, uint64_t v) {
    return __atomic_fetch_sub(p, v, __ATOMIC_ACQ_REL);
}
static inline void lp_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

/* The full fence wanted right after an atomic read-modify-write. On x86 the
 * RMW's locked instruction already is one, and the compiler barrier keeps
 * the loads that follow after it, so a second fence would only cost time
 * (~2-3 ns here; the idea of Linux's smp_mb__after_atomic). Elsewhere it
 * is a real fence. */
static inline void lp_fence_after_rmw(void) {
#if defined(__x86_64__) || defined(__i386__)
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
#else
    lp_fence();
#endif
}


static inline void lp_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Ask for the cache line at p ahead of use (a hint: never faults). put_many
 * reads many Python objects scattered over the heap; fetching the next ones
 * while copying this one overlaps the misses instead of paying each in turn. */
#define lp_prefetch(p) __builtin_prefetch((const void *)(p), 0, 3)

/* Whether the 64-bit words p[0], p[stride], p[2 * stride], p[3 * stride]
 * hold v, v + 1, v + 2, v + 3, each read with an acquire load, compared at
 * once (their differences or'ed together): four ring slots ready, or free. */
static inline int lp_run_ready4(uint64_t *p, size_t stride, uint64_t v) {
    return ((__atomic_load_n(p, __ATOMIC_ACQUIRE) - v)
            | ((__atomic_load_n(p + stride, __ATOMIC_ACQUIRE) - v) ^ 1)
            | ((__atomic_load_n(p + 2 * stride, __ATOMIC_ACQUIRE) - v) ^ 2)
            | ((__atomic_load_n(p + 3 * stride, __ATOMIC_ACQUIRE) - v) ^ 3)) == 0;
}

/* How many of the 64-bit words p[0], p[stride], ..., p[(limit - 1) *
 * stride] hold v, v + 1, ... in a row, each read with an acquire load: a
 * producer checking that the slots it is about to claim are free. Four to
 * a turn, the four compared at once (differences or'ed together), with one
 * prefetch `ahead` words on per turn: a turn covers a 64-byte line of
 * 16-byte headers. Words past the first mismatch may be read; reading
 * changes nothing. */
static inline size_t lp_count_run(uint64_t *p, size_t stride, uint64_t v, size_t limit,
                                  size_t ahead) {
    size_t n = 0;
    while (n + 4 <= limit && lp_run_ready4(p, stride, v)) {
        lp_prefetch(p + ahead);
        n += 4;
        p += 4 * stride;
        v += 4;
    }
    while (n < limit && __atomic_load_n(p, __ATOMIC_ACQUIRE) == v) {
        n++;
        p += stride;
        v++;
    }
    return n;
}

/* Release-store v, v + 1, ..., v + n - 1 into the 64-bit words p[0],
 * p[stride], ..., p[(n - 1) * stride], in that order: a consumer handing a
 * run of slots back (their sequences). Four to a turn of the loop, whose
 * own instructions are then paid once per four stores. */
static inline void lp_store_release_run(uint64_t *p, size_t stride, uint64_t v, size_t n) {
    for (; n >= 4; n -= 4, p += 4 * stride, v += 4) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
        __atomic_store_n(p + stride, v + 1, __ATOMIC_RELEASE);
        __atomic_store_n(p + 2 * stride, v + 2, __ATOMIC_RELEASE);
        __atomic_store_n(p + 3 * stride, v + 3, __ATOMIC_RELEASE);
    }
    for (; n; n--, p += stride, v++)
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* Copy a record of n bytes. Most log records are short (tens to a few
 * hundred bytes), and for those a call into the C library's memcpy, which
 * first works out which of its strategies fits, costs about as much as the
 * copy: up to 256 bytes are moved here in 16-byte steps (fixed-size memcpy
 * calls compile to single unaligned vector moves), the last step
 * overlapping the one before it; the compiler unrolls the steps into a
 * chain of moves and compares. The common sizes are told from the rest
 * with one unsigned compare (16 <= n <= 256). */
static inline void lp_copy(char *dst, const char *src, size_t n) {
    if (n - 16 <= 240) {
        size_t i;
        for (i = 0; i + 16 < n; i += 16)
            memcpy(dst + i, src + i, 16);
        memcpy(dst + n - 16, src + n - 16, 16);
    } else if (n > 256) {
        memcpy(dst, src, n);
    } else if (n >= 8) {
        memcpy(dst, src, 8);
        memcpy(dst + n - 8, src + n - 8, 8);
    } else if (n >= 4) {
        memcpy(dst, src, 4);
        memcpy(dst + n - 4, src + n - 4, 4);
    } else {
        size_t i;
        for (i = 0; i < n; i++)
            dst[i] = src[i];
    }
}

/* ---- monotonic clock -------------------------------------------------- */
static inline double lp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Milliseconds of the coarse monotonic clock (the same clock as lp_now, at
 * tick resolution, ~5 ns to read): records are stamped with it on the way
 * in, so a batch knows how long its oldest record waited. Wraps every ~49
 * days; ages are computed with unsigned subtraction. */
static inline uint32_t lp_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

/* ---- event count ------------------------------------------------------
 * The epoch's low bit is "armed": some waiter registered since the last
 * wake. A notify wakes (one futex system call) only when the event is
 * armed, and disarms it by the same step that bumps the epoch; so while
 * woken waiters have not yet run (on a busy or single CPU that can take a
 * whole time slice), the notifies of every further put or get cost a load,
 * not a system call each. */
typedef struct {
    uint32_t epoch;   /* bit 0: armed; bits 1..31: count of wakes */
    uint32_t waiters; /* threads between lp_ec_prepare and lp_ec_done */
    uint64_t wakes;   /* futex wake calls made (observability) */
} lp_event_t;

/* Register as a waiter, arm the event and return the (armed) epoch to wait
 * on. The caller must re-check its condition AFTER this call and before
 * lp_ec_wait. */
static inline uint32_t lp_ec_prepare(lp_event_t *ev) {
    uint32_t epoch;
    __atomic_fetch_add(&ev->waiters, 1, __ATOMIC_SEQ_CST);
    epoch = __atomic_fetch_or(&ev->epoch, 1u, __ATOMIC_SEQ_CST) | 1u;
    lp_fence_after_rmw(); /* pairs with the fence in lp_ec_notify (store-fence-load on both sides) */
    return epoch;
}

static inline void lp_ec_done(lp_event_t *ev) {
    __atomic_fetch_sub(&ev->waiters, 1, __ATOMIC_SEQ_CST);
}

/* Sleep while the epoch still equals `epoch` (armed, not woken since), at
 * most `timeout` seconds (timeout < 0: no limit). Spurious returns are
 * fine: callers re-check. Returns 1 when a signal handler interrupted the
 * sleep (EINTR), so that a caller holding no GIL can go and run the
 * Python-level handlers. */
static inline int lp_ec_wait(lp_event_t *ev, uint32_t epoch, double timeout) {
    struct timespec ts, *tsp = NULL;
    long rc;
    if (timeout >= 0) {
        if (timeout > 1e9) timeout = 1e9;
        ts.tv_sec = (time_t)timeout;
        ts.tv_nsec = (long)((timeout - (double)ts.tv_sec) * 1e9);
        tsp = &ts;
    }
    rc = syscall(SYS_futex, &ev->epoch, FUTEX_WAIT_PRIVATE, epoch, tsp, NULL, 0);
    return rc == -1 && errno == EINTR;
}

/* Wake every parked waiter, if the event is armed: the notify without its
 * fence, for callers that have ordered their changes before it themselves.
 * Disarming is the bump itself (odd + 1 is even), done by one CAS, so of
 * racing notifiers one makes the call. */
static inline void lp_ec_wake_armed(lp_event_t *ev) {
    uint32_t epoch;
    if (__atomic_load_n(&ev->waiters, __ATOMIC_RELAXED) == 0) return;
    epoch = __atomic_load_n(&ev->epoch, __ATOMIC_RELAXED);
    while (epoch & 1u) {
        if (__atomic_compare_exchange_n(&ev->epoch, &epoch, epoch + 1u, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
            syscall(SYS_futex, &ev->epoch, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
            __atomic_fetch_add(&ev->wakes, 1, __ATOMIC_RELAXED);
            return;
        }
    }
}

/* Wake every parked waiter, if the event is armed. The fence pairs with
 * the seq_cst increment and arming in lp_ec_prepare: either the notifier
 * sees the waiter armed, or the waiter's re-check sees the change
 * published before this call. */
static inline void lp_ec_notify(lp_event_t *ev) {
    lp_fence();
    lp_ec_wake_armed(ev);
}

/* lp_ec_notify for a caller that has just made an atomic read-modify-write
 * after the changes the waiters must see (the consumers' subtraction from
 * the byte budget, after they hand slots back). */
static inline void lp_ec_notify_after_rmw(lp_event_t *ev) {
    lp_fence_after_rmw();
    lp_ec_wake_armed(ev);
}

#endif /* LOGPIPE_LP_SYNC_H */
