/* The JSON validator's fast path: "certainly valid" or "not sure", in two
 * stages over 64-byte blocks. The module docstring of _framing.pyx ("The JSON
 * validator") describes the algorithm and why accepting is sound; this is a
 * map of the code.
 *
 *   lp_fast_function(LP_FAST_AVX2 or LP_FAST_SSE2): the checker, or NULL if
 *   this build or CPU lacks it. A checker returns 1 when s[:n] is certainly
 *   one JSON value that json_check accepts, 0 when it is not sure (invalid,
 *   or valid in a way it leaves to json_check: non-ASCII bytes, surrogate
 *   escapes, nesting deeper than 63, exponents of 3 digits...).
 *
 *   lp_fast_stage1 (stage 1): up to 16 blocks at a time; lp_fast_classify_*
 *   make each block's masks, lp_fast_block turns them into tokens, scalar
 *   starts and scalar runs and goes on with the flat object and plain
 *   integer checks; a block wholly inside one string takes a short cut.
 *
 *   lp_fast_body (stage 2): a flat object passed by stage 1 goes to
 *   lp_fast_flat (first and last token, scalars by lp_fast_run_ok or
 *   lp_fast_scalar); any other line is walked token by token with the
 *   grammar (gotos, a 64-bit stack of container kinds).
 *
 * The two variants are the same code (always-inline functions taking the
 * block classifier, the prefix XOR and the bit count as constants): SSE2 (any
 * x86-64) and AVX2 (with BMI1/2, PCLMUL and POPCNT, compiled for them by a
 * target attribute and chosen at run time). Only x86-64 with GCC or Clang
 * builds them; LP_PORTABLE builds and other CPUs get no fast path
 * (lp_fast_function returns NULL).
 */
#ifndef LP_JSON_FAST_H
#define LP_JSON_FAST_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { LP_FAST_OFF = 0, LP_FAST_SSE2 = 1, LP_FAST_AVX2 = 2 };

typedef int (*lp_fast_fn)(const uint8_t *s, size_t n);

#if !defined(LP_PORTABLE) && defined(__x86_64__) && defined(__SSE2__) && (defined(__GNUC__) || defined(__clang__))
#define LP_FAST_X86 1
#else
#define LP_FAST_X86 0
#endif

#if LP_FAST_X86
#include <immintrin.h>

#define LP_FAST_INLINE static inline __attribute__((always_inline))
#define LP_FAST_RARE(x) __builtin_expect(!!(x), 0)
#define LP_FAST_AVX2_TARGET __attribute__((target("avx2,bmi,bmi2,pclmul,popcnt")))
#define LP_EVEN_BITS 0x5555555555555555ULL
#define LP_ODD_BITS 0xAAAAAAAAAAAAAAAAULL

/* Bytes that may follow a number or a literal: whitespace, an operator, a quote. */
static const unsigned char LP_FAST_DELIM[256] = {
    [' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1,
    ['{'] = 1, ['}'] = 1, ['['] = 1, [']'] = 1, [':'] = 1, [','] = 1, ['"'] = 1,
};
/* Bytes a backslash may escape in one byte (\u is checked on its own). */
static const unsigned char LP_FAST_ESC[256] = {
    ['"'] = 1, ['\\'] = 1, ['/'] = 1, ['b'] = 1, ['f'] = 1, ['n'] = 1, ['r'] = 1, ['t'] = 1,
};
/* Hex digit values, 16 for anything else. */
static const unsigned char LP_FAST_HEX[256] = {
    [0 ... 255] = 16,
    ['0'] = 0, ['1'] = 1, ['2'] = 2, ['3'] = 3, ['4'] = 4, ['5'] = 5, ['6'] = 6, ['7'] = 7, ['8'] = 8, ['9'] = 9,
    ['a'] = 10, ['b'] = 11, ['c'] = 12, ['d'] = 13, ['e'] = 14, ['f'] = 15,
    ['A'] = 10, ['B'] = 11, ['C'] = 12, ['D'] = 13, ['E'] = 14, ['F'] = 15,
};

/* Vector constants. The code reads them through an opaque pointer
   (lp_fast_consts), so they are memory operands: GCC otherwise rebuilds
   each one with a broadcast, at every use it has no register for. */
typedef struct {
    uint8_t quote[32], bslash[32], space[32], colon[32], comma[32], open[32], close[32];
    uint8_t digit_bias[32], digit_limit[32], zero[32], ones[32], ops[32];
} lp_fast_consts;

static const lp_fast_consts LP_FAST_K __attribute__((aligned(32))) = {
    .quote = {[0 ... 31] = '"'},
    .bslash = {[0 ... 31] = '\\'},
    .space = {[0 ... 31] = ' '},
    .colon = {[0 ... 31] = ':'},
    .comma = {[0 ... 31] = ','},
    .open = {[0 ... 31] = '{'},
    .close = {[0 ... 31] = '}'},
    .digit_bias = {[0 ... 31] = '0' + 128},
    .digit_limit = {[0 ... 31] = 256 - 118},
    .zero = {[0 ... 31] = '0'},
    .ones = {[0 ... 31] = 0xFF},
    /* By low nibble: the operator with that low nibble, with bit 5 set ('['
       and ']' share theirs with '{' and '}', which is what byte | 0x20 gives
       for them); 0 elsewhere, which no byte | 0x20 equals. */
    .ops = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ':', '{', ',', '}', 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ':', '{', ',', '}', 0, 0},
};

static inline const lp_fast_consts *lp_fast_consts_ptr(void) {
    const lp_fast_consts *k = &LP_FAST_K;
    __asm__("" : "+r"(k));      /* the compiler no longer knows what k points to */
    return k;
}

#define LP_FAST_V16(field) _mm_load_si128((const __m128i *)(K->field))
#define LP_FAST_V32(field) _mm256_load_si256((const __m256i *)(K->field))

