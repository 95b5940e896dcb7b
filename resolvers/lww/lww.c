/*
 * lww: the spec's last-writer-wins conflict resolver (03-replication "Conflict Resolution"),
 * the default. A remote delete is accepted; a row without a local HLC takes the incoming
 * change; otherwise the higher HLC wins and equal HLCs go to the greater node id.
 *
 * Promise: resolve is a pure function of the conflict (lww_rule.h); the instance holds only
 * the host table, so calls run concurrently on any thread without a lock and never block.
 * Ownership: nothing of a conflict is kept; the instance is host->alloc'd and freed by
 * destroy. Threads: create/destroy on the core's main thread; resolve on the replication
 * apply thread of any database.
 */
#include "lww_rule.h"

#include <gatestream/resolver.h>

#include <stddef.h>
#include <string.h>

typedef struct lww_instance {
    const gs_host *host;
} lww_instance;

static gs_status lww_create(const gs_host *host, const void *config, void **instance, gs_error *err)
{
    (void)config; /* no keys */
    *instance = NULL;
    lww_instance *in = host->alloc(sizeof *in);
    if (!in) {
        host->error_set(err, 500, "INTERNAL_ERROR", "lww resolver: out of memory");
        return GS_ERROR;
    }
    in->host = host;
    *instance = in;
    return GS_OK;
}

static void lww_destroy(void *instance)
{
    lww_instance *in = instance;
    if (in)
        in->host->free(in);
}

static gs_status lww_resolve(void *instance, const gs_conflict *conflict, gs_resolution *out,
                             gs_error *err)
{
    const lww_instance *in = instance;
    out->merged_row_json = NULL;
    if (lww_rule_check(in->host, "lww", conflict, err) != GS_OK)
        return GS_ERROR;
    out->kind = lww_rule_decide(conflict);
    return GS_OK;
}

static const gs_resolver_vtable lww_vtable = {
    .struct_size = sizeof(gs_resolver_vtable),
    .create = lww_create,
    .destroy = lww_destroy,
    .resolve = lww_resolve,
};

static const gs_plugin_descriptor lww_descriptor = {
    .struct_size = sizeof(gs_plugin_descriptor),
    .abi_major = GS_ABI_MAJOR,
    .abi_minor = GS_ABI_MINOR,
    .kind = GS_KIND_RESOLVER,
    .name = "lww",
    .version = "1.0.0",
    .build_signature = GS_BUILD_SIGNATURE,
    .vtable = &lww_vtable,
    .config_keys = NULL,
    .config_key_count = 0,
    .config_key_size = sizeof(gs_config_key),
    .config_struct_size = 0,
    .description = "last-writer-wins conflict resolver (the spec's default): the higher HLC "
                   "wins, ties go to the greater node id, a remote delete always wins",
};

GS_PLUGIN_DEFINE(lww_descriptor)
