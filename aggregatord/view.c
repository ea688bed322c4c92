/* Rendering and publishing the immutable views that the HTTP threads serve
 * (see view.h for the thread rules).
 *
 * DESIGN
 *   Rendering. The loop renders JSON with jansson (compact, keys in insertion
 *   order, so equal models give equal bytes). An indexed body is stored as
 *   its content, the object without its closing brace, followed by
 *   ',"index":N}'. Publishing compares the new content with the previous
 *   body of the same resource: equal bytes keep the previous body, and with
 *   it the index. Clean nodes are not rendered at all: their bodies are
 *   shared with the previous view (body refcounts are loop-thread only, as
 *   only the loop creates and frees views). The node list is the
 *   concatenation of per-node summaries, so a publish costs a memcpy per
 *   clean node, not a re-render.
 *
 *   Text from agents (ids, hostnames, outputs) is not trusted to be UTF-8:
 *   invalid sequences are replaced by U+FFFD before jansson sees them, so one
 *   bad byte cannot stop the API from publishing.
 *
 *   Reclamation. Readers: gate++, load current, view->refs++, gate--. The
 *   loop retires the old view after swapping the pointer; once it has seen
 *   the gate at 0 after the swap, no reader can be between the load and the
 *   refcount bump on a retired view, so refs == 0 means nobody holds it and
 *   nobody can take it any more. All atomics are sequentially consistent,
 *   which that argument needs (store-load ordering between the swap and the
 *   gate read). Unlike a grace period, this holds however long a reader
 *   thread is descheduled.
 *
 *   Live fields. A node's startup "elapsed" grows with the clock while the
 *   node is starting. Rather than re-render (and bump the index) every
 *   second, its body carries a placeholder that aggr_body_live_copy() fills
 *   in per request; the index still marks only real changes. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mst/log.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "view.h"

/* The maximum ',"index":18446744073709551615}' takes 30 bytes. */
#define INDEX_SUFFIX_MAX 32

/* The placeholder for a live elapsed: no JSON string can produce these bytes,
 * since a '"' inside a string is always escaped. */
#define LIVE_KEY "\"elapsed\":"
#define LIVE_VALUE_INT LLONG_MIN
#define LIVE_VALUE "-9223372036854775808"

struct aggr_views {
  _Atomic(struct aggr_view *) current;
  atomic_uint gate; /* readers between loading current and bumping its refs */

  /* Loop thread only. */
  uint64_t index;
  struct aggr_view *retired;
  size_t n_retired;
};

/* --- UTF-8 and jansson helpers -------------------------------------------- */

/* The length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF), or 0. */
static size_t utf8_sequence(const unsigned char *p, size_t left) {
  unsigned c = p[0];
  size_t n;
  uint32_t cp;
  if (c < 0x80)
    return 1;
  if (c >= 0xC2 && c <= 0xDF)
    n = 2, cp = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF)
    n = 3, cp = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4)
    n = 4, cp = c & 0x07;
  else
    return 0;
  if (left < n)
    return 0;
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xC0) != 0x80)
      return 0;
    cp = cp << 6 | (p[i] & 0x3F);
  }
  if (n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)))
    return 0;
  if (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))
    return 0;
  return n;
}

static bool utf8_valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0; i < len;) {
    size_t k = utf8_sequence(p + i, len - i);
    if (k == 0)
      return false;
    i += k;
  }
  return true;
}

/* A valid UTF-8 copy of s: each invalid byte becomes U+FFFD. */
static char *utf8_lossy_dup(const char *s, size_t len, size_t *ret_len) {
  const unsigned char *p = (const unsigned char *)s;
  if (len > (SIZE_MAX - 1) / 3)
    return NULL;
  char *out = malloc(len * 3 + 1), *o = out;
  if (!out)
    return NULL;
  for (size_t i = 0; i < len;) {
    size_t k = utf8_sequence(p + i, len - i);
    if (k == 0) {
      memcpy(o, "\xEF\xBF\xBD", 3);
      o += 3;
      i++;
    } else {
      memcpy(o, p + i, k);
      o += k;
      i += k;
    }
  }
  *o = 0;
  *ret_len = (size_t)(o - out);
  return out;
}

