/* redis_topo_probe.c - drives the Redis HA modules (channels/redis_topo.h)
 * for the Python tests that own the Redis processes
 * (tests/integration/test_redis_sentinel.py, test_redis_cluster.py, with
 * the fixtures of redis_topology.py).
 *
 *   redis_topo_probe sentinel --sentinels H:P,H:P --master NAME
 *       [--user U] [--password P] [--sentinel-password SP] [--poll-ms N]
 *   redis_topo_probe cluster --seeds H:P,H:P [--user U] [--password P]
 *       [--load-function FILE] [--refresh-ms N]
 *
 * It prints one JSON object per line on stdout, as things happen:
 *   {"event":"master","host":H,"port":P}   (host null: the master is gone)
 *   {"event":"log","level":L,"name":N,"msg":M}
 *   cluster: {"event":"map","masters":[P...]}, {"event":"ready","ready":0|1},
 *            {"event":"subscribed","channel":C,"active":0|1},
 *            {"event":"message","channel":C,"payload":D},
 *            {"id":N,"reply":R} or {"id":N,"error":E} (R: Redis' reply as JSON;
 *            an error reply is {"err":TEXT})
 * and reads one command per line on stdin:
 *   recheck                                  (sentinel)
 *   {"id":N,"key":K,"argv":[...]}            (cluster: a routed command)
 *   {"ssubscribe":C} / {"sunsubscribe":C}    (cluster)
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
static chan_rcluster *cluster;
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

/*---- Cluster -------------------------------------------------------------------*/

static json_t *reply_json(const redisReply *r)
{
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        return json_stringn(r->str, r->len);
    case REDIS_REPLY_ERROR:
        return json_pack("{s:s%}", "err", r->str, r->len);
    case REDIS_REPLY_INTEGER:
        return json_integer(r->integer);
    case REDIS_REPLY_ARRAY: {
        json_t *a = json_array();
        for (size_t i = 0; i < r->elements; i++)
            json_array_append_new(a, reply_json(r->element[i]));
        return a;
    }
    default:
        return json_null();
    }
}

static void on_cluster_reply(void *priv, const redisReply *r, const char *err)
{
    json_int_t id = (json_int_t)(intptr_t)priv;
    if (r)
        emit(json_pack("{s:I, s:o}", "id", id, "reply", reply_json(r)));
    else
        emit(json_pack("{s:I, s:s}", "id", id, "error", err));
}

static void on_map(void *ud, const chan_slotmap *m)
{
    json_t *a = json_array();
    (void)ud;
    for (size_t i = 0; i < m->nnodes; i++)
        if (m->nodes[i].master < 0)
            json_array_append_new(a, json_integer(m->nodes[i].port));
    emit(json_pack("{s:s, s:o, s:i}", "event", "map", "masters", a, "uncovered",
                   chan_slotmap_uncovered(m)));
}

static void on_ready(void *ud, int ready)
{
    (void)ud;
    emit(json_pack("{s:s, s:i}", "event", "ready", "ready", ready));
}

static void on_subscribed(void *ud, const char *channel, int active)
{
    (void)ud;
    emit(json_pack("{s:s, s:s, s:i}", "event", "subscribed", "channel", channel, "active", active));
}

static void on_message(void *ud, const char *channel, const char *payload, size_t len)
{
    (void)ud;
    emit(json_pack("{s:s, s:s, s:s%}", "event", "message", "channel", channel, "payload", payload,
                   len));
}

static void cluster_line(const char *text)
{
    json_error_t e;
    json_t *o = json_loads(text, 0, &e);
    const char *c;
    if (!o) {
        fprintf(stderr, "probe: bad command line: %s\n", e.text);
        exit(2);
    }
    if ((c = json_string_value(json_object_get(o, "ssubscribe")))) {
        chan_rcluster_ssubscribe(cluster, c);
    } else if ((c = json_string_value(json_object_get(o, "sunsubscribe")))) {
        chan_rcluster_sunsubscribe(cluster, c);
    } else {
        json_t *argv = json_object_get(o, "argv");
        const char *key = json_string_value(json_object_get(o, "key"));
        size_t n = json_array_size(argv);
        const char **args = calloc(n ? n : 1, sizeof(char *));
        size_t *lens = calloc(n ? n : 1, sizeof(size_t));
        for (size_t i = 0; i < n; i++) {
            args[i] = json_string_value(json_array_get(argv, i));
            lens[i] = json_string_length(json_array_get(argv, i));
        }
        intptr_t id = (intptr_t)json_integer_value(json_object_get(o, "id"));
        if (chan_rcluster_command(cluster, key, key ? strlen(key) : 0, on_cluster_reply, (void *)id,
                                  (int)n, args, lens) < 0)
            emit(json_pack("{s:I, s:s}", "id", (json_int_t)id, "error", "refused"));
        free(args);
        free(lens);
    }
    json_decref(o);
}

/*---- stdin ---------------------------------------------------------------------*/

static void quit(void)
{
    if (quitting)
        return;
    quitting = 1;
    chan_sentinel_stop(sentinel);
    chan_rcluster_stop(cluster);
    uv_close((uv_handle_t *)&in, NULL);
}

static void handle_line(const char *text)
{
    if (!strcmp(text, "quit"))
        quit();
    else if (!strcmp(text, "recheck") && sentinel)
        chan_sentinel_recheck(sentinel);
    else if (cluster && text[0] == '{')
        cluster_line(text);
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
    } else if (!strcmp(argv[1], "cluster")) {
        nhosts = parse_hosts(arg(argc, argv, "--seeds"), &hosts);
        const char *fn = arg(argc, argv, "--load-function");
        const char *refresh = arg(argc, argv, "--refresh-ms");
        static const char *load[4] = {"FUNCTION", "LOAD", "REPLACE", NULL};
        static chan_rcmd init = {4, load, NULL};
        if (fn) { /* every master loads it on connect */
            FILE *f = fopen(fn, "r");
            static char text[65536];
            size_t n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;
            if (!f || !n) {
                fprintf(stderr, "probe: cannot read %s\n", fn);
                return 2;
            }
            fclose(f);
            text[n] = '\0';
            load[3] = text;
        }
        chan_rcluster_config cfg = {.seeds = hosts,
                                    .init = fn ? &init : NULL,
                                    .ninit = fn ? 1 : 0,
                                    .refresh_ms = refresh ? (unsigned)atoi(refresh) : 0,
                                    .nseeds = nhosts,
                                    .user = user,
                                    .password = password,
                                    .client_name = "herald-probe",
                                    .connect_timeout_ms = 1000,
                                    .map = on_map,
                                    .ready = on_ready,
                                    .subscribed = on_subscribed,
                                    .message = on_message,
                                    .log = on_log};
        cluster = chan_rcluster_start(&loop, &cfg);
    }
    hr_redis_addrs_free(hosts, nhosts);
    if (!sentinel && !cluster) {
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
