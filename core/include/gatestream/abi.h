/*
 * gatestream plugin ABI: version macros, status codes, the error record, the plugin
 * descriptor and the typed config key table.
 *
 * Promise: a plugin built against ABI major M and any minor loads into a host of major M.
 * Every struct that crosses the ABI starts with its size (struct_size); members are only
 * ever appended, each tagged with the ABI version that added it. A reader touches a member
 * only when the struct_size it was handed is large enough to hold it (GS_HAS_MEMBER).
 *
 * Ownership: the caller owns what it passes; a callee copies what it keeps; a function
 * named *_take consumes its argument even when it fails. A buffer handed to a callback is
 * valid for that call only.
 *
 * Threads: nothing in this header runs code; see host.h and the per-kind headers.
 */
#ifndef GATESTREAM_ABI_H
#define GATESTREAM_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** ABI major: a breaking change bumps it; the loader refuses any other major. */
#define GS_ABI_MAJOR 1
/** ABI minor: appended members; the loader accepts any minor of its major. */
#define GS_ABI_MINOR 4

#define GS_STR_(x) #x
#define GS_STR(x) GS_STR_(x)

/**
 * Build signature: facts a version number cannot catch (pointer and long width, byte
 * order, the ABI major). Every plugin descriptor carries the signature it was compiled
 * with; the loader compares it to its own, byte for byte.
 * Libraries that cross the ABI: none. JSON, SQL and config values cross as text.
 */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define GS_ENDIAN_ "be"
#else
#define GS_ENDIAN_ "le"
#endif
#define GS_BUILD_SIGNATURE                                                                         \
    "gs-abi" GS_STR(GS_ABI_MAJOR) ";ptr" GS_STR(__SIZEOF_POINTER__) ";long" GS_STR(                \
        __SIZEOF_LONG__) ";size_t" GS_STR(__SIZEOF_SIZE_T__) ";" GS_ENDIAN_

/** Visibility: plugins are built with -fvisibility=hidden; only the entry is exported. */
#define GS_EXPORT __attribute__((visibility("default")))

/** True when a struct of size `size` holds member `member` of type `type`. */
#define GS_HAS_MEMBER(type, member, size)                                                          \
    ((size_t)(size) >= offsetof(type, member) + sizeof(((type *)0)->member))

/** Graded status (nginx style). Negative is an error. */
typedef int gs_status;
enum {
    GS_OK = 0,        /**< done */
    GS_ERROR = -1,    /**< failed; the gs_error says why */
    GS_AGAIN = -2,    /**< not now; retry later (e.g. a full queue) */
    GS_DECLINED = -3, /**< not mine; the next in the chain decides */
};

/**
 * An error crossing the ABI. Fixed-size so no allocation crosses with it.
 * @since 1.0
 */
typedef struct gs_error {
    uint32_t struct_size; /**< sizeof(gs_error) of the writer; set by gs_error_init */
    int status;           /**< HTTP status; 0 = derive from code (05-server table) */
    char code[64];        /**< the spec's code string (07-errors), e.g. "QUERY_ERROR" */
    char message[512];    /**< for a person: what happened and what to do */
    char details[512];    /**< optional JSON object text with machine context, or "" */
} gs_error;

/** Plugin kinds. */
typedef enum gs_plugin_kind {
    GS_KIND_CLIENT_TRANSPORT = 1,
    GS_KIND_REPL_TRANSPORT = 2,
    GS_KIND_RESOLVER = 3,
    GS_KIND_COORDINATOR = 4,
    GS_KIND_HOOK = 5,
    GS_KIND_BACKUP_DESTINATION = 6, /**< backup_destination.h @since 1.3 */
} gs_plugin_kind;

/** Config value types for a plugin's key table. */
typedef enum gs_config_type {
    GS_CFG_STRING = 1,      /**< const char * (NULL when absent and no default) */
    GS_CFG_INT = 2,         /**< int64_t, checked against min/max */
    GS_CFG_BOOL = 3,        /**< int (0 or 1); YAML true/false */
    GS_CFG_DOUBLE = 4,      /**< double, checked against min/max */
    GS_CFG_STRING_LIST = 5, /**< gs_config_strings */
    GS_CFG_SECTION = 6,     /**< a nested struct laid out at offset, keys in `children` */
    GS_CFG_LIST = 7,        /**< gs_config_list of nested structs, keys in `children` */
    GS_CFG_JSON = 8,        /**< const char *: the subtree as JSON text (free-form maps) */
} gs_config_type;