/* One block's classes, bit k for byte k. ctl: a byte below 0x20 or above
   0x7f (negative as a signed byte); space: 0x20 only (tab, LF and CR are in
   ctl and sorted out by lp_fast_stage1). op: {}[]:, exactly, plus possibly
   the control bytes 0x0c and 0x1a in the AVX2 variant (they are in ctl, which
   bails out on them before op is used). colon: ':'. odd: bytes whose bit 0
   is set (among the operators: {}[], not : or ,). digit: 0-9. zero: 0. */
typedef struct {
    uint64_t quote, bslash, op, space, ctl, colon, odd, digit, zero;
} lp_fast_masks;

#define LP_FAST_CHUNK 16    /* blocks classified per stage 1 call (1 KiB) */

/* What stage 1 carries from one chunk of blocks to the next. */
typedef struct {
    uint64_t in_str;    /* all ones if the last block classified ended inside a string */
    uint64_t esc;       /* 1 if the next block's first byte is escaped */
    uint64_t prev_sc;   /* 1 if the last block's last byte is a scalar byte */
    uint64_t par_tok;   /* flat check: all ones if an odd number of tokens came before */
    uint64_t par_op;    /* the same for operators */
} lp_fast_carry;

/* Stage 1's output for one chunk. */
typedef struct {
    uint64_t tokens[LP_FAST_CHUNK];     /* token masks, a block each */
    uint64_t scalars[LP_FAST_CHUNK];    /* their scalar starts */
    uint64_t runs[LP_FAST_CHUNK];       /* their scalar bytes */
    uint64_t flat_err;  /* the flat object check so far (all chunks): not 0, not a flat object */
    unsigned brackets;  /* {}[] tokens so far (all chunks; at least, and at least 3 if more) */
    uint64_t unplain;   /* not 0: a scalar run of the last chunk may not be a plain integer */
    uint8_t pad[64];    /* a short line, padded with spaces */
} lp_fast_out;

static inline uint64_t lp_fast_mask16(__m128i v, int at) {
    return (uint64_t)(uint32_t)_mm_movemask_epi8(v) << at;
}

/* Classify p[:size] (size 32 or 64; the masks' other bits are 0). */
LP_FAST_INLINE void lp_fast_classify_sse2(const uint8_t *p, int size, lp_fast_masks *m, const lp_fast_consts *K) {
    uint64_t q = 0, b = 0, op = 0, sp = 0, ctl = 0, co = 0, odd = 0, dg = 0, z = 0;
    for (int k = 0; k < size; k += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + k));
        __m128i lower = _mm_or_si128(v, LP_FAST_V16(space));     /* '[' -> '{', ']' -> '}' */
        __m128i brackets = _mm_or_si128(_mm_cmpeq_epi8(lower, LP_FAST_V16(open)),
                                        _mm_cmpeq_epi8(lower, LP_FAST_V16(close)));
        __m128i is_colon = _mm_cmpeq_epi8(v, LP_FAST_V16(colon));
        __m128i punct = _mm_or_si128(_mm_cmpeq_epi8(v, LP_FAST_V16(comma)), is_colon);
        q |= lp_fast_mask16(_mm_cmpeq_epi8(v, LP_FAST_V16(quote)), k);
        b |= lp_fast_mask16(_mm_cmpeq_epi8(v, LP_FAST_V16(bslash)), k);
        op |= lp_fast_mask16(_mm_or_si128(brackets, punct), k);
        sp |= lp_fast_mask16(_mm_cmpeq_epi8(v, LP_FAST_V16(space)), k);
        /* v - 0x20 with signed saturation is negative exactly for v < 0x20 or v >= 0x80 */
        ctl |= lp_fast_mask16(_mm_subs_epi8(v, LP_FAST_V16(space)), k);
        co |= lp_fast_mask16(is_colon, k);
        odd |= lp_fast_mask16(_mm_slli_epi16(v, 7), k);     /* each byte's bit 0 to its top */
        /* v - '0' - 128 below -118 (signed) exactly for the ten digits */
        dg |= lp_fast_mask16(_mm_cmpgt_epi8(LP_FAST_V16(digit_limit), _mm_sub_epi8(v, LP_FAST_V16(digit_bias))), k);
        z |= lp_fast_mask16(_mm_cmpeq_epi8(v, LP_FAST_V16(zero)), k);
    }
    m->quote = q; m->bslash = b; m->op = op; m->space = sp; m->ctl = ctl; m->colon = co; m->odd = odd;
    m->digit = dg; m->zero = z;
}

/* The SSE2 variant's string classes of a 64-byte block: quote, bslash, ctl. */
LP_FAST_INLINE void lp_fast_classify_str_sse2(const uint8_t *p, lp_fast_masks *m, const lp_fast_consts *K) {
    uint64_t q = 0, b = 0, ctl = 0;
    for (int k = 0; k < 64; k += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + k));
        q |= lp_fast_mask16(_mm_cmpeq_epi8(v, LP_FAST_V16(quote)), k);
        b |= lp_fast_mask16(_mm_cmpeq_epi8(v, LP_FAST_V16(bslash)), k);
        ctl |= lp_fast_mask16(_mm_subs_epi8(v, LP_FAST_V16(space)), k);
    }
    m->quote = q; m->bslash = b; m->ctl = ctl;
}

/* The SSE2 variant's other classes of a 64-byte block. */
LP_FAST_INLINE void lp_fast_classify_rest_sse2(const uint8_t *p, lp_fast_masks *m, const lp_fast_consts *K) {
    lp_fast_masks all;
    lp_fast_classify_sse2(p, 64, &all, K);
    m->op = all.op; m->space = all.space; m->colon = all.colon; m->odd = all.odd;
    m->digit = all.digit; m->zero = all.zero;
}

