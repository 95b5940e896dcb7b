/*
 * backup_bench: the backup figure of the README (issue 4, item 7): a full backup of a large
 * database taken by a real gatestream process while it serves a steady load of single-row
 * writes over HTTP. bench/backup/run.sh drives it; each mode is one step of that script.
 *
 *   backup_bench create --db PATH --mb N [--row-bytes B] [--cold]
 *       Writes a database of about N MiB before any server opens it: table items
 *       (id INTEGER PRIMARY KEY, v BLOB, sent_ms INTEGER) filled with rows of B random bytes
 *       (default 1000), 50,000 rows a transaction, with no journal and no syncs; then switched
 *       to WAL, checkpointed and fsynced.
 *       --cold drops the file from the page cache (posix_fadvise DONTNEED) so the copy reads
 *       it from disk. Prints SEED_ROWS=<n>.
 *
 *   backup_bench run --port P [--host H] [--db ID] [--rate R] [--conns C] [--baseline S]
 *                    [--tail S] [--write-bytes B] [--max-backup S] [--wait-idle S]
 *                    [--server-pid PID] --samples FILE --result FILE [--timeline FILE]
 *       Waits for the database's backup cycle to be idle (its first turn, a full copy, runs
 *       when the server opens the database), then runs an OPEN-LOOP load: write i is due at
 *       start + i/R, whether or not earlier writes have been answered, and goes out on the
 *       first of C keep-alive connections that is free. Its latency is measured from the
 *       time it was due, not from the time a connection was free to send it, so a stall
 *       shows in every write that queued behind it (no coordinated omission). After S s of
 *       baseline it triggers a backup turn (POST /db/{id}/backup), polls GET /db/{id}/backup
 *       every 50 ms until that run is recorded (or an error is), keeps writing --tail s more,
 *       and reports latency p50/p99/p99.9/max and writes over 100 ms for the baseline, the
 *       backup (with its copy and transfer phases, timed by the server) and the tail.
 *       Every write is "INSERT INTO items (id, v, sent_ms) VALUES (2^40 + i, <B bytes>,
 *       <send time, epoch ms>)". --samples gets one line per write (for check); --result
 *       gets the figures as shell assignments.
 *       --server-pid adds where the CPU went in each window, from /proc: how many cores the
 *       machine, the server's serving threads, its backup threads (named gs-backup*), this
 *       tool and everything else kept busy, and how long, per second, the serving threads,
 *       the backup threads and this tool waited on a run queue for a CPU (schedstat). On a
 *       shared machine this separates a stall the backup causes from one other work causes.
 *
 *   backup_bench check --restored PATH --samples FILE --seed-rows N --copy-start MS
 *                      --copy-end MS
 *       Checks a restore of the full copy: quick_check; the N seed rows all there; every
 *       write acknowledged before the copy started (MS, epoch) is there; no write sent after
 *       the copy ended is; no row that the tool never sent.
 *
 *   backup_bench compare --a PATH --b PATH
 *       a and b hold the same tables with the same rows (row count and a SHA-256 over every
 *       row's typed values, read in the order of all columns).
 *
 * Links gs_core for its SHA-256 only. Not installed; built with the tree when GS_BENCH is ON.
 * Exit status 0 when the step succeeded (for run: the backup finished and no write failed),
 * 1 otherwise, 2 on usage.
 */
#include "base/sha256.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOAD_BASE ((int64_t)1 << 40) /* ids of the load's rows: LOAD_BASE + write index */
#define STALL_MS 100.0               /* the goal: no write slower than this */

/* ---- small helpers ---- */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "backup_bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p)
        fail("out of memory (%zu x %zu bytes)", n, size);
    return p;
}

/* ---- options ---- */

typedef struct opts {
    const char *host, *db_id, *db_path, *samples, *result, *timeline, *restored, *a, *b;
    int port, rate, conns, row_bytes, write_bytes, cold, server_pid;
    double baseline_s, tail_s, max_backup_s, wait_idle_s, mb;
    int64_t seed_rows, copy_start, copy_end;
} opts;

static void usage(void)
{
    fprintf(stderr, "usage: backup_bench create --db PATH --mb N [--row-bytes B] [--cold]\n"
                    "       backup_bench run --port P [--host H] [--db ID] [--rate R] [--conns C]\n"
                    "                        [--baseline S] [--tail S] [--write-bytes B]\n"
                    "                        [--max-backup S] [--wait-idle S] [--server-pid PID]\n"
                    "                        --samples FILE --result FILE [--timeline FILE]\n"
                    "       backup_bench check --restored PATH --samples FILE --seed-rows N\n"
                    "                          --copy-start MS --copy-end MS\n"
                    "       backup_bench compare --a PATH --b PATH\n"
                    "(see the comment at the top of bench/backup/backup_bench.c)\n");
    exit(2);
}

static double num_arg(const char *name, const char *v)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || d < 0)
        fprintf(stderr, "backup_bench: %s takes a number >= 0, not '%s'\n", name, v), usage();
    return d;
}

