/*
 * `gatestream migrate`: see migrate_cmd.h. The config file is read and validated with the
 * node's own key tables; paths resolve exactly as a node resolves them (database files under
 * node.data_dir, migration folders relative to the config file).
 */
#include "../base/fs.h"
#include "migrate_cmd.h"

#include "../base/alloc.h"
#include "../base/error.h"
#include "../base/log.h"
#include "../config/config.h"
#include "../db/database.h"
#include "../db/migrations.h"
#include "settings.h"

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

enum { EXIT_DONE = 0, EXIT_MIGRATION = 1, EXIT_USAGE = 2 };

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gatestream migrate --config FILE --db ID [--to N]\n"
            "       gatestream migrate --config FILE --db ID --rollback [--to N]\n"
            "       gatestream migrate --config FILE --db ID --status\n"
            "\n"
            "Applies, rolls back or lists the schema migrations of database ID, read from the\n"
            "folder named by its databases[].migrations key (files <version>_<name>.up.sql and\n"
            "<version>_<name>.down.sql, relative to the config file). Only that database is\n"
            "opened: no plugin is loaded and nothing listens.\n"
            "\n"
            "  --config FILE     the node's YAML config\n"
            "  --db ID           the database (databases[].id)\n"
            "  --to N            apply: stop after version N; rollback: reverse every version\n"
            "                    above N (--to 0 reverses them all)\n"
            "  --rollback        reverse applied migrations (without --to: only the latest)\n"
            "  --status          list applied and pending migrations; change nothing\n"
            "  --data-dir DIR    override node.data_dir\n"
            "  --log-level L     error | warn | info | debug (default warn)\n"
            "\n"
            "Each migration runs in its own transaction; a failure rolls that one back and leaves\n"
            "the database at the previous version.\n"
            "\n"
            "Running it against the data dir of a stopped node is safe. Running it against the\n"
            "file of a live node is safe only because SQLite serialises writers: each migration\n"
            "waits up to the database's busy_timeout_ms for the write lock and holds it while it\n"
            "runs, so the node's own writes wait (and may fail busy) meanwhile, and the node is\n"
            "not told its schema changed. Prefer a stopped node, or let the node apply\n"
            "databases[].migrations itself when it starts.\n"
            "\n"
            "Exit status: 0 done; 1 a migration failed (or --status shows that applying would\n"
            "fail: a changed migration, a baseline gap); 2 a usage or config error.\n");
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "gatestream migrate: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "; see gatestream migrate --help\n");
    return EXIT_USAGE;
}

/* The same options a node opens the database with (node.c), minus what a one-off run does
 * not need: one reader, no change capture. */
static void db_options_from(gs_db_options *o, const gs_settings_db *d)
{
    gs_db_options_default(o);
    o->read_only = d->read_only;
    o->read_pool_size = 1;
    o->wal = d->wal;
    o->synchronous = d->synchronous;
    o->wal_autocheckpoint = d->wal_autocheckpoint;
    o->max_pending_writes = d->max_pending_writes;
    o->write_timeout_ms = d->write_timeout_ms;
    o->stmt_cache_size = (int)d->stmt_cache_size;
    o->busy_timeout_ms = (int)d->busy_timeout_ms;
}

static int parse_version(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > GS_MIGRATION_VERSION_MAX)
        return -1;
    *out = v;
    return 0;
}

static void format_time(double t, char *buf, size_t cap)
{
    if (t <= 0) {
        snprintf(buf, cap, "-");
        return;
    }
    time_t sec = (time_t)t;
    int ms = (int)((t - (double)sec) * 1000.0);
    if (ms < 0)
        ms = 0;
    if (ms > 999)
        ms = 999;
    struct tm tm;
    gmtime_r(&sec, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, cap, "%s.%03dZ", base, ms);
}

