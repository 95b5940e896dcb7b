/*
 * The public surface of libgatestream-client: configuration, open/close, database handles,
 * and the call path every operation takes (build -> route -> capability check -> transport
 * -> finish: refresh routing, retry a read once, decode, complete). See client.h.
 */
#include "cl_internal.h"
#include "cl_ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

const char *gs_client_version(void)
{
    return GS_STR(GS_CLIENT_VERSION_MAJOR) "." GS_STR(GS_CLIENT_VERSION_MINOR);
}

int64_t cl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cl_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static __thread int library_thread;

int cl_on_library_thread(void)
{
    return library_thread;
}

void cl_mark_library_thread(void)
{
    library_thread = 1;
}

/* ---------------------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------------------- */

void gs_client_config_init(gs_client_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->struct_size = sizeof *cfg;
    cfg->auto_reconnect = 1;
    cfg->reconnect_interval_ms = 1000;
    cfg->reconnect_max_ms = 30000;
    cfg->request_timeout_ms = 30000;
    cfg->connect_timeout_ms = 10000;
    cfg->check_capabilities = 1;
    cfg->health_timeout_ms = 5000;
    cfg->health_cache_ms = 60000;
    cfg->discovery_timeout_ms = 2000;
    cfg->http_max_connections = 16;
}

void gs_client_call_opts_init(gs_client_call_opts *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->timeout_ms = -1;
}

void gs_client_request_init(gs_client_request *r, gs_client_op op)
{
    memset(r, 0, sizeof *r);
    r->struct_size = sizeof *r;
    r->op = op;
}

/* A header token (RFC 7230 tchar+). */
static int is_token(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              (ch && strchr("!#$%&'*+-.^_`|~", ch))))
            return 0;
    }
    return 1;
}

static int has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        gs_free(v[i]);
    gs_free(v);
}

static void endpoint_free(cl_endpoint *ep)
{
    if (!ep)
        return;
    gs_free(ep->base);
    gs_free(ep->ws_base);
    gs_free(ep->host);
    gs_free(ep->prefix);
    pthread_mutex_destroy(&ep->mu);
    gs_free(ep);
}

cl_endpoint *cl_client_endpoint(gs_client *c, const char *url, gs_error *err)
{
    cl_url u;
    if (cl_url_parse(url, &u, err) != GS_OK)
        return NULL;
    gs_buf b, w;
    gs_buf_init(&b);
    gs_buf_init(&w);
    int v6 = strchr(u.host, ':') != NULL;
    gs_buf_printf(&b, "%s://%s%s%s:%d%s", u.tls ? "https" : "http", v6 ? "[" : "", u.host,
                  v6 ? "]" : "", u.port, u.prefix);
    gs_buf_printf(&w, "%s://%s%s%s:%d%s", u.tls ? "wss" : "ws", v6 ? "[" : "", u.host,
                  v6 ? "]" : "", u.port, u.prefix);
    if (b.oom || w.oom) {
        gs_buf_free(&b);
        gs_buf_free(&w);
        cl_url_clear(&u);
        gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        return NULL;
    }
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->neps; i++) {
        if (strcmp(c->eps[i]->base, b.data) == 0) {
            cl_endpoint *ep = c->eps[i];
            pthread_mutex_unlock(&c->mu);
            gs_buf_free(&b);
            gs_buf_free(&w);
            cl_url_clear(&u);
            return ep;
        }
    }
    cl_endpoint *ep = NULL;
    if (c->neps == c->capeps) {
        size_t cap = c->capeps ? c->capeps * 2 : 8;
        cl_endpoint **eps = gs_realloc(c->eps, cap * sizeof *eps);
        if (eps) {
            c->eps = eps;
            c->capeps = cap;
        }
    }
    if (c->neps < c->capeps)
        ep = gs_calloc(1, sizeof *ep);
    if (ep) {
        pthread_mutex_init(&ep->mu, NULL);
        ep->base = gs_buf_take(&b, NULL);
        ep->ws_base = gs_buf_take(&w, NULL);
        ep->host = u.host;
        ep->prefix = u.prefix;
        ep->port = u.port;
        ep->tls = u.tls;
        u.host = u.prefix = NULL;
        c->eps[c->neps++] = ep;
    }
    pthread_mutex_unlock(&c->mu);
    gs_buf_free(&b);
    gs_buf_free(&w);
    cl_url_clear(&u);
    if (!ep)
        gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    return ep;
}