static void parse(opts *o, int argc, char **argv)
{
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->db_id = "main";
    o->rate = 1000;
    o->conns = 8;
    o->row_bytes = 1000;
    o->write_bytes = 100;
    o->baseline_s = 20;
    o->tail_s = 5;
    o->max_backup_s = 1800;
    o->wait_idle_s = 1800;
    o->seed_rows = o->copy_start = o->copy_end = -1;
    for (int i = 2; i < argc; i++) {
        const char *k = argv[i];
        if (strcmp(k, "--cold") == 0) {
            o->cold = 1;
            continue;
        }
        if (i + 1 >= argc)
            fprintf(stderr, "backup_bench: %s needs a value\n", k), usage();
        const char *v = argv[++i];
        if (strcmp(k, "--host") == 0)
            o->host = v;
        else if (strcmp(k, "--db") == 0)
            o->db_id = o->db_path = v; /* an id for run, a path for create */
        else if (strcmp(k, "--samples") == 0)
            o->samples = v;
        else if (strcmp(k, "--result") == 0)
            o->result = v;
        else if (strcmp(k, "--timeline") == 0)
            o->timeline = v;
        else if (strcmp(k, "--restored") == 0)
            o->restored = v;
        else if (strcmp(k, "--a") == 0)
            o->a = v;
        else if (strcmp(k, "--b") == 0)
            o->b = v;
        else if (strcmp(k, "--port") == 0)
            o->port = (int)num_arg(k, v);
        else if (strcmp(k, "--server-pid") == 0)
            o->server_pid = (int)num_arg(k, v);
        else if (strcmp(k, "--rate") == 0)
            o->rate = (int)num_arg(k, v);
        else if (strcmp(k, "--conns") == 0)
            o->conns = (int)num_arg(k, v);
        else if (strcmp(k, "--row-bytes") == 0)
            o->row_bytes = (int)num_arg(k, v);
        else if (strcmp(k, "--write-bytes") == 0)
            o->write_bytes = (int)num_arg(k, v);
        else if (strcmp(k, "--baseline") == 0)
            o->baseline_s = num_arg(k, v);
        else if (strcmp(k, "--tail") == 0)
            o->tail_s = num_arg(k, v);
        else if (strcmp(k, "--max-backup") == 0)
            o->max_backup_s = num_arg(k, v);
        else if (strcmp(k, "--wait-idle") == 0)
            o->wait_idle_s = num_arg(k, v);
        else if (strcmp(k, "--mb") == 0)
            o->mb = num_arg(k, v);
        else if (strcmp(k, "--seed-rows") == 0)
            o->seed_rows = (int64_t)num_arg(k, v);
        else if (strcmp(k, "--copy-start") == 0)
            o->copy_start = (int64_t)num_arg(k, v);
        else if (strcmp(k, "--copy-end") == 0)
            o->copy_end = (int64_t)num_arg(k, v);
        else
            fprintf(stderr, "backup_bench: unknown option '%s'\n", k), usage();
    }
}

/* ---- create ---- */

static void exec_sql(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail("%s: %s", sql, msg ? msg : sqlite3_errmsg(db));
}

static int mode_create(const opts *o)
{
    if (!o->db_path || o->mb <= 0 || o->row_bytes < 1)
        usage();
    struct stat sb;
    if (stat(o->db_path, &sb) == 0)
        fail("'%s' already exists; give a new path", o->db_path);
    sqlite3 *db = NULL;
    if (sqlite3_open(o->db_path, &db) != SQLITE_OK)
        fail("cannot create '%s': %s", o->db_path, sqlite3_errmsg(db));
    /* no journal and no syncs while filling: a failed fill leaves a file nobody uses */
    exec_sql(db, "PRAGMA page_size=4096; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; "
                 "PRAGMA cache_size=-65536");
    exec_sql(db, "CREATE TABLE items (id INTEGER PRIMARY KEY, v BLOB NOT NULL, sent_ms INTEGER)");
    /* a row of B bytes takes B + ~12 bytes of a 4 KiB page; fill in slices until the file
     * reaches the size asked for */
    int64_t target = (int64_t)(o->mb * 1024 * 1024);
    int64_t rows = 0, slice = 50000;
    int64_t t0 = mono_ns();
    for (;;) {
        sqlite3_stmt *pc = NULL;
        sqlite3_prepare_v2(db, "PRAGMA page_count", -1, &pc, NULL);
        int64_t pages = sqlite3_step(pc) == SQLITE_ROW ? sqlite3_column_int64(pc, 0) : 0;
        sqlite3_finalize(pc);
        if (pages * 4096 >= target)
            break;
        int64_t left_rows = (target - pages * 4096) / (o->row_bytes + 24) + 1;
        int64_t n = left_rows < slice ? left_rows : slice;
        char sql[512];
        snprintf(sql, sizeof sql,
                 "WITH RECURSIVE n(i) AS (SELECT %lld UNION ALL SELECT i+1 FROM n WHERE i<%lld) "
                 "INSERT INTO items (id, v) SELECT i, randomblob(%d) FROM n",
                 (long long)rows + 1, (long long)(rows + n), o->row_bytes);
        exec_sql(db, "BEGIN");
        exec_sql(db, sql);
        exec_sql(db, "COMMIT");
        rows += n;
    }
    exec_sql(db, "PRAGMA journal_mode=WAL");
    exec_sql(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    if (sqlite3_close(db) != SQLITE_OK)
        fail("closing '%s' failed", o->db_path);
    int fd = open(o->db_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        fail("cannot sync '%s': %s", o->db_path, strerror(errno));
    if (o->cold)
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    stat(o->db_path, &sb);
    fprintf(stderr, "created %s: %lld rows of %d bytes, %.1f MiB, in %.1f s%s\n", o->db_path,
            (long long)rows, o->row_bytes, (double)sb.st_size / 1048576.0,
            (double)(mono_ns() - t0) / 1e9, o->cold ? " (dropped from the page cache)" : "");
    printf("SEED_ROWS=%lld\n", (long long)rows);
    return 0;
}

/* ---- a blocking HTTP client for the control calls ---- */

static int tcp_connect(const char *host, int port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    if (getaddrinfo(host, p, &hints, &ai) != 0)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

/* The length of a complete response in buf (0 = incomplete, -1 = unreadable); *status and
 * *body_at are filled once the head is complete. */
static ssize_t response_length(const char *buf, size_t len, int *status, size_t *body_at)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t head = (size_t)(end - buf) + 4;
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0)
        return -1;
    *status = atoi(buf + 9);
    *body_at = head;
    long long clen = -1;
    for (const char *l = buf; l && l < end;) {
        const char *nl = memmem(l, (size_t)(end - l), "\r\n", 2);
        if (!nl)
            break;
        l = nl + 2;
        if ((size_t)(end - l) > 15 && strncasecmp(l, "Content-Length:", 15) == 0)
            clen = atoll(l + 15);
    }
    if (clen < 0)
        return -1; /* gatestream answers with Content-Length; anything else is a surprise */
    return len >= head + (size_t)clen ? (ssize_t)(head + (size_t)clen) : 0;
}

/* One request on a fresh connection; returns the status (or -1) and the body (malloc'd). */
static int http_call(const opts *o, const char *method, const char *path, const char *body,
                     char **out)
{
    *out = NULL;
    int fd = tcp_connect(o->host, o->port);
    if (fd < 0)
        return -1;
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    size_t blen = body ? strlen(body) : 0;
    char head[512];
    int hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      method, path, o->host, blen);
    if (send(fd, head, (size_t)hn, MSG_NOSIGNAL) != hn ||
        (blen && send(fd, body, blen, MSG_NOSIGNAL) != (ssize_t)blen)) {
        close(fd);
        return -1;
    }
    size_t cap = 65536, len = 0;
    char *buf = xcalloc(1, cap);
    int status = -1;
    size_t body_at = 0;
    for (;;) {
        if (len + 1 >= cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb)
                fail("out of memory");
            buf = nb;
        }
        ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        ssize_t whole = response_length(buf, len, &status, &body_at);
        if (whole < 0) {
            status = -1;
            break;
        }
        if (whole > 0) {
            buf[whole] = 0;
            memmove(buf, buf + body_at, (size_t)whole - body_at + 1);
            *out = buf;
            close(fd);
            return status;
        }
    }
    free(buf);
    close(fd);
    return -1;
}

