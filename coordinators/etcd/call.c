/*
 * Endpoints, channels and bounded calls of the etcd coordinator.
 *
 * `endpoints` is parsed at create() (http:// is refused unless allow_insecure). start()
 * creates one gRPC channel per endpoint, with a short reconnect backoff (so a restarted etcd
 * is used again within a second) and keepalive pings that etcd's default policy accepts.
 *
 * gs_etcd_call runs one request on the caller's thread with a completion queue of its own: it
 * tries the endpoint that answered last, then the others, each attempt bounded by what is left
 * of call_timeout_ms (and by dial_timeout_ms while the endpoint is not connected). It moves on
 * only when an endpoint is unavailable; a request that may already have reached etcd (the
 * channel was connected) is retried elsewhere only when it is idempotent, otherwise the caller
 * hears that the outcome is unknown. With `username`, the endpoint's token (Authenticate once
 * per connection) travels as the "token" metadata, and an invalid or expired token is renewed
 * once. Every call is registered so stop() can cancel it and wait for it.
 */
#include "etcd_internal.h"

#include <grpc/support/time.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EC_TOKEN_MAX 4096

gpr_timespec gs_etcd_deadline(uint64_t at_ms)
{
    uint64_t now = gs_etcd_now_ms();
    int64_t left = at_ms > now ? (int64_t)(at_ms - now) : 0;
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(left, GPR_TIMESPAN));
}

/* ------------------------------------------------------------------------------------------ */
/* Endpoints                                                                                  */

static gs_status bad_endpoint(ec_inst *t, const char *entry, const char *why, gs_error *err)
{
    return EC_FAIL(t, err, "INVALID_CONFIG",
                   "etcd coordinator: endpoints entry '%s' %s (expected a comma-separated list "
                   "such as \"https://10.0.0.1:2379,https://10.0.0.2:2379\")",
                   entry, why);
}

static gs_status parse_one(ec_inst *t, const char *entry, gs_error *err)
{
    int tls;
    const char *rest;
    if (strncmp(entry, "https://", 8) == 0) {
        tls = 1;
        rest = entry + 8;
    } else if (strncmp(entry, "http://", 7) == 0) {
        tls = 0;
        rest = entry + 7;
    } else {
        return bad_endpoint(t, entry, "does not start with http:// or https://", err);
    }
    size_t n = strlen(rest);
    while (n && rest[n - 1] == '/')
        n--;
    if (!n || memchr(rest, '/', n))
        return bad_endpoint(t, entry, "is not scheme://host:port", err);
    char hostport[300];
    if (n >= sizeof hostport)
        return bad_endpoint(t, entry, "is too long", err);
    memcpy(hostport, rest, n);
    hostport[n] = '\0';
    const char *port = NULL;
    size_t host_len;
    if (hostport[0] == '[') {
        char *close = strchr(hostport, ']');
        if (!close)
            return bad_endpoint(t, entry, "has an IPv6 address without ']'", err);
        host_len = (size_t)(close - hostport) + 1;
        if (close[1] == ':')
            port = close + 2;
        else if (close[1])
            return bad_endpoint(t, entry, "has text after the IPv6 address", err);
    } else {
        char *colon = strrchr(hostport, ':');
        host_len = colon ? (size_t)(colon - hostport) : n;
        if (colon)
            port = colon + 1;
    }
    if (!host_len)
        return bad_endpoint(t, entry, "has no host", err);
    long p = 2379; /* etcd's client port */
    if (port) {
        char *end;
        p = strtol(port, &end, 10);
        if (!*port || *end || p < 1 || p > 65535 || !isdigit((unsigned char)*port))
            return bad_endpoint(t, entry, "has a port outside 1..65535", err);
    }
    if (!tls && !t->allow_insecure)
        return EC_FAIL(t, err, "INVALID_CONFIG",
                       "etcd coordinator: endpoint '%s' is plaintext http:// and allow_insecure "
                       "is false; use https:// (with tls_ca_cert) or set allow_insecure: true "
                       "for local development only",
                       entry);
    if (t->neps == EC_MAX_ENDPOINTS)
        return bad_endpoint(t, entry, "is one too many (at most 16 endpoints)", err);
    ec_endpoint *ep = &t->eps[t->neps];
    memset(ep, 0, sizeof *ep);
    char target[320];
    snprintf(target, sizeof target, "%.*s:%ld", (int)host_len, hostport, p);
    ep->url = gs_etcd_strdup(t->host, entry);
    ep->target = gs_etcd_strdup(t->host, target);
    ep->tls = tls;
    if (!ep->url || !ep->target || pthread_mutex_init(&ep->auth_mu, NULL) != 0) {
        t->host->free(ep->url);
        t->host->free(ep->target);
        return EC_FAIL(t, err, "INTERNAL_ERROR", "etcd coordinator: out of memory");
    }
    t->neps++;
    return GS_OK;
}

