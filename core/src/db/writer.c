/*
 * The writer thread: the only write connection of a database, group commit (spec 02), the
 * deadline check at start, bulk load, and the final checkpoint at close.
 *
 * Group commit: when the previous commit returns, the writer takes every groupable job
 * queued at the head (up to GS_GROUP_MAX_STATEMENTS statements) and runs them in one
 * BEGIN IMMEDIATE..COMMIT, each unit inside its own SAVEPOINT so a failing unit is rolled
 * back alone. A unit whose failure took the whole transaction with it (INSERT OR ROLLBACK,
 * an I/O error) is answered with its error and the others run again without it. A COMMIT
 * failure fails every unit (TRANSACTION_ERROR) and is not retried: the commit may already be
 * on disk. Units are answered only after COMMIT returned. A lone single-statement write runs
 * in autocommit mode; DDL, PRAGMA and the like, LOAD and internal calls run alone.
 *
 * Change capture (cdc_internal.h): once anything subscribes, every unit's change rows are
 * stamped as its triggers write them (one tx_id and HLC per unit, set inside the unit's own
 * savepoint and cleared before COMMIT), so a lone write then runs in a transaction too; the
 * clock is persisted once per transaction. After a DDL statement the
 * triggers of watched tables follow the new columns. After a commit that changed rows, the
 * feed is woken while anyone subscribes.
 *
 * Replication (capture_all, set by gs_cdc_capture_all_refresh): a DDL statement must pass the
 * replication DDL allowlist (repl/ddl.h) before it runs; it then runs in the unit's
 * transaction followed by its DDL change row in the log (stamped with the unit like any change
 * row) and a trigger refresh over every table, so replicas see schema and data in log order.
 */
#include "backup_cycle.h"
#include "cdc_internal.h"
#include "database_internal.h"

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"
#include "repl/ddl.h"
#include "repl/log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

enum { UNIT_PENDING = 0, UNIT_OK = 1, UNIT_FAILED = 2 };

typedef struct unit {
    gs_job *job;
    int state;
    size_t off, len; /* result JSON in the scratch buffer */
    gs_error err;
} unit;

struct gs_writer_scratch {
    gs_job *batch[GS_GROUP_MAX_STATEMENTS];
    unit units[GS_GROUP_MAX_STATEMENTS];
    gs_buf out;
    gs_row_keys keys;
};

struct gs_writer_scratch *gs_writer_scratch_new(void)
{
    struct gs_writer_scratch *s = gs_calloc(1, sizeof *s);
    if (!s)
        return NULL;
    gs_buf_init(&s->out);
    gs_row_keys_init(&s->keys);
    return s;
}

void gs_writer_scratch_free(struct gs_writer_scratch *s)
{
    if (!s)
        return;
    gs_buf_free(&s->out);
    gs_row_keys_free(&s->keys);
    gs_free(s);
}

typedef struct writer {
    gs_database *db;
    gs_conn *conn;
    struct gs_writer_scratch *s;
} writer;

/* ---- one statement ---- */

/* Run a prepared, bound user statement to completion and append its ExecuteResult. */
static gs_status run_prepared(writer *w, gs_stmt *st, gs_buf *out, gs_error *err)
{
    sqlite3 *db = gs_conn_db(w->conn);
    sqlite3_int64 before = sqlite3_total_changes64(db);
    int rc;
    while ((rc = gs_conn_step(w->conn, st, err)) == SQLITE_ROW)
        ;
    if (rc != SQLITE_DONE)
        return GS_ERROR;
    /* sqlite3_changes keeps the last DML's count across DDL; report 0 when nothing changed */
    sqlite3_int64 changes = sqlite3_total_changes64(db) != before ? sqlite3_changes64(db) : 0;
    gs_buf_printf(out, "{\"changes\":%lld,\"lastInsertRowId\":", (long long)changes);
    gs_value_append_rowid(out, sqlite3_last_insert_rowid(db));
    gs_buf_putc(out, '}');
    return GS_OK;
}

/* ---- replication: DDL while every table is captured (capture_all) ---- */

static int replicating_ddl(writer *w, const gs_job_stmt *js)
{
    return w->db->cdc && gs_sql_verb_ddl(js->verb) &&
           atomic_load_explicit(&w->db->cdc->capture_all, memory_order_relaxed);
}

/* Before the statement: the form the log records (*ddl, gs_free it) must pass the replication
 * allowlist, or the statement is refused with the database untouched. */
