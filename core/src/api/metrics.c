/* Request counters and the /metrics scrape (metrics.h, gs_metrics_*). */
#include "metrics.h"

#include "../db/backup_cycle.h"

#include "../base/alloc.h"
#include "../base/error.h"
#include "../db/cdc.h"
#include "../db/database_internal.h"
#include "ws_message.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef GS_VERSION
#define GS_VERSION "unknown"
#endif

/* The route label of each slot: the pattern, never the raw path or an id. */
static const char *const route_names[GS_METRICS_ROUTE_COUNT] = {
    [GS_METRICS_ROUTE_UNMATCHED] = "unmatched",
    [GS_ROUTE_HEALTH] = "/health",
    [GS_ROUTE_HEALTH_READY] = "/health/ready",
    [GS_ROUTE_CAPABILITIES] = "/capabilities",
    [GS_ROUTE_QUERY] = "/db/{id}/query",
    [GS_ROUTE_EXECUTE] = "/db/{id}/execute",
    [GS_ROUTE_TRANSACTION] = "/db/{id}/transaction",
    [GS_ROUTE_BATCH] = "/db/{id}/batch",
    [GS_ROUTE_LOAD] = "/db/{id}/load",
    [GS_ROUTE_QUERY_NAMED] = "/db/{id}/query/{name}",
    [GS_ROUTE_EXECUTE_NAMED] = "/db/{id}/execute/{name}",
    [GS_ROUTE_CHANGES] = "/db/{id}/changes",
    [GS_ROUTE_MIGRATIONS] = "/db/{id}/migrations",
    [GS_ROUTE_SNAPSHOT] = "/db/{id}/snapshot",
    [GS_ROUTE_SNAPSHOT_PAGE] = "/db/{id}/snapshot/page",
    [GS_ROUTE_BACKUP] = "/db/{id}/backup",
    [GS_ROUTE_BACKUP_STATUS] = "/db/{id}/backup",
    [GS_ROUTE_BACKUP_CHAIN] = "/db/{id}/backup/chain",
    [GS_ROUTE_BACKUP_VERIFY] = "/db/{id}/backup/verify",
    [GS_ROUTE_BACKUP_SAFE_TO_DELETE] = "/db/{id}/backup/safe-to-delete",
    [GS_ROUTE_BACKUP_RESTORE] = "/db/{id}/backup/restore",
    [GS_ROUTE_BACKUP_RESTORE_STATUS] = "/db/{id}/backup/restore",
    [GS_ROUTE_CLUSTER] = "/db/{id}/cluster",
    [GS_ROUTE_STATUS_PAGE] = "/status",
    [GS_ROUTE_STATUS_JSON] = "/status.json",
    [GS_METRICS_ROUTE_PREFLIGHT] = "preflight",
    [GS_METRICS_ROUTE_METRICS] = "/metrics",
};

/* The one method each route slot answers, so the duration histogram stays unique where two
 * routes share a pattern (GET and POST /db/{id}/backup). */