static int print_status(const char *id, const char *path, int file_exists,
                        const gs_migration_report *r)
{
    size_t applied = 0, bad = 0;
    int namew = 4;
    for (size_t i = 0; i < r->row_count; i++) {
        const gs_migration_row *row = &r->rows[i];
        int l = (int)strlen(row->name);
        if (l > namew)
            namew = l;
        if (row->state == GS_MIG_APPLIED || row->state == GS_MIG_MODIFIED ||
            row->state == GS_MIG_NOT_IN_SET)
            applied++;
        if (row->state == GS_MIG_MODIFIED)
            bad++;
    }
    printf("database '%s' (%s%s): user_version %lld, %zu applied, %zu pending\n", id, path,
           file_exists ? "" : ", not created yet", (long long)r->user_version, applied,
           r->pending_count);
    printf("%-10s  %-*s  %-10s  %-24s  %s\n", "VERSION", namew, "NAME", "STATE", "APPLIED_AT",
           "CHECKSUM");
    for (size_t i = 0; i < r->row_count; i++) {
        const gs_migration_row *row = &r->rows[i];
        char when[48];
        format_time(row->applied_at, when, sizeof when);
        printf("%-10lld  %-*s  %-10s  %-24s  %s\n", (long long)row->version, namew, row->name,
               gs_migration_state_name(row->state), when, row->checksum[0] ? row->checksum : "-");
    }
    int failing = bad > 0 || r->pending_err.code[0];
    if (bad)
        printf("problem: %zu applied migration(s) changed after they were applied "
               "(MIGRATION_CHECKSUM_MISMATCH on the next migrate)\n",
               bad);
    if (r->pending_err.code[0])
        printf("problem: %s: %s\n", r->pending_err.code, r->pending_err.message);
    return failing ? EXIT_MIGRATION : EXIT_DONE;
}

/* --status: read-only, on a connection of its own (works on a read-only database and on a
 * live node's file; a missing file shows everything pending). */
static int run_status(const char *id, const char *path, const gs_settings_db *d,
                      const gs_migration_set *set)
{
    struct stat sb;
    int exists = stat(path, &sb) == 0;
    sqlite3 *db = NULL;
    int rc = exists ? sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL)
                    : sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "gatestream migrate: cannot open '%s': %s\n", path,
                db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return EXIT_MIGRATION;
    }
    sqlite3_busy_timeout(db, (int)d->busy_timeout_ms);
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    gs_error_init(&err);
    int status;
    if (gs_migration_status_conn(db, set, &r, &err) != GS_OK) {
        fprintf(stderr, "gatestream migrate: database '%s': %s\n", id, err.message);
        status = EXIT_MIGRATION;
    } else {
        status = print_status(id, path, exists, &r);
    }
    gs_migration_report_free(&r);
    sqlite3_close(db);
    return status;
}

static int run_change(const char *id, const char *path, const char *data_dir,
                      const gs_settings_db *d, const gs_migration_set *set, int rollback,
                      int64_t to)
{
    struct stat sb;
    if (rollback && stat(path, &sb) != 0 && errno == ENOENT) {
        printf("database '%s' (%s)\nthe file does not exist: nothing to roll back\n", id, path);
        return EXIT_DONE;
    }
    /* a node creates its data dir at start; so does a first migrate */
    if (!rollback && gs_mkdir_p(data_dir) != 0) {
        fprintf(stderr, "gatestream migrate: cannot create node.data_dir '%s': %s\n", data_dir,
                strerror(errno));
        return EXIT_USAGE;
    }
    gs_db_options o;
    db_options_from(&o, d);
    gs_database *db = NULL;
    gs_error err;
    gs_error_init(&err);
    if (gs_db_open(id, path, &o, &db, &err) != GS_OK) {
        fprintf(stderr, "gatestream migrate: database '%s': %s\n", id, err.message);
        return EXIT_MIGRATION;
    }
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_status st =
        gs_db_migrate(db, rollback ? GS_MIGRATE_ROLLBACK : GS_MIGRATE_UP, set, to, &r, &err);
    printf("database '%s' (%s)\n", id, path);
    for (size_t i = 0; i < r.done_count; i++)
        printf("%s %lld_%s (%.1f ms)\n", rollback ? "rolled back" : "applied",
               (long long)r.done[i].version, r.done[i].name, r.done[i].duration_ms);
    int status = EXIT_DONE;
    if (st != GS_OK) {
        fflush(stdout);
        fprintf(stderr, "gatestream migrate: database '%s': %s: %s\n", id, err.code, err.message);
        status = EXIT_MIGRATION;
    } else {
        if (r.done_count == 0)
            printf("nothing to %s\n", rollback ? "roll back" : "apply");
        printf("schema at version %lld\n", (long long)r.user_version);
    }
    gs_migration_report_free(&r);
    gs_db_close(db);
    gs_db_free(db);
    return status;
}

