/* muster-agentd: the per-node agent. This file is its start and its end:
 * the command line, loading the config and the profile (config.c), bringing
 * up the parts in order on one sd-event loop, signals, readiness and the
 * watchdog through sd_notify, and taking everything down again so that a
 * SIGTERM leaves nothing behind (the sanitizer and valgrind runs check it).
 *
 * Start order: signals are blocked first (sd-event needs SIGCHLD blocked
 * before the first exec child exists, and SIGTERM/SIGINT arrive through
 * signalfd), then the boot facts, the spool, the restored components, the
 * HTTP client, the stream, the probes and the systemd bus. READY=1 follows
 * once the spool is open and the probes are scheduled; it does not wait for
 * the systemd bus, which may be down and is retried in the background. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "agent.h"
#include "mst/diag.h"
#include "mst/duration.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "mst/tls.h"
#include "spool.h"

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

/* The agent's heap is small (a few hundred KiB) and lives for months. glibc's
 * defaults suit a busy program better: one arena per thread that ever
 * mallocs (the resolver's threads would each get one), and a threshold for
 * mmap()ing large blocks that rises to the largest block ever freed, after
 * which such blocks stay in the heap for good. Fixed thresholds keep large
 * transient buffers out of the heap, and malloc_trim() gives back the pages
 * that start-up and bursts of changes leave free inside it: 30 s after the
 * start, 5 s after a state change (agent_trim_soon()), and every 10 min. */
#define AGENT_MMAP_THRESHOLD         (64 * 1024)
#define AGENT_TRIM_THRESHOLD         (64 * 1024)
#define AGENT_TRIM_FIRST_USEC        (30 * USEC_PER_SEC)
#define AGENT_TRIM_EVERY_USEC        (10 * 60 * USEC_PER_SEC)
#define AGENT_TRIM_AFTER_CHANGE_USEC (5 * USEC_PER_SEC)
#define AGENT_TRIM_ACCURACY_USEC     (5 * USEC_PER_SEC)

static void agent_malloc_setup(void) {
  (void)mallopt(M_ARENA_MAX, 1);
  (void)mallopt(M_MMAP_THRESHOLD, AGENT_MMAP_THRESHOLD);
  (void)mallopt(M_TRIM_THRESHOLD, AGENT_TRIM_THRESHOLD);
}

static int on_trim_timer(sd_event_source *source, uint64_t usec, void *userdata) {
  (void)malloc_trim(0);
  (void)sd_event_source_set_time_relative(source, AGENT_TRIM_EVERY_USEC);
  return 0;
}

void agent_trim_soon(struct agent *a) {
  uint64_t now, at;

  if (!a->trim_timer || sd_event_now(a->event, CLOCK_MONOTONIC, &now) < 0 ||
      sd_event_source_get_time(a->trim_timer, &at) < 0)
    return;
  if (at > now + AGENT_TRIM_AFTER_CHANGE_USEC)
    (void)sd_event_source_set_time(a->trim_timer, now + AGENT_TRIM_AFTER_CHANGE_USEC);
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
  struct mst_tls_creds *creds = NULL;
  struct mst_diag diag = {0};

  if (!a->tls_creds) {
    log_notice("received HUP: TLS is off, and reloading the rest of the config is not supported "
               "(restart instead), ignoring");
    return 0;
  }
  if (agent_tls_load(a, a->config_path, &creds, &diag) < 0 || !creds) {
    mst_diag_print(&diag);
    log_error("received HUP: the TLS files cannot be used; keeping the ones in use");
  } else {
    mst_tls_creds_unref(a->tls_creds);
    a->tls_creds = creds;
    log_notice("received HUP: reloaded the TLS certificate, key and CA for the next connection "
               "(the rest of the config needs a restart)");
    agent_stream_retry_now(a->stream);
  }
  mst_diag_done(&diag);
  return 0;
}

