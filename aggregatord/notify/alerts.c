/* The alert set of the live model (alerts.h): which conditions become
 * alerts, their labels and annotations. Pure derivation on the loop thread;
 * sending is sender.c's. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "mst/dynbuf.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "mst/verdict.h"
#include "notify/alerts.h"

/* An annotation's text: a sentence and a list of names, never a body. */
#define ALERT_TEXT_MAX (16u * 1024)
/* How many (node, component) names a list annotation spells out. */
#define ALERT_REFS_SHOWN 10

/* Whether what is at (node, component) is in maintenance or acknowledged
 * (issue 19: model/operator.h), so that no alert is sent for it (component
 * NULL: the node itself). A node in maintenance silences its components
 * too; an acknowledgement is of one failing component. As the views, it
 * takes what held at the last evaluation. */
static bool alert_suppressed(const struct aggr_model *m, const struct aggr_node *n,
                             const char *component) {
  if (aggr_node_maintenance(m, n, NULL, m->evaluated_usec))
    return true;
  return component && (aggr_node_maintenance(m, n, component, m->evaluated_usec) ||
                       aggr_node_acknowledged(m, n, component));
}

/* The alerts a verdict calls for: the cluster's and a node's alertname
 * and severity (NULL: none). */
static const struct verdict_alerts {
  const char *cluster, *cluster_severity;
  const char *node, *node_severity;
} verdict_alerts[_MST_VERDICT_MAX] = {
    [MST_VERDICT_UNKNOWN] = {"MusterClusterUnknown", "warning", NULL, NULL},
    [MST_VERDICT_DEGRADED] = {"MusterClusterDegraded", "warning", NULL, NULL},
    [MST_VERDICT_STARTING] = {"MusterClusterStarting", "info", NULL, NULL},
    [MST_VERDICT_LATE] = {NULL, NULL, "MusterNodeLate", "warning"},
    [MST_VERDICT_UNHEALTHY] = {"MusterClusterUnhealthy", "critical", "MusterNodeUnhealthy",
                               "critical"},
    [MST_VERDICT_UNREACHABLE] = {NULL, NULL, "MusterNodeUnreachable", "critical"},
    [MST_VERDICT_MISSING] = {NULL, NULL, "MusterNodeMissing", "critical"},
};

static const struct verdict_alerts *alerts_of(enum mst_verdict v) {
  static const struct verdict_alerts none = {0};
  return (unsigned)v < _MST_VERDICT_MAX ? &verdict_alerts[v] : &none;
}

void aggr_alert_done(struct aggr_alert *a) {
  free(a->key);
  json_decref(a->labels);
  json_decref(a->annotations);
  free(a->link);
  *a = (struct aggr_alert){0};
}

void aggr_alert_set_done(struct aggr_alert_set *s) {
  for (size_t i = 0; i < s->n; i++)
    aggr_alert_done(&s->v[i]);
  free(s->v);
  *s = (struct aggr_alert_set){0};
}

/* "mesos-master on m1, marathon on m1 and 3 more", or "" for none. */
static void refs_text(struct mst_dynbuf *t, const struct aggr_reason_ref *refs, size_t n,
                      size_t n_total) {
  size_t shown = MST_MIN(n, (size_t)ALERT_REFS_SHOWN);
  for (size_t i = 0; i < shown; i++) {
    if (i > 0)
      mst_dynbuf_adds(t, ", ");
    if (refs[i].component)
      mst_dynbuf_addf(t, "%s on %s", refs[i].component, refs[i].node ? refs[i].node : "?");
    else
      mst_dynbuf_adds(t, refs[i].node ? refs[i].node : "?");
  }
  if (n_total > shown)
    mst_dynbuf_addf(t, " and %zu more", n_total - shown);
}

/* A root cause's sentence: its summary, else its message. */
static const char *reason_text(const struct aggr_reason *r) {
  return r->summary ? r->summary : r->message ? r->message : "";
}

