/*
 * The in-process SQLite target, the ceiling: libsqlite3 in the generator's own process, set up
 * as a server would be. WAL; full durability = synchronous=FULL, relaxed = NORMAL. Reads run
 * on `connections` reader threads (default 2), each with its own connection and prepared
 * statements; writes go to one writer thread owning the only write connection, which commits
 * whatever writes are queued in one transaction (group commit, a savepoint per request so a
 * failing request undoes only itself), the scheme gatestream's own writer uses. A
 * read-modify-write reads on a reader, then queues its write.
 *
 * Threads: submit (scheduler thread) queues; reader and writer threads answer.
 */
#include "target.h"

#include "base/alloc.h"
#include "base/error.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#define GROUP_MAX 256
#define DEFAULT_READERS 2

typedef struct queue {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    gs_bench_op *head, *tail; /* linked through op->target_data */
    size_t len;
} queue;

typedef struct conn {
    sqlite3 *db;
    sqlite3_stmt **stmts; /* one per workload statement */
    size_t n;
    sqlite3_stmt *begin, *commit, *rollback, *savepoint, *release, *rollback_to;
} conn;

typedef struct sq {
    gs_bench_target_cfg cfg;
    int readers;
    const gs_bench_workload *w;
    gs_bench_done_fn done;
    void *ctx;
    queue rq, wq;
    int stopping; /* under both queue mutexes */
    conn *rconn;
    conn wconn;
    pthread_t *rthreads;
    pthread_t wthread;
    int nrthreads, wthread_up;
} sq;

static void q_init(queue *q)
{
    memset(q, 0, sizeof *q);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
}

static void q_destroy(queue *q)
{
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
}

static void q_push(queue *q, gs_bench_op *op)
{
    op->target_data = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->tail)
        q->tail->target_data = op;
    else
        q->head = op;
    q->tail = op;
    q->len++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* Pop one op (mutex held). */
static gs_bench_op *q_pop_locked(queue *q)
{
    gs_bench_op *op = q->head;
    if (op) {
        q->head = op->target_data;
        if (!q->head)
            q->tail = NULL;
        q->len--;
        op->target_data = NULL;
    }
    return op;
}

static gs_status sqlite_fail(gs_error *err, sqlite3 *db, const char *what)
{
    return gs_error_set(err, 0, "QUERY_ERROR", "sqlite: %s: %s", what,
                        db ? sqlite3_errmsg(db) : "cannot allocate a connection");
}

static gs_status exec_sql(sqlite3 *db, const char *sql, gs_error *err)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        gs_error_set(err, 0, "QUERY_ERROR", "sqlite: %s: %s", sql, msg ? msg : "failed");
        sqlite3_free(msg);
        return GS_ERROR;
    }
    return GS_OK;
}

static gs_status open_db(const sq *s, sqlite3 **out, gs_error *err)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(
        s->cfg.path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        gs_error_set(err, 0, "DATABASE_OPEN_FAILED", "sqlite: cannot open %s: %s", s->cfg.path,
                     db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return GS_ERROR;
    }
    sqlite3_busy_timeout(db, 5000);
    const char *sync = s->cfg.durability == GS_BENCH_FULL ? "PRAGMA synchronous=FULL"
                                                          : "PRAGMA synchronous=NORMAL";
    if (exec_sql(db, "PRAGMA journal_mode=WAL", err) != GS_OK || exec_sql(db, sync, err) != GS_OK) {
        sqlite3_close(db);
        return GS_ERROR;
    }
    *out = db;
    return GS_OK;
}

static gs_status sq_open(const gs_bench_target_cfg *cfg, void **self, gs_error *err)
{
    if (!cfg->path || !cfg->path[0])
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "the sqlite target needs a database file (--sqlite-path FILE)");
    sq *s = gs_calloc(1, sizeof *s);
    if (!s)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    s->cfg = *cfg;
    s->readers = cfg->connections > 0 ? cfg->connections : DEFAULT_READERS;
    q_init(&s->rq);
    q_init(&s->wq);
    *self = s;
    return GS_OK;
}

static void bind_val(sqlite3_stmt *st, int i, const gs_bench_val *v)
{
    switch (v->type) {
    case GS_BV_INT: sqlite3_bind_int64(st, i, v->i); break;
    case GS_BV_REAL: sqlite3_bind_double(st, i, v->r); break;
    case GS_BV_TEXT: sqlite3_bind_text(st, i, v->s, (int)v->len, SQLITE_STATIC); break;
    default: sqlite3_bind_null(st, i); break;
    }
}

