/*
 * WebSocket sessions (spec 05-server "WebSocket Protocol"); see ws.h for the contract.
 *
 * A session is reference-counted: the transport holds one reference from gs_ws_open until
 * gs_ws_close, each statement in flight one, each subscription one until its feed handle is
 * closed. Every frame goes out through session_send_locked, which checks under the session
 * lock that the transport has not closed the connection and that no earlier send failed; so
 * once gs_ws_close has taken the lock and set `closed`, the sink is never called again.
 *
 * Subscriptions open and close on the WebSocket worker (gs_db_cdc_subscribe may wait for the
 * writer to install triggers, gs_db_live_open runs a positioned read, and both closes wait
 * for the feed thread). A subscription's changes can arrive on the feed thread before its
 * `subscribed` frame is sent; they wait in the subscription's pending queue and go out right
 * after it, in order. The session lock is never held while calling into the change feed.
 *
 * Ownership of a subscription: while it opens, its open job owns it (it may already be in the
 * session's list, so unsubscribe and close can mark it cancelled); once open, the session's
 * list owns it; taken off the list (unsubscribe, close, backpressure, a live query's failure),
 * a close job owns it and frees it once the feed handle is closed.
 */
#include "ws.h"

#include "../base/alloc.h"
#include "../base/buf.h"
#include "../base/error.h"
#include "../base/log.h"
#include "../db/cdc.h"
#include "../db/live.h"
#include "api_internal.h"
#include "metrics.h"
#include "ws_message.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define WS_SUBPROTOCOL "sirannon.v1"
#define WS_WORKER_THREADS 2
/* Frames a subscription may hold before its `subscribed` frame goes out (a resume replay).
 * Past it the session closes with 4290, as the transport does past its outbound bound. */
#define WS_PENDING_MAX_BYTES (64u << 20)

/* ---- the worker: blocking subscription work, off the transport's thread ---- */

struct ws_sub;

typedef struct gs_ws_worker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct ws_sub *head, *tail;
    int stopping;
    int nthreads;
    pthread_t threads[WS_WORKER_THREADS];
} gs_ws_worker;

enum { JOB_OPEN = 1, JOB_CLOSE = 2 };
enum { SUB_CDC = 1, SUB_LIVE = 2 };

typedef struct ws_sub {
    struct ws_sub *next;     /* the session's list (session lock) */
    struct ws_sub *job_next; /* the worker's queue (worker lock) */
    int job;
    int kind;
    struct gs_ws_session *s;
    int open;       /* the feed handle is set (session lock) */
    int cancelled;  /* no frame goes out any more (session lock) */
    int ready;      /* `subscribed` went out (session lock) */
    int failed;     /* a live query reported a final error before `subscribed` */
    gs_buf pending; /* frames before `subscribed`: [size_t len][bytes]... (session lock) */
    gs_buf scratch; /* the frame being built on the feed thread */
    char *prefix;   /* `{"type":"change","id":"..","event":` or `{"type":"live","id":"..",` */
    size_t prefix_len;
    gs_cdc_sub *cdc;
    gs_live *live;
    /* what the open job needs */
    json_t *msg; /* the subscribe message (owns the strings below) */
    const char *table;
    json_t *filter;
    int has_since;
    uint64_t since_seq;
    const char *epoch;
    const gs_operation *op;
    json_t *resolved;
    size_t id_len;
    char id[]; /* NUL-terminated */
} ws_sub;

typedef struct gs_ws_session {
    struct gs_ws_session *prev, *next; /* api->ws_head (api lock) */
    int listed;
    gs_api *api;
    gs_ws_sink sink;
    atomic_int refs;
    pthread_mutex_t mu;
    int closed; /* gs_ws_close ran: the sink is gone */
    int dead;   /* a send failed, or the core closed the connection: send nothing more */
    ws_sub *subs;
    char *db_id;
    gs_database *db;
    json_t *identity;
} gs_ws_session;

/* One statement in flight. */
typedef struct ws_req {
    gs_ws_session *s;
    size_t id_len;
    char id[];
} ws_req;

static void job_open(ws_sub *sub);
static void job_close(ws_sub *sub);
static void worker_free(gs_ws_worker *w);

