/*
 * Write forwarding (spec 03 "Write Forwarding", spec 04 Forward): a replica sends execute and
 * batch writes to the primary as a ForwardRequest and answers its caller with the primary's
 * results; the primary runs a forwarded request as one transaction (a single statement as an
 * execute, so safe DDL replicates as usual) and answers with a ForwardResponse carrying the
 * same call id. An error travels as "CODE: message".
 */
#include "engine_internal.h"

#include "base/alloc.h"
#include "base/log.h"
#include "repl/codec.h"
#include "repl/ddl.h"
#include "sqlite/value.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- values: one JSON value <-> one gs_rval, through a one-column row ---- */

static gs_status rval_from_json(const json_t *v, gs_rval *out, gs_error *err)
{
    json_t *obj = json_object();
    if (!obj || json_object_set(obj, "v", (json_t *)v) != 0) {
        json_decref(obj);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    gs_rrow *r = NULL;
    gs_status st = gs_rrow_from_json(obj, &r, err);
    json_decref(obj);
    if (st != GS_OK)
        return GS_ERROR;
    memset(out, 0, sizeof *out);
    if (r && r->n == 1) {
        *out = r->vals[0];
        memset(&r->vals[0], 0, sizeof r->vals[0]);
    }
    gs_rrow_free(r);
    return GS_OK;
}

static json_t *rval_to_json(const gs_rval *v)
{
    gs_rrow *r = gs_rrow_new();
    if (!r)
        return NULL;
    gs_error err;
    json_t *out = NULL;
    if (gs_rrow_add_copy(r, "v", v, &err) == GS_OK) {
        json_t *obj = gs_rrow_to_json(r);
        if (obj) {
            out = json_incref(json_object_get(obj, "v"));
            json_decref(obj);
        }
    }
    gs_rrow_free(r);
    return out;
}

static gs_status statement_from(gs_fwd_statement *s, const char *sql, const json_t *params,
                                gs_error *err)
{
    memset(s, 0, sizeof *s);
    if (!(s->sql = gs_strdup(sql)))
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    if (!params || json_is_null(params))
        return GS_OK;
    if (json_is_object(params))
        return gs_rrow_from_json(params, &s->named, err);
    if (!json_is_array(params))
        return gs_error_set(err, 0, "INVALID_REQUEST", "params must be an array or an object");
    size_t n = json_array_size(params);
    s->positional = gs_calloc(n ? n : 1, sizeof *s->positional);
    if (!s->positional)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (rval_from_json(json_array_get(params, i), &s->positional[i], err) != GS_OK)
            return GS_ERROR;
        s->npositional = i + 1;
    }
    return GS_OK;
}

