/* Day-2 operations on the loop (operate.h): each change of operator state,
 * whether an operator's (an HTTP write) or the leader's own (a maintenance
 * ended, an acknowledged component recovered, a node silent past
 * forget_after), goes the same way:
 *   1. it is checked against the model and applied to a copy of the table,
 *      with the history rows it makes and (for a write) the answer;
 *   2. the copy is stored: written to the znode at the version the model
 *      holds (ZooKeeper; one write in flight at a time, the rest wait), or
 *      queued to the writer (standalone);
 *   3. once stored, the copy becomes the model's table (marking the nodes
 *      whose entries moved), the history rows go to the writer, and the
 *      write is answered.
 * A write that ZooKeeper does not complete within twice the session timeout
 * is answered 503: the watch brings whatever the znode ends up holding. */
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggr.h"
#include "election.h"
#include "ingest/writer.h"
#include "model/operator.h"
#include "operate.h"
#include "publish.h"
#include "serve/http.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/time.h"

/* History rows of one change, recorded once it is stored. */
struct op_event {
  char *node, *event, *by, *detail;
};

struct aggr_operate {
  sd_event_source *writes_source, *timeout_timer;
  struct aggr_http_write *head, *tail; /* writes waiting their turn */
  /* The change being stored in ZooKeeper. */
  bool in_flight;
  uint64_t flight_id;
  struct aggr_operator next;
  struct op_event *events;
  size_t n_events;
  struct aggr_http_write *w; /* to answer once stored, or NULL */
  unsigned status;
  char *answer;
  /* Writes stored, answered after the next publish: a client that reads
   * right after its write sees it. */
  struct aggr_http_write *published_head, *published_tail;
};

/* What a ZooKeeper write's completion finds its change by. */
struct flight_ticket {
  struct aggr *a;
  uint64_t id;
};

static void event_done(struct op_event *e) {
  free(e->node);
  free(e->event);
  free(e->by);
  free(e->detail);
}

static void events_free(struct op_event *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    event_done(&v[i]);
  free(v);
}

static void event_push(struct op_event **v, size_t *n, const char *node, const char *event,
                       const char *by, const char *fmt, ...) _printf_(6, 7);
static void event_push(struct op_event **v, size_t *n, const char *node, const char *event,
                       const char *by, const char *fmt, ...) {
  struct op_event e = {.node = strdup(node), .event = strdup(event), .by = strdup(by)};
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&e.detail, fmt, ap) < 0)
    e.detail = NULL;
  va_end(ap);
  struct op_event *grown = realloc(*v, (*n + 1) * sizeof(**v));
  if (!e.node || !e.event || !e.by || !e.detail || !grown) {
    log_error("out of memory recording an operator change of %s in history, ignoring", node);
    event_done(&e);
    if (grown)
      *v = grown;
    return;
  }
  *v = grown;
  (*v)[(*n)++] = e;
}

/* --- answers ------------------------------------------------------------------ */

static json_t *entry_json(const struct aggr_op_entry *e) {
  char since[MST_RFC3339_MAX], until[MST_RFC3339_MAX];
  if (!e)
    return json_null();
  return json_pack("{ssssssss?}", "reason", e->reason, "by", e->by, "since",
                   mst_time_format_rfc3339(e->since_usec, since, sizeof(since)), "until",
                   e->until_usec && e->kind == AGGR_OP_MAINTENANCE
                       ? mst_time_format_rfc3339(e->until_usec, until, sizeof(until))
                       : NULL);
}

static char *error_body(const char *code, const char *fmt, ...) _printf_(2, 3);
static char *error_body(const char *code, const char *fmt, ...) {
  char *message = NULL, *body = NULL;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&message, fmt, ap) < 0)
    message = NULL;
  va_end(ap);
  json_t *j = message ? json_pack("{s{ssss}}", "error", "code", code, "message", message) : NULL;
  if (j)
    body = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  free(message);
  return body;
}