static void *worker_main(void *arg)
{
    gs_ws_worker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->head && !w->stopping)
            pthread_cond_wait(&w->cv, &w->mu);
        ws_sub *sub = w->head;
        if (!sub)
            break; /* stopping and drained */
        w->head = sub->job_next;
        if (!w->head)
            w->tail = NULL;
        sub->job_next = NULL;
        pthread_mutex_unlock(&w->mu);
        if (sub->job == JOB_OPEN)
            job_open(sub);
        else
            job_close(sub);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static gs_ws_worker *worker_new(void)
{
    gs_ws_worker *w = gs_calloc(1, sizeof *w);
    if (!w)
        return NULL;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    for (int i = 0; i < WS_WORKER_THREADS; i++) {
        if (pthread_create(&w->threads[i], NULL, worker_main, w) != 0)
            break;
        w->nthreads++;
    }
    if (w->nthreads == 0) {
        worker_free(w);
        return NULL;
    }
    return w;
}

static void worker_free(gs_ws_worker *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    gs_free(w);
}

/* Queue a job. Never fails: the link lives in the subscription. */
static void worker_post(gs_ws_worker *w, ws_sub *sub, int job)
{
    sub->job = job;
    sub->job_next = NULL;
    pthread_mutex_lock(&w->mu);
    if (w->tail)
        w->tail->job_next = sub;
    else
        w->head = sub;
    w->tail = sub;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* ---- sessions ---- */

static void session_ref(gs_ws_session *s)
{
    atomic_fetch_add(&s->refs, 1);
}

static void session_unref(gs_ws_session *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    gs_api *api = s->api;
    if (s->db)
        gs_registry_release(api->reg, s->db);
    json_decref(s->identity);
    gs_free(s->db_id);
    pthread_mutex_destroy(&s->mu);
    gs_free(s);
    gs_api_inflight_done(api);
}

static void sub_free(ws_sub *sub)
{
    gs_ws_session *s = sub->s;
    gs_buf_free(&sub->pending);
    gs_buf_free(&sub->scratch);
    gs_free(sub->prefix);
    json_decref(sub->msg);
    json_decref(sub->resolved);
    gs_free(sub);
    session_unref(s);
}

static void unlink_sub_locked(gs_ws_session *s, ws_sub *sub)
{
    for (ws_sub **p = &s->subs; *p; p = &(*p)->next)
        if (*p == sub) {
            *p = sub->next;
            sub->next = NULL;
            return;
        }
}

static ws_sub *find_sub_locked(gs_ws_session *s, const char *id, size_t len)
{
    for (ws_sub *sub = s->subs; sub; sub = sub->next)
        if (sub->id_len == len && memcmp(sub->id, id, len) == 0)
            return sub;
    return NULL;
}

/* Take every subscription off the session: none sends again; open ones are closed on the
 * worker, opening ones by their open job when it finishes. */
static void release_subs_locked(gs_ws_session *s)
{
    ws_sub *sub = s->subs;
    s->subs = NULL;
    while (sub) {
        ws_sub *next = sub->next;
        sub->next = NULL;
        sub->cancelled = 1;
        if (sub->open)
            worker_post(s->api->ws_worker, sub, JOB_CLOSE);
        sub = next;
    }
}

/* The core gives up on the connection: close it and stop every feed. */
static void session_abort_locked(gs_ws_session *s, int code, const char *reason)
{
    if (s->closed || s->dead)
        return;
    s->dead = 1;
    s->sink.close(s->sink.user, code, reason);
    release_subs_locked(s);
}

/* Send one frame. A refused send (GS_AGAIN: past the outbound bound, the transport closes with
 * 4290; GS_ERROR: the connection is closing) ends all sending on the session. */
static gs_status session_send_locked(gs_ws_session *s, const char *data, size_t len)
{
    if (s->closed || s->dead)
        return GS_ERROR;
    gs_status st = s->sink.send(s->sink.user, data, len);
    if (st != GS_OK) {
        s->dead = 1;
        release_subs_locked(s);
    }
    return st;
}

static void session_send(gs_ws_session *s, const gs_buf *frame)
{
    pthread_mutex_lock(&s->mu);
    if (frame->oom)
        session_abort_locked(s, 1011, "INTERNAL_ERROR: out of memory building a reply");
    else
        session_send_locked(s, frame->data, frame->len);
    pthread_mutex_unlock(&s->mu);
}

/* ---- frames ---- */

static void put_error_body(gs_buf *b, const gs_error *err)
{
    gs_buf_puts(b, "\"error\":{\"code\":");
    gs_buf_json_string(b, err->code, strlen(err->code));
    gs_buf_puts(b, ",\"message\":");
    gs_buf_json_string(b, err->message, strlen(err->message));
    if (err->details[0] && strcmp(err->details, "{}") != 0) {
        gs_buf_puts(b, ",\"details\":");
        gs_buf_puts(b, err->details);
    }
    gs_buf_putc(b, '}');
}

static void build_error(gs_buf *b, const char *id, size_t id_len, const gs_error *err)
{
    gs_buf_puts(b, "{\"type\":\"error\",\"id\":");
    gs_buf_json_string(b, id, id_len);
    gs_buf_putc(b, ',');
    put_error_body(b, err);
    gs_buf_putc(b, '}');
}

static void send_error(gs_ws_session *s, const char *id, size_t id_len, const gs_error *err)
{
    gs_buf b;
    gs_buf_init(&b);
    build_error(&b, id, id_len, err);
    session_send(s, &b);
    gs_buf_free(&b);
}

static void send_error_locked(gs_ws_session *s, const char *id, size_t id_len, const gs_error *err)
{
    gs_buf b;
    gs_buf_init(&b);
    build_error(&b, id, id_len, err);
    if (b.oom)
        session_abort_locked(s, 1011, "INTERNAL_ERROR: out of memory building a reply");
    else
        session_send_locked(s, b.data, b.len);
    gs_buf_free(&b);
}

static void send_code(gs_ws_session *s, const char *id, size_t id_len, const char *code,
                      const char *fmt, const char *arg)
{
    gs_error e;
    gs_error_init(&e);
    gs_error_set(&e, 0, code, fmt, arg ? arg : "");
    send_error(s, id, id_len, &e);
}

static void send_simple_locked(gs_ws_session *s, const char *type, const char *id, size_t id_len)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_printf(&b, "{\"type\":\"%s\",\"id\":", type);
    gs_buf_json_string(&b, id, id_len);
    gs_buf_putc(&b, '}');
    if (b.oom)
        session_abort_locked(s, 1011, "INTERNAL_ERROR: out of memory building a reply");
    else
        session_send_locked(s, b.data, b.len);
    gs_buf_free(&b);
}

