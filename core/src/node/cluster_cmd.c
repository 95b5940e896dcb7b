/*
 * `gatestream cluster`: see cluster_cmd.h. The coordinator form reads the config file with the
 * node's own key tables (so it refuses exactly what a node refuses), then loads and starts
 * only the coordinator plugin instance; the node form is one HTTP GET.
 */
#include "cluster_cmd.h"

#include "../base/alloc.h"
#include "../base/buf.h"
#include "../base/error.h"
#include "../base/log.h"
#include "../config/config.h"
#include "../plugin/host_standalone.h"
#include "../plugin/loader.h"
#include "../repl/authority.h"
#include "../repl/group.h"
#include "cluster_http.h"
#include "settings.h"

#include <gatestream/coordinator.h>

#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { EXIT_DONE = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

#define MAX_HEADERS 8
#define MAX_SESSIONS 256

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gatestream cluster status  --config FILE [--json]\n"
            "       gatestream cluster status  --url http://HOST:PORT --db ID [--json]\n"
            "                                  [--header 'Name: value']...\n"
            "       gatestream cluster drain   --config FILE [--node ID] [--json]\n"
            "       gatestream cluster undrain --config FILE [--node ID] [--json]\n"
            "       gatestream cluster repair  --config FILE [--node ID] [--json]\n"
            "       gatestream cluster rejoin  --config FILE [--node ID] [--json]\n"
            "\n"
            "The replication group of a coordinator-mode node (replication.coordinator in its\n"
            "config). With --config the command loads only the coordinator plugin instance the\n"
            "file names and talks to the coordinator (etcd) directly: nothing listens and no\n"
            "database opens, so it works while the node is down. With --url it asks a running\n"
            "node (GET /db/ID/cluster; the node must set server.cluster_status).\n"
            "\n"
            "  status    the group: primary, term, durability point, and per node its role,\n"
            "            live session, in-sync membership, draining/repairing/faulted, progress\n"
            "            marker and endpoint\n"
            "  drain     put the node in the draining set: it serves no reads or writes and, when\n"
            "            it is the primary, the controller hands primary duty to an in-sync\n"
            "            replica (planned maintenance)\n"
            "  undrain   take the node out of the draining set\n"
            "  repair    put the node in the repairing set and take it out of the in-sync set: it\n"
            "            serves no majority reads and is not promoted until it has applied the\n"
            "            durability point again and the primary re-admits it (e.g. after its\n"
            "            disk was replaced)\n"
            "  rejoin    clear the node's faulted mark: it stays repairing while it syncs again\n"
            "            from the primary and re-enters the in-sync set once current (after an\n"
            "            operator restored or rebuilt it, or for a quarantined former primary\n"
            "            whose local-only writes are to be discarded)\n"
            "\n"
            "  --config FILE        a node's YAML config (the coordinator and group it names)\n"
            "  --node ID            the node to change (default: node.id of FILE)\n"
            "  --group ID           override replication.coordinator.group_id\n"
            "  --url URL            a node's base URL, e.g. http://127.0.0.1:9881 (status only)\n"
            "  --db ID              the database whose group --url reports\n"
            "  --header 'N: V'      an extra request header for --url (an Authorization token)\n"
            "  --timeout-ms N       bound of the --url request (default 10000)\n"
            "  --json               print JSON instead of a table\n"
            "  --log-level L        error | warn | info | debug (default warn)\n"
            "\n"
            "Exit status: 0 done; 1 the coordinator or node could not be reached or refused;\n"
            "2 a usage or config error.\n");
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "gatestream cluster: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "; see gatestream cluster --help\n");
    return EXIT_USAGE;
}

static int failed(const gs_error *err)
{
    fprintf(stderr, "gatestream cluster: %s%s%s\n", err->code[0] ? err->code : "",
            err->code[0] ? ": " : "", err->message);
    return EXIT_FAILED;
}

