/* When a startup begins (docs/profiles.md, "When a startup begins").
 *
 * A startup is what the aggregator follows as a "boot": its id travels as
 * boot_id in the Hello and in every change, its start as the Hello's
 * boot_time_ms, and the startup grace counts from that start. The agent
 * decides when one begins:
 *   - boot: a kernel boot the spool has not seen; it began at the kernel's
 *     boot time, and its id is the kernel's boot id;
 *   - install: the agent's first start with a new spool (also on a host up
 *     for hours); it began at that start, and its id is the kernel's boot id;
 *   - restart: the profile's component stack started again on a running host:
 *     at least half of its systemd units, and at least two, were stopped and
 *     started again since the current startup began, all started within
 *     restart_window of each other, none of them restarted by systemd itself
 *     (NRestarts > 0 is a failure's recovery, not an operator's restart). It
 *     began at the earliest of those starts; its id is the kernel's boot id
 *     with "+N" (N = 2, 3, ... within the kernel boot). A unit start within
 *     restart_window of the current startup's start belongs to that startup,
 *     so that one stack restart never makes two.
 * The current startup is kept in the spool's meta; an agent restart alone
 * continues it. The restart rule runs after every read of a unit, which
 * includes the first reads at agent start, so a stack restarted while the
 * agent was down is found too.
 *
 * A new startup begins from no state (component.c,
 * agent_components_begin_startup()): every component is `starting` again,
 * its counters and "up in this startup" mark cleared. When it begins while
 * the agent runs, the stream says Hello again first, so that the aggregator
 * takes the new id before any change of it. Loop thread. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "component.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "probe/systemd.h"
#include "spool.h"
#include "startup.h"
#include "stream.h"

/* The id of startup number of kernel boot host: the boot id itself for the
 * first, "<boot id>+N" after, cut at the front's end to stay within
 * MST_BOOT_ID_MAX (the aggregator refuses longer ids). */
static void startup_id_format(char *buf, size_t size, const char *host, uint64_t number) {
  char suffix[24] = "";
  size_t room;

  if (number > 1)
    snprintf(suffix, sizeof(suffix), "+%" PRIu64, number);
  room = MST_MIN((size_t)MST_BOOT_ID_MAX, size - 1) - strlen(suffix);
  snprintf(buf, size, "%.*s%s", (int)MST_MIN(strlen(host), room), host, suffix);
}

/* Makes st the agent's current startup (the spool already holds it). */
static int startup_take(struct agent *a, const struct agent_spool_startup *st, bool is_new) {
  char *id = strdup(st->id);

  if (!id)
    return -ENOMEM;
  free(a->boot_id);
  a->boot_id = id;
  a->boot_start_usec = (uint64_t)MST_MAX(st->start_ms, 0) * USEC_PER_MSEC;
  a->boot_is_new = is_new;
  snprintf(a->startup_cause, sizeof(a->startup_cause), "%s", st->cause);
  a->startup_number = st->number;
  return 0;
}

static void startup_log(struct agent *a) {
  uint64_t now = mst_now_realtime_usec();

  log_info("startup %s (%s, %s), began %" PRIu64 " s ago", a->boot_id, a->startup_cause,
           a->boot_is_new ? "new" : "continued",
           (uint64_t)((now - MST_MIN(a->boot_start_usec, now)) / USEC_PER_SEC));
}

int agent_startup_setup(struct agent *a) {
  struct agent_spool_startup st = {}, rec = {};
  bool is_new = true;
  int r;

  r = agent_spool_startup_load(a->spool, &rec);
  if (r < 0)
    return r;

  snprintf(st.host_boot, sizeof(st.host_boot), "%s", a->host_boot_id);
  st.number = 1;
  startup_id_format(st.id, sizeof(st.id), a->host_boot_id, 1);
  if (agent_spool_created(a->spool)) {
    snprintf(st.cause, sizeof(st.cause), "install");
    st.start_ms = (int64_t)(mst_now_realtime_usec() / USEC_PER_MSEC);
  } else if (r > 0 && strcmp(rec.host_boot, a->host_boot_id) == 0) {
    st = rec; /* an agent restart alone continues the startup */
    is_new = false;
  } else {
    /* A kernel boot; or a spool of an agent that kept no startup, whose
     * startup is the kernel boot as it was then. */
    snprintf(st.cause, sizeof(st.cause), "boot");
    st.start_ms = (int64_t)(a->host_boot_start_usec / USEC_PER_MSEC);
    is_new = r > 0 || a->host_boot_is_new;
  }
  if (is_new || r == 0) {
    r = agent_spool_startup_save(a->spool, &st);
    if (r < 0)
      return r;
  }
  r = startup_take(a, &st, is_new);
  if (r < 0)
    return r;
  startup_log(a);
  return 0;
}

