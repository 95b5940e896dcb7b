/*
 * gs_hist: a log-linear latency histogram in the HdrHistogram style, for the load generator.
 *
 * Promise: values 0..255 are counted exactly; above that each power of two is split into 128
 * equal buckets, so a bucket is at most 1/128 of its lower bound wide and a percentile
 * (reported as the bucket's midpoint, clamped to the observed min and max) is within 0.4% of
 * the true order statistic (the acceptance bound is 1%). The full uint64 range is covered:
 * nothing is clipped. min, max, count and sum are exact. Units are the caller's (the
 * generator records nanoseconds).
 *
 * Ownership: gs_hist_init allocates the bucket array (through gs_calloc); gs_hist_free
 * releases it. A zeroed gs_hist that failed to init is safe to free.
 *
 * Threads: not thread-safe; one owner at a time (the scheduler records under its mutex).
 */
#ifndef GS_BENCH_HIST_H
#define GS_BENCH_HIST_H

#include <gatestream/abi.h>

#include <stddef.h>
#include <stdint.h>

/** Sub-buckets per power of two (2^GS_HIST_SUB_BITS). */
#define GS_HIST_SUB_BITS 7
/** Number of buckets: the exact region [0, 256) and 56 octaves of 128 buckets. */
#define GS_HIST_BUCKETS (256 + 56 * 128)

typedef struct gs_hist {
    uint64_t *counts; /**< GS_HIST_BUCKETS counters */
    uint64_t count;   /**< values recorded */
    uint64_t min;     /**< smallest value (UINT64_MAX when empty) */
    uint64_t max;     /**< largest value (0 when empty) */
    long double sum;  /**< sum of the values, for the mean */
} gs_hist;

/** Allocate the buckets. On failure fills err (INTERNAL_ERROR) and returns GS_ERROR. */
gs_status gs_hist_init(gs_hist *h, gs_error *err);
void gs_hist_free(gs_hist *h);
/** Forget every value; keeps the allocation. */
void gs_hist_reset(gs_hist *h);

/** The bucket index of v, and the bucket's value range [lo, hi] (inclusive). */
size_t gs_hist_index(uint64_t v);
void gs_hist_bucket_range(size_t index, uint64_t *lo, uint64_t *hi);

void gs_hist_record(gs_hist *h, uint64_t v);
void gs_hist_record_n(gs_hist *h, uint64_t v, uint64_t n);
/** Add every value of src into dst. */
void gs_hist_merge(gs_hist *dst, const gs_hist *src);

/**
 * The value at percentile p (0..100): the smallest recorded value v such that at least p% of
 * the values are <= v, approximated by its bucket's midpoint and clamped to [min, max].
 * p <= 0 gives min, p >= 100 gives max; an empty histogram gives 0.
 */
uint64_t gs_hist_percentile(const gs_hist *h, double p);
/** Mean of the values (0 when empty). */
double gs_hist_mean(const gs_hist *h);

#endif
