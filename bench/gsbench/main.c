/*
 * gatestream-bench: the open-loop load generator of issue 9. See bench/gsbench/README.md.
 *
 *   gatestream-bench --target gatestream-ws|gatestream-http|postgres|sqlite
 *                    --workload point-select|insert|update|ycsb-a|ycsb-b|ycsb-c|ycsb-f|tpcc
 *                    --rows N [--rate R | --sweep] --duration S [--url URL]
 *                    [--durability full|relaxed] [--connections N] [--out DIR] ...
 *   gatestream-bench --report DIR
 *   gatestream-bench --replication --url PRIMARY --replica-url URL [--replica-url URL ...]
 *                    --rate R --duration S [--out DIR]
 *
 * Exit status: 0 when the run happened (whether or not a rate held), 1 on a usage or setup
 * error (the message names what to fix).
 */
#ifdef GS_BENCH_HAVE_CLIENT
#include "repl_lag.h"
#endif
#include "report.h"
#include "openloop.h"
#include "sweep.h"
#include "target.h"

#include "base/alloc.h"
#include "base/error.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct opts {
    const char *target, *workload, *url, *db, *out, *sqlite_path, *report_dir;
    const char *durability;
    int64_t rows;
    double rate, duration, warmup, start_rate, slo_ms, max_rate;
    int sweep, connections, max_inflight, bisect, repeat, no_load, full_connection_sweep,
        replication;
    int64_t timeout_ms;
    uint64_t seed;
    const char *replicas[8];
    int nreplicas;
} opts;

static void usage(FILE *f)
{
    fputs("usage: gatestream-bench --target T --workload W --rows N (--rate R | --sweep)\n"
          "                        --duration S [options]\n"
          "       gatestream-bench --report DIR\n"
          "       gatestream-bench --replication --url PRIMARY --replica-url URL... --rate R\n"
          "                        --duration S [--out DIR]\n"
          "\n"
          "targets:    gatestream-ws, gatestream-http (--url http://HOST:PORT of a node),\n"
          "            postgres (--url a libpq conninfo or postgresql:// URI),\n"
          "            sqlite (in-process; --sqlite-path FILE, default a temporary file),\n"
          "            null (no engine: the generator's own ceiling)\n"
          "workloads:  point-select, insert, update, ycsb-a, ycsb-b, ycsb-c, ycsb-f, tpcc\n"
          "options:\n"
          "  --durability full|relaxed  full: fsync every commit (default); relaxed: WAL\n"
          "                             synchronous=NORMAL / synchronous_commit=off\n"
          "  --connections N   sqlite: reader threads (2); postgres: connections; gatestream-ws:\n"
          "                    WebSocket connections; gatestream-http: keep-alive connections.\n"
          "                    Absent with --sweep: chosen by a probe at each count (postgres\n"
          "                    1..64, gatestream-http 8..64, gatestream-ws 1..2); absent with\n"
          "                    --rate: postgres 8, gatestream-ws 1, gatestream-http 32\n"
          "  --warmup S        seconds excluded from each measurement (1)\n"
          "  --start-rate R    first rate of a sweep (default: from a 1 s capacity probe)\n"
          "  --max-rate R      never offer more (4096000)\n"
          "  --bisect N        refinement steps after the doubling (2)\n"
          "  --repeat N        runs per rate in a sweep (1..9, default 1); a rate is held when\n"
          "                    most runs hold it, the median-p99 run is reported\n"
          "  --slo-ms MS       the p99 bound of the operating point (25)\n"
          "  --max-inflight N  requests outstanding at most (1024)\n"
          "  --full-connection-sweep  a whole sweep at every connection count instead of a\n"
          "                    probe at each, keeping the best (slow)\n"
          "  --db ID           gatestream database id (main)\n"
          "  --timeout-ms MS   gatestream request timeout (10000)\n"
          "  --seed N          data and operation seed (42)\n"
          "  --no-load         keep the tables as they are (same --rows and --seed as the load)\n"
          "  --out DIR         steps.csv, points.csv, report.md, chart-*.svg (gsbench-out)\n",
          f);
}

