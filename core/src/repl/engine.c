/*
 * The replication engine: lifecycle, the inbound queue, the sender loop, acknowledgements,
 * write concern and status (see engine.h). Forwarding lives in forward.c, first sync in
 * sync.c.
 */
#include "engine_internal.h"

#include "base/alloc.h"
#include "base/log.h"
#include "db/cdc_internal.h"
#include "repl/checksum.h"
#include "repl/codec.h"
#include "repl/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Past this many bytes queued from the transport, batches are dropped (the sender
 * retransmits them after its ack timeout) rather than growing without bound. */
#define INBOUND_MAX_BYTES ((size_t)256 << 20)
/* Peer positions are written to _sirannon_peer_state at most this often. */
#define PEER_STATE_SAVE_MS 1000

int64_t gs_repl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void gs_repl_options_default(gs_repl_options *o)
{
    memset(o, 0, sizeof *o);
    o->role = "primary";
    o->batch_size = 100;
    o->batch_interval_ms = 100;
    o->max_pending_batches = 10;
    o->max_batch_changes = 1000;
    o->max_clock_drift_ms = 60000;
    o->ack_timeout_ms = 5000;
    o->initial_sync = 1;
    o->sync_batch_size = 10000;
    o->sync_batch_max_bytes = 4 << 20;
    o->max_concurrent_syncs = 2;
    o->max_sync_duration_ms = 1800000;
    o->max_sync_lag_before_ready = 100;
    o->sync_ack_timeout_ms = 30000;
    o->catch_up_deadline_ms = 600000;
    o->forward_deadline_ms = 30000;
    o->write_concern = "local";
    o->write_concern_timeout_ms = 5000;
    o->resume_from_seq = -1;
}

gs_peer *gs_repl_peer_find(gs_repl_engine *e, const char *id)
{
    for (size_t i = 0; i < e->npeers; i++)
        if (strcmp(e->peers[i].id, id) == 0)
            return &e->peers[i];
    return NULL;
}

void gs_repl_note_error(gs_repl_engine *e, const gs_error *err, const char *what, const char *peer)
{
    gs_log(GS_LOG_WARN, "repl", "database '%s': %s%s%s: %s: %s", gs_db_id(e->db), what,
           peer ? " from/to peer " : "", peer ? peer : "", err->code, err->message);
    pthread_mutex_lock(&e->mu);
    gs_error_copy(&e->last_error, err);
    pthread_mutex_unlock(&e->mu);
}

void gs_repl_set_phase(gs_repl_engine *e, const char *phase)
{
    pthread_mutex_lock(&e->mu);
    int changed = strcmp(e->phase, phase) != 0;
    snprintf(e->phase, sizeof e->phase, "%s", phase);
    if (changed && strcmp(phase, "catching-up") == 0)
        e->catch_up_started_ms = gs_repl_now_ms();
    pthread_mutex_unlock(&e->mu);
    if (changed)
        gs_log(GS_LOG_INFO, "repl", "database '%s': sync phase is now %s", gs_db_id(e->db), phase);
}

gs_repl_resolver_ref gs_repl_resolver_for(void *engine, const char *table)
{
    gs_repl_engine *e = engine;
    for (size_t i = 0; i < e->nresolvers; i++)
        if (strcmp(e->resolvers[i].table, table) == 0)
            return e->resolvers[i].ref;
    return e->o.default_resolver;
}

gs_status gs_repl_on_writer(gs_repl_engine *e, gs_db_writer_fn fn, void *user, gs_error *err)
{
    return gs_cdc_writer_call_sync(e->db, fn, user, err);
}

gs_status gs_repl_send_message(gs_repl_engine *e, const char *to, const gs_repl_message *m,
                               gs_error *err)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    gs_repl_message stamped = *m;
    int64_t term = gs_repl_coord_term(e);
    if (term > 0 && m->kind == GS_RMSG_ACK) {
        stamped.ack.group_id = e->group_id;
        stamped.ack.has_term = 1;
        stamped.ack.primary_term = term;
    }
    if (gs_repl_message_encode(&stamped, &bytes, &len, err) != GS_OK)
        return GS_ERROR;
    gs_error_init(err);
    gs_status st = e->o.transport->send(e->o.transport_instance, to, GS_REPL_MSG_REPLICATION, 0,
                                        bytes, len, err);
    gs_free(bytes);
    if (st != GS_OK && !err->code[0])
        gs_error_set(err, 0, "TRANSPORT_ERROR", "the transport could not queue a message for %s",
                     to);
    return st;
}

/* ---- the inbound queue (transport threads -> inbound thread) ---- */

static void enqueue(gs_repl_engine *e, const char *from, gs_repl_msg_type type, uint64_t call_id,
                    const uint8_t *bytes, size_t len, int peer_event)
{
    gs_inbound *m = gs_malloc(sizeof *m + len);
    char *f = gs_strdup(from ? from : "");
    if (!m || !f) {
        gs_free(m);
        gs_free(f);
        gs_log(GS_LOG_ERROR, "repl", "out of memory: a message from %s was dropped",
               from ? from : "?");
        return;
    }
    m->next = NULL;
    m->from = f;
    m->type = type;
    m->call_id = call_id;
    m->len = len;
    m->peer_event = peer_event;
    if (len)
        memcpy(m->bytes, bytes, len);
    pthread_mutex_lock(&e->mu);
    /* Batches past the bound are dropped (retransmitted later); control traffic never is. */
    if (!peer_event && type == GS_REPL_MSG_REPLICATION && e->in_bytes + len > INBOUND_MAX_BYTES) {
        pthread_mutex_unlock(&e->mu);
        gs_log(GS_LOG_WARN, "repl",
               "database '%s': inbound queue full (%zu bytes); a message from %s was dropped "
               "and will be retransmitted",
               gs_db_id(e->db), e->in_bytes, from);
        gs_free(m->from);
        gs_free(m);
        return;
    }
    if (e->stop) {
        pthread_mutex_unlock(&e->mu);
        gs_free(m->from);
        gs_free(m);
        return;
    }
    if (e->in_tail)
        e->in_tail->next = m;
    else
        e->in_head = m;
    e->in_tail = m;
    e->in_bytes += len;
    pthread_cond_signal(&e->in_cond);
    pthread_mutex_unlock(&e->mu);
}

static void on_message(void *user, const char *from, gs_repl_msg_type type, uint64_t call_id,
                       const uint8_t *bytes, size_t len)
{
    enqueue(user, from, type, call_id, bytes, len, 0);
}

static void on_peer(void *user, const char *node_id, int connected)
{
    enqueue(user, node_id, GS_REPL_MSG_REPLICATION, (uint64_t)(connected != 0), NULL, 0, 1);
}

static void wake_timer(gs_repl_engine *e)
{
    pthread_mutex_lock(&e->mu);
    e->timer_wake = 1;
    pthread_cond_signal(&e->timer_cond);
    pthread_mutex_unlock(&e->mu);
}

static void on_commit(void *user, int64_t seq)
{
    (void)seq;
    gs_repl_engine *e = user;
    if (e->is_primary || e->tmodes) /* with table modes every node sends */
        wake_timer(e);
}

/* ---- write concern ---- */

/* Under mu: is the wait met? Counts the replicas this node replicates to. */
static int concern_met(gs_repl_engine *e, const gs_concern_wait *w)
{
    if (e->auth)
        return gs_repl_coord_concern_met(e, w);
    int connected = 0, acked = 0;
    for (size_t i = 0; i < e->npeers; i++) {
        const gs_peer *p = &e->peers[i];
        if (p->is_primary || !p->connected)
            continue;
        connected++;
        if (p->last_acked_seq >= w->target_seq)
            acked++;
    }
    if (w->all)
        return acked >= connected;
    return acked >= connected / 2 + 1;
}

/* Under mu: move met waits (or all, with expire_before > 0 those past it) to out. */
static void collect_waits(gs_repl_engine *e, int64_t now, gs_concern_wait **met,
                          gs_concern_wait **expired)
{
    gs_concern_wait **pp = &e->waits;
    while (*pp) {
        gs_concern_wait *w = *pp;
        if (concern_met(e, w)) {
            *pp = w->next;
            w->next = *met;
            *met = w;
        } else if (now > 0 && now >= w->deadline_ms) {
            *pp = w->next;
            w->next = *expired;
            *expired = w;
        } else {
            pp = &w->next;
        }
    }
}

static void finish_waits(gs_concern_wait *met, gs_concern_wait *expired)
{
    while (met) {
        gs_concern_wait *w = met;
        met = w->next;
        w->done(w->user, GS_OK, NULL);
        gs_free(w);
    }
    while (expired) {
        gs_concern_wait *w = expired;
        expired = w->next;
        gs_error err;
        gs_error_init(&err);
        gs_error_set(&err, 0, "WRITE_CONCERN_ERROR",
                     "the write committed on the primary but %s of the connected replicas did "
                     "not acknowledge seq %lld in time; it may still replicate",
                     w->all ? "all" : "a majority", (long long)w->target_seq);
        w->done(w->user, GS_ERROR, &err);
        gs_free(w);
    }
}

static void check_waits(gs_repl_engine *e, int64_t now)
{
    gs_concern_wait *met = NULL, *expired = NULL;
    pthread_mutex_lock(&e->mu);
    collect_waits(e, now, &met, &expired);
    pthread_mutex_unlock(&e->mu);
    finish_waits(met, expired);
}

