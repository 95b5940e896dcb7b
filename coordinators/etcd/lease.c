/*
 * Leases of the etcd coordinator. etcd counts lease TTLs in whole seconds: a grant asks for
 * ceil(ttl_ms / 1000) s (at least 1; etcd may raise it to its minimum, about 2 s with the
 * default election timeout). A keepalive is one request and one answer on a LeaseKeepAlive
 * stream, which etcd ends when the client half-closes; an answer with TTL <= 0 means the lease
 * is gone (GS_DECLINED). Revoking a lease etcd does not know is GS_OK.
 * Threads: any core thread; each call blocks at most call_timeout_ms.
 */
#include "etcd_internal.h"

#include <inttypes.h>
#include <string.h>

gs_status gs_etcd_lease_grant(ec_inst *t, int64_t ttl_ms, int64_t *id, gs_error *err)
{
    int64_t ttl_s = ttl_ms / 1000 + (ttl_ms % 1000 != 0);
    if (ttl_s < 1)
        ttl_s = 1;
    Etcdserverpb__LeaseGrantRequest req = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    req.ttl = ttl_s;
    ec_reply r;
    /* A grant repeated on another endpoint leaves at most an unused lease that expires. */
    gs_status rc = gs_etcd_call(t, EC_METHOD_LEASE_GRANT, &req.base, 1, &r, err);
    if (rc == GS_DECLINED)
        return gs_etcd_status_error(t, "a lease grant", &r, err);
    if (rc != GS_OK)
        return GS_ERROR;
    Etcdserverpb__LeaseGrantResponse *resp = (Etcdserverpb__LeaseGrantResponse *)gs_etcd_unpack(
        t->host, &etcdserverpb__lease_grant_response__descriptor, r.body);
    grpc_byte_buffer_destroy(r.body);
    if (!resp || (resp->error && *resp->error) || resp->id <= 0) {
        rc = EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE",
                     "etcd coordinator: %s did not grant a lease of %" PRId64 " s: %s",
                     r.ep ? r.ep->url : "etcd", ttl_s,
                     resp && resp->error && *resp->error ? resp->error
                                                         : "no lease id in the answer");
        gs_etcd_free_msg(t->host, resp ? &resp->base : NULL);
        return rc;
    }
    *id = resp->id;
    gs_etcd_free_msg(t->host, &resp->base);
    return GS_OK;
}

gs_status gs_etcd_lease_keepalive(ec_inst *t, int64_t id, int64_t *ttl_ms_left, gs_error *err)
{
    Etcdserverpb__LeaseKeepAliveRequest req = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
    req.id = id;
    ec_reply r;
    gs_status rc = gs_etcd_call(t, EC_METHOD_LEASE_KEEPALIVE, &req.base, 1, &r, err);
    if (rc == GS_DECLINED) {
        if (r.status == GRPC_STATUS_NOT_FOUND)
            return GS_DECLINED;
        return gs_etcd_status_error(t, "a lease keepalive", &r, err);
    }
    if (rc != GS_OK)
        return GS_ERROR;
    if (!r.body)
        return EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE",
                       "etcd coordinator: %s ended the keepalive of lease %" PRId64
                       " without an answer",
                       r.ep ? r.ep->url : "etcd", id);
    Etcdserverpb__LeaseKeepAliveResponse *resp =
        (Etcdserverpb__LeaseKeepAliveResponse *)gs_etcd_unpack(
            t->host, &etcdserverpb__lease_keep_alive_response__descriptor, r.body);
    grpc_byte_buffer_destroy(r.body);
    if (!resp)
        return EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE",
                       "etcd coordinator: %s sent a keepalive answer that does not parse",
                       r.ep ? r.ep->url : "etcd");
    int64_t ttl = resp->ttl;
    gs_etcd_free_msg(t->host, &resp->base);
    if (ttl <= 0)
        return GS_DECLINED; /* expired or revoked */
    *ttl_ms_left = ttl * 1000;
    return GS_OK;
}

gs_status gs_etcd_lease_revoke(ec_inst *t, int64_t id, gs_error *err)
{
    Etcdserverpb__LeaseRevokeRequest req = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
    req.id = id;
    ec_reply r;
    gs_status rc = gs_etcd_call(t, EC_METHOD_LEASE_REVOKE, &req.base, 1, &r, err);
    if (rc == GS_DECLINED) {
        if (r.status == GRPC_STATUS_NOT_FOUND)
            return GS_OK; /* already gone */
        return gs_etcd_status_error(t, "a lease revoke", &r, err);
    }
    if (rc == GS_OK && r.body)
        grpc_byte_buffer_destroy(r.body);
    return rc;
}
