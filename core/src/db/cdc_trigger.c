/*
 * The change-capture triggers (spec 02 "Triggers"): a table's shape (columns, key), the three
 * AFTER triggers built from it with the row images under the tagged encoding in SQL, their
 * installation, and their refresh after DDL. Runs on the writer connection.
 *
 * The spec's triggers write node_id, tx_id and hlc empty and the writer stamps the rows
 * afterwards; ours read the stamp the writer set for the unit (GS_CDC_STAMP_TABLE, empty
 * outside the writer's own transactions), which gives the same committed rows without
 * rewriting each one. A log written by an older build's triggers is upgraded when the file
 * opens (gs_cdc_init_on_writer reinstalls every table's triggers).
 */
#include "cdc_internal.h"

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/log.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* changed_at in seconds, millisecond precision, on every SQLite version */
#define NOW_SECONDS "((julianday('now') - 2440587.5) * 86400.0)"
/* json_object takes at most 127 arguments by default: larger rows are built in chunks */
#define PAIRS_PER_CALL 50
/* node_id, tx_id and hlc from the writer's stamp (cdc_internal.h), empty without one: the
 * change row is selected from a one-row join, so the stamp table is read once per row */
#define STAMP_COLUMNS ", node_id, tx_id, hlc"
#define STAMP_VALUES                                                                               \
    ", coalesce(gs_stamp.node_id, ''), coalesce(gs_stamp.tx_id, ''), coalesce(gs_stamp.hlc, '') "  \
    "FROM (SELECT 1) LEFT JOIN " GS_CDC_STAMP_TABLE " gs_stamp"

static const char TRIGGER_PREFIX[] = "_sirannon_trg_";

/* ---- triggers ---- */

typedef struct table_shape {
    char *name; /* canonical (declared) name */
    char **cols;
    size_t ncols;
    int *pk; /* pk ordinal per column (0 = not part of the key) */
    size_t npk;
} table_shape;

static void shape_free(table_shape *s)
{
    gs_free(s->name);
    for (size_t i = 0; i < s->ncols; i++)
        gs_free(s->cols[i]);
    gs_free(s->cols);
    gs_free(s->pk);
    memset(s, 0, sizeof *s);
}

/* Read a table's shape. *missing = 1 (and GS_OK) when no such table exists. */
static gs_status read_shape(gs_conn *conn, const char *table, table_shape *out, int *missing,
                            gs_error *err)
{
    memset(out, 0, sizeof *out);
    *missing = 0;
    sqlite3 *db = gs_conn_db(conn);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT name, type, coalesce(sql, '') FROM sqlite_master WHERE "
                           "type IN ('table', 'view') AND lower(name) = lower(?1)",
                           -1, &st, NULL) != SQLITE_OK)
        return gs_error_set(err, 0, "CDC_ERROR", "reading the schema: %s", sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        if (rc == SQLITE_DONE) {
            *missing = 1;
            return GS_OK;
        }
        return gs_error_set(err, 0, "CDC_ERROR", "reading the schema: %s", sqlite3_errmsg(db));
    }
    const char *type = (const char *)sqlite3_column_text(st, 1);
    const char *sql = (const char *)sqlite3_column_text(st, 2);
    if (type && strcmp(type, "view") == 0) {
        sqlite3_finalize(st);
        return gs_error_set(err, 0, "CDC_ERROR",
                            "'%s' is a view; change capture watches tables only", table);
    }
    if (sql && strncasecmp(sql, "CREATE VIRTUAL", 14) == 0) {
        sqlite3_finalize(st);
        return gs_error_set(err, 0, "CDC_ERROR",
                            "'%s' is a virtual table, which cannot carry the change-capture "
                            "triggers",
                            table);
    }
    out->name = gs_strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (!out->name)
        return gs_error_set(err, 0, "CDC_ERROR", "out of memory reading '%s'", table);

    char sql_buf[160];
    snprintf(sql_buf, sizeof sql_buf, "PRAGMA table_info(\"%s\")", out->name);
    if (sqlite3_prepare_v2(db, sql_buf, -1, &st, NULL) != SQLITE_OK) {
        gs_error_set(err, 0, "CDC_ERROR", "reading the columns of '%s': %s", out->name,
                     sqlite3_errmsg(db));
        shape_free(out);
        return GS_ERROR;
    }
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (out->ncols == cap) {
            cap = cap ? cap * 2 : 16;
            char **c = gs_realloc(out->cols, cap * sizeof *c);
            int *p = c ? gs_realloc(out->pk, cap * sizeof *p) : NULL;
            if (c)
                out->cols = c;
            if (p)
                out->pk = p;
            if (!c || !p) {
                sqlite3_finalize(st);
                shape_free(out);
                return gs_error_set(err, 0, "CDC_ERROR", "out of memory reading '%s'", table);
            }
        }
        const char *col = (const char *)sqlite3_column_text(st, 1);
        out->cols[out->ncols] = gs_strdup(col ? col : "");
        out->pk[out->ncols] = sqlite3_column_int(st, 5);
        if (!out->cols[out->ncols]) {
            sqlite3_finalize(st);
            shape_free(out);
            return gs_error_set(err, 0, "CDC_ERROR", "out of memory reading '%s'", table);
        }
        if (out->pk[out->ncols] > 0)
            out->npk++;
        out->ncols++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        gs_error_set(err, 0, "CDC_ERROR", "reading the columns of '%s': %s", table,
                     sqlite3_errmsg(db));
        shape_free(out);
        return GS_ERROR;
    }
    if (out->ncols == 0) {
        shape_free(out);
        *missing = 1;
    }
    return GS_OK;
}

