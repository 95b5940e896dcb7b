/*
 * sql_allowlist: per database, only listed statements may run (a hook plugin).
 *
 * Every statement the core is about to run (SQL routes, transactions, batches, and the
 * statements of registered operations) reaches before_query; with allow_registered the
 * statements of registered operations (ctx->operation set, ABI 1.2) pass unchecked. The plugin
 * normalises its text (see sqlal_normalise) and lets it run when the normalised text, or
 * "sha256:<hex>" of it, is listed for that database. Anything else is refused with 403
 * FORBIDDEN_SQL; the message names the database and never echoes the SQL.
 *
 * Promise: the instance is immutable after create, so before_query runs concurrently on any
 * core thread without a lock and never blocks.
 * Ownership: create copies what it keeps into host memory; destroy frees it.
 * Threads: create/destroy on the core's main thread; before_query on any core thread.
 */
#include "sha256.h"

#include <gatestream/hook.h>

#include <stddef.h>
#include <string.h>

typedef struct sqlal_db_config {
    const char *database;         /**< a database id, or "*" for every database not listed */
    gs_config_strings statements; /**< normalised SQL text or "sha256:<64 hex>" */
} sqlal_db_config;

typedef struct sqlal_config {
    gs_config_list databases; /**< of sqlal_db_config */
    int allow_registered;     /**< statements of registered operations pass unchecked */
} sqlal_config;

static const gs_config_key sqlal_db_keys[] = {
    {.name = "database",
     .type = GS_CFG_STRING,
     .required = 1,
     .offset = offsetof(sqlal_db_config, database),
     .help = "database id the list applies to, or \"*\" for every database not listed"},
    {.name = "statements",
     .type = GS_CFG_STRING_LIST,
     .offset = offsetof(sqlal_db_config, statements),
     .help = "allowed statements: SQL text (normalised before comparing) or "
             "sha256:<64 hex> of the normalised text; absent or [] = none"},
};

static const gs_config_key sqlal_keys[] = {
    {.name = "databases",
     .type = GS_CFG_LIST,
     .required = 1,
     .offset = offsetof(sqlal_config, databases),
     .help = "one entry per database: {database, statements}; a database with no entry "
             "(and no \"*\" entry) runs no statement at all",
     .children = sqlal_db_keys,
     .child_count = sizeof sqlal_db_keys / sizeof sqlal_db_keys[0],
     .child_struct_size = sizeof(sqlal_db_config)},
    {.name = "allow_registered",
     .type = GS_CFG_BOOL,
     .default_value = "false",
     .offset = offsetof(sqlal_config, allow_registered),
     .help = "true: statements of registered operations (server.operations) run without "
             "being listed; false: they must be listed like any other"},
};

/* One database's list: every entry stored as the 64-hex SHA-256 of the normalised text. */
typedef struct sqlal_db {
    char *database;
    char (*digests)[65];
    size_t count;
} sqlal_db;

typedef struct sqlal_instance {
    const gs_host *host;
    sqlal_db *dbs;
    size_t db_count;
    int allow_registered;
} sqlal_instance;

#define SQLAL_FAIL(host, err, ...) ((host)->error_set((err), __VA_ARGS__), GS_ERROR)

static int sqlal_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/*
 * The normal form (documented in README.md): outside quoted text ('..', "..", `..`, [..]),
 * every run of whitespace becomes one space and ASCII letters fold to lower case; quoted text
 * is copied byte for byte (a doubled quote inside stays). Leading whitespace and any trailing
 * run of ';' and whitespace are removed. out needs strlen(sql) + 1 bytes.
 */
