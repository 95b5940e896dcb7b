/* The change-capture backup cycle (db/backup_cycle.h) and what it stands on: the destination
 * handle with its deadline (backup_dest.h), the write-ahead log capture and restore writer
 * (backup_wal.h), chain records and queries (backup_chain.h) and restore to a moment
 * (backup_restore.h). The destination is an in-memory one written here against the public
 * vtable, so a test can damage, remove, refuse or slow down pieces. */
#include "base/alloc.h"
#include "base/error.h"
#include "base/sha256.h"
#include "db/backup_chain.h"
#include "db/backup_cycle.h"
#include "db/backup_dest.h"
#include "db/backup_restore.h"
#include "db/backup_priority.h"
#include "db/backup_wal.h"
#include "db/cdc_internal.h"
#include "db/database.h"
#include "plugin/loader.h"
#include "test_support.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 20000 /* upper bound for any single wait */

static char tmpdir[64];
static char dbpath[128];
static char staging[128];

/* ---- an in-memory destination ---- */

typedef struct mpiece {
    struct mpiece *next;
    char *name;
    uint64_t index;
    uint8_t *bytes;
    size_t len;
} mpiece;

static struct {
    pthread_mutex_t m;
    mpiece *head;
    atomic_int refuse_writes; /* write_piece fails while set */
    atomic_int delay_ms;      /* every call sleeps this long first */
    atomic_int writes;
    /* the scheduling of the thread that made the latest write and read (INT_MIN: none yet) */
    atomic_int write_nice, write_policy, read_nice, read_policy;
} MD = {.m = PTHREAD_MUTEX_INITIALIZER};

/* The calling thread's nice value (INT_MIN when unreadable). */
static int thread_nice(void)
{
    errno = 0;
    int n = getpriority(PRIO_PROCESS, (id_t)gettid());
    return n == -1 && errno != 0 ? INT_MIN : n;
}

