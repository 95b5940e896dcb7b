/*
 * Logging: one line per event to stderr: "2026-11-22T05:34:53.123Z INFO http: message".
 * Thread-safe (one write(2) per line). Never log SQL text, parameters or credentials.
 */
#ifndef GS_BASE_LOG_H
#define GS_BASE_LOG_H

#include <gatestream/host.h>

void gs_log(gs_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void gs_logv(gs_log_level level, const char *component, const char *fmt, va_list ap);
void gs_log_set_level(gs_log_level level);
gs_log_level gs_log_get_level(void);
/** Parse "error"|"warn"|"info"|"debug"; -1 when unknown. */
int gs_log_level_parse(const char *s);

#endif
