/* The verdict rules of mst/verdict.h as pure functions over facts the
 * aggregator gathers, so that every row of the rule tables is unit-tested
 * without a live model. Also the names and musterctl exit codes. */
#include "mst/macro.h"
#include "mst/str.h"
#include "mst/verdict.h"

static const char *const verdict_names[_MST_VERDICT_MAX] = {
    [MST_VERDICT_UNKNOWN] = "unknown",
    [MST_VERDICT_HEALTHY] = "healthy",
    [MST_VERDICT_DEGRADED] = "degraded",
    [MST_VERDICT_STARTING] = "starting",
    [MST_VERDICT_LATE] = "late",
    [MST_VERDICT_UNHEALTHY] = "unhealthy",
    [MST_VERDICT_UNREACHABLE] = "unreachable",
    [MST_VERDICT_MISSING] = "missing",
    [MST_VERDICT_MAINTENANCE] = "maintenance",
};

const char *mst_verdict_to_string(enum mst_verdict v) {
  if ((unsigned)v >= _MST_VERDICT_MAX)
    return NULL;
  return verdict_names[v];
}

const char *mst_verdict_name(int v) {
  const char *name = mst_verdict_to_string((enum mst_verdict)v);
  return name ? name : verdict_names[MST_VERDICT_UNKNOWN];
}

int mst_verdict_from_string(const char *s) {
  return mst_str_table_find(verdict_names, _MST_VERDICT_MAX, s);
}

int mst_verdict_exit_code(enum mst_verdict v) {
  switch (v) {
  case MST_VERDICT_HEALTHY:
    return 0;
  case MST_VERDICT_DEGRADED:
  case MST_VERDICT_STARTING:
  case MST_VERDICT_MAINTENANCE:
    return 1;
  case MST_VERDICT_UNHEALTHY:
  case MST_VERDICT_LATE:
    return 2;
  default:
    return 3;
  }
}

enum mst_verdict mst_node_verdict(const struct mst_node_facts *f) {
  /* An operator said so: what the node does meanwhile (reboot, silence) is
   * expected. */
  if (f->maintenance)
    return MST_VERDICT_MAINTENANCE;
  if (f->silent)
    return MST_VERDICT_UNREACHABLE;
  /* Whatever the components say is what the agent could last record. */
  if (f->fault)
    return MST_VERDICT_UNHEALTHY;
  if (f->n_unhealthy > 0 || f->n_unknown > 0)
    return MST_VERDICT_UNHEALTHY;
  if (f->late)
    return MST_VERDICT_LATE;
  if (f->n_starting > 0 || !f->have_snapshot)
    return MST_VERDICT_STARTING;
  /* A closed stream is at least a warning until the silence turns it
   * unreachable: a healthy node must not look plainly healthy then. */
  if (f->n_warning > 0 || f->disconnected)
    return MST_VERDICT_DEGRADED;
  /* A component in maintenance is worth seeing, never worse. */
  if (f->n_maintenance > 0)
    return MST_VERDICT_DEGRADED;
  return MST_VERDICT_HEALTHY;
}

/* A master verdict that is not one a node can have counts as a failure. */
static bool master_failed(enum mst_verdict v) {
  return !(v == MST_VERDICT_HEALTHY || v == MST_VERDICT_DEGRADED || v == MST_VERDICT_STARTING);
}

enum mst_verdict mst_cluster_verdict(const struct mst_cluster_facts *f) {
  bool master_starting = false, master_degraded = false;
  bool other_starting = false, other_problem = false;

  if (!f->have_leader || !f->have_data)
    return MST_VERDICT_UNKNOWN;

  for (size_t i = 0; i < f->n_masters; i++) {
    /* A master in maintenance is planned: degraded, never unhealthy. */
    if (f->masters[i] == MST_VERDICT_MAINTENANCE) {
      master_degraded = true;
      continue;
    }
    if (master_failed(f->masters[i]))
      return MST_VERDICT_UNHEALTHY;
    if (f->masters[i] == MST_VERDICT_STARTING)
      master_starting = true;
    else if (f->masters[i] == MST_VERDICT_DEGRADED)
      master_degraded = true;
  }
  if (master_starting)
    return MST_VERDICT_STARTING;

  for (size_t i = 0; i < f->n_others; i++) {
    if (f->others[i] == MST_VERDICT_STARTING)
      other_starting = true;
    else if (f->others[i] != MST_VERDICT_HEALTHY)
      other_problem = true; /* unhealthy, unreachable, late, degraded, ... */
  }

  /* Every master healthy and the only non-healthy nodes are starting. */
  if (!master_degraded && !other_problem && other_starting)
    return MST_VERDICT_STARTING;
  if (master_degraded || other_problem)
    return MST_VERDICT_DEGRADED;
  return MST_VERDICT_HEALTHY;
}
