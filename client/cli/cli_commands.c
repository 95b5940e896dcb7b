/* The shell's commands: SQL statements (reads through query, writes through execute) and the
 * dot commands .tables .schema .subscribe .mode .timer .changes .help .quit. Main thread,
 * except the subscription callback, which runs on the client library's I/O thread. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static gs_client_call_opts opts_of(cli *c)
{
    gs_client_call_opts o;
    gs_client_call_opts_init(&o);
    o.timeout_ms = c->timeout_ms;
    return o;
}

int cli_run_sql(cli *c, const char *sql)
{
    gs_error err;
    gs_client_call_opts o = opts_of(c);
    double t0 = now_s();
    int rc = 0;
    int as_query = cli_is_query(sql);
    if (as_query) {
        gs_client_rows *rows;
        gs_status st = gs_client_query(c->db, sql, NULL, &o, &rows, &err);
        /* WITH ... INSERT/UPDATE/DELETE is a write: the read path refuses it. */
        if (st != GS_OK && !strcmp(err.code, "QUERY_ERROR") && strstr(err.message, "readonly")) {
            as_query = 0;
        } else if (st != GS_OK) {
            cli_print_error(&err);
            rc = 1;
        } else {
            cli_print_rows(c, rows);
            gs_client_rows_free(rows);
        }
    }
    if (!as_query) {
        gs_client_exec ex;
        if (gs_client_execute(c->db, sql, NULL, &o, &ex, &err) != GS_OK) {
            cli_print_error(&err);
            rc = 1;
        } else {
            cli_print_exec(c, &ex);
        }
    }
    if (c->timer) {
        cli_out_lock();
        printf("Run Time: real %.3f\n", now_s() - t0);
        fflush(stdout);
        cli_out_unlock();
    }
    return rc;
}

/* Split a dot command line into words (quotes group words). Returns the count. */
static int words(char *line, char **argv, int max)
{
    int n = 0;
    char *p = line;
    while (*p && n < max) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        if (*p == '"' || *p == '\'') {
            char q = *p++;
            argv[n++] = p;
            while (*p && *p != q)
                p++;
        } else {
            argv[n++] = p;
            while (*p && !isspace((unsigned char)*p))
                p++;
        }
        if (*p)
            *p++ = '\0';
    }
    return n;
}

static int internal_name(const char *name)
{
    return !strncmp(name, "sqlite_", 7) || !strncmp(name, "_sirannon", 9);
}

static int cmd_tables(cli *c)
{
    gs_error err;
    gs_client_rows *rows;
    gs_client_call_opts o = opts_of(c);
    if (gs_client_query(c->db,
                        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                        "ORDER BY name",
                        NULL, &o, &rows, &err) != GS_OK) {
        cli_print_error(&err);
        return 1;
    }
    cli_out_lock();
    int first = 1;
    if (c->mode == CLI_MODE_JSON)
        putchar('[');
    for (size_t i = 0; i < gs_client_rows_count(rows); i++) {
        const gs_value *v = gs_client_rows_get(rows, i, 0);
        if (v->type != GS_VALUE_TEXT || internal_name(v->u.text.ptr))
            continue;
        if (c->mode == CLI_MODE_JSON)
            printf("%s\"%s\"", first ? "" : ",", v->u.text.ptr);
        else
            printf("%s\n", v->u.text.ptr);
        first = 0;
    }
    if (c->mode == CLI_MODE_JSON)
        puts("]");
    fflush(stdout);
    cli_out_unlock();
    gs_client_rows_free(rows);
    return 0;
}

static int cmd_schema(cli *c, const char *table)
{
    gs_error err;
    gs_client_rows *rows;
    gs_client_call_opts o = opts_of(c);
    gs_value v = gs_client_val_text(table ? table : "");
    gs_client_params p = gs_client_positional(&v, 1);
    const char *sql = table ? "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND "
                              "tbl_name = ? ORDER BY type = 'table' DESC, name"
                            : "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                              "ORDER BY tbl_name, type = 'table' DESC, name";
    if (gs_client_query(c->db, sql, table ? &p : NULL, &o, &rows, &err) != GS_OK) {
        cli_print_error(&err);
        return 1;
    }
    cli_out_lock();
    for (size_t i = 0; i < gs_client_rows_count(rows); i++) {
        const gs_value *name = gs_client_rows_get(rows, i, 0);
        const gs_value *text = gs_client_rows_get(rows, i, 1);
        if (name->type != GS_VALUE_TEXT || text->type != GS_VALUE_TEXT ||
            internal_name(name->u.text.ptr))
            continue;
        printf("%s;\n", text->u.text.ptr);
    }
    fflush(stdout);
    cli_out_unlock();
    gs_client_rows_free(rows);
    return 0;
}

