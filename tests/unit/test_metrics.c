/* The Prometheus exposition writer and the request counters (core/src/api/metrics.c,
 * metrics_text.c). */
#include "../../core/src/api/metrics.h"
#include "../../core/src/base/buf.h"
#include "../../core/src/base/error.h"
#include "../../core/src/db/database.h"
#include "../../core/src/db/registry.h"
#include "test_support.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char tmpdir[64];

static void setup(void)
{
    gs_test_mkdtemp(tmpdir, sizeof tmpdir, "metrics");
}

static void teardown(void)
{
    gs_test_rmtree(tmpdir);
}

TestSuite(metrics, .init = setup, .fini = teardown);

/* b's text as a NUL-terminated string (the buffer keeps its own terminator or not). */
static const char *text(gs_buf *b)
{
    gs_buf_putc(b, '\0');
    b->len--;
    return b->data;
}

Test(metrics, label_escaping)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_prom_escape_label(&b, "a\"b\\c\nd/{id}");
    cr_assert_str_eq(text(&b), "a\\\"b\\\\c\\nd/{id}");
    gs_buf_reset(&b);
    const char *keys[] = {"db", "route"};
    const char *vals[] = {"we\"ird\\id\n", "/db/{id}/query"};
    gs_prom_sample(&b, "x_total", keys, vals, 2, 3);
    cr_assert_str_eq(text(&b), "x_total{db=\"we\\\"ird\\\\id\\n\",route=\"/db/{id}/query\"} 3\n");
    gs_buf_free(&b);
}

Test(metrics, family_and_values)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_prom_family(&b, "up_seconds", "gauge", "line one\nback\\slash");
    cr_assert_str_eq(text(&b),
                     "# HELP up_seconds line one\\nback\\\\slash\n# TYPE up_seconds gauge\n");
    gs_buf_reset(&b);
    gs_prom_sample(&b, "a", NULL, NULL, 0, 42);
    gs_prom_sample(&b, "b", NULL, NULL, 0, 0.25);
    gs_prom_sample(&b, "c", NULL, NULL, 0, 1.0 / 0.0);
    gs_prom_sample(&b, "d", NULL, NULL, 0, -1.0 / 0.0);
    gs_prom_sample(&b, "e", NULL, NULL, 0, 0.0 / 0.0);
    gs_prom_sample(&b, "f", NULL, NULL, 0, 12345678901.0);
    cr_assert_str_eq(text(&b), "a 42\nb 0.25\nc +Inf\nd -Inf\ne NaN\nf 12345678901\n");
    gs_buf_free(&b);
}

Test(metrics, histogram_is_cumulative)
{
    gs_buf b;
    gs_buf_init(&b);
    const double bounds[] = {0.005, 0.1, 1};
    const uint64_t counts[] = {1, 0, 2, 3}; /* the last: above every bound */
    const char *keys[] = {"route"};
    const char *vals[] = {"/health"};
    gs_prom_histogram(&b, "lat_seconds", keys, vals, 1, bounds, counts, 3, 7.5);
    cr_assert_str_eq(text(&b), "lat_seconds_bucket{route=\"/health\",le=\"0.005\"} 1\n"
                               "lat_seconds_bucket{route=\"/health\",le=\"0.1\"} 1\n"
                               "lat_seconds_bucket{route=\"/health\",le=\"1\"} 3\n"
                               "lat_seconds_bucket{route=\"/health\",le=\"+Inf\"} 6\n"
                               "lat_seconds_sum{route=\"/health\"} 7.5\n"
                               "lat_seconds_count{route=\"/health\"} 6\n");
    gs_buf_reset(&b);
    const uint64_t none[] = {0, 0};
    gs_prom_histogram(&b, "h", NULL, NULL, 0, bounds, none, 1, 0);
    cr_assert_str_eq(text(&b), "h_bucket{le=\"0.005\"} 0\nh_bucket{le=\"+Inf\"} 0\nh_sum 0\n"
                               "h_count 0\n");
    gs_buf_free(&b);
}

