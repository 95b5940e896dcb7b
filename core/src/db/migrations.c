/*
 * The migration runner: the tracking table, planning (baselines included), applying,
 * rolling back and status on one connection, and gs_db_migrate, which runs them on a
 * database's writer thread. See migrations.h for the contract.
 *
 * Every step is one BEGIN IMMEDIATE transaction that re-reads the history, so what it does
 * is decided under the write lock: two appliers on one file (two processes, or two
 * registries in one) serialise on that lock, and the second finds the work done.
 */
#include "migrations.h"

#include "database_internal.h"

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define TABLE "_sirannon_migrations"

/* The spec's DDL, with a default that also works before SQLite 3.42 (no 'subsec'). */
static const char create_sql[] =
    "CREATE TABLE IF NOT EXISTS " TABLE " (\n"
    "  version    INTEGER PRIMARY KEY,\n"
    "  name       TEXT NOT NULL,\n"
    "  applied_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),\n"
    "  checksum   TEXT\n"
    ")";

/* Outcome of one step. */
enum { STEP_OK = 0, STEP_ERROR = 1, STEP_CONFLICT = 2 };

static int is_conflict_rc(int rc)
{
    int p = rc & 0xff;
    return p == SQLITE_BUSY || p == SQLITE_LOCKED;
}

static double wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static gs_status with_version(gs_error *err, int64_t version)
{
    if (err)
        snprintf(err->details, sizeof err->details, "{\"version\":%lld}", (long long)version);
    return GS_ERROR;
}

/* ---- small SQL helpers (internal statements: the guard is not involved) ---- */

/* Run internal SQL; returns the SQLite result code, message in msg. */
static int xexec(sqlite3 *db, const char *sql, char *msg, size_t cap)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK && msg)
        snprintf(msg, cap, "%s", sqlite3_errmsg(db));
    return rc;
}

