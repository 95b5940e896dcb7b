/*
 * Destination calls with a deadline: see backup_dest.h. A job is shared by the caller and the
 * worker; whichever lets go last frees it (the caller on an answer in time, the worker on a
 * job the caller abandoned at its deadline).
 */
#include "backup_dest.h"

#include "../base/alloc.h"
#include "../base/error.h"
#include "../base/log.h"
#include "backup_priority.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { OP_WRITE = 1, OP_CLAIM, OP_READ, OP_LIST };

typedef struct dest_job {
    struct dest_job *next;
    int op;
    char *name;
    uint64_t index;
    uint8_t *bytes; /* WRITE/CLAIM input (owned) */
    size_t len;
    /* outcome */
    gs_status st;
    gs_error err;
    int stored;
    uint8_t *out; /* READ */
    size_t out_len;
    gs_backup_piece *pieces; /* LIST */
    size_t count, cap;
    int list_oom;
    int done;
    int abandoned;
} dest_job;

struct gs_backup_dest {
    const gs_backup_destination_vtable *vt;
    void *instance;
    int64_t timeout_ms;
    pthread_mutex_t mu;
    pthread_cond_t work; /* the worker waits for jobs */
    pthread_cond_t done; /* callers wait for answers (CLOCK_MONOTONIC) */
    dest_job *head, *tail;
    int stop;
    int started;
    int background; /* the worker moves itself to the background (under mu) */
    int lowered;    /* it did (the worker's own) */
    pthread_t thread;
};

static void job_free(dest_job *j)
{
    if (!j)
        return;
    gs_free(j->name);
    gs_free(j->bytes);
    gs_free(j->out);
    gs_free(j->pieces);
    gs_free(j);
}

static void on_piece(void *user, uint64_t index, uint64_t byte_length)
{
    dest_job *j = user;
    if (j->list_oom)
        return;
    if (j->count == j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 16;
        gs_backup_piece *n = gs_realloc(j->pieces, cap * sizeof *n);
        if (!n) {
            j->list_oom = 1;
            return;
        }
        j->pieces = n;
        j->cap = cap;
    }
    j->pieces[j->count].index = index;
    j->pieces[j->count].byte_length = byte_length;
    j->count++;
}

static void run_job(gs_backup_dest *d, dest_job *j)
{
    gs_error_init(&j->err);
    switch (j->op) {
    case OP_WRITE:
        j->st = d->vt->write_piece(d->instance, j->name, j->index, j->bytes, j->len, &j->err);
        break;
    case OP_CLAIM:
        j->st = d->vt->write_piece_if_absent(d->instance, j->name, j->index, j->bytes, j->len,
                                             &j->stored, &j->err);
        break;
    case OP_READ:
        j->st = d->vt->read_piece(d->instance, j->name, j->index, &j->out, &j->out_len, &j->err);
        if (j->st != GS_OK && j->out) {
            gs_free(j->out);
            j->out = NULL;
        }
        break;
    case OP_LIST: j->st = d->vt->list_pieces(d->instance, j->name, on_piece, j, &j->err); break;
    }
    /* the piece bytes are not needed once the plugin returned */
    gs_free(j->bytes);
    j->bytes = NULL;
}

/* On the worker, with mu held: move to the background once the owner asked for it. */
static void maybe_lower(gs_backup_dest *d)
{
    if (!d->background || d->lowered)
        return;
    d->lowered = 1;
    pthread_mutex_unlock(&d->mu);
    pthread_setname_np(pthread_self(), "gs-backup-dest");
    gs_error e;
    gs_error_init(&e);
    if (gs_backup_thread_background(&e) != GS_OK)
        gs_log(GS_LOG_WARN, "backup", "the backup destination's thread: %s", e.message);
    pthread_mutex_lock(&d->mu);
}

static void *worker_main(void *arg)
{
    gs_backup_dest *d = arg;
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->head && !d->stop)
            pthread_cond_wait(&d->work, &d->mu);
        if (!d->head)
            break;
        maybe_lower(d); /* only this thread takes jobs off the list: d->head is still there */
        dest_job *j = d->head;
        d->head = j->next;
        if (!d->head)
            d->tail = NULL;
        if (j->abandoned) { /* nobody waits for it any more: do not start it */
            job_free(j);
            continue;
        }
        pthread_mutex_unlock(&d->mu);
        run_job(d, j);
        pthread_mutex_lock(&d->mu);
        if (j->abandoned) {
            job_free(j);
        } else {
            j->done = 1;
            pthread_cond_broadcast(&d->done);
        }
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

