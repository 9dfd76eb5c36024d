/*
 * api.h - what a client or a backend can ask of Herald, whatever the
 * transport: subscribe (with recovery), unsubscribe, publish (a client's,
 * with its `from`, or a backend's), presence, history, server-side
 * membership, disconnecting or revoking a user. The WebSocket commands
 * (ws_cmd.c) and the REST routes (rest_channels.c, rest_users.c) are thin
 * adapters over these, and so are the coming listen-only transports.
 *
 * Every operation completes through one callback with one result type: at
 * once, or later on the same loop thread (the channel layer, Redis, and -
 * next - the backend proxy's checks, which can slot in here without the
 * transports noticing). A client's operation checks that client's rights
 * (namespaces, SPEC §3); a backend's (c NULL) was allowed by its route.
 */
#ifndef HR_API_H
#define HR_API_H

#include "gateway/conn.h"

/* Errors: negative errno values, each with one wire code (SPEC §2) and one
 * HTTP status (SPEC §4):
 *   -EINVAL bad_request 400     -EPERM unauthorized 401
 *   -EACCES forbidden 403       -ENOENT not_found 404
 *   -E2BIG too_large 413        -EUSERS rate_limited 429
 *   -EAGAIN unavailable 503     -ECANCELED (the operation was abandoned:
 *   nothing to answer)          anything else internal 500 */
const char *hr_err_code(int err);
int hr_err_http(int err);

/* An operation's outcome. Borrowed for the callback's duration. */
typedef struct hr_result {
    int err;             /* 0, or a negative errno above */
    const char *code;    /* err: the wire code when not hr_err_code(err) (a backend's) */
    const char *message; /* err: what the client is told */
    json_t *value;       /* no err: the result object; NULL means {} */
} hr_result;

typedef void (*hr_result_cb)(void *ud, const hr_result *r);

/* {"code","message"} of an error result (a new reference). */
json_t *hr_result_error_json(const hr_result *r);

/* Subscribes c to channel; with since, recovers what it missed (the result
 * says whether all of it was). Result: {"channel"} when c was already
 * subscribed, else {"channel", and where history is kept "offset",
 * "epoch", "recovered", "publications"}. -ECANCELED when c unsubscribed or
 * closed before the layer answered. */
void hr_api_subscribe(hr_conn *c, const char *channel, const chan_pos *since, hr_result_cb cb,
                      void *ud);
/* Ends c's subscription to channel (none: nothing happens). */
void hr_api_unsubscribe(hr_conn *c, const char *channel);
/* Publishes data (JSON text, copied) to channel on w: from client c (its
 * rights checked, its identity in the push's "from"), or from a backend
 * (c NULL). Result: {"offset"?, "local_only"?}. */
void hr_api_publish(hr_worker *w, hr_conn *c, const char *channel, const char *data, size_t len,
                    hr_result_cb cb, void *ud);
/* Who is subscribed to channel, cluster-wide. Result: {"clients":[...]}. */
void hr_api_presence(hr_worker *w, hr_conn *c, const char *channel, hr_result_cb cb, void *ud);
/* channel's history after since (NULL: all kept), at most limit (< 0: no
 * limit). Result: {"publications":[...],"offset","epoch"}. */
void hr_api_history(hr_worker *w, hr_conn *c, const char *channel, const chan_pos *since,
                    int64_t limit, hr_result_cb cb, void *ud);
/* Every connection of user, on every node, joins (CHAN_CTL_MEMBER_ADD) or
 * leaves (_REMOVE) channel. Result: NULL value. */
void hr_api_members(hr_worker *w, chan_control_op op, const char *channel, const char *user,
                    hr_result_cb cb, void *ud);
/* Closes every connection of user, on every node, with 4003. */
void hr_api_disconnect(hr_worker *w, const char *user, hr_result_cb cb, void *ud);
/* Tokens of user issued until now are refused from now on, on every node
 * (a deleted user), and the user's connections close with 4003. Without
 * the channel layer it holds on this node (logged). Always succeeds. */
void hr_api_revoke(hr_worker *w, const char *user, hr_result_cb cb, void *ud);

/*---- The backend proxy (SPEC §8) -------------------------------------------
 * Subscribe and publish consult it from hr_api_subscribe and hr_api_publish
 * in namespaces with subscribe_proxy / publish_proxy (after the namespace's
 * rules). A backend's error reaches the client with the backend's code
 * (hr_result.code); its disconnect closes the connection (the operation
 * ends -ECANCELED: nothing to answer); no usable answer is -EAGAIN. */

/* The transport's part of authenticating c as *id (taking it): the
 * connection's `connected` push. */
typedef void (*hr_authenticate_fn)(hr_conn *c, auth_identity *id);

/* Asks the connect proxy who c is (data: the connect command's, borrowed,
 * NULL = none). On a result, c is authenticated through authenticate, cb
 * gets {"client","user","expires_at"}, and then c subscribes to the
 * answer's channels (server-side: `subscribed` pushes follow). An error
 * answer: cb gets it, then c closes 4003; a disconnect: cb gets
 * -ECANCELED and c closes with the backend's code; no usable answer: cb
 * gets -EAGAIN, then c closes 1013. */
void hr_api_connect(hr_conn *c, const json_t *data, hr_authenticate_fn authenticate,
                    hr_result_cb cb, void *ud);
/* Is the connect proxy what authenticates a `connect` command that carries
 * token (NULL: none) on this node? */
int hr_api_connect_proxied(hr_worker *w, const char *token);
/* The backend's answer to `rpc` method with data (borrowed, NULL = null).
 * Result: {"data": D}. -ENOENT when no RPC proxy serves the method. */
void hr_api_rpc(hr_conn *c, const char *method, const json_t *data, hr_result_cb cb, void *ud);
/* The transport's deadline fired (instead of hr_conn_deadline): a
 * connection the connect proxy authenticated asks the refresh proxy at its
 * expire_at, and is extended or closed 4001; anything else is
 * hr_conn_deadline. */
void hr_api_deadline(hr_conn *c);

/* The node's membership hook (a members control reached this worker):
 * the user's connections here join or leave, with a `subscribed` or
 * `unsubscribed` push. */
void hr_api_member(hr_worker *w, const chan_control *c);
/* chan_sub_ops.subscribed: the layer's answer to a subscription, or its
 * renewal after an outage. */
void hr_api_subscribed(void *owner, void *req, const char *channel, const chan_sub_result *r);

#endif
