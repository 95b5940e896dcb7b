/*
 * The backup routes of spec 05-server ("Backup Endpoints"): POST /db/{id}/backup (a turn,
 * answered 202 at once), GET /backup (cycle status), GET /backup/chain, POST /backup/verify,
 * POST /backup/safe-to-delete, POST /backup/restore (202; the rebuild runs on a thread of its
 * own) and GET /backup/restore (the server's own record of the last restore of that id).
 *
 * The routes that read the destination (chain, verify, safe-to-delete) run on one worker
 * thread of their own, never on the transport's I/O thread. A restore closes the database
 * (its cycle captures the log a last time), discards the cycle state and staged captures,
 * rebuilds the file from the chain, and opens the database again through the node's reopen
 * callback; the id answers 404 while that runs.
 *
 * Locks: `mu` guards the worker, the restore records and the shutdown flag. Threads: serve
 * runs on an I/O thread; answers come from it, the worker or a restore thread.
 */
#include "api_internal.h"

#include "../base/alloc.h"
#include "../base/error.h"
#include "../base/log.h"
#include "../base/workpool.h"
#include "../db/backup_cycle.h"
#include "../db/backup_restore.h"
#include "body.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct restore_rec {
    struct restore_rec *next;
    char *id;
    const char *state; /* "idle" | "running" | "done" | "failed" */
    int64_t moment, started_at, finished_at;
    int has_progress;
    gs_restore_progress progress;
    json_t *report;
    int has_error, has_reopen_error;
    gs_error error, reopen_error;
    int thread_live; /* joinable thread below */
    pthread_t thread;
} restore_rec;

struct gs_api_backup {
    pthread_mutex_t mu;
    gs_workpool *pool; /* created on the first destination read */
    restore_rec *recs;
    int shutting_down;
    int cancel; /* restores stop at their next piece (atomic) */
    gs_status (*reopen)(void *user, const char *id, gs_error *err);
    void *reopen_user;
};

gs_status gs_api_backup_new(gs_api *api, const gs_api_options *opts, gs_error *err)
{
    gs_api_backup *b = gs_calloc(1, sizeof *b);
    if (!b)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    pthread_mutex_init(&b->mu, NULL);
    b->reopen = opts->reopen;
    b->reopen_user = opts->reopen_user;
    api->backup = b;
    return GS_OK;
}

void gs_api_backup_shutdown(gs_api *api)
{
    gs_api_backup *b = api->backup;
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    if (b->shutting_down) {
        pthread_mutex_unlock(&b->mu);
        return;
    }
    b->shutting_down = 1;
    __atomic_store_n(&b->cancel, 1, __ATOMIC_RELEASE);
    gs_workpool *pool = b->pool;
    b->pool = NULL;
    pthread_mutex_unlock(&b->mu);
    if (pool)
        gs_workpool_free(pool); /* runs what is queued (each answers), joins */
    /* restore threads: they stop at their next piece and reopen what they closed */
    for (;;) {
        pthread_t t;
        int found = 0;
        pthread_mutex_lock(&b->mu);
        for (restore_rec *r = b->recs; r && !found; r = r->next)
            if (r->thread_live) {
                t = r->thread;
                r->thread_live = 0;
                found = 1;
            }
        pthread_mutex_unlock(&b->mu);
        if (!found)
            break;
        pthread_join(t, NULL);
    }
}

void gs_api_backup_free(gs_api *api)
{
    gs_api_backup *b = api->backup;
    if (!b)
        return;
    gs_api_backup_shutdown(api);
    while (b->recs) {
        restore_rec *r = b->recs;
        b->recs = r->next;
        json_decref(r->report);
        gs_free(r->id);
        gs_free(r);
    }
    pthread_mutex_destroy(&b->mu);
    gs_free(b);
    api->backup = NULL;
}

/* ---- answering ---- */

static void answer_json(gs_api_answer_fn answer, void *user, int status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        static const char oom[] =
            "{\"error\":{\"code\":\"INTERNAL_ERROR\",\"message\":\"out of memory\"}}";
        answer(user, 500, oom, sizeof oom - 1);
        return;
    }
    answer(user, status, text, strlen(text));
    free(text);
}

