/*
 * The registry of named databases (spec 02 Registry and Lifecycle Management).
 *
 * Each id maps to an entry that is OPENING (a thread is opening the file outside the lock;
 * others asking for the same id wait on `cond` and share the outcome) or OPEN. An entry counts
 * its references (handed out by acquire, plus one held by any thread closing it); a database
 * that was closed or evicted is freed by whoever drops the last reference. No database is
 * opened or closed while the registry lock is held. With idle_timeout_ms > 0 one registry
 * thread (idle_main) closes idle tenant databases; shutdown stops and joins it first.
 */
#include "registry.h"

#include "database_internal.h"

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

enum { E_OPENING = 1, E_OPEN = 2, E_FAILED = 3 };

typedef struct entry {
    struct entry *hnext;
    char *id;
    gs_database *db;
    int state;
    int registered; /* in the map */
    int announced;  /* events.opened was called: events.closed follows the close */
    int refs;
    int tenant; /* auto-opened by acquire: the idle check may close it */
    uint64_t last_used;
    int64_t used_ms;   /* monotonic ms of the last acquire or release */
    gs_error open_err; /* E_FAILED: what the waiters get */
} entry;

struct gs_registry {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* an open finished, or a shutdown finished */
    char *tenant_dir;
    char *tenant_ext;
    char *tenant_sync;
    int tenant_create;
    gs_db_options tenant_options;
    int64_t max_open;
    gs_migration_set *migrations; /* applied on every open; NULL = no migration step */
    gs_registry_events events;
    entry **buckets;
    size_t nbuckets;
    size_t count;   /* registered entries, opening ones included */
    size_t opening; /* entries in E_OPENING */
    uint64_t tick;
    int shutdown;
    int shutdown_done;
    /* idle closing (idle_timeout_ms > 0): a thread checks every idle_interval_ms */
    int64_t idle_timeout_ms;
    int64_t idle_interval_ms;
    pthread_t idle_thread;
    pthread_cond_t idle_cond; /* CLOCK_MONOTONIC; signalled when the thread must stop */
    int idle_running;         /* the thread was started and not yet joined */
    int idle_stop;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t gs_registry_idle_interval_ms(int64_t idle_timeout_ms)
{
    int64_t half = idle_timeout_ms / 2;
    if (half < 100)
        half = 100;
    return half > 60000 ? 60000 : half;
}

int gs_tenant_id_valid(const char *id)
{
    if (!id || !id[0])
        return 0;
    size_t n = 0;
    for (const char *p = id; *p; p++, n++) {
        char c = *p;
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (n == 0 || (c != '_' && c != '-')))
            return 0;
        if (n >= 255)
            return 0;
    }
    return 1;
}

void gs_registry_options_default(gs_registry_options *o)
{
    memset(o, 0, sizeof *o);
    o->tenant_dir = NULL;
    o->tenant_extension = ".db";
    o->tenant_create = 0;
    gs_db_options_default(&o->tenant_options);
    o->max_open = 0;
}

static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static void *idle_main(void *arg);

