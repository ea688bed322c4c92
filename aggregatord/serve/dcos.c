/* DC/OS diagnostics' health API, served from muster's model; see dcos.h and
 * docs/dcos.md for the mapping and where muster deliberately differs.
 *
 * Shapes (DC/OS's Go structs; key sets, counts and order are what DC/OS's
 * tests and clients check):
 *   local node   {units, hostname, ip, dcos_version, node_role, mesos_id,
 *                 dcos_diagnostics_version}                        7 keys
 *   unit in a list     {id, name, health, description}             4 keys
 *   node               {host_ip, health, role}                     3 keys
 *   unit on a node     {host_ip, health, role, output, help}       5 keys
 *   node's unit        {id, health, output, description, help, name} 6 keys
 * health: 0 healthy, 1 unhealthy, 3 unknown or unreachable. Lists with
 * nothing in them are null (Go's nil slices). Errors are text/plain, as
 * Go's http.Error writes them: "<id> not found\n" for an unknown id, "404
 * page not found\n" for a path no route has; both with nosniff. A route
 * asked with a trailing slash or an unclean path is redirected (301, as
 * gorilla/mux's StrictSlash and path cleaning do); other methods than GET,
 * HEAD included, get 405 with no body. */
#include <errno.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/model.h"
#include "mst/dynbuf.h"
#include "mst/profile.h"
#include "mst/time.h"
#include "serve/dcos.h"
#include "serve/dcos_node.h"
#include "serve/view.h"

/* What a redirect's Location may hold: the request target is capped below
 * this (http_max_url); its HTML body escapes it. */
#define DCOS_LOCATION_MAX (256 * 1024)

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

/* A unit's health across the nodes that report it: 1 if it fails on any,
 * else 3 if it is unknown on any, else 0 (a plain max would let an unknown
 * hide a failure). */
static int unit_health_add(int sum, int h) {
  if (sum == 1 || h == 1)
    return 1;
  return MST_MAX(sum, h);
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
        *nu = (struct dcos_unit){.id = u->id, .name = u->name, .description = u->description};
        s = hints[k] = x->n++;
      }
      slot[e] = s;
      x->v[s].n++;
      x->v[s].health = unit_health_add(x->v[s].health, u->health);
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

/* A JSON array, or null when it would be empty (Go's nil slice). Takes a. */
static json_t *list_or_null(json_t *a) {
  if (a && json_array_size(a) > 0)
    return a;
  json_decref(a);
  return json_null();
}

