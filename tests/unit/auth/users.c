/*
 * tests/unit/auth/users.c - users, the SQLite and Redis stores, and the worker service.
 *
 * The same store cases run against a SQLite file in a fresh temporary
 * directory and against a real redis-server that this test starts on a
 * free loopback port (and kills at the end; the child also dies with us
 * through PR_SET_PDEATHSIG). A missing redis-server is a failure, not a
 * skip: the suite's setup installs it, and a skip would hide that.
 *
 * Why one file of ~1,200 lines: the store cases are written once and run
 * against both stores and through the service, which needs the one
 * redis-server this file starts; split, the server and the cases would be
 * set up again in each part.
 */
#include "auth/auth.h"
#include "common/log.h"
#include "testing.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REDIS_SERVER "/usr/bin/redis-server"

/*---- Fixtures: temporary directory and redis-server ------------------------*/

static char g_dir[64];
static pid_t g_redis_pid;
static int g_redis_port;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void remove_dir(void)
{
    if (g_dir[0])
        nftw(g_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* A loopback port reserved for the rest of this run (as
 * tests/integration/ports.py does): the socket stays bound with
 * SO_REUSEADDR and never listens, so the kernel hands the port to no other
 * process (closing it again, as this did, let anyone take it before
 * redis-server bound it), while redis-server (SO_REUSEADDR too) can bind
 * it. CLOEXEC: redis-server need not inherit it. */
static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1, one = 1;
    if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (port < 0 && fd >= 0)
        close(fd);
    return port; /* fd stays open until the process exits */
}

static int redis_pings(int port)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    redisReply *r = c && !c->err ? redisCommand(c, "PING") : NULL;
    int ok = r && r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "PONG");
    freeReplyObject(r);
    redisFree(c);
    return ok;
}

static void redis_stop(void)
{
    if (g_redis_pid > 0) {
        kill(g_redis_pid, SIGTERM);
        waitpid(g_redis_pid, NULL, 0);
        g_redis_pid = 0;
    }
}

/* Starts redis-server on g_redis_port and waits (5 s at most) until it
 * answers PING. Returns 0 or -1. */
static int redis_start(void)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", g_redis_port);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test */
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl(REDIS_SERVER, "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    if (pid < 0)
        return -1;
    g_redis_pid = pid;
    for (int i = 0; i < 100; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            g_redis_pid = 0;
            return -1;
        }
        if (redis_pings(g_redis_port))
            return 0;
        usleep(50 * 1000);
    }
    redis_stop();
    return -1;
}

/*---- Store fixtures --------------------------------------------------------*/

/* The store under test, for RUN()'s argument-less functions. */
static const auth_store_ops *g_ops;
static char g_target[256];
static char g_prefix[64];

static auth_store *open_store(void)
{
    char err[256] = "";
    auth_store *s = g_ops->open(g_target, g_prefix, err, sizeof(err));
    CHECK(s != NULL);
    if (s && g_ops->init(s, err, sizeof(err)) != AUTH_OK) {
        fprintf(stderr, "init %s: %s\n", g_ops->name, err);
        CHECK(0);
    }
    return s;
}

/* A unique 32-hex id per call. */
static char *next_id(void)
{
    static unsigned n;
    char buf[33];
    snprintf(buf, sizeof(buf), "%08x%024x", (unsigned)time(NULL), ++n);
    return strdup(buf);
}

/* Fills u with a user called name (two roles). Caller clears. */
static void make_user(auth_user *u, const char *name)
{
    memset(u, 0, sizeof(*u));
    u->id = next_id();
    u->username = strdup(name);
    u->password_hash = strdup("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA");
    u->created_at = 1700000000;
    auth_roles_decode("[\"reader\",\"role:x-y_z.1\"]", u);
}

/*---- Store cases (run against every store) ---------------------------------*/

static void store_create_get(void)
{
    auth_store *s = open_store();
    auth_user u, got;
    make_user(&u, "Alice");
    CHECK(g_ops->create_user(s, &u) == AUTH_OK);
    CHECK(g_ops->get_user_by_id(s, u.id, &got) == AUTH_OK);
    CHECK_STR(got.username, "Alice");
    CHECK_STR(got.password_hash, u.password_hash);
    CHECK(got.created_at == 1700000000);
    CHECK(got.nroles == 2);
    if (got.nroles == 2) {
        CHECK_STR(got.roles[0], "reader");
        CHECK_STR(got.roles[1], "role:x-y_z.1");
    }
    auth_user_clear(&got);
    CHECK(g_ops->get_user_by_name(s, "aLICE", &got) == AUTH_OK);
    CHECK_STR(got.id, u.id);
    CHECK_STR(got.username, "Alice");
    auth_user_clear(&got);
    CHECK(g_ops->get_user_by_name(s, "Alice2", &got) == AUTH_NOT_FOUND);
    CHECK(g_ops->get_user_by_id(s, "0123456789abcdef0123456789abcdef", &got) == AUTH_NOT_FOUND);

    auth_user dup;
    make_user(&dup, "ALICE"); /* same name, other case, other id */
    CHECK(g_ops->create_user(s, &dup) == AUTH_TAKEN);
    auth_user_clear(&dup);
    auth_user_clear(&u);
    g_ops->close(s);
}

/* Names that would break string-built SQL or Redis key patterns are
 * ordinary names: stored and returned byte for byte. */
