/* A node as DC/OS shows it (dcos_node.h): its health, and its components
 * as units with DC/OS's health ints, in one immutable block. */
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "mst/macro.h"
#include "mst/profile.h"
#include "serve/dcos_node.h"

/* DC/OS's health ints. A warning is not an error (DC/OS has no warning);
 * starting is not healthy, unlike DC/OS, which called activating healthy. */
static int component_health(enum mst_state s) {
  switch (s) {
  case MST_STATE_HEALTHY:
  case MST_STATE_WARNING:
    return 0;
  case MST_STATE_UNKNOWN:
    return 3;
  default:
    return 1;
  }
}

static int node_health(const struct aggr_node *n) {
  /* A silent node in maintenance shows `maintenance` in muster's views;
   * DC/OS has no such health: its pull would fail, so 3. */
  if (n->verdict == MST_VERDICT_UNREACHABLE || n->verdict == MST_VERDICT_MISSING ||
      n->eval_silent || !n->reported)
    return 3;
  for (size_t i = 0; i < n->n_components; i++)
    if (component_health(n->components[i].state) != 0)
      return 1;
  return n->verdict == MST_VERDICT_STARTING ? 1 : 0;
}

/* The DC/OS unit id of a component: its systemd unit when it has one, else
 * the component's own name. */
static const char *unit_id(const struct aggr_model *m, const struct aggr_node *n,
                           const char *component) {
  const struct mst_profile *p = n->role ? mst_profile_set_find(m->profiles, n->role) : NULL;
  const struct mst_component *c = p ? mst_profile_find_component(p, component) : NULL;
  return c && c->unit ? c->unit : component;
}

/* The profile's leader_component says which node leads (Leader in
 * /report); it is no unit: on every master but the leader it fails, which
 * must not make DC/OS's unit health 1 (a wait_for_dcos would never end). */
static bool is_leader_component(const struct aggr_model *m, const struct aggr_node *n,
                                const struct aggr_component *c) {
  const struct mst_profile *p = n->role ? mst_profile_set_find(m->profiles, n->role) : NULL;
  return p && p->leader_component && strcmp(p->leader_component, c->name) == 0;
}

static int unit_on_cmp(const void *a, const void *b) {
  const struct dcos_unit_on *x = a, *y = b;
  int c = strcmp(x->id, y->id);
  return c ? c : x->order < y->order ? -1 : x->order > y->order;
}

/* Copies s to *at and moves *at past it. */
static const char *pack(char **at, const char *s) {
  size_t len = strlen(s) + 1;
  const char *copy = memcpy(*at, s, len);
  *at += len;
  return copy;
}

struct aggr_dcos_node *aggr_dcos_node_new(const struct aggr_model *m, const struct aggr_node *n) {
  const char *role = n->role ? n->role : "", *host = n->hostname ? n->hostname : "";
  const char *mesos_id = n->mesos_id ? n->mesos_id : "";
  const char *version = n->dcos_version ? n->dcos_version : "";
  int health = node_health(n);
  /* An unreachable or never seen node shows no units: DC/OS knows none
   * (its pull failed), and leaves it out of every unit's node list, so a
   * unit's health comes from the nodes that report. */
  size_t n_units = 0;
  size_t size = sizeof(struct aggr_dcos_node) + strlen(n->id) + strlen(role) + strlen(host) +
                strlen(mesos_id) + strlen(version) + 5;
  for (size_t k = 0; health != 3 && k < n->n_components; k++) {
    const struct aggr_component *c = &n->components[k];
    if (is_leader_component(m, n, c))
      continue;
    n_units++;
    size += sizeof(struct dcos_unit_on);
    /* The id, the name (the display name, else the id again), the
     * description and the output. */
    size += 2 * strlen(unit_id(m, n, c->name)) + (c->display_name ? strlen(c->display_name) : 0) +
            (c->description ? strlen(c->description) : 0) + strlen(c->output ? c->output : "") + 4;
  }
  /* One block: the node, its units, then every string. */
  struct aggr_dcos_node *d = malloc(size);
  if (!d)
    return NULL;
  char *at = (char *)&d->units[n_units];
  d->refs = 1;
  d->ip = pack(&at, n->id);
  d->role = pack(&at, role);
  d->host = pack(&at, host);
  d->mesos_id = pack(&at, mesos_id);
  d->dcos_version = pack(&at, version);
  d->health = health;
  /* The Mesos leader, as the node's profile's leader_component says
   * (evaluate.c); false for every node of a profile without one. */
  d->leader = health != 3 && n->dcos_leader;
  d->n_units = n_units;
  for (size_t k = 0, i = 0; i < n_units; k++) {
    const struct aggr_component *c = &n->components[k];
    if (is_leader_component(m, n, c))
      continue;
    struct dcos_unit_on *u = &d->units[i++];
    /* The agent sends DC/OS's halves of a systemd Description= ("Mesos
     * Master: distributed systems kernel") as they are, or the profile's
     * name and description; without a name DC/OS shows the unit id. */
    u->id = pack(&at, unit_id(m, n, c->name));
    u->name = pack(&at, c->display_name ? c->display_name : u->id);
    u->description = pack(&at, c->description ? c->description : "");
    u->output = pack(&at, c->output ? c->output : "");
    u->health = component_health(c->state);
    u->order = (unsigned)k;
  }
  if (d->n_units > 1)
    qsort(d->units, d->n_units, sizeof(*d->units), unit_on_cmp);
  return d;
}

struct aggr_dcos_node *aggr_dcos_node_ref(struct aggr_dcos_node *d) {
  if (d)
    d->refs++;
  return d;
}

void aggr_dcos_node_unref(struct aggr_dcos_node *d) {
  if (d && --d->refs == 0)
    free(d);
}

void aggr_dcos_units_free(struct aggr_dcos_units *u) {
  if (!u)
    return;
  free(u->v);
  free(u->on);
  free(u);
}