/* The dashboard's page of node (NULL: the cluster), under external_url. */
static char *dashboard_link(const char *external_url, const char *node) {
  if (!external_url)
    return NULL;
  struct mst_dynbuf t = MST_DYNBUF_INIT(ALERT_TEXT_MAX);
  size_t len = strlen(external_url);
  mst_dynbuf_add(&t, external_url, len > 0 && external_url[len - 1] == '/' ? len - 1 : len);
  mst_dynbuf_adds(&t, "/");
  if (node) {
    /* encodeURIComponent, as the dashboard reads its #node= fragment. */
    mst_dynbuf_adds(&t, "#node=");
    for (const unsigned char *p = (const unsigned char *)node; *p; p++) {
      if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          strchr("-_.!~*'()", *p))
        mst_dynbuf_addc(&t, (char)*p);
      else
        mst_dynbuf_addf(&t, "%%%02X", *p);
    }
  }
  char *s = NULL;
  size_t n;
  return mst_dynbuf_take(&t, &s, &n) < 0 ? NULL : s;
}

struct builder {
  const struct aggr_alert_options *o;
  struct aggr_alert_set *set;
  int error;
};

static int set_string(json_t *o, const char *key, const char *value) {
  if (!value || !*value)
    return 0;
  return json_object_set_new(o, key, json_string(value)) < 0 ? -ENOMEM : 0;
}

/* Adds one alert: labels name=value pairs in label-name order (the key
 * lists them so), annotations likewise, NULL-terminated; a NULL or empty
 * value leaves its entry out. */
static void add_alert(struct builder *b, const char *const *labels, const char *const *annotations,
                      const char *link_node, bool link_cluster, uint64_t starts_usec) {
  if (b->error)
    return;
  if (b->set->n >= b->o->max) {
    b->set->n_dropped++;
    return;
  }
  struct aggr_alert a = {
      .labels = json_object(), .annotations = json_object(), .starts_usec = starts_usec};
  struct mst_dynbuf key = MST_DYNBUF_INIT(ALERT_TEXT_MAX);
  int r = a.labels && a.annotations ? 0 : -ENOMEM;
  for (size_t i = 0; r >= 0 && labels[i]; i += 2) {
    if (!labels[i + 1] || !*labels[i + 1])
      continue;
    r = set_string(a.labels, labels[i], labels[i + 1]);
    mst_dynbuf_addf(&key, "%s=%s\x1f", labels[i], labels[i + 1]);
  }
  for (size_t i = 0; r >= 0 && annotations[i]; i += 2)
    r = set_string(a.annotations, annotations[i], annotations[i + 1]);
  size_t len;
  if (r >= 0)
    r = mst_dynbuf_take(&key, &a.key, &len);
  mst_dynbuf_reset(&key);
  if (r >= 0 && (link_node || link_cluster) && b->o->external_url &&
      !(a.link = dashboard_link(b->o->external_url, link_node)))
    r = -ENOMEM;
  struct aggr_alert *slot = r >= 0 ? MST_ARRAY_APPEND(b->set->v, b->set->n) : NULL;
  if (!slot) {
    aggr_alert_done(&a);
    b->error = -ENOMEM;
    return;
  }
  *slot = a;
  b->set->n++;
}

/* The texts of a verdict's alert (the cluster's or a node's). */
struct verdict_texts {
  struct mst_dynbuf summary, cause, by;
};

#define VERDICT_TEXTS_INIT                                                                         \
  {                                                                                                \
    MST_DYNBUF_INIT(ALERT_TEXT_MAX), MST_DYNBUF_INIT(ALERT_TEXT_MAX),                              \
        MST_DYNBUF_INIT(ALERT_TEXT_MAX)                                                            \
  }

/* Adds the alert of a verdict held since since_usec with texts x (freed),
 * linked to node's page (NULL: the dashboard). */
static void add_verdict_alert(struct builder *b, const char *const *labels, struct verdict_texts *x,
                              const char *node, uint64_t since_usec) {
  char since[MST_RFC3339_MAX];
  const char *annotations[] = {
      "summary",    x->summary.buf,
      "root_cause", x->cause.buf,
      "blocked_by", x->by.buf,
      "since",      mst_time_format_rfc3339(since_usec, since, sizeof(since)),
      NULL};
  if (x->summary.error || x->cause.error || x->by.error)
    b->error = -ENOMEM;
  else
    add_alert(b, labels, annotations, node, !node, since_usec);
  mst_dynbuf_reset(&x->summary);
  mst_dynbuf_reset(&x->cause);
  mst_dynbuf_reset(&x->by);
}