const char *gs_repl_default_concern(const gs_repl_engine *e)
{
    return e->write_concern;
}

void gs_repl_await_concern(gs_repl_engine *e, const char *level, int64_t timeout_ms,
                           void (*done)(void *user, gs_status st, const gs_error *err), void *user)
{
    if (!level)
        level = e->write_concern;
    if (e->auth && !e->is_primary) {
        /* coordinator mode: the write committed here after this node lost the primary role */
        gs_error err;
        gs_error_init(&err);
        gs_error_set(&err, 0, "AUTHORITY_LOST",
                     "this node stopped being the primary before the write was acknowledged");
        gs_authority_error_details(e->auth, &err);
        done(user, GS_ERROR, &err);
        return;
    }
    if (strcmp(level, "local") == 0 || !e->is_primary) {
        done(user, GS_OK, NULL);
        return;
    }
    gs_concern_wait *w = gs_calloc(1, sizeof *w);
    if (!w) {
        gs_error err;
        gs_error_init(&err);
        gs_error_set(&err, 0, "WRITE_CONCERN_ERROR",
                     "out of memory while waiting for the write concern");
        done(user, GS_ERROR, &err);
        return;
    }
    w->target_seq = gs_db_committed_seq(e->db);
    w->all = strcmp(level, "all") == 0;
    w->started_ms = gs_repl_now_ms();
    w->deadline_ms = w->started_ms + (timeout_ms > 0 ? timeout_ms : e->o.write_concern_timeout_ms);
    w->done = done;
    w->user = user;
    pthread_mutex_lock(&e->mu);
    if (e->stop) {
        pthread_mutex_unlock(&e->mu);
        gs_free(w);
        gs_error err;
        gs_error_init(&err);
        gs_error_set(&err, 0, "SHUTDOWN", "the node is shutting down");
        done(user, GS_ERROR, &err);
        return;
    }
    if (concern_met(e, w)) {
        pthread_mutex_unlock(&e->mu);
        gs_free(w);
        done(user, GS_OK, NULL);
        return;
    }
    w->next = e->waits;
    e->waits = w;
    e->timer_wake = 1; /* recompute the nearest deadline */
    pthread_cond_signal(&e->timer_cond);
    pthread_mutex_unlock(&e->mu);
}

/* ---- receive side ---- */

typedef struct apply_call {
    gs_repl_engine *e;
    const gs_repl_batch *b;
    int in_group;        /* inside apply_group_fn's transaction: no savepoint of its own */
    const gs_peer *from; /* the sending peer (table modes: what this node takes from it) */
    gs_repl_apply_result res;
} apply_call;

/* Table modes: take only the tables this node pulls (writer thread). */
static int want_change(void *user, const gs_repl_change *c)
{
    const apply_call *ac = user;
    return gs_repl_table_pulls(ac->e, ac->from, c->table);
}

static gs_status apply_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    apply_call *ac = user;
    gs_repl_engine *e = ac->e;
    /* checked again here, ordered with the new primary's termStart read on this thread */
    if (gs_repl_coord_check_sender(e, ac->b->source_node_id, ac->b->has_term, ac->b->primary_term,
                                   "batch", err) != GS_OK)
        return GS_ERROR;
    gs_repl_apply_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.clock = gs_cdc_clock(e->db);
    ctx.local_node_id = e->node_id;
    ctx.primary_node_id = ac->b->source_node_id;
    ctx.resolver = gs_repl_resolver_for;
    ctx.resolver_user = e;
    ctx.max_clock_drift_ms = e->o.max_clock_drift_ms;
    ctx.keep_column_versions = e->o.keep_column_versions;
    ctx.cdc = e->db->cdc;
    ctx.in_caller_tx = ac->in_group;
    if (e->tmodes) {
        ctx.want = want_change;
        ctx.want_user = ac;
    }
    return gs_repl_apply_batch(conn, &ctx, ac->b, &ac->res, err);
}

static void send_ack(gs_repl_engine *e, const char *to, const char *batch_id, int64_t seq)
{
    gs_repl_message m;
    memset(&m, 0, sizeof m);
    m.kind = GS_RMSG_ACK;
    m.ack.batch_id = (char *)batch_id;
    m.ack.acked_seq = seq;
    m.ack.node_id = e->node_id;
    gs_error err;
    gs_error_init(&err);
    if (gs_repl_send_message(e, to, &m, &err) != GS_OK)
        gs_log(GS_LOG_DEBUG, "repl", "database '%s': ack to %s not sent: %s", gs_db_id(e->db), to,
               err.message);
}

/* Record the error, then count the rejection (a reader of the counter sees the error). */
static void count_rejection(gs_repl_engine *e, const gs_error *err, const char *what,
                            const char *from)
{
    gs_repl_note_error(e, err, what, from);
    pthread_mutex_lock(&e->mu);
    e->counters.rejected++;
    pthread_mutex_unlock(&e->mu);
}

static void reject(gs_repl_engine *e, const char *from, const char *code, const char *fmt,
                   const char *arg)
{
    gs_error err;
    gs_error_init(&err);
    gs_error_set(&err, 0, code, fmt, arg);
    count_rejection(e, &err, "batch rejected", from);
}

/* ---- batches queued together are applied together ----
 *
 * The inbound thread checks each batch as it comes off the queue and stages it; the staged
 * batches are applied when the queue runs dry, before any other message is handled, or when
 * the group is full: all of them in one writer transaction (one commit), each with its own
 * validation, result, position row and ack, and a crash leaves either every staged batch
 * applied with its position or none. The batches run without savepoints (a savepoint copies
 * every page it touches); should one fail, the whole transaction is rolled back and the
 * group applied again one batch per transaction, which gives each batch its exact outcome. */
/* Bounded so that one group keeps the writer (which serves nothing else meanwhile) for a
 * short while and its dirty pages within SQLite's page cache (2 MB by default; past it pages
 * are spilled to the WAL in the middle of the transaction). */
#define GROUP_MAX_BATCHES 16
#define GROUP_MAX_CHANGES 1000

typedef struct staged_batch {
    char *from;
    gs_peer *p;
    gs_repl_message msg; /* owned; the batch is msg.batch */
    apply_call ac;
    gs_status st;
    gs_error err;
} staged_batch;

typedef struct batch_group {
    staged_batch items[GROUP_MAX_BATCHES];
    size_t n, changes;
    int split; /* a batch failed in the group transaction: apply them one by one */
} batch_group;

static void rollback_group(gs_conn *conn)
{
    gs_error e;
    if (!sqlite3_get_autocommit(gs_conn_db(conn)))
        gs_conn_exec(conn, "ROLLBACK", &e);
}

/* Writer thread: the staged batches in one transaction. GS_ERROR (nothing applied) when the
 * transaction itself fails; g->split (nothing applied) when a batch failed. */
static gs_status apply_group_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    batch_group *g = user;
    g->split = 0;
    if (gs_conn_exec(conn, "BEGIN IMMEDIATE", err) != GS_OK) {
        gs_error_prefix(err, "beginning the apply transaction");
        return GS_ERROR;
    }
    for (size_t i = 0; i < g->n && !g->split; i++) {
        staged_batch *s = &g->items[i];
        s->ac.in_group = 1;
        s->st = apply_fn(&s->ac, conn, out, &s->err);
        g->split = s->st != GS_OK;
    }
    if (g->split) {
        rollback_group(conn);
        return GS_OK;
    }
    if (gs_conn_exec(conn, "COMMIT", err) != GS_OK) {
        rollback_group(conn);
        gs_error_prefix(err, "committing the applied batches");
        return GS_ERROR;
    }
    return GS_OK;
}

/* After the apply: counters, position, ack, sync readiness (inbound thread). */
static void finish_batch(gs_repl_engine *e, staged_batch *s)
{
    const char *from = s->from;
    const gs_repl_batch *b = &s->msg.batch;
    gs_peer *p = s->p;
    apply_call ac = s->ac;
    if (s->st != GS_OK) {
        gs_repl_apply_result_free(&ac.res);
        count_rejection(e, &s->err, "applying a batch failed (nothing of it was applied)", from);
        return;
    }
    for (size_t i = 0; i < ac.res.ndropped; i++)
        gs_log(GS_LOG_INFO, "repl", "database '%s': table '%s' dropped by replicated DDL",
               gs_db_id(e->db), ac.res.dropped_tables[i]);
    gs_log(GS_LOG_DEBUG, "repl",
           "database '%s': batch %s from %s: applied %zu, skipped %zu, conflicts %zu%s%s, "
           "position %lld",
           gs_db_id(e->db), b->batch_id ? b->batch_id : "", from, ac.res.applied, ac.res.skipped,
           ac.res.conflicts, ac.res.duplicate ? ", duplicate" : "", ac.res.gap ? ", gap" : "",
           (long long)ac.res.applied_seq);
    pthread_mutex_lock(&e->mu);
    if (ac.res.gap)
        e->counters.batches_gap++;
    else if (ac.res.duplicate)
        e->counters.batches_duplicate++;
    else {
        e->counters.batches_applied++;
        e->counters.changes_applied += ac.res.applied;
        e->counters.conflicts += ac.res.conflicts;
    }
    /* with table modes each peer is a source with its own position; e->applied_seq stays
     * the position in the primary's log (sync phase, status) */
    int from_primary = !e->tmodes || p->is_primary;
    if (ac.res.applied_seq > p->applied_seq)
        p->applied_seq = ac.res.applied_seq;
    if (from_primary && ac.res.applied_seq > e->applied_seq)
        e->applied_seq = ac.res.applied_seq;
    if (from_primary)
        e->last_batch_ms = gs_repl_now_ms();
    if (b->hlc_max)
        snprintf(p->last_received_hlc, sizeof p->last_received_hlc, "%s", b->hlc_max);
    int64_t applied = from_primary ? e->applied_seq : p->applied_seq;
    e->counters.changes_filtered += ac.res.filtered;
    pthread_mutex_unlock(&e->mu);
    if (ac.res.filtered)
        gs_log(GS_LOG_DEBUG, "repl",
               "database '%s': batch %s from %s: %zu changes of tables this node does not take "
               "from it skipped (databases[].tables)",
               gs_db_id(e->db), b->batch_id ? b->batch_id : "", from, ac.res.filtered);
    /* A gap answers with the position, so the sender rewinds at once. */
    send_ack(e, from, ac.res.gap ? "" : (b->batch_id ? b->batch_id : ""), applied);
    gs_repl_apply_result_free(&ac.res);
    if (from_primary)
        gs_repl_sync_check_ready(e, (int64_t)b->nchanges);
}

