/* systemd checks (systemd.c): units read over systemd's D-Bus API on the
 * loop, driven by systemd's change signals. struct agent_systemd
 * (a->systemd) owns the bus connection, every slot on it, and one struct
 * agent_unit per systemd component, lent to the component as c->unit. The
 * mapping of a read to a state is systemd_map.h. Loop thread. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "probe/systemd_map.h"

struct agent;
struct agent_systemd;

/* What the agent knows of the unit of a systemd component, kept for
 * root-cause and progress work: the last complete read, with NRestarts and
 * the state timestamps, and the unit's Description split into a display
 * name and a description as DC/OS does (both owned, cut to the wire's caps;
 * NULL before the first read, and display_name NULL when the Description
 * does not split, description NULL when it is empty). */
struct agent_unit {
  struct agent_unit_props props;
  bool read;          /* props holds a complete read */
  uint64_t read_usec; /* CLOCK_MONOTONIC time of that read */
  char *display_name;
  char *description;
};

/* Connects to the bus of cfg.systemd on a->event and starts watching the
 * unit of every systemd component (sets their c->unit). A bus that cannot be
 * reached is not an error: the components are reported unknown and the
 * connection is retried with backoff. Returns 0 or -errno (out of memory,
 * event sources). */
int agent_systemd_new(struct agent *a, struct agent_systemd **ret);
/* Reads every unit again (a new startup began: their components start
 * from no state). Accepts NULL. */
void agent_systemd_read_all(struct agent_systemd *sd);
/* Closes the bus without waiting for it, and clears the components'
 * c->unit. Accepts NULL. */
void agent_systemd_free(struct agent_systemd *s);