/* The value of one column under the tagged encoding, as an SQL expression. */
static void col_json(gs_buf *b, const char *ref, const char *col)
{
    gs_buf_printf(b,
                  "CASE typeof(%1$s.\"%2$s\") "
                  "WHEN 'integer' THEN CASE WHEN %1$s.\"%2$s\" BETWEEN -9007199254740991 AND "
                  "9007199254740991 THEN %1$s.\"%2$s\" ELSE json_object('__sirannon_int', "
                  "CAST(%1$s.\"%2$s\" AS TEXT)) END "
                  "WHEN 'real' THEN CASE WHEN %1$s.\"%2$s\" - %1$s.\"%2$s\" = 0 "
                  "THEN json(printf('%%!.17g', %1$s.\"%2$s\")) END "
                  "WHEN 'blob' THEN json_object('__sirannon_blob', hex(%1$s.\"%2$s\")) "
                  "ELSE %1$s.\"%2$s\" END",
                  ref, col);
}

/* A row image as a JSON object expression (columns in table order). */
static void row_json(gs_buf *b, const char *ref, const table_shape *s)
{
    /* json_insert(json_insert(json_object(<first chunk>), <path, value>...), ...) */
    size_t nchunks = (s->ncols + PAIRS_PER_CALL - 1) / PAIRS_PER_CALL;
    for (size_t c = 1; c < nchunks; c++)
        gs_buf_puts(b, "json_insert(");
    gs_buf_puts(b, "json_object(");
    for (size_t i = 0; i < s->ncols; i++) {
        if (i > 0 && i % PAIRS_PER_CALL == 0)
            gs_buf_puts(b, ")"); /* the call holding the previous chunk ends here */
        if (i > 0)
            gs_buf_puts(b, ", ");
        if (i < PAIRS_PER_CALL)
            gs_buf_printf(b, "'%s', ", s->cols[i]);
        else
            gs_buf_printf(b, "'$.\"%s\"', ", s->cols[i]);
        col_json(b, ref, s->cols[i]);
    }
    gs_buf_puts(b, ")");
}

static void key_part(gs_buf *b, const char *ref, const char *col)
{
    gs_buf_printf(b,
                  "CASE typeof(%1$s.\"%2$s\") WHEN 'blob' THEN hex(%1$s.\"%2$s\") WHEN 'null' "
                  "THEN '' ELSE CAST(%1$s.\"%2$s\" AS TEXT) END",
                  ref, col);
}

/* row_id: the key column, the key columns joined by '-', or the rowid without a key. */
static void row_id_sql(gs_buf *b, const char *ref, const table_shape *s)
{
    if (s->npk == 0) {
        gs_buf_printf(b, "CAST(%s.rowid AS TEXT)", ref);
        return;
    }
    for (size_t k = 1; k <= s->npk; k++) {
        for (size_t i = 0; i < s->ncols; i++) {
            if ((size_t)s->pk[i] != k)
                continue;
            if (k > 1)
                gs_buf_puts(b, " || '-' || ");
            key_part(b, ref, s->cols[i]);
        }
    }
}

