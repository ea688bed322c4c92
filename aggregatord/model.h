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

struct aggr_conn;

struct aggr_component {
  char *name;
  enum mst_check_kind check;
  enum mst_state state;
  uint64_t since_usec; /* realtime of the last state change */
  char *output;
  unsigned health, rise, fall;
};

/* One reason for a verdict that is not healthy, such as
 * "m1: component mesos-master is unhealthy: exit code 2". */
struct aggr_reason {
  char *node;      /* NULL for cluster-wide reasons */
  char *component; /* NULL when the reason is the node itself */
  char *state;     /* component state or node verdict, as a string */
  char *message;
};

struct aggr_reasons {
  struct aggr_reason *v;
  size_t n;
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

  /* Derived by aggr_model_evaluate(). */
  enum mst_verdict verdict;
  uint64_t verdict_since_usec;
  struct aggr_reasons reasons;     /* why the verdict is not healthy */
  struct aggr_reasons root_causes; /* the components at the root */

  uint64_t index; /* model index at which this node's rendering last changed */
  bool dirty;     /* changed since the last publish */
};

struct aggr_model {
  struct aggr_node **nodes; /* sorted by id */
  size_t n_nodes;

  const struct mst_profile_set *profiles; /* borrowed */
  uint64_t stale_timeout_usec;

  /* Derived by aggr_model_evaluate(). */
  enum mst_verdict verdict;
  uint64_t verdict_since_usec;
  struct aggr_reasons reasons;
  struct aggr_reasons root_causes;

  bool have_leader;
  char *leader_id;
  uint64_t epoch;
};

/* expected_masters: NULL-terminated list of node ids that must exist. They
 * are created as never-reported nodes of role "master". */
int aggr_model_init(struct aggr_model *m, const struct mst_profile_set *profiles,
                    char *const *expected_masters, uint64_t stale_timeout_usec);
void aggr_model_done(struct aggr_model *m);

/* Returns the node, or NULL. */
struct aggr_node *aggr_model_find(const struct aggr_model *m, const char *id);
/* Returns the node, creating it (sorted in) when absent; NULL on ENOMEM. */
struct aggr_node *aggr_model_get(struct aggr_model *m, const char *id);

struct aggr_component *aggr_node_find_component(const struct aggr_node *n, const char *name);
/* Finds or appends a component; NULL on ENOMEM. */
struct aggr_component *aggr_node_get_component(struct aggr_node *n, const char *name);
/* Removes every component whose keep[] entry is false (snapshot reconcile). */
void aggr_node_retain_components(struct aggr_node *n, const bool *keep);

/* Recomputes every node verdict and the cluster verdict with their reasons
 * and root causes, at realtime now. Marks nodes whose verdict changed dirty.
 * Returns true when the cluster verdict changed (the caller records it). */
bool aggr_model_evaluate(struct aggr_model *m, uint64_t now_usec);

/* The earliest realtime at which some connected-or-not node turns
 * unreachable, or UINT64_MAX when none will. The loop arms a timer there. */
uint64_t aggr_model_next_stale_usec(const struct aggr_model *m);

void aggr_reasons_clear(struct aggr_reasons *r);
