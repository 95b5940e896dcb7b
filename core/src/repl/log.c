/*
 * The replication log: replication tables, outgoing batches from `_sirannon_changes`, applied
 * positions and peer state. See log.h for the contract.
 */
#include "log.h"

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/text.h"
#include "db/cdc_internal.h"
#include "repl/checksum.h"
#include "repl/hlc.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The spec's DDL (03 "Replication Tables"), with IF NOT EXISTS. */
static const char *const TABLES_DDL[] = {
    "CREATE TABLE IF NOT EXISTS _sirannon_peer_state (\n"
    "  peer_node_id      TEXT PRIMARY KEY,\n"
    "  last_acked_seq    INTEGER NOT NULL DEFAULT 0,\n"
    "  last_received_hlc TEXT NOT NULL DEFAULT '',\n"
    "  updated_at        REAL NOT NULL\n"
    ")",
    "CREATE TABLE IF NOT EXISTS _sirannon_applied_changes (\n"
    "  source_node_id TEXT NOT NULL,\n"
    "  source_seq     INTEGER NOT NULL,\n"
    "  applied_at     REAL NOT NULL,\n"
    "  PRIMARY KEY (source_node_id, source_seq)\n"
    ")",
    "CREATE TABLE IF NOT EXISTS _sirannon_column_versions (\n"
    "  table_name  TEXT NOT NULL,\n"
    "  row_id      TEXT NOT NULL,\n"
    "  column_name TEXT NOT NULL,\n"
    "  hlc         TEXT NOT NULL,\n"
    "  node_id     TEXT NOT NULL,\n"
    "  PRIMARY KEY (table_name, row_id, column_name)\n"
    ")",
    "CREATE TABLE IF NOT EXISTS _sirannon_sync_state (\n"
    "  table_name     TEXT PRIMARY KEY,\n"
    "  status         TEXT NOT NULL DEFAULT 'pending',\n"
    "  row_count      INTEGER NOT NULL DEFAULT 0,\n"
    "  pk_hash        TEXT NOT NULL DEFAULT '',\n"
    "  snapshot_seq   INTEGER,\n"
    "  source_peer_id TEXT,\n"
    "  started_at     REAL,\n"
    "  completed_at   REAL,\n"
    "  request_id     TEXT\n"
    ")",
    /* the HLC is persisted here (spec 03); the same statement change capture runs */
    "CREATE TABLE IF NOT EXISTS _sirannon_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
};

/* ---- small helpers ---- */

static gs_status prep(gs_conn *conn, const char *sql, gs_stmt **st, gs_error *err)
{
    return gs_conn_prepare(conn, sql, strlen(sql), GS_PREP_TRUSTED, st, err);
}

