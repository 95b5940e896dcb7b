/*
 * Range reads and transactions of the etcd coordinator.
 *
 * Keys go to etcd with the key prefix prepended; a prefix read asks for [key, range_end) where
 * range_end is the key with its last byte below 0xff plus one; keys come back with the prefix
 * stripped. Reads are linearisable (serializable is never set).
 *
 * Compares: coordinator.h says an absent key has the empty value, but etcd fails every VALUE
 * compare on an absent key. A VALUE compare that an absent key would satisfy ("" R operand
 * holds) is therefore sent as the negation of an etcd compare that is exactly its complement
 * among present keys:
 *   value == ""   is  NOT (present and value != "")
 *   value != v    is  NOT (present and value == v)              (v not empty)
 *   value <  v    is  NOT (present and value > v) AND NOT (present and value == v)
 * The other compares are sent as they are (etcd treats an absent key as zeros there). A txn
 * with negated compares N1..Nk becomes one etcd txn with nested txns:
 *   if <direct compares> then [ if N1 then F else [ if N2 then F else [ ... else S ] ] ]
 *   else F
 * which applies S exactly when every compare holds, else F, atomically, in one revision.
 */
#include "etcd_internal.h"

#include <string.h>

gs_status gs_etcd_range(ec_inst *t, const uint8_t *key, size_t key_len, int prefix,
                        gs_kv_visit_fn visit, void *user, int64_t *revision, gs_error *err)
{
    ec_arena a = {.host = t->host};
    Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
    req.key = gs_etcd_arena_key(&a, t->prefix, t->prefix_len, key, key_len);
    if (prefix && !a.failed)
        req.range_end = gs_etcd_range_end(&a, req.key);
    if (a.failed) {
        gs_etcd_arena_free(&a);
        return EC_FAIL(t, err, "INTERNAL_ERROR", "etcd coordinator: out of memory");
    }
    ec_reply r;
    gs_status rc = gs_etcd_call(t, EC_METHOD_RANGE, &req.base, 1, &r, err);
    gs_etcd_arena_free(&a);
    if (rc == GS_DECLINED)
        return gs_etcd_status_error(t, "a range read", &r, err);
    if (rc != GS_OK)
        return GS_ERROR;
    Etcdserverpb__RangeResponse *resp = (Etcdserverpb__RangeResponse *)gs_etcd_unpack(
        t->host, &etcdserverpb__range_response__descriptor, r.body);
    grpc_byte_buffer_destroy(r.body);
    if (!resp)
        return EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE",
                       "etcd coordinator: %s sent a range answer that does not parse",
                       r.ep ? r.ep->url : "etcd");
    for (size_t i = 0; visit && i < resp->n_kvs; i++) {
        const Mvccpb__KeyValue *kv = resp->kvs[i];
        if (kv->key.len < t->prefix_len || memcmp(kv->key.data, t->prefix, t->prefix_len) != 0)
            continue;
        gs_kv out = {.key = kv->key.data + t->prefix_len,
                     .key_len = kv->key.len - t->prefix_len,
                     .value = kv->value.data,
                     .value_len = kv->value.len,
                     .create_revision = kv->create_revision,
                     .mod_revision = kv->mod_revision,
                     .version = kv->version,
                     .lease = kv->lease};
        visit(user, &out);
    }
    if (revision)
        *revision = resp->header ? resp->header->revision : 0;
    gs_etcd_free_msg(t->host, &resp->base);
    return GS_OK;
}

gs_status gs_etcd_revision_now(ec_inst *t, int64_t budget_ms, int64_t *revision, gs_error *err)
{
    /* A linearisable count of one key: cheap, and its header carries the store revision. */
    Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
    req.key.data = (uint8_t *)t->prefix;
    req.key.len = t->prefix_len;
    req.count_only = 1;
    ec_reply r;
    gs_status rc = gs_etcd_call_within(t, EC_METHOD_RANGE, &req.base, 1, budget_ms, &r, err);
    if (rc == GS_DECLINED)
        return gs_etcd_status_error(t, "a revision read", &r, err);
    if (rc != GS_OK)
        return GS_ERROR;
    Etcdserverpb__RangeResponse *resp = (Etcdserverpb__RangeResponse *)gs_etcd_unpack(
        t->host, &etcdserverpb__range_response__descriptor, r.body);
    grpc_byte_buffer_destroy(r.body);
    if (!resp || !resp->header) {
        gs_etcd_free_msg(t->host, resp ? &resp->base : NULL);
        return EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE",
                       "etcd coordinator: %s sent a range answer without a revision",
                       r.ep ? r.ep->url : "etcd");
    }
    *revision = resp->header->revision;
    gs_etcd_free_msg(t->host, &resp->base);
    return GS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Transactions                                                                               */

