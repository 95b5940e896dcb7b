/*
 * libgatestream-client internals: the client, its endpoints and database handles, and one
 * call in flight. Shared by the modules of client/src; nothing here is installed.
 *
 * Ownership: the client owns its endpoints (a list that only grows until close), its
 * database handles, the HTTP engine and, through each database handle, one WebSocket
 * connection per endpoint the database was reached on. A cl_call is owned by whoever holds
 * it: the submitter until a transport accepts it, then the transport until it hands it to
 * cl_call_finish, which frees it.
 *
 * Threads: gs_client.mu guards the endpoint list and the database list; gs_client_db.mu
 * guards its targets and routing state; cl_endpoint.mu guards its capability and latency
 * caches. Lock order: client.mu, then db.refresh_mu, then db.mu, then endpoint.mu; a
 * WebSocket connection's own lock is never held while taking one of these. Two connections'
 * locks are held together only while a subscription moves between them (routing changed,
 * cl_ws_sub.c), taken in address order, and nothing else is taken under them.
 */
#ifndef GS_CLIENT_INTERNAL_H
#define GS_CLIENT_INTERNAL_H

#include <gatestream/client.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

typedef struct cl_http cl_http;
typedef struct cl_ws cl_ws;

/** One server (a base URL), shared by every database handle that reaches it. */
typedef struct cl_endpoint {
    char *base;    /**< http(s)://host:port[/prefix], no trailing slash */
    char *ws_base; /**< ws(s)://host:port[/prefix] */
    char *host;    /**< without brackets */
    int port;
    int tls;
    char *prefix; /**< path prefix ("" or "/x") */
    pthread_mutex_t mu;
    /* GET /capabilities, read once (under mu) */
    int caps_known;
    int accepts_sql;
    char digest[96];
    /* GET /health latency for `nearest` (under mu) */
    int64_t rtt_us;
    int64_t measured_at_ms; /**< 0 = never */
    int usable;
    int64_t removed_until_ms; /**< a replica that failed a read is skipped until then */
} cl_endpoint;

/** One (database, endpoint) pair: its WebSocket connection, made on first use. */
typedef struct cl_target {
    cl_endpoint *ep;
    cl_ws *ws;
} cl_target;

/** Routing metadata of a database in coordinator mode (GET /db/{id}/cluster). */
typedef struct cl_read_ep {
    cl_endpoint *ep;
    unsigned concerns; /**< CL_RC_* bits */
} cl_read_ep;

enum { CL_RC_LOCAL = 1, CL_RC_MAJORITY = 2, CL_RC_LINEARIZABLE = 4 };

typedef struct cl_cluster {
    int known;
    cl_endpoint *primary; /**< NULL: no safe primary */
    char term[32];
    cl_read_ep *reads;
    size_t nreads;
    char *fingerprint;
} cl_cluster;

struct gs_client_db {
    gs_client *c;
    char *id;
    char *id_enc; /**< percent-encoded */
    pthread_mutex_t mu;
    cl_target *targets;
    size_t ntargets, captargets;
    cl_cluster cluster;
    pthread_mutex_t refresh_mu; /**< one discovery at a time */
    /** Bumped each time discovery installs routing with another fingerprint; each
     * connection's I/O thread then re-checks where its subscriptions belong. */
    atomic_uint route_gen;
};

/** The effective mode after gs_client_open. */
enum { CL_SINGLE = 1, CL_STATIC = 2, CL_COORDINATOR = 3 };

struct gs_client {
    gs_client_config cfg; /**< copied; its strings point into the fields below */
    int mode;
    int use_ws;
    char **headers; /**< "Name: value", the bearer token included */
    size_t nheaders;
    char **protocols; /**< offered subprotocols, sirannon.v1 first; NULL when none */
    size_t nprotocols;
    char *ca_file;
    char *read_concern;
    pthread_mutex_t mu;
    cl_endpoint **eps;
    size_t neps, capeps;
    cl_endpoint *primary;   /**< single and static modes */
    cl_endpoint **replicas; /**< static mode */
    size_t nreplicas;
    cl_endpoint **starters; /**< coordinator mode */
    size_t nstarters;
    gs_client_db **dbs;
    size_t ndbs, capdbs;
    cl_http *http;
    uint64_t rng;             /**< replica choice (under mu) */
    pthread_mutex_t probe_mu; /**< one round of `nearest` probes at a time */
    atomic_int closing;
};

