/*
 * The inside of a gs_database, shared by database.c (open, submit, close, deadline reaper),
 * writer.c (the writer thread and group commit) and reader.c (the reader threads), plus a
 * small private API for the core's own modules and the tests: writer statistics and running
 * a callback on the writer connection.
 *
 * Locks: `lock` guards the writer queue, the running group, the stop flags of the writer and
 * the reaper, and the statistics; `rlock` guards the reader queue. Neither is held while
 * SQL runs or while a done() callback runs. A thread never holds both.
 *
 * Threads: the writer thread owns writer_conn; reader thread i owns reader_conns[i]; the
 * reaper thread only moves jobs and answers them.
 */
#ifndef GS_DB_DATABASE_INTERNAL_H
#define GS_DB_DATABASE_INTERNAL_H

#include "database.h"
#include "job.h"

#include <pthread.h>
#include <stdatomic.h>

/** The most statements one group commit holds (spec 02 recommends 1000). */
#define GS_GROUP_MAX_STATEMENTS 1000

/** Writer statistics (tests and metrics). */
/** The upper bounds (units) of the group-size buckets in gs_db_stats: 1, 2, 4 .. 256. */
#define GS_DB_GROUP_SIZE_BOUNDS 9
extern const double gs_db_group_size_bounds[GS_DB_GROUP_SIZE_BOUNDS];

typedef struct gs_db_stats {
    uint64_t groups;          /**< BEGIN..COMMIT transactions formed from queued units */
    uint64_t grouped_units;   /**< units run inside those transactions */
    uint64_t max_group_units; /**< the largest group so far */
    uint64_t alone;           /**< jobs run on their own (autocommit, LOAD, DDL, internal) */
    uint64_t shed;            /**< writes skipped at their deadline (WRITE_OVERLOADED) */
    uint64_t timed_out;       /**< writes answered WRITER_WORKER_TIMEOUT */
    uint64_t overloaded;      /**< writes refused at submit because the queue was full */
    uint64_t writes;          /**< write units the writer has run (applied or failed) */
    uint64_t queries;         /**< queries accepted onto a reader or the writer */
    /** Units per writer transaction (a lone job counts as 1): group_size[i] counts those of
     * at most gs_db_group_size_bounds[i] units and above the previous bound; the last slot
     * those above every bound. Their sum is grouped_units + alone. */
    uint64_t group_size[GS_DB_GROUP_SIZE_BOUNDS + 1];
} gs_db_stats;

struct gs_database {
    char *id;
    char *path;
    gs_db_options opts;
    int sync_level; /**< the configured PRAGMA synchronous, restored after a LOAD */
    int memory;     /**< ":memory:": no readers; queries run on the writer */

    pthread_mutex_t lock;
    pthread_cond_t writer_cond;
    pthread_cond_t reaper_cond; /**< CLOCK_MONOTONIC */
    gs_job *wq_head, *wq_tail;
    gs_job *running; /**< the group being executed, linked through next */
    _Atomic int64_t pending;
    _Atomic uint64_t queries; /**< gs_db_stats.queries, counted without the lock */
    int writer_accepting;
    int writer_stop;
    int reaper_stop;
    int reaper_idle; /**< the reaper waits with no deadline: wake it on a new write */
    gs_db_stats stats;

    pthread_mutex_t rlock;
    pthread_cond_t reader_cond;
    gs_job *rq_head, *rq_tail;
    int reader_accepting;
    int readers_stop;

    gs_conn *writer_conn;
    gs_conn **reader_conns;
    int nreaders;
    pthread_t writer_thread;
    pthread_t reaper_thread;
    pthread_t *reader_threads;
    int writer_started, reaper_started, readers_started;
    int writer_handed; /**< writer_conn belongs to the writer thread (it closes it) */
    struct gs_writer_scratch *scratch; /**< writer thread's buffers, allocated at open */

    atomic_int closed;
    pthread_mutex_t close_lock;
    int close_done;

    void *registry_entry; /**< owned by the registry that opened it */

    struct gs_cdc *cdc; /**< change data capture (cdc_internal.h); NULL in memory/read-only */

    /* replication (database.h "replication hooks"): hook_mu guards the hook and repl; the
     * writer calls the hook with hook_mu held, so unsetting it waits for a running call */
    pthread_mutex_t hook_mu;
    void (*commit_hook)(void *user, int64_t seq);
    void *commit_hook_user;
    gs_status (*write_gate)(void *user, gs_error *err); /* hook_mu */
    void *write_gate_user;
    struct gs_repl_engine *repl;
    _Atomic int64_t committed_seq;

    /* backups (backup_cycle.h): backups_on is set before the writer starts (the writer then
     * runs no checkpoint of its own after a load and leaves the final one to the cycle's close
     * hook); `backup` is the cycle, published with __atomic once it runs, NULL without one */
    int backups_on;
    struct gs_backup_cycle *backup;
};

/* writer.c */
struct gs_writer_scratch *gs_writer_scratch_new(void);
void gs_writer_scratch_free(struct gs_writer_scratch *s);
void *gs_db_writer_main(void *db);

/* reader.c */
/** What a reader thread is started with (allocated by the opener, freed by the thread). */
typedef struct gs_reader_arg {
    gs_database *db;
    gs_conn *conn;
} gs_reader_arg;
void *gs_db_reader_main(void *arg);
/** Run a QUERY job on conn and answer it. With require_readonly a statement that would write
 * is refused (queries served by the writer of an in-memory database). */
void gs_db_run_query(gs_conn *conn, gs_job *job, gs_buf *out, gs_row_keys *keys,
                     int require_readonly);

/* database.c */
/** Queue a job on the writer (or the reader queue for a QUERY with readers). Synchronous
 * errors: DATABASE_CLOSED, WRITE_OVERLOADED. The job is consumed either way. */
gs_status gs_db_enqueue_take(gs_database *db, gs_job *job, gs_error *err);

/** Private API: copy the writer statistics. */
void gs_db_get_stats(gs_database *db, gs_db_stats *out);

/** Private API: run fn(user, writer connection, out, err) on the writer thread, alone and in
 * autocommit mode, then answer done with out's JSON (or err). It obeys the queue bound and
 * the write deadline like any write. READ_ONLY on a read-only database. */
gs_status gs_db_writer_call(gs_database *db, gs_db_writer_fn fn, void *fn_user,
                            void (*done)(void *user, const gs_db_reply *reply), void *user,
                            gs_error *err);

#endif