gs_status gs_etcd_endpoints_parse(ec_inst *t, const char *list, gs_error *err)
{
    if (!list || !*list)
        return EC_FAIL(t, err, "INVALID_CONFIG",
                       "etcd coordinator: 'endpoints' is required: the etcd client URLs, "
                       "e.g. \"https://127.0.0.1:2379\"");
    char *copy = gs_etcd_strdup(t->host, list);
    if (!copy || !(t->endpoint_list = gs_etcd_strdup(t->host, list))) {
        t->host->free(copy);
        return EC_FAIL(t, err, "INTERNAL_ERROR", "etcd coordinator: out of memory");
    }
    gs_status rc = GS_OK;
    char *rest = copy;
    int empty = 1;
    for (char *tok = strsep(&rest, ","); tok && rc == GS_OK; tok = strsep(&rest, ",")) {
        while (isspace((unsigned char)*tok))
            tok++;
        size_t n = strlen(tok);
        while (n && isspace((unsigned char)tok[n - 1]))
            tok[--n] = '\0';
        if (!n) {
            rc = EC_FAIL(t, err, "INVALID_CONFIG",
                         "etcd coordinator: 'endpoints' (\"%s\") has "
                         "an empty entry",
                         list);
            break;
        }
        empty = 0;
        rc = parse_one(t, tok, err);
    }
    if (rc == GS_OK && empty)
        rc = EC_FAIL(t, err, "INVALID_CONFIG",
                     "etcd coordinator: 'endpoints' (\"%s\") names no "
                     "endpoint",
                     list);
    t->host->free(copy);
    return rc;
}

void gs_etcd_endpoints_free(ec_inst *t)
{
    for (size_t i = 0; i < t->neps; i++) {
        ec_endpoint *ep = &t->eps[i];
        t->host->free(ep->url);
        t->host->free(ep->target);
        t->host->free(ep->token);
        pthread_mutex_destroy(&ep->auth_mu);
    }
    t->neps = 0;
    t->host->free(t->endpoint_list);
    t->endpoint_list = NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Channels                                                                                   */

gs_status gs_etcd_channels_create(ec_inst *t, gs_error *err)
{
    int keepalive_timeout = t->dial_timeout_ms < 20000 ? (int)t->dial_timeout_ms : 20000;
    grpc_arg args[] = {
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = -1}},
        {GRPC_ARG_INTEGER, GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, {.integer = 100}},
        /* gRPC core reads this as the least time given to one connection attempt. */
        {GRPC_ARG_INTEGER, GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, {.integer = (int)t->dial_timeout_ms}},
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, {.integer = 1000}},
        /* etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time). */
        {GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIME_MS, {.integer = 10000}},
        {GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, {.integer = keepalive_timeout}},
        {GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, {.integer = 0}},
        {GRPC_ARG_INTEGER, GRPC_ARG_ENABLE_RETRIES, {.integer = 0}},
        {GRPC_ARG_INTEGER, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, {.integer = 1}},
    };
    grpc_channel_args ca = {sizeof args / sizeof args[0], args};
    for (size_t i = 0; i < t->neps; i++) {
        ec_endpoint *ep = &t->eps[i];
        grpc_channel_credentials *creds = gs_etcd_channel_creds(t, ep);
        if (!creds) {
            gs_etcd_channels_destroy(t);
            return EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE",
                           "etcd coordinator: cannot build the %s credentials for %s",
                           ep->tls ? "TLS" : "plaintext", ep->url);
        }
        ep->channel = grpc_channel_create(ep->target, creds, &ca);
        grpc_channel_credentials_release(creds);
        if (!ep->channel) {
            gs_etcd_channels_destroy(t);
            return EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE",
                           "etcd coordinator: cannot create a channel to %s", ep->url);
        }
    }
    return GS_OK;
}

