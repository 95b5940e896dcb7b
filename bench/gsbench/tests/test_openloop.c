/*
 * The open-loop scheduler against a fake target that answers at once except for one stall of
 * a chosen length (the target's simulated behaviour): the stall must show in the measured
 * latencies even when the in-flight bound keeps the scheduler from sending (the coordinated
 * omission case), requests that could not be sent are counted, warm-up is excluded, errors
 * fail the run, and stop cancels what the target never started.
 */
#include "openloop.h"

#include "base/error.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

typedef struct fake {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    gs_bench_op *q[4096];
    size_t head, tail;
    int stopping;
    pthread_t worker;
    gs_bench_done_fn done;
    void *ctx;
    /* behaviour */
    int64_t stall_offset_ns; /* stall when serving the first op due this long after the first */
    int64_t stall_ns;
    int fail_every; /* 0 = never */
    /* observations */
    int64_t first_due;
    int stalled;
    uint64_t served, naive_over_50ms, cancelled;
} fake;

static int64_t now_ns(void)
{
    return gs_bench_now_ns();
}

static void *worker_main(void *arg)
{
    fake *f = arg;
    for (;;) {
        pthread_mutex_lock(&f->mu);
        while (f->head == f->tail && !f->stopping)
            pthread_cond_wait(&f->cv, &f->mu);
        if (f->stopping) {
            pthread_mutex_unlock(&f->mu);
            return NULL;
        }
        gs_bench_op *op = f->q[f->head++ % 4096];
        if (!f->first_due)
            f->first_due = op->intended_ns;
        int stall =
            !f->stalled && f->stall_ns > 0 && op->intended_ns >= f->first_due + f->stall_offset_ns;
        if (stall)
            f->stalled = 1;
        uint64_t n = ++f->served;
        pthread_mutex_unlock(&f->mu);
        if (stall) {
            /* The simulated engine stall. */
            struct timespec ts = {.tv_sec = f->stall_ns / 1000000000,
                                  .tv_nsec = f->stall_ns % 1000000000};
            nanosleep(&ts, NULL);
        }
        if (now_ns() - op->issued_ns > 50000000) {
            pthread_mutex_lock(&f->mu);
            f->naive_over_50ms++;
            pthread_mutex_unlock(&f->mu);
        }
        if (f->fail_every && n % (uint64_t)f->fail_every == 0) {
            gs_error e;
            gs_error_init(&e);
            gs_error_set(&e, 0, "QUERY_ERROR", "fake failure %llu", (unsigned long long)n);
            f->done(f->ctx, op, GS_ERROR, &e);
        } else {
            f->done(f->ctx, op, GS_OK, NULL);
        }
    }
}

static gs_status f_start(void *self, const gs_bench_workload *w, gs_bench_done_fn done, void *ctx,
                         gs_error *err)
{
    (void)w;
    (void)err;
    fake *f = self;
    f->done = done;
    f->ctx = ctx;
    f->stopping = 0;
    cr_assert_eq(pthread_create(&f->worker, NULL, worker_main, f), 0);
    return GS_OK;
}

static void f_submit(void *self, gs_bench_op *op)
{
    fake *f = self;
    pthread_mutex_lock(&f->mu);
    cr_assert_lt(f->tail - f->head, 4096);
    f->q[f->tail++ % 4096] = op;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void f_stop(void *self)
{
    fake *f = self;
    pthread_mutex_lock(&f->mu);
    f->stopping = 1;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->worker, NULL);
    gs_error e;
    gs_bench_cancelled(&e);
    while (f->head != f->tail) {
        f->cancelled++;
        f->done(f->ctx, f->q[f->head++ % 4096], GS_ERROR, &e);
    }
}

static const gs_bench_target_vt fake_vt = {
    .name = "fake",
    .start = f_start,
    .submit = f_submit,
    .stop = f_stop,
};

static fake *fake_new(void)
{
    static fake f;
    memset(&f, 0, sizeof f);
    pthread_mutex_init(&f.mu, NULL);
    pthread_cond_init(&f.cv, NULL);
    return &f;
}

static gs_bench_run_cfg cfg_for(double rate, double warmup, double duration, int inflight)
{
    gs_bench_run_cfg c;
    gs_bench_run_cfg_init(&c);
    c.rate = rate;
    c.warmup_s = warmup;
    c.duration_s = duration;
    c.max_inflight = inflight;
    c.rows = 100;
    return c;
}

static const gs_bench_workload *wl(void)
{
    return gs_bench_workload_find("point-select");
}

Test(openloop, stall_counts_against_requests_the_bound_held_back)
{
    /* One request in flight at most: while the target stalls 200 ms, the scheduler cannot
     * send, yet every request due in the stall is charged from its due time. */
    fake *f = fake_new();
    f->stall_offset_ns = 600000000; /* 0.4 s into the measured window */
    f->stall_ns = 200000000;
    gs_bench_run_cfg c = cfg_for(1000, 0.2, 1.0, 1);
    gs_bench_result r;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_bench_run(&fake_vt, f, wl(), &c, &r, &err), GS_OK, "%s", err.message);
    cr_expect(f->stalled, "the fake target stalled");
    cr_expect_eq(r.scheduled, 1000);
    cr_expect_eq(r.measured, r.scheduled);
    cr_expect_eq(r.errors + r.timeouts + r.unissued, 0);
    /* ~200 requests were due in the stall, with 200 .. 0 ms still to wait. */
    cr_expect_geq(r.max_ns, 180000000, "max %llu ns", (unsigned long long)r.max_ns);
    cr_expect_leq(r.max_ns, 500000000, "max %llu ns", (unsigned long long)r.max_ns);
    cr_expect_geq(r.p99_ns, 150000000, "p99 %llu ns", (unsigned long long)r.p99_ns);
    cr_expect_geq(r.p95_ns, 100000000, "p95 %llu ns", (unsigned long long)r.p95_ns);
    cr_expect_lt(r.p50_ns, 50000000, "p50 %llu ns", (unsigned long long)r.p50_ns);
    cr_expect_geq(r.late, 150, "late %llu", (unsigned long long)r.late);
    /* Measured from the send instead, the stall would be one slow request. */
    cr_expect_leq(f->naive_over_50ms, 5);
    cr_expect_eq(r.pass, 0, "a 200 ms stall misses a 25 ms p99");
    gs_bench_result_free(&r);
}

