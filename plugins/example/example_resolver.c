/*
 * example_highest_version: the conflict resolver to copy when you write your own.
 *
 * What it decides (small, but real): when a replicated change meets a row that exists
 * locally, the side whose integer column `version` (the key `column` renames it) is higher
 * wins. Rows that carry an application version counter stay monotonic, whatever the clocks
 * of the nodes say. In order:
 *   1. an incoming delete is accepted (a delete wins, as in the spec's LWW);
 *   2. no local row: the incoming change is accepted;
 *   3. both rows hold an integer `version` (a plain JSON integer, or the tagged
 *      {"__sirannon_int": "..."} envelope for values beyond +/-(2^53-1)) and they differ:
 *      the higher one wins;
 *   4. otherwise (equal, absent, not an integer): last-writer-wins, the spec's default
 *      (higher HLC, then greater node id).
 *
 * Promise: resolve is a pure function of the conflict and the immutable instance: no I/O,
 * no state between calls, so the core may call it concurrently from any thread.
 * Ownership: create copies what it keeps from the config struct; the conflict's strings
 * are valid for the call only. A resolver that answers GS_RESOLVE_MERGED allocates
 * merged_row_json with host->alloc (the core frees it); this one never merges.
 * Threads: create/destroy on the core's main thread; resolve on the replication apply
 * thread of a database. It must not block.
 *
 * Rules every plugin follows (see abi.h): include only <gatestream/...> headers (plus any
 * library you link: jansson here), call the core only through the gs_host table, export
 * only gs_plugin_entry (GS_PLUGIN_DEFINE), start every struct you hand over with its size.
 */
#include <gatestream/resolver.h>

#include <errno.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* 1. The config struct the core fills from the YAML `config:` map. */
typedef struct exr_config {
    const char *column; /**< the integer column compared; default "version" */
} exr_config;

/* 2. The key table: what the core validates and --describe-plugin prints. */
static const gs_config_key exr_keys[] = {
    {.name = "column",
     .type = GS_CFG_STRING,
     .default_value = "version",
     .offset = offsetof(exr_config, column),
     .help = "integer column whose higher value wins a conflict; ties and rows without it "
             "fall back to last-writer-wins"},
};

/* 3. The instance: immutable after create, so resolve needs no lock. */
typedef struct exr_instance {
    const gs_host *host;
    char *column;
} exr_instance;

static void exr_destroy(void *instance)
{
    exr_instance *ex = instance;
    if (!ex)
        return;
    ex->host->free(ex->column);
    ex->host->free(ex);
}

/* 4. create: validate, copy what we keep, hand back the instance; nothing left on failure. */
static gs_status exr_create(const gs_host *host, const void *config, void **instance, gs_error *err)
{
    const exr_config *cfg = config;
    *instance = NULL;
    const char *column = cfg && cfg->column ? cfg->column : "version";
    if (!*column) {
        host->error_set(err, 0, "INVALID_CONFIG",
                        "example_highest_version: column is empty; name the integer column "
                        "to compare, or leave it out for \"version\"");
        return GS_ERROR;
    }
    exr_instance *ex = host->alloc(sizeof *ex);
    size_t n = strlen(column) + 1;
    char *copy = host->alloc(n);
    if (!ex || !copy) {
        host->free(ex);
        host->free(copy);
        host->error_set(err, 500, "INTERNAL_ERROR", "example_highest_version: out of memory");
        return GS_ERROR;
    }
    memcpy(copy, column, n);
    ex->host = host;
    ex->column = copy;
    *instance = ex;
    return GS_OK;
}

/* Fill err with the spec's CONFLICT_ERROR; a person reading it learns the table, the row
 * and what to fix. */
#define EXR_FAIL(ex, err, c, fmt, ...)                                                             \
    ((ex)->host->error_set(                                                                        \
         (err), 0, "CONFLICT_ERROR", "example_highest_version: table '%s' row '%s': " fmt,         \
         (c)->table ? (c)->table : "", (c)->row_id ? (c)->row_id : "", __VA_ARGS__),               \
     GS_ERROR)

/* The spec's LWW: the higher HLC wins; equal HLCs go to the greater node id. */
static gs_resolution_kind exr_lww(const gs_conflict *c)
{
    if (!c->local_hlc)
        return GS_RESOLVE_TAKE_INCOMING;
    int cmp = strcmp(c->incoming_hlc, c->local_hlc);
    if (cmp != 0)
        return cmp > 0 ? GS_RESOLVE_TAKE_INCOMING : GS_RESOLVE_KEEP_LOCAL;
    const char *in_node = c->incoming_node_id ? c->incoming_node_id : "";
    const char *local_node = c->local_node_id ? c->local_node_id : "";
    return strcmp(in_node, local_node) > 0 ? GS_RESOLVE_TAKE_INCOMING : GS_RESOLVE_KEEP_LOCAL;
}

