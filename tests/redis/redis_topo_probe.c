/* redis_topo_probe.c - drives the Redis HA modules (channels/redis_topo.h)
 * for the Python tests that own the Redis processes
 * (tests/integration/test_redis_sentinel.py, with the fixtures of
 * redis_topology.py).
 *
 *   redis_topo_probe sentinel --sentinels H:P,H:P --master NAME
 *       [--user U] [--password P] [--sentinel-password SP] [--poll-ms N]
 *
 * It prints one JSON object per line on stdout, as things happen:
 *   {"event":"master","host":H,"port":P}   (host null: the master is gone)
 *   {"event":"log","level":L,"name":N,"msg":M}
 * and reads one command per line on stdin:
 *   recheck
 *   quit  (or end of input): stops the module, runs the loop empty, exits 0
 *         when every handle was closed.
 */
#include "channels/redis_topo.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uv_loop_t loop;
static uv_pipe_t in;
static hr_buf line;
static chan_sentinel *sentinel;
static int quitting;

static void emit(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    printf("%s\n", s);
    fflush(stdout);
    free(s);
    json_decref(o);
}

static void on_log(void *ud, int level, const char *event, const char *msg)
{
    (void)ud;
    emit(json_pack("{s:s, s:i, s:s, s:s}", "event", "log", "level", level, "name", event, "msg",
                   msg));
}

/* host:port,host:port -> addresses (host only set). */
static int parse_hosts(const char *list, hr_redis_addr **out)
{
    hr_redis_target *t;
    char err[256], *url;
    if (asprintf(&url, "redis+cluster://%s", list) < 0)
        abort();
    int n = hr_redis_targets_parse(url, &t, err, sizeof(err));
    free(url);
    if (n != 1) {
        fprintf(stderr, "bad host list: %s\n", err);
        exit(2);
    }
    *out = t[0].hosts;
    n = t[0].nhosts;
    t[0].hosts = NULL;
    t[0].nhosts = 0;
    hr_redis_targets_free(t, 1);
    return n;
}

/*---- Sentinel ------------------------------------------------------------------*/

static void on_master(void *ud, const char *host, int port)
{
    (void)ud;
    emit(json_pack("{s:s, s:s?, s:i}", "event", "master", "host", host, "port", port));
}

/*---- stdin ---------------------------------------------------------------------*/

static void quit(void)
{
    if (quitting)
        return;
    quitting = 1;
    chan_sentinel_stop(sentinel);
    uv_close((uv_handle_t *)&in, NULL);
}

static void handle_line(const char *text)
{
    if (!strcmp(text, "quit"))
        quit();
    else if (!strcmp(text, "recheck") && sentinel)
        chan_sentinel_recheck(sentinel);
    else if (text[0])
        fprintf(stderr, "probe: unknown command: %s\n", text);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char buf[65536];
    (void)h;
    (void)suggested;
    *b = uv_buf_init(buf, sizeof(buf));
}

static void on_stdin(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)s;
    if (n < 0) {
        quit();
        return;
    }
    hr_buf_append(&line, b->base, (size_t)n);
    char *nl;
    while (!quitting && line.len && (nl = memchr(line.data, '\n', line.len))) {
        *nl = '\0';
        size_t used = (size_t)(nl - line.data) + 1;
        handle_line(line.data);
        memmove(line.data, line.data + used, line.len - used);
        line.len -= used;
    }
}

static const char *arg(int argc, char **argv, const char *name)
{
    for (int i = 2; i + 1 < argc; i++)
        if (!strcmp(argv[i], name))
            return argv[i + 1];
    return NULL;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        fprintf(stderr, "usage: redis_topo_probe sentinel|cluster ...\n");
        return 2;
    }
    uv_loop_init(&loop);
    const char *user = arg(argc, argv, "--user"), *password = arg(argc, argv, "--password");
    hr_redis_addr *hosts = NULL;
    int nhosts = 0;
    if (!strcmp(argv[1], "sentinel")) {
        nhosts = parse_hosts(arg(argc, argv, "--sentinels"), &hosts);
        const char *poll = arg(argc, argv, "--poll-ms");
        chan_sentinel_config cfg = {.sentinels = hosts,
                                    .nsentinels = nhosts,
                                    .master_name = arg(argc, argv, "--master"),
                                    .sentinel_password = arg(argc, argv, "--sentinel-password"),
                                    .user = user,
                                    .password = password,
                                    .client_name = "herald-probe",
                                    .connect_timeout_ms = 1000,
                                    .poll_ms = poll ? (unsigned)atoi(poll) : 0,
                                    .master = on_master,
                                    .log = on_log};
        sentinel = chan_sentinel_start(&loop, &cfg);
    }
    hr_redis_addrs_free(hosts, nhosts);
    if (!sentinel) {
        fprintf(stderr, "probe: bad arguments\n");
        return 2;
    }
    uv_pipe_init(&loop, &in, 0);
    uv_pipe_open(&in, 0);
    uv_read_start((uv_stream_t *)&in, on_alloc, on_stdin);
    uv_run(&loop, UV_RUN_DEFAULT);
    hr_buf_reset(&line);
    int rc = uv_loop_close(&loop);
    if (rc)
        fprintf(stderr, "probe: handles left open on the loop\n");
    return rc ? 1 : 0;
}
