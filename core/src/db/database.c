/*
 * Database lifecycle, submission and the write-deadline reaper. The writer thread lives in
 * writer.c, the reader threads in reader.c; see database_internal.h for the locks.
 */
#include "backup_cycle.h"
#include "cdc_internal.h"
#include "database_internal.h"

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

void gs_db_options_default(gs_db_options *o)
{
    memset(o, 0, sizeof *o);
    o->read_only = 0;
    o->read_pool_size = 4;
    o->wal = 1;
    o->synchronous = "normal";
    o->wal_autocheckpoint = -1;
    o->max_pending_writes = 1024;
    o->write_timeout_ms = 30000;
    o->stmt_cache_size = 128;
    o->busy_timeout_ms = 5000;
    o->create = 1;
    o->cdc_tables = NULL;
    o->cdc_table_count = 0;
    o->cdc_retention_ms = 3600000;
    o->cdc_watch_on_subscribe = 1;
    o->cdc_fallback_poll_ms = 1000;
    o->cdc_max_log_bytes = 1073741824;
    o->cdc_max_log_changes = 0;
    o->cdc_log_warn_bytes = 0;
    o->node_id = "";
    o->backups = NULL;
}

const char *gs_db_id(const gs_database *db)
{
    return db->id;
}

const char *gs_db_path(const gs_database *db)
{
    return db->path;
}

int gs_db_is_read_only(const gs_database *db)
{
    return db->opts.read_only;
}

int gs_db_is_closed(const gs_database *db)
{
    return atomic_load(&((gs_database *)db)->closed);
}

int64_t gs_db_pending_writes(const gs_database *db)
{
    return atomic_load(&((gs_database *)db)->pending);
}

const double gs_db_group_size_bounds[GS_DB_GROUP_SIZE_BOUNDS] = {1, 2, 4, 8, 16, 32, 64, 128, 256};

void gs_db_get_stats(gs_database *db, gs_db_stats *out)
{
    pthread_mutex_lock(&db->lock);
    *out = db->stats;
    pthread_mutex_unlock(&db->lock);
    out->queries = atomic_load_explicit(&db->queries, memory_order_relaxed);
}

/* ---- the reaper: answers writes whose deadline passed ---- */

static void timespec_at(struct timespec *ts, int64_t ns)
{
    ts->tv_sec = ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
}

static void shed_error(const gs_database *db, gs_error *err)
{
    gs_error_set(err, 0, "WRITE_OVERLOADED",
                 "the writer could not start this write within write_timeout_ms (%lld ms); it "
                 "was not applied and is safe to retry",
                 (long long)db->opts.write_timeout_ms);
    snprintf(err->details, sizeof err->details, "{\"retryAfterMs\":1000}");
}

static void timeout_error(const gs_database *db, gs_error *err)
{
    gs_error_set(err, 0, "WRITER_WORKER_TIMEOUT",
                 "the writer gave no outcome within twice write_timeout_ms (%lld ms); the write "
                 "may or may not have been applied: reconcile before retrying it",
                 (long long)db->opts.write_timeout_ms * 2);
}

typedef struct late {
    void (*done)(void *, const gs_db_reply *);
    void *user;
} late;

static void *reaper_main(void *arg)
{
    gs_database *db = arg;
    gs_error err;
    gs_error_init(&err);
    late lates[32];
    pthread_mutex_lock(&db->lock);
    while (!db->reaper_stop) {
        int64_t now = gs_db_now_ns();
        int64_t next = 0;
        /* queued writes past their first deadline: never started, so shed them */
        gs_job *expired = NULL, **pp = &db->wq_head, *prev = NULL;
        while (*pp) {
            gs_job *j = *pp;
            if (!j->soft_deadline) { /* a query queued on an in-memory database's writer */
                prev = j;
                pp = &j->next;
                continue;
            }
            if (j->soft_deadline > now) {
                next = j->soft_deadline; /* later jobs have later deadlines */
                break;
            }
            *pp = j->next;
            if (db->wq_tail == j)
                db->wq_tail = prev;
            j->next = expired;
            expired = j;
            atomic_fetch_sub(&db->pending, 1);
            db->stats.shed++;
        }
        /* running writes past twice the deadline: the outcome is unknown */
        size_t nlate = 0;
        for (gs_job *j = db->running; j; j = j->next) {
            if (!j->hard_deadline || atomic_load(&j->answered))
                continue;
            if (j->hard_deadline <= now) {
                if (nlate < sizeof lates / sizeof lates[0] && gs_job_claim(j)) {
                    lates[nlate].done = j->done;
                    lates[nlate].user = j->user;
                    nlate++;
                    db->stats.timed_out++;
                }
                continue;
            }
            if (!next || j->hard_deadline < next)
                next = j->hard_deadline;
        }
        if (expired || nlate) {
            pthread_mutex_unlock(&db->lock);
            while (expired) {
                gs_job *j = expired;
                expired = j->next;
                shed_error(db, &err);
                gs_job_answer_error(j, &err, 1);
                gs_job_free(j);
            }
            for (size_t i = 0; i < nlate; i++) {
                timeout_error(db, &err);
                gs_job_deliver_error(lates[i].done, lates[i].user, &err, 0);
            }
            pthread_mutex_lock(&db->lock);
            continue;
        }
        if (!next) {
            db->reaper_idle = 1;
            pthread_cond_wait(&db->reaper_cond, &db->lock);
            db->reaper_idle = 0;
        } else {
            struct timespec ts;
            timespec_at(&ts, next);
            pthread_cond_timedwait(&db->reaper_cond, &db->lock, &ts);
        }
    }
    pthread_mutex_unlock(&db->lock);
    return NULL;
}

