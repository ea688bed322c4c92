/* Evaluation (evaluate.h): what the model's nodes come to. Each node's
 * startup progress (the stage engine, stage.c), the node verdicts (the pure
 * rules of mst/verdict.h), the reasons and root causes (the dependency
 * graph, cause.c) in the sentences operators read, and the cluster verdict.
 * What it derives goes back into the container (model.h), where the views
 * read it; a node whose rendering changed is marked dirty.
 *
 * This file drives the stage engine and the cause graph; they and it read
 * the container. Nothing below calls back up here.
 *
 * Threads: the loop thread only. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/cause.h"
#include "model/evaluate.h"
#include "model/model.h"
#include "model/stage.h"
#include "mst/hash.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/str.h"
#include "mst/time.h"
#include "mst/utf8.h"

/* Component output quoted in a reason is cut here: the full output is in the
 * node's component list. */
#define REASON_OUTPUT_MAX 1024
/* ... and in a root cause's sentence, shorter. */
#define REASON_SUMMARY_OUTPUT_MAX 200
/* Profile digests are shown shortened in the drift reason. */
#define REASON_DIGEST_CHARS 12
/* Lists in sentences ("blocked: ...") name at most this many items. */
#define REASON_LIST_MAX 12

static char *strdup_null(const char *s, bool *failed) {
  if (!s)
    return NULL;
  char *copy = strdup(s);
  if (!copy)
    *failed = true;
  return copy;
}

/* --- reasons -------------------------------------------------------------- */

/* Appends item, taking what it owns (also on failure). */
static int reasons_take(struct aggr_reasons *r, struct aggr_reason *item) {
  if (aggr_model_grow_array(&r->v, r->n, sizeof(r->v[0])) < 0) {
    aggr_reason_done(item);
    return -ENOMEM;
  }
  r->v[r->n++] = *item;
  *item = (struct aggr_reason){0};
  return 0;
}

/* Appends a copy of the four strings (any may be NULL). */
static int reasons_push(struct aggr_reasons *r, const char *node, const char *component,
                        const char *state, const char *message) {
  bool failed = false;
  struct aggr_reason item = {
      .node = strdup_null(node, &failed),
      .component = strdup_null(component, &failed),
      .state = strdup_null(state, &failed),
      .message = strdup_null(message, &failed),
  };
  if (failed) {
    aggr_reason_done(&item);
    return -ENOMEM;
  }
  return reasons_take(r, &item);
}

static int reasons_pushf(struct aggr_reasons *r, const char *node, const char *component,
                         const char *state, const char *fmt, ...) _printf_(5, 6);
static int reasons_pushf(struct aggr_reasons *r, const char *node, const char *component,
                         const char *state, const char *fmt, ...) {
  char *message;
  va_list ap;
  va_start(ap, fmt);
  int k = vasprintf(&message, fmt, ap);
  va_end(ap);
  if (k < 0)
    return -ENOMEM;
  int ret = reasons_push(r, node, component, state, message);
  free(message);
  return ret;
}

static int reason_copy(const struct aggr_reason *s, struct aggr_reason *ret) {
  bool failed = false;
  *ret = (struct aggr_reason){
      .node = strdup_null(s->node, &failed),
      .component = strdup_null(s->component, &failed),
      .state = strdup_null(s->state, &failed),
      .message = strdup_null(s->message, &failed),
      .summary = strdup_null(s->summary, &failed),
      .n_refs_total = s->n_refs_total,
  };
  if (!failed && s->n_refs > 0) {
    ret->refs = calloc(s->n_refs, sizeof(ret->refs[0]));
    failed = !ret->refs;
    ret->n_refs = ret->refs ? s->n_refs : 0;
    for (size_t i = 0; i < ret->n_refs; i++) {
      ret->refs[i].node = strdup_null(s->refs[i].node, &failed);
      ret->refs[i].component = strdup_null(s->refs[i].component, &failed);
    }
  }
  if (failed) {
    aggr_reason_done(ret);
    return -ENOMEM;
  }
  return 0;
}

/* The reason of r about (node, component), or NULL. */
static const struct aggr_reason *reasons_find(const struct aggr_reasons *r, const char *node,
                                              const char *component) {
  for (size_t i = 0; i < r->n; i++)
    if (mst_str_eq(r->v[i].node, node) && mst_str_eq(r->v[i].component, component))
      return &r->v[i];
  return NULL;
}

/* A set of the (node, component) pairs reasons name, so that the cluster's
 * lists name each once without comparing every pair (10,000 failing nodes
 * are 10,000 root causes). Open addressing over borrowed strings. */
struct reason_set {
  const struct aggr_reason **slots;
  size_t cap; /* a power of two */
};

static uint64_t reason_hash(const char *node, const char *component) {
  return mst_hash_str(mst_hash_str(MST_HASH_INIT, node), component) ^ (component ? 1 : 0);
}

/* Adds r unless its pair is in the set already. Returns 1 when added, 0
 * when present, -ENOMEM. */
static int reason_set_add(struct reason_set *set, size_t n_max, const struct aggr_reason *r) {
  if (!set->slots) {
    size_t cap = 16;
    while (cap < n_max * 2)
      cap *= 2;
    if (!(set->slots = calloc(cap, sizeof(*set->slots))))
      return -ENOMEM;
    set->cap = cap;
  }
  for (size_t k = reason_hash(r->node, r->component) & (set->cap - 1);;
       k = (k + 1) & (set->cap - 1)) {
    const struct aggr_reason *s = set->slots[k];
    if (!s) {
      set->slots[k] = r;
      return 1;
    }
    if (mst_str_eq(s->node, r->node) && mst_str_eq(s->component, r->component))
      return 0;
  }
}

/* Counts every reason of src into dst's total, and copies it while dst
 * holds fewer than AGGR_CLUSTER_REASONS_MAX; with a set, only the reasons
 * about a (node, component) not in it yet, which are then added (the set
 * holds at most n_max). */
static int reasons_copy_all(struct aggr_reasons *dst, const struct aggr_reasons *src,
                            struct reason_set *unique, size_t n_max) {
  for (size_t i = 0; i < src->n; i++) {
    const struct aggr_reason *s = &src->v[i];
    struct aggr_reason copy;
    int r;
    if (unique && (r = reason_set_add(unique, n_max, s)) <= 0) {
      if (r < 0)
        return r;
      continue;
    }
    dst->n_total++;
    if (dst->n >= AGGR_CLUSTER_REASONS_MAX)
      continue;
    if (reason_copy(s, &copy) < 0 || reasons_take(dst, &copy) < 0)
      return -ENOMEM;
  }
  return 0;
}

static bool reasons_equal(const struct aggr_reasons *a, const struct aggr_reasons *b) {
  if (a->n != b->n || a->n_total != b->n_total)
    return false;
  for (size_t i = 0; i < a->n; i++) {
    const struct aggr_reason *x = &a->v[i], *y = &b->v[i];
    if (!mst_str_eq(x->node, y->node) || !mst_str_eq(x->component, y->component) ||
        !mst_str_eq(x->state, y->state) || !mst_str_eq(x->message, y->message) ||
        !mst_str_eq(x->summary, y->summary) || x->n_refs != y->n_refs ||
        x->n_refs_total != y->n_refs_total)
      return false;
    for (size_t k = 0; k < x->n_refs; k++)
      if (!mst_str_eq(x->refs[k].node, y->refs[k].node) ||
          !mst_str_eq(x->refs[k].component, y->refs[k].component))
        return false;
  }
  return true;
}

