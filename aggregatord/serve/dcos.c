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
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "mst/dynbuf.h"
#include "mst/profile.h"
#include "mst/time.h"
#include "serve/dcos.h"
#include "serve/dcos_node.h"
#include "serve/view.h"

#define DCOS_HELP "Node available at `muster node %s`. Try, `journalctl -xv` to diagnose further."

/* --- the readers' side: the units across the nodes ------------------------ */

/* Nodes of one role list their units in the same order, so the unit found
 * for a node's k-th entry is tried first for the next node's. */
static size_t unit_find(const struct aggr_dcos_units *x, const char *id, size_t *hint) {
  if (*hint < x->n && strcmp(x->v[*hint].id, id) == 0)
    return *hint;
  for (size_t i = 0; i < x->n; i++)
    if (strcmp(x->v[i].id, id) == 0)
      return *hint = i;
  return SIZE_MAX;
}

static int unit_cmp(const void *a, const void *b) {
  return strcmp(((const struct dcos_unit *)a)->id, ((const struct dcos_unit *)b)->id);
}

static struct aggr_dcos_units *units_build(const struct aggr_view *v) {
  struct aggr_dcos_units *x = calloc(1, sizeof(*x));
  _cleanup_free_ size_t *slot = NULL, *hints = NULL, *fill = NULL;
  size_t total = 0, n_hints = 0, e = 0;

  if (!x)
    return NULL;
  for (size_t i = 0; i < v->n_nodes; i++) {
    total += v->node_v[i].dcos->n_units;
    n_hints = MST_MAX(n_hints, v->node_v[i].dcos->n_units);
  }
  if (!(slot = malloc((total + 1) * sizeof(*slot))) ||
      !(hints = malloc((n_hints + 1) * sizeof(*hints))) ||
      !(x->on = malloc((total + 1) * sizeof(*x->on))))
    goto fail;
  memset(hints, 0xff, (n_hints + 1) * sizeof(*hints));
  /* Which unit each entry is, and how many nodes each unit has. */
  for (size_t i = 0; i < v->n_nodes; i++) {
    const struct aggr_dcos_node *d = v->node_v[i].dcos;
    for (size_t k = 0; k < d->n_units; k++, e++) {
      const struct dcos_unit_on *u = &d->units[k];
      size_t s = unit_find(x, u->id, &hints[k]);
      if (s == SIZE_MAX) {
        struct dcos_unit *nu = MST_ARRAY_APPEND(x->v, x->n);
        if (!nu)
          goto fail;
        *nu = (struct dcos_unit){.id = u->id, .name = u->name};
        s = hints[k] = x->n++;
      }
      slot[e] = s;
      x->v[s].n++;
      x->v[s].health = MST_MAX(x->v[s].health, u->health);
    }
  }
  /* Each unit's run in on[], filled in node order. */
  if (!(fill = calloc(x->n + 1, sizeof(*fill))))
    goto fail;
  for (size_t s = 0, at = 0; s < x->n; at += x->v[s].n, s++)
    x->v[s].first = at;
  e = 0;
  for (size_t i = 0; i < v->n_nodes; i++) {
    const struct aggr_dcos_node *d = v->node_v[i].dcos;
    for (size_t k = 0; k < d->n_units; k++, e++)
      x->on[x->v[slot[e]].first + fill[slot[e]]++] = (struct dcos_on){d, &d->units[k]};
  }
  if (x->n > 1)
    qsort(x->v, x->n, sizeof(*x->v), unit_cmp);
  return x;

fail:
  aggr_dcos_units_free(x);
  return NULL;
}

/* The units of v, indexed by the first reader that needs them: the index
 * is a function of the view's immutable nodes, so racing readers build the
 * same one and the first to store it wins. NULL on ENOMEM. */
static const struct aggr_dcos_units *units_of(const struct aggr_view *v) {
  _Atomic(struct aggr_dcos_units *) *cache = (_Atomic(struct aggr_dcos_units *) *)&v->dcos_units;
  struct aggr_dcos_units *x = atomic_load(cache), *expected = NULL;
  if (x)
    return x;
  if (!(x = units_build(v)))
    return NULL;
  if (atomic_compare_exchange_strong(cache, &expected, x))
    return x;
  aggr_dcos_units_free(x);
  return expected;
}

