#include "job.h"

#include "base/alloc.h"
#include "base/error.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t gs_db_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static const char *kind_name(gs_db_job_kind k)
{
    switch (k) {
    case GS_DB_QUERY: return "query";
    case GS_DB_EXECUTE: return "execute";
    case GS_DB_TRANSACTION: return "transaction";
    case GS_DB_BATCH: return "batch";
    case GS_DB_LOAD: return "load";
    }
    return "request";
}

/* Label a statement's params in messages: "params" for a single statement,
 * "statements[i].params" in a transaction. */
static void params_label(char *buf, size_t cap, const gs_db_request *req, size_t i)
{
    if (req->kind == GS_DB_TRANSACTION)
        snprintf(buf, cap, "statements[%zu].params", i);
    else
        snprintf(buf, cap, "params");
}

gs_status gs_job_build(const gs_db_request *req, gs_job **out, gs_error *err)
{
    *out = NULL;
    if (!req || !req->done)
        return gs_error_set(err, 0, "INVALID_REQUEST", "a request needs a completion callback");
    gs_db_job_kind kind = req->kind;
    if (kind < GS_DB_QUERY || kind > GS_DB_LOAD)
        return gs_error_set(err, 0, "INVALID_REQUEST", "unknown request kind %d", (int)kind);
    if (!req->stmts || req->stmt_count == 0)
        return gs_error_set(err, 0, "INVALID_REQUEST", "a %s needs at least one statement",
                            kind_name(kind));
    if (kind != GS_DB_TRANSACTION && req->stmt_count != 1)
        return gs_error_set(err, 0, "INVALID_REQUEST", "a %s takes exactly one statement",
                            kind_name(kind));
    int batch_like = kind == GS_DB_BATCH || kind == GS_DB_LOAD;
    int sync_level = 0;
    if (kind == GS_DB_LOAD) {
        const char *d = req->durability ? req->durability : "off";
        if (strcmp(d, "off") == 0)
            sync_level = 0;
        else if (strcmp(d, "normal") == 0)
            sync_level = 1;
        else
            return gs_error_set(err, 0, "INVALID_DURABILITY",
                                "durability must be \"off\" or \"normal\"");
    }

    /* pass 1: check everything and size the single allocation */
    size_t nstmts = req->stmt_count;
    size_t nitems = 0, bytes = 0, nsets = 0;
    int groupable = 1;
    gs_sql_verb first_verb = GS_SQL_OTHER;
    char label[64];
    for (size_t i = 0; i < nstmts; i++) {
        const char *sql = req->stmts[i].sql;
        if (!sql)
            return gs_error_set(err, 0, "INVALID_REQUEST", "statement %zu has no sql", i + 1);
        size_t len = strlen(sql);
        gs_sql_info info;
        if (gs_guard_check_sql(sql, len, &info, err) != GS_OK) {
            if (nstmts > 1)
                gs_error_prefix(err, "statement %zu of %zu", i + 1, nstmts);
            return GS_ERROR;
        }
        if (info.verb == GS_SQL_EMPTY) {
            gs_error_set(err, 0, "QUERY_ERROR", "the SQL text is empty");
            if (nstmts > 1)
                gs_error_prefix(err, "statement %zu of %zu", i + 1, nstmts);
            return GS_ERROR;
        }
        if (!gs_sql_verb_groupable(info.verb))
            groupable = 0;
        if (i == 0)
            first_verb = info.verb;
        bytes += len + 1;
        if (!batch_like) {
            params_label(label, sizeof label, req, i);
            if (gs_params_check(req->stmts[i].params, label, &nitems, &bytes, err) != GS_OK)
                return GS_ERROR;
        }
    }
    if (batch_like) {
        if (!json_is_array(req->params_batch) || json_array_size(req->params_batch) == 0)
            return gs_error_set(err, 0, "INVALID_REQUEST",
                                "a %s needs paramsBatch: an array of at least one parameter set",
                                kind_name(kind));
        size_t i;
        json_t *set;
        json_array_foreach(req->params_batch, i, set)
        {
            snprintf(label, sizeof label, "paramsBatch[%zu]", i);
            if (gs_params_check(set, label, &nitems, &bytes, err) != GS_OK)
                return GS_ERROR;
        }
        nsets = json_array_size(req->params_batch);
    }

    size_t size = sizeof(gs_job) + nstmts * sizeof(gs_job_stmt) + nsets * sizeof(gs_bind_set) +
                  nitems * sizeof(gs_bind_param) + bytes;
    gs_job *job = gs_malloc(size);
    if (!job)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory queueing a %s",
                            kind_name(kind));
    memset(job, 0, sizeof *job);
    atomic_init(&job->answered, 0);
    job->kind = kind;
    job->is_write = kind != GS_DB_QUERY;
    job->done = req->done;
    job->user = req->user;
    job->sync_level = sync_level;
    job->checkpoint = req->checkpoint;
    job->stmts = (gs_job_stmt *)(job + 1);
    job->nstmts = nstmts;
    job->sets = (gs_bind_set *)(job->stmts + nstmts);
    job->nsets = nsets;
    gs_bind_param *items = (gs_bind_param *)(job->sets + nsets);
    char *arena = (char *)(items + nitems);

    /* pass 2: copy */
    for (size_t i = 0; i < nstmts; i++) {
        gs_job_stmt *js = &job->stmts[i];
        size_t len = strlen(req->stmts[i].sql);
        memcpy(arena, req->stmts[i].sql, len + 1);
        js->sql = arena;
        js->len = len;
        arena += len + 1;
        if (i == 0) {
            js->verb = first_verb;
        } else {
            gs_sql_info info;
            gs_sql_scan(js->sql, len, &info);
            js->verb = info.verb;
        }
        if (!batch_like) {
            gs_params_convert(req->stmts[i].params, &js->params, items, &arena);
            items += js->params.count;
        } else {
            js->params.kind = GS_BIND_NONE;
        }
    }
    if (batch_like) {
        size_t i;
        json_t *set;
        json_array_foreach(req->params_batch, i, set)
        {
            gs_params_convert(set, &job->sets[i], items, &arena);
            items += job->sets[i].count;
        }
    }
    switch (kind) {
    case GS_DB_QUERY:
        job->groupable = 0;
        job->weight = 1;
        break;
    case GS_DB_EXECUTE:
    case GS_DB_TRANSACTION:
        job->groupable = groupable;
        job->weight = nstmts;
        break;
    case GS_DB_BATCH:
        job->groupable = groupable;
        job->weight = nsets;
        break;
    case GS_DB_LOAD:
        job->groupable = 0;
        job->weight = nsets;
        break;
    }
    *out = job;
    return GS_OK;
}