static gs_status sq_load(void *self, const gs_bench_workload *w, int64_t rows, uint64_t seed,
                         gs_error *err)
{
    sq *s = self;
    sqlite3 *db;
    if (open_db(s, &db, err) != GS_OK)
        return GS_ERROR;
    gs_status st = GS_OK;
    char sql[1024];
    for (const char *const *t = w->drop; *t && st == GS_OK; t++) {
        snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", *t);
        st = exec_sql(db, sql, err);
    }
    for (const char *const *d = w->ddl_sqlite; *d && st == GS_OK; d++)
        st = exec_sql(db, *d, err);
    /* Seeding is not measured: one transaction, no sync until the end. */
    if (st == GS_OK)
        st = exec_sql(db, "PRAGMA synchronous=OFF", err);
    if (st == GS_OK)
        st = exec_sql(db, "BEGIN", err);
    gs_bench_row *row = st == GS_OK ? gs_malloc(sizeof *row) : NULL;
    if (st == GS_OK && !row)
        st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    for (size_t t = 0; t < w->ntables && st == GS_OK; t++) {
        const gs_bench_table *tb = &w->tables[t];
        gs_bench_insert_sql(tb, 0, sql, sizeof sql);
        sqlite3_stmt *ins = NULL;
        if (sqlite3_prepare_v2(db, sql, -1, &ins, NULL) != SQLITE_OK) {
            st = sqlite_fail(err, db, "prepare the seed insert");
            break;
        }
        int64_t n = tb->rows(rows);
        for (int64_t i = 0; i < n; i++) {
            tb->row(seed, i, row);
            for (uint8_t c = 0; c < row->ncols; c++)
                bind_val(ins, c + 1, &row->v[c]);
            if (sqlite3_step(ins) != SQLITE_DONE) {
                st = sqlite_fail(err, db, "seed a row");
                break;
            }
            sqlite3_reset(ins);
        }
        sqlite3_finalize(ins);
    }
    gs_free(row);
    if (st == GS_OK)
        st = exec_sql(db, "COMMIT", err);
    if (st == GS_OK)
        st = exec_sql(db, "PRAGMA wal_checkpoint(TRUNCATE)", err);
    sqlite3_close(db);
    return st;
}

static void conn_close(conn *c)
{
    if (c->stmts)
        for (size_t i = 0; i < c->n; i++)
            sqlite3_finalize(c->stmts[i]);
    gs_free(c->stmts);
    sqlite3_stmt *extra[] = {c->begin,     c->commit,  c->rollback,
                             c->savepoint, c->release, c->rollback_to};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
        sqlite3_finalize(extra[i]);
    sqlite3_close(c->db);
    memset(c, 0, sizeof *c);
}

static gs_status prep(conn *c, const char *sql, sqlite3_stmt **out, gs_error *err)
{
    if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL) != SQLITE_OK)
        return sqlite_fail(err, c->db, sql);
    return GS_OK;
}

