/*
 * The afterQuery hook event (spec 02 Hooks): what a statement operation was, captured when it
 * is submitted, and the call of every hook's after_query once the database answered.
 *
 * Ownership: gs_api_after_begin returns a record owned by the caller (the statement runner),
 * consumed by gs_api_after_end or gs_api_after_drop. Threads: begin runs on the submitting
 * thread, end on the database thread that answers; the hooks must not block.
 */
#include "api_internal.h"

#include "../base/alloc.h"
#include "../base/buf.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct gs_api_after {
    struct timespec start;
    char *database_id;
    char *sql;           /* the statements joined by ";\n" */
    char *identity_json; /* json_dumps: free() */
    char *operation;     /* the registered operation's name, or NULL */
    int is_write;
};

static int hook_has_after(const gs_api_hook *h)
{
    return GS_HAS_MEMBER(gs_hook_vtable, after_query, h->vt->struct_size) && h->vt->after_query;
}

gs_api_after *gs_api_after_begin(gs_api *api, const char *database_id, const char *operation,
                                 const gs_db_stmt *stmts, size_t stmt_count, json_t *identity,
                                 int is_write)
{
    int any = 0;
    for (size_t i = 0; i < api->hook_count && !any; i++)
        any = hook_has_after(&api->hooks[i]);
    if (!any)
        return NULL;
    gs_api_after *a = gs_calloc(1, sizeof *a);
    if (!a)
        return NULL; /* out of memory: the observation is lost, the statement still runs */
    clock_gettime(CLOCK_MONOTONIC, &a->start);
    a->is_write = is_write;
    a->database_id = gs_strdup(database_id ? database_id : "");
    a->operation = operation ? gs_strdup(operation) : NULL;
    gs_buf b;
    gs_buf_init(&b);
    for (size_t i = 0; i < stmt_count; i++) {
        if (i)
            gs_buf_puts(&b, ";\n");
        gs_buf_puts(&b, stmts[i].sql ? stmts[i].sql : "");
    }
    int oom = b.oom;
    a->sql = oom ? NULL : gs_buf_take(&b, NULL);
    gs_buf_free(&b);
    if (!oom && !a->sql) /* no statement text at all */
        a->sql = gs_strdup("");
    if (identity)
        a->identity_json = json_dumps(identity, JSON_COMPACT);
    if (!a->database_id || !a->sql || (operation && !a->operation)) {
        gs_api_after_drop(a);
        return NULL;
    }
    return a;
}

void gs_api_after_end(gs_api *api, gs_api_after *a, int failed)
{
    if (!a)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double ms = (double)(now.tv_sec - a->start.tv_sec) * 1e3 +
                (double)(now.tv_nsec - a->start.tv_nsec) / 1e6;
    gs_query_context ctx = {.struct_size = sizeof ctx,
                            .database_id = a->database_id,
                            .sql = a->sql,
                            .params_json = NULL,
                            .identity_json = a->identity_json,
                            .is_write = a->is_write,
                            .operation = a->operation};
    for (size_t i = 0; i < api->hook_count; i++)
        if (hook_has_after(&api->hooks[i]))
            api->hooks[i].vt->after_query(api->hooks[i].instance, &ctx, ms, failed ? 1 : 0);
    gs_api_after_drop(a);
}

void gs_api_after_drop(gs_api_after *a)
{
    if (!a)
        return;
    gs_free(a->database_id);
    gs_free(a->sql);
    gs_free(a->operation);
    free(a->identity_json);
    gs_free(a);
}