/* ---- statements ---- */

static void stmt_done(void *user, gs_status st, const gs_error *err, gs_api_wrap wrap,
                      const char *json, size_t len, int retry_after_s)
{
    ws_req *r = user;
    (void)retry_after_s;
    gs_buf b;
    gs_buf_init(&b);
    if (st == GS_OK) {
        gs_buf_reserve(&b, len + r->id_len + 48);
        gs_buf_puts(&b, "{\"type\":\"result\",\"id\":");
        gs_buf_json_string(&b, r->id, r->id_len);
        gs_buf_puts(&b, ",\"data\":");
        gs_api_append_result(&b, wrap, json, len);
        gs_buf_putc(&b, '}');
    } else {
        build_error(&b, r->id, r->id_len, err);
    }
    session_send(r->s, &b);
    gs_buf_free(&b);
    session_unref(r->s);
    gs_free(r);
}

static void run_statement(gs_ws_session *s, gs_ws_msg *m)
{
    ws_req *r = gs_malloc(sizeof *r + m->id_len + 1);
    if (!r) {
        send_code(s, m->id, m->id_len, "INTERNAL_ERROR", "out of memory%s", "");
        return;
    }
    r->s = s;
    r->id_len = m->id_len;
    memcpy(r->id, m->id, m->id_len);
    r->id[m->id_len] = '\0';
    session_ref(s);
    gs_api_stmt_call call = {.action = m->action,
                             .database_id = s->db_id,
                             .db = s->db,
                             .body = m->root,
                             .identity = s->identity,
                             .ws = 1,
                             .done = stmt_done,
                             .user = r};
    gs_error err;
    gs_error_init(&err);
    if (gs_api_run_statement(s->api, &call, &err) != GS_OK) {
        send_error(s, m->id, m->id_len, &err);
        session_unref(s);
        gs_free(r);
    }
}

/* ---- subscriptions ---- */

/* Hand one frame of a subscription to the connection, or hold it until `subscribed`. */
static void sub_deliver(ws_sub *sub, const gs_buf *frame)
{
    gs_ws_session *s = sub->s;
    pthread_mutex_lock(&s->mu);
    if (sub->cancelled) {
        /* unsubscribed, closed, or the connection failed */
    } else if (frame->oom) {
        session_abort_locked(s, 1011, "INTERNAL_ERROR: out of memory building a change frame");
    } else if (sub->ready) {
        session_send_locked(s, frame->data, frame->len);
    } else if (sub->pending.len + frame->len > WS_PENDING_MAX_BYTES) {
        session_abort_locked(s, 4290,
                             "the subscription's backlog exceeded the outbound bound; "
                             "resubscribe with sinceSeq");
    } else {
        size_t n = frame->len;
        gs_buf_append(&sub->pending, &n, sizeof n);
        gs_buf_append(&sub->pending, frame->data, n);
        if (sub->pending.oom)
            session_abort_locked(s, 1011, "INTERNAL_ERROR: out of memory holding change frames");
    }
    pthread_mutex_unlock(&s->mu);
}

