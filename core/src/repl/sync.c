/*
 * First sync (spec 03 "First Sync"): a replica that has never synced asks the primary for a
 * snapshot and reaches ready through pending -> syncing -> catching-up -> ready.
 *
 * Source (primary): one thread per request (at most max_concurrent_syncs), holding one read
 * transaction on a connection of its own, so the schema, every table and snapshotSeq come
 * from the same moment. It sends the schema batch ('__schema__', batch 0, the CREATE TABLE and
 * CREATE INDEX statements, totalTables; our extensions: the snapshot's seq and the rows to
 * stream), then each table in pages read by keyset (WHERE key > cursor ORDER BY key LIMIT n:
 * the rowid of a rowid table, the declared primary key of a WITHOUT ROWID table),
 * each bounded by sync_batch_size rows and sync_batch_max_bytes bytes (a single larger row
 * goes alone; an empty table sends one empty page) and carrying the cursor after its last
 * row. It waits for each SyncAck; a page not acknowledged within sync_ack_timeout_ms is sent
 * again with the wait doubling (up to 4x) for SYNC_PAGE_RETRIES more tries, then the sync
 * stops with SYNC_ERROR; the max_sync_duration_ms deadline restarts on every acknowledged
 * page. It ends with a SyncComplete carrying, per table, rowCount and the batchDigest chain
 * (or pkHash for a joiner without stream verification). A request with resume cursors
 * continues each named table after its cursor, with the next batchIndex, the digest chain and
 * row count the joiner holds, provided the log still holds every change after the joiner's
 * oldest snapshot seq (otherwise everything is streamed again from page 0); while it serves,
 * it holds the log from that seq (gs_repl_sync_hold).
 *
 * Joiner (replica): runs on the inbound thread. The schema batch creates what is missing;
 * the first batch of a table clears it (its capture triggers are dropped while it fills, so a
 * snapshot does not flood the change log, and reinstalled when the sync completes); every
 * batch is checked (request id, order, checksum) and written in one transaction with its
 * progress in _sirannon_sync_state and its page in _sirannon_sync_cursor (batchIndex, the
 * source's cursor, the digest chain, the row count, and the snapshot seq of the sync that
 * began the table). A page received again (same table and batchIndex as the last one) is
 * acknowledged and not applied. A restarted sync lists its completed tables and sends a
 * resume cursor per partly received table; a source that ignores them (a reference node)
 * sends such a table from batch 0, and the joiner then empties it and starts it over. Parts
 * come from different snapshots, so catch-up starts from the OLDEST snapshot seq among them
 * (changes are full row images applied in seq order, so replaying some a row already
 * reflects converges). On SyncComplete the manifests are verified; a mismatch wipes the
 * synced tables and starts again. Verified: the applied position for the source becomes that
 * oldest seq, the phase becomes catching-up, and the position is reported so the primary
 * streams the rest. Progress (gs_repl_sync_progress, /health/ready) is logged every
 * PROGRESS_LOG_MS and once at the end.
 * catching-up becomes ready when a batch from the primary holds fewer than
 * max_sync_lag_before_ready changes (the primary's backlog fell below it), when the primary
 * has had nothing to send for a few batch intervals, or at catch_up_deadline_ms.
 *
 * The phase is kept in _sirannon_meta under repl_sync_phase.
 */
#include "engine_internal.h"

#include "base/alloc.h"
#include "base/log.h"
#include "db/cdc_internal.h"
#include "repl/apply.h"
#include "repl/checksum.h"
#include "repl/codec.h"
#include "repl/ddl.h"
#include "repl/rowsql.h"
#include "repl/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define SCHEMA_TABLE "__schema__"
#define META_PHASE "repl_sync_phase"
/* A joiner that hears nothing from its source for this long asks again (resuming). */
#define JOINER_RETRY_MS 1000
/* A page is sent at most 1 + SYNC_PAGE_RETRIES times; the wait for its ack doubles each time,
 * up to SYNC_BACKOFF_MAX times sync_ack_timeout_ms. */
#define SYNC_PAGE_RETRIES 4
#define SYNC_BACKOFF_MAX 4
/* The joiner asks again after this many sync_ack_timeout_ms of silence: longer than the
 * source's whole resend schedule (1 + 2 + 4 + 4 + 4 = 15), so the source's resends come first. */
#define JOINER_SILENCE_FACTOR 16
#define PROGRESS_LOG_MS 5000
#define CURSOR_TABLE "_sirannon_sync_cursor"

typedef struct joined_table {
    char *table;
    char digest[65];
    int64_t rows;
    int32_t batches; /* the batch index expected next */
    int complete;
    char last_sum[65]; /* checksum of the last page applied ("" = unknown) */
} joined_table;

struct gs_sync_joiner {
    char request_id[40];
    char source[128];
    int64_t last_msg_ms;
    int64_t retry_at_ms; /* > 0: send a new request then */
    int got_schema;
    int32_t total_tables;
    char table[256];    /* the table being received */
    int32_t next_index; /* the batch index expected next */
    joined_table *tables;
    size_t ntables, cap;
    int64_t attempt_seq; /* the snapshot seq the source announced for this request (0 unknown) */
    int64_t started_ms;  /* when this engine's sync began */
    int64_t next_log_ms;
    int64_t rows_recv;      /* rows received by this engine */
    int64_t rows_held;      /* rows held when the current request began (kept parts) */
    int64_t completed_rows; /* rows of the tables completed before this request */
    int64_t ncompleted;     /* tables completed before this request */
    int64_t bytes_recv;
    uint64_t resumed, restarted; /* tables, this engine */
};

struct gs_sync_source {
    gs_repl_engine *e;
    char *joiner;
    char *request_id;
    int verify; /* supportsStreamVerification */
    char **completed;
    size_t ncompleted;
    gs_sync_resume *resume; /* the joiner's partly received tables */
    size_t nresume;
    int64_t resume_seq; /* the joiner's oldest snapshot seq among its kept parts (0 none) */
    int64_t hold;       /* mu: the log is kept after this seq while serving (INT64_MAX none) */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    int stop;
    int finished;
    /* the acknowledgement being waited for */
    int have_ack;
    char ack_table[256];
    int32_t ack_index;
    int ack_success;
    char ack_error[256];
};

static int push(char ***arr, size_t *n, const char *s);
static joined_table *joined(struct gs_sync_joiner *j, const char *table);

/* ---- helpers ---- */

static void random_id(char out[40])
{
    uint8_t b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n <= 0) {
            for (size_t i = got; i < sizeof b; i++)
                b[i] = (uint8_t)(rand() & 0xff);
            break;
        }
        got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof b; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static gs_status exec(gs_conn *conn, const char *sql, gs_error *err)
{
    return gs_conn_exec(conn, sql, err);
}

/* The sync phase and progress markers live in _sirannon_meta; errors read as SYNC_ERROR. */
static gs_status set_meta(gs_conn *conn, const char *key, const char *value, gs_error *err)
{
    if (gs_repl_meta_set(conn, key, value, err) == GS_OK)
        return GS_OK;
    snprintf(err->code, sizeof err->code, "SYNC_ERROR");
    return GS_ERROR;
}

static int send_sync(gs_repl_engine *e, const char *to, const gs_sync_message *m, gs_error *err)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    gs_sync_message sm = *m; /* coordinator mode: stamped with the group and the term */
    int64_t term = gs_repl_coord_term(e);
    if (term > 0) {
#define STAMP(part)                                                                                \
    do {                                                                                           \
        sm.part.group_id = e->group_id;                                                            \
        sm.part.has_term = 1;                                                                      \
        sm.part.primary_term = term;                                                               \
    } while (0)
        switch (m->kind) {
        case GS_SMSG_REQUEST: STAMP(request); break;
        case GS_SMSG_BATCH: STAMP(batch); break;
        case GS_SMSG_COMPLETE: STAMP(complete); break;
        case GS_SMSG_ACK: STAMP(ack); break;
        default: break;
        }
#undef STAMP
    }
    if (gs_sync_message_encode(&sm, &bytes, &len, err) != GS_OK)
        return GS_ERROR;
    gs_error_init(err);
    gs_status st =
        e->o.transport->send(e->o.transport_instance, to, GS_REPL_MSG_SYNC, 0, bytes, len, err);
    gs_free(bytes);
    if (st != GS_OK && !err->code[0])
        gs_error_set(err, 0, "TRANSPORT_ERROR", "the transport refused a sync message for %s", to);
    return st;
}

static void send_sync_ack(gs_repl_engine *e, const char *to, const char *request_id,
                          const char *table, int32_t index, int success, const char *error)
{
    gs_sync_message m;
    memset(&m, 0, sizeof m);
    m.kind = GS_SMSG_ACK;
    m.ack.request_id = (char *)request_id;
    m.ack.joiner_node_id = e->node_id;
    m.ack.table = (char *)table;
    m.ack.batch_index = index;
    m.ack.success = success;
    m.ack.error = (char *)error;
    gs_error err;
    gs_error_init(&err);
    if (send_sync(e, to, &m, &err) != GS_OK)
        gs_log(GS_LOG_DEBUG, "repl", "database '%s': sync ack to %s not sent: %s", gs_db_id(e->db),
               to, err.message);
}

/* ---- phase persistence ---- */

gs_status gs_repl_sync_load(gs_repl_engine *e, gs_error *err)
{
    if (e->is_primary || !e->o.initial_sync) {
        snprintf(e->phase, sizeof e->phase, "ready");
        return GS_OK;
    }
    sqlite3 *db = gs_conn_db(e->log_conn);
    sqlite3_stmt *st = NULL;
    char phase[16] = "";
    if (sqlite3_prepare_v2(db, "SELECT value FROM _sirannon_meta WHERE key = '" META_PHASE "'", -1,
                           &st, NULL) != SQLITE_OK)
        return gs_error_set(err, 0, "SYNC_ERROR", "reading the sync phase: %s", sqlite3_errmsg(db));
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(phase, sizeof phase, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    /* A sync cut short resumes (from its completed tables) once the primary connects. */
    if (strcmp(phase, "ready") == 0 || strcmp(phase, "catching-up") == 0)
        snprintf(e->phase, sizeof e->phase, "%s", phase);
    else
        snprintf(e->phase, sizeof e->phase, "pending");
    if (strcmp(e->phase, "catching-up") == 0)
        e->catch_up_started_ms = gs_repl_now_ms();
    return GS_OK;
}

typedef struct phase_call {
    const char *phase;
} phase_call;

static gs_status phase_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    return set_meta(conn, META_PHASE, ((phase_call *)user)->phase, err);
}

static void persist_phase(gs_repl_engine *e, const char *phase)
{
    gs_repl_set_phase(e, phase);
    phase_call pc = {phase};
    gs_error err;
    gs_error_init(&err);
    if (gs_repl_on_writer(e, phase_fn, &pc, &err) != GS_OK)
        gs_repl_note_error(e, &err, "persisting the sync phase", NULL);
}

static void joiner_free(struct gs_sync_joiner *j);

/* The joiner's last applied page per table (see the comment at the top). */
static gs_status ensure_cursor_table(gs_conn *conn, gs_error *err)
{
    if (exec(conn,
             "CREATE TABLE IF NOT EXISTS " CURSOR_TABLE " (table_name TEXT PRIMARY KEY, "
             "source_peer_id TEXT, batch_index INTEGER NOT NULL, cursor TEXT, digest TEXT, "
             "row_count INTEGER NOT NULL DEFAULT 0, snapshot_seq INTEGER NOT NULL DEFAULT 0)",
             err) != GS_OK) {
        snprintf(err->code, sizeof err->code, "SYNC_ERROR");
        return GS_ERROR;
    }
    return GS_OK;
}