/* *exists = a table of that name exists. */
static gs_status table_exists(gs_conn *conn, const char *name, int *exists, gs_error *err)
{
    gs_stmt *st;
    *exists = 0;
    if (prep(conn, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", &st, err) !=
        GS_OK)
        return GS_ERROR;
    sqlite3_bind_text(gs_stmt_sqlite(st), 1, name, -1, SQLITE_STATIC);
    int rc = gs_conn_step(conn, st, err);
    gs_conn_release(conn, st);
    if (rc < 0)
        return GS_ERROR;
    *exists = rc == SQLITE_ROW;
    return GS_OK;
}

/* The same for a table of the core's own (`_sirannon_*`, never a view and never dropped while
 * the core runs), asked once per batch: the connection's loaded schema answers "yes" without a
 * statement; "no" may be a schema this connection has not reloaded yet, so it is asked again
 * of the file. */
static gs_status own_table_exists(gs_conn *conn, const char *name, int *exists, gs_error *err)
{
    if (sqlite3_table_column_metadata(gs_conn_db(conn), "main", name, NULL, NULL, NULL, NULL, NULL,
                                      NULL) == SQLITE_OK) {
        *exists = 1;
        return GS_OK;
    }
    return table_exists(conn, name, exists, err);
}

/* Run a one-row integer query with an optional text parameter; *out = 0 when NULL. */
static gs_status query_int(gs_conn *conn, const char *sql, const char *param, int64_t *out,
                           gs_error *err)
{
    gs_stmt *st;
    *out = 0;
    if (prep(conn, sql, &st, err) != GS_OK)
        return GS_ERROR;
    if (param)
        sqlite3_bind_text(gs_stmt_sqlite(st), 1, param, -1, SQLITE_STATIC);
    int rc = gs_conn_step(conn, st, err);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(gs_stmt_sqlite(st), 0);
    gs_conn_release(conn, st);
    return rc < 0 ? GS_ERROR : GS_OK;
}

static gs_status oom(gs_error *err, const char *what)
{
    return gs_error_set(err, 0, "REPLICATION_ERROR", "out of memory %s", what);
}

static double unix_seconds(void)
{
    return (double)gs_hlc_physical_ms() / 1000.0;
}

/* ---- tables ---- */

gs_status gs_repl_tables_ensure(gs_conn *writer, gs_error *err)
{
    for (size_t i = 0; i < sizeof TABLES_DDL / sizeof TABLES_DDL[0]; i++)
        if (gs_conn_exec(writer, TABLES_DDL[i], err) != GS_OK) {
            gs_error_prefix(err, "creating the replication tables");
            return GS_ERROR;
        }
    /* the applier looks a row's latest stamp up by (table_name, row_id) for every change that
     * meets an existing row; without this index each lookup scans the log */
    int has_log;
    if (own_table_exists(writer, "_sirannon_changes", &has_log, err) != GS_OK)
        return GS_ERROR;
    if (has_log && gs_conn_exec(writer,
                                "CREATE INDEX IF NOT EXISTS idx__sirannon_changes_row ON "
                                "_sirannon_changes (table_name, row_id)",
                                err) != GS_OK) {
        gs_error_prefix(err, "indexing the change log by row");
        return GS_ERROR;
    }
    return GS_OK;
}

/* ---- key columns (per call) ---- */

typedef struct key_cols {
    char *table;
    int missing; /* the table does not exist (any more) */
    char **cols; /* in pk order; none = no declared key (rowid) */
    size_t ncols;
} key_cols;

typedef struct key_cache {
    key_cols *items;
    size_t n, cap;
} key_cache;

static void key_cols_clear(key_cols *k)
{
    gs_free(k->table);
    for (size_t i = 0; i < k->ncols; i++)
        gs_free(k->cols[i]);
    gs_free(k->cols);
    memset(k, 0, sizeof *k);
}

static void key_cache_clear(key_cache *c)
{
    for (size_t i = 0; i < c->n; i++)
        key_cols_clear(&c->items[i]);
    c->n = 0;
}

static void key_cache_free(key_cache *c)
{
    key_cache_clear(c);
    gs_free(c->items);
    memset(c, 0, sizeof *c);
}

static gs_status load_key_cols(gs_conn *conn, const char *table, key_cols *k, gs_error *err)
{
    memset(k, 0, sizeof *k);
    k->table = gs_strdup(table);
    if (!k->table)
        return oom(err, "reading a primary key");
    int exists;
    if (table_exists(conn, table, &exists, err) != GS_OK)
        return GS_ERROR;
    if (!exists) {
        k->missing = 1;
        return GS_OK;
    }
    gs_stmt *st;
    if (prep(conn, "SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk", &st, err) !=
        GS_OK)
        return GS_ERROR;
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    sqlite3_bind_text(ss, 1, table, -1, SQLITE_STATIC);
    int rc;
    size_t cap = 0;
    while ((rc = gs_conn_step(conn, st, err)) == SQLITE_ROW) {
        if (k->ncols == cap) {
            cap = cap ? cap * 2 : 4;
            char **n = gs_realloc(k->cols, cap * sizeof *n);
            if (!n) {
                gs_conn_release(conn, st);
                return oom(err, "reading a primary key");
            }
            k->cols = n;
        }
        const char *name = (const char *)sqlite3_column_text(ss, 0);
        k->cols[k->ncols] = gs_strdup(name ? name : "");
        if (!k->cols[k->ncols]) {
            gs_conn_release(conn, st);
            return oom(err, "reading a primary key");
        }
        k->ncols++;
    }
    gs_conn_release(conn, st);
    return rc < 0 ? GS_ERROR : GS_OK;
}

static gs_status key_cache_get(gs_conn *conn, key_cache *c, const char *table, const key_cols **out,
                               gs_error *err)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->items[i].table, table) == 0) {
            *out = &c->items[i];
            return GS_OK;
        }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        key_cols *n = gs_realloc(c->items, cap * sizeof *n);
        if (!n)
            return oom(err, "caching primary keys");
        c->items = n;
        c->cap = cap;
    }
    key_cols *k = &c->items[c->n];
    if (load_key_cols(conn, table, k, err) != GS_OK) {
        key_cols_clear(k);
        return GS_ERROR;
    }
    c->n++;
    *out = k;
    return GS_OK;
}

