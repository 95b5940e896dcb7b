/* The workload catalogue and the operation generator: see workload.h. */
#include "workload.h"

#include "base/error.h"

#include <math.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- value helpers ---- */

typedef struct textbuf {
    char *base;
    uint32_t *used;
    uint32_t cap;
} textbuf;

/* Append formatted text to the buffer and return it as a text value. The buffers are sized
 * for the longest value a workload writes; a cut value would still be valid text. */
static gs_bench_val text_val(textbuf *tb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static gs_bench_val text_val(textbuf *tb, const char *fmt, ...)
{
    gs_bench_val v = {.type = GS_BV_TEXT};
    char *p = tb->base + *tb->used;
    size_t room = tb->cap - *tb->used;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p, room, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= room)
        n = room ? (int)room - 1 : 0;
    v.s = p;
    v.len = (uint32_t)n;
    *tb->used += (uint32_t)n + 1;
    return v;
}

/* A text value of `prefix` followed by len random letters and digits. */
static gs_bench_val random_text(textbuf *tb, gs_rng *r, const char *prefix, size_t len)
{
    gs_bench_val v = text_val(tb, "%s", prefix);
    size_t room = tb->cap - *tb->used;
    if (len + 1 > room)
        len = room ? room - 1 : 0;
    /* The prefix's NUL is overwritten: extend the value in place. */
    char *p = (char *)v.s + v.len;
    gs_rng_text(r, p, len);
    p[len] = 0;
    v.len += (uint32_t)len;
    *tb->used += (uint32_t)len;
    return v;
}

static gs_bench_val int_val(int64_t i)
{
    gs_bench_val v = {.type = GS_BV_INT, .i = i};
    return v;
}

static gs_bench_val real_val(double r)
{
    gs_bench_val v = {.type = GS_BV_REAL, .r = r};
    return v;
}

/* Money: rounded to cents. */
static double cents(double x)
{
    return round(x * 100.0) / 100.0;
}

/* The seed of row i of table t: independent of how the rows are batched. */
static void row_rng(gs_rng *r, uint64_t seed, uint64_t table_tag, int64_t i)
{
    uint64_t st = seed ^ (table_tag * 0x9e3779b97f4a7c15ull);
    uint64_t a = gs_splitmix64(&st);
    gs_rng_seed(r, a ^ ((uint64_t)i * 0xd1b54a32d192ed03ull));
}

/* ---- users (point-select, insert, update) ---- */

static const char *const first_names[] = {"Alice", "Bob",   "Carol", "Dave", "Eve",
                                          "Frank", "Grace", "Heidi", "Ivan", "Judy"};
static const char *const last_names[] = {"Smith",  "Johnson", "Williams", "Brown",     "Jones",
                                         "Garcia", "Miller",  "Davis",    "Rodriguez", "Martinez"};

/* The five columns of user `id`, the bio's 50 random characters from r. */
static void user_values(textbuf *tb, gs_rng *r, int64_t id, gs_bench_val *v)
{
    v[0] = int_val(id);
    v[1] = text_val(tb, "%s %s", first_names[id % 10], last_names[id % 10]);
    v[2] = text_val(tb, "user%lld@example.com", (long long)id);
    v[3] = int_val(18 + id % 62);
    char prefix[48];
    snprintf(prefix, sizeof prefix, "Bio for user %lld: ", (long long)id);
    v[4] = random_text(tb, r, prefix, 50);
}

static const char *const users_cols[] = {"id", "name", "email", "age", "bio"};

static int64_t rows_n(int64_t n)
{
    return n;
}

static int64_t rows_none(int64_t n)
{
    (void)n;
    return 0;
}

static void users_row(uint64_t seed, int64_t i, gs_bench_row *out)
{
    gs_rng r;
    row_rng(&r, seed, 1, i);
    out->text_used = 0;
    textbuf tb = {out->text, &out->text_used, sizeof out->text};
    out->ncols = 5;
    user_values(&tb, &r, i + 1, out->v);
}

static const gs_bench_table users_seeded[] = {{"users", users_cols, 5, rows_n, users_row}};
static const gs_bench_table users_empty[] = {{"users", users_cols, 5, rows_none, users_row}};

static const char *const users_ddl[] = {
    "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, "
    "age INTEGER NOT NULL, bio TEXT)",
    NULL};

