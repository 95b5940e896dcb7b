/*
 * The engine in coordinator mode (spec 03 "Coordinator-Backed Failover"): roles and terms
 * come from the authority (authority.h); this file turns its view into the engine's state.
 *
 *  - Roles: this node sends batches while it is the recorded primary; every other voter is a
 *    replica following the recorded primary. Outgoing batches, acks, sync messages and
 *    forwards carry the group id and the term; incoming ones from anyone but the current
 *    primary, or of another term, are refused with STALE_PRIMARY (a batch is checked again on
 *    the writer right before it is applied, so nothing of a stale primary lands after this
 *    node has seen the new term).
 *  - Following a new primary: the primary of a new term publishes termStart (its seq and how
 *    much of the previous primary's log it held). A node holding exactly that much of the
 *    previous primary's log follows the new primary from termStart.seq; a former primary
 *    holding more of its own writes is quarantined; any other node syncs again from the new
 *    primary (its extra or missing changes were never acknowledged to a majority, because
 *    every acknowledged write is on every in-sync node — see below).
 *  - The in-sync set: a write waiting for `majority` is acknowledged only when a majority of
 *    the voters (this primary counted) hold it AND every replica the group lists in sync (or
 *    that is being admitted) holds it. A replica that leaves a write waiting longer than
 *    in_sync_timeout_ms, or disconnects, is removed from the set in the coordinator first; only
 *    then does the write complete without it. A replica is admitted once it has acknowledged
 *    everything committed when admission began (writes wait for it from that moment). So a
 *    promoted in-sync replica holds every acknowledged write.
 *
 * Threads: apply_view on the inbound thread; tick on the timer thread; the rest any thread.
 */
#include "engine_internal.h"

#include "base/alloc.h"
#include "base/log.h"
#include "db/cdc_internal.h"
#include "repl/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define META_FOLLOW "repl_follow"

int gs_repl_coordinated(const gs_repl_engine *e)
{
    return e->auth != NULL;
}

int64_t gs_repl_coord_term(gs_repl_engine *e)
{
    if (!e->auth)
        return 0;
    int64_t term = 0;
    char primary[GS_GROUP_ID_MAX];
    gs_authority_current(e->auth, &term, primary, sizeof primary);
    return term;
}

/* ---- writer-thread reads for the authority's callbacks ---- */

typedef struct pos_call {
    const char *source;
    int own;
    int64_t seq;
} pos_call;

static gs_status pos_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    pos_call *pc = user;
    if (!pc->own)
        return gs_repl_applied_seq(conn, pc->source, &pc->seq, err);
    sqlite3 *db = gs_conn_db(conn);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT MAX(seq) FROM _sirannon_changes WHERE node_id = ?", -1, &st,
                           NULL) != SQLITE_OK)
        return gs_error_set(err, 0, "REPLICATION_ERROR", "reading the change log: %s",
                            sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, pc->source, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        pc->seq = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return GS_OK;
}

/* The applied position of source's log here (source = this node: its highest own seq). Runs
 * on the writer, so it is ordered with every batch apply. -1 when it cannot be read. */
static int64_t position_of(gs_repl_engine *e, const char *source)
{
    pos_call pc = {source, strcmp(source, e->node_id) == 0, 0};
    gs_error err;
    gs_error_init(&err);
    if (gs_repl_on_writer(e, pos_fn, &pc, &err) != GS_OK) {
        gs_repl_note_error(e, &err, "reading a replication position", NULL);
        return -1;
    }
    return pc.seq;
}

static gs_status head_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    uint64_t head = 0;
    if (gs_cdc_max_seq(conn, &head, err) != GS_OK)
        return GS_ERROR;
    *(int64_t *)user = (int64_t)head;
    return GS_OK;
}

/* The head of the change log, read on the writer (ordered with every apply): the committed
 * seq the database tracks follows client writes only. */
static int64_t cb_committed(void *user)
{
    gs_repl_engine *e = user;
    int64_t head = 0;
    gs_error err;
    gs_error_init(&err);
    if (gs_repl_on_writer(e, head_fn, &head, &err) != GS_OK) {
        gs_repl_note_error(e, &err, "reading the change-log head", NULL);
        return gs_db_committed_seq(e->db);
    }
    return head;
}

static int64_t cb_position_of(void *user, const char *source)
{
    return position_of(user, source);
}

