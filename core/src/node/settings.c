#include "settings.h"

#include <stddef.h>

#include "settings_keys.h"

static const char *const cluster_status_choices[] = {"off", "authenticated", "any", NULL};
static const char *const kind_choices[] = {"client_transport",
                                           "repl_transport",
                                           "resolver",
                                           "coordinator",
                                           "hook",
                                           "backup_destination",
                                           NULL};
static const char *const sync_choices[] = {"off", "normal", "full", "extra", NULL};
static const char *const op_kinds[] = {"read", "write", NULL};
static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};

typedef struct {
    const char *id;
    const char *data_dir;
} node_s;

static const gs_config_key node_keys[] = {
    KEY("id", GS_CFG_STRING, "node-1", 0, node_s, id, "this node's stable identifier"),
    KEY("data_dir", GS_CFG_STRING, "./data", 0, node_s, data_dir,
        "folder for database files (relative to the working directory)"),
};

typedef struct {
    const char *level;
} log_s;
static const gs_config_key log_keys[] = {
    KEYC("level", "info", log_s, level, log_levels, "error | warn | info | debug"),
};

static const gs_config_key plugin_keys[] = {
    KEY("name", GS_CFG_STRING, NULL, 1, gs_settings_plugin, name, "instance name, unique"),
    KEY("plugin", GS_CFG_STRING, NULL, 0, gs_settings_plugin, plugin,
        "plugin name (default: the instance name)"),
    {.name = "kind",
     .type = GS_CFG_STRING,
     .required = 1,
     .offset = offsetof(gs_settings_plugin, kind),
     .help = "the plugin kind",
     .choices = kind_choices},
    KEY("path", GS_CFG_STRING, NULL, 0, gs_settings_plugin, path,
        "the .so to load (relative to the config file); default: found by name"),
    KEY("config", GS_CFG_JSON, NULL, 0, gs_settings_plugin, config_json,
        "the plugin's own keys (see --describe-plugin)"),
};

static const gs_config_key cors_keys[] = {
    KEY("enabled", GS_CFG_BOOL, "false", 0, gs_settings_cors, enabled, "answer CORS"),
    KEY("origins", GS_CFG_STRING_LIST, NULL, 0, gs_settings_cors, origins,
        "allowed origins; [\"*\"] when empty; a listed origin is echoed"),
    KEY("methods", GS_CFG_STRING_LIST, NULL, 0, gs_settings_cors, methods,
        "default GET, POST, OPTIONS"),
    KEY("headers", GS_CFG_STRING_LIST, NULL, 0, gs_settings_cors, headers,
        "default Content-Type, Authorization"),
    KEYR("max_age", GS_CFG_INT, "86400", gs_settings_cors, max_age, 0, 31536000,
         "Access-Control-Max-Age in seconds"),
};

static const gs_config_key stmt_keys[] = {
    KEY("sql", GS_CFG_STRING, NULL, 1, gs_settings_stmt, sql,
        "a statement; named parameters (:arg) bind the operation's arguments"),
};

static const gs_config_key op_keys[] = {
    KEY("database", GS_CFG_STRING, NULL, 1, gs_settings_op, database, "database id"),
    KEY("name", GS_CFG_STRING, NULL, 1, gs_settings_op, name, "operation name"),
    {.name = "kind",
     .type = GS_CFG_STRING,
     .required = 1,
     .offset = offsetof(gs_settings_op, kind),
     .help = "read | write",
     .choices = op_kinds},
    KEY("sql", GS_CFG_STRING, NULL, 0, gs_settings_op, sql, "read: its one statement"),
    SUB("statements", GS_CFG_LIST, gs_settings_op, statements, stmt_keys, sizeof(gs_settings_stmt),
        "write: statements run in one transaction"),
    KEY("args", GS_CFG_STRING_LIST, NULL, 0, gs_settings_op, args,
        "argument names a caller may supply"),
    KEY("from_identity", GS_CFG_JSON, NULL, 0, gs_settings_op, from_identity_json,
        "map of argument name -> identity field the server fills in"),
    KEY("columns", GS_CFG_STRING_LIST, NULL, 0, gs_settings_op, columns,
        "read: the columns its statement returns"),
};

