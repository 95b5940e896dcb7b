/*
 * Subscriptions and live queries over a WebSocket connection (spec 05 / 06): subscribe and
 * wait for `subscribed`, deliver change events in order, track the highest seq processed
 * and the epoch, resubscribe from them after a reconnect (RESYNC when the server could not
 * resume), hold a live query's rows and apply its ops, re-read the registry digest once
 * after REGISTRY_MISMATCH. Handlers run on the connection's I/O thread; every subscription
 * is looked up again under ws->mu by pointer and serial before it is touched, so a handle
 * freed by another thread is never used. In coordinator mode, when routing no longer lists
 * a connection's endpoint, its I/O thread moves the subscriptions to the endpoint routing
 * names now (see cl_ws_internal.h for the locking) and they restart live there.
 */
#include "cl_ws_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct gs_client_sub *find_locked(cl_ws *ws, struct gs_client_sub *sub, uint64_t serial)
{
    for (struct gs_client_sub *s = ws->subs; s; s = s->next)
        if (s == sub && s->serial == serial)
            return s->state == CL_SUB_DEAD ? NULL : s;
    return NULL;
}

static struct gs_client_sub *find_id_locked(cl_ws *ws, const char *id)
{
    for (struct gs_client_sub *s = ws->subs; s; s = s->next)
        if (s->state != CL_SUB_DEAD && strcmp(s->id, id) == 0)
            return s;
    return NULL;
}

static void unlink_locked(cl_ws *ws, struct gs_client_sub *sub)
{
    for (struct gs_client_sub **p = &ws->subs; *p; p = &(*p)->next) {
        if (*p == sub) {
            *p = sub->next;
            sub->next = NULL;
            return;
        }
    }
}

static void sub_free(struct gs_client_sub *s)
{
    if (!s)
        return;
    gs_client_rows_free(s->rows);
    gs_free(s->fields);
    gs_free(s);
}

/* Lock the connection sub is on now (it may move between connections: re-read after
 * locking). Returns that connection, locked. */
static cl_ws *lock_sub(struct gs_client_sub *sub)
{
    for (;;) {
        cl_ws *ws = __atomic_load_n(&sub->ws, __ATOMIC_ACQUIRE);
        pthread_mutex_lock(&ws->mu);
        if (__atomic_load_n(&sub->ws, __ATOMIC_ACQUIRE) == ws)
            return ws;
        pthread_mutex_unlock(&ws->mu);
    }
}

static void queue_subscribe_locked(cl_ws *ws, struct gs_client_sub *s)
{
    gs_buf m;
    gs_buf_init(&m);
    gs_buf_printf(&m, "{\"type\":\"subscribe\",\"id\":");
    gs_buf_json_string(&m, s->id, strlen(s->id));
    gs_buf_printf(&m, ",%s", s->fields);
    if (!s->live && s->seq[0]) {
        gs_buf_puts(&m, ",\"sinceSeq\":");
        gs_buf_json_string(&m, s->seq, strlen(s->seq));
    }
    if (!s->live && s->seq[0] && s->epoch[0]) {
        gs_buf_puts(&m, ",\"epoch\":");
        gs_buf_json_string(&m, s->epoch, strlen(s->epoch));
    }
    if (s->live && s->digest[0]) {
        gs_buf_puts(&m, ",\"registryDigest\":");
        gs_buf_json_string(&m, s->digest, strlen(s->digest));
    }
    gs_buf_putc(&m, '}');
    if (!m.oom)
        cl_ws_queue_locked(ws, m.data, m.len);
    gs_buf_free(&m);
}

static void queue_unsubscribe_locked(cl_ws *ws, struct gs_client_sub *s)
{
    if (ws->state != CL_WS_OPEN)
        return;
    gs_buf m;
    gs_buf_init(&m);
    gs_buf_puts(&m, "{\"type\":\"unsubscribe\",\"id\":");
    gs_buf_json_string(&m, s->id, strlen(s->id));
    gs_buf_putc(&m, '}');
    if (!m.oom)
        cl_ws_queue_locked(ws, m.data, m.len);
    gs_buf_free(&m);
}

/* ---------------------------------------------------------------------------------------
 * Callbacks
 * ------------------------------------------------------------------------------------- */

typedef struct ev_arg {
    gs_client_event ev;
    char epoch[128];
    const char *new_seq; /**< a change: becomes the cursor once the callback returned */
} ev_arg;

static void run_event(struct gs_client_sub *s, void *arg)
{
    ev_arg *a = arg;
    a->ev.subscription_id = s->id;
    a->ev.epoch = a->epoch[0] ? a->epoch : NULL;
    s->fn(s->user, &a->ev);
    if (a->new_seq) {
        pthread_mutex_lock(&s->ws->mu);
        if (s->state != CL_SUB_DEAD)
            snprintf(s->seq, sizeof s->seq, "%s", a->new_seq);
        pthread_mutex_unlock(&s->ws->mu);
    }
}

