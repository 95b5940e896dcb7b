#include "connection.h"

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

struct gs_stmt {
    sqlite3_stmt *st;
    gs_stmt *prev, *next; /* LRU list: head is the most recently used */
    gs_stmt *hnext;       /* hash chain */
    uint64_t hash;
    size_t len;
    gs_sql_verb verb;
    unsigned guarded : 1; /* prepared as a user statement (lexical guard + authorizer) */
    unsigned cached : 1;
    unsigned in_use : 1;
    char sql[];
};

struct gs_conn {
    sqlite3 *db;
    gs_conn_role role;
    int wal;
    int memory;
    int cache_cap;
    size_t cache_count;
    gs_stmt **buckets;
    size_t nbuckets; /* power of two */
    gs_stmt *lru_head, *lru_tail;
    gs_guard_auth auth;
};

static const char *const sync_names[] = {"off", "normal", "full", "extra"};

int gs_sync_level_parse(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < 4; i++)
        if (strcasecmp(name, sync_names[i]) == 0)
            return i;
    return -1;
}

const char *gs_sync_level_name(int level)
{
    return level >= 0 && level < 4 ? sync_names[level] : "?";
}

sqlite3 *gs_conn_db(const gs_conn *c)
{
    return c->db;
}

int gs_conn_wal(const gs_conn *c)
{
    return c->wal;
}

int gs_conn_memory(const gs_conn *c)
{
    return c->memory;
}

sqlite3_stmt *gs_stmt_sqlite(const gs_stmt *s)
{
    return s->st;
}

gs_sql_verb gs_stmt_verb(const gs_stmt *s)
{
    return s->verb;
}

/* ---- open ---- */

static void open_error(gs_error *err, const char *path, sqlite3 *db, int rc, const char *what)
{
    int primary = rc & 0xff;
    int sys = db ? sqlite3_system_errno(db) : 0;
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    const char *reason = "other";
    const char *hint = "";
    if (primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT) {
        reason = "corrupt";
        hint = " (the file is corrupt or is not a SQLite database)";
    } else if (sys == EACCES || sys == EPERM || sys == EROFS || primary == SQLITE_PERM ||
               primary == SQLITE_READONLY || primary == SQLITE_AUTH) {
        reason = "permission";
        hint = " (permission denied: check the file's and its directory's owner and mode)";
    } else if (primary == SQLITE_CANTOPEN && (sys == ENOENT || sys == ENOTDIR)) {
        reason = "missing";
        hint = " (the file or its directory does not exist)";
    } else if (primary == SQLITE_CANTOPEN && sys == EISDIR) {
        hint = " (the path is a directory)";
    }
    gs_error_set(err, 0, "DATABASE_OPEN_FAILED", "cannot open database '%s'%s%s: %s%s", path,
                 what ? " while " : "", what ? what : "", msg, hint);
    gs_buf d;
    gs_buf_init(&d);
    gs_buf_puts(&d, "{\"path\":");
    gs_buf_json_string(&d, path, strlen(path));
    gs_buf_printf(&d, ",\"reason\":\"%s\",\"sqliteCode\":%d}", reason, rc);
    if (!d.oom && d.len < sizeof err->details)
        memcpy(err->details, d.data, d.len + 1);
    gs_buf_free(&d);
}

static gs_status open_pragma(gs_conn *c, const char *path, const char *sql, gs_error *err)
{
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        open_error(err, path, c->db, sqlite3_extended_errcode(c->db), "configuring it");
        return GS_ERROR;
    }
    return GS_OK;
}

/* Run a one-row pragma and copy its text result. */
static int pragma_text(sqlite3 *db, const char *sql, char *out, size_t cap)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(out, cap, "%s", t ? (const char *)t : "");
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        out[0] = '\0';
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* SQLite keeps memory statistics under one process-wide mutex that every allocation of every
 * connection takes (SQLITE_DEFAULT_MEMSTATUS). The core reads none of them, and with several
 * databases (or several nodes) writing from their own threads that mutex is contended on
 * every row, so it is switched off once, before SQLite initialises. When something in the
 * process initialised SQLite first, the call is refused and nothing changes. (Raising
 * SQLITE_CONFIG_STMTJRNL_SPILL was tried too: SQLite then allocates a chunk of that size for
 * every statement journal, which costs more than the spills it saves.) */
static pthread_once_t sqlite_setup_once = PTHREAD_ONCE_INIT;

static void sqlite_setup(void)
{
    if (sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) != SQLITE_OK)
        gs_log(GS_LOG_DEBUG, "sqlite",
               "SQLite was initialised before the first connection: memory statistics stay on");
}