static void reasons_replace(struct aggr_reasons *dst, struct aggr_reasons *src) {
  aggr_reasons_clear(dst);
  *dst = *src;
  *src = (struct aggr_reasons){0};
}

/* --- verdicts ------------------------------------------------------------- */

static bool component_failing(enum mst_state s) {
  return s != MST_STATE_HEALTHY && s != MST_STATE_STARTING && s != MST_STATE_WARNING;
}

static const char *state_phrase(enum mst_state s) {
  switch (s) {
  case MST_STATE_STARTING:
    return "is starting";
  case MST_STATE_WARNING:
    return "has a warning";
  case MST_STATE_UNHEALTHY:
    return "is unhealthy";
  case MST_STATE_UNKNOWN:
    return "is in an unknown state";
  case MST_STATE_HEALTHY:
    return "is healthy";
  default:
    return "has not been checked yet";
  }
}

/* The same, after "has been". */
static const char *state_adjective(enum mst_state s) {
  switch (s) {
  case MST_STATE_STARTING:
    return "starting";
  case MST_STATE_UNHEALTHY:
    return "unhealthy";
  case MST_STATE_UNKNOWN:
    return "in an unknown state";
  case MST_STATE_WARNING:
    return "warning";
  case MST_STATE_HEALTHY:
    return "healthy";
  default:
    return "unchecked";
  }
}

/* How many bytes of s to quote: at most max, cut back to a UTF-8 character
 * boundary. */
static int output_quote_len(const char *s, size_t max, bool *ret_cut) {
  size_t len = strlen(s);
  *ret_cut = len > max;
  return (int)mst_utf8_cut(s, len, max);
}

/* "30s" or "1500ms". */
static void format_duration(uint64_t usec, char *buf, size_t size) {
  if (usec % USEC_PER_SEC == 0)
    snprintf(buf, size, "%" PRIu64 "s", (uint64_t)(usec / USEC_PER_SEC));
  else
    snprintf(buf, size, "%" PRIu64 "ms", (uint64_t)(usec / USEC_PER_MSEC));
}

/* How long, for people: "800ms", "45s", "4m12s", "1h2m", "3d4h". */
static void format_duration_human(uint64_t usec, char *buf, size_t size) {
  if (usec < USEC_PER_SEC) {
    snprintf(buf, size, "%" PRIu64 "ms", (uint64_t)((usec + USEC_PER_MSEC / 2) / USEC_PER_MSEC));
    return;
  }
  uint64_t s = (usec + USEC_PER_SEC / 2) / USEC_PER_SEC;
  if (s < 60)
    snprintf(buf, size, "%" PRIu64 "s", s);
  else if (s < 3600)
    snprintf(buf, size, "%" PRIu64 "m%" PRIu64 "s", s / 60, s % 60);
  else if (s < 86400)
    snprintf(buf, size, "%" PRIu64 "h%" PRIu64 "m", s / 3600, s % 3600 / 60);
  else
    snprintf(buf, size, "%" PRIu64 "d%" PRIu64 "h", s / 86400, s % 86400 / 3600);
}

static int node_reason_drift(const struct aggr_model *m, const struct aggr_node *n,
                             const char *verdict, struct aggr_reasons *reasons) {
  const struct mst_profile *p =
      n->role && m->profiles ? mst_profile_set_find(m->profiles, n->role) : NULL;
  const char *agent = n->profile_digest ? n->profile_digest : "(none)";
  if (!p)
    return reasons_pushf(reasons, n->id, NULL, verdict,
                         "%s: profile drift: agent digest %.*s%s, but the aggregator has no "
                         "profile for role %s",
                         n->id, REASON_DIGEST_CHARS, agent,
                         strlen(agent) > REASON_DIGEST_CHARS ? "…" : "",
                         n->role ? n->role : "(none)");
  return reasons_pushf(reasons, n->id, NULL, verdict,
                       "%s: profile drift: agent digest %.*s%s differs from aggregator's %.*s%s",
                       n->id, REASON_DIGEST_CHARS, agent,
                       strlen(agent) > REASON_DIGEST_CHARS ? "…" : "", REASON_DIGEST_CHARS,
                       p->digest, strlen(p->digest) > REASON_DIGEST_CHARS ? "…" : "");
}

/* Two agents report as the node (aggr_node_apply_conflict): what one of
 * them says is not seen at all. */
static int node_reason_conflict(const struct aggr_node *n, const char *verdict,
                                struct aggr_reasons *reasons) {
  return reasons_pushf(reasons, n->id, NULL, verdict,
                       "%s: two agents report as %s (spools %.16s and %.16s from %s); keeping the "
                       "first, refusing the other: give each agent its own node_id",
                       n->id, n->id, n->conflict_kept, n->conflict_refused,
                       *n->conflict_from ? n->conflict_from : "an unknown address");
}

/* The stream is closed but the stale timeout has not passed: when it
 * closed (or that it has not connected since this aggregator began to
 * lead) and when the node turns unreachable unless its agent returns.
 * Times, not durations, so the bytes stay the same while nothing changes. */
static int node_reason_disconnected(const struct aggr_model *m, const struct aggr_node *n,
                                    const char *verdict, struct aggr_reasons *reasons) {
  char closed[MST_RFC3339_MAX], frame[MST_RFC3339_MAX] = "never", deadline[MST_RFC3339_MAX];
  if (n->last_seen_usec > 0)
    mst_time_format_rfc3339(n->last_seen_usec, frame, sizeof(frame));
  mst_time_format_rfc3339(aggr_node_silent_from(m, n) + m->stale_timeout_usec, deadline,
                          sizeof(deadline));
  if (n->disconnected_usec >= m->lead_since_usec && n->disconnected_usec > 0)
    return reasons_pushf(
        reasons, n->id, NULL, verdict,
        "%s: disconnected since %s (last frame %s); unreachable at %s unless it reconnects", n->id,
        mst_time_format_rfc3339(n->disconnected_usec, closed, sizeof(closed)), frame, deadline);
  return reasons_pushf(reasons, n->id, NULL, verdict,
                       "%s: not connected since this aggregator began to lead at %s (last frame "
                       "%s); unreachable at %s unless it reconnects",
                       n->id, mst_time_format_rfc3339(m->lead_since_usec, closed, sizeof(closed)),
                       frame, deadline);
}

/* A milestone counts for progress only, never for the node's health. */
static bool counts_for_health(const struct aggr_node *n, const struct aggr_component *c) {
  return !n->startup || !aggr_stage_milestone_only(n->startup->graph, c->name);
}

/* Whether the node leads as its profile's leader component says: see
 * aggr_node.dcos_leader. */
static bool node_leads(const struct aggr_model *m, const struct aggr_node *n, bool silent) {
  const struct mst_profile *p = n->role ? mst_profile_set_find(m->profiles, n->role) : NULL;
  if (!n->reported || silent || !p || !p->leader_component)
    return false;
  const struct aggr_component *c = aggr_node_find_component(n, p->leader_component);
  return c && c->state == MST_STATE_HEALTHY;
}

