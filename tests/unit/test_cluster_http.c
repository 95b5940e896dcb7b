/*
 * The operator commands' HTTP GET (core/src/node/cluster_http.c) against a scripted server
 * thread on a loopback port: Content-Length, chunked and close-delimited bodies, error
 * statuses, the request it sends, URL checks, connection refused, a server that never answers
 * (bounded by the timeout), malformed answers, and allocation failures.
 */
#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "node/cluster_http.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct script {
    int listen_fd;
    int port;
    const char *answer; /* sent after the request head is read; NULL = never answer */
    size_t answer_len;
    int hold_ms;        /* with answer NULL: keep the connection open this long */
    char request[4096]; /* what the client sent */
    pthread_t thread;
} script;

static void *serve_one(void *arg)
{
    script *s = arg;
    /* bounded: a client that failed before connecting leaves no connection to accept */
    struct pollfd lp = {.fd = s->listen_fd, .events = POLLIN};
    if (poll(&lp, 1, 3000) != 1)
        return NULL;
    int fd = accept(s->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    size_t got = 0;
    while (got < sizeof s->request - 1) { /* read the request head */
        ssize_t r = recv(fd, s->request + got, sizeof s->request - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
        s->request[got] = 0;
        if (strstr(s->request, "\r\n\r\n"))
            break;
    }
    if (s->answer) {
        size_t off = 0;
        while (off < s->answer_len) {
            ssize_t w = send(fd, s->answer + off, s->answer_len - off, MSG_NOSIGNAL);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
    } else { /* never answer: wait for the client to give up (EOF) or hold_ms */
        struct pollfd cp = {.fd = fd, .events = POLLIN};
        poll(&cp, 1, s->hold_ms);
    }
    close(fd);
    return NULL;
}

static void script_start(script *s, const char *answer, size_t len)
{
    memset(s->request, 0, sizeof s->request);
    s->answer = answer;
    s->answer_len = len;
    s->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(s->listen_fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(s->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(s->listen_fd, 4), 0);
    socklen_t al = sizeof a;
    getsockname(s->listen_fd, (struct sockaddr *)&a, &al);
    s->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&s->thread, NULL, serve_one, s), 0);
}

static void script_end(script *s)
{
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
}

static gs_status get(script *s, const char *prefix, const char *path, const char *const *hdrs,
                     size_t nh, int timeout_ms, gs_cluster_http_response *r, gs_error *err)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", s->port, prefix);
    gs_error_init(err);
    return gs_cluster_http_get(url, path, hdrs, nh, timeout_ms, r, err);
}

#define ANSWER(s) s, sizeof(s) - 1

Test(cluster_http, content_length_body_and_request_line)
{
    script s;
    script_start(&s, ANSWER("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            "Content-Length: 17\r\n\r\n{\"databaseId\":\"m\"}"));
    gs_cluster_http_response r;
    gs_error err;
    const char *hdrs[] = {"Authorization: Bearer t0k"};
    gs_status st = get(&s, "/base/", "/db/main/cluster", hdrs, 1, 5000, &r, &err);
    script_end(&s);
    cr_assert_eq(st, GS_OK, "%s: %s", err.code, err.message);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body_len, 17);
    cr_assert_str_eq(r.body, "{\"databaseId\":\"m\"");
    cr_assert(strncmp(s.request, "GET /base/db/main/cluster HTTP/1.1\r\n", 36) == 0, "%s",
              s.request);
    char host[64];
    snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%d\r\n", s.port);
    cr_assert(strstr(s.request, host), "%s", s.request);
    cr_assert(strstr(s.request, "\r\nAuthorization: Bearer t0k\r\n"), "%s", s.request);
    cr_assert(strstr(s.request, "\r\nConnection: close\r\n"), "%s", s.request);
    gs_cluster_http_response_free(&r);
    cr_assert_null(r.body);
}

Test(cluster_http, chunked_body)
{
    script s;
    script_start(&s, ANSWER("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n"));
    gs_cluster_http_response r;
    gs_error err;
    gs_status st = get(&s, "", "/x", NULL, 0, 5000, &r, &err);
    script_end(&s);
    cr_assert_eq(st, GS_OK, "%s: %s", err.code, err.message);
    cr_assert_str_eq(r.body, "hello, world");
    cr_assert_eq(r.body_len, 12);
    gs_cluster_http_response_free(&r);
}

Test(cluster_http, close_delimited_body_and_error_status)
{
    script s;
    script_start(&s, ANSWER("HTTP/1.0 404 Not Found\r\n\r\n{\"error\":{\"code\":\"NOT_FOUND\"}}"));
    gs_cluster_http_response r;
    gs_error err;
    gs_status st = get(&s, "", "/db/main/cluster", NULL, 0, 5000, &r, &err);
    script_end(&s);
    cr_assert_eq(st, GS_OK, "an HTTP error status is the caller's to read: %s", err.message);
    cr_assert_eq(r.status, 404);
    cr_assert_str_eq(r.body, "{\"error\":{\"code\":\"NOT_FOUND\"}}");
    gs_cluster_http_response_free(&r);
}

Test(cluster_http, empty_body_is_an_empty_string)
{
    script s;
    script_start(&s, ANSWER("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"));
    gs_cluster_http_response r;
    gs_error err;
    cr_assert_eq(get(&s, "", "/", NULL, 0, 5000, &r, &err), GS_OK, "%s", err.message);
    script_end(&s);
    cr_assert_eq(r.status, 204);
    cr_assert_not_null(r.body);
    cr_assert_str_eq(r.body, "");
    cr_assert_eq(r.body_len, 0);
    gs_cluster_http_response_free(&r);
}

Test(cluster_http, malformed_answers)
{
    static const char *const bad[] = {
        "SSH-2.0-OpenSSH\r\n\r\n",                                           /* not HTTP */
        "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort",                /* truncated */
        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",                      /* bad length */
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",       /* bad chunk size */
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX", /* no CRLF */
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain",                       /* headers never end */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        script s;
        script_start(&s, bad[i], strlen(bad[i]));
        gs_cluster_http_response r;
        gs_error err;
        gs_status st = get(&s, "", "/", NULL, 0, 5000, &r, &err);
        script_end(&s);
        cr_assert_eq(st, GS_ERROR, "answer %zu accepted", i);
        cr_assert_str_eq(err.code, "INVALID_RESPONSE", "answer %zu: %s", i, err.message);
        cr_assert_null(r.body);
    }
}

Test(cluster_http, a_server_that_never_answers_times_out)
{
    script s;
    s.hold_ms = 2000;
    script_start(&s, NULL, 0);
    gs_cluster_http_response r;
    gs_error err;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    gs_status st = get(&s, "", "/", NULL, 0, 300, &r, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    script_end(&s);
    double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_assert_eq(st, GS_ERROR);
    cr_assert_str_eq(err.code, "TIMEOUT", "%s", err.message);
    cr_assert(took >= 0.25 && took < 1.5, "took %.3f s for a 300 ms bound", took);
}

Test(cluster_http, connection_refused)
{
    /* a port that was free a moment ago and has no listener */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", ntohs(a.sin_port));
    gs_cluster_http_response r;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_cluster_http_get(url, "/health", NULL, 0, 2000, &r, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "CONNECTION_ERROR", "%s", err.message);
    cr_assert(strstr(err.message, url), "the message names the URL: %s", err.message);
}

Test(cluster_http, urls_and_headers_it_refuses)
{
    static const char *const bad[] = {
        "https://127.0.0.1:9881",
        "ftp://x",
        "127.0.0.1:9881",
        "http://",
        "http://:80",
        "http://h:0",
        "http://h:99999",
        "http://h:12ab",
        "http://[::1",
        "http://h/?q=1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gs_cluster_http_response r;
        gs_error err;
        gs_error_init(&err);
        cr_assert_eq(gs_cluster_http_get(bad[i], "/", NULL, 0, 1000, &r, &err), GS_ERROR, "%s",
                     bad[i]);
        cr_assert_str_eq(err.code, "INVALID_ARGUMENT", "%s: %s", bad[i], err.message);
    }
    const char *split[] = {"X-A: 1\r\nX-Injected: 2"};
    const char *nocolon[] = {"NoColon"};
    gs_cluster_http_response r;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_cluster_http_get("http://127.0.0.1:1", "/", split, 1, 1000, &r, &err),
                 GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_ARGUMENT");
    cr_assert_eq(gs_cluster_http_get("http://127.0.0.1:1", "/", nocolon, 1, 1000, &r, &err),
                 GS_ERROR);
    cr_assert_eq(gs_cluster_http_get("http://127.0.0.1:1", "no-slash", NULL, 0, 1000, &r, &err),
                 GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_ARGUMENT");
}

Test(cluster_http, ipv6_host_and_default_port_in_host_header)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0)
        cr_skip_test("no IPv6 on this machine");
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = in6addr_loopback};
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        cr_skip_test("cannot bind ::1");
    }
    cr_assert_eq(listen(fd, 1), 0);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    script s;
    memset(&s, 0, sizeof s);
    s.listen_fd = fd;
    s.port = ntohs(a.sin6_port);
    s.answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    s.answer_len = strlen(s.answer);
    cr_assert_eq(pthread_create(&s.thread, NULL, serve_one, &s), 0);
    char url[64];
    snprintf(url, sizeof url, "http://[::1]:%d", s.port);
    gs_cluster_http_response r;
    gs_error err;
    gs_error_init(&err);
    gs_status st = gs_cluster_http_get(url, "/x", NULL, 0, 5000, &r, &err);
    script_end(&s);
    cr_assert_eq(st, GS_OK, "%s", err.message);
    char host[64];
    snprintf(host, sizeof host, "\r\nHost: [::1]:%d\r\n", s.port);
    cr_assert(strstr(s.request, host), "%s", s.request);
    gs_cluster_http_response_free(&r);
}