/* The classes of the 32 bytes v, as 32-bit masks, but for bslash and ctl
   (rare: see lp_fast_classify_avx2). */
typedef struct {
    uint32_t quote, op, space, colon, odd, digit, zero;
} lp_fast_masks32;

LP_FAST_AVX2_TARGET LP_FAST_INLINE lp_fast_masks32 lp_fast_classify32_avx2(__m256i v, const lp_fast_consts *K) {
    const __m256i space = LP_FAST_V32(space);
    lp_fast_masks32 m;
    m.quote = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, LP_FAST_V32(quote)));
    /* Bytes >= 0x80 look up 0 (the shuffle's rule). Matches: {}[]:, and 0x0c, 0x1a. */
    m.op = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_shuffle_epi8(LP_FAST_V32(ops), v),
                                                             _mm256_or_si256(v, space)));
    m.space = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, space));
    m.colon = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, LP_FAST_V32(colon)));
    m.odd = (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(v, 7));     /* bit 0 to the top */
    /* v - '0' - 128 below -118 (signed) exactly for the ten digits */
    m.digit = (uint32_t)_mm256_movemask_epi8(_mm256_cmpgt_epi8(LP_FAST_V32(digit_limit),
                                                               _mm256_sub_epi8(v, LP_FAST_V32(digit_bias))));
    m.zero = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, LP_FAST_V32(zero)));
    return m;
}

/* The string classes of the 64 bytes at p: quote, bslash, ctl (the others
   are left alone). Backslashes and control bytes are rare: one test finds
   whether there are any, and only then are their masks made. */
LP_FAST_AVX2_TARGET LP_FAST_INLINE void lp_fast_classify_str_avx2(const uint8_t *p, lp_fast_masks *m,
                                                                const lp_fast_consts *K) {
    __m256i lo = _mm256_loadu_si256((const __m256i *)p), hi = _mm256_loadu_si256((const __m256i *)(p + 32));
    __m256i bs_lo = _mm256_cmpeq_epi8(lo, LP_FAST_V32(bslash)), ctl_lo = _mm256_subs_epi8(lo, LP_FAST_V32(space));
    __m256i bs_hi = _mm256_cmpeq_epi8(hi, LP_FAST_V32(bslash)), ctl_hi = _mm256_subs_epi8(hi, LP_FAST_V32(space));
    m->quote = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(lo, LP_FAST_V32(quote)))
               | (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(hi, LP_FAST_V32(quote))) << 32;
    if (_mm256_movemask_epi8(_mm256_or_si256(_mm256_or_si256(bs_lo, ctl_lo), _mm256_or_si256(bs_hi, ctl_hi)))) {
        m->bslash = (uint32_t)_mm256_movemask_epi8(bs_lo) | (uint64_t)(uint32_t)_mm256_movemask_epi8(bs_hi) << 32;
        m->ctl = (uint32_t)_mm256_movemask_epi8(ctl_lo) | (uint64_t)(uint32_t)_mm256_movemask_epi8(ctl_hi) << 32;
    } else {
        m->bslash = m->ctl = 0;
    }
}

/* The other classes of the 64 bytes at p (after lp_fast_classify_str_avx2). */
LP_FAST_AVX2_TARGET LP_FAST_INLINE void lp_fast_classify_rest_avx2(const uint8_t *p, lp_fast_masks *m,
                                                                 const lp_fast_consts *K) {
    lp_fast_masks32 a = lp_fast_classify32_avx2(_mm256_loadu_si256((const __m256i *)p), K);
    lp_fast_masks32 b = lp_fast_classify32_avx2(_mm256_loadu_si256((const __m256i *)(p + 32)), K);
    m->op = a.op | (uint64_t)b.op << 32;
    m->space = a.space | (uint64_t)b.space << 32;
    m->colon = a.colon | (uint64_t)b.colon << 32;
    m->odd = a.odd | (uint64_t)b.odd << 32;
    m->digit = a.digit | (uint64_t)b.digit << 32;
    m->zero = a.zero | (uint64_t)b.zero << 32;
}

/* Classify p[:size] (size 32 or 64; the masks' other bits are 0). Backslashes
   and control bytes are rare: one test finds whether there are any, and
   only then are their masks made. */
LP_FAST_AVX2_TARGET LP_FAST_INLINE void lp_fast_classify_avx2(const uint8_t *p, int size, lp_fast_masks *m,
                                                            const lp_fast_consts *K) {
    __m256i lo = _mm256_loadu_si256((const __m256i *)p);
    lp_fast_masks32 a = lp_fast_classify32_avx2(lo, K);
    /* v - 0x20 with signed saturation is negative exactly for v < 0x20 or v >= 0x80 */
    __m256i bs_lo = _mm256_cmpeq_epi8(lo, LP_FAST_V32(bslash)), ctl_lo = _mm256_subs_epi8(lo, LP_FAST_V32(space));
    if (size == 64) {
        __m256i hi = _mm256_loadu_si256((const __m256i *)(p + 32));
        lp_fast_masks32 b = lp_fast_classify32_avx2(hi, K);
        __m256i bs_hi = _mm256_cmpeq_epi8(hi, LP_FAST_V32(bslash)), ctl_hi = _mm256_subs_epi8(hi, LP_FAST_V32(space));
        m->quote = a.quote | (uint64_t)b.quote << 32;
        m->op = a.op | (uint64_t)b.op << 32;
        m->space = a.space | (uint64_t)b.space << 32;
        m->colon = a.colon | (uint64_t)b.colon << 32;
        m->odd = a.odd | (uint64_t)b.odd << 32;
        m->digit = a.digit | (uint64_t)b.digit << 32;
        m->zero = a.zero | (uint64_t)b.zero << 32;
        if (_mm256_movemask_epi8(_mm256_or_si256(_mm256_or_si256(bs_lo, ctl_lo), _mm256_or_si256(bs_hi, ctl_hi)))) {
            m->bslash = (uint32_t)_mm256_movemask_epi8(bs_lo) | (uint64_t)(uint32_t)_mm256_movemask_epi8(bs_hi) << 32;
            m->ctl = (uint32_t)_mm256_movemask_epi8(ctl_lo) | (uint64_t)(uint32_t)_mm256_movemask_epi8(ctl_hi) << 32;
        } else {
            m->bslash = m->ctl = 0;
        }
    } else {
        m->quote = a.quote;
        m->op = a.op;
        m->space = a.space;
        m->colon = a.colon;
        m->odd = a.odd;
        m->digit = a.digit;
        m->zero = a.zero;
        m->bslash = (uint32_t)_mm256_movemask_epi8(bs_lo);
        m->ctl = (uint32_t)_mm256_movemask_epi8(ctl_lo);
    }
}

