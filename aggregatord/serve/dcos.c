/* DC/OS diagnostics' health API, served from muster's model; see dcos.h and
 * docs/dcos.md for the mapping and where muster deliberately differs.
 *
 * Shapes (DC/OS key sets and counts):
 *   unit in a list     {id, name, health, description}             4 keys
 *   node               {host_ip, health, role}                     3 keys
 *   unit on a node     {host_ip, health, role, output, help}       5 keys
 *   node's unit        {id, health, output, description, help, name} 6 keys
 * health: 0 healthy, 1 unhealthy, 3 unknown or unreachable. Errors are
 * text/plain "<id> not found\n", as DC/OS's http.Error gives. */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "serve/dcos.h"
#include "serve/demand.h"
#include "model/model.h"
#include "mst/profile.h"
#include "mst/time.h"

#define DCOS_HELP "Node available at `muster node %s`. Try, `journalctl -xv` to diagnose further."

struct dcos_unit_on_node {
  size_t node; /* index into snapshot nodes */
  int health;
  char *output;
};

struct dcos_unit {
  char *id, *name, *description;
  int health; /* max over nodes */
  struct dcos_unit_on_node *on;
  size_t n_on, cap_on;
};

struct dcos_node {
  char *ip, *role, *host;
  int health;
};

struct dcos_snapshot {
  atomic_uint refs;
  struct dcos_node *nodes;
  size_t n_nodes;
  struct dcos_unit *units; /* sorted by id */
  size_t n_units;
  uint64_t at_usec;
};

#define DCOS_REFRESH_USEC (200 * USEC_PER_MSEC)

static pthread_mutex_t snap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dcos_snapshot *current;
static struct aggr_demand demand = AGGR_DEMAND_INIT;

static void snapshot_unref(struct dcos_snapshot *s) {
  if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
    return;
  for (size_t i = 0; i < s->n_nodes; i++) {
    free(s->nodes[i].ip);
    free(s->nodes[i].role);
    free(s->nodes[i].host);
  }
  for (size_t i = 0; i < s->n_units; i++) {
    free(s->units[i].id);
    free(s->units[i].name);
    free(s->units[i].description);
    for (size_t k = 0; k < s->units[i].n_on; k++)
      free(s->units[i].on[k].output);
    free(s->units[i].on);
  }
  free(s->nodes);
  free(s->units);
  free(s);
}

static struct dcos_snapshot *snapshot_get(void) {
  struct dcos_snapshot *s;
  pthread_mutex_lock(&snap_lock);
  s = current;
  if (s)
    atomic_fetch_add(&s->refs, 1);
  pthread_mutex_unlock(&snap_lock);
  return s;
}

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

/* Nodes of one role list their components in the same order, so the unit
 * found for a node's k-th component is tried first for the next node's. */
static struct dcos_unit *unit_find(struct dcos_snapshot *s, const char *id, size_t *hint) {
  if (*hint < s->n_units && strcmp(s->units[*hint].id, id) == 0)
    return &s->units[*hint];
  for (size_t i = 0; i < s->n_units; i++)
    if (strcmp(s->units[i].id, id) == 0) {
      *hint = i;
      return &s->units[i];
    }
  return NULL;
}

static int unit_cmp(const void *a, const void *b) {
  return strcmp(((const struct dcos_unit *)a)->id, ((const struct dcos_unit *)b)->id);
}

/* A published snapshot's units are sorted by id. */
static const struct dcos_unit *unit_lookup(const struct dcos_snapshot *s, const char *id) {
  struct dcos_unit key = {.id = (char *)id};
  return s->n_units ? bsearch(&key, s->units, s->n_units, sizeof(*s->units), unit_cmp) : NULL;
}

bool aggr_dcos_due(uint64_t now_usec, bool changed) {
  return aggr_demand_due(&demand, now_usec, DCOS_REFRESH_USEC, changed);
}

