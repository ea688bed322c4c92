/* Publishing (publish.h): evaluation, verdict and stage recording, the
 * views, and the timers that drive them. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "aggr.h"
#include "ingest/writer.h"
#include "model/evaluate.h"
#include "operate.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "notify/notify.h"
#include "publish.h"
#include "serve/http.h"
#include "serve/view.h"

#define PUBLISH_MIN_SPACING_USEC (5 * USEC_PER_MSEC)
#define PUBLISH_LAZY_USEC        (1 * USEC_PER_SEC)
#define LONGPOLL_TICK_USEC       (50 * USEC_PER_MSEC)

/* Arms the stale timer at the moment the next node turns unreachable. */
static void stale_timer_rearm(struct aggr *a) {
  uint64_t at = aggr_model_next_stale_usec(&a->model);
  if (at == UINT64_MAX) {
    sd_event_source_set_enabled(a->stale_timer, SD_EVENT_OFF);
    return;
  }
  sd_event_source_set_time(a->stale_timer, at);
  sd_event_source_set_enabled(a->stale_timer, SD_EVENT_ONESHOT);
}

static void record_cluster_verdict(struct aggr *a) {
  _cleanup_free_ char *reasons = aggr_reasons_to_json(&a->model.reasons);
  const char *verdict = mst_verdict_to_string(a->model.verdict);
  struct aggr_write *j =
      aggr_write_new_verdict(AGGR_WRITE_CLUSTER_VERDICT, a->epoch, verdict,
                             (int64_t)(a->model.verdict_since_usec / USEC_PER_MSEC), reasons);
  if (!j) {
    log_error("out of memory recording the cluster verdict, ignoring");
    return;
  }
  log_info("cluster verdict: %s (%zu reasons)", verdict, a->model.reasons.n);
  aggr_writer_submit(a->writer, j);
}

/* Stores the stage completions the last evaluation reached. Only the
 * leader writes; a follower forgets them (its model has no live agents). */
static void store_stage_completions(struct aggr *a) {
  size_t n = 0;
  struct aggr_stage_completion *c = aggr_stage_take_completions(&a->stage, &n);
  for (size_t i = 0; i < n && a->leading; i++) {
    struct aggr_write *j =
        aggr_write_new_stage(a->epoch, c[i].node_id, c[i].boot_id, c[i].role, c[i].stage,
                             (int64_t)(c[i].reached_usec / USEC_PER_MSEC),
                             (int64_t)(c[i].duration_usec / USEC_PER_MSEC));
    if (!j) {
      log_error("out of memory storing a stage completion, ignoring");
      break;
    }
    aggr_writer_submit(a->writer, j);
  }
  aggr_stage_completions_free(c, n);
}

/* Stores the reachability changes the last evaluation found (a node
 * unreachable, or reachable again): whatever the cluster verdict, each is
 * history. The model queues them only while leading. */
static void store_reach_events(struct aggr *a) {
  size_t n = 0;
  struct aggr_reach_event *e = aggr_model_take_reach_events(&a->model, &n);
  for (size_t i = 0; i < n && a->leading; i++) {
    log_info("node %s %s: %s", e[i].node_id, aggr_reach_kind_name(e[i].kind), e[i].detail);
    struct aggr_write *j = aggr_write_new_node_event(
        a->epoch, e[i].node_id, aggr_reach_kind_name(e[i].kind),
        (int64_t)(e[i].at_usec / USEC_PER_MSEC), NULL, e[i].boot_id, e[i].detail);
    if (!j) {
      log_error("out of memory recording a node's reachability, ignoring");
      break;
    }
    aggr_writer_submit(a->writer, j);
  }
  aggr_reach_events_free(e, n);
}

/* Evaluates the model at now; returns whether the cluster verdict changed.
 * Tests run every aggregator with MUSTER_CHECK_EVALUATE=1, which derives the
 * whole model again after each evaluation and logs what the incremental one
 * missed. */
static bool evaluate(struct aggr *a, uint64_t now) {
  bool changed = aggr_model_evaluate(&a->model, &a->stage, now);
  if (a->check_evaluate)
    (void)aggr_model_check(&a->model, now);
  return changed;
}

