/*
 * A bare replication endpoint's mailbox for the first-sync tests (test_repl_sync.c,
 * test_repl_sync_resume.c): the transport callbacks of a hand-driven node (a rogue source or a
 * hand-made joiner) that keep every sync message it receives and count replication batches.
 * Threads: the callbacks run on the memory transport's delivery thread; the readers on the
 * test's thread, under the inbox's mutex.
 */
#ifndef GS_TEST_REPL_INBOX_H
#define GS_TEST_REPL_INBOX_H

#include "repl_harness.h"

#include "repl/codec.h"

#include <pthread.h>
#include <sqlite3.h>

typedef struct inbox {
    pthread_mutex_t m;
    pthread_cond_t c;
    gs_sync_message msgs[256];
    int n;
    int batches;            /* ReplicationMessage batches received */
    int64_t first_from_seq; /* fromSeq of the first of them */
} inbox;

static inline void inbox_message(void *user, const char *from, gs_repl_msg_type type,
                                 uint64_t call_id, const uint8_t *bytes, size_t len)
{
    (void)from, (void)call_id;
    inbox *in = user;
    if (type == GS_REPL_MSG_REPLICATION) {
        gs_repl_message rm;
        gs_error rerr;
        gs_error_init(&rerr);
        if (gs_repl_message_decode(bytes, len, &rm, &rerr) != GS_OK)
            return;
        pthread_mutex_lock(&in->m);
        if (rm.kind == GS_RMSG_BATCH && in->batches++ == 0)
            in->first_from_seq = rm.batch.from_seq;
        pthread_cond_broadcast(&in->c);
        pthread_mutex_unlock(&in->m);
        gs_repl_message_free(&rm);
        return;
    }
    if (type != GS_REPL_MSG_SYNC)
        return;
    gs_sync_message m;
    gs_error err;
    gs_error_init(&err);
    if (gs_sync_message_decode(bytes, len, &m, &err) != GS_OK)
        return;
    pthread_mutex_lock(&in->m);
    if (in->n < 256)
        in->msgs[in->n++] = m;
    else
        gs_sync_message_free(&m);
    pthread_cond_broadcast(&in->c);
    pthread_mutex_unlock(&in->m);
}

static inline void inbox_peer(void *user, const char *id, int up)
{
    (void)user, (void)id, (void)up;
}

/* The i-th sync message received (waits, bounded); NULL when none came in time. */
static inline gs_sync_message *inbox_get(inbox *in, int i, int64_t timeout_ms)
{
    struct timespec ts = gs_test_realtime_in(timeout_ms);
    pthread_mutex_lock(&in->m);
    while (in->n <= i)
        if (pthread_cond_timedwait(&in->c, &in->m, &ts) != 0)
            break;
    gs_sync_message *m = in->n > i ? &in->msgs[i] : NULL;
    pthread_mutex_unlock(&in->m);
    return m;
}

static inline void inbox_free(inbox *in)
{
    pthread_mutex_lock(&in->m);
    for (int k = 0; k < in->n; k++)
        gs_sync_message_free(&in->msgs[k]);
    in->n = 0;
    pthread_mutex_unlock(&in->m);
}

/* Rows in `table` of the database file at path (read-only; -1 on error). */
static inline int table_rows(const char *path, const char *table)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char q[128];
    snprintf(q, sizeof q, "SELECT count(*) FROM \"%s\"", table);
    sqlite3_stmt *st = NULL;
    int n = -1;
    if (sqlite3_prepare_v2(db, q, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

#endif
