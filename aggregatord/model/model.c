/* The aggregator's live cluster model, the container (model.h): the nodes,
 * sorted by id so that look-ups are binary searches, each with its
 * components and an index to find one by name; the calls that apply what
 * the loop learns of a node (a Hello, a change, a snapshot, a frame, a
 * disconnect, a row of the database) and mark it dirty; the election's
 * outcome. It derives nothing: evaluate.c does, and the stage engine
 * (stage.c) and the cause graph (cause.c) read the nodes from here. Nothing
 * here calls them.
 *
 * Threads: every function here runs on the loop thread only. HTTP threads
 * never touch the model; they read immutable views rendered from it
 * (view.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "mst/hash.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/str.h"

/* Arrays grow in powers of two computed from their length alone, so the
 * model's structs need no capacity field. The capacity for length n is the
 * smallest of 4, 8, 16, ... that is >= n; an append reallocates only when n
 * is 0 or equals that capacity. Shrinking (retain) keeps the invariant. */
int aggr_model_grow_array(void *array, size_t n, size_t size) {
  void **v = array;
  if (n != 0 && (n < 4 || (n & (n - 1)) != 0))
    return 0;
  size_t cap = n == 0 ? 4 : n * 2;
  if (cap < n || cap > SIZE_MAX / size)
    return -ENOMEM;
  void *p = realloc(*v, cap * size);
  if (!p)
    return -ENOMEM;
  *v = p;
  return 0;
}

/* --- reasons -------------------------------------------------------------- */

static void refs_free(struct aggr_reason_ref *refs, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(refs[i].node);
    free(refs[i].component);
  }
  free(refs);
}

void aggr_reason_done(struct aggr_reason *r) {
  free(r->node);
  free(r->component);
  free(r->state);
  free(r->message);
  free(r->summary);
  refs_free(r->refs, r->n_refs);
}

void aggr_reasons_clear(struct aggr_reasons *r) {
  if (!r)
    return;
  for (size_t i = 0; i < r->n; i++)
    aggr_reason_done(&r->v[i]);
  free(r->v);
  r->v = NULL;
  r->n = 0;
}

/* --- nodes and components ------------------------------------------------- */

static void component_done(struct aggr_component *c) {
  free(c->name);
  free(c->output);
  free(c->description);
  free(c->display_name);
}

static void node_free(struct aggr_node *n) {
  if (!n)
    return;
  for (size_t i = 0; i < n->n_components; i++)
    component_done(&n->components[i]);
  free(n->components);
  free(n->comp_slots);
  free(n->id);
  free(n->role);
  free(n->hostname);
  free(n->boot_id);
  free(n->profile_digest);
  free(n->startup_cause);
  free(n->conflict_kept);
  free(n->conflict_refused);
  free(n->conflict_from);
  free(n->agent_fault);
  free(n->dcos_version);
  free(n->mesos_id);
  free(n->startup); /* one allocation (stage.h) */
  refs_free(n->waiting_for, n->n_waiting_for);
  free(n->waiting_on);
  aggr_reasons_clear(&n->reasons);
  aggr_reasons_clear(&n->root_causes);
  free(n);
}

