/*
 * backup_destination "fs": backup pieces as files in a local (or mounted) folder.
 *
 * Layout: <dir>/<name>/<index>.piece, the index as 20 decimal digits so a listing sorts by it.
 * A name is one path segment (no '/', no control character, not "." or "..", at most 255
 * bytes, not starting with '.', which marks this plugin's temporary files). Nothing outside
 * <dir> is ever touched.
 *
 * Promise (gatestream/backup_destination.h): a piece is written to a temporary file in its
 * name's folder, fsynced, then renamed over the final name (and the folder fsynced), so a
 * reader sees the old piece or the new one, never a torn one, and a piece is durable when
 * write_piece returns. write_piece_if_absent links the temporary file to the final name, which
 * the kernel refuses atomically when the name exists: of two racing calls exactly one stores.
 *
 * Ownership: the instance owns its copy of the folder path. Threads: every callback is
 * thread-safe (the filesystem settles races; the temporary names are unique per call);
 * create/destroy on the core's main thread.
 */
#include <gatestream/backup_destination.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct fsd_config {
    const char *dir; /**< the folder holding every name */
    int create;      /**< create the folder when missing */
    int sync;        /**< fsync pieces and folders */
} fsd_config;

static const gs_config_key fsd_keys[] = {
    {.name = "dir",
     .type = GS_CFG_STRING,
     .required = 1,
     .offset = offsetof(fsd_config, dir),
     .help = "folder the pieces are stored in, one sub-folder per name (an absolute path, or "
             "relative to the working directory of the gatestream process)"},
    {.name = "create",
     .type = GS_CFG_BOOL,
     .default_value = "true",
     .offset = offsetof(fsd_config, create),
     .help = "create the folder when it does not exist"},
    {.name = "fsync",
     .type = GS_CFG_BOOL,
     .default_value = "true",
     .offset = offsetof(fsd_config, sync),
     .help = "fsync every piece and its folder before a write returns (turn off only for "
             "throwaway tests)"},
};

typedef struct fsd {
    const gs_host *host;
    char *dir;
    int sync;
    unsigned counter; /* temporary names (atomic) */
} fsd;

#define FSD_FAIL(d, err, ...) ((d)->host->error_set((err), 0, __VA_ARGS__), GS_ERROR)

static int fsd_mkdir_p(const char *path)
{
    char tmp[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return -1;
    struct stat sb;
    if (stat(tmp, &sb) != 0)
        return -1;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

static gs_status fsd_create(const gs_host *host, const void *config, void **instance, gs_error *err)
{
    const fsd_config *c = config;
    *instance = NULL;
    if (!c->dir || !c->dir[0])
        return host->error_set(err, 0, "INVALID_CONFIG", "dir must name a folder"), GS_ERROR;
    if (strlen(c->dir) > PATH_MAX - 64)
        return host->error_set(err, 0, "INVALID_CONFIG", "dir is too long"), GS_ERROR;
    struct stat sb;
    if (stat(c->dir, &sb) != 0) {
        if (errno != ENOENT || !c->create || fsd_mkdir_p(c->dir) != 0)
            return host->error_set(err, 0, "INVALID_CONFIG", "cannot use the folder '%s': %s%s",
                                   c->dir, strerror(errno),
                                   c->create ? "" : " (create is off: make the folder first)"),
                   GS_ERROR;
    } else if (!S_ISDIR(sb.st_mode)) {
        return host->error_set(err, 0, "INVALID_CONFIG", "'%s' is not a folder", c->dir), GS_ERROR;
    }
    fsd *d = host->alloc(sizeof *d);
    size_t n = strlen(c->dir);
    char *dir = host->alloc(n + 1);
    if (!d || !dir) {
        host->free(d);
        host->free(dir);
        return host->error_set(err, 0, "INTERNAL_ERROR", "out of memory"), GS_ERROR;
    }
    memcpy(dir, c->dir, n + 1);
    while (n > 1 && dir[n - 1] == '/')
        dir[--n] = 0;
    d->host = host;
    d->dir = dir;
    d->sync = c->sync;
    d->counter = 0;
    *instance = d;
    return GS_OK;
}

static void fsd_destroy(void *instance)
{
    fsd *d = instance;
    if (!d)
        return;
    const gs_host *host = d->host;
    host->free(d->dir);
    host->free(d);
}

/* A name is one plain path segment. */
static gs_status fsd_check_name(const fsd *d, const char *name, gs_error *err)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 255)
        return FSD_FAIL(d, err, "BACKUP_DESTINATION_ERROR",
                        "a piece name must be 1 to 255 bytes long");
    if (name[0] == '.')
        return FSD_FAIL(d, err, "BACKUP_DESTINATION_ERROR",
                        "the piece name '%s' starts with '.', which this destination keeps for "
                        "its temporary files",
                        name);
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p == '/' || *p < 0x20 || *p == 0x7f)
            return FSD_FAIL(d, err, "BACKUP_DESTINATION_ERROR",
                            "the piece name '%s' holds a '/' or a control character; a name is "
                            "one folder of the destination",
                            name);
    return GS_OK;
}

