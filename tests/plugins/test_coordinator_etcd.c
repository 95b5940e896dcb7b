/*
 * coordinators/etcd against a real etcd-server on loopback. The runner starts one etcd for
 * the conformance suite (coordinator_conformance.h) before any test (Criterion's PRE_ALL hook)
 * and passes its URL to the test processes in GS_TEST_ETCD_URL; each conformance test works
 * under its own key prefix. The tests particular to etcd start their own etcd when they need
 * one configured differently (TLS with client certificates, authentication, stop/restart):
 * free ports found by binding port 0, a data dir under a mkdtemp() directory, output to a log
 * file there, readiness polled (bounded) on the log, stopped by SIGTERM to the pid started and
 * waitpid, the directory removed. An etcd is also told to die with the process that started it
 * (PR_SET_PDEATHSIG), so a crashed test leaves no server behind.
 *
 * Every wait is bounded; the schedule waits (polling etcd's readiness, retrying a call while
 * etcd restarts) sleep a few tens of ms between bounded attempts.
 */
#include "plugin_test_host.h"

#include <gatestream/coordinator.h>

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EC_FILE "gs_coordinator_etcd.so"
#define ETCD_READY_MS 20000

/* ========================================================================================== */
/* etcd processes                                                                             */

typedef struct etcd_proc {
    pid_t pid;
    int client_port, peer_port;
    int tls; /* https on the client port, client certificates required */
    int token_ttl_s;
    char dir[256]; /* the mkdtemp() directory: data/, etcd.log, certificates */
    char url[128];
} etcd_proc;

static void pause_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* The etcds a test started, stopped and removed by cc_fini even when an assertion failed
 * half way. */
static etcd_proc *OWNED[4];

/* A fresh directory for an etcd (and its certificates); 0 or -1. */
static int etcd_prepare(etcd_proc *e, int tls)
{
    memset(e, 0, sizeof *e);
    for (size_t i = 0; i < sizeof OWNED / sizeof OWNED[0]; i++)
        if (!OWNED[i] || OWNED[i] == e) {
            OWNED[i] = e;
            break;
        }
    snprintf(e->dir, sizeof e->dir, "/tmp/gs-etcd-XXXXXX");
    if (!mkdtemp(e->dir))
        return -1;
    e->tls = tls;
    e->client_port = free_port();
    e->peer_port = free_port();
    if (e->client_port <= 0 || e->peer_port <= 0 || e->client_port == e->peer_port)
        return -1;
    snprintf(e->url, sizeof e->url, "%s://127.0.0.1:%d", tls ? "https" : "http", e->client_port);
    return 0;
}

static int log_has(const etcd_proc *e, const char *needle)
{
    char path[300];
    snprintf(path, sizeof path, "%s/etcd.log", e->dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

/* Start etcd (again, on the same ports and data dir) and wait until it serves. 0 or -1. */
static int etcd_run(etcd_proc *e)
{
    char data[300], log[300], client[128], peer[128], cluster[160], ttl[32];
    char cert[300], key[300], ca[300];
    snprintf(data, sizeof data, "%s/data", e->dir);
    snprintf(log, sizeof log, "%s/etcd.log", e->dir);
    snprintf(client, sizeof client, "%s", e->url);
    snprintf(peer, sizeof peer, "http://127.0.0.1:%d", e->peer_port);
    snprintf(cluster, sizeof cluster, "t=%s", peer);
    snprintf(ttl, sizeof ttl, "%d", e->token_ttl_s ? e->token_ttl_s : 300);
    snprintf(cert, sizeof cert, "%s/server.pem", e->dir);
    snprintf(key, sizeof key, "%s/server.key", e->dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", e->dir);
    const char *argv[32] = {"etcd",  "--name",
                            "t",     "--data-dir",
                            data,    "--listen-client-urls",
                            client,  "--advertise-client-urls",
                            client,  "--listen-peer-urls",
                            peer,    "--initial-advertise-peer-urls",
                            peer,    "--initial-cluster",
                            cluster, "--auth-token-ttl",
                            ttl};
    int n = 17;
    if (e->tls) {
        argv[n++] = "--cert-file";
        argv[n++] = cert;
        argv[n++] = "--key-file";
        argv[n++] = key;
        argv[n++] = "--trusted-ca-file";
        argv[n++] = ca;
        argv[n++] = "--client-cert-auth";
    }
    argv[n] = NULL;
    /* Readiness is read from the log: start it empty. */
    int lf = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (lf < 0)
        return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(lf);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        int nul = open("/dev/null", O_RDONLY);
        dup2(nul, 0);
        dup2(lf, 1);
        dup2(lf, 2);
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        execvp("etcd", (char *const *)argv);
        _exit(127);
    }
    close(lf);
    e->pid = pid;
    uint64_t end = now_ms() + ETCD_READY_MS;
    while (now_ms() < end) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            e->pid = 0;
            fprintf(stderr, "etcd exited early; see %s\n", log);
            return -1;
        }
        if (log_has(e, "ready to serve client requests"))
            return 0;
        pause_ms(20);
    }
    fprintf(stderr, "etcd was not ready within %d ms; see %s\n", ETCD_READY_MS, log);
    return -1;
}

