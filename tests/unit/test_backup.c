/* Full-copy backups (db/backup.h): a stepped copy of a live database while writes run, the
 * restart and stall rules, destination and path checks, and restore. */
#include "base/error.h"
#include "db/backup.h"
#include "db/database.h"
#include "test_support.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 20000 /* upper bound for any single wait */

static char tmpdir[64];
static char srcpath[128];

static void setup(void)
{
    gs_test_mkdtemp(tmpdir, sizeof tmpdir, "backup");
    snprintf(srcpath, sizeof srcpath, "%s/src.db", tmpdir);
}

static void teardown(void)
{
    gs_test_rmtree(tmpdir);
}

TestSuite(backup, .init = setup, .fini = teardown);

/* ---- helpers ---- */

static void exec_sql(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    cr_assert_eq(rc, SQLITE_OK, "%s: %s", sql, msg ? msg : "");
    sqlite3_free(msg);
}

/* A WAL database of `rows` rows of 200 bytes each (about rows/18 pages). */
static void make_source_mode(const char *path, int rows, const char *journal_mode_sql)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    exec_sql(db, journal_mode_sql);
    exec_sql(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    char sql[128];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<%d) "
             "INSERT INTO t(v) SELECT randomblob(200) FROM n",
             rows);
    exec_sql(db, sql);
    sqlite3_close(db);
}

/* A WAL database of `rows` rows, as a node serves it. */
static void make_source(const char *path, int rows)
{
    make_source_mode(path, rows, "PRAGMA journal_mode=WAL");
}

static long long count_rows(const char *path)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    long long n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void assert_integrity(const char *path)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* Entries of dir other than . and ..; with partial_only, only temporary copies. */
static int count_in(const char *dir, int partial_only)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            (!partial_only || strstr(e->d_name, ".partial-")))
            n++;
    closedir(d);
    return n;
}

#define files_in(d) count_in((d), 0)
#define partials_in(d) count_in((d), 1)

static int exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* ---- a live database: writes from another thread during the copy ---- */

typedef struct load {
    gs_database *db;
    pthread_mutex_t m;
    pthread_cond_t c;
    int answered; /* inserts answered so far */
    int failed;
    atomic_int stop;
} load;

static void insert_done(void *user, const gs_db_reply *r)
{
    load *l = user;
    pthread_mutex_lock(&l->m);
    l->answered++;
    if (r->status != GS_OK)
        l->failed++;
    pthread_cond_broadcast(&l->c);
    pthread_mutex_unlock(&l->m);
}

/* Submit one insert at a time (waiting for each answer) until stopped; at most 5000. */
static void *writer_thread(void *arg)
{
    load *l = arg;
    gs_db_stmt stmt = {.sql = "INSERT INTO t(v) VALUES (randomblob(200))", .params = NULL};
    for (int i = 0; i < 5000 && !atomic_load(&l->stop); i++) {
        gs_db_request req = {
            .kind = GS_DB_EXECUTE, .stmts = &stmt, .stmt_count = 1, .done = insert_done, .user = l};
        gs_error err;
        gs_error_init(&err);
        if (gs_db_submit(l->db, &req, &err) != GS_OK)
            break;
        int64_t deadline = gs_test_now_ms() + WAIT_MS;
        pthread_mutex_lock(&l->m);
        while (l->answered <= i && gs_test_now_ms() < deadline) {
            struct timespec ts = gs_test_realtime_in(50);
            pthread_cond_timedwait(&l->c, &l->m, &ts);
        }
        pthread_mutex_unlock(&l->m);
    }
    return NULL;
}

typedef struct live_progress {
    load *l;
    int calls;
    int waited_ok; /* the copy saw writes land between its steps */
    int64_t last_copied;
} live_progress;

/* Between steps (the writer is free): wait, bounded, until two more inserts commit. */
static void live_on_progress(void *user, const gs_backup_progress *p)
{
    live_progress *lp = user;
    lp->calls++;
    lp->last_copied = p->pages_copied;
    if (lp->calls % 5 != 2)
        return;
    load *l = lp->l;
    int64_t deadline = gs_test_now_ms() + WAIT_MS;
    pthread_mutex_lock(&l->m);
    int target = l->answered + 2;
    while (l->answered < target && gs_test_now_ms() < deadline) {
        struct timespec ts = gs_test_realtime_in(50);
        pthread_cond_timedwait(&l->c, &l->m, &ts);
    }
    if (l->answered >= target)
        lp->waited_ok++;
    pthread_mutex_unlock(&l->m);
}

