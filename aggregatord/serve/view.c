/* Rendering and publishing the immutable views that the HTTP threads serve
 * (see view.h for the thread rules).
 *
 * DESIGN
 *   Rendering. The loop writes JSON straight into a growable buffer (struct
 *   json_writer below): compact, keys in a fixed order, so equal models
 *   give equal bytes. jansson built the same bodies about five times slower
 *   (a tree of allocations per value), which at 10k nodes x 50 components
 *   kept the loop busy for seconds on a full render. An indexed body is
 *   stored as its content, the object without its closing brace, followed
 *   by ',"index":N}'. Publishing compares the new content with the previous
 *   body of the same resource: equal bytes keep the previous body, and with
 *   it the index. Clean nodes are not rendered at all: their bodies are
 *   shared with the previous view (body refcounts are loop-thread only, as
 *   only the loop creates and frees views). The node list is the
 *   concatenation of per-node summaries, so a publish costs a memcpy per
 *   clean node, not a re-render.
 *
 *   Text from agents (ids, hostnames, outputs) is not trusted to be UTF-8:
 *   invalid sequences become U+FFFD, and control characters are escaped, so
 *   every body is valid JSON whatever an agent sent.
 *
 *   Reclamation. Readers: gate++, load current, view->refs++, gate--. The
 *   loop retires the old view after swapping the pointer; once it has seen
 *   the gate at 0 after the swap, no reader can be between the load and the
 *   refcount bump on a retired view, so refs == 0 means nobody holds it and
 *   nobody can take it any more. All atomics are sequentially consistent,
 *   which that argument needs (store-load ordering between the swap and the
 *   gate read). Unlike a grace period, this holds however long a reader
 *   thread is descheduled.
 *
 *   Live fields. A node's startup "elapsed" grows with the clock while the
 *   node is starting, and its "eta_seconds" shrinks. Rather than re-render
 *   (and bump the index) every second, its body carries placeholders at
 *   recorded offsets that aggr_body_live_copy() fills in per request from
 *   the boot time and the estimate's deadline and floor (stage.h); the index
 *   still marks only real changes. */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mst/dynbuf.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/str.h"
#include "mst/time.h"
#include "serve/dcos_node.h"
#include "serve/metrics.h"
#include "mst/utf8.h"
#include "serve/view.h"

/* The maximum ',"index":18446744073709551615}' takes 30 bytes. */
#define INDEX_SUFFIX_MAX 32
/* What a live "elapsed" or "eta_seconds" holds in the stored body. */
#define LIVE_PLACEHOLDER "0"
/* Nesting the writer tracks; the bodies use 5 levels. */
#define JSON_MAX_DEPTH 16
/* The largest body: the node list at 10,000 nodes is a few MB. */
#define VIEW_BODY_MAX (1024u * 1024 * 1024)

struct aggr_views {
  _Atomic(struct aggr_view *) current;
  atomic_uint gate; /* readers between loading current and bumping its refs */

  /* Loop thread only. */
  uint64_t index;
  struct aggr_view *retired;
  size_t n_retired;
};

/* --- a compact JSON writer ------------------------------------------------ */

/* Appends JSON to a dynbuf. Separators are automatic: the writer knows,
 * per open container, whether it already holds an item. A failed
 * allocation fails the buffer (dynbuf.h), after which every call does
 * nothing; check it once at the end. */
struct json_writer {
  struct mst_dynbuf b;
  bool too_deep; /* a programming error, reported as a failed render */
  unsigned depth;
  bool has_item[JSON_MAX_DEPTH];
  /* The last day formatted by jw_time, "YYYY-MM-DDT": the calendar is the
   * costly part, and nearly every time in a view falls on one of a few
   * days; the time of day is plain arithmetic. */
  uint64_t time_day;
  char time_prefix[MST_RFC3339_MAX];
  size_t time_prefix_len;
};

#define JSON_WRITER_INIT                                                                           \
  { .b = MST_DYNBUF_INIT(VIEW_BODY_MAX) }

static void jw_raw(struct json_writer *w, const char *s, size_t n) {
  mst_dynbuf_add(&w->b, s, n);
}

static void jw_char(struct json_writer *w, char c) {
  mst_dynbuf_addc(&w->b, c);
}

/* A comma unless this is the first item of the open container. */
static void jw_separate(struct json_writer *w) {
  if (w->depth == 0)
    return;
  if (w->has_item[w->depth - 1])
    jw_char(w, ',');
  w->has_item[w->depth - 1] = true;
}

static void jw_open(struct json_writer *w, char c) {
  jw_char(w, c);
  if (w->depth >= JSON_MAX_DEPTH) {
    w->too_deep = true;
    return;
  }
  w->has_item[w->depth++] = false;
}

static void jw_close(struct json_writer *w, char c) {
  jw_char(w, c);
  if (w->depth > 0)
    w->depth--;
}

/* A JSON string: quotes, backslashes and control characters escaped, each
 * byte of invalid UTF-8 replaced by U+FFFD. NULL is written as null. */
