/*
 * The PostgreSQL target: libpq with prepared statements over `connections` connections
 * (default 8; the sweep tries 1..64 and keeps the best). One event-loop thread drives every
 * connection in non-blocking mode: a connection runs one request at a time, as a pooled
 * client would. Each request is sent in pipeline mode followed by a Sync, so a new-order
 * transaction (BEGIN, six statements, COMMIT) travels in one round trip, as gatestream's
 * transaction request does; a read-modify-write is two round trips (the read, then the
 * write), as it is for gatestream. Full durability = synchronous_commit=on, relaxed = off,
 * set per session. Seeding uses COPY in one transaction, then VACUUM ANALYZE and a
 * CHECKPOINT, so no engine starts its measurement with the load's cleanup still owed.
 *
 * Threads: submit (scheduler thread) queues and wakes the loop through an eventfd; the loop
 * thread sends, reads and answers.
 */
#include "target.h"

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define DEFAULT_CONNECTIONS 8

typedef struct pgc {
    PGconn *c;
    gs_bench_op *op;  /* the request running, NULL when idle */
    int failed;       /* the current step saw an error */
    int rolling_back; /* a ROLLBACK after a failed transaction is running */
    int want_write;   /* PQflush has more to send */
    int dead;         /* the connection broke; it takes no more work */
    gs_error err;     /* the step's first error */
} pgc;

typedef struct pg {
    gs_bench_target_cfg cfg;
    int nconns;
    pgc *conns;
    const gs_bench_workload *w;
    gs_bench_done_fn done;
    void *ctx;
    pthread_mutex_t mu;
    gs_bench_op *head, *tail; /* queue, linked through target_data */
    int stopping;
    int wake_fd;
    struct pollfd *fds; /* the loop's poll set: the eventfd, then one per connection */
    pthread_t loop;
    int loop_up;
    char version[64];
    char settings[160]; /* fsync, shared_buffers, ... as the server reported them */
} pg;

static gs_status pg_err(gs_error *err, PGconn *c, const char *what)
{
    const char *m = c ? PQerrorMessage(c) : "out of memory";
    size_t n = strlen(m);
    while (n && (m[n - 1] == '\n' || m[n - 1] == ' '))
        n--;
    return gs_error_set(err, 0, "QUERY_ERROR", "postgres: %s: %.*s", what, (int)n, m);
}

static gs_status connect_pg(pg *p, PGconn **out, int sync_on, gs_error *err)
{
    const char *keys[] = {"dbname", "options", "application_name", NULL};
    const char *vals[] = {p->cfg.url,
                          sync_on ? "-c synchronous_commit=on" : "-c synchronous_commit=off",
                          "gatestream-bench", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        const char *m = c ? PQerrorMessage(c) : "out of memory";
        size_t n = strlen(m);
        while (n && (m[n - 1] == '\n' || m[n - 1] == ' '))
            n--;
        gs_error_set(err, 0, "CONNECTION_ERROR",
                     "postgres: cannot connect with '%s': %.*s (start one with "
                     "bench/gsbench/pg.sh)",
                     p->cfg.url, (int)n, m);
        PQfinish(c);
        return GS_ERROR;
    }
    *out = c;
    return GS_OK;
}

static gs_status exec_cmd(PGconn *c, const char *sql, gs_error *err)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType s = PQresultStatus(r);
    gs_status st = GS_OK;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
        st = pg_err(err, c, sql);
    PQclear(r);
    return st;
}

static gs_status pg_open(const gs_bench_target_cfg *cfg, void **self, gs_error *err)
{
    if (!cfg->url || !cfg->url[0])
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "the postgres target needs --url (a libpq conninfo or "
                            "postgresql:// URI; bench/gsbench/pg.sh prints one)");
    pg *p = gs_calloc(1, sizeof *p);
    if (!p)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    p->cfg = *cfg;
    p->nconns = cfg->connections > 0 ? cfg->connections : DEFAULT_CONNECTIONS;
    p->wake_fd = -1;
    pthread_mutex_init(&p->mu, NULL);
    /* Check the server now, so a wrong URL fails before any loading. */
    PGconn *c;
    if (connect_pg(p, &c, 1, err) != GS_OK) {
        pthread_mutex_destroy(&p->mu);
        gs_free(p);
        return GS_ERROR;
    }
    snprintf(p->version, sizeof p->version, "%s",
             PQparameterStatus(c, "server_version") ? PQparameterStatus(c, "server_version") : "?");
    /* Full durability needs fsync on: a server without it would compare unlike with unlike. */
    PGresult *r = PQexec(c, "SELECT current_setting('fsync'), current_setting('shared_buffers'), "
                            "current_setting('full_page_writes'), current_setting('wal_level')");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        pg_err(err, c, "reading the server settings");
        PQclear(r);
        PQfinish(c);
        pthread_mutex_destroy(&p->mu);
        gs_free(p);
        return GS_ERROR;
    }
    int fsync_on = strcmp(PQgetvalue(r, 0, 0), "on") == 0;
    snprintf(p->settings, sizeof p->settings,
             "fsync=%s, shared_buffers=%s, full_page_writes=%s, wal_level=%s", PQgetvalue(r, 0, 0),
             PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3));
    PQclear(r);
    PQfinish(c);
    if (!fsync_on && cfg->durability == GS_BENCH_FULL) {
        pthread_mutex_destroy(&p->mu);
        gs_free(p);
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "postgres runs with fsync=off, so --durability full would not fsync "
                            "commits: turn fsync on (bench/gsbench/pg.sh does)");
    }
    *self = p;
    return GS_OK;
}