Test(backup, live_copy_while_writes_run)
{
    make_source(srcpath, 3000);
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_pool_size = 1;
    gs_database *db = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_open("main", srcpath, &o, &db, &err), GS_OK, "%s", err.message);
    long long before = count_rows(srcpath);

    load l;
    memset(&l, 0, sizeof l);
    pthread_mutex_init(&l.m, NULL);
    pthread_cond_init(&l.c, NULL);
    l.db = db;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, writer_thread, &l), 0);

    live_progress lp = {.l = &l};
    gs_backup_options bo;
    gs_backup_options_default(&bo);
    bo.pages_per_step = 4;
    bo.on_progress = live_on_progress;
    bo.progress_user = &lp;
    char dest[192];
    snprintf(dest, sizeof dest, "%s/out/nested/copy.db", tmpdir);
    gs_backup_result res;
    gs_status st = gs_db_backup_to_path(db, dest, &bo, &res, &err);
    atomic_store(&l.stop, 1);
    pthread_join(th, NULL);
    cr_assert_eq(st, GS_OK, "%s: %s", err.code, err.message);
    char dir[192];
    snprintf(dir, sizeof dir, "%s/out/nested", tmpdir);
    cr_assert_eq(files_in(dir), 1, "only the final file is left in the destination folder");
    gs_db_close(db);
    gs_db_free(db);
    long long after = count_rows(srcpath);

    cr_assert_gt(lp.waited_ok, 0, "no write landed between two steps of the copy");
    cr_assert_eq(l.failed, 0);
    cr_assert_gt(after, before);
    cr_assert_eq(res.restarts, 0, "the writer's own writes must not restart the copy");
    cr_assert_gt(res.steps, 5);
    cr_assert_gt(res.bytes, 0);
    assert_integrity(dest);
    long long copied = count_rows(dest);
    cr_assert(copied >= before && copied <= after, "backup has %lld rows, outside %lld..%lld",
              copied, before, after);
    pthread_mutex_destroy(&l.m);
    pthread_cond_destroy(&l.c);
}

