/* Verdict rules, as pure functions: a node's verdict from the states of its
 * components, and the cluster's verdict from its nodes' verdicts. The
 * aggregator gathers the facts from its live model; the rules live here so
 * that they are tested on their own (tests/unit/test_verdict.c).
 *
 * Node verdicts (first that applies):
 *   unreachable  the agent has been silent longer than the stale timeout
 *   unhealthy    the agent reports a fault: it cannot record or send its
 *                state, so its components' states are not the truth
 *   unhealthy    some component is unhealthy or unknown
 *   late         still starting, past the p95 of earlier boots (issue 5)
 *   starting     some component is starting, or no snapshot has arrived yet
 *   degraded     the only problems are warnings, or the agent's stream is
 *                closed but the stale timeout has not passed yet
 *                (disconnected)
 *   healthy      every component is healthy (or the node has none)
 * Operator state (issue 19) comes first and last:
 *   maintenance  the node is in maintenance (before every rule above: a node
 *                rebooting or silent in maintenance is not unreachable)
 *   degraded     a component in maintenance counts as a warning, whatever
 *                its state (it is left out of the counts above); an
 *                acknowledged component counts as what its state is
 *
 * Cluster verdicts (first that applies):
 *   unknown    no leader, or no data yet (no node has ever reported)
 *   unhealthy  some expected master is missing, unhealthy, unreachable or late
 *   starting   some expected master is starting; or every expected master is
 *              healthy and every node that is not healthy is starting
 *   degraded   every expected master is healthy or degraded, and some node is
 *              unhealthy, unreachable, late or degraded
 *   healthy    every expected master and every other node is healthy
 * "Expected masters" are the configured ones; with none configured, every node
 * of role master that has reported. A master that never reported is missing
 * once the first-contact window after the first report has passed, and
 * starting within it (the aggregator decides which, evaluate.c).
 * A node in maintenance, master or not, counts as degraded here: it never
 * makes the cluster unhealthy (nor starting), and never leaves it healthy;
 * the cluster's reasons name it. The cluster itself is never "maintenance". */
#pragma once

#include <stdbool.h>
#include <stddef.h>

enum mst_verdict {
  MST_VERDICT_UNKNOWN = 0,
  MST_VERDICT_HEALTHY,
  MST_VERDICT_DEGRADED,
  MST_VERDICT_STARTING,
  MST_VERDICT_LATE,
  MST_VERDICT_UNHEALTHY,
  MST_VERDICT_UNREACHABLE,
  MST_VERDICT_MISSING,     /* only for an expected master that never reported */
  MST_VERDICT_MAINTENANCE, /* a node an operator put in maintenance (issue 19) */
  _MST_VERDICT_MAX,
};

const char *mst_verdict_to_string(enum mst_verdict v);
/* Never NULL: "unknown" for anything that is no verdict. */
const char *mst_verdict_name(int v);
int mst_verdict_from_string(const char *s);

/* The exit code musterctl uses: 0 healthy, 1 degraded or starting,
 * 2 unhealthy or late, 3 unknown, unreachable or missing; a node in
 * maintenance 1. */
int mst_verdict_exit_code(enum mst_verdict v);

struct mst_node_facts {
  bool silent;        /* silent past the stale timeout */
  bool have_snapshot; /* the live model has the agent's components */
  bool late;          /* past p95 of the stage it waits on (issue 5) */
  size_t n_healthy, n_warning, n_starting, n_unhealthy, n_unknown;
  bool disconnected;    /* no stream, not yet silent past the stale timeout */
  bool fault;           /* the agent cannot record or send its state (Heartbeat.fault) */
  bool maintenance;     /* the node is in maintenance */
  size_t n_maintenance; /* components in maintenance, left out of the counts above */
};

enum mst_verdict mst_node_verdict(const struct mst_node_facts *f);

struct mst_cluster_facts {
  bool have_leader;
  bool have_data;                  /* some node has ever reported */
  const enum mst_verdict *masters; /* one per expected master; MISSING if never seen */
  size_t n_masters;
  const enum mst_verdict *others; /* every node that is not an expected master */
  size_t n_others;
};

enum mst_verdict mst_cluster_verdict(const struct mst_cluster_facts *f);