/* ---- the open-loop load ---- */

typedef struct sample {
    int64_t due_ns;  /* when the write was due (monotonic) */
    int64_t sent_ns; /* when its first byte went out (0 = never sent) */
    int64_t done_ns; /* when its answer was complete */
    int status;      /* HTTP status, -1 = the connection failed under it */
} sample;

typedef struct conn {
    int fd;
    int64_t req; /* index of the write in flight, -1 = idle */
    char out[4096];
    size_t out_len, out_off;
    char in[8192];
    size_t in_len;
} conn;

typedef struct load {
    const opts *o;
    sample *s;
    int64_t cap;        /* samples allocated */
    int64_t next;       /* next write to send */
    int64_t start_ns;   /* write i is due at start_ns + i * period */
    int64_t period_ns;  /* 1e9 / rate */
    int64_t stop_ns;    /* (atomic) writes due at or after this are not sent; 0 = run on */
    int64_t epoch_off;  /* epoch ms = (mono ns + epoch_off) / 1e6 */
    int64_t reconnects; /* connections the server closed under the load */
    char payload[8192];
    conn *c;
    int ep;
} load;

static void conn_open(load *l, conn *c)
{
    c->fd = tcp_connect(l->o->host, l->o->port);
    if (c->fd < 0)
        fail("cannot connect to %s:%d: %s", l->o->host, l->o->port, strerror(errno));
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    c->req = -1;
    c->in_len = c->out_len = c->out_off = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(l->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        fail("epoll_ctl: %s", strerror(errno));
}

/* The connection broke: the write in flight (if any) failed; open a fresh one. */
static void conn_reset(load *l, conn *c, int64_t now)
{
    if (c->req >= 0) {
        l->s[c->req].done_ns = now;
        l->s[c->req].status = -1;
    }
    epoll_ctl(l->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    l->reconnects++;
    conn_open(l, c);
}

static void conn_flush(load *l, conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (w <= 0) {
            conn_reset(l, c, mono_ns());
            return;
        }
        c->out_off += (size_t)w;
    }
    struct epoll_event ev = {.events = EPOLLIN | (c->out_off < c->out_len ? EPOLLOUT : 0),
                             .data.ptr = c};
    epoll_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_send(load *l, conn *c, int64_t i)
{
    int64_t now = mono_ns();
    char body[8192 + 256];
    int bn = snprintf(body, sizeof body,
                      "{\"sql\":\"INSERT INTO items (id, v, sent_ms) VALUES (?, ?, ?)\","
                      "\"params\":[%lld,\"%s\",%lld]}",
                      (long long)(LOAD_BASE + i), l->payload,
                      (long long)((now + l->epoch_off) / 1000000));
    int hn = snprintf(c->out, sizeof c->out,
                      "POST /db/%s/execute HTTP/1.1\r\nHost: %s\r\nContent-Type: "
                      "application/json\r\nContent-Length: %d\r\n\r\n",
                      l->o->db_id, l->o->host, bn);
    if (hn + bn >= (int)sizeof c->out)
        fail("a write does not fit the request buffer; lower --write-bytes");
    memcpy(c->out + hn, body, (size_t)bn);
    c->out_len = (size_t)(hn + bn);
    c->out_off = 0;
    c->req = i;
    l->s[i].sent_ns = now;
    conn_flush(l, c);
}

static void conn_read(load *l, conn *c)
{
    for (;;) {
        if (c->in_len >= sizeof c->in - 1) {
            conn_reset(l, c, mono_ns()); /* an answer far larger than an execute result */
            return;
        }
        ssize_t r = recv(c->fd, c->in + c->in_len, sizeof c->in - 1 - c->in_len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r <= 0) {
            conn_reset(l, c, mono_ns());
            return;
        }
        c->in_len += (size_t)r;
        int status = 0;
        size_t body_at = 0;
        ssize_t whole = response_length(c->in, c->in_len, &status, &body_at);
        if (whole < 0 || (whole > 0 && c->req < 0)) {
            conn_reset(l, c, mono_ns());
            return;
        }
        if (whole > 0) {
            sample *s = &l->s[c->req];
            s->done_ns = mono_ns();
            s->status = status;
            memmove(c->in, c->in + whole, c->in_len - (size_t)whole);
            c->in_len -= (size_t)whole;
            c->req = -1;
            return;
        }
    }
}

static void *load_main(void *arg)
{
    load *l = arg;
    int n = l->o->conns;
    for (;;) {
        int64_t now = mono_ns();
        int64_t stop = __atomic_load_n(&l->stop_ns, __ATOMIC_ACQUIRE);
        /* hand every write that is due to a free connection, oldest first */
        for (int k = 0; k < n && l->next < l->cap; k++) {
            int64_t due = l->start_ns + l->next * l->period_ns;
            if (due > now || (stop && due >= stop))
                break;
            if (l->c[k].req < 0) {
                l->s[l->next].due_ns = due;
                conn_send(l, &l->c[k], l->next);
                l->next++;
            }
        }
        int busy = 0;
        for (int k = 0; k < n; k++)
            busy += l->c[k].req >= 0;
        int64_t due = l->start_ns + l->next * l->period_ns;
        int done_sending = l->next >= l->cap || (stop && due >= stop);
        if (done_sending && !busy)
            break;
        /* sleep until the next write is due (when a connection is free to take it) or I/O */
        int64_t wait_ns = 100000000;
        if (!done_sending && busy < n)
            wait_ns = due > now ? due - now : 0;
        struct timespec ts = {wait_ns / 1000000000, wait_ns % 1000000000};
        struct epoll_event evs[64];
        int m = epoll_pwait2(l->ep, evs, 64, &ts, NULL);
        for (int e = 0; e < m; e++) {
            conn *c = evs[e].data.ptr;
            if (evs[e].events & EPOLLOUT)
                conn_flush(l, c);
            if (evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                conn_read(l, c);
        }
    }
    return NULL;
}

/* ---- statistics ---- */

typedef struct stats {
    int64_t n, errors, over, sent;
    double p50, p99, p999, max;
} stats;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, int64_t n, double p)
{
    if (n == 0)
        return 0;
    int64_t k = (int64_t)(p * (double)n + 0.999999) - 1; /* nearest rank */
    if (k < 0)
        k = 0;
    if (k >= n)
        k = n - 1;
    return v[k];
}

/* Writes due in [from, to) (monotonic ns); latency from due to answer, in ms. */
static stats window(const load *l, int64_t from, int64_t to)
{
    stats st;
    memset(&st, 0, sizeof st);
    double *v = xcalloc((size_t)(l->next + 1), sizeof *v);
    for (int64_t i = 0; i < l->next; i++) {
        const sample *s = &l->s[i];
        if (s->due_ns < from || s->due_ns >= to)
            continue;
        st.sent++;
        if (s->status != 200) {
            st.errors++;
            continue;
        }
        double ms = (double)(s->done_ns - s->due_ns) / 1e6;
        v[st.n++] = ms;
        st.over += ms > STALL_MS;
    }
    qsort(v, (size_t)st.n, sizeof *v, cmp_double);
    st.p50 = pct(v, st.n, 0.50);
    st.p99 = pct(v, st.n, 0.99);
    st.p999 = pct(v, st.n, 0.999);
    st.max = st.n ? v[st.n - 1] : 0;
    free(v);
    return st;
}

static void print_stats(const char *name, double secs, stats st)
{
    printf("  %-22s %6.1f s %7lld %6lld %8.2f %8.2f %8.2f %8.2f %7lld\n", name, secs,
           (long long)st.sent, (long long)st.errors, st.p50, st.p99, st.p999, st.max,
           (long long)st.over);
}

/* ---- run ---- */

typedef struct cycle_view {
    int ok;         /* the status answered */
    int running;    /* a turn is under way */
    char phase[16]; /* of the turn under way: "copy" or "transfer" ("" when none) */
    char run_id[64];
    char kind[16];
    int64_t started_at, finished_at, copy_ms, transfer_ms, pages, page_size, bytes, restarts;
    char error_code[64];
    char error_msg[512];
    int64_t error_at;
} cycle_view;

static int64_t jint(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

static void jstr(json_t *o, const char *k, char *out, size_t cap)
{
    json_t *v = json_object_get(o, k);
    snprintf(out, cap, "%s", json_is_string(v) ? json_string_value(v) : "");
}

static cycle_view cycle_status(const opts *o)
{
    cycle_view v;
    memset(&v, 0, sizeof v);
    char path[256], *body = NULL;
    snprintf(path, sizeof path, "/db/%s/backup", o->db_id);
    int st = http_call(o, "GET", path, NULL, &body);
    json_t *j = st == 200 && body ? json_loads(body, 0, NULL) : NULL;
    if (st != 200 && st > 0)
        fail("GET %s answered %d: %s (does the database have a backups section?)", path, st,
             body ? body : "");
    free(body);
    if (!j)
        return v;
    v.ok = 1;
    v.running = json_is_true(json_object_get(j, "running"));
    json_t *pr = json_object_get(j, "progress");
    if (json_is_object(pr))
        jstr(pr, "phase", v.phase, sizeof v.phase);
    json_t *r = json_object_get(j, "lastRun");
    if (json_is_object(r)) {
        jstr(r, "runId", v.run_id, sizeof v.run_id);
        jstr(r, "kind", v.kind, sizeof v.kind);
        v.started_at = jint(r, "startedAt");
        v.finished_at = jint(r, "finishedAt");
        v.copy_ms = jint(r, "copyMs");
        v.transfer_ms = jint(r, "transferMs");
        v.pages = jint(r, "pageCount");
        v.page_size = jint(r, "pageSize");
        v.bytes = jint(r, "bytesWritten");
        v.restarts = jint(r, "restarts");
    }
    json_t *e = json_object_get(j, "lastError");
    if (json_is_object(e)) {
        jstr(e, "code", v.error_code, sizeof v.error_code);
        jstr(e, "message", v.error_msg, sizeof v.error_msg);
        v.error_at = jint(e, "at");
    }
    json_decref(j);
    return v;
}

/* ---- where the CPU went (run --server-pid) ---- */

/* Cumulative counters at one moment. Threads that end between two moments take their counts
 * with them (the server's serving and backup threads live as long as the database). */
typedef struct cpu_snap {
    int ok;
    double busy_s, all_s; /* /proc/stat, summed over every CPU */
    double run_s[3];      /* on a CPU: [0] serving threads, [1] backup threads, [2] this tool */
    double wait_s[3];     /* runnable but waiting for a CPU, same split */
} cpu_snap;

static int read_machine(double *busy, double *all)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return 0;
    unsigned long long v[8] = {0}; /* user nice system idle iowait irq softirq steal */
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    if (n < 7 || hz <= 0)
        return 0;
    double b = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
    *busy = b / (double)hz;
    *all = (b + (double)(v[3] + v[4])) / (double)hz;
    return 1;
}

/* Add every thread of pid (0: this process) to run/wait: index `self` for this process, else
 * 1 for the server's threads named gs-backup* and 0 for the rest. */
static int read_tasks(int pid, int self, double *run, double *wait)
{
    char dir[64];
    if (pid)
        snprintf(dir, sizeof dir, "/proc/%d/task", pid);
    else
        snprintf(dir, sizeof dir, "/proc/self/task");
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char p[384], comm[64] = "";
        snprintf(p, sizeof p, "%s/%s/comm", dir, e->d_name);
        FILE *f = fopen(p, "r");
        if (!f)
            continue; /* ended meanwhile */
        if (!fgets(comm, sizeof comm, f))
            comm[0] = 0;
        fclose(f);
        snprintf(p, sizeof p, "%s/%s/schedstat", dir, e->d_name);
        f = fopen(p, "r");
        if (!f)
            continue;
        unsigned long long run_ns = 0, wait_ns = 0;
        int n = fscanf(f, "%llu %llu", &run_ns, &wait_ns);
        fclose(f);
        if (n != 2)
            continue;
        int k = self >= 0 ? self : strncmp(comm, "gs-backup", 9) == 0;
        run[k] += (double)run_ns / 1e9;
        wait[k] += (double)wait_ns / 1e9;
    }
    closedir(d);
    return 1;
}

static cpu_snap cpu_now(const opts *o)
{
    cpu_snap c;
    memset(&c, 0, sizeof c);
    if (!o->server_pid)
        return c;
    c.ok = read_machine(&c.busy_s, &c.all_s) && read_tasks(o->server_pid, -1, c.run_s, c.wait_s) &&
           read_tasks(0, 2, c.run_s, c.wait_s);
    return c;
}

static void print_cpu_header(void)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    printf("where the CPU went (%ld CPUs; cores kept busy on average, then ms per second spent "
           "runnable but waiting for a CPU):\n",
           ncpu);
    printf("  %-22s %7s %7s %7s %7s %7s | %7s %7s %7s\n", "window", "machine", "serving", "backup",
           "tool", "rest", "serving", "backup", "tool");
}

