/* The rate sweep: see sweep.h. */
#include "sweep.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void gs_bench_stat_from(gs_bench_stat *s, const gs_bench_result *r, const char *kind,
                        int connections)
{
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->connections = connections;
    s->rate = r->rate;
    s->achieved = r->achieved;
    s->p50 = (double)r->p50_ns / 1e6;
    s->p95 = (double)r->p95_ns / 1e6;
    s->p99 = (double)r->p99_ns / 1e6;
    s->p999 = (double)r->p999_ns / 1e6;
    s->max = (double)r->max_ns / 1e6;
    s->mean = r->mean_ns / 1e6;
    s->scheduled = r->scheduled;
    s->measured = r->measured;
    s->errors = r->errors;
    s->timeouts = r->timeouts;
    s->late = r->late;
    s->unissued = r->unissued;
    s->pass = r->pass;
    s->load1 = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &s->load1) != 1)
            s->load1 = -1;
        fclose(f);
    }
    snprintf(s->first_error, sizeof s->first_error, "%s", r->first_error);
}

void gs_bench_sweep_cfg_init(gs_bench_sweep_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    gs_bench_run_cfg_init(&cfg->run);
    cfg->start_rate = 1000;
    cfg->max_rate = 4096000;
    cfg->min_rate = 125;
    cfg->bisect = 2;
    cfg->probe_s = 1;
    cfg->probe_inflight = 64;
    cfg->repeat = 1;
}

double gs_bench_rung_below(double rate)
{
    if (!(rate > 0))
        return 0;
    return 1000.0 * pow(2.0, floor(log2(rate / 1000.0) + 1e-9));
}

/* One rate, run cfg->repeat times: held when most runs held; the run with the median p99
 * is the one reported (with that verdict), the others are reported as "repeat". */
static gs_status run_at(const gs_bench_target_vt *vt, void *target, const gs_bench_workload *w,
                        const gs_bench_sweep_cfg *cfg, double rate, const char *kind,
                        gs_bench_step_fn step, void *user, gs_bench_stat *out, gs_error *err)
{
    gs_bench_run_cfg rc = cfg->run;
    rc.rate = rate;
    int n = cfg->repeat < 1                     ? 1
            : cfg->repeat > GS_BENCH_MAX_REPEAT ? GS_BENCH_MAX_REPEAT
                                                : cfg->repeat;
    gs_bench_stat runs[GS_BENCH_MAX_REPEAT];
    int held = 0;
    for (int k = 0; k < n; k++) {
        gs_bench_result r;
        if (gs_bench_run(vt, target, w, &rc, &r, err) != GS_OK)
            return GS_ERROR;
        gs_bench_stat_from(&runs[k], &r, kind, cfg->connections);
        gs_bench_result_free(&r);
        held += runs[k].pass;
    }
    /* The median by p99 (insertion sort of the indexes). */
    int order[GS_BENCH_MAX_REPEAT];
    for (int k = 0; k < n; k++) {
        int j = k;
        for (; j > 0 && runs[order[j - 1]].p99 > runs[k].p99; j--)
            order[j] = order[j - 1];
        order[j] = k;
    }
    int median = order[(n - 1) / 2];
    for (int k = 0; k < n; k++) {
        if (k == median)
            continue;
        runs[k].kind = "repeat";
        if (step)
            step(user, &runs[k]);
    }
    *out = runs[median];
    out->pass = held * 2 > n;
    if (step)
        step(user, out);
    return GS_OK;
}

gs_status gs_bench_probe(const gs_bench_target_vt *vt, void *target, const gs_bench_workload *w,
                         const gs_bench_sweep_cfg *cfg, gs_bench_stat *out, gs_error *err)
{
    gs_bench_run_cfg rc = cfg->run;
    rc.rate = 0;
    rc.duration_s = cfg->probe_s;
    rc.warmup_s = cfg->probe_s / 2;
    rc.max_inflight = cfg->probe_inflight;
    gs_bench_result r;
    if (gs_bench_run(vt, target, w, &rc, &r, err) != GS_OK)
        return GS_ERROR;
    gs_bench_stat_from(out, &r, "probe", cfg->connections);
    gs_bench_result_free(&r);
    return GS_OK;
}

/* Round a bisection midpoint to three significant digits. */
static double round3(double x)
{
    if (x <= 0)
        return x;
    double mag = pow(10.0, floor(log10(x)) - 2);
    return round(x / mag) * mag;
}

gs_status gs_bench_sweep(const gs_bench_target_vt *vt, void *target, const gs_bench_workload *w,
                         const gs_bench_sweep_cfg *cfg, gs_bench_step_fn step, void *user,
                         gs_bench_stat *best, gs_error *err)
{
    memset(best, 0, sizeof *best);
    double rate = cfg->start_rate;
    if (rate <= 0) {
        gs_bench_stat probe;
        if (gs_bench_probe(vt, target, w, cfg, &probe, err) != GS_OK)
            return GS_ERROR;
        if (step)
            step(user, &probe);
        rate = gs_bench_rung_below(probe.achieved / 4);
    } else {
        rate = gs_bench_rung_below(rate);
    }
    if (rate < cfg->min_rate)
        rate = cfg->min_rate;
    if (rate > cfg->max_rate)
        rate = cfg->max_rate;

    double good = 0, bad = 0;
    gs_bench_stat s;
    /* Up while the rate holds. */
    for (;;) {
        if (run_at(vt, target, w, cfg, rate, "sweep", step, user, &s, err) != GS_OK)
            return GS_ERROR;
        if (!s.pass) {
            bad = rate;
            break;
        }
        good = rate;
        *best = s;
        if (rate * 2 > cfg->max_rate)
            break;
        rate *= 2;
    }
    /* Down from a start that did not hold. */
    while (good == 0 && rate / 2 >= cfg->min_rate) {
        rate /= 2;
        if (run_at(vt, target, w, cfg, rate, "sweep", step, user, &s, err) != GS_OK)
            return GS_ERROR;
        if (s.pass) {
            good = rate;
            *best = s;
        } else {
            bad = rate;
        }
    }
    /* Refine between the last rate held and the first one missed. */
    for (int i = 0; i < cfg->bisect && good > 0 && bad > good; i++) {
        double mid = round3((good + bad) / 2);
        if (mid <= good || mid >= bad)
            break;
        if (run_at(vt, target, w, cfg, mid, "bisect", step, user, &s, err) != GS_OK)
            return GS_ERROR;
        if (s.pass) {
            good = mid;
            *best = s;
        } else {
            bad = mid;
        }
    }
    return GS_OK;
}
