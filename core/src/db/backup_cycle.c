/*
 * The change-capture backup cycle: see backup_cycle.h.
 *
 * Who touches what: the chain state (struct cycle_state) belongs to whichever of these runs,
 * and they never overlap: the scheduler thread during a turn (the writer callback of a capture
 * runs while the scheduler waits for it), then, once close_begin joined the scheduler, the
 * writer thread's close hook, then close_end. The status and the counters are under `mu`.
 */
#include "backup_cycle.h"

#include "../base/alloc.h"
#include "../base/error.h"
#include "../base/fs.h"
#include "../base/log.h"
#include "backup.h"
#include "backup_chain.h"
#include "backup_priority.h"
#include "backup_wal.h"
#include "cdc_internal.h"
#include "database_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const double gs_backup_duration_bounds[GS_BACKUP_DURATION_BOUNDS] = {0.1, 0.5, 1,   5,   10,
                                                                     30,  60,  300, 1800};

#define STATE_FILE "cycle.json"
#define NAME_CAP 600
/* How often the log is measured between turns when max_uncaptured_log_bytes is set. */
#define LOG_WATCH_MS 1000

typedef struct pending_capture {
    char name[NAME_CAP];
    char run_id[17];
    int64_t sequence;
    gs_chain_position position;
    gs_wal_cursor cursor;
    int64_t started_at, captured_at, copy_ms, frame_count, byte_length, page_size;
} pending_capture;

typedef struct cycle_state {
    char chain_id[33];
    int64_t chain_started_at;
    int64_t head_index; /* -1: unknown */
    int64_t records;    /* records the chain holds, its full copy included */
    int has_cursor;
    gs_wal_cursor cursor;
    int has_pending;
    pending_capture pending;
    int closed_cleanly;
} cycle_state;

struct gs_backup_cycle {
    gs_database *db;
    gs_backup_cycle_config cfg; /* strings below are the cycle's copies */
    char *destination_name, *chain_name, *name_prefix, *staging_dir;
    char *state_path, *wal_path;
    gs_backup_dest *dest;

    pthread_mutex_t mu;
    pthread_cond_t cond; /* CLOCK_MONOTONIC: the scheduler's wake-ups and turn completions */
    pthread_t thread;
    int thread_started;
    int stop;   /* the scheduler exits at its next look */
    int cancel; /* a copy or transfer in flight stops at its next step or piece (atomic) */
    int queued; /* a triggered turn waits */
    uint64_t started, finished;
    uint64_t outcome_turn;
    gs_error outcome;
    int64_t next_due_ns;

    /* chain state: see the file comment */
    cycle_state st;
    int has_state;
    int verified;
    int captured; /* this turn staged a capture or started a chain */
    int send_refused;

    /* status (under mu) */
    int running;
    int has_progress;
    char progress_run[17];
    const char *progress_phase;
    int64_t progress_total, progress_remaining, progress_pieces, progress_bytes;
    int progress_restarts;
    json_t *last_run;
    json_t *last_skip;
    int has_error;
    gs_error last_error;
    int64_t last_error_at;
    gs_backup_metrics metrics;
};

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void gs_backup_cycle_config_default(gs_backup_cycle_config *c)
{
    memset(c, 0, sizeof *c);
    c->interval_ms = 60000;
    c->full_copy_interval_ms = 86400000;
    c->piece_bytes = GS_BACKUP_DEFAULT_PIECE_BYTES;
    c->fingerprint = 1;
    c->pages_per_step = 256;
    c->restart_limit = 3;
    c->no_progress_step_limit = 256;
    c->stall_timeout_ms = 30000;
    c->destination_timeout_ms = GS_BACKUP_DEST_TIMEOUT_MS;
}

gs_backup_cycle *gs_db_backup_cycle(gs_database *db)
{
    return db ? __atomic_load_n(&db->backup, __ATOMIC_ACQUIRE) : NULL;
}

/* ---- status ---- */

static void report_error(gs_backup_cycle *c, const gs_error *e)
{
    pthread_mutex_lock(&c->mu);
    c->has_error = 1;
    gs_error_copy(&c->last_error, e);
    c->last_error_at = gs_backup_now_ms();
    pthread_mutex_unlock(&c->mu);
    gs_log(GS_LOG_WARN, "backup", "database '%s': %s: %s", gs_db_id(c->db), e->code, e->message);
}

static void set_progress(gs_backup_cycle *c, const char *run_id, const char *phase, int64_t total,
                         int64_t remaining, int restarts, int64_t pieces, int64_t bytes)
{
    pthread_mutex_lock(&c->mu);
    c->has_progress = 1;
    snprintf(c->progress_run, sizeof c->progress_run, "%s", run_id);
    c->progress_phase = phase;
    c->progress_total = total;
    c->progress_remaining = remaining;
    c->progress_restarts = restarts;
    c->progress_pieces = pieces;
    c->progress_bytes = bytes;
    pthread_mutex_unlock(&c->mu);
}

typedef struct run_report {
    const char *run_id;
    const char *kind; /* "full" | "change" */
    const char *chain_id;
    const char *name;
    int64_t started_at, finished_at, copy_ms, transfer_ms;
    int64_t page_count, page_size, bytes_written, piece_count, piece_bytes;
    int restarts;
    const gs_chain_position *position;
    const char *fingerprint; /* "" or NULL: none */
} run_report;

