/*
 * proxy_call.h - one backend proxy call, start to checked answer, on a
 * loop thread: the request body and headers (proxy.h), the POST
 * (backend.h), the answer's checks, the metrics (hr_counters.proxy) and
 * a log line when the backend could not be used.
 *
 * Each loop thread has one hr_proxy_client with its own HTTP client; the
 * node's HERALD_PROXY_MAX_INFLIGHT is split evenly between the loops (at
 * least one call each), so the bound holds without any cross-thread
 * bookkeeping: the kernel spreads connections evenly over the loops anyway.
 *
 * Threads: everything on the loop thread that created the client.
 */
#ifndef HR_PROXY_CALL_H
#define HR_PROXY_CALL_H

#include "gateway/config.h"
#include "gateway/metrics.h"
#include "gateway/proxy.h"

#include <uv.h>

typedef struct hr_proxy_client hr_proxy_client;
typedef struct hr_proxy_call hr_proxy_call;

/* Creates loop's client from cfg (URLs, key, timeout, bounds, CA file);
 * nloops is the node's number of loop threads; stats is this loop's
 * counters (cfg and stats are borrowed for the client's life). Returns
 * NULL (logged) on failure. */
hr_proxy_client *hr_proxy_client_new(uv_loop_t *uv, const hr_config *cfg, unsigned nloops,
                                     hr_counters *stats);

/* Closes the client: calls still outstanding are answered UNAVAILABLE
 * ("shutting down") through their callbacks, now; the HTTP client's
 * handles close as the loop runs on. NULL ok. */
void hr_proxy_client_close(hr_proxy_client *pc);

/* Is any proxy configured (a loop then needs a client)? */
int hr_proxy_configured(const hr_config *cfg);

/* The URL a call of kind goes to (rpc: by method, hr_config_rpc_url), or
 * NULL when that proxy is not configured. Borrowed from cfg. */
const char *hr_proxy_url(const hr_config *cfg, hr_proxy_kind kind, const char *method);

/* Runs once with the checked answer, on the loop thread, never from inside
 * hr_proxy_call_start. The callback may move fields out of a (setting them
 * to NULL); a is cleared when it returns. The call handle is invalid from
 * the moment the callback starts. */
typedef void (*hr_proxy_done_cb)(void *ud, hr_proxy_answer *a);

/* Starts a call of rq->kind to its URL with the connection's forwarded
 * header lines (h, borrowed; NULL = none). Returns the call; or NULL
 * without calling cb, with *now filled as UNAVAILABLE (the caller clears
 * it): no URL for the kind, a request that cannot be encoded, or the
 * in-flight and queue bounds reached. Either way the call is counted. */
hr_proxy_call *hr_proxy_call_start(hr_proxy_client *pc, const hr_proxy_request *rq,
                                   const hr_proxy_headers *h, hr_proxy_done_cb cb, void *ud,
                                   hr_proxy_answer *now);

/* Abandons a call whose callback has not run (the client went away): the
 * callback never runs. Not counted as an outcome. */
void hr_proxy_call_cancel(hr_proxy_call *c);

#endif
