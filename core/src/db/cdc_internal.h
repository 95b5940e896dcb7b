/*
 * The inside of a database's change data capture, shared by cdc_log.c (state, schema, epoch,
 * write stamping, watch/unwatch, retention), cdc_trigger.c (the triggers), cdc_feed.c (the
 * feed thread, change rows turned into events) and cdc_sub.c (subscriptions: filters, txEnd,
 * resume), plus the hooks the database engine calls (database.c at open and close, writer.c
 * around commits).
 *
 * Locks, in the order they may be taken: `feed_lock` (the subscriber list, the feed
 * connection and the feed position; held while a read is delivered, so whoever holds it
 * sees delivery stopped between two reads), then `prune_mu` (the retention delete against a
 * subscriber's resume check), then `mu` (the watched set, epoch, initialised flag),
 * `deliver_mu` (which callback is running, so unsubscribe waits for one callback rather than
 * a whole read) and `wake_mu` (the feed's wake-up). The writer thread never takes feed_lock;
 * unsubscribe only tries it.
 *
 * Threads: the writer thread runs every statement that writes (schema, triggers, stamping,
 * pruning) on its own connection; the feed thread owns the feed connection except while a
 * subscriber holds feed_lock to position itself.
 */
#ifndef GS_DB_CDC_INTERNAL_H
#define GS_DB_CDC_INTERNAL_H

#include "cdc.h"
#include "database_internal.h"
#include "repl/hlc.h"
#include "sqlite/value.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

/** The most change rows one feed read takes (spec 02 recommends 1000). */
#define GS_CDC_READ_LIMIT 1000

/** A watched table: its canonical name and the column list its triggers were built with. */
typedef struct gs_cdc_table {
    char *name;
    char **cols;
    size_t ncols;
} gs_cdc_table;

/** A normalised filter condition. */
typedef struct gs_cdc_cond {
    char *key;
    gs_value value; /**< text/blob bytes live in the subscription's arena */
} gs_cdc_cond;

struct gs_cdc_sub {
    struct gs_cdc_sub *next;
    char *table;
    gs_cdc_cond *conds;
    size_t nconds;
    char *arena;
    int mark_tx_end;
    gs_cdc_event_fn on_event;
    void *user;
    uint64_t cursor; /**< the highest seq this subscription has been offered */
    int catching_up; /**< replaying (cursor, feed position] before going live */
    atomic_int dead; /**< unsubscribed: never called again; unlinked and freed by whoever
                          next holds feed_lock (the feed, or the unsubscriber) */
    int has_held;    /**< mark_tx_end: one change held back until its transaction ends */
    uint64_t held_seq;
    char held_tx[72];
    gs_buf held; /**< the held event without its closing brace */
};

