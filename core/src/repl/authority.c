/* Coordinator-mode authority: session, controller, promotion, in-sync set (see authority.h). */
#include "repl/authority.h"

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MIN_AUTOMATIC_FAILOVER_VOTERS 3
#define CAS_ATTEMPTS 5
#define MAX_REQUESTS 32

enum { CTL_DISABLED, CTL_STANDBY, CTL_ACTIVE, CTL_LOST };
static const char *const ctl_names[] = {"disabled", "standby", "active", "lost"};

typedef struct request {
    char node[GS_GROUP_ID_MAX];
    int64_t seq;
    int evict;
    char why[160];
} request;

struct gs_authority {
    gs_authority_options o;
    char *node_id, *cluster_id, *group_id, *endpoint;
    char **voters;
    char *package_version, *spec_version, *protocol_version;
    char group_key[512], node_key[512], nodes_prefix[512], ctl_key[512];

    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    pthread_t thread;
    int thread_started;
    int stop, wake;

    /* view (mu) */
    int known;
    gs_group_state g;
    int64_t g_rev;
    int64_t last_contact_ms;
    int last_call_failed; /* the latest coordinator call failed */
    int64_t session_valid_until;
    int ctl_state;
    int64_t ctl_valid_until;

    /* coordination thread only */
    int coord_started;
    int64_t session_lease, next_keepalive_ms;
    int64_t ctl_lease, next_ctl_keepalive_ms, next_ctl_ms;
    uint64_t watch_group, watch_nodes;
    int watching;
    int64_t next_log_ms;
    int64_t next_no_safe_log_ms;

