/* The aggregator's live cluster model: the nodes (sorted by id, so lookups
 * are binary searches), the components their agents last reported, and the
 * verdicts, reasons and root causes that aggr_model_evaluate() derives from
 * them with the pure rules of mst/verdict.h.
 *
 * Threads: every function here runs on the loop thread only. HTTP threads
 * never touch the model; they read immutable views rendered from it
 * (view.h). The loop sets node->dirty whenever it changes something a view
 * renders (components, connection, last_seen, Hello fields); this file sets
 * it for what it changes itself (new nodes and components, removed
 * components, verdicts, reasons). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/time.h"

/* Component output quoted in a reason is cut here: the full output is in the
 * node's component list. */
#define REASON_OUTPUT_MAX 1024
/* Profile digests are shown shortened in the drift reason. */
#define REASON_DIGEST_CHARS 12

/* Arrays grow in powers of two computed from their length alone, so the
 * model's structs need no capacity field. The capacity for length n is the
 * smallest of 4, 8, 16, ... that is >= n; an append reallocates only when n
 * is 0 or equals that capacity. Shrinking (retain) keeps the invariant. */
static int grow_for_append(void *array, size_t n, size_t size) {
  void **v = array;
  if (n != 0 && (n < 4 || (n & (n - 1)) != 0))
    return 0;
  size_t cap = n == 0 ? 4 : n * 2;
  if (cap < n || cap > SIZE_MAX / size)
    return -ENOMEM;
  void *p = realloc(*v, cap * size);
  if (!p)
    return -ENOMEM;
  *v = p;
  return 0;
}

static bool streq_null(const char *a, const char *b) {
  if (!a || !b)
    return a == b;
  return strcmp(a, b) == 0;
}

static char *strdup_null(const char *s, bool *failed) {
  if (!s)
    return NULL;
  char *copy = strdup(s);
  if (!copy)
    *failed = true;
  return copy;
}

/* --- reasons -------------------------------------------------------------- */

static void reason_done(struct aggr_reason *r) {
  free(r->node);
  free(r->component);
  free(r->state);
  free(r->message);
}