gs_status gs_conn_open(const gs_conn_options *o, gs_conn **out, gs_error *err)
{
    *out = NULL;
    pthread_once(&sqlite_setup_once, sqlite_setup);
    const char *path = o->path;
    int memory = strcmp(path, ":memory:") == 0;
    if (o->sync_level < 0 || o->sync_level > 3)
        return gs_error_set(err, 0, "INVALID_SYNCHRONOUS",
                            "synchronous must be one of off, normal, full, extra");
    if (memory && o->role != GS_CONN_WRITER)
        return gs_error_set(err, 0, "DATABASE_OPEN_FAILED",
                            "an in-memory database has no separate reader connections");
    int flags = SQLITE_OPEN_NOMUTEX;
    if (o->role == GS_CONN_WRITER)
        flags |= SQLITE_OPEN_READWRITE | (o->create ? SQLITE_OPEN_CREATE : 0);
    else
        flags |= SQLITE_OPEN_READONLY;
    struct stat sb;
    if (!memory && !(flags & SQLITE_OPEN_CREATE) && stat(path, &sb) != 0 && errno == ENOENT) {
        gs_error_set(err, 0, "DATABASE_OPEN_FAILED",
                     "cannot open database '%s': the file does not exist (and creating it is "
                     "not enabled)",
                     path);
        gs_buf d;
        gs_buf_init(&d);
        gs_buf_puts(&d, "{\"path\":");
        gs_buf_json_string(&d, path, strlen(path));
        gs_buf_puts(&d, ",\"reason\":\"missing\"}");
        if (!d.oom && d.len < sizeof err->details)
            memcpy(err->details, d.data, d.len + 1);
        gs_buf_free(&d);
        return GS_ERROR;
    }

    gs_conn *c = gs_calloc(1, sizeof *c);
    if (!c)
        return gs_error_set(err, 0, "DATABASE_OPEN_FAILED", "out of memory opening '%s'", path);
    c->role = o->role;
    c->memory = memory;
    c->cache_cap = o->stmt_cache_size > 0 ? o->stmt_cache_size : 0;
    if (c->cache_cap > 0) {
        size_t nb = 16;
        while (nb < (size_t)c->cache_cap * 2)
            nb *= 2;
        c->buckets = gs_calloc(nb, sizeof *c->buckets);
        if (!c->buckets) {
            gs_free(c);
            return gs_error_set(err, 0, "DATABASE_OPEN_FAILED", "out of memory opening '%s'", path);
        }
        c->nbuckets = nb;
    }

    int rc = sqlite3_open_v2(path, &c->db, flags, NULL);
    if (rc != SQLITE_OK) {
        open_error(err, path, c->db, c->db ? sqlite3_extended_errcode(c->db) : rc, NULL);
        goto fail;
    }
    sqlite3_extended_result_codes(c->db, 1);
    if (o->role == GS_CONN_WRITER && !memory && sqlite3_db_readonly(c->db, "main") == 1) {
        /* SQLite silently falls back to read-only when the file is not writable */
        gs_error_set(err, 0, "DATABASE_OPEN_FAILED",
                     "cannot open database '%s' for writing: permission denied (the file or "
                     "its directory is not writable; open it read-only or fix the mode)",
                     path);
        snprintf(err->details, sizeof err->details, "{\"reason\":\"permission\"}");
        goto fail;
    }
    sqlite3_busy_timeout(c->db, o->busy_timeout_ms > 0 ? o->busy_timeout_ms : 0);
    sqlite3_set_authorizer(c->db, gs_guard_authorizer, &c->auth);

    char mode[32];
    if (o->role == GS_CONN_WRITER && o->wal && !memory) {
        rc = pragma_text(c->db, "PRAGMA journal_mode=WAL", mode, sizeof mode);
        if (rc != SQLITE_OK) {
            open_error(err, path, c->db, sqlite3_extended_errcode(c->db), "setting WAL mode");
            goto fail;
        }
        if (strcasecmp(mode, "wal") != 0)
            gs_log(GS_LOG_WARN, "sqlite", "database '%s' stays in journal mode '%s' (WAL refused)",
                   path, mode);
    } else {
        rc = pragma_text(c->db, "PRAGMA journal_mode", mode, sizeof mode);
        if (rc != SQLITE_OK) {
            open_error(err, path, c->db, sqlite3_extended_errcode(c->db), "reading it");
            goto fail;
        }
    }
    c->wal = strcasecmp(mode, "wal") == 0;

    char sql[96];
    snprintf(sql, sizeof sql, "PRAGMA synchronous=%s", sync_names[o->sync_level]);
    if (open_pragma(c, path, sql, err) != GS_OK)
        goto fail;
    if (open_pragma(c, path, "PRAGMA foreign_keys=ON", err) != GS_OK)
        goto fail;
    /* REPLACE conflict resolution deletes rows; only with recursive_triggers on do the delete
     * triggers fire for them, so change capture (and live queries) see those deletes. */
    if (open_pragma(c, path, "PRAGMA recursive_triggers=ON", err) != GS_OK)
        goto fail;
    if (o->wal_autocheckpoint >= 0) {
        snprintf(sql, sizeof sql, "PRAGMA wal_autocheckpoint=%lld",
                 (long long)o->wal_autocheckpoint);
        if (open_pragma(c, path, sql, err) != GS_OK)
            goto fail;
    }
    /* read the schema now so a corrupt file fails here, not on the first request */
    if (open_pragma(c, path, "SELECT count(*) FROM sqlite_master", err) != GS_OK)
        goto fail;
    *out = c;
    return GS_OK;

fail:
    sqlite3_close(c->db);
    gs_free(c->buckets);
    gs_free(c);
    return GS_ERROR;
}