static gs_status repl_ddl_before(const gs_job_stmt *js, char **ddl, gs_error *err)
{
    *ddl = gs_repl_ddl_normalize(js->sql);
    if (!*ddl)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory checking a DDL statement");
    if (gs_repl_ddl_check(*ddl, err) == GS_OK)
        return GS_OK;
    gs_error_prefix(err, "replication is on and this statement cannot be replicated, so it was "
                         "not run");
    gs_free(*ddl);
    *ddl = NULL;
    return GS_ERROR;
}

/* A batch or a load runs its statement without these steps: DDL must come as an execute or a
 * transaction while replication is on. */
static gs_status repl_ddl_elsewhere(gs_error *err, const char *what)
{
    return gs_error_set(err, 0, "BATCH_VALIDATION_ERROR",
                        "replication is on: a DDL statement cannot run as %s, so it was not run; "
                        "send it as a single execute or inside a transaction",
                        what);
}

/* After it: triggers on every table it created or changed (this also recreates the change log
 * should a rolled-back transaction have taken it), then its DDL change row, stamped with the
 * unit (see run_group). */
static gs_status repl_ddl_after(writer *w, const char *ddl, gs_error *err)
{
    if (gs_cdc_capture_all_refresh(w->db->cdc, w->conn, err) != GS_OK)
        return GS_ERROR;
    return gs_repl_log_ddl(w->conn, ddl, err);
}

static gs_status run_stmt(writer *w, const gs_job_stmt *js, const gs_bind_set *set, gs_buf *out,
                          gs_error *err)
{
    /* change capture: an ALTER TABLE runs with the watched tables' triggers out of its way
     * (always inside a transaction then, see needs_transaction), and every DDL statement is
     * followed by a refresh of the triggers whose table changed */
    int watched = w->db->cdc && gs_sql_verb_ddl(js->verb) &&
                  atomic_load_explicit(&w->db->cdc->nwatched, memory_order_relaxed) > 0;
    int alter = watched && js->verb == GS_SQL_ALTER && !sqlite3_get_autocommit(gs_conn_db(w->conn));
    char *ddl = NULL;
    if (replicating_ddl(w, js) && repl_ddl_before(js, &ddl, err) != GS_OK)
        return GS_ERROR;
    if (alter && gs_cdc_before_alter(w->db->cdc, w->conn, err) != GS_OK) {
        gs_free(ddl);
        return GS_ERROR;
    }
    gs_stmt *st;
    if (gs_conn_prepare(w->conn, js->sql, js->len, 0, &st, err) != GS_OK) {
        gs_free(ddl);
        return GS_ERROR;
    }
    gs_status rc = gs_params_bind(gs_stmt_sqlite(st), set, err);
    if (rc == GS_OK)
        rc = run_prepared(w, st, out, err);
    gs_conn_release(w->conn, st);
    if (rc == GS_OK && watched)
        rc = gs_cdc_after_ddl(w->db->cdc, w->conn, alter, err);
    if (rc == GS_OK && ddl) {
        /* the DDL row is the core's insert, not the caller's: lastInsertRowId stays theirs */
        sqlite3_int64 last = sqlite3_last_insert_rowid(gs_conn_db(w->conn));
        rc = repl_ddl_after(w, ddl, err);
        sqlite3_set_last_insert_rowid(gs_conn_db(w->conn), last);
    }
    gs_free(ddl);
    return rc;
}

/* ---- one unit (EXECUTE, TRANSACTION or BATCH) inside an open transaction ---- */

/* The write gate (coordinator mode: only a node that proves primary authority writes),
 * checked inside the write transaction right before a client's write runs. */
static gs_status write_gate(gs_database *db, gs_error *err)
{
    pthread_mutex_lock(&db->hook_mu);
    gs_status st = db->write_gate ? db->write_gate(db->write_gate_user, err) : GS_OK;
    pthread_mutex_unlock(&db->hook_mu);
    return st;
}