static void rollback_quietly(sqlite3 *db)
{
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

static int64_t read_user_version(sqlite3 *db)
{
    sqlite3_stmt *st;
    int64_t v = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return 0;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int write_user_version(sqlite3 *db, int64_t v, char *msg, size_t cap)
{
    if (v < 0 || v > GS_MIGRATION_VERSION_MAX)
        return SQLITE_OK; /* a foreign history beyond the pragma's range: leave it */
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %lld", (long long)v);
    return xexec(db, sql, msg, cap);
}

static int busy_timeout_ms(sqlite3 *db)
{
    sqlite3_stmt *st;
    int v = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA busy_timeout", -1, &st, NULL) != SQLITE_OK)
        return 0;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int table_exists(sqlite3 *db, int *exists)
{
    sqlite3_stmt *st;
    *exists = 0;
    int rc = sqlite3_prepare_v2(
        db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '" TABLE "'", -1, &st,
        NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *exists = 1;
        rc = SQLITE_DONE;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Create the table, and add the checksum column to a table made before it existed. */
static int ensure_table(sqlite3 *db, char *msg, size_t cap)
{
    int rc = xexec(db, create_sql, msg, cap);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_stmt *st;
    rc = sqlite3_prepare_v2(
        db, "SELECT 1 FROM pragma_table_info('" TABLE "') WHERE name = 'checksum'", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        snprintf(msg, cap, "%s", sqlite3_errmsg(db));
        return rc;
    }
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW)
        return SQLITE_OK;
    if (rc != SQLITE_DONE) {
        snprintf(msg, cap, "%s", sqlite3_errmsg(db));
        return rc;
    }
    return xexec(db, "ALTER TABLE " TABLE " ADD COLUMN checksum TEXT", msg, cap);
}

/* ---- the history ---- */

typedef struct hrow {
    int64_t version;
    char *name;
    double applied_at;
    int has_checksum;
    char checksum[65]; /* as stored (cut at 64 bytes; ours are 16) */
} hrow;

typedef struct history {
    hrow *rows; /* ascending */
    size_t count;
} history;

static void history_free(history *h)
{
    for (size_t i = 0; i < h->count; i++)
        gs_free(h->rows[i].name);
    gs_free(h->rows);
    h->rows = NULL;
    h->count = 0;
}

static int read_history(sqlite3 *db, history *h, char *msg, size_t cap)
{
    h->rows = NULL;
    h->count = 0;
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(
        db, "SELECT version, name, applied_at, checksum FROM " TABLE " ORDER BY version", -1, &st,
        NULL);
    if (rc != SQLITE_OK) {
        snprintf(msg, cap, "%s", sqlite3_errmsg(db));
        return rc;
    }
    size_t rcap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (h->count == rcap) {
            size_t nc = rcap ? rcap * 2 : 16;
            hrow *nr = gs_realloc(h->rows, nc * sizeof *nr);
            if (!nr) {
                rc = SQLITE_NOMEM;
                break;
            }
            h->rows = nr;
            rcap = nc;
        }
        hrow *r = &h->rows[h->count];
        memset(r, 0, sizeof *r);
        r->version = sqlite3_column_int64(st, 0);
        const unsigned char *nm = sqlite3_column_text(st, 1);
        r->name = gs_strdup(nm ? (const char *)nm : "");
        if (!r->name) {
            rc = SQLITE_NOMEM;
            break;
        }
        r->applied_at = sqlite3_column_double(st, 2);
        if (sqlite3_column_type(st, 3) != SQLITE_NULL) {
            const unsigned char *c = sqlite3_column_text(st, 3);
            r->has_checksum = 1;
            snprintf(r->checksum, sizeof r->checksum, "%s", c ? (const char *)c : "");
        }
        h->count++;
    }
    if (rc != SQLITE_DONE) {
        snprintf(msg, cap, "%s", rc == SQLITE_NOMEM ? "out of memory" : sqlite3_errmsg(db));
        sqlite3_finalize(st);
        history_free(h);
        return rc;
    }
    sqlite3_finalize(st);
    return SQLITE_OK;
}

_Static_assert(offsetof(gs_migration, version) == 0, "version leads gs_migration");
_Static_assert(offsetof(hrow, version) == 0, "version leads hrow");

/* Binary search of an array sorted by version, whose elements start with their int64_t
 * version (hrow and gs_migration both do). */
static const void *find_version(const void *base, size_t count, size_t size, int64_t version)
{
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const void *item = (const char *)base + mid * size;
        int64_t v = *(const int64_t *)item;
        if (v == version)
            return item;
        if (v < version)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static const hrow *history_find(const history *h, int64_t version)
{
    return find_version(h->rows, h->count, sizeof *h->rows, version);
}

static int64_t history_max(const history *h)
{
    return h->count ? h->rows[h->count - 1].version : 0;
}

static const gs_migration *set_find(const gs_migration_set *set, int64_t version)
{
    return set ? find_version(set->items, set->count, sizeof *set->items, version) : NULL;
}

/* ---- planning ---- */

/* The baseline in force: the highest-versioned one. */
static const gs_migration *effective_baseline(const gs_migration_set *set)
{
    const gs_migration *b = NULL;
    for (size_t i = 0; set && i < set->count; i++)
        if (set->items[i].baseline_through > 0)
            b = &set->items[i];
    return b;
}

/* The migrations to apply, ascending, with version <= to (to < 0: all). `out` holds at least
 * set->count entries. MIGRATION_BASELINE_GAP. */
static gs_status plan(const gs_migration_set *set, const history *h, int64_t to,
                      const gs_migration **out, size_t *n, gs_error *err)
{
    *n = 0;
    if (!set)
        return GS_OK;
    const gs_migration *b = effective_baseline(set);
    size_t k = 0;
    if (!b) {
        for (size_t i = 0; i < set->count; i++)
            if (!history_find(h, set->items[i].version))
                out[k++] = &set->items[i];
    } else {
        int64_t through = b->baseline_through;
        if (h->count == 0) {
            /* a new database starts from the baseline */
            out[k++] = b;
            for (size_t i = 0; i < set->count; i++)
                if (!set->items[i].baseline_through && set->items[i].version > through)
                    out[k++] = &set->items[i];
        } else if (history_find(h, b->version)) {
            for (size_t i = 0; i < set->count; i++) {
                const gs_migration *m = &set->items[i];
                if (!m->baseline_through && m->version > through && !history_find(h, m->version))
                    out[k++] = m;
            }
        } else {
            /* an older database: it must reach `through` with the migrations it lacks */
            int64_t reach = history_max(h);
            if (reach < through)
                for (size_t i = 0; i < set->count; i++) {
                    const gs_migration *m = &set->items[i];
                    if (!m->baseline_through && m->version <= through &&
                        !history_find(h, m->version)) {
                        out[k++] = m;
                        if (m->version > reach)
                            reach = m->version;
                    }
                }
            if (reach < through) {
                gs_error_set(err, 0, "MIGRATION_BASELINE_GAP",
                             "the database's history reaches version %lld, but baseline "
                             "%lld_%s replaces the history through version %lld and the "
                             "migrations bridging the gap are not in the set; add them back "
                             "(versions %lld..%lld) or migrate this database with an older set",
                             (long long)history_max(h), (long long)b->version, b->name,
                             (long long)through, (long long)history_max(h) + 1, (long long)through);
                return with_version(err, b->version);
            }
            for (size_t i = 0; i < set->count; i++) {
                const gs_migration *m = &set->items[i];
                if (!m->baseline_through && m->version > through && !history_find(h, m->version))
                    out[k++] = m;
            }
        }
    }
    size_t kept = 0;
    for (size_t i = 0; i < k; i++)
        if (to < 0 || out[i]->version <= to)
            out[kept++] = out[i];
    *n = kept;
    return GS_OK;
}

/* Compare the stored checksums with the set's: MIGRATION_CHECKSUM_MISMATCH, or GS_OK with
 * the NULL ones backfilled (counted in *backfilled). */
static int reconcile(sqlite3 *db, const gs_migration_set *set, const history *h, size_t *backfilled,
                     gs_error *err)
{
    *backfilled = 0;
    sqlite3_stmt *up = NULL;
    for (size_t i = 0; i < h->count; i++) {
        const hrow *r = &h->rows[i];
        const gs_migration *m = set_find(set, r->version);
        if (!m)
            continue;
        if (r->has_checksum) {
            if (strcmp(r->checksum, m->checksum) != 0) {
                sqlite3_finalize(up);
                gs_error_set(err, 0, "MIGRATION_CHECKSUM_MISMATCH",
                             "migration %lld_%s was changed after it was applied (stored "
                             "checksum %.16s, its up SQL now gives %s); put the applied SQL "
                             "back and make the change a new migration",
                             (long long)m->version, m->name, r->checksum, m->checksum);
                with_version(err, m->version);
                return STEP_ERROR;
            }
            continue;
        }
        int rc = SQLITE_OK;
        if (!up)
            rc = sqlite3_prepare_v2(db, "UPDATE " TABLE " SET checksum = ? WHERE version = ?", -1,
                                    &up, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_reset(up);
            sqlite3_bind_text(up, 1, m->checksum, -1, SQLITE_STATIC);
            sqlite3_bind_int64(up, 2, m->version);
            rc = sqlite3_step(up);
        }
        if (rc != SQLITE_DONE) {
            gs_error_set(err, 0, "MIGRATION_ERROR",
                         "cannot record the checksum of applied migration %lld_%s: %s",
                         (long long)m->version, m->name, sqlite3_errmsg(db));
            with_version(err, m->version);
            sqlite3_finalize(up);
            return is_conflict_rc(rc) ? STEP_CONFLICT : STEP_ERROR;
        }
        (*backfilled)++;
    }
    sqlite3_finalize(up);
    return STEP_OK;
}

/* ---- running migration SQL ---- */

/* The first keyword of a statement, upper-cased, after whitespace and comments. */
static void first_keyword(const char *sql, char *kw, size_t cap)
{
    const char *p = sql;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v')
            p++;
        if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n')
                p++;
        } else if (p[0] == '/' && p[1] == '*') {
            p += 2;
            while (*p && !(p[0] == '*' && p[1] == '/'))
                p++;
            if (*p)
                p += 2;
        } else {
            break;
        }
    }
    size_t k = 0;
    while (k + 1 < cap && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))) {
        char c = *p++;
        kw[k++] = (char)(c >= 'a' && c <= 'z' ? c - 32 : c);
    }
    kw[k] = '\0';
}

