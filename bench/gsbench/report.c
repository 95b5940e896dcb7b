/* The benchmark's CSV, markdown and SVG outputs: see report.h. */
#include "report.h"

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define STEPS_HEADER                                                                               \
    "run_id,target,workload,durability,kind,connections,rows,rate,achieved,p50_ms,p95_ms,"         \
    "p99_ms,p999_ms,max_ms,mean_ms,scheduled,measured,errors,timeouts,late,unissued,pass,load1,"   \
    "first_error\n"
#define POINTS_HEADER                                                                              \
    "run_id,target,workload,durability,connections,rows,held,rate,achieved,p50_ms,p95_ms,p99_ms,"  \
    "p999_ms,max_ms,setup\n"

static const char *const target_order[] = {"gatestream-ws", "gatestream-http", "postgres",
                                           "sqlite"};
static const char *const target_label[] = {"gatestream-ws", "gatestream-http", "PostgreSQL",
                                           "SQLite in-process"};
static const char *const target_color[] = {"#1f77b4", "#ff7f0e", "#d62728", "#2ca02c"};
#define NTARGETS 4

gs_status gs_bench_outdir(const char *dir, gs_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return gs_error_set(err, 0, "INVALID_ARGUMENT", "cannot create %s: %s", path,
                                strerror(errno));
        *p = '/';
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "cannot create output directory %s: %s",
                            path, strerror(errno));
    return GS_OK;
}

/* A CSV field: commas and line breaks become spaces or semicolons. */
static void csv_field(gs_buf *b, const char *s)
{
    for (; s && *s; s++)
        gs_buf_putc(b, *s == ',' ? ';' : (*s == '\n' || *s == '\r') ? ' ' : *s);
}

static gs_status append_line(const char *dir, const char *file, const char *header,
                             const gs_buf *line, gs_error *err)
{
    if (line->oom)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    struct stat sb;
    int fresh = stat(path, &sb) != 0 || sb.st_size == 0;
    FILE *f = fopen(path, "a");
    if (!f)
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "cannot write %s: %s", path,
                            strerror(errno));
    if (fresh)
        fputs(header, f);
    fwrite(line->data, 1, line->len, f);
    if (fclose(f) != 0)
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "cannot write %s: %s", path,
                            strerror(errno));
    return GS_OK;
}

static void meta_fields(gs_buf *b, const gs_bench_meta *m)
{
    csv_field(b, m->run_id);
    gs_buf_putc(b, ',');
    csv_field(b, m->target);
    gs_buf_putc(b, ',');
    csv_field(b, m->workload);
    gs_buf_putc(b, ',');
    csv_field(b, m->durability);
    gs_buf_putc(b, ',');
}

gs_status gs_bench_csv_step(const char *dir, const gs_bench_meta *m, const gs_bench_stat *s,
                            gs_error *err)
{
    gs_buf b;
    gs_buf_init(&b);
    meta_fields(&b, m);
    csv_field(&b, s->kind);
    gs_buf_printf(&b,
                  ",%d,%lld,%.1f,%.1f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%llu,%llu,%llu,%llu,%llu,%llu,"
                  "%d,%.2f,",
                  s->connections, (long long)m->rows, s->rate, s->achieved, s->p50, s->p95, s->p99,
                  s->p999, s->max, s->mean, (unsigned long long)s->scheduled,
                  (unsigned long long)s->measured, (unsigned long long)s->errors,
                  (unsigned long long)s->timeouts, (unsigned long long)s->late,
                  (unsigned long long)s->unissued, s->pass, s->load1);
    csv_field(&b, s->first_error);
    gs_buf_putc(&b, '\n');
    gs_status st = append_line(dir, "steps.csv", STEPS_HEADER, &b, err);
    gs_buf_free(&b);
    return st;
}

