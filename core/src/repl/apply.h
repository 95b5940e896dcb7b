/*
 * The batch applier (spec 03 "Batch Reception", "Conflict Resolution", "DDL Safety"): one
 * received batch written to the local database atomically, on the writer connection.
 *
 * Promise, for gs_repl_apply_batch:
 *   - Validation first, nothing written: more than 1000 changes, from_seq < 1 or > to_seq, a
 *     checksum that differs from the one recomputed over the changes (checksum.h), or a change
 *     that is malformed (unknown operation, missing hlc, an insert or update without newData,
 *     a data change on a table whose name is not a plain identifier or is internal) fail with
 *     BATCH_VALIDATION_ERROR.
 *   - Position against the source's applied high-water mark `applied`
 *     (gs_repl_applied_seq): to_seq <= applied is a duplicate (res->duplicate, nothing
 *     applied, GS_OK); applied > 0 and from_seq > applied + 1 is a gap (res->gap, nothing
 *     applied, GS_OK: the engine answers with its position and the sender rewinds); an
 *     overlap from_seq <= applied < to_seq skips the first applied - from_seq + 1 changes when
 *     the batch is contiguous (to_seq - from_seq + 1 == nchanges, so change i holds seq
 *     from_seq + i) and is a gap otherwise. res->applied_seq is then the unchanged position.
 *   - Everything else runs in one transaction (BEGIN IMMEDIATE, or a savepoint when the caller
 *     already holds one, or the caller's own with ctx->in_caller_tx, which the caller then
 *     rolls back) that is rolled back on any failure, so nothing is half-applied:
 *       every change's hlc is merged into ctx->clock with gs_hlc_receive (a stamp more than
 *       max_clock_drift_ms ahead of this node's clock, or malformed: BATCH_VALIDATION_ERROR);
 *       a ddl change passes gs_repl_ddl_check (BATCH_VALIDATION_ERROR) and runs; a dropped
 *       table is listed in res->dropped_tables and its column versions deleted; the CDC
 *       triggers are refreshed over every table (gs_cdc_capture_all_refresh) when ctx->cdc is
 *       set, so the changes after it are captured with the new columns;
 *       a data change finds the local row by its primary key (the change's primaryKey; a key
 *       {"rowid": n} addresses the rowid; an empty key is derived from the local schema and
 *       the row image). Absent: an insert is inserted (at the sender's rowid for a table
 *       without a declared key), an update or delete is skipped. Present: the table's
 *       resolver decides (the spec's ConflictContext: the local row, the local HLC = the
 *       highest column version of the row, else the highest stamp of the row in the change
 *       log, with its node id): keep local (skipped), take incoming (an update of the image's
 *       columns by key; a delete deletes) or merged (the resolver's row written by key).
 *       A resolver that fails, is missing or answers nonsense: CONFLICT_ERROR naming the table
 *       and row (details {"table","rowId"}). An image column the local table lacks:
 *       BATCH_VALIDATION_ERROR (schema violation);
 *       the change rows the CDC triggers write for a change are stamped with the change's
 *       origin node id, tx_id and hlc as they are written (the writer's stamp is set before
 *       the change and cleared before the batch's transaction ends), so this node never sends
 *       them as its own;
 *       with keep_column_versions, each written column's (hlc, node id) is upserted into
 *       `_sirannon_column_versions` (a delete removes the row's versions);
 *       the ledger `_sirannon_applied_changes` keeps one row per source: its high-water mark
 *       to_seq (older rows of the source are deleted: positions are ranges, not sets);
 *       the clock is persisted in `_sirannon_meta`.
 *     Then res->applied_seq = to_seq.
 * Counters: applied = changes written (ddl included), skipped = changes not written (overlap,
 * absent rows, keep local), conflicts = resolver calls, ddl = ddl changes run.
 * A failed apply leaves the clock advanced (a clock only moves forward, so this is harmless)
 * and may leave the CDC watched set describing rolled-back tables; the next trigger refresh
 * corrects it.
 *
 * Ownership: the batch and ctx stay the caller's; res->dropped_tables is owned by res
 * (gs_repl_apply_result_free). A merged row is freed with gs_free, which is the allocator the
 * core lends plugins as host->alloc. Threads: the writer thread, with the writer connection.
 */
#ifndef GS_REPL_APPLY_H
#define GS_REPL_APPLY_H

#include "repl/hlc.h"
#include "repl/msg.h"
#include "sqlite/connection.h"

#include <gatestream/abi.h>
#include <gatestream/resolver.h>
#include <stddef.h>
#include <stdint.h>

struct gs_cdc;

typedef struct gs_repl_resolver_ref {
    const gs_resolver_vtable *vt;
    void *instance;
} gs_repl_resolver_ref;

/** The resolver for a table ({NULL, NULL} = none: a conflict then fails). */
typedef gs_repl_resolver_ref (*gs_repl_resolver_lookup)(void *user, const char *table);

typedef struct gs_repl_apply_ctx {
    gs_hlc *clock;               /**< the database clock (required) */
    const char *local_node_id;   /**< this node */
    const char *primary_node_id; /**< handed to resolvers; NULL = unknown */
    gs_repl_resolver_lookup resolver;
    void *resolver_user;
    int64_t max_clock_drift_ms; /**< <= 0: only the clock's own limit applies */
    int keep_column_versions;
    struct gs_cdc *cdc; /**< the database's change capture (trigger refresh after DDL); NULL =
                             no refresh */
    /** The caller holds a transaction and rolls all of it back when the call fails: the batch
     * is applied without a savepoint of its own (a failed call may leave part of it written).
     * Without a caller's transaction the call opens its own as usual. */
    int in_caller_tx;
    /** Per-table modes: 0 = skip the change (counted in skipped and filtered), after the
     * batch's validation; NULL = every change. Writer thread. */
    int (*want)(void *user, const gs_repl_change *c);
    void *want_user;
} gs_repl_apply_ctx;

typedef struct gs_repl_apply_result {
    int64_t applied_seq; /**< the source's applied position after the call */
    size_t applied, skipped, conflicts, ddl;
    size_t filtered; /**< changes ctx->want turned away (also counted in skipped) */
    int duplicate;   /**< the batch was already applied */
    int gap;         /**< the batch does not follow the applied position */
    char **dropped_tables;
    size_t ndropped;
} gs_repl_apply_result;

void gs_repl_apply_result_free(gs_repl_apply_result *res);

gs_status gs_repl_apply_batch(gs_conn *writer, const gs_repl_apply_ctx *ctx, const gs_repl_batch *b,
                              gs_repl_apply_result *res, gs_error *err);

/** Set the source's applied position to exactly seq (first sync: snapshotSeq), replacing the
 * high-water mark. Runs in its own transaction, or in the caller's. */
gs_status gs_repl_apply_record_position(gs_conn *writer, const char *source, int64_t seq,
                                        gs_error *err);

#endif