gs_status gs_backup_dest_new(const gs_backup_destination_vtable *vt, void *instance,
                             int64_t timeout_ms, gs_backup_dest **out, gs_error *err)
{
    *out = NULL;
    if (!vt || !vt->write_piece || !vt->read_piece || !vt->list_pieces)
        return gs_error_set(err, 0, "BACKUP_DESTINATION_ERROR",
                            "the backup destination lacks write_piece, read_piece or "
                            "list_pieces");
    gs_backup_dest *d = gs_calloc(1, sizeof *d);
    if (!d)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    d->vt = vt;
    d->instance = instance;
    d->timeout_ms = timeout_ms;
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->work, NULL);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&d->done, &a);
    pthread_condattr_destroy(&a);
    *out = d;
    return GS_OK;
}

void gs_backup_dest_free(gs_backup_dest *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->mu);
    d->stop = 1;
    pthread_cond_broadcast(&d->work);
    int started = d->started;
    pthread_mutex_unlock(&d->mu);
    if (started)
        pthread_join(d->thread, NULL);
    while (d->head) { /* abandoned jobs the worker skipped (none when it ran to the end) */
        dest_job *j = d->head;
        d->head = j->next;
        job_free(j);
    }
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->work);
    pthread_cond_destroy(&d->done);
    gs_free(d);
}

void gs_backup_dest_set_background(gs_backup_dest *d)
{
    pthread_mutex_lock(&d->mu);
    d->background = 1;
    pthread_mutex_unlock(&d->mu);
}

int gs_backup_dest_can_claim(const gs_backup_dest *d)
{
    return d->vt->write_piece_if_absent != NULL &&
           GS_HAS_MEMBER(gs_backup_destination_vtable, write_piece_if_absent, d->vt->struct_size);
}

int64_t gs_backup_dest_timeout_ms(const gs_backup_dest *d)
{
    return d->timeout_ms;
}

static const char *op_verb(int op)
{
    switch (op) {
    case OP_WRITE: return "write";
    case OP_CLAIM: return "claim";
    case OP_READ: return "return";
    default: return "list";
    }
}

/* Queue j and wait for it. GS_OK: j answered and is the caller's to free. GS_ERROR: err set
 * and j is gone (freed here, or left to the worker when it is still running). */