gs_registry *gs_registry_new(const gs_registry_options *opts)
{
    gs_registry_options o;
    if (opts)
        o = *opts;
    else
        gs_registry_options_default(&o);
    gs_registry *reg = gs_calloc(1, sizeof *reg);
    if (!reg)
        return NULL;
    reg->nbuckets = 64;
    reg->buckets = gs_calloc(reg->nbuckets, sizeof *reg->buckets);
    reg->tenant_dir = o.tenant_dir ? gs_strdup(o.tenant_dir) : NULL;
    reg->tenant_ext = gs_strdup(o.tenant_extension ? o.tenant_extension : ".db");
    reg->tenant_sync =
        gs_strdup(o.tenant_options.synchronous ? o.tenant_options.synchronous : "normal");
    reg->migrations = gs_migration_set_copy(o.migrations);
    if (!reg->buckets || (o.tenant_dir && !reg->tenant_dir) || !reg->tenant_ext ||
        !reg->tenant_sync || (o.migrations && !reg->migrations)) {
        gs_migration_set_free(reg->migrations);
        gs_free(reg->buckets);
        gs_free(reg->tenant_dir);
        gs_free(reg->tenant_ext);
        gs_free(reg->tenant_sync);
        gs_free(reg);
        return NULL;
    }
    reg->tenant_create = o.tenant_create;
    reg->tenant_options = o.tenant_options;
    reg->tenant_options.synchronous = reg->tenant_sync;
    reg->max_open = o.max_open;
    reg->events = o.events;
    reg->idle_timeout_ms = o.idle_timeout_ms > 0 ? o.idle_timeout_ms : 0;
    reg->idle_interval_ms = gs_registry_idle_interval_ms(reg->idle_timeout_ms);
    pthread_mutex_init(&reg->lock, NULL);
    pthread_cond_init(&reg->cond, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&reg->idle_cond, &ca);
    pthread_condattr_destroy(&ca);
    if (reg->idle_timeout_ms > 0) {
        if (pthread_create(&reg->idle_thread, NULL, idle_main, reg) == 0)
            reg->idle_running = 1;
        else
            gs_log(GS_LOG_ERROR, "registry",
                   "cannot start the idle-timeout thread; idle databases will stay open");
    }
    return reg;
}

/* ---- the map (lock held) ---- */

static entry *find(gs_registry *reg, const char *id)
{
    for (entry *e = reg->buckets[hash_id(id) & (reg->nbuckets - 1)]; e; e = e->hnext)
        if (strcmp(e->id, id) == 0)
            return e;
    return NULL;
}

static void map_grow(gs_registry *reg)
{
    size_t nb = reg->nbuckets * 2;
    entry **b = gs_calloc(nb, sizeof *b);
    if (!b)
        return; /* chains just get longer */
    for (size_t i = 0; i < reg->nbuckets; i++) {
        entry *e = reg->buckets[i];
        while (e) {
            entry *next = e->hnext;
            size_t k = hash_id(e->id) & (nb - 1);
            e->hnext = b[k];
            b[k] = e;
            e = next;
        }
    }
    gs_free(reg->buckets);
    reg->buckets = b;
    reg->nbuckets = nb;
}

static void map_insert(gs_registry *reg, entry *e)
{
    if (reg->count + 1 > reg->nbuckets)
        map_grow(reg);
    size_t k = hash_id(e->id) & (reg->nbuckets - 1);
    e->hnext = reg->buckets[k];
    reg->buckets[k] = e;
    e->registered = 1;
    reg->count++;
}

