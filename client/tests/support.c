/* Test support: real gatestream processes and a fake HTTP responder. See support.h. */
#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef GS_BINARY
#error "GS_BINARY must name the gatestream binary"
#endif

long long gst_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int gst_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

const char *gst_server_url(const gst_server *s, char *buf, size_t size)
{
    snprintf(buf, size, "http://127.0.0.1:%d", s->port);
    return buf;
}

static int connect_port(int port, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int gst_http(int port, const char *method, const char *path, const char *body, int *status,
             char *out, size_t size)
{
    int fd = connect_port(port, 10000);
    if (fd < 0)
        return -1;
    char req[8192];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     method, path, body ? strlen(body) : 0, body ? body : "");
    if (n <= 0 || (size_t)n >= sizeof req || write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    char buf[65536];
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got == sizeof buf - 1)
            break;
    }
    close(fd);
    buf[got] = '\0';
    if (sscanf(buf, "HTTP/1.%*d %d", status) != 1)
        return -1;
    const char *b = strstr(buf, "\r\n\r\n");
    if (out && size)
        snprintf(out, size, "%s", b ? b + 4 : "");
    return 0;
}

int gst_log_contains(const gst_server *s, const char *needle)
{
    FILE *f = fopen(s->log, "r");
    if (!f)
        return 0;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static void print_log(const gst_server *s)
{
    FILE *f = fopen(s->log, "r");
    if (!f)
        return;
    char line[1024];
    fprintf(stderr, "---- %s ----\n", s->log);
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fclose(f);
}

static int spawn(gst_server *s)
{
    /* Truncate nothing: a restarted server appends, so "ready" is counted per start. */
    int before = 0;
    FILE *f = fopen(s->log, "r");
    if (f) {
        char line[1024];
        while (fgets(line, sizeof line, f))
            before += strstr(line, "' ready (gatestream") != NULL;
        fclose(f);
    }
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0)
            dup2(null, 0);
        /* GS_TEST_GATESTREAM overrides the built binary (e.g. to test against a release). */
        const char *bin = getenv("GS_TEST_GATESTREAM");
        if (!bin || !*bin)
            bin = GS_BINARY;
        execl(bin, bin, "--config", s->config, (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    long long deadline = gst_now_ms() + 60000;
    while (gst_now_ms() < deadline) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = 0;
            fprintf(stderr, "gatestream exited during start (status %d)\n", st);
            print_log(s);
            return -1;
        }
        int ready = 0;
        f = fopen(s->log, "r");
        if (f) {
            char line[1024];
            while (fgets(line, sizeof line, f))
                ready += strstr(line, "' ready (gatestream") != NULL;
            fclose(f);
        }
        int status = 0;
        char body[256];
        if (ready > before && s->tls) {
            int fd = connect_port(s->port, 1000);
            if (fd >= 0) {
                close(fd);
                return 0;
            }
        } else if (ready > before &&
                   gst_http(s->port, "GET", "/health", NULL, &status, body, sizeof body) == 0 &&
                   status == 200) {
            return 0;
        }
        sleep_ms(20);
    }
    fprintf(stderr, "gatestream did not become ready within 60 s\n");
    print_log(s);
    return -1;
}