static int transaction_control(const char *sql)
{
    static const char *const words[] = {"BEGIN",     "COMMIT",  "END", "ROLLBACK",
                                        "SAVEPOINT", "RELEASE", NULL};
    char kw[16];
    first_keyword(sql, kw, sizeof kw);
    for (int i = 0; words[i]; i++)
        if (strcmp(kw, words[i]) == 0)
            return 1;
    return 0;
}

/* Run every statement of `sql` inside the open transaction. On failure: the statement
 * number and SQLite's message in msg, and the result code. */
static int run_script(sqlite3 *db, const char *sql, int *stmt_no, char *msg, size_t cap)
{
    const char *p = sql;
    *stmt_no = 0;
    while (*p) {
        sqlite3_stmt *st = NULL;
        const char *tail = NULL;
        int rc = sqlite3_prepare_v2(db, p, -1, &st, &tail);
        if (rc != SQLITE_OK) {
            (*stmt_no)++;
            snprintf(msg, cap, "%s", sqlite3_errmsg(db));
            return rc;
        }
        if (!st) { /* only whitespace or comments left */
            if (!tail || tail == p)
                break;
            p = tail;
            continue;
        }
        (*stmt_no)++;
        if (transaction_control(sqlite3_sql(st))) {
            sqlite3_finalize(st);
            snprintf(msg, cap,
                     "transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE) is not "
                     "allowed in migration SQL: each migration already runs in its own "
                     "transaction");
            return SQLITE_MISUSE;
        }
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            ;
        if (rc != SQLITE_DONE) {
            rc = sqlite3_errcode(db) != SQLITE_OK ? sqlite3_extended_errcode(db) : rc;
            snprintf(msg, cap, "%s", sqlite3_errmsg(db));
            sqlite3_finalize(st);
            return rc;
        }
        sqlite3_finalize(st);
        if (sqlite3_get_autocommit(db)) {
            snprintf(msg, cap, "the statement ended the migration's transaction");
            return SQLITE_MISUSE;
        }
        p = tail;
    }
    return SQLITE_OK;
}