static const char *const route_methods[GS_METRICS_ROUTE_COUNT] = {
    [GS_METRICS_ROUTE_UNMATCHED] = "any",
    [GS_ROUTE_HEALTH] = "GET",
    [GS_ROUTE_HEALTH_READY] = "GET",
    [GS_ROUTE_CAPABILITIES] = "GET",
    [GS_ROUTE_QUERY] = "POST",
    [GS_ROUTE_EXECUTE] = "POST",
    [GS_ROUTE_TRANSACTION] = "POST",
    [GS_ROUTE_BATCH] = "POST",
    [GS_ROUTE_LOAD] = "POST",
    [GS_ROUTE_QUERY_NAMED] = "POST",
    [GS_ROUTE_EXECUTE_NAMED] = "POST",
    [GS_ROUTE_CHANGES] = "POST",
    [GS_ROUTE_MIGRATIONS] = "POST",
    [GS_ROUTE_SNAPSHOT] = "POST",
    [GS_ROUTE_SNAPSHOT_PAGE] = "POST",
    [GS_ROUTE_BACKUP] = "POST",
    [GS_ROUTE_BACKUP_STATUS] = "GET",
    [GS_ROUTE_BACKUP_CHAIN] = "GET",
    [GS_ROUTE_BACKUP_VERIFY] = "POST",
    [GS_ROUTE_BACKUP_SAFE_TO_DELETE] = "POST",
    [GS_ROUTE_BACKUP_RESTORE] = "POST",
    [GS_ROUTE_BACKUP_RESTORE_STATUS] = "GET",
    [GS_ROUTE_CLUSTER] = "GET",
    [GS_ROUTE_STATUS_PAGE] = "GET",
    [GS_ROUTE_STATUS_JSON] = "GET",
    [GS_METRICS_ROUTE_PREFLIGHT] = "OPTIONS",
    [GS_METRICS_ROUTE_METRICS] = "GET",
};

static const char *const method_names[] = {"GET",    "HEAD",  "POST",    "PUT",
                                           "DELETE", "PATCH", "OPTIONS", "other"};
#define NMETHODS (sizeof method_names / sizeof method_names[0])

/* Status slots: the codes this server answers, then one per class for any other. */
static const int status_codes[] = {200, 201, 204, 400, 401, 403, 404, 405, 408, 409,
                                   413, 415, 422, 429, 500, 501, 502, 503, 504};
#define NCODES (sizeof status_codes / sizeof status_codes[0])
static const char *const status_classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};
#define NSTATUS (NCODES + sizeof status_classes / sizeof status_classes[0])

/* Request duration buckets, in seconds. */
static const double latency_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define NBOUNDS (sizeof latency_bounds / sizeof latency_bounds[0])

static const char *const ws_types[] = {"invalid",     "query",       "execute",
                                       "transaction", "batch",       "load",
                                       "subscribe",   "unsubscribe", "ack"};
#define NWSTYPES (sizeof ws_types / sizeof ws_types[0])

struct gs_metrics {
    int authenticate;
    int64_t started_ns;
    _Atomic uint64_t requests[GS_METRICS_ROUTE_COUNT][NMETHODS][NSTATUS];
    _Atomic uint64_t latency[GS_METRICS_ROUTE_COUNT][NBOUNDS + 1];
    _Atomic uint64_t latency_sum_ns[GS_METRICS_ROUTE_COUNT];
    _Atomic uint64_t ws[NWSTYPES][2]; /* [type][accepted] */
};

int64_t gs_metrics_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

gs_metrics *gs_metrics_new(int authenticate)
{
    gs_metrics *m = gs_calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->authenticate = authenticate;
    m->started_ns = gs_metrics_now_ns();
    return m;
}

void gs_metrics_free(gs_metrics *m)
{
    gs_free(m);
}

int gs_metrics_authenticate(const gs_metrics *m)
{
    return m->authenticate;
}

int gs_metrics_method(const char *method)
{
    for (size_t i = 0; method && i + 1 < NMETHODS; i++)
        if (strcmp(method, method_names[i]) == 0)
            return (int)i;
    return (int)NMETHODS - 1;
}

static size_t status_slot(int status)
{
    for (size_t i = 0; i < NCODES; i++)
        if (status_codes[i] == status)
            return i;
    if (status >= 100 && status < 600)
        return NCODES + (size_t)(status / 100 - 1);
    return NSTATUS - 1;
}