typedef struct live_arg {
    gs_client_live_update u;
} live_arg;

static void run_live(struct gs_client_sub *s, void *arg)
{
    live_arg *a = arg;
    if (!a->u.error)
        a->u.rows = s->rows; /* only the I/O thread (this one) edits them */
    s->lfn(s->user, &a->u);
}

/* Tell a subscription it ended (error), then mark it dead. */
static void end_sub(cl_ws *ws, struct gs_client_sub *s, uint64_t serial, int live,
                    const gs_error *why)
{
    if (live) {
        live_arg a;
        memset(&a, 0, sizeof a);
        a.u.error = why;
        cl_ws_run_callback(ws, s, serial, run_live, &a);
    } else {
        ev_arg a;
        memset(&a, 0, sizeof a);
        a.ev.kind = GS_CLIENT_EVENT_ERROR;
        a.ev.error = why;
        cl_ws_run_callback(ws, s, serial, run_event, &a);
    }
    pthread_mutex_lock(&ws->mu);
    struct gs_client_sub *f = find_locked(ws, s, serial);
    if (f) {
        queue_unsubscribe_locked(ws, f);
        f->state = CL_SUB_DEAD;
    }
    pthread_mutex_unlock(&ws->mu);
}

/* ---------------------------------------------------------------------------------------
 * Server messages (I/O thread)
 * ------------------------------------------------------------------------------------- */

static void finish_wait(cl_ws *ws, struct gs_client_sub *s, uint64_t serial, gs_status st,
                        const gs_error *err)
{
    pthread_mutex_lock(&ws->mu);
    for (struct gs_client_sub *f = ws->subs; f; f = f->next) {
        if (f == s && f->serial == serial) {
            f->wait_st = st;
            if (err)
                gs_error_copy(&f->wait_err, err);
            if (st != GS_OK)
                f->state = CL_SUB_DEAD;
            f->wait_done = 1;
            pthread_cond_broadcast(&ws->cv);
            break;
        }
    }
    pthread_mutex_unlock(&ws->mu);
}

static void on_subscribed(cl_ws *ws, struct gs_client_sub *s, uint64_t serial, json_t *m)
{
    const char *seq = json_string_value(json_object_get(m, "seq"));
    const char *epoch = json_string_value(json_object_get(m, "epoch"));
    int resync = json_is_true(json_object_get(m, "resync"));
    json_t *rows = json_object_get(m, "rows");
    gs_client_rows *decoded = NULL;
    gs_error derr;
    gs_error_init(&derr);
    int bad_rows = 0;
    if (json_is_array(rows) && cl_rows_from_json(rows, &decoded, &derr) != GS_OK)
        bad_rows = 1;
    pthread_mutex_lock(&ws->mu);
    struct gs_client_sub *f = find_locked(ws, s, serial);
    if (!f) {
        pthread_mutex_unlock(&ws->mu);
        gs_client_rows_free(decoded);
        return;
    }
    int was = f->state;
    int live = f->live;
    ev_arg a;
    memset(&a, 0, sizeof a);
    int migrated = f->migrated;
    f->migrated = 0;
    if (!live) {
        int epoch_changed = f->epoch[0] && epoch && strcmp(f->epoch, epoch) != 0;
        if (migrated) {
            /* Moved by a routing change: live from the new endpoint, whose sequence space
             * is its own; what the caller holds may miss changes made meanwhile. */
            snprintf(f->seq, sizeof f->seq, "%s", seq ? seq : "");
            a.ev.kind = GS_CLIENT_EVENT_RESYNC;
            a.ev.migrated = 1;
            a.ev.endpoint = ws->ep->base;
        } else if (resync || epoch_changed) {
            /* The prior cursor is void: adopt the live-from point of the new stream. */
            snprintf(f->seq, sizeof f->seq, "%s", seq ? seq : "");
            a.ev.kind = GS_CLIENT_EVENT_RESYNC;
        } else {
            if (!f->seq[0] && seq)
                snprintf(f->seq, sizeof f->seq, "%s", seq);
            a.ev.kind = was == CL_SUB_RESTORING ? GS_CLIENT_EVENT_RESUMED : 0;
        }
        if (epoch)
            snprintf(f->epoch, sizeof f->epoch, "%s", epoch);
        snprintf(a.epoch, sizeof a.epoch, "%s", f->epoch);
    } else if (!bad_rows) {
        gs_client_rows_free(f->rows);
        f->rows = decoded ? decoded : cl_rows_new();
        decoded = NULL;
    }
    if (!bad_rows)
        f->state = CL_SUB_ACTIVE;
    pthread_mutex_unlock(&ws->mu);
    gs_client_rows_free(decoded);
    if (bad_rows) {
        if (was == CL_SUB_WAITING)
            finish_wait(ws, s, serial, GS_ERROR, &derr);
        else
            end_sub(ws, s, serial, live, &derr);
        return;
    }
    if (live) {
        live_arg la;
        memset(&la, 0, sizeof la);
        cl_ws_run_callback(ws, s, serial, run_live, &la);
    } else if (a.ev.kind) {
        cl_ws_run_callback(ws, s, serial, run_event, &a);
    }
    if (was == CL_SUB_WAITING)
        finish_wait(ws, s, serial, GS_OK, NULL);
}

