/*
 * service.c - user operations on a pool of worker threads (see auth.h,
 * "The service runs user operations...").
 *
 * Argon2id costs ~50-60 ms of CPU and store calls block on disk or on the
 * network, so none of it may run on the event loop. The loop thread
 * submits a job (arguments copied into it) and returns at once; a worker
 * runs it against its own store connection and posts the finished job to
 * the loop that submitted it (its auth_reply_to); that loop then calls
 * auth_job_finish on its own thread, which runs the callback.
 *
 * Ownership: a job is owned by the queue, then by exactly one worker, then
 * by the receiver of the post, then by auth_job_finish (or
 * auth_job_discard), which frees it. Nothing of a job is shared between threads while
 * two of them could touch it.
 */
#include "auth/auth.h"
#include "common/common.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE_MAX 10000     /* jobs waiting for a worker; beyond: "server busy" */
#define WORKERS_MAX 64      /* more threads than this only add contention */
#define MAX_ROLES 32        /* roles per user at registration */
#define TOKEN_MAX 256       /* longer refresh tokens are not ours: not found */
#define PASSWORD_MAX 1024   /* same bound as auth_password_weak */
#define DEFAULT_TTL 2592000 /* refresh tokens: 30 days when the caller gives none */

/*---- Jobs ------------------------------------------------------------------*/

typedef enum job_kind {
    JOB_REGISTER,
    JOB_LOGIN,
    JOB_REFRESH,
    JOB_GET,
    JOB_DELETE,
    JOB_REVOKED,
} job_kind;

typedef struct auth_job {
    struct auth_job *next;
    job_kind kind;
    const auth_reply_to *to; /* where the finished job is posted */
    /* arguments, copied from the caller and owned by the job */
    char *username;
    char *password; /* wiped before it is freed */
    char *id;
    char *token; /* presented refresh token, wiped before free */
    char **roles;
    size_t nroles;
    long ttl;
    auth_user_cb user_cb; /* one of the two callbacks is set */
    auth_token_cb token_cb;
    auth_revoked_cb revoked_cb;
    void *ud;
    /* result, written by the worker */
    auth_status st;
    const char *msg;       /* static text, or msgbuf */
    char msgbuf[200];      /* a message built for this job (username rules) */
    char *display;         /* register: the enforced username */
    auth_user user;        /* filled on success */
    char *refresh;         /* new clear refresh token (login, refresh), wiped before free */
    auth_revocation *revs; /* JOB_REVOKED result */
    size_t nrevs, caprevs;
} job;

typedef struct auth_job job;

