/*
 * Tagged value encoding (spec 02, normative) between JSON and SQLite: parameter checking,
 * conversion into a compact bind set, binding, and row encoding.
 *
 * Parameters are checked and converted on the submitting thread (so malformed input fails
 * synchronously with INVALID_REQUEST) into a gs_bind_set whose text, blob and name bytes live
 * in an arena the caller sizes from gs_params_check; binding happens later, on the database
 * thread, from that set alone (no JSON is touched there).
 *
 * Values: null; true/false -> 1/0; JSON integer -> int64; real -> double; string -> text;
 * {"__sirannon_int":"<-?[0-9]{1,19}>"} -> int64 (must fit); {"__sirannon_blob":"<hex>"} ->
 * blob (two hex digits per byte, either case, as the reference decoder accepts). Anything
 * else is INVALID_REQUEST naming the parameter. Row values: INTEGER within +/-(2^53-1) is a
 * number, beyond it {"__sirannon_int":"<decimal>"}; REAL a number (NaN/Inf null); TEXT a
 * string (invalid UTF-8 -> U+FFFD); BLOB {"__sirannon_blob":"<UPPERCASE hex>"}; NULL null.
 *
 * Ownership: a bind set points into storage the caller owns and keeps alive until the
 * statement is reset (binding uses SQLITE_STATIC). Threads: pure functions; call from any
 * thread on data that thread owns.
 */
#ifndef GS_SQLITE_VALUE_H
#define GS_SQLITE_VALUE_H

#include "base/buf.h"

#include <gatestream/abi.h>
#include <gatestream/value.h>
#include <jansson.h>
#include <sqlite3.h>

typedef enum gs_bind_kind {
    GS_BIND_NONE = 0,       /**< no parameters given */
    GS_BIND_POSITIONAL = 1, /**< a JSON array: values bind ?1..?n */
    GS_BIND_NAMED = 2,      /**< a JSON object: values bind :name, @name or $name */
} gs_bind_kind;

typedef struct gs_bind_param {
    const char *name; /**< NAMED: the key, NUL-terminated (with or without its prefix) */
    gs_value value;
} gs_bind_param;

typedef struct gs_bind_set {
    gs_bind_kind kind;
    size_t count;
    gs_bind_param *items;
} gs_bind_set;

/** Check one JSON value as a bind value. On success add to *bytes the arena space its
 * conversion needs. INVALID_REQUEST (the message does not name the parameter). */
gs_status gs_value_check(const json_t *v, size_t *bytes, gs_error *err);

/** Convert a value that passed gs_value_check; text and blob bytes are copied to *arena,
 * which advances. */
void gs_value_from_json(const json_t *v, gs_value *out, char **arena);

/** Check a params value (NULL/JSON null, array, object). `label` names it in messages
 * (e.g. "params", "paramsBatch[3]"). Adds to *count the values and to *bytes the arena
 * space (names included). INVALID_REQUEST. */
gs_status gs_params_check(const json_t *params, const char *label, size_t *count, size_t *bytes,
                          gs_error *err);

/** Convert a checked params value into set, using items[0..count) and the arena. */
void gs_params_convert(const json_t *params, gs_bind_set *set, gs_bind_param *items, char **arena);

/** Bind a set to a freshly reset statement. QUERY_ERROR when the values do not match the
 * statement's parameters (too few, too many, a named parameter without a value). */
gs_status gs_params_bind(sqlite3_stmt *stmt, const gs_bind_set *set, gs_error *err);

/** Append an integer under the tagged encoding (a number, or an __sirannon_int envelope). */
void gs_value_append_int(gs_buf *b, int64_t v);

/** Append a blob envelope. */
void gs_value_append_blob(gs_buf *b, const void *p, size_t len);

/** Append column `col` of the current row under the tagged encoding. */
void gs_value_append_column(gs_buf *b, sqlite3_stmt *stmt, int col);

/** Append a rowid for lastInsertRowId: a number when safe, else a decimal string. */
void gs_value_append_rowid(gs_buf *b, int64_t v);

/** Column keys of a statement, escaped once per execution: `"name":` for each column. */
typedef struct gs_row_keys {
    gs_buf text;
    size_t *off; /**< ncols + 1 offsets into text */
    size_t cap;
    int ncols;
} gs_row_keys;

void gs_row_keys_init(gs_row_keys *k);
void gs_row_keys_free(gs_row_keys *k);
/** Build the keys for stmt (after its first step). Returns -1 on allocation failure. */
int gs_row_keys_build(gs_row_keys *k, sqlite3_stmt *stmt);
/** Append the current row as a JSON object keyed by column name, in column order. */
void gs_value_append_row(gs_buf *b, sqlite3_stmt *stmt, const gs_row_keys *keys);

#endif
