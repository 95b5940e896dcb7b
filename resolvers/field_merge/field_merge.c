/*
 * field_merge: the spec's FieldMerge conflict resolver (03-replication "Conflict
 * Resolution"). Columns that only one side changed since the common ancestor are both kept;
 * a column both sides changed goes to the incoming value only when the incoming HLC is
 * newer than that column's recorded version (equal HLCs: the greater node id wins).
 *
 * The rules, in order:
 *   1. an incoming delete is accepted (a delete wins, as in LWW; the spec's merge would
 *      otherwise see an empty remote row and keep the deleted row alive);
 *   2. no column versions (NULL, "" or {}) -> last-writer-wins (lww_rule.h);
 *   3. localData = local_row_json ({} when absent), remoteData = incoming_new_json ({}),
 *      oldData = incoming_old_json ({}); a column "changed" on a side when its value
 *      differs from oldData's, an absent oldData value counting as different; values
 *      compare type-exactly under the tagged encoding (1, 1.0 and "1" all differ; a
 *      {"__sirannon_int"} envelope equals the plain integer of the same value; blob hex
 *      compares case-insensitively);
 *   4. merged = localData, plus every remote-only change, plus each overlapping column the
 *      incoming change wins by its column version; an overlapping column with no recorded
 *      version is settled by row-level LWW (the reference does the same; the spec leaves it
 *      open). The answer is always GS_RESOLVE_MERGED with the full merged row.
 *
 * Promise: resolve is a pure function of the conflict; the instance holds only the host
 * table, so calls run concurrently on any thread without a lock and never block. Malformed
 * JSON in the conflict is refused with CONFLICT_ERROR naming the field.
 * Ownership: the merged row is allocated with host->alloc and owned by the caller (the core
 * frees it with host->free); jansson's working values use jansson's own allocator and are
 * released before resolve returns. Threads: create/destroy on the core's main thread;
 * resolve on any replication apply thread.
 */
#include "../lww/lww_rule.h"

#include <gatestream/resolver.h>

#include <errno.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FM_NAME "field_merge"

typedef struct fm_instance {
    const gs_host *host;
} fm_instance;

static gs_status fm_create(const gs_host *host, const void *config, void **instance, gs_error *err)
{
    (void)config; /* no keys */
    *instance = NULL;
    fm_instance *in = host->alloc(sizeof *in);
    if (!in) {
        host->error_set(err, 500, "INTERNAL_ERROR", "field_merge resolver: out of memory");
        return GS_ERROR;
    }
    in->host = host;
    *instance = in;
    return GS_OK;
}

static void fm_destroy(void *instance)
{
    fm_instance *in = instance;
    if (in)
        in->host->free(in);
}

/* Parse text as a JSON object into *out; NULL or "" (absent) gives {}. */
static gs_status fm_parse_object(const fm_instance *in, const gs_conflict *c, const char *text,
                                 const char *field, json_t **out, gs_error *err)
{
    *out = NULL;
    if (!text || !*text) {
        *out = json_object();
        if (!*out) {
            in->host->error_set(err, 500, "INTERNAL_ERROR", "field_merge resolver: out of memory");
            return GS_ERROR;
        }
        return GS_OK;
    }
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!v)
        return lww_rule_fail(in->host, err, FM_NAME, c, "%s is not valid JSON (%s at column %d)",
                             field, jerr.text, jerr.column);
    if (!json_is_object(v)) {
        json_decref(v);
        return lww_rule_fail(in->host, err, FM_NAME, c, "%s is not a JSON object", field);
    }
    *out = v;
    return GS_OK;
}

/* The value of a one-key envelope {"<tag>": "<string>"}, or NULL. */
static const char *fm_envelope(const json_t *v, const char *tag)
{
    if (!json_is_object(v) || json_object_size(v) != 1)
        return NULL;
    const json_t *s = json_object_get(v, tag);
    return json_is_string(s) ? json_string_value(s) : NULL;
}

/* 1 and *out when v is an integer: a plain JSON integer or a well-formed {"__sirannon_int"}
 * envelope (1 to 19 digits, optional '-', within int64). */
static int fm_as_int(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 1;
    }
    const char *s = fm_envelope(v, "__sirannon_int");
    if (!s)
        return 0;
    const char *digits = s[0] == '-' ? s + 1 : s;
    size_t n = strlen(digits);
    if (n < 1 || n > 19 || strspn(digits, "0123456789") != n)
        return 0;
    errno = 0;
    char *end = NULL;
    long long x = strtoll(s, &end, 10);
    if (errno || !end || *end)
        return 0;
    *out = (int64_t)x;
    return 1;
}

/* Type-exact equality of two column values under the tagged encoding; NULL = absent. */
static int fm_value_equal(const json_t *a, const json_t *b)
{
    if (!a || !b)
        return a == b;
    int64_t ia, ib;
    int a_int = fm_as_int(a, &ia), b_int = fm_as_int(b, &ib);
    if (a_int || b_int)
        return a_int && b_int && ia == ib;
    const char *ha = fm_envelope(a, "__sirannon_blob");
    const char *hb = fm_envelope(b, "__sirannon_blob");
    if (ha || hb)
        return ha && hb && strcasecmp(ha, hb) == 0;
    /* json_equal is type-exact: an integer never equals a real, nor true equals 1. */
    return json_equal((json_t *)a, (json_t *)b);
}

/* Check the column versions object: each entry {"hlc": string, "nodeId"?: string}. */
static gs_status fm_check_versions(const fm_instance *in, const gs_conflict *c,
                                   const json_t *versions, gs_error *err)
{
    const char *col;
    const json_t *v;
    json_object_foreach((json_t *)versions, col, v)
    {
        const json_t *hlc = json_object_get(v, "hlc");
        const json_t *node = json_object_get(v, "nodeId");
        if (!json_is_object(v) || !json_is_string(hlc) || (node && !json_is_string(node)))
            return lww_rule_fail(in->host, err, FM_NAME, c,
                                 "column_versions_json: column '%s' needs {\"hlc\": string, "
                                 "\"nodeId\": string}",
                                 col);
    }
    return GS_OK;
}