static void record_run(gs_backup_cycle *c, const run_report *r)
{
    json_t *j = json_pack(
        "{sssssssssssssssIsIsIsIsIsIsIsIsIsIsi}", "runId", r->run_id, "databaseId", gs_db_id(c->db),
        "sourcePath", gs_db_path(c->db), "kind", r->kind, "chainId", r->chain_id, "route", "staged",
        "destinationName", r->name, "startedAt", (json_int_t)r->started_at, "finishedAt",
        (json_int_t)r->finished_at, "durationMs", (json_int_t)(r->finished_at - r->started_at),
        "copyMs", (json_int_t)r->copy_ms, "transferMs", (json_int_t)r->transfer_ms, "pageCount",
        (json_int_t)r->page_count, "pageSize", (json_int_t)r->page_size, "bytesWritten",
        (json_int_t)r->bytes_written, "pieceCount", (json_int_t)r->piece_count, "pieceBytes",
        (json_int_t)r->piece_bytes, "restarts", r->restarts);
    if (j && r->position)
        json_object_set_new(
            j, "position",
            json_pack("{sIsIsIsIsI}", "logSequence", (json_int_t)r->position->log_sequence, "salt1",
                      (json_int_t)r->position->salt1, "salt2", (json_int_t)r->position->salt2,
                      "firstFrame", (json_int_t)r->position->first_frame, "lastFrame",
                      (json_int_t)r->position->last_frame));
    if (j && r->fingerprint && r->fingerprint[0])
        json_object_set_new(j, "fingerprint", json_string(r->fingerprint));
    int k = strcmp(r->kind, "full") == 0 ? 0 : 1;
    double secs = (double)(r->finished_at - r->started_at) / 1000.0;
    size_t slot = 0;
    while (slot < GS_BACKUP_DURATION_BOUNDS && secs > gs_backup_duration_bounds[slot])
        slot++;
    pthread_mutex_lock(&c->mu);
    if (j) {
        json_decref(c->last_run);
        c->last_run = j;
    }
    c->metrics.runs[k]++;
    c->metrics.duration[k][slot]++;
    c->metrics.duration_sum[k] += secs;
    c->metrics.last_success_ms = r->finished_at;
    pthread_mutex_unlock(&c->mu);
    gs_log(GS_LOG_INFO, "backup",
           "database '%s': %s backup '%s' stored (%lld bytes in %lld piece(s))", gs_db_id(c->db),
           r->kind, r->name, (long long)r->bytes_written, (long long)r->piece_count);
}

static void record_skip(gs_backup_cycle *c, const char *reason, const char *message)
{
    json_t *j = json_pack("{sssssI}", "reason", reason, "message", message, "uncapturedLogBytes",
                          (json_int_t)gs_wal_file_bytes(gs_db_path(c->db)));
    pthread_mutex_lock(&c->mu);
    if (j) {
        json_decref(c->last_skip);
        c->last_skip = j;
    }
    c->metrics.skips++;
    pthread_mutex_unlock(&c->mu);
}

json_t *gs_backup_cycle_status(gs_backup_cycle *c)
{
    json_t *j = json_object();
    if (!j)
        return NULL;
    pthread_mutex_lock(&c->mu);
    json_object_set_new(j, "running", json_boolean(c->running));
    if (c->has_state)
        json_object_set_new(j, "chainId", json_string(c->st.chain_id));
    if (c->running && c->has_progress)
        json_object_set_new(
            j, "progress",
            json_pack("{sssssIsIsisIsI}", "runId", c->progress_run, "phase", c->progress_phase,
                      "totalPages", (json_int_t)c->progress_total, "remainingPages",
                      (json_int_t)c->progress_remaining, "restarts", c->progress_restarts,
                      "piecesWritten", (json_int_t)c->progress_pieces, "bytesWritten",
                      (json_int_t)c->progress_bytes));
    if (c->last_run)
        json_object_set(j, "lastRun", c->last_run);
    if (c->last_skip)
        json_object_set(j, "lastSkip", c->last_skip);
    if (c->has_error)
        json_object_set_new(j, "lastError",
                            json_pack("{sssssI}", "code", c->last_error.code, "message",
                                      c->last_error.message, "at", (json_int_t)c->last_error_at));
    pthread_mutex_unlock(&c->mu);
    return j;
}

void gs_backup_cycle_metrics(gs_backup_cycle *c, gs_backup_metrics *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->metrics;
    pthread_mutex_unlock(&c->mu);
}

/* ---- the state file ---- */

static json_t *cursor_json(const gs_wal_cursor *k)
{
    return json_pack("{sIsIsIsIsIsIsb}", "logSequence", (json_int_t)k->log_sequence, "salt1",
                     (json_int_t)k->salt1, "salt2", (json_int_t)k->salt2, "lastFrame",
                     (json_int_t)k->last_frame, "checksum1", (json_int_t)k->checksum1, "checksum2",
                     (json_int_t)k->checksum2, "checkpointed", k->checkpointed);
}

static int cursor_from(const json_t *j, gs_wal_cursor *k)
{
    json_int_t a, s1, s2, lf, c1, c2;
    int cp;
    if (json_unpack((json_t *)j, "{sIsIsIsIsIsIsb}", "logSequence", &a, "salt1", &s1, "salt2", &s2,
                    "lastFrame", &lf, "checksum1", &c1, "checksum2", &c2, "checkpointed", &cp) != 0)
        return 0;
    if (a < 0 || s1 < 0 || s2 < 0 || lf < 0 || c1 < 0 || c2 < 0 || a > UINT32_MAX ||
        s1 > UINT32_MAX || s2 > UINT32_MAX || lf > UINT32_MAX || c1 > UINT32_MAX || c2 > UINT32_MAX)
        return 0;
    k->log_sequence = (uint32_t)a;
    k->salt1 = (uint32_t)s1;
    k->salt2 = (uint32_t)s2;
    k->last_frame = (uint32_t)lf;
    k->checksum1 = (uint32_t)c1;
    k->checksum2 = (uint32_t)c2;
    k->checkpointed = cp;
    return 1;
}