static void store_hostile_names(void)
{
    static const char *names[] = {"robert'); DROP TABLE users;--",
                                  "a\" OR 1=1 --",
                                  "x:*",
                                  "名前",
                                  "back\\slash; semi",
                                  "%s%n"};
    auth_store *s = open_store();
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        auth_user u, got;
        make_user(&u, names[i]);
        CHECK(auth_username_invalid(names[i]) == NULL);
        CHECK(g_ops->create_user(s, &u) == AUTH_OK);
        CHECK(g_ops->get_user_by_name(s, names[i], &got) == AUTH_OK);
        CHECK_STR(got.username, names[i]);
        CHECK_STR(got.id, u.id);
        auth_user_clear(&got);
        CHECK(g_ops->get_user_by_id(s, u.id, &got) == AUTH_OK);
        CHECK_STR(got.username, names[i]);
        auth_user_clear(&got);
        auth_user_clear(&u);
    }
    /* "x:*" must not match other names as a pattern would */
    auth_user got;
    CHECK(g_ops->get_user_by_name(s, "x:a", &got) == AUTH_NOT_FOUND);
    /* the users table survived */
    CHECK(g_ops->get_user_by_name(s, "alice", &got) == AUTH_OK);
    auth_user_clear(&got);
    g_ops->close(s);
}

static void store_delete(void)
{
    auth_store *s = open_store();
    auth_user u, got;
    char *uid = NULL;
    int64_t now = time(NULL);
    make_user(&u, "Doomed");
    CHECK(g_ops->create_user(s, &u) == AUTH_OK);
    CHECK(g_ops->put_refresh(s, "hash-doomed-1", u.id, now + 100) == AUTH_OK);
    CHECK(g_ops->put_refresh(s, "hash-doomed-2", u.id, now + 200) == AUTH_OK);
    CHECK(g_ops->delete_user(s, u.id) == AUTH_OK);
    CHECK(g_ops->get_user_by_id(s, u.id, &got) == AUTH_NOT_FOUND);
    CHECK(g_ops->get_user_by_name(s, "doomed", &got) == AUTH_NOT_FOUND);
    CHECK(g_ops->take_refresh(s, "hash-doomed-1", now, &uid) == AUTH_NOT_FOUND);
    CHECK(g_ops->take_refresh(s, "hash-doomed-2", now, &uid) == AUTH_NOT_FOUND);
    CHECK(uid == NULL);
    CHECK(g_ops->delete_user(s, u.id) == AUTH_NOT_FOUND);
    auth_user_clear(&u);
    /* the name is free again */
    make_user(&u, "DOOMED");
    CHECK(g_ops->create_user(s, &u) == AUTH_OK);
    auth_user_clear(&u);
    g_ops->close(s);
}

static void store_refresh(void)
{
    auth_store *s = open_store();
    auth_user u;
    char *uid = NULL;
    int64_t now = time(NULL);
    make_user(&u, "Refresher");
    CHECK(g_ops->create_user(s, &u) == AUTH_OK);
    CHECK(g_ops->put_refresh(s, "hash-r1", u.id, now + 100) == AUTH_OK);
    CHECK(g_ops->take_refresh(s, "hash-r1", now, &uid) == AUTH_OK);
    CHECK_STR(uid, u.id);
    free(uid);
    uid = NULL;
    CHECK(g_ops->take_refresh(s, "hash-r1", now, &uid) == AUTH_NOT_FOUND);
    CHECK(g_ops->put_refresh(s, "hash-r2", u.id, now - 10) == AUTH_OK);
    CHECK(g_ops->take_refresh(s, "hash-r2", now, &uid) == AUTH_NOT_FOUND);
    CHECK(g_ops->take_refresh(s, "never-stored", now, &uid) == AUTH_NOT_FOUND);
    CHECK(uid == NULL);
    auth_user_clear(&u);
    g_ops->close(s);
}

typedef struct revoked_seen {
    int n;
    int64_t at_a, at_b;
    const char *want; /* an id to look for */
    int64_t at_want;
} revoked_seen;

static void on_revoked(void *ud, const char *id, int64_t at)
{
    revoked_seen *seen = ud;
    seen->n++;
    if (!strcmp(id, "rev-a"))
        seen->at_a = at;
    if (!strcmp(id, "rev-b"))
        seen->at_b = at;
    if (seen->want && !strcmp(id, seen->want))
        seen->at_want = at;
}

static void store_revoked_meta(void)
{
    auth_store *s = open_store();
    revoked_seen seen = {0};
    CHECK(g_ops->put_revoked(s, "rev-a", 100) == AUTH_OK);
    CHECK(g_ops->put_revoked(s, "rev-b", 200) == AUTH_OK);
    CHECK(g_ops->put_revoked(s, "rev-a", 150) == AUTH_OK); /* latest wins */
    CHECK(g_ops->list_revoked(s, on_revoked, &seen) == AUTH_OK);
    CHECK(seen.at_a == 150);
    CHECK(seen.at_b == 200);
    CHECK(seen.n >= 2);

    char *v = g_ops->meta_get(s, "test_key");
    CHECK(v == NULL);
    CHECK(g_ops->meta_put_new(s, "test_key", "first") == AUTH_OK);
    CHECK(g_ops->meta_put_new(s, "test_key", "second") == AUTH_OK);
    v = g_ops->meta_get(s, "test_key");
    CHECK_STR(v, "first");
    free(v);
    g_ops->close(s);
}

/* Names compare by their RFC 8265 key: another case, width or
 * composition of a name finds the same user and cannot register again. */
static void store_unicode_names(void)
{
    static const char *same[] = {"José", "JOSÉ", "Jose\xcc\x81", "ｊｏｓé", "ＪＯＳＥ\xcc\x81"};
    auth_store *s = open_store();
    auth_user u, got;
    make_user(&u, "José"); /* stores receive the display form */
    CHECK(g_ops->create_user(s, &u) == AUTH_OK);
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        CHECK(g_ops->get_user_by_name(s, same[i], &got) == AUTH_OK);
        CHECK_STR(got.id, u.id);
        CHECK_STR(got.username, "José");
        auth_user_clear(&got);
        auth_user dup;
        make_user(&dup, same[i]);
        CHECK(g_ops->create_user(s, &dup) == AUTH_TAKEN);
        auth_user_clear(&dup);
    }
    CHECK(g_ops->get_user_by_name(s, "Jose", &got) == AUTH_NOT_FOUND);
    CHECK(g_ops->get_user_by_name(s, "José\xc2\xa0", &got) == AUTH_NOT_FOUND);
    CHECK(g_ops->delete_user(s, u.id) == AUTH_OK);
    CHECK(g_ops->get_user_by_name(s, "josé", &got) == AUTH_NOT_FOUND);
    auth_user_clear(&u);
    g_ops->close(s);
}

