/*
 * Topology-aware routing (spec 06): writes to the primary; reads by read preference.
 * Static mode uses the configured primary and replicas (`nearest` by GET /health latency,
 * cached; a replica that fails a read at the transport is skipped for a while). Coordinator
 * mode reads GET /db/{id}/cluster from a reachable endpoint, caches the primary, its term and
 * the readable endpoints, and refreshes after STALE_PRIMARY, AUTHORITY_LOST,
 * COORDINATOR_UNAVAILABLE, NO_SAFE_PRIMARY or CONNECTION_ERROR. A refresh whose routing has
 * another fingerprint bumps the database's route generation and wakes its connections, whose
 * I/O threads then move subscriptions off endpoints the new routing no longer lists
 * (cl_route_reroute decides, cl_ws_sub.c moves). Any thread.
 */
#include "cl_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t next_random(gs_client *c)
{
    pthread_mutex_lock(&c->mu);
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    uint64_t r = c->rng;
    pthread_mutex_unlock(&c->mu);
    return r;
}

static int removed(cl_endpoint *ep, int64_t now)
{
    pthread_mutex_lock(&ep->mu);
    int r = ep->removed_until_ms > now;
    pthread_mutex_unlock(&ep->mu);
    return r;
}

/* ---- static mode ---- */

static void probe(gs_client *c, cl_endpoint *ep, int64_t now)
{
    pthread_mutex_lock(&ep->mu);
    int fresh = ep->measured_at_ms && now - ep->measured_at_ms < c->cfg.health_cache_ms;
    pthread_mutex_unlock(&ep->mu);
    if (fresh)
        return;
    char url[1024];
    snprintf(url, sizeof url, "%s/health", ep->base);
    gs_error err;
    gs_error_init(&err);
    cl_http_reply r;
    int64_t t0 = cl_mono_ms();
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    gs_status st =
        cl_http_perform(c->http, "GET", url, NULL, 0, c->cfg.health_timeout_ms, &r, &err);
    clock_gettime(CLOCK_MONOTONIC, &b);
    (void)t0;
    int ok = st == GS_OK && r.status == 200;
    if (st == GS_OK)
        cl_http_reply_clear(&r);
    pthread_mutex_lock(&ep->mu);
    ep->usable = ok;
    ep->rtt_us = (int64_t)(b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000;
    ep->measured_at_ms = cl_mono_ms();
    pthread_mutex_unlock(&ep->mu);
}

static cl_endpoint *nearest_static(gs_client *c, int64_t now)
{
    pthread_mutex_lock(&c->probe_mu);
    probe(c, c->primary, now);
    for (size_t i = 0; i < c->nreplicas; i++)
        probe(c, c->replicas[i], now);
    pthread_mutex_unlock(&c->probe_mu);
    cl_endpoint *best = NULL;
    int64_t best_rtt = 0;
    for (size_t i = 0; i <= c->nreplicas; i++) {
        cl_endpoint *ep = i == 0 ? c->primary : c->replicas[i - 1];
        if (i > 0 && removed(ep, now))
            continue;
        pthread_mutex_lock(&ep->mu);
        int usable = ep->usable;
        int64_t rtt = ep->rtt_us;
        pthread_mutex_unlock(&ep->mu);
        if (usable && (!best || rtt < best_rtt)) {
            best = ep;
            best_rtt = rtt;
        }
    }
    return best ? best : c->primary;
}

static cl_endpoint *pick_static(gs_client *c, int is_write)
{
    if (is_write || c->cfg.read_preference == GS_CLIENT_READ_PRIMARY)
        return c->primary;
    int64_t now = cl_mono_ms();
    if (c->cfg.read_preference == GS_CLIENT_READ_NEAREST)
        return nearest_static(c, now);
    size_t n = 0;
    cl_endpoint **ok = c->nreplicas ? gs_malloc(c->nreplicas * sizeof *ok) : NULL;
    for (size_t i = 0; ok && i < c->nreplicas; i++)
        if (!removed(c->replicas[i], now))
            ok[n++] = c->replicas[i];
    cl_endpoint *ep = n ? ok[next_random(c) % n] : c->primary;
    gs_free(ok);
    return ep;
}

/* ---- coordinator mode ---- */

void cl_cluster_clear(cl_cluster *cl)
{
    gs_free(cl->reads);
    gs_free(cl->fingerprint);
    memset(cl, 0, sizeof *cl);
}

static unsigned concern_bit(const char *s)
{
    if (!s)
        return 0;
    if (!strcmp(s, "local"))
        return CL_RC_LOCAL;
    if (!strcmp(s, "majority"))
        return CL_RC_MAJORITY;
    if (!strcmp(s, "linearizable"))
        return CL_RC_LINEARIZABLE;
    return 0;
}

/* A discovered endpoint URL, with a trailing /db/{id} removed. */
static cl_endpoint *discovered(gs_client *c, const char *db_enc, const char *url, gs_error *err)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", url);
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '/')
        buf[--n] = '\0';
    char tail[512];
    snprintf(tail, sizeof tail, "/db/%s", db_enc);
    size_t tl = strlen(tail);
    if (n > tl && strcasecmp(buf + n - tl, tail) == 0)
        buf[n - tl] = '\0';
    gs_error e;
    cl_endpoint *ep = cl_client_endpoint(c, buf, &e);
    if (!ep)
        gs_error_set(err, 0, "INVALID_RESPONSE",
                     "cluster metadata names an unusable endpoint '%s': %s", url, e.message);
    return ep;
}