/* The node's verdict at now, from the pure rules of mst/verdict.h; counts
 * its components that are down and failing on the way (n_down, n_failing:
 * the cause graph starts from them). */
static enum mst_verdict node_verdict(const struct aggr_model *m, struct aggr_node *n,
                                     uint64_t now) {
  n->n_down = n->n_failing = 0;
  /* Operator state first: a node in maintenance is so whatever it does (a
   * master rebooting, an expected master not reported yet). */
  bool in_maintenance = aggr_node_maintenance(m, n, NULL, now) != NULL;
  if (!n->reported) {
    /* Only expected masters exist before their agent's Hello; anything else
     * is a placeholder that counts for nothing. A master is missing only
     * once the first-contact window is over: at the start of a boot the
     * agents come up in any order. */
    if (!n->expected_master)
      return MST_VERDICT_UNKNOWN;
    if (in_maintenance)
      return MST_VERDICT_MAINTENANCE;
    return aggr_node_awaited(m, n, now) ? MST_VERDICT_STARTING : MST_VERDICT_MISSING;
  }

  struct mst_node_facts facts = {
      .silent = aggr_node_silent(m, n, now),
      .have_snapshot = n->have_snapshot,
      .late = n->startup && n->startup->late,
      /* A node that two agents share is half seen: a warning, whatever its
       * components say. */
      .n_warning = aggr_node_conflicted(n, now),
      .disconnected = aggr_node_disconnected(m, n, now),
      .fault = n->agent_fault != NULL,
      .maintenance = in_maintenance,
  };
  for (size_t i = 0; i < n->n_components; i++) {
    const struct aggr_component *c = &n->components[i];
    bool counts = counts_for_health(n, c);
    /* A component in maintenance is still down for the cause graph, but
     * counts for its node's health only as a warning. */
    bool maint = counts && aggr_node_maintenance(m, n, c->name, now);
    if (c->state != MST_STATE_HEALTHY && c->state != MST_STATE_WARNING) {
      n->n_down++;
      n->n_failing += counts && !maint && component_failing(c->state);
    }
    if (maint)
      facts.n_maintenance++;
    if (!counts || maint)
      continue;
    switch (c->state) {
    case MST_STATE_HEALTHY:
      facts.n_healthy++;
      break;
    case MST_STATE_WARNING:
      facts.n_warning++;
      break;
    case MST_STATE_STARTING:
      facts.n_starting++;
      break;
    case MST_STATE_UNHEALTHY:
      facts.n_unhealthy++;
      break;
    default: /* unknown, and a component not yet checked */
      facts.n_unknown++;
      break;
    }
  }
  return mst_node_verdict(&facts);
}

/* --- explaining: reasons and root causes ---------------------------------- */

/* A node id split for natural order: "a10" sorts after "a9". */
struct natural_id {
  const char *id;
  size_t prefix_len; /* up to the trailing digits */
  unsigned long long number;
  bool numbered; /* trailing digits without a leading zero */
};

static void natural_id_init(struct natural_id *x, const char *id) {
  size_t len = strlen(id), k = len;
  while (k > 0 && id[k - 1] >= '0' && id[k - 1] <= '9')
    k--;
  *x = (struct natural_id){.id = id, .prefix_len = len};
  /* At most 18 digits (no overflow), and no leading zero (a01 is not a1). */
  if (k < len && len - k <= 18 && (id[k] != '0' || len - k == 1)) {
    x->prefix_len = k;
    x->numbered = true;
    x->number = strtoull(id + k, NULL, 10);
  }
}

static int natural_id_cmp(const void *a, const void *b) {
  const struct natural_id *x = a, *y = b;
  size_t n = MST_MIN(x->prefix_len, y->prefix_len);
  int c = strncmp(x->id, y->id, n);
  if (c != 0)
    return c;
  if (x->prefix_len != y->prefix_len)
    return x->prefix_len < y->prefix_len ? -1 : 1;
  if (x->numbered != y->numbered)
    return x->numbered ? 1 : -1;
  if (x->number != y->number)
    return x->number < y->number ? -1 : 1;
  return strcmp(x->id, y->id);
}

static bool natural_id_follows(const struct natural_id *prev, const struct natural_id *x) {
  return prev->numbered && x->numbered && prev->prefix_len == x->prefix_len &&
         strncmp(prev->id, x->id, x->prefix_len) == 0 && x->number == prev->number + 1;
}

/* Writes node ids in natural order, runs of three or more written as
 * "a1..a5", at most REASON_LIST_MAX items. */
static void write_node_ids(FILE *f, struct natural_id *ids, size_t n) {
  size_t items = 0;
  qsort(ids, n, sizeof(ids[0]), natural_id_cmp);
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && natural_id_follows(&ids[j - 1], &ids[j]))
      j++;
    if (items == REASON_LIST_MAX) {
      fprintf(f, " and %zu more", n - i);
      return;
    }
    if (j - i >= 3) {
      fprintf(f, "%s%s..%s", items ? ", " : "", ids[i].id, ids[j - 1].id);
      i = j;
    } else {
      fprintf(f, "%s%s", items ? ", " : "", ids[i].id);
      i++;
    }
    items++;
  }
}

/* Writes the vertices vs as "marathon on m2, mesos-agent on a1..a5": grouped
 * by component in order of appearance. Components of here are written bare
 * ("svc"); nodes themselves as "node m1". */
static int write_vertices(FILE *f, const struct aggr_cause *c, const size_t *vs, size_t n,
                          const struct aggr_node *here) {
  _cleanup_free_ bool *done = calloc(n ? n : 1, sizeof(bool));
  _cleanup_free_ struct natural_id *ids = calloc(n ? n : 1, sizeof(*ids));
  size_t groups = 0;
  if (!done || !ids)
    return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    if (done[i])
      continue;
    const struct aggr_cause_vertex *x = &c->v[vs[i]];
    const char *name = x->comp ? x->comp->name : NULL;
    bool bare = here && x->node == here && name;
    size_t n_ids = 0;
    for (size_t j = i; j < n; j++) {
      const struct aggr_cause_vertex *y = &c->v[vs[j]];
      if (done[j] || !mst_str_eq(name, y->comp ? y->comp->name : NULL) ||
          bare != (here && y->node == here && name))
        continue;
      done[j] = true;
      natural_id_init(&ids[n_ids++], y->node->id);
    }
    if (groups == REASON_LIST_MAX) {
      size_t left = 0;
      for (size_t j = i; j < n; j++)
        left += !done[j];
      fprintf(f, " and %zu more", left + n_ids);
      break;
    }
    fputs(groups++ ? ", " : "", f);
    if (bare) {
      fputs(name, f);
      continue;
    }
    fprintf(f, "%s%s", name ? name : "node", name ? " on " : " ");
    write_node_ids(f, ids, n_ids);
  }
  return 0;
}

/* Writes refs as "mesos-master on m1..m3, mesos-leader on m1": grouped by
 * component in order of appearance, nodes themselves as "node m3"; total
 * beyond n as " and K more". */