/* Boot id and the start of this boot's grace clock. */
static int agent_boot_setup(struct agent *a) {
  int64_t now_ms = (int64_t)(mst_now_realtime_usec() / USEC_PER_MSEC), first_seen_ms;
  int r;

  r = agent_boot_id_read(a->cfg.boot_id_file, &a->boot_id);
  if (r < 0) {
    log_error("cannot read the boot id from %s: %s", a->cfg.boot_id_file,
              r == -EBADMSG ? "not a one-line printable id" : strerror(-r));
    return r;
  }
  r = agent_spool_note_boot(a->spool, a->boot_id, now_ms, &first_seen_ms, &a->boot_is_new);
  if (r < 0)
    return r;

  /* The kernel knows when the real boot began; a simulated boot id (tests)
   * began when this spool first saw it. */
  if (strcmp(a->cfg.boot_id_file, AGENT_DEFAULT_BOOT_ID_FILE) == 0) {
    r = agent_boot_kernel_time(&a->boot_start_usec);
    if (r < 0) {
      log_warning("cannot read the boot time from /proc/stat: %s, using when the boot was "
                  "first seen",
                  strerror(-r));
      a->boot_start_usec = (uint64_t)first_seen_ms * USEC_PER_MSEC;
    }
  } else {
    a->boot_start_usec = (uint64_t)first_seen_ms * USEC_PER_MSEC;
  }
  uint64_t now = mst_now_realtime_usec();
  log_info("boot %s (%s), started %" PRIu64 " s ago", a->boot_id,
           a->boot_is_new ? "new to this spool" : "seen before",
           (uint64_t)((now - MST_MIN(a->boot_start_usec, now)) / USEC_PER_SEC));
  return 0;
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
  if (r < 0) {
    log_error("cannot create the event loop: %s", strerror(-r));
    return r;
  }
  r = sd_event_add_signal(a->event, NULL, SIGTERM, on_terminate, a);
  if (r >= 0)
    r = sd_event_add_signal(a->event, NULL, SIGINT, on_terminate, a);
  if (r >= 0)
    r = sd_event_add_signal(a->event, NULL, SIGHUP, on_hangup, a);
  if (r < 0) {
    log_error("cannot watch signals: %s", strerror(-r));
    return r;
  }
  r = sd_event_set_watchdog(a->event, true);
  if (r < 0)
    log_warning("cannot set up the watchdog: %s, ignoring", strerror(-r));

  r = agent_hostname(&a->hostname);
  if (r < 0) {
    log_error("cannot get the host name: %s", strerror(-r));
    return r;
  }

  r = agent_spool_open(a->cfg.spool, &a->spool);
  if (r < 0) {
    log_error("cannot open the spool %s: %s", a->cfg.spool, strerror(-r));
    return r;
  }
  r = agent_boot_setup(a);
  if (r < 0)
    return r;
  r = agent_components_init(a);
  if (r < 0) {
    log_error("cannot restore the components from the spool: %s", strerror(-r));
    return r;
  }
  r = agent_spool_attach_event(a->spool, a->event, a->cfg.retention_usec);
  if (r < 0) {
    log_error("cannot set up spool housekeeping: %s", strerror(-r));
    return r;
  }

  if (profile_uses_check(a->profile, MST_CHECK_HTTP)) {
    r = agent_http_new(a, &a->http);
    if (r < 0) {
      log_error("cannot set up the HTTP checks: %s", strerror(-r));
      return r;
    }
  }
  r = agent_stream_new(a, &a->stream);
  if (r < 0) {
    log_error("cannot set up the stream to the aggregators: %s", strerror(-r));
    return r;
  }
  r = agent_probes_start(a);
  if (r < 0)
    return r;
  if (profile_uses_check(a->profile, MST_CHECK_SYSTEMD)) {
    r = agent_systemd_new(a, &a->systemd);
    if (r < 0) {
      log_error("cannot set up the systemd checks: %s", strerror(-r));
      return r;
    }
  }
  r = agent_grace_timer_start(a);
  if (r < 0) {
    log_error("cannot arm the startup grace timer: %s", strerror(-r));
    return r;
  }
  r = sd_event_add_time_relative(a->event, &a->trim_timer, CLOCK_MONOTONIC, AGENT_TRIM_FIRST_USEC,
                                 AGENT_TRIM_ACCURACY_USEC, on_trim_timer, a);
  if (r < 0) {
    log_error("cannot arm the memory trim timer: %s", strerror(-r));
    return r;
  }
  (void)sd_event_source_set_description(a->trim_timer, "malloc-trim");
  (void)sd_event_source_set_enabled(a->trim_timer, SD_EVENT_ON);
  return 0;
}

static void agent_stop(struct agent *a) {
  a->trim_timer = sd_event_source_disable_unref(a->trim_timer);
  agent_probes_stop(a);
  agent_systemd_free(a->systemd);
  a->systemd = NULL;
  agent_stream_free(a->stream);
  a->stream = NULL;
  agent_http_free(a->http);
  a->http = NULL;
  agent_components_done(a);
  agent_spool_free(a->spool);
  a->spool = NULL;
  free(a->boot_id);
  a->boot_id = NULL;
  free(a->hostname);
  a->hostname = NULL;
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
  agent_malloc_setup();
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