enum { SQL_USER_SELECT, SQL_USER_UPSERT, SQL_USER_UPDATE };
static const gs_bench_sql users_sql[] = {
    [SQL_USER_SELECT] = {"SELECT * FROM users WHERE id = ?", "SELECT * FROM users WHERE id = $1",
                         0},
    [SQL_USER_UPSERT] = {"INSERT OR REPLACE INTO users (id, name, email, age, bio) "
                         "VALUES (?, ?, ?, ?, ?)",
                         "INSERT INTO users (id, name, email, age, bio) VALUES ($1, $2, $3, $4, "
                         "$5) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, email = "
                         "EXCLUDED.email, age = EXCLUDED.age, bio = EXCLUDED.bio",
                         1},
    [SQL_USER_UPDATE] = {"UPDATE users SET age = ? WHERE id = ?",
                         "UPDATE users SET age = $1 WHERE id = $2", 1},
};

/* ---- YCSB ---- */

static const char *const ycsb_cols[] = {"ycsb_key", "field0", "field1", "field2",
                                        "field3",   "field4", "field5", "field6",
                                        "field7",   "field8", "field9"};

static void ycsb_row(uint64_t seed, int64_t i, gs_bench_row *out)
{
    gs_rng r;
    row_rng(&r, seed, 2, i);
    out->text_used = 0;
    textbuf tb = {out->text, &out->text_used, sizeof out->text};
    out->ncols = 11;
    out->v[0] = text_val(&tb, "user%lld", (long long)i);
    for (int f = 1; f <= 10; f++)
        out->v[f] = random_text(&tb, &r, "", 100);
}

static const gs_bench_table ycsb_tables[] = {{"usertable", ycsb_cols, 11, rows_n, ycsb_row}};

static const char *const ycsb_ddl[] = {
    "CREATE TABLE usertable (ycsb_key TEXT PRIMARY KEY, field0 TEXT, field1 TEXT, field2 TEXT, "
    "field3 TEXT, field4 TEXT, field5 TEXT, field6 TEXT, field7 TEXT, field8 TEXT, field9 TEXT)",
    NULL};

enum { SQL_YCSB_READ, SQL_YCSB_UPDATE };
static const gs_bench_sql ycsb_sql[] = {
    [SQL_YCSB_READ] = {"SELECT * FROM usertable WHERE ycsb_key = ?",
                       "SELECT * FROM usertable WHERE ycsb_key = $1", 0},
    [SQL_YCSB_UPDATE] = {"UPDATE usertable SET field0 = ? WHERE ycsb_key = ?",
                         "UPDATE usertable SET field0 = $1 WHERE ycsb_key = $2", 1},
};

/* ---- TPC-C-derived order entry ---- */

#define PRODUCT_CAP 1000
#define ORDER_LINES 4
#define MAX_LINE_QUANTITY 5
#define RESTOCK_QUANTITY 91 /* TPC-C 2.4.2.2: stock below the quantity is raised by 91 */
#define FIXED_TIMESTAMP "2026-01-01T00:00:00.000Z"

static const char *const customer_cols[] = {"id", "name", "email", "balance"};
static const char *const product_cols[] = {"id", "name", "price", "stock"};

static void customer_row(uint64_t seed, int64_t i, gs_bench_row *out)
{
    (void)seed;
    out->text_used = 0;
    textbuf tb = {out->text, &out->text_used, sizeof out->text};
    int64_t id = i + 1;
    out->ncols = 4;
    out->v[0] = int_val(id);
    out->v[1] = text_val(&tb, "Customer %lld", (long long)id);
    out->v[2] = text_val(&tb, "customer%lld@store.com", (long long)id);
    out->v[3] = real_val(10000.0);
}

static int64_t product_rows(int64_t n)
{
    return n < PRODUCT_CAP ? n : PRODUCT_CAP;
}

static void product_row(uint64_t seed, int64_t i, gs_bench_row *out)
{
    gs_rng r;
    row_rng(&r, seed, 3, i);
    out->text_used = 0;
    textbuf tb = {out->text, &out->text_used, sizeof out->text};
    int64_t id = i + 1;
    out->ncols = 4;
    out->v[0] = int_val(id);
    out->v[1] = text_val(&tb, "Product %lld", (long long)id);
    out->v[2] = real_val(cents(10.0 + gs_rng_fraction(&r) * 490.0));
    out->v[3] = int_val(1000);
}

