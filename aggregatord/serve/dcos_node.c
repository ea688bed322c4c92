/* A node as DC/OS shows it (dcos_node.h): its health, and its components
 * as units with DC/OS's health ints, in one immutable block. */
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
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
  if (n->verdict == MST_VERDICT_UNREACHABLE || n->verdict == MST_VERDICT_MISSING)
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
  size_t size = sizeof(struct aggr_dcos_node) + n->n_components * sizeof(struct dcos_unit_on) +
                strlen(n->id) + strlen(role) + strlen(host) + 3;
  for (size_t k = 0; k < n->n_components; k++) {
    const struct aggr_component *c = &n->components[k];
    size +=
        strlen(unit_id(m, n, c->name)) + strlen(c->name) + strlen(c->output ? c->output : "") + 3;
  }
  /* One block: the node, its units, then every string. */
  struct aggr_dcos_node *d = malloc(size);
  if (!d)
    return NULL;
  char *at = (char *)&d->units[n->n_components];
  d->refs = 1;
  d->ip = pack(&at, n->id);
  d->role = pack(&at, role);
  d->host = pack(&at, host);
  d->health = node_health(n);
  d->n_units = n->n_components;
  for (size_t k = 0; k < n->n_components; k++) {
    const struct aggr_component *c = &n->components[k];
    struct dcos_unit_on *u = &d->units[k];
    u->id = pack(&at, unit_id(m, n, c->name));
    u->name = pack(&at, c->name);
    u->output = pack(&at, c->output ? c->output : "");
    /* An unreachable node's units are unknown now, but it stays in every
     * unit's node list (DC/OS dropped it, hiding the failure). */
    u->health = d->health == 3 ? 3 : component_health(c->state);
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