static Etcdserverpb__Compare *compare_msg(ec_inst *t, ec_arena *a, const gs_compare *c,
                                          gs_compare_result result)
{
    Etcdserverpb__Compare *m = gs_etcd_arena_alloc(a, sizeof *m);
    if (!m)
        return NULL;
    etcdserverpb__compare__init(m);
    /* coordinator.h's enums have etcd's values. */
    m->result = (Etcdserverpb__Compare__CompareResult)result;
    m->target = (Etcdserverpb__Compare__CompareTarget)c->target;
    m->key = gs_etcd_arena_key(a, t->prefix, t->prefix_len, c->key, c->key_len);
    switch (c->target) {
    case GS_CMP_VERSION:
        m->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
        m->version = c->number;
        break;
    case GS_CMP_CREATE:
        m->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
        m->create_revision = c->number;
        break;
    case GS_CMP_MOD:
        m->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
        m->mod_revision = c->number;
        break;
    case GS_CMP_LEASE:
        m->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE;
        m->lease = c->number;
        break;
    default:
        m->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
        m->value.len = c->value_len;
        m->value.data = (uint8_t *)(c->value_len ? c->value : NULL);
        break;
    }
    return m;
}

static Etcdserverpb__RequestOp **ops_msg(ec_inst *t, ec_arena *a, const gs_op *ops, size_t n)
{
    Etcdserverpb__RequestOp **list = gs_etcd_arena_alloc(a, (n ? n : 1) * sizeof *list);
    for (size_t i = 0; list && i < n; i++) {
        Etcdserverpb__RequestOp *r = gs_etcd_arena_alloc(a, sizeof *r);
        if (!r)
            return NULL;
        etcdserverpb__request_op__init(r);
        if (ops[i].type == GS_OP_PUT) {
            Etcdserverpb__PutRequest *p = gs_etcd_arena_alloc(a, sizeof *p);
            if (!p)
                return NULL;
            etcdserverpb__put_request__init(p);
            p->key = gs_etcd_arena_key(a, t->prefix, t->prefix_len, ops[i].key, ops[i].key_len);
            p->value.len = ops[i].value_len;
            p->value.data = (uint8_t *)(ops[i].value_len ? ops[i].value : NULL);
            p->lease = ops[i].lease;
            r->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
            r->request_put = p;
        } else {
            Etcdserverpb__DeleteRangeRequest *d = gs_etcd_arena_alloc(a, sizeof *d);
            if (!d)
                return NULL;
            etcdserverpb__delete_range_request__init(d);
            d->key = gs_etcd_arena_key(a, t->prefix, t->prefix_len, ops[i].key, ops[i].key_len);
            r->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
            r->request_delete_range = d;
        }
        list[i] = r;
    }
    return list;
}

/* Split the compares into those etcd evaluates as they are and those sent negated. */
static int plan_compares(ec_inst *t, ec_arena *a, const gs_compare *c, size_t n,
                         Etcdserverpb__Compare **direct, size_t *ndirect,
                         Etcdserverpb__Compare **neg, size_t *nneg)
{
    *ndirect = *nneg = 0;
    for (size_t i = 0; i < n; i++) {
        int empty = c[i].value_len == 0;
        if (c[i].target != GS_CMP_VALUE || c[i].result == GS_CMP_GREATER ||
            (c[i].result == GS_CMP_EQUAL && !empty) ||
            ((c[i].result == GS_CMP_NOT_EQUAL || c[i].result == GS_CMP_LESS) && empty)) {
            if (!(direct[(*ndirect)++] = compare_msg(t, a, &c[i], c[i].result)))
                return -1;
            continue;
        }
        switch (c[i].result) {
        case GS_CMP_EQUAL: /* value == "": NOT (value != "") */
            neg[(*nneg)++] = compare_msg(t, a, &c[i], GS_CMP_NOT_EQUAL);
            break;
        case GS_CMP_NOT_EQUAL: /* value != v: NOT (value == v) */
            neg[(*nneg)++] = compare_msg(t, a, &c[i], GS_CMP_EQUAL);
            break;
        default: /* value < v: NOT (value > v) AND NOT (value == v) */
            neg[(*nneg)++] = compare_msg(t, a, &c[i], GS_CMP_GREATER);
            neg[(*nneg)++] = compare_msg(t, a, &c[i], GS_CMP_EQUAL);
            break;
        }
        if (!neg[*nneg - 1] || (*nneg >= 2 && !neg[*nneg - 2]))
            return -1;
    }
    return 0;
}

