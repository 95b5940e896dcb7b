/* Static routing against a real three-node cluster (the static-tcp example: node-a primary,
 * node-b and node-c replicas, TCP replication with mutual TLS, certificates made by its
 * make-certs.sh into a temp dir, free ports): writes through the client land on the
 * primary and reach the replicas; reads with preference `replica` are served by a replica;
 * a subscription opened through the client (routed like a read) sees writes made through
 * the primary; with a replica killed, reads still succeed (the dead one is removed and the
 * read retried). Every wait is bounded. */
#include <criterion/criterion.h>

#include <gatestream/client.h>

#include "support.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef GS_SOURCE_DIR
#error "GS_SOURCE_DIR must name the repository"
#endif

static gst_server node[3];
static const char *ids[3] = {"node-a", "node-b", "node-c"};
static char certs[300];

static void write_config(int i, int repl_port, int my_repl_port)
{
    FILE *f = fopen(node[i].config, "w");
    cr_assert(f);
    fprintf(f,
            "node: { id: %s, data_dir: %s/data }\n"
            "log: { level: info }\n"
            "plugins:\n"
            "  - name: http\n    kind: client_transport\n"
            "  - name: ws\n    kind: client_transport\n"
            "  - name: repl\n    kind: repl_transport\n    plugin: tcp\n    config:\n"
            "      host: 127.0.0.1\n      port: %d\n"
            "      tls_cert: %s/%s.pem\n      tls_key: %s/%s.key\n      tls_ca_cert: %s/ca.pem\n"
            "      heartbeat_ms: 300\n      reconnect_min_ms: 50\n      reconnect_max_ms: 500\n",
            ids[i], node[i].dir, my_repl_port, certs, ids[i], certs, ids[i], certs);
    if (i)
        fprintf(f, "      peers:\n        - { id: node-a, address: 127.0.0.1:%d }\n", repl_port);
    fprintf(f,
            "server:\n  host: 127.0.0.1\n  port: %d\n  accept_sql: true\n"
            "databases:\n  - id: main\n    path: main.db\n"
            "replication:\n  role: %s\n  transport: repl\n  write_forwarding: true\n  peers:\n",
            node[i].port, i ? "replica" : "primary");
    if (i)
        fprintf(f, "    - { id: node-a, role: primary }\n");
    else
        fprintf(f, "    - { id: node-b, role: replica }\n    - { id: node-c, role: replica }\n");
    fclose(f);
}

static void start_cluster(void)
{
    const char *base = getenv("GS_TEST_TMP");
    snprintf(certs, sizeof certs, "%s/gs-client-certs-XXXXXX", base && *base ? base : "/tmp");
    cr_assert(mkdtemp(certs));
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "sh %s/config/cluster/static-tcp/make-certs.sh %s node-a node-b node-c "
             ">/dev/null 2>&1",
             GS_SOURCE_DIR, certs);
    cr_assert_eq(system(cmd), 0, "make-certs.sh");
    int repl_port = gst_free_port();
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(gst_server_prepare(&node[i]), 0);
        write_config(i, repl_port, i ? gst_free_port() : repl_port);
        cr_assert_eq(gst_server_restart(&node[i]), 0, "%s starts", ids[i]);
    }
}