static gs_status submit(gs_backup_dest *d, dest_job *j, gs_error *err)
{
    pthread_mutex_lock(&d->mu);
    if (d->stop) {
        pthread_mutex_unlock(&d->mu);
        job_free(j);
        return gs_error_set(err, 0, "BACKUP_DESTINATION_ERROR",
                            "the backup destination is shutting down");
    }
    if (!d->started) {
        if (pthread_create(&d->thread, NULL, worker_main, d) != 0) {
            pthread_mutex_unlock(&d->mu);
            job_free(j);
            return gs_error_set(err, 0, "BACKUP_DESTINATION_ERROR",
                                "cannot start the backup destination's thread: %s",
                                strerror(errno));
        }
        d->started = 1;
    }
    j->next = NULL;
    if (d->tail)
        d->tail->next = j;
    else
        d->head = j;
    d->tail = j;
    pthread_cond_signal(&d->work);
    struct timespec dl;
    if (d->timeout_ms > 0) {
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_sec += d->timeout_ms / 1000;
        dl.tv_nsec += (d->timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
    }
    while (!j->done) {
        if (d->timeout_ms <= 0) {
            pthread_cond_wait(&d->done, &d->mu);
        } else if (pthread_cond_timedwait(&d->done, &d->mu, &dl) == ETIMEDOUT && !j->done) {
            j->abandoned = 1; /* the worker frees it */
            pthread_mutex_unlock(&d->mu);
            return gs_error_set(err, 0, "BACKUP_DESTINATION_ERROR",
                                "the destination did not %s piece %llu of '%s' within "
                                "destination_timeout_ms (%lld ms); check the storage behind it "
                                "or raise the timeout",
                                op_verb(j->op), (unsigned long long)j->index, j->name,
                                (long long)d->timeout_ms);
        }
    }
    pthread_mutex_unlock(&d->mu);
    return GS_OK;
}

static dest_job *job_new(int op, const char *name, uint64_t index, uint8_t *bytes, size_t len)
{
    dest_job *j = gs_calloc(1, sizeof *j);
    if (!j) {
        gs_free(bytes);
        return NULL;
    }
    j->op = op;
    j->index = index;
    j->bytes = bytes;
    j->len = len;
    if (!(j->name = gs_strdup(name ? name : ""))) {
        job_free(j);
        return NULL;
    }
    return j;
}

static gs_status refused(const dest_job *j, gs_error *err)
{
    if (j->op == OP_LIST)
        return gs_error_set(err, 0, "BACKUP_DESTINATION_ERROR",
                            "the destination could not list the pieces of '%s': %s", j->name,
                            j->err.message[0] ? j->err.message : "it gave no reason");
    return gs_error_set(err, 0, "BACKUP_DESTINATION_ERROR",
                        "the destination refused to %s piece %llu of '%s': %s", op_verb(j->op),
                        (unsigned long long)j->index, j->name,
                        j->err.message[0] ? j->err.message : "it gave no reason");
}

gs_status gs_backup_dest_write_take(gs_backup_dest *d, const char *name, uint64_t index,
                                    uint8_t *bytes, size_t len, gs_error *err)
{
    dest_job *j = job_new(OP_WRITE, name, index, bytes, len);
    if (!j)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    if (submit(d, j, err) != GS_OK)
        return GS_ERROR;
    gs_status st = j->st == GS_OK ? GS_OK : refused(j, err);
    job_free(j);
    return st;
}

gs_status gs_backup_dest_claim_take(gs_backup_dest *d, const char *name, uint64_t index,
                                    uint8_t *bytes, size_t len, int *stored, gs_error *err)
{
    *stored = 0;
    if (!gs_backup_dest_can_claim(d)) {
        gs_free(bytes);
        return gs_error_set(err, 0, "BACKUP_DESTINATION_ERROR",
                            "the destination offers no write_piece_if_absent");
    }
    dest_job *j = job_new(OP_CLAIM, name, index, bytes, len);
    if (!j)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    if (submit(d, j, err) != GS_OK)
        return GS_ERROR;
    gs_status st = j->st == GS_OK ? GS_OK : refused(j, err);
    *stored = st == GS_OK && j->stored;
    job_free(j);
    return st;
}

gs_status gs_backup_dest_read(gs_backup_dest *d, const char *name, uint64_t index, uint8_t **bytes,
                              size_t *len, gs_error *err)
{
    *bytes = NULL;
    *len = 0;
    dest_job *j = job_new(OP_READ, name, index, NULL, 0);
    if (!j)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    if (submit(d, j, err) != GS_OK)
        return GS_ERROR;
    gs_status st = GS_OK;
    if (j->st == GS_DECLINED) {
        gs_error_set(err, 0, "BACKUP_DESTINATION_ERROR",
                     "the destination holds no piece %llu of '%s'", (unsigned long long)index,
                     j->name);
        st = GS_DECLINED;
    } else if (j->st != GS_OK) {
        st = refused(j, err);
    } else {
        *bytes = j->out;
        *len = j->out_len;
        j->out = NULL;
    }
    job_free(j);
    return st;
}

static int piece_cmp(const void *a, const void *b)
{
    const gs_backup_piece *x = a, *y = b;
    return x->index < y->index ? -1 : x->index > y->index;
}

gs_status gs_backup_dest_list(gs_backup_dest *d, const char *name, gs_backup_piece **pieces,
                              size_t *count, gs_error *err)
{
    *pieces = NULL;
    *count = 0;
    dest_job *j = job_new(OP_LIST, name, 0, NULL, 0);
    if (!j)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    if (submit(d, j, err) != GS_OK)
        return GS_ERROR;
    gs_status st = GS_OK;
    if (j->st != GS_OK) {
        st = refused(j, err);
    } else if (j->list_oom) {
        st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory listing '%s'", j->name);
    } else {
        if (j->count > 1)
            qsort(j->pieces, j->count, sizeof *j->pieces, piece_cmp);
        *pieces = j->pieces;
        *count = j->count;
        j->pieces = NULL;
    }
    job_free(j);
    return st;
}
