/* The stage engine (stage.h): per node and per boot, which stages of the
 * role's profile are reached, in progress, late, failed or pending; the
 * stage waited on, percent and the estimate of the time left, from
 * durations learned from earlier boots.
 *
 * DESIGN
 *   Reaching is sticky and monotone within a boot, so evaluation is a
 *   fixpoint, in rounds. First every node reaches whatever depends on its
 *   own components alone. Then the stages gated by a "requires" are judged,
 *   all against what the nodes had reached before that step, and only then
 *   reached: the time a condition began (a quorum formed) must not depend on
 *   the order the nodes happen to be looked at. Reaching those may unblock
 *   more, on any node: another round. Then every node touched is settled:
 *   states, waiting stage, lateness and estimate. A node whose every stage
 *   is reached and that did not change is skipped altogether, and a
 *   requirement's answer is computed once per round rather than per node,
 *   so a large cluster costs little.
 *
 *   The reach time is taken from the agents' clocks (the components'
 *   since), not from when the aggregator happened to evaluate, and is
 *   clamped to [startable, now]: an aggregator that starts (or takes over)
 *   late still learns sensible durations from a node's snapshot.
 *
 *   A boot's durations are learned when the boot is over (startup_retire):
 *   the history a node is judged by is made of earlier boots only.
 *
 *   The estimate (p50 along the remaining critical path) changes with the
 *   clock, but a view is rendered only when something changes. So it is kept
 *   as a deadline plus a floor that the HTTP thread turns into seconds per
 *   request (view.c), and both stay the same between evaluations unless the
 *   facts change: a stage in progress is due at started + p50 (absolute);
 *   once overdue, it is due "now" and only the floor (the rest of the path)
 *   remains. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "mst/dynbuf.h"
#include "mst/macro.h"
#include "mst/str.h"
#include "model/stage.h"

/* Rounds of an evaluation: chains of requires are short; this only bounds a
 * profile set that keeps unblocking itself. */
#define STAGE_MAX_ROUNDS 64

const char *aggr_stage_state_to_string(enum aggr_stage_state s) {
  switch (s) {
  case AGGR_STAGE_PENDING:
    return "pending";
  case AGGR_STAGE_IN_PROGRESS:
    return "in_progress";
  case AGGR_STAGE_DONE:
    return "done";
  case AGGR_STAGE_FAILED:
    return "failed";
  case AGGR_STAGE_LATE:
    return "late";
  }
  return "pending";
}

size_t aggr_stage_index(const struct mst_profile *p, const char *name) {
  for (size_t i = 0; p && i < p->n_stages; i++)
    if (strcmp(p->stages[i].name, name) == 0)
      return i;
  return SIZE_MAX;
}

