/*
 * Migration sets: the normative checksum, validation of a list, the file-name convention
 * (`<version>_<name>.up.sql` / `.down.sql`, only the final path segment parsed) and the
 * directory loader. Declared in migrations.h; the runner lives in migrations.c.
 */
#include "migrations.h"

#include "base/alloc.h"
#include "base/error.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The largest migration file the directory loader reads. */
#define MAX_FILE_BYTES (64u << 20)

/* ---- whitespace as the reference's String.prototype.trim sees it ---- */

/* Decode the UTF-8 sequence at p (n bytes left). Returns its length (1 for an invalid byte,
 * which then counts as a code point that is not whitespace) and the code point in *cp. */
static size_t utf8_next(const unsigned char *p, size_t n, unsigned *cp)
{
    unsigned c = p[0];
    size_t len;
    unsigned v;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        len = 2;
        v = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3;
        v = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4;
        v = c & 0x07;
    } else {
        *cp = 0xfffd0000u; /* not a code point: never whitespace */
        return 1;
    }
    if (len > n) {
        *cp = 0xfffd0000u;
        return 1;
    }
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            *cp = 0xfffd0000u;
            return 1;
        }
        v = (v << 6) | (p[i] & 0x3f);
    }
    *cp = v;
    return len;
}

/* ECMAScript WhiteSpace and LineTerminator: what trim() removes. */
static int js_space(unsigned cp)
{
    switch (cp) {
    case 0x09:
    case 0x0a:
    case 0x0b:
    case 0x0c:
    case 0x0d:
    case 0x20:
    case 0xa0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202f:
    case 0x205f:
    case 0x3000:
    case 0xfeff: return 1;
    default: return cp >= 0x2000 && cp <= 0x200a;
    }
}

/* The trimmed range [*b, *e) of sql. */
static void trim_range(const char *sql, size_t len, size_t *b, size_t *e)
{
    const unsigned char *p = (const unsigned char *)sql;
    size_t i = 0, first = len, last = 0;
    while (i < len) {
        unsigned cp;
        size_t n = utf8_next(p + i, len - i, &cp);
        if (!js_space(cp)) {
            if (first == len)
                first = i;
            last = i + n;
        }
        i += n;
    }
    if (first == len) {
        *b = *e = 0;
        return;
    }
    *b = first;
    *e = last;
}

static int blank(const char *sql, size_t len)
{
    size_t b, e;
    trim_range(sql, len, &b, &e);
    return b == e;
}

/* ---- checksum ---- */

void gs_migration_checksum(const char *sql, size_t len, char out[GS_MIGRATION_CHECKSUM_SIZE])
{
    uint64_t h = 0xcbf29ce484222325ULL;
    const uint64_t prime = 0x100000001b3ULL;
    size_t b = 0, e = 0;
    if (sql)
        trim_range(sql, len, &b, &e);
    for (size_t i = b; i < e; i++) {
        unsigned char c = (unsigned char)sql[i];
        if (c == '\r') { /* CRLF and a lone CR both become LF */
            c = '\n';
            if (i + 1 < e && sql[i + 1] == '\n')
                i++;
        }
        h ^= c;
        h *= prime;
    }
    snprintf(out, GS_MIGRATION_CHECKSUM_SIZE, "%016llx", (unsigned long long)h);
}

/* ---- validation and building ---- */

/* A definition with lengths (file contents need not be NUL-terminated). */
typedef struct mdef {
    int64_t version;
    const char *name;
    size_t name_len;
    const char *up;
    size_t up_len;
    const char *down; /* NULL: none */
    size_t down_len;
    int64_t through;
} mdef;

static int word_name(const char *s, size_t len)
{
    if (!s || len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return 0;
    }
    return 1;
}

