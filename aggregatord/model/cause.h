/* Root causes across the cluster's dependency graph.
 *
 * The vertices are what is not up: the components of reported, speaking
 * nodes that are neither healthy nor warning (milestones only while their
 * stage is late), and the nodes themselves when they are unreachable, when
 * their agent reports a fault (it cannot record its state) or, as expected
 * masters, missing. Some of them are problems: a component that is
 * unhealthy or unknown, one of a late stage, and every node vertex.
 *
 * A component depends on
 *   - every component and milestone of the stages its stage comes after,
 *     transitively, on the same node (the profile's "after");
 *   - for each "requires" condition of its stage or of those stages that
 *     does not hold right now, the stage it names and the stages before it
 *     on every node of the required role (or that node itself when it is
 *     unreachable, at fault or missing). "Right now" means reached in the
 *     node's current boot, speaking, without a fault, and no component of the stage or of the
 *     stages before it failing: a condition met once during startup can
 *     stop holding later, and then what depends on it is blocked.
 * systemd's own Requires=/After= between units are not on the wire and are
 * not part of the graph.
 *
 * The root causes are the problems that reach no other problem through
 * their dependencies. Every other vertex that reaches a problem is blocked
 * by the root causes it reaches (a problem inside a dependency cycle that
 * reaches no root is a root itself).
 *
 * Threads: the loop thread, on the live model, after aggr_stage_evaluate()
 * and after evaluation counted every node's components that are down and
 * failing (aggr_node.n_down, n_failing: nodes with none are not walked).
 * It reads the container (model.h) and the stage engine's graphs; it calls
 * nothing of evaluation (evaluate.c drives it). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aggr_model;
struct aggr_node;
struct aggr_component;

struct aggr_cause_vertex {
  struct aggr_node *node;
  size_t node_index;                 /* in the model's node array */
  const struct aggr_component *comp; /* NULL: the node itself */
  bool problem;
  bool late;         /* a component of a stage that is late */
  size_t late_stage; /* when late: the stage's index in the node's profile */
  bool root;
  size_t *roots; /* not a root: the roots it is blocked by, in vertex order */
  size_t n_roots;
  size_t *via; /* not a root: the other problems on its way to them */
  size_t n_via;
  size_t *blocked; /* a root: the vertices it blocks, in vertex order */
  size_t n_blocked;
};

struct aggr_cause {
  struct aggr_cause_vertex *v; /* grouped by node, nodes in model order, then
                                * in the order of the node's components */
  size_t n;
  size_t *first; /* per node index: its first vertex */
  size_t *count; /* per node index: how many */
};

/* Builds the graph of m at now and finds roots and blocked vertices. When
 * nothing is a problem, nothing is blocked: *ret is then left empty (no
 * vertices). Returns 0 or -ENOMEM (then *ret is empty too). */
int aggr_cause_analyze(const struct aggr_model *m, uint64_t now_usec, struct aggr_cause *ret);
void aggr_cause_done(struct aggr_cause *c);

/* The vertex of the node at node_index for component (NULL: the node
 * vertex), or SIZE_MAX. */
size_t aggr_cause_find(const struct aggr_cause *c, size_t node_index, const char *component);
