/* The follower's warm copy of the leader's history; see replica.c. */
#pragma once

#include <stdint.h>

struct aggr_replica;
struct aggr_writer;

/* Starts the copying thread, idle until told whom to follow. The writer must
 * outlive it. Returns 0 or -errno. */
int aggr_replica_start(struct aggr_writer *w, struct aggr_replica **ret);

/* Follow the leader at leader_http (host:port) in this epoch, or stop
 * copying (NULL: this aggregator leads, or no leader is known). Loop thread.
 * A NULL replica is ignored. */
void aggr_replica_follow(struct aggr_replica *r, const char *leader_http, uint64_t epoch);

/* Stops the thread and frees. */
void aggr_replica_free(struct aggr_replica *r);
