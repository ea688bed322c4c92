/* Component states: from a probe result to a recorded state change.
 *
 * A result is damped (rise/fall, mst_damp_feed), then the startup-grace rule
 * is applied (mst_state_with_grace): while the node is inside the grace of
 * its profile, a component that has not been up in this boot counts as
 * starting. When that effective state differs from the last recorded one,
 * the change is committed to the spool first, and only then logged and
 * handed to the stream. A change that cannot be committed is not made: the
 * component keeps its recorded state, and the next result tries again. A
 * result that changes only the output or the counter is kept in memory (the
 * snapshot carries it) and costs no disk write.
 *
 * On start the last recorded states come back from the spool, so that a
 * restart invents no changes. A new startup (startup.c: a kernel boot, an
 * install, a stack restart) begins from no state: every component whose
 * recorded state is not starting gets a change to starting, recorded in the
 * new startup when it is found, and its counters and its "up in this
 * startup" mark start afresh (the old ones describe processes that are
 * gone). So a rebooted node never shows its previous boot's healthy before
 * its checks ran again. A timer at the end of the grace period re-evaluates
 * the components held at starting by the grace alone.
 *
 * systemd units are read, not probed (probe/systemd.c): their states come in
 * through agent_component_observed(), undamped, since systemd's own state is
 * authoritative and arrives by signal rather than by repeated sampling. Their
 * counter is kept at rise 1, fall 1 so that it still tells up from down. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "component.h"
#include "fault.h"
#include "heap.h"
#include "mst/dynbuf.h"
#include "mst/duration.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/str.h"
#include "mst/time.h"
#include "probe/systemd.h"
#include "spool.h"
#include "stream.h"

static struct agent_component *component_find(struct agent *a, const char *name) {
  for (size_t i = 0; i < a->n_components; i++)
    if (strcmp(a->components[i].conf->name, name) == 0)
      return &a->components[i];
  return NULL;
}

const char *agent_component_description(const struct agent_component *c) {
  if (c->conf->description)
    return c->conf->description;
  return c->unit ? c->unit->description : NULL;
}

const char *agent_component_display_name(const struct agent_component *c) {
  if (c->conf->display_name)
    return c->conf->display_name;
  return c->unit ? c->unit->display_name : NULL;
}

bool agent_in_startup_grace(struct agent *a) {
  uint64_t end = a->boot_start_usec + a->profile->startup_grace_usec;
  return mst_now_realtime_usec() < end;
}

static const char *ever_healthy_boot(const struct agent_component *c) {
  return c->ever_healthy ? c->agent->boot_id : NULL;
}

/* Commits a change to `to` with the current output, then logs and streams
 * it. Returns 0 or -errno (logged; the recorded state is unchanged). */
static int component_record_change(struct agent_component *c, enum mst_state to) {
  struct agent *a = c->agent;
  uint64_t now = mst_now_realtime_usec();
  uint64_t seq;
  int r;

  struct agent_change ch = {
      .component = c->conf->name,
      .check = c->conf->check,
      .from = c->state,
      .to = to,
      .at_ms = (int64_t)(now / USEC_PER_MSEC),
      .output = c->output,
      .boot_id = a->boot_id,
      .health = c->damp.health,
      .rise = c->damp.rise,
      .fall = c->damp.fall,
  };
  r = agent_spool_record_change(a->spool, &ch, ever_healthy_boot(c), &seq);
  if (r < 0) {
    log_error("component %s: cannot record %s -> %s in the spool: %s; retrying with the next "
              "result",
              c->conf->name, mst_state_to_string(c->state), mst_state_to_string(to), strerror(-r));
    /* What the agent reports is no longer the truth: it says so. */
    agent_fault_spool_failed(a, r);
    return r;
  }
  agent_fault_clear(a);

  log_info("component %s: %s -> %s (%s)", c->conf->name, mst_state_to_string(c->state),
           mst_state_to_string(to), c->output);
  log_debug("component %s: change recorded as seq %" PRIu64 ", health %u/%u", c->conf->name, seq,
            c->damp.health, mst_damp_max(&c->damp));
  c->state = to;
  c->since_usec = now;
  if (a->stream)
    agent_stream_changes_pending(a->stream);
  agent_heap_trim_soon(a);
  return 0;
}

/* Writes the component's row without a change (e.g. first healthy in a boot). */
static int component_persist_row(struct agent_component *c) {
  struct agent_spool_component row = {
      .name = c->conf->name,
      .state = mst_state_to_string(c->state),
      .since_ms = (int64_t)(c->since_usec / USEC_PER_MSEC),
      .output = c->output,
      .health = c->damp.health,
      .ever_healthy_boot = ever_healthy_boot(c),
  };
  return agent_spool_put_component(c->agent->spool, &row, c->conf->check);
}