/* COPY text format: escape backslash, tab, newline and carriage return. */
static void copy_text(gs_buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        switch (s[i]) {
        case '\\': gs_buf_puts(b, "\\\\"); break;
        case '\t': gs_buf_puts(b, "\\t"); break;
        case '\n': gs_buf_puts(b, "\\n"); break;
        case '\r': gs_buf_puts(b, "\\r"); break;
        default: gs_buf_putc(b, s[i]); break;
        }
    }
}

static void copy_val(gs_buf *b, const gs_bench_val *v)
{
    switch (v->type) {
    case GS_BV_INT: gs_buf_printf(b, "%lld", (long long)v->i); break;
    case GS_BV_REAL: gs_buf_printf(b, "%.17g", v->r); break;
    case GS_BV_TEXT: copy_text(b, v->s, v->len); break;
    default: gs_buf_puts(b, "\\N"); break;
    }
}

static gs_status seed_table(PGconn *c, const gs_bench_table *t, int64_t rows, uint64_t seed,
                            gs_error *err)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_printf(&b, "COPY %s (", t->name);
    for (uint8_t k = 0; k < t->ncols; k++)
        gs_buf_printf(&b, "%s%s", k ? ", " : "", t->columns[k]);
    gs_buf_puts(&b, ") FROM STDIN");
    if (b.oom) {
        gs_buf_free(&b);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    PGresult *r = PQexec(c, b.data);
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        PQclear(r);
        gs_buf_free(&b);
        return pg_err(err, c, "COPY");
    }
    PQclear(r);
    gs_bench_row *row = gs_malloc(sizeof *row);
    gs_status st = row ? GS_OK : gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    int64_t n = t->rows(rows);
    for (int64_t i = 0; i < n && st == GS_OK; i++) {
        if (i % 256 == 0)
            gs_buf_reset(&b);
        t->row(seed, i, row);
        for (uint8_t k = 0; k < row->ncols; k++) {
            if (k)
                gs_buf_putc(&b, '\t');
            copy_val(&b, &row->v[k]);
        }
        gs_buf_putc(&b, '\n');
        if (b.oom)
            st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        else if ((i % 256 == 255 || i == n - 1) && PQputCopyData(c, b.data, (int)b.len) != 1)
            st = pg_err(err, c, "COPY data");
    }
    gs_free(row);
    gs_buf_free(&b);
    if (PQputCopyEnd(c, st == GS_OK ? NULL : "seeding failed") != 1 && st == GS_OK)
        st = pg_err(err, c, "COPY end");
    while ((r = PQgetResult(c)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && st == GS_OK)
            st = pg_err(err, c, "COPY");
        PQclear(r);
    }
    return st;
}

static gs_status pg_load(void *self, const gs_bench_workload *w, int64_t rows, uint64_t seed,
                         gs_error *err)
{
    pg *p = self;
    PGconn *c;
    if (connect_pg(p, &c, 0, err) != GS_OK)
        return GS_ERROR;
    gs_status st = exec_cmd(c, "SET client_min_messages = warning", err);
    char sql[512];
    for (const char *const *t = w->drop; *t && st == GS_OK; t++) {
        snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s CASCADE", *t);
        st = exec_cmd(c, sql, err);
    }
    for (const char *const *d = w->ddl_pg; *d && st == GS_OK; d++)
        st = exec_cmd(c, *d, err);
    if (st == GS_OK)
        st = exec_cmd(c, "BEGIN", err);
    for (size_t t = 0; t < w->ntables && st == GS_OK; t++)
        st = seed_table(c, &w->tables[t], rows, seed, err);
    if (st == GS_OK)
        st = exec_cmd(c, "COMMIT", err);
    for (size_t t = 0; t < w->ntables && st == GS_OK; t++) {
        snprintf(sql, sizeof sql, "VACUUM ANALYZE %s", w->tables[t].name);
        st = exec_cmd(c, sql, err);
    }
    if (st == GS_OK) {
        /* A superuser (pg.sh's) may checkpoint; another user simply skips it. */
        gs_error ignored;
        gs_error_init(&ignored);
        (void)exec_cmd(c, "CHECKPOINT", &ignored);
    }
    PQfinish(c);
    return st;
}