/* ---- submission ---- */

gs_status gs_db_enqueue_take(gs_database *db, gs_job *job, gs_error *err)
{
    if (job->kind == GS_DB_QUERY && db->nreaders > 0) {
        pthread_mutex_lock(&db->rlock);
        if (!db->reader_accepting) {
            pthread_mutex_unlock(&db->rlock);
            gs_job_free(job);
            return gs_error_set(err, 0, "DATABASE_CLOSED", "database '%s' is closed", db->id);
        }
        job->next = NULL;
        if (db->rq_tail)
            db->rq_tail->next = job;
        else
            db->rq_head = job;
        db->rq_tail = job;
        pthread_cond_signal(&db->reader_cond);
        pthread_mutex_unlock(&db->rlock);
        return GS_OK;
    }
    int64_t timeout_ms = db->opts.write_timeout_ms;
    if (job->is_write && timeout_ms > 0) {
        int64_t now = gs_db_now_ns();
        job->soft_deadline = now + timeout_ms * 1000000LL;
        job->hard_deadline = now + 2 * timeout_ms * 1000000LL;
    }
    pthread_mutex_lock(&db->lock);
    if (!db->writer_accepting) {
        pthread_mutex_unlock(&db->lock);
        gs_job_free(job);
        return gs_error_set(err, 0, "DATABASE_CLOSED", "database '%s' is closed", db->id);
    }
    if (job->is_write && atomic_load(&db->pending) >= db->opts.max_pending_writes) {
        db->stats.overloaded++;
        pthread_mutex_unlock(&db->lock);
        gs_job_free(job);
        gs_error_set(err, 0, "WRITE_OVERLOADED",
                     "%lld writes are already queued or running on database '%s'; this one was "
                     "not applied: retry after 1 s",
                     (long long)db->opts.max_pending_writes, db->id);
        snprintf(err->details, sizeof err->details, "{\"limit\":%lld,\"retryAfterMs\":1000}",
                 (long long)db->opts.max_pending_writes);
        return GS_ERROR;
    }
    job->next = NULL;
    if (db->wq_tail)
        db->wq_tail->next = job;
    else
        db->wq_head = job;
    db->wq_tail = job;
    if (job->is_write)
        atomic_fetch_add(&db->pending, 1);
    pthread_cond_signal(&db->writer_cond);
    if (db->reaper_idle && job->soft_deadline)
        pthread_cond_signal(&db->reaper_cond);
    pthread_mutex_unlock(&db->lock);
    return GS_OK;
}

gs_status gs_db_submit(gs_database *db, const gs_db_request *req, gs_error *err)
{
    if (!db || !req)
        return gs_error_set(err, 0, "INVALID_REQUEST", "no database or no request");
    if (atomic_load(&db->closed))
        return gs_error_set(err, 0, "DATABASE_CLOSED", "database '%s' is closed", db->id);
    if (req->kind != GS_DB_QUERY && db->opts.read_only)
        return gs_error_set(err, 0, "READ_ONLY", "database '%s' is read-only", db->id);
    gs_job *job;
    if (gs_job_build(req, &job, err) != GS_OK)
        return GS_ERROR;
    if (gs_db_enqueue_take(db, job, err) != GS_OK)
        return GS_ERROR;
    if (req->kind == GS_DB_QUERY)
        atomic_fetch_add_explicit(&db->queries, 1, memory_order_relaxed);
    return GS_OK;
}