static int write_refs(FILE *f, const struct aggr_reason_ref *refs, size_t n, size_t total) {
  _cleanup_free_ bool *done = calloc(n ? n : 1, sizeof(bool));
  _cleanup_free_ struct natural_id *ids = calloc(n ? n : 1, sizeof(*ids));
  if (!done || !ids)
    return -ENOMEM;
  for (size_t i = 0, groups = 0; i < n; i++) {
    if (done[i])
      continue;
    size_t n_ids = 0;
    for (size_t j = i; j < n; j++)
      if (!done[j] && mst_str_eq(refs[i].component, refs[j].component)) {
        done[j] = true;
        natural_id_init(&ids[n_ids++], refs[j].node);
      }
    fprintf(f, "%s%s%s", groups++ ? ", " : "", refs[i].component ? refs[i].component : "node",
            refs[i].component ? " on " : " ");
    write_node_ids(f, ids, n_ids);
  }
  if (total > n)
    fprintf(f, " and %zu more", total - n);
  return 0;
}

#define WAITING_FOR ", waiting for "

/* The node's waited-on stage as operators read it (aggr_node.waiting_on):
 * "mesos-agent", or "mesos-agent, waiting for mesos-master on m1" when the
 * stage engine found it waits for other nodes. *ret is NULL when no stage is
 * waited on. */
static int waiting_on_text(const struct aggr_node *n, char **ret) {
  const struct aggr_startup *s = n->reported ? n->startup : NULL;
  *ret = NULL;
  if (!s || s->n_reached == s->profile->n_stages || s->waiting >= s->profile->n_stages)
    return 0;
  _cleanup_free_ char *text = NULL;
  size_t size = 0;
  FILE *f = open_memstream(&text, &size);
  if (!f)
    return -ENOMEM;
  fputs(s->profile->stages[s->waiting].name, f);
  int r = 0;
  if (n->n_waiting_for_total > 0) {
    fputs(WAITING_FOR, f);
    r = write_refs(f, n->waiting_for, n->n_waiting_for, n->n_waiting_for_total);
  }
  if (fclose(f) != 0 || r < 0)
    return -ENOMEM;
  *ret = TAKE_PTR(text);
  return 0;
}

/* The message of a node vertex: why the node itself is the problem. */
static int node_problem_message(const struct aggr_model *m, const struct aggr_node *n, char **ret) {
  if (!n->reported)
    return asprintf(ret, "%s: expected master has never reported", n->id) < 0 ? -ENOMEM : 0;
  /* The message names when the node was last seen rather than for how long
   * it has been silent: a growing duration would change the rendered bodies,
   * and their indexes, on every evaluation. */
  char seen[MST_RFC3339_MAX] = "never", timeout[32];
  if (n->last_seen_usec > 0)
    mst_time_format_rfc3339(n->last_seen_usec, seen, sizeof(seen));
  format_duration(m->stale_timeout_usec, timeout, sizeof(timeout));
  return asprintf(ret, "%s: unreachable (last seen %s, silent longer than the %s stale timeout)",
                  n->id, seen, timeout) < 0
             ? -ENOMEM
             : 0;
}

/* The message of a node vertex that stands for the agent's fault
 * (aggr_node.agent_fault): it cannot record or send its state. */
static int node_fault_message(const struct aggr_node *n, char **ret) {
  char since[MST_RFC3339_MAX];
  mst_time_format_rfc3339(n->agent_fault_since_usec, since, sizeof(since));
  return asprintf(ret, "%s: the agent cannot record its state: %s (since %s)", n->id,
                  n->agent_fault, since) < 0
             ? -ENOMEM
             : 0;
}

/* How reasons name an operator's entry: "by alice since T until T: why"
 * (times as RFC 3339; "until cleared" for an open end). */
static int operator_text(const struct aggr_op_entry *e, char **ret) {
  char since[MST_RFC3339_MAX], until[MST_RFC3339_MAX] = "cleared";
  mst_time_format_rfc3339(e->since_usec, since, sizeof(since));
  if (e->kind == AGGR_OP_MAINTENANCE && e->until_usec)
    mst_time_format_rfc3339(e->until_usec, until, sizeof(until));
  int r = e->kind == AGGR_OP_MAINTENANCE
              ? asprintf(ret, "by %s since %s until %s: %s", e->by, since, until, e->reason)
              : asprintf(ret, "by %s at %s: %s", e->by, since, e->reason);
  return r < 0 ? -ENOMEM : 0;
}

/* What an evaluation explains with. */
struct explain {
  const struct aggr_model *m;
  const struct aggr_cause *cause;
  uint64_t now;
};

/* Whether node vertex cv stands for the agent's fault rather than for a
 * node that is silent or missing (cause.c adds one for each). */
static bool node_vertex_is_fault(const struct explain *x, const struct aggr_cause_vertex *cv) {
  return !cv->comp && cv->node->reported && cv->node->agent_fault &&
         !aggr_node_silent(x->m, cv->node, x->now);
}

/* The operator's sentence for root cause v: what, since when, and what it
 * blocks. Times, not durations, so that it stays the same bytes while
 * nothing changes. */
static int root_summary(const struct explain *x, size_t v, char **ret) {
  const struct aggr_cause_vertex *cv = &x->cause->v[v];
  const struct aggr_node *n = cv->node;
  _cleanup_free_ char *text = NULL;
  size_t size = 0;
  char when[MST_RFC3339_MAX];
  FILE *f = open_memstream(&text, &size);
  if (!f)
    return -ENOMEM;

  if (!cv->comp && !n->reported)
    fprintf(f, "expected master %s has never reported", n->id);
  else if (node_vertex_is_fault(x, cv))
    fprintf(f, "the agent on %s cannot record its state since %s: %s", n->id,
            mst_time_format_rfc3339(n->agent_fault_since_usec, when, sizeof(when)), n->agent_fault);
  else if (!cv->comp) {
    fprintf(f, "%s is unreachable, last seen %s", n->id,
            n->last_seen_usec ? mst_time_format_rfc3339(n->last_seen_usec, when, sizeof(when))
                              : "never");
  } else if (cv->late && !component_failing(cv->comp->state)) {
    const struct aggr_stage_progress *sp = &n->startup->stages[cv->late_stage];
    char p95[32];
    format_duration_human(sp->learned->p95_usec, p95, sizeof(p95));
    fprintf(f, "%s on %s has been %s since %s, past the p95 of %s for stage %s", cv->comp->name,
            n->id, state_adjective(cv->comp->state),
            mst_time_format_rfc3339(sp->started_usec, when, sizeof(when)), p95,
            n->startup->profile->stages[cv->late_stage].name);
  } else {
    const char *output = cv->comp->output && cv->comp->output[0] ? cv->comp->output : NULL;
    bool cut = false;
    int len = output ? output_quote_len(output, REASON_SUMMARY_OUTPUT_MAX, &cut) : 0;
    fprintf(f, "%s on %s has been %s since %s%s%.*s%s", cv->comp->name, n->id,
            state_adjective(cv->comp->state),
            cv->comp->since_usec ? mst_time_format_rfc3339(cv->comp->since_usec, when, sizeof(when))
                                 : "its first report",
            output ? ": " : "", len, output ? output : "", cut ? "…" : "");
  }
  int r = 0;
  if (cv->n_blocked > 0) {
    /* What it blocks on its own node first, then elsewhere. */
    size_t *order = malloc(cv->n_blocked * sizeof(size_t)), k = 0;
    if (!order)
      r = -ENOMEM;
    for (int pass = 0; order && pass < 2; pass++)
      for (size_t j = 0; j < cv->n_blocked; j++)
        if ((x->cause->v[cv->blocked[j]].node == n) == (pass == 0))
          order[k++] = cv->blocked[j];
    fputs("; blocked: ", f);
    if (order)
      r = write_vertices(f, x->cause, order, cv->n_blocked, NULL);
    free(order);
  }
  if (fclose(f) != 0 || r < 0)
    return -ENOMEM;
  *ret = TAKE_PTR(text);
  return 0;
}

