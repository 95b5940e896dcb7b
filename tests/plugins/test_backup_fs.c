/*
 * gs_backup_fs.so (backups/fs) against a test host (hook_host.h's allocator, log and error
 * table; loaded here as a backup_destination): the descriptor, config refusals, pieces written,
 * replaced, read back and listed, claims settled exactly once under a race, name checks, no
 * temporary file left behind, and no host allocation leaked.
 */
#include "hook_host.h"

#include <gatestream/backup_destination.h>

#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#define FS_FILE "gs_backup_fs.so"

typedef struct fs_plugin {
    void *handle;
    const gs_plugin_descriptor *desc;
    const gs_backup_destination_vtable *vt;
} fs_plugin;

static char tmpdir[128];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/gs-fsdest-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown(void)
{
    nftw(tmpdir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(backup_fs, .init = setup, .fini = teardown, .timeout = 60);

static fs_plugin fs_load(void)
{
    const char *dir = getenv("GS_PLUGIN_DIR");
    cr_assert(dir && *dir, "GS_PLUGIN_DIR must name the folder holding " FS_FILE);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, FS_FILE);
    fs_plugin p;
    p.handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(p.handle, "dlopen %s: %s", path, dlerror());
    void *sym = dlsym(p.handle, GS_PLUGIN_ENTRY_SYMBOL);
    cr_assert_not_null(sym);
    gs_plugin_entry_fn entry;
    memcpy(&entry, &sym, sizeof entry);
    cr_assert_null(entry(GS_ABI_MAJOR + 1), "the entry must refuse another major");
    p.desc = entry(GS_ABI_MAJOR);
    cr_assert_not_null(p.desc);
    cr_assert_eq(p.desc->kind, GS_KIND_BACKUP_DESTINATION);
    cr_assert_str_eq(p.desc->name, "fs");
    cr_assert_eq(p.desc->abi_major, GS_ABI_MAJOR);
    cr_assert_geq(p.desc->abi_minor, 3);
    cr_assert_str_eq(p.desc->build_signature, GS_BUILD_SIGNATURE);
    cr_assert_eq(p.desc->config_key_size, sizeof(gs_config_key));
    p.vt = p.desc->vtable;
    cr_assert_geq(p.vt->struct_size, sizeof(gs_backup_destination_vtable));
    cr_assert(p.vt->create && p.vt->destroy && p.vt->write_piece && p.vt->read_piece &&
              p.vt->list_pieces && p.vt->write_piece_if_absent);
    return p;
}

typedef struct fixture {
    fs_plugin p;
    void *cfg;
    void *inst;
    char dir[256];
} fixture;

static void set_bool(void *cfg, const gs_plugin_descriptor *d, const char *name, int v)
{
    const gs_config_key *k = th_key(d->config_keys, d->config_key_count, d->config_key_size, name);
    cr_assert_eq(k->type, GS_CFG_BOOL);
    memcpy((char *)cfg + k->offset, &v, sizeof v);
}

static gs_status fs_create(fixture *f, const char *dir, int create, gs_error *err)
{
    f->p = fs_load();
    const gs_plugin_descriptor *d = f->p.desc;
    f->cfg = calloc(1, d->config_struct_size);
    cr_assert_not_null(f->cfg);
    snprintf(f->dir, sizeof f->dir, "%s", dir);
    th_set_string(f->cfg, th_key(d->config_keys, d->config_key_count, d->config_key_size, "dir"),
                  f->dir);
    set_bool(f->cfg, d, "create", create);
    set_bool(f->cfg, d, "fsync", 1);
    f->inst = NULL;
    return f->p.vt->create(&th_host, f->cfg, &f->inst, err);
}

static void fs_finish(fixture *f)
{
    if (f->inst)
        f->p.vt->destroy(f->inst);
    f->inst = NULL;
    free(f->cfg);
    cr_assert_eq(th_live_blocks(), 0, "%ld host block(s) leaked", th_live_blocks());
    dlclose(f->p.handle);
}

static void store(fixture *f, const char *name, uint64_t index, const char *text)
{
    gs_error err = th_error();
    cr_assert_eq(
        f->p.vt->write_piece(f->inst, name, index, (const uint8_t *)text, strlen(text), &err),
        GS_OK, "%s", err.message);
}

static char *fetch(fixture *f, const char *name, uint64_t index, gs_status *st)
{
    gs_error err = th_error();
    uint8_t *b = NULL;
    size_t len = 0;
    *st = f->p.vt->read_piece(f->inst, name, index, &b, &len, &err);
    if (*st != GS_OK)
        return NULL;
    char *s = malloc(len + 1);
    memcpy(s, b, len);
    s[len] = 0;
    th_free(b);
    return s;
}

typedef struct listing {
    uint64_t index[64];
    uint64_t len[64];
    int n;
} listing;

static void on_piece(void *user, uint64_t index, uint64_t byte_length)
{
    listing *l = user;
    cr_assert_lt(l->n, 64);
    l->index[l->n] = index;
    l->len[l->n] = byte_length;
    l->n++;
}

static int temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strncmp(e->d_name, ".tmp-", 5) == 0;
    closedir(d);
    return n;
}