int gst_server_prepare(gst_server *s)
{
    memset(s, 0, sizeof *s);
    const char *base = getenv("GS_TEST_TMP");
    char tmpl[256];
    mkdir(base && *base ? base : "/tmp", 0755);
    snprintf(tmpl, sizeof tmpl, "%s/gs-client-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpl))
        return -1;
    snprintf(s->dir, sizeof s->dir, "%s", tmpl);
    snprintf(s->config, sizeof s->config, "%s/gatestream.yaml", s->dir);
    snprintf(s->log, sizeof s->log, "%s/server.log", s->dir);
    s->port = gst_free_port();
    return s->port > 0 ? 0 : -1;
}

int gst_server_start(gst_server *s, const char *extra_plugins, const char *extra_server,
                     const char *extra_databases, int accept_sql)
{
    if (gst_server_prepare(s) != 0)
        return -1;
    FILE *f = fopen(s->config, "w");
    if (!f)
        return -1;
    fprintf(f,
            "node: { id: client-test, data_dir: %s/data }\n"
            "log: { level: info }\n"
            "plugins:\n"
            "  - name: http\n    kind: client_transport\n"
            "  - name: ws\n    kind: client_transport\n"
            "%s"
            "server:\n  host: 127.0.0.1\n  port: %d\n  accept_sql: %s\n"
            "%s"
            "databases:\n  - id: main\n    path: main.db\n"
            "%s",
            s->dir, extra_plugins ? extra_plugins : "", s->port, accept_sql ? "true" : "false",
            extra_server ? extra_server : "", extra_databases ? extra_databases : "");
    fclose(f);
    if (spawn(s) != 0) {
        gst_server_cleanup(s);
        return -1;
    }
    return 0;
}

int gst_server_restart(gst_server *s)
{
    return spawn(s);
}

static void reap(gst_server *s, int sig, int wait_ms)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, sig);
    long long deadline = gst_now_ms() + wait_ms;
    while (gst_now_ms() < deadline) {
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
            s->pid = 0;
            return;
        }
        sleep_ms(10);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

void gst_server_stop(gst_server *s)
{
    reap(s, SIGTERM, 15000);
}

void gst_server_kill9(gst_server *s)
{
    reap(s, SIGKILL, 15000);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void gst_server_cleanup(gst_server *s)
{
    gst_server_stop(s);
    const char *keep = getenv("GS_TEST_KEEP"); /* debugging: keep the dir and its log */
    if (s->dir[0] && !(keep && *keep))
        nftw(s->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    s->dir[0] = '\0';
}

/* ---------------------------------------------------------------------------------------
 * Fake responder
 * ------------------------------------------------------------------------------------- */

#define GST_MAX_PATHS 64

struct gst_fake {
    int lfd;
    int port;
    int wake[2];
    pthread_t th;
    gst_fake_fn fn;
    void *user;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int live_conns; /**< connection threads still running (mu) */
    char paths[GST_MAX_PATHS][128];
    int hits[GST_MAX_PATHS];
};

static void count_hit(gst_fake *f, const char *path)
{
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < GST_MAX_PATHS; i++) {
        if (!f->paths[i][0]) {
            snprintf(f->paths[i], sizeof f->paths[i], "%s", path);
            f->hits[i] = 1;
            break;
        }
        if (strcmp(f->paths[i], path) == 0) {
            f->hits[i]++;
            break;
        }
    }
    pthread_mutex_unlock(&f->mu);
}

int gst_fake_hits(gst_fake *f, const char *prefix)
{
    int n = 0;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < GST_MAX_PATHS && f->paths[i][0]; i++)
        if (strncmp(f->paths[i], prefix, strlen(prefix)) == 0)
            n += f->hits[i];
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* Serve one connection until it closes (keep-alive). */
static void serve_conn(gst_fake *f, int fd)
{
    char buf[65536];
    size_t got = 0;
    for (;;) {
        char *end = got ? memmem(buf, got, "\r\n\r\n", 4) : NULL;
        while (!end) {
            struct pollfd p[2] = {{.fd = fd, .events = POLLIN},
                                  {.fd = f->wake[0], .events = POLLIN}};
            if (poll(p, 2, 10000) <= 0 || (p[1].revents & POLLIN))
                return;
            ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
            if (r <= 0)
                return;
            got += (size_t)r;
            buf[got] = '\0';
            end = memmem(buf, got, "\r\n\r\n", 4);
            if (!end && got >= sizeof buf - 1)
                return;
        }
        size_t head = (size_t)(end - buf) + 4;
        size_t clen = 0;
        const char *cl = strcasestr(buf, "\r\ncontent-length:");
        if (cl && cl < end)
            clen = strtoul(cl + 17, NULL, 10);
        while (got < head + clen && got < sizeof buf - 1) {
            ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
            if (r <= 0)
                return;
            got += (size_t)r;
        }
        char method[16] = "", path[512] = "";
        sscanf(buf, "%15s %511s", method, path);
        char body[16384];
        size_t bl = clen < sizeof body - 1 ? clen : sizeof body - 1;
        memcpy(body, buf + head, bl);
        body[bl] = '\0';
        gst_reply reply;
        memset(&reply, 0, sizeof reply);
        reply.status = 404;
        snprintf(reply.body, sizeof reply.body,
                 "{\"error\":{\"code\":\"NOT_FOUND\",\"message\":\"no route\"}}");
        f->fn(f->user, method, path, body, &reply);
        count_hit(f, path);
        if (reply.delay_ms)
            sleep_ms(reply.delay_ms);
        if (reply.close)
            return;
        char resp[8192];
        int n = snprintf(resp, sizeof resp,
                         "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\n\r\n%s",
                         reply.status, strlen(reply.body), reply.body);
        if (write(fd, resp, (size_t)n) != n)
            return;
        memmove(buf, buf + head + clen, got - head - clen);
        got -= head + clen;
    }
}

typedef struct conn_arg {
    gst_fake *f;
    int fd;
} conn_arg;

static void *conn_main(void *arg)
{
    conn_arg *a = arg;
    gst_fake *f = a->f;
    serve_conn(f, a->fd);
    close(a->fd);
    free(a);
    pthread_mutex_lock(&f->mu);
    f->live_conns--;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

static void *fake_main(void *arg)
{
    gst_fake *f = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = f->lfd, .events = POLLIN},
                              {.fd = f->wake[0], .events = POLLIN}};
        if (poll(p, 2, 1000) < 0 && errno != EINTR)
            break;
        if (p[1].revents & POLLIN)
            break;
        if (!(p[0].revents & POLLIN))
            continue;
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        conn_arg *a = malloc(sizeof *a);
        pthread_t th;
        if (!a) {
            close(fd);
            continue;
        }
        a->f = f;
        a->fd = fd;
        pthread_mutex_lock(&f->mu);
        f->live_conns++;
        pthread_mutex_unlock(&f->mu);
        if (pthread_create(&th, NULL, conn_main, a) != 0) {
            pthread_mutex_lock(&f->mu);
            f->live_conns--;
            pthread_mutex_unlock(&f->mu);
            close(fd);
            free(a);
            continue;
        }
        pthread_detach(th);
    }
    return NULL;
}

