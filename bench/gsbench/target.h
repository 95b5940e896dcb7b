/*
 * The engine side of the load generator: a target takes operations from the scheduler and
 * answers each one exactly once through a completion callback. Targets: in-process SQLite
 * (target_sqlite.c), PostgreSQL over libpq (target_pg.c), gatestream over WebSocket or HTTP
 * through libgatestream-client (target_gs.c).
 *
 * Lifecycle: open -> load (drop the benchmark tables, create the workload's, seed the rows;
 * blocking) -> for each measured run: start (connections, prepared statements, threads) ->
 * submit ... -> stop -> ... -> close.
 *
 * Ownership: an op handed to submit stays the scheduler's; the target may use it (and its
 * target_data / stage scratch) until it calls done for it, and not after. Strings in the
 * config are borrowed for the target's lifetime.
 *
 * Threads: open, load, start, stop, describe and close run on the caller's thread. submit
 * runs on the scheduler thread and never waits for the engine. done runs on a target thread
 * (or inside submit when the op fails at once) and must not block. After stop returns, done
 * is not called again: stop fails every op not yet started (code "CANCELLED") and waits for
 * the running ones.
 */
#ifndef GS_BENCH_TARGET_H
#define GS_BENCH_TARGET_H

#include "workload.h"

#include <gatestream/abi.h>

#include <stddef.h>
#include <stdint.h>

typedef enum gs_bench_durability {
    GS_BENCH_FULL = 0,    /**< fsync every commit: synchronous=FULL, synchronous_commit=on */
    GS_BENCH_RELAXED = 1, /**< WAL synchronous=NORMAL, synchronous_commit=off */
} gs_bench_durability;

typedef struct gs_bench_target_cfg {
    const char *url;  /**< gatestream: base URL; postgres: a libpq conninfo or URI */
    const char *db;   /**< gatestream: the database id */
    const char *path; /**< sqlite: the database file */
    gs_bench_durability durability;
    int connections;    /**< sqlite: reader threads; postgres: connections; gatestream-ws:
                             WebSocket clients; gatestream-http: keep-alive connections */
    int64_t timeout_ms; /**< per request (gatestream) */
} gs_bench_target_cfg;

/** Completion of one op: st GS_OK, or an error with err filled. */
typedef void (*gs_bench_done_fn)(void *ctx, gs_bench_op *op, gs_status st, const gs_error *err);

typedef struct gs_bench_target_vt {
    const char *name;
    gs_status (*open)(const gs_bench_target_cfg *cfg, void **self, gs_error *err);
    gs_status (*load)(void *self, const gs_bench_workload *w, int64_t rows, uint64_t seed,
                      gs_error *err);
    gs_status (*start)(void *self, const gs_bench_workload *w, gs_bench_done_fn done, void *ctx,
                       gs_error *err);
    void (*submit)(void *self, gs_bench_op *op);
    void (*stop)(void *self);
    /** One line for the report: engine version and the settings in force. */
    void (*describe)(void *self, char *buf, size_t size);
    void (*close)(void *self);
} gs_bench_target_vt;

extern const gs_bench_target_vt gs_bench_target_sqlite;
extern const gs_bench_target_vt gs_bench_target_pg;
extern const gs_bench_target_vt gs_bench_target_gs_ws;
extern const gs_bench_target_vt gs_bench_target_gs_http;
/** Answers at once, no engine: the generator's own ceiling. */
extern const gs_bench_target_vt gs_bench_target_null;

/** A target by its command-line name (sqlite, postgres, gatestream-ws, gatestream-http). */
const gs_bench_target_vt *gs_bench_target_find(const char *name);

/** Fill err with the "CANCELLED" error stop hands to ops it never started. */
void gs_bench_cancelled(gs_error *err);

#endif
