/* Unit tests for core/src/base: buffers and JSON text, the error table, SHA-256, the
 * allocator's failure injection and the worker pool. */
#include <criterion/criterion.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/sha256.h"
#include "base/workpool.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

Test(buf, json_string_escapes_and_repairs_utf8)
{
    gs_buf b;
    gs_buf_init(&b);
    const char in[] = "a\"b\\c\n\t\x01 \xc3\xa9 \xff end";
    gs_buf_json_string(&b, in, sizeof in - 1);
    cr_assert_str_eq(b.data, "\"a\\\"b\\\\c\\n\\t\\u0001 \xc3\xa9 \xef\xbf\xbd end\"");
    gs_buf_free(&b);
}

Test(buf, json_string_rejects_overlong_and_surrogates)
{
    gs_buf b;
    gs_buf_init(&b);
    const char in[] = "\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80";
    gs_buf_json_string(&b, in, sizeof in - 1);
    cr_assert_eq(strstr(b.data, "\xc0"), NULL);
    cr_assert_eq(strstr(b.data, "\xed\xa0"), NULL);
    cr_assert_neq(strstr(b.data, "\xef\xbf\xbd"), NULL);
    gs_buf_free(&b);
}

Test(buf, json_double_shortest_round_trip)
{
    const double cases[] = {0.1, 1.5, -2.25, 1e300, 5e-324, 123456789.123, 0.0};
    const char *want[] = {"0.1",           "1.5", "-2.25", "1e+300", "4.94065645841247e-324",
                          "123456789.123", "0"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gs_buf b;
        gs_buf_init(&b);
        gs_buf_json_double(&b, cases[i]);
        cr_assert_str_eq(b.data, want[i], "case %zu", i);
        cr_assert_eq(strtod(b.data, NULL), cases[i]);
        gs_buf_free(&b);
    }
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_json_double(&b, NAN);
    cr_assert_str_eq(b.data, "null");
    gs_buf_free(&b);
}

Test(buf, hex_upper_and_printf_growth)
{
    gs_buf b;
    gs_buf_init(&b);
    const uint8_t bytes[] = {0x00, 0xab, 0xff};
    gs_buf_hex_upper(&b, bytes, 3);
    cr_assert_str_eq(b.data, "00ABFF");
    gs_buf_reset(&b);
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    gs_buf_printf(&b, "%s|%d", big, 42);
    cr_assert_eq(b.len, 999 + 3);
    cr_assert_str_eq(b.data + 999, "|42");
    gs_buf_free(&b);
}

Test(buf, allocation_failure_sets_oom)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_alloc_fail_after(0, 0);
    gs_buf_puts(&b, "hello");
    cr_assert(b.oom);
    gs_buf_puts(&b, "more"); /* a no-op after oom */
    cr_assert_eq(b.len, 0);
    gs_buf_free(&b);
}

Test(error, status_table_and_envelope)
{
    cr_assert_eq(gs_error_code_status("QUERY_ERROR"), 400);
    cr_assert_eq(gs_error_code_status("IDENTITY_REQUIRED"), 401);
    cr_assert_eq(gs_error_code_status("FORBIDDEN_SQL"), 403);
    cr_assert_eq(gs_error_code_status("UNKNOWN_QUERY"), 404);
    cr_assert_eq(gs_error_code_status("STALE_PRIMARY"), 409);
    cr_assert_eq(gs_error_code_status("PAYLOAD_TOO_LARGE"), 413);
    cr_assert_eq(gs_error_code_status("WRITER_WORKER_TIMEOUT"), 500);
    cr_assert_eq(gs_error_code_status("BULK_LOAD_UNSUPPORTED"), 501);
    cr_assert_eq(gs_error_code_status("BACKUP_DESTINATION_ERROR"), 502);
    cr_assert_eq(gs_error_code_status("WRITE_OVERLOADED"), 503);
    cr_assert_eq(gs_error_code_status("SOMETHING_NEW"), 500);
    gs_error e;
    gs_error_init(&e);
    gs_error_set(&e, 418, "HOOK_ERROR", "msg \"%s\"", "q");
    cr_assert_eq(gs_error_status(&e), 418);
    gs_buf b;
    gs_buf_init(&b);
    gs_error_to_json(&e, &b);
    cr_assert_str_eq(b.data, "{\"error\":{\"code\":\"HOOK_ERROR\",\"message\":\"msg \\\"q\\\"\"}}");
    gs_buf_reset(&b);
    snprintf(e.details, sizeof e.details, "{\"primaryTerm\":\"3\"}");
    gs_error_to_json(&e, &b);
    cr_assert_neq(strstr(b.data, ",\"details\":{\"primaryTerm\":\"3\"}}}"), NULL);
    gs_buf_free(&b);
    gs_error_prefix(&e, "db '%s'", "main");
    cr_assert_str_eq(e.message, "db 'main': msg \"q\"");
}

Test(sha256, fips_vectors)
{
    char hex[65];
    gs_sha256_hex("", 0, hex);
    cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    gs_sha256_hex("abc", 3, hex);
    cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    gs_sha256_hex(m, strlen(m), hex);
    cr_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* one million 'a', fed in uneven pieces */
    gs_sha256 c;
    gs_sha256_init(&c);
    char chunk[997];
    memset(chunk, 'a', sizeof chunk);
    size_t left = 1000000;
    while (left) {
        size_t n = left < sizeof chunk ? left : sizeof chunk;
        gs_sha256_update(&c, chunk, n);
        left -= n;
    }
    uint8_t d[32];
    gs_sha256_final(&c, d);
    cr_assert_eq(d[0], 0xcd);
    cr_assert_eq(d[31], 0xd0);
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int counter;

static void bump(void *arg)
{
    pthread_mutex_lock(&mu);
    counter += *(int *)arg;
    pthread_mutex_unlock(&mu);
}

Test(workpool, runs_everything_posted_before_free)
{
    gs_error err;
    gs_error_init(&err);
    gs_workpool *p = gs_workpool_new(2, &err);
    cr_assert_not_null(p);
    static int one = 1;
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(gs_workpool_post(p, bump, &one), GS_OK);
    gs_workpool_free(p);
    cr_assert_eq(counter, 1000);
}
