/*
 * The benchmark's workloads (after the reference implementation's benchmark catalogue):
 *
 *   point-select  users(id INTEGER PRIMARY KEY, name, email, age, bio), N rows;
 *                 SELECT * FROM users WHERE id = ?            key Zipfian(0.99) over N
 *   insert        users, empty at the start; INSERT OR REPLACE of a whole row with a uniform
 *                 id in [1, N] (PostgreSQL: INSERT ... ON CONFLICT (id) DO UPDATE every column)
 *   update        users, N rows; UPDATE users SET age = ? WHERE id = ?    key Zipfian(0.99)
 *   ycsb-a/b/c/f  usertable(ycsb_key TEXT PRIMARY KEY, field0..field9 TEXT), N rows of ten
 *                 100-character fields; read = SELECT * by key, update = SET field0 = ?;
 *                 A 50/50 read/update, B 95/5, C read only, F 50% read / 50% read-modify-write
 *                 (the read, then the update of the same key); keys Zipfian(0.99)
 *   tpcc          TPC-C-derived order entry: customers (N rows), products (min(N, 1000)),
 *                 orders (empty). 50% new-order: one transaction of the order INSERT, four
 *                 stock UPDATEs (restock by 91 below the ordered quantity, as TPC-C 2.4.2.2)
 *                 and the customer's balance UPDATE; 50% payment: the balance UPDATE alone.
 *                 Customers and products uniform.
 *
 * Every engine gets the same SQL (a PostgreSQL dialect where the syntax differs), the same
 * rows (row i of a table is a pure function of the seed and i, whatever the batching) and,
 * for one seed, the same sequence of operations.
 *
 * Ownership: the catalogue is static, read-only data. Operations and rows are written into
 * caller-owned structs whose text values point into the struct's own text buffer.
 * Threads: every function is reentrant; a gs_bench_gen belongs to one thread.
 */
#ifndef GS_BENCH_WORKLOAD_H
#define GS_BENCH_WORKLOAD_H

#include "rng.h"

#include <gatestream/abi.h>

#include <stddef.h>
#include <stdint.h>

/** A parameter or column value. Text points into the owning op's or row's buffer. */
typedef enum gs_bench_vtype {
    GS_BV_NULL = 0,
    GS_BV_INT,
    GS_BV_REAL,
    GS_BV_TEXT,
} gs_bench_vtype;

typedef struct gs_bench_val {
    gs_bench_vtype type;
    int64_t i;
    double r;
    const char *s;
    uint32_t len;
} gs_bench_val;

#define GS_BENCH_MAX_PARAMS 11
#define GS_BENCH_MAX_STMTS 6
#define GS_BENCH_OP_TEXT 512
#define GS_BENCH_ROW_TEXT 1200

/** A statement of the workload: its SQL in the SQLite dialect (also sent to gatestream) and
 * in PostgreSQL's ($1, $2 ...), and whether it writes. */
typedef struct gs_bench_sql {
    const char *sqlite;
    const char *pg;
    int write;
} gs_bench_sql;

/** One statement to run: an index into the workload's sql table and its parameters. */
typedef struct gs_bench_stmt {
    uint8_t sql;
    uint8_t nparams;
    gs_bench_val p[GS_BENCH_MAX_PARAMS];
} gs_bench_stmt;

/** How the statements of an operation run. */
typedef enum gs_bench_op_kind {
    GS_BENCH_READ = 1, /**< one read statement */
    GS_BENCH_WRITE,    /**< one write statement, its own transaction */
    GS_BENCH_RMW,      /**< a read, then (after it answered) a write: two requests */
    GS_BENCH_TXN,      /**< every statement in one atomic transaction */
} gs_bench_op_kind;

/** One request of the generator, handed to a target. */
typedef struct gs_bench_op {
    gs_bench_op_kind kind;
    uint8_t nstmts;
    uint8_t name;  /**< index into the workload's op_names (per-operation counts) */
    uint8_t stage; /**< target scratch: the statement or step running */
    gs_bench_stmt st[GS_BENCH_MAX_STMTS];
    char text[GS_BENCH_OP_TEXT];
    uint32_t text_used;
    int64_t intended_ns; /**< when the generator meant to send it (CLOCK_MONOTONIC) */
    int64_t issued_ns;   /**< when it was handed to the target */
    void *target_data;   /**< target scratch */
    void *target_aux;    /**< target scratch */
} gs_bench_op;

/** One seed row of a table. */
typedef struct gs_bench_row {
    uint8_t ncols;
    gs_bench_val v[GS_BENCH_MAX_PARAMS];
    char text[GS_BENCH_ROW_TEXT];
    uint32_t text_used;
} gs_bench_row;

typedef struct gs_bench_table {
    const char *name;
    const char *const *columns;
    uint8_t ncols;
    /** Rows seeded for --rows N. */
    int64_t (*rows)(int64_t n);
    /** Fill row i (0-based) from the seed. */
    void (*row)(uint64_t seed, int64_t i, gs_bench_row *out);
} gs_bench_table;

typedef struct gs_bench_workload {
    const char *name;
    const char *title;             /**< for tables: "YCSB-A (50/50 read/update)" */
    const char *const *ddl_sqlite; /**< NULL-terminated CREATE statements */
    const char *const *ddl_pg;
    const char *const *drop; /**< tables to drop before a run, NULL-terminated */
    const gs_bench_table *tables;
    size_t ntables;
    const gs_bench_sql *sql;
    size_t nsql;
    const char *const *op_names;
    size_t nops;
    /** Whether the keys of the operations are Zipfian (the generator prepares a chooser). */
    int zipfian;
} gs_bench_workload;

/** Every workload, in report order; *n gets the count. */
const gs_bench_workload *gs_bench_workloads(size_t *n);
/** A workload by name, or NULL. */
const gs_bench_workload *gs_bench_workload_find(const char *name);

/** The per-thread operation generator of one workload over n rows. */
typedef struct gs_bench_gen {
    const gs_bench_workload *w;
    int64_t rows;
    gs_rng rng;
    gs_zipf zipf;
} gs_bench_gen;

/** Prepare a generator (the Zipfian sum costs O(rows) once). */
gs_status gs_bench_gen_init(gs_bench_gen *g, const gs_bench_workload *w, int64_t rows,
                            uint64_t seed, gs_error *err);
/** Draw the next operation into op (kind, statements, parameters; the timing fields and
 * target scratch are left as they are). */
void gs_bench_gen_next(gs_bench_gen *g, gs_bench_op *op);

/** The INSERT statement seeding table t ("?" placeholders, or "$n" when pg). */
void gs_bench_insert_sql(const gs_bench_table *t, int pg, char *out, size_t size);

#endif