/* Prefix XOR: bit k of the result is the XOR of bits 0..k of x. */
static inline uint64_t lp_fast_pxor_shifts(uint64_t x, const lp_fast_consts *K) {
    (void)K;
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    return x;
}

LP_FAST_AVX2_TARGET static inline uint64_t lp_fast_pxor_clmul(uint64_t x, const lp_fast_consts *K) {
    /* carry-less x * (2**64 - 1): bit k is the XOR of x's bits 0..k */
    __m128i r = _mm_clmulepi64_si128(_mm_cvtsi64_si128((long long)x), LP_FAST_V16(ones), 0);
    return (uint64_t)_mm_cvtsi128_si64(r);
}

LP_FAST_AVX2_TARGET static inline unsigned lp_fast_popcount(uint64_t x) {
    return (unsigned)__builtin_popcountll(x);
}

/* min(number of bits set in x, 3), without a popcnt instruction */
static inline unsigned lp_fast_count3(uint64_t x) {
    uint64_t x1 = x & (x - 1), x2 = x1 & (x1 - 1);
    return (x != 0) + (x1 != 0) + (x2 != 0);
}

/* Copy a line of 1..63 bytes into a 64-byte block (overlapping pieces). */
LP_FAST_INLINE void lp_fast_copy_short(uint8_t *d, const uint8_t *s, size_t n) {
    if (n >= 32) {
        memcpy(d, s, 32);
        memcpy(d + n - 32, s + n - 32, 32);
    } else if (n >= 16) {
        memcpy(d, s, 16);
        memcpy(d + n - 16, s + n - 16, 16);
    } else if (n >= 8) {
        memcpy(d, s, 8);
        memcpy(d + n - 8, s + n - 8, 8);
    } else if (n >= 4) {
        memcpy(d, s, 4);
        memcpy(d + n - 4, s + n - 4, 4);
    } else {
        for (size_t i = 0; i < n; i++)
            d[i] = s[i];
    }
}

/* The escape \u at s[i] ('u'): four hex digits, not a surrogate (U+D800-DFFF). */
static inline int lp_fast_u_escape(const uint8_t *s, size_t n, size_t i) {
    if (n - i < 5)
        return 0;
    unsigned h0 = LP_FAST_HEX[s[i + 1]], h1 = LP_FAST_HEX[s[i + 2]];
    if ((h0 | h1 | LP_FAST_HEX[s[i + 3]] | LP_FAST_HEX[s[i + 4]]) & 16)
        return 0;
    return !(h0 == 0xD && h1 >= 8);
}

typedef void (*lp_fast_classify_fn)(const uint8_t *p, int size, lp_fast_masks *m, const lp_fast_consts *K);
typedef void (*lp_fast_classify64_fn)(const uint8_t *p, lp_fast_masks *m, const lp_fast_consts *K);
typedef uint64_t (*lp_fast_pxor_fn)(uint64_t x, const lp_fast_consts *K);
typedef unsigned (*lp_fast_count_fn)(uint64_t x);

/* Stage 1's running state within a call. */
typedef struct {
    uint64_t in_str, esc, prev_sc, par_tok, par_op, flat_err;
    uint64_t zero_start;    /* 1 if the last block ended with a scalar run "0" begun there */
    uint64_t unplain;       /* not 0: a scalar run that may not be a plain integer */
    unsigned brackets;
} lp_fast_run;

/* The escaped bytes of a block whose backslashes are bslash (valid: the
   bits of the line's bytes). A backslash that the previous block's last one
   escapes starts no escape; every other run of backslashes escapes the byte
   after it if its length is odd: a run starting on an even bit ends on an
   odd one, and one starting on an odd bit on an even one. Adding a run's
   first bit to the run carries to the bit after it. */
LP_FAST_INLINE uint64_t lp_fast_escaped(lp_fast_run *r, uint64_t bslash, uint64_t valid) {
    uint64_t escaped = r->esc;
    uint64_t bs = bslash & ~r->esc;
    r->esc = 0;
    if (LP_FAST_RARE(bs)) {
        uint64_t starts = bs & ~(bs << 1);
        uint64_t after_even = (bs + (starts & LP_EVEN_BITS)) & ~bs;
        uint64_t sum_odd;
        /* a run from an odd bit through bit 63 has odd length: it escapes the next block's first byte */
        r->esc = __builtin_add_overflow(bs, starts & LP_ODD_BITS, &sum_odd);
        escaped |= (after_even & LP_ODD_BITS) | (sum_odd & ~bs & LP_EVEN_BITS);
        escaped &= valid;
    }
    return escaped;
}

/* 0 if every escaped byte (bits of escaped; blk[k] is byte k, at offset off + k in s) makes a valid escape. */
static inline int lp_fast_check_escapes(uint64_t escaped, const uint8_t *blk, const uint8_t *s, size_t n, size_t off) {
    do {
        unsigned k = (unsigned)__builtin_ctzll(escaped);
        uint8_t c = blk[k];
        if (!LP_FAST_ESC[c] && !(c == 'u' && lp_fast_u_escape(s, n, off + k)))
            return -1;
        escaped &= escaped - 1;
    } while (escaped);
    return 0;
}