/* ---- reports ---- */

void gs_migration_report_init(gs_migration_report *r)
{
    memset(r, 0, sizeof *r);
    gs_error_init(&r->pending_err);
}

void gs_migration_report_free(gs_migration_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->done_count; i++)
        gs_free(r->done[i].name);
    for (size_t i = 0; i < r->row_count; i++)
        gs_free(r->rows[i].name);
    gs_free(r->done);
    gs_free(r->rows);
    gs_migration_report_init(r);
}

static gs_migration_row *push_row(gs_migration_row **rows, size_t *count, int64_t version,
                                  const char *name)
{
    /* grow one at a time by doubling when the count is a power of two */
    size_t n = *count;
    if (n == 0 || (n & (n - 1)) == 0) {
        size_t nc = n ? n * 2 : 1;
        gs_migration_row *nr = gs_realloc(*rows, nc * sizeof *nr);
        if (!nr)
            return NULL;
        *rows = nr;
    }
    gs_migration_row *r = &(*rows)[n];
    memset(r, 0, sizeof *r);
    r->version = version;
    r->name = gs_strdup(name ? name : "");
    if (!r->name)
        return NULL;
    *count = n + 1;
    return r;
}

const char *gs_migration_state_name(gs_migration_state s)
{
    switch (s) {
    case GS_MIG_APPLIED: return "applied";
    case GS_MIG_PENDING: return "pending";
    case GS_MIG_MODIFIED: return "modified";
    case GS_MIG_NOT_IN_SET: return "not-in-set";
    case GS_MIG_SUPERSEDED: return "superseded";
    }
    return "?";
}

/* ---- apply ---- */

static int begin(sqlite3 *db, char *msg, size_t cap)
{
    if (!sqlite3_get_autocommit(db)) {
        snprintf(msg, cap, "the connection is already inside a transaction");
        return SQLITE_MISUSE;
    }
    return xexec(db, "BEGIN IMMEDIATE", msg, cap);
}

/* One transaction: reconcile, plan, apply the first pending migration. *finished when there
 * was nothing left to apply. */