gs_status gs_db_writer_call(gs_database *db, gs_db_writer_fn fn, void *fn_user,
                            void (*done)(void *user, const gs_db_reply *reply), void *user,
                            gs_error *err)
{
    if (!db || !fn || !done)
        return gs_error_set(err, 0, "INVALID_REQUEST", "no database, callback or completion");
    if (atomic_load(&db->closed))
        return gs_error_set(err, 0, "DATABASE_CLOSED", "database '%s' is closed", db->id);
    if (db->opts.read_only)
        return gs_error_set(err, 0, "READ_ONLY", "database '%s' is read-only", db->id);
    gs_job *job = gs_job_new_internal(fn, fn_user, done, user);
    if (!job)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory queueing a writer call");
    return gs_db_enqueue_take(db, job, err);
}

/* ---- open and close ---- */

static int cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;
    if (pthread_condattr_init(&a) != 0)
        return -1;
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return rc;
}

static void stop_threads(gs_database *db)
{
    /* readers first: they finish the queued reads; then the writer can checkpoint with no
     * reader pinning the log */
    pthread_mutex_lock(&db->rlock);
    db->reader_accepting = 0;
    db->readers_stop = 1;
    pthread_cond_broadcast(&db->reader_cond);
    pthread_mutex_unlock(&db->rlock);
    for (int i = 0; i < db->readers_started; i++)
        pthread_join(db->reader_threads[i], NULL);
    db->readers_started = 0;

    pthread_mutex_lock(&db->lock);
    db->writer_accepting = 0;
    db->writer_stop = 1;
    pthread_cond_broadcast(&db->writer_cond);
    pthread_mutex_unlock(&db->lock);
    if (db->writer_started)
        pthread_join(db->writer_thread, NULL);
    db->writer_started = 0;

    pthread_mutex_lock(&db->lock);
    db->reaper_stop = 1;
    pthread_cond_broadcast(&db->reaper_cond);
    pthread_mutex_unlock(&db->lock);
    if (db->reaper_started)
        pthread_join(db->reaper_thread, NULL);
    db->reaper_started = 0;
}

static void destroy(gs_database *db)
{
    /* connections not yet handed to a thread (open failed part way) */
    if (db->writer_conn && !db->writer_handed)
        gs_conn_close(db->writer_conn);
    for (int i = 0; i < db->nreaders; i++)
        if (db->reader_conns && db->reader_conns[i])
            gs_conn_close(db->reader_conns[i]);
    gs_cdc_feed_stop(db->cdc);
    gs_cdc_free(db->cdc);
    gs_backup_cycle_free(db->backup);
    gs_writer_scratch_free(db->scratch);
    gs_free(db->reader_conns);
    gs_free(db->reader_threads);
    pthread_mutex_destroy(&db->lock);
    pthread_mutex_destroy(&db->hook_mu);
    pthread_cond_destroy(&db->writer_cond);
    pthread_cond_destroy(&db->reaper_cond);
    pthread_mutex_destroy(&db->rlock);
    pthread_cond_destroy(&db->reader_cond);
    pthread_mutex_destroy(&db->close_lock);
    gs_free(db->id);
    gs_free(db->path);
    gs_free(db);
}

