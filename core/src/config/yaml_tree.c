/*
 * YAML text -> gs_cfg_node tree, through libyaml's event parser. Refuses what a config file
 * has no use for and what would make line numbers lie: anchors and aliases, tags, several
 * documents, duplicate keys, non-scalar keys, a root that is not a map, nesting deeper
 * than GS_CFG_MAX_DEPTH. Scalar values are expanded from the environment here, so every
 * later reader sees final text.
 */
#include "config_internal.h"

#include "../base/alloc.h"
#include "../base/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <yaml.h>

/* Largest config file accepted; a config larger than this is a mistake, not a config. */
#define GS_CFG_MAX_FILE (16u * 1024u * 1024u)

typedef struct parse_ctx {
    yaml_parser_t parser;
    const char *file;
    const char *text;
    size_t len;
    gs_error *err;
    char path[256]; /* dotted path of the node being parsed, for messages */
    size_t path_len;
} parse_ctx;

static gs_status fail_at(parse_ctx *c, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static gs_status fail_at(parse_ctx *c, int line, const char *fmt, ...)
{
    char loc[300], msg[512];
    gs_cfg_location(loc, sizeof loc, c->file, line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->path_len)
        return gs_error_set(c->err, 0, GS_CFG_ERR, "%s%s: %s", loc, c->path, msg);
    return gs_error_set(c->err, 0, GS_CFG_ERR, "%s%s", loc, msg);
}

static gs_status fail_nomem(parse_ctx *c)
{
    return gs_error_set(c->err, 0, "INTERNAL_ERROR", "%s: out of memory while reading the config",
                        c->file);
}

static size_t path_push_key(parse_ctx *c, const char *key)
{
    size_t old = c->path_len;
    char ex[72];
    gs_cfg_excerpt(ex, sizeof ex, key, 64);
    int n = snprintf(c->path + old, sizeof c->path - old, "%s%s", old ? "." : "", ex);
    c->path_len =
        (n < 0 || (size_t)n >= sizeof c->path - old) ? sizeof c->path - 1 : old + (size_t)n;
    return old;
}

static size_t path_push_index(parse_ctx *c, size_t index)
{
    size_t old = c->path_len;
    int n = snprintf(c->path + old, sizeof c->path - old, "[%zu]", index);
    c->path_len =
        (n < 0 || (size_t)n >= sizeof c->path - old) ? sizeof c->path - 1 : old + (size_t)n;
    return old;
}

static void path_pop(parse_ctx *c, size_t old)
{
    c->path_len = old;
    c->path[old] = '\0';
}

/* 1-based line of byte `offset` of the input. */
static int line_of_offset(const parse_ctx *c, size_t offset)
{
    int line = 1;
    for (size_t i = 0; i < offset && i < c->len; i++)
        if (c->text[i] == '\n')
            line++;
    return line;
}

static gs_status parser_error(parse_ctx *c)
{
    yaml_parser_t *p = &c->parser;
    const char *problem = p->problem ? p->problem : "malformed YAML";
    size_t saved = c->path_len;
    c->path_len = 0; /* the syntax position is what matters, not the key path */
    gs_status st;
    switch (p->error) {
    case YAML_MEMORY_ERROR: st = fail_nomem(c); break;
    case YAML_READER_ERROR:
        st = fail_at(c, line_of_offset(c, p->problem_offset),
                     "invalid input: %s (byte offset %zu); a config file must be UTF-8 text",
                     problem, p->problem_offset);
        break;
    default:
        if (p->context)
            st =
                fail_at(c, (int)p->problem_mark.line + 1,
                        "YAML syntax error: %s at column %d (%s at line %d)", problem,
                        (int)p->problem_mark.column + 1, p->context, (int)p->context_mark.line + 1);
        else
            st = fail_at(c, (int)p->problem_mark.line + 1, "YAML syntax error: %s at column %d",
                         problem, (int)p->problem_mark.column + 1);
        break;
    }
    c->path_len = saved;
    c->path[saved] = '\0';
    return st;
}

static gs_status next_event(parse_ctx *c, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&c->parser, ev)) {
        memset(ev, 0, sizeof *ev); /* nothing to delete */
        return parser_error(c);
    }
    return GS_OK;
}

