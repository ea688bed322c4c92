/* What a systemd unit's properties mean for muster: the pure part of the
 * systemd check, kept apart from the D-Bus plumbing of systemd.c so
 * that the rules can be tested table by table (tests/unit/test_systemd_map.c).
 *
 * agent_unit_map() applies SPEC.md's systemd mapping, DC/OS's rules with
 * their fixes: `activating` is not healthy, a unit in a restart loop or
 * flapping is unhealthy, and `inactive` is unhealthy (the agent's startup
 * grace, applied later, turns that into `starting` for a unit that has not
 * yet been up in this boot), except while a start or restart job of a unit
 * that did not fail is under way (an operator's restart). agent_unit_split_description() splits a
 * Description into a display name and a description exactly as DC/OS does.
 *
 * Nothing here allocates except agent_unit_split_description(); nothing
 * logs. Any thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mst/state.h"

#define AGENT_UNIT_TEXT_MAX 64 /* bytes kept of each state string read from systemd */

/* How long a unit that systemd restarted must stay active before it counts
 * as healthy again: its RestartSec, within these bounds. */
#define AGENT_UNIT_SETTLE_MIN_USEC (1000000ULL)
#define AGENT_UNIT_SETTLE_MAX_USEC (30000000ULL)

/* One read of a unit: org.freedesktop.systemd1.Unit, plus
 * org.freedesktop.systemd1.Service for services. Strings are truncated
 * copies (always NUL-terminated); "" when systemd did not send them. */
struct agent_unit_props {
  char load_state[AGENT_UNIT_TEXT_MAX];   /* loaded, not-found, masked, error, ... */
  char active_state[AGENT_UNIT_TEXT_MAX]; /* active, activating, failed, ... */
  char sub_state[AGENT_UNIT_TEXT_MAX];    /* running, start-pre, auto-restart, ... */
  bool is_service;                        /* the Service fields below were read */
  char result[AGENT_UNIT_TEXT_MAX];       /* success, exit-code, signal, ... */
  uint32_t n_restarts;
  uint64_t restart_usec;    /* RestartSec */
  int32_t exec_main_code;   /* CLD_EXITED, CLD_KILLED, CLD_DUMPED; 0 when never run */
  int32_t exec_main_status; /* exit status, or the signal number when killed */
  /* CLOCK_MONOTONIC usec of the last transitions; 0 when never. */
  uint64_t active_enter_usec;
  uint64_t active_exit_usec;
  uint64_t inactive_enter_usec;
  uint64_t inactive_exit_usec;
  uint64_t state_change_usec; /* CLOCK_REALTIME usec of the last state change */
  /* CLOCK_REALTIME usec of the last stop and start (ActiveExitTimestamp,
   * InactiveExitTimestamp); 0 when never: a stack restart (startup.c). */
  uint64_t active_exit_realtime_usec;
  uint64_t inactive_exit_realtime_usec;
  uint32_t job_id;                    /* the unit's queued job (Job); 0: none */
  char job_type[AGENT_UNIT_TEXT_MAX]; /* its JobType when read (start, restart, stop, ...); "" */
};

/* Maps one read, made at now_usec (CLOCK_MONOTONIC), to a state (healthy,
 * starting or unhealthy) and writes the reason into text (at most size
 * bytes, always terminated when size > 0), such as "active (running)",
 * "failed (Result=exit-code, ExecMainStatus=1)",
 * "auto-restart (NRestarts=5, Result=exit-code, ExecMainStatus=1)" or
 * "unit not found". *ret_recheck_usec is the CLOCK_MONOTONIC time at which
 * the same properties would map differently (a restarted unit that will
 * have been up long enough), or 0. */
enum mst_state agent_unit_map(const struct agent_unit_props *p, uint64_t now_usec, char *text,
                              size_t size, uint64_t *ret_recheck_usec);

/* DC/OS's split of a unit's Description: "Mesos Master: distributed systems
 * kernel" gives the name "Mesos Master" and the description "distributed
 * systems kernel". A text that does not split at ": " into exactly two parts
 * gives the unit id as the name and the whole text as the description.
 * Both results are malloc'd and owned by the caller; on failure (-ENOMEM)
 * neither is set. */
int agent_unit_split_description(const char *unit_id, const char *description, char **ret_name,
                                 char **ret_description);
