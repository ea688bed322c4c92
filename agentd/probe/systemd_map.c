/* The systemd mapping (see systemd_map.h): from one read of a unit's
 * properties to a component state and the reason shown as its output.
 *
 * The rules, in order:
 *  1. LoadState other than "loaded" (not-found, masked, error, ...) is
 *     unhealthy, whatever the unit's ActiveState.
 *  2. active is healthy, except for a unit that systemd restarted
 *     (NRestarts > 0) and that has not yet stayed active for its RestartSec
 *     (at least 1 s, at most 30 s): that is flapping, unhealthy until then.
 *     Without this, a restart loop would read healthy for the moment each
 *     turn is up (a failing Type=simple service is active for a few ms),
 *     and flip between healthy and unhealthy on every turn.
 *  3. reloading is starting.
 *  4. activating is starting, except for a unit that is coming back from a
 *     failure, which is unhealthy:
 *     - auto-restart after the unit was once active (ActiveEnterTimestamp set)
 *       or after a restart (NRestarts > 0): a restart loop;
 *     - any other activating sub-state of a unit that has been restarted by
 *       systemd and went inactive after it last became active
 *       (InactiveEnter > ActiveEnter): flapping. The NRestarts condition
 *       keeps an operator's `systemctl start` after a stop or a failure at
 *       starting (a manual start resets NRestarts) while the start-pre phase
 *       of every turn of a restart loop stays unhealthy, so a loop does not
 *       flip between unhealthy and starting on each turn.
 *  5. failed, inactive, deactivating and anything else are unhealthy, except
 *     a unit whose last run did not fail (Result success) with a start or
 *     restart job queued: an operator's restart (`systemctl restart`, also
 *     through a target's PartOf=) stops the unit before it starts it again,
 *     and the unit is starting all along. The JobType says so: "restart"
 *     while it stops, "start" once it is down.
 *
 * The output names the state as systemctl does ("active (running)") and
 * adds what explains it: NRestarts when not 0, Result when not "success",
 * and ExecMainStatus when not 0 (with the signal's name when the main
 * process was killed). */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "mst/macro.h"
#include "probe/systemd_map.h"

/* A bounded string builder: appends while there is room, cuts otherwise. */
struct text_buf {
  char *s;
  size_t size, len;
};

_printf_(2, 3) static void text_add(struct text_buf *b, const char *fmt, ...) {
  va_list ap;
  int n;

  if (b->size == 0 || b->len >= b->size - 1)
    return;
  va_start(ap, fmt);
  n = vsnprintf(b->s + b->len, b->size - b->len, fmt, ap);
  va_end(ap);
  if (n > 0)
    b->len = MST_MIN(b->len + (size_t)n, b->size - 1);
}

/* Appends one "key=value" item to the parenthesised list that follows the
 * state name, opening it with the first item. */
struct detail_list {
  struct text_buf *b;
  unsigned n;
};

_printf_(2, 3) static void detail_add(struct detail_list *d, const char *fmt, ...) {
  char item[128];
  va_list ap;

  va_start(ap, fmt);
  (void)vsnprintf(item, sizeof(item), fmt, ap);
  va_end(ap);
  text_add(d->b, "%s%s", d->n++ == 0 ? " (" : ", ", item);
}

static void detail_close(struct detail_list *d) {
  if (d->n > 0)
    text_add(d->b, ")");
}

static void details_of_run(struct detail_list *d, const struct agent_unit_props *p) {
  if (p->n_restarts > 0)
    detail_add(d, "NRestarts=%u", p->n_restarts);
  if (p->result[0] && strcmp(p->result, "success") != 0)
    detail_add(d, "Result=%s", p->result);
  if (p->exec_main_status != 0) {
    const char *sig = NULL;

    if (p->exec_main_code == CLD_KILLED || p->exec_main_code == CLD_DUMPED)
      sig = sigabbrev_np(p->exec_main_status);
    if (sig)
      detail_add(d, "ExecMainStatus=%d/%s", p->exec_main_status, sig);
    else
      detail_add(d, "ExecMainStatus=%d", p->exec_main_status);
  }
}

static bool state_is(const char *s, const char *want) {
  return strcmp(s, want) == 0;
}

/* True for an activating unit that is coming back from a failure. */
static bool activating_after_failure(const struct agent_unit_props *p) {
  if (state_is(p->sub_state, "auto-restart"))
    return p->active_enter_usec != 0 || p->n_restarts > 0;
  return p->n_restarts > 0 && p->inactive_enter_usec > p->active_enter_usec;
}