static gs_status copy_config(gs_client *c, const gs_client_config *in, gs_error *err)
{
    gs_client_config_init(&c->cfg);
    if (in) {
        if (in->struct_size < offsetof(gs_client_config, http_max_connections) + sizeof(int) ||
            in->struct_size > sizeof *in)
            return gs_error_set(err, 0, "INVALID_ARGUMENT",
                                "gs_client_config.struct_size is %u: initialise the config "
                                "with gs_client_config_init()",
                                in->struct_size);
        memcpy(&c->cfg, in, in->struct_size);
        c->cfg.struct_size = sizeof c->cfg;
    }
    gs_client_config *cfg = &c->cfg;
    if (cfg->reconnect_interval_ms <= 0)
        cfg->reconnect_interval_ms = 1000;
    if (cfg->reconnect_max_ms < cfg->reconnect_interval_ms)
        cfg->reconnect_max_ms = cfg->reconnect_interval_ms;
    if (cfg->request_timeout_ms < 0)
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "requestTimeout must be 0 (wait indefinitely) or positive");
    if (cfg->connect_timeout_ms <= 0)
        cfg->connect_timeout_ms = 10000;
    if (cfg->health_timeout_ms <= 0)
        cfg->health_timeout_ms = 5000;
    if (cfg->health_cache_ms <= 0)
        cfg->health_cache_ms = 60000;
    if (cfg->discovery_timeout_ms <= 0)
        cfg->discovery_timeout_ms = 2000;
    if (cfg->read_concern && strcmp(cfg->read_concern, "local") &&
        strcmp(cfg->read_concern, "majority") && strcmp(cfg->read_concern, "linearizable"))
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "readConcern '%s' is not one of local, majority, linearizable",
                            cfg->read_concern);
    /* Headers, the bearer token first. */
    c->headers = gs_calloc(cfg->header_count + 2, sizeof *c->headers);
    if (!c->headers)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    if (cfg->bearer_token && cfg->bearer_token[0]) {
        if (has_crlf(cfg->bearer_token))
            return gs_error_set(err, 0, "INVALID_ARGUMENT", "the bearer token holds a line break");
        size_t n = strlen(cfg->bearer_token) + 32;
        c->headers[c->nheaders] = gs_malloc(n);
        if (!c->headers[c->nheaders])
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        snprintf(c->headers[c->nheaders++], n, "Authorization: Bearer %s", cfg->bearer_token);
    }
    for (size_t i = 0; i < cfg->header_count; i++) {
        const char *h = cfg->headers ? cfg->headers[i] : NULL;
        const char *colon = h ? strchr(h, ':') : NULL;
        if (!h || !colon || colon == h || has_crlf(h))
            return gs_error_set(err, 0, "INVALID_ARGUMENT",
                                "headers[%zu] must be \"Name: value\" on one line", i);
        char name[128];
        size_t nl = (size_t)(colon - h) < sizeof name - 1 ? (size_t)(colon - h) : sizeof name - 1;
        memcpy(name, h, nl);
        name[nl] = '\0';
        if (!is_token(name))
            return gs_error_set(err, 0, "INVALID_ARGUMENT",
                                "headers[%zu] has an invalid header name", i);
        if (!(c->headers[c->nheaders++] = gs_strdup(h)))
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    cfg->headers = NULL;
    cfg->bearer_token = NULL;
    /* Subprotocols: sirannon.v1 first, then the configured ones (tokens, no duplicates). */
    if (cfg->ws_protocol_count) {
        c->protocols = gs_calloc(cfg->ws_protocol_count + 1, sizeof *c->protocols);
        if (!c->protocols || !(c->protocols[0] = gs_strdup("sirannon.v1")))
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        c->nprotocols = 1;
        for (size_t i = 0; i < cfg->ws_protocol_count; i++) {
            const char *p = cfg->ws_protocols ? cfg->ws_protocols[i] : NULL;
            /* The value may be a credential: it is never put in a message. */
            if (!is_token(p))
                return gs_error_set(err, 0, "INVALID_ARGUMENT",
                                    "webSocketProtocols[%zu] is not a valid header token", i);
            for (size_t k = 0; k < i; k++)
                if (strcmp(cfg->ws_protocols[k], p) == 0)
                    return gs_error_set(err, 0, "INVALID_ARGUMENT",
                                        "webSocketProtocols[%zu] repeats an earlier entry", i);
            if (strcmp(p, "sirannon.v1") == 0)
                continue;
            if (!(c->protocols[c->nprotocols++] = gs_strdup(p)))
                return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        }
    }
    cfg->ws_protocols = NULL;
    if (cfg->ca_file && !(c->ca_file = gs_strdup(cfg->ca_file)))
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    cfg->ca_file = c->ca_file;
    if (cfg->read_concern && !(c->read_concern = gs_strdup(cfg->read_concern)))
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    cfg->read_concern = c->read_concern;
    return GS_OK;
}