/* CDC on_event: the feed thread, in seq order for this subscription. */
static void cdc_event(void *user, const char *event_json, size_t len, uint64_t seq)
{
    ws_sub *sub = user;
    (void)seq;
    gs_buf *b = &sub->scratch;
    gs_buf_reset(b);
    gs_buf_append(b, sub->prefix, sub->prefix_len);
    gs_buf_append(b, event_json, len);
    gs_buf_putc(b, '}');
    sub_deliver(sub, b);
}

/* Live update: the feed thread. {"ops"|"rows"|"revalidating"} or a final {"error"}. */
static void live_update(void *user, const char *update_json, size_t len)
{
    ws_sub *sub = user;
    if (len < 3 || update_json[0] != '{')
        return;
    int is_error = len > 9 && memcmp(update_json, "{\"error\":", 9) == 0;
    gs_buf *b = &sub->scratch;
    gs_buf_reset(b);
    if (is_error) {
        gs_buf_puts(b, "{\"type\":\"error\",\"id\":");
        gs_buf_json_string(b, sub->id, sub->id_len);
        gs_buf_putc(b, ',');
    } else {
        gs_buf_append(b, sub->prefix, sub->prefix_len);
    }
    gs_buf_append(b, update_json + 1, len - 1);
    sub_deliver(sub, b);
    if (!is_error)
        return;
    /* The query failed for good: the error frame ends the subscription. */
    gs_ws_session *s = sub->s;
    pthread_mutex_lock(&s->mu);
    if (!sub->ready) {
        sub->failed = 1; /* the open job ends it after `subscribed` */
    } else if (!sub->cancelled) {
        unlink_sub_locked(s, sub);
        sub->cancelled = 1;
        worker_post(s->api->ws_worker, sub, JOB_CLOSE);
    }
    pthread_mutex_unlock(&s->mu);
}

/* After `subscribed`: the frames that arrived before it, in order. */
static void flush_pending_locked(gs_ws_session *s, ws_sub *sub)
{
    size_t off = 0;
    while (off + sizeof(size_t) <= sub->pending.len) {
        size_t n;
        memcpy(&n, sub->pending.data + off, sizeof n);
        off += sizeof n;
        if (session_send_locked(s, sub->pending.data + off, n) != GS_OK)
            break;
        off += n;
    }
    gs_buf_free(&sub->pending);
    gs_buf_init(&sub->pending);
}

/* Worker: open the feed handle, answer `subscribed` (or the error). */
static void job_open(ws_sub *sub)
{
    gs_ws_session *s = sub->s;
    gs_error err;
    gs_error_init(&err);
    gs_status st;
    gs_cdc_subscribed info;
    memset(&info, 0, sizeof info);
    char *rows = NULL;
    if (sub->kind == SUB_CDC) {
        gs_cdc_subscribe_request req = {.table = sub->table,
                                        .filter = sub->filter,
                                        .has_since = sub->has_since,
                                        .since_seq = sub->since_seq,
                                        .epoch = sub->epoch,
                                        .mark_tx_end = 1,
                                        .on_event = cdc_event,
                                        .user = sub};
        st = gs_db_cdc_subscribe(s->db, &req, &sub->cdc, &info, &err);
    } else {
        gs_live_options o = {.reread_jitter_ms = 25, .max_transaction_changes = 10000};
        st = gs_db_live_open(s->db, sub->op->statements[0], sub->resolved, &o, live_update, sub,
                             &sub->live, &rows, &err);
    }

    pthread_mutex_lock(&s->mu);
    if (sub->cancelled) {
        pthread_mutex_unlock(&s->mu);
        if (st == GS_OK)
            job_close(sub); /* closes the handle and frees */
        else
            sub_free(sub);
        gs_free(rows);
        return;
    }
    if (st != GS_OK) {
        unlink_sub_locked(s, sub);
        send_error_locked(s, sub->id, sub->id_len, &err);
        pthread_mutex_unlock(&s->mu);
        sub_free(sub);
        return;
    }
    sub->open = 1;
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_puts(&b, "{\"type\":\"subscribed\",\"id\":");
    gs_buf_json_string(&b, sub->id, sub->id_len);
    if (sub->kind == SUB_CDC) {
        gs_buf_printf(&b, ",\"seq\":\"%llu\",\"epoch\":", (unsigned long long)info.live_seq);
        gs_buf_json_string(&b, info.epoch, strnlen(info.epoch, sizeof info.epoch));
        if (info.resync)
            gs_buf_puts(&b, ",\"resync\":true");
    } else {
        gs_buf_puts(&b, ",\"rows\":");
        gs_buf_puts(&b, rows ? rows : "[]");
    }
    gs_buf_putc(&b, '}');
    gs_free(rows);
    if (b.oom)
        session_abort_locked(s, 1011, "INTERNAL_ERROR: out of memory answering a subscribe");
    else if (session_send_locked(s, b.data, b.len) == GS_OK)
        flush_pending_locked(s, sub);
    gs_buf_free(&b);
    sub->ready = 1;
    if (sub->failed && !sub->cancelled) {
        unlink_sub_locked(s, sub);
        sub->cancelled = 1;
        worker_post(s->api->ws_worker, sub, JOB_CLOSE);
    }
    /* from here the session's list (or a close job) owns sub */
    pthread_mutex_unlock(&s->mu);
}