static gs_status run_unit(writer *w, gs_job *job, gs_buf *out, gs_error *err)
{
    if (job->kind != GS_DB_INTERNAL && job->is_write && write_gate(w->db, err) != GS_OK)
        return GS_ERROR;
    switch (job->kind) {
    case GS_DB_EXECUTE: return run_stmt(w, &job->stmts[0], &job->stmts[0].params, out, err);
    case GS_DB_TRANSACTION:
        gs_buf_putc(out, '[');
        for (size_t i = 0; i < job->nstmts; i++) {
            if (i)
                gs_buf_putc(out, ',');
            if (run_stmt(w, &job->stmts[i], &job->stmts[i].params, out, err) != GS_OK) {
                gs_error_prefix(err, "statement %zu of %zu", i + 1, job->nstmts);
                return GS_ERROR;
            }
        }
        gs_buf_putc(out, ']');
        return GS_OK;
    case GS_DB_BATCH: {
        if (replicating_ddl(w, &job->stmts[0]))
            return repl_ddl_elsewhere(err, "a batch");
        gs_stmt *st;
        if (gs_conn_prepare(w->conn, job->stmts[0].sql, job->stmts[0].len, 0, &st, err) != GS_OK)
            return GS_ERROR;
        sqlite3_stmt *ss = gs_stmt_sqlite(st);
        gs_status rc = GS_OK;
        gs_buf_putc(out, '[');
        for (size_t i = 0; i < job->nsets && rc == GS_OK; i++) {
            if (i) {
                gs_buf_putc(out, ',');
                sqlite3_reset(ss);
                sqlite3_clear_bindings(ss);
            }
            rc = gs_params_bind(ss, &job->sets[i], err);
            if (rc == GS_OK)
                rc = run_prepared(w, st, out, err);
            if (rc != GS_OK)
                gs_error_prefix(err, "parameter set %zu of %zu", i + 1, job->nsets);
        }
        gs_buf_putc(out, ']');
        gs_conn_release(w->conn, st);
        return rc;
    }
    default: return gs_error_set(err, 0, "INTERNAL_ERROR", "job kind %d is not a unit", job->kind);
    }
}

/* ---- answering ---- */

static void answer_units(writer *w, size_t n)
{
    gs_buf *out = &w->s->out;
    for (size_t i = 0; i < n; i++) {
        unit *u = &w->s->units[i];
        if (u->state == UNIT_OK && out->oom) {
            gs_error_set(&u->err, 0, "INTERNAL_ERROR",
                         "out of memory building the result (the write was committed)");
            u->state = UNIT_FAILED;
        }
        if (u->state == UNIT_OK)
            gs_job_answer_ok(u->job, out->data + u->off, u->len);
        else
            gs_job_answer_error(u->job, &u->err, 0);
    }
}

static void rollback_quietly(writer *w)
{
    gs_error e;
    if (!sqlite3_get_autocommit(gs_conn_db(w->conn)) &&
        gs_conn_exec(w->conn, "ROLLBACK", &e) != GS_OK)
        gs_log(GS_LOG_ERROR, "db", "database '%s': ROLLBACK failed: %s", w->db->id, e.message);
}

/* ---- group commit ---- */