static void on_sub_error(cl_ws *ws, struct gs_client_sub *s, uint64_t serial, json_t *m)
{
    gs_error e;
    gs_error_init(&e);
    if (cl_error_from_envelope(json_object_get(m, "error"), 0, &e) != 0)
        gs_error_set(&e, 0, "INVALID_RESPONSE", "the server refused the subscription");
    pthread_mutex_lock(&ws->mu);
    struct gs_client_sub *f = find_locked(ws, s, serial);
    if (!f) {
        pthread_mutex_unlock(&ws->mu);
        return;
    }
    int was = f->state;
    int live = f->live;
    int retry = live && !f->digest_retried && strcmp(e.code, "REGISTRY_MISMATCH") == 0 &&
                (was == CL_SUB_WAITING || was == CL_SUB_RESTORING);
    if (retry)
        f->digest_retried = 1;
    pthread_mutex_unlock(&ws->mu);
    if (retry) {
        /* 06-client: re-read the digest once and subscribe again. */
        char digest[96];
        gs_error derr;
        gs_error_init(&derr);
        if (cl_caps_digest(ws->c, ws->ep, 1, digest, sizeof digest, &derr) == GS_OK) {
            pthread_mutex_lock(&ws->mu);
            f = find_locked(ws, s, serial);
            if (f) {
                snprintf(f->digest, sizeof f->digest, "%s", digest);
                queue_subscribe_locked(ws, f);
            }
            pthread_mutex_unlock(&ws->mu);
            return;
        }
    }
    if (was == CL_SUB_WAITING)
        finish_wait(ws, s, serial, GS_ERROR, &e);
    else
        end_sub(ws, s, serial, live, &e);
}

static void decode_row(json_t *obj, gs_client_rows **rows, gs_client_row *view)
{
    memset(view, 0, sizeof *view);
    *rows = NULL;
    gs_error e;
    if (json_is_object(obj) && cl_rows_from_object(obj, rows, &e) == GS_OK)
        *view = gs_client_rows_row(*rows, 0);
}

static void on_change(cl_ws *ws, struct gs_client_sub *s, uint64_t serial, json_t *ev)
{
    if (!json_is_object(ev))
        return;
    ev_arg a;
    memset(&a, 0, sizeof a);
    a.ev.kind = GS_CLIENT_EVENT_CHANGE;
    a.ev.type = json_string_value(json_object_get(ev, "type"));
    a.ev.table = json_string_value(json_object_get(ev, "table"));
    gs_client_rows *row = NULL, *old = NULL;
    decode_row(json_object_get(ev, "row"), &row, &a.ev.row);
    decode_row(json_object_get(ev, "oldRow"), &old, &a.ev.old_row);
    json_t *seq = json_object_get(ev, "seq");
    char seqbuf[24] = "";
    if (json_is_string(seq))
        snprintf(seqbuf, sizeof seqbuf, "%s", json_string_value(seq));
    else if (json_is_integer(seq))
        snprintf(seqbuf, sizeof seqbuf, "%lld", (long long)json_integer_value(seq));
    a.ev.seq = seqbuf;
    a.ev.seq_num = strtoull(seqbuf, NULL, 10);
    a.new_seq = seqbuf[0] ? seqbuf : NULL;
    json_t *ts = json_object_get(ev, "timestamp");
    a.ev.timestamp = json_is_number(ts) ? json_number_value(ts) : 0;
    a.ev.hlc = json_string_value(json_object_get(ev, "hlc"));
    a.ev.origin = json_string_value(json_object_get(ev, "origin"));
    a.ev.tx_id = json_string_value(json_object_get(ev, "txId"));
    a.ev.tx_end = json_is_true(json_object_get(ev, "txEnd"));
    json_t *rid = json_object_get(ev, "rowId");
    if (rid) {
        gs_value v;
        char buf[1] = {0};
        char *store = buf;
        if (cl_value_size(rid) == 0 && cl_value_decode(rid, &v, &store) == 0 &&
            v.type == GS_VALUE_INT) {
            a.ev.has_row_id = 1;
            a.ev.row_id = v.u.i;
        } else if (json_is_string(rid)) {
            a.ev.has_row_id = 1;
            a.ev.row_id = strtoll(json_string_value(rid), NULL, 10);
        }
    }
    pthread_mutex_lock(&ws->mu);
    struct gs_client_sub *f = find_locked(ws, s, serial);
    if (f)
        snprintf(a.epoch, sizeof a.epoch, "%s", f->epoch);
    pthread_mutex_unlock(&ws->mu);
    if (f)
        cl_ws_run_callback(ws, s, serial, run_event, &a);
    gs_client_rows_free(row);
    gs_client_rows_free(old);
}

