/* Work the loop thread does only while somebody reads its result.
 *
 * The Prometheus gauges and the DC/OS snapshot are rendered from the whole
 * model: at 10,000 nodes that is half a million components, too much to do
 * every second for nobody. A reader (an HTTP thread) notes each read; the
 * loop refreshes only while reads keep coming. A read that comes after a
 * quiet spell, when the result may be old, waits (briefly, on the loop's
 * next tick) for a fresh one, so no reader ever sees a result older than
 * the refresh period plus a tick. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* How long after the last read the loop keeps refreshing. */
#define AGGR_DEMAND_IDLE_USEC (60ULL * 1000000ULL)

struct aggr_demand {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  uint64_t asked_usec; /* monotonic: the last read, 0 for never */
  uint64_t done_usec;  /* monotonic: the last refresh, 0 for never */
  unsigned waiting;    /* readers waiting for a refresh */
};

#define AGGR_DEMAND_INIT                                                                           \
  { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER }

/* Any thread, before reading the result: notes the read, and when nobody
 * had read for AGGR_DEMAND_IDLE_USEC (so the loop stopped refreshing),
 * waits up to wait_usec for the loop to refresh. */
void aggr_demand_read(struct aggr_demand *d, uint64_t wait_usec);

/* Loop thread: whether to refresh now. Yes when a reader waits, or when
 * somebody read within AGGR_DEMAND_IDLE_USEC, the result is at least
 * period_usec old and something changed (pass true when the caller does
 * not track changes). */
bool aggr_demand_due(struct aggr_demand *d, uint64_t now_usec, uint64_t period_usec, bool changed);

/* Loop thread, after a refresh: wakes the waiting readers. */
void aggr_demand_done(struct aggr_demand *d, uint64_t now_usec);