    /* requests (mu) */
    request req[MAX_REQUESTS];
    int nreq;
    int quarantine;
    char quarantine_why[200];
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The store expires a lease `ttl` after it handled the renewal, which is after we sent it;
 * our own deadline keeps a margin for clock rate differences. */
static int64_t lease_margin(int64_t ttl)
{
    return ttl / 10 + 50;
}

/* ---- store helpers (any thread) ---- */

typedef struct one_kv {
    int found;
    char *value;
    size_t len;
    int64_t mod_revision, lease;
} one_kv;

static void visit_one(void *user, const gs_kv *kv)
{
    one_kv *o = user;
    if (o->found)
        return;
    o->value = gs_malloc(kv->value_len + 1);
    if (!o->value)
        return;
    memcpy(o->value, kv->value, kv->value_len);
    o->value[kv->value_len] = '\0';
    o->len = kv->value_len;
    o->mod_revision = kv->mod_revision;
    o->lease = kv->lease;
    o->found = 1;
}

static gs_status read_key(const gs_coordinator_vtable *vt, void *inst, const char *key, one_kv *o,
                          gs_error *err)
{
    memset(o, 0, sizeof *o);
    gs_error_init(err);
    gs_status st = vt->range(inst, (const uint8_t *)key, strlen(key), 0, visit_one, o, NULL, err);
    if (st != GS_OK) {
        gs_free(o->value);
        o->value = NULL;
        o->found = 0;
        if (!err->code[0])
            gs_error_set(err, 0, "COORDINATOR_UNAVAILABLE",
                         "reading %s from the coordinator failed", key);
        return GS_ERROR;
    }
    return GS_OK;
}

gs_status gs_group_read(const gs_coordinator_vtable *vt, void *inst, const char *cluster,
                        const char *group, gs_group_state *out, int64_t *mod_revision,
                        gs_error *err)
{
    char key[512];
    if (!gs_group_key(key, sizeof key, cluster, group))
        return gs_error_set(err, 0, "INVALID_CONFIG", "cluster or group id too long");
    one_kv o;
    if (read_key(vt, inst, key, &o, err) != GS_OK)
        return GS_ERROR;
    if (!o.found)
        return GS_DECLINED;
    gs_status st = gs_group_state_parse(o.value, o.len, out, err);
    if (mod_revision)
        *mod_revision = o.mod_revision;
    gs_free(o.value);
    return st;
}

typedef struct nodes_visit {
    void (*each)(void *user, const gs_node_record *r);
    void *user;
} nodes_visit;

static void visit_node(void *user, const gs_kv *kv)
{
    nodes_visit *nv = user;
    gs_node_record r;
    gs_error err;
    gs_error_init(&err);
    if (gs_node_record_parse((const char *)kv->value, kv->value_len, &r, &err) == GS_OK)
        nv->each(nv->user, &r);
}

gs_status gs_group_read_nodes(const gs_coordinator_vtable *vt, void *inst, const char *cluster,
                              void (*each)(void *user, const gs_node_record *r), void *user,
                              gs_error *err)
{
    char prefix[512];
    if (!gs_node_prefix(prefix, sizeof prefix, cluster))
        return gs_error_set(err, 0, "INVALID_CONFIG", "cluster id too long");
    nodes_visit nv = {each, user};
    gs_error_init(err);
    if (vt->range(inst, (const uint8_t *)prefix, strlen(prefix), 1, visit_node, &nv, NULL, err) !=
        GS_OK) {
        if (!err->code[0])
            gs_error_set(err, 0, "COORDINATOR_UNAVAILABLE", "reading the node sessions failed");
        return GS_ERROR;
    }
    return GS_OK;
}

static void collect_node(void *user, const gs_node_record *r)
{
    gs_node_list *l = user;
    if (l->n < sizeof l->r / sizeof l->r[0])
        l->r[l->n++] = *r;
}

gs_status gs_group_read_node_list(const gs_coordinator_vtable *vt, void *inst, const char *cluster,
                                  gs_node_list *out, gs_error *err)
{
    out->n = 0;
    return gs_group_read_nodes(vt, inst, cluster, collect_node, out, err);
}

/* Put `key` = value (attached to `lease` when not 0) only when target(key) == number: the
 * one compare-and-put every record of this file is written with. *ok says whether it was. */
static gs_status put_if(const gs_coordinator_vtable *vt, void *inst, const char *key,
                        gs_compare_target target, int64_t number, const char *value, size_t len,
                        int64_t lease, int *ok, gs_error *err)
{
    gs_compare c = {.key = (const uint8_t *)key,
                    .key_len = strlen(key),
                    .target = target,
                    .result = GS_CMP_EQUAL,
                    .number = number};
    gs_op put = {.type = GS_OP_PUT,
                 .key = (const uint8_t *)key,
                 .key_len = strlen(key),
                 .value = (const uint8_t *)value,
                 .value_len = len,
                 .lease = lease};
    *ok = 0;
    gs_error_init(err);
    gs_status st = vt->txn(inst, &c, 1, &put, 1, NULL, 0, ok, NULL, err);
    if (st != GS_OK && !err->code[0])
        gs_error_set(err, 0, "COORDINATOR_UNAVAILABLE", "writing %s failed", key);
    return st;
}

/* A CAS update of the group state: mutate returns 1 (write it), 0 (nothing to change) or -1
 * (refused; err filled). */
typedef int (*mutate_fn)(gs_group_state *s, void *ctx, gs_error *err);

static gs_status group_cas(const gs_coordinator_vtable *vt, void *inst, const char *cluster,
                           const char *group, mutate_fn mutate, void *ctx, gs_group_state *out,
                           gs_error *err)
{
    char key[512];
    if (!gs_group_key(key, sizeof key, cluster, group))
        return gs_error_set(err, 0, "INVALID_CONFIG", "cluster or group id too long");
    for (int attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
        gs_group_state s;
        int64_t rev = 0;
        gs_status st = gs_group_read(vt, inst, cluster, group, &s, &rev, err);
        if (st == GS_DECLINED)
            return gs_error_set(err, 0, "NOT_FOUND",
                                "replication group '%s' of cluster '%s' is not registered", group,
                                cluster);
        if (st != GS_OK)
            return GS_ERROR;
        int r = mutate(&s, ctx, err);
        if (r < 0)
            return GS_ERROR;
        if (r == 0) {
            if (out)
                *out = s;
            return GS_OK;
        }
        s.updated_at_ms = wall_ms();
        size_t len = 0;
        char *text = gs_group_state_format(&s, &len);
        if (!text)
            return gs_error_set(err, 0, "COORDINATOR_UNAVAILABLE", "out of memory");
        int ok = 0;
        st = put_if(vt, inst, key, GS_CMP_MOD, rev, text, len, 0, &ok, err);
        gs_free(text);
        if (st != GS_OK)
            return GS_ERROR;
        if (ok) {
            if (out)
                *out = s;
            return GS_OK;
        }
    }
    return gs_error_set(err, 0, "COORDINATOR_UNAVAILABLE",
                        "the group state of '%s' kept changing under %d update attempts; try again",
                        group, CAS_ATTEMPTS);
}

/* ---- maintenance (CLI and node) ---- */

typedef struct maint_ctx {
    const char *node;
    const char *op;
} maint_ctx;

static int maint_mutate(gs_group_state *s, void *ctx, gs_error *err)
{
    maint_ctx *m = ctx;
    if (!gs_id_set_has(&s->voters, m->node)) {
        gs_error_set(err, 0, "NOT_FOUND", "node '%s' is not a voter of group '%s'", m->node,
                     s->group_id);
        return -1;
    }
    gs_group_state before = *s;
    if (strcmp(m->op, "drain") == 0) {
        /* a draining replica leaves the safe sets at once; a draining primary keeps duty until
         * the controller has handed it over to a caught-up replica */
        gs_id_set_add(&s->draining, m->node);
        if (!s->has_primary || strcmp(s->primary, m->node) != 0)
            gs_id_set_remove(&s->in_sync, m->node);
    } else if (strcmp(m->op, "undrain") == 0) {
        gs_id_set_remove(&s->draining, m->node);
    } else if (strcmp(m->op, "repair") == 0) {
        /* the node is taken out of the safe sets while an operator works on it */
        gs_id_set_add(&s->repairing, m->node);
        gs_id_set_remove(&s->in_sync, m->node);
    } else if (strcmp(m->op, "rejoin") == 0) {
        /* an operator remediated it: it syncs again and is admitted when current */
        gs_id_set_remove(&s->faulted, m->node);
        gs_id_set_add(&s->repairing, m->node);
        gs_id_set_remove(&s->in_sync, m->node);
    } else {
        gs_error_set(err, 0, "INVALID_REQUEST",
                     "unknown maintenance '%s' (drain, undrain, repair, rejoin)", m->op);
        return -1;
    }
    return memcmp(&before, s, sizeof before) != 0;
}

gs_status gs_group_maintenance(const gs_coordinator_vtable *vt, void *inst, const char *cluster,
                               const char *group, const char *node, const char *op,
                               gs_group_state *out, gs_error *err)
{
    maint_ctx m = {node, op};
    return group_cas(vt, inst, cluster, group, maint_mutate, &m, out, err);
}

/* ---- options ---- */

gs_status gs_authority_options_check(const gs_authority_options *o, gs_error *err)
{
    if (!o->node_id || !o->node_id[0])
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "coordinator mode needs a stable node id (node.id)");
    if (!o->cluster_id || !o->cluster_id[0] || strlen(o->cluster_id) >= GS_GROUP_ID_MAX)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "replication.coordinator.cluster_id is required (at most %d bytes)",
                            GS_GROUP_ID_MAX - 1);
    if (!o->group_id || !o->group_id[0] || strlen(o->group_id) >= GS_GROUP_ID_MAX)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "replication.coordinator.group_id must be 1..%d bytes",
                            GS_GROUP_ID_MAX - 1);
    if (strlen(o->node_id) >= GS_GROUP_ID_MAX)
        return gs_error_set(err, 0, "INVALID_CONFIG", "node id '%s' is longer than %d bytes",
                            o->node_id, GS_GROUP_ID_MAX - 1);
    if (o->nvoters > GS_GROUP_MAX_NODES)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "replication.coordinator.voting_data_bearing_node_ids holds more than "
                            "%d nodes",
                            GS_GROUP_MAX_NODES);
    int self = 0;
    for (size_t i = 0; i < o->nvoters; i++) {
        if (!o->voters[i] || !o->voters[i][0] || strlen(o->voters[i]) >= GS_GROUP_ID_MAX)
            return gs_error_set(err, 0, "INVALID_CONFIG",
                                "voting_data_bearing_node_ids[%zu] is empty or too long", i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(o->voters[i], o->voters[j]) == 0)
                return gs_error_set(err, 0, "INVALID_CONFIG",
                                    "voting_data_bearing_node_ids lists '%s' twice", o->voters[i]);
        self |= strcmp(o->voters[i], o->node_id) == 0;
    }
    if (o->nvoters && !self)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "voting_data_bearing_node_ids must include this node ('%s')",
                            o->node_id);
    if (o->bootstrap_primary && !o->nvoters)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "the node that registers the group (role: primary) needs "
                            "voting_data_bearing_node_ids");
    if (o->session_ttl_ms < 1000 || o->controller_lease_ttl_ms < 1000 || o->controller_tick_ms < 10)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "session_ttl_ms and controller.lease_ttl_ms must be at least 1000 and "
                            "controller.tick_interval_ms at least 10");
    if (!o->vt)
        return gs_error_set(err, 0, "INVALID_CONFIG", "no coordinator plugin instance");
    return GS_OK;
}