static void store_cases(void)
{
    RUN(store_create_get);
    RUN(store_hostile_names);
    RUN(store_unicode_names);
    RUN(store_delete);
    RUN(store_refresh);
    RUN(store_revoked_meta);
}

/*---- Service harness -------------------------------------------------------*/

/* The wake pipe plays the loop's inbox: a worker queues the finished job
 * and writes a byte, the "loop" (this thread) polls it and finishes the
 * jobs. The queue grows as needed, as the gateway's inbox does: a worker
 * may run any number of jobs ahead of the pump (CPU contention makes
 * that likely), and a bounded queue that dropped completions once stalled
 * service_queue_bound for its whole deadline. */
static int g_wake[2] = {-1, -1};
static int g_wakes;
static pthread_mutex_t g_done_mu = PTHREAD_MUTEX_INITIALIZER;
static auth_job **g_done; /* locked */
static size_t g_ndone, g_cap;

static void post(void *ud, auth_job *j)
{
    (void)ud;
    __atomic_add_fetch(&g_wakes, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&g_done_mu);
    if (g_ndone == g_cap) {
        size_t cap = g_cap ? 2 * g_cap : 256;
        auth_job **grown = realloc(g_done, cap * sizeof(*grown));
        if (!grown) {
            /* no memory: a lost completion would hang the test silently */
            fprintf(stderr, "test_users: out of memory queueing a completion\n");
            abort();
        }
        g_done = grown;
        g_cap = cap;
    }
    g_done[g_ndone++] = j;
    pthread_mutex_unlock(&g_done_mu);
    ssize_t rc = write(g_wake[1], "x", 1); /* full pipe: a wake is pending anyway */
    (void)rc;
}

static const auth_reply_to g_to = {post, NULL};

/* Takes every queued completion (the caller owns the array and the jobs). */
static auth_job **take_done(size_t *n)
{
    pthread_mutex_lock(&g_done_mu);
    auth_job **jobs = g_done;
    *n = g_ndone;
    g_done = NULL;
    g_ndone = g_cap = 0;
    pthread_mutex_unlock(&g_done_mu);
    return jobs;
}

/* Runs the callbacks of every finished job (this thread is the "loop"). */
static void finish_done(void)
{
    size_t n;
    auth_job **jobs = take_done(&n);
    for (size_t i = 0; i < n; i++)
        auth_job_finish(jobs[i]);
    free(jobs);
}

/* Frees finished jobs without their callbacks (a loop shutting down). */
static void discard_done(void)
{
    size_t n;
    auth_job **jobs = take_done(&n);
    for (size_t i = 0; i < n; i++)
        auth_job_discard(jobs[i]);
    free(jobs);
}

/* How many completions are queued right now. */
static size_t queued_done(void)
{
    pthread_mutex_lock(&g_done_mu);
    size_t n = g_ndone;
    pthread_mutex_unlock(&g_done_mu);
    return n;
}

static auth_service *service_new(int workers)
{
    char err[256] = "";
    auth_service_config cfg = {
        .store = g_ops, .target = g_target, .prefix = g_prefix, .workers = workers};
    auth_service *svc = auth_service_new(&cfg, err, sizeof(err));
    if (!svc)
        fprintf(stderr, "auth_service_new: %s\n", err);
    CHECK(svc != NULL);
    return svc;
}

/* Drains until *count reaches target or 150 s pass (a loaded machine runs
 * ten thousand store calls on one worker slowly). */
static void pump(auth_service *svc, const int *count, int target)
{
    struct pollfd pfd = {.fd = g_wake[0], .events = POLLIN};
    time_t deadline = time(NULL) + 150;
    while (*count < target && time(NULL) < deadline) {
        char buf[256];
        if (poll(&pfd, 1, 1000) > 0)
            while (read(g_wake[0], buf, sizeof(buf)) > 0)
                ;
        (void)svc;
        finish_done();
    }
    CHECK(*count >= target);
}

/* What a callback saw, copied (its arguments die with the call). */
typedef struct result {
    int done;
    auth_status st;
    char msg[128];
    char id[64];
    char username[128];
    char token[128];
    size_t nroles;
} result;

static void record(result *r, auth_status st, const auth_user *u, const char *token,
                   const char *msg)
{
    r->done++;
    r->st = st;
    snprintf(r->msg, sizeof(r->msg), "%s", msg ? msg : "");
    snprintf(r->id, sizeof(r->id), "%s", u ? u->id : "");
    snprintf(r->username, sizeof(r->username), "%s", u ? u->username : "");
    snprintf(r->token, sizeof(r->token), "%s", token ? token : "");
    r->nroles = u ? u->nroles : 0;
}

static void on_user(void *ud, auth_status st, const auth_user *u, const char *msg)
{
    record(ud, st, u, NULL, msg);
}

static void on_token(void *ud, auth_status st, const auth_user *u, const char *token,
                     const char *msg)
{
    record(ud, st, u, token, msg);
}

static result do_register(auth_service *svc, const char *name, const char *pw, char *const *roles,
                          size_t nroles)
{
    result r = {0};
    auth_register(svc, &g_to, name, pw, roles, nroles, on_user, &r);
    pump(svc, &r.done, 1);
    return r;
}

static result do_login(auth_service *svc, const char *name, const char *pw)
{
    result r = {0};
    auth_login(svc, &g_to, name, pw, 3600, on_token, &r);
    pump(svc, &r.done, 1);
    return r;
}