static int parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, opts *o, gs_error *err)
{
    memset(o, 0, sizeof *o);
    o->durability = "full";
    o->out = "gsbench-out";
    o->db = "main";
    o->duration = 5;
    o->warmup = 1;
    o->slo_ms = 25;
    o->max_rate = 4096000;
    o->max_inflight = 1024;
    o->bisect = 2;
    o->repeat = 1;
    o->timeout_ms = 10000;
    o->seed = 42;
    o->start_rate = -1;
    enum {
        O_TARGET = 256,
        O_WORKLOAD,
        O_ROWS,
        O_RATE,
        O_SWEEP,
        O_DURATION,
        O_URL,
        O_DURABILITY,
        O_CONNECTIONS,
        O_OUT,
        O_WARMUP,
        O_START,
        O_MAXRATE,
        O_BISECT,
        O_SLO,
        O_INFLIGHT,
        O_PGFULL,
        O_DB,
        O_TIMEOUT,
        O_SEED,
        O_NOLOAD,
        O_SQLITE,
        O_REPORT,
        O_REPL,
        O_REPLICA,
        O_HELP,
        O_REPEAT
    };
    static const struct option longs[] = {
        {"target", 1, 0, O_TARGET},
        {"workload", 1, 0, O_WORKLOAD},
        {"rows", 1, 0, O_ROWS},
        {"rate", 1, 0, O_RATE},
        {"sweep", 0, 0, O_SWEEP},
        {"duration", 1, 0, O_DURATION},
        {"url", 1, 0, O_URL},
        {"durability", 1, 0, O_DURABILITY},
        {"connections", 1, 0, O_CONNECTIONS},
        {"out", 1, 0, O_OUT},
        {"warmup", 1, 0, O_WARMUP},
        {"start-rate", 1, 0, O_START},
        {"max-rate", 1, 0, O_MAXRATE},
        {"bisect", 1, 0, O_BISECT},
        {"slo-ms", 1, 0, O_SLO},
        {"max-inflight", 1, 0, O_INFLIGHT},
        {"full-connection-sweep", 0, 0, O_PGFULL},
        {"db", 1, 0, O_DB},
        {"timeout-ms", 1, 0, O_TIMEOUT},
        {"seed", 1, 0, O_SEED},
        {"no-load", 0, 0, O_NOLOAD},
        {"sqlite-path", 1, 0, O_SQLITE},
        {"report", 1, 0, O_REPORT},
        {"replication", 0, 0, O_REPL},
        {"replica-url", 1, 0, O_REPLICA},
        {"help", 0, 0, O_HELP},
        {"repeat", 1, 0, O_REPEAT},
        {0, 0, 0, 0},
    };
    int c;
    double v;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        const char *name = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
        switch (c) {
        case O_TARGET: o->target = optarg; break;
        case O_WORKLOAD: o->workload = optarg; break;
        case O_ROWS:
            if (parse_num(optarg, 1, 1e10, &v))
                goto bad;
            o->rows = (int64_t)v;
            break;
        case O_RATE:
            if (parse_num(optarg, 1, 1e8, &o->rate))
                goto bad;
            break;
        case O_SWEEP: o->sweep = 1; break;
        case O_DURATION:
            if (parse_num(optarg, 0.1, 86400, &o->duration))
                goto bad;
            break;
        case O_URL: o->url = optarg; break;
        case O_DURABILITY:
            if (strcmp(optarg, "full") && strcmp(optarg, "relaxed"))
                goto bad;
            o->durability = optarg;
            break;
        case O_CONNECTIONS:
            if (parse_num(optarg, 1, 4096, &v))
                goto bad;
            o->connections = (int)v;
            break;
        case O_OUT: o->out = optarg; break;
        case O_WARMUP:
            if (parse_num(optarg, 0, 3600, &o->warmup))
                goto bad;
            break;
        case O_START:
            if (parse_num(optarg, 1, 1e8, &o->start_rate))
                goto bad;
            break;
        case O_MAXRATE:
            if (parse_num(optarg, 1, 1e8, &o->max_rate))
                goto bad;
            break;
        case O_BISECT:
            if (parse_num(optarg, 0, 20, &v))
                goto bad;
            o->bisect = (int)v;
            break;
        case O_SLO:
            if (parse_num(optarg, 0.001, 1e6, &o->slo_ms))
                goto bad;
            break;
        case O_INFLIGHT:
            if (parse_num(optarg, 1, 1 << 20, &v))
                goto bad;
            o->max_inflight = (int)v;
            break;
        case O_PGFULL: o->full_connection_sweep = 1; break;
        case O_DB: o->db = optarg; break;
        case O_TIMEOUT:
            if (parse_num(optarg, 1, 3600000, &v))
                goto bad;
            o->timeout_ms = (int64_t)v;
            break;
        case O_SEED:
            if (parse_num(optarg, 0, 1e18, &v))
                goto bad;
            o->seed = (uint64_t)v;
            break;
        case O_NOLOAD: o->no_load = 1; break;
        case O_SQLITE: o->sqlite_path = optarg; break;
        case O_REPORT: o->report_dir = optarg; break;
        case O_REPL: o->replication = 1; break;
        case O_REPLICA:
            if (o->nreplicas >= 8)
                return gs_error_set(err, 0, "INVALID_ARGUMENT", "at most 8 --replica-url");
            o->replicas[o->nreplicas++] = optarg;
            break;
        case O_REPEAT:
            if (parse_num(optarg, 1, GS_BENCH_MAX_REPEAT, &v))
                goto bad;
            o->repeat = (int)v;
            break;
        case O_HELP: usage(stdout); exit(0);
        default:
            return gs_error_set(err, 0, "INVALID_ARGUMENT", "unknown option %s (see --help)", name);
        bad:
            return gs_error_set(err, 0, "INVALID_ARGUMENT", "bad value for %s: '%s' (see --help)",
                                name, optarg ? optarg : "");
        }
    }
    if (optind < argc)
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "unexpected argument '%s' (see --help)",
                            argv[optind]);
    if (o->report_dir)
        return GS_OK;
    if (o->replication) {
        if (!o->url || o->nreplicas == 0 || o->rate <= 0)
            return gs_error_set(err, 0, "INVALID_ARGUMENT",
                                "--replication needs --url PRIMARY, at least one --replica-url "
                                "and --rate R");
        return GS_OK;
    }
    if (!o->target || !gs_bench_target_find(o->target))
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "--target must be gatestream-ws, gatestream-http, postgres or sqlite%s",
#ifdef GS_BENCH_HAVE_CLIENT
                            ""