/* A JSON string for s (null for NULL), repairing invalid UTF-8. NULL on
 * ENOMEM. */
static json_t *jstr(const char *s) {
  if (!s)
    return json_null();
  size_t len = strlen(s);
  if (utf8_valid(s, len))
    return json_stringn_nocheck(s, len);
  size_t fixed_len;
  _cleanup_free_ char *fixed = utf8_lossy_dup(s, len, &fixed_len);
  return fixed ? json_stringn_nocheck(fixed, fixed_len) : NULL;
}

/* RFC 3339 with milliseconds, or null for 0 ("never"). */
static json_t *jtime(uint64_t usec) {
  if (usec == 0)
    return json_null();
  char buf[MST_RFC3339_MAX];
  return json_string(mst_time_format_rfc3339(usec, buf, sizeof(buf)));
}

/* Object and array building that records the first failure in *ok. Both
 * jansson calls take the value's reference even when they fail. */
static void put(json_t *o, const char *key, json_t *v, bool *ok) {
  if (!o) {
    json_decref(v);
    *ok = false;
  } else if (!v || json_object_set_new_nocheck(o, key, v) < 0)
    *ok = false;
}

static void append(json_t *a, json_t *v, bool *ok) {
  if (!a) {
    json_decref(v);
    *ok = false;
  } else if (!v || json_array_append_new(a, v) < 0)
    *ok = false;
}

/* Returns o when everything went in, else drops it. */
static json_t *finish(json_t *o, bool ok) {
  if (ok && o)
    return o;
  json_decref(o);
  return NULL;
}

/* Compact bytes of o, which it consumes. NULL on ENOMEM or NULL o. */
static char *dump(json_t *o, size_t *ret_len) {
  if (!o)
    return NULL;
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  if (!s)
    return NULL;
  *ret_len = strlen(s);
  return s;
}

static const char *verdict_name(enum mst_verdict v) {
  const char *name = mst_verdict_to_string(v);
  return name ? name : "unknown";
}

/* --- rendering ------------------------------------------------------------ */

static json_t *reasons_json(const struct aggr_reasons *r) {
  bool ok = true;
  json_t *a = json_array();
  for (size_t i = 0; i < r->n && a; i++) {
    const struct aggr_reason *x = &r->v[i];
    json_t *o = json_object();
    put(o, "node", jstr(x->node), &ok);
    put(o, "component", jstr(x->component), &ok);
    put(o, "state", jstr(x->state), &ok);
    put(o, "message", jstr(x->message), &ok);
    append(a, o, &ok);
  }
  return finish(a, ok);
}

/* Root causes carry the output (a component's, or the node's reason) and the
 * time the failing state began, looked up in the model being rendered. */
static json_t *root_causes_json(const struct aggr_model *m, const struct aggr_reasons *r) {
  bool ok = true;
  json_t *a = json_array();
  for (size_t i = 0; i < r->n && a; i++) {
    const struct aggr_reason *x = &r->v[i];
    const struct aggr_node *n = x->node ? aggr_model_find(m, x->node) : NULL;
    const struct aggr_component *c = n && x->component ? aggr_node_find_component(n, x->component)
                                                       : NULL;
    uint64_t since = c ? c->since_usec : n && !x->component ? n->verdict_since_usec : 0;
    json_t *o = json_object();
    put(o, "node", jstr(x->node), &ok);
    put(o, "component", jstr(x->component), &ok);
    put(o, "state", jstr(x->state), &ok);
    put(o, "output", jstr(x->message), &ok);
    put(o, "since", jtime(since), &ok);
    append(a, o, &ok);
  }
  return finish(a, ok);
}

/* Startup progress from the role's profile and the live component states
 * (the stage engine with recorded completions is a later issue). A stage is
 * done when all its components and milestones are healthy. */
struct startup {
  const struct mst_profile *profile; /* NULL: role unknown */
  bool known;                        /* profile and reported */
  size_t n_done;
  size_t waiting;        /* the first stage not done, or n_stages */
  uint64_t done_at_usec; /* when all are done: the latest healthy-since */
};

