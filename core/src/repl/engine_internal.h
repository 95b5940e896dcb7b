/*
 * The inside of the replication engine, shared by engine.c (lifecycle, inbound dispatch,
 * sender loop, acks, write concern, status), forward.c (write forwarding, both sides) and
 * sync.c (first sync, both sides).
 *
 * Locks: `mu` guards everything below it in the struct. It is never held while SQL runs,
 * while the transport is called, or while a completion callback runs.
 *
 * Threads: the inbound thread serves the message queue; the timer thread runs the sender
 * loop and every deadline; sync work for a joiner runs on a thread of its own per sync.
 */
#ifndef GS_REPL_ENGINE_INTERNAL_H
#define GS_REPL_ENGINE_INTERNAL_H

#include "base/buf.h"
#include "base/error.h"
#include "db/database_internal.h"
#include "repl/engine.h"
#include "repl/msg.h"

#include <pthread.h>
#include <stdatomic.h>

#define GS_REPL_MAX_INFLIGHT 64

typedef struct gs_inflight {
    int64_t from_seq, to_seq; /**< the batch covers (from_seq - 1, to_seq] */
    int64_t sent_ms;
} gs_inflight;

typedef struct gs_peer {
    char *id;
    int is_primary; /**< the peer's configured role */
    int connected;
    int64_t connected_ms;
    /* sender side (this node replicates to the peer) */
    int64_t last_acked_seq;
    int64_t last_sent_seq;
    int positioned; /**< the peer reported its applied position since connecting */
    gs_inflight inflight[GS_REPL_MAX_INFLIGHT];
    int ninflight;
    int64_t last_ack_ms;
    int lag_reported;
    int behind_reported;      /* its position fell below what retention kept */
    int64_t resync_notice_ms; /* when it was last told to resync (0 = not since it caught up) */
    int has_position;         /* it reported a position once (retention holds the log for it) */
    /* receiver side */
    char last_received_hlc[256];
    int64_t applied_seq; /* table modes: the high-water mark applied from this peer */
    int restart_pending; /* table modes: it asked for a first sync; take its log from seq 1 */
    /* coordinator mode (coord.c), primary side */
    int in_sync;         /* the group state lists it in the in-sync set */
    int voter;           /* it is a voting data-bearing node */
    int admitting;       /* waits include it while it is being admitted */
    int admit_requested; /* the admission was handed to the authority */
    int evict_requested; /* its eviction was handed to the authority */
    int64_t admit_target, catch_target;
    int64_t admit_requested_ms, evict_requested_ms;
    int catch_set;             /* catch_target holds the committed seq of the last tick */
    int64_t pos_term;          /* the term of its last position report */
    int64_t outside_logged_ms; /* last debug line on why it is not in the in-sync set */
} gs_peer;

/** A write waiting for its concern. */
typedef struct gs_concern_wait {
    struct gs_concern_wait *next;
    int64_t target_seq;
    int all; /**< 1: every connected peer; 0: majority */
    int64_t deadline_ms;
    int64_t started_ms;
    void (*done)(void *user, gs_status st, const gs_error *err);
    void *user;
} gs_concern_wait;

/** A forwarded write waiting for the primary's answer (replica side). */
typedef struct gs_fwd_wait {
    struct gs_fwd_wait *next;
    uint64_t call_id;
    int64_t deadline_ms;
    int batch; /**< 1: answer as an array of results; 0: one {changes,lastInsertRowId} */
    char *primary;
    void (*done)(void *user, const gs_db_reply *reply);
    void *user;
} gs_fwd_wait;

/** One message from the transport, copied. */
typedef struct gs_inbound {
    struct gs_inbound *next;
    char *from;
    gs_repl_msg_type type;
    uint64_t call_id;
    size_t len;
    int peer_event; /**< 1: a peer connected / left (connected in call_id) */
    uint8_t bytes[];
} gs_inbound;

struct gs_sync_joiner;
struct gs_sync_source;