/* The shared tail of a result and an observation: c->damp already holds
 * the new damped state. Keeps the output, applies the grace, and records a
 * change when the effective state differs from the recorded one. With
 * refresh_output, a new output of a component that is not healthy is sent
 * even without a change (by a snapshot), since it is the reason shown. */
static void component_apply(struct agent_component *c, enum mst_state damped, const char *text,
                            const char *perfdata, bool refresh_output) {
  struct agent *a = c->agent;
  bool was_ever_healthy = c->ever_healthy;
  bool output_changed = strcmp(c->output, text ? text : "") != 0;
  enum mst_state effective;

  if (c->damp.up)
    c->ever_healthy = true;
  if (mst_str_replace(&c->output, text ? text : "") < 0)
    log_warning("component %s: out of memory keeping its output, ignoring", c->conf->name);
  free(c->perfdata);
  c->perfdata = perfdata ? strdup(perfdata) : NULL;

  effective = mst_state_with_grace(damped, c->ever_healthy, agent_in_startup_grace(a));
  log_debug("component %s: health %u/%u, %s: %s", c->conf->name, c->damp.health,
            mst_damp_max(&c->damp), mst_state_to_string(effective), c->output);

  if (effective != c->state) {
    (void)component_record_change(c, effective);
    return;
  }
  if (refresh_output && output_changed && c->state != MST_STATE_HEALTHY)
    agent_stream_outputs_changed(a->stream);
  if (!was_ever_healthy && c->ever_healthy) {
    int k = component_persist_row(c);
    if (k < 0)
      log_warning("component %s: cannot record that it is up in this boot: %s, ignoring",
                  c->conf->name, strerror(-k));
  }
}

void agent_component_result(struct agent_component *c, enum mst_result r, const char *text,
                            const char *perfdata) {
  log_debug("component %s: result %d", c->conf->name, (int)r);
  component_apply(c, mst_damp_feed(&c->damp, r), text, perfdata, false);
}

void agent_component_observed(struct agent_component *c, enum mst_state observed,
                              const char *text) {
  /* Undamped: the counter follows the observation at once. */
  mst_damp_force(&c->damp, observed);
  component_apply(c, observed, text, NULL, true);
}

/* The counters of the component's check kind, at zero. */
static void component_damp_init(struct agent_component *c) {
  if (c->conf->check == MST_CHECK_SYSTEMD)
    mst_damp_init(&c->damp, 1, 1);
  else
    mst_damp_init(&c->damp, c->conf->rise ? c->conf->rise : MST_DAMP_DEFAULT_RISE,
                  c->conf->fall ? c->conf->fall : MST_DAMP_DEFAULT_FALL);
}

void agent_components_begin_startup(struct agent *a) {
  for (size_t i = 0; i < a->n_components; i++) {
    struct agent_component *c = &a->components[i];

    component_damp_init(c);
    c->ever_healthy = false;
    /* The old output tells of processes that are gone. */
    if (mst_str_replace(&c->output, "") < 0)
      log_warning("component %s: out of memory clearing its output, ignoring", c->conf->name);
    free(c->perfdata);
    c->perfdata = NULL;
    /* The change is stamped when the agent learns of the startup, not at its
     * start: seq and time order stay the same, and nothing is dated before
     * a change the component already made. A change that cannot be
     * recorded leaves the old state, and the next result tries again (the
     * grace holds it at starting then). */
    if (c->state != MST_STATE_STARTING)
      (void)component_record_change(c, MST_STATE_STARTING);
  }
}

/* --- start-up ---------------------------------------------------------------------- */

struct restore_ctx {
  struct agent *a;
  char **forget; /* names of rows no longer in the profile */
  size_t n_forget;
  int error;
};

static int restore_row(void *userdata, const struct agent_spool_component *row) {
  struct restore_ctx *ctx = userdata;
  struct agent *a = ctx->a;
  struct agent_component *c = component_find(a, row->name);

  if (!c) {
    char **slot = MST_ARRAY_APPEND(ctx->forget, ctx->n_forget);
    if (!slot)
      return -ENOMEM;
    *slot = strdup(row->name);
    if (!*slot)
      return -ENOMEM;
    ctx->n_forget++;
    return 0;
  }

  int kind = mst_check_kind_from_string(row->check_kind);
  int state = mst_state_from_string(row->state);
  bool same_check = kind == (int)c->conf->check;

  if (state < 0)
    state = MST_STATE_STARTING;
  c->restored = true;
  c->state = (enum mst_state)state;
  c->since_usec = row->since_ms > 0 ? (uint64_t)row->since_ms * USEC_PER_MSEC : 0;
  if (mst_str_replace(&c->output, row->output ? row->output : "") < 0)
    return -ENOMEM;
  c->ever_healthy = row->ever_healthy_boot && strcmp(row->ever_healthy_boot, a->boot_id) == 0;

  /* Counters of another boot or another check describe something else. */
  if (same_check && !a->boot_is_new)
    mst_damp_restore(&c->damp, c->damp.rise, c->damp.fall, row->health, c->state);
  else if (c->conf->check != MST_CHECK_SYSTEMD)
    log_info("component %s: last recorded %s in %s, counting afresh", c->conf->name,
             mst_state_to_string(c->state), same_check ? "an earlier boot" : "another check kind");
  return 0;
}

