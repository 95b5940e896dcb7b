/*
 * http: the HTTP/1.1 client transport, over libmicrohttpd (HTTPS through GnuTLS).
 *
 * What it does: listens on server.host:server.port, turns each request into a gs_request
 * for host->api_submit and sends back what the core completes. Routing, JSON, errors and
 * CORS are the core's; this plugin owns sockets, TLS, keep-alive, limits and its threads.
 * The per-request machinery is in request.c; the accept thread that shares the port with
 * WebSocket (upgrades handed to host->upgrade_handoff) is in acceptor.c; this file is the
 * plugin and its lifecycle.
 *
 * Ownership: the instance copies its config; server settings are the core's and stay valid
 * until destroy. TLS material is read from files at start() and held (key wiped on release)
 * until the daemon stops.
 *
 * Threads: create/start/stop/destroy on the core's main thread. libmicrohttpd runs its own
 * polling threads (epoll, a pool of `threads`); see request.c for what runs on them.
 */
#include "http_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* After stop() answered the stragglers 503: how long it lets those answers be written. */
#define HTTP_FINAL_WRITE_MS 1000

#define HTTP_FAIL(host, err, code, ...)                                                            \
    ((err) ? (host)->error_set((err), 0, (code), __VA_ARGS__) : (void)0, GS_ERROR)

/* ------------------------------------------------------------------------------------------ */
/* Config keys                                                                                */

#define HTTP_INT_KEY(key, def, field, lo, hi, text)                                                \
    {                                                                                              \
        .name = (key), .type = GS_CFG_INT, .default_value = (def),                                 \
        .offset = offsetof(gs_http_config, field), .help = (text), .min = (lo), .max = (hi)        \
    }

static const gs_config_key http_keys[] = {
    HTTP_INT_KEY("threads", "0", threads, 0, 1024,
                 "I/O threads libmicrohttpd polls with (epoll); 0 = server.io_threads"),
    HTTP_INT_KEY("connection_timeout_s", "0", connection_timeout_s, 0, 86400,
                 "seconds an idle connection is kept open; 0 = server.idle_timeout_s"),
    HTTP_INT_KEY("max_connections", "0", max_connections, 0, 1000000,
                 "simultaneous connections accepted; 0 = server.connection_limit"),
    HTTP_INT_KEY("max_connections_per_ip", "0", max_connections_per_ip, 0, 1000000,
                 "simultaneous connections from one client address; 0 = no limit"),
    HTTP_INT_KEY("connection_memory_bytes", "65536", connection_memory_bytes, 8192, 16777216,
                 "memory per connection for the request line and headers (a longer request "
                 "line gets 414, bigger headers 431)"),
    HTTP_INT_KEY("stop_timeout_ms", "5000", stop_timeout_ms, 0, 600000,
                 "how long stop waits for in-flight requests before answering them 503"),
    HTTP_INT_KEY("oversize_drain_bytes", "67108864", oversize_drain_bytes, 0,
                 INT64_C(1099511627776),
                 "bytes of a too-large chunked body read and dropped so the client sees the "
                 "413; past it the connection is cut"),
    HTTP_INT_KEY("upgrade_handoff", "1", upgrade_handoff, 0, 1,
                 "1 = share the port with WebSocket: accept connections ourselves and hand "
                 "WebSocket upgrades to the transport that serves them (plain HTTP only; "
                 "with TLS the WebSocket transport needs its own port)"),
    HTTP_INT_KEY("peek_timeout_ms", "5000", peek_timeout_ms, 100, 600000,
                 "with upgrade_handoff: how long a new connection may take to send its request "
                 "head before it is decided; one that sent nothing by then is closed"),
};

#define HTTP_KEY_COUNT (sizeof http_keys / sizeof http_keys[0])