static void format_ms(int64_t ms, char *out, size_t cap)
{
    if (ms <= 0) {
        snprintf(out, cap, "-");
        return;
    }
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%s.%03dZ", base, (int)(ms % 1000));
}

/* ---- the coordinator form ---- */

typedef struct sessions {
    gs_node_record *r;
    size_t n;
    int overflow;
} sessions;

static void collect_session(void *user, const gs_node_record *r)
{
    sessions *s = user;
    if (s->n >= MAX_SESSIONS) {
        s->overflow = 1;
        return;
    }
    s->r[s->n++] = *r;
}

static const gs_node_record *find_session(const sessions *s, const char *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->r[i].node_id, id) == 0)
            return &s->r[i];
    return NULL;
}

typedef struct coord_target {
    const char *cluster;
    const char *group;
    char controller[GS_GROUP_ID_MAX]; /* holder of the controller lease, "" = none */
} coord_target;

static void controller_visit(void *user, const gs_kv *kv)
{
    coord_target *t = user;
    json_error_t je;
    json_t *o = json_loadb((const char *)kv->value, kv->value_len, 0, &je);
    const char *fields[] = {"holderId", "nodeId", "holder"};
    for (size_t i = 0; o && i < sizeof fields / sizeof fields[0]; i++) {
        json_t *v = json_object_get(o, fields[i]);
        if (json_is_string(v)) {
            snprintf(t->controller, sizeof t->controller, "%s", json_string_value(v));
            break;
        }
    }
    if (!t->controller[0]) /* a record this version cannot read: say something is there */
        snprintf(t->controller, sizeof t->controller, "(unreadable record)");
    json_decref(o);
}

/* Who holds the controller lease; best effort (the status is still useful without it). */
static void read_controller(const gs_coordinator_vtable *vt, void *inst, coord_target *t)
{
    char key[512];
    t->controller[0] = 0;
    if (!gs_controller_key(key, sizeof key, t->cluster))
        return;
    gs_error err;
    gs_error_init(&err);
    if (vt->range(inst, (const uint8_t *)key, strlen(key), 0, controller_visit, t, NULL, &err) !=
        GS_OK)
        snprintf(t->controller, sizeof t->controller, "(unknown: %s)", err.code);
}

static void json_str_field(gs_buf *b, const char *name, const char *v, int comma)
{
    gs_buf_printf(b, "%s\"%s\":", comma ? "," : "", name);
    gs_buf_json_string(b, v, strlen(v));
}

static int print_json_status(const coord_target *t, const gs_group_state *g, int64_t rev,
                             const sessions *s)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_puts(&b, "{");
    json_str_field(&b, "clusterId", t->cluster, 0);
    json_str_field(&b, "groupId", t->group, 1);
    gs_buf_printf(&b, ",\"modRevision\":\"%lld\",\"controller\":", (long long)rev);
    if (t->controller[0] && t->controller[0] != '(') /* "(unknown: ...)" is for people */
        gs_buf_json_string(&b, t->controller, strlen(t->controller));
    else
        gs_buf_puts(&b, "null");
    gs_buf_puts(&b, ",\"group\":");
    gs_group_state_json(&b, g);
    gs_buf_puts(&b, ",\"nodes\":[");
    for (size_t i = 0; i < s->n; i++) {
        const gs_node_record *r = &s->r[i];
        gs_buf_puts(&b, i ? ",{" : "{");
        json_str_field(&b, "nodeId", r->node_id, 0);
        json_str_field(&b, "endpoint", r->endpoint, 1);
        gs_buf_printf(&b, ",\"voting\":%s,\"leaseId\":\"%lld\",\"ttlMs\":%lld",
                      r->voting ? "true" : "false", (long long)r->lease, (long long)r->ttl_ms);
        gs_buf_puts(&b, ",\"progress\":{");
        json_str_field(&b, "source", r->progress_source, 0);
        gs_buf_printf(&b, ",\"seq\":\"%lld\",\"term\":\"%lld\"}", (long long)r->progress_seq,
                      (long long)r->progress_term);
        gs_buf_puts(&b, ",\"compatibility\":{");
        json_str_field(&b, "packageVersion", r->package_version, 0);
        json_str_field(&b, "specVersion", r->spec_version, 1);
        json_str_field(&b, "protocolVersion", r->protocol_version, 1);
        gs_buf_puts(&b, "}}");
    }
    gs_buf_puts(&b, "],");
    /* who is primary and whose session is live, for scripts */
    gs_buf_puts(&b, "\"summary\":{");
    gs_buf_printf(&b, "\"primary\":");
    if (g->has_primary)
        gs_buf_json_string(&b, g->primary, strlen(g->primary));
    else
        gs_buf_puts(&b, "null");
    gs_buf_printf(&b, ",\"primaryTerm\":\"%lld\",", (long long)g->term);
    gs_buf_puts(&b, "\"liveNodeIds\":[");
    for (size_t i = 0; i < s->n; i++) {
        if (i)
            gs_buf_putc(&b, ',');
        gs_buf_json_string(&b, s->r[i].node_id, strlen(s->r[i].node_id));
    }
    gs_buf_puts(&b, "]}}\n");
    int status = EXIT_DONE;
    if (b.oom) {
        fprintf(stderr, "gatestream cluster: out of memory\n");
        status = EXIT_FAILED;
    } else {
        fputs(b.data, stdout);
    }
    gs_buf_free(&b);
    return status;
}