static int publish_now(sd_event_source *s, uint64_t usec, void *userdata) {
  struct aggr *a = userdata;
  uint64_t now = mst_now_realtime_usec();

  a->publish_armed = false;
  a->last_publish_usec = mst_now_monotonic_usec();
  /* A leader ends what is due of the operator state (operate.h). */
  aggr_operate_follow(a, now);
  /* Only the leader records verdict history; a new leader starts its term
   * with the verdict as it stands. */
  if ((evaluate(a, now) || a->record_verdict) && a->leading) {
    record_cluster_verdict(a);
    a->record_verdict = false;
  }
  store_stage_completions(a);
  store_reach_events(a);
  aggr_notify_publish(a->notify, &a->model, a->leading);
  if (aggr_view_publish(a->views, &a->model, a->ready) < 0)
    log_error("cannot publish a new view (out of memory?), ignoring");
  aggr_http_wake(a->http);   /* blocking reads whose resource moved */
  aggr_operate_published(a); /* writes this view shows */
  a->publish_cost_usec = mst_now_monotonic_usec() - a->last_publish_usec;
  stale_timer_rearm(a);
  return 0;
}

void aggr_request_publish(struct aggr *a, bool urgent) {
  uint64_t now = mst_now_monotonic_usec(), at, cur = 0;

  if (!a->publish_timer)
    return;
  if (urgent) {
    /* Spaced by at least twice what the last one cost: with 10,000 nodes
     * all changing at once a publish takes a while, and the loop must keep
     * at least half its time for reading frames and sending Acks. */
    at = a->last_publish_usec + MST_MAX(PUBLISH_MIN_SPACING_USEC, 2 * a->publish_cost_usec);
    if (at < now)
      at = now;
  } else {
    at = now + PUBLISH_LAZY_USEC;
  }
  if (a->publish_armed && sd_event_source_get_time(a->publish_timer, &cur) >= 0 && cur <= at)
    return;
  sd_event_source_set_time(a->publish_timer, at);
  sd_event_source_set_enabled(a->publish_timer, SD_EVENT_ONESHOT);
  a->publish_armed = true;
}

/* Ends the blocking reads whose wait is over. */
static int longpoll_tick(sd_event_source *s, uint64_t usec, void *userdata) {
  struct aggr *a = userdata;
  aggr_http_expire(a->http);
  sd_event_source_set_time(s, usec + LONGPOLL_TICK_USEC);
  sd_event_source_set_enabled(s, SD_EVENT_ON);
  return 0;
}

static int stale_fired(sd_event_source *s, uint64_t usec, void *userdata) {
  aggr_request_publish(userdata, true);
  return 0;
}

int aggr_publish_start(struct aggr *a) {
  int r;

  /* Accuracy 1 us: sd-event's default (0) lets a timer fire up to 250 ms
   * late, and a node must turn unreachable when its stale timeout passes. */
  r = sd_event_add_time(a->event, &a->publish_timer, CLOCK_MONOTONIC, 0, 1, publish_now, a);
  if (r < 0)
    return r;
  r = sd_event_add_time(a->event, &a->stale_timer, CLOCK_REALTIME, UINT64_MAX, 1, stale_fired, a);
  if (r < 0)
    return r;
  sd_event_source_set_enabled(a->stale_timer, SD_EVENT_OFF);

  a->views = aggr_views_new();
  if (!a->views)
    return -ENOMEM;
  const char *check = getenv("MUSTER_CHECK_EVALUATE");
  a->check_evaluate = check && strcmp(check, "1") == 0;
  if (evaluate(a, mst_now_realtime_usec()) && a->leading)
    record_cluster_verdict(a);
  store_stage_completions(a);
  store_reach_events(a);
  return aggr_view_publish(a->views, &a->model, false);
}

int aggr_publish_serve(struct aggr *a) {
  return sd_event_add_time_relative(a->event, &a->longpoll_timer, CLOCK_MONOTONIC,
                                    LONGPOLL_TICK_USEC, 0, longpoll_tick, a);
}

void aggr_publish_stop(struct aggr *a) {
  a->publish_timer = sd_event_source_disable_unref(a->publish_timer);
  a->stale_timer = sd_event_source_disable_unref(a->stale_timer);
  a->longpoll_timer = sd_event_source_disable_unref(a->longpoll_timer);
  aggr_views_free(TAKE_PTR(a->views));
}
