/*
 * local.c - the in-process channel layer (embedded mode).
 *
 * Everything shared lives in core.c; publishing in-process is only
 * "serialise once, route to the threads that have subscribers".
 */
#include "layer_internal.h"

#include <stdlib.h>

static int local_publish(chan_layer *l, unsigned thread, const char *channel, const char *data_json,
                         size_t data_len, chan_publish_cb cb, void *ud)
{
    (void)thread;
    chan_msg *m = chan_msg_publication(channel, data_json, data_len, 0);
    chan_dispatch(l, m);
    chan_msg_unref(m);
    if (cb)
        cb(ud, 0, 0);
    return 0;
}

static void local_destroy(chan_layer *l)
{
    free(l);
}

static const chan_layer_ops local_ops = {
    .name = "local",
    .publish = local_publish,
    .destroy = local_destroy,
};

chan_layer *chan_local_new(const chan_host *host)
{
    chan_layer *l = hr_calloc(1, sizeof(*l));
    chan_layer_init(l, &local_ops, host);
    return l;
}