/* Worker: close the feed handle (no callback runs after), free the subscription. */
static void job_close(ws_sub *sub)
{
    gs_database *db = sub->s->db;
    if (sub->cdc)
        gs_db_cdc_unsubscribe(db, sub->cdc);
    if (sub->live)
        gs_db_live_close(db, sub->live);
    sub->cdc = NULL;
    sub->live = NULL;
    sub_free(sub);
}

static ws_sub *sub_new(gs_ws_session *s, gs_ws_msg *m, int kind)
{
    ws_sub *sub = gs_calloc(1, sizeof *sub + m->id_len + 1);
    if (!sub)
        return NULL;
    sub->kind = kind;
    sub->s = s;
    sub->id_len = m->id_len;
    memcpy(sub->id, m->id, m->id_len);
    gs_buf_init(&sub->pending);
    gs_buf_init(&sub->scratch);
    gs_buf p;
    gs_buf_init(&p);
    gs_buf_puts(&p,
                kind == SUB_CDC ? "{\"type\":\"change\",\"id\":" : "{\"type\":\"live\",\"id\":");
    gs_buf_json_string(&p, sub->id, sub->id_len);
    gs_buf_puts(&p, kind == SUB_CDC ? ",\"event\":" : ",");
    if (p.oom) {
        gs_buf_free(&p);
        gs_free(sub);
        return NULL;
    }
    sub->prefix = gs_buf_take(&p, &sub->prefix_len);
    /* the message stays alive with the subscription: table, filter and epoch point into it */
    sub->msg = m->root;
    m->root = NULL;
    sub->table = m->table;
    sub->filter = m->filter;
    sub->has_since = m->has_since;
    sub->since_seq = m->since_seq;
    sub->epoch = m->epoch;
    return sub;
}

static void subscribe(gs_ws_session *s, gs_ws_msg *m)
{
    gs_api *api = s->api;
    gs_error err;
    gs_error_init(&err);
    if (m->device_id) {
        send_code(s, m->id, m->id_len, "SYNC_UNSUPPORTED",
                  "device sync is not available on this server (subscribe without deviceId)%s", "");
        return;
    }
    pthread_mutex_lock(&s->mu);
    int dup = find_sub_locked(s, m->id, m->id_len) != NULL;
    pthread_mutex_unlock(&s->mu);
    if (dup) {
        send_code(s, m->id, m->id_len, "DUPLICATE_SUBSCRIPTION",
                  "subscription '%s' already exists on this connection; unsubscribe it or use "
                  "another id",
                  m->id);
        return;
    }
    if (gs_db_is_read_only(s->db)) {
        send_code(s, m->id, m->id_len, "READ_ONLY",
                  m->name ? "live queries are not available on read-only database '%s'"
                          : "subscriptions are not available on read-only database '%s'",
                  s->db_id);
        return;
    }

    const gs_operation *op = NULL;
    json_t *resolved = NULL;
    if (m->name) {
        if (m->registry_digest && (!gs_operations_count(api->ops) ||
                                   strcmp(m->registry_digest, gs_operations_digest(api->ops)))) {
            send_code(s, m->id, m->id_len, "REGISTRY_MISMATCH",
                      "this server serves another operation registry than the one the client "
                      "was built against; re-read GET /capabilities and subscribe again%s",
                      "");
            return;
        }
        op = gs_operations_find(api->ops, s->db_id, m->name, GS_OP_READ);
        if (!op) {
            send_code(s, m->id, m->id_len, "UNKNOWN_QUERY",
                      "no registered read named '%s' for this database", m->name);
            return;
        }
        resolved = gs_operation_resolve_args(op, m->args, s->identity, &err);
        if (!resolved || gs_api_before_query_op(api, s->db_id, op->name, op->statements[0],
                                                resolved, s->identity, 0, &err) != GS_OK) {
            if (strcmp(err.code, "INVALID_REQUEST") == 0)
                memcpy(err.code, "INVALID_MESSAGE", sizeof "INVALID_MESSAGE");
            send_error(s, m->id, m->id_len, &err);
            json_decref(resolved);
            return;
        }
    }

    ws_sub *sub = sub_new(s, m, m->name ? SUB_LIVE : SUB_CDC);
    if (!sub) {
        json_decref(resolved);
        send_code(s, m->id, m->id_len, "INTERNAL_ERROR", "out of memory%s", "");
        return;
    }
    sub->op = op;
    sub->resolved = resolved;
    session_ref(s);
    pthread_mutex_lock(&s->mu);
    if (s->closed || s->dead || find_sub_locked(s, sub->id, sub->id_len)) {
        int dup2 = !(s->closed || s->dead);
        pthread_mutex_unlock(&s->mu);
        if (dup2)
            send_code(s, sub->id, sub->id_len, "DUPLICATE_SUBSCRIPTION",
                      "subscription '%s' already exists on this connection", sub->id);
        sub_free(sub);
        return;
    }
    sub->next = s->subs;
    s->subs = sub;
    worker_post(api->ws_worker, sub, JOB_OPEN);
    pthread_mutex_unlock(&s->mu);
}