static int apply_step(sqlite3 *db, const char *label, const gs_migration_set *set, int64_t to,
                      gs_migration_report *r, int *finished, int64_t *at_version, gs_error *err)
{
    char msg[400] = "";
    *finished = 0;
    int rc = begin(db, msg, sizeof msg);
    if (rc != SQLITE_OK) {
        if (is_conflict_rc(rc))
            return STEP_CONFLICT;
        gs_error_set(err, 0, "MIGRATION_ERROR", "cannot begin the migration transaction: %s", msg);
        return STEP_ERROR;
    }
    history h = {0};
    const gs_migration **pending = NULL;
    int out = STEP_ERROR;
    rc = ensure_table(db, msg, sizeof msg);
    if (rc == SQLITE_OK)
        rc = read_history(db, &h, msg, sizeof msg);
    if (rc != SQLITE_OK) {
        out = is_conflict_rc(rc) ? STEP_CONFLICT : STEP_ERROR;
        gs_error_set(err, 0, "MIGRATION_ERROR", "cannot read the migration history: %s", msg);
        goto fail;
    }
    *at_version = history_max(&h);
    size_t backfilled = 0;
    out = reconcile(db, set, &h, &backfilled, err);
    if (out != STEP_OK)
        goto fail;
    pending = gs_calloc(set->count + 1, sizeof *pending);
    if (!pending) {
        gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory planning migrations");
        out = STEP_ERROR;
        goto fail;
    }
    size_t npending = 0;
    if (plan(set, &h, to, pending, &npending, err) != GS_OK) {
        out = STEP_ERROR;
        goto fail;
    }
    int64_t top = history_max(&h);
    const gs_migration *m = npending ? pending[0] : NULL;
    double t0 = mono_ms();
    if (m) {
        int stmt_no = 0;
        rc = run_script(db, m->up, &stmt_no, msg, sizeof msg);
        if (rc != SQLITE_OK) {
            if (is_conflict_rc(rc)) {
                out = STEP_CONFLICT;
                goto fail;
            }
            gs_error_set(err, 0, "MIGRATION_ERROR",
                         "migration %lld_%s failed at statement %d of its up SQL: %s; it was "
                         "rolled back and the database stays at version %lld",
                         (long long)m->version, m->name, stmt_no, msg, (long long)top);
            with_version(err, m->version);
            out = STEP_ERROR;
            goto fail;
        }
        sqlite3_stmt *ins;
        rc = sqlite3_prepare_v2(db,
                                "INSERT INTO " TABLE " (version, name, applied_at, checksum) "
                                "VALUES (?, ?, ?, ?)",
                                -1, &ins, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(ins, 1, m->version);
            sqlite3_bind_text(ins, 2, m->name, -1, SQLITE_STATIC);
            sqlite3_bind_double(ins, 3, wall_seconds());
            sqlite3_bind_text(ins, 4, m->checksum, -1, SQLITE_STATIC);
            rc = sqlite3_step(ins);
            if (rc != SQLITE_DONE)
                rc = sqlite3_extended_errcode(db);
            else
                rc = SQLITE_OK;
            snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(db));
            sqlite3_finalize(ins);
        } else {
            snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(db));
        }
        if (rc != SQLITE_OK) {
            /* a tracking row that appeared under us is another applier's work */
            if (is_conflict_rc(rc) || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
                out = STEP_CONFLICT;
                goto fail;
            }
            gs_error_set(err, 0, "MIGRATION_ERROR",
                         "migration %lld_%s ran but could not be recorded: %s; it was rolled "
                         "back and the database stays at version %lld",
                         (long long)m->version, m->name, msg, (long long)top);
            with_version(err, m->version);
            goto fail;
        }
        if (m->version > top)
            top = m->version;
    }
    if (read_user_version(db) != top) {
        rc = write_user_version(db, top, msg, sizeof msg);
        if (rc != SQLITE_OK) {
            out = is_conflict_rc(rc) ? STEP_CONFLICT : STEP_ERROR;
            gs_error_set(err, 0, "MIGRATION_ERROR", "cannot set PRAGMA user_version: %s", msg);
            goto fail;
        }
    }
    rc = xexec(db, "COMMIT", msg, sizeof msg);
    if (rc != SQLITE_OK) {
        if (is_conflict_rc(rc)) {
            out = STEP_CONFLICT;
            goto fail;
        }
        gs_error_set(err, 0, "MIGRATION_ERROR",
                     "the commit of migration %lld failed: %s; the database stays at version "
                     "%lld",
                     (long long)(m ? m->version : 0), msg, (long long)*at_version);
        if (m)
            with_version(err, m->version);
        out = STEP_ERROR;
        goto fail;
    }
    r->backfilled += backfilled;
    r->user_version = top;
    *at_version = top;
    if (m) {
        gs_migration_row *row = push_row(&r->done, &r->done_count, m->version, m->name);
        if (row) {
            row->state = GS_MIG_APPLIED;
            row->applied_at = wall_seconds();
            row->duration_ms = mono_ms() - t0;
            memcpy(row->checksum, m->checksum, sizeof row->checksum);
        }
        gs_log(GS_LOG_INFO, "migrate", "database '%s': applied migration %lld_%s (%.1f ms)",
               label ? label : "?", (long long)m->version, m->name, mono_ms() - t0);
    } else {
        *finished = 1;
    }
    gs_free(pending);
    history_free(&h);
    return STEP_OK;
fail:
    rollback_quietly(db);
    gs_free(pending);
    history_free(&h);
    return out;
}

static gs_status concurrent_error(sqlite3 *db, gs_error *err, const char *what, int64_t at)
{
    gs_error_set(err, 0, "MIGRATION_CONCURRENT",
                 "another connection kept the database locked past busy_timeout (%d ms) twice "
                 "while %s; the database stays at version %lld. Retry once the other writer "
                 "(another migrate, or a long write) has finished",
                 busy_timeout_ms(db), what, (long long)at);
    return GS_ERROR;
}