/* The position of id, or where it would be inserted. */
static size_t node_lower_bound(const struct aggr_model *m, const char *id) {
  size_t lo = 0, hi = m->n_nodes;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (strcmp(m->nodes[mid]->id, id) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

struct aggr_node *aggr_model_find(const struct aggr_model *m, const char *id) {
  size_t i = node_lower_bound(m, id);
  if (i < m->n_nodes && strcmp(m->nodes[i]->id, id) == 0)
    return m->nodes[i];
  return NULL;
}

struct aggr_node *aggr_model_get(struct aggr_model *m, const char *id) {
  size_t i = node_lower_bound(m, id);
  if (i < m->n_nodes && strcmp(m->nodes[i]->id, id) == 0)
    return m->nodes[i];

  struct aggr_node *n = calloc(1, sizeof(*n));
  if (!n)
    return NULL;
  n->id = strdup(id);
  if (!n->id || aggr_model_grow_array(&m->nodes, m->n_nodes, sizeof(m->nodes[0])) < 0) {
    node_free(n);
    return NULL;
  }
  n->verdict = MST_VERDICT_UNKNOWN;
  n->dirty = true;
  memmove(&m->nodes[i + 1], &m->nodes[i], (m->n_nodes - i) * sizeof(m->nodes[0]));
  m->nodes[i] = n;
  m->n_nodes++;
  return n;
}

/* --- the component index (aggr_node.comp_slots) --- */

static void comp_slots_put(uint32_t *slots, size_t nslots, const char *name, size_t index) {
  size_t i = mst_hash_str(MST_HASH_INIT, name) & (nslots - 1);
  while (slots[i])
    i = (i + 1) & (nslots - 1);
  slots[i] = (uint32_t)(index + 1);
}

/* Rebuilds the index for at least n components. Without memory it is
 * dropped, and look-ups scan. */
static void comp_slots_rebuild(struct aggr_node *n, size_t at_least) {
  size_t nslots = n->n_comp_slots ? n->n_comp_slots : 16;
  while (nslots < 2 * at_least)
    nslots *= 2;
  free(n->comp_slots);
  n->comp_slots = calloc(nslots, sizeof(*n->comp_slots));
  n->n_comp_slots = n->comp_slots ? nslots : 0;
  for (size_t k = 0; n->comp_slots && k < n->n_components; k++)
    comp_slots_put(n->comp_slots, nslots, n->components[k].name, k);
}

struct aggr_component *aggr_node_find_component(const struct aggr_node *n, const char *name) {
  if (n->n_comp_slots) {
    size_t mask = n->n_comp_slots - 1;
    for (size_t i = mst_hash_str(MST_HASH_INIT, name) & mask;; i = (i + 1) & mask) {
      uint32_t s = n->comp_slots[i];
      if (!s)
        return NULL;
      if (strcmp(n->components[s - 1].name, name) == 0)
        return &n->components[s - 1];
    }
  }
  for (size_t i = 0; i < n->n_components; i++)
    if (strcmp(n->components[i].name, name) == 0)
      return &n->components[i];
  return NULL;
}

/* Finds or appends a component (marking the node); NULL on ENOMEM. */
static struct aggr_component *component_get(struct aggr_node *n, const char *name) {
  struct aggr_component *c = aggr_node_find_component(n, name);
  if (c)
    return c;
  char *copy = strdup(name);
  if (!copy ||
      aggr_model_grow_array(&n->components, n->n_components, sizeof(n->components[0])) < 0) {
    free(copy);
    return NULL;
  }
  c = &n->components[n->n_components++];
  *c = (struct aggr_component){.name = copy, .state = MST_STATE_UNSPECIFIED};
  n->dirty = true;
  if (2 * n->n_components > n->n_comp_slots)
    comp_slots_rebuild(n, n->n_components);
  else
    comp_slots_put(n->comp_slots, n->n_comp_slots, copy, n->n_components - 1);
  return c;
}

/* Removes every component whose keep[] entry is false. */
static void components_retain(struct aggr_node *n, const bool *keep) {
  size_t kept = 0;
  for (size_t i = 0; i < n->n_components; i++) {
    if (keep[i])
      n->components[kept++] = n->components[i];
    else
      component_done(&n->components[i]);
  }
  if (kept != n->n_components) {
    n->dirty = true;
    n->n_components = kept;
    comp_slots_rebuild(n, kept);
  }
}

/* --- model ---------------------------------------------------------------- */

int aggr_model_init(struct aggr_model *m, const struct mst_profile_set *profiles,
                    char *const *expected_masters, uint64_t stale_timeout_usec) {
  *m = (struct aggr_model){
      .profiles = profiles,
      .stale_timeout_usec = stale_timeout_usec,
      .verdict = MST_VERDICT_UNKNOWN,
  };
  aggr_operator_init(&m->operator);
  for (size_t i = 0; expected_masters && expected_masters[i]; i++) {
    struct aggr_node *n = aggr_model_get(m, expected_masters[i]);
    if (!n)
      goto oom;
    if (!n->role) {
      n->role = strdup("master");
      if (!n->role)
        goto oom;
    }
    n->expected_master = true;
  }
  return 0;

oom:
  aggr_model_done(m);
  return -ENOMEM;
}

void aggr_model_done(struct aggr_model *m) {
  if (!m)
    return;
  for (size_t i = 0; i < m->n_nodes; i++)
    node_free(m->nodes[i]);
  free(m->nodes);
  aggr_reasons_clear(&m->reasons);
  aggr_reasons_clear(&m->root_causes);
  free(m->leader_id);
  free(m->leader_http);
  free(m->storage_failing);
  aggr_reach_events_free(m->reach_events, m->n_reach_events);
  aggr_operator_done(&m->operator);
  *m = (struct aggr_model){0};
}

void aggr_model_set_storage(struct aggr_model *m, char *failing, bool lost) {
  free(m->storage_failing);
  m->storage_failing = failing;
  m->storage_lost = failing && lost;
}

/* What may stand between "http://" and the path in a Location header: a
 * host name, an IPv4 or a bracketed IPv6 address (with a zone), a port. */
static bool http_authority_ok(const char *s) {
  if (!s || !*s || *s == ':') /* no host */
    return false;
  for (const char *p = s; *p; p++) {
    char c = *p;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          strchr(".:-_~%[]", c)))
      return false;
  }
  return true;
}

