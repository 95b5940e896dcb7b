/*
 * tcp transport TLS (gnutls): TLS 1.3 only, mutual authentication. Both sides present a
 * certificate and verify the other's chain against tls_ca_cert during the handshake (so a
 * refused peer gets a TLS alert); the peer certificate's CN is then the peer's node id: a
 * dialer checks it against the id it dialled, an acceptor against the id in the hello.
 * Sessions are non-blocking (GNUTLS_NONBLOCK) and never raise SIGPIPE (GNUTLS_NO_SIGNAL).
 * Only the I/O thread touches sessions; credentials are shared read-only by its sessions.
 */
#include "tcp_internal.h"

#include <gnutls/x509.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define TLS_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3"

static int cert_cn(const gnutls_datum_t *der, char *out, size_t cap)
{
    gnutls_x509_crt_t crt;
    if (gnutls_x509_crt_init(&crt) < 0)
        return -1;
    int rc = gnutls_x509_crt_import(crt, der, GNUTLS_X509_FMT_DER);
    size_t sz = cap;
    if (rc >= 0)
        rc = gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, out, &sz);
    gnutls_x509_crt_deinit(crt);
    if (rc < 0) {
        out[0] = '\0';
        return -1;
    }
    return 0;
}

gs_status gs_tcp_tls_init(gs_tcp_inst *t, const char *cert, const char *key, const char *ca,
                          gs_error *err)
{
    const gs_host *host = t->host;
    int rc = gnutls_certificate_allocate_credentials(&t->cred);
    if (rc < 0) {
        t->cred = NULL;
        host->error_set(err, 0, "INTERNAL_ERROR", "tcp transport: gnutls credentials: %s",
                        gnutls_strerror(rc));
        return GS_ERROR;
    }
    rc = gnutls_certificate_set_x509_key_file2(t->cred, cert, key, GNUTLS_X509_FMT_PEM, NULL, 0);
    if (rc < 0) {
        host->error_set(err, 0, "INVALID_CONFIG",
                        "tcp transport: cannot load tls_cert '%s' with tls_key '%s': %s (both "
                        "must be PEM files, the key unencrypted and matching the certificate)",
                        cert, key, gnutls_strerror(rc));
        gs_tcp_tls_free(t);
        return GS_ERROR;
    }
    rc = gnutls_certificate_set_x509_trust_file(t->cred, ca, GNUTLS_X509_FMT_PEM);
    if (rc <= 0) {
        host->error_set(err, 0, "INVALID_CONFIG",
                        "tcp transport: tls_ca_cert '%s' holds no usable CA certificate (%s); it "
                        "must be the PEM CA that signs every node's certificate",
                        ca, rc < 0 ? gnutls_strerror(rc) : "none found");
        gs_tcp_tls_free(t);
        return GS_ERROR;
    }
    const char *errpos = NULL;
    rc = gnutls_priority_init(&t->prio, TLS_PRIORITY, &errpos);
    if (rc < 0) {
        t->prio = NULL;
        host->error_set(err, 0, "INTERNAL_ERROR",
                        "tcp transport: this gnutls refuses the TLS 1.3 priority string: %s",
                        gnutls_strerror(rc));
        gs_tcp_tls_free(t);
        return GS_ERROR;
    }
    /* Peers check our CN against our node id: say so now rather than at every connect. */
    gnutls_datum_t der = {NULL, 0};
    char cn[256];
    if (gnutls_certificate_get_crt_raw(t->cred, 0, 0, &der) >= 0 &&
        cert_cn(&der, cn, sizeof cn) == 0) {
        if (strcmp(cn, t->node_id) != 0)
            host->log(host, GS_LOG_WARN, GS_TCP_COMPONENT,
                      "node '%s': tls_cert '%s' has CN '%s', not the node id; peers will refuse "
                      "this node (the certificate CN must equal node.id)",
                      t->node_id, cert, cn);
    }
    return GS_OK;
}

void gs_tcp_tls_free(gs_tcp_inst *t)
{
    if (t->prio)
        gnutls_priority_deinit(t->prio);
    if (t->cred)
        gnutls_certificate_free_credentials(t->cred);
    t->prio = NULL;
    t->cred = NULL;
}

int gs_tcp_tls_session(gs_tcp_conn *c, char *why, size_t why_size)
{
    gs_tcp_inst *t = c->t;
    unsigned flags = GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL;
    flags |= c->dial ? GNUTLS_CLIENT : (GNUTLS_SERVER | GNUTLS_NO_TICKETS);
    int rc = gnutls_init(&c->tls, flags);
    if (rc < 0) {
        c->tls = NULL;
        snprintf(why, why_size, "TLS session: %s", gnutls_strerror(rc));
        return -1;
    }
    if ((rc = gnutls_priority_set(c->tls, t->prio)) < 0 ||
        (rc = gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, t->cred)) < 0) {
        snprintf(why, why_size, "TLS session setup: %s", gnutls_strerror(rc));
        return -1;
    }
    if (!c->dial)
        gnutls_certificate_server_set_request(c->tls, GNUTLS_CERT_REQUIRE);
    /* Chain verification inside the handshake; the name check is ours (CN = node id). */
    gnutls_session_set_verify_cert(c->tls, NULL, 0);
    gnutls_transport_set_int(c->tls, c->fd);
    return 0;
}

