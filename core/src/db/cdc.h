/*
 * Change data capture for one database (spec 02 "Change Data Capture", 05 "Transaction
 * Boundaries" and "Subscription Resumption").
 *
 * The log is `_sirannon_changes`, filled by AFTER triggers named _sirannon_trg_{table}_{op}
 * in the same transaction as the write; `_sirannon_meta` holds the file's `cdc_epoch`.
 * Watched tables come from config and from subscriptions (watch_on_subscribe). Once anything
 * subscribes, every local write is stamped in its own transaction (tx_id: 32 lowercase hex
 * per unit of a group commit, hlc: the node's hybrid logical clock, node_id).
 *
 * Delivery does not wait for a poll tick: the writer wakes the feed after every commit that
 * added changes, and the feed reads `seq > last` in order (at most 1000 rows a read) on a
 * read connection of its own and hands each change to every matching subscription. A slow
 * fallback poll catches writes made by other processes. Retention pruning deletes rows older
 * than cdc_retention_ms that no consumer needs, and keeps the log under its bound
 * (cdc_max_log_bytes / cdc_max_log_changes: compaction, then pruning; cdc_log.c).
 *
 * Threads: subscribe/unsubscribe from any thread; on_event runs on the database's feed
 * thread, in seq order per subscription, and must not block (queue and wake instead).
 * Ownership: the CDC copies the filter and strings it keeps; an event's JSON is valid for
 * the on_event call only.
 */
#ifndef GS_DB_CDC_H
#define GS_DB_CDC_H

#include "database.h"

#include <jansson.h>
#include <stdint.h>

typedef struct gs_cdc_sub gs_cdc_sub;

/**
 * One change for a subscriber: `event_json` is the spec's ChangeEvent object
 * {type, table, row, oldRow?, seq:"<decimal>", timestamp, hlc?, origin?, rowId, txId?,
 * txEnd?} with row values under the tagged encoding (05-server: seq is a decimal string).
 */
typedef void (*gs_cdc_event_fn)(void *user, const char *event_json, size_t len, uint64_t seq);

typedef struct gs_cdc_subscribe_request {
    const char *table; /**< one table (identifier ^[a-zA-Z_][a-zA-Z0-9_]*$) */
    json_t *filter;    /**< NULL, or an object of column -> value (tagged encoding) */
    int has_since;     /**< resume: replay every retained change with seq > since_seq */
    uint64_t since_seq;
    const char *epoch; /**< the epoch the cursor came from (NULL = this file's) */
    int mark_tx_end;   /**< WebSocket semantics: hold one change, mark txEnd (05-server) */
    gs_cdc_event_fn on_event;
    void *user;
} gs_cdc_subscribe_request;

typedef struct gs_cdc_subscribed {
    uint64_t live_seq; /**< the seq the subscription is live from (subscribed.seq) */
    char epoch[64];    /**< this file's epoch (subscribed.epoch) */
    int resync;        /**< 1 when since_seq fell below retention or below a compacted change
                            (a replay would miss it), or the epoch was foreign */
} gs_cdc_subscribed;

/**
 * Subscribe. Errors: CDC_UNSUPPORTED (in-memory database), READ_ONLY (read-only database),
 * CDC_ERROR (bad identifier, a table that does not exist, a table that is not watched while
 * watch_on_subscribe is off), DATABASE_CLOSED. Replayed history (resume) is delivered
 * through on_event before live changes, with the same txEnd marking.
 */
gs_status gs_db_cdc_subscribe(gs_database *db, const gs_cdc_subscribe_request *req,
                              gs_cdc_sub **out, gs_cdc_subscribed *info, gs_error *err);
/** After this returns on_event is never called again for sub, which is freed. */
void gs_db_cdc_unsubscribe(gs_database *db, gs_cdc_sub *sub);

/** Install (or reinstall, after ADD COLUMN) the triggers of a table. CDC_ERROR on a bad
 * identifier or a missing table; READ_ONLY; CDC_UNSUPPORTED for in-memory databases.
 * Blocks until the writer has done it (call from a core thread, never an I/O thread). */
gs_status gs_db_cdc_watch(gs_database *db, const char *table, gs_error *err);
gs_status gs_db_cdc_unwatch(gs_database *db, const char *table, gs_error *err);

/** This file's epoch (empty when CDC never initialised), and the highest seq in the log. */
void gs_db_cdc_position(gs_database *db, char epoch[64], uint64_t *max_seq);

/** Subscribers now active (for /metrics and tests). */
int gs_db_cdc_subscriber_count(gs_database *db);

/**
 * The change log's size and retention (databases[].cdc.max_log_bytes, max_log_changes,
 * log_warn_bytes). Measured by the retention pass on the writer (every few percent of the
 * bound the log grows, and at least every minute): `changes` is exact, `bytes` an estimate
 * (the lengths of each row's text columns plus 32 per row, summed as rows are added and
 * deleted, and measured afresh every 64 passes). -1 when not measured yet.
 */
typedef struct gs_change_log_stats {
    int64_t changes;         /**< rows in _sirannon_changes (-1 = not measured yet) */
    int64_t bytes;           /**< estimated bytes (-1 = not measured yet) */
    int64_t pruned_seq;      /**< the highest seq retention deleted (0 = none) */
    int64_t max_bytes;       /**< the byte bound (0 = unbounded) */
    int64_t max_changes;     /**< the row bound (0 = unbounded) */
    int64_t warn_bytes;      /**< the warning mark (0 = none) */
    int64_t compacted_total; /**< changes deleted by compaction (superseded by a later change
                                  to the same row) since the database opened */
    int64_t forced_total;    /**< changes pruned while a replica still needed them */
} gs_change_log_stats;

/** Fill *out. CDC_UNSUPPORTED for a database without change capture (in memory, read-only).
 * Thread-safe, lock-free, no I/O. */
gs_status gs_db_change_log_stats(gs_database *db, gs_change_log_stats *out, gs_error *err);

#endif