static gs_status conn_open(sq *s, conn *c, int writer, gs_error *err)
{
    memset(c, 0, sizeof *c);
    if (open_db(s, &c->db, err) != GS_OK)
        return GS_ERROR;
    c->n = s->w->nsql;
    c->stmts = gs_calloc(c->n, sizeof *c->stmts);
    if (!c->stmts) {
        conn_close(c);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    for (size_t i = 0; i < c->n; i++)
        if (s->w->sql[i].write == writer && prep(c, s->w->sql[i].sqlite, &c->stmts[i], err))
            goto fail;
    if (writer &&
        (prep(c, "BEGIN IMMEDIATE", &c->begin, err) || prep(c, "COMMIT", &c->commit, err) ||
         prep(c, "ROLLBACK", &c->rollback, err) || prep(c, "SAVEPOINT r", &c->savepoint, err) ||
         prep(c, "RELEASE r", &c->release, err) || prep(c, "ROLLBACK TO r", &c->rollback_to, err)))
        goto fail;
    return GS_OK;
fail:
    conn_close(c);
    return GS_ERROR;
}

/* Run one statement of op on c; a read reads every column of every row, as a caller would. */
static int run_stmt(conn *c, const gs_bench_stmt *bs)
{
    sqlite3_stmt *st = c->stmts[bs->sql];
    if (!st)
        return SQLITE_MISUSE;
    for (uint8_t i = 0; i < bs->nparams; i++)
        bind_val(st, i + 1, &bs->p[i]);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int cols = sqlite3_column_count(st);
        for (int k = 0; k < cols; k++) {
            switch (sqlite3_column_type(st, k)) {
            case SQLITE_INTEGER: (void)sqlite3_column_int64(st, k); break;
            case SQLITE_FLOAT: (void)sqlite3_column_double(st, k); break;
            case SQLITE_TEXT: (void)sqlite3_column_text(st, k); break;
            case SQLITE_BLOB: (void)sqlite3_column_blob(st, k); break;
            default: break;
            }
        }
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int step_simple(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void fail_op(sq *s, gs_bench_op *op, sqlite3 *db, int rc)
{
    gs_error e;
    gs_error_init(&e);
    gs_error_set(&e, 0, "QUERY_ERROR", "sqlite: %s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    s->done(s->ctx, op, GS_ERROR, &e);
}

/* Wait for an op on q; NULL when stopping. */
static gs_bench_op *q_wait(sq *s, queue *q)
{
    pthread_mutex_lock(&q->mu);
    while (!q->head && !s->stopping)
        pthread_cond_wait(&q->cv, &q->mu);
    gs_bench_op *op = s->stopping ? NULL : q_pop_locked(q);
    pthread_mutex_unlock(&q->mu);
    return op;
}

typedef struct reader_arg {
    sq *s;
    conn *c;
} reader_arg;

static void *reader_main(void *arg)
{
    sq *s = ((reader_arg *)arg)->s;
    conn *c = ((reader_arg *)arg)->c;
    gs_free(arg);
    gs_bench_op *op;
    while ((op = q_wait(s, &s->rq)) != NULL) {
        int rc = run_stmt(c, &op->st[0]);
        if (rc != SQLITE_OK) {
            fail_op(s, op, c->db, rc);
        } else if (op->kind == GS_BENCH_RMW) {
            op->stage = 1;
            q_push(&s->wq, op);
        } else {
            s->done(s->ctx, op, GS_OK, NULL);
        }
    }
    return NULL;
}

/* The statements an op runs on the writer. */
static int run_write(conn *c, gs_bench_op *op)
{
    int first = op->kind == GS_BENCH_RMW ? 1 : 0;
    for (int i = first; i < op->nstmts; i++) {
        int rc = run_stmt(c, &op->st[i]);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

static void *writer_main(void *arg)
{
    sq *s = arg;
    conn *c = &s->wconn;
    gs_bench_op *group[GROUP_MAX];
    int rcs[GROUP_MAX];
    for (;;) {
        pthread_mutex_lock(&s->wq.mu);
        while (!s->wq.head && !s->stopping)
            pthread_cond_wait(&s->wq.cv, &s->wq.mu);
        size_t n = 0;
        if (!s->stopping)
            while (n < GROUP_MAX && s->wq.head)
                group[n++] = q_pop_locked(&s->wq);
        pthread_mutex_unlock(&s->wq.mu);
        if (n == 0)
            return NULL;
        int rc = step_simple(c->begin);
        if (rc != SQLITE_OK) {
            for (size_t i = 0; i < n; i++)
                fail_op(s, group[i], c->db, rc);
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            if (n == 1) {
                rcs[i] = run_write(c, group[i]);
                continue;
            }
            step_simple(c->savepoint);
            rcs[i] = run_write(c, group[i]);
            if (rcs[i] != SQLITE_OK)
                step_simple(c->rollback_to);
            step_simple(c->release);
        }
        if (n == 1 && rcs[0] != SQLITE_OK) {
            /* The error message first: ROLLBACK would replace it. */
            fail_op(s, group[0], c->db, rcs[0]);
            step_simple(c->rollback);
            continue;
        }
        rc = step_simple(c->commit);
        if (rc != SQLITE_OK) {
            for (size_t i = 0; i < n; i++)
                fail_op(s, group[i], c->db, rc);
            step_simple(c->rollback);
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            if (rcs[i] == SQLITE_OK)
                s->done(s->ctx, group[i], GS_OK, NULL);
            else
                fail_op(s, group[i], NULL, rcs[i]);
        }
    }
}

static void sq_stop(void *self);

static gs_status sq_start(void *self, const gs_bench_workload *w, gs_bench_done_fn done, void *ctx,
                          gs_error *err)
{
    sq *s = self;
    s->w = w;
    s->done = done;
    s->ctx = ctx;
    s->stopping = 0;
    s->rconn = gs_calloc((size_t)s->readers, sizeof *s->rconn);
    s->rthreads = gs_calloc((size_t)s->readers, sizeof *s->rthreads);
    if (!s->rconn || !s->rthreads) {
        sq_stop(s);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    if (conn_open(s, &s->wconn, 1, err) != GS_OK) {
        sq_stop(s);
        return GS_ERROR;
    }
    for (int i = 0; i < s->readers; i++)
        if (conn_open(s, &s->rconn[i], 0, err) != GS_OK) {
            sq_stop(s);
            return GS_ERROR;
        }
    if (pthread_create(&s->wthread, NULL, writer_main, s) != 0) {
        sq_stop(s);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "cannot start the writer thread");
    }
    s->wthread_up = 1;
    for (int i = 0; i < s->readers; i++) {
        reader_arg *a = gs_malloc(sizeof *a);
        if (!a) {
            sq_stop(s);
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        }
        a->s = s;
        a->c = &s->rconn[i];
        if (pthread_create(&s->rthreads[i], NULL, reader_main, a) != 0) {
            gs_free(a);
            sq_stop(s);
            return gs_error_set(err, 0, "INTERNAL_ERROR", "cannot start a reader thread");
        }
        s->nrthreads++;
    }
    return GS_OK;
}

static void sq_submit(void *self, gs_bench_op *op)
{
    sq *s = self;
    op->stage = 0;
    if (op->kind == GS_BENCH_READ || op->kind == GS_BENCH_RMW)
        q_push(&s->rq, op);
    else
        q_push(&s->wq, op);
}

static void cancel_queue(sq *s, queue *q)
{
    gs_error e;
    gs_bench_cancelled(&e);
    for (;;) {
        pthread_mutex_lock(&q->mu);
        gs_bench_op *op = q_pop_locked(q);
        pthread_mutex_unlock(&q->mu);
        if (!op)
            return;
        s->done(s->ctx, op, GS_ERROR, &e);
    }
}

static void set_stopping(sq *s, int v)
{
    pthread_mutex_lock(&s->rq.mu);
    pthread_mutex_lock(&s->wq.mu);
    s->stopping = v;
    pthread_cond_broadcast(&s->rq.cv);
    pthread_cond_broadcast(&s->wq.cv);
    pthread_mutex_unlock(&s->wq.mu);
    pthread_mutex_unlock(&s->rq.mu);
}

static void sq_stop(void *self)
{
    sq *s = self;
    set_stopping(s, 1);
    /* Readers first: an RMW read that finishes now queues its write for the writer. */
    for (int i = 0; i < s->nrthreads; i++)
        pthread_join(s->rthreads[i], NULL);
    s->nrthreads = 0;
    if (s->wthread_up)
        pthread_join(s->wthread, NULL);
    s->wthread_up = 0;
    if (s->done) {
        cancel_queue(s, &s->rq);
        cancel_queue(s, &s->wq);
    }
    if (s->rconn)
        for (int i = 0; i < s->readers; i++)
            conn_close(&s->rconn[i]);
    conn_close(&s->wconn);
    gs_free(s->rconn);
    gs_free(s->rthreads);
    s->rconn = NULL;
    s->rthreads = NULL;
    s->done = NULL;
}

static void sq_describe(void *self, char *buf, size_t size)
{
    sq *s = self;
    snprintf(buf, size,
             "SQLite %s in-process, WAL, synchronous=%s, %d reader threads (a connection each) "
             "+ 1 writer thread (group commit)",
             sqlite3_libversion(), s->cfg.durability == GS_BENCH_FULL ? "FULL" : "NORMAL",
             s->readers);
}

static void sq_close(void *self)
{
    sq *s = self;
    if (!s)
        return;
    if (s->done || s->wthread_up || s->nrthreads)
        sq_stop(s);
    q_destroy(&s->rq);
    q_destroy(&s->wq);
    gs_free(s);
}

const gs_bench_target_vt gs_bench_target_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .load = sq_load,
    .start = sq_start,
    .submit = sq_submit,
    .stop = sq_stop,
    .describe = sq_describe,
    .close = sq_close,
};