static const gs_config_key metrics_keys[] = {
    KEY("enabled", GS_CFG_BOOL, "false", 0, gs_settings_metrics, enabled,
        "serve GET /metrics in the Prometheus text format"),
    KEY("authenticate", GS_CFG_BOOL, "true", 0, gs_settings_metrics, authenticate,
        "run the authenticate hook chain before answering /metrics"),
};

static const gs_config_key server_keys[] = {
    KEY("host", GS_CFG_STRING, "127.0.0.1", 0, gs_settings_server, host, "bind address"),
    KEYR("port", GS_CFG_INT, "9876", gs_settings_server, port, 0, 65535,
         "HTTP port (0 = ephemeral)"),
    KEY("transports", GS_CFG_STRING_LIST, NULL, 0, gs_settings_server, transports,
        "client transport instances that serve (default: every one)"),
    KEYR("max_body_bytes", GS_CFG_INT, "1048576", gs_settings_server, max_body_bytes, 1,
         4294967295LL, "largest request body or WebSocket message"),
    KEYR("max_ws_backpressure_bytes", GS_CFG_INT, "0", gs_settings_server,
         max_ws_backpressure_bytes, 0, 4294967295LL,
         "WebSocket outbound bound; 0 = max(16 MiB, max_body_bytes)"),
    KEY("accept_sql", GS_CFG_BOOL, "false", 0, gs_settings_server, accept_sql,
        "accept SQL statements over the network"),
    KEY("accept_backup_restore", GS_CFG_BOOL, "false", 0, gs_settings_server, accept_backup_restore,
        "accept POST /db/{id}/backup/restore"),
    KEYC("cluster_status", "off", gs_settings_server, cluster_status, cluster_status_choices,
         "who may read GET /db/{id}/cluster (authorizeClusterStatus): off (404 for everyone), "
         "authenticated (a request the authenticate hook gave an identity), any"),
    SUB("cors", GS_CFG_SECTION, gs_settings_server, cors, cors_keys, 0, "CORS"),
    SUB("metrics", GS_CFG_SECTION, gs_settings_server, metrics, metrics_keys, 0,
        "GET /metrics (Prometheus)"),
    KEY("status_page", GS_CFG_BOOL, "false", 0, gs_settings_server, status_page,
        "serve the live status page GET /status and its data GET /status.json, behind the "
        "authenticate hook chain like the data routes"),
    KEY("tls_cert_file", GS_CFG_STRING, NULL, 0, gs_settings_server, tls_cert_file,
        "PEM certificate chain: serve HTTPS"),
    KEY("tls_key_file", GS_CFG_STRING, NULL, 0, gs_settings_server, tls_key_file,
        "PEM private key for tls_cert_file"),
    KEYR("io_threads", GS_CFG_INT, "2", gs_settings_server, io_threads, 1, 256,
         "I/O threads per client transport"),
    KEYR("connection_limit", GS_CFG_INT, "1024", gs_settings_server, connection_limit, 1, 1000000,
         "simultaneous connections"),
    KEYR("idle_timeout_s", GS_CFG_INT, "120", gs_settings_server, idle_timeout_s, 1, 86400,
         "close idle connections after this many seconds"),
    KEY("access_log", GS_CFG_BOOL, "true", 0, gs_settings_server, access_log,
        "one log line per request"),
    KEYR("shutdown_timeout_ms", GS_CFG_INT, "3000", gs_settings_server, shutdown_timeout_ms, 0,
         600000, "how long in-flight requests may finish on SIGTERM"),
    SUB("operations", GS_CFG_LIST, gs_settings_server, operations, op_keys, sizeof(gs_settings_op),
        "registered operations"),
};

