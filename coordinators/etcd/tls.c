/*
 * TLS for the etcd coordinator: the PEM files are read once at create() (a bad path fails the
 * config, not the first call) and channel credentials are built from those texts at start().
 *
 * An https:// endpoint is verified against tls_ca_cert (the system roots when unset) and the
 * host name of its URL; with tls_cert and tls_key the client presents that certificate (etcd's
 * --client-cert-auth). An http:// endpoint (allowed only with allow_insecure) is plaintext.
 * Threads: create/start on the core's main thread.
 */
#include "etcd_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define EC_PEM_MAX (4 * 1024 * 1024)

static gs_status read_pem(ec_inst *t, const char *key, const char *path, char **out, gs_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return EC_FAIL(t, err, "INVALID_CONFIG", "etcd coordinator: %s '%s' cannot be read: %s",
                       key, path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        st.st_size > EC_PEM_MAX) {
        fclose(f);
        return EC_FAIL(t, err, "INVALID_CONFIG",
                       "etcd coordinator: %s '%s' is empty, not a file, or over 4 MiB", key, path);
    }
    size_t n = (size_t)st.st_size;
    char *buf = t->host->alloc(n + 1);
    if (!buf) {
        fclose(f);
        return EC_FAIL(t, err, "INTERNAL_ERROR", "etcd coordinator: out of memory reading %s",
                       path);
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    buf[got] = '\0';
    if (got != n || !strstr(buf, "-----BEGIN ")) {
        t->host->free(buf);
        return EC_FAIL(t, err, "INVALID_CONFIG",
                       "etcd coordinator: %s '%s' is not a PEM file (no -----BEGIN line)", key,
                       path);
    }
    *out = buf;
    return GS_OK;
}

gs_status gs_etcd_tls_load(ec_inst *t, const gs_etcd_config *cfg, gs_error *err)
{
    if (!cfg->tls_cert != !cfg->tls_key)
        return EC_FAIL(t, err, "INVALID_CONFIG",
                       "etcd coordinator: tls_cert and tls_key go together (a client "
                       "certificate and its key); set both or neither");
    if (cfg->tls_ca_cert && read_pem(t, "tls_ca_cert", cfg->tls_ca_cert, &t->ca_pem, err) != GS_OK)
        return GS_ERROR;
    if (cfg->tls_cert && (read_pem(t, "tls_cert", cfg->tls_cert, &t->cert_pem, err) != GS_OK ||
                          read_pem(t, "tls_key", cfg->tls_key, &t->key_pem, err) != GS_OK))
        return GS_ERROR;
    return GS_OK;
}

grpc_channel_credentials *gs_etcd_channel_creds(ec_inst *t, const ec_endpoint *ep)
{
    if (!ep->tls)
        return grpc_insecure_credentials_create();
    grpc_ssl_pem_key_cert_pair pair = {t->key_pem, t->cert_pem};
    return grpc_ssl_credentials_create_ex(t->ca_pem, t->cert_pem ? &pair : NULL, NULL, NULL);
}
