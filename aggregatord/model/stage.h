/* The stage engine: how far each node has come through its role's startup
 * stages in its current boot, and how long the rest should take.
 *
 * Per node and per boot (a new boot id starts over), every stage of the
 * role's profile is
 *   pending      not startable yet: a stage it comes "after" is not done, or
 *                a "requires" condition on other nodes does not hold;
 *   in_progress  startable, not done yet;
 *   late         in progress for longer than the p95 of earlier boots (plus a
 *                tolerance of one check interval, at least 1 s);
 *   done         reached: the first time in this boot that the stage was
 *                startable and all its components and milestones were up
 *                (healthy, or warning). Sticky for the rest of the boot;
 *   failed       a component of the stage (not a milestone) is unhealthy or
 *                unknown now while the stage is done or startable: it broke
 *                after having been up, or it never came up within the
 *                startup grace (the agent only then reports it unhealthy).
 * Component states older than the boot (what the agent remembered from
 * before a reboot) count only once they have stood for one check period
 * after the agent's first snapshot of the boot.
 *
 * A stage's duration runs from when it became startable (boot, the "after"
 * stages reached, the "requires" condition met, whichever is last) to when it
 * was reached. Durations of earlier boots, per role and stage, give the p50
 * used for the estimate (eta: p50 along the remaining critical path) and the
 * p95 used for lateness: a boot's durations are learned when it is over
 * (the node booted again), so that a node is never judged by its own boot,
 * nor by its peers' boots still under way. The aggregator stores every
 * completion (aggr_stage_take_completions) and learns them again at start
 * (aggr_stage_restore).
 *
 * "requires" conditions: ROLE:STAGE holds when some node of ROLE has reached
 * STAGE in its current boot; @quorum when a majority has; @all when every
 * one has. The nodes of a role are the expected masters for role "master"
 * when expected masters are configured, otherwise the nodes of that role
 * that have reported.
 *
 * A node's stage waited on that is pending only because a "requires" does
 * not hold waits for other nodes: the engine names them in
 * aggr_node.waiting_for, as the (node, component) pairs in the way (on each
 * node of the role that has not reached the required stage, its members not
 * up; else those of the stages before it; else the node itself).
 *
 * The engine's own state (struct aggr_stage: the graphs, what was learned,
 * the completions not yet stored) is held next to the model, not in it;
 * each node's progress hangs on the node (aggr_node.startup), where the
 * views read it. The engine reads the container (model.h) and calls nothing
 * of evaluation: evaluate.c drives it.
 *
 * Threads: everything here runs on the loop thread, on the live model. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mst/profile.h"

struct aggr_model;

/* Fewer samples than this and nothing is estimated or late. */
#define AGGR_STAGE_MIN_SAMPLES 2
/* Samples kept per role and stage: the most recent boots. */
#define AGGR_STAGE_SAMPLES_MAX 128
/* The least tolerance past p95 before a stage is late. */
#define AGGR_STAGE_LATE_TOLERANCE_USEC (1000000ULL)

enum aggr_stage_state {
  AGGR_STAGE_PENDING,
  AGGR_STAGE_IN_PROGRESS,
  AGGR_STAGE_DONE,
  AGGR_STAGE_FAILED,
  AGGR_STAGE_LATE,
};

const char *aggr_stage_state_to_string(enum aggr_stage_state s);

/* The learned durations of one stage of one role. */
struct aggr_stage_samples {
  char *role;
  char *stage;
  uint64_t v[AGGR_STAGE_SAMPLES_MAX]; /* a ring: the last AGGR_STAGE_SAMPLES_MAX */
  size_t n, next;
  uint64_t p50_usec, p95_usec; /* nearest rank; valid when n >= AGGR_STAGE_MIN_SAMPLES */
};

struct aggr_stage_history {
  struct aggr_stage_samples **v; /* each allocated alone: pointers stay valid */
  size_t n;
};

/* A parsed "requires" entry. */
enum aggr_requirement_mode {
  AGGR_REQUIRE_ANY,
  AGGR_REQUIRE_QUORUM,
  AGGR_REQUIRE_ALL,
};

struct aggr_requirement {
  char *text; /* as written: "master:mesos-master@quorum" */
  char *role;
  char *stage;
  enum aggr_requirement_mode mode;
};

/* A profile's stage graph, resolved once: indices instead of names. */
struct aggr_stage_node {
  size_t *after; /* direct "after" stages */
  size_t n_after;
  size_t *upstream; /* every stage it comes after, transitively */
  size_t n_upstream;
  struct aggr_requirement *requires;
  size_t n_requires;
  uint64_t tolerance_usec; /* past p95 by more than this is late */
};

struct aggr_stage_graph {
  const struct mst_profile *profile;
  struct aggr_stage_node *stages; /* profile->n_stages */
  bool has_requires;              /* some stage requires something of other nodes */
  char **milestone_only;          /* sorted: names that are milestones and never components,
                                   * and the leader component */
  size_t n_milestone_only;
};

struct aggr_stage_graphs {
  struct aggr_stage_graph **v;
  size_t n;
};

/* One stage of a node's current boot. */
struct aggr_stage_progress {
  enum aggr_stage_state state;
  bool startable;        /* its after stages are reached and its requires hold */
  uint64_t started_usec; /* when it became startable; 0 while not */
  uint64_t reached_usec; /* when it was reached in this boot; 0 while not */
  uint64_t late_at_usec; /* in progress, with a learned p95: when it turns late; else 0 */
  const struct aggr_stage_samples *learned; /* its role's samples; never NULL once set up */
};