static gs_status add_list(gs_client *c, cl_endpoint ***list, size_t *n, const char *url,
                          gs_error *err)
{
    cl_endpoint *ep = cl_client_endpoint(c, url, err);
    if (!ep)
        return GS_ERROR;
    cl_endpoint **l = gs_realloc(*list, (*n + 1) * sizeof *l);
    if (!l)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    l[(*n)++] = ep;
    *list = l;
    return GS_OK;
}

static gs_status setup_routing(gs_client *c, const char *const *urls, size_t n,
                               const gs_client_config *in, gs_error *err)
{
    gs_client_config *cfg = &c->cfg;
    const char *primary = in ? in->primary : NULL;
    const char *const *replicas = in ? in->replicas : NULL;
    size_t nrep = in ? in->replica_count : 0;
    int routing_opts =
        primary || nrep || cfg->read_preference != GS_CLIENT_READ_PRIMARY || cfg->read_concern;
    int mode = cfg->mode;
    if (mode == GS_CLIENT_MODE_AUTO)
        mode = n == 1 && !routing_opts ? GS_CLIENT_MODE_SINGLE : GS_CLIENT_MODE_STATIC;
    if (mode == GS_CLIENT_MODE_SINGLE) {
        if (n != 1)
            return gs_error_set(err, 0, "INVALID_ARGUMENT",
                                "a single-node client takes exactly one URL (got %zu); use "
                                "GS_CLIENT_MODE_STATIC or COORDINATOR to route between nodes",
                                n);
        if (routing_opts)
            return gs_error_set(err, 0, "INVALID_ARGUMENT",
                                "a single-node client does not route: %s is a topology option",
                                primary                                          ? "primary"
                                : nrep                                           ? "replicas"
                                : cfg->read_preference != GS_CLIENT_READ_PRIMARY ? "readPreference"
                                                                                 : "readConcern");
        c->mode = CL_SINGLE;
        return (c->primary = cl_client_endpoint(c, urls[0], err)) ? GS_OK : GS_ERROR;
    }
    if (mode == GS_CLIENT_MODE_STATIC) {
        c->mode = CL_STATIC;
        if (!primary && !n)
            return gs_error_set(err, 0, "INVALID_ARGUMENT", "static routing needs a primary");
        if (!(c->primary = cl_client_endpoint(c, primary ? primary : urls[0], err)))
            return GS_ERROR;
        if (nrep) {
            for (size_t i = 0; i < nrep; i++)
                if (add_list(c, &c->replicas, &c->nreplicas, replicas[i], err) != GS_OK)
                    return GS_ERROR;
        } else {
            for (size_t i = primary ? 0 : 1; i < n; i++)
                if (add_list(c, &c->replicas, &c->nreplicas, urls[i], err) != GS_OK)
                    return GS_ERROR;
        }
        return GS_OK;
    }
    if (mode == GS_CLIENT_MODE_COORDINATOR) {
        c->mode = CL_COORDINATOR;
        for (size_t i = 0; i < n; i++)
            if (add_list(c, &c->starters, &c->nstarters, urls[i], err) != GS_OK)
                return GS_ERROR;
        if (primary && add_list(c, &c->starters, &c->nstarters, primary, err) != GS_OK)
            return GS_ERROR;
        for (size_t i = 0; i < nrep; i++)
            if (add_list(c, &c->starters, &c->nstarters, replicas[i], err) != GS_OK)
                return GS_ERROR;
        if (!c->nstarters)
            return gs_error_set(err, 0, "INVALID_ARGUMENT",
                                "coordinator discovery needs at least one starter endpoint");
        return GS_OK;
    }
    return gs_error_set(err, 0, "INVALID_ARGUMENT", "unknown client mode %d", (int)cfg->mode);
}

