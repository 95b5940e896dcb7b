/*
 * gs_error helpers: fill an error with the spec's code (07-errors) and a message for a
 * person, map a code to its HTTP status (05-server table), and render the wire envelope
 * {"error":{"code","message","details"?}}.
 */
#ifndef GS_BASE_ERROR_H
#define GS_BASE_ERROR_H

#include <gatestream/abi.h>
#include "buf.h"

#include <stdarg.h>

void gs_error_init(gs_error *err);
/** Sets code and message; status 0 = derive from the code. Returns GS_ERROR. */
gs_status gs_error_set(gs_error *err, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
gs_status gs_error_setv(gs_error *err, int status, const char *code, const char *fmt, va_list ap);
/** Prefix the existing message: "prefix: old message". */
void gs_error_prefix(gs_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** The HTTP status of a code per 05-server; unlisted codes give 500. */
int gs_error_code_status(const char *code);
/** err->status when set, else the code's status. */
int gs_error_status(const gs_error *err);
/** Append the wire envelope of err to b. */
void gs_error_to_json(const gs_error *err, gs_buf *b);
/** Copy src into dst (dst may be NULL). */
void gs_error_copy(gs_error *dst, const gs_error *src);

#endif