static void cb_progress(void *user, char *source, size_t cap, int64_t *seq)
{
    gs_repl_engine *e = user;
    pthread_mutex_lock(&e->mu);
    if (e->is_primary) {
        snprintf(source, cap, "%s", e->node_id);
        pthread_mutex_unlock(&e->mu);
        *seq = position_of(e, e->node_id);
        return;
    }
    const char *colon = strchr(e->follow, ':');
    snprintf(source, cap, "%s", colon ? colon + 1 : "");
    *seq = e->applied_seq;
    pthread_mutex_unlock(&e->mu);
}

static void cb_change(void *user)
{
    gs_repl_post_view_change(user);
}

static gs_status gate(void *user, gs_error *err)
{
    gs_repl_engine *e = user;
    int64_t term = 0;
    return gs_authority_can_write(e->auth, &term, err);
}

/* ---- persistence of what this node follows ---- */

typedef struct follow_call {
    const char *value;
    const char *source;
    int64_t position; /* >= 0: record it as the applied position of source */
} follow_call;

static gs_status follow_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    follow_call *fc = user;
    if (gs_repl_meta_set(conn, META_FOLLOW, fc->value, err) != GS_OK)
        return GS_ERROR;
    if (fc->position >= 0) {
        int64_t have = 0;
        if (gs_repl_applied_seq(conn, fc->source, &have, err) != GS_OK)
            return GS_ERROR;
        if (fc->position > have &&
            gs_repl_apply_record_position(conn, fc->source, fc->position, err) != GS_OK)
            return GS_ERROR;
        if (have > fc->position)
            fc->position = have;
    }
    return GS_OK;
}

static gs_status load_follow_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    (void)err;
    gs_repl_engine *e = user;
    sqlite3 *db = gs_conn_db(conn);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT value FROM _sirannon_meta WHERE key = '" META_FOLLOW "'", -1,
                           &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
            snprintf(e->follow, sizeof e->follow, "%s", (const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
    }
    const char *colon = strchr(e->follow, ':');
    if (colon && colon[1])
        return gs_repl_applied_seq(conn, colon + 1, &e->applied_seq, err);
    return GS_OK;
}

/* ---- lifecycle ---- */

gs_status gs_repl_coord_start(gs_repl_engine *e, gs_error *err)
{
    if (!e->o.coordinator)
        return GS_OK;
    if (gs_repl_on_writer(e, load_follow_fn, e, err) != GS_OK)
        return GS_ERROR;
    e->auth_o = *e->o.coordinator;
    e->auth_o.user = e;
    e->auth_o.on_change = cb_change;
    e->auth_o.committed_seq = cb_committed;
    e->auth_o.position_of = cb_position_of;
    e->auth_o.progress = cb_progress;
    if (!e->auth_o.protocol_version)
        e->auth_o.protocol_version = GS_REPL_PROTOCOL_VERSION;
    e->group_id = gs_strdup(e->auth_o.group_id);
    if (!e->group_id)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    /* Until the coordinator speaks, this node is nobody's primary. */
    pthread_mutex_lock(&e->mu);
    e->is_primary = 0;
    for (size_t i = 0; i < e->npeers; i++)
        e->peers[i].is_primary = 0;
    pthread_mutex_unlock(&e->mu);
    if (gs_authority_start(&e->auth_o, &e->auth, err) != GS_OK)
        return GS_ERROR;
    gs_db_set_write_gate(e->db, gate, e);
    return GS_OK;
}

void gs_repl_coord_stop(gs_repl_engine *e)
{
    if (!e->auth)
        return;
    gs_db_set_write_gate(e->db, NULL, NULL);
    gs_authority_stop(e->auth);
}

/* ---- the view ---- */

static void fail_waits(gs_repl_engine *e, const char *code, const char *msg)
{
    pthread_mutex_lock(&e->mu);
    gs_concern_wait *w = e->waits;
    e->waits = NULL;
    pthread_mutex_unlock(&e->mu);
    while (w) {
        gs_concern_wait *n = w->next;
        gs_error err;
        gs_error_init(&err);
        gs_error_set(&err, 0, code, "%s", msg);
        gs_authority_error_details(e->auth, &err);
        w->done(w->user, GS_ERROR, &err);
        gs_free(w);
        w = n;
    }
}