void aggr_reasons_clear(struct aggr_reasons *r) {
  if (!r)
    return;
  for (size_t i = 0; i < r->n; i++)
    reason_done(&r->v[i]);
  free(r->v);
  r->v = NULL;
  r->n = 0;
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
  if (failed || grow_for_append(&r->v, r->n, sizeof(r->v[0])) < 0) {
    reason_done(&item);
    return -ENOMEM;
  }
  r->v[r->n++] = item;
  return 0;
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

static int reasons_copy_all(struct aggr_reasons *dst, const struct aggr_reasons *src) {
  for (size_t i = 0; i < src->n; i++) {
    const struct aggr_reason *s = &src->v[i];
    int r = reasons_push(dst, s->node, s->component, s->state, s->message);
    if (r < 0)
      return r;
  }
  return 0;
}

static bool reasons_equal(const struct aggr_reasons *a, const struct aggr_reasons *b) {
  if (a->n != b->n)
    return false;
  for (size_t i = 0; i < a->n; i++) {
    const struct aggr_reason *x = &a->v[i], *y = &b->v[i];
    if (!streq_null(x->node, y->node) || !streq_null(x->component, y->component) ||
        !streq_null(x->state, y->state) || !streq_null(x->message, y->message))
      return false;
  }
  return true;
}

static void reasons_replace(struct aggr_reasons *dst, struct aggr_reasons *src) {
  aggr_reasons_clear(dst);
  *dst = *src;
  *src = (struct aggr_reasons){0};
}

/* --- nodes and components ------------------------------------------------- */

static void component_done(struct aggr_component *c) {
  free(c->name);
  free(c->output);
}

static void node_free(struct aggr_node *n) {
  if (!n)
    return;
  for (size_t i = 0; i < n->n_components; i++)
    component_done(&n->components[i]);
  free(n->components);
  free(n->id);
  free(n->role);
  free(n->hostname);
  free(n->boot_id);
  free(n->profile_digest);
  aggr_reasons_clear(&n->reasons);
  aggr_reasons_clear(&n->root_causes);
  free(n);
}

/* The position of id, or where it would be inserted. */
static size_t node_lower_bound(const struct aggr_model *m, const char *id) {
  size_t lo = 0, hi = m->n_nodes;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (strcmp(m->nodes[mid]->id, id) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

struct aggr_node *aggr_model_find(const struct aggr_model *m, const char *id) {
  size_t i = node_lower_bound(m, id);
  if (i < m->n_nodes && strcmp(m->nodes[i]->id, id) == 0)
    return m->nodes[i];
  return NULL;
}

struct aggr_node *aggr_model_get(struct aggr_model *m, const char *id) {
  size_t i = node_lower_bound(m, id);
  if (i < m->n_nodes && strcmp(m->nodes[i]->id, id) == 0)
    return m->nodes[i];

  struct aggr_node *n = calloc(1, sizeof(*n));
  if (!n)
    return NULL;
  n->id = strdup(id);
  if (!n->id || grow_for_append(&m->nodes, m->n_nodes, sizeof(m->nodes[0])) < 0) {
    node_free(n);
    return NULL;
  }
  n->verdict = MST_VERDICT_UNKNOWN;
  n->dirty = true;
  memmove(&m->nodes[i + 1], &m->nodes[i], (m->n_nodes - i) * sizeof(m->nodes[0]));
  m->nodes[i] = n;
  m->n_nodes++;
  return n;
}

struct aggr_component *aggr_node_find_component(const struct aggr_node *n, const char *name) {
  for (size_t i = 0; i < n->n_components; i++)
    if (strcmp(n->components[i].name, name) == 0)
      return &n->components[i];
  return NULL;
}

struct aggr_component *aggr_node_get_component(struct aggr_node *n, const char *name) {
  struct aggr_component *c = aggr_node_find_component(n, name);
  if (c)
    return c;
  char *copy = strdup(name);
  if (!copy || grow_for_append(&n->components, n->n_components, sizeof(n->components[0])) < 0) {
    free(copy);
    return NULL;
  }
  c = &n->components[n->n_components++];
  *c = (struct aggr_component){.name = copy, .state = MST_STATE_UNSPECIFIED};
  n->dirty = true;
  return c;
}

void aggr_node_retain_components(struct aggr_node *n, const bool *keep) {
  size_t kept = 0;
  for (size_t i = 0; i < n->n_components; i++) {
    if (keep[i])
      n->components[kept++] = n->components[i];
    else
      component_done(&n->components[i]);
  }
  if (kept != n->n_components)
    n->dirty = true;
  n->n_components = kept;
}

/* --- model ---------------------------------------------------------------- */

int aggr_model_init(struct aggr_model *m, const struct mst_profile_set *profiles,
                    char *const *expected_masters, uint64_t stale_timeout_usec) {
  *m = (struct aggr_model){
      .profiles = profiles,
      .stale_timeout_usec = stale_timeout_usec,
      .verdict = MST_VERDICT_UNKNOWN,
  };
  for (size_t i = 0; expected_masters && expected_masters[i]; i++) {
    struct aggr_node *n = aggr_model_get(m, expected_masters[i]);
    if (!n)
      goto oom;
    if (!n->role) {
      n->role = strdup("master");
      if (!n->role)
        goto oom;
    }
    n->expected_master = true;
  }
  return 0;

oom:
  aggr_model_done(m);
  return -ENOMEM;
}

void aggr_model_done(struct aggr_model *m) {
  if (!m)
    return;
  for (size_t i = 0; i < m->n_nodes; i++)
    node_free(m->nodes[i]);
  free(m->nodes);
  aggr_reasons_clear(&m->reasons);
  aggr_reasons_clear(&m->root_causes);
  free(m->leader_id);
  free(m->leader_http);
  *m = (struct aggr_model){0};
}

/* What may stand between "http://" and the path in a Location header: a
 * host name, an IPv4 or a bracketed IPv6 address (with a zone), a port. */
static bool http_authority_ok(const char *s) {
  if (!s || !*s || *s == ':') /* no host */
    return false;
  for (const char *p = s; *p; p++) {
    char c = *p;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          strchr(".:-_~%[]", c)))
      return false;
  }
  return true;
}

int aggr_model_set_leader(struct aggr_model *m, bool is_leader, const char *leader_id,
                          const char *leader_http, uint64_t epoch) {
  if (leader_http && !http_authority_ok(leader_http)) {
    /* It came from a znode: shown with anything unprintable as '?'. */
    char shown[80];
    size_t k = 0;
    for (; leader_http[k] && k < sizeof(shown) - 1; k++) {
      unsigned char c = (unsigned char)leader_http[k];
      shown[k] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    shown[k] = 0;
    log_warning("The leader's HTTP address \"%s%s\" is not a host:port, ignoring it", shown,
                leader_http[k] ? "..." : "");
    leader_http = NULL;
  }
  bool have_leader = is_leader || leader_id;
  if (m->is_leader == is_leader && m->have_leader == have_leader && m->epoch == epoch &&
      streq_null(m->leader_id, leader_id) && streq_null(m->leader_http, leader_http))
    return 0;

  char *id = leader_id ? strdup(leader_id) : NULL;
  char *http = leader_http ? strdup(leader_http) : NULL;
  int r = 1;
  if ((leader_id && !id) || (leader_http && !http)) {
    free(id);
    free(http);
    id = http = NULL;
    have_leader = is_leader;
    r = -ENOMEM;
  }
  free(m->leader_id);
  free(m->leader_http);
  m->is_leader = is_leader;
  m->have_leader = have_leader;
  m->leader_id = id;
  m->leader_http = http;
  m->epoch = epoch;
  return r;
}

/* --- the node's stage graph, for root causes ------------------------------ */

/* Which failing components are explained by others: within a node, a failing
 * component is blocked when a stage its stage comes after (transitively,
 * along "after") has a failing component of its own that is not blocked
 * itself. Cluster conditions ("requires") and systemd's unit dependencies
 * are later work. Built only for nodes that have failing components. */
struct stage_graph {
  const struct mst_profile *p; /* NULL: no profile, nothing is blocked */
  bool *failing;               /* per stage: some component of it fails */
  bool *blocked;               /* per stage: some upstream stage fails */
  bool *seen;                  /* scratch for the upstream walk */
};

static bool component_failing(enum mst_state s) {
  return s != MST_STATE_HEALTHY && s != MST_STATE_STARTING && s != MST_STATE_WARNING;
}

static size_t stage_index(const struct mst_profile *p, const char *name) {
  for (size_t i = 0; i < p->n_stages; i++)
    if (strcmp(p->stages[i].name, name) == 0)
      return i;
  return SIZE_MAX;
}

static bool strv_contains(char *const *v, const char *s) {
  for (size_t i = 0; v && v[i]; i++)
    if (strcmp(v[i], s) == 0)
      return true;
  return false;
}

/* Marks in seen every stage that stage i comes after, transitively. The
 * loader rejects cycles; seen stops them anyway. */
static void stage_mark_upstream(const struct mst_profile *p, size_t i, bool *seen) {
  for (char *const *a = p->stages[i].after; a && *a; a++) {
    size_t j = stage_index(p, *a);
    if (j == SIZE_MAX || seen[j])
      continue;
    seen[j] = true;
    stage_mark_upstream(p, j, seen);
  }
}

static void stage_graph_done(struct stage_graph *g) {
  free(g->failing);
  free(g->blocked);
  free(g->seen);
}

static int stage_graph_build(const struct aggr_model *m, const struct aggr_node *n,
                             struct stage_graph *g) {
  const struct mst_profile *p =
      n->role && m->profiles ? mst_profile_set_find(m->profiles, n->role) : NULL;
  if (!p || p->n_stages == 0)
    return 0;
  g->failing = calloc(p->n_stages, sizeof(bool));
  g->blocked = calloc(p->n_stages, sizeof(bool));
  g->seen = calloc(p->n_stages, sizeof(bool));
  if (!g->failing || !g->blocked || !g->seen)
    return -ENOMEM;
  g->p = p;
  for (size_t i = 0; i < p->n_stages; i++)
    for (char *const *c = p->stages[i].components; c && *c; c++) {
      const struct aggr_component *comp = aggr_node_find_component(n, *c);
      if (comp && component_failing(comp->state))
        g->failing[i] = true;
    }
  for (size_t i = 0; i < p->n_stages; i++) {
    memset(g->seen, 0, p->n_stages * sizeof(bool));
    stage_mark_upstream(p, i, g->seen);
    for (size_t j = 0; j < p->n_stages && !g->blocked[i]; j++)
      g->blocked[i] = j != i && g->seen[j] && g->failing[j];
  }
  return 0;
}

/* For a failing component: NULL in *ret when it is a root cause, else the
 * comma list of the root-cause components upstream of it. */
static int stage_graph_blockers(struct stage_graph *g, const struct aggr_node *n,
                                const char *component, char **ret) {
  *ret = NULL;
  if (!g->p)
    return 0;
  size_t i = 0;
  while (i < g->p->n_stages && !strv_contains(g->p->stages[i].components, component))
    i++;
  if (i == g->p->n_stages || !g->blocked[i])
    return 0;

  char *text = NULL;
  size_t size = 0;
  FILE *f = open_memstream(&text, &size);
  if (!f)
    return -ENOMEM;
  memset(g->seen, 0, g->p->n_stages * sizeof(bool));
  stage_mark_upstream(g->p, i, g->seen);
  bool first = true;
  for (size_t j = 0; j < g->p->n_stages; j++) {
    if (j == i || !g->seen[j] || !g->failing[j] || g->blocked[j])
      continue;
    for (char *const *c = g->p->stages[j].components; *c; c++) {
      const struct aggr_component *comp = aggr_node_find_component(n, *c);
      if (comp && component_failing(comp->state)) {
        fprintf(f, "%s%s", first ? "" : ", ", *c);
        first = false;
      }
    }
  }
  if (fclose(f) != 0) {
    free(text);
    return -ENOMEM;
  }
  /* Upstream failures exist, but all are blocked by a cycle: be a root. */
  if (first) {
    free(text);
    return 0;
  }
  *ret = text;
  return 0;
}

/* --- evaluation ----------------------------------------------------------- */

static bool node_silent(const struct aggr_model *m, const struct aggr_node *n, uint64_t now) {
  /* A stale timeout of 0 disables silence detection; a clock that went
   * backwards (now < last_seen) is not silence. */
  return n->reported && m->stale_timeout_usec > 0 && now > n->last_seen_usec &&
         now - n->last_seen_usec > m->stale_timeout_usec;
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

static const char *state_name(enum mst_state s) {
  const char *name = mst_state_to_string(s);
  return name ? name : "unknown";
}

static const char *verdict_name(enum mst_verdict v) {
  const char *name = mst_verdict_to_string(v);
  return name ? name : "unknown";
}

/* How many bytes of s to quote: at most REASON_OUTPUT_MAX, cut back to a
 * UTF-8 character boundary. */
static int output_quote_len(const char *s, bool *ret_cut) {
  size_t len = strlen(s);
  *ret_cut = len > REASON_OUTPUT_MAX;
  if (!*ret_cut)
    return (int)len;
  len = REASON_OUTPUT_MAX;
  while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
    len--;
  return (int)len;
}

/* "30s" or "1500ms". */
static void format_duration(uint64_t usec, char *buf, size_t size) {
  if (usec % USEC_PER_SEC == 0)
    snprintf(buf, size, "%" PRIu64 "s", (uint64_t)(usec / USEC_PER_SEC));
  else
    snprintf(buf, size, "%" PRIu64 "ms", (uint64_t)(usec / USEC_PER_MSEC));
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

/* Derives one node's verdict, reasons and root causes at now. */
static int node_evaluate(const struct aggr_model *m, const struct aggr_node *n, uint64_t now,
                         enum mst_verdict *ret_verdict, struct aggr_reasons *reasons,
                         struct aggr_reasons *roots) {
  enum mst_verdict verdict;
  int r;

  if (!n->reported) {
    /* Only expected masters exist before their agent's Hello; anything else
     * is a placeholder that counts for nothing. */
    verdict = n->expected_master ? MST_VERDICT_MISSING : MST_VERDICT_UNKNOWN;
    const char *name = verdict_name(verdict);
    const char *what =
        n->expected_master ? "expected master has never reported" : "has never reported";
    r = reasons_pushf(reasons, n->id, NULL, name, "%s: %s", n->id, what);
    if (r >= 0 && n->expected_master)
      r = reasons_pushf(roots, n->id, NULL, name, "%s: %s", n->id, what);
    *ret_verdict = verdict;
    return r;
  }

  bool silent = node_silent(m, n, now);
  struct mst_node_facts facts = {
      .silent = silent,
      .have_snapshot = n->have_snapshot,
  };
  for (size_t i = 0; i < n->n_components; i++) {
    switch (n->components[i].state) {
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
  verdict = mst_node_verdict(&facts);
  *ret_verdict = verdict;
  const char *vname = verdict_name(verdict);

  if (silent) {
    /* The message names when the node was last seen rather than for how long
     * it has been silent: a growing duration would change the rendered
     * bodies, and their indexes, on every evaluation. The component states
     * are stale, so the node itself is the reason and the root cause. */
    char seen[MST_RFC3339_MAX] = "never", timeout[32];
    if (n->last_seen_usec > 0)
      mst_time_format_rfc3339(n->last_seen_usec, seen, sizeof(seen));
    format_duration(m->stale_timeout_usec, timeout, sizeof(timeout));
    r = reasons_pushf(reasons, n->id, NULL, vname,
                      "%s: unreachable (last seen %s, silent longer than the %s stale timeout)",
                      n->id, seen, timeout);
    if (r >= 0)
      r = reasons_push(roots, n->id, NULL, vname, reasons->v[reasons->n - 1].message);
    if (r >= 0 && n->profile_drift)
      r = node_reason_drift(m, n, vname, reasons);
    return r;
  }

  if (!n->have_snapshot && verdict != MST_VERDICT_HEALTHY) {
    r = reasons_pushf(reasons, n->id, NULL, vname, "%s: waiting for the agent's first snapshot",
                      n->id);
    if (r < 0)
      return r;
  }

  _cleanup_(stage_graph_done) struct stage_graph g = {0};
  if (facts.n_unhealthy + facts.n_unknown > 0 && stage_graph_build(m, n, &g) < 0)
    return -ENOMEM;

  for (size_t i = 0; i < n->n_components; i++) {
    const struct aggr_component *c = &n->components[i];
    if (c->state == MST_STATE_HEALTHY)
      continue;
    const char *sname = state_name(c->state);
    bool failing = component_failing(c->state);
    _cleanup_free_ char *blockers = NULL;
    if (failing && (r = stage_graph_blockers(&g, n, c->name, &blockers)) < 0)
      return r;

    const char *output = c->output && c->output[0] ? c->output : NULL;
    bool cut = false;
    int len = output ? output_quote_len(output, &cut) : 0;
    r = reasons_pushf(reasons, n->id, c->name, sname, "%s: %s %s%s%.*s%s%s%s%s", n->id, c->name,
                      state_phrase(c->state), output ? ": " : "", len, output ? output : "",
                      cut ? "…" : "", blockers ? " (blocked by " : "", blockers ? blockers : "",
                      blockers ? ")" : "");
    if (r < 0)
      return r;
    /* The root causes are the failing components that nothing failing
     * upstream explains; each carries the component's own output. */
    if (failing && !blockers && (r = reasons_push(roots, n->id, c->name, sname, c->output)) < 0)
      return r;
  }

  /* Drift is worth showing even on a healthy node, but it does not change
   * the verdict. */
  if (n->profile_drift) {
    r = node_reason_drift(m, n, vname, reasons);
    if (r < 0)
      return r;
  }
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
  const char *vname = verdict_name(verdict);

  if (!m->have_leader && (r = reasons_push(reasons, NULL, NULL, vname, "no leader elected")) < 0)
    return r;
  if (!have_data && (r = reasons_push(reasons, NULL, NULL, vname, "no agent has reported yet")) < 0)
    return r;
  if (have_data && n_masters == 0 && verdict != MST_VERDICT_HEALTHY &&
      (r = reasons_push(reasons, NULL, NULL, vname, "no master has reported")) < 0)
    return r;

  for (size_t i = 0; i < m->n_nodes; i++) {
    const struct aggr_node *n = m->nodes[i];
    if (n->verdict == MST_VERDICT_HEALTHY)
      continue;
    if ((r = reasons_copy_all(reasons, &n->reasons)) < 0 ||
        (r = reasons_copy_all(roots, &n->root_causes)) < 0)
      return r;
  }
  return 0;
}

bool aggr_model_evaluate(struct aggr_model *m, uint64_t now_usec) {
  for (size_t i = 0; i < m->n_nodes; i++) {
    struct aggr_node *n = m->nodes[i];
    struct aggr_reasons reasons = {0}, roots = {0};
    enum mst_verdict verdict = n->verdict;

    if (node_evaluate(m, n, now_usec, &verdict, &reasons, &roots) < 0)
      /* Keep the verdict; the reasons are what fits in memory. */
      log_error("Out of memory while listing the reasons for node %s, ignoring", n->id);

    if (verdict != n->verdict || n->verdict_since_usec == 0) {
      n->verdict = verdict;
      n->verdict_since_usec = now_usec;
      n->dirty = true;
    }
    if (!reasons_equal(&reasons, &n->reasons) || !reasons_equal(&roots, &n->root_causes))
      n->dirty = true;
    reasons_replace(&n->reasons, &reasons);
    reasons_replace(&n->root_causes, &roots);
  }

  struct aggr_reasons reasons = {0}, roots = {0};
  enum mst_verdict verdict = _MST_VERDICT_MAX; /* stays so when the facts did not fit */
  int r = cluster_evaluate(m, &verdict, &reasons, &roots);
  if (verdict == _MST_VERDICT_MAX) {
    log_error("Out of memory while evaluating the cluster verdict, ignoring");
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

uint64_t aggr_model_next_stale_usec(const struct aggr_model *m) {
  uint64_t next = UINT64_MAX;
  if (m->stale_timeout_usec == 0)
    return next;
  for (size_t i = 0; i < m->n_nodes; i++) {
    const struct aggr_node *n = m->nodes[i];
    /* Unreachable as of the last evaluation: nothing more to wait for until
     * a frame arrives, and the loop evaluates after every frame. */
    if (!n->reported || n->verdict == MST_VERDICT_UNREACHABLE)
      continue;
    /* +1 ms: silence is "longer than" the timeout, so the timer must fire
     * strictly after last_seen + stale_timeout. */
    uint64_t at = n->last_seen_usec + m->stale_timeout_usec + USEC_PER_MSEC;
    if (at < n->last_seen_usec)
      at = UINT64_MAX;
    next = MST_MIN(next, at);
  }
  return next;
}