static void marks(const gs_group_state *g, const char *id, char *out, size_t cap)
{
    out[0] = 0;
    const struct {
        const gs_id_set *set;
        const char *name;
    } m[] = {{&g->draining, "draining"}, {&g->repairing, "repairing"}, {&g->faulted, "faulted"}};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (gs_id_set_has(m[i].set, id))
            snprintf(out + strlen(out), cap - strlen(out), "%s%s", out[0] ? "," : "", m[i].name);
    if (!out[0])
        snprintf(out, cap, "-");
}

typedef struct row {
    char node[GS_GROUP_ID_MAX];
    char role[16];
    char session[8];
    char in_sync[8];
    char state[40];
    char progress[GS_GROUP_ID_MAX + 64];
    char endpoint[256];
} row;

static void fill_row(row *w, const gs_group_state *g, const char *id, const gs_node_record *r,
                     int voter)
{
    snprintf(w->node, sizeof w->node, "%s", id);
    snprintf(w->role, sizeof w->role, "%s",
             g->has_primary && strcmp(g->primary, id) == 0 ? "primary"
             : voter                                       ? "replica"
                                                           : "non-voter");
    snprintf(w->session, sizeof w->session, "%s", r ? "live" : "none");
    snprintf(w->in_sync, sizeof w->in_sync, "%s", gs_id_set_has(&g->in_sync, id) ? "yes" : "no");
    marks(g, id, w->state, sizeof w->state);
    if (r && r->progress_source[0])
        snprintf(w->progress, sizeof w->progress, "%s:%lld (term %lld)", r->progress_source,
                 (long long)r->progress_seq, (long long)r->progress_term);
    else
        snprintf(w->progress, sizeof w->progress, "-");
    const char *ep = r && r->endpoint[0] ? r->endpoint
                     : g->has_primary && strcmp(g->primary, id) == 0 && g->primary_endpoint[0]
                         ? g->primary_endpoint
                         : "-";
    snprintf(w->endpoint, sizeof w->endpoint, "%s", ep);
}

