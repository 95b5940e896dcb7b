/* gs_hist: exact small values, bucket geometry, known distributions within 1%, merge. */
#include "hist.h"

#include "base/error.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>

static gs_hist h;

static void setup(void)
{
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_hist_init(&h, &err), GS_OK);
}

static void teardown(void)
{
    gs_hist_free(&h);
}

TestSuite(hist, .init = setup, .fini = teardown);

/* |got - want| <= 1% of want */
static void within_1pct(uint64_t got, double want, const char *what)
{
    double rel = fabs((double)got - want) / want;
    cr_expect(rel <= 0.01, "%s: got %llu, want %.0f (off by %.3f%%)", what, (unsigned long long)got,
              want, rel * 100);
}

Test(hist, empty_is_zero)
{
    cr_expect_eq(gs_hist_percentile(&h, 50), 0);
    cr_expect_eq(gs_hist_percentile(&h, 100), 0);
    cr_expect_eq(gs_hist_mean(&h), 0.0);
}

Test(hist, small_values_are_exact)
{
    for (uint64_t v = 1; v <= 100; v++)
        gs_hist_record(&h, v);
    cr_expect_eq(gs_hist_percentile(&h, 50), 50);
    cr_expect_eq(gs_hist_percentile(&h, 99), 99);
    cr_expect_eq(gs_hist_percentile(&h, 99.9), 100);
    cr_expect_eq(gs_hist_percentile(&h, 0), 1);
    cr_expect_eq(gs_hist_percentile(&h, 100), 100);
    cr_expect_eq(h.count, 100);
    cr_expect_float_eq(gs_hist_mean(&h), 50.5, 1e-9);
}

Test(hist, buckets_cover_every_value_within_one_128th)
{
    /* Every bucket's range contains the values that map to it, the ranges tile the line
     * (each starts one past the previous one's end) and none is wider than 1/128 of its
     * lower bound. */
    uint64_t prev_hi = 0;
    for (size_t i = 0; i < GS_HIST_BUCKETS; i++) {
        uint64_t lo, hi;
        gs_hist_bucket_range(i, &lo, &hi);
        if (i > 0)
            cr_assert_eq(lo, prev_hi + 1, "bucket %zu starts at %llu, previous ended at %llu", i,
                         (unsigned long long)lo, (unsigned long long)prev_hi);
        cr_assert_eq(gs_hist_index(lo), i);
        cr_assert_eq(gs_hist_index(hi), i);
        if (lo >= 256)
            cr_assert((double)(hi - lo + 1) / (double)lo <= 1.0 / 128 + 1e-12,
                      "bucket %zu is too wide", i);
        prev_hi = hi;
    }
    cr_expect_eq(prev_hi, UINT64_MAX);
    cr_expect_eq(gs_hist_index(UINT64_MAX), GS_HIST_BUCKETS - 1);
}

Test(hist, uniform_distribution_percentiles_within_1pct)
{
    /* Every value 1..1,000,000 once (nanoseconds up to 1 ms): percentile p is p% of 1e6. */
    for (uint64_t v = 1; v <= 1000000; v++)
        gs_hist_record(&h, v);
    within_1pct(gs_hist_percentile(&h, 50), 500000, "p50");
    within_1pct(gs_hist_percentile(&h, 95), 950000, "p95");
    within_1pct(gs_hist_percentile(&h, 99), 990000, "p99");
    within_1pct(gs_hist_percentile(&h, 99.9), 999000, "p99.9");
    cr_expect_eq(gs_hist_percentile(&h, 100), 1000000);
    cr_expect_eq(h.min, 1);
    cr_expect_float_eq(gs_hist_mean(&h), 500000.5, 1e-3);
}

Test(hist, exponential_distribution_percentiles_within_1pct)
{
    /* A deterministic exponential sample: the inverse CDF on a regular grid of 200,000
     * points, mean 2 ms in nanoseconds. Its percentile q is -ln(1 - q) * mean. */
    const double mean = 2e6;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        double u = (i + 0.5) / n;
        gs_hist_record(&h, (uint64_t)llround(-log(1 - u) * mean));
    }
    const double qs[] = {50, 95, 99, 99.9};
    const char *names[] = {"p50", "p95", "p99", "p99.9"};
    for (int k = 0; k < 4; k++)
        within_1pct(gs_hist_percentile(&h, qs[k]), -log(1 - qs[k] / 100) * mean, names[k]);
    within_1pct((uint64_t)gs_hist_mean(&h), mean, "mean");
}

Test(hist, a_long_tail_keeps_its_max_exactly)
{
    /* 999 fast answers (1 ms) and one 30 s stall: p99 stays 1 ms, p99.9 and max see it. */
    gs_hist_record_n(&h, 1000000, 999);
    gs_hist_record(&h, 30000000000ull);
    within_1pct(gs_hist_percentile(&h, 99), 1e6, "p99");
    within_1pct(gs_hist_percentile(&h, 99.95), 3e10, "p99.95");
    cr_expect_eq(gs_hist_percentile(&h, 100), 30000000000ull);
    gs_hist_record(&h, UINT64_MAX);
    cr_expect_eq(gs_hist_percentile(&h, 100), UINT64_MAX);
}

Test(hist, merge_equals_recording_everything_in_one)
{
    gs_error err;
    gs_error_init(&err);
    gs_hist a, b;
    cr_assert_eq(gs_hist_init(&a, &err), GS_OK);
    cr_assert_eq(gs_hist_init(&b, &err), GS_OK);
    for (uint64_t v = 1; v <= 50000; v++) {
        gs_hist_record(v % 2 ? &a : &b, v * 37);
        gs_hist_record(&h, v * 37);
    }
    gs_hist_merge(&a, &b);
    cr_expect_eq(a.count, h.count);
    cr_expect_eq(a.min, h.min);
    cr_expect_eq(a.max, h.max);
    for (double p = 1; p < 100; p += 7.5)
        cr_expect_eq(gs_hist_percentile(&a, p), gs_hist_percentile(&h, p), "p%g", p);
    gs_hist_reset(&a);
    cr_expect_eq(a.count, 0);
    cr_expect_eq(gs_hist_percentile(&a, 50), 0);
    gs_hist_free(&a);
    gs_hist_free(&b);
}