/* SIGTERM to the etcd we started, waitpid (bounded; SIGKILL past it). */
static void etcd_stop(etcd_proc *e)
{
    if (e->pid <= 0)
        return;
    kill(e->pid, SIGTERM);
    uint64_t end = now_ms() + 15000;
    int status;
    while (waitpid(e->pid, &status, WNOHANG) == 0) {
        if (now_ms() > end) {
            kill(e->pid, SIGKILL);
            waitpid(e->pid, &status, 0);
            break;
        }
        pause_ms(20);
    }
    e->pid = 0;
}

static void etcd_remove(etcd_proc *e)
{
    etcd_stop(e);
    if (!e->dir[0])
        return;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", e->dir);
    e->dir[0] = '\0';
}

/* Run an etcdctl command against e; its output (stdout and stderr) into out. Exit status. */
static int etcdctl(const etcd_proc *e, const char *args, char *out, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ETCDCTL_API=3 etcdctl --endpoints %s --dial-timeout 5s %s 2>&1",
             e->url, args);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = out ? fread(out, 1, cap - 1, p) : 0;
    if (out)
        out[n] = '\0';
    else {
        char sink[4096];
        while (fread(sink, 1, sizeof sink, p) > 0)
            ;
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The one etcd of the conformance suite, owned by the runner process. */
static etcd_proc SHARED;

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    if (etcd_prepare(&SHARED, 0) != 0 || etcd_run(&SHARED) != 0) {
        fprintf(stderr, "cannot start the shared etcd-server (is etcd-server installed?)\n");
        return;
    }
    setenv("GS_TEST_ETCD_URL", SHARED.url, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    etcd_remove(&SHARED);
}

/* ========================================================================================== */
/* The fake host and the plugin                                                               */

static struct {
    void *dl;
    const gs_plugin_descriptor *desc;
    const gs_coordinator_vtable *vt;
    gs_host host;
    const char *url;
} T;

static const gs_coordinator_vtable *cc_vt(void)
{
    return T.vt;
}

static const gs_config_key *key(const char *name)
{
    const gs_plugin_descriptor *d = T.desc;
    for (size_t i = 0; i < d->config_key_count; i++) {
        const gs_config_key *k =
            (const gs_config_key *)((const char *)d->config_keys + i * d->config_key_size);
        if (strcmp(k->name, name) == 0)
            return k;
    }
    cr_assert_fail("the etcd coordinator has no key '%s'", name);
    return NULL;
}

static void set_str(void *cfg, const char *name, const char *v)
{
    const gs_config_key *k = key(name);
    cr_assert_eq(k->type, GS_CFG_STRING);
    memcpy((char *)cfg + k->offset, &v, sizeof v);
}

static void set_int(void *cfg, const char *name, int64_t v)
{
    const gs_config_key *k = key(name);
    cr_assert_eq(k->type, GS_CFG_INT);
    memcpy((char *)cfg + k->offset, &v, sizeof v);
}

static void set_bool(void *cfg, const char *name, int v)
{
    const gs_config_key *k = key(name);
    cr_assert_eq(k->type, GS_CFG_BOOL);
    memcpy((char *)cfg + k->offset, &v, sizeof v);
}

/* What a test sets; NULL / 0 = the key's default. */
typedef struct ec_opts {
    const char *endpoints;
    const char *key_prefix;
    int insecure; /* allow_insecure */
    const char *ca, *cert, *key;
    const char *username, *password;
    int64_t dial_ms, call_ms;
} ec_opts;

static void *config_of(const ec_opts *o)
{
    const gs_plugin_descriptor *d = T.desc;
    void *cfg = calloc(1, d->config_struct_size);
    cr_assert_not_null(cfg);
    for (size_t i = 0; i < d->config_key_count; i++) {
        const gs_config_key *k =
            (const gs_config_key *)((const char *)d->config_keys + i * d->config_key_size);
        if (k->default_value && k->type == GS_CFG_INT)
            set_int(cfg, k->name, strtoll(k->default_value, NULL, 10));
        if (k->default_value && k->type == GS_CFG_BOOL)
            set_bool(cfg, k->name, strcmp(k->default_value, "true") == 0);
    }
    if (o->endpoints)
        set_str(cfg, "endpoints", o->endpoints);
    if (o->key_prefix)
        set_str(cfg, "key_prefix", o->key_prefix);
    set_bool(cfg, "allow_insecure", o->insecure);
    if (o->ca)
        set_str(cfg, "tls_ca_cert", o->ca);
    if (o->cert)
        set_str(cfg, "tls_cert", o->cert);
    if (o->key)
        set_str(cfg, "tls_key", o->key);
    if (o->username)
        set_str(cfg, "username", o->username);
    if (o->password)
        set_str(cfg, "password", o->password);
    if (o->dial_ms)
        set_int(cfg, "dial_timeout_ms", o->dial_ms);
    if (o->call_ms)
        set_int(cfg, "call_timeout_ms", o->call_ms);
    return cfg;
}

static gs_status try_create(const ec_opts *o, void **inst, gs_error *err)
{
    void *cfg = config_of(o);
    memset(err, 0, sizeof *err);
    *inst = NULL;
    gs_status rc = T.vt->create(&T.host, cfg, inst, err);
    free(cfg); /* create copied what it keeps */
    return rc;
}

static void *open_with(const ec_opts *o)
{
    void *inst;
    gs_error err;
    cr_assert_eq(try_create(o, &inst, &err), GS_OK, "create: %s %s", err.code, err.message);
    cr_assert_eq(T.vt->start(inst, &err), GS_OK, "start: %s %s", err.code, err.message);
    return inst;
}

/* ---- the conformance hooks ---- */

static void cc_init(void)
{
    pt_init();
    pt_host_init(&T.host, NULL);
    T.desc = pt_load_descriptor(EC_FILE, &T.dl);
    cr_assert_eq(T.desc->kind, GS_KIND_COORDINATOR);
    T.vt = T.desc->vtable;
    T.url = getenv("GS_TEST_ETCD_URL");
}

static void cc_fini(void)
{
    for (size_t i = 0; i < sizeof OWNED / sizeof OWNED[0]; i++)
        if (OWNED[i])
            etcd_remove(OWNED[i]);
    long live = atomic_load(&PT.live_allocs);
    pt_fini();
    cr_assert_eq(live, 0, "%ld allocations of the fake host still live (leak)", live);
}

static void *cc_open(const char *prefix)
{
    cr_assert_not_null(T.url, "the shared etcd did not start (see the runner's output)");
    ec_opts o = {.endpoints = T.url, .key_prefix = prefix, .insecure = 1};
    return open_with(&o);
}

static void cc_close(void *inst)
{
    T.vt->stop(inst);
    T.vt->destroy(inst);
}

#define CC_SUITE coordinator_etcd
#define CC_SHORT_TTL_MS 2000 /* etcd's least TTL with the default election timeout */
#define CC_EXCLUSIVE 0       /* the conformance tests share one etcd */
#include "coordinator_conformance.h"

#define ETCD_TEST(name) Test(coordinator_etcd, name, .init = cc_init, .fini = cc_fini)

/* ========================================================================================== */
/* etcd in particular                                                                         */

ETCD_TEST(descriptor_and_keys)
{
    const gs_plugin_descriptor *d = T.desc;
    cr_assert_str_eq(d->name, "etcd");
    cr_assert_geq(d->abi_minor, 4);
    cr_assert_str_eq(d->build_signature, GS_BUILD_SIGNATURE);
    cr_assert(key("endpoints")->required);
    cr_assert(key("key_prefix")->required);
    cr_assert_str_eq(key("allow_insecure")->default_value, "false");
    cr_assert_str_eq(key("dial_timeout_ms")->default_value, "5000");
    cr_assert_str_eq(key("call_timeout_ms")->default_value, "5000");
    static const char *others[] = {"tls_ca_cert", "tls_cert", "tls_key", "username", "password"};
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(key(others[i])->type, GS_CFG_STRING);
}

static void expect_refused(const ec_opts *o, const char *needle)
{
    void *inst = (void *)1;
    gs_error err;
    cr_assert_eq(try_create(o, &inst, &err), GS_ERROR, "expected a refusal naming %s", needle);
    cr_assert_null(inst);
    cr_assert_str_eq(err.code, "INVALID_CONFIG", "%s: %s", err.code, err.message);
    cr_assert(strstr(err.message, needle), "the message should name %s: %s", needle, err.message);
}

ETCD_TEST(config_refusals)
{
    ec_opts o = {.endpoints = "http://127.0.0.1:2379", .key_prefix = "gs/"};
    expect_refused(&o, "allow_insecure"); /* plaintext without allow_insecure */
    o.insecure = 1;
    o.endpoints = "https://10.0.0.1:2379,http://127.0.0.1:2379";
    o.insecure = 0;
    expect_refused(&o, "allow_insecure"); /* any http:// entry */
    o.insecure = 1;
    o.key_prefix = "";
    expect_refused(&o, "key_prefix");
    o.key_prefix = "/";
    expect_refused(&o, "key_prefix");
    o.key_prefix = "///";
    expect_refused(&o, "key_prefix");
    o.key_prefix = NULL;
    expect_refused(&o, "key_prefix");
    o.key_prefix = "gs/";
    static const char *bad[] = {
        "",        "127.0.0.1:2379",  "ftp://h:1",       "http://h:99999", "http://a:1,,http://b:2",
        "http://", "http://h:1/path", "http://[::1:2379"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o.endpoints = bad[i];
        expect_refused(&o, "endpoints");
    }
    o.endpoints = "http://127.0.0.1:2379";
    o.cert = "/nonexistent.pem";
    expect_refused(&o, "tls_key");
    o.key = "/nonexistent.key";
    expect_refused(&o, "tls_cert");
    o.cert = o.key = NULL;
    o.ca = "/nonexistent/ca.pem";
    expect_refused(&o, "tls_ca_cert");
    o.ca = NULL;
    o.username = "root";
    expect_refused(&o, "password");
    o.username = NULL;
    o.password = "pw";
    expect_refused(&o, "username");
    o.password = NULL;
    o.dial_ms = -1;
    expect_refused(&o, "dial_timeout_ms");
    /* A good config creates; several endpoints, IPv6, no port, spaces. */
    o.dial_ms = 0;
    o.endpoints = " http://127.0.0.1:2379 , https://[::1]:2379,https://etcd.example/ ";
    void *inst;
    gs_error err;
    cr_assert_eq(try_create(&o, &inst, &err), GS_OK, "%s", err.message);
    T.vt->destroy(inst);
}

ETCD_TEST(key_prefix_normalised_and_visible_to_etcdctl)
{
    cr_assert_not_null(T.url);
    char prefix[64], slashes[64];
    snprintf(prefix, sizeof prefix, "norm-%ld", (long)getpid());
    snprintf(slashes, sizeof slashes, "norm-%ld///", (long)getpid());
    ec_opts o = {.endpoints = T.url, .key_prefix = prefix, .insecure = 1};
    void *a = open_with(&o);
    o.key_prefix = slashes;
    void *b = open_with(&o);
    cc_put(a, "clusters/c1/controller", "{\"holder\":\"node-a\"}", 0);
    cc_kv kv;
    cr_assert_eq(cc_get(b, "clusters/c1/controller", &kv), 1);
    cr_assert(cc_kv_is(&kv, "clusters/c1/controller", "{\"holder\":\"node-a\"}"));
    /* What an operator sees: the README's command. */
    etcd_proc view = {0};
    snprintf(view.url, sizeof view.url, "%s", T.url);
    char args[200], out[4096];
    snprintf(args, sizeof args, "get --prefix %s/clusters/", prefix);
    cr_assert_eq(etcdctl(&view, args, out, sizeof out), 0, "%s", out);
    char want[128];
    snprintf(want, sizeof want, "%s/clusters/c1/controller\n{\"holder\":\"node-a\"}", prefix);
    cr_assert(strstr(out, want), "etcdctl printed: %s", out);
    cc_close(a);
    cc_close(b);
}

ETCD_TEST(unreachable_endpoints_fail_within_the_dial_timeout)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", free_port()); /* nobody listens */
    /* 192.0.2.1 is TEST-NET-1: never routed, so a connection there hangs or fails at once. */
    const char *lists[] = {url, "http://192.0.2.1:2379"};
    for (size_t i = 0; i < 2; i++) {
        ec_opts o = {.endpoints = lists[i],
                     .key_prefix = "gs/",
                     .insecure = 1,
                     .dial_ms = 1000,
                     .call_ms = 3000};
        void *inst;
        gs_error err;
        cr_assert_eq(try_create(&o, &inst, &err), GS_OK);
        uint64_t t0 = now_ms();
        cr_assert_eq(T.vt->start(inst, &err), GS_ERROR);
        uint64_t took = now_ms() - t0;
        cr_assert_str_eq(err.code, "COORDINATOR_UNAVAILABLE");
        cr_assert(strstr(err.message, lists[i]), "the message names the endpoint: %s", err.message);
        cr_assert_leq(took, 1000 + 1500, "start took %" PRIu64 " ms with a 1000 ms dial timeout",
                      took);
        /* Calls before a successful start fail at once. */
        cc_list l;
        t0 = now_ms();
        cr_assert_eq(T.vt->range(inst, (const uint8_t *)"", 0, 1, cc_visit, &l, NULL, &err),
                     GS_ERROR);
        cr_assert_str_eq(err.code, "COORDINATOR_UNAVAILABLE");
        cr_assert_lt(now_ms() - t0, 500);
        T.vt->destroy(inst);
    }
}