int aggr_model_set_leader(struct aggr_model *m, bool is_leader, const char *leader_id,
                          const char *leader_http, uint64_t epoch) {
  if (leader_http && !http_authority_ok(leader_http)) {
    /* It came from a znode: shown with anything unprintable as '?'. */
    char shown[80];
    size_t k = 0;
    for (; leader_http[k] && k < sizeof(shown) - 1; k++) {
      unsigned char c = (unsigned char)leader_http[k];
      shown[k] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    shown[k] = 0;
    log_warning("The leader's HTTP address \"%s%s\" is not a host:port, ignoring it", shown,
                leader_http[k] ? "..." : "");
    leader_http = NULL;
  }
  bool have_leader = is_leader || leader_id;
  if (m->is_leader == is_leader && m->have_leader == have_leader && m->epoch == epoch &&
      mst_str_eq(m->leader_id, leader_id) && mst_str_eq(m->leader_http, leader_http))
    return 0;

  char *id = leader_id ? strdup(leader_id) : NULL;
  char *http = leader_http ? strdup(leader_http) : NULL;
  int r = 1;
  if ((leader_id && !id) || (leader_http && !http)) {
    free(id);
    free(http);
    id = http = NULL;
    have_leader = is_leader;
    r = -ENOMEM;
  }
  free(m->leader_id);
  free(m->leader_http);
  /* The next evaluation stamps when the lead began (lead_since_usec): the
   * model takes its times from its callers. */
  if (is_leader && !m->is_leader)
    m->lead_began = true;
  m->is_leader = is_leader;
  m->have_leader = have_leader;
  m->leader_id = id;
  m->leader_http = http;
  m->epoch = epoch;
  return r;
}

uint64_t aggr_node_silent_from(const struct aggr_model *m, const struct aggr_node *n) {
  return MST_MAX(n->last_seen_usec, m->lead_since_usec);
}

bool aggr_node_silent(const struct aggr_model *m, const struct aggr_node *n, uint64_t now) {
  /* A stale timeout of 0 disables silence detection; a clock that went
   * backwards (now < last_seen) is not silence. A stream closed for silence
   * was closed at that same moment by the stream's own (monotonic) clock,
   * which may run a few microseconds ahead of this one. */
  uint64_t from = aggr_node_silent_from(m, n);
  return n->reported && m->stale_timeout_usec > 0 &&
         ((n->closed_silent && !n->conn) || (now > from && now - from > m->stale_timeout_usec));
}

bool aggr_node_disconnected(const struct aggr_model *m, const struct aggr_node *n, uint64_t now) {
  return n->reported && !n->conn && !aggr_node_silent(m, n, now);
}

const char *aggr_reach_kind_name(enum aggr_reach_kind k) {
  return k == AGGR_REACH_UNREACHABLE ? "unreachable" : "reachable";
}

void aggr_reach_events_free(struct aggr_reach_event *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(v[i].node_id);
    free(v[i].boot_id);
    free(v[i].detail);
  }
  free(v);
}

