/* Asynchronous calls against a real server: thousands in flight on one WebSocket (and on
 * the HTTP pool), each completed exactly once with its own answer; timeouts complete with
 * TIMEOUT; closing the client completes what is pending; a synchronous call from a callback
 * is refused instead of deadlocking; many threads share one client. */
#include <criterion/criterion.h>

#include <gatestream/client.h>

#include "support.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static gst_server srv;

static void start_server(void)
{
    /* 4000 calls in flight hold about 1334 writes; under a slow (sanitizer) build they can
     * all be queued at once, past the default bound of 1024, and the server then sheds
     * some with WRITE_OVERLOADED, as it should (test_database covers that bound). This
     * test is about the client's multiplexing, so the bound is raised above the load. */
    cr_assert_eq(gst_server_start(&srv, NULL, NULL, "    max_pending_writes: 8192\n", 1), 0,
                 "server start");
}

static void stop_server(void)
{
    gst_server_cleanup(&srv);
}

static gs_client *open_client(gs_client_transport t)
{
    char url[64];
    const char *urls[] = {gst_server_url(&srv, url, sizeof url)};
    gs_client_config cfg;
    gs_client_config_init(&cfg);
    cfg.transport = t;
    cfg.http_max_connections = 8;
    gs_client *c;
    gs_error err;
    cr_assert_eq(gs_client_open(urls, 1, &cfg, &c, &err), GS_OK, "%s", err.message);
    return c;
}

enum { MAXN = 4000 };

typedef struct tally {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int failed;
    int wrong;
    int calls[MAXN];
    char first_error[256];
} tally;

typedef struct slot {
    tally *t;
    int i;
    int is_write;
} slot;

static void on_done(void *user, gs_status st, gs_client_response *resp, const gs_error *err)
{
    slot *s = user;
    tally *t = s->t;
    int ok = 1;
    if (st == GS_OK && !s->is_write)
        ok = gs_client_rows_count(resp->rows) == 1 &&
             gs_client_rows_get(resp->rows, 0, 0)->u.i == s->i;
    if (st == GS_OK && s->is_write)
        ok = resp->exec.changes == 1;
    pthread_mutex_lock(&t->mu);
    t->calls[s->i]++;
    if (st != GS_OK) {
        if (!t->failed)
            snprintf(t->first_error, sizeof t->first_error, "%s: %s", err->code, err->message);
        t->failed++;
    } else if (!ok) {
        t->wrong++;
    }
    t->done++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static int wait_done(tally *t, int n, int timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    pthread_mutex_lock(&t->mu);
    int rc = 0;
    while (t->done < n && rc == 0)
        rc = pthread_cond_timedwait(&t->cv, &t->mu, &dl);
    int done = t->done;
    pthread_mutex_unlock(&t->mu);
    return done;
}

static void many_in_flight(gs_client_transport tr, int n)
{
    gs_client *c = open_client(tr);
    gs_error err;
    gs_client_db *db = gs_client_database(c, "main", &err);
    gs_client_exec ex;
    cr_assert_eq(gs_client_execute(db, "CREATE TABLE w (id INTEGER PRIMARY KEY, v INTEGER)", NULL,
                                   NULL, &ex, &err),
                 GS_OK, "%s", err.message);
    static tally t;
    memset(&t, 0, sizeof t);
    pthread_mutex_init(&t.mu, NULL);
    pthread_cond_init(&t.cv, NULL);
    static slot slots[MAXN];
    static gs_value vals[MAXN];
    long long t0 = gst_now_ms();
    for (int i = 0; i < n; i++) {
        slots[i] = (slot){&t, i, i % 3 == 0};
        vals[i] = gs_client_val_int(i);
        gs_client_params p = gs_client_positional(&vals[i], 1);
        gs_status st =
            slots[i].is_write
                ? gs_client_execute_async(db, "INSERT INTO w (v) VALUES (?)", &p, NULL, on_done,
                                          &slots[i], &err)
                : gs_client_query_async(db, "SELECT ? AS v", &p, NULL, on_done, &slots[i], &err);
        cr_assert_eq(st, GS_OK, "submit %d: %s", i, err.message);
    }
    int done = wait_done(&t, n, 120000);
    long long took = gst_now_ms() - t0;
    cr_assert_eq(done, n, "%d of %d completed", done, n);
    cr_assert_eq(t.failed, 0, "%d failed; first: %s", t.failed, t.first_error);
    cr_assert_eq(t.wrong, 0, "%d answers did not match their request", t.wrong);
    for (int i = 0; i < n; i++)
        cr_assert_eq(t.calls[i], 1, "call %d completed %d times", i, t.calls[i]);
    gs_client_rows *r;
    cr_assert_eq(gs_client_query(db, "SELECT count(*) FROM w", NULL, NULL, &r, &err), GS_OK);
    cr_assert_eq(gs_client_rows_get(r, 0, 0)->u.i, (n + 2) / 3);
    gs_client_rows_free(r);
    fprintf(stderr, "%s: %d calls in flight completed in %lld ms\n",
            tr == GS_CLIENT_TRANSPORT_HTTP ? "http" : "websocket", n, took);
    gs_client_close(c);
}

Test(client_async, thousands_in_flight_on_one_websocket, .init = start_server, .fini = stop_server,
     .timeout = 180)
{
    many_in_flight(GS_CLIENT_TRANSPORT_WEBSOCKET, 4000);
}

Test(client_async, many_in_flight_over_http, .init = start_server, .fini = stop_server,
     .timeout = 180)
{
    many_in_flight(GS_CLIENT_TRANSPORT_HTTP, 600);
}

static const char *SLOW = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                          "WHERE i < 2000000) SELECT count(*) FROM n";

typedef struct one {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    gs_status st;
    gs_error err;
} one;

static void on_one(void *user, gs_status st, gs_client_response *resp, const gs_error *err)
{
    (void)resp;
    one *o = user;
    pthread_mutex_lock(&o->mu);
    o->calls++;
    o->st = st;
    if (err)
        o->err = *err;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

static int wait_one(one *o, int timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    pthread_mutex_lock(&o->mu);
    int rc = 0;
    while (!o->calls && rc == 0)
        rc = pthread_cond_timedwait(&o->cv, &o->mu, &dl);
    int calls = o->calls;
    pthread_mutex_unlock(&o->mu);
    return calls;
}

static void async_timeout_and_close(gs_client_transport tr)
{
    gs_client *c = open_client(tr);
    gs_error err;
    gs_client_db *db = gs_client_database(c, "main", &err);
    /* a timeout completes the call with TIMEOUT */
    one a = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, {0}};
    gs_client_call_opts o;
    gs_client_call_opts_init(&o);
    o.timeout_ms = 150;
    cr_assert_eq(gs_client_query_async(db, SLOW, NULL, &o, on_one, &a, &err), GS_OK);
    cr_assert_eq(wait_one(&a, 10000), 1);
    cr_assert_eq(a.st, GS_ERROR);
    cr_assert_str_eq(a.err.code, "TIMEOUT", "%s: %s", a.err.code, a.err.message);
    /* close with a call pending: its callback runs before close returns */
    one b = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, {0}};
    gs_client_call_opts_init(&o);
    o.timeout_ms = 0;
    cr_assert_eq(gs_client_query_async(db, SLOW, NULL, &o, on_one, &b, &err), GS_OK);
    gs_client_close(c);
    cr_assert_eq(b.calls, 1, "the pending call completed once before close returned");
    cr_assert_str_eq(b.err.code, "CONNECTION_ERROR", "%s: %s", b.err.code, b.err.message);
    cr_assert_eq(a.calls, 1, "the timed-out call never completed twice");
}