static void answer_error(gs_api_answer_fn answer, void *user, const gs_error *err)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_error_to_json(err, &b);
    int status = gs_error_status(err);
    if (status >= 500 && strcmp(err->code, "BACKUP_UNSUPPORTED") != 0)
        gs_log(GS_LOG_WARN, "api", "%d %s: %s", status, err->code, err->message);
    if (b.oom) {
        static const char oom[] =
            "{\"error\":{\"code\":\"INTERNAL_ERROR\",\"message\":\"out of memory\"}}";
        answer(user, 500, oom, sizeof oom - 1);
    } else {
        answer(user, status, b.data, b.len);
    }
    gs_buf_free(&b);
}

/* ---- bodies ---- */

/* A whole number >= 0 (an integral real such as 5.0 counts): 1 ok, 0 absent, -1 bad. */
static int whole_field(const json_t *body, const char *key, int64_t *out)
{
    const json_t *v = json_object_get(body, key);
    if (!v)
        return 0;
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = json_integer_value(v);
        return 1;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d >= 0 && d <= 9007199254740992.0 && floor(d) == d) {
            *out = (int64_t)d;
            return 1;
        }
    }
    return -1;
}

/* ---- the worker: routes that read the destination ---- */

typedef struct read_job {
    gs_api *api;
    gs_database *db; /* a registry reference */
    gs_route_action action;
    char *name;
    int has_from;
    int64_t from;
    gs_api_answer_fn answer;
    void *user;
} read_job;

static void read_job_run(void *arg)
{
    read_job *j = arg;
    gs_backup_cycle *c = gs_db_backup_cycle(j->db);
    json_t *out = NULL;
    gs_error err;
    gs_error_init(&err);
    gs_status st;
    switch (j->action) {
    case GS_ROUTE_BACKUP_CHAIN: st = gs_backup_cycle_chains(c, &out, &err); break;
    case GS_ROUTE_BACKUP_VERIFY: st = gs_backup_cycle_verify(c, j->name, &out, &err); break;
    default: st = gs_backup_cycle_safe_to_delete(c, j->has_from, j->from, &out, &err); break;
    }
    if (st == GS_OK)
        answer_json(j->answer, j->user, 200, out);
    else
        answer_error(j->answer, j->user, &err);
    gs_registry_release(j->api->reg, j->db);
    gs_free(j->name);
    gs_free(j);
}

static gs_status post_read(gs_api *api, read_job *j, gs_error *err)
{
    gs_api_backup *b = api->backup;
    pthread_mutex_lock(&b->mu);
    gs_status st = GS_OK;
    if (b->shutting_down)
        st = gs_error_set(err, 0, "SHUTDOWN", "the server is shutting down");
    else if (!b->pool && !(b->pool = gs_workpool_new(1, err)))
        st = GS_ERROR;
    else if (gs_workpool_post(b->pool, read_job_run, j) != GS_OK)
        st = gs_error_set(err, 0, "SHUTDOWN", "the server is shutting down");
    pthread_mutex_unlock(&b->mu);
    return st;
}

/* ---- restore ---- */

static restore_rec *rec_find(gs_api_backup *b, const char *id)
{
    for (restore_rec *r = b->recs; r; r = r->next)
        if (strcmp(r->id, id) == 0)
            return r;
    return NULL;
}

static json_t *rec_json(const restore_rec *r)
{
    json_t *j = json_pack("{ss}", "state", r ? r->state : "idle");
    if (!j || !r)
        return j;
    json_object_set_new(j, "moment", json_integer(r->moment));
    json_object_set_new(j, "startedAt", json_integer(r->started_at));
    if (r->finished_at)
        json_object_set_new(j, "finishedAt", json_integer(r->finished_at));
    if (r->has_progress)
        json_object_set_new(j, "progress", gs_restore_progress_to_json(&r->progress));
    if (r->report)
        json_object_set(j, "report", r->report);
    if (r->has_error)
        json_object_set_new(
            j, "error", json_pack("{ssss}", "code", r->error.code, "message", r->error.message));
    if (r->has_reopen_error)
        json_object_set_new(
            j, "reopenError",
            json_pack("{ssss}", "code", r->reopen_error.code, "message", r->reopen_error.message));
    return j;
}