gs_status gs_client_open(const char *const *urls, size_t n, const gs_client_config *cfg,
                         gs_client **out, gs_error *err)
{
    gs_error_init(err);
    if (!out)
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "gs_client_open needs an out pointer");
    *out = NULL;
    if (n && !urls)
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "urls is NULL but n is %zu", n);
    if (!n && !(cfg && cfg->primary))
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "give at least one server URL");
    gs_client *c = gs_calloc(1, sizeof *c);
    if (!c)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->probe_mu, NULL);
    if (getrandom(&c->rng, sizeof c->rng, 0) != (ssize_t)sizeof c->rng || !c->rng)
        c->rng = (uint64_t)cl_now_ms() | 1;
    if (copy_config(c, cfg, err) != GS_OK || setup_routing(c, urls, n, cfg, err) != GS_OK) {
        gs_client_close(c);
        return GS_ERROR;
    }
    /* Transport: HTTP when asked; WebSocket otherwise (spec 06's default). */
    c->use_ws = c->cfg.transport != GS_CLIENT_TRANSPORT_HTTP;
    for (size_t i = 0; i < n && !c->use_ws; i++) {
        if (strncasecmp(urls[i], "ws", 2) == 0) {
            gs_client_close(c);
            return gs_error_set(err, 0, "INVALID_ARGUMENT",
                                "URL %zu is a WebSocket URL but the transport is HTTP", i);
        }
    }
    if (!(c->http = cl_http_new(c, err))) {
        gs_client_close(c);
        return GS_ERROR;
    }
    *out = c;
    return GS_OK;
}

static void db_free(gs_client_db *db)
{
    for (size_t i = 0; i < db->ntargets; i++)
        cl_ws_free(db->targets[i].ws);
    gs_free(db->targets);
    cl_cluster_clear(&db->cluster);
    gs_free(db->id);
    gs_free(db->id_enc);
    pthread_mutex_destroy(&db->mu);
    pthread_mutex_destroy(&db->refresh_mu);
    gs_free(db);
}

void gs_client_close(gs_client *c)
{
    if (!c)
        return;
    atomic_store(&c->closing, 1);
    /* WebSocket connections first: their pending calls complete (with CONNECTION_ERROR)
     * before the HTTP worker they might reach goes away. Every I/O thread stops before any
     * connection is freed, since one may be moving a subscription to another (cl_ws_sub.c);
     * no connection is made once `closing` is set (cl_db_ws checks it under db.mu). */
    for (size_t i = 0; i < c->ndbs; i++) {
        gs_client_db *db = c->dbs[i];
        for (size_t k = 0;; k++) {
            pthread_mutex_lock(&db->mu);
            cl_ws *ws = k < db->ntargets ? db->targets[k].ws : NULL;
            int more = k < db->ntargets;
            pthread_mutex_unlock(&db->mu);
            if (!more)
                break;
            cl_ws_stop(ws);
        }
    }
    for (size_t i = 0; i < c->ndbs; i++)
        for (size_t k = 0; k < c->dbs[i]->ntargets; k++) {
            cl_ws_free(c->dbs[i]->targets[k].ws);
            c->dbs[i]->targets[k].ws = NULL;
        }
    cl_http_free(c->http);
    for (size_t i = 0; i < c->ndbs; i++)
        db_free(c->dbs[i]);
    gs_free(c->dbs);
    for (size_t i = 0; i < c->neps; i++)
        endpoint_free(c->eps[i]);
    gs_free(c->eps);
    gs_free(c->replicas);
    gs_free(c->starters);
    free_strings(c->headers, c->nheaders);
    free_strings(c->protocols, c->nprotocols);
    gs_free(c->ca_file);
    gs_free(c->read_concern);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->probe_mu);
    gs_free(c);
}

