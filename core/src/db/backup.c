/*
 * Full-copy backups and their restore: see backup.h. One stepping engine (struct run) serves
 * both sources; for a served database each advance() runs on the writer thread.
 */
#include "backup.h"

#include "../base/alloc.h"
#include "../base/error.h"
#include "../base/fs.h"
#include "../base/log.h"
#include "../sqlite/connection.h"
#include "cdc_internal.h"
#include "database_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void gs_backup_options_default(gs_backup_options *o)
{
    memset(o, 0, sizeof *o);
    o->pages_per_step = 256;
    o->restart_limit = 3;
    o->no_progress_step_limit = 256;
    o->stall_timeout_ms = 30000;
    o->busy_timeout_ms = 5000;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

gs_status gs_backup_check_path(const char *path, gs_error *err)
{
    if (!path || !*path)
        return gs_error_set(err, 0, "BACKUP_ERROR", "the backup path is empty");
    for (const unsigned char *p = (const unsigned char *)path; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return gs_error_set(err, 0, "BACKUP_ERROR",
                                "the backup path holds a control character (byte 0x%02x); "
                                "choose a plain path",
                                *p);
    for (const char *seg = path; seg;) {
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (len == 2 && seg[0] == '.' && seg[1] == '.')
            return gs_error_set(err, 0, "BACKUP_ERROR",
                                "the backup path '%s' holds a '..' segment; give the folder "
                                "without '..'",
                                path);
        seg = end ? end + 1 : NULL;
    }
    return GS_OK;
}

void gs_backup_default_name(char *buf, size_t cap)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char base[40];
    /* ISO 8601 with ':' and '.' replaced by '-', as 02-core recommends */
    strftime(base, sizeof base, "%Y-%m-%dT%H-%M-%S", &tm);
    snprintf(buf, cap, "backup-%s-%03dZ.db", base, (int)(ts.tv_nsec / 1000000));
}

/* ---- destination: a temporary name beside the final one ---- */

typedef struct dest {
    const char *final;
    char tmp[PATH_MAX];
    char dir[PATH_MAX];
    sqlite3 *conn;
    int fd;                /**< the temporary file, for writeback as it grows (-1 = none) */
    int64_t flush_started; /**< writeback started up to this offset */
    int64_t flush_waited;  /**< writeback finished up to this offset */
} dest;

static void close_flush_fd(dest *d)
{
    if (d->fd >= 0)
        close(d->fd);
    d->fd = -1;
}

static void remove_tmp(dest *d)
{
    close_flush_fd(d);
    if (d->conn) {
        sqlite3_close(d->conn);
        d->conn = NULL;
    }
    if (!d->tmp[0])
        return;
    static const char *const sfx[] = {"", "-journal", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        char p[PATH_MAX + 16];
        snprintf(p, sizeof p, "%s%s", d->tmp, sfx[i]);
        unlink(p);
    }
    d->tmp[0] = 0;
}

static int path_exists(const char *p)
{
    struct stat sb;
    return lstat(p, &sb) == 0 || errno != ENOENT;
}

/* Check the final path, create its folder, open the temporary file. replace: an existing
 * final path is allowed (restore --replace). */
static gs_status dest_open(dest *d, const char *final, int replace, gs_error *err)
{
    memset(d, 0, sizeof *d);
    d->fd = -1;
    d->final = final;
    if (gs_backup_check_path(final, err) != GS_OK)
        return GS_ERROR;
    if (!replace && path_exists(final))
        return gs_error_set(err, 0, "BACKUP_ERROR",
                            "the destination '%s' already exists; choose a new path", final);
    size_t n = strlen(final);
    if (n >= sizeof d->dir - 40)
        return gs_error_set(err, 0, "BACKUP_ERROR", "the destination path is too long");
    memcpy(d->dir, final, n + 1);
    char *slash = strrchr(d->dir, '/');
    const char *base = final;
    if (!slash) {
        strcpy(d->dir, ".");
    } else {
        base = final + (slash - d->dir) + 1;
        if (slash == d->dir)
            slash[1] = 0;
        else
            *slash = 0;
    }
    if (!*base)
        return gs_error_set(err, 0, "BACKUP_ERROR",
                            "the destination '%s' names a folder, "
                            "not a file",
                            final);
    if (gs_mkdir_p(d->dir) != 0)
        return gs_error_set(err, 0, "BACKUP_ERROR", "cannot create the folder '%s': %s", d->dir,
                            strerror(errno));
    static unsigned counter;
    unsigned k = __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
    snprintf(d->tmp, sizeof d->tmp, "%s/.%s.partial-%ld-%u", d->dir, base, (long)getpid(), k);
    int rc = sqlite3_open_v2(
        d->tmp, &d->conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        gs_error_set(err, 0, "BACKUP_ERROR", "cannot create '%s': %s", d->tmp,
                     d->conn ? sqlite3_errmsg(d->conn) : sqlite3_errstr(rc));
        remove_tmp(d);
        return GS_ERROR;
    }
    /* No journal and no syncs on the copy: the temporary file means nothing until
     * dest_commit renames it, and a failure removes it. Left at SQLite's defaults, the last
     * sqlite3_backup_step commits the copy with an fdatasync of the whole file, and for a
     * served database that step runs on the writer thread: every write would wait for the
     * disk to take the entire copy (about a second per GiB here). dest_commit fsyncs the file
     * on the calling thread instead, before the rename. */
    char *msg = NULL;
    if (sqlite3_exec(d->conn, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF", NULL, NULL,
                     &msg) != SQLITE_OK) {
        gs_error_set(err, 0, "BACKUP_ERROR", "cannot prepare '%s' for the copy: %s", d->tmp,
                     msg ? msg : sqlite3_errmsg(d->conn));
        sqlite3_free(msg);
        remove_tmp(d);
        return GS_ERROR;
    }
    d->fd = open(d->tmp, O_RDONLY | O_CLOEXEC); /* -1: no early writeback, nothing else lost */
    return GS_OK;
}

/* Write the copy back to disk as it grows, from the calling thread, between steps. Without
 * this the whole copy sits dirty in the page cache until dest_commit's fsync, which then
 * floods the disk for as long as it takes to write it all (most of a second per GiB here),
 * and every fsync the served database makes meanwhile (each commit at synchronous=FULL)
 * queues behind that flood. Here writeback of each chunk starts once the copy has passed it,
 * and the chunk before it is waited for, so at most two chunks are in flight and the copy
 * runs at the pace of the disk. Only pacing: dest_commit's fsync still makes the copy
 * durable, and a failure here costs nothing but the pacing. */
#define FLUSH_CHUNK_BYTES ((int64_t)8 << 20)

static void flush_progress(dest *d)
{
    struct stat sb;
    if (d->fd < 0 || fstat(d->fd, &sb) != 0)
        return;
    /* the copy writes pages in order; the last few MiB may still sit in SQLite's cache */
    int64_t written = (int64_t)sb.st_size - FLUSH_CHUNK_BYTES;
    while (written - d->flush_started >= FLUSH_CHUNK_BYTES) {
        if (sync_file_range(d->fd, d->flush_started, FLUSH_CHUNK_BYTES, SYNC_FILE_RANGE_WRITE) !=
            0) {
            close_flush_fd(d);
            return;
        }
        d->flush_started += FLUSH_CHUNK_BYTES;
        if (d->flush_started - d->flush_waited > FLUSH_CHUNK_BYTES) {
            if (sync_file_range(d->fd, d->flush_waited, FLUSH_CHUNK_BYTES,
                                SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                    SYNC_FILE_RANGE_WAIT_AFTER) != 0) {
                close_flush_fd(d);
                return;
            }
            d->flush_waited += FLUSH_CHUNK_BYTES;
        }
    }
}

static int fsync_path(const char *p, int dir)
{
    int fd = open(p, (dir ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Close the temporary copy, fsync it, and put it at the final name (without replacing what
 * appeared there meanwhile unless replace). */
static gs_status dest_commit(dest *d, int replace, int64_t *bytes, gs_error *err)
{
    close_flush_fd(d);
    if (d->conn && sqlite3_close(d->conn) != SQLITE_OK) {
        gs_error_set(err, 0, "BACKUP_ERROR", "cannot close the copy '%s': %s", d->tmp,
                     sqlite3_errmsg(d->conn));
        return GS_ERROR;
    }
    d->conn = NULL;
    struct stat sb;
    if (fsync_path(d->tmp, 0) != 0 || stat(d->tmp, &sb) != 0)
        return gs_error_set(err, 0, "BACKUP_ERROR", "cannot sync the copy '%s': %s", d->tmp,
                            strerror(errno));
    if (bytes)
        *bytes = (int64_t)sb.st_size;
    if (replace) {
        static const char *const sfx[] = {"-wal", "-shm", "-journal"};
        for (size_t i = 0; i < 3; i++) {
            char p[PATH_MAX + 16];
            snprintf(p, sizeof p, "%s%s", d->final, sfx[i]);
            unlink(p);
        }
        if (rename(d->tmp, d->final) != 0)
            return gs_error_set(err, 0, "BACKUP_ERROR", "cannot rename '%s' to '%s': %s", d->tmp,
                                d->final, strerror(errno));
    } else if (link(d->tmp, d->final) != 0) {
        /* link refuses an existing name atomically; where links are unsupported, fall back
         * to a checked rename */
        int e = errno;
        if (e == EEXIST)
            return gs_error_set(err, 0, "BACKUP_ERROR",
                                "the destination '%s' appeared during the copy; nothing was "
                                "overwritten",
                                d->final);
        if ((e != EPERM && e != ENOTSUP && e != EXDEV) || path_exists(d->final) ||
            rename(d->tmp, d->final) != 0)
            return gs_error_set(err, 0, "BACKUP_ERROR", "cannot place the copy at '%s': %s",
                                d->final, strerror(errno));
    } else {
        unlink(d->tmp);
    }
    d->tmp[0] = 0;
    fsync_path(d->dir, 1);
    return GS_OK;
}

/* ---- the stepping engine ---- */

typedef struct run {
    const gs_backup_options *o;
    sqlite3 *src, *dst;
    sqlite3_backup *bk;
    int64_t last_step_ns; /**< end of the previous step (or the start of the run) */
    int64_t prev_copied, furthest;
    int have_prev, no_progress;
    gs_backup_progress p;
    int finished;
    gs_status status;
    gs_error err;
    const char *what; /**< names the source in messages */
} run;

static void run_fail(run *r, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void run_fail(run *r, const char *code, const char *fmt, ...)
{
    if (r->bk) {
        sqlite3_backup_finish(r->bk);
        r->bk = NULL;
    }
    r->finished = 1;
    r->status = GS_ERROR;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    gs_error_set(&r->err, 0, code, "backup of %s: %s", r->what, msg);
}

/* One step with the rules of 02-core "Restarts and stalls". Runs on the thread that owns
 * r->src (the writer thread for a served database). */
static void advance(run *r)
{
    int64_t now = mono_ns();
    if (now - r->last_step_ns > r->o->stall_timeout_ms * 1000000) {
        run_fail(r, "BACKUP_STALLED",
                 "no step arrived within %lld ms; the writer is too busy to serve the copy "
                 "(retry when the load is lower or raise the stall timeout)",
                 (long long)r->o->stall_timeout_ms);
        return;
    }
    if (!r->bk) {
        r->bk = sqlite3_backup_init(r->dst, "main", r->src, "main");
        if (!r->bk) {
            run_fail(r, "BACKUP_ERROR", "cannot start the copy: %s", sqlite3_errmsg(r->dst));
            return;
        }
    }
    int rc = sqlite3_backup_step(r->bk, r->o->pages_per_step);
    r->p.steps++;
    r->p.total_pages = sqlite3_backup_pagecount(r->bk);
    r->p.remaining_pages = sqlite3_backup_remaining(r->bk);
    r->p.pages_copied = r->p.total_pages - r->p.remaining_pages;
    r->last_step_ns = mono_ns();
    if (rc == SQLITE_DONE) {
        rc = sqlite3_backup_finish(r->bk);
        r->bk = NULL;
        if (rc != SQLITE_OK) {
            run_fail(r, "BACKUP_ERROR", "finishing the copy failed: %s (code %d)",
                     sqlite3_errmsg(r->dst), rc);
            return;
        }
        r->finished = 1;
        r->status = GS_OK;
        return;
    }
    if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED) {
        run_fail(r, "BACKUP_ERROR", "a copy step failed: %s (code %d)", sqlite3_errstr(rc), rc);
        return;
    }
    if (r->have_prev && r->p.pages_copied < r->prev_copied) {
        r->p.restarts++;
        if (r->p.restarts >= r->o->restart_limit) {
            run_fail(r, "BACKUP_RESTARTED",
                     "the copy went back to page one %d times: another connection wrote to "
                     "the source or ran a RESTART/TRUNCATE checkpoint during the copy. Back up "
                     "through the process that serves the database, or at a quieter time",
                     r->p.restarts);
            return;
        }
    }
    if (r->p.pages_copied > r->furthest) {
        r->furthest = r->p.pages_copied;
        r->no_progress = 0;
    } else if (++r->no_progress >= r->o->no_progress_step_limit) {
        run_fail(r, "BACKUP_RESTARTED",
                 "the copy reached no further in %d steps: other writers keep returning it "
                 "to page one or grow the source faster than it copies. Back up through the "
                 "process that serves the database, or at a quieter time",
                 r->no_progress);
        return;
    }
    r->have_prev = 1;
    r->prev_copied = r->p.pages_copied;
}

static void run_init(run *r, const gs_backup_options *o, const char *what)
{
    memset(r, 0, sizeof *r);
    r->o = o;
    r->what = what;
    gs_error_init(&r->err);
    r->last_step_ns = mono_ns();
}

static void report(const run *r)
{
    if (r->o->on_progress)
        r->o->on_progress(r->o->progress_user, &r->p);
}

static void fill_result(gs_backup_result *res, const run *r, int64_t bytes, int64_t t0)
{
    if (!res)
        return;
    res->pages = r->p.total_pages;
    res->bytes = bytes;
    res->duration_ms = (double)(mono_ns() - t0) / 1e6;
    res->restarts = r->p.restarts;
    res->steps = r->p.steps;
}

static void fix_options(gs_backup_options *o, const gs_backup_options *in)
{
    gs_backup_options_default(o);
    if (!in)
        return;
    *o = *in;
    if (o->pages_per_step == 0)
        o->pages_per_step = 256;
    if (o->restart_limit <= 0)
        o->restart_limit = 3;
    if (o->no_progress_step_limit <= 0)
        o->no_progress_step_limit = 256;
    if (o->stall_timeout_ms <= 0)
        o->stall_timeout_ms = 30000;
    if (o->busy_timeout_ms < 0)
        o->busy_timeout_ms = 0;
}

/* ---- a served database: every step on the writer thread ---- */

static gs_status step_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)err;
    run *r = user;
    r->src = gs_conn_db(conn);
    if (r->finished) { /* the closing call after the caller gave up */
        if (r->bk)
            sqlite3_backup_finish(r->bk);
        r->bk = NULL;
    } else {
        advance(r);
    }
    gs_buf_puts(out, "null");
    return GS_OK;
}

gs_status gs_db_backup_to_path(gs_database *db, const char *dest_path,
                               const gs_backup_options *opts, gs_backup_result *res, gs_error *err)
{
    if (!db)
        return gs_error_set(err, 0, "BACKUP_ERROR", "no database given");
    if (db->memory)
        return gs_error_set(err, 0, "BACKUP_UNSUPPORTED",
                            "database '%s' is in memory: there is no file to copy", db->id);
    if (gs_db_is_closed(db))
        return gs_error_set(err, 0, "DATABASE_CLOSED", "database '%s' is closed", db->id);
    if (db->opts.read_only) /* no writer thread: the file cannot change under the copy */
        return gs_backup_file(db->path, dest_path, opts, res, err);
    gs_backup_options o;
    fix_options(&o, opts);
    dest d;
    if (dest_open(&d, dest_path, 0, err) != GS_OK)
        return GS_ERROR;
    char what[300];
    snprintf(what, sizeof what, "database '%s'", db->id);
    run r;
    run_init(&r, &o, what);
    r.dst = d.conn;
    int64_t t0 = mono_ns();
    while (!r.finished) {
        if (o.cancel && __atomic_load_n(o.cancel, __ATOMIC_ACQUIRE)) {
            /* r.bk (when a step ran) is released by the writer below */
            r.finished = 1;
            r.status = GS_ERROR;
            gs_error_set(&r.err, 0, "BACKUP_ERROR",
                         "backup of %s: cancelled after %lld steps: the database is closing", what,
                         (long long)r.p.steps);
            break;
        }
        gs_error e;
        gs_error_init(&e);
        if (gs_cdc_writer_call_sync(db, step_fn, &r, &e) != GS_OK) {
            if (strcmp(e.code, "WRITER_WORKER_TIMEOUT") == 0)
                continue; /* the step ran late; its state is in r */
            if (strcmp(e.code, "WRITE_OVERLOADED") == 0 &&
                mono_ns() - r.last_step_ns <= o.stall_timeout_ms * 1000000) {
                struct timespec ts = {0, 20 * 1000000}; /* queue full: back off, then retry */
                nanosleep(&ts, NULL);
                continue;
            }
            /* r.bk stays for the writer to release below: only its thread may touch it */
            r.finished = 1;
            r.status = GS_ERROR;
            if (strcmp(e.code, "WRITE_OVERLOADED") == 0)
                gs_error_set(&r.err, 0, "BACKUP_STALLED",
                             "backup of %s: the writer queue stayed full for %lld ms; retry "
                             "when the load is lower",
                             what, (long long)o.stall_timeout_ms);
            else
                gs_error_set(&r.err, 0, "BACKUP_ERROR", "backup of %s: %s: %s", what, e.code,
                             e.message);
            break;
        }
        report(&r);
        flush_progress(&d);
    }
    /* the writer refused a step after the copy began: release the copy on its thread
     * (retried while the queue is full, up to the stall timeout) */
    int64_t release_until = mono_ns() + o.stall_timeout_ms * 1000000;
    while (r.bk) {
        gs_error e;
        gs_error_init(&e);
        if (gs_cdc_writer_call_sync(db, step_fn, &r, &e) == GS_OK || !r.bk)
            break;
        if (strcmp(e.code, "WRITE_OVERLOADED") != 0 || mono_ns() > release_until) {
            gs_log(GS_LOG_WARN, "backup", "database '%s': could not release the backup: %s", db->id,
                   e.message);
            break;
        }
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    if (r.status != GS_OK) {
        remove_tmp(&d);
        gs_error_copy(err, &r.err);
        return GS_ERROR;
    }
    int64_t bytes = 0;
    if (dest_commit(&d, 0, &bytes, err) != GS_OK) {
        remove_tmp(&d);
        return GS_ERROR;
    }
    fill_result(res, &r, bytes, t0);
    return GS_OK;
}

/* ---- a file, maybe served by another process ---- */

/* A WAL database: open a read transaction on src and keep it for the whole copy. Every step
 * then reads the same snapshot (the file as of now), so the writes another process commits
 * meanwhile neither return the copy to page one nor leak half into it; they only keep the
 * node's checkpoints from passing the snapshot until the copy ends. *held = 1 when one is
 * held. A rollback-journal file gets none (a held read lock would block its writer for the
 * whole copy): its copy restarts when written, as the stepping rules count. */
static gs_status hold_wal_snapshot(sqlite3 *src, int *held, gs_error *err)
{
    *held = 0;
    sqlite3_stmt *st = NULL;
    int wal = 0;
    if (sqlite3_prepare_v2(src, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        wal = mode && strcmp(mode, "wal") == 0;
    }
    sqlite3_finalize(st);
    if (!wal)
        return GS_OK;
    int rc = sqlite3_exec(src, "BEGIN", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(src, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        gs_error_set(err, 0, "BACKUP_ERROR", "cannot open a read snapshot of the source: %s",
                     sqlite3_errmsg(src));
        sqlite3_exec(src, "ROLLBACK", NULL, NULL, NULL);
        return GS_ERROR;
    }
    *held = 1;
    return GS_OK;
}

gs_status gs_backup_file(const char *src_path, const char *dest_path, const gs_backup_options *opts,
                         gs_backup_result *res, gs_error *err)
{
    gs_backup_options o;
    fix_options(&o, opts);
    struct stat sb;
    if (!src_path || stat(src_path, &sb) != 0)
        return gs_error_set(err, 0, "BACKUP_ERROR", "cannot read the database '%s': %s",
                            src_path ? src_path : "(none)", strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return gs_error_set(err, 0, "BACKUP_ERROR", "'%s' is not a database file", src_path);
    sqlite3 *src = NULL;
    int rc = sqlite3_open_v2(src_path, &src, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        gs_error_set(err, 0, "BACKUP_ERROR", "cannot open '%s': %s", src_path,
                     src ? sqlite3_errmsg(src) : sqlite3_errstr(rc));
        sqlite3_close(src);
        return GS_ERROR;
    }
    sqlite3_busy_timeout(src, o.busy_timeout_ms);
    dest d;
    if (dest_open(&d, dest_path, 0, err) != GS_OK) {
        sqlite3_close(src);
        return GS_ERROR;
    }
    char what[PATH_MAX + 8];
    snprintf(what, sizeof what, "'%s'", src_path);
    int snapshot = 0;
    if (hold_wal_snapshot(src, &snapshot, err) != GS_OK) {
        sqlite3_close(src);
        remove_tmp(&d);
        return GS_ERROR;
    }
    run r;
    run_init(&r, &o, what);
    r.src = src;
    r.dst = d.conn;
    int64_t t0 = mono_ns();
    while (!r.finished) {
        advance(&r);
        report(&r);
        flush_progress(&d);
    }
    if (snapshot)
        sqlite3_exec(src, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(src);
    if (r.status != GS_OK) {
        remove_tmp(&d);
        gs_error_copy(err, &r.err);
        return GS_ERROR;
    }
    int64_t bytes = 0;
    if (dest_commit(&d, 0, &bytes, err) != GS_OK) {
        remove_tmp(&d);
        return GS_ERROR;
    }
    fill_result(res, &r, bytes, t0);
    return GS_OK;
}

/* ---- restore ---- */

/* "file:<percent-encoded path>?immutable=1": the backup is read without locks and without
 * creating a -wal or -shm beside it. */
static char *immutable_uri(const char *path)
{
    size_t n = strlen(path);
    char *u = gs_malloc(n * 3 + 32);
    if (!u)
        return NULL;
    char *w = u;
    w += sprintf(w, "file:");
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        if (*p == '%' || *p == '?' || *p == '#' || *p < 0x21 || *p >= 0x7f)
            w += sprintf(w, "%%%02X", *p);
        else
            *w++ = (char)*p;
    }
    strcpy(w, "?immutable=1");
    return u;
}

/* Run an integrity or quick check; BACKUP_ERROR with SQLite's first complaint. */
static gs_status check_db(sqlite3 *db, const char *pragma, const char *label, gs_error *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, pragma, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        gs_error_set(err, 0, "BACKUP_ERROR", "%s: %s failed: %s", label, pragma,
                     sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return GS_ERROR;
    }
    gs_status out = GS_OK;
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        out = gs_error_set(err, 0, "BACKUP_ERROR", "%s: %s failed: %s", label, pragma,
                           sqlite3_errmsg(db));
    } else {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        if (!v || strcmp(v, "ok") != 0)
            out = gs_error_set(err, 0, "BACKUP_ERROR", "%s fails %s: %s", label, pragma,
                               v ? v : "(no answer)");
    }
    sqlite3_finalize(st);
    return out;
}

gs_status gs_backup_restore(const char *backup_path, const char *dest_path, int replace,
                            gs_backup_result *res, gs_error *err)
{
    struct stat sb;
    if (!backup_path || stat(backup_path, &sb) != 0)
        return gs_error_set(err, 0, "BACKUP_ERROR", "cannot read the backup '%s': %s",
                            backup_path ? backup_path : "(none)", strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return gs_error_set(err, 0, "BACKUP_ERROR", "the backup '%s' is not a file", backup_path);
    int64_t t0 = mono_ns();
    char *uri = immutable_uri(backup_path);
    if (!uri)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    sqlite3 *src = NULL;
    int rc = sqlite3_open_v2(uri, &src,
                             SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, NULL);
    gs_free(uri);
    char label[PATH_MAX + 16];
    snprintf(label, sizeof label, "the backup '%s'", backup_path);
    if (rc != SQLITE_OK) {
        gs_error_set(err, 0, "BACKUP_ERROR", "cannot open %s: %s", label,
                     src ? sqlite3_errmsg(src) : sqlite3_errstr(rc));
        sqlite3_close(src);
        return GS_ERROR;
    }
    if (check_db(src, "PRAGMA integrity_check", label, err) != GS_OK) {
        sqlite3_close(src);
        return GS_ERROR;
    }
    dest d;
    if (dest_open(&d, dest_path, replace, err) != GS_OK) {
        sqlite3_close(src);
        if (!replace && strstr(err->message, "already exists"))
            gs_error_prefix(err, "pass --replace to overwrite it (stop the node serving it "
                                 "first)");
        return GS_ERROR;
    }
    gs_backup_options o;
    gs_backup_options_default(&o);
    o.pages_per_step = -1; /* an immutable source: one step copies everything */
    run r;
    run_init(&r, &o, label);
    r.src = src;
    r.dst = d.conn;
    while (!r.finished)
        advance(&r);
    sqlite3_close(src);
    if (r.status != GS_OK) {
        remove_tmp(&d);
        gs_error_copy(err, &r.err);
        return GS_ERROR;
    }
    snprintf(label, sizeof label, "the restored copy '%s'", d.tmp);
    if (check_db(d.conn, "PRAGMA quick_check", label, err) != GS_OK) {
        remove_tmp(&d);
        return GS_ERROR;
    }
    int64_t bytes = 0;
    if (dest_commit(&d, replace, &bytes, err) != GS_OK) {
        remove_tmp(&d);
        return GS_ERROR;
    }
    fill_result(res, &r, bytes, t0);
    return GS_OK;
}