/* ---- view ---- */

static int is_self(gs_authority *a, const char *id)
{
    return strcmp(a->node_id, id) == 0;
}

void gs_authority_view_get(gs_authority *a, gs_authority_view *out)
{
    memset(out, 0, sizeof *out);
    int64_t now = mono_ms();
    pthread_mutex_lock(&a->mu);
    out->known = a->known;
    out->g = a->g;
    out->session_live = now < a->session_valid_until;
    out->coordinator_ok = a->last_contact_ms && !a->last_call_failed &&
                          now - a->last_contact_ms < a->o.session_ttl_ms;
    out->controller = ctl_names[a->ctl_state];
    out->last_contact_ms = a->last_contact_ms;
    out->session_ttl_ms = a->o.session_ttl_ms;
    pthread_mutex_unlock(&a->mu);
    gs_error err;
    int64_t term;
    out->can_write = gs_authority_can_write(a, &term, &err) == GS_OK;
}

static void details_locked(gs_authority *a, gs_error *err)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_puts(&b, "{\"currentPrimary\":");
    if (a->known && a->g.has_primary) {
        gs_buf_puts(&b, "{\"nodeId\":");
        gs_buf_json_string(&b, a->g.primary, strlen(a->g.primary));
        if (a->g.primary_endpoint[0]) {
            gs_buf_puts(&b, ",\"endpoint\":");
            gs_buf_json_string(&b, a->g.primary_endpoint, strlen(a->g.primary_endpoint));
        }
        gs_buf_putc(&b, '}');
    } else {
        gs_buf_puts(&b, "null");
    }
    gs_buf_printf(&b, ",\"primaryTerm\":\"%lld\"}", (long long)(a->known ? a->g.term : 0));
    if (b.data && b.len < sizeof err->details)
        snprintf(err->details, sizeof err->details, "%s", b.data);
    gs_buf_free(&b);
}

int gs_authority_current(gs_authority *a, int64_t *term, char *primary, size_t cap)
{
    pthread_mutex_lock(&a->mu);
    int known = a->known;
    *term = known ? a->g.term : 0;
    snprintf(primary, cap, "%s", known && a->g.has_primary ? a->g.primary : "");
    pthread_mutex_unlock(&a->mu);
    return known;
}

void gs_authority_error_details(gs_authority *a, gs_error *err)
{
    pthread_mutex_lock(&a->mu);
    details_locked(a, err);
    pthread_mutex_unlock(&a->mu);
}

gs_status gs_authority_can_write(gs_authority *a, int64_t *term, gs_error *err)
{
    gs_error_init(err);
    int64_t now = mono_ms();
    gs_status st = GS_ERROR;
    pthread_mutex_lock(&a->mu);
    const gs_group_state *g = &a->g;
    int reachable = a->last_contact_ms && now - a->last_contact_ms < a->o.session_ttl_ms;
    if (!a->known)
        gs_error_set(err, 0, "COORDINATOR_UNAVAILABLE",
                     "this node has not read the group state of '%s' from the coordinator yet; "
                     "check that the coordinator is reachable",
                     a->group_id);
    else if (gs_id_set_has(&g->faulted, a->node_id))
        gs_error_set(err, 0, "UNSAFE_RECOVERY_REQUIRED",
                     "node '%s' is quarantined (it held writes the group never acknowledged); an "
                     "operator must rebuild it and run `gatestream cluster rejoin`",
                     a->node_id);
    else if (!g->has_primary)
        gs_error_set(err, 0, "NO_SAFE_PRIMARY",
                     "group '%s' has no primary: no in-sync replica could be promoted safely",
                     a->group_id);
    else if (!is_self(a, g->primary))
        gs_error_set(err, 0, "STALE_PRIMARY", "node '%s' is not the primary of group '%s'; '%s' is",
                     a->node_id, a->group_id, g->primary);
    else if (now >= a->session_valid_until)
        gs_error_set(err, 0, reachable ? "AUTHORITY_LOST" : "COORDINATOR_UNAVAILABLE",
                     "node '%s' cannot prove its authority as primary of term %lld (%s); writes "
                     "fail closed until it can",
                     a->node_id, (long long)g->term,
                     reachable ? "its session lease lapsed" : "the coordinator is unreachable");
    else if (g->ts_term != g->term)
        gs_error_set(err, 0, "AUTHORITY_LOST",
                     "node '%s' is taking over as primary of term %lld and does not accept writes "
                     "yet; retry shortly",
                     a->node_id, (long long)g->term);
    else if (gs_id_set_has(&g->draining, a->node_id))
        gs_error_set(err, 0, "NODE_DRAINING",
                     "node '%s' is draining: primary duty moves to another node", a->node_id);
    else {
        *term = g->term;
        st = GS_OK;
    }
    if (st != GS_OK)
        details_locked(a, err);
    pthread_mutex_unlock(&a->mu);
    return st;
}

/* ---- requests ---- */

