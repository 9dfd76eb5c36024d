/*
 * ws_cmd.c - the WebSocket command table (see ws_cmd.h).
 */
#include "gateway/ws_cmd.h"
#include "gateway/api.h"
#include "gateway/proto.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- Replies ---------------------------------------------------------------*/

static void reply_result(hr_ws_conn *c, int64_t id, json_t *result)
{
    size_t len = 0;
    char *s = hr_proto_result(id, result, &len);
    hr_conn_send_text(&c->c, s, len);
    free(s);
}

static void reply_error(hr_ws_conn *c, int64_t id, const char *code, const char *msg)
{
    size_t len = 0;
    char *s = hr_proto_error_reply(id, code, msg, &len);
    hr_conn_send_text(&c->c, s, len);
    free(s);
}

/* A command answered by an operation (api.h): its id travels as the
 * callback's data, and the reply goes to the connection the operation
 * holds (a closed one takes nothing). */
typedef struct cmd_reply {
    hr_ws_conn *c;
    int64_t id;
} cmd_reply;

static cmd_reply *reply_to(hr_ws_conn *c, int64_t id)
{
    cmd_reply *r = hr_malloc(sizeof(*r));
    *r = (cmd_reply){c, id};
    return r;
}

static void reply(void *ud, const hr_result *r)
{
    cmd_reply *to = ud;
    if (r->err == -ECANCELED)
        ; /* unsubscribed before the layer answered: nothing to say */
    else if (r->err)
        reply_error(to->c, to->id, r->code ? r->code : hr_err_code(r->err), r->message);
    else
        reply_result(to->c, to->id, r->value);
    free(to);
}

static const hr_config *cmd_cfg(const hr_ws_conn *c)
{
    return c->c.w->node->cfg;
}

/*---- Commands --------------------------------------------------------------*/

static void ws_authenticate(hr_conn *c, auth_identity *id)
{
    hr_ws_authenticate((hr_ws_conn *)c, id);
}

static void op_connect(hr_ws_conn *c, const hr_cmd *cmd)
{
    auth_identity id = {0};
    char err[160] = "", client[160];

    if (c->c.authed) {
        reply_error(c, cmd->id, HR_ERR_BAD_REQUEST, "already connected");
        return;
    }
    if (hr_api_connect_proxied(c->c.w, cmd->token)) { /* the backend decides (SPEC §8) */
        hr_api_connect(&c->c, cmd->data, ws_authenticate, reply, reply_to(c, cmd->id));
        return;
    }
    if (cmd->token) {
        if (hr_creds_verify_jwt(c->c.w->node->creds, cmd->token, &id, &c->c.w->stats, err,
                                sizeof(err)) < 0) {
            reply_error(c, cmd->id, HR_ERR_UNAUTHORIZED, err[0] ? err : "invalid token");
            hr_conn_close(&c->c, 4001, "unauthorized", 1);
            return;
        }
    } else if (cmd_cfg(c)->allow_anonymous) {
        id.anonymous = 1;
    } else {
        reply_error(c, cmd->id, HR_ERR_UNAUTHORIZED, "a token is required");
        hr_conn_close(&c->c, 4001, "unauthorized", 1);
        return;
    }
    if (id.sub && hr_conn_user_slot(c->c.w->node, id.sub, &c->c.user_slot) < 0) {
        auth_identity_clear(&id);
        reply_error(c, cmd->id, HR_ERR_RATE_LIMITED, "too many connections for this user");
        hr_conn_close(&c->c, 4029, "too many connections", 1);
        return;
    }
    hr_ws_authenticate(c, &id);
    hr_conn_client_id(&c->c, client, sizeof(client));
    json_t *r =
        json_pack("{s:s, s:s, s:o}", "client", client, "user", c->c.id.sub ? c->c.id.sub : "",
                  "expires_at", c->c.id.exp > 0 ? json_integer(c->c.id.exp) : json_null());
    reply_result(c, cmd->id, r);
    json_decref(r);
}

/* The since argument of subscribe and history, if given. */
static const chan_pos *since_of(const hr_cmd *cmd, chan_pos *since)
{
    if (!cmd->has_since)
        return NULL;
    since->offset = cmd->since_offset;
    snprintf(since->epoch, sizeof(since->epoch), "%s", cmd->since_epoch ? cmd->since_epoch : "");
    return since;
}

static void op_subscribe(hr_ws_conn *c, const hr_cmd *cmd)
{
    chan_pos since = {0};
    hr_api_subscribe(&c->c, cmd->channel, since_of(cmd, &since), reply, reply_to(c, cmd->id));
}