static json_t *unit_json(const struct dcos_unit *u, int health) {
  return json_pack("{ss ss si ss}", "id", u->id, "name", u->name, "health", health, "description",
                   u->description);
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

/* A node's unit with its output, as the local route and /nodes/{ip}/units/{u}
 * show it (help: "" on the local route). */
static json_t *node_unit_json(const struct dcos_unit_on *on, const char *help) {
  return json_pack("{ss si ss ss ss ss}", "id", on->id, "health", on->health, "output", on->output,
                   "description", on->description, "help", help, "name", on->name);
}

/* The node's Output in /report: every unit's output on it, or null when
 * the node did not report (DC/OS's nil map). */
static json_t *report_output(const struct aggr_dcos_node *n) {
  if (n->health == 3)
    return json_null();
  json_t *out = json_object();
  for (size_t k = 0; k < n->n_units; k++)
    if (node_unit_first(n, k))
      json_object_set_new(out, n->units[k].id, json_string(n->units[k].output));
  return out;
}

/* A node in /report with health (the unit's on that node in a unit's node
 * list), and units (taken) unless NULL: Go's omitempty leaves Units out
 * when there are none. Takes a reference on output. */
static json_t *report_node(const struct aggr_dcos_node *n, int health, json_t *output,
                           json_t *units) {
  json_t *o = json_pack("{sb ss ss ss si sO}", "Leader", n->leader, "Role", n->role, "IP", n->ip,
                        "Host", n->host, "Health", health, "Output", output);
  if (units && json_array_size(units) > 0)
    json_object_set(o, "Units", units);
  json_decref(units);
  json_object_set_new(o, "MesosID", json_string(n->mesos_id));
  return o;
}

/* A unit in /report. Takes nodes. */
static json_t *report_unit(const struct dcos_unit *u, json_t *nodes, int health, const char *ts) {
  return json_pack("{ss so si ss ss ss}", "UnitName", u->id, "Nodes", nodes, "Health", health,
                   "Title", u->description, "Timestamp", ts, "PrettyName", u->name);
}

static json_t *report_json(const struct aggr_view *v, const struct aggr_dcos_units *x) {
  char ts[MST_RFC3339_MAX];
  json_t *units = json_object(), *nodes = json_object();
  json_t **outputs = calloc(v->n_nodes + 1, sizeof(*outputs));
  json_t *ret = NULL;

  if (!outputs || !units || !nodes)
    goto out;
  mst_time_format_rfc3339(v->published_usec, ts, sizeof(ts));
  for (size_t i = 0; i < v->n_nodes; i++)
    outputs[i] = report_output(v->node_v[i].dcos);
  for (size_t i = 0; i < x->n; i++) {
    const struct dcos_unit *u = &x->v[i];
    json_t *un = json_array();
    for (size_t k = u->first; k < u->first + u->n; k++) {
      const struct aggr_dcos_node *n = x->on[k].node;
      /* The node's own Output map, shared: find its index in the view. */
      json_t *o = NULL;
      for (size_t j = 0; j < v->n_nodes && !o; j++)
        if (v->node_v[j].dcos == n)
          o = outputs[j];
      json_array_append_new(un, report_node(n, x->on[k].u->health, o, NULL));
    }
    json_object_set_new(units, u->id, report_unit(u, un, u->health, ts));
  }
  for (size_t i = 0; i < v->n_nodes; i++) {
    const struct aggr_dcos_node *n = v->node_v[i].dcos;
    json_t *nu = json_array();
    for (size_t k = 0; k < n->n_units; k++) {
      const struct dcos_unit_on *on = &n->units[k];
      const struct dcos_unit *u = node_unit_first(n, k) ? unit_lookup(x, on->id) : NULL;
      if (u)
        json_array_append_new(
            nu, report_unit(u, json_pack("[o]", report_node(n, on->health, outputs[i], NULL)),
                            on->health, ts));
    }
    json_t *node = report_node(n, n->health, outputs[i], nu);
    json_object_set_new(nodes, n->ip, node);
  }
  ret = json_pack("{sO sO ss}", "Units", units, "Nodes", nodes, "UpdatedTime", ts);
out:
  for (size_t i = 0; outputs && i < v->n_nodes; i++)
    json_decref(outputs[i]);
  free(outputs);
  json_decref(units);
  json_decref(nodes);
  return ret;
}

/* /units/{id}[/nodes[/{ip}]]: n segments, seg[1] the unit. Sets *missing
 * to what is not found. */
static json_t *unit_route(const struct aggr_dcos_units *x, char **seg, int n,
                          const char **missing) {
  const struct dcos_unit *u = unit_lookup(x, seg[1]);
  if (!u) {
    *missing = seg[1];
    return NULL;
  }
  if (n == 2)
    return unit_json(u, u->health);
  if (n == 3) {
    /* Each reporting node's health *for this unit* (DC/OS showed node
     * health). */
    json_t *a = json_array();
    for (size_t k = u->first; k < u->first + u->n; k++)
      json_array_append_new(a, json_pack("{ss si ss}", "host_ip", x->on[k].node->ip, "health",
                                         x->on[k].u->health, "role", x->on[k].node->role));
    return json_pack("{so}", "nodes", list_or_null(a));
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
                          int n, const char **missing) {
  const struct aggr_dcos_node *nd = node_find(v, seg[1]);
  if (!nd) {
    *missing = seg[1];
    return NULL;
  }
  if (n == 2)
    return node_json(nd);
  if (n == 3) {
    json_t *a = json_array();
    for (size_t k = 0; k < nd->n_units; k++) {
      const struct dcos_unit *u = node_unit_first(nd, k) ? unit_lookup(x, nd->units[k].id) : NULL;
      if (u)
        json_array_append_new(a, unit_json(u, nd->units[k].health));
    }
    return json_pack("{so}", "units", list_or_null(a));
  }
  const struct dcos_unit_on *on = node_unit(nd, seg[3]);
  if (!on) {
    *missing = seg[3];
    return NULL;
  }
  _cleanup_free_ char *help = help_text(nd);
  return node_unit_json(on, help ? help : "");
}

/* GET /system/health/v1: the local node's own health, as its
 * dcos-diagnostics would tell it. */
static json_t *local_json(const struct aggr_dcos_node *nd) {
  json_t *a = json_array();
  for (size_t k = 0; k < nd->n_units; k++)
    if (node_unit_first(nd, k))
      json_array_append_new(a, node_unit_json(&nd->units[k], ""));
  return json_pack("{so ss ss ss ss ss ss}", "units", list_or_null(a), "hostname", nd->host, "ip",
                   nd->ip, "dcos_version", nd->dcos_version, "node_role", nd->role, "mesos_id",
                   nd->mesos_id, "dcos_diagnostics_version", "muster " MUSTER_VERSION);
}

/* --- routing -------------------------------------------------------------- */

/* Splits a clean path into at most 4 segments. Returns the count, or -1
 * when there are more. */
static int split(char *path, char *seg[4]) {
  int n = 0;
  for (char *save = NULL, *p = strtok_r(path, "/", &save); p; p = strtok_r(NULL, "/", &save)) {
    if (n == 4)
      return -1;
    seg[n++] = p;
  }
  return n;
}

/* Whether segments seg[0..n) name one of DC/OS's health routes. */
static enum aggr_dcos_route route_of(char **seg, int n) {
  if (n == 0)
    return AGGR_DCOS_LOCAL;
  if (strcmp(seg[0], "units") == 0)
    return n == 1 || n == 2 || strcmp(seg[2], "nodes") == 0 ? AGGR_DCOS_DATA : AGGR_DCOS_ANSWERED;
  if (strcmp(seg[0], "nodes") == 0)
    return n == 1 || n == 2 || strcmp(seg[2], "units") == 0 ? AGGR_DCOS_DATA : AGGR_DCOS_ANSWERED;
  if (strcmp(seg[0], "report") == 0)
    return n == 1 || (n == 2 && strcmp(seg[1], "download") == 0) ? AGGR_DCOS_DATA
                                                                 : AGGR_DCOS_ANSWERED;
  return AGGR_DCOS_ANSWERED;
}

/* Go's path.Clean of path, with its trailing slash kept (gorilla/mux's
 * cleanPath). Returns a malloc'd string, or NULL on ENOMEM. */
static char *clean_path(const char *path) {
  size_t len = strlen(path);
  char *out = malloc(len + 2), *w = out;
  if (!out)
    return NULL;
  for (const char *r = path; *r;) {
    const char *end = strchrnul(r + (*r == '/'), '/');
    const char *el = r + (*r == '/');
    size_t el_len = (size_t)(end - el);
    if (el_len == 0 || (el_len == 1 && el[0] == '.')) {
      /* an empty or "." element: dropped */
    } else if (el_len == 2 && el[0] == '.' && el[1] == '.') {
      while (w > out && *--w != '/')
        ;
    } else {
      *w++ = '/';
      memcpy(w, el, el_len);
      w += el_len;
    }
    r = end;
  }
  if (w == out || (len > 1 && path[len - 1] == '/'))
    *w++ = '/';
  *w = '\0';
  return out;
}

/* Escapes s for an HTML attribute, as Go's http.Redirect writes its body. */
static void html_escape(struct mst_dynbuf *b, const char *s) {
  for (; *s; s++) {
    const char *e = *s == '&'    ? "&amp;"
                    : *s == '<'  ? "&lt;"
                    : *s == '>'  ? "&gt;"
                    : *s == '"'  ? "&#34;"
                    : *s == '\'' ? "&#39;"
                                 : NULL;
    if (e)
      mst_dynbuf_adds(b, e);
    else
      mst_dynbuf_addc(b, *s);
  }
}

/* A text/plain error as Go's http.Error writes it: s + suffix + "\n". */
static int reply_text(struct aggr_dcos_reply *r, unsigned status, const char *s,
                      const char *suffix) {
  r->status = status;
  r->content_type = "text/plain; charset=utf-8";
  r->nosniff = true;
  if (asprintf(&r->body, "%s%s\n", s, suffix) < 0) {
    r->body = NULL;
    return -ENOMEM;
  }
  r->len = strlen(r->body);
  return 0;
}

/* 301 to location (taken) plus the query, as gorilla/mux's redirects. */
static int reply_moved(struct aggr_dcos_reply *r, char *location, const char *query) {
  struct mst_dynbuf b = MST_DYNBUF_INIT(2 * DCOS_LOCATION_MAX);
  r->status = 301;
  if (query && *query) {
    if (asprintf(&r->location, "%s?%s", location, query) < 0)
      r->location = NULL;
  } else
    r->location = strdup(location);
  free(location);
  if (!r->location)
    return -ENOMEM;
  r->content_type = "text/html; charset=utf-8";
  mst_dynbuf_adds(&b, "<a href=\"");
  html_escape(&b, r->location);
  mst_dynbuf_adds(&b, "\">Moved Permanently</a>.\n\n");
  return mst_dynbuf_take(&b, &r->body, &r->len);
}

enum aggr_dcos_route aggr_dcos_route(const char *path, const char *query, bool get,
                                     struct aggr_dcos_reply *ret) {
  _cleanup_free_ char *full = NULL, *clean = NULL, *copy = NULL;
  size_t prefix = strlen(AGGR_DCOS_PREFIX);
  enum aggr_dcos_route route = AGGR_DCOS_ANSWERED;
  char *seg[4];
  int n;

  *ret = (struct aggr_dcos_reply){0};
  if (asprintf(&full, "%s%s", AGGR_DCOS_PREFIX, path) < 0) {
    full = NULL;
    goto fail;
  }
  if (!(clean = clean_path(full)))
    goto fail;
  if (strcmp(clean, full) != 0) {
    char *location = clean;
    clean = NULL;
    return reply_moved(ret, location, query) < 0 ? AGGR_DCOS_FAILED : AGGR_DCOS_ANSWERED;
  }
  /* A trailing slash: the route without it, redirected to if there is one. */
  size_t len = strlen(full);
  bool slash = len > prefix && full[len - 1] == '/';
  if (slash)
    full[--len] = '\0';
  if (!(copy = strdup(full + prefix)))
    goto fail;
  n = split(copy, seg);
  if (n >= 0)
    route = route_of(seg, n);
  if (route == AGGR_DCOS_ANSWERED) {
    /* No route has this path (gorilla/mux's NotFoundHandler). */
    return reply_text(ret, 404, "404 page not found", "") < 0 ? AGGR_DCOS_FAILED
                                                              : AGGR_DCOS_ANSWERED;
  }
  if (!get) {
    /* A route that has the path but not the method: an empty 405. */
    ret->status = 405;
    return (ret->body = strdup("")) ? AGGR_DCOS_ANSWERED : AGGR_DCOS_FAILED;
  }
  if (slash) {
    char *location = full;
    full = NULL;
    return reply_moved(ret, location, query) < 0 ? AGGR_DCOS_FAILED : AGGR_DCOS_ANSWERED;
  }
  return route;

fail:
  aggr_dcos_reply_done(ret);
  return AGGR_DCOS_FAILED;
}

/* DC/OS's Last-Modified-3DT: when the data was last gathered, in Go's
 * time.ANSIC ("Mon Jan _2 15:04:05 2006"), UTC. */
static void last_modified(uint64_t realtime_usec, char *buf, size_t size) {
  time_t secs = (time_t)(realtime_usec / 1000000);
  struct tm tm;
  if (!gmtime_r(&secs, &tm) || strftime(buf, size, "%a %b %e %H:%M:%S %Y", &tm) == 0)
    buf[0] = '\0';
}

int aggr_dcos_answer(const struct aggr_view *v, const char *path, const char *local_node,
                     struct aggr_dcos_reply *ret) {
  _cleanup_free_ char *copy = strdup(path);
  const struct aggr_dcos_units *x = NULL;
  json_t *body = NULL;
  const char *missing = NULL;
  char *seg[4];
  int n;

  *ret = (struct aggr_dcos_reply){.status = 200, .content_type = "application/json"};
  if (!copy)
    return -ENOMEM;
  n = split(copy, seg);
  if (!v)
    return reply_text(ret, 503, "health not found", "");
  if (n == 0) {
    /* The local node: no Last-Modified-3DT (DC/OS reads it live). */
    const struct aggr_dcos_node *nd = local_node ? node_find(v, local_node) : NULL;
    if (!nd)
      return reply_text(ret, 404, local_node ? local_node : "local node", " not found");
    if (nd->health == 3)
      return reply_text(ret, 503, nd->ip, ": health not known: the node's agent does not report");
    body = local_json(nd);
  } else {
    last_modified(v->published_usec, ret->last_modified, sizeof(ret->last_modified));
    if (strcmp(seg[0], "nodes") == 0 && n <= 2) {
      if (n == 1) {
        json_t *a = json_array();
        for (size_t i = 0; i < v->n_nodes; i++)
          json_array_append_new(a, node_json(v->node_v[i].dcos));
        body = json_pack("{so}", "nodes", list_or_null(a));
      } else
        body = node_route(v, NULL, seg, n, &missing);
    } else {
      /* Everything else needs the units across the nodes. */
      if (!(x = units_of(v)))
        return -ENOMEM;
      if (strcmp(seg[0], "report") == 0) {
        body = report_json(v, x);
        ret->attachment = n == 2;
      } else if (strcmp(seg[0], "units") == 0 && n == 1) {
        json_t *a = json_array();
        for (size_t i = 0; i < x->n; i++)
          json_array_append_new(a, unit_json(&x->v[i], x->v[i].health));
        body = json_pack("{so}", "units", list_or_null(a));
      } else if (strcmp(seg[0], "units") == 0)
        body = unit_route(x, seg, n, &missing);
      else
        body = node_route(v, x, seg, n, &missing);
    }
    if (missing)
      return reply_text(ret, 404, missing, " not found");
  }
  /* DC/OS's encoder ends every body with a newline. */
  char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
  json_decref(body);
  if (text && asprintf(&ret->body, "%s\n", text) < 0)
    ret->body = NULL;
  free(text);
  if (!ret->body)
    return -ENOMEM;
  ret->len = strlen(ret->body);
  return 0;
}

void aggr_dcos_reply_done(struct aggr_dcos_reply *r) {
  if (!r)
    return;
  free(r->body);
  free(r->location);
  r->body = r->location = NULL;
}