void gs_metrics_http(gs_metrics *m, int route, int method, int status, int64_t duration_ns)
{
    if (!m)
        return;
    if (route < 0 || route >= GS_METRICS_ROUTE_COUNT)
        route = GS_METRICS_ROUTE_UNMATCHED;
    if (method < 0 || method >= (int)NMETHODS)
        method = (int)NMETHODS - 1;
    if (duration_ns < 0)
        duration_ns = 0;
    atomic_fetch_add_explicit(&m->requests[route][method][status_slot(status)], 1,
                              memory_order_relaxed);
    double s = (double)duration_ns / 1e9;
    size_t slot = 0;
    while (slot < NBOUNDS && s > latency_bounds[slot])
        slot++;
    atomic_fetch_add_explicit(&m->latency[route][slot], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_sum_ns[route], (uint64_t)duration_ns,
                              memory_order_relaxed);
}

const char *gs_metrics_route_name(int route)
{
    return route >= 0 && route < GS_METRICS_ROUTE_COUNT ? route_names[route] : NULL;
}

const char *gs_metrics_route_method(int route)
{
    return route >= 0 && route < GS_METRICS_ROUTE_COUNT && route_methods[route]
               ? route_methods[route]
               : "any";
}

uint64_t gs_metrics_route_total(gs_metrics *m, int route)
{
    if (!m || route < 0 || route >= GS_METRICS_ROUTE_COUNT)
        return 0;
    uint64_t total = 0;
    for (size_t me = 0; me < NMETHODS; me++)
        for (size_t st = 0; st < NSTATUS; st++)
            total += atomic_load_explicit(&m->requests[route][me][st], memory_order_relaxed);
    return total;
}

double gs_metrics_uptime_s(const gs_metrics *m)
{
    return m ? (double)(gs_metrics_now_ns() - m->started_ns) / 1e9 : 0;
}

void gs_metrics_ws(gs_metrics *m, int type, int accepted)
{
    if (!m)
        return;
    if (type < 0 || type >= (int)NWSTYPES)
        type = 0;
    atomic_fetch_add_explicit(&m->ws[type][accepted ? 1 : 0], 1, memory_order_relaxed);
}

/* ---- the scrape ---- */

typedef struct db_snap {
    char *id;
    gs_db_stats stats;
    int64_t pending;
    int subscribers;
    double size_bytes, wal_bytes;
    int has_backup; /* the database runs a backup cycle (backup_cycle.h) */
    gs_backup_metrics backup;
    int has_log; /* the database has a measured change log (cdc.h) */
    gs_change_log_stats log;
} db_snap;

typedef struct db_list {
    db_snap *items;
    size_t count, cap;
    int oom;
} db_list;

static double file_size(const char *path, const char *suffix)
{
    char p[4096];
    if (!path || strcmp(path, ":memory:") == 0)
        return 0;
    if ((size_t)snprintf(p, sizeof p, "%s%s", path, suffix) >= sizeof p)
        return 0;
    struct stat st;
    return stat(p, &st) == 0 ? (double)st.st_size : 0;
}

static void snap_one(void *user, gs_database *db)
{
    db_list *l = user;
    if (l->oom)
        return;
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        db_snap *n = gs_realloc(l->items, cap * sizeof *n);
        if (!n) {
            l->oom = 1;
            return;
        }
        l->items = n;
        l->cap = cap;
    }
    db_snap *s = &l->items[l->count];
    memset(s, 0, sizeof *s);
    if (!(s->id = gs_strdup(gs_db_id(db)))) {
        l->oom = 1;
        return;
    }
    gs_db_get_stats(db, &s->stats);
    s->pending = gs_db_pending_writes(db);
    s->subscribers = gs_db_cdc_subscriber_count(db);
    s->size_bytes = file_size(gs_db_path(db), "");
    s->wal_bytes = file_size(gs_db_path(db), "-wal");
    gs_error lerr;
    s->has_log = gs_db_change_log_stats(db, &s->log, &lerr) == GS_OK && s->log.changes >= 0;
    gs_backup_cycle *bc = gs_db_backup_cycle(db);
    if (bc) {
        s->has_backup = 1;
        gs_backup_cycle_metrics(bc, &s->backup);
    }
    l->count++;
}