gs_status gs_bench_csv_point(const char *dir, const gs_bench_meta *m, const gs_bench_stat *best,
                             gs_error *err)
{
    gs_buf b;
    gs_buf_init(&b);
    meta_fields(&b, m);
    gs_buf_printf(&b, "%d,%lld,%d,%.1f,%.1f,%.3f,%.3f,%.3f,%.3f,%.3f,", best->connections,
                  (long long)m->rows, best->pass, best->pass ? best->rate : 0.0,
                  best->pass ? best->achieved : 0.0, best->p50, best->p95, best->p99, best->p999,
                  best->max);
    csv_field(&b, m->setup);
    gs_buf_putc(&b, '\n');
    gs_status st = append_line(dir, "points.csv", POINTS_HEADER, &b, err);
    gs_buf_free(&b);
    return st;
}

/* ---- reading the CSV files back ---- */

typedef struct row {
    char *fields[24];
    int n;
} row;

typedef struct table {
    char *text; /* the file, split in place */
    row *rows;
    size_t n;
} table;

static void table_free(table *t)
{
    gs_free(t->text);
    gs_free(t->rows);
    memset(t, 0, sizeof *t);
}

/* Read dir/file, skipping its header; a missing file is an empty table. */
static gs_status table_read(const char *dir, const char *file, table *t, gs_error *err)
{
    memset(t, 0, sizeof *t);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? GS_OK
                               : gs_error_set(err, 0, "INVALID_ARGUMENT", "cannot read %s: %s",
                                              path, strerror(errno));
    gs_buf b;
    gs_buf_init(&b);
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        gs_buf_append(&b, chunk, got);
    fclose(f);
    if (b.oom) {
        gs_buf_free(&b);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory reading %s", path);
    }
    size_t lines = 0;
    for (size_t i = 0; i < b.len; i++)
        lines += b.data[i] == '\n';
    t->text = gs_buf_take(&b, NULL);
    t->rows = gs_calloc(lines + 1, sizeof *t->rows);
    if (!t->rows) {
        table_free(t);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory reading %s", path);
    }
    char *save = NULL;
    int first = 1;
    for (char *line = t->text ? strtok_r(t->text, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        if (first) {
            first = 0;
            continue;
        }
        row *r = &t->rows[t->n++];
        char *p = line;
        for (;;) {
            if (r->n < 24)
                r->fields[r->n++] = p;
            char *c = strchr(p, ',');
            if (!c)
                break;
            *c = 0;
            p = c + 1;
        }
    }
    return GS_OK;
}

static const char *fld(const row *r, int i)
{
    return i < r->n ? r->fields[i] : "";
}

static double fnum(const row *r, int i)
{
    return atof(fld(r, i));
}

/* points.csv columns */
enum {
    P_RUN,
    P_TARGET,
    P_WORKLOAD,
    P_DUR,
    P_CONNS,
    P_ROWS,
    P_HELD,
    P_RATE,
    P_ACH,
    P_P50,
    P_P95,
    P_P99,
    P_P999,
    P_MAX,
    P_SETUP
};
/* steps.csv columns */
enum {
    S_RUN,
    S_TARGET,
    S_WORKLOAD,
    S_DUR,
    S_KIND,
    S_CONNS,
    S_ROWS,
    S_RATE,
    S_ACH,
    S_P50,
    S_P95,
    S_P99,
    S_P999,
    S_MAX,
    S_MEAN,
    S_SCHED,
    S_MEASURED,
    S_ERR,
    S_TMO,
    S_LATE,
    S_UNISSUED,
    S_PASS,
    S_LOAD1,
    S_FIRST_ERROR
};

/* The newest point of (target, workload, durability), or NULL. */
static const row *latest_point(const table *pts, const char *target, const char *workload,
                               const char *dur)
{
    const row *found = NULL;
    for (size_t i = 0; i < pts->n; i++) {
        const row *r = &pts->rows[i];
        if (strcmp(fld(r, P_TARGET), target) == 0 && strcmp(fld(r, P_WORKLOAD), workload) == 0 &&
            strcmp(fld(r, P_DUR), dur) == 0)
            found = r;
    }
    return found;
}

/* ---- markdown ---- */

/* 64000 -> "64,000" */
static void put_count(gs_buf *b, double v)
{
    char digits[32];
    snprintf(digits, sizeof digits, "%.0f", v);
    size_t n = strlen(digits);
    for (size_t i = 0; i < n; i++) {
        gs_buf_putc(b, digits[i]);
        if (digits[i] != '-' && (n - i - 1) % 3 == 0 && i + 1 < n)
            gs_buf_putc(b, ',');
    }
}

static void put_ms(gs_buf *b, double ms)
{
    if (ms >= 100)
        gs_buf_printf(b, "%.0f", ms);
    else if (ms >= 10)
        gs_buf_printf(b, "%.1f", ms);
    else
        gs_buf_printf(b, "%.2f", ms);
}

static double point_rate(const row *p)
{
    return p && atoi(fld(p, P_HELD)) ? fnum(p, P_RATE) : 0;
}

static void put_cell(gs_buf *b, const row *p, int is_pg)
{
    if (!p) {
        gs_buf_puts(b, " — |");
        return;
    }
    if (!atoi(fld(p, P_HELD))) {
        gs_buf_puts(b, " none held |");
        return;
    }
    gs_buf_puts(b, " ");
    put_count(b, fnum(p, P_RATE));
    gs_buf_puts(b, " (p99 ");
    put_ms(b, fnum(p, P_P99));
    gs_buf_puts(b, " ms");
    if (is_pg)
        gs_buf_printf(b, ", %s conn.", fld(p, P_CONNS));
    gs_buf_puts(b, ") |");
}

static void put_ratio(gs_buf *b, double num, double den)
{
    if (num > 0 && den > 0)
        gs_buf_printf(b, " %.2f× |", num / den);
    else
        gs_buf_puts(b, " — |");
}

static const char *const durs[] = {"full", "relaxed"};
static const char *const dur_title[] = {"Full durability (fsync every commit)",
                                        "Relaxed durability (WAL synchronous=NORMAL; "
                                        "synchronous_commit=off)"};

static void md_tables(gs_buf *b, const table *pts)
{
    size_t nw;
    const gs_bench_workload *ws = gs_bench_workloads(&nw);
    for (int d = 0; d < 2; d++) {
        int any = 0;
        for (size_t i = 0; i < pts->n; i++)
            any |= strcmp(fld(&pts->rows[i], P_DUR), durs[d]) == 0;
        if (!any)
            continue;
        gs_buf_printf(b, "\n#### %s\n\n", dur_title[d]);
        gs_buf_puts(b, "Operating point: the highest offered rate held with p99 < 25 ms "
                       "(ops/s, with the p99 at that rate).\n\n");
        gs_buf_puts(b, "| Workload |");
        for (int t = 0; t < NTARGETS; t++)
            gs_buf_printf(b, " %s |", target_label[t]);
        gs_buf_puts(b, " gatestream ÷ PostgreSQL | gatestream-ws ÷ SQLite |\n|---|");
        for (int t = 0; t < NTARGETS + 2; t++)
            gs_buf_puts(b, "---:|");
        gs_buf_puts(b, "\n");
        for (size_t k = 0; k < nw; k++) {
            const row *p[NTARGETS];
            int have = 0;
            for (int t = 0; t < NTARGETS; t++) {
                p[t] = latest_point(pts, target_order[t], ws[k].name, durs[d]);
                have |= p[t] != NULL;
            }
            if (!have)
                continue;
            gs_buf_printf(b, "| %s |", ws[k].title);
            for (int t = 0; t < NTARGETS; t++)
                put_cell(b, p[t], t == 2);
            double gsr = fmax(point_rate(p[0]), point_rate(p[1]));
            put_ratio(b, gsr, point_rate(p[2]));
            put_ratio(b, point_rate(p[0]), point_rate(p[3]));
            gs_buf_puts(b, "\n");
        }
    }
}

typedef struct goal {
    const char *text;
    const char *workload;
    int dur;      /* 0 full, 1 relaxed, -1 both */
    int versus;   /* 2 postgres, 3 sqlite */
    int ws_only;  /* gatestream-ws only (else the better transport) */
    double ratio; /* at least */
} goal;

static const goal goals[] = {
    {"gatestream's point-select operating point ≥ 4× PostgreSQL's", "point-select", -1, 2, 0, 4},
    {"gatestream's single-row insert ≥ 2× PostgreSQL's at full durability", "insert", 0, 2, 0, 2},
    {"gatestream's YCSB-A ≥ 10× PostgreSQL's", "ycsb-a", -1, 2, 0, 10},
    {"gatestream point-select over WebSocket ≥ 20% of in-process SQLite's", "point-select", -1, 3,
     1, 0.2},
};

static void md_goals(gs_buf *b, const table *pts)
{
    gs_buf_puts(b, "\n#### Acceptance goals (issue 9)\n\n");
    gs_buf_puts(b, "| Goal | Durability | Measured | Goal met? |\n|---|---|---|---|\n");
    for (size_t g = 0; g < sizeof goals / sizeof goals[0]; g++) {
        for (int d = 0; d < 2; d++) {
            if (goals[g].dur >= 0 && goals[g].dur != d)
                continue;
            const row *ws = latest_point(pts, "gatestream-ws", goals[g].workload, durs[d]);
            const row *http = latest_point(pts, "gatestream-http", goals[g].workload, durs[d]);
            const row *peer =
                latest_point(pts, target_order[goals[g].versus], goals[g].workload, durs[d]);
            double wr = point_rate(ws), hr = goals[g].ws_only ? 0 : point_rate(http);
            double gsr = fmax(wr, hr);
            const char *via = hr > wr ? "gatestream-http" : "gatestream-ws";
            double pr = point_rate(peer);
            gs_buf_printf(b, "| %s | %s |", goals[g].text, durs[d]);
            if (gsr > 0 && pr > 0) {
                double ratio = gsr / pr;
                gs_buf_printf(b, " %.2f× (%s ", ratio, via);
                put_count(b, gsr);
                gs_buf_printf(b, " / %s ", target_label[goals[g].versus]);
                put_count(b, pr);
                gs_buf_printf(b, " ops/s) | %s |\n",
                              ratio >= goals[g].ratio ? "met" : "**not met**");
            } else {
                gs_buf_puts(b, " not measured (a side is missing or held no rate) | — |\n");
            }
        }
    }
}

static void md_setups(gs_buf *b, const table *pts)
{
    gs_buf_puts(b, "\n#### Setups\n\n");
    for (int t = 0; t < NTARGETS; t++) {
        for (int d = 0; d < 2; d++) {
            const row *found = NULL;
            for (size_t i = 0; i < pts->n; i++) {
                const row *r = &pts->rows[i];
                if (strcmp(fld(r, P_TARGET), target_order[t]) == 0 &&
                    strcmp(fld(r, P_DUR), durs[d]) == 0)
                    found = r;
            }
            if (found)
                gs_buf_printf(b, "- **%s, %s**: %s\n", target_label[t], durs[d],
                              fld(found, P_SETUP));
        }
    }
}

/* ---- SVG ---- */

#define PANEL_W 300
#define PANEL_H 230
#define COLS 4
#define PAD_L 52
#define PAD_R 12
#define PAD_T 28
#define PAD_B 40

typedef struct axis {
    double lo, hi; /* log10 bounds */
} axis;

static double ax_map(const axis *a, double v, double from, double to)
{
    double l = log10(v);
    if (l < a->lo)
        l = a->lo;
    if (l > a->hi)
        l = a->hi;
    return from + (l - a->lo) / (a->hi - a->lo) * (to - from);
}

static void svg_text(gs_buf *b, double x, double y, const char *anchor, int size, const char *s)
{
    gs_buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" font-size=\"%d\">", x, y,
                  anchor, size);
    for (; *s; s++) {
        if (*s == '<')
            gs_buf_puts(b, "&lt;");
        else if (*s == '>')
            gs_buf_puts(b, "&gt;");
        else if (*s == '&')
            gs_buf_puts(b, "&amp;");
        else
            gs_buf_putc(b, *s);
    }
    gs_buf_puts(b, "</text>\n");
}