static void send_position(gs_repl_engine *e, const char *to, int64_t seq)
{
    gs_repl_message m;
    memset(&m, 0, sizeof m);
    m.kind = GS_RMSG_ACK;
    m.ack.batch_id = "";
    m.ack.acked_seq = seq;
    m.ack.node_id = e->node_id;
    gs_error err;
    gs_error_init(&err);
    if (gs_repl_send_message(e, to, &m, &err) != GS_OK)
        gs_log(GS_LOG_DEBUG, "repl", "database '%s': position report to %s not sent: %s",
               gs_db_id(e->db), to, err.message);
}

/* Decide how this (non-primary) node follows the primary of the current term. `released`:
 * an operator lifted this node's quarantine (`gatestream cluster rejoin`): its local-only
 * writes are discarded by a full sync. */
static void follow_primary(gs_repl_engine *e, const gs_group_state *g, int released)
{
    char want[160];
    snprintf(want, sizeof want, "%lld:%s", (long long)g->term, g->primary);
    pthread_mutex_lock(&e->mu);
    int same = strcmp(e->follow, want) == 0;
    int quarantined = e->quarantined;
    int connected = 0;
    gs_peer *p = gs_repl_peer_find(e, g->primary);
    connected = p && p->connected;
    int ready = strcmp(e->phase, "ready") == 0 || strcmp(e->phase, "catching-up") == 0;
    int64_t applied = e->applied_seq;
    pthread_mutex_unlock(&e->mu);
    if (quarantined || gs_id_set_has(&g->faulted, e->node_id))
        return;
    if (released) {
        gs_log(GS_LOG_WARN, "repl",
               "database '%s': the quarantine of this node was lifted; it discards its "
               "local-only writes by syncing again from primary '%s' of term %lld",
               gs_db_id(e->db), g->primary, (long long)g->term);
        follow_call rc = {want, g->primary, -1};
        gs_error err;
        gs_error_init(&err);
        if (gs_repl_on_writer(e, follow_fn, &rc, &err) != GS_OK) {
            gs_repl_note_error(e, &err, "rejoining", g->primary);
            return;
        }
        pthread_mutex_lock(&e->mu);
        snprintf(e->follow, sizeof e->follow, "%s", want);
        pthread_mutex_unlock(&e->mu);
        gs_repl_sync_reset(e);
        if (connected)
            gs_repl_sync_maybe_start(e, g->primary);
        return;
    }
    if (same) {
        if (connected) {
            if (ready)
                send_position(e, g->primary, applied);
            else
                gs_repl_sync_maybe_start(e, g->primary);
        }
        return;
    }
    if (g->ts_term != g->term)
        return; /* the new primary has not recorded where its term starts yet */
    int64_t stored = position_of(e, g->primary);
    if (stored < 0)
        return;
    const char *how = NULL;
    follow_call fc = {want, g->primary, -1};
    if (!g->ts_prev[0]) {
        /* no previous primary (the group's first term) */
        if (ready && stored > 0) {
            fc.position = stored;
            how = "continues from its applied position";
        }
    } else {
        int64_t mine = position_of(e, g->ts_prev);
        if (mine < 0)
            return;
        if (strcmp(g->ts_prev, e->node_id) == 0 && mine > g->ts_prev_seq) {
            char why[200];
            snprintf(why, sizeof why,
                     "it holds its own writes up to seq %lld but the new primary '%s' took only "
                     "up to %lld",
                     (long long)mine, g->primary, (long long)g->ts_prev_seq);
            pthread_mutex_lock(&e->mu);
            e->quarantined = 1; /* decided here; 2 once the coordinator records it */
            pthread_mutex_unlock(&e->mu);
            gs_log(GS_LOG_ERROR, "repl",
                   "database '%s': this former primary has local-only writes: %s; quarantining",
                   gs_db_id(e->db), why);
            gs_authority_quarantine(e->auth, why);
            return;
        }
        if (ready && mine == g->ts_prev_seq) {
            fc.position = stored > g->ts_seq ? stored : g->ts_seq;
            how = "holds exactly what the new primary took over; follows its log";
        }
    }
    gs_error err;
    gs_error_init(&err);
    if (gs_repl_on_writer(e, follow_fn, &fc, &err) != GS_OK) {
        gs_repl_note_error(e, &err, "switching to the new primary", g->primary);
        return;
    }
    pthread_mutex_lock(&e->mu);
    snprintf(e->follow, sizeof e->follow, "%s", want);
    if (how)
        e->applied_seq = fc.position;
    pthread_mutex_unlock(&e->mu);
    if (how) {
        gs_log(GS_LOG_INFO, "repl",
               "database '%s': following primary '%s' of term %lld from seq "
               "%lld (this node %s)",
               gs_db_id(e->db), g->primary, (long long)g->term, (long long)fc.position, how);
        if (connected)
            send_position(e, g->primary, fc.position);
        return;
    }
    if (ready)
        gs_log(GS_LOG_WARN, "repl",
               "database '%s': this node does not hold exactly what primary '%s' of term %lld "
               "took over; it syncs again from it",
               gs_db_id(e->db), g->primary, (long long)g->term);
    else
        gs_log(GS_LOG_INFO, "repl", "database '%s': first sync from primary '%s' of term %lld",
               gs_db_id(e->db), g->primary, (long long)g->term);
    gs_repl_sync_reset(e);
    if (connected)
        gs_repl_sync_maybe_start(e, g->primary);
}