gs_status cl_cluster_parse(gs_client *c, const char *db_id, json_t *j, cl_cluster *out,
                           gs_error *err)
{
    memset(out, 0, sizeof *out);
    if (!json_is_object(j))
        return gs_error_set(err, 0, "INVALID_RESPONSE", "cluster metadata must be an object");
    const char *id = json_string_value(json_object_get(j, "databaseId"));
    if (!id || strcmp(id, db_id) != 0)
        return gs_error_set(err, 0, "INVALID_RESPONSE",
                            "cluster metadata is for database '%s', not '%s'", id ? id : "", db_id);
    gs_buf enc;
    gs_buf_init(&enc);
    cl_url_encode(&enc, db_id);
    const char *db_enc = enc.data ? enc.data : "";
    gs_status st = GS_OK;
    json_t *term = json_object_get(j, "primaryTerm");
    json_t *prim = json_object_get(j, "currentPrimary");
    json_t *reads = json_object_get(j, "readEndpoints");
    if (term && !json_is_string(term)) {
        st = gs_error_set(err, 0, "INVALID_RESPONSE",
                          "cluster metadata primaryTerm must be a string");
        goto done;
    }
    if (term)
        snprintf(out->term, sizeof out->term, "%s", json_string_value(term));
    if (prim && !json_is_null(prim)) {
        const char *u = json_string_value(json_object_get(prim, "endpoint"));
        if (!json_is_object(prim) || !u) {
            st = gs_error_set(err, 0, "INVALID_RESPONSE",
                              "cluster metadata currentPrimary must be null or an object with "
                              "a string endpoint");
            goto done;
        }
        if (!(out->primary = discovered(c, db_enc, u, err))) {
            st = GS_ERROR;
            goto done;
        }
    }
    if (reads && !json_is_array(reads)) {
        st = gs_error_set(err, 0, "INVALID_RESPONSE",
                          "cluster metadata readEndpoints must be an array");
        goto done;
    }
    out->reads = gs_calloc(json_array_size(reads) + 1, sizeof *out->reads);
    if (!out->reads) {
        st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        goto done;
    }
    size_t i;
    json_t *r;
    json_array_foreach(reads, i, r)
    {
        const char *u = json_string_value(json_object_get(r, "endpoint"));
        json_t *rc = json_object_get(r, "readConcerns");
        if (!json_is_object(r) || !u || !json_is_array(rc)) {
            st = gs_error_set(err, 0, "INVALID_RESPONSE",
                              "cluster metadata read endpoint %zu needs a string endpoint and a "
                              "readConcerns array",
                              i);
            goto done;
        }
        unsigned bits = 0;
        size_t k;
        json_t *cv;
        json_array_foreach(rc, k, cv)
        {
            unsigned b = concern_bit(json_string_value(cv));
            if (!b) {
                st = gs_error_set(err, 0, "INVALID_RESPONSE",
                                  "cluster metadata holds an invalid read concern");
                goto done;
            }
            bits |= b;
        }
        cl_endpoint *ep = discovered(c, db_enc, u, err);
        if (!ep) {
            st = GS_ERROR;
            goto done;
        }
        out->reads[out->nreads].ep = ep;
        out->reads[out->nreads].concerns = bits;
        out->nreads++;
    }
    /* The fingerprint: primary, term, and the read endpoints (sorted by URL). */
    gs_buf fp;
    gs_buf_init(&fp);
    gs_buf_printf(&fp, "%s|%s|", out->primary ? out->primary->base : "", out->term);
    const char **urls = gs_calloc(out->nreads + 1, sizeof *urls);
    unsigned *bits = gs_calloc(out->nreads + 1, sizeof *bits);
    for (size_t a = 0; urls && bits && a < out->nreads; a++) {
        size_t p = a;
        while (p > 0 && strcmp(urls[p - 1], out->reads[a].ep->base) > 0) {
            urls[p] = urls[p - 1];
            bits[p] = bits[p - 1];
            p--;
        }
        urls[p] = out->reads[a].ep->base;
        bits[p] = out->reads[a].concerns;
    }
    for (size_t a = 0; urls && bits && a < out->nreads; a++)
        gs_buf_printf(&fp, "%s=%u;", urls[a], bits[a]);
    gs_free(urls);
    gs_free(bits);
    out->fingerprint = gs_buf_take(&fp, NULL);
    out->known = 1;
done:
    gs_buf_free(&enc);
    if (st != GS_OK)
        cl_cluster_clear(out);
    return st;
}