/** One call in flight. */
typedef struct cl_call {
    gs_client_db *db;
    gs_client_op op;
    int is_write;
    int uses_sql;
    char *read_concern; /**< the per-call value (routing in coordinator mode) */
    char *fields;       /**< the body's members without braces */
    size_t fields_len;
    char *name;      /**< registered operation (WebSocket "name" member), or NULL */
    char *http_path; /**< after /db/{id}/: "query", "execute/<name>" ... */
    const char *ws_type;
    int64_t timeout_ms; /**< 0 = none */
    int attempt;
    int inline_http; /**< synchronous: run HTTP on the calling thread */
    cl_endpoint *ep; /**< where it went */
    gs_client_done_fn done;
    void *user;
} cl_call;

/* ---- client.c ---- */
int64_t cl_now_ms(void);
/** Monotonic milliseconds. */
int64_t cl_mono_ms(void);
/** 1 on a thread the library owns (a callback may be running). */
int cl_on_library_thread(void);
void cl_mark_library_thread(void);
/** Run a call: route it, check capabilities, hand it to its transport. On GS_ERROR the call
 * is still the caller's. */
gs_status cl_call_dispatch(cl_call *call, gs_error *err);
/** A transport's answer: data is the result JSON (borrowed) when st == GS_OK. Frees call. */
void cl_call_finish(cl_call *call, gs_status st, json_t *data, const gs_error *err);
void cl_call_free(cl_call *call);
/** The endpoint for base URL `url` (created when unknown). NULL on OOM / bad URL. */
cl_endpoint *cl_client_endpoint(gs_client *c, const char *url, gs_error *err);
/** The WebSocket connection of (db, ep), made on first use. */
cl_ws *cl_db_ws(gs_client_db *db, cl_endpoint *ep, gs_error *err);
/** Wake the I/O thread of every connection of db (routing changed). Takes db.mu. */
void cl_db_wake_all(gs_client_db *db);

/* ---- cl_url.c ---- */
typedef struct cl_url {
    int tls;
    int ws; /**< the scheme was ws/wss */
    char *host;
    int port;
    char *prefix;
} cl_url;
gs_status cl_url_parse(const char *url, cl_url *out, gs_error *err);
void cl_url_clear(cl_url *u);
/** encodeURIComponent into b. */
void cl_url_encode(gs_buf *b, const char *s);

/* ---- cl_caps.c ---- */
/** SQL_NOT_ACCEPTED when ep does not announce query.sql (reads /capabilities once). */
gs_status cl_caps_check_sql(gs_client *c, cl_endpoint *ep, gs_error *err);
/** The registry digest ("" when none); refresh = read /capabilities again. */
gs_status cl_caps_digest(gs_client *c, cl_endpoint *ep, int refresh, char *out, size_t size,
                         gs_error *err);

/* ---- cl_route.c ---- */
gs_status cl_route_pick(gs_client_db *db, int is_write, const char *read_concern, cl_endpoint **out,
                        gs_error *err);
/** After a failed call: refresh routing as 06-client says; returns 1 when a read should be
 * retried once on the new route. */
int cl_route_after_error(gs_client_db *db, cl_call *call, const gs_error *err);
void cl_cluster_clear(cl_cluster *cl);
/** Read routing again (coordinator mode). On GS_OK *changed (may be NULL) says whether the
 * fingerprint differs from the routing held before; when it does, db->route_gen is bumped
 * and the db's connections are woken. On failure the routing held is kept. */
gs_status cl_route_refresh(gs_client_db *db, int *changed, gs_error *err);
/** 1 when routing `cl` still lists ep as the primary or as a readable endpoint. */
int cl_cluster_serves(const cl_cluster *cl, const cl_endpoint *ep);
/** What becomes of the subscriptions held on endpoint `ep` by the routing db holds now
 * (coordinator mode): CL_REROUTE_KEEP (ep still serves, or routing is not known: the next
 * refresh decides), CL_REROUTE_MOVE (*to is the endpoint cl_route_pick chooses for a read)
 * or CL_REROUTE_FAIL (no endpoint can serve them: err says why). */