gs_client_db *gs_client_database(gs_client *c, const char *id, gs_error *err)
{
    gs_error_init(err);
    if (!c || !id || !id[0]) {
        gs_error_set(err, 0, "INVALID_ARGUMENT", "a database id is required");
        return NULL;
    }
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->ndbs; i++) {
        if (strcmp(c->dbs[i]->id, id) == 0) {
            gs_client_db *db = c->dbs[i];
            pthread_mutex_unlock(&c->mu);
            return db;
        }
    }
    gs_client_db *db = NULL;
    if (c->ndbs == c->capdbs) {
        size_t cap = c->capdbs ? c->capdbs * 2 : 4;
        gs_client_db **dbs = gs_realloc(c->dbs, cap * sizeof *dbs);
        if (dbs) {
            c->dbs = dbs;
            c->capdbs = cap;
        }
    }
    if (c->ndbs < c->capdbs)
        db = gs_calloc(1, sizeof *db);
    if (db) {
        gs_buf enc;
        gs_buf_init(&enc);
        cl_url_encode(&enc, id);
        db->c = c;
        db->id = gs_strdup(id);
        db->id_enc = gs_buf_take(&enc, NULL);
        pthread_mutex_init(&db->mu, NULL);
        pthread_mutex_init(&db->refresh_mu, NULL);
        if (!db->id || !db->id_enc) {
            db_free(db);
            db = NULL;
        } else {
            c->dbs[c->ndbs++] = db;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (!db)
        gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    return db;
}

cl_ws *cl_db_ws(gs_client_db *db, cl_endpoint *ep, gs_error *err)
{
    pthread_mutex_lock(&db->mu);
    for (size_t i = 0; i < db->ntargets; i++) {
        if (db->targets[i].ep == ep && db->targets[i].ws) {
            cl_ws *ws = db->targets[i].ws;
            pthread_mutex_unlock(&db->mu);
            return ws;
        }
    }
    if (atomic_load(&db->c->closing)) {
        pthread_mutex_unlock(&db->mu);
        gs_error_set(err, 0, "CONNECTION_ERROR", "the client is closing");
        return NULL;
    }
    cl_ws *ws = NULL;
    if (db->ntargets == db->captargets) {
        size_t cap = db->captargets ? db->captargets * 2 : 4;
        cl_target *t = gs_realloc(db->targets, cap * sizeof *t);
        if (t) {
            db->targets = t;
            db->captargets = cap;
        }
    }
    if (db->ntargets < db->captargets && (ws = cl_ws_new(db->c, ep, db, err))) {
        db->targets[db->ntargets].ep = ep;
        db->targets[db->ntargets].ws = ws;
        db->ntargets++;
    } else if (!ws && db->ntargets >= db->captargets) {
        gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    pthread_mutex_unlock(&db->mu);
    return ws;
}

void cl_db_wake_all(gs_client_db *db)
{
    pthread_mutex_lock(&db->mu);
    for (size_t i = 0; i < db->ntargets; i++)
        if (db->targets[i].ws)
            cl_ws_wake(db->targets[i].ws);
    pthread_mutex_unlock(&db->mu);
}

/* ---------------------------------------------------------------------------------------
 * The call path
 * ------------------------------------------------------------------------------------- */

void cl_call_free(cl_call *call)
{
    if (!call)
        return;
    gs_free(call->read_concern);
    gs_free(call->fields);
    gs_free(call->name);
    gs_free(call->http_path);
    gs_free(call);
}

static void http_done(void *ctx, gs_status st, cl_http_reply *reply, const gs_error *err)
{
    cl_call *call = ctx;
    if (st != GS_OK) {
        cl_call_finish(call, st, NULL, err);
        return;
    }
    json_t *j = NULL;
    gs_error e;
    gs_error_init(&e);
    if (cl_http_json(reply, &j, &e) != GS_OK) {
        cl_call_finish(call, GS_ERROR, NULL, &e);
        return;
    }
    cl_call_finish(call, GS_OK, j, NULL);
    json_decref(j);
}

gs_status cl_call_dispatch(cl_call *call, gs_error *err)
{
    gs_client_db *db = call->db;
    gs_client *c = db->c;
    if (atomic_load(&c->closing))
        return gs_error_set(err, 0, "CONNECTION_ERROR", "the client is closing");
    cl_endpoint *ep;
    if (cl_route_pick(db, call->is_write, call->read_concern, &ep, err) != GS_OK)
        return GS_ERROR;
    call->ep = ep;
    if (call->uses_sql && cl_caps_check_sql(c, ep, err) != GS_OK) {
        if (c->mode == CL_SINGLE || strcmp(err->code, "CONNECTION_ERROR") != 0)
            return GS_ERROR;
        /* The routed endpoint is unreachable: the completion path refreshes routing and
         * retries a read once, as for a failure at the transport. */
        gs_error e = *err;
        cl_call_finish(call, GS_ERROR, NULL, &e);
        return GS_OK;
    }
    if (c->use_ws) {
        cl_ws *ws = cl_db_ws(db, ep, err);
        return ws ? cl_ws_submit(ws, call, err) : GS_ERROR;
    }
    gs_buf url, body;
    gs_buf_init(&url);
    gs_buf_init(&body);
    gs_buf_printf(&url, "%s/db/%s/%s", ep->base, db->id_enc, call->http_path);
    gs_buf_putc(&body, '{');
    gs_buf_append(&body, call->fields, call->fields_len);
    gs_buf_putc(&body, '}');
    if (url.oom || body.oom) {
        gs_buf_free(&url);
        gs_buf_free(&body);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    size_t blen = body.len;
    char *b = gs_buf_take(&body, NULL);
    gs_status st;
    if (call->inline_http) {
        cl_http_reply r;
        gs_error e;
        gs_error_init(&e);
        st = cl_http_perform(c->http, "POST", url.data, b, blen, call->timeout_ms, &r, &e);
        gs_free(b);
        gs_buf_free(&url);
        /* The call is accepted either way: its completion carries the outcome. */
        http_done(call, st, st == GS_OK ? &r : NULL, &e);
        if (st == GS_OK)
            cl_http_reply_clear(&r);
        return GS_OK;
    }
    st = cl_http_submit(c->http, url.data, b, blen, call->timeout_ms, http_done, call, err);
    gs_buf_free(&url);
    return st;
}

void cl_call_finish(cl_call *call, gs_status st, json_t *data, const gs_error *err)
{
    gs_client_db *db = call->db;
    gs_error retry_err;
    if (st != GS_OK && db->c->mode != CL_SINGLE && !atomic_load(&db->c->closing) &&
        cl_route_after_error(db, call, err)) {
        /* 06-client: a read retries once on the refreshed route. */
        call->attempt++;
        gs_error_init(&retry_err);
        if (cl_call_dispatch(call, &retry_err) == GS_OK)
            return;
        err = &retry_err;
    }
    if (st == GS_OK) {
        gs_client_response resp;
        gs_error e;
        gs_error_init(&e);
        if (cl_response_decode(call->op, data, &resp, &e) == GS_OK) {
            call->done(call->user, GS_OK, &resp, NULL);
            gs_client_response_clear(&resp);
        } else {
            call->done(call->user, GS_ERROR, NULL, &e);
        }
    } else {
        call->done(call->user, GS_ERROR, NULL, err);
    }
    cl_call_free(call);
}

static cl_call *make_call(gs_client_db *db, const gs_client_request *req, gs_error *err)
{
    if (!db || !req)
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "a database handle and a request are "
                            "required"),
               NULL;
    cl_call *call = gs_calloc(1, sizeof *call);
    if (!call) {
        gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        return NULL;
    }
    if (cl_request_build(db, req, call, err) != GS_OK) {
        cl_call_free(call);
        return NULL;
    }
    return call;
}

gs_status gs_client_submit(gs_client_db *db, const gs_client_request *req, gs_client_done_fn done,
                           void *user, gs_error *err)
{
    gs_error_init(err);
    if (!done)
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "gs_client_submit needs a callback");
    cl_call *call = make_call(db, req, err);
    if (!call)
        return GS_ERROR;
    call->done = done;
    call->user = user;
    if (cl_call_dispatch(call, err) != GS_OK) {
        cl_call_free(call);
        return GS_ERROR;
    }
    return GS_OK;
}

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    gs_status st;
    gs_client_response resp;
    gs_error err;
} waiter;

