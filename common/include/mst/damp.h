/* Rise/fall damping of probe results, after HAProxy's check rules, so that one
 * odd result does not flip a component.
 *
 * The counter `health` runs from 0 to rise+fall-1 and the component is up when
 * health >= rise. A success increments it (when it reaches rise it jumps to
 * the maximum); a failure decrements it (when it falls below rise it drops to
 * 0). So an up component needs `fall` failures in a row to go down, and a down
 * one needs `rise` successes in a row to come up. Operators see the counter
 * as "health 2/4" (health / (rise+fall-1)).
 *
 * Before the first result a component is `starting`. The first failure takes
 * it down at once (there is nothing to protect yet); coming up always needs
 * `rise` successes.
 *
 * OK and WARNING count as success, CRITICAL and UNKNOWN as failure. While up,
 * the state is healthy or warning after the latest result; while down it is
 * unhealthy, or unknown when the latest result was UNKNOWN. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "mst/state.h"

#define MST_DAMP_DEFAULT_RISE 2
#define MST_DAMP_DEFAULT_FALL 3

struct mst_damp {
  uint8_t rise, fall;
  uint8_t health;
  bool up;
  bool seen; /* has had at least one result */
  enum mst_state state;
};

/* rise and fall are 1..100. */
void mst_damp_init(struct mst_damp *d, unsigned rise, unsigned fall);

/* Restores a damper from stored counters (state as last reported). */
void mst_damp_restore(struct mst_damp *d, unsigned rise, unsigned fall, unsigned health,
                      enum mst_state state);

/* Feeds one result. Returns the damped state after it. */
enum mst_state mst_damp_feed(struct mst_damp *d, enum mst_result r);

/* Sets the damper to a state read from an authoritative source (a systemd
 * unit), bypassing rise and fall: healthy or warning is up with the counter
 * at its maximum, anything else is down with the counter at 0, and the
 * visible state is the one given. Counts as a result (seen). */
void mst_damp_force(struct mst_damp *d, enum mst_state state);

static inline unsigned mst_damp_max(const struct mst_damp *d) {
  return (unsigned)d->rise + d->fall - 1;
}

/* The startup-grace rule: a component that has not yet been healthy in the
 * current boot counts as starting while the node is inside its startup
 * grace, whatever its check says. Once healthy, a failure is a failure. */
enum mst_state mst_state_with_grace(enum mst_state damped, bool ever_healthy_this_boot,
                                    bool in_startup_grace);
