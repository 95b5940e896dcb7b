/*
 * gatestream-cli: an interactive SQL shell for a remote gatestream node, over
 * libgatestream-client. Interactive on a terminal (GNU readline, history in
 * ~/.gatestream_history, statements end with ';', Ctrl-C clears the line); a script from
 * stdin or -f FILE runs non-interactively and exits 1 at the first error. The token in
 * GATESTREAM_TOKEN is sent as "Authorization: Bearer".
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <readline/history.h>
#include <readline/readline.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    if (sig_pipe[1] >= 0) {
        ssize_t r = write(sig_pipe[1], "x", 1);
        (void)r;
    }
    errno = saved;
}

static void drain_signals(void)
{
    char buf[64];
    while (read(sig_pipe[0], buf, sizeof buf) > 0)
        ;
}

void cli_wait_interrupt_wake(void)
{
    on_signal(0);
}

void cli_wait_interrupt(void)
{
    drain_signals();
    struct pollfd p = {.fd = sig_pipe[0], .events = POLLIN};
    while (poll(&p, 1, -1) < 0 && errno == EINTR)
        ;
    drain_signals();
}

static void usage(FILE *f)
{
    fprintf(f, "usage: gatestream-cli [--url URL] [--db ID] [-f FILE] [--mode table|json|csv]\n"
               "                      [--http] [--timeout MS]\n"
               "  --url URL       the server (default http://127.0.0.1:9876)\n"
               "  --db ID         the database (default main)\n"
               "  -f FILE         run the statements in FILE, then exit (1 at the first error)\n"
               "  --mode MODE     output: table (default), json or csv\n"
               "  --http          use HTTP requests instead of one WebSocket (.subscribe needs\n"
               "                  the WebSocket)\n"
               "  --timeout MS    per-statement timeout (default 30000, 0 waits indefinitely)\n"
               "Without -f, statements come from stdin: interactively on a terminal, as a\n"
               "script otherwise. GATESTREAM_TOKEN is sent as 'Authorization: Bearer <token>'.\n");
}

/* ---- statement accumulation, shared by both modes ---- */

typedef struct pending {
    char *buf;
    size_t len, cap;
} pending;

static void pending_add(pending *p, const char *line)
{
    size_t n = strlen(line);
    if (p->len + n + 2 > p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 1024;
        while (cap < p->len + n + 2)
            cap *= 2;
        char *b = realloc(p->buf, cap);
        if (!b)
            return;
        p->buf = b;
        p->cap = cap;
    }
    memcpy(p->buf + p->len, line, n);
    p->len += n;
    p->buf[p->len++] = '\n';
    p->buf[p->len] = '\0';
}

static void pending_clear(pending *p)
{
    p->len = 0;
    if (p->buf)
        p->buf[0] = '\0';
}

/* Run every complete statement held; returns 1 at the first error when stop_on_error. */
static int run_complete(cli *c, pending *p, int stop_on_error)
{
    int failed = 0;
    for (;;) {
        size_t end = cli_statement_end(p->buf ? p->buf : "", p->len);
        if (!end)
            break;
        char save = p->buf[end];
        p->buf[end] = '\0';
        int rc = cli_blank(p->buf) ? 0 : cli_run_sql(c, p->buf);
        p->buf[end] = save;
        memmove(p->buf, p->buf + end, p->len - end + 1);
        p->len -= end;
        if (rc) {
            failed = 1;
            if (stop_on_error)
                return 1;
        }
    }
    if (cli_blank(p->buf ? p->buf : ""))
        pending_clear(p);
    return failed;
}

/* One input line. Returns 0 go on, 1 error, 2 quit. */
static int feed_line(cli *c, pending *p, const char *line, int stop_on_error)
{
    const char *t = line;
    while (*t == ' ' || *t == '\t')
        t++;
    if (p->len == 0 && *t == '.')
        return cli_dot_command(c, t);
    pending_add(p, line);
    return run_complete(c, p, stop_on_error);
}

/* ---- script mode ---- */