/* The first AGGR_REFS_MAX of the n vertices vs, and their count. */
static int refs_from_vertices(const struct aggr_cause *c, const size_t *vs, size_t n,
                              struct aggr_reason *item) {
  item->n_refs_total = n;
  n = MST_MIN(n, (size_t)AGGR_REFS_MAX);
  if (n == 0)
    return 0;
  item->refs = calloc(n, sizeof(item->refs[0]));
  if (!item->refs)
    return -ENOMEM;
  for (size_t i = 0; i < n; i++, item->n_refs++) {
    const struct aggr_cause_vertex *y = &c->v[vs[i]];
    bool failed = false;
    item->refs[i].node = strdup_null(y->node->id, &failed);
    item->refs[i].component = strdup_null(y->comp ? y->comp->name : NULL, &failed);
    if (failed) {
      item->n_refs++;
      return -ENOMEM;
    }
  }
  return 0;
}

/* Appends root cause v to roots, unless roots already names it; a caller
 * that knows it does not says so (fresh), and spares a scan of roots that
 * would make a node's root causes quadratic in its components. */
static int root_push(const struct explain *x, size_t v, bool fresh, struct aggr_reasons *roots) {
  const struct aggr_cause_vertex *cv = &x->cause->v[v];
  const struct aggr_node *n = cv->node;
  const char *component = cv->comp ? cv->comp->name : NULL;
  if (!fresh && reasons_find(roots, n->id, component))
    return 0;

  const char *state;
  bool fault = node_vertex_is_fault(x, cv);
  if (fault)
    state = "unhealthy";
  else if (!cv->comp)
    state = n->reported ? "unreachable" : "missing";
  else if (cv->late && !component_failing(cv->comp->state))
    state = "late";
  else
    state = mst_state_name(cv->comp->state);
  bool failed = false;
  struct aggr_reason item = {
      .node = strdup_null(n->id, &failed),
      .component = strdup_null(component, &failed),
      .state = strdup_null(state, &failed),
      .message = cv->comp ? strdup_null(cv->comp->output, &failed) : NULL,
  };
  int r = failed ? -ENOMEM : 0;
  if (r == 0 && !cv->comp)
    r = fault ? node_fault_message(n, &item.message) : node_problem_message(x->m, n, &item.message);
  if (r == 0)
    r = root_summary(x, v, &item.summary);
  if (r == 0)
    r = refs_from_vertices(x->cause, cv->blocked, cv->n_blocked, &item);
  if (r < 0) {
    aggr_reason_done(&item);
    return r;
  }
  return reasons_take(roots, &item);
}

/* " (blocked by svc, mesos-master on m1..m3 via zookeeper)": the roots v is
 * blocked by and the other problems in between, seen from node here. */
static int blocked_text(const struct explain *x, size_t v, const struct aggr_node *here,
                        char **ret) {
  const struct aggr_cause_vertex *cv = &x->cause->v[v];
  char *text = NULL;
  size_t size = 0;
  *ret = NULL;
  if (cv->root || cv->n_roots == 0)
    return 0;
  FILE *f = open_memstream(&text, &size);
  if (!f)
    return -ENOMEM;
  fputs(" (blocked by ", f);
  int r = write_vertices(f, x->cause, cv->roots, cv->n_roots, here);
  if (r >= 0 && cv->n_via > 0) {
    fputs(" via ", f);
    r = write_vertices(f, x->cause, cv->via, cv->n_via, here);
  }
  fputc(')', f);
  if (fclose(f) != 0 || r < 0) {
    free(text);
    return -ENOMEM;
  }
  *ret = text;
  return 0;
}

/* One line per component that is not healthy; v is its vertex, or
 * SIZE_MAX. */
static int component_reason(const struct explain *x, size_t node_index,
                            const struct aggr_component *c, size_t v, struct aggr_reasons *reasons,
                            struct aggr_reasons *roots) {
  const struct aggr_node *n = x->m->nodes[node_index];
  const struct aggr_cause_vertex *cv = v != SIZE_MAX ? &x->cause->v[v] : NULL;
  if (!cv && !counts_for_health(n, c))
    return 0; /* a milestone, and its stage is not late */

  _cleanup_free_ char *blocked = NULL;
  int r = cv ? blocked_text(x, v, n, &blocked) : 0;
  if (r < 0)
    return r;
  const struct aggr_op_entry *maint = aggr_node_maintenance(x->m, n, c->name, x->now);
  if (maint) {
    /* Planned: a reason of its own, never a root cause. */
    _cleanup_free_ char *text = NULL;
    if ((r = operator_text(maint, &text)) < 0)
      return r;
    return reasons_pushf(reasons, n->id, c->name, "maintenance", "%s: %s in maintenance (%s) %s",
                         n->id, c->name, mst_state_name(c->state), text);
  }
  const char *output = c->output && c->output[0] ? c->output : NULL;
  bool cut = false;
  int len = output ? output_quote_len(output, REASON_OUTPUT_MAX, &cut) : 0;
  const char *late_stage = cv && cv->late ? n->startup->profile->stages[cv->late_stage].name : NULL;
  r = reasons_pushf(reasons, n->id, c->name, mst_state_name(c->state), "%s: %s %s%s%.*s%s%s%s%s",
                    n->id, c->name, state_phrase(c->state), output ? ": " : "", len,
                    output ? output : "", cut ? "…" : "", late_stage ? " (late for stage " : "",
                    late_stage ? late_stage : "", late_stage ? ")" : "");
  if (r < 0)
    return r;
  const struct aggr_op_entry *ack = aggr_node_acknowledged(x->m, n, c->name);
  if (ack) {
    /* Still failing, and said so first; then who knows of it. */
    _cleanup_free_ char *text = NULL;
    struct aggr_reason *last = &reasons->v[reasons->n - 1];
    char *joined;
    if ((r = operator_text(ack, &text)) < 0 ||
        asprintf(&joined, "%s; acknowledged %s", last->message, text) < 0)
      return -ENOMEM;
    free(last->message);
    last->message = joined;
  }
  if (blocked) {
    /* Appended after the fact, to keep the format string readable. */
    struct aggr_reason *last = &reasons->v[reasons->n - 1];
    char *joined;
    if (asprintf(&joined, "%s%s", last->message, blocked) < 0)
      return -ENOMEM;
    free(last->message);
    last->message = joined;
    if (refs_from_vertices(x->cause, cv->roots, cv->n_roots, last) < 0)
      return -ENOMEM;
  }
  /* The root causes are the problems that nothing failing upstream
   * explains; each carries the component's own output. Without a graph (it
   * did not fit in memory) every failing component stands alone. */
  if (cv && cv->root) /* each of the node's vertices is walked once */
    return root_push(x, v, true, roots);
  if (!cv && component_failing(c->state))
    return reasons_push(roots, n->id, c->name, mst_state_name(c->state), c->output);
  return 0;
}

