/* muster-agentd's one shared object. struct agent owns everything the
 * daemon has: the parsed config (config.h), the profile of this node's role,
 * one struct agent_component per component of that profile (component.h),
 * the SQLite spool (spool.h), the HTTP probes' shared state (probe/http.h),
 * the systemd bus (probe/systemd.h) and the stream to the aggregator
 * (stream.h). main.c fills it in start-up order and empties it in reverse;
 * every other file gets it passed in and owns only the part its header
 * names. All of it lives on one sd-event loop (the thread default loop of
 * the main thread): no field may be touched from another thread.
 *
 * How a result flows: a probe kind (probe/exec.c, probe/http.c,
 * probe/tcp.c) finishes and calls agent_probe_done() (probe/probe.c), which
 * cleans the text and hands the result to agent_component_result()
 * (component.c). There it is damped, the startup grace is applied, and a
 * state change is committed to the spool before the stream is told that
 * there is something new to send. systemd units are not probed:
 * probe/systemd.c reads them over D-Bus when systemd signals a change, and
 * hands the state it read to agent_component_observed(), which skips the
 * damping but is otherwise the same path. Nothing calls back into main.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "mst/frame.h"
#include "mst/profile.h"

struct agent_component;
struct agent_spool;
struct agent_stream;
struct agent_http;
struct agent_mesos_state;
struct agent_systemd;
struct mst_tls_creds;

struct agent {
  sd_event *event;
  struct agent_config cfg;           /* config.c */
  struct mst_profile_set *profiles;  /* config.c */
  const struct mst_profile *profile; /* of cfg.role, inside profiles */
  char *token;                       /* from token_file, trimmed; "" when none */
  struct mst_tls_creds *tls_creds;   /* from [tls]; NULL for a plain stream; SIGHUP reloads */
  const char *config_path;           /* for reloads */
  char *hostname;                    /* boot.c */
  /* The current startup (startup.c): a kernel boot, an install or a stack
   * restart. Its id is what the Hello and every change carry as boot_id;
   * the grace counts from its start. */
  char *boot_id;                 /* the startup's id (owned) */
  uint64_t boot_start_usec;      /* realtime start of the startup */
  bool boot_is_new;              /* the startup began in this run of the agent */
  char startup_cause[16];        /* boot, install, restart */
  uint64_t startup_number;       /* 1, then +1 per restart in the same kernel boot */
  char *host_boot_id;            /* boot.c: the kernel's boot id (owned) */
  uint64_t host_boot_start_usec; /* boot.c: realtime start of the kernel boot */
  bool host_boot_is_new;         /* boot.c: first time this spool sees the kernel boot */

  struct agent_component *components; /* component.c */
  size_t n_components;
  sd_event_source *grace_timer; /* component.c: the end of the startup grace */
  sd_event_source *trim_timer;  /* heap.c: gives free heap pages back */

  struct agent_spool *spool;
  struct agent_http *http;       /* NULL when no component is checked over HTTP */
  struct agent_systemd *systemd; /* NULL when no component is a systemd unit */
  struct agent_stream *stream;

  uint64_t rng_state; /* util.c */

  /* fault.c: why the agent cannot record its state right now (a spool
   * write failed), as the heartbeats say it; "" when it can. */
  char fault[MST_AGENT_FAULT_MAX + 1];
  uint64_t fault_since_usec;    /* realtime start of the fault; 0 without one */
  sd_event_source *fault_timer; /* fault.c: the retries while it lasts */

  /* dcos_facts.c: what DC/OS shows of the node. The DC/OS version, read
   * from [agent] dcos_version_file at config load (owned; NULL without
   * one), and the Mesos id, from [agent] mesos_state_url ("" until Mesos
   * names one; then the last id it named). */
  char *dcos_version;
  char mesos_id[MST_MESOS_ID_MAX + 1];
  struct agent_mesos_state *mesos_state; /* NULL without mesos_state_url */
};
