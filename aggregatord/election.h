/* Leader election among aggregators through ZooKeeper, and the lease that
 * fences the leader.
 *
 * Recipe: every aggregator creates an ephemeral sequential znode under
 * /muster/<cluster>/election whose data says where it listens; the lowest is
 * the leader; each candidate watches only its predecessor, so a death wakes
 * one candidate, not all. The leader's epoch is its znode's creation zxid,
 * which grows with every new leader.
 *
 * The lease: every T/3 the aggregator sends a cheap `exists` on its own znode;
 * when one completes, the lease runs until its send time + 2T/3. ZooKeeper
 * cannot have expired the session before then, so while the lease holds no
 * other aggregator can have been elected. The loop steps down as soon as the
 * lease runs out, even if the client library still says "connecting" (it
 * never reports EXPIRED while no server answers), and the writer refuses to
 * commit without a lease.
 *
 * Threads: ZooKeeper's completion thread only posts events into a queue and
 * wakes the loop through an eventfd; everything else runs on the loop
 * thread, except aggr_election_lease_valid(), which any thread may call. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

struct aggr_election;

struct aggr_election_config {
  const char *hosts;
  uint64_t session_timeout_usec;
  const char *cluster;
  const char *id;
  const char *stream_address; /* advertised host:port of the agent stream */
  const char *http_address;   /* advertised host:port of the HTTP API */
  /* Operator state (issue 19): called on the loop thread with the document
   * in /muster/<cluster>/operator each time it is read (at every new
   * session and after every change: the znode is watched), with its znode
   * version; data NULL and len 0 for an empty znode. NULL: not watched. */
  void (*operator_changed)(struct aggr_election *el, const char *data, size_t len, int64_t version,
                           void *userdata);
};

/* Called on the loop thread whenever this aggregator's role or the known
 * leader changed. */
typedef void (*aggr_election_changed_fn)(struct aggr_election *el, void *userdata);

/* Starts connecting and campaigning. Returns 0 or -errno; cb is never called
 * when this fails. Loop thread. */
int aggr_election_start(sd_event *e, const struct aggr_election_config *cfg,
                        aggr_election_changed_fn cb, void *userdata, struct aggr_election **ret);

/* Leaves the election (deleting the znode at once through a graceful close,
 * so a successor takes over within milliseconds) and frees. */
void aggr_election_free(struct aggr_election *el);

bool aggr_election_is_leader(const struct aggr_election *el);
/* The current leader as known here (NULL when unknown). Loop thread. */
const char *aggr_election_leader_id(const struct aggr_election *el);
const char *aggr_election_leader_stream(const struct aggr_election *el);
const char *aggr_election_leader_http(const struct aggr_election *el);
/* This aggregator's epoch while leader, else the known leader's. */
uint64_t aggr_election_epoch(const struct aggr_election *el);

/* True while this aggregator leads and its lease holds. Any thread. A NULL
 * election (standalone) always holds. */
bool aggr_election_lease_valid(const struct aggr_election *el);

/* Completion of aggr_election_operator_write(): r is 0 (version: the znode's
 * new version), -ESTALE (the znode moved past the version written against:
 * read it again), -ENOTCONN (no session) or -EIO. Loop thread. */
typedef void (*aggr_election_written_fn)(int r, int64_t version, void *userdata);

/* Writes the operator document (len bytes, copied) to the znode, if it is
 * still at version. done is called exactly once, on the loop thread, unless
 * this returns < 0 (-ENOTCONN without a session, -ENOMEM). Loop thread. */
int aggr_election_operator_write(struct aggr_election *el, const char *data, size_t len,
                                 int64_t version, aggr_election_written_fn done, void *userdata);