static void op_unsubscribe(hr_ws_conn *c, const hr_cmd *cmd)
{
    hr_api_unsubscribe(&c->c, cmd->channel);
    reply_result(c, cmd->id, NULL);
}

static void op_publish(hr_ws_conn *c, const hr_cmd *cmd)
{
    char *data = json_dumps(cmd->data, JSON_COMPACT | JSON_ENCODE_ANY);
    hr_api_publish(c->c.w, &c->c, cmd->channel, data, strlen(data), reply, reply_to(c, cmd->id));
    free(data);
}

static void op_presence(hr_ws_conn *c, const hr_cmd *cmd)
{
    hr_api_presence(c->c.w, &c->c, cmd->channel, reply, reply_to(c, cmd->id));
}

static void op_history(hr_ws_conn *c, const hr_cmd *cmd)
{
    chan_pos since = {0};
    hr_api_history(c->c.w, &c->c, cmd->channel, since_of(cmd, &since), cmd->limit, reply,
                   reply_to(c, cmd->id));
}

static void op_refresh(hr_ws_conn *c, const hr_cmd *cmd)
{
    auth_identity id = {0};
    char err[160] = "";

    if (c->c.id.anonymous) {
        reply_error(c, cmd->id, HR_ERR_BAD_REQUEST, "anonymous connections have no token");
        return;
    }
    if (hr_creds_verify_jwt(c->c.w->node->creds, cmd->token, &id, &c->c.w->stats, err,
                            sizeof(err)) < 0) {
        reply_error(c, cmd->id, HR_ERR_UNAUTHORIZED, err[0] ? err : "invalid token");
        return;
    }
    if (!c->c.id.sub || strcmp(id.sub, c->c.id.sub) != 0) {
        auth_identity_clear(&id);
        reply_error(c, cmd->id, HR_ERR_FORBIDDEN, "the token is for another user");
        return;
    }
    /* same sub, so the user index entry (keyed by sub) stays valid */
    auth_identity_clear(&c->c.id);
    c->c.id = id;
    hr_conn_rearm(&c->c);
    json_t *r = json_pack("{s:I}", "expires_at", (json_int_t)c->c.id.exp);
    reply_result(c, cmd->id, r);
    json_decref(r);
}

static void op_rpc(hr_ws_conn *c, const hr_cmd *cmd)
{
    hr_api_rpc(&c->c, cmd->method, cmd->data, reply, reply_to(c, cmd->id));
}

static void op_ping(hr_ws_conn *c, const hr_cmd *cmd)
{
    reply_result(c, cmd->id, NULL);
}

/*---- The table -------------------------------------------------------------*/

typedef struct command {
    int anyone; /* allowed before the connection is authenticated */
    void (*run)(hr_ws_conn *c, const hr_cmd *cmd);
} command;

/* Indexed by hr_op, which proto.c parses from the op's name (and checks
 * the arguments of): a new command is a name there and a row here. */
static const command commands[] = {
    [HR_OP_CONNECT] = {1, op_connect},
    [HR_OP_SUBSCRIBE] = {0, op_subscribe},
    [HR_OP_UNSUBSCRIBE] = {0, op_unsubscribe},
    [HR_OP_PUBLISH] = {0, op_publish},
    [HR_OP_PRESENCE] = {0, op_presence},
    [HR_OP_HISTORY] = {0, op_history},
    [HR_OP_REFRESH] = {0, op_refresh},
    [HR_OP_PING] = {0, op_ping},
    [HR_OP_RPC] = {0, op_rpc},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

void hr_ws_command(hr_ws_conn *c, const char *msg, size_t len)
{
    hr_cmd cmd;
    hr_proto_error perr;
    if (hr_proto_parse(msg, len, cmd_cfg(c)->max_channel_len, &cmd, &perr) < 0) {
        reply_error(c, cmd.id, perr.code, perr.message);
    } else if ((size_t)cmd.op >= NCOMMANDS || !commands[cmd.op].run) {
        reply_error(c, cmd.id, HR_ERR_BAD_REQUEST, "unknown op");
    } else if (!c->c.authed && !commands[cmd.op].anyone) {
        reply_error(c, cmd.id, HR_ERR_UNAUTHORIZED, "send connect first");
    } else {
        commands[cmd.op].run(c, &cmd);
    }
    hr_cmd_clear(&cmd);
}