/* ---- row images ----
 *
 * The triggers write each image as compact JSON from json_object(): a flat object of plain
 * keys whose values are numbers, strings, null, or an __sirannon_int / __sirannon_blob
 * envelope. The sender reads one or two images per change it sends, and a general JSON
 * parser (a tree of allocated nodes and a hash table per object) costs more than everything
 * else in reading a batch, so images of that shape are decoded here in one pass. Anything
 * else (whitespace, \u escapes, a number or an envelope outside the plain forms, invalid
 * UTF-8, a repeated key) goes to gs_rrow_from_log_json, whose result and errors are the
 * contract; the fast path gives the same row for the inputs it accepts.
 */

enum { IMG_OK = 1, IMG_SLOW = 0, IMG_OOM = -1 };

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlong forms, no surrogates, at
 * most U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t n;
    unsigned min;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, min = 0x10000;
    else
        return 0;
    if ((size_t)(end - p) < n)
        return 0;
    unsigned cp = c & (0x3f >> (n - 1));
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* A JSON string at *pp (just past the opening quote): its decoded length in *len, *pp moved
 * past the closing quote, *escaped when it holds escapes. 0 when it needs the slow path. */
static int img_scan_string(const char **pp, const char *end, size_t *len, int *escaped)
{
    const unsigned char *p = (const unsigned char *)*pp, *e = (const unsigned char *)end;
    size_t n = 0;
    *escaped = 0;
    while (p < e && *p != '"') {
        if (*p == '\\') {
            if (p + 1 >= e || !strchr("\"\\/bfnrt", p[1]) || p[1] == '\0')
                return 0; /* \u and anything unknown */
            *escaped = 1;
            p += 2;
            n++;
        } else if (*p < 0x20) {
            return 0;
        } else if (*p < 0x80) {
            p++;
            n++;
        } else {
            size_t k = utf8_seq(p, e);
            if (!k)
                return 0;
            p += k;
            n += k;
        }
    }
    if (p >= e)
        return 0;
    *len = n;
    *pp = (const char *)p + 1;
    return 1;
}

/* Copy a scanned string's bytes (from s, escapes resolved) into an owned buffer + NUL. */
static uint8_t *img_copy_string(const char *s, size_t len, int escaped)
{
    uint8_t *out = gs_malloc(len + 1);
    if (!out)
        return NULL;
    if (!escaped) {
        memcpy(out, s, len);
    } else {
        size_t n = 0;
        for (const char *p = s; n < len; p++) {
            if (*p != '\\') {
                out[n++] = (uint8_t)*p;
                continue;
            }
            p++;
            switch (*p) {
            case 'b': out[n++] = '\b'; break;
            case 'f': out[n++] = '\f'; break;
            case 'n': out[n++] = '\n'; break;
            case 'r': out[n++] = '\r'; break;
            case 't': out[n++] = '\t'; break;
            default: out[n++] = (uint8_t)*p; break; /* " \ / */
            }
        }
    }
    out[len] = 0;
    return out;
}

/* A JSON number at *pp under JSON's grammar: an integer of at most 18 digits, or a finite
 * real. 0 for anything else (the slow path reports what is wrong with it). */