static void status_text(gnutls_session_t s, unsigned status, char *out, size_t cap)
{
    gnutls_datum_t txt = {NULL, 0};
    if (gnutls_certificate_verification_status_print(status, gnutls_certificate_type_get(s), &txt,
                                                     0) >= 0 &&
        txt.data) {
        snprintf(out, cap, "%s", (const char *)txt.data);
        gnutls_free(txt.data);
    } else {
        snprintf(out, cap, "verification status 0x%x", status);
    }
}

int gs_tcp_tls_handshake(gs_tcp_conn *c, char *why, size_t why_size)
{
    int rc = gnutls_handshake(c->tls);
    if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED)
        return 0;
    if (rc < 0) {
        if (gnutls_error_is_fatal(rc))
            gnutls_alert_send_appropriate(c->tls, rc); /* so the peer learns why (best effort) */
        if (rc == GNUTLS_E_CERTIFICATE_REQUIRED || rc == GNUTLS_E_NO_CERTIFICATE_FOUND) {
            snprintf(why, why_size,
                     "TLS handshake: the peer presented no certificate signed by this node's "
                     "tls_ca_cert (mutual TLS needs one)");
        } else if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
            char st[256];
            status_text(c->tls, gnutls_session_get_verify_cert_status(c->tls), st, sizeof st);
            snprintf(why, why_size,
                     "TLS handshake refused the peer's certificate: %s (is it signed by "
                     "tls_ca_cert?)",
                     st);
        } else if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED || rc == GNUTLS_E_WARNING_ALERT_RECEIVED) {
            snprintf(why, why_size, "the peer refused the TLS handshake (alert: %s)",
                     gnutls_alert_get_name(gnutls_alert_get(c->tls)));
        } else if (gnutls_error_is_fatal(rc)) {
            snprintf(why, why_size, "TLS handshake failed: %s", gnutls_strerror(rc));
        } else {
            return 0;
        }
        return -1;
    }
    /* Verified during the handshake already; checked again so no path skips it. */
    unsigned status = 0;
    rc = gnutls_certificate_verify_peers2(c->tls, &status);
    if (rc < 0 || status != 0) {
        char st[256];
        if (rc < 0)
            snprintf(st, sizeof st, "%s", gnutls_strerror(rc));
        else
            status_text(c->tls, status, st, sizeof st);
        snprintf(why, why_size, "the peer's certificate is not trusted: %s", st);
        return -1;
    }
    unsigned n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(c->tls, &n);
    if (!certs || n == 0) {
        snprintf(why, why_size, "the peer sent no certificate (mutual TLS is required)");
        return -1;
    }
    if (cert_cn(&certs[0], c->cert_cn, sizeof c->cert_cn) != 0 || !c->cert_cn[0]) {
        snprintf(why, why_size,
                 "the peer's certificate has no common name (CN must be its node id)");
        return -1;
    }
    return 1;
}

int gs_tcp_tls_wants_write(const gs_tcp_conn *c)
{
    return c->tls && gnutls_record_get_direction(c->tls) == 1;
}

/* Why a record call failed, for a person. */
static void io_error(gs_tcp_conn *c, const char *what, int rc, char *why, size_t why_size)
{
    if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED)
        snprintf(why, why_size, "the peer ended TLS with alert '%s'",
                 gnutls_alert_get_name(gnutls_alert_get(c->tls)));
    else if (rc == GNUTLS_E_PULL_ERROR || rc == GNUTLS_E_PUSH_ERROR)
        snprintf(why, why_size, "TLS %s: %s", what, errno ? strerror(errno) : "socket error");
    else if (rc == GNUTLS_E_PREMATURE_TERMINATION)
        snprintf(why, why_size, "the peer closed the connection");
    else
        snprintf(why, why_size, "TLS %s: %s", what, gnutls_strerror(rc));
}

ssize_t gs_tcp_tls_recv(gs_tcp_conn *c, uint8_t *buf, size_t cap, char *why, size_t why_size)
{
    for (int tries = 0; tries < 8; tries++) {
        ssize_t n = gnutls_record_recv(c->tls, buf, cap);
        if (n >= 0)
            return n;
        if (n == GNUTLS_E_AGAIN)
            return -1;
        if (n == GNUTLS_E_INTERRUPTED)
            continue;
        if (n == GNUTLS_E_PREMATURE_TERMINATION)
            return 0; /* the peer closed the socket without close_notify: an end all the same */
        if (gnutls_error_is_fatal((int)n)) {
            io_error(c, "read", (int)n, why, why_size);
            return -2;
        }
        /* A warning alert or a post-handshake message: read on. */
    }
    return -1;
}

ssize_t gs_tcp_tls_send(gs_tcp_conn *c, const uint8_t *buf, size_t len, char *why, size_t why_size)
{
    for (;;) {
        ssize_t n = gnutls_record_send(c->tls, buf, len);
        if (n >= 0)
            return n;
        if (n == GNUTLS_E_AGAIN)
            return -1;
        if (n == GNUTLS_E_INTERRUPTED)
            continue;
        io_error(c, "write", (int)n, why, why_size);
        return -2;
    }
}

void gs_tcp_tls_bye(gs_tcp_conn *c)
{
    if (c->tls)
        gnutls_bye(c->tls, GNUTLS_SHUT_WR);
}