Test(backup_fs, pieces_round_trip_replace_and_list)
{
    fixture f;
    char dir[256];
    snprintf(dir, sizeof dir, "%s/dest/nested", tmpdir);
    gs_error err = th_error();
    cr_assert_eq(fs_create(&f, dir, 1, &err), GS_OK, "%s", err.message);
    store(&f, "copy.db", 1, "second");
    store(&f, "copy.db", 0, "first");
    store(&f, "copy.db", 7, "");
    gs_status st;
    char *s = fetch(&f, "copy.db", 0, &st);
    cr_assert_eq(st, GS_OK);
    cr_assert_str_eq(s, "first");
    free(s);
    s = fetch(&f, "copy.db", 7, &st);
    cr_assert_eq(st, GS_OK);
    cr_assert_str_eq(s, "", "an empty piece is a piece");
    free(s);
    store(&f, "copy.db", 0, "replaced"); /* a resumed run repeats its last write */
    s = fetch(&f, "copy.db", 0, &st);
    cr_assert_str_eq(s, "replaced");
    free(s);
    cr_assert_null(fetch(&f, "copy.db", 3, &st));
    cr_assert_eq(st, GS_DECLINED, "a missing piece is declined, not an error");
    cr_assert_null(fetch(&f, "nothing", 0, &st));
    cr_assert_eq(st, GS_DECLINED);

    listing l = {.n = 0};
    cr_assert_eq(f.p.vt->list_pieces(f.inst, "copy.db", on_piece, &l, &err), GS_OK);
    cr_assert_eq(l.n, 3);
    int seen = 0;
    for (int i = 0; i < l.n; i++) {
        uint64_t want = l.index[i] == 0 ? 8 : l.index[i] == 1 ? 6 : 0;
        cr_assert(l.index[i] == 0 || l.index[i] == 1 || l.index[i] == 7);
        cr_assert_eq(l.len[i], want, "piece %llu", (unsigned long long)l.index[i]);
        seen |= l.index[i] == 0 ? 1 : l.index[i] == 1 ? 2 : 4;
    }
    cr_assert_eq(seen, 7);
    listing empty = {.n = 0};
    cr_assert_eq(f.p.vt->list_pieces(f.inst, "never-written", on_piece, &empty, &err), GS_OK);
    cr_assert_eq(empty.n, 0, "a name holding nothing lists nothing");

    /* names are separate folders; no temporary file is left behind */
    store(&f, "other", 0, "x");
    char sub[512];
    snprintf(sub, sizeof sub, "%s/copy.db", dir);
    cr_assert_eq(temp_files(sub), 0);
    snprintf(sub, sizeof sub, "%s/copy.db/00000000000000000007.piece", dir);
    struct stat sb;
    cr_assert_eq(stat(sub, &sb), 0, "the layout is <dir>/<name>/<20-digit index>.piece");
    fs_finish(&f);
}

Test(backup_fs, a_large_piece_round_trips)
{
    fixture f;
    gs_error err = th_error();
    cr_assert_eq(fs_create(&f, tmpdir, 1, &err), GS_OK, "%s", err.message);
    size_t n = 3u << 20;
    uint8_t *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (uint8_t)(i * 2654435761u >> 24);
    cr_assert_eq(f.p.vt->write_piece(f.inst, "big", 0, big, n, &err), GS_OK, "%s", err.message);
    uint8_t *back = NULL;
    size_t len = 0;
    cr_assert_eq(f.p.vt->read_piece(f.inst, "big", 0, &back, &len, &err), GS_OK);
    cr_assert_eq(len, n);
    cr_assert_eq(memcmp(back, big, n), 0);
    th_free(back);
    free(big);
    fs_finish(&f);
}

Test(backup_fs, claims_store_once)
{
    fixture f;
    gs_error err = th_error();
    cr_assert_eq(fs_create(&f, tmpdir, 1, &err), GS_OK, "%s", err.message);
    int stored = -1;
    cr_assert_eq(
        f.p.vt->write_piece_if_absent(f.inst, "list", 0, (const uint8_t *)"mine", 4, &stored, &err),
        GS_OK);
    cr_assert_eq(stored, 1);
    cr_assert_eq(f.p.vt->write_piece_if_absent(f.inst, "list", 0, (const uint8_t *)"theirs", 6,
                                               &stored, &err),
                 GS_OK);
    cr_assert_eq(stored, 0, "a place already taken is not claimed again");
    gs_status st;
    char *s = fetch(&f, "list", 0, &st);
    cr_assert_str_eq(s, "mine", "and the piece there is left as it was");
    free(s);
    fs_finish(&f);
}

