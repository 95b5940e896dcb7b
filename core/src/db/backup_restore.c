/*
 * Restore to a moment from a backup chain: see backup_restore.h.
 */
#include "backup_restore.h"

#include "../base/alloc.h"
#include "../base/error.h"
#include "../base/fs.h"
#include "backup.h"
#include "backup_wal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void gs_restore_report_clear(gs_restore_report *r)
{
    if (!r)
        return;
    gs_free(r->chain_id);
    gs_free(r->dest_path);
    gs_free(r->base_name);
    memset(r, 0, sizeof *r);
}

json_t *gs_restore_report_to_json(const gs_restore_report *r)
{
    return json_pack(
        "{sssssssIsIsIsIsIsIsIsIsIsI}", "chainId", r->chain_id ? r->chain_id : "", "destPath",
        r->dest_path ? r->dest_path : "", "baseName", r->base_name ? r->base_name : "",
        "restoresTo", (json_int_t)r->restores_to, "pieceCount", (json_int_t)r->piece_count,
        "bytesFetched", (json_int_t)r->bytes_fetched, "changesApplied",
        (json_int_t)r->changes_applied, "framesApplied", (json_int_t)r->frames_applied,
        "batchCount", (json_int_t)r->batch_count, "startedAt", (json_int_t)r->started_at,
        "finishedAt", (json_int_t)r->finished_at, "durationMs", (json_int_t)r->duration_ms);
}

json_t *gs_restore_progress_to_json(const gs_restore_progress *p)
{
    return json_pack("{sssIsIsIsI}", "phase", p->phase ? p->phase : "full-copy", "piecesFetched",
                     (json_int_t)p->pieces_fetched, "bytesFetched", (json_int_t)p->bytes_fetched,
                     "changesApplied", (json_int_t)p->changes_applied, "changesTotal",
                     (json_int_t)p->changes_total);
}

typedef struct restore_run {
    const gs_restore_options *o;
    gs_restore_progress p;
    int fd; /* the build file while the full copy is assembled */
    int64_t piece_bytes;
    gs_wal_writer *wal; /* the batch log while change pieces are replayed */
    const char *build;
    int64_t frames;
} restore_run;

static gs_status check_cancel(const restore_run *r, gs_error *err)
{
    if (r->o->cancel && __atomic_load_n(r->o->cancel, __ATOMIC_ACQUIRE))
        return gs_error_set(err, 0, "BACKUP_ERROR",
                            "the restore was stopped part-way: the server is shutting down");
    return GS_OK;
}

static void report_progress(restore_run *r)
{
    if (r->o->on_progress)
        r->o->on_progress(r->o->progress_user, &r->p);
}

static void remove_with_log(const char *path)
{
    static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        char p[PATH_MAX + 16];
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        unlink(p);
    }
}

static gs_status base_sink(void *user, int64_t index, const uint8_t *bytes, size_t len,
                           gs_error *err)
{
    restore_run *r = user;
    if (check_cancel(r, err) != GS_OK)
        return GS_ERROR;
    off_t at = (off_t)index * (off_t)r->piece_bytes;
    size_t done = 0;
    while (done < len) {
        ssize_t k = pwrite(r->fd, bytes + done, len - done, at + (off_t)done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return gs_error_set(err, 0, "BACKUP_ERROR", "cannot write '%s': %s", r->build,
                                strerror(errno));
        done += (size_t)k;
    }
    r->p.pieces_fetched++;
    r->p.bytes_fetched += (int64_t)len;
    report_progress(r);
    return GS_OK;
}

static gs_status change_sink(void *user, int64_t index, const uint8_t *bytes, size_t len,
                             gs_error *err)
{
    (void)index;
    restore_run *r = user;
    if (check_cancel(r, err) != GS_OK || gs_wal_writer_add(r->wal, bytes, len, err) != GS_OK)
        return GS_ERROR;
    r->p.pieces_fetched++;
    r->p.bytes_fetched += (int64_t)len;
    report_progress(r);
    return GS_OK;
}

/* Page size and write format of the assembled full copy. */
static gs_status read_db_header(const char *path, uint32_t *page_size, int *wal, gs_error *err)
{
    uint8_t h[100];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? pread(fd, h, sizeof h, 0) : -1;
    if (fd >= 0)
        close(fd);
    if (n != (ssize_t)sizeof h || memcmp(h, "SQLite format 3", 16) != 0)
        return gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                            "the full copy assembled into '%s' is not a SQLite database", path);
    uint32_t ps = (uint32_t)h[16] << 8 | h[17];
    if (ps == 1)
        ps = 65536;
    if (ps < 512 || ps > 65536 || (ps & (ps - 1)) != 0)
        return gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                            "the full copy assembled into '%s' states a page size of %u, which "
                            "no SQLite database has",
                            path, ps);
    *page_size = ps;
    *wal = h[18] == 2 && h[19] == 2;
    return GS_OK;
}