static void sync_done(void *user, gs_status st, gs_client_response *resp, const gs_error *err)
{
    waiter *w = user;
    pthread_mutex_lock(&w->mu);
    w->st = st;
    if (st == GS_OK) {
        w->resp = *resp;
        resp->rows = NULL;
        resp->results.items = NULL;
        resp->results.count = 0;
    } else {
        gs_error_copy(&w->err, err);
    }
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

gs_status gs_client_call(gs_client_db *db, const gs_client_request *req, gs_client_response *resp,
                         gs_error *err)
{
    gs_error_init(err);
    if (resp)
        memset(resp, 0, sizeof *resp);
    if (!resp)
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "gs_client_call needs a response");
    if (cl_on_library_thread())
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "a synchronous call cannot run inside a client callback (it would "
                            "wait for the thread it runs on); use gs_client_submit");
    cl_call *call = make_call(db, req, err);
    if (!call)
        return GS_ERROR;
    waiter w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    gs_error_init(&w.err);
    call->done = sync_done;
    call->user = &w;
    call->inline_http = 1;
    if (cl_call_dispatch(call, err) != GS_OK) {
        cl_call_free(call);
        pthread_mutex_destroy(&w.mu);
        pthread_cond_destroy(&w.cv);
        return GS_ERROR;
    }
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    if (w.st != GS_OK) {
        gs_error_copy(err, &w.err);
        return GS_ERROR;
    }
    *resp = w.resp;
    return GS_OK;
}