void gs_repl_coord_apply_view(gs_repl_engine *e)
{
    if (!e->auth)
        return;
    gs_authority_view *v = gs_malloc(sizeof *v);
    if (!v)
        return;
    gs_authority_view_get(e->auth, v);
    const gs_group_state *g = &v->g;
    int me_primary = v->known && g->has_primary && strcmp(g->primary, e->node_id) == 0 &&
                     !gs_id_set_has(&g->faulted, e->node_id);
    pthread_mutex_lock(&e->mu);
    int was_primary = e->is_primary;
    int64_t old_term = e->term;
    e->term = v->known ? g->term : 0;
    snprintf(e->primary_id, sizeof e->primary_id, "%s",
             v->known && g->has_primary ? g->primary : "");
    e->is_primary = me_primary;
    e->nvoters = (int)g->voters.n;
    e->self_draining = gs_id_set_has(&g->draining, e->node_id);
    int released = 0;
    if (gs_id_set_has(&g->faulted, e->node_id)) {
        e->quarantined = 2; /* recorded by the coordinator */
    } else if (v->known && e->quarantined == 2) {
        e->quarantined = 0; /* an operator lifted it */
        released = 1;
    }
    for (size_t i = 0; i < e->npeers; i++) {
        gs_peer *p = &e->peers[i];
        p->is_primary = v->known && g->has_primary && strcmp(g->primary, p->id) == 0;
        p->voter = gs_id_set_has(&g->voters, p->id);
        int in = gs_id_set_has(&g->in_sync, p->id);
        if (in != p->in_sync)
            p->evict_requested = 0;
        p->in_sync = in;
        if (in) {
            p->admitting = 0;
            p->admit_requested = 0;
        }
        if (me_primary && (!was_primary || old_term != e->term)) {
            /* a new term: replicas report their positions to this primary again (a report
             * for this term may already be here) */
            if (p->pos_term != e->term)
                p->positioned = 0;
            p->ninflight = 0;
            p->admitting = 0;
            p->admit_requested = 0;
            p->catch_set = 0;
        }
    }
    if (old_term != e->term) {
        gs_free(e->cache.bytes);
        e->cache.bytes = NULL;
    }
    e->timer_wake = 1;
    pthread_cond_signal(&e->timer_cond);
    pthread_mutex_unlock(&e->mu);

    if (was_primary && !me_primary)
        fail_waits(e, "AUTHORITY_LOST",
                   "this node stopped being the primary before the write concern was met (the "
                   "write committed here but may be discarded by the new primary)");
    if (me_primary && !was_primary)
        gs_log(GS_LOG_WARN, "repl", "database '%s': this node is the primary of term %lld",
               gs_db_id(e->db), (long long)g->term);
    if (!me_primary && v->known && g->has_primary)
        follow_primary(e, g, released);
    gs_free(v);
}

/* ---- fencing ---- */

gs_status gs_repl_coord_check_sender(gs_repl_engine *e, const char *from, int has_term,
                                     int64_t term, const char *what, gs_error *err)
{
    if (!e->auth)
        return GS_OK;
    int64_t cur = 0;
    char primary[GS_GROUP_ID_MAX];
    int known = gs_authority_current(e->auth, &cur, primary, sizeof primary);
    if (!known)
        return gs_error_set(err, 0, "COORDINATOR_UNAVAILABLE",
                            "%s from '%s' refused: this node does not know the group state yet",
                            what, from);
    if (!has_term || term != cur || strcmp(primary, from) != 0 ||
        strcmp(primary, e->node_id) == 0) {
        gs_error_set(err, 0, "STALE_PRIMARY",
                     "%s from '%s' at term %lld refused: the primary of term %lld is '%s'", what,
                     from, (long long)(has_term ? term : 0), (long long)cur,
                     primary[0] ? primary : "none");
        gs_authority_error_details(e->auth, err);
        return GS_ERROR;
    }
    return GS_OK;
}

