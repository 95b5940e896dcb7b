/* Subscriptions and live queries against a real server: filters, order, txEnd, unsubscribe;
 * the server restarting under a subscription (reconnect with backoff, resume from the last
 * seq and epoch, the missed changes replayed exactly once); a replaced database (RESYNC);
 * auto_reconnect off (the subscription ends with an ERROR event); a live query's rows kept
 * in step with inserts, updates and deletes. Every wait is bounded. */
#include <criterion/criterion.h>

#include <gatestream/client.h>

#include "support.h"

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

static gst_server srv;

static const char *OPERATIONS =
    "  operations:\n"
    "    - { database: main, name: byOwner, kind: read, args: [owner],\n"
    "        sql: \"SELECT id, owner, qty FROM ev WHERE owner = :owner ORDER BY id\" }\n";

static void start_server(void)
{
    cr_assert_eq(gst_server_start(&srv, NULL, OPERATIONS, NULL, 1), 0, "server start");
    int status;
    char body[512];
    cr_assert_eq(gst_http(srv.port, "POST", "/db/main/execute",
                          "{\"sql\":\"CREATE TABLE ev (id INTEGER PRIMARY KEY, owner TEXT, "
                          "qty INTEGER)\"}",
                          &status, body, sizeof body),
                 0);
    cr_assert_eq(status, 200, "%s", body);
}

static void stop_server(void)
{
    gst_server_cleanup(&srv);
}

enum { MAXEV = 512 };

typedef struct rec {
    int kind;
    long long id;
    char owner[32];
    char seq[24];
    int tx_end;
    char type[16];
} rec;

typedef struct collector {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    rec ev[MAXEV];
    char err_code[64];
} collector;

