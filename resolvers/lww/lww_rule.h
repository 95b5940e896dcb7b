/*
 * The spec's last-writer-wins rule (03-replication "Conflict Resolution", LWW) and the checks
 * and CONFLICT_ERROR that every resolver in resolvers/ shares. Header-only: lww applies the
 * rule alone, primary_wins and field_merge fall back to it, and each .so stays one file of
 * its own (no symbol but gs_plugin_entry is exported).
 *
 * Promise: pure functions of the gs_conflict they are handed; no allocation, no state, so
 * they are thread-safe. HLCs compare byte-wise (strcmp compares as unsigned char), which is
 * the spec's lexicographic order of the encoded stamp; node ids compare the same way.
 * Ownership: nothing is kept; every string of the conflict is borrowed for the call.
 * Threads: any (the core calls resolve on the replication apply thread of a database).
 */
#ifndef GS_RESOLVERS_LWW_RULE_H
#define GS_RESOLVERS_LWW_RULE_H

#include <gatestream/resolver.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* A NULL node id is the empty string, as the reference treats an absent localChange. */
static inline const char *lww_rule_str(const char *s)
{
    return s ? s : "";
}

/* 1 when the incoming change is a delete ("delete" on the wire; the change log's "DELETE"
 * is accepted too). */
static inline int lww_rule_is_delete(const gs_conflict *c)
{
    return c->incoming_operation && strcasecmp(c->incoming_operation, "delete") == 0;
}

/* Append s to out (cap bytes, *len used) as the body of a JSON string; cut short, never
 * past cap. */
static inline void lww_rule_json_escape(char *out, size_t cap, size_t *len, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p && *len + 7 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            out[(*len)++] = '\\';
            out[(*len)++] = (char)*p;
        } else if (*p < 0x20) {
            *len += (size_t)snprintf(out + *len, cap - *len, "\\u%04x", *p);
        } else {
            out[(*len)++] = (char)*p;
        }
    }
    out[*len] = '\0';
}

/*
 * Fill err with CONFLICT_ERROR: "<resolver>: table '<t>' row '<r>': <message>", and the
 * spec's context (07-errors: `table` and `rowId` on CONFLICT_ERROR) as the details object.
 * Returns GS_ERROR.
 */
static inline gs_status lww_rule_fail(const gs_host *host, gs_error *err, const char *resolver,
                                      const gs_conflict *c, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static inline gs_status lww_rule_fail(const gs_host *host, gs_error *err, const char *resolver,
                                      const gs_conflict *c, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *table = c ? lww_rule_str(c->table) : "";
    const char *row_id = c ? lww_rule_str(c->row_id) : "";
    host->error_set(err, 0, "CONFLICT_ERROR", "%s resolver: table '%s' row '%s': %s", resolver,
                    table, row_id, msg);
    if (err && err->struct_size >= sizeof(gs_error)) {
        size_t n = 0, cap = sizeof err->details;
        n += (size_t)snprintf(err->details, cap, "{\"table\":\"");
        lww_rule_json_escape(err->details, cap - 16, &n, table);
        n += (size_t)snprintf(err->details + n, cap - n, "\",\"rowId\":\"");
        lww_rule_json_escape(err->details, cap - 4, &n, row_id);
        snprintf(err->details + n, cap - n, "\"}");
    }
    return GS_ERROR;
}

/*
 * Check what every resolver relies on: a 1.3 conflict, an operation of insert, update or
 * delete, and an incoming HLC for anything but a delete (a delete wins without one).
 */
static inline gs_status lww_rule_check(const gs_host *host, const char *resolver,
                                       const gs_conflict *c, gs_error *err)
{
    if (!c || !GS_HAS_MEMBER(gs_conflict, primary_node_id, c->struct_size))
        return lww_rule_fail(host, err, resolver, NULL,
                             "the conflict record is %u bytes, older than ABI 1.3; the core "
                             "and this resolver must come from the same gatestream release",
                             c ? (unsigned)c->struct_size : 0u);
    const char *op = c->incoming_operation;
    if (!op || (strcasecmp(op, "insert") != 0 && strcasecmp(op, "update") != 0 &&
                strcasecmp(op, "delete") != 0))
        return lww_rule_fail(host, err, resolver, c,
                             "incoming operation '%s' cannot conflict; only insert, update "
                             "and delete changes are resolved",
                             lww_rule_str(op));
    if (!lww_rule_is_delete(c) && (!c->incoming_hlc || !*c->incoming_hlc))
        return lww_rule_fail(host, err, resolver, c,
                             "the incoming %s carries no HLC, so it cannot be ordered against "
                             "the local row",
                             op);
    return GS_OK;
}

/*
 * The spec's LWW, on a conflict lww_rule_check accepted:
 *   a remote delete is accepted; no local HLC -> accept; the higher HLC wins; on equal HLCs
 *   the incoming change wins only when its node id is greater than the local node id.
 */
static inline gs_resolution_kind lww_rule_decide(const gs_conflict *c)
{
    if (lww_rule_is_delete(c))
        return GS_RESOLVE_TAKE_INCOMING;
    if (!c->local_hlc)
        return GS_RESOLVE_TAKE_INCOMING;
    int cmp = strcmp(c->incoming_hlc, c->local_hlc);
    if (cmp > 0)
        return GS_RESOLVE_TAKE_INCOMING;
    if (cmp < 0)
        return GS_RESOLVE_KEEP_LOCAL;
    return strcmp(lww_rule_str(c->incoming_node_id), lww_rule_str(c->local_node_id)) > 0
               ? GS_RESOLVE_TAKE_INCOMING
               : GS_RESOLVE_KEEP_LOCAL;
}

#endif