static const gs_config_key cdc_keys[] = {
    KEY("tables", GS_CFG_STRING_LIST, NULL, 0, gs_settings_cdc, tables,
        "tables whose changes are captured from start-up (after migrations)"),
    KEYR("retention_ms", GS_CFG_INT, "3600000", gs_settings_cdc, retention_ms, 1000, 31536000000LL,
         "keep captured changes this long (resume window)"),
    KEY("watch_on_subscribe", GS_CFG_BOOL, "true", 0, gs_settings_cdc, watch_on_subscribe,
        "a subscription to an untracked table starts tracking it"),
    KEYR("fallback_poll_ms", GS_CFG_INT, "1000", gs_settings_cdc, fallback_poll_ms, 10, 600000,
         "poll for changes written by other processes"),
    KEYR("max_log_bytes", GS_CFG_INT, "1073741824", gs_settings_cdc, max_log_bytes, 0,
         1099511627776LL,
         "bound on the change log's size (estimated bytes; 0 = unbounded): past it, changes a "
         "slow replica still needs are compacted, then the oldest pruned (that replica resyncs)"),
    KEYR("max_log_changes", GS_CFG_INT, "0", gs_settings_cdc, max_log_changes, 0, 1000000000000LL,
         "bound on the change log's rows, enforced like max_log_bytes (0 = none)"),
    KEYR("log_warn_bytes", GS_CFG_INT, "0", gs_settings_cdc, log_warn_bytes, 0, 1099511627776LL,
         "log a warning when the change log passes this size (0 = 80% of max_log_bytes)"),
};

static const gs_config_key backup_keys[] = {
    KEY("destination", GS_CFG_STRING, NULL, 0, gs_settings_backups, destination,
        "backup_destination plugin instance the pieces go to; setting it turns the cycle on"),
    KEYR("interval_ms", GS_CFG_INT, "60000", gs_settings_backups, interval_ms, 100, 31536000000LL,
         "capture the write-ahead log (then checkpoint it) this often"),
    KEYR("full_copy_interval_ms", GS_CFG_INT, "86400000", gs_settings_backups,
         full_copy_interval_ms, 0, 31536000000LL,
         "start a fresh chain with a full copy once a chain is this old"),
    KEY("chain_name", GS_CFG_STRING, "sirannon-backup-chain", 0, gs_settings_backups, chain_name,
        "name the list of chains is stored under at the destination"),
    KEY("name_prefix", GS_CFG_STRING, "sirannon-backup", 0, gs_settings_backups, name_prefix,
        "prefix of the names full copies and change pieces are stored under"),
    KEYR("piece_bytes", GS_CFG_INT, "16777216", gs_settings_backups, piece_bytes, 1024, 1073741824,
         "bytes per stored piece (the last piece of a file may be shorter)"),
    KEY("fingerprint", GS_CFG_BOOL, "true", 0, gs_settings_backups, fingerprint,
        "record the SHA-256 of every backup and check it on verify and restore"),
    KEY("staging_dir", GS_CFG_STRING, NULL, 0, gs_settings_backups, staging_dir,
        "local folder for the cycle state and staged copies (relative to node.data_dir); "
        "default <database file>-backup; needs free space equal to the database"),
    KEYR("max_uncaptured_log_bytes", GS_CFG_INT, "0", gs_settings_backups, max_uncaptured_log_bytes,
         0, 1099511627776LL,
         "past this many write-ahead log bytes no capture took, empty the log and start a fresh "
         "chain (0 = unbounded)"),
    KEYR("pages_per_step", GS_CFG_INT, "256", gs_settings_backups, pages_per_step, 1, 1000000,
         "pages per step of a full copy"),
    KEYR("restart_limit", GS_CFG_INT, "3", gs_settings_backups, restart_limit, 1, 1000,
         "full-copy restarts tolerated before BACKUP_RESTARTED"),
    KEYR("stall_timeout_ms", GS_CFG_INT, "30000", gs_settings_backups, stall_timeout_ms, 100,
         86400000, "a full-copy step must arrive within this (else BACKUP_STALLED)"),
    KEYR("destination_timeout_ms", GS_CFG_INT, "600000", gs_settings_backups,
         destination_timeout_ms, 100, 86400000,
         "a destination call must return within this (else BACKUP_DESTINATION_ERROR)"),
    KEYR("no_progress_step_limit", GS_CFG_INT, "256", gs_settings_backups, no_progress_step_limit,
         1, 1000000, "full-copy steps without progress tolerated before BACKUP_RESTARTED"),
};