typedef struct gs_cdc {
    gs_database *db;

    /* watched set and identity: guarded by mu; changed on the writer thread only */
    pthread_mutex_t mu;
    int initialised;
    char epoch[64];
    gs_cdc_table *tables;
    size_t ntables, cap_tables;
    char **config_tables; /**< databases[].cdc.tables (watched at open, or once they exist) */
    size_t nconfig;
    char *node_id;

    atomic_int stamping;            /**< stamp local writes (on with the first subscription) */
    atomic_int nsubs;               /**< live subscriptions (the writer wakes the feed only then) */
    atomic_int nwatched;            /**< watched tables (the writer refreshes triggers after DDL) */
    atomic_int capture_all;         /**< replication: every user table is watched, DDL is checked
                                         and recorded in the log (gs_cdc_capture_all_refresh) */
    _Atomic uint64_t hold;          /**< retention keeps every row with a seq above this */
    _Atomic uint64_t repl_hold;     /**< likewise for replication: the lowest replica position */
    _Atomic uint64_t repl_floor;    /**< never pruned past, even over the size bound (first
                                         syncs being served); UINT64_MAX = none */
    _Atomic uint64_t pruned_seq;    /**< highest seq retention deleted (also in _sirannon_meta) */
    _Atomic uint64_t compacted_seq; /**< highest seq compaction deleted (also in _sirannon_meta,
                                         cdc_compacted_seq): a subscriber resuming below it
                                         may have missed a superseded change, so it resyncs */
    /* the bounded log (cdc_log.c, retention): its measured size, written by the prune pass on
     * the writer thread, read by anyone (gs_db_change_log_stats) */
    _Atomic int64_t log_changes;      /**< rows in the log (-1 until first measured) */
    _Atomic int64_t log_bytes;        /**< estimated bytes (see GS_CDC_ROW_BYTES_SQL) */
    _Atomic uint64_t log_compacted;   /**< changes compaction deleted, in total */
    _Atomic uint64_t log_forced;      /**< changes pruned past a replica's need, in total */
    _Atomic uint64_t log_next_check;  /**< gs_cdc_retention_tick queues a pass at this head */
    _Atomic uint64_t log_pass_head;   /**< the head the last pass planned from */
    _Atomic int64_t log_pass_ms;      /**< when it ran (monotonic ms) */
    _Atomic int log_near;             /**< it left the log within two steps of a mark: a tick
                                           also queues a pass once a second while the head
                                           moves, so a log that stops growing just past its
                                           bound does not stay there */
    uint64_t log_counted_upto;        /**< writer: rows up to this seq are in the counts */
    int log_passes;                   /**< writer: passes since the last full measure */
    int64_t log_recent_avg;           /**< writer: bytes per row added since the pass before */
    uint64_t log_compact_top;         /**< writer: changes up to this seq were compacted
                                           against everything before them */
    int log_over_warn;                /**< writer: the last pass found it past the warn mark */
    int64_t log_reported_ms;          /**< writer: when compaction was last logged */
    int64_t log_forced_reported_ms;   /**< writer: when pruning past a replica was */
    int64_t log_unreported_compacted; /**< writer: compacted since that line */
    int64_t log_unreported_forced;    /**< writer: pruned past a replica since that line */
    gs_hlc clock;
    uint64_t rng[2]; /**< writer thread: transaction ids */

    /* feed thread */
    pthread_mutex_t wake_mu;
    pthread_cond_t wake_cond; /**< CLOCK_MONOTONIC */
    int wake;
    int stop;
    pthread_t feed_thread;
    pthread_t feed_self; /**< written by the feed thread before it sets feed_running */
    int feed_started;
    int closing; /**< feed_lock: gs_db_close stopped the feed for good */
    atomic_int feed_running;

    pthread_mutex_t feed_lock;
    pthread_mutex_t prune_mu;
    /* the callback in progress: unsubscribe waits for it (never for a whole read) */
    pthread_mutex_t deliver_mu;
    pthread_cond_t deliver_cond;
    struct gs_cdc_sub *in_cb;
    struct gs_cdc_sub *subs;
    gs_conn *feed_conn;
    int positioned;        /**< feed_last is valid (false while nobody subscribes) */
    uint64_t feed_last;    /**< the highest seq the feed has delivered */
    char feed_last_tx[72]; /**< the tx_id of the row at feed_last ("" = none / unstamped) */
    int feed_drained;      /**< the last read reached the log's end */
    int64_t next_prune_ms;
    int reads_since_prune;
    atomic_int prune_queued;
    gs_buf scratch; /**< feed thread: event text */
} gs_cdc;

/* ---- cdc_log.c and cdc_trigger.c (writer side) ---- */

/** Allocate the CDC state of a file database (not in memory, not read-only). */
gs_status gs_cdc_create(gs_database *db, gs_error *err);
/** Free everything; the feed must be stopped. Subscriptions still registered are freed. */
void gs_cdc_free(gs_cdc *cdc);
/** At open, before the writer thread starts (conn is still the opener's): initialise when
 * the file already holds a change log or databases[].cdc.tables is not empty. */
gs_status gs_cdc_open(gs_cdc *cdc, gs_conn *writer_conn, gs_error *err);
/** Writer thread: create the log and meta tables, mint the epoch, seed the clock, reinstall
 * the triggers of tables already watched (idempotent; must run inside a transaction). */
