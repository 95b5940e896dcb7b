/*
 * The rate sweep: finds a target's operating point, the highest offered rate it holds with
 * p99 under the SLO (25 ms), no more than 0.1% errors, timeouts or unsent requests, and at
 * least 95% of the rate answered.
 *
 * Rates sit on one ladder for every engine: 1,000 x 2^k requests/s (k may be negative).
 * The sweep starts at a given rung, or (start_rate <= 0) at the highest rung at or below a
 * quarter of the capacity a short closed-loop probe measured; it doubles while the rate
 * holds, halves from the start while it does not, and then refines between the last rate
 * held and the first one missed with `bisect` bisection steps. With `repeat` > 1 every rate
 * runs that many times and is held when most of the runs held it (on a shared machine one
 * run can catch another process's burst); the run with the median p99 is the one reported.
 * Every run is reported to a callback as it finishes.
 *
 * Ownership: results are plain values (gs_bench_stat), copied to the caller.
 * Threads: runs on the calling thread (the scheduler's).
 */
#ifndef GS_BENCH_SWEEP_H
#define GS_BENCH_SWEEP_H

#include "openloop.h"

/** One run, summarised (latencies in ms). */
typedef struct gs_bench_stat {
    const char *kind; /**< "probe", "probe-conn", "sweep", "bisect", "fixed" or "repeat" (a
                           rate's other runs when it runs several times) */
    int connections;
    double rate, achieved;
    double p50, p95, p99, p999, max, mean;
    uint64_t scheduled, measured, errors, timeouts, late, unissued;
    int pass;
    double load1; /**< the machine's 1-minute load average when the run ended */
    char first_error[320];
} gs_bench_stat;

void gs_bench_stat_from(gs_bench_stat *s, const gs_bench_result *r, const char *kind,
                        int connections);

typedef void (*gs_bench_step_fn)(void *user, const gs_bench_stat *s);

typedef struct gs_bench_sweep_cfg {
    gs_bench_run_cfg run; /**< everything but the rate */
    double start_rate;    /**< a rate (snapped to the ladder), or <= 0: from a probe */
    double max_rate;      /**< never offer more */
    double min_rate;      /**< never offer less */
    int bisect;           /**< refinement steps after the doubling */
    double probe_s;       /**< closed-loop probe length */
    int probe_inflight;   /**< requests outstanding during the probe */
    int connections;      /**< reported with every step */
    int repeat;           /**< runs per rate (1..GS_BENCH_MAX_REPEAT): held when most hold */
} gs_bench_sweep_cfg;

#define GS_BENCH_MAX_REPEAT 9

/** Defaults: probe 1 s at 64 in flight, 2 bisection steps, one run per rate, rates
 * 125 .. 4,096,000/s. */
void gs_bench_sweep_cfg_init(gs_bench_sweep_cfg *cfg);

/** The ladder rung at or below rate (1,000 x 2^k). */
double gs_bench_rung_below(double rate);

/**
 * Sweep workload w on a loaded target. *best gets the operating point (pass == 0 when no
 * rate held). GS_ERROR only when a run could not happen.
 */
gs_status gs_bench_sweep(const gs_bench_target_vt *vt, void *target, const gs_bench_workload *w,
                         const gs_bench_sweep_cfg *cfg, gs_bench_step_fn step, void *user,
                         gs_bench_stat *best, gs_error *err);

/** One closed-loop run (capacity probe): the summary. */
gs_status gs_bench_probe(const gs_bench_target_vt *vt, void *target, const gs_bench_workload *w,
                         const gs_bench_sweep_cfg *cfg, gs_bench_stat *out, gs_error *err);

#endif