static void run_group(writer *w, size_t n)
{
    struct gs_writer_scratch *s = w->s;
    sqlite3 *sdb = gs_conn_db(w->conn);
    for (size_t i = 0; i < n; i++) {
        s->units[i].job = s->batch[i];
        s->units[i].state = UNIT_PENDING;
        gs_error_init(&s->units[i].err);
    }
    for (;;) {
        size_t active = 0;
        for (size_t i = 0; i < n; i++)
            if (s->units[i].state != UNIT_FAILED) {
                s->units[i].state = UNIT_PENDING;
                active++;
            }
        if (active == 0)
            break;
        gs_buf_reset(&s->out);
        gs_error e;
        if (gs_conn_exec(w->conn, "BEGIN IMMEDIATE", &e) != GS_OK) {
            for (size_t i = 0; i < n; i++)
                if (s->units[i].state != UNIT_FAILED) {
                    gs_error_set(&s->units[i].err, 0, "TRANSACTION_ERROR",
                                 "cannot begin the write transaction: %s", e.message);
                    s->units[i].state = UNIT_FAILED;
                }
            break;
        }
        int use_sp = active > 1;
        long lost = -1; /* a unit whose failure ended the whole transaction */
        /* write stamping: each unit's change rows get their own tx_id and HLC, set before the
         * unit runs so its triggers write them (cdc_internal.h) */
        int stamp = gs_cdc_stamping(w->db), armed = 0;
        char last_hlc[GS_HLC_MAX_LEN];
        last_hlc[0] = '\0';
        for (size_t i = 0; i < n && lost < 0; i++) {
            unit *u = &s->units[i];
            if (u->state == UNIT_FAILED)
                continue;
            /* the stamp is set before the unit's savepoint: a unit rolled back leaves it, the
             * next unit sets its own, and the savepoint has no copy of its page to keep */
            char hlc[GS_HLC_MAX_LEN];
            if (stamp && gs_cdc_stamp_arm(w->db->cdc, w->conn, hlc, &e) != GS_OK) {
                /* the log's tables are gone (a rolled-back transaction created them): the
                 * writes go on unstamped, as any other connection's would */
                gs_log(GS_LOG_ERROR, "db", "database '%s': %s (this transaction is not stamped)",
                       w->db->id, e.message);
                stamp = 0;
            }
            armed |= stamp;
            if (use_sp && gs_conn_exec(w->conn, "SAVEPOINT gs_unit", &e) != GS_OK) {
                gs_error_set(&u->err, 0, "TRANSACTION_ERROR", "cannot open a savepoint: %s",
                             e.message);
                lost = (long)i;
                break;
            }
            u->off = s->out.len;
            sqlite3_int64 changes_before = sqlite3_total_changes64(sdb);
            if (run_unit(w, u->job, &s->out, &u->err) == GS_OK) {
                if (use_sp && gs_conn_exec(w->conn, "RELEASE gs_unit", &e) != GS_OK) {
                    gs_error_set(&u->err, 0, "TRANSACTION_ERROR", "cannot release a savepoint: %s",
                                 e.message);
                    lost = (long)i;
                    break;
                }
                if (stamp && sqlite3_total_changes64(sdb) != changes_before)
                    memcpy(last_hlc, hlc, GS_HLC_MAX_LEN); /* the clock is persisted below */
                u->len = s->out.len - u->off;
                u->state = UNIT_OK;
                continue;
            }
            s->out.len = u->off; /* drop the partial result */
            if (s->out.data)
                s->out.data[s->out.len] = '\0';
            u->state = UNIT_FAILED;
            if (sqlite3_get_autocommit(sdb)) {
                lost = (long)i;
                break;
            }
            if (use_sp && (gs_conn_exec(w->conn, "ROLLBACK TO gs_unit", &e) != GS_OK ||
                           gs_conn_exec(w->conn, "RELEASE gs_unit", &e) != GS_OK)) {
                lost = (long)i;
                break;
            }
        }
        if (lost >= 0) {
            /* the units before it were rolled back with it: run the rest again */
            s->units[lost].state = UNIT_FAILED;
            rollback_quietly(w);
            continue;
        }
        int any_ok = 0;
        for (size_t i = 0; i < n; i++)
            any_ok |= s->units[i].state == UNIT_OK;
        if (!any_ok) {
            rollback_quietly(w);
            break;
        }
        if (last_hlc[0] && gs_hlc_persist(w->conn, last_hlc, &e) != GS_OK)
            gs_log(GS_LOG_WARN, "db", "database '%s': persisting the HLC: %s", w->db->id,
                   e.message);
        /* the stamp must not outlive the transaction (another writer would take it) */
        if ((armed && gs_cdc_stamp_clear(w->conn, &e) != GS_OK) ||
            gs_conn_exec(w->conn, "COMMIT", &e) != GS_OK) {
            rollback_quietly(w);
            for (size_t i = 0; i < n; i++)
                if (s->units[i].state == UNIT_OK) {
                    gs_error_set(&s->units[i].err, 0, "TRANSACTION_ERROR", "commit failed: %s",
                                 e.message);
                    s->units[i].state = UNIT_FAILED;
                }
        }
        break;
    }
}

/* ---- jobs that run alone ---- */

static void set_outcome(unit *u, gs_status rc, size_t off, size_t len)
{
    u->state = rc == GS_OK ? UNIT_OK : UNIT_FAILED;
    u->off = off;
    u->len = len;
}

static void run_execute_alone(writer *w, unit *u)
{
    gs_buf *out = &w->s->out;
    gs_buf_reset(out);
    gs_status rc = run_stmt(w, &u->job->stmts[0], &u->job->stmts[0].params, out, &u->err);
    /* a failed statement in autocommit mode leaves no transaction open, unless it was
     * stopped half way; never leave one behind */
    if (rc != GS_OK)
        rollback_quietly(w);
    set_outcome(u, rc, 0, out->len);
}

