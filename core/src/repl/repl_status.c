/* The replication side of the status page (repl_status.h). */
#include "repl/repl_status.h"

#include "base/alloc.h"
#include "db/cdc.h"
#include "db/cdc_internal.h"
#include "repl/engine_internal.h"
#include "repl/table_mode.h"

#include <stdatomic.h>
#include <string.h>

/* One peer copied under the engine's lock, so the JSON is written without it. */
typedef struct peer_snap {
    char id[128];
    int is_primary, connected, positioned, in_sync;
    int64_t last_acked_seq, last_sent_seq, last_ack_ms, connected_ms, oldest_sent_ms;
    int ninflight;
} peer_snap;

static void put_nullable(gs_buf *b, const char *key, int has, int64_t v)
{
    gs_buf_printf(b, ",\"%s\":", key);
    if (has)
        gs_buf_json_int(b, v);
    else
        gs_buf_puts(b, "null");
}

void gs_repl_status_peers(gs_repl_engine *e, gs_buf *b)
{
    if (!e) {
        gs_buf_puts(b, "[]");
        return;
    }
    int64_t now = gs_repl_now_ms();
    int64_t committed = gs_db_committed_seq(e->db);
    pthread_mutex_lock(&e->mu);
    size_t n = e->npeers;
    int sender = e->is_primary; /* this node replicates to its peers: the sender-side fields */
    int coordinated = e->auth != NULL;
    int64_t ready_lag = e->o.max_sync_lag_before_ready;
    peer_snap *s = n ? gs_calloc(n, sizeof *s) : NULL;
    for (size_t i = 0; s && i < n; i++) {
        const gs_peer *p = &e->peers[i];
        snprintf(s[i].id, sizeof s[i].id, "%s", p->id);
        s[i].is_primary = p->is_primary;
        s[i].connected = p->connected;
        s[i].positioned = p->positioned;
        s[i].in_sync = p->in_sync;
        s[i].last_acked_seq = p->last_acked_seq;
        s[i].last_sent_seq = p->last_sent_seq;
        s[i].last_ack_ms = p->last_ack_ms;
        s[i].connected_ms = p->connected_ms;
        s[i].ninflight = p->ninflight;
        s[i].oldest_sent_ms = p->ninflight ? p->inflight[0].sent_ms : 0;
    }
    pthread_mutex_unlock(&e->mu);
    if (n && !s) {
        b->oom = 1;
        return;
    }
    gs_buf_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        const peer_snap *p = &s[i];
        if (i)
            gs_buf_putc(b, ',');
        gs_buf_puts(b, "{\"id\":");
        gs_buf_json_string(b, p->id, strlen(p->id));
        gs_buf_printf(b, ",\"role\":\"%s\",\"connected\":%s", p->is_primary ? "primary" : "replica",
                      p->connected ? "true" : "false");
        /* lag is known where this node sends: its own committed seq against the peer's ack */
        int64_t lag = committed > p->last_acked_seq ? committed - p->last_acked_seq : 0;
        int known = sender && !p->is_primary;
        int in_sync =
            coordinated ? p->in_sync : known && p->connected && p->positioned && lag <= ready_lag;
        gs_buf_printf(b, ",\"inSync\":%s", in_sync ? "true" : "false");
        put_nullable(b, "lastAckedSeq", known, p->last_acked_seq);
        put_nullable(b, "lastSentSeq", known, p->last_sent_seq);
        put_nullable(b, "pendingBatches", known, p->ninflight);
        put_nullable(b, "lagChanges", known, lag);
        /* how long the oldest change it lacks has waited: the oldest batch in flight, else the
         * time since its last acknowledgement; 0 when it lacks nothing */
        int64_t lag_ms = 0;
        int has_ms = known;
        if (known && lag > 0) {
            if (p->oldest_sent_ms > 0)
                lag_ms = now - p->oldest_sent_ms;
            else if (p->last_ack_ms > 0)
                lag_ms = now - p->last_ack_ms;
            else
                has_ms = 0;
        }
        put_nullable(b, "lagMs", has_ms, lag_ms < 0 ? 0 : lag_ms);
        put_nullable(b, "connectedForMs", p->connected && p->connected_ms > 0,
                     now - p->connected_ms);
        gs_buf_putc(b, '}');
    }
    gs_buf_putc(b, ']');
    gs_free(s);
}