typedef struct restore_job {
    gs_api *api;
    restore_rec *rec;
    char *id;
    char *path;
    gs_backup_location loc;
    int64_t moment;
    int batch;
} restore_job;

static void on_restore_progress(void *user, const gs_restore_progress *p)
{
    restore_job *j = user;
    gs_api_backup *b = j->api->backup;
    pthread_mutex_lock(&b->mu);
    j->rec->has_progress = 1;
    j->rec->progress = *p;
    pthread_mutex_unlock(&b->mu);
}

/* The rebuild itself: close, forget the chain, rebuild, reopen (spec 05's normative order). */
static void *restore_main(void *arg)
{
    restore_job *j = arg;
    gs_api *api = j->api;
    gs_api_backup *b = api->backup;
    gs_error err, rerr;
    gs_error_init(&err);
    gs_error_init(&rerr);
    gs_restore_report rep;
    memset(&rep, 0, sizeof rep);
    int rebuilt = 0, closed = 0, reopened = 0;
    if (gs_registry_close(api->reg, j->id, &err) == GS_OK) {
        closed = 1;
        /* the state first: nothing may resume capturing onto the chain being replaced */
        gs_backup_discard_staged(j->loc.staging_dir);
        gs_backup_dest *d = NULL;
        if (gs_backup_dest_new(j->loc.vt, j->loc.instance, j->loc.destination_timeout_ms, &d,
                               &err) == GS_OK) {
            gs_restore_options o = {.chain_name = j->loc.chain_name,
                                    .has_moment = 1,
                                    .moment = j->moment,
                                    .replace = 1,
                                    .batch_size = j->batch,
                                    .on_progress = on_restore_progress,
                                    .progress_user = j,
                                    .cancel = &b->cancel};
            rebuilt = gs_backup_restore_chain(d, &o, j->path, &rep, &err) == GS_OK;
            gs_backup_dest_free(d);
        }
        /* a rebuild that failed still opens the database again */
        if (!b->reopen)
            gs_error_set(&rerr, 0, "INTERNAL_ERROR", "this server cannot reopen databases");
        else
            reopened = b->reopen(b->reopen_user, j->id, &rerr) == GS_OK;
    }
    json_t *report = rebuilt ? gs_restore_report_to_json(&rep) : NULL;
    pthread_mutex_lock(&b->mu);
    restore_rec *r = j->rec;
    r->finished_at = gs_backup_now_ms();
    r->report = report;
    if (rebuilt) {
        r->state = "done";
    } else {
        r->state = "failed";
        r->has_error = 1;
        r->error = err;
    }
    if (closed && !reopened) {
        r->has_reopen_error = 1;
        r->reopen_error = rerr;
    }
    pthread_mutex_unlock(&b->mu);
    if (rebuilt)
        gs_log(GS_LOG_INFO, "api", "database '%s' restored from chain '%s' to %lld%s", j->id,
               rep.chain_id, (long long)rep.restores_to, reopened ? "" : " (reopen failed)");
    else
        gs_log(GS_LOG_WARN, "api", "restore of database '%s' failed: %s: %s", j->id, err.code,
               err.message);
    gs_restore_report_clear(&rep);
    gs_backup_location_clear(&j->loc);
    gs_free(j->id);
    gs_free(j->path);
    gs_free(j);
    gs_api_inflight_done(api);
    return NULL;
}