#else
                            " (this build has no libgatestream-client: sqlite or postgres only)"
#endif
        );
    if (!o->workload || !gs_bench_workload_find(o->workload))
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "--workload must be point-select, insert, update, ycsb-a, ycsb-b, "
                            "ycsb-c, ycsb-f or tpcc");
    if (o->rows <= 0)
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "--rows N is required (N >= 1)");
    if ((o->rate > 0) == (o->sweep != 0))
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "give exactly one of --rate R or --sweep");
    return GS_OK;
}

typedef struct ctx {
    const opts *o;
    gs_bench_meta meta;
    int failed_write;
    gs_error write_err;
} ctx;

static void on_step(void *user, const gs_bench_stat *s)
{
    ctx *c = user;
    printf("%-15s %-12s %-7s %-10s c=%-3d offered %9.0f/s achieved %9.0f/s  p50 %8.3f p95 %8.3f "
           "p99 %8.3f p99.9 %8.3f max %9.3f ms  err %llu tmo %llu late %llu unsent %llu  %s\n",
           c->meta.target, c->meta.workload, c->meta.durability, s->kind, s->connections, s->rate,
           s->achieved, s->p50, s->p95, s->p99, s->p999, s->max, (unsigned long long)s->errors,
           (unsigned long long)s->timeouts, (unsigned long long)s->late,
           (unsigned long long)s->unissued,
           strcmp(s->kind, "probe") == 0 || strcmp(s->kind, "probe-conn") == 0
               ? ""
               : (s->pass ? "held" : "missed"));
    if (s->first_error[0])
        printf("    first error: %s\n", s->first_error);
    fflush(stdout);
    if (gs_bench_csv_step(c->o->out, &c->meta, s, &c->write_err) != GS_OK)
        c->failed_write = 1;
}