static void checkpoint_after_load(writer *w)
{
    sqlite3 *db = gs_conn_db(w->conn);
    for (int attempt = 0; attempt < 4; attempt++) {
        int nlog = 0, nckpt = 0;
        int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt);
        if (rc == SQLITE_OK && nckpt >= nlog)
            return;
        if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED) {
            gs_log(GS_LOG_WARN, "db", "database '%s': checkpoint after a load failed: %s",
                   w->db->id, sqlite3_errmsg(db));
            return;
        }
        /* a reader pins part of the log: give it a moment, then leave the rest to the
         * automatic checkpoint rather than fail the load */
        struct timespec ts = {0, 1000000L << attempt};
        nanosleep(&ts, NULL);
    }
    gs_log(GS_LOG_DEBUG, "db", "database '%s': checkpoint after a load deferred (readers)",
           w->db->id);
}

static void run_load(writer *w, unit *u)
{
    gs_job *job = u->job;
    gs_error e;
    gs_error *err = &u->err;
    gs_buf *out = &w->s->out;
    gs_buf_reset(out);
    int committed = 0, failed = 0;
    sqlite3_int64 changes = 0;
    sqlite3 *sdb = gs_conn_db(w->conn);

    if (replicating_ddl(w, &job->stmts[0])) {
        repl_ddl_elsewhere(err, "a bulk load");
        failed = 1;
    } else if (gs_conn_set_sync(w->conn, job->sync_level, &e) != GS_OK) {
        gs_error_set(err, 0, "QUERY_ERROR", "cannot set the load's durability: %s", e.message);
        failed = 1;
    } else if (gs_conn_exec(w->conn, "BEGIN IMMEDIATE", &e) != GS_OK) {
        gs_error_set(err, 0, "TRANSACTION_ERROR", "cannot begin the load transaction: %s",
                     e.message);
        failed = 1;
    } else {
        /* one load is one transaction: one stamp, set before its rows are written */
        int stamp = gs_cdc_stamping(w->db);
        char last_hlc[GS_HLC_MAX_LEN];
        last_hlc[0] = '\0';
        if (stamp && gs_cdc_stamp_arm(w->db->cdc, w->conn, last_hlc, err) != GS_OK)
            failed = 1;
        gs_stmt *st;
        if (!failed &&
            gs_conn_prepare(w->conn, job->stmts[0].sql, job->stmts[0].len, 0, &st, err) != GS_OK) {
            failed = 1;
        } else if (!failed) {
            sqlite3_stmt *ss = gs_stmt_sqlite(st);
            for (size_t i = 0; i < job->nsets && !failed; i++) {
                if (i) {
                    sqlite3_reset(ss);
                    sqlite3_clear_bindings(ss);
                }
                int rc = -1;
                if (gs_params_bind(ss, &job->sets[i], err) == GS_OK) {
                    sqlite3_int64 before = sqlite3_total_changes64(sdb);
                    while ((rc = gs_conn_step(w->conn, st, err)) == SQLITE_ROW)
                        ;
                    if (rc == SQLITE_DONE && sqlite3_total_changes64(sdb) != before)
                        changes += sqlite3_changes64(sdb);
                }
                if (rc != SQLITE_DONE) {
                    gs_error_prefix(err, "parameter set %zu of %zu", i + 1, job->nsets);
                    failed = 1;
                }
            }
            gs_conn_release(w->conn, st);
        }
        if (!failed && stamp) {
            if (changes > 0 && gs_hlc_persist(w->conn, last_hlc, &e) != GS_OK)
                gs_log(GS_LOG_WARN, "db", "database '%s': persisting the HLC: %s", w->db->id,
                       e.message);
            if (gs_cdc_stamp_clear(w->conn, err) != GS_OK)
                failed = 1;
        }
        if (failed) {
            rollback_quietly(w);
        } else if (gs_conn_exec(w->conn, "COMMIT", &e) != GS_OK) {
            gs_error_set(err, 0, "TRANSACTION_ERROR", "commit of the load failed: %s", e.message);
            rollback_quietly(w);
            failed = 1;
        } else {
            committed = 1;
        }
    }
    /* always put the configured durability back */
    if (gs_conn_set_sync(w->conn, w->db->sync_level, &e) != GS_OK) {
        if (committed) {
            gs_error_set(err, 0, "DURABILITY_RESTORE_FAILED",
                         "the load committed, but synchronous=%s could not be restored: %s",
                         gs_sync_level_name(w->db->sync_level), e.message);
            failed = 1;
        } else {
            gs_log(GS_LOG_ERROR, "db", "database '%s': restoring synchronous=%s failed: %s",
                   w->db->id, gs_sync_level_name(w->db->sync_level), e.message);
        }
    }
    /* backups (backup_cycle.h): only the cycle checkpoints, after it captured the log */
    if (committed && job->checkpoint && gs_conn_wal(w->conn) && changes > 0 && !w->db->backups_on)
        checkpoint_after_load(w);
    if (!failed)
        gs_buf_printf(out, "{\"rowsLoaded\":%zu,\"changes\":%lld}", job->nsets, (long long)changes);
    set_outcome(u, failed ? GS_ERROR : GS_OK, 0, out->len);
}