int gs_migrate_command(int argc, char **argv)
{
    enum { OPT_DB = 256, OPT_TO, OPT_ROLLBACK, OPT_STATUS, OPT_DATA, OPT_LOG };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"db", required_argument, NULL, OPT_DB},
        {"to", required_argument, NULL, OPT_TO},
        {"rollback", no_argument, NULL, OPT_ROLLBACK},
        {"status", no_argument, NULL, OPT_STATUS},
        {"data-dir", required_argument, NULL, OPT_DATA},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *id = NULL, *to_arg = NULL, *data_dir = NULL;
    const char *log_level = "warn";
    int rollback = 0, status_only = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case OPT_DB: id = optarg; break;
        case OPT_TO: to_arg = optarg; break;
        case OPT_ROLLBACK: rollback = 1; break;
        case OPT_STATUS: status_only = 1; break;
        case OPT_DATA: data_dir = optarg; break;
        case OPT_LOG: log_level = optarg; break;
        case 'h': usage(stdout); return EXIT_DONE;
        default: return usage_error("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (!config)
        return usage_error("%s", "--config FILE is required");
    if (!id)
        return usage_error("%s", "--db ID is required");
    if (status_only && (rollback || to_arg))
        return usage_error("%s", "--status takes no --rollback or --to");
    int64_t to = GS_MIGRATION_NO_TARGET;
    if (to_arg && parse_version(to_arg, &to) != 0)
        return usage_error("--to '%s' must be a version from 0 to 2147483647", to_arg);
    int lvl = gs_log_level_parse(log_level);
    if (lvl < 0)
        return usage_error("--log-level '%s' must be error, warn, info or debug", log_level);
    gs_log_set_level((gs_log_level)lvl);
    signal(SIGPIPE, SIG_IGN);

    gs_error err;
    gs_error_init(&err);
    gs_cfg_doc *doc = NULL;
    gs_cfg_arena arena = {0};
    gs_settings s;
    memset(&s, 0, sizeof s);
    size_t nkeys;
    const gs_config_key *keys = gs_settings_keys(&nkeys);
    if (gs_cfg_load_file(config, &doc, &err) != GS_OK ||
        (data_dir && gs_cfg_set(doc, "node.data_dir", data_dir, &err) != GS_OK) ||
        gs_cfg_fill(doc, doc->root, "", keys, nkeys, sizeof(gs_config_key), &s, &arena, &err) !=
            GS_OK) {
        fprintf(stderr, "gatestream migrate: %s\n", err.message);
        gs_cfg_arena_free(&arena);
        gs_cfg_free(doc);
        return EXIT_USAGE;
    }
    int status = EXIT_USAGE;
    char *db_path = NULL, *mig_dir = NULL, *config_dir = NULL;
    gs_migration_set *set = NULL;
    const gs_settings_db *dbs = s.databases.items, *d = NULL;
    for (size_t i = 0; i < s.databases.count && !d; i++)
        if (strcmp(dbs[i].id, id) == 0)
            d = &dbs[i];
    if (!d) {
        fprintf(stderr, "gatestream migrate: %s declares no database '%s' under databases\n",
                config, id);
        goto done;
    }
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", config);
    config_dir = gs_strdup(dirname(tmp));
    char file[PATH_MAX];
    if (d->path)
        snprintf(file, sizeof file, "%s", d->path);
    else
        snprintf(file, sizeof file, "%s.db", d->id);
    db_path = config_dir ? gs_path_join(s.node.data_dir, file) : NULL;
    mig_dir = config_dir && d->migrations ? gs_path_join(config_dir, d->migrations) : NULL;
    if (!config_dir || !db_path || (d->migrations && !mig_dir)) {
        fprintf(stderr, "gatestream migrate: out of memory\n");
        status = EXIT_MIGRATION;
        goto done;
    }
    if (!mig_dir && !status_only) {
        fprintf(stderr,
                "gatestream migrate: database '%s' has no migrations folder; set "
                "databases[].migrations in %s\n",
                id, config);
        goto done;
    }
    if (d->read_only && !status_only) {
        fprintf(stderr,
                "gatestream migrate: database '%s' is read_only in %s: migrations are skipped "
                "for read-only databases\n",
                id, config);
        goto done;
    }
    if (mig_dir && gs_migrations_load_dir(mig_dir, &set, &err) != GS_OK) {
        fprintf(stderr, "gatestream migrate: database '%s': %s: %s\n", id, err.code, err.message);
        status = EXIT_MIGRATION;
        goto done;
    }
    if (status_only)
        status = run_status(id, db_path, d, set);
    else
        status = run_change(id, db_path, s.node.data_dir, d, set, rollback, to);
done:
    gs_migration_set_free(set);
    gs_free(db_path);
    gs_free(mig_dir);
    gs_free(config_dir);
    gs_cfg_arena_free(&arena);
    gs_cfg_free(doc);
    return status;
}