gs_status gs_migrate_conn(sqlite3 *db, const char *label, const gs_migration_set *set, int64_t to,
                          gs_migration_report *r, gs_error *err)
{
    if (!db || !set || !r)
        return gs_error_set(err, 0, "MIGRATION_ERROR", "no connection, set or report given");
    if (to < GS_MIGRATION_NO_TARGET)
        return gs_error_set(err, 0, "MIGRATION_VALIDATION_ERROR", "invalid target version %lld",
                            (long long)to);
    int conflicts = 0;
    int64_t at = 0;
    for (;;) {
        int finished = 0;
        int s = apply_step(db, label, set, to, r, &finished, &at, err);
        if (s == STEP_ERROR)
            return GS_ERROR;
        if (s == STEP_CONFLICT) {
            if (++conflicts > 1)
                return concurrent_error(db, err, "migrations were being applied", at);
            continue;
        }
        conflicts = 0;
        if (finished)
            break;
    }
    r->skipped = set->count - r->done_count;
    return GS_OK;
}

/* ---- rollback ---- */

static int rollback_step(sqlite3 *db, const char *label, const gs_migration_set *set, int64_t to,
                         int only_latest, gs_migration_report *r, int *finished,
                         int64_t *at_version, gs_error *err)
{
    char msg[400] = "";
    *finished = 0;
    int rc = begin(db, msg, sizeof msg);
    if (rc != SQLITE_OK) {
        if (is_conflict_rc(rc))
            return STEP_CONFLICT;
        gs_error_set(err, 0, "MIGRATION_ROLLBACK_ERROR",
                     "cannot begin the rollback transaction: %s", msg);
        return STEP_ERROR;
    }
    history h = {0};
    int out = STEP_ERROR;
    rc = ensure_table(db, msg, sizeof msg);
    if (rc == SQLITE_OK)
        rc = read_history(db, &h, msg, sizeof msg);
    if (rc != SQLITE_OK) {
        out = is_conflict_rc(rc) ? STEP_CONFLICT : STEP_ERROR;
        gs_error_set(err, 0, "MIGRATION_ROLLBACK_ERROR", "cannot read the migration history: %s",
                     msg);
        goto fail;
    }
    *at_version = history_max(&h);
    /* every version to reverse must have a down before any runs */
    for (size_t i = h.count; i-- > 0;) {
        const hrow *row = &h.rows[i];
        if (row->version <= to)
            break;
        const gs_migration *m = set_find(set, row->version);
        if (!m || !m->down) {
            gs_error_set(err, 0, "MIGRATION_NO_DOWN",
                         "migration %lld_%s has no down SQL%s, so it cannot be rolled back; "
                         "nothing was rolled back",
                         (long long)row->version, row->name,
                         m ? "" : " (it is not in the migration set)");
            with_version(err, row->version);
            goto fail;
        }
        if (only_latest)
            break;
    }
    const hrow *victim = h.count && h.rows[h.count - 1].version > to ? &h.rows[h.count - 1] : NULL;
    if (!victim) {
        rc = xexec(db, "COMMIT", msg, sizeof msg);
        if (rc != SQLITE_OK) {
            out = is_conflict_rc(rc) ? STEP_CONFLICT : STEP_ERROR;
            gs_error_set(err, 0, "MIGRATION_ROLLBACK_ERROR", "commit failed: %s", msg);
            goto fail;
        }
        *finished = 1;
        r->user_version = history_max(&h);
        history_free(&h);
        return STEP_OK;
    }
    const gs_migration *m = set_find(set, victim->version);
    int64_t below = h.count > 1 ? h.rows[h.count - 2].version : 0;
    double t0 = mono_ms();
    int stmt_no = 0;
    rc = run_script(db, m->down, &stmt_no, msg, sizeof msg);
    if (rc != SQLITE_OK) {
        if (is_conflict_rc(rc)) {
            out = STEP_CONFLICT;
            goto fail;
        }
        gs_error_set(err, 0, "MIGRATION_ROLLBACK_ERROR",
                     "the rollback of migration %lld_%s failed at statement %d of its down SQL: "
                     "%s; its changes were rolled back and the database stays at version %lld",
                     (long long)m->version, m->name, stmt_no, msg, (long long)*at_version);
        with_version(err, m->version);
        goto fail;
    }
    sqlite3_stmt *del;
    rc = sqlite3_prepare_v2(db, "DELETE FROM " TABLE " WHERE version = ?", -1, &del, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(del, 1, victim->version);
        rc = sqlite3_step(del) == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(db);
        snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(db));
        sqlite3_finalize(del);
    } else {
        snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(db));
    }
    if (rc == SQLITE_OK)
        rc = write_user_version(db, below, msg, sizeof msg);
    if (rc == SQLITE_OK)
        rc = xexec(db, "COMMIT", msg, sizeof msg);
    if (rc != SQLITE_OK) {
        if (is_conflict_rc(rc)) {
            out = STEP_CONFLICT;
            goto fail;
        }
        gs_error_set(err, 0, "MIGRATION_ROLLBACK_ERROR",
                     "the rollback of migration %lld_%s could not be recorded: %s; the "
                     "database stays at version %lld",
                     (long long)m->version, m->name, msg, (long long)*at_version);
        with_version(err, m->version);
        goto fail;
    }
    gs_migration_row *row = push_row(&r->done, &r->done_count, victim->version, victim->name);
    if (row) {
        row->state = GS_MIG_PENDING;
        row->applied_at = victim->applied_at;
        row->duration_ms = mono_ms() - t0;
        snprintf(row->checksum, sizeof row->checksum, "%s", victim->checksum);
    }
    gs_log(GS_LOG_INFO, "migrate", "database '%s': rolled back migration %lld_%s (%.1f ms)",
           label ? label : "?", (long long)victim->version, victim->name, mono_ms() - t0);
    r->user_version = below;
    *at_version = below;
    history_free(&h);
    return STEP_OK;