/* The resulting state of a node or component in table op. */
static char *state_body(const struct aggr_operator *op, const char *node, const char *component) {
  uint64_t now = mst_now_realtime_usec();
  const struct aggr_op_entry *m = aggr_operator_find(op, AGGR_OP_MAINTENANCE, node, component);
  json_t *j = json_pack(
      "{ssss?soso}", "node", node, "component", component, "maintenance",
      entry_json(aggr_op_active(m, now) ? m : NULL), "acknowledged",
      entry_json(component ? aggr_operator_find(op, AGGR_OP_ACK, node, component) : NULL));
  char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  return body;
}

/* --- changes ------------------------------------------------------------------- */

static void until_text(uint64_t until, char *buf, size_t size) {
  if (until)
    mst_time_format_rfc3339(until, buf, size);
  else
    snprintf(buf, size, "cleared");
}

/* Applies write w to next (a copy of the model's table): the history rows
 * go to *events; *ret_status and *ret_body get the answer. Returns whether
 * next changed (and must be stored before the answer). */
static bool write_apply(struct aggr *a, const struct aggr_http_write *w, struct aggr_operator *next,
                        struct op_event **events, size_t *n_events, unsigned *ret_status,
                        char **ret_body) {
  const struct aggr_node *n = aggr_model_find(&a->model, w->node);
  const char *comp = w->component;
  uint64_t now = mst_now_realtime_usec();
  char until[MST_RFC3339_MAX], cpart[AGGR_OP_NAME_MAX + 16] = "";
  int r = 0;

  *ret_status = MHD_HTTP_OK;
  if (!n) {
    *ret_status = MHD_HTTP_NOT_FOUND;
    *ret_body = error_body("not_found", "no such node: %s", w->node);
    return false;
  }
  const struct aggr_component *c = comp ? aggr_node_find_component(n, comp) : NULL;
  if (comp)
    snprintf(cpart, sizeof(cpart), "component %s: ", comp);
  switch (w->kind) {
  case AGGR_HTTP_WRITE_MAINTENANCE_SET:
  case AGGR_HTTP_WRITE_ACK_SET: {
    bool ack = w->kind == AGGR_HTTP_WRITE_ACK_SET;
    if (comp && !c) {
      *ret_status = MHD_HTTP_NOT_FOUND;
      *ret_body = error_body("not_found", "node %s has no component %s", w->node, comp);
      return false;
    }
    if (ack && c->state == MST_STATE_HEALTHY) {
      *ret_status = MHD_HTTP_CONFLICT;
      *ret_body = error_body("conflict", "%s on %s is healthy: there is nothing to acknowledge",
                             comp, w->node);
      return false;
    }
    struct aggr_op_entry e = {
        .kind = ack ? AGGR_OP_ACK : AGGR_OP_MAINTENANCE,
        .node = w->node,
        .component = w->component,
        .reason = w->reason,
        .by = w->by,
        .since_usec = now,
        .until_usec = ack ? 0 : w->until_usec,
    };
    r = aggr_operator_put(next, &e);
    until_text(e.until_usec, until, sizeof(until));
    if (r == 0 && ack)
      event_push(events, n_events, w->node, "acknowledged", w->by, "%s%s", cpart, w->reason);
    else if (r == 0)
      event_push(events, n_events, w->node, "maintenance", w->by, "%s%s (until %s)", cpart,
                 w->reason, until);
    break;
  }
  case AGGR_HTTP_WRITE_MAINTENANCE_CLEAR:
  case AGGR_HTTP_WRITE_ACK_CLEAR: {
    bool ack = w->kind == AGGR_HTTP_WRITE_ACK_CLEAR;
    if (!aggr_operator_remove(next, ack ? AGGR_OP_ACK : AGGR_OP_MAINTENANCE, w->node, comp)) {
      *ret_status = MHD_HTTP_CONFLICT;
      *ret_body = error_body("conflict", "%s%s%s is not %s", comp ? comp : "", comp ? " on " : "",
                             w->node, ack ? "acknowledged" : "in maintenance");
      return false;
    }
    event_push(events, n_events, w->node, ack ? "acknowledgement_cleared" : "maintenance_ended",
               w->by, "%scleared by an operator", cpart);
    break;
  }
  case AGGR_HTTP_WRITE_FORGET: {
    char seen[MST_RFC3339_MAX] = "never";
    if (n->conn || n->expected_master) {
      *ret_status = MHD_HTTP_CONFLICT;
      *ret_body = error_body("conflict",
                             n->conn ? "node %s is connected: stop its agent first (a node that "
                                       "reports is not forgotten)"
                                     : "node %s is an expected master: remove it from "
                                       "expected_masters first",
                             w->node);
      return false;
    }
    if (n->last_seen_usec)
      mst_time_format_rfc3339(n->last_seen_usec, seen, sizeof(seen));
    struct aggr_op_entry e = {
        .kind = AGGR_OP_FORGOTTEN,
        .node = w->node,
        .reason = "forgotten by an operator",
        .by = w->by,
        .since_usec = now,
        .until_usec = n->last_seen_usec,
    };
    (void)aggr_operator_remove_node(next, w->node);
    r = aggr_operator_put(next, &e);
    if (r == 0)
      event_push(events, n_events, w->node, "forgotten", w->by,
                 "forgotten by an operator (last seen %s); its history is kept", seen);
    break;
  }
  }
  if (r == -ENOSPC) {
    *ret_status = MHD_HTTP_CONFLICT;
    *ret_body = error_body("conflict", "the operator state is full (%d entries): clear some first",
                           AGGR_OP_ENTRIES_MAX);
    return false;
  }
  if (r < 0) {
    *ret_body = NULL; /* 500 */
    return false;
  }
  if (w->kind == AGGR_HTTP_WRITE_FORGET) {
    json_t *j = json_pack("{ssso}", "node", w->node, "forgotten",
                          entry_json(aggr_operator_find(next, AGGR_OP_FORGOTTEN, w->node, NULL)));
    *ret_body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
  } else
    *ret_body = state_body(next, w->node, comp);
  return true;
}

