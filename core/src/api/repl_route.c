/*
 * Writes under replication (spec 03 "Primary-Replica Topology", "Write Concern", "Write
 * Forwarding"): the api hands every statement operation here instead of straight to the
 * database. Without a replication engine on the database, or for a query, it is a plain
 * gs_db_submit. On a replica a write is forwarded to the primary (execute, batch) or refused
 * with TOPOLOGY_ERROR; on a primary the answer of a committed write waits for its write
 * concern ("local" answers at once), so a caller hears of success only when the level it
 * asked for is met, and WRITE_CONCERN_ERROR otherwise.
 *
 * Threads: called on transport threads; the concern completes on the engine's threads.
 */
#include "api_internal.h"

#include "../base/alloc.h"
#include "../base/error.h"
#include "../repl/engine.h"

#include <stdio.h>
#include <string.h>

typedef struct concern_wait {
    void (*done)(void *user, const gs_db_reply *reply);
    void *user;
    char *json; /* the database's answer, kept until the concern is met */
    size_t len;
} concern_wait;

static void concern_met(void *user, gs_status st, const gs_error *err)
{
    concern_wait *w = user;
    gs_db_reply r;
    memset(&r, 0, sizeof r);
    r.status = st;
    if (st == GS_OK) {
        r.json = w->json;
        r.json_len = w->len;
    } else {
        gs_error_copy(&r.err, err);
    }
    w->done(w->user, &r);
    gs_free(w->json);
    gs_free(w);
}

typedef struct concern_req {
    gs_repl_engine *e;
    char level[16];
    int64_t timeout_ms;
    void (*done)(void *user, const gs_db_reply *reply);
    void *user;
} concern_req;

static void committed(void *user, const gs_db_reply *reply)
{
    concern_req *q = user;
    if (reply->status != GS_OK) {
        q->done(q->user, reply);
        gs_free(q);
        return;
    }
    concern_wait *w = gs_malloc(sizeof *w);
    char *copy = w ? gs_malloc(reply->json_len + 1) : NULL;
    if (!w || !copy) {
        gs_free(w);
        gs_db_reply r;
        memset(&r, 0, sizeof r);
        r.status = GS_ERROR;
        gs_error_set(&r.err, 0, "WRITE_CONCERN_ERROR",
                     "out of memory while waiting for the write concern (the write committed)");
        q->done(q->user, &r);
        gs_free(q);
        return;
    }
    memcpy(copy, reply->json, reply->json_len);
    copy[reply->json_len] = '\0';
    w->done = q->done;
    w->user = q->user;
    w->json = copy;
    w->len = reply->json_len;
    gs_repl_engine *e = q->e;
    char level[16];
    memcpy(level, q->level, sizeof level);
    int64_t timeout = q->timeout_ms;
    gs_free(q);
    gs_repl_await_concern(e, level, timeout, concern_met, w);
}

gs_status gs_api_repl_check_read(gs_database *db, json_t *read_concern, gs_error *err)
{
    gs_repl_engine *e = gs_db_repl(db);
    if (!e || !gs_repl_coordinated(e))
        return GS_OK;
    return gs_repl_check_read(e, json_string_value(json_object_get(read_concern, "level")), err);
}

gs_status gs_api_repl_submit(gs_database *db, const gs_db_request *req, json_t *write_concern,
                             gs_error *err)
{
    gs_repl_engine *e = req->kind == GS_DB_QUERY ? NULL : gs_db_repl(db);
    if (!e)
        return gs_db_submit(db, req, err);
    gs_repl_write_route route;
    if (gs_repl_route_request(e, req, &route, err) != GS_OK)
        return GS_ERROR;
    if (route == GS_REPL_WRITE_FORWARD)
        return gs_repl_forward(e, req, err);
    const char *level = json_string_value(json_object_get(write_concern, "level"));
    if (!level)
        level = gs_repl_default_concern(e);
    if (strcmp(level, "local") == 0)
        return gs_db_submit(db, req, err);
    concern_req *q = gs_calloc(1, sizeof *q);
    if (!q)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    q->e = e;
    snprintf(q->level, sizeof q->level, "%s", level);
    json_t *t = json_object_get(write_concern, "timeoutMs");
    q->timeout_ms = json_is_number(t) ? (int64_t)json_number_value(t) : 0;
    q->done = req->done;
    q->user = req->user;
    gs_db_request copy = *req;
    copy.done = committed;
    copy.user = q;
    if (gs_db_submit(db, &copy, err) != GS_OK) {
        gs_free(q);
        return GS_ERROR;
    }
    return GS_OK;
}