gs_status gs_db_open(const char *id, const char *path, const gs_db_options *opts, gs_database **out,
                     gs_error *err)
{
    *out = NULL;
    gs_db_options o;
    if (opts)
        o = *opts;
    else
        gs_db_options_default(&o);
    if (!id || !path || !path[0])
        return gs_error_set(err, 0, "DATABASE_OPEN_FAILED", "a database needs an id and a path");
    const char *sync = o.synchronous ? o.synchronous : "normal";
    int sync_level = gs_sync_level_parse(sync);
    if (sync_level < 0)
        return gs_error_set(err, 0, "INVALID_SYNCHRONOUS",
                            "synchronous '%s' is not one of off, normal, full, extra", sync);
    if (o.max_pending_writes < 1)
        return gs_error_set(err, 0, "INVALID_WRITER_WORKER",
                            "max_pending_writes must be at least 1 (got %lld)",
                            (long long)o.max_pending_writes);
    if (o.write_timeout_ms < 0)
        return gs_error_set(err, 0, "INVALID_WRITER_WORKER",
                            "write_timeout_ms must be at least 0 (got %lld)",
                            (long long)o.write_timeout_ms);
    if (o.read_pool_size < 1)
        o.read_pool_size = 1;
    if (o.stmt_cache_size < 0)
        o.stmt_cache_size = 128;
    int memory = strcmp(path, ":memory:") == 0;
    if (memory && o.read_only)
        return gs_error_set(err, 0, "DATABASE_OPEN_FAILED",
                            "an in-memory database cannot be opened read-only");
    /* backups: only the cycle checkpoints, right after it captured the log */
    const struct gs_backup_cycle_config *backups = o.backups;
    o.backups = NULL;
    if (backups && (memory || o.read_only || !o.wal))
        return gs_error_set(err, 0, "BACKUP_UNSUPPORTED",
                            "database '%s' is %s: change-capture backups need a file in WAL mode "
                            "that this node writes",
                            id,
                            memory        ? "in memory"
                            : o.read_only ? "read-only"
                                          : "not in WAL mode");
    if (backups)
        o.wal_autocheckpoint = 0;

    gs_database *db = gs_calloc(1, sizeof *db);
    if (!db)
        return gs_error_set(err, 0, "DATABASE_OPEN_FAILED", "out of memory opening '%s'", id);
    db->id = gs_strdup(id);
    db->path = gs_strdup(path);
    o.synchronous = NULL; /* the caller's string is not kept; sync_level is */
    db->opts = o;
    /* borrowed during open only: the CDC state copies them */
    db->opts.cdc_tables = NULL;
    db->opts.cdc_table_count = 0;
    db->opts.node_id = NULL;
    db->sync_level = sync_level;
    db->memory = memory;
    db->backups_on = backups != NULL;
    atomic_init(&db->pending, 0);
    atomic_init(&db->closed, 0);
    pthread_mutex_init(&db->lock, NULL);
    pthread_mutex_init(&db->hook_mu, NULL);
    pthread_cond_init(&db->writer_cond, NULL);
    cond_init_monotonic(&db->reaper_cond);
    pthread_mutex_init(&db->rlock, NULL);
    pthread_cond_init(&db->reader_cond, NULL);
    pthread_mutex_init(&db->close_lock, NULL);
    db->writer_accepting = db->reader_accepting = 1;
    db->nreaders = memory ? 0 : o.read_pool_size;
    if (!db->id || !db->path)
        goto oom;
    if (db->nreaders > 0) {
        db->reader_conns = gs_calloc((size_t)db->nreaders, sizeof *db->reader_conns);
        db->reader_threads = gs_calloc((size_t)db->nreaders, sizeof *db->reader_threads);
        if (!db->reader_conns || !db->reader_threads)
            goto oom;
    }

    gs_conn_options co = {
        .path = path,
        .create = o.create,
        .wal = o.wal,
        .sync_level = sync_level,
        .wal_autocheckpoint = o.wal_autocheckpoint,
        .busy_timeout_ms = o.busy_timeout_ms,
        .stmt_cache_size = o.stmt_cache_size,
    };
    if (!o.read_only) {
        co.role = GS_CONN_WRITER;
        if (gs_conn_open(&co, &db->writer_conn, err) != GS_OK)
            goto fail;
        if (backups && !gs_conn_wal(db->writer_conn)) {
            gs_error_set(err, 0, "BACKUP_UNSUPPORTED",
                         "database '%s' did not enter WAL mode, so it has no write-ahead log "
                         "for change-capture backups to capture",
                         id);
            goto fail;
        }
        db->scratch = gs_writer_scratch_new();
        if (!db->scratch)
            goto oom;
        /* change capture: set up while this thread still owns the writer connection */
        db->opts.cdc_tables = o.cdc_tables;
        db->opts.cdc_table_count = o.cdc_table_count;
        db->opts.node_id = o.node_id;
        gs_status crc = memory ? GS_OK : gs_cdc_create(db, err);
        db->opts.cdc_tables = NULL;
        db->opts.cdc_table_count = 0;
        db->opts.node_id = NULL;
        if (crc != GS_OK || (db->cdc && gs_cdc_open(db->cdc, db->writer_conn, err) != GS_OK))
            goto fail;
    }
    /* readers open after the writer has put the file in WAL mode */
    co.role = GS_CONN_READER;
    for (int i = 0; i < db->nreaders; i++)
        if (gs_conn_open(&co, &db->reader_conns[i], err) != GS_OK)
            goto fail;

    if (!o.read_only) {
        if (pthread_create(&db->writer_thread, NULL, gs_db_writer_main, db) != 0)
            goto threads;
        db->writer_started = 1;
        db->writer_handed = 1; /* the writer thread owns writer_conn now and closes it */
        if (o.write_timeout_ms > 0) {
            if (pthread_create(&db->reaper_thread, NULL, reaper_main, db) != 0)
                goto threads;
            db->reaper_started = 1;
        }
    }
    for (int i = 0; i < db->nreaders; i++) {
        gs_reader_arg *ra = gs_malloc(sizeof *ra);
        if (!ra)
            goto oom_threads;
        ra->db = db;
        ra->conn = db->reader_conns[i];
        if (pthread_create(&db->reader_threads[i], NULL, gs_db_reader_main, ra) != 0) {
            gs_free(ra);
            goto threads;
        }
        db->reader_conns[i] = NULL; /* owned by its thread */
        db->readers_started++;
    }
    if (db->cdc && db->cdc->initialised && gs_cdc_feed_start(db->cdc, err) != GS_OK) {
        stop_threads(db);
        destroy(db);
        return GS_ERROR;
    }
    if (backups && gs_backup_cycle_start(db, backups, err) != GS_OK) {
        stop_threads(db);
        destroy(db);
        return GS_ERROR;
    }
    *out = db;
    return GS_OK;

oom_threads:
    gs_error_set(err, 0, "DATABASE_OPEN_FAILED", "out of memory opening '%s'", path);
    stop_threads(db);
    destroy(db);
    return GS_ERROR;
threads:
    gs_error_set(err, 0, "DATABASE_OPEN_FAILED", "cannot start the threads of '%s': %s", path,
                 strerror(errno));
    stop_threads(db);
    destroy(db);
    return GS_ERROR;
oom:
    gs_error_set(err, 0, "DATABASE_OPEN_FAILED", "out of memory opening '%s'", path);
fail:
    destroy(db);
    return GS_ERROR;
}

