/* Topology-aware routing (06-client) against real servers and a fake responder: static
 * primary + replicas with read preference primary / replica / nearest (GET /health latency,
 * an unreachable endpoint unusable), a replica failing at the transport marked removed and
 * the read retried on the primary; coordinator discovery through GET /db/{id}/cluster,
 * writes rerouted after STALE_PRIMARY without an automatic retry, a read retried once after a
 * refresh, malformed metadata (INVALID_RESPONSE), no reachable starter (ROUTING_ERROR), no
 * primary (NO_SAFE_PRIMARY). Two independent servers stand for primary and replica: each
 * holds a row naming its role, so a read shows where it went. */
#include <criterion/criterion.h>

#include <gatestream/client.h>

#include "support.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static gst_server pri, rep;

static void seed(gst_server *s, const char *role)
{
    int status;
    char out[512], body[256];
    cr_assert_eq(gst_http(s->port, "POST", "/db/main/execute",
                          "{\"sql\":\"CREATE TABLE who (role TEXT)\"}", &status, out, sizeof out),
                 0);
    cr_assert_eq(status, 200, "%s", out);
    snprintf(body, sizeof body, "{\"sql\":\"INSERT INTO who VALUES ('%s')\"}", role);
    cr_assert_eq(gst_http(s->port, "POST", "/db/main/execute", body, &status, out, sizeof out), 0);
    cr_assert_eq(status, 200, "%s", out);
}

static void start_two(void)
{
    cr_assert_eq(gst_server_start(&pri, NULL, NULL, NULL, 1), 0);
    cr_assert_eq(gst_server_start(&rep, NULL, NULL, NULL, 1), 0);
    seed(&pri, "primary");
    seed(&rep, "replica");
}

static void stop_two(void)
{
    gst_server_cleanup(&pri);
    gst_server_cleanup(&rep);
}

static gs_client *open_with(const char *const *urls, size_t n, gs_client_config *cfg)
{
    gs_client *c;
    gs_error err;
    cr_assert_eq(gs_client_open(urls, n, cfg, &c, &err), GS_OK, "%s: %s", err.code, err.message);
    return c;
}

/* Which server answered: the role row of the database that served the read. */
static const char *who(gs_client_db *db, const char *read_concern, char *buf, size_t size)
{
    gs_client_call_opts o;
    gs_client_call_opts_init(&o);
    o.read_concern = read_concern;
    gs_client_rows *r;
    gs_error err;
    if (gs_client_query(db, "SELECT role FROM who", NULL, &o, &r, &err) != GS_OK) {
        snprintf(buf, size, "error %s: %s", err.code, err.message);
        return buf;
    }
    snprintf(buf, size, "%s", gs_client_rows_get(r, 0, 0)->u.text.ptr);
    gs_client_rows_free(r);
    return buf;
}

static int count_rows(gst_server *s)
{
    int status;
    char out[512];
    gst_http(s->port, "POST", "/db/main/query", "{\"sql\":\"SELECT count(*) AS n FROM who\"}",
             &status, out, sizeof out);
    int n = -1;
    const char *p = strstr(out, "\"n\":");
    if (p)
        sscanf(p + 4, "%d", &n);
    return n;
}