static int img_number(const char **pp, const char *end, gs_rval *v)
{
    const char *p = *pp, *start = p;
    if (p < end && *p == '-')
        p++;
    const char *digits = p;
    if (p >= end || *p < '0' || *p > '9')
        return 0;
    if (*p == '0' && p + 1 < end && p[1] >= '0' && p[1] <= '9')
        return 0;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    size_t ndigits = (size_t)(p - digits);
    int real = 0;
    if (p < end && *p == '.') {
        real = 1;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return 0;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        real = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return 0;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    memset(v, 0, sizeof *v);
    if (!real) {
        if (ndigits > 18)
            return 0;
        int64_t mag = 0;
        for (const char *d = digits; d < p; d++)
            mag = mag * 10 + (*d - '0');
        v->type = GS_RVAL_INT;
        v->i = *start == '-' ? -mag : mag;
    } else {
        char tmp[64];
        size_t n = (size_t)(p - start);
        if (n >= sizeof tmp)
            return 0;
        memcpy(tmp, start, n);
        tmp[n] = 0;
        char *stop;
        double d = strtod(tmp, &stop);
        if (stop != tmp + n || !isfinite(d))
            return 0;
        v->type = GS_RVAL_DOUBLE;
        v->d = d;
    }
    *pp = p;
    return 1;
}

/* An envelope value at *pp (at its '{'): the plain forms only. */
static int img_envelope(const char **pp, const char *end, gs_rval *v)
{
    static const char INT_KEY[] = "{\"__sirannon_int\":\"";
    static const char BLOB_KEY[] = "{\"__sirannon_blob\":\"";
    const char *p = *pp;
    int is_blob;
    if ((size_t)(end - p) > sizeof BLOB_KEY - 1 && memcmp(p, BLOB_KEY, sizeof BLOB_KEY - 1) == 0) {
        is_blob = 1;
        p += sizeof BLOB_KEY - 1;
    } else if ((size_t)(end - p) > sizeof INT_KEY - 1 &&
               memcmp(p, INT_KEY, sizeof INT_KEY - 1) == 0) {
        is_blob = 0;
        p += sizeof INT_KEY - 1;
    } else {
        return IMG_SLOW;
    }
    const char *payload = p;
    while (p < end && *p != '"') {
        if (is_blob ? gs_hex_value((unsigned char)*p) < 0
                    : !((*p >= '0' && *p <= '9') || (*p == '-' && p == payload)))
            return IMG_SLOW;
        p++;
    }
    size_t len = (size_t)(p - payload);
    if (end - p < 2 || p[1] != '}')
        return IMG_SLOW;
    memset(v, 0, sizeof *v);
    if (is_blob) {
        if (len % 2)
            return IMG_SLOW;
        uint8_t *b = gs_malloc(len / 2 + 1);
        if (!b)
            return IMG_OOM;
        for (size_t i = 0; i < len; i += 2)
            b[i / 2] = (uint8_t)(gs_hex_value((unsigned char)payload[i]) << 4 |
                                 gs_hex_value((unsigned char)payload[i + 1]));
        b[len / 2] = 0;
        v->type = GS_RVAL_BLOB;
        v->p = b;
        v->len = len / 2;
    } else {
        int neg = *payload == '-';
        size_t ndigits = len - (size_t)neg;
        if (ndigits < 1 || ndigits > 19)
            return IMG_SLOW;
        uint64_t mag = 0;
        for (size_t i = (size_t)neg; i < len; i++)
            mag = mag * 10 + (uint64_t)(payload[i] - '0');
        if (neg ? mag > (uint64_t)INT64_MAX + 1 : mag > (uint64_t)INT64_MAX)
            return IMG_SLOW;
        v->type = GS_RVAL_INT;
        v->i = !neg ? (int64_t)mag : mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    }
    *pp = p + 2;
    return IMG_OK;
}

/* One value at *pp. */
static int img_value(const char **pp, const char *end, gs_rval *v)
{
    const char *p = *pp;
    memset(v, 0, sizeof *v);
    if (p >= end)
        return IMG_SLOW;
    switch (*p) {
    case '"': {
        size_t len;
        int escaped;
        const char *s = p + 1, *q = s;
        if (!img_scan_string(&q, end, &len, &escaped))
            return IMG_SLOW;
        if (!(v->p = img_copy_string(s, len, escaped)))
            return IMG_OOM;
        v->type = GS_RVAL_TEXT;
        v->len = len;
        *pp = q;
        return IMG_OK;
    }
    case '{': return img_envelope(pp, end, v);
    case 'n':
        if (end - p < 4 || memcmp(p, "null", 4) != 0)
            return IMG_SLOW;
        v->type = GS_RVAL_NULL;
        *pp = p + 4;
        return IMG_OK;
    case 't':
    case 'f': {
        int t = *p == 't';
        size_t n = t ? 4 : 5;
        if ((size_t)(end - p) < n || memcmp(p, t ? "true" : "false", n) != 0)
            return IMG_SLOW;
        v->type = GS_RVAL_BOOL;
        v->i = t;
        *pp = p + n;
        return IMG_OK;
    }
    default: return img_number(pp, end, v) ? IMG_OK : IMG_SLOW;
    }
}

/* The fast path: IMG_OK with *out, IMG_SLOW (nothing allocated), or IMG_OOM. */
static int img_decode_fast(const char *text, gs_rrow **out)
{
    const char *p = text, *end = text + strlen(text);
    *out = NULL;
    if (p >= end || *p != '{')
        return IMG_SLOW;
    p++;
    gs_rrow *row = gs_rrow_new();
    if (!row)
        return IMG_OOM;
    int rc = IMG_OK;
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            size_t klen;
            int escaped;
            char name[256];
            const char *k = p + 1;
            if (p >= end || *p != '"' || !img_scan_string(&k, end, &klen, &escaped) || escaped ||
                klen >= sizeof name || k >= end || *k != ':') {
                rc = IMG_SLOW;
                break;
            }
            memcpy(name, p + 1, klen);
            name[klen] = 0;
            if (gs_rrow_find(row, name) >= 0) {
                rc = IMG_SLOW; /* a repeated key keeps the general parser's rule */
                break;
            }
            p = k + 1;
            gs_rval v;
            rc = img_value(&p, end, &v);
            if (rc != IMG_OK)
                break;
            gs_error e;
            if (gs_rrow_add_take(row, name, &v, &e) != GS_OK) {
                rc = IMG_OOM;
                break;
            }
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            rc = IMG_SLOW;
            break;
        }
    }
    if (rc == IMG_OK && p != end)
        rc = IMG_SLOW;
    if (rc != IMG_OK) {
        gs_rrow_free(row);
        return rc;
    }
    *out = row;
    return IMG_OK;
}