static gs_status sql_open(const char *path, sqlite3 **db, gs_error *err)
{
    int rc = sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        gs_error_set(err, 0, "BACKUP_ERROR", "cannot open '%s': %s", path,
                     *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
        sqlite3_close(*db);
        *db = NULL;
        return GS_ERROR;
    }
    sqlite3_busy_timeout(*db, 5000);
    return GS_OK;
}

/* Run a one-row pragma: its first column as int64 (*iv) or text (txt). */
static gs_status sql_value(sqlite3 *db, const char *sql, int64_t *iv, char *txt, size_t cap,
                           gs_error *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        gs_error_set(err, 0, "BACKUP_ERROR", "%s failed on the rebuilt database: %s", sql,
                     sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return GS_ERROR;
    }
    if (iv)
        *iv = sqlite3_column_int64(st, 0);
    if (txt) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        snprintf(txt, cap, "%s", v ? v : "");
    }
    sqlite3_finalize(st);
    return GS_OK;
}

/* SQLite replays the batch log: the page count proves it read the frames; then fold it in. */
static gs_status fold_batch(const char *build, uint32_t db_pages, gs_error *err)
{
    sqlite3 *db = NULL;
    if (sql_open(build, &db, err) != GS_OK)
        return GS_ERROR;
    int64_t pages = -1;
    gs_status st = sql_value(db, "PRAGMA page_count", &pages, NULL, 0, err);
    if (st == GS_OK && pages != (int64_t)db_pages)
        st = gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                          "replaying the change pieces left the rebuilt database at %lld pages "
                          "where the last frame commits %u, so SQLite read none of those frames",
                          (long long)pages, db_pages);
    if (st == GS_OK) {
        int emptied = 0;
        st = gs_wal_checkpoint(db, -1, &emptied, err);
        if (st == GS_OK && !emptied)
            st = gs_error_set(err, 0, "BACKUP_ERROR",
                              "the checkpoint after a batch left frames in the log beside '%s'",
                              build);
    }
    sqlite3_close(db);
    return st;
}

static gs_status apply_batch(gs_backup_dest *d, restore_run *r, const gs_chain_plan *plan,
                             size_t from, size_t to, uint32_t page_size, uint32_t batch_no,
                             gs_error *err)
{
    char wal[PATH_MAX + 8], shm[PATH_MAX + 8];
    snprintf(wal, sizeof wal, "%s-wal", r->build);
    snprintf(shm, sizeof shm, "%s-shm", r->build);
    unlink(shm);
    if (gs_wal_writer_open(wal, page_size, batch_no, &r->wal, err) != GS_OK)
        return GS_ERROR;
    int64_t frame_bytes = GS_WAL_FRAME_HEADER_BYTES + (int64_t)page_size;
    for (size_t i = from; i < to; i++) {
        const gs_chain_record *c = &plan->changes[i];
        int64_t head = c->position.first_frame == 1 ? GS_WAL_HEADER_BYTES : 0;
        if (c->bytes_written != head + c->frame_count * frame_bytes) {
            gs_wal_writer_abandon(r->wal);
            r->wal = NULL;
            unlink(wal);
            return gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                                "change piece %lld of chain '%s' holds %lld bytes where %lld "
                                "frames of %u-byte pages come to %lld, so it was taken from a "
                                "different database",
                                (long long)c->sequence, plan->chain_id, (long long)c->bytes_written,
                                (long long)c->frame_count, page_size,
                                (long long)(head + c->frame_count * frame_bytes));
        }
        gs_wal_expect ex = {.page_size = page_size,
                            .log_sequence = (uint32_t)c->position.log_sequence,
                            .salt1 = (uint32_t)c->position.salt1,
                            .salt2 = (uint32_t)c->position.salt2};
        gs_stored_file f = {.name = c->name,
                            .piece_count = c->piece_count,
                            .piece_bytes = c->piece_bytes,
                            .bytes_written = c->bytes_written,
                            .fingerprint = c->fingerprint};
        gs_fetch_result res;
        if (gs_wal_writer_begin_piece(r->wal, (uint32_t)head, head ? &ex : NULL, err) != GS_OK ||
            gs_stored_fetch(d, &f, "BACKUP_CHAIN_BROKEN", change_sink, r, &res, err) != GS_OK) {
            if (strcmp(err->code, "BACKUP_CHAIN_BROKEN") == 0)
                gs_error_prefix(err, "change piece %lld of chain '%s'", (long long)c->sequence,
                                plan->chain_id);
            gs_wal_writer_abandon(r->wal);
            r->wal = NULL;
            unlink(wal);
            return GS_ERROR;
        }
    }
    uint32_t frames = 0, db_pages = 0;
    gs_wal_writer *w = r->wal;
    r->wal = NULL;
    if (gs_wal_writer_finish(w, &frames, &db_pages, err) != GS_OK ||
        fold_batch(r->build, db_pages, err) != GS_OK) {
        unlink(wal);
        return GS_ERROR;
    }
    unlink(wal);
    unlink(shm);
    r->frames += frames;
    r->p.changes_applied += (int64_t)(to - from);
    report_progress(r);
    return GS_OK;
}