static void post_request(gs_authority *a, const char *node, int64_t seq, int evict, const char *why)
{
    pthread_mutex_lock(&a->mu);
    int i = 0;
    for (; i < a->nreq; i++)
        if (strcmp(a->req[i].node, node) == 0)
            break;
    if (i == a->nreq && a->nreq < MAX_REQUESTS)
        a->nreq++;
    if (i < a->nreq) {
        snprintf(a->req[i].node, sizeof a->req[i].node, "%s", node);
        a->req[i].seq = seq;
        a->req[i].evict = evict;
        snprintf(a->req[i].why, sizeof a->req[i].why, "%s", why ? why : "");
    }
    a->wake = 1;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

void gs_authority_admit(gs_authority *a, const char *node, int64_t seq)
{
    post_request(a, node, seq, 0, NULL);
}

void gs_authority_evict(gs_authority *a, const char *node, const char *why)
{
    post_request(a, node, 0, 1, why);
}

void gs_authority_quarantine(gs_authority *a, const char *why)
{
    pthread_mutex_lock(&a->mu);
    a->quarantine = 1;
    snprintf(a->quarantine_why, sizeof a->quarantine_why, "%s", why ? why : "");
    a->wake = 1;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* ---- the coordination thread ---- */

static void contact(gs_authority *a)
{
    pthread_mutex_lock(&a->mu);
    a->last_contact_ms = mono_ms();
    a->last_call_failed = 0;
    pthread_mutex_unlock(&a->mu);
}

static void log_unavailable(gs_authority *a, const char *what, const gs_error *err)
{
    pthread_mutex_lock(&a->mu);
    a->last_call_failed = 1;
    pthread_mutex_unlock(&a->mu);
    int64_t now = mono_ms();
    if (now < a->next_log_ms)
        return;
    a->next_log_ms = now + 5000;
    gs_log(GS_LOG_WARN, "coord", "group '%s': %s: %s: %s", a->group_id, what, err->code,
           err->message);
}

static void on_watch(void *user, int type, const gs_kv *kv, int64_t revision)
{
    (void)kv;
    (void)revision;
    gs_authority *a = user;
    pthread_mutex_lock(&a->mu);
    if (type == GS_WATCH_LOST)
        a->watching = 0;
    a->wake = 1;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static void ensure_watches(gs_authority *a)
{
    pthread_mutex_lock(&a->mu);
    int watching = a->watching;
    pthread_mutex_unlock(&a->mu);
    if (watching)
        return;
    if (a->watch_group)
        a->o.vt->unwatch(a->o.inst, a->watch_group);
    if (a->watch_nodes)
        a->o.vt->unwatch(a->o.inst, a->watch_nodes);
    a->watch_group = a->watch_nodes = 0;
    gs_error err;
    gs_error_init(&err);
    if (a->o.vt->watch(a->o.inst, (const uint8_t *)a->group_key, strlen(a->group_key), 0, on_watch,
                       a, &a->watch_group, &err) != GS_OK) {
        a->watch_group = 0;
        log_unavailable(a, "watching the group state", &err);
        return;
    }
    gs_error_init(&err);
    if (a->o.vt->watch(a->o.inst, (const uint8_t *)a->nodes_prefix, strlen(a->nodes_prefix), 0,
                       on_watch, a, &a->watch_nodes, &err) != GS_OK) {
        a->watch_nodes = 0;
        log_unavailable(a, "watching the node sessions", &err);
        return;
    }
    pthread_mutex_lock(&a->mu);
    a->watching = 1;
    pthread_mutex_unlock(&a->mu);
}

static void fill_record(gs_authority *a, gs_node_record *r, int64_t lease)
{
    memset(r, 0, sizeof *r);
    snprintf(r->node_id, sizeof r->node_id, "%s", a->node_id);
    snprintf(r->endpoint, sizeof r->endpoint, "%s", a->endpoint ? a->endpoint : "");
    r->lease = lease;
    r->ttl_ms = a->o.session_ttl_ms;
    int voting = 0;
    pthread_mutex_lock(&a->mu);
    voting = a->known ? gs_id_set_has(&a->g.voters, a->node_id) : 0;
    pthread_mutex_unlock(&a->mu);
    for (size_t i = 0; !voting && i < a->o.nvoters; i++)
        voting = strcmp(a->voters[i], a->node_id) == 0;
    r->voting = voting;
    snprintf(r->package_version, sizeof r->package_version, "%s", a->package_version);
    snprintf(r->spec_version, sizeof r->spec_version, "%s", a->spec_version);
    snprintf(r->protocol_version, sizeof r->protocol_version, "%s", a->protocol_version);
    if (a->o.progress) {
        int64_t seq = 0;
        a->o.progress(a->o.user, r->progress_source, sizeof r->progress_source, &seq);
        r->progress_seq = seq;
        pthread_mutex_lock(&a->mu);
        r->progress_term = a->g.term;
        pthread_mutex_unlock(&a->mu);
    }
}

/* Put our record, attached to our lease, only while the key is ours (or absent when
 * registering). */
static gs_status put_record(gs_authority *a, int64_t lease, int create, int *ok, gs_error *err)
{
    gs_node_record r;
    fill_record(a, &r, lease);
    size_t len = 0;
    char *text = gs_node_record_format(&r, a->cluster_id, &len);
    if (!text)
        return gs_error_set(err, 0, "COORDINATOR_UNAVAILABLE", "out of memory");
    gs_status st = put_if(a->o.vt, a->o.inst, a->node_key, create ? GS_CMP_CREATE : GS_CMP_LEASE,
                          create ? 0 : lease, text, len, lease, ok, err);
    gs_free(text);
    return st;
}

static void session_tick(gs_authority *a, int64_t now)
{
    gs_error err;
    int64_t interval = a->o.session_ttl_ms / 3;
    if (a->session_lease) {
        if (now < a->next_keepalive_ms)
            return;
        a->next_keepalive_ms = now + interval;
        int64_t sent = mono_ms(), left = 0;
        gs_error_init(&err);
        gs_status st = a->o.vt->lease_keepalive(a->o.inst, a->session_lease, &left, &err);
        if (st == GS_OK) {
            contact(a);
            pthread_mutex_lock(&a->mu);
            a->session_valid_until = sent + left - lease_margin(left);
            pthread_mutex_unlock(&a->mu);
            int ok = 0;
            if (put_record(a, a->session_lease, 0, &ok, &err) == GS_OK && !ok)
                st = GS_DECLINED; /* the key is no longer ours */
        }
        if (st == GS_DECLINED) {
            gs_log(GS_LOG_WARN, "coord",
                   "group '%s': the session of node '%s' expired; registering again (no write "
                   "authority until then)",
                   a->group_id, a->node_id);
            pthread_mutex_lock(&a->mu);
            a->session_valid_until = 0;
            pthread_mutex_unlock(&a->mu);
            a->session_lease = 0;
        } else if (st != GS_OK) {
            log_unavailable(a, "renewing the session", &err);
            a->next_keepalive_ms = now + (interval < 500 ? interval : 500);
        }
        return;
    }
    if (now < a->next_keepalive_ms)
        return;
    a->next_keepalive_ms = now + (interval < 500 ? interval : 500);
    int64_t lease = 0, sent = mono_ms();
    gs_error_init(&err);
    if (a->o.vt->lease_grant(a->o.inst, a->o.session_ttl_ms, &lease, &err) != GS_OK) {
        log_unavailable(a, "opening a session", &err);
        return;
    }
    contact(a);
    int ok = 0;
    if (put_record(a, lease, 1, &ok, &err) != GS_OK || !ok) {
        gs_error e2;
        a->o.vt->lease_revoke(a->o.inst, lease, &e2);
        if (ok == 0 && !err.code[0]) {
            int64_t t = mono_ms();
            if (t >= a->next_log_ms) {
                a->next_log_ms = t + 5000;
                gs_log(GS_LOG_INFO, "coord",
                       "group '%s': a session of node '%s' is still registered (a previous run, "
                       "or another process with this node id); waiting for it to expire",
                       a->group_id, a->node_id);
            }
        } else {
            log_unavailable(a, "registering the session", &err);
        }
        return;
    }
    a->session_lease = lease;
    a->next_keepalive_ms = sent + interval;
    pthread_mutex_lock(&a->mu);
    a->session_valid_until = sent + a->o.session_ttl_ms - lease_margin(a->o.session_ttl_ms);
    pthread_mutex_unlock(&a->mu);
    gs_log(GS_LOG_INFO, "coord", "group '%s': node '%s' registered its session (lease %lld)",
           a->group_id, a->node_id, (long long)lease);
}

/* Register the group from the configured voters when it does not exist. */
static void register_group(gs_authority *a)
{
    gs_group_state s;
    memset(&s, 0, sizeof s);
    snprintf(s.cluster_id, sizeof s.cluster_id, "%s", a->cluster_id);
    snprintf(s.group_id, sizeof s.group_id, "%s", a->group_id);
    for (size_t i = 0; i < a->o.nvoters; i++)
        gs_id_set_add(&s.voters, a->voters[i]);
    s.term = 1;
    s.has_primary = 1;
    snprintf(s.primary, sizeof s.primary, "%s", a->node_id);
    snprintf(s.primary_endpoint, sizeof s.primary_endpoint, "%s", a->endpoint ? a->endpoint : "");
    gs_id_set_add(&s.in_sync, a->node_id);
    s.ts_term = 1;
    s.ts_seq = a->o.committed_seq ? a->o.committed_seq(a->o.user) : 0;
    s.durability_seq = s.ts_seq;
    s.updated_at_ms = wall_ms();
    size_t len = 0;
    char *text = gs_group_state_format(&s, &len);
    if (!text)
        return;
    int ok = 0;
    gs_error err;
    gs_status st =
        put_if(a->o.vt, a->o.inst, a->group_key, GS_CMP_CREATE, 0, text, len, 0, &ok, &err);
    gs_free(text);
    if (st != GS_OK)
        log_unavailable(a, "registering the group", &err);
    else if (ok)
        gs_log(GS_LOG_INFO, "coord",
               "group '%s' registered with %zu voters; node '%s' is the primary of term 1",
               a->group_id, s.voters.n, a->node_id);
}

/* Read the group state into the view; returns 1 when it changed. */
static int refresh_group(gs_authority *a)
{
    gs_group_state s;
    int64_t rev = 0;
    gs_error err;
    gs_status st = gs_group_read(a->o.vt, a->o.inst, a->cluster_id, a->group_id, &s, &rev, &err);
    if (st == GS_DECLINED) {
        contact(a);
        if (a->o.bootstrap_primary && a->o.nvoters) {
            register_group(a);
            st = gs_group_read(a->o.vt, a->o.inst, a->cluster_id, a->group_id, &s, &rev, &err);
        }
        if (st == GS_DECLINED) {
            pthread_mutex_lock(&a->mu);
            int changed = a->known;
            a->known = 0;
            pthread_mutex_unlock(&a->mu);
            return changed;
        }
    }
    if (st != GS_OK) {
        log_unavailable(a, "reading the group state", &err);
        return 0;
    }
    contact(a);
    pthread_mutex_lock(&a->mu);
    int changed = !a->known || a->g_rev != rev;
    if (changed && a->known && a->g.term != s.term)
        gs_log(GS_LOG_INFO, "coord", "group '%s': term %lld, primary %s (was term %lld, %s)",
               a->group_id, (long long)s.term, s.has_primary ? s.primary : "none",
               (long long)a->g.term, a->g.has_primary ? a->g.primary : "none");
    a->known = 1;
    a->g = s;
    a->g_rev = rev;
    pthread_mutex_unlock(&a->mu);
    return changed;
}

/* ---- controller ---- */

static int major_of(const char *v)
{
    return v && *v ? atoi(v) : -1;
}

/* Mixed minor and patch levels are fine; a different major of the protocol, the spec or the
 * package is not (spec 03 "Recovery and Rolling Upgrades"). */
static int compatible(gs_authority *a, const gs_node_record *r)
{
    return major_of(r->protocol_version) == major_of(a->protocol_version) &&
           major_of(r->spec_version) == major_of(a->spec_version) &&
           major_of(r->package_version) == major_of(a->package_version);
}

typedef struct promote_ctx {
    int64_t term;
    char old[GS_GROUP_ID_MAX];
    int had_primary;
    int old_live; /* the displaced primary still has a session (a drain hand-over) */
    char cand[GS_GROUP_ID_MAX];
    char endpoint[256];
} promote_ctx;

static int promote_mutate(gs_group_state *s, void *ctx, gs_error *err)
{
    promote_ctx *p = ctx;
    if (s->term != p->term || s->has_primary != p->had_primary ||
        (p->had_primary && strcmp(s->primary, p->old) != 0) ||
        !gs_id_set_has(&s->in_sync, p->cand) || gs_id_set_has(&s->faulted, p->cand)) {
        gs_error_set(err, 0, "COORDINATOR_UNAVAILABLE",
                     "the group state changed while promoting; the next tick decides again");
        return -1;
    }
    s->term++;
    s->has_primary = 1;
    snprintf(s->primary, sizeof s->primary, "%s", p->cand);
    snprintf(s->primary_endpoint, sizeof s->primary_endpoint, "%s", p->endpoint);
    gs_id_set_remove(&s->repairing, p->cand);
    if (p->had_primary) {
        gs_id_set_remove(&s->in_sync, p->old);
        if (!p->old_live || !gs_id_set_has(&s->draining, p->old))
            gs_id_set_add(&s->repairing, p->old);
    }
    s->ts_term = 0;
    s->ts_seq = 0;
    s->ts_prev_seq = 0;
    snprintf(s->ts_prev, sizeof s->ts_prev, "%s", p->had_primary ? p->old : "");
    return 1;
}

static void controller_promote_check(gs_authority *a)
{
    pthread_mutex_lock(&a->mu);
    gs_group_state g = a->g;
    int known = a->known;
    pthread_mutex_unlock(&a->mu);
    if (!known)
        return;
    gs_node_list *ln = gs_calloc(1, sizeof *ln);
    if (!ln)
        return;
    gs_error err;
    if (gs_group_read_node_list(a->o.vt, a->o.inst, a->cluster_id, ln, &err) != GS_OK) {
        log_unavailable(a, "reading node sessions", &err);
        gs_free(ln);
        return;
    }
    const gs_node_record *prim = g.has_primary ? gs_node_list_find(ln, g.primary) : NULL;
    int draining = g.has_primary && gs_id_set_has(&g.draining, g.primary);
    int keep = prim && compatible(a, prim) && !draining &&
               !gs_id_set_has(&g.repairing, g.primary) && !gs_id_set_has(&g.faulted, g.primary);
    if (keep) {
        gs_free(ln);
        return;
    }
    const char *why = !g.has_primary         ? "the group has no primary"
                      : !prim                ? "the primary's session is gone"
                      : draining             ? "the primary is draining"
                      : !compatible(a, prim) ? "the primary runs an incompatible protocol"
                                             : "the primary is repairing or faulted";
    /* candidates: live, voting, in sync, not draining / repairing / faulted, compatible */
    const gs_node_record *best = NULL;
    int64_t best_seq = -1;
    for (size_t i = 0; i < g.voters.n; i++) {
        const char *id = g.voters.id[i];
        if (g.has_primary && strcmp(id, g.primary) == 0)
            continue;
        const gs_node_record *r = gs_node_list_find(ln, id);
        if (!r || !compatible(a, r) || !gs_id_set_has(&g.in_sync, id) ||
            gs_id_set_has(&g.draining, id) || gs_id_set_has(&g.repairing, id) ||
            gs_id_set_has(&g.faulted, id))
            continue;
        int64_t seq =
            g.has_primary && strcmp(r->progress_source, g.primary) == 0 ? r->progress_seq : -1;
        if (!best || seq > best_seq || (seq == best_seq && strcmp(id, best->node_id) < 0)) {
            best = r;
            best_seq = seq;
        }
    }
    int64_t now = mono_ms();
    if (!best || g.voters.n < MIN_AUTOMATIC_FAILOVER_VOTERS) {
        if (now >= a->next_no_safe_log_ms) {
            a->next_no_safe_log_ms = now + 5000;
            gs_log(GS_LOG_ERROR, "coord",
                   "group '%s': NO_SAFE_PRIMARY: %s and %s; writes stay unavailable until a "
                   "safe node returns (or an operator repairs the group)",
                   a->group_id, why,
                   g.voters.n < MIN_AUTOMATIC_FAILOVER_VOTERS
                       ? "automatic failover needs at least three voting data-bearing nodes"
                       : "no live, in-sync, healthy replica can be promoted");
        }
        gs_free(ln);
        return;
    }
    if (draining && prim) {
        /* a planned hand-over waits until the candidate holds everything the primary wrote */
        if (strcmp(prim->progress_source, prim->node_id) != 0 || best_seq < prim->progress_seq) {
            gs_free(ln);
            return;
        }
    }
    promote_ctx p;
    memset(&p, 0, sizeof p);
    p.term = g.term;
    p.had_primary = g.has_primary;
    p.old_live = prim != NULL;
    snprintf(p.old, sizeof p.old, "%s", g.primary);
    snprintf(p.cand, sizeof p.cand, "%s", best->node_id);
    snprintf(p.endpoint, sizeof p.endpoint, "%s", best->endpoint);
    gs_free(ln);
    gs_group_state out;
    if (group_cas(a->o.vt, a->o.inst, a->cluster_id, a->group_id, promote_mutate, &p, &out, &err) ==
        GS_OK) {
        gs_log(GS_LOG_WARN, "coord",
               "group '%s': promoted '%s' to primary at term %lld (%s; previous primary '%s')",
               a->group_id, p.cand, (long long)out.term, why, p.had_primary ? p.old : "none");
        contact(a);
    } else {
        gs_log(GS_LOG_INFO, "coord", "group '%s': promotion of '%s' not recorded: %s", a->group_id,
               p.cand, err.message);
    }
}

static void controller_tick(gs_authority *a, int64_t now)
{
    if (!a->o.controller || now < a->next_ctl_ms)
        return;
    a->next_ctl_ms = now + a->o.controller_tick_ms;
    gs_error err;
    gs_error_init(&err);
    if (a->ctl_lease) {
        if (now >= a->next_ctl_keepalive_ms) {
            int64_t left = 0, sent = mono_ms();
            gs_status st = a->o.vt->lease_keepalive(a->o.inst, a->ctl_lease, &left, &err);
            if (st == GS_OK) {
                a->next_ctl_keepalive_ms = now + a->o.controller_lease_ttl_ms / 3;
                pthread_mutex_lock(&a->mu);
                a->ctl_valid_until = sent + left - lease_margin(left);
                pthread_mutex_unlock(&a->mu);
            } else {
                if (st == GS_DECLINED) {
                    a->ctl_lease = 0;
                    gs_log(GS_LOG_WARN, "coord", "cluster '%s': controller lease lost",
                           a->cluster_id);
                } else {
                    log_unavailable(a, "renewing the controller lease", &err);
                }
                pthread_mutex_lock(&a->mu);
                a->ctl_state = CTL_LOST;
                pthread_mutex_unlock(&a->mu);
                return;
            }
        }
        if (mono_ms() >= a->ctl_valid_until) {
            pthread_mutex_lock(&a->mu);
            a->ctl_state = CTL_LOST;
            pthread_mutex_unlock(&a->mu);
            return;
        }
        pthread_mutex_lock(&a->mu);
        a->ctl_state = CTL_ACTIVE;
        pthread_mutex_unlock(&a->mu);
        controller_promote_check(a);
        return;
    }
    int64_t lease = 0, sent = mono_ms();
    if (a->o.vt->lease_grant(a->o.inst, a->o.controller_lease_ttl_ms, &lease, &err) != GS_OK) {
        log_unavailable(a, "asking for the controller lease", &err);
        return;
    }
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_printf(&b, "{\"id\":\"%lld\",\"kind\":\"controller\",\"clusterId\":", (long long)lease);
    gs_buf_json_string(&b, a->cluster_id, strlen(a->cluster_id));
    gs_buf_puts(&b, ",\"holderId\":");
    gs_buf_json_string(&b, a->node_id, strlen(a->node_id));
    int64_t w = wall_ms();
    gs_buf_printf(&b, ",\"ttlMs\":%lld,\"grantedAtMs\":%lld,\"expiresAtMs\":%lld}",
                  (long long)a->o.controller_lease_ttl_ms, (long long)w,
                  (long long)(w + a->o.controller_lease_ttl_ms));
    int ok = 0;
    gs_status st = put_if(a->o.vt, a->o.inst, a->ctl_key, GS_CMP_CREATE, 0, b.data ? b.data : "",
                          b.len, lease, &ok, &err);
    gs_buf_free(&b);
    if (st != GS_OK || !ok) {
        gs_error e2;
        a->o.vt->lease_revoke(a->o.inst, lease, &e2);
        if (st != GS_OK)
            log_unavailable(a, "taking the controller lease", &err);
        pthread_mutex_lock(&a->mu);
        a->ctl_state = CTL_STANDBY;
        pthread_mutex_unlock(&a->mu);
        return;
    }
    contact(a);
    a->ctl_lease = lease;
    a->next_ctl_keepalive_ms = sent + a->o.controller_lease_ttl_ms / 3;
    pthread_mutex_lock(&a->mu);
    a->ctl_valid_until =
        sent + a->o.controller_lease_ttl_ms - lease_margin(a->o.controller_lease_ttl_ms);
    a->ctl_state = CTL_ACTIVE;
    pthread_mutex_unlock(&a->mu);
    gs_log(GS_LOG_INFO, "coord", "cluster '%s': node '%s' is the active controller", a->cluster_id,
           a->node_id);
    controller_promote_check(a);
}

/* ---- primary duties ---- */

typedef struct start_ctx {
    gs_authority *a;
    int64_t term;
    int64_t seq, prev_seq;
} start_ctx;

static int term_start_mutate(gs_group_state *s, void *ctx, gs_error *err)
{
    start_ctx *c = ctx;
    if (s->term != c->term || !s->has_primary || strcmp(s->primary, c->a->node_id) != 0) {
        gs_error_set(err, 0, "AUTHORITY_LOST", "the term moved on before it started");
        return -1;
    }
    if (s->ts_term == s->term)
        return 0;
    s->ts_term = s->term;
    s->ts_seq = c->seq;
    s->ts_prev_seq = c->prev_seq;
    if (c->seq > s->durability_seq)
        s->durability_seq = c->seq;
    gs_id_set_add(&s->in_sync, c->a->node_id);
    return 1;
}

static void publish_term_start(gs_authority *a, int64_t now)
{
    pthread_mutex_lock(&a->mu);
    int need = a->known && a->g.has_primary && is_self(a, a->g.primary) &&
               a->g.ts_term != a->g.term && now < a->session_valid_until;
    int64_t term = a->g.term;
    char prev[GS_GROUP_ID_MAX];
    snprintf(prev, sizeof prev, "%s", a->g.ts_prev);
    pthread_mutex_unlock(&a->mu);
    if (!need)
        return;
    start_ctx c = {a, term, 0, 0};
    /* the engine stops applying the previous primary's batches once it sees the new term (it
     * asks this view), so these positions are final */
    c.seq = a->o.committed_seq ? a->o.committed_seq(a->o.user) : 0;
    c.prev_seq = prev[0] && a->o.position_of ? a->o.position_of(a->o.user, prev) : 0;
    gs_error err;
    gs_group_state out;
    if (group_cas(a->o.vt, a->o.inst, a->cluster_id, a->group_id, term_start_mutate, &c, &out,
                  &err) == GS_OK) {
        gs_log(GS_LOG_INFO, "coord",
               "group '%s': node '%s' starts term %lld at seq %lld (it holds %s up to seq %lld)",
               a->group_id, a->node_id, (long long)term, (long long)c.seq,
               prev[0] ? prev : "nothing of a previous primary", (long long)c.prev_seq);
        pthread_mutex_lock(&a->mu);
        a->g = out;
        pthread_mutex_unlock(&a->mu);
    } else {
        log_unavailable(a, "recording the start of the term", &err);
    }
}

typedef struct member_ctx {
    gs_authority *a;
    int64_t term;
    request r;
} member_ctx;

static int member_mutate(gs_group_state *s, void *ctx, gs_error *err)
{
    member_ctx *m = ctx;
    if (s->term != m->term || !s->has_primary || strcmp(s->primary, m->a->node_id) != 0) {
        gs_error_set(err, 0, "AUTHORITY_LOST", "this node is no longer the primary");
        return -1;
    }
    gs_group_state before = *s;
    if (m->r.evict) {
        gs_id_set_remove(&s->in_sync, m->r.node);
    } else {
        if (!gs_id_set_has(&s->voters, m->r.node) || gs_id_set_has(&s->faulted, m->r.node) ||
            gs_id_set_has(&s->draining, m->r.node))
            return 0;
        gs_id_set_add(&s->in_sync, m->r.node);
        gs_id_set_remove(&s->repairing, m->r.node);
        if (m->r.seq > s->durability_seq)
            s->durability_seq = m->r.seq;
    }
    return memcmp(&before, s, sizeof before) != 0;
}

static int quarantine_mutate(gs_group_state *s, void *ctx, gs_error *err)
{
    (void)err;
    gs_authority *a = ctx;
    gs_group_state before = *s;
    gs_id_set_remove(&s->in_sync, a->node_id);
    gs_id_set_remove(&s->repairing, a->node_id);
    gs_id_set_add(&s->faulted, a->node_id);
    return memcmp(&before, s, sizeof before) != 0;
}

static void run_requests(gs_authority *a)
{
    request req[MAX_REQUESTS];
    pthread_mutex_lock(&a->mu);
    int n = a->nreq;
    memcpy(req, a->req, (size_t)n * sizeof req[0]);
    a->nreq = 0;
    int quarantine = a->quarantine;
    char why[200];
    snprintf(why, sizeof why, "%s", a->quarantine_why);
    a->quarantine = 0;
    int64_t term = a->g.term;
    pthread_mutex_unlock(&a->mu);
    gs_error err;
    gs_group_state out;
    for (int i = 0; i < n; i++) {
        member_ctx m = {a, term, req[i]};
        if (group_cas(a->o.vt, a->o.inst, a->cluster_id, a->group_id, member_mutate, &m, &out,
                      &err) == GS_OK) {
            gs_log(GS_LOG_INFO, "coord", "group '%s': '%s' %s the in-sync set%s%s%s", a->group_id,
                   req[i].node, req[i].evict ? "removed from" : "admitted to",
                   req[i].why[0] ? " (" : "", req[i].why, req[i].why[0] ? ")" : "");
            pthread_mutex_lock(&a->mu);
            if (out.term == a->g.term)
                a->g = out;
            pthread_mutex_unlock(&a->mu);
        } else if (strcmp(err.code, "AUTHORITY_LOST") == 0) {
            gs_log(GS_LOG_DEBUG, "coord", "group '%s': '%s' not %s the in-sync set: %s",
                   a->group_id, req[i].node, req[i].evict ? "removed from" : "admitted to",
                   err.message);
        } else {
            log_unavailable(a, "updating the in-sync set", &err);
            if (req[i].evict) /* an eviction must not be forgotten: retry next tick */
                post_request(a, req[i].node, 0, 1, req[i].why);
        }
    }
    if (quarantine) {
        if (group_cas(a->o.vt, a->o.inst, a->cluster_id, a->group_id, quarantine_mutate, a, &out,
                      &err) == GS_OK) {
            gs_log(GS_LOG_ERROR, "coord",
                   "group '%s': node '%s' is quarantined (faulted): %s. It serves no reads or "
                   "writes until an operator rebuilds it and runs `gatestream cluster rejoin "
                   "--node %s`",
                   a->group_id, a->node_id, why, a->node_id);
        } else {
            log_unavailable(a, "recording the quarantine", &err);
            gs_authority_quarantine(a, why);
        }
    }
}

static void *thread_main(void *arg)
{
    gs_authority *a = arg;
    int64_t period = a->o.controller_tick_ms;
    if (a->o.session_ttl_ms / 3 < period)
        period = a->o.session_ttl_ms / 3;
    if (period > 1000)
        period = 1000;
    if (period < 20)
        period = 20;
    gs_authority_view last;
    memset(&last, 0, sizeof last);
    for (;;) {
        int64_t now = mono_ms();
        int changed = 0;
        if (!a->coord_started) {
            gs_error err;
            gs_error_init(&err);
            if (a->o.vt->start(a->o.inst, &err) == GS_OK)
                a->coord_started = 1;
            else
                log_unavailable(a, "connecting to the coordinator", &err);
        }
        if (a->coord_started) {
            ensure_watches(a);
            session_tick(a, now);
            changed |= refresh_group(a);
            controller_tick(a, now);
            changed |= refresh_group(a);
            publish_term_start(a, mono_ms());
            run_requests(a);
        }
        gs_authority_view v;
        gs_authority_view_get(a, &v);
        changed |= v.can_write != last.can_write || v.coordinator_ok != last.coordinator_ok ||
                   v.session_live != last.session_live || v.known != last.known ||
                   memcmp(&v.g, &last.g, sizeof v.g) != 0;
        last = v;
        if (changed && a->o.on_change)
            a->o.on_change(a->o.user);

        pthread_mutex_lock(&a->mu);
        if (!a->stop && !a->wake) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int64_t ns = ts.tv_nsec + (period % 1000) * 1000000;
            ts.tv_sec += period / 1000 + ns / 1000000000;
            ts.tv_nsec = ns % 1000000000;
            pthread_cond_timedwait(&a->cv, &a->mu, &ts);
        }
        a->wake = 0;
        int stop = a->stop;
        pthread_mutex_unlock(&a->mu);
        if (stop)
            break;
    }
    return NULL;
}

/* ---- lifecycle ---- */

gs_status gs_authority_start(const gs_authority_options *o, gs_authority **out, gs_error *err)
{
    *out = NULL;
    if (gs_authority_options_check(o, err) != GS_OK)
        return GS_ERROR;
    gs_authority *a = gs_calloc(1, sizeof *a);
    if (!a)
        return gs_error_set(err, 0, "REPLICATION_ERROR", "out of memory");
    pthread_mutex_init(&a->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cv, &ca);
    pthread_condattr_destroy(&ca);
    a->o = *o;
    a->node_id = gs_strdup(o->node_id);
    a->cluster_id = gs_strdup(o->cluster_id);
    a->group_id = gs_strdup(o->group_id);
    a->endpoint = o->endpoint ? gs_strdup(o->endpoint) : NULL;
    a->package_version = gs_strdup(o->package_version ? o->package_version : "0.0.0");
    a->spec_version = gs_strdup(o->spec_version ? o->spec_version : "1.0");
    a->protocol_version = gs_strdup(o->protocol_version ? o->protocol_version : "1.0");
    a->voters = gs_calloc(o->nvoters ? o->nvoters : 1, sizeof *a->voters);
    int oom = !a->node_id || !a->cluster_id || !a->group_id || (o->endpoint && !a->endpoint) ||
              !a->package_version || !a->spec_version || !a->protocol_version || !a->voters;
    for (size_t i = 0; !oom && i < o->nvoters; i++)
        oom = !(a->voters[i] = gs_strdup(o->voters[i]));
    a->o.voters = (const char *const *)a->voters;
    if (oom || !gs_group_key(a->group_key, sizeof a->group_key, a->cluster_id, a->group_id) ||
        !gs_node_key(a->node_key, sizeof a->node_key, a->cluster_id, a->node_id) ||
        !gs_node_prefix(a->nodes_prefix, sizeof a->nodes_prefix, a->cluster_id) ||
        !gs_controller_key(a->ctl_key, sizeof a->ctl_key, a->cluster_id)) {
        gs_authority_free(a);
        return gs_error_set(err, 0, "INVALID_CONFIG", "out of memory or ids too long");
    }
    a->ctl_state = o->controller ? CTL_STANDBY : CTL_DISABLED;
    /* The caller's handle is set before the thread runs: its first on_change may reach a
     * caller thread that reads the handle before this function returns. */
    *out = a;
    a->thread_started = 1;
    if (pthread_create(&a->thread, NULL, thread_main, a) != 0) {
        *out = NULL;
        a->thread_started = 0;
        gs_authority_free(a);
        return gs_error_set(err, 0, "REPLICATION_ERROR", "cannot start the coordination thread");
    }
    gs_log(GS_LOG_INFO, "coord",
           "group '%s' of cluster '%s': coordinator mode, node '%s', session ttl %lld ms, "
           "controller %s",
           a->group_id, a->cluster_id, a->node_id, (long long)o->session_ttl_ms,
           o->controller ? "enabled" : "disabled");
    return GS_OK;
}

void gs_authority_stop(gs_authority *a)
{
    if (!a || !a->thread_started)
        return;
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    a->thread_started = 0;
    if (!a->coord_started)
        return;
    if (a->watch_group)
        a->o.vt->unwatch(a->o.inst, a->watch_group);
    if (a->watch_nodes)
        a->o.vt->unwatch(a->o.inst, a->watch_nodes);
    a->watch_group = a->watch_nodes = 0;
    gs_error err;
    if (a->ctl_lease) {
        gs_error_init(&err);
        a->o.vt->lease_revoke(a->o.inst, a->ctl_lease, &err);
        a->ctl_lease = 0;
    }
    if (a->session_lease) {
        /* deregistering is the explicit death signal: the controller may promote at once */
        gs_error_init(&err);
        a->o.vt->lease_revoke(a->o.inst, a->session_lease, &err);
        a->session_lease = 0;
    }
    pthread_mutex_lock(&a->mu);
    a->session_valid_until = 0;
    pthread_mutex_unlock(&a->mu);
}

void gs_authority_free(gs_authority *a)
{
    if (!a)
        return;
    gs_authority_stop(a);
    if (a->voters)
        for (size_t i = 0; i < a->o.nvoters; i++)
            gs_free(a->voters[i]);
    gs_free(a->voters);
    gs_free(a->node_id);
    gs_free(a->cluster_id);
    gs_free(a->group_id);
    gs_free(a->endpoint);
    gs_free(a->package_version);
    gs_free(a->spec_version);
    gs_free(a->protocol_version);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    gs_free(a);
}
