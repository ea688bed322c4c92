/* See demand.h. */
#include <errno.h>
#include <time.h>

#include "serve/demand.h"
#include "mst/macro.h"
#include "mst/time.h"

void aggr_demand_read(struct aggr_demand *d, uint64_t wait_usec) {
  uint64_t now = mst_now_monotonic_usec();

  pthread_mutex_lock(&d->lock);
  bool idle = d->asked_usec == 0 || now - d->asked_usec >= AGGR_DEMAND_IDLE_USEC;
  d->asked_usec = now;
  if (idle && d->done_usec < now) {
    struct timespec until;
    uint64_t deadline;
    /* pthread_cond_timedwait takes CLOCK_REALTIME: wait on that clock. */
    clock_gettime(CLOCK_REALTIME, &until);
    deadline = (uint64_t)until.tv_sec * USEC_PER_SEC + (uint64_t)until.tv_nsec / 1000 + wait_usec;
    until.tv_sec = (time_t)(deadline / USEC_PER_SEC);
    until.tv_nsec = (long)(deadline % USEC_PER_SEC) * 1000;
    d->waiting++;
    while (d->done_usec < now && pthread_cond_timedwait(&d->cond, &d->lock, &until) != ETIMEDOUT)
      ;
    d->waiting--;
  }
  pthread_mutex_unlock(&d->lock);
}

bool aggr_demand_due(struct aggr_demand *d, uint64_t now_usec, uint64_t period_usec, bool changed) {
  bool due;
  pthread_mutex_lock(&d->lock);
  due = d->waiting > 0 || (d->asked_usec != 0 && now_usec - d->asked_usec < AGGR_DEMAND_IDLE_USEC &&
                           changed && now_usec - d->done_usec >= period_usec);
  pthread_mutex_unlock(&d->lock);
  return due;
}

void aggr_demand_done(struct aggr_demand *d, uint64_t now_usec) {
  pthread_mutex_lock(&d->lock);
  d->done_usec = now_usec;
  pthread_cond_broadcast(&d->cond);
  pthread_mutex_unlock(&d->lock);
}
