/*
 * The `replication:` section of the node config (spec 03 "Configuration and Defaults"; every
 * option of the spec in snake case with the spec's default). Static mode: roles from config.
 * Pure data filled by the config layer; settings.c links the key table into the root.
 */
#ifndef GS_NODE_SETTINGS_REPL_H
#define GS_NODE_SETTINGS_REPL_H

#include "../config/config.h"

#include <stdint.h>

typedef struct gs_settings_repl_peer {
    const char *id;
    const char *role;
} gs_settings_repl_peer;

typedef struct gs_settings_repl_resolver {
    const char *table;
    const char *resolver;
} gs_settings_repl_resolver;

typedef struct gs_settings_repl {
    int enabled;          /* the section is present with a role */
    const char *database; /* default: the only databases[] entry */
    const char *role;     /* primary | replica; absent = replication off */
    const char *transport;
    gs_config_list peers;     /* gs_settings_repl_peer */
    const char *resolver;     /* default resolver instance (default: the built-in lww) */
    gs_config_list resolvers; /* gs_settings_repl_resolver */
    const char *write_concern;
    int64_t write_concern_timeout_ms;
    int write_forwarding;
    int64_t forward_deadline_ms;
    int64_t batch_size;
    int64_t batch_interval_ms;
    int64_t max_pending_batches;
    int64_t max_batch_changes;
    int64_t max_clock_drift_ms;
    int64_t ack_timeout_ms;
    int initial_sync;
    int64_t sync_batch_size;
    int64_t sync_batch_max_bytes;
    int64_t max_concurrent_syncs;
    int64_t max_sync_duration_ms;
    int64_t max_sync_lag_before_ready;
    int64_t sync_ack_timeout_ms;
    int64_t catch_up_deadline_ms;
    int64_t resume_from_seq; /* -1 = none */
    struct {
        double max_lag_seconds; /* 0 = off */
    } flow_control;
    int64_t snapshot_threshold; /* reserved by the spec: accepted, no effect */
    struct {
        const char *instance; /* coordinator plugin instance: coordinator mode when set */
        const char *cluster_id;
        const char *group_id; /* default: the replicated database id */
        const char *endpoint; /* this node's client URL */
        gs_config_strings voters;
        int64_t session_ttl_ms;
        int64_t in_sync_timeout_ms;
        struct {
            int enabled;
            int64_t lease_ttl_ms;
            int64_t tick_interval_ms;
        } controller;
    } coordinator;
} gs_settings_repl;

/** The key table of the section, for the root table (the count is checked at compile time). */
#define GS_SETTINGS_REPL_KEY_COUNT 28
extern const gs_config_key gs_settings_repl_keys[];

#endif