fail:
    rollback_quietly(db);
    history_free(&h);
    return out;
}

gs_status gs_rollback_conn(sqlite3 *db, const char *label, const gs_migration_set *set, int64_t to,
                           gs_migration_report *r, gs_error *err)
{
    if (!db || !r)
        return gs_error_set(err, 0, "MIGRATION_ROLLBACK_ERROR", "no connection or report given");
    if (to < GS_MIGRATION_NO_TARGET || to > GS_MIGRATION_VERSION_MAX)
        return gs_error_set(err, 0, "MIGRATION_VALIDATION_ERROR",
                            "invalid rollback target version %lld; give 0..%lld", (long long)to,
                            GS_MIGRATION_VERSION_MAX);
    int only_latest = to == GS_MIGRATION_NO_TARGET;
    int64_t target = only_latest ? 0 : to;
    int conflicts = 0;
    int64_t at = 0;
    for (;;) {
        int finished = 0;
        int s = rollback_step(db, label, set, target, only_latest, r, &finished, &at, err);
        if (s == STEP_ERROR)
            return GS_ERROR;
        if (s == STEP_CONFLICT) {
            if (++conflicts > 1)
                return concurrent_error(db, err, "migrations were being rolled back", at);
            continue;
        }
        conflicts = 0;
        if (finished || only_latest) /* only the latest: one step is all */
            break;
    }
    return GS_OK;
}

/* ---- status ---- */

gs_status gs_migration_status_conn(sqlite3 *db, const gs_migration_set *set, gs_migration_report *r,
                                   gs_error *err)
{
    if (!db || !r)
        return gs_error_set(err, 0, "MIGRATION_ERROR", "no connection or report given");
    char msg[400] = "";
    int own_tx = sqlite3_get_autocommit(db);
    history h = {0};
    int rc = own_tx ? xexec(db, "BEGIN", msg, sizeof msg) : SQLITE_OK;
    int exists = 0;
    if (rc == SQLITE_OK)
        rc = table_exists(db, &exists);
    if (rc == SQLITE_OK && exists)
        rc = read_history(db, &h, msg, sizeof msg);
    if (rc == SQLITE_OK)
        r->user_version = read_user_version(db);
    if (own_tx)
        rollback_quietly(db);
    if (rc != SQLITE_OK) {
        if (!msg[0])
            snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(db));
        history_free(&h);
        return gs_error_set(err, 0, "MIGRATION_ERROR", "cannot read the migration history: %s",
                            msg);
    }
    r->table_exists = exists;
    const gs_migration **pending = gs_calloc(set ? set->count + 1 : 1, sizeof *pending);
    if (!pending) {
        history_free(&h);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory planning migrations");
    }
    size_t npending = 0;
    int planned =
        plan(set, &h, GS_MIGRATION_NO_TARGET, pending, &npending, &r->pending_err) == GS_OK;
    /* merge the history and the set by version */
    size_t i = 0, j = 0, nset = set ? set->count : 0;
    gs_status st = GS_OK;
    while (i < h.count || j < nset) {
        const hrow *hr = i < h.count ? &h.rows[i] : NULL;
        const gs_migration *m = j < nset ? &set->items[j] : NULL;
        gs_migration_row *row;
        if (hr && (!m || hr->version <= m->version)) {
            int same = m && m->version == hr->version;
            row = push_row(&r->rows, &r->row_count, hr->version, hr->name);
            if (!row) {
                st = GS_ERROR;
                break;
            }
            row->applied_at = hr->applied_at;
            snprintf(row->checksum, sizeof row->checksum, "%s", hr->checksum);
            if (!same)
                row->state = GS_MIG_NOT_IN_SET;
            else if (hr->has_checksum && strcmp(hr->checksum, m->checksum) != 0)
                row->state = GS_MIG_MODIFIED;
            else
                row->state = GS_MIG_APPLIED;
            i++;
            if (same)
                j++;
            continue;
        }
        row = push_row(&r->rows, &r->row_count, m->version, m->name);
        if (!row) {
            st = GS_ERROR;
            break;
        }
        memcpy(row->checksum, m->checksum, sizeof row->checksum);
        int is_pending = !planned;
        for (size_t k = 0; k < npending && !is_pending; k++)
            is_pending = pending[k] == m;
        row->state = is_pending ? GS_MIG_PENDING : GS_MIG_SUPERSEDED;
        if (is_pending)
            r->pending_count++;
        j++;
    }
    gs_free(pending);
    history_free(&h);
    if (st != GS_OK)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory building the status");
    return GS_OK;
}

