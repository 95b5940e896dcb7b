#include "settings_repl.h"

#include <stddef.h>

#include "settings_keys.h"

static const char *const roles[] = {"primary", "replica", NULL};
static const char *const concerns[] = {"local", "majority", "all", NULL};

#define R gs_settings_repl
#define DAY 86400000LL

static const gs_config_key peer_keys[] = {
    KEY("id", GS_CFG_STRING, NULL, 1, gs_settings_repl_peer, id, "the peer's node id"),
    {.name = "role",
     .type = GS_CFG_STRING,
     .required = 0,
     .offset = offsetof(gs_settings_repl_peer, role),
     .help = "primary | replica (static mode; ignored in coordinator mode)",
     .choices = roles},
};

static const gs_config_key controller_keys[] = {
    KEY("enabled", GS_CFG_BOOL, "true", 0, gs_settings_repl, coordinator.controller.enabled,
        "run a controller on this node (one is active per cluster; the others stand by)"),
    KEYR("lease_ttl_ms", GS_CFG_INT, "10000", gs_settings_repl, coordinator.controller.lease_ttl_ms,
         1000, DAY, "the controller lease"),
    KEYR("tick_interval_ms", GS_CFG_INT, "1000", gs_settings_repl,
         coordinator.controller.tick_interval_ms, 10, DAY, "how often the controller decides"),
};

static const gs_config_key coordinator_keys[] = {
    KEY("instance", GS_CFG_STRING, NULL, 0, gs_settings_repl, coordinator.instance,
        "the coordinator plugin instance (etcd, memory); its presence turns on coordinator mode"),
    KEY("cluster_id", GS_CFG_STRING, NULL, 0, gs_settings_repl, coordinator.cluster_id,
        "the cluster's id (required with instance): keys live under clusters/<cluster_id>/"),
    KEY("group_id", GS_CFG_STRING, NULL, 0, gs_settings_repl, coordinator.group_id,
        "the replication group (default: the replicated database id)"),
    KEY("endpoint", GS_CFG_STRING, NULL, 0, gs_settings_repl, coordinator.endpoint,
        "this node's client URL, published for routing (GET /db/{id}/cluster)"),
    KEY("voting_data_bearing_node_ids", GS_CFG_STRING_LIST, NULL, 0, gs_settings_repl,
        coordinator.voters, "the group's voters (needed by the node that registers the group)"),
    KEYR("session_ttl_ms", GS_CFG_INT, "10000", gs_settings_repl, coordinator.session_ttl_ms, 1000,
         DAY, "this node's session lease: its death is noticed after this"),
    KEYR("in_sync_timeout_ms", GS_CFG_INT, "2000", gs_settings_repl, coordinator.in_sync_timeout_ms,
         10, DAY, "an in-sync replica holding a write up this long leaves the in-sync set"),
    {.name = "controller",
     .type = GS_CFG_SECTION,
     .offset = 0,
     .help = "the failover controller {enabled, lease_ttl_ms, tick_interval_ms}",
     .children = controller_keys,
     .child_count = sizeof controller_keys / sizeof controller_keys[0]},
};

static const gs_config_key resolver_keys[] = {
    KEY("table", GS_CFG_STRING, NULL, 1, gs_settings_repl_resolver, table, "table name"),
    KEY("resolver", GS_CFG_STRING, NULL, 1, gs_settings_repl_resolver, resolver,
        "resolver plugin instance for this table"),
};

static const gs_config_key flow_keys[] = {
    {.name = "max_lag_seconds",
     .type = GS_CFG_DOUBLE,
     .default_value = "0",
     .offset = offsetof(R, flow_control.max_lag_seconds),
     .help = "log (and count) a replica whose acknowledgements lag by more (0 = off)",
     .min = 0,
     .max = 86400},
};