static void sweep_cfg_from(const opts *o, gs_bench_sweep_cfg *sc, int connections)
{
    gs_bench_sweep_cfg_init(sc);
    sc->run.warmup_s = o->warmup;
    sc->run.duration_s = o->duration;
    sc->run.max_inflight = o->max_inflight;
    sc->run.slo_ms = o->slo_ms;
    sc->run.seed = o->seed;
    sc->run.rows = o->rows;
    sc->start_rate = o->start_rate;
    sc->max_rate = o->max_rate;
    sc->bisect = o->bisect;
    sc->repeat = o->repeat;
    sc->connections = connections;
}

/* The reported connection count of a target run with cfg->connections (0 = its default). */
static int shown_connections(const char *target, int c)
{
    if (c > 0)
        return c;
    if (strcmp(target, "sqlite") == 0)
        return 2;
    if (strcmp(target, "postgres") == 0)
        return 8;
    if (strcmp(target, "gatestream-http") == 0)
        return 32;
    return 1;
}

/* The connection counts a sweep tries when --connections is absent: PostgreSQL 1 .. 64 (the
 * issue's fairness rule), the gatestream HTTP pool 8 .. 64 and one or two WebSockets (each
 * gets its best honest setup too). SQLite's reader threads stay at the core count. */
static const int pg_counts[] = {1, 2, 4, 8, 16, 32, 64};
static const int http_counts[] = {8, 16, 32, 64};
static const int ws_counts[] = {1, 2};

static const int *connection_counts(const gs_bench_target_vt *vt, size_t *n)
{
    if (vt == &gs_bench_target_pg) {
        *n = sizeof pg_counts / sizeof pg_counts[0];
        return pg_counts;
    }
    if (strcmp(vt->name, "gatestream-http") == 0) {
        *n = sizeof http_counts / sizeof http_counts[0];
        return http_counts;
    }
    if (strcmp(vt->name, "gatestream-ws") == 0) {
        *n = sizeof ws_counts / sizeof ws_counts[0];
        return ws_counts;
    }
    *n = 0;
    return NULL;
}

/* Choose the connection count that serves the workload best. With a probe at each count (a
 * closed loop with one request per connection in flight, 64 per WebSocket): the highest
 * throughput whose p99 held the SLO (else the highest throughput). With
 * --full-connection-sweep: a whole sweep at each count, keeping the best operating point (its
 * steps and point are what is reported). */
