/*
 * The parts of a fake gs_host that the transport plugin tests (test_http.c, test_ws.c) share:
 * a monotonic clock and deadlines, an allocator that counts live blocks and current/peak bytes
 * (and can fail allocations from a size on), log capture with bounded waits on it, the lock and
 * condition every fake-core event is signalled on, the common gs_host entries and server
 * settings, loading a plugin .so from $GS_PLUGIN_DIR as the core does and creating+starting
 * it, a temp directory with a self-signed certificate for TLS tests, and the socket side of a
 * test client (connect with timeouts, TLS with certificate verification, write all, close).
 *
 * Ownership: the state lives in the process global PT; pt_init() resets it, pt_fini() frees
 * the logs, removes the temp directory and destroys the lock. Criterion runs each test in its
 * own process, so one global per process is enough. Header-only: each test binary is one
 * translation unit. fh_alloc/fh_free/fh_realloc/fh_log/fh_error_set are called from any of
 * the plugin's threads; the waits from the test's thread. Every wait is bounded by its
 * deadline.
 */
#ifndef GS_TESTS_PLUGINS_PLUGIN_TEST_HOST_H
#define GS_TESTS_PLUGINS_PLUGIN_TEST_HOST_H

#include <gatestream/client_transport.h>

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 10000 /* the bound on every wait in the plugin tests */

static struct {
    pthread_mutex_t lock; /* guards the logs and every fake-core field of the test */
    pthread_cond_t cond;  /* broadcast on every change a test may wait for */
    char **logs;
    size_t log_count, log_cap;
    int drop_debug_logs; /* 1: GS_LOG_DEBUG lines are printed (if verbose) but not kept */

    atomic_long live_allocs;
    atomic_size_t fail_size_min; /* > 0: allocations of at least this size fail */
    atomic_size_t cur_bytes, peak_bytes;

    char tmpdir[256];
    char cert_path[512], key_path[512];
} PT;

static inline uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* An absolute CLOCK_MONOTONIC time ms from now (PT.cond waits on that clock). */
static inline struct timespec deadline_in(uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* ---- the host's allocator: a 16-byte header holds the size, so current and peak bytes are
 * known ---- */

static inline void *fh_alloc(size_t size)
{
    size_t fail = atomic_load(&PT.fail_size_min);
    if (fail && size >= fail)
        return NULL;
    size_t *p = malloc(size + 16);
    if (!p)
        return NULL;
    p[0] = size;
    atomic_fetch_add(&PT.live_allocs, 1);
    size_t cur = atomic_fetch_add(&PT.cur_bytes, size) + size;
    size_t peak = atomic_load(&PT.peak_bytes);
    while (cur > peak && !atomic_compare_exchange_weak(&PT.peak_bytes, &peak, cur))
        ;
    return (char *)p + 16;
}

static inline void fh_free(void *ptr)
{
    if (!ptr)
        return;
    size_t *p = (size_t *)((char *)ptr - 16);
    atomic_fetch_sub(&PT.cur_bytes, p[0]);
    atomic_fetch_sub(&PT.live_allocs, 1);
    free(p);
}

static inline void *fh_realloc(void *ptr, size_t size)
{
    if (!ptr)
        return fh_alloc(size);
    size_t old = ((size_t *)((char *)ptr - 16))[0];
    void *n = fh_alloc(size);
    if (!n)
        return NULL;
    memcpy(n, ptr, old < size ? old : size);
    fh_free(ptr);
    return n;
}

/* ---- the other common host entries ---- */

static inline uint64_t fh_now_ms(void)
{
    return now_ms();
}

static inline const char *fh_node_id(const gs_host *host)
{
    (void)host;
    return "test-node";
}

static void fh_log(const gs_host *host, gs_log_level level, const char *component, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));
static void fh_log(const gs_host *host, gs_log_level level, const char *component, const char *fmt,
                   ...)
{
    (void)host;
    static const char *names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    char msg[1024];
    int n = snprintf(msg, sizeof msg, "%s %s: ", names[level & 3], component);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
    va_end(ap);
    if (getenv("GS_TEST_VERBOSE"))
        fprintf(stderr, "%s\n", msg);
    if (PT.drop_debug_logs && level == GS_LOG_DEBUG)
        return;
    pthread_mutex_lock(&PT.lock);
    if (PT.log_count == PT.log_cap) {
        size_t cap = PT.log_cap ? PT.log_cap * 2 : 64;
        char **nl = realloc(PT.logs, cap * sizeof *nl);
        if (nl) {
            PT.logs = nl;
            PT.log_cap = cap;
        }
    }
    if (PT.log_count < PT.log_cap)
        PT.logs[PT.log_count++] = strdup(msg);
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
}