/* Apply the staged batches (inbound thread), then answer each in order. */
static void flush_group(gs_repl_engine *e, batch_group *g)
{
    if (g->n == 0)
        return;
    gs_error err;
    gs_error_init(&err);
    for (size_t i = 0; i < g->n; i++) {
        memset(&g->items[i].ac.res, 0, sizeof g->items[i].ac.res);
        gs_error_init(&g->items[i].err);
    }
    gs_status st = g->n == 1 ? gs_repl_on_writer(e, apply_fn, &g->items[0].ac, &g->items[0].err)
                             : gs_repl_on_writer(e, apply_group_fn, g, &err);
    if (g->n == 1)
        g->items[0].st = st;
    if (g->n > 1 && st == GS_OK && g->split) {
        /* nothing of the group was kept: each batch in its own transaction, as if alone */
        for (size_t i = 0; i < g->n; i++) {
            staged_batch *s = &g->items[i];
            gs_repl_apply_result_free(&s->ac.res);
            gs_error_init(&s->err);
            s->ac.in_group = 0;
            s->st = gs_repl_on_writer(e, apply_fn, &s->ac, &s->err);
        }
    }
    for (size_t i = 0; i < g->n; i++) {
        staged_batch *s = &g->items[i];
        if (g->n > 1 && st != GS_OK) {
            s->st = GS_ERROR;
            gs_error_copy(&s->err, &err);
        }
        finish_batch(e, s);
        gs_repl_message_free(&s->msg);
        gs_free(s->from);
    }
    g->n = 0;
    g->changes = 0;
}

/* Take a checked batch into the group (its message is moved: *msg is left empty). */
static void stage_batch(gs_repl_engine *e, batch_group *g, const char *from, gs_peer *p,
                        gs_repl_message *msg)
{
    if (g->n == GROUP_MAX_BATCHES || g->changes + msg->batch.nchanges > GROUP_MAX_CHANGES)
        flush_group(e, g);
    staged_batch *s = &g->items[g->n];
    memset(s, 0, sizeof *s);
    s->from = gs_strdup(from);
    if (!s->from) {
        gs_log(GS_LOG_ERROR, "repl", "out of memory: batch %s from %s dropped (it is resent)",
               msg->batch.batch_id ? msg->batch.batch_id : "", from);
        return;
    }
    s->p = p;
    s->msg = *msg;
    memset(msg, 0, sizeof *msg);
    s->ac.e = e;
    s->ac.b = &s->msg.batch;
    s->ac.from = p;
    g->changes += s->msg.batch.nchanges;
    g->n++;
}

static void receive_batch(gs_repl_engine *e, const char *from, gs_repl_message *msg,
                          batch_group *group)
{
    const gs_repl_batch *b = &msg->batch;
    pthread_mutex_lock(&e->mu);
    e->counters.batches_received++;
    int accepting = strcmp(e->phase, "ready") == 0 || strcmp(e->phase, "catching-up") == 0;
    gs_peer *p = gs_repl_peer_find(e, from);
    int peer_primary = p && p->is_primary;
    pthread_mutex_unlock(&e->mu);

    if (!accepting)
        return reject(e, from, "REPLICATION_ERROR",
                      "batch %s arrived while this node is not ready or catching up (it is "
                      "still syncing); the sender will retransmit",
                      b->batch_id ? b->batch_id : "");
    if (!b->source_node_id || strcmp(b->source_node_id, from) != 0)
        return reject(e, from, "TOPOLOGY_ERROR",
                      "batch sourceNodeId '%s' does not match the peer that sent it",
                      b->source_node_id ? b->source_node_id : "");
    if (!p)
        return reject(e, from, "TOPOLOGY_ERROR", "batch from '%s', which is not a configured peer",
                      from);
    if (e->auth) {
        gs_error ferr;
        gs_error_init(&ferr);
        if (gs_repl_coord_check_sender(e, from, b->has_term, b->primary_term, "batch", &ferr) !=
            GS_OK) {
            count_rejection(e, &ferr, "batch rejected", from);
            return;
        }
    } else if (!e->tmodes && (e->is_primary || !peer_primary))
        return reject(e, from, "TOPOLOGY_ERROR",
                      "batch from '%s' refused: in static mode a replica accepts batches only "
                      "from the primary",
                      from);
    if (e->tmodes) {
        /* after forget_joiner_position only a batch from the start of its log is taken; one
         * sent before the peer rewound is answered with the position again */
        pthread_mutex_lock(&e->mu);
        int rewind = p->restart_pending && b->from_seq > 1;
        if (p->restart_pending && !rewind)
            p->restart_pending = 0;
        pthread_mutex_unlock(&e->mu);
        if (rewind) {
            send_ack(e, from, "", 0);
            return;
        }
    }
    if ((int64_t)b->nchanges > e->o.max_batch_changes)
        return reject(e, from, "BATCH_VALIDATION_ERROR",
                      "batch %s holds more changes than maxBatchChanges allows",
                      b->batch_id ? b->batch_id : "");
    if (b->nchanges > 0 && b->hlc_max && b->hlc_max[0]) {
        /* Only a stamp ahead of this clock is refused: old changes (a replica catching up
         * after a day away) are fine, but a peer must not drag the clock forward. */
        gs_hlc_ts ts;
        gs_error derr;
        int64_t ahead = gs_hlc_decode(b->hlc_max, &ts, &derr) == GS_OK
                            ? ts.wall_ms - gs_hlc_physical_ms()
                            : INT64_MAX;
        if (ahead > e->o.max_clock_drift_ms)
            return reject(e, from, "BATCH_VALIDATION_ERROR",
                          "batch hlcRange.max '%s' is malformed or runs ahead of this node's "
                          "clock by more than maxClockDriftMs",
                          b->hlc_max);
    }

    stage_batch(e, group, from, p, msg); /* applied with the batches queued behind it */
}

/* ---- send side ---- */

static void receive_ack(gs_repl_engine *e, const char *from, const gs_repl_ack *a)
{
    gs_log(GS_LOG_DEBUG, "repl", "database '%s': ack from %s: batch '%s', seq %lld",
           gs_db_id(e->db), from, a->batch_id ? a->batch_id : "", (long long)a->acked_seq);
    int64_t cur_term = 0;
    if (e->auth) {
        /* coordinator mode: acks count only for this node's own current term (a position
         * report may arrive just before this node's engine has taken up the role) */
        char prim[GS_GROUP_ID_MAX];
        gs_authority_current(e->auth, &cur_term, prim, sizeof prim);
        if (!a->has_term || a->primary_term != cur_term || strcmp(prim, e->node_id) != 0) {
            gs_log(GS_LOG_DEBUG, "repl", "database '%s': ack from %s for term %lld ignored",
                   gs_db_id(e->db), from, (long long)(a->has_term ? a->primary_term : 0));
            return;
        }
    }
    pthread_mutex_lock(&e->mu);
    gs_peer *p = gs_repl_peer_find(e, from);
    if (!p || (!e->tmodes && (p->is_primary || (!e->is_primary && !e->auth)))) {
        pthread_mutex_unlock(&e->mu);
        gs_log(GS_LOG_DEBUG, "repl",
               "database '%s': ack from %s ignored (not a replica of "
               "this primary)",
               gs_db_id(e->db), from);
        return;
    }
    int position = !a->batch_id || !a->batch_id[0];
    if (position) {
        /* The replica's applied position: replicate from there. */
        p->last_acked_seq = a->acked_seq;
        p->last_sent_seq = a->acked_seq;
        p->ninflight = 0;
        p->positioned = 1;
        p->pos_term = cur_term;
    } else {
        if (a->acked_seq > p->last_acked_seq)
            p->last_acked_seq = a->acked_seq;
        int k = 0;
        for (int i = 0; i < p->ninflight; i++)
            if (p->inflight[i].to_seq > p->last_acked_seq)
                p->inflight[k++] = p->inflight[i];
        p->ninflight = k;
        if (p->last_sent_seq < p->last_acked_seq)
            p->last_sent_seq = p->last_acked_seq;
    }
    p->last_ack_ms = gs_repl_now_ms();
    p->has_position = 1;
    e->timer_wake = 1;
    pthread_cond_signal(&e->timer_cond);
    pthread_mutex_unlock(&e->mu);
    check_waits(e, 0);
}