/* The outcome of the nested chain: 1 when the innermost failure branch (S) ran. */
static int chain_succeeded(const Etcdserverpb__TxnResponse *top, size_t nneg, int *bad)
{
    if (!top->succeeded)
        return 0;
    const Etcdserverpb__TxnResponse *level = top;
    for (size_t i = 0; i < nneg; i++) {
        const Etcdserverpb__ResponseOp *op = level->n_responses ? level->responses[0] : NULL;
        if (!op || op->response_case != ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN ||
            !op->response_txn) {
            *bad = 1;
            return 0;
        }
        level = op->response_txn;
        if (level->succeeded)
            return 0; /* a negated compare held: the ABI compare is false */
    }
    return 1;
}

gs_status gs_etcd_txn(ec_inst *t, const gs_compare *compares, size_t ncmp, const gs_op *success,
                      size_t nsuccess, const gs_op *failure, size_t nfailure, int *succeeded,
                      int64_t *revision, gs_error *err)
{
    ec_arena a = {.host = t->host};
    size_t cap = ncmp ? ncmp : 1;
    Etcdserverpb__Compare **direct = gs_etcd_arena_alloc(&a, cap * sizeof *direct);
    Etcdserverpb__Compare **neg = gs_etcd_arena_alloc(&a, 2 * cap * sizeof *neg);
    size_t ndirect = 0, nneg = 0;
    Etcdserverpb__RequestOp **s = ops_msg(t, &a, success, nsuccess);
    Etcdserverpb__RequestOp **f = ops_msg(t, &a, failure, nfailure);
    Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
    if (direct && neg && s && f &&
        plan_compares(t, &a, compares, ncmp, direct, &ndirect, neg, &nneg) == 0) {
        req.n_compare = ndirect;
        req.compare = direct;
        req.n_failure = nfailure;
        req.failure = f;
        if (!nneg) {
            req.n_success = nsuccess;
            req.success = s;
        } else {
            Etcdserverpb__RequestOp *inner = NULL;
            for (size_t i = nneg; i-- > 0 && !a.failed;) {
                Etcdserverpb__TxnRequest *tx = gs_etcd_arena_alloc(&a, sizeof *tx);
                Etcdserverpb__RequestOp *op = gs_etcd_arena_alloc(&a, sizeof *op);
                Etcdserverpb__RequestOp **wrap = gs_etcd_arena_alloc(&a, sizeof *wrap);
                if (!tx || !op || !wrap)
                    break;
                etcdserverpb__txn_request__init(tx);
                tx->n_compare = 1;
                tx->compare = &neg[i];
                tx->n_success = nfailure;
                tx->success = f;
                if (inner) {
                    *wrap = inner;
                    tx->n_failure = 1;
                    tx->failure = wrap;
                } else {
                    tx->n_failure = nsuccess;
                    tx->failure = s;
                }
                etcdserverpb__request_op__init(op);
                op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
                op->request_txn = tx;
                inner = op;
            }
            Etcdserverpb__RequestOp **top = gs_etcd_arena_alloc(&a, sizeof *top);
            if (top) {
                *top = inner;
                req.n_success = 1;
                req.success = top;
            }
        }
    } else {
        a.failed = 1;
    }
    if (a.failed) {
        gs_etcd_arena_free(&a);
        return EC_FAIL(t, err, "INTERNAL_ERROR", "etcd coordinator: out of memory");
    }
    ec_reply r;
    int writes = nsuccess || nfailure;
    gs_status rc = gs_etcd_call(t, EC_METHOD_TXN, &req.base, !writes, &r, err);
    gs_etcd_arena_free(&a);
    if (rc == GS_DECLINED)
        return gs_etcd_status_error(t, "a transaction (nothing was applied)", &r, err);
    if (rc != GS_OK)
        return GS_ERROR;
    Etcdserverpb__TxnResponse *resp = (Etcdserverpb__TxnResponse *)gs_etcd_unpack(
        t->host, &etcdserverpb__txn_response__descriptor, r.body);
    grpc_byte_buffer_destroy(r.body);
    int bad = !resp;
    int ok = resp ? chain_succeeded(resp, nneg, &bad) : 0;
    if (bad) {
        gs_etcd_free_msg(t->host, resp ? &resp->base : NULL);
        return EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE",
                       "etcd coordinator: %s sent a transaction answer that does not parse; "
                       "whether it was applied is unknown",
                       r.ep ? r.ep->url : "etcd");
    }
    *succeeded = ok;
    if (revision)
        *revision = resp->header ? resp->header->revision : 0;
    gs_etcd_free_msg(t->host, &resp->base);
    return GS_OK;
}
