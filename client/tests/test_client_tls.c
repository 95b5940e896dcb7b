/* TLS: https through libcurl and wss through the library's own WebSocket client (GnuTLS)
 * against a real server with a certificate from a private CA (the static-tcp example's
 * make-certs.sh, into a temp dir): the CA file verifies, an unknown CA is refused with
 * CONNECTION_ERROR, tls_insecure skips verification. WSS is served by the ws transport on a
 * port of its own. */
#include <criterion/criterion.h>

#include <gatestream/client.h>

#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef GS_SOURCE_DIR
#error "GS_SOURCE_DIR must name the repository"
#endif

static gst_server srv;
static char certs[300];
static int wss_port;

static void start_tls(void)
{
    const char *base = getenv("GS_TEST_TMP");
    snprintf(certs, sizeof certs, "%s/gs-client-tls-XXXXXX", base && *base ? base : "/tmp");
    cr_assert(mkdtemp(certs));
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "sh %s/config/cluster/static-tcp/make-certs.sh %s node-a >/dev/null 2>&1",
             GS_SOURCE_DIR, certs);
    cr_assert_eq(system(cmd), 0, "make-certs.sh");
    cr_assert_eq(gst_server_prepare(&srv), 0);
    wss_port = gst_free_port();
    FILE *f = fopen(srv.config, "w");
    cr_assert(f);
    fprintf(f,
            "node: { id: tls-test, data_dir: %s/data }\n"
            "plugins:\n"
            "  - name: http\n    kind: client_transport\n"
            "  - name: ws\n    kind: client_transport\n    config: { port: %d }\n"
            "server:\n  host: 127.0.0.1\n  port: %d\n  accept_sql: true\n"
            "  tls_cert_file: %s/node-a.pem\n  tls_key_file: %s/node-a.key\n"
            "databases:\n  - id: main\n    path: main.db\n",
            srv.dir, wss_port, srv.port, certs, certs);
    fclose(f);
    srv.tls = 1;
    cr_assert_eq(gst_server_restart(&srv), 0, "the HTTPS server starts");
}

static void stop_tls(void)
{
    gst_server_cleanup(&srv);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", certs);
    if (certs[0] && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", certs);
}

static gs_client *open_tls(const char *url, gs_client_transport t, const char *ca, int insecure,
                           int check_caps)
{
    const char *urls[] = {url};
    gs_client_config cfg;
    gs_client_config_init(&cfg);
    cfg.transport = t;
    cfg.ca_file = ca;
    cfg.tls_insecure = insecure;
    cfg.check_capabilities = check_caps;
    gs_client *c;
    gs_error err;
    cr_assert_eq(gs_client_open(urls, 1, &cfg, &c, &err), GS_OK, "%s", err.message);
    return c;
}

static gs_status one_query(gs_client *c, gs_error *err)
{
    gs_client_db *db = gs_client_database(c, "main", err);
    gs_client_rows *r = NULL;
    gs_status st = gs_client_query(db, "SELECT 'secure' AS v", NULL, NULL, &r, err);
    if (st == GS_OK) {
        cr_assert_str_eq(gs_client_rows_get(r, 0, 0)->u.text.ptr, "secure");
        gs_client_rows_free(r);
    }
    return st;
}

Test(client_tls, https_and_wss, .init = start_tls, .fini = stop_tls)
{
    char https[64], wss[64], ca[400], other[400];
    snprintf(https, sizeof https, "https://127.0.0.1:%d", srv.port);
    snprintf(wss, sizeof wss, "wss://127.0.0.1:%d", wss_port);
    snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    gs_error err;
    /* https with the CA */
    gs_client *c = open_tls(https, GS_CLIENT_TRANSPORT_HTTP, ca, 0, 1);
    cr_assert_eq(one_query(c, &err), GS_OK, "https: %s: %s", err.code, err.message);
    gs_client_close(c);
    /* wss on the ws transport's own port (it serves upgrades only: no /capabilities there) */
    c = open_tls(wss, GS_CLIENT_TRANSPORT_WEBSOCKET, ca, 0, 0);
    cr_assert_eq(one_query(c, &err), GS_OK, "wss: %s: %s", err.code, err.message);
    gs_client_close(c);
    /* a CA that did not sign the server's certificate: refused, both ways */
    snprintf(other, sizeof other, "%s/other", certs);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "sh %s/config/cluster/static-tcp/make-certs.sh %s node-x >/dev/null 2>&1",
             GS_SOURCE_DIR, other);
    cr_assert_eq(system(cmd), 0);
    char other_ca[450];
    snprintf(other_ca, sizeof other_ca, "%s/ca.pem", other);
    c = open_tls(https, GS_CLIENT_TRANSPORT_HTTP, other_ca, 0, 1);
    cr_assert_eq(one_query(c, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "CONNECTION_ERROR", "%s: %s", err.code, err.message);
    gs_client_close(c);
    c = open_tls(wss, GS_CLIENT_TRANSPORT_WEBSOCKET, other_ca, 0, 0);
    cr_assert_eq(one_query(c, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "CONNECTION_ERROR", "%s: %s", err.code, err.message);
    cr_assert(strstr(err.message, "TLS"), "%s", err.message);
    gs_client_close(c);
    /* tls_insecure skips verification (tests only) */
    c = open_tls(wss, GS_CLIENT_TRANSPORT_WEBSOCKET, other_ca, 1, 0);
    cr_assert_eq(one_query(c, &err), GS_OK, "insecure wss: %s: %s", err.code, err.message);
    gs_client_close(c);
}
