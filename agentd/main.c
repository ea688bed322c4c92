/* muster-agentd: the per-node agent. This file is its start and its end,
 * and nothing else: the command line, loading the config and the profile
 * (config.c), opening the parts in order on one sd-event loop and wiring the
 * signals to them, readiness and the watchdog through sd_notify, running the
 * loop, and taking everything down again so that a SIGTERM leaves nothing
 * behind (the sanitizer and valgrind runs check it). What the parts do is
 * theirs (agent.h says who owns what); none of them calls back in here.
 *
 * Start order: malloc's options first (heap.c), then signals are blocked
 * (sd-event needs SIGCHLD blocked before the first exec child exists, and
 * SIGTERM/SIGINT/SIGHUP arrive through signalfd), then the spool, the boot
 * facts, the restored components, the HTTP client, the stream, the probes
 * and the systemd bus. READY=1 follows once the spool is open and the
 * probes are scheduled; it does not wait for the systemd bus, which may be
 * down and is retried in the background. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "agent.h"
#include "boot.h"
#include "component.h"
#include "config.h"
#include "dcos_facts.h"
#include "fault.h"
#include "heap.h"
#include "mst/diag.h"
#include "mst/duration.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "probe/http.h"
#include "probe/probe.h"
#include "probe/systemd.h"
#include "spool.h"
#include "startup.h"
#include "stream.h"
#include "util.h"

/* How long the first Hello waits for the first read of the systemd units. */
#define AGENT_FIRST_READ_WAIT_USEC (2 * USEC_PER_SEC)

static void usage(FILE *f) {
  fprintf(f, "Usage: muster-agentd --config PATH [--check-config]\n"
             "       muster-agentd --version\n"
             "\n"
             "Checks the components of this node's profile and streams their state changes\n"
             "to the muster aggregator.\n"
             "\n"
             "  -c, --config PATH   the agent's config file\n"
             "      --check-config  check the config and the profiles, then exit\n"
             "      --version       print the version and exit\n"
             "  -h, --help          this help\n");
}

static int on_terminate(sd_event_source *source, const struct signalfd_siginfo *si,
                        void *userdata) {
  log_info("received %s, shutting down", sigabbrev_np((int)si->ssi_signo));
  return sd_event_exit(sd_event_source_get_event(source), 0);
}

/* SIGHUP reloads the TLS certificate, key and CA for the next connection;
 * the rest of the config needs a restart. */
static int on_hangup(sd_event_source *source, const struct signalfd_siginfo *si, void *userdata) {
  struct agent *a = userdata;

  if (agent_tls_reload(a) > 0)
    agent_stream_retry_now(a->stream);
  return 0;
}

/* A step of the start that failed: logged once, as "cannot <what>: <why>". */
static int start_failed(int r, const char *what) {
  log_error("cannot %s: %s", what, strerror(-r));
  return r;
}

static bool profile_uses_check(const struct mst_profile *p, enum mst_check_kind kind) {
  for (size_t i = 0; i < p->n_components; i++)
    if (p->components[i].check == kind)
      return true;
  return false;
}

static int agent_start(struct agent *a) {
  sigset_t mask;
  int r;

  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, AGENT_RESOLVED_SIGNAL);
  if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
    return -errno;
  /* Writes to a closed socket report EPIPE instead. */
  signal(SIGPIPE, SIG_IGN);

  agent_random_seed(a);
  r = sd_event_default(&a->event);
  if (r < 0)
    return start_failed(r, "create the event loop");
  r = sd_event_add_signal(a->event, NULL, SIGTERM, on_terminate, a);
  if (r >= 0)
    r = sd_event_add_signal(a->event, NULL, SIGINT, on_terminate, a);
  if (r >= 0)
    r = sd_event_add_signal(a->event, NULL, SIGHUP, on_hangup, a);
  if (r < 0)
    return start_failed(r, "watch signals");
  r = sd_event_set_watchdog(a->event, true);
  if (r < 0)
    log_warning("cannot set up the watchdog: %s, ignoring", strerror(-r));

  r = agent_hostname(&a->hostname);
  if (r < 0)
    return start_failed(r, "get the host name");

  r = agent_spool_open(a->cfg.spool, &a->spool);
  if (r < 0) {
    log_error("cannot open the spool %s: %s", a->cfg.spool, strerror(-r));
    return r;
  }
  r = agent_boot_setup(a);
  if (r < 0)
    return r;
  r = agent_startup_setup(a);
  if (r < 0)
    return r;
  r = agent_components_init(a);
  if (r < 0)
    return start_failed(r, "restore the components from the spool");
  r = agent_spool_attach_event(a->spool, a->event, a->cfg.retention_usec);
  if (r < 0)
    return start_failed(r, "set up spool housekeeping");

  /* The Mesos id is fetched with the http checks' client. */
  if (profile_uses_check(a->profile, MST_CHECK_HTTP) || a->cfg.mesos_state_url) {
    r = agent_http_new(a, &a->http);
    if (r < 0)
      return start_failed(r, "set up the HTTP checks");
  }
  r = agent_stream_new(a, &a->stream);
  if (r < 0)
    return start_failed(r, "set up the stream to the aggregators");
  r = agent_probes_start(a);
  if (r < 0)
    return r;
  r = agent_mesos_state_start(a);
  if (r < 0)
    return start_failed(r, "start fetching the Mesos id");
  if (profile_uses_check(a->profile, MST_CHECK_SYSTEMD)) {
    r = agent_systemd_new(a, &a->systemd);
    if (r < 0)
      return start_failed(r, "set up the systemd checks");
    /* The first read of the units may find the stack restarted while the
     * agent was down: a new startup, which the first Hello must name. */
    agent_stream_hold_first(a->stream, AGENT_FIRST_READ_WAIT_USEC);
  }
  r = agent_grace_timer_start(a);
  if (r < 0)
    return start_failed(r, "arm the startup grace timer");
  r = agent_heap_trim_start(a);
  if (r < 0)
    return start_failed(r, "arm the memory trim timer");
  return 0;
}