Test(client_async, timeout_and_close_over_websocket, .init = start_server, .fini = stop_server)
{
    async_timeout_and_close(GS_CLIENT_TRANSPORT_WEBSOCKET);
}

Test(client_async, timeout_and_close_over_http, .init = start_server, .fini = stop_server)
{
    async_timeout_and_close(GS_CLIENT_TRANSPORT_HTTP);
}

typedef struct nested {
    gs_client_db *db;
    one inner;
    gs_error sync_err;
    gs_status sync_st;
    int submitted;
} nested;

static void on_outer(void *user, gs_status st, gs_client_response *resp, const gs_error *err)
{
    (void)st;
    (void)resp;
    (void)err;
    nested *n = user;
    gs_client_rows *r = NULL;
    /* synchronous from a callback: refused */
    n->sync_st = gs_client_query(n->db, "SELECT 1", NULL, NULL, &r, &n->sync_err);
    gs_client_rows_free(r);
    /* asynchronous from a callback: fine */
    gs_error e;
    n->submitted =
        gs_client_query_async(n->db, "SELECT 2 AS two", NULL, NULL, on_one, &n->inner, &e) == GS_OK;
}

Test(client_async, callbacks_may_submit_but_not_wait, .init = start_server, .fini = stop_server)
{
    gs_client *c = open_client(GS_CLIENT_TRANSPORT_WEBSOCKET);
    gs_error err;
    static nested n;
    memset(&n, 0, sizeof n);
    n.db = gs_client_database(c, "main", &err);
    pthread_mutex_init(&n.inner.mu, NULL);
    pthread_cond_init(&n.inner.cv, NULL);
    cr_assert_eq(gs_client_query_async(n.db, "SELECT 1 AS one", NULL, NULL, on_outer, &n, &err),
                 GS_OK);
    cr_assert_eq(wait_one(&n.inner, 10000), 1, "the call submitted from the callback completed");
    cr_assert_eq(n.inner.st, GS_OK);
    cr_assert_eq(n.sync_st, GS_ERROR);
    cr_assert_str_eq(n.sync_err.code, "INVALID_ARGUMENT");
    gs_client_close(c);
}

typedef struct worker_arg {
    gs_client_db *db;
    int id;
    int ok;
} worker_arg;

static void *worker(void *arg)
{
    worker_arg *w = arg;
    for (int i = 0; i < 200; i++) {
        gs_value v = gs_client_val_int(w->id * 1000 + i);
        gs_client_params p = gs_client_positional(&v, 1);
        gs_client_rows *r;
        gs_error err;
        if (gs_client_query(w->db, "SELECT ? AS v", &p, NULL, &r, &err) != GS_OK)
            return NULL;
        int match = gs_client_rows_get(r, 0, 0)->u.i == w->id * 1000 + i;
        gs_client_rows_free(r);
        if (!match)
            return NULL;
        w->ok++;
    }
    return NULL;
}

Test(client_async, threads_share_a_client, .init = start_server, .fini = stop_server)
{
    for (int t = 0; t < 2; t++) {
        gs_client *c = open_client(t ? GS_CLIENT_TRANSPORT_HTTP : GS_CLIENT_TRANSPORT_WEBSOCKET);
        gs_error err;
        gs_client_db *db = gs_client_database(c, "main", &err);
        pthread_t th[8];
        worker_arg w[8];
        for (int i = 0; i < 8; i++) {
            w[i] = (worker_arg){db, i, 0};
            pthread_create(&th[i], NULL, worker, &w[i]);
        }
        for (int i = 0; i < 8; i++) {
            pthread_join(th[i], NULL);
            cr_assert_eq(w[i].ok, 200, "thread %d: %d of 200", i, w[i].ok);
        }
        gs_client_close(c);
    }
}
