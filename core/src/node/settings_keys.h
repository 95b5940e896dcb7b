/*
 * Shorthands for the core's config key tables (settings.c, settings_repl.c): a plain key, a
 * ranged number, a string with choices, a nested section or list. Compile-time data only.
 */
#ifndef GS_NODE_SETTINGS_KEYS_H
#define GS_NODE_SETTINGS_KEYS_H

#include <stddef.h>

#define KEY(n, t, def, req, st, m, help_)                                                          \
    {                                                                                              \
        .name = n, .type = t, .default_value = def, .required = req, .offset = offsetof(st, m),    \
        .help = help_                                                                              \
    }
#define KEYR(n, t, def, st, m, lo, hi, help_)                                                      \
    {                                                                                              \
        .name = n, .type = t, .default_value = def, .offset = offsetof(st, m), .help = help_,      \
        .min = lo, .max = hi                                                                       \
    }
#define KEYC(n, def, st, m, ch, help_)                                                             \
    {                                                                                              \
        .name = n, .type = GS_CFG_STRING, .default_value = def, .offset = offsetof(st, m),         \
        .help = help_, .choices = ch                                                               \
    }
#define SUB(n, t, st, m, tbl, sz, help_)                                                           \
    {                                                                                              \
        .name = n, .type = t, .offset = offsetof(st, m), .help = help_, .children = tbl,           \
        .child_count = sizeof(tbl) / sizeof(tbl[0]), .child_struct_size = sz                       \
    }

#endif
