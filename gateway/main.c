/*
 * main.c - the herald command: `serve` (default), `token`, `--help`,
 * `--version`. Parses the subcommand's own flags, hands the rest to the
 * configuration loader, then runs the chosen command.
 */
#include "gateway/cli.h"
#include "gateway/config.h"
#include "common/log.h"
#include "gateway/node.h"
#include "gateway/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <semaphore.h>
#include <time.h>

extern char **environ;

/* Flags that belong to `herald token`, removed from argv before the common
 * configuration loader sees it. */
typedef struct token_args {
    const char *url;   /* publish, tail: --url */
    const char *token; /* tail: --token (else one is minted) */
    const char *sub;
    long ttl;
    const char *roles[32];
    size_t nroles;
} token_args;

/* Takes the value of a --name or --name=value flag at argv[*i]; NULL if
 * argv[*i] is not that flag. Advances *i past a separate value. */
static const char *flag_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] == '\0' && *i + 1 < argc)
        return argv[++*i];
    return NULL;
}

/* Splits the subcommand's flags (--sub, --ttl, --role for token; --role
 * for user add) out of argv; the rest are compacted into argv/argc.
 * Returns 0, or -1 with a message printed. */
static int parse_cmd_args(int *argc, char **argv, token_args *ta, int is_token)
{
    int out = 0;
    const char *v;
    for (int i = 0; i < *argc; i++) {
        if ((v = flag_value(*argc, argv, &i, "--url"))) {
            ta->url = v;
        } else if ((v = flag_value(*argc, argv, &i, "--token"))) {
            ta->token = v;
        } else if (is_token && (v = flag_value(*argc, argv, &i, "--sub"))) {
            ta->sub = v;
        } else if (is_token && (v = flag_value(*argc, argv, &i, "--ttl"))) {
            char *end;
            ta->ttl = strtol(v, &end, 10);
            if (*end || ta->ttl <= 0) {
                fprintf(stderr, "herald token: --ttl must be a positive number of seconds\n");
                return -1;
            }
        } else if ((v = flag_value(*argc, argv, &i, "--role"))) {
            if (ta->nroles == sizeof(ta->roles) / sizeof(ta->roles[0])) {
                fprintf(stderr, "herald token: too many --role flags\n");
                return -1;
            }
            ta->roles[ta->nroles++] = v;
        } else {
            argv[out++] = argv[i];
        }
    }
    *argc = out;
    if (is_token && (!ta->sub || !ta->sub[0])) {
        fprintf(stderr, "herald token: --sub ID is required\n");
        return -1;
    }
    return 0;
}

/* Without HERALD_JWT_SECRET or a public key, the secret generated once and
 * kept in the store is used (SPEC §1) - in embedded mode only. In cluster
 * mode the store is Redis, which every backend that publishes through it
 * can read: a secret kept there would let any of them mint admin tokens,
 * so cluster mode requires the secret (or a public key) to be given. */
static int ensure_jwt_secret(hr_config *cfg)
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

static int cmd_token(hr_config *cfg, const token_args *ta)
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
static int cmd_user_add(hr_config *cfg, const char *name, const token_args *ta)
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

/*---- herald publish, tail, check-config -------------------------------------*/

static int cmd_publish(hr_config *cfg, const token_args *ta, char **pos)
{
    hr_cli_target t;
    if (hr_cli_target_parse(cfg, ta->url, &t) < 0)
        return 2;
    return hr_cli_publish(cfg, &t, pos[0], pos[1]);
}

/* Without --token, mints one for "herald-cli" whose channels claim grants
 * exactly this channel, signed with the configured key. */
static int cmd_tail(hr_config *cfg, const token_args *ta, const char *channel)
{
    hr_cli_target t;
    char err[256];
    if (hr_cli_target_parse(cfg, ta->url, &t) < 0)
        return 2;
    if (ta->token)
        return hr_cli_tail(&t, ta->token, channel);
    if (ensure_jwt_secret(cfg) < 0)
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
    int rc = hr_cli_tail(&t, tok, channel);
    free(tok);
    return rc;
}