/* Copy `len` bytes of a name for a message, control characters shown as '?'. */
static void shown(char *dst, size_t cap, const char *s, size_t len)
{
    size_t k = 0;
    for (size_t i = 0; s && i < len && k + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[k++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    dst[k] = '\0';
}

static gs_status verr(gs_error *err, const char *code, int64_t version, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static gs_status verr(gs_error *err, const char *code, int64_t version, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gs_error_setv(err, 0, code, fmt, ap);
    va_end(ap);
    if (err)
        snprintf(err->details, sizeof err->details, "{\"version\":%lld}", (long long)version);
    return GS_ERROR;
}

static int cmp_migration(const void *a, const void *b)
{
    const gs_migration *x = a, *y = b;
    return x->version < y->version ? -1 : x->version > y->version;
}

/* The baseline rules over a sorted set. */
static gs_status check_baselines(const gs_migration_set *set, gs_error *err)
{
    for (size_t i = 0; i < set->count; i++) {
        const gs_migration *m = &set->items[i];
        if (m->baseline_through == 0)
            continue;
        if (m->baseline_through < 1)
            return verr(err, "MIGRATION_VALIDATION_ERROR", m->version,
                        "baseline migration %lld_%s has an invalid through version %lld; it "
                        "must be at least 1",
                        (long long)m->version, m->name, (long long)m->baseline_through);
        if (m->baseline_through >= m->version)
            return verr(err, "MIGRATION_VALIDATION_ERROR", m->version,
                        "baseline migration %lld_%s must have a version above the history it "
                        "replaces (through %lld)",
                        (long long)m->version, m->name, (long long)m->baseline_through);
        for (size_t j = 0; j < set->count; j++) {
            const gs_migration *o = &set->items[j];
            if (o != m && o->version > m->baseline_through && o->version < m->version)
                return verr(err, "MIGRATION_VALIDATION_ERROR", o->version,
                            "migration %lld_%s lies inside the range baseline %lld_%s replaces "
                            "(above %lld, below %lld); renumber it above %lld",
                            (long long)o->version, o->name, (long long)m->version, m->name,
                            (long long)m->baseline_through, (long long)m->version,
                            (long long)m->version);
        }
    }
    return GS_OK;
}

static gs_status build(const mdef *defs, size_t count, gs_migration_set **out, gs_error *err)
{
    *out = NULL;
    char nm[128];
    for (size_t i = 0; i < count; i++) {
        const mdef *d = &defs[i];
        shown(nm, sizeof nm, d->name, d->name_len);
        if (d->version < 1 || d->version > GS_MIGRATION_VERSION_MAX)
            return verr(err, "MIGRATION_VALIDATION_ERROR", d->version > 0 ? d->version : 0,
                        "migration '%s' has version %lld; versions are integers from 1 to %lld "
                        "so they mirror to PRAGMA user_version",
                        nm, (long long)d->version, GS_MIGRATION_VERSION_MAX);
        if (!word_name(d->name, d->name_len))
            return verr(err, "MIGRATION_VALIDATION_ERROR", d->version,
                        "migration %lld has an invalid name '%s'; names match ^\\w+$ (letters, "
                        "digits and underscores)",
                        (long long)d->version, nm);
        if (!d->up || blank(d->up, d->up_len))
            return verr(err, "MIGRATION_VALIDATION_ERROR", d->version,
                        "migration %lld_%s has empty up SQL", (long long)d->version, nm);
        if (d->down && blank(d->down, d->down_len))
            return verr(err, "MIGRATION_VALIDATION_ERROR", d->version,
                        "migration %lld_%s has empty down SQL; leave it out instead",
                        (long long)d->version, nm);
        if (memchr(d->up, '\0', d->up_len) || (d->down && memchr(d->down, '\0', d->down_len)))
            return verr(err, "MIGRATION_VALIDATION_ERROR", d->version,
                        "migration %lld_%s holds a NUL byte in its SQL", (long long)d->version, nm);
    }
    gs_migration_set *set = gs_calloc(1, sizeof *set);
    if (!set)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory building a migration set");
    set->items = gs_calloc(count ? count : 1, sizeof *set->items);
    if (!set->items) {
        gs_free(set);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory building a migration set");
    }
    for (size_t i = 0; i < count; i++) {
        const mdef *d = &defs[i];
        gs_migration *m = &set->items[set->count++];
        m->version = d->version;
        m->baseline_through = d->through;
        m->name = gs_strndup(d->name, d->name_len);
        m->up = gs_strndup(d->up, d->up_len);
        m->down = d->down ? gs_strndup(d->down, d->down_len) : NULL;
        if (!m->name || !m->up || (d->down && !m->down)) {
            gs_migration_set_free(set);
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory building a migration set");
        }
        gs_migration_checksum(m->up, d->up_len, m->checksum);
    }
    qsort(set->items, set->count, sizeof *set->items, cmp_migration);
    for (size_t i = 1; i < set->count; i++) {
        const gs_migration *a = &set->items[i - 1], *b = &set->items[i];
        if (a->version == b->version) {
            verr(err, "MIGRATION_DUPLICATE_VERSION", b->version,
                 "two migrations have version %lld: '%s' and '%s'", (long long)b->version, a->name,
                 b->name);
            gs_migration_set_free(set);
            return GS_ERROR;
        }
    }
    if (check_baselines(set, err) != GS_OK) {
        gs_migration_set_free(set);
        return GS_ERROR;
    }
    *out = set;
    return GS_OK;
}

gs_status gs_migration_set_new(const gs_migration_def *defs, size_t count, gs_migration_set **out,
                               gs_error *err)
{
    *out = NULL;
    if (count && !defs)
        return gs_error_set(err, 0, "MIGRATION_VALIDATION_ERROR", "no migrations given");
    mdef *md = gs_calloc(count ? count : 1, sizeof *md);
    if (!md)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory building a migration set");
    for (size_t i = 0; i < count; i++) {
        md[i].version = defs[i].version;
        md[i].name = defs[i].name;
        md[i].name_len = defs[i].name ? strlen(defs[i].name) : 0;
        md[i].up = defs[i].up;
        md[i].up_len = defs[i].up ? strlen(defs[i].up) : 0;
        md[i].down = defs[i].down;
        md[i].down_len = defs[i].down ? strlen(defs[i].down) : 0;
        md[i].through = defs[i].baseline_through;
    }
    gs_status st = build(md, count, out, err);
    gs_free(md);
    return st;
}

gs_status gs_migration_set_baseline(gs_migration_set *set, int64_t version, int64_t through,
                                    gs_error *err)
{
    for (size_t i = 0; set && i < set->count; i++) {
        gs_migration *m = &set->items[i];
        if (m->version != version)
            continue;
        if (through < 1)
            return verr(err, "MIGRATION_VALIDATION_ERROR", version,
                        "baseline through %lld: it must be at least 1", (long long)through);
        int64_t old = m->baseline_through;
        m->baseline_through = through;
        if (check_baselines(set, err) != GS_OK) {
            m->baseline_through = old;
            return GS_ERROR;
        }
        return GS_OK;
    }
    return verr(err, "MIGRATION_VALIDATION_ERROR", version,
                "baseline version %lld is not a migration of the set", (long long)version);
}

gs_migration_set *gs_migration_set_copy(const gs_migration_set *set)
{
    if (!set)
        return NULL;
    gs_migration_set *c = gs_calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->items = gs_calloc(set->count ? set->count : 1, sizeof *c->items);
    if (!c->items) {
        gs_free(c);
        return NULL;
    }
    for (size_t i = 0; i < set->count; i++) {
        const gs_migration *m = &set->items[i];
        gs_migration *d = &c->items[c->count++];
        *d = *m;
        d->name = gs_strdup(m->name);
        d->up = gs_strdup(m->up);
        d->down = m->down ? gs_strdup(m->down) : NULL;
        if (!d->name || !d->up || (m->down && !d->down)) {
            gs_migration_set_free(c);
            return NULL;
        }
    }
    return c;
}

void gs_migration_set_free(gs_migration_set *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->count; i++) {
        gs_free(set->items[i].name);
        gs_free(set->items[i].up);
        gs_free(set->items[i].down);
    }
    gs_free(set->items);
    gs_free(set);
}

/* ---- file names ---- */

typedef struct parsed_file {
    int64_t version;
    const char *name; /* inside the file name */
    size_t name_len;
    int down;
    const gs_migration_file *file;
} parsed_file;

/* The final path segment of a file name ('/' or '\\' separated). */
static const char *last_segment(const char *path)
{
    const char *s = path;
    for (const char *p = path; *p; p++)
        if (*p == '/' || *p == '\\')
            s = p + 1;
    return s;
}

/* ^(\d+)_(\w+)\.(up|down)\.sql$ on the final segment. Returns 0 when the name does not
 * match, -1 when it matches but the version is out of range, 1 on success. */
static int parse_name(const char *path, parsed_file *pf)
{
    const char *s = last_segment(path);
    size_t len = strlen(s);
    const char *p = s;
    int64_t v = 0;
    int overflow = 0;
    while (*p >= '0' && *p <= '9') {
        if (v > GS_MIGRATION_VERSION_MAX)
            overflow = 1;
        else
            v = v * 10 + (*p - '0');
        p++;
    }
    if (p == s || *p != '_')
        return 0;
    p++;
    size_t rest = len - (size_t)(p - s);
    int down;
    size_t suffix;
    if (rest > 7 && strcmp(s + len - 7, ".up.sql") == 0) {
        down = 0;
        suffix = 7;
    } else if (rest > 9 && strcmp(s + len - 9, ".down.sql") == 0) {
        down = 1;
        suffix = 9;
    } else {
        return 0;
    }
    size_t name_len = rest - suffix;
    if (!word_name(p, name_len))
        return 0;
    pf->version = overflow ? GS_MIGRATION_VERSION_MAX + 1 : v;
    pf->name = p;
    pf->name_len = name_len;
    pf->down = down;
    if (overflow || v < 1 || v > GS_MIGRATION_VERSION_MAX)
        return -1;
    return 1;
}

static int cmp_parsed(const void *a, const void *b)
{
    const parsed_file *x = a, *y = b;
    if (x->version != y->version)
        return x->version < y->version ? -1 : 1;
    return x->down - y->down;
}

gs_status gs_migrations_from_files(const gs_migration_file *files, size_t count,
                                   gs_migration_set **out, gs_error *err)
{
    *out = NULL;
    if (count && !files)
        return gs_error_set(err, 0, "MIGRATION_VALIDATION_ERROR", "no migration files given");
    parsed_file *pf = gs_calloc(count ? count : 1, sizeof *pf);
    mdef *md = gs_calloc(count ? count : 1, sizeof *md);
    gs_status st = GS_ERROR;
    char nm[256];
    if (!pf || !md) {
        gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory reading migration files");
        goto done;
    }
    for (size_t i = 0; i < count; i++) {
        const gs_migration_file *f = &files[i];
        shown(nm, sizeof nm, f->name, f->name ? strlen(f->name) : 0);
        int r = f->name ? parse_name(f->name, &pf[i]) : 0;
        if (r == 0) {
            verr(err, "MIGRATION_VALIDATION_ERROR", 0,
                 "migration file '%s' does not follow <version>_<name>.up.sql or "
                 "<version>_<name>.down.sql (name: letters, digits, underscores)",
                 nm);
            goto done;
        }
        if (r < 0) {
            verr(err, "MIGRATION_VALIDATION_ERROR", 0,
                 "migration file '%s': the version must be from 1 to %lld", nm,
                 GS_MIGRATION_VERSION_MAX);
            goto done;
        }
        pf[i].file = f;
        if (!f->sql || blank(f->sql, f->len)) {
            verr(err, "MIGRATION_VALIDATION_ERROR", pf[i].version, "migration file '%s' is empty",
                 nm);
            goto done;
        }
        if (memchr(f->sql, '\0', f->len)) {
            verr(err, "MIGRATION_VALIDATION_ERROR", pf[i].version,
                 "migration file '%s' holds a NUL byte; it is not SQL text", nm);
            goto done;
        }
    }
    qsort(pf, count, sizeof *pf, cmp_parsed);
    size_t n = 0;
    for (size_t i = 0; i < count;) {
        size_t j = i;
        const parsed_file *up = NULL, *down = NULL;
        for (; j < count && pf[j].version == pf[i].version; j++) {
            const parsed_file *x = &pf[j];
            if (x->name_len != pf[i].name_len || memcmp(x->name, pf[i].name, x->name_len) != 0) {
                char a[128], b[128];
                shown(a, sizeof a, pf[i].name, pf[i].name_len);
                shown(b, sizeof b, x->name, x->name_len);
                verr(err, "MIGRATION_DUPLICATE_VERSION", x->version,
                     "two migrations have version %lld: '%s' and '%s'", (long long)x->version, a,
                     b);
                goto done;
            }
            const parsed_file **slot = x->down ? &down : &up;
            if (*slot) {
                shown(nm, sizeof nm, x->file->name, strlen(x->file->name));
                verr(err, "MIGRATION_DUPLICATE_VERSION", x->version,
                     "version %lld has two %s files (the second is '%s')", (long long)x->version,
                     x->down ? "down" : "up", nm);
                goto done;
            }
            *slot = x;
        }
        if (!up) {
            shown(nm, sizeof nm, pf[i].name, pf[i].name_len);
            verr(err, "MIGRATION_VALIDATION_ERROR", pf[i].version,
                 "migration %lld_%s has a down file but no .up.sql file", (long long)pf[i].version,
                 nm);
            goto done;
        }
        mdef *d = &md[n++];
        d->version = up->version;
        d->name = up->name;
        d->name_len = up->name_len;
        d->up = up->file->sql;
        d->up_len = up->file->len;
        d->down = down ? down->file->sql : NULL;
        d->down_len = down ? down->file->len : 0;
        i = j;
    }
    st = build(md, n, out, err);
done:
    gs_free(pf);
    gs_free(md);
    return st;
}

/* ---- the directory loader ---- */

static gs_status path_safe(const char *dir, gs_error *err)
{
    if (!dir || !dir[0])
        return gs_error_set(err, 0, "MIGRATION_VALIDATION_ERROR", "no migrations directory given");
    for (const unsigned char *p = (const unsigned char *)dir; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return gs_error_set(err, 0, "MIGRATION_VALIDATION_ERROR",
                                "the migrations directory path holds a control character");
    const char *seg = dir;
    for (const char *p = dir;; p++) {
        if (*p == '/' || *p == '\\' || *p == '\0') {
            if (p - seg == 2 && seg[0] == '.' && seg[1] == '.')
                return gs_error_set(err, 0, "MIGRATION_VALIDATION_ERROR",
                                    "the migrations directory path '%s' holds a '..' segment; "
                                    "give a path without parent references",
                                    dir);
            if (!*p)
                break;
            seg = p + 1;
        }
    }
    return GS_OK;
}

static gs_status read_file(const char *path, char **data, size_t *len, gs_error *err)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return gs_error_set(err, 0, "MIGRATION_VALIDATION_ERROR",
                            "cannot read migration file '%s': %s", path, strerror(errno));
    gs_status st = GS_OK;
    size_t cap = 4096, n = 0;
    char *buf = gs_malloc(cap + 1);
    while (buf) {
        if (n == cap) {
            if (cap >= MAX_FILE_BYTES) {
                st = gs_error_set(err, 0, "MIGRATION_VALIDATION_ERROR",
                                  "migration file '%s' is larger than %u MiB", path,
                                  MAX_FILE_BYTES >> 20);
                break;
            }
            char *nb = gs_realloc(buf, cap * 2 + 1);
            if (!nb) {
                gs_free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f))
                st = gs_error_set(err, 0, "MIGRATION_VALIDATION_ERROR",
                                  "cannot read migration file '%s': %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (!buf)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory reading '%s'", path);
    if (st != GS_OK) {
        gs_free(buf);
        return GS_ERROR;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return GS_OK;
}

gs_status gs_migrations_load_dir(const char *dir, gs_migration_set **out, gs_error *err)
{
    *out = NULL;
    if (path_safe(dir, err) != GS_OK)
        return GS_ERROR;
    DIR *d = opendir(dir);
    if (!d)
        return gs_error_set(err, 0, "MIGRATION_VALIDATION_ERROR",
                            "cannot open the migrations directory '%s': %s", dir, strerror(errno));
    gs_migration_file *files = NULL;
    char **names = NULL;
    size_t n = 0, cap = 0;
    gs_status st = GS_OK;
    struct dirent *de;
    errno = 0;
    while (st == GS_OK && (de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        size_t len = strlen(nm);
        /* hidden files (editor and VCS leftovers) and anything not .sql are not migrations */
        if (nm[0] == '.' || len < 4 || strcmp(nm + len - 4, ".sql") != 0)
            continue;
        size_t plen = strlen(dir) + 1 + len + 1;
        char *path = gs_malloc(plen);
        if (!path) {
            st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory listing '%s'", dir);
            break;
        }
        snprintf(path, plen, "%s/%s", dir, nm);
        struct stat sb;
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            gs_free(path);
            continue; /* a directory or a dangling link named *.sql */
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            gs_migration_file *nf = gs_realloc(files, nc * sizeof *nf);
            if (nf)
                files = nf;
            char **nn = nf ? gs_realloc(names, nc * sizeof *nn) : NULL;
            if (nn)
                names = nn;
            if (!nf || !nn) {
                gs_free(path);
                st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory listing '%s'", dir);
                break;
            }
            cap = nc;
        }
        char *data;
        size_t dlen;
        if (read_file(path, &data, &dlen, err) != GS_OK) {
            gs_free(path);
            st = GS_ERROR;
            break;
        }
        gs_free(path);
        names[n] = gs_strdup(nm);
        if (!names[n]) {
            gs_free(data);
            st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory listing '%s'", dir);
            break;
        }
        files[n].name = names[n];
        files[n].sql = data;
        files[n].len = dlen;
        n++;
    }
    closedir(d);
    if (st == GS_OK) {
        st = gs_migrations_from_files(files, n, out, err);
        if (st != GS_OK)
            gs_error_prefix(err, "migrations directory '%s'", dir);
    }
    for (size_t i = 0; i < n; i++) {
        gs_free(names[i]);
        gs_free((char *)files[i].sql);
    }
    gs_free(names);
    gs_free(files);
    return st;
}