static void serve_restore(gs_api *api, const char *id, json_t *body, gs_api_answer_fn answer,
                          void *user)
{
    gs_api_backup *b = api->backup;
    gs_error err;
    gs_error_init(&err);
    int64_t moment = 0, batch = GS_RESTORE_DEFAULT_BATCH;
    int hm = whole_field(body, "moment", &moment);
    int hb = whole_field(body, "batchSize", &batch);
    if (hm < 0 || hb < 0 || (hb > 0 && (batch < 1 || batch > GS_RESTORE_MAX_BATCH))) {
        gs_error_set(&err, 0, "INVALID_REQUEST",
                     hm < 0 ? "moment must be a whole number of epoch milliseconds, 0 or more"
                            : "batchSize must be a whole number from 1 to 4096");
        answer_error(answer, user, &err);
        return;
    }
    if (hm == 0)
        moment = gs_backup_now_ms();
    pthread_mutex_lock(&b->mu);
    restore_rec *r = rec_find(b, id);
    int busy = r && strcmp(r->state, "running") == 0;
    pthread_mutex_unlock(&b->mu);
    if (busy) {
        gs_error_set(&err, 0, "BACKUP_RESTORE_IN_PROGRESS",
                     "a restore of database '%s' is already under way; follow it with GET "
                     "/db/%s/backup/restore",
                     id, id);
        answer_error(answer, user, &err);
        return;
    }
    gs_database *db = gs_registry_acquire(api->reg, id, &err);
    if (!db) {
        answer_error(answer, user, &err);
        return;
    }
    gs_backup_cycle *c = gs_db_backup_cycle(db);
    restore_job *j = c ? gs_calloc(1, sizeof *j) : NULL;
    if (!c) {
        gs_error_set(&err, 0, "BACKUP_UNSUPPORTED",
                     "database '%s' was opened without backups configured, so it has no chain "
                     "to restore from",
                     id);
    } else if (!j || !(j->id = gs_strdup(id)) || !(j->path = gs_strdup(gs_db_path(db)))) {
        gs_error_set(&err, 0, "INTERNAL_ERROR", "out of memory");
    } else {
        gs_backup_cycle_location(c, &j->loc, &err);
    }
    gs_registry_release(api->reg, db);
    if (err.code[0]) {
        if (j) {
            gs_free(j->id);
            gs_free(j->path);
            gs_free(j);
        }
        answer_error(answer, user, &err);
        return;
    }
    j->api = api;
    j->moment = moment;
    j->batch = (int)batch;
    pthread_mutex_lock(&b->mu);
    r = rec_find(b, id);
    if (b->shutting_down || (r && strcmp(r->state, "running") == 0)) {
        int shutting = b->shutting_down;
        pthread_mutex_unlock(&b->mu);
        if (shutting)
            gs_error_set(&err, 0, "SHUTDOWN", "the server is shutting down");
        else
            gs_error_set(&err, 0, "BACKUP_RESTORE_IN_PROGRESS",
                         "a restore of database '%s' is already under way", id);
        gs_backup_location_clear(&j->loc);
        gs_free(j->id);
        gs_free(j->path);
        gs_free(j);
        answer_error(answer, user, &err);
        return;
    }
    if (!r) {
        r = gs_calloc(1, sizeof *r);
        if (r && !(r->id = gs_strdup(id))) {
            gs_free(r);
            r = NULL;
        }
        if (r) {
            r->next = b->recs;
            b->recs = r;
        }
    } else if (r->thread_live) {
        pthread_join(r->thread, NULL); /* the previous restore's thread has ended its work */
        r->thread_live = 0;
    }
    if (r) { /* one record per id, replaced by each new restore */
        json_decref(r->report);
        r->report = NULL;
        r->state = "running";
        r->moment = moment;
        r->started_at = gs_backup_now_ms();
        r->finished_at = 0;
        r->has_progress = r->has_error = r->has_reopen_error = 0;
        j->rec = r;
        gs_api_inflight_add(api);
        if (pthread_create(&r->thread, NULL, restore_main, j) == 0) {
            r->thread_live = 1;
        } else {
            gs_api_inflight_done(api);
            r->state = "failed";
            r->has_error = 1;
            gs_error_set(&r->error, 0, "INTERNAL_ERROR", "cannot start the restore thread");
            r = NULL;
        }
    }
    pthread_mutex_unlock(&b->mu);
    if (!r) {
        gs_backup_location_clear(&j->loc);
        gs_free(j->id);
        gs_free(j->path);
        gs_free(j);
        gs_error_set(&err, 0, "INTERNAL_ERROR", "out of memory or no thread for the restore");
        answer_error(answer, user, &err);
        return;
    }
    answer_json(answer, user, 202, json_pack("{sb}", "started", 1));
}

/* ---- the routes ---- */