/* True for a unit that is down (inactive, deactivating) after a run that
 * did not fail and has a job queued that will start it again. */
static bool start_job_queued(const struct agent_unit_props *p) {
  static const char *const starting_jobs[] = {"start", "restart", "try-restart", "reload-or-start"};
  bool starts = false;

  if (p->job_id == 0 || state_is(p->active_state, "failed"))
    return false;
  if (p->result[0] && !state_is(p->result, "success"))
    return false;
  for (size_t i = 0; i < ELEMENTSOF(starting_jobs); i++)
    starts = starts || state_is(p->job_type, starting_jobs[i]);
  return starts;
}

/* The end of the settling time of an active unit that systemd restarted,
 * or 0 when it needs none. */
static uint64_t active_settle_end(const struct agent_unit_props *p) {
  uint64_t settle =
      MST_MIN(MST_MAX(p->restart_usec, AGENT_UNIT_SETTLE_MIN_USEC), AGENT_UNIT_SETTLE_MAX_USEC);

  if (p->n_restarts == 0 || p->active_enter_usec == 0)
    return 0;
  return p->active_enter_usec + settle;
}

enum mst_state agent_unit_map(const struct agent_unit_props *p, uint64_t now_usec, char *text,
                              size_t size, uint64_t *ret_recheck_usec) {
  struct text_buf b = {.s = text, .size = size};
  struct detail_list d = {.b = &b};
  enum mst_state state;
  bool show_sub = true;

  if (size > 0)
    text[0] = '\0';
  *ret_recheck_usec = 0;

  if (!p->load_state[0] || !p->active_state[0]) {
    text_add(&b, "systemd did not report the unit's %s",
             p->load_state[0] ? "ActiveState" : "LoadState");
    return MST_STATE_UNKNOWN;
  }

  if (!state_is(p->load_state, "loaded")) {
    if (state_is(p->load_state, "not-found"))
      text_add(&b, "unit not found");
    else
      text_add(&b, "unit not loaded (LoadState=%s)", p->load_state);
    /* A unit whose file went away may still run: say so. */
    if (!state_is(p->active_state, "inactive"))
      text_add(&b, ", %s%s%s%s", p->active_state, p->sub_state[0] ? " (" : "", p->sub_state,
               p->sub_state[0] ? ")" : "");
    return MST_STATE_UNHEALTHY;
  }

  if (state_is(p->active_state, "active")) {
    uint64_t settle_end = active_settle_end(p);

    state = MST_STATE_HEALTHY;
    if (settle_end > now_usec) {
      state = MST_STATE_UNHEALTHY;
      text_add(&b, "flapping: ");
      *ret_recheck_usec = settle_end;
    }
  } else if (state_is(p->active_state, "reloading")) {
    state = MST_STATE_STARTING;
  } else if (state_is(p->active_state, "activating")) {
    if (activating_after_failure(p)) {
      state = MST_STATE_UNHEALTHY;
      if (state_is(p->sub_state, "auto-restart")) {
        text_add(&b, "auto-restart");
        show_sub = false;
      } else {
        text_add(&b, "flapping: ");
      }
    } else {
      state = MST_STATE_STARTING;
    }
  } else if (start_job_queued(p)) {
    state = MST_STATE_STARTING;
  } else {
    /* failed, inactive, deactivating, and states newer than this code */
    state = MST_STATE_UNHEALTHY;
  }

  if (show_sub)
    text_add(&b, "%s", p->active_state);
  if (show_sub && p->sub_state[0] && !state_is(p->sub_state, p->active_state))
    detail_add(&d, "%s", p->sub_state);
  details_of_run(&d, p);
  if (state == MST_STATE_STARTING && p->job_type[0] && !state_is(p->active_state, "activating"))
    detail_add(&d, "%s job queued", p->job_type);
  detail_close(&d);
  return state;
}

int agent_unit_split_description(const char *unit_id, const char *description, char **ret_name,
                                 char **ret_description) {
  const char *desc = description ? description : "";
  const char *sep = strstr(desc, ": ");
  _cleanup_free_ char *name = NULL, *rest = NULL;

  /* Go's strings.Split(desc, ": ") must give exactly two parts. */
  if (sep && !strstr(sep + 2, ": ")) {
    name = strndup(desc, (size_t)(sep - desc));
    rest = strdup(sep + 2);
  } else {
    name = strdup(unit_id ? unit_id : "");
    rest = strdup(desc);
  }
  if (!name || !rest)
    return -ENOMEM;
  *ret_name = TAKE_PTR(name);
  *ret_description = TAKE_PTR(rest);
  return 0;
}
