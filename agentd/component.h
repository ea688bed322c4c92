/* The runtime side of the profile's components (component.c): their damped
 * and recorded states, the startup grace, and the one path by which a
 * result becomes a state change (committed to the spool, then streamed).
 * The array a->components is owned by the agent and lives from
 * agent_components_init() to agent_components_done(); probes and the
 * systemd reader only borrow its elements. Loop thread. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "mst/damp.h"
#include "mst/frame.h"
#include "mst/profile.h"
#include "mst/state.h"

#define AGENT_OUTPUT_MAX     MST_OUTPUT_MAX      /* bytes of kept output text */
#define AGENT_TRUNCATED_MARK MST_OUTPUT_CUT_MARK /* appended when output was cut */

struct agent;
struct agent_unit;

/* The runtime side of one profile component. */
struct agent_component {
  struct agent *agent;
  const struct mst_component *conf; /* owned by agent->profiles */
  struct mst_damp damp;
  enum mst_state state;      /* last state committed to the spool */
  uint64_t since_usec;       /* realtime of that change */
  char *output;              /* latest result's text (owned), never NULL */
  char *perfdata;            /* latest perfdata (owned), may be NULL */
  bool ever_healthy;         /* up at least once in the current boot */
  bool restored;             /* its row came from the spool */
  sd_event_source *schedule; /* probe/probe.c: timer of the next run */
  uint64_t run_started_usec; /* monotonic start of the current/last run */
  void *run;                 /* kind-specific in-flight probe (owned by the kind), or NULL */
  struct agent_unit *unit;   /* systemd components: owned by agent->systemd */
};

/* Builds a->components from the profile, restores their last states from the
 * spool and forgets spooled components that left the profile. Needs a->spool
 * and the boot facts (boot.h). Returns 0 or -errno; agent_components_done()
 * frees what was built either way. */
int agent_components_init(struct agent *a);
void agent_components_done(struct agent *a);

/* Feeds one probe result. text is the kept output (copied); perfdata may be
 * NULL. Records a state change when the effective state changes. */
void agent_component_result(struct agent_component *c, enum mst_result r, const char *text,
                            const char *perfdata);

/* Feeds a state read from an authoritative source (a systemd unit), which
 * is not damped: rise and fall do not apply, and the counter shows 1/1 or
 * 0/1. observed is healthy, starting, unhealthy or unknown; the startup
 * grace applies as for probe results. text is copied. Records a state
 * change only when the effective state differs from the recorded one, so a
 * repeated read never makes a change; a new text for a component that is
 * not healthy is sent without a change (agent_stream_outputs_changed()). */
void agent_component_observed(struct agent_component *c, enum mst_state observed, const char *text);

/* A new startup began (startup.c): every component begins from no state,
 * its counters at zero and not yet up in this startup, and one whose
 * recorded state is not starting gets a change to starting (committed and
 * streamed as any change; one that cannot be committed is logged and
 * left). */
void agent_components_begin_startup(struct agent *a);

/* What the component is, as the aggregator shows it and DC/OS a unit: the
 * profile's description and name win over those of the systemd unit's
 * Description= (probe/systemd.h). Either is NULL when not known. Both point
 * into the profile or c->unit: valid until the next read of the unit. */
const char *agent_component_description(const struct agent_component *c);
const char *agent_component_display_name(const struct agent_component *c);

/* True while the node is inside its startup grace. */
bool agent_in_startup_grace(struct agent *a);

/* Arms the timer (a->grace_timer, freed by agent_components_done()) that
 * re-evaluates grace-held components at the grace end of the current
 * startup, replacing one armed before. Returns 0 or -errno. */
int agent_grace_timer_start(struct agent *a);

/* Records, with the current output, the change of every component whose
 * effective state differs from the one recorded: what could not be
 * committed while the spool failed (fault.c retries with it). Returns how
 * many changes it tried; each attempt sets or clears the fault. */
int agent_components_record_pending(struct agent *a);