static void static_routing(gs_client_transport t)
{
    char a[64], b[64], buf[256];
    const char *urls[] = {gst_server_url(&pri, a, sizeof a), gst_server_url(&rep, b, sizeof b)};
    gs_client_config cfg;
    gs_client_config_init(&cfg);
    cfg.transport = t;
    cfg.read_preference = GS_CLIENT_READ_REPLICA;
    gs_client *c = open_with(urls, 2, &cfg);
    gs_error err;
    gs_client_db *db = gs_client_database(c, "main", &err);
    cr_assert_str_eq(who(db, NULL, buf, sizeof buf), "replica");
    gs_client_exec ex;
    cr_assert_eq(gs_client_execute(db, "INSERT INTO who VALUES ('written')", NULL, NULL, &ex, &err),
                 GS_OK, "%s", err.message);
    cr_assert_eq(count_rows(&pri), 2, "the write went to the primary");
    cr_assert_eq(count_rows(&rep), 1, "and not to the replica");
    char route[128];
    cr_assert_eq(gs_client_route(db, 1, route, sizeof route, &err), GS_OK);
    cr_assert_str_eq(route, urls[0]);
    cr_assert_eq(gs_client_route(db, 0, route, sizeof route, &err), GS_OK);
    cr_assert_str_eq(route, urls[1]);
    gs_client_close(c);
    /* read preference primary; explicit primary / replicas options */
    gs_client_config_init(&cfg);
    cfg.transport = t;
    cfg.mode = GS_CLIENT_MODE_STATIC;
    cfg.primary = urls[0];
    cfg.replicas = &urls[1];
    cfg.replica_count = 1;
    c = open_with(NULL, 0, &cfg);
    db = gs_client_database(c, "main", &err);
    cr_assert_str_eq(who(db, NULL, buf, sizeof buf), "primary");
    gs_client_close(c);
}

Test(client_routing, static_over_http, .init = start_two, .fini = stop_two)
{
    static_routing(GS_CLIENT_TRANSPORT_HTTP);
}

Test(client_routing, static_over_websocket, .init = start_two, .fini = stop_two)
{
    static_routing(GS_CLIENT_TRANSPORT_WEBSOCKET);
}

Test(client_routing, failed_replica_falls_back_to_the_primary, .init = start_two, .fini = stop_two)
{
    char a[64], dead[64], buf[256];
    snprintf(dead, sizeof dead, "http://127.0.0.1:%d", gst_free_port());
    const char *urls[] = {gst_server_url(&pri, a, sizeof a), dead};
    for (int t = 0; t < 2; t++) {
        gs_client_config cfg;
        gs_client_config_init(&cfg);
        cfg.transport = t ? GS_CLIENT_TRANSPORT_WEBSOCKET : GS_CLIENT_TRANSPORT_HTTP;
        cfg.read_preference = GS_CLIENT_READ_REPLICA;
        gs_client *c = open_with(urls, 2, &cfg);
        gs_error err;
        gs_client_db *db = gs_client_database(c, "main", &err);
        cr_assert_str_eq(who(db, NULL, buf, sizeof buf), "primary",
                         "the read failed on the dead replica and was retried on the primary");
        char route[128];
        cr_assert_eq(gs_client_route(db, 0, route, sizeof route, &err), GS_OK);
        cr_assert_str_eq(route, urls[0], "the failed replica is removed from reads");
        gs_client_close(c);
    }
}

/* A server that answers /health slowly, and 404 for the rest. */
static void slow_health(void *user, const char *method, const char *path, const char *body,
                        gst_reply *reply)
{
    (void)user;
    (void)method;
    (void)body;
    if (!strcmp(path, "/health")) {
        reply->status = 200;
        reply->delay_ms = 400;
        snprintf(reply->body, sizeof reply->body, "{\"status\":\"ok\"}");
    }
}

Test(client_routing, nearest_by_health_latency, .init = start_two, .fini = stop_two)
{
    gst_fake *slow = gst_fake_start(slow_health, NULL);
    cr_assert(slow);
    char s[64], b[64], dead[64], buf[256];
    snprintf(s, sizeof s, "http://127.0.0.1:%d", gst_fake_port(slow));
    snprintf(dead, sizeof dead, "http://127.0.0.1:%d", gst_free_port());
    /* primary: the slow one; replicas: an unreachable one and the real replica */
    const char *urls[] = {s, dead, gst_server_url(&rep, b, sizeof b)};
    gs_client_config cfg;
    gs_client_config_init(&cfg);
    cfg.transport = GS_CLIENT_TRANSPORT_HTTP;
    cfg.read_preference = GS_CLIENT_READ_NEAREST;
    gs_client *c = open_with(urls, 3, &cfg);
    gs_error err;
    gs_client_db *db = gs_client_database(c, "main", &err);
    char route[128];
    cr_assert_eq(gs_client_route(db, 0, route, sizeof route, &err), GS_OK);
    cr_assert_str_eq(route, urls[2], "the fastest usable endpoint");
    cr_assert_str_eq(who(db, NULL, buf, sizeof buf), "replica");
    int probes = gst_fake_hits(slow, "/health");
    cr_assert_eq(probes, 1);
    cr_assert_eq(gs_client_route(db, 0, route, sizeof route, &err), GS_OK);
    cr_assert_eq(gst_fake_hits(slow, "/health"), probes, "latency is cached");
    gs_client_close(c);
    gst_fake_stop(slow);
}