void gs_repl_status_summary(gs_repl_engine *e, gs_buf *b, const char **role)
{
    pthread_mutex_lock(&e->mu);
    const char *r = e->is_primary ? "primary" : "replica";
    pthread_mutex_unlock(&e->mu);
    if (role)
        *role = r;
    const char *phase = gs_repl_sync_phase(e);
    const char *health = gs_repl_health_state(e);
    int64_t position = gs_repl_position(e);
    gs_repl_counters c;
    gs_repl_get_counters(e, &c);
    gs_error last;
    gs_error_init(&last);
    gs_repl_last_error(e, &last);
    gs_buf_printf(b, "\"role\":\"%s\",\"coordinated\":%s,\"phase\":\"%s\",\"health\":\"%s\"", r,
                  gs_repl_coordinated(e) ? "true" : "false", phase, health);
    gs_buf_printf(b, ",\"position\":%lld,\"writeForwarding\":%s", (long long)position,
                  e->o.write_forwarding ? "true" : "false");
    gs_buf_puts(b, ",\"lastError\":");
    if (last.code[0]) {
        gs_buf_puts(b, "{\"code\":");
        gs_buf_json_string(b, last.code, strlen(last.code));
        gs_buf_puts(b, ",\"message\":");
        gs_buf_json_string(b, last.message, strlen(last.message));
        gs_buf_putc(b, '}');
    } else {
        gs_buf_puts(b, "null");
    }
    gs_buf_printf(b,
                  ",\"counters\":{\"batchesSent\":%llu,\"batchesReceived\":%llu,"
                  "\"batchesApplied\":%llu,\"retransmits\":%llu,\"rejected\":%llu,"
                  "\"changesApplied\":%llu,\"conflicts\":%llu}",
                  (unsigned long long)c.batches_sent, (unsigned long long)c.batches_received,
                  (unsigned long long)c.batches_applied, (unsigned long long)c.retransmits,
                  (unsigned long long)c.rejected, (unsigned long long)c.changes_applied,
                  (unsigned long long)c.conflicts);
}

void gs_repl_status_table_modes(gs_repl_engine *e, gs_buf *b)
{
    /* the rules as configured (immutable after start: no lock), then what unlisted tables
     * follow as the pattern "*" */
    const gs_table_modes *tm = e ? e->tmodes : NULL;
    gs_buf_putc(b, '[');
    for (size_t i = 0; i < gs_table_modes_count(tm); i++) {
        int prefix;
        gs_table_mode mode;
        const char *pattern = gs_table_modes_rule(tm, i, &prefix, &mode);
        gs_buf_puts(b, i ? ",{\"table\":" : "{\"table\":");
        gs_buf_json_string(b, pattern, strlen(pattern));
        gs_buf_printf(b, ",\"mode\":\"%s\"}", gs_table_mode_name(mode));
    }
    if (tm)
        gs_buf_printf(b, ",{\"table\":\"*\",\"mode\":\"%s\"}",
                      gs_table_mode_name(gs_table_modes_unlisted(tm)));
    gs_buf_putc(b, ']');
}

void gs_repl_status_log(gs_database *db, gs_buf *b)
{
    gs_repl_engine *e = gs_db_repl(db);
    int64_t last = e ? gs_db_committed_seq(db) : 0;
    uint64_t pruned = db->cdc ? atomic_load(&db->cdc->pruned_seq) : 0;
    gs_buf_puts(b, "{\"lastSeq\":");
    if (e)
        gs_buf_json_int(b, last);
    else
        gs_buf_puts(b, "null");
    gs_change_log_stats st;
    gs_error err;
    gs_error_init(&err);
    int have = gs_db_change_log_stats(db, &st, &err) == GS_OK;
    gs_buf_printf(b, ",\"prunedSeq\":%llu,\"rows\":", (unsigned long long)pruned);
    if (e)
        gs_buf_json_int(b, last > (int64_t)pruned ? last - (int64_t)pruned : 0);
    else
        gs_buf_puts(b, "null");
    gs_buf_puts(b, ",\"bytes\":"); /* the estimate of the last retention pass */
    if (have && st.bytes >= 0)
        gs_buf_json_int(b, st.bytes);
    else
        gs_buf_puts(b, "null");
    gs_buf_puts(b, ",\"maxBytes\":");
    if (have && st.max_bytes > 0)
        gs_buf_json_int(b, st.max_bytes);
    else
        gs_buf_puts(b, "null");
    gs_buf_putc(b, '}');
}

void gs_repl_status_sync(gs_repl_engine *e, gs_buf *b)
{
    /* this node's first sync as a joiner, while one runs (gs_repl_sync_progress) */
    gs_sync_progress p;
    gs_repl_sync_progress(e, &p);
    if (!p.active) {
        gs_buf_puts(b, "null");
        return;
    }
    gs_buf_puts(b, "{\"role\":\"joiner\",\"peer\":");
    gs_buf_json_string(b, p.source, strlen(p.source));
    gs_buf_printf(b, ",\"tablesDone\":%lld,\"tablesTotal\":%lld,\"rows\":%lld,\"bytes\":%lld",
                  (long long)p.tables_done, (long long)p.tables_total, (long long)p.rows,
                  (long long)p.bytes);
    gs_buf_puts(b, ",\"etaMs\":");
    if (p.eta_seconds >= 0)
        gs_buf_json_int(b, p.eta_seconds * 1000);
    else
        gs_buf_puts(b, "null");
    gs_buf_putc(b, '}');
}