/* ---- write concern ---- */

int gs_repl_coord_concern_met(gs_repl_engine *e, const gs_concern_wait *w)
{
    int acked_voters = 1; /* the primary's own durable commit counts */
    int needed_all = 1;
    for (size_t i = 0; i < e->npeers; i++) {
        const gs_peer *p = &e->peers[i];
        int has = p->last_acked_seq >= w->target_seq;
        if (p->voter && has)
            acked_voters++;
        if ((p->in_sync || p->admitting) && !has)
            return 0; /* every in-sync replica holds every acknowledged write */
        if (w->all && p->voter && !has)
            needed_all = 0;
    }
    if (w->all)
        return needed_all;
    int voters = e->nvoters > 0 ? e->nvoters : (int)e->npeers + 1;
    return acked_voters >= voters / 2 + 1;
}

void gs_repl_coord_tick(gs_repl_engine *e, int64_t now)
{
    if (!e->auth)
        return;
    struct {
        char id[128];
        int admit;
        int64_t seq;
        char why[120];
    } act[64];
    int n = 0;
    int64_t committed = gs_db_committed_seq(e->db);
    pthread_mutex_lock(&e->mu);
    if (!e->is_primary) {
        pthread_mutex_unlock(&e->mu);
        return;
    }
    int64_t timeout = e->o.in_sync_timeout_ms > 0 ? e->o.in_sync_timeout_ms : 2000;
    for (size_t i = 0; i < e->npeers && n < 64; i++) {
        gs_peer *p = &e->peers[i];
        if (!p->voter)
            continue;
        if (p->in_sync || p->admitting) {
            /* the oldest write this replica holds up */
            int64_t oldest = 0;
            for (gs_concern_wait *w = e->waits; w; w = w->next)
                if (p->last_acked_seq < w->target_seq && (!oldest || w->started_ms < oldest))
                    oldest = w->started_ms;
            int late = oldest && now - oldest >= timeout;
            int gone = !p->connected && oldest;
            if (late || gone) {
                if (p->admitting && !p->in_sync) {
                    p->admitting = 0; /* not in the set yet: just stop waiting for it */
                    p->admit_requested = 0;
                    p->catch_set = 0;
                    e->timer_wake = 1;
                } else if (!p->evict_requested || now - p->evict_requested_ms >= 1000) {
                    p->evict_requested = 1;
                    p->evict_requested_ms = now;
                    snprintf(act[n].id, sizeof act[n].id, "%s", p->id);
                    act[n].admit = 0;
                    snprintf(act[n].why, sizeof act[n].why, "%s",
                             gone ? "disconnected with writes waiting"
                                  : "no acknowledgement within in_sync_timeout_ms");
                    n++;
                }
            }
        }
        if (!p->in_sync && !p->admitting && p->connected && p->positioned) {
            /* caught up with what was committed a tick ago: writes wait for it from now on,
             * and it is admitted once it holds everything committed at this moment */
            if (p->catch_set && p->last_acked_seq >= p->catch_target) {
                p->admitting = 1;
                p->admit_target = committed;
                p->catch_set = 0;
            } else {
                p->catch_target = committed;
                p->catch_set = 1;
            }
        }
        if (!p->in_sync && now - p->outside_logged_ms >= 2000) {
            p->outside_logged_ms = now;
            gs_log(GS_LOG_DEBUG, "repl",
                   "database '%s': replica %s is outside the in-sync set: connected %d, "
                   "position reported %d (term %lld of %lld), acked seq %lld, committed %lld, "
                   "%s",
                   gs_db_id(e->db), p->id, p->connected, p->positioned, (long long)p->pos_term,
                   (long long)e->term, (long long)p->last_acked_seq, (long long)committed,
                   p->admitting   ? (p->admit_requested ? "admission requested"
                                                        : "admitting once it holds the target")
                   : p->catch_set ? "catching up to the last tick's commit"
                                  : "not catching up");
        }
        /* an admission the coordinator did not record (contention, a blip) is asked again */
        if (p->admitting && p->admit_requested && now - p->admit_requested_ms >= 1000)
            p->admit_requested = 0;
        if (p->admitting && !p->admit_requested && p->last_acked_seq >= p->admit_target) {
            p->admit_requested = 1;
            p->admit_requested_ms = now;
            snprintf(act[n].id, sizeof act[n].id, "%s", p->id);
            act[n].admit = 1;
            act[n].seq = p->admit_target;
            act[n].why[0] = '\0';
            n++;
        }
    }
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < n; i++) {
        if (act[i].admit)
            gs_authority_admit(e->auth, act[i].id, act[i].seq);
        else
            gs_authority_evict(e->auth, act[i].id, act[i].why);
    }
}