static gs_status choose_connections(const opts *o, ctx *cx, const gs_bench_target_vt *vt,
                                    gs_bench_target_cfg *tc, int *chosen, gs_bench_stat *best_full,
                                    int *have_full, double *chosen_tp, gs_error *err)
{
    const gs_bench_workload *w = gs_bench_workload_find(o->workload);
    size_t n;
    const int *counts = connection_counts(vt, &n);
    double best_tp = -1, best_ok_tp = -1;
    int best_c = counts[0], best_ok_c = 0;
    *have_full = 0;
    memset(best_full, 0, sizeof *best_full);
    for (size_t i = 0; i < n; i++) {
        int c = counts[i];
        tc->connections = c;
        void *t;
        if (vt->open(tc, &t, err) != GS_OK)
            return GS_ERROR;
        gs_bench_sweep_cfg sc;
        sweep_cfg_from(o, &sc, c);
        gs_status st;
        if (o->full_connection_sweep) {
            gs_bench_stat best;
            st = gs_bench_sweep(vt, t, w, &sc, on_step, cx, &best, err);
            if (st == GS_OK && best.pass && (!*have_full || best.rate > best_full->rate)) {
                *best_full = best;
                *have_full = 1;
                *chosen = c;
            }
        } else {
            gs_bench_stat probe;
            sc.probe_inflight = strcmp(vt->name, "gatestream-ws") == 0 ? 64 * c : c;
            st = gs_bench_probe(vt, t, w, &sc, &probe, err);
            if (st == GS_OK) {
                probe.kind = "probe-conn";
                on_step(cx, &probe);
                if (probe.achieved > best_tp) {
                    best_tp = probe.achieved;
                    best_c = c;
                }
                if (probe.p99 < o->slo_ms && probe.errors == 0 && probe.achieved > best_ok_tp) {
                    best_ok_tp = probe.achieved;
                    best_ok_c = c;
                }
            }
        }
        vt->close(t);
        if (st != GS_OK)
            return GS_ERROR;
    }
    if (!o->full_connection_sweep) {
        *chosen = best_ok_c ? best_ok_c : best_c;
        *chosen_tp = best_ok_c ? best_ok_tp : best_tp;
    } else if (!*have_full) {
        *chosen = counts[n - 1];
    }
    return GS_OK;
}

static void make_run_id(char *out, size_t size)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(out, size, "%s-%ld", ts, (long)getpid());
}

static int run_bench(const opts *o, gs_error *err)
{
    const gs_bench_target_vt *vt = gs_bench_target_find(o->target);
    const gs_bench_workload *w = gs_bench_workload_find(o->workload);
    char tmpdir[64] = "", dbpath[PATH_MAX] = "";
    gs_bench_target_cfg tc = {
        .url = o->url,
        .db = o->db,
        .path = o->sqlite_path,
        .durability = strcmp(o->durability, "full") == 0 ? GS_BENCH_FULL : GS_BENCH_RELAXED,
        .connections = o->connections,
        .timeout_ms = o->timeout_ms,
    };
    if (vt == &gs_bench_target_sqlite && !o->sqlite_path) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/gsbench-XXXXXX");
        if (!mkdtemp(tmpdir))
            return gs_error_set(err, 0, "INVALID_ARGUMENT", "mkdtemp in /tmp failed"), 1;
        snprintf(dbpath, sizeof dbpath, "%s/bench.db", tmpdir);
        tc.path = dbpath;
    }
    if (gs_bench_outdir(o->out, err) != GS_OK)
        return 1;
    char run_id[64];
    make_run_id(run_id, sizeof run_id);
    ctx cx = {.o = o};
    cx.meta.run_id = run_id;
    cx.meta.target = o->target;
    cx.meta.workload = o->workload;
    cx.meta.durability = o->durability;
    cx.meta.rows = o->rows;
    gs_error_init(&cx.write_err);

    int rc = 1;
    void *t = NULL;
    char setup[600];
    if (vt->open(&tc, &t, err) != GS_OK)
        goto out;
    if (!o->no_load) {
        fprintf(stderr, "gatestream-bench: loading %s (%lld rows) into %s...\n", w->name,
                (long long)o->rows, vt->name);
        int64_t t0 = gs_bench_now_ns();
        if (vt->load(t, w, o->rows, o->seed, err) != GS_OK)
            goto out;
        fprintf(stderr, "gatestream-bench: loaded in %.1f s\n",
                (double)(gs_bench_now_ns() - t0) / 1e9);
    }
    gs_bench_stat best;
    memset(&best, 0, sizeof best);
    int have_best = 0;
    double probed_tp = 0; /* the chosen count's probe throughput: the sweep's first rung */
    size_t ncounts;
    if (o->sweep && o->connections == 0 && connection_counts(vt, &ncounts)) {
        vt->close(t);
        t = NULL;
        int chosen = 0, have_full = 0;
        if (choose_connections(o, &cx, vt, &tc, &chosen, &best, &have_full, &probed_tp, err) !=
            GS_OK)
            goto out;
        tc.connections = chosen;
        if (vt->open(&tc, &t, err) != GS_OK)
            goto out;
        if (have_full)
            have_best = 1;
        fprintf(stderr, "gatestream-bench: %s serves %s best with %d connections\n", vt->name,
                w->name, chosen);
    }
    vt->describe(t, setup, sizeof setup);
    cx.meta.setup = setup;
    int shown = shown_connections(o->target, tc.connections);
    if (o->sweep && !have_best) {
        gs_bench_sweep_cfg sc;
        sweep_cfg_from(o, &sc, shown);
        if (sc.start_rate <= 0 && probed_tp > 0)
            sc.start_rate = gs_bench_rung_below(probed_tp / 4);
        if (gs_bench_sweep(vt, t, w, &sc, on_step, &cx, &best, err) != GS_OK)
            goto out;
        have_best = 1;
    } else if (!o->sweep) {
        gs_bench_sweep_cfg sc;
        sweep_cfg_from(o, &sc, shown);
        gs_bench_run_cfg r = sc.run;
        r.rate = o->rate;
        gs_bench_result res;
        if (gs_bench_run(vt, t, w, &r, &res, err) != GS_OK)
            goto out;
        gs_bench_stat s;
        gs_bench_stat_from(&s, &res, "fixed", shown);
        gs_bench_result_free(&res);
        on_step(&cx, &s);
        if (s.pass)
            best = s;
        best.connections = shown;
        have_best = 1;
    }
    if (have_best) {
        if (gs_bench_csv_point(o->out, &cx.meta, &best, err) != GS_OK)
            goto out;
        if (best.pass)
            printf("operating point: %s %s %s: %.0f ops/s (p99 %.3f ms, %d connections)\n",
                   o->target, o->workload, o->durability, best.rate, best.p99, best.connections);
        else
            printf("operating point: %s %s %s: no rate held p99 < %.0f ms\n", o->target,
                   o->workload, o->durability, o->slo_ms);
    }
    if (cx.failed_write) {
        gs_error_copy(err, &cx.write_err);
        goto out;
    }
    if (gs_bench_report(o->out, err) != GS_OK)
        goto out;
    rc = 0;
