/* The open-loop scheduler: see openloop.h. */
#include "openloop.h"

#include "base/alloc.h"
#include "base/error.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

int64_t gs_bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct timespec to_ts(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    return ts;
}

static void sleep_until(int64_t ns)
{
    struct timespec ts = to_ts(ns);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

void gs_bench_run_cfg_init(gs_bench_run_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->warmup_s = 1;
    cfg->duration_s = 5;
    cfg->max_inflight = 1024;
    cfg->grace_s = 1;
    cfg->drain_s = 10;
    cfg->late_ns = 1000000;
    cfg->slo_ms = 25;
    cfg->max_error_share = 0.001;
    cfg->seed = 42;
}

void gs_bench_result_free(gs_bench_result *r)
{
    gs_hist_free(&r->hist);
}

typedef struct run_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    gs_bench_op *pool;
    gs_bench_op **free_ops;
    size_t nfree;
    int inflight;
    int64_t m_start, m_end; /* the measured window of due times */
    int drained;            /* the drain is over: answers now count as timeouts */
    uint64_t in_window;     /* successful answers received inside the window */
    gs_bench_result *res;
} run_state;

static void on_done(void *ctx, gs_bench_op *op, gs_status st, const gs_error *err)
{
    run_state *rs = ctx;
    int64_t now = gs_bench_now_ns();
    pthread_mutex_lock(&rs->mu);
    gs_bench_result *res = rs->res;
    int measured = op->intended_ns >= rs->m_start && op->intended_ns < rs->m_end;
    if (measured) {
        int cancelled = st != GS_OK && err && strcmp(err->code, "CANCELLED") == 0;
        if (st == GS_OK && !rs->drained) {
            gs_hist_record(&res->hist, (uint64_t)(now - op->intended_ns));
            res->measured++;
            if (op->name < 4)
                res->per_op[op->name]++;
        } else if (st == GS_OK || rs->drained || cancelled) {
            res->timeouts++;
        } else {
            res->errors++;
            if (!res->first_error[0])
                snprintf(res->first_error, sizeof res->first_error, "%s: %s",
                         err && err->code[0] ? err->code : "ERROR",
                         err ? err->message : "(no message)");
        }
    }
    if (st == GS_OK && now >= rs->m_start && now < rs->m_end)
        rs->in_window++;
    rs->free_ops[rs->nfree++] = op;
    rs->inflight--;
    pthread_cond_broadcast(&rs->cv);
    pthread_mutex_unlock(&rs->mu);
}

/* Wait on the run's condition until `until_ns` at most (the mutex held). */
static void wait_until(run_state *rs, int64_t until_ns)
{
    struct timespec ts = to_ts(until_ns);
    pthread_cond_timedwait(&rs->cv, &rs->mu, &ts);
}

/* Take a free op, waiting while none is free until `deadline`; NULL when it passed. The
 * mutex is held on entry and exit. */
static gs_bench_op *take_op(run_state *rs, int64_t deadline)
{
    while (rs->nfree == 0) {
        int64_t now = gs_bench_now_ns();
        if (now >= deadline)
            return NULL;
        int64_t step = now + 50000000;
        wait_until(rs, step < deadline ? step : deadline);
    }
    gs_bench_op *op = rs->free_ops[--rs->nfree];
    rs->inflight++;
    if (rs->inflight > rs->res->max_inflight_seen)
        rs->res->max_inflight_seen = rs->inflight;
    return op;
}

static int64_t due_time(int64_t t0, uint64_t i, double rate)
{
    return t0 + (int64_t)llround((double)i * 1e9 / rate);
}