static void tick_label(char *out, size_t size, double v, int ms)
{
    if (ms)
        snprintf(out, size, v < 1 ? "%.1f" : "%.0f", v);
    else if (v >= 1e6)
        snprintf(out, size, "%.0fM", v / 1e6);
    else if (v >= 1e3)
        snprintf(out, size, "%.0fk", v / 1e3);
    else
        snprintf(out, size, "%.0f", v);
}

static int step_usable(const row *s)
{
    const char *k = fld(s, S_KIND);
    return strcmp(k, "probe") != 0 && strcmp(k, "probe-conn") != 0 && strcmp(k, "repeat") != 0 &&
           fnum(s, S_ACH) > 0 && fnum(s, S_P99) > 0;
}

/* The steps of the newest run of a key, sorted by offered rate. */
static size_t key_steps(const table *steps, const row *point, const row **out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < steps->n && n < cap; i++) {
        const row *s = &steps->rows[i];
        if (strcmp(fld(s, S_RUN), fld(point, P_RUN)) == 0 &&
            strcmp(fld(s, S_TARGET), fld(point, P_TARGET)) == 0 &&
            strcmp(fld(s, S_WORKLOAD), fld(point, P_WORKLOAD)) == 0 &&
            strcmp(fld(s, S_DUR), fld(point, P_DUR)) == 0 && step_usable(s))
            out[n++] = s;
    }
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && fnum(out[j - 1], S_RATE) > fnum(out[j], S_RATE); j--) {
            const row *t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    return n;
}

