/* Replica lag through the client library: see repl_lag.h. */
#include "repl_lag.h"

#include "hist.h"
#include "report.h"
#include "openloop.h"

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"

#include <gatestream/client.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_REPLICAS 8

void gs_bench_lag_cfg_init(gs_bench_lag_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->warmup_s = 1;
    cfg->settle_s = 30;
    cfg->max_inflight = 4096;
    cfg->db = "main";
    cfg->out = "gsbench-out";
}

typedef struct lag_state {
    int64_t n;                      /* rows 1..n */
    int64_t *due;                   /* [n + 1] due time of row i */
    int64_t *ack;                   /* [n + 1] acknowledgement time (0 = not yet) */
    int64_t *recv[MAX_REPLICAS];    /* [n + 1] change event time on each replica (0 = not yet) */
    uint64_t dup[MAX_REPLICAS];     /* events for a row already received */
    uint64_t foreign[MAX_REPLICAS]; /* events naming no row of this run */
    uint64_t errors;
    uint64_t received; /* first events, every replica (under mu) */
    char first_error[320];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inflight;
} lag_state;

typedef struct sub_ctx {
    lag_state *ls;
    int replica;
} sub_ctx;

static void on_event(void *user, const gs_client_event *ev)
{
    sub_ctx *sc = user;
    lag_state *ls = sc->ls;
    if (ev->kind != GS_CLIENT_EVENT_CHANGE || strcmp(ev->type ? ev->type : "", "insert") != 0)
        return;
    int64_t now = gs_bench_now_ns();
    int64_t id = -1;
    for (size_t i = 0; i < ev->row.count; i++)
        if (strcmp(ev->row.columns[i], "id") == 0 && ev->row.values[i].type == GS_VALUE_INT)
            id = ev->row.values[i].u.i;
    if (id < 1 || id > ls->n) {
        __atomic_add_fetch(&ls->foreign[sc->replica], 1, __ATOMIC_RELAXED);
        return;
    }
    int64_t zero = 0;
    if (!__atomic_compare_exchange_n(&ls->recv[sc->replica][id], &zero, now, 0, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED)) {
        __atomic_add_fetch(&ls->dup[sc->replica], 1, __ATOMIC_RELAXED);
        return;
    }
    pthread_mutex_lock(&ls->mu);
    ls->received++;
    pthread_cond_broadcast(&ls->cv);
    pthread_mutex_unlock(&ls->mu);
}

typedef struct write_ctx {
    lag_state *ls;
    int64_t id;
} write_ctx;

static void on_ack(void *user, gs_status st, gs_client_response *resp, const gs_error *err)
{
    (void)resp;
    write_ctx *wc = user;
    lag_state *ls = wc->ls;
    int64_t now = gs_bench_now_ns();
    pthread_mutex_lock(&ls->mu);
    if (st == GS_OK) {
        ls->ack[wc->id] = now;
    } else {
        ls->errors++;
        if (!ls->first_error[0])
            snprintf(ls->first_error, sizeof ls->first_error, "%s: %s", err->code, err->message);
    }
    ls->inflight--;
    pthread_cond_broadcast(&ls->cv);
    pthread_mutex_unlock(&ls->mu);
    gs_free(wc);
}

static gs_status open_ws(const char *url, const char *dbid, gs_client **c, gs_client_db **db,
                         gs_error *err)
{
    gs_client_config cc;
    gs_client_config_init(&cc);
    cc.transport = GS_CLIENT_TRANSPORT_WEBSOCKET;
    cc.mode = GS_CLIENT_MODE_SINGLE;
    cc.auto_reconnect = 0;
    const char *urls[] = {url};
    if (gs_client_open(urls, 1, &cc, c, err) != GS_OK) {
        gs_error_prefix(err, "%s", url);
        return GS_ERROR;
    }
    *db = gs_client_database(*c, dbid, err);
    if (!*db) {
        gs_client_close(*c);
        *c = NULL;
        return GS_ERROR;
    }
    return GS_OK;
}

static void timed_wait(lag_state *ls, int64_t until)
{
    struct timespec ts = {.tv_sec = until / 1000000000, .tv_nsec = until % 1000000000};
    pthread_cond_timedwait(&ls->cv, &ls->mu, &ts);
}

/* Wait (bounded) until every acknowledged row reached every replica: the count of first
 * events reaches acknowledged rows x replicas. */