static int fsync_dir_of(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

gs_status gs_backup_restore_chain(gs_backup_dest *d, const gs_restore_options *o,
                                  const char *dest_path, gs_restore_report *rep, gs_error *err)
{
    memset(rep, 0, sizeof *rep);
    rep->started_at = gs_backup_now_ms();
    int batch = o->batch_size ? o->batch_size : GS_RESTORE_DEFAULT_BATCH;
    if (batch < 1 || batch > GS_RESTORE_MAX_BATCH)
        return gs_error_set(err, 0, "BACKUP_ERROR",
                            "a restore replays between 1 and %d change pieces per batch, not %d",
                            GS_RESTORE_MAX_BATCH, batch);
    if (gs_backup_check_path(dest_path, err) != GS_OK)
        return GS_ERROR;
    struct stat sb;
    if (!o->replace && lstat(dest_path, &sb) == 0)
        return gs_error_set(err, 0, "BACKUP_ERROR",
                            "the restore target '%s' already exists; pass replace (--replace) to "
                            "overwrite it, with nothing serving it",
                            dest_path);
    const char *chain_name = o->chain_name ? o->chain_name : GS_BACKUP_DEFAULT_CHAIN_NAME;
    gs_chain_list chains;
    if (gs_chain_read_all(d, chain_name, &chains, err) != GS_OK)
        return GS_ERROR;
    gs_chain_plan plan;
    int64_t moment = o->has_moment ? o->moment : gs_backup_now_ms();
    gs_status st = gs_chain_plan_restore(&chains, moment, &plan, err);
    gs_chain_list_free(&chains);
    if (st != GS_OK)
        return GS_ERROR;
    if (gs_chain_plan_check_frames(&plan, err) != GS_OK) {
        gs_chain_plan_free(&plan);
        return GS_ERROR;
    }

    /* every stored file the plan needs is listed whole before anything is written */
    for (size_t i = 0; i <= plan.change_count; i++) {
        const gs_chain_record *r = i == 0 ? &plan.base : &plan.changes[i - 1];
        gs_stored_file f = {.name = r->name,
                            .piece_count = r->piece_count,
                            .piece_bytes = r->piece_bytes,
                            .bytes_written = r->bytes_written,
                            .fingerprint = r->fingerprint};
        if (gs_stored_check(d, &f, "BACKUP_CHAIN_BROKEN", err) != GS_OK) {
            if (strcmp(err->code, "BACKUP_CHAIN_BROKEN") == 0) {
                if (i == 0)
                    gs_error_prefix(err, "the full copy of chain '%s'", plan.chain_id);
                else
                    gs_error_prefix(err, "change piece %lld of chain '%s'", (long long)r->sequence,
                                    plan.chain_id);
            }
            gs_chain_plan_free(&plan);
            return GS_ERROR;
        }
    }
    char build[PATH_MAX];
    if ((size_t)snprintf(build, sizeof build, "%s.restoring", dest_path) >= sizeof build) {
        gs_chain_plan_free(&plan);
        return gs_error_set(err, 0, "BACKUP_ERROR", "the restore target path is too long");
    }
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", dest_path);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = 0;
        if (gs_mkdir_p(parent) != 0) {
            gs_chain_plan_free(&plan);
            return gs_error_set(err, 0, "BACKUP_ERROR", "cannot create the folder '%s': %s", parent,
                                strerror(errno));
        }
    }
    remove_with_log(build);
    restore_run r = {.o = o, .fd = -1, .build = build, .piece_bytes = plan.base.piece_bytes};
    r.p.phase = "full-copy";
    r.p.changes_total = (int64_t)plan.change_count;
    report_progress(&r);

    r.fd = open(build, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (r.fd < 0) {
        st = gs_error_set(err, 0, "BACKUP_ERROR", "cannot create '%s': %s", build, strerror(errno));
        goto fail;
    }
    gs_stored_file base = {.name = plan.base.name,
                           .piece_count = plan.base.piece_count,
                           .piece_bytes = plan.base.piece_bytes,
                           .bytes_written = plan.base.bytes_written,
                           .fingerprint = plan.base.fingerprint};
    gs_fetch_result res;
    if (gs_stored_fetch(d, &base, "BACKUP_CHAIN_BROKEN", base_sink, &r, &res, err) != GS_OK) {
        if (strcmp(err->code, "BACKUP_CHAIN_BROKEN") == 0)
            gs_error_prefix(err, "the full copy of chain '%s'", plan.chain_id);
        st = GS_ERROR;
        goto fail;
    }
    if (ftruncate(r.fd, (off_t)plan.base.bytes_written) != 0 || fsync(r.fd) != 0) {
        st = gs_error_set(err, 0, "BACKUP_ERROR", "cannot sync '%s': %s", build, strerror(errno));
        goto fail;
    }
    close(r.fd);
    r.fd = -1;

    uint32_t page_size = 0;
    int wal = 0;
    if (read_db_header(build, &page_size, &wal, err) != GS_OK) {
        st = GS_ERROR;
        goto fail;
    }
    if (plan.change_count && !wal) {
        /* SQLite reads a log only beside a file that records WAL mode */
        sqlite3 *db = NULL;
        char mode[32] = "";
        st = sql_open(build, &db, err);
        if (st == GS_OK)
            st = sql_value(db, "PRAGMA journal_mode=WAL", NULL, mode, sizeof mode, err);
        sqlite3_close(db);
        if (st == GS_OK && strcmp(mode, "wal") != 0)
            st = gs_error_set(err, 0, "BACKUP_ERROR",
                              "the rebuilt database '%s' cannot enter WAL mode (%s), so the "
                              "change pieces cannot be replayed",
                              build, mode);
        if (st != GS_OK)
            goto fail;
        {
            char aux[PATH_MAX + 8];
            snprintf(aux, sizeof aux, "%s-wal", build);
            unlink(aux);
            snprintf(aux, sizeof aux, "%s-shm", build);
            unlink(aux);
        }
    }
    r.p.phase = "changes";
    uint32_t batch_no = 0;
    for (size_t from = 0; from < plan.change_count; from += (size_t)batch) {
        size_t to = from + (size_t)batch;
        if (to > plan.change_count)
            to = plan.change_count;
        if (apply_batch(d, &r, &plan, from, to, page_size, ++batch_no, err) != GS_OK) {
            st = GS_ERROR;
            goto fail;
        }
        rep->batch_count++;
    }
    {
        sqlite3 *db = NULL;
        char verdict[256] = "";
        st = sql_open(build, &db, err);
        if (st == GS_OK)
            st = sql_value(db, "PRAGMA quick_check", NULL, verdict, sizeof verdict, err);
        sqlite3_close(db);
        if (st == GS_OK && strcmp(verdict, "ok") != 0)
            st = gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                              "the rebuilt database fails PRAGMA quick_check: %s", verdict);
        if (st != GS_OK)
            goto fail;
    }
    {
        char aux[PATH_MAX + 8];
        snprintf(aux, sizeof aux, "%s-wal", dest_path);
        unlink(aux);
        snprintf(aux, sizeof aux, "%s-shm", dest_path);
        unlink(aux);
        snprintf(aux, sizeof aux, "%s-journal", dest_path);
        unlink(aux);
        snprintf(aux, sizeof aux, "%s-wal", build);
        unlink(aux);
        snprintf(aux, sizeof aux, "%s-shm", build);
        unlink(aux);
    }
    if (rename(build, dest_path) != 0) {
        st = gs_error_set(err, 0, "BACKUP_ERROR", "cannot move '%s' onto '%s': %s", build,
                          dest_path, strerror(errno));
        goto fail;
    }
    fsync_dir_of(dest_path);
    rep->chain_id = gs_strdup(plan.chain_id);
    rep->dest_path = gs_strdup(dest_path);
    rep->base_name = gs_strdup(plan.base.name);
    rep->restores_to = plan.restores_to;
    rep->piece_count = r.p.pieces_fetched;
    rep->bytes_fetched = r.p.bytes_fetched;
    rep->changes_applied = r.p.changes_applied;
    rep->frames_applied = r.frames;
    rep->finished_at = gs_backup_now_ms();
    rep->duration_ms = rep->finished_at - rep->started_at;
    gs_chain_plan_free(&plan);
    return GS_OK;

fail:
    if (r.fd >= 0)
        close(r.fd);
    if (r.wal)
        gs_wal_writer_abandon(r.wal);
    remove_with_log(build);
    gs_chain_plan_free(&plan);
    return st == GS_OK ? GS_ERROR : st;
}
