/*
 * stream.h - the listen-only transports of SPEC §9: Server-Sent Events
 * (GET /sse, text/event-stream) and HTTP streaming (GET /stream,
 * application/x-ndjson). Each is an hr_conn (conn.h) like a WebSocket
 * connection - the same queue bound and slow-consumer close, presence, the
 * members and disconnect APIs, the operations of api.c - with its own
 * framing, written after the loop iteration like every connection:
 *
 * - a message's text frame ("event: <push>\ndata: <json>\n" for SSE, the
 *   JSON line for NDJSON, which is the middle of the same bytes) is made
 *   once per message for every stream connection of the node and kept on
 *   the message (chan_msg.tframe), as the WebSocket frame is;
 * - what is per connection is only the recovery token: after every event
 *   that moves a history channel's position (a `subscribed`, a publication
 *   with an offset, an `unsubscribed`) the connection writes `id: <token>`
 *   (SSE) or adds "id":"<token>" to the line (NDJSON), the token naming
 *   every history channel's (epoch, offset) it has seen so far. A reconnect
 *   hands it back (Last-Event-ID, ?last_event_id=, ?since=) and each channel
 *   is subscribed with `since`, recovering through the channel layer as a
 *   WebSocket `subscribe` does.
 *
 * The request is an ordinary REST route (rest.c) until its checks pass
 * (credentials, channels and their namespace rules, limits: each refused
 * with problem+json); then the response starts (http.c,
 * hr_http_stream_start) and the socket belongs to the connection. A
 * request without a JWT may first wait for the connect proxy (SPEC §8,
 * hr_api_connect_ask): held like a request a worker answers, its response
 * head unwritten, so the backend's refusal is still a 403 or 503. The
 * stream ends with a last `close` event ({"push":"close","code","reason"},
 * the WebSocket close code) and the connection closing.
 *
 * Called by the route table and server.c's protocol callback, on the
 * connection's loop thread.
 */
#ifndef HR_STREAM_H
#define HR_STREAM_H

#include "gateway/http.h"

/* The route handlers: GET /sse and GET /stream. */
void hr_stream_sse(hr_http_req *req);
void hr_stream_ndjson(hr_http_req *req);

/* Is the per-session data pss a stream connection's? */
int hr_stream_owns(const hr_pss *pss);
/* The protocol callback's events for a stream connection. */
int hr_stream_writeable(hr_worker *w, struct lws *wsi, hr_pss *pss);
int hr_stream_timer(hr_worker *w, struct lws *wsi, hr_pss *pss);
void hr_stream_closed(hr_worker *w, struct lws *wsi, hr_pss *pss);

/*---- The recovery token (pure; unit tests) ---------------------------------*/

/* Longest token a connection hands out; past it (very many history
 * channels) it hands out "" and a reconnect starts afresh. */
#define HR_STREAM_TOKEN_MAX 4000

/* Parses a token into *out: a map channel -> chan_pos* (malloc'ed; the map
 * frees them), NULL for "". Returns 0, or -EINVAL with *out NULL. */
int hr_stream_token_parse(const char *token, size_t max_channel_len, hr_map **out);

#endif
