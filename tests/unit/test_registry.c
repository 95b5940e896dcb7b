/* The registry: open/close/acquire, tenant auto-open and id validation, shared concurrent
 * auto-open, max_open with LRU eviction, shutdown. */
#include "base/error.h"
#include "db/registry.h"
#include "test_support.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];

static void setup(void)
{
    gs_test_mkdtemp(tmpdir, sizeof tmpdir, "reg");
}

static void teardown(void)
{
    gs_test_rmtree(tmpdir);
}

TestSuite(registry, .init = setup, .fini = teardown);

static void never_called(void *user, const gs_db_reply *reply)
{
    (void)user;
    (void)reply;
    cr_assert_fail("done() must not run for a refused request");
}

static void path_of(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", tmpdir, name);
}

static gs_db_options small_opts(void)
{
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_pool_size = 1;
    return o;
}

/* Create a database file with one table so a tenant can be auto-opened. */
static void make_tenant_file(const char *id)
{
    char path[192];
    snprintf(path, sizeof path, "%s/%s.db", tmpdir, id);
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(path, &h), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(h, "CREATE TABLE t(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
}

Test(registry, tenant_id_validation)
{
    cr_assert(gs_tenant_id_valid("a"));
    cr_assert(gs_tenant_id_valid("Tenant_01-x"));
    cr_assert(gs_tenant_id_valid("9"));
    cr_assert_not(gs_tenant_id_valid(""));
    cr_assert_not(gs_tenant_id_valid(NULL));
    cr_assert_not(gs_tenant_id_valid("../x"));
    cr_assert_not(gs_tenant_id_valid("a/b"));
    cr_assert_not(gs_tenant_id_valid("-a"));
    cr_assert_not(gs_tenant_id_valid("_a"));
    cr_assert_not(gs_tenant_id_valid("a.db"));
    cr_assert_not(gs_tenant_id_valid("a\x01"));
    cr_assert_not(gs_tenant_id_valid("a\n"));
    cr_assert_not(gs_tenant_id_valid("caf\xc3\xa9"));
    char id[300];
    memset(id, 'a', sizeof id);
    id[255] = '\0';
    cr_assert(gs_tenant_id_valid(id));
    id[255] = 'a';
    id[256] = '\0';
    cr_assert_not(gs_tenant_id_valid(id));
}

Test(registry, open_close_acquire_and_duplicates)
{
    gs_registry *reg = gs_registry_new(NULL);
    cr_assert_not_null(reg);
    char path[192];
    path_of(path, sizeof path, "main.db");
    gs_db_options o = small_opts();
    gs_error err;
    cr_assert_eq(gs_registry_open(reg, "main", path, &o, &err), GS_OK, "%s", err.message);
    cr_assert_eq(gs_registry_open(reg, "main", path, &o, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "DATABASE_ALREADY_EXISTS");

    gs_database *db = gs_registry_acquire(reg, "main", &err);
    cr_assert_not_null(db, "%s", err.message);
    cr_assert_str_eq(gs_db_id(db), "main");
    gs_database *again = gs_registry_acquire(reg, "main", &err);
    cr_assert_eq(db, again);
    gs_registry_release(reg, again);

    cr_assert_null(gs_registry_acquire(reg, "other", &err));
    cr_assert_str_eq(err.code, "DATABASE_NOT_FOUND");
    cr_assert_eq(gs_error_status(&err), 404);
    cr_assert_eq(gs_registry_close(reg, "other", &err), GS_ERROR);
    cr_assert_str_eq(err.code, "DATABASE_NOT_FOUND");

    /* an open that fails leaves nothing registered */
    char bad[192];
    path_of(bad, sizeof bad, "no/such/dir.db");
    cr_assert_eq(gs_registry_open(reg, "bad", bad, &o, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "DATABASE_OPEN_FAILED");
    cr_assert_null(gs_registry_acquire(reg, "bad", &err));
    cr_assert_str_eq(err.code, "DATABASE_NOT_FOUND");

    /* closing while a reference is held: the handle stays valid and reports closed */
    cr_assert_eq(gs_registry_close(reg, "main", &err), GS_OK);
    cr_assert(gs_db_is_closed(db));
    gs_db_stmt stmt = {.sql = "SELECT 1", .params = NULL};
    gs_db_request req = {.kind = GS_DB_QUERY, .stmts = &stmt, .stmt_count = 1};
    req.done = never_called;
    cr_assert_eq(gs_db_submit(db, &req, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "DATABASE_CLOSED");
    cr_assert_null(gs_registry_acquire(reg, "main", &err));
    gs_registry_release(reg, db);
    /* the id can be used again */
    cr_assert_eq(gs_registry_open(reg, "main", path, &o, &err), GS_OK, "%s", err.message);
    gs_registry_free(reg);
}

static int count_cb_n;
static void count_cb(void *user, gs_database *db)
{
    (void)user;
    (void)db;
    count_cb_n++;
}

Test(registry, tenant_auto_open)
{
    gs_registry_options ro;
    gs_registry_options_default(&ro);
    ro.tenant_dir = tmpdir;
    ro.tenant_options = small_opts();
    gs_registry *reg = gs_registry_new(&ro);
    make_tenant_file("acme");
    gs_error err;
    gs_database *db = gs_registry_acquire(reg, "acme", &err);
    cr_assert_not_null(db, "%s: %s", err.code, err.message);
    char expect[192];
    snprintf(expect, sizeof expect, "%s/acme.db", tmpdir);
    cr_assert_str_eq(gs_db_path(db), expect);
    gs_registry_release(reg, db);

    /* a missing file is not created unless asked */
    cr_assert_null(gs_registry_acquire(reg, "ghost", &err));
    cr_assert_str_eq(err.code, "DATABASE_NOT_FOUND");
    char ghost[192];
    snprintf(ghost, sizeof ghost, "%s/ghost.db", tmpdir);
    cr_assert_neq(access(ghost, F_OK), 0, "nothing may be created");

    /* ids that fail validation are not found, and never turn into a path */
    static const char *const bad[] = {"../acme", "", "a\x01", "acme/..", "/etc/passwd", ".", "-x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_null(gs_registry_acquire(reg, bad[i], &err), "%s opened", bad[i]);
        cr_assert_str_eq(err.code, "DATABASE_NOT_FOUND");
        if (bad[i][0])
            cr_assert_null(strstr(err.message, bad[i]), "message echoes the id: %s", err.message);
    }
    count_cb_n = 0;
    gs_registry_each(reg, count_cb, NULL);
    cr_assert_eq(count_cb_n, 1);
    gs_registry_free(reg);

    ro.tenant_create = 1;
    reg = gs_registry_new(&ro);
    db = gs_registry_acquire(reg, "fresh", &err);
    cr_assert_not_null(db, "%s", err.message);
    gs_registry_release(reg, db);
    gs_registry_free(reg);
    char fresh[192];
    snprintf(fresh, sizeof fresh, "%s/fresh.db", tmpdir);
    cr_assert_eq(access(fresh, F_OK), 0);
}

typedef struct acq {
    gs_registry *reg;
    const char *id;
    gs_database *db;
    pthread_barrier_t *start;
} acq;

static void *acquire_thread(void *arg)
{
    acq *a = arg;
    pthread_barrier_wait(a->start);
    gs_error err;
    a->db = gs_registry_acquire(a->reg, a->id, &err);
    return NULL;
}

Test(registry, concurrent_acquires_share_one_open)
{
    gs_registry_options ro;
    gs_registry_options_default(&ro);
    ro.tenant_dir = tmpdir;
    ro.tenant_options = small_opts();
    gs_registry *reg = gs_registry_new(&ro);
    make_tenant_file("shared");
    enum { N = 8 };
    acq a[N];
    pthread_t th[N];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N);
    for (int i = 0; i < N; i++) {
        a[i] = (acq){.reg = reg, .id = "shared", .start = &start};
        pthread_create(&th[i], NULL, acquire_thread, &a[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        cr_assert_not_null(a[i].db);
        cr_assert_eq(a[i].db, a[0].db, "every caller gets the same database");
    }
    count_cb_n = 0;
    gs_registry_each(reg, count_cb, NULL);
    cr_assert_eq(count_cb_n, 1);
    for (int i = 0; i < N; i++)
        gs_registry_release(reg, a[i].db);

    /* concurrent acquires of a missing tenant all get the same error */
    for (int i = 0; i < N; i++) {
        a[i] = (acq){.reg = reg, .id = "missing", .start = &start};
        pthread_create(&th[i], NULL, acquire_thread, &a[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        cr_assert_null(a[i].db);
    }
    pthread_barrier_destroy(&start);
    gs_registry_free(reg);
}

Test(registry, max_open_evicts_least_recently_used)
{
    gs_registry_options ro;
    gs_registry_options_default(&ro);
    ro.tenant_dir = tmpdir;
    ro.tenant_options = small_opts();
    ro.max_open = 2;
    gs_registry *reg = gs_registry_new(&ro);
    make_tenant_file("a");
    make_tenant_file("b");
    make_tenant_file("c");
    gs_error err;
    gs_database *a = gs_registry_acquire(reg, "a", &err);
    gs_database *b = gs_registry_acquire(reg, "b", &err);
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    /* both in use: no room */
    cr_assert_null(gs_registry_acquire(reg, "c", &err));
    cr_assert_str_eq(err.code, "MAX_DATABASES");
    gs_registry_release(reg, b);
    gs_registry_release(reg, a); /* a is now the most recently used */
    gs_database *c = gs_registry_acquire(reg, "c", &err);
    cr_assert_not_null(c, "%s", err.message);
    /* b was evicted; a is still open */
    count_cb_n = 0;
    gs_registry_each(reg, count_cb, NULL);
    cr_assert_eq(count_cb_n, 2);
    gs_database *a2 = gs_registry_acquire(reg, "a", &err);
    cr_assert_eq(a2, a, "a must not have been evicted");
    gs_registry_release(reg, a2);
    gs_registry_release(reg, c);
    /* opening by name obeys the cap too */
    char path[192];
    path_of(path, sizeof path, "named.db");
    gs_db_options o = small_opts();
    cr_assert_eq(gs_registry_open(reg, "named", path, &o, &err), GS_OK, "%s", err.message);
    count_cb_n = 0;
    gs_registry_each(reg, count_cb, NULL);
    cr_assert_eq(count_cb_n, 2);
    gs_registry_free(reg);
}

Test(registry, shutdown_closes_everything_and_refuses_later_work)
{
    gs_registry_options ro;
    gs_registry_options_default(&ro);
    ro.tenant_dir = tmpdir;
    ro.tenant_options = small_opts();
    gs_registry *reg = gs_registry_new(&ro);
    char p1[192], p2[192];
    path_of(p1, sizeof p1, "one.db");
    path_of(p2, sizeof p2, "two.db");
    gs_db_options o = small_opts();
    gs_error err;
    cr_assert_eq(gs_registry_open(reg, "one", p1, &o, &err), GS_OK);
    cr_assert_eq(gs_registry_open(reg, "two", p2, &o, &err), GS_OK);
    gs_database *held = gs_registry_acquire(reg, "one", &err);
    cr_assert_not_null(held);
    gs_registry_shutdown(reg);
    cr_assert(gs_db_is_closed(held));
    gs_registry_release(reg, held);
    count_cb_n = 0;
    gs_registry_each(reg, count_cb, NULL);
    cr_assert_eq(count_cb_n, 0);
    cr_assert_eq(gs_registry_open(reg, "three", p1, &o, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "SHUTDOWN");
    cr_assert_eq(gs_registry_close(reg, "two", &err), GS_ERROR);
    cr_assert_str_eq(err.code, "SHUTDOWN");
    cr_assert_null(gs_registry_acquire(reg, "two", &err));
    cr_assert_str_eq(err.code, "SHUTDOWN");
    gs_registry_shutdown(reg); /* idempotent */
    gs_registry_free(reg);
}

/* ---- lifecycle events (spec 02 Hooks: beforeConnect, databaseOpen, databaseClose) ---- */

typedef struct ev_log {
    pthread_mutex_t mu;
    char text[2048]; /* "<event>:<id>;" in order */
    int connects;
} ev_log;

static void ev_add(ev_log *l, const char *event, const char *id, const char *path)
{
    cr_assert_not_null(path);
    pthread_mutex_lock(&l->mu);
    size_t n = strlen(l->text);
    snprintf(l->text + n, sizeof l->text - n, "%s:%s;", event, id);
    pthread_mutex_unlock(&l->mu);
}

static gs_status ev_before_connect(void *user, const char *id, const char *path, gs_error *err)
{
    ev_log *l = user;
    pthread_mutex_lock(&l->mu);
    l->connects++;
    pthread_mutex_unlock(&l->mu);
    ev_add(l, "connect", id, path);
    if (strcmp(id, "denied") == 0) {
        gs_error_set(err, 403, "FORBIDDEN", "database '%s' may not open", id);
        return GS_ERROR;
    }
    if (strcmp(id, "bare") == 0)
        return GS_ERROR; /* a refusal without a code: HOOK_DENIED */
    return GS_OK;
}

static void ev_opened(void *user, const char *id, const char *path)
{
    ev_add(user, "open", id, path);
}

static void ev_closed(void *user, const char *id, const char *path)
{
    ev_add(user, "close", id, path);
}

static gs_registry *ev_registry(ev_log *l, int64_t max_open)
{
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->mu, NULL);
    gs_registry_options ro;
    gs_registry_options_default(&ro);
    ro.tenant_dir = tmpdir;
    ro.tenant_options = small_opts();
    ro.max_open = max_open;
    ro.events.before_connect = ev_before_connect;
    ro.events.opened = ev_opened;
    ro.events.closed = ev_closed;
    ro.events.user = l;
    gs_registry *reg = gs_registry_new(&ro);
    cr_assert_not_null(reg);
    return reg;
}

Test(registry, events_follow_open_close_and_shutdown)
{
    ev_log l;
    gs_registry *reg = ev_registry(&l, 0);
    char path[192];
    path_of(path, sizeof path, "named.db");
    gs_db_options o = small_opts();
    gs_error err;
    cr_assert_eq(gs_registry_open(reg, "named", path, &o, &err), GS_OK, "%s", err.message);
    make_tenant_file("acme");
    gs_database *db = gs_registry_acquire(reg, "acme", &err);
    cr_assert_not_null(db, "%s", err.message);
    gs_registry_release(reg, db);
    cr_assert_eq(gs_registry_close(reg, "named", &err), GS_OK);
    gs_registry_shutdown(reg);
    cr_assert_str_eq(l.text, "connect:named;open:named;connect:acme;open:acme;close:named;"
                             "close:acme;");
    gs_registry_free(reg);
    pthread_mutex_destroy(&l.mu);
}

Test(registry, before_connect_denies_an_open)
{
    ev_log l;
    gs_registry *reg = ev_registry(&l, 0);
    char path[192];
    path_of(path, sizeof path, "denied.db");
    gs_db_options o = small_opts();
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_registry_open(reg, "denied", path, &o, &err), GS_ERROR);
    cr_assert_eq(err.status, 403);
    cr_assert_str_eq(err.code, "FORBIDDEN");
    cr_assert_neq(access(path, F_OK), 0, "a denied database is never created");
    make_tenant_file("bare");
    gs_error_init(&err);
    cr_assert_null(gs_registry_acquire(reg, "bare", &err));
    cr_assert_str_eq(err.code, "HOOK_DENIED");
    cr_assert(strstr(err.message, "bare"), "%s", err.message);
    /* nothing was registered: a later acquire asks again */
    cr_assert_null(gs_registry_acquire(reg, "bare", &err));
    cr_assert_eq(l.connects, 3);
    count_cb_n = 0;
    gs_registry_each(reg, count_cb, NULL);
    cr_assert_eq(count_cb_n, 0);
    gs_registry_free(reg);
    cr_assert_str_eq(l.text, "connect:denied;connect:bare;connect:bare;", "no open or close");
    pthread_mutex_destroy(&l.mu);
}

Test(registry, eviction_announces_the_close)
{
    ev_log l;
    gs_registry *reg = ev_registry(&l, 1);
    make_tenant_file("a");
    make_tenant_file("b");
    gs_error err;
    gs_database *a = gs_registry_acquire(reg, "a", &err);
    cr_assert_not_null(a);
    gs_registry_release(reg, a);
    gs_database *b = gs_registry_acquire(reg, "b", &err);
    cr_assert_not_null(b, "%s", err.message);
    gs_registry_release(reg, b);
    /* the victim closes (outside the lock) before the new database is asked for */
    cr_assert_str_eq(l.text, "connect:a;open:a;close:a;connect:b;open:b;");
    gs_registry_free(reg);
    cr_assert_str_eq(l.text, "connect:a;open:a;close:a;connect:b;open:b;close:b;");
    pthread_mutex_destroy(&l.mu);
}

/* ---- idle closing (spec 02 Lifecycle Management: idleTimeout) ---- */

typedef struct idle_log {
    pthread_mutex_t mu;
    pthread_cond_t cond; /* a close was recorded */
    char text[1024];     /* "<event>:<id>;" in order */
} idle_log;

static void idle_add(idle_log *l, const char *event, const char *id)
{
    pthread_mutex_lock(&l->mu);
    size_t n = strlen(l->text);
    snprintf(l->text + n, sizeof l->text - n, "%s:%s;", event, id);
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->mu);
}

static void idle_opened(void *user, const char *id, const char *path)
{
    (void)path;
    idle_add(user, "open", id);
}

static void idle_closed(void *user, const char *id, const char *path)
{
    (void)path;
    idle_add(user, "close", id);
}

/* Wait (at most 5 s) until the log holds `needle`; returns whether it does. */
static int idle_wait_for(idle_log *l, const char *needle)
{
    struct timespec deadline = gs_test_realtime_in(5000);
    pthread_mutex_lock(&l->mu);
    int rc = 0;
    while (!strstr(l->text, needle) && rc == 0)
        rc = pthread_cond_timedwait(&l->cond, &l->mu, &deadline);
    int found = strstr(l->text, needle) != NULL;
    pthread_mutex_unlock(&l->mu);
    return found;
}

static int idle_logged(idle_log *l, const char *needle)
{
    pthread_mutex_lock(&l->mu);
    int found = strstr(l->text, needle) != NULL;
    pthread_mutex_unlock(&l->mu);
    return found;
}

static gs_registry *idle_registry(idle_log *l, int64_t idle_timeout_ms)
{
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cond, NULL);
    gs_registry_options ro;
    gs_registry_options_default(&ro);
    ro.tenant_dir = tmpdir;
    ro.tenant_options = small_opts();
    ro.idle_timeout_ms = idle_timeout_ms;
    ro.events.opened = idle_opened;
    ro.events.closed = idle_closed;
    ro.events.user = l;
    gs_registry *reg = gs_registry_new(&ro);
    cr_assert_not_null(reg);
    return reg;
}

static void idle_log_free(idle_log *l)
{
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cond);
}

static int registered_count(gs_registry *reg)
{
    count_cb_n = 0;
    gs_registry_each(reg, count_cb, NULL);
    return count_cb_n;
}

static int64_t tenant_rows(const char *id)
{
    char path[192];
    snprintf(path, sizeof path, "%s/%s.db", tmpdir, id);
    sqlite3 *h;
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(h, "SELECT count(*) FROM t", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

Test(registry, idle_interval_follows_the_spec_formula)
{
    cr_assert_eq(gs_registry_idle_interval_ms(1), 100);
    cr_assert_eq(gs_registry_idle_interval_ms(150), 100);
    cr_assert_eq(gs_registry_idle_interval_ms(1001), 500);
    cr_assert_eq(gs_registry_idle_interval_ms(120000), 60000);
    cr_assert_eq(gs_registry_idle_interval_ms(3600000), 60000);
}

Test(registry, idle_tenant_is_closed_and_reopened_with_its_data)
{
    idle_log l;
    gs_registry *reg = idle_registry(&l, 150);
    make_tenant_file("acme");
    char path[192];
    snprintf(path, sizeof path, "%s/acme.db", tmpdir);
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(path, &h), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(h, "INSERT INTO t VALUES (1), (2)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);

    char named[192];
    path_of(named, sizeof named, "named.db");
    gs_db_options o = small_opts();
    gs_error err;
    cr_assert_eq(gs_registry_open(reg, "named", named, &o, &err), GS_OK, "%s", err.message);
    gs_database *db = gs_registry_acquire(reg, "acme", &err);
    cr_assert_not_null(db, "%s", err.message);
    gs_registry_release(reg, db);
    cr_assert_eq(registered_count(reg), 2);

    cr_assert(idle_wait_for(&l, "close:acme;"), "the idle tenant was not closed: %s", l.text);
    cr_assert_eq(registered_count(reg), 1, "closed and unregistered; the configured one stays");
    cr_assert_not(idle_logged(&l, "close:named;"), "a configured database is never idle-closed");
    cr_assert_eq(tenant_rows("acme"), 2, "the closed file keeps its rows");

    /* the next acquire reopens it from the same file */
    db = gs_registry_acquire(reg, "acme", &err);
    cr_assert_not_null(db, "%s: %s", err.code, err.message);
    cr_assert_str_eq(gs_db_path(db), path);
    cr_assert_not(gs_db_is_closed(db));
    cr_assert_eq(tenant_rows("acme"), 2);
    cr_assert(idle_logged(&l, "open:named;open:acme;close:acme;open:acme;"), "%s", l.text);
    gs_registry_release(reg, db);
    gs_registry_free(reg);
    cr_assert(idle_logged(&l, "close:named;"), "shutdown closes the configured one: %s", l.text);
    idle_log_free(&l);
}

Test(registry, idle_check_skips_a_held_reference)
{
    idle_log l;
    gs_registry *reg = idle_registry(&l, 150);
    make_tenant_file("held");
    make_tenant_file("idle");
    gs_error err;
    gs_database *held = gs_registry_acquire(reg, "held", &err);
    cr_assert_not_null(held, "%s", err.message);
    gs_database *idle = gs_registry_acquire(reg, "idle", &err);
    cr_assert_not_null(idle, "%s", err.message);
    gs_registry_release(reg, idle);

    /* "idle" closing proves a check ran past the window; "held" was older and stayed */
    cr_assert(idle_wait_for(&l, "close:idle;"), "%s", l.text);
    cr_assert_not(idle_logged(&l, "close:held;"), "%s", l.text);
    cr_assert_eq(registered_count(reg), 1);
    cr_assert_not(gs_db_is_closed(held));

    /* released, it is closed in its turn */
    gs_registry_release(reg, held);
    cr_assert(idle_wait_for(&l, "close:held;"), "%s", l.text);
    cr_assert_eq(registered_count(reg), 0);
    gs_registry_free(reg);
    idle_log_free(&l);
}

Test(registry, shutdown_joins_the_idle_thread_without_waiting_out_the_interval)
{
    idle_log l;
    gs_registry *reg = idle_registry(&l, 3600000); /* checks every 60 s */
    make_tenant_file("acme");
    gs_error err;
    gs_database *db = gs_registry_acquire(reg, "acme", &err);
    cr_assert_not_null(db, "%s", err.message);
    gs_registry_release(reg, db);
    int64_t t0 = gs_test_now_ms();
    gs_registry_shutdown(reg);
    int64_t took = gs_test_now_ms() - t0;
    cr_assert_lt(took, 5000, "shutdown waited %lld ms for the idle thread", (long long)took);
    cr_assert_str_eq(l.text, "open:acme;close:acme;");
    gs_registry_shutdown(reg); /* idempotent */
    gs_registry_free(reg);
    idle_log_free(&l);
}