/* What the leader ends by itself at now (see the top of the file). Returns
 * whether next changed. */
static bool sweep_apply(struct aggr *a, uint64_t now, struct aggr_operator *next,
                        struct op_event **events, size_t *n_events) {
  const struct aggr_model *m = &a->model;
  bool changed = false;
  char when[MST_RFC3339_MAX];

  for (size_t i = next->n; i-- > 0;) {
    const struct aggr_op_entry *e = &next->v[i];
    const struct aggr_node *n = aggr_model_find(m, e->node);
    const struct aggr_component *c =
        n && e->component ? aggr_node_find_component(n, e->component) : NULL;
    const char *event = NULL;
    if (e->kind == AGGR_OP_MAINTENANCE && !aggr_op_active(e, now)) {
      event = "maintenance_ended";
      event_push(events, n_events, e->node, event, "muster", "%s%s%sended at its end time %s",
                 e->component ? "component " : "", e->component ? e->component : "",
                 e->component ? ": " : "",
                 mst_time_format_rfc3339(e->until_usec, when, sizeof(when)));
    } else if (e->kind == AGGR_OP_ACK && c && c->state == MST_STATE_HEALTHY) {
      event = "acknowledgement_cleared";
      event_push(events, n_events, e->node, event, "muster", "component %s: healthy again",
                 e->component);
    } else if (e->kind == AGGR_OP_FORGOTTEN && n && n->last_seen_usec > e->until_usec)
      event = "returned"; /* its agent came back: the node is like any other */
    if (!event)
      continue;
    aggr_operator_remove(next, e->kind, e->node, e->component);
    changed = true;
  }
  if (a->cfg.forget_after_usec == 0)
    return changed;
  for (size_t i = 0; i < m->n_nodes; i++) {
    const struct aggr_node *n = m->nodes[i];
    if (n->conn || n->expected_master || !n->reported ||
        aggr_node_silent_from(m, n) + a->cfg.forget_after_usec > now ||
        aggr_operator_find(next, AGGR_OP_FORGOTTEN, n->id, NULL))
      continue;
    struct aggr_op_entry e = {
        .kind = AGGR_OP_FORGOTTEN,
        .node = n->id,
        .reason = "silent longer than forget_after",
        .by = "muster",
        .since_usec = now,
        .until_usec = n->last_seen_usec,
    };
    (void)aggr_operator_remove_node(next, n->id);
    if (aggr_operator_put(next, &e) < 0)
      break;
    event_push(events, n_events, n->id, "forgotten", "muster",
               "silent since %s, longer than forget_after; its history is kept",
               mst_time_format_rfc3339(n->last_seen_usec, when, sizeof(when)));
    changed = true;
  }
  return changed;
}

