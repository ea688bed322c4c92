/* The aggregator's live cluster model. Owned and mutated only by the loop
 * thread; HTTP threads never see it, they read immutable views rendered from
 * it (view.h). The model holds what the agents last reported, plus the
 * verdicts and reasons that aggr_model_evaluate() derives from it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mst/profile.h"
#include "mst/state.h"
#include "mst/verdict.h"
#include "model/stage.h"

struct aggr_conn;

struct aggr_component {
  char *name;
  enum mst_check_kind check;
  enum mst_state state;
  uint64_t since_usec; /* realtime of the last state change */
  char *output;
  unsigned health, rise, fall;
};

/* A (node, component) named by a reason: what a root cause blocks, or what
 * a blocked component is blocked by. component is NULL for a node itself. */
struct aggr_reason_ref {
  char *node;
  char *component;
};

/* One reason for a verdict that is not healthy, such as
 * "m1: component mesos-master is unhealthy: exit code 2". As a root cause,
 * message holds the component's output (or the node's reason), summary the
 * sentence an operator reads ("mesos-master on m2 has been unhealthy since
 * ...; blocked: marathon on m2, mesos-agent on a1..a5") and refs what it
 * blocks. As a reason, refs are the root causes it is blocked by. */
struct aggr_reason {
  char *node;      /* NULL for cluster-wide reasons */
  char *component; /* NULL when the reason is the node itself */
  char *state;     /* component state or node verdict, as a string */
  char *message;
  char *summary; /* root causes only, else NULL */
  struct aggr_reason_ref *refs;
  size_t n_refs;       /* at most AGGR_REFS_MAX */
  size_t n_refs_total; /* how many there are: refs names the first n_refs */
};

/* Bounds that keep a cluster-wide failure (a master down blocking every
 * agent's components, or every component of 10,000 nodes failing at once)
 * from making bodies of hundreds of megabytes: what a reason names, and how
 * many reasons and root causes the cluster lists. Each list keeps its total;
 * the full detail is on each node. */
#define AGGR_REFS_MAX            64
#define AGGR_CLUSTER_REASONS_MAX 100

struct aggr_reasons {
  struct aggr_reason *v;
  size_t n;
  size_t n_total; /* cluster lists: how many there are, of which v holds n */
};

struct aggr_node {
  char *id;
  char *role;
  char *hostname;
  char *boot_id;
  uint64_t boot_time_usec;
  char *profile_digest;
  bool profile_drift;       /* digest differs from the aggregator's profile */
  bool expected_master;     /* listed in expected_masters */
  bool reported;            /* an agent has ever said Hello for it */
  bool have_snapshot;       /* the component list is the agent's truth */
  uint64_t first_seen_usec; /* realtime */
  uint64_t last_seen_usec;  /* realtime of the last frame from its agent */
  struct aggr_conn *conn;   /* the live stream, or NULL */

  struct aggr_component *components;
  size_t n_components;
  /* Finds a component by name without a scan (every change looks one up):
   * open addressing over components[], slot = index + 1, 0 = empty;
   * n_comp_slots is 0 or a power of two at least twice n_components. Kept
   * by model.c. */
  uint32_t *comp_slots;
  size_t n_comp_slots;

  /* Derived by aggr_model_evaluate(). */
  struct aggr_startup *startup; /* this boot's progress (stage.h); NULL without a profile */
  enum mst_verdict verdict;
  uint64_t verdict_since_usec;
  struct aggr_reasons reasons;     /* why the verdict is not healthy */
  struct aggr_reasons root_causes; /* the components at the root */

  uint64_t index; /* model index at which this node's rendering last changed */
  bool dirty;     /* changed since the last publish */

  /* What aggr_model_evaluate() last found of the node itself. It holds
   * until the node is dirty again or its silence turns: a clean node is not
   * derived again (model.c). */
  bool evaluated;   /* derived at least once */
  bool eval_silent; /* silent at that evaluation */
  size_t n_down;    /* components neither healthy nor warning */
  size_t n_failing; /* of those, unhealthy or unknown, counting for health */

  /* This node's lines of /metrics (metrics.c), rendered again only when
   * index moves: its muster_node_verdict line, then its
   * muster_component_state lines. */
  char *metrics_text;
  size_t metrics_verdict_len, metrics_len;
  uint64_t metrics_index;
};

struct aggr_model {
  struct aggr_node **nodes; /* sorted by id */
  size_t n_nodes;

  const struct mst_profile_set *profiles; /* borrowed */
  uint64_t stale_timeout_usec;

  /* The stage engine's state (stage.h): each profile's graph, the durations
   * learned per role and stage, and the completions not yet taken by
   * aggr_model_take_completions(). */
  struct aggr_stage_graphs stage_graphs;
  struct aggr_stage_history stage_history;
  struct aggr_stage_completion *completions;
  size_t n_completions;

  /* Derived by aggr_model_evaluate(). */
  enum mst_verdict verdict;
  uint64_t verdict_since_usec;
  struct aggr_reasons reasons;
  struct aggr_reasons root_causes;
  size_t n_derived;   /* nodes the last evaluation derived again */
  size_t n_explained; /* nodes whose reasons it listed again */