/*
 * The integer column of a row image (JSON object text, tagged encoding): 1 and *out when
 * present and an integer, 0 when absent or not an integer, -1 when the text is not a JSON
 * object.
 */
static int exr_row_version(const char *row_json, const char *column, int64_t *out)
{
    json_t *row = json_loads(row_json, 0, NULL);
    if (!json_is_object(row)) {
        json_decref(row);
        return -1;
    }
    const json_t *v = json_object_get(row, column);
    int found = 0;
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        found = 1;
    } else if (json_is_object(v) && json_object_size(v) == 1 &&
               json_is_string(json_object_get(v, "__sirannon_int"))) {
        const char *s = json_string_value(json_object_get(v, "__sirannon_int"));
        char *end = NULL;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (*s && !errno && end && !*end) {
            *out = (int64_t)x;
            found = 1;
        }
    }
    json_decref(row);
    return found;
}

/* 5. resolve: keep_local, accept_remote (GS_RESOLVE_TAKE_INCOMING), or merged. */
static gs_status exr_resolve(void *instance, const gs_conflict *c, gs_resolution *out,
                             gs_error *err)
{
    const exr_instance *ex = instance;
    out->merged_row_json = NULL;
    /* Read a member only when the core's struct holds it (the struct_size rule, abi.h). */
    if (!GS_HAS_MEMBER(gs_conflict, incoming_node_id, c->struct_size))
        return EXR_FAIL(ex, err, c, "the conflict record is %u bytes, too old for this resolver",
                        (unsigned)c->struct_size);
    const char *op = c->incoming_operation ? c->incoming_operation : "";
    if (strcasecmp(op, "delete") == 0) {
        out->kind = GS_RESOLVE_TAKE_INCOMING;
        return GS_OK;
    }
    if (strcasecmp(op, "insert") != 0 && strcasecmp(op, "update") != 0)
        return EXR_FAIL(ex, err, c, "operation '%s' cannot conflict", op);
    if (!c->incoming_hlc)
        return EXR_FAIL(ex, err, c, "the incoming %s has no HLC", op);
    if (!c->local_row_json) {
        out->kind = GS_RESOLVE_TAKE_INCOMING;
        return GS_OK;
    }
    int64_t local = 0, incoming = 0;
    int has_local = exr_row_version(c->local_row_json, ex->column, &local);
    int has_incoming =
        c->incoming_new_json ? exr_row_version(c->incoming_new_json, ex->column, &incoming) : 0;
    if (has_local < 0 || has_incoming < 0)
        return EXR_FAIL(ex, err, c, "the %s row image is not a JSON object",
                        has_local < 0 ? "local" : "incoming");
    if (has_local && has_incoming && local != incoming)
        out->kind = incoming > local ? GS_RESOLVE_TAKE_INCOMING : GS_RESOLVE_KEEP_LOCAL;
    else
        out->kind = exr_lww(c);
    return GS_OK;
}

/* 6. The vtable of a resolver (resolver.h): all three callbacks are required. */
static const gs_resolver_vtable exr_vtable = {
    .struct_size = sizeof(gs_resolver_vtable),
    .create = exr_create,
    .destroy = exr_destroy,
    .resolve = exr_resolve,
};

/* 7. The descriptor: kind GS_KIND_RESOLVER; the file is gs_resolver_<name>.so. */
static const gs_plugin_descriptor exr_descriptor = {
    .struct_size = sizeof(gs_plugin_descriptor),
    .abi_major = GS_ABI_MAJOR,
    .abi_minor = GS_ABI_MINOR,
    .kind = GS_KIND_RESOLVER,
    .name = "example_highest_version",
    .version = "1.0.0",
    .build_signature = GS_BUILD_SIGNATURE,
    .vtable = &exr_vtable,
    .config_keys = exr_keys,
    .config_key_count = sizeof exr_keys / sizeof exr_keys[0],
    .config_key_size = sizeof(gs_config_key),
    .config_struct_size = sizeof(exr_config),
    .description = "example resolver: the row with the higher integer version column wins, "
                   "otherwise last-writer-wins",
};

/* 8. The one exported symbol. */
GS_PLUGIN_DEFINE(exr_descriptor)