static gs_status reset_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)user;
    (void)out;
    sqlite3 *db = gs_conn_db(conn);
    if (sqlite3_exec(db, "DELETE FROM _sirannon_sync_state", NULL, NULL, NULL) != SQLITE_OK &&
        sqlite3_get_autocommit(db) == 0)
        return gs_error_set(err, 0, "SYNC_ERROR", "clearing the sync progress: %s",
                            sqlite3_errmsg(db));
    if (ensure_cursor_table(conn, err) != GS_OK ||
        exec(conn, "DELETE FROM " CURSOR_TABLE, err) != GS_OK)
        return GS_ERROR;
    return set_meta(conn, META_PHASE, "pending", err);
}

void gs_repl_sync_reset(gs_repl_engine *e)
{
    pthread_mutex_lock(&e->mu);
    struct gs_sync_joiner *j = e->joiner;
    e->joiner = NULL;
    e->applied_seq = 0;
    pthread_mutex_unlock(&e->mu);
    joiner_free(j);
    pthread_mutex_lock(&e->mu);
    e->sync_prog.active = 0;
    pthread_mutex_unlock(&e->mu);
    gs_repl_set_phase(e, "pending");
    gs_error err;
    gs_error_init(&err);
    if (gs_repl_on_writer(e, reset_fn, NULL, &err) != GS_OK)
        gs_repl_note_error(e, &err, "resetting the sync", NULL);
}

/* ---- joiner ---- */

static void joiner_free(struct gs_sync_joiner *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->ntables; i++)
        gs_free(j->tables[i].table);
    gs_free(j->tables);
    gs_free(j);
}

typedef struct completed_call {
    const char *source;
    char **names; /* completed tables */
    size_t n;
    gs_sync_resume *resume; /* partly received tables */
    size_t nresume;
    int64_t oldest;         /* the oldest snapshot seq among them (0 = none) */
    int64_t completed_rows; /* rows of the completed tables */
    int64_t resumed_rows;   /* rows held of the partly received ones */
} completed_call;

static void completed_call_free(completed_call *cc)
{
    for (size_t i = 0; i < cc->n; i++)
        gs_free(cc->names[i]);
    gs_free(cc->names);
    for (size_t i = 0; i < cc->nresume; i++) {
        gs_free(cc->resume[i].table);
        gs_free(cc->resume[i].cursor);
        gs_free(cc->resume[i].digest);
    }
    gs_free(cc->resume);
    memset(cc, 0, sizeof *cc);
}

static const char *col_text(sqlite3_stmt *st, int c)
{
    const char *t = (const char *)sqlite3_column_text(st, c);
    return t ? t : "";
}

/* What a restarted sync keeps: the completed tables and the partly received ones, each only
 * when the snapshot seq it came from is known (a table a reference source streamed is sent
 * again: catch-up could not otherwise start early enough for it). */
static gs_status completed_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    completed_call *cc = user;
    sqlite3 *db = gs_conn_db(conn);
    sqlite3_stmt *st = NULL;
    if (ensure_cursor_table(conn, err) != GS_OK)
        return GS_ERROR;
    if (sqlite3_prepare_v2(db,
                           "SELECT s.table_name, s.status, s.row_count, c.batch_index, c.cursor, "
                           "c.digest, c.row_count, COALESCE(c.snapshot_seq, 0) FROM "
                           "_sirannon_sync_state s LEFT JOIN " CURSOR_TABLE
                           " c ON c.table_name = s.table_name AND c.source_peer_id = "
                           "s.source_peer_id WHERE s.source_peer_id = ?",
                           -1, &st, NULL) != SQLITE_OK)
        return gs_error_set(err, 0, "SYNC_ERROR", "reading sync progress: %s", sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, cc->source, -1, SQLITE_STATIC);
    int oom = 0;
    while (!oom && sqlite3_step(st) == SQLITE_ROW) {
        const char *name = col_text(st, 0), *status = col_text(st, 1);
        int64_t seq = sqlite3_column_int64(st, 7);
        if (seq <= 0)
            continue;
        if (strcmp(status, "completed") == 0) {
            oom = push(&cc->names, &cc->n, name) != 0;
            cc->completed_rows += sqlite3_column_int64(st, 2);
        } else if (strcmp(status, "syncing") == 0 && sqlite3_column_type(st, 4) != SQLITE_NULL &&
                   sqlite3_column_type(st, 5) != SQLITE_NULL && sqlite3_column_int(st, 3) >= 0) {
            gs_sync_resume *nr = gs_realloc(cc->resume, (cc->nresume + 1) * sizeof *nr);
            if (!nr) {
                oom = 1;
                break;
            }
            cc->resume = nr;
            gs_sync_resume *r = &nr[cc->nresume];
            memset(r, 0, sizeof *r);
            r->table = gs_strdup(name);
            r->cursor = gs_strdup(col_text(st, 4));
            r->digest = gs_strdup(col_text(st, 5));
            r->batch_index = sqlite3_column_int(st, 3);
            r->rows = sqlite3_column_int64(st, 6);
            cc->nresume++;
            oom = !r->table || !r->cursor || !r->digest;
            cc->resumed_rows += r->rows;
        } else {
            continue;
        }
        if (!cc->oldest || seq < cc->oldest)
            cc->oldest = seq;
    }
    sqlite3_finalize(st);
    if (oom)
        return gs_error_set(err, 0, "SYNC_ERROR", "out of memory reading the sync progress");
    return GS_OK;
}

/* Send a SyncRequest listing the tables a cut-short sync already finished and where each
 * partly received table stands. */
static void joiner_request(gs_repl_engine *e, struct gs_sync_joiner *j)
{
    completed_call cc;
    memset(&cc, 0, sizeof cc);
    cc.source = j->source;
    gs_error err;
    gs_error_init(&err);
    if (gs_repl_on_writer(e, completed_fn, &cc, &err) != GS_OK) {
        gs_repl_note_error(e, &err, "reading sync progress", j->source);
        completed_call_free(&cc); /* nothing kept: everything is streamed again */
        cc.source = j->source;
    }
    /* table modes: the tables this node does not copy are skipped (listed as complete) */
    gs_repl_table_sync_skips(e, &cc.names, &cc.n);
    random_id(j->request_id);
    j->got_schema = 0;
    j->table[0] = '\0';
    j->next_index = 0;
    j->attempt_seq = 0;
    /* what this request starts from is what the database holds, not what memory remembers */
    for (size_t i = 0; i < j->ntables; i++)
        gs_free(j->tables[i].table);
    j->ntables = 0;
    for (size_t i = 0; i < cc.nresume; i++) {
        joined_table *t = joined(j, cc.resume[i].table);
        if (!t)
            continue;
        snprintf(t->digest, sizeof t->digest, "%s", cc.resume[i].digest);
        t->rows = cc.resume[i].rows;
        t->batches = cc.resume[i].batch_index + 1;
    }
    j->rows_held = cc.completed_rows + cc.resumed_rows;
    pthread_mutex_lock(&e->mu);
    j->last_msg_ms = gs_repl_now_ms();
    j->retry_at_ms = 0;
    e->sync_prog.active = 1;
    snprintf(e->sync_prog.source, sizeof e->sync_prog.source, "%s", j->source);
    e->sync_prog.tables_done = (int64_t)cc.n;
    e->sync_prog.tables_total = 0;
    e->sync_prog.rows = j->rows_held;
    e->sync_prog.rows_total = 0;
    pthread_mutex_unlock(&e->mu);
    j->completed_rows = cc.completed_rows;
    j->ncompleted = (int64_t)cc.n;
    gs_sync_message m;
    memset(&m, 0, sizeof m);
    m.kind = GS_SMSG_REQUEST;
    m.request.request_id = j->request_id;
    m.request.joiner_node_id = e->node_id;
    m.request.completed_tables = cc.names;
    m.request.ncompleted = cc.n;
    m.request.supports_stream_verification = 1;
    m.request.resume = cc.resume;
    m.request.nresume = cc.nresume;
    m.request.resume_snapshot_seq = cc.oldest;
    if (send_sync(e, j->source, &m, &err) != GS_OK) {
        gs_repl_note_error(e, &err, "sending the sync request", j->source);
        pthread_mutex_lock(&e->mu);
        j->retry_at_ms = gs_repl_now_ms() + JOINER_RETRY_MS;
        pthread_mutex_unlock(&e->mu);
    } else {
        gs_log(GS_LOG_INFO, "repl",
               "database '%s': first sync requested from %s (%zu tables already complete, %zu "
               "to resume mid-table, %lld rows held, oldest snapshot seq %lld)",
               gs_db_id(e->db), j->source, cc.n, cc.nresume, (long long)j->rows_held,
               (long long)cc.oldest);
    }
    completed_call_free(&cc);
}

void gs_repl_sync_maybe_start(gs_repl_engine *e, const char *primary)
{
    pthread_mutex_lock(&e->mu);
    int need = strcmp(e->phase, "pending") == 0 || strcmp(e->phase, "syncing") == 0;
    int running = e->joiner != NULL;
    pthread_mutex_unlock(&e->mu);
    if (!need)
        return;
    struct gs_sync_joiner *j = NULL;
    if (running) {
        j = e->joiner;
    } else {
        j = gs_calloc(1, sizeof *j);
        if (!j) {
            gs_log(GS_LOG_ERROR, "repl", "out of memory starting a sync");
            return;
        }
        snprintf(j->source, sizeof j->source, "%s", primary);
        j->last_msg_ms = gs_repl_now_ms();
        j->started_ms = j->last_msg_ms;
        j->next_log_ms = j->started_ms + PROGRESS_LOG_MS;
        pthread_mutex_lock(&e->mu);
        e->joiner = j;
        pthread_mutex_unlock(&e->mu);
    }
    persist_phase(e, "syncing");
    joiner_request(e, j);
}

static joined_table *joined(struct gs_sync_joiner *j, const char *table)
{
    for (size_t i = 0; i < j->ntables; i++)
        if (strcmp(j->tables[i].table, table) == 0)
            return &j->tables[i];
    if (j->ntables == j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 16;
        joined_table *t = gs_realloc(j->tables, cap * sizeof *t);
        if (!t)
            return NULL;
        j->tables = t;
        j->cap = cap;
    }
    joined_table *t = &j->tables[j->ntables];
    memset(t, 0, sizeof *t);
    if (!(t->table = gs_strdup(table)))
        return NULL;
    j->ntables++;
    return t;
}

typedef struct schema_call {
    const gs_sync_batch *b;
} schema_call;

static int object_exists(gs_conn *conn, const char *stmt_sql)
{
    /* The name after CREATE [UNIQUE] TABLE|INDEX [IF NOT EXISTS]; quotes stripped. */
    char name[256] = "";
    const char *p = stmt_sql;
    const char *words[] = {"CREATE", "UNIQUE", "TABLE", "INDEX", "IF", "NOT", "EXISTS"};
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        int matched = 0;
        for (size_t w = 0; w < sizeof words / sizeof *words; w++) {
            size_t l = strlen(words[w]);
            if (strncasecmp(p, words[w], l) == 0 && (p[l] == ' ' || p[l] == '\t' || p[l] == '\n'))
                p += l, matched = 1;
        }
        if (!matched)
            break;
    }
    char q = (*p == '"' || *p == '`' || *p == '[') ? *p : 0;
    if (q)
        p++;
    size_t n = 0;
    while (*p && n < sizeof name - 1 &&
           (q ? (*p != (q == '[' ? ']' : q)) : (*p != ' ' && *p != '(' && *p != '\n')))
        name[n++] = *p++;
    name[n] = '\0';
    sqlite3_stmt *st = NULL;
    int exists = 0;
    if (sqlite3_prepare_v2(gs_conn_db(conn), "SELECT 1 FROM sqlite_master WHERE name = ?", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        exists = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    return exists;
}

static gs_status schema_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    const gs_sync_batch *b = ((schema_call *)user)->b;
    if (exec(conn, "BEGIN IMMEDIATE", err) != GS_OK)
        return GS_ERROR;
    for (size_t i = 0; i < b->nschema; i++) {
        const char *sql = b->schema[i];
        if (gs_repl_ddl_check(sql, err) != GS_OK)
            goto fail;
        if (object_exists(conn, sql))
            continue;
        if (exec(conn, sql, err) != GS_OK)
            goto fail;
    }
    if (exec(conn, "COMMIT", err) != GS_OK)
        goto fail;
    return GS_OK;
fail:
    gs_conn_exec(conn, "ROLLBACK", &(gs_error){0});
    return GS_ERROR;
}

