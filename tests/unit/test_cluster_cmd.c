/*
 * `gatestream cluster` (core/src/node/cluster_cmd.c) in process: the coordinator form against
 * the built-in memory coordinator (a named store shared by every instance of the process, so
 * the test seeds the group state through its own instance and the command reads it through the
 * one its config names), and the node form against a scripted HTTP server thread. Output is
 * captured from the command's stdout and stderr.
 */
#include "base/alloc.h"
#include "base/error.h"
#include "config/config.h"
#include "node/cluster_cmd.h"
#include "plugin/host_standalone.h"
#include "plugin/loader.h"
#include "repl/authority.h"
#include "repl/group.h"
#include "test_support.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <gatestream/coordinator.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char dir[128];
static char store[64];
static char config[256];

/* The test's own instance of the memory coordinator on `store`. */
static gs_plugin *plug;
static void *seed_cfg;
static gs_cfg_arena seed_arena;
static void *seed;
static const gs_coordinator_vtable *vt;
static gs_host host;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

static void write_config(const char *path, const char *node, const char *coordinator_section)
{
    char text[2048];
    snprintf(text, sizeof text,
             "node: { id: %s, data_dir: %s/data }\n"
             "plugins:\n"
             "  - name: coord\n"
             "    kind: coordinator\n"
             "    plugin: memory\n"
             "    config: { store: %s }\n"
             "databases:\n"
             "  - id: main\n"
             "replication:\n"
             "%s",
             node, dir, store, coordinator_section);
    write_file(path, text);
}

static void setup(void)
{
    gs_test_mkdtemp(dir, sizeof dir, "clustercmd");
    snprintf(store, sizeof store, "clustercmd-%d", (int)getpid());
    snprintf(config, sizeof config, "%s/node-b.yaml", dir);
    write_config(config, "node-b",
                 "  role: replica\n"
                 "  coordinator: { instance: coord, cluster_id: example, group_id: main }\n");
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_plugin_load_builtin("seed", "memory", GS_KIND_COORDINATOR, &plug, &err), GS_OK,
                 "%s", err.message);
    cr_assert_not_null(plug, "the memory coordinator is built in");
    const gs_plugin_descriptor *d = plug->desc;
    vt = d->vtable;
    seed_cfg = gs_calloc(1, d->config_struct_size);
    char yaml[128];
    snprintf(yaml, sizeof yaml, "store: %s\n", store);
    gs_cfg_doc *doc = NULL;
    cr_assert_eq(gs_cfg_load_string(yaml, strlen(yaml), "seed", &doc, &err), GS_OK);
    cr_assert_eq(gs_cfg_fill(doc, doc->root, "", d->config_keys, d->config_key_count,
                             d->config_key_size, seed_cfg, &seed_arena, &err),
                 GS_OK, "%s", err.message);
    gs_cfg_free(doc);
    gs_host_init_standalone(&host);
    cr_assert_eq(vt->create(&host, seed_cfg, &seed, &err), GS_OK, "%s", err.message);
    cr_assert_eq(vt->start(seed, &err), GS_OK, "%s", err.message);
}

static void teardown(void)
{
    if (seed) {
        vt->stop(seed);
        vt->destroy(seed);
        seed = NULL;
    }
    gs_cfg_arena_free(&seed_arena);
    gs_free(seed_cfg);
    seed_cfg = NULL;
    if (plug)
        gs_plugin_unload(plug);
    plug = NULL;
    gs_test_rmtree(dir);
}

static void put(const char *key, const char *value)
{
    gs_op op = {.type = GS_OP_PUT,
                .key = (const uint8_t *)key,
                .key_len = strlen(key),
                .value = (const uint8_t *)value,
                .value_len = strlen(value)};
    int ok = 0;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(vt->txn(seed, NULL, 0, &op, 1, NULL, 0, &ok, NULL, &err), GS_OK, "%s",
                 err.message);
    cr_assert(ok);
}

