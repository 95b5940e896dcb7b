/*
 * Reading and writing write-ahead logs for the backup chain: see backup_wal.h.
 */
#include "backup_wal.h"

#include "../base/alloc.h"
#include "../base/error.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WAL_MAGIC_LE 0x377f0682u
#define WAL_MAGIC_BE 0x377f0683u
#define WAL_VERSION 3007000u
#define READ_CHUNK_BYTES (4u << 20)

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* SQLite's running log checksum over len bytes (a multiple of 8), continuing s. */
static void fold(const uint8_t *p, size_t len, int big_endian, uint32_t s[2])
{
    uint32_t a = s[0], b = s[1];
    for (size_t i = 0; i < len; i += 8) {
        uint32_t w0 = big_endian ? get_be32(p + i) : get_le32(p + i);
        uint32_t w1 = big_endian ? get_be32(p + i + 4) : get_le32(p + i + 4);
        a += w0 + b;
        b += w1 + a;
    }
    s[0] = a;
    s[1] = b;
}

typedef struct wal_header {
    uint32_t page_size, log_sequence, salt1, salt2;
    uint32_t checksum[2];
    int big_endian;
} wal_header;

/* 1 when the 32 bytes are a log header whose own checksum holds. */
static int parse_header(const uint8_t *h, wal_header *out)
{
    uint32_t magic = get_be32(h);
    if (magic != WAL_MAGIC_LE && magic != WAL_MAGIC_BE)
        return 0;
    out->big_endian = magic == WAL_MAGIC_BE;
    out->page_size = get_be32(h + 8);
    if (out->page_size < 512 || out->page_size > 65536 ||
        (out->page_size & (out->page_size - 1)) != 0)
        return 0;
    uint32_t s[2] = {0, 0};
    fold(h, 24, out->big_endian, s);
    if (s[0] != get_be32(h + 24) || s[1] != get_be32(h + 28))
        return 0;
    out->log_sequence = get_be32(h + 12);
    out->salt1 = get_be32(h + 16);
    out->salt2 = get_be32(h + 20);
    out->checksum[0] = s[0];
    out->checksum[1] = s[1];
    return 1;
}

static int read_full(int fd, void *buf, size_t len, off_t at, size_t *got)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, at + (off_t)done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    *got = done;
    return 0;
}