static int print_table_status(const coord_target *t, const gs_group_state *g, const sessions *s)
{
    char when[48];
    format_ms(g->updated_at_ms, when, sizeof when);
    printf("cluster %s, group %s (updated %s)\n", t->cluster, t->group, when);
    if (g->has_primary)
        printf("primary %s%s%s%s, term %lld\n", g->primary, g->primary_endpoint[0] ? " (" : "",
               g->primary_endpoint, g->primary_endpoint[0] ? ")" : "", (long long)g->term);
    else
        printf("primary none (no safe primary), term %lld\n", (long long)g->term);
    printf("durability point seq %lld\n", (long long)g->durability_seq);
    if (g->ts_term > 0) {
        if (g->ts_prev[0])
            printf("term %lld began at seq %lld, after applying %s's log to seq %lld\n",
                   (long long)g->ts_term, (long long)g->ts_seq, g->ts_prev,
                   (long long)g->ts_prev_seq);
        else
            printf("term %lld began at seq %lld\n", (long long)g->ts_term, (long long)g->ts_seq);
    }
    printf("controller %s\n", t->controller[0] ? t->controller : "none");
    if (s->overflow)
        printf("(more than %d sessions: the list is cut)\n", MAX_SESSIONS);
    printf("\n");

    size_t cap = g->voters.n + s->n;
    row *rows = gs_calloc(cap ? cap : 1, sizeof *rows);
    if (!rows) {
        fprintf(stderr, "gatestream cluster: out of memory\n");
        return EXIT_FAILED;
    }
    size_t n = 0;
    for (size_t i = 0; i < g->voters.n; i++)
        fill_row(&rows[n++], g, g->voters.id[i], find_session(s, g->voters.id[i]), 1);
    for (size_t i = 0; i < s->n; i++)
        if (!gs_id_set_has(&g->voters, s->r[i].node_id))
            fill_row(&rows[n++], g, s->r[i].node_id, &s->r[i], 0);
    static const row head = {"NODE", "ROLE", "SESSION", "IN-SYNC", "STATE", "PROGRESS", "ENDPOINT"};
    int w[6] = {0};
    for (size_t i = 0; i <= n; i++) {
        const row *r = i == n ? &head : &rows[i];
        const char *cols[6] = {r->node, r->role, r->session, r->in_sync, r->state, r->progress};
        for (int c = 0; c < 6; c++)
            if ((int)strlen(cols[c]) > w[c])
                w[c] = (int)strlen(cols[c]);
    }
    for (size_t i = 0; i <= n; i++) {
        const row *r = i == 0 ? &head : &rows[i - 1];
        printf("%-*s  %-*s  %-*s  %-*s  %-*s  %-*s  %s\n", w[0], r->node, w[1], r->role, w[2],
               r->session, w[3], r->in_sync, w[4], r->state, w[5], r->progress, r->endpoint);
    }
    gs_free(rows);
    return EXIT_DONE;
}

typedef struct coord_opts {
    const char *config;
    const char *verb;
    const char *node;
    const char *group;
    int json;
} coord_opts;

/* The loaded coordinator instance. */
typedef struct coord {
    gs_plugin *plugin;
    void *config;
    gs_cfg_arena arena;
    void *inst;
    int started;
    const gs_coordinator_vtable *vt;
    gs_host host;
} coord;

static void coord_free(coord *c)
{
    if (c->inst) {
        if (c->started)
            c->vt->stop(c->inst);
        c->vt->destroy(c->inst);
    }
    gs_cfg_arena_free(&c->arena);
    gs_free(c->config);
    if (c->plugin)
        gs_plugin_unload(c->plugin);
}