void aggr_dcos_update(const struct aggr_model *m) {
  struct dcos_snapshot *s = calloc(1, sizeof(*s));
  size_t cap_units = 0, n_hints = 0;
  _cleanup_free_ size_t *hints = NULL;

  aggr_demand_done(&demand, mst_now_monotonic_usec());

  if (!s)
    return;
  atomic_init(&s->refs, 1);
  s->at_usec = mst_now_realtime_usec();
  s->nodes = calloc(m->n_nodes + 1, sizeof(*s->nodes));
  if (!s->nodes)
    goto fail;
  for (size_t i = 0; i < m->n_nodes; i++) {
    const struct aggr_node *n = m->nodes[i];
    struct dcos_node *dn = &s->nodes[s->n_nodes++];
    dn->ip = strdup(n->id);
    dn->role = strdup(n->role ? n->role : "");
    dn->host = strdup(n->hostname ? n->hostname : "");
    dn->health = node_health(n);
    if (!dn->ip || !dn->role || !dn->host)
      goto fail;
    /* An unreachable node's units are unknown now, but it stays in every
     * unit's node list (DC/OS dropped it, hiding the failure). */
    if (n->n_components > n_hints) {
      size_t *nh = realloc(hints, n->n_components * sizeof(*nh));
      if (!nh)
        goto fail;
      for (size_t k = n_hints; k < n->n_components; k++)
        nh[k] = SIZE_MAX;
      hints = nh;
      n_hints = n->n_components;
    }
    for (size_t k = 0; k < n->n_components; k++) {
      const struct aggr_component *c = &n->components[k];
      const char *id = unit_id(m, n, c->name);
      struct dcos_unit *u = unit_find(s, id, &hints[k]);
      if (!u) {
        if (s->n_units == cap_units) {
          size_t nc = cap_units ? cap_units * 2 : 32;
          struct dcos_unit *nu = realloc(s->units, nc * sizeof(*nu));
          if (!nu)
            goto fail;
          s->units = nu;
          cap_units = nc;
        }
        u = &s->units[s->n_units++];
        memset(u, 0, sizeof(*u));
        u->id = strdup(id);
        u->name = strdup(c->name);
        u->description = strdup("");
        hints[k] = s->n_units - 1;
        if (!u->id || !u->name || !u->description)
          goto fail;
      }
      if (u->n_on == u->cap_on) {
        size_t nc = u->cap_on ? u->cap_on * 2 : 8;
        struct dcos_unit_on_node *on = realloc(u->on, nc * sizeof(*on));
        if (!on)
          goto fail;
        u->on = on;
        u->cap_on = nc;
      }
      struct dcos_unit_on_node *on = &u->on[u->n_on++];
      on->node = s->n_nodes - 1;
      on->health = dn->health == 3 ? 3 : component_health(c->state);
      on->output = strdup(c->output ? c->output : "");
      if (!on->output)
        goto fail;
      if (on->health > u->health)
        u->health = on->health;
    }
  }
  if (s->n_units > 1)
    qsort(s->units, s->n_units, sizeof(*s->units), unit_cmp);

  pthread_mutex_lock(&snap_lock);
  struct dcos_snapshot *old = current;
  current = s;
  pthread_mutex_unlock(&snap_lock);
  snapshot_unref(old);
  return;

fail:
  snapshot_unref(s); /* keep the previous snapshot */
}

void aggr_dcos_done(void) {
  pthread_mutex_lock(&snap_lock);
  struct dcos_snapshot *old = current;
  current = NULL;
  pthread_mutex_unlock(&snap_lock);
  snapshot_unref(old);
}

static json_t *unit_json(const struct dcos_unit *u, int health) {
  return json_pack("{ss ss si ss}", "id", u->id, "name", u->name, "health", health, "description",
                   u->description);
}

static json_t *node_json(const struct dcos_node *n) {
  return json_pack("{ss si ss}", "host_ip", n->ip, "health", n->health, "role", n->role);
}