Test(metrics, request_counters_render)
{
    gs_metrics *m = gs_metrics_new(1);
    cr_assert_not_null(m);
    cr_assert_eq(gs_metrics_authenticate(m), 1);
    int get = gs_metrics_method("GET"), post = gs_metrics_method("POST");
    cr_assert_eq(gs_metrics_method("BREW"), gs_metrics_method(NULL));
    cr_assert_neq(get, post);
    gs_metrics_http(m, GS_ROUTE_QUERY, post, 200, 2000000);     /* 2 ms */
    gs_metrics_http(m, GS_ROUTE_QUERY, post, 200, 300000000);   /* 300 ms */
    gs_metrics_http(m, GS_ROUTE_QUERY, post, 400, 100000);      /* 0.1 ms */
    gs_metrics_http(m, GS_ROUTE_QUERY, post, 599, 20000000000); /* 20 s: above every bound */
    gs_metrics_http(m, GS_METRICS_ROUTE_UNMATCHED, gs_metrics_method("BREW"), 404, 1000);
    gs_metrics_http(m, 9999, get, 200, -5); /* out of range slots and time are clamped */
    gs_metrics_ws(m, 1, 1);
    gs_metrics_ws(m, 0, 0);
    gs_metrics_ws(m, 77, 0);

    gs_buf b;
    gs_buf_init(&b);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_metrics_render(m, NULL, &b, &err), GS_OK);
    const char *t = text(&b);
    cr_assert_not_null(strstr(t, "# TYPE gatestream_http_requests_total counter\n"));
    cr_assert_not_null(strstr(t, "gatestream_http_requests_total{route=\"/db/{id}/query\","
                                 "method=\"POST\",status=\"200\"} 2\n"));
    cr_assert_not_null(strstr(t, "gatestream_http_requests_total{route=\"/db/{id}/query\","
                                 "method=\"POST\",status=\"400\"} 1\n"));
    cr_assert_not_null(strstr(t, "gatestream_http_requests_total{route=\"/db/{id}/query\","
                                 "method=\"POST\",status=\"5xx\"} 1\n"));
    cr_assert_not_null(strstr(t, "gatestream_http_requests_total{route=\"unmatched\","
                                 "method=\"other\",status=\"404\"} 1\n"));
    cr_assert_not_null(strstr(t, "gatestream_http_requests_total{route=\"unmatched\","
                                 "method=\"GET\",status=\"200\"} 1\n"));
    cr_assert_not_null(strstr(t, "# TYPE gatestream_http_request_duration_seconds histogram\n"));
    const char *q = "gatestream_http_request_duration_seconds_bucket{route=\"/db/{id}/query\","
                    "method=\"POST\",";
    char line[256];
    snprintf(line, sizeof line, "%sle=\"0.0005\"} 1\n", q);
    cr_assert_not_null(strstr(t, line), "%s", t);
    snprintf(line, sizeof line, "%sle=\"0.0025\"} 2\n", q);
    cr_assert_not_null(strstr(t, line));
    snprintf(line, sizeof line, "%sle=\"0.5\"} 3\n", q);
    cr_assert_not_null(strstr(t, line));
    snprintf(line, sizeof line, "%sle=\"10\"} 3\n", q);
    cr_assert_not_null(strstr(t, line));
    snprintf(line, sizeof line, "%sle=\"+Inf\"} 4\n", q);
    cr_assert_not_null(strstr(t, line));
    cr_assert_not_null(strstr(t, "gatestream_http_request_duration_seconds_count{route=\"/db/{id}"
                                 "/query\",method=\"POST\"} 4\n"));
    cr_assert_not_null(strstr(t, "gatestream_http_request_duration_seconds_sum{route=\"/db/{id}"
                                 "/query\",method=\"POST\"} 20.3021\n"));
    /* routes without a request have no series */
    cr_assert_null(strstr(t, "route=\"/health\""));
    cr_assert_not_null(
        strstr(t, "gatestream_ws_messages_total{type=\"query\",outcome=\"accepted\"} 1\n"));
    cr_assert_not_null(
        strstr(t, "gatestream_ws_messages_total{type=\"invalid\",outcome=\"refused\"} 2\n"));
    cr_assert_not_null(strstr(t, "# TYPE gatestream_build_info gauge\n"));
    cr_assert_not_null(strstr(t, "gatestream_build_info{version=\"" GS_VERSION "\"} 1\n"));
    const char *rss = strstr(t, "\nprocess_resident_memory_bytes ");
    cr_assert_not_null(rss);
    cr_assert_gt(strtod(rss + strlen("\nprocess_resident_memory_bytes "), NULL), 0);
    cr_assert_not_null(strstr(t, "# TYPE gatestream_uptime_seconds gauge\n"));
    /* every family has its HELP right before its TYPE */
    for (const char *p = strstr(t, "# TYPE "); p; p = strstr(p + 1, "# TYPE ")) {
        const char *prev = p - 1;
        while (prev > t && prev[-1] != '\n')
            prev--;
        cr_assert_eq(strncmp(prev, "# HELP ", 7), 0);
    }
    cr_assert_eq(t[b.len - 1], '\n');
    gs_buf_free(&b);
    gs_metrics_free(m);
}

Test(metrics, database_families)
{
    gs_registry *reg = gs_registry_new(NULL);
    cr_assert_not_null(reg);
    char path[192];
    snprintf(path, sizeof path, "%s/ma\"in.db", tmpdir);
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_pool_size = 1;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_registry_open(reg, "ma\"in", path, &o, &err), GS_OK, "%s", err.message);

    gs_metrics *m = gs_metrics_new(0);
    cr_assert_not_null(m);
    cr_assert_eq(gs_metrics_authenticate(m), 0);
    gs_buf b;
    gs_buf_init(&b);
    cr_assert_eq(gs_metrics_render(m, reg, &b, &err), GS_OK);
    const char *t = text(&b);
    cr_assert_not_null(strstr(t, "gatestream_db_writes_total{db=\"ma\\\"in\"} "), "%s", t);
    cr_assert_not_null(strstr(t, "gatestream_db_queries_total{db=\"ma\\\"in\"} 0\n"));
    cr_assert_not_null(strstr(t, "# TYPE gatestream_db_group_commit_size histogram\n"));
    cr_assert_not_null(strstr(t, "gatestream_db_group_commit_size_bucket{db=\"ma\\\"in\","
                                 "le=\"256\"} "));
    cr_assert_not_null(strstr(t, "gatestream_db_group_commit_size_bucket{db=\"ma\\\"in\","
                                 "le=\"+Inf\"} "));
    cr_assert_not_null(strstr(t, "gatestream_db_pending_writes{db=\"ma\\\"in\"} 0\n"));
    cr_assert_not_null(strstr(t, "gatestream_cdc_subscribers{db=\"ma\\\"in\"} 0\n"));
    const char *size = strstr(t, "gatestream_db_size_bytes{db=\"ma\\\"in\"} ");
    cr_assert_not_null(size);
    cr_assert_gt(strtod(size + strlen("gatestream_db_size_bytes{db=\"ma\\\"in\"} "), NULL), 0);
    cr_assert_not_null(strstr(t, "gatestream_db_wal_size_bytes{db=\"ma\\\"in\"} "));
    gs_buf_free(&b);
    gs_metrics_free(m);
    gs_registry_free(reg);
}