/* The open-loop timeline. Returns when sending stopped. */
static void run_open(run_state *rs, const gs_bench_target_vt *vt, void *target, gs_bench_gen *gen,
                     const gs_bench_run_cfg *cfg, int64_t t0)
{
    gs_bench_result *res = rs->res;
    int64_t hard_stop = rs->m_end + (int64_t)(cfg->grace_s * 1e9);
    uint64_t i = 0;
    for (;; i++) {
        int64_t due = due_time(t0, i, cfg->rate);
        if (due >= rs->m_end)
            return;
        if (gs_bench_now_ns() < due)
            sleep_until(due);
        pthread_mutex_lock(&rs->mu);
        gs_bench_op *op = take_op(rs, hard_stop);
        pthread_mutex_unlock(&rs->mu);
        if (!op)
            break;
        int64_t now = gs_bench_now_ns();
        if (now >= hard_stop) {
            pthread_mutex_lock(&rs->mu);
            rs->free_ops[rs->nfree++] = op;
            rs->inflight--;
            pthread_mutex_unlock(&rs->mu);
            break;
        }
        int in_window = due >= rs->m_start;
        if (in_window && now - due > cfg->late_ns) {
            pthread_mutex_lock(&rs->mu);
            res->late++;
            pthread_mutex_unlock(&rs->mu);
        }
        gs_bench_gen_next(gen, op);
        op->intended_ns = due;
        op->issued_ns = now;
        op->target_data = NULL;
        vt->submit(target, op);
    }
    /* The requests never sent: their latency is at least the time from due to now. */
    int64_t stop = gs_bench_now_ns();
    pthread_mutex_lock(&rs->mu);
    for (;; i++) {
        int64_t due = due_time(t0, i, cfg->rate);
        if (due >= rs->m_end)
            break;
        if (due < rs->m_start)
            continue;
        res->unissued++;
        gs_hist_record(&res->hist, (uint64_t)(stop > due ? stop - due : 0));
    }
    pthread_mutex_unlock(&rs->mu);
}

/* Closed loop: every free op is sent at once; latency from the send. */
static void run_closed(run_state *rs, const gs_bench_target_vt *vt, void *target, gs_bench_gen *gen)
{
    for (;;) {
        pthread_mutex_lock(&rs->mu);
        gs_bench_op *op = take_op(rs, rs->m_end);
        pthread_mutex_unlock(&rs->mu);
        if (!op)
            return;
        int64_t now = gs_bench_now_ns();
        if (now >= rs->m_end) {
            pthread_mutex_lock(&rs->mu);
            rs->free_ops[rs->nfree++] = op;
            rs->inflight--;
            pthread_mutex_unlock(&rs->mu);
            return;
        }
        gs_bench_gen_next(gen, op);
        op->intended_ns = now;
        op->issued_ns = now;
        op->target_data = NULL;
        vt->submit(target, op);
    }
}

static uint64_t scheduled_in_window(const gs_bench_run_cfg *cfg, int64_t t0, int64_t m_start,
                                    int64_t m_end)
{
    /* Count i with m_start <= t0 + i/rate < m_end, exactly as due_time rounds. */
    uint64_t n = 0;
    uint64_t i = (uint64_t)floor((double)(m_start - t0) * cfg->rate / 1e9);
    if (i > 0)
        i--;
    for (;; i++) {
        int64_t due = due_time(t0, i, cfg->rate);
        if (due >= m_end)
            break;
        if (due >= m_start)
            n++;
    }
    return n;
}

