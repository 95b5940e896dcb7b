/*
 * The change log's writer side: the CDC state, the `_sirannon_changes` and `_sirannon_meta`
 * tables, the file's epoch (spec 02 "Change Log", "CDC Epoch"), write stamping (spec 08
 * "Write-Time Stamping"), retention pruning, and gs_db_cdc_watch/unwatch. The triggers
 * themselves are built in cdc_trigger.c.
 * Every statement here runs on the writer connection, on the writer thread (or on the
 * opener's thread before the writer starts).
 */
#include "cdc_internal.h"

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

/* The spec's DDL. unixepoch('subsec') needs SQLite 3.42; older libraries get the same REAL
 * seconds from julianday(). The triggers always supply changed_at themselves, so a log created
 * by either form works with every library. */
static const char CHANGES_DDL_342[] = "CREATE TABLE IF NOT EXISTS _sirannon_changes (\n"
                                      "  seq         INTEGER PRIMARY KEY AUTOINCREMENT,\n"
                                      "  table_name  TEXT NOT NULL,\n"
                                      "  operation   TEXT NOT NULL,\n"
                                      "  row_id      TEXT NOT NULL,\n"
                                      "  changed_at  REAL NOT NULL DEFAULT (unixepoch('subsec')),\n"
                                      "  old_data    TEXT,\n"
                                      "  new_data    TEXT,\n"
                                      "  node_id     TEXT NOT NULL DEFAULT '',\n"
                                      "  tx_id       TEXT NOT NULL DEFAULT '',\n"
                                      "  hlc         TEXT NOT NULL DEFAULT ''\n"
                                      ")";
static const char CHANGES_DDL_OLD[] =
    "CREATE TABLE IF NOT EXISTS _sirannon_changes (\n"
    "  seq         INTEGER PRIMARY KEY AUTOINCREMENT,\n"
    "  table_name  TEXT NOT NULL,\n"
    "  operation   TEXT NOT NULL,\n"
    "  row_id      TEXT NOT NULL,\n"
    "  changed_at  REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),\n"
    "  old_data    TEXT,\n"
    "  new_data    TEXT,\n"
    "  node_id     TEXT NOT NULL DEFAULT '',\n"
    "  tx_id       TEXT NOT NULL DEFAULT '',\n"
    "  hlc         TEXT NOT NULL DEFAULT ''\n"
    ")";
static const char *const SCHEMA_EXTRA[] = {
    "CREATE INDEX IF NOT EXISTS idx__sirannon_changes_changed_at ON _sirannon_changes (changed_at)",
    "CREATE INDEX IF NOT EXISTS idx__sirannon_changes_node_id ON _sirannon_changes (node_id)",
    "CREATE INDEX IF NOT EXISTS idx__sirannon_changes_hlc ON _sirannon_changes (hlc)",
    "CREATE TABLE IF NOT EXISTS _sirannon_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    /* the writer's current stamp, read by the triggers (see gs_cdc_stamp_set); it holds a row
     * only inside a writer transaction, so every other writer's changes stay unstamped */
    "CREATE TABLE IF NOT EXISTS " GS_CDC_STAMP_TABLE " (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "node_id TEXT NOT NULL, tx_id TEXT NOT NULL, hlc TEXT NOT NULL)",
};