Test(cluster_http, path_segment_encoding)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_cluster_http_path_segment(&b, "a b/c?d%e~f_g.h-Z9");
    cr_assert_str_eq(b.data, "a%20b%2Fc%3Fd%25e~f_g.h-Z9");
    gs_buf_reset(&b);
    gs_cluster_http_path_segment(&b, "\xc3\xa9");
    cr_assert_str_eq(b.data, "%C3%A9");
    gs_buf_free(&b);
}

Test(cluster_http, allocation_failures_fail_cleanly)
{
    /* every allocation of a successful exchange, failed in turn: an error, never a crash or
     * a leak (ASan and valgrind watch the leaks) */
    long n;
    for (n = 0; n < 64; n++) {
        script s;
        script_start(&s, ANSWER("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                "3\r\nabc\r\n0\r\n\r\n"));
        gs_cluster_http_response r;
        gs_error err;
        char url[64];
        snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
        gs_error_init(&err);
        gs_alloc_fail_after(n, 0);
        gs_status st = gs_cluster_http_get(url, "/", NULL, 0, 5000, &r, &err);
        gs_alloc_fail_after(-1, 0);
        script_end(&s);
        if (st == GS_OK) { /* n is past the exchange's last allocation */
            cr_assert_str_eq(r.body, "abc");
            gs_cluster_http_response_free(&r);
            cr_assert_gt(n, 0, "the first allocation cannot be spared");
            break;
        } else {
            cr_assert(strcmp(err.code, "INTERNAL_ERROR") == 0 ||
                          strcmp(err.code, "CONNECTION_ERROR") == 0,
                      "allocation %ld: %s: %s", n, err.code, err.message);
        }
    }
    cr_assert_lt(n, 64, "the exchange never succeeded");
}