/* A group of three voters, node-a primary of term 7, node-c faulted; sessions of a and b. */
static void seed_group(void)
{
    gs_group_state g;
    memset(&g, 0, sizeof g);
    snprintf(g.cluster_id, sizeof g.cluster_id, "example");
    snprintf(g.group_id, sizeof g.group_id, "main");
    gs_id_set_add(&g.voters, "node-a");
    gs_id_set_add(&g.voters, "node-b");
    gs_id_set_add(&g.voters, "node-c");
    g.has_primary = 1;
    snprintf(g.primary, sizeof g.primary, "node-a");
    snprintf(g.primary_endpoint, sizeof g.primary_endpoint, "http://127.0.0.1:9881");
    g.term = 7;
    g.durability_seq = 1234;
    gs_id_set_add(&g.in_sync, "node-a");
    gs_id_set_add(&g.in_sync, "node-b");
    gs_id_set_add(&g.faulted, "node-c");
    g.updated_at_ms = 1700000000123;
    g.ts_term = 7;
    g.ts_seq = 1000;
    snprintf(g.ts_prev, sizeof g.ts_prev, "node-c");
    g.ts_prev_seq = 990;
    size_t len;
    char *text = gs_group_state_format(&g, &len);
    cr_assert_not_null(text);
    char key[256];
    cr_assert(gs_group_key(key, sizeof key, "example", "main"));
    put(key, text);
    gs_free(text);
    const char *ids[] = {"node-a", "node-b"};
    for (int i = 0; i < 2; i++) {
        gs_node_record r;
        memset(&r, 0, sizeof r);
        snprintf(r.node_id, sizeof r.node_id, "%s", ids[i]);
        snprintf(r.endpoint, sizeof r.endpoint, "http://127.0.0.1:988%d", i + 1);
        r.voting = 1;
        r.ttl_ms = 2000;
        snprintf(r.package_version, sizeof r.package_version, "0.1.0");
        snprintf(r.spec_version, sizeof r.spec_version, "1");
        snprintf(r.protocol_version, sizeof r.protocol_version, "1.0");
        snprintf(r.progress_source, sizeof r.progress_source, "node-a");
        r.progress_seq = 1234 - i;
        r.progress_term = 7;
        char *rec = gs_node_record_format(&r, "example", &len);
        cr_assert_not_null(rec);
        cr_assert(gs_node_key(key, sizeof key, "example", ids[i]));
        put(key, rec);
        gs_free(rec);
    }
    cr_assert(gs_controller_key(key, sizeof key, "example"));
    put(key, "{\"kind\":\"controller\",\"holderId\":\"node-b\"}");
}

typedef struct run_out {
    int status;
    char out[16384];
    char err[4096];
} run_out;

static void slurp(int fd, char *buf, size_t cap)
{
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, buf, cap - 1);
    buf[n > 0 ? n : 0] = 0;
}

/* Run `gatestream cluster ARGS...` (NULL-terminated), capturing stdout and stderr. */
static void run(run_out *r, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "cluster";
    va_list ap;
    va_start(ap, r);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    char p1[256], p2[256];
    snprintf(p1, sizeof p1, "%s/out-XXXXXX", dir);
    snprintf(p2, sizeof p2, "%s/err-XXXXXX", dir);
    int fo = mkstemp(p1), fe = mkstemp(p2);
    cr_assert(fo >= 0 && fe >= 0);
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    dup2(fo, 1);
    dup2(fe, 2);
    r->status = gs_cluster_command(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    slurp(fo, r->out, sizeof r->out);
    slurp(fe, r->err, sizeof r->err);
    close(fo);
    close(fe);
}

static const char *line_of(const char *text, const char *start, char *buf, size_t cap)
{
    const char *p = text;
    size_t sl = strlen(start);
    while (p && *p) {
        const char *e = strchr(p, '\n');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l >= sl && strncmp(p, start, sl) == 0) {
            snprintf(buf, cap, "%.*s", (int)l, p);
            return buf;
        }
        p = e ? e + 1 : NULL;
    }
    return NULL;
}

TestSuite(cluster_cmd, .init = setup, .fini = teardown);

Test(cluster_cmd, status_prints_the_group_as_a_table)
{
    seed_group();
    run_out r;
    run(&r, "status", "--config", config, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "cluster example, group main (updated 2023-11-14T22:13:20.123Z)"), "%s",
              r.out);
    cr_assert(strstr(r.out, "primary node-a (http://127.0.0.1:9881), term 7\n"), "%s", r.out);
    cr_assert(strstr(r.out, "durability point seq 1234\n"), "%s", r.out);
    cr_assert(strstr(r.out, "term 7 began at seq 1000, after applying node-c's log to seq 990"),
              "%s", r.out);
    cr_assert(strstr(r.out, "controller node-b\n"), "%s", r.out);
    char l[512];
    cr_assert_not_null(line_of(r.out, "NODE ", l, sizeof l), "%s", r.out);
    cr_assert(strstr(l, "ROLE") && strstr(l, "SESSION") && strstr(l, "IN-SYNC") &&
              strstr(l, "STATE") && strstr(l, "PROGRESS") && strstr(l, "ENDPOINT"));
    cr_assert_not_null(line_of(r.out, "node-a ", l, sizeof l));
    cr_assert(strstr(l, "primary") && strstr(l, "live") && strstr(l, "yes") &&
                  strstr(l, "node-a:1234 (term 7)") && strstr(l, "http://127.0.0.1:9881"),
              "%s", l);
    cr_assert_not_null(line_of(r.out, "node-b ", l, sizeof l));
    cr_assert(strstr(l, "replica") && strstr(l, "live") && strstr(l, "node-a:1233"), "%s", l);
    cr_assert_not_null(line_of(r.out, "node-c ", l, sizeof l));
    cr_assert(strstr(l, "replica") && strstr(l, "none") && strstr(l, " no ") &&
                  strstr(l, "faulted"),
              "%s", l);
}

