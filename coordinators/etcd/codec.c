/*
 * protobuf-c and gRPC byte buffers for the etcd coordinator: packing a request into a byte
 * buffer, unpacking a response with the host allocator, and a small arena holding the message
 * trees of one request (a txn with nested branches, keys with the prefix prepended) so they
 * are freed in one go. Thread-safe: nothing here is shared.
 */
#include "etcd_internal.h"

#include <grpc/byte_buffer_reader.h>

#include <string.h>

static void *pb_alloc(void *data, size_t size)
{
    const gs_host *host = data;
    return host->alloc(size ? size : 1);
}

static void pb_free(void *data, void *ptr)
{
    const gs_host *host = data;
    host->free(ptr);
}

ProtobufCAllocator gs_etcd_pb_allocator(const gs_host *host)
{
    ProtobufCAllocator a = {pb_alloc, pb_free, (void *)host};
    return a;
}

grpc_byte_buffer *gs_etcd_pack(const gs_host *host, const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = host->alloc(n ? n : 1);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(msg, buf);
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)buf, n);
    host->free(buf);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

ProtobufCMessage *gs_etcd_unpack(const gs_host *host, const ProtobufCMessageDescriptor *desc,
                                 grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader r;
    if (!bb || !grpc_byte_buffer_reader_init(&r, bb))
        return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    ProtobufCAllocator a = gs_etcd_pb_allocator(host);
    ProtobufCMessage *m =
        protobuf_c_message_unpack(desc, &a, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    return m;
}

void gs_etcd_free_msg(const gs_host *host, ProtobufCMessage *msg)
{
    if (!msg)
        return;
    ProtobufCAllocator a = gs_etcd_pb_allocator(host);
    protobuf_c_message_free_unpacked(msg, &a);
}

/* ------------------------------------------------------------------------------------------ */
/* Arena                                                                                      */

typedef struct ec_chunk {
    struct ec_chunk *next;
    max_align_t data[];
} ec_chunk;

void *gs_etcd_arena_alloc(ec_arena *a, size_t n)
{
    if (n > SIZE_MAX - sizeof(ec_chunk)) {
        a->failed = 1;
        return NULL;
    }
    ec_chunk *c = a->host->alloc(sizeof *c + (n ? n : 1));
    if (!c) {
        a->failed = 1;
        return NULL;
    }
    c->next = a->chunks;
    a->chunks = c;
    memset(c->data, 0, n);
    return c->data;
}

ProtobufCBinaryData gs_etcd_arena_key(ec_arena *a, const char *prefix, size_t prefix_len,
                                      const uint8_t *key, size_t key_len)
{
    ProtobufCBinaryData d = {0, NULL};
    uint8_t *p = gs_etcd_arena_alloc(a, prefix_len + key_len);
    if (!p)
        return d;
    memcpy(p, prefix, prefix_len);
    if (key_len)
        memcpy(p + prefix_len, key, key_len);
    d.len = prefix_len + key_len;
    d.data = p;
    return d;
}

ProtobufCBinaryData gs_etcd_range_end(ec_arena *a, ProtobufCBinaryData k)
{
    ProtobufCBinaryData d = {0, NULL};
    size_t n = k.len;
    while (n && k.data[n - 1] == 0xff)
        n--;
    if (!n) {
        /* Every byte is 0xff: etcd reads "\0" as "to the end of the key space". */
        uint8_t *p = gs_etcd_arena_alloc(a, 1);
        if (p) {
            p[0] = 0;
            d.len = 1;
            d.data = p;
        }
        return d;
    }
    uint8_t *p = gs_etcd_arena_alloc(a, n);
    if (!p)
        return d;
    memcpy(p, k.data, n);
    p[n - 1]++;
    d.len = n;
    d.data = p;
    return d;
}

void gs_etcd_arena_free(ec_arena *a)
{
    ec_chunk *c = a->chunks;
    while (c) {
        ec_chunk *next = c->next;
        a->host->free(c);
        c = next;
    }
    a->chunks = NULL;
}