/* The mask work of one block, from its classes m and escaped bytes (limited
   to the line: valid has a bit for each byte of the line in the block;
   blk[k] is its byte k; off its offset in s) to its tokens and scalar
   starts. Returns 0, or -1 to bail out. */
LP_FAST_INLINE int lp_fast_block(lp_fast_run *r, lp_fast_masks m, uint64_t escaped, uint64_t valid, const uint8_t *blk,
                                 const uint8_t *s, size_t n, size_t off, uint64_t *tokens_out,
                                 uint64_t *scalars_out, uint64_t *runs_out, const lp_fast_consts *K,
                                 lp_fast_pxor_fn pxor, lp_fast_count_fn count_bits) {

    /* Strings: from an opening quote up to (not including) its closing one. */
    uint64_t quote = m.quote & ~escaped;
    uint64_t in_str = pxor(quote, K) ^ r->in_str;
    r->in_str = 0 - (in_str >> 63);

    /* Control and non-ASCII bytes: only tab, LF and CR, and only outside strings. */
    uint64_t space = m.space;
    if (LP_FAST_RARE(m.ctl)) {
        uint64_t ctl = m.ctl;
        if (ctl & in_str)
            return -1;
        do {
            uint8_t c = blk[__builtin_ctzll(ctl)];
            if (c != '\t' && c != '\n' && c != '\r')
                return -1;
            ctl &= ctl - 1;
        } while (ctl);
        space |= m.ctl;
    }
    /* Escaped bytes (inside strings; outside them the scalar check bails). */
    if (LP_FAST_RARE(escaped) && lp_fast_check_escapes(escaped, blk, s, n, off))
        return -1;

    uint64_t scalar = ~(space | m.op | quote | in_str);
    uint64_t scalar_starts = scalar & ~((scalar << 1) | r->prev_sc);
    r->prev_sc = scalar >> 63;
    uint64_t ops = m.op & ~in_str;
    uint64_t tokens = ops | (quote & in_str) | scalar_starts;
    *tokens_out = tokens;
    *scalars_out = scalar_starts;
    *runs_out = scalar;

    /* Plain integers: every scalar byte a digit, no run "0" going on, no
       block all scalar (so a run spans at most two blocks: 128 digits). */
    if (!r->unplain) {      /* once one is not, the flat path parses them all: no need to know more */
        uint64_t zero_starts = scalar_starts & m.zero;
        r->unplain = (scalar & ~m.digit) | (zero_starts & (scalar >> 1)) | (r->zero_start & scalar)
                     | (scalar == ~0ULL);
        r->zero_start = zero_starts >> 63;
    }

    /* The flat object check: operators at even token ranks, colons at odd
       operator ranks, no scalar where a key goes (see the module docstring). */
    if (tokens && !r->flat_err) {
        uint64_t even_tok = pxor(tokens, K) ^ r->par_tok;   /* bit set: an odd number of tokens up to here */
        uint64_t even_op = pxor(ops, K) ^ r->par_op;
        r->par_tok = 0 - (even_tok >> 63);
        r->par_op = 0 - (even_op >> 63);
        r->flat_err = (ops ^ (tokens & even_tok)) | ((m.colon & ~in_str) ^ (ops & ~even_op))
                      | (scalar_starts & even_op);
        r->brackets += count_bits(ops & m.odd);
    }
    return 0;
}

/* Stage 1: classify up to LP_FAST_CHUNK blocks of s[:n] from off (< n) on
   into o->tokens and o->scalars, and go on with the flat object check.
   Returns how many blocks (>= 1), or -1 to bail out (a byte or escape it
   does not vouch for, or the input ends inside a string). The carries are
   written back only if the input goes on after the chunk. */