/* A node's progress in its current boot. One allocation, stages[] and the
 * boot id following the struct, so that the node holding it frees it with
 * free() (model.c) without calling back into the engine. */
struct aggr_startup {
  const struct mst_profile *profile;    /* its role's profile */
  const struct aggr_stage_graph *graph; /* that profile's graph */
  char *boot_id;                        /* NULL until known */
  uint64_t boot_usec;                   /* realtime the boot began; 0 unknown */
  struct aggr_stage_progress *stages;   /* profile->n_stages */
  size_t n_reached;
  size_t waiting;     /* the stage waited on, or n_stages when none */
  bool late;          /* some stage in progress is late */
  uint64_t done_usec; /* every stage reached: the last reach; else 0 */
  /* The estimate of the time left: eta_seconds = max(floor, deadline - now),
   * rounded up to whole seconds. With every stage reached it is 0. */
  bool eta_known;
  uint64_t eta_deadline_usec; /* 0: the floor alone */
  uint64_t eta_floor_usec;    /* what remains once the stages in progress are due */
  uint64_t next_usec;         /* the next time lateness can change, or UINT64_MAX */
  uint64_t snapshot_usec;     /* first evaluation with the agent's snapshot of this boot */
  uint64_t confirm_usec;      /* when a state carried over from before the boot stands */
  bool evaluated;             /* settled at least once */
};

/* A stage reached, to be stored (writer job) by the caller. */
struct aggr_stage_completion {
  char *node_id;
  char *role;
  char *boot_id;
  char *stage;
  uint64_t reached_usec;
  uint64_t duration_usec;
};

/* The stage engine's state: each profile's graph, the durations learned per
 * role and stage, and the completions not yet taken. A zeroed struct is an
 * empty engine; aggr_stage_done() frees what it holds. The nodes' startups
 * point into it (graph, learned): it outlives the evaluations of the model. */
struct aggr_stage {
  struct aggr_stage_graphs graphs;
  struct aggr_stage_history history;
  struct aggr_stage_completion *completions;
  size_t n_completions;
};

void aggr_stage_done(struct aggr_stage *st);

/* Updates the startup of every node of m at now (realtime): stages reached,
 * states, waiting stage, lateness, estimate. Queues the completions of
 * stages reached in this call on st (aggr_stage_take_completions); learns
 * the durations of boots that ended. Marks nodes whose startup changed
 * dirty. Returns 0 or -ENOMEM (then some nodes are left as they were). */
int aggr_stage_evaluate(struct aggr_stage *st, struct aggr_model *m, uint64_t now_usec);

/* Hands over the stage completions queued by evaluations since the last
 * call (the caller stores them; free with aggr_stage_completions_free()).
 * Returns NULL with *ret_n 0 when there are none. */
struct aggr_stage_completion *aggr_stage_take_completions(struct aggr_stage *st, size_t *ret_n);

/* The graph of profile p, built on first use and kept in gs. NULL on ENOMEM. */
const struct aggr_stage_graph *aggr_stage_graph_get(struct aggr_stage_graphs *gs,
                                                    const struct mst_profile *p);
void aggr_stage_graphs_done(struct aggr_stage_graphs *gs);

/* Learns one duration. Returns 0 or -ENOMEM. */
int aggr_stage_history_add(struct aggr_stage_history *h, const char *role, const char *stage,
                           uint64_t duration_usec);
/* The samples of (role, stage), created empty when absent; NULL on ENOMEM. */
struct aggr_stage_samples *aggr_stage_history_get(struct aggr_stage_history *h, const char *role,
                                                  const char *stage);
void aggr_stage_history_done(struct aggr_stage_history *h);

/* True once enough samples were learned for s to estimate and be late. */
static inline bool aggr_stage_samples_known(const struct aggr_stage_samples *s) {
  return s && s->n >= AGGR_STAGE_MIN_SAMPLES;
}

/* The estimate in whole seconds at now (rounded up). Requires eta_known. */
uint64_t aggr_startup_eta_seconds(const struct aggr_startup *s, uint64_t now_usec);

/* True when component is listed as a milestone of some stage of g's profile
 * and as a component of none: it counts for progress only, not for health.
 * Also true for the profile's leader_component, which counts for neither. */
bool aggr_stage_milestone_only(const struct aggr_stage_graph *g, const char *component);

/* At start, before the first evaluation: one stored completion, oldest
 * first. A completion of the node's latest boot seen so far marks the stage
 * reached in that boot's startup, so that the boot goes on where it was and
 * is not counted again when its agent returns; those of earlier boots (and
 * of unknown nodes, or roles without a profile) are learned as durations.
 * Returns 0 or -ENOMEM. */
int aggr_stage_restore(struct aggr_stage *st, struct aggr_model *m, const char *node_id,
                       const char *role, const char *boot_id, uint64_t boot_usec, const char *stage,
                       uint64_t reached_usec, uint64_t duration_usec);

/* The stage's index in p, or SIZE_MAX. */
size_t aggr_stage_index(const struct mst_profile *p, const char *name);

void aggr_stage_completions_free(struct aggr_stage_completion *c, size_t n);