static const gs_bench_table tpcc_tables[] = {
    {"customers", customer_cols, 4, rows_n, customer_row},
    {"products", product_cols, 4, product_rows, product_row},
};

static const char *const tpcc_ddl_sqlite[] = {
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, "
    "balance REAL NOT NULL)",
    "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL NOT NULL, "
    "stock INTEGER NOT NULL)",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, total REAL NOT "
    "NULL, status TEXT NOT NULL, created_at TEXT NOT NULL)",
    NULL};
static const char *const tpcc_ddl_pg[] = {
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, "
    "balance REAL NOT NULL)",
    "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL NOT NULL, "
    "stock INTEGER NOT NULL)",
    "CREATE TABLE orders (id SERIAL PRIMARY KEY, customer_id INTEGER NOT NULL, total REAL NOT "
    "NULL, status TEXT NOT NULL, created_at TEXT NOT NULL)",
    NULL};

enum { SQL_TPCC_ORDER, SQL_TPCC_STOCK, SQL_TPCC_CHARGE };
static const gs_bench_sql tpcc_sql[] = {
    [SQL_TPCC_ORDER] = {"INSERT INTO orders (customer_id, total, status, created_at) VALUES (?, "
                        "?, ?, ?)",
                        "INSERT INTO orders (customer_id, total, status, created_at) VALUES ($1, "
                        "$2, $3, $4)",
                        1},
    [SQL_TPCC_STOCK] = {"UPDATE products SET stock = CASE WHEN stock >= ? THEN stock - ? ELSE "
                        "stock - ? + ? END WHERE id = ?",
                        "UPDATE products SET stock = CASE WHEN stock >= $1 THEN stock - $2 ELSE "
                        "stock - $3 + $4 END WHERE id = $5",
                        1},
    [SQL_TPCC_CHARGE] = {"UPDATE customers SET balance = balance - ? WHERE id = ?",
                         "UPDATE customers SET balance = balance - $1 WHERE id = $2", 1},
};

/* ---- the catalogue ---- */

/* Every workload drops every benchmark table, so one database never holds a previous
 * workload's rows. */
static const char *const all_tables[] = {"users",    "usertable", "orders",
                                         "products", "customers", NULL};

static const char *const names_point[] = {"point-select"};
static const char *const names_insert[] = {"insert"};
static const char *const names_update[] = {"update"};
static const char *const names_ycsb_ru[] = {"read", "update"};
static const char *const names_ycsb_c[] = {"read"};
static const char *const names_ycsb_f[] = {"read", "read-modify-write"};
static const char *const names_tpcc[] = {"new-order", "payment"};

#define N(a) (sizeof(a) / sizeof((a)[0]))

enum { W_POINT, W_INSERT, W_UPDATE, W_YA, W_YB, W_YC, W_YF, W_TPCC };

static const gs_bench_workload catalogue[] = {
    [W_POINT] = {"point-select", "Point-select", users_ddl, users_ddl, all_tables, users_seeded, 1,
                 users_sql, N(users_sql), names_point, 1, 1},
    [W_INSERT] = {"insert", "Single-row insert", users_ddl, users_ddl, all_tables, users_empty, 1,
                  users_sql, N(users_sql), names_insert, 1, 0},
    [W_UPDATE] = {"update", "Single-row update", users_ddl, users_ddl, all_tables, users_seeded, 1,
                  users_sql, N(users_sql), names_update, 1, 1},
    [W_YA] = {"ycsb-a", "YCSB-A (50/50 read/update)", ycsb_ddl, ycsb_ddl, all_tables, ycsb_tables,
              1, ycsb_sql, N(ycsb_sql), names_ycsb_ru, 2, 1},
    [W_YB] = {"ycsb-b", "YCSB-B (95/5 read/update)", ycsb_ddl, ycsb_ddl, all_tables, ycsb_tables, 1,
              ycsb_sql, N(ycsb_sql), names_ycsb_ru, 2, 1},
    [W_YC] = {"ycsb-c", "YCSB-C (read only)", ycsb_ddl, ycsb_ddl, all_tables, ycsb_tables, 1,
              ycsb_sql, N(ycsb_sql), names_ycsb_c, 1, 1},
    [W_YF] = {"ycsb-f", "YCSB-F (read-modify-write)", ycsb_ddl, ycsb_ddl, all_tables, ycsb_tables,
              1, ycsb_sql, N(ycsb_sql), names_ycsb_f, 2, 1},
    [W_TPCC] = {"tpcc", "TPC-C-derived (new-order + payment)", tpcc_ddl_sqlite, tpcc_ddl_pg,
                all_tables, tpcc_tables, N(tpcc_tables), tpcc_sql, N(tpcc_sql), names_tpcc, 2, 0},
};