/* ---- coordinator mode ---- */

typedef struct coord {
    pthread_mutex_t mu;
    char cluster[2][1024]; /* the answer before and after the switch */
    int switched;          /* 1 once the stale node refused a write or a read */
    int malformed;
    int status; /* /cluster status (0 = 200) */
} coord;

static void starter(void *user, const char *method, const char *path, const char *body,
                    gst_reply *reply)
{
    (void)method;
    (void)body;
    coord *co = user;
    if (strcmp(path, "/db/main/cluster") != 0)
        return;
    pthread_mutex_lock(&co->mu);
    reply->status = co->status ? co->status : 200;
    snprintf(reply->body, sizeof reply->body, "%s",
             co->malformed ? "{\"databaseId\":\"other\"}" : co->cluster[co->switched]);
    pthread_mutex_unlock(&co->mu);
}

/* A node that lost its primacy: writes answer STALE_PRIMARY, reads NO_SAFE_PRIMARY. */
static void stale(void *user, const char *method, const char *path, const char *body,
                  gst_reply *reply)
{
    (void)method;
    (void)body;
    coord *co = user;
    if (!strcmp(path, "/capabilities")) {
        reply->status = 200;
        snprintf(reply->body, sizeof reply->body, "{\"capabilities\":[\"query.sql\"]}");
    } else if (!strcmp(path, "/db/main/execute")) {
        reply->status = 409;
        snprintf(reply->body, sizeof reply->body,
                 "{\"error\":{\"code\":\"STALE_PRIMARY\",\"message\":\"not the primary\","
                 "\"details\":{\"primaryTerm\":\"4\"}}}");
        pthread_mutex_lock(&co->mu);
        co->switched = 1;
        pthread_mutex_unlock(&co->mu);
    } else if (!strcmp(path, "/db/main/query")) {
        reply->status = 503;
        snprintf(reply->body, sizeof reply->body,
                 "{\"error\":{\"code\":\"NO_SAFE_PRIMARY\",\"message\":\"no primary\"}}");
        pthread_mutex_lock(&co->mu);
        co->switched = 1;
        pthread_mutex_unlock(&co->mu);
    }
}

static gs_client *coordinator_client(gst_fake *s, gs_client_transport t, gs_client_read_pref p)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", gst_fake_port(s));
    const char *urls[] = {url};
    gs_client_config cfg;
    gs_client_config_init(&cfg);
    cfg.transport = t;
    cfg.mode = GS_CLIENT_MODE_COORDINATOR;
    cfg.read_preference = p;
    return open_with(urls, 1, &cfg);
}

static void cluster_json(char *out, size_t size, const char *primary, const char *reads)
{
    snprintf(out, size,
             "{\"databaseId\":\"main\",\"replicationGroupId\":\"g\",\"role\":\"replica\","
             "\"currentPrimary\":%s,\"primaryTerm\":\"3\",\"readEndpoints\":[%s],"
             "\"health\":\"healthy\",\"healthReason\":\"in-sync\"}",
             primary, reads);
}