static const struct dcos_node *node_find(const struct dcos_snapshot *s, const char *ip,
                                         size_t *ret_idx) {
  for (size_t i = 0; i < s->n_nodes; i++)
    if (strcmp(s->nodes[i].ip, ip) == 0) {
      if (ret_idx)
        *ret_idx = i;
      return &s->nodes[i];
    }
  return NULL;
}

static const struct dcos_unit_on_node *unit_on(const struct dcos_unit *u, size_t node) {
  for (size_t i = 0; i < u->n_on; i++)
    if (u->on[i].node == node)
      return &u->on[i];
  return NULL;
}

static char *help_text(const struct dcos_node *n) {
  char *h = NULL;
  if (asprintf(&h, DCOS_HELP, n->ip) < 0)
    return NULL;
  return h;
}

/* Splits path into at most 4 segments after the prefix. Returns the count,
 * or -1 when there are more (or empty ones). */
static int split(char *path, char *seg[4]) {
  int n = 0;
  for (char *save = NULL, *p = strtok_r(path, "/", &save); p; p = strtok_r(NULL, "/", &save)) {
    if (n == 4)
      return -1;
    seg[n++] = p;
  }
  return n;
}

static json_t *report_json(const struct dcos_snapshot *s) {
  char ts[MST_RFC3339_MAX];
  json_t *units = json_object(), *nodes = json_object();
  mst_time_format_rfc3339(s->at_usec, ts, sizeof(ts));
  for (size_t i = 0; i < s->n_units; i++) {
    const struct dcos_unit *u = &s->units[i];
    json_t *un = json_array();
    for (size_t k = 0; k < u->n_on; k++) {
      const struct dcos_node *n = &s->nodes[u->on[k].node];
      json_array_append_new(un, json_pack("{sb ss ss ss si s{ss} ss}", "Leader", 0, "Role", n->role,
                                          "IP", n->ip, "Host", n->host, "Health", u->on[k].health,
                                          "Output", u->id, u->on[k].output, "MesosID", ""));
    }
    json_object_set_new(units, u->id,
                        json_pack("{ss so si ss ss ss}", "UnitName", u->id, "Nodes", un, "Health",
                                  u->health, "Title", u->description, "Timestamp", ts, "PrettyName",
                                  u->name));
  }
  for (size_t i = 0; i < s->n_nodes; i++) {
    const struct dcos_node *n = &s->nodes[i];
    json_t *nu = json_array(), *out = json_object();
    for (size_t k = 0; k < s->n_units; k++) {
      const struct dcos_unit_on_node *on = unit_on(&s->units[k], i);
      if (!on)
        continue;
      json_object_set_new(out, s->units[k].id, json_string(on->output));
      json_array_append_new(nu, json_pack("{ss si ss ss ss}", "UnitName", s->units[k].id, "Health",
                                          on->health, "Title", s->units[k].description, "Timestamp",
                                          ts, "PrettyName", s->units[k].name));
    }
    json_object_set_new(nodes, n->ip,
                        json_pack("{sb ss ss ss si so so ss}", "Leader", 0, "Role", n->role, "IP",
                                  n->ip, "Host", n->host, "Health", n->health, "Output", out,
                                  "Units", nu, "MesosID", ""));
  }
  return json_pack("{so so ss}", "Units", units, "Nodes", nodes, "UpdatedTime", ts);
}