static gs_status save_state(gs_backup_cycle *c, gs_error *err)
{
    const cycle_state *s = &c->st;
    json_t *j = json_pack("{sssssIsIsIsb}", "chainName", c->chain_name, "chainId", s->chain_id,
                          "chainStartedAt", (json_int_t)s->chain_started_at, "headIndex",
                          (json_int_t)s->head_index, "records", (json_int_t)s->records,
                          "closedCleanly", s->closed_cleanly);
    if (!j)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    json_object_set_new(j, "cursor", s->has_cursor ? cursor_json(&s->cursor) : json_null());
    if (s->has_pending) {
        const pending_capture *p = &s->pending;
        json_t *pj = json_pack(
            "{sssssIsIsIsIsIsIsIsI}", "name", p->name, "runId", p->run_id, "sequence",
            (json_int_t)p->sequence, "startedAt", (json_int_t)p->started_at, "capturedAt",
            (json_int_t)p->captured_at, "copyMs", (json_int_t)p->copy_ms, "frameCount",
            (json_int_t)p->frame_count, "byteLength", (json_int_t)p->byte_length, "pageSize",
            (json_int_t)p->page_size, "firstFrame", (json_int_t)p->position.first_frame);
        if (pj)
            json_object_set_new(pj, "cursor", cursor_json(&p->cursor));
        json_object_set_new(j, "pending", pj ? pj : json_null());
    } else {
        json_object_set_new(j, "pending", json_null());
    }
    char tmp[PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s.writing", c->state_path);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    gs_status st = GS_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    size_t len = strlen(text);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len || fsync(fd) != 0)
        st = gs_error_set(err, 0, "BACKUP_ERROR", "cannot write the backup cycle state '%s': %s",
                          tmp, strerror(errno));
    if (fd >= 0)
        close(fd);
    free(text);
    if (st == GS_OK && rename(tmp, c->state_path) != 0)
        st = gs_error_set(err, 0, "BACKUP_ERROR", "cannot rename '%s' to '%s': %s", tmp,
                          c->state_path, strerror(errno));
    if (st != GS_OK)
        unlink(tmp);
    return st;
}

/* Load the state a previous run left (0 when there is none or it is not readable). */
static int load_state(gs_backup_cycle *c)
{
    json_error_t je;
    json_t *j = json_load_file(c->state_path, 0, &je);
    if (!j)
        return 0;
    cycle_state s;
    memset(&s, 0, sizeof s);
    const char *name = json_string_value(json_object_get(j, "chainName"));
    const char *id = json_string_value(json_object_get(j, "chainId"));
    json_int_t started, head, records;
    int closed;
    int ok = name && id && strcmp(name, c->chain_name) == 0 && strlen(id) < sizeof s.chain_id &&
             json_unpack((json_t *)j, "{sIsIsIsb}", "chainStartedAt", &started, "headIndex", &head,
                         "records", &records, "closedCleanly", &closed) == 0 &&
             records >= 1;
    if (ok) {
        snprintf(s.chain_id, sizeof s.chain_id, "%s", id);
        s.chain_started_at = started;
        s.head_index = head;
        s.records = records;
        s.closed_cleanly = closed;
        const json_t *cur = json_object_get(j, "cursor");
        if (json_is_object(cur))
            ok = s.has_cursor = cursor_from(cur, &s.cursor);
        const json_t *p = json_object_get(j, "pending");
        if (ok && json_is_object(p)) {
            pending_capture *pc = &s.pending;
            const char *pn = json_string_value(json_object_get(p, "name"));
            const char *rid = json_string_value(json_object_get(p, "runId"));
            json_int_t seq, sa, ca, cm, fc, bl, ps, ff;
            ok = pn && rid && strlen(pn) < sizeof pc->name && strlen(rid) < sizeof pc->run_id &&
                 json_unpack((json_t *)p, "{sIsIsIsIsIsIsIsI}", "sequence", &seq, "startedAt", &sa,
                             "capturedAt", &ca, "copyMs", &cm, "frameCount", &fc, "byteLength", &bl,
                             "pageSize", &ps, "firstFrame", &ff) == 0 &&
                 cursor_from(json_object_get(p, "cursor"), &pc->cursor) && seq >= 1 && ff >= 1;
            if (ok) {
                snprintf(pc->name, sizeof pc->name, "%s", pn);
                snprintf(pc->run_id, sizeof pc->run_id, "%s", rid);
                pc->sequence = seq;
                pc->started_at = sa;
                pc->captured_at = ca;
                pc->copy_ms = cm;
                pc->frame_count = fc;
                pc->byte_length = bl;
                pc->page_size = ps;
                pc->position.log_sequence = pc->cursor.log_sequence;
                pc->position.salt1 = pc->cursor.salt1;
                pc->position.salt2 = pc->cursor.salt2;
                pc->position.first_frame = ff;
                pc->position.last_frame = pc->cursor.last_frame;
                s.has_pending = 1;
            }
        }
    }
    json_decref(j);
    if (!ok) {
        gs_log(GS_LOG_WARN, "backup",
               "database '%s': the backup cycle state '%s' is not one this version wrote; a "
               "fresh chain starts with a full copy",
               gs_db_id(c->db), c->state_path);
        return 0;
    }
    c->st = s;
    return 1;
}

static void staged_capture_path(const gs_backup_cycle *c, int64_t sequence, char *out, size_t cap)
{
    snprintf(out, cap, "%s/capture-%lld.wal", c->staging_dir, (long long)sequence);
}

/* Remove a staged file the destination now holds, in slices from its end. On a filesystem
 * mounted with online discard (ext4 -o discard, as on the machine of the README figures),
 * unlinking a large file discards all its blocks at once: a GiB keeps the disk busy for about
 * 300 ms, and an fsync the served database makes meanwhile (every commit at
 * synchronous=FULL) waits behind all of it (74-94 ms measured there). Truncating 16 MiB at a
 * time takes as long in total but lets those fsyncs in between (10-14 ms). */
#define RELEASE_SLICE_BYTES ((off_t)16 << 20)

static void release_staged(const char *path)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    struct stat sb;
    if (fd >= 0 && fstat(fd, &sb) == 0) {
        for (off_t size = sb.st_size; size > 0;) {
            size = size > RELEASE_SLICE_BYTES ? size - RELEASE_SLICE_BYTES : 0;
            if (ftruncate(fd, size) != 0)
                break; /* the unlink below still removes it */
        }
    }
    if (fd >= 0)
        close(fd);
    unlink(path);
}

/* Drop the chain: the staged capture goes with it. The state file is rewritten by the next
 * chain (or removed by the caller). */
static void discard_state(gs_backup_cycle *c)
{
    if (c->has_state && c->st.has_pending) {
        char p[PATH_MAX];
        staged_capture_path(c, c->st.pending.sequence, p, sizeof p);
        unlink(p);
    }
    pthread_mutex_lock(&c->mu);
    c->has_state = 0;
    pthread_mutex_unlock(&c->mu);
    c->verified = 0;
}

void gs_backup_discard_staged(const char *staging_dir)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", staging_dir, STATE_FILE);
    unlink(p);
    DIR *d = opendir(staging_dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        int capture = n > 12 && strncmp(e->d_name, "capture-", 8) == 0 &&
                      strcmp(e->d_name + n - 4, ".wal") == 0;
        int copy = (n > 8 && strncmp(e->d_name, "full-", 5) == 0 &&
                    strcmp(e->d_name + n - 3, ".db") == 0) ||
                   strncmp(e->d_name, ".full-", 6) == 0; /* a copy cut short by a crash */
        if (capture || copy) {
            snprintf(p, sizeof p, "%s/%s", staging_dir, e->d_name);
            unlink(p);
        }
    }
    closedir(d);
}