static int compare_strings(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

bool aggr_stage_milestone_only(const struct aggr_stage_graph *g, const char *component) {
  if (!g || g->n_milestone_only == 0)
    return false;
  return bsearch(&component, g->milestone_only, g->n_milestone_only, sizeof(char *),
                 compare_strings) != NULL;
}

/* --- learned durations ----------------------------------------------------- */

static int compare_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest sample with at least p% of the samples at or
 * below it. */
static uint64_t percentile(const uint64_t *sorted, size_t n, unsigned p) {
  size_t rank = (n * p + 99) / 100;
  return sorted[rank > 0 ? rank - 1 : 0];
}

static void samples_update(struct aggr_stage_samples *s) {
  uint64_t sorted[AGGR_STAGE_SAMPLES_MAX];
  memcpy(sorted, s->v, s->n * sizeof(sorted[0]));
  qsort(sorted, s->n, sizeof(sorted[0]), compare_u64);
  s->p50_usec = s->n ? percentile(sorted, s->n, 50) : 0;
  s->p95_usec = s->n ? percentile(sorted, s->n, 95) : 0;
}

struct aggr_stage_samples *aggr_stage_history_get(struct aggr_stage_history *h, const char *role,
                                                  const char *stage) {
  for (size_t i = 0; i < h->n; i++)
    if (strcmp(h->v[i]->role, role) == 0 && strcmp(h->v[i]->stage, stage) == 0)
      return h->v[i];

  if (!MST_ARRAY_APPEND(h->v, h->n))
    return NULL;
  struct aggr_stage_samples *s = calloc(1, sizeof(*s));
  if (!s)
    return NULL;
  s->role = strdup(role);
  s->stage = strdup(stage);
  if (!s->role || !s->stage) {
    free(s->role);
    free(s->stage);
    free(s);
    return NULL;
  }
  h->v[h->n++] = s;
  return s;
}

int aggr_stage_history_add(struct aggr_stage_history *h, const char *role, const char *stage,
                           uint64_t duration_usec) {
  struct aggr_stage_samples *s = aggr_stage_history_get(h, role, stage);
  if (!s)
    return -ENOMEM;
  s->v[s->next] = duration_usec;
  s->next = (s->next + 1) % AGGR_STAGE_SAMPLES_MAX;
  if (s->n < AGGR_STAGE_SAMPLES_MAX)
    s->n++;
  samples_update(s);
  return 0;
}

void aggr_stage_history_done(struct aggr_stage_history *h) {
  for (size_t i = 0; i < h->n; i++) {
    free(h->v[i]->role);
    free(h->v[i]->stage);
    free(h->v[i]);
  }
  free(h->v);
  *h = (struct aggr_stage_history){0};
}

/* --- a profile's graph -------------------------------------------------------- */

static void requirement_done(struct aggr_requirement *rq) {
  free(rq->text);
  free(rq->role);
  free(rq->stage);
}

static void graph_free(struct aggr_stage_graph *g) {
  if (!g)
    return;
  for (size_t i = 0; g->profile && i < g->profile->n_stages && g->stages; i++) {
    struct aggr_stage_node *sn = &g->stages[i];
    free(sn->after);
    free(sn->upstream);
    for (size_t k = 0; k < sn->n_requires; k++)
      requirement_done(&sn->requires[k]);
    free(sn->requires);
  }
  free(g->stages);
  free(g->milestone_only); /* the names belong to the profile */
  free(g);
}

/* ROLE:STAGE[@quorum|@all]; the loader validated it, anything else is
 * skipped (-EINVAL). */
static int requirement_parse(const char *text, struct aggr_requirement *ret) {
  const char *colon = strchr(text, ':');
  if (!colon || colon == text || !colon[1])
    return -EINVAL;
  const char *at = strchr(colon + 1, '@');
  size_t stage_len = at ? (size_t)(at - colon - 1) : strlen(colon + 1);
  enum aggr_requirement_mode mode = AGGR_REQUIRE_ANY;
  if (at && strcmp(at, "@quorum") == 0)
    mode = AGGR_REQUIRE_QUORUM;
  else if (at && strcmp(at, "@all") == 0)
    mode = AGGR_REQUIRE_ALL;
  else if (at)
    return -EINVAL;
  if (stage_len == 0)
    return -EINVAL;
  *ret = (struct aggr_requirement){
      .text = strdup(text),
      .role = strndup(text, (size_t)(colon - text)),
      .stage = strndup(colon + 1, stage_len),
      .mode = mode,
  };
  if (!ret->text || !ret->role || !ret->stage) {
    requirement_done(ret);
    return -ENOMEM;
  }
  return 0;
}

static void mark_upstream(const struct aggr_stage_graph *g, size_t i, bool *seen) {
  const struct aggr_stage_node *sn = &g->stages[i];
  for (size_t k = 0; k < sn->n_after; k++) {
    size_t j = sn->after[k];
    if (seen[j])
      continue;
    seen[j] = true;
    mark_upstream(g, j, seen);
  }
}

static uint64_t stage_tolerance(const struct mst_profile *p, const struct mst_stage *st) {
  uint64_t tol = AGGR_STAGE_LATE_TOLERANCE_USEC;
  char *const *lists[] = {st->components, st->milestones};
  for (size_t l = 0; l < ELEMENTSOF(lists); l++)
    for (size_t k = 0; lists[l] && lists[l][k]; k++) {
      const struct mst_component *c =
          p->components ? mst_profile_find_component(p, lists[l][k]) : NULL;
      if (c)
        tol = MST_MAX(tol, c->interval_usec);
    }
  return tol;
}

static int graph_build(const struct mst_profile *p, struct aggr_stage_graph **ret) {
  size_t n = p->n_stages;
  struct aggr_stage_graph *g = calloc(1, sizeof(*g));
  _cleanup_free_ bool *seen = calloc(n ? n : 1, sizeof(bool));

  if (!g || !seen)
    goto fail;
  g->profile = p;
  if (!(g->stages = calloc(n ? n : 1, sizeof(g->stages[0]))))
    goto fail;
  for (size_t i = 0; i < n; i++) {
    const struct mst_stage *st = &p->stages[i];
    struct aggr_stage_node *sn = &g->stages[i];
    size_t n_after = 0, n_req = 0;
    while (st->after && st->after[n_after])
      n_after++;
    while (st->requires && st->requires[n_req])
      n_req++;
    if (!(sn->after = calloc(n_after ? n_after : 1, sizeof(size_t))) ||
        !(sn->requires = calloc(n_req ? n_req : 1, sizeof(sn->requires[0]))))
      goto fail;
    for (size_t k = 0; k < n_after; k++) {
      size_t j = aggr_stage_index(p, st->after[k]);
      if (j != SIZE_MAX && j != i)
        sn->after[sn->n_after++] = j;
    }
    for (size_t k = 0; k < n_req; k++) {
      struct aggr_requirement *slot = &sn->requires[sn->n_requires];
      int r = requirement_parse(st->requires[k], slot);
      if (r == -ENOMEM)
        goto fail;
      if (r == 0)
        sn->n_requires++;
    }
    g->has_requires = g->has_requires || sn->n_requires > 0;
    sn->tolerance_usec = stage_tolerance(p, st);
  }
  for (size_t i = 0; i < n; i++)
    for (char *const *c = p->stages[i].milestones; c && *c; c++) {
      bool component = false, listed = false;
      for (size_t j = 0; j < n && !component; j++)
        for (char *const *d = p->stages[j].components; d && *d && !component; d++)
          component = strcmp(*d, *c) == 0;
      for (size_t j = 0; j < g->n_milestone_only && !listed; j++)
        listed = strcmp(g->milestone_only[j], *c) == 0;
      if (component || listed)
        continue;
      char **slot = MST_ARRAY_APPEND(g->milestone_only, g->n_milestone_only);
      if (!slot)
        goto fail;
      *slot = *c;
      g->n_milestone_only++;
    }
  /* The leader component (in no stage, profile.c) counts for health no more
   * than a milestone: a follower's is never healthy. */
  if (p->leader_component) {
    char **slot = MST_ARRAY_APPEND(g->milestone_only, g->n_milestone_only);
    if (!slot)
      goto fail;
    *slot = p->leader_component;
    g->n_milestone_only++;
  }
  if (g->n_milestone_only > 1)
    qsort(g->milestone_only, g->n_milestone_only, sizeof(char *), compare_strings);
  for (size_t i = 0; i < n; i++) {
    struct aggr_stage_node *sn = &g->stages[i];
    memset(seen, 0, n * sizeof(bool));
    mark_upstream(g, i, seen);
    seen[i] = false; /* a cycle (the loader refuses them) would list itself */
    if (!(sn->upstream = calloc(n ? n : 1, sizeof(size_t))))
      goto fail;
    for (size_t j = 0; j < n; j++)
      if (seen[j])
        sn->upstream[sn->n_upstream++] = j;
  }
  *ret = g;
  return 0;

fail: /* every failure is an allocation's */
  graph_free(g);
  return -ENOMEM;
}

const struct aggr_stage_graph *aggr_stage_graph_get(struct aggr_stage_graphs *gs,
                                                    const struct mst_profile *p) {
  for (size_t i = 0; i < gs->n; i++)
    if (gs->v[i]->profile == p)
      return gs->v[i];
  if (!MST_ARRAY_APPEND(gs->v, gs->n))
    return NULL;
  struct aggr_stage_graph *g;
  if (graph_build(p, &g) < 0)
    return NULL;
  gs->v[gs->n++] = g;
  return g;
}

void aggr_stage_graphs_done(struct aggr_stage_graphs *gs) {
  for (size_t i = 0; i < gs->n; i++)
    graph_free(gs->v[i]);
  free(gs->v);
  *gs = (struct aggr_stage_graphs){0};
}

/* --- per node state ------------------------------------------------------------ */

void aggr_stage_completions_free(struct aggr_stage_completion *c, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(c[i].node_id);
    free(c[i].role);
    free(c[i].boot_id);
    free(c[i].stage);
  }
  free(c);
}

uint64_t aggr_startup_eta_seconds(const struct aggr_startup *s, uint64_t now_usec) {
  uint64_t left = s->eta_floor_usec;
  if (s->eta_deadline_usec > now_usec)
    left = MST_MAX(left, s->eta_deadline_usec - now_usec);
  return (left + USEC_PER_SEC - 1) / USEC_PER_SEC;
}

/* A fresh startup of profile p for boot boot_id (NULL: unknown), which
 * began at boot_usec; NULL on ENOMEM. One allocation (stage.h): the stages,
 * then the boot id. */