struct gs_repl_engine {
    gs_database *db;
    gs_repl_options o; /* strings copied below */
    char *node_id;
    char *role;
    int is_primary;
    char *write_concern;
    gs_repl_table_resolver *resolvers;
    size_t nresolvers;
    gs_repl_events events;
    gs_conn *log_conn; /* timer thread: reads outgoing batches */
    struct {           /* timer thread: the last batch encoded, for the next replica */
        uint8_t *bytes;
        size_t len, n;
        int64_t after, from, to, term;
        char peer[128]; /* table modes: the replica it was read for (relayed rows differ) */
    } cache;

    pthread_mutex_t mu;
    pthread_cond_t timer_cond; /* CLOCK_MONOTONIC */
    pthread_cond_t in_cond;
    int stop;
    int timer_wake;
    gs_peer *peers;
    size_t npeers;
    gs_concern_wait *waits;
    gs_fwd_wait *fwds;
    uint64_t next_call_id;
    gs_inbound *in_head, *in_tail;
    size_t in_bytes;
    gs_repl_counters counters;
    gs_error last_error;
    /* sync phase: "pending" | "syncing" | "catching-up" | "ready" */
    char phase[16];
    int64_t applied_seq; /* replica: the high-water mark applied from the primary */
    int64_t catch_up_started_ms;
    int64_t last_batch_ms;           /* replica: when the last batch from the primary arrived */
    struct gs_sync_joiner *joiner;   /* replica: the sync in progress, or NULL */
    struct gs_sync_source **sources; /* primary: syncs being served */
    size_t nsources;
    gs_sync_progress sync_prog; /* sync.c's progress and counters */
    int transport_started;

    /* per-table modes (table_mode.h); NULL = the single-primary behaviour */
    gs_table_modes *tmodes;
    struct gs_table_route *troute; /* table_route.c: finds the tables a request writes */

    pthread_t timer_thread, in_thread;
    int threads_started;
    atomic_int detached;

    /* coordinator mode (coord.c); auth NULL = static mode */
    gs_authority *auth;
    gs_authority_options auth_o;
    char *group_id;
    int64_t term;         /* mu: the term this node acts in */
    char primary_id[128]; /* mu: the current primary ("" = none) */
    char follow[160];     /* mu: "term:primary" this node follows (persisted) */
    int quarantined;      /* mu: 1 decided here, 2 recorded faulted by the coordinator */
    int nvoters;          /* mu: voters of the group */
    int self_draining;    /* mu */
};

/* engine.c */
int64_t gs_repl_now_ms(void);
gs_peer *gs_repl_peer_find(gs_repl_engine *e, const char *id); /* under mu */
/** Encode and send a ReplicationMessage; TRANSPORT_ERROR logged and returned. */
gs_status gs_repl_send_message(gs_repl_engine *e, const char *to, const gs_repl_message *m,
                               gs_error *err);
/** Record an error for status and log it. */
void gs_repl_note_error(gs_repl_engine *e, const gs_error *err, const char *what, const char *peer);
void gs_repl_set_phase(gs_repl_engine *e, const char *phase); /* takes mu */
/** The resolver for a table (apply.h lookup). */
gs_repl_resolver_ref gs_repl_resolver_for(void *engine, const char *table);
/** Run fn on the writer and wait (internal statements). */
gs_status gs_repl_on_writer(gs_repl_engine *e, gs_db_writer_fn fn, void *user, gs_error *err);

/* coord.c */
/** Start the authority (engine start, after the engine's threads). */
gs_status gs_repl_coord_start(gs_repl_engine *e, gs_error *err);
void gs_repl_coord_stop(gs_repl_engine *e);
/** Inbound thread: the authority's view changed: roles, terms, the in-sync set, following. */
void gs_repl_coord_apply_view(gs_repl_engine *e);
/** Under mu: is the coordinator-mode wait met? */
int gs_repl_coord_concern_met(gs_repl_engine *e, const gs_concern_wait *w);
/** Timer thread: in-sync admission and eviction (primary). */
void gs_repl_coord_tick(gs_repl_engine *e, int64_t now);
/** May a batch / sync message / forward stamped (has_term, term) from `from` be accepted? */
gs_status gs_repl_coord_check_sender(gs_repl_engine *e, const char *from, int has_term,
                                     int64_t term, const char *what, gs_error *err);