static void jw_string(struct json_writer *w, const char *s) {
  static const char hex[] = "0123456789abcdef";
  if (!s) {
    jw_raw(w, "null", 4);
    return;
  }
  const unsigned char *p = (const unsigned char *)s;
  size_t len = strlen(s);
  /* Worst case: every byte becomes \u00XX (6) or U+FFFD (3). */
  char *start = mst_dynbuf_reserve(&w->b, len > (SIZE_MAX - 2) / 6 ? SIZE_MAX : len * 6 + 2);
  if (!start)
    return;
  char *o = start;
  *o++ = '"';
  for (size_t i = 0; i < len;) {
    unsigned char c = p[i];
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
      *o++ = (char)c;
      i++;
    } else if (c == '"' || c == '\\') {
      *o++ = '\\';
      *o++ = (char)c;
      i++;
    } else if (c < 0x20) {
      const char *esc = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : NULL;
      if (esc) {
        memcpy(o, esc, 2);
        o += 2;
      } else {
        memcpy(o, "\\u00", 4);
        o[4] = hex[c >> 4];
        o[5] = hex[c & 0xF];
        o += 6;
      }
      i++;
    } else {
      size_t k = mst_utf8_char_len(s + i, len - i);
      if (k == 0) {
        memcpy(o, "\xEF\xBF\xBD", 3);
        o += 3;
        i++;
      } else {
        memcpy(o, p + i, k);
        o += k;
        i += k;
      }
    }
  }
  *o++ = '"';
  mst_dynbuf_commit(&w->b, (size_t)(o - start));
}

static void jw_uint(struct json_writer *w, uint64_t v) {
  char digits[24], *p = digits + sizeof(digits);
  do
    *--p = (char)('0' + v % 10);
  while ((v /= 10) > 0);
  jw_raw(w, p, (size_t)(digits + sizeof(digits) - p));
}

static void jw_bool(struct json_writer *w, bool v) {
  if (v)
    jw_raw(w, "true", 4);
  else
    jw_raw(w, "false", 5);
}

static void jw_null(struct json_writer *w) {
  jw_raw(w, "null", 4);
}

/* RFC 3339 with milliseconds, or null for 0 ("never"). */
static void jw_time(struct json_writer *w, uint64_t usec) {
  if (usec == 0) {
    jw_null(w);
    return;
  }
  uint64_t secs = usec / USEC_PER_SEC, day = secs / 86400;
  unsigned sod = (unsigned)(secs % 86400);
  unsigned msec = (unsigned)(usec % USEC_PER_SEC / USEC_PER_MSEC);
  if (day != w->time_day || !w->time_prefix_len) {
    char buf[MST_RFC3339_MAX];
    mst_time_format_rfc3339(day * 86400 * USEC_PER_SEC, buf, sizeof(buf));
    /* Keep "YYYY-MM-DDT"; the time of day is ours to add. */
    char *t = strchr(buf, 'T');
    if (!t || (size_t)(t + 1 - buf) >= sizeof(w->time_prefix)) {
      jw_null(w); /* a time the formatter cannot print */
      return;
    }
    w->time_prefix_len = (size_t)(t + 1 - buf);
    memcpy(w->time_prefix, buf, w->time_prefix_len);
    w->time_day = day;
  }
  unsigned hh = sod / 3600, mm = sod / 60 % 60, ss = sod % 60;
  char tail[] = "00:00:00.000Z\"";
  tail[0] = (char)('0' + hh / 10);
  tail[1] = (char)('0' + hh % 10);
  tail[3] = (char)('0' + mm / 10);
  tail[4] = (char)('0' + mm % 10);
  tail[6] = (char)('0' + ss / 10);
  tail[7] = (char)('0' + ss % 10);
  tail[9] = (char)('0' + msec / 100);
  tail[10] = (char)('0' + msec / 10 % 10);
  tail[11] = (char)('0' + msec % 10);
  jw_char(w, '"');
  jw_raw(w, w->time_prefix, w->time_prefix_len);
  jw_raw(w, tail, sizeof(tail) - 1);
}

/* Starts a member of the open object: `"key":`. Keys are ours, plain ASCII. */
static void jw_key(struct json_writer *w, const char *key) {
  jw_separate(w);
  jw_char(w, '"');
  jw_raw(w, key, strlen(key));
  jw_raw(w, "\":", 2);
}

/* Starts an element of the open array. */
static void jw_element(struct json_writer *w) {
  jw_separate(w);
}

static void jw_done(struct json_writer *w) {
  mst_dynbuf_reset(&w->b);
  *w = (struct json_writer)JSON_WRITER_INIT;
}

/* Takes what w wrote (NUL-terminated) and leaves w empty for the next
 * document. Returns 0, -ENOMEM, or -EINVAL when the document was not
 * closed. */
static int jw_take(struct json_writer *w, char **ret, size_t *ret_len) {
  int r = w->b.error                     ? -ENOMEM
          : w->too_deep || w->depth != 0 ? -EINVAL
                                         : mst_dynbuf_take(&w->b, ret, ret_len);
  jw_done(w);
  return r < 0 ? r : 0;
}

/* --- rendering ------------------------------------------------------------ */

/* [{"node":...,"component":...},...]: what a reason names. */
static void refs_write(struct json_writer *w, const struct aggr_reason_ref *refs, size_t n) {
  jw_open(w, '[');
  for (size_t i = 0; i < n; i++) {
    jw_element(w);
    jw_open(w, '{');
    jw_key(w, "node");
    jw_string(w, refs[i].node);
    jw_key(w, "component");
    jw_string(w, refs[i].component);
    jw_close(w, '}');
  }
  jw_close(w, ']');
}

/* A list of reasons, or with m of root causes. Root causes carry the
 * output (a component's, or the node's reason) and the time the failing
 * state began, looked up in the model being rendered, and name the
 * summary their message. */
static void reason_list_write(struct json_writer *w, const struct aggr_model *m,
                              const struct aggr_reasons *r) {
  jw_open(w, '[');
  for (size_t i = 0; i < r->n; i++) {
    const struct aggr_reason *x = &r->v[i];
    jw_element(w);
    jw_open(w, '{');
    jw_key(w, "node");
    jw_string(w, x->node);
    jw_key(w, "component");
    jw_string(w, x->component);
    jw_key(w, "state");
    jw_string(w, x->state);
    if (m) {
      const struct aggr_node *n = x->node ? aggr_model_find(m, x->node) : NULL;
      const struct aggr_component *c =
          n && x->component ? aggr_node_find_component(n, x->component) : NULL;
      jw_key(w, "output");
      jw_string(w, x->message);
      jw_key(w, "since");
      jw_time(w, c ? c->since_usec : n && !x->component ? n->verdict_since_usec : 0);
    }
    jw_key(w, "message");
    jw_string(w, m ? x->summary : x->message);
    jw_key(w, m ? "blocked" : "blocked_by");
    refs_write(w, x->refs, x->n_refs);
    jw_key(w, m ? "blocked_total" : "blocked_by_total");
    jw_uint(w, x->n_refs_total);
    jw_close(w, '}');
  }
  jw_close(w, ']');
}