/* The stored table next becomes the model's; history and answer follow. */
static void change_stored(struct aggr *a, struct aggr_operator *next, struct op_event *events,
                          size_t n_events, struct aggr_http_write *w, unsigned status,
                          char *answer) {
  uint64_t now = mst_now_realtime_usec();
  if (next->version < 0 ||
      next->version > a->model.operator.version || !aggr_operator_equal(next, &a->model.operator)) {
    if (aggr_model_set_operator(&a->model, next) > 0)
      for (size_t i = 0; i < a->model.n_nodes; i++)
        a->model.nodes[i]->dirty = true; /* the cause graph and stages lost a node */
  }
  for (size_t i = 0; i < n_events; i++) {
    const struct aggr_node *n = aggr_model_find(&a->model, events[i].node);
    log_notice("operator: node %s %s by %s: %s", events[i].node, events[i].event, events[i].by,
               events[i].detail);
    struct aggr_write *j = aggr_write_new_node_event(
        a->epoch, events[i].node, events[i].event, (int64_t)(now / USEC_PER_MSEC), events[i].by,
        n && n->boot_id ? n->boot_id : NULL, events[i].detail);
    if (j)
      aggr_writer_submit(a->writer, j);
    else
      log_error("out of memory recording an operator change in history, ignoring");
  }
  events_free(events, n_events);
  if (w) {
    struct aggr_operate *o = a->operate;
    w->status = status;
    w->answer = answer;
    w->next = NULL;
    if (o->published_tail)
      o->published_tail->next = w;
    else
      o->published_head = w;
    o->published_tail = w;
  } else
    free(answer);
  aggr_request_publish(a, true);
}

void aggr_operate_published(struct aggr *a) {
  struct aggr_operate *o = a->operate;
  if (!o)
    return;
  for (struct aggr_http_write *w = o->published_head, *next; w; w = next) {
    next = w->next;
    aggr_http_write_answer(w, w->status, TAKE_PTR(w->answer));
  }
  o->published_head = o->published_tail = NULL;
}

static void pump(struct aggr *a);

/* The change in flight (id) is stored (r 0, at version) or not (-errno). */
static void flight_finish(struct aggr *a, uint64_t id, int r, int64_t version) {
  struct aggr_operate *o = a->operate;
  if (!o || !o->in_flight || o->flight_id != id)
    return; /* timed out already */
  o->in_flight = false;
  sd_event_source_set_enabled(o->timeout_timer, SD_EVENT_OFF);
  if (r == 0) {
    o->next.version = version;
    change_stored(a, &o->next, TAKE_PTR(o->events), o->n_events, TAKE_PTR(o->w), o->status,
                  TAKE_PTR(o->answer));
    o->n_events = 0;
  } else {
    if (o->w)
      aggr_http_write_answer(TAKE_PTR(o->w), MHD_HTTP_SERVICE_UNAVAILABLE,
                             error_body("unavailable", "%s did not store the change (%s); retry",
                                        a->election ? "ZooKeeper" : "the history database",
                                        strerror(-r)));
    free(TAKE_PTR(o->answer));
    events_free(TAKE_PTR(o->events), o->n_events);
    o->n_events = 0;
  }
  aggr_operator_done(&o->next);
  pump(a);
}

static void flight_done(int r, int64_t version, void *userdata) {
  struct flight_ticket *t = userdata;
  struct aggr *a = t->a;
  uint64_t id = t->id;
  free(t);
  flight_finish(a, id, r, version);
}