static void add_cluster_alert(struct builder *b, const struct aggr_model *m) {
  const char *name = alerts_of(m->verdict)->cluster;
  const char *severity = alerts_of(m->verdict)->cluster_severity;
  if (!name)
    return;
  struct verdict_texts x = VERDICT_TEXTS_INIT;
  mst_dynbuf_addf(&x.summary, "cluster %s is %s", b->o->cluster, mst_verdict_to_string(m->verdict));
  if (m->reasons.n > 0) {
    mst_dynbuf_addf(&x.summary, ": %s", m->reasons.v[0].message ? m->reasons.v[0].message : "");
    if (m->reasons.n_total > 1)
      mst_dynbuf_addf(&x.summary, " (and %zu more problems)", m->reasons.n_total - 1);
  }
  if (m->root_causes.n > 0) {
    mst_dynbuf_adds(&x.cause, reason_text(&m->root_causes.v[0]));
    if (m->root_causes.n_total > 1)
      mst_dynbuf_addf(&x.cause, " (and %zu more root causes)", m->root_causes.n_total - 1);
  }
  for (size_t i = 0; i < m->root_causes.n && i < ALERT_REFS_SHOWN; i++) {
    const struct aggr_reason *r = &m->root_causes.v[i];
    struct aggr_reason_ref ref = {r->node, r->component};
    if (i > 0)
      mst_dynbuf_adds(&x.by, ", ");
    refs_text(&x.by, &ref, 1, 1);
  }
  if (m->root_causes.n_total > ALERT_REFS_SHOWN)
    mst_dynbuf_addf(&x.by, " and %zu more", m->root_causes.n_total - ALERT_REFS_SHOWN);
  const char *labels[] = {"alertname", name, "cluster", b->o->cluster, "severity", severity, NULL};
  add_verdict_alert(b, labels, &x, NULL, m->verdict_since_usec);
}

static void add_node_alert(struct builder *b, const struct aggr_model *m,
                           const struct aggr_node *n) {
  const char *name = alerts_of(n->verdict)->node;
  const char *severity = alerts_of(n->verdict)->node_severity;
  if (!name || alert_suppressed(m, n, NULL))
    return;
  struct verdict_texts x = VERDICT_TEXTS_INIT;
  mst_dynbuf_addf(&x.summary, "node %s (%s) is %s", n->id, n->role ? n->role : "no role",
                  mst_verdict_to_string(n->verdict));
  if (n->reasons.n > 0 && n->reasons.v[0].message)
    mst_dynbuf_addf(&x.summary, ": %s", n->reasons.v[0].message);
  if (n->root_causes.n > 0)
    mst_dynbuf_adds(&x.cause, reason_text(&n->root_causes.v[0]));
  /* What its reasons are blocked by, each named once. */
  size_t shown = 0;
  for (size_t i = 0; i < n->reasons.n; i++)
    for (size_t k = 0; k < n->reasons.v[i].n_refs && shown < ALERT_REFS_SHOWN; k++) {
      const struct aggr_reason_ref *ref = &n->reasons.v[i].refs[k];
      bool seen = false;
      for (size_t j = 0; j < i && !seen; j++)
        for (size_t l = 0; l < n->reasons.v[j].n_refs && !seen; l++) {
          const struct aggr_reason_ref *o = &n->reasons.v[j].refs[l];
          seen =
              strcmp(o->node ? o->node : "", ref->node ? ref->node : "") == 0 &&
              strcmp(o->component ? o->component : "", ref->component ? ref->component : "") == 0;
        }
      if (seen)
        continue;
      if (shown++ > 0)
        mst_dynbuf_adds(&x.by, ", ");
      refs_text(&x.by, ref, 1, 1);
    }
  const char *labels[] = {"alertname", name,    "cluster",  b->o->cluster, "node", n->id,
                          "role",      n->role, "severity", severity,      NULL};
  add_verdict_alert(b, labels, &x, n->id, n->verdict_since_usec);
}

/* The root-cause components on node n (each listed by its own node; the
 * nodes it blocks list it too, and are skipped here). A root cause that is
 * the node itself (unreachable, missing, at fault) is the node's alert. */