static void md_sleep(void)
{
    int ms = atomic_load(&MD.delay_ms);
    if (ms > 0) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static mpiece *md_find(const char *name, uint64_t index)
{
    for (mpiece *p = MD.head; p; p = p->next)
        if (p->index == index && strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

static gs_status md_store(const char *name, uint64_t index, const uint8_t *bytes, size_t len,
                          int only_new, int *stored, gs_error *err)
{
    md_sleep();
    atomic_store(&MD.write_nice, thread_nice());
    atomic_store(&MD.write_policy, sched_getscheduler(0));
    if (atomic_load(&MD.refuse_writes))
        return gs_error_set(err, 0, "TEST_REFUSED", "the test destination refuses writes");
    uint8_t *copy = gs_malloc(len ? len : 1);
    cr_assert_not_null(copy);
    memcpy(copy, bytes, len);
    pthread_mutex_lock(&MD.m);
    mpiece *p = md_find(name, index);
    if (p && only_new) {
        pthread_mutex_unlock(&MD.m);
        gs_free(copy);
        *stored = 0;
        return GS_OK;
    }
    if (!p) {
        p = gs_calloc(1, sizeof *p);
        p->name = gs_strdup(name);
        p->index = index;
        p->next = MD.head;
        MD.head = p;
    }
    gs_free(p->bytes);
    p->bytes = copy;
    p->len = len;
    atomic_fetch_add(&MD.writes, 1);
    pthread_mutex_unlock(&MD.m);
    *stored = 1;
    return GS_OK;
}

static gs_status md_write(void *inst, const char *name, uint64_t index, const uint8_t *bytes,
                          size_t len, gs_error *err)
{
    (void)inst;
    int stored;
    return md_store(name, index, bytes, len, 0, &stored, err);
}

static gs_status md_claim(void *inst, const char *name, uint64_t index, const uint8_t *bytes,
                          size_t len, int *stored, gs_error *err)
{
    (void)inst;
    return md_store(name, index, bytes, len, 1, stored, err);
}

static gs_status md_read(void *inst, const char *name, uint64_t index, uint8_t **bytes, size_t *len,
                         gs_error *err)
{
    (void)inst;
    (void)err;
    md_sleep();
    atomic_store(&MD.read_nice, thread_nice());
    atomic_store(&MD.read_policy, sched_getscheduler(0));
    pthread_mutex_lock(&MD.m);
    mpiece *p = md_find(name, index);
    if (!p) {
        pthread_mutex_unlock(&MD.m);
        return GS_DECLINED;
    }
    *bytes = gs_malloc(p->len ? p->len : 1);
    memcpy(*bytes, p->bytes, p->len);
    *len = p->len;
    pthread_mutex_unlock(&MD.m);
    return GS_OK;
}

static gs_status md_list(void *inst, const char *name, gs_backup_piece_fn each, void *user,
                         gs_error *err)
{
    (void)inst;
    (void)err;
    md_sleep();
    pthread_mutex_lock(&MD.m);
    for (mpiece *p = MD.head; p; p = p->next)
        if (strcmp(p->name, name) == 0)
            each(user, p->index, p->len);
    pthread_mutex_unlock(&MD.m);
    return GS_OK;
}

static gs_status md_create(const gs_host *h, const void *c, void **i, gs_error *e)
{
    (void)h;
    (void)c;
    (void)e;
    *i = &MD;
    return GS_OK;
}

static void md_destroy(void *i)
{
    (void)i;
}

static const gs_backup_destination_vtable md_vt = {.struct_size = sizeof md_vt,
                                                   .create = md_create,
                                                   .destroy = md_destroy,
                                                   .write_piece = md_write,
                                                   .write_piece_if_absent = md_claim,
                                                   .read_piece = md_read,
                                                   .list_pieces = md_list};

/* The same destination without write_piece_if_absent. */
static const gs_backup_destination_vtable md_vt_noclaim = {.struct_size = sizeof md_vt,
                                                           .create = md_create,
                                                           .destroy = md_destroy,
                                                           .write_piece = md_write,
                                                           .read_piece = md_read,
                                                           .list_pieces = md_list};

static void md_reset(void)
{
    pthread_mutex_lock(&MD.m);
    while (MD.head) {
        mpiece *p = MD.head;
        MD.head = p->next;
        gs_free(p->name);
        gs_free(p->bytes);
        gs_free(p);
    }
    pthread_mutex_unlock(&MD.m);
    atomic_store(&MD.refuse_writes, 0);
    atomic_store(&MD.delay_ms, 0);
    atomic_store(&MD.writes, 0);
    atomic_store(&MD.write_nice, INT_MIN);
    atomic_store(&MD.write_policy, INT_MIN);
    atomic_store(&MD.read_nice, INT_MIN);
    atomic_store(&MD.read_policy, INT_MIN);
}

static void md_flip(const char *name, uint64_t index)
{
    pthread_mutex_lock(&MD.m);
    mpiece *p = md_find(name, index);
    cr_assert_not_null(p, "no piece %llu of %s", (unsigned long long)index, name);
    cr_assert_gt(p->len, 100u);
    p->bytes[p->len / 2] ^= 0x5a;
    pthread_mutex_unlock(&MD.m);
}

static void md_remove(const char *name, uint64_t index)
{
    pthread_mutex_lock(&MD.m);
    for (mpiece **pp = &MD.head; *pp; pp = &(*pp)->next) {
        mpiece *p = *pp;
        if (p->index == index && strcmp(p->name, name) == 0) {
            *pp = p->next;
            gs_free(p->name);
            gs_free(p->bytes);
            gs_free(p);
            break;
        }
    }
    pthread_mutex_unlock(&MD.m);
}

static int md_count(const char *name)
{
    int n = 0;
    pthread_mutex_lock(&MD.m);
    for (mpiece *p = MD.head; p; p = p->next)
        n += strcmp(p->name, name) == 0;
    pthread_mutex_unlock(&MD.m);
    return n;
}

/* ---- suite ---- */

static void setup(void)
{
    gs_test_mkdtemp(tmpdir, sizeof tmpdir, "bcycle");
    snprintf(dbpath, sizeof dbpath, "%s/main.db", tmpdir);
    snprintf(staging, sizeof staging, "%s/staging", tmpdir);
    md_reset();
}

static void teardown(void)
{
    md_reset();
    gs_test_rmtree(tmpdir);
}

TestSuite(backup_cycle, .init = setup, .fini = teardown, .timeout = 120);

/* ---- database helpers ---- */

static void cycle_config(gs_backup_cycle_config *c)
{
    gs_backup_cycle_config_default(c);
    c->vt = &md_vt;
    c->instance = &MD;
    c->destination_name = "memory";
    c->interval_ms = 3600000; /* turns only when a test asks for one */
    c->piece_bytes = 4096;    /* many pieces per file */
    c->staging_dir = staging;
    c->destination_timeout_ms = 10000;
}

static gs_database *open_db(const gs_backup_cycle_config *bc)
{
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_pool_size = 1;
    o.busy_timeout_ms = 200;
    o.backups = bc;
    gs_database *db = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_open("main", dbpath, &o, &db, &err), GS_OK, "%s: %s", err.code, err.message);
    return db;
}

typedef struct waiter {
    pthread_mutex_t m;
    pthread_cond_t c;
    int done;
    gs_status st;
    gs_error err;
} waiter;

static void on_done(void *user, const gs_db_reply *r)
{
    waiter *w = user;
    pthread_mutex_lock(&w->m);
    w->st = r->status;
    if (r->status != GS_OK)
        gs_error_copy(&w->err, &r->err);
    w->done = 1;
    pthread_cond_broadcast(&w->c);
    pthread_mutex_unlock(&w->m);
}

static void exec_db(gs_database *db, const char *sql)
{
    waiter w = {.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};
    gs_error_init(&w.err);
    gs_db_stmt stmt = {.sql = sql, .params = NULL};
    gs_db_request req = {
        .kind = GS_DB_EXECUTE, .stmts = &stmt, .stmt_count = 1, .done = on_done, .user = &w};
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_submit(db, &req, &err), GS_OK, "%s: %s", sql, err.message);
    int64_t deadline = gs_test_now_ms() + WAIT_MS;
    pthread_mutex_lock(&w.m);
    while (!w.done && gs_test_now_ms() < deadline) {
        struct timespec ts = gs_test_realtime_in(50);
        pthread_cond_timedwait(&w.c, &w.m, &ts);
    }
    pthread_mutex_unlock(&w.m);
    cr_assert(w.done, "no answer to %s", sql);
    cr_assert_eq(w.st, GS_OK, "%s: %s %s", sql, w.err.code, w.err.message);
}

static void insert_rows(gs_database *db, int from, int count)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE n(i) AS (SELECT %d UNION ALL SELECT i+1 FROM n WHERE i<%d) "
             "INSERT INTO t(id, v) SELECT i, printf('%%0300d', i) || hex(randomblob(20)) FROM n",
             from, from + count - 1);
    exec_db(db, sql);
}

static void turn_ok(gs_database *db)
{
    gs_error err;
    gs_error_init(&err);
    gs_backup_cycle *c = gs_db_backup_cycle(db);
    cr_assert_not_null(c);
    cr_assert_eq(gs_backup_cycle_run_once(c, &err), GS_OK, "turn: %s: %s", err.code, err.message);
}

/* SHA-256 of every row of t in id order and the row count, read through plain SQLite. */
static void table_digest(const char *path, char out[65], long long *rows)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT id, v FROM t ORDER BY id", -1, &st, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    gs_sha256 h;
    gs_sha256_init(&h);
    *rows = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        long long id = sqlite3_column_int64(st, 0);
        gs_sha256_update(&h, &id, sizeof id);
        gs_sha256_update(&h, sqlite3_column_text(st, 1), (size_t)sqlite3_column_bytes(st, 1));
        (*rows)++;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    uint8_t d[32];
    gs_sha256_final(&h, d);
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
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

