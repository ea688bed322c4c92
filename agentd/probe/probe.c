/* Probe scheduling and the handling that every probe kind shares.
 *
 * Each probed component has one timer. Its first run comes at a random
 * point within min(interval, 200ms) of the start, so that a node's checks
 * neither all fire at once nor keep a test waiting; afterwards a run starts
 * every `interval`, counted from the start of the previous run, and never
 * while the previous run is still going. A run ends through
 * agent_probe_done(), whatever its kind; a kind that cannot even start its
 * run reports UNKNOWN with the reason, as a result like any other.
 *
 * Output text: only the first line is kept, perfdata (after '|') is split
 * off, and the text is made printable UTF-8 by mst_utf8_clean() (invalid
 * bytes become '?', control characters spaces) because it goes into
 * protobuf strings, JSON and logs, and the aggregator refuses a frame whose
 * strings are not UTF-8. It is capped at AGENT_OUTPUT_MAX bytes on a
 * character boundary, with AGENT_TRUNCATED_MARK appended when cut. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "component.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "probe/exec.h"
#include "probe/http.h"
#include "probe/probe.h"
#include "probe/tcp.h"
#include "util.h"
#include "mst/utf8.h"

#define PROBE_FIRST_RUN_MAX_USEC (200 * USEC_PER_MSEC)
#define PROBE_PERFDATA_MAX       4096

/* --- output text ------------------------------------------------------------------ */

static bool is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static void trim(const char **s, size_t *n) {
  while (*n > 0 && is_blank(**s)) {
    (*s)++;
    (*n)--;
  }
  while (*n > 0 && is_blank((*s)[*n - 1]))
    (*n)--;
}

int agent_output_parse(const char *raw, size_t len, bool was_cut, char **ret_text,
                       char **ret_perfdata) {
  const char *nl = raw ? memchr(raw, '\n', len) : NULL;
  size_t line_len = nl ? (size_t)(nl - raw) : len;
  const char *bar = raw ? memchr(raw, '|', line_len) : NULL;
  const char *text = raw ? raw : "", *perf = NULL;
  size_t text_len = bar ? (size_t)(bar - raw) : line_len, perf_len = 0;
  _cleanup_free_ char *t = NULL, *p = NULL;

  /* A cut inside the perfdata does not cut the text. */
  bool text_cut = was_cut && !nl && !bar;
  if (bar) {
    perf = bar + 1;
    perf_len = line_len - text_len - 1;
    trim(&perf, &perf_len);
  }
  trim(&text, &text_len);

  t = mst_utf8_clean(text, text_len, AGENT_OUTPUT_MAX, AGENT_TRUNCATED_MARK, text_cut);
  if (!t)
    return -ENOMEM;
  if (perf_len > 0) {
    p = mst_utf8_clean(perf, perf_len, PROBE_PERFDATA_MAX, NULL, false);
    if (!p)
      return -ENOMEM;
  }
  *ret_text = TAKE_PTR(t);
  *ret_perfdata = TAKE_PTR(p);
  return 0;
}

char *agent_output_clean(const char *text) {
  const char *s = text ? text : "";
  size_t n = strcspn(s, "\n");

  trim(&s, &n);
  return mst_utf8_clean(s, n, AGENT_OUTPUT_MAX, AGENT_TRUNCATED_MARK, false);
}

/* --- scheduling -------------------------------------------------------------------- */

static int probe_start(struct agent_component *c) {
  switch (c->conf->check) {
  case MST_CHECK_EXEC:
    return agent_exec_start(c);
  case MST_CHECK_HTTP:
    return agent_http_start(c);
  case MST_CHECK_TCP:
    return agent_tcp_start(c);
  default:
    return -EOPNOTSUPP;
  }
}

static void probe_cancel(struct agent_component *c) {
  if (!c->run)
    return;
  switch (c->conf->check) {
  case MST_CHECK_EXEC:
    agent_exec_cancel(c);
    break;
  case MST_CHECK_HTTP:
    agent_http_cancel(c);
    break;
  case MST_CHECK_TCP:
    agent_tcp_cancel(c);
    break;
  default:
    break;
  }
  c->run = NULL;
}

/* Timer slack: coalesces wake-ups of many checks; small for short intervals. */
static uint64_t probe_accuracy(const struct agent_component *c) {
  return MST_MIN(MST_MAX(c->conf->interval_usec / 50, USEC_PER_MSEC), 100 * USEC_PER_MSEC);
}

static int probe_on_timer(sd_event_source *source, uint64_t usec, void *userdata) {
  struct agent_component *c = userdata;
  int r;

  if (c->run)
    return 0; /* still running; agent_probe_done() schedules the next run */

  c->run_started_usec = mst_now_monotonic_usec();
  r = probe_start(c);
  if (r < 0) {
    char msg[256];

    /* Nothing was started, so no completion will come: report it here. */
    snprintf(msg, sizeof(msg), "cannot start the %s check: %s",
             mst_check_kind_to_string(c->conf->check), strerror(-r));
    c->run = NULL;
    agent_probe_done(c, MST_RESULT_UNKNOWN, msg, NULL);
  }
  return 0;
}

static void probe_schedule_next(struct agent_component *c) {
  uint64_t now = mst_now_monotonic_usec();
  uint64_t next = c->run_started_usec + c->conf->interval_usec;
  int r;

  if (!c->schedule)
    return; /* stopping */
  if (next < now)
    next = now;
  /* Later runs may coalesce a little with their neighbours. */
  (void)sd_event_source_set_time_accuracy(c->schedule, probe_accuracy(c));
  r = sd_event_source_set_time(c->schedule, next);
  if (r >= 0)
    r = sd_event_source_set_enabled(c->schedule, SD_EVENT_ONESHOT);
  if (r < 0)
    log_error("component %s: cannot schedule the next check: %s", c->conf->name, strerror(-r));
}

void agent_probe_done(struct agent_component *c, enum mst_result r, const char *text,
                      const char *perfdata) {
  _cleanup_free_ char *clean = agent_output_clean(text);

  agent_component_result(c, r, clean ? clean : "", perfdata);
  probe_schedule_next(c);
}

int agent_probes_start(struct agent *a) {
  for (size_t i = 0; i < a->n_components; i++) {
    struct agent_component *c = &a->components[i];
    uint64_t first;
    int r;

    if (c->conf->check == MST_CHECK_SYSTEMD || c->conf->check == MST_CHECK_UNSPECIFIED)
      continue;
    first = agent_random_below(a, MST_MIN(c->conf->interval_usec, PROBE_FIRST_RUN_MAX_USEC) + 1);
    r = sd_event_add_time_relative(a->event, &c->schedule, CLOCK_MONOTONIC, first, USEC_PER_MSEC,
                                   probe_on_timer, c);
    if (r < 0) {
      log_error("component %s: cannot schedule its check: %s", c->conf->name, strerror(-r));
      return r;
    }
    (void)sd_event_source_set_description(c->schedule, "probe");
  }
  return 0;
}

void agent_probes_stop(struct agent *a) {
  for (size_t i = 0; i < a->n_components; i++) {
    struct agent_component *c = &a->components[i];

    c->schedule = sd_event_source_disable_unref(c->schedule);
    probe_cancel(c);
  }
}