/* ---- statement cache ---- */

static uint64_t hash_sql(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static void lru_unlink(gs_conn *c, gs_stmt *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        c->lru_head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        c->lru_tail = s->prev;
    s->prev = s->next = NULL;
}

static void lru_push_front(gs_conn *c, gs_stmt *s)
{
    s->prev = NULL;
    s->next = c->lru_head;
    if (c->lru_head)
        c->lru_head->prev = s;
    c->lru_head = s;
    if (!c->lru_tail)
        c->lru_tail = s;
}

static void cache_remove(gs_conn *c, gs_stmt *s)
{
    gs_stmt **pp = &c->buckets[s->hash & (c->nbuckets - 1)];
    while (*pp && *pp != s)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = s->hnext;
    lru_unlink(c, s);
    s->cached = 0;
    c->cache_count--;
}

static void stmt_destroy(gs_stmt *s)
{
    sqlite3_finalize(s->st);
    gs_free(s);
}

static void cache_insert(gs_conn *c, gs_stmt *s)
{
    size_t b = s->hash & (c->nbuckets - 1);
    s->hnext = c->buckets[b];
    c->buckets[b] = s;
    lru_push_front(c, s);
    s->cached = 1;
    c->cache_count++;
    /* evict the least recently used statements that nobody holds */
    gs_stmt *v = c->lru_tail;
    while (c->cache_count > (size_t)c->cache_cap && v) {
        gs_stmt *prev = v->prev;
        if (!v->in_use && v != s) {
            cache_remove(c, v);
            stmt_destroy(v);
        }
        v = prev;
    }
}

static gs_stmt *cache_find(const gs_conn *c, const char *sql, size_t len, uint64_t h)
{
    if (!c->nbuckets)
        return NULL;
    for (gs_stmt *s = c->buckets[h & (c->nbuckets - 1)]; s; s = s->hnext)
        if (s->hash == h && s->len == len && memcmp(s->sql, sql, len) == 0)
            return s;
    return NULL;
}

/* Only whitespace, comments and semicolons from p to end. */
static int only_trivia(const char *p, const char *end)
{
    while (p < end) {
        char ch = *p;
        if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v' ||
            ch == ';') {
            p++;
        } else if (ch == '-' && p + 1 < end && p[1] == '-') {
            while (p < end && *p != '\n')
                p++;
        } else if (ch == '/' && p + 1 < end && p[1] == '*') {
            p += 2;
            while (p < end && !(*p == '*' && p + 1 < end && p[1] == '/'))
                p++;
            p = p + 2 <= end ? p + 2 : end;
        } else {
            return 0;
        }
    }
    return 1;
}

static void auth_error(gs_conn *c, gs_error *err)
{
    if (c->auth.code)
        gs_error_set(err, 0, c->auth.code, "%s", c->auth.reason);
    else
        gs_error_set(err, 0, "QUERY_ERROR", "%s", sqlite3_errmsg(c->db));
}

