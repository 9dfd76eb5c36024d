/* redis_uv.c - hiredis' libuv adapter with poll errors handed to hiredis
 * (why: redis_uv.h). */
#include "redis_uv.h"

#include <hiredis/adapters/libuv.h>

static void poll_cb(uv_poll_t *handle, int status, int events);

static void restart(redisLibuvEvents *p)
{
    if (p->events)
        uv_poll_start(&p->handle, p->events, poll_cb);
    else
        uv_poll_stop(&p->handle);
}

/* An error status: libuv has stopped the handle. Reading makes hiredis see
 * the socket's error and disconnect; should the read find data instead, the
 * handle is started again so the error shows once more. */
static void poll_cb(uv_poll_t *handle, int status, int events)
{
    redisLibuvEvents *p = handle->data;
    if (status != 0) {
        if (p->context)
            redisAsyncHandleRead(p->context);
        if (p->context)
            restart(p);
        return;
    }
    if (p->context && (events & UV_READABLE))
        redisAsyncHandleRead(p->context);
    if (p->context && (events & UV_WRITABLE))
        redisAsyncHandleWrite(p->context);
}

static void add_read(void *privdata)
{
    redisLibuvEvents *p = privdata;
    p->events |= UV_READABLE;
    restart(p);
}

static void del_read(void *privdata)
{
    redisLibuvEvents *p = privdata;
    p->events &= ~UV_READABLE;
    restart(p);
}

static void add_write(void *privdata)
{
    redisLibuvEvents *p = privdata;
    p->events |= UV_WRITABLE;
    restart(p);
}

static void del_write(void *privdata)
{
    redisLibuvEvents *p = privdata;
    p->events &= ~UV_WRITABLE;
    restart(p);
}

int chan_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (redisLibuvAttach(ac, loop) != REDIS_OK)
        return REDIS_ERR;
    /* the adapter's state and cleanup stay; only the poll callback changes */
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    return REDIS_OK;
}