static result do_refresh(auth_service *svc, const char *token)
{
    result r = {0};
    auth_refresh(svc, &g_to, token, 3600, on_token, &r);
    pump(svc, &r.done, 1);
    return r;
}

static result do_by_id(auth_service *svc, int del, const char *id)
{
    result r = {0};
    (del ? auth_delete_user : auth_get_user)(svc, &g_to, id, on_user, &r);
    pump(svc, &r.done, 1);
    return r;
}

/*---- Service cases ---------------------------------------------------------*/

static void service_register(void)
{
    auth_service *svc = service_new(2);
    char *roles[] = {"admin"};
    if (!svc)
        return;
    result r = do_register(svc, "Carol", "correct horse battery", roles, 1);
    CHECK(r.st == AUTH_OK);
    CHECK(strlen(r.id) == 32 && strspn(r.id, "0123456789abcdef") == 32);
    CHECK_STR(r.username, "Carol");
    CHECK(r.nroles == 1);
    r = do_register(svc, " Carol", "correct horse battery", NULL, 0);
    CHECK(r.st == AUTH_INVALID && strstr(r.msg, "username"));
    r = do_register(svc, "Erin", "password", NULL, 0);
    CHECK(r.st == AUTH_INVALID);
    CHECK_STR(r.msg, "password is too common");
    r = do_register(svc, "Erin", "short", NULL, 0);
    CHECK(r.st == AUTH_INVALID && strstr(r.msg, "password"));
    char *bad_roles[] = {"bad role"};
    r = do_register(svc, "Erin", "correct horse battery", bad_roles, 1);
    CHECK(r.st == AUTH_INVALID && strstr(r.msg, "role"));
    r = do_register(svc, "cAROL", "another good one", NULL, 0);
    CHECK(r.st == AUTH_TAKEN);
    CHECK(r.msg[0] != '\0');
    auth_service_free(svc);
}

static void service_login_refresh_delete(void)
{
    auth_service *svc = service_new(2);
    if (!svc)
        return;
    result reg = do_register(svc, "Frank", "frank's long password", NULL, 0);
    CHECK(reg.st == AUTH_OK);
    result r = do_login(svc, "FRANK", "frank's long password");
    CHECK(r.st == AUTH_OK);
    CHECK_STR(r.id, reg.id);
    CHECK(strlen(r.token) == 43 && strspn(r.token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
                                                   "qrstuvwxyz0123456789-_") == 43);
    CHECK(do_login(svc, "Frank", "wrong password!").st == AUTH_BAD_CREDENTIALS);
    CHECK(do_login(svc, "nobody-at-all", "frank's long password").st == AUTH_BAD_CREDENTIALS);

    /* rotation: the used token stops working, the new one works */
    result r2 = do_refresh(svc, r.token);
    CHECK(r2.st == AUTH_OK);
    CHECK_STR(r2.id, reg.id);
    CHECK(strcmp(r2.token, r.token) != 0);
    CHECK(do_refresh(svc, r.token).st == AUTH_NOT_FOUND);
    result r3 = do_refresh(svc, r2.token);
    CHECK(r3.st == AUTH_OK);
    CHECK(do_refresh(svc, "not-a-token").st == AUTH_NOT_FOUND);

    result g = do_by_id(svc, 0, reg.id);
    CHECK(g.st == AUTH_OK);
    CHECK_STR(g.username, "Frank");
    result d = do_by_id(svc, 1, reg.id);
    CHECK(d.st == AUTH_OK);
    CHECK_STR(d.username, "Frank");
    CHECK(do_by_id(svc, 0, reg.id).st == AUTH_NOT_FOUND);
    CHECK(do_by_id(svc, 1, reg.id).st == AUTH_NOT_FOUND);
    CHECK(do_refresh(svc, r3.token).st == AUTH_NOT_FOUND);
    CHECK(do_login(svc, "Frank", "frank's long password").st == AUTH_BAD_CREDENTIALS);
    auth_service_free(svc);

    /* the deletion was recorded as a revocation */
    auth_store *s = open_store();
    revoked_seen seen = {.want = reg.id};
    CHECK(s && g_ops->list_revoked(s, on_revoked, &seen) == AUTH_OK);
    CHECK(seen.at_want > 0 && seen.at_want <= time(NULL));
    g_ops->close(s);
}

typedef struct counts {
    int done, ok, bad, busy;
} counts;

static void on_count(void *ud, auth_status st, const auth_user *u, const char *token,
                     const char *msg)
{
    counts *c = ud;
    (void)u, (void)token;
    c->done++;
    c->ok += st == AUTH_OK;
    c->bad += st == AUTH_BAD_CREDENTIALS;
    c->busy += st == AUTH_UNAVAILABLE && msg && !strcmp(msg, "server busy");
}

static void on_count_user(void *ud, auth_status st, const auth_user *u, const char *msg)
{
    on_count(ud, st, u, NULL, msg);
}

/* Concurrent logins per store run (each costs one Argon2id verification,
 * ~50 ms of CPU: the Redis run does fewer to keep the suite fast). */
static int g_logins = 200;

static void service_concurrent_logins(void)
{
    auth_service *svc = service_new(4);
    if (!svc)
        return;
    CHECK(do_register(svc, "Grace", "grace's long password", NULL, 0).st == AUTH_OK);
    counts c = {0};
    for (int i = 0; i < g_logins; i++)
        auth_login(svc, &g_to, "grace", i % 2 ? "grace's long password" : "nope nope nope", 60,
                   on_count, &c);
    pump(svc, &c.done, g_logins);
    CHECK(c.ok == g_logins / 2);
    CHECK(c.bad == g_logins / 2);
    auth_service_free(svc);
}

/* With the only worker busy hashing, more than 10000 queued jobs overflow
 * the queue; the excess completes with "server busy", all callbacks run. */
