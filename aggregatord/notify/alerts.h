/* The alerts the leader notifies Alertmanager of, derived from the live
 * model (model.h) on the loop thread at each publish.
 *
 * An alert is what Alertmanager's API v2 takes (POST /api/v2/alerts): a set
 * of labels, which is its identity (Alertmanager deduplicates and groups by
 * them), annotations, when it began and a link. The set holds, while they
 * last:
 *   - the cluster verdict when it is not healthy: one alert named by the
 *     verdict (MusterClusterUnhealthy, ...Degraded, ...Starting, ...Unknown);
 *   - each node that is unhealthy, unreachable, late or missing
 *     (MusterNodeUnhealthy, ...Unreachable, ...Late, ...Missing);
 *   - each root-cause component (MusterComponentFailed, or
 *     MusterComponentLate for a component of a late stage).
 * docs/alerting.md lists the labels, severities and annotations. What is
 * in maintenance or acknowledged (issue 19) is left out. The set is sorted
 * by key and holds at most max alerts: the rest are counted as dropped. */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct aggr_model;

struct aggr_alert {
  char *key;            /* the labels as name=value lines: the alert's identity */
  json_t *labels;       /* an object of strings, owned */
  json_t *annotations;  /* an object of strings, owned */
  char *link;           /* generatorURL: the dashboard, or NULL without external_url */
  uint64_t starts_usec; /* realtime: when the condition began */
};

struct aggr_alert_set {
  struct aggr_alert *v; /* sorted by key */
  size_t n;
  size_t n_dropped; /* alerts past the cap, left out */
};

struct aggr_alert_options {
  const char *cluster;      /* [aggregator] cluster */
  const char *external_url; /* [alertmanager] external_url, or NULL */
  size_t max;               /* [alertmanager] max_alerts */
};

/* Loop thread. Fills *ret with the alerts model m calls for now (an empty
 * set when the cluster is healthy). Returns 0, or -ENOMEM with *ret
 * empty. The caller owns the set: aggr_alert_set_done(). */
int aggr_alerts_build(const struct aggr_model *m, const struct aggr_alert_options *o,
                      struct aggr_alert_set *ret);

/* A digest of what the alerts of m would say: when it is the same as at
 * the last build, the set is the same and need not be built again. */
uint64_t aggr_alerts_digest(const struct aggr_model *m);

void aggr_alert_done(struct aggr_alert *a);
void aggr_alert_set_done(struct aggr_alert_set *s);