Test(client_discovery, routes_from_cluster_metadata, .init = start_two, .fini = stop_two)
{
    static coord co = {PTHREAD_MUTEX_INITIALIZER, {"", ""}, 0, 0, 0};
    char a[64], b[64], p[256], r[512], buf[256];
    gst_server_url(&pri, a, sizeof a);
    gst_server_url(&rep, b, sizeof b);
    snprintf(p, sizeof p, "{\"nodeId\":\"a\",\"endpoint\":\"%s\"}", a);
    /* the replica's endpoint carries /db/main, which the client strips */
    snprintf(r, sizeof r,
             "{\"nodeId\":\"b\",\"endpoint\":\"%s/db/main\",\"readConcerns\":[\"local\","
             "\"majority\"]},{\"nodeId\":\"a\",\"endpoint\":\"%s\",\"readConcerns\":[\"local\","
             "\"majority\",\"linearizable\"]}",
             b, a);
    cluster_json(co.cluster[0], sizeof co.cluster[0], p, r);
    gst_fake *s = gst_fake_start(starter, &co);
    for (int t = 0; t < 2; t++) {
        gs_client *c =
            coordinator_client(s, t ? GS_CLIENT_TRANSPORT_WEBSOCKET : GS_CLIENT_TRANSPORT_HTTP,
                               GS_CLIENT_READ_NEAREST);
        gs_error err;
        gs_client_db *db = gs_client_database(c, "main", &err);
        /* nearest in coordinator mode: the first readable endpoint with the concern */
        cr_assert_str_eq(who(db, NULL, buf, sizeof buf), "replica");
        cr_assert_str_eq(who(db, "linearizable", buf, sizeof buf), "primary",
                         "linearizable reads go to the primary");
        gs_client_exec ex;
        cr_assert_eq(gs_client_execute(db, "INSERT INTO who VALUES ('w')", NULL, NULL, &ex, &err),
                     GS_OK, "%s: %s", err.code, err.message);
        gs_client_close(c);
    }
    cr_assert_eq(count_rows(&pri), 3, "both writes reached the discovered primary");
    cr_assert_eq(gst_fake_hits(s, "/db/main/cluster"), 2, "metadata read once per client");
    gst_fake_stop(s);
}

Test(client_discovery, stale_primary_reroutes_writes_and_retries_reads, .init = start_two,
     .fini = stop_two)
{
    static coord co = {PTHREAD_MUTEX_INITIALIZER, {"", ""}, 0, 0, 0};
    gst_fake *old = gst_fake_start(stale, &co);
    char a[64], o[64], p0[256], p1[256], r0[256], r1[256], buf[256];
    gst_server_url(&pri, a, sizeof a);
    snprintf(o, sizeof o, "http://127.0.0.1:%d", gst_fake_port(old));
    snprintf(p0, sizeof p0, "{\"nodeId\":\"old\",\"endpoint\":\"%s\"}", o);
    snprintf(p1, sizeof p1, "{\"nodeId\":\"a\",\"endpoint\":\"%s\"}", a);
    snprintf(r0, sizeof r0,
             "{\"nodeId\":\"old\",\"endpoint\":\"%s\",\"readConcerns\":"
             "[\"local\",\"majority\"]}",
             o);
    snprintf(r1, sizeof r1,
             "{\"nodeId\":\"a\",\"endpoint\":\"%s\",\"readConcerns\":"
             "[\"local\",\"majority\"]}",
             a);
    cluster_json(co.cluster[0], sizeof co.cluster[0], p0, r0);
    cluster_json(co.cluster[1], sizeof co.cluster[1], p1, r1);
    gst_fake *s = gst_fake_start(starter, &co);
    gs_client *c = coordinator_client(s, GS_CLIENT_TRANSPORT_HTTP, GS_CLIENT_READ_REPLICA);
    gs_error err;
    gs_client_db *db = gs_client_database(c, "main", &err);
    /* A write to the stale primary fails with its code and is not resent. */
    gs_client_exec ex;
    cr_assert_eq(gs_client_execute(db, "INSERT INTO who VALUES ('w1')", NULL, NULL, &ex, &err),
                 GS_ERROR);
    cr_assert_str_eq(err.code, "STALE_PRIMARY");
    cr_assert_eq(err.status, 409);
    cr_assert(strstr(err.details, "primaryTerm"), "details carried: %s", err.details);
    cr_assert_eq(gst_fake_hits(old, "/db/main/execute"), 1, "never auto-retried");
    cr_assert_eq(count_rows(&pri), 1, "nor sent anywhere else");
    cr_assert_eq(gst_fake_hits(s, "/db/main/cluster"), 2, "routing refreshed after the error");
    /* The caller re-issues: it goes to the new primary. */
    cr_assert_eq(gs_client_execute(db, "INSERT INTO who VALUES ('w2')", NULL, NULL, &ex, &err),
                 GS_OK, "%s: %s", err.code, err.message);
    cr_assert_eq(count_rows(&pri), 2);
    gs_client_close(c);

    /* A read on the stale node: refresh, then one retry on the new route. */
    pthread_mutex_lock(&co.mu);
    co.switched = 0;
    pthread_mutex_unlock(&co.mu);
    c = coordinator_client(s, GS_CLIENT_TRANSPORT_HTTP, GS_CLIENT_READ_REPLICA);
    db = gs_client_database(c, "main", &err);
    cr_assert_str_eq(who(db, NULL, buf, sizeof buf), "primary");
    cr_assert_eq(gst_fake_hits(old, "/db/main/query"), 1, "one failed attempt, then the retry");
    gs_client_close(c);
    gst_fake_stop(s);
    gst_fake_stop(old);
}