typedef struct racer {
    fixture *f;
    int id;
    int stored;
    gs_status st;
    pthread_barrier_t *go;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    char text[16];
    snprintf(text, sizeof text, "racer-%d", r->id);
    gs_error err = th_error();
    pthread_barrier_wait(r->go);
    r->st = r->f->p.vt->write_piece_if_absent(r->f->inst, "race", 5, (const uint8_t *)text,
                                              strlen(text), &r->stored, &err);
    return NULL;
}

Test(backup_fs, racing_claims_settle_exactly_once)
{
    fixture f;
    gs_error err = th_error();
    cr_assert_eq(fs_create(&f, tmpdir, 1, &err), GS_OK, "%s", err.message);
    for (int round = 0; round < 20; round++) {
        char name[32];
        snprintf(name, sizeof name, "%s/race", tmpdir);
        nftw(name, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
        enum { N = 8 };
        pthread_t t[N];
        racer r[N];
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, N);
        for (int i = 0; i < N; i++) {
            r[i] = (racer){.f = &f, .id = i, .stored = -1, .go = &go};
            cr_assert_eq(pthread_create(&t[i], NULL, race, &r[i]), 0);
        }
        int winners = 0, winner = -1;
        for (int i = 0; i < N; i++) {
            pthread_join(t[i], NULL);
            cr_assert_eq(r[i].st, GS_OK);
            if (r[i].stored) {
                winners++;
                winner = i;
            }
        }
        pthread_barrier_destroy(&go);
        cr_assert_eq(winners, 1, "round %d: %d claims reported true", round, winners);
        gs_status st;
        char *s = fetch(&f, "race", 5, &st);
        char want[16];
        snprintf(want, sizeof want, "racer-%d", winner);
        cr_assert_str_eq(s, want, "the stored piece is the winner's");
        free(s);
    }
    fs_finish(&f);
}

Test(backup_fs, names_that_leave_the_folder_are_refused)
{
    fixture f;
    gs_error err = th_error();
    cr_assert_eq(fs_create(&f, tmpdir, 1, &err), GS_OK, "%s", err.message);
    const char *bad[] = {"", "..", ".", "a/b", "../up", ".hidden", "tab\there", "nl\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err = th_error();
        cr_assert_eq(f.p.vt->write_piece(f.inst, bad[i], 0, (const uint8_t *)"x", 1, &err),
                     GS_ERROR, "name '%s' accepted", bad[i]);
        cr_assert_str_eq(err.code, "BACKUP_DESTINATION_ERROR");
        listing l = {.n = 0};
        cr_assert_eq(f.p.vt->list_pieces(f.inst, bad[i], on_piece, &l, &err), GS_ERROR);
        uint8_t *b = NULL;
        size_t len = 0;
        cr_assert_eq(f.p.vt->read_piece(f.inst, bad[i], 0, &b, &len, &err), GS_ERROR);
    }
    char long_name[300];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    cr_assert_eq(f.p.vt->write_piece(f.inst, long_name, 0, (const uint8_t *)"x", 1, &err),
                 GS_ERROR);
    /* names with dots inside are fine (chain logs are "<chain>.<id>") */
    store(&f, "sirannon-backup-chain.0123abcd", 0, "{}");
    fs_finish(&f);
}

Test(backup_fs, config_refusals)
{
    fixture f;
    char dir[256];
    snprintf(dir, sizeof dir, "%s/missing", tmpdir);
    gs_error err = th_error();
    cr_assert_eq(fs_create(&f, dir, 0, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "create is off"), "%s", err.message);
    cr_assert_null(f.inst);
    fs_finish(&f);

    char file[256];
    snprintf(file, sizeof file, "%s/plain-file", tmpdir);
    FILE *fp = fopen(file, "w");
    cr_assert_not_null(fp);
    fclose(fp);
    err = th_error();
    cr_assert_eq(fs_create(&f, file, 1, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    fs_finish(&f);

    err = th_error();
    cr_assert_eq(fs_create(&f, "", 1, &err), GS_ERROR);
    fs_finish(&f);
}

Test(backup_fs, out_of_memory_fails_cleanly)
{
    fixture f;
    gs_error err = th_error();
    th_fail_after(0);
    cr_assert_eq(fs_create(&f, tmpdir, 1, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INTERNAL_ERROR");
    th_fail_after(-1);
    fs_finish(&f);
    cr_assert_eq(fs_create(&f, tmpdir, 1, &err), GS_OK);
    store(&f, "n", 0, "bytes");
    th_fail_after(0);
    uint8_t *b = NULL;
    size_t len = 0;
    err = th_error();
    cr_assert_eq(f.p.vt->read_piece(f.inst, "n", 0, &b, &len, &err), GS_ERROR);
    cr_assert_null(b);
    th_fail_after(-1);
    fs_finish(&f);
}