/** A list of strings in a plugin's config struct. */
typedef struct gs_config_strings {
    const char *const *items;
    size_t count;
} gs_config_strings;

/** A list of nested structs (each child_struct_size bytes) in a plugin's config struct. */
typedef struct gs_config_list {
    void *items;
    size_t count;
} gs_config_list;

/**
 * One key of a config table (Fluent Bit style). Tables are arrays; their element stride
 * is the descriptor's config_key_size, so this struct may grow.
 * @since 1.0
 */
typedef struct gs_config_key {
    const char *name;                     /**< YAML key */
    gs_config_type type;                  /**< value type */
    const char *default_value;            /**< text form of the default, or NULL for none */
    int required;                         /**< 1 = an absent key is an error */
    size_t offset;                        /**< offsetof(plugin config struct, member) */
    const char *help;                     /**< one line for --describe-plugin */
    int64_t min, max;                     /**< INT/DOUBLE bounds when min < max; else unbounded */
    const char *const *choices;           /**< STRING: NULL-terminated allowed values, or NULL */
    const struct gs_config_key *children; /**< SECTION/LIST: nested table */
    size_t child_count;                   /**< SECTION/LIST: entries in children */
    size_t child_struct_size;             /**< LIST: size of one nested struct */
} gs_config_key;

struct gs_host;

/**
 * The one exported symbol of a plugin. The host passes its ABI major; the plugin returns
 * its static descriptor (never freed), or NULL when it cannot serve that major.
 */
#define GS_PLUGIN_ENTRY_SYMBOL "gs_plugin_entry"
struct gs_plugin_descriptor;
typedef const struct gs_plugin_descriptor *(*gs_plugin_entry_fn)(uint32_t host_abi_major);

/**
 * What a plugin is. Static storage, read-only.
 * @since 1.0
 */
typedef struct gs_plugin_descriptor {
    uint32_t struct_size;             /**< sizeof(gs_plugin_descriptor) of the plugin */
    uint16_t abi_major;               /**< GS_ABI_MAJOR the plugin was built with */
    uint16_t abi_minor;               /**< GS_ABI_MINOR the plugin was built with */
    gs_plugin_kind kind;              /**< which vtable follows */
    const char *name;                 /**< short name, e.g. "http"; [a-z0-9_]+ */
    const char *version;              /**< the plugin's own version string */
    const char *build_signature;      /**< GS_BUILD_SIGNATURE as compiled */
    const void *vtable;               /**< the kind's vtable; starts with uint32_t struct_size */
    const gs_config_key *config_keys; /**< the plugin's config table (may be NULL) */
    size_t config_key_count;          /**< entries in config_keys */
    size_t config_key_size;           /**< sizeof(gs_config_key) the plugin was built with */
    size_t config_struct_size;        /**< size of the struct the core fills for create() */
    const char *description;          /**< one line for --describe-plugin */
} gs_plugin_descriptor;

/*
 * Convenience for a plugin's entry definition. The same source builds shared (the entry is
 * gs_plugin_entry, exported) or static (the build defines GS_PLUGIN_STATIC_ENTRY to a unique
 * name such as gs_plugin_entry_http, and a generated registry lists it).
 */
#ifdef GS_PLUGIN_STATIC_ENTRY
#define GS_PLUGIN_ENTRY_NAME_ GS_PLUGIN_STATIC_ENTRY
#define GS_PLUGIN_ENTRY_VIS_
#else
#define GS_PLUGIN_ENTRY_NAME_ gs_plugin_entry
#define GS_PLUGIN_ENTRY_VIS_ GS_EXPORT
#endif
#define GS_PLUGIN_DEFINE(descriptor_ident)                                                         \
    GS_PLUGIN_ENTRY_VIS_ const gs_plugin_descriptor *GS_PLUGIN_ENTRY_NAME_(                        \
        uint32_t host_abi_major);                                                                  \
    GS_PLUGIN_ENTRY_VIS_ const gs_plugin_descriptor *GS_PLUGIN_ENTRY_NAME_(                        \
        uint32_t host_abi_major)                                                                   \
    {                                                                                              \
        return host_abi_major == GS_ABI_MAJOR ? &(descriptor_ident) : NULL;                        \
    }

#ifdef __cplusplus
}
#endif
#endif