void gs_db_close(gs_database *db)
{
    if (!db)
        return;
    pthread_mutex_lock(&db->close_lock);
    if (db->close_done) {
        pthread_mutex_unlock(&db->close_lock);
        return;
    }
    /* backups: the turn in flight stops while the writer still takes its last calls */
    gs_backup_cycle_close_begin(db);
    atomic_store(&db->closed, 1);
    pthread_mutex_lock(&db->lock);
    db->writer_accepting = 0;
    pthread_mutex_unlock(&db->lock);
    pthread_mutex_lock(&db->rlock);
    db->reader_accepting = 0;
    pthread_mutex_unlock(&db->rlock);
    /* the feed first: no callback runs once close has begun stopping threads, and the feed
     * queues no more writer work */
    gs_cdc_feed_stop(db->cdc);
    stop_threads(db);
    gs_backup_cycle_close_end(db); /* the writer captured the log a last time: send it */
    db->close_done = 1;
    pthread_mutex_unlock(&db->close_lock);
}

void gs_db_free(gs_database *db)
{
    if (!db)
        return;
    gs_db_close(db);
    destroy(db);
}

/* ---- replication hooks ---- */

void gs_db_set_commit_hook(gs_database *db, void (*fn)(void *user, int64_t seq), void *user)
{
    pthread_mutex_lock(&db->hook_mu);
    db->commit_hook = fn;
    db->commit_hook_user = user;
    pthread_mutex_unlock(&db->hook_mu);
}

void gs_db_set_write_gate(gs_database *db, gs_status (*fn)(void *user, gs_error *err), void *user)
{
    pthread_mutex_lock(&db->hook_mu);
    db->write_gate = fn;
    db->write_gate_user = user;
    pthread_mutex_unlock(&db->hook_mu);
}

int64_t gs_db_committed_seq(const gs_database *db)
{
    return atomic_load(&((gs_database *)db)->committed_seq);
}

void gs_db_note_committed_seq(gs_database *db, int64_t seq)
{
    int64_t cur = atomic_load(&db->committed_seq);
    while (seq > cur && !atomic_compare_exchange_weak(&db->committed_seq, &cur, seq))
        ;
}

void gs_db_set_repl(gs_database *db, struct gs_repl_engine *e)
{
    pthread_mutex_lock(&db->hook_mu);
    db->repl = e;
    pthread_mutex_unlock(&db->hook_mu);
}

struct gs_repl_engine *gs_db_repl(const gs_database *db)
{
    gs_database *d = (gs_database *)db;
    pthread_mutex_lock(&d->hook_mu);
    struct gs_repl_engine *e = d->repl;
    pthread_mutex_unlock(&d->hook_mu);
    return e;
}
