#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void gs_error_init(gs_error *err)
{
    if (!err)
        return;
    memset(err, 0, sizeof *err);
    err->struct_size = sizeof *err;
}

static void set_code(gs_error *err, const char *code)
{
    snprintf(err->code, sizeof err->code, "%s", code ? code : "INTERNAL_ERROR");
}

gs_status gs_error_setv(gs_error *err, int status, const char *code, const char *fmt, va_list ap)
{
    if (!err)
        return GS_ERROR;
    err->struct_size = sizeof *err;
    err->status = status;
    set_code(err, code);
    err->details[0] = '\0';
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    return GS_ERROR;
}

gs_status gs_error_set(gs_error *err, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gs_error_setv(err, status, code, fmt, ap);
    va_end(ap);
    return GS_ERROR;
}

void gs_error_prefix(gs_error *err, const char *fmt, ...)
{
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char old[sizeof err->message];
    memcpy(old, err->message, sizeof old);
    snprintf(err->message, sizeof err->message, "%s: %s", prefix, old);
}

/* The status table of 05-server; unlisted codes give 500. */
static const struct {
    const char *code;
    int status;
} status_table[] = {
    {"INVALID_REQUEST", 400},
    {"INVALID_JSON", 400},
    {"EMPTY_BODY", 400},
    {"QUERY_ERROR", 400},
    {"TRANSACTION_ERROR", 400},
    {"INVALID_DURABILITY", 400},
    {"INVALID_SYNCHRONOUS", 400},
    {"BATCH_VALIDATION_ERROR", 400},
    {"MISSING_ARGUMENT", 400},
    {"ARGUMENT_NOT_ALLOWED", 400},
    {"UNSUPPORTED_SUBPROTOCOL", 400},
    {"SNAPSHOT_UNSUPPORTED", 400},
    {"IDENTITY_REQUIRED", 401},
    {"READ_ONLY", 403},
    {"FORBIDDEN_SQL", 403},
    {"HOOK_DENIED", 403},
    {"SQL_NOT_ACCEPTED", 403},
    {"BACKUP_RESTORE_NOT_ACCEPTED", 403},
    {"DATABASE_NOT_FOUND", 404},
    {"NOT_FOUND", 404},
    {"UNKNOWN_QUERY", 404},
    {"STALE_PRIMARY", 409},
    {"PROTOCOL_VERSION_MISMATCH", 409},
    {"MIGRATION_REQUIRED", 409},
    {"SCHEMA_AHEAD", 409},
    {"REGISTRY_MISMATCH", 409},
    {"BACKUP_CHAIN_BROKEN", 409},
    {"BACKUP_RESTORE_IN_PROGRESS", 409},
    {"PAYLOAD_TOO_LARGE", 413},
    {"INTERNAL_ERROR", 500},
    {"HOOK_ERROR", 500},
    {"WRITER_WORKER_TIMEOUT", 500},
    {"BULK_LOAD_UNSUPPORTED", 501},
    {"SYNC_UNSUPPORTED", 501},
    {"BACKUP_UNSUPPORTED", 501},
    {"BACKUP_DESTINATION_ERROR", 502},
    {"DATABASE_CLOSED", 503},
    {"SHUTDOWN", 503},
    {"READ_CONCERN_ERROR", 503},
    {"COORDINATOR_UNAVAILABLE", 503},
    {"AUTHORITY_LOST", 503},
    {"NO_SAFE_PRIMARY", 503},
    {"NODE_NOT_IN_SYNC", 503},
    {"NODE_DRAINING", 503},
    {"UNSAFE_RECOVERY_REQUIRED", 503},
    {"WRITE_OVERLOADED", 503},
};

int gs_error_code_status(const char *code)
{
    for (size_t i = 0; i < sizeof status_table / sizeof status_table[0]; i++)
        if (strcmp(status_table[i].code, code) == 0)
            return status_table[i].status;
    return 500;
}

int gs_error_status(const gs_error *err)
{
    return err->status > 0 ? err->status : gs_error_code_status(err->code);
}

void gs_error_to_json(const gs_error *err, gs_buf *b)
{
    gs_buf_puts(b, "{\"error\":{\"code\":");
    gs_buf_json_string(b, err->code, strlen(err->code));
    gs_buf_puts(b, ",\"message\":");
    gs_buf_json_string(b, err->message, strlen(err->message));
    /* details only when it is a non-empty object */
    if (err->details[0] && strcmp(err->details, "{}") != 0) {
        gs_buf_puts(b, ",\"details\":");
        gs_buf_puts(b, err->details);
    }
    gs_buf_puts(b, "}}");
}

void gs_error_copy(gs_error *dst, const gs_error *src)
{
    if (dst && src)
        memcpy(dst, src, sizeof *dst);
}