/** Defaults from the key table, for a host that passes no config struct. */
static void http_config_defaults(gs_http_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < HTTP_KEY_COUNT; i++) {
        int64_t v = strtoll(http_keys[i].default_value, NULL, 10);
        memcpy((char *)cfg + http_keys[i].offset, &v, sizeof v);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                    */

/** MHD's messages: to the host log, and kept during start() to explain a failure. */
static void http_mhd_log(void *cls, const char *fmt, va_list ap)
{
    gs_http *h = cls;
    char line[256];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    pthread_mutex_lock(&h->lock);
    int capturing = h->capture_log;
    if (capturing)
        snprintf(h->start_log, sizeof h->start_log, "%s", line);
    pthread_mutex_unlock(&h->lock);
    /* Most runtime messages are about one client (it closed, it sent garbage): DEBUG, or a
     * misbehaving client would flood the log. Resource trouble is the operator's: WARN. */
    int resource = strstr(line, "limit") || strstr(line, "Failed") ||
                   strstr(line, "Error accepting") || strstr(line, "out of memory") ||
                   strstr(line, "allocating memory");
    h->host->log(h->host, !capturing && resource ? GS_LOG_WARN : GS_LOG_DEBUG, GS_HTTP_COMPONENT,
                 "libmicrohttpd: %s", line);
}

static void lower_first(char *s)
{
    if (s[0] >= 'A' && s[0] <= 'Z' && !(s[1] >= 'A' && s[1] <= 'Z'))
        s[0] = (char)(s[0] - 'A' + 'a');
}

void gs_http_errno_text(int e, char *out, size_t size)
{
    char tmp[128];
    const char *t = strerror_r(e, tmp, sizeof tmp); /* GNU variant */
    snprintf(out, size, "%s", t);
    lower_first(out);
}

/** Read a whole PEM file (at most 1 MiB) into a NUL-terminated host->alloc buffer. */
static gs_status read_pem(gs_http *h, const char *what, const char *path, char **out, size_t *len,
                          gs_error *err)
{
    const gs_host *host = h->host;
    char why[128];
    const char *problem = NULL;
    struct stat st;
    FILE *f = fopen(path, "rb");
    if (!f || fstat(fileno(f), &st) != 0) {
        gs_http_errno_text(errno, why, sizeof why);
        if (f)
            fclose(f);
        return HTTP_FAIL(host, err, "INVALID_CONFIG",
                         "cannot serve HTTPS on %s: cannot read the %s '%s': %s", h->addr_text,
                         what, path, why);
    }
    if (!S_ISREG(st.st_mode) || st.st_size > (off_t)1 << 20) {
        fclose(f);
        return HTTP_FAIL(host, err, "INVALID_CONFIG",
                         "cannot serve HTTPS on %s: the %s '%s' is not a regular file of at "
                         "most 1 MiB",
                         h->addr_text, what, path);
    }
    size_t size = (size_t)st.st_size;
    char *buf = host->alloc(size + 1);
    if (!buf) {
        fclose(f);
        return HTTP_FAIL(host, err, "INTERNAL_ERROR", "out of memory reading the %s '%s'", what,
                         path);
    }
    size_t n = fread(buf, 1, size, f);
    if (n != size) {
        gs_http_errno_text(ferror(f) ? errno : EIO, why, sizeof why);
        problem = why;
    }
    fclose(f);
    buf[n] = '\0';
    if (!problem && !strstr(buf, "-----BEGIN "))
        problem = "it holds no PEM block (expected -----BEGIN ...)";
    if (problem) {
        memset(buf, 0, size + 1);
        host->free(buf);
        return HTTP_FAIL(host, err, "INVALID_CONFIG", "cannot serve HTTPS on %s: the %s '%s': %s",
                         h->addr_text, what, path, problem);
    }
    *out = buf;
    *len = n;
    return GS_OK;
}

static void free_tls(gs_http *h)
{
    if (h->tls_key) {
        volatile char *p = h->tls_key;
        for (size_t i = 0; i < h->tls_key_len; i++)
            p[i] = 0;
        h->host->free(h->tls_key);
    }
    if (h->tls_cert)
        h->host->free(h->tls_cert);
    h->tls_key = h->tls_cert = NULL;
    h->tls_key_len = 0;
}

static socklen_t addr_len(const gs_http *h)
{
    return h->family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/** Why did the daemon not start? Bind the address ourselves to get the errno. */
static int probe_bind(const gs_http *h)
{
    int fd = socket(h->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    int on = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (h->family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    int rc = bind(fd, (const struct sockaddr *)&h->addr, addr_len(h)) == 0 ? 0 : errno;
    close(fd);
    return rc;
}

/** Parse server.host (an IPv4 or IPv6 literal, brackets allowed) and the port. */
static gs_status parse_bind_address(gs_http *h, const char *text, int port, gs_error *err)
{
    const gs_host *host = h->host;
    char lit[INET6_ADDRSTRLEN + IF_NAMESIZE + 4];
    size_t n = strlen(text);
    if (n >= 2 && text[0] == '[' && text[n - 1] == ']')
        snprintf(lit, sizeof lit, "%.*s", (int)(n - 2), text + 1);
    else
        snprintf(lit, sizeof lit, "%s", text);

    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
    if (getaddrinfo(lit, NULL, &hints, &res) != 0 || !res ||
        (res->ai_family != AF_INET && res->ai_family != AF_INET6) ||
        res->ai_addrlen > sizeof h->addr) {
        if (res)
            freeaddrinfo(res);
        return HTTP_FAIL(host, err, "INVALID_CONFIG",
                         "server.host '%s' is not an IPv4 or IPv6 address literal "
                         "(e.g. 127.0.0.1, 0.0.0.0, ::1)",
                         text);
    }
    memset(&h->addr, 0, sizeof h->addr);
    memcpy(&h->addr, res->ai_addr, res->ai_addrlen);
    h->family = res->ai_family;
    freeaddrinfo(res);
    if (h->family == AF_INET6) {
        ((struct sockaddr_in6 *)&h->addr)->sin6_port = htons((uint16_t)port);
        snprintf(h->addr_text, sizeof h->addr_text, "[%s]:%d", lit, port);
    } else {
        ((struct sockaddr_in *)&h->addr)->sin_port = htons((uint16_t)port);
        snprintf(h->addr_text, sizeof h->addr_text, "%s:%d", lit, port);
    }
    return GS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Lifecycle                                                                                  */

static void http_destroy(void *instance);

static gs_status http_create(const gs_host *host, const void *config, void **instance,
                             gs_error *err)
{
    if (!instance)
        return GS_ERROR;
    *instance = NULL;
    if (!host || !GS_HAS_MEMBER(gs_host, error_set, host->struct_size) || !host->alloc ||
        !host->free || !host->realloc || !host->log || !host->api_submit ||
        !host->server_settings || !host->error_set)
        return GS_ERROR; /* no error_set to explain with: the loader checks hosts anyway */

    const gs_server_settings *s = host->server_settings(host);
    if (!s || !GS_HAS_MEMBER(gs_server_settings, access_log, s->struct_size))
        return HTTP_FAIL(host, err, "INTERNAL_ERROR",
                         "the host gave the http transport no server settings");
    if (s->port < 0 || s->port > 65535)
        return HTTP_FAIL(host, err, "INVALID_CONFIG",
                         "server.port %d is outside 0..65535 (0 = an ephemeral port)", s->port);
    if (s->max_body_bytes == 0 || s->max_body_bytes > (uint64_t)SIZE_MAX)
        return HTTP_FAIL(host, err, "INVALID_MAX_BODY_BYTES",
                         "server.max_body_bytes %" PRIu64
                         " cannot be enforced by the http transport (1..%zu)",
                         s->max_body_bytes, (size_t)SIZE_MAX);
    int has_cert = s->tls_cert_file && s->tls_cert_file[0];
    int has_key = s->tls_key_file && s->tls_key_file[0];
    if (has_cert != has_key)
        return HTTP_FAIL(host, err, "INVALID_CONFIG",
                         "HTTPS needs both server.tls_cert_file and server.tls_key_file; only "
                         "%s is set",
                         has_cert ? "tls_cert_file" : "tls_key_file");

    gs_http *h = host->alloc(sizeof *h);
    if (!h)
        return HTTP_FAIL(host, err, "INTERNAL_ERROR", "out of memory creating the http transport");
    memset(h, 0, sizeof *h);
    h->host = host;
    h->settings = s;
    h->bound_port = -1;
    h->acc_listen_fd = h->acc_epoll_fd = h->acc_wake_fd = -1;
    atomic_init(&h->acc_stop, 0);
    atomic_init(&h->acc_paused, 0);
    atomic_init(&h->conn_count, 0);
    atomic_init(&h->stopping, 0);
    atomic_init(&h->closing, 0);
    if (config)
        memcpy(&h->cfg, config, sizeof h->cfg);
    else
        http_config_defaults(&h->cfg);
    for (size_t i = 0; i < HTTP_KEY_COUNT; i++) {
        const gs_config_key *k = &http_keys[i];
        int64_t v;
        memcpy(&v, (const char *)&h->cfg + k->offset, sizeof v);
        if (v < k->min || v > k->max) {
            host->free(h);
            return HTTP_FAIL(host, err, "INVALID_CONFIG",
                             "http transport: %s = %" PRId64 " is outside %" PRId64 "..%" PRId64,
                             k->name, v, k->min, k->max);
        }
    }

    pthread_condattr_t ca;
    int ok = pthread_mutex_init(&h->lock, NULL) == 0;
    if (ok && pthread_condattr_init(&ca) == 0) {
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        if (pthread_cond_init(&h->quiet, &ca) != 0) {
            pthread_mutex_destroy(&h->lock);
            ok = 0;
        }
        pthread_condattr_destroy(&ca);
    } else if (ok) {
        pthread_mutex_destroy(&h->lock);
        ok = 0;
    }
    if (!ok) {
        host->free(h);
        return HTTP_FAIL(host, err, "INTERNAL_ERROR", "cannot create the http transport's lock");
    }

    const char *bind_host = s->host && s->host[0] ? s->host : "127.0.0.1";
    if (parse_bind_address(h, bind_host, s->port, err) != GS_OK) {
        http_destroy(h);
        return GS_ERROR;
    }
    *instance = h;
    return GS_OK;
}

static gs_status http_start(void *instance, gs_error *err)
{
    gs_http *h = instance;
    const gs_host *host = h->host;
    const gs_server_settings *s = h->settings;
    if (h->daemon)
        return HTTP_FAIL(host, err, "INTERNAL_ERROR", "the http transport on %s already runs",
                         h->addr_text);

    int tls = s->tls_cert_file && s->tls_cert_file[0] && s->tls_key_file && s->tls_key_file[0];
    if (tls) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
            return HTTP_FAIL(host, err, "INVALID_CONFIG",
                             "cannot serve HTTPS on %s: this libmicrohttpd has no TLS support",
                             h->addr_text);
        size_t cert_len = 0;
        if (read_pem(h, "certificate", s->tls_cert_file, &h->tls_cert, &cert_len, err) != GS_OK ||
            read_pem(h, "private key", s->tls_key_file, &h->tls_key, &h->tls_key_len, err) !=
                GS_OK) {
            free_tls(h);
            return GS_ERROR;
        }
    }

    int64_t threads = h->cfg.threads > 0 ? h->cfg.threads : s->io_threads;
    if (threads < 1)
        threads = 1;
    int64_t timeout = h->cfg.connection_timeout_s > 0
                          ? h->cfg.connection_timeout_s
                          : (s->idle_timeout_s > 0 ? s->idle_timeout_s : 0);
    int64_t limit = h->cfg.max_connections > 0 ? h->cfg.max_connections : s->connection_limit;
    /* Our own acceptor shares the port with WebSocket; it needs a host that takes upgrades,
     * and plain HTTP (a TLS connection's first bytes are ciphertext). */
    h->acc_used = !tls && h->cfg.upgrade_handoff &&
                  GS_HAS_MEMBER(gs_host, upgrade_handoff, host->struct_size) &&
                  host->upgrade_handoff;
    h->conn_limit = limit > 0 ? limit : 0;
    /* The pool splits the limit between threads; keep at least one connection each. With
     * the acceptor, the acceptor enforces the limit and libmicrohttpd's (doubled, so a burst
     * that lands unevenly on its threads is not refused) is only a backstop. */
    if (limit > 0 && limit < threads)
        limit = threads;
    if (h->acc_used && limit > 0)
        limit = limit > 500000 ? 1000000 : 2 * limit;

    unsigned int flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    flags |= MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL : MHD_USE_POLL;
    if (h->acc_used)
        flags |= MHD_USE_NO_LISTEN_SOCKET;
    else if (h->family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (tls)
        flags |= MHD_USE_TLS;

    struct MHD_OptionItem ops[16];
    size_t n = 0;
#define HTTP_OPT(o, v, p) ops[n++] = (struct MHD_OptionItem){(o), (intptr_t)(v), (p)}
    HTTP_OPT(MHD_OPTION_EXTERNAL_LOGGER, &http_mhd_log, h); /* first: logs the others */
    if (h->acc_used)
        HTTP_OPT(MHD_OPTION_NOTIFY_CONNECTION, &gs_http_notify_connection, h);
    else
        HTTP_OPT(MHD_OPTION_SOCK_ADDR, 0, &h->addr);
    HTTP_OPT(MHD_OPTION_URI_LOG_CALLBACK, &gs_http_uri_log, h);
    HTTP_OPT(MHD_OPTION_UNESCAPE_CALLBACK, &gs_http_unescape_keep, h);
    HTTP_OPT(MHD_OPTION_NOTIFY_COMPLETED, &gs_http_completed, h);
    HTTP_OPT(MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)timeout, NULL);
    HTTP_OPT(MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)h->cfg.connection_memory_bytes, NULL);
    if (limit > 0)
        HTTP_OPT(MHD_OPTION_CONNECTION_LIMIT, (unsigned int)limit, NULL);
    if (h->cfg.max_connections_per_ip > 0)
        HTTP_OPT(MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)h->cfg.max_connections_per_ip,
                 NULL);
    if (threads > 1)
        HTTP_OPT(MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)threads, NULL);
    if (tls) {
        HTTP_OPT(MHD_OPTION_HTTPS_MEM_KEY, 0, h->tls_key);
        HTTP_OPT(MHD_OPTION_HTTPS_MEM_CERT, 0, h->tls_cert);
    }
    HTTP_OPT(MHD_OPTION_END, 0, NULL);
#undef HTTP_OPT

    h->max_body_bytes = s->max_body_bytes;
    h->access_log = s->access_log;
    atomic_store(&h->stopping, 0);
    atomic_store(&h->closing, 0);
    pthread_mutex_lock(&h->lock);
    h->capture_log = 1;
    h->start_log[0] = '\0';
    pthread_mutex_unlock(&h->lock);

    if (h->acc_used && gs_http_acceptor_listen(h, err) != GS_OK) {
        pthread_mutex_lock(&h->lock);
        h->capture_log = 0;
        pthread_mutex_unlock(&h->lock);
        return GS_ERROR;
    }

    int port = s->port;
    h->daemon = MHD_start_daemon(flags, h->acc_used ? 0 : (uint16_t)port, NULL, NULL,
                                 &gs_http_access, h, MHD_OPTION_ARRAY, ops, MHD_OPTION_END);

    char mhd_said[sizeof h->start_log];
    pthread_mutex_lock(&h->lock);
    h->capture_log = 0;
    snprintf(mhd_said, sizeof mhd_said, "%s", h->start_log);
    pthread_mutex_unlock(&h->lock);

    if (!h->daemon && h->acc_used) {
        gs_http_acceptor_stop(h);
        gs_http_acceptor_close(h);
        h->bound_port = -1;
        return HTTP_FAIL(host, err, "INTERNAL_ERROR", "cannot start HTTP on %s: %s", h->addr_text,
                         mhd_said[0] ? mhd_said : "libmicrohttpd refused to start");
    }
    if (!h->daemon) {
        free_tls(h);
        int e = probe_bind(h);
        if (e) {
            char why[128];
            gs_http_errno_text(e, why, sizeof why);
            int config_fault = e == EADDRNOTAVAIL || e == EACCES || e == EAFNOSUPPORT;
            return HTTP_FAIL(host, err, config_fault ? "INVALID_CONFIG" : "INTERNAL_ERROR",
                             "cannot listen on %s: %s", h->addr_text, why);
        }
        return HTTP_FAIL(host, err, tls ? "INVALID_CONFIG" : "INTERNAL_ERROR",
                         "cannot start %s on %s: %s", tls ? "HTTPS" : "HTTP", h->addr_text,
                         mhd_said[0] ? mhd_said : "libmicrohttpd refused to start");
    }

    if (h->acc_used) {
        if (gs_http_acceptor_start(h, err) != GS_OK) {
            MHD_stop_daemon(h->daemon);
            h->daemon = NULL;
            h->bound_port = -1;
            return GS_ERROR;
        }
    } else {
        const union MHD_DaemonInfo *info =
            MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
        h->bound_port = info && info->port ? info->port : port;
    }
    host->log(host, GS_LOG_INFO, GS_HTTP_COMPONENT,
              "serving %s on %s (bound port %d, %d I/O thread%s, idle timeout %ds%s)",
              tls ? "HTTPS" : "HTTP", h->addr_text, h->bound_port, (int)threads,
              threads == 1 ? "" : "s", (int)timeout,
              h->acc_used ? ", WebSocket upgrades handed over" : "");
    return GS_OK;
}

/** Wait until no request is attached to a connection, at most `ms`. Returns how many are. */
static size_t wait_quiet(gs_http *h, int64_t ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += (time_t)(ms / 1000);
    deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&h->lock);
    while (h->live_count > 0) {
        if (pthread_cond_timedwait(&h->quiet, &h->lock, &deadline) == ETIMEDOUT)
            break;
    }
    size_t left = h->live_count;
    pthread_mutex_unlock(&h->lock);
    return left;
}