static int compare_u64(const void *x, const void *y) {
  uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
  return a < b ? -1 : a > b;
}

/* When a unit was started again within the current startup in a way that
 * counts toward a stack restart (see the top of the file), else 0. */
static uint64_t unit_restarted_at(const struct agent *a, const struct agent_unit *u) {
  const struct agent_unit_props *p = &u->props;
  uint64_t start = a->boot_start_usec;

  if (!u->read || p->n_restarts > 0)
    return 0;
  if (p->active_exit_realtime_usec <= start || p->inactive_exit_realtime_usec <= start ||
      p->inactive_exit_realtime_usec < p->active_exit_realtime_usec)
    return 0;
  if (p->inactive_exit_realtime_usec <= start + a->profile->restart_window_usec)
    return 0;
  return p->inactive_exit_realtime_usec;
}

/* Begins restart startup number a->startup_number + 1 at start_usec. */
static void startup_begin_restart(struct agent *a, uint64_t start_usec, size_t n_units,
                                  size_t n_total) {
  struct agent_spool_startup st = {
      .start_ms = (int64_t)(start_usec / USEC_PER_MSEC),
      .number = a->startup_number + 1,
  };
  int r;

  snprintf(st.host_boot, sizeof(st.host_boot), "%s", a->host_boot_id);
  snprintf(st.cause, sizeof(st.cause), "restart");
  startup_id_format(st.id, sizeof(st.id), a->host_boot_id, st.number);
  r = agent_spool_startup_save(a->spool, &st);
  if (r < 0) {
    log_error("cannot record the new startup %s in the spool: %s; trying again at the next "
              "read of a unit",
              st.id, strerror(-r));
    return;
  }
  r = startup_take(a, &st, true);
  if (r < 0) {
    log_error("cannot begin the new startup %s: %s", st.id, strerror(-r));
    return;
  }
  log_info("%zu of the %zu systemd units of role %s were stopped and started again together: "
           "the component stack restarted",
           n_units, n_total, a->profile->role);
  startup_log(a);
  /* The aggregator must know the new id before any change of it. */
  agent_stream_hello_again(a->stream);
  agent_components_begin_startup(a);
  agent_systemd_read_all(a->systemd);
  r = agent_grace_timer_start(a);
  if (r < 0)
    log_error("cannot arm the startup grace timer: %s, ignoring", strerror(-r));
}

void agent_startup_units_read(struct agent *a) {
  uint64_t *at = NULL;
  size_t n_units = 0, n = 0;

  for (size_t i = 0; i < a->n_components; i++)
    if (a->components[i].conf->check == MST_CHECK_SYSTEMD)
      n_units++;
  if (n_units < 2)
    return;
  at = calloc(n_units, sizeof(*at));
  if (!at)
    return; /* the next read tries again */
  for (size_t i = 0; i < a->n_components; i++) {
    const struct agent_component *c = &a->components[i];
    uint64_t t;

    if (c->conf->check == MST_CHECK_SYSTEMD && c->unit && (t = unit_restarted_at(a, c->unit)))
      at[n++] = t;
  }

  /* The largest group of starts within restart_window of each other; the
   * earliest such group when several are as large. */
  size_t need = MST_MAX((size_t)2, (n_units + 1) / 2), best = 0, best_from = 0;
  qsort(at, n, sizeof(*at), compare_u64);
  for (size_t i = 0, j = 0; j < n; j++) {
    while (at[j] - at[i] > a->profile->restart_window_usec)
      i++;
    if (j - i + 1 > best) {
      best = j - i + 1;
      best_from = i;
    }
  }
  if (best >= need)
    startup_begin_restart(a, at[best_from], best, n_units);
  free(at);
}