/* Load, configure and create the coordinator plugin instance `name` (plugins[] of doc). */
static gs_status coord_load(coord *c, const gs_cfg_doc *doc, const gs_settings *s,
                            const char *config_dir, const char *name, gs_error *err)
{
    const gs_settings_plugin *ps = s->plugins.items;
    const gs_cfg_node *list = gs_cfg_get(doc->root, "plugins");
    size_t idx = s->plugins.count;
    for (size_t i = 0; i < s->plugins.count; i++)
        if (strcmp(ps[i].name, name) == 0)
            idx = i;
    if (idx == s->plugins.count || !list || idx >= list->count)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "%s: replication.coordinator.instance '%s' is not declared under "
                            "plugins (add {name: %s, kind: coordinator, plugin: etcd})",
                            doc->file, name, name);
    const gs_settings_plugin *p = &ps[idx];
    if (gs_plugin_kind_parse(p->kind) != GS_KIND_COORDINATOR)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "%s: plugins[%zu] '%s' is a %s plugin, not a coordinator", doc->file,
                            idx, name, p->kind);
    const char *pname = p->plugin ? p->plugin : p->name;
    if (!p->path && gs_plugin_load_builtin(p->name, pname, GS_KIND_COORDINATOR, &c->plugin, err))
        return GS_ERROR;
    if (!c->plugin) {
        char *path = NULL;
        if (gs_plugin_find(p->name, pname, GS_KIND_COORDINATOR, p->path, config_dir, &path, err) !=
            GS_OK)
            return GS_ERROR;
        gs_status st = gs_plugin_load(p->name, path, GS_KIND_COORDINATOR, &c->plugin, err);
        gs_free(path);
        if (st != GS_OK)
            return GS_ERROR;
    }
    const gs_plugin_descriptor *d = c->plugin->desc;
    c->vt = d->vtable;
    c->config = gs_calloc(1, d->config_struct_size ? d->config_struct_size : 1);
    if (!c->config)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    char where[64];
    snprintf(where, sizeof where, "plugins[%zu].config", idx);
    const gs_cfg_node *cfg = gs_cfg_get(list->children[idx], "config");
    if (cfg && cfg->is_null)
        cfg = NULL;
    if (gs_cfg_fill(doc, cfg, where, d->config_keys, d->config_key_count, d->config_key_size,
                    c->config, &c->arena, err) != GS_OK)
        return GS_ERROR;
    gs_host_init_standalone(&c->host);
    if (c->vt->create(&c->host, c->config, &c->inst, err) != GS_OK) {
        c->inst = NULL;
        gs_error_prefix(err, "plugin '%s' (%s) refused its config", p->name, c->plugin->path);
        return GS_ERROR;
    }
    return GS_OK;
}

static int run_verb(coord *c, coord_target *t, const coord_opts *o)
{
    gs_error err;
    gs_error_init(&err);
    gs_group_state g;
    int64_t rev = 0;
    gs_status st = gs_group_read(c->vt, c->inst, t->cluster, t->group, &g, &rev, &err);
    if (st == GS_DECLINED) {
        fprintf(stderr,
                "gatestream cluster: group '%s' of cluster '%s' is not registered in the "
                "coordinator yet: it is registered by the first node of the group that starts\n",
                t->group, t->cluster);
        return EXIT_FAILED;
    }
    if (st != GS_OK)
        return failed(&err);
    if (strcmp(o->verb, "status") != 0) {
        if (!gs_id_set_has(&g.voters, o->node)) {
            gs_buf b;
            gs_buf_init(&b);
            for (size_t i = 0; i < g.voters.n; i++)
                gs_buf_printf(&b, "%s%s", i ? ", " : "", g.voters.id[i]);
            fprintf(stderr,
                    "gatestream cluster: node '%s' is not a voting member of group '%s' "
                    "(members: %s); name one with --node\n",
                    o->node, t->group, b.data ? b.data : "none");
            gs_buf_free(&b);
            return EXIT_FAILED;
        }
        st = gs_group_maintenance(c->vt, c->inst, t->cluster, t->group, o->node, o->verb, &g, &err);
        if (st != GS_OK)
            return failed(&err);
        if (!o->json)
            printf("%s: %s in group %s of cluster %s: done\n\n", o->verb, o->node, t->group,
                   t->cluster);
        /* the revision of the state just written */
        gs_group_state again;
        if (gs_group_read(c->vt, c->inst, t->cluster, t->group, &again, &rev, &err) == GS_OK)
            g = again;
    }
    sessions s = {0};
    s.r = gs_calloc(MAX_SESSIONS, sizeof *s.r);
    if (!s.r) {
        fprintf(stderr, "gatestream cluster: out of memory\n");
        return EXIT_FAILED;
    }
    if (gs_group_read_nodes(c->vt, c->inst, t->cluster, collect_session, &s, &err) != GS_OK) {
        gs_free(s.r);
        return failed(&err);
    }
    read_controller(c->vt, c->inst, t);
    int status = o->json ? print_json_status(t, &g, rev, &s) : print_table_status(t, &g, &s);
    gs_free(s.r);
    return status;
}