typedef struct rows_call {
    gs_repl_engine *e;
    const gs_sync_batch *b;
    const char *source;
} rows_call;

static gs_status insert_rows(gs_conn *conn, const gs_sync_batch *b, gs_error *err)
{
    sqlite3 *db = gs_conn_db(conn);
    gs_buf sql;
    gs_buf_init(&sql);
    sqlite3_stmt *st = NULL;
    const gs_rrow *shape = NULL;
    gs_status rc = GS_OK;
    for (size_t r = 0; r < b->nrows && rc == GS_OK; r++) {
        const gs_rrow *row = &b->rows[r];
        int same = shape && shape->n == row->n;
        for (size_t c = 0; same && c < row->n; c++)
            same = strcmp(shape->names[c], row->names[c]) == 0;
        if (!same) {
            sqlite3_finalize(st);
            st = NULL;
            gs_buf_reset(&sql);
            /* OR REPLACE: a page of a resumed table comes from a newer snapshot, where a row
             * already copied may have moved past the cursor (deleted and inserted again with a
             * new rowid); its newer image wins and catch-up replays the rest */
            gs_buf_puts(&sql, "INSERT OR REPLACE INTO ");
            gs_repl_quote_ident(&sql, b->table);
            gs_buf_puts(&sql, " (");
            for (size_t c = 0; c < row->n; c++) {
                if (c)
                    gs_buf_putc(&sql, ',');
                gs_repl_quote_ident(&sql, row->names[c]);
            }
            gs_buf_puts(&sql, ") VALUES (");
            for (size_t c = 0; c < row->n; c++)
                gs_buf_puts(&sql, c ? ",?" : "?");
            gs_buf_putc(&sql, ')');
            if (sqlite3_prepare_v2(db, sql.data, (int)sql.len, &st, NULL) != SQLITE_OK) {
                rc = gs_error_set(err, 0, "SYNC_ERROR", "table '%s': %s", b->table,
                                  sqlite3_errmsg(db));
                break;
            }
            shape = row;
        }
        sqlite3_reset(st);
        for (size_t c = 0; c < row->n; c++)
            gs_repl_bind_rval(st, (int)c + 1, &row->vals[c]);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = gs_error_set(err, 0, "SYNC_ERROR", "table '%s': inserting a synced row: %s",
                              b->table, sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    gs_buf_free(&sql);
    return rc;
}

static gs_status progress(gs_conn *conn, const char *table, const char *status, int64_t rows,
                          const char *source, const char *request_id, gs_error *err)
{
    sqlite3 *db = gs_conn_db(conn);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO _sirannon_sync_state (table_name, status, row_count, "
                           "source_peer_id, request_id, started_at, completed_at) VALUES (?, ?, "
                           "?, ?, ?, unixepoch('now'), CASE WHEN ?2 = 'completed' THEN "
                           "unixepoch('now') END) ON CONFLICT(table_name) DO UPDATE SET "
                           "status = excluded.status, row_count = excluded.row_count, "
                           "source_peer_id = excluded.source_peer_id, request_id = "
                           "excluded.request_id, completed_at = excluded.completed_at",
                           -1, &st, NULL) != SQLITE_OK)
        return gs_error_set(err, 0, "SYNC_ERROR", "recording sync progress: %s",
                            sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, rows);
    sqlite3_bind_text(st, 4, source, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, request_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return gs_error_set(err, 0, "SYNC_ERROR", "recording sync progress: %s",
                            sqlite3_errmsg(db));
    return GS_OK;
}

typedef struct table_call {
    const gs_sync_batch *b;
    const char *source;
    int64_t rows_total;  /* rows of the table so far, this batch included */
    const char *digest;  /* the batchDigest chain through this batch */
    int64_t attempt_seq; /* the snapshot seq of this request (0 = unknown) */
    int first_here;      /* the first page of the table this request applies */
} table_call;

/* The page just applied, in the same transaction: where a restarted sync continues. */
static gs_status record_page(gs_conn *conn, const table_call *tc, gs_error *err)
{
    if (ensure_cursor_table(conn, err) != GS_OK)
        return GS_ERROR;
    sqlite3 *db = gs_conn_db(conn);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO " CURSOR_TABLE " (table_name, source_peer_id, "
                           "batch_index, cursor, digest, row_count, snapshot_seq) VALUES (?1, "
                           "?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(table_name) DO UPDATE SET "
                           "source_peer_id = excluded.source_peer_id, batch_index = "
                           "excluded.batch_index, cursor = excluded.cursor, digest = "
                           "excluded.digest, row_count = excluded.row_count, snapshot_seq = "
                           "CASE WHEN excluded.batch_index = 0 THEN excluded.snapshot_seq ELSE "
                           "snapshot_seq END",
                           -1, &st, NULL) != SQLITE_OK)
        return gs_error_set(err, 0, "SYNC_ERROR", "recording the sync page: %s",
                            sqlite3_errmsg(db));
    const gs_sync_batch *b = tc->b;
    sqlite3_bind_text(st, 1, b->table, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, tc->source, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, b->batch_index);
    if (b->cursor)
        sqlite3_bind_text(st, 4, b->cursor, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, tc->digest, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, tc->rows_total);
    sqlite3_bind_int64(st, 7, tc->attempt_seq);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return gs_error_set(err, 0, "SYNC_ERROR", "recording the sync page: %s",
                            sqlite3_errmsg(db));
    return GS_OK;
}

static gs_status rows_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    table_call *tc = user;
    const gs_sync_batch *b = tc->b;
    gs_buf sql;
    gs_buf_init(&sql);
    gs_status rc = exec(conn, "PRAGMA foreign_keys = OFF", err);
    if (rc == GS_OK)
        rc = exec(conn, "BEGIN IMMEDIATE", err);
    if (rc == GS_OK && (b->batch_index == 0 || tc->first_here))
        /* its capture triggers come back at the end; a restarted engine installed them again,
         * so a resumed table drops them on its first page too (else the synced rows would be
         * captured as this node's own writes) */
        rc = gs_cdc_drop_triggers(conn, b->table, err);
    if (rc == GS_OK && b->batch_index == 0) {
        /* the first batch of a table clears it */
        gs_buf_puts(&sql, "DELETE FROM ");
        gs_repl_quote_ident(&sql, b->table);
        rc = exec(conn, sql.data, err);
    }
    if (rc == GS_OK)
        rc = insert_rows(conn, b, err);
    if (rc == GS_OK)
        rc = progress(conn, b->table, b->is_last_batch_for_table ? "completed" : "syncing",
                      tc->rows_total, tc->source, b->request_id ? b->request_id : "", err);
    if (rc == GS_OK)
        rc = record_page(conn, tc, err);
    if (rc == GS_OK)
        rc = exec(conn, "COMMIT", err);
    if (rc != GS_OK)
        gs_conn_exec(conn, "ROLLBACK", &(gs_error){0});
    gs_conn_exec(conn, "PRAGMA foreign_keys = ON", &(gs_error){0});
    gs_buf_free(&sql);
    return rc;
}

static void joiner_batch(gs_repl_engine *e, struct gs_sync_joiner *j, const char *from,
                         const gs_sync_batch *b)
{
    const char *table = b->table ? b->table : "";
    char why[300] = "";
    gs_error err;
    gs_error_init(&err);
    if (!b->request_id || strcmp(b->request_id, j->request_id) != 0) {
        gs_log(GS_LOG_DEBUG, "repl", "database '%s': sync batch of an old request ignored",
               gs_db_id(e->db));
        return;
    }
    pthread_mutex_lock(&e->mu);
    j->last_msg_ms = gs_repl_now_ms();
    pthread_mutex_unlock(&e->mu);
    char sum[65];
    if (strcmp(table, SCHEMA_TABLE) == 0) {
        if (gs_repl_strings_checksum(b->schema, b->nschema, sum, &err) != GS_OK || !b->checksum ||
            strcmp(sum, b->checksum) != 0) {
            snprintf(why, sizeof why, "schema batch checksum mismatch");
        } else {
            schema_call sc = {b};
            if (gs_repl_on_writer(e, schema_fn, &sc, &err) != GS_OK)
                snprintf(why, sizeof why, "%s: %s", err.code, err.message);
            else {
                j->got_schema = 1;
                j->total_tables = b->total_tables;
                j->attempt_seq = b->snapshot_seq; /* 0: the source does not say */
                pthread_mutex_lock(&e->mu);
                e->sync_prog.tables_total = j->ncompleted + b->total_tables;
                e->sync_prog.rows_total = b->total_rows > 0 ? j->completed_rows + b->total_rows : 0;
                pthread_mutex_unlock(&e->mu);
            }
        }
        send_sync_ack(e, from, j->request_id, table, b->batch_index, why[0] == 0,
                      why[0] ? why : NULL);
        if (why[0])
            gs_log(GS_LOG_WARN, "repl", "database '%s': sync schema refused: %s", gs_db_id(e->db),
                   why);
        return;
    }
    joined_table *t = NULL;
    if (!j->got_schema)
        snprintf(why, sizeof why, "a table batch arrived before the schema batch");
    else if (!(t = joined(j, table)))
        snprintf(why, sizeof why, "out of memory");
    else if (t->batches > 0 && b->batch_index == t->batches - 1 && t->last_sum[0] && b->checksum &&
             strcmp(b->checksum, t->last_sum) == 0) {
        /* the same page again (our ack was lost or late): acknowledge, do not apply */
        pthread_mutex_lock(&e->mu);
        e->sync_prog.pages_duplicate++;
        pthread_mutex_unlock(&e->mu);
        gs_log(GS_LOG_DEBUG, "repl",
               "database '%s': sync batch %d of table '%s' received again; acknowledged",
               gs_db_id(e->db), (int)b->batch_index, table);
        send_sync_ack(e, from, j->request_id, table, b->batch_index, 1, NULL);
        return;
    } else if (b->batch_index == 0 && t->batches > 0) {
        /* a source that does not resume (a reference node) sends the table from the start */
        gs_log(GS_LOG_INFO, "repl",
               "database '%s': %s sends table '%s' again from its first page although %d "
               "pages (%lld rows) are held; the table starts over",
               gs_db_id(e->db), from, table, (int)t->batches, (long long)t->rows);
        pthread_mutex_lock(&e->mu);
        e->sync_prog.tables_restarted++;
        e->sync_prog.rows -= t->rows;
        pthread_mutex_unlock(&e->mu);
        j->restarted++;
        t->digest[0] = '\0';
        t->rows = 0;
        t->batches = 0;
        t->complete = 0;
        t->last_sum[0] = '\0';
    }
    if (why[0] || !t) {
        /* refused above */
    } else if (b->batch_index != t->batches)
        snprintf(why, sizeof why, "batch %d of table '%s' is out of order (expected %d)",
                 (int)b->batch_index, table, (int)t->batches);
    else if (gs_repl_rows_checksum(b->rows, b->nrows, sum, &err) != GS_OK || !b->checksum ||
             strcmp(sum, b->checksum) != 0)
        snprintf(why, sizeof why, "batch %d of table '%s' fails its checksum", (int)b->batch_index,
                 table);
    char digest[65] = "";
    if (!why[0]) {
        snprintf(digest, sizeof digest, "%s", t->digest);
        gs_repl_digest_step(digest, b->checksum);
        table_call tc = {b,      j->source,      t->rows + (int64_t)b->nrows,
                         digest, j->attempt_seq, !t->last_sum[0]};
        if (gs_repl_on_writer(e, rows_fn, &tc, &err) != GS_OK)
            snprintf(why, sizeof why, "%s: %s", err.code, err.message);
    }
    if (why[0]) {
        gs_log(GS_LOG_WARN, "repl", "database '%s': sync batch refused: %s", gs_db_id(e->db), why);
        send_sync_ack(e, from, j->request_id, table, b->batch_index, 0, why);
        return;
    }
    /* the first page of this request continues a table held in part */
    int resumed = b->batch_index > 0 && !t->last_sum[0];
    snprintf(t->digest, sizeof t->digest, "%s", digest);
    snprintf(t->last_sum, sizeof t->last_sum, "%s", b->checksum);
    t->rows += (int64_t)b->nrows;
    t->batches++;
    t->complete = b->is_last_batch_for_table;
    int64_t bytes = 0;
    for (size_t r = 0; r < b->nrows; r++)
        for (size_t c = 0; c < b->rows[r].n; c++)
            bytes += (int64_t)(b->rows[r].vals[c].len + 8);
    j->bytes_recv += bytes;
    if (resumed) {
        j->resumed++;
        gs_log(GS_LOG_INFO, "repl",
               "database '%s': table '%s' resumes at page %d (%lld rows were held)",
               gs_db_id(e->db), table, (int)b->batch_index,
               (long long)(t->rows - (int64_t)b->nrows));
    }
    pthread_mutex_lock(&e->mu);
    j->rows_recv += (int64_t)b->nrows; /* read by gs_repl_sync_progress under mu */
    e->sync_prog.rows += (int64_t)b->nrows;
    e->sync_prog.bytes += bytes;
    if (resumed)
        e->sync_prog.tables_resumed++;
    if (t->complete)
        e->sync_prog.tables_done++;
    gs_sync_progress p = e->sync_prog;
    pthread_mutex_unlock(&e->mu);
    send_sync_ack(e, from, j->request_id, table, b->batch_index, 1, NULL);
    int64_t now = gs_repl_now_ms();
    if (now >= j->next_log_ms) {
        j->next_log_ms = now + PROGRESS_LOG_MS;
        double secs = (double)(now - j->started_ms) / 1000.0;
        double rate = secs > 0 ? (double)j->rows_recv / secs : 0;
        char eta[32] = "unknown";
        if (p.rows_total > 0 && rate > 0)
            snprintf(eta, sizeof eta, "%.0f s",
                     (double)(p.rows_total > p.rows ? p.rows_total - p.rows : 0) / rate);
        gs_log(GS_LOG_INFO, "repl",
               "database '%s': first sync from %s: tables %lld/%lld, rows %lld/%lld, %.1f MB "
               "received, %.0f rows/s, ETA %s (table '%s', page %d)",
               gs_db_id(e->db), j->source, (long long)p.tables_done, (long long)p.tables_total,
               (long long)p.rows, (long long)p.rows_total, (double)j->bytes_recv / 1e6, rate, eta,
               table, (int)b->batch_index);
    }
}