static int ev_line(const yaml_event_t *ev)
{
    return (int)ev->start_mark.line + 1;
}

static int ev_col(const yaml_event_t *ev)
{
    return (int)ev->start_mark.column + 1;
}

/* Refuse anchors, aliases and tags on a node event. */
static gs_status check_plain_node(parse_ctx *c, const yaml_event_t *ev)
{
    const yaml_char_t *anchor = NULL, *tag = NULL;
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        return fail_at(c, ev_line(ev),
                       "YAML aliases (*%s) are not supported; write the value out in full",
                       ev->data.alias.anchor ? (const char *)ev->data.alias.anchor : "");
    case YAML_SCALAR_EVENT:
        anchor = ev->data.scalar.anchor;
        tag = ev->data.scalar.tag;
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
        break;
    default: return GS_OK;
    }
    char ex[72];
    if (anchor) {
        gs_cfg_excerpt(ex, sizeof ex, (const char *)anchor, 64);
        return fail_at(c, ev_line(ev),
                       "YAML anchors (&%s) are not supported; write the value out in full", ex);
    }
    if (tag) {
        /* show the YAML spelling "!!int" rather than the expanded "tag:yaml.org,2002:int" */
        static const char core_prefix[] = "tag:yaml.org,2002:";
        const char *t = (const char *)tag;
        char shown[80];
        if (strncmp(t, core_prefix, sizeof core_prefix - 1) == 0)
            snprintf(shown, sizeof shown, "!!%s", t + sizeof core_prefix - 1);
        else
            snprintf(shown, sizeof shown, "%s", t);
        gs_cfg_excerpt(ex, sizeof ex, shown, 64);
        return fail_at(c, ev_line(ev),
                       "YAML tags (%s) are not supported; quote the value to make it a string", ex);
    }
    return GS_OK;
}

static gs_status make_scalar(parse_ctx *c, const yaml_event_t *ev, int line, int col,
                             gs_cfg_node **out)
{
    const char *raw = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    if (memchr(raw, '\0', len))
        return fail_at(c, line, "value contains a NUL character");
    gs_cfg_node *n = gs_cfg_node_new(GS_CFG_NODE_SCALAR, line, col);
    if (!n)
        return fail_nomem(c);
    int plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    n->quoted = !plain;
    n->is_null = plain && gs_cfg_text_is_null(raw, len);
    char detail[200];
    gs_cfg_env_result r = gs_cfg_env_expand(raw, len, &n->value, NULL, detail, sizeof detail);
    if (r == GS_CFG_ENV_OK) {
        *out = n;
        return GS_OK;
    }
    gs_cfg_node_free(n);
    if (r == GS_CFG_ENV_NOMEM)
        return fail_nomem(c);
    if (r == GS_CFG_ENV_UNSET)
        return fail_at(c, line,
                       "environment variable '%s' is not set; set it, or write ${%s:-default}",
                       detail, detail);
    return fail_at(c, line, "%s", detail);
}

static gs_status parse_node(parse_ctx *c, yaml_event_t *ev, int depth, int line, int col,
                            gs_cfg_node **out);