int gs_cdc_identifier_ok(const char *s)
{
    if (!s || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
        return 0;
    for (const char *p = s + 1; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return 0;
    return 1;
}

gs_status gs_cdc_bad_identifier(gs_error *err, const char *what, const char *name)
{
    return gs_error_set(err, 0, "CDC_ERROR",
                        "invalid %s '%.100s': change capture needs names of letters, digits and "
                        "underscores that start with a letter or underscore",
                        what, name ? name : "");
}

static void random_bytes(void *p, size_t n)
{
    uint8_t *b = p;
    while (n > 0) {
        ssize_t got = getrandom(b, n, 0);
        if (got <= 0) {
            /* getrandom cannot fail for small requests once the pool is ready; never leave
             * the bytes predictable-and-equal if it somehow does */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uintptr_t)p;
            for (size_t i = 0; i < n; i++) {
                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                b[i] = (uint8_t)(x >> 56);
            }
            return;
        }
        b += got;
        n -= (size_t)got;
    }
}

static void hex_lower(char *out, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[p[i] >> 4];
        out[2 * i + 1] = hex[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* ---- state ---- */

gs_status gs_cdc_create(gs_database *db, gs_error *err)
{
    gs_cdc *cdc = gs_calloc(1, sizeof *cdc);
    if (!cdc)
        return gs_error_set(err, 0, "DATABASE_OPEN_FAILED", "out of memory setting up CDC");
    cdc->db = db;
    const gs_db_options *o = &db->opts;
    if (gs_hlc_init(&cdc->clock, o->node_id, GS_HLC_DEFAULT_MAX_DRIFT_MS, err) != GS_OK) {
        gs_free(cdc);
        return GS_ERROR;
    }
    pthread_mutex_init(&cdc->mu, NULL);
    pthread_mutex_init(&cdc->wake_mu, NULL);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&cdc->wake_cond, &a);
    pthread_condattr_destroy(&a);
    pthread_mutex_init(&cdc->feed_lock, NULL);
    pthread_mutex_init(&cdc->prune_mu, NULL);
    pthread_mutex_init(&cdc->deliver_mu, NULL);
    pthread_cond_init(&cdc->deliver_cond, NULL);
    atomic_init(&cdc->stamping, 0);
    atomic_init(&cdc->nsubs, 0);
    atomic_init(&cdc->nwatched, 0);
    atomic_init(&cdc->hold, UINT64_MAX);
    atomic_init(&cdc->repl_hold, UINT64_MAX);
    atomic_init(&cdc->repl_floor, UINT64_MAX);
    atomic_init(&cdc->pruned_seq, 0);
    atomic_init(&cdc->compacted_seq, 0);
    atomic_init(&cdc->feed_running, 0);
    atomic_init(&cdc->prune_queued, 0);
    atomic_init(&cdc->log_changes, -1);
    atomic_init(&cdc->log_bytes, -1);
    atomic_init(&cdc->log_compacted, 0);
    atomic_init(&cdc->log_forced, 0);
    atomic_init(&cdc->log_next_check, 0);
    atomic_init(&cdc->log_pass_head, 0);
    atomic_init(&cdc->log_pass_ms, 0);
    atomic_init(&cdc->log_near, 0);
    gs_buf_init(&cdc->scratch);
    random_bytes(cdc->rng, sizeof cdc->rng);
    db->cdc = cdc;
    cdc->node_id = gs_strdup(o->node_id ? o->node_id : "");
    if (!cdc->node_id)
        goto oom;
    if (o->cdc_table_count > 0) {
        cdc->config_tables = gs_calloc(o->cdc_table_count, sizeof *cdc->config_tables);
        if (!cdc->config_tables)
            goto oom;
        for (size_t i = 0; i < o->cdc_table_count; i++) {
            const char *t = o->cdc_tables[i];
            if (!gs_cdc_identifier_ok(t)) {
                gs_cdc_bad_identifier(err, "table name in cdc.tables", t);
                gs_cdc_free(cdc);
                db->cdc = NULL;
                return GS_ERROR;
            }
            cdc->config_tables[cdc->nconfig] = gs_strdup(t);
            if (!cdc->config_tables[cdc->nconfig])
                goto oom;
            cdc->nconfig++;
        }
    }
    return GS_OK;
oom:
    gs_cdc_free(cdc);
    db->cdc = NULL;
    return gs_error_set(err, 0, "DATABASE_OPEN_FAILED", "out of memory setting up CDC");
}

void gs_cdc_table_clear(gs_cdc_table *t)
{
    gs_free(t->name);
    for (size_t i = 0; i < t->ncols; i++)
        gs_free(t->cols[i]);
    gs_free(t->cols);
    memset(t, 0, sizeof *t);
}

void gs_cdc_free(gs_cdc *cdc)
{
    if (!cdc)
        return;
    while (cdc->subs) {
        gs_cdc_sub *s = cdc->subs;
        cdc->subs = s->next;
        gs_cdc_sub_free(s);
    }
    for (size_t i = 0; i < cdc->ntables; i++)
        gs_cdc_table_clear(&cdc->tables[i]);
    gs_free(cdc->tables);
    for (size_t i = 0; i < cdc->nconfig; i++)
        gs_free(cdc->config_tables[i]);
    gs_free(cdc->config_tables);
    gs_free(cdc->node_id);
    gs_buf_free(&cdc->scratch);
    gs_hlc_destroy(&cdc->clock);
    pthread_mutex_destroy(&cdc->mu);
    pthread_mutex_destroy(&cdc->wake_mu);
    pthread_cond_destroy(&cdc->wake_cond);
    pthread_mutex_destroy(&cdc->feed_lock);
    pthread_mutex_destroy(&cdc->prune_mu);
    pthread_mutex_destroy(&cdc->deliver_mu);
    pthread_cond_destroy(&cdc->deliver_cond);
    gs_free(cdc);
}

/* ---- the watched set (mu) ---- */

static gs_cdc_table *find_table_locked(gs_cdc *cdc, const char *name)
{
    for (size_t i = 0; i < cdc->ntables; i++)
        if (strcasecmp(cdc->tables[i].name, name) == 0)
            return &cdc->tables[i];
    return NULL;
}

char *gs_cdc_watched_name(gs_cdc *cdc, const char *table)
{
    pthread_mutex_lock(&cdc->mu);
    gs_cdc_table *t = find_table_locked(cdc, table);
    char *name = t ? gs_strdup(t->name) : NULL;
    pthread_mutex_unlock(&cdc->mu);
    return name;
}

int gs_cdc_is_configured(gs_cdc *cdc, const char *table)
{
    for (size_t i = 0; i < cdc->nconfig; i++)
        if (strcasecmp(cdc->config_tables[i], table) == 0)
            return 1;
    return 0;
}

void gs_cdc_watched_put(gs_cdc *cdc, gs_cdc_table *t)
{
    pthread_mutex_lock(&cdc->mu);
    gs_cdc_table *old = find_table_locked(cdc, t->name);
    if (old) {
        gs_cdc_table_clear(old);
        *old = *t;
    } else {
        if (cdc->ntables == cdc->cap_tables) {
            size_t cap = cdc->cap_tables ? cdc->cap_tables * 2 : 8;
            gs_cdc_table *n = gs_realloc(cdc->tables, cap * sizeof *n);
            if (!n) {
                pthread_mutex_unlock(&cdc->mu);
                gs_log(GS_LOG_ERROR, "cdc", "out of memory recording watched table '%s'", t->name);
                gs_cdc_table_clear(t);
                return;
            }
            cdc->tables = n;
            cdc->cap_tables = cap;
        }
        cdc->tables[cdc->ntables++] = *t;
        atomic_store(&cdc->nwatched, (int)cdc->ntables);
    }
    memset(t, 0, sizeof *t);
    pthread_mutex_unlock(&cdc->mu);
}

void gs_cdc_watched_remove(gs_cdc *cdc, const char *name)
{
    pthread_mutex_lock(&cdc->mu);
    gs_cdc_table *t = find_table_locked(cdc, name);
    if (t) {
        gs_cdc_table_clear(t);
        *t = cdc->tables[--cdc->ntables];
        atomic_store(&cdc->nwatched, (int)cdc->ntables);
    }
    pthread_mutex_unlock(&cdc->mu);
}

/* ---- small SQL helpers (writer connection) ---- */

gs_status gs_cdc_exec(gs_conn *conn, const char *sql, gs_error *err)
{
    char *msg = NULL;
    if (sqlite3_exec(gs_conn_db(conn), sql, NULL, NULL, &msg) != SQLITE_OK) {
        gs_error_set(err, 0, "CDC_ERROR", "change capture: %s", msg ? msg : "SQLite error");
        sqlite3_free(msg);
        return GS_ERROR;
    }
    return GS_OK;
}

static void rollback_quietly(gs_conn *conn)
{
    if (!sqlite3_get_autocommit(gs_conn_db(conn)))
        sqlite3_exec(gs_conn_db(conn), "ROLLBACK", NULL, NULL, NULL);
}

static gs_status meta_get(gs_conn *conn, const char *key, char *out, size_t cap, int *found,
                          gs_error *err)
{
    sqlite3_stmt *st = NULL;
    *found = 0;
    if (sqlite3_prepare_v2(gs_conn_db(conn), "SELECT value FROM _sirannon_meta WHERE key = ?1", -1,
                           &st, NULL) != SQLITE_OK)
        return gs_error_set(err, 0, "CDC_ERROR", "reading _sirannon_meta: %s",
                            sqlite3_errmsg(gs_conn_db(conn)));
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        snprintf(out, cap, "%s", v ? v : "");
        *found = 1;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return gs_error_set(err, 0, "CDC_ERROR", "reading _sirannon_meta: %s",
                            sqlite3_errmsg(gs_conn_db(conn)));
    return GS_OK;
}

static gs_status meta_put(gs_conn *conn, const char *key, const char *value, int only_if_absent,
                          gs_error *err)
{
    const char *sql = only_if_absent
                          ? "INSERT OR IGNORE INTO _sirannon_meta (key, value) VALUES (?1, ?2)"
                          : "INSERT INTO _sirannon_meta (key, value) VALUES (?1, ?2) ON "
                            "CONFLICT(key) DO UPDATE SET value = excluded.value";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(gs_conn_db(conn), sql, -1, &st, NULL) != SQLITE_OK)
        return gs_error_set(err, 0, "CDC_ERROR", "writing _sirannon_meta: %s",
                            sqlite3_errmsg(gs_conn_db(conn)));
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return gs_error_set(err, 0, "CDC_ERROR", "writing _sirannon_meta: %s",
                            sqlite3_errmsg(gs_conn_db(conn)));
    return GS_OK;
}

static int changes_table_exists(gs_conn *conn)
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

/* ---- initialisation ---- */

gs_status gs_cdc_init_on_writer(gs_cdc *cdc, gs_conn *conn, gs_error *err)
{
    const char *ddl = sqlite3_libversion_number() >= 3042000 ? CHANGES_DDL_342 : CHANGES_DDL_OLD;
    if (gs_cdc_exec(conn, ddl, err) != GS_OK)
        return GS_ERROR;
    for (size_t i = 0; i < sizeof SCHEMA_EXTRA / sizeof SCHEMA_EXTRA[0]; i++)
        if (gs_cdc_exec(conn, SCHEMA_EXTRA[i], err) != GS_OK)
            return GS_ERROR;
    uint8_t raw[16];
    char fresh[33];
    random_bytes(raw, sizeof raw);
    hex_lower(fresh, raw, sizeof raw);
    if (meta_put(conn, "cdc_epoch", fresh, 1, err) != GS_OK)
        return GS_ERROR;
    char epoch[64], pruned[32];
    int found;
    if (meta_get(conn, "cdc_epoch", epoch, sizeof epoch, &found, err) != GS_OK)
        return GS_ERROR;
    if (!found || !epoch[0])
        return gs_error_set(err, 0, "CDC_ERROR", "the CDC epoch could not be read back");
    if (meta_get(conn, "cdc_pruned_seq", pruned, sizeof pruned, &found, err) != GS_OK)
        return GS_ERROR;
    if (found)
        atomic_store(&cdc->pruned_seq, strtoull(pruned, NULL, 10));
    if (meta_get(conn, "cdc_compacted_seq", pruned, sizeof pruned, &found, err) != GS_OK)
        return GS_ERROR;
    if (found)
        atomic_store(&cdc->compacted_seq, strtoull(pruned, NULL, 10));
    gs_error e;
    if (gs_hlc_load(&cdc->clock, conn, &e) != GS_OK)
        gs_log(GS_LOG_WARN, "cdc", "database '%s': seeding the HLC: %s", cdc->db->id, e.message);

    /* tables whose triggers an earlier run installed stay watched; rebuild them from the
     * current columns */
    sqlite3_stmt *st = NULL;
    char **names = NULL;
    size_t n = 0, cap = 0;
    if (sqlite3_prepare_v2(gs_conn_db(conn),
                           "SELECT DISTINCT tbl_name FROM sqlite_master WHERE type = 'trigger' "
                           "AND name LIKE '\\_sirannon\\_trg\\_%\\_insert' ESCAPE '\\'",
                           -1, &st, NULL) != SQLITE_OK)
        return gs_error_set(err, 0, "CDC_ERROR", "reading the triggers: %s",
                            sqlite3_errmsg(gs_conn_db(conn)));
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        if (!t)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **nn = gs_realloc(names, cap * sizeof *nn);
            if (!nn)
                break;
            names = nn;
        }
        names[n] = gs_strdup(t);
        if (names[n])
            n++;
    }
    sqlite3_finalize(st);
    for (size_t i = 0; i < n; i++) {
        if (gs_cdc_install(cdc, conn, names[i], NULL, &e) != GS_OK)
            gs_log(GS_LOG_WARN, "cdc", "database '%s': keeping the old triggers of '%s': %s",
                   cdc->db->id, names[i], e.message);
        gs_free(names[i]);
    }
    gs_free(names);

    pthread_mutex_lock(&cdc->mu);
    snprintf(cdc->epoch, sizeof cdc->epoch, "%s", epoch);
    cdc->initialised = 1;
    pthread_mutex_unlock(&cdc->mu);
    return GS_OK;
}