static int write_full(int fd, const void *buf, size_t len, off_t at)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(fd, (const uint8_t *)buf + done, len - done, at + (off_t)done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

int64_t gs_wal_file_bytes(const char *db_path)
{
    char p[PATH_MAX + 8];
    snprintf(p, sizeof p, "%s-wal", db_path);
    struct stat sb;
    return stat(p, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

static gs_status rewound(gs_error *err, const char *wal_path, const char *detail)
{
    return gs_error_set(err, 0, "BACKUP_LOG_REWOUND",
                        "the write-ahead log '%s' %s, so the writes it held before are in no "
                        "backup. Another connection checkpointed the log or the file was "
                        "replaced: route every write and checkpoint through gatestream; the "
                        "cycle starts a fresh chain with a full copy",
                        wal_path, detail);
}

gs_status gs_wal_capture_frames(const char *wal_path, const gs_wal_cursor *cursor,
                                int expect_new_log, const char *staged_path, gs_wal_capture *out,
                                gs_error *err)
{
    memset(out, 0, sizeof *out);
    int fd = open(wal_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT)
        return gs_error_set(err, 0, "BACKUP_ERROR", "cannot open the write-ahead log '%s': %s",
                            wal_path, strerror(errno));
    uint8_t hb[GS_WAL_HEADER_BYTES];
    wal_header h;
    int have = 0;
    struct stat sb;
    if (fd >= 0) {
        size_t got = 0;
        if (fstat(fd, &sb) != 0 || read_full(fd, hb, sizeof hb, 0, &got) != 0) {
            int e = errno;
            close(fd);
            return gs_error_set(err, 0, "BACKUP_ERROR", "cannot read the write-ahead log '%s': %s",
                                wal_path, strerror(e));
        }
        have = got == sizeof hb && parse_header(hb, &h);
    }
    int same = cursor && have && h.salt1 == cursor->salt1 && h.salt2 == cursor->salt2;
    int new_allowed = !cursor || cursor->checkpointed || expect_new_log;
    if (!same && !new_allowed) {
        char detail[200];
        if (have)
            snprintf(detail, sizeof detail,
                     "restarted at checkpoint sequence %u while the chain reaches frame %u of "
                     "sequence %u",
                     h.log_sequence, cursor->last_frame, cursor->log_sequence);
        else
            snprintf(detail, sizeof detail,
                     "holds no frames while the chain reaches frame %u of sequence %u",
                     cursor->last_frame, cursor->log_sequence);
        if (fd >= 0)
            close(fd);
        return rewound(err, wal_path, detail);
    }
    if (!have) {
        if (fd >= 0)
            close(fd);
        return GS_OK;
    }
    size_t frame_bytes = GS_WAL_FRAME_HEADER_BYTES + (size_t)h.page_size;
    uint32_t frames_in_file =
        sb.st_size > GS_WAL_HEADER_BYTES
            ? (uint32_t)(((uint64_t)sb.st_size - GS_WAL_HEADER_BYTES) / frame_bytes)
            : 0;
    uint32_t from = same ? cursor->last_frame : 0;
    uint32_t run[2] = {same ? cursor->checksum1 : h.checksum[0],
                       same ? cursor->checksum2 : h.checksum[1]};
    if (same && frames_in_file < from) {
        close(fd);
        char detail[160];
        snprintf(detail, sizeof detail, "now holds %u frames while the chain reaches frame %u",
                 frames_in_file, from);
        return rewound(err, wal_path, detail);
    }
    if (frames_in_file <= from) {
        close(fd);
        return GS_OK;
    }

    int sfd = open(staged_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (sfd < 0) {
        int e = errno;
        close(fd);
        return gs_error_set(err, 0, "BACKUP_ERROR", "cannot create the staged capture '%s': %s",
                            staged_path, strerror(e));
    }
    size_t per_chunk = READ_CHUNK_BYTES / frame_bytes;
    if (per_chunk == 0)
        per_chunk = 1;
    uint8_t *buf = gs_malloc(per_chunk * frame_bytes);
    gs_status st = GS_OK;
    if (!buf) {
        st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory staging a capture");
        goto out;
    }
    off_t staged_at = 0;
    if (from == 0) {
        if (write_full(sfd, hb, sizeof hb, 0) != 0) {
            st = gs_error_set(err, 0, "BACKUP_ERROR", "cannot write '%s': %s", staged_path,
                              strerror(errno));
            goto out;
        }
        staged_at = GS_WAL_HEADER_BYTES;
    }
    off_t first_staged = staged_at;
    uint32_t last_commit = from;
    uint32_t commit_sum[2] = {run[0], run[1]};
    uint32_t frame = from + 1;
    int stop = 0;
    while (!stop && frame <= frames_in_file) {
        size_t want = frames_in_file - frame + 1;
        if (want > per_chunk)
            want = per_chunk;
        size_t got = 0;
        off_t at = GS_WAL_HEADER_BYTES + (off_t)(frame - 1) * (off_t)frame_bytes;
        if (read_full(fd, buf, want * frame_bytes, at, &got) != 0) {
            st = gs_error_set(err, 0, "BACKUP_ERROR", "cannot read the write-ahead log '%s': %s",
                              wal_path, strerror(errno));
            goto out;
        }
        size_t readable = got / frame_bytes;
        if (readable == 0)
            break;
        size_t valid = 0;
        for (size_t i = 0; i < readable; i++) {
            const uint8_t *f = buf + i * frame_bytes;
            if (get_be32(f + 8) != h.salt1 || get_be32(f + 12) != h.salt2) {
                stop = 1;
                break;
            }
            uint32_t s[2] = {run[0], run[1]};
            fold(f, 8, h.big_endian, s);
            fold(f + GS_WAL_FRAME_HEADER_BYTES, h.page_size, h.big_endian, s);
            if (s[0] != get_be32(f + 16) || s[1] != get_be32(f + 20)) {
                stop = 1;
                break;
            }
            run[0] = s[0];
            run[1] = s[1];
            valid++;
            if (get_be32(f + 4) != 0) { /* a commit frame */
                last_commit = frame + (uint32_t)i;
                commit_sum[0] = s[0];
                commit_sum[1] = s[1];
            }
        }
        /* stage the valid frames; the tail past the last commit is cut off below */
        if (valid && write_full(sfd, buf, valid * frame_bytes, staged_at) != 0) {
            st = gs_error_set(err, 0, "BACKUP_ERROR", "cannot write '%s': %s", staged_path,
                              strerror(errno));
            goto out;
        }
        staged_at += (off_t)(valid * frame_bytes);
        frame += (uint32_t)valid;
        if (valid < readable)
            stop = 1;
        if (got < want * frame_bytes)
            break;
    }
    if (last_commit <= from) { /* nothing committed since the cursor */
        close(sfd);
        sfd = -1;
        unlink(staged_path);
        goto out;
    }
    off_t end = first_staged + (off_t)(last_commit - from) * (off_t)frame_bytes;
    if (ftruncate(sfd, end) != 0 || fsync(sfd) != 0) {
        st = gs_error_set(err, 0, "BACKUP_ERROR", "cannot sync the staged capture '%s': %s",
                          staged_path, strerror(errno));
        goto out;
    }
    out->captured = 1;
    out->log_sequence = h.log_sequence;
    out->salt1 = h.salt1;
    out->salt2 = h.salt2;
    out->first_frame = from + 1;
    out->last_frame = last_commit;
    out->page_size = h.page_size;
    out->byte_length = (int64_t)end;
    out->cursor.log_sequence = h.log_sequence;
    out->cursor.salt1 = h.salt1;
    out->cursor.salt2 = h.salt2;
    out->cursor.last_frame = last_commit;
    out->cursor.checksum1 = commit_sum[0];
    out->cursor.checksum2 = commit_sum[1];
    out->cursor.checkpointed = 0;
out:
    gs_free(buf);
    if (sfd >= 0) {
        close(sfd);
        if (st != GS_OK)
            unlink(staged_path);
    }
    close(fd);
    return st;
}

gs_status gs_wal_checkpoint(sqlite3 *db, int busy_timeout_ms, int *emptied, gs_error *err)
{
    int nlog = -1, nckpt = -1;
    *emptied = 0;
    if (busy_timeout_ms >= 0)
        sqlite3_busy_timeout(db, 0); /* best effort: never wait for a reader */
    int rc = sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_TRUNCATE, &nlog, &nckpt);
    if (busy_timeout_ms >= 0)
        sqlite3_busy_timeout(db, busy_timeout_ms);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
        return gs_error_set(err, 0, "BACKUP_ERROR", "the checkpoint after a capture failed: %s",
                            sqlite3_errmsg(db));
    /* every frame backfilled: whatever the next writer does to the log loses nothing */
    *emptied = nlog >= 0 && nckpt >= nlog;
    return GS_OK;
}

/* ---- the restore writer ---- */

struct gs_wal_writer {
    int fd;
    char *path;
    uint32_t page_size;
    size_t frame_bytes;
    uint32_t salt1, salt2;
    uint32_t sum[2];
    off_t at;
    uint32_t frames;
    uint32_t last_db_pages;
    uint8_t *work; /* one chunk of frames being stamped */
    size_t work_cap;
    size_t carry;  /* bytes of a split frame at the front of work */
    uint32_t skip; /* header bytes still to drop from the current piece */
    uint8_t hdr[GS_WAL_HEADER_BYTES];
    uint32_t hdr_have;
    gs_wal_expect expect;
    int has_expect;
};

void gs_backup_random_bytes(void *buf, size_t n)
{
    uint8_t *p = buf;
    size_t done = 0;
    while (done < n) {
        ssize_t k = getrandom(p + done, n - done, 0);
        if (k <= 0)
            break;
        done += (size_t)k;
    }
    if (done < n) { /* no entropy source: still distinct per call */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        static unsigned counter;
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
                     ((uint64_t)getpid() << 16) ^ __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
        for (; done < n; done++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            p[done] = (uint8_t)x;
        }
    }
}

gs_status gs_wal_writer_open(const char *wal_path, uint32_t page_size, uint32_t log_sequence,
                             gs_wal_writer **out, gs_error *err)
{
    *out = NULL;
    gs_wal_writer *w = gs_calloc(1, sizeof *w);
    if (!w || !(w->path = gs_strdup(wal_path))) {
        gs_free(w);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    w->page_size = page_size;
    w->frame_bytes = GS_WAL_FRAME_HEADER_BYTES + (size_t)page_size;
    size_t per = (1u << 20) / w->frame_bytes;
    w->work_cap = (per ? per : 1) * w->frame_bytes + w->frame_bytes;
    w->work = gs_malloc(w->work_cap);
    uint32_t salts[2];
    gs_backup_random_bytes(salts, sizeof salts);
    w->salt1 = salts[0];
    w->salt2 = salts[1];
    w->fd = open(wal_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (!w->work || w->fd < 0) {
        gs_status st = !w->work ? gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory")
                                : gs_error_set(err, 0, "BACKUP_ERROR", "cannot create '%s': %s",
                                               wal_path, strerror(errno));
        if (w->fd >= 0)
            close(w->fd);
        gs_free(w->work);
        gs_free(w->path);
        gs_free(w);
        return st;
    }
    uint8_t h[GS_WAL_HEADER_BYTES];
    put_be32(h, WAL_MAGIC_LE);
    put_be32(h + 4, WAL_VERSION);
    put_be32(h + 8, page_size);
    put_be32(h + 12, log_sequence);
    put_be32(h + 16, w->salt1);
    put_be32(h + 20, w->salt2);
    w->sum[0] = w->sum[1] = 0;
    fold(h, 24, 0, w->sum);
    put_be32(h + 24, w->sum[0]);
    put_be32(h + 28, w->sum[1]);
    if (write_full(w->fd, h, sizeof h, 0) != 0) {
        gs_error_set(err, 0, "BACKUP_ERROR", "cannot write '%s': %s", wal_path, strerror(errno));
        gs_wal_writer_abandon(w);
        return GS_ERROR;
    }
    w->at = GS_WAL_HEADER_BYTES;
    *out = w;
    return GS_OK;
}

gs_status gs_wal_writer_begin_piece(gs_wal_writer *w, uint32_t header_bytes,
                                    const gs_wal_expect *expect, gs_error *err)
{
    if (w->carry)
        return gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                            "the change piece before this one left %zu bytes of a frame "
                            "unwritten, so the chain is missing the rest of that frame",
                            w->carry);
    w->skip = header_bytes;
    w->hdr_have = 0;
    w->has_expect = expect != NULL;
    if (expect)
        w->expect = *expect;
    return GS_OK;
}

static gs_status check_piece_header(gs_wal_writer *w, gs_error *err)
{
    wal_header h;
    if (!parse_header(w->hdr, &h))
        return gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                            "the 32 bytes in front of a change piece's frames are no log header "
                            "SQLite wrote: the piece reached the destination damaged");
    if (!w->has_expect)
        return GS_OK;
    if (h.page_size != w->expect.page_size)
        return gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                            "a change piece holds %u-byte pages where the full copy has %u-byte "
                            "pages: its record describes a different database",
                            h.page_size, w->expect.page_size);
    if (h.log_sequence != w->expect.log_sequence || h.salt1 != w->expect.salt1 ||
        h.salt2 != w->expect.salt2)
        return gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                            "a change piece was captured from a log (sequence %u, salts %u/%u) "
                            "other than the one its record names (sequence %u, salts %u/%u)",
                            h.log_sequence, h.salt1, h.salt2, w->expect.log_sequence,
                            w->expect.salt1, w->expect.salt2);
    return GS_OK;
}

/* Stamp and write the whole frames at the front of work (n of them). */
static gs_status stamp_and_write(gs_wal_writer *w, size_t n, gs_error *err)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t *f = w->work + i * w->frame_bytes;
        put_be32(f + 8, w->salt1);
        put_be32(f + 12, w->salt2);
        fold(f, 8, 0, w->sum);
        fold(f + GS_WAL_FRAME_HEADER_BYTES, w->page_size, 0, w->sum);
        put_be32(f + 16, w->sum[0]);
        put_be32(f + 20, w->sum[1]);
        w->last_db_pages = get_be32(f + 4);
        w->frames++;
    }
    if (n && write_full(w->fd, w->work, n * w->frame_bytes, w->at) != 0)
        return gs_error_set(err, 0, "BACKUP_ERROR", "cannot write '%s': %s", w->path,
                            strerror(errno));
    w->at += (off_t)(n * w->frame_bytes);
    return GS_OK;
}