static void trigger_sql(gs_buf *b, const table_shape *s, const char *op)
{
    const char *t = s->name;
    gs_buf_reset(b);
    if (strcmp(op, "insert") == 0) {
        gs_buf_printf(b,
                      "CREATE TRIGGER \"%s%s_insert\" AFTER INSERT ON \"%s\" BEGIN INSERT INTO "
                      "_sirannon_changes (table_name, operation, row_id, changed_at, "
                      "new_data" STAMP_COLUMNS ") SELECT '%s', 'INSERT', ",
                      TRIGGER_PREFIX, t, t, t);
        row_id_sql(b, "NEW", s);
        gs_buf_puts(b, ", " NOW_SECONDS ", ");
        row_json(b, "NEW", s);
    } else if (strcmp(op, "update") == 0) {
        gs_buf_printf(b,
                      "CREATE TRIGGER \"%s%s_update\" AFTER UPDATE ON \"%s\" BEGIN INSERT INTO "
                      "_sirannon_changes (table_name, operation, row_id, changed_at, old_data, "
                      "new_data" STAMP_COLUMNS ") SELECT '%s', 'UPDATE', ",
                      TRIGGER_PREFIX, t, t, t);
        row_id_sql(b, "NEW", s);
        gs_buf_puts(b, ", " NOW_SECONDS ", ");
        row_json(b, "OLD", s);
        gs_buf_puts(b, ", ");
        row_json(b, "NEW", s);
    } else {
        gs_buf_printf(b,
                      "CREATE TRIGGER \"%s%s_delete\" AFTER DELETE ON \"%s\" BEGIN INSERT INTO "
                      "_sirannon_changes (table_name, operation, row_id, changed_at, "
                      "old_data" STAMP_COLUMNS ") SELECT '%s', 'DELETE', ",
                      TRIGGER_PREFIX, t, t, t);
        row_id_sql(b, "OLD", s);
        gs_buf_puts(b, ", " NOW_SECONDS ", ");
        row_json(b, "OLD", s);
    }
    gs_buf_puts(b, STAMP_VALUES "; END");
}

gs_status gs_cdc_drop_triggers(gs_conn *conn, const char *table, gs_error *err)
{
    static const char *const ops[] = {"insert", "update", "delete"};
    char sql[200];
    for (int i = 0; i < 3; i++) {
        snprintf(sql, sizeof sql, "DROP TRIGGER IF EXISTS \"%s%s_%s\"", TRIGGER_PREFIX, table,
                 ops[i]);
        if (gs_cdc_exec(conn, sql, err) != GS_OK)
            return GS_ERROR;
    }
    return GS_OK;
}

/* Check, drop and create the three triggers from a shape. */
static gs_status install_shape(gs_conn *conn, const table_shape *s, gs_error *err)
{
    if (!gs_cdc_identifier_ok(s->name))
        return gs_cdc_bad_identifier(err, "table name", s->name);
    if (strncasecmp(s->name, "_sirannon", 9) == 0 || strncasecmp(s->name, "sqlite_", 7) == 0)
        return gs_error_set(err, 0, "CDC_ERROR", "table '%s' is internal and cannot be watched",
                            s->name);
    for (size_t i = 0; i < s->ncols; i++)
        if (!gs_cdc_identifier_ok(s->cols[i])) {
            char what[160];
            snprintf(what, sizeof what, "column name in table '%s'", s->name);
            return gs_cdc_bad_identifier(err, what, s->cols[i]);
        }
    if (gs_cdc_drop_triggers(conn, s->name, err) != GS_OK)
        return GS_ERROR;
    static const char *const ops[] = {"insert", "update", "delete"};
    gs_buf b;
    gs_buf_init(&b);
    gs_status rc = GS_OK;
    for (int i = 0; i < 3 && rc == GS_OK; i++) {
        trigger_sql(&b, s, ops[i]);
        if (b.oom)
            rc = gs_error_set(err, 0, "CDC_ERROR", "out of memory building the triggers of '%s'",
                              s->name);
        else
            rc = gs_cdc_exec(conn, b.data, err);
    }
    gs_buf_free(&b);
    if (rc != GS_OK)
        gs_error_prefix(err, "installing the triggers of '%s'", s->name);
    return rc;
}

/* Move a shape's name and columns into a watched-set entry. */
static void shape_to_table(table_shape *s, gs_cdc_table *t)
{
    t->name = s->name;
    t->cols = s->cols;
    t->ncols = s->ncols;
    s->name = NULL;
    s->cols = NULL;
    s->ncols = 0;
    shape_free(s);
}