static bool names_healthy(const struct aggr_node *n, char *const *names, uint64_t *done_at) {
  for (size_t i = 0; names && names[i]; i++) {
    const struct aggr_component *c = aggr_node_find_component(n, names[i]);
    if (!c || c->state != MST_STATE_HEALTHY)
      return false;
    *done_at = MST_MAX(*done_at, c->since_usec);
  }
  return true;
}

static bool stage_done(const struct aggr_node *n, const struct mst_stage *st, uint64_t *done_at) {
  return names_healthy(n, st->components, done_at) && names_healthy(n, st->milestones, done_at);
}

static void startup_compute(const struct aggr_model *m, const struct aggr_node *n,
                            struct startup *s) {
  *s = (struct startup){0};
  s->profile = n->role && m->profiles ? mst_profile_set_find(m->profiles, n->role) : NULL;
  s->known = s->profile && n->reported;
  if (!s->known)
    return;
  s->waiting = s->profile->n_stages;
  for (size_t i = 0; i < s->profile->n_stages; i++) {
    if (stage_done(n, &s->profile->stages[i], &s->done_at_usec))
      s->n_done++;
    else if (s->waiting == s->profile->n_stages)
      s->waiting = i;
  }
}

static bool startup_all_done(const struct startup *s) {
  return s->known && s->waiting == s->profile->n_stages;
}

static json_t *startup_percent(const struct startup *s) {
  if (!s->known)
    return json_integer(0);
  size_t total = s->profile->n_stages;
  return json_integer(total ? (json_int_t)(100 * s->n_done / total) : 100);
}

static json_t *startup_stage(const struct startup *s) {
  if (!s->known || s->profile->n_stages == 0)
    return json_null();
  size_t i = MST_MIN(s->waiting, s->profile->n_stages - 1);
  return jstr(s->profile->stages[i].name);
}

static const char *startup_state(const struct startup *s) {
  if (!s->known)
    return "unknown";
  return startup_all_done(s) ? "done" : "in_progress";
}

static void startup_put_summary(json_t *o, const struct startup *s, bool *ok) {
  put(o, "percent", startup_percent(s), ok);
  put(o, "stage", startup_stage(s), ok);
  put(o, "state", json_string(startup_state(s)), ok);
}

static json_t *names_json(char *const *names) {
  bool ok = true;
  json_t *a = json_array();
  for (size_t i = 0; names && names[i]; i++)
    append(a, jstr(names[i]), &ok);
  return finish(a, ok);
}

static json_t *startup_detail_json(const struct aggr_node *n, const struct startup *s) {
  bool ok = true;
  json_t *o = json_object();
  put(o, "boot_id", jstr(n->boot_id), &ok);
  put(o, "boot_time", jtime(n->reported ? n->boot_time_usec : 0), &ok);
  startup_put_summary(o, s, &ok);

  json_t *elapsed;
  if (!n->reported || n->boot_time_usec == 0)
    elapsed = json_null();
  else if (startup_all_done(s))
    elapsed = json_integer((json_int_t)((s->done_at_usec > n->boot_time_usec
                                             ? s->done_at_usec - n->boot_time_usec
                                             : 0) /
                                        USEC_PER_SEC));
  else
    elapsed = json_integer(LIVE_VALUE_INT); /* filled in per request */
  put(o, "elapsed", elapsed, &ok);
  put(o, "eta_seconds", json_null(), &ok);
  bool waiting = s->known && !startup_all_done(s);
  put(o, "waiting_on", waiting ? jstr(s->profile->stages[s->waiting].name) : json_null(), &ok);

  json_t *stages = json_array();
  for (size_t i = 0; s->profile && i < s->profile->n_stages; i++) {
    const struct mst_stage *st = &s->profile->stages[i];
    uint64_t unused = 0;
    const char *state = !s->known               ? "pending"
                        : stage_done(n, st, &unused) ? "done"
                        : i == s->waiting            ? "in_progress"
                                                     : "pending";
    json_t *so = json_object();
    put(so, "name", jstr(st->name), &ok);
    put(so, "state", json_string(state), &ok);
    put(so, "components", names_json(st->components), &ok);
    put(so, "milestones", names_json(st->milestones), &ok);
    append(stages, so, &ok);
  }
  put(o, "stages", stages, &ok);
  return finish(o, ok);
}