static void on_live(cl_ws *ws, struct gs_client_sub *s, uint64_t serial, json_t *m)
{
    json_t *ops = json_object_get(m, "ops");
    json_t *rows = json_object_get(m, "rows");
    int revalidating = json_is_true(json_object_get(m, "revalidating"));
    gs_error e;
    gs_error_init(&e);
    gs_status st = GS_OK;
    gs_client_rows *fresh = NULL;
    if (!ops && json_is_array(rows))
        st = cl_rows_from_json(rows, &fresh, &e);
    pthread_mutex_lock(&ws->mu);
    struct gs_client_sub *f = find_locked(ws, s, serial);
    if (!f || !f->live) {
        pthread_mutex_unlock(&ws->mu);
        gs_client_rows_free(fresh);
        return;
    }
    if (!f->rows)
        f->rows = cl_rows_new();
    if (st == GS_OK && json_is_array(ops)) {
        size_t i;
        json_t *op;
        json_array_foreach(ops, i, op)
        {
            const char *kind = json_string_value(json_object_get(op, "op"));
            json_t *idx = json_object_get(op, "index");
            json_int_t index = json_is_integer(idx) ? json_integer_value(idx) : -1;
            if (!kind || index < 0) {
                st = gs_error_set(&e, 0, "INVALID_RESPONSE",
                                  "a live operation lacks its op or index");
            } else if (!strcmp(kind, "insert")) {
                st = cl_rows_insert(f->rows, (size_t)index, json_object_get(op, "row"), &e);
            } else if (!strcmp(kind, "update")) {
                st = cl_rows_update(f->rows, (size_t)index, json_object_get(op, "row"), &e);
            } else if (!strcmp(kind, "delete")) {
                if (cl_rows_delete(f->rows, (size_t)index) != GS_OK)
                    st = gs_error_set(&e, 0, "INVALID_RESPONSE",
                                      "live delete at index %lld outside the %zu rows held",
                                      (long long)index, gs_client_rows_count(f->rows));
            } else {
                st = gs_error_set(&e, 0, "INVALID_RESPONSE", "unknown live operation '%s'", kind);
            }
            if (st != GS_OK)
                break;
        }
    } else if (st == GS_OK && fresh) {
        gs_client_rows_free(f->rows);
        f->rows = fresh;
        fresh = NULL;
    }
    pthread_mutex_unlock(&ws->mu);
    gs_client_rows_free(fresh);
    if (st != GS_OK) {
        end_sub(ws, s, serial, 1, &e);
        return;
    }
    live_arg a;
    memset(&a, 0, sizeof a);
    a.u.revalidating = revalidating && !ops && !rows;
    cl_ws_run_callback(ws, s, serial, run_live, &a);
}

void cl_ws_sub_message(cl_ws *ws, const char *type, const char *id, json_t *m)
{
    pthread_mutex_lock(&ws->mu);
    struct gs_client_sub *s = find_id_locked(ws, id);
    uint64_t serial = s ? s->serial : 0;
    pthread_mutex_unlock(&ws->mu);
    if (!s)
        return;
    if (!strcmp(type, "subscribed")) {
        on_subscribed(ws, s, serial, m);
    } else if (!strcmp(type, "error")) {
        on_sub_error(ws, s, serial, m);
    } else if (!strcmp(type, "change")) {
        on_change(ws, s, serial, json_object_get(m, "event"));
    } else if (!strcmp(type, "changes")) {
        size_t i;
        json_t *ev;
        json_array_foreach(json_object_get(m, "events"), i, ev)
        {
            on_change(ws, s, serial, ev);
        }
    } else if (!strcmp(type, "live")) {
        on_live(ws, s, serial, m);
    }
}