/* The configuration was loaded (and so checked) by main; what only the
 * start would find is checked here too. */
static int cmd_check_config(hr_config *cfg)
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

static int cmd_serve(hr_config *cfg)
{
    hr_node node;
    int rc = 1;
    if (hr_node_init(&node, cfg, hr_server_hooks_for(cfg)) == 0)
        rc = hr_node_run(&node);
    hr_node_destroy(&node);
    return rc;
}

static int has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], flag))
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    hr_config cfg;
    token_args ta = {0};
    hr_alloc_init();
    char err[512];
    const char *cmd = "serve";
    int rc = 1;

    if (has_flag(argc, argv, "--version")) {
        printf("herald %s\n", HERALD_VERSION);
        return 0;
    }
    if (has_flag(argc, argv, "--help") || has_flag(argc, argv, "-h")) {
        fputs(hr_config_usage(), stdout);
        return 0;
    }
    argc--, argv++; /* drop the program name */
    if (argc > 0 && argv[0][0] != '-') {
        cmd = argv[0];
        argc--, argv++;
    }
    const char *user_name = NULL;
    char *pos[2] = {NULL, NULL};
    char **owned_argv = NULL; /* check-config's rewritten argv */
    int npos = !strcmp(cmd, "publish")                                ? 2
               : !strcmp(cmd, "tail") || !strcmp(cmd, "check-config") ? 1
                                                                      : 0;
    if (npos) {
        for (int i = 0; i < npos; i++) {
            if (argc <= i || (argv[i][0] == '-' && strcmp(cmd, "publish"))) {
                fprintf(stderr, "herald: usage: herald publish CHANNEL JSON [--url URL] | "
                                "herald tail CHANNEL [--url URL] [--token JWT] | "
                                "herald check-config FILE\n");
                return 2;
            }
            pos[i] = argv[i];
        }
        argc -= npos, argv += npos;
    }
    if (!strcmp(cmd, "check-config")) {
        /* the file is the --config the loader reads, flags and env after it */
        static char flag[] = "--config";
        char **nargv = owned_argv = hr_calloc((size_t)argc + 3, sizeof(*nargv));
        nargv[0] = flag;
        nargv[1] = pos[0];
        memcpy(nargv + 2, argv, (size_t)argc * sizeof(*argv));
        argv = nargv;
        argc += 2;
    }
    if (npos) {
        /* handled below */
    } else if (!strcmp(cmd, "user")) {
        if (argc < 2 || strcmp(argv[0], "add") || argv[1][0] == '-') {
            fprintf(stderr, "herald: usage: herald user add NAME [--role ROLE]...\n");
            return 2;
        }
        user_name = argv[1];
        argc -= 2, argv += 2;
    } else if (strcmp(cmd, "serve") && strcmp(cmd, "token")) {
        fprintf(stderr, "herald: unknown command \"%s\" (try --help)\n", cmd);
        return 2;
    }
    if (strcmp(cmd, "serve") && strcmp(cmd, "check-config") &&
        parse_cmd_args(&argc, argv, &ta, !strcmp(cmd, "token")) < 0)
        return 2;
    hr_config_defaults(&cfg);
    if (hr_config_load(&cfg, argc, argv, environ, err, sizeof(err)) < 0) {
        fprintf(stderr, "herald: %s\n", err);
        hr_config_clear(&cfg);
        free(owned_argv);
        return 2;
    }
    hr_log_init(cfg.log_format, cfg.log_level, cfg.node_id);
    if (user_name)
        rc = cmd_user_add(&cfg, user_name, &ta);
    else if (!strcmp(cmd, "publish"))
        rc = cmd_publish(&cfg, &ta, pos);
    else if (!strcmp(cmd, "tail"))
        rc = cmd_tail(&cfg, &ta, pos[0]);
    else if (!strcmp(cmd, "check-config"))
        rc = cmd_check_config(&cfg);
    else if (ensure_jwt_secret(&cfg) == 0)
        rc = !strcmp(cmd, "token") ? cmd_token(&cfg, &ta) : cmd_serve(&cfg);
    hr_config_clear(&cfg);
    free(owned_argv);
    return rc;
}
