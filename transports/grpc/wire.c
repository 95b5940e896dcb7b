/*
 * The protobuf the transport itself reads or writes (contract in grpc_internal.h). Everything
 * else on the streams is the core's bytes, passed through untouched.
 *
 * Hello, ForwardRequest and ForwardResponse use protoc-c code generated into this plugin's
 * build from proto/replication.proto (the core's copy cannot be linked by a plugin); the health
 * messages come from health.proto. Unpacking uses the host's allocator.
 *
 * Threads: pure functions plus the host allocator; any thread.
 */
#include "grpc_internal.h"

#include "health.pb-c.h"
#include "replication.pb-c.h"

#include <stdio.h>
#include <string.h>

typedef Sirannon__Replication__V1__Hello pb_hello;
typedef Sirannon__Replication__V1__ReplicationMessage pb_rmsg;
typedef Sirannon__Replication__V1__SyncMessage pb_smsg;
typedef Sirannon__Replication__V1__ForwardRequest pb_freq;
typedef Sirannon__Replication__V1__ForwardResponse pb_fresp;

static void *pa_alloc(void *data, size_t size)
{
    const gs_host *host = data;
    return host->alloc(size);
}

static void pa_free(void *data, void *ptr)
{
    const gs_host *host = data;
    host->free(ptr);
}

static ProtobufCAllocator allocator_of(gc_inst *t)
{
    ProtobufCAllocator a = {pa_alloc, pa_free, (void *)t->host};
    return a;
}

/* A byte buffer holding a copy of n bytes (NULL when n bytes cannot be had). */
static grpc_byte_buffer *buffer_of(const uint8_t *p, size_t n)
{
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)p, n);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

grpc_byte_buffer *gs_gc_hello_build(gc_inst *t, int sync)
{
    pb_hello h = SIRANNON__REPLICATION__V1__HELLO__INIT;
    h.node_id = t->node_id;
    h.role = t->role;
    h.group_id = t->group_id ? t->group_id : (char *)"";
    h.primary_term = t->primary_term;
    h.protocol_version = t->protocol_version ? t->protocol_version : (char *)"";
    size_t n;
    uint8_t *buf;
    if (sync) {
        pb_smsg m = SIRANNON__REPLICATION__V1__SYNC_MESSAGE__INIT;
        m.payload_case = SIRANNON__REPLICATION__V1__SYNC_MESSAGE__PAYLOAD_HELLO;
        m.hello = &h;
        n = sirannon__replication__v1__sync_message__get_packed_size(&m);
        if (!(buf = t->host->alloc(n ? n : 1)))
            return NULL;
        sirannon__replication__v1__sync_message__pack(&m, buf);
    } else {
        pb_rmsg m = SIRANNON__REPLICATION__V1__REPLICATION_MESSAGE__INIT;
        m.payload_case = SIRANNON__REPLICATION__V1__REPLICATION_MESSAGE__PAYLOAD_HELLO;
        m.hello = &h;
        n = sirannon__replication__v1__replication_message__get_packed_size(&m);
        if (!(buf = t->host->alloc(n ? n : 1)))
            return NULL;
        sirannon__replication__v1__replication_message__pack(&m, buf);
    }
    grpc_byte_buffer *bb = buffer_of(buf, n);
    t->host->free(buf);
    return bb;
}

/* A node id we can use: 1..255 bytes, no whitespace or control bytes. NULL or why not. */
static const char *id_problem(const char *id)
{
    if (!id || !*id)
        return "it is empty";
    if (strlen(id) > GC_ID_MAX)
        return "it is longer than 255 bytes";
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return "it holds whitespace or a control character";
    return NULL;
}

