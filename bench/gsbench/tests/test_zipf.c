/* The Zipfian chooser against theory, the uniform helpers, and the workloads' determinism. */
#include "rng.h"
#include "workload.h"

#include "base/alloc.h"
#include "base/error.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#define DRAWS 2000000

/* The generator's own probability of key k >= 2 (Gray et al.): the share of u in [0, 1) that
 * maps to k, u(k) = ((k / n)^(1 - theta) - 1 + eta) / eta, clipped to the two exact keys. */
static double gen_cdf_below(uint64_t k, uint64_t n, double theta)
{
    double zn = gs_zeta(n, theta), z2 = gs_zeta(2, theta);
    double eta = (1 - pow(2.0 / (double)n, 1 - theta)) / (1 - z2 / zn);
    double lo = (1 + pow(0.5, theta)) / zn;
    double u = (pow((double)k / (double)n, 1 - theta) - 1 + eta) / eta;
    return u < lo ? lo : u > 1 ? 1 : u;
}

Test(zipf, top_keys_match_theory)
{
    /* YCSB's skew over 1,000 keys: P(k) = (1 / (k + 1)^0.99) / zeta(1000, 0.99). The
     * generator is exact for keys 0 and 1 and approximates the rest (its cumulative share is
     * within 4.5% of the theory's at every key). Checks: keys 0 and 1 against the theory,
     * keys 2..9 against the generator's own closed form (5-sigma binomial bounds), and the
     * cumulative share of the top 1, 2, 3, 5, 10, 20, 50, 100, 200, 500 keys within 6% of
     * the theory's. */
    gs_error err;
    gs_error_init(&err);
    gs_zipf z;
    const uint64_t n = 1000;
    cr_assert_eq(gs_zipf_init(&z, n, 0.99, &err), GS_OK);
    gs_rng r;
    gs_rng_seed(&r, 7);
    uint64_t *count = gs_calloc(n, sizeof *count);
    cr_assert_not_null(count);
    for (int i = 0; i < DRAWS; i++) {
        uint64_t k = gs_zipf_next(&z, &r);
        cr_assert_lt(k, n);
        count[k]++;
    }
    double zeta = gs_zeta(n, 0.99);
    for (uint64_t k = 0; k < 10; k++) {
        double p = k < 2 ? 1.0 / pow((double)k + 1, 0.99) / zeta
                         : gen_cdf_below(k + 1, n, 0.99) - gen_cdf_below(k, n, 0.99);
        double seen = (double)count[k] / DRAWS;
        double sigma = sqrt(p * (1 - p) / DRAWS);
        cr_expect(fabs(seen - p) < 5 * sigma, "key %llu: seen %.5f, expected %.5f",
                  (unsigned long long)k, seen, p);
    }
    const uint64_t tops[] = {1, 2, 3, 5, 10, 20, 50, 100, 200, 500};
    for (size_t t = 0; t < sizeof tops / sizeof tops[0]; t++) {
        double theory = gs_zeta(tops[t], 0.99) / zeta, seen = 0;
        for (uint64_t k = 0; k < tops[t]; k++)
            seen += (double)count[k] / DRAWS;
        cr_expect(fabs(seen - theory) / theory < 0.06, "top %llu keys: seen %.4f, theory %.4f",
                  (unsigned long long)tops[t], seen, theory);
    }
    /* Skewed: key 0 is drawn far more often than a middle key. */
    cr_expect_gt(count[0], 100 * (count[500] + 1));
    gs_free(count);
}

Test(zipf, degenerate_sizes_and_bad_arguments)
{
    gs_error err;
    gs_error_init(&err);
    gs_zipf z;
    gs_rng r;
    gs_rng_seed(&r, 1);
    cr_assert_eq(gs_zipf_init(&z, 1, 0.99, &err), GS_OK);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(gs_zipf_next(&z, &r), 0);
    cr_assert_eq(gs_zipf_init(&z, 2, 0.99, &err), GS_OK);
    int seen[2] = {0, 0};
    for (int i = 0; i < 10000; i++) {
        uint64_t k = gs_zipf_next(&z, &r);
        cr_assert_lt(k, 2);
        seen[k]++;
    }
    cr_expect_gt(seen[0], seen[1]);
    cr_expect_gt(seen[1], 0);
    cr_expect_eq(gs_zipf_init(&z, 0, 0.99, &err), GS_ERROR);
    cr_expect_str_eq(err.code, "INVALID_ARGUMENT");
    cr_expect_eq(gs_zipf_init(&z, 10, 1.0, &err), GS_ERROR);
}

