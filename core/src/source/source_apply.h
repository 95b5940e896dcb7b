/*
 * The local side of a source: what runs on a database's writer thread.
 *
 * Promise: gs_source_catalogue_load creates `_sirannon_gs_sources` when missing and reads a
 * source's stored positions; gs_source_table_prepare creates a missing local table from its
 * CREATE statement, or adds to an existing one the columns the remote table gained (ALTER
 * TABLE ... ADD COLUMN with the remote's declared type and default), and reads the local
 * primary key; gs_source_apply runs one batch (tables
 * to empty, upserts and deletes by primary key, positions to store) in ONE transaction, with
 * foreign-key enforcement off for its duration (the remote enforced its constraints; a local
 * copy may reference tables under their remote names). Every call waits for the writer and
 * returns its outcome; statements are internal (no guard), so the catalogue under the
 * reserved `_sirannon` prefix stays out of user SQL's reach and out of replication.
 *
 * Ownership: the caller owns every argument; results are copied into the caller's structs.
 * Threads: called from a source's thread; blocks until the writer answered (bounded by the
 * database's write_timeout_ms).
 */
#ifndef GS_SOURCE_APPLY_H
#define GS_SOURCE_APPLY_H

#include "../db/database.h"

#include <gatestream/abi.h>
#include <gatestream/value.h>
#include <stddef.h>
#include <stdint.h>

#define GS_SOURCE_NAME_MAX 256
#define GS_SOURCE_SEQ_MAX 32
#define GS_SOURCE_EPOCH_MAX 128

/** A stored position of one remote table. */
typedef struct gs_source_position {
    char remote_table[GS_SOURCE_NAME_MAX];
    char local_table[GS_SOURCE_NAME_MAX];
    char seq[GS_SOURCE_SEQ_MAX];
    char epoch[GS_SOURCE_EPOCH_MAX];
    int64_t rows_bootstrapped; /**< added to the stored count (store); the total (load) */
} gs_source_position;

/** Read every position stored for source `source_id` (*out gs_free'd by the caller). */
gs_status gs_source_catalogue_load(gs_database *db, const char *source_id, gs_source_position **out,
                                   size_t *count, gs_error *err);

/** Create `local` from create_sql when it does not exist (*created = 1 then) or add the columns
 * create_sql has and `local` lacks (logged at INFO), and read its
 * primary-key columns in key order into *pk (gs_free each and the array). A table without a
 * PRIMARY KEY is refused (INVALID_REQUEST): a source upserts by primary key. */
gs_status gs_source_table_prepare(gs_database *db, const char *local, const char *create_sql,
                                  int *created, char ***pk, size_t *npk, gs_error *err);

/** One change to apply: an upsert of the full row, or a delete by the row's key columns. */
typedef struct gs_source_op {
    const char *local;
    const char *const *pk;
    size_t npk;
    int is_delete;
    size_t count;
    const char *const *cols;
    const gs_value *vals;
} gs_source_op;

typedef struct gs_source_batch {
    const char *source_id;
    const char *const *clear; /**< local tables emptied first (a new copy) */
    size_t nclear;
    const gs_source_op *ops;
    size_t nops;
    const gs_source_position *positions; /**< stored in the same transaction */
    size_t npositions;
} gs_source_batch;

/** Apply the batch atomically. QUERY_ERROR (with SQLite's message) rolls everything back. */
gs_status gs_source_apply(gs_database *db, const gs_source_batch *batch, gs_error *err);

#endif
