/*
 * GET /status.json: the status document drawn by the status page (status.h).
 *
 * The shape (stable: fields are only ever added; seqs and counts are JSON numbers, times are
 * milliseconds unless the name says otherwise, null means "not known here"):
 *
 * {
 *   "node": {
 *     "id": "node-a",               node.id ("" when unset)
 *     "version": "0.1.0",
 *     "role": "primary",            primary | replica | mixed (databases differ) | standalone
 *     "startedAt": 1790000000000,   Unix ms when the api started
 *     "now": 1790000012345,         Unix ms when this document was built
 *     "uptimeSeconds": 12.3
 *   },
 *   "requests": null | {            null when the request counters are off
 *     "total": 1234,                HTTP answers since start, every route
 *     "routes": [ {"route": "/db/{id}/query", "method": "POST", "count": 1000}, ... ]
 *   },                              only routes answered at least once, in route order
 *   "databases": [ {
 *     "id": "main", "readOnly": false, "closed": false,
 *     "log": {                      the change log _sirannon_changes, from memory
 *       "lastSeq": 42 | null,       highest committed seq (replicated databases)
 *       "prunedSeq": 0,             retention deleted every seq <= this
 *       "rows": 42 | null,          lastSeq - prunedSeq
 *       "bytes": 1234 | null,       estimated size at the last retention pass (null before)
 *       "maxBytes": 1073741824 | null   the bound (cdc.max_log_bytes; null = none)
 *     },
 *     "sources": [ {"database", "id", "endpoint", "tables": "a,b_*", "state",
 *                   "positionSeq": "17", "lagChanges": null, "lagMs", "lastError",
 *                   "rowsBootstrapped", "bootstraps", "changesApplied"} ]
 *                                   the sources following remote tables into this database
 *                                   (core/src/source/source.h: lagMs is the time since the
 *                                   last change applied, -1 before any; the remote reports no
 *                                   head, so lagChanges is null)
 *     "replication": null | {       null when the database does not replicate
 *       "role": "primary" | "replica", "coordinated": false,
 *       "phase": "pending" | "syncing" | "catching-up" | "ready",
 *       "health": "healthy" | "syncing" | "unavailable" | ...,
 *       "position": 42,             primary: committed seq; replica: applied from the primary
 *       "writeForwarding": true,
 *       "lastError": null | {"code", "message"},
 *       "counters": {"batchesSent", "batchesReceived", "batchesApplied", "retransmits",
 *                    "rejected", "changesApplied", "conflicts"},
 *       "peers": [ {
 *         "id": "node-b", "role": "replica", "connected": true, "inSync": true,
 *         "lastAckedSeq": 42 | null, "lastSentSeq": 42 | null, "pendingBatches": 0 | null,
 *         "lagChanges": 0 | null, "lagMs": 0 | null,   null where this node does not send
 *         "connectedForMs": 5000 | null
 *       } ],
 *       "tableModes": [ {"table", "mode"} ],      the rules as configured, then
 *                                   {"table": "*", ...} for unlisted tables; [] without
 *       "sync": null | {"role": "joiner", "peer", "tablesDone", "tablesTotal",
 *                       "rows", "bytes", "etaMs" | null}  while this node runs a first sync
 *     }
 *   } ]
 * }
 *
 * inSync: coordinator mode: the group state lists the peer in its in-sync set; static mode:
 * connected, positioned, and behind by at most replication.max_sync_lag_before_ready changes.
 * Request rates are computed by the page from two successive documents (count delta / time
 * delta), so the server keeps no time windows.
 */
#include "status.h"

#include "../base/error.h"
#include "../repl/repl_status.h"

#include <string.h>
#include <time.h>

/* The page, generated at build time from status_page.html (CMakeLists.txt). */
extern const unsigned char gs_status_page_html_data[];
extern const size_t gs_status_page_html_size;

const char *gs_status_page_html(size_t *len)
{
    *len = gs_status_page_html_size;
    return (const char *)gs_status_page_html_data;
}

int64_t gs_status_now_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct dbs_walk {
    gs_buf *b;
    size_t count;
    const char *role; /* the node's role so far: NULL (no replicated database yet) */
    int mixed;
    const gs_status_node *node; /* may be NULL */
} dbs_walk;

static void put_bool(gs_buf *b, const char *key, int v)
{
    gs_buf_printf(b, ",\"%s\":%s", key, v ? "true" : "false");
}

