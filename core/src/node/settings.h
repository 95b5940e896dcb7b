/*
 * The core's own configuration sections (node, log, plugins, server, databases, tenants),
 * declared as gs_config_key tables so they validate exactly as plugin keys do, and filled
 * into the structs below by gs_cfg_fill. Strings point into the config arena: they live as
 * long as the gs_settings that holds it. Threads: start-up only.
 */
#ifndef GS_NODE_SETTINGS_H
#define GS_NODE_SETTINGS_H

#include <gatestream/abi.h>
#include "../config/config.h"
#include "settings_repl.h"

typedef struct gs_settings_plugin {
    const char *name;   /* instance name */
    const char *plugin; /* plugin name (default: name) */
    const char *kind;
    const char *path;
    const char *config_json; /* validated later against the plugin's own table */
} gs_settings_plugin;

typedef struct gs_settings_cors {
    int enabled;
    gs_config_strings origins; /* ["*"] by default */
    gs_config_strings methods;
    gs_config_strings headers;
    int64_t max_age;
} gs_settings_cors;

typedef struct gs_settings_stmt {
    const char *sql;
} gs_settings_stmt;

typedef struct gs_settings_op {
    const char *database;
    const char *name;
    const char *kind;          /* read | write */
    const char *sql;           /* read: its one statement */
    gs_config_list statements; /* write: gs_settings_stmt */
    gs_config_strings args;
    const char *from_identity_json; /* {"arg": "identity field"} */
    gs_config_strings columns;
} gs_settings_op;

typedef struct gs_settings_metrics {
    int enabled;      /* serve GET /metrics */
    int authenticate; /* run the authenticate hook chain before answering it */
} gs_settings_metrics;

typedef struct gs_settings_server {
    const char *host;
    int64_t port;
    gs_config_strings transports; /* client transport instances that serve; empty = all */
    int64_t max_body_bytes;
    int64_t max_ws_backpressure_bytes; /* 0 = max(16 MiB, max_body_bytes) */
    int accept_sql;
    int accept_backup_restore;
    const char *cluster_status; /* off | authenticated | any: who may GET /db/{id}/cluster */
    gs_settings_cors cors;
    gs_settings_metrics metrics;
    int status_page; /* serve GET /status and /status.json (core/src/api/status.h) */
    const char *tls_cert_file;
    const char *tls_key_file;
    int64_t io_threads;
    int64_t connection_limit;
    int64_t idle_timeout_s;
    int access_log;
    int64_t shutdown_timeout_ms;
    gs_config_list operations; /* gs_settings_op */
} gs_settings_server;

typedef struct gs_settings_cdc {
    gs_config_strings tables; /* watched from start-up */
    int64_t retention_ms;
    int watch_on_subscribe;
    int64_t fallback_poll_ms;
    int64_t max_log_bytes;   /* the change log's size bound (0 = unbounded) */
    int64_t max_log_changes; /* the change log's row bound (0 = unbounded) */
    int64_t log_warn_bytes;  /* WARN past this many bytes (0 = 80% of max_log_bytes) */
} gs_settings_cdc;

/* databases[].backups: the change-capture cycle (spec 02 "Backups"); on when destination is
 * set. Keys are the spec's BackupCycleOptions in snake case. */
typedef struct gs_settings_backups {
    const char *destination; /* a backup_destination plugin instance */
    int64_t interval_ms;
    int64_t full_copy_interval_ms;
    const char *chain_name;
    const char *name_prefix;
    int64_t piece_bytes;
    int fingerprint;
    const char *staging_dir; /* default <database file>-backup; relative to node.data_dir */
    int64_t max_uncaptured_log_bytes; /* 0 = unbounded */
    int64_t pages_per_step;
    int64_t restart_limit;
    int64_t stall_timeout_ms;
    int64_t destination_timeout_ms;
    int64_t no_progress_step_limit;
} gs_settings_backups;

/* databases[].sources[]: follow tables of a remote node (core/src/source). */
typedef struct gs_settings_source {
    const char *id;
    const char *url;
    const char *database;     /* remote database id (default: this database's id) */
    gs_config_strings tables; /* exact names, or prefixes ending in '*' */
    const char *prefix;       /* local table name prefix ("" = none) */
    const char *token;        /* bearer token (NULL = none) */
    const char *tls_ca_cert;  /* CA bundle for https (NULL = system default) */
    int64_t page_rows;
    int64_t retry_initial_ms;
    int64_t retry_max_ms;
} gs_settings_source;

/* databases[].tables[]: a per-table replication mode (repl/table_mode.h; static mode). */
typedef struct gs_settings_table_mode {
    const char *match; /* exact name or prefix ending in '*' */
    const char *mode;  /* primary | replica | sync | readonly | writeonly | excluded */
} gs_settings_table_mode;

typedef struct gs_settings_db {
    const char *id;
    const char *path;
    int read_only;
    int64_t read_pool_size;
    const char *synchronous;
    int wal;
    int64_t wal_autocheckpoint;
    int64_t max_pending_writes;
    int64_t write_timeout_ms;
    int64_t stmt_cache_size;
    int64_t busy_timeout_ms;
    const char *migrations; /* folder of migration files (relative to the config file) */
    gs_settings_cdc cdc;
    gs_settings_backups backups;
    gs_config_list sources;  /* gs_settings_source */
    const char *write_proxy; /* forward | reject: local writes to `replica` tables */
    gs_config_list tables;   /* gs_settings_table_mode: per-table replication modes */
} gs_settings_db;

typedef struct gs_settings_tenants {
    const char *dir;
    const char *extension;
    int create;
    int64_t max_open;
    int64_t idle_timeout_ms; /* 0 = tenants stay open until evicted or shutdown */
    int64_t read_pool_size;
    const char *synchronous;
    const char *migrations; /* folder applied to every tenant file as it opens */
} gs_settings_tenants;

typedef struct gs_settings {
    struct {
        const char *id;
        const char *data_dir;
    } node;
    struct {
        const char *level;
    } log;
    gs_config_list plugins; /* gs_settings_plugin */
    gs_settings_server server;
    gs_config_list databases; /* gs_settings_db */
    gs_settings_tenants tenants;
    gs_settings_repl replication;
} gs_settings;

/** The root key table and its size. */
const gs_config_key *gs_settings_keys(size_t *count);

#endif
