/* The spool table (spools.h): an open hash of (node id, spool id) records
 * that doubles when full. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/spools.h"
#include "mst/hash.h"
#include "mst/macro.h"

uint64_t aggr_spools_hash(const char *node_id, const char *spool_id) {
  return mst_hash_str(mst_hash_str(MST_HASH_INIT, node_id), spool_id);
}

static int spools_grow(struct aggr_spools *t) {
  size_t n = t->n_buckets ? t->n_buckets * 2 : 256;
  struct aggr_spool **b = calloc(n, sizeof(*b));
  if (!b)
    return -ENOMEM;
  for (size_t i = 0; i < t->n_buckets; i++)
    while (t->buckets[i]) {
      struct aggr_spool *s = t->buckets[i];
      t->buckets[i] = s->next;
      size_t k = aggr_spools_hash(s->node_id, s->spool_id) & (n - 1);
      s->next = b[k];
      b[k] = s;
    }
  free(t->buckets);
  t->buckets = b;
  t->n_buckets = n;
  return 0;
}

struct aggr_spool *aggr_spools_find(const struct aggr_spools *t, const char *node_id,
                                    const char *spool_id) {
  if (!t->n_buckets)
    return NULL;
  size_t k = aggr_spools_hash(node_id, spool_id) & (t->n_buckets - 1);
  for (struct aggr_spool *s = t->buckets[k]; s; s = s->next)
    if (strcmp(s->node_id, node_id) == 0 && strcmp(s->spool_id, spool_id) == 0)
      return s;
  return NULL;
}

struct aggr_spool *aggr_spools_get(struct aggr_spools *t, const char *node_id,
                                   const char *spool_id) {
  struct aggr_spool *s = aggr_spools_find(t, node_id, spool_id);

  if (s)
    return s;
  if (t->n >= t->n_buckets && spools_grow(t) < 0)
    return NULL;
  s = calloc(1, sizeof(*s));
  if (!s)
    return NULL;
  s->node_id = strdup(node_id);
  s->spool_id = strdup(spool_id);
  if (!s->node_id || !s->spool_id) {
    free(s->node_id);
    free(s->spool_id);
    free(s);
    return NULL;
  }
  size_t k = aggr_spools_hash(node_id, spool_id) & (t->n_buckets - 1);
  s->next = t->buckets[k];
  t->buckets[k] = s;
  t->n++;
  return s;
}

int aggr_spool_new_from(const struct aggr_spool *s, uint64_t first, bool may_skip,
                        uint64_t *ret_from) {
  if (first > s->received_seq + 1 && !may_skip)
    return -ERANGE;
  *ret_from = MST_MAX(first, s->received_seq + 1);
  return 0;
}

void aggr_spool_held(struct aggr_spool *s, uint64_t seq, uint64_t fp) {
  if (seq > s->held_seq) {
    s->held_seq = seq;
    s->held_fp = fp;
  }
}

int aggr_spools_copied(struct aggr_spools *t, const char *node_id, const char *spool_id,
                       uint64_t seq, uint64_t fp) {
  struct aggr_spool *s = aggr_spools_get(t, node_id, spool_id);
  if (!s)
    return -ENOMEM;
  aggr_spool_held(s, seq, fp);
  s->received_seq = MST_MAX(s->received_seq, s->held_seq);
  return 0;
}

void aggr_spools_rewind(struct aggr_spools *t) {
  for (size_t i = 0; i < t->n_buckets; i++)
    for (struct aggr_spool *s = t->buckets[i]; s; s = s->next)
      s->received_seq = s->held_seq;
}

void aggr_spools_done(struct aggr_spools *t) {
  for (size_t i = 0; i < t->n_buckets; i++)
    while (t->buckets[i]) {
      struct aggr_spool *next = t->buckets[i]->next;
      free(t->buckets[i]->node_id);
      free(t->buckets[i]->spool_id);
      free(t->buckets[i]);
      t->buckets[i] = next;
    }
  free(t->buckets);
  *t = (struct aggr_spools){0};
}