static gs_status parse_map(parse_ctx *c, gs_cfg_node *map, int depth)
{
    for (;;) {
        yaml_event_t kev;
        if (next_event(c, &kev))
            return GS_ERROR;
        if (kev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&kev);
            return GS_OK;
        }
        int kline = ev_line(&kev), kcol = ev_col(&kev);
        gs_status st = check_plain_node(c, &kev);
        if (!st && kev.type != YAML_SCALAR_EVENT)
            st = fail_at(c, kline, "map keys must be plain scalars, not a %s",
                         kev.type == YAML_MAPPING_START_EVENT ? "map" : "sequence");
        if (!st && memchr(kev.data.scalar.value, '\0', kev.data.scalar.length))
            st = fail_at(c, kline, "a key contains a NUL character");
        char *key = NULL;
        if (!st) {
            key = gs_strndup((const char *)kev.data.scalar.value, kev.data.scalar.length);
            if (!key)
                st = fail_nomem(c);
        }
        yaml_event_delete(&kev);
        if (st)
            return st;

        size_t old = path_push_key(c, key);
        const gs_cfg_node *dup = gs_cfg_get(map, key);
        if (dup) {
            char ex[72];
            gs_cfg_excerpt(ex, sizeof ex, key, 64);
            st = fail_at(c, kline, "duplicate key '%s' (first at line %d)", ex, dup->line);
            gs_free(key);
            return st;
        }
        yaml_event_t vev;
        gs_cfg_node *child = NULL;
        st = next_event(c, &vev);
        if (!st)
            st = parse_node(c, &vev, depth + 1, kline, kcol, &child);
        path_pop(c, old);
        if (st) {
            gs_free(key);
            return st;
        }
        child->key = key;
        if (gs_cfg_node_append(map, child)) {
            gs_cfg_node_free(child);
            return fail_nomem(c);
        }
    }
}

static gs_status parse_seq(parse_ctx *c, gs_cfg_node *seq, int depth)
{
    for (;;) {
        yaml_event_t iev;
        if (next_event(c, &iev))
            return GS_ERROR;
        if (iev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&iev);
            return GS_OK;
        }
        size_t old = path_push_index(c, seq->count);
        gs_cfg_node *item = NULL;
        gs_status st = parse_node(c, &iev, depth + 1, 0, 0, &item);
        path_pop(c, old);
        if (st)
            return st;
        if (gs_cfg_node_append(seq, item)) {
            gs_cfg_node_free(item);
            return fail_nomem(c);
        }
    }
}

/* Build the node that starts with event `ev` (consumed here). line/col > 0 override the
 * event's position (a map entry is reported at its key). */
static gs_status parse_node(parse_ctx *c, yaml_event_t *ev, int depth, int line, int col,
                            gs_cfg_node **out)
{
    if (line <= 0) {
        line = ev_line(ev);
        col = ev_col(ev);
    }
    gs_status st = check_plain_node(c, ev);
    if (st) {
        yaml_event_delete(ev);
        return st;
    }
    if (ev->type == YAML_SCALAR_EVENT) {
        st = make_scalar(c, ev, line, col, out);
        yaml_event_delete(ev);
        return st;
    }
    gs_cfg_node_type type = ev->type == YAML_MAPPING_START_EVENT    ? GS_CFG_NODE_MAP
                            : ev->type == YAML_SEQUENCE_START_EVENT ? GS_CFG_NODE_SEQ
                                                                    : 0;
    yaml_event_delete(ev);
    if (!type)
        return fail_at(c, line, "unexpected YAML event"); /* libyaml never gives one here */
    if (depth >= GS_CFG_MAX_DEPTH)
        return fail_at(c, line, "nested deeper than %d levels", GS_CFG_MAX_DEPTH);
    gs_cfg_node *n = gs_cfg_node_new(type, line, col);
    if (!n)
        return fail_nomem(c);
    st = type == GS_CFG_NODE_MAP ? parse_map(c, n, depth) : parse_seq(c, n, depth);
    if (st) {
        gs_cfg_node_free(n);
        return st;
    }
    *out = n;
    return GS_OK;
}