Test(backup, live_destination_exists_and_bad_paths)
{
    make_source(srcpath, 100);
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_pool_size = 1;
    gs_database *db = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_open("main", srcpath, &o, &db, &err), GS_OK, "%s", err.message);
    char dest[192];
    snprintf(dest, sizeof dest, "%s/taken.db", tmpdir);
    FILE *f = fopen(dest, "w");
    cr_assert_not_null(f);
    fputs("keep me", f);
    fclose(f);
    cr_assert_eq(gs_db_backup_to_path(db, dest, NULL, NULL, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_ERROR");
    cr_assert(strstr(err.message, "already exists"), "%s", err.message);
    struct stat sb;
    cr_assert_eq(stat(dest, &sb), 0);
    cr_assert_eq(sb.st_size, 7, "the existing file was touched");

    char bad[256];
    const char *bads[] = {"%s/a/../b.db", "%s/x\ty.db", "%s/..", "", "%s/nl\n.db"};
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        snprintf(bad, sizeof bad, bads[i], tmpdir);
        gs_error_init(&err);
        cr_assert_eq(gs_db_backup_to_path(db, bad, NULL, NULL, &err), GS_ERROR, "%s", bad);
        cr_assert_str_eq(err.code, "BACKUP_ERROR", "%s", bad);
        cr_assert_eq(gs_backup_file(srcpath, bad, NULL, NULL, &err), GS_ERROR, "%s", bad);
        cr_assert_str_eq(err.code, "BACKUP_ERROR", "%s", bad);
    }
    char b_dir[192];
    snprintf(b_dir, sizeof b_dir, "%s/b.db", tmpdir);
    cr_assert_not(exists(b_dir));
    /* a name with dots that is not a .. segment is fine */
    snprintf(dest, sizeof dest, "%s/..ok/a..b.db", tmpdir);
    cr_assert_eq(gs_db_backup_to_path(db, dest, NULL, NULL, &err), GS_OK, "%s", err.message);
    gs_db_close(db);
    cr_assert_eq(gs_db_backup_to_path(db, "/tmp/never.db", NULL, NULL, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "DATABASE_CLOSED");
    gs_db_free(db);
    assert_integrity(dest);
}

/* ---- another connection writing between steps: a rollback-journal file's copy restarts; a
 * WAL file's copy reads one snapshot and does not ---- */

typedef struct intruder {
    sqlite3 *db;
    int every; /* write after every n-th step */
} intruder;

static void intrude(void *user, const gs_backup_progress *p)
{
    intruder *in = user;
    if (p->steps % in->every == 0)
        exec_sql(in->db, "INSERT INTO t(v) VALUES (randomblob(200))");
}

static gs_status run_intruded_mode(const char *journal_mode_sql, int every, int no_progress_limit,
                                   gs_backup_result *res, gs_error *err, char *dest, size_t cap)
{
    make_source_mode(srcpath, 2000, journal_mode_sql);
    intruder in = {.every = every};
    cr_assert_eq(sqlite3_open(srcpath, &in.db), SQLITE_OK);
    gs_backup_options bo;
    gs_backup_options_default(&bo);
    bo.pages_per_step = 4;
    bo.no_progress_step_limit = no_progress_limit;
    bo.on_progress = intrude;
    bo.progress_user = &in;
    snprintf(dest, cap, "%s/out/c.db", tmpdir);
    gs_status st = gs_backup_file(srcpath, dest, &bo, res, err);
    sqlite3_close(in.db);
    return st;
}

static void run_intruded(int every, int no_progress_limit, gs_error *err, char *dest, size_t cap)
{
    gs_status st = run_intruded_mode("PRAGMA journal_mode=DELETE", every, no_progress_limit, NULL,
                                     err, dest, cap);
    cr_assert_eq(st, GS_ERROR, "the copy should have failed");
}

Test(backup, wal_file_copy_is_one_snapshot_while_another_connection_writes)
{
    gs_error err;
    gs_error_init(&err);
    gs_backup_result res;
    char dest[192];
    /* a write after every step: the journal-mode copy of the same file fails (below) */
    cr_assert_eq(run_intruded_mode("PRAGMA journal_mode=WAL", 1, 10, &res, &err, dest, sizeof dest),
                 GS_OK, "%s: %s", err.code, err.message);
    cr_assert_eq(res.restarts, 0, "the writes restarted the copy");
    cr_assert_gt(res.steps, 10, "the copy took %lld steps: the writes never met it",
                 (long long)res.steps);
    assert_integrity(dest);
    cr_assert_eq(count_rows(dest), 2000, "the copy is the file as it was when it began");
    cr_assert_gt(count_rows(srcpath), 2000, "the other connection went on writing");
}

Test(backup, restart_limit)
{
    gs_error err;
    gs_error_init(&err);
    char dest[192];
    run_intruded(3, 256, &err, dest, sizeof dest);
    cr_assert_str_eq(err.code, "BACKUP_RESTARTED");
    cr_assert(strstr(err.message, "3 times"), "%s", err.message);
    cr_assert_not(exists(dest));
    char dir[192];
    snprintf(dir, sizeof dir, "%s/out", tmpdir);
    cr_assert_eq(files_in(dir), 0, "a partial file was left behind");
}

Test(backup, no_progress_limit)
{
    gs_error err;
    gs_error_init(&err);
    char dest[192];
    run_intruded(1, 10, &err, dest, sizeof dest);
    cr_assert_str_eq(err.code, "BACKUP_RESTARTED");
    cr_assert(strstr(err.message, "no further in 10 steps"), "%s", err.message);
    char dir[192];
    snprintf(dir, sizeof dir, "%s/out", tmpdir);
    cr_assert_eq(files_in(dir), 0, "a partial file was left behind");
}

/* The progress callback holds the copy longer than the stall timeout: the time between steps
 * is the condition under test, so the callback lets that time pass. */
static void hold_copy(void *user, const gs_backup_progress *p)
{
    (void)user;
    if (p->steps == 2) {
        struct timespec ts = {0, 60 * 1000000};
        nanosleep(&ts, NULL);
    }
}

Test(backup, stall)
{
    make_source(srcpath, 1000);
    gs_backup_options bo;
    gs_backup_options_default(&bo);
    bo.pages_per_step = 2;
    bo.stall_timeout_ms = 30;
    bo.on_progress = hold_copy;
    char dest[192];
    snprintf(dest, sizeof dest, "%s/s.db", tmpdir);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_backup_file(srcpath, dest, &bo, NULL, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_STALLED");
    cr_assert_not(exists(dest));
    cr_assert_eq(partials_in(tmpdir), 0);
}

Test(backup, file_copy_and_restore)
{
    make_source(srcpath, 500);
    char dest[192], restored[192];
    snprintf(dest, sizeof dest, "%s/b/backup.db", tmpdir);
    snprintf(restored, sizeof restored, "%s/r/live.db", tmpdir);
    gs_error err;
    gs_error_init(&err);
    gs_backup_result res;
    cr_assert_eq(gs_backup_file(srcpath, dest, NULL, &res, &err), GS_OK, "%s", err.message);
    cr_assert_eq(res.restarts, 0);
    cr_assert_eq(gs_backup_file(srcpath, dest, NULL, NULL, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_ERROR");

    cr_assert_eq(gs_backup_restore(dest, restored, 0, &res, &err), GS_OK, "%s", err.message);
    cr_assert_eq(count_rows(restored), 500);
    assert_integrity(restored);
    /* the backup folder holds only the backup: no -wal or -shm was made beside it */
    char bdir[192];
    snprintf(bdir, sizeof bdir, "%s/b", tmpdir);
    cr_assert_eq(files_in(bdir), 1);
    cr_assert_eq(count_rows(dest), 500);

    cr_assert_eq(gs_backup_restore(dest, restored, 0, NULL, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_ERROR");
    cr_assert(strstr(err.message, "--replace"), "%s", err.message);
    /* --replace: a stale -wal of the old file must not be applied to the new one */
    char wal[200];
    snprintf(wal, sizeof wal, "%s-wal", restored);
    FILE *f = fopen(wal, "w");
    cr_assert_not_null(f);
    fputs("stale", f);
    fclose(f);
    cr_assert_eq(gs_backup_restore(dest, restored, 1, NULL, &err), GS_OK, "%s", err.message);
    cr_assert_not(exists(wal));
    cr_assert_eq(count_rows(restored), 500);
}

Test(backup, restore_refuses_a_damaged_backup)
{
    char bad[192], out[192];
    snprintf(bad, sizeof bad, "%s/bad.db", tmpdir);
    snprintf(out, sizeof out, "%s/out.db", tmpdir);
    make_source(bad, 2000);
    /* overwrite a page in the middle of the table's b-tree */
    FILE *f = fopen(bad, "r+b");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, 4096L * 20, SEEK_SET), 0);
    char junk[4096];
    memset(junk, 0x5a, sizeof junk);
    cr_assert_eq(fwrite(junk, 1, sizeof junk, f), sizeof junk);
    fclose(f);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_backup_restore(bad, out, 0, NULL, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_ERROR");
    cr_assert_not(exists(out));
    snprintf(bad, sizeof bad, "%s/missing.db", tmpdir);
    cr_assert_eq(gs_backup_restore(bad, out, 0, NULL, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_ERROR");
}

Test(backup, default_name)
{
    char name[64];
    gs_backup_default_name(name, sizeof name);
    cr_assert_eq(strncmp(name, "backup-", 7), 0, "%s", name);
    cr_assert_eq(strlen(name), strlen("backup-2026-01-02T03-04-05-678Z.db"), "%s", name);
    cr_assert_null(strchr(name, ':'));
    cr_assert_eq(strcmp(name + strlen(name) - 3, ".db"), 0);
    cr_assert_eq(strchr(name, '.'), name + strlen(name) - 3);
}

/* ---- SQLite never syncs the copy: the one fsync is backup.c's own, after the last step and
 * on the calling thread, never on the writer ---- */

/* A VFS over the default one that counts, for files whose name holds ".partial-" (a copy
 * being written), the xSync calls and the journals opened. */
typedef struct shim_file {
    sqlite3_file base;
    int partial;
    sqlite3_file *real; /* follows this struct in the same allocation */
} shim_file;

static sqlite3_vfs *shim_real;
static atomic_int shim_syncs, shim_journals, shim_partials;

#define REAL(f) (((shim_file *)(f))->real)
static int shim_close(sqlite3_file *f)
{
    int rc = REAL(f)->pMethods ? REAL(f)->pMethods->xClose(REAL(f)) : SQLITE_OK;
    return rc;
}
static int shim_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xRead(REAL(f), p, n, off);
}
static int shim_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xWrite(REAL(f), p, n, off);
}
static int shim_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int shim_sync(sqlite3_file *f, int flags)
{
    if (((shim_file *)f)->partial)
        atomic_fetch_add(&shim_syncs, 1);
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int shim_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int shim_lock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int shim_unlock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int shim_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int shim_fcntl(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int shim_sector(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int shim_devchar(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int shim_shm_map(sqlite3_file *f, int pg, int sz, int extend, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, extend, pp);
}
static int shim_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void shim_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int shim_shm_unmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int shim_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    return REAL(f)->pMethods->xFetch(REAL(f), off, n, pp);
}
static int shim_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}
#undef REAL

static const sqlite3_io_methods shim_methods = {3,
                                                shim_close,
                                                shim_read,
                                                shim_write,
                                                shim_truncate,
                                                shim_sync,
                                                shim_size,
                                                shim_lock,
                                                shim_unlock,
                                                shim_reserved,
                                                shim_fcntl,
                                                shim_sector,
                                                shim_devchar,
                                                shim_shm_map,
                                                shim_shm_lock,
                                                shim_shm_barrier,
                                                shim_shm_unmap,
                                                shim_fetch,
                                                shim_unfetch};

static int shim_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
    (void)vfs;
    shim_file *s = (shim_file *)f;
    memset(s, 0, sizeof *s);
    s->real = (sqlite3_file *)(s + 1);
    s->partial = name && strstr(name, ".partial-") != NULL;
    if (s->partial)
        atomic_fetch_add(&shim_partials, 1);
    if (s->partial && (flags & SQLITE_OPEN_MAIN_JOURNAL))
        atomic_fetch_add(&shim_journals, 1);
    int rc = shim_real->xOpen(shim_real, name, s->real, flags, out);
    /* xClose is called even when xOpen fails, if pMethods is set: only set it on success */
    if (rc == SQLITE_OK && s->real->pMethods)
        s->base.pMethods = &shim_methods;
    return rc;
}

static sqlite3_vfs shim_vfs;

static void shim_install(void)
{
    shim_real = sqlite3_vfs_find(NULL);
    cr_assert_not_null(shim_real);
    cr_assert_geq(shim_real->iVersion, 2);
    shim_vfs = *shim_real;
    shim_vfs.zName = "gs-test-count-syncs";
    shim_vfs.szOsFile = (int)sizeof(shim_file) + shim_real->szOsFile;
    shim_vfs.xOpen = shim_open;
    shim_vfs.pNext = NULL;
    cr_assert_eq(sqlite3_vfs_register(&shim_vfs, 1), SQLITE_OK);
}

Test(backup, sqlite_never_syncs_the_copy)
{
    shim_install();
    make_source(srcpath, 3000);
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_pool_size = 1;
    gs_database *db = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_open("main", srcpath, &o, &db, &err), GS_OK, "%s", err.message);
    gs_backup_options bo;
    gs_backup_options_default(&bo);
    bo.pages_per_step = 8;
    char dest[192], restored[192];
    snprintf(dest, sizeof dest, "%s/out/copy.db", tmpdir);
    snprintf(restored, sizeof restored, "%s/again/live.db", tmpdir);
    gs_backup_result res;
    gs_status st = gs_db_backup_to_path(db, dest, &bo, &res, &err);
    gs_db_close(db);
    gs_db_free(db);
    cr_assert_eq(st, GS_OK, "%s: %s", err.code, err.message);
    cr_assert_gt(res.steps, 5);
    cr_assert_gt(atomic_load(&shim_partials), 0, "the shim saw the copy being written");
    /* the last step of a served copy runs on the writer: a sync there would hold every write
     * for as long as the disk takes the whole file */
    cr_assert_eq(atomic_load(&shim_syncs), 0, "SQLite synced the copy");
    cr_assert_eq(atomic_load(&shim_journals), 0, "the copy kept a rollback journal");
    assert_integrity(dest);
    cr_assert_eq(count_rows(dest), 3000);
    /* a file copy and a restore write their copy the same way */
    snprintf(dest, sizeof dest, "%s/out/file.db", tmpdir);
    cr_assert_eq(gs_backup_file(srcpath, dest, NULL, NULL, &err), GS_OK, "%s", err.message);
    cr_assert_eq(gs_backup_restore(dest, restored, 0, NULL, &err), GS_OK, "%s", err.message);
    cr_assert_eq(atomic_load(&shim_syncs), 0, "SQLite synced a copy");
    cr_assert_eq(atomic_load(&shim_journals), 0, "a copy kept a rollback journal");
    cr_assert_eq(count_rows(restored), 3000);
    assert_integrity(restored);
    cr_assert_eq(sqlite3_vfs_unregister(&shim_vfs), SQLITE_OK);
}