struct aggr_reach_event *aggr_model_take_reach_events(struct aggr_model *m, size_t *ret_n) {
  *ret_n = m->n_reach_events;
  m->n_reach_events = 0;
  return TAKE_PTR(m->reach_events);
}

uint64_t aggr_model_first_contact_end(const struct aggr_model *m) {
  if (m->first_report_usec == 0)
    return 0;
  uint64_t end = m->first_report_usec + m->first_contact_window_usec;
  return end < m->first_report_usec ? UINT64_MAX : end;
}

bool aggr_node_awaited(const struct aggr_model *m, const struct aggr_node *n, uint64_t now) {
  /* Before any Hello nothing is awaited: the cluster is unknown then, and a
   * master that never reports must turn missing some time. */
  return !n->reported && n->expected_master && m->first_report_usec != 0 &&
         now < aggr_model_first_contact_end(m);
}

bool aggr_node_conflicted(const struct aggr_node *n, uint64_t now) {
  return now < n->conflict_until_usec;
}

/* --- what the loop learns of a node ----------------------------------------- */

/* Replaces the string *field with *copy, which it takes. */
static void string_replace(char **field, char **copy) {
  free(*field);
  *field = TAKE_PTR(*copy);
}

/* *ret is a copy of text, or NULL when text is NULL or "" (not known).
 * Returns 0 or -ENOMEM. */
static int text_copy(const char *text, char **ret) {
  *ret = text && text[0] ? strdup(text) : NULL;
  return text && text[0] && !*ret ? -ENOMEM : 0;
}

int aggr_model_apply_hello(struct aggr_model *m, struct aggr_node *n,
                           const struct aggr_hello_report *h, struct aggr_conn *conn,
                           uint64_t now_usec) {
  const char *role = h->role ? h->role : "", *boot_id = h->boot_id ? h->boot_id : "";
  bool new_role = !n->role || strcmp(n->role, role) != 0;
  bool new_boot = !n->boot_id || strcmp(n->boot_id, boot_id) != 0;
  /* Every copy first, so that running out of memory changes nothing. */
  _cleanup_free_ char *role_copy = new_role ? strdup(role) : NULL;
  _cleanup_free_ char *boot_copy = new_boot ? strdup(boot_id) : NULL;
  _cleanup_free_ char *hostname = strdup(h->hostname ? h->hostname : "");
  _cleanup_free_ char *digest = strdup(h->profile_digest ? h->profile_digest : "");
  bool has_cause = h->startup_cause && h->startup_cause[0];
  _cleanup_free_ char *cause = has_cause ? strdup(h->startup_cause) : NULL;
  _cleanup_free_ char *version = NULL, *mesos_id = NULL;
  if ((new_role && !role_copy) || (new_boot && !boot_copy) || !hostname || !digest ||
      (has_cause && !cause) || text_copy(h->dcos_version, &version) < 0 ||
      text_copy(h->mesos_id, &mesos_id) < 0)
    return -ENOMEM;

  if (new_role)
    string_replace(&n->role, &role_copy);
  if (new_boot) {
    string_replace(&n->boot_id, &boot_copy);
    n->have_snapshot = false;
  }
  string_replace(&n->hostname, &hostname);
  string_replace(&n->profile_digest, &digest);
  string_replace(&n->startup_cause, &cause);
  string_replace(&n->dcos_version, &version);
  if (mesos_id) /* "": the agent has not learned it yet (aggr_node_apply_mesos_id) */
    string_replace(&n->mesos_id, &mesos_id);
  n->boot_time_usec = h->boot_time_usec;
  const struct mst_profile *p = m->profiles ? mst_profile_set_find(m->profiles, n->role) : NULL;
  n->profile_drift = !p || strcmp(n->profile_digest, p->digest) != 0;
  if (!n->reported)
    n->first_seen_usec = now_usec;
  if (m->first_report_usec == 0)
    m->first_report_usec = now_usec;
  n->reported = true;
  n->last_seen_usec = now_usec;
  n->conn = conn;
  n->closed_silent = false;
  n->dirty = true;
  return 0;
}

