/*
 * databases[].backups in a node: checking the section at load time against the plugin
 * instances, and turning it into the cycle config a database opens with.
 * Threads: the main thread, and a restore thread reopening a database (read-only use of the
 * settings and instances).
 */
#include "node_internal.h"

#include "../base/error.h"
#include "../db/backup_cycle.h"

#include <gatestream/backup_destination.h>

#include <limits.h>
#include <stdio.h>
#include <string.h>

gs_status gs_node_backup_check(gs_node *n, gs_error *err)
{
    const gs_settings_db *dbs = n->s.databases.items;
    const gs_cfg_node *list = gs_cfg_get(n->doc->root, "databases");
    for (size_t i = 0; i < n->s.databases.count; i++) {
        const gs_settings_backups *b = &dbs[i].backups;
        const gs_cfg_node *entry = list && i < list->count ? list->children[i] : NULL;
        const gs_cfg_node *section = entry ? gs_cfg_get(entry, "backups") : NULL;
        int line = section ? section->line : 0;
        if (!b->destination) {
            if (section && !section->is_null)
                return gs_error_set(err, 0, "INVALID_CONFIG",
                                    "%s:%d: databases[%zu].backups.destination is required: "
                                    "name a backup_destination plugin instance",
                                    n->doc->file, line, i);
            continue;
        }
        gs_instance *inst = gs_node_find_instance(n, b->destination);
        if (!inst || inst->kind != GS_KIND_BACKUP_DESTINATION)
            return gs_error_set(err, 0, "INVALID_CONFIG",
                                "%s:%d: databases[%zu].backups.destination: '%s' is not a "
                                "backup_destination plugin instance declared under plugins",
                                n->doc->file, line, i, b->destination);
        if (dbs[i].read_only || !dbs[i].wal)
            return gs_error_set(err, 0, "INVALID_CONFIG",
                                "%s:%d: databases[%zu] ('%s') is %s: change-capture backups "
                                "need a database this node writes in WAL mode "
                                "(BACKUP_UNSUPPORTED); remove its backups section",
                                n->doc->file, line, i, dbs[i].id,
                                dbs[i].read_only ? "read-only" : "not in WAL mode");
        if (!b->chain_name[0] || strchr(b->chain_name, '/') || !b->name_prefix[0] ||
            strchr(b->name_prefix, '/') || strlen(b->name_prefix) > 200)
            return gs_error_set(err, 0, "INVALID_CONFIG",
                                "%s:%d: databases[%zu].backups: chain_name and name_prefix must "
                                "be non-empty names without '/' (name_prefix at most 200 "
                                "bytes)",
                                n->doc->file, line, i);
        for (size_t j = 0; j < i; j++)
            if (dbs[j].backups.destination &&
                strcmp(dbs[j].backups.destination, b->destination) == 0 &&
                strcmp(dbs[j].backups.chain_name, b->chain_name) == 0)
                return gs_error_set(err, 0, "INVALID_CONFIG",
                                    "%s:%d: databases[%zu] and databases[%zu] would share the "
                                    "chain '%s' at destination '%s'; give one of them its own "
                                    "backups.chain_name",
                                    n->doc->file, line, j, i, b->chain_name, b->destination);
    }
    return GS_OK;
}

int gs_node_backup_config(gs_node *n, const gs_settings_db *d, gs_backup_cycle_config *bc,
                          char *staging, size_t cap)
{
    const gs_settings_backups *b = &d->backups;
    if (!b->destination)
        return 0;
    gs_instance *inst = gs_node_find_instance(n, b->destination);
    if (!inst || inst->kind != GS_KIND_BACKUP_DESTINATION || !inst->instance)
        return 0; /* refused at load time (gs_node_backup_check) */
    gs_backup_cycle_config_default(bc);
    bc->vt = inst->plugin->desc->vtable;
    bc->instance = inst->instance;
    bc->destination_name = b->destination;
    bc->interval_ms = b->interval_ms;
    bc->full_copy_interval_ms = b->full_copy_interval_ms;
    bc->chain_name = b->chain_name;
    bc->name_prefix = b->name_prefix;
    bc->piece_bytes = b->piece_bytes;
    bc->fingerprint = b->fingerprint;
    bc->max_uncaptured_log_bytes = b->max_uncaptured_log_bytes;
    bc->pages_per_step = (int)b->pages_per_step;
    bc->restart_limit = (int)b->restart_limit;
    bc->no_progress_step_limit = (int)b->no_progress_step_limit;
    bc->stall_timeout_ms = b->stall_timeout_ms;
    bc->destination_timeout_ms = b->destination_timeout_ms;
    bc->staging_dir = NULL; /* the cycle's default: beside the database file */
    if (b->staging_dir) {
        if (b->staging_dir[0] == '/')
            snprintf(staging, cap, "%s", b->staging_dir);
        else
            snprintf(staging, cap, "%s/%s", n->data_dir, b->staging_dir);
        bc->staging_dir = staging;
    }
    return 1;
}