int gs_gc_hello_parse(gc_inst *t, int sync, const uint8_t *p, size_t len, gc_hello *h, char *why,
                      size_t why_size)
{
    memset(h, 0, sizeof *h);
    ProtobufCAllocator a = allocator_of(t);
    const pb_hello *hp = NULL;
    pb_rmsg *rm = NULL;
    pb_smsg *sm = NULL;
    if (sync) {
        sm = sirannon__replication__v1__sync_message__unpack(&a, len, p);
        if (!sm) {
            snprintf(why, why_size, "the first message is not a SyncMessage");
            return -1;
        }
        if (sm->payload_case == SIRANNON__REPLICATION__V1__SYNC_MESSAGE__PAYLOAD_HELLO)
            hp = sm->hello;
    } else {
        rm = sirannon__replication__v1__replication_message__unpack(&a, len, p);
        if (!rm) {
            snprintf(why, why_size, "the first message is not a ReplicationMessage");
            return -1;
        }
        if (rm->payload_case == SIRANNON__REPLICATION__V1__REPLICATION_MESSAGE__PAYLOAD_HELLO)
            hp = rm->hello;
    }
    int rc = -1;
    const char *bad;
    if (!hp)
        snprintf(why, why_size, "the first message is not a Hello (every stream starts with one)");
    else if ((bad = id_problem(hp->node_id)) != NULL)
        snprintf(why, why_size, "the Hello's node_id cannot be used: %s", bad);
    else {
        snprintf(h->node_id, sizeof h->node_id, "%s", hp->node_id);
        snprintf(h->role, sizeof h->role, "%s", hp->role ? hp->role : "");
        snprintf(h->group_id, sizeof h->group_id, "%s", hp->group_id ? hp->group_id : "");
        h->primary_term = hp->primary_term;
        snprintf(h->protocol_version, sizeof h->protocol_version, "%s",
                 hp->protocol_version ? hp->protocol_version : "");
        rc = 0;
    }
    if (sm)
        sirannon__replication__v1__sync_message__free_unpacked(sm, &a);
    if (rm)
        sirannon__replication__v1__replication_message__free_unpacked(rm, &a);
    return rc;
}

/* Read a varint at *pos; 0, or -1 past the end or over 10 bytes. */
static int varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (*pos >= len)
            return -1;
        uint8_t b = p[(*pos)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

int gs_gc_payload_field(const uint8_t *p, size_t len)
{
    size_t pos = 0;
    int last = 0;
    while (pos < len) {
        uint64_t key, v;
        if (varint(p, len, &pos, &key) != 0)
            return -1;
        uint64_t field = key >> 3;
        switch (key & 7) {
        case 0:
            if (varint(p, len, &pos, &v) != 0)
                return -1;
            break;
        case 1:
            if (len - pos < 8)
                return -1;
            pos += 8;
            break;
        case 2:
            if (varint(p, len, &pos, &v) != 0 || v > len - pos)
                return -1;
            pos += (size_t)v;
            if (field >= 1 && field <= 5)
                last = (int)field;
            break;
        case 5:
            if (len - pos < 4)
                return -1;
            pos += 4;
            break;
        default: return -1;
        }
        if (field == 0)
            return -1;
    }
    return last;
}

char *gs_gc_forward_request_id(gc_inst *t, const uint8_t *p, size_t len)
{
    ProtobufCAllocator a = allocator_of(t);
    pb_freq *r = sirannon__replication__v1__forward_request__unpack(&a, len, p);
    if (!r)
        return NULL;
    char *id = gs_gc_strdup(t->host, r->request_id ? r->request_id : "");
    sirannon__replication__v1__forward_request__free_unpacked(r, &a);
    return id;
}

grpc_slice gs_gc_forward_error(gc_inst *t, const char *request_id, const char *error)
{
    pb_fresp r = SIRANNON__REPLICATION__V1__FORWARD_RESPONSE__INIT;
    r.request_id = (char *)(request_id ? request_id : "");
    r.error = (char *)error;
    size_t n = sirannon__replication__v1__forward_response__get_packed_size(&r);
    uint8_t *buf = t->host->alloc(n ? n : 1);
    if (!buf)
        return grpc_empty_slice();
    sirannon__replication__v1__forward_response__pack(&r, buf);
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)buf, n);
    t->host->free(buf);
    return s;
}

int gs_gc_health_service(gc_inst *t, const uint8_t *p, size_t len, char *out, size_t out_size)
{
    ProtobufCAllocator a = allocator_of(t);
    Grpc__Health__V1__HealthCheckRequest *r =
        grpc__health__v1__health_check_request__unpack(&a, len, p);
    if (!r)
        return -1;
    snprintf(out, out_size, "%s", r->service ? r->service : "");
    grpc__health__v1__health_check_request__free_unpacked(r, &a);
    return 0;
}

grpc_byte_buffer *gs_gc_health_response(int status)
{
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    uint8_t buf[16];
    size_t n = grpc__health__v1__health_check_response__pack(&r, buf);
    return buffer_of(buf, n);
}