/* ---- the event loop ---- */

static void queue_push(pg *p, gs_bench_op *op)
{
    op->target_data = NULL;
    if (p->tail)
        p->tail->target_data = op;
    else
        p->head = op;
    p->tail = op;
}

static gs_bench_op *queue_pop(pg *p)
{
    gs_bench_op *op = p->head;
    if (op) {
        p->head = op->target_data;
        if (!p->head)
            p->tail = NULL;
        op->target_data = NULL;
    }
    return op;
}

static void wake(pg *p)
{
    uint64_t one = 1;
    ssize_t w = write(p->wake_fd, &one, sizeof one);
    (void)w;
}

/* Record the first error of a step. */
static void step_error(pgc *pc, const char *what, const char *msg)
{
    if (pc->failed)
        return;
    pc->failed = 1;
    gs_error_init(&pc->err);
    size_t n = msg ? strlen(msg) : 0;
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    gs_error_set(&pc->err, 0, "QUERY_ERROR", "postgres: %s: %.*s", what, (int)n, msg ? msg : "");
}

static int send_prepared(pgc *pc, const gs_bench_stmt *bs)
{
    char name[8];
    snprintf(name, sizeof name, "s%u", (unsigned)bs->sql);
    char nums[GS_BENCH_MAX_PARAMS][32];
    const char *values[GS_BENCH_MAX_PARAMS];
    for (uint8_t i = 0; i < bs->nparams; i++) {
        const gs_bench_val *v = &bs->p[i];
        switch (v->type) {
        case GS_BV_INT:
            snprintf(nums[i], sizeof nums[i], "%lld", (long long)v->i);
            values[i] = nums[i];
            break;
        case GS_BV_REAL:
            snprintf(nums[i], sizeof nums[i], "%.17g", v->r);
            values[i] = nums[i];
            break;
        case GS_BV_TEXT: values[i] = v->s; break;
        default: values[i] = NULL; break;
        }
    }
    return PQsendQueryPrepared(pc->c, name, bs->nparams, values, NULL, NULL, 0);
}

static int send_plain(pgc *pc, const char *sql)
{
    return PQsendQueryParams(pc->c, sql, 0, NULL, NULL, NULL, NULL, 0);
}

/* Send the current step of pc->op: its statements then a Sync. 0 when the send failed (the
 * step is then failed and answered by the caller). */
static int send_step(pgc *pc)
{
    gs_bench_op *op = pc->op;
    int ok = 1;
    pc->failed = 0;
    if (pc->rolling_back) {
        ok = send_plain(pc, "ROLLBACK");
    } else if (op->kind == GS_BENCH_TXN) {
        ok = send_plain(pc, "BEGIN");
        for (int i = 0; i < op->nstmts && ok; i++)
            ok = send_prepared(pc, &op->st[i]);
        ok = ok && send_plain(pc, "COMMIT");
    } else {
        ok = send_prepared(pc, &op->st[op->stage]);
    }
    ok = ok && PQpipelineSync(pc->c);
    if (!ok) {
        step_error(pc, "send", PQerrorMessage(pc->c));
        return 0;
    }
    int f = PQflush(pc->c);
    if (f < 0) {
        step_error(pc, "send", PQerrorMessage(pc->c));
        return 0;
    }
    pc->want_write = f == 1;
    return 1;
}

static void answer(pg *p, pgc *pc)
{
    gs_bench_op *op = pc->op;
    pc->op = NULL;
    pc->rolling_back = 0;
    if (pc->failed)
        p->done(p->ctx, op, GS_ERROR, &pc->err);
    else
        p->done(p->ctx, op, GS_OK, NULL);
}

static void conn_broke(pg *p, pgc *pc)
{
    pc->dead = 1;
    step_error(pc, "connection lost", PQerrorMessage(pc->c));
    if (pc->op)
        answer(p, pc);
}