Test(cluster_cmd, status_json)
{
    seed_group();
    run_out r;
    run(&r, "status", "--config", config, "--json", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    json_t *j = gs_test_parse_json(r.out);
    cr_assert_str_eq(json_string_value(json_object_get(j, "clusterId")), "example");
    cr_assert_str_eq(json_string_value(json_object_get(j, "controller")), "node-b");
    json_t *g = json_object_get(j, "group");
    cr_assert_str_eq(json_string_value(json_object_get(g, "primaryTerm")), "7");
    cr_assert_str_eq(
        json_string_value(json_object_get(json_object_get(g, "currentPrimary"), "nodeId")),
        "node-a");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(g, "faultedNodeIds"), 0)),
                     "node-c");
    json_t *nodes = json_object_get(j, "nodes");
    cr_assert_eq(json_array_size(nodes), 2);
    json_t *n0 = json_array_get(nodes, 0);
    cr_assert_str_eq(json_string_value(json_object_get(n0, "nodeId")), "node-a");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(n0, "progress"), "seq")),
                     "1234");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "summary"), "primary")),
                     "node-a");
    json_decref(j);
}

static void group_now(gs_group_state *g)
{
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_group_read(vt, seed, "example", "main", g, NULL, &err), GS_OK, "%s",
                 err.message);
}

Test(cluster_cmd, drain_undrain_repair_rejoin_change_the_group)
{
    seed_group();
    run_out r;
    gs_group_state g;
    run(&r, "drain", "--config", config, NULL); /* default node: node.id of the config */
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "drain: node-b in group main of cluster example: done"), "%s", r.out);
    group_now(&g);
    cr_assert(gs_id_set_has(&g.draining, "node-b"));
    char l[512];
    cr_assert_not_null(line_of(r.out, "node-b ", l, sizeof l));
    cr_assert(strstr(l, "draining"), "the table shows the new state: %s", l);

    run(&r, "undrain", "--config", config, "--node", "node-b", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    group_now(&g);
    cr_assert_not(gs_id_set_has(&g.draining, "node-b"));

    run(&r, "repair", "--config", config, "--node", "node-b", "--json", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    json_t *j = gs_test_parse_json(r.out); /* --json prints only the JSON */
    json_decref(j);
    group_now(&g);
    cr_assert(gs_id_set_has(&g.repairing, "node-b"));
    cr_assert_not(gs_id_set_has(&g.in_sync, "node-b"));

    run(&r, "rejoin", "--config", config, "--node", "node-c", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    group_now(&g);
    cr_assert_not(gs_id_set_has(&g.faulted, "node-c"), "rejoin clears the quarantine");
}

Test(cluster_cmd, failures_are_clear_and_non_zero)
{
    run_out r;
    run(&r, "status", "--config", config, NULL); /* nothing registered yet */
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(r.err, "group 'main' of cluster 'example' is not registered"), "%s", r.err);

    seed_group();
    run(&r, "drain", "--config", config, "--node", "node-z", NULL);
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(r.err, "node 'node-z' is not a voting member of group 'main'"), "%s", r.err);
    run(&r, "status", "--config", config, "--group", "other", NULL);
    cr_assert_eq(r.status, 1, "%s", r.err);

    run(&r, "status", NULL);
    cr_assert_eq(r.status, 2);
    run(&r, "frobnicate", "--config", config, NULL);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "unknown command 'frobnicate'"), "%s", r.err);
    run(&r, "status", "--config", config, "--bogus", NULL);
    cr_assert_eq(r.status, 2);
    run(&r, "drain", "--url", "http://127.0.0.1:1", "--db", "main", NULL);
    cr_assert_eq(r.status, 2);
    run(&r, "status", "--url", "http://127.0.0.1:1", NULL);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "--db"), "%s", r.err);
    run(&r, "status", "--config", config, "--url", "http://127.0.0.1:1", "--db", "main", NULL);
    cr_assert_eq(r.status, 2);
    run(&r, "status", "--config", "/nonexistent/x.yaml", NULL);
    cr_assert_eq(r.status, 2);

    char plain[256];
    snprintf(plain, sizeof plain, "%s/plain.yaml", dir);
    write_config(plain, "node-b", "  role: primary\n");
    run(&r, "status", "--config", plain, NULL);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "no replication.coordinator section"), "%s", r.err);

    char wrong[256];
    snprintf(wrong, sizeof wrong, "%s/wrong.yaml", dir);
    write_config(wrong, "node-b",
                 "  coordinator: { instance: nosuch, cluster_id: example, group_id: main }\n");
    run(&r, "status", "--config", wrong, NULL);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "'nosuch' is not declared under plugins"), "%s", r.err);

    run(&r, "--help", NULL);
    cr_assert_eq(r.status, 0);
    cr_assert(strstr(r.out, "usage: gatestream cluster status"));
}