static int run_coordinator(const coord_opts *o)
{
    gs_error err;
    gs_error_init(&err);
    gs_cfg_doc *doc = NULL;
    gs_cfg_arena arena = {0};
    gs_settings s;
    memset(&s, 0, sizeof s);
    size_t nkeys;
    const gs_config_key *keys = gs_settings_keys(&nkeys);
    if (gs_cfg_load_file(o->config, &doc, &err) != GS_OK ||
        gs_cfg_fill(doc, doc->root, "", keys, nkeys, sizeof(gs_config_key), &s, &arena, &err) !=
            GS_OK) {
        fprintf(stderr, "gatestream cluster: %s\n", err.message);
        gs_cfg_arena_free(&arena);
        gs_cfg_free(doc);
        return EXIT_USAGE;
    }
    int status = EXIT_USAGE;
    coord c;
    memset(&c, 0, sizeof c);
    char *config_dir = NULL;
    const char *instance = s.replication.coordinator.instance;
    const char *cluster = s.replication.coordinator.cluster_id;
    const char *group = o->group ? o->group : s.replication.coordinator.group_id;
    if (!instance || !cluster) {
        fprintf(stderr,
                "gatestream cluster: %s has no replication.coordinator section with instance "
                "and cluster_id: the node does not run in coordinator mode\n",
                o->config);
        goto done;
    }
    if (!group) { /* the default: the replicated database's id */
        const gs_settings_db *dbs = s.databases.items;
        group = s.replication.database   ? s.replication.database
                : s.databases.count == 1 ? dbs[0].id
                                         : NULL;
        if (!group) {
            fprintf(stderr,
                    "gatestream cluster: %s: set replication.coordinator.group_id (or "
                    "replication.database) so the group is known; or pass --group\n",
                    o->config);
            goto done;
        }
    }
    coord_opts eff = *o;
    if (!eff.node)
        eff.node = s.node.id;
    if (strcmp(o->verb, "status") != 0 && (!eff.node || !eff.node[0])) {
        fprintf(stderr, "gatestream cluster: %s: give the node with --node ID\n", o->verb);
        goto done;
    }
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", o->config);
    config_dir = gs_strdup(dirname(tmp));
    if (!config_dir) {
        fprintf(stderr, "gatestream cluster: out of memory\n");
        status = EXIT_FAILED;
        goto done;
    }
    if (coord_load(&c, doc, &s, config_dir, instance, &err) != GS_OK) {
        fprintf(stderr, "gatestream cluster: %s\n", err.message);
        status = strcmp(err.code, "INTERNAL_ERROR") == 0 ? EXIT_FAILED : EXIT_USAGE;
        goto done;
    }
    if (c.vt->start(c.inst, &err) != GS_OK) {
        status = failed(&err);
        goto done;
    }
    c.started = 1;
    coord_target t = {.cluster = cluster, .group = group};
    status = run_verb(&c, &t, &eff);
done:
    coord_free(&c);
    gs_free(config_dir);
    gs_cfg_arena_free(&arena);
    gs_cfg_free(doc);
    return status;
}

/* ---- the node form ---- */