/* ---- inbound thread ---- */

static void peer_event(gs_repl_engine *e, const char *id, int connected)
{
    pthread_mutex_lock(&e->mu);
    gs_peer *p = gs_repl_peer_find(e, id);
    if (!p) {
        pthread_mutex_unlock(&e->mu);
        gs_log(GS_LOG_WARN, "repl",
               "database '%s': node '%s' connected but is not in replication.peers; it is "
               "ignored",
               gs_db_id(e->db), id);
        return;
    }
    p->connected = connected;
    p->connected_ms = gs_repl_now_ms();
    p->positioned = 0;
    p->ninflight = 0;
    int primary = p->is_primary;
    int ready = strcmp(e->phase, "ready") == 0 || strcmp(e->phase, "catching-up") == 0;
    int64_t applied = e->applied_seq;
    int64_t peer_applied = p->applied_seq;
    e->timer_wake = 1;
    pthread_cond_signal(&e->timer_cond);
    pthread_mutex_unlock(&e->mu);
    gs_log(GS_LOG_INFO, "repl", "database '%s': peer %s (%s) %s", gs_db_id(e->db), id,
           primary ? "primary" : "replica", connected ? "connected" : "disconnected");
    if (!connected) {
        check_waits(e, 0); /* "all" counts connected replicas only */
        return;
    }
    if (e->o.coordinator) {
        /* coordinator mode: the group state says whom to follow (a peer that connects before
         * the coordinator has spoken is followed once the view arrives) */
        if (e->auth && !e->is_primary && primary)
            gs_repl_coord_apply_view(e); /* follow (or sync from) the primary that came up */
        return;
    }
    if (!e->is_primary && primary) {
        if (ready)
            send_ack(e, id, "", applied); /* spec 03 Peer Tracking: report the position */
        else
            gs_repl_sync_maybe_start(e, id);
    } else if (e->tmodes) {
        /* table modes: this node also takes changes from the peer: report where it stands */
        send_ack(e, id, "", peer_applied);
    }
}

void gs_repl_post_sync_retry(gs_repl_engine *e)
{
    enqueue(e, "", GS_REPL_MSG_SYNC, 0, NULL, 0, 2);
}

void gs_repl_post_view_change(gs_repl_engine *e)
{
    enqueue(e, "", GS_REPL_MSG_SYNC, 0, NULL, 0, 3);
}

typedef struct forget_call {
    const char *peer;
} forget_call;

static gs_status forget_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    return gs_repl_apply_record_position(conn, ((forget_call *)user)->peer, 0, err);
}

/* Table modes, primary: a peer asking for a first sync starts afresh, and so may its own log
 * (a node id reused with a new database): what this node applied from it is forgotten, and
 * the peer is told to send its log from the start (applying it again is idempotent). */
static void forget_joiner_position(gs_repl_engine *e, const char *from, const uint8_t *bytes,
                                   size_t len)
{
    gs_sync_message sm;
    gs_error err;
    gs_error_init(&err);
    if (gs_sync_message_decode(bytes, len, &sm, &err) != GS_OK)
        return; /* the sync layer reports it */
    int request = sm.kind == GS_SMSG_REQUEST;
    gs_sync_message_free(&sm);
    pthread_mutex_lock(&e->mu);
    gs_peer *p = gs_repl_peer_find(e, from);
    int known = p && !p->is_primary;
    pthread_mutex_unlock(&e->mu);
    if (!request || !known)
        return;
    forget_call fc = {from};
    if (gs_repl_on_writer(e, forget_fn, &fc, &err) != GS_OK) {
        gs_repl_note_error(e, &err, "forgetting the position of a joining peer", from);
        return;
    }
    pthread_mutex_lock(&e->mu);
    p->applied_seq = 0;
    p->restart_pending = 1;
    pthread_mutex_unlock(&e->mu);
    gs_log(GS_LOG_INFO, "repl",
           "database '%s': %s asked for a first sync: its changes are taken again from the start "
           "of its log",
           gs_db_id(e->db), from);
    send_ack(e, from, "", 0);
}

static void dispatch(gs_repl_engine *e, gs_inbound *m, batch_group *group)
{
    if (m->peer_event || m->type != GS_REPL_MSG_REPLICATION)
        flush_group(e, group); /* staged batches come first */
    if (m->peer_event == 2) {
        gs_repl_sync_retry(e);
        return;
    }
    if (m->peer_event == 3) {
        gs_repl_coord_apply_view(e);
        return;
    }
    if (m->peer_event) {
        peer_event(e, m->from, (int)m->call_id);
        return;
    }
    switch (m->type) {
    case GS_REPL_MSG_REPLICATION: {
        gs_repl_message msg;
        gs_error err;
        gs_error_init(&err);
        if (gs_repl_message_decode(m->bytes, m->len, &msg, &err) != GS_OK) {
            reject(e, m->from, "BATCH_VALIDATION_ERROR", "an undecodable message: %s", err.message);
            return;
        }
        if (msg.kind == GS_RMSG_BATCH) {
            receive_batch(e, m->from, &msg, group);
        } else {
            flush_group(e, group);
            if (msg.kind == GS_RMSG_ACK)
                receive_ack(e, m->from, &msg.ack);
        }
        gs_repl_message_free(&msg);
        break;
    }
    case GS_REPL_MSG_SYNC:
        if (e->tmodes && e->is_primary)
            forget_joiner_position(e, m->from, m->bytes, m->len);
        gs_repl_sync_in(e, m->from, m->bytes, m->len);
        break;
    case GS_REPL_MSG_FORWARD_REQUEST:
        gs_repl_forward_request_in(e, m->from, m->call_id, m->bytes, m->len);
        break;
    case GS_REPL_MSG_FORWARD_RESPONSE:
        gs_repl_forward_response_in(e, m->from, m->call_id, m->bytes, m->len);
        break;
    default:
        gs_log(GS_LOG_WARN, "repl", "database '%s': message of unknown type %d from %s dropped",
               gs_db_id(e->db), (int)m->type, m->from);
    }
}

static void *inbound_main(void *arg)
{
    gs_repl_engine *e = arg;
    batch_group *group = gs_calloc(1, sizeof *group);
    if (!group) {
        gs_log(GS_LOG_ERROR, "repl", "database '%s': out of memory starting the inbound thread",
               gs_db_id(e->db));
        return NULL;
    }
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->in_head && !e->stop) {
            if (group->n) {
                /* the queue ran dry: apply what was staged */
                pthread_mutex_unlock(&e->mu);
                flush_group(e, group);
                pthread_mutex_lock(&e->mu);
                continue;
            }
            pthread_cond_wait(&e->in_cond, &e->mu);
        }
        if (e->stop)
            break;
        gs_inbound *m = e->in_head;
        e->in_head = m->next;
        if (!e->in_head)
            e->in_tail = NULL;
        e->in_bytes -= m->len;
        pthread_mutex_unlock(&e->mu);
        dispatch(e, m, group);
        gs_free(m->from);
        gs_free(m);
        pthread_mutex_lock(&e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    /* stopping: staged batches are dropped unapplied (never acknowledged, so the primary
     * sends them again from this node's applied position) */
    for (size_t i = 0; i < group->n; i++) {
        gs_repl_message_free(&group->items[i].msg);
        gs_free(group->items[i].from);
    }
    gs_free(group);
    return NULL;
}

/* ---- timer thread: the sender loop and every deadline ---- */

/* Table modes: keep only the changes of tables this node emits, and checksum what is left. The
 * batch still covers its whole range, so the receiver's position moves past what it never
 * gets (an all-filtered range gives an empty batch). */
static gs_status filter_batch(gs_repl_engine *e, gs_repl_batch *b, gs_error *err)
{
    size_t k = 0;
    for (size_t i = 0; i < b->nchanges; i++) {
        if (gs_repl_table_emits(e, b->changes[i].table)) {
            if (k != i)
                b->changes[k] = b->changes[i];
            k++;
        } else {
            gs_repl_change_free(&b->changes[i]);
        }
    }
    if (k == b->nchanges)
        return GS_OK;
    b->nchanges = k;
    char sum[65];
    if (gs_repl_changes_checksum(b->changes, b->nchanges, sum, err) != GS_OK)
        return GS_ERROR;
    char *c = gs_strdup(sum);
    if (!c)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory filtering a batch");
    gs_free(b->checksum);
    b->checksum = c;
    return GS_OK;
}

/* ---- a replica behind the retained log resyncs ----
 *
 * The primary refuses to stream to a replica whose position is below pruned_seq and sends it,
 * on the Sync stream, a SyncAck from the source with success false, batchIndex -1, an empty
 * requestId, table RESYNC_TABLE and the reason in error: the shape a sync source already uses
 * to refuse a request, which a node not expecting it ignores (it matches no sync of its own).
 * A static-mode replica of ours that hears it from its primary while ready or catching up
 * runs a first sync again (gs_repl_sync_reset, gs_repl_sync_maybe_start). */
#define RESYNC_TABLE "__resync__"