int aggr_dcos_answer(const char *path, unsigned *ret_status, char **ret_body, size_t *ret_len,
                     bool *ret_json) {
  aggr_demand_read(&demand, USEC_PER_SEC);
  struct dcos_snapshot *s = snapshot_get();
  char *copy = strdup(path), *seg[4];
  json_t *body = NULL;
  const char *missing = NULL;
  int n;

  *ret_status = 200;
  *ret_json = true;
  if (!copy) {
    snapshot_unref(s);
    return -ENOMEM;
  }
  n = split(copy, seg);
  if (!s) {
    *ret_status = 503;
    missing = "health";
  } else if (n == 1 && strcmp(seg[0], "units") == 0) {
    json_t *a = json_array();
    for (size_t i = 0; i < s->n_units; i++)
      json_array_append_new(a, unit_json(&s->units[i], s->units[i].health));
    body = json_pack("{so}", "units", a);
  } else if (n == 1 && strcmp(seg[0], "nodes") == 0) {
    json_t *a = json_array();
    for (size_t i = 0; i < s->n_nodes; i++)
      json_array_append_new(a, node_json(&s->nodes[i]));
    body = json_pack("{so}", "nodes", a);
  } else if (n == 1 && strcmp(seg[0], "report") == 0) {
    body = report_json(s);
  } else if (n >= 2 && strcmp(seg[0], "units") == 0) {
    const struct dcos_unit *u = unit_lookup(s, seg[1]);
    size_t idx;
    const struct dcos_node *nd;
    const struct dcos_unit_on_node *on;
    if (!u)
      missing = seg[1];
    else if (n == 2)
      body = unit_json(u, u->health);
    else if (n == 3 && strcmp(seg[2], "nodes") == 0) {
      /* Each node's health *for this unit* (DC/OS showed node health). */
      json_t *a = json_array();
      for (size_t k = 0; k < u->n_on; k++) {
        const struct dcos_node *dn = &s->nodes[u->on[k].node];
        json_array_append_new(a, json_pack("{ss si ss}", "host_ip", dn->ip, "health",
                                           u->on[k].health, "role", dn->role));
      }
      body = json_pack("{so}", "nodes", a);
    } else if (n == 4 && strcmp(seg[2], "nodes") == 0) {
      if (!(nd = node_find(s, seg[3], &idx)) || !(on = unit_on(u, idx)))
        missing = seg[3];
      else {
        char *help = help_text(nd);
        body = json_pack("{ss si ss ss ss}", "host_ip", nd->ip, "health", on->health, "role",
                         nd->role, "output", on->output, "help", help ? help : "");
        free(help);
      }
    } else
      missing = path;
  } else if (n >= 2 && strcmp(seg[0], "nodes") == 0) {
    size_t idx;
    const struct dcos_node *nd = node_find(s, seg[1], &idx);
    if (!nd)
      missing = seg[1];
    else if (n == 2)
      body = node_json(nd);
    else if (n == 3 && strcmp(seg[2], "units") == 0) {
      json_t *a = json_array();
      for (size_t k = 0; k < s->n_units; k++) {
        const struct dcos_unit_on_node *on = unit_on(&s->units[k], idx);
        if (on)
          json_array_append_new(a, unit_json(&s->units[k], on->health));
      }
      body = json_pack("{so}", "units", a);
    } else if (n == 4 && strcmp(seg[2], "units") == 0) {
      const struct dcos_unit *u = unit_lookup(s, seg[3]);
      const struct dcos_unit_on_node *on = u ? unit_on(u, idx) : NULL;
      if (!on)
        missing = seg[3];
      else {
        char *help = help_text(nd);
        body = json_pack("{ss si ss ss ss ss}", "id", u->id, "health", on->health, "output",
                         on->output, "description", u->description, "help", help ? help : "",
                         "name", u->name);
        free(help);
      }
    } else
      missing = path;
  } else {
    missing = path;
  }

  if (missing) {
    *ret_json = false;
    if (*ret_status == 200)
      *ret_status = 404;
    if (asprintf(ret_body, "%s not found\n", missing) < 0)
      *ret_body = NULL;
  } else {
    /* DC/OS's encoder ends every body with a newline. */
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    *ret_body = NULL;
    if (text && asprintf(ret_body, "%s\n", text) < 0)
      *ret_body = NULL;
    free(text);
  }
  json_decref(body);
  free(copy);
  snapshot_unref(s);
  if (!*ret_body)
    return -ENOMEM;
  *ret_len = strlen(*ret_body);
  return 0;
}