static void add_component_alerts(struct builder *b, const struct aggr_model *m,
                                 const struct aggr_node *n) {
  for (size_t i = 0; i < n->root_causes.n; i++) {
    const struct aggr_reason *r = &n->root_causes.v[i];
    if (!r->component || !r->node || strcmp(r->node, n->id) != 0 ||
        alert_suppressed(m, n, r->component))
      continue;
    bool late = r->state && strcmp(r->state, "late") == 0;
    const struct aggr_component *c = aggr_node_find_component(n, r->component);
    uint64_t since_usec = c ? c->since_usec : n->verdict_since_usec;
    struct mst_dynbuf blocks = MST_DYNBUF_INIT(ALERT_TEXT_MAX);
    char since[MST_RFC3339_MAX];
    refs_text(&blocks, r->refs, r->n_refs, r->n_refs_total);
    const char *labels[] = {"alertname", late ? "MusterComponentLate" : "MusterComponentFailed",
                            "cluster",   b->o->cluster,
                            "component", r->component,
                            "node",      n->id,
                            "role",      n->role,
                            "severity",  late ? "warning" : "critical",
                            NULL};
    const char *annotations[] = {
        "summary",    reason_text(r),
        "root_cause", r->message,
        "blocks",     blocks.buf,
        "state",      r->state,
        "since",      mst_time_format_rfc3339(since_usec, since, sizeof(since)),
        NULL};
    if (blocks.error)
      b->error = -ENOMEM;
    else
      add_alert(b, labels, annotations, n->id, false, since_usec);
    mst_dynbuf_reset(&blocks);
  }
}

static int alert_cmp(const void *a, const void *b) {
  return strcmp(((const struct aggr_alert *)a)->key, ((const struct aggr_alert *)b)->key);
}

int aggr_alerts_build(const struct aggr_model *m, const struct aggr_alert_options *o,
                      struct aggr_alert_set *ret) {
  struct aggr_alert_set set = {0};
  struct builder b = {.o = o, .set = &set};

  *ret = (struct aggr_alert_set){0};
  add_cluster_alert(&b, m);
  for (size_t i = 0; i < m->n_nodes && !b.error; i++) {
    const struct aggr_node *n = m->nodes[i];
    if (n->verdict == MST_VERDICT_HEALTHY)
      continue;
    add_node_alert(&b, m, n);
    add_component_alerts(&b, m, n);
  }
  if (b.error) {
    aggr_alert_set_done(&set);
    return b.error;
  }
  if (set.n > 1)
    qsort(set.v, set.n, sizeof(*set.v), alert_cmp);
  *ret = set;
  return 0;
}

/* FNV-1a, 64 bits, over s and its NUL (so "ab","c" differs from "a","bc"). */
static uint64_t digest_add(uint64_t h, const char *s) {
  for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++)
    h = (h ^ *p) * 0x100000001b3ULL;
  return (h ^ 0xff) * 0x100000001b3ULL;
}

static uint64_t digest_u64(uint64_t h, uint64_t v) {
  for (int i = 0; i < 8; i++, v >>= 8)
    h = (h ^ (v & 0xff)) * 0x100000001b3ULL;
  return h;
}

static uint64_t digest_reasons(uint64_t h, const struct aggr_reasons *rs) {
  h = digest_u64(h, rs->n_total);
  for (size_t i = 0; i < rs->n; i++) {
    const struct aggr_reason *r = &rs->v[i];
    h = digest_add(digest_add(digest_add(h, r->node), r->component), r->state);
    h = digest_add(digest_add(h, r->message), r->summary);
    h = digest_u64(h, r->n_refs_total);
    for (size_t k = 0; k < r->n_refs; k++)
      h = digest_add(digest_add(h, r->refs[k].node), r->refs[k].component);
  }
  return h;
}

uint64_t aggr_alerts_digest(const struct aggr_model *m) {
  uint64_t h = 0xcbf29ce484222325ULL;
  h = digest_u64(digest_u64(h, (uint64_t)m->verdict), m->verdict_since_usec);
  h = digest_reasons(digest_reasons(h, &m->reasons), &m->root_causes);
  for (size_t i = 0; i < m->n_nodes; i++) {
    const struct aggr_node *n = m->nodes[i];
    if (n->verdict == MST_VERDICT_HEALTHY)
      continue;
    h = digest_add(digest_add(h, n->id), n->role);
    h = digest_u64(digest_u64(h, (uint64_t)n->verdict), n->verdict_since_usec);
    h = digest_reasons(digest_reasons(h, &n->reasons), &n->root_causes);
    for (size_t k = 0; k < n->root_causes.n; k++) {
      const struct aggr_component *c =
          n->root_causes.v[k].component ? aggr_node_find_component(n, n->root_causes.v[k].component)
                                        : NULL;
      h = digest_u64(h, c ? c->since_usec : 0);
    }
  }
  return h;
}