static void settle(lag_state *ls, int nrep, double settle_s)
{
    uint64_t acked = 0;
    for (int64_t i = 1; i <= ls->n; i++)
        acked += __atomic_load_n(&ls->ack[i], __ATOMIC_RELAXED) != 0;
    int64_t deadline = gs_bench_now_ns() + (int64_t)(settle_s * 1e9);
    pthread_mutex_lock(&ls->mu);
    while (ls->received < acked * (uint64_t)nrep && gs_bench_now_ns() < deadline)
        timed_wait(ls, deadline);
    pthread_mutex_unlock(&ls->mu);
}

static void put_hist_ms(gs_buf *b, const gs_hist *h)
{
    gs_buf_printf(b, "%.2f,%.2f,%.2f,%.2f,%.2f", (double)gs_hist_percentile(h, 50) / 1e6,
                  (double)gs_hist_percentile(h, 95) / 1e6, (double)gs_hist_percentile(h, 99) / 1e6,
                  (double)gs_hist_percentile(h, 99.9) / 1e6, (double)h->max / 1e6);
}

gs_status gs_bench_lag_run(const gs_bench_lag_cfg *cfg, gs_error *err)
{
    if (cfg->nreplicas < 1 || cfg->nreplicas > MAX_REPLICAS || cfg->rate <= 0 ||
        cfg->duration_s <= 0)
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "replication mode needs 1..8 replicas, a rate and a duration");
    lag_state ls;
    memset(&ls, 0, sizeof ls);
    ls.n = (int64_t)(cfg->rate * (cfg->duration_s + cfg->warmup_s));
    if (ls.n < 1)
        ls.n = 1;
    pthread_mutex_init(&ls.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ls.cv, &ca);
    pthread_condattr_destroy(&ca);
    gs_client *pc = NULL, *rc[MAX_REPLICAS] = {0};
    gs_client_db *pdb = NULL, *rdb[MAX_REPLICAS] = {0};
    gs_client_sub *subs[MAX_REPLICAS] = {0};
    sub_ctx sctx[MAX_REPLICAS];
    gs_hist h_ack[MAX_REPLICAS], h_due[MAX_REPLICAS];
    memset(h_ack, 0, sizeof h_ack);
    memset(h_due, 0, sizeof h_due);
    gs_status st = GS_ERROR;
    char table[64], sql[256];
    snprintf(table, sizeof table, "bench_lag_%ld_%ld", (long)time(NULL), (long)getpid());

    ls.due = gs_calloc((size_t)ls.n + 1, sizeof *ls.due);
    ls.ack = gs_calloc((size_t)ls.n + 1, sizeof *ls.ack);
    int oom = !ls.due || !ls.ack;
    for (int r = 0; r < cfg->nreplicas; r++) {
        ls.recv[r] = gs_calloc((size_t)ls.n + 1, sizeof *ls.recv[r]);
        oom |= !ls.recv[r] || gs_hist_init(&h_ack[r], err) != GS_OK ||
               gs_hist_init(&h_due[r], err) != GS_OK;
    }
    if (oom) {
        gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory for %lld rows", (long long)ls.n);
        goto out;
    }
    if (open_ws(cfg->primary, cfg->db, &pc, &pdb, err) != GS_OK)
        goto out;
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id INTEGER PRIMARY KEY, due INTEGER NOT NULL)",
             table);
    gs_client_call_opts o;
    gs_client_call_opts_init(&o);
    o.write_concern = "all";
    o.write_concern_timeout_ms = 30000;
    o.timeout_ms = 60000;
    gs_client_exec ex;
    if (gs_client_execute(pdb, sql, NULL, &o, &ex, err) != GS_OK) {
        gs_error_prefix(err, "creating %s on the primary %s", table, cfg->primary);
        goto out;
    }
    for (int r = 0; r < cfg->nreplicas; r++) {
        if (open_ws(cfg->replicas[r], cfg->db, &rc[r], &rdb[r], err) != GS_OK)
            goto out;
        /* The table reached the replica (writeConcern all); wait for it anyway, bounded. */
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
        int64_t deadline = gs_bench_now_ns() + 30 * (int64_t)1000000000;
        for (;;) {
            gs_client_rows *rows = NULL;
            gs_status q = gs_client_query(rdb[r], sql, NULL, NULL, &rows, err);
            gs_client_rows_free(rows);
            if (q == GS_OK)
                break;
            if (gs_bench_now_ns() >= deadline) {
                gs_error_prefix(err, "%s never reached replica %s", table, cfg->replicas[r]);
                goto out;
            }
            struct timespec ts = {0, 50000000};
            nanosleep(&ts, NULL);
        }
        sctx[r].ls = &ls;
        sctx[r].replica = r;
        if (gs_client_subscribe(rdb[r], table, NULL, NULL, on_event, &sctx[r], &subs[r], err) !=
            GS_OK) {
            gs_error_prefix(err, "subscribing to %s on %s", table, cfg->replicas[r]);
            goto out;
        }
    }

    /* The writes: row i is due at t0 + (i - 1) / rate. */
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, due) VALUES (?, ?)", table);
    int64_t t0 = gs_bench_now_ns() + 10000000;
    uint64_t late = 0;
    for (int64_t i = 1; i <= ls.n; i++) {
        int64_t due = t0 + (int64_t)((double)(i - 1) * 1e9 / cfg->rate);
        int64_t now = gs_bench_now_ns();
        if (now < due) {
            struct timespec ts = {.tv_sec = due / 1000000000, .tv_nsec = due % 1000000000};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
        }
        pthread_mutex_lock(&ls.mu);
        while (ls.inflight >= cfg->max_inflight)
            timed_wait(&ls, gs_bench_now_ns() + 50000000);
        ls.inflight++;
        pthread_mutex_unlock(&ls.mu);
        if (gs_bench_now_ns() - due > 1000000)
            late++;
        ls.due[i] = due;
        write_ctx *wc = gs_malloc(sizeof *wc);
        gs_value p[2] = {gs_client_val_int(i), gs_client_val_int(due)};
        gs_client_params params = gs_client_positional(p, 2);
        gs_error e;
        gs_error_init(&e);
        gs_status sent = GS_ERROR;
        if (wc) {
            wc->ls = &ls;
            wc->id = i;
            sent = gs_client_execute_async(pdb, sql, &params, NULL, on_ack, wc, &e);
        } else {
            gs_error_set(&e, 0, "INTERNAL_ERROR", "out of memory");
        }
        if (sent != GS_OK) {
            gs_free(wc);
            pthread_mutex_lock(&ls.mu);
            ls.inflight--;
            ls.errors++;
            if (!ls.first_error[0])
                snprintf(ls.first_error, sizeof ls.first_error, "%s: %s", e.code, e.message);
            pthread_mutex_unlock(&ls.mu);
        }
    }
    /* Every acknowledgement (bounded by the client's request timeout + margin). */
    pthread_mutex_lock(&ls.mu);
    int64_t deadline = gs_bench_now_ns() + 60 * (int64_t)1000000000;
    while (ls.inflight > 0 && gs_bench_now_ns() < deadline)
        timed_wait(&ls, deadline);
    int stuck = ls.inflight;
    pthread_mutex_unlock(&ls.mu);
    settle(&ls, cfg->nreplicas, cfg->settle_s);

    /* Figures. */
    int64_t m_start = t0 + (int64_t)(cfg->warmup_s * 1e9);
    uint64_t acked = 0;
    for (int64_t i = 1; i <= ls.n; i++)
        acked += ls.ack[i] != 0;
    gs_buf md, csv;
    gs_buf_init(&md);
    gs_buf_init(&csv);
    gs_buf_printf(&md,
                  "### Replica lag (gatestream-bench --replication)\n\n%.0f single-row inserts/s "
                  "for %.0f s on the primary %s over a WebSocket; a WebSocket subscriber on each "
                  "replica. Lag in ms, rows due in the first %.0f s excluded.\n\n"
                  "| replica | rows received | missing | duplicates | ack → change p50 / p95 / "
                  "p99 / p99.9 / max | due → change p50 / p95 / p99 / p99.9 / max |\n"
                  "|---|---:|---:|---:|---|---|\n",
                  cfg->rate, cfg->duration_s, cfg->primary, cfg->warmup_s);
    int64_t missing_total = 0;
    printf("replication: %lld inserts (%llu acknowledged, %llu errors, %llu sent late, %d "
           "unanswered)\n",
           (long long)ls.n, (unsigned long long)acked, (unsigned long long)ls.errors,
           (unsigned long long)late, stuck);
    if (ls.first_error[0])
        printf("    first error: %s\n", ls.first_error);
    for (int r = 0; r < cfg->nreplicas; r++) {
        int64_t got = 0, missing = 0, negative = 0;
        for (int64_t i = 1; i <= ls.n; i++) {
            int64_t rv = __atomic_load_n(&ls.recv[r][i], __ATOMIC_RELAXED);
            if (rv)
                got++;
            else if (ls.ack[i])
                missing++;
            if (!rv || !ls.ack[i] || ls.due[i] < m_start)
                continue;
            if (rv < ls.ack[i])
                negative++;
            gs_hist_record(&h_ack[r], (uint64_t)(rv > ls.ack[i] ? rv - ls.ack[i] : 0));
            gs_hist_record(&h_due[r], (uint64_t)(rv > ls.due[i] ? rv - ls.due[i] : 0));
        }
        missing_total += missing;
        printf("  %s: %lld rows received, %lld missing, %llu duplicates; ack -> change p50 %.2f "
               "p99 %.2f max %.2f ms (%lld changes arrived before the ack); due -> change p50 "
               "%.2f p99 %.2f max %.2f ms\n",
               cfg->replicas[r], (long long)got, (long long)missing, (unsigned long long)ls.dup[r],
               (double)gs_hist_percentile(&h_ack[r], 50) / 1e6,
               (double)gs_hist_percentile(&h_ack[r], 99) / 1e6, (double)h_ack[r].max / 1e6,
               (long long)negative, (double)gs_hist_percentile(&h_due[r], 50) / 1e6,
               (double)gs_hist_percentile(&h_due[r], 99) / 1e6, (double)h_due[r].max / 1e6);
        gs_buf_printf(&md, "| %s | %lld | %lld | %llu | ", cfg->replicas[r], (long long)got,
                      (long long)missing, (unsigned long long)ls.dup[r]);
        gs_hist *hs[2] = {&h_ack[r], &h_due[r]};
        for (int k = 0; k < 2; k++) {
            gs_buf_printf(&md, "%.2f / %.2f / %.2f / %.2f / %.2f |",
                          (double)gs_hist_percentile(hs[k], 50) / 1e6,
                          (double)gs_hist_percentile(hs[k], 95) / 1e6,
                          (double)gs_hist_percentile(hs[k], 99) / 1e6,
                          (double)gs_hist_percentile(hs[k], 99.9) / 1e6, (double)hs[k]->max / 1e6);
            gs_buf_puts(&md, k ? "\n" : " ");
        }
        gs_buf_printf(&csv, "%ld,%s,%s,%.0f,%.1f,%lld,%lld,%llu,", (long)time(NULL), cfg->primary,
                      cfg->replicas[r], cfg->rate, cfg->duration_s, (long long)got,
                      (long long)missing, (unsigned long long)ls.dup[r]);
        put_hist_ms(&csv, &h_ack[r]);
        gs_buf_putc(&csv, ',');
        put_hist_ms(&csv, &h_due[r]);
        gs_buf_putc(&csv, '\n');
    }
    char path[4096];
    st = GS_OK;
    if (md.oom || csv.oom) {
        st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    } else {
        snprintf(path, sizeof path, "%s/replication.md", cfg->out);
        FILE *f = fopen(path, "w");
        if (f) {
            fwrite(md.data, 1, md.len, f);
            fclose(f);
        }
        snprintf(path, sizeof path, "%s/replication.csv", cfg->out);
        struct stat sb;
        int fresh = stat(path, &sb) != 0 || sb.st_size == 0;
        FILE *c = fopen(path, "a");
        if (c) {
            if (fresh)
                fputs("time,primary,replica,rate,seconds,received,missing,duplicates,"
                      "ack_p50_ms,ack_p95_ms,ack_p99_ms,ack_p999_ms,ack_max_ms,due_p50_ms,"
                      "due_p95_ms,due_p99_ms,due_p999_ms,due_max_ms\n",
                      c);
            fwrite(csv.data, 1, csv.len, c);
            fclose(c);
        }
        if (!f || !c)
            st = gs_error_set(err, 0, "INVALID_ARGUMENT", "cannot write into %s", cfg->out);
    }
    gs_buf_free(&md);
    gs_buf_free(&csv);
    if (st == GS_OK && (missing_total > 0 || stuck > 0 || ls.errors > 0))
        st = gs_error_set(err, 0, "REPLICATION_ERROR",
                          "%lld acknowledged rows never reached a replica, %d inserts were never "
                          "answered, %llu failed (see above)",
                          (long long)missing_total, stuck, (unsigned long long)ls.errors);
out:
    for (int r = 0; r < cfg->nreplicas; r++)
        gs_client_unsubscribe(subs[r]);
    gs_client_close(pc);
    for (int r = 0; r < cfg->nreplicas; r++)
        gs_client_close(rc[r]);
    for (int r = 0; r < cfg->nreplicas; r++) {
        gs_free(ls.recv[r]);
        gs_hist_free(&h_ack[r]);
        gs_hist_free(&h_due[r]);
    }
    gs_free(ls.due);
    gs_free(ls.ack);
    pthread_cond_destroy(&ls.cv);
    pthread_mutex_destroy(&ls.mu);
    return st;
}