/* The document's root: a map, or an empty map for an empty file / a null document. */
static gs_status parse_stream(parse_ctx *c, gs_cfg_node **root)
{
    yaml_event_t ev;
    if (next_event(c, &ev))
        return GS_ERROR;
    yaml_event_delete(&ev); /* STREAM_START */
    if (next_event(c, &ev))
        return GS_ERROR;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev);
        *root = gs_cfg_node_new(GS_CFG_NODE_MAP, 1, 1);
        return *root ? GS_OK : fail_nomem(c);
    }
    yaml_event_delete(&ev); /* DOCUMENT_START */

    if (next_event(c, &ev))
        return GS_ERROR;
    gs_cfg_node *n = NULL;
    gs_status st;
    if (ev.type == YAML_SCALAR_EVENT && ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
        !ev.data.scalar.anchor && !ev.data.scalar.tag &&
        gs_cfg_text_is_null((const char *)ev.data.scalar.value, ev.data.scalar.length)) {
        int line = ev_line(&ev);
        yaml_event_delete(&ev);
        n = gs_cfg_node_new(GS_CFG_NODE_MAP, line, 1);
        st = n ? GS_OK : fail_nomem(c);
    } else if (ev.type == YAML_MAPPING_START_EVENT) {
        st = parse_node(c, &ev, 0, 0, 0, &n);
    } else {
        int line = ev_line(&ev);
        const char *what = ev.type == YAML_SEQUENCE_START_EVENT ? "a sequence"
                           : ev.type == YAML_SCALAR_EVENT       ? "a scalar"
                                                                : "not a map";
        st = check_plain_node(c, &ev);
        if (!st)
            st = fail_at(c, line, "the top level must be a map of keys, but it is %s", what);
        yaml_event_delete(&ev);
    }
    if (st)
        return st;

    /* DOCUMENT_END, then STREAM_END: a second document is refused. */
    for (int i = 0; i < 2; i++) {
        st = next_event(c, &ev);
        if (!st && ev.type == YAML_DOCUMENT_START_EVENT)
            st = fail_at(c, ev_line(&ev),
                         "a second YAML document ('---') starts here; a config file holds one");
        yaml_event_delete(&ev);
        if (st) {
            gs_cfg_node_free(n);
            return st;
        }
    }
    *root = n;
    return GS_OK;
}

gs_status gs_cfg_load_string(const char *text, size_t len, const char *name, gs_cfg_doc **out,
                             gs_error *err)
{
    *out = NULL;
    parse_ctx c;
    memset(&c, 0, sizeof c);
    c.file = name ? name : "<config>";
    c.text = text ? text : "";
    c.len = text ? len : 0;
    c.err = err;

    gs_cfg_doc *doc = gs_calloc(1, sizeof *doc);
    if (!doc)
        return fail_nomem(&c);
    doc->file = gs_strdup(c.file);
    if (!doc->file) {
        gs_free(doc);
        return fail_nomem(&c);
    }
    if (!yaml_parser_initialize(&c.parser)) {
        gs_cfg_free(doc);
        return fail_nomem(&c);
    }
    yaml_parser_set_input_string(&c.parser, (const unsigned char *)c.text, c.len);
    gs_status st = parse_stream(&c, &doc->root);
    yaml_parser_delete(&c.parser);
    if (st) {
        gs_cfg_free(doc);
        return st;
    }
    *out = doc;
    return GS_OK;
}

gs_status gs_cfg_load_file(const char *path, gs_cfg_doc **out, gs_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return gs_error_set(err, 0, GS_CFG_ERR, "%s: cannot open the config file: %s", path,
                            strerror(errno));
    gs_buf b;
    gs_buf_init(&b);
    char chunk[16384];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + got > GS_CFG_MAX_FILE) {
            fclose(f);
            gs_buf_free(&b);
            return gs_error_set(err, 0, GS_CFG_ERR,
                                "%s: the config file is larger than %u bytes; is it the right "
                                "file?",
                                path, GS_CFG_MAX_FILE);
        }
        gs_buf_append(&b, chunk, got);
    }
    int read_err = ferror(f);
    int saved_errno = errno;
    fclose(f);
    if (read_err) {
        gs_buf_free(&b);
        return gs_error_set(err, 0, GS_CFG_ERR, "%s: cannot read the config file: %s", path,
                            strerror(saved_errno));
    }
    if (b.oom) {
        gs_buf_free(&b);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "%s: out of memory while reading the config",
                            path);
    }
    gs_status st = gs_cfg_load_string(b.data ? b.data : "", b.len, path, out, err);
    gs_buf_free(&b);
    return st;
}
