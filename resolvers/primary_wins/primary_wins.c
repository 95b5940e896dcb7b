/*
 * primary_wins: the spec's PrimaryWins conflict resolver (03-replication "Conflict
 * Resolution"). A change written by the primary beats one written elsewhere; when neither
 * side is the primary, last-writer-wins decides (lww_rule.h). A remote delete is not special
 * here except through that fallback: a delete from the primary is accepted by the first
 * rule, and a delete from a non-primary node against a row the primary wrote locally is
 * kept out, exactly as the spec's pseudocode orders the rules.
 *
 * The primary is the `primary_node_id` config key when set; otherwise the primary the core
 * names for the conflict's group (gs_conflict.primary_node_id). With neither, no side is
 * the primary and the answer is plain LWW.
 *
 * Promise: resolve is a pure function of the conflict and the immutable instance, so calls
 * run concurrently on any thread without a lock and never block.
 * Ownership: create copies primary_node_id into host memory; destroy frees it.
 * Threads: create/destroy on the core's main thread; resolve on any replication apply thread.
 */
#include "../lww/lww_rule.h"

#include <gatestream/resolver.h>

#include <stddef.h>
#include <string.h>

typedef struct pw_config {
    const char *primary_node_id; /**< NULL: use the primary the core supplies */
} pw_config;

static const gs_config_key pw_keys[] = {
    {.name = "primary_node_id",
     .type = GS_CFG_STRING,
     .offset = offsetof(pw_config, primary_node_id),
     .help = "node id whose changes always win; absent = the replication group's current "
             "primary as the core knows it"},
};

typedef struct pw_instance {
    const gs_host *host;
    char *primary_node_id; /* NULL: take conflict->primary_node_id */
} pw_instance;

static void pw_destroy(void *instance)
{
    pw_instance *in = instance;
    if (!in)
        return;
    in->host->free(in->primary_node_id);
    in->host->free(in);
}

static gs_status pw_create(const gs_host *host, const void *config, void **instance, gs_error *err)
{
    const pw_config *cfg = config;
    *instance = NULL;
    const char *primary = cfg ? cfg->primary_node_id : NULL;
    if (primary && !*primary) {
        host->error_set(err, 0, "INVALID_CONFIG",
                        "primary_wins resolver: primary_node_id is empty; set it to the "
                        "primary's node id, or leave it out to follow the group's primary");
        return GS_ERROR;
    }
    pw_instance *in = host->alloc(sizeof *in);
    if (!in) {
        host->error_set(err, 500, "INTERNAL_ERROR", "primary_wins resolver: out of memory");
        return GS_ERROR;
    }
    in->host = host;
    in->primary_node_id = NULL;
    if (primary) {
        size_t n = strlen(primary) + 1;
        in->primary_node_id = host->alloc(n);
        if (!in->primary_node_id) {
            host->free(in);
            host->error_set(err, 500, "INTERNAL_ERROR", "primary_wins resolver: out of memory");
            return GS_ERROR;
        }
        memcpy(in->primary_node_id, primary, n);
    }
    *instance = in;
    return GS_OK;
}

static gs_status pw_resolve(void *instance, const gs_conflict *conflict, gs_resolution *out,
                            gs_error *err)
{
    const pw_instance *in = instance;
    out->merged_row_json = NULL;
    if (lww_rule_check(in->host, "primary_wins", conflict, err) != GS_OK)
        return GS_ERROR;
    const char *primary = in->primary_node_id ? in->primary_node_id : conflict->primary_node_id;
    if (primary && *primary) {
        if (conflict->incoming_node_id && strcmp(conflict->incoming_node_id, primary) == 0) {
            out->kind = GS_RESOLVE_TAKE_INCOMING;
            return GS_OK;
        }
        if (conflict->local_node_id && strcmp(conflict->local_node_id, primary) == 0) {
            out->kind = GS_RESOLVE_KEEP_LOCAL;
            return GS_OK;
        }
    }
    out->kind = lww_rule_decide(conflict);
    return GS_OK;
}

static const gs_resolver_vtable pw_vtable = {
    .struct_size = sizeof(gs_resolver_vtable),
    .create = pw_create,
    .destroy = pw_destroy,
    .resolve = pw_resolve,
};

static const gs_plugin_descriptor pw_descriptor = {
    .struct_size = sizeof(gs_plugin_descriptor),
    .abi_major = GS_ABI_MAJOR,
    .abi_minor = GS_ABI_MINOR,
    .kind = GS_KIND_RESOLVER,
    .name = "primary_wins",
    .version = "1.0.0",
    .build_signature = GS_BUILD_SIGNATURE,
    .vtable = &pw_vtable,
    .config_keys = pw_keys,
    .config_key_count = sizeof pw_keys / sizeof pw_keys[0],
    .config_key_size = sizeof(gs_config_key),
    .config_struct_size = sizeof(pw_config),
    .description = "primary-wins conflict resolver: the primary's change wins, otherwise "
                   "last-writer-wins",
};

GS_PLUGIN_DEFINE(pw_descriptor)
