/* redis_uv.h - hiredis async contexts on a libuv loop, with poll errors
 * handed to hiredis.
 *
 * hiredis 0.14's libuv adapter (hiredis/adapters/libuv.h) returns from its
 * poll callback on any error status. libuv reports POLLERR - a connection
 * reset, as when Redis is killed with commands it had not read yet - as
 * UV_EBADF after stopping the poll handle, so hiredis never learns that the
 * connection is gone: the replies it waits for never come, their callbacks
 * are never called (a publication in flight is never answered), and the
 * socket stays open. chan_redis_uv_attach is redisLibuvAttach with one
 * difference: an error status is handed to hiredis as a read event, the read
 * fails, and hiredis disconnects, calling every pending callback with a NULL
 * reply and then the disconnect callback. */
#ifndef HERALD_CHANNELS_REDIS_UV_H
#define HERALD_CHANNELS_REDIS_UV_H

#include <hiredis/async.h>
#include <uv.h>

/* Attaches `ac` to `loop` (as redisLibuvAttach). The event state is owned by
 * the context and freed with it. REDIS_OK or REDIS_ERR. */
int chan_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop);

#endif
