/*
 * cli.h - the herald subcommands that do not serve: `token`, `user add`,
 * `check-config`, and the developer clients that talk to a running node,
 * `herald publish CHANNEL JSON` (REST, with the API key) and
 * `herald tail CHANNEL` (a WebSocket subscriber printing each message, like
 * `redis-cli subscribe`). The clients are blocking plain-TCP clients: they
 * run in the command-line process, never in a server loop. No TLS (point
 * them at a plain-HTTP listener or a local proxy).
 *
 * They speak to the user on stdout and stderr, not through the log, and
 * return the process' exit code (0 success, 1 failure, 2 usage).
 */
#ifndef HR_CLI_H
#define HR_CLI_H

#include "gateway/config.h"

/* The subcommands' own flags, taken out of argv before the configuration
 * loader sees it. */
typedef struct hr_cli_args {
    const char *url;   /* publish, tail: --url */
    const char *token; /* tail: --token (else one is minted) */
    const char *sub;   /* token: --sub */
    long ttl;          /* token: --ttl */
    const char *roles[32];
    size_t nroles;
} hr_cli_args;

/*---- commands.c ------------------------------------------------------------*/

/* Without HERALD_JWT_SECRET or a public key: the secret generated once and
 * kept in the store, in embedded mode only (SPEC §1). Returns 0 or -1
 * (logged). */
int hr_cli_jwt_secret(hr_config *cfg);
/* herald token: prints a signed JWT. */
int hr_cli_token(hr_config *cfg, const hr_cli_args *a);
/* herald user add NAME: the password from stdin, the same registration
 * path as POST /api/v1/users. */
int hr_cli_user_add(hr_config *cfg, const char *name, const hr_cli_args *a);
/* herald publish CHANNEL JSON / herald tail CHANNEL. */
int hr_cli_publish(hr_config *cfg, const hr_cli_args *a, const char *channel, const char *json);
int hr_cli_tail(hr_config *cfg, const hr_cli_args *a, const char *channel);
/* herald check-config FILE (loaded as --config by main): what only the
 * start would find is checked too. */
int hr_cli_check_config(hr_config *cfg);

/*---- client.c --------------------------------------------------------------*/

/* Node address from --url (http://HOST:PORT or HOST:PORT); NULL = the
 * configured listen address (0.0.0.0 / :: become loopback). */
typedef struct hr_cli_target {
    char host[256];
    char port[16];
} hr_cli_target;

/* Fills t. Returns 0, or -1 with a message on stderr. */
int hr_cli_target_parse(const hr_config *cfg, const char *url, hr_cli_target *t);

/* POSTs {"channel","data":json} to /api/v1/publish with the first API key;
 * prints the answer. Returns the exit code (0 on 2xx). */
int hr_cli_http_publish(const hr_config *cfg, const hr_cli_target *t, const char *channel,
                        const char *json);

/* Subscribes to channel with token (which must grant it) and prints each
 * message's JSON on its own line until the connection ends or the process
 * is interrupted. Returns the exit code. */
int hr_cli_ws_tail(const hr_cli_target *t, const char *token, const char *channel);

#endif