void aggr_operate_committed(struct aggr *a, uint64_t ticket, bool ok) {
  int64_t version = a->model.operator.version + 1;
  flight_finish(a, ticket, ok ? 0 : -EIO, version);
}

static int flight_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
  struct aggr *a = userdata;
  struct aggr_operate *o = a->operate;
  if (!o->in_flight)
    return 0;
  log_warning("operator: %s did not complete a write in time, answering 503",
              a->election ? "ZooKeeper" : "the history database");
  o->flight_id++; /* its completion, if it ever comes, is ignored */
  o->in_flight = false;
  if (o->w)
    aggr_http_write_answer(TAKE_PTR(o->w), MHD_HTTP_SERVICE_UNAVAILABLE,
                           error_body("unavailable", "the store did not answer in time; retry"));
  free(TAKE_PTR(o->answer));
  events_free(TAKE_PTR(o->events), o->n_events);
  o->n_events = 0;
  aggr_operator_done(&o->next);
  pump(a);
  return 0;
}

/* Stores next (taken over) with its events and answer as the write in
 * flight: in ZooKeeper, or standalone in the history database; either way
 * the write is answered once stored (flight_finish), so that an answered
 * change survives a kill -9. */
static void change_store(struct aggr *a, struct aggr_operator *next, struct op_event *events,
                         size_t n_events, struct aggr_http_write *w, unsigned status,
                         char *answer) {
  struct aggr_operate *o = a->operate;
  _cleanup_free_ char *doc = aggr_operator_to_json(next);
  int r = doc ? 0 : -ENOMEM;

  if (r == 0 && !a->election) {
    /* Standalone: the writer reports the commit (aggr_operate_committed). */
    struct aggr_write *j = aggr_write_new_operator(a->epoch, doc, ++o->flight_id);
    if (j)
      aggr_writer_submit(a->writer, j);
    else
      r = -ENOMEM;
  } else if (r == 0) {
    struct flight_ticket *t = malloc(sizeof(*t));
    if (t) {
      *t = (struct flight_ticket){.a = a, .id = ++o->flight_id};
      r = aggr_election_operator_write(a->election, doc, strlen(doc), a->model.operator.version,
                                       flight_done, t);
      if (r < 0)
        free(t);
    } else
      r = -ENOMEM;
  }
  if (r < 0) {
    if (w)
      aggr_http_write_answer(
          w, MHD_HTTP_SERVICE_UNAVAILABLE,
          error_body("unavailable", "cannot store the change: %s; retry", strerror(-r)));
    free(answer);
    events_free(events, n_events);
    aggr_operator_done(next);
    return;
  }
  o->in_flight = true;
  o->next = *next;
  aggr_operator_init(next);
  o->events = events;
  o->n_events = n_events;
  o->w = w;
  o->status = status;
  o->answer = answer;
  sd_event_source_set_time_relative(o->timeout_timer, 2 * a->cfg.zk_session_timeout_usec);
  sd_event_source_set_enabled(o->timeout_timer, SD_EVENT_ONESHOT);
}