static int is_initialised(gs_cdc *cdc)
{
    pthread_mutex_lock(&cdc->mu);
    int v = cdc->initialised;
    pthread_mutex_unlock(&cdc->mu);
    return v;
}

static void mark_uninitialised(gs_cdc *cdc)
{
    pthread_mutex_lock(&cdc->mu);
    cdc->initialised = 0;
    pthread_mutex_unlock(&cdc->mu);
}

gs_status gs_cdc_open(gs_cdc *cdc, gs_conn *conn, gs_error *err)
{
    if (cdc->nconfig == 0 && !changes_table_exists(conn))
        return GS_OK;
    if (gs_cdc_exec(conn, "BEGIN IMMEDIATE", err) != GS_OK)
        return GS_ERROR;
    if (gs_cdc_init_on_writer(cdc, conn, err) != GS_OK)
        goto fail;
    /* the writer clears the stamp before every commit, so a row is never left behind; should
     * one be (a bug), it must not stamp another process's writes */
    if (gs_cdc_stamp_clear(conn, err) != GS_OK)
        goto fail;
    for (size_t i = 0; i < cdc->nconfig; i++) {
        int exists;
        if (gs_cdc_table_exists(conn, cdc->config_tables[i], &exists, err) != GS_OK)
            goto fail;
        if (!exists) {
            gs_log(GS_LOG_WARN, "cdc",
                   "database '%s': cdc table '%s' does not exist yet; it is watched once a "
                   "subscription asks for it",
                   cdc->db->id, cdc->config_tables[i]);
            continue;
        }
        if (gs_cdc_install(cdc, conn, cdc->config_tables[i], NULL, err) != GS_OK)
            goto fail;
    }
    if (gs_cdc_exec(conn, "COMMIT", err) != GS_OK)
        goto fail;
    return GS_OK;
fail:
    rollback_quietly(conn);
    mark_uninitialised(cdc);
    return GS_ERROR;
}

/* ---- stamping (writer thread) ---- */

gs_status gs_cdc_max_seq(gs_conn *conn, uint64_t *out, gs_error *err)
{
    static const char sql[] = "SELECT coalesce(max(seq), 0) FROM _sirannon_changes";
    gs_stmt *st;
    *out = 0;
    if (gs_conn_prepare(conn, sql, sizeof sql - 1, GS_PREP_TRUSTED, &st, err) != GS_OK)
        return GS_ERROR;
    int rc = gs_conn_step(conn, st, err);
    if (rc == SQLITE_ROW)
        *out = (uint64_t)sqlite3_column_int64(gs_stmt_sqlite(st), 0);
    gs_conn_release(conn, st);
    return rc == SQLITE_ROW ? GS_OK : GS_ERROR;
}