/* ---- routing ---- */

gs_status gs_repl_coord_route_write(gs_repl_engine *e, gs_db_job_kind kind, size_t statements,
                                    gs_repl_write_route *route, gs_error *err)
{
    *route = GS_REPL_WRITE_LOCAL;
    int64_t term = 0;
    if (gs_authority_can_write(e->auth, &term, err) == GS_OK)
        return GS_OK;
    int forwardable = kind == GS_DB_BATCH || (kind == GS_DB_EXECUTE && statements == 1);
    if (strcmp(err->code, "STALE_PRIMARY") == 0 && e->o.write_forwarding && forwardable) {
        gs_error_init(err);
        *route = GS_REPL_WRITE_FORWARD;
        return GS_OK;
    }
    return GS_ERROR;
}

gs_status gs_repl_check_read(gs_repl_engine *e, const char *level, gs_error *err)
{
    if (!e || !e->auth)
        return GS_OK;
    pthread_mutex_lock(&e->mu);
    int quarantined = e->quarantined;
    pthread_mutex_unlock(&e->mu);
    if (quarantined) {
        /* spec 03: a quarantined node is kept out of the read path, whatever the concern */
        gs_error_set(err, 0, "UNSAFE_RECOVERY_REQUIRED",
                     "node '%s' is quarantined: it held writes the group never acknowledged; an "
                     "operator must run `gatestream cluster rejoin --node %s` before it serves "
                     "reads again",
                     e->node_id, e->node_id);
        gs_authority_error_details(e->auth, err);
        return GS_ERROR;
    }
    /* a read stating no concern is a local read: the client chooses its default (the spec's
     * topology-aware client asks for majority in coordinator mode) */
    if (!level || strcmp(level, "local") == 0)
        return GS_OK;
    gs_authority_view *v = gs_malloc(sizeof *v);
    if (!v)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    gs_authority_view_get(e->auth, v);
    const gs_group_state *g = &v->g;
    const char *why = NULL;
    pthread_mutex_lock(&e->mu);
    int ready = strcmp(e->phase, "ready") == 0;
    pthread_mutex_unlock(&e->mu);
    if (strcmp(level, "linearizable") == 0) {
        if (!v->can_write)
            why = "a linearizable read needs the current primary with proven authority";
    } else if (!v->known) {
        why = "this node does not know the group state";
    } else if (!ready) {
        why = "this node is still syncing";
    } else if (!gs_id_set_has(&g->in_sync, e->node_id)) {
        why = "this node is not in the group's in-sync set";
    } else if (gs_id_set_has(&g->draining, e->node_id) ||
               gs_id_set_has(&g->repairing, e->node_id) || gs_id_set_has(&g->faulted, e->node_id)) {
        why = "this node is draining, repairing or quarantined";
    }
    gs_free(v);
    if (!why)
        return GS_OK;
    gs_error_set(err, 0, "READ_CONCERN_ERROR", "readConcern '%s' cannot be met on node '%s': %s",
                 level, e->node_id, why);
    gs_authority_error_details(e->auth, err);
    return GS_ERROR;
}

/* ---- status ---- */