gs_status gs_cdc_install(gs_cdc *cdc, gs_conn *conn, const char *table, char **canonical,
                         gs_error *err)
{
    if (canonical)
        *canonical = NULL;
    if (!gs_cdc_identifier_ok(table))
        return gs_cdc_bad_identifier(err, "table name", table);
    table_shape s;
    int missing;
    if (read_shape(conn, table, &s, &missing, err) != GS_OK)
        return GS_ERROR;
    if (missing)
        return gs_error_set(err, 0, "CDC_ERROR", "table '%s' does not exist", table);
    if (install_shape(conn, &s, err) != GS_OK) {
        shape_free(&s);
        return GS_ERROR;
    }
    if (canonical) {
        *canonical = gs_strdup(s.name);
        if (!*canonical) {
            shape_free(&s);
            return gs_error_set(err, 0, "CDC_ERROR", "out of memory");
        }
    }
    gs_cdc_table t;
    shape_to_table(&s, &t);
    gs_cdc_watched_put(cdc, &t);
    return GS_OK;
}

/* ---- DDL refresh (writer thread) ---- */

/* Copy the watched names and columns (installing changes the set). */
static gs_status copy_watched(gs_cdc *cdc, gs_cdc_table **out, size_t *count, gs_error *err)
{
    *out = NULL;
    *count = 0;
    pthread_mutex_lock(&cdc->mu);
    size_t n = cdc->ntables;
    if (n == 0) {
        pthread_mutex_unlock(&cdc->mu);
        return GS_OK;
    }
    gs_cdc_table *copy = gs_calloc(n, sizeof *copy);
    int oom = !copy;
    for (size_t i = 0; i < n && !oom; i++) {
        gs_cdc_table *t = &cdc->tables[i];
        copy[i].name = gs_strdup(t->name);
        copy[i].cols = gs_calloc(t->ncols ? t->ncols : 1, sizeof(char *));
        oom = !copy[i].name || !copy[i].cols;
        for (size_t c = 0; c < t->ncols && !oom; c++) {
            copy[i].cols[c] = gs_strdup(t->cols[c]);
            oom = !copy[i].cols[c];
            copy[i].ncols = c + 1;
        }
    }
    pthread_mutex_unlock(&cdc->mu);
    if (oom) {
        for (size_t i = 0; copy && i < n; i++)
            gs_cdc_table_clear(&copy[i]);
        gs_free(copy);
        return gs_error_set(err, 0, "CDC_ERROR", "out of memory refreshing the CDC triggers");
    }
    *out = copy;
    *count = n;
    return GS_OK;
}

static void free_copy(gs_cdc_table *copy, size_t n)
{
    for (size_t i = 0; i < n; i++)
        gs_cdc_table_clear(&copy[i]);
    gs_free(copy);
}

gs_status gs_cdc_before_alter(gs_cdc *cdc, gs_conn *conn, gs_error *err)
{
    gs_cdc_table *copy;
    size_t n;
    if (copy_watched(cdc, &copy, &n, err) != GS_OK)
        return GS_ERROR;
    gs_status rc = GS_OK;
    for (size_t i = 0; i < n && rc == GS_OK; i++)
        rc = gs_cdc_drop_triggers(conn, copy[i].name, err);
    free_copy(copy, n);
    return rc;
}

gs_status gs_cdc_after_ddl(gs_cdc *cdc, gs_conn *conn, int force, gs_error *err)
{
    gs_cdc_table *copy;
    size_t n;
    if (copy_watched(cdc, &copy, &n, err) != GS_OK)
        return GS_ERROR;
    gs_status rc = GS_OK;
    for (size_t i = 0; i < n && rc == GS_OK; i++) {
        table_shape s;
        int missing;
        if (read_shape(conn, copy[i].name, &s, &missing, err) != GS_OK) {
            rc = GS_ERROR;
            break;
        }
        if (missing) {
            /* dropped (its triggers went with it) or renamed (they followed it): forget it */
            rc = gs_cdc_drop_triggers(conn, copy[i].name, err);
            gs_cdc_watched_remove(cdc, copy[i].name);
            continue;
        }
        int same = s.ncols == copy[i].ncols && strcmp(s.name, copy[i].name) == 0;
        for (size_t c = 0; same && c < s.ncols; c++)
            same = strcmp(s.cols[c], copy[i].cols[c]) == 0;
        if (same && !force) {
            shape_free(&s);
            continue;
        }
        rc = install_shape(conn, &s, err);
        if (rc == GS_OK) {
            gs_cdc_table t;
            shape_to_table(&s, &t);
            gs_cdc_watched_put(cdc, &t);
        } else {
            shape_free(&s);
        }
    }
    free_copy(copy, n);
    return rc;
}