static struct aggr_startup *startup_new(struct aggr_stage *st, const struct mst_profile *p,
                                        const struct aggr_stage_graph *g, const char *boot_id,
                                        uint64_t boot_usec) {
  size_t stages_size = p->n_stages * sizeof(struct aggr_stage_progress);
  size_t id_size = boot_id ? strlen(boot_id) + 1 : 0;
  struct aggr_startup *s = calloc(1, sizeof(*s) + stages_size + id_size);
  if (!s)
    return NULL;
  s->stages = (struct aggr_stage_progress *)(s + 1);
  if (boot_id)
    s->boot_id = memcpy((char *)s->stages + stages_size, boot_id, id_size);
  s->profile = p;
  s->graph = g;
  s->boot_usec = boot_usec;
  s->next_usec = s->confirm_usec = UINT64_MAX;
  s->waiting = p->n_stages;
  for (size_t i = 0; i < p->n_stages; i++) {
    s->stages[i].learned = aggr_stage_history_get(&st->history, p->role, p->stages[i].name);
    if (!s->stages[i].learned) {
      free(s);
      return NULL;
    }
  }
  return s;
}

static const struct mst_profile *node_profile(const struct aggr_model *m,
                                              const struct aggr_node *n) {
  return n->role && m->profiles ? mst_profile_set_find(m->profiles, n->role) : NULL;
}

/* A boot is over (the node booted again, or changed role): what its stages
 * took becomes history. Frees s. Returns 0 or -ENOMEM (s is freed anyway;
 * what did not fit is not learned). */
static int startup_retire(struct aggr_stage *st, struct aggr_startup *s) {
  int r = 0;
  for (size_t i = 0; s && i < s->profile->n_stages && r >= 0; i++) {
    const struct aggr_stage_progress *sp = &s->stages[i];
    if (sp->reached_usec > 0 && sp->reached_usec >= sp->started_usec)
      r = aggr_stage_history_add(&st->history, s->profile->role, s->profile->stages[i].name,
                                 sp->reached_usec - sp->started_usec);
  }
  free(s);
  return r;
}

/* Makes n->startup belong to the node's role and current boot: a new boot
 * id or another role starts over. A startup restored from the database
 * keeps its boot until the node's Hello names one. Sets *ret_reset when it
 * started over. */
static int startup_prepare(struct aggr_stage *st, const struct aggr_model *m, struct aggr_node *n,
                           bool *ret_reset) {
  const struct mst_profile *p = node_profile(m, n);
  struct aggr_startup *s = n->startup;

  *ret_reset = false;
  if (!p) {
    if (s) {
      n->dirty = true;
      *ret_reset = true;
      return startup_retire(st, TAKE_PTR(n->startup));
    }
    return 0;
  }
  bool same_boot = s && (!n->boot_id || (s->boot_id && strcmp(s->boot_id, n->boot_id) == 0));
  if (s && s->profile == p && same_boot) {
    if (s->boot_usec == 0 && n->boot_time_usec > 0)
      s->boot_usec = n->boot_time_usec;
    return 0;
  }
  const struct aggr_stage_graph *g = aggr_stage_graph_get(&st->graphs, p);
  struct aggr_startup *fresh = g ? startup_new(st, p, g, n->boot_id, n->boot_time_usec) : NULL;
  if (!fresh)
    return -ENOMEM;
  struct aggr_startup *old = n->startup;
  n->startup = fresh;
  n->dirty = true;
  *ret_reset = true;
  return startup_retire(st, old);
}

/* The node's components sorted by name, for lookups by name. */
struct comp_index {
  const struct aggr_component **v;
  size_t n;
};

static int compare_components(const void *a, const void *b) {
  const struct aggr_component *x = *(const struct aggr_component *const *)a;
  const struct aggr_component *y = *(const struct aggr_component *const *)b;
  return strcmp(x->name, y->name);
}

static int comp_index_build(const struct aggr_node *n, struct comp_index *ci) {
  *ci = (struct comp_index){0};
  if (n->n_components == 0)
    return 0;
  ci->v = malloc(n->n_components * sizeof(ci->v[0]));
  if (!ci->v)
    return -ENOMEM;
  for (size_t i = 0; i < n->n_components; i++)
    ci->v[i] = &n->components[i];
  ci->n = n->n_components;
  qsort(ci->v, ci->n, sizeof(ci->v[0]), compare_components);
  return 0;
}

