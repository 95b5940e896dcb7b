/*
 * The gatestream binary: parse the command line, load and check the config (plugins
 * included), run a node until SIGINT or SIGTERM, then stop it gracefully.
 * Exit status: 0 done, 1 a runtime failure (a port in use, a database that will not open),
 * 2 a usage, config or plugin error (one line on stderr saying what and how to fix it).
 */
#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"
#include "node/backup_cmd.h"
#include "node/cluster_cmd.h"
#include "node/migrate_cmd.h"
#include "node/node.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: gatestream --config FILE [--host H] [--port N] [--data-dir DIR]\n"
               "       gatestream --check-config FILE\n"
               "       gatestream --describe-plugin NAME\n"
               "       gatestream migrate --config FILE --db ID [--to N] [--rollback] [--status]\n"
               "       gatestream backup --config FILE --db ID --to DIR\n"
               "       gatestream restore --from FILE_OR_DIR --to PATH [--moment MS] [--replace]\n"
               "       gatestream cluster status|drain|undrain|repair|rejoin --config FILE\n"
               "                          [--node ID] [--json]\n"
               "       gatestream cluster status --url http://HOST:PORT --db ID [--json]\n"
               "       gatestream --version | --help\n"
               "\n"
               "  --config FILE          run a node from this YAML file\n"
               "  --check-config FILE    validate the file (plugins included) and exit\n"
               "  --describe-plugin NAME print a plugin's config keys\n"
               "  --host H               override server.host\n"
               "  --port N               override server.port (0 = ephemeral)\n"
               "  --data-dir DIR         override node.data_dir\n"
               "  --log-level L          error | warn | info | debug\n");
}

static int fail(const gs_error *err)
{
    /* Config and plugin problems are the operator's to fix: status 2, one line. */
    int status = strcmp(err->code, "PLUGIN_REFUSED") == 0 ||
                         strcmp(err->code, "INVALID_CONFIG") == 0 ||
                         strncmp(err->code, "INVALID_", 8) == 0
                     ? 2
                     : 1;
    fprintf(stderr, "gatestream: %s\n", err->message);
    return status;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "migrate") == 0) /* a subcommand with its own options */
        return gs_migrate_command(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "backup") == 0)
        return gs_backup_command(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "restore") == 0)
        return gs_restore_command(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "cluster") == 0)
        return gs_cluster_command(argc - 1, argv + 1);
    enum { OPT_CHECK = 256, OPT_DESCRIBE, OPT_HOST, OPT_PORT, OPT_DATA, OPT_LOG };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", required_argument, NULL, OPT_CHECK},
        {"describe-plugin", required_argument, NULL, OPT_DESCRIBE},
        {"host", required_argument, NULL, OPT_HOST},
        {"port", required_argument, NULL, OPT_PORT},
        {"data-dir", required_argument, NULL, OPT_DATA},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *check = NULL, *describe = NULL, *log_level = NULL;
    gs_overrides ov = {0};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case OPT_CHECK: check = optarg; break;
        case OPT_DESCRIBE: describe = optarg; break;
        case OPT_HOST: ov.host = optarg; break;
        case OPT_PORT: ov.port = optarg; break;
        case OPT_DATA: ov.data_dir = optarg; break;
        case OPT_LOG: log_level = optarg; break;
        case 'V':
            printf("gatestream %s (plugin ABI %d.%d)\n", GS_VERSION, GS_ABI_MAJOR, GS_ABI_MINOR);
            return 0;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "gatestream: unknown or incomplete option '%s'; see --help\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "gatestream: unexpected argument '%s'; see --help\n", argv[optind]);
        return 2;
    }
    gs_error err;
    gs_error_init(&err);
    if (describe) {
        char *text = NULL;
        if (gs_describe_plugin(describe, &text, &err) != GS_OK)
            return fail(&err);
        fputs(text, stdout);
        gs_free(text);
        return 0;
    }
    if (!config && !check) {
        usage(stderr);
        return 2;
    }
    if (log_level) {
        int l = gs_log_level_parse(log_level);
        if (l < 0) {
            fprintf(stderr, "gatestream: --log-level must be error, warn, info or debug\n");
            return 2;
        }
    }

    /* Signals: SIGPIPE ignored; SIGINT/SIGTERM blocked in every thread and taken by
     * sigwait below, so no handler runs in the middle of anything. */
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    gs_node *node = NULL;
    if (gs_node_load(check ? check : config, &ov, &node, &err) != GS_OK)
        return fail(&err);
    if (log_level)
        gs_log_set_level((gs_log_level)gs_log_level_parse(log_level));
    if (check) {
        printf("%s: OK\n", check);
        gs_node_free(node);
        return 0;
    }
    if (gs_node_start(node, &err) != GS_OK) {
        int st = fail(&err);
        gs_node_free(node);
        return st;
    }
    int sig = 0;
    sigwait(&set, &sig);
    gs_log(GS_LOG_INFO, "core", "received %s: finishing in-flight requests, then stopping",
           sig == SIGINT ? "SIGINT" : "SIGTERM");
    gs_node_stop(node);
    gs_node_free(node);
    gs_log(GS_LOG_INFO, "core", "stopped cleanly");
    return 0;
}
