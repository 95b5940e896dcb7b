/* Coordinator-mode records and their JSON form (see group.h). */
#include "repl/group.h"

#include "base/alloc.h"
#include "base/error.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gs_id_set_has(const gs_id_set *s, const char *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->id[i], id) == 0)
            return 1;
    return 0;
}

int gs_id_set_add(gs_id_set *s, const char *id)
{
    if (gs_id_set_has(s, id))
        return 1;
    if (s->n >= GS_GROUP_MAX_NODES || strlen(id) >= GS_GROUP_ID_MAX)
        return 0;
    snprintf(s->id[s->n++], GS_GROUP_ID_MAX, "%s", id);
    return 1;
}

void gs_id_set_remove(gs_id_set *s, const char *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->id[i], id) == 0) {
            memmove(s->id[i], s->id[i + 1], (s->n - i - 1) * sizeof s->id[0]);
            s->n--;
            return;
        }
}

/* ---- parsing ---- */

static gs_status bad(gs_error *err, const char *what, const char *field)
{
    return gs_error_set(err, 0, "COORDINATOR_UNAVAILABLE",
                        "the coordinator holds a %s whose '%s' is malformed; this node does not "
                        "trust it (inspect it with etcdctl and repair or delete it)",
                        what, field);
}

/* A decimal string (or a JSON integer) into *v; absent = 0. */
static int get_int(json_t *o, const char *field, int64_t *v)
{
    json_t *x = json_object_get(o, field);
    *v = 0;
    if (!x || json_is_null(x))
        return 1;
    if (json_is_integer(x)) {
        *v = (int64_t)json_integer_value(x);
        return 1;
    }
    if (!json_is_string(x))
        return 0;
    const char *s = json_string_value(x);
    if (!*s)
        return 0;
    char *end;
    errno = 0;
    long long n = strtoll(s, &end, 10);
    if (*end || errno)
        return 0;
    *v = n;
    return 1;
}

static int get_str(json_t *o, const char *field, char *out, size_t cap)
{
    json_t *x = json_object_get(o, field);
    out[0] = '\0';
    if (!x || json_is_null(x))
        return 1;
    if (!json_is_string(x) || strlen(json_string_value(x)) >= cap)
        return 0;
    snprintf(out, cap, "%s", json_string_value(x));
    return 1;
}

static int get_set(json_t *o, const char *field, gs_id_set *s)
{
    json_t *a = json_object_get(o, field);
    s->n = 0;
    if (!a || json_is_null(a))
        return 1;
    if (!json_is_array(a))
        return 0;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (!json_is_string(v) || !gs_id_set_add(s, json_string_value(v)))
            return 0;
    }
    return 1;
}

gs_status gs_group_state_parse(const char *json, size_t len, gs_group_state *out, gs_error *err)
{
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *o = json_loadb(json, len, 0, &je);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return bad(err, "group state", "(not a JSON object)");
    }
    gs_status rc = GS_OK;
#define NEED(cond, field)                                                                          \
    do {                                                                                           \
        if (rc == GS_OK && !(cond))                                                                \
            rc = bad(err, "group state", field);                                                   \
    } while (0)
    NEED(get_str(o, "clusterId", out->cluster_id, sizeof out->cluster_id), "clusterId");
    NEED(get_str(o, "groupId", out->group_id, sizeof out->group_id), "groupId");
    NEED(get_set(o, "votingDataBearingNodeIds", &out->voters), "votingDataBearingNodeIds");
    json_t *p = json_object_get(o, "currentPrimary");
    if (p && json_is_object(p)) {
        NEED(get_str(p, "nodeId", out->primary, sizeof out->primary) && out->primary[0],
             "currentPrimary.nodeId");
        NEED(get_str(p, "endpoint", out->primary_endpoint, sizeof out->primary_endpoint),
             "currentPrimary.endpoint");
        out->has_primary = 1;
    } else {
        NEED(!p || json_is_null(p), "currentPrimary");
    }
    NEED(get_int(o, "primaryTerm", &out->term) && out->term >= 0, "primaryTerm");
    NEED(get_int(o, "durabilityPointSeq", &out->durability_seq) && out->durability_seq >= 0,
         "durabilityPointSeq");
    NEED(get_set(o, "inSyncNodeIds", &out->in_sync), "inSyncNodeIds");
    NEED(get_set(o, "drainingNodeIds", &out->draining), "drainingNodeIds");
    NEED(get_set(o, "repairingNodeIds", &out->repairing), "repairingNodeIds");
    NEED(get_set(o, "faultedNodeIds", &out->faulted), "faultedNodeIds");
    NEED(get_int(o, "updatedAtMs", &out->updated_at_ms), "updatedAtMs");
    json_t *ts = json_object_get(o, "termStart");
    if (ts && json_is_object(ts)) {
        NEED(get_int(ts, "term", &out->ts_term), "termStart.term");
        NEED(get_int(ts, "seq", &out->ts_seq), "termStart.seq");
        NEED(get_str(ts, "previousPrimary", out->ts_prev, sizeof out->ts_prev),
             "termStart.previousPrimary");
        NEED(get_int(ts, "previousPrimarySeq", &out->ts_prev_seq), "termStart.previousPrimarySeq");
    }