/* ---- on a database's writer ---- */

typedef struct call {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    gs_migrate_op op;
    const gs_migration_set *set;
    int64_t to;
    const char *label;
    gs_migration_report *r;
    int started, finished, replied;
    gs_status fn_status;
    gs_error fn_err;
    gs_status reply_status;
    gs_error reply_err;
} call;

/* On the writer thread, with the writer connection in autocommit mode. */
static gs_status call_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    call *c = user;
    pthread_mutex_lock(&c->mu);
    c->started = 1;
    pthread_mutex_unlock(&c->mu);
    sqlite3 *db = gs_conn_db(conn);
    gs_error e;
    gs_error_init(&e);
    gs_status st;
    switch (c->op) {
    case GS_MIGRATE_UP: st = gs_migrate_conn(db, c->label, c->set, c->to, c->r, &e); break;
    case GS_MIGRATE_ROLLBACK: st = gs_rollback_conn(db, c->label, c->set, c->to, c->r, &e); break;
    default: st = gs_migration_status_conn(db, c->set, c->r, &e); break;
    }
    gs_buf_puts(out, "null");
    gs_error_copy(err, &e);
    pthread_mutex_lock(&c->mu);
    c->fn_status = st;
    gs_error_copy(&c->fn_err, &e);
    c->finished = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu); /* the last touch of *c on this side */
    return st;
}

static void call_done(void *user, const gs_db_reply *reply)
{
    call *c = user;
    pthread_mutex_lock(&c->mu);
    c->reply_status = reply->status;
    if (reply->status != GS_OK)
        gs_error_copy(&c->reply_err, &reply->err);
    c->replied = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* The caller's answer is complete: the reply came, and either the callback finished or it
 * will never run (shed before it started). A WRITER_WORKER_TIMEOUT means it is running. */
static int call_settled(const call *c)
{
    if (!c->replied)
        return 0;
    if (c->finished)
        return 1;
    return !c->started && c->reply_status != GS_OK &&
           strcmp(c->reply_err.code, "WRITER_WORKER_TIMEOUT") != 0;
}

gs_status gs_db_migrate(gs_database *db, gs_migrate_op op, const gs_migration_set *set, int64_t to,
                        gs_migration_report *r, gs_error *err)
{
    if (!db || !r)
        return gs_error_set(err, 0, "MIGRATION_ERROR", "no database or report given");
    if (op != GS_MIGRATE_UP && op != GS_MIGRATE_ROLLBACK && op != GS_MIGRATE_STATUS)
        return gs_error_set(err, 0, "MIGRATION_ERROR", "unknown migration operation %d", (int)op);
    if (op == GS_MIGRATE_UP && !set)
        return gs_error_set(err, 0, "MIGRATION_ERROR", "no migration set given");
    if (op == GS_MIGRATE_UP && gs_db_is_read_only(db) && !gs_db_is_closed(db)) {
        /* a read-only connection cannot create the tracking table: skip */
        r->read_only = 1;
        return GS_OK;
    }
    call c;
    memset(&c, 0, sizeof c);
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    c.op = op;
    c.set = set;
    c.to = to;
    c.label = gs_db_id(db);
    c.r = r;
    gs_error_init(&c.fn_err);
    gs_error_init(&c.reply_err);
    gs_status st = gs_db_writer_call(db, call_fn, &c, call_done, &c, err);
    if (st == GS_OK) {
        pthread_mutex_lock(&c.mu);
        while (!call_settled(&c))
            pthread_cond_wait(&c.cv, &c.mu);
        pthread_mutex_unlock(&c.mu);
        if (c.finished) {
            st = c.fn_status;
            if (st != GS_OK)
                gs_error_copy(err, &c.fn_err);
        } else {
            st = GS_ERROR;
            gs_error_copy(err, &c.reply_err);
        }
    }
    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.mu);
    return st;
}