static int components_restore(struct agent *a) {
  struct restore_ctx ctx = {.a = a};
  int r;

  r = agent_spool_load_components(a->spool, restore_row, &ctx);
  for (size_t i = 0; i < ctx.n_forget; i++) {
    if (r >= 0) {
      log_info("component %s is no longer in the profile, forgetting it", ctx.forget[i]);
      r = agent_spool_forget_component(a->spool, ctx.forget[i]);
    }
    free(ctx.forget[i]);
  }
  free(ctx.forget);
  return r;
}

int agent_components_init(struct agent *a) {
  uint64_t now = mst_now_realtime_usec();
  int r;

  a->components = calloc(MST_MAX(a->profile->n_components, (size_t)1), sizeof(*a->components));
  if (!a->components)
    return -ENOMEM;
  a->n_components = a->profile->n_components;

  for (size_t i = 0; i < a->n_components; i++) {
    struct agent_component *c = &a->components[i];

    c->agent = a;
    c->conf = &a->profile->components[i];
    c->state = MST_STATE_STARTING;
    c->since_usec = now;
    c->output = strdup("");
    if (!c->output)
      return -ENOMEM;
    component_damp_init(c);
  }

  r = components_restore(a);
  if (r < 0)
    return r;
  if (a->boot_is_new)
    agent_components_begin_startup(a);

  /* New components get their row now, so that the table lists them all. */
  for (size_t i = 0; i < a->n_components; i++) {
    struct agent_component *c = &a->components[i];

    if (c->restored)
      continue;
    r = component_persist_row(c);
    if (r < 0)
      return r;
  }
  return 0;
}

void agent_components_done(struct agent *a) {
  for (size_t i = 0; i < a->n_components; i++) {
    free(a->components[i].output);
    free(a->components[i].perfdata);
  }
  free(a->components);
  a->components = NULL;
  a->n_components = 0;
  a->grace_timer = sd_event_source_disable_unref(a->grace_timer);
}

/* --- end of the startup grace -------------------------------------------------------- */

static int grace_on_end(sd_event_source *source, uint64_t usec, void *userdata) {
  struct agent *a = userdata;
  uint64_t end = a->boot_start_usec + a->profile->startup_grace_usec;
  uint64_t now = mst_now_realtime_usec();

  if (now < end) {
    /* The wall clock moved back; wait for the real end. */
    (void)sd_event_source_set_time_relative(source, end - now + USEC_PER_MSEC);
    (void)sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
    return 0;
  }

  log_info("startup grace of %s role %s is over", a->cfg.node_id, a->profile->role);
  for (size_t i = 0; i < a->n_components; i++) {
    struct agent_component *c = &a->components[i];
    enum mst_state effective;

    effective = mst_state_with_grace(c->damp.state, c->ever_healthy, false);
    if (effective != c->state)
      (void)component_record_change(c, effective);
  }
  return 0;
}

int agent_grace_timer_start(struct agent *a) {
  uint64_t end = a->boot_start_usec + a->profile->startup_grace_usec;
  uint64_t now = mst_now_realtime_usec();
  char left[32];
  int r;

  a->grace_timer = sd_event_source_disable_unref(a->grace_timer);
  if (now >= end)
    return 0;
  r = sd_event_add_time_relative(a->event, &a->grace_timer, CLOCK_MONOTONIC,
                                 end - now + USEC_PER_MSEC, 10 * USEC_PER_MSEC, grace_on_end, a);
  if (r < 0)
    return r;
  (void)sd_event_source_set_description(a->grace_timer, "startup-grace");
  log_info("inside the startup grace for another %s",
           mst_duration_format((end - now + USEC_PER_SEC / 2) / USEC_PER_SEC * USEC_PER_SEC, left,
                               sizeof(left)));
  return 0;
}

/* --- after a fault ------------------------------------------------------------------- */

int agent_components_record_pending(struct agent *a) {
  bool in_grace = agent_in_startup_grace(a);
  int n = 0;

  for (size_t i = 0; i < a->n_components; i++) {
    struct agent_component *c = &a->components[i];
    enum mst_state effective = mst_state_with_grace(c->damp.state, c->ever_healthy, in_grace);

    if (effective == c->state)
      continue;
    n++;
    (void)component_record_change(c, effective);
  }
  return n;
}