static void reasons_write(struct json_writer *w, const struct aggr_reasons *r) {
  reason_list_write(w, NULL, r);
}

static void root_causes_write(struct json_writer *w, const struct aggr_model *m,
                              const struct aggr_reasons *r) {
  reason_list_write(w, m, r);
}

/* Startup progress, as the stage engine (stage.h) left it in the model. */
static const struct aggr_startup *startup_of(const struct aggr_node *n) {
  return n->reported && n->startup ? n->startup : NULL;
}

static bool startup_all_done(const struct aggr_startup *s) {
  return s && s->n_reached == s->profile->n_stages;
}

/* percent, stage, state: what the node list shows. stage is the stage
 * waited on (the last one once all are done), state its state. */
static void startup_write_summary(struct json_writer *w, const struct aggr_startup *s) {
  size_t total = s ? s->profile->n_stages : 0;
  jw_key(w, "percent");
  jw_uint(w, !s ? 0 : total ? 100 * s->n_reached / total : 100);
  jw_key(w, "stage");
  if (!s || total == 0)
    jw_null(w);
  else
    jw_string(w, s->profile->stages[MST_MIN(s->waiting, total - 1)].name);
  jw_key(w, "state");
  jw_string(w, !s                    ? "unknown"
               : startup_all_done(s) ? "done"
               : s->waiting < total  ? aggr_stage_state_to_string(s->stages[s->waiting].state)
                                     : "pending");
}

static void names_write(struct json_writer *w, char *const *names) {
  jw_open(w, '[');
  for (size_t i = 0; names && names[i]; i++) {
    jw_element(w);
    jw_string(w, names[i]);
  }
  jw_close(w, ']');
}

/* Seconds with milliseconds, as a JSON number: 12.345. */
static void jw_seconds(struct json_writer *w, uint64_t usec) {
  char buf[32];
  int k = snprintf(buf, sizeof(buf), "%" PRIu64 ".%03u", (uint64_t)(usec / USEC_PER_SEC),
                   (unsigned)(usec % USEC_PER_SEC / USEC_PER_MSEC));
  jw_raw(w, buf, (size_t)k);
}

/* The offsets of the live fields of a detail body (SIZE_MAX: none). */
struct live_fields {
  size_t elapsed_at;
  size_t eta_at;
};

static void stage_write(struct json_writer *w, const struct aggr_startup *s, size_t i) {
  const struct mst_stage *st = &s->profile->stages[i];
  const struct aggr_stage_progress *sp = &s->stages[i];
  jw_open(w, '{');
  jw_key(w, "name");
  jw_string(w, st->name);
  jw_key(w, "state");
  jw_string(w, aggr_stage_state_to_string(sp->state));
  jw_key(w, "components");
  names_write(w, st->components);
  jw_key(w, "milestones");
  names_write(w, st->milestones);
  jw_key(w, "after");
  names_write(w, st->after);
  jw_key(w, "requires");
  names_write(w, st->requires);
  jw_key(w, "started");
  jw_time(w, sp->started_usec);
  jw_key(w, "reached");
  jw_time(w, sp->reached_usec);
  jw_key(w, "duration");
  if (sp->reached_usec > 0 && sp->reached_usec >= sp->started_usec)
    jw_seconds(w, sp->reached_usec - sp->started_usec);
  else
    jw_null(w);
  /* What earlier boots teach, for the stages still to come. */
  bool learned = sp->reached_usec == 0 && aggr_stage_samples_known(sp->learned);
  jw_key(w, "typical_seconds");
  if (learned)
    jw_seconds(w, sp->learned->p50_usec);
  else
    jw_null(w);
  jw_key(w, "late_after_seconds");
  if (learned)
    jw_seconds(w, sp->learned->p95_usec + s->graph->stages[i].tolerance_usec);
  else
    jw_null(w);
  jw_close(w, '}');
}

/* What began the node's current startup (its agent's Hello): boot,
 * install, restart; null before a Hello and from older agents. */
static void startup_write_cause(struct json_writer *w, const struct aggr_node *n) {
  jw_key(w, "cause");
  jw_string(w, n->reported ? n->startup_cause : NULL);
}

/* Writes the detail's startup object; records the offsets of its live
 * fields in *live. */