/* NodeHealth (spec 03 "Node Health"), coordinator mode: first matching rule. */
static void node_health(gs_repl_engine *e, const gs_authority_view *v, const char **state,
                        const char **reason, int *can_read, int *can_write)
{
    const gs_group_state *g = &v->g;
    pthread_mutex_lock(&e->mu);
    char phase[16];
    snprintf(phase, sizeof phase, "%s", e->phase);
    pthread_mutex_unlock(&e->mu);
    int draining = gs_id_set_has(&g->draining, e->node_id);
    int repairing = gs_id_set_has(&g->repairing, e->node_id);
    int faulted = gs_id_set_has(&g->faulted, e->node_id);
    int primary = v->known && g->has_primary && strcmp(g->primary, e->node_id) == 0;
    *can_read = strcmp(phase, "ready") == 0 && !draining && !repairing && !faulted && v->known;
    *can_write = *can_read && v->can_write;
    const char *exclude = faulted ? "faulted" : draining ? "draining" : "sync-pending";
    if (strcmp(phase, "syncing") == 0 || strcmp(phase, "catching-up") == 0) {
        *state = "syncing";
        *reason = exclude;
    } else if (!v->known) {
        *state = "unavailable";
        *reason = "no-group-state";
    } else if (repairing) {
        *state = "repairing";
        *reason = "repairing";
    } else if (primary && v->session_live && !*can_write) {
        *state = "failing_over";
        *reason = exclude;
    } else if (!*can_read) {
        *state = "unavailable";
        *reason = exclude;
    } else if (!v->coordinator_ok) {
        *state = "degraded";
        *reason = "coordinator-unreachable";
    } else if (!gs_id_set_has(&g->in_sync, e->node_id)) {
        *state = "degraded";
        *reason = "lagging";
    } else {
        *state = "healthy";
        *reason = "in-sync";
    }
}

const char *gs_repl_coord_health_state(gs_repl_engine *e)
{
    gs_authority_view *v = gs_malloc(sizeof *v);
    if (!v)
        return "unavailable";
    gs_authority_view_get(e->auth, v);
    const char *state, *reason;
    int r, w;
    node_health(e, v, &state, &reason, &r, &w);
    gs_free(v);
    return state;
}

static void put_primary(gs_buf *b, const gs_group_state *g, int known)
{
    if (!known || !g->has_primary) {
        gs_buf_puts(b, "null");
        return;
    }
    gs_buf_puts(b, "{\"nodeId\":");
    gs_buf_json_string(b, g->primary, strlen(g->primary));
    gs_buf_puts(b, ",\"endpoint\":");
    gs_buf_json_string(b, g->primary_endpoint, strlen(g->primary_endpoint));
    gs_buf_putc(b, '}');
}

/* The coordinator fields of the /health/ready replication object (after "role" etc.);
 * declared in engine.c, its only caller. */
void gs_repl_coord_status_fields(gs_repl_engine *e, gs_buf *b, const char **health_reason,
                                 int *can_read, int *can_write);

void gs_repl_coord_status_fields(gs_repl_engine *e, gs_buf *b, const char **health_reason,
                                 int *can_read, int *can_write)
{
    gs_authority_view *v = gs_malloc(sizeof *v);
    if (!v)
        return;
    gs_authority_view_get(e->auth, v);
    const gs_group_state *g = &v->g;
    const char *state, *reason;
    node_health(e, v, &state, &reason, can_read, can_write);
    *health_reason = reason;
    gs_buf_puts(b, ",\"replicationGroupId\":");
    gs_buf_json_string(b, e->group_id, strlen(e->group_id));
    gs_buf_printf(
        b, ",\"primaryTerm\":\"%lld\",\"currentPrimary\":", (long long)(v->known ? g->term : 0));
    if (v->known && g->has_primary) /* spec 05: the primary's node id */
        gs_buf_json_string(b, g->primary, strlen(g->primary));
    else
        gs_buf_puts(b, "null");
    gs_buf_printf(b, ",\"coordinator\":{\"connected\":%s,\"authority\":%s}",
                  v->coordinator_ok ? "true" : "false", v->can_write ? "true" : "false");
    gs_buf_printf(b, ",\"controller\":{\"state\":\"%s\"}", v->controller);
    gs_id_set lagging;
    lagging.n = 0;
    gs_id_set in_sync = g->in_sync;
    gs_id_set_remove(&in_sync, e->node_id);
    for (size_t i = 0; i < g->voters.n; i++)
        if (!gs_id_set_has(&g->in_sync, g->voters.id[i]) && strcmp(g->voters.id[i], e->node_id))
            gs_id_set_add(&lagging, g->voters.id[i]);
    gs_buf_puts(b, ",\"inSyncReplicas\":");
    gs_id_set_json(b, &in_sync);
    gs_buf_puts(b, ",\"laggingReplicas\":");
    gs_id_set_json(b, &lagging);
    gs_free(v);
}

