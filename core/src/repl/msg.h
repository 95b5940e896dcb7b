/*
 * The replication messages as plain C values (spec 03 "Batches", "First Sync", "Write
 * Forwarding"; spec 04 "gRPC Wire Protocol"). Every part of the engine works on these: the
 * codec turns them into the spec's protobuf bytes and back, the checksum module hashes their
 * canonical form, the log builds batches from `_sirannon_changes`, the applier writes them.
 *
 * Values are the wire's ColumnValue: null, 64-bit integer, double, text, blob or boolean. A
 * row is an ordered list of (column name, value); a NULL row pointer is the spec's `null`
 * (for example a delete's newData), an empty row is `{}`. Optional strings are NULL when
 * absent; group_id and primary_term are absent in static mode (has_term = 0).
 *
 * Ownership: every message owns all of its strings, rows and values (gs_malloc'd); the
 * *_free functions release a message's contents (not the struct itself, which callers keep
 * on the stack or in arrays). Functions that fill a message copy their inputs.
 * Threads: pure data; no shared state.
 */
#ifndef GS_REPL_MSG_H
#define GS_REPL_MSG_H

#include <gatestream/abi.h>
#include <gatestream/value.h>

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef enum gs_rval_type {
    GS_RVAL_NULL = 0,
    GS_RVAL_INT = 1,
    GS_RVAL_DOUBLE = 2,
    GS_RVAL_TEXT = 3,
    GS_RVAL_BLOB = 4,
    GS_RVAL_BOOL = 5, /**< only from the wire (ColumnValue.bool_value); binds as 0 / 1 */
} gs_rval_type;

/** One owned value. Text is NUL-terminated (len excludes the NUL); blob bytes in p. */
typedef struct gs_rval {
    gs_rval_type type;
    int64_t i; /**< INT, and BOOL as 0 / 1 */
    double d;
    uint8_t *p;
    size_t len;
} gs_rval;

/** An owned row image or key map: n columns in order. */
typedef struct gs_rrow {
    size_t n, cap;
    char **names;
    gs_rval *vals;
} gs_rrow;

typedef struct gs_repl_change {
    char *table;
    char *operation; /**< "insert" | "update" | "delete" | "ddl" (lower case on the wire) */
    char *row_id;
    gs_rrow *primary_key; /**< NULL only for ddl */
    char *hlc;
    char *tx_id;
    char *node_id;
    gs_rrow *new_data;   /**< NULL = null */
    gs_rrow *old_data;   /**< NULL = null */
    char *ddl_statement; /**< NULL = absent */
    int64_t seq; /**< the sender's change-log seq (local only, never on the wire; 0 = unknown) */
} gs_repl_change;

typedef struct gs_repl_batch {
    char *source_node_id;
    char *batch_id; /**< "{nodeId}-{fromSeq}-{toSeq}" */
    char *group_id; /**< NULL = absent */
    int has_term;
    int64_t primary_term;
    int64_t from_seq, to_seq;
    char *hlc_min, *hlc_max;
    gs_repl_change *changes;
    size_t nchanges;
    char *checksum;
} gs_repl_batch;

typedef struct gs_repl_ack {
    char *batch_id; /**< "" for the applied-position report sent on connect */
    char *group_id;
    int has_term;
    int64_t primary_term;
    int64_t acked_seq;
    char *node_id;
} gs_repl_ack;

typedef struct gs_repl_hello {
    char *node_id;
    char *role; /**< "primary" | "replica" */
    char *group_id;
    int has_term;
    int64_t primary_term;
    char *protocol_version;
} gs_repl_hello;

/** ReplicationMessage: exactly one of the payloads. */
typedef enum gs_repl_kind {
    GS_RMSG_NONE = 0,
    GS_RMSG_HELLO = 1,
    GS_RMSG_BATCH = 2,
    GS_RMSG_ACK = 3,
} gs_repl_kind;

typedef struct gs_repl_message {
    gs_repl_kind kind;
    gs_repl_hello hello;
    gs_repl_batch batch;
    gs_repl_ack ack;
} gs_repl_message;

/** A partly received table (gatestream extension, field 100 of SyncRequestPayload). */
typedef struct gs_sync_resume {
    char *table;
    int32_t batch_index; /**< the last batch applied */
    char *cursor;        /**< the source's keyset cursor after it (JSON); NULL = absent */
    char *digest;        /**< the batchDigest chain through it; NULL = absent */
    int64_t rows;        /**< rows applied through it */
} gs_sync_resume;

typedef struct gs_sync_request {
    char *request_id;
    char *joiner_node_id;
    char **completed_tables;
    size_t ncompleted;
    char *group_id;
    int has_term;
    int64_t primary_term;
    int supports_stream_verification;
    gs_sync_resume *resume; /**< nresume; gatestream extension, absent when 0 */
    size_t nresume;
    int64_t resume_snapshot_seq; /**< oldest snapshot seq among the kept parts; 0 = absent */
} gs_sync_request;

typedef struct gs_sync_batch {
    char *request_id;
    char *table;
    int32_t batch_index;
    gs_rrow *rows; /**< nrows owned rows */
    size_t nrows;
    char **schema; /**< the schema batch: CREATE statements; nschema */
    size_t nschema;
    char *checksum;
    int is_last_batch_for_table;
    char *group_id;
    int has_term;
    int64_t primary_term;
    int32_t total_tables; /**< 0 = absent */
    /* gatestream extensions, 0 / NULL = absent: the schema batch's snapshot seq and rows to
     * stream; a table batch's keyset cursor after its last row (JSON) */
    int64_t snapshot_seq;
    int64_t total_rows;
    char *cursor;
} gs_sync_batch;