enum { CL_REROUTE_KEEP = 0, CL_REROUTE_MOVE = 1, CL_REROUTE_FAIL = -1 };
int cl_route_reroute(gs_client_db *db, cl_endpoint *ep, cl_endpoint **to, gs_error *err);
/** Parse a ClusterStatusInfo body (exposed for tests through the routing tests). */
gs_status cl_cluster_parse(gs_client *c, const char *db_id, json_t *j, cl_cluster *out,
                           gs_error *err);

/* ---- cl_request.c ---- */
/** Validate req and build the call's fields / path / type (not routed yet). */
gs_status cl_request_build(gs_client_db *db, const gs_client_request *req, cl_call *call,
                           gs_error *err);
/** Decode a result's data into resp for op. */
gs_status cl_response_decode(gs_client_op op, json_t *data, gs_client_response *resp,
                             gs_error *err);

/* ---- cl_value.c ---- */
/** Append one value in the wire encoding. */
void cl_value_encode(gs_buf *b, const gs_value *v);
/** Append params as a JSON array (positional) or object (named). */
gs_status cl_params_encode(gs_buf *b, const gs_client_params *p, gs_error *err);
/** Bytes needed to hold the decoded text/blob of j (0 for other types); -1 malformed. */
long cl_value_size(json_t *j);
/** Decode j into v; text/blob bytes are written at *store (advanced). 0 ok, -1 malformed. */
int cl_value_decode(json_t *j, gs_value *v, char **store);

/* ---- cl_rows.c ---- */
gs_client_rows *cl_rows_new(void);
/** Decode a JSON array of row objects. */
gs_status cl_rows_from_json(json_t *arr, gs_client_rows **out, gs_error *err);
/** Decode one row object into a one-row set (for change events). */
gs_status cl_rows_from_object(json_t *obj, gs_client_rows **out, gs_error *err);
/** Live-query operations on held rows. */
gs_status cl_rows_insert(gs_client_rows *rows, size_t index, json_t *obj, gs_error *err);
gs_status cl_rows_update(gs_client_rows *rows, size_t index, json_t *obj, gs_error *err);
gs_status cl_rows_delete(gs_client_rows *rows, size_t index);
gs_client_rows *cl_rows_copy(const gs_client_rows *rows);

/* ---- cl_http.c ---- */
typedef struct cl_http_reply {
    long status;
    char *body;
    size_t len;
    int json_type; /**< Content-Type says JSON */
} cl_http_reply;
void cl_http_reply_clear(cl_http_reply *r);
typedef void (*cl_http_done_fn)(void *ctx, gs_status st, cl_http_reply *reply, const gs_error *err);
cl_http *cl_http_new(gs_client *c, gs_error *err);
/** Stop the asynchronous worker; calls still in flight finish with CONNECTION_ERROR. */
void cl_http_free(cl_http *h);
/** Blocking request on the calling thread (a pooled keep-alive handle). body may be NULL
 * for GET. CONNECTION_ERROR / TIMEOUT when no answer came. */
gs_status cl_http_perform(cl_http *h, const char *method, const char *url, const char *body,
                          size_t len, int64_t timeout_ms, cl_http_reply *out, gs_error *err);
/** Asynchronous POST; body is taken (freed even on failure). */
gs_status cl_http_submit(cl_http *h, const char *url, char *body, size_t len, int64_t timeout_ms,
                         cl_http_done_fn done, void *ctx, gs_error *err);
/** Interpret a reply: 2xx JSON -> *out (decref it); an error envelope -> err with the
 * server's code, message, status and details; anything else INVALID_RESPONSE. */
gs_status cl_http_json(const cl_http_reply *r, json_t **out, gs_error *err);
/** Fill err from an {"error":{...}} envelope object; 0 when it was one. */
int cl_error_from_envelope(json_t *errobj, int status, gs_error *err);

#endif