gst_fake *gst_fake_start(gst_fake_fn fn, void *user)
{
    gst_fake *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->fn = fn;
    f->user = user;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(f->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(f->lfd, 64) != 0 || getsockname(f->lfd, (struct sockaddr *)&a, &l) != 0 ||
        pipe(f->wake) != 0) {
        if (f->lfd >= 0)
            close(f->lfd);
        free(f);
        return NULL;
    }
    f->port = ntohs(a.sin_port);
    pthread_create(&f->th, NULL, fake_main, f);
    return f;
}

int gst_fake_port(const gst_fake *f)
{
    return f->port;
}

void gst_fake_stop(gst_fake *f)
{
    if (!f)
        return;
    if (write(f->wake[1], "x", 1) != 1)
        perror("fake responder wake");
    pthread_join(f->th, NULL);
    close(f->lfd);
    /* Connection threads see the wake pipe and return; wait for the last (bounded). */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 15;
    pthread_mutex_lock(&f->mu);
    int rc = 0;
    while (f->live_conns > 0 && rc == 0)
        rc = pthread_cond_timedwait(&f->cv, &f->mu, &dl);
    int left = f->live_conns;
    pthread_mutex_unlock(&f->mu);
    if (left) {
        fprintf(stderr, "fake responder: %d connection thread(s) still running\n", left);
        return; /* leaked on purpose rather than freed under a running thread */
    }
    close(f->wake[0]);
    close(f->wake[1]);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    free(f);
}