gs_status gs_repl_log_image_decode(const char *text, gs_rrow **out, gs_error *err)
{
    *out = NULL;
    if (!text)
        return GS_OK;
    int rc = img_decode_fast(text, out);
    if (rc == IMG_OK)
        return GS_OK;
    if (rc == IMG_OOM)
        return oom(err, "decoding a change-log row image");
    return gs_rrow_from_log_json(text, out, err);
}

/* ---- one change ---- */

static int parse_int64(const char *s, int64_t *out)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return 0;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return 0;
    *out = v;
    return 1;
}

static gs_status build_key(const key_cols *k, const char *row_id, const gs_rrow *image,
                           gs_rrow **out, gs_error *err)
{
    gs_rrow *key = gs_rrow_new();
    if (!key)
        return oom(err, "building a primary key");
    *out = key;
    if (k->missing)
        return GS_OK; /* unknown now: the applier derives it from its own schema */
    if (k->ncols == 0) {
        int64_t rowid;
        if (!parse_int64(row_id, &rowid))
            return gs_error_set(err, 0, "REPLICATION_ERROR",
                                "change log row of table '%s' has row_id '%s', which is not a "
                                "rowid (the table has no declared primary key)",
                                k->table, row_id);
        gs_rval v = {.type = GS_RVAL_INT, .i = rowid};
        return gs_rrow_add_take(key, "rowid", &v, err);
    }
    if (!image)
        return GS_OK;
    for (size_t i = 0; i < k->ncols; i++) {
        int idx = gs_rrow_find(image, k->cols[i]);
        if (idx >= 0 && gs_rrow_add_copy(key, k->cols[i], &image->vals[idx], err) != GS_OK)
            return GS_ERROR;
    }
    return GS_OK;
}