gs_status gs_wal_writer_add(gs_wal_writer *w, const uint8_t *bytes, size_t len, gs_error *err)
{
    while (len && w->skip) {
        size_t k = len < w->skip ? len : w->skip;
        memcpy(w->hdr + w->hdr_have, bytes, k);
        w->hdr_have += (uint32_t)k;
        w->skip -= (uint32_t)k;
        bytes += k;
        len -= k;
        if (!w->skip && w->hdr_have == GS_WAL_HEADER_BYTES && check_piece_header(w, err) != GS_OK)
            return GS_ERROR;
    }
    while (len) {
        size_t room = w->work_cap - w->carry;
        size_t k = len < room ? len : room;
        memcpy(w->work + w->carry, bytes, k);
        w->carry += k;
        bytes += k;
        len -= k;
        size_t whole = w->carry / w->frame_bytes;
        if (stamp_and_write(w, whole, err) != GS_OK)
            return GS_ERROR;
        size_t used = whole * w->frame_bytes;
        memmove(w->work, w->work + used, w->carry - used);
        w->carry -= used;
    }
    return GS_OK;
}

static void writer_close(gs_wal_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    gs_free(w->work);
    gs_free(w->path);
    gs_free(w);
}

gs_status gs_wal_writer_finish(gs_wal_writer *w, uint32_t *frames, uint32_t *db_pages,
                               gs_error *err)
{
    gs_status st = GS_OK;
    if (w->carry)
        st = gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                          "the change pieces end %zu bytes into a frame of %zu bytes, so the "
                          "chain is missing the rest of it",
                          w->carry, w->frame_bytes);
    else if (w->skip)
        st = gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                          "a change piece ended inside its log header");
    else if (w->frames && w->last_db_pages == 0)
        st = gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                          "the last frame of the change pieces commits no transaction, so "
                          "SQLite would replay none of them");
    else if (fsync(w->fd) != 0)
        st = gs_error_set(err, 0, "BACKUP_ERROR", "cannot sync '%s': %s", w->path, strerror(errno));
    *frames = w->frames;
    *db_pages = w->last_db_pages;
    writer_close(w);
    return st;
}

void gs_wal_writer_abandon(gs_wal_writer *w)
{
    if (w)
        writer_close(w);
}
