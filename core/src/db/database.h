/*
 * A database: one SQLite file served by one writer thread (the only write connection,
 * group commit) and a pool of reader threads (read-only connections in WAL mode), each
 * connection with its own statement cache. Spec 01-driver and 02-core.
 *
 * Requests are asynchronous: gs_db_submit copies what it keeps and answers through
 * req->done exactly once, on a reader or writer thread (never before gs_db_submit returns
 * GS_OK; when it returns an error, done is not called). Results arrive as JSON text under
 * the tagged value encoding, ready to be placed in a response.
 *
 * Threads: every function is thread-safe. done() runs on a database thread and must not
 * block.
 */
#ifndef GS_DB_DATABASE_H
#define GS_DB_DATABASE_H

#include <gatestream/abi.h>
#include <jansson.h>
#include <stdint.h>

typedef struct gs_database gs_database;
struct gs_backup_cycle_config;

typedef struct gs_db_options {
    int read_only;              /**< open read-only: no writer; writes fail READ_ONLY */
    int read_pool_size;         /**< reader connections/threads (>= 1; default 4) */
    int wal;                    /**< journal_mode=WAL (default 1) */
    const char *synchronous;    /**< "off"|"normal"|"full"|"extra" (default "normal") */
    int64_t wal_autocheckpoint; /**< <0 = leave SQLite's default; 0 disables */
    int64_t max_pending_writes; /**< queue bound -> WRITE_OVERLOADED (default 1024) */
    int64_t write_timeout_ms;   /**< writer deadline (default 30000, 0 disables) */
    int stmt_cache_size;        /**< prepared statements kept per connection (default 128) */
    int busy_timeout_ms;        /**< PRAGMA busy_timeout (default 5000) */
    int create;                 /**< create the file when missing (default 1) */
    /* change data capture (cdc.h) */
    const char *const *cdc_tables; /**< tables watched from open (borrowed during open) */
    size_t cdc_table_count;
    int64_t cdc_retention_ms;     /**< prune changes older than this (default 3600000) */
    int cdc_watch_on_subscribe;   /**< a subscription watches its table (default 1) */
    int64_t cdc_fallback_poll_ms; /**< poll for other processes' writes (default 1000) */
    /** The change log's bound (cdc.h "bounded log"): estimated bytes (default 1 GiB) and rows
     * (default 0), 0 = unbounded; a WARN past cdc_log_warn_bytes (0 = 80% of the byte bound). */
    int64_t cdc_max_log_bytes;
    int64_t cdc_max_log_changes;
    int64_t cdc_log_warn_bytes;
    const char *node_id; /**< stamped on local changes (default "") */
    /** Change-capture backups (backup_cycle.h), borrowed during open; NULL = none. Forces
     * wal_autocheckpoint=0; BACKUP_UNSUPPORTED for in-memory, read-only or non-WAL databases. */
    const struct gs_backup_cycle_config *backups;
} gs_db_options;

/** Fill with the spec's defaults. */
void gs_db_options_default(gs_db_options *o);

typedef enum gs_db_job_kind {
    GS_DB_QUERY = 1,       /**< one statement on a reader; result: [rows] */
    GS_DB_EXECUTE = 2,     /**< one statement on the writer; result: {changes,lastInsertRowId} */
    GS_DB_TRANSACTION = 3, /**< n statements atomically; result: [{changes,lastInsertRowId}...] */
    GS_DB_BATCH = 4,       /**< one statement over params_batch atomically; result: [...] */
    GS_DB_LOAD = 5,        /**< bulk load; result: {rowsLoaded,changes} */
} gs_db_job_kind;

/** A statement and its parameters: NULL, a JSON array (positional) or a JSON object
 * (named: keys with or without the :, @ or $ prefix). Values follow the tagged encoding. */
typedef struct gs_db_stmt {
    const char *sql;
    json_t *params;
} gs_db_stmt;

typedef struct gs_db_reply {
    gs_status status;  /**< GS_OK or GS_ERROR */
    gs_error err;      /**< when GS_ERROR: the spec's code (QUERY_ERROR, FORBIDDEN_SQL, ...) */
    int retry_after_s; /**< > 0 with WRITE_OVERLOADED */
    const char *json;  /**< when GS_OK: the result JSON text; valid during done() only */
    size_t json_len;
} gs_db_reply;

typedef struct gs_db_request {
    gs_db_job_kind kind;
    const gs_db_stmt *stmts; /**< QUERY/EXECUTE: 1; TRANSACTION: >= 1; BATCH/LOAD: 1 (sql only) */
    size_t stmt_count;
    json_t *params_batch;   /**< BATCH/LOAD: a JSON array of params (>= 1 entry) */
    const char *durability; /**< LOAD: "off" (default) | "normal" */
    int checkpoint;         /**< LOAD: checkpoint afterwards (default 1) */
    void (*done)(void *user, const gs_db_reply *reply);
    void *user;
} gs_db_request;

/** Open (create when allowed) the file at path; applies the spec's pragmas on every
 * connection and starts the writer and reader threads. */
gs_status gs_db_open(const char *id, const char *path, const gs_db_options *opts, gs_database **out,
                     gs_error *err);
/** Submit a request. Errors returned synchronously: DATABASE_CLOSED, READ_ONLY (a write on a
 * read-only database), WRITE_OVERLOADED (queue full; definite, retry after 1 s),
 * INVALID_REQUEST (malformed params or envelope), FORBIDDEN_SQL. */
gs_status gs_db_submit(gs_database *db, const gs_db_request *req, gs_error *err);
/** Stop taking requests (DATABASE_CLOSED), finish queued writes, checkpoint, close the
 * connections and join the threads. Idempotent. Then free with gs_db_free. */
void gs_db_close(gs_database *db);
void gs_db_free(gs_database *db);

const char *gs_db_id(const gs_database *db);
const char *gs_db_path(const gs_database *db);
int gs_db_is_read_only(const gs_database *db);
int gs_db_is_closed(const gs_database *db);
/** Number of writes queued or running (for metrics and tests). */
int64_t gs_db_pending_writes(const gs_database *db);

/* ---- replication hooks (repl/engine.c) ---- */

struct gs_repl_engine;
/** Called on the writer thread after every commit that changed rows, with the highest
 * change-log seq then committed. Set it before writes flow; NULL removes it. */
void gs_db_set_commit_hook(gs_database *db, void (*fn)(void *user, int64_t seq), void *user);
/** A gate every client write passes on the writer, inside its transaction, right before it
 * runs (coordinator mode: primary authority); its error fails the write. NULL removes it. */
void gs_db_set_write_gate(gs_database *db, gs_status (*fn)(void *user, gs_error *err), void *user);
/** The highest change-log seq committed so far (tracked while a commit hook is set). */
int64_t gs_db_committed_seq(const gs_database *db);
/** Record the committed seq (writer thread, at setup). */
void gs_db_note_committed_seq(gs_database *db, int64_t seq);
/** The replication engine attached to the database, or NULL. */
void gs_db_set_repl(gs_database *db, struct gs_repl_engine *e);
struct gs_repl_engine *gs_db_repl(const gs_database *db);

#endif