static void startup_write_detail(struct json_writer *w, const struct aggr_node *n,
                                 const struct aggr_startup *s, struct live_fields *live) {
  jw_open(w, '{');
  jw_key(w, "boot_id");
  jw_string(w, n->boot_id ? n->boot_id : n->startup ? n->startup->boot_id : NULL);
  jw_key(w, "boot_time");
  jw_time(w, n->reported ? n->boot_time_usec : 0);
  startup_write_cause(w, n);
  startup_write_summary(w, s);

  jw_key(w, "elapsed");
  if (!n->reported || n->boot_time_usec == 0)
    jw_null(w);
  else if (startup_all_done(s))
    jw_uint(w, (s->done_usec > n->boot_time_usec ? s->done_usec - n->boot_time_usec : 0) /
                   USEC_PER_SEC);
  else {
    live->elapsed_at = w->b.len; /* filled in per request */
    jw_raw(w, LIVE_PLACEHOLDER, strlen(LIVE_PLACEHOLDER));
  }
  jw_key(w, "eta_seconds");
  if (!s || !s->eta_known)
    jw_null(w);
  else if (startup_all_done(s))
    jw_uint(w, 0);
  else if (s->eta_deadline_usec == 0)
    jw_uint(w, (s->eta_floor_usec + USEC_PER_SEC - 1) / USEC_PER_SEC);
  else {
    live->eta_at = w->b.len; /* counts down per request */
    jw_raw(w, LIVE_PLACEHOLDER, strlen(LIVE_PLACEHOLDER));
  }
  /* The stage waited on as operators read it, naming what it waits for on
   * other nodes (evaluate.c); the stage's own name is "stage". */
  jw_key(w, "waiting_on");
  jw_string(w, s ? n->waiting_on : NULL);
  jw_key(w, "waiting_for");
  refs_write(w, n->waiting_for, s ? n->n_waiting_for : 0);
  jw_key(w, "waiting_for_total");
  jw_uint(w, s ? n->n_waiting_for_total : 0);
  jw_key(w, "late");
  jw_bool(w, s && s->late);

  jw_key(w, "stages");
  jw_open(w, '[');
  /* A node that never reported shows the stages to come, all pending. */
  const struct aggr_startup *shown = s ? s : n->startup;
  for (size_t i = 0; shown && i < shown->profile->n_stages; i++) {
    jw_element(w);
    stage_write(w, shown, i);
  }
  jw_close(w, ']');
  jw_close(w, '}');
}

/* The members a node's summary and its detail share, in that order. */
static void node_write_common(struct json_writer *w, const struct aggr_node *n) {
  jw_key(w, "id");
  jw_string(w, n->id);
  jw_key(w, "role");
  jw_string(w, n->role);
  jw_key(w, "hostname");
  jw_string(w, n->hostname);
  jw_key(w, "verdict");
  jw_string(w, mst_verdict_name(n->verdict));
  jw_key(w, "since");
  jw_time(w, n->verdict_since_usec);
  jw_key(w, "last_seen");
  jw_time(w, n->reported ? n->last_seen_usec : 0);
  jw_key(w, "connected");
  jw_bool(w, n->conn != NULL);
  jw_key(w, "boot_id");
  jw_string(w, n->boot_id);
  jw_key(w, "profile_drift");
  jw_bool(w, n->profile_drift);
}

/* An operator's entry (model/operator.h) as the API shows it, or null. */
static void op_entry_write(struct json_writer *w, const struct aggr_op_entry *e) {
  if (!e) {
    jw_null(w);
    return;
  }
  jw_open(w, '{');
  jw_key(w, "reason");
  jw_string(w, e->reason);
  jw_key(w, "by");
  jw_string(w, e->by);
  jw_key(w, "since");
  jw_time(w, e->since_usec);
  if (e->kind == AGGR_OP_MAINTENANCE) {
    jw_key(w, "until");
    jw_time(w, e->until_usec);
  }
  jw_close(w, '}');
}

/* The node's maintenance (issue 19), after the members it shares. One that
 * ended by the clock at the last evaluation is no longer shown, as the
 * verdicts no longer count it, even before the leader has stored its end. */
static void node_write_operator(struct json_writer *w, const struct aggr_model *m,
                                const struct aggr_node *n) {
  jw_key(w, "maintenance");
  op_entry_write(w, aggr_node_maintenance(m, n, NULL, m->evaluated_usec));
}

static void node_write_summary(struct json_writer *w, const struct aggr_model *m,
                               const struct aggr_node *n, const struct aggr_startup *s) {
  jw_open(w, '{');
  node_write_common(w, n);
  node_write_operator(w, m, n);
  jw_key(w, "startup");
  jw_open(w, '{');
  startup_write_summary(w, s);
  startup_write_cause(w, n);
  jw_close(w, '}');
  jw_close(w, '}');
}

/* A component with, after its own members, its operator state (issue 19):
 * "maintenance" and "acknowledged". */
static void component_write(struct json_writer *w, const struct aggr_model *m,
                            const struct aggr_node *n, const struct aggr_component *c) {
  /* HAProxy's counter: health runs from 0 to rise + fall - 1. */
  unsigned span = c->rise + c->fall > 0 ? c->rise + c->fall - 1 : 0;
  jw_open(w, '{');
  jw_key(w, "name");
  jw_string(w, c->name);
  jw_key(w, "check");
  jw_string(w, mst_check_kind_to_string(c->check));
  jw_key(w, "state");
  jw_string(w, mst_state_to_string(c->state));
  jw_key(w, "since");
  jw_time(w, c->since_usec);
  jw_key(w, "output");
  jw_string(w, c->output);
  jw_key(w, "health");
  jw_char(w, '"');
  jw_uint(w, c->health);
  jw_char(w, '/');
  jw_uint(w, span);
  jw_char(w, '"');
  jw_key(w, "rise");
  jw_uint(w, c->rise);
  jw_key(w, "fall");
  jw_uint(w, c->fall);
  jw_key(w, "description");
  jw_string(w, c->description);
  jw_key(w, "display_name");
  jw_string(w, c->display_name);
  jw_key(w, "maintenance");
  op_entry_write(w, aggr_node_maintenance(m, n, c->name, m->evaluated_usec));
  jw_key(w, "acknowledged");
  op_entry_write(w, aggr_operator_find(&m->operator, AGGR_OP_ACK, n->id, c->name));
  jw_close(w, '}');
}