static const struct aggr_component *comp_index_find(const struct comp_index *ci, const char *name) {
  size_t lo = 0, hi = ci->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(ci->v[mid]->name, name);
    if (c == 0)
      return ci->v[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

static bool state_up(enum mst_state s) {
  return s == MST_STATE_HEALTHY || s == MST_STATE_WARNING;
}

static bool state_failing(enum mst_state s) {
  return s != MST_STATE_HEALTHY && s != MST_STATE_STARTING && s != MST_STATE_WARNING;
}

/* How long a state carried over from before the boot must stand after the
 * agent's first snapshot of the boot to count: one check period (its
 * interval times rise, plus its timeout). An agent that finds the component
 * otherwise reports a change within that time; one that finds it the same
 * reports nothing, and the state stands confirmed. systemd units are read
 * at once. */
static uint64_t confirm_delay(const struct mst_profile *p, const char *name) {
  const struct mst_component *c = p->components ? mst_profile_find_component(p, name) : NULL;
  if (!c)
    return AGGR_STAGE_LATE_TOLERANCE_USEC;
  if (c->check == MST_CHECK_SYSTEMD)
    return AGGR_STAGE_LATE_TOLERANCE_USEC;
  return c->interval_usec * MST_MAX(c->rise, 1u) + c->timeout_usec;
}

/* All of names are up in this boot; *since_max is raised to the latest
 * since among them. A state older than the boot is what the agent
 * remembered from before it: it counts only once confirmed (see
 * confirm_delay); until then *ret_confirm_at says when it will be. */
static bool names_up(const struct aggr_startup *s, const struct comp_index *ci, char *const *names,
                     uint64_t now, uint64_t *since_max, uint64_t *ret_confirm_at) {
  for (size_t i = 0; names && names[i]; i++) {
    const struct aggr_component *c = comp_index_find(ci, names[i]);
    if (!c || !state_up(c->state))
      return false;
    if (s->boot_usec > 0 && c->since_usec < s->boot_usec) {
      uint64_t at = s->snapshot_usec + confirm_delay(s->profile, names[i]);
      if (s->snapshot_usec == 0 || now < at) {
        *ret_confirm_at = MST_MIN(*ret_confirm_at, s->snapshot_usec ? at : UINT64_MAX);
        return false;
      }
    }
    *since_max = MST_MAX(*since_max, c->since_usec);
  }
  return true;
}

static bool names_failing(const struct comp_index *ci, char *const *names) {
  for (size_t i = 0; names && names[i]; i++) {
    const struct aggr_component *c = comp_index_find(ci, names[i]);
    if (c && state_failing(c->state))
      return true;
  }
  return false;
}

/* --- evaluation ---------------------------------------------------------------- */

struct role_members {
  const char *role;
  struct aggr_node **v;
  size_t n;
};

/* A (node, component) standing in the way of a requirement, borrowed from
 * the model and the profiles for the length of an evaluation. */
struct waiting_ref {
  const char *node;
  const char *component; /* NULL: the node itself */
};

/* What stands in the way of something: the first AGGR_REFS_MAX pairs, and
 * how many there are. */
struct waiting_list {
  struct waiting_ref v[AGGR_REFS_MAX];
  size_t n, total;
};

/* What stands in the way of one requirement that does not hold, computed
 * once per evaluation while settling (nothing is reached then). */
struct waiting_memo {
  const struct aggr_requirement *rq;
  struct waiting_list list;
};

/* What a requirement came to, valid while no stage is reached anywhere:
 * every node asking about the same condition gets the same answer. */
struct requirement_memo {
  const struct aggr_requirement *rq;
  uint64_t generation;
  bool holds;
  uint64_t at;
};

struct stage_ctx {
  struct aggr_stage *st;
  struct aggr_model *m;
  uint64_t now;
  bool masters_configured;
  bool roles_built; /* roles, masters_configured and times: on first use */
  bool oom;         /* grouping them did not fit */
  struct role_members *roles;
  size_t n_roles;
  uint64_t *times;     /* scratch for requirement_holds, one per node */
  uint64_t generation; /* bumped by every stage reached */
  struct requirement_memo *memo;
  size_t n_memo;
  struct comp_index *indexes; /* per node, built on first use */
  bool *indexed;
  struct waiting_memo *waiting; /* what stands in the way of requirements, while settling */
  size_t n_waiting;
};

static void ctx_done(struct stage_ctx *ctx) {
  for (size_t i = 0; i < ctx->n_roles; i++)
    free(ctx->roles[i].v);
  free(ctx->roles);
  free(ctx->times);
  free(ctx->memo);
  for (size_t i = 0; ctx->indexes && i < ctx->m->n_nodes; i++)
    free(ctx->indexes[i].v);
  free(ctx->indexes);
  free(ctx->indexed);
  free(ctx->waiting);
}

/* Node i's components by name; they do not change during an evaluation.
 * NULL on ENOMEM. */
static const struct comp_index *ctx_index(struct stage_ctx *ctx, size_t i) {
  if (!ctx->indexes) {
    /* Most evaluations touch a few nodes: allocated on first use. */
    ctx->indexes = calloc(ctx->m->n_nodes, sizeof(ctx->indexes[0]));
    ctx->indexed = calloc(ctx->m->n_nodes, sizeof(ctx->indexed[0]));
    if (!ctx->indexes || !ctx->indexed)
      return NULL;
  }
  if (!ctx->indexed[i]) {
    if (comp_index_build(ctx->m->nodes[i], &ctx->indexes[i]) < 0)
      return NULL;
    ctx->indexed[i] = true;
  }
  return &ctx->indexes[i];
}

static void ctx_init(struct stage_ctx *ctx, struct aggr_stage *st, struct aggr_model *m,
                     uint64_t now) {
  *ctx = (struct stage_ctx){.st = st, .m = m, .now = now};
}

/* Groups the nodes by role, for requirements: done on the first one asked
 * about. -ENOMEM leaves the roles known so far. */
static int ctx_roles_build(struct stage_ctx *ctx) {
  struct aggr_model *m = ctx->m;
  ctx->roles_built = true;
  if (m->n_nodes == 0)
    return 0;
  ctx->roles = calloc(m->n_nodes, sizeof(ctx->roles[0]));
  ctx->times = calloc(m->n_nodes, sizeof(ctx->times[0]));
  if (!ctx->roles || !ctx->times)
    return -ENOMEM;
  for (size_t i = 0; i < m->n_nodes; i++) {
    struct aggr_node *n = m->nodes[i];
    ctx->masters_configured = ctx->masters_configured || n->expected_master;
    if (!n->role)
      continue;
    size_t k = 0;
    while (k < ctx->n_roles && strcmp(ctx->roles[k].role, n->role) != 0)
      k++;
    if (k == ctx->n_roles) {
      ctx->roles[k].role = n->role;
      if (!(ctx->roles[k].v = calloc(m->n_nodes, sizeof(ctx->roles[k].v[0]))))
        return -ENOMEM;
      ctx->n_roles++;
    }
    ctx->roles[k].v[ctx->roles[k].n++] = n;
  }
  return 0;
}

/* The nodes of role, or NULL (none, or no memory to group them). */
static const struct role_members *ctx_role(struct stage_ctx *ctx, const char *role) {
  if (!ctx->roles_built && ctx_roles_build(ctx) < 0)
    ctx->oom = true; /* aggr_stage_evaluate() says so */
  for (size_t k = 0; ctx->times && k < ctx->n_roles; k++)
    if (strcmp(ctx->roles[k].role, role) == 0)
      return &ctx->roles[k];
  return NULL;
}

/* Whether n counts among the nodes of its role for requirements: the
 * expected masters when configured, otherwise the nodes that reported. */
static bool role_member(const struct stage_ctx *ctx, const struct aggr_node *n) {
  if (ctx->masters_configured && n->role && strcmp(n->role, "master") == 0)
    return n->expected_master;
  return n->reported;
}

static size_t requirement_need(enum aggr_requirement_mode mode, size_t total) {
  switch (mode) {
  case AGGR_REQUIRE_QUORUM:
    return total / 2 + 1;
  case AGGR_REQUIRE_ALL:
    return total;
  default:
    return 1;
  }
}

/* Progress: whether rq holds on the nodes' current boots (reached stages,
 * sticky), and since when. */
static bool requirement_holds(struct stage_ctx *ctx, const struct aggr_requirement *rq,
                              uint64_t *ret_at) {
  struct requirement_memo *memo = NULL;
  for (size_t k = 0; k < ctx->n_memo && !memo; k++)
    if (ctx->memo[k].rq == rq)
      memo = &ctx->memo[k];
  if (memo && memo->generation == ctx->generation) {
    *ret_at = memo->at;
    return memo->holds;
  }
  if (!memo) {
    /* Without room to remember, the answer is computed every time. */
    memo = MST_ARRAY_APPEND(ctx->memo, ctx->n_memo);
    if (memo)
      ctx->n_memo++;
  }

  const struct role_members *rm = ctx_role(ctx, rq->role);
  size_t total = 0, n = 0;
  uint64_t at = 0;

  for (size_t i = 0; rm && i < rm->n; i++) {
    const struct aggr_node *x = rm->v[i];
    if (!role_member(ctx, x))
      continue;
    total++;
    const struct aggr_startup *s = x->startup;
    size_t k = s ? aggr_stage_index(s->profile, rq->stage) : SIZE_MAX;
    if (k != SIZE_MAX && s->stages[k].reached_usec > 0)
      ctx->times[n++] = s->stages[k].reached_usec;
  }
  size_t need = requirement_need(rq->mode, total);
  bool holds = total > 0 && need > 0 && n >= need;
  if (holds) {
    qsort(ctx->times, n, sizeof(ctx->times[0]), compare_u64);
    at = ctx->times[need - 1];
  }
  if (memo)
    *memo = (struct requirement_memo){
        .rq = rq, .generation = ctx->generation, .holds = holds, .at = at};
  *ret_at = at;
  return holds;
}

/* --- what a stage waits for on other nodes --------------------------------- */

static void waiting_add(struct waiting_list *l, const char *node, const char *component) {
  if (l->n < AGGR_REFS_MAX)
    l->v[l->n++] = (struct waiting_ref){node, component};
  l->total++;
}

/* Adds the components and milestones of stage k of node x that are not up
 * (all of them when x is not speaking); returns how many. */
static size_t waiting_add_stage(struct waiting_list *l, const struct aggr_node *x, bool speaking,
                                size_t k) {
  const struct mst_stage *st = &x->startup->profile->stages[k];
  char *const *lists[] = {st->components, st->milestones};
  size_t added = 0;
  for (size_t li = 0; li < ELEMENTSOF(lists); li++)
    for (size_t j = 0; lists[li] && lists[li][j]; j++) {
      const struct aggr_component *c = speaking ? aggr_node_find_component(x, lists[li][j]) : NULL;
      if (c && state_up(c->state))
        continue;
      waiting_add(l, x->id, lists[li][j]);
      added++;
    }
  return added;
}

/* Adds to l what stands in the way of rq, which does not hold: on each node
 * of the required role that has not reached the stage, the stage's members
 * that are not up; when all of them are, those of the stages before it not
 * reached yet; when none is down there either (or the node has no such
 * stage), the node itself. */
static void requirement_waiting(struct stage_ctx *ctx, const struct aggr_requirement *rq,
                                struct waiting_list *l) {
  const struct role_members *rm = ctx_role(ctx, rq->role);
  for (size_t i = 0; rm && i < rm->n; i++) {
    const struct aggr_node *x = rm->v[i];
    if (!role_member(ctx, x))
      continue;
    const struct aggr_startup *s = x->startup;
    size_t k = s ? aggr_stage_index(s->profile, rq->stage) : SIZE_MAX;
    if (k != SIZE_MAX && s->stages[k].reached_usec > 0)
      continue;
    size_t added = 0;
    if (k != SIZE_MAX) {
      bool speaking = x->reported && !aggr_node_silent(ctx->m, x, ctx->now);
      const struct aggr_stage_node *sn = &s->graph->stages[k];
      added = waiting_add_stage(l, x, speaking, k);
      for (size_t j = 0; added == 0 && j < sn->n_upstream; j++)
        if (s->stages[sn->upstream[j]].reached_usec == 0)
          added += waiting_add_stage(l, x, speaking, sn->upstream[j]);
    }
    if (added == 0)
      waiting_add(l, x->id, NULL);
  }
}

/* The memoized list of what stands in the way of rq; NULL on ENOMEM. */
static const struct waiting_list *ctx_requirement_waiting(struct stage_ctx *ctx,
                                                          const struct aggr_requirement *rq) {
  for (size_t k = 0; k < ctx->n_waiting; k++)
    if (ctx->waiting[k].rq == rq)
      return &ctx->waiting[k].list;
  struct waiting_memo *memo = MST_ARRAY_APPEND(ctx->waiting, ctx->n_waiting);
  if (!memo)
    return NULL;
  ctx->n_waiting++;
  *memo = (struct waiting_memo){.rq = rq};
  requirement_waiting(ctx, rq, &memo->list);
  return &memo->list;
}

static bool waiting_same(const struct aggr_node *n, const struct waiting_list *l) {
  if (n->n_waiting_for != l->n || n->n_waiting_for_total != l->total)
    return false;
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(n->waiting_for[i].node, l->v[i].node) != 0 ||
        !mst_str_eq(n->waiting_for[i].component, l->v[i].component))
      return false;
  return true;
}

static void waiting_clear(struct aggr_node *n) {
  for (size_t i = 0; i < n->n_waiting_for; i++) {
    free(n->waiting_for[i].node);
    free(n->waiting_for[i].component);
  }
  free(n->waiting_for);
  n->waiting_for = NULL;
  n->n_waiting_for = n->n_waiting_for_total = 0;
}

/* Sets what the node's waited-on stage waits for on other nodes
 * (aggr_node.waiting_for): the requirements of that stage that do not hold,
 * when they are all that holds it back. Marks the node when it changed.
 * Returns 0 or -ENOMEM (then the list is left empty). */
static int startup_waiting_for(struct stage_ctx *ctx, struct aggr_node *n) {
  const struct aggr_startup *s = n->startup;
  struct waiting_list l = {0};
  size_t w = s->waiting;
  if (n->reported && w < s->profile->n_stages && s->stages[w].state == AGGR_STAGE_PENDING) {
    const struct aggr_stage_node *sn = &s->graph->stages[w];
    bool after_done = true;
    for (size_t k = 0; k < sn->n_after; k++)
      after_done = after_done && s->stages[sn->after[k]].reached_usec > 0;
    for (size_t k = 0; after_done && k < sn->n_requires; k++) {
      uint64_t at;
      if (requirement_holds(ctx, &sn->requires[k], &at))
        continue;
      const struct waiting_list *r = ctx_requirement_waiting(ctx, &sn->requires[k]);
      if (!r)
        return -ENOMEM;
      for (size_t j = 0; j < r->n; j++)
        waiting_add(&l, r->v[j].node, r->v[j].component);
      l.total += r->total - r->n;
    }
  }
  if (waiting_same(n, &l))
    return 0;
  waiting_clear(n);
  n->dirty = true;
  if (l.n > 0 && !(n->waiting_for = calloc(l.n, sizeof(n->waiting_for[0]))))
    return -ENOMEM;
  for (size_t i = 0; i < l.n; i++) {
    struct aggr_reason_ref *ref = &n->waiting_for[n->n_waiting_for++];
    ref->node = strdup(l.v[i].node);
    ref->component = l.v[i].component ? strdup(l.v[i].component) : NULL;
    if (!ref->node || (l.v[i].component && !ref->component)) {
      waiting_clear(n);
      return -ENOMEM;
    }
  }
  n->n_waiting_for_total = l.total;
  return 0;
}

/* Whether stage i is startable, and since when (*ret_start). */
static bool stage_startable(struct stage_ctx *ctx, const struct aggr_node *n, size_t i,
                            uint64_t *ret_start) {
  const struct aggr_startup *s = n->startup;
  const struct aggr_stage_node *sn = &s->graph->stages[i];
  uint64_t start = s->boot_usec ? s->boot_usec : n->first_seen_usec;

  for (size_t k = 0; k < sn->n_after; k++) {
    uint64_t reached = s->stages[sn->after[k]].reached_usec;
    if (reached == 0)
      return false;
    start = MST_MAX(start, reached);
  }
  for (size_t k = 0; k < sn->n_requires; k++) {
    uint64_t at = 0;
    if (!requirement_holds(ctx, &sn->requires[k], &at))
      return false;
    start = MST_MAX(start, at);
  }
  *ret_start = MST_MIN(start, ctx->now);
  return true;
}

static int completion_push(struct aggr_stage *st, const struct aggr_node *n, size_t stage) {
  const struct aggr_startup *s = n->startup;
  const struct aggr_stage_progress *sp = &s->stages[stage];
  const char *name = s->profile->stages[stage].name;
  uint64_t duration = sp->reached_usec - sp->started_usec;

  if (aggr_model_grow_array(&st->completions, st->n_completions, sizeof(st->completions[0])) < 0)
    return -ENOMEM;
  struct aggr_stage_completion *c = &st->completions[st->n_completions];
  *c = (struct aggr_stage_completion){
      .node_id = strdup(n->id),
      .role = strdup(s->profile->role),
      .boot_id = strdup(s->boot_id ? s->boot_id : ""),
      .stage = strdup(name),
      .reached_usec = sp->reached_usec,
      .duration_usec = duration,
  };
  if (!c->node_id || !c->role || !c->boot_id || !c->stage) {
    free(c->node_id);
    free(c->role);
    free(c->boot_id);
    free(c->stage);
    return -ENOMEM;
  }
  st->n_completions++;
  return 0;
}

/* Whether the node's components can be trusted to reach stages: only once
 * the agent's snapshot of this boot is in, and only while it speaks. */
static bool startup_live(const struct stage_ctx *ctx, struct aggr_node *n) {
  if (!n->reported || !n->have_snapshot || aggr_node_silent(ctx->m, n, ctx->now))
    return false;
  if (n->startup->snapshot_usec == 0)
    n->startup->snapshot_usec = ctx->now;
  return true;
}

/* Whether stage i can be reached now, and when it would be: *ret_start
 * (when it became startable) and *ret_reached. */
static bool stage_reachable(struct stage_ctx *ctx, const struct aggr_node *n,
                            const struct comp_index *ci, size_t i, uint64_t *ret_start,
                            uint64_t *ret_reached) {
  const struct aggr_startup *s = n->startup;
  const struct mst_stage *st = &s->profile->stages[i];
  uint64_t start, since = 0;
  if (s->stages[i].reached_usec > 0 || !stage_startable(ctx, n, i, &start) ||
      !names_up(s, ci, st->components, ctx->now, &since, &n->startup->confirm_usec) ||
      !names_up(s, ci, st->milestones, ctx->now, &since, &n->startup->confirm_usec))
    return false;
  *ret_start = start;
  /* A broken clock at the epoch still reaches the stage. */
  *ret_reached = MST_MAX(MST_MIN(MST_MAX(since, start), ctx->now), 1);
  return true;
}

static int stage_reach(struct stage_ctx *ctx, struct aggr_node *n, size_t i, uint64_t start,
                       uint64_t reached) {
  ctx->generation++;
  n->startup->stages[i].started_usec = start;
  n->startup->stages[i].reached_usec = reached;
  return completion_push(ctx->st, n, i);
}

/* Reaches every stage without a "requires" of its own that the node's
 * components allow (they depend on this node alone). Returns 1 when some
 * stage was reached, 0 when none, or -ENOMEM. */
static int startup_advance_local(struct stage_ctx *ctx, struct aggr_node *n,
                                 const struct comp_index *ci) {
  struct aggr_startup *s = n->startup;
  size_t total = s->profile->n_stages;
  bool any = false;

  if (!startup_live(ctx, n))
    return 0;
  for (size_t sweep = 0; sweep <= total; sweep++) {
    bool changed = false;
    for (size_t i = 0; i < total; i++) {
      uint64_t start, reached;
      if (s->graph->stages[i].n_requires > 0 || !stage_reachable(ctx, n, ci, i, &start, &reached))
        continue;
      int r = stage_reach(ctx, n, i, start, reached);
      if (r < 0)
        return r;
      changed = any = true;
    }
    if (!changed)
      break;
  }
  return any;
}

/* A stage with a "requires" that can be reached, held back until every node
 * has been looked at (see aggr_stage_evaluate). */
struct gated_reach {
  struct aggr_node *node;
  size_t stage;
  uint64_t start, reached;
};

/* Collects the node's reachable stages that have a "requires". */
static int startup_collect_gated(struct stage_ctx *ctx, struct aggr_node *n,
                                 const struct comp_index *ci, struct gated_reach **v, size_t *n_v) {
  struct aggr_startup *s = n->startup;
  if (!startup_live(ctx, n))
    return 0;
  for (size_t i = 0; i < s->profile->n_stages; i++) {
    uint64_t start, reached;
    if (s->graph->stages[i].n_requires == 0 || !stage_reachable(ctx, n, ci, i, &start, &reached))
      continue;
    struct gated_reach *slot = MST_ARRAY_APPEND(*v, *n_v);
    if (!slot)
      return -ENOMEM;
    *slot = (struct gated_reach){.node = n, .stage = i, .start = start, .reached = reached};
    (*n_v)++;
  }
  return 0;
}

/* The time stage i is due to finish, along its stages not reached (memo:
 * 0 not computed, 1 on the stack, 2 done; when floor, stages in progress are
 * due now). Returns false when some stage on the way has too few samples. */
static bool stage_due(const struct aggr_startup *s, size_t i, uint64_t now, bool floor,
                      uint64_t *due, unsigned char *memo) {
  const struct aggr_stage_progress *sp = &s->stages[i];
  if (memo[i] == 2)
    return true;
  if (memo[i] == 1)
    return true; /* a cycle: the loader refuses them; ignore the edge */
  memo[i] = 1;
  if (!aggr_stage_samples_known(sp->learned))
    return false;
  uint64_t p50 = sp->learned->p50_usec;
  if (sp->startable) {
    due[i] = floor ? now : MST_MAX(sp->started_usec + p50, now);
  } else {
    const struct aggr_stage_node *sn = &s->graph->stages[i];
    uint64_t base = now;
    for (size_t k = 0; k < sn->n_after; k++) {
      size_t j = sn->after[k];
      if (s->stages[j].reached_usec > 0)
        continue;
      if (!stage_due(s, j, now, floor, due, memo))
        return false;
      base = MST_MAX(base, due[j]);
    }
    due[i] = base + p50;
  }
  memo[i] = 2;
  return true;
}

/* Sets eta_known, eta_deadline_usec and eta_floor_usec. */
static int startup_estimate(struct aggr_startup *s, uint64_t now) {
  size_t total = s->profile->n_stages;
  s->eta_known = false;
  s->eta_deadline_usec = s->eta_floor_usec = 0;
  if (s->n_reached == total) {
    s->eta_known = true;
    return 0;
  }
  _cleanup_free_ uint64_t *due = calloc(total, sizeof(uint64_t));
  _cleanup_free_ unsigned char *memo = calloc(total, 1);
  if (!due || !memo)
    return -ENOMEM;
  uint64_t live = now, floor = now;
  for (int pass = 0; pass < 2; pass++) {
    bool is_floor = pass == 1;
    memset(memo, 0, total);
    for (size_t i = 0; i < total; i++) {
      if (s->stages[i].reached_usec > 0)
        continue;
      if (!stage_due(s, i, now, is_floor, due, memo))
        return 0;
      if (is_floor)
        floor = MST_MAX(floor, due[i]);
      else
        live = MST_MAX(live, due[i]);
    }
  }
  s->eta_known = true;
  s->eta_floor_usec = floor - now;
  /* Only a deadline beyond the floor is absolute; otherwise the floor alone
   * holds, and stays the same from one evaluation to the next. */
  s->eta_deadline_usec = live - now > s->eta_floor_usec ? live : 0;
  return 0;
}

/* States, the stage waited on, lateness and the estimate, at ctx->now. */
static int startup_settle(struct stage_ctx *ctx, struct aggr_node *n, const struct comp_index *ci) {
  struct aggr_startup *s = n->startup;
  size_t total = s->profile->n_stages;
  bool live = n->reported && n->have_snapshot && !aggr_node_silent(ctx->m, n, ctx->now);
  size_t first_startable = total, first_ready = total, first_open = total;

  s->n_reached = 0;
  s->done_usec = 0;
  s->late = false;
  s->next_usec = UINT64_MAX;
  if (!n->reported) {
    /* An expected master that never reported: nothing has started. */
    for (size_t i = 0; i < total; i++)
      s->stages[i] = (struct aggr_stage_progress){.learned = s->stages[i].learned};
    s->waiting = total > 0 ? 0 : total;
    s->evaluated = true;
    return startup_estimate(s, ctx->now);
  }
  for (size_t i = 0; i < total; i++) {
    struct aggr_stage_progress *sp = &s->stages[i];
    const struct mst_stage *st = &s->profile->stages[i];
    /* A silent node shows its last known states, but is never late. */
    bool failing = n->reported && n->have_snapshot && names_failing(ci, st->components);
    uint64_t start = 0;

    sp->late_at_usec = 0;
    if (sp->reached_usec > 0) {
      sp->startable = true;
      sp->state = failing ? AGGR_STAGE_FAILED : AGGR_STAGE_DONE;
      s->n_reached++;
      s->done_usec = MST_MAX(s->done_usec, sp->reached_usec);
      continue;
    }
    if (first_open == total)
      first_open = i;
    sp->startable = stage_startable(ctx, n, i, &start);
    sp->started_usec = sp->startable ? start : 0;
    if (!sp->startable) {
      sp->state = AGGR_STAGE_PENDING;
      /* Every after stage reached: waiting on another node. */
      const struct aggr_stage_node *sn = &s->graph->stages[i];
      bool after_done = true;
      for (size_t k = 0; k < sn->n_after; k++)
        after_done = after_done && s->stages[sn->after[k]].reached_usec > 0;
      if (after_done && first_ready == total)
        first_ready = i;
      continue;
    }
    if (first_startable == total)
      first_startable = i;
    if (failing) {
      sp->state = AGGR_STAGE_FAILED;
      continue;
    }
    sp->state = AGGR_STAGE_IN_PROGRESS;
    if (live && aggr_stage_samples_known(sp->learned)) {
      /* "Past" the p95 and its tolerance: strictly after. */
      sp->late_at_usec = sp->started_usec + sp->learned->p95_usec +
                         s->graph->stages[i].tolerance_usec + USEC_PER_MSEC;
      if (ctx->now >= sp->late_at_usec) {
        sp->state = AGGR_STAGE_LATE;
        s->late = true;
      } else
        s->next_usec = MST_MIN(s->next_usec, sp->late_at_usec);
    }
  }
  if (s->n_reached < total) {
    s->done_usec = 0;
    s->next_usec = MST_MIN(s->next_usec, s->confirm_usec);
  }
  s->waiting = first_startable < total ? first_startable
               : first_ready < total   ? first_ready
                                       : first_open;
  s->evaluated = true;
  return startup_estimate(s, ctx->now);
}

/* What a view shows of a stage, kept from before a settle to tell whether
 * the node must be re-rendered. */
struct progress_seen {
  enum aggr_stage_state state;
  uint64_t started_usec, reached_usec, late_at_usec, p50_usec;
  size_t n_samples;
};

static void progress_remember(const struct aggr_startup *s, struct progress_seen *seen) {
  for (size_t i = 0; i < s->profile->n_stages; i++) {
    const struct aggr_stage_progress *sp = &s->stages[i];
    seen[i] = (struct progress_seen){
        .state = sp->state,
        .started_usec = sp->started_usec,
        .reached_usec = sp->reached_usec,
        .late_at_usec = sp->late_at_usec,
        .p50_usec = sp->learned->p50_usec,
        .n_samples = sp->learned->n,
    };
  }
}

static bool startup_same(const struct aggr_startup *a, const struct aggr_startup *before,
                         const struct progress_seen *seen) {
  if (a->n_reached != before->n_reached || a->waiting != before->waiting ||
      a->late != before->late || a->done_usec != before->done_usec ||
      a->eta_known != before->eta_known || a->eta_deadline_usec != before->eta_deadline_usec ||
      a->eta_floor_usec != before->eta_floor_usec || a->boot_usec != before->boot_usec)
    return false;
  for (size_t i = 0; i < a->profile->n_stages; i++) {
    const struct aggr_stage_progress *x = &a->stages[i];
    const struct progress_seen *y = &seen[i];
    /* What was learned shows only for stages not reached yet. */
    if (x->state != y->state || x->started_usec != y->started_usec ||
        x->reached_usec != y->reached_usec || x->late_at_usec != y->late_at_usec ||
        (x->reached_usec == 0 &&
         (x->learned->p50_usec != y->p50_usec || x->learned->n != y->n_samples)))
      return false;
  }
  return true;
}

static size_t count_reached(const struct aggr_startup *s) {
  size_t k = 0;
  for (size_t j = 0; j < s->profile->n_stages; j++)
    k += s->stages[j].reached_usec > 0;
  return k;
}

int aggr_stage_restore(struct aggr_stage *st, struct aggr_model *m, const char *node_id,
                       const char *role, const char *boot_id, uint64_t boot_usec, const char *stage,
                       uint64_t reached_usec, uint64_t duration_usec) {
  struct aggr_node *n = aggr_model_find(m, node_id);
  const struct mst_profile *p = n ? node_profile(m, n) : NULL;
  size_t k = aggr_stage_index(p, stage);
  if (!p || strcmp(p->role, role) != 0 || k == SIZE_MAX || reached_usec == 0)
    /* Nothing to resume: a boot that is over. */
    return aggr_stage_history_add(&st->history, role, stage, duration_usec);
  struct aggr_startup *s = n->startup;
  if (!s || s->profile != p || !s->boot_id || strcmp(s->boot_id, boot_id) != 0) {
    const struct aggr_stage_graph *g = aggr_stage_graph_get(&st->graphs, p);
    struct aggr_startup *fresh = g ? startup_new(st, p, g, boot_id, boot_usec) : NULL;
    if (!fresh)
      return -ENOMEM;
    struct aggr_startup *older = n->startup;
    n->startup = s = fresh;
    if (startup_retire(st, older) < 0)
      return -ENOMEM;
  }
  s->stages[k].reached_usec = reached_usec;
  s->stages[k].started_usec = reached_usec > duration_usec ? reached_usec - duration_usec : 0;
  n->dirty = true;
  return 0;
}

int aggr_stage_evaluate(struct aggr_stage *st, struct aggr_model *m, uint64_t now_usec) {
  _cleanup_(ctx_done) struct stage_ctx ctx = {0};
  _cleanup_free_ bool *touched = NULL;
  _cleanup_free_ struct progress_seen *seen = NULL;
  size_t max_stages = 0;
  bool requires_anywhere = false;
  int r = 0;

  if (m->n_nodes == 0)
    return 0;
  ctx_init(&ctx, st, m, now_usec);
  if (!(touched = calloc(m->n_nodes, sizeof(bool))))
    return -ENOMEM;

  /* Every startup belongs to its node's current boot before any pass reads
   * another node's (requirements). */
  for (size_t i = 0; i < m->n_nodes; i++) {
    struct aggr_node *n = m->nodes[i];
    bool reset = false;
    /* What startup_prepare() reads (role, boot) changes only with a Hello,
     * which marks the node dirty. */
    if ((n->dirty || !n->startup || !n->startup->evaluated) &&
        startup_prepare(st, m, n, &reset) < 0) {
      r = -ENOMEM;
      continue;
    }
    if (!n->startup)
      continue;
    const struct aggr_startup *s = n->startup;
    max_stages = MST_MAX(max_stages, s->profile->n_stages);
    requires_anywhere = requires_anywhere || s->graph->has_requires;
    /* A finished boot that did not change has nothing to recompute. */
    touched[i] = reset || n->dirty || !s->evaluated || s->n_reached < s->profile->n_stages ||
                 now_usec >= s->next_usec;
  }
  if (max_stages > 0 && !(seen = calloc(max_stages, sizeof(seen[0]))))
    return -ENOMEM;
  for (size_t i = 0; i < m->n_nodes; i++)
    if (m->nodes[i]->startup && touched[i])
      m->nodes[i]->startup->confirm_usec = UINT64_MAX;

  /* Rounds: first every node reaches what depends on itself alone; then the
   * stages gated by a "requires" that hold, judged on what every node had
   * reached before this step, so that the time a condition began does not
   * depend on the order nodes are looked at (a quorum formed at T, not when
   * the last node happened to be evaluated). Reaching those may unblock
   * more: another round. */
  for (int round = 0; round < STAGE_MAX_ROUNDS; round++) {
    _cleanup_free_ struct gated_reach *gated = NULL;
    size_t n_gated = 0;
    for (int phase = 0; phase < 2; phase++)
      for (size_t i = 0; i < m->n_nodes; i++) {
        struct aggr_node *n = m->nodes[i];
        struct aggr_startup *s = n->startup;
        if (!s || !touched[i] || count_reached(s) == s->profile->n_stages ||
            (phase == 1 && !s->graph->has_requires))
          continue;
        const struct comp_index *ci = ctx_index(&ctx, i);
        if (!ci)
          return -ENOMEM;
        int k = phase == 0 ? startup_advance_local(&ctx, n, ci)
                           : startup_collect_gated(&ctx, n, ci, &gated, &n_gated);
        if (k < 0)
          return k;
      }
    for (size_t k = 0; k < n_gated; k++)
      if (stage_reach(&ctx, gated[k].node, gated[k].stage, gated[k].start, gated[k].reached) < 0)
        return -ENOMEM;
    if (n_gated == 0 || !requires_anywhere)
      break;
    for (size_t i = 0; i < m->n_nodes; i++)
      if (m->nodes[i]->startup)
        touched[i] = true;
  }

  for (size_t i = 0; i < m->n_nodes; i++) {
    struct aggr_node *n = m->nodes[i];
    struct aggr_startup *s = n->startup;
    if (!s || !touched[i])
      continue;
    struct aggr_startup before = *s;
    progress_remember(s, seen);
    const struct comp_index *ci = ctx_index(&ctx, i);
    if (!ci)
      return -ENOMEM;
    int k = startup_settle(&ctx, n, ci);
    if (k >= 0)
      k = startup_waiting_for(&ctx, n);
    if (k < 0)
      r = k;
    if (!before.evaluated || !startup_same(s, &before, seen))
      n->dirty = true;
  }
  return ctx.oom ? -ENOMEM : r;
}

struct aggr_stage_completion *aggr_stage_take_completions(struct aggr_stage *st, size_t *ret_n) {
  *ret_n = st->n_completions;
  st->n_completions = 0;
  return TAKE_PTR(st->completions);
}

void aggr_stage_done(struct aggr_stage *st) {
  aggr_stage_graphs_done(&st->graphs);
  aggr_stage_history_done(&st->history);
  aggr_stage_completions_free(st->completions, st->n_completions);
  *st = (struct aggr_stage){0};
}
