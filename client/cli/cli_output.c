/* Output of the shell: rows as a boxed table, JSON (the wire encoding) or CSV (RFC 4180),
 * write results, errors with their code. Callers hold no lock; each printer takes the
 * output lock so lines from subscription events never interleave with a result. */
#include "cli.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

void cli_out_lock(void)
{
    pthread_mutex_lock(&out_mu);
}

void cli_out_unlock(void)
{
    pthread_mutex_unlock(&out_mu);
}

int cli_mode_parse(const char *s)
{
    if (!strcmp(s, "table"))
        return CLI_MODE_TABLE;
    if (!strcmp(s, "json"))
        return CLI_MODE_JSON;
    if (!strcmp(s, "csv"))
        return CLI_MODE_CSV;
    return -1;
}

const char *cli_mode_name(cli_mode m)
{
    return m == CLI_MODE_JSON ? "json" : m == CLI_MODE_CSV ? "csv" : "table";
}

/* A value as display text (malloc'd): NULL as "", blobs as X'..', text as is. */
static char *value_text(const gs_value *v)
{
    char *s = NULL;
    switch (v->type) {
    case GS_VALUE_INT:
        if (asprintf(&s, "%lld", (long long)v->u.i) < 0)
            s = NULL;
        break;
    case GS_VALUE_DOUBLE: {
        /* the shortest form that reads back */
        char t[40];
        for (int p = 15; p <= 17; p++) {
            snprintf(t, sizeof t, "%.*g", p, v->u.d);
            if (strtod(t, NULL) == v->u.d)
                break;
        }
        s = strdup(t);
        break;
    }
    case GS_VALUE_TEXT:
        s = malloc(v->u.text.len + 1);
        if (s) {
            /* a U+0000 inside text would cut the line: shown as a space */
            for (size_t i = 0; i < v->u.text.len; i++)
                s[i] = v->u.text.ptr[i] ? v->u.text.ptr[i] : ' ';
            s[v->u.text.len] = '\0';
        }
        break;
    case GS_VALUE_BLOB: {
        static const char hex[] = "0123456789ABCDEF";
        s = malloc(v->u.blob.len * 2 + 4);
        if (s) {
            size_t o = 0;
            s[o++] = 'X';
            s[o++] = '\'';
            for (size_t i = 0; i < v->u.blob.len; i++) {
                s[o++] = hex[v->u.blob.ptr[i] >> 4];
                s[o++] = hex[v->u.blob.ptr[i] & 15];
            }
            s[o++] = '\'';
            s[o] = '\0';
        }
        break;
    }
    default: s = strdup(""); break;
    }
    return s ? s : strdup("");
}

/* Display width in characters (UTF-8 continuation bytes do not count). */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

static void rule(const size_t *w, size_t n)
{
    putchar('+');
    for (size_t c = 0; c < n; c++) {
        for (size_t i = 0; i < w[c] + 2; i++)
            putchar('-');
        putchar('+');
    }
    putchar('\n');
}

static void cell(const char *s, size_t w)
{
    printf(" %s", s);
    for (size_t i = width(s); i < w; i++)
        putchar(' ');
    printf(" |");
}

static void print_table(const gs_client_rows *rows)
{
    size_t nc = gs_client_rows_columns(rows), nr = gs_client_rows_count(rows);
    if (!nc)
        return;
    size_t *w = calloc(nc, sizeof *w);
    char **text = calloc(nr * nc + 1, sizeof *text);
    if (!w || !text) {
        free(w);
        free(text);
        return;
    }
    for (size_t c = 0; c < nc; c++)
        w[c] = width(gs_client_rows_column_name(rows, c));
    for (size_t r = 0; r < nr; r++)
        for (size_t c = 0; c < nc; c++) {
            text[r * nc + c] = value_text(gs_client_rows_get(rows, r, c));
            size_t cw = width(text[r * nc + c]);
            if (cw > w[c])
                w[c] = cw;
        }
    rule(w, nc);
    putchar('|');
    for (size_t c = 0; c < nc; c++)
        cell(gs_client_rows_column_name(rows, c), w[c]);
    putchar('\n');
    rule(w, nc);
    for (size_t r = 0; r < nr; r++) {
        putchar('|');
        for (size_t c = 0; c < nc; c++)
            cell(text[r * nc + c], w[c]);
        putchar('\n');
    }
    rule(w, nc);
    for (size_t i = 0; i < nr * nc; i++)
        free(text[i]);
    free(text);
    free(w);
}

static void csv_field(const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, stdout);
        return;
    }
    putchar('"');
    for (; *s; s++) {
        if (*s == '"')
            putchar('"');
        putchar(*s);
    }
    putchar('"');
}

static void print_csv(const gs_client_rows *rows)
{
    size_t nc = gs_client_rows_columns(rows), nr = gs_client_rows_count(rows);
    for (size_t c = 0; c < nc; c++) {
        if (c)
            putchar(',');
        csv_field(gs_client_rows_column_name(rows, c));
    }
    if (nc)
        fputs("\r\n", stdout);
    for (size_t r = 0; r < nr; r++) {
        for (size_t c = 0; c < nc; c++) {
            if (c)
                putchar(',');
            char *t = value_text(gs_client_rows_get(rows, r, c));
            csv_field(t);
            free(t);
        }
        fputs("\r\n", stdout);
    }
}

void cli_print_rows(cli *c, const gs_client_rows *rows)
{
    cli_out_lock();
    if (c->mode == CLI_MODE_JSON) {
        char *j = gs_client_rows_to_json(rows);
        printf("%s\n", j ? j : "[]");
        gs_client_free(j);
    } else if (c->mode == CLI_MODE_CSV) {
        print_csv(rows);
    } else {
        print_table(rows);
    }
    fflush(stdout);
    cli_out_unlock();
}

void cli_print_exec(cli *c, const gs_client_exec *ex)
{
    if (!c->changes)
        return;
    cli_out_lock();
    if (c->mode == CLI_MODE_JSON)
        printf("{\"changes\":%lld,\"lastInsertRowId\":%s}\n", (long long)ex->changes,
               ex->last_insert_rowid_text);
    else
        printf("changes: %lld   last_insert_rowid: %s\n", (long long)ex->changes,
               ex->last_insert_rowid_text);
    fflush(stdout);
    cli_out_unlock();
}

void cli_print_error(const gs_error *err)
{
    cli_out_lock();
    fflush(stdout);
    fprintf(stderr, "Error: %s: %s\n", err->code, err->message);
    fflush(stderr);
    cli_out_unlock();
}