static void node_write_detail(struct json_writer *w, const struct aggr_model *m,
                              const struct aggr_node *n, const struct aggr_startup *s,
                              struct live_fields *live) {
  jw_open(w, '{');
  node_write_common(w, n);
  node_write_operator(w, m, n);
  jw_key(w, "components");
  jw_open(w, '[');
  for (size_t i = 0; i < n->n_components; i++) {
    jw_element(w);
    component_write(w, m, n, &n->components[i]);
  }
  jw_close(w, ']');
  jw_key(w, "startup");
  startup_write_detail(w, n, s, live);
  jw_key(w, "reasons");
  reasons_write(w, &n->reasons);
  jw_key(w, "root_causes");
  root_causes_write(w, m, &n->root_causes);
  /* Why the agent cannot record or send its state (issue 17), or null. */
  jw_key(w, "agent_fault");
  if (n->agent_fault) {
    jw_open(w, '{');
    jw_key(w, "message");
    jw_string(w, n->agent_fault);
    jw_key(w, "since");
    jw_time(w, n->agent_fault_since_usec);
    jw_close(w, '}');
  } else
    jw_null(w);
  /* What DC/OS shows of the node beyond its units (docs/dcos.md); null
   * members: not known. */
  jw_key(w, "dcos");
  jw_open(w, '{');
  jw_key(w, "version");
  jw_string(w, n->dcos_version);
  jw_key(w, "mesos_id");
  jw_string(w, n->mesos_id);
  jw_close(w, '}');
  jw_close(w, '}');
}

struct role_count {
  const char *role;
  unsigned n[_MST_VERDICT_MAX];
};

static int role_count_cmp(const void *a, const void *b) {
  return strcmp(((const struct role_count *)a)->role, ((const struct role_count *)b)->role);
}

/* {"<role>":{"<verdict>":N,...},...}: roles sorted, verdicts in their enum
 * order, zero counts left out. Nodes without a role are not counted. */
static int counts_write(struct json_writer *w, const struct aggr_model *m) {
  _cleanup_free_ struct role_count *roles = NULL;
  size_t n_roles = 0;

  if (m->n_nodes > 0 && !(roles = calloc(m->n_nodes, sizeof(*roles))))
    return -ENOMEM;
  for (size_t i = 0; i < m->n_nodes; i++) {
    const struct aggr_node *n = m->nodes[i];
    if (!n->role || (unsigned)n->verdict >= _MST_VERDICT_MAX)
      continue;
    size_t k = 0;
    while (k < n_roles && strcmp(roles[k].role, n->role) != 0)
      k++;
    if (k == n_roles)
      roles[n_roles++].role = n->role;
    roles[k].n[n->verdict]++;
  }
  if (n_roles > 1)
    qsort(roles, n_roles, sizeof(*roles), role_count_cmp);

  jw_open(w, '{');
  for (size_t k = 0; k < n_roles; k++) {
    /* Roles come from agents: written as escaped strings, not as jw_key. */
    jw_separate(w);
    jw_string(w, roles[k].role);
    jw_char(w, ':');
    jw_open(w, '{');
    for (int v = 0; v < _MST_VERDICT_MAX; v++)
      if (roles[k].n[v] > 0) {
        jw_key(w, mst_verdict_name(v));
        jw_uint(w, roles[k].n[v]);
      }
    jw_close(w, '}');
  }
  jw_close(w, '}');
  return 0;
}

static int health_write(struct json_writer *w, const struct aggr_model *m) {
  jw_open(w, '{');
  jw_key(w, "verdict");
  jw_string(w, mst_verdict_name(m->verdict));
  jw_key(w, "since");
  jw_time(w, m->verdict_since_usec);
  jw_key(w, "reasons");
  reasons_write(w, &m->reasons);
  jw_key(w, "reasons_total");
  jw_uint(w, m->reasons.n_total);
  jw_key(w, "root_causes");
  root_causes_write(w, m, &m->root_causes);
  jw_key(w, "root_causes_total");
  jw_uint(w, m->root_causes.n_total);
  jw_key(w, "counts");
  int r = counts_write(w, m);
  if (r < 0)
    return r;
  jw_key(w, "leader");
  jw_open(w, '{');
  jw_key(w, "id");
  jw_string(w, m->have_leader ? m->leader_id : NULL);
  jw_key(w, "epoch");
  jw_uint(w, m->epoch);
  jw_close(w, '}');
  jw_close(w, '}');
  return 0;
}

/* --- bodies --------------------------------------------------------------- */

static void body_unref(struct aggr_body *b) {
  if (!b || --b->refs > 0)
    return;
  free(b->data);
  free(b->id);
  free(b);
}

static struct aggr_body *body_ref(struct aggr_body *b) {
  b->refs++;
  return b;
}

/* What a render produced, before it is settled into a body. data is a whole
 * JSON object "{...}" (or, unindexed, any bytes). */
struct rendered {
  char *data;
  size_t len;
  bool indexed;
  size_t live_at;
  uint64_t live_from_usec;
  size_t eta_at;
  uint64_t eta_deadline_usec, eta_floor_usec;
};

/* Takes the writer's buffer as a render. */
static int rendered_take(struct json_writer *w, bool indexed, struct rendered *ret) {
  *ret = (struct rendered){.indexed = indexed, .live_at = SIZE_MAX, .eta_at = SIZE_MAX};
  return jw_take(w, &ret->data, &ret->len);
}

/* Turns a render into the resource's body: the previous body when the bytes
 * are the same (keeping its index), or a new body at index. Consumes r. */