/* The fields a node's summary and its detail share, in that order. */
static void node_put_common(json_t *o, const struct aggr_node *n, bool *ok) {
  put(o, "id", jstr(n->id), ok);
  put(o, "role", jstr(n->role), ok);
  put(o, "hostname", jstr(n->hostname), ok);
  put(o, "verdict", json_string(verdict_name(n->verdict)), ok);
  put(o, "since", jtime(n->verdict_since_usec), ok);
  put(o, "last_seen", jtime(n->reported ? n->last_seen_usec : 0), ok);
  put(o, "connected", json_boolean(n->conn != NULL), ok);
  put(o, "boot_id", jstr(n->boot_id), ok);
  put(o, "profile_drift", json_boolean(n->profile_drift), ok);
}

static json_t *node_summary_json(const struct aggr_model *m, const struct aggr_node *n) {
  bool ok = true;
  struct startup s;
  startup_compute(m, n, &s);
  json_t *o = json_object();
  node_put_common(o, n, &ok);
  json_t *startup = json_object();
  startup_put_summary(startup, &s, &ok);
  put(o, "startup", startup, &ok);
  return finish(o, ok);
}

static json_t *component_json(const struct aggr_component *c) {
  bool ok = true;
  char health[32];
  /* HAProxy's counter: health runs from 0 to rise + fall - 1. */
  unsigned span = c->rise + c->fall > 0 ? c->rise + c->fall - 1 : 0;
  snprintf(health, sizeof(health), "%u/%u", c->health, span);
  json_t *o = json_object();
  put(o, "name", jstr(c->name), &ok);
  put(o, "check", jstr(mst_check_kind_to_string(c->check)), &ok);
  put(o, "state", jstr(mst_state_to_string(c->state)), &ok);
  put(o, "since", jtime(c->since_usec), &ok);
  put(o, "output", jstr(c->output), &ok);
  put(o, "health", json_string(health), &ok);
  put(o, "rise", json_integer(c->rise), &ok);
  put(o, "fall", json_integer(c->fall), &ok);
  return finish(o, ok);
}

static json_t *node_detail_json(const struct aggr_model *m, const struct aggr_node *n) {
  bool ok = true;
  struct startup s;
  startup_compute(m, n, &s);
  json_t *o = json_object();
  node_put_common(o, n, &ok);
  json_t *components = json_array();
  for (size_t i = 0; i < n->n_components; i++)
    append(components, component_json(&n->components[i]), &ok);
  put(o, "components", components, &ok);
  put(o, "startup", startup_detail_json(n, &s), &ok);
  put(o, "reasons", reasons_json(&n->reasons), &ok);
  put(o, "root_causes", root_causes_json(m, &n->root_causes), &ok);
  return finish(o, ok);
}

struct role_count {
  const char *role;
  unsigned n[_MST_VERDICT_MAX];
};

static int role_count_cmp(const void *a, const void *b) {
  return strcmp(((const struct role_count *)a)->role, ((const struct role_count *)b)->role);
}

/* {"<role>":{"<verdict>":N,...},...}: roles sorted, verdicts in their enum
 * order, zero counts left out. Nodes without a role are not counted. */
static json_t *counts_json(const struct aggr_model *m) {
  _cleanup_free_ struct role_count *roles = NULL;
  size_t n_roles = 0;
  bool ok = true;

  if (m->n_nodes > 0 && !(roles = calloc(m->n_nodes, sizeof(*roles))))
    return NULL;
  for (size_t i = 0; i < m->n_nodes; i++) {
    const struct aggr_node *n = m->nodes[i];
    if (!n->role || (unsigned)n->verdict >= _MST_VERDICT_MAX)
      continue;
    size_t k = 0;
    while (k < n_roles && strcmp(roles[k].role, n->role) != 0)
      k++;
    if (k == n_roles)
      roles[n_roles++].role = n->role;
    roles[k].n[n->verdict]++;
  }
  if (n_roles > 1)
    qsort(roles, n_roles, sizeof(*roles), role_count_cmp);

  json_t *o = json_object();
  for (size_t k = 0; k < n_roles && o; k++) {
    json_t *by_verdict = json_object();
    for (int v = 0; v < _MST_VERDICT_MAX; v++)
      if (roles[k].n[v] > 0)
        put(by_verdict, verdict_name(v), json_integer(roles[k].n[v]), &ok);
    size_t len = strlen(roles[k].role), fixed_len;
    _cleanup_free_ char *key = utf8_lossy_dup(roles[k].role, len, &fixed_len);
    if (!key) {
      json_decref(by_verdict);
      ok = false;
      break;
    }
    put(o, key, by_verdict, &ok);
  }
  return finish(o, ok);
}