gs_status gs_bench_run(const gs_bench_target_vt *vt, void *target, const gs_bench_workload *w,
                       const gs_bench_run_cfg *cfg, gs_bench_result *res, gs_error *err)
{
    memset(res, 0, sizeof *res);
    if (cfg->max_inflight < 1 || cfg->duration_s <= 0 || cfg->warmup_s < 0)
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "a run needs max_inflight >= 1, duration > 0 and warmup >= 0");
    if (gs_hist_init(&res->hist, err) != GS_OK)
        return GS_ERROR;
    res->rate = cfg->rate > 0 ? cfg->rate : 0;

    gs_bench_gen gen;
    if (gs_bench_gen_init(&gen, w, cfg->rows, cfg->seed, err) != GS_OK)
        return GS_ERROR;

    run_state rs;
    memset(&rs, 0, sizeof rs);
    rs.res = res;
    size_t n = (size_t)cfg->max_inflight;
    rs.pool = gs_calloc(n, sizeof *rs.pool);
    rs.free_ops = gs_calloc(n, sizeof *rs.free_ops);
    if (!rs.pool || !rs.free_ops) {
        gs_free(rs.pool);
        gs_free(rs.free_ops);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory for %zu requests in flight",
                            n);
    }
    for (size_t k = 0; k < n; k++)
        rs.free_ops[k] = &rs.pool[n - 1 - k];
    rs.nfree = n;
    pthread_mutex_init(&rs.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rs.cv, &ca);
    pthread_condattr_destroy(&ca);
    /* The window is set before start so no early answer can land in it. */
    rs.m_start = INT64_MAX;
    rs.m_end = INT64_MAX;

    gs_status st = vt->start(target, w, on_done, &rs, err);
    if (st != GS_OK)
        goto out;

    /* Sleep precisely: the default 50 us timer slack would add to every due time. */
    int old_slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0);
    int64_t t0 = gs_bench_now_ns() + 5000000;
    pthread_mutex_lock(&rs.mu);
    rs.m_start = t0 + (int64_t)(cfg->warmup_s * 1e9);
    rs.m_end = rs.m_start + (int64_t)(cfg->duration_s * 1e9);
    pthread_mutex_unlock(&rs.mu);
    if (cfg->rate > 0) {
        res->scheduled = scheduled_in_window(cfg, t0, rs.m_start, rs.m_end);
        run_open(&rs, vt, target, &gen, cfg, t0);
    } else {
        sleep_until(t0);
        run_closed(&rs, vt, target, &gen);
    }

    if (old_slack > 0)
        prctl(PR_SET_TIMERSLACK, (unsigned long)old_slack, 0, 0, 0);

    /* Drain: wait for the answers still out, at most drain_s. */
    pthread_mutex_lock(&rs.mu);
    int64_t deadline = gs_bench_now_ns() + (int64_t)(cfg->drain_s * 1e9);
    while (rs.inflight > 0 && gs_bench_now_ns() < deadline)
        wait_until(&rs, deadline);
    rs.drained = 1;
    pthread_mutex_unlock(&rs.mu);
    vt->stop(target);

    pthread_mutex_lock(&rs.mu);
    int lost = rs.inflight;
    pthread_mutex_unlock(&rs.mu);
    if (lost > 0) {
        /* The target broke its contract: it may still touch those ops, so the pool is leaked
         * on purpose rather than freed under it. */
        gs_error_set(err, 0, "INTERNAL_ERROR",
                     "target %s stopped with %d requests unanswered (a target bug)", vt->name,
                     lost);
        pthread_cond_destroy(&rs.cv);
        pthread_mutex_destroy(&rs.mu);
        return GS_ERROR;
    }

    if (cfg->rate <= 0)
        res->scheduled = res->measured + res->errors + res->timeouts;
    res->achieved = (double)rs.in_window / cfg->duration_s;
    res->p50_ns = gs_hist_percentile(&res->hist, 50);
    res->p95_ns = gs_hist_percentile(&res->hist, 95);
    res->p99_ns = gs_hist_percentile(&res->hist, 99);
    res->p999_ns = gs_hist_percentile(&res->hist, 99.9);
    res->max_ns = res->hist.max;
    res->mean_ns = gs_hist_mean(&res->hist);
    uint64_t bad = res->errors + res->timeouts + res->unissued;
    double share = res->scheduled ? (double)bad / (double)res->scheduled : 1.0;
    res->pass = res->measured > 0 && (double)res->p99_ns < cfg->slo_ms * 1e6 &&
                share <= cfg->max_error_share &&
                (cfg->rate <= 0 || res->achieved >= 0.95 * cfg->rate);
    st = GS_OK;
out:
    pthread_cond_destroy(&rs.cv);
    pthread_mutex_destroy(&rs.mu);
    gs_free(rs.pool);
    gs_free(rs.free_ops);
    if (st != GS_OK)
        gs_bench_result_free(res);
    return st;
}