/* Timer thread. */
static void send_resync_notice(gs_repl_engine *e, const char *peer, int64_t position,
                               uint64_t pruned, int first)
{
    char why[320];
    snprintf(why, sizeof why,
             "REPLICATION_ERROR: this replica is at seq %lld but %s pruned its change log up to "
             "seq %llu; the changes in between are gone, so it must resync (a first sync)",
             (long long)position, e->node_id, (unsigned long long)pruned);
    gs_sync_message m;
    memset(&m, 0, sizeof m);
    m.kind = GS_SMSG_ACK;
    m.ack.request_id = "";
    m.ack.joiner_node_id = (char *)peer;
    m.ack.table = RESYNC_TABLE;
    m.ack.batch_index = -1;
    m.ack.success = 0;
    m.ack.error = why;
    uint8_t *bytes = NULL;
    size_t len = 0;
    gs_error err;
    gs_error_init(&err);
    if (gs_sync_message_encode(&m, &bytes, &len, &err) == GS_OK) {
        gs_error_init(&err);
        if (e->o.transport->send(e->o.transport_instance, peer, GS_REPL_MSG_SYNC, 0, bytes, len,
                                 &err) == GS_OK) {
            /* repeated every ack_timeout_ms while it stays behind (it may be syncing): the
             * first one is the news */
            gs_log(first ? GS_LOG_WARN : GS_LOG_DEBUG, "repl",
                   "database '%s': replica %s is at seq %lld, below the pruned log (seq %llu): "
                   "told it to resync",
                   gs_db_id(e->db), peer, (long long)position, (unsigned long long)pruned);
            gs_free(bytes);
            return;
        }
    }
    gs_free(bytes);
    gs_log(GS_LOG_DEBUG, "repl", "database '%s': resync notice to %s not sent: %s (retried)",
           gs_db_id(e->db), peer, err.code[0] ? err.message : "the transport refused it");
}

int gs_repl_resync_notice_in(gs_repl_engine *e, const char *from, const gs_sync_ack *a)
{
    if (a->success || a->batch_index != -1 || (a->request_id && a->request_id[0]) || !a->table ||
        strcmp(a->table, RESYNC_TABLE) != 0)
        return 0;
    const char *why = a->error && a->error[0] ? a->error : "the primary pruned its change log";
    pthread_mutex_lock(&e->mu);
    gs_peer *p = gs_repl_peer_find(e, from);
    int from_primary = p && p->is_primary;
    int streaming = strcmp(e->phase, "ready") == 0 || strcmp(e->phase, "catching-up") == 0;
    int64_t applied = e->applied_seq;
    pthread_mutex_unlock(&e->mu);
    if (e->auth || e->is_primary || !from_primary || !streaming ||
        (a->joiner_node_id && a->joiner_node_id[0] && strcmp(a->joiner_node_id, e->node_id))) {
        gs_log(GS_LOG_DEBUG, "repl", "database '%s': resync notice from %s ignored (%s)",
               gs_db_id(e->db), from,
               e->auth || e->is_primary ? "not a static-mode replica"
               : !from_primary          ? "not this replica's primary"
               : !streaming             ? "a sync is already under way"
                                        : "addressed to another node");
        return 1;
    }
    if (!e->o.initial_sync) {
        gs_error err;
        gs_error_init(&err);
        gs_error_set(&err, 0, "REPLICATION_ERROR",
                     "primary %s cannot stream to this replica (%s), and replication.initial_sync "
                     "is off: give this node a fresh database, or turn initial_sync on so it "
                     "resyncs by itself",
                     from, why);
        gs_repl_note_error(e, &err, "replicating", from);
        return 1;
    }
    gs_log(GS_LOG_WARN, "repl",
           "database '%s': resyncing from %s: %s (this replica applied up to seq %lld). Its "
           "tables are copied afresh by a first sync",
           gs_db_id(e->db), from, why, (long long)applied);
    gs_repl_sync_reset(e);
    gs_repl_sync_maybe_start(e, from);
    return 1;
}

/* Send batches to one replica until its window is full or the log is drained. Returns 1
 * when it stopped because more remains and the window has room (call again). */
static int send_to_peer(gs_repl_engine *e, size_t idx)
{
    pthread_mutex_lock(&e->mu);
    gs_peer *p = &e->peers[idx];
    if (e->stop || !p->connected || !p->positioned || (p->is_primary && !e->tmodes) ||
        p->ninflight >= e->o.max_pending_batches || p->ninflight >= GS_REPL_MAX_INFLIGHT) {
        pthread_mutex_unlock(&e->mu);
        return 0;
    }
    int64_t after = p->last_sent_seq;
    char peer_id[128];
    snprintf(peer_id, sizeof peer_id, "%s", p->id);
    int reported = p->behind_reported;
    uint64_t pruned = atomic_load(&e->db->cdc->pruned_seq);
    if ((uint64_t)after < pruned) {
        /* retention deleted changes this replica never had: sending the rest would lose
         * them silently. Static mode tells it to resync (it runs a first sync again) and
         * repeats that every ack_timeout_ms while it stays behind; coordinator mode has its
         * own repair path. */
        int64_t now = gs_repl_now_ms();
        /* per-table modes: a replica node feeding its primary (the peer here) cannot make
         * the primary run a first sync from it */
        int upstream = p->is_primary;
        int notify = !e->auth && !upstream &&
                     (!p->resync_notice_ms || now - p->resync_notice_ms >= e->o.ack_timeout_ms);
        if (notify)
            p->resync_notice_ms = now;
        p->behind_reported = 1;
        pthread_mutex_unlock(&e->mu);
        if (!reported) {
            gs_error err;
            gs_error_init(&err);
            if (upstream)
                gs_error_set(&err, 0, "REPLICATION_ERROR",
                             "primary %s is at seq %lld of this node's changes but the change "
                             "log was pruned up to %llu (cdc.retention_ms, cdc.max_log_bytes, "
                             "cdc.max_log_changes): the changes in between to the tables this "
                             "node sends it are lost to it, and a primary never runs a first "
                             "sync from a replica. Those rows differ on %s until they change "
                             "again here; copy the tables to it by hand if that matters, and "
                             "raise the bound on this node",
                             peer_id, (long long)after, (unsigned long long)pruned, peer_id);
            else
                gs_error_set(&err, 0, "REPLICATION_ERROR",
                             "replica %s is at seq %lld but the change log was pruned up to %llu "
                             "(cdc.retention_ms, cdc.max_log_bytes, cdc.max_log_changes); it "
                             "cannot catch up from the log: %s",
                             peer_id, (long long)after, (unsigned long long)pruned,
                             e->auth ? "give it a fresh database so it syncs again, or raise the "
                                       "retention"
                                     : "it is told to resync (a first sync); raise the bound if "
                                       "this repeats");
            gs_repl_note_error(e, &err, "replicating", peer_id);
        }
        if (notify)
            send_resync_notice(e, peer_id, after, pruned, !reported);
        return 0;
    }
    if (p->behind_reported) {
        /* back within the log (it resynced): report afresh should it fall behind again */
        p->behind_reported = 0;
        p->resync_notice_ms = 0;
    }
    pthread_mutex_unlock(&e->mu);

    /* Replicas in step ask for the same range: the batch read and encoded for one is sent
     * as is to the next (a range of the log never changes once committed). */
    gs_error err;
    gs_error_init(&err);
    int64_t term = gs_repl_coord_term(e);
    /* table modes: the primary also relays what it applied from the other replicas (never
     * back to their origin), so the batch depends on the peer */
    int relay = e->tmodes && e->is_primary;
    if (!e->cache.bytes || e->cache.after != after || e->cache.term != term ||
        (relay && strcmp(e->cache.peer, peer_id) != 0)) {
        gs_repl_batch b;
        memset(&b, 0, sizeof b);
        int empty = 1;
        gs_status rst = relay ? gs_repl_read_batch_relay(e->log_conn, e->node_id, peer_id, after,
                                                         (size_t)e->o.batch_size, &b, &empty, &err)
                              : gs_repl_read_batch(e->log_conn, e->node_id, after,
                                                   (size_t)e->o.batch_size, &b, &empty, &err);
        if (rst != GS_OK) {
            gs_repl_note_error(e, &err, "reading the change log", NULL);
            return 0;
        }
        if (empty) {
            gs_repl_batch_free(&b);
            return 0;
        }
        if (e->tmodes && filter_batch(e, &b, &err) != GS_OK) {
            gs_repl_batch_free(&b);
            gs_repl_note_error(e, &err, "filtering a batch by table mode", NULL);
            return 0;
        }
        gs_repl_message m;
        memset(&m, 0, sizeof m);
        m.kind = GS_RMSG_BATCH;
        m.batch = b;
        if (term > 0) {
            m.batch.group_id = e->group_id; /* borrowed: b itself is freed below */
            m.batch.has_term = 1;
            m.batch.primary_term = term;
        }
        uint8_t *bytes = NULL;
        size_t len = 0;
        gs_status est = gs_repl_message_encode(&m, &bytes, &len, &err);
        int64_t from = b.from_seq, to = b.to_seq;
        size_t n = b.nchanges;
        gs_repl_batch_free(&b);
        if (est != GS_OK) {
            gs_repl_note_error(e, &err, "encoding a batch", NULL);
            return 0;
        }
        gs_free(e->cache.bytes);
        e->cache.bytes = bytes;
        e->cache.len = len;
        e->cache.after = after;
        e->cache.term = term;
        snprintf(e->cache.peer, sizeof e->cache.peer, "%s", peer_id);
        e->cache.from = from;
        e->cache.to = to;
        e->cache.n = n;
    }
    gs_error_init(&err);
    gs_status st = e->o.transport->send(e->o.transport_instance, peer_id, GS_REPL_MSG_REPLICATION,
                                        0, e->cache.bytes, e->cache.len, &err);
    int more = 0;
    pthread_mutex_lock(&e->mu);
    if (st == GS_OK) {
        e->counters.batches_sent++;
        /* Register unless the position moved under us (a position ack rewound it). */
        if (p->last_sent_seq == after && p->connected && p->ninflight < GS_REPL_MAX_INFLIGHT) {
            gs_inflight *f = &p->inflight[p->ninflight++];
            f->from_seq = e->cache.from;
            f->to_seq = e->cache.to;
            f->sent_ms = gs_repl_now_ms();
            p->last_sent_seq = e->cache.to;
            more = (int64_t)e->cache.n >= e->o.batch_size;
        }
    }
    pthread_mutex_unlock(&e->mu);
    if (st != GS_OK)
        gs_log(GS_LOG_DEBUG, "repl", "database '%s': batch to %s not sent: %s", gs_db_id(e->db),
               peer_id, err.code[0] ? err.message : "the transport refused it");
    return more;
}

