/*
 * `gatestream backup` / `gatestream restore`: see backup_cmd.h. The database path resolves as
 * a node resolves it (databases[].path or <id>.db under node.data_dir).
 */
#include "backup_cmd.h"

#include "../base/alloc.h"
#include "../base/error.h"
#include "../base/fs.h"
#include "../base/log.h"
#include "../config/config.h"
#include "../db/backup.h"
#include "settings.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { EXIT_DONE = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

static void backup_usage(FILE *f)
{
    fprintf(f,
            "usage: gatestream backup --config FILE --db ID --to DIR [--data-dir DIR]\n"
            "\n"
            "Copies database ID (databases[].id in FILE) to DIR/backup-<UTC time>.db while a\n"
            "node may keep serving it. The copy goes through SQLite's stepped backup (256 pages\n"
            "a step) from a read-only connection of this command's own. The spec wants the copy\n"
            "made on the node's writing connection, which only the node process can do; from a\n"
            "separate process every write the node commits returns the copy to page one. The\n"
            "command counts those restarts and fails (BACKUP_RESTARTED) after 3 of them or\n"
            "after 256 steps without progress, and fails BACKUP_STALLED when no step completes\n"
            "within 30 s; retry at a quieter time. The copy is written under a temporary name,\n"
            "fsynced and renamed, so DIR never holds a partial backup.\n"
            "\n"
            "  --config FILE     the node's YAML config\n"
            "  --db ID           the database to copy\n"
            "  --to DIR          the folder for the backup (created when missing)\n"
            "  --data-dir DIR    override node.data_dir\n"
            "\n"
            "Prints a progress line (pages done/total) on a terminal and a summary line.\n"
            "Exit status: 0 done; 1 the backup failed; 2 a usage or config error.\n");
}

static void restore_usage(FILE *f)
{
    fprintf(f,
            "usage: gatestream restore --from FILE_OR_DIR --to PATH [--replace]\n"
            "\n"
            "Restores a full-copy backup made by `gatestream backup`: checks it with PRAGMA\n"
            "integrity_check, copies it beside PATH under a temporary name, checks the copy\n"
            "with PRAGMA quick_check, fsyncs it and moves it to PATH atomically. Given a folder,\n"
            "it restores the newest backup-*.db in it. Stop any node serving PATH first.\n"
            "\n"
            "  --from FILE_OR_DIR  the backup file, or a folder of them\n"
            "  --to PATH           the database file to create\n"
            "  --replace           overwrite PATH (its -wal/-shm/-journal are removed)\n"
            "  --moment MS         not available: restoring to a moment needs a backup chain\n"
            "                      (change capture), which gatestream does not build yet\n"
            "\n"
            "Exit status: 0 done; 1 the restore failed; 2 a usage error.\n");
}

static int usage_error(const char *cmd, const char *fmt, const char *arg)
{
    fprintf(stderr, "gatestream %s: ", cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "; see gatestream %s --help\n", cmd);
    return EXIT_USAGE;
}

/* The database file of `id` as a node resolves it; NULL with a message printed. */
static char *resolve_db(const char *config, const char *data_dir, const char *id, int *status)
{
    gs_error err;
    gs_error_init(&err);
    gs_cfg_doc *doc = NULL;
    gs_cfg_arena arena = {0};
    gs_settings s;
    memset(&s, 0, sizeof s);
    size_t nkeys;
    const gs_config_key *keys = gs_settings_keys(&nkeys);
    char *path = NULL;
    *status = EXIT_USAGE;
    if (gs_cfg_load_file(config, &doc, &err) != GS_OK ||
        (data_dir && gs_cfg_set(doc, "node.data_dir", data_dir, &err) != GS_OK) ||
        gs_cfg_fill(doc, doc->root, "", keys, nkeys, sizeof(gs_config_key), &s, &arena, &err) !=
            GS_OK) {
        fprintf(stderr, "gatestream backup: %s\n", err.message);
        goto done;
    }
    const gs_settings_db *d = NULL;
    const gs_settings_db *dbs = s.databases.items;
    for (size_t i = 0; i < s.databases.count && !d; i++)
        if (strcmp(dbs[i].id, id) == 0)
            d = &dbs[i];
    if (!d) {
        fprintf(stderr, "gatestream backup: %s declares no database '%s' under databases\n", config,
                id);
        goto done;
    }
    char file[PATH_MAX];
    if (d->path)
        snprintf(file, sizeof file, "%s", d->path);
    else
        snprintf(file, sizeof file, "%s.db", d->id);
    path = gs_path_join(s.node.data_dir, file);
    if (!path) {
        fprintf(stderr, "gatestream backup: out of memory\n");
        *status = EXIT_FAILED;
    }
done:
    gs_cfg_arena_free(&arena);
    gs_cfg_free(doc);
    return path;
}

static void on_progress(void *user, const gs_backup_progress *p)
{
    (void)user;
    printf("\rcopied %lld/%lld pages", (long long)p->pages_copied, (long long)p->total_pages);
    fflush(stdout);
}

