/* Rise/fall damping of probe results, after HAProxy's health counter (see
 * mst/damp.h for the rules). The visible state follows these choices where
 * the counter alone does not decide:
 *  - until the first failure or the first time it comes up, a component
 *    stays `starting` (successes are counting towards `rise`);
 *  - while up, OK shows healthy and WARNING shows warning; a failure that
 *    does not yet take it down leaves the visible state as it was;
 *  - while down, UNKNOWN shows unknown and any other result unhealthy.
 * Pure computation; the caller owns the struct. */
#include "mst/damp.h"
#include "mst/macro.h"

static unsigned clamp_count(unsigned v) {
  return v < 1 ? 1 : v > 100 ? 100 : v;
}

void mst_damp_init(struct mst_damp *d, unsigned rise, unsigned fall) {
  *d = (struct mst_damp){
      .rise = (uint8_t)clamp_count(rise),
      .fall = (uint8_t)clamp_count(fall),
      .health = 0,
      .up = false,
      .seen = false,
      .state = MST_STATE_STARTING,
  };
}

void mst_damp_restore(struct mst_damp *d, unsigned rise, unsigned fall, unsigned health,
                      enum mst_state state) {
  mst_damp_init(d, rise, fall);
  if (state == MST_STATE_UNSPECIFIED || state == MST_STATE_STARTING) {
    /* Nothing decided yet; keep whatever progress towards rise was made. */
    d->health = (uint8_t)MST_MIN(health, (unsigned)d->rise - 1);
    d->seen = health > 0;
    return;
  }

  d->seen = true;
  d->health = (uint8_t)MST_MIN(health, mst_damp_max(d));
  d->up = d->health >= d->rise;
  if (d->up)
    d->state = state == MST_STATE_WARNING ? MST_STATE_WARNING : MST_STATE_HEALTHY;
  else
    d->state = state == MST_STATE_UNKNOWN ? MST_STATE_UNKNOWN : MST_STATE_UNHEALTHY;
}

enum mst_state mst_damp_feed(struct mst_damp *d, enum mst_result r) {
  bool success = r == MST_RESULT_OK || r == MST_RESULT_WARNING;
  unsigned max = mst_damp_max(d);

  d->seen = true;
  if (success) {
    if (d->health < max) {
      d->health++;
      if (d->health >= d->rise)
        d->health = (uint8_t)max;
    }
    if (d->health >= d->rise) {
      d->up = true;
      d->state = r == MST_RESULT_WARNING ? MST_STATE_WARNING : MST_STATE_HEALTHY;
    } else if (d->state == MST_STATE_UNKNOWN) {
      /* Still down, and the latest result was not UNKNOWN. Starting stays
       * starting: successes are only counting towards rise. */
      d->state = MST_STATE_UNHEALTHY;
    }
    return d->state;
  }

  if (d->health > d->rise) {
    d->health--; /* still up; the visible state does not flip on one result */
    return d->state;
  }
  d->health = 0;
  d->up = false;
  d->state = r == MST_RESULT_UNKNOWN ? MST_STATE_UNKNOWN : MST_STATE_UNHEALTHY;
  return d->state;
}

void mst_damp_force(struct mst_damp *d, enum mst_state state) {
  d->seen = true;
  d->up = state == MST_STATE_HEALTHY || state == MST_STATE_WARNING;
  d->health = d->up ? (uint8_t)mst_damp_max(d) : 0;
  d->state = state;
}

enum mst_state mst_state_with_grace(enum mst_state damped, bool ever_healthy_this_boot,
                                    bool in_startup_grace) {
  if (!in_startup_grace || ever_healthy_this_boot)
    return damped;
  switch (damped) {
  case MST_STATE_UNHEALTHY:
  case MST_STATE_UNKNOWN:
    return MST_STATE_STARTING;
  default:
    /* Up (healthy, warning) is shown as it is; starting already is. */
    return damped;
  }
}