gs_status gs_cdc_table_exists(gs_conn *conn, const char *table, int *exists, gs_error *err)
{
    table_shape s;
    int missing;
    *exists = 0;
    if (read_shape(conn, table, &s, &missing, err) != GS_OK)
        return GS_ERROR;
    if (!missing) {
        *exists = 1;
        shape_free(&s);
    }
    return GS_OK;
}

/* ---- replication: capture every table (writer thread) ---- */

/* The user tables of the main schema: no views, virtual or shadow tables, nothing internal. */
static gs_status user_tables(gs_conn *conn, char ***out, size_t *count, gs_error *err)
{
    *out = NULL;
    *count = 0;
    sqlite3 *db = gs_conn_db(conn);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = "
                           "'table' AND substr(lower(name), 1, 9) != '_sirannon' AND "
                           "substr(lower(name), 1, 7) != 'sqlite_' ORDER BY name",
                           -1, &st, NULL) != SQLITE_OK)
        return gs_error_set(err, 0, "CDC_ERROR", "listing the tables: %s", sqlite3_errmsg(db));
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = gs_realloc(names, cap * sizeof *nn);
            if (!nn)
                break;
            names = nn;
        }
        const char *t = (const char *)sqlite3_column_text(st, 0);
        if (!(names[n] = gs_strdup(t ? t : "")))
            break;
        n++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        for (size_t i = 0; i < n; i++)
            gs_free(names[i]);
        gs_free(names);
        if (rc == SQLITE_ROW)
            return gs_error_set(err, 0, "CDC_ERROR", "out of memory listing the tables");
        return gs_error_set(err, 0, "CDC_ERROR", "listing the tables: %s", sqlite3_errmsg(db));
    }
    *out = names;
    *count = n;
    return GS_OK;
}

/* The change log exists (a transaction that initialised change capture may have been rolled
 * back since, leaving the initialised flag behind). */
static int log_exists(gs_conn *conn)
{
    sqlite3_stmt *st = NULL;
    int found = 0;
    if (sqlite3_prepare_v2(gs_conn_db(conn),
                           "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
                           "'_sirannon_changes'",
                           -1, &st, NULL) == SQLITE_OK)
        found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return found;
}

/* The three triggers of a table exist (a rolled-back transaction may have taken them while
 * the watched set still lists the table). */
static int has_triggers(gs_conn *conn, const char *table)
{
    sqlite3_stmt *st = NULL;
    int n = 0;
    if (sqlite3_prepare_v2(gs_conn_db(conn),
                           "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN "
                           "(?1 || '_insert', ?1 || '_update', ?1 || '_delete')",
                           -1, &st, NULL) == SQLITE_OK) {
        char prefix[200];
        snprintf(prefix, sizeof prefix, "%s%s", TRIGGER_PREFIX, table);
        sqlite3_bind_text(st, 1, prefix, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    return n == 3;
}

gs_status gs_cdc_capture_all_refresh(gs_cdc *cdc, gs_conn *conn, gs_error *err)
{
    pthread_mutex_lock(&cdc->mu);
    int initialised = cdc->initialised;
    pthread_mutex_unlock(&cdc->mu);
    if ((!initialised || !log_exists(conn)) && gs_cdc_init_on_writer(cdc, conn, err) != GS_OK)
        return GS_ERROR;
    if (gs_cdc_after_ddl(cdc, conn, 0, err) != GS_OK)
        return GS_ERROR;
    char **names;
    size_t n;
    if (user_tables(conn, &names, &n, err) != GS_OK)
        return GS_ERROR;
    gs_status rc = GS_OK;
    for (size_t i = 0; i < n; i++) {
        if (rc == GS_OK) {
            char *watched = gs_cdc_watched_name(cdc, names[i]);
            if ((!watched || !has_triggers(conn, watched)) &&
                gs_cdc_install(cdc, conn, names[i], NULL, err) != GS_OK) {
                gs_error_prefix(err, "replication captures every table, and '%s' cannot be",
                                names[i]);
                rc = GS_ERROR;
            }
            gs_free(watched);
        }
        gs_free(names[i]);
    }
    gs_free(names);
    if (rc == GS_OK) {
        atomic_store(&cdc->capture_all, 1);
        atomic_store(&cdc->stamping, 1);
    }
    return rc;
}