static const char *jstr(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int print_node_status(const char *url, const char *db, const char *body, size_t len,
                             int as_json)
{
    json_error_t je;
    json_t *o = json_loadb(body, len, 0, &je);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        fprintf(stderr, "gatestream cluster: %s answered something that is not a JSON object: %s\n",
                url, je.text);
        return EXIT_FAILED;
    }
    if (as_json) {
        char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (text) {
            printf("%s\n", text);
            free(text); /* jansson's allocator */
        }
        json_decref(o);
        return text ? EXIT_DONE : EXIT_FAILED;
    }
    const char *group = jstr(o, "replicationGroupId");
    const char *role = jstr(o, "role");
    const char *term = jstr(o, "primaryTerm");
    const char *health = jstr(o, "health");
    const char *reason = jstr(o, "healthReason");
    printf("database %s at %s%s%s\n", jstr(o, "databaseId") ? jstr(o, "databaseId") : db, url,
           group ? ", group " : "", group ? group : "");
    printf("this node: %s, health %s (%s)\n", role ? role : "-", health ? health : "-",
           reason ? reason : "-");
    json_t *cp = json_object_get(o, "currentPrimary");
    if (json_is_object(cp))
        printf("primary %s (%s), term %s\n", jstr(cp, "nodeId") ? jstr(cp, "nodeId") : "?",
               jstr(cp, "endpoint") ? jstr(cp, "endpoint") : "no endpoint", term ? term : "-");
    else
        printf("primary none (no safe primary), term %s\n", term ? term : "-");
    json_t *re = json_object_get(o, "readEndpoints");
    if (json_is_array(re)) {
        int w0 = 4, w1 = 8;
        size_t i;
        json_t *e;
        json_array_foreach(re, i, e)
        {
            const char *n = jstr(e, "nodeId"), *ep = jstr(e, "endpoint");
            if (n && (int)strlen(n) > w0)
                w0 = (int)strlen(n);
            if (ep && (int)strlen(ep) > w1)
                w1 = (int)strlen(ep);
        }
        printf("\n%-*s  %-*s  %s\n", w0, "NODE", w1, "ENDPOINT", "READ CONCERNS");
        json_array_foreach(re, i, e)
        {
            char rc[64] = "";
            json_t *l = json_object_get(e, "readConcerns");
            size_t j;
            json_t *c;
            json_array_foreach(l, j, c)
            {
                if (json_is_string(c))
                    snprintf(rc + strlen(rc), sizeof rc - strlen(rc), "%s%s", rc[0] ? "," : "",
                             json_string_value(c));
            }
            printf("%-*s  %-*s  %s\n", w0, jstr(e, "nodeId") ? jstr(e, "nodeId") : "?", w1,
                   jstr(e, "endpoint") ? jstr(e, "endpoint") : "-", rc[0] ? rc : "-");
        }
    }
    json_decref(o);
    return EXIT_DONE;
}

static int run_url(const char *url, const char *db, const char *const *headers, size_t nheaders,
                   int timeout_ms, int as_json)
{
    gs_buf path;
    gs_buf_init(&path);
    gs_buf_puts(&path, "/db/");
    gs_cluster_http_path_segment(&path, db);
    gs_buf_puts(&path, "/cluster");
    if (path.oom) {
        gs_buf_free(&path);
        fprintf(stderr, "gatestream cluster: out of memory\n");
        return EXIT_FAILED;
    }
    gs_error err;
    gs_error_init(&err);
    gs_cluster_http_response r;
    gs_status st = gs_cluster_http_get(url, path.data, headers, nheaders, timeout_ms, &r, &err);
    gs_buf_free(&path);
    if (st != GS_OK)
        return strcmp(err.code, "INVALID_ARGUMENT") == 0 ? (failed(&err), EXIT_USAGE)
                                                         : failed(&err);
    int status;
    if (r.status == 200) {
        status = print_node_status(url, db, r.body, r.body_len, as_json);
    } else {
        json_error_t je;
        json_t *o = json_loadb(r.body, r.body_len, 0, &je);
        json_t *e = o ? json_object_get(o, "error") : NULL;
        const char *code = e ? jstr(e, "code") : NULL;
        const char *msg = e ? jstr(e, "message") : NULL;
        fprintf(stderr, "gatestream cluster: %s answered %d %s%s%s\n", url, r.status,
                code ? code : "", msg ? ": " : "", msg ? msg : "");
        if (r.status == 404 && code && strcmp(code, "NOT_FOUND") == 0)
            fprintf(stderr, "gatestream cluster: the node serves no cluster status to this "
                            "caller: set server.cluster_status (authenticated or any) in its "
                            "config, or send credentials with --header\n");
        json_decref(o);
        status = EXIT_FAILED;
    }
    gs_cluster_http_response_free(&r);
    return status;
}

