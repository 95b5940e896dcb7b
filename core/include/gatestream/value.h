/*
 * Tagged SQLite values as they cross the ABI: int64, double, text, blob, null.
 * On the JSON wire an integer outside +/-(2^53-1) travels as {"__sirannon_int":"<dec>"} and
 * every BLOB as {"__sirannon_blob":"<UPPERCASE hex>"} (spec 02, tagged value encoding).
 * Ownership: text and blob point into storage owned by whoever built the value.
 */
#ifndef GATESTREAM_VALUE_H
#define GATESTREAM_VALUE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gs_value_type {
    GS_VALUE_NULL = 0,
    GS_VALUE_INT = 1,
    GS_VALUE_DOUBLE = 2,
    GS_VALUE_TEXT = 3,
    GS_VALUE_BLOB = 4,
} gs_value_type;

/** @since 1.0 */
typedef struct gs_value {
    gs_value_type type;
    union {
        int64_t i;
        double d;
        struct {
            const char *ptr; /**< UTF-8, not necessarily NUL-terminated */
            size_t len;
        } text;
        struct {
            const uint8_t *ptr;
            size_t len;
        } blob;
    } u;
} gs_value;

/** The largest integer a JSON number carries exactly: 2^53 - 1. */
#define GS_SAFE_INT_MAX ((int64_t)9007199254740991LL)

#ifdef __cplusplus
}
#endif
#endif
