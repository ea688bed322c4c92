/* The agent's fault: why it cannot record its state right now, so that the
 * aggregator does not take the states it last heard for the truth.
 *
 * A fault is a write to the spool that failed: the disk is full, an I/O
 * error, a file system gone read-only. A state change that cannot be
 * committed is not made (component.c), so without a word the agent would go
 * on reporting the states from before it: a node whose checks all fail
 * would stay healthy. The fault begins with the first write that fails and
 * ends with the next one that succeeds. It goes in every heartbeat
 * (stream.c): its beginning at once, its end only after the changes
 * committed before it, so that the aggregator never sees the old states
 * without the fault.
 *
 * While it lasts, a timer retries every FAULT_RETRY_USEC: the changes that
 * could not be recorded (agent_components_record_pending()), or, when none
 * waits, one small write (agent_spool_check_writable()). So the fault ends,
 * and the true states go out, within about a second of the disk freeing,
 * even when no new result would come to retry with (a systemd unit that
 * changes no more, a check with a long interval). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "component.h"
#include "fault.h"
#include "mst/duration.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "mst/utf8.h"
#include "spool.h"
#include "stream.h"

#define FAULT_RETRY_USEC    (1 * USEC_PER_SEC)
#define FAULT_CUT_MARK      "…"
#define FAULT_MESSAGE_INPUT 1024 /* bytes of the composed text looked at */

static int fault_on_retry(sd_event_source *source, uint64_t usec, void *userdata) {
  struct agent *a = userdata;
  int r;

  /* Each attempt sets or clears the fault itself. */
  if (agent_components_record_pending(a) == 0 && a->fault[0]) {
    r = agent_spool_check_writable(a->spool);
    if (r < 0)
      agent_fault_spool_failed(a, r);
    else
      agent_fault_clear(a);
  }
  if (a->fault[0]) {
    (void)sd_event_source_set_time_relative(source, FAULT_RETRY_USEC);
    (void)sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
  }
  return 0;
}

static void fault_arm_retry(struct agent *a) {
  int enabled = SD_EVENT_OFF, r;

  if (!a->event)
    return;
  if (!a->fault_timer) {
    r = sd_event_add_time_relative(a->event, &a->fault_timer, CLOCK_MONOTONIC, FAULT_RETRY_USEC,
                                   10 * USEC_PER_MSEC, fault_on_retry, a);
    if (r < 0) {
      log_warning("cannot arm the retry of the spool's writes: %s; retrying with the next "
                  "result only, ignoring",
                  strerror(-r));
      return;
    }
    (void)sd_event_source_set_description(a->fault_timer, "fault-retry");
    (void)sd_event_source_set_enabled(a->fault_timer, SD_EVENT_ONESHOT);
    return;
  }
  (void)sd_event_source_get_enabled(a->fault_timer, &enabled);
  if (enabled == SD_EVENT_OFF) {
    (void)sd_event_source_set_time_relative(a->fault_timer, FAULT_RETRY_USEC);
    (void)sd_event_source_set_enabled(a->fault_timer, SD_EVENT_ONESHOT);
  }
}

void agent_fault_spool_failed(struct agent *a, int r) {
  const char *cause = agent_spool_write_error(a->spool);
  char text[FAULT_MESSAGE_INPUT];
  _cleanup_free_ char *clean = NULL;
  bool begins = !a->fault[0];

  snprintf(text, sizeof(text), "writing the spool %s failed: %s", agent_spool_path(a->spool),
           cause[0] ? cause : strerror(-r));
  /* The path is the operator's and may be any bytes: the heartbeat carries
   * printable UTF-8 within the cap the aggregator enforces. */
  clean = mst_utf8_clean(text, strlen(text), MST_AGENT_FAULT_MAX - strlen(FAULT_CUT_MARK),
                         FAULT_CUT_MARK, false);
  if (!clean) {
    /* Still a fault: say so without the detail. */
    if (!begins)
      return;
    snprintf(a->fault, sizeof(a->fault), "writing the spool failed");
  } else if (strcmp(clean, a->fault) == 0) {
    fault_arm_retry(a);
    return;
  } else
    snprintf(a->fault, sizeof(a->fault), "%s", clean);

  if (begins) {
    a->fault_since_usec = mst_now_realtime_usec();
    log_error("cannot record state changes: %s; telling the aggregator, retrying every second",
              a->fault);
  } else
    log_error("still cannot record state changes: %s", a->fault);
  fault_arm_retry(a);
  agent_stream_fault_changed(a->stream);
}

void agent_fault_clear(struct agent *a) {
  uint64_t now = mst_now_realtime_usec();
  char lasted[32];

  if (!a->fault[0])
    return;
  mst_duration_format(
      now > a->fault_since_usec ? (now - a->fault_since_usec) / USEC_PER_MSEC * USEC_PER_MSEC : 0,
      lasted, sizeof(lasted));
  log_info("the spool records again: the fault of %s is over (%s)", lasted, a->fault);
  a->fault[0] = '\0';
  a->fault_since_usec = 0;
  if (a->fault_timer)
    (void)sd_event_source_set_enabled(a->fault_timer, SD_EVENT_OFF);
  agent_stream_fault_changed(a->stream);
}

void agent_fault_done(struct agent *a) {
  a->fault_timer = sd_event_source_disable_unref(a->fault_timer);
}