/* Sets *field to text as a snapshot says it: NULL leaves it, "" makes it
 * not known. Returns 0, or -ENOMEM with the field not known. */
static int component_text_set(char **field, const char *text) {
  if (!text)
    return 0;
  if (*field && strcmp(*field, text) == 0)
    return 0;
  free(*field);
  *field = text[0] ? strdup(text) : NULL;
  return *field || !text[0] ? 0 : -ENOMEM;
}

/* Sets c to what r says. Returns 0, or -ENOMEM with the output left out
 * (NULL). */
static int component_set(struct aggr_component *c, const struct aggr_component_report *r) {
  c->check = r->check;
  c->state = r->state;
  c->since_usec = r->since_usec;
  c->health = r->health;
  c->rise = r->rise;
  c->fall = r->fall;
  if (component_text_set(&c->description, r->description) < 0 ||
      component_text_set(&c->display_name, r->display_name) < 0)
    return -ENOMEM;
  /* Outputs rarely change between reports: no copy then. */
  if (c->output && r->output && strcmp(c->output, r->output) == 0)
    return 0;
  free(c->output);
  c->output = r->output ? strdup(r->output) : NULL;
  return c->output || !r->output ? 0 : -ENOMEM;
}

bool aggr_node_other_boot(const struct aggr_node *n, const char *boot_id) {
  return boot_id && n->boot_id && strcmp(boot_id, n->boot_id) != 0;
}

int aggr_node_fits_components(const struct aggr_node *n, const char *const *names, size_t n_names,
                              size_t max) {
  size_t room = n->n_components < max ? max - n->n_components : 0, n_new = 0;
  /* The new names seen so far, by open addressing: at most room of them,
   * so the table (made at the first new name) is bounded by max whatever
   * the batch holds. */
  _cleanup_free_ const char **seen = NULL;
  size_t mask = 0;
  for (size_t i = 0; i < n_names; i++) {
    if (!names[i] || aggr_node_find_component(n, names[i]))
      continue;
    if (!seen) {
      size_t nslots = 16;
      while (nslots < 2 * (MST_MIN(room, n_names) + 1))
        nslots *= 2;
      seen = calloc(nslots, sizeof(*seen));
      if (!seen)
        return -ENOMEM;
      mask = nslots - 1;
    }
    size_t k = mst_hash_str(MST_HASH_INIT, names[i]) & mask;
    while (seen[k] && strcmp(seen[k], names[i]) != 0)
      k = (k + 1) & mask;
    if (seen[k])
      continue; /* named earlier in the batch */
    if (n_new == room)
      return 0;
    seen[k] = names[i];
    n_new++;
  }
  return 1;
}

int aggr_node_apply_change(struct aggr_node *n, const char *boot_id,
                           const struct aggr_component_report *r) {
  if (aggr_node_other_boot(n, boot_id))
    return 0;
  n->dirty = true;
  struct aggr_component *c = component_get(n, r->name);
  return c ? component_set(c, r) : -ENOMEM;
}

int aggr_node_apply_snapshot(struct aggr_node *n, const struct aggr_component_report *v,
                             size_t n_v) {
  n->dirty = true;
  for (size_t i = 0; i < n_v; i++) {
    struct aggr_component *c = component_get(n, v[i].name);
    if (!c || component_set(c, &v[i]) < 0)
      return -ENOMEM;
  }
  /* Found through the index: linear in the components, not quadratic. */
  _cleanup_free_ bool *keep = calloc(n->n_components + 1, sizeof(bool));
  if (!keep)
    return -ENOMEM;
  for (size_t i = 0; i < n_v; i++)
    keep[aggr_node_find_component(n, v[i].name) - n->components] = true;
  components_retain(n, keep);
  n->have_snapshot = true;
  return 0;
}