static void run_internal(writer *w, unit *u)
{
    gs_buf *out = &w->s->out;
    gs_buf_reset(out);
    gs_status rc = u->job->fn(u->job->fn_user, w->conn, out, &u->err);
    rollback_quietly(w); /* a callback must not leave a transaction open */
    if (rc == GS_OK && !out->data)
        gs_buf_puts(out, "null");
    set_outcome(u, rc, 0, out->len);
}

/* A lone statement that must run inside a transaction: while writes are stamped (so its change
 * rows are stamped before anyone can read them), and DDL while tables are watched (so a
 * trigger refresh that fails takes the DDL back with it). PRAGMA and VACUUM cannot run in a
 * transaction and write no change rows. */
static int needs_transaction(writer *w, const gs_job *job)
{
    if (job->kind != GS_DB_EXECUTE || !w->db->cdc)
        return 0;
    gs_sql_verb v = job->stmts[0].verb;
    if (v == GS_SQL_PRAGMA || v == GS_SQL_VACUUM)
        return 0;
    if (gs_cdc_stamping(w->db))
        return 1;
    return gs_sql_verb_ddl(v) &&
           (atomic_load_explicit(&w->db->cdc->nwatched, memory_order_relaxed) > 0 ||
            atomic_load_explicit(&w->db->cdc->capture_all, memory_order_relaxed));
}

/* Run the jobs taken from the queue; outcomes land in the scratch units. Sets *grouped when
 * they ran as one group. Returns 1 when the units must be answered (a read served by an
 * in-memory database's writer answers itself). */
static int run_batch(writer *w, size_t n, int *grouped)
{
    gs_job *job = w->s->batch[0];
    *grouped = n > 1 || job->kind == GS_DB_TRANSACTION || job->kind == GS_DB_BATCH ||
               needs_transaction(w, job);
    if (*grouped) {
        run_group(w, n);
        return 1;
    }
    unit *u = &w->s->units[0];
    u->job = job;
    u->state = UNIT_PENDING;
    gs_error_init(&u->err);
    switch (job->kind) {
    case GS_DB_EXECUTE: run_execute_alone(w, u); return 1;
    case GS_DB_LOAD: run_load(w, u); return 1;
    case GS_DB_INTERNAL: run_internal(w, u); return 1;
    case GS_DB_QUERY: gs_db_run_query(w->conn, job, &w->s->out, &w->s->keys, 1); return 0;
    }
    return 0;
}

/* ---- the thread ---- */

static void final_checkpoint(writer *w)
{
    if (!gs_conn_wal(w->conn))
        return;
    sqlite3 *db = gs_conn_db(w->conn);
    int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    if (rc != SQLITE_OK)
        gs_log(GS_LOG_WARN, "db", "database '%s': checkpoint at close failed: %s", w->db->id,
               sqlite3_errmsg(db));
}

/* After a commit that changed rows: record the committed change-log seq and tell the
 * replication engine (it wakes its sender). Only while a commit hook is set. */
static void note_commit(gs_database *db, gs_conn *conn)
{
    pthread_mutex_lock(&db->hook_mu);
    if (db->commit_hook) {
        uint64_t seq = 0;
        gs_error e;
        if (gs_cdc_max_seq(conn, &seq, &e) == GS_OK) {
            gs_db_note_committed_seq(db, (int64_t)seq);
            db->commit_hook(db->commit_hook_user, (int64_t)seq);
        }
    }
    pthread_mutex_unlock(&db->hook_mu);
}