static void print_cpu(const char *name, const cpu_snap *a, const cpu_snap *b, double *rest_out)
{
    if (!a->ok || !b->ok || b->all_s <= a->all_s) {
        printf("  %-22s (not measured)\n", name);
        return;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    double wall = (b->all_s - a->all_s) / (double)(ncpu > 0 ? ncpu : 1); /* seconds */
    double busy = (b->busy_s - a->busy_s) / wall;
    double r[3], w[3];
    for (int k = 0; k < 3; k++) {
        r[k] = (b->run_s[k] - a->run_s[k]) / wall;
        w[k] = (b->wait_s[k] - a->wait_s[k]) / wall * 1000.0;
    }
    double rest = busy - r[0] - r[1] - r[2];
    if (rest < 0)
        rest = 0; /* the two clocks tick differently; a few hundredths either way */
    if (rest_out)
        *rest_out = rest;
    printf("  %-22s %7.2f %7.2f %7.2f %7.2f %7.2f | %7.0f %7.0f %7.0f\n", name, busy, r[0], r[1],
           r[2], rest, w[0], w[1], w[2]);
}

/* Wait until no turn runs and one has been recorded since `since` (epoch ms); 1 done,
 * 0 an error was recorded instead (its code in *v), -1 timed out. When the turn is first seen
 * in its transfer phase, *at_transfer (when given) takes a CPU snapshot. */
static int wait_turn(const opts *o, int64_t since, double limit_s, cycle_view *v,
                     cpu_snap *at_transfer)
{
    int64_t until = mono_ns() + (int64_t)(limit_s * 1e9);
    while (mono_ns() < until) {
        *v = cycle_status(o);
        if (at_transfer && !at_transfer->ok && v->running && strcmp(v->phase, "transfer") == 0)
            *at_transfer = cpu_now(o);
        if (v->ok && v->error_code[0] && v->error_at >= since && !v->running)
            return 0;
        if (v->ok && !v->running && v->run_id[0] && v->finished_at >= since)
            return 1;
        sleep_ms(50);
    }
    return -1;
}

static void write_samples(const load *l, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        fail("cannot write '%s': %s", path, strerror(errno));
    /* index, HTTP status, sent (epoch ms, 0 = never), answered (epoch ms), latency (ms) */
    for (int64_t i = 0; i < l->next; i++) {
        const sample *s = &l->s[i];
        long long sent = s->sent_ns ? (long long)((s->sent_ns + l->epoch_off) / 1000000) : 0;
        long long done = s->done_ns ? (long long)((s->done_ns + l->epoch_off) / 1000000) : 0;
        fprintf(f, "%lld %d %lld %lld %.3f\n", (long long)i, s->status, sent, done,
                s->done_ns ? (double)(s->done_ns - s->due_ns) / 1e6 : -1.0);
    }
    if (fclose(f) != 0)
        fail("cannot write '%s'", path);
}

/* Per second of the run: writes due, errors, p99 and max latency (ms). */
static void write_timeline(const load *l, const char *path, int64_t trigger_ns)
{
    FILE *f = fopen(path, "w");
    if (!f)
        fail("cannot write '%s': %s", path, strerror(errno));
    fprintf(f, "# second (from the backup trigger)  writes  errors  p99_ms  max_ms\n");
    int64_t first = (l->start_ns - trigger_ns) / 1000000000 - 1;
    int64_t last = l->next ? (l->s[l->next - 1].due_ns - trigger_ns) / 1000000000 + 1 : 0;
    for (int64_t sec = first; sec <= last; sec++) {
        stats st = window(l, trigger_ns + sec * 1000000000, trigger_ns + (sec + 1) * 1000000000);
        if (st.sent)
            fprintf(f, "%lld %lld %lld %.2f %.2f\n", (long long)sec, (long long)st.sent,
                    (long long)st.errors, st.p99, st.max);
    }
    fclose(f);
}

static int mode_run(const opts *o)
{
    if (!o->port || !o->samples || !o->result || o->rate < 1 || o->conns < 1 ||
        o->write_bytes > 4000)
        usage();
    signal(SIGPIPE, SIG_IGN);

    /* 1. the first turn (a full copy, started when the server opened the database) */
    cycle_view v;
    int64_t t_idle = mono_ns();
    int w = wait_turn(o, 0, o->wait_idle_s, &v, NULL);
    if (w < 0)
        fail("the backup cycle did not go idle within %.0f s", o->wait_idle_s);
    if (w == 0 && !v.run_id[0])
        fail("the first backup turn failed: %s: %s", v.error_code, v.error_msg);
    printf("first turn (when the server opened the database, no load): %s run %s, %lld pages, "
           "copy %lld ms + transfer %lld ms = %lld ms (waited %.1f s)\n",
           v.kind, v.run_id, (long long)v.pages, (long long)v.copy_ms, (long long)v.transfer_ms,
           (long long)(v.finished_at - v.started_at), (double)(mono_ns() - t_idle) / 1e9);
    char first_run[64];
    snprintf(first_run, sizeof first_run, "%s", v.run_id);

    /* 2. the load */
    load l;
    memset(&l, 0, sizeof l);
    l.o = o;
    double total_s = o->baseline_s + o->max_backup_s + o->tail_s + 5;
    l.cap = (int64_t)(total_s * o->rate) + 1;
    l.s = xcalloc((size_t)l.cap, sizeof *l.s);
    l.period_ns = 1000000000 / o->rate;
    memset(l.payload, 'x', (size_t)o->write_bytes);
    l.payload[o->write_bytes] = 0;
    l.ep = epoll_create1(EPOLL_CLOEXEC);
    l.c = xcalloc((size_t)o->conns, sizeof *l.c);
    for (int k = 0; k < o->conns; k++)
        conn_open(&l, &l.c[k]);
    l.start_ns = mono_ns() + 20000000;
    {
        struct timespec rt, mt;
        clock_gettime(CLOCK_REALTIME, &rt);
        clock_gettime(CLOCK_MONOTONIC, &mt);
        l.epoch_off = ((int64_t)rt.tv_sec - mt.tv_sec) * 1000000000 + (rt.tv_nsec - mt.tv_nsec);
    }
    pthread_t th;
    if (pthread_create(&th, NULL, load_main, &l) != 0)
        fail("cannot start the load thread");

    /* 3. baseline, then the backup turn */
    int64_t warm = l.start_ns + 1000000000; /* the first second warms connections and caches */
    int64_t base_end = l.start_ns + (int64_t)(o->baseline_s * 1e9);
    int64_t to_warm_ms = (warm - mono_ns()) / 1000000;
    if (base_end > warm && to_warm_ms > 0)
        sleep_ms(to_warm_ms);
    cpu_snap cpu_warm = cpu_now(o);
    int64_t left_ms = (base_end - mono_ns()) / 1000000;
    if (left_ms > 0)
        sleep_ms(left_ms);
    cpu_snap cpu_trigger = cpu_now(o);
    int64_t trigger_ns = mono_ns();
    int64_t trigger_ms = epoch_ms();
    char path[256], *body = NULL;
    snprintf(path, sizeof path, "/db/%s/backup", o->db_id);
    int st = http_call(o, "POST", path, "{}", &body);
    if (st != 202)
        fail("POST %s answered %d: %s", path, st, body ? body : "(no answer)");
    free(body);
    cpu_snap cpu_transfer;
    memset(&cpu_transfer, 0, sizeof cpu_transfer);
    w = wait_turn(o, trigger_ms, o->max_backup_s, &v, &cpu_transfer);
    cpu_snap cpu_done = cpu_now(o);
    int64_t seen_ns = mono_ns();
    int backup_ok = w == 1 && strcmp(v.run_id, first_run) != 0;

    /* 4. the tail, then stop and drain (bounded by the connections' answers) */
    sleep_ms((int64_t)(o->tail_s * 1000));
    int64_t stop_ns = mono_ns();
    __atomic_store_n(&l.stop_ns, stop_ns, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    for (int k = 0; k < o->conns; k++)
        close(l.c[k].fd);
    close(l.ep);

    /* 5. figures */
    int64_t copy_from = trigger_ns, copy_to = seen_ns, fin = seen_ns;
    if (backup_ok) {
        /* the server's epoch times of the run, on this clock */
        copy_from = v.started_at * 1000000 - l.epoch_off;
        copy_to = (v.started_at + v.copy_ms) * 1000000 - l.epoch_off;
        fin = v.finished_at * 1000000 - l.epoch_off;
    }
    stats base = window(&l, warm, trigger_ns);
    stats during = window(&l, trigger_ns, fin > seen_ns ? fin : seen_ns);
    stats copy = window(&l, copy_from, copy_to);
    stats xfer = window(&l, copy_to, fin);
    stats tail = window(&l, fin > seen_ns ? fin : seen_ns, stop_ns);
    stats all = window(&l, 0, INT64_MAX);
    double achieved = (double)all.sent / ((double)(stop_ns - l.start_ns) / 1e9);
    printf("load: open loop, %d writes/s due over %d keep-alive connections, %d-byte values; "
           "%lld writes sent (%.0f/s), %lld failed, %lld reconnects\n",
           o->rate, o->conns, o->write_bytes, (long long)all.sent, achieved, (long long)all.errors,
           (long long)l.reconnects);
    if (backup_ok)
        printf("backup: %s run %s: %lld pages of %lld bytes (%.1f MiB), copy %lld ms + transfer "
               "%lld ms = %lld ms from start to stored, %lld restarts\n",
               v.kind, v.run_id, (long long)v.pages, (long long)v.page_size,
               (double)v.bytes / 1048576.0, (long long)v.copy_ms, (long long)v.transfer_ms,
               (long long)(v.finished_at - v.started_at), (long long)v.restarts);
    else if (w == 0)
        printf("backup: FAILED: %s: %s\n", v.error_code, v.error_msg);
    else
        printf("backup: did not finish within %.0f s\n", o->max_backup_s);
    printf("write latency from the time each write was due (ms):\n");
    printf("  %-22s %8s %7s %6s %8s %8s %8s %8s %7s\n", "window", "length", "writes", "failed",
           "p50", "p99", "p99.9", "max", ">100ms");
    print_stats("baseline (no backup)", (double)(trigger_ns - warm) / 1e9, base);
    print_stats("backup (trigger..done)", (double)(fin - trigger_ns) / 1e9, during);
    if (backup_ok) {
        print_stats("  copy phase", (double)(copy_to - copy_from) / 1e9, copy);
        print_stats("  transfer phase", (double)(fin - copy_to) / 1e9, xfer);
    }
    print_stats("after", (double)(stop_ns - fin) / 1e9, tail);
    double rest_base = -1, rest_backup = -1;
    if (o->server_pid) {
        print_cpu_header();
        print_cpu("baseline (no backup)", &cpu_warm, &cpu_trigger, &rest_base);
        print_cpu("backup (trigger..done)", &cpu_trigger, &cpu_done, &rest_backup);
        if (cpu_transfer.ok) {
            print_cpu("  copy phase", &cpu_trigger, &cpu_transfer, NULL);
            print_cpu("  transfer phase", &cpu_transfer, &cpu_done, NULL);
        }
        printf("  (\"rest\" is every other process and kernel thread on the machine; phases split "
               "where the tool first saw the transfer, within about 50 ms)\n");
    }

    write_samples(&l, o->samples);
    if (o->timeline)
        write_timeline(&l, o->timeline, trigger_ns);
    FILE *f = fopen(o->result, "w");
    if (!f)
        fail("cannot write '%s': %s", o->result, strerror(errno));
    fprintf(f,
            "BACKUP_OK=%d\nRUN_ID=%s\nSTARTED_AT=%lld\nCOPY_END=%lld\nFINISHED_AT=%lld\n"
            "COPY_MS=%lld\nTRANSFER_MS=%lld\nBACKUP_MS=%lld\nPAGES=%lld\nBYTES=%lld\n"
            "RESTARTS=%lld\nWRITES=%lld\nFAILED=%lld\nBASE_P50=%.2f\nBASE_P99=%.2f\n"
            "BASE_MAX=%.2f\nBASE_OVER=%lld\nBK_P50=%.2f\nBK_P99=%.2f\nBK_MAX=%.2f\n"
            "BK_OVER=%lld\nCOPY_P99=%.2f\nCOPY_MAX=%.2f\nXFER_P99=%.2f\nXFER_MAX=%.2f\n"
            "REST_BASE=%.2f\nREST_BACKUP=%.2f\n",
            backup_ok, v.run_id, (long long)v.started_at, (long long)(v.started_at + v.copy_ms),
            (long long)v.finished_at, (long long)v.copy_ms, (long long)v.transfer_ms,
            (long long)(v.finished_at - v.started_at), (long long)v.pages, (long long)v.bytes,
            (long long)v.restarts, (long long)all.sent, (long long)all.errors, base.p50, base.p99,
            base.max, (long long)base.over, during.p50, during.p99, during.max,
            (long long)during.over, copy.p99, copy.max, xfer.p99, xfer.max, rest_base, rest_backup);
    fclose(f);
    free(l.s);
    free(l.c);
    return backup_ok && all.errors == 0 ? 0 : 1;
}

/* ---- check ---- */

static sqlite3 *open_ro(const char *path)
{
    char uri[4200];
    snprintf(uri, sizeof uri, "file:%s?mode=ro", path);
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL) != SQLITE_OK)
        fail("cannot open '%s': %s", path, sqlite3_errmsg(db));
    return db;
}

