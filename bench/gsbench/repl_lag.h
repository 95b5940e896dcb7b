/*
 * Replication mode of gatestream-bench: replica lag as a client sees it. Single-row INSERTs
 * go to the primary at a fixed rate (open loop, over a WebSocket through
 * libgatestream-client); a subscriber on every replica (a WebSocket subscription to the same
 * table) timestamps each row's change event. For each replica it reports the lag from the
 * primary's acknowledgement to the change event, and from the insert's due time to the
 * change event (p50, p95, p99, p99.9, max), and checks that every acknowledged row arrived
 * exactly once. The table is new for every run (bench_lag_<run>), created on the primary with
 * writeConcern all so the replicas hold it before they subscribe.
 *
 * Outputs: a summary on stdout, a row per replica appended to DIR/replication.csv and
 * DIR/replication.md rewritten.
 *
 * Ownership: the config's strings are borrowed. Threads: the caller's thread drives the
 * writes; completions and change events arrive on the client library's threads and are
 * recorded with atomic stores into per-row arrays.
 */
#ifndef GS_BENCH_REPL_LAG_H
#define GS_BENCH_REPL_LAG_H

#include <gatestream/abi.h>

typedef struct gs_bench_lag_cfg {
    const char *primary;         /**< http://HOST:PORT of the primary */
    const char *const *replicas; /**< http://HOST:PORT of each replica */
    int nreplicas;
    double rate;       /**< inserts per second */
    double duration_s; /**< how long to write */
    double warmup_s;   /**< rows due in the first warmup_s are excluded from the figures */
    double settle_s;   /**< how long to wait for the last rows to arrive */
    int max_inflight;  /**< unanswered inserts at most */
    const char *db;
    const char *out;
} gs_bench_lag_cfg;

/** Defaults: warmup 1 s, settle 30 s, 4096 in flight, database main. */
void gs_bench_lag_cfg_init(gs_bench_lag_cfg *cfg);

/** Run it. GS_ERROR when the cluster could not be driven (names the step and the node). A
 * run in which rows went missing is GS_ERROR too (the report still says how many). */
gs_status gs_bench_lag_run(const gs_bench_lag_cfg *cfg, gs_error *err);

#endif