/* One statement of the stamp on the writer; *changed = rows it changed. */
static gs_status stamp_exec(gs_conn *conn, const char *sql, size_t len, const char *node_id,
                            const char *tx_id, const char *hlc, int *changed, gs_error *err)
{
    gs_stmt *st;
    if (gs_conn_prepare(conn, sql, len, GS_PREP_TRUSTED, &st, err) != GS_OK) {
        gs_error_prefix(err, "setting the write stamp");
        return GS_ERROR;
    }
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    sqlite3_bind_text(ss, 1, node_id ? node_id : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(ss, 2, tx_id ? tx_id : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(ss, 3, hlc ? hlc : "", -1, SQLITE_STATIC);
    int rc = gs_conn_step(conn, st, err);
    gs_conn_release(conn, st);
    if (rc != SQLITE_DONE) {
        gs_error_prefix(err, "setting the write stamp");
        return GS_ERROR;
    }
    *changed = (int)sqlite3_changes(gs_conn_db(conn));
    return GS_OK;
}

gs_status gs_cdc_stamp_set(gs_conn *conn, const char *node_id, const char *tx_id, const char *hlc,
                           gs_error *err)
{
    /* an UPDATE once the row exists: one write to one row, which needs no statement journal
     * (the first stamp of a transaction inserts the row) */
    static const char upd[] =
        "UPDATE " GS_CDC_STAMP_TABLE " SET node_id = ?1, tx_id = ?2, hlc = ?3 WHERE id = 1";
    static const char ins[] =
        "INSERT INTO " GS_CDC_STAMP_TABLE " (id, node_id, tx_id, hlc) VALUES (1, ?1, ?2, ?3)";
    int changed = 0;
    if (stamp_exec(conn, upd, sizeof upd - 1, node_id, tx_id, hlc, &changed, err) != GS_OK)
        return GS_ERROR;
    if (changed)
        return GS_OK;
    return stamp_exec(conn, ins, sizeof ins - 1, node_id, tx_id, hlc, &changed, err);
}

gs_status gs_cdc_stamp_clear(gs_conn *conn, gs_error *err)
{
    static const char sql[] = "DELETE FROM " GS_CDC_STAMP_TABLE;
    gs_stmt *st;
    if (gs_conn_prepare(conn, sql, sizeof sql - 1, GS_PREP_TRUSTED, &st, err) != GS_OK) {
        gs_error_prefix(err, "clearing the write stamp");
        return GS_ERROR;
    }
    int rc = gs_conn_step(conn, st, err);
    gs_conn_release(conn, st);
    if (rc != SQLITE_DONE) {
        gs_error_prefix(err, "clearing the write stamp");
        return GS_ERROR;
    }
    return GS_OK;
}

gs_status gs_cdc_stamp_arm(gs_cdc *cdc, gs_conn *conn, char *hlc, gs_error *err)
{
    uint8_t raw[16];
    uint64_t a = splitmix(&cdc->rng[0]), b = splitmix(&cdc->rng[1]);
    memcpy(raw, &a, 8);
    memcpy(raw + 8, &b, 8);
    char tx[33];
    hex_lower(tx, raw, sizeof raw);
    if (gs_hlc_now(&cdc->clock, hlc, err) != GS_OK)
        return GS_ERROR;
    return gs_cdc_stamp_set(conn, cdc->node_id, tx, hlc, err);
}

/* ---- blocking writer calls ---- */

/* The call lives on the waiter's stack, so the waiter returns only once nothing will touch it
 * again: after the answer, and after the callback ended unless the call was shed
 * (WRITE_OVERLOADED: it never runs). The deadline reaper may answer while the callback still
 * runs. */
typedef struct sync_call {
    pthread_mutex_t m;
    pthread_cond_t c;
    int answered, fn_done, never_ran;
    gs_status status;
    gs_error err;
    gs_db_writer_fn fn;
    void *fn_user;
} sync_call;

static gs_status sync_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    sync_call *sc = user;
    gs_status rc = sc->fn(sc->fn_user, conn, out, err);
    pthread_mutex_lock(&sc->m);
    sc->fn_done = 1;
    pthread_cond_signal(&sc->c);
    pthread_mutex_unlock(&sc->m);
    return rc;
}

static void sync_done(void *user, const gs_db_reply *reply)
{
    sync_call *sc = user;
    pthread_mutex_lock(&sc->m);
    sc->status = reply->status;
    if (reply->status != GS_OK) {
        gs_error_copy(&sc->err, &reply->err);
        sc->never_ran = strcmp(reply->err.code, "WRITE_OVERLOADED") == 0;
    }
    sc->answered = 1;
    pthread_cond_signal(&sc->c);
    pthread_mutex_unlock(&sc->m);
}

gs_status gs_cdc_writer_call_sync(gs_database *db, gs_db_writer_fn fn, void *fn_user, gs_error *err)
{
    sync_call sc;
    memset(&sc, 0, sizeof sc);
    pthread_mutex_init(&sc.m, NULL);
    pthread_cond_init(&sc.c, NULL);
    gs_error_init(&sc.err);
    sc.fn = fn;
    sc.fn_user = fn_user;
    gs_status rc = gs_db_writer_call(db, sync_fn, &sc, sync_done, &sc, err);
    if (rc == GS_OK) {
        pthread_mutex_lock(&sc.m);
        while (!sc.answered || !(sc.fn_done || sc.never_ran))
            pthread_cond_wait(&sc.c, &sc.m);
        rc = sc.status;
        if (rc != GS_OK)
            gs_error_copy(err, &sc.err);
        pthread_mutex_unlock(&sc.m);
    }
    pthread_mutex_destroy(&sc.m);
    pthread_cond_destroy(&sc.c);
    return rc;
}

/* ---- watch / unwatch ---- */

typedef struct watch_call {
    gs_cdc *cdc;
    const char *table;
    int unwatch;
} watch_call;

static gs_status watch_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    watch_call *wc = user;
    gs_cdc *cdc = wc->cdc;
    if (gs_cdc_exec(conn, "BEGIN IMMEDIATE", err) != GS_OK)
        return GS_ERROR;
    int was_init = is_initialised(cdc);
    if (!was_init && !wc->unwatch && gs_cdc_init_on_writer(cdc, conn, err) != GS_OK)
        goto fail;
    if (wc->unwatch) {
        if (gs_cdc_drop_triggers(conn, wc->table, err) != GS_OK)
            goto fail;
    } else if (gs_cdc_install(cdc, conn, wc->table, NULL, err) != GS_OK) {
        goto fail;
    }
    if (gs_cdc_exec(conn, "COMMIT", err) != GS_OK)
        goto fail;
    if (wc->unwatch)
        gs_cdc_watched_remove(cdc, wc->table);
    gs_buf_puts(out, "null");
    return GS_OK;
fail:
    rollback_quietly(conn);
    if (!was_init)
        mark_uninitialised(cdc);
    return GS_ERROR;
}

static gs_status check_target(gs_database *db, const char *table, gs_error *err)
{
    if (!db)
        return gs_error_set(err, 0, "INVALID_REQUEST", "no database");
    if (atomic_load(&db->closed))
        return gs_error_set(err, 0, "DATABASE_CLOSED", "database '%s' is closed", db->id);
    if (db->memory)
        return gs_error_set(err, 0, "CDC_UNSUPPORTED",
                            "change capture needs a file database; '%s' is in memory", db->id);
    if (db->opts.read_only || !db->cdc)
        return gs_error_set(err, 0, "READ_ONLY",
                            "database '%s' is read-only: change capture installs triggers", db->id);
    if (!gs_cdc_identifier_ok(table))
        return gs_cdc_bad_identifier(err, "table name", table);
    if (gs_cdc_on_feed_thread(db->cdc))
        return gs_error_set(err, 0, "CDC_ERROR",
                            "change capture cannot be changed from a change callback");
    return GS_OK;
}

static gs_status watch_common(gs_database *db, const char *table, int unwatch, gs_error *err)
{
    if (check_target(db, table, err) != GS_OK)
        return GS_ERROR;
    watch_call wc = {.cdc = db->cdc, .table = table, .unwatch = unwatch};
    if (gs_cdc_writer_call_sync(db, watch_fn, &wc, err) != GS_OK)
        return GS_ERROR;
    if (!unwatch)
        return gs_cdc_feed_start(db->cdc, err);
    return GS_OK;
}

gs_status gs_db_cdc_watch(gs_database *db, const char *table, gs_error *err)
{
    return watch_common(db, table, 0, err);
}

gs_status gs_db_cdc_unwatch(gs_database *db, const char *table, gs_error *err)
{
    return watch_common(db, table, 1, err);
}

/* ---- retention (writer thread) ----
 *
 * One pass runs in one transaction on the writer:
 *  1. Time: rows older than retention_ms that no consumer needs (seq <= the lowest position of
 *     the CDC subscriptions and of the replicas, `hold`) are deleted, as always.
 *  2. Size: the log's rows and estimated bytes (ROW_BYTES_SQL) are kept current: rows added
 *     since the last pass are measured and added, deleted rows subtracted; every
 *     FULL_MEASURE_PASSES passes the row count is taken afresh (count(*), an index scan) and the
 *     byte estimate scaled to it, which corrects drift from deletes made elsewhere.
 *  3. Bound (max_log_bytes / max_log_changes, 0 = none): past it, the oldest rows are deleted
 *     down to the low-water mark (LOW_WATER_PCT of the bound). Rows nobody needs go first.
 *     When that is not enough because a replica still needs older changes, the needed range is
 *     compacted first (compact(): a change superseded by a later change to the same row goes),
 *     and only then are the oldest changes pruned anyway: pruned_seq records the new floor and
 *     the replication engine tells a replica below it to resync (engine.c). Nothing a live CDC
 *     subscription has yet to receive is ever compacted or pruned (cdc->hold).
 *  4. log_warn_bytes: one WARN when the log passes it, one INFO when it falls back under.
 */

/* A row's estimated size: the lengths of its text columns plus a fixed overhead for the
 * integer, the real, the operation and SQLite's record and b-tree cell headers. length() of
 * TEXT counts characters, which for the log's JSON (ASCII but for non-ASCII text values) is
 * the byte count or close to it. */
#define ROW_BYTES_SQL                                                                              \
    "(length(table_name) + length(row_id) + coalesce(length(old_data), 0) + "                      \
    "coalesce(length(new_data), 0) + length(node_id) + length(tx_id) + length(hlc) + 32)"
#define FULL_MEASURE_PASSES 64
#define LOW_WATER_PCT 90
/* A retention tick queues a pass each time the log grew by 1/STEP_DIVISOR of its bound. */
#define STEP_DIVISOR 20
#define STEP_MIN_ROWS 16

typedef struct log_size {
    int64_t rows, bytes;
} log_size;

typedef struct bounds {
    int64_t max_bytes, max_rows, warn_bytes;
} bounds;