void cl_ws_subs_on_open_locked(cl_ws *ws)
{
    for (struct gs_client_sub *s = ws->subs; s; s = s->next) {
        if (s->state == CL_SUB_DOWN) {
            s->state = CL_SUB_RESTORING;
            s->digest_retried = 0;
            queue_subscribe_locked(ws, s);
        }
    }
}

int cl_ws_subs_down_locked(cl_ws *ws)
{
    for (struct gs_client_sub *s = ws->subs; s; s = s->next)
        if (s->state == CL_SUB_DOWN)
            return 1;
    return 0;
}

int cl_ws_subs_waiting_locked(cl_ws *ws)
{
    for (struct gs_client_sub *s = ws->subs; s; s = s->next)
        if (s->state == CL_SUB_WAITING)
            return 1;
    return 0;
}

typedef struct snap {
    struct gs_client_sub *s;
    uint64_t serial;
    int state;
    int live;
} snap;

void cl_ws_subs_on_close(cl_ws *ws, const gs_error *why, int refused)
{
    pthread_mutex_lock(&ws->mu);
    size_t n = 0;
    for (struct gs_client_sub *s = ws->subs; s; s = s->next)
        n++;
    snap *list = n ? gs_malloc(n * sizeof *list) : NULL;
    size_t k = 0;
    for (struct gs_client_sub *s = ws->subs; s && list; s = s->next)
        list[k++] = (snap){s, s->serial, s->state, s->live};
    int reconnect = !refused && ws->c->cfg.auto_reconnect;
    pthread_mutex_unlock(&ws->mu);
    for (size_t i = 0; i < k; i++) {
        snap *x = &list[i];
        if (x->state == CL_SUB_WAITING) {
            finish_wait(ws, x->s, x->serial, GS_ERROR, why);
        } else if (x->state == CL_SUB_ACTIVE || x->state == CL_SUB_RESTORING ||
                   (x->state == CL_SUB_DOWN && !reconnect)) {
            if (!reconnect) {
                end_sub(ws, x->s, x->serial, x->live, why);
                continue;
            }
            pthread_mutex_lock(&ws->mu);
            struct gs_client_sub *f = find_locked(ws, x->s, x->serial);
            if (f)
                f->state = CL_SUB_DOWN;
            pthread_mutex_unlock(&ws->mu);
            if (!f || x->state == CL_SUB_RESTORING)
                continue; /* told when the connection first dropped */
            if (x->live) {
                live_arg a;
                memset(&a, 0, sizeof a);
                a.u.revalidating = 1;
                cl_ws_run_callback(ws, x->s, x->serial, run_live, &a);
            } else {
                ev_arg a;
                memset(&a, 0, sizeof a);
                a.ev.kind = GS_CLIENT_EVENT_DISCONNECTED;
                a.ev.error = why;
                cl_ws_run_callback(ws, x->s, x->serial, run_event, &a);
            }
        }
    }
    gs_free(list);
}

void cl_ws_subs_free_all(cl_ws *ws)
{
    while (ws->subs) {
        struct gs_client_sub *s = ws->subs;
        ws->subs = s->next;
        sub_free(s);
    }
}

/* ---------------------------------------------------------------------------------------
 * Routing changes (coordinator mode; the I/O thread of the connection the subscriptions
 * leave, so none of their callbacks runs meanwhile)
 * ------------------------------------------------------------------------------------- */

/* A subscription a routing change may move: confirmed once (a caller still waiting in
 * subscribe keeps its own connection, and fails or succeeds there). */
static int movable(int state)
{
    return state == CL_SUB_ACTIVE || state == CL_SUB_DOWN || state == CL_SUB_RESTORING;
}

static void lock_two(cl_ws *a, cl_ws *b)
{
    if ((uintptr_t)a < (uintptr_t)b) {
        pthread_mutex_lock(&a->mu);
        pthread_mutex_lock(&b->mu);
    } else {
        pthread_mutex_lock(&b->mu);
        pthread_mutex_lock(&a->mu);
    }
}

/* Move s (serial on from) to `to`: unsubscribe on from, subscribe live on to (now, or when
 * it connects). 0 moved; -1 gone or not movable (nothing done); -2 `to` cannot take it
 * (why filled). */