/* A filter value as typed: 'text', NULL, an integer, a real, or bare text. */
static gs_value parse_value(char *s)
{
    size_t n = strlen(s);
    if (!strcasecmp(s, "null"))
        return gs_client_val_null();
    char *end;
    errno = 0;
    long long i = strtoll(s, &end, 10);
    if (n && !*end && !errno)
        return gs_client_val_int(i);
    double d = strtod(s, &end);
    if (n && !*end)
        return gs_client_val_double(d);
    return gs_client_val_text(s);
}

typedef struct sub_state {
    cli *c;
    int ended;
} sub_state;

static void on_event(void *user, const gs_client_event *ev)
{
    sub_state *s = user;
    cli *c = s->c;
    cli_out_lock();
    switch (ev->kind) {
    case GS_CLIENT_EVENT_CHANGE: {
        char *row = gs_client_row_to_json(ev->row);
        char *old = ev->old_row.count ? gs_client_row_to_json(ev->old_row) : NULL;
        if (c->mode == CLI_MODE_JSON) {
            printf("{\"type\":\"%s\",\"table\":\"%s\",\"seq\":\"%s\",\"row\":%s%s%s%s}\n",
                   ev->type ? ev->type : "", ev->table ? ev->table : "", ev->seq,
                   row ? row : "null", old ? ",\"oldRow\":" : "", old ? old : "",
                   ev->tx_end ? ",\"txEnd\":true" : "");
        } else if (c->mode == CLI_MODE_CSV) {
            printf("%s,%s,%s,\"", ev->seq, ev->type ? ev->type : "", ev->table ? ev->table : "");
            for (const char *p = row ? row : ""; *p; p++) {
                if (*p == '"')
                    putchar('"');
                putchar(*p);
            }
            fputs("\"\r\n", stdout);
        } else {
            printf("[seq %s] %s %s %s%s%s\n", ev->seq, ev->type ? ev->type : "",
                   ev->table ? ev->table : "", row ? row : "", old ? " was " : "", old ? old : "");
        }
        gs_client_free(row);
        gs_client_free(old);
        break;
    }
    case GS_CLIENT_EVENT_RESYNC:
        printf("-- resync: the server could not resume this subscription; re-read the table\n");
        break;
    case GS_CLIENT_EVENT_DISCONNECTED:
        printf("-- disconnected (%s); reconnecting\n", ev->error ? ev->error->message : "");
        break;
    case GS_CLIENT_EVENT_RESUMED: printf("-- resumed\n"); break;
    case GS_CLIENT_EVENT_ERROR:
        fprintf(stderr, "Error: %s: %s\n", ev->error ? ev->error->code : "ERROR",
                ev->error ? ev->error->message : "the subscription ended");
        s->ended = 1;
        break;
    }
    fflush(stdout);
    cli_out_unlock();
    if (ev->kind == GS_CLIENT_EVENT_ERROR)
        cli_wait_interrupt_wake();
}

