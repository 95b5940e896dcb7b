/*
 * A growable byte buffer used to build JSON and log lines. An allocation failure sets
 * `oom` and turns later appends into no-ops, so callers check once at the end.
 * Not thread-safe; one owner at a time.
 */
#ifndef GS_BASE_BUF_H
#define GS_BASE_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct gs_buf {
    char *data; /**< NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
    int oom;
} gs_buf;

void gs_buf_init(gs_buf *b);
void gs_buf_free(gs_buf *b);
void gs_buf_reset(gs_buf *b); /**< len = 0, keeps capacity */
int gs_buf_reserve(gs_buf *b, size_t extra);
void gs_buf_append(gs_buf *b, const void *data, size_t len);
void gs_buf_puts(gs_buf *b, const char *s);
void gs_buf_putc(gs_buf *b, char c);
void gs_buf_printf(gs_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Append s as a JSON string literal with quotes; invalid UTF-8 bytes become U+FFFD. */
void gs_buf_json_string(gs_buf *b, const char *s, size_t len);
/** Append a double in the shortest form that round-trips (JSON; NaN/Inf become null). */
void gs_buf_json_double(gs_buf *b, double d);
void gs_buf_json_int(gs_buf *b, int64_t v);
/** Append uppercase hex of bytes. */
void gs_buf_hex_upper(gs_buf *b, const uint8_t *p, size_t len);
/** Hand the data to the caller (gs_free it); the buffer is empty afterwards. */
char *gs_buf_take(gs_buf *b, size_t *len);

#endif