typedef struct finish_call {
    gs_repl_engine *e;
    struct gs_sync_joiner *j;
    const gs_sync_complete *c;
    int ok;
    int64_t position; /* out: the oldest snapshot seq among the parts, catch-up starts there */
} finish_call;

/* pkHash: sha256 over the canonical list of primary-key objects in key order. */
static gs_status pk_hash(gs_conn *conn, const char *table, char out[65], gs_error *err)
{
    sqlite3 *db = gs_conn_db(conn);
    gs_buf sql;
    gs_buf_init(&sql);
    gs_buf_puts(&sql, "SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk");
    sqlite3_stmt *st = NULL;
    char *cols[64];
    size_t ncols = 0;
    if (sqlite3_prepare_v2(db, sql.data, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
        while (sqlite3_step(st) == SQLITE_ROW && ncols < 64)
            cols[ncols++] = gs_strdup((const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    gs_buf_reset(&sql);
    gs_buf_puts(&sql, "SELECT ");
    if (ncols == 0)
        gs_buf_puts(&sql, "rowid");
    for (size_t i = 0; i < ncols; i++) {
        if (i)
            gs_buf_putc(&sql, ',');
        gs_repl_quote_ident(&sql, cols[i] ? cols[i] : "");
    }
    gs_buf_puts(&sql, " FROM ");
    gs_repl_quote_ident(&sql, table);
    gs_buf_puts(&sql, " ORDER BY ");
    if (ncols == 0)
        gs_buf_puts(&sql, "rowid");
    for (size_t i = 0; i < ncols; i++) {
        if (i)
            gs_buf_putc(&sql, ',');
        gs_repl_quote_ident(&sql, cols[i] ? cols[i] : "");
    }
    gs_status rc = GS_OK;
    gs_rrow *rows = NULL;
    size_t n = 0, cap = 0;
    if (sqlite3_prepare_v2(db, sql.data, (int)sql.len, &st, NULL) != SQLITE_OK)
        rc = gs_error_set(err, 0, "SYNC_ERROR", "pkHash of '%s': %s", table, sqlite3_errmsg(db));
    while (rc == GS_OK && sqlite3_step(st) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            gs_rrow *nr = gs_realloc(rows, cap * sizeof *nr);
            if (!nr) {
                rc = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
                break;
            }
            rows = nr;
        }
        memset(&rows[n], 0, sizeof rows[n]);
        for (int c = 0; c < sqlite3_column_count(st) && rc == GS_OK; c++) {
            gs_rval v;
            rc = gs_repl_column_rval(st, c, &v, err);
            if (rc == GS_OK)
                rc = gs_rrow_add_take(&rows[n], sqlite3_column_name(st, c), &v, err);
        }
        n++;
    }
    sqlite3_finalize(st);
    if (rc == GS_OK)
        rc = gs_repl_rows_checksum(rows, n, out, err);
    for (size_t i = 0; i < n; i++) {
        gs_rrow tmp = rows[i];
        for (size_t c = 0; c < tmp.n; c++) {
            gs_free(tmp.names[c]);
            gs_rval_free(&tmp.vals[c]);
        }
        gs_free(tmp.names);
        gs_free(tmp.vals);
    }
    gs_free(rows);
    for (size_t i = 0; i < ncols; i++)
        gs_free(cols[i]);
    gs_buf_free(&sql);
    return rc;
}

static gs_status finish_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    finish_call *fc = user;
    gs_repl_engine *e = fc->e;
    gs_buf sql;
    gs_buf_init(&sql);
    gs_status rc = GS_OK;
    if (!fc->ok) {
        /* wipe what this sync wrote and forget its progress */
        rc = exec(conn, "BEGIN IMMEDIATE", err);
        for (size_t i = 0; rc == GS_OK && i < fc->j->ntables; i++) {
            gs_buf_reset(&sql);
            gs_buf_puts(&sql, "DELETE FROM ");
            gs_repl_quote_ident(&sql, fc->j->tables[i].table);
            rc = exec(conn, sql.data, err);
        }
        if (rc == GS_OK)
            rc = exec(conn, "DELETE FROM _sirannon_sync_state", err);
        if (rc == GS_OK && (rc = ensure_cursor_table(conn, err)) == GS_OK)
            rc = exec(conn, "DELETE FROM " CURSOR_TABLE, err);
        if (rc == GS_OK)
            rc = set_meta(conn, META_PHASE, "syncing", err);
        if (rc == GS_OK)
            rc = exec(conn, "COMMIT", err);
        else
            gs_conn_exec(conn, "ROLLBACK", &(gs_error){0});
        gs_buf_free(&sql);
        return rc;
    }
    rc = exec(conn, "BEGIN IMMEDIATE", err);
    /* parts resumed from older snapshots: catch-up starts from the oldest of them */
    fc->position = fc->c->snapshot_seq;
    if (rc == GS_OK && (rc = ensure_cursor_table(conn, err)) == GS_OK) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(gs_conn_db(conn),
                               "SELECT MIN(snapshot_seq) FROM " CURSOR_TABLE
                               " WHERE snapshot_seq > 0 AND source_peer_id = ?",
                               -1, &st, NULL) != SQLITE_OK)
            rc = gs_error_set(err, 0, "SYNC_ERROR", "reading the sync pages: %s",
                              sqlite3_errmsg(gs_conn_db(conn)));
        sqlite3_bind_text(st, 1, fc->j->source, -1, SQLITE_STATIC);
        if (rc == GS_OK && sqlite3_step(st) == SQLITE_ROW &&
            sqlite3_column_type(st, 0) != SQLITE_NULL) {
            int64_t oldest = sqlite3_column_int64(st, 0);
            if (oldest < fc->position)
                fc->position = oldest;
        }
        sqlite3_finalize(st);
    }
    if (rc == GS_OK)
        rc = exec(conn, "DELETE FROM " CURSOR_TABLE, err);
    if (rc == GS_OK)
        rc = gs_repl_apply_record_position(conn, fc->j->source, fc->position, err);
    if (rc == GS_OK)
        rc = set_meta(conn, META_PHASE, "catching-up", err);
    if (rc == GS_OK)
        rc = exec(conn, "COMMIT", err);
    else
        gs_conn_exec(conn, "ROLLBACK", &(gs_error){0});
    /* the capture triggers dropped while tables filled come back */
    if (rc == GS_OK && (rc = exec(conn, "BEGIN IMMEDIATE", err)) == GS_OK) {
        rc = gs_cdc_capture_all_refresh(e->db->cdc, conn, err);
        if (rc == GS_OK)
            rc = exec(conn, "COMMIT", err);
        else
            gs_conn_exec(conn, "ROLLBACK", &(gs_error){0});
    }
    gs_buf_free(&sql);
    return rc;
}

typedef struct verify_call {
    const char *table;
    char hash[65];
} verify_call;

static gs_status verify_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    verify_call *vc = user;
    return pk_hash(conn, vc->table, vc->hash, err);
}

