/* redis_proc.h - real redis-server processes for the C tests of the Redis
 * high-availability foundations (channels/redis_topo.h), and a way to run
 * a libuv loop until an event happened.
 *
 * A test starts its own redis-server on a free loopback port (nothing on
 * disk), talks to it synchronously with hiredis' blocking client for
 * set-up and checks (test code, never a loop thread), and kills it at the
 * end. Waits are for events, each with a generous upper bound. */
#ifndef HR_TEST_REDIS_PROC_H
#define HR_TEST_REDIS_PROC_H

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

extern char **environ;

typedef struct redis_proc {
    pid_t pid;
    int port;
    char dir[64];
    const char *password; /* for the test's own connections */
} redis_proc;

/* A loopback port reserved for this process: the socket that holds it stays
 * bound (SO_REUSEADDR, never listening) until the process exits, so the
 * kernel hands it to no other test's bind(0) or connect() meanwhile, while a
 * server told to use it (redis-server sets SO_REUSEADDR) can still bind and
 * listen, again after a restart. Connecting to it is refused until then.
 * The same rule as tests/integration/ports.py; binding port 0 and closing
 * the socket again left a window in which another test could take it. */
static int test_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        perror("free port");
        exit(2);
    }
    return ntohs(a.sin_port); /* fd: held until exit, on purpose */
}

/* A listening socket that never accepts: connects succeed (the kernel's
 * backlog) and nothing is ever answered. Returns the fd; *port gets it. */
static int test_silent_listener(int *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 8) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        perror("silent listener");
        exit(2);
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static double test_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A blocking connection of the test's own (NULL if it cannot connect). */
static redisContext *redis_sync(const redis_proc *p)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", p->port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (p->password) {
        redisReply *r = redisCommand(c, "AUTH %s", p->password);
        int ok = r && r->type != REDIS_REPLY_ERROR;
        if (r)
            freeReplyObject(r);
        if (!ok) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

/* One command on a fresh blocking connection; the reply (caller frees
 * with freeReplyObject) or NULL. */
static redisReply *redis_do(const redis_proc *p, const char *fmt, ...)
{
    redisContext *c = redis_sync(p);
    if (!c)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

/* Starts redis-server with extra "--name value" arguments (NULL-terminated
 * list) and waits until it answers PING. Exits the test on failure. */
static redis_proc *redis_start(const char *password, const char *const *extra)
{
    redis_proc *p = calloc(1, sizeof(*p));
    char port[16], log[128];
    const char *argv[64];
    int n = 0;
    p->port = test_free_port();
    p->password = password;
    snprintf(p->dir, sizeof(p->dir), "/tmp/herald-rtest-XXXXXX");
    if (!mkdtemp(p->dir)) {
        perror("mkdtemp");
        exit(2);
    }
    snprintf(port, sizeof(port), "%d", p->port);
    snprintf(log, sizeof(log), "%s/redis.log", p->dir);
    const char *redis_bin = getenv("REDIS_SERVER") ? getenv("REDIS_SERVER") : "redis-server";
    argv[n++] = redis_bin;
    argv[n++] = "--port";
    argv[n++] = port;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--dir";
    argv[n++] = p->dir;
    argv[n++] = "--logfile";
    argv[n++] = log;
    if (password) {
        argv[n++] = "--requirepass";
        argv[n++] = password;
    }
    for (int i = 0; extra && extra[i] && n < 62; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    if (posix_spawnp(&p->pid, redis_bin, NULL, NULL, (char *const *)argv, environ) != 0) {
        perror("posix_spawn redis-server");
        exit(2);
    }
    double deadline = test_now() + 15;
    for (;;) {
        redisReply *r = redis_do(p, "PING");
        int ok = r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
        if (ok)
            return p;
        int st;
        if (waitpid(p->pid, &st, WNOHANG) == p->pid || test_now() > deadline) {
            fprintf(stderr, "redis-server did not start (see %s)\n", log);
            exit(2);
        }
        usleep(20000); /* polling for the process to listen: no event to wait on */
    }
}

/* Kills it (SIGKILL: as a crash) and waits for it; keeps p. */
static void redis_kill(redis_proc *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->pid = 0;
    }
}

static void redis_stop(redis_proc *p)
{
    char cmd[128];
    redis_kill(p);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", p->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", p->dir);
    free(p);
}

/*---- Running a loop until something happened ----------------------------------*/

static void on_deadline(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

/* Runs loop until *flag is non-zero or ms passed. Returns 1 if the flag
 * was set (the event happened), 0 on the deadline. */
static int run_until(uv_loop_t *loop, const int *flag, unsigned ms)
{
    uv_timer_t t;
    int expired = 0;
    uv_timer_init(loop, &t);
    t.data = &expired;
    uv_timer_start(&t, on_deadline, ms, 0);
    while (!*flag && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *flag != 0;
}

static void on_tick(uv_timer_t *t)
{
    (void)t; /* only wakes the loop up, so the predicate is looked at again */
}

/* Runs loop until pred(ctx) holds or ms passed; returns pred's last value.
 * A ticking timer keeps the loop from sleeping forever when nothing else
 * happens (a negative check must still end). */
static int run_while_not(uv_loop_t *loop, int (*pred)(void *), void *ctx, unsigned ms)
{
    uv_timer_t tick;
    double deadline = test_now() + ms / 1000.0;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 50, 50);
    while (!pred(ctx) && test_now() < deadline)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return pred(ctx);
}

/* Runs the loop until nothing is left on it (every handle closed), with
 * an upper bound; returns 1 when it emptied: a leak of handles shows. */
static int run_to_empty(uv_loop_t *loop, unsigned ms)
{
    double deadline = test_now() + ms / 1000.0;
    while (uv_run(loop, UV_RUN_NOWAIT)) {
        if (test_now() > deadline)
            return 0;
        usleep(1000); /* NOWAIT never blocks on a handle that stays idle */
    }
    return 1;
}

#endif