LP_FAST_INLINE int lp_fast_stage1(const uint8_t *s, size_t n, size_t off, lp_fast_carry *carry, lp_fast_out *o,
                                  const lp_fast_consts *K, lp_fast_classify_fn classify,
                                  lp_fast_classify64_fn classify_str, lp_fast_classify64_fn classify_rest,
                                  lp_fast_pxor_fn pxor, lp_fast_count_fn count_bits) {
    /* off == 0: the first chunk, from the zero state (a constant where inlined) */
    lp_fast_run r = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    if (off) {
        r.in_str = carry->in_str;
        r.esc = carry->esc;
        r.prev_sc = carry->prev_sc;
        r.par_tok = carry->par_tok;
        r.par_op = carry->par_op;
        r.flat_err = o->flat_err;
        r.brackets = o->brackets;
    }
    lp_fast_masks m;
    int count = 0;
    /* whole blocks */
    while (n - off >= 64) {
        classify_str(s + off, &m, K);
        uint64_t escaped = lp_fast_escaped(&r, m.bslash, ~0ULL);
        if (LP_FAST_RARE(!(m.quote & ~escaped) && r.in_str)) {
            /* Inside one string from end to end (a long message, a stack
               trace): no token, no scalar; only its escapes and control
               bytes to look at. */
            if (m.ctl || (escaped && lp_fast_check_escapes(escaped, s + off, s, n, off)))
                return -1;
            r.prev_sc = r.zero_start = 0;
            o->tokens[count] = o->scalars[count] = o->runs[count] = 0;
        } else {
            classify_rest(s + off, &m, K);
            if (lp_fast_block(&r, m, escaped, ~0ULL, s + off, s, n, off, &o->tokens[count], &o->scalars[count],
                              &o->runs[count], K, pxor, count_bits))
                return -1;
        }
        off += 64;
        if (LP_FAST_RARE(++count == LP_FAST_CHUNK)) {
            if (off >= n)
                break;
            o->flat_err = r.flat_err;
            o->brackets = r.brackets;
            carry->in_str = r.in_str;
            carry->esc = r.esc;
            carry->prev_sc = r.prev_sc;
            carry->par_tok = r.par_tok;
            carry->par_op = r.par_op;
            return count;
        }
    }
    if (off < n) {
        /* The last block: classify the line's last 32 or 64 bytes (bytes
           already seen included), shifted so that bit 0 is byte off, or a
           copy of a short line, padded with spaces: no read past the end. */
        size_t rem = n - off;           /* 1..63 */
        uint64_t valid = (1ULL << rem) - 1;
        const uint8_t *blk = s + off;
        unsigned shift;
        if (rem <= 32 && n >= 32) {
            shift = (unsigned)(32 - rem);
            classify(s + n - 32, 32, &m, K);
        } else if (n >= 64) {
            shift = (unsigned)(64 - rem);
            classify(s + n - 64, 64, &m, K);
        } else {
            shift = 0;
            memset(o->pad, ' ', 64);
            lp_fast_copy_short(o->pad, s, n);
            blk = o->pad;
            classify(blk, n <= 32 ? 32 : 64, &m, K);
        }
        m.quote >>= shift;
        m.bslash >>= shift;
        m.op >>= shift;
        m.space = (m.space >> shift) | ~valid;  /* what follows the line counts as whitespace */
        m.ctl >>= shift;
        m.colon >>= shift;
        m.odd >>= shift;
        m.digit >>= shift;
        m.zero >>= shift;
        if (lp_fast_block(&r, m, lp_fast_escaped(&r, m.bslash, valid), valid, blk, s, n, off,
                          &o->tokens[count], &o->scalars[count], &o->runs[count], K, pxor, count_bits))
            return -1;
        count++;
    }
    o->flat_err = r.flat_err;
    o->brackets = r.brackets;
    o->unplain = r.unplain;
    return r.in_str ? -1 : count;       /* a string left open: bail */
}

/* Bit k set if p[k] (k < 16) is not an ASCII digit. */
static inline unsigned lp_fast_nondigits16(const uint8_t *p, const lp_fast_consts *K) {
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    /* v - '0' - 128 below -118 (signed) exactly for the ten digits */
    __m128i digit = _mm_cmpgt_epi8(LP_FAST_V16(digit_limit), _mm_sub_epi8(v, LP_FAST_V16(digit_bias)));
    return ~(unsigned)_mm_movemask_epi8(digit) & 0xFFFFu;
}

/* The first byte at or after p that is not an ASCII digit (end if none);
   begin is the line's start (bytes from there on may be read). */
LP_FAST_INLINE const uint8_t *lp_fast_digits(const uint8_t *p, const uint8_t *begin, const uint8_t *end,
                                             const lp_fast_consts *K) {
    while (end - p >= 16) {
        unsigned other = lp_fast_nondigits16(p, K);
        if (other)
            return p + __builtin_ctz(other);
        p += 16;
    }
    if (end - begin >= 16) {
        /* the last 16 bytes of the line, the ones before p shifted out */
        unsigned other = (lp_fast_nondigits16(end - 16, K) >> (16 - (end - p))) | (1u << (end - p));
        return p + __builtin_ctz(other);
    }
    while (p < end && (uint8_t)(*p - '0') < 10)
        p++;
    return p;
}

/* The scalar run at p, first byte c: lp_fast_scalar's answer, quicker for
   an integer of up to 15 digits (any other goes to lp_fast_scalar). */
LP_FAST_INLINE int lp_fast_scalar_quick(const uint8_t *p, const uint8_t *begin, const uint8_t *end, uint8_t c,
                                        const lp_fast_consts *K);

/* The scalar run at p (first byte c, outside strings): 1 if it is exactly a
   number json_check accepts or true/false/null, followed by a delimiter or
   the end. Numbers: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]{1,2})? with at
   most 200 integer digits: below 10**299, far from a double's overflow. */
LP_FAST_INLINE int lp_fast_scalar(const uint8_t *p, const uint8_t *begin, const uint8_t *end, uint8_t c,
                                  const lp_fast_consts *K) {
    if ((uint8_t)(c - '0') < 10 || c == '-') {
        if (c == '-') {
            if (++p == end)
                return 0;
            c = *p;
        }
        if (c == '0') {
            p++;
        } else if ((uint8_t)(c - '1') < 9) {
            const uint8_t *first = p;
            p = lp_fast_digits(p + 1, begin, end, K);
            if (p - first > 200)
                return 0;
        } else {
            return 0;
        }
        if (p == end)
            return 1;
        if (*p == '.') {
            p++;
            if (p == end || (uint8_t)(*p - '0') >= 10)
                return 0;
            p = lp_fast_digits(p + 1, begin, end, K);
            if (p == end)
                return 1;
        }
        if ((*p | 0x20) == 'e') {
            p++;
            if (p != end && (*p == '+' || *p == '-'))
                p++;
            if (p == end || (uint8_t)(*p - '0') >= 10)
                return 0;
            p++;
            if (p != end && (uint8_t)(*p - '0') < 10) {
                p++;
                if (p != end && (uint8_t)(*p - '0') < 10)
                    return 0;   /* 3 exponent digits or more: not sure */
            }
            if (p == end)
                return 1;
        }
        return LP_FAST_DELIM[*p];
    }
    uint32_t word, want_true, want_null, want_alse;
    memcpy(&want_true, "true", 4);
    memcpy(&want_null, "null", 4);
    memcpy(&want_alse, "alse", 4);
    if (c == 't' || c == 'n') {
        if (end - p < 4)
            return 0;
        memcpy(&word, p, 4);
        if (word != (c == 't' ? want_true : want_null))
            return 0;
        p += 4;
    } else if (c == 'f') {
        if (end - p < 5)
            return 0;
        memcpy(&word, p + 1, 4);
        if (word != want_alse)
            return 0;
        p += 5;
    } else {
        return 0;
    }
    return p == end || LP_FAST_DELIM[*p];
}

