/*
 * Seeded random numbers for the load generator: a xoshiro256** stream (seeded through
 * splitmix64), uniform integers without modulo bias, fractions, random text, and the
 * Zipfian key chooser YCSB uses (Gray et al., "Quickly generating billion-record synthetic
 * databases", SIGMOD 1994): key 0 is the hottest, P(k) ~ 1 / (k + 1)^theta.
 *
 * Promise: the same seed gives the same sequence on every machine (no libc rand, no floating
 * point in the integer paths), so every engine is loaded with identical rows and offered the
 * same operations.
 *
 * Ownership: plain value structs; nothing is allocated.
 * Threads: a gs_rng or gs_zipf is used by one thread at a time (gs_zipf_next only reads the
 * generator, so one gs_zipf may be shared by threads that each have their own gs_rng).
 */
#ifndef GS_BENCH_RNG_H
#define GS_BENCH_RNG_H

#include <gatestream/abi.h>

#include <stddef.h>
#include <stdint.h>

typedef struct gs_rng {
    uint64_t s[4];
} gs_rng;

/** One step of splitmix64 over *state: a good 64-bit hash of a counter. */
uint64_t gs_splitmix64(uint64_t *state);
void gs_rng_seed(gs_rng *r, uint64_t seed);
uint64_t gs_rng_next(gs_rng *r);
/** Uniform in [0, n); n == 0 gives 0. */
uint64_t gs_rng_below(gs_rng *r, uint64_t n);
/** Uniform in [0, 1) with 53 random bits. */
double gs_rng_fraction(gs_rng *r);
/** Fill out[0..len) with letters and digits (no NUL added). */
void gs_rng_text(gs_rng *r, char *out, size_t len);

typedef struct gs_zipf {
    uint64_t items;
    double theta, zetan, alpha, eta, half_pow_theta;
} gs_zipf;

/**
 * Prepare a chooser over [0, items) with skew theta (0 < theta < 1; YCSB uses 0.99).
 * Costs O(items) once (the zeta sum). Bad arguments fill err (INVALID_ARGUMENT).
 */
gs_status gs_zipf_init(gs_zipf *z, uint64_t items, double theta, gs_error *err);
uint64_t gs_zipf_next(const gs_zipf *z, gs_rng *r);
/** zeta(n, theta) = sum over i = 1..n of 1 / i^theta (the normaliser; used by tests). */
double gs_zeta(uint64_t n, double theta);

#endif
