/*
 * main.c - the herald command: `serve` (the default: the gateway, a node
 * running the server), the subcommands of cli.h, `--help`, `--version`.
 * Parses the subcommand's own flags, hands the rest to the configuration
 * loader, then runs the chosen command.
 */
#include "cli/cli.h"
#include "common/log.h"
#include "gateway/config.h"
#include "gateway/node.h"
#include "gateway/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

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
static int parse_cmd_args(int *argc, char **argv, hr_cli_args *ta, int is_token)
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
    hr_cli_args ta = {0};
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
        rc = hr_cli_user_add(&cfg, user_name, &ta);
    else if (!strcmp(cmd, "publish"))
        rc = hr_cli_publish(&cfg, &ta, pos[0], pos[1]);
    else if (!strcmp(cmd, "tail"))
        rc = hr_cli_tail(&cfg, &ta, pos[0]);
    else if (!strcmp(cmd, "check-config"))
        rc = hr_cli_check_config(&cfg);
    else if (hr_cli_jwt_secret(&cfg) == 0)
        rc = !strcmp(cmd, "token") ? hr_cli_token(&cfg, &ta) : cmd_serve(&cfg);
    hr_config_clear(&cfg);
    free(owned_argv);
    return rc;
}
