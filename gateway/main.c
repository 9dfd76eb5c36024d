/*
 * main.c - the herald command: `serve` (default), `token`, `--help`,
 * `--version`. Parses the subcommand's own flags, hands the rest to the
 * configuration loader, then runs the chosen command.
 */
#include "config.h"
#include "log.h"
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern char **environ;

/* Flags that belong to `herald token`, removed from argv before the common
 * configuration loader sees it. */
typedef struct token_args {
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

/* Splits token flags out of argv; the rest are compacted into argv/argc.
 * Returns 0, or -1 with a message printed. */
static int parse_token_args(int *argc, char **argv, token_args *ta)
{
    int out = 0;
    const char *v;
    for (int i = 0; i < *argc; i++) {
        if ((v = flag_value(*argc, argv, &i, "--sub"))) {
            ta->sub = v;
        } else if ((v = flag_value(*argc, argv, &i, "--ttl"))) {
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
    if (!ta->sub || !ta->sub[0]) {
        fprintf(stderr, "herald token: --sub ID is required\n");
        return -1;
    }
    return 0;
}

/* Without HERALD_JWT_SECRET or a public key, the secret generated once and
 * kept in the store is used (SPEC §1). */
static int ensure_jwt_secret(hr_config *cfg)
{
    char err[256];
    int created = 0;
    if (cfg->jwt_secret || cfg->jwt_public_key)
        return 0;
    if (auth_secret_load_or_create(cfg->db_path, &cfg->jwt_secret, &created, err, sizeof(err)) <
        0) {
        hr_error("config", "%s", err);
        return -1;
    }
    hr_warn("config", "HERALD_JWT_SECRET is not set: using the %s secret kept in %s",
            created ? "newly generated" : "generated", cfg->db_path);
    return 0;
}

static int cmd_token(hr_config *cfg, const token_args *ta)
{
    auth_jwt_config jwt;
    auth_identity id = {0};
    char err[256];

    if (auth_jwt_setup(&jwt, cfg->jwt_alg, cfg->jwt_secret, cfg->jwt_public_key,
                       cfg->jwt_private_key, cfg->jwt_iss, cfg->jwt_aud, err, sizeof(err)) < 0) {
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

static int cmd_serve(hr_config *cfg)
{
    hr_server srv;
    int rc = 1;
    if (cfg->redis_url) {
        hr_error("config", "HERALD_REDIS_URL is set, but cluster mode is not available in this "
                           "version; unset it to run in embedded mode");
        return 2;
    }
    if (hr_server_init(&srv, cfg) == 0)
        rc = hr_server_run(&srv);
    hr_server_destroy(&srv);
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
    if (strcmp(cmd, "serve") && strcmp(cmd, "token")) {
        fprintf(stderr, "herald: unknown command \"%s\" (try --help)\n", cmd);
        return 2;
    }
    if (!strcmp(cmd, "token") && parse_token_args(&argc, argv, &ta) < 0)
        return 2;
    if (hr_config_defaults(&cfg) < 0 ||
        hr_config_load(&cfg, argc, argv, environ, err, sizeof(err)) < 0) {
        fprintf(stderr, "herald: %s\n", err);
        hr_config_clear(&cfg);
        return 2;
    }
    hr_log_init(cfg.log_format, cfg.log_level, cfg.node_id);
    if (ensure_jwt_secret(&cfg) == 0)
        rc = !strcmp(cmd, "token") ? cmd_token(&cfg, &ta) : cmd_serve(&cfg);
    hr_config_clear(&cfg);
    hr_log_shutdown();
    return rc;
}
