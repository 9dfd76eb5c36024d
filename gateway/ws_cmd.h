/*
 * ws_cmd.h - the WebSocket commands of SPEC §2: each client message is
 * parsed (proto.h), looked up in a table of commands (op name -> handler)
 * and answered with exactly one reply carrying its id. The commands are
 * thin adapters over the transport-neutral operations (api.h), plus the
 * two that only a WebSocket has: connect (a token in the first message)
 * and refresh.
 */
#ifndef HR_WS_CMD_H
#define HR_WS_CMD_H

#include "gateway/ws_conn.h"

/* hr_ws_handler: runs one complete client message on c. */
void hr_ws_command(hr_ws_conn *c, const char *msg, size_t len);

#endif
