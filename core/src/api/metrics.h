/*
 * Server metrics in the Prometheus text exposition format (version 0.0.4), served as
 * GET /metrics when server.metrics.enabled is true.
 *
 * Two halves:
 *  - the exposition writer (gs_prom_*): appends HELP/TYPE lines, samples with escaped label
 *    values and cumulative histograms to a gs_buf. Pure; any thread.
 *  - the request counters (gs_metrics): fixed arrays of atomics indexed by route, method and
 *    status (HTTP) or message type and outcome (WebSocket), updated lock-free with relaxed
 *    atomics and no allocation on the request path (any I/O or database thread), and read by
 *    gs_metrics_render at scrape time, which also reads each open database's counters
 *    (gs_db_get_stats), its pending writes, CDC subscribers, file sizes and change log size
 *    (gs_db_change_log_stats).
 *
 * Ownership: gs_metrics_new allocates the counters once; gs_metrics_free releases them. The
 * registry passed to gs_metrics_render is borrowed.
 */
#ifndef GS_API_METRICS_H
#define GS_API_METRICS_H

#include "../base/buf.h"
#include "../db/registry.h"
#include "route.h"

#include <gatestream/abi.h>
#include <stddef.h>
#include <stdint.h>

/* ---- exposition writer ---- */

/** Append a label value escaped per the format: backslash, double quote and newline. */
void gs_prom_escape_label(gs_buf *b, const char *s);

/** Append "# HELP name help" (help escaped: backslash, newline) and "# TYPE name type". */
void gs_prom_family(gs_buf *b, const char *name, const char *type, const char *help);

/**
 * Append one sample line: name{keys[0]="vals[0]",...} value. n may be 0 (no braces).
 * Integral values print without a fraction; infinities as +Inf / -Inf, NaN as NaN.
 */
void gs_prom_sample(gs_buf *b, const char *name, const char *const *keys, const char *const *vals,
                    size_t n, double value);

/**
 * Append a histogram's series: name_bucket{...,le="bound"} for each of nb bounds (ascending)
 * plus le="+Inf", each cumulative, then name_sum and name_count. counts holds nb + 1
 * per-bucket (not cumulative) observations, the last one above every bound.
 */
void gs_prom_histogram(gs_buf *b, const char *name, const char *const *keys,
                       const char *const *vals, size_t n, const double *bounds,
                       const uint64_t *counts, size_t nb, double sum);

/* ---- request counters ---- */

typedef struct gs_metrics gs_metrics;

/** Route slots beyond gs_route_action: a path no route matched, CORS preflight, /metrics. */
enum {
    GS_METRICS_ROUTE_UNMATCHED = 0,
    GS_METRICS_ROUTE_PREFLIGHT = GS_ROUTE_STATUS_JSON + 1,
    GS_METRICS_ROUTE_METRICS,
    GS_METRICS_ROUTE_COUNT
};

/** NULL when out of memory. authenticate: /metrics runs the authenticate hook chain first. */
gs_metrics *gs_metrics_new(int authenticate);
void gs_metrics_free(gs_metrics *m);
int gs_metrics_authenticate(const gs_metrics *m);

/** The method slot of an HTTP method (unknown ones share "other"). */
int gs_metrics_method(const char *method);
/** A monotonic clock in nanoseconds, for request durations. */
int64_t gs_metrics_now_ns(void);

/** Count one HTTP answer: route slot, method slot, status, and its duration. Lock-free. */
void gs_metrics_http(gs_metrics *m, int route, int method, int status, int64_t duration_ns);

/** The route label of a slot (its pattern, e.g. "/db/{id}/query"), or NULL out of range. */
const char *gs_metrics_route_name(int route);
/** The one method a slot answers ("GET", "POST", "OPTIONS"; "any" for unmatched). */
const char *gs_metrics_route_method(int route);
/** HTTP answers counted so far for one route slot, over every method and status (0 out of
 * range). Lock-free; any thread (the status page, status.c). */
uint64_t gs_metrics_route_total(gs_metrics *m, int route);
/** Seconds since gs_metrics_new. */
double gs_metrics_uptime_s(const gs_metrics *m);

/** Count one WebSocket message: its gs_ws_type (0 = unrecognised), accepted or refused. */
void gs_metrics_ws(gs_metrics *m, int type, int accepted);

/**
 * Append every family to b: HTTP and WebSocket counters, per-database counters of reg (NULL:
 * none), build info, resident memory and uptime. GS_ERROR with INTERNAL_ERROR when out of
 * memory (b.oom).
 */
gs_status gs_metrics_render(gs_metrics *m, gs_registry *reg, gs_buf *b, gs_error *err);

#endif