static int move_sub(cl_ws *from, cl_ws *to, struct gs_client_sub *s, uint64_t serial,
                    const char *digest, gs_error *why)
{
    lock_two(from, to);
    int rc = 0;
    struct gs_client_sub *f = find_locked(from, s, serial);
    if (!f || !movable(f->state) || from->stopping || to->stopping) {
        rc = -1; /* gone, or the client is closing (no callback runs then) */
    } else if (to->state == CL_WS_REFUSED) {
        gs_error_copy(why, &to->refused);
        rc = -2;
    } else if (find_id_locked(to, f->id)) {
        gs_error_set(why, 0, "DUPLICATE_SUBSCRIPTION",
                     "routing moved subscription '%s' to %s, which already holds one with "
                     "that id",
                     f->id, to->ep->base);
        rc = -2;
    }
    if (rc != 0) {
        pthread_mutex_unlock(&from->mu);
        pthread_mutex_unlock(&to->mu);
        return rc;
    }
    queue_unsubscribe_locked(from, f); /* the old node may still be up (drained) */
    unlink_locked(from, f);
    __atomic_store_n(&f->ws, to, __ATOMIC_RELEASE);
    f->serial = ++to->next_serial;
    /* 06-client: a migrated subscription restarts live; the cursor belonged to the old
     * node's sequence space. */
    f->seq[0] = '\0';
    f->epoch[0] = '\0';
    f->migrated = 1;
    f->digest_retried = 0;
    if (f->live && digest && digest[0])
        snprintf(f->digest, sizeof f->digest, "%s", digest);
    f->next = to->subs;
    to->subs = f;
    if (to->state == CL_WS_OPEN) {
        f->state = CL_SUB_RESTORING;
        queue_subscribe_locked(to, f);
    } else {
        f->state = CL_SUB_DOWN; /* subscribed by cl_ws_subs_on_open_locked */
        to->want_connect = 1;
        to->reconnect_at = 0;
        cl_ws_wake(to);
    }
    pthread_mutex_unlock(&from->mu);
    pthread_mutex_unlock(&to->mu);
    return 0;
}

void cl_ws_subs_reroute(cl_ws *ws, int force)
{
    gs_client_db *db = ws->db;
    unsigned gen = atomic_load(&db->route_gen);
    if (!force && gen == ws->route_seen)
        return;
    ws->route_seen = gen;
    if (ws->c->mode != CL_COORDINATOR)
        return;
    pthread_mutex_lock(&ws->mu);
    size_t n = 0;
    for (struct gs_client_sub *s = ws->subs; s; s = s->next)
        n += movable(s->state);
    int stopping = ws->stopping;
    pthread_mutex_unlock(&ws->mu);
    if (!n || stopping)
        return;
    cl_endpoint *ep = NULL;
    gs_error err;
    gs_error_init(&err);
    int decision = cl_route_reroute(db, ws->ep, &ep, &err);
    if (decision == CL_REROUTE_KEEP)
        return;
    cl_ws *to = NULL;
    if (decision == CL_REROUTE_MOVE && !(to = cl_db_ws(db, ep, &err)))
        decision = CL_REROUTE_FAIL;
    if (to == ws)
        return; /* one connection per (db, endpoint): cannot happen, but never lock it twice */
    if (atomic_load(&ws->c->closing))
        return; /* gs_client_close cancels them without a callback */
    char digest[96] = "";
    if (to) {
        /* a live query echoes the new node's registry digest (a mismatch is retried once) */
        gs_error derr;
        gs_error_init(&derr);
        pthread_mutex_lock(&ws->mu);
        int any_live = 0;
        for (struct gs_client_sub *s = ws->subs; s; s = s->next)
            any_live |= s->live && movable(s->state);
        pthread_mutex_unlock(&ws->mu);
        if (any_live && cl_caps_digest(ws->c, ep, 0, digest, sizeof digest, &derr) != GS_OK)
            digest[0] = '\0';
    }
    pthread_mutex_lock(&ws->mu);
    snap *list = gs_malloc((n + 1) * sizeof *list);
    size_t k = 0;
    for (struct gs_client_sub *s = ws->subs; s && list && k < n; s = s->next)
        if (movable(s->state))
            list[k++] = (snap){s, s->serial, s->state, s->live};
    pthread_mutex_unlock(&ws->mu);
    for (size_t i = 0; i < k; i++) {
        snap *x = &list[i];
        if (!to) {
            end_sub(ws, x->s, x->serial, x->live, &err);
            continue;
        }
        if (x->live && x->state == CL_SUB_ACTIVE) {
            /* the rows are re-read on the new endpoint */
            live_arg a;
            memset(&a, 0, sizeof a);
            a.u.revalidating = 1;
            if (cl_ws_run_callback(ws, x->s, x->serial, run_live, &a) != 0)
                continue;
        }
        gs_error why;
        gs_error_init(&why);
        if (move_sub(ws, to, x->s, x->serial, digest, &why) == -2)
            end_sub(ws, x->s, x->serial, x->live, &why);
    }
    gs_free(list);
}

/* ---------------------------------------------------------------------------------------
 * Public
 * ------------------------------------------------------------------------------------- */

void gs_client_sub_opts_init(gs_client_sub_opts *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->timeout_ms = -1;
}