gs_job *gs_job_new_internal(gs_db_writer_fn fn, void *fn_user,
                            void (*done)(void *user, const gs_db_reply *reply), void *user)
{
    gs_job *job = gs_calloc(1, sizeof *job);
    if (!job)
        return NULL;
    atomic_init(&job->answered, 0);
    job->kind = GS_DB_INTERNAL;
    job->is_write = 1;
    job->weight = 1;
    job->fn = fn;
    job->fn_user = fn_user;
    job->done = done;
    job->user = user;
    return job;
}

void gs_job_free(gs_job *job)
{
    gs_free(job);
}

int gs_job_claim(gs_job *job)
{
    int expected = 0;
    return atomic_compare_exchange_strong(&job->answered, &expected, 1);
}

int gs_job_answer_ok(gs_job *job, const char *json, size_t len)
{
    if (!gs_job_claim(job))
        return 0;
    gs_db_reply r;
    memset(&r, 0, sizeof r);
    r.status = GS_OK;
    r.json = json;
    r.json_len = len;
    job->done(job->user, &r);
    return 1;
}

void gs_job_deliver_error(void (*done)(void *, const gs_db_reply *), void *user,
                          const gs_error *err, int retry_after_s)
{
    gs_db_reply r;
    r.status = GS_ERROR;
    gs_error_copy(&r.err, err);
    r.retry_after_s = retry_after_s;
    r.json = NULL;
    r.json_len = 0;
    done(user, &r);
}

int gs_job_answer_error(gs_job *job, const gs_error *err, int retry_after_s)
{
    if (!gs_job_claim(job))
        return 0;
    gs_job_deliver_error(job->done, job->user, err, retry_after_s);
    return 1;
}