/* Expire in-flight batches past ack_timeout_ms: rewind to the earliest lost batch. */
static int64_t expire_inflight(gs_repl_engine *e, int64_t now)
{
    int64_t next = 0;
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->npeers; i++) {
        gs_peer *p = &e->peers[i];
        int expired = 0;
        int64_t earliest = INT64_MAX;
        for (int k = 0; k < p->ninflight; k++) {
            if (now - p->inflight[k].sent_ms >= e->o.ack_timeout_ms)
                expired = 1;
            if (p->inflight[k].from_seq < earliest)
                earliest = p->inflight[k].from_seq;
            int64_t due = p->inflight[k].sent_ms + e->o.ack_timeout_ms;
            if (!next || due < next)
                next = due;
        }
        if (expired) {
            p->last_sent_seq = earliest - 1 > p->last_acked_seq ? earliest - 1 : p->last_acked_seq;
            p->ninflight = 0;
            e->counters.retransmits++;
            gs_log(GS_LOG_INFO, "repl",
                   "database '%s': no ack from %s within ackTimeoutMs; retransmitting from "
                   "seq %lld",
                   gs_db_id(e->db), p->id, (long long)p->last_sent_seq + 1);
        }
    }
    pthread_mutex_unlock(&e->mu);
    return next;
}

typedef struct peer_save {
    char id[128];
    int64_t acked;
    char hlc[256];
} peer_save;

typedef struct save_call {
    peer_save *v;
    size_t n;
} save_call;

static gs_status save_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    save_call *sc = user;
    for (size_t i = 0; i < sc->n; i++)
        if (gs_repl_peer_state_save(conn, sc->v[i].id, sc->v[i].acked, sc->v[i].hlc, err) != GS_OK)
            return GS_ERROR;
    return GS_OK;
}

static void save_peer_states(gs_repl_engine *e, int64_t *saved_acked)
{
    peer_save v[64];
    size_t n = 0;
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->npeers && n < 64; i++) {
        gs_peer *p = &e->peers[i];
        int64_t mark = p->is_primary && !e->tmodes ? e->applied_seq : p->last_acked_seq;
        if (mark == saved_acked[i])
            continue;
        saved_acked[i] = mark;
        snprintf(v[n].id, sizeof v[n].id, "%s", p->id);
        v[n].acked = mark;
        snprintf(v[n].hlc, sizeof v[n].hlc, "%s", p->last_received_hlc);
        n++;
    }
    pthread_mutex_unlock(&e->mu);
    if (!n)
        return;
    save_call sc = {v, n};
    gs_error err;
    gs_error_init(&err);
    if (gs_repl_on_writer(e, save_fn, &sc, &err) != GS_OK)
        gs_log(GS_LOG_DEBUG, "repl", "database '%s': saving peer state: %s", gs_db_id(e->db),
               err.message);
}

static void check_lag(gs_repl_engine *e, int64_t now)
{
    if (e->o.flow_max_lag_seconds <= 0 || !e->o.on_lag_exceeded || !e->is_primary)
        return;
    int64_t head = gs_db_committed_seq(e->db);
    char ids[64][128];
    double lags[64];
    int n = 0;
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->npeers && n < 64; i++) {
        gs_peer *p = &e->peers[i];
        if (p->is_primary || !p->connected)
            continue;
        if (p->last_acked_seq >= head) {
            p->lag_reported = 0;
            p->last_ack_ms = now;
            continue;
        }
        int64_t since = p->last_ack_ms ? p->last_ack_ms : p->connected_ms;
        double lag = (double)(now - since) / 1000.0;
        if (lag > e->o.flow_max_lag_seconds && !p->lag_reported) {
            p->lag_reported = 1;
            snprintf(ids[n], sizeof ids[n], "%s", p->id);
            lags[n++] = lag;
        }
    }
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < n; i++)
        e->o.on_lag_exceeded(e->o.user, ids[i], lags[i]);
}

/* Retention keeps what the replicas have not acknowledged yet: every replica that has ever
 * reported a position holds the log above it (one never seen holds nothing, so a configured
 * node that never comes does not stop pruning for ever). */
static void hold_log(gs_repl_engine *e)
{
    if (!e->is_primary && !e->tmodes) /* table modes: every node's log feeds its peers */
        return;
    uint64_t hold = UINT64_MAX, upstream = UINT64_MAX;
    /* a replica already below what retention deleted is told to resync (send_to_peer): it no
     * longer needs the log, so it holds nothing */
    uint64_t pruned = atomic_load(&e->db->cdc->pruned_seq);
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->npeers; i++) {
        gs_peer *p = &e->peers[i];
        if ((!p->is_primary || e->tmodes) && (p->has_position || p->last_acked_seq > 0) &&
            (uint64_t)p->last_acked_seq >= pruned && (uint64_t)p->last_acked_seq < hold)
            hold = (uint64_t)p->last_acked_seq;
        /* per-table modes on a replica node: its primary takes this node's tables from this
         * log and cannot run a first sync from a replica to repair a hole, so what it has not
         * acknowledged is never pruned, not even over the size bound */
        if (p->is_primary && e->tmodes && !e->is_primary &&
            (p->has_position || p->last_acked_seq > 0) && (uint64_t)p->last_acked_seq >= pruned &&
            (uint64_t)p->last_acked_seq < upstream)
            upstream = (uint64_t)p->last_acked_seq;
    }
    uint64_t sync_hold = gs_repl_sync_hold(e); /* first syncs being served (sync.c) */
    if (sync_hold < hold)
        hold = sync_hold;
    pthread_mutex_unlock(&e->mu);
    atomic_store(&e->db->cdc->repl_hold, hold);
    /* a sync being served is never cut short by the size bound (it would only start again) */
    atomic_store(&e->db->cdc->repl_floor, sync_hold < upstream ? sync_hold : upstream);
    /* the size bound holds between the feed's periodic passes (cdc_log.c) */
    gs_cdc_retention_tick(e->db->cdc, (uint64_t)gs_db_committed_seq(e->db));
}

static void *timer_main(void *arg)
{
    gs_repl_engine *e = arg;
    int64_t *saved = gs_calloc(e->npeers ? e->npeers : 1, sizeof *saved);
    for (size_t i = 0; saved && i < e->npeers; i++)
        saved[i] = -1;
    int64_t next_save = gs_repl_now_ms() + PEER_STATE_SAVE_MS;
    for (;;) {
        int64_t now = gs_repl_now_ms();
        int64_t next = now + e->o.batch_interval_ms;
        int64_t d = expire_inflight(e, now);
        if (d && d < next)
            next = d;
        int more = 0;
        if (e->is_primary || e->tmodes)
            for (size_t i = 0; i < e->npeers; i++)
                while (send_to_peer(e, i))
                    more = 1;
        gs_repl_coord_tick(e, now);
        check_waits(e, now);
        d = gs_repl_forward_expire(e, now);
        if (d && d < next)
            next = d;
        d = gs_repl_sync_tick(e, now);
        if (d && d < next)
            next = d;
        check_lag(e, now);
        hold_log(e);
        if (saved && now >= next_save) {
            save_peer_states(e, saved);
            next_save = now + PEER_STATE_SAVE_MS;
        }
        pthread_mutex_lock(&e->mu);
        for (gs_concern_wait *w = e->waits; w; w = w->next)
            if (w->deadline_ms < next)
                next = w->deadline_ms;
        if (e->stop) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        if (!e->timer_wake && !more) {
            int64_t wait = next - gs_repl_now_ms();
            if (wait > 0) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_sec += wait / 1000;
                ts.tv_nsec += (wait % 1000) * 1000000;
                if (ts.tv_nsec >= 1000000000) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000;
                }
                pthread_cond_timedwait(&e->timer_cond, &e->mu, &ts);
            }
        }
        e->timer_wake = 0;
        int stop = e->stop;
        pthread_mutex_unlock(&e->mu);
        if (stop)
            break;
    }
    if (saved)
        save_peer_states(e, saved);
    gs_free(saved);
    return NULL;
}

/* ---- lifecycle ---- */

typedef struct setup_call {
    gs_repl_engine *e;
    int64_t applied;
} setup_call;