static json_t *statement_params(const gs_fwd_statement *s)
{
    if (s->named)
        return gs_rrow_to_json(s->named); /* named params win (spec 04) */
    if (!s->npositional)
        return NULL;
    json_t *a = json_array();
    for (size_t i = 0; a && i < s->npositional; i++) {
        json_t *v = rval_to_json(&s->positional[i]);
        if (!v || json_array_append_new(a, v) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* ---- replica side ---- */

gs_status gs_repl_forward(gs_repl_engine *e, const gs_db_request *req, gs_error *err)
{
    if (req->kind != GS_DB_EXECUTE && req->kind != GS_DB_BATCH)
        return gs_error_set(err, 0, "TOPOLOGY_ERROR",
                            "only execute and batch writes are forwarded to the primary");
    char primary[128] = "";
    uint64_t call_id;
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->npeers; i++)
        if (e->peers[i].is_primary && e->peers[i].connected)
            snprintf(primary, sizeof primary, "%s", e->peers[i].id);
    call_id = e->next_call_id++;
    pthread_mutex_unlock(&e->mu);
    if (!primary[0] && e->auth) {
        /* coordinator mode: the recorded primary is unreachable from here (perhaps failing
         * over); the details name it so a client refreshes its routing and retries */
        gs_error_set(err, 0, "STALE_PRIMARY",
                     "this node cannot forward the write: the primary is not connected to it "
                     "(it may be failing over); send the write to the current primary");
        gs_authority_error_details(e->auth, err);
        return GS_ERROR;
    }
    if (!primary[0])
        return gs_error_set(err, 0, "TOPOLOGY_ERROR",
                            "this replica cannot forward the write: the primary is not "
                            "connected; retry later or send it to the primary");

    gs_fwd_request fr;
    memset(&fr, 0, sizeof fr);
    char rid[160];
    snprintf(rid, sizeof rid, "%s-%llu", e->node_id, (unsigned long long)call_id);
    fr.request_id = rid;
    int64_t term = gs_repl_coord_term(e);
    if (term > 0) {
        fr.group_id = e->group_id;
        fr.has_term = 1;
        fr.primary_term = term;
    }
    size_t n = req->kind == GS_DB_BATCH ? json_array_size(req->params_batch) : 1;
    gs_fwd_statement *st = gs_calloc(n ? n : 1, sizeof *st);
    if (!st)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    fr.statements = st;
    gs_status rc = GS_OK;
    for (size_t i = 0; i < n && rc == GS_OK; i++) {
        const json_t *params =
            req->kind == GS_DB_BATCH ? json_array_get(req->params_batch, i) : req->stmts[0].params;
        rc = statement_from(&st[i], req->stmts[0].sql, params, err);
        fr.nstatements = i + 1;
    }
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (rc == GS_OK)
        rc = gs_fwd_request_encode(&fr, &bytes, &len, err);
    fr.request_id = NULL;
    fr.group_id = NULL; /* borrowed */
    gs_fwd_request_free(&fr);
    if (rc != GS_OK) {
        gs_free(bytes);
        return GS_ERROR;
    }
    gs_fwd_wait *w = gs_calloc(1, sizeof *w);
    if (!w || !(w->primary = gs_strdup(primary))) {
        gs_free(w);
        gs_free(bytes);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    w->call_id = call_id;
    w->deadline_ms = gs_repl_now_ms() + e->o.forward_deadline_ms;
    w->batch = req->kind == GS_DB_BATCH;
    w->done = req->done;
    w->user = req->user;
    pthread_mutex_lock(&e->mu);
    w->next = e->fwds;
    e->fwds = w;
    pthread_mutex_unlock(&e->mu);
    gs_error_init(err);
    rc = e->o.transport->send(e->o.transport_instance, primary, GS_REPL_MSG_FORWARD_REQUEST,
                              call_id, bytes, len, err);
    gs_free(bytes);
    if (rc != GS_OK) {
        /* take it back unless an answer already raced in (it cannot: the send failed) */
        pthread_mutex_lock(&e->mu);
        for (gs_fwd_wait **pp = &e->fwds; *pp; pp = &(*pp)->next)
            if (*pp == w) {
                *pp = w->next;
                break;
            }
        pthread_mutex_unlock(&e->mu);
        gs_free(w->primary);
        gs_free(w);
        char why[sizeof err->message];
        snprintf(why, sizeof why, "%s", err->code[0] ? err->message : "the transport refused it");
        return gs_error_set(err, 0, "TOPOLOGY_ERROR",
                            "the write could not be forwarded to the primary %s: %.300s", primary,
                            why);
    }
    pthread_cond_signal(&e->timer_cond);
    return GS_OK;
}

static gs_fwd_wait *take_wait(gs_repl_engine *e, uint64_t call_id)
{
    pthread_mutex_lock(&e->mu);
    gs_fwd_wait *w = NULL;
    for (gs_fwd_wait **pp = &e->fwds; *pp; pp = &(*pp)->next)
        if ((*pp)->call_id == call_id) {
            w = *pp;
            *pp = w->next;
            break;
        }
    pthread_mutex_unlock(&e->mu);
    return w;
}

static void answer_error(gs_fwd_wait *w, const gs_error *err)
{
    gs_db_reply r;
    memset(&r, 0, sizeof r);
    r.status = GS_ERROR;
    gs_error_copy(&r.err, err);
    w->done(w->user, &r);
    gs_free(w->primary);
    gs_free(w);
}

/* "CODE: message" -> err; text without a code prefix is a REPLICATION_ERROR. */
static void parse_remote_error(const char *text, gs_error *err)
{
    const char *colon = strstr(text, ": ");
    int coded = colon && colon > text && colon - text < 64;
    for (const char *p = text; coded && p < colon; p++)
        coded = isupper((unsigned char)*p) || *p == '_';
    if (coded) {
        char code[64];
        snprintf(code, sizeof code, "%.*s", (int)(colon - text), text);
        gs_error_set(err, 0, code, "%s", colon + 2);
    } else
        gs_error_set(err, 0, "REPLICATION_ERROR", "the primary refused the write: %s", text);
}

void gs_repl_forward_response_in(gs_repl_engine *e, const char *from, uint64_t call_id,
                                 const uint8_t *bytes, size_t len)
{
    gs_fwd_wait *w = take_wait(e, call_id);
    if (!w) {
        gs_log(GS_LOG_DEBUG, "repl", "forward answer %llu from %s came after its deadline",
               (unsigned long long)call_id, from);
        return;
    }
    gs_fwd_response resp;
    gs_error err;
    gs_error_init(&err);
    if (gs_fwd_response_decode(bytes, len, &resp, &err) != GS_OK) {
        answer_error(w, &err);
        return;
    }
    if (resp.error && resp.error[0]) {
        parse_remote_error(resp.error, &err);
        gs_fwd_response_free(&resp);
        answer_error(w, &err);
        return;
    }
    gs_buf b;
    gs_buf_init(&b);
    if (w->batch)
        gs_buf_putc(&b, '[');
    for (size_t i = 0; i < resp.nresults && (w->batch || i < 1); i++) {
        if (i)
            gs_buf_putc(&b, ',');
        gs_buf_printf(&b, "{\"changes\":%d,\"lastInsertRowId\":", (int)resp.results[i].changes);
        gs_value_append_rowid(&b, resp.results[i].last_insert_row_id);
        gs_buf_putc(&b, '}');
    }
    if (w->batch)
        gs_buf_putc(&b, ']');
    else if (resp.nresults == 0)
        gs_buf_puts(&b, "{\"changes\":0,\"lastInsertRowId\":0}");
    gs_fwd_response_free(&resp);
    gs_db_reply r;
    memset(&r, 0, sizeof r);
    r.status = GS_OK;
    r.json = b.data ? b.data : "";
    r.json_len = b.len;
    w->done(w->user, &r);
    gs_buf_free(&b);
    gs_free(w->primary);
    gs_free(w);
}

int64_t gs_repl_forward_expire(gs_repl_engine *e, int64_t now)
{
    gs_fwd_wait *expired = NULL;
    int64_t next = 0;
    pthread_mutex_lock(&e->mu);
    gs_fwd_wait **pp = &e->fwds;
    while (*pp) {
        gs_fwd_wait *w = *pp;
        if (now >= w->deadline_ms) {
            *pp = w->next;
            w->next = expired;
            expired = w;
            continue;
        }
        if (!next || w->deadline_ms < next)
            next = w->deadline_ms;
        pp = &w->next;
    }
    pthread_mutex_unlock(&e->mu);
    while (expired) {
        gs_fwd_wait *w = expired;
        expired = w->next;
        gs_error err;
        gs_error_init(&err);
        gs_error_set(&err, 0, "TOPOLOGY_ERROR",
                     "the primary %s did not answer the forwarded write within "
                     "forwardDeadlineMs; it may or may not have been applied",
                     w->primary);
        answer_error(w, &err);
    }
    return next;
}

void gs_repl_forward_fail_all(gs_repl_engine *e, const char *code, const char *msg)
{
    pthread_mutex_lock(&e->mu);
    gs_fwd_wait *w = e->fwds;
    e->fwds = NULL;
    pthread_mutex_unlock(&e->mu);
    while (w) {
        gs_fwd_wait *n = w->next;
        gs_error err;
        gs_error_init(&err);
        gs_error_set(&err, 0, code, "%s", msg);
        answer_error(w, &err);
        w = n;
    }
}

/* ---- primary side ---- */

typedef struct fwd_run {
    gs_repl_engine *e;
    char *to;
    char *request_id;
    uint64_t call_id;
    gs_fwd_result *res; /* coordinator mode: the answer, held until the write concern is met */
    size_t nres;
} fwd_run;

static void fwd_run_free(fwd_run *r)
{
    gs_free(r->res);
    gs_free(r->to);
    gs_free(r->request_id);
    gs_free(r);
}

static void respond(gs_repl_engine *e, const char *to, uint64_t call_id, const char *request_id,
                    const gs_fwd_result *results, size_t n, const gs_error *failure)
{
    gs_fwd_response resp;
    memset(&resp, 0, sizeof resp);
    resp.request_id = (char *)request_id;
    resp.results = (gs_fwd_result *)results;
    resp.nresults = n;
    char text[700];
    if (failure) {
        snprintf(text, sizeof text, "%s: %s", failure->code, failure->message);
        resp.error = text;
    }
    uint8_t *bytes = NULL;
    size_t len = 0;
    gs_error err;
    gs_error_init(&err);
    if (gs_fwd_response_encode(&resp, &bytes, &len, &err) == GS_OK)
        e->o.transport->send(e->o.transport_instance, to, GS_REPL_MSG_FORWARD_RESPONSE, call_id,
                             bytes, len, &err);
    if (err.code[0])
        gs_log(GS_LOG_WARN, "repl", "database '%s': answering a forwarded write from %s: %s",
               gs_db_id(e->db), to, err.message);
    gs_free(bytes);
}

static int64_t json_rowid(const json_t *v)
{
    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    if (json_is_string(v))
        return strtoll(json_string_value(v), NULL, 10);
    return 0;
}

/* Coordinator mode: a forwarded write is answered once it meets the group's default write
 * concern (majority), like a write sent to the primary directly. */
static void fwd_concern_met(void *user, gs_status st, const gs_error *err)
{
    fwd_run *r = user;
    if (st == GS_OK)
        respond(r->e, r->to, r->call_id, r->request_id, r->res, r->nres, NULL);
    else
        respond(r->e, r->to, r->call_id, r->request_id, NULL, 0, err);
    fwd_run_free(r);
}

static void fwd_done(void *user, const gs_db_reply *reply)
{
    fwd_run *r = user;
    if (reply->status != GS_OK) {
        respond(r->e, r->to, r->call_id, r->request_id, NULL, 0, &reply->err);
    } else {
        json_t *doc = json_loadb(reply->json, reply->json_len, 0, NULL);
        size_t n = json_is_array(doc) ? json_array_size(doc) : 1;
        gs_fwd_result *res = gs_calloc(n ? n : 1, sizeof *res);
        if (doc && res) {
            for (size_t i = 0; i < n; i++) {
                const json_t *o = json_is_array(doc) ? json_array_get(doc, i) : doc;
                res[i].changes = (int32_t)json_integer_value(json_object_get(o, "changes"));
                res[i].last_insert_row_id = json_rowid(json_object_get(o, "lastInsertRowId"));
            }
            if (r->e->auth) {
                r->res = res;
                r->nres = n;
                json_decref(doc);
                gs_repl_await_concern(r->e, NULL, 0, fwd_concern_met, r);
                return;
            }
            respond(r->e, r->to, r->call_id, r->request_id, res, n, NULL);
        } else {
            gs_error err;
            gs_error_init(&err);
            gs_error_set(&err, 0, "INTERNAL_ERROR", "the result of a forwarded write was lost");
            respond(r->e, r->to, r->call_id, r->request_id, NULL, 0, &err);
        }
        gs_free(res);
        json_decref(doc);
    }
    fwd_run_free(r);
}

void gs_repl_forward_request_in(gs_repl_engine *e, const char *from, uint64_t call_id,
                                const uint8_t *bytes, size_t len)
{
    gs_fwd_request fr;
    gs_error err;
    gs_error_init(&err);
    if (gs_fwd_request_decode(bytes, len, &fr, &err) != GS_OK) {
        respond(e, from, call_id, "", NULL, 0, &err);
        return;
    }
    gs_status st = GS_OK;
    pthread_mutex_lock(&e->mu);
    gs_peer *p = gs_repl_peer_find(e, from);
    int known = p != NULL;
    pthread_mutex_unlock(&e->mu);
    int64_t term = 0;
    if (e->auth) {
        /* the sender must forward under the current term to the node that can prove it is
         * the primary of that term */
        if (gs_authority_can_write(e->auth, &term, &err) != GS_OK)
            st = GS_ERROR;
        else if (!fr.has_term || fr.primary_term != term)
            st = gs_error_set(&err, 0, "STALE_PRIMARY",
                              "forwarded write at term %lld refused: the current term is %lld",
                              (long long)(fr.has_term ? fr.primary_term : 0), (long long)term);
        if (st != GS_OK && !err.details[0])
            gs_authority_error_details(e->auth, &err);
    } else if (!e->is_primary)
        st = gs_error_set(&err, 0, "TOPOLOGY_ERROR",
                          "node %s is not the primary; forward writes to the primary", e->node_id);
    if (st != GS_OK)
        ;
    else if (!known)
        st = gs_error_set(&err, 0, "TOPOLOGY_ERROR",
                          "forwarded write from '%s', which is not a configured peer", from);
    else if (fr.nstatements == 0)
        st = gs_error_set(&err, 0, "INVALID_REQUEST", "a forwarded write holds no statements");
    gs_db_stmt *stmts = gs_calloc(fr.nstatements ? fr.nstatements : 1, sizeof *stmts);
    if (st == GS_OK && !stmts)
        st = gs_error_set(&err, 0, "INTERNAL_ERROR", "out of memory");
    for (size_t i = 0; st == GS_OK && i < fr.nstatements; i++) {
        const char *sql = fr.statements[i].sql ? fr.statements[i].sql : "";
        stmts[i].sql = sql;
        stmts[i].params = statement_params(&fr.statements[i]);
        if (gs_repl_is_ddl(sql) && gs_repl_ddl_check(sql, &err) != GS_OK)
            st = GS_ERROR;
        else if (e->o.before_forwarded &&
                 e->o.before_forwarded(e->o.user, sql, stmts[i].params, &err) != GS_OK)
            st = GS_ERROR;
    }
    fwd_run *r = NULL;
    if (st == GS_OK) {
        r = gs_calloc(1, sizeof *r);
        if (!r || !(r->to = gs_strdup(from)) ||
            !(r->request_id = gs_strdup(fr.request_id ? fr.request_id : ""))) {
            if (r) {
                gs_free(r->to);
                gs_free(r);
                r = NULL;
            }
            st = gs_error_set(&err, 0, "INTERNAL_ERROR", "out of memory");
        }
    }
    if (st == GS_OK) {
        r->e = e;
        r->call_id = call_id;
        gs_db_request dreq;
        memset(&dreq, 0, sizeof dreq);
        dreq.kind = fr.nstatements == 1 ? GS_DB_EXECUTE : GS_DB_TRANSACTION;
        dreq.stmts = stmts;
        dreq.stmt_count = fr.nstatements;
        dreq.done = fwd_done;
        dreq.user = r;
        if (gs_db_submit(e->db, &dreq, &err) != GS_OK) {
            gs_free(r->to);
            gs_free(r->request_id);
            gs_free(r);
            st = GS_ERROR;
        }
    }
    if (st != GS_OK)
        respond(e, from, call_id, fr.request_id ? fr.request_id : "", NULL, 0, &err);
    for (size_t i = 0; stmts && i < fr.nstatements; i++)
        json_decref(stmts[i].params);
    gs_free(stmts);
    gs_fwd_request_free(&fr);
}