static void map_remove(gs_registry *reg, entry *e)
{
    entry **pp = &reg->buckets[hash_id(e->id) & (reg->nbuckets - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    e->hnext = NULL;
    e->registered = 0;
    reg->count--;
}

static void entry_free(entry *e)
{
    if (e->db)
        gs_db_free(e->db);
    gs_free(e->id);
    gs_free(e);
}

/* Drop one reference (lock held); returns the entry when it must now be freed. */
static entry *unref(entry *e)
{
    e->refs--;
    return e->refs == 0 && !e->registered ? e : NULL;
}

/* Close a database that is out of the map and holds our reference, then drop it. */
static void close_and_unref(gs_registry *reg, entry *e)
{
    if (e->db) {
        gs_db_close(e->db);
        if (e->announced && reg->events.closed)
            reg->events.closed(reg->events.user, e->id, gs_db_path(e->db));
    }
    pthread_mutex_lock(&reg->lock);
    entry *dead = unref(e);
    pthread_mutex_unlock(&reg->lock);
    if (dead)
        entry_free(dead);
}

/* The idle check (spec 02 Lifecycle Management): every idle_interval_ms, tenant databases with
 * no reference and no acquire or release for idle_timeout_ms are taken out of the map and
 * closed outside the lock (firing events.closed). Configured databases are never closed here.
 * Stops when idle_stop is set (shutdown). */
static void *idle_main(void *arg)
{
    gs_registry *reg = arg;
    pthread_mutex_lock(&reg->lock);
    while (!reg->idle_stop) {
        int64_t due = now_ms() + reg->idle_interval_ms;
        struct timespec ts = {.tv_sec = due / 1000, .tv_nsec = (due % 1000) * 1000000L};
        while (!reg->idle_stop && now_ms() < due)
            pthread_cond_timedwait(&reg->idle_cond, &reg->lock, &ts);
        if (reg->idle_stop)
            break;
        int64_t now = now_ms();
        entry *list = NULL;
        for (size_t i = 0; i < reg->nbuckets; i++) {
            entry *e = reg->buckets[i];
            while (e) {
                entry *next = e->hnext;
                if (e->state == E_OPEN && e->tenant && e->refs == 0 &&
                    now - e->used_ms >= reg->idle_timeout_ms) {
                    map_remove(reg, e);
                    e->refs++;
                    e->hnext = list;
                    list = e;
                }
                e = next;
            }
        }
        pthread_mutex_unlock(&reg->lock);
        while (list) {
            entry *e = list;
            list = e->hnext;
            e->hnext = NULL;
            gs_log(GS_LOG_INFO, "registry", "closing database '%s': idle for %lld ms", e->id,
                   (long long)reg->idle_timeout_ms);
            close_and_unref(reg, e);
        }
        pthread_mutex_lock(&reg->lock);
    }
    pthread_mutex_unlock(&reg->lock);
    return NULL;
}

/* Make room for one more database (lock held). Returns GS_OK and, when a database was
 * evicted, its entry in *victim (out of the map, holding a reference for the caller to close
 * outside the lock). */
static gs_status make_room(gs_registry *reg, entry **victim, gs_error *err)
{
    *victim = NULL;
    if (reg->max_open <= 0 || (int64_t)reg->count < reg->max_open)
        return GS_OK;
    entry *lru = NULL;
    for (size_t i = 0; i < reg->nbuckets; i++)
        for (entry *e = reg->buckets[i]; e; e = e->hnext)
            if (e->state == E_OPEN && e->refs == 0 && (!lru || e->last_used < lru->last_used))
                lru = e;
    if (!lru)
        return gs_error_set(err, 0, "MAX_DATABASES",
                            "%lld databases are open and every one is in use; close one or raise "
                            "max_open",
                            (long long)reg->max_open);
    map_remove(reg, lru);
    lru->refs++;
    *victim = lru;
    return GS_OK;
}

/* Start an open (lock held): a new E_OPENING entry with one reference for the opener. */
static entry *begin_open(gs_registry *reg, const char *id, gs_error *err)
{
    entry *e = gs_calloc(1, sizeof *e);
    if (e)
        e->id = gs_strdup(id);
    if (!e || !e->id) {
        gs_free(e);
        gs_error_set(err, 0, "DATABASE_OPEN_FAILED", "out of memory opening '%s'", id);
        return NULL;
    }
    e->state = E_OPENING;
    e->refs = 1;
    e->last_used = ++reg->tick;
    e->used_ms = now_ms();
    map_insert(reg, e);
    reg->opening++;
    return e;
}

/* Finish an open (takes the lock). On success the opener keeps its reference when `keep`;
 * on failure err is shared with the waiters. Returns the database or NULL. */
static gs_database *finish_open(gs_registry *reg, entry *e, gs_database *db, int keep,
                                gs_error *err)
{
    pthread_mutex_lock(&reg->lock);
    if (db && reg->shutdown) {
        pthread_mutex_unlock(&reg->lock);
        if (e->announced && reg->events.closed) {
            gs_db_close(db);
            reg->events.closed(reg->events.user, e->id, gs_db_path(db));
        }
        gs_db_free(db);
        db = NULL;
        gs_error_set(err, 0, "SHUTDOWN", "the registry is shutting down");
        pthread_mutex_lock(&reg->lock);
    }
    reg->opening--;
    entry *dead = NULL;
    if (db) {
        e->db = db;
        db->registry_entry = e;
        e->state = E_OPEN;
        e->last_used = ++reg->tick;
        e->used_ms = now_ms();
        if (!keep)
            dead = unref(e);
    } else {
        map_remove(reg, e);
        e->state = E_FAILED;
        gs_error_copy(&e->open_err, err);
        dead = unref(e);
    }
    pthread_cond_broadcast(&reg->cond);
    pthread_mutex_unlock(&reg->lock);
    if (dead)
        entry_free(dead);
    return db;
}

static gs_database *migrate_opened(gs_registry *reg, gs_database *db, gs_error *err);

/* Ask the before_connect callback (no lock held). GS_ERROR denies the open with err. */
static gs_status before_connect(gs_registry *reg, const char *id, const char *path, gs_error *err)
{
    if (!reg->events.before_connect)
        return GS_OK;
    gs_error_init(err);
    if (reg->events.before_connect(reg->events.user, id, path, err) != GS_ERROR)
        return GS_OK;
    if (!err->code[0])
        gs_error_set(err, 0, "HOOK_DENIED", "opening database '%s' was denied by a hook", id);
    return GS_ERROR;
}

/* Ask before_connect, open, migrate, announce and register (the opener keeps its reference
 * when `keep`). `opened` runs while the entry is still OPENING, so nobody can close the
 * database before it returned: `opened` always precedes `closed`. */
static gs_database *open_entry(gs_registry *reg, entry *e, const char *path,
                               const gs_db_options *opts, int keep, gs_error *err)
{
    gs_database *db = NULL;
    if (before_connect(reg, e->id, path, err) == GS_OK) {
        gs_db_open(e->id, path, opts, &db, err);
        db = migrate_opened(reg, db, err);
    }
    if (db && reg->events.opened) {
        reg->events.opened(reg->events.user, e->id, path);
        e->announced = 1; /* published to other threads by finish_open's lock */
    }
    return finish_open(reg, e, db, keep, err);
}

/* Wait for an E_OPENING entry (lock held, a reference taken by the caller). On failure the
 * reference is dropped and err filled. */
static gs_database *wait_open(gs_registry *reg, entry *e, gs_error *err, entry **dead)
{
    *dead = NULL;
    while (e->state == E_OPENING)
        pthread_cond_wait(&reg->cond, &reg->lock);
    if (e->state == E_OPEN) {
        e->last_used = ++reg->tick;
        return e->db;
    }
    gs_error_copy(err, &e->open_err);
    *dead = unref(e);
    return NULL;
}

/* Apply the registry's migrations to a database just opened and not yet registered. On
 * failure the database is closed and freed and NULL returned with err set. */
static gs_database *migrate_opened(gs_registry *reg, gs_database *db, gs_error *err)
{
    if (!db || !reg->migrations)
        return db;
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_status st =
        gs_db_migrate(db, GS_MIGRATE_UP, reg->migrations, GS_MIGRATION_NO_TARGET, &r, err);
    gs_migration_report_free(&r);
    if (st == GS_OK)
        return db;
    if (strncmp(err->code, "MIGRATION_", 10) != 0) {
        char why[sizeof err->message];
        snprintf(why, sizeof why, "%s", err->message);
        gs_error_set(err, 0, "DATABASE_OPEN_FAILED",
                     "database '%s' could not run its migrations: %s", gs_db_id(db), why);
    }
    gs_db_close(db);
    gs_db_free(db);
    return NULL;
}

/* ---- public ---- */

gs_status gs_registry_open(gs_registry *reg, const char *id, const char *path,
                           const gs_db_options *opts, gs_error *err)
{
    if (!id || !id[0] || !path)
        return gs_error_set(err, 0, "DATABASE_OPEN_FAILED", "a database needs an id and a path");
    pthread_mutex_lock(&reg->lock);
    if (reg->shutdown) {
        pthread_mutex_unlock(&reg->lock);
        return gs_error_set(err, 0, "SHUTDOWN", "the registry is shut down");
    }
    if (find(reg, id)) {
        pthread_mutex_unlock(&reg->lock);
        return gs_error_set(err, 0, "DATABASE_ALREADY_EXISTS",
                            "a database with id '%s' is already open or opening", id);
    }
    entry *victim;
    if (make_room(reg, &victim, err) != GS_OK) {
        pthread_mutex_unlock(&reg->lock);
        return GS_ERROR;
    }
    entry *e = begin_open(reg, id, err);
    pthread_mutex_unlock(&reg->lock);
    if (victim)
        close_and_unref(reg, victim);
    if (!e)
        return GS_ERROR;
    return open_entry(reg, e, path, opts, 0, err) ? GS_OK : GS_ERROR;
}

gs_status gs_registry_close(gs_registry *reg, const char *id, gs_error *err)
{
    if (!id)
        return gs_error_set(err, 0, "DATABASE_NOT_FOUND", "no database id given");
    pthread_mutex_lock(&reg->lock);
    if (reg->shutdown) {
        pthread_mutex_unlock(&reg->lock);
        return gs_error_set(err, 0, "SHUTDOWN", "the registry is shut down");
    }
    entry *e = find(reg, id);
    if (!e) {
        pthread_mutex_unlock(&reg->lock);
        return gs_error_set(err, 0, "DATABASE_NOT_FOUND", "no database '%s' is open", id);
    }
    e->refs++; /* ours while we close it */
    if (e->state == E_OPENING) {
        entry *dead;
        if (!wait_open(reg, e, err, &dead)) {
            pthread_mutex_unlock(&reg->lock);
            if (dead)
                entry_free(dead);
            return gs_error_set(err, 0, "DATABASE_NOT_FOUND", "no database '%s' is open", id);
        }
        if (!e->registered) { /* closed by someone else while we waited */
            dead = unref(e);
            pthread_mutex_unlock(&reg->lock);
            if (dead)
                entry_free(dead);
            return gs_error_set(err, 0, "DATABASE_NOT_FOUND", "no database '%s' is open", id);
        }
    }
    map_remove(reg, e);
    pthread_mutex_unlock(&reg->lock);
    close_and_unref(reg, e);
    return GS_OK;
}

gs_database *gs_registry_acquire(gs_registry *reg, const char *id, gs_error *err)
{
    if (!id || !id[0]) {
        gs_error_set(err, 0, "DATABASE_NOT_FOUND", "no database id given");
        return NULL;
    }
    pthread_mutex_lock(&reg->lock);
    if (reg->shutdown) {
        pthread_mutex_unlock(&reg->lock);
        gs_error_set(err, 0, "SHUTDOWN", "the registry is shut down");
        return NULL;
    }
    entry *e = find(reg, id);
    if (e && e->state == E_OPEN) {
        e->refs++;
        e->last_used = ++reg->tick;
        e->used_ms = now_ms();
        pthread_mutex_unlock(&reg->lock);
        return e->db;
    }
    if (e) { /* opening: share its outcome */
        entry *dead;
        e->refs++;
        gs_database *db = wait_open(reg, e, err, &dead);
        pthread_mutex_unlock(&reg->lock);
        if (dead)
            entry_free(dead);
        return db;
    }
    int valid = gs_tenant_id_valid(id);
    if (!reg->tenant_dir || !valid) {
        pthread_mutex_unlock(&reg->lock);
        if (valid)
            gs_error_set(err, 0, "DATABASE_NOT_FOUND", "no database '%s' is open", id);
        else /* never echo an id that could be a path or hold control characters */
            gs_error_set(err, 0, "DATABASE_NOT_FOUND",
                         "no such database (ids match ^[a-zA-Z0-9][a-zA-Z0-9_-]*$)");
        return NULL;
    }
    entry *victim;
    if (make_room(reg, &victim, err) != GS_OK) {
        pthread_mutex_unlock(&reg->lock);
        return NULL;
    }
    e = begin_open(reg, id, err);
    if (e)
        e->tenant = 1;
    pthread_mutex_unlock(&reg->lock);
    if (victim)
        close_and_unref(reg, victim);
    if (!e)
        return NULL;

    gs_database *db = NULL;
    size_t plen = strlen(reg->tenant_dir) + 1 + strlen(id) + strlen(reg->tenant_ext) + 1;
    char *path = gs_malloc(plen);
    if (!path) {
        gs_error_set(err, 0, "DATABASE_OPEN_FAILED", "out of memory opening '%s'", id);
    } else {
        snprintf(path, plen, "%s/%s%s", reg->tenant_dir, id, reg->tenant_ext);
        struct stat sb;
        if (!reg->tenant_create && stat(path, &sb) != 0 && errno == ENOENT) {
            gs_error_set(err, 0, "DATABASE_NOT_FOUND", "no database '%s'", id);
        } else {
            gs_db_options o = reg->tenant_options;
            o.create = reg->tenant_create;
            db = open_entry(reg, e, path, &o, 1, err);
            gs_free(path);
            return db;
        }
        gs_free(path);
    }
    return finish_open(reg, e, db, 1, err);
}

void gs_registry_release(gs_registry *reg, gs_database *db)
{
    if (!reg || !db)
        return;
    entry *e = db->registry_entry;
    if (!e)
        return;
    pthread_mutex_lock(&reg->lock);
    e->last_used = ++reg->tick;
    e->used_ms = now_ms();
    entry *dead = unref(e);
    pthread_mutex_unlock(&reg->lock);
    if (dead)
        entry_free(dead);
}

void gs_registry_each(gs_registry *reg, void (*fn)(void *user, gs_database *db), void *user)
{
    pthread_mutex_lock(&reg->lock);
    for (size_t i = 0; i < reg->nbuckets; i++)
        for (entry *e = reg->buckets[i]; e; e = e->hnext)
            if (e->state == E_OPEN)
                fn(user, e->db);
    pthread_mutex_unlock(&reg->lock);
}

void gs_registry_shutdown(gs_registry *reg)
{
    if (!reg)
        return;
    pthread_mutex_lock(&reg->lock);
    if (reg->shutdown) {
        while (!reg->shutdown_done)
            pthread_cond_wait(&reg->cond, &reg->lock);
        pthread_mutex_unlock(&reg->lock);
        return;
    }
    reg->shutdown = 1;
    if (reg->idle_running) { /* stop the idle check first: it may be closing databases */
        reg->idle_stop = 1;
        pthread_cond_broadcast(&reg->idle_cond);
        pthread_mutex_unlock(&reg->lock);
        pthread_join(reg->idle_thread, NULL);
        pthread_mutex_lock(&reg->lock);
        reg->idle_running = 0;
    }
    while (reg->opening > 0) /* opens under way finish (and close) first */
        pthread_cond_wait(&reg->cond, &reg->lock);
    entry *list = NULL;
    for (size_t i = 0; i < reg->nbuckets; i++) {
        entry *e = reg->buckets[i];
        while (e) {
            entry *next = e->hnext;
            map_remove(reg, e);
            e->refs++;
            e->hnext = list;
            list = e;
            e = next;
        }
    }
    pthread_mutex_unlock(&reg->lock);
    while (list) {
        entry *e = list;
        list = e->hnext;
        e->hnext = NULL;
        close_and_unref(reg, e);
    }
    pthread_mutex_lock(&reg->lock);
    reg->shutdown_done = 1;
    pthread_cond_broadcast(&reg->cond);
    pthread_mutex_unlock(&reg->lock);
}

const gs_migration_set *gs_registry_migrations(const gs_registry *reg)
{
    return reg ? reg->migrations : NULL;
}

void gs_registry_free(gs_registry *reg)
{
    if (!reg)
        return;
    gs_registry_shutdown(reg);
    /* databases still referenced were closed by the shutdown; their last release frees them */
    gs_free(reg->buckets);
    gs_free(reg->tenant_dir);
    gs_free(reg->tenant_ext);
    gs_free(reg->tenant_sync);
    gs_migration_set_free(reg->migrations);
    pthread_mutex_destroy(&reg->lock);
    pthread_cond_destroy(&reg->cond);
    pthread_cond_destroy(&reg->idle_cond);
    gs_free(reg);
}
