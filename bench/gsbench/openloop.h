/*
 * The open-loop scheduler: offers a workload to a target at a fixed rate on a fixed timeline
 * and measures every answer from the moment its request was due (its intended start), not
 * from when it was sent. A target that stalls therefore charges the stall to every request
 * scheduled behind it, which is the correction for coordinated omission.
 *
 * The timeline: request i is due at t0 + i / rate. Requests due in the first warmup_s seconds
 * are sent but not measured; those due in the next duration_s seconds are measured. At most
 * max_inflight requests are outstanding (the op pool); a request that waits for a free slot,
 * or that the scheduler itself sends more than late_ns after its due time, counts as late.
 * Requests still unsent one grace period after the window are never sent: they count as
 * unissued, and their latency is recorded as the lower bound (stop time - due time). Answers
 * are awaited at most drain_s after that; the rest count as timeouts.
 *
 * Closed-loop mode (rate <= 0): keeps max_inflight requests outstanding, latency from the
 * send; used to probe capacity (the PostgreSQL connection choice, the sweep's first rung).
 *
 * Ownership: gs_bench_run fills a caller-owned result whose histogram it allocates
 * (gs_bench_result_free releases it). The target is borrowed.
 * Threads: gs_bench_run runs the timeline on the calling thread; completions arrive on target
 * threads and are recorded under the run's mutex.
 */
#ifndef GS_BENCH_OPENLOOP_H
#define GS_BENCH_OPENLOOP_H

#include "hist.h"
#include "target.h"
#include "workload.h"

#include <gatestream/abi.h>

#include <stdint.h>

typedef struct gs_bench_run_cfg {
    double rate;            /**< requests per second; <= 0: closed loop */
    double warmup_s;        /**< excluded from the measurement */
    double duration_s;      /**< measured window */
    int max_inflight;       /**< outstanding requests at most (>= 1) */
    double grace_s;         /**< how long past the window the scheduler may still send late */
    double drain_s;         /**< how long answers are awaited after sending stopped */
    int64_t late_ns;        /**< a send this much after its due time counts as late */
    double slo_ms;          /**< the p99 bound a rate must hold (25 ms) */
    double max_error_share; /**< errors + timeouts + unissued allowed, as a share (0.001) */
    uint64_t seed;
    int64_t rows;
} gs_bench_run_cfg;

/** Defaults: warmup 1 s, duration 5 s, 1024 in flight, grace 1 s, drain 10 s, late 1 ms,
 * SLO 25 ms, 0.1% errors, seed 42. rate and rows are the caller's. */
void gs_bench_run_cfg_init(gs_bench_run_cfg *cfg);

typedef struct gs_bench_result {
    double rate;        /**< offered (0 in closed loop) */
    double achieved;    /**< answers received in the window per second */
    uint64_t scheduled; /**< requests due in the window */
    uint64_t measured;  /**< successful answers to requests due in the window */
    uint64_t errors;    /**< error answers to requests due in the window */
    uint64_t timeouts;  /**< requests due in the window never answered within the drain */
    uint64_t late;      /**< requests due in the window sent late */
    uint64_t unissued;  /**< requests due in the window never sent */
    uint64_t per_op[4]; /**< successful answers per operation name (op->name) */
    int max_inflight_seen;
    gs_hist hist; /**< latency of the window's requests, ns (successes and unissued bounds) */
    uint64_t p50_ns, p95_ns, p99_ns, p999_ns, max_ns;
    double mean_ns;
    int pass; /**< held: p99 < SLO, error share within bound, achieved >= 95% of the rate */
    char first_error[320];
} gs_bench_result;

void gs_bench_result_free(gs_bench_result *r);

/**
 * One measured run of workload w against a started-and-loaded target (gs_bench_run calls
 * the target's start and stop itself). Returns GS_ERROR only when the run could not happen
 * (the target would not start, out of memory); a run that missed its SLO is GS_OK with
 * pass == 0.
 */
gs_status gs_bench_run(const gs_bench_target_vt *vt, void *target, const gs_bench_workload *w,
                       const gs_bench_run_cfg *cfg, gs_bench_result *res, gs_error *err);

/** CLOCK_MONOTONIC in nanoseconds. */
int64_t gs_bench_now_ns(void);

#endif