static const gs_config_key source_keys[] = {
    KEY("id", GS_CFG_STRING, NULL, 1, gs_settings_source, id,
        "source name, unique within the database"),
    KEY("url", GS_CFG_STRING, NULL, 1, gs_settings_source, url,
        "the remote node: http://host:port or https://host:port"),
    KEY("database", GS_CFG_STRING, NULL, 0, gs_settings_source, database,
        "remote database id (default: this database's id)"),
    KEY("tables", GS_CFG_STRING_LIST, NULL, 1, gs_settings_source, tables,
        "remote tables to follow: exact names, or prefixes ending in '*'"),
    KEY("prefix", GS_CFG_STRING, "", 0, gs_settings_source, prefix,
        "local table name prefix (remote users -> local <prefix>users)"),
    KEY("token", GS_CFG_STRING, NULL, 0, gs_settings_source, token,
        "bearer token sent to the remote node"),
    KEY("tls_ca_cert", GS_CFG_STRING, NULL, 0, gs_settings_source, tls_ca_cert,
        "CA bundle for an https remote (default: the system's)"),
    KEYR("page_rows", GS_CFG_INT, "500", gs_settings_source, page_rows, 1, 1000,
         "rows per bootstrap page"),
    KEYR("retry_initial_ms", GS_CFG_INT, "500", gs_settings_source, retry_initial_ms, 10, 3600000,
         "first reconnect delay"),
    KEYR("retry_max_ms", GS_CFG_INT, "30000", gs_settings_source, retry_max_ms, 10, 3600000,
         "reconnect delay cap (the delay doubles up to it, with jitter)"),
};

static const char *const write_proxy_choices[] = {"forward", "reject", NULL};
static const char *const table_mode_choices[] = {"primary",   "replica",  "sync", "readonly",
                                                 "writeonly", "excluded", NULL};

static const gs_config_key table_mode_keys[] = {
    KEY("match", GS_CFG_STRING, NULL, 1, gs_settings_table_mode, match,
        "a table name, or a prefix ending in '*' (audit_*)"),
    {.name = "mode",
     .type = GS_CFG_STRING,
     .required = 1,
     .offset = offsetof(gs_settings_table_mode, mode),
     .help = "primary | replica | sync | readonly | writeonly | excluded",
     .choices = table_mode_choices},
};

static const gs_config_key db_keys[] = {
    KEY("id", GS_CFG_STRING, NULL, 1, gs_settings_db, id, "database id used in /db/{id}"),
    KEY("path", GS_CFG_STRING, NULL, 0, gs_settings_db, path,
        "file (relative to node.data_dir); default <id>.db"),
    KEY("read_only", GS_CFG_BOOL, "false", 0, gs_settings_db, read_only, "refuse writes"),
    KEYR("read_pool_size", GS_CFG_INT, "4", gs_settings_db, read_pool_size, 1, 64,
         "reader connections"),
    KEYC("synchronous", "normal", gs_settings_db, synchronous, sync_choices, "PRAGMA synchronous"),
    KEY("wal", GS_CFG_BOOL, "true", 0, gs_settings_db, wal, "journal_mode=WAL"),
    KEYR("wal_autocheckpoint", GS_CFG_INT, "-1", gs_settings_db, wal_autocheckpoint, -1, 1000000000,
         "frames; -1 = SQLite's default, 0 disables"),
    KEYR("max_pending_writes", GS_CFG_INT, "1024", gs_settings_db, max_pending_writes, 1, 1000000,
         "writes queued past this get WRITE_OVERLOADED"),
    KEYR("write_timeout_ms", GS_CFG_INT, "30000", gs_settings_db, write_timeout_ms, 0, 86400000,
         "writer deadline; 0 disables"),
    KEYR("stmt_cache_size", GS_CFG_INT, "128", gs_settings_db, stmt_cache_size, 0, 100000,
         "prepared statements per connection"),
    KEYR("busy_timeout_ms", GS_CFG_INT, "5000", gs_settings_db, busy_timeout_ms, 0, 600000,
         "PRAGMA busy_timeout"),
    SUB("cdc", GS_CFG_SECTION, gs_settings_db, cdc, cdc_keys, 0, "change data capture"),
    SUB("backups", GS_CFG_SECTION, gs_settings_db, backups, backup_keys, 0,
        "change-capture backups: a full copy, then the write-ahead log on an interval"),
    KEY("migrations", GS_CFG_STRING, NULL, 0, gs_settings_db, migrations,
        "folder of <version>_<name>.up.sql / .down.sql files (relative to the config file); "
        "pending ones are applied before the database is served"),
    SUB("sources", GS_CFG_LIST, gs_settings_db, sources, source_keys, sizeof(gs_settings_source),
        "remote nodes whose tables this database follows (bootstrap, then the change stream)"),
    KEYC("write_proxy", "forward", gs_settings_db, write_proxy, write_proxy_choices,
         "a local write to a `replica` table: forward it to the owner, or reject it"),
    SUB("tables", GS_CFG_LIST, gs_settings_db, tables, table_mode_keys,
        sizeof(gs_settings_table_mode),
        "per-table replication modes {match, mode} (static mode; longest match wins)"),
};