/* Does the incoming change win the overlapping column col? */
static int fm_remote_wins_column(const gs_conflict *c, const json_t *versions, const char *col)
{
    const json_t *cv = json_object_get(versions, col);
    if (!cv) /* no recorded version for this column: row-level LWW */
        return lww_rule_decide(c) == GS_RESOLVE_TAKE_INCOMING;
    const char *cv_hlc = json_string_value(json_object_get(cv, "hlc"));
    const char *cv_node = json_string_value(json_object_get(cv, "nodeId"));
    int cmp = strcmp(c->incoming_hlc, cv_hlc);
    if (cmp > 0)
        return 1;
    return cmp == 0 && strcmp(lww_rule_str(c->incoming_node_id), lww_rule_str(cv_node)) > 0;
}

/* The merged row as compact JSON text in host memory. */
static gs_status fm_dump(const fm_instance *in, const json_t *merged, char **out, gs_error *err)
{
    size_t n = json_dumpb(merged, NULL, 0, JSON_COMPACT);
    char *text = n ? in->host->alloc(n + 1) : NULL;
    if (!text || json_dumpb(merged, text, n, JSON_COMPACT) != n) {
        in->host->free(text);
        in->host->error_set(err, 500, "INTERNAL_ERROR",
                            "field_merge resolver: out of memory writing the merged row");
        return GS_ERROR;
    }
    text[n] = '\0';
    *out = text;
    return GS_OK;
}

/* Rule 4 on parsed inputs: build merged and hand it out as text. */
static gs_status fm_merge(const fm_instance *in, const gs_conflict *c, const json_t *versions,
                          const json_t *local, const json_t *remote, const json_t *old,
                          gs_resolution *out, gs_error *err)
{
    json_t *merged = json_copy((json_t *)local);
    if (!merged) {
        in->host->error_set(err, 500, "INTERNAL_ERROR", "field_merge resolver: out of memory");
        return GS_ERROR;
    }
    const char *col;
    json_t *rv;
    json_object_foreach((json_t *)remote, col, rv)
    {
        const json_t *ov = json_object_get(old, col);
        if (fm_value_equal(rv, ov))
            continue; /* not changed remotely */
        const json_t *lv = json_object_get(local, col);
        int local_changed = lv && !fm_value_equal(lv, ov);
        if (local_changed && !fm_remote_wins_column(c, versions, col))
            continue;
        if (json_object_set(merged, col, rv) != 0) {
            json_decref(merged);
            in->host->error_set(err, 500, "INTERNAL_ERROR", "field_merge resolver: out of memory");
            return GS_ERROR;
        }
    }
    gs_status st = fm_dump(in, merged, &out->merged_row_json, err);
    json_decref(merged);
    if (st == GS_OK)
        out->kind = GS_RESOLVE_MERGED;
    return st;
}

static gs_status fm_resolve(void *instance, const gs_conflict *conflict, gs_resolution *out,
                            gs_error *err)
{
    const fm_instance *in = instance;
    const gs_conflict *c = conflict;
    out->merged_row_json = NULL;
    if (lww_rule_check(in->host, FM_NAME, c, err) != GS_OK)
        return GS_ERROR;
    if (lww_rule_is_delete(c)) { /* rule 1 */
        out->kind = GS_RESOLVE_TAKE_INCOMING;
        return GS_OK;
    }
    json_t *versions = NULL, *local = NULL, *remote = NULL, *old = NULL;
    gs_status st =
        fm_parse_object(in, c, c->column_versions_json, "column_versions_json", &versions, err);
    if (st == GS_OK)
        st = fm_check_versions(in, c, versions, err);
    if (st == GS_OK && json_object_size(versions) == 0) { /* rule 2 */
        out->kind = lww_rule_decide(c);
        json_decref(versions);
        return GS_OK;
    }
    if (st == GS_OK)
        st = fm_parse_object(in, c, c->local_row_json, "local_row_json", &local, err);
    if (st == GS_OK)
        st = fm_parse_object(in, c, c->incoming_new_json, "incoming_new_json", &remote, err);
    if (st == GS_OK)
        st = fm_parse_object(in, c, c->incoming_old_json, "incoming_old_json", &old, err);
    if (st == GS_OK)
        st = fm_merge(in, c, versions, local, remote, old, out, err);
    json_decref(versions);
    json_decref(local);
    json_decref(remote);
    json_decref(old);
    return st;
}

static const gs_resolver_vtable fm_vtable = {
    .struct_size = sizeof(gs_resolver_vtable),
    .create = fm_create,
    .destroy = fm_destroy,
    .resolve = fm_resolve,
};

static const gs_plugin_descriptor fm_descriptor = {
    .struct_size = sizeof(gs_plugin_descriptor),
    .abi_major = GS_ABI_MAJOR,
    .abi_minor = GS_ABI_MINOR,
    .kind = GS_KIND_RESOLVER,
    .name = "field_merge",
    .version = "1.0.0",
    .build_signature = GS_BUILD_SIGNATURE,
    .vtable = &fm_vtable,
    .config_keys = NULL,
    .config_key_count = 0,
    .config_key_size = sizeof(gs_config_key),
    .config_struct_size = 0,
    .description = "field-merge conflict resolver: keeps non-overlapping column changes of "
                   "both sides, per-column HLC settles overlaps, LWW without column versions",
};

GS_PLUGIN_DEFINE(fm_descriptor)