static double resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    unsigned long long size = 0, rss = 0;
    int got = fscanf(f, "%llu %llu", &size, &rss);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return got == 2 && page > 0 ? (double)rss * (double)page : 0;
}

static void render_http(gs_metrics *m, gs_buf *b)
{
    static const char *const keys[] = {"route", "method", "status"};
    char code[8];
    gs_prom_family(b, "gatestream_http_requests_total", "counter",
                   "HTTP requests answered, by route pattern, method and status.");
    for (size_t r = 0; r < GS_METRICS_ROUTE_COUNT; r++)
        for (size_t me = 0; me < NMETHODS; me++)
            for (size_t st = 0; st < NSTATUS; st++) {
                uint64_t v = atomic_load_explicit(&m->requests[r][me][st], memory_order_relaxed);
                if (!v)
                    continue;
                const char *status = st < NCODES ? code : status_classes[st - NCODES];
                if (st < NCODES)
                    snprintf(code, sizeof code, "%d", status_codes[st]);
                const char *vals[] = {route_names[r], method_names[me], status};
                gs_prom_sample(b, "gatestream_http_requests_total", keys, vals, 3, (double)v);
            }

    static const char *const rkey[] = {"route", "method"};
    gs_prom_family(b, "gatestream_http_request_duration_seconds", "histogram",
                   "Time from a request's arrival in the api layer to its answer, by route "
                   "pattern and method.");
    for (size_t r = 0; r < GS_METRICS_ROUTE_COUNT; r++) {
        uint64_t counts[NBOUNDS + 1], total = 0;
        for (size_t i = 0; i <= NBOUNDS; i++)
            total += counts[i] = atomic_load_explicit(&m->latency[r][i], memory_order_relaxed);
        if (!total)
            continue;
        double sum =
            (double)atomic_load_explicit(&m->latency_sum_ns[r], memory_order_relaxed) / 1e9;
        const char *vals[] = {route_names[r], route_methods[r] ? route_methods[r] : "any"};
        gs_prom_histogram(b, "gatestream_http_request_duration_seconds", rkey, vals, 2,
                          latency_bounds, counts, NBOUNDS, sum);
    }

    static const char *const wkeys[] = {"type", "outcome"};
    gs_prom_family(b, "gatestream_ws_messages_total", "counter",
                   "WebSocket messages received, by message type and whether they were "
                   "accepted or refused with an error frame.");
    for (size_t t = 0; t < NWSTYPES; t++)
        for (int a = 1; a >= 0; a--) {
            uint64_t v = atomic_load_explicit(&m->ws[t][a], memory_order_relaxed);
            if (!v)
                continue;
            const char *vals[] = {ws_types[t], a ? "accepted" : "refused"};
            gs_prom_sample(b, "gatestream_ws_messages_total", wkeys, vals, 2, (double)v);
        }
}

/* The backup cycles' outcomes and durations (databases opened with backups; no family at all
 * when none has backups, so every family printed carries series). */