/* Route a subscription like a read and find its connection. */
static cl_ws *sub_ws(gs_client_db *db, const char *what, gs_error *err)
{
    if (!db)
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "no database handle"), NULL;
    if (!db->c->use_ws) {
        gs_error_set(err, 0, "TRANSPORT_ERROR",
                     "%s needs the WebSocket transport; this client uses HTTP", what);
        return NULL;
    }
    if (cl_on_library_thread()) {
        gs_error_set(err, 0, "INVALID_ARGUMENT",
                     "%s waits for the server and cannot be opened from a client callback", what);
        return NULL;
    }
    cl_endpoint *ep;
    if (cl_route_pick(db, 0, NULL, &ep, err) != GS_OK)
        return NULL;
    return cl_db_ws(db, ep, err);
}

static struct gs_client_sub *sub_new(cl_ws *ws, size_t size, const char *id)
{
    struct gs_client_sub *s = gs_calloc(1, size);
    if (!s)
        return NULL;
    s->ws = ws;
    if (id && *id)
        snprintf(s->id, sizeof s->id, "%s", id);
    else
        snprintf(s->id, sizeof s->id, "c_%llu_%lld",
                 (unsigned long long)(atomic_fetch_add(&ws->counter, 1) + 1),
                 (long long)cl_now_ms());
    gs_error_init(&s->wait_err);
    return s;
}

/* Put s on the list, send its subscribe, wait for the answer. On failure s is freed. */
static gs_status start_and_wait(cl_ws *ws, struct gs_client_sub *s, int64_t timeout_ms,
                                gs_error *err)
{
    pthread_mutex_lock(&ws->mu);
    if (ws->stopping || ws->state == CL_WS_REFUSED) {
        if (ws->state == CL_WS_REFUSED)
            gs_error_copy(err, &ws->refused);
        else
            gs_error_set(err, 0, "CONNECTION_ERROR", "the client is closing");
        pthread_mutex_unlock(&ws->mu);
        sub_free(s);
        return GS_ERROR;
    }
    for (struct gs_client_sub *o = ws->subs; o; o = o->next) {
        if (o->state != CL_SUB_DEAD && strcmp(o->id, s->id) == 0) {
            pthread_mutex_unlock(&ws->mu);
            sub_free(s);
            return gs_error_set(err, 0, "DUPLICATE_SUBSCRIPTION",
                                "a subscription with id '%s' is already open", o->id);
        }
    }
    s->serial = ++ws->next_serial;
    s->state = CL_SUB_WAITING;
    s->next = ws->subs;
    ws->subs = s;
    queue_subscribe_locked(ws, s);
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    if (timeout_ms > 0) {
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
    }
    while (!s->wait_done) {
        if (timeout_ms > 0) {
            if (pthread_cond_timedwait(&ws->cv, &ws->mu, &dl) != 0 && !s->wait_done)
                break;
        } else {
            pthread_cond_wait(&ws->cv, &ws->mu);
        }
    }
    if (s->wait_done && s->wait_st == GS_OK) {
        pthread_mutex_unlock(&ws->mu);
        return GS_OK;
    }
    if (!s->wait_done) {
        gs_error_set(err, 0, "TIMEOUT", "no answer to the subscription from %s within %lld ms",
                     ws->ep->base, (long long)timeout_ms);
        queue_unsubscribe_locked(ws, s);
    } else {
        gs_error_copy(err, &s->wait_err);
    }
    s->state = CL_SUB_DEAD;
    unlink_locked(ws, s);
    while (ws->cb_running == s)
        pthread_cond_wait(&ws->cv, &ws->mu);
    pthread_mutex_unlock(&ws->mu);
    sub_free(s);
    return GS_ERROR;
}