static gs_status setup_steps(setup_call *sc, gs_conn *conn, gs_error *err)
{
    gs_repl_engine *e = sc->e;
    if (gs_repl_tables_ensure(conn, err) != GS_OK ||
        gs_cdc_capture_all_refresh(e->db->cdc, conn, err) != GS_OK)
        return GS_ERROR;
    uint64_t head = 0;
    if (gs_cdc_max_seq(conn, &head, err) != GS_OK)
        return GS_ERROR;
    gs_db_note_committed_seq(e->db, (int64_t)head);
    for (size_t i = 0; i < e->npeers; i++) {
        gs_peer *p = &e->peers[i];
        if (p->is_primary) {
            int64_t a = 0;
            if (gs_repl_applied_seq(conn, p->id, &a, err) != GS_OK)
                return GS_ERROR;
            if (a == 0 && e->o.resume_from_seq >= 0 && !e->o.initial_sync) {
                if (gs_repl_apply_record_position(conn, p->id, e->o.resume_from_seq, err) != GS_OK)
                    return GS_ERROR;
                a = e->o.resume_from_seq;
                gs_log(GS_LOG_INFO, "repl",
                       "database '%s': resuming from seq %lld of %s (resumeFromSeq)",
                       gs_db_id(e->db), (long long)a, p->id);
            }
            if (a > sc->applied)
                sc->applied = a;
            p->applied_seq = a;
        }
        if (e->tmodes) {
            /* both directions: where this node stands in the peer's log (the ledger) and
             * what the peer acknowledged of this node's log */
            int64_t a = 0, acked = 0;
            if (gs_repl_applied_seq(conn, p->id, &a, err) != GS_OK ||
                gs_repl_peer_state_load(conn, p->id, &acked, err) != GS_OK)
                return GS_ERROR;
            if (a > p->applied_seq)
                p->applied_seq = a;
            p->last_acked_seq = p->last_sent_seq = acked;
        } else if (!p->is_primary) {
            int64_t acked = 0;
            if (gs_repl_peer_state_load(conn, p->id, &acked, err) != GS_OK)
                return GS_ERROR;
            p->last_acked_seq = p->last_sent_seq = acked;
        }
    }
    return GS_OK;
}

/* Writer thread: the replication tables, change capture of every table, the positions. */
static gs_status setup_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    if (gs_conn_exec(conn, "BEGIN IMMEDIATE", err) != GS_OK)
        return GS_ERROR;
    if (setup_steps(user, conn, err) != GS_OK) {
        gs_error e2;
        gs_conn_exec(conn, "ROLLBACK", &e2);
        return GS_ERROR;
    }
    return gs_conn_exec(conn, "COMMIT", err);
}

static gs_status copy_options(gs_repl_engine *e, const gs_repl_options *o, gs_error *err)
{
    e->o = *o;
    e->node_id = gs_strdup(o->node_id ? o->node_id : "");
    e->role = gs_strdup(o->role ? o->role : "primary");
    e->write_concern = gs_strdup(o->write_concern ? o->write_concern : "local");
    e->peers = gs_calloc(o->npeers ? o->npeers : 1, sizeof *e->peers);
    e->resolvers = gs_calloc(o->nresolvers ? o->nresolvers : 1, sizeof *e->resolvers);
    if (!e->node_id || !e->role || !e->write_concern || !e->peers || !e->resolvers)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    e->o.peers = NULL;
    e->o.resolvers = NULL;
    e->o.node_id = e->node_id;
    e->o.role = e->role;
    e->o.write_concern = e->write_concern;
    for (size_t i = 0; i < o->npeers; i++) {
        e->peers[i].id = gs_strdup(o->peers[i].id);
        if (!e->peers[i].id)
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        e->peers[i].is_primary = o->peers[i].role && strcmp(o->peers[i].role, "primary") == 0;
        e->npeers++;
    }
    for (size_t i = 0; i < o->nresolvers; i++) {
        e->resolvers[i].table = gs_strdup(o->resolvers[i].table);
        if (!e->resolvers[i].table)
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        e->resolvers[i].ref = o->resolvers[i].ref;
        e->nresolvers++;
    }
    return GS_OK;
}

gs_status gs_repl_options_check(const gs_repl_options *o, gs_error *err)
{
    if (!o->node_id || !o->node_id[0])
        return gs_error_set(err, 0, "INVALID_CONFIG", "replication needs a node id (node.id)");
    if (!o->role || (strcmp(o->role, "primary") != 0 && strcmp(o->role, "replica") != 0))
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "replication.role must be 'primary' or 'replica'");
    if (!o->transport || !o->transport_instance)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "replication needs a repl_transport plugin instance");
    if (!o->default_resolver.vt)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "replication needs a default resolver instance");
    if (o->ntable_modes) {
        if (o->coordinator)
            return gs_error_set(err, 0, "INVALID_CONFIG",
                                "tables: per-table modes are static-mode only: a coordinator-mode "
                                "group has a single primary (spec 03); remove the tables list or "
                                "the coordinator");
        gs_table_modes *tm = NULL;
        if (gs_table_modes_create(o->table_modes, o->ntable_modes, strcmp(o->role, "primary") == 0,
                                  &tm, err) != GS_OK)
            return GS_ERROR;
        gs_table_modes_free(tm);
    }
    int primaries = 0;
    for (size_t i = 0; o->coordinator && i < o->npeers; i++) {
        if (!o->peers[i].id || !o->peers[i].id[0])
            return gs_error_set(err, 0, "INVALID_CONFIG", "replication.peers[%zu] needs an id", i);
        if (strcmp(o->peers[i].id, o->node_id) == 0)
            return gs_error_set(err, 0, "INVALID_CONFIG",
                                "replication.peers[%zu] is this node itself ('%s')", i, o->node_id);
    }
    if (o->coordinator && gs_authority_options_check(o->coordinator, err) != GS_OK)
        return GS_ERROR;
    for (size_t i = 0; !o->coordinator && i < o->npeers; i++) {
        if (!o->peers[i].id || !o->peers[i].id[0] || !o->peers[i].role ||
            (strcmp(o->peers[i].role, "primary") && strcmp(o->peers[i].role, "replica")))
            return gs_error_set(err, 0, "INVALID_CONFIG",
                                "replication.peers[%zu] needs an id and a role of 'primary' or "
                                "'replica'",
                                i);
        if (strcmp(o->peers[i].id, o->node_id) == 0)
            return gs_error_set(err, 0, "INVALID_CONFIG",
                                "replication.peers[%zu] is this node itself ('%s')", i, o->node_id);
        primaries += strcmp(o->peers[i].role, "primary") == 0;
    }
    if (!o->coordinator && strcmp(o->role, "primary") == 0 && primaries)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "static mode has one primary: this node is the primary, so no peer "
                            "may be a primary too");
    if (!o->coordinator && strcmp(o->role, "replica") == 0 && primaries != 1)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "a replica in static mode needs exactly one peer with role "
                            "'primary' (found %d)",
                            primaries);
    if (o->batch_size < 1 || o->batch_size > 1000)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "replication.batch_size must be 1..1000 (a batch holds at most 1000 "
                            "changes)");
    if (o->max_pending_batches < 1 || o->max_pending_batches > GS_REPL_MAX_INFLIGHT)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "replication.max_pending_batches must be 1..%d", GS_REPL_MAX_INFLIGHT);
    if (o->batch_interval_ms < 1 || o->ack_timeout_ms < 1 || o->max_batch_changes < 1)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "replication intervals, timeouts and limits must be positive");
    const char *wc = o->write_concern ? o->write_concern : "local";
    if (strcmp(wc, "local") && strcmp(wc, "majority") && strcmp(wc, "all"))
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "replication.write_concern must be local, majority or all");
    return GS_OK;
}