static void http_stop(void *instance)
{
    gs_http *h = instance;
    if (!h || !h->daemon)
        return;
    const gs_host *host = h->host;

    /* 1. Stop accepting; answers from now on close their connection. */
    atomic_store(&h->stopping, 1);
    if (h->acc_used) {
        gs_http_acceptor_stop(h); /* connections still being peeked at are closed */
    } else {
        MHD_socket lfd = MHD_quiesce_daemon(h->daemon);
        if (lfd != MHD_INVALID_SOCKET)
            close(lfd);
    }

    /* 2. Let in-flight requests be answered and written, for at most stop_timeout_ms. */
    pthread_mutex_lock(&h->lock);
    size_t in_flight = h->live_count;
    pthread_mutex_unlock(&h->lock);
    host->log(host, GS_LOG_INFO, GS_HTTP_COMPONENT,
              "stopping %s: no new connections; waiting up to %" PRId64
              " ms for %zu request%s in flight",
              h->addr_text, h->cfg.stop_timeout_ms, in_flight, in_flight == 1 ? "" : "s");
    size_t left = wait_quiet(h, h->cfg.stop_timeout_ms);

    /* 3. Whatever still waits for the core gets 503: MHD must not stop with a suspended
     * connection. Once `closing` is set nothing suspends again; the sweep runs even when the
     * wait ended quiet, since a keep-alive connection may have started a request since. The
     * 503s are small: they get a short, bounded moment to be written. */
    atomic_store(&h->closing, 1);
    size_t swept = gs_http_finish_suspended(h);
    if (left > 0 || swept > 0) {
        host->log(host, GS_LOG_WARN, GS_HTTP_COMPONENT,
                  "%zu request%s still in flight on %s after %" PRId64
                  " ms (%zu waiting for the core): answering 503 and closing",
                  left, left == 1 ? "" : "s", h->addr_text, h->cfg.stop_timeout_ms, swept);
        (void)wait_quiet(h, HTTP_FINAL_WRITE_MS);
    }

    /* 4. Close every connection; MHD reports each unfinished request as completed. */
    MHD_stop_daemon(h->daemon);
    h->daemon = NULL;
    if (h->acc_used)
        gs_http_acceptor_close(h);
    h->acc_used = 0;
    h->bound_port = -1;
    free_tls(h);
    host->log(host, GS_LOG_INFO, GS_HTTP_COMPONENT, "stopped serving on %s", h->addr_text);
}

