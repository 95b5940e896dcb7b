/*
 * The registry of named databases (spec 02 Registry and Lifecycle): open, close, get,
 * resolve with auto-open of tenant databases through a path resolver, list, shutdown.
 *
 * A database handed out by gs_registry_acquire holds a reference: it stays valid (though it
 * may report DATABASE_CLOSED) until gs_registry_release. Concurrent acquires of one
 * unregistered id share one auto-open.
 *
 * Threads: every function is thread-safe.
 */
#ifndef GS_DB_REGISTRY_H
#define GS_DB_REGISTRY_H

#include "database.h"
#include "migrations.h"

typedef struct gs_registry gs_registry;

/**
 * Lifecycle callbacks (spec 02 Hooks: beforeConnect, databaseOpen, databaseClose), so the
 * registry need not know about plugins. Every member may be NULL. None is called with the
 * registry lock held; each must not block and must not call back into the registry.
 */
typedef struct gs_registry_events {
    /** Before a file opens: GS_ERROR denies (err set, HOOK_DENIED when left empty). */
    gs_status (*before_connect)(void *user, const char *id, const char *path, gs_error *err);
    /** After a database opened (and migrated), just before it is registered: no request
     * reaches it before this returned. */
    void (*opened)(void *user, const char *id, const char *path);
    /** After a database that `opened` announced was closed (close, eviction, shutdown). */
    void (*closed)(void *user, const char *id, const char *path);
    void *user;
} gs_registry_events;

typedef struct gs_registry_options {
    /** Auto-open: when set, an unknown id that passes gs_tenant_id_valid opens
     * "<tenant_dir>/<id><tenant_extension>". */
    const char *tenant_dir;
    const char *tenant_extension; /**< default ".db" */
    int tenant_create;            /**< create missing tenant files (default 0: only existing) */
    gs_db_options tenant_options; /**< options for auto-opened databases */
    int64_t max_open;             /**< 0 = unlimited; else MAX_DATABASES past it */
    /** Registry migrations (spec 02): when set, every open (direct or auto) applies the
     * pending ones before the database is registered; a read-only open skips them. A
     * migration failure closes the database, leaves it unregistered and returns the
     * migration's error unchanged; any other failure of the step is DATABASE_OPEN_FAILED.
     * Copied by gs_registry_new. */
    const gs_migration_set *migrations;
    /** Idle closing (spec 02 Lifecycle Management): when above zero, a registry thread checks
     * every gs_registry_idle_interval_ms(idle_timeout_ms) and closes and unregisters each
     * auto-opened tenant database that holds no reference and saw no acquire or release for
     * idle_timeout_ms (events.closed fires); the next acquire reopens it. Databases opened with
     * gs_registry_open are never idle-closed (nothing could reopen them). 0 disables (no
     * thread is started). The thread is joined by gs_registry_shutdown / gs_registry_free. */
    int64_t idle_timeout_ms;
    /** Lifecycle callbacks; copied (the user pointer must outlive the registry's shutdown). */
    gs_registry_events events;
} gs_registry_options;

void gs_registry_options_default(gs_registry_options *o);
gs_registry *gs_registry_new(const gs_registry_options *opts);
/** Open and register; DATABASE_ALREADY_EXISTS, SHUTDOWN, DATABASE_OPEN_FAILED. */
gs_status gs_registry_open(gs_registry *reg, const char *id, const char *path,
                           const gs_db_options *opts, gs_error *err);
/** Close and unregister; DATABASE_NOT_FOUND. */
gs_status gs_registry_close(gs_registry *reg, const char *id, gs_error *err);
/** Find or auto-open `id`; NULL with DATABASE_NOT_FOUND (or SHUTDOWN, MAX_DATABASES,
 * DATABASE_OPEN_FAILED) in err. Release the reference with gs_registry_release. */
gs_database *gs_registry_acquire(gs_registry *reg, const char *id, gs_error *err);
void gs_registry_release(gs_registry *reg, gs_database *db);
/** Visit every registered database (under the registry lock: do not call back in). */
void gs_registry_each(gs_registry *reg, void (*fn)(void *user, gs_database *db), void *user);
/** Close every database (drain writes, checkpoint) and refuse further opens. Idempotent. */
void gs_registry_shutdown(gs_registry *reg);
void gs_registry_free(gs_registry *reg);
/** The registry's migration set (spec registryMigrations()), or NULL when none. */
const gs_migration_set *gs_registry_migrations(const gs_registry *reg);

/** The idle check's interval: min(max(floor(timeout / 2), 100), 60000) ms. */
int64_t gs_registry_idle_interval_ms(int64_t idle_timeout_ms);

/** ^[a-zA-Z0-9][a-zA-Z0-9_-]*$ and at most 255 bytes. */
int gs_tenant_id_valid(const char *id);

#endif