/* ---- the node form against a scripted server ---- */

typedef struct script {
    int fd, port;
    const char *answer;
    char request[2048];
    pthread_t t;
} script;

static void *serve(void *arg)
{
    script *s = arg;
    struct pollfd lp = {.fd = s->fd, .events = POLLIN};
    if (poll(&lp, 1, 5000) != 1)
        return NULL;
    int c = accept(s->fd, NULL, NULL);
    if (c < 0)
        return NULL;
    size_t got = 0;
    while (got < sizeof s->request - 1 && !strstr(s->request, "\r\n\r\n")) {
        ssize_t n = recv(c, s->request + got, sizeof s->request - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        s->request[got] = 0;
    }
    send(c, s->answer, strlen(s->answer), MSG_NOSIGNAL);
    close(c);
    return NULL;
}

static void serve_start(script *s, const char *answer)
{
    memset(s, 0, sizeof *s);
    s->answer = answer;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(s->fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(s->fd, 2), 0);
    socklen_t al = sizeof a;
    getsockname(s->fd, (struct sockaddr *)&a, &al);
    s->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&s->t, NULL, serve, s), 0);
}

static void serve_end(script *s)
{
    pthread_join(s->t, NULL);
    close(s->fd);
}

#define CLUSTER_INFO                                                                               \
    "{\"databaseId\":\"main\",\"replicationGroupId\":\"main\",\"role\":\"replica\","               \
    "\"currentPrimary\":{\"nodeId\":\"node-a\",\"endpoint\":\"http://127.0.0.1:9881\"},"           \
    "\"primaryTerm\":\"9\",\"readEndpoints\":[{\"nodeId\":\"node-a\",\"endpoint\":"                \
    "\"http://127.0.0.1:9881\",\"readConcerns\":[\"local\",\"majority\",\"linearizable\"]},"       \
    "{\"nodeId\":\"node-b\",\"endpoint\":\"http://"                                                \
    "127.0.0.1:9882\",\"readConcerns\":[\"local\"]}],"                                             \
    "\"health\":\"degraded\",\"healthReason\":\"lagging\"}"

Test(cluster_cmd, status_of_a_node_over_http)
{
    char answer[2048];
    snprintf(answer, sizeof answer,
             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(CLUSTER_INFO), CLUSTER_INFO);
    script s;
    serve_start(&s, answer);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
    run_out r;
    run(&r, "status", "--url", url, "--db", "my db", "--header", "Authorization: Bearer x", NULL);
    serve_end(&s);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strncmp(s.request, "GET /db/my%20db/cluster HTTP/1.1\r\n", 34) == 0, "%s", s.request);
    cr_assert(strstr(s.request, "\r\nAuthorization: Bearer x\r\n"), "%s", s.request);
    cr_assert(strstr(r.out, "database main at http://127.0.0.1:"), "%s", r.out);
    cr_assert(strstr(r.out, "this node: replica, health degraded (lagging)"), "%s", r.out);
    cr_assert(strstr(r.out, "primary node-a (http://127.0.0.1:9881), term 9"), "%s", r.out);
    char l[512];
    cr_assert_not_null(line_of(r.out, "node-a ", l, sizeof l), "%s", r.out);
    cr_assert(strstr(l, "local,majority,linearizable"), "%s", l);
    cr_assert_not_null(line_of(r.out, "node-b ", l, sizeof l), "%s", r.out);
    cr_assert(strstr(l, "http://127.0.0.1:9882") && strstr(l, "local"), "%s", l);

    serve_start(&s, answer);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
    run(&r, "status", "--url", url, "--db", "main", "--json", NULL);
    serve_end(&s);
    cr_assert_eq(r.status, 0, "%s", r.err);
    json_t *j = gs_test_parse_json(r.out);
    cr_assert_str_eq(json_string_value(json_object_get(j, "primaryTerm")), "9");
    json_decref(j);
}

Test(cluster_cmd, a_node_that_refuses_cluster_status)
{
    static const char body[] =
        "{\"error\":{\"code\":\"NOT_FOUND\",\"message\":\"no route for GET /db/main/cluster\"}}";
    char answer[512];
    snprintf(answer, sizeof answer, "HTTP/1.1 404 Not Found\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    script s;
    serve_start(&s, answer);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
    run_out r;
    run(&r, "status", "--url", url, "--db", "main", NULL);
    serve_end(&s);
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(r.err, "answered 404 NOT_FOUND: no route"), "%s", r.err);
    cr_assert(strstr(r.err, "server.cluster_status"), "the fix is named: %s", r.err);
}