static int body_settle(struct rendered *r, struct aggr_body *prev, uint64_t index, const char *id,
                       struct aggr_body **ret, bool *changed) {
  _cleanup_free_ char *data = TAKE_PTR(r->data);
  if (r->indexed && (r->len == 0 || data[r->len - 1] != '}'))
    return -EINVAL;
  size_t content_len = r->indexed ? r->len - 1 : r->len;

  if (prev && prev->content_len == content_len && memcmp(prev->data, data, content_len) == 0 &&
      prev->live_at == r->live_at && prev->live_from_usec == r->live_from_usec &&
      prev->eta_at == r->eta_at && prev->eta_deadline_usec == r->eta_deadline_usec &&
      prev->eta_floor_usec == r->eta_floor_usec) {
    *ret = body_ref(prev);
    return 0;
  }

  struct aggr_body *b = calloc(1, sizeof(*b));
  if (!b)
    return -ENOMEM;
  /* Room for the index suffix, or the NUL. */
  char *grown = realloc(data, content_len + INDEX_SUFFIX_MAX);
  if (!grown) {
    free(b);
    return -ENOMEM;
  }
  data = grown;
  if (r->indexed) {
    int k = snprintf(data + content_len, INDEX_SUFFIX_MAX, ",\"index\":%" PRIu64 "}", index);
    b->len = content_len + (size_t)k;
  } else {
    data[r->len] = 0;
    b->len = r->len;
  }
  if (id && !(b->id = strdup(id))) {
    free(b);
    return -ENOMEM;
  }
  b->refs = 1;
  b->index = index;
  b->data = TAKE_PTR(data);
  b->content_len = content_len;
  b->live_at = r->live_at;
  b->live_from_usec = r->live_from_usec;
  b->eta_at = r->eta_at;
  b->eta_deadline_usec = r->eta_deadline_usec;
  b->eta_floor_usec = r->eta_floor_usec;
  *ret = b;
  *changed = true;
  return 0;
}

int aggr_body_live_copy(const struct aggr_body *b, uint64_t now_usec, char **ret, size_t *ret_len) {
  if (b->live_at == SIZE_MAX && b->eta_at == SIZE_MAX)
    return 0;
  /* The placeholders in the order they appear: elapsed, then eta. */
  struct {
    size_t at;
    char text[24];
  } fields[2];
  size_t n = 0, len = b->len;
  if (b->live_at != SIZE_MAX) {
    uint64_t elapsed =
        now_usec > b->live_from_usec ? (now_usec - b->live_from_usec) / USEC_PER_SEC : 0;
    fields[n].at = b->live_at;
    snprintf(fields[n++].text, sizeof(fields[0].text), "%" PRIu64, elapsed);
  }
  if (b->eta_at != SIZE_MAX) {
    uint64_t left = b->eta_floor_usec;
    if (b->eta_deadline_usec > now_usec)
      left = MST_MAX(left, b->eta_deadline_usec - now_usec);
    fields[n].at = b->eta_at;
    snprintf(fields[n++].text, sizeof(fields[0].text), "%" PRIu64,
             (uint64_t)((left + USEC_PER_SEC - 1) / USEC_PER_SEC));
  }
  if (n == 2 && fields[1].at < fields[0].at) {
    __typeof__(fields[0]) t = fields[0];
    fields[0] = fields[1];
    fields[1] = t;
  }
  for (size_t i = 0; i < n; i++)
    len += strlen(fields[i].text) - strlen(LIVE_PLACEHOLDER);
  char *out = malloc(len + 1), *p = out;
  if (!out)
    return -ENOMEM;
  size_t from = 0;
  for (size_t i = 0; i < n; i++) {
    p = mempcpy(p, b->data + from, fields[i].at - from);
    p = mempcpy(p, fields[i].text, strlen(fields[i].text));
    from = fields[i].at + strlen(LIVE_PLACEHOLDER);
  }
  p = mempcpy(p, b->data + from, b->len - from);
  *p = 0;
  *ret = out;
  *ret_len = len;
  return 1;
}

/* {"nodes":[summary,summary,...]}: the summaries are pasted, not re-rendered. */
static int render_node_list(const struct aggr_view *v, struct rendered *ret) {
  static const char head[] = "{\"nodes\":[", tail[] = "]}";
  size_t len = strlen(head) + strlen(tail);
  for (size_t i = 0; i < v->n_nodes; i++)
    len += v->node_v[i].summary->len + 1;
  char *data = malloc(len + 1), *p = data;
  if (!data)
    return -ENOMEM;
  p = mempcpy(p, head, strlen(head));
  for (size_t i = 0; i < v->n_nodes; i++) {
    if (i > 0)
      *p++ = ',';
    p = mempcpy(p, v->node_v[i].summary->data, v->node_v[i].summary->len);
  }
  p = mempcpy(p, tail, strlen(tail));
  *p = 0;
  *ret = (struct rendered){.data = data,
                           .len = (size_t)(p - data),
                           .indexed = true,
                           .live_at = SIZE_MAX,
                           .eta_at = SIZE_MAX};
  return 0;
}

static int render_health(const struct aggr_model *m, struct rendered *ret) {
  struct json_writer w = JSON_WRITER_INIT;
  int r = health_write(&w, m);
  if (r < 0) {
    jw_done(&w);
    return r;
  }
  return rendered_take(&w, true, ret);
}

/* {"id":...,"http":...,"epoch":N}, or null when no leader is known. */
static void leader_write(struct json_writer *w, const struct aggr_view *v) {
  if (!v->have_leader) {
    jw_null(w);
    return;
  }
  jw_open(w, '{');
  jw_key(w, "id");
  jw_string(w, v->leader_id);
  jw_key(w, "http");
  jw_string(w, v->leader_http);
  jw_key(w, "epoch");
  jw_uint(w, v->epoch);
  jw_close(w, '}');
}

/* Copies the model's election and storage state into v and renders what
 * depends on them alone:
 * the /readyz body and a follower's 307 body. */