Test(client_discovery, errors)
{
    static coord co = {PTHREAD_MUTEX_INITIALIZER, {"", ""}, 0, 1, 0};
    gst_fake *s = gst_fake_start(starter, &co);
    gs_client *c = coordinator_client(s, GS_CLIENT_TRANSPORT_HTTP, GS_CLIENT_READ_PRIMARY);
    gs_error err;
    gs_client_db *db = gs_client_database(c, "main", &err);
    gs_client_exec ex;
    cr_assert_eq(gs_client_execute(db, "SELECT 1", NULL, NULL, &ex, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_RESPONSE", "%s: %s", err.code, err.message);
    gs_client_close(c);
    /* no primary: writes NO_SAFE_PRIMARY; reads fall back to a `local` endpoint */
    pthread_mutex_lock(&co.mu);
    co.malformed = 0;
    cluster_json(co.cluster[0], sizeof co.cluster[0], "null",
                 "{\"nodeId\":\"x\",\"endpoint\":\"http://127.0.0.1:1\",\"readConcerns\":"
                 "[\"local\"]}");
    pthread_mutex_unlock(&co.mu);
    c = coordinator_client(s, GS_CLIENT_TRANSPORT_HTTP, GS_CLIENT_READ_REPLICA);
    db = gs_client_database(c, "main", &err);
    cr_assert_eq(gs_client_execute(db, "SELECT 1", NULL, NULL, &ex, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "NO_SAFE_PRIMARY", "%s: %s", err.code, err.message);
    char route[128];
    cr_assert_eq(gs_client_route(db, 0, route, sizeof route, &err), GS_OK);
    cr_assert_str_eq(route, "http://127.0.0.1:1", "majority read falls back to a local endpoint");
    gs_client_close(c);
    /* the endpoint refuses (404 for an application credential) or nobody answers */
    pthread_mutex_lock(&co.mu);
    co.status = 404;
    pthread_mutex_unlock(&co.mu);
    c = coordinator_client(s, GS_CLIENT_TRANSPORT_HTTP, GS_CLIENT_READ_PRIMARY);
    db = gs_client_database(c, "main", &err);
    cr_assert_eq(gs_client_execute(db, "SELECT 1", NULL, NULL, &ex, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "ROUTING_ERROR", "%s: %s", err.code, err.message);
    gs_client_close(c);
    gst_fake_stop(s);
    char dead[64];
    snprintf(dead, sizeof dead, "http://127.0.0.1:%d", gst_free_port());
    const char *urls[] = {dead};
    gs_client_config cfg;
    gs_client_config_init(&cfg);
    cfg.mode = GS_CLIENT_MODE_COORDINATOR;
    cfg.transport = GS_CLIENT_TRANSPORT_HTTP;
    c = open_with(urls, 1, &cfg);
    db = gs_client_database(c, "main", &err);
    cr_assert_eq(gs_client_execute(db, "SELECT 1", NULL, NULL, &ex, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "ROUTING_ERROR", "%s: %s", err.code, err.message);
    gs_client_close(c);
}
