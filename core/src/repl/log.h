/*
 * The replication log (spec 03 "Replication Tables", "Batches"): the replication tables, the
 * outgoing batch read from the change log `_sirannon_changes`, the applied position of a
 * source and the saved state of a peer.
 *
 * Promise: gs_repl_read_batch reads the rows `seq > after_seq AND node_id = local_node_id`
 * in seq order, at most min(max_changes, 1000) of them (1000 is the spec's normative batch
 * limit), and turns them into one gs_repl_batch:
 *   - from_seq = after_seq + 1 and to_seq = the last seq read, so the batch covers the whole
 *     range (after_seq, to_seq] of this node's log, including seqs held by rows of other
 *     origins (changes this node applied from elsewhere, which it never re-sends). The
 *     receiver compares from_seq with its applied position: from_seq = position + 1 is the
 *     next batch, a larger from_seq means a batch was lost (a gap) and the sender must rewind.
 *   - batch_id "{node}-{from}-{to}", hlc_min / hlc_max over the changes, the checksum of
 *     checksum.h; group_id and the term are left absent (the engine sets them).
 *   - each change: operation in lower case ("ddl" for a DDL row, whose ddl_statement is
 *     new_data's ddlStatement, whose images are null and whose primary key is the empty row),
 *     row images decoded from the log's tagged JSON, seq set, and primary_key built from the
 *     image (new_data, or old_data for a delete) and the table's primary key columns in
 *     PRAGMA table_info pk order; a table without a declared key gives {"rowid": row_id as an
 *     integer}; a table that no longer exists gives the empty key (the applier then derives
 *     the key from its own schema). Key columns are cached per table for the call, and the
 *     cache is emptied after a DDL row.
 * gs_repl_log_ddl writes the DDL change row (table_name '__ddl__', operation 'DDL', row_id '',
 * new_data {"ddlStatement": sql}) with the writer's current stamp, like the rows its unit's
 * triggers write (unstamped when none is set).
 *
 * Positions: the applied position of a source is the high-water mark
 * MAX(source_seq) of `_sirannon_applied_changes` (the applier keeps one row per source).
 * Every function returns 0 for a position when the table it reads does not exist yet.
 *
 * Errors: QUERY_ERROR for SQLite failures, REPLICATION_ERROR for a log row that cannot be
 * turned into a change (malformed image, unknown operation), INVALID_REQUEST for bad
 * arguments.
 *
 * Ownership: a filled batch belongs to the caller (gs_repl_batch_free). Threads: every
 * function runs on the connection it is given, on that connection's thread; writes
 * (tables_ensure, peer_state_save, log_ddl) need the writer connection.
 */
#ifndef GS_REPL_LOG_H
#define GS_REPL_LOG_H

#include "repl/msg.h"
#include "sqlite/connection.h"

#include <gatestream/abi.h>
#include <stddef.h>
#include <stdint.h>

/** The normative largest batch. */
#define GS_REPL_MAX_BATCH_CHANGES 1000

/** The operation of a DDL change row and its table name. */
#define GS_REPL_DDL_TABLE "__ddl__"
#define GS_REPL_DDL_OPERATION "DDL"

/** Create the four replication tables (exact spec DDL) and `_sirannon_meta`, IF NOT EXISTS,
 * and, when the change log exists, its index on (table_name, row_id) that the applier's
 * local-HLC lookup needs. */
gs_status gs_repl_tables_ensure(gs_conn *writer, gs_error *err);

/** Read the next outgoing batch after after_seq. max_changes 0 means the cap (1000). When
 * nothing is left, *empty = 1 and *out is zeroed; otherwise *empty = 0 and *out is filled. */
gs_status gs_repl_read_batch(gs_conn *conn, const char *local_node_id, int64_t after_seq,
                             size_t max_changes, gs_repl_batch *out, int *empty, gs_error *err);

/** gs_repl_read_batch for relaying (per-table modes, a primary to one replica): the rows of
 * every origin except except_node_id (the recipient) and except unstamped rows, so changes
 * this node applied from one peer go on to the others but never back to where they came
 * from. The batch's source is still local_node_id. */
gs_status gs_repl_read_batch_relay(gs_conn *conn, const char *local_node_id,
                                   const char *except_node_id, int64_t after_seq,
                                   size_t max_changes, gs_repl_batch *out, int *empty,
                                   gs_error *err);

/** The highest seq the log has handed out: the larger of MAX(seq) and the AUTOINCREMENT
 * counter, so a pruned log still reports its true end (0 when there is no log). */
gs_status gs_repl_current_seq(gs_conn *conn, int64_t *out, gs_error *err);

/** MAX(source_seq) of `_sirannon_applied_changes` for the source (0 when none). */
gs_status gs_repl_applied_seq(gs_conn *conn, const char *source_node_id, int64_t *out,
                              gs_error *err);

/** Upsert `_sirannon_peer_state` (updated_at = Unix seconds as REAL; NULL hlc = ''). */
/** Upsert `_sirannon_meta` key = value (writer connection). REPLICATION_ERROR. */
gs_status gs_repl_meta_set(gs_conn *writer, const char *key, const char *value, gs_error *err);

gs_status gs_repl_peer_state_save(gs_conn *writer, const char *peer, int64_t last_acked_seq,
                                  const char *last_received_hlc, gs_error *err);

/** last_acked_seq of a peer (0 when unknown). */
gs_status gs_repl_peer_state_load(gs_conn *conn, const char *peer, int64_t *last_acked,
                                  gs_error *err);

/** Decode a change-log row image (old_data / new_data text; NULL gives NULL): the same row and
 * the same errors as gs_rrow_from_log_json (msg.h), with a one-pass fast path for the compact
 * form the triggers write. Any thread. */
gs_status gs_repl_log_image_decode(const char *text, gs_rrow **out, gs_error *err);

/** Insert the DDL change row for sql (as given) into `_sirannon_changes`, with the writer's
 * current stamp (db/cdc_internal.h). */
gs_status gs_repl_log_ddl(gs_conn *writer, const char *sql, gs_error *err);

#endif