static int view_set_election(struct aggr_view *v, const struct aggr_model *m, bool ready) {
  struct json_writer w = JSON_WRITER_INIT;

  v->is_leader = m->is_leader;
  v->have_leader = m->have_leader;
  v->epoch = m->epoch;
  v->storage_lost = m->storage_lost;
  if ((m->leader_id && !(v->leader_id = strdup(m->leader_id))) ||
      (m->leader_http && !(v->leader_http = strdup(m->leader_http))) ||
      (m->storage_failing && !(v->storage_failing = strdup(m->storage_failing))))
    return -ENOMEM;

  jw_open(&w, '{');
  jw_key(&w, "ready");
  jw_bool(&w, ready && !v->storage_failing);
  jw_key(&w, "role");
  jw_string(&w, v->is_leader ? "leader" : "follower");
  jw_key(&w, "leader");
  leader_write(&w, v);
  if (v->storage_failing) {
    jw_key(&w, "storage");
    jw_string(&w, v->storage_failing);
  }
  jw_close(&w, '}');
  int r = jw_take(&w, &v->readyz, &v->readyz_len);
  if (r < 0)
    return r;

  if (v->is_leader || !v->leader_http)
    return 0;
  /* The address only: Location has the URL, with the scheme this server uses. */
  static const char prefix[] = "this aggregator is a follower; the leader is at ";
  size_t len = strlen(prefix) + strlen(v->leader_http) + 1;
  _cleanup_free_ char *message = malloc(len);
  if (!message)
    return -ENOMEM;
  snprintf(message, len, "%s%s", prefix, v->leader_http);
  jw_open(&w, '{');
  jw_key(&w, "error");
  jw_open(&w, '{');
  jw_key(&w, "code");
  jw_string(&w, "not_leader");
  jw_key(&w, "message");
  jw_string(&w, message);
  jw_close(&w, '}');
  jw_close(&w, '}');
  return jw_take(&w, &v->not_leader, &v->not_leader_len);
}

static bool same_election(const struct aggr_view *a, const struct aggr_view *b) {
  return a->is_leader == b->is_leader && a->have_leader == b->have_leader && a->epoch == b->epoch &&
         mst_str_eq(a->leader_id, b->leader_id) && mst_str_eq(a->leader_http, b->leader_http) &&
         mst_str_eq(a->storage_failing, b->storage_failing) && a->storage_lost == b->storage_lost;
}

/* --- views ---------------------------------------------------------------- */

static void view_free(struct aggr_view *v) {
  if (!v)
    return;
  free(v->leader_id);
  free(v->leader_http);
  free(v->readyz);
  free(v->operator_metrics);
  free(v->storage_failing);
  free(v->not_leader);
  for (size_t i = 0; i < v->n_nodes; i++) {
    body_unref(v->node_v[i].detail);
    body_unref(v->node_v[i].summary);
    body_unref(v->node_v[i].metrics);
    aggr_dcos_node_unref(v->node_v[i].dcos);
  }
  free(v->node_v);
  aggr_dcos_units_free(atomic_load(&v->dcos_units));
  body_unref(v->health);
  body_unref(v->nodes);
  free(v);
}

struct aggr_views *aggr_views_new(void) {
  struct aggr_views *vs = calloc(1, sizeof(*vs));
  if (!vs)
    return NULL;
  atomic_init(&vs->current, NULL);
  atomic_init(&vs->gate, 0);
  vs->index = mst_now_realtime_usec();
  return vs;
}

void aggr_views_free(struct aggr_views *vs) {
  if (!vs)
    return;
  struct aggr_view *v = atomic_exchange(&vs->current, NULL);
  if (v && atomic_load(&v->refs) != 0)
    log_warning("Freeing the current view with %u references held, ignoring",
                atomic_load(&v->refs));
  view_free(v);
  while (vs->retired) {
    v = vs->retired;
    vs->retired = v->next_retired;
    view_free(v);
  }
  free(vs);
}

static int node_render(const struct aggr_model *m, const struct aggr_node *n,
                       const struct aggr_view_node *prev, uint64_t index,
                       struct aggr_view_node *ret, bool *changed) {
  struct json_writer w = JSON_WRITER_INIT;
  const struct aggr_startup *s = startup_of(n);
  struct live_fields live = {.elapsed_at = SIZE_MAX, .eta_at = SIZE_MAX};
  struct rendered r;
  int k;

  node_write_detail(&w, m, n, s, &live);
  if ((k = rendered_take(&w, true, &r)) < 0)
    return k;
  r.live_at = live.elapsed_at;
  r.live_from_usec = live.elapsed_at != SIZE_MAX ? n->boot_time_usec : 0;
  r.eta_at = live.eta_at;
  r.eta_deadline_usec = live.eta_at != SIZE_MAX ? s->eta_deadline_usec : 0;
  r.eta_floor_usec = live.eta_at != SIZE_MAX ? s->eta_floor_usec : 0;
  if ((k = body_settle(&r, prev ? prev->detail : NULL, index, n->id, &ret->detail, changed)) < 0)
    return k;
  ret->id = ret->detail->id;
  ret->last_seen_usec = n->last_seen_usec;

  node_write_summary(&w, m, n, s);
  if ((k = rendered_take(&w, false, &r)) < 0)
    return k;
  if ((k = body_settle(&r, prev ? prev->summary : NULL, index, NULL, &ret->summary, changed)) < 0)
    return k;

  /* Not part of the API's bodies: these do not move the index. */
  bool unindexed = false;
  r = (struct rendered){.live_at = SIZE_MAX, .eta_at = SIZE_MAX};
  if ((k = aggr_metrics_node_lines(n, &r.data, &r.len, ret->metrics_ends)) < 0 ||
      (k = body_settle(&r, prev ? prev->metrics : NULL, index, NULL, &ret->metrics, &unindexed)) <
          0)
    return k;
  ret->dcos = aggr_dcos_node_new(m, n);
  return ret->dcos ? 0 : -ENOMEM;
}