LP_FAST_INLINE int lp_fast_scalar_quick(const uint8_t *p, const uint8_t *begin, const uint8_t *end, uint8_t c,
                                        const lp_fast_consts *K) {
    if ((uint8_t)(c - '1') < 9) {
        unsigned other = 0;     /* bit k: p[k] is no digit (or the end) */
        if (end - p >= 16)
            other = lp_fast_nondigits16(p, K);
        else if (end - begin >= 16)
            other = (lp_fast_nondigits16(end - 16, K) >> (16 - (end - p))) | (1u << (end - p));
        if (other) {
            const uint8_t *q = p + __builtin_ctz(other);
            if (q == end || LP_FAST_DELIM[*q])
                return 1;
        }
    }
    return lp_fast_scalar(p, begin, end, c, K);
}

/* Bit j set if p[j] is no digit, for j < 32; p[:32] readable, or begin..end
   holding at least 32 bytes (then the line's last 32 are read instead). */
LP_FAST_INLINE uint32_t lp_fast_nondigits32(const uint8_t *p, const uint8_t *begin, const uint8_t *end,
                                            const lp_fast_consts *K) {
    if (end - p >= 32)
        return lp_fast_nondigits16(p, K) | (uint32_t)lp_fast_nondigits16(p + 16, K) << 16;
    uint32_t last = lp_fast_nondigits16(end - 32, K) | (uint32_t)lp_fast_nondigits16(end - 16, K) << 16;
    return last >> (32 - (end - p));
}

/* 1 if the scalar run p[:len] (1 <= len < 64, followed by a delimiter or the
   end) is one of the quick shapes, all valid: true, false, null, or
   -?(0|[1-9][0-9]*)(.[0-9]+)? of up to 32 bytes. 0: not one of them
   (lp_fast_scalar decides). */
LP_FAST_INLINE int lp_fast_run_ok(const uint8_t *p, unsigned len, const uint8_t *begin, const uint8_t *end,
                                  const lp_fast_consts *K) {
    uint8_t c = *p;
    if ((uint8_t)(c - '0') < 10 || c == '-') {
        uint32_t other;                 /* bit j: p[j] is no digit, for j < len */
        if (len <= 16) {
            if (end - p >= 16)
                other = lp_fast_nondigits16(p, K);
            else if (end - begin >= 16)
                other = lp_fast_nondigits16(end - 16, K) >> (16 - (end - p));
            else
                return 0;
        } else if (len <= 32 && end - begin >= 32) {
            other = lp_fast_nondigits32(p, begin, end, K);
        } else {
            return 0;
        }
        if (len < 32)
            other &= (1u << len) - 1;
        unsigned first = c == '-';      /* where the digits begin */
        if (len <= first)
            return 0;                   /* a '-' alone */
        other &= ~(uint32_t)first;
        if (other & (1u << first))
            return 0;                   /* no digit after the '-' */
        if (!other)                     /* -?[0-9]+ */
            return p[first] != '0' || len == first + 1;
        /* -?[0-9]+.[0-9]+: one non-digit, a point, neither first nor last */
        unsigned dot = (unsigned)__builtin_ctz(other);
        return other == (1u << dot) && p[dot] == '.' && dot + 1 < len && (p[first] != '0' || dot == first + 1);
    }
    uint32_t word, want_true, want_null, want_alse;
    memcpy(&want_true, "true", 4);
    memcpy(&want_null, "null", 4);
    memcpy(&want_alse, "alse", 4);
    if (len == 4) {
        memcpy(&word, p, 4);
        return word == want_true || word == want_null;
    }
    if (len == 5 && c == 'f') {
        memcpy(&word, p + 1, 4);
        return word == want_alse;
    }
    return 0;
}

typedef int (*lp_fast_stage1_fn)(const uint8_t *s, size_t n, size_t off, lp_fast_carry *carry, lp_fast_out *o,
                                 const lp_fast_consts *K);

/* A flat object, classified in one chunk of count blocks with the flat check
   passed: its first token must be '{', its last '}', and its scalars parse. */
LP_FAST_INLINE int lp_fast_flat(const uint8_t *s, size_t n, const lp_fast_out *o, int count, const lp_fast_consts *K) {
    const uint8_t *const end = s + n;
    int first = 0, last = count - 1;
    while (!o->tokens[first])
        first++;
    while (!o->tokens[last])
        last--;
    if (s[64 * first + __builtin_ctzll(o->tokens[first])] != '{'
            || s[64 * last + 63 - __builtin_clzll(o->tokens[last])] != '}')
        return 0;
    if (!o->unplain)
        return 1;       /* every scalar is a plain integer */
    for (int i = first; i <= last; i++) {
        for (uint64_t sc = o->scalars[i]; sc; sc &= sc - 1) {
            unsigned k = (unsigned)__builtin_ctzll(sc);
            const uint8_t *p = s + 64 * i + k;
            uint64_t after = ~(o->runs[i] >> k);   /* bit j: p[j] is past the run (if j < 64 - k) */
            if (!(after & ((~0ULL) >> k)) || !lp_fast_run_ok(p, __builtin_ctzll(after), s, end, K)) {
                /* a run going on into the next block, or not one of the quick shapes */
                if (!lp_fast_scalar(p, s, end, *p, K))
                    return 0;
            }
        }
    }
    return 1;
}

/* Stage 2: the grammar over the tokens. stage1_first classifies the first
   chunk (inlined), stage1_more the chunks of lines over 1 KiB. */