static bounds bounds_of(const gs_db_options *o)
{
    bounds b = {o->cdc_max_log_bytes > 0 ? o->cdc_max_log_bytes : 0,
                o->cdc_max_log_changes > 0 ? o->cdc_max_log_changes : 0, 0};
    if (o->cdc_log_warn_bytes > 0)
        b.warn_bytes = o->cdc_log_warn_bytes;
    else if (b.max_bytes > 0)
        b.warn_bytes = b.max_bytes / 10 * 8;
    return b;
}

static int over_bound(const bounds *b, const log_size *z)
{
    return (b->max_bytes > 0 && z->bytes > b->max_bytes) ||
           (b->max_rows > 0 && z->rows > b->max_rows);
}

static gs_status retention_error(gs_conn *conn, gs_error *err, const char *what)
{
    return gs_error_set(err, 0, "CDC_ERROR", "retention: %s: %s", what,
                        sqlite3_errmsg(gs_conn_db(conn)));
}

/* Rows and bytes of the rows with lo < seq <= hi; *max_seq = the highest such seq (0: none). */
static gs_status range_size(gs_conn *conn, uint64_t lo, uint64_t hi, log_size *z, uint64_t *max_seq,
                            gs_error *err)
{
    sqlite3_stmt *st = NULL;
    z->rows = z->bytes = 0;
    if (max_seq)
        *max_seq = 0;
    if (sqlite3_prepare_v2(gs_conn_db(conn),
                           "SELECT count(*), coalesce(sum(" ROW_BYTES_SQL "), 0), "
                           "coalesce(max(seq), 0) FROM _sirannon_changes WHERE seq > ?1 AND "
                           "seq <= ?2",
                           -1, &st, NULL) != SQLITE_OK)
        return retention_error(conn, err, "measuring the change log");
    sqlite3_bind_int64(st, 1, (sqlite3_int64)(lo > (uint64_t)INT64_MAX ? INT64_MAX : lo));
    sqlite3_bind_int64(st, 2, (sqlite3_int64)(hi > (uint64_t)INT64_MAX ? INT64_MAX : hi));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        z->rows = sqlite3_column_int64(st, 0);
        z->bytes = sqlite3_column_int64(st, 1);
        if (max_seq)
            *max_seq = (uint64_t)sqlite3_column_int64(st, 2);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return retention_error(conn, err, "measuring the change log");
    return GS_OK;
}

/* Delete the rows with seq <= upto (measured first, so the size stays current). */
static gs_status delete_upto(gs_conn *conn, uint64_t upto, log_size *size, int64_t *deleted,
                             gs_error *err)
{
    log_size gone;
    *deleted = 0;
    if (range_size(conn, 0, upto, &gone, NULL, err) != GS_OK)
        return GS_ERROR;
    if (gone.rows == 0)
        return GS_OK;
    char sql[96];
    snprintf(sql, sizeof sql, "DELETE FROM _sirannon_changes WHERE seq <= %llu",
             (unsigned long long)upto);
    if (gs_cdc_exec(conn, sql, err) != GS_OK)
        return GS_ERROR;
    size->rows -= gone.rows;
    size->bytes -= gone.bytes;
    *deleted = gone.rows;
    return GS_OK;
}

/* Bring the counts up to date (step 2 above). */
static gs_status measure(gs_cdc *cdc, gs_conn *conn, log_size *size, uint64_t *head, gs_error *err)
{
    size->rows = atomic_load(&cdc->log_changes);
    size->bytes = atomic_load(&cdc->log_bytes);
    if (size->rows < 0) {
        /* first pass: everything */
        if (range_size(conn, 0, UINT64_MAX, size, head, err) != GS_OK)
            return GS_ERROR;
        cdc->log_counted_upto = *head;
        cdc->log_passes = 0;
        return GS_OK;
    }
    log_size added;
    uint64_t top = 0;
    if (range_size(conn, cdc->log_counted_upto, UINT64_MAX, &added, &top, err) != GS_OK)
        return GS_ERROR;
    size->rows += added.rows;
    size->bytes += added.bytes;
    if (added.rows > 0)
        cdc->log_recent_avg = added.bytes / added.rows;
    if (top > cdc->log_counted_upto)
        cdc->log_counted_upto = top;
    *head = cdc->log_counted_upto;
    if (++cdc->log_passes >= FULL_MEASURE_PASSES || size->rows < 0 || size->bytes < 0) {
        cdc->log_passes = 0;
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(gs_conn_db(conn), "SELECT count(*) FROM _sirannon_changes", -1, &st,
                               NULL) != SQLITE_OK)
            return retention_error(conn, err, "counting the change log");
        int64_t rows = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
        sqlite3_finalize(st);
        if (rows < 0)
            return retention_error(conn, err, "counting the change log");
        if (rows != size->rows) {
            /* rows were deleted (or added under old seqs) elsewhere: keep the average */
            size->bytes = size->rows > 0 && size->bytes > 0
                              ? (int64_t)((double)size->bytes * (double)rows / (double)size->rows)
                              : 0;
            size->rows = rows;
            if (rows > 0 && size->bytes == 0) {
                log_size all;
                if (range_size(conn, 0, UINT64_MAX, &all, NULL, err) != GS_OK)
                    return GS_ERROR;
                *size = all;
            }
        }
    }
    return GS_OK;
}

/* The seq up to which the oldest rows must go for the log to fall to the low-water mark of
 * its bound, never above `limit`. 0 when nothing needs to go. */
static gs_status cut_point(gs_conn *conn, const bounds *b, const log_size *size, uint64_t limit,
                           uint64_t *out, gs_error *err)
{
    *out = 0;
    int64_t need_rows = 0, need_bytes = 0;
    if (b->max_rows > 0)
        need_rows = size->rows - b->max_rows / 100 * LOW_WATER_PCT -
                    b->max_rows % 100 * LOW_WATER_PCT / 100;
    if (b->max_bytes > 0)
        need_bytes = size->bytes - b->max_bytes / 100 * LOW_WATER_PCT;
    if (need_rows <= 0 && need_bytes <= 0)
        return GS_OK;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(gs_conn_db(conn),
                           "SELECT seq, " ROW_BYTES_SQL " FROM _sirannon_changes WHERE seq <= ?1 "
                           "ORDER BY seq",
                           -1, &st, NULL) != SQLITE_OK)
        return retention_error(conn, err, "choosing what to prune");
    sqlite3_bind_int64(st, 1, (sqlite3_int64)(limit > (uint64_t)INT64_MAX ? INT64_MAX : limit));
    int64_t rows = 0, bytes = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        *out = (uint64_t)sqlite3_column_int64(st, 0);
        rows++;
        bytes += sqlite3_column_int64(st, 1);
        if (rows >= need_rows && bytes >= need_bytes) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return retention_error(conn, err, "choosing what to prune");
    return GS_OK;
}

/* The tables whose changes compaction may drop, as a JSON object {table: key column}: a table
 * that exists now with exactly one declared key column whose type has INTEGER or TEXT
 * affinity. Then a change's row_id is that column's value as text, which names one row (a
 * composite key's parts are joined by '-', so 'a-b'+'c' and 'a'+'b-c' would share one; a
 * rowid table's rowid may be changed without a trace in the row image; a key without
 * affinity may hold 1 and '1' side by side). */