static const gs_config_key tenant_keys[] = {
    KEY("dir", GS_CFG_STRING, NULL, 0, gs_settings_tenants, dir,
        "auto-open /db/{id} as <dir>/<id><extension> (relative to node.data_dir)"),
    KEY("extension", GS_CFG_STRING, ".db", 0, gs_settings_tenants, extension,
        "tenant file extension"),
    KEY("create", GS_CFG_BOOL, "false", 0, gs_settings_tenants, create,
        "create missing tenant files"),
    KEYR("max_open", GS_CFG_INT, "0", gs_settings_tenants, max_open, 0, 1000000,
         "open databases at most (0 = unlimited; LRU eviction)"),
    KEYR("idle_timeout_ms", GS_CFG_INT, "0", gs_settings_tenants, idle_timeout_ms, 0, 31536000000LL,
         "close a tenant database unused for this long (0 = never)"),
    KEYR("read_pool_size", GS_CFG_INT, "2", gs_settings_tenants, read_pool_size, 1, 64,
         "reader connections per tenant database"),
    KEYC("synchronous", "normal", gs_settings_tenants, synchronous, sync_choices,
         "PRAGMA synchronous for tenant databases"),
    KEY("migrations", GS_CFG_STRING, NULL, 0, gs_settings_tenants, migrations,
        "folder of <version>_<name>.up.sql / .down.sql files (relative to the config file) "
        "applied to each tenant database when it opens"),
};

static const gs_config_key root_keys[] = {
    SUB("node", GS_CFG_SECTION, gs_settings, node, node_keys, 0, "this node"),
    SUB("log", GS_CFG_SECTION, gs_settings, log, log_keys, 0, "logging"),
    SUB("plugins", GS_CFG_LIST, gs_settings, plugins, plugin_keys, sizeof(gs_settings_plugin),
        "plugin instances"),
    SUB("server", GS_CFG_SECTION, gs_settings, server, server_keys, 0, "client API server"),
    SUB("databases", GS_CFG_LIST, gs_settings, databases, db_keys, sizeof(gs_settings_db),
        "databases served"),
    SUB("tenants", GS_CFG_SECTION, gs_settings, tenants, tenant_keys, 0,
        "auto-opened tenant databases"),
    {.name = "replication",
     .type = GS_CFG_SECTION,
     .offset = offsetof(gs_settings, replication),
     .help = "static-mode replication of one database (spec 03)",
     .children = gs_settings_repl_keys,
     .child_count = GS_SETTINGS_REPL_KEY_COUNT},
};

const gs_config_key *gs_settings_keys(size_t *count)
{
    *count = sizeof root_keys / sizeof root_keys[0];
    return root_keys;
}
