#include "hlc.h"

#include "base/text.h"
#include "base/error.h"
#include "base/log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char META_KEY[] = "hlc_clock";

size_t gs_hlc_encode(int64_t wall_ms, uint32_t logical, const char *node_id, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    const char *node = node_id ? node_id : "";
    size_t nlen = strlen(node);
    /* every stamp a clock makes has 12 and 4 digits: written directly (one is made per write);
     * anything else, or a buffer too small, takes printf's exact rules */
    if (wall_ms < 0 || (uint64_t)wall_ms > 0xffffffffffffULL || logical > 0xffff ||
        18 + nlen >= cap) {
        int n = snprintf(out, cap, "%012llx-%04x-%s", (unsigned long long)wall_ms,
                         (unsigned)logical, node);
        return n < 0 ? 0 : (size_t)n;
    }
    uint64_t w = (uint64_t)wall_ms;
    for (int i = 11; i >= 0; i--, w >>= 4)
        out[i] = hex[w & 15];
    out[12] = '-';
    for (int i = 16; i >= 13; i--, logical >>= 4)
        out[i] = hex[logical & 15];
    out[17] = '-';
    memcpy(out + 18, node, nlen + 1);
    return 18 + nlen;
}

/* Parse len hex digits (1..max) into *out. */
static int parse_hex(const char *s, size_t len, size_t max, uint64_t *out)
{
    if (len < 1 || len > max)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        int d = gs_hex_value(s[i]);
        if (d < 0)
            return -1;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

gs_status gs_hlc_decode(const char *s, gs_hlc_ts *out, gs_error *err)
{
    if (!s)
        return gs_error_set(err, 0, "REPLICATION_ERROR", "invalid HLC: no value");
    const char *d1 = strchr(s, '-');
    const char *d2 = d1 ? strchr(d1 + 1, '-') : NULL;
    if (!d2)
        return gs_error_set(err, 0, "REPLICATION_ERROR",
                            "invalid HLC '%.80s': expected {wallMs hex}-{logical hex}-{nodeId}", s);
    uint64_t wall, logical;
    if (parse_hex(s, (size_t)(d1 - s), 13, &wall) != 0)
        return gs_error_set(err, 0, "REPLICATION_ERROR",
                            "invalid HLC '%.80s': the wall clock part is not 1 to 13 hex digits",
                            s);
    if (parse_hex(d1 + 1, (size_t)(d2 - d1 - 1), 4, &logical) != 0)
        return gs_error_set(err, 0, "REPLICATION_ERROR",
                            "invalid HLC '%.80s': the logical part is not 1 to 4 hex digits", s);
    out->wall_ms = (int64_t)wall;
    out->logical = (uint32_t)logical;
    out->node_id = d2 + 1;
    out->node_len = strlen(d2 + 1);
    return GS_OK;
}

int gs_hlc_compare(const char *a, const char *b)
{
    int c = strcmp(a, b);
    return c < 0 ? -1 : c > 0 ? 1 : 0;
}

int64_t gs_hlc_physical_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t default_time(void *user)
{
    (void)user;
    return gs_hlc_physical_ms();
}

gs_status gs_hlc_init(gs_hlc *c, const char *node_id, int64_t max_drift_ms, gs_error *err)
{
    memset(c, 0, sizeof *c);
    if (!node_id)
        node_id = "";
    if (strlen(node_id) > GS_HLC_MAX_NODE_ID)
        return gs_error_set(err, 0, "REPLICATION_ERROR",
                            "node id is %zu bytes long; an HLC node id may hold at most %d",
                            strlen(node_id), GS_HLC_MAX_NODE_ID);
    pthread_mutex_init(&c->mu, NULL);
    snprintf(c->node_id, sizeof c->node_id, "%s", node_id);
    c->max_drift_ms = max_drift_ms;
    c->time_fn = default_time;
    return GS_OK;
}

void gs_hlc_destroy(gs_hlc *c)
{
    pthread_mutex_destroy(&c->mu);
}

void gs_hlc_set_time_source(gs_hlc *c, gs_hlc_time_fn fn, void *user)
{
    pthread_mutex_lock(&c->mu);
    c->time_fn = fn ? fn : default_time;
    c->time_user = fn ? user : NULL;
    pthread_mutex_unlock(&c->mu);
}

void gs_hlc_set_max_drift(gs_hlc *c, int64_t max_drift_ms)
{
    pthread_mutex_lock(&c->mu);
    c->max_drift_ms = max_drift_ms;
    pthread_mutex_unlock(&c->mu);
}

static gs_status overflow(gs_error *err)
{
    return gs_error_set(err, 0, "REPLICATION_ERROR",
                        "HLC overflow: more than 65536 timestamps within one millisecond of the "
                        "clock; retry once the wall clock has advanced");
}

gs_status gs_hlc_now(gs_hlc *c, char out[GS_HLC_MAX_LEN], gs_error *err)
{
    pthread_mutex_lock(&c->mu);
    int64_t physical = c->time_fn(c->time_user);
    int64_t wall = c->wall_ms;
    uint32_t logical;
    if (physical > wall) {
        wall = physical;
        logical = 0;
    } else {
        logical = c->logical + 1;
    }
    if (logical > GS_HLC_MAX_LOGICAL) {
        pthread_mutex_unlock(&c->mu);
        return overflow(err);
    }
    c->wall_ms = wall;
    c->logical = logical;
    gs_hlc_encode(wall, logical, c->node_id, out, GS_HLC_MAX_LEN);
    pthread_mutex_unlock(&c->mu);
    return GS_OK;
}

gs_status gs_hlc_receive(gs_hlc *c, const char *remote, char out[GS_HLC_MAX_LEN], gs_error *err)
{
    gs_hlc_ts r;
    if (gs_hlc_decode(remote, &r, err) != GS_OK)
        return GS_ERROR;
    pthread_mutex_lock(&c->mu);
    int64_t physical = c->time_fn(c->time_user);
    if (c->max_drift_ms > 0 && r.wall_ms > physical && r.wall_ms - physical > c->max_drift_ms) {
        int64_t ahead = r.wall_ms - physical;
        int64_t max = c->max_drift_ms;
        pthread_mutex_unlock(&c->mu);
        return gs_error_set(err, 0, "BATCH_VALIDATION_ERROR",
                            "clock drift too high: the remote HLC is %lld ms ahead of this node's "
                            "clock (max %lld ms); check the clocks of both nodes",
                            (long long)ahead, (long long)max);
    }
    int64_t wall = c->wall_ms;
    uint32_t logical = c->logical;
    int64_t top = wall > r.wall_ms ? wall : r.wall_ms;
    if (physical > top) {
        wall = physical;
        logical = 0;
    } else if (r.wall_ms > wall) {
        wall = r.wall_ms;
        logical = r.logical + 1;
    } else if (wall > r.wall_ms) {
        logical = logical + 1;
    } else {
        logical = (logical > r.logical ? logical : r.logical) + 1;
    }
    if (logical > GS_HLC_MAX_LOGICAL) {
        pthread_mutex_unlock(&c->mu);
        return overflow(err);
    }
    c->wall_ms = wall;
    c->logical = logical;
    gs_hlc_encode(wall, logical, c->node_id, out, GS_HLC_MAX_LEN);
    pthread_mutex_unlock(&c->mu);
    return GS_OK;
}

gs_status gs_hlc_observe(gs_hlc *c, const char *stamp, gs_error *err)
{
    gs_hlc_ts t;
    if (gs_hlc_decode(stamp, &t, err) != GS_OK)
        return GS_ERROR;
    pthread_mutex_lock(&c->mu);
    if (t.wall_ms > c->wall_ms || (t.wall_ms == c->wall_ms && t.logical > c->logical)) {
        c->wall_ms = t.wall_ms;
        c->logical = t.logical;
    }
    pthread_mutex_unlock(&c->mu);
    return GS_OK;
}

void gs_hlc_current(gs_hlc *c, char out[GS_HLC_MAX_LEN])
{
    pthread_mutex_lock(&c->mu);
    gs_hlc_encode(c->wall_ms, c->logical, c->node_id, out, GS_HLC_MAX_LEN);
    pthread_mutex_unlock(&c->mu);
}

int64_t gs_hlc_drift_ms(gs_hlc *c, const char *remote)
{
    gs_hlc_ts r;
    gs_error e;
    if (gs_hlc_decode(remote, &r, &e) != GS_OK)
        return -1;
    pthread_mutex_lock(&c->mu);
    int64_t physical = c->time_fn(c->time_user);
    pthread_mutex_unlock(&c->mu);
    return r.wall_ms > physical ? r.wall_ms - physical : physical - r.wall_ms;
}

/* ---- persistence ---- */

static int table_exists(gs_conn *conn, const char *name)
{
    sqlite3_stmt *st = NULL;
    int found = 0;
    if (sqlite3_prepare_v2(gs_conn_db(conn),
                           "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        found = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    return found;
}

/* Run a one-column query and observe its text result, if any. */
static gs_status observe_query(gs_hlc *c, gs_conn *conn, const char *sql, gs_error *err)
{
    gs_stmt *st;
    if (gs_conn_prepare(conn, sql, strlen(sql), GS_PREP_TRUSTED, &st, err) != GS_OK)
        return GS_ERROR;
    int rc = gs_conn_step(conn, st, err);
    if (rc == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(gs_stmt_sqlite(st), 0);
        gs_error ignored;
        if (v && v[0] && gs_hlc_observe(c, v, &ignored) != GS_OK)
            gs_log(GS_LOG_WARN, "hlc", "ignoring a malformed stored HLC: %s", ignored.message);
    }
    gs_conn_release(conn, st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? GS_OK : GS_ERROR;
}

gs_status gs_hlc_load(gs_hlc *c, gs_conn *conn, gs_error *err)
{
    if (table_exists(conn, "_sirannon_meta") &&
        observe_query(c, conn, "SELECT value FROM _sirannon_meta WHERE key = 'hlc_clock'", err) !=
            GS_OK)
        return GS_ERROR;
    if (table_exists(conn, "_sirannon_changes") &&
        observe_query(c, conn, "SELECT max(hlc) FROM _sirannon_changes WHERE hlc != ''", err) !=
            GS_OK)
        return GS_ERROR;
    if (table_exists(conn, "_sirannon_column_versions") &&
        observe_query(c, conn, "SELECT max(hlc) FROM _sirannon_column_versions WHERE hlc != ''",
                      err) != GS_OK)
        return GS_ERROR;
    return GS_OK;
}

gs_status gs_hlc_persist(gs_conn *conn, const char *stamp, gs_error *err)
{
    static const char sql[] = "INSERT INTO _sirannon_meta (key, value) VALUES (?1, ?2) "
                              "ON CONFLICT(key) DO UPDATE SET value = excluded.value";
    gs_stmt *st;
    if (gs_conn_prepare(conn, sql, sizeof sql - 1, GS_PREP_TRUSTED, &st, err) != GS_OK)
        return GS_ERROR;
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    sqlite3_bind_text(ss, 1, META_KEY, -1, SQLITE_STATIC);
    sqlite3_bind_text(ss, 2, stamp, -1, SQLITE_STATIC);
    int rc = gs_conn_step(conn, st, err);
    gs_conn_release(conn, st);
    return rc == SQLITE_DONE ? GS_OK : GS_ERROR;
}