static int64_t one_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail("%s: %s", sql, sqlite3_errmsg(db));
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

static int mode_check(const opts *o)
{
    if (!o->restored || !o->samples || o->seed_rows < 0 || o->copy_start < 0 || o->copy_end < 0)
        usage();
    FILE *f = fopen(o->samples, "r");
    if (!f)
        fail("cannot read '%s': %s", o->samples, strerror(errno));
    int64_t cap = 1 << 20, n = 0;
    sample *s = xcalloc((size_t)cap, sizeof *s); /* here: sent/done hold epoch ms */
    long long i, sent, done;
    int status;
    double lat;
    while (fscanf(f, "%lld %d %lld %lld %lf", &i, &status, &sent, &done, &lat) == 5) {
        if (i != n)
            fail("'%s' is not a samples file of backup_bench run", o->samples);
        if (n == cap) {
            cap *= 2;
            sample *ns = realloc(s, (size_t)cap * sizeof *s);
            if (!ns)
                fail("out of memory");
            s = ns;
        }
        s[n].status = status;
        s[n].sent_ns = sent;
        s[n].done_ns = done;
        n++;
    }
    fclose(f);
    sqlite3 *db = open_ro(o->restored);
    int bad = 0;
    sqlite3_stmt *st = NULL;
    sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL);
    const char *qc = sqlite3_step(st) == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : "";
    if (!qc || strcmp(qc, "ok") != 0) {
        printf("check: quick_check of %s: %s\n", o->restored, qc ? qc : "(no answer)");
        bad = 1;
    }
    sqlite3_finalize(st);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM items WHERE id < %lld", (long long)LOAD_BASE);
    int64_t seed = one_int(db, sql);
    snprintf(sql, sizeof sql, "SELECT max(id) FROM items WHERE id < %lld", (long long)LOAD_BASE);
    int64_t seed_max = one_int(db, sql);
    if (seed != o->seed_rows || seed_max != o->seed_rows) {
        printf("check: %lld seed rows (max id %lld), expected %lld\n", (long long)seed,
               (long long)seed_max, (long long)o->seed_rows);
        bad = 1;
    }
    char *present = xcalloc((size_t)n + 1, 1);
    int64_t rows = 0, phantom = 0;
    snprintf(sql, sizeof sql, "SELECT id FROM items WHERE id >= %lld", (long long)LOAD_BASE);
    sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t k = sqlite3_column_int64(st, 0) - LOAD_BASE;
        rows++;
        if (k < 0 || k >= n || !s[k].sent_ns)
            phantom++;
        else
            present[k] = 1;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    int64_t must = 0, missing = 0, after = 0, leaked = 0, unacked_in = 0;
    for (int64_t k = 0; k < n; k++) {
        if (s[k].status == 200 && s[k].done_ns < o->copy_start) {
            must++;
            missing += !present[k];
        }
        if (!s[k].sent_ns || s[k].sent_ns > o->copy_end) {
            after++;
            leaked += present[k];
        }
        unacked_in += present[k] && s[k].status != 200;
    }
    printf("check: %s: quick_check %s, %lld seed rows, %lld load rows: all %lld writes "
           "acknowledged before the copy started are there (%lld missing), none of the %lld "
           "sent after it ended is (%lld found), %lld rows the tool never sent, %lld rows "
           "whose write was not acknowledged\n",
           o->restored, qc && strcmp(qc, "ok") == 0 ? "ok" : "FAILED", (long long)seed,
           (long long)rows, (long long)must, (long long)missing, (long long)after,
           (long long)leaked, (long long)phantom, (long long)unacked_in);
    if (missing || leaked || phantom)
        bad = 1;
    free(present);
    free(s);
    return bad;
}