void aggr_node_apply_seen(struct aggr_node *n, uint64_t now_usec) {
  n->last_seen_usec = now_usec;
}

static bool string_same(const char *field, const char *s) {
  return field && strcmp(field, s) == 0;
}

int aggr_node_apply_conflict(struct aggr_node *n, const char *kept, const char *refused,
                             const char *from, uint64_t now_usec, uint64_t until_usec) {
  kept = kept ? kept : "";
  refused = refused ? refused : "";
  from = from ? from : "";
  /* A second agent retrying says the same each time: only the window moves. */
  bool same = string_same(n->conflict_kept, kept) && string_same(n->conflict_refused, refused) &&
              string_same(n->conflict_from, from);
  if (!same) {
    _cleanup_free_ char *kept_copy = strdup(kept);
    _cleanup_free_ char *refused_copy = strdup(refused);
    _cleanup_free_ char *from_copy = strdup(from);
    if (!kept_copy || !refused_copy || !from_copy)
      return -ENOMEM;
    string_replace(&n->conflict_kept, &kept_copy);
    string_replace(&n->conflict_refused, &refused_copy);
    string_replace(&n->conflict_from, &from_copy);
  }
  bool mark = !same || !aggr_node_conflicted(n, now_usec);
  if (mark)
    n->dirty = true;
  n->conflict_until_usec = MST_MAX(n->conflict_until_usec, until_usec);
  return mark;
}

int aggr_node_apply_fault(struct aggr_node *n, const char *fault, uint64_t since_usec,
                          uint64_t now_usec) {
  if (!fault || !*fault) {
    if (!n->agent_fault)
      return 0;
    free(TAKE_PTR(n->agent_fault));
    n->agent_fault_since_usec = 0;
    n->dirty = true;
    return 1;
  }
  /* The agent's clock says when; one ahead of ours says nothing. */
  uint64_t since = since_usec && since_usec <= now_usec ? since_usec : now_usec;
  /* Heartbeats repeat the fault every interval: no copy, no mark then. An
   * agent that did not say when keeps the first time heard. */
  if (n->agent_fault && strcmp(n->agent_fault, fault) == 0 &&
      (!since_usec || since == n->agent_fault_since_usec))
    return 0;
  _cleanup_free_ char *copy = strdup(fault);
  if (!copy)
    return -ENOMEM;
  string_replace(&n->agent_fault, &copy);
  n->agent_fault_since_usec = since;
  n->dirty = true;
  return 1;
}

int aggr_node_apply_mesos_id(struct aggr_node *n, const char *mesos_id) {
  _cleanup_free_ char *copy = NULL;

  /* Every heartbeat repeats it: no copy, no mark then. An agent that does
   * not know it (it just started, Mesos is down) does not make the node
   * forget it: the node is that Mesos node until Mesos names another. */
  if (!mesos_id || !mesos_id[0] || (n->mesos_id && strcmp(n->mesos_id, mesos_id) == 0))
    return 0;
  if (text_copy(mesos_id, &copy) < 0)
    return -ENOMEM;
  string_replace(&n->mesos_id, &copy);
  n->dirty = true;
  return 1;
}

void aggr_node_apply_disconnect(struct aggr_node *n, struct aggr_conn *conn, uint64_t now_usec,
                                bool silent) {
  if (n->conn != conn)
    return;
  /* last_seen stays the last frame's: silence counts from there. */
  n->conn = NULL;
  n->disconnected_usec = now_usec;
  n->closed_silent = silent;
  n->dirty = true;
}