gs_status gs_client_subscribe(gs_client_db *db, const char *table, const gs_client_params *filter,
                              const gs_client_sub_opts *opts, gs_client_event_fn fn, void *user,
                              gs_client_sub **out, gs_error *err)
{
    gs_error_init(err);
    if (out)
        *out = NULL;
    if (!table || !table[0] || !fn || !out)
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "gs_client_subscribe needs a table, a callback and an out handle");
    if (filter && filter->count && !filter->names)
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "a subscription filter is column = value pairs: build it with "
                            "gs_client_named()");
    if (opts && opts->struct_size && opts->struct_size < sizeof *opts)
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "gs_client_sub_opts.struct_size is too small: use "
                            "gs_client_sub_opts_init()");
    cl_ws *ws = sub_ws(db, "a subscription", err);
    if (!ws)
        return GS_ERROR;
    gs_buf f;
    gs_buf_init(&f);
    gs_buf_puts(&f, "\"table\":");
    gs_buf_json_string(&f, table, strlen(table));
    if (filter && (filter->count || filter->names)) {
        gs_buf_puts(&f, ",\"filter\":");
        if (cl_params_encode(&f, filter, err) != GS_OK) {
            gs_buf_free(&f);
            return GS_ERROR;
        }
    }
    struct gs_client_sub *s = sub_new(ws, sizeof *s, opts ? opts->id : NULL);
    if (!s || f.oom) {
        gs_buf_free(&f);
        gs_free(s);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    s->fields = gs_buf_take(&f, NULL);
    s->fn = fn;
    s->user = user;
    if (opts && opts->since_seq)
        snprintf(s->seq, sizeof s->seq, "%s", opts->since_seq);
    if (opts && opts->epoch)
        snprintf(s->epoch, sizeof s->epoch, "%s", opts->epoch);
    int64_t timeout =
        opts && opts->timeout_ms >= 0 ? opts->timeout_ms : db->c->cfg.request_timeout_ms;
    if (start_and_wait(ws, s, timeout, err) != GS_OK)
        return GS_ERROR;
    *out = s;
    return GS_OK;
}

void gs_client_sub_cursor(gs_client_sub *sub, char *seq, size_t seq_size, char *epoch,
                          size_t epoch_size)
{
    if (!sub)
        return;
    cl_ws *ws = lock_sub(sub);
    if (seq && seq_size)
        snprintf(seq, seq_size, "%s", sub->seq);
    if (epoch && epoch_size)
        snprintf(epoch, epoch_size, "%s", sub->epoch);
    pthread_mutex_unlock(&ws->mu);
}

void gs_client_unsubscribe(gs_client_sub *sub)
{
    if (!sub)
        return;
    cl_ws *ws = lock_sub(sub);
    if (sub->state != CL_SUB_DEAD)
        queue_unsubscribe_locked(ws, sub);
    sub->state = CL_SUB_DEAD;
    unlink_locked(ws, sub);
    if (ws->cb_running == sub && cl_ws_on_io_thread(ws)) {
        sub->free_after_cb = 1; /* freed when its callback returns */
        pthread_mutex_unlock(&ws->mu);
        return;
    }
    while (ws->cb_running == sub)
        pthread_cond_wait(&ws->cv, &ws->mu);
    pthread_mutex_unlock(&ws->mu);
    sub_free(sub);
}

gs_status gs_client_live_open(gs_client_db *db, const char *name, const gs_client_params *args,
                              gs_client_live_fn fn, void *user, gs_client_live **out, gs_error *err)
{
    gs_error_init(err);
    if (out)
        *out = NULL;
    if (!name || !name[0] || !fn || !out)
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "gs_client_live_open needs an operation name, a callback and an "
                            "out handle");
    if (args && args->count && !args->names)
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "a registered read's args are named: build them with "
                            "gs_client_named()");
    cl_ws *ws = sub_ws(db, "a live query", err);
    if (!ws)
        return GS_ERROR;
    char digest[96] = "";
    if (cl_caps_digest(db->c, ws->ep, 0, digest, sizeof digest, err) != GS_OK)
        return GS_ERROR;
    gs_buf f;
    gs_buf_init(&f);
    gs_buf_puts(&f, "\"name\":");
    gs_buf_json_string(&f, name, strlen(name));
    if (args && (args->count || args->names)) {
        gs_buf_puts(&f, ",\"args\":");
        if (cl_params_encode(&f, args, err) != GS_OK) {
            gs_buf_free(&f);
            return GS_ERROR;
        }
    }
    struct gs_client_sub *s = sub_new(ws, sizeof(struct gs_client_live), NULL);
    if (!s || f.oom) {
        gs_buf_free(&f);
        gs_free(s);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    s->live = 1;
    s->fields = gs_buf_take(&f, NULL);
    s->lfn = fn;
    s->user = user;
    snprintf(s->digest, sizeof s->digest, "%s", digest);
    if (start_and_wait(ws, s, db->c->cfg.request_timeout_ms, err) != GS_OK)
        return GS_ERROR;
    *out = (gs_client_live *)s;
    return GS_OK;
}

gs_client_rows *gs_client_live_rows(gs_client_live *lq)
{
    if (!lq)
        return NULL;
    struct gs_client_sub *s = &lq->sub;
    cl_ws *ws = lock_sub(s);
    gs_client_rows *copy = s->rows ? cl_rows_copy(s->rows) : cl_rows_new();
    pthread_mutex_unlock(&ws->mu);
    return copy;
}

void gs_client_live_close(gs_client_live *lq)
{
    if (lq)
        gs_client_unsubscribe(&lq->sub);
}