static void http_destroy(void *instance)
{
    gs_http *h = instance;
    if (!h)
        return;
    http_stop(h);
    free_tls(h);
    pthread_cond_destroy(&h->quiet);
    pthread_mutex_destroy(&h->lock);
    h->host->free(h);
}

static int http_bound_port(void *instance)
{
    gs_http *h = instance;
    return h && h->daemon ? h->bound_port : -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Descriptor                                                                                 */

static const gs_client_transport_vtable http_vtable = {
    .struct_size = sizeof(gs_client_transport_vtable),
    .create = http_create,
    .start = http_start,
    .stop = http_stop,
    .destroy = http_destroy,
    .bound_port = http_bound_port,
};

static const gs_plugin_descriptor http_descriptor = {
    .struct_size = sizeof(gs_plugin_descriptor),
    .abi_major = GS_ABI_MAJOR,
    .abi_minor = GS_ABI_MINOR,
    .kind = GS_KIND_CLIENT_TRANSPORT,
    .name = "http",
    .version = "0.1.0",
    .build_signature = GS_BUILD_SIGNATURE,
    .vtable = &http_vtable,
    .config_keys = http_keys,
    .config_key_count = HTTP_KEY_COUNT,
    .config_key_size = sizeof(gs_config_key),
    .config_struct_size = sizeof(gs_http_config),
    .description = "HTTP/1.1 client transport over libmicrohttpd (HTTPS through GnuTLS)",
};

GS_PLUGIN_DEFINE(http_descriptor)
