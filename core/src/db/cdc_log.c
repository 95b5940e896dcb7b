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
    atomic_init(&cdc->pruned_seq, 0);
    atomic_init(&cdc->feed_running, 0);
    atomic_init(&cdc->prune_queued, 0);
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

gs_status gs_cdc_stamp_set(gs_conn *conn, const char *node_id, const char *tx_id, const char *hlc,
                           gs_error *err)
{
    static const char sql[] = "INSERT OR REPLACE INTO " GS_CDC_STAMP_TABLE
                              " (id, node_id, tx_id, hlc) VALUES (1, ?1, ?2, ?3)";
    gs_stmt *st;
    if (gs_conn_prepare(conn, sql, sizeof sql - 1, GS_PREP_TRUSTED, &st, err) != GS_OK) {
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
    return GS_OK;
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

/* ---- retention (writer thread) ---- */

static gs_status prune_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    gs_cdc *cdc = user;
    gs_database *db = cdc->db;
    double cutoff =
        (double)gs_hlc_physical_ms() / 1000.0 - (double)db->opts.cdc_retention_ms / 1000.0;
    gs_status rc = GS_OK;
    uint64_t bound = 0;
    pthread_mutex_lock(&cdc->prune_mu);
    uint64_t hold = atomic_load(&cdc->hold);
    uint64_t repl_hold = atomic_load(&cdc->repl_hold);
    if (repl_hold < hold)
        hold = repl_hold; /* a replica still needs these rows */
    if (hold > (uint64_t)INT64_MAX)
        hold = (uint64_t)INT64_MAX;
    if (gs_cdc_exec(conn, "BEGIN IMMEDIATE", err) != GS_OK) {
        pthread_mutex_unlock(&cdc->prune_mu);
        return GS_ERROR;
    }
    sqlite3 *sdb = gs_conn_db(conn);
    sqlite3_stmt *st = NULL;
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
    if (bound > 0) {
        char sql[96];
        snprintf(sql, sizeof sql, "DELETE FROM _sirannon_changes WHERE seq <= %llu",
                 (unsigned long long)bound);
        if (gs_cdc_exec(conn, sql, err) != GS_OK) {
            rc = GS_ERROR;
            goto done;
        }
        uint64_t prev = atomic_load(&cdc->pruned_seq);
        if (bound > prev) {
            char v[24];
            snprintf(v, sizeof v, "%llu", (unsigned long long)bound);
            if (meta_put(conn, "cdc_pruned_seq", v, 0, err) != GS_OK) {
                rc = GS_ERROR;
                goto done;
            }
        }
    }
    if (gs_cdc_exec(conn, "COMMIT", err) != GS_OK)
        rc = GS_ERROR;
    else if (bound > atomic_load(&cdc->pruned_seq))
        atomic_store(&cdc->pruned_seq, bound);
done:
    if (rc != GS_OK)
        rollback_quietly(conn);
    pthread_mutex_unlock(&cdc->prune_mu);
    if (rc == GS_OK)
        gs_buf_printf(out, "%llu", (unsigned long long)bound);
    return rc;
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