/* Derives one node's reasons and root causes; its verdict is already set. */
static int node_explain(const struct explain *x, size_t i, struct aggr_reasons *reasons,
                        struct aggr_reasons *roots) {
  const struct aggr_model *m = x->m;
  const struct aggr_node *n = m->nodes[i];
  const char *vname = mst_verdict_name(n->verdict);
  size_t v = aggr_cause_find(x->cause, i, NULL);
  int r;

  if (n->verdict == MST_VERDICT_MAINTENANCE) {
    /* The one reason: what the node does meanwhile is expected, and none of
     * it is a root cause. */
    _cleanup_free_ char *text = NULL;
    const struct aggr_op_entry *maint = aggr_node_maintenance(m, n, NULL, x->now);
    if (!maint)
      return 0;
    if ((r = operator_text(maint, &text)) < 0)
      return r;
    return reasons_pushf(reasons, n->id, NULL, vname, "%s: in maintenance %s", n->id, text);
  }

  if (!n->reported || n->verdict == MST_VERDICT_UNREACHABLE) {
    /* Missing or silent: the component states are stale (or absent), so the
     * node itself is the reason and the root cause. */
    _cleanup_free_ char *message = NULL;
    if (!n->reported && !n->expected_master)
      return reasons_pushf(reasons, n->id, NULL, vname, "%s: has never reported", n->id);
    if (aggr_node_awaited(m, n, x->now)) {
      /* Not a problem yet: no root cause. */
      char when[MST_RFC3339_MAX];
      return reasons_pushf(
          reasons, n->id, NULL, vname, "%s: has not reported yet; missing at %s unless it reports",
          n->id, mst_time_format_rfc3339(aggr_model_first_contact_end(m), when, sizeof(when)));
    }
    if ((r = node_problem_message(m, n, &message)) < 0 ||
        (r = reasons_push(reasons, n->id, NULL, vname, message)) < 0)
      return r;
    r = v != SIZE_MAX ? root_push(x, v, true, roots)
                      : reasons_push(roots, n->id, NULL, vname, message);
    if (r >= 0 && n->reported && n->profile_drift)
      r = node_reason_drift(m, n, vname, reasons);
    if (r >= 0 && aggr_node_conflicted(n, x->now))
      r = node_reason_conflict(n, vname, reasons);
    return r;
  }

  if (n->agent_fault) {
    /* The components' states below are what the agent last recorded: the
     * fault is the first reason and a root cause of its own. */
    _cleanup_free_ char *message = NULL;
    if ((r = node_fault_message(n, &message)) < 0 ||
        (r = reasons_push(reasons, n->id, NULL, vname, message)) < 0)
      return r;
    r = v != SIZE_MAX ? root_push(x, v, true, roots)
                      : reasons_push(roots, n->id, NULL, vname, message);
    if (r < 0)
      return r;
  }

  if (!n->have_snapshot && n->verdict != MST_VERDICT_HEALTHY) {
    r = reasons_pushf(reasons, n->id, NULL, vname, "%s: waiting for the agent's first snapshot",
                      n->id);
    if (r < 0)
      return r;
  }

  /* The node's vertices follow the order of its components: walk both. */
  size_t next = x->cause->first ? x->cause->first[i] : 0;
  size_t end = x->cause->first ? next + x->cause->count[i] : 0;
  for (size_t k = 0; k < n->n_components; k++) {
    const struct aggr_component *c = &n->components[k];
    size_t vertex = SIZE_MAX;
    if (next < end && x->cause->v[next].comp == c)
      vertex = next++;
    if (c->state != MST_STATE_HEALTHY &&
        (r = component_reason(x, i, c, vertex, reasons, roots)) < 0)
      return r;
  }

  /* A stage held back by other nodes: what it waits for, by name. */
  if (n->n_waiting_for_total > 0 && n->verdict != MST_VERDICT_HEALTHY && n->waiting_on) {
    bool failed = false;
    struct aggr_reason item = {
        .node = strdup_null(n->id, &failed),
        .state = strdup_null(vname, &failed),
        .n_refs_total = n->n_waiting_for_total,
    };
    /* waiting_on reads "<stage>, waiting for <what>" (waiting_on_text). */
    const char *stage = n->startup->profile->stages[n->startup->waiting].name;
    const char *what = n->waiting_on + strlen(stage) + strlen(WAITING_FOR);
    if (!failed && asprintf(&item.message, "%s: stage %s waits for %s", n->id, stage, what) < 0)
      failed = true;
    if (!failed && n->n_waiting_for > 0) {
      item.refs = calloc(n->n_waiting_for, sizeof(item.refs[0]));
      failed = !item.refs;
      for (size_t k = 0; item.refs && k < n->n_waiting_for; k++, item.n_refs++) {
        item.refs[k].node = strdup_null(n->waiting_for[k].node, &failed);
        item.refs[k].component = strdup_null(n->waiting_for[k].component, &failed);
      }
    }
    if (failed) {
      aggr_reason_done(&item);
      return -ENOMEM;
    }
    if ((r = reasons_take(reasons, &item)) < 0)
      return r;
  }

  const struct aggr_startup *s = n->startup;
  for (size_t k = 0; s && s->late && k < s->profile->n_stages; k++) {
    const struct aggr_stage_progress *sp = &s->stages[k];
    char since[MST_RFC3339_MAX], p95[32];
    if (sp->state != AGGR_STAGE_LATE)
      continue;
    format_duration_human(sp->learned->p95_usec, p95, sizeof(p95));
    r = reasons_pushf(reasons, n->id, NULL, aggr_stage_state_to_string(sp->state),
                      "%s: startup is late: stage %s in progress since %s, past the p95 of %s "
                      "of earlier boots",
                      n->id, s->profile->stages[k].name,
                      mst_time_format_rfc3339(sp->started_usec, since, sizeof(since)), p95);
    if (r < 0)
      return r;
  }

  /* The root causes elsewhere that this node's components wait on. */
  for (size_t k = x->cause->first ? x->cause->first[i] : 0;
       x->cause->first && k < x->cause->first[i] + x->cause->count[i]; k++)
    for (size_t j = 0; j < x->cause->v[k].n_roots; j++)
      if (x->cause->v[x->cause->v[k].roots[j]].node != n &&
          (r = root_push(x, x->cause->v[k].roots[j], false, roots)) < 0)
        return r;

  /* Drift is worth showing even on a healthy node, but it does not change
   * the verdict. */
  if (n->profile_drift && (r = node_reason_drift(m, n, vname, reasons)) < 0)
    return r;
  if (aggr_node_conflicted(n, x->now) && (r = node_reason_conflict(n, vname, reasons)) < 0)
    return r;
  if (aggr_node_disconnected(m, n, x->now) &&
      (r = node_reason_disconnected(m, n, vname, reasons)) < 0)
    return r;
  return 0;
}