static void sqlal_normalise(const char *sql, char *out)
{
    size_t n = 0;
    const char *p = sql;
    int pending_space = 0;
    while (*p) {
        char c = *p;
        if (sqlal_space(c)) {
            pending_space = n > 0;
            p++;
            continue;
        }
        if (pending_space) {
            out[n++] = ' ';
            pending_space = 0;
        }
        if (c == '\'' || c == '"' || c == '`' || c == '[') {
            char close = c == '[' ? ']' : c;
            out[n++] = *p++;
            while (*p) {
                if (*p == close) {
                    if (close != ']' && p[1] == close) { /* doubled quote: still inside */
                        out[n++] = *p++;
                        out[n++] = *p++;
                        continue;
                    }
                    out[n++] = *p++;
                    break;
                }
                out[n++] = *p++;
            }
            continue;
        }
        out[n++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        p++;
    }
    while (n > 0 && (out[n - 1] == ';' || out[n - 1] == ' '))
        n--;
    out[n] = '\0';
}

/* "sha256:<64 hex>" (either case) into a lowercase digest; 0 when s is not one. */
static int sqlal_parse_digest(const char *s, char out[65])
{
    if (strncmp(s, "sha256:", 7) != 0)
        return 0;
    s += 7;
    if (strlen(s) != 64)
        return -1;
    for (int i = 0; i < 64; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return -1;
        out[i] = c;
    }
    out[64] = '\0';
    return 1;
}

/* The digest of sql's normal form; GS_ERROR when out of memory. */
static gs_status sqlal_digest_sql(const gs_host *host, const char *sql, char out[65])
{
    size_t len = strlen(sql);
    char stackbuf[1024];
    char *norm = len < sizeof stackbuf ? stackbuf : host->alloc(len + 1);
    if (!norm)
        return GS_ERROR;
    sqlal_normalise(sql, norm);
    sqlal_sha256_hex(norm, strlen(norm), out);
    if (norm != stackbuf)
        host->free(norm);
    return GS_OK;
}

static void sqlal_destroy(void *instance)
{
    sqlal_instance *in = instance;
    if (!in)
        return;
    for (size_t i = 0; i < in->db_count; i++) {
        in->host->free(in->dbs[i].database);
        in->host->free(in->dbs[i].digests);
    }
    in->host->free(in->dbs);
    in->host->free(in);
}

static gs_status sqlal_create(const gs_host *host, const void *config, void **instance,
                              gs_error *err)
{
    const sqlal_config *cfg = config;
    const sqlal_db_config *items = cfg->databases.items;
    *instance = NULL;
    if (cfg->databases.count == 0)
        return SQLAL_FAIL(host, err, 0, "INVALID_CONFIG",
                          "databases is empty; list at least one {database, statements} entry");
    for (size_t i = 0; i < cfg->databases.count; i++) {
        if (!items[i].database || !items[i].database[0])
            return SQLAL_FAIL(host, err, 0, "INVALID_CONFIG", "databases[%zu].database is empty",
                              i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(items[j].database, items[i].database) == 0)
                return SQLAL_FAIL(host, err, 0, "INVALID_CONFIG",
                                  "databases[%zu]: database '%s' is listed twice; merge the "
                                  "entries",
                                  i, items[i].database);
        for (size_t k = 0; k < items[i].statements.count; k++) {
            const char *s = items[i].statements.items[k];
            char d[65];
            if (!s || sqlal_parse_digest(s, d) < 0)
                return SQLAL_FAIL(host, err, 0, "INVALID_CONFIG",
                                  "databases[%zu].statements[%zu]: a sha256: entry needs exactly "
                                  "64 hex digits",
                                  i, k);
            if (!s[0] || strspn(s, " \t\r\n\f\v;") == strlen(s))
                return SQLAL_FAIL(host, err, 0, "INVALID_CONFIG",
                                  "databases[%zu].statements[%zu] is empty", i, k);
        }
    }

    sqlal_instance *in = host->alloc(sizeof *in);
    if (!in)
        return SQLAL_FAIL(host, err, 500, "INTERNAL_ERROR", "out of memory");
    memset(in, 0, sizeof *in);
    in->host = host;
    in->allow_registered = cfg->allow_registered;
    in->dbs = host->alloc(cfg->databases.count * sizeof *in->dbs);
    if (!in->dbs) {
        sqlal_destroy(in);
        return SQLAL_FAIL(host, err, 500, "INTERNAL_ERROR", "out of memory");
    }
    memset(in->dbs, 0, cfg->databases.count * sizeof *in->dbs);
    size_t total = 0;
    for (size_t i = 0; i < cfg->databases.count; i++) {
        sqlal_db *db = &in->dbs[i];
        in->db_count = i + 1;
        size_t n = strlen(items[i].database);
        db->database = host->alloc(n + 1);
        size_t count = items[i].statements.count;
        db->digests = count ? host->alloc(count * sizeof *db->digests) : NULL;
        if (!db->database || (count && !db->digests)) {
            sqlal_destroy(in);
            return SQLAL_FAIL(host, err, 500, "INTERNAL_ERROR", "out of memory");
        }
        memcpy(db->database, items[i].database, n + 1);
        for (size_t k = 0; k < count; k++) {
            const char *s = items[i].statements.items[k];
            if (sqlal_parse_digest(s, db->digests[k]) == 1)
                continue;
            if (sqlal_digest_sql(host, s, db->digests[k]) != GS_OK) {
                sqlal_destroy(in);
                return SQLAL_FAIL(host, err, 500, "INTERNAL_ERROR", "out of memory");
            }
        }
        db->count = count;
        total += count;
    }
    host->log(host, GS_LOG_INFO, "sql_allowlist", "%zu database list(s), %zu statement(s)",
              in->db_count, total);
    *instance = in;
    return GS_OK;
}

static const sqlal_db *sqlal_find(const sqlal_instance *in, const char *database_id)
{
    const sqlal_db *star = NULL;
    for (size_t i = 0; i < in->db_count; i++) {
        if (database_id && strcmp(in->dbs[i].database, database_id) == 0)
            return &in->dbs[i];
        if (strcmp(in->dbs[i].database, "*") == 0)
            star = &in->dbs[i];
    }
    return star;
}

static gs_status sqlal_before_query(void *instance, const gs_query_context *ctx, gs_error *err)
{
    const sqlal_instance *in = instance;
    const char *id = ctx->database_id ? ctx->database_id : "?";
    if (in->allow_registered && GS_HAS_MEMBER(gs_query_context, operation, ctx->struct_size) &&
        ctx->operation)
        return GS_OK;
    const sqlal_db *db = sqlal_find(in, ctx->database_id);
    if (db && ctx->sql) {
        char digest[65];
        if (sqlal_digest_sql(in->host, ctx->sql, digest) != GS_OK)
            return SQLAL_FAIL(in->host, err, 500, "HOOK_ERROR",
                              "sql_allowlist ran out of memory checking a statement on "
                              "database '%s'",
                              id);
        for (size_t i = 0; i < db->count; i++)
            if (memcmp(db->digests[i], digest, 64) == 0)
                return GS_OK;
    }
    return SQLAL_FAIL(in->host, err, 403, "FORBIDDEN_SQL",
                      "this statement is not on the SQL allowlist of database '%s'; ask the "
                      "operator to add it to the sql_allowlist hook's statements",
                      id);
}

static const gs_hook_vtable sqlal_vtable = {
    .struct_size = sizeof(gs_hook_vtable),
    .create = sqlal_create,
    .destroy = sqlal_destroy,
    .before_query = sqlal_before_query,
};

static const gs_plugin_descriptor sqlal_descriptor = {
    .struct_size = sizeof(gs_plugin_descriptor),
    .abi_major = GS_ABI_MAJOR,
    .abi_minor = GS_ABI_MINOR,
    .kind = GS_KIND_HOOK,
    .name = "sql_allowlist",
    .version = "1.0.0",
    .build_signature = GS_BUILD_SIGNATURE,
    .vtable = &sqlal_vtable,
    .config_keys = sqlal_keys,
    .config_key_count = sizeof sqlal_keys / sizeof sqlal_keys[0],
    .config_key_size = sizeof(gs_config_key),
    .config_struct_size = sizeof(sqlal_config),
    .description = "sql_allowlist hook: per database, only listed statements run",
};

GS_PLUGIN_DEFINE(sqlal_descriptor)