  /* The election's outcome, set by aggr_model_set_leader(). */
  bool is_leader;    /* this aggregator leads (also when standalone) */
  bool have_leader;  /* some leader is known: this one or another */
  char *leader_id;   /* the leader's id, or NULL when unknown */
  char *leader_http; /* host:port of the leader's HTTP API, or NULL when unknown */
  uint64_t epoch;    /* the leader's epoch, when known */
};

/* expected_masters: NULL-terminated list of node ids that must exist. They
 * are created as never-reported nodes of role "master". */
int aggr_model_init(struct aggr_model *m, const struct mst_profile_set *profiles,
                    char *const *expected_masters, uint64_t stale_timeout_usec);
void aggr_model_done(struct aggr_model *m);

/* Loop thread. Records the election's outcome; the model starts with no
 * leader and not leading, so every aggregator, standalone included, calls
 * this before it serves:
 *   - this aggregator leads (standalone too): is_leader, its own id, the
 *     host:port its HTTP API is reachable at (NULL when it has none to
 *     advertise), its epoch;
 *   - another one leads: !is_leader, that one's id, HTTP host:port and epoch
 *     (as read from its znode);
 *   - no leader known (a candidate, ZooKeeper unreachable, stepped down):
 *     !is_leader, NULL, NULL, and the last known epoch or 0.
 * have_leader becomes is_leader || leader_id. A leader_http that is not a
 * plain host:port (empty, no host, or a byte outside [A-Za-z0-9.:_~%[]-])
 * cannot go in a Location header: it is logged and recorded as unknown. A
 * wildcard such as 0.0.0.0:7611 passes but redirects nowhere useful:
 * advertise an address clients can reach.
 *
 * No node body shows the leader, and the health body, /readyz and the
 * follower answers are rendered on every publish, so nothing is marked dirty:
 * the next aggr_view_publish() reflects the change (it publishes a new view
 * even when no body's bytes changed). The cluster verdict depends on
 * have_leader; the evaluate before that publish takes it in.
 *
 * Returns 1 when something changed, 0 when nothing did, or -ENOMEM: then
 * is_leader and epoch are applied all the same (stepping down cannot fail),
 * and the leader's id and HTTP address are recorded as unknown. */
int aggr_model_set_leader(struct aggr_model *m, bool is_leader, const char *leader_id,
                          const char *leader_http, uint64_t epoch);

/* Returns the node, or NULL. */
struct aggr_node *aggr_model_find(const struct aggr_model *m, const char *id);
/* Returns the node, creating it (sorted in) when absent; NULL on ENOMEM. */
struct aggr_node *aggr_model_get(struct aggr_model *m, const char *id);

struct aggr_component *aggr_node_find_component(const struct aggr_node *n, const char *name);
/* Finds or appends a component; NULL on ENOMEM. */
struct aggr_component *aggr_node_get_component(struct aggr_node *n, const char *name);
/* Removes every component whose keep[] entry is false (snapshot reconcile). */
void aggr_node_retain_components(struct aggr_node *n, const bool *keep);

/* Brings every node's startup progress (stage.h), every node verdict and
 * the cluster verdict with their reasons and root causes (cause.h) up to
 * realtime now. Marks nodes whose rendering changed dirty. Queues the stage
 * completions reached (aggr_model_take_completions). Returns true when the
 * cluster verdict changed (the caller records it).
 *
 * The work follows what changed, not the cluster's size: a node is derived
 * again only when it is dirty (the loop marks every change it makes to a
 * node, and the publish that follows every evaluation clears the marks),
 * when its silence turned, or when it has something that is not up, which
 * the cause graph may link to other nodes. A change the loop forgets to
 * mark is therefore not seen: aggr_model_check() finds such omissions. */
bool aggr_model_evaluate(struct aggr_model *m, uint64_t now_usec);

/* Derives every node again at now, as if none had been derived before, and
 * returns how many came out different from what aggr_model_evaluate() left
 * (their verdict, reasons or root causes): 0 when the incremental evaluation
 * missed nothing. Those nodes are corrected and marked dirty; the first one
 * is logged. For tests and debugging (MUSTER_CHECK_EVALUATE=1 runs it after
 * every evaluation): it costs a full walk of the model. */
size_t aggr_model_check(struct aggr_model *m, uint64_t now_usec);

/* The earliest realtime at which a verdict can change by the clock alone:
 * some node turns unreachable, or a stage in progress turns late. UINT64_MAX
 * when nothing will. The loop arms a timer there. */
uint64_t aggr_model_next_stale_usec(const struct aggr_model *m);

/* Whether the node has been silent longer than the stale timeout at now. */
bool aggr_node_silent(const struct aggr_model *m, const struct aggr_node *n, uint64_t now_usec);

/* Hands over the stage completions queued by evaluations since the last
 * call (the caller stores them; free with aggr_stage_completions_free()).
 * Returns NULL with *ret_n 0 when there are none. Loop thread. */
struct aggr_stage_completion *aggr_model_take_completions(struct aggr_model *m, size_t *ret_n);

void aggr_reasons_clear(struct aggr_reasons *r);
