/*
 * commands.c - the herald subcommands that do not serve (see cli.h):
 * token, user add, publish, tail and check-config, and the JWT secret the
 * gateway generates in embedded mode.
 */
#include "cli/cli.h"
#include "common/log.h"
#include "gateway/limits.h"

#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*---- The JWT secret, herald token ------------------------------------------*/

/* Without HERALD_JWT_SECRET or a public key, the secret generated once and
 * kept in the store is used (SPEC §1) - in embedded mode only. In cluster
 * mode the store is Redis, which every backend that publishes through it
 * can read: a secret kept there would let any of them mint admin tokens,
 * so cluster mode requires the secret (or a public key) to be given. */
int hr_cli_jwt_secret(hr_config *cfg)
{
    char err[256];
    int created = 0;
    if (cfg->redis_url && !cfg->jwt_secret && cfg->jwt_public_key && !cfg->ncluster_secrets) {
        hr_error("config", "cluster mode with a public key needs HERALD_CLUSTER_SECRET: the "
                           "secret the nodes sign their control messages with (membership, "
                           "disconnects, revocations)");
        return -1;
    }
    if (cfg->jwt_secret || cfg->jwt_public_key)
        return 0;
    if (cfg->redis_url) {
        hr_error("config", "cluster mode (HERALD_REDIS_URL) needs HERALD_JWT_SECRET or "
                           "HERALD_JWT_PUBLIC_KEY: a generated secret kept in Redis would be "
                           "readable by every client of that Redis");
        return -1;
    }
    const auth_store_ops *ops = hr_config_store(cfg);
    if (auth_secret_load_or_create(ops, hr_config_store_target(cfg), cfg->redis_prefix,
                                   &cfg->jwt_secret, &created, err, sizeof(err)) < 0) {
        hr_error("config", "%s", err);
        return -1;
    }
    hr_warn("config", "HERALD_JWT_SECRET is not set: using the %s secret kept in the %s store",
            created ? "newly generated" : "generated", ops->name);
    return 0;
}

int hr_cli_token(hr_config *cfg, const hr_cli_args *ta)
{
    auth_jwt_config jwt;
    auth_identity id = {0};
    char err[256];

    auth_jwt_settings js;
    hr_config_jwt_settings(cfg, &js);
    if (auth_jwt_setup(&jwt, &js, err, sizeof(err)) < 0) {
        fprintf(stderr, "herald token: %s\n", err);
        return 1;
    }
    id.sub = (char *)ta->sub;
    id.roles = (char **)ta->roles;
    id.nroles = ta->nroles;
    char *tok = auth_jwt_issue(&jwt, &id, time(NULL), ta->ttl ? ta->ttl : cfg->token_ttl);
    auth_jwt_config_clear(&jwt);
    if (!tok) {
        fprintf(stderr, "herald token: cannot sign (a private key is needed with %s)\n",
                cfg->jwt_public_key ? "a public key" : "this configuration");
        return 1;
    }
    printf("%s\n", tok);
    free(tok);
    return 0;
}

/*---- herald user add ------------------------------------------------------*/

/* The CLI has no event loop: the worker hands the finished job over
 * through a semaphore and the main thread finishes it. */
typedef struct user_add {
    sem_t done;
    auth_job *job; /* set by the worker before it posts */
    int rc;
} user_add;

static void user_add_post(void *ud, auth_job *j)
{
    user_add *ua = ud;
    ua->job = j;
    sem_post(&ua->done);
}

static void user_added(void *ud, auth_status st, const auth_user *u, const char *message)
{
    user_add *ua = ud;
    if (st == AUTH_OK) {
        json_t *o = auth_user_json(u);
        char *s = json_dumps(o, JSON_COMPACT);
        printf("%s\n", s ? s : "");
        free(s);
        json_decref(o);
        ua->rc = 0;
    } else {
        fprintf(stderr, "herald user add: %s\n",
                st == AUTH_TAKEN ? "that username is taken"
                : message        ? message
                                 : "the user store is unavailable");
        ua->rc = 1;
    }
}

/* Reads one line (the password) from stdin without its newline. Caller
 * frees. */
static char *read_password(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return line;
}