static void one_db(void *user, gs_database *db)
{
    dbs_walk *w = user;
    gs_buf *b = w->b;
    if (w->count++)
        gs_buf_putc(b, ',');
    const char *id = gs_db_id(db);
    gs_buf_puts(b, "{\"id\":");
    gs_buf_json_string(b, id, strlen(id));
    put_bool(b, "readOnly", gs_db_is_read_only(db));
    put_bool(b, "closed", gs_db_is_closed(db));
    gs_buf_puts(b, ",\"log\":");
    gs_repl_status_log(db, b);
    gs_buf_puts(b, ",\"sources\":");
    if (w->node && w->node->sources_json)
        w->node->sources_json(w->node->sources_user, id, b);
    else
        gs_buf_puts(b, "[]");
    gs_buf_puts(b, ",\"replication\":");
    gs_repl_engine *e = gs_db_repl(db);
    if (!e) {
        gs_buf_puts(b, "null}");
        return;
    }
    const char *role = NULL;
    gs_buf_putc(b, '{');
    gs_repl_status_summary(e, b, &role);
    gs_buf_puts(b, ",\"peers\":");
    gs_repl_status_peers(e, b);
    gs_buf_puts(b, ",\"tableModes\":");
    gs_repl_status_table_modes(e, b);
    gs_buf_puts(b, ",\"sync\":");
    gs_repl_status_sync(e, b);
    gs_buf_puts(b, "}}");
    if (!w->role)
        w->role = role;
    else if (strcmp(w->role, role) != 0)
        w->mixed = 1;
}

static void put_requests(gs_metrics *m, gs_buf *b)
{
    if (!m) {
        gs_buf_puts(b, "null");
        return;
    }
    uint64_t total = 0;
    int first = 1;
    gs_buf_puts(b, "{\"routes\":[");
    for (int r = 0; r < GS_METRICS_ROUTE_COUNT; r++) {
        uint64_t n = gs_metrics_route_total(m, r);
        if (!n)
            continue;
        total += n;
        const char *name = gs_metrics_route_name(r);
        if (!name)
            continue;
        gs_buf_puts(b, first ? "{\"route\":" : ",{\"route\":");
        first = 0;
        gs_buf_json_string(b, name, strlen(name));
        gs_buf_printf(b, ",\"method\":\"%s\",\"count\":%llu}", gs_metrics_route_method(r),
                      (unsigned long long)n);
    }
    gs_buf_printf(b, "],\"total\":%llu}", (unsigned long long)total);
}

gs_status gs_status_json(gs_registry *reg, const gs_status_node *node, gs_metrics *m, gs_buf *b,
                         gs_error *err)
{
    /* The databases come first into a buffer of their own: the node's role depends on them. */
    gs_buf dbs;
    gs_buf_init(&dbs);
    dbs_walk w = {.b = &dbs, .node = node};
    gs_buf_putc(&dbs, '[');
    if (reg)
        gs_registry_each(reg, one_db, &w);
    gs_buf_putc(&dbs, ']');

    int64_t now = gs_status_now_unix_ms();
    const char *id = node && node->id ? node->id : "";
    const char *version = node && node->version ? node->version : "";
    int64_t started = node ? node->started_unix_ms : 0;
    const char *role = w.mixed ? "mixed" : w.role ? w.role : "standalone";
    gs_buf_puts(b, "{\"node\":{\"id\":");
    gs_buf_json_string(b, id, strlen(id));
    gs_buf_puts(b, ",\"version\":");
    gs_buf_json_string(b, version, strlen(version));
    gs_buf_printf(b, ",\"role\":\"%s\",\"startedAt\":%lld,\"now\":%lld,\"uptimeSeconds\":", role,
                  (long long)started, (long long)now);
    gs_buf_json_double(b, started > 0 && now > started ? (double)(now - started) / 1000.0 : 0);
    gs_buf_puts(b, "},\"requests\":");
    put_requests(m, b);
    gs_buf_puts(b, ",\"databases\":");
    if (!dbs.oom)
        gs_buf_append(b, dbs.data, dbs.len);
    gs_buf_putc(b, '}');
    int oom = dbs.oom || b->oom;
    gs_buf_free(&dbs);
    if (oom)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory building the status document");
    return GS_OK;
}