const gs_bench_workload *gs_bench_workloads(size_t *n)
{
    *n = N(catalogue);
    return catalogue;
}

const gs_bench_workload *gs_bench_workload_find(const char *name)
{
    for (size_t i = 0; i < N(catalogue); i++)
        if (strcmp(catalogue[i].name, name) == 0)
            return &catalogue[i];
    return NULL;
}

/* ---- the generator ---- */

gs_status gs_bench_gen_init(gs_bench_gen *g, const gs_bench_workload *w, int64_t rows,
                            uint64_t seed, gs_error *err)
{
    memset(g, 0, sizeof *g);
    if (rows < 1)
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "--rows must be at least 1 (got %lld)",
                            (long long)rows);
    g->w = w;
    g->rows = rows;
    gs_rng_seed(&g->rng, seed);
    if (w->zipfian)
        return gs_zipf_init(&g->zipf, (uint64_t)rows, 0.99, err);
    return GS_OK;
}

static void op_reset(gs_bench_op *op, gs_bench_op_kind kind, uint8_t name, uint8_t nstmts)
{
    op->kind = kind;
    op->name = name;
    op->nstmts = nstmts;
    op->stage = 0;
    op->text_used = 0;
}

static void ycsb_read(gs_bench_gen *g, textbuf *tb, gs_bench_stmt *st, uint64_t key)
{
    (void)g;
    st->sql = SQL_YCSB_READ;
    st->nparams = 1;
    st->p[0] = text_val(tb, "user%llu", (unsigned long long)key);
}

static void ycsb_update(gs_bench_gen *g, textbuf *tb, gs_bench_stmt *st, uint64_t key)
{
    st->sql = SQL_YCSB_UPDATE;
    st->nparams = 2;
    st->p[0] = text_val(tb, "value_%llu", (unsigned long long)gs_rng_below(&g->rng, 1000000));
    st->p[1] = text_val(tb, "user%llu", (unsigned long long)key);
}

/* YCSB: `read_share` of the operations read; the rest update (second == 0) or
 * read-modify-write (second == 1). */
static void gen_ycsb(gs_bench_gen *g, gs_bench_op *op, double read_share, int rmw)
{
    textbuf tb = {op->text, &op->text_used, sizeof op->text};
    uint64_t key = gs_zipf_next(&g->zipf, &g->rng);
    if (read_share >= 1.0 || gs_rng_fraction(&g->rng) < read_share) {
        op_reset(op, GS_BENCH_READ, 0, 1);
        ycsb_read(g, &tb, &op->st[0], key);
        return;
    }
    if (!rmw) {
        op_reset(op, GS_BENCH_WRITE, 1, 1);
        ycsb_update(g, &tb, &op->st[0], key);
        return;
    }
    op_reset(op, GS_BENCH_RMW, 1, 2);
    ycsb_read(g, &tb, &op->st[0], key);
    ycsb_update(g, &tb, &op->st[1], key);
}