#undef NEED
    json_decref(o);
    return rc;
}

gs_status gs_node_record_parse(const char *json, size_t len, gs_node_record *out, gs_error *err)
{
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *o = json_loadb(json, len, 0, &je);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return bad(err, "node session", "(not a JSON object)");
    }
    gs_status rc = GS_OK;
    if (!get_str(o, "nodeId", out->node_id, sizeof out->node_id) || !out->node_id[0])
        rc = bad(err, "node session", "nodeId");
    else if (!get_str(o, "endpoint", out->endpoint, sizeof out->endpoint))
        rc = bad(err, "node session", "endpoint");
    json_t *lease = json_object_get(o, "lease");
    if (rc == GS_OK && lease && json_is_object(lease) &&
        (!get_int(lease, "id", &out->lease) || !get_int(lease, "ttlMs", &out->ttl_ms)))
        rc = bad(err, "node session", "lease");
    json_t *v = json_object_get(o, "voting");
    out->voting = v && json_is_true(v);
    json_t *c = json_object_get(o, "compatibility");
    if (rc == GS_OK && c && json_is_object(c) &&
        (!get_str(c, "packageVersion", out->package_version, sizeof out->package_version) ||
         !get_str(c, "specVersion", out->spec_version, sizeof out->spec_version) ||
         !get_str(c, "protocolVersion", out->protocol_version, sizeof out->protocol_version)))
        rc = bad(err, "node session", "compatibility");
    json_t *pr = json_object_get(o, "progress");
    if (rc == GS_OK && pr && json_is_object(pr) &&
        (!get_str(pr, "source", out->progress_source, sizeof out->progress_source) ||
         !get_int(pr, "seq", &out->progress_seq) || !get_int(pr, "term", &out->progress_term)))
        rc = bad(err, "node session", "progress");
    json_decref(o);
    return rc;
}

/* ---- formatting ---- */

static void put_key(gs_buf *b, const char *k)
{
    gs_buf_json_string(b, k, strlen(k));
    gs_buf_putc(b, ':');
}

static void put_str(gs_buf *b, const char *k, const char *v)
{
    put_key(b, k);
    gs_buf_json_string(b, v, strlen(v));
}

static void put_dec(gs_buf *b, const char *k, int64_t v)
{
    put_key(b, k);
    gs_buf_printf(b, "\"%lld\"", (long long)v);
}

void gs_id_set_json(gs_buf *b, const gs_id_set *s)
{
    gs_buf_putc(b, '[');
    for (size_t i = 0; i < s->n; i++) {
        if (i)
            gs_buf_putc(b, ',');
        gs_buf_json_string(b, s->id[i], strlen(s->id[i]));
    }
    gs_buf_putc(b, ']');
}

static void put_set(gs_buf *b, const char *k, const gs_id_set *s)
{
    put_key(b, k);
    gs_id_set_json(b, s);
}

const gs_node_record *gs_node_list_find(const gs_node_list *l, const char *id)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->r[i].node_id, id) == 0)
            return &l->r[i];
    return NULL;
}