ETCD_TEST(the_next_endpoint_is_tried)
{
    cr_assert_not_null(T.url);
    char list[200], prefix[64];
    snprintf(list, sizeof list, "http://127.0.0.1:%d,%s", free_port(), T.url);
    snprintf(prefix, sizeof prefix, "next-%ld/", (long)getpid());
    ec_opts o = {.endpoints = list, .key_prefix = prefix, .insecure = 1, .dial_ms = 2000};
    void *a = open_with(&o);
    static cc_watcher w;
    uint64_t id = cc_watch(a, "n/", 0, &w);
    int64_t rev = cc_put(a, "n/k", "v", 0);
    cr_assert(cc_wait_events(&w, 1, WAIT_MS));
    cc_assert_event(&w, 0, GS_WATCH_PUT, "n/k", "v", rev);
    cc_end_watch(a, id, &w);
    cc_close(a);
}

/* ---- TLS ---- */

static int run(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A CA, a server certificate for 127.0.0.1/localhost and a client certificate, in e->dir. */
static void make_certs(const etcd_proc *e)
{
    char cmd[4096];
    snprintf(
        cmd, sizeof cmd,
        "cd '%s' && "
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth,"
        "clientAuth\\n' > server.ext && "
        "printf 'extendedKeyUsage=clientAuth\\n' > client.ext && "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key "
        "-out ca.pem -days 2 -subj /CN=gs-test-ca && "
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key "
        "-out server.csr -subj /CN=localhost && "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out "
        "server.pem -days 2 -extfile server.ext && "
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout client.key "
        "-out client.csr -subj /CN=gatestream && "
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out "
        "client.pem -days 2 -extfile client.ext",
        e->dir);
    char quiet[4200];
    snprintf(quiet, sizeof quiet, "(%s) >'%s/openssl.log' 2>&1", cmd, e->dir);
    cr_assert_eq(run(quiet), 0, "openssl failed; see %s/openssl.log", e->dir);
}

ETCD_TEST(tls_with_a_client_certificate)
{
    static etcd_proc e;
    cr_assert_eq(etcd_prepare(&e, 1), 0);
    make_certs(&e);
    cr_assert_eq(etcd_run(&e), 0);
    char ca[300], cert[300], keyp[300];
    snprintf(ca, sizeof ca, "%s/ca.pem", e.dir);
    snprintf(cert, sizeof cert, "%s/client.pem", e.dir);
    snprintf(keyp, sizeof keyp, "%s/client.key", e.dir);

    ec_opts o = {.endpoints = e.url, .key_prefix = "tls/", .ca = ca, .cert = cert, .key = keyp};
    void *a = open_with(&o);
    static cc_watcher w;
    uint64_t id = cc_watch(a, "t/", 0, &w);
    int64_t rev = cc_put(a, "t/k", "over TLS", 0);
    cc_kv kv;
    cr_assert_eq(cc_get(a, "t/k", &kv), 1);
    cr_assert(cc_kv_is(&kv, "t/k", "over TLS"));
    cr_assert(cc_wait_events(&w, 1, WAIT_MS));
    cc_assert_event(&w, 0, GS_WATCH_PUT, "t/k", "over TLS", rev);
    int64_t lease = cc_grant(a, 5000);
    gs_error err;
    int64_t left;
    cr_assert_eq(T.vt->lease_keepalive(a, lease, &left, &err), GS_OK, "%s", err.message);
    cc_end_watch(a, id, &w);
    cc_close(a);

    /* Without the client certificate etcd refuses the handshake; without the CA the server
     * certificate is not trusted. Both fail within the dial timeout. */
    ec_opts no_cert = {
        .endpoints = e.url, .key_prefix = "tls/", .ca = ca, .dial_ms = 2000, .call_ms = 2000};
    ec_opts no_ca = {.endpoints = e.url,
                     .key_prefix = "tls/",
                     .cert = cert,
                     .key = keyp,
                     .dial_ms = 2000,
                     .call_ms = 2000};
    const ec_opts *bad[] = {&no_cert, &no_ca};
    for (int i = 0; i < 2; i++) {
        void *inst;
        cr_assert_eq(try_create(bad[i], &inst, &err), GS_OK, "%s", err.message);
        uint64_t t0 = now_ms();
        cr_assert_eq(T.vt->start(inst, &err), GS_ERROR, "case %d connected", i);
        cr_assert_str_eq(err.code, "COORDINATOR_UNAVAILABLE");
        cr_assert_leq(now_ms() - t0, 2000 + 1500);
        T.vt->destroy(inst);
    }
    etcd_remove(&e);
}

/* ---- username and password ---- */

ETCD_TEST(username_and_password)
{
    static etcd_proc e;
    cr_assert_eq(etcd_prepare(&e, 0), 0);
    e.token_ttl_s = 1; /* simple tokens expire after 1 s idle: the plugin must renew them */
    cr_assert_eq(etcd_run(&e), 0);
    char out[4096];
    cr_assert_eq(etcdctl(&e, "user add root:s3cret", out, sizeof out), 0, "%s", out);
    cr_assert_eq(etcdctl(&e, "auth enable", out, sizeof out), 0, "%s", out);

    gs_error err;
    void *inst;
    ec_opts wrong = {.endpoints = e.url,
                     .key_prefix = "auth/",
                     .insecure = 1,
                     .username = "root",
                     .password = "wrong",
                     .call_ms = 3000};
    cr_assert_eq(try_create(&wrong, &inst, &err), GS_OK);
    cr_assert_eq(T.vt->start(inst, &err), GS_ERROR, "a wrong password must be refused");
    cr_assert_str_eq(err.code, "COORDINATOR_UNAVAILABLE");
    cr_assert(strstr(err.message, "root") && strstr(err.message, "authentication failed") &&
                  strstr(err.message, "password"),
              "the refusal should say who and why: %s", err.message);
    T.vt->destroy(inst);

    ec_opts anonymous = {.endpoints = e.url, .key_prefix = "auth/", .insecure = 1, .call_ms = 3000};
    cr_assert_eq(try_create(&anonymous, &inst, &err), GS_OK);
    cr_assert_eq(T.vt->start(inst, &err), GS_ERROR, "no credentials, auth enabled");
    cr_assert(strstr(err.message, "user name is empty"), "%s", err.message);
    T.vt->destroy(inst);

    ec_opts right = wrong;
    right.password = "s3cret";
    void *a = open_with(&right);
    static cc_watcher w;
    uint64_t id = cc_watch(a, "a/", 0, &w);
    int64_t lease = cc_grant(a, 10000);
    int64_t rev = cc_put(a, "a/k", "1", lease);
    cr_assert(cc_wait_events(&w, 1, WAIT_MS));
    cc_assert_event(&w, 0, GS_WATCH_PUT, "a/k", "1", rev);
    /* Let the token expire (etcd's --auth-token-ttl 1): the next calls re-authenticate. */
    pause_ms(2500);
    cc_kv kv;
    cr_assert_eq(cc_get(a, "a/k", &kv), 1);
    int64_t left;
    cr_assert_eq(T.vt->lease_keepalive(a, lease, &left, &err), GS_OK, "%s", err.message);
    int64_t rev2 = cc_put(a, "a/k", "2", lease);
    cr_assert(cc_wait_events(&w, 2, WAIT_MS));
    cc_assert_event(&w, 1, GS_WATCH_PUT, "a/k", "2", rev2);
    static cc_watcher w2;
    uint64_t id2 = cc_watch(a, "a/", rev, &w2); /* a new stream with a renewed token */
    cr_assert(cc_wait_events(&w2, 2, WAIT_MS));
    cc_end_watch(a, id, &w);
    cc_end_watch(a, id2, &w2);
    cc_close(a);
    etcd_remove(&e);
}

/* ---- etcd going away and coming back ---- */

ETCD_TEST(watch_lost_when_etcd_stops_and_calls_recover_after_restart)
{
    static etcd_proc e;
    cr_assert_eq(etcd_prepare(&e, 0), 0);
    cr_assert_eq(etcd_run(&e), 0);
    ec_opts o = {.endpoints = e.url,
                 .key_prefix = "restart/",
                 .insecure = 1,
                 .dial_ms = 1000,
                 .call_ms = 2000};
    void *a = open_with(&o);
    static cc_watcher w;
    cc_watch(a, "r/", 0, &w);
    int64_t rev = cc_put(a, "r/k", "before", 0);
    cr_assert(cc_wait_events(&w, 1, WAIT_MS));

    etcd_stop(&e);
    cr_assert(cc_wait_events(&w, 2, WAIT_MS), "no GS_WATCH_LOST after etcd stopped");
    cr_assert_eq(w.ev[1].type, GS_WATCH_LOST);
    gs_error err;
    cc_list l;
    uint64_t t0 = now_ms();
    cr_assert_eq(T.vt->range(a, (const uint8_t *)"r/", 2, 1, cc_visit, &l, NULL, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "COORDINATOR_UNAVAILABLE");
    cr_assert(strstr(err.message, e.url), "%s", err.message);
    cr_assert_leq(now_ms() - t0, 2000 + 1500, "bounded by call_timeout_ms");

    cr_assert_eq(etcd_run(&e), 0, "etcd did not come back");
    /* The channel reconnects on its own (backoff at most 1 s): retry, bounded. */
    uint64_t end = now_ms() + 15000;
    gs_status rc = GS_ERROR;
    while (rc != GS_OK && now_ms() < end) {
        memset(&l, 0, sizeof l);
        rc = T.vt->range(a, (const uint8_t *)"r/", 2, 1, cc_visit, &l, NULL, &err);
        if (rc != GS_OK)
            pause_ms(100);
    }
    cr_assert_eq(rc, GS_OK, "calls did not recover: %s", err.message);
    cr_assert_eq(l.n, 1);
    cr_assert(cc_kv_is(&l.kv[0], "r/k", "before"), "the data survived the restart");
    cr_assert_eq(l.kv[0].mod, rev);
    static cc_watcher w2;
    uint64_t id2 = cc_watch(a, "r/", rev, &w2);
    int64_t rev2 = cc_put(a, "r/k", "after", 0);
    cr_assert(cc_wait_events(&w2, 2, WAIT_MS));
    cc_assert_event(&w2, 0, GS_WATCH_PUT, "r/k", "before", rev);
    cc_assert_event(&w2, 1, GS_WATCH_PUT, "r/k", "after", rev2);
    cr_assert_eq(cc_events(&w), 2, "nothing after GS_WATCH_LOST");
    cc_end_watch(a, id2, &w2);
    cc_close(a);
    etcd_remove(&e);
}

ETCD_TEST(compacted_history_makes_a_watch_lost)
{
    /* Its own etcd: a compaction is store-wide and would disturb the other tests. */
    static etcd_proc e;
    cr_assert_eq(etcd_prepare(&e, 0), 0);
    cr_assert_eq(etcd_run(&e), 0);
    ec_opts o = {.endpoints = e.url, .key_prefix = "compact/", .insecure = 1};
    void *a = open_with(&o);
    int64_t r1 = cc_put(a, "c/k", "1", 0);
    int64_t r2 = cc_put(a, "c/k", "2", 0);
    char args[64], out[2048];
    snprintf(args, sizeof args, "compact %" PRId64, r2);
    cr_assert_eq(etcdctl(&e, args, out, sizeof out), 0, "%s", out);
    static cc_watcher w;
    cc_watch(a, "c/", r1, &w);
    cr_assert(cc_wait_events(&w, 1, WAIT_MS));
    cr_assert_eq(w.ev[0].type, GS_WATCH_LOST);
    cc_put(a, "c/k", "3", 0);
    static cc_watcher w2;
    uint64_t id2 = cc_watch(a, "c/", 0, &w2);
    int64_t r4 = cc_put(a, "c/k", "4", 0);
    cr_assert(cc_wait_events(&w2, 1, WAIT_MS));
    cc_assert_event(&w2, 0, GS_WATCH_PUT, "c/k", "4", r4);
    cr_assert_eq(cc_events(&w), 1);
    cc_end_watch(a, id2, &w2);
    cc_close(a);
    etcd_remove(&e);
}
