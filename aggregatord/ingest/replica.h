/* The follower's warm copy of the leader's history; see replica.c. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct aggr_replica;
struct aggr_writer;

/* How to reach the leader's HTTP API: the cluster's aggregators share their
 * [tls] and [aggregator] http_token_file, so a follower talks to the leader
 * as it is itself served. */
struct aggr_replica_options {
  bool https;             /* the leader serves HTTPS */
  const char *ca_file;    /* verifies its certificate; NULL: the system's trust store */
  const char *token_file; /* sent as the bearer token; NULL: none */
};

/* Starts the copying thread, idle until told whom to follow. The writer must
 * outlive it; the strings of o are copied. Returns 0, or -errno (with the
 * reason logged when the token file cannot be read). */
int aggr_replica_start(struct aggr_writer *w, const struct aggr_replica_options *o,
                       struct aggr_replica **ret);

/* Follow the leader at leader_http (host:port) in this epoch, or stop
 * copying (NULL: this aggregator leads, or no leader is known). Loop thread.
 * A NULL replica is ignored. */
void aggr_replica_follow(struct aggr_replica *r, const char *leader_http, uint64_t epoch);

/* Stops the thread and frees. */
void aggr_replica_free(struct aggr_replica *r);