/* ---- capture and checkpoint (on the writer) ---- */

/* The writer's configured busy timeout, set back after a checkpoint that must not wait. */
static int busy_ms(const gs_backup_cycle *c)
{
    return c->db->opts.busy_timeout_ms > 0 ? c->db->opts.busy_timeout_ms : 0;
}

/* Stage the frames written since the previous capture, then checkpoint on conn. Runs with the
 * writer held: from a turn through a writer call, or from the close hook. */
static gs_status capture_and_checkpoint(gs_backup_cycle *c, sqlite3 *conn, gs_error *err)
{
    cycle_state *s = &c->st;
    int64_t started = gs_backup_now_ms();
    int64_t sequence = s->records;
    char staged[PATH_MAX];
    staged_capture_path(c, sequence, staged, sizeof staged);
    gs_wal_capture cap;
    if (gs_wal_capture_frames(c->wal_path, s->has_cursor ? &s->cursor : NULL, s->closed_cleanly,
                              staged, &cap, err) != GS_OK)
        return GS_ERROR; /* no checkpoint behind a failed capture */
    if (cap.captured) {
        pending_capture *p = &s->pending;
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "%s-%s-%06lld.wal", c->name_prefix, s->chain_id,
                 (long long)sequence);
        gs_backup_random_hex(p->run_id, 8);
        p->sequence = sequence;
        p->position.log_sequence = cap.log_sequence;
        p->position.salt1 = cap.salt1;
        p->position.salt2 = cap.salt2;
        p->position.first_frame = cap.first_frame;
        p->position.last_frame = cap.last_frame;
        p->cursor = cap.cursor;
        p->started_at = started;
        p->captured_at = gs_backup_now_ms();
        p->copy_ms = p->captured_at - started;
        p->frame_count = (int64_t)(cap.last_frame - cap.first_frame + 1);
        p->byte_length = cap.byte_length;
        p->page_size = cap.page_size;
        s->has_pending = 1;
        if (save_state(c, err) != GS_OK) {
            s->has_pending = 0;
            unlink(staged);
            return GS_ERROR;
        }
    }
    int emptied = 0;
    if (gs_wal_checkpoint(conn, busy_ms(c), &emptied, err) != GS_OK)
        return GS_ERROR; /* the capture stays staged; the log keeps its frames */
    if (cap.captured)
        s->pending.cursor.checkpointed = emptied;
    else if (s->has_cursor)
        s->cursor.checkpointed = emptied;
    s->closed_cleanly = 0;
    return save_state(c, err);
}

typedef struct writer_call {
    gs_backup_cycle *c;
    int checkpoint_only;
    int ran;
    gs_status st;
    gs_error err;
} writer_call;

static gs_status writer_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    (void)err;
    writer_call *w = user;
    gs_error_init(&w->err);
    w->ran = 1;
    if (w->checkpoint_only) {
        int emptied = 0;
        w->st = gs_wal_checkpoint(gs_conn_db(conn), busy_ms(w->c), &emptied, &w->err);
    } else {
        w->st = capture_and_checkpoint(w->c, gs_conn_db(conn), &w->err);
    }
    return GS_OK; /* the outcome travels in w: a late answer (WRITER_WORKER_TIMEOUT) keeps it */
}

