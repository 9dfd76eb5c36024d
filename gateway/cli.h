/*
 * cli.h - the developer commands that talk to a running node:
 * `herald publish CHANNEL JSON` (REST, with the API key) and
 * `herald tail CHANNEL` (a WebSocket subscriber printing each message, like
 * `redis-cli subscribe`). Blocking plain-TCP clients: they run in the
 * command-line process, never in a server loop. No TLS (point them at a
 * plain-HTTP listener or a local proxy).
 */
#ifndef HR_CLI_H
#define HR_CLI_H

#include "gateway/config.h"

/* Node address from --url (http://HOST:PORT or HOST:PORT); NULL = the
 * configured listen address (0.0.0.0 / :: become loopback). */
typedef struct hr_cli_target {
    char host[256];
    char port[16];
} hr_cli_target;

/* Fills t. Returns 0, or -1 with a message on stderr. */
int hr_cli_target_parse(const hr_config *cfg, const char *url, hr_cli_target *t);

/* POSTs {"channel","data":json} to /api/v1/publish with the first API key;
 * prints the answer. Returns the process exit code (0 on 2xx). */
int hr_cli_publish(const hr_config *cfg, const hr_cli_target *t, const char *channel,
                   const char *json);

/* Subscribes to channel with token (which must grant it) and prints each
 * message's JSON on its own line until the connection ends or the process
 * is interrupted. Returns the exit code. */
int hr_cli_tail(const hr_cli_target *t, const char *token, const char *channel);

#endif