static void service_queue_bound(void)
{
    auth_service *svc = service_new(1);
    if (!svc)
        return;
    counts c = {0};
    for (int i = 0; i < 3; i++)
        auth_login(svc, &g_to, "nobody", "some password", 60, on_count, &c);
    for (int i = 0; i < 10100; i++)
        auth_get_user(svc, &g_to, "0123456789abcdef0123456789abcdef", on_count_user, &c);
    pump(svc, &c.done, 10103);
    CHECK(c.busy > 0);
    CHECK(c.bad == 3);
    auth_service_free(svc);
}

static int g_never;
static void never_called(void *ud, auth_status st, const auth_user *u, const char *token,
                         const char *msg)
{
    (void)ud, (void)st, (void)u, (void)token, (void)msg;
    g_never++;
}

/* Freeing with jobs queued and completions undrained runs no callback and
 * leaks nothing (ASan checks the latter). The test waits for a completion
 * to be posted (not for a fixed time: on a loaded machine 100 ms finished
 * nothing, and the undrained path went untested); with one worker and 200
 * Argon2id logins, most jobs are then still queued. */
static void service_free_pending(void)
{
    finish_done(); /* nothing left over from earlier cases */
    auth_service *svc = service_new(1);
    if (!svc)
        return;
    for (int i = 0; i < 200; i++)
        auth_login(svc, &g_to, "nobody", "some password", 60, never_called, NULL);
    time_t deadline = time(NULL) + 120;
    while (queued_done() == 0 && time(NULL) < deadline)
        usleep(1000);
    size_t undrained = queued_done();
    CHECK(undrained > 0);
    auth_service_free(svc); /* drops the queued jobs */
    size_t posted = queued_done();
    CHECK(posted < 200); /* some were queued, not run */
    CHECK(g_never == 0);
    /* the posted ones stay with the receiver, which discards them as a
     * loop shutting down does */
    discard_done();
    CHECK(g_never == 0);
}

/* The look-alikes of the "Hardening" issue through the service: the same
 * name in another form is taken (409), an invisible or space character is
 * invalid (422), and logins find the user from any form of the name. */
static void service_lookalikes(void)
{
    auth_service *svc = service_new(2);
    if (!svc)
        return;
    result r = do_register(svc,
                           "Rene\xcc\x81"
                           "e",
                           "a long enough password", NULL, 0);
    CHECK(r.st == AUTH_OK);
    CHECK_STR(r.username, "Renée"); /* stored precomposed */
    static const char *taken[] = {"Renée", "RENÉE", "ｒｅｎéｅ"};
    for (size_t i = 0; i < sizeof(taken) / sizeof(taken[0]); i++)
        CHECK(do_register(svc, taken[i], "a long enough password", NULL, 0).st == AUTH_TAKEN);
    static const char *invalid[] = {"Renée\xc2\xa0", "Renée\xe2\x80\x8b",
                                    "\xe2\x80\xae"
                                    "eéneR",
                                    "Ren\xd0\xb5"
                                    "e"};
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        result bad = do_register(svc, invalid[i], "a long enough password", NULL, 0);
        CHECK(bad.st == AUTH_INVALID && strstr(bad.msg, "username"));
    }
    CHECK(strstr(do_register(svc, "Renée\xe2\x80\x8b", "a long enough password", NULL, 0).msg,
                 "U+200B") != NULL);
    result l = do_login(svc,
                        "RENE\xcc\x81"
                        "E",
                        "a long enough password");
    CHECK(l.st == AUTH_OK);
    CHECK_STR(l.id, r.id);
    CHECK(do_login(svc, "Renée\xc2\xa0", "a long enough password").st == AUTH_BAD_CREDENTIALS);
    auth_service_free(svc);
}

static void service_cases(void)
{
    RUN(service_register);
    RUN(service_lookalikes);
    RUN(service_login_refresh_delete);
    RUN(service_concurrent_logins);
}

/*---- Store-specific cases --------------------------------------------------*/

typedef struct init_arg {
    const char *path;
    auth_status st;
} init_arg;

static void *init_thread(void *p)
{
    init_arg *a = p;
    char err[256] = "";
    auth_store *s = auth_store_sqlite_ops.open(a->path, NULL, err, sizeof(err));
    a->st = s ? auth_store_sqlite_ops.init(s, err, sizeof(err)) : AUTH_INTERNAL;
    if (a->st != AUTH_OK)
        fprintf(stderr, "concurrent init: %s\n", err);
    auth_store_sqlite_ops.close(s);
    return NULL;
}

/* Several processes or threads may create the schema of a fresh file at
 * once; BEGIN IMMEDIATE serialises them. */
static void sqlite_concurrent_init(void)
{
    char path[128];
    pthread_t th[6];
    init_arg args[6];
    snprintf(path, sizeof(path), "%s/race.db", g_dir);
    for (int i = 0; i < 6; i++) {
        args[i] = (init_arg){.path = path, .st = AUTH_INTERNAL};
        pthread_create(&th[i], NULL, init_thread, &args[i]);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].st == AUTH_OK);
    }
}

/* A file an earlier Herald created (herald_meta only, holding the JWT
 * secret) gains the user tables, and the secret survives. */
static void sqlite_existing_meta(void)
{
    char path[128], err[256] = "";
    sqlite3 *db = NULL;
    snprintf(path, sizeof(path), "%s/secret-first.db", g_dir);
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db,
                       "CREATE TABLE herald_meta (key TEXT PRIMARY KEY, value TEXT);"
                       "INSERT INTO herald_meta VALUES ('jwt_secret', 'abc123');",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    auth_store *s = auth_store_sqlite_ops.open(path, NULL, err, sizeof(err));
    CHECK(s && auth_store_sqlite_ops.init(s, err, sizeof(err)) == AUTH_OK);
    char *secret = s ? auth_store_sqlite_ops.meta_get(s, "jwt_secret") : NULL;
    CHECK_STR(secret, "abc123");
    char *version = s ? auth_store_sqlite_ops.meta_get(s, "schema_version") : NULL;
    CHECK_STR(version, "2");
    free(secret);
    free(version);
    auth_store_sqlite_ops.close(s);
    /* a database from a newer Herald is refused, not damaged */
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_exec(db, "UPDATE herald_meta SET value = '99' WHERE key = 'schema_version'", NULL, NULL,
                 NULL);
    sqlite3_close(db);
    s = auth_store_sqlite_ops.open(path, NULL, err, sizeof(err));
    CHECK(s && auth_store_sqlite_ops.init(s, err, sizeof(err)) != AUTH_OK);
    CHECK(strstr(err, "newer") != NULL);
    auth_store_sqlite_ops.close(s);
}