static void fsd_name_dir(const fsd *d, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", d->dir, name);
}

static void fsd_piece_path(const fsd *d, const char *name, uint64_t index, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s/%020llu.piece", d->dir, name, (unsigned long long)index);
}

static int fsd_sync_dir(const fsd *d, const char *dir)
{
    if (!d->sync)
        return 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Write bytes to a fresh temporary file in the name's folder (created when missing). */
static gs_status fsd_write_tmp(fsd *d, const char *name, uint64_t index, const uint8_t *bytes,
                               size_t len, char *tmp, size_t cap, gs_error *err)
{
    char dir[PATH_MAX];
    fsd_name_dir(d, name, dir, sizeof dir);
    if (mkdir(dir, 0755) == 0) {
        if (fsd_sync_dir(d, d->dir) != 0)
            return FSD_FAIL(d, err, "BACKUP_DESTINATION_ERROR", "cannot sync '%s': %s", d->dir,
                            strerror(errno));
    } else if (errno != EEXIST) {
        return FSD_FAIL(d, err, "BACKUP_DESTINATION_ERROR", "cannot create '%s': %s", dir,
                        strerror(errno));
    }
    unsigned k = __atomic_fetch_add(&d->counter, 1, __ATOMIC_RELAXED);
    snprintf(tmp, cap, "%s/.tmp-%llu-%ld-%u", dir, (unsigned long long)index, (long)getpid(), k);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return FSD_FAIL(d, err, "BACKUP_DESTINATION_ERROR", "cannot create '%s': %s", tmp,
                        strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, bytes + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : ENOSPC;
            close(fd);
            unlink(tmp);
            return FSD_FAIL(d, err, "BACKUP_DESTINATION_ERROR", "cannot write '%s': %s", tmp,
                            strerror(e));
        }
        done += (size_t)w;
    }
    if ((d->sync && fsync(fd) != 0) || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return FSD_FAIL(d, err, "BACKUP_DESTINATION_ERROR", "cannot sync '%s': %s", tmp,
                        strerror(e));
    }
    return GS_OK;
}

static gs_status fsd_write_piece(void *instance, const char *name, uint64_t index,
                                 const uint8_t *bytes, size_t len, gs_error *err)
{
    fsd *d = instance;
    if (fsd_check_name(d, name, err) != GS_OK)
        return GS_ERROR;
    char tmp[PATH_MAX], final[PATH_MAX], dir[PATH_MAX];
    if (fsd_write_tmp(d, name, index, bytes, len, tmp, sizeof tmp, err) != GS_OK)
        return GS_ERROR;
    fsd_piece_path(d, name, index, final, sizeof final);
    if (rename(tmp, final) != 0) {
        int e = errno;
        unlink(tmp);
        return FSD_FAIL(d, err, "BACKUP_DESTINATION_ERROR", "cannot rename '%s' to '%s': %s", tmp,
                        final, strerror(e));
    }
    fsd_name_dir(d, name, dir, sizeof dir);
    if (fsd_sync_dir(d, dir) != 0)
        return FSD_FAIL(d, err, "BACKUP_DESTINATION_ERROR", "cannot sync '%s': %s", dir,
                        strerror(errno));
    return GS_OK;
}

static gs_status fsd_write_piece_if_absent(void *instance, const char *name, uint64_t index,
                                           const uint8_t *bytes, size_t len, int *stored,
                                           gs_error *err)
{
    fsd *d = instance;
    *stored = 0;
    if (fsd_check_name(d, name, err) != GS_OK)
        return GS_ERROR;
    char tmp[PATH_MAX], final[PATH_MAX], dir[PATH_MAX];
    if (fsd_write_tmp(d, name, index, bytes, len, tmp, sizeof tmp, err) != GS_OK)
        return GS_ERROR;
    fsd_piece_path(d, name, index, final, sizeof final);
    int rc = link(tmp, final); /* refuses an existing name atomically */
    int e = errno;
    unlink(tmp);
    if (rc != 0 && e == EEXIST)
        return GS_OK;
    if (rc != 0)
        return FSD_FAIL(d, err, "BACKUP_DESTINATION_ERROR", "cannot link '%s': %s", final,
                        strerror(e));
    fsd_name_dir(d, name, dir, sizeof dir);
    if (fsd_sync_dir(d, dir) != 0)
        return FSD_FAIL(d, err, "BACKUP_DESTINATION_ERROR", "cannot sync '%s': %s", dir,
                        strerror(errno));
    *stored = 1;
    return GS_OK;
}