static void unsubscribe(gs_ws_session *s, gs_ws_msg *m)
{
    pthread_mutex_lock(&s->mu);
    ws_sub *sub = find_sub_locked(s, m->id, m->id_len);
    if (!sub) {
        gs_error e;
        gs_error_init(&e);
        gs_error_set(&e, 0, "SUBSCRIPTION_NOT_FOUND", "no subscription '%s' on this connection",
                     m->id);
        send_error_locked(s, m->id, m->id_len, &e);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    unlink_sub_locked(s, sub);
    sub->cancelled = 1;
    send_simple_locked(s, "unsubscribed", m->id, m->id_len);
    if (sub->open)
        worker_post(s->api->ws_worker, sub, JOB_CLOSE);
    /* else: still opening; its open job sees `cancelled`, closes the handle and frees */
    pthread_mutex_unlock(&s->mu);
}

/* ---- the transport's entry points ---- */

void gs_ws_message(gs_api *api, void *session, const char *data, size_t len)
{
    gs_ws_session *s = session;
    (void)api;
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    int gone = s->closed || s->dead;
    pthread_mutex_unlock(&s->mu);
    if (gone)
        return;
    gs_ws_msg m;
    gs_error err;
    gs_error_init(&err);
    if (gs_ws_msg_parse(data, len, s->api->accept_sql, &m, &err) != GS_OK) {
        gs_metrics_ws(s->api->metrics, (int)m.type, 0);
        send_error(s, m.id, m.id_len, &err);
        gs_ws_msg_clear(&m);
        return;
    }
    /* refused: the server is going away, or an ack this server has no sync for */
    gs_metrics_ws(s->api->metrics, (int)m.type,
                  !atomic_load(&s->api->shutting_down) && m.type != GS_WS_ACK);
    if (atomic_load(&s->api->shutting_down)) {
        send_code(s, m.id, m.id_len, "HANDLER_CLOSED",
                  "the server is shutting down; reconnect to another node%s", "");
        gs_ws_msg_clear(&m);
        return;
    }
    switch (m.type) {
    case GS_WS_QUERY:
    case GS_WS_EXECUTE:
    case GS_WS_TRANSACTION:
    case GS_WS_BATCH:
    case GS_WS_LOAD: run_statement(s, &m); break;
    case GS_WS_SUBSCRIBE: subscribe(s, &m); break;
    case GS_WS_UNSUBSCRIBE: unsubscribe(s, &m); break;
    case GS_WS_ACK:
        send_code(s, m.id, m.id_len, "SYNC_UNSUPPORTED",
                  "device sync is not available on this server; nothing to acknowledge%s", "");
        break;
    }
    gs_ws_msg_clear(&m);
}

void gs_ws_too_large(gs_api *api, void *session)
{
    gs_ws_session *s = session;
    if (!s)
        return;
    char limit[32];
    snprintf(limit, sizeof limit, "%llu", (unsigned long long)api->max_body_bytes);
    send_code(s, "", 0, "PAYLOAD_TOO_LARGE",
              "the message exceeds max_body_bytes (%s bytes); it was discarded", limit);
}

void gs_ws_close(gs_api *api, void *session)
{
    gs_ws_session *s = session;
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->closed = 1;
    release_subs_locked(s);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&api->mu);
    if (s->listed) {
        if (s->prev)
            s->prev->next = s->next;
        else
            api->ws_head = s->next;
        if (s->next)
            s->next->prev = s->prev;
        s->listed = 0;
    }
    pthread_mutex_unlock(&api->mu);
    session_unref(s);
}