static gs_status compactable_tables(gs_conn *conn, gs_buf *json, gs_error *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(gs_conn_db(conn),
                           "SELECT m.name, count(*), max(p.name), upper(max(p.type)) FROM "
                           "sqlite_master AS m JOIN pragma_table_info(m.name) AS p WHERE "
                           "m.type = 'table' AND p.pk > 0 AND m.name NOT LIKE '\\_sirannon%' "
                           "ESCAPE '\\' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' GROUP BY "
                           "m.name",
                           -1, &st, NULL) != SQLITE_OK)
        return retention_error(conn, err, "reading the tables' keys");
    gs_buf_putc(json, '{');
    int first = 1, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        const char *col = (const char *)sqlite3_column_text(st, 2);
        const char *type = (const char *)sqlite3_column_text(st, 3);
        if (sqlite3_column_int64(st, 1) != 1 || !gs_cdc_identifier_ok(t) ||
            !gs_cdc_identifier_ok(col) || !type)
            continue;
        int integer = strstr(type, "INT") != NULL;
        int text =
            !integer && (strstr(type, "CHAR") || strstr(type, "CLOB") || strstr(type, "TEXT"));
        if (!integer && !text)
            continue;
        gs_buf_printf(json, "%s\"%s\":\"%s\"", first ? "" : ",", t, col);
        first = 0;
    }
    sqlite3_finalize(st);
    gs_buf_putc(json, '}');
    if (rc != SQLITE_DONE)
        return retention_error(conn, err, "reading the tables' keys");
    if (json->oom)
        return gs_error_set(err, 0, "CDC_ERROR", "retention: out of memory");
    return GS_OK;
}

/* A change's key is a plain value (not a tagged big integer or blob) and, for an update, the
 * same before and after: `x` is the change's alias, `k` the json_each row of its table. */
#define PLAIN_KEY_SQL(x)                                                                           \
    "json_type(coalesce(" x ".new_data, " x ".old_data), '$.\"' || k.value || '\"') IN "           \
    "('integer', 'real', 'text') AND (" x ".operation <> 'UPDATE' OR json_extract(" x              \
    ".old_data, '$.\"' || k.value || '\"') IS json_extract(" x ".new_data, '$.\"' || k.value "     \
    "|| '\"'))"

/*
 * Compaction: delete every change c with lo < seq <= hi that a later change n to the same row
 * supersedes for any consumer, wherever it stands. Rows are named by (table_name, row_id) of a
 * compactable table (compactable_tables) and carry full row images. c goes when a later n of
 * the same row and the same origin (a consumer that reads c reads n) exists and
 *   - n is a delete (whatever c is: the row ends absent for everyone), or
 *   - c and n are both updates (n's full image replaces c's; a consumer without the row
 *     skips both).
 * Kept: an insert followed only by updates (a consumer that lacks the row needs the insert,
 * since an update of an absent row is skipped), the newest change of each row, every DDL row,
 * an update that changed the key and every change after it of the rows involved (n must not be
 * such an update either), changes of other tables. The rules are closed under chains (c
 * superseded by n superseded by m means c is superseded by m), so deleting them all at once is
 * the same as one at a time. What is left per row is at most its last delete, the insert after
 * it and its newest update; applied from any position, in seq order, it ends in the same row.
 * DDL: only the range after the last DDL statement that is not CREATE TABLE, CREATE [UNIQUE]
 * INDEX, DROP INDEX or ALTER TABLE ... ADD COLUMN is compacted, so the key columns read now are
 * those every compacted change was written under.
 */
static gs_status compact(gs_cdc *cdc, gs_conn *conn, uint64_t lo, uint64_t hi, uint64_t head,
                         log_size *size, int64_t *deleted, uint64_t *top_deleted, gs_error *err)
{
    *deleted = 0;
    if (hi <= lo)
        return GS_OK;
    sqlite3 *sdb = gs_conn_db(conn);
    sqlite3_stmt *st = NULL;
    /* compaction looks each change's successors up by row: the index the applier uses
     * (repl/log.c creates it too, when replication starts on an existing log). Built here the
     * first time the bound needs compaction, so a log that never does pays nothing for it. */
    int indexed = 0;
    if (sqlite3_prepare_v2(sdb,
                           "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = "
                           "'idx__sirannon_changes_row'",
                           -1, &st, NULL) != SQLITE_OK)
        return retention_error(conn, err, "looking for the change log's row index");
    indexed = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    if (!indexed) {
        gs_log(GS_LOG_INFO, "cdc", "database '%s': indexing the change log by row, for compaction",
               cdc->db->id);
        if (gs_cdc_exec(conn,
                        "CREATE INDEX IF NOT EXISTS idx__sirannon_changes_row ON "
                        "_sirannon_changes (table_name, row_id)",
                        err) != GS_OK)
            return GS_ERROR;
    }
    if (sqlite3_prepare_v2(
            sdb,
            "SELECT coalesce(max(seq), 0) FROM _sirannon_changes WHERE table_name = '__ddl__' "
            "AND seq > ?1 AND NOT (ltrim(upper(json_extract(new_data, '$.ddlStatement'))) LIKE "
            "'CREATE TABLE %' OR ltrim(upper(json_extract(new_data, '$.ddlStatement'))) LIKE "
            "'CREATE INDEX %' OR ltrim(upper(json_extract(new_data, '$.ddlStatement'))) LIKE "
            "'CREATE UNIQUE INDEX %' OR ltrim(upper(json_extract(new_data, '$.ddlStatement'))) "
            "LIKE 'DROP INDEX %' OR (ltrim(upper(json_extract(new_data, '$.ddlStatement'))) "
            "LIKE 'ALTER TABLE % ADD COLUMN %' AND upper(json_extract(new_data, "
            "'$.ddlStatement')) NOT LIKE '% RENAME %'))",
            -1, &st, NULL) != SQLITE_OK)
        return retention_error(conn, err, "finding the last schema change");
    sqlite3_bind_int64(st, 1, (sqlite3_int64)lo);
    uint64_t barrier = 0;
    if (sqlite3_step(st) == SQLITE_ROW)
        barrier = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (barrier > lo)
        lo = barrier;
    if (hi <= lo)
        return GS_OK;
    gs_buf tables;
    gs_buf_init(&tables);
    if (compactable_tables(conn, &tables, err) != GS_OK) {
        gs_buf_free(&tables);
        return GS_ERROR;
    }
    if (!tables.data || strcmp(tables.data, "{}") == 0) {
        gs_buf_free(&tables);
        return GS_OK;
    }
    /* driven by the superseding change n: only rows added since the last compaction
     * (log_compact_top) can supersede anything not yet compacted */
    static const char sql[] =
        "DELETE FROM _sirannon_changes WHERE seq IN (SELECT c.seq FROM _sirannon_changes AS n "
        "JOIN json_each(?3) AS k ON k.key = n.table_name JOIN _sirannon_changes AS c ON "
        "c.table_name = n.table_name AND c.row_id = n.row_id AND c.seq < n.seq WHERE n.seq > ?4 "
        "AND c.seq > ?1 AND c.seq <= ?2 AND c.node_id = n.node_id AND c.operation IN ('INSERT', "
        "'UPDATE', 'DELETE') AND (n.operation = 'DELETE' OR (n.operation = 'UPDATE' AND "
        "c.operation = 'UPDATE')) AND " PLAIN_KEY_SQL("c") " AND " PLAIN_KEY_SQL(
            "n") ") "
                 "RETURNING " ROW_BYTES_SQL ", seq";
    gs_status rc = GS_OK;
    if (sqlite3_prepare_v2(sdb, sql, sizeof sql - 1, &st, NULL) != SQLITE_OK) {
        gs_buf_free(&tables);
        return retention_error(conn, err, "compacting the change log");
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)lo);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)(hi > (uint64_t)INT64_MAX ? INT64_MAX : hi));
    sqlite3_bind_text(st, 3, tables.data, -1, SQLITE_STATIC);
    uint64_t from = cdc->log_compact_top > lo ? cdc->log_compact_top : lo;
    sqlite3_bind_int64(st, 4, (sqlite3_int64)from);
    int step;
    int64_t rows = 0, bytes = 0;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        rows++;
        bytes += sqlite3_column_int64(st, 0);
        uint64_t seq = (uint64_t)sqlite3_column_int64(st, 1);
        if (seq > *top_deleted)
            *top_deleted = seq;
    }
    if (step != SQLITE_DONE)
        rc = retention_error(conn, err, "compacting the change log");
    sqlite3_finalize(st);
    gs_buf_free(&tables);
    if (rc == GS_OK) {
        size->rows -= rows;
        size->bytes -= bytes;
        *deleted = rows;
        /* every n up to here met every c it supersedes: c <= hi, and lo and the barrier only
         * move up */
        cdc->log_compact_top = head < hi ? head : hi;
    }
    return rc;
}

