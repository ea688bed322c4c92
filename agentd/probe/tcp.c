/* tcp checks: a non-blocking connect to `address`. Connected is OK; a
 * refusal, an unreachable host or the timeout is CRITICAL, with the reason
 * (strerror of SO_ERROR). The address is numeric or localhost (see
 * netaddr.c), so nothing here waits for a resolver; the connection is closed
 * as soon as it is made. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "component.h"
#include "mst/addr.h"
#include "mst/duration.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "netaddr.h"
#include "probe/probe.h"
#include "probe/tcp.h"

struct tcp_run {
  struct agent_component *c;
  int fd;
  sd_event_source *io;
  sd_event_source *timeout;
};

static void tcp_run_free(struct tcp_run *run) {
  if (!run)
    return;
  run->io = sd_event_source_disable_unref(run->io);
  run->timeout = sd_event_source_disable_unref(run->timeout);
  if (run->fd >= 0)
    close(run->fd);
  free(run);
}

static void tcp_finish(struct tcp_run *run, enum mst_result result, const char *text) {
  struct agent_component *c = run->c;

  c->run = NULL;
  tcp_run_free(run);
  agent_probe_done(c, result, text, NULL);
}

static void tcp_finish_connected(struct tcp_run *run) {
  uint64_t ms = (mst_now_monotonic_usec() - run->c->run_started_usec) / USEC_PER_MSEC;
  char msg[300];

  snprintf(msg, sizeof(msg), "connected to %s in %llu ms", run->c->conf->address,
           (unsigned long long)ms);
  tcp_finish(run, MST_RESULT_OK, msg);
}

static void tcp_finish_error(struct tcp_run *run, int error) {
  char msg[300];

  snprintf(msg, sizeof(msg), "connect to %s: %s", run->c->conf->address, strerror(-error));
  tcp_finish(run, MST_RESULT_CRITICAL, msg);
}

static int tcp_on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
  struct tcp_run *run = userdata;
  int r = agent_connect_result(fd);

  if (r < 0)
    tcp_finish_error(run, r);
  else
    tcp_finish_connected(run);
  return 0;
}

static int tcp_on_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
  struct tcp_run *run = userdata;
  char msg[300], duration[32];

  snprintf(msg, sizeof(msg), "connect to %s timed out after %s", run->c->conf->address,
           mst_duration_format(run->c->conf->timeout_usec, duration, sizeof(duration)));
  tcp_finish(run, MST_RESULT_CRITICAL, msg);
  return 0;
}

int agent_tcp_start(struct agent_component *c) {
  struct agent *a = c->agent;
  struct mst_addr addr;
  struct tcp_run *run;
  bool connected;
  char err[256];
  int r;

  run = calloc(1, sizeof(*run));
  if (!run)
    return -ENOMEM;
  run->c = c;
  run->fd = -1;
  c->run = run;

  /* A bad address is the check's result, not a failure to start it. The
   * config check refuses such profiles, so this is a safety net. */
  if (mst_addr_parse(c->conf->address, 0, &addr, err, sizeof(err)) < 0) {
    tcp_finish(run, MST_RESULT_UNKNOWN, err);
    return 0;
  }

  r = agent_connect_start((struct sockaddr *)&addr.ss, addr.len, &connected);
  if (r < 0) {
    if (r == -EMFILE || r == -ENFILE || r == -ENOMEM || r == -ENOBUFS)
      goto fail; /* the agent's trouble, not the target's */
    tcp_finish_error(run, r);
    return 0;
  }
  run->fd = r;
  if (connected) {
    tcp_finish_connected(run);
    return 0;
  }

  r = sd_event_add_io(a->event, &run->io, run->fd, EPOLLOUT, tcp_on_io, run);
  if (r < 0)
    goto fail;
  (void)sd_event_source_set_description(run->io, "tcp-connect");
  r = sd_event_add_time_relative(a->event, &run->timeout, CLOCK_MONOTONIC, c->conf->timeout_usec,
                                 USEC_PER_MSEC, tcp_on_timeout, run);
  if (r < 0)
    goto fail;
  (void)sd_event_source_set_description(run->timeout, "tcp-timeout");
  return 0;

fail:
  c->run = NULL;
  tcp_run_free(run);
  return r;
}

void agent_tcp_cancel(struct agent_component *c) {
  tcp_run_free(c->run);
  c->run = NULL;
}