/* ---------------------------------------------------------------------------------------
 * Shorthands
 * ------------------------------------------------------------------------------------- */

gs_status gs_client_query(gs_client_db *db, const char *sql, const gs_client_params *params,
                          const gs_client_call_opts *opts, gs_client_rows **out, gs_error *err)
{
    if (out)
        *out = NULL;
    gs_client_request r;
    gs_client_request_init(&r, GS_CLIENT_OP_QUERY);
    r.sql = sql;
    if (params)
        r.params = *params;
    r.opts = opts;
    gs_client_response resp;
    if (gs_client_call(db, &r, &resp, err) != GS_OK)
        return GS_ERROR;
    if (out)
        *out = gs_client_response_take_rows(&resp);
    gs_client_response_clear(&resp);
    return GS_OK;
}

gs_status gs_client_execute(gs_client_db *db, const char *sql, const gs_client_params *params,
                            const gs_client_call_opts *opts, gs_client_exec *out, gs_error *err)
{
    gs_client_request r;
    gs_client_request_init(&r, GS_CLIENT_OP_EXECUTE);
    r.sql = sql;
    if (params)
        r.params = *params;
    r.opts = opts;
    gs_client_response resp;
    if (gs_client_call(db, &r, &resp, err) != GS_OK)
        return GS_ERROR;
    if (out)
        *out = resp.exec;
    gs_client_response_clear(&resp);
    return GS_OK;
}

static gs_status results_call(gs_client_db *db, gs_client_request *r, gs_client_results *out,
                              gs_error *err)
{
    if (out)
        memset(out, 0, sizeof *out);
    gs_client_response resp;
    if (gs_client_call(db, r, &resp, err) != GS_OK)
        return GS_ERROR;
    if (out) {
        *out = resp.results;
        resp.results.items = NULL;
        resp.results.count = 0;
    }
    gs_client_response_clear(&resp);
    return GS_OK;
}

gs_status gs_client_transaction(gs_client_db *db, const gs_client_stmt *stmts, size_t n,
                                const gs_client_call_opts *opts, gs_client_results *out,
                                gs_error *err)
{
    gs_client_request r;
    gs_client_request_init(&r, GS_CLIENT_OP_TRANSACTION);
    r.statements = stmts;
    r.statement_count = n;
    r.opts = opts;
    return results_call(db, &r, out, err);
}

gs_status gs_client_batch(gs_client_db *db, const char *sql, const gs_client_params *batch,
                          size_t n, const gs_client_call_opts *opts, gs_client_results *out,
                          gs_error *err)
{
    gs_client_request r;
    gs_client_request_init(&r, GS_CLIENT_OP_BATCH);
    r.sql = sql;
    r.params_batch = batch;
    r.batch_count = n;
    r.opts = opts;
    return results_call(db, &r, out, err);
}