/* Read routing from the first endpoint that yields it. *changed: the fingerprint moved. */
static gs_status refresh(gs_client_db *db, int *changed, gs_error *err)
{
    gs_client *c = db->c;
    pthread_mutex_lock(&db->refresh_mu);
    /* Candidates: the starters, then the current primary and readable endpoints. */
    size_t cap = c->nstarters + 1;
    pthread_mutex_lock(&db->mu);
    cap += db->cluster.nreads;
    cl_endpoint **cand = gs_calloc(cap, sizeof *cand);
    size_t n = 0;
    for (size_t i = 0; cand && i < c->nstarters; i++)
        cand[n++] = c->starters[i];
    if (cand && db->cluster.primary)
        cand[n++] = db->cluster.primary;
    for (size_t i = 0; cand && i < db->cluster.nreads; i++)
        cand[n++] = db->cluster.reads[i].ep;
    pthread_mutex_unlock(&db->mu);
    gs_status st = GS_ERROR;
    gs_error last;
    gs_error_init(&last);
    int tried = 0, moved = 0;
    for (size_t i = 0; i < n && st != GS_OK; i++) {
        int dup = 0;
        for (size_t k = 0; k < i; k++)
            dup |= cand[k] == cand[i];
        if (dup)
            continue;
        tried++;
        char url[1024];
        snprintf(url, sizeof url, "%s/db/%s/cluster", cand[i]->base, db->id_enc);
        cl_http_reply r;
        if (cl_http_perform(c->http, "GET", url, NULL, 0, c->cfg.discovery_timeout_ms, &r, &last) !=
            GS_OK)
            continue;
        if (r.status != 200) {
            gs_error_set(&last, (int)r.status, "ROUTING_ERROR", "%s answered HTTP %ld", url,
                         r.status);
            cl_http_reply_clear(&r);
            continue;
        }
        json_t *j = NULL;
        gs_status js = cl_http_json(&r, &j, err);
        cl_http_reply_clear(&r);
        cl_cluster next;
        if (js != GS_OK || cl_cluster_parse(c, db->id, j, &next, err) != GS_OK) {
            json_decref(j);
            gs_free(cand);
            pthread_mutex_unlock(&db->refresh_mu);
            if (js != GS_OK && strcmp(err->code, "INVALID_RESPONSE") != 0)
                gs_error_set(err, 0, "INVALID_RESPONSE", "%s: %s", url, err->message);
            return GS_ERROR;
        }
        json_decref(j);
        pthread_mutex_lock(&db->mu);
        const char *was = db->cluster.fingerprint;
        moved = !was || !next.fingerprint || strcmp(was, next.fingerprint) != 0;
        cl_cluster_clear(&db->cluster);
        db->cluster = next;
        if (moved)
            atomic_fetch_add(&db->route_gen, 1);
        pthread_mutex_unlock(&db->mu);
        st = GS_OK;
    }
    gs_free(cand);
    if (moved)
        cl_db_wake_all(db); /* subscriptions re-check their endpoints (cl_ws_sub.c) */
    pthread_mutex_unlock(&db->refresh_mu);
    if (changed)
        *changed = moved;
    if (st != GS_OK)
        return gs_error_set(err, 0, "ROUTING_ERROR",
                            "could not discover cluster routing for database '%s' from %d "
                            "endpoint(s)%s%s",
                            db->id, tried, last.message[0] ? "; last: " : "", last.message);
    return GS_OK;
}