gs_status gs_cdc_init_on_writer(gs_cdc *cdc, gs_conn *conn, gs_error *err);
/** Writer thread: install the triggers of `table` (inside a transaction). Sets *canonical
 * to the table's declared name (gs_free it). */
gs_status gs_cdc_install(gs_cdc *cdc, gs_conn *conn, const char *table, char **canonical,
                         gs_error *err);
/** Writer thread: drop the three triggers of a table (any that exist). */
gs_status gs_cdc_drop_triggers(gs_conn *conn, const char *table, gs_error *err);
/** Writer thread: *exists = the table exists (a view or virtual table is a CDC_ERROR). */
gs_status gs_cdc_table_exists(gs_conn *conn, const char *table, int *exists, gs_error *err);
/* cdc_log.c helpers shared with cdc_trigger.c */
gs_status gs_cdc_exec(gs_conn *conn, const char *sql, gs_error *err);
gs_status gs_cdc_bad_identifier(gs_error *err, const char *what, const char *name);
void gs_cdc_table_clear(gs_cdc_table *t);
/** Take t into the watched set (replacing an entry of the same name); t is consumed. */
void gs_cdc_watched_put(gs_cdc *cdc, gs_cdc_table *t);
void gs_cdc_watched_remove(gs_cdc *cdc, const char *name);
/** A watched table's canonical name (gs_free it), or NULL. */
char *gs_cdc_watched_name(gs_cdc *cdc, const char *table);
int gs_cdc_is_configured(gs_cdc *cdc, const char *table);
/** ^[a-zA-Z_][a-zA-Z0-9_]*$ */
int gs_cdc_identifier_ok(const char *s);

/* Writer hooks (writer.c). All are cheap no-ops when CDC is idle. */
static inline int gs_cdc_stamping(const gs_database *db)
{
    return db->cdc && atomic_load_explicit(&db->cdc->stamping, memory_order_relaxed);
}
/** The highest seq in the log (the writer holds the write lock: no one else adds rows). */
gs_status gs_cdc_max_seq(gs_conn *conn, uint64_t *out, gs_error *err);

/*
 * Write-time stamping (spec 08): the triggers read node_id, tx_id and hlc from the one-row
 * table GS_CDC_STAMP_TABLE, or write them empty when it has no row. The writer sets the stamp
 * before a unit (or, applying a replicated change, before each change) and clears it before
 * its transaction commits, so the row exists only inside the writer's own open transaction:
 * the rows a unit's triggers write carry its stamp as they are inserted (no rewrite of the
 * log afterwards), and another connection or process, which never sees an uncommitted row,
 * keeps writing unstamped changes. A savepoint rolled back takes the stamp it set with it.
 */
#define GS_CDC_STAMP_TABLE "_sirannon_write_stamp"
/** Set the stamp (inside a transaction; the log's tables exist). QUERY_ERROR and the like. */
gs_status gs_cdc_stamp_set(gs_conn *conn, const char *node_id, const char *tx_id, const char *hlc,
                           gs_error *err);
/** Mint a local stamp (this node, a fresh 32-hex tx_id, gs_hlc_now into hlc, GS_HLC_MAX_LEN
 * bytes) and set it. */
gs_status gs_cdc_stamp_arm(gs_cdc *cdc, gs_conn *conn, char *hlc, gs_error *err);
/** Remove the stamp (before the transaction that set it commits). */
gs_status gs_cdc_stamp_clear(gs_conn *conn, gs_error *err);
/** Before an ALTER TABLE (inside a transaction): drop the triggers of every watched table,
 * since SQLite refuses to drop or rename a column a trigger names. gs_cdc_after_ddl with force
 * puts them back. */
gs_status gs_cdc_before_alter(gs_cdc *cdc, gs_conn *conn, gs_error *err);
/** After a DDL statement: reinstall the triggers of watched tables whose columns changed (all
 * of them with force) and forget dropped ones. CDC_ERROR (the statement then fails). Internal
 * callers that run DDL on the writer (migrations) call it too. */