/* A step finished (its Sync arrived): continue the op or answer it. */
static void step_done(pg *p, pgc *pc)
{
    gs_bench_op *op = pc->op;
    if (pc->rolling_back) {
        /* The transaction's own error is the answer; the ROLLBACK only cleans up. */
        pc->failed = 1;
        answer(p, pc);
        return;
    }
    if (pc->failed && op->kind == GS_BENCH_TXN && PQtransactionStatus(pc->c) != PQTRANS_IDLE) {
        gs_error keep = pc->err;
        pc->rolling_back = 1;
        if (!send_step(pc)) {
            conn_broke(p, pc);
            return;
        }
        pc->err = keep;
        return;
    }
    if (!pc->failed && op->kind == GS_BENCH_RMW && op->stage == 0) {
        op->stage = 1;
        if (!send_step(pc))
            answer(p, pc);
        return;
    }
    answer(p, pc);
}

/* Read what arrived on pc. */
static void on_readable(pg *p, pgc *pc)
{
    if (!PQconsumeInput(pc->c)) {
        conn_broke(p, pc);
        return;
    }
    int nulls = 0;
    while (pc->op && !PQisBusy(pc->c)) {
        PGresult *r = PQgetResult(pc->c);
        if (!r) {
            /* The end of one statement's results; two in a row: nothing more is queued. */
            if (++nulls > 1)
                break;
            continue;
        }
        nulls = 0;
        switch (PQresultStatus(r)) {
        case PGRES_PIPELINE_SYNC:
            PQclear(r);
            step_done(p, pc);
            continue;
        case PGRES_TUPLES_OK: {
            /* Read every value, as a caller would. */
            int rows = PQntuples(r), cols = PQnfields(r);
            size_t total = 0;
            for (int i = 0; i < rows; i++)
                for (int k = 0; k < cols; k++)
                    total += (size_t)PQgetlength(r, i, k) + (PQgetvalue(r, i, k)[0] != 0);
            (void)total;
            break;
        }
        case PGRES_COMMAND_OK: break;
        case PGRES_PIPELINE_ABORTED:
            step_error(pc, "pipeline", "aborted by an earlier error");
            break;
        default: step_error(pc, "query", PQresultErrorMessage(r)); break;
        }
        PQclear(r);
    }
    if (PQstatus(pc->c) == CONNECTION_BAD && !pc->dead)
        conn_broke(p, pc);
}

static void *loop_main(void *arg)
{
    pg *p = arg;
    struct pollfd *fds = p->fds;
    for (;;) {
        /* Hand queued requests to idle connections; on stop, cancel the queue. */
        gs_bench_op *cancelled = NULL;
        int busy = 0;
        pthread_mutex_lock(&p->mu);
        int stopping = p->stopping;
        if (stopping) {
            cancelled = p->head;
            p->head = p->tail = NULL;
        }
        for (int i = 0; i < p->nconns; i++) {
            pgc *pc = &p->conns[i];
            if (!pc->op && !pc->dead && p->head) {
                pc->op = queue_pop(p);
                pc->op->stage = 0;
                pthread_mutex_unlock(&p->mu);
                if (!send_step(pc))
                    answer(p, pc);
                pthread_mutex_lock(&p->mu);
            }
            busy += pc->op != NULL;
        }
        int alive = 0;
        for (int i = 0; i < p->nconns; i++)
            alive += !p->conns[i].dead;
        gs_bench_op *orphans = NULL;
        if (!alive && p->head) {
            orphans = p->head;
            p->head = p->tail = NULL;
        }
        pthread_mutex_unlock(&p->mu);
        gs_error e;
        if (cancelled) {
            gs_bench_cancelled(&e);
            while (cancelled) {
                gs_bench_op *next = cancelled->target_data;
                p->done(p->ctx, cancelled, GS_ERROR, &e);
                cancelled = next;
            }
        }
        if (orphans) {
            gs_error_init(&e);
            gs_error_set(&e, 0, "CONNECTION_ERROR", "postgres: every connection is lost");
            while (orphans) {
                gs_bench_op *next = orphans->target_data;
                p->done(p->ctx, orphans, GS_ERROR, &e);
                orphans = next;
            }
        }
        if (stopping && busy == 0)
            break;

        fds[0].fd = p->wake_fd;
        fds[0].events = POLLIN;
        fds[0].revents = 0;
        for (int i = 0; i < p->nconns; i++) {
            pgc *pc = &p->conns[i];
            fds[i + 1].fd = pc->dead ? -1 : PQsocket(pc->c);
            fds[i + 1].events = (short)(POLLIN | (pc->want_write ? POLLOUT : 0));
            fds[i + 1].revents = 0;
        }
        int n = poll(fds, (nfds_t)p->nconns + 1, 1000);
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0)
            continue;
        if (fds[0].revents & POLLIN) {
            uint64_t v;
            ssize_t r = read(p->wake_fd, &v, sizeof v);
            (void)r;
        }
        for (int i = 0; i < p->nconns; i++) {
            pgc *pc = &p->conns[i];
            short re = fds[i + 1].revents;
            if (!re || pc->dead)
                continue;
            if (re & POLLOUT) {
                int f = PQflush(pc->c);
                if (f < 0) {
                    conn_broke(p, pc);
                    continue;
                }
                pc->want_write = f == 1;
            }
            if (re & (POLLIN | POLLERR | POLLHUP))
                on_readable(p, pc);
        }
    }
    return NULL;
}

