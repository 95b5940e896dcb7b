/*
 * The inside of a live query, shared by live.c (open, close, the worker that turns
 * transactions of change events into ops, re-reads), live_plan.c (what the statement reads,
 * the table it watches, the statements the query runs, the probe table) and live_rows.c
 * (rows read from the base table at a position and evaluated in the probe table, and row
 * identities), plus a small private API for the core's modules and the tests.
 *
 * Ownership: a gs_live owns everything it points to. Threads: the opener fills the query
 * before the worker starts; afterwards the worker alone uses the probe connection, the
 * result and the scratch buffers, the feed thread touches only the queue under `mu`, and
 * close joins the worker before freeing.
 */
#ifndef GS_DB_LIVE_INTERNAL_H
#define GS_DB_LIVE_INTERNAL_H

#include "cdc.h"
#include "live.h"
#include "live_order.h"
#include "live_result.h"
#include "live_shape.h"

#include "base/buf.h"
#include "sqlite/connection.h"
#include "sqlite/value.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/** How a row is identified. */
typedef enum gs_live_key_mode {
    GS_LIVE_KEY_ROWID = 1, /**< no declared key: the rowid (the event's rowId) */
    GS_LIVE_KEY_ALIAS,     /**< INTEGER PRIMARY KEY: the rowid under a column name */
    GS_LIVE_KEY_PK,        /**< a declared primary key that is not the rowid */
} gs_live_key_mode;

typedef struct gs_live_col {
    char *name;
    char *type; /**< declared type ("" when none) */
    char *coll; /**< declared collation (NULL = BINARY) */
    int pk;     /**< position in the primary key, 0 when not part of it */
} gs_live_col;

/** How one ORDER BY term (or the implicit key order) finds its value in a result row. */
typedef struct gs_live_sort_term {
    int col;    /**< a result column, or -1: a hidden column holding expr */
    char *expr; /**< hidden: the expression text (parameters as ?N) */
    gs_live_sortkey key;
} gs_live_sort_term;

/** One queued change event (feed thread -> worker). */
typedef struct gs_live_ev {
    struct gs_live_ev *next;
    uint64_t seq;
    size_t len;
    char json[];
} gs_live_ev;

/** One row image evaluated in the probe table. */
typedef struct gs_live_img {
    json_t *row;     /**< borrowed */
    const char *key; /**< its identity (borrowed) */
    size_t keylen;
    int64_t rowid;      /**< the probe row's rowid (the base rowid when there is one) */
    gs_live_row *match; /**< set when the image passes the WHERE */
} gs_live_img;

struct gs_live {
    gs_database *db;
    char *path;
    int busy_timeout_ms;
    gs_live_fn fn;
    void *user;
    int64_t jitter_ms;
    int64_t max_changes;

    /* the statement (live_plan.c) */
    gs_live_shape shape;
    gs_bind_set params;
    gs_bind_param *param_items;
    char *param_arena;
    gs_live_col *cols;
    size_t ncols;
    gs_live_key_mode mode;
    size_t *pkcols; /**< column indices in key order */
    size_t npk;
    const char *rowid_name; /**< rowid, oid or _rowid_: one no column shadows */
    char *source;           /**< the name the statement reads the table by, quoted */
    int nvis;               /**< result columns of the statement */
    gs_live_sort_term *terms;
    size_t nterms;
    gs_live_sortkey *keys;
    size_t nhidden; /**< hidden sort columns */
    int64_t limit, offset;
    char probe_name[48];
    char *read_sql;
    char *probe_sql;
    char *insert_sql;
    gs_conn *probe;
    gs_row_keys rkeys; /**< the statement's column names, as JSON keys */

    /* the result */
    gs_live_result *result;
    uint64_t applied_seq;           /**< worker: the seq the held rows include */
    _Atomic uint64_t published_seq; /**< applied_seq once its updates went out */
    gs_cdc_sub *sub;

    /* feed -> worker */
    pthread_mutex_t mu;
    pthread_cond_t cond; /**< CLOCK_MONOTONIC */
    gs_live_ev *qhead, *qtail;
    size_t qbytes, qcount;
    int overflow;
    atomic_int stop;
    pthread_t thread;
    int started;
    int ready;      /**< open has handed out the query: fn may be called */
    int self_close; /**< closed from fn: the worker frees the query when it ends */
    int sync_inited;

    /* worker */
    json_t **tx;
    size_t ntx, captx;
    size_t txbytes;
    int txover;
    int failed;
    uint64_t rng;
    gs_buf out; /**< scratch: rows, ops, messages */
};

/* ---- live.c ---- */

/** INTERNAL_ERROR "out of memory in a live query". */
gs_status gs_live_oom(gs_error *err);

/* ---- live_plan.c ---- */

/** Analyse the statement and its table, check the parameters, build the statements the
 * query runs and its probe table. CDC_ERROR, QUERY_ERROR, FORBIDDEN_SQL, INVALID_REQUEST. */
gs_status gs_live_plan_open(gs_live *lv, const char *sql, json_t *params, gs_error *err);
/** A read-only connection to the database file, for one read. */
gs_status gs_live_reader_open(const gs_live *lv, gs_conn **out, gs_error *err);
/** Prepare an internal statement; QUERY_ERROR with SQLite's message. */
gs_status gs_live_prep_trusted(gs_conn *c, const char *sql, gs_stmt **st, gs_error *err);
/** Run an internal statement on the probe connection; CDC_ERROR. */
gs_status gs_live_probe_exec(gs_live *lv, const char *sql, gs_error *err);
/** Bind the statement's parameters to a statement built from its pieces. */
gs_status gs_live_bind_params(gs_live *lv, sqlite3_stmt *st, gs_error *err);

/* ---- live_rows.c ---- */

/** Append the identity bytes of an integer (a rowid), or of a JSON value under the tagged
 * encoding (-1 when it is not a value). Equal values give equal bytes, whether they come
 * from a read or from a change event. */
void gs_live_key_int(gs_buf *b, int64_t v);
int gs_live_key_from_json(gs_buf *b, const json_t *v);
/** A rowid from a JSON integer or decimal string; -1 when it is neither. */
int gs_live_parse_rowid(const json_t *v, int64_t *out);
/** The positioned read: the rows (any order) and the change log's position, in one read
 * transaction on a connection opened for it. QUERY_ERROR and the connection's errors. */
gs_status gs_live_positioned_read(gs_live *lv, gs_live_row ***rows, size_t *n, uint64_t *seq,
                                  gs_error *err);
/** Write images into the probe table and run the statement's WHERE and select list over
 * them: each image's match becomes its row when it passes. The probe table is empty again
 * afterwards. CDC_ERROR (an image that does not fit the table), QUERY_ERROR. */
gs_status gs_live_probe_pass(gs_live *lv, gs_live_img *imgs, size_t n, gs_error *err);

/* ---- private API ---- */

/** The highest change seq whose effect on the result has been handed to fn (or that was
 * found to leave the result unchanged). A writer that knows its change's seq waits for this
 * to reach it before it expects the update (tests, metrics). Thread-safe. */
uint64_t gs_db_live_position(gs_live *live);

/** Live queries of this process not yet freed (a query closed from its own callback is
 * freed by its worker shortly after). Thread-safe. */
int gs_db_live_alive(void);

#endif