/* ---- options ---- */

int gs_cluster_command(int argc, char **argv)
{
    enum { OPT_NODE = 256, OPT_GROUP, OPT_URL, OPT_DB, OPT_HEADER, OPT_TIMEOUT, OPT_JSON, OPT_LOG };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"node", required_argument, NULL, OPT_NODE},
        {"group", required_argument, NULL, OPT_GROUP},
        {"url", required_argument, NULL, OPT_URL},
        {"db", required_argument, NULL, OPT_DB},
        {"header", required_argument, NULL, OPT_HEADER},
        {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
        {"json", no_argument, NULL, OPT_JSON},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
                      strcmp(argv[1], "help") == 0)) {
        usage(stdout);
        return EXIT_DONE;
    }
    if (argc < 2 || argv[1][0] == '-')
        return usage_error("%s", "name a command: status, drain, undrain, repair or rejoin");
    const char *verb = argv[1];
    static const char *const verbs[] = {"status", "drain", "undrain", "repair", "rejoin"};
    int known = 0;
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        known |= strcmp(verb, verbs[i]) == 0;
    if (!known)
        return usage_error("unknown command '%s' (status, drain, undrain, repair or rejoin)", verb);
    coord_opts o = {.verb = verb};
    const char *url = NULL, *db = NULL, *log_level = "warn";
    const char *headers[MAX_HEADERS];
    size_t nheaders = 0;
    long timeout_ms = 10000;
    int c;
    optind = 0; /* glibc: 0 re-initialises the scanner, so the command can run twice */
    opterr = 0;
    /* getopt over argv[1..]: argv[1] (the verb) plays the program name */
    while ((c = getopt_long(argc - 1, argv + 1, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': o.config = optarg; break;
        case OPT_NODE: o.node = optarg; break;
        case OPT_GROUP: o.group = optarg; break;
        case OPT_URL: url = optarg; break;
        case OPT_DB: db = optarg; break;
        case OPT_HEADER:
            if (nheaders == MAX_HEADERS)
                return usage_error("at most %s --header options", "8");
            headers[nheaders++] = optarg;
            break;
        case OPT_TIMEOUT: {
            char *end;
            timeout_ms = strtol(optarg, &end, 10);
            if (end == optarg || *end || timeout_ms < 1 || timeout_ms > 3600000)
                return usage_error("--timeout-ms '%s' must be from 1 to 3600000", optarg);
            break;
        }
        case OPT_JSON: o.json = 1; break;
        case OPT_LOG: log_level = optarg; break;
        case 'h': usage(stdout); return EXIT_DONE;
        default: return usage_error("unknown or incomplete option '%s'", argv[optind]);
        }
    }
    if (optind < argc - 1)
        return usage_error("unexpected argument '%s'", argv[optind + 1]);
    int lvl = gs_log_level_parse(log_level);
    if (lvl < 0)
        return usage_error("--log-level '%s' must be error, warn, info or debug", log_level);
    gs_log_set_level((gs_log_level)lvl);
    signal(SIGPIPE, SIG_IGN);
    if (url) {
        if (o.config)
            return usage_error("%s", "give either --config (the coordinator) or --url (a node)");
        if (strcmp(verb, "status") != 0)
            return usage_error("'%s' changes the group in the coordinator: use --config FILE",
                               verb);
        if (!db)
            return usage_error("%s", "--url needs --db ID (the database whose group to show)");
        if (o.node || o.group)
            return usage_error("%s", "--node and --group go with --config");
        return run_url(url, db, headers, nheaders, (int)timeout_ms, o.json);
    }
    if (!o.config)
        return usage_error("%s", "--config FILE (or, for status, --url URL --db ID) is required");
    if (db || nheaders)
        return usage_error("%s", "--db and --header go with --url");
    return run_coordinator(&o);
}
