/* The agent streams (conn.c): the listener, each connection's Hello,
 * frames, Acks and Rejects, and the limits that keep one agent from
 * stalling the others. Loop thread only. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct aggr;
struct aggr_spool;

/* Listens on cfg.listen_stream. Returns 0 or -errno. */
int aggr_stream_listen(struct aggr *a);
/* Closes every agent stream and the listener. */
void aggr_stream_close_all(struct aggr *a);
/* Closes every agent stream but keeps listening (on losing leadership). */
void aggr_stream_close_conns(struct aggr *a);
/* The writer committed a spool up to seq (or failed): acknowledges what is
 * held (the caller raised it first, aggr_spool_held()) to the agent that
 * sent it, if it is still connected; on a failure, makes it replay. */
void aggr_conn_committed(struct aggr *a, struct aggr_spool *spool, uint64_t seq, bool ok);