const gs_config_key gs_settings_repl_keys[] = {
    KEY("database", GS_CFG_STRING, NULL, 0, R, database,
        "the replicated database id (default: the only databases[] entry)"),
    KEYC("role", NULL, R, role, roles, "primary | replica (static mode)"),
    KEY("transport", GS_CFG_STRING, NULL, 0, R, transport,
        "repl_transport plugin instance (default: the built-in memory transport)"),
    SUB("peers", GS_CFG_LIST, R, peers, peer_keys, sizeof(gs_settings_repl_peer),
        "the other nodes: {id, role}"),
    KEY("resolver", GS_CFG_STRING, NULL, 0, R, resolver,
        "default conflict resolver instance (default: the built-in lww)"),
    SUB("resolvers", GS_CFG_LIST, R, resolvers, resolver_keys, sizeof(gs_settings_repl_resolver),
        "per-table resolvers: {table, resolver}"),
    KEYC("write_concern", NULL, R, write_concern, concerns,
         "level for writes that state none: local | majority | all (default: local, majority in "
         "coordinator mode)"),
    KEYR("write_concern_timeout_ms", GS_CFG_INT, "5000", R, write_concern_timeout_ms, 1, DAY,
         "WRITE_CONCERN_ERROR after this"),
    KEY("write_forwarding", GS_CFG_BOOL, "false", 0, R, write_forwarding,
        "a replica forwards execute and batch writes to the primary"),
    KEYR("forward_deadline_ms", GS_CFG_INT, "30000", R, forward_deadline_ms, 1, DAY,
         "deadline of a forwarded write"),
    KEYR("batch_size", GS_CFG_INT, "100", R, batch_size, 1, 1000, "changes per batch"),
    KEYR("batch_interval_ms", GS_CFG_INT, "100", R, batch_interval_ms, 1, DAY,
         "sender loop period (commits also wake it)"),
    KEYR("max_pending_batches", GS_CFG_INT, "10", R, max_pending_batches, 1, 64,
         "unacknowledged batches per replica"),
    KEYR("max_batch_changes", GS_CFG_INT, "1000", R, max_batch_changes, 1, 1000000,
         "a received batch with more changes is refused"),
    KEYR("max_clock_drift_ms", GS_CFG_INT, "60000", R, max_clock_drift_ms, 1, DAY,
         "a batch whose hlcRange.max is further from this clock is refused"),
    KEYR("ack_timeout_ms", GS_CFG_INT, "5000", R, ack_timeout_ms, 1, DAY,
         "retransmit from a batch not acknowledged within this"),
    KEY("initial_sync", GS_CFG_BOOL, "true", 0, R, initial_sync,
        "a replica that never synced copies a snapshot first"),
    KEYR("sync_batch_size", GS_CFG_INT, "10000", R, sync_batch_size, 1, 1000000,
         "rows per first-sync batch"),
    KEYR("sync_batch_max_bytes", GS_CFG_INT, "4194304", R, sync_batch_max_bytes, 1024, 1073741824,
         "bytes per first-sync batch (a single larger row goes alone)"),
    KEYR("max_concurrent_syncs", GS_CFG_INT, "2", R, max_concurrent_syncs, 1, 1000,
         "first syncs a primary serves at once"),
    KEYR("max_sync_duration_ms", GS_CFG_INT, "1800000", R, max_sync_duration_ms, 1, 7 * DAY,
         "a sync with no acknowledged batch for this long is aborted"),
    KEYR("max_sync_lag_before_ready", GS_CFG_INT, "100", R, max_sync_lag_before_ready, 0, 1000000,
         "catching-up becomes ready when the backlog is below this"),
    KEYR("sync_ack_timeout_ms", GS_CFG_INT, "30000", R, sync_ack_timeout_ms, 1, DAY,
         "wait for one sync batch acknowledgement"),
    KEYR("catch_up_deadline_ms", GS_CFG_INT, "600000", R, catch_up_deadline_ms, 1, 7 * DAY,
         "catching-up becomes ready after this at the latest"),
    KEYR("resume_from_seq", GS_CFG_INT, "-1", R, resume_from_seq, -1, 9223372036854775807LL,
         "with initial_sync false: the primary seq an out-of-band copy was taken at"),
    /* the section's own offset is 0: its keys carry offsets from the start of R */
    {.name = "flow_control",
     .type = GS_CFG_SECTION,
     .offset = 0,
     .help = "replica lag alarm",
     .children = flow_keys,
     .child_count = sizeof flow_keys / sizeof flow_keys[0]},
    KEYR("snapshot_threshold", GS_CFG_INT, "0", R, snapshot_threshold, 0, 9223372036854775807LL,
         "reserved by the spec; accepted and ignored"),
    {.name = "coordinator",
     .type = GS_CFG_SECTION,
     .offset = 0,
     .help = "coordinator mode (etcd-backed failover): instance, cluster_id, group_id, endpoint, "
             "voting_data_bearing_node_ids, session_ttl_ms, in_sync_timeout_ms, controller",
     .children = coordinator_keys,
     .child_count = sizeof coordinator_keys / sizeof coordinator_keys[0]},
};

_Static_assert(sizeof gs_settings_repl_keys / sizeof gs_settings_repl_keys[0] ==
                   GS_SETTINGS_REPL_KEY_COUNT,
               "GS_SETTINGS_REPL_KEY_COUNT must match the table");