static gs_status fsd_read_piece(void *instance, const char *name, uint64_t index, uint8_t **bytes,
                                size_t *len, gs_error *err)
{
    fsd *d = instance;
    *bytes = NULL;
    *len = 0;
    if (fsd_check_name(d, name, err) != GS_OK)
        return GS_ERROR;
    char path[PATH_MAX];
    fsd_piece_path(d, name, index, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return GS_DECLINED;
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return FSD_FAIL(d, err, "BACKUP_DESTINATION_ERROR", "cannot open '%s': %s", path,
                        strerror(e));
    }
    size_t size = (size_t)sb.st_size;
    uint8_t *buf = d->host->alloc(size ? size : 1);
    if (!buf) {
        close(fd);
        return FSD_FAIL(d, err, "INTERNAL_ERROR", "out of memory for a %zu-byte piece", size);
    }
    size_t done = 0;
    while (done < size) {
        ssize_t r = read(fd, buf + done, size - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            d->host->free(buf);
            return FSD_FAIL(d, err, "BACKUP_DESTINATION_ERROR", "cannot read '%s': %s", path,
                            strerror(e));
        }
        if (r == 0)
            break; /* shrank under us: return what is there */
        done += (size_t)r;
    }
    close(fd);
    *bytes = buf;
    *len = done;
    return GS_OK;
}

/* "00000000000000000042.piece" -> 42; -1 for any other entry. */
static long long fsd_parse_entry(const char *e)
{
    size_t n = strlen(e);
    if (n != 26 || strcmp(e + 20, ".piece") != 0)
        return -1;
    unsigned long long v = 0;
    for (int i = 0; i < 20; i++) {
        if (e[i] < '0' || e[i] > '9')
            return -1;
        unsigned long long next = v * 10 + (unsigned long long)(e[i] - '0');
        if (next / 10 != v)
            return -1;
        v = next;
    }
    return v > (unsigned long long)LLONG_MAX ? -1 : (long long)v;
}

static gs_status fsd_list_pieces(void *instance, const char *name, gs_backup_piece_fn each,
                                 void *user, gs_error *err)
{
    fsd *d = instance;
    if (fsd_check_name(d, name, err) != GS_OK)
        return GS_ERROR;
    char dir[PATH_MAX];
    fsd_name_dir(d, name, dir, sizeof dir);
    DIR *dh = opendir(dir);
    if (!dh) {
        if (errno == ENOENT)
            return GS_OK; /* a name holding nothing */
        return FSD_FAIL(d, err, "BACKUP_DESTINATION_ERROR", "cannot list '%s': %s", dir,
                        strerror(errno));
    }
    struct dirent *e;
    gs_status st = GS_OK;
    for (;;) {
        errno = 0;
        e = readdir(dh);
        if (!e) {
            if (errno)
                st = FSD_FAIL(d, err, "BACKUP_DESTINATION_ERROR", "cannot list '%s': %s", dir,
                              strerror(errno));
            break;
        }
        long long index = fsd_parse_entry(e->d_name);
        if (index < 0)
            continue;
        struct stat sb;
        if (fstatat(dirfd(dh), e->d_name, &sb, 0) != 0) {
            if (errno == ENOENT)
                continue; /* replaced between the listing and the stat */
            st = FSD_FAIL(d, err, "BACKUP_DESTINATION_ERROR", "cannot stat '%s/%s': %s", dir,
                          e->d_name, strerror(errno));
            break;
        }
        if (S_ISREG(sb.st_mode))
            each(user, (uint64_t)index, (uint64_t)sb.st_size);
    }
    closedir(dh);
    return st;
}

static const gs_backup_destination_vtable fsd_vtable = {
    .struct_size = sizeof(gs_backup_destination_vtable),
    .create = fsd_create,
    .destroy = fsd_destroy,
    .write_piece = fsd_write_piece,
    .write_piece_if_absent = fsd_write_piece_if_absent,
    .read_piece = fsd_read_piece,
    .list_pieces = fsd_list_pieces,
};

static const gs_plugin_descriptor fsd_descriptor = {
    .struct_size = sizeof(gs_plugin_descriptor),
    .abi_major = GS_ABI_MAJOR,
    .abi_minor = GS_ABI_MINOR,
    .kind = GS_KIND_BACKUP_DESTINATION,
    .name = "fs",
    .version = "1.0.0",
    .build_signature = GS_BUILD_SIGNATURE,
    .vtable = &fsd_vtable,
    .config_keys = fsd_keys,
    .config_key_count = sizeof fsd_keys / sizeof fsd_keys[0],
    .config_key_size = sizeof(gs_config_key),
    .config_struct_size = sizeof(fsd_config),
    .description = "backup pieces as files in a folder: atomic writes (temporary file, fsync, "
                   "rename) and claims (link)",
};

GS_PLUGIN_DEFINE(fsd_descriptor)