void gs_group_state_json(gs_buf *b, const gs_group_state *s)
{
    gs_buf_putc(b, '{');
    put_str(b, "clusterId", s->cluster_id);
    gs_buf_putc(b, ',');
    put_str(b, "groupId", s->group_id);
    gs_buf_putc(b, ',');
    put_set(b, "votingDataBearingNodeIds", &s->voters);
    gs_buf_putc(b, ',');
    put_key(b, "currentPrimary");
    if (s->has_primary) {
        gs_buf_putc(b, '{');
        put_str(b, "nodeId", s->primary);
        if (s->primary_endpoint[0]) {
            gs_buf_putc(b, ',');
            put_str(b, "endpoint", s->primary_endpoint);
        }
        gs_buf_putc(b, '}');
    } else {
        gs_buf_puts(b, "null");
    }
    gs_buf_putc(b, ',');
    put_dec(b, "primaryTerm", s->term);
    gs_buf_putc(b, ',');
    put_dec(b, "durabilityPointSeq", s->durability_seq);
    gs_buf_putc(b, ',');
    put_set(b, "inSyncNodeIds", &s->in_sync);
    gs_buf_putc(b, ',');
    put_set(b, "drainingNodeIds", &s->draining);
    gs_buf_putc(b, ',');
    put_set(b, "repairingNodeIds", &s->repairing);
    gs_buf_putc(b, ',');
    put_set(b, "faultedNodeIds", &s->faulted);
    if (s->ts_term > 0 || s->ts_prev[0]) {
        gs_buf_puts(b, ",\"termStart\":{");
        put_dec(b, "term", s->ts_term);
        gs_buf_putc(b, ',');
        put_dec(b, "seq", s->ts_seq);
        gs_buf_putc(b, ',');
        put_str(b, "previousPrimary", s->ts_prev);
        gs_buf_putc(b, ',');
        put_dec(b, "previousPrimarySeq", s->ts_prev_seq);
        gs_buf_putc(b, '}');
    }
    gs_buf_printf(b, ",\"updatedAtMs\":%lld}", (long long)s->updated_at_ms);
}

char *gs_group_state_format(const gs_group_state *s, size_t *len)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_group_state_json(&b, s);
    return gs_buf_take(&b, len);
}

char *gs_node_record_format(const gs_node_record *r, const char *cluster_id, size_t *len)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_putc(&b, '{');
    put_str(&b, "clusterId", cluster_id);
    gs_buf_putc(&b, ',');
    put_str(&b, "nodeId", r->node_id);
    gs_buf_printf(&b, ",\"lease\":{\"id\":\"%lld\",\"kind\":\"node-session\",\"ttlMs\":\"%lld\"}",
                  (long long)r->lease, (long long)r->ttl_ms);
    if (r->endpoint[0]) {
        gs_buf_putc(&b, ',');
        put_str(&b, "endpoint", r->endpoint);
    }
    gs_buf_printf(&b, ",\"dataBearing\":true,\"voting\":%s", r->voting ? "true" : "false");
    gs_buf_puts(&b, ",\"compatibility\":{");
    put_str(&b, "packageVersion", r->package_version);
    gs_buf_putc(&b, ',');
    put_str(&b, "specVersion", r->spec_version);
    gs_buf_putc(&b, ',');
    put_str(&b, "protocolVersion", r->protocol_version);
    gs_buf_putc(&b, '}');
    if (r->progress_source[0]) {
        gs_buf_puts(&b, ",\"progress\":{");
        put_str(&b, "source", r->progress_source);
        gs_buf_putc(&b, ',');
        put_dec(&b, "seq", r->progress_seq);
        gs_buf_putc(&b, ',');
        put_dec(&b, "term", r->progress_term);
        gs_buf_putc(&b, '}');
    }
    gs_buf_putc(&b, '}');
    return gs_buf_take(&b, len);
}

/* ---- keys ---- */

static int unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

static int append_component(char *out, size_t cap, size_t *pos, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int need = unreserved(*p) ? 1 : 3;
        if (*pos + (size_t)need >= cap)
            return 0;
        if (need == 1)
            out[(*pos)++] = (char)*p;
        else
            *pos += (size_t)snprintf(out + *pos, cap - *pos, "%%%02X", *p);
    }
    out[*pos] = '\0';
    return 1;
}

static int append_lit(char *out, size_t cap, size_t *pos, const char *s)
{
    size_t n = strlen(s);
    if (*pos + n >= cap)
        return 0;
    memcpy(out + *pos, s, n + 1);
    *pos += n;
    return 1;
}

static int build(char *out, size_t cap, const char *cluster, const char *mid, const char *last)
{
    size_t pos = 0;
    if (!cap)
        return 0;
    out[0] = '\0';
    return append_lit(out, cap, &pos, "clusters/") && append_component(out, cap, &pos, cluster) &&
           append_lit(out, cap, &pos, mid) && (!last || append_component(out, cap, &pos, last));
}

int gs_group_key(char *out, size_t cap, const char *cluster, const char *group)
{
    return build(out, cap, cluster, "/groups/", group);
}

int gs_node_key(char *out, size_t cap, const char *cluster, const char *node)
{
    return build(out, cap, cluster, "/nodes/", node);
}

int gs_node_prefix(char *out, size_t cap, const char *cluster)
{
    return build(out, cap, cluster, "/nodes/", NULL);
}

int gs_controller_key(char *out, size_t cap, const char *cluster)
{
    return build(out, cap, cluster, "/controller", NULL);
}