int gs_backup_command(int argc, char **argv)
{
    enum { OPT_DB = 256, OPT_TO, OPT_DATA };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"db", required_argument, NULL, OPT_DB},
        {"to", required_argument, NULL, OPT_TO},  {"data-dir", required_argument, NULL, OPT_DATA},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *id = NULL, *to = NULL, *data_dir = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case OPT_DB: id = optarg; break;
        case OPT_TO: to = optarg; break;
        case OPT_DATA: data_dir = optarg; break;
        case 'h': backup_usage(stdout); return EXIT_DONE;
        default:
            return usage_error("backup", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("backup", "unexpected argument '%s'", argv[optind]);
    if (!config)
        return usage_error("backup", "%s", "--config FILE is required");
    if (!id)
        return usage_error("backup", "%s", "--db ID is required");
    if (!to)
        return usage_error("backup", "%s", "--to DIR is required");
    gs_log_set_level(GS_LOG_WARN);
    signal(SIGPIPE, SIG_IGN);
    int status;
    char *src = resolve_db(config, data_dir, id, &status);
    if (!src)
        return status;
    char name[64];
    gs_backup_default_name(name, sizeof name);
    char *dest = gs_path_join(to, name);
    if (!dest) {
        gs_free(src);
        fprintf(stderr, "gatestream backup: out of memory\n");
        return EXIT_FAILED;
    }
    gs_backup_options o;
    gs_backup_options_default(&o);
    int tty = isatty(STDOUT_FILENO);
    if (tty)
        o.on_progress = on_progress;
    gs_backup_result r;
    memset(&r, 0, sizeof r);
    gs_error err;
    gs_error_init(&err);
    gs_status st = gs_backup_file(src, dest, &o, &r, &err);
    if (tty)
        printf("\n");
    if (st != GS_OK) {
        fflush(stdout);
        fprintf(stderr, "gatestream backup: %s: %s\n", err.code, err.message);
        status = EXIT_FAILED;
    } else {
        printf("backup of '%s' written to %s: %lld pages, %lld bytes, %.1f ms, %d restarts\n", id,
               dest, (long long)r.pages, (long long)r.bytes, r.duration_ms, r.restarts);
        status = EXIT_DONE;
    }
    gs_free(src);
    gs_free(dest);
    return status;
}

/* The newest backup-*.db in dir (the names sort by time); NULL when none. */
static char *newest_backup(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    char best[NAME_MAX + 1] = "";
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n > 10 && strncmp(e->d_name, "backup-", 7) == 0 &&
            strcmp(e->d_name + n - 3, ".db") == 0 && strcmp(e->d_name, best) > 0)
            snprintf(best, sizeof best, "%s", e->d_name);
    }
    closedir(d);
    return best[0] ? gs_path_join(dir, best) : NULL;
}

int gs_restore_command(int argc, char **argv)
{
    enum { OPT_FROM = 256, OPT_TO, OPT_REPLACE, OPT_MOMENT };
    static const struct option opts[] = {
        {"from", required_argument, NULL, OPT_FROM},
        {"to", required_argument, NULL, OPT_TO},
        {"replace", no_argument, NULL, OPT_REPLACE},
        {"moment", required_argument, NULL, OPT_MOMENT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *from = NULL, *to = NULL;
    int replace = 0, moment = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_FROM: from = optarg; break;
        case OPT_TO: to = optarg; break;
        case OPT_REPLACE: replace = 1; break;
        case OPT_MOMENT: moment = 1; break;
        case 'h': restore_usage(stdout); return EXIT_DONE;
        default:
            return usage_error("restore", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("restore", "unexpected argument '%s'", argv[optind]);
    if (moment) {
        fprintf(stderr, "gatestream restore: --moment restores a backup chain to a moment, and "
                        "backup chains (change capture) are not built yet; only full-copy "
                        "backups can be restored, without --moment\n");
        return EXIT_USAGE;
    }
    if (!from)
        return usage_error("restore", "%s", "--from FILE_OR_DIR is required");
    if (!to)
        return usage_error("restore", "%s", "--to PATH is required");
    gs_log_set_level(GS_LOG_WARN);
    struct stat sb;
    char *file = NULL;
    if (stat(from, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        file = newest_backup(from);
        if (!file) {
            fprintf(stderr, "gatestream restore: BACKUP_ERROR: no backup-*.db file in '%s'\n",
                    from);
            return EXIT_FAILED;
        }
    } else {
        file = gs_strdup(from);
    }
    gs_backup_result r;
    memset(&r, 0, sizeof r);
    gs_error err;
    gs_error_init(&err);
    int status;
    if (gs_backup_restore(file, to, replace, &r, &err) != GS_OK) {
        fprintf(stderr, "gatestream restore: %s: %s\n", err.code, err.message);
        status = EXIT_FAILED;
    } else {
        printf("restored %s to %s: %lld pages, %lld bytes, %.1f ms\n", file, to, (long long)r.pages,
               (long long)r.bytes, r.duration_ms);
        status = EXIT_DONE;
    }
    gs_free(file);
    return status;
}
