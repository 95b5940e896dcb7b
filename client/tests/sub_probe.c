/*
 * gs-client-sub-probe: a coordinator-mode client holding one subscription or one live query,
 * driven over stdin/stdout by tests/integration/test_client_migration_etcd.py and
 * test_live_migration_etcd.py (which own the etcd cluster). Not installed.
 *
 *   gs-client-sub-probe DB TABLE STARTER_URL...           a subscription to TABLE
 *   gs-client-sub-probe --live NAME DB STARTER_URL...     a live query over registered read NAME
 *
 * Opens libgatestream-client in coordinator mode (WebSocket, reconnect 200 ms .. 1 s) and
 * prints one line per fact, flushed:
 *   SUBSCRIBED <read route>        the subscription / live query is open (routed like a read)
 *   CHANGE <id> <type>             a change event (the row's `id` column)
 *   RESYNC <migrated 0|1> <endpoint or ->
 *   DISCONNECTED <code>
 *   LIVE <count> <ids or ->        a live update: the rows held now (their `id` column,
 *                                  comma-separated, in order; `?` for a non-integer id)
 *   REVALIDATING                   a live update with `revalidating` set (the connection
 *                                  dropped, or routing moves the query; fresh rows follow)
 *   ERROR <code> <message>         the subscription / live query ended
 *   ROUTE <url> | ROUTE! <code>    answer to the `route` command
 *   ROWS <count> <ids or ->        answer to the `rows` command (gs_client_live_rows)
 *   BYE
 * Commands on stdin, one a line: `route` (where a read goes now), `rows` (live mode), `quit`.
 * Exit status 0 after quit, 2 when the subscription cannot be opened. Events arrive on the
 * library's I/O thread; a mutex keeps lines whole.
 */
#include <gatestream/client.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

static void say(const char *fmt, const char *a, const char *b, const char *c)
{
    pthread_mutex_lock(&out_mu);
    printf(fmt, a, b, c);
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
}

static void on_event(void *user, const gs_client_event *ev)
{
    (void)user;
    char id[32] = "-";
    switch (ev->kind) {
    case GS_CLIENT_EVENT_CHANGE:
        for (size_t i = 0; i < ev->row.count; i++)
            if (!strcmp(ev->row.columns[i], "id") && ev->row.values[i].type == GS_VALUE_INT)
                snprintf(id, sizeof id, "%lld", (long long)ev->row.values[i].u.i);
        say("CHANGE %s %s%s\n", id, ev->type ? ev->type : "?", "");
        break;
    case GS_CLIENT_EVENT_RESYNC:
        say("RESYNC %s %s%s\n", ev->migrated ? "1" : "0",
            ev->migrated && ev->endpoint ? ev->endpoint : "-", "");
        break;
    case GS_CLIENT_EVENT_DISCONNECTED:
        say("DISCONNECTED %s%s%s\n", ev->error ? ev->error->code : "-", "", "");
        break;
    case GS_CLIENT_EVENT_ERROR:
        say("ERROR %s %s%s\n", ev->error ? ev->error->code : "-",
            ev->error ? ev->error->message : "", "");
        break;
    default: break;
    }
}

/* "<count> <id,id,...>" (or "<count> -") of rows into buf. */
static void ids_of(const gs_client_rows *rows, char *buf, size_t size)
{
    size_t n = rows ? gs_client_rows_count(rows) : 0;
    int off = snprintf(buf, size, "%zu ", n);
    long col = rows ? gs_client_rows_column_index(rows, "id") : -1;
    for (size_t r = 0; r < n && off > 0 && (size_t)off < size; r++) {
        const gs_value *v = col >= 0 ? gs_client_rows_get(rows, r, (size_t)col) : NULL;
        if (v && v->type == GS_VALUE_INT)
            off +=
                snprintf(buf + off, size - (size_t)off, "%s%lld", r ? "," : "", (long long)v->u.i);
        else
            off += snprintf(buf + off, size - (size_t)off, "%s?", r ? "," : "");
    }
    if (!n && off > 0 && (size_t)off < size)
        snprintf(buf + off, size - (size_t)off, "-");
}

static void on_live(void *user, const gs_client_live_update *u)
{
    (void)user;
    if (u->error) {
        say("ERROR %s %s%s\n", u->error->code, u->error->message, "");
    } else if (u->revalidating) {
        say("REVALIDATING%s%s%s\n", "", "", "");
    } else {
        char ids[4096];
        ids_of(u->rows, ids, sizeof ids);
        say("LIVE %s%s%s\n", ids, "", "");
    }
}

int main(int argc, char **argv)
{
    const char *live_name = NULL;
    if (argc >= 2 && !strcmp(argv[1], "--live")) {
        if (argc < 5) {
            fprintf(stderr, "usage: %s --live NAME DB STARTER_URL...\n", argv[0]);
            return 2;
        }
        live_name = argv[2];
        argv += 2; /* DB STARTER_URL... from argv[1] on */
        argc -= 2;
    } else if (argc < 4) {
        fprintf(stderr, "usage: %s DB TABLE STARTER_URL... | --live NAME DB STARTER_URL...\n",
                argv[0]);
        return 2;
    }
    int first_url = live_name ? 2 : 3;
    gs_client_config cfg;
    gs_client_config_init(&cfg);
    cfg.transport = GS_CLIENT_TRANSPORT_WEBSOCKET;
    cfg.mode = GS_CLIENT_MODE_COORDINATOR;
    cfg.reconnect_interval_ms = 200;
    cfg.reconnect_max_ms = 1000;
    cfg.request_timeout_ms = 10000;
    gs_client *c;
    gs_error err;
    if (gs_client_open((const char *const *)argv + first_url, (size_t)(argc - first_url), &cfg, &c,
                       &err) != GS_OK) {
        fprintf(stderr, "open: %s: %s\n", err.code, err.message);
        return 2;
    }
    gs_client_db *db = gs_client_database(c, argv[1], &err);
    gs_client_sub *sub = NULL;
    gs_client_live *lq = NULL;
    gs_status st = GS_ERROR;
    if (db && live_name)
        st = gs_client_live_open(db, live_name, NULL, on_live, NULL, &lq, &err);
    else if (db)
        st = gs_client_subscribe(db, argv[2], NULL, NULL, on_event, NULL, &sub, &err);
    if (st != GS_OK) {
        fprintf(stderr, "%s: %s: %s\n", live_name ? "live" : "subscribe", err.code, err.message);
        gs_client_close(c);
        return 2;
    }
    char route[256];
    if (gs_client_route(db, 0, route, sizeof route, &err) != GS_OK)
        snprintf(route, sizeof route, "-");
    say("SUBSCRIBED %s%s%s\n", route, "", "");
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!strcmp(line, "quit"))
            break;
        if (!strcmp(line, "route")) {
            if (gs_client_route(db, 0, route, sizeof route, &err) == GS_OK)
                say("ROUTE %s%s%s\n", route, "", "");
            else
                say("ROUTE! %s %s%s\n", err.code, err.message, "");
        } else if (!strcmp(line, "rows") && lq) {
            gs_client_rows *rows = gs_client_live_rows(lq);
            char ids[4096];
            ids_of(rows, ids, sizeof ids);
            say("ROWS %s%s%s\n", ids, "", "");
            gs_client_rows_free(rows);
        }
    }
    gs_client_live_close(lq);
    gs_client_unsubscribe(sub);
    gs_client_close(c);
    say("BYE%s%s%s\n", "", "", "");
    return 0;
}