/* ---- compare ---- */

/* (row count, SHA-256 over every value of every row, typed and length-prefixed, in the
 * order of all columns) of one table; out gets the hex digest. */
static int64_t table_digest(sqlite3 *db, const char *table, char out[65])
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT * FROM \"%s\" ORDER BY 1", table);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail("%s: %s", sql, sqlite3_errmsg(db));
    int cols = sqlite3_column_count(st);
    if (cols > 1) { /* order by every column, so equal tables read in the same order */
        size_t off = strlen(sql);
        for (int c = 2; c <= cols && off + 16 < sizeof sql; c++)
            off += (size_t)snprintf(sql + off, sizeof sql - off, ", %d", c);
        sqlite3_finalize(st);
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
            fail("%s: %s", sql, sqlite3_errmsg(db));
    }
    gs_sha256 h;
    gs_sha256_init(&h);
    int64_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        n++;
        for (int c = 0; c < cols; c++) {
            uint8_t t = (uint8_t)sqlite3_column_type(st, c);
            const void *p = NULL;
            if (t == SQLITE_BLOB)
                p = sqlite3_column_blob(st, c);
            else if (t != SQLITE_NULL)
                p = sqlite3_column_text(st, c);
            uint32_t len = p ? (uint32_t)sqlite3_column_bytes(st, c) : 0;
            gs_sha256_update(&h, &t, 1);
            gs_sha256_update(&h, &len, sizeof len);
            if (len)
                gs_sha256_update(&h, p, len);
        }
    }
    sqlite3_finalize(st);
    uint8_t d[32];
    gs_sha256_final(&h, d);
    for (int k = 0; k < 32; k++)
        snprintf(out + 2 * k, 3, "%02x", d[k]);
    return n;
}