static const struct dcos_unit *unit_lookup(const struct aggr_dcos_units *x, const char *id) {
  struct dcos_unit key = {.id = id};
  return x->n ? bsearch(&key, x->v, x->n, sizeof(*x->v), unit_cmp) : NULL;
}

/* The node's entry for unit id: the first, when components share a unit. */
static const struct dcos_unit_on *node_unit(const struct aggr_dcos_node *d, const char *id) {
  size_t lo = 0, hi = d->n_units;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (strcmp(d->units[mid].id, id) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < d->n_units && strcmp(d->units[lo].id, id) == 0 ? &d->units[lo] : NULL;
}

/* Whether entry k of d is the first of its unit on the node. */
static bool node_unit_first(const struct aggr_dcos_node *d, size_t k) {
  return k == 0 || strcmp(d->units[k - 1].id, d->units[k].id) != 0;
}

static const struct aggr_dcos_node *node_find(const struct aggr_view *v, const char *ip) {
  const struct aggr_view_node *n = aggr_view_find_node(v, ip);
  return n ? n->dcos : NULL;
}

/* --- bodies --------------------------------------------------------------- */

static json_t *unit_json(const struct dcos_unit *u, int health) {
  return json_pack("{ss ss si ss}", "id", u->id, "name", u->name, "health", health, "description",
                   "");
}

static json_t *node_json(const struct aggr_dcos_node *n) {
  return json_pack("{ss si ss}", "host_ip", n->ip, "health", n->health, "role", n->role);
}

static char *help_text(const struct aggr_dcos_node *n) {
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

static json_t *report_json(const struct aggr_view *v, const struct aggr_dcos_units *x) {
  char ts[MST_RFC3339_MAX];
  json_t *units = json_object(), *nodes = json_object();
  mst_time_format_rfc3339(v->published_usec, ts, sizeof(ts));
  for (size_t i = 0; i < x->n; i++) {
    const struct dcos_unit *u = &x->v[i];
    json_t *un = json_array();
    for (size_t k = u->first; k < u->first + u->n; k++) {
      const struct aggr_dcos_node *n = x->on[k].node;
      json_array_append_new(un,
                            json_pack("{sb ss ss ss si s{ss} ss}", "Leader", 0, "Role", n->role,
                                      "IP", n->ip, "Host", n->host, "Health", x->on[k].u->health,
                                      "Output", u->id, x->on[k].u->output, "MesosID", ""));
    }
    json_object_set_new(units, u->id,
                        json_pack("{ss so si ss ss ss}", "UnitName", u->id, "Nodes", un, "Health",
                                  u->health, "Title", "", "Timestamp", ts, "PrettyName", u->name));
  }
  for (size_t i = 0; i < v->n_nodes; i++) {
    const struct aggr_dcos_node *n = v->node_v[i].dcos;
    json_t *nu = json_array(), *out = json_object();
    for (size_t k = 0; k < n->n_units; k++) {
      const struct dcos_unit_on *on = &n->units[k];
      const struct dcos_unit *u = node_unit_first(n, k) ? unit_lookup(x, on->id) : NULL;
      if (!u)
        continue;
      json_object_set_new(out, u->id, json_string(on->output));
      json_array_append_new(nu,
                            json_pack("{ss si ss ss ss}", "UnitName", u->id, "Health", on->health,
                                      "Title", "", "Timestamp", ts, "PrettyName", u->name));
    }
    json_object_set_new(nodes, n->ip,
                        json_pack("{sb ss ss ss si so so ss}", "Leader", 0, "Role", n->role, "IP",
                                  n->ip, "Host", n->host, "Health", n->health, "Output", out,
                                  "Units", nu, "MesosID", ""));
  }
  return json_pack("{so so ss}", "Units", units, "Nodes", nodes, "UpdatedTime", ts);
}

/* /units/{id}[/nodes[/{ip}]]: n segments, seg[1] the unit. Sets *missing
 * to what is not found. */
static json_t *unit_route(const struct aggr_dcos_units *x, char **seg, int n, const char *path,
                          const char **missing) {
  const struct dcos_unit *u = unit_lookup(x, seg[1]);
  if (!u) {
    *missing = seg[1];
    return NULL;
  }
  if (n == 2)
    return unit_json(u, u->health);
  if (strcmp(seg[2], "nodes") != 0) {
    *missing = path;
    return NULL;
  }
  if (n == 3) {
    /* Each node's health *for this unit* (DC/OS showed node health). */
    json_t *a = json_array();
    for (size_t k = u->first; k < u->first + u->n; k++)
      json_array_append_new(a, json_pack("{ss si ss}", "host_ip", x->on[k].node->ip, "health",
                                         x->on[k].u->health, "role", x->on[k].node->role));
    return json_pack("{so}", "nodes", a);
  }
  for (size_t k = u->first; k < u->first + u->n; k++) {
    const struct aggr_dcos_node *nd = x->on[k].node;
    if (strcmp(nd->ip, seg[3]) != 0)
      continue;
    _cleanup_free_ char *help = help_text(nd);
    return json_pack("{ss si ss ss ss}", "host_ip", nd->ip, "health", x->on[k].u->health, "role",
                     nd->role, "output", x->on[k].u->output, "help", help ? help : "");
  }
  *missing = seg[3];
  return NULL;
}

/* /nodes/{ip}[/units[/{id}]]: n segments, seg[1] the node. */
static json_t *node_route(const struct aggr_view *v, const struct aggr_dcos_units *x, char **seg,
                          int n, const char *path, const char **missing) {
  const struct aggr_dcos_node *nd = node_find(v, seg[1]);
  if (!nd) {
    *missing = seg[1];
    return NULL;
  }
  if (n == 2)
    return node_json(nd);
  if (strcmp(seg[2], "units") != 0) {
    *missing = path;
    return NULL;
  }
  if (n == 3) {
    json_t *a = json_array();
    for (size_t k = 0; k < nd->n_units; k++) {
      const struct dcos_unit *u = node_unit_first(nd, k) ? unit_lookup(x, nd->units[k].id) : NULL;
      if (u)
        json_array_append_new(a, unit_json(u, nd->units[k].health));
    }
    return json_pack("{so}", "units", a);
  }
  const struct dcos_unit_on *on = node_unit(nd, seg[3]);
  const struct dcos_unit *u = on ? unit_lookup(x, on->id) : NULL;
  if (!u) {
    *missing = seg[3];
    return NULL;
  }
  _cleanup_free_ char *help = help_text(nd);
  return json_pack("{ss si ss ss ss ss}", "id", u->id, "health", on->health, "output", on->output,
                   "description", "", "help", help ? help : "", "name", u->name);
}

int aggr_dcos_answer(const struct aggr_view *v, const char *path, unsigned *ret_status,
                     char **ret_body, size_t *ret_len, bool *ret_json) {
  _cleanup_free_ char *copy = strdup(path);
  const struct aggr_dcos_units *x = NULL;
  json_t *body = NULL;
  const char *missing = NULL;
  char *seg[4];
  int n;

  *ret_status = 200;
  *ret_json = true;
  if (!copy)
    return -ENOMEM;
  n = split(copy, seg);
  if (!v) {
    *ret_status = 503;
    missing = "health";
  } else if (n == 1 && strcmp(seg[0], "nodes") == 0) {
    json_t *a = json_array();
    for (size_t i = 0; i < v->n_nodes; i++)
      json_array_append_new(a, node_json(v->node_v[i].dcos));
    body = json_pack("{so}", "nodes", a);
  } else if (n >= 1 && (strcmp(seg[0], "units") == 0 || strcmp(seg[0], "nodes") == 0 ||
                        (n == 1 && strcmp(seg[0], "report") == 0))) {
    /* Everything but the node alone needs the units across the nodes. */
    if (!(n == 2 && strcmp(seg[0], "nodes") == 0) && !(x = units_of(v)))
      return -ENOMEM;
    if (n == 1 && strcmp(seg[0], "units") == 0) {
      json_t *a = json_array();
      for (size_t i = 0; i < x->n; i++)
        json_array_append_new(a, unit_json(&x->v[i], x->v[i].health));
      body = json_pack("{so}", "units", a);
    } else if (n == 1)
      body = report_json(v, x);
    else if (strcmp(seg[0], "units") == 0)
      body = unit_route(x, seg, n, path, &missing);
    else
      body = node_route(v, x, seg, n, path, &missing);
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
  if (!*ret_body)
    return -ENOMEM;
  *ret_len = strlen(*ret_body);
  return 0;
}