/* Frees a string that held a secret, clearing it first. */
static void free_secret(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static void job_free(job *j)
{
    free(j->username);
    free(j->display);
    free_secret(j->password);
    free(j->id);
    free_secret(j->token);
    for (size_t i = 0; j->roles && i < j->nroles; i++)
        free(j->roles[i]);
    free(j->roles);
    auth_user_clear(&j->user);
    free_secret(j->refresh);
    for (size_t i = 0; i < j->nrevs; i++)
        free(j->revs[i].user_id);
    free(j->revs);
    free(j);
}

static void job_list_free(job *j)
{
    while (j) {
        job *next = j->next;
        job_free(j);
        j = next;
    }
}

/* A fixed, readable message for every failure, so callbacks can always
 * print `message`. Validation failures carry their own text instead. */
static const char *status_message(auth_status st)
{
    switch (st) {
    case AUTH_OK:
        return NULL;
    case AUTH_NOT_FOUND:
        return "not found";
    case AUTH_TAKEN:
        return "username already taken";
    case AUTH_INVALID:
        return "invalid request";
    case AUTH_BAD_CREDENTIALS:
        return "wrong username or password";
    case AUTH_UNAVAILABLE:
        return "user store unavailable";
    default:
        return "internal error";
    }
}

/*---- The service -----------------------------------------------------------*/

typedef struct worker {
    struct auth_service *svc;
    auth_store *store; /* this thread's own connection */
    pthread_t thread;
    int started;
} worker;

struct auth_service {
    const auth_store_ops *ops;
    char *dummy_hash; /* verified against when a login names no user */

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;  /* signalled when a job is queued or on stop */
    job *head, *tail;   /* waiting jobs, FIFO */
    size_t queued;
    int stop;

    worker *workers;
    int nworkers;
};

/* Hands a finished job back to the loop that submitted it. */
static void complete(auth_service *svc, job *j)
{
    (void)svc;
    if (j->st != AUTH_OK && !j->msg)
        j->msg = status_message(j->st);
    j->next = NULL;
    j->to->post(j->to->ud, j);
}

/* Queues a job for the workers. A job that would overflow the queue (or
 * meets a stopping service) completes at once, through the same path, so
 * callers see one behaviour. */
static void submit(auth_service *svc, job *j)
{
    pthread_mutex_lock(&svc->mu);
    int refuse = j->st != AUTH_OK || svc->queued >= QUEUE_MAX || svc->stop;
    if (!refuse) {
        j->next = NULL;
        if (svc->tail)
            svc->tail->next = j;
        else
            svc->head = j;
        svc->tail = j;
        svc->queued++;
        pthread_cond_signal(&svc->cv);
    }
    pthread_mutex_unlock(&svc->mu);
    if (refuse) {
        if (j->st == AUTH_OK) {
            j->st = AUTH_UNAVAILABLE;
            j->msg = "server busy";
        }
        complete(svc, j);
    }
}

/* Takes the next job, sleeping while there is none; NULL on stop. Pending
 * jobs are left for auth_service_free to drop. */
static job *next_job(auth_service *svc)
{
    pthread_mutex_lock(&svc->mu);
    while (!svc->stop && !svc->head)
        pthread_cond_wait(&svc->cv, &svc->mu);
    job *j = svc->stop ? NULL : svc->head;
    if (j) {
        svc->head = j->next;
        if (!svc->head)
            svc->tail = NULL;
        svc->queued--;
    }
    pthread_mutex_unlock(&svc->mu);
    return j;
}

/*---- Tokens and ids --------------------------------------------------------*/

/* Lowercase hex of n random bytes. Caller frees. */
static char *random_hex(size_t n)
{
    char *hex = hr_malloc(2 * n + 1);
    hr_random_hex(hex, n);
    return hex;
}

/* RFC 4648 §5 base64url without padding: safe in URLs and form bodies. */
static void base64url(const unsigned char *in, size_t n, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = tbl[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = tbl[v & 63];
    }
    out[o] = '\0';
}

/* The store keeps only SHA-256 of a refresh token (hex): a leaked database
 * does not hand out sessions. A plain hash suffices, the token being 256
 * random bits. Returns 0 or -1. */
static int token_hash(const char *token, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(token, strlen(token), md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return -1;
    for (unsigned int i = 0; i < mdlen; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

/* Creates a refresh token for j->user, stores its hash, and leaves the
 * clear token in j->refresh for the callback. */
static auth_status issue_refresh(auth_store *store, const auth_store_ops *ops, job *j)
{
    unsigned char raw[32];
    char hash[65];
    hr_random_bytes(raw, sizeof(raw));
    j->refresh = hr_malloc(44);
    base64url(raw, sizeof(raw), j->refresh);
    OPENSSL_cleanse(raw, sizeof(raw));
    if (token_hash(j->refresh, hash) < 0)
        return AUTH_INTERNAL;
    long ttl = j->ttl > 0 ? j->ttl : DEFAULT_TTL;
    return ops->put_refresh(store, hash, j->user.id, (int64_t)time(NULL) + ttl);
}

/*---- Operations (worker threads) -------------------------------------------*/

/* Also sets j->display, the form of the name that is stored. */
static const char *register_invalid(job *j)
{
    const char *bad = NULL;
    if (auth_username_prepare(j->username, &j->display, NULL, j->msgbuf, sizeof(j->msgbuf)) < 0)
        bad = j->msgbuf;
    if (!bad)
        bad = auth_password_weak(j->password, j->display);
    if (!bad && j->nroles > MAX_ROLES)
        bad = "too many roles (at most 32)";
    for (size_t i = 0; !bad && i < j->nroles; i++)
        bad = auth_role_invalid(j->roles[i]);
    return bad;
}

static auth_status do_register(auth_service *svc, auth_store *store, job *j)
{
    if ((j->msg = register_invalid(j)))
        return AUTH_INVALID;
    auth_user *u = &j->user;
    u->id = random_hex(16);
    u->username = j->display; /* moved */
    j->display = NULL;
    u->password_hash = auth_password_hash(j->password);
    u->created_at = (int64_t)time(NULL);
    u->roles = j->roles; /* moved: the job no longer owns them */
    u->nroles = j->nroles;
    j->roles = NULL;
    j->nroles = 0;
    if (!u->id || !u->username || !u->password_hash)
        return AUTH_INTERNAL;
    return svc->ops->create_user(store, u);
}

/* Every path through a login with a plausible password costs one Argon2id
 * verification, so response times do not reveal which usernames exist. */
static auth_status do_login(auth_service *svc, auth_store *store, job *j)
{
    if (strlen(j->password) > PASSWORD_MAX)
        return AUTH_BAD_CREDENTIALS; /* refused by length alone: no oracle */
    auth_status st = svc->ops->get_user_by_name(store, j->username, &j->user);
    if (st == AUTH_NOT_FOUND) {
        auth_password_verify(svc->dummy_hash, j->password);
        return AUTH_BAD_CREDENTIALS;
    }
    if (st != AUTH_OK)
        return st;
    if (!auth_password_verify(j->user.password_hash, j->password))
        return AUTH_BAD_CREDENTIALS;
    return issue_refresh(store, svc->ops, j);
}

/* Rotation: the presented token is consumed before anything else, so it
 * works once even if two requests race with it. A deleted user's tokens
 * find no user and stop working. */
static auth_status do_refresh(auth_service *svc, auth_store *store, job *j)
{
    char hash[65], *user_id = NULL;
    if (strlen(j->token) > TOKEN_MAX)
        return AUTH_NOT_FOUND;
    if (token_hash(j->token, hash) < 0)
        return AUTH_INTERNAL;
    auth_status st = svc->ops->take_refresh(store, hash, (int64_t)time(NULL), &user_id);
    if (st == AUTH_OK)
        st = svc->ops->get_user_by_id(store, user_id, &j->user);
    free(user_id);
    return st == AUTH_OK ? issue_refresh(store, svc->ops, j) : st;
}

/* The revocation is recorded before the delete: if the delete then fails,
 * a retry still works, whereas the other order could leave a deleted user
 * whose access tokens are never revoked. */
static auth_status do_delete(auth_service *svc, auth_store *store, job *j)
{
    auth_status st = svc->ops->get_user_by_id(store, j->id, &j->user);
    if (st == AUTH_OK)
        st = svc->ops->put_revoked(store, j->id, (int64_t)time(NULL));
    if (st == AUTH_OK)
        st = svc->ops->delete_user(store, j->id);
    return st;
}

/* list_revoked callback: appends to the job's array. */
static void collect_revocation(void *ud, const char *id, int64_t at)
{
    job *j = ud;
    if (j->nrevs == j->caprevs) {
        j->caprevs = j->caprevs ? j->caprevs * 2 : 16;
        j->revs = hr_realloc(j->revs, j->caprevs * sizeof(*j->revs));
    }
    j->revs[j->nrevs++] = (auth_revocation){hr_strdup(id), at};
}

static void run_job(auth_service *svc, auth_store *store, job *j)
{
    switch (j->kind) {
    case JOB_REGISTER:
        j->st = do_register(svc, store, j);
        break;
    case JOB_LOGIN:
        j->st = do_login(svc, store, j);
        break;
    case JOB_REFRESH:
        j->st = do_refresh(svc, store, j);
        break;
    case JOB_GET:
        j->st = svc->ops->get_user_by_id(store, j->id, &j->user);
        break;
    case JOB_DELETE:
        j->st = do_delete(svc, store, j);
        break;
    case JOB_REVOKED:
        j->st = svc->ops->list_revoked(store, collect_revocation, j);
        break;
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    job *j;
    /* hiredis writes with write(): a Redis that went away must give this
     * thread EPIPE, not kill the process, even where SIGPIPE is not ignored
     * process-wide (the CLI). */
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
    while ((j = next_job(w->svc))) {
        run_job(w->svc, w->store, j);
        complete(w->svc, j);
    }
    return NULL;
}

/*---- Life cycle ------------------------------------------------------------*/

/* Opens one store per worker (init on the first, which creates or checks
 * the schema) before any thread starts, so errors reach the caller. */
static int open_stores(auth_service *svc, const auth_service_config *cfg, char *err, size_t errlen)
{
    for (int i = 0; i < svc->nworkers; i++) {
        worker *w = &svc->workers[i];
        w->svc = svc;
        if (!(w->store = cfg->store->open(cfg->target, cfg->prefix, err, errlen)))
            return -1;
        if (i == 0 && cfg->store->init(w->store, err, errlen) != AUTH_OK) {
            if (!err[0])
                snprintf(err, errlen, "cannot initialise the %s user store", cfg->store->name);
            return -1;
        }
    }
    return 0;
}

static int start_workers(auth_service *svc, char *err, size_t errlen)
{
    for (int i = 0; i < svc->nworkers; i++) {
        worker *w = &svc->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            snprintf(err, errlen, "cannot start user-store worker threads");
            return -1;
        }
        w->started = 1;
    }
    return 0;
}

auth_service *auth_service_new(const auth_service_config *cfg, char *err, size_t errlen)
{
    if (errlen)
        err[0] = '\0';
    auth_service *svc = hr_calloc(1, sizeof(*svc));
    pthread_mutex_init(&svc->mu, NULL);
    pthread_cond_init(&svc->cv, NULL);
    svc->ops = cfg->store;
    svc->nworkers = cfg->workers > 0 ? cfg->workers : 2;
    if (svc->nworkers > WORKERS_MAX)
        svc->nworkers = WORKERS_MAX;
    /* hashed here, with the current parameters, so the dummy costs the
     * same as a real verification */
    svc->dummy_hash = auth_password_hash("herald: no such user");
    svc->workers = hr_calloc(svc->nworkers, sizeof(worker));
    if (!svc->dummy_hash) {
        snprintf(err, errlen, "cannot hash a password (Argon2id or the random source failed)");
        auth_service_free(svc);
        return NULL;
    }
    if (open_stores(svc, cfg, err, errlen) < 0 || start_workers(svc, err, errlen) < 0) {
        auth_service_free(svc);
        return NULL;
    }
    return svc;
}

/* Callers must not free the service from inside one of its callbacks. A
 * worker finishing its last job may still post until this returns, so free
 * the service before the receivers of its posts. */
void auth_service_free(auth_service *svc)
{
    if (!svc)
        return;
    pthread_mutex_lock(&svc->mu);
    svc->stop = 1;
    pthread_cond_broadcast(&svc->cv);
    pthread_mutex_unlock(&svc->mu);
    for (int i = 0; svc->workers && i < svc->nworkers; i++) {
        worker *w = &svc->workers[i];
        if (w->started)
            pthread_join(w->thread, NULL);
        if (w->store)
            svc->ops->close(w->store);
    }
    /* threads are gone: no lock needed; callbacks deliberately not run */
    job_list_free(svc->head);
    pthread_cond_destroy(&svc->cv);
    pthread_mutex_destroy(&svc->mu);
    free(svc->dummy_hash);
    free(svc->workers);
    free(svc);
}

void auth_job_finish(auth_job *j)
{
    const auth_user *u = j->st == AUTH_OK ? &j->user : NULL;
    if (j->revoked_cb)
        j->revoked_cb(j->ud, j->st, j->revs, j->nrevs);
    else if (j->token_cb)
        j->token_cb(j->ud, j->st, u, j->st == AUTH_OK ? j->refresh : NULL, j->msg);
    else if (j->user_cb)
        j->user_cb(j->ud, j->st, u, j->msg);
    job_free(j);
}

void auth_job_discard(auth_job *j)
{
    job_free(j);
}

/*---- Submitting (loop thread) ----------------------------------------------*/

/* A new job with its callback. Returns NULL only if even the job cannot be
 * allocated; the caller then reports the failure synchronously. */
static job *job_new(const auth_reply_to *to, job_kind kind, auth_user_cb ucb, auth_token_cb tcb,
                    void *ud)
{
    job *j = hr_calloc(1, sizeof(*j));
    j->to = to;
    j->kind = kind;
    j->user_cb = ucb;
    j->token_cb = tcb;
    j->ud = ud;
    return j;
}

/* Copies an argument into the job ("" for NULL). */
static char *job_dup(const char *s)
{
    return hr_strdup(s ? s : "");
}

static void copy_roles(job *j, char *const *roles, size_t nroles)
{
    if (!nroles)
        return;
    j->roles = hr_calloc(nroles, sizeof(char *));
    j->nroles = nroles;
    for (size_t i = 0; i < nroles; i++)
        j->roles[i] = job_dup(roles[i]);
}

void auth_register(auth_service *svc, const auth_reply_to *to, const char *username,
                   const char *password, char *const *roles, size_t nroles, auth_user_cb cb,
                   void *ud)
{
    job *j = job_new(to, JOB_REGISTER, cb, NULL, ud);
    j->username = job_dup(username);
    j->password = job_dup(password);
    copy_roles(j, roles, nroles);
    submit(svc, j);
}

void auth_login(auth_service *svc, const auth_reply_to *to, const char *username,
                const char *password, long refresh_ttl, auth_token_cb cb, void *ud)
{
    job *j = job_new(to, JOB_LOGIN, NULL, cb, ud);
    j->username = job_dup(username);
    j->password = job_dup(password);
    j->ttl = refresh_ttl;
    submit(svc, j);
}

void auth_refresh(auth_service *svc, const auth_reply_to *to, const char *refresh_token,
                  long refresh_ttl, auth_token_cb cb, void *ud)
{
    job *j = job_new(to, JOB_REFRESH, NULL, cb, ud);
    j->token = job_dup(refresh_token);
    j->ttl = refresh_ttl;
    submit(svc, j);
}

static void submit_by_id(auth_service *svc, const auth_reply_to *to, job_kind kind, const char *id,
                         auth_user_cb cb, void *ud)
{
    job *j = job_new(to, kind, cb, NULL, ud);
    j->id = job_dup(id);
    submit(svc, j);
}

void auth_get_user(auth_service *svc, const auth_reply_to *to, const char *id, auth_user_cb cb,
                   void *ud)
{
    submit_by_id(svc, to, JOB_GET, id, cb, ud);
}

void auth_delete_user(auth_service *svc, const auth_reply_to *to, const char *id, auth_user_cb cb,
                      void *ud)
{
    submit_by_id(svc, to, JOB_DELETE, id, cb, ud);
}

void auth_list_revocations(auth_service *svc, const auth_reply_to *to, auth_revoked_cb cb, void *ud)
{
    job *j = job_new(to, JOB_REVOKED, NULL, NULL, ud);
    j->revoked_cb = cb;
    submit(svc, j);
}