/* Runs the same registration path as POST /api/v1/users, on one worker. */
int hr_cli_user_add(hr_config *cfg, const char *name, const hr_cli_args *ta)
{
    char err[256] = "";
    user_add ua = {.rc = 1};
    char *password = read_password();
    if (!password) {
        fprintf(stderr, "herald user add: the password is read from stdin\n");
        return 2;
    }
    sem_init(&ua.done, 0, 0);
    auth_service_config sc = {hr_config_store(cfg), hr_config_store_target(cfg), cfg->redis_prefix,
                              1};
    auth_reply_to to = {user_add_post, &ua};
    auth_service *svc = auth_service_new(&sc, err, sizeof(err));
    if (svc) {
        auth_register(svc, &to, name, password, (char *const *)ta->roles, ta->nroles, user_added,
                      &ua);
        while (sem_wait(&ua.done) < 0)
            ; /* EINTR */
        auth_job_finish(ua.job);
        auth_service_free(svc);
    } else {
        fprintf(stderr, "herald user add: %s\n", err);
    }
    free(password);
    sem_destroy(&ua.done);
    return ua.rc;
}

/*---- herald publish, tail --------------------------------------------------*/

int hr_cli_publish(hr_config *cfg, const hr_cli_args *ta, const char *channel, const char *json)
{
    hr_cli_target t;
    if (hr_cli_target_parse(cfg, ta->url, &t) < 0)
        return 2;
    return hr_cli_http_publish(cfg, &t, channel, json);
}

/* Without --token, mints one for "herald-cli" whose channels claim grants
 * exactly this channel, signed with the configured key. */
int hr_cli_tail(hr_config *cfg, const hr_cli_args *ta, const char *channel)
{
    hr_cli_target t;
    char err[256];
    if (hr_cli_target_parse(cfg, ta->url, &t) < 0)
        return 2;
    if (ta->token)
        return hr_cli_ws_tail(&t, ta->token, channel);
    if (hr_cli_jwt_secret(cfg) < 0)
        return 1;
    auth_jwt_config jwt;
    auth_jwt_settings js;
    hr_config_jwt_settings(cfg, &js);
    if (auth_jwt_setup(&jwt, &js, err, sizeof(err)) < 0) {
        fprintf(stderr, "herald tail: %s\n", err);
        return 1;
    }
    char *chans[1] = {(char *)channel};
    auth_identity id = {.sub = "herald-cli", .channels = chans, .nchannels = 1};
    char *tok = auth_jwt_issue(&jwt, &id, time(NULL), 86400);
    auth_jwt_config_clear(&jwt);
    if (!tok) {
        fprintf(stderr, "herald tail: cannot sign a token (give one with --token)\n");
        return 1;
    }
    int rc = hr_cli_ws_tail(&t, tok, channel);
    free(tok);
    return rc;
}

/*---- herald check-config ---------------------------------------------------*/

/* The configuration was loaded (and so checked) by main; what only the
 * start would find is checked here too. */
int hr_cli_check_config(hr_config *cfg)
{
    char err[256];
    hr_netmask *nm = NULL;
    if (hr_netmasks_parse(cfg->trusted_proxies, cfg->ntrusted_proxies, &nm, err, sizeof(err)) < 0) {
        fprintf(stderr, "herald check-config: %s\n", err);
        return 2;
    }
    free(nm);
    if (cfg->jwt_secret || cfg->jwt_public_key) {
        auth_jwt_config jwt;
        auth_jwt_settings js;
        hr_config_jwt_settings(cfg, &js);
        if (auth_jwt_setup(&jwt, &js, err, sizeof(err)) < 0) {
            fprintf(stderr, "herald check-config: %s\n", err);
            return 2;
        }
        auth_jwt_config_clear(&jwt);
    }
    if (cfg->redis_url && !cfg->jwt_secret && !cfg->jwt_public_key) {
        fprintf(stderr, "herald check-config: cluster mode needs HERALD_JWT_SECRET or "
                        "HERALD_JWT_PUBLIC_KEY\n");
        return 2;
    }
    if (cfg->redis_url && !cfg->jwt_secret && !cfg->ncluster_secrets) {
        fprintf(stderr, "herald check-config: cluster mode with a public key needs "
                        "HERALD_CLUSTER_SECRET\n");
        return 2;
    }
    printf("ok: %zu namespace(s), %s mode\n", cfg->nnamespaces,
           cfg->redis_url ? "cluster" : "embedded");
    return 0;
}