static void fh_error_set(gs_error *err, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fh_error_set(gs_error *err, int status, const char *code, const char *fmt, ...)
{
    if (!err)
        return;
    memset(err, 0, sizeof *err);
    err->struct_size = sizeof *err;
    err->status = status;
    snprintf(err->code, sizeof err->code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

/* Fill the host entries both fakes share; the test adds its own fake-core calls. */
static inline void pt_host_init(gs_host *host, void *core)
{
    host->struct_size = sizeof *host;
    host->abi_major = GS_ABI_MAJOR;
    host->abi_minor = GS_ABI_MINOR;
    host->core = core;
    host->log = fh_log;
    host->alloc = fh_alloc;
    host->realloc = fh_realloc;
    host->free = fh_free;
    host->now_ms = fh_now_ms;
    host->node_id = fh_node_id;
    host->error_set = fh_error_set;
}

/* The server settings both fakes start from: loopback, 1 MiB bodies, 16 MiB WebSocket
 * backpressure, 2 I/O threads, 1024 connections, access log on. The test sets the idle
 * timeout and anything else it needs. bind_host (cap bytes) holds the host name. */
static inline void pt_settings_init(gs_server_settings *s, char *bind_host, size_t cap)
{
    snprintf(bind_host, cap, "127.0.0.1");
    s->struct_size = sizeof *s;
    s->host = bind_host;
    s->port = 0;
    s->max_body_bytes = 1048576;
    s->max_ws_backpressure_bytes = 16777216;
    s->io_threads = 2;
    s->connection_limit = 1024;
    s->access_log = 1;
}

/* ---- waiting on the fake core ---- */

/* Wait (bounded) until pred() holds; pred runs with PT.lock held. */
static inline int wait_until(int (*pred)(void *), void *arg, uint64_t ms)
{
    struct timespec ts = deadline_in(ms);
    pthread_mutex_lock(&PT.lock);
    int ok;
    while (!(ok = pred(arg)))
        if (pthread_cond_timedwait(&PT.cond, &PT.lock, &ts) == ETIMEDOUT) {
            ok = pred(arg);
            break;
        }
    pthread_mutex_unlock(&PT.lock);
    return ok;
}

static inline int pred_log(void *arg)
{
    for (size_t i = 0; i < PT.log_count; i++)
        if (strstr(PT.logs[i], (const char *)arg))
            return 1;
    return 0;
}

/* Wait (bounded by WAIT_MS) until *counter, a fake-core count guarded by PT.lock, is at
 * least n. 1 when it is, 0 on timeout. */
typedef struct pt_at_least {
    const int *counter;
    int n;
} pt_at_least;

static inline int pt_pred_at_least(void *arg)
{
    const pt_at_least *a = arg;
    return *a->counter >= a->n;
}

static inline int pt_wait_at_least(const int *counter, int n)
{
    pt_at_least a = {counter, n};
    return wait_until(pt_pred_at_least, &a, WAIT_MS);
}

static inline int wait_log(const char *needle)
{
    return wait_until(pred_log, (void *)needle, WAIT_MS);
}

static inline int log_contains(const char *needle)
{
    pthread_mutex_lock(&PT.lock);
    int found = pred_log((void *)needle);
    pthread_mutex_unlock(&PT.lock);
    return found;
}

/* ---- loading the plugin ---- */

/* dlopen $GS_PLUGIN_DIR/<so_name> (RTLD_NOW | RTLD_LOCAL, as the core does), check that a
 * foreign ABI major is refused, and return the descriptor for ours. */
static inline const gs_plugin_descriptor *pt_load_descriptor(const char *so_name, void **dl)
{
    char path[1024];
    const char *dir = getenv("GS_PLUGIN_DIR");
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : GS_PLUGIN_BUILD_DIR, so_name);
    *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(*dl, "dlopen %s: %s", path, dlerror());
    gs_plugin_entry_fn entry = (gs_plugin_entry_fn)dlsym(*dl, GS_PLUGIN_ENTRY_SYMBOL);
    cr_assert_not_null(entry, "no %s in %s", GS_PLUGIN_ENTRY_SYMBOL, path);
    cr_assert_null(entry(GS_ABI_MAJOR + 1), "a foreign major must be refused");
    const gs_plugin_descriptor *desc = entry(GS_ABI_MAJOR);
    cr_assert_not_null(desc);
    return desc;
}

/* vt->create then vt->start with host and config; either failing fails the test with the
 * plugin's error code and message. *inst is the instance (the test destroys it). */
static inline void pt_create_start(const gs_client_transport_vtable *vt, const gs_host *host,
                                   const void *config, void **inst)
{
    gs_error err;
    memset(&err, 0, sizeof err);
    cr_assert_eq(vt->create(host, config, inst, &err), GS_OK, "create: %s %s", err.code,
                 err.message);
    cr_assert_eq(vt->start(*inst, &err), GS_OK, "start: %s %s", err.code, err.message);
}

/* ---- temp directory and TLS certificate ---- */

/* PT.tmpdir = a fresh /tmp/<prefix>-XXXXXX; -1 (and PT.tmpdir empty) when it cannot be made. */
static inline int pt_make_tmpdir(const char *prefix)
{
    snprintf(PT.tmpdir, sizeof PT.tmpdir, "/tmp/%s-XXXXXX", prefix);
    if (!mkdtemp(PT.tmpdir)) {
        PT.tmpdir[0] = '\0';
        return -1;
    }
    return 0;
}

static inline void pt_rm_tmpdir(void)
{
    if (!PT.tmpdir[0])
        return;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", PT.tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", PT.tmpdir);
    PT.tmpdir[0] = '\0';
}

/* A self-signed certificate for localhost/127.0.0.1 in a new temp directory, made with the
 * openssl CLI: PT.cert_path and PT.key_path. -1 when there is no openssl CLI. */
static inline int pt_make_certificate(const char *prefix)
{
    if (system("command -v openssl >/dev/null 2>&1") != 0)
        return -1;
    cr_assert_eq(pt_make_tmpdir(prefix), 0);
    snprintf(PT.cert_path, sizeof PT.cert_path, "%s/cert.pem", PT.tmpdir);
    snprintf(PT.key_path, sizeof PT.key_path, "%s/key.pem", PT.tmpdir);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout '%s' -out '%s' -days 2 -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1",
             PT.key_path, PT.cert_path);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- the test client's socket: plain TCP or GnuTLS over it ---- */

/* A TCP connection to the loopback address of family (AF_INET or AF_INET6) on port, with
 * WAIT_MS receive and send timeouts and TCP_NODELAY; rcvbuf > 0 sets SO_RCVBUF first.
 * The fd, or -1. */
static inline int pt_tcp_connect(int family, int port, int rcvbuf)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct timeval tv = {.tv_sec = WAIT_MS / 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc;
    if (family == AF_INET6) {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
        inet_pton(AF_INET6, "::1", &a.sin6_addr);
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    }
    if (rc != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A TLS client session over fd that trusts only ca_file and verifies the name "localhost";
 * the handshake is bounded by WAIT_MS. *tls and *cred are set as soon as they exist (for
 * pt_conn_close) even when this fails. 0 or -1. */
static inline int pt_tls_start(int fd, gnutls_session_t *tls,
                               gnutls_certificate_credentials_t *cred, const char *ca_file)
{
    if (gnutls_certificate_allocate_credentials(cred) < 0)
        return -1;
    if (gnutls_certificate_set_x509_trust_file(*cred, ca_file, GNUTLS_X509_FMT_PEM) <= 0)
        return -1;
    if (gnutls_init(tls, GNUTLS_CLIENT) < 0)
        return -1;
    gnutls_server_name_set(*tls, GNUTLS_NAME_DNS, "localhost", strlen("localhost"));
    gnutls_set_default_priority(*tls);
    gnutls_credentials_set(*tls, GNUTLS_CRD_CERTIFICATE, *cred);
    gnutls_session_set_verify_cert(*tls, "localhost", 0);
    gnutls_transport_set_int(*tls, fd);
    gnutls_handshake_set_timeout(*tls, WAIT_MS);
    int rc;
    do {
        rc = gnutls_handshake(*tls);
    } while (rc < 0 && !gnutls_error_is_fatal(rc));
    if (rc < 0)
        fprintf(stderr, "TLS handshake: %s\n", gnutls_strerror(rc));
    return rc < 0 ? -1 : 0;
}

/* Send all n bytes (through tls when there is a session). 0, or -1 on error or timeout. */
static inline int pt_write_all(int fd, gnutls_session_t tls, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = tls ? gnutls_record_send(tls, p, n) : send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && !tls && errno == EINTR)
            continue;
        if (w < 0 && tls && (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED))
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Say goodbye on TLS, free the session and credentials, close the fd; all reset. */
static inline void pt_conn_close(int *fd, gnutls_session_t *tls,
                                 gnutls_certificate_credentials_t *cred)
{
    if (*tls) {
        gnutls_bye(*tls, GNUTLS_SHUT_WR);
        gnutls_deinit(*tls);
    }
    if (*cred)
        gnutls_certificate_free_credentials(*cred);
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
    *tls = NULL;
    *cred = NULL;
}

/* ---- lifetime ---- */

/* Reset PT; the condition variable waits on CLOCK_MONOTONIC (see deadline_in). */
static inline void pt_init(void)
{
    memset(&PT, 0, sizeof PT);
    pthread_mutex_init(&PT.lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&PT.cond, &ca);
    pthread_condattr_destroy(&ca);
}

/* Free the logs, remove the temp directory, destroy the lock. The plugin must be gone. */
static inline void pt_fini(void)
{
    for (size_t i = 0; i < PT.log_count; i++)
        free(PT.logs[i]);
    free(PT.logs);
    PT.logs = NULL;
    PT.log_count = PT.log_cap = 0;
    pt_rm_tmpdir();
    pthread_cond_destroy(&PT.cond);
    pthread_mutex_destroy(&PT.lock);
}

#endif