static char *lower_dup(const char *s)
{
    char *d = gs_strdup(s);
    for (char *p = d; p && *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

static const char *col_text(sqlite3_stmt *ss, int col)
{
    const char *t = (const char *)sqlite3_column_text(ss, col);
    return t ? t : "";
}

/* Fill c from the current row of the batch query. c is part of the batch already, so the
 * caller frees whatever was filled when this fails. */
static gs_status fill_change(gs_conn *conn, sqlite3_stmt *ss, key_cache *cache, gs_repl_change *c,
                             gs_error *err)
{
    c->seq = sqlite3_column_int64(ss, 0);
    const char *op = col_text(ss, 2);
    int ddl = strcmp(op, GS_REPL_DDL_OPERATION) == 0;
    if (!ddl && strcmp(op, "INSERT") != 0 && strcmp(op, "UPDATE") != 0 && strcmp(op, "DELETE") != 0)
        return gs_error_set(err, 0, "REPLICATION_ERROR",
                            "change log row %lld has an unknown operation '%.40s'",
                            (long long)c->seq, op);
    c->table = gs_strdup(col_text(ss, 1));
    c->operation = lower_dup(op);
    c->row_id = gs_strdup(col_text(ss, 3));
    c->node_id = gs_strdup(col_text(ss, 6));
    c->tx_id = gs_strdup(col_text(ss, 7));
    c->hlc = gs_strdup(col_text(ss, 8));
    if (!c->table || !c->operation || !c->row_id || !c->node_id || !c->tx_id || !c->hlc)
        return oom(err, "reading the change log");
    const char *old_text = (const char *)sqlite3_column_text(ss, 4);
    const char *new_text = (const char *)sqlite3_column_text(ss, 5);
    if (ddl) {
        gs_rrow *img = NULL;
        if (gs_repl_log_image_decode(new_text, &img, err) != GS_OK) {
            gs_error_prefix(err, "change log row %lld (DDL)", (long long)c->seq);
            return GS_ERROR;
        }
        int idx = img ? gs_rrow_find(img, "ddlStatement") : -1;
        if (idx < 0 || img->vals[idx].type != GS_RVAL_TEXT) {
            gs_rrow_free(img);
            return gs_error_set(err, 0, "REPLICATION_ERROR",
                                "change log row %lld is a DDL change without a ddlStatement",
                                (long long)c->seq);
        }
        c->ddl_statement = gs_strdup((const char *)img->vals[idx].p);
        gs_rrow_free(img);
        c->primary_key = gs_rrow_new();
        if (!c->ddl_statement || !c->primary_key)
            return oom(err, "reading the change log");
        /* the schema moved: key columns must be read again */
        key_cache_clear(cache);
        return GS_OK;
    }
    if (gs_repl_log_image_decode(new_text, &c->new_data, err) != GS_OK ||
        gs_repl_log_image_decode(old_text, &c->old_data, err) != GS_OK) {
        gs_error_prefix(err, "change log row %lld of table '%s'", (long long)c->seq, c->table);
        return GS_ERROR;
    }
    const key_cols *k = NULL;
    if (key_cache_get(conn, cache, c->table, &k, err) != GS_OK)
        return GS_ERROR;
    return build_key(k, c->row_id, c->new_data ? c->new_data : c->old_data, &c->primary_key, err);
}

/* ---- batches ---- */

/* except_node NULL: this node's own rows; else every stamped row but except_node's (relay). */
static gs_status read_batch(gs_conn *conn, const char *local_node_id, const char *except_node,
                            int64_t after_seq, size_t max_changes, gs_repl_batch *out, int *empty,
                            gs_error *err)
{
    static const char SQL[] = "SELECT seq, table_name, operation, row_id, old_data, new_data, "
                              "node_id, tx_id, hlc FROM _sirannon_changes WHERE seq > ?1 AND "
                              "node_id = ?2 ORDER BY seq LIMIT ?3";
    static const char RELAY_SQL[] = "SELECT seq, table_name, operation, row_id, old_data, "
                                    "new_data, node_id, tx_id, hlc FROM _sirannon_changes WHERE "
                                    "seq > ?1 AND node_id != '' AND node_id != ?2 ORDER BY seq "
                                    "LIMIT ?3";
    memset(out, 0, sizeof *out);
    *empty = 1;
    if (!local_node_id || !local_node_id[0])
        return gs_error_set(err, 0, "INVALID_REQUEST",
                            "reading a batch needs this node's id (unstamped changes, whose "
                            "node_id is empty, are never replicated)");
    if (after_seq < 0)
        after_seq = 0;
    size_t limit = max_changes == 0 || max_changes > GS_REPL_MAX_BATCH_CHANGES
                       ? GS_REPL_MAX_BATCH_CHANGES
                       : max_changes;
    int exists;
    if (own_table_exists(conn, "_sirannon_changes", &exists, err) != GS_OK)
        return GS_ERROR;
    if (!exists)
        return GS_OK;

    gs_stmt *st;
    if (prep(conn, except_node ? RELAY_SQL : SQL, &st, err) != GS_OK)
        return GS_ERROR;
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    sqlite3_bind_int64(ss, 1, after_seq);
    sqlite3_bind_text(ss, 2, except_node ? except_node : local_node_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(ss, 3, (sqlite3_int64)limit);
    key_cache cache = {0};
    gs_status status = GS_OK;
    size_t cap = 0;
    int rc;
    while ((rc = gs_conn_step(conn, st, err)) == SQLITE_ROW) {
        if (out->nchanges == cap) {
            cap = cap ? cap * 2 : 16;
            if (cap > limit)
                cap = limit;
            gs_repl_change *n = gs_realloc(out->changes, cap * sizeof *n);
            if (!n) {
                status = oom(err, "reading the change log");
                break;
            }
            out->changes = n;
        }
        gs_repl_change *c = &out->changes[out->nchanges++];
        memset(c, 0, sizeof *c);
        if (fill_change(conn, ss, &cache, c, err) != GS_OK) {
            status = GS_ERROR;
            break;
        }
    }
    if (rc < 0)
        status = GS_ERROR;
    gs_conn_release(conn, st);
    key_cache_free(&cache);
    if (status == GS_OK && out->nchanges == 0)
        return GS_OK;

    if (status == GS_OK) {
        const gs_repl_change *first = &out->changes[0];
        const char *lo = first->hlc, *hi = first->hlc;
        for (size_t i = 1; i < out->nchanges; i++) {
            if (gs_hlc_compare(out->changes[i].hlc, lo) < 0)
                lo = out->changes[i].hlc;
            if (gs_hlc_compare(out->changes[i].hlc, hi) > 0)
                hi = out->changes[i].hlc;
        }
        out->from_seq = after_seq + 1;
        out->to_seq = out->changes[out->nchanges - 1].seq;
        out->source_node_id = gs_strdup(local_node_id);
        out->hlc_min = gs_strdup(lo);
        out->hlc_max = gs_strdup(hi);
        gs_buf id;
        gs_buf_init(&id);
        gs_buf_printf(&id, "%s-%lld-%lld", local_node_id, (long long)out->from_seq,
                      (long long)out->to_seq);
        out->batch_id = id.oom ? NULL : gs_buf_take(&id, NULL);
        gs_buf_free(&id);
        if (!out->source_node_id || !out->hlc_min || !out->hlc_max || !out->batch_id)
            status = oom(err, "building a batch");
    }
    if (status == GS_OK) {
        char sum[65];
        if (gs_repl_changes_checksum(out->changes, out->nchanges, sum, err) != GS_OK)
            status = GS_ERROR;
        else if (!(out->checksum = gs_strdup(sum)))
            status = oom(err, "building a batch");
    }
    if (status != GS_OK) {
        gs_repl_batch_free(out);
        memset(out, 0, sizeof *out);
        return GS_ERROR;
    }
    *empty = 0;
    return GS_OK;
}

gs_status gs_repl_read_batch(gs_conn *conn, const char *local_node_id, int64_t after_seq,
                             size_t max_changes, gs_repl_batch *out, int *empty, gs_error *err)
{
    return read_batch(conn, local_node_id, NULL, after_seq, max_changes, out, empty, err);
}

gs_status gs_repl_read_batch_relay(gs_conn *conn, const char *local_node_id,
                                   const char *except_node_id, int64_t after_seq,
                                   size_t max_changes, gs_repl_batch *out, int *empty,
                                   gs_error *err)
{
    return read_batch(conn, local_node_id, except_node_id ? except_node_id : "", after_seq,
                      max_changes, out, empty, err);
}

/* ---- positions ---- */

gs_status gs_repl_current_seq(gs_conn *conn, int64_t *out, gs_error *err)
{
    *out = 0;
    int exists;
    if (own_table_exists(conn, "_sirannon_changes", &exists, err) != GS_OK)
        return GS_ERROR;
    if (!exists)
        return GS_OK;
    return query_int(conn,
                     "SELECT max(coalesce((SELECT max(seq) FROM _sirannon_changes), 0), "
                     "coalesce((SELECT seq FROM sqlite_sequence WHERE name = "
                     "'_sirannon_changes'), 0))",
                     NULL, out, err);
}

gs_status gs_repl_applied_seq(gs_conn *conn, const char *source_node_id, int64_t *out,
                              gs_error *err)
{
    *out = 0;
    if (!source_node_id)
        return gs_error_set(err, 0, "INVALID_REQUEST", "no source node id");
    int exists;
    if (own_table_exists(conn, "_sirannon_applied_changes", &exists, err) != GS_OK)
        return GS_ERROR;
    if (!exists)
        return GS_OK;
    return query_int(conn,
                     "SELECT coalesce(max(source_seq), 0) FROM _sirannon_applied_changes WHERE "
                     "source_node_id = ?1",
                     source_node_id, out, err);
}

/* ---- peer state ---- */

gs_status gs_repl_peer_state_save(gs_conn *writer, const char *peer, int64_t last_acked_seq,
                                  const char *last_received_hlc, gs_error *err)
{
    static const char SQL[] =
        "INSERT INTO _sirannon_peer_state (peer_node_id, last_acked_seq, last_received_hlc, "
        "updated_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(peer_node_id) DO UPDATE SET "
        "last_acked_seq = excluded.last_acked_seq, last_received_hlc = "
        "excluded.last_received_hlc, updated_at = excluded.updated_at";
    if (!peer || !peer[0])
        return gs_error_set(err, 0, "INVALID_REQUEST", "saving peer state needs the peer's id");
    gs_stmt *st;
    if (prep(writer, SQL, &st, err) != GS_OK)
        return GS_ERROR;
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    sqlite3_bind_text(ss, 1, peer, -1, SQLITE_STATIC);
    sqlite3_bind_int64(ss, 2, last_acked_seq);
    sqlite3_bind_text(ss, 3, last_received_hlc ? last_received_hlc : "", -1, SQLITE_STATIC);
    sqlite3_bind_double(ss, 4, unix_seconds());
    int rc = gs_conn_step(writer, st, err);
    gs_conn_release(writer, st);
    if (rc != SQLITE_DONE) {
        gs_error_prefix(err, "saving the state of peer '%s'", peer);
        return GS_ERROR;
    }
    return GS_OK;
}

gs_status gs_repl_peer_state_load(gs_conn *conn, const char *peer, int64_t *last_acked,
                                  gs_error *err)
{
    *last_acked = 0;
    if (!peer)
        return gs_error_set(err, 0, "INVALID_REQUEST", "no peer id");
    int exists;
    if (own_table_exists(conn, "_sirannon_peer_state", &exists, err) != GS_OK)
        return GS_ERROR;
    if (!exists)
        return GS_OK;
    return query_int(conn,
                     "SELECT last_acked_seq FROM _sirannon_peer_state WHERE peer_node_id = ?1",
                     peer, last_acked, err);
}

/* ---- DDL rows ---- */

gs_status gs_repl_log_ddl(gs_conn *writer, const char *sql, gs_error *err)
{
    /* stamped like the triggers' rows: with the writer's stamp for the unit, if any */
    static const char SQL[] =
        "INSERT INTO _sirannon_changes (table_name, operation, row_id, changed_at, new_data, "
        "node_id, tx_id, hlc) SELECT '" GS_REPL_DDL_TABLE "', '" GS_REPL_DDL_OPERATION "', '', "
        "(julianday('now') - 2440587.5) * 86400.0, ?1, coalesce(gs_stamp.node_id, ''), "
        "coalesce(gs_stamp.tx_id, ''), coalesce(gs_stamp.hlc, '') FROM (SELECT 1) LEFT "
        "JOIN " GS_CDC_STAMP_TABLE " gs_stamp";
    if (!sql)
        return gs_error_set(err, 0, "INVALID_REQUEST", "no DDL statement to record");
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_puts(&b, "{\"ddlStatement\":");
    gs_buf_json_string(&b, sql, strlen(sql));
    gs_buf_putc(&b, '}');
    if (b.oom) {
        gs_buf_free(&b);
        return oom(err, "recording a DDL change");
    }
    gs_stmt *st;
    if (prep(writer, SQL, &st, err) != GS_OK) {
        gs_buf_free(&b);
        return GS_ERROR;
    }
    sqlite3_bind_text(gs_stmt_sqlite(st), 1, b.data, (int)b.len, SQLITE_STATIC);
    int rc = gs_conn_step(writer, st, err);
    gs_conn_release(writer, st);
    gs_buf_free(&b);
    if (rc != SQLITE_DONE) {
        gs_error_prefix(err, "recording the DDL change");
        return GS_ERROR;
    }
    return GS_OK;
}

gs_status gs_repl_meta_set(gs_conn *writer, const char *key, const char *value, gs_error *err)
{
    sqlite3 *db = gs_conn_db(writer);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO _sirannon_meta (key, value) VALUES (?, ?)",
                           -1, &st, NULL) != SQLITE_OK)
        return gs_error_set(err, 0, "REPLICATION_ERROR", "cannot write %s: %s", key,
                            sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return gs_error_set(err, 0, "REPLICATION_ERROR", "cannot write %s: %s", key,
                            sqlite3_errmsg(db));
    return GS_OK;
}