/* api->ws_shutdown: gs_api_begin_shutdown closes every session with 1013. */
static void shutdown_sessions(gs_api *api)
{
    pthread_mutex_lock(&api->mu);
    for (gs_ws_session *s = api->ws_head; s; s = s->next) {
        pthread_mutex_lock(&s->mu);
        session_abort_locked(
            s, 1013, "HANDLER_CLOSED: the server is shutting down; reconnect to another node");
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&api->mu);
}

/* api->ws_free: gs_api_free stops the worker (its queued closes run first). */
static void free_worker(gs_api *api)
{
    worker_free(api->ws_worker);
    api->ws_worker = NULL;
}

/* ---- the upgrade ---- */

/* Cut s to at most max bytes without splitting a UTF-8 sequence. */
static void utf8_cut(char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max)
        return;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    s[n] = '\0';
}

/* Fill the refusal: a close code with "CODE: message", or an HTTP status with the error
 * envelope as body. */
static gs_status refuse(gs_ws_open_result *res, gs_error *err, int close_code)
{
    res->session = NULL;
    res->subprotocol = NULL;
    res->close_code = close_code;
    res->http_status = close_code ? 0 : gs_error_status(err);
    if (close_code) {
        char reason[sizeof err->code + sizeof err->message + 4];
        snprintf(reason, sizeof reason, "%s: %s", err->code, err->message);
        utf8_cut(reason, sizeof res->reason - 1);
        memcpy(res->reason, reason, strlen(reason) + 1);
        res->body[0] = '\0';
        return GS_ERROR;
    }
    res->reason[0] = '\0';
    gs_error e;
    gs_error_copy(&e, err);
    for (;;) {
        gs_buf b;
        gs_buf_init(&b);
        gs_error_to_json(&e, &b);
        if (!b.oom && b.len < sizeof res->body) {
            memcpy(res->body, b.data, b.len + 1);
            gs_buf_free(&b);
            break;
        }
        gs_buf_free(&b);
        size_t ml = strlen(e.message);
        e.details[0] = '\0';
        if (ml == 0) {
            snprintf(res->body, sizeof res->body,
                     "{\"error\":{\"code\":\"INTERNAL_ERROR\",\"message\":\"refused\"}}");
            break;
        }
        utf8_cut(e.message, ml / 2);
    }
    return GS_ERROR;
}

static const char *find_header(const gs_ws_open_request *req, const char *name, size_t *from)
{
    for (size_t i = *from; i < req->header_count; i++)
        if (req->headers[i].name && strcasecmp(req->headers[i].name, name) == 0) {
            *from = i + 1;
            return req->headers[i].value ? req->headers[i].value : "";
        }
    *from = req->header_count;
    return NULL;
}

/* 0: nothing offered; 1: sirannon.v1 offered; -1: an offer without it. */
static int subprotocol_offer(const gs_ws_open_request *req)
{
    int offered = 0, ours = 0;
    size_t from = 0;
    const char *v;
    while ((v = find_header(req, "sec-websocket-protocol", &from))) {
        const char *p = v;
        while (*p) {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            const char *start = p;
            while (*p && *p != ',')
                p++;
            const char *end = p;
            while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
            if (end > start) {
                offered = 1;
                if ((size_t)(end - start) == sizeof WS_SUBPROTOCOL - 1 &&
                    memcmp(start, WS_SUBPROTOCOL, sizeof WS_SUBPROTOCOL - 1) == 0)
                    ours = 1;
            }
        }
    }
    return !offered ? 0 : ours ? 1 : -1;
}

/* "/db/{id}" -> the decoded id, or NULL. */
static char *database_from_path(const char *path)
{
    if (!path || strncmp(path, "/db/", 4) != 0)
        return NULL;
    const char *id = path + 4;
    size_t n = strlen(id);
    if (n == 0 || memchr(id, '/', n))
        return NULL;
    char *dec = gs_percent_decode(id, n);
    if (dec && !dec[0]) {
        gs_free(dec);
        return NULL;
    }
    return dec;
}