/* Whether v lists the very summaries old does (nodes and bodies alike), so
 * that its node list is old's. */
static bool same_summaries(const struct aggr_view *old, const struct aggr_view *v) {
  if (!old || !old->nodes || old->n_nodes != v->n_nodes)
    return false;
  for (size_t i = 0; i < v->n_nodes; i++)
    if (old->node_v[i].summary != v->node_v[i].summary)
      return false;
  return true;
}

int aggr_view_publish(struct aggr_views *vs, struct aggr_model *m, bool ready) {
  struct aggr_view *old = atomic_load(&vs->current);
  uint64_t next = vs->index + 1;
  bool changed = false;
  struct rendered r;
  int k;

  struct aggr_view *v = calloc(1, sizeof(*v));
  if (!v)
    return -ENOMEM;
  atomic_init(&v->refs, 0);
  atomic_init(&v->dcos_units, NULL);
  v->verdict = m->verdict;
  v->published_usec = mst_now_realtime_usec();
  if (m->n_nodes > 0 && !(v->node_v = calloc(m->n_nodes, sizeof(*v->node_v)))) {
    free(v);
    return -ENOMEM;
  }

  /* Both node arrays are sorted by id: walk them side by side. */
  size_t j = 0;
  for (size_t i = 0; i < m->n_nodes; i++, v->n_nodes++) {
    const struct aggr_node *n = m->nodes[i];
    const struct aggr_view_node *prev = NULL;
    while (old && j < old->n_nodes && strcmp(old->node_v[j].id, n->id) < 0)
      j++;
    if (old && j < old->n_nodes && strcmp(old->node_v[j].id, n->id) == 0)
      prev = &old->node_v[j];

    struct aggr_view_node *e = &v->node_v[i];
    if (prev && !n->dirty &&
        n->last_seen_usec <= prev->last_seen_usec + AGGR_VIEW_LAST_SEEN_REFRESH_USEC) {
      *e = (struct aggr_view_node){.id = prev->id,
                                   .detail = body_ref(prev->detail),
                                   .summary = body_ref(prev->summary),
                                   .metrics = body_ref(prev->metrics),
                                   .dcos = aggr_dcos_node_ref(prev->dcos),
                                   .last_seen_usec = prev->last_seen_usec};
      memcpy(e->metrics_ends, prev->metrics_ends, sizeof(e->metrics_ends));
      continue;
    }
    if ((k = node_render(m, n, prev, next, e, &changed)) < 0) {
      v->n_nodes++; /* e may hold a detail body already */
      goto fail;
    }
  }
  if (same_summaries(old, v))
    v->nodes = body_ref(old->nodes); /* not rendered again: the same bytes */
  else if ((k = render_node_list(v, &r)) < 0 ||
           (k = body_settle(&r, old ? old->nodes : NULL, next, NULL, &v->nodes, &changed)) < 0)
    goto fail;
  if ((k = render_health(m, &r)) < 0 ||
      (k = body_settle(&r, old ? old->health : NULL, next, NULL, &v->health, &changed)) < 0)
    goto fail;
  if ((k = view_set_election(v, m, ready)) < 0)
    goto fail;
  if ((k = aggr_metrics_operator_lines(m, &v->operator_metrics, &v->operator_metrics_len)) < 0)
    goto fail;

  for (size_t i = 0; i < m->n_nodes; i++) {
    m->nodes[i]->index = v->node_v[i].detail->index;
    m->nodes[i]->dirty = false;
  }
  if (!changed && old && old->ready == ready && same_election(old, v)) {
    view_free(v);
    aggr_views_reap(vs);
    return 0;
  }
  if (changed)
    vs->index = next;
  v->index = vs->index;
  v->ready = ready;

  old = atomic_exchange(&vs->current, v);
  if (old) {
    old->next_retired = vs->retired;
    vs->retired = old;
    vs->n_retired++;
  }
  aggr_views_reap(vs);
  return 1;

fail:
  if (k == -EINVAL)
    log_error("Rendering a view produced malformed JSON, ignoring");
  view_free(v);
  return k;
}

void aggr_views_reap(struct aggr_views *vs) {
  if (!vs->retired)
    return;
  /* Every view in the list was retired before this load (same thread): if no
   * reader is inside the gate now, none can still be about to take them. */
  if (atomic_load(&vs->gate) == 0)
    for (struct aggr_view *v = vs->retired; v; v = v->next_retired)
      v->quiesced = true;
  struct aggr_view **p = &vs->retired;
  while (*p) {
    struct aggr_view *v = *p;
    if (v->quiesced && atomic_load(&v->refs) == 0) {
      *p = v->next_retired;
      view_free(v);
      vs->n_retired--;
    } else
      p = &v->next_retired;
  }
}

size_t aggr_views_n_retired(const struct aggr_views *vs) {
  return vs->n_retired;
}

struct aggr_view *aggr_view_acquire(struct aggr_views *vs) {
  atomic_fetch_add(&vs->gate, 1);
  struct aggr_view *v = atomic_load(&vs->current);
  if (v)
    atomic_fetch_add(&v->refs, 1);
  atomic_fetch_sub(&vs->gate, 1);
  return v;
}

void aggr_view_release(struct aggr_view *v) {
  if (v)
    atomic_fetch_sub(&v->refs, 1);
}

const struct aggr_view_node *aggr_view_find_node(const struct aggr_view *v, const char *id) {
  size_t lo = 0, hi = v->n_nodes;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(v->node_v[mid].id, id);
    if (c == 0)
      return &v->node_v[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

char *aggr_reasons_to_json(const struct aggr_reasons *r) {
  struct json_writer w = JSON_WRITER_INIT;
  char *json;
  size_t len;
  reasons_write(&w, r);
  return jw_take(&w, &json, &len) < 0 ? NULL : json;
}