/* Warnings the stores raise, by event name. */
static int g_collisions;

static void count_warning(int level, const char *event, const char *message)
{
    (void)level;
    if (!strcmp(event, "username_collision"))
        g_collisions++;
    fprintf(stderr, "  (warning %s: %s)\n", event, message);
}

/* Accounts registered under the ASCII-only fold (schema 1). */
static const struct legacy_row {
    const char *id, *name, *key;
} legacy_rows[] = {
    {"0000000000000000000000000000000a", "JOSÉ", "josÉ"},
    {"0000000000000000000000000000000b", "Jose\xcc\x81", "jose\xcc\x81"}, /* same name now */
    {"0000000000000000000000000000000c", "ａｂｃ", "ａｂｃ"},
    {"0000000000000000000000000000000d", "alice", "alice"},
    {"0000000000000000000000000000000e", "bad\xc2\xa0", "bad\xc2\xa0"}, /* refused today */
};
#define NLEGACY (sizeof(legacy_rows) / sizeof(legacy_rows[0]))

/* What every store must show after migrating legacy_rows: the id found
 * for "josé" (A or B, whichever kept the key) is returned. */
static const char *check_migrated(const auth_store_ops *ops, auth_store *s, char *winner)
{
    auth_user got;
    CHECK(ops->get_user_by_name(s, "josé", &got) == AUTH_OK);
    snprintf(winner, 33, "%s", got.id ? got.id : "");
    CHECK(!strcmp(winner, legacy_rows[0].id) || !strcmp(winner, legacy_rows[1].id));
    auth_user_clear(&got);
    CHECK(ops->get_user_by_name(s, "JOSE\xcc\x81", &got) == AUTH_OK);
    CHECK_STR(got.id, winner);
    auth_user_clear(&got);
    CHECK(ops->get_user_by_name(s, "ABC", &got) == AUTH_OK); /* moved, display mapped */
    CHECK_STR(got.id, legacy_rows[2].id);
    CHECK_STR(got.username, "abc");
    auth_user_clear(&got);
    CHECK(ops->get_user_by_name(s, "ALICE", &got) == AUTH_OK);
    CHECK_STR(got.id, legacy_rows[3].id);
    auth_user_clear(&got);
    CHECK(ops->get_user_by_name(s, "BAD\xc2\xa0", &got) == AUTH_OK); /* legacy key */
    CHECK_STR(got.id, legacy_rows[4].id);
    auth_user_clear(&got);
    CHECK(g_collisions == 1);
    /* once the winner is gone, the other is found by its old spelling */
    const struct legacy_row *loser =
        !strcmp(winner, legacy_rows[0].id) ? &legacy_rows[1] : &legacy_rows[0];
    CHECK(ops->delete_user(s, winner) == AUTH_OK);
    CHECK(ops->get_user_by_name(s, loser->name, &got) == AUTH_OK);
    CHECK_STR(got.id, loser->id);
    auth_user_clear(&got);
    CHECK(ops->delete_user(s, loser->id) == AUTH_OK);
    CHECK(ops->get_user_by_name(s, loser->name, &got) == AUTH_NOT_FOUND);
    CHECK(ops->delete_user(s, legacy_rows[4].id) == AUTH_OK);
    CHECK(ops->get_user_by_name(s, "bad\xc2\xa0", &got) == AUTH_NOT_FOUND);
    return winner;
}

/* A schema-1 database: keys move to RFC 8265 at the first start. */
static void sqlite_migrates_usernames(void)
{
    char path[128], err[256] = "", winner[33];
    sqlite3 *db = NULL;
    snprintf(path, sizeof(path), "%s/legacy.db", g_dir);
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db,
                       "CREATE TABLE herald_meta (key TEXT PRIMARY KEY, value TEXT);"
                       "INSERT INTO herald_meta VALUES ('schema_version', '1');"
                       "CREATE TABLE users (id TEXT PRIMARY KEY, username TEXT NOT NULL,"
                       " username_key TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,"
                       " roles TEXT NOT NULL, created_at INTEGER NOT NULL);"
                       "CREATE TABLE refresh_tokens (token_hash TEXT PRIMARY KEY,"
                       " user_id TEXT NOT NULL, expires_at INTEGER NOT NULL);"
                       "CREATE TABLE revoked (user_id TEXT PRIMARY KEY, at INTEGER NOT NULL);",
                       NULL, NULL, NULL) == SQLITE_OK);
    for (size_t i = 0; i < NLEGACY; i++) {
        char *sql =
            sqlite3_mprintf("INSERT INTO users VALUES (%Q, %Q, %Q, 'h', '[]', %d)",
                            legacy_rows[i].id, legacy_rows[i].name, legacy_rows[i].key, (int)i);
        CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
        sqlite3_free(sql);
    }
    sqlite3_close(db);
    g_collisions = 0;
    hr_log_set_sink(count_warning);
    auth_store *s = auth_store_sqlite_ops.open(path, NULL, err, sizeof(err));
    CHECK(s && auth_store_sqlite_ops.init(s, err, sizeof(err)) == AUTH_OK);
    char *version = s ? auth_store_sqlite_ops.meta_get(s, "schema_version") : NULL;
    CHECK_STR(version, "2");
    free(version);
    if (s)
        check_migrated(&auth_store_sqlite_ops, s, winner);
    CHECK_STR(winner, legacy_rows[0].id); /* the older account keeps the name */
    auth_store_sqlite_ops.close(s);
    hr_log_set_sink(NULL);
}

