/*
 * Fuzz target for the config module: arbitrary bytes -> gs_cfg_load_string -> gs_cfg_fill
 * against a table that uses every key type (with a nested SECTION and a LIST of structs),
 * plus a command-line override, JSON rendering and the describe text. Every path must
 * return an error or succeed without crashing, leaking or overrunning a message.
 */
#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "config/config.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct fz_limits {
    int64_t max;
    double ratio;
    gs_config_strings allow;
} fz_limits;

typedef struct fz_item {
    const char *id;
    int64_t n;
    int on;
    fz_limits limits;
    const char *meta;
} fz_item;

typedef struct fz_root {
    const char *name;
    const char *mode;
    int64_t port;
    int flag;
    double weight;
    gs_config_strings tags;
    fz_limits limits;
    gs_config_list items;
    const char *extra;
} fz_root;

static const char *const fz_modes[] = {"a", "b", "c", NULL};

static const gs_config_key fz_limits_keys[] = {
    {.name = "max",
     .type = GS_CFG_INT,
     .default_value = "10",
     .offset = offsetof(fz_limits, max),
     .min = 1,
     .max = 1000},
    {.name = "ratio",
     .type = GS_CFG_DOUBLE,
     .default_value = "0.5",
     .offset = offsetof(fz_limits, ratio),
     .min = 0,
     .max = 1},
    {.name = "allow",
     .type = GS_CFG_STRING_LIST,
     .default_value = "x,y",
     .offset = offsetof(fz_limits, allow)},
};

static const gs_config_key fz_item_keys[] = {
    {.name = "id", .type = GS_CFG_STRING, .required = 1, .offset = offsetof(fz_item, id)},
    {.name = "n", .type = GS_CFG_INT, .offset = offsetof(fz_item, n)},
    {.name = "on", .type = GS_CFG_BOOL, .default_value = "on", .offset = offsetof(fz_item, on)},
    {.name = "limits",
     .type = GS_CFG_SECTION,
     .offset = offsetof(fz_item, limits),
     .children = fz_limits_keys,
     .child_count = 3},
    {.name = "meta", .type = GS_CFG_JSON, .offset = offsetof(fz_item, meta)},
};

static const gs_config_key fz_root_keys[] = {
    {.name = "name", .type = GS_CFG_STRING, .offset = offsetof(fz_root, name)},
    {.name = "mode",
     .type = GS_CFG_STRING,
     .default_value = "a",
     .offset = offsetof(fz_root, mode),
     .choices = fz_modes},
    {.name = "port",
     .type = GS_CFG_INT,
     .default_value = "80",
     .offset = offsetof(fz_root, port),
     .min = 0,
     .max = 65535},
    {.name = "flag", .type = GS_CFG_BOOL, .offset = offsetof(fz_root, flag)},
    {.name = "weight", .type = GS_CFG_DOUBLE, .offset = offsetof(fz_root, weight)},
    {.name = "tags", .type = GS_CFG_STRING_LIST, .offset = offsetof(fz_root, tags)},
    {.name = "limits",
     .type = GS_CFG_SECTION,
     .offset = offsetof(fz_root, limits),
     .children = fz_limits_keys,
     .child_count = 3},
    {.name = "items",
     .type = GS_CFG_LIST,
     .offset = offsetof(fz_root, items),
     .children = fz_item_keys,
     .child_count = 5,
     .child_struct_size = sizeof(fz_item)},
    {.name = "extra", .type = GS_CFG_JSON, .offset = offsetof(fz_root, extra)},
};

#define FZ_COUNT (sizeof fz_root_keys / sizeof fz_root_keys[0])

/* Touch every filled value so a dangling pointer shows up under ASan. */
static size_t fz_touch(const fz_root *r)
{
    size_t sum = 0;
    if (r->name)
        sum += strlen(r->name);
    sum += strlen(r->mode);
    for (size_t i = 0; i < r->tags.count; i++)
        sum += strlen(r->tags.items[i]);
    for (size_t i = 0; i < r->limits.allow.count; i++)
        sum += strlen(r->limits.allow.items[i]);
    const fz_item *items = r->items.items;
    for (size_t i = 0; i < r->items.count; i++) {
        sum += strlen(items[i].id);
        if (items[i].meta)
            sum += strlen(items[i].meta);
    }
    if (r->extra)
        sum += strlen(r->extra);
    return sum;
}

static void fz_check_error(const gs_error *err)
{
    /* A message must be terminated inside its field and carry a known code. */
    if (memchr(err->message, '\0', sizeof err->message) == NULL ||
        (strcmp(err->code, "INVALID_CONFIG") != 0 && strcmp(err->code, "INTERNAL_ERROR") != 0))
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gs_cfg_doc *doc = NULL;
    gs_error err;
    gs_error_init(&err);
    if (gs_cfg_load_string((const char *)data, size, "fuzz.yaml", &doc, &err)) {
        fz_check_error(&err);
        return 0;
    }
    gs_buf b;
    gs_buf_init(&b);
    gs_cfg_to_json(doc->root, &b);

    fz_root r;
    gs_cfg_arena arena = {0};
    if (gs_cfg_fill(doc, doc->root, "", fz_root_keys, FZ_COUNT, sizeof(gs_config_key), &r, &arena,
                    &err) == GS_OK)
        gs_buf_printf(&b, "%zu", fz_touch(&r));
    else
        fz_check_error(&err);
    gs_cfg_arena_free(&arena);

    /* an override on top of whatever the input held, then fill again */
    if (gs_cfg_set(doc, "limits.max", "5", &err) == GS_OK &&
        gs_cfg_fill(doc, doc->root, "", fz_root_keys, FZ_COUNT, sizeof(gs_config_key), &r, &arena,
                    &err) == GS_OK)
        gs_buf_printf(&b, "%zu", fz_touch(&r));
    else
        fz_check_error(&err);
    gs_cfg_arena_free(&arena);

    gs_cfg_describe(fz_root_keys, FZ_COUNT, sizeof(gs_config_key), 2, &b);
    gs_buf_free(&b);
    gs_cfg_free(doc);
    return 0;
}
