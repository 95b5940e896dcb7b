/*
 * Registered operations (spec 05-server): named reads and writes declared in config, served
 * at /db/{id}/query/{name} and /db/{id}/execute/{name}. Resolves a request's args against
 * the declared args and fromIdentity, and computes registry.digest for /capabilities.
 *
 * Immutable after gs_operations_build: safe to read from any thread.
 */
#ifndef GS_API_OPERATIONS_H
#define GS_API_OPERATIONS_H

#include <gatestream/abi.h>
#include <jansson.h>

typedef struct gs_operations gs_operations;

typedef enum gs_op_kind { GS_OP_READ = 1, GS_OP_WRITE = 2 } gs_op_kind;

typedef struct gs_operation {
    char *database;
    char *name;
    gs_op_kind kind;
    char **statements; /* read: exactly one */
    size_t statement_count;
    char **args; /* declared argument names */
    size_t arg_count;
    char **identity_args;   /* fromIdentity: argument names ... */
    char **identity_fields; /* ... and the identity field each takes */
    size_t identity_count;
} gs_operation;

gs_operations *gs_operations_new(void);
/** Add one operation (copied). INVALID_CONFIG on a duplicate (database, name) or bad shape. */
gs_status gs_operations_add(gs_operations *ops, const gs_operation *op, gs_error *err);
/** Finish: compute the digest. */
gs_status gs_operations_build(gs_operations *ops, gs_error *err);
void gs_operations_free(gs_operations *ops);

size_t gs_operations_count(const gs_operations *ops);
/** 64 lowercase hex characters. */
const char *gs_operations_digest(const gs_operations *ops);
const gs_operation *gs_operations_find(const gs_operations *ops, const char *database,
                                       const char *name, gs_op_kind kind);
/** Any operation of that name for the database, whatever its kind. */
const gs_operation *gs_operations_find_any(const gs_operations *ops, const char *database,
                                           const char *name);

/**
 * Resolve the named parameters for one call: `args` is the request's args (NULL or a JSON
 * object), `identity` the authenticated identity (NULL when anonymous). Returns a new JSON
 * object (caller decrefs) or NULL with ARGUMENT_NOT_ALLOWED, MISSING_ARGUMENT,
 * IDENTITY_REQUIRED or INVALID_REQUEST in err.
 */
json_t *gs_operation_resolve_args(const gs_operation *op, json_t *args, json_t *identity,
                                  gs_error *err);

#endif