static gs_status write_svg(const char *dir, int d, const table *pts, const table *steps,
                           gs_error *err)
{
    size_t nw;
    const gs_bench_workload *ws = gs_bench_workloads(&nw);
    /* Which workloads have data, and the axes (shared by every panel). */
    const gs_bench_workload *shown[16];
    size_t ns = 0;
    double xmin = 1e12, xmax = 0, ymax = 0;
    const row *st[64];
    for (size_t k = 0; k < nw && ns < 16; k++) {
        int have = 0;
        for (int t = 0; t < NTARGETS; t++) {
            const row *p = latest_point(pts, target_order[t], ws[k].name, durs[d]);
            if (!p)
                continue;
            size_t n = key_steps(steps, p, st, 64);
            for (size_t i = 0; i < n; i++) {
                have = 1;
                xmin = fmin(xmin, fnum(st[i], S_ACH));
                xmax = fmax(xmax, fnum(st[i], S_ACH));
                ymax = fmax(ymax, fnum(st[i], S_P99));
            }
        }
        if (have)
            shown[ns++] = &ws[k];
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/chart-%s.svg", dir, durs[d]);
    if (ns == 0) {
        remove(path);
        return GS_OK;
    }
    axis ax = {floor(log10(xmin)), ceil(log10(xmax))};
    if (ax.hi <= ax.lo)
        ax.hi = ax.lo + 1;
    axis ay = {-1, ceil(log10(fmax(ymax, 100)))};
    if (ay.hi > 5)
        ay.hi = 5;
    int rows = (int)((ns + COLS - 1) / COLS);
    int width = COLS * PANEL_W, height = rows * PANEL_H + 60;

    gs_buf b;
    gs_buf_init(&b);
    gs_buf_printf(&b,
                  "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                  "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\">\n"
                  "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                  width, height, width, height);
    char title[200];
    snprintf(title, sizeof title, "gatestream-bench, %s: p99 latency vs achieved throughput",
             dur_title[d]);
    svg_text(&b, 10, 20, "start", 14, title);
    for (int t = 0; t < NTARGETS; t++) {
        double lx = 10 + t * 190;
        gs_buf_printf(&b,
                      "<line x1=\"%.0f\" y1=\"38\" x2=\"%.0f\" y2=\"38\" stroke=\"%s\" "
                      "stroke-width=\"2.5\"/>\n",
                      lx, lx + 24, target_color[t]);
        svg_text(&b, lx + 30, 42, "start", 12, target_label[t]);
    }
    svg_text(&b, width - 10, 42, "end", 11, "dashed: p99 = 25 ms; dot: operating point");
    for (size_t k = 0; k < ns; k++) {
        double ox = (double)(k % COLS) * PANEL_W, oy = 60 + (double)(k / COLS) * PANEL_H;
        double x0 = ox + PAD_L, x1 = ox + PANEL_W - PAD_R;
        double y0 = oy + PANEL_H - PAD_B, y1 = oy + PAD_T;
        gs_buf_printf(&b,
                      "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                      "stroke=\"#999\"/>\n",
                      x0, y1, x1 - x0, y0 - y1);
        svg_text(&b, (x0 + x1) / 2, oy + 18, "middle", 12, shown[k]->title);
        char lab[32];
        for (double e = ax.lo; e <= ax.hi + 1e-9; e++) {
            double x = ax_map(&ax, pow(10, e), x0, x1);
            gs_buf_printf(&b,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                          "stroke=\"#e5e5e5\"/>\n",
                          x, y0, x, y1);
            tick_label(lab, sizeof lab, pow(10, e), 0);
            svg_text(&b, x, y0 + 14, "middle", 10, lab);
        }
        for (double e = ay.lo; e <= ay.hi + 1e-9; e++) {
            double y = ax_map(&ay, pow(10, e), y0, y1);
            gs_buf_printf(&b,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                          "stroke=\"#e5e5e5\"/>\n",
                          x0, y, x1, y);
            tick_label(lab, sizeof lab, pow(10, e), 1);
            svg_text(&b, x0 - 4, y + 3, "end", 10, lab);
        }
        double slo = ax_map(&ay, 25, y0, y1);
        gs_buf_printf(&b,
                      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#555\" "
                      "stroke-dasharray=\"4 3\"/>\n",
                      x0, slo, x1, slo);
        svg_text(&b, (x0 + x1) / 2, y0 + 28, "middle", 10, "achieved ops/s");
        gs_buf_printf(&b,
                      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"10\" "
                      "transform=\"rotate(-90 %.1f %.1f)\">p99 ms</text>\n",
                      ox + 14, (y0 + y1) / 2, ox + 14, (y0 + y1) / 2);
        for (int t = 0; t < NTARGETS; t++) {
            const row *p = latest_point(pts, target_order[t], shown[k]->name, durs[d]);
            if (!p)
                continue;
            size_t n = key_steps(steps, p, st, 64);
            if (n == 0)
                continue;
            gs_buf_printf(&b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
                          target_color[t]);
            for (size_t i = 0; i < n; i++)
                gs_buf_printf(&b, "%.1f,%.1f ", ax_map(&ax, fnum(st[i], S_ACH), x0, x1),
                              ax_map(&ay, fnum(st[i], S_P99), y0, y1));
            gs_buf_puts(&b, "\"/>\n");
            double op = point_rate(p);
            for (size_t i = 0; i < n; i++) {
                int is_op = op > 0 && fabs(fnum(st[i], S_RATE) - op) < 0.5;
                gs_buf_printf(&b,
                              "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%d\" fill=\"%s\"><title>%s: "
                              "offered %.0f/s, achieved %.0f/s, p99 %.2f ms</title></circle>\n",
                              ax_map(&ax, fnum(st[i], S_ACH), x0, x1),
                              ax_map(&ay, fnum(st[i], S_P99), y0, y1), is_op ? 5 : 2,
                              is_op ? target_color[t] : "white", target_label[t],
                              fnum(st[i], S_RATE), fnum(st[i], S_ACH), fnum(st[i], S_P99));
                if (!is_op)
                    gs_buf_printf(&b,
                                  "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2\" fill=\"none\" "
                                  "stroke=\"%s\"/>\n",
                                  ax_map(&ax, fnum(st[i], S_ACH), x0, x1),
                                  ax_map(&ay, fnum(st[i], S_P99), y0, y1), target_color[t]);
            }
        }
    }
    gs_buf_puts(&b, "</svg>\n");
    gs_status st_ = GS_OK;
    if (b.oom) {
        st_ = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory drawing %s", path);
    } else {
        FILE *f = fopen(path, "w");
        if (!f || fwrite(b.data, 1, b.len, f) != b.len)
            st_ = gs_error_set(err, 0, "INVALID_ARGUMENT", "cannot write %s: %s", path,
                               strerror(errno));
        if (f && fclose(f) != 0 && st_ == GS_OK)
            st_ = gs_error_set(err, 0, "INVALID_ARGUMENT", "cannot write %s", path);
    }
    gs_buf_free(&b);
    return st_;
}

gs_status gs_bench_report(const char *dir, gs_error *err)
{
    table pts, steps;
    if (table_read(dir, "points.csv", &pts, err) != GS_OK)
        return GS_ERROR;
    if (table_read(dir, "steps.csv", &steps, err) != GS_OK) {
        table_free(&pts);
        return GS_ERROR;
    }
    gs_buf b;
    gs_buf_init(&b);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char when[64];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
    int64_t rows = pts.n ? atoll(fld(&pts.rows[pts.n - 1], P_ROWS)) : 0;
    gs_buf_printf(&b,
                  "### gatestream-bench results\n\nBuilt %s from points.csv and steps.csv "
                  "(newest run of each target, workload and durability). Rows per table: ",
                  when);
    put_count(&b, (double)rows);
    gs_buf_puts(&b, ". Charts: chart-full.svg, chart-relaxed.svg.");
    double lmin = 1e9, lmax = -1;
    for (size_t i = 0; i < steps.n; i++) {
        double l = fnum(&steps.rows[i], S_LOAD1);
        if (steps.rows[i].n > S_LOAD1 && l >= 0) {
            lmin = fmin(lmin, l);
            lmax = fmax(lmax, l);
        }
    }
    if (lmax >= 0)
        gs_buf_printf(&b, " The machine's 1-minute load average ranged %.1f–%.1f over the runs.",
                      lmin, lmax);
    gs_buf_puts(&b, "\n");
    md_tables(&b, &pts);
    md_goals(&b, &pts);
    md_setups(&b, &pts);
    gs_status st = GS_OK;
    char path[4096];
    snprintf(path, sizeof path, "%s/report.md", dir);
    if (b.oom) {
        st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory building %s", path);
    } else {
        FILE *f = fopen(path, "w");
        if (!f || fwrite(b.data, 1, b.len, f) != b.len)
            st = gs_error_set(err, 0, "INVALID_ARGUMENT", "cannot write %s: %s", path,
                              strerror(errno));
        if (f && fclose(f) != 0 && st == GS_OK)
            st = gs_error_set(err, 0, "INVALID_ARGUMENT", "cannot write %s", path);
    }
    gs_buf_free(&b);
    for (int d = 0; d < 2 && st == GS_OK; d++)
        st = write_svg(dir, d, &pts, &steps, err);
    table_free(&pts);
    table_free(&steps);
    return st;
}