Test(rng, below_is_uniform_and_seeded)
{
    gs_rng a, b;
    gs_rng_seed(&a, 42);
    gs_rng_seed(&b, 42);
    uint64_t count[10] = {0};
    for (int i = 0; i < 100000; i++) {
        uint64_t x = gs_rng_below(&a, 10);
        cr_assert_eq(x, gs_rng_below(&b, 10), "same seed, same sequence");
        count[x]++;
    }
    /* Binomial(100000, 0.1): sigma ~ 95; allow 5 sigma. */
    for (int k = 0; k < 10; k++)
        cr_expect(count[k] > 10000 - 475 && count[k] < 10000 + 475, "bucket %d: %llu", k,
                  (unsigned long long)count[k]);
    cr_expect_eq(gs_rng_below(&a, 0), 0);
    double f = gs_rng_fraction(&a);
    cr_expect(f >= 0 && f < 1);
}

Test(workload, rows_and_operations_are_deterministic)
{
    /* Row i is the same whatever else was generated before it; two generators with one seed
     * draw the same operations. */
    const gs_bench_workload *w = gs_bench_workload_find("ycsb-a");
    cr_assert_not_null(w);
    gs_bench_row *r1 = gs_malloc(sizeof *r1), *r2 = gs_malloc(sizeof *r2);
    cr_assert(r1 && r2);
    w->tables[0].row(42, 17, r1);
    w->tables[0].row(42, 3, r2);
    w->tables[0].row(42, 17, r2);
    cr_assert_eq(r1->ncols, 11);
    for (int c = 0; c < 11; c++) {
        cr_assert_eq(r1->v[c].len, r2->v[c].len);
        cr_assert(memcmp(r1->v[c].s, r2->v[c].s, r1->v[c].len) == 0);
    }
    cr_expect_eq(r1->v[1].len, 100);
    cr_expect(strcmp(r1->v[0].s, "user17") == 0);
    gs_free(r1);
    gs_free(r2);

    gs_error err;
    gs_error_init(&err);
    size_t nw;
    const gs_bench_workload *all = gs_bench_workloads(&nw);
    cr_assert_eq(nw, 8);
    for (size_t k = 0; k < nw; k++) {
        gs_bench_gen g1, g2;
        cr_assert_eq(gs_bench_gen_init(&g1, &all[k], 1000, 9, &err), GS_OK);
        cr_assert_eq(gs_bench_gen_init(&g2, &all[k], 1000, 9, &err), GS_OK);
        gs_bench_op *a = gs_calloc(1, sizeof *a), *b = gs_calloc(1, sizeof *b);
        cr_assert(a && b);
        int kinds[5] = {0};
        for (int i = 0; i < 2000; i++) {
            gs_bench_gen_next(&g1, a);
            gs_bench_gen_next(&g2, b);
            cr_assert_eq(a->kind, b->kind, "%s", all[k].name);
            cr_assert_eq(a->nstmts, b->nstmts);
            cr_assert_geq(a->nstmts, 1);
            kinds[a->kind]++;
            for (int s = 0; s < a->nstmts; s++) {
                cr_assert_lt(a->st[s].sql, all[k].nsql);
                cr_assert_eq(a->st[s].nparams, b->st[s].nparams);
            }
        }
        if (strcmp(all[k].name, "ycsb-a") == 0) {
            /* 50/50 within 5 sigma of 2,000 draws (sigma ~ 22). */
            cr_expect(kinds[GS_BENCH_READ] > 890 && kinds[GS_BENCH_READ] < 1110);
            cr_expect_eq(kinds[GS_BENCH_READ] + kinds[GS_BENCH_WRITE], 2000);
        }
        if (strcmp(all[k].name, "ycsb-f") == 0)
            cr_expect_gt(kinds[GS_BENCH_RMW], 800);
        if (strcmp(all[k].name, "tpcc") == 0)
            cr_expect_gt(kinds[GS_BENCH_TXN], 800);
        gs_free(a);
        gs_free(b);
    }
    char sql[512];
    gs_bench_insert_sql(&all[0].tables[0], 1, sql, sizeof sql);
    cr_expect_str_eq(sql,
                     "INSERT INTO users (id, name, email, age, bio) VALUES ($1, $2, $3, $4, $5)");
}