static void on_event(void *user, const gs_client_event *ev)
{
    collector *c = user;
    pthread_mutex_lock(&c->mu);
    if (c->n < MAXEV) {
        rec *r = &c->ev[c->n++];
        memset(r, 0, sizeof *r);
        r->kind = ev->kind;
        if (ev->kind == GS_CLIENT_EVENT_CHANGE) {
            for (size_t i = 0; i < ev->row.count; i++) {
                if (!strcmp(ev->row.columns[i], "id"))
                    r->id = ev->row.values[i].u.i;
                if (!strcmp(ev->row.columns[i], "owner") && ev->row.values[i].type == GS_VALUE_TEXT)
                    snprintf(r->owner, sizeof r->owner, "%s", ev->row.values[i].u.text.ptr);
            }
            snprintf(r->seq, sizeof r->seq, "%s", ev->seq);
            snprintf(r->type, sizeof r->type, "%s", ev->type ? ev->type : "");
            r->tx_end = ev->tx_end;
        }
        if (ev->kind == GS_CLIENT_EVENT_ERROR && ev->error)
            snprintf(c->err_code, sizeof c->err_code, "%s", ev->error->code);
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static collector *collector_new(void)
{
    collector *c = calloc(1, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    return c;
}

static int count_kind(collector *c, int kind)
{
    int n = 0;
    for (int i = 0; i < c->n; i++)
        n += c->ev[i].kind == kind;
    return n;
}

/* Wait until `want` events of `kind` arrived (bounded). Returns how many did. */
static int wait_kind(collector *c, int kind, int want, int timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    while (count_kind(c, kind) < want && rc == 0)
        rc = pthread_cond_timedwait(&c->cv, &c->mu, &dl);
    int n = count_kind(c, kind);
    pthread_mutex_unlock(&c->mu);
    return n;
}

static gs_client *open_ws(int reconnect_ms, int auto_reconnect)
{
    char url[64];
    const char *urls[] = {gst_server_url(&srv, url, sizeof url)};
    gs_client_config cfg;
    gs_client_config_init(&cfg);
    cfg.transport = GS_CLIENT_TRANSPORT_WEBSOCKET;
    cfg.reconnect_interval_ms = reconnect_ms;
    cfg.reconnect_max_ms = reconnect_ms * 2;
    cfg.auto_reconnect = auto_reconnect;
    gs_client *c;
    gs_error err;
    cr_assert_eq(gs_client_open(urls, 1, &cfg, &c, &err), GS_OK, "%s", err.message);
    return c;
}

static void insert(int port, const char *owner, int qty)
{
    char body[256], out[512];
    snprintf(body, sizeof body,
             "{\"sql\":\"INSERT INTO ev (owner, qty) VALUES (?, ?)\",\"params\":[\"%s\",%d]}",
             owner, qty);
    int status = 0;
    cr_assert_eq(gst_http(port, "POST", "/db/main/execute", body, &status, out, sizeof out), 0);
    cr_assert_eq(status, 200, "%s", out);
}

Test(client_subscribe, filter_order_and_unsubscribe, .init = start_server, .fini = stop_server)
{
    gs_client *c = open_ws(1000, 1);
    gs_error err;
    gs_client_db *db = gs_client_database(c, "main", &err);
    collector *col = collector_new();
    const char *cols[] = {"owner"};
    gs_value a = gs_client_val_text("a");
    gs_client_params filter = gs_client_named(cols, &a, 1);
    gs_client_sub *sub;
    cr_assert_eq(gs_client_subscribe(db, "ev", &filter, NULL, on_event, col, &sub, &err), GS_OK,
                 "%s: %s", err.code, err.message);
    char seq[24], epoch[128];
    gs_client_sub_cursor(sub, seq, sizeof seq, epoch, sizeof epoch);
    cr_assert(seq[0] && epoch[0], "the cursor is the subscribed seq and epoch");
    /* a transaction of three rows, two of them 'a' */
    gs_value v[] = {gs_client_val_text("a"), gs_client_val_text("b"), gs_client_val_text("a")};
    gs_client_stmt st[3];
    for (int i = 0; i < 3; i++) {
        st[i].sql = "INSERT INTO ev (owner, qty) VALUES (?, 1)";
        st[i].params = gs_client_positional(&v[i], 1);
    }
    gs_client_results res;
    cr_assert_eq(gs_client_transaction(db, st, 3, NULL, &res, &err), GS_OK, "%s", err.message);
    gs_client_results_free(&res);
    for (int i = 0; i < 5; i++)
        insert(srv.port, i % 2 ? "b" : "a", i);
    cr_assert_eq(wait_kind(col, GS_CLIENT_EVENT_CHANGE, 5, 15000), 5);
    pthread_mutex_lock(&col->mu);
    unsigned long long last = 0;
    for (int i = 0; i < col->n; i++) {
        rec *r = &col->ev[i];
        cr_assert_eq(r->kind, GS_CLIENT_EVENT_CHANGE);
        cr_assert_str_eq(r->owner, "a", "the filter holds");
        cr_assert_str_eq(r->type, "insert");
        unsigned long long s = strtoull(r->seq, NULL, 10);
        cr_assert_gt(s, last, "seq increases");
        last = s;
    }
    cr_assert(!col->ev[0].tx_end && col->ev[1].tx_end, "txEnd on the last 'a' of the transaction");
    cr_assert(col->ev[2].tx_end, "a single-row write is its own transaction");
    pthread_mutex_unlock(&col->mu);
    /* the cursor moves once the callback has returned (the event counts as processed then):
     * the collector saw the event a moment before that */
    long long until = gst_now_ms() + 5000;
    do {
        gs_client_sub_cursor(sub, seq, sizeof seq, NULL, 0);
        if (strtoull(seq, NULL, 10) == last)
            break;
        usleep(1000); /* polling a condition, bounded by the deadline */
    } while (gst_now_ms() < until);
    cr_assert_eq(strtoull(seq, NULL, 10), last, "the cursor follows the last event");
    gs_client_unsubscribe(sub);
    /* A second subscription sees the next change; the first one's callback does not. */
    collector *col2 = collector_new();
    cr_assert_eq(gs_client_subscribe(db, "ev", NULL, NULL, on_event, col2, &sub, &err), GS_OK);
    int before = col->n;
    insert(srv.port, "a", 99);
    cr_assert_eq(wait_kind(col2, GS_CLIENT_EVENT_CHANGE, 1, 15000), 1);
    cr_assert_eq(col->n, before, "no event after unsubscribe");
    /* A subscription to a missing table is the server's error. */
    gs_client_sub *bad;
    cr_assert_eq(gs_client_subscribe(db, "no_such_table", NULL, NULL, on_event, col2, &bad, &err),
                 GS_ERROR);
    cr_assert_str_eq(err.code, "CDC_ERROR", "%s: %s", err.code, err.message);
    gs_client_close(c);
    free(col);
    free(col2);
}

Test(client_subscribe, resumes_after_the_server_restarts, .init = start_server, .fini = stop_server,
     .timeout = 120)
{
    gs_client *c = open_ws(1500, 1);
    gs_error err;
    gs_client_db *db = gs_client_database(c, "main", &err);
    collector *col = collector_new();
    gs_client_sub *sub;
    cr_assert_eq(gs_client_subscribe(db, "ev", NULL, NULL, on_event, col, &sub, &err), GS_OK, "%s",
                 err.message);
    for (int i = 0; i < 5; i++)
        insert(srv.port, "before", i);
    cr_assert_eq(wait_kind(col, GS_CLIENT_EVENT_CHANGE, 5, 15000), 5);
    gst_server_stop(&srv);
    cr_assert_eq(wait_kind(col, GS_CLIENT_EVENT_DISCONNECTED, 1, 10000), 1);
    cr_assert_eq(gst_server_restart(&srv), 0);
    /* Written while the client is still away: it must get them by replay. */
    for (int i = 0; i < 7; i++)
        insert(srv.port, "missed", i);
    cr_assert_eq(wait_kind(col, GS_CLIENT_EVENT_RESUMED, 1, 30000), 1, "resubscribed");
    cr_assert_eq(wait_kind(col, GS_CLIENT_EVENT_CHANGE, 12, 15000), 12);
    insert(srv.port, "live", 0);
    cr_assert_eq(wait_kind(col, GS_CLIENT_EVENT_CHANGE, 13, 15000), 13);
    pthread_mutex_lock(&col->mu);
    long long want = 1;
    for (int i = 0; i < col->n; i++) {
        if (col->ev[i].kind != GS_CLIENT_EVENT_CHANGE)
            continue;
        cr_assert_eq(col->ev[i].id, want, "row %lld exactly once, in order (got %lld)", want,
                     col->ev[i].id);
        want++;
    }
    cr_assert_eq(count_kind(col, GS_CLIENT_EVENT_RESYNC), 0, "no resync for a resumable cursor");
    pthread_mutex_unlock(&col->mu);
    gs_client_unsubscribe(sub);
    gs_client_close(c);
    free(col);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

Test(client_subscribe, resync_when_the_database_is_replaced, .init = start_server,
     .fini = stop_server, .timeout = 120)
{
    gs_client *c = open_ws(2500, 1);
    gs_error err;
    gs_client_db *db = gs_client_database(c, "main", &err);
    collector *col = collector_new();
    gs_client_sub *sub;
    cr_assert_eq(gs_client_subscribe(db, "ev", NULL, NULL, on_event, col, &sub, &err), GS_OK);
    for (int i = 0; i < 3; i++)
        insert(srv.port, "old", i);
    cr_assert_eq(wait_kind(col, GS_CLIENT_EVENT_CHANGE, 3, 15000), 3);
    char epoch_before[128];
    gs_client_sub_cursor(sub, NULL, 0, epoch_before, sizeof epoch_before);
    gst_server_stop(&srv);
    char data[400];
    snprintf(data, sizeof data, "%s/data", srv.dir);
    nftw(data, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    cr_assert_eq(gst_server_restart(&srv), 0);
    int status;
    char out[512];
    cr_assert_eq(gst_http(srv.port, "POST", "/db/main/execute",
                          "{\"sql\":\"CREATE TABLE ev (id INTEGER PRIMARY KEY, owner TEXT, "
                          "qty INTEGER)\"}",
                          &status, out, sizeof out),
                 0);
    cr_assert_eq(status, 200, "%s", out);
    cr_assert_eq(wait_kind(col, GS_CLIENT_EVENT_RESYNC, 1, 30000), 1,
                 "the caller is told to resync");
    insert(srv.port, "new", 1);
    cr_assert_eq(wait_kind(col, GS_CLIENT_EVENT_CHANGE, 4, 15000), 4, "live after the resync");
    char epoch_after[128];
    gs_client_sub_cursor(sub, NULL, 0, epoch_after, sizeof epoch_after);
    cr_assert_str_neq(epoch_before, epoch_after, "the new epoch is adopted");
    pthread_mutex_lock(&col->mu);
    cr_assert_str_eq(col->ev[col->n - 1].owner, "new");
    pthread_mutex_unlock(&col->mu);
    gs_client_close(c);
    free(col);
}

Test(client_subscribe, ends_with_an_error_without_auto_reconnect, .init = start_server,
     .fini = stop_server)
{
    gs_client *c = open_ws(100, 0);
    gs_error err;
    gs_client_db *db = gs_client_database(c, "main", &err);
    collector *col = collector_new();
    gs_client_sub *sub;
    cr_assert_eq(gs_client_subscribe(db, "ev", NULL, NULL, on_event, col, &sub, &err), GS_OK);
    gst_server_stop(&srv);
    cr_assert_eq(wait_kind(col, GS_CLIENT_EVENT_ERROR, 1, 15000), 1);
    cr_assert_str_eq(col->err_code, "CONNECTION_ERROR");
    gs_client_unsubscribe(sub); /* a dead subscription is still freed by unsubscribe */
    gs_client_close(c);
    free(col);
}

typedef struct live_col {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int updates;
    size_t nrows;
    long long qty_sum;
    int revalidating;
    char err[64];
} live_col;

static void on_live(void *user, const gs_client_live_update *u)
{
    live_col *l = user;
    pthread_mutex_lock(&l->mu);
    l->updates++;
    if (u->error) {
        snprintf(l->err, sizeof l->err, "%s", u->error->code);
    } else if (u->revalidating) {
        l->revalidating++;
    } else {
        l->nrows = gs_client_rows_count(u->rows);
        long qc = gs_client_rows_column_index(u->rows, "qty");
        l->qty_sum = 0;
        for (size_t i = 0; i < l->nrows; i++)
            l->qty_sum += gs_client_rows_get(u->rows, i, (size_t)qc)->u.i;
    }
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static int wait_rows(live_col *l, size_t rows, long long sum, int timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    pthread_mutex_lock(&l->mu);
    int rc = 0;
    while (!(l->nrows == rows && l->qty_sum == sum) && rc == 0)
        rc = pthread_cond_timedwait(&l->cv, &l->mu, &dl);
    int ok = l->nrows == rows && l->qty_sum == sum;
    pthread_mutex_unlock(&l->mu);
    return ok;
}

Test(client_live, rows_follow_the_table, .init = start_server, .fini = stop_server)
{
    gs_client *c = open_ws(1000, 1);
    gs_error err;
    gs_client_db *db = gs_client_database(c, "main", &err);
    insert(srv.port, "zed", 10);
    static live_col l = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, ""};
    const char *an[] = {"owner"};
    gs_value zed = gs_client_val_text("zed");
    gs_client_params args = gs_client_named(an, &zed, 1);
    gs_client_live *lq;
    cr_assert_eq(gs_client_live_open(db, "byOwner", &args, on_live, &l, &lq, &err), GS_OK, "%s: %s",
                 err.code, err.message);
    cr_assert_eq(l.updates, 1, "the first rows were delivered before live_open returned");
    cr_assert_eq(l.nrows, 1);
    insert(srv.port, "zed", 5);
    insert(srv.port, "other", 100);
    cr_assert(wait_rows(&l, 2, 15, 15000), "insert reached the held rows");
    gs_client_exec ex;
    cr_assert_eq(gs_client_execute(db, "UPDATE ev SET qty = 20 WHERE owner = 'zed' AND qty = 10",
                                   NULL, NULL, &ex, &err),
                 GS_OK);
    cr_assert(wait_rows(&l, 2, 25, 15000), "update reached the held rows");
    cr_assert_eq(gs_client_execute(db, "DELETE FROM ev WHERE owner = 'zed' AND qty = 5", NULL, NULL,
                                   &ex, &err),
                 GS_OK);
    cr_assert(wait_rows(&l, 1, 20, 15000), "delete reached the held rows");
    gs_client_rows *copy = gs_client_live_rows(lq);
    cr_assert_eq(gs_client_rows_count(copy), 1);
    gs_client_rows_free(copy);
    gs_client_live_close(lq);
    /* unknown operation */
    gs_client_live *bad;
    cr_assert_eq(gs_client_live_open(db, "nope", NULL, on_live, &l, &bad, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "UNKNOWN_QUERY", "%s: %s", err.code, err.message);
    gs_client_close(c);
}