static void agent_stop(struct agent *a) {
  agent_heap_trim_stop(a);
  agent_probes_stop(a);
  agent_mesos_state_stop(a);
  agent_systemd_free(TAKE_PTR(a->systemd));
  agent_stream_free(TAKE_PTR(a->stream));
  agent_http_free(TAKE_PTR(a->http));
  agent_components_done(a);
  agent_fault_done(a);
  agent_spool_free(TAKE_PTR(a->spool));
  free(TAKE_PTR(a->boot_id));
  free(TAKE_PTR(a->host_boot_id));
  free(TAKE_PTR(a->hostname));
  a->event = sd_event_unref(a->event);
}

int main(int argc, char *argv[]) {
  static const struct option options[] = {
      {"config", required_argument, NULL, 'c'},
      {"check-config", no_argument, NULL, 'C'},
      {"version", no_argument, NULL, 'V'},
      {"help", no_argument, NULL, 'h'},
      {},
  };
  struct mst_diag diag = {};
  struct agent a = {};
  const char *config = NULL;
  bool check_only = false;
  char hb[32];
  int c, r;

  mst_log_set_ident("agentd: ");
  agent_heap_setup();
  while ((c = getopt_long(argc, argv, "c:h", options, NULL)) >= 0) {
    switch (c) {
    case 'c':
      config = optarg;
      break;
    case 'C':
      check_only = true;
      break;
    case 'V':
      printf("muster-agentd %s\n", MUSTER_VERSION);
      return 0;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 1;
    }
  }
  if (optind < argc || !config) {
    if (optind < argc)
      fprintf(stderr, "muster-agentd: unexpected argument '%s'\n", argv[optind]);
    else
      fprintf(stderr, "muster-agentd: --config PATH is required\n");
    usage(stderr);
    return 1;
  }

  r = agent_config_load(&a, config, &diag);
  if (r < 0) {
    mst_diag_print(&diag);
    if (diag.n == 0)
      fprintf(stderr, "%s: %s\n", config, strerror(-r));
    mst_diag_done(&diag);
    agent_config_done(&a);
    return 1;
  }
  mst_diag_done(&diag);
  if (check_only) {
    printf("config OK\n");
    agent_config_done(&a);
    return 0;
  }

  mst_log_set_level(a.cfg.log_level);

  r = agent_start(&a);
  if (r >= 0) {
    (void)sd_notifyf(false, "READY=1\nSTATUS=Checking %zu components, connecting to %s",
                     a.n_components, a.cfg.aggregators);
    log_info("muster-agentd %s running: node %s, role %s (profile %.12s), %zu components, "
             "spool %s (id %s, last seq %" PRIu64 ", acked %" PRIu64 "), heartbeat %s",
             MUSTER_VERSION, a.cfg.node_id, a.profile->role, a.profile->digest, a.n_components,
             a.cfg.spool, agent_spool_id(a.spool), agent_spool_last_seq(a.spool),
             agent_spool_acked_seq(a.spool),
             mst_duration_format(a.cfg.heartbeat_usec, hb, sizeof(hb)));
    r = sd_event_loop(a.event);
    if (r < 0)
      log_error("event loop failed: %s", strerror(-r));
    (void)sd_notify(false, "STOPPING=1\nSTATUS=Shutting down");
  }

  agent_stop(&a);
  agent_config_done(&a);
  if (r >= 0)
    log_info("stopped");
  return r < 0 ? 1 : 0;
}