static void joiner_complete(gs_repl_engine *e, struct gs_sync_joiner *j, const char *from,
                            const gs_sync_complete *c)
{
    if (!c->request_id || strcmp(c->request_id, j->request_id) != 0)
        return;
    char why[400] = "";
    for (size_t i = 0; i < c->nmanifests && !why[0]; i++) {
        const gs_sync_manifest *m = &c->manifests[i];
        const char *table = m->table ? m->table : "";
        joined_table *t = NULL;
        for (size_t k = 0; k < j->ntables; k++)
            if (strcmp(j->tables[k].table, table) == 0)
                t = &j->tables[k];
        if (m->batch_digest && m->batch_digest[0]) {
            if (!t || !t->complete)
                snprintf(why, sizeof why, "table '%s' is in the manifest but was not streamed",
                         table);
            else if (t->rows != m->row_count)
                snprintf(why, sizeof why,
                         "table '%s': the manifest counts %d rows but %lld arrived", table,
                         (int)m->row_count, (long long)t->rows);
            else if (strcmp(t->digest, m->batch_digest) != 0)
                snprintf(why, sizeof why,
                         "table '%s': the manifest's batchDigest does not match the chain of "
                         "the batches that arrived",
                         table);
        } else if (m->pk_hash && m->pk_hash[0]) {
            verify_call vc = {table, ""};
            gs_error err;
            gs_error_init(&err);
            if (gs_repl_on_writer(e, verify_fn, &vc, &err) != GS_OK ||
                strcmp(vc.hash, m->pk_hash) != 0)
                snprintf(why, sizeof why, "table '%s': pkHash does not match", table);
        } else {
            snprintf(why, sizeof why, "table '%s': the manifest has neither batchDigest nor pkHash",
                     table);
        }
    }
    for (size_t k = 0; k < j->ntables && !why[0]; k++) {
        int listed = 0;
        for (size_t i = 0; i < c->nmanifests; i++)
            listed |=
                c->manifests[i].table && strcmp(c->manifests[i].table, j->tables[k].table) == 0;
        if (!listed)
            snprintf(why, sizeof why, "table '%s' was streamed but is missing from the manifest",
                     j->tables[k].table);
    }
    finish_call fc = {e, j, c, why[0] == 0, 0};
    gs_error err;
    gs_error_init(&err);
    if (gs_repl_on_writer(e, finish_fn, &fc, &err) != GS_OK) {
        snprintf(why, sizeof why, "finishing the sync: %s", err.message);
        fc.ok = 0;
    }
    if (!fc.ok) {
        gs_error_set(&err, 0, "SYNC_ERROR",
                     "first sync from %s failed verification: %s; the "
                     "synced tables were wiped and the sync starts again",
                     from, why);
        gs_repl_note_error(e, &err, "first sync", from);
        for (size_t i = 0; i < j->ntables; i++)
            gs_free(j->tables[i].table);
        j->ntables = 0;
        joiner_request(e, j);
        return;
    }
    int64_t now = gs_repl_now_ms();
    pthread_mutex_lock(&e->mu);
    /* the applied position IS the oldest part's seq: changes after it are replayed */
    e->applied_seq = fc.position;
    e->joiner = NULL;
    int64_t applied = e->applied_seq;
    e->sync_prog.active = 0;
    e->sync_prog.elapsed_ms = now - j->started_ms;
    e->sync_prog.rows_per_sec = e->sync_prog.elapsed_ms > 0 ? (double)j->rows_recv * 1000.0 /
                                                                  (double)e->sync_prog.elapsed_ms
                                                            : 0;
    gs_sync_progress p = e->sync_prog;
    pthread_mutex_unlock(&e->mu);
    double secs = (double)(now - j->started_ms) / 1000.0;
    gs_log(GS_LOG_INFO, "repl",
           "database '%s': first sync from %s verified and finished: %lld tables (%zu in the "
           "last request), %lld rows held, %lld rows (%.1f MB) received in %.1f s (%.0f rows/s); "
           "%llu tables resumed mid-table, %llu started over; snapshot seq %lld, catching up "
           "from seq %lld",
           gs_db_id(e->db), from, (long long)p.tables_done, c->nmanifests, (long long)p.rows,
           (long long)j->rows_recv, (double)j->bytes_recv / 1e6, secs,
           secs > 0 ? (double)j->rows_recv / secs : 0.0, (unsigned long long)j->resumed,
           (unsigned long long)j->restarted, (long long)c->snapshot_seq, (long long)applied);
    joiner_free(j);
    gs_repl_set_phase(e, "catching-up");
    /* report the position so the primary streams everything after the snapshot */
    gs_repl_message m;
    memset(&m, 0, sizeof m);
    m.kind = GS_RMSG_ACK;
    m.ack.batch_id = "";
    m.ack.acked_seq = applied;
    m.ack.node_id = e->node_id;
    if (gs_repl_send_message(e, from, &m, &err) != GS_OK)
        gs_repl_note_error(e, &err, "reporting the position after sync", from);
}

static void become_ready(gs_repl_engine *e, const char *why)
{
    persist_phase(e, "ready");
    gs_log(GS_LOG_INFO, "repl", "database '%s': replica ready (%s)", gs_db_id(e->db), why);
}

void gs_repl_sync_check_ready(gs_repl_engine *e, int64_t batch_changes)
{
    pthread_mutex_lock(&e->mu);
    int catching = strcmp(e->phase, "catching-up") == 0;
    pthread_mutex_unlock(&e->mu);
    if (catching && batch_changes < e->o.max_sync_lag_before_ready)
        become_ready(e, "lag below maxSyncLagBeforeReady");
}

/* ---- source ---- */

static void source_ack_in(gs_repl_engine *e, const gs_sync_ack *a)
{
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->nsources; i++) {
        struct gs_sync_source *s = e->sources[i];
        if (!a->request_id || strcmp(s->request_id, a->request_id) != 0)
            continue;
        pthread_mutex_lock(&s->mu);
        s->have_ack = 1;
        snprintf(s->ack_table, sizeof s->ack_table, "%s", a->table ? a->table : "");
        s->ack_index = a->batch_index;
        s->ack_success = a->success;
        snprintf(s->ack_error, sizeof s->ack_error, "%s", a->error ? a->error : "");
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&e->mu);
}

/* Wait for the ack of (table, index). 0 = acknowledged, -1 = refused or stopping, -2 = no ack
 * by the deadline. */
static int source_wait_ack(struct gs_sync_source *s, const char *table, int32_t index,
                           int64_t deadline_ms, char *why, size_t whylen)
{
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->stop) {
            snprintf(why, whylen, "the node is stopping");
            break;
        }
        if (s->have_ack) {
            s->have_ack = 0;
            if (strcmp(s->ack_table, table) == 0 && s->ack_index == index) {
                if (s->ack_success) {
                    pthread_mutex_unlock(&s->mu);
                    return 0;
                }
                snprintf(why, whylen, "the joiner refused %s batch %d: %s", table, (int)index,
                         s->ack_error);
                break;
            }
            continue; /* a stale ack */
        }
        int64_t left = deadline_ms - gs_repl_now_ms();
        if (left <= 0) {
            snprintf(why, whylen, "no acknowledgement for %s batch %d in time", table, (int)index);
            pthread_mutex_unlock(&s->mu);
            return -2;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += left / 1000;
        ts.tv_nsec += (left % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return -1;
}

static int64_t ack_deadline(struct gs_sync_source *s, int attempt)
{
    int64_t a = s->e->o.sync_ack_timeout_ms, d = s->e->o.max_sync_duration_ms;
    int64_t factor = attempt >= 2 ? SYNC_BACKOFF_MAX : (int64_t)1 << attempt;
    if (factor > SYNC_BACKOFF_MAX)
        factor = SYNC_BACKOFF_MAX;
    a *= factor;
    return gs_repl_now_ms() + (a < d ? a : d);
}

/* Send a page and wait for its ack; without one in time, send it again with a longer wait
 * (1, 2, 4, 4, 4 times sync_ack_timeout_ms). 0 = acknowledged, -1 = not (why says so). */
static int send_page(struct gs_sync_source *s, const gs_sync_message *m, char *why, size_t whylen)
{
    gs_repl_engine *e = s->e;
    const char *table = m->batch.table;
    int32_t index = m->batch.batch_index;
    int64_t t0 = gs_repl_now_ms();
    for (int attempt = 0;; attempt++) {
        gs_error err;
        gs_error_init(&err);
        if (send_sync(e, s->joiner, m, &err) != GS_OK) {
            snprintf(why, whylen, "%s", err.message);
            return -1;
        }
        int rc = source_wait_ack(s, table, index, ack_deadline(s, attempt), why, whylen);
        if (rc != -2)
            return rc;
        if (attempt == SYNC_PAGE_RETRIES) {
            snprintf(why, whylen,
                     "no acknowledgement for table '%s' page %d after %d sends over %lld ms "
                     "(sync_ack_timeout_ms %lld, doubling up to %dx)",
                     table, (int)index, attempt + 1, (long long)(gs_repl_now_ms() - t0),
                     (long long)e->o.sync_ack_timeout_ms, SYNC_BACKOFF_MAX);
            return -1;
        }
        why[0] = '\0'; /* a timeout we try again after is no failure */
        pthread_mutex_lock(&e->mu);
        e->sync_prog.pages_resent++;
        pthread_mutex_unlock(&e->mu);
        gs_log(GS_LOG_WARN, "repl",
               "database '%s': first sync of %s: no acknowledgement for table '%s' page %d "
               "within %lld ms; sending it again (try %d of %d)",
               gs_db_id(e->db), s->joiner, table, (int)index, (long long)(gs_repl_now_ms() - t0),
               attempt + 2, SYNC_PAGE_RETRIES + 1);
    }
}

typedef struct tbl_list {
    char **names;
    size_t n;
    char **schema;
    size_t nschema;
} tbl_list;

static void tbl_list_free(tbl_list *t)
{
    for (size_t i = 0; i < t->n; i++)
        gs_free(t->names[i]);
    for (size_t i = 0; i < t->nschema; i++)
        gs_free(t->schema[i]);
    gs_free(t->names);
    gs_free(t->schema);
}

static int push(char ***arr, size_t *n, const char *s)
{
    char **na = gs_realloc(*arr, (*n + 1) * sizeof *na);
    if (!na)
        return -1;
    *arr = na;
    if (!(na[*n] = gs_strdup(s)))
        return -1;
    (*n)++;
    return 0;
}

/* The user tables (creation order) and the schema statements (tables, then indexes). */
static gs_status read_schema(gs_conn *conn, tbl_list *t, gs_error *err)
{
    sqlite3 *db = gs_conn_db(conn);
    sqlite3_stmt *st = NULL;
    const char *q = "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND "
                    "type IN ('table', 'index') AND name NOT LIKE '\\_sirannon%' ESCAPE '\\' "
                    "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND tbl_name NOT LIKE "
                    "'\\_sirannon%' ESCAPE '\\' ORDER BY type = 'index', rowid";
    if (sqlite3_prepare_v2(db, q, -1, &st, NULL) != SQLITE_OK)
        return gs_error_set(err, 0, "SYNC_ERROR", "reading the schema: %s", sqlite3_errmsg(db));
    char **virt = NULL;
    size_t nvirt = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *type = (const char *)sqlite3_column_text(st, 0);
        const char *name = (const char *)sqlite3_column_text(st, 1);
        const char *sql = (const char *)sqlite3_column_text(st, 2);
        if (strncasecmp(sql, "CREATE VIRTUAL", 14) == 0) {
            push(&virt, &nvirt, name);
            continue;
        }
        int shadow = 0;
        for (size_t i = 0; i < nvirt; i++) {
            size_t l = strlen(virt[i]);
            shadow |= strncmp(name, virt[i], l) == 0 && name[l] == '_';
        }
        if (shadow)
            continue;
        if (strcmp(type, "table") == 0 && push(&t->names, &t->n, name) != 0)
            break;
        if (push(&t->schema, &t->nschema, sql) != 0)
            break;
    }
    sqlite3_finalize(st);
    for (size_t i = 0; i < nvirt; i++)
        gs_free(virt[i]);
    gs_free(virt);
    return GS_OK;
}

static void free_rows(gs_rrow *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; c < rows[i].n; c++) {
            gs_free(rows[i].names[c]);
            gs_rval_free(&rows[i].vals[c]);
        }
        gs_free(rows[i].names);
        gs_free(rows[i].vals);
        memset(&rows[i], 0, sizeof rows[i]);
    }
}

/* ---- keyset pages ---- */

/* How a table is read in pages: after its declared key, or after its rowid. */
typedef struct keyset {
    char **cols; /* the declared key columns in key order (empty when by_rowid) */
    size_t ncols;
    int by_rowid;  /* page on the rowid */
    int rowid_col; /* the rows carry "rowid" (a table without a declared key) */
    int skip;      /* result column 0 is the rowid and not part of the row */
    int idx[64];   /* the result column of each key column */
} keyset;

static void keyset_free(keyset *k)
{
    for (size_t i = 0; i < k->ncols; i++)
        gs_free(k->cols[i]);
    gs_free(k->cols);
    memset(k, 0, sizeof *k);
}