/* Runs the writes waiting, in order, until one is in flight. */
static void pump(struct aggr *a) {
  struct aggr_operate *o = a->operate;
  while (!o->in_flight && o->head) {
    struct aggr_http_write *w = o->head;
    o->head = w->next;
    if (!o->head)
      o->tail = NULL;
    w->next = NULL;
    if (!a->leading || (a->election && a->model.operator.version<0)) {
      aggr_http_write_answer(
          w, MHD_HTTP_SERVICE_UNAVAILABLE,
          error_body("unavailable", a->leading ? "the operator state is not read from ZooKeeper "
                                                 "yet; retry"
                                               : "this aggregator no longer leads; retry"));
      continue;
    }
    struct aggr_operator next;
    struct op_event *events = NULL;
    size_t n_events = 0;
    unsigned status;
    char *answer = NULL;
    if (aggr_operator_copy(&a->model.operator, & next) < 0) {
      aggr_http_write_answer(w, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
      continue;
    }
    if (!write_apply(a, w, &next, &events, &n_events, &status, &answer)) {
      events_free(events, n_events);
      aggr_operator_done(&next);
      aggr_http_write_answer(w, status, answer);
      continue;
    }
    change_store(a, &next, events, n_events, w, status, answer);
  }
}

/* Moves the writes the server queued after those waiting here, in order. */
static void take_server_writes(struct aggr *a) {
  struct aggr_operate *o = a->operate;
  for (struct aggr_http_write *w = a->http ? aggr_http_take_writes(a->http) : NULL, *next; w;
       w = next) {
    next = w->next;
    w->next = NULL;
    if (o->tail)
      o->tail->next = w;
    else
      o->head = w;
    o->tail = w;
  }
}

static int on_writes(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
  struct aggr *a = userdata;
  take_server_writes(a);
  pump(a);
  return 0;
}

void aggr_operate_follow(struct aggr *a, uint64_t now_usec) {
  struct aggr_operate *o = a->operate;
  struct aggr_operator next;
  struct op_event *events = NULL;
  size_t n_events = 0;

  if (!o || !a->leading || o->in_flight || o->head || (a->election && a->model.operator.version<0))
    return;
  if (a->model.operator.n == 0 && a->cfg.forget_after_usec == 0)
    return;
  if (aggr_operator_copy(&a->model.operator, & next) < 0)
    return;
  if (!sweep_apply(a, now_usec, &next, &events, &n_events)) {
    events_free(events, n_events);
    aggr_operator_done(&next);
    return;
  }
  change_store(a, &next, events, n_events, NULL, 0, NULL);
}

void aggr_operate_zk_changed(struct aggr *a, const char *data, size_t len, int64_t version) {
  struct aggr_operator op;
  char err[160];
  if (version <= a->model.operator.version)
    return; /* ours, applied already */
  if (aggr_operator_from_json(data, data ? len : 0, &op, err, sizeof(err)) < 0) {
    log_error("operator: the document in ZooKeeper (version %lld) is not readable: %s, ignoring",
              (long long)version, err);
    return;
  }
  op.version = version;
  log_info("operator: state at version %lld: %zu entries", (long long)version, op.n);
  if (aggr_model_set_operator(&a->model, &op) > 0)
    for (size_t i = 0; i < a->model.n_nodes; i++)
      a->model.nodes[i]->dirty = true;
  aggr_request_publish(a, true);
  if (a->operate)
    pump(a); /* writes held until the state was read */
}

int aggr_operate_start(struct aggr *a) {
  struct aggr_operate *o = calloc(1, sizeof(*o));
  int r;
  if (!o)
    return -ENOMEM;
  aggr_operator_init(&o->next);
  a->operate = o;
  r = sd_event_add_io(a->event, &o->writes_source, aggr_http_writes_fd(a->http), EPOLLIN, on_writes,
                      a);
  if (r < 0)
    return r;
  r = sd_event_add_time(a->event, &o->timeout_timer, CLOCK_MONOTONIC, UINT64_MAX, 0, flight_timeout,
                        a);
  if (r < 0)
    return r;
  return sd_event_source_set_enabled(o->timeout_timer, SD_EVENT_OFF);
}

void aggr_operate_stop(struct aggr *a) {
  struct aggr_operate *o = a->operate;
  if (!o)
    return;
  aggr_operate_published(a);
  take_server_writes(a);
  for (struct aggr_http_write *w = o->head, *next; w; w = next) {
    next = w->next;
    aggr_http_write_answer(w, MHD_HTTP_SERVICE_UNAVAILABLE,
                           error_body("not_ready", "the aggregator is stopping; retry"));
  }
  if (o->w)
    aggr_http_write_answer(o->w, MHD_HTTP_SERVICE_UNAVAILABLE,
                           error_body("not_ready", "the aggregator is stopping; retry"));
  free(o->answer);
  events_free(o->events, o->n_events);
  aggr_operator_done(&o->next);
  sd_event_source_disable_unref(o->writes_source);
  sd_event_source_disable_unref(o->timeout_timer);
  free(o);
  a->operate = NULL;
}