/* Run the capture (or a bare checkpoint) on the writer, retrying while its queue is full. */
static gs_status on_writer(gs_backup_cycle *c, int checkpoint_only, gs_error *err)
{
    int64_t until = mono_ns() + c->cfg.stall_timeout_ms * 1000000;
    for (;;) {
        writer_call w = {.c = c, .checkpoint_only = checkpoint_only};
        gs_error e;
        gs_error_init(&e);
        gs_status rc = gs_cdc_writer_call_sync(c->db, writer_fn, &w, &e);
        if (w.ran) {
            if (w.st != GS_OK)
                gs_error_copy(err, &w.err);
            return w.st;
        }
        if (rc == GS_OK)
            return GS_OK;
        if (strcmp(e.code, "WRITE_OVERLOADED") == 0 && mono_ns() < until &&
            !__atomic_load_n(&c->cancel, __ATOMIC_ACQUIRE)) {
            struct timespec ts = {0, 20 * 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        gs_error_copy(err, &e);
        gs_error_prefix(err, "the backup capture could not run on the writer");
        return GS_ERROR;
    }
}

/* ---- sending ---- */

typedef struct send_ctx {
    gs_backup_cycle *c;
    const char *run_id;
    const char *phase;
    int64_t total, remaining;
    int restarts;
} send_ctx;

static void on_send(void *user, int64_t pieces, int64_t bytes)
{
    send_ctx *s = user;
    set_progress(s->c, s->run_id, s->phase, s->total, s->remaining, s->restarts, pieces, bytes);
}

/* Send the capture a previous step staged and record it as the chain's next piece. */
static gs_status send_pending(gs_backup_cycle *c, gs_error *err)
{
    cycle_state *s = &c->st;
    if (!c->has_state || !s->has_pending || c->send_refused)
        return GS_OK;
    pending_capture *p = &s->pending;
    char staged[PATH_MAX];
    staged_capture_path(c, p->sequence, staged, sizeof staged);
    if (access(staged, R_OK) != 0)
        return gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                            "the frames staged for change piece %lld of chain '%s' are no longer "
                            "in '%s', so the writes they carried are in no backup; leave the "
                            "staging folder to gatestream (a fresh chain starts with a full "
                            "copy)",
                            (long long)p->sequence, s->chain_id, staged);
    int64_t t0 = gs_backup_now_ms();
    send_ctx sc = {.c = c, .run_id = p->run_id, .phase = "transfer", .total = p->frame_count};
    int64_t pieces = 0, bytes = 0;
    char fp[65];
    if (gs_stored_send(c->dest, staged, p->name, c->cfg.piece_bytes, c->cfg.fingerprint, &c->cancel,
                       on_send, &sc, &pieces, &bytes, fp, err) != GS_OK) {
        c->send_refused = 1;
        return GS_ERROR;
    }
    gs_chain_record r;
    memset(&r, 0, sizeof r);
    r.kind = GS_CHAIN_CHANGE;
    r.chain_id = s->chain_id;
    r.name = p->name;
    r.run_id = p->run_id;
    r.sequence = p->sequence;
    r.position = p->position;
    r.captured_at = p->captured_at;
    r.frame_count = p->frame_count;
    r.piece_count = pieces;
    r.piece_bytes = c->cfg.piece_bytes;
    r.bytes_written = bytes;
    r.checkpointed = p->cursor.checkpointed;
    r.fingerprint = fp[0] ? fp : NULL;
    if (gs_chain_append_record(c->dest, c->chain_name, &r, p->sequence, err) != GS_OK) {
        c->send_refused = 1;
        return GS_ERROR;
    }
    int64_t done = gs_backup_now_ms();
    run_report rr = {.run_id = p->run_id,
                     .kind = "change",
                     .chain_id = s->chain_id,
                     .name = p->name,
                     .started_at = p->started_at,
                     .finished_at = done,
                     .copy_ms = p->copy_ms,
                     .transfer_ms = done - t0,
                     .page_count = p->frame_count,
                     .page_size = p->page_size,
                     .bytes_written = bytes,
                     .piece_count = pieces,
                     .piece_bytes = c->cfg.piece_bytes,
                     .position = &p->position,
                     .fingerprint = fp};
    record_run(c, &rr);
    s->records = p->sequence + 1;
    s->cursor = p->cursor;
    s->has_cursor = 1;
    s->has_pending = 0;
    gs_status st = save_state(c, err);
    release_staged(staged);
    return st;
}

/* ---- a fresh chain ---- */

typedef struct copy_ctx {
    gs_backup_cycle *c;
    const char *run_id;
} copy_ctx;

static void on_copy(void *user, const gs_backup_progress *p)
{
    copy_ctx *x = user;
    set_progress(x->c, x->run_id, "copy", p->total_pages, p->remaining_pages, p->restarts, 0, 0);
}

static gs_status replace_chain(gs_backup_cycle *c, gs_error *err)
{
    char previous[33] = "";
    if (c->has_state)
        snprintf(previous, sizeof previous, "%s", c->st.chain_id);
    discard_state(c);
    cycle_state ns;
    memset(&ns, 0, sizeof ns);
    gs_backup_random_hex(ns.chain_id, 8);
    ns.chain_started_at = gs_backup_now_ms();
    char run_id[17];
    gs_backup_random_hex(run_id, 8);
    char name[NAME_CAP];
    snprintf(name, sizeof name, "%s-%s-full.db", c->name_prefix, ns.chain_id);
    char staged[PATH_MAX];
    snprintf(staged, sizeof staged, "%s/full-%s.db", c->staging_dir, ns.chain_id);
    unlink(staged);

    gs_backup_options o;
    gs_backup_options_default(&o);
    o.pages_per_step = c->cfg.pages_per_step;
    o.restart_limit = c->cfg.restart_limit;
    o.no_progress_step_limit = c->cfg.no_progress_step_limit;
    o.stall_timeout_ms = c->cfg.stall_timeout_ms;
    copy_ctx cc = {.c = c, .run_id = run_id};
    o.on_progress = on_copy;
    o.progress_user = &cc;
    o.cancel = &c->cancel;
    set_progress(c, run_id, "copy", 0, 0, 0, 0, 0);
    int64_t started = gs_backup_now_ms();
    gs_backup_result res;
    memset(&res, 0, sizeof res);
    if (gs_db_backup_to_path(c->db, staged, &o, &res, err) != GS_OK)
        return GS_ERROR;
    int64_t copied = gs_backup_now_ms();
    send_ctx sc = {.c = c,
                   .run_id = run_id,
                   .phase = "transfer",
                   .total = res.pages,
                   .restarts = res.restarts};
    int64_t pieces = 0, bytes = 0;
    char fp[65];
    gs_status st = gs_stored_send(c->dest, staged, name, c->cfg.piece_bytes, c->cfg.fingerprint,
                                  &c->cancel, on_send, &sc, &pieces, &bytes, fp, err);
    release_staged(staged);
    if (st != GS_OK)
        return GS_ERROR;
    int64_t finished = gs_backup_now_ms();
    gs_chain_record base;
    memset(&base, 0, sizeof base);
    base.kind = GS_CHAIN_FULL;
    base.chain_id = ns.chain_id;
    base.name = name;
    base.run_id = run_id;
    base.finished_at = finished;
    base.piece_count = pieces;
    base.piece_bytes = c->cfg.piece_bytes;
    base.bytes_written = bytes;
    base.fingerprint = fp[0] ? fp : NULL;
    /* the full copy's record first, so no listing shows a chain without its copy */
    if (gs_chain_append_record(c->dest, c->chain_name, &base, 0, err) != GS_OK ||
        gs_chain_append_head(c->dest, c->chain_name, ns.chain_id, ns.chain_started_at,
                             previous[0] ? previous : NULL, &ns.head_index, err) != GS_OK)
        return GS_ERROR;
    ns.records = 1;
    pthread_mutex_lock(&c->mu);
    c->st = ns;
    c->has_state = 1;
    pthread_mutex_unlock(&c->mu);
    c->verified = 0;
    c->captured = 1;
    if (save_state(c, err) != GS_OK)
        return GS_ERROR;
    run_report rr = {.run_id = run_id,
                     .kind = "full",
                     .chain_id = ns.chain_id,
                     .name = name,
                     .started_at = started,
                     .finished_at = finished,
                     .copy_ms = copied - started,
                     .transfer_ms = finished - copied,
                     .page_count = res.pages,
                     .page_size = res.pages ? res.bytes / res.pages : 0,
                     .bytes_written = bytes,
                     .piece_count = pieces,
                     .piece_bytes = c->cfg.piece_bytes,
                     .restarts = res.restarts,
                     .fingerprint = fp};
    record_run(c, &rr);
    return GS_OK;
}

/* ---- one turn ---- */

static int starts_fresh_chain(const gs_error *e)
{
    return strcmp(e->code, "BACKUP_LOG_REWOUND") == 0 ||
           strcmp(e->code, "BACKUP_CHAIN_BROKEN") == 0;
}

/* The list of chains must still name ours before anything is appended to it. */
static gs_status verify_chain(gs_backup_cycle *c, gs_error *err)
{
    if (c->verified || !c->has_state)
        return GS_OK;
    int listed = 0;
    if (gs_chain_is_listed(c->dest, c->chain_name, c->st.chain_id, c->st.head_index, &listed,
                           err) != GS_OK)
        return GS_ERROR;
    if (listed) {
        c->verified = 1;
        return GS_OK;
    }
    gs_error e;
    gs_error_init(&e);
    gs_error_set(&e, 0, "BACKUP_CHAIN_BROKEN",
                 "the list of chains in '%s' no longer names chain '%s', so no restore can reach "
                 "what that chain captured of database '%s'; a fresh chain starts with a full "
                 "copy",
                 c->chain_name, c->st.chain_id, gs_db_id(c->db));
    discard_state(c);
    report_error(c, &e);
    return GS_OK;
}

static gs_status turn_body(gs_backup_cycle *c, gs_error *err)
{
    if (verify_chain(c, err) != GS_OK)
        return GS_ERROR;
    if (!c->has_state)
        return replace_chain(c, err);
    if (send_pending(c, err) != GS_OK)
        return GS_ERROR;
    if (gs_backup_now_ms() - c->st.chain_started_at >= c->cfg.full_copy_interval_ms)
        return replace_chain(c, err);
    if (on_writer(c, 0, err) != GS_OK)
        return GS_ERROR;
    c->captured = 1;
    return send_pending(c, err);
}

/* A log past max_uncaptured_log_bytes after a turn that captured nothing: send what is staged
 * if the destination takes it, drop the chain, empty the log, report the loss. */
static void release_log_past_limit(gs_backup_cycle *c)
{
    int64_t max = c->cfg.max_uncaptured_log_bytes;
    if (max <= 0 || __atomic_load_n(&c->cancel, __ATOMIC_ACQUIRE))
        return;
    int64_t bytes = gs_wal_file_bytes(gs_db_path(c->db));
    if (bytes <= max)
        return;
    gs_error e;
    gs_error_init(&e);
    if (c->has_state && c->st.has_pending) {
        c->send_refused = 0;
        if (send_pending(c, &e) != GS_OK)
            report_error(c, &e);
    }
    discard_state(c);
    unlink(c->state_path);
    gs_error_init(&e);
    if (on_writer(c, 1, &e) != GS_OK) {
        report_error(c, &e);
        return;
    }
    gs_error_set(&e, 0, "BACKUP_CHAIN_BROKEN",
                 "the write-ahead log of database '%s' held %lld bytes no backup holds, past "
                 "max_uncaptured_log_bytes (%lld); it was emptied to keep the database "
                 "writable, so those writes are in no backup and the next turn starts a fresh "
                 "chain with a full copy",
                 gs_db_id(c->db), (long long)bytes, (long long)max);
    report_error(c, &e);
}

static gs_status run_turn(gs_backup_cycle *c, gs_error *err)
{
    pthread_mutex_lock(&c->mu);
    c->running = 1;
    c->has_progress = 0;
    pthread_mutex_unlock(&c->mu);
    c->captured = 0;
    c->send_refused = 0;
    gs_status st = turn_body(c, err);
    if (st != GS_OK && starts_fresh_chain(err) && !__atomic_load_n(&c->cancel, __ATOMIC_ACQUIRE)) {
        report_error(c, err);
        gs_error e;
        gs_error_init(&e);
        if (replace_chain(c, &e) != GS_OK)
            gs_error_copy(err, &e);
    }
    if (st != GS_OK) {
        report_error(c, err);
        pthread_mutex_lock(&c->mu);
        c->metrics.failures++;
        pthread_mutex_unlock(&c->mu);
    }
    if (!c->captured)
        release_log_past_limit(c);
    pthread_mutex_lock(&c->mu);
    c->running = 0;
    c->has_progress = 0;
    pthread_mutex_unlock(&c->mu);
    return st;
}

/* ---- the scheduler ---- */

static void *scheduler_main(void *arg)
{
    gs_backup_cycle *c = arg;
    int64_t interval_ns = c->cfg.interval_ms * 1000000;
    pthread_setname_np(pthread_self(), "gs-backup");
    /* Everything this thread does is backup work: driving the copy (its steps run on the
     * writer, at the writer's priority), syncing the copy, reading and fingerprinting pieces.
     * In the background, the writer and the transports take a core before it does. */
    gs_error pe;
    gs_error_init(&pe);
    if (gs_backup_thread_background(&pe) != GS_OK)
        gs_log(GS_LOG_WARN, "backup", "database '%s': %s", gs_db_id(c->db), pe.message);
    pthread_mutex_lock(&c->mu);
    c->queued = 1; /* the first turn runs at once (a fresh chain, or frames written while down) */
    c->next_due_ns = mono_ns() + interval_ns;
    for (;;) {
        int64_t now = mono_ns();
        int due = now >= c->next_due_ns;
        int grown = 0;
        if (!c->stop && !c->queued && !due && c->cfg.max_uncaptured_log_bytes > 0) {
            pthread_mutex_unlock(&c->mu);
            grown = gs_wal_file_bytes(gs_db_path(c->db)) > c->cfg.max_uncaptured_log_bytes;
            pthread_mutex_lock(&c->mu);
        }
        if (c->stop)
            break;
        if (!c->queued && !due && !grown) {
            int64_t wake = c->next_due_ns;
            if (c->cfg.max_uncaptured_log_bytes > 0 && now + LOG_WATCH_MS * 1000000LL < wake)
                wake = now + LOG_WATCH_MS * 1000000LL;
            struct timespec ts = {.tv_sec = wake / 1000000000, .tv_nsec = wake % 1000000000};
            pthread_cond_timedwait(&c->cond, &c->mu, &ts);
            continue;
        }
        c->queued = 0;
        uint64_t turn = ++c->started;
        if (due)
            c->next_due_ns = now + interval_ns;
        pthread_mutex_unlock(&c->mu);

        gs_error e;
        gs_error_init(&e);
        gs_status st = run_turn(c, &e);

        pthread_mutex_lock(&c->mu);
        c->finished = turn;
        c->outcome_turn = turn;
        gs_error_init(&c->outcome);
        if (st != GS_OK)
            gs_error_copy(&c->outcome, &e);
        pthread_cond_broadcast(&c->cond);
        now = mono_ns();
        if (now >= c->next_due_ns && !c->stop) {
            /* scheduled turns fell due while this one ran: dropped, and said so */
            while (c->next_due_ns <= now)
                c->next_due_ns += interval_ns;
            pthread_mutex_unlock(&c->mu);
            record_skip(c, "previous-run-active",
                        "a scheduled backup turn fell due while the previous turn was still "
                        "running; it was skipped");
            pthread_mutex_lock(&c->mu);
        }
    }
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

gs_status gs_backup_cycle_trigger(gs_backup_cycle *c, gs_error *err)
{
    pthread_mutex_lock(&c->mu);
    if (c->stop) {
        pthread_mutex_unlock(&c->mu);
        return gs_error_set(err, 0, "DATABASE_CLOSED", "database '%s' is closing", gs_db_id(c->db));
    }
    c->queued = 1;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    return GS_OK;
}

gs_status gs_backup_cycle_run_once(gs_backup_cycle *c, gs_error *err)
{
    pthread_mutex_lock(&c->mu);
    if (c->stop) {
        pthread_mutex_unlock(&c->mu);
        return gs_error_set(err, 0, "DATABASE_CLOSED", "database '%s' is closing", gs_db_id(c->db));
    }
    c->queued = 1;
    uint64_t target = c->started + 1; /* the queued turn is the next to start */
    pthread_cond_broadcast(&c->cond);
    while (c->finished < target && !c->stop)
        pthread_cond_wait(&c->cond, &c->mu);
    gs_status st = GS_OK;
    if (c->finished < target)
        st = gs_error_set(err, 0, "DATABASE_CLOSED", "database '%s' closed before the turn ran",
                          gs_db_id(c->db));
    else if (c->outcome_turn == target && c->outcome.code[0])
        st = (gs_error_copy(err, &c->outcome), GS_ERROR);
    pthread_mutex_unlock(&c->mu);
    return st;
}

/* ---- queries ---- */

/* A handle of its own, so a query never queues behind the cycle's own destination calls. */
static gs_status query_dest(gs_backup_cycle *c, gs_backup_dest **d, gs_error *err)
{
    return gs_backup_dest_new(c->cfg.vt, c->cfg.instance, c->cfg.destination_timeout_ms, d, err);
}

gs_status gs_backup_cycle_chains(gs_backup_cycle *c, json_t **out, gs_error *err)
{
    *out = NULL;
    gs_backup_dest *d;
    if (query_dest(c, &d, err) != GS_OK)
        return GS_ERROR;
    gs_chain_list l;
    gs_status st = gs_chain_read_all(d, c->chain_name, &l, err);
    gs_backup_dest_free(d);
    if (st != GS_OK)
        return GS_ERROR;
    *out = gs_chain_list_to_json(&l);
    gs_chain_list_free(&l);
    return *out ? GS_OK : gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
}

gs_status gs_backup_cycle_verify(gs_backup_cycle *c, const char *name, json_t **out, gs_error *err)
{
    *out = NULL;
    gs_backup_dest *d;
    if (query_dest(c, &d, err) != GS_OK)
        return GS_ERROR;
    gs_chain_list l;
    gs_status st = gs_chain_read_all(d, c->chain_name, &l, err);
    if (st == GS_OK) {
        st = gs_chain_verify(d, &l, name, out, err);
        gs_chain_list_free(&l);
    }
    gs_backup_dest_free(d);
    return st;
}

gs_status gs_backup_cycle_safe_to_delete(gs_backup_cycle *c, int has_restorable_from,
                                         int64_t restorable_from, json_t **out, gs_error *err)
{
    *out = NULL;
    gs_backup_dest *d;
    if (query_dest(c, &d, err) != GS_OK)
        return GS_ERROR;
    gs_chain_list l;
    gs_status st = gs_chain_read_all(d, c->chain_name, &l, err);
    gs_backup_dest_free(d);
    if (st != GS_OK)
        return GS_ERROR;
    json_t *records = gs_chain_safe_to_delete(&l, has_restorable_from, restorable_from);
    gs_chain_list_free(&l);
    *out = records ? json_pack("{so}", "records", records) : NULL;
    return *out ? GS_OK : gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
}

gs_status gs_backup_cycle_location(gs_backup_cycle *c, gs_backup_location *out, gs_error *err)
{
    memset(out, 0, sizeof *out);
    out->vt = c->cfg.vt;
    out->instance = c->cfg.instance;
    out->destination_timeout_ms = c->cfg.destination_timeout_ms;
    out->chain_name = gs_strdup(c->chain_name);
    out->staging_dir = gs_strdup(c->staging_dir);
    if (!out->chain_name || !out->staging_dir) {
        gs_backup_location_clear(out);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    return GS_OK;
}

void gs_backup_location_clear(gs_backup_location *l)
{
    if (!l)
        return;
    gs_free(l->chain_name);
    gs_free(l->staging_dir);
    memset(l, 0, sizeof *l);
}

/* ---- lifecycle ---- */

void gs_backup_cycle_free(gs_backup_cycle *c)
{
    if (!c)
        return;
    if (c->thread_started) { /* close_begin normally joined it */
        pthread_mutex_lock(&c->mu);
        c->stop = 1;
        __atomic_store_n(&c->cancel, 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->thread, NULL);
        c->thread_started = 0;
    }
    gs_backup_dest_free(c->dest);
    json_decref(c->last_run);
    json_decref(c->last_skip);
    gs_free(c->destination_name);
    gs_free(c->chain_name);
    gs_free(c->name_prefix);
    gs_free(c->staging_dir);
    gs_free(c->state_path);
    gs_free(c->wal_path);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cond);
    gs_free(c);
}

static char *join2(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 1;
    char *s = gs_malloc(n);
    if (s)
        snprintf(s, n, "%s%s", a, b);
    return s;
}

gs_status gs_backup_cycle_start(gs_database *db, const gs_backup_cycle_config *cfg, gs_error *err)
{
    if (db->memory)
        return gs_error_set(err, 0, "BACKUP_UNSUPPORTED",
                            "database '%s' is in memory: it has no write-ahead log to capture",
                            db->id);
    if (db->opts.read_only)
        return gs_error_set(err, 0, "BACKUP_UNSUPPORTED",
                            "database '%s' is read-only: only the node that writes it can back "
                            "it up; remove its backups section",
                            db->id);
    if (!cfg || !cfg->vt)
        return gs_error_set(err, 0, "BACKUP_ERROR", "database '%s': no backup destination", db->id);
    gs_backup_cycle *c = gs_calloc(1, sizeof *c);
    if (!c)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    c->db = db;
    c->cfg = *cfg;
    gs_backup_cycle_config def;
    gs_backup_cycle_config_default(&def);
    if (c->cfg.interval_ms <= 0)
        c->cfg.interval_ms = def.interval_ms;
    if (c->cfg.full_copy_interval_ms < 0)
        c->cfg.full_copy_interval_ms = def.full_copy_interval_ms;
    if (c->cfg.piece_bytes <= 0)
        c->cfg.piece_bytes = def.piece_bytes;
    if (c->cfg.pages_per_step <= 0)
        c->cfg.pages_per_step = def.pages_per_step;
    if (c->cfg.restart_limit <= 0)
        c->cfg.restart_limit = def.restart_limit;
    if (c->cfg.no_progress_step_limit <= 0)
        c->cfg.no_progress_step_limit = def.no_progress_step_limit;
    if (c->cfg.stall_timeout_ms <= 0)
        c->cfg.stall_timeout_ms = def.stall_timeout_ms;
    if (c->cfg.destination_timeout_ms <= 0)
        c->cfg.destination_timeout_ms = def.destination_timeout_ms;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &a);
    pthread_condattr_destroy(&a);
    gs_error_init(&c->last_error);
    gs_error_init(&c->outcome);
    c->destination_name = gs_strdup(cfg->destination_name ? cfg->destination_name : "");
    c->chain_name = gs_strdup(cfg->chain_name ? cfg->chain_name : GS_BACKUP_DEFAULT_CHAIN_NAME);
    c->name_prefix = gs_strdup(cfg->name_prefix ? cfg->name_prefix : GS_BACKUP_DEFAULT_NAME_PREFIX);
    c->staging_dir = cfg->staging_dir ? gs_strdup(cfg->staging_dir) : join2(db->path, "-backup");
    c->wal_path = join2(db->path, "-wal");
    c->cfg.destination_name = c->cfg.chain_name = c->cfg.name_prefix = c->cfg.staging_dir = NULL;
    if (!c->destination_name || !c->chain_name || !c->name_prefix || !c->staging_dir ||
        !c->wal_path || !(c->state_path = join2(c->staging_dir, "/" STATE_FILE))) {
        gs_backup_cycle_free(c);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    if (!c->chain_name[0] || strchr(c->chain_name, '/') || !c->name_prefix[0] ||
        strchr(c->name_prefix, '/') || strlen(c->name_prefix) > 200) {
        gs_backup_cycle_free(c);
        return gs_error_set(err, 0, "BACKUP_ERROR",
                            "database '%s': chain_name and name_prefix must be non-empty names "
                            "without '/' (name_prefix at most 200 bytes)",
                            db->id);
    }
    if (gs_backup_check_path(c->staging_dir, err) != GS_OK) {
        gs_error_prefix(err, "database '%s': backups.staging_dir", db->id);
        gs_backup_cycle_free(c);
        return GS_ERROR;
    }
    if (gs_mkdir_p(c->staging_dir) != 0) {
        gs_error_set(err, 0, "BACKUP_ERROR",
                     "database '%s': cannot create the backup staging folder '%s': %s", db->id,
                     c->staging_dir, strerror(errno));
        gs_backup_cycle_free(c);
        return GS_ERROR;
    }
    if (gs_backup_dest_new(c->cfg.vt, c->cfg.instance, c->cfg.destination_timeout_ms, &c->dest,
                           err) != GS_OK) {
        gs_backup_cycle_free(c);
        return GS_ERROR;
    }
    gs_backup_dest_set_background(c->dest); /* the pieces' writes yield to the writer too */
    c->has_state = load_state(c);
    if (pthread_create(&c->thread, NULL, scheduler_main, c) != 0) {
        gs_backup_cycle_free(c);
        return gs_error_set(err, 0, "BACKUP_ERROR", "cannot start the backup thread of '%s'",
                            db->id);
    }
    c->thread_started = 1;
    __atomic_store_n(&db->backup, c, __ATOMIC_RELEASE);
    return GS_OK;
}

void gs_backup_cycle_close_begin(gs_database *db)
{
    gs_backup_cycle *c = gs_db_backup_cycle(db);
    if (!c || !c->thread_started)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    __atomic_store_n(&c->cancel, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    c->thread_started = 0;
}

int gs_backup_cycle_writer_closing(gs_database *db, gs_conn *conn)
{
    gs_backup_cycle *c = gs_db_backup_cycle(db);
    if (!c || !c->has_state)
        return 0; /* no chain: the next open starts one with a full copy */
    sqlite3 *sdb = gs_conn_db(conn);
    gs_error e;
    gs_error_init(&e);
    if (c->st.has_pending) {
        /* the previous capture never reached the destination: keep the log for the next
         * open rather than capture over it */
        sqlite3_db_config(sdb, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
        return 1;
    }
    if (capture_and_checkpoint(c, sdb, &e) != GS_OK) {
        report_error(c, &e);
        sqlite3_db_config(sdb, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
        return 1;
    }
    /* every frame is staged: a fresh log on the next open continues the chain */
    c->st.closed_cleanly = 1;
    if (save_state(c, &e) != GS_OK)
        report_error(c, &e);
    return 1;
}

void gs_backup_cycle_close_end(gs_database *db)
{
    gs_backup_cycle *c = gs_db_backup_cycle(db);
    if (!c || !c->has_state || !c->st.has_pending)
        return;
    __atomic_store_n(&c->cancel, 0, __ATOMIC_RELEASE); /* this send is the close's own */
    c->send_refused = 0;
    gs_error e;
    gs_error_init(&e);
    if (send_pending(c, &e) != GS_OK) {
        report_error(c, &e);
        gs_log(GS_LOG_WARN, "backup",
               "database '%s': its last capture stays staged in '%s' and is sent when the "
               "database opens again",
               db->id, c->staging_dir);
    }
    __atomic_store_n(&c->cancel, 1, __ATOMIC_RELEASE);
}