static void pg_stop(void *self);

static gs_status pg_start(void *self, const gs_bench_workload *w, gs_bench_done_fn done, void *ctx,
                          gs_error *err)
{
    pg *p = self;
    p->w = w;
    p->stopping = 0;
    p->conns = gs_calloc((size_t)p->nconns, sizeof *p->conns);
    p->fds = gs_calloc((size_t)p->nconns + 1, sizeof *p->fds);
    if (!p->conns || !p->fds) {
        gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        goto fail;
    }
    for (int i = 0; i < p->nconns; i++) {
        pgc *pc = &p->conns[i];
        if (connect_pg(p, &pc->c, p->cfg.durability == GS_BENCH_FULL, err) != GS_OK)
            goto fail;
        for (size_t s = 0; s < w->nsql; s++) {
            char name[8];
            snprintf(name, sizeof name, "s%zu", s);
            PGresult *r = PQprepare(pc->c, name, w->sql[s].pg, 0, NULL);
            int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
            PQclear(r);
            if (!ok) {
                pg_err(err, pc->c, w->sql[s].pg);
                goto fail;
            }
        }
        if (PQsetnonblocking(pc->c, 1) != 0 || PQenterPipelineMode(pc->c) != 1) {
            pg_err(err, pc->c, "pipeline mode");
            goto fail;
        }
    }
    p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->wake_fd < 0) {
        gs_error_set(err, 0, "INTERNAL_ERROR", "eventfd: %s", strerror(errno));
        goto fail;
    }
    p->done = done;
    p->ctx = ctx;
    if (pthread_create(&p->loop, NULL, loop_main, p) != 0) {
        gs_error_set(err, 0, "INTERNAL_ERROR", "cannot start the postgres loop thread");
        goto fail;
    }
    p->loop_up = 1;
    return GS_OK;
fail:
    pg_stop(p);
    return GS_ERROR;
}

static void pg_submit(void *self, gs_bench_op *op)
{
    pg *p = self;
    pthread_mutex_lock(&p->mu);
    queue_push(p, op);
    pthread_mutex_unlock(&p->mu);
    wake(p);
}

static void pg_stop(void *self)
{
    pg *p = self;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_mutex_unlock(&p->mu);
    if (p->loop_up) {
        wake(p);
        pthread_join(p->loop, NULL);
        p->loop_up = 0;
    }
    if (p->conns)
        for (int i = 0; i < p->nconns; i++)
            PQfinish(p->conns[i].c);
    gs_free(p->conns);
    p->conns = NULL;
    gs_free(p->fds);
    p->fds = NULL;
    if (p->wake_fd >= 0)
        close(p->wake_fd);
    p->wake_fd = -1;
    p->done = NULL;
}

static void pg_describe(void *self, char *buf, size_t size)
{
    pg *p = self;
    snprintf(buf, size,
             "PostgreSQL %s over libpq (prepared statements, one request per connection at a "
             "time, pipeline mode), %d connections, synchronous_commit=%s, %s",
             p->version, p->nconns, p->cfg.durability == GS_BENCH_FULL ? "on" : "off", p->settings);
}

static void pg_close(void *self)
{
    pg *p = self;
    if (!p)
        return;
    if (p->loop_up || p->conns)
        pg_stop(p);
    pthread_mutex_destroy(&p->mu);
    gs_free(p);
}

const gs_bench_target_vt gs_bench_target_pg = {
    .name = "postgres",
    .open = pg_open,
    .load = pg_load,
    .start = pg_start,
    .submit = pg_submit,
    .stop = pg_stop,
    .describe = pg_describe,
    .close = pg_close,
};