out:
    if (t)
        vt->close(t);
    if (tmpdir[0]) {
        const char *suffix[] = {"", "-wal", "-shm", "-journal"};
        for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
            char p[PATH_MAX + 16];
            snprintf(p, sizeof p, "%s%s", dbpath, suffix[i]);
            unlink(p);
        }
        rmdir(tmpdir);
    }
    return rc;
}

int main(int argc, char **argv)
{
    opts o;
    gs_error err;
    gs_error_init(&err);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (parse_args(argc, argv, &o, &err) != GS_OK) {
        fprintf(stderr, "gatestream-bench: %s\n", err.message);
        return 1;
    }
    int rc;
    if (o.report_dir) {
        rc = gs_bench_report(o.report_dir, &err) == GS_OK ? 0 : 1;
    } else if (o.replication) {
#ifdef GS_BENCH_HAVE_CLIENT
        gs_bench_lag_cfg lc;
        gs_bench_lag_cfg_init(&lc);
        lc.primary = o.url;
        lc.replicas = o.replicas;
        lc.nreplicas = o.nreplicas;
        lc.rate = o.rate;
        lc.duration_s = o.duration;
        lc.db = o.db;
        lc.out = o.out;
        rc = gs_bench_outdir(o.out, &err) == GS_OK && gs_bench_lag_run(&lc, &err) == GS_OK ? 0 : 1;
#else
        gs_error_set(&err, 0, "INVALID_ARGUMENT",
                     "--replication needs libgatestream-client, absent from this build");
        rc = 1;
#endif
    } else {
        rc = run_bench(&o, &err);
    }
    if (rc != 0)
        fprintf(stderr, "gatestream-bench: %s%s%s\n", err.code[0] ? err.code : "",
                err.code[0] ? ": " : "", err.message);
    return rc;
}
