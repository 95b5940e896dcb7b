/*
 * TLS for the grpc transport: the PEM files are read once at create() (a bad path fails the
 * config, not the first connection), server and channel credentials are built from those
 * texts at start(), and the peer certificate's common name is read from a call's auth context.
 *
 * Mutual TLS: the server presents tls_cert/tls_key; with tls_ca_cert it requires and verifies
 * a client certificate. A client presents the same certificate and verifies the server against
 * tls_ca_cert (the system roots when unset). Threads: create/start on the main thread; the
 * common name from any thread.
 */
#include "grpc_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define GC_PEM_MAX (4 * 1024 * 1024)

static gs_status read_pem(gc_inst *t, const char *key, const char *path, char **out, gs_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        t->host->error_set(err, 0, "INVALID_CONFIG", "grpc transport: %s '%s' cannot be read: %s",
                           key, path, strerror(errno));
        return GS_ERROR;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size <= 0 || st.st_size > GC_PEM_MAX) {
        fclose(f);
        t->host->error_set(err, 0, "INVALID_CONFIG",
                           "grpc transport: %s '%s' is empty, not a file, or over 4 MiB", key,
                           path);
        return GS_ERROR;
    }
    size_t n = (size_t)st.st_size;
    char *buf = t->host->alloc(n + 1);
    if (!buf) {
        fclose(f);
        t->host->error_set(err, 0, "INTERNAL_ERROR", "out of memory reading %s", path);
        return GS_ERROR;
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    buf[got] = '\0';
    if (got != n || !strstr(buf, "-----BEGIN ")) {
        t->host->free(buf);
        t->host->error_set(err, 0, "INVALID_CONFIG",
                           "grpc transport: %s '%s' is not a PEM file (no -----BEGIN line)", key,
                           path);
        return GS_ERROR;
    }
    *out = buf;
    return GS_OK;
}

gs_status gs_gc_tls_load(gc_inst *t, gs_error *err)
{
    if (t->insecure)
        return GS_OK;
    if (!t->cert_path || !t->key_path)
        return t->host->error_set(err, 0, "INVALID_CONFIG",
                                  "grpc transport: TLS is on by default and needs tls_cert and "
                                  "tls_key (PEM files); set insecure: true only for local tests"),
               GS_ERROR;
    if (read_pem(t, "tls_cert", t->cert_path, &t->cert_pem, err) != GS_OK ||
        read_pem(t, "tls_key", t->key_path, &t->key_pem, err) != GS_OK)
        return GS_ERROR;
    if (t->ca_path && read_pem(t, "tls_ca_cert", t->ca_path, &t->ca_pem, err) != GS_OK)
        return GS_ERROR;
    return GS_OK;
}

int gs_gc_tls_verifies_peers(const gc_inst *t)
{
    return !t->insecure && t->ca_pem != NULL;
}

grpc_server_credentials *gs_gc_tls_server_creds(gc_inst *t)
{
    if (t->insecure)
        return grpc_insecure_server_credentials_create();
    grpc_ssl_pem_key_cert_pair pair = {t->key_pem, t->cert_pem};
    return grpc_ssl_server_credentials_create_ex(
        t->ca_pem, &pair, 1,
        t->ca_pem ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                  : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
}

grpc_channel_credentials *gs_gc_tls_channel_creds(gc_inst *t)
{
    if (t->insecure)
        return grpc_insecure_credentials_create();
    grpc_ssl_pem_key_cert_pair pair = {t->key_pem, t->cert_pem};
    return grpc_ssl_credentials_create_ex(t->ca_pem, &pair, NULL, NULL);
}

int gs_gc_tls_peer_cn(grpc_call *call, char *out, size_t out_size)
{
    out[0] = '\0';
    grpc_auth_context *ctx = grpc_call_auth_context(call);
    if (!ctx)
        return -1;
    grpc_auth_property_iterator it =
        grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_CN_PROPERTY_NAME);
    const grpc_auth_property *prop = grpc_auth_property_iterator_next(&it);
    int rc = -1;
    if (prop && prop->value && prop->value_length < out_size) {
        memcpy(out, prop->value, prop->value_length);
        out[prop->value_length] = '\0';
        rc = 0;
    }
    grpc_auth_context_release(ctx);
    return rc;
}
