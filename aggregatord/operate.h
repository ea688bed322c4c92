/* Day-2 operations (issue 19) on the loop: the HTTP API's writes of
 * operator state (maintenance, acknowledgements, forgetting a node), made
 * durable before they are answered, and what the leader does by itself:
 * ending a maintenance at its end time, clearing the acknowledgement of a
 * component that recovered, forgetting nodes silent past forget_after.
 *
 * Where the state lives (model/operator.h): with ZooKeeper, in the znode
 * /muster/<cluster>/operator, which every aggregator watches
 * (aggr_operate_zk_changed), so a new leader has it within the failover
 * time; standalone, in the history database's meta table, written through
 * the writer thread and read back at start (ingest/restore.c). Every change
 * is history: a node event (GET /v1/history/nodes) with who and why.
 *
 * One change is written at a time; the others wait their turn in order.
 * Loop thread only. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct aggr;

/* Starts taking the HTTP server's writes. Returns 0 or -errno. */
int aggr_operate_start(struct aggr *a);
/* Answers every write still held (503) and stops. Before aggr_http_free(). */
void aggr_operate_stop(struct aggr *a);

/* Standalone: the writer committed (ok) or failed to commit the operator
 * state of write ticket; the write is answered only now. Loop thread. */
void aggr_operate_committed(struct aggr *a, uint64_t ticket, bool ok);

/* After each publish: answers the writes the published view holds. */
void aggr_operate_published(struct aggr *a);

/* From each publish, before evaluation: a leader ends what is due (see
 * above) through the same path as an operator's change. */
void aggr_operate_follow(struct aggr *a, uint64_t now_usec);

/* The znode's document as read at version (data NULL: empty). Applied when
 * newer than what the model holds. */
void aggr_operate_zk_changed(struct aggr *a, const char *data, size_t len, int64_t version);