static json_t *health_json(const struct aggr_model *m) {
  bool ok = true;
  json_t *o = json_object();
  put(o, "verdict", json_string(verdict_name(m->verdict)), &ok);
  put(o, "since", jtime(m->verdict_since_usec), &ok);
  put(o, "reasons", reasons_json(&m->reasons), &ok);
  put(o, "root_causes", root_causes_json(m, &m->root_causes), &ok);
  put(o, "counts", counts_json(m), &ok);
  json_t *leader = json_object();
  put(leader, "id", m->have_leader ? jstr(m->leader_id) : json_null(), &ok);
  put(leader, "epoch", json_integer((json_int_t)m->epoch), &ok);
  put(o, "leader", leader, &ok);
  return finish(o, ok);
}

/* --- bodies --------------------------------------------------------------- */

static void body_unref(struct aggr_body *b) {
  if (!b || --b->refs > 0)
    return;
  free(b->data);
  free(b->id);
  free(b);
}

static struct aggr_body *body_ref(struct aggr_body *b) {
  b->refs++;
  return b;
}

/* What a render produced, before it is settled into a body. data is a whole
 * JSON object "{...}" (or, unindexed, any bytes). */
struct rendered {
  char *data;
  size_t len;
  bool indexed;
  size_t live_at;
  uint64_t live_from_usec;
};

/* Turns a render into the resource's body: the previous body when the bytes
 * are the same (keeping its index), or a new body at index. Consumes r. */
static int body_settle(struct rendered *r, struct aggr_body *prev, uint64_t index, const char *id,
                       struct aggr_body **ret, bool *changed) {
  _cleanup_free_ char *data = TAKE_PTR(r->data);
  if (r->indexed && (r->len == 0 || data[r->len - 1] != '}'))
    return -EINVAL;
  size_t content_len = r->indexed ? r->len - 1 : r->len;

  if (prev && prev->content_len == content_len && memcmp(prev->data, data, content_len) == 0 &&
      prev->live_at == r->live_at && prev->live_from_usec == r->live_from_usec) {
    *ret = body_ref(prev);
    return 0;
  }

  struct aggr_body *b = calloc(1, sizeof(*b));
  if (!b)
    return -ENOMEM;
  if (r->indexed) {
    char *grown = realloc(data, content_len + INDEX_SUFFIX_MAX);
    if (!grown) {
      free(b);
      return -ENOMEM;
    }
    data = grown;
    int k = snprintf(data + content_len, INDEX_SUFFIX_MAX, ",\"index\":%" PRIu64 "}", index);
    b->len = content_len + (size_t)k;
  } else
    b->len = r->len;
  if (id && !(b->id = strdup(id))) {
    free(b);
    return -ENOMEM;
  }
  b->refs = 1;
  b->index = index;
  b->data = TAKE_PTR(data);
  b->content_len = content_len;
  b->live_at = r->live_at;
  b->live_from_usec = r->live_from_usec;
  *ret = b;
  *changed = true;
  return 0;
}

static int render(json_t *o, bool indexed, struct rendered *ret) {
  *ret = (struct rendered){.indexed = indexed, .live_at = SIZE_MAX};
  ret->data = dump(o, &ret->len);
  return ret->data ? 0 : -ENOMEM;
}

static int render_node_detail(const struct aggr_model *m, const struct aggr_node *n,
                              struct rendered *ret) {
  int r = render(node_detail_json(m, n), true, ret);
  if (r < 0)
    return r;
  const char *live = memmem(ret->data, ret->len, LIVE_KEY LIVE_VALUE, strlen(LIVE_KEY LIVE_VALUE));
  if (live) {
    ret->live_at = (size_t)(live - ret->data) + strlen(LIVE_KEY);
    ret->live_from_usec = n->boot_time_usec;
  }
  return 0;
}