int aggr_node_apply_restored(struct aggr_node *n, const char *role, const char *hostname,
                             uint64_t first_seen_usec, uint64_t last_seen_usec) {
  _cleanup_free_ char *role_copy = strdup(role ? role : "");
  _cleanup_free_ char *hostname_copy = strdup(hostname ? hostname : "");
  if (!role_copy || !hostname_copy)
    return -ENOMEM;
  string_replace(&n->role, &role_copy);
  string_replace(&n->hostname, &hostname_copy);
  n->first_seen_usec = first_seen_usec;
  n->last_seen_usec = last_seen_usec;
  n->reported = true;
  n->dirty = true;
  return 0;
}

/* --- operator state ------------------------------------------------------- */

const struct aggr_op_entry *aggr_node_maintenance(const struct aggr_model *m,
                                                  const struct aggr_node *n, const char *component,
                                                  uint64_t now_usec) {
  const struct aggr_op_entry *e =
      aggr_operator_find(&m->operator, AGGR_OP_MAINTENANCE, n->id, component);
  return aggr_op_active(e, now_usec) ? e : NULL;
}

const struct aggr_op_entry *aggr_node_acknowledged(const struct aggr_model *m,
                                                   const struct aggr_node *n,
                                                   const char *component) {
  return component ? aggr_operator_find(&m->operator, AGGR_OP_ACK, n->id, component) : NULL;
}

size_t aggr_node_maintenances(const struct aggr_model *m, const struct aggr_node *n,
                              uint64_t now_usec) {
  size_t first, k = aggr_operator_node_range(&m->operator, n->id, &first), count = 0;
  for (size_t i = first; i < first + k; i++)
    count +=
        m->operator.v[i].kind == AGGR_OP_MAINTENANCE && aggr_op_active(&m->operator.v[i], now_usec);
  return count;
}

uint64_t aggr_model_next_maintenance_end(const struct aggr_model *m, uint64_t now_usec) {
  uint64_t at = UINT64_MAX;
  for (size_t i = 0; i < m->operator.n; i++) {
    const struct aggr_op_entry *e = &m->operator.v[i];
    if (e->kind == AGGR_OP_MAINTENANCE && e->until_usec > now_usec)
      at = MST_MIN(at, e->until_usec);
  }
  return at;
}

/* Whether node's entries in a and b differ. */
static bool node_entries_differ(const struct aggr_operator *a, const struct aggr_operator *b,
                                const char *node) {
  size_t fa, fb, na = aggr_operator_node_range(a, node, &fa),
                 nb = aggr_operator_node_range(b, node, &fb);
  if (na != nb)
    return true;
  struct aggr_operator sa = {.v = a->v + fa, .n = na}, sb = {.v = b->v + fb, .n = nb};
  return !aggr_operator_equal(&sa, &sb);
}

static void node_remove_at(struct aggr_model *m, size_t i) {
  node_free(m->nodes[i]);
  memmove(&m->nodes[i], &m->nodes[i + 1], (m->n_nodes - i - 1) * sizeof(m->nodes[0]));
  m->n_nodes--;
}

size_t aggr_model_set_operator(struct aggr_model *m, struct aggr_operator *op) {
  size_t removed = 0;
  for (size_t i = 0; i < m->n_nodes;) {
    struct aggr_node *n = m->nodes[i];
    const struct aggr_op_entry *f = aggr_operator_find(op, AGGR_OP_FORGOTTEN, n->id, NULL);
    if (f && !n->conn && !n->expected_master && n->last_seen_usec <= f->until_usec) {
      node_remove_at(m, i);
      removed++;
      continue;
    }
    if (node_entries_differ(&m->operator, op, n->id))
      n->dirty = true;
    i++;
  }
  aggr_operator_done(&m->operator);
  m->operator= * op;
  aggr_operator_init(op);
  return removed;
}

int aggr_model_forget(struct aggr_model *m, const char *id) {
  size_t i = node_lower_bound(m, id);
  if (i >= m->n_nodes || strcmp(m->nodes[i]->id, id) != 0)
    return -ENOENT;
  if (m->nodes[i]->conn)
    return -EBUSY;
  node_remove_at(m, i);
  return 0;
}