gs_status gs_repl_engine_start(gs_database *db, const gs_repl_options *o, gs_repl_engine **out,
                               gs_error *err)
{
    *out = NULL;
    if (gs_repl_options_check(o, err) != GS_OK)
        return GS_ERROR;
    if (!db->cdc)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "database '%s' cannot replicate: replication needs a writable file "
                            "database (not :memory:, not read-only)",
                            gs_db_id(db));
    gs_repl_engine *e = gs_calloc(1, sizeof *e);
    if (!e)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    e->db = db;
    gs_error_init(&e->last_error);
    pthread_mutex_init(&e->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->timer_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&e->in_cond, NULL);
    e->next_call_id = 1;
    snprintf(e->phase, sizeof e->phase, "ready");
    if (copy_options(e, o, err) != GS_OK) {
        gs_repl_engine_free(e);
        return GS_ERROR;
    }
    e->is_primary = strcmp(e->role, "primary") == 0;
    if (o->ntable_modes && (gs_table_modes_create(o->table_modes, o->ntable_modes, e->is_primary,
                                                  &e->tmodes, err) != GS_OK ||
                            gs_repl_table_route_open(e, err) != GS_OK)) {
        gs_error_prefix(err, "replication of database '%s'", gs_db_id(db));
        gs_repl_engine_free(e);
        return GS_ERROR;
    }
    e->o.table_modes = NULL; /* the caller's; the engine keeps e->tmodes */

    gs_conn_options co;
    memset(&co, 0, sizeof co);
    co.path = gs_db_path(db);
    co.role = GS_CONN_READER;
    co.busy_timeout_ms = 5000;
    co.stmt_cache_size = 16;
    co.wal_autocheckpoint = -1;
    setup_call sc = {e, 0};
    if (gs_conn_open(&co, &e->log_conn, err) != GS_OK ||
        gs_repl_on_writer(e, setup_fn, &sc, err) != GS_OK || gs_repl_sync_load(e, err) != GS_OK) {
        gs_error_prefix(err, "replication of database '%s'", gs_db_id(db));
        gs_repl_engine_free(e);
        return GS_ERROR;
    }
    e->applied_seq = sc.applied;

    e->events.struct_size = sizeof e->events;
    e->events.user = e;
    e->events.on_message = on_message;
    e->events.on_peer = on_peer;
    e->events.local_role = e->role;
    e->events.group_id = o->coordinator ? o->coordinator->group_id : NULL;
    e->events.primary_term = 0;
    e->events.protocol_version = GS_REPL_PROTOCOL_VERSION;
    if (pthread_create(&e->in_thread, NULL, inbound_main, e) != 0) {
        gs_repl_engine_free(e);
        return gs_error_set(err, 0, "REPLICATION_ERROR", "cannot start the inbound thread");
    }
    if (pthread_create(&e->timer_thread, NULL, timer_main, e) != 0) {
        pthread_mutex_lock(&e->mu);
        e->stop = 1;
        pthread_cond_broadcast(&e->in_cond);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->in_thread, NULL);
        gs_repl_engine_free(e);
        return gs_error_set(err, 0, "REPLICATION_ERROR", "cannot start the sender thread");
    }
    e->threads_started = 1;
    gs_db_set_commit_hook(db, on_commit, e);
    gs_db_set_repl(db, e);
    gs_error_init(err);
    if (o->transport->start(o->transport_instance, &e->events, err) != GS_OK) {
        gs_error_prefix(err, "replication transport");
        gs_repl_engine_stop(e);
        gs_repl_engine_free(e);
        return GS_ERROR;
    }
    e->transport_started = 1;
    if (gs_repl_coord_start(e, err) != GS_OK) {
        gs_error_prefix(err, "coordinator mode");
        gs_repl_engine_stop(e);
        gs_repl_engine_free(e);
        return GS_ERROR;
    }
    gs_log(GS_LOG_INFO, "repl",
           "database '%s': replication started as %s (node %s, %zu peers, sync phase %s)",
           gs_db_id(db), e->role, e->node_id, e->npeers, e->phase);
    *out = e;
    return GS_OK;
}

void gs_repl_engine_stop(gs_repl_engine *e)
{
    if (!e || atomic_exchange(&e->detached, 1))
        return;
    gs_db_set_repl(e->db, NULL);
    gs_db_set_commit_hook(e->db, NULL, NULL);
    gs_repl_coord_stop(e);
    if (e->transport_started)
        e->o.transport->stop(e->o.transport_instance);
    e->transport_started = 0;
    pthread_mutex_lock(&e->mu);
    e->stop = 1;
    pthread_cond_broadcast(&e->in_cond);
    pthread_cond_broadcast(&e->timer_cond);
    gs_concern_wait *w = e->waits;
    e->waits = NULL;
    pthread_mutex_unlock(&e->mu);
    if (e->threads_started) {
        pthread_join(e->in_thread, NULL);
        pthread_join(e->timer_thread, NULL);
        e->threads_started = 0;
    }
    /* after the inbound thread: the joiner belongs to it */
    gs_repl_sync_stop(e);
    while (w) {
        gs_concern_wait *n = w->next;
        gs_error err;
        gs_error_init(&err);
        gs_error_set(&err, 0, "SHUTDOWN",
                     "the node stopped before the write concern was met (the write is "
                     "committed locally)");
        w->done(w->user, GS_ERROR, &err);
        gs_free(w);
        w = n;
    }
    gs_repl_forward_fail_all(e, "SHUTDOWN", "the node stopped before the primary answered");
}

void gs_repl_engine_free(gs_repl_engine *e)
{
    if (!e)
        return;
    gs_repl_engine_stop(e);
    while (e->in_head) {
        gs_inbound *m = e->in_head;
        e->in_head = m->next;
        gs_free(m->from);
        gs_free(m);
    }
    gs_authority_free(e->auth);
    gs_table_modes_free(e->tmodes);
    gs_repl_table_route_close(e);
    gs_free(e->group_id);
    gs_conn_close(e->log_conn);
    gs_free(e->cache.bytes);
    for (size_t i = 0; i < e->npeers; i++)
        gs_free(e->peers[i].id);
    for (size_t i = 0; i < e->nresolvers; i++)
        gs_free((char *)e->resolvers[i].table);
    gs_free(e->peers);
    gs_free(e->resolvers);
    gs_free(e->sources);
    gs_free(e->node_id);
    gs_free(e->role);
    gs_free(e->write_concern);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->timer_cond);
    pthread_cond_destroy(&e->in_cond);
    gs_free(e);
}

/* ---- routing and status ---- */

gs_status gs_repl_route_write(gs_repl_engine *e, gs_db_job_kind kind, size_t statements,
                              gs_repl_write_route *route, gs_error *err)
{
    *route = GS_REPL_WRITE_LOCAL;
    if (e->auth)
        return gs_repl_coord_route_write(e, kind, statements, route, err);
    if (e->is_primary)
        return GS_OK;
    int forwardable = kind == GS_DB_BATCH || (kind == GS_DB_EXECUTE && statements == 1);
    if (!e->o.write_forwarding)
        return gs_error_set(err, 0, "TOPOLOGY_ERROR",
                            "this node is a replica and does not accept writes; send writes to "
                            "the primary (or enable replication.write_forwarding)");
    if (!forwardable)
        return gs_error_set(err, 0, "TOPOLOGY_ERROR",
                            "this node is a replica: transactions and loads are never forwarded; "
                            "send them to the primary");
    *route = GS_REPL_WRITE_FORWARD;
    return GS_OK;
}

const char *gs_repl_health_state(gs_repl_engine *e)
{
    if (e->auth)
        return gs_repl_coord_health_state(e);
    pthread_mutex_lock(&e->mu);
    const char *s = strcmp(e->phase, "ready") == 0     ? "healthy"
                    : strcmp(e->phase, "pending") == 0 ? "unavailable"
                                                       : "syncing";
    pthread_mutex_unlock(&e->mu);
    return s;
}

void gs_repl_coord_status_fields(gs_repl_engine *e, gs_buf *b, const char **health_reason,
                                 int *can_read, int *can_write);

void gs_repl_status_json(gs_repl_engine *e, gs_buf *b)
{
    int64_t local = gs_db_committed_seq(e->db);
    pthread_mutex_lock(&e->mu);
    int connected = 0;
    for (size_t i = 0; i < e->npeers; i++)
        connected += e->peers[i].connected;
    int ready = strcmp(e->phase, "ready") == 0;
    int primary = e->is_primary;
    char phase[16];
    snprintf(phase, sizeof phase, "%s", e->phase);
    pthread_mutex_unlock(&e->mu);
    const char *reason = ready ? "in-sync" : "sync-pending";
    int can_read = ready, can_write = ready && primary;
    gs_buf_puts(b, "{\"role\":");
    const char *role = e->auth ? (primary ? "primary" : "replica") : e->role;
    gs_buf_json_string(b, role, strlen(role));
    gs_buf_printf(b, ",\"writeForwarding\":%s,\"peers\":%d,\"localSeq\":\"%lld\"",
                  e->o.write_forwarding ? "true" : "false", connected, (long long)local);
    gs_buf_puts(b, ",\"syncState\":");
    gs_buf_json_string(b, phase, strlen(phase));
    gs_repl_sync_status_fields(e, b);
    if (e->auth)
        gs_repl_coord_status_fields(e, b, &reason, &can_read, &can_write);
    gs_buf_printf(b, ",\"healthReason\":\"%s\"", reason);
    gs_buf_printf(b, ",\"readAvailability\":\"%s\",\"writeAvailability\":\"%s\"}",
                  can_read ? "available" : "unavailable", can_write ? "available" : "unavailable");
}

size_t gs_repl_peers(gs_repl_engine *e, gs_repl_peer_info *out, size_t max)
{
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->npeers && i < max; i++) {
        snprintf(out[i].id, sizeof out[i].id, "%s", e->peers[i].id);
        out[i].connected = e->peers[i].connected;
        out[i].last_acked_seq = e->peers[i].last_acked_seq;
        out[i].last_sent_seq = e->peers[i].last_sent_seq;
        out[i].pending_batches = e->peers[i].ninflight;
    }
    size_t n = e->npeers;
    pthread_mutex_unlock(&e->mu);
    return n;
}

void gs_repl_get_counters(gs_repl_engine *e, gs_repl_counters *out)
{
    pthread_mutex_lock(&e->mu);
    *out = e->counters;
    pthread_mutex_unlock(&e->mu);
}

const char *gs_repl_sync_phase(gs_repl_engine *e)
{
    pthread_mutex_lock(&e->mu);
    const char *p = strcmp(e->phase, "ready") == 0     ? "ready"
                    : strcmp(e->phase, "pending") == 0 ? "pending"
                    : strcmp(e->phase, "syncing") == 0 ? "syncing"
                                                       : "catching-up";
    pthread_mutex_unlock(&e->mu);
    return p;
}

int64_t gs_repl_position(gs_repl_engine *e)
{
    if (e->is_primary)
        return gs_db_committed_seq(e->db);
    pthread_mutex_lock(&e->mu);
    int64_t a = e->applied_seq;
    pthread_mutex_unlock(&e->mu);
    return a;
}

void gs_repl_last_error(gs_repl_engine *e, gs_error *out)
{
    pthread_mutex_lock(&e->mu);
    gs_error_copy(out, &e->last_error);
    pthread_mutex_unlock(&e->mu);
}