Test(openloop, stall_counts_when_the_scheduler_keeps_sending)
{
    /* A generous bound: requests keep going out on time and queue in the target. */
    fake *f = fake_new();
    f->stall_offset_ns = 600000000;
    f->stall_ns = 200000000;
    gs_bench_run_cfg c = cfg_for(1000, 0.2, 1.0, 1024);
    gs_bench_result r;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_bench_run(&fake_vt, f, wl(), &c, &r, &err), GS_OK, "%s", err.message);
    cr_expect_eq(r.measured, 1000);
    cr_expect_geq(r.p99_ns, 150000000, "p99 %llu ns", (unsigned long long)r.p99_ns);
    cr_expect_geq(r.max_inflight_seen, 150);
    gs_bench_result_free(&r);
}

Test(openloop, unsent_requests_are_counted_with_a_lower_bound)
{
    /* A stall that outlasts the window and its grace: what could not be sent is unissued,
     * recorded at least (stop - due), and the target's queue is cancelled on stop. */
    fake *f = fake_new();
    f->stall_offset_ns = 400000000; /* 0.2 s into a 0.5 s window */
    f->stall_ns = 1500000000;
    gs_bench_run_cfg c = cfg_for(1000, 0.2, 0.5, 1);
    c.grace_s = 0.1;
    gs_bench_result r;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_bench_run(&fake_vt, f, wl(), &c, &r, &err), GS_OK, "%s", err.message);
    cr_expect_geq(r.unissued, 150, "unissued %llu", (unsigned long long)r.unissued);
    cr_expect_eq(r.measured + r.unissued + r.errors + r.timeouts, r.scheduled);
    cr_expect_geq(r.p99_ns, 100000000, "p99 %llu ns", (unsigned long long)r.p99_ns);
    cr_expect_eq(r.pass, 0);
    gs_bench_result_free(&r);
}

Test(openloop, warmup_is_excluded_and_the_window_is_exact)
{
    fake *f = fake_new();
    gs_bench_run_cfg c = cfg_for(2000, 0.25, 0.5, 1024);
    gs_bench_result r;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_bench_run(&fake_vt, f, wl(), &c, &r, &err), GS_OK, "%s", err.message);
    cr_expect_eq(r.scheduled, 1000);
    cr_expect_eq(r.measured, 1000);
    cr_expect_eq(f->served, 1500, "warm-up requests are sent, not measured");
    cr_expect(r.achieved > 1800 && r.achieved < 2200, "achieved %.0f", r.achieved);
    cr_expect_eq(r.hist.count, 1000);
    cr_expect_leq(r.p50_ns, r.p95_ns);
    cr_expect_leq(r.p95_ns, r.p99_ns);
    cr_expect_leq(r.p99_ns, r.p999_ns);
    cr_expect_leq(r.p999_ns, r.max_ns);
    gs_bench_result_free(&r);
}

Test(openloop, errors_fail_the_run)
{
    fake *f = fake_new();
    f->fail_every = 10;
    gs_bench_run_cfg c = cfg_for(1000, 0.1, 0.5, 64);
    gs_bench_result r;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_bench_run(&fake_vt, f, wl(), &c, &r, &err), GS_OK, "%s", err.message);
    cr_expect(r.errors >= 45 && r.errors <= 55, "errors %llu", (unsigned long long)r.errors);
    cr_expect_eq(r.errors + r.measured, r.scheduled);
    cr_expect_eq(r.pass, 0);
    cr_expect(strstr(r.first_error, "QUERY_ERROR: fake failure") != NULL, "%s", r.first_error);
    gs_bench_result_free(&r);
}

Test(openloop, closed_loop_keeps_the_bound_busy)
{
    fake *f = fake_new();
    gs_bench_run_cfg c = cfg_for(0, 0.1, 0.3, 4);
    gs_bench_result r;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_bench_run(&fake_vt, f, wl(), &c, &r, &err), GS_OK, "%s", err.message);
    cr_expect_gt(r.measured, 100);
    cr_expect_eq(r.scheduled, r.measured + r.errors + r.timeouts);
    cr_expect_leq(r.max_inflight_seen, 4);
    cr_expect_gt(r.achieved, 0);
    gs_bench_result_free(&r);
}

Test(openloop, bad_configs_are_refused)
{
    fake *f = fake_new();
    gs_bench_run_cfg c = cfg_for(1000, 0.1, 0.3, 0);
    gs_bench_result r;
    gs_error err;
    gs_error_init(&err);
    cr_expect_eq(gs_bench_run(&fake_vt, f, wl(), &c, &r, &err), GS_ERROR);
    cr_expect_str_eq(err.code, "INVALID_ARGUMENT");
}