static int cluster_evaluate(const struct aggr_model *m, enum mst_verdict *ret_verdict,
                            struct aggr_reasons *reasons, struct aggr_reasons *roots) {
  _cleanup_free_ enum mst_verdict *masters = NULL, *others = NULL;
  size_t n_masters = 0, n_others = 0;
  bool configured = false, have_data = false;
  int r;

  if (m->n_nodes > 0) {
    masters = calloc(m->n_nodes, sizeof(*masters));
    others = calloc(m->n_nodes, sizeof(*others));
    if (!masters || !others)
      return -ENOMEM;
  }
  for (size_t i = 0; i < m->n_nodes; i++) {
    configured = configured || m->nodes[i]->expected_master;
    have_data = have_data || m->nodes[i]->reported;
  }
  for (size_t i = 0; i < m->n_nodes; i++) {
    const struct aggr_node *n = m->nodes[i];
    bool master =
        configured ? n->expected_master : n->reported && n->role && strcmp(n->role, "master") == 0;
    if (master)
      masters[n_masters++] = n->verdict;
    else if (n->reported)
      others[n_others++] = n->verdict;
  }

  struct mst_cluster_facts facts = {
      .have_leader = m->have_leader,
      .have_data = have_data,
      .masters = masters,
      .n_masters = n_masters,
      .others = others,
      .n_others = n_others,
  };
  enum mst_verdict verdict = mst_cluster_verdict(&facts);
  *ret_verdict = verdict;
  const char *vname = mst_verdict_name(verdict);

  if (!m->have_leader && (r = reasons_push(reasons, NULL, NULL, vname, "no leader elected")) < 0)
    return r;
  /* Not a fact of the cluster, so not in its verdict: but what this
   * aggregator acknowledges is not being stored, which operators must hear
   * where they look first. */
  if (m->storage_failing && (r = reasons_pushf(reasons, NULL, NULL, vname, "storage failing: %s",
                                               m->storage_failing)) < 0)
    return r;
  if (!have_data && (r = reasons_push(reasons, NULL, NULL, vname, "no agent has reported yet")) < 0)
    return r;
  if (have_data && n_masters == 0 && verdict != MST_VERDICT_HEALTHY &&
      (r = reasons_push(reasons, NULL, NULL, vname, "no master has reported")) < 0)
    return r;

  /* A root cause on one node is also listed by the nodes it blocks: each
   * is named once. The set borrows the nodes' reasons, which stay put. */
  size_t n_roots = 0;
  for (size_t i = 0; i < m->n_nodes; i++)
    if (m->nodes[i]->verdict != MST_VERDICT_HEALTHY)
      n_roots += m->nodes[i]->root_causes.n;
  struct reason_set seen = {0};
  r = 0;
  reasons->n_total = reasons->n; /* the cluster-wide ones */
  for (size_t i = 0; i < m->n_nodes; i++) {
    const struct aggr_node *n = m->nodes[i];
    if (n->verdict == MST_VERDICT_HEALTHY)
      continue;
    if ((r = reasons_copy_all(reasons, &n->reasons, NULL, 0)) < 0 ||
        (r = reasons_copy_all(roots, &n->root_causes, &seen, n_roots)) < 0)
      break;
  }
  free(seen.slots);
  return r < 0 ? r : 0;
}

/* Whether the cause graph may link node n to others: it has something that
 * is not up, or it is a problem itself (silent, or an expected master never
 * seen). Its reasons then depend on other nodes' state. */
static bool node_may_link(const struct aggr_node *n) {
  return n->n_down > 0 || n->eval_silent || (!n->reported && n->expected_master) || n->agent_fault;
}

enum {
  NODE_DERIVE = 1 << 0,  /* derive its verdict again */
  NODE_DIFFERS = 1 << 1, /* something derived came out different */
};

/* Queues a reachability event for history (model.h): a leader's only. */
static void reach_event_push(struct aggr_model *m, const struct aggr_node *n,
                             enum aggr_reach_kind kind, uint64_t at, const char *fmt, ...)
    _printf_(5, 6);
static void reach_event_push(struct aggr_model *m, const struct aggr_node *n,
                             enum aggr_reach_kind kind, uint64_t at, const char *fmt, ...) {
  struct aggr_reach_event e = {.kind = kind, .at_usec = at};
  va_list ap;
  va_start(ap, fmt);
  int r = vasprintf(&e.detail, fmt, ap);
  va_end(ap);
  if (r < 0)
    e.detail = NULL;
  e.node_id = strdup(n->id);
  e.boot_id = strdup(n->boot_id ? n->boot_id : "");
  if (!e.detail || !e.node_id || !e.boot_id ||
      aggr_model_grow_array(&m->reach_events, m->n_reach_events, sizeof(e)) < 0) {
    log_error("Out of memory recording that node %s turned %s, ignoring", n->id,
              aggr_reach_kind_name(kind));
    free(e.detail);
    free(e.node_id);
    free(e.boot_id);
    return;
  }
  m->reach_events[m->n_reach_events++] = e;
}

/* History of reachability, for a node being derived at now: it turned
 * unreachable at the moment its silence passed the stale timeout, or came
 * back with a frame after that. */
static void reach_follow(struct aggr_model *m, struct aggr_node *n, bool silent, uint64_t now) {
  char since[MST_RFC3339_MAX], timeout[32];
  if (!m->is_leader || !n->reported)
    return;
  if (silent && n->unreachable_usec == 0) {
    uint64_t from = aggr_node_silent_from(m, n);
    uint64_t at = MST_MIN(now, from + m->stale_timeout_usec);
    format_duration(m->stale_timeout_usec, timeout, sizeof(timeout));
    reach_event_push(
        m, n, AGGR_REACH_UNREACHABLE, at, "no frame since %s, longer than the %s stale timeout%s",
        n->last_seen_usec ? mst_time_format_rfc3339(n->last_seen_usec, since, sizeof(since))
                          : "ever",
        timeout, from > n->last_seen_usec ? " since this aggregator began to lead" : "");
    n->unreachable_usec = MST_MAX(at, 1);
  } else if (!silent && n->unreachable_usec != 0 && n->conn &&
             n->last_seen_usec > n->unreachable_usec) {
    char gap[32];
    format_duration_human(n->last_seen_usec - n->unreachable_usec, gap, sizeof(gap));
    reach_event_push(m, n, AGGR_REACH_REACHABLE, n->last_seen_usec,
                     "reachable again after %s unreachable (since %s)", gap,
                     mst_time_format_rfc3339(n->unreachable_usec, since, sizeof(since)));
    n->unreachable_usec = 0;
  }
}

/* Derives again the verdict of every node that needs it (every node with
 * all), then the reasons and root causes of those and of every node the
 * cause graph may link. Returns how many nodes came out different; the first
 * one's index goes to *ret_first. */