gs_status gs_cdc_after_ddl(gs_cdc *cdc, gs_conn *conn, int force, gs_error *err);
/** Replication's "capture every table" mode (writer thread, inside a transaction): initialise
 * change capture when it is not, refresh the triggers of watched tables whose columns changed
 * (gs_cdc_after_ddl without force), install triggers on every user table that has none
 * (_sirannon*, sqlite_*, virtual and shadow tables are skipped), and set capture_all and
 * stamping (replication sends only stamped rows). From then on the writer runs it after every
 * DDL statement. CDC_ERROR names a table that cannot carry triggers (its name or a column's is
 * not a plain identifier). */
gs_status gs_cdc_capture_all_refresh(gs_cdc *cdc, gs_conn *conn, gs_error *err);
/** After a commit that changed rows: wake the feed when anyone subscribes. */
void gs_cdc_wake(gs_cdc *cdc);
/** Queue a retention prune on the writer (feed thread). */
void gs_cdc_queue_prune(gs_cdc *cdc);
/** Prune now and wait (tests, operators). */
gs_status gs_cdc_prune_now(gs_database *db, gs_error *err);
/** The replication engine's timer (any thread, cheap): queue a retention pass when the log
 * grew past the point the last pass set (a step of the configured bound), so the bound holds
 * between the feed's periodic passes. head = the highest committed seq. */
void gs_cdc_retention_tick(gs_cdc *cdc, uint64_t head);

/** The database's HLC (stamps local writes; replication merges remote stamps into it with
 * gs_hlc_receive). NULL for in-memory and read-only databases. Seeded from the file when
 * change capture initialises (at open when the file has a change log). */
static inline gs_hlc *gs_cdc_clock(gs_database *db)
{
    return db->cdc ? &db->cdc->clock : NULL;
}

/* Blocking writer call (never from the writer or feed thread). */
gs_status gs_cdc_writer_call_sync(gs_database *db, gs_db_writer_fn fn, void *fn_user,
                                  gs_error *err);

/* ---- cdc_feed.c ---- */

/** Start the feed thread and open its connection (idempotent). */
gs_status gs_cdc_feed_start(gs_cdc *cdc, gs_error *err);
/** Stop and join the feed thread (idempotent). */
void gs_cdc_feed_stop(gs_cdc *cdc);
/** The calling thread is the feed thread. */
int gs_cdc_on_feed_thread(gs_cdc *cdc);
/** feed_lock held: make feed_last valid (the log's current end) when it is not. */
gs_status gs_cdc_feed_position(gs_cdc *cdc, gs_error *err);
/** feed_lock held: the highest seq ever assigned (sqlite_sequence) and the lowest kept. */
gs_status gs_cdc_feed_bounds(gs_cdc *cdc, uint64_t *max_seq, int *has_min, uint64_t *min_seq,
                             gs_error *err);

/* ---- cdc_sub.c ---- */

/** One change row, parsed once and offered to every subscription of its table. */
typedef struct gs_cdc_change {
    uint64_t seq;
    const char *table;
    const char *op; /**< "insert" | "update" | "delete" */
    const char *row_id;
    double changed_at;
    json_t *new_row; /**< NULL for a delete */
    json_t *old_row; /**< NULL for an insert */
    const char *node_id, *tx_id, *hlc;
    gs_buf new_text, old_text; /**< rendered rows (tagged encoding) */
    gs_buf tail;               /**< ,"seq":..,"timestamp":..,[hlc,origin],rowId[,txId] */
} gs_cdc_change;

/** feed_lock held: unlink and free dead subscriptions; forget the position when none is
 * left. */
void gs_cdc_reap(gs_cdc *cdc);
/** Offer one change to a subscription (feed_lock held). */
void gs_cdc_sub_offer(gs_cdc *cdc, gs_cdc_sub *s, const gs_cdc_change *ch);
/** The read that offered changes ended: release a held change whose transaction is over. */
void gs_cdc_sub_end_read(gs_cdc *cdc, gs_cdc_sub *s);
void gs_cdc_sub_free(gs_cdc_sub *s);

#endif