/* The same in Redis: legacy keys written by hand, moved by init once. */
static void redis_migrates_usernames(void)
{
    char prefix[64], url[128], err[256] = "", winner[33];
    struct timeval tv = {2, 0};
    snprintf(prefix, sizeof(prefix), "mig%ld", (long)getpid());
    redisContext *c = redisConnectWithTimeout("127.0.0.1", g_redis_port, tv);
    CHECK(c && !c->err);
    if (!c || c->err) {
        redisFree(c);
        return;
    }
    for (size_t i = 0; i < NLEGACY; i++) {
        freeReplyObject(redisCommand(c,
                                     "HSET %s:user:%s username %s password_hash h roles [] "
                                     "created_at %d",
                                     prefix, legacy_rows[i].id, legacy_rows[i].name, (int)i));
        freeReplyObject(redisCommand(c, "SET %s:username:%s %s", prefix, legacy_rows[i].key,
                                     legacy_rows[i].id));
    }
    g_collisions = 0;
    hr_log_set_sink(count_warning);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", g_redis_port);
    auth_store *s = auth_store_redis_ops.open(url, prefix, err, sizeof(err));
    CHECK(s && auth_store_redis_ops.init(s, err, sizeof(err)) == AUTH_OK);
    char *rules = s ? auth_store_redis_ops.meta_get(s, "username_rules") : NULL;
    CHECK_STR(rules, "rfc8265");
    free(rules);
    redisReply *r = redisCommand(c, "EXISTS %s:username:ａｂｃ", prefix);
    CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 0); /* moved */
    freeReplyObject(r);
    /* migrated once: a legacy key written now stays where it is */
    freeReplyObject(redisCommand(c, "SET %s:username:Ωmega %s", prefix, legacy_rows[3].id));
    CHECK(s && auth_store_redis_ops.init(s, err, sizeof(err)) == AUTH_OK);
    r = redisCommand(c, "EXISTS %s:username:Ωmega", prefix);
    CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
    freeReplyObject(r);
    if (s)
        check_migrated(&auth_store_redis_ops, s, winner);
    auth_store_redis_ops.close(s);
    hr_log_set_sink(NULL);
    redisFree(c);
}

static void redis_urls(void)
{
    static const char *bad[] = {"http://127.0.0.1:6379", "redis://",         "redis://host:0",
                                "redis://host:99999",    "redis://host:12x", "redis://pw@host",
                                "redis://host/db"};
    char err[256], url[128];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(auth_store_redis_ops.open(bad[i], "t", err, sizeof(err)) == NULL);
    }
    /* the parser itself is common/redis_url.c's (tests/unit/common/redis_url.c) */

    /* unreachable: open succeeds (reconnects later), init reports it */
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", free_port());
    auth_store *s = auth_store_redis_ops.open(url, "t", err, sizeof(err));
    CHECK(s != NULL);
    CHECK(s && auth_store_redis_ops.init(s, err, sizeof(err)) == AUTH_UNAVAILABLE);
    auth_store_redis_ops.close(s);

    /* a password on a server without one: AUTH fails, reported by init */
    snprintf(url, sizeof(url), "redis://:s%%40cret@127.0.0.1:%d", g_redis_port);
    s = auth_store_redis_ops.open(url, "t", err, sizeof(err));
    CHECK(s && auth_store_redis_ops.init(s, err, sizeof(err)) != AUTH_OK);
    auth_store_redis_ops.close(s);

    /* /db selects the database: a user in db 3 is not in db 0 */
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/3", g_redis_port);
    s = auth_store_redis_ops.open(url, "dbtest", err, sizeof(err));
    auth_user u, got;
    make_user(&u, "in-db-3");
    CHECK(s && auth_store_redis_ops.create_user(s, &u) == AUTH_OK);
    auth_store_redis_ops.close(s);
    snprintf(url, sizeof(url), "redis://[::1]:%d/0", g_redis_port); /* v6 syntax parses */
    s = auth_store_redis_ops.open(url, "dbtest", err, sizeof(err));
    CHECK(s != NULL);
    auth_store_redis_ops.close(s);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", g_redis_port);
    s = auth_store_redis_ops.open(url, "dbtest", err, sizeof(err));
    CHECK(s && auth_store_redis_ops.get_user_by_id(s, u.id, &got) == AUTH_NOT_FOUND);
    auth_store_redis_ops.close(s);
    auth_user_clear(&u);
}

/* A Redis restart costs one failed call; the next call reconnects. */
static void redis_restart_heals(void)
{
    auth_store *s = open_store();
    auth_user got;
    CHECK(g_ops->get_user_by_name(s, "nobody", &got) == AUTH_NOT_FOUND);
    redis_stop();
    CHECK(g_ops->get_user_by_name(s, "nobody", &got) == AUTH_UNAVAILABLE);
    CHECK(redis_start() == 0);
    CHECK(g_ops->get_user_by_name(s, "nobody", &got) == AUTH_NOT_FOUND);
    g_ops->close(s);
}

/*---- Validation and hashing ------------------------------------------------*/