static gs_status pick_coordinator(gs_client_db *db, int is_write, const char *rc, cl_endpoint **out,
                                  gs_error *err)
{
    gs_client *c = db->c;
    pthread_mutex_lock(&db->mu);
    int known = db->cluster.known;
    pthread_mutex_unlock(&db->mu);
    if (!known && refresh(db, NULL, err) != GS_OK)
        return GS_ERROR;
    pthread_mutex_lock(&db->mu);
    cl_cluster *cl = &db->cluster;
    cl_endpoint *ep = NULL;
    const char *level = rc ? rc : c->read_concern ? c->read_concern : "majority";
    unsigned want = concern_bit(level);
    if (is_write || want == CL_RC_LINEARIZABLE) {
        ep = cl->primary;
        pthread_mutex_unlock(&db->mu);
        if (!ep)
            return gs_error_set(err, 0, "NO_SAFE_PRIMARY",
                                "database '%s' has no known safe primary (cluster metadata "
                                "names none)",
                                db->id);
        *out = ep;
        return GS_OK;
    }
    int64_t now = cl_mono_ms();
    if (c->cfg.read_preference == GS_CLIENT_READ_PRIMARY) {
        ep = cl->primary;
    } else {
        size_t n = 0;
        cl_endpoint **cand = cl->nreads ? gs_malloc(cl->nreads * sizeof *cand) : NULL;
        for (size_t i = 0; cand && i < cl->nreads; i++)
            if ((cl->reads[i].concerns & want) && !removed(cl->reads[i].ep, now))
                cand[n++] = cl->reads[i].ep;
        if (n)
            ep = c->cfg.read_preference == GS_CLIENT_READ_REPLICA ? cand[next_random(c) % n]
                                                                  : cand[0];
        gs_free(cand);
    }
    if (!ep)
        ep = cl->primary;
    for (size_t i = 0; !ep && i < cl->nreads; i++)
        if (cl->reads[i].concerns & CL_RC_LOCAL)
            ep = cl->reads[i].ep;
    pthread_mutex_unlock(&db->mu);
    if (!ep)
        return gs_error_set(err, 0, "ROUTING_ERROR",
                            "no endpoint of database '%s' serves a '%s' read", db->id, level);
    *out = ep;
    return GS_OK;
}