static int keyset_init(sqlite3 *db, const char *table, keyset *k, char *why, size_t whylen)
{
    memset(k, 0, sizeof *k);
    sqlite3_stmt *st = NULL;
    int rowid_table = 1;
    if (sqlite3_prepare_v2(db, "SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
        while (sqlite3_step(st) == SQLITE_ROW && k->ncols < 64)
            if (push(&k->cols, &k->ncols, col_text(st, 0)) != 0)
                break;
    }
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(db,
                           "SELECT 1 FROM sqlite_master WHERE name = ? AND sql LIKE "
                           "'%WITHOUT ROWID%'",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
        rowid_table = sqlite3_step(st) != SQLITE_ROW;
    }
    sqlite3_finalize(st);
    if (k->ncols == 0) {
        if (!rowid_table) {
            snprintf(why, whylen, "table '%s' has neither a primary key nor a rowid", table);
            return -1;
        }
        k->by_rowid = k->rowid_col = 1;
        return 0;
    }
    if (!rowid_table)
        return 0; /* WITHOUT ROWID: the declared key, NOT NULL there */
    /* A rowid table is paged on its rowid, whatever its declared key: the joiner then inserts
     * the rows in the source's order (as a plain scan did), and a NULL in a declared key (which
     * SQLite allows) cannot hide a row from `key > cursor`. */
    k->by_rowid = k->skip = 1;
    for (size_t i = 0; i < k->ncols; i++)
        gs_free(k->cols[i]);
    k->ncols = 0;
    return 0;
}

/* SELECT ... FROM t [WHERE key > (?...)] ORDER BY key LIMIT ?; NULL on failure (why set). */
static sqlite3_stmt *keyset_prepare(sqlite3 *db, const char *table, keyset *k, int after, char *why,
                                    size_t whylen)
{
    gs_buf sql;
    gs_buf_init(&sql);
    gs_buf_puts(&sql, k->rowid_col ? "SELECT rowid AS \"rowid\", * FROM "
                      : k->skip    ? "SELECT rowid, * FROM "
                                   : "SELECT * FROM ");
    gs_repl_quote_ident(&sql, table);
    gs_buf put_cols;
    gs_buf_init(&put_cols);
    if (k->by_rowid)
        gs_buf_puts(&put_cols, "rowid");
    for (size_t i = 0; i < k->ncols; i++) {
        if (i)
            gs_buf_putc(&put_cols, ',');
        gs_repl_quote_ident(&put_cols, k->cols[i]);
    }
    size_t nkeys = k->by_rowid ? 1 : k->ncols;
    if (after) {
        gs_buf_printf(&sql, " WHERE (%s) > (", put_cols.data);
        for (size_t i = 0; i < nkeys; i++)
            gs_buf_puts(&sql, i ? ",?" : "?");
        gs_buf_putc(&sql, ')');
    }
    gs_buf_printf(&sql, " ORDER BY %s LIMIT ?", put_cols.data);
    gs_buf_free(&put_cols);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql.data, (int)sql.len, &st, NULL) != SQLITE_OK) {
        snprintf(why, whylen, "reading '%s': %s", table, sqlite3_errmsg(db));
        st = NULL;
    }
    gs_buf_free(&sql);
    if (st && !k->by_rowid) {
        for (size_t i = 0; i < k->ncols; i++) {
            k->idx[i] = -1;
            for (int c = 0; c < sqlite3_column_count(st); c++)
                if (strcmp(sqlite3_column_name(st, c), k->cols[i]) == 0)
                    k->idx[i] = c;
            if (k->idx[i] < 0) {
                snprintf(why, whylen, "reading '%s': key column '%s' is not in its rows", table,
                         k->cols[i]);
                sqlite3_finalize(st);
                return NULL;
            }
        }
    }
    return st;
}

static void rvals_free(gs_rval *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        gs_rval_free(&v[i]);
    gs_free(v);
}

static char *hex_of(const uint8_t *p, size_t n)
{
    char *h = gs_malloc(2 * n + 1);
    if (!h)
        return NULL;
    for (size_t i = 0; i < n; i++)
        snprintf(h + 2 * i, 3, "%02x", p[i]);
    h[2 * n] = '\0';
    return h;
}

/* The cursor after a page: {"k":"rowid"|"key","v":[[type, value], ...]} (types i, r, t, b, n;
 * text and blobs in hex, so any bytes survive). NULL when memory runs out. */
static char *cursor_json(const keyset *k, const gs_rval *v, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *e = NULL;
        char *h = NULL;
        switch (v[i].type) {
        case GS_RVAL_INT:
        case GS_RVAL_BOOL: e = json_pack("[sI]", "i", (json_int_t)v[i].i); break;
        case GS_RVAL_DOUBLE: e = json_pack("[sf]", "r", v[i].d); break;
        case GS_RVAL_TEXT:
        case GS_RVAL_BLOB:
            if ((h = hex_of(v[i].p, v[i].len)))
                e = json_pack("[ss]", v[i].type == GS_RVAL_TEXT ? "t" : "b", h);
            gs_free(h);
            break;
        default: e = json_pack("[s]", "n"); break;
        }
        if (!e || json_array_append_new(arr, e) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    json_t *obj = arr ? json_pack("{sssO}", "k", k->by_rowid ? "rowid" : "key", "v", arr) : NULL;
    json_decref(arr);
    char *txt = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    char *out = txt ? gs_strdup(txt) : NULL;
    free(txt);
    return out;
}

static int unhex(const char *h, uint8_t **out, size_t *len)
{
    size_t n = strlen(h);
    if (n % 2)
        return -1;
    *out = gs_malloc(n / 2 + 1);
    if (!*out)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned b;
        if (sscanf(h + 2 * i, "%2x", &b) != 1) {
            gs_free(*out);
            *out = NULL;
            return -1;
        }
        (*out)[i] = (uint8_t)b;
    }
    (*out)[n / 2] = 0;
    *len = n / 2;
    return 0;
}

/* Parse a joiner's cursor for this keyset; 0 with *v (n values), -1 when it does not fit. */
static int cursor_parse(const keyset *k, const char *text, gs_rval **v, size_t *n)
{
    *v = NULL;
    *n = 0;
    size_t want = k->by_rowid ? 1 : k->ncols;
    json_t *root = text ? json_loads(text, 0, NULL) : NULL;
    json_t *arr = json_object_get(root, "v");
    const char *kind = json_string_value(json_object_get(root, "k"));
    int rc = -1;
    if (!kind || strcmp(kind, k->by_rowid ? "rowid" : "key") != 0 || !json_is_array(arr) ||
        json_array_size(arr) != want)
        goto out;
    *v = gs_calloc(want, sizeof **v);
    if (!*v)
        goto out;
    for (size_t i = 0; i < want; i++) {
        json_t *e = json_array_get(arr, i);
        const char *t = json_string_value(json_array_get(e, 0));
        json_t *x = json_array_get(e, 1);
        gs_rval *r = &(*v)[i];
        if (!t)
            goto out;
        if (strcmp(t, "i") == 0 && json_is_integer(x)) {
            r->type = GS_RVAL_INT;
            r->i = (int64_t)json_integer_value(x);
        } else if (strcmp(t, "r") == 0 && json_is_number(x)) {
            r->type = GS_RVAL_DOUBLE;
            r->d = json_number_value(x);
        } else if ((strcmp(t, "t") == 0 || strcmp(t, "b") == 0) && json_is_string(x)) {
            r->type = t[0] == 't' ? GS_RVAL_TEXT : GS_RVAL_BLOB;
            if (unhex(json_string_value(x), &r->p, &r->len) != 0)
                goto out;
        } else if (strcmp(t, "n") == 0) {
            r->type = GS_RVAL_NULL;
        } else {
            goto out;
        }
        *n = i + 1;
    }
    rc = 0;
out:
    json_decref(root);
    if (rc != 0) {
        rvals_free(*v, *n);
        *v = NULL;
        *n = 0;
    }
    return rc;
}

/* What a row costs in a page: its values' bytes plus 8 per column. */
static size_t row_bytes(sqlite3_stmt *st, int first)
{
    size_t b = 0;
    for (int c = first; c < sqlite3_column_count(st); c++) {
        int t = sqlite3_column_type(st, c);
        b += 8 + ((t == SQLITE_TEXT || t == SQLITE_BLOB) ? (size_t)sqlite3_column_bytes(st, c) : 0);
    }
    return b;
}

/* Stream one table in keyset pages; resume (NULL = from the start) continues after the
 * joiner's last page. Fills the manifest. 0 = every page acknowledged. */
static int send_table(struct gs_sync_source *s, gs_conn *conn, const char *table,
                      const gs_sync_resume *resume, gs_sync_manifest *mf, char *why, size_t whylen)
{
    gs_repl_engine *e = s->e;
    sqlite3 *db = gs_conn_db(conn);
    keyset ks;
    if (keyset_init(db, table, &ks, why, whylen) != 0)
        return -1;
    sqlite3_stmt *first = keyset_prepare(db, table, &ks, 0, why, whylen);
    sqlite3_stmt *next = first ? keyset_prepare(db, table, &ks, 1, why, whylen) : NULL;
    size_t cap = e->o.sync_batch_size > 0 ? (size_t)e->o.sync_batch_size : 10000;
    size_t max_bytes =
        e->o.sync_batch_max_bytes > 0 ? (size_t)e->o.sync_batch_max_bytes : (size_t)4 << 20;
    size_t nkeys = ks.by_rowid ? 1 : ks.ncols;
    gs_rrow *rows = (first && next) ? gs_calloc(cap, sizeof *rows) : NULL;
    gs_rval *cur = NULL, *key = NULL; /* the cursor, and the key of the last row read */
    size_t ncur = 0;
    char *cur_json = NULL;
    char digest[65] = "";
    int64_t total = 0;
    int32_t index = 0;
    int rc = 0;
    if (!rows) {
        if (first && next)
            snprintf(why, whylen, "out of memory");
        rc = -1;
        goto done;
    }
    if (resume) {
        if (cursor_parse(&ks, resume->cursor, &cur, &ncur) == 0 && resume->digest &&
            strlen(resume->digest) == 64 && resume->batch_index >= 0 && resume->rows >= 0 &&
            (cur_json = gs_strdup(resume->cursor))) {
            snprintf(digest, sizeof digest, "%s", resume->digest);
            total = resume->rows;
            index = resume->batch_index + 1;
            gs_log(GS_LOG_INFO, "repl",
                   "database '%s': first sync of %s: table '%s' continues at page %d after %lld "
                   "rows",
                   gs_db_id(e->db), s->joiner, table, (int)index, (long long)total);
        } else {
            rvals_free(cur, ncur);
            cur = NULL;
            ncur = 0;
            gs_log(GS_LOG_WARN, "repl",
                   "database '%s': first sync of %s: the resume cursor of table '%s' does not fit "
                   "its key; the table is sent from the start",
                   gs_db_id(e->db), s->joiner, table);
        }
    }
    if (!(key = gs_calloc(nkeys, sizeof *key))) {
        snprintf(why, whylen, "out of memory");
        rc = -1;
        goto done;
    }
    for (;;) {
        sqlite3_stmt *q = cur ? next : first;
        sqlite3_reset(q);
        sqlite3_clear_bindings(q);
        for (size_t i = 0; cur && i < ncur; i++)
            gs_repl_bind_rval(q, (int)i + 1, &cur[i]);
        sqlite3_bind_int64(q, (int)(cur ? ncur : 0) + 1, (sqlite3_int64)cap + 1);
        size_t n = 0, bytes = 0;
        int more = 0, step;
        gs_error err;
        gs_error_init(&err);
        while ((step = sqlite3_step(q)) == SQLITE_ROW) {
            size_t rb = row_bytes(q, ks.skip);
            if (n == cap || (n > 0 && bytes + rb > max_bytes)) {
                more = 1; /* this row opens the next page */
                break;
            }
            for (int c = ks.skip; c < sqlite3_column_count(q) && rc == 0; c++) {
                gs_rval v;
                if (gs_repl_column_rval(q, c, &v, &err) != GS_OK ||
                    gs_rrow_add_take(&rows[n], sqlite3_column_name(q, c), &v, &err) != GS_OK)
                    rc = -1;
            }
            for (size_t i = 0; i < nkeys && rc == 0; i++) {
                gs_rval_free(&key[i]);
                if (gs_repl_column_rval(q, ks.by_rowid ? 0 : ks.idx[i], &key[i], &err) != GS_OK)
                    rc = -1;
            }
            n++;
            bytes += rb;
            if (rc != 0) {
                snprintf(why, whylen, "reading '%s': %s", table, err.message);
                break;
            }
        }
        if (rc == 0 && step != SQLITE_ROW && step != SQLITE_DONE) {
            snprintf(why, whylen, "reading '%s': %s", table, sqlite3_errmsg(db));
            rc = -1;
        }
        sqlite3_reset(q); /* the values bound from cur stay valid until here */
        char *page_cursor = NULL;
        if (rc == 0 && n > 0 && !(page_cursor = cursor_json(&ks, key, nkeys))) {
            snprintf(why, whylen, "out of memory");
            rc = -1;
        }
        gs_sync_message m;
        memset(&m, 0, sizeof m);
        m.kind = GS_SMSG_BATCH;
        m.batch.request_id = s->request_id;
        m.batch.table = (char *)table;
        m.batch.batch_index = index;
        m.batch.rows = rows;
        m.batch.nrows = n;
        m.batch.is_last_batch_for_table = !more;
        m.batch.cursor = page_cursor ? page_cursor : cur_json;
        char sum[65];
        if (rc == 0 && gs_repl_rows_checksum(rows, n, sum, &err) != GS_OK) {
            snprintf(why, whylen, "%s", err.message);
            rc = -1;
        }
        m.batch.checksum = sum;
        if (rc == 0)
            rc = send_page(s, &m, why, whylen);
        free_rows(rows, n);
        if (rc != 0) {
            gs_free(page_cursor);
            break;
        }
        gs_repl_digest_step(digest, sum);
        total += (int64_t)n;
        index++;
        if (page_cursor) {
            /* the next page starts after this one's last row */
            gs_free(cur_json);
            cur_json = page_cursor;
            rvals_free(cur, ncur);
            cur = key;
            ncur = nkeys;
            if (!(key = gs_calloc(nkeys, sizeof *key))) {
                snprintf(why, whylen, "out of memory");
                rc = -1;
                break;
            }
        }
        if (!more)
            break;
    }
done:
    sqlite3_finalize(first);
    sqlite3_finalize(next);
    gs_free(rows);
    rvals_free(cur, ncur);
    rvals_free(key, key ? nkeys : 0);
    gs_free(cur_json);
    keyset_free(&ks);
    if (rc == 0) {
        mf->table = gs_strdup(table);
        mf->row_count = (int32_t)total;
        if (s->verify)
            mf->batch_digest = gs_strdup(digest);
        else {
            gs_error err;
            gs_error_init(&err);
            char h[65];
            if (pk_hash(conn, table, h, &err) != GS_OK) {
                snprintf(why, whylen, "%s", err.message);
                return -1;
            }
            mf->pk_hash = gs_strdup(h);
        }
    }
    return rc;
}