static int cmd_subscribe(cli *c, int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "Usage: .subscribe TABLE [COLUMN=VALUE ...]\n");
        return 1;
    }
    int n = argc - 2;
    const char **names = calloc((size_t)n + 1, sizeof *names);
    gs_value *vals = calloc((size_t)n + 1, sizeof *vals);
    if (!names || !vals) {
        free(names);
        free(vals);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        char *eq = strchr(argv[i + 2], '=');
        if (!eq || eq == argv[i + 2]) {
            fprintf(stderr, "Error: INVALID_ARGUMENT: filter '%s' is not COLUMN=VALUE\n",
                    argv[i + 2]);
            free(names);
            free(vals);
            return 1;
        }
        *eq = '\0';
        names[i] = argv[i + 2];
        char *v = eq + 1;
        size_t vl = strlen(v);
        if (vl >= 2 && (v[0] == '\'' || v[0] == '"') && v[vl - 1] == v[0]) {
            v[vl - 1] = '\0';
            vals[i] = gs_client_val_text(v + 1);
        } else {
            vals[i] = parse_value(v);
        }
    }
    gs_client_params filter = gs_client_named(names, vals, (size_t)n);
    static sub_state st;
    st.c = c;
    st.ended = 0;
    gs_client_sub *sub;
    gs_error err;
    gs_status rc =
        gs_client_subscribe(c->db, argv[1], n ? &filter : NULL, NULL, on_event, &st, &sub, &err);
    free(names);
    free(vals);
    if (rc != GS_OK) {
        cli_print_error(&err);
        return 1;
    }
    cli_out_lock();
    fprintf(stderr, "-- subscribed to %s; Ctrl-C returns to the prompt\n", argv[1]);
    cli_out_unlock();
    cli_wait_interrupt();
    int ended = st.ended;
    gs_client_unsubscribe(sub);
    return ended ? 1 : 0;
}

static void help(void)
{
    cli_out_lock();
    printf(".changes on|off        print changes and last_insert_rowid after writes\n"
           ".help                  this text\n"
           ".mode table|json|csv   how rows are printed\n"
           ".quit                  leave (also .exit, Ctrl-D)\n"
           ".schema ?TABLE?        the CREATE statements (of TABLE only)\n"
           ".subscribe TABLE ?COL=VALUE ...?\n"
           "                       print the table's changes until Ctrl-C\n"
           ".tables                the tables and views\n"
           ".timer on|off          print how long each statement took\n"
           "SQL statements end with ';' and may span lines.\n");
    fflush(stdout);
    cli_out_unlock();
}

static int on_off(const char *s, int *out)
{
    if (s && (!strcmp(s, "on") || !strcmp(s, "1") || !strcmp(s, "yes"))) {
        *out = 1;
        return 0;
    }
    if (s && (!strcmp(s, "off") || !strcmp(s, "0") || !strcmp(s, "no"))) {
        *out = 0;
        return 0;
    }
    return -1;
}

int cli_dot_command(cli *c, const char *line)
{
    char *copy = strdup(line);
    char *argv[64];
    if (!copy)
        return 1;
    int argc = words(copy, argv, 64);
    int rc = 0;
    const char *cmd = argc ? argv[0] : ".";
    if (!strcmp(cmd, ".quit") || !strcmp(cmd, ".exit")) {
        rc = 2;
    } else if (!strcmp(cmd, ".help")) {
        help();
    } else if (!strcmp(cmd, ".tables")) {
        rc = cmd_tables(c);
    } else if (!strcmp(cmd, ".schema")) {
        rc = cmd_schema(c, argc > 1 ? argv[1] : NULL);
    } else if (!strcmp(cmd, ".subscribe")) {
        rc = cmd_subscribe(c, argc, argv);
    } else if (!strcmp(cmd, ".mode")) {
        int m = argc > 1 ? cli_mode_parse(argv[1]) : -1;
        if (argc == 1) {
            printf("current output mode: %s\n", cli_mode_name(c->mode));
        } else if (m < 0) {
            fprintf(stderr, "Error: INVALID_ARGUMENT: mode should be table, json or csv\n");
            rc = 1;
        } else {
            c->mode = (cli_mode)m;
        }
    } else if (!strcmp(cmd, ".timer") || !strcmp(cmd, ".changes")) {
        int *flag = cmd[1] == 't' ? &c->timer : &c->changes;
        if (on_off(argc > 1 ? argv[1] : NULL, flag) != 0) {
            fprintf(stderr, "Error: INVALID_ARGUMENT: usage: %s on|off\n", cmd);
            rc = 1;
        }
    } else {
        fprintf(stderr, "Error: INVALID_ARGUMENT: unknown command '%s'; try .help\n", cmd);
        rc = 1;
    }
    free(copy);
    return rc;
}