gs_status cl_route_pick(gs_client_db *db, int is_write, const char *read_concern, cl_endpoint **out,
                        gs_error *err)
{
    gs_client *c = db->c;
    switch (c->mode) {
    case CL_STATIC: *out = pick_static(c, is_write); return GS_OK;
    case CL_COORDINATOR: return pick_coordinator(db, is_write, read_concern, out, err);
    default: *out = c->primary; return GS_OK;
    }
}

static int refresh_code(const char *code)
{
    return !strcmp(code, "STALE_PRIMARY") || !strcmp(code, "AUTHORITY_LOST") ||
           !strcmp(code, "COORDINATOR_UNAVAILABLE") || !strcmp(code, "NO_SAFE_PRIMARY") ||
           !strcmp(code, "CONNECTION_ERROR");
}

int cl_route_after_error(gs_client_db *db, cl_call *call, const gs_error *err)
{
    gs_client *c = db->c;
    if (c->mode == CL_STATIC) {
        if (call->is_write || !call->ep || call->ep == c->primary ||
            strcmp(err->code, "CONNECTION_ERROR") != 0)
            return 0;
        pthread_mutex_lock(&call->ep->mu);
        call->ep->removed_until_ms = cl_mono_ms() + c->cfg.health_cache_ms;
        call->ep->usable = 0;
        pthread_mutex_unlock(&call->ep->mu);
        return call->attempt == 0;
    }
    if (c->mode != CL_COORDINATOR || !refresh_code(err->code))
        return 0;
    gs_error rerr;
    gs_error_init(&rerr);
    if (refresh(db, NULL, &rerr) != GS_OK) {
        /* Routing is unknown now: the next call discovers again. */
        pthread_mutex_lock(&db->mu);
        cl_cluster_clear(&db->cluster);
        pthread_mutex_unlock(&db->mu);
    }
    return !call->is_write && call->attempt == 0;
}

gs_status cl_route_refresh(gs_client_db *db, int *changed, gs_error *err)
{
    if (changed)
        *changed = 0;
    if (db->c->mode != CL_COORDINATOR)
        return GS_OK;
    return refresh(db, changed, err);
}

int cl_cluster_serves(const cl_cluster *cl, const cl_endpoint *ep)
{
    if (!cl->known || !ep)
        return 0;
    if (cl->primary == ep)
        return 1;
    for (size_t i = 0; i < cl->nreads; i++)
        if (cl->reads[i].ep == ep)
            return 1;
    return 0;
}

int cl_route_reroute(gs_client_db *db, cl_endpoint *ep, cl_endpoint **to, gs_error *err)
{
    *to = NULL;
    if (db->c->mode != CL_COORDINATOR)
        return CL_REROUTE_KEEP;
    pthread_mutex_lock(&db->mu);
    int known = db->cluster.known;
    int serves = cl_cluster_serves(&db->cluster, ep);
    pthread_mutex_unlock(&db->mu);
    if (!known || serves)
        return CL_REROUTE_KEEP;
    gs_error e;
    gs_error_init(&e);
    cl_endpoint *pick = NULL;
    if (cl_route_pick(db, 0, NULL, &pick, &e) != GS_OK) {
        gs_error_set(err, 0, e.code,
                     "routing of database '%s' changed and no longer lists %s, and no other "
                     "endpoint can take its subscriptions: %s",
                     db->id, ep->base, e.message);
        return CL_REROUTE_FAIL;
    }
    if (pick == ep)
        return CL_REROUTE_KEEP;
    *to = pick;
    return CL_REROUTE_MOVE;
}

gs_status gs_client_route(gs_client_db *db, int is_write, char *buf, size_t size, gs_error *err)
{
    gs_error_init(err);
    if (!db || !buf || !size)
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "gs_client_route needs a db and a buffer");
    cl_endpoint *ep;
    if (cl_route_pick(db, is_write, NULL, &ep, err) != GS_OK)
        return GS_ERROR;
    snprintf(buf, size, "%s", ep->base);
    return GS_OK;
}