static void *source_main(void *arg)
{
    struct gs_sync_source *s = arg;
    gs_repl_engine *e = s->e;
    char why[400] = "";
    gs_conn *conn = NULL;
    gs_conn_options co;
    memset(&co, 0, sizeof co);
    co.path = gs_db_path(e->db);
    co.role = GS_CONN_READER;
    co.busy_timeout_ms = 5000;
    co.wal_autocheckpoint = -1;
    gs_error err;
    gs_error_init(&err);
    tbl_list t;
    memset(&t, 0, sizeof t);
    gs_sync_complete done;
    memset(&done, 0, sizeof done);
    int64_t snapshot = 0, oldest = 0;
    int use_resume = 1;
    /* hold the log from before the snapshot until it is fixed (see gs_repl_sync_hold) */
    pthread_mutex_lock(&s->mu);
    s->hold = gs_db_committed_seq(e->db);
    if (s->resume_seq > 0 && s->resume_seq < s->hold)
        s->hold = s->resume_seq;
    pthread_mutex_unlock(&s->mu);
    if (gs_conn_open(&co, &conn, &err) != GS_OK || exec(conn, "BEGIN", &err) != GS_OK) {
        snprintf(why, sizeof why, "%s", err.message);
        goto out;
    }
    {
        /* the first read fixes the snapshot: the seq and every table come from it */
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(gs_conn_db(conn),
                               "SELECT COALESCE(MAX(seq), 0) FROM "
                               "_sirannon_changes",
                               -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            snapshot = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    oldest = snapshot;
    /* A joiner that names no resume seq (a reference node, as the spec has it) keeps its
     * completed tables and catches up from snapshotSeq, as before. */
    if (s->resume_seq > 0 && (s->ncompleted || s->nresume)) {
        /* The joiner keeps parts of older snapshots and catches up from the oldest one, so
         * the log must still hold every change after it; otherwise it gets everything again. */
        int64_t min_seq = -1;
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(gs_conn_db(conn), "SELECT MIN(seq) FROM _sirannon_changes", -1, &st,
                               NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
            min_seq = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        int ok = s->resume_seq <= snapshot &&
                 (s->resume_seq == snapshot || (min_seq > 0 && min_seq <= s->resume_seq + 1));
        if (ok) {
            oldest = s->resume_seq;
        } else {
            gs_log(GS_LOG_WARN, "repl",
                   "database '%s': first sync of %s: its kept tables come from snapshot seq "
                   "%lld but %s; every table is sent again from its first page",
                   gs_db_id(e->db), s->joiner, (long long)s->resume_seq,
                   s->resume_seq > snapshot ? "this node's log ends before it (another history)"
                                            : "the log no longer holds the changes after it");
            for (size_t i = 0; i < s->ncompleted; i++)
                gs_free(s->completed[i]);
            s->ncompleted = 0;
            use_resume = 0;
        }
    }
    pthread_mutex_lock(&s->mu);
    s->hold = oldest;
    pthread_mutex_unlock(&s->mu);
    if (read_schema(conn, &t, &err) != GS_OK) {
        snprintf(why, sizeof why, "%s", err.message);
        goto out;
    }
    {
        size_t todo = 0;
        int64_t total_rows = 0; /* what the joiner will hold: for its progress and ETA */
        for (size_t i = 0; i < t.n; i++) {
            int skip = 0;
            for (size_t k = 0; k < s->ncompleted; k++)
                skip |= strcmp(s->completed[k], t.names[i]) == 0;
            todo += !skip;
            if (skip)
                continue;
            gs_buf q;
            gs_buf_init(&q);
            gs_buf_puts(&q, "SELECT count(*) FROM ");
            gs_repl_quote_ident(&q, t.names[i]);
            sqlite3_stmt *st = NULL;
            if (sqlite3_prepare_v2(gs_conn_db(conn), q.data, (int)q.len, &st, NULL) == SQLITE_OK &&
                sqlite3_step(st) == SQLITE_ROW)
                total_rows += sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
            gs_buf_free(&q);
        }
        gs_sync_message m;
        memset(&m, 0, sizeof m);
        m.kind = GS_SMSG_BATCH;
        m.batch.request_id = s->request_id;
        m.batch.table = SCHEMA_TABLE;
        m.batch.batch_index = 0;
        m.batch.schema = t.schema;
        m.batch.nschema = t.nschema;
        m.batch.is_last_batch_for_table = 1;
        m.batch.total_tables = (int32_t)todo;
        m.batch.snapshot_seq = snapshot;
        m.batch.total_rows = total_rows;
        char sum[65];
        if (gs_repl_strings_checksum(t.schema, t.nschema, sum, &err) != GS_OK) {
            snprintf(why, sizeof why, "%s", err.message);
            goto out;
        }
        m.batch.checksum = sum;
        if (send_page(s, &m, why, sizeof why) != 0)
            goto out;
        done.manifests = gs_calloc(todo ? todo : 1, sizeof *done.manifests);
        if (!done.manifests) {
            snprintf(why, sizeof why, "out of memory");
            goto out;
        }
    }
    for (size_t i = 0; i < t.n; i++) {
        int skip = 0;
        for (size_t k = 0; k < s->ncompleted; k++)
            skip |= strcmp(s->completed[k], t.names[i]) == 0;
        if (skip)
            continue;
        const gs_sync_resume *r = NULL;
        for (size_t k = 0; use_resume && k < s->nresume; k++)
            if (s->resume[k].table && strcmp(s->resume[k].table, t.names[i]) == 0)
                r = &s->resume[k];
        if (send_table(s, conn, t.names[i], r, &done.manifests[done.nmanifests], why, sizeof why))
            goto out;
        done.nmanifests++;
    }
    {
        gs_sync_message m;
        memset(&m, 0, sizeof m);
        m.kind = GS_SMSG_COMPLETE;
        done.request_id = s->request_id;
        done.snapshot_seq = snapshot;
        m.complete = done;
        if (send_sync(e, s->joiner, &m, &err) != GS_OK)
            snprintf(why, sizeof why, "%s", err.message);
        done.request_id = NULL;
    }
out:
    if (!why[0] && !e->auth) {
        /* The joiner goes on from snapshotSeq (spec 03 First Sync, step 5) and need not report
         * that position: a reference-implementation joiner reports one only on connecting, so
         * waiting for it would never stream the catch-up. A report that came first wins. A
         * joiner that resumed parts of older snapshots goes on from the oldest of them. */
        pthread_mutex_lock(&e->mu);
        gs_peer *p = gs_repl_peer_find(e, s->joiner);
        if (p && p->connected && !p->positioned && !p->is_primary) {
            p->last_sent_seq = oldest;
            if (p->last_acked_seq < oldest) /* it holds the snapshot (verified by manifests) */
                p->last_acked_seq = oldest;
            p->ninflight = 0;
            p->positioned = 1;
            p->has_position = 1; /* retention holds the log from its last ack */
            e->timer_wake = 1;
            pthread_cond_signal(&e->timer_cond);
        }
        pthread_mutex_unlock(&e->mu);
    }
    if (why[0]) {
        gs_error_set(&err, 0, "SYNC_ERROR", "serving the first sync of %s stopped: %s", s->joiner,
                     why);
        gs_repl_note_error(e, &err, "first sync", s->joiner);
    } else {
        gs_log(GS_LOG_INFO, "repl",
               "database '%s': first sync of %s served (%zu tables, snapshot seq %lld, the "
               "joiner goes on from seq %lld)",
               gs_db_id(e->db), s->joiner, done.nmanifests, (long long)snapshot, (long long)oldest);
    }
    done.request_id = NULL;
    gs_sync_complete_free(&done);
    tbl_list_free(&t);
    if (conn) {
        gs_conn_exec(conn, "ROLLBACK", &(gs_error){0});
        gs_conn_close(conn);
    }
    pthread_mutex_lock(&s->mu);
    s->finished = 1;
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&e->mu);
    e->timer_wake = 1; /* reap it */
    pthread_cond_signal(&e->timer_cond);
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

static void source_free(struct gs_sync_source *s)
{
    for (size_t i = 0; i < s->ncompleted; i++)
        gs_free(s->completed[i]);
    gs_free(s->completed);
    for (size_t i = 0; i < s->nresume; i++) {
        gs_free(s->resume[i].table);
        gs_free(s->resume[i].cursor);
        gs_free(s->resume[i].digest);
    }
    gs_free(s->resume);
    gs_free(s->joiner);
    gs_free(s->request_id);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    gs_free(s);
}

static void source_start(gs_repl_engine *e, const char *from, const gs_sync_request *r)
{
    const char *refuse = NULL;
    pthread_mutex_lock(&e->mu);
    gs_peer *p = gs_repl_peer_find(e, from);
    if (!p || p->is_primary || !e->is_primary)
        refuse = "this node serves first syncs only to its configured replicas";
    else if ((int64_t)e->nsources >= e->o.max_concurrent_syncs)
        refuse = "too many syncs in progress (maxConcurrentSyncs); retry shortly";
    for (size_t i = 0; !refuse && i < e->nsources; i++)
        if (strcmp(e->sources[i]->joiner, from) == 0) {
            /* a new request replaces the joiner's old sync */
            pthread_mutex_lock(&e->sources[i]->mu);
            e->sources[i]->stop = 1;
            pthread_cond_signal(&e->sources[i]->cv);
            pthread_mutex_unlock(&e->sources[i]->mu);
        }
    pthread_mutex_unlock(&e->mu);
    if (refuse) {
        send_sync_ack(e, from, r->request_id ? r->request_id : "", SCHEMA_TABLE, -1, 0, refuse);
        gs_log(GS_LOG_WARN, "repl", "database '%s': sync request from %s refused: %s",
               gs_db_id(e->db), from, refuse);
        return;
    }
    struct gs_sync_source *s = gs_calloc(1, sizeof *s);
    if (!s)
        return;
    s->e = e;
    s->joiner = gs_strdup(from);
    s->request_id = gs_strdup(r->request_id ? r->request_id : "");
    s->verify = r->supports_stream_verification;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    for (size_t i = 0; i < r->ncompleted; i++)
        push(&s->completed, &s->ncompleted, r->completed_tables[i]);
    s->hold = INT64_MAX;
    s->resume_seq = r->resume_snapshot_seq;
    if (r->nresume && (s->resume = gs_calloc(r->nresume, sizeof *s->resume))) {
        for (size_t i = 0; i < r->nresume; i++) {
            const gs_sync_resume *in = &r->resume[i];
            gs_sync_resume *c = &s->resume[s->nresume];
            c->table = in->table ? gs_strdup(in->table) : NULL;
            c->cursor = in->cursor ? gs_strdup(in->cursor) : NULL;
            c->digest = in->digest ? gs_strdup(in->digest) : NULL;
            c->batch_index = in->batch_index;
            c->rows = in->rows;
            s->nresume++;
        }
    }
    pthread_mutex_lock(&e->mu);
    struct gs_sync_source **ns = gs_realloc(e->sources, (e->nsources + 1) * sizeof *ns);
    if (!ns || !s->joiner || !s->request_id) {
        pthread_mutex_unlock(&e->mu);
        source_free(s);
        return;
    }
    e->sources = ns;
    e->sources[e->nsources++] = s;
    if (pthread_create(&s->thread, NULL, source_main, s) != 0) {
        e->nsources--;
        pthread_mutex_unlock(&e->mu);
        source_free(s);
        return;
    }
    pthread_mutex_unlock(&e->mu);
    gs_log(GS_LOG_INFO, "repl", "database '%s': serving a first sync to %s (request %s)",
           gs_db_id(e->db), from, r->request_id ? r->request_id : "");
}

/* ---- dispatch, deadlines, stop ---- */

void gs_repl_sync_in(gs_repl_engine *e, const char *from, const uint8_t *bytes, size_t len)
{
    gs_sync_message m;
    gs_error err;
    gs_error_init(&err);
    if (gs_sync_message_decode(bytes, len, &m, &err) != GS_OK) {
        gs_repl_note_error(e, &err, "an undecodable sync message", from);
        return;
    }
    pthread_mutex_lock(&e->mu);
    struct gs_sync_joiner *j = e->joiner;
    int from_source = j && strcmp(j->source, from) == 0;
    pthread_mutex_unlock(&e->mu);
    if (e->auth && (m.kind == GS_SMSG_BATCH || m.kind == GS_SMSG_COMPLETE)) {
        /* coordinator mode: only the current primary, in the current term, syncs this node */
        int has = m.kind == GS_SMSG_BATCH ? m.batch.has_term : m.complete.has_term;
        int64_t term = m.kind == GS_SMSG_BATCH ? m.batch.primary_term : m.complete.primary_term;
        if (gs_repl_coord_check_sender(e, from, has, term, "sync message", &err) != GS_OK) {
            gs_repl_note_error(e, &err, "sync message rejected", from);
            gs_sync_message_free(&m);
            return;
        }
    } else if (e->auth && m.kind == GS_SMSG_REQUEST) {
        int64_t term = 0;
        if (gs_authority_can_write(e->auth, &term, &err) != GS_OK || !m.request.has_term ||
            m.request.primary_term != term) {
            if (!err.code[0])
                gs_error_set(&err, 0, "STALE_PRIMARY", "sync request for another term");
            gs_repl_note_error(e, &err, "sync request refused", from);
            gs_sync_message_free(&m);
            return;
        }
    }
    switch (m.kind) {
    case GS_SMSG_REQUEST: source_start(e, from, &m.request); break;
    case GS_SMSG_ACK:
        if (from_source && m.ack.batch_index == -1 && !m.ack.success && m.ack.request_id &&
            strcmp(m.ack.request_id, j->request_id) == 0) {
            /* the source refused the request: ask again shortly */
            gs_log(GS_LOG_WARN, "repl", "database '%s': %s refused the sync: %s; retrying",
                   gs_db_id(e->db), from, m.ack.error ? m.ack.error : "");
            pthread_mutex_lock(&e->mu);
            j->retry_at_ms = gs_repl_now_ms() + JOINER_RETRY_MS;
            pthread_mutex_unlock(&e->mu);
        } else if (!gs_repl_resync_notice_in(e, from, &m.ack)) {
            source_ack_in(e, &m.ack);
        }
        break;
    case GS_SMSG_BATCH:
        if (from_source)
            joiner_batch(e, j, from, &m.batch);
        break;
    case GS_SMSG_COMPLETE:
        if (from_source)
            joiner_complete(e, j, from, &m.complete);
        break;
    default: break;
    }
    gs_sync_message_free(&m);
}

int64_t gs_repl_sync_tick(gs_repl_engine *e, int64_t now)
{
    int64_t next = 0;
    /* reap finished sources */
    for (;;) {
        struct gs_sync_source *done = NULL;
        pthread_mutex_lock(&e->mu);
        for (size_t i = 0; i < e->nsources; i++) {
            struct gs_sync_source *src = e->sources[i];
            pthread_mutex_lock(&src->mu);
            int fin = src->finished;
            pthread_mutex_unlock(&src->mu);
            if (fin) {
                done = src;
                e->sources[i] = e->sources[--e->nsources];
                break;
            }
        }
        pthread_mutex_unlock(&e->mu);
        if (!done)
            break;
        pthread_join(done->thread, NULL);
        source_free(done);
    }
    /* joiner: retry a refused or silent request */
    pthread_mutex_lock(&e->mu);
    struct gs_sync_joiner *j = e->joiner;
    int retry = 0;
    if (j) {
        /* longer than the source's resend schedule: its resends of a lost page come first */
        int64_t silent = j->last_msg_ms + e->o.sync_ack_timeout_ms * JOINER_SILENCE_FACTOR;
        if ((j->retry_at_ms && now >= j->retry_at_ms) || now >= silent) {
            retry = 1;
            j->retry_at_ms = 0;
            j->last_msg_ms = now; /* one retry per silence */
        }
        next = j->retry_at_ms ? j->retry_at_ms : silent;
    }
    int catching = strcmp(e->phase, "catching-up") == 0;
    int64_t quiet_since =
        e->catch_up_started_ms > e->last_batch_ms ? e->catch_up_started_ms : e->last_batch_ms;
    int64_t started = e->catch_up_started_ms;
    int primary_up = 0;
    for (size_t i = 0; i < e->npeers; i++)
        primary_up |= e->peers[i].is_primary && e->peers[i].connected;
    pthread_mutex_unlock(&e->mu);
    if (retry)
        gs_repl_post_sync_retry(e); /* the joiner belongs to the inbound thread */
    if (catching) {
        if (now - started >= e->o.catch_up_deadline_ms)
            become_ready(e, "catchUpDeadlineMs passed");
        else if (primary_up && now - quiet_since >= 3 * e->o.batch_interval_ms)
            become_ready(e, "the primary has nothing more to send");
        else if (!next || quiet_since + 3 * e->o.batch_interval_ms < next)
            next = quiet_since + 3 * e->o.batch_interval_ms;
    }
    return next;
}

void gs_repl_sync_retry(gs_repl_engine *e)
{
    pthread_mutex_lock(&e->mu);
    struct gs_sync_joiner *j = e->joiner;
    pthread_mutex_unlock(&e->mu);
    if (j)
        joiner_request(e, j);
}

void gs_repl_sync_stop(gs_repl_engine *e)
{
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->nsources; i++) {
        pthread_mutex_lock(&e->sources[i]->mu);
        e->sources[i]->stop = 1;
        pthread_cond_signal(&e->sources[i]->cv);
        pthread_mutex_unlock(&e->sources[i]->mu);
    }
    struct gs_sync_source **src = e->sources;
    size_t n = e->nsources;
    e->sources = NULL;
    e->nsources = 0;
    struct gs_sync_joiner *j = e->joiner;
    e->joiner = NULL;
    e->sync_prog.active = 0;
    pthread_mutex_unlock(&e->mu);
    for (size_t i = 0; i < n; i++) {
        pthread_join(src[i]->thread, NULL);
        source_free(src[i]);
    }
    gs_free(src);
    joiner_free(j);
}

uint64_t gs_repl_sync_hold(gs_repl_engine *e)
{
    uint64_t hold = UINT64_MAX;
    for (size_t i = 0; i < e->nsources; i++) {
        struct gs_sync_source *s = e->sources[i];
        pthread_mutex_lock(&s->mu);
        if (!s->finished && s->hold >= 0 && s->hold != INT64_MAX && (uint64_t)s->hold < hold)
            hold = (uint64_t)s->hold;
        pthread_mutex_unlock(&s->mu);
    }
    return hold;
}

void gs_repl_sync_progress(gs_repl_engine *e, gs_sync_progress *out)
{
    int64_t now = gs_repl_now_ms();
    pthread_mutex_lock(&e->mu);
    *out = e->sync_prog;
    const struct gs_sync_joiner *j = e->joiner;
    if (j && out->active) {
        out->elapsed_ms = now - j->started_ms;
        double secs = (double)out->elapsed_ms / 1000.0;
        out->rows_per_sec = secs > 0 ? (double)j->rows_recv / secs : 0;
    }
    pthread_mutex_unlock(&e->mu);
    out->eta_seconds = -1;
    if (out->active && out->rows_total > 0 && out->rows_per_sec > 0)
        out->eta_seconds =
            (int64_t)((double)(out->rows_total > out->rows ? out->rows_total - out->rows : 0) /
                      out->rows_per_sec);
}

void gs_repl_sync_status_fields(gs_repl_engine *e, gs_buf *b)
{
    gs_sync_progress p;
    gs_repl_sync_progress(e, &p);
    if (!p.active)
        return;
    gs_buf_puts(b, ",\"syncProgress\":{\"source\":");
    gs_buf_json_string(b, p.source, strlen(p.source));
    gs_buf_printf(b,
                  ",\"tablesDone\":%lld,\"tablesTotal\":%lld,\"rows\":%lld,\"rowsTotal\":%lld,"
                  "\"bytes\":%lld,\"rowsPerSecond\":%.1f,\"etaSeconds\":%lld,"
                  "\"elapsedMs\":%lld,\"tablesResumed\":%llu,\"tablesRestarted\":%llu}",
                  (long long)p.tables_done, (long long)p.tables_total, (long long)p.rows,
                  (long long)p.rows_total, (long long)p.bytes, p.rows_per_sec,
                  (long long)p.eta_seconds, (long long)p.elapsed_ms,
                  (unsigned long long)p.tables_resumed, (unsigned long long)p.tables_restarted);
}
