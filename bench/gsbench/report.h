/*
 * The benchmark's outputs, all in one directory:
 *   steps.csv   every measured run (probes, sweep rungs, bisection steps, fixed-rate runs),
 *               appended as it finishes;
 *   points.csv  one operating point per sweep (target, workload, durability), appended;
 *   report.md   the markdown tables (one per durability level), the acceptance ratios of
 *               issue 9 and each target's setup, rebuilt from the two CSV files;
 *   chart-full.svg, chart-relaxed.svg  self-contained SVG charts: for every workload, p99
 *               latency against achieved throughput, one line per target, the 25 ms SLO
 *               dashed and each operating point marked.
 * When a (target, workload, durability) was measured more than once, the newest run counts.
 * CSV fields never hold commas or newlines (they are replaced), so the files read back with
 * a plain split.
 *
 * Ownership: strings are borrowed for the call. Threads: the caller's; one writer at a time
 * per directory.
 */
#ifndef GS_BENCH_REPORT_H
#define GS_BENCH_REPORT_H

#include "sweep.h"

#include <gatestream/abi.h>

#include <stdint.h>

typedef struct gs_bench_meta {
    const char *run_id;     /**< one id per invocation (UTC timestamp + pid) */
    const char *target;     /**< sqlite, postgres, gatestream-ws, gatestream-http */
    const char *workload;   /**< a workload name */
    const char *durability; /**< full | relaxed */
    int64_t rows;
    const char *setup; /**< the target's describe line */
} gs_bench_meta;

/** Create dir (and parents) when missing. */
gs_status gs_bench_outdir(const char *dir, gs_error *err);
gs_status gs_bench_csv_step(const char *dir, const gs_bench_meta *m, const gs_bench_stat *s,
                            gs_error *err);
/** best->pass == 0 records that no rate held. */
gs_status gs_bench_csv_point(const char *dir, const gs_bench_meta *m, const gs_bench_stat *best,
                             gs_error *err);
/** Rebuild report.md and the charts from the CSV files in dir. */
gs_status gs_bench_report(const char *dir, gs_error *err);

#endif
