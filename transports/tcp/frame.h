/*
 * tcp transport wire format: the frame codec and the hello payload codec.
 *
 * Promise: pure functions over caller-owned byte buffers. They allocate nothing, keep no
 * state, never read outside [buf, buf + len) and never trust a length before checking it
 * against the buffer and the configured limit, so they can be fuzzed on arbitrary bytes
 * (tests/fuzz/fuzz_tcp_frame.c compiles frame.c into the fuzz target directly: it needs only
 * libc, no host and no gnutls).
 *
 * A frame on the wire (all integers big-endian):
 *
 *   u32 length      bytes that follow this field (10 + payload); at most max_frame_bytes
 *   u8  frame type  1 hello, 2 message, 3 heartbeat, 4 close
 *   u8  msg type    message frames: the core's gs_repl_msg_type (1..4); other frames: 0
 *   u64 call id     message frames: the Forward call id (any value); other frames: 0
 *   payload         length - 10 bytes: hello = the hello payload below, message = the
 *                   core's opaque bytes, heartbeat = empty, close = a UTF-8 reason
 *                   (at most GS_TCP_CLOSE_REASON_MAX bytes)
 *
 * Hello payload, version 1:
 *
 *   u8  wire version      1
 *   u32 heartbeat_ms      the sender's heartbeat period (the receiver's silence limit is
 *                         3 x max(its own, this))
 *   i64 primary_term      >= 0, 0 = absent (static mode)
 *   u8 len + bytes        node id, 1..255 bytes, no control bytes or whitespace
 *   u8 len + bytes        role, "primary" or "replica"
 *   u8 len + bytes        group id, 0..255 bytes (0 = absent), no control bytes
 *   u8 len + bytes        protocol version, 0..63 bytes, no control bytes
 *
 * and nothing after it.
 *
 * Ownership: a decoded frame points into the caller's buffer (valid while it is); a decoded
 * hello is copied into the caller's struct. Threads: any; nothing is shared.
 */
#ifndef GS_TRANSPORT_TCP_FRAME_H
#define GS_TRANSPORT_TCP_FRAME_H

#include <stddef.h>
#include <stdint.h>

/** Bytes before the payload: length, frame type, message type, call id. */
#define GS_TCP_FRAME_HEADER 14
/** The least value of the length field (a frame with an empty payload). */
#define GS_TCP_FRAME_MIN_LENGTH 10
/** The greatest max_frame_bytes the 32-bit length field and the config accept (1 GiB). */
#define GS_TCP_FRAME_LIMIT_MAX 1073741824u
/** The least max_frame_bytes the config accepts (a hello must fit). */
#define GS_TCP_FRAME_LIMIT_MIN 1024u
/** Longest reason a close frame carries. */
#define GS_TCP_CLOSE_REASON_MAX 512
/** The hello payload layout this code writes and reads. */
#define GS_TCP_HELLO_VERSION 1
/** Longest hello payload: 1 + 4 + 8 + 4 length bytes + 255 + 7 + 255 + 63. */
#define GS_TCP_HELLO_MAX 597

typedef enum gs_tcp_frame_type {
    GS_TCP_FRAME_HELLO = 1,
    GS_TCP_FRAME_MESSAGE = 2,
    GS_TCP_FRAME_HEARTBEAT = 3,
    GS_TCP_FRAME_CLOSE = 4,
} gs_tcp_frame_type;

/** One decoded frame. payload points into the decoded buffer. */
typedef struct gs_tcp_frame {
    uint8_t frame_type; /**< gs_tcp_frame_type */
    uint8_t msg_type;   /**< 1..4 for message frames, else 0 */
    uint64_t call_id;
    const uint8_t *payload;
    size_t payload_len;
    size_t total_len; /**< bytes the frame takes in the buffer, length field included */
} gs_tcp_frame;

typedef enum gs_tcp_decode_result {
    GS_TCP_DECODE_ERROR = -1,    /**< the bytes break the format: close the connection */
    GS_TCP_DECODE_FRAME = 0,     /**< *out holds one frame */
    GS_TCP_DECODE_NEED_MORE = 1, /**< incomplete: *need is the byte count to wait for */
} gs_tcp_decode_result;

/**
 * Decode the frame at the start of buf[0..len). max_frame_bytes bounds the length field
 * (GS_TCP_FRAME_MIN_LENGTH..GS_TCP_FRAME_LIMIT_MAX; a value outside is clamped into it).
 * The length is checked as soon as its four bytes are there, so a caller that sizes its
 * buffer from *need never allocates more than max_frame_bytes + 4. On
 * GS_TCP_DECODE_NEED_MORE, *need (when need is not NULL) is the number of bytes from buf
 * the caller must hold before calling again: 4 until the length is known, then the whole
 * frame. On GS_TCP_DECODE_ERROR, why (when not NULL) says what is wrong, for a log line.
 */
gs_tcp_decode_result gs_tcp_frame_decode(const uint8_t *buf, size_t len, uint64_t max_frame_bytes,
                                         gs_tcp_frame *out, size_t *need, char *why,
                                         size_t why_size);

/**
 * Write a frame header for a payload of payload_len bytes into out[GS_TCP_FRAME_HEADER].
 * Returns the whole frame's size (header + payload), or 0 when payload_len does not fit
 * the length field.
 */
size_t gs_tcp_frame_header(uint8_t out[GS_TCP_FRAME_HEADER], gs_tcp_frame_type frame_type,
                           uint8_t msg_type, uint64_t call_id, size_t payload_len);

/** A hello, decoded (NUL-terminated copies) or to encode. */
typedef struct gs_tcp_hello {
    uint8_t version;       /**< GS_TCP_HELLO_VERSION */
    uint32_t heartbeat_ms; /**< 1..UINT32_MAX */
    int64_t primary_term;  /**< >= 0; 0 = absent */
    char node_id[256];
    char role[8]; /**< "primary" | "replica" */
    char group_id[256];
    char protocol_version[64];
} gs_tcp_hello;

/**
 * Encode h into out (cap bytes). Returns the payload length, or 0 when a field is invalid
 * (see the layout above) or cap is too small (GS_TCP_HELLO_MAX always suffices).
 */
size_t gs_tcp_hello_encode(const gs_tcp_hello *h, uint8_t *out, size_t cap);

/** Decode a hello payload. 0, or -1 with why filled. h is fully written either way. */
int gs_tcp_hello_decode(const uint8_t *buf, size_t len, gs_tcp_hello *h, char *why,
                        size_t why_size);

/** 1 when s (len bytes) is a usable node id: 1..255 bytes, no control bytes, no spaces. */
int gs_tcp_node_id_ok(const char *s, size_t len);

#endif
