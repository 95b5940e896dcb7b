/*
 * gs-client-sub-probe: a coordinator-mode client holding one subscription, driven over
 * stdin/stdout by tests/integration/test_client_migration_etcd.py (which owns the etcd
 * cluster). Not installed.
 *
 *   gs-client-sub-probe DB TABLE STARTER_URL...
 *
 * Opens libgatestream-client in coordinator mode (WebSocket, reconnect 200 ms .. 1 s),
 * subscribes to TABLE of DB and prints one line per fact, flushed:
 *   SUBSCRIBED <read route>        the subscription is open (routed like a read)
 *   CHANGE <id> <type>             a change event (the row's `id` column)
 *   RESYNC <migrated 0|1> <endpoint or ->
 *   DISCONNECTED <code>
 *   ERROR <code> <message>         the subscription ended
 *   ROUTE <url> | ROUTE! <code>    answer to the `route` command
 *   BYE
 * Commands on stdin, one a line: `route` (where a read goes now), `quit`. Exit status 0
 * after quit, 2 when the subscription cannot be opened. Events arrive on the library's I/O
 * thread; a mutex keeps lines whole.
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

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s DB TABLE STARTER_URL...\n", argv[0]);
        return 2;
    }
    gs_client_config cfg;
    gs_client_config_init(&cfg);
    cfg.transport = GS_CLIENT_TRANSPORT_WEBSOCKET;
    cfg.mode = GS_CLIENT_MODE_COORDINATOR;
    cfg.reconnect_interval_ms = 200;
    cfg.reconnect_max_ms = 1000;
    cfg.request_timeout_ms = 10000;
    gs_client *c;
    gs_error err;
    if (gs_client_open((const char *const *)argv + 3, (size_t)(argc - 3), &cfg, &c, &err) !=
        GS_OK) {
        fprintf(stderr, "open: %s: %s\n", err.code, err.message);
        return 2;
    }
    gs_client_db *db = gs_client_database(c, argv[1], &err);
    gs_client_sub *sub = NULL;
    if (!db || gs_client_subscribe(db, argv[2], NULL, NULL, on_event, NULL, &sub, &err) != GS_OK) {
        fprintf(stderr, "subscribe: %s: %s\n", err.code, err.message);
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
        }
    }
    gs_client_unsubscribe(sub);
    gs_client_close(c);
    say("BYE%s%s%s\n", "", "", "");
    return 0;
}