static gs_status restore_to(const char *out, int has_moment, int64_t moment, gs_restore_report *rep,
                            gs_error *err)
{
    gs_backup_dest *d = NULL;
    cr_assert_eq(gs_backup_dest_new(&md_vt, &MD, 10000, &d, err), GS_OK);
    gs_restore_options o = {.has_moment = has_moment, .moment = moment, .batch_size = 2};
    gs_status st = gs_backup_restore_chain(d, &o, out, rep, err);
    gs_backup_dest_free(d);
    return st;
}

static gs_chain_list read_chains(void)
{
    gs_backup_dest *d = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_backup_dest_new(&md_vt, &MD, 10000, &d, &err), GS_OK);
    gs_chain_list l;
    cr_assert_eq(gs_chain_read_all(d, GS_BACKUP_DEFAULT_CHAIN_NAME, &l, &err), GS_OK, "%s",
                 err.message);
    gs_backup_dest_free(d);
    return l;
}

static int file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* A database with a chain: full copy (empty t), then two change pieces. */
static gs_database *db_with_chain(void)
{
    gs_backup_cycle_config bc;
    cycle_config(&bc);
    gs_database *db = open_db(&bc);
    exec_db(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    turn_ok(db); /* the first turn (queued at open) is the full copy, or this one captures */
    insert_rows(db, 1, 300);
    turn_ok(db);
    insert_rows(db, 301, 300);
    turn_ok(db);
    return db;
}

/* ---- the cycle end to end ---- */

Test(backup_cycle, full_copy_then_changes_restore_row_by_row)
{
    gs_database *db = db_with_chain();
    json_t *status = gs_backup_cycle_status(gs_db_backup_cycle(db));
    cr_assert(json_is_false(json_object_get(status, "running")));
    cr_assert_not_null(json_object_get(status, "chainId"));
    json_t *last = json_object_get(status, "lastRun");
    cr_assert_str_eq(json_string_value(json_object_get(last, "kind")), "change");
    cr_assert_str_eq(json_string_value(json_object_get(last, "route")), "staged");
    cr_assert_not_null(json_object_get(last, "position"));
    cr_assert_eq(strlen(json_string_value(json_object_get(last, "fingerprint"))), 64u);
    cr_assert_null(json_object_get(status, "lastError"));
    json_decref(status);

    gs_chain_list l = read_chains();
    cr_assert_eq(l.count, 1u);
    cr_assert_not_null(l.items[0].base);
    cr_assert_geq(l.items[0].change_count, 2u);
    for (size_t i = 0; i < l.items[0].change_count; i++) {
        const gs_chain_record *c = &l.items[0].changes[i];
        cr_assert_eq(c->sequence, (int64_t)i + 1);
        cr_assert_gt(c->piece_count, 1, "4096-byte pieces: a capture spans several");
        cr_assert_eq(c->frame_count, c->position.last_frame - c->position.first_frame + 1);
    }
    gs_chain_list_free(&l);

    char live[65], restored[65];
    long long live_rows, restored_rows;
    /* compare against the live file once the database has closed (its log folded in) */
    gs_db_free(db);
    table_digest(dbpath, live, &live_rows);
    cr_assert_eq(live_rows, 600);

    char out[192];
    snprintf(out, sizeof out, "%s/restored/main.db", tmpdir);
    gs_restore_report rep;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(restore_to(out, 0, 0, &rep, &err), GS_OK, "%s: %s", err.code, err.message);
    cr_assert_geq(rep.changes_applied, 2);
    cr_assert_gt(rep.frames_applied, 0);
    gs_restore_report_clear(&rep);
    assert_integrity(out);
    table_digest(out, restored, &restored_rows);
    cr_assert_eq(restored_rows, live_rows);
    cr_assert_str_eq(restored, live, "restored rows differ from the live ones");
}

/* Once sent, the staged full copy and each staged capture leave the staging folder (they are
 * truncated away in slices before the unlink; see release_staged). */
Test(backup_cycle, sent_files_leave_the_staging_folder)
{
    gs_database *db = db_with_chain();
    insert_rows(db, 601, 2000); /* a larger capture, sent like the others */
    turn_ok(db);
    DIR *d = opendir(staging);
    cr_assert_not_null(d);
    int others = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
            strcmp(e->d_name, "cycle.json") == 0)
            continue;
        cr_log_error("left in the staging folder: %s", e->d_name);
        others++;
    }
    closedir(d);
    cr_assert_eq(others, 0, "the staging folder holds only the cycle's state");
    gs_chain_list l = read_chains();
    cr_assert_eq(l.count, 1u);
    cr_assert_geq(l.items[0].change_count, 3u);
    gs_chain_list_free(&l);
    gs_db_free(db);
}