static void render_backups(const db_list *l, gs_buf *b)
{
    size_t with = 0;
    for (size_t i = 0; i < l->count; i++)
        with += l->items[i].has_backup != 0;
    if (!with)
        return;
    static const char *const kinds[] = {"full", "change"};
    static const char *const okeys[] = {"db", "outcome"};
    static const char *const kkeys[] = {"db", "kind"};
    gs_prom_family(b, "gatestream_backup_turns_total", "counter",
                   "Backup cycle outcomes: runs written (full copies and change pieces), turns "
                   "that failed, and scheduled turns skipped while one ran.");
    for (size_t i = 0; i < l->count; i++) {
        const db_snap *s = &l->items[i];
        if (!s->has_backup)
            continue;
        const char *outcome[] = {"full", "change", "failed", "skipped"};
        double v[] = {(double)s->backup.runs[0], (double)s->backup.runs[1],
                      (double)s->backup.failures, (double)s->backup.skips};
        for (size_t k = 0; k < 4; k++)
            gs_prom_sample(b, "gatestream_backup_turns_total", okeys,
                           (const char *const[]){s->id, outcome[k]}, 2, v[k]);
    }
    gs_prom_family(b, "gatestream_backup_run_duration_seconds", "histogram",
                   "Duration of each backup run written (copy or capture, then transfer), by "
                   "kind.");
    for (size_t i = 0; i < l->count; i++) {
        const db_snap *s = &l->items[i];
        if (!s->has_backup)
            continue;
        for (size_t k = 0; k < 2; k++)
            gs_prom_histogram(b, "gatestream_backup_run_duration_seconds", kkeys,
                              (const char *const[]){s->id, kinds[k]}, 2, gs_backup_duration_bounds,
                              s->backup.duration[k], GS_BACKUP_DURATION_BOUNDS,
                              s->backup.duration_sum[k]);
    }
    static const char *const dkey[] = {"db"};
    gs_prom_family(b, "gatestream_backup_last_success_timestamp_seconds", "gauge",
                   "When the last backup run of the database was stored (0: none yet).");
    for (size_t i = 0; i < l->count; i++) {
        const db_snap *s = &l->items[i];
        if (s->has_backup)
            gs_prom_sample(b, "gatestream_backup_last_success_timestamp_seconds", dkey,
                           (const char *const[]){s->id}, 1,
                           (double)s->backup.last_success_ms / 1000.0);
    }
}

/* The change log's size and retention (cdc.h), for databases whose log was measured. */
static void render_log(const db_list *l, gs_buf *b)
{
    static const char *const dkey[] = {"db"};
    static const struct {
        const char *name, *type, *help;
        size_t off;
    } fam[] = {
        {"gatestream_repl_log_changes", "gauge",
         "Rows in the change log (replication and CDC), at the last retention pass.",
         offsetof(gs_change_log_stats, changes)},
        {"gatestream_repl_log_bytes", "gauge",
         "Estimated size of the change log in bytes (its rows' text lengths plus 32 per row), "
         "at the last retention pass.",
         offsetof(gs_change_log_stats, bytes)},
        {"gatestream_repl_log_max_bytes", "gauge",
         "The change log's size bound, databases[].cdc.max_log_bytes (0 = unbounded).",
         offsetof(gs_change_log_stats, max_bytes)},
        {"gatestream_repl_log_pruned_seq", "gauge",
         "The highest seq retention deleted; a replica behind it resyncs.",
         offsetof(gs_change_log_stats, pruned_seq)},
        {"gatestream_repl_log_compacted_total", "counter",
         "Changes deleted by compaction (superseded by a later change to the same row) since "
         "the database opened.",
         offsetof(gs_change_log_stats, compacted_total)},
        {"gatestream_repl_log_pruned_total", "counter",
         "Changes pruned past the size bound while a replica still needed them, since the "
         "database opened.",
         offsetof(gs_change_log_stats, forced_total)},
    };
    int any = 0;
    for (size_t i = 0; i < l->count; i++)
        any |= l->items[i].has_log;
    if (!any)
        return;
    for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        gs_prom_family(b, fam[f].name, fam[f].type, fam[f].help);
        for (size_t i = 0; i < l->count; i++) {
            if (!l->items[i].has_log)
                continue;
            int64_t v;
            memcpy(&v, (const char *)&l->items[i].log + fam[f].off, sizeof v);
            gs_prom_sample(b, fam[f].name, dkey, (const char *const[]){l->items[i].id}, 1,
                           (double)v);
        }
    }
}