/** The term to stamp on outgoing messages (0 = static mode: absent). */
int64_t gs_repl_coord_term(gs_repl_engine *e);
/** Route a write in coordinator mode (see gs_repl_route_write). */
gs_status gs_repl_coord_route_write(gs_repl_engine *e, gs_db_job_kind kind, size_t statements,
                                    gs_repl_write_route *route, gs_error *err);
/** NodeHealth.state in coordinator mode (a static string). */
const char *gs_repl_coord_health_state(gs_repl_engine *e);
/** Queue gs_repl_coord_apply_view for the inbound thread (engine.c). */
void gs_repl_post_view_change(gs_repl_engine *e);

/* forward.c */
void gs_repl_forward_request_in(gs_repl_engine *e, const char *from, uint64_t call_id,
                                const uint8_t *bytes, size_t len);
void gs_repl_forward_response_in(gs_repl_engine *e, const char *from, uint64_t call_id,
                                 const uint8_t *bytes, size_t len);
/** Fail forwards past their deadline (timer thread); returns the nearest deadline or 0. */
int64_t gs_repl_forward_expire(gs_repl_engine *e, int64_t now);
/** Fail every waiting forward (stop) with code. */
void gs_repl_forward_fail_all(gs_repl_engine *e, const char *code, const char *msg);

/* table_route.c */
gs_status gs_repl_table_route_open(gs_repl_engine *e, gs_error *err);
void gs_repl_table_route_close(gs_repl_engine *e);
/** With table modes: does this node send the change to its peers / take it from peer p?
 * (DDL goes from the primary-role node only.) */
int gs_repl_table_emits(gs_repl_engine *e, const char *table);
int gs_repl_table_pulls(gs_repl_engine *e, const gs_peer *from, const char *table);
/** First sync with table modes: append to (*names, *n) the tables the joiner does not copy
 * from the primary (so the source neither streams nor lists them): every exact rule and every
 * local table whose mode is not replica or readonly. Inbound thread (runs on the writer). */
void gs_repl_table_sync_skips(gs_repl_engine *e, char ***names, size_t *n);

/* sync.c */
/** A SyncMessage arrived (inbound thread). */
void gs_repl_sync_in(gs_repl_engine *e, const char *from, const uint8_t *bytes, size_t len);
/** Replica: the primary connected; start or resume the first sync when one is needed. */
void gs_repl_sync_maybe_start(gs_repl_engine *e, const char *primary);
/** Timer thread: deadlines of syncs in progress; returns the nearest deadline or 0. */
int64_t gs_repl_sync_tick(gs_repl_engine *e, int64_t now);
/** Replica: catching-up -> ready once the lag allows (timer and inbound threads). */
void gs_repl_sync_check_ready(gs_repl_engine *e, int64_t primary_seq);
/** Load the persisted sync phase at start. */
gs_status gs_repl_sync_load(gs_repl_engine *e, gs_error *err);
/** Inbound thread: ask the source again (a refused or silent request). */
void gs_repl_sync_retry(gs_repl_engine *e);
/** Queue gs_repl_sync_retry for the inbound thread (engine.c). */
void gs_repl_post_sync_retry(gs_repl_engine *e);
/** Inbound thread: forget any sync progress and go back to pending (a full sync from the
 * current primary follows when it is connected). */
void gs_repl_sync_reset(gs_repl_engine *e);
/** Inbound thread (sync.c, for every SyncAck): 1 when the ack is a primary's notice that this
 * node is behind its pruned change log (engine.c; a static-mode replica then resyncs), 0 when
 * it is an ordinary SyncAck. */
int gs_repl_resync_notice_in(gs_repl_engine *e, const char *from, const gs_sync_ack *a);
/** Stop every sync (engine stop). */
void gs_repl_sync_stop(gs_repl_engine *e);
/** Under mu: the lowest seq a first sync being served needs kept in the log (UINT64_MAX =
 * none): the snapshot it streams, or the older one a resumed joiner catches up from. */
uint64_t gs_repl_sync_hold(gs_repl_engine *e);
/** Append ,"syncProgress":{...} to the /health/ready replication object while a first sync
 * runs on this replica (takes mu). */
void gs_repl_sync_status_fields(gs_repl_engine *e, gs_buf *b);

#endif
