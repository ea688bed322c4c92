/* What DC/OS shows of one node, built by the loop when it renders the
 * node's bodies and carried in the published view (view.h); and the types
 * the readers' index of units across the nodes is made of (dcos.c). The
 * loop builds and references these; HTTP threads only read them, through
 * the view they hold. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct aggr_model;
struct aggr_node;

/* One component of a node, as a DC/OS unit on that node. */
struct dcos_unit_on {
  const char *id, *name, *description, *output;
  int health;
  unsigned order; /* the component's place on the node */
};

struct aggr_dcos_node {
  unsigned refs; /* views holding it (loop thread only) */
  const char *ip, *role, *host;
  int health;  /* 3: unreachable or never seen, and then no units (DC/OS has none to show) */
  bool leader; /* the Mesos leader, as /report's Leader */
  /* What the agent reports ("": not known): /report's MesosID, the local
   * route's mesos_id and dcos_version. */
  const char *mesos_id, *dcos_version;
  size_t n_units;
  struct dcos_unit_on units[]; /* sorted by id, then order; the strings follow */
};

/* A unit across the nodes: where on[] lists it. */
struct dcos_unit {
  const char *id, *name, *description; /* those of the first component found for it */
  int health;                          /* max over its nodes */
  size_t first, n;                     /* its run in aggr_dcos_units.on */
};

struct dcos_on {
  const struct aggr_dcos_node *node;
  const struct dcos_unit_on *u;
};

/* A view's units, built from its nodes on first need (units_of). */
struct aggr_dcos_units {
  struct dcos_unit *v; /* sorted by id */
  size_t n;
  struct dcos_on *on; /* each unit's nodes in node order */
};

/* Loop thread: what DC/OS shows of node n (its health, and each component
 * as a unit), immutable, with one reference. NULL on ENOMEM. */
struct aggr_dcos_node *aggr_dcos_node_new(const struct aggr_model *m, const struct aggr_node *n);
/* Loop thread (references are counted by the views that hold it). */
struct aggr_dcos_node *aggr_dcos_node_ref(struct aggr_dcos_node *d);
/* Loop thread. Accepts NULL. */
void aggr_dcos_node_unref(struct aggr_dcos_node *d);

/* Frees a view's unit index, with the view. Accepts NULL. */
void aggr_dcos_units_free(struct aggr_dcos_units *u);