gs_status gs_ws_open(gs_api *api, const gs_ws_open_request *req, gs_ws_open_result *res,
                     gs_error *err)
{
    res->session = NULL;
    res->subprotocol = NULL;
    res->close_code = 0;
    res->reason[0] = '\0';
    res->body[0] = '\0';
    res->http_status = 0;
    if (!req->sink || !req->sink->send || !req->sink->close) {
        gs_error_set(err, 500, "INTERNAL_ERROR", "the transport handed no WebSocket sink");
        return refuse(res, err, 0);
    }
    if (atomic_load(&api->shutting_down)) {
        gs_error_set(err, 0, "HANDLER_CLOSED",
                     "the server is shutting down; reconnect to another node");
        return refuse(res, err, 1013);
    }
    char *db_id = database_from_path(req->path);
    if (!db_id) {
        gs_error_set(err, 0, "NOT_FOUND", "no WebSocket route for this path (connect to /db/{id})");
        return refuse(res, err, 0);
    }
    int offer = subprotocol_offer(req);
    if (offer < 0) {
        gs_free(db_id);
        gs_error_set(err, 0, "UNSUPPORTED_SUBPROTOCOL",
                     "the upgrade offered no subprotocol this server supports; offer '%s' "
                     "(alongside any credential-bearing value) or offer none",
                     WS_SUBPROTOCOL);
        return refuse(res, err, 0);
    }

    size_t plen = strlen(req->path);
    char *path = gs_malloc(plen + 1);
    gs_status st = GS_OK;
    json_t *identity = NULL;
    if (!path) {
        st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    } else {
        snprintf(path, plen + 1, "/db/%s", db_id); /* decoded, as HTTP hands hooks */
        gs_auth_context ctx = {.struct_size = sizeof ctx,
                               .method = "GET",
                               .path = path,
                               .database_id = db_id,
                               .headers = req->headers,
                               .header_count = req->header_count,
                               .remote_address = req->remote_address};
        st = gs_api_authenticate(api, &ctx, &identity, err);
        gs_free(path);
    }
    if (st != GS_OK) {
        gs_free(db_id);
        int status = gs_error_status(err);
        return refuse(res, err, status == 401 ? 4401 : status == 403 ? 4403 : 0);
    }

    gs_database *db = gs_registry_acquire(api->reg, db_id, err);
    if (!db || gs_db_is_closed(db)) {
        if (db) {
            gs_registry_release(api->reg, db);
            gs_error_set(err, 0, "DATABASE_CLOSED", "database '%s' is closed", db_id);
        }
        gs_free(db_id);
        json_decref(identity);
        return refuse(res, err, strcmp(err->code, "SHUTDOWN") == 0 ? 1013 : 1008);
    }

    gs_ws_session *s = gs_calloc(1, sizeof *s);
    if (!s) {
        gs_registry_release(api->reg, db);
        gs_free(db_id);
        json_decref(identity);
        gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory opening a session");
        return refuse(res, err, 0);
    }
    s->api = api;
    memset(&s->sink, 0, sizeof s->sink);
    memcpy(&s->sink, req->sink,
           req->sink->struct_size < sizeof s->sink ? req->sink->struct_size : sizeof s->sink);
    atomic_init(&s->refs, 1);
    pthread_mutex_init(&s->mu, NULL);
    s->db_id = db_id;
    s->db = db;
    s->identity = identity;

    pthread_mutex_lock(&api->mu);
    if (!api->ws_worker) {
        api->ws_worker = worker_new();
        api->ws_shutdown = shutdown_sessions;
        api->ws_free = free_worker;
    }
    int shutting = atomic_load(&api->shutting_down);
    if (api->ws_worker && !shutting) {
        s->listed = 1;
        s->next = api->ws_head;
        if (api->ws_head)
            api->ws_head->prev = s;
        api->ws_head = s;
        api->inflight++;
    }
    pthread_mutex_unlock(&api->mu);
    if (!s->listed) {
        if (shutting)
            gs_error_set(err, 0, "HANDLER_CLOSED",
                         "the server is shutting down; reconnect to another node");
        else
            gs_error_set(err, 0, "INTERNAL_ERROR", "cannot start the WebSocket worker");
        /* not counted in inflight: free by hand */
        gs_registry_release(api->reg, db);
        json_decref(identity);
        gs_free(db_id);
        pthread_mutex_destroy(&s->mu);
        gs_free(s);
        return refuse(res, err, shutting ? 1013 : 0);
    }
    res->session = s;
    res->subprotocol = offer > 0 ? WS_SUBPROTOCOL : NULL;
    return GS_OK;
}