void gs_etcd_channels_destroy(ec_inst *t)
{
    for (size_t i = 0; i < t->neps; i++) {
        ec_endpoint *ep = &t->eps[i];
        if (ep->channel)
            grpc_channel_destroy(ep->channel);
        ep->channel = NULL;
        /* A new connection authenticates again. */
        t->host->free(ep->token);
        ep->token = NULL;
        ep->auth_off = 0;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* One attempt                                                                                */

/* Register a call of this thread (fails when the instance is not running). mu not held. */
static int inflight_enter(ec_inst *t, ec_inflight *fl)
{
    memset(fl, 0, sizeof *fl);
    pthread_mutex_lock(&t->mu);
    int ok = t->state == EC_RUNNING;
    if (ok) {
        fl->next = t->inflight;
        if (t->inflight)
            t->inflight->prev = fl;
        t->inflight = fl;
        t->ninflight++;
    }
    pthread_mutex_unlock(&t->mu);
    return ok;
}

static void inflight_leave(ec_inst *t, ec_inflight *fl)
{
    pthread_mutex_lock(&t->mu);
    if (fl->prev)
        fl->prev->next = fl->next;
    else
        t->inflight = fl->next;
    if (fl->next)
        fl->next->prev = fl->prev;
    t->ninflight--;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

/* One request/response exchange on ep (unary, or one message each way on a stream that ends
 * on half-close). Returns 1 when the instance is stopping (nothing was sent). */
static int attempt(ec_inst *t, ec_inflight *fl, ec_endpoint *ep, const char *method,
                   grpc_byte_buffer *req, const char *token, uint64_t deadline_ms, ec_reply *r)
{
    r->status = GRPC_STATUS_UNKNOWN;
    r->details[0] = '\0';
    r->body = NULL;
    r->ep = ep;
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    if (!cq) {
        r->status = GRPC_STATUS_RESOURCE_EXHAUSTED;
        snprintf(r->details, sizeof r->details, "no completion queue");
        return 0;
    }
    pthread_mutex_lock(&t->mu);
    if (t->state != EC_RUNNING) {
        pthread_mutex_unlock(&t->mu);
        grpc_completion_queue_shutdown(cq);
        grpc_completion_queue_destroy(cq);
        return 1;
    }
    grpc_call *call = grpc_channel_create_call(ep->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               grpc_slice_from_static_string(method), NULL,
                                               gs_etcd_deadline(deadline_ms), NULL);
    fl->call = call;
    pthread_mutex_unlock(&t->mu);

    grpc_metadata md;
    memset(&md, 0, sizeof md);
    grpc_metadata_array md_in, trailing;
    grpc_metadata_array_init(&md_in);
    grpc_metadata_array_init(&trailing);
    grpc_byte_buffer *resp = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (token) {
        md.key = grpc_slice_from_static_string("token");
        md.value = grpc_slice_from_copied_string(token);
        ops[0].data.send_initial_metadata.count = 1;
        ops[0].data.send_initial_metadata.metadata = &md;
    }
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_in;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &resp;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    grpc_call_error e = grpc_call_start_batch(call, ops, 6, fl, NULL);
    if (e == GRPC_CALL_OK) {
        /* The call's deadline (or stop's cancel) bounds this wait. */
        grpc_completion_queue_pluck(cq, fl, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        r->status = status;
        size_t n = GRPC_SLICE_LENGTH(details);
        if (n >= sizeof r->details)
            n = sizeof r->details - 1;
        memcpy(r->details, GRPC_SLICE_START_PTR(details), n);
        r->details[n] = '\0';
        r->body = resp;
    } else {
        r->status = GRPC_STATUS_INTERNAL;
        snprintf(r->details, sizeof r->details, "the call could not be started: %s",
                 grpc_call_error_to_string(e));
    }
    pthread_mutex_lock(&t->mu);
    fl->call = NULL;
    int stopping = t->state != EC_RUNNING;
    pthread_mutex_unlock(&t->mu);
    grpc_call_unref(call);
    grpc_slice_unref(details);
    if (token)
        grpc_slice_unref(md.value);
    grpc_metadata_array_destroy(&md_in);
    grpc_metadata_array_destroy(&trailing);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    if (stopping && r->status != GRPC_STATUS_OK) {
        if (r->body)
            grpc_byte_buffer_destroy(r->body);
        r->body = NULL;
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Tokens                                                                                     */

static gs_status token_cached(ec_inst *t, ec_endpoint *ep, char *tok, size_t cap, int *have)
{
    pthread_mutex_lock(&t->mu);
    *have = ep->auth_off || ep->token;
    if (ep->auth_off)
        tok[0] = '\0';
    else if (ep->token)
        snprintf(tok, cap, "%s", ep->token);
    pthread_mutex_unlock(&t->mu);
    return GS_OK;
}

static gs_status authenticate(ec_inst *t, ec_inflight *fl, ec_endpoint *ep, uint64_t deadline,
                              char *tok, size_t cap, int *unreachable, gs_error *err)
{
    Etcdserverpb__AuthenticateRequest req = ETCDSERVERPB__AUTHENTICATE_REQUEST__INIT;
    req.name = t->username;
    req.password = t->password;
    grpc_byte_buffer *bb = gs_etcd_pack(t->host, &req.base);
    if (!bb)
        return EC_FAIL(t, err, "INTERNAL_ERROR", "etcd coordinator: out of memory");
    ec_reply r;
    int stopped = attempt(t, fl, ep, EC_METHOD_AUTHENTICATE, bb, NULL, deadline, &r);
    grpc_byte_buffer_destroy(bb);
    if (stopped)
        return EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE",
                       "etcd coordinator: the instance is stopping");
    gs_status rc = GS_OK;
    if (r.status == GRPC_STATUS_OK) {
        Etcdserverpb__AuthenticateResponse *resp =
            (Etcdserverpb__AuthenticateResponse *)gs_etcd_unpack(
                t->host, &etcdserverpb__authenticate_response__descriptor, r.body);
        if (!resp || !resp->token || !*resp->token || strlen(resp->token) >= cap) {
            rc = EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE",
                         "etcd coordinator: %s answered Authenticate without a usable token",
                         ep->url);
        } else {
            snprintf(tok, cap, "%s", resp->token);
            char *keep = gs_etcd_strdup(t->host, resp->token);
            pthread_mutex_lock(&t->mu);
            t->host->free(ep->token);
            ep->token = keep;
            pthread_mutex_unlock(&t->mu);
        }
        gs_etcd_free_msg(t->host, resp ? &resp->base : NULL);
    } else if (r.status == GRPC_STATUS_FAILED_PRECONDITION &&
               strstr(r.details, "authentication is not enabled")) {
        pthread_mutex_lock(&t->mu);
        ep->auth_off = 1;
        pthread_mutex_unlock(&t->mu);
        t->host->log(t->host, GS_LOG_WARN, EC_COMPONENT,
                     "%s has authentication disabled; username '%s' is not used there", ep->url,
                     t->username);
        tok[0] = '\0';
    } else if (r.status == GRPC_STATUS_UNAVAILABLE || r.status == GRPC_STATUS_DEADLINE_EXCEEDED) {
        *unreachable = 1;
        rc = EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE", "%s: %s", ep->url, r.details);
    } else {
        rc = EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE",
                     "etcd coordinator: %s refused user '%s': %s. Check `username` and "
                     "`password` (and that the user exists: etcdctl user get %s)",
                     ep->url, t->username, r.details, t->username);
    }
    if (r.body)
        grpc_byte_buffer_destroy(r.body);
    return rc;
}

static gs_status get_token(ec_inst *t, ec_inflight *fl, ec_endpoint *ep, uint64_t deadline,
                           char *tok, size_t cap, int *unreachable, gs_error *err)
{
    int have;
    tok[0] = '\0';
    token_cached(t, ep, tok, cap, &have);
    if (have)
        return GS_OK;
    /* One Authenticate per endpoint at a time; the others wait for its token. */
    pthread_mutex_lock(&ep->auth_mu);
    token_cached(t, ep, tok, cap, &have);
    gs_status rc = have ? GS_OK : authenticate(t, fl, ep, deadline, tok, cap, unreachable, err);
    pthread_mutex_unlock(&ep->auth_mu);
    return rc;
}

gs_status gs_etcd_token(ec_inst *t, ec_endpoint *ep, uint64_t deadline_ms, char *tok, size_t cap,
                        int *unreachable, gs_error *err)
{
    tok[0] = '\0';
    if (!t->username)
        return GS_OK;
    ec_inflight fl;
    if (!inflight_enter(t, &fl))
        return EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE",
                       "etcd coordinator: the instance is not started, or was stopped");
    gs_status rc = get_token(t, &fl, ep, deadline_ms, tok, cap, unreachable, err);
    inflight_leave(t, &fl);
    return rc;
}

void gs_etcd_token_invalid(ec_inst *t, ec_endpoint *ep, const char *used)
{
    pthread_mutex_lock(&t->mu);
    if (ep->token && used && strcmp(ep->token, used) == 0) {
        t->host->free(ep->token);
        ep->token = NULL;
    }
    pthread_mutex_unlock(&t->mu);
}

/* ------------------------------------------------------------------------------------------ */
/* The call                                                                                   */

gs_status gs_etcd_status_error(ec_inst *t, const char *what, const ec_reply *reply, gs_error *err)
{
    return EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE",
                   "etcd coordinator: %s refused %s: %s (gRPC status %d)",
                   reply->ep ? reply->ep->url : "etcd", what, reply->details, (int)reply->status);
}

gs_status gs_etcd_call(ec_inst *t, const char *method, const ProtobufCMessage *req, int idempotent,
                       ec_reply *reply, gs_error *err)
{
    return gs_etcd_call_within(t, method, req, idempotent, t->call_timeout_ms, reply, err);
}

gs_status gs_etcd_call_within(ec_inst *t, const char *method, const ProtobufCMessage *req,
                              int idempotent, int64_t budget_ms, ec_reply *reply, gs_error *err)
{
    memset(reply, 0, sizeof *reply);
    ec_inflight fl;
    if (!inflight_enter(t, &fl))
        return EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE",
                       "etcd coordinator: the instance is not started, or was stopped; start it "
                       "before calling it");
    grpc_byte_buffer *bb = gs_etcd_pack(t->host, req);
    if (!bb) {
        inflight_leave(t, &fl);
        return EC_FAIL(t, err, "INTERNAL_ERROR", "etcd coordinator: out of memory");
    }
    uint64_t deadline = gs_etcd_now_ms() + (uint64_t)budget_ms;
    pthread_mutex_lock(&t->mu);
    size_t start = (size_t)t->current;
    pthread_mutex_unlock(&t->mu);
    char last[600] = "";
    gs_status rc = GS_ERROR;
    int done = 0;
    for (size_t i = 0; i < t->neps && !done; i++) {
        size_t idx = (start + i) % t->neps;
        ec_endpoint *ep = &t->eps[idx];
        int retried_auth = 0;
        for (;;) {
            uint64_t now = gs_etcd_now_ms();
            if (now >= deadline) {
                if (!last[0])
                    snprintf(last, sizeof last, "no answer in time");
                i = t->neps;
                break;
            }
            int ready = grpc_channel_check_connectivity_state(ep->channel, 1) == GRPC_CHANNEL_READY;
            uint64_t at = deadline;
            if (!ready && now + (uint64_t)t->dial_timeout_ms < at)
                at = now + (uint64_t)t->dial_timeout_ms;
            char tok[EC_TOKEN_MAX];
            tok[0] = '\0';
            if (t->username) {
                int unreachable = 0;
                if (get_token(t, &fl, ep, at, tok, sizeof tok, &unreachable, err) != GS_OK) {
                    if (!unreachable) {
                        done = 1; /* refused: every endpoint would refuse it */
                        break;
                    }
                    snprintf(last, sizeof last, "%s", err->message);
                    break;
                }
            }
            /* gRPC takes the slices of a sent byte buffer: every attempt sends a copy. */
            grpc_byte_buffer *copy = grpc_byte_buffer_copy(bb);
            int stopped = attempt(t, &fl, ep, method, copy, tok[0] ? tok : NULL, at, reply);
            grpc_byte_buffer_destroy(copy);
            if (stopped) {
                (void)EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE",
                              "etcd coordinator: the instance was stopped during the call");
                done = 1;
                break;
            }
            grpc_status_code st = reply->status;
            if (st == GRPC_STATUS_OK) {
                pthread_mutex_lock(&t->mu);
                t->current = (int)idx;
                pthread_mutex_unlock(&t->mu);
                rc = GS_OK;
                done = 1;
                break;
            }
            if (t->username && !retried_auth &&
                (st == GRPC_STATUS_UNAUTHENTICATED ||
                 (st == GRPC_STATUS_INVALID_ARGUMENT && strstr(reply->details, "user name")))) {
                /* The token expired or was never wanted before (auth enabled since): again. */
                retried_auth = 1;
                gs_etcd_token_invalid(t, ep, tok);
                pthread_mutex_lock(&t->mu);
                ep->auth_off = 0;
                pthread_mutex_unlock(&t->mu);
                if (reply->body)
                    grpc_byte_buffer_destroy(reply->body);
                reply->body = NULL;
                continue;
            }
            if (st == GRPC_STATUS_UNAVAILABLE || (st == GRPC_STATUS_DEADLINE_EXCEEDED && !ready)) {
                snprintf(last, sizeof last, "%s: %s", ep->url,
                         reply->details[0] ? reply->details : "unavailable");
                if (ready && !idempotent) {
                    (void)EC_FAIL(
                        t, err, "COORDINATOR_UNAVAILABLE",
                        "etcd coordinator: the connection to %s failed during a write (%s); "
                        "whether it was applied is unknown: read the state again",
                        ep->url, reply->details);
                    done = 1;
                }
                break;
            }
            if (st == GRPC_STATUS_DEADLINE_EXCEEDED) {
                (void)EC_FAIL(
                    t, err, "COORDINATOR_UNAVAILABLE",
                    "etcd coordinator: %s did not answer within call_timeout_ms (%lld ms)%s",
                    ep->url, (long long)t->call_timeout_ms,
                    idempotent ? "" : "; whether the write was applied is unknown");
                done = 1;
                break;
            }
            rc = GS_DECLINED; /* etcd answered with an error: the caller maps it */
            done = 1;
            break;
        }
    }
    grpc_byte_buffer_destroy(bb);
    inflight_leave(t, &fl);
    if (!done)
        (void)EC_FAIL(
            t, err, "COORDINATOR_UNAVAILABLE",
            "etcd coordinator: cannot reach etcd at %s within %lld ms (%s); check that etcd "
            "runs there and that `endpoints` is right",
            t->endpoint_list, (long long)budget_ms, last);
    if (rc != GS_OK && reply->body) {
        grpc_byte_buffer_destroy(reply->body);
        reply->body = NULL;
    }
    return rc;
}