gs_status gs_client_load(gs_client_db *db, const char *sql, const gs_client_params *batch, size_t n,
                         const gs_client_call_opts *opts, gs_client_load_result *out, gs_error *err)
{
    if (out)
        memset(out, 0, sizeof *out);
    gs_client_request r;
    gs_client_request_init(&r, GS_CLIENT_OP_LOAD);
    r.sql = sql;
    r.params_batch = batch;
    r.batch_count = n;
    r.opts = opts;
    gs_client_response resp;
    if (gs_client_call(db, &r, &resp, err) != GS_OK)
        return GS_ERROR;
    if (out)
        *out = resp.load;
    gs_client_response_clear(&resp);
    return GS_OK;
}

gs_status gs_client_load_all(gs_client_db *db, const char *sql, const gs_client_params *rows,
                             size_t n, long batch_size, const gs_client_call_opts *opts,
                             gs_client_load_result *out, gs_error *err)
{
    gs_error_init(err);
    if (out)
        memset(out, 0, sizeof *out);
    if (batch_size < 0)
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "batchSize must be positive (0 takes the default of 1000)");
    if (!batch_size)
        batch_size = 1000;
    if (!n || !rows)
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "loadAll needs at least one row");
    gs_client_call_opts o;
    gs_client_call_opts_init(&o);
    if (opts)
        o = *opts;
    o.struct_size = sizeof o;
    if (!o.durability)
        o.durability = "off";
    for (size_t off = 0; off < n; off += (size_t)batch_size) {
        size_t k = n - off < (size_t)batch_size ? n - off : (size_t)batch_size;
        o.checkpoint = off + k == n; /* only the final batch checkpoints */
        gs_client_load_result part;
        if (gs_client_load(db, sql, rows + off, k, &o, &part, err) != GS_OK) {
            gs_error_prefix(err, "loadAll stopped at row %zu of %zu", off, n);
            return GS_ERROR;
        }
        if (out) {
            out->rows_loaded += part.rows_loaded;
            out->changes += part.changes;
        }
    }
    return GS_OK;
}

gs_status gs_client_query_named(gs_client_db *db, const char *name, const gs_client_params *args,
                                const gs_client_call_opts *opts, gs_client_rows **out,
                                gs_error *err)
{
    if (out)
        *out = NULL;
    gs_client_request r;
    gs_client_request_init(&r, GS_CLIENT_OP_QUERY_NAMED);
    r.name = name;
    if (args)
        r.params = *args;
    r.opts = opts;
    gs_client_response resp;
    if (gs_client_call(db, &r, &resp, err) != GS_OK)
        return GS_ERROR;
    if (out)
        *out = gs_client_response_take_rows(&resp);
    gs_client_response_clear(&resp);
    return GS_OK;
}

gs_status gs_client_execute_named(gs_client_db *db, const char *name, const gs_client_params *args,
                                  const gs_client_call_opts *opts, gs_client_results *out,
                                  gs_error *err)
{
    gs_client_request r;
    gs_client_request_init(&r, GS_CLIENT_OP_EXECUTE_NAMED);
    r.name = name;
    if (args)
        r.params = *args;
    r.opts = opts;
    return results_call(db, &r, out, err);
}

static gs_status async_one(gs_client_db *db, gs_client_op op, const char *sql,
                           const gs_client_params *params, const gs_client_call_opts *opts,
                           gs_client_done_fn done, void *user, gs_error *err)
{
    gs_client_request r;
    gs_client_request_init(&r, op);
    r.sql = sql;
    if (params)
        r.params = *params;
    r.opts = opts;
    return gs_client_submit(db, &r, done, user, err);
}

gs_status gs_client_query_async(gs_client_db *db, const char *sql, const gs_client_params *params,
                                const gs_client_call_opts *opts, gs_client_done_fn done, void *user,
                                gs_error *err)
{
    return async_one(db, GS_CLIENT_OP_QUERY, sql, params, opts, done, user, err);
}

gs_status gs_client_execute_async(gs_client_db *db, const char *sql, const gs_client_params *params,
                                  const gs_client_call_opts *opts, gs_client_done_fn done,
                                  void *user, gs_error *err)
{
    return async_one(db, GS_CLIENT_OP_EXECUTE, sql, params, opts, done, user, err);
}
