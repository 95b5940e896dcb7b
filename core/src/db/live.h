/*
 * Live queries (spec 02 "Live Queries", 05 "Live Queries"): a single-table SELECT whose
 * result is kept current from the change feed. Opening watches the table, reads once at a
 * read position (rows and the log's max seq in one transaction on a connection of its own)
 * and subscribes from that position, so every change reaches the result exactly once.
 * Each live query owns a temporary probe table (_sirannon_live_<n>) with the base table's
 * declared types and collations: per transaction it writes the before/after rows there and
 * runs the statement's own WHERE, select list and ORDER BY over them, so affinity, collation
 * and order match a read of the base table. It re-reads (revalidating, then rows) when a
 * transaction has more changes than the result has rows, when a LIMIT window loses a row it
 * cannot refill, or past max_transaction_changes; a random delay up to reread_jitter_ms
 * comes first.
 *
 * Refused shapes (CDC_ERROR): joins, aggregates, GROUP BY, HAVING, DISTINCT, compound
 * selects, window functions, subqueries, LIMIT without ORDER BY, CTEs, VALUES,
 * nondeterministic functions. READ_ONLY on a read-only database; CDC_UNSUPPORTED in memory.
 *
 * Threads: open and close block (call them from a core worker thread, never an I/O thread).
 * fn runs on the live query's own worker thread, one call at a time, never before
 * gs_db_live_open has filled *out and *rows_json and never after gs_db_live_close returns;
 * it must not block.
 */
#ifndef GS_DB_LIVE_H
#define GS_DB_LIVE_H

#include "database.h"

#include <jansson.h>

typedef struct gs_live gs_live;

/**
 * One update, as the JSON text of the fields of a WebSocket `live` message without type and
 * id: exactly one of {"ops":[{"op":"insert"|"update"|"delete","index":N,"row"?:{...}}...]}
 * (one transaction), {"rows":[...]} (after a re-read), {"revalidating":true}; or
 * {"error":{"code":"...","message":"..."}} when the query failed for good.
 */
typedef void (*gs_live_fn)(void *user, const char *update_json, size_t len);

typedef struct gs_live_options {
    int64_t reread_jitter_ms;        /**< default 25 */
    int64_t max_transaction_changes; /**< default 10000 */
} gs_live_options;

/**
 * Open a live query over `sql` with `params` (NULL, array or object; tagged encoding).
 * On GS_OK *rows_json holds the first result as a JSON array (gs_free it) and fn starts
 * receiving updates relative to those rows.
 */
gs_status gs_db_live_open(gs_database *db, const char *sql, json_t *params,
                          const gs_live_options *opts, gs_live_fn fn, void *user, gs_live **out,
                          char **rows_json, gs_error *err);
/** Close: after this returns fn is never called again; the probe table is dropped. */
void gs_db_live_close(gs_database *db, gs_live *live);

#endif
