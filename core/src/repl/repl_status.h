/*
 * The replication side of the status page (GET /status.json, core/src/api/status.c): small
 * JSON fragments describing one database's replication, each appended to a gs_buf. The api's
 * status builder calls them and places each fragment under a fixed key; the JSON shape of
 * every fragment is documented at the top of core/src/api/status.c and must stay stable.
 *
 * The node's sources are not here: they belong to the node and reach the status builder
 * through gs_api_options.sources_json.
 *
 * Promise: every function but gs_repl_status_summary appends exactly one JSON value (object,
 * array or null); none runs SQL or does I/O (the status builder runs on a transport's I/O
 * thread); each holds the engine's lock only while copying, and fails only by setting b->oom.
 *
 * Threads: any thread. Ownership: the engine and the database are borrowed for the call.
 */
#ifndef GS_REPL_REPL_STATUS_H
#define GS_REPL_REPL_STATUS_H

#include "base/buf.h"
#include "db/database.h"
#include "repl/engine.h"

/**
 * The engine's own state as the members of an object, without its braces (the caller adds
 * more members): "role","coordinated","phase","health","position","writeForwarding",
 * "lastError":{"code","message"}|null,"counters":{...}. *role (may be NULL) receives the
 * role as a static string, "primary" or "replica". The one function here that does not append
 * a whole JSON value.
 */
void gs_repl_status_summary(gs_repl_engine *e, gs_buf *b, const char **role);

/**
 * The peers this node knows, as an array of
 * {"id","role","connected","inSync","lastAckedSeq","lastSentSeq","pendingBatches",
 *  "lagChanges","lagMs","connectedForMs"} (see status.c for each field).
 */
void gs_repl_status_peers(gs_repl_engine *e, gs_buf *b);

/**
 * Per-table replication modes: an array of {"table","mode"} with one entry per table whose
 * mode is set. The rules as configured, then {"table":"*","mode":...} for unlisted tables; []
 * without per-table modes.
 */
void gs_repl_status_table_modes(gs_repl_engine *e, gs_buf *b);

/**
 * The change log `_sirannon_changes` from memory (no SQL):
 * {"lastSeq": n|null, "prunedSeq": n, "rows": n|null, "bytes": n|null, "maxBytes": n|null}.
 * lastSeq is the highest committed seq when the engine tracks it (null otherwise); rows is
 * lastSeq - prunedSeq (an upper bound: compaction deletes inside the range); bytes is the
 * estimate of the last retention pass (null before one) and maxBytes the bound (null when
 * unbounded).
 */
void gs_repl_status_log(gs_database *db, gs_buf *b);

/**
 * First-sync progress while a sync runs, else null:
 * {"role":"joiner"|"source","peer","tablesDone","tablesTotal","rows","bytes","etaMs"}.
 * From gs_repl_sync_progress (engine.h); etaMs is null when unknown.
 */
void gs_repl_status_sync(gs_repl_engine *e, gs_buf *b);

#endif