/* Store seq under key in _sirannon_meta when it is above the current value. */
static gs_status raise_meta_seq(gs_conn *conn, const char *key, uint64_t seq, uint64_t current,
                                gs_error *err)
{
    if (seq <= current)
        return GS_OK;
    char v[24];
    snprintf(v, sizeof v, "%llu", (unsigned long long)seq);
    return meta_put(conn, key, v, 0, err);
}

static void warn_crossing(gs_cdc *cdc, const bounds *b, const log_size *z, uint64_t hold)
{
    if (b->warn_bytes <= 0) {
        cdc->log_over_warn = 0;
        return;
    }
    /* back under only below 90% of the mark: a log hovering at it warns once */
    int over = z->bytes > b->warn_bytes             ? 1
               : z->bytes <= b->warn_bytes / 10 * 9 ? 0
                                                    : cdc->log_over_warn;
    if (over == cdc->log_over_warn)
        return;
    cdc->log_over_warn = over;
    if (over) {
        char from[32] = "no one";
        if (hold != UINT64_MAX)
            snprintf(from, sizeof from, "seq %llu", (unsigned long long)hold);
        gs_log(GS_LOG_WARN, "cdc",
               "database '%s': the change log passed cdc.log_warn_bytes: about %lld bytes in "
               "%lld changes (warning at %lld, bound cdc.max_log_bytes %lld, 0 = none); the "
               "slowest consumer holds it from %s. A slow or absent replica keeps it growing: "
               "bring it back, remove it from replication.peers, or raise cdc.max_log_bytes. Past "
               "the bound its changes are compacted, then the oldest pruned, and a replica "
               "behind them resyncs with a first sync",
               cdc->db->id, (long long)z->bytes, (long long)z->rows, (long long)b->warn_bytes,
               (long long)b->max_bytes, from);
    } else {
        gs_log(GS_LOG_INFO, "cdc",
               "database '%s': the change log is back under cdc.log_warn_bytes (about %lld "
               "bytes in %lld changes, warning at %lld)",
               cdc->db->id, (long long)z->bytes, (long long)z->rows, (long long)b->warn_bytes);
    }
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* After a pass: where the next tick queues one (every 1/STEP_DIVISOR of the bound). */
static void plan_next_check(gs_cdc *cdc, const bounds *b, const log_size *z, uint64_t head)
{
    if (b->max_bytes <= 0 && b->max_rows <= 0 && b->warn_bytes <= 0) {
        atomic_store(&cdc->log_next_check, UINT64_MAX);
        return;
    }
    /* rows are counted by seq; their size is guessed from the larger of the log's average and
     * the average of the rows added since the last pass (updates carry two images) */
    int64_t avg = z->rows > 0 && z->bytes > 0 ? z->bytes / z->rows : 256;
    if (cdc->log_recent_avg > avg)
        avg = cdc->log_recent_avg;
    if (avg < 1)
        avg = 1;
    int64_t budget = INT64_MAX, room = INT64_MAX;
    if (b->max_rows > 0) {
        budget = b->max_rows;
        room = b->max_rows - z->rows;
    }
    if (b->max_bytes > 0) {
        if (b->max_bytes / avg < budget)
            budget = b->max_bytes / avg;
        if ((b->max_bytes - z->bytes) / avg < room)
            room = (b->max_bytes - z->bytes) / avg;
    }
    if (b->warn_bytes > 0) {
        if (b->warn_bytes / avg < budget)
            budget = b->warn_bytes / avg;
        if (z->bytes < b->warn_bytes && (b->warn_bytes - z->bytes) / avg < room)
            room = (b->warn_bytes - z->bytes) / avg;
    }
    /* a step of the bound, and at most half the room left before the next mark */
    int64_t step = budget / STEP_DIVISOR;
    if (room < INT64_MAX && room / 2 < step)
        step = room / 2;
    if (step < STEP_MIN_ROWS)
        step = STEP_MIN_ROWS;
    atomic_store(&cdc->log_near, room < INT64_MAX && room <= 2 * step);
    atomic_store(&cdc->log_pass_head, head);
    atomic_store(&cdc->log_pass_ms, mono_ms());
    atomic_store(&cdc->log_next_check, head + (uint64_t)step);
}

/* What the bound cost, logged at most once per BOUND_LOG_MS per database (a replica that is
 * gone makes every pass prune): the counts since the last line. Writer thread. */
#define BOUND_LOG_MS 60000

static void report_bound(gs_cdc *cdc, const bounds *b, const log_size *z, uint64_t hold,
                         int64_t compacted, int64_t forced, uint64_t pruned)
{
    cdc->log_unreported_compacted += compacted;
    cdc->log_unreported_forced += forced;
    /* pruning past a replica is news of its own: it has its own clock */
    int64_t *last =
        cdc->log_unreported_forced ? &cdc->log_forced_reported_ms : &cdc->log_reported_ms;
    if (!cdc->log_unreported_compacted && !cdc->log_unreported_forced)
        return;
    int64_t now = gs_hlc_physical_ms();
    if (*last && now - *last < BOUND_LOG_MS)
        return;
    *last = now;
    int64_t c = cdc->log_unreported_compacted, f = cdc->log_unreported_forced;
    cdc->log_unreported_compacted = cdc->log_unreported_forced = 0;
    if (f > 0)
        gs_log(GS_LOG_WARN, "cdc",
               "database '%s': the change log passed its bound (cdc.max_log_bytes %lld, "
               "cdc.max_log_changes %lld; 0 = none) while a replica still needed changes from "
               "seq %llu: %lld superseded change(s) compacted, then %lld change(s) pruned up to "
               "seq %llu although a replica needed them; a replica behind that seq is told to "
               "resync (a first sync). Bring slow replicas back sooner or raise the bound. Now "
               "about %lld bytes in %lld changes",
               cdc->db->id, (long long)b->max_bytes, (long long)b->max_rows,
               (unsigned long long)hold + 1, (long long)c, (long long)f, (unsigned long long)pruned,
               (long long)z->bytes, (long long)z->rows);
    else
        gs_log(GS_LOG_INFO, "cdc",
               "database '%s': the change log passed its bound (cdc.max_log_bytes %lld, "
               "cdc.max_log_changes %lld; 0 = none) while a replica still needed changes from "
               "seq %llu: %lld superseded change(s) compacted, which was enough. Now about %lld "
               "bytes in %lld changes",
               cdc->db->id, (long long)b->max_bytes, (long long)b->max_rows,
               (unsigned long long)hold + 1, (long long)c, (long long)z->bytes, (long long)z->rows);
}

static gs_status prune_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    gs_cdc *cdc = user;
    gs_database *db = cdc->db;
    double cutoff =
        (double)gs_hlc_physical_ms() / 1000.0 - (double)db->opts.cdc_retention_ms / 1000.0;
    bounds b = bounds_of(&db->opts);
    gs_status rc = GS_OK;
    uint64_t bound = 0;
    pthread_mutex_lock(&cdc->prune_mu);
    uint64_t live = atomic_load(&cdc->hold); /* live CDC subscriptions */
    uint64_t floor = atomic_load(&cdc->repl_floor);
    uint64_t hold = live;
    if (floor < live)
        live = floor; /* first syncs being served */
    uint64_t repl_hold = atomic_load(&cdc->repl_hold);
    if (repl_hold < hold)
        hold = repl_hold; /* a replica still needs these rows */
    if (hold > (uint64_t)INT64_MAX)
        hold = (uint64_t)INT64_MAX;
    if (live > (uint64_t)INT64_MAX)
        live = (uint64_t)INT64_MAX;
    gs_log(GS_LOG_DEBUG, "cdc", "database '%s': retention pass: live %llu, hold %llu", db->id,
           (unsigned long long)live, (unsigned long long)hold);
    if (gs_cdc_exec(conn, "BEGIN IMMEDIATE", err) != GS_OK) {
        pthread_mutex_unlock(&cdc->prune_mu);
        return GS_ERROR;
    }
    sqlite3 *sdb = gs_conn_db(conn);
    sqlite3_stmt *st = NULL;
    log_size size = {0, 0};
    uint64_t head = 0;
    int64_t gone = 0, compacted = 0, forced = 0;
    uint64_t compacted_top = 0;
    /* 2. size, first, so that every delete below keeps it current */
    if (measure(cdc, conn, &size, &head, err) != GS_OK) {
        rc = GS_ERROR;
        goto done;
    }
    /* 1. time */
    if (sqlite3_prepare_v2(sdb,
                           "SELECT max(seq) FROM _sirannon_changes WHERE changed_at < ?1 AND "
                           "seq <= ?2",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = gs_error_set(err, 0, "CDC_ERROR", "retention: %s", sqlite3_errmsg(sdb));
        goto done;
    }
    sqlite3_bind_double(st, 1, cutoff);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)hold);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        bound = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (bound > 0 && delete_upto(conn, bound, &size, &gone, err) != GS_OK) {
        rc = GS_ERROR;
        goto done;
    }
    /* 3. the bound; compaction already past the warning mark, so that the warning means
     * compaction is not enough */
    int64_t more = 0;
    uint64_t cut = 0;
    if (over_bound(&b, &size)) {
        if (cut_point(conn, &b, &size, live, &cut, err) != GS_OK)
            goto fail;
        uint64_t free_upto = cut < hold ? cut : hold; /* nobody needs these */
        if (free_upto > bound) {
            if (delete_upto(conn, free_upto, &size, &more, err) != GS_OK)
                goto fail;
            bound = free_upto;
        }
    }
    if ((over_bound(&b, &size) || (b.warn_bytes > 0 && size.bytes > b.warn_bytes)) &&
        live > bound &&
        compact(cdc, conn, bound, live, head, &size, &compacted, &compacted_top, err) != GS_OK)
        goto fail;
    if (over_bound(&b, &size)) {
        /* a replica still needs what must go: the oldest go anyway, and it resyncs */
        if (cut_point(conn, &b, &size, live, &cut, err) != GS_OK)
            goto fail;
        if (cut > bound && hold > bound && hold < cut) {
            if (delete_upto(conn, hold, &size, &more, err) != GS_OK)
                goto fail;
            bound = hold;
        }
        if (cut > bound) {
            if (delete_upto(conn, cut, &size, &forced, err) != GS_OK)
                goto fail;
            bound = cut;
        }
    }
    if (raise_meta_seq(conn, "cdc_pruned_seq", bound, atomic_load(&cdc->pruned_seq), err) !=
            GS_OK ||
        raise_meta_seq(conn, "cdc_compacted_seq", compacted_top, atomic_load(&cdc->compacted_seq),
                       err) != GS_OK) {
        rc = GS_ERROR;
        goto done;
    }
    if (gs_cdc_exec(conn, "COMMIT", err) != GS_OK)
        rc = GS_ERROR;
    goto done;