static void render_dbs(const db_list *l, gs_buf *b)
{
    static const char *const keys[] = {"db"};
    gs_prom_family(b, "gatestream_db_writes_total", "counter",
                   "Write units the database's writer has run.");
    for (size_t i = 0; i < l->count; i++)
        gs_prom_sample(b, "gatestream_db_writes_total", keys, (const char *const[]){l->items[i].id},
                       1, (double)l->items[i].stats.writes);
    gs_prom_family(b, "gatestream_db_queries_total", "counter",
                   "Queries the database accepted onto a reader or its writer.");
    for (size_t i = 0; i < l->count; i++)
        gs_prom_sample(b, "gatestream_db_queries_total", keys,
                       (const char *const[]){l->items[i].id}, 1, (double)l->items[i].stats.queries);
    gs_prom_family(b, "gatestream_db_group_commit_size", "histogram",
                   "Units per writer transaction (group commit); a job run alone counts as 1.");
    for (size_t i = 0; i < l->count; i++) {
        const gs_db_stats *s = &l->items[i].stats;
        gs_prom_histogram(b, "gatestream_db_group_commit_size", keys,
                          (const char *const[]){l->items[i].id}, 1, gs_db_group_size_bounds,
                          s->group_size, GS_DB_GROUP_SIZE_BOUNDS,
                          (double)(s->grouped_units + s->alone));
    }
    gs_prom_family(b, "gatestream_db_pending_writes", "gauge",
                   "Writes queued or running on the database's writer.");
    for (size_t i = 0; i < l->count; i++)
        gs_prom_sample(b, "gatestream_db_pending_writes", keys,
                       (const char *const[]){l->items[i].id}, 1, (double)l->items[i].pending);
    gs_prom_family(b, "gatestream_cdc_subscribers", "gauge",
                   "Change-data-capture subscriptions open on the database.");
    for (size_t i = 0; i < l->count; i++)
        gs_prom_sample(b, "gatestream_cdc_subscribers", keys, (const char *const[]){l->items[i].id},
                       1, (double)l->items[i].subscribers);
    gs_prom_family(b, "gatestream_db_size_bytes", "gauge",
                   "Size of the database file at scrape time.");
    for (size_t i = 0; i < l->count; i++)
        gs_prom_sample(b, "gatestream_db_size_bytes", keys, (const char *const[]){l->items[i].id},
                       1, l->items[i].size_bytes);
    gs_prom_family(b, "gatestream_db_wal_size_bytes", "gauge",
                   "Size of the database's write-ahead log file at scrape time (0 when absent).");
    for (size_t i = 0; i < l->count; i++)
        gs_prom_sample(b, "gatestream_db_wal_size_bytes", keys,
                       (const char *const[]){l->items[i].id}, 1, l->items[i].wal_bytes);
    render_log(l, b);
    render_backups(l, b);
}

gs_status gs_metrics_render(gs_metrics *m, gs_registry *reg, gs_buf *b, gs_error *err)
{
    db_list l = {0};
    if (reg)
        gs_registry_each(reg, snap_one, &l);
    if (!l.oom) {
        render_http(m, b);
        render_dbs(&l, b);
        static const char *const vkey[] = {"version"};
        static const char *const vval[] = {GS_VERSION};
        gs_prom_family(b, "gatestream_build_info", "gauge",
                       "Always 1; the version label says which gatestream build answers.");
        gs_prom_sample(b, "gatestream_build_info", vkey, vval, 1, 1);
        gs_prom_family(b, "process_resident_memory_bytes", "gauge",
                       "Resident memory size in bytes.");
        gs_prom_sample(b, "process_resident_memory_bytes", NULL, NULL, 0, resident_bytes());
        gs_prom_family(b, "gatestream_uptime_seconds", "gauge",
                       "Seconds since the api layer started.");
        gs_prom_sample(b, "gatestream_uptime_seconds", NULL, NULL, 0,
                       (double)(gs_metrics_now_ns() - m->started_ns) / 1e9);
    }
    for (size_t i = 0; i < l.count; i++)
        gs_free(l.items[i].id);
    gs_free(l.items);
    if (l.oom || b->oom)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory while rendering metrics");
    return GS_OK;
}