void *gs_db_writer_main(void *arg)
{
    gs_database *db = arg;
    writer w = {.db = db, .conn = db->writer_conn, .s = db->scratch};
    gs_error err;
    gs_error_init(&err);
    int timed = db->opts.write_timeout_ms > 0;
    for (;;) {
        pthread_mutex_lock(&db->lock);
        while (!db->wq_head && !db->writer_stop)
            pthread_cond_wait(&db->writer_cond, &db->lock);
        if (!db->wq_head) {
            pthread_mutex_unlock(&db->lock);
            break;
        }
        int64_t now = timed ? gs_db_now_ns() : 0;
        gs_job *shed = NULL;
        size_t n = 0, weight = 0;
        while (db->wq_head) {
            gs_job *j = db->wq_head;
            if (j->soft_deadline && j->soft_deadline <= now) {
                /* its first deadline passed before it started: skip it */
                db->wq_head = j->next;
                j->next = shed;
                shed = j;
                atomic_fetch_sub(&db->pending, 1);
                db->stats.shed++;
                continue;
            }
            if (n > 0 && (!j->groupable || !w.s->batch[0]->groupable ||
                          weight + j->weight > GS_GROUP_MAX_STATEMENTS))
                break;
            db->wq_head = j->next;
            w.s->batch[n++] = j;
            weight += j->weight;
            if (!j->groupable || n == GS_GROUP_MAX_STATEMENTS)
                break;
        }
        if (!db->wq_head)
            db->wq_tail = NULL;
        for (size_t i = 0; i < n; i++)
            w.s->batch[i]->next = i + 1 < n ? w.s->batch[i + 1] : NULL;
        db->running = n ? w.s->batch[0] : NULL;
        pthread_mutex_unlock(&db->lock);

        while (shed) {
            gs_job *j = shed;
            shed = j->next;
            gs_error_set(&err, 0, "WRITE_OVERLOADED",
                         "the writer could not start this write within write_timeout_ms (%lld "
                         "ms); it was not applied and is safe to retry",
                         (long long)db->opts.write_timeout_ms);
            snprintf(err.details, sizeof err.details, "{\"retryAfterMs\":1000}");
            gs_job_answer_error(j, &err, 1);
            gs_job_free(j);
        }
        if (n == 0)
            continue;
        int grouped;
        sqlite3_int64 changes_before = sqlite3_total_changes64(gs_conn_db(w.conn));
        int answer = run_batch(&w, n, &grouped);
        /* rows changed: a subscriber may be waiting for the change rows (a rolled-back
         * change costs one empty read) */
        if (db->cdc && atomic_load_explicit(&db->cdc->nsubs, memory_order_relaxed) > 0 &&
            sqlite3_total_changes64(gs_conn_db(w.conn)) != changes_before)
            gs_cdc_wake(db->cdc);
        if (db->cdc && sqlite3_total_changes64(gs_conn_db(w.conn)) != changes_before)
            note_commit(db, w.conn);

        /* the writes are done: they leave the bound before their callers hear of it, so a
         * caller that submits again on the answer is not refused */
        int64_t writes = 0;
        for (size_t i = 0; i < n; i++)
            writes += w.s->batch[i]->is_write;
        pthread_mutex_lock(&db->lock);
        db->running = NULL;
        atomic_fetch_sub(&db->pending, writes);
        db->stats.writes += (uint64_t)writes;
        size_t units = grouped ? n : 1;
        size_t slot = 0;
        while (slot < GS_DB_GROUP_SIZE_BOUNDS && (double)units > gs_db_group_size_bounds[slot])
            slot++;
        db->stats.group_size[slot]++;
        if (grouped) {
            db->stats.groups++;
            db->stats.grouped_units += n;
            if (n > db->stats.max_group_units)
                db->stats.max_group_units = n;
        } else {
            db->stats.alone++;
        }
        pthread_mutex_unlock(&db->lock);
        if (answer)
            answer_units(&w, n);
        for (size_t i = 0; i < n; i++)
            gs_job_free(w.s->batch[i]);
        if (w.s->out.cap > (1u << 20))
            gs_buf_free(&w.s->out); /* do not keep a huge result buffer forever */
    }
    /* backups (backup_cycle.h): the log is captured a last time before it may be emptied */
    if (!gs_backup_cycle_writer_closing(db, w.conn))
        final_checkpoint(&w);
    gs_conn_close(w.conn);
    return NULL;
}
