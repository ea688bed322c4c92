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

/* DC/OS's name and description of a unit, from a systemd Description= such
 * as "Mesos Master: distributed systems kernel": split at ": " when it makes
 * exactly two parts, else the whole text with each ": " made " " and no
 * name. The profile's display name wins over the split one; without either
 * the component's name stands (DC/OS used the unit id). Writes the
 * description into buf (as long as text) and returns the name. */
static const char *unit_texts(const struct aggr_component *c, char *buf) {
  const char *text = c->description ? c->description : "";
  const char *sep = strstr(text, ": ");
  const char *name = NULL;
  if (sep && !strstr(sep + 2, ": ")) {
    strcpy(buf, sep + 2);
    name = text; /* cut at sep by the caller's copy: see pack_name() */
  } else {
    char *w = buf;
    for (const char *r = text; *r;) {
      if (r[0] == ':' && r[1] == ' ') {
        *w++ = ' ';
        r += 2;
      } else
        *w++ = *r++;
    }
    *w = '\0';
  }
  return c->display_name ? c->display_name : name ? name : c->name;
}

/* Copies s to *at and moves *at past it. */
static const char *pack(char **at, const char *s) {
  size_t len = strlen(s) + 1;
  const char *copy = memcpy(*at, s, len);
  *at += len;
  return copy;
}

/* Like pack(), but a name taken from a Description= ends at its ": ". */
static const char *pack_name(char **at, const char *name, const struct aggr_component *c) {
  const char *sep = name == c->description ? strstr(name, ": ") : NULL;
  size_t len = sep ? (size_t)(sep - name) : strlen(name);
  char *copy = memcpy(*at, name, len);
  copy[len] = '\0';
  *at += len + 1;
  return copy;
}

/* Whether n is the Mesos leader, for /report's Leader. muster learns it
 * from a profile's leader milestone, which the agents report; until a node
 * carries it, no node is the leader (DC/OS's false for every agent). */
static bool node_is_leader(const struct aggr_node *n) {
  (void)n;
  return false;
}

struct aggr_dcos_node *aggr_dcos_node_new(const struct aggr_model *m, const struct aggr_node *n) {
  const char *role = n->role ? n->role : "", *host = n->hostname ? n->hostname : "";
  int health = node_health(n);
  /* An unreachable or never seen node shows no units: DC/OS knows none
   * (its pull failed), and leaves it out of every unit's node list, so a
   * unit's health comes from the nodes that report. */
  size_t n_units = health == 3 ? 0 : n->n_components, longest = 0;
  size_t size = sizeof(struct aggr_dcos_node) + n_units * sizeof(struct dcos_unit_on) +
                strlen(n->id) + strlen(role) + strlen(host) + 3;
  for (size_t k = 0; k < n_units; k++) {
    const struct aggr_component *c = &n->components[k];
    size_t desc = c->description ? strlen(c->description) : 0;
    size += strlen(unit_id(m, n, c->name)) + strlen(c->name) + 2 * desc +
            (c->display_name ? strlen(c->display_name) : 0) + strlen(c->output ? c->output : "") +
            4;
    longest = MST_MAX(longest, desc);
  }
  /* One block: the node, its units, then every string. */
  _cleanup_free_ char *buf = malloc(longest + 1);
  struct aggr_dcos_node *d = buf ? malloc(size) : NULL;
  if (!d)
    return NULL;
  char *at = (char *)&d->units[n_units];
  d->refs = 1;
  d->ip = pack(&at, n->id);
  d->role = pack(&at, role);
  d->host = pack(&at, host);
  d->health = health;
  d->leader = health != 3 && node_is_leader(n);
  d->n_units = n_units;
  for (size_t k = 0; k < n_units; k++) {
    const struct aggr_component *c = &n->components[k];
    struct dcos_unit_on *u = &d->units[k];
    const char *name = unit_texts(c, buf);
    u->id = pack(&at, unit_id(m, n, c->name));
    u->name = pack_name(&at, name, c);
    u->description = pack(&at, buf);
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