void gs_repl_cluster_json(gs_repl_engine *e, const char *db_id, gs_buf *b)
{
    gs_buf_puts(b, "{\"databaseId\":");
    gs_buf_json_string(b, db_id, strlen(db_id));
    if (!e->auth) {
        pthread_mutex_lock(&e->mu);
        int primary = e->is_primary;
        int ready = strcmp(e->phase, "ready") == 0;
        pthread_mutex_unlock(&e->mu);
        gs_buf_printf(b, ",\"role\":\"%s\",\"health\":\"%s\",\"healthReason\":\"%s\"}",
                      primary ? "primary" : "replica", ready ? "healthy" : "syncing",
                      ready ? "in-sync" : "sync-pending");
        return;
    }
    gs_authority_view *v = gs_malloc(sizeof *v);
    if (!v) {
        gs_buf_puts(b, ",\"health\":\"unavailable\",\"healthReason\":\"no-group-state\"}");
        return;
    }
    gs_authority_view_get(e->auth, v);
    const gs_group_state *g = &v->g;
    const char *state, *reason;
    int can_read, can_write;
    node_health(e, v, &state, &reason, &can_read, &can_write);
    int primary = v->known && g->has_primary && strcmp(g->primary, e->node_id) == 0;
    /* the live sessions (one coordinator read, bounded by its call timeout): a recorded
     * primary without one is no primary to route to, and a node without one has no endpoint */
    gs_node_list *live = gs_calloc(1, sizeof *live);
    int have_live = 0;
    if (live && v->known) {
        gs_error err;
        have_live = gs_group_read_node_list(e->auth_o.vt, e->auth_o.inst, e->auth_o.cluster_id,
                                            live, &err) == GS_OK;
    }
    int primary_live =
        v->known && g->has_primary && (!have_live || gs_node_list_find(live, g->primary) != NULL);
    gs_buf_puts(b, ",\"replicationGroupId\":");
    gs_buf_json_string(b, e->group_id, strlen(e->group_id));
    gs_buf_printf(b, ",\"role\":\"%s\",\"currentPrimary\":", primary ? "primary" : "replica");
    if (primary_live)
        put_primary(b, g, v->known);
    else
        gs_buf_puts(b, "null");
    gs_buf_printf(b, ",\"primaryTerm\":\"%lld\",\"readEndpoints\":[",
                  (long long)(v->known ? g->term : 0));
    /* one entry per voter that is neither quarantined, draining nor repairing and that has a
     * live session (a node without one cannot be reached) */
    int first = 1;
    for (size_t i = 0; v->known && i < g->voters.n; i++) {
        const char *id = g->voters.id[i];
        if (gs_id_set_has(&g->faulted, id) || gs_id_set_has(&g->draining, id) ||
            gs_id_set_has(&g->repairing, id))
            continue;
        const gs_node_record *rec = have_live ? gs_node_list_find(live, id) : NULL;
        if (have_live && !rec)
            continue;
        const char *endpoint = rec ? rec->endpoint : "";
        if (!endpoint[0] && g->has_primary && strcmp(id, g->primary) == 0)
            endpoint = g->primary_endpoint;
        else if (!endpoint[0] && strcmp(id, e->node_id) == 0 && e->auth_o.endpoint)
            endpoint = e->auth_o.endpoint;
        gs_buf_puts(b, first ? "{\"nodeId\":" : ",{\"nodeId\":");
        first = 0;
        gs_buf_json_string(b, id, strlen(id));
        gs_buf_puts(b, ",\"endpoint\":");
        gs_buf_json_string(b, endpoint, strlen(endpoint));
        int primary_node = g->has_primary && strcmp(id, g->primary) == 0;
        if (gs_id_set_has(&g->in_sync, id))
            gs_buf_printf(b, ",\"readConcerns\":[\"local\",\"majority\"%s]}",
                          primary_node ? ",\"linearizable\"" : "");
        else
            gs_buf_puts(b, ",\"readConcerns\":[\"local\"]}");
    }
    gs_free(live);
    /* spec 05: with no safe primary, currentPrimary is null and health is unavailable */
    gs_buf_printf(b, "],\"health\":\"%s\",\"healthReason\":\"%s\"}",
                  !primary_live ? "unavailable" : state, reason);
    gs_free(v);
}