static void usernames(void)
{
    char max[65], over[66];
    memset(max, 'a', 64);
    max[64] = '\0';
    memset(over, 'a', 65);
    over[65] = '\0';
    static const char *good[] = {"alice", "名前", "a b", "O'Brien", "x;y\\z\"", "émile"};
    static const char *bad[] = {"",
                                " lead",
                                "trail ",
                                "tab\there",
                                "del\x7f",
                                "nl\n",
                                "\xc3\x28",
                                "\xc0\xaf",
                                "\xed\xa0\x80",
                                "\xc2\x85",
                                "\xe5\x90",
                                "\xff",
                                "\xf4\x90\x80\x80",
                                "😀",
                                "a  b"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        CHECK(auth_username_invalid(good[i]) == NULL);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(auth_username_invalid(bad[i]) != NULL);
    CHECK(auth_username_invalid(max) == NULL);
    CHECK(auth_username_invalid(over) != NULL);
    CHECK(auth_username_invalid(NULL) != NULL);
}

static void passwords(void)
{
    char big[1026];
    memset(big, 'x', 1025);
    big[1025] = '\0';
    CHECK(auth_password_weak("xkcd-936", "alice") == NULL);
    CHECK(auth_password_weak("correct horse battery staple", NULL) == NULL);
    CHECK(auth_password_weak("short", "alice") != NULL);
    CHECK(auth_password_weak(big, "alice") != NULL);
    big[1024] = '\0';
    CHECK(auth_password_weak(big, "alice") == NULL);
    CHECK(auth_password_weak("Alice12345", "aLICE12345") != NULL);
    CHECK(auth_password_weak("PASSWORD", "bob") != NULL);
    CHECK(auth_password_weak("QwertyUiop", "bob") != NULL);
    CHECK(auth_password_weak("12345678", "bob") != NULL);
    CHECK(auth_password_weak("letmein1", "bob") != NULL);
    CHECK(auth_password_weak(NULL, "bob") != NULL);
}

static void roles(void)
{
    char over[66];
    memset(over, 'r', 65);
    over[65] = '\0';
    CHECK(auth_role_invalid("admin") == NULL);
    CHECK(auth_role_invalid("role:x-y_z.1") == NULL);
    CHECK(auth_role_invalid("") != NULL);
    CHECK(auth_role_invalid(over) != NULL);
    CHECK(auth_role_invalid("a b") != NULL);
    CHECK(auth_role_invalid("é") != NULL);
}

static void hash_verify(void)
{
    char *h = auth_password_hash("correct horse");
    char *h2 = auth_password_hash("correct horse");
    CHECK(h && !strncmp(h, "$argon2id$v=19$m=19456,t=2,p=1$", 31));
    CHECK(h && h2 && strcmp(h, h2) != 0); /* salted */
    CHECK(auth_password_verify(h, "correct horse") == 1);
    CHECK(auth_password_verify(h, "correct horsE") == 0);
    CHECK(auth_password_verify("garbage", "correct horse") == 0);
    CHECK(auth_password_verify(NULL, "x") == 0);
    free(h);
    free(h2);
}

static void helpers(void)
{
    char *k = auth_username_key("AbC-名前-É");
    CHECK_STR(k, "abc-名前-é"); /* Unicode lowercase (tests/unit/auth/username.c has the rest) */
    free(k);
    char *list[] = {"a", "b\"c"};
    char *text = auth_roles_encode(list, 2);
    CHECK_STR(text, "[\"a\",\"b\\\"c\"]");
    auth_user u = {0};
    CHECK(auth_roles_decode(text, &u) == 0);
    CHECK(u.nroles == 2 && !strcmp(u.roles[1], "b\"c"));
    auth_user_clear(&u);
    CHECK(auth_roles_decode("{}", &u) < 0);
    CHECK(auth_roles_decode("[1]", &u) < 0);
    CHECK(u.roles == NULL);
    free(text);

    make_user(&u, "Json");
    json_t *j = auth_user_json(&u);
    CHECK(j && json_object_get(j, "password_hash") == NULL);
    CHECK_STR(json_string_value(json_object_get(j, "username")), "Json");
    CHECK_STR(json_string_value(json_object_get(j, "id")), u.id);
    CHECK(json_integer_value(json_object_get(j, "created_at")) == 1700000000);
    CHECK(json_array_size(json_object_get(j, "roles")) == 2);
    json_decref(j);
    auth_user_clear(&u);
    auth_user_clear(&u); /* twice is safe */
}

/*---- main ------------------------------------------------------------------*/

static void run_sqlite(void)
{
    g_ops = &auth_store_sqlite_ops;
    snprintf(g_target, sizeof(g_target), "%s/users.db", g_dir);
    g_prefix[0] = '\0';
    store_cases();
    service_cases();
    RUN(service_queue_bound);
    RUN(service_free_pending);
    RUN(sqlite_concurrent_init);
    RUN(sqlite_existing_meta);
    RUN(sqlite_migrates_usernames);
}

static void run_redis(void)
{
    if (access(REDIS_SERVER, X_OK) != 0) {
        fprintf(stderr,
                "FAIL: %s is not installed; the Redis store cannot be tested "
                "(install the redis-server package)\n",
                REDIS_SERVER);
        CHECK(0);
        return;
    }
    g_redis_port = free_port();
    if (redis_start() < 0) {
        fprintf(stderr, "FAIL: cannot start %s on port %d\n", REDIS_SERVER, g_redis_port);
        CHECK(0);
        return;
    }
    g_ops = &auth_store_redis_ops;
    snprintf(g_target, sizeof(g_target), "redis://127.0.0.1:%d", g_redis_port);
    snprintf(g_prefix, sizeof(g_prefix), "test%ld", (long)getpid());
    g_logins = 100;
    store_cases();
    service_cases();
    RUN(redis_urls);
    RUN(redis_migrates_usernames);
    RUN(redis_restart_heals);
    redis_stop();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_dir, sizeof(g_dir), "/tmp/herald-users-XXXXXX");
    if (!mkdtemp(g_dir) || pipe2(g_wake, O_NONBLOCK | O_CLOEXEC) < 0) {
        perror("setup");
        return 1;
    }
    atexit(redis_stop);
    atexit(remove_dir);

    RUN(usernames);
    RUN(passwords);
    RUN(roles);
    RUN(hash_verify);
    RUN(helpers);
    run_sqlite();
    run_redis();
    return TEST_DONE();
}