static int run_script(cli *c, FILE *in)
{
    pending p = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while ((n = getline(&line, &cap, in)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        int r = feed_line(c, &p, line, 1);
        if (r == 2)
            break;
        if (r) {
            rc = 1;
            break;
        }
    }
    /* A last statement without its ';' still runs. */
    if (!rc && p.len && !cli_blank(p.buf))
        rc = cli_run_sql(c, p.buf);
    free(line);
    free(p.buf);
    return rc;
}

/* ---- interactive mode (readline's callback interface, so Ctrl-C is ours) ---- */

static cli *the_cli;
static pending the_pending;
static int quit_requested;

static void set_prompt(void)
{
    rl_set_prompt(the_pending.len ? "   ...> " : "gatestream> ");
}

/* Ctrl-C while the line editor owns the terminal: drop the line and any unfinished
 * statement. */
static void clear_input(void)
{
    pending_clear(&the_pending);
    rl_replace_line("", 0);
    printf("^C\n");
    set_prompt();
    rl_on_new_line();
}

static int on_ctrl_c_key(int count, int key)
{
    (void)count;
    (void)key;
    clear_input();
    return 0;
}

/* readline's raw mode keeps the terminal's interrupt character, so a Ctrl-C typed while
 * readline is consuming earlier input raises SIGINT, which flushes the unread input and can
 * leave readline blocked in a read() of bytes that are gone. While the editor owns the
 * terminal, Ctrl-C is a plain key instead (bound to on_ctrl_c_key; Ctrl-Z and Ctrl-\ keep
 * their signals); while a statement runs the terminal is cooked again and Ctrl-C is
 * SIGINT, seen through sig_pipe. */
static void prep_terminal_ctrl_c_key(int meta)
{
    rl_prep_terminal(meta);
    struct termios t;
    if (tcgetattr(STDIN_FILENO, &t) == 0) {
        t.c_cc[VINTR] = _POSIX_VDISABLE;
        tcsetattr(STDIN_FILENO, TCSADRAIN, &t);
    }
}

static void on_line(char *line)
{
    if (!line) {
        quit_requested = 1;
        printf("\n");
        return;
    }
    if (*line)
        add_history(line);
    /* The prompt stays off the screen while a statement runs. */
    rl_callback_handler_remove();
    int r = feed_line(the_cli, &the_pending, line, 0);
    free(line);
    if (r == 2) {
        quit_requested = 1;
        return;
    }
    rl_callback_handler_install(the_pending.len ? "   ...> " : "gatestream> ", on_line);
}

static char *history_path(void)
{
    const char *home = getenv("HOME");
    if (!home || !*home)
        return NULL;
    size_t n = strlen(home) + 32;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/.gatestream_history", home);
    return p;
}

static int run_interactive(cli *c)
{
    the_cli = c;
    char *hist = history_path();
    using_history();
    stifle_history(2000);
    if (hist)
        read_history(hist);
    rl_catch_signals = 0;
    rl_prep_term_function = prep_terminal_ctrl_c_key;
    rl_initialize();
    rl_bind_key_in_map(3, on_ctrl_c_key, emacs_standard_keymap);
    rl_bind_key_in_map(3, on_ctrl_c_key, vi_insertion_keymap);
    rl_bind_key_in_map(3, on_ctrl_c_key, vi_movement_keymap);
    printf("gatestream-cli %s connected to %s, database %s. Type .help for help.\n",
           gs_client_version(), c->url, c->db_id);
    rl_callback_handler_install("gatestream> ", on_line);
    while (!quit_requested) {
        struct pollfd p[2] = {{.fd = STDIN_FILENO, .events = POLLIN},
                              {.fd = sig_pipe[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents & POLLIN) {
            /* Ctrl-C: drop the line and any unfinished statement. */
            drain_signals();
            clear_input();
            rl_redisplay();
            continue;
        }
        if (p[0].revents & (POLLIN | POLLHUP))
            rl_callback_read_char();
    }
    rl_callback_handler_remove();
    if (hist) {
        write_history(hist);
        free(hist);
    }
    free(the_pending.buf);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},  {"db", required_argument, NULL, 'd'},
        {"file", required_argument, NULL, 'f'}, {"mode", required_argument, NULL, 'm'},
        {"http", no_argument, NULL, 'H'},       {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0},
    };
    cli c;
    memset(&c, 0, sizeof c);
    c.url = "http://127.0.0.1:9876";
    c.db_id = "main";
    c.timeout_ms = -1;
    const char *file = NULL;
    int http = 0;
    int o;
    while ((o = getopt_long(argc, argv, "u:d:f:m:t:h", opts, NULL)) != -1) {
        switch (o) {
        case 'u': c.url = optarg; break;
        case 'd': c.db_id = optarg; break;
        case 'f': file = optarg; break;
        case 'H': http = 1; break;
        case 't': c.timeout_ms = strtoll(optarg, NULL, 10); break;
        case 'm': {
            int m = cli_mode_parse(optarg);
            if (m < 0) {
                fprintf(stderr, "gatestream-cli: --mode must be table, json or csv\n");
                return 2;
            }
            c.mode = (cli_mode)m;
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    FILE *in = stdin;
    if (file && !(in = fopen(file, "r"))) {
        fprintf(stderr, "gatestream-cli: cannot open %s: %s\n", file, strerror(errno));
        return 2;
    }
    c.interactive = !file && isatty(STDIN_FILENO);
    if (pipe2(sig_pipe, O_NONBLOCK | O_CLOEXEC) != 0)
        return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    if (!c.interactive)
        sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    gs_client_config cfg;
    gs_client_config_init(&cfg);
    cfg.transport = http ? GS_CLIENT_TRANSPORT_HTTP : GS_CLIENT_TRANSPORT_WEBSOCKET;
    const char *token = getenv("GATESTREAM_TOKEN");
    if (token && *token)
        cfg.bearer_token = token;
    const char *urls[] = {c.url};
    gs_error err;
    if (gs_client_open(urls, 1, &cfg, &c.client, &err) != GS_OK ||
        !(c.db = gs_client_database(c.client, c.db_id, &err))) {
        fprintf(stderr, "Error: %s: %s\n", err.code, err.message);
        gs_client_close(c.client);
        return 1;
    }
    int rc = c.interactive ? run_interactive(&c) : run_script(&c, in);
    if (in != stdin)
        fclose(in);
    gs_client_close(c.client);
    return rc;
}
