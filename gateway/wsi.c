/* wsi.c - what Herald keeps per libwebsockets connection (see wsi.h). */
#include "gateway/wsi.h"
#include "common/common.h"

#include <libwebsockets.h>
#include <stdlib.h>

hr_wsi_state *hr_wsi_state_get(struct lws *wsi)
{
    hr_wsi_state *st = lws_get_opaque_user_data(wsi);
    if (!st) {
        st = hr_calloc(1, sizeof(*st));
        lws_set_opaque_user_data(wsi, st);
    }
    return st;
}

hr_wsi_state *hr_wsi_state_peek(struct lws *wsi)
{
    return lws_get_opaque_user_data(wsi);
}

void hr_wsi_state_free(struct lws *wsi)
{
    hr_wsi_state *st = lws_get_opaque_user_data(wsi);
    if (!st)
        return;
    lws_set_opaque_user_data(wsi, NULL);
    hr_slot_release(st->addr_slot);
    hr_slot_release(st->user_slot);
    if (st->upgrade_id) {
        auth_identity_clear(st->upgrade_id);
        free(st->upgrade_id);
    }
    free(st->fwd);
    free(st->remote_addr);
    free(st);
}
