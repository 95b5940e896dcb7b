/*
 * Test support for the client suite: a real gatestream process on a free loopback port with
 * a temporary data dir (started by fork/exec, waited for with a bounded loop, stopped by its
 * pid), a raw HTTP request for set-up that does not go through the library under test, and a
 * small fake HTTP responder (one thread, keep-alive) for discovery and routing tests.
 * Single-threaded use from a test, except the responder's handler, which runs on its thread.
 */
#ifndef GS_CLIENT_TEST_SUPPORT_H
#define GS_CLIENT_TEST_SUPPORT_H

#include <stddef.h>
#include <sys/types.h>

typedef struct gst_server {
    pid_t pid;
    int port;
    char dir[256];
    char config[320];
    char log[320];
    int tls; /**< HTTPS on port: readiness is the log's ready line and a TCP connect */
} gst_server;

/** A loopback port that was free a moment ago. */
int gst_free_port(void);
/** Write a config (the http and ws transports, database `main`, the extras appended to the
 * plugins / server / databases sections) into a fresh temp dir and start the server; waits
 * until it logs ready. 0 on success; on failure the log is printed. */
int gst_server_start(gst_server *s, const char *extra_plugins, const char *extra_server,
                     const char *extra_databases, int accept_sql);
/** A fresh temp dir and free port without a config: the caller writes s->config, then
 * starts it with gst_server_restart. 0 on success. */
int gst_server_prepare(gst_server *s);
/** Start the same config again (same port, same data). */
int gst_server_restart(gst_server *s);
/** SIGTERM and reap (bounded; SIGKILL after 15 s). */
void gst_server_stop(gst_server *s);
void gst_server_kill9(gst_server *s);
/** Stop, then remove the temp dir. */
void gst_server_cleanup(gst_server *s);
/** "http://127.0.0.1:<port>" into buf. */
const char *gst_server_url(const gst_server *s, char *buf, size_t size);
/** A blocking HTTP request on loopback; fills status and body (NUL-terminated, cut to size).
 * Returns 0 when an answer came. */
int gst_http(int port, const char *method, const char *path, const char *body, int *status,
             char *out, size_t size);
/** 1 when the server's log holds `needle`. */
int gst_log_contains(const gst_server *s, const char *needle);

/** The fake responder's answer to one request. */
typedef struct gst_reply {
    int status;
    char body[4096];
    int delay_ms;
    int close; /**< close the connection instead of answering */
} gst_reply;
typedef void (*gst_fake_fn)(void *user, const char *method, const char *path, const char *body,
                            gst_reply *reply);
typedef struct gst_fake gst_fake;
gst_fake *gst_fake_start(gst_fake_fn fn, void *user);
int gst_fake_port(const gst_fake *f);
/** How many requests whose path starts with prefix were answered. */
int gst_fake_hits(gst_fake *f, const char *prefix);
void gst_fake_stop(gst_fake *f);

/** Milliseconds on the monotonic clock. */
long long gst_now_ms(void);

#endif