int aggr_body_live_copy(const struct aggr_body *b, uint64_t now_usec, char **ret, size_t *ret_len) {
  if (b->live_at == SIZE_MAX)
    return 0;
  char number[24];
  uint64_t elapsed = now_usec > b->live_from_usec ? (now_usec - b->live_from_usec) / USEC_PER_SEC
                                                  : 0;
  int k = snprintf(number, sizeof(number), "%" PRIu64, elapsed);
  size_t tail = b->live_at + strlen(LIVE_VALUE);
  size_t len = b->live_at + (size_t)k + (b->len - tail);
  char *out = malloc(len + 1);
  if (!out)
    return -ENOMEM;
  memcpy(out, b->data, b->live_at);
  memcpy(out + b->live_at, number, (size_t)k);
  memcpy(out + b->live_at + k, b->data + tail, b->len - tail);
  out[len] = 0;
  *ret = out;
  *ret_len = len;
  return 1;
}

/* {"nodes":[summary,summary,...]}: the summaries are pasted, not re-rendered. */
static int render_node_list(const struct aggr_view *v, struct rendered *ret) {
  static const char head[] = "{\"nodes\":[", tail[] = "]}";
  size_t len = strlen(head) + strlen(tail);
  for (size_t i = 0; i < v->n_nodes; i++)
    len += v->node_v[i].summary->len + 1;
  char *data = malloc(len + 1), *p = data;
  if (!data)
    return -ENOMEM;
  p = mempcpy(p, head, strlen(head));
  for (size_t i = 0; i < v->n_nodes; i++) {
    if (i > 0)
      *p++ = ',';
    p = mempcpy(p, v->node_v[i].summary->data, v->node_v[i].summary->len);
  }
  p = mempcpy(p, tail, strlen(tail));
  *p = 0;
  *ret = (struct rendered){
      .data = data, .len = (size_t)(p - data), .indexed = true, .live_at = SIZE_MAX};
  return 0;
}

/* --- views ---------------------------------------------------------------- */

static void view_free(struct aggr_view *v) {
  if (!v)
    return;
  for (size_t i = 0; i < v->n_nodes; i++) {
    body_unref(v->node_v[i].detail);
    body_unref(v->node_v[i].summary);
  }
  free(v->node_v);
  body_unref(v->health);
  body_unref(v->nodes);
  free(v);
}

struct aggr_views *aggr_views_new(void) {
  struct aggr_views *vs = calloc(1, sizeof(*vs));
  if (!vs)
    return NULL;
  atomic_init(&vs->current, NULL);
  atomic_init(&vs->gate, 0);
  vs->index = mst_now_realtime_usec();
  return vs;
}

void aggr_views_free(struct aggr_views *vs) {
  if (!vs)
    return;
  struct aggr_view *v = atomic_exchange(&vs->current, NULL);
  if (v && atomic_load(&v->refs) != 0)
    log_warning("Freeing the current view with %u references held, ignoring",
                atomic_load(&v->refs));
  view_free(v);
  while (vs->retired) {
    v = vs->retired;
    vs->retired = v->next_retired;
    view_free(v);
  }
  free(vs);
}

static int node_render(const struct aggr_model *m, const struct aggr_node *n,
                       const struct aggr_view_node *prev, uint64_t index,
                       struct aggr_view_node *ret, bool *changed) {
  struct rendered r;
  int k = render_node_detail(m, n, &r);
  if (k < 0)
    return k;
  k = body_settle(&r, prev ? prev->detail : NULL, index, n->id, &ret->detail, changed);
  if (k < 0)
    return k;
  ret->id = ret->detail->id;
  if ((k = render(node_summary_json(m, n), false, &r)) < 0)
    return k;
  return body_settle(&r, prev ? prev->summary : NULL, index, NULL, &ret->summary, changed);
}