Test(backup_cycle, restore_to_a_moment_between_two_turns)
{
    gs_backup_cycle_config bc;
    cycle_config(&bc);
    gs_database *db = open_db(&bc);
    exec_db(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    insert_rows(db, 1, 100);
    turn_ok(db);
    turn_ok(db); /* the 100 rows are in a capture by now, whichever turn took the copy */
    char out[192];
    snprintf(out, sizeof out, "%s/at1.db", tmpdir);
    struct timespec ts = {0, 5 * 1000000};
    nanosleep(&ts, NULL);
    int64_t between = gs_backup_now_ms();
    nanosleep(&ts, NULL);
    insert_rows(db, 101, 250);
    turn_ok(db);
    gs_db_free(db);

    gs_restore_report rep;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(restore_to(out, 1, between, &rep, &err), GS_OK, "%s: %s", err.code, err.message);
    cr_assert_leq(rep.restores_to, between);
    gs_restore_report_clear(&rep);
    char dg[65];
    long long rows;
    table_digest(out, dg, &rows);
    cr_assert_eq(rows, 100, "exactly the rows committed before the moment");

    /* a moment before any full copy */
    snprintf(out, sizeof out, "%s/too-early.db", tmpdir);
    gs_error_init(&err);
    cr_assert_eq(restore_to(out, 1, 1000, &rep, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_CHAIN_BROKEN");
    cr_assert(strstr(err.message, "earliest"), "%s", err.message);
    cr_assert(!file_exists(out));
}

Test(backup_cycle, corrupted_and_missing_pieces_are_refused)
{
    gs_database *db = db_with_chain();
    gs_chain_list l = read_chains();
    cr_assert_eq(l.count, 1u);
    char base[NAME_MAX], change[NAME_MAX];
    snprintf(base, sizeof base, "%s", l.items[0].base->name);
    snprintf(change, sizeof change, "%s", l.items[0].changes[0].name);
    gs_backup_cycle *c = gs_db_backup_cycle(db);
    gs_error err;
    gs_error_init(&err);
    json_t *res = NULL;
    cr_assert_eq(gs_backup_cycle_verify(c, change, &res, &err), GS_OK, "%s", err.message);
    cr_assert_str_eq(json_string_value(json_object_get(res, "kind")), "change");
    cr_assert_eq(json_integer_value(json_object_get(res, "bytesRead")),
                 l.items[0].changes[0].bytes_written);
    cr_assert_str_eq(json_string_value(json_object_get(res, "fingerprint")),
                     l.items[0].changes[0].fingerprint);
    json_decref(res);
    gs_chain_list_free(&l);

    char out[192];
    snprintf(out, sizeof out, "%s/r.db", tmpdir);
    gs_restore_report rep;

    /* a damaged change piece */
    md_flip(change, 1);
    gs_error_init(&err);
    cr_assert_eq(gs_backup_cycle_verify(c, change, &res, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_DESTINATION_ERROR");
    cr_assert(strstr(err.message, "fingerprint"), "%s", err.message);
    gs_error_init(&err);
    cr_assert_eq(restore_to(out, 0, 0, &rep, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_CHAIN_BROKEN", "%s", err.message);
    cr_assert(!file_exists(out), "a refused restore writes nothing at the target");
    md_flip(change, 1); /* put it back */

    /* a missing piece of the full copy */
    md_remove(base, 0);
    gs_error_init(&err);
    cr_assert_eq(gs_backup_cycle_verify(c, base, &res, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_DESTINATION_ERROR");
    cr_assert(strstr(err.message, "missing piece 0"), "%s", err.message);
    gs_error_init(&err);
    cr_assert_eq(restore_to(out, 0, 0, &rep, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_CHAIN_BROKEN", "%s", err.message);
    cr_assert(!file_exists(out));

    /* a name no record states */
    gs_error_init(&err);
    cr_assert_eq(gs_backup_cycle_verify(c, "nothing-by-that-name", &res, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_CHAIN_BROKEN");
    gs_db_free(db);
}

Test(backup_cycle, a_gap_in_the_chain_is_refused_and_listed_safe_to_delete)
{
    gs_database *db = db_with_chain();
    gs_chain_list l = read_chains();
    char log[256];
    snprintf(log, sizeof log, "%s.%s", GS_BACKUP_DEFAULT_CHAIN_NAME, l.items[0].chain_id);
    size_t changes = l.items[0].change_count;
    gs_chain_list_free(&l);
    cr_assert_geq(changes, 2u);
    md_remove(log, 1); /* the record of change piece 1 */

    gs_error err;
    gs_error_init(&err);
    char out[192];
    snprintf(out, sizeof out, "%s/gap.db", tmpdir);
    gs_restore_report rep;
    cr_assert_eq(restore_to(out, 0, 0, &rep, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_CHAIN_BROKEN");
    cr_assert(strstr(err.message, "missing change piece 1"), "%s", err.message);

    json_t *out_j = NULL;
    cr_assert_eq(gs_backup_cycle_safe_to_delete(gs_db_backup_cycle(db), 0, 0, &out_j, &err), GS_OK);
    json_t *records = json_object_get(out_j, "records");
    cr_assert_eq(json_array_size(records), changes - 1, "every change after the gap");
    json_t *first = json_array_get(records, 0);
    cr_assert_str_eq(json_string_value(json_object_get(first, "kind")), "change");
    cr_assert_eq(json_integer_value(json_object_get(first, "sequence")), 2);
    json_decref(out_j);
    gs_db_free(db);
}

Test(backup_cycle, reopen_continues_the_chain_and_close_captures_last_writes)
{
    gs_backup_cycle_config bc;
    cycle_config(&bc);
    gs_database *db = open_db(&bc);
    exec_db(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    turn_ok(db);
    insert_rows(db, 1, 50);
    turn_ok(db);
    insert_rows(db, 51, 50); /* no turn: the close captures these */
    gs_db_free(db);
    gs_chain_list l = read_chains();
    cr_assert_eq(l.count, 1u);
    char chain_id[64];
    snprintf(chain_id, sizeof chain_id, "%s", l.items[0].chain_id);
    size_t before = l.items[0].change_count;
    gs_chain_list_free(&l);
    char dg[65];
    long long rows;
    char out[192];
    snprintf(out, sizeof out, "%s/after-close.db", tmpdir);
    gs_restore_report rep;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(restore_to(out, 0, 0, &rep, &err), GS_OK, "%s", err.message);
    gs_restore_report_clear(&rep);
    table_digest(out, dg, &rows);
    cr_assert_eq(rows, 100, "the close captured the writes made after the last turn");

    db = open_db(&bc); /* the state file names the chain: its first turn extends it */
    insert_rows(db, 101, 50);
    turn_ok(db);
    gs_db_free(db);
    l = read_chains();
    cr_assert_eq(l.count, 1u, "no fresh chain");
    cr_assert_str_eq(l.items[0].chain_id, chain_id);
    cr_assert_gt(l.items[0].change_count, before);
    for (size_t i = 0; i < l.items[0].change_count; i++)
        cr_assert_eq(l.items[0].changes[i].sequence, (int64_t)i + 1);
    gs_chain_list_free(&l);
    snprintf(out, sizeof out, "%s/after-reopen.db", tmpdir);
    cr_assert_eq(restore_to(out, 0, 0, &rep, &err), GS_OK, "%s", err.message);
    gs_restore_report_clear(&rep);
    table_digest(out, dg, &rows);
    cr_assert_eq(rows, 150);
}

Test(backup_cycle, a_log_rewound_under_the_chain_starts_a_fresh_one)
{
    gs_backup_cycle_config bc;
    cycle_config(&bc);
    gs_database *db = open_db(&bc);
    exec_db(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    turn_ok(db);
    insert_rows(db, 1, 20);
    /* a reader pins an old snapshot, so the capture's checkpoint cannot finish */
    sqlite3 *reader = NULL;
    cr_assert_eq(sqlite3_open_v2(dbpath, &reader, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM t;", NULL, NULL, NULL),
                 SQLITE_OK);
    insert_rows(db, 21, 20);
    turn_ok(db);
    sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(reader);
    char before[64];
    json_t *st = gs_backup_cycle_status(gs_db_backup_cycle(db));
    snprintf(before, sizeof before, "%s", json_string_value(json_object_get(st, "chainId")));
    json_decref(st);
    /* another connection checkpoints and restarts the log behind the cycle's back */
    sqlite3 *other = NULL;
    cr_assert_eq(sqlite3_open(dbpath, &other), SQLITE_OK);
    sqlite3_busy_timeout(other, 2000);
    cr_assert_eq(sqlite3_exec(other, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(other);
    insert_rows(db, 41, 20);

    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_backup_cycle_run_once(gs_db_backup_cycle(db), &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_LOG_REWOUND", "%s", err.message);
    st = gs_backup_cycle_status(gs_db_backup_cycle(db));
    cr_assert_str_neq(json_string_value(json_object_get(st, "chainId")), before,
                      "a fresh chain started");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(st, "lastRun"), "kind")),
                     "full");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(st, "lastError"), "code")),
                     "BACKUP_LOG_REWOUND");
    json_decref(st);
    gs_db_free(db);

    gs_chain_list l = read_chains();
    cr_assert_eq(l.count, 2u);
    cr_assert_str_eq(l.items[0].previous_chain_id, before);
    gs_chain_list_free(&l);
    char out[192];
    snprintf(out, sizeof out, "%s/fresh.db", tmpdir);
    gs_restore_report rep;
    cr_assert_eq(restore_to(out, 0, 0, &rep, &err), GS_OK, "%s", err.message);
    gs_restore_report_clear(&rep);
    char dg[65];
    long long rows;
    table_digest(out, dg, &rows);
    cr_assert_eq(rows, 60);
}

Test(backup_cycle, full_copy_interval_starts_fresh_chains)
{
    gs_backup_cycle_config bc;
    cycle_config(&bc);
    bc.full_copy_interval_ms = 0;
    bc.fingerprint = 0;
    bc.vt = &md_vt_noclaim; /* the list of chains is appended by write and read back */
    gs_database *db = open_db(&bc);
    exec_db(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    turn_ok(db);
    turn_ok(db);
    turn_ok(db);
    gs_db_free(db);
    gs_chain_list l = read_chains();
    cr_assert_geq(l.count, 3u);
    for (size_t i = 0; i < l.count; i++) {
        cr_assert_not_null(l.items[i].base);
        cr_assert_null(l.items[i].base->fingerprint, "fingerprints off");
        if (i + 1 < l.count)
            cr_assert_str_eq(l.items[i].previous_chain_id, l.items[i + 1].chain_id);
    }
    int64_t newest = l.items[0].base->finished_at;
    gs_chain_list_free(&l);
    gs_error err;
    gs_error_init(&err);
    gs_backup_dest *d = NULL;
    cr_assert_eq(gs_backup_dest_new(&md_vt, &MD, 10000, &d, &err), GS_OK);
    l = read_chains();
    json_t *recs = gs_chain_safe_to_delete(&l, 1, newest);
    cr_assert_geq(json_array_size(recs), 2u, "every older chain is superseded");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(recs, 0), "kind")), "full");
    json_decref(recs);
    recs = gs_chain_safe_to_delete(&l, 0, 0);
    cr_assert_eq(json_array_size(recs), 0u, "nothing is dead without restorableFrom");
    json_decref(recs);
    gs_chain_list_free(&l);
    gs_backup_dest_free(d);
}

Test(backup_cycle, max_uncaptured_log_bytes_empties_the_log)
{
    gs_backup_cycle_config bc;
    cycle_config(&bc);
    bc.max_uncaptured_log_bytes = 64 * 1024;
    gs_database *db = open_db(&bc);
    gs_backup_cycle *c = gs_db_backup_cycle(db);
    exec_db(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    turn_ok(db);
    atomic_store(&MD.refuse_writes, 1);
    insert_rows(db, 1, 100);
    /* the capture is staged and the log checkpointed; only the transfer fails */
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_backup_cycle_run_once(c, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_DESTINATION_ERROR", "%s", err.message);
    cr_assert(strstr(err.message, "refuses writes"), "%s", err.message);
    json_t *st = gs_backup_cycle_status(c);
    cr_assert_not_null(json_object_get(st, "chainId"), "a staged capture keeps the chain");
    json_decref(st);
    /* the next turn cannot send that capture, so it captures nothing while the log grows */
    insert_rows(db, 101, 400);
    cr_assert_gt(gs_wal_file_bytes(dbpath), 64 * 1024);
    gs_error_init(&err);
    cr_assert_eq(gs_backup_cycle_run_once(c, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_DESTINATION_ERROR", "%s", err.message);
    cr_assert_leq(gs_wal_file_bytes(dbpath), 64 * 1024, "the log was emptied");
    st = gs_backup_cycle_status(c);
    cr_assert_null(json_object_get(st, "chainId"), "the chain was dropped");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(st, "lastError"), "code")),
                     "BACKUP_CHAIN_BROKEN");
    json_decref(st);
    atomic_store(&MD.refuse_writes, 0);
    turn_ok(db); /* a fresh chain with a full copy */
    st = gs_backup_cycle_status(c);
    cr_assert_not_null(json_object_get(st, "chainId"));
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(st, "lastRun"), "kind")),
                     "full");
    json_decref(st);
    gs_db_free(db);
    char out[192];
    snprintf(out, sizeof out, "%s/after-limit.db", tmpdir);
    gs_restore_report rep;
    cr_assert_eq(restore_to(out, 0, 0, &rep, &err), GS_OK, "%s", err.message);
    gs_restore_report_clear(&rep);
    char dg[65];
    long long rows;
    table_digest(out, dg, &rows);
    cr_assert_eq(rows, 500);
}

Test(backup_cycle, a_turn_falling_due_while_one_runs_is_skipped)
{
    gs_backup_cycle_config bc;
    cycle_config(&bc);
    bc.interval_ms = 100;
    atomic_store(&MD.delay_ms, 40); /* every destination call: a full copy takes a while */
    gs_database *db = open_db(&bc);
    exec_db(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    insert_rows(db, 1, 200);
    json_t *skip = NULL;
    int64_t deadline = gs_test_now_ms() + WAIT_MS;
    while (!skip && gs_test_now_ms() < deadline) {
        json_t *st = gs_backup_cycle_status(gs_db_backup_cycle(db));
        skip = json_incref(json_object_get(st, "lastSkip"));
        json_decref(st);
        if (!skip) {
            struct timespec ts = {0, 20 * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    cr_assert_not_null(skip, "no previous-run-active skip was reported");
    cr_assert_str_eq(json_string_value(json_object_get(skip, "reason")), "previous-run-active");
    cr_assert(json_is_integer(json_object_get(skip, "uncapturedLogBytes")));
    json_decref(skip);
    gs_backup_metrics m;
    gs_backup_cycle_metrics(gs_db_backup_cycle(db), &m);
    cr_assert_gt(m.skips, 0u);
    atomic_store(&MD.delay_ms, 0);
    gs_db_free(db);
}

Test(backup_cycle, progress_and_metrics)
{
    gs_database *db = db_with_chain();
    gs_backup_metrics m;
    gs_backup_cycle_metrics(gs_db_backup_cycle(db), &m);
    cr_assert_eq(m.runs[0], 1u);
    cr_assert_geq(m.runs[1], 2u);
    cr_assert_eq(m.failures, 0u);
    uint64_t total = 0;
    for (int i = 0; i <= GS_BACKUP_DURATION_BOUNDS; i++)
        total += m.duration[1][i];
    cr_assert_eq(total, m.runs[1]);
    cr_assert_gt(m.last_success_ms, 0);
    json_t *chains = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_backup_cycle_chains(gs_db_backup_cycle(db), &chains, &err), GS_OK);
    json_t *c0 = json_array_get(json_object_get(chains, "chains"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(c0, "base"), "kind")),
                     "full");
    cr_assert_geq(json_array_size(json_object_get(c0, "changes")), 2u);
    json_decref(chains);
    gs_backup_location loc;
    cr_assert_eq(gs_backup_cycle_location(gs_db_backup_cycle(db), &loc, &err), GS_OK);
    cr_assert_str_eq(loc.chain_name, GS_BACKUP_DEFAULT_CHAIN_NAME);
    cr_assert_str_eq(loc.staging_dir, staging);
    gs_backup_location_clear(&loc);
    gs_db_free(db);
}

Test(backup_cycle, databases_without_a_log_are_refused)
{
    gs_backup_cycle_config bc;
    cycle_config(&bc);
    gs_db_options o;
    gs_db_options_default(&o);
    o.backups = &bc;
    gs_database *db = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_open("m", ":memory:", &o, &db, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_UNSUPPORTED");
    o.wal = 0;
    gs_error_init(&err);
    cr_assert_eq(gs_db_open("m", dbpath, &o, &db, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_UNSUPPORTED");
    o.wal = 1;
    o.backups = NULL;
    cr_assert_eq(gs_db_open("m", dbpath, &o, &db, &err), GS_OK);
    cr_assert_null(gs_db_backup_cycle(db));
    gs_db_free(db);
}

/* ---- CPU priority ---- */

static int background_nice(int base)
{
    return base + GS_BACKUP_NICE_STEP > 19 ? 19 : base + GS_BACKUP_NICE_STEP;
}

/* The nice value and policy of this process's thread named `name` (0: no such thread). Fields
 * 19 and 41 of /proc/<pid>/task/<tid>/stat, counted from 1; the name in field 2 may hold
 * spaces, so counting starts after its closing parenthesis. */
static int named_thread_sched(const char *name, int *nice, int *policy)
{
    DIR *d = opendir("/proc/self/task");
    cr_assert_not_null(d);
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char p[300], comm[64] = "", stat[1024] = "";
        snprintf(p, sizeof p, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(p, "r");
        if (!f)
            continue; /* the thread ended meanwhile */
        int ok = fgets(comm, sizeof comm, f) != NULL;
        fclose(f);
        comm[strcspn(comm, "\n")] = 0;
        if (!ok || strcmp(comm, name) != 0)
            continue;
        snprintf(p, sizeof p, "/proc/self/task/%s/stat", e->d_name);
        f = fopen(p, "r");
        cr_assert_not_null(f, "%s", p);
        cr_assert_not_null(fgets(stat, sizeof stat, f));
        fclose(f);
        char *rest = strrchr(stat, ')');
        cr_assert_not_null(rest, "%s", stat);
        char *save = NULL;
        int field = 2;
        for (char *tok = strtok_r(rest + 1, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
            field++;
            if (field == 19)
                *nice = atoi(tok);
            if (field == 41)
                *policy = atoi(tok);
        }
        cr_assert_geq(field, 41, "short stat line: %s", stat);
        found = 1;
    }
    closedir(d);
    return found;
}

static gs_status probe_writer(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)conn;
    (void)out;
    (void)err;
    int *v = user;
    v[0] = thread_nice();
    v[1] = sched_getscheduler(0);
    return GS_OK;
}

Test(backup_cycle, backup_threads_yield_to_the_writer)
{
    int base = thread_nice();
    int base_policy = sched_getscheduler(0);
    cr_assert_neq(base, INT_MIN);
    cr_assert_eq(base_policy, SCHED_OTHER, "the test runs as a normal process");
    gs_database *db = db_with_chain();

    /* the pieces were fingerprinted and sent by threads in the background */
    cr_assert_eq(atomic_load(&MD.write_policy), SCHED_BATCH, "policy %d",
                 atomic_load(&MD.write_policy));
    cr_assert_eq(atomic_load(&MD.write_nice), background_nice(base), "nice %d, test at %d",
                 atomic_load(&MD.write_nice), base);
    int nice = INT_MIN, policy = INT_MIN;
    cr_assert(named_thread_sched("gs-backup", &nice, &policy), "the cycle's thread is named");
    cr_assert_eq(policy, SCHED_BATCH);
    cr_assert_eq(nice, background_nice(base));

    /* the writer, which runs the copy's steps and the captures, kept its priority */
    int v[2] = {INT_MIN, INT_MIN};
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_cdc_writer_call_sync(db, probe_writer, v, &err), GS_OK, "%s", err.message);
    cr_assert_eq(v[0], base);
    cr_assert_eq(v[1], base_policy);

    /* a verify answers a person: its handle reads at normal priority */
    json_t *chains = NULL;
    cr_assert_eq(gs_backup_cycle_chains(gs_db_backup_cycle(db), &chains, &err), GS_OK);
    json_t *c0 = json_array_get(json_object_get(chains, "chains"), 0);
    const char *full = json_string_value(json_object_get(json_object_get(c0, "base"), "name"));
    cr_assert_not_null(full);
    json_t *out = NULL;
    cr_assert_eq(gs_backup_cycle_verify(gs_db_backup_cycle(db), full, &out, &err), GS_OK, "%s",
                 err.message);
    json_decref(out);
    json_decref(chains);
    cr_assert_eq(atomic_load(&MD.read_policy), base_policy);
    cr_assert_eq(atomic_load(&MD.read_nice), base);
    gs_db_free(db);
}

Test(backup_cycle, a_background_handle_moves_its_worker_only)
{
    int base = thread_nice();
    gs_error err;
    gs_error_init(&err);
    gs_backup_dest *d = NULL;
    cr_assert_eq(gs_backup_dest_new(&md_vt, &MD, 10000, &d, &err), GS_OK);
    uint8_t *b = gs_malloc(4);
    memcpy(b, "abcd", 4);
    cr_assert_eq(gs_backup_dest_write_take(d, "p", 0, b, 4, &err), GS_OK, "%s", err.message);
    cr_assert_eq(atomic_load(&MD.write_nice), base, "a plain handle's worker runs as it started");
    cr_assert_eq(atomic_load(&MD.write_policy), SCHED_OTHER);
    gs_backup_dest_set_background(d); /* from the next call on, on a worker already running */
    b = gs_malloc(4);
    memcpy(b, "efgh", 4);
    cr_assert_eq(gs_backup_dest_write_take(d, "p", 1, b, 4, &err), GS_OK, "%s", err.message);
    cr_assert_eq(atomic_load(&MD.write_nice), background_nice(base));
    cr_assert_eq(atomic_load(&MD.write_policy), SCHED_BATCH);
    gs_backup_dest_free(d);
    cr_assert_eq(thread_nice(), base, "the caller's own thread kept its priority");
    cr_assert_eq(sched_getscheduler(0), SCHED_OTHER);
}

/* ---- pieces ---- */

Test(backup_cycle, destination_calls_have_a_deadline)
{
    gs_backup_dest *d = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_backup_dest_new(&md_vt, &MD, 100, &d, &err), GS_OK);
    atomic_store(&MD.delay_ms, 1500); /* far past the 100 ms deadline, whatever the load */
    uint8_t *b = gs_malloc(8);
    memcpy(b, "abcdefgh", 8);
    int64_t t0 = gs_test_now_ms();
    cr_assert_eq(gs_backup_dest_write_take(d, "n", 0, b, 8, &err), GS_ERROR);
    cr_assert_lt(gs_test_now_ms() - t0, 1000, "the caller stops waiting at the deadline");
    cr_assert_str_eq(err.code, "BACKUP_DESTINATION_ERROR");
    cr_assert(strstr(err.message, "destination_timeout_ms"), "%s", err.message);
    gs_backup_dest_free(d); /* waits for the abandoned call, which frees its own bytes */
    atomic_store(&MD.delay_ms, 0);
    cr_assert_eq(md_count("n"), 1, "the late call still finished cleanly");

    cr_assert_eq(gs_backup_dest_new(&md_vt, &MD, 1000, &d, &err), GS_OK);
    uint8_t *bytes = NULL;
    size_t len = 0;
    cr_assert_eq(gs_backup_dest_read(d, "n", 5, &bytes, &len, &err), GS_DECLINED);
    cr_assert(strstr(err.message, "no piece 5"), "%s", err.message);
    atomic_store(&MD.refuse_writes, 1);
    b = gs_malloc(1);
    gs_error_init(&err);
    cr_assert_eq(gs_backup_dest_write_take(d, "n", 1, b, 1, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BACKUP_DESTINATION_ERROR");
    cr_assert(strstr(err.message, "piece 1 of 'n'"), "names the piece: %s", err.message);
    atomic_store(&MD.refuse_writes, 0);
    gs_backup_dest_free(d);
}

Test(backup_cycle, chain_heads_claim_their_place)
{
    gs_backup_dest *d = NULL, *nd = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_backup_dest_new(&md_vt, &MD, 1000, &d, &err), GS_OK);
    cr_assert_eq(gs_backup_dest_new(&md_vt_noclaim, &MD, 1000, &nd, &err), GS_OK);
    int64_t i1 = -1, i2 = -1, i3 = -1;
    cr_assert_eq(gs_chain_append_head(d, "list", "aaaa", 1, NULL, &i1, &err), GS_OK);
    cr_assert_eq(gs_chain_append_head(nd, "list", "bbbb", 2, "aaaa", &i2, &err), GS_OK);
    cr_assert_eq(gs_chain_append_head(d, "list", "cccc", 3, "bbbb", &i3, &err), GS_OK);
    cr_assert_eq(i1, 0);
    cr_assert_eq(i2, 1);
    cr_assert_eq(i3, 2);
    int listed = 0;
    cr_assert_eq(gs_chain_is_listed(d, "list", "bbbb", 1, &listed, &err), GS_OK);
    cr_assert(listed);
    cr_assert_eq(gs_chain_is_listed(d, "list", "bbbb", 2, &listed, &err), GS_OK);
    cr_assert(!listed, "the place it recorded holds another chain");
    cr_assert_eq(gs_chain_is_listed(d, "list", "cccc", 7, &listed, &err), GS_OK);
    cr_assert(listed, "an empty place sends the check to the whole list");
    gs_backup_dest_free(d);
    gs_backup_dest_free(nd);
}

Test(backup_cycle, records_round_trip_and_bad_ones_are_refused)
{
    gs_chain_record r = {.kind = GS_CHAIN_CHANGE,
                         .chain_id = "c1",
                         .name = "n",
                         .run_id = "r",
                         .sequence = 3,
                         .position = {7, 1, 2, 5, 9},
                         .captured_at = 123,
                         .frame_count = 5,
                         .checkpointed = 1,
                         .piece_count = 1,
                         .piece_bytes = 4096,
                         .bytes_written = 100,
                         .fingerprint = NULL};
    json_t *j = gs_chain_record_to_json(&r);
    gs_chain_record back;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_chain_record_from_json(j, &back, &err), GS_OK);
    cr_assert_eq(back.sequence, 3);
    cr_assert_eq(back.position.last_frame, 9);
    cr_assert(back.checkpointed);
    cr_assert_null(back.fingerprint);
    gs_chain_record_clear(&back);
    json_object_set_new(j, "position",
                        json_pack("{sisisisisi}", "logSequence", 1, "salt1", 1, "salt2", 1,
                                  "firstFrame", 9, "lastFrame", 5));
    cr_assert_eq(gs_chain_record_from_json(j, &back, &err), GS_ERROR, "frames must run forward");
    cr_assert_str_eq(err.code, "BACKUP_DESTINATION_ERROR");
    json_object_set_new(j, "kind", json_string("other"));
    cr_assert_eq(gs_chain_record_from_json(j, &back, &err), GS_DECLINED);
    json_decref(j);
}

/* Frames of a transaction that never committed are not captured. */
Test(backup_cycle, capture_stops_at_the_last_commit)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db,
                              "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; "
                              "PRAGMA cache_size=5; CREATE TABLE t(id INTEGER PRIMARY KEY, v "
                              "TEXT); INSERT INTO t(v) VALUES ('a');",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    char wal[160], staged[160];
    snprintf(wal, sizeof wal, "%s-wal", dbpath);
    snprintf(staged, sizeof staged, "%s/cap.wal", tmpdir);
    gs_wal_capture cap;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_wal_capture_frames(wal, NULL, 0, staged, &cap, &err), GS_OK, "%s", err.message);
    cr_assert(cap.captured);
    cr_assert_eq(cap.first_frame, 1u);
    gs_wal_cursor cur = cap.cursor;
    /* a big transaction spills pages into the log, then rolls back */
    cr_assert_eq(sqlite3_exec(db,
                              "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM "
                              "n WHERE i<3000) INSERT INTO t(v) SELECT printf('%0500d', i) FROM "
                              "n; ROLLBACK;",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    cr_assert_eq(gs_wal_capture_frames(wal, &cur, 0, staged, &cap, &err), GS_OK, "%s", err.message);
    cr_assert(!cap.captured, "nothing committed after the cursor");
    cr_assert_eq(sqlite3_exec(db, "INSERT INTO t(v) VALUES ('b')", NULL, NULL, NULL), SQLITE_OK);
    cr_assert_eq(gs_wal_capture_frames(wal, &cur, 0, staged, &cap, &err), GS_OK, "%s", err.message);
    cr_assert(cap.captured);
    cr_assert_eq(cap.first_frame, cur.last_frame + 1);
    cr_assert_eq(cap.byte_length,
                 (int64_t)(cap.last_frame - cap.first_frame + 1) * (24 + (int64_t)cap.page_size));
    sqlite3_close(db);
}

/* The loader knows the kind: its name, file prefix, vtable size and required callbacks. */
Test(backup_cycle, the_loader_knows_backup_destinations)
{
    cr_assert_eq(gs_plugin_kind_parse("backup_destination"), GS_KIND_BACKUP_DESTINATION);
    cr_assert_str_eq(gs_plugin_kind_name(GS_KIND_BACKUP_DESTINATION), "backup_destination");
    cr_assert_str_eq(gs_plugin_kind_prefix(GS_KIND_BACKUP_DESTINATION), "backup");
    cr_assert_eq(gs_plugin_min_vtable_size(GS_KIND_BACKUP_DESTINATION),
                 offsetof(gs_backup_destination_vtable, list_pieces) + sizeof(void *));
    gs_plugin *p = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_plugin_load_builtin("files", "fs", GS_KIND_BACKUP_DESTINATION, &p, &err), GS_OK,
                 "%s", err.message);
    cr_assert_not_null(p, "the fs destination is built in");
    cr_assert_eq(p->desc->kind, GS_KIND_BACKUP_DESTINATION);
    const gs_backup_destination_vtable *vt = p->desc->vtable;
    cr_assert_not_null(vt->write_piece_if_absent);
    gs_plugin_unload(p);
}