void gs_api_backup_serve(gs_api *api, gs_route_action action, const char *database_id,
                         const uint8_t *body_bytes, size_t body_len, gs_api_answer_fn answer,
                         void *user)
{
    gs_api_backup *b = api->backup;
    gs_error err;
    gs_error_init(&err);
    if (action == GS_ROUTE_BACKUP_RESTORE_STATUS) { /* the server's record: no database needed */
        pthread_mutex_lock(&b->mu);
        json_t *j = rec_json(rec_find(b, database_id));
        pthread_mutex_unlock(&b->mu);
        answer_json(answer, user, 200, j);
        return;
    }
    if (action == GS_ROUTE_BACKUP_RESTORE && !api->accept_backup_restore) {
        gs_error_set(&err, 0, "BACKUP_RESTORE_NOT_ACCEPTED",
                     "this server restores no database over the wire "
                     "(server.accept_backup_restore is false)");
        answer_error(answer, user, &err);
        return;
    }
    json_t *body = NULL;
    int has_body = action != GS_ROUTE_BACKUP_STATUS && action != GS_ROUTE_BACKUP_CHAIN;
    if (has_body && gs_body_parse(body_bytes, body_len, 1, &body, &err) != GS_OK) {
        answer_error(answer, user, &err);
        return;
    }
    if (action == GS_ROUTE_BACKUP_RESTORE) {
        serve_restore(api, database_id, body, answer, user);
        json_decref(body);
        return;
    }
    const char *name = NULL;
    int64_t from = 0;
    int has_from = 0;
    if (action == GS_ROUTE_BACKUP_VERIFY) {
        name = json_string_value(json_object_get(body, "name"));
        if (!name || !name[0])
            gs_error_set(&err, 0, "INVALID_REQUEST",
                         "verify needs 'name': the name a chain record states for the backup");
    } else if (action == GS_ROUTE_BACKUP_SAFE_TO_DELETE) {
        has_from = whole_field(body, "restorableFrom", &from);
        if (has_from < 0)
            gs_error_set(&err, 0, "INVALID_REQUEST",
                         "restorableFrom must be a whole number of epoch milliseconds, 0 or "
                         "more");
    }
    if (err.code[0]) {
        json_decref(body);
        answer_error(answer, user, &err);
        return;
    }
    gs_database *db = gs_registry_acquire(api->reg, database_id, &err);
    gs_backup_cycle *c = db ? gs_db_backup_cycle(db) : NULL;
    if (db && !c)
        gs_error_set(&err, 0, "BACKUP_UNSUPPORTED",
                     "database '%s' was opened without backups configured", database_id);
    if (!c) {
        if (db)
            gs_registry_release(api->reg, db);
        json_decref(body);
        answer_error(answer, user, &err);
        return;
    }
    if (action == GS_ROUTE_BACKUP || action == GS_ROUTE_BACKUP_STATUS) {
        gs_status st = GS_OK;
        json_t *out = NULL;
        if (action == GS_ROUTE_BACKUP) {
            st = gs_backup_cycle_trigger(c, &err);
            out = st == GS_OK ? json_pack("{sb}", "started", 1) : NULL;
        } else {
            out = gs_backup_cycle_status(c);
        }
        gs_registry_release(api->reg, db);
        json_decref(body);
        if (st != GS_OK)
            answer_error(answer, user, &err);
        else
            answer_json(answer, user, action == GS_ROUTE_BACKUP ? 202 : 200, out);
        return;
    }
    read_job *j = gs_calloc(1, sizeof *j);
    if (j && name && !(j->name = gs_strdup(name))) {
        gs_free(j);
        j = NULL;
    }
    json_decref(body);
    if (!j) {
        gs_registry_release(api->reg, db);
        gs_error_set(&err, 0, "INTERNAL_ERROR", "out of memory");
        answer_error(answer, user, &err);
        return;
    }
    j->api = api;
    j->db = db;
    j->action = action;
    j->has_from = has_from > 0;
    j->from = from;
    j->answer = answer;
    j->user = user;
    if (post_read(api, j, &err) != GS_OK) {
        gs_registry_release(api->reg, db);
        gs_free(j->name);
        gs_free(j);
        answer_error(answer, user, &err);
    }
}
