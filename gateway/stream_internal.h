/*
 * stream_internal.h - what stream_open.c (the request, the connect proxy)
 * takes from stream.c (the connection: framing, writing, keep-alive); not
 * part of the module's interface (stream.h). All on the connection's loop
 * thread.
 */
#ifndef HR_STREAM_INTERNAL_H
#define HR_STREAM_INTERNAL_H

#include "gateway/stream.h"

#include <jansson.h>
#include <stdint.h>

/* Makes the stream connection of wsi, whose response head was written
 * (hr_http_stream_start): it becomes pss->conn and lws owns it from here
 * (freed in hr_stream_closed); an SSE stream's first bytes, `retry:`, are
 * queued. tls: written from the writeable callback only. The caller sets
 * the connection's slots and authenticates it, then calls
 * hr_stream_conn_started. Returns the connection (borrowed). */
hr_conn *hr_stream_conn_new(hr_worker *w, struct lws *wsi, int sse, int tls);
/* Arms the keep-alive and the probe of c, once it is authenticated. */
void hr_stream_conn_started(hr_conn *c);
/* Queues a push (o, taken) that c alone is sent, framed here: pos_offset
 * is the position it stands for (a `subscribed` followed by recovered
 * publications stands for the position before them); channel and epoch
 * (NULL: none) are copied. */
void hr_stream_send_push(hr_conn *c, json_t *o, const char *channel, const char *epoch,
                         uint64_t pos_offset);
/* "sse" or "stream": the transport's name (events, metrics, the proxy). */
const char *hr_stream_transport(int sse);

#endif