static void charge(gs_bench_stmt *st, double amount, int64_t customer)
{
    st->sql = SQL_TPCC_CHARGE;
    st->nparams = 2;
    st->p[0] = real_val(amount);
    st->p[1] = int_val(customer);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void gen_tpcc(gs_bench_gen *g, gs_bench_op *op)
{
    textbuf tb = {op->text, &op->text_used, sizeof op->text};
    int64_t customer = (int64_t)gs_rng_below(&g->rng, (uint64_t)g->rows) + 1;
    if (gs_rng_fraction(&g->rng) >= 0.5) {
        op_reset(op, GS_BENCH_WRITE, 1, 1);
        charge(&op->st[0], cents(gs_rng_fraction(&g->rng) * 100.0), customer);
        return;
    }
    op_reset(op, GS_BENCH_TXN, 0, 2 + ORDER_LINES);
    double total = cents(gs_rng_fraction(&g->rng) * 500.0);
    gs_bench_stmt *st = &op->st[0];
    st->sql = SQL_TPCC_ORDER;
    st->nparams = 4;
    st->p[0] = int_val(customer);
    st->p[1] = real_val(total);
    st->p[2] = text_val(&tb, "pending");
    st->p[3] = text_val(&tb, FIXED_TIMESTAMP);
    /* Order lines in product order, as TPC-C implementations do, so two concurrent orders
     * lock products in the same order and cannot deadlock (PostgreSQL locks rows). */
    int64_t products[ORDER_LINES];
    uint64_t pc = (uint64_t)product_rows(g->rows);
    for (int l = 0; l < ORDER_LINES; l++)
        products[l] = (int64_t)gs_rng_below(&g->rng, pc) + 1;
    qsort(products, ORDER_LINES, sizeof products[0], cmp_i64);
    for (int l = 0; l < ORDER_LINES; l++) {
        int64_t qty = (int64_t)gs_rng_below(&g->rng, MAX_LINE_QUANTITY) + 1;
        st = &op->st[1 + l];
        st->sql = SQL_TPCC_STOCK;
        st->nparams = 5;
        st->p[0] = int_val(qty);
        st->p[1] = int_val(qty);
        st->p[2] = int_val(qty);
        st->p[3] = int_val(RESTOCK_QUANTITY);
        st->p[4] = int_val(products[l]);
    }
    charge(&op->st[1 + ORDER_LINES], total, customer);
}

void gs_bench_gen_next(gs_bench_gen *g, gs_bench_op *op)
{
    textbuf tb = {op->text, &op->text_used, sizeof op->text};
    switch ((int)(g->w - catalogue)) {
    case W_POINT:
        op_reset(op, GS_BENCH_READ, 0, 1);
        op->st[0].sql = SQL_USER_SELECT;
        op->st[0].nparams = 1;
        op->st[0].p[0] = int_val((int64_t)gs_zipf_next(&g->zipf, &g->rng) + 1);
        break;
    case W_INSERT: {
        op_reset(op, GS_BENCH_WRITE, 0, 1);
        op->st[0].sql = SQL_USER_UPSERT;
        op->st[0].nparams = 5;
        int64_t id = (int64_t)gs_rng_below(&g->rng, (uint64_t)g->rows) + 1;
        user_values(&tb, &g->rng, id, op->st[0].p);
        break;
    }
    case W_UPDATE:
        op_reset(op, GS_BENCH_WRITE, 0, 1);
        op->st[0].sql = SQL_USER_UPDATE;
        op->st[0].nparams = 2;
        op->st[0].p[0] = int_val((int64_t)gs_rng_below(&g->rng, 80) + 18);
        op->st[0].p[1] = int_val((int64_t)gs_zipf_next(&g->zipf, &g->rng) + 1);
        break;
    case W_YA: gen_ycsb(g, op, 0.5, 0); break;
    case W_YB: gen_ycsb(g, op, 0.95, 0); break;
    case W_YC: gen_ycsb(g, op, 1.0, 0); break;
    case W_YF: gen_ycsb(g, op, 0.5, 1); break;
    case W_TPCC: gen_tpcc(g, op); break;
    default: op_reset(op, GS_BENCH_READ, 0, 0); break;
    }
}

void gs_bench_insert_sql(const gs_bench_table *t, int pg, char *out, size_t size)
{
    size_t n = (size_t)snprintf(out, size, "INSERT INTO %s (", t->name);
    for (uint8_t c = 0; c < t->ncols && n < size; c++)
        n += (size_t)snprintf(out + n, size - n, "%s%s", c ? ", " : "", t->columns[c]);
    if (n < size)
        n += (size_t)snprintf(out + n, size - n, ") VALUES (");
    for (uint8_t c = 0; c < t->ncols && n < size; c++) {
        if (pg)
            n += (size_t)snprintf(out + n, size - n, "%s$%u", c ? ", " : "", (unsigned)c + 1);
        else
            n += (size_t)snprintf(out + n, size - n, "%s?", c ? ", " : "");
    }
    if (n < size)
        snprintf(out + n, size - n, ")");
}