int aggr_view_publish(struct aggr_views *vs, struct aggr_model *m, bool ready) {
  struct aggr_view *old = atomic_load(&vs->current);
  uint64_t next = vs->index + 1;
  bool changed = false;
  struct rendered r;
  int k;

  struct aggr_view *v = calloc(1, sizeof(*v));
  if (!v)
    return -ENOMEM;
  atomic_init(&v->refs, 0);
  if (m->n_nodes > 0 && !(v->node_v = calloc(m->n_nodes, sizeof(*v->node_v)))) {
    free(v);
    return -ENOMEM;
  }

  /* Both node arrays are sorted by id: walk them side by side. */
  size_t j = 0;
  for (size_t i = 0; i < m->n_nodes; i++, v->n_nodes++) {
    const struct aggr_node *n = m->nodes[i];
    const struct aggr_view_node *prev = NULL;
    while (old && j < old->n_nodes && strcmp(old->node_v[j].id, n->id) < 0)
      j++;
    if (old && j < old->n_nodes && strcmp(old->node_v[j].id, n->id) == 0)
      prev = &old->node_v[j];

    struct aggr_view_node *e = &v->node_v[i];
    if (prev && !n->dirty) {
      *e = (struct aggr_view_node){
          .id = prev->id, .detail = body_ref(prev->detail), .summary = body_ref(prev->summary)};
      continue;
    }
    if ((k = node_render(m, n, prev, next, e, &changed)) < 0) {
      v->n_nodes++; /* e may hold a detail body already */
      goto fail;
    }
  }
  if ((k = render_node_list(v, &r)) < 0 ||
      (k = body_settle(&r, old ? old->nodes : NULL, next, NULL, &v->nodes, &changed)) < 0)
    goto fail;
  if ((k = render(health_json(m), true, &r)) < 0 ||
      (k = body_settle(&r, old ? old->health : NULL, next, NULL, &v->health, &changed)) < 0)
    goto fail;

  for (size_t i = 0; i < m->n_nodes; i++) {
    m->nodes[i]->index = v->node_v[i].detail->index;
    m->nodes[i]->dirty = false;
  }
  if (!changed && old && old->ready == ready) {
    view_free(v);
    return 0;
  }
  if (changed)
    vs->index = next;
  v->index = vs->index;
  v->ready = ready;

  old = atomic_exchange(&vs->current, v);
  if (old) {
    old->next_retired = vs->retired;
    vs->retired = old;
    vs->n_retired++;
  }
  aggr_views_reap(vs);
  return 1;

fail:
  if (k == -EINVAL)
    log_error("Rendering a view produced malformed JSON, ignoring");
  view_free(v);
  return k;
}

void aggr_views_reap(struct aggr_views *vs) {
  if (!vs->retired)
    return;
  /* Every view in the list was retired before this load (same thread): if no
   * reader is inside the gate now, none can still be about to take them. */
  if (atomic_load(&vs->gate) == 0)
    for (struct aggr_view *v = vs->retired; v; v = v->next_retired)
      v->quiesced = true;
  struct aggr_view **p = &vs->retired;
  while (*p) {
    struct aggr_view *v = *p;
    if (v->quiesced && atomic_load(&v->refs) == 0) {
      *p = v->next_retired;
      view_free(v);
      vs->n_retired--;
    } else
      p = &v->next_retired;
  }
}

size_t aggr_views_n_retired(const struct aggr_views *vs) {
  return vs->n_retired;
}

struct aggr_view *aggr_view_acquire(struct aggr_views *vs) {
  atomic_fetch_add(&vs->gate, 1);
  struct aggr_view *v = atomic_load(&vs->current);
  if (v)
    atomic_fetch_add(&v->refs, 1);
  atomic_fetch_sub(&vs->gate, 1);
  return v;
}

void aggr_view_release(struct aggr_view *v) {
  if (v)
    atomic_fetch_sub(&v->refs, 1);
}

const struct aggr_view_node *aggr_view_find_node(const struct aggr_view *v, const char *id) {
  size_t lo = 0, hi = v->n_nodes;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(v->node_v[mid].id, id);
    if (c == 0)
      return &v->node_v[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

char *aggr_reasons_to_json(const struct aggr_reasons *r) {
  size_t len;
  return dump(reasons_json(r), &len);
}