typedef struct gs_sync_manifest {
    char *table;
    int32_t row_count;
    char *pk_hash;      /**< NULL = absent */
    char *batch_digest; /**< NULL = absent */
} gs_sync_manifest;

typedef struct gs_sync_complete {
    char *request_id;
    int64_t snapshot_seq;
    gs_sync_manifest *manifests;
    size_t nmanifests;
    char *group_id;
    int has_term;
    int64_t primary_term;
} gs_sync_complete;

typedef struct gs_sync_ack {
    char *request_id;
    char *joiner_node_id;
    char *table;
    int32_t batch_index;
    int success;
    char *error; /**< NULL = absent */
    char *group_id;
    int has_term;
    int64_t primary_term;
} gs_sync_ack;

typedef enum gs_sync_kind {
    GS_SMSG_NONE = 0,
    GS_SMSG_HELLO = 1,
    GS_SMSG_REQUEST = 2,
    GS_SMSG_BATCH = 3,
    GS_SMSG_COMPLETE = 4,
    GS_SMSG_ACK = 5,
} gs_sync_kind;

typedef struct gs_sync_message {
    gs_sync_kind kind;
    gs_repl_hello hello;
    gs_sync_request request;
    gs_sync_batch batch;
    gs_sync_complete complete;
    gs_sync_ack ack;
} gs_sync_message;

/** Statement: named params win over positional ones when both are present (spec 04). */
typedef struct gs_fwd_statement {
    char *sql;
    gs_rrow *named; /**< NULL = none */
    gs_rval *positional;
    size_t npositional;
} gs_fwd_statement;

typedef struct gs_fwd_request {
    char *request_id;
    gs_fwd_statement *statements;
    size_t nstatements;
    char *group_id;
    int has_term;
    int64_t primary_term;
} gs_fwd_request;

typedef struct gs_fwd_result {
    int32_t changes;
    int64_t last_insert_row_id;
} gs_fwd_result;

typedef struct gs_fwd_response {
    char *request_id;
    gs_fwd_result *results;
    size_t nresults;
    char *error; /**< NULL = success; "CODE: message" on failure */
    char *group_id;
    int has_term;
    int64_t primary_term;
} gs_fwd_response;

/* ---- values and rows ---- */

void gs_rval_free(gs_rval *v);
/** Deep copy. GS_ERROR (REPLICATION_ERROR) only when memory runs out. */
gs_status gs_rval_copy(gs_rval *dst, const gs_rval *src, gs_error *err);
/** Copy a borrowed gs_value (text/blob copied). */
gs_status gs_rval_from_value(gs_rval *dst, const gs_value *src, gs_error *err);
/** Borrow as a gs_value (BOOL becomes INT); valid while v lives. */
gs_value gs_rval_view(const gs_rval *v);
/** 1 when both have the same type and value (doubles compared bit for bit after +0/-0). */
int gs_rval_equal(const gs_rval *a, const gs_rval *b);

gs_rrow *gs_rrow_new(void);
void gs_rrow_free(gs_rrow *r); /**< frees the row and the struct; NULL is fine */
/** Append (name copied, value moved in: *v is reset to null). */
gs_status gs_rrow_add_take(gs_rrow *r, const char *name, gs_rval *v, gs_error *err);
gs_status gs_rrow_add_copy(gs_rrow *r, const char *name, const gs_rval *v, gs_error *err);
/** The index of a column, or -1. */
int gs_rrow_find(const gs_rrow *r, const char *name);
gs_rrow *gs_rrow_copy(const gs_rrow *r, gs_error *err); /**< NULL in, NULL out */

/**
 * A change-log row image (the JSON text the CDC triggers write, under the tagged value
 * encoding: plain numbers, {"__sirannon_int":"<dec>"}, {"__sirannon_blob":"<HEX>"}, strings,
 * null) into a row. A number with '.', 'e' or 'E' in its text is a double, otherwise an
 * integer. NULL text gives a NULL row. REPLICATION_ERROR for text that is not such an object.
 */
gs_status gs_rrow_from_log_json(const char *text, gs_rrow **out, gs_error *err);
/** A row as a JSON object under the tagged value encoding (for resolvers and the API).
 * A NULL row gives json null. Returns a new reference; NULL only when memory runs out. */
json_t *gs_rrow_to_json(const gs_rrow *r);
/** The reverse of gs_rrow_to_json (tagged values; integers stay integers). */
gs_status gs_rrow_from_json(const json_t *obj, gs_rrow **out, gs_error *err);

/* ---- releasing messages ---- */

void gs_repl_change_free(gs_repl_change *c);
void gs_repl_batch_free(gs_repl_batch *b);
void gs_repl_ack_free(gs_repl_ack *a);
void gs_repl_hello_free(gs_repl_hello *h);
void gs_repl_message_free(gs_repl_message *m);
void gs_sync_request_free(gs_sync_request *r);
void gs_sync_batch_free(gs_sync_batch *b);
void gs_sync_complete_free(gs_sync_complete *c);
void gs_sync_ack_free(gs_sync_ack *a);
void gs_sync_message_free(gs_sync_message *m);
void gs_fwd_request_free(gs_fwd_request *r);
void gs_fwd_response_free(gs_fwd_response *r);

#endif