LP_FAST_INLINE int lp_fast_body(const uint8_t *s, size_t n, lp_fast_stage1_fn stage1_first,
                                lp_fast_stage1_fn stage1_more) {
    const lp_fast_consts *const K = lp_fast_consts_ptr();
    lp_fast_carry carry;        /* written by stage 1 when a chunk is not the last */
    lp_fast_out o;
    const uint8_t *const end = s + n;
    const uint8_t *blk = s;     /* the block of o.tokens[bi] */
    size_t next;                /* the offset of the next chunk */
    /* The open containers: bit d is 1 if the one d levels below the innermost
       is an object, above them a 1 (so kinds == 1: none open; 64 bits hold 63). */
    uint64_t tokens, kinds = 1;
    int bi = 0, count;
    const uint8_t *p;
    uint8_t c;
    if (n == 0)
        return 0;
    count = stage1_first(s, n, 0, &carry, &o, K);
    if (count < 0)
        return 0;
    next = 64 * (size_t)count;
    if (next >= n && o.flat_err == 0 && o.brackets == 2)
        return lp_fast_flat(s, n, &o, count, K);
    tokens = o.tokens[0];

#define LP_FAST_NEXT(at_end)                                        \
    do {                                                            \
        while (tokens == 0) {                                       \
            if (++bi == count) {                                    \
                if (next >= n)                                      \
                    goto at_end;                                    \
                blk = s + next;                                     \
                count = stage1_more(s, n, next, &carry, &o, K);     \
                if (count < 0)                                      \
                    return 0;                                       \
                next += 64 * (size_t)count;                         \
                bi = 0;                                             \
            } else {                                                \
                blk += 64;                                          \
            }                                                       \
            tokens = o.tokens[bi];                                  \
        }                                                           \
        p = blk + __builtin_ctzll(tokens);                          \
        tokens &= tokens - 1;                                       \
        c = *p;                                                     \
    } while (0)

value:
    LP_FAST_NEXT(not_sure);
value_token:
    if (c == '"')
        goto after_value;
    if (c == '{')
        goto object;
    if (c == '[')
        goto array;
    if (!lp_fast_scalar_quick(p, s, end, c, K))
        return 0;
    goto after_value;
object:
    if (kinds >> 63)
        return 0;       /* deeper than 63: not sure */
    kinds = (kinds << 1) | 1;
    LP_FAST_NEXT(not_sure);
    if (c == '}')
        goto close;
    if (c != '"')
        return 0;
key:
    LP_FAST_NEXT(not_sure);
    if (c != ':')
        return 0;
    goto value;
array:
    if (kinds >> 63)
        return 0;
    kinds <<= 1;
    LP_FAST_NEXT(not_sure);
    if (c == ']')
        goto close;
    goto value_token;
close:
    kinds >>= 1;
after_value:
    if (kinds == 1)
        goto top_done;
    LP_FAST_NEXT(not_sure);
    if (c == ',') {
        if (!(kinds & 1))
            goto value;
        LP_FAST_NEXT(not_sure);
        if (c != '"')
            return 0;
        goto key;
    }
    if (c == ((kinds & 1) ? '}' : ']'))
        goto close;
    return 0;
top_done:
    LP_FAST_NEXT(done);
    return 0;           /* a token after the value */
done:
    return 1;           /* every block classified, no string open, grammar complete */
not_sure:
    return 0;
#undef LP_FAST_NEXT
}

#define LP_FAST_STAGE1_ARGS const uint8_t *s, size_t n, size_t off, lp_fast_carry *carry, lp_fast_out *o, \
                            const lp_fast_consts *K

LP_FAST_INLINE int lp_fast_stage1_sse2(LP_FAST_STAGE1_ARGS) {
    return lp_fast_stage1(s, n, off, carry, o, K, lp_fast_classify_sse2, lp_fast_classify_str_sse2,
                          lp_fast_classify_rest_sse2, lp_fast_pxor_shifts, lp_fast_count3);
}

static __attribute__((noinline)) int lp_fast_stage1_sse2_more(LP_FAST_STAGE1_ARGS) {
    return lp_fast_stage1_sse2(s, n, off, carry, o, K);
}

static int lp_fast_sse2(const uint8_t *s, size_t n) {
    return lp_fast_body(s, n, lp_fast_stage1_sse2, lp_fast_stage1_sse2_more);
}

LP_FAST_AVX2_TARGET LP_FAST_INLINE int lp_fast_stage1_avx2(LP_FAST_STAGE1_ARGS) {
    return lp_fast_stage1(s, n, off, carry, o, K, lp_fast_classify_avx2, lp_fast_classify_str_avx2,
                          lp_fast_classify_rest_avx2, lp_fast_pxor_clmul, lp_fast_popcount);
}

LP_FAST_AVX2_TARGET static __attribute__((noinline)) int lp_fast_stage1_avx2_more(LP_FAST_STAGE1_ARGS) {
    return lp_fast_stage1_avx2(s, n, off, carry, o, K);
}

LP_FAST_AVX2_TARGET static int lp_fast_avx2(const uint8_t *s, size_t n) {
    return lp_fast_body(s, n, lp_fast_stage1_avx2, lp_fast_stage1_avx2_more);
}

static inline int lp_fast_available(int variant) {
    if (variant == LP_FAST_SSE2)
        return 1;
    if (variant == LP_FAST_AVX2) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi")
            && __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("pclmul")
            && __builtin_cpu_supports("popcnt");
    }
    return 0;
}

static inline lp_fast_fn lp_fast_function(int variant) {
    if (!lp_fast_available(variant))
        return NULL;
    return variant == LP_FAST_AVX2 ? lp_fast_avx2 : lp_fast_sse2;
}

#else /* no fast path in this build */

static inline int lp_fast_available(int variant) { (void)variant; return 0; }
static inline lp_fast_fn lp_fast_function(int variant) { (void)variant; return NULL; }

#endif
#endif