fail:
    rc = GS_ERROR;
done:
    if (rc != GS_OK) {
        rollback_quietly(conn);
        /* the counts may have moved inside the rolled-back transaction: measure afresh */
        atomic_store(&cdc->log_changes, -1);
        atomic_store(&cdc->log_bytes, -1);
        atomic_store(&cdc->log_next_check, 0);
        cdc->log_compact_top = 0;
    } else {
        if (bound > atomic_load(&cdc->pruned_seq))
            atomic_store(&cdc->pruned_seq, bound);
        if (compacted_top > atomic_load(&cdc->compacted_seq))
            atomic_store(&cdc->compacted_seq, compacted_top);
        if (size.rows < 0)
            size.rows = 0;
        if (size.bytes < 0)
            size.bytes = 0;
        atomic_store(&cdc->log_changes, size.rows);
        atomic_store(&cdc->log_bytes, size.bytes);
        atomic_fetch_add(&cdc->log_compacted, (uint64_t)compacted);
        atomic_fetch_add(&cdc->log_forced, (uint64_t)forced);
        plan_next_check(cdc, &b, &size, head);
    }
    pthread_mutex_unlock(&cdc->prune_mu);
    if (rc != GS_OK)
        return rc;
    report_bound(cdc, &b, &size, hold, compacted, forced, bound);
    warn_crossing(cdc, &b, &size, hold);
    gs_buf_printf(out, "%llu", (unsigned long long)bound);
    return GS_OK;
}

static void prune_done(void *user, const gs_db_reply *reply)
{
    gs_cdc *cdc = user;
    if (reply->status != GS_OK && strcmp(reply->err.code, "DATABASE_CLOSED") != 0)
        gs_log(GS_LOG_WARN, "cdc", "database '%s': change log retention failed: %s", cdc->db->id,
               reply->err.message);
    atomic_store(&cdc->prune_queued, 0);
}

void gs_cdc_queue_prune(gs_cdc *cdc)
{
    if (cdc->db->opts.cdc_retention_ms <= 0)
        return;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&cdc->prune_queued, &expected, 1))
        return;
    gs_error e;
    if (gs_db_writer_call(cdc->db, prune_fn, cdc, prune_done, cdc, &e) != GS_OK)
        atomic_store(&cdc->prune_queued, 0);
}

gs_status gs_cdc_prune_now(gs_database *db, gs_error *err)
{
    if (!db || !db->cdc)
        return gs_error_set(err, 0, "CDC_UNSUPPORTED", "no change capture on this database");
    if (db->opts.cdc_retention_ms <= 0)
        return GS_OK;
    return gs_cdc_writer_call_sync(db, prune_fn, db->cdc, err);
}

void gs_cdc_retention_tick(gs_cdc *cdc, uint64_t head)
{
    /* at most one pass is queued (prune_queued); the pass sets the next point */
    if (!cdc)
        return;
    if (head >= atomic_load(&cdc->log_next_check) ||
        (atomic_load(&cdc->log_near) && head > atomic_load(&cdc->log_pass_head) &&
         mono_ms() - atomic_load(&cdc->log_pass_ms) >= 1000))
        gs_cdc_queue_prune(cdc);
}

gs_status gs_db_change_log_stats(gs_database *db, gs_change_log_stats *out, gs_error *err)
{
    memset(out, 0, sizeof *out);
    out->changes = out->bytes = -1;
    if (!db || !db->cdc)
        return gs_error_set(err, 0, "CDC_UNSUPPORTED",
                            "database '%s' has no change log (in memory or read-only)",
                            db ? db->id : "");
    gs_cdc *cdc = db->cdc;
    bounds b = bounds_of(&db->opts);
    out->changes = atomic_load(&cdc->log_changes);
    out->bytes = out->changes < 0 ? -1 : atomic_load(&cdc->log_bytes);
    out->pruned_seq = (int64_t)atomic_load(&cdc->pruned_seq);
    out->max_bytes = b.max_bytes;
    out->max_changes = b.max_rows;
    out->warn_bytes = b.warn_bytes;
    out->compacted_total = (int64_t)atomic_load(&cdc->log_compacted);
    out->forced_total = (int64_t)atomic_load(&cdc->log_forced);
    return GS_OK;
}
