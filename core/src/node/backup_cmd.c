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
#include "../db/backup_restore.h"
#include "../plugin/loader.h"
#include "settings.h"

#include <gatestream/backup_destination.h>

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
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
            "made on the node's writing connection, which only the node process can do; this\n"
            "command holds one read snapshot of a WAL database (every database a node serves)\n"
            "for the whole copy instead, so the backup is the database as it was when the\n"
            "command started and the node goes on writing (its checkpoints wait for the copy).\n"
            "A file in rollback-journal mode is not held: every write committed to it returns\n"
            "the copy to page one, and the command fails (BACKUP_RESTARTED) after 3 of those or\n"
            "after 256 steps without progress. It fails BACKUP_STALLED when no step completes\n"
            "within 30 s. The copy is written under a temporary name, fsynced and renamed, so\n"
            "DIR never holds a partial backup.\n"
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
    fprintf(f, "usage: gatestream restore --from FILE_OR_DIR --to PATH [--replace]\n"
               "       gatestream restore --from DIR --to PATH [--moment MS] [--chain-name NAME]\n"
               "                          [--batch-size N] [--replace]\n"
               "\n"
               "A full copy made by `gatestream backup`: checks it with PRAGMA integrity_check,\n"
               "copies it beside PATH under a temporary name, checks the copy with PRAGMA\n"
               "quick_check, fsyncs it and moves it to PATH atomically. Given a folder of them,\n"
               "it restores the newest backup-*.db in it.\n"
               "\n"
               "A backup chain: when DIR is the folder of a filesystem backup destination (the\n"
               "`dir` of a backups/fs plugin instance, holding the list of chains), it rebuilds\n"
               "the database as it was at MS (epoch milliseconds; default: the newest capture):\n"
               "the newest full copy finished at or before MS, then every change piece captured\n"
               "up to MS, each checked against its record (piece count, size, SHA-256) and\n"
               "against the chain (no gap), replayed through SQLite's write-ahead log, checked\n"
               "with PRAGMA quick_check and moved to PATH atomically. A missing or damaged piece\n"
               "fails with BACKUP_CHAIN_BROKEN and leaves PATH as it was.\n"
               "\n"
               "Stop any node serving PATH first.\n"
               "\n"
               "  --from FILE_OR_DIR  a backup file, a folder of them, or a destination folder\n"
               "  --to PATH           the database file to create\n"
               "  --replace           overwrite PATH (its -wal/-shm/-journal are removed)\n"
               "  --moment MS         restore a chain to this moment (epoch milliseconds)\n"
               "  --chain-name NAME   the chain list's name (default sirannon-backup-chain)\n"
               "  --batch-size N      change pieces replayed per batch, 1..4096 (default 16)\n"
               "\n"
               "Prints a progress line on a terminal and a summary line.\n"
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

/* ---- restore from a chain in a filesystem destination ---- */

static void cli_log(const gs_host *host, gs_log_level level, const char *component, const char *fmt,
                    ...)
{
    (void)host;
    va_list ap;
    va_start(ap, fmt);
    gs_logv(level, component, fmt, ap);
    va_end(ap);
}

static uint64_t cli_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void cli_error_set(gs_error *err, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gs_error_setv(err, status, code, fmt, ap);
    va_end(ap);
}

/* An instance of the fs destination over dir (the built-in one, else gs_backup_fs.so). */
typedef struct fs_dest {
    gs_host host;
    gs_plugin *plugin;
    void *config;
    gs_cfg_arena arena;
    void *instance;
} fs_dest;

static void fs_dest_close(fs_dest *f)
{
    if (f->instance)
        ((const gs_backup_destination_vtable *)f->plugin->desc->vtable)->destroy(f->instance);
    gs_cfg_arena_free(&f->arena);
    gs_free(f->config);
    gs_plugin_unload(f->plugin);
    memset(f, 0, sizeof *f);
}

static gs_status fs_dest_open(fs_dest *f, const char *dir, gs_error *err)
{
    memset(f, 0, sizeof *f);
    f->host.struct_size = sizeof f->host;
    f->host.abi_major = GS_ABI_MAJOR;
    f->host.abi_minor = GS_ABI_MINOR;
    f->host.log = cli_log;
    f->host.alloc = gs_malloc;
    f->host.realloc = gs_realloc;
    f->host.free = gs_free;
    f->host.now_ms = cli_now_ms;
    f->host.error_set = cli_error_set;
    if (gs_plugin_load_builtin("restore", "fs", GS_KIND_BACKUP_DESTINATION, &f->plugin, err) !=
        GS_OK)
        return GS_ERROR;
    if (!f->plugin) {
        char *path = NULL;
        if (gs_plugin_find("restore", "fs", GS_KIND_BACKUP_DESTINATION, NULL, NULL, &path, err) !=
                GS_OK ||
            gs_plugin_load("restore", path, GS_KIND_BACKUP_DESTINATION, &f->plugin, err) != GS_OK) {
            gs_free(path);
            return GS_ERROR;
        }
        gs_free(path);
    }
    const gs_plugin_descriptor *d = f->plugin->desc;
    json_t *cfg = json_pack("{sssbsb}", "dir", dir, "create", 0, "fsync", 1);
    char *text = cfg ? json_dumps(cfg, JSON_COMPACT) : NULL; /* JSON is YAML flow style */
    json_decref(cfg);
    gs_cfg_doc *doc = NULL;
    gs_status st = text ? gs_cfg_load_string(text, strlen(text), "--from", &doc, err)
                        : gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    free(text);
    if (st == GS_OK &&
        !(f->config = gs_calloc(1, d->config_struct_size ? d->config_struct_size : 1)))
        st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    if (st == GS_OK)
        st = gs_cfg_fill(doc, doc->root, "fs", d->config_keys, d->config_key_count,
                         d->config_key_size, f->config, &f->arena, err);
    gs_cfg_free(doc);
    if (st == GS_OK)
        st = ((const gs_backup_destination_vtable *)d->vtable)
                 ->create(&f->host, f->config, &f->instance, err);
    if (st != GS_OK) {
        f->instance = NULL;
        fs_dest_close(f);
    }
    return st;
}

static void on_restore_progress(void *user, const gs_restore_progress *p)
{
    (void)user;
    if (strcmp(p->phase, "full-copy") == 0)
        printf("\rfull copy: %lld pieces, %lld bytes", (long long)p->pieces_fetched,
               (long long)p->bytes_fetched);
    else
        printf("\rchanges: %lld/%lld applied, %lld bytes fetched", (long long)p->changes_applied,
               (long long)p->changes_total, (long long)p->bytes_fetched);
    fflush(stdout);
}

static int restore_chain(const char *dir, const char *to, const char *chain_name, int has_moment,
                         int64_t moment, int batch, int replace)
{
    gs_error err;
    gs_error_init(&err);
    fs_dest f;
    if (fs_dest_open(&f, dir, &err) != GS_OK) {
        fprintf(stderr, "gatestream restore: %s: %s\n", err.code, err.message);
        return EXIT_FAILED;
    }
    gs_backup_dest *d = NULL;
    int status = EXIT_FAILED;
    if (gs_backup_dest_new(f.plugin->desc->vtable, f.instance, GS_BACKUP_DEST_TIMEOUT_MS, &d,
                           &err) == GS_OK) {
        int tty = isatty(STDOUT_FILENO);
        gs_restore_options o = {.chain_name = chain_name,
                                .has_moment = has_moment,
                                .moment = moment,
                                .replace = replace,
                                .batch_size = batch,
                                .on_progress = tty ? on_restore_progress : NULL};
        gs_restore_report rep;
        gs_status st = gs_backup_restore_chain(d, &o, to, &rep, &err);
        if (tty)
            printf("\n");
        if (st == GS_OK) {
            printf("restored chain %s from %s to %s as of %lld: full copy %s, %lld change "
                   "pieces (%lld frames, %lld batches), %lld pieces and %lld bytes fetched, "
                   "%lld ms\n",
                   rep.chain_id, dir, to, (long long)rep.restores_to, rep.base_name,
                   (long long)rep.changes_applied, (long long)rep.frames_applied,
                   (long long)rep.batch_count, (long long)rep.piece_count,
                   (long long)rep.bytes_fetched, (long long)rep.duration_ms);
            status = EXIT_DONE;
        }
        gs_restore_report_clear(&rep);
        gs_backup_dest_free(d);
    }
    if (status != EXIT_DONE) {
        fflush(stdout);
        fprintf(stderr, "gatestream restore: %s: %s\n", err.code, err.message);
    }
    fs_dest_close(&f);
    return status;
}

/* A whole number of at most 18 digits, or -1. */
static int64_t parse_whole(const char *s)
{
    if (!s || !*s || strlen(s) > 18)
        return -1;
    int64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

int gs_restore_command(int argc, char **argv)
{
    enum { OPT_FROM = 256, OPT_TO, OPT_REPLACE, OPT_MOMENT, OPT_CHAIN, OPT_BATCH };
    static const struct option opts[] = {
        {"from", required_argument, NULL, OPT_FROM},
        {"to", required_argument, NULL, OPT_TO},
        {"replace", no_argument, NULL, OPT_REPLACE},
        {"moment", required_argument, NULL, OPT_MOMENT},
        {"chain-name", required_argument, NULL, OPT_CHAIN},
        {"batch-size", required_argument, NULL, OPT_BATCH},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *from = NULL, *to = NULL, *moment_text = NULL, *chain_name = NULL;
    const char *batch_text = NULL;
    int replace = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_FROM: from = optarg; break;
        case OPT_TO: to = optarg; break;
        case OPT_REPLACE: replace = 1; break;
        case OPT_MOMENT: moment_text = optarg; break;
        case OPT_CHAIN: chain_name = optarg; break;
        case OPT_BATCH: batch_text = optarg; break;
        case 'h': restore_usage(stdout); return EXIT_DONE;
        default:
            return usage_error("restore", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("restore", "unexpected argument '%s'", argv[optind]);
    if (!from)
        return usage_error("restore", "%s", "--from FILE_OR_DIR is required");
    if (!to)
        return usage_error("restore", "%s", "--to PATH is required");
    int64_t moment = moment_text ? parse_whole(moment_text) : 0;
    if (moment_text && moment < 0)
        return usage_error("restore", "--moment takes epoch milliseconds, not '%s'", moment_text);
    int64_t batch = batch_text ? parse_whole(batch_text) : GS_RESTORE_DEFAULT_BATCH;
    if (batch < 1 || batch > GS_RESTORE_MAX_BATCH)
        return usage_error("restore", "--batch-size takes 1 to 4096, not '%s'", batch_text);
    if (!chain_name)
        chain_name = GS_BACKUP_DEFAULT_CHAIN_NAME;
    gs_log_set_level(GS_LOG_WARN);
    signal(SIGPIPE, SIG_IGN);
    struct stat sb;
    int is_dir = stat(from, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (is_dir) {
        char list[PATH_MAX];
        snprintf(list, sizeof list, "%s/%s", from, chain_name);
        struct stat lb;
        if (stat(list, &lb) == 0 && S_ISDIR(lb.st_mode))
            return restore_chain(from, to, chain_name, moment_text != NULL, moment, (int)batch,
                                 replace);
    }
    if (moment_text) {
        fprintf(stderr,
                "gatestream restore: --moment restores a backup chain to a moment, and '%s' "
                "holds no chain named '%s' (give the folder of a filesystem backup destination, "
                "or --chain-name); a full-copy backup restores without --moment\n",
                from, chain_name);
        return EXIT_USAGE;
    }
    char *file = NULL;
    if (is_dir) {
        file = newest_backup(from);
        if (!file) {
            fprintf(stderr,
                    "gatestream restore: BACKUP_ERROR: no backup-*.db file and no backup chain "
                    "'%s' in '%s'\n",
                    chain_name, from);
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