static void stop_cluster(void)
{
    for (int i = 2; i >= 0; i--)
        gst_server_cleanup(&node[i]);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", certs);
    if (certs[0] && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", certs);
}

static int rows_on(int i, const char *sql)
{
    char body[512], out[1024];
    int status = 0;
    snprintf(body, sizeof body, "{\"sql\":\"%s\"}", sql);
    if (gst_http(node[i].port, "POST", "/db/main/query", body, &status, out, sizeof out) != 0 ||
        status != 200)
        return -1;
    const char *p = strstr(out, "\"n\":");
    return p ? atoi(p + 4) : -1;
}

static int wait_rows(int i, int want, int timeout_ms)
{
    long long deadline = gst_now_ms() + timeout_ms;
    int n = -1;
    while (gst_now_ms() < deadline) {
        n = rows_on(i, "SELECT count(*) AS n FROM orders");
        if (n == want)
            return n;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return n;
}

typedef struct events {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
} events;

static void on_event(void *user, const gs_client_event *ev)
{
    events *e = user;
    if (ev->kind != GS_CLIENT_EVENT_CHANGE)
        return;
    pthread_mutex_lock(&e->mu);
    e->n++;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

Test(client_cluster, static_routing_on_three_nodes, .init = start_cluster, .fini = stop_cluster,
     .timeout = 180)
{
    char u[3][64];
    const char *urls[3];
    for (int i = 0; i < 3; i++)
        urls[i] = gst_server_url(&node[i], u[i], sizeof u[i]);
    gs_client_config cfg;
    gs_client_config_init(&cfg);
    cfg.transport = GS_CLIENT_TRANSPORT_WEBSOCKET;
    cfg.read_preference = GS_CLIENT_READ_REPLICA;
    cfg.reconnect_interval_ms = 200;
    gs_client *c;
    gs_error err;
    cr_assert_eq(gs_client_open(urls, 3, &cfg, &c, &err), GS_OK, "%s", err.message);
    gs_client_db *db = gs_client_database(c, "main", &err);
    gs_client_exec ex;
    cr_assert_eq(gs_client_execute(db, "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)",
                                   NULL, NULL, &ex, &err),
                 GS_OK, "%s: %s", err.code, err.message);
    /* the table reaches both replicas before anyone subscribes there */
    for (int i = 1; i < 3; i++)
        cr_assert_eq(wait_rows(i, 0, 30000), 0, "%s has the table", ids[i]);
    static events ev = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    gs_client_sub *sub;
    cr_assert_eq(gs_client_subscribe(db, "orders", NULL, NULL, on_event, &ev, &sub, &err), GS_OK,
                 "%s: %s", err.code, err.message);
    for (int k = 0; k < 20; k++) {
        gs_value v = gs_client_val_text("widget");
        gs_client_params p = gs_client_positional(&v, 1);
        cr_assert_eq(
            gs_client_execute(db, "INSERT INTO orders (item) VALUES (?)", &p, NULL, &ex, &err),
            GS_OK, "%s: %s", err.code, err.message);
    }
    cr_assert_eq(rows_on(0, "SELECT count(*) AS n FROM orders"), 20, "writes on the primary");
    for (int i = 1; i < 3; i++)
        cr_assert_eq(wait_rows(i, 20, 30000), 20, "%s caught up", ids[i]);
    char route[128];
    cr_assert_eq(gs_client_route(db, 0, route, sizeof route, &err), GS_OK);
    cr_assert(!strcmp(route, urls[1]) || !strcmp(route, urls[2]), "reads go to a replica: %s",
              route);
    cr_assert_eq(gs_client_route(db, 1, route, sizeof route, &err), GS_OK);
    cr_assert_str_eq(route, urls[0], "writes go to the primary");
    /* the subscription, opened on a replica, saw the replicated writes */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 30;
    pthread_mutex_lock(&ev.mu);
    int rc = 0;
    while (ev.n < 20 && rc == 0)
        rc = pthread_cond_timedwait(&ev.cv, &ev.mu, &dl);
    int got = ev.n;
    pthread_mutex_unlock(&ev.mu);
    cr_assert_eq(got, 20, "change events through a replica: %d of 20", got);
    gs_client_unsubscribe(sub);
    /* one replica dies: every read still answers */
    gst_server_kill9(&node[1]);
    for (int k = 0; k < 10; k++) {
        gs_client_rows *r;
        cr_assert_eq(gs_client_query(db, "SELECT count(*) AS n FROM orders", NULL, NULL, &r, &err),
                     GS_OK, "read %d: %s: %s", k, err.code, err.message);
        cr_assert_eq(gs_client_rows_get(r, 0, 0)->u.i, 20);
        gs_client_rows_free(r);
    }
    gs_client_close(c);
}
