/*
 * The inside of a gs_node, shared by node.c (load, start, stop, the host table) and
 * node_repl.c (the replication section). Threads: the main thread only.
 */
#ifndef GS_NODE_NODE_INTERNAL_H
#define GS_NODE_NODE_INTERNAL_H

#include "node.h"

#include "../api/api.h"
#include "../base/workpool.h"
#include "../config/config.h"
#include "../db/migrations.h"
#include "../db/registry.h"
#include "../plugin/loader.h"
#include "../repl/authority.h"
#include "settings.h"

#include <gatestream/host.h>

typedef struct gs_instance {
    const char *name; /* borrowed from settings */
    gs_plugin_kind kind;
    gs_plugin *plugin;
    void *config; /* the plugin's config struct */
    gs_cfg_arena arena;
    void *instance;
    int started;
} gs_instance;

struct gs_node {
    gs_cfg_doc *doc;
    gs_cfg_arena arena;
    gs_settings s;
    char *config_dir;
    char *data_dir;
    gs_host host;
    gs_server_settings server;
    gs_instance *instances;
    size_t instance_count;
    gs_registry *reg;
    gs_migration_set **migrations;       /* per databases[] entry, or NULL */
    gs_migration_set *tenant_migrations; /* tenants.migrations, or NULL */
    gs_api *api;
    gs_workpool *pool;
    int started;
    int stopped;
    /* replication (node_repl.c) */
    struct gs_repl_engine *repl;
    gs_instance lww;             /* the default resolver when replication.resolver is not set */
    gs_authority_options auth_o; /* coordinator mode: what the engine's authority runs with */
    struct gs_sources *sources;  /* databases[].sources (node_source.c), NULL when none */
};

/** The instance named `name`, or NULL. */
gs_instance *gs_node_find_instance(gs_node *n, const char *name);

/* node_repl.c */
/** Check the replication section against the plugins and databases (load time). */
gs_status gs_node_repl_check(gs_node *n, gs_error *err);
/** Start replication of the configured database (after databases open, before serving). */
gs_status gs_node_repl_start(gs_node *n, gs_error *err);
/** Stop replication (before databases close); idempotent. */
void gs_node_repl_stop(gs_node *n);
/** Release what gs_node_repl_check created (the default resolver). */
void gs_node_repl_free(gs_node *n);

/* node_source.c */
/** Check every databases[].sources list (load time): ids, urls, prefixes, overlaps. */
gs_status gs_node_sources_check(gs_node *n, gs_error *err);
/** Start the sources (after the databases open and replication starts). */
gs_status gs_node_sources_start(gs_node *n, gs_error *err);
/** Stop the sources (before the databases close); idempotent. */
void gs_node_sources_stop(gs_node *n);
void gs_node_sources_free(gs_node *n);
/** The sources of database db_id (NULL: all) as a JSON array (gs_api_options.sources_json). */
void gs_node_sources_json(void *user, const char *db_id, gs_buf *out);

/* node_backup.c */
struct gs_backup_cycle_config;
/** Check every databases[].backups section against the plugin instances (load time). */
gs_status gs_node_backup_check(gs_node *n, gs_error *err);
/** 1 when databases[] entry d has backups: *bc filled (strings borrowed from the settings and
 * from `staging`, a buffer of the caller's that must outlive the open); 0 when it has none. */
int gs_node_backup_config(gs_node *n, const gs_settings_db *d, struct gs_backup_cycle_config *bc,
                          char *staging, size_t cap);

#endif