static int compare_one_way(sqlite3 *x, sqlite3 *y, const char *xn, const char *yn, int report)
{
    sqlite3_stmt *st = NULL;
    sqlite3_prepare_v2(x,
                       "SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE "
                       "'sqlite_%' ORDER BY name",
                       -1, &st, NULL);
    int bad = 0, tables = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        char q[300];
        snprintf(q, sizeof q, "SELECT count(*) FROM sqlite_schema WHERE type='table' AND name=%s",
                 "?");
        sqlite3_stmt *e = NULL;
        sqlite3_prepare_v2(y, q, -1, &e, NULL);
        sqlite3_bind_text(e, 1, t, -1, SQLITE_STATIC);
        int there = sqlite3_step(e) == SQLITE_ROW && sqlite3_column_int(e, 0) == 1;
        sqlite3_finalize(e);
        if (!there) {
            printf("compare: table %s is in %s but not in %s\n", t, xn, yn);
            bad = 1;
            continue;
        }
        tables++;
        if (!report)
            continue;
        char hx[65], hy[65];
        int64_t nx = table_digest(x, t, hx), ny = table_digest(y, t, hy);
        if (nx != ny || strcmp(hx, hy) != 0) {
            printf("compare: table %s differs: %lld rows (sha256 %.16s...) in %s, %lld rows "
                   "(sha256 %.16s...) in %s\n",
                   t, (long long)nx, hx, xn, (long long)ny, hy, yn);
            bad = 1;
        } else {
            printf("compare: table %s: %lld identical rows (sha256 %.16s...)\n", t, (long long)nx,
                   hx);
        }
    }
    sqlite3_finalize(st);
    if (report && !tables) {
        printf("compare: %s holds no table\n", xn);
        bad = 1;
    }
    return bad;
}

static int mode_compare(const opts *o)
{
    if (!o->a || !o->b)
        usage();
    sqlite3 *a = open_ro(o->a), *b = open_ro(o->b);
    int bad = compare_one_way(a, b, o->a, o->b, 1) | compare_one_way(b, a, o->b, o->a, 0);
    sqlite3_close(a);
    sqlite3_close(b);
    printf("compare: %s\n", bad ? "DIFFERENT" : "identical");
    return bad;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    opts o;
    parse(&o, argc, argv);
    if (strcmp(argv[1], "create") == 0)
        return mode_create(&o);
    if (strcmp(argv[1], "run") == 0)
        return mode_run(&o);
    if (strcmp(argv[1], "check") == 0)
        return mode_check(&o);
    if (strcmp(argv[1], "compare") == 0)
        return mode_compare(&o);
    usage();
}