gs_status gs_conn_prepare(gs_conn *c, const char *sql, size_t len, int flags, gs_stmt **out,
                          gs_error *err)
{
    *out = NULL;
    int trusted = (flags & GS_PREP_TRUSTED) != 0;
    uint64_t h = hash_sql(sql, len);
    gs_stmt *s = cache_find(c, sql, len, h);
    if (s) {
        if (!s->in_use && (trusted || s->guarded)) {
            if (c->lru_head != s) {
                lru_unlink(c, s);
                lru_push_front(c, s);
            }
            s->in_use = 1;
            *out = s;
            return GS_OK;
        }
        if (!s->in_use && !trusted && !s->guarded) {
            /* prepared without the guard: a user may not reuse it as is */
            cache_remove(c, s);
            stmt_destroy(s);
        }
        /* in use (the same SQL held twice): prepare a private, uncached copy below */
    }

    gs_sql_info info = {.verb = GS_SQL_OTHER};
    if (!trusted) {
        if (gs_guard_check_sql(sql, len, &info, err) != GS_OK)
            return GS_ERROR;
        if (info.verb == GS_SQL_EMPTY)
            return gs_error_set(err, 0, "QUERY_ERROR", "the SQL text is empty");
    }
    sqlite3_stmt *st = NULL;
    const char *tail = sql;
    const char *end = sql + len;
    unsigned pflags = c->cache_cap > 0 ? SQLITE_PREPARE_PERSISTENT : 0;
    int rc = SQLITE_OK;
    gs_guard_auth_begin(&c->auth, !trusted, info.verb);
    /* leading empty statements (";;") prepare to nothing; skip them */
    while (!st && tail < end && rc == SQLITE_OK)
        rc = sqlite3_prepare_v3(c->db, tail, (int)(end - tail), pflags, &st, &tail);
    c->auth.active = 0;
    if (rc != SQLITE_OK) {
        auth_error(c, err);
        sqlite3_finalize(st);
        return GS_ERROR;
    }
    if (!st)
        return gs_error_set(err, 0, "QUERY_ERROR", "the SQL text is empty");
    if (!only_trivia(tail, end)) {
        sqlite3_finalize(st);
        return gs_error_set(err, 0, "QUERY_ERROR",
                            "one statement per request: the SQL text holds more than one "
                            "statement; send several as a transaction");
    }
    s = gs_malloc(sizeof *s + len + 1);
    if (!s) {
        sqlite3_finalize(st);
        return gs_error_set(err, 0, "QUERY_ERROR", "out of memory preparing a statement");
    }
    memset(s, 0, sizeof *s);
    s->st = st;
    s->hash = h;
    s->len = len;
    s->verb = info.verb;
    s->guarded = !trusted;
    s->in_use = 1;
    memcpy(s->sql, sql, len);
    s->sql[len] = '\0';
    if (c->cache_cap > 0 && !cache_find(c, sql, len, h))
        cache_insert(c, s);
    *out = s;
    return GS_OK;
}

int gs_conn_step(gs_conn *c, gs_stmt *s, gs_error *err)
{
    /* a statement expired by a schema change is re-prepared inside sqlite3_step, which
     * consults the authorizer again */
    gs_guard_auth_begin(&c->auth, s->guarded, s->verb);
    int rc = sqlite3_step(s->st);
    c->auth.active = 0;
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        return rc;
    auth_error(c, err);
    return -1;
}

void gs_conn_release(gs_conn *c, gs_stmt *s)
{
    (void)c;
    if (!s)
        return;
    sqlite3_reset(s->st);
    sqlite3_clear_bindings(s->st);
    s->in_use = 0;
    if (!s->cached)
        stmt_destroy(s);
}

gs_status gs_conn_exec(gs_conn *c, const char *sql, gs_error *err)
{
    gs_stmt *s;
    if (gs_conn_prepare(c, sql, strlen(sql), GS_PREP_TRUSTED, &s, err) != GS_OK)
        return GS_ERROR;
    int rc;
    while ((rc = gs_conn_step(c, s, err)) == SQLITE_ROW)
        ;
    gs_conn_release(c, s);
    return rc == SQLITE_DONE ? GS_OK : GS_ERROR;
}

gs_status gs_conn_set_sync(gs_conn *c, int level, gs_error *err)
{
    static const char *const sql[] = {"PRAGMA synchronous=OFF", "PRAGMA synchronous=NORMAL",
                                      "PRAGMA synchronous=FULL", "PRAGMA synchronous=EXTRA"};
    if (level < 0 || level > 3)
        return gs_error_set(err, 0, "INVALID_SYNCHRONOUS",
                            "synchronous must be one of off, normal, full, extra");
    return gs_conn_exec(c, sql[level], err);
}

int gs_conn_get_sync(gs_conn *c)
{
    char v[16];
    if (pragma_text(c->db, "PRAGMA synchronous", v, sizeof v) != SQLITE_OK)
        return -1;
    return v[0] >= '0' && v[0] <= '3' ? v[0] - '0' : -1;
}

size_t gs_conn_cache_count(const gs_conn *c)
{
    return c->cache_count;
}

int gs_conn_cache_contains(const gs_conn *c, const char *sql)
{
    size_t len = strlen(sql);
    return cache_find(c, sql, len, hash_sql(sql, len)) != NULL;
}

void gs_conn_close(gs_conn *c)
{
    if (!c)
        return;
    gs_stmt *s = c->lru_head;
    while (s) {
        gs_stmt *next = s->next;
        stmt_destroy(s);
        s = next;
    }
    c->lru_head = c->lru_tail = NULL;
    int rc = sqlite3_close(c->db);
    if (rc != SQLITE_OK) {
        /* a statement outside the cache is still alive: a bug, but never leak the file */
        gs_log(GS_LOG_ERROR, "sqlite", "closing a connection failed: %s; closing lazily",
               sqlite3_errstr(rc));
        sqlite3_close_v2(c->db);
    }
    gs_free(c->buckets);
    gs_free(c);
}