static size_t nodes_evaluate(struct aggr_model *m, uint64_t now, bool all, size_t *ret_first) {
  _cleanup_free_ uint8_t *flags = m->n_nodes ? calloc(m->n_nodes, 1) : NULL;
  size_t differ = 0;

  if (m->n_nodes > 0 && !flags) {
    log_error("Out of memory while evaluating, deriving every node");
    all = true;
  }
  m->n_derived = m->n_explained = 0;
  for (size_t i = 0; i < m->n_nodes; i++) {
    struct aggr_node *n = m->nodes[i];
    bool silent = aggr_node_silent(m, n, now), conflict = aggr_node_conflicted(n, now);
    bool awaited = aggr_node_awaited(m, n, now);
    size_t maint = aggr_node_maintenances(m, n, now);
    if (!all && n->evaluated && !n->dirty && silent == n->eval_silent &&
        conflict == n->eval_conflict && awaited == n->eval_awaited && maint == n->eval_maint)
      continue;
    n->eval_maint = maint;
    if (flags)
      flags[i] |= NODE_DERIVE;
    m->n_derived++;
    reach_follow(m, n, silent, now);
    n->evaluated = true;
    n->eval_silent = silent;
    n->eval_conflict = conflict;
    n->eval_awaited = awaited;
    enum mst_verdict verdict = node_verdict(m, n, now);
    if (verdict != n->verdict || n->verdict_since_usec == 0) {
      n->verdict = verdict;
      n->verdict_since_usec = now;
      n->dirty = true;
      if (flags)
        flags[i] |= NODE_DIFFERS;
    }
    bool leads = node_leads(m, n, silent);
    if (leads != n->dcos_leader) {
      n->dcos_leader = leads;
      n->dirty = true;
      if (flags)
        flags[i] |= NODE_DIFFERS;
    }
  }

  struct aggr_cause cause;
  if (aggr_cause_analyze(m, now, &cause) < 0)
    /* Every failing component then stands alone as its own root cause. */
    log_error("Out of memory while looking for root causes, ignoring");
  struct explain x = {.m = m, .cause = &cause, .now = now};
  for (size_t i = 0; i < m->n_nodes; i++) {
    struct aggr_node *n = m->nodes[i];
    if (flags && !(flags[i] & NODE_DERIVE) && !node_may_link(n))
      continue;
    m->n_explained++;
    _cleanup_free_ char *waiting = NULL;
    if (waiting_on_text(n, &waiting) < 0)
      log_error("Out of memory while naming what node %s waits on, ignoring", n->id);
    if (!mst_str_eq(waiting, n->waiting_on)) {
      free(n->waiting_on);
      n->waiting_on = TAKE_PTR(waiting);
      n->dirty = true;
      if (flags)
        flags[i] |= NODE_DIFFERS;
    }
    struct aggr_reasons reasons = {0}, roots = {0};
    if (node_explain(&x, i, &reasons, &roots) < 0)
      /* Keep the verdict; the reasons are what fits in memory. */
      log_error("Out of memory while listing the reasons for node %s, ignoring", n->id);
    if (!reasons_equal(&reasons, &n->reasons) || !reasons_equal(&roots, &n->root_causes)) {
      n->dirty = true;
      if (flags)
        flags[i] |= NODE_DIFFERS;
    }
    reasons_replace(&n->reasons, &reasons);
    reasons_replace(&n->root_causes, &roots);
  }
  aggr_cause_done(&cause);

  for (size_t i = 0; flags && i < m->n_nodes; i++)
    if ((flags[i] & NODE_DIFFERS) && differ++ == 0)
      *ret_first = i;
  return differ;
}

bool aggr_model_evaluate(struct aggr_model *m, struct aggr_stage *st, uint64_t now_usec) {
  m->evaluated_usec = now_usec;
  size_t first;

  /* A new lead: silence counts from now for nodes not heard since (the
   * rule of aggr_node_silent_from), which moves every node's silence and
   * the deadlines its reasons name, so every node is derived again. */
  bool all = false;
  if (m->lead_began && m->is_leader) {
    m->lead_began = false;
    m->lead_since_usec = now_usec;
    for (size_t i = 0; i < m->n_nodes; i++)
      m->nodes[i]->closed_silent = false;
    all = true;
  }
  if (aggr_stage_evaluate(st, m, now_usec) < 0)
    log_error("Out of memory while following startup progress, ignoring");
  (void)nodes_evaluate(m, now_usec, all, &first);

  struct aggr_reasons reasons = {0}, roots = {0};
  enum mst_verdict verdict = _MST_VERDICT_MAX; /* stays so when the facts did not fit */
  int r = cluster_evaluate(m, &verdict, &reasons, &roots);
  if (verdict == _MST_VERDICT_MAX) {
    log_error("Out of memory while evaluating the cluster verdict, ignoring");
    aggr_reasons_clear(&reasons);
    aggr_reasons_clear(&roots);
    return false;
  }
  if (r < 0)
    log_error("Out of memory while listing the cluster's reasons, ignoring");
  reasons_replace(&m->reasons, &reasons);
  reasons_replace(&m->root_causes, &roots);

  /* The first evaluation establishes the verdict: it counts as a change, so
   * that the caller records where the history starts. */
  if (verdict == m->verdict && m->verdict_since_usec != 0)
    return false;
  m->verdict = verdict;
  m->verdict_since_usec = now_usec;
  return true;
}

size_t aggr_model_check(struct aggr_model *m, uint64_t now_usec) {
  size_t first = 0, n = nodes_evaluate(m, now_usec, true, &first);
  if (n > 0)
    log_error("Incremental evaluation missed a change: %zu node(s) differ when derived again, "
              "first %s (verdict %s): a change not marked dirty, or a link between nodes "
              "not followed",
              n, m->nodes[first]->id, mst_verdict_name(m->nodes[first]->verdict));
  return n;
}

uint64_t aggr_model_next_stale_usec(const struct aggr_model *m) {
  /* A maintenance ending by the clock (issue 19). */
  uint64_t next = aggr_model_next_maintenance_end(m, mst_now_realtime_usec());
  for (size_t i = 0; i < m->n_nodes; i++) {
    const struct aggr_node *n = m->nodes[i];
    /* A conflict's reason running out. */
    if (n->eval_conflict)
      next = MST_MIN(next, n->conflict_until_usec);
    /* An expected master turning missing at the end of the first-contact
     * window. */
    if (n->eval_awaited)
      next = MST_MIN(next, aggr_model_first_contact_end(m));
    /* Unreachable as of the last evaluation: nothing more to wait for until
     * a frame arrives, and the loop evaluates after every frame. */
    if (!n->reported || n->verdict == MST_VERDICT_UNREACHABLE)
      continue;
    /* A stage in progress turning late. */
    if (n->startup)
      next = MST_MIN(next, n->startup->next_usec);
    if (m->stale_timeout_usec == 0)
      continue;
    /* +1 ms: silence is "longer than" the timeout, so the timer must fire
     * strictly after last_seen + stale_timeout. */
    uint64_t from = aggr_node_silent_from(m, n);
    uint64_t at = from + m->stale_timeout_usec + USEC_PER_MSEC;
    if (at < from)
      at = UINT64_MAX;
    next = MST_MIN(next, at);
  }
  return next;
}
