/* The spool table: what the aggregator holds of each agent's spool.
 *
 * An agent's changes are numbered by (node id, spool id, seq). For each
 * spool the table keeps the highest seq committed to the history (held_seq:
 * what a Welcome tells the agent and what an Ack may cover), the fingerprint
 * of that row (held_fp, in the Welcome too) and the highest
 * seq handed to the writer (received_seq). The records are hashed by their
 * pair, so a Hello or a warm-copy commit finds its record in O(1) with
 * 10,000 nodes as with 10. Records are never freed while the daemon runs, so
 * writer completions can name them by pointer.
 *
 * A table belongs to one thread: the loop's (struct aggr's spools) to the
 * loop; the writer keeps one of its own as a cache of what the database
 * holds (only held_seq means anything there). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aggr_conn;

struct aggr_spool {
  char *node_id;
  char *spool_id;
  uint64_t held_seq;
  uint64_t held_fp; /* mst_change_fingerprint() of the row at held_seq; 0: unknown */
  uint64_t received_seq;
  struct aggr_conn *conn;  /* the stream currently feeding it, or NULL */
  struct aggr_spool *next; /* in its hash bucket */
};

struct aggr_spools {
  struct aggr_spool **buckets;
  size_t n_buckets; /* a power of two, or 0 */
  size_t n;
};

/* The hash of (node id, spool id), for other tables keyed by a spool. */
uint64_t aggr_spools_hash(const char *node_id, const char *spool_id);

/* The record for (node id, spool id), or NULL when there is none. */
struct aggr_spool *aggr_spools_find(const struct aggr_spools *t, const char *node_id,
                                    const char *spool_id);

/* Finds or creates the record for (node id, spool id); NULL when out of
 * memory. The table owns the record. */
struct aggr_spool *aggr_spools_get(struct aggr_spools *t, const char *node_id,
                                   const char *spool_id);

/* Where a batch of seqs starting at first (going up by one: envelope.c
 * checks that) may go in spool s: the seqs of a spool are handed
 * to the writer in order and without gaps, so that an Ack (everything up to
 * held_seq) never covers a seq that was not committed. The batch must start
 * at most one above received_seq; what it repeats below is already held or
 * on its way (a replay), and only the rest is new. Only the first batch of a
 * stream (may_skip) may start higher: the agent has pruned what lies
 * between, it will never come.
 *
 * Returns 0 and sets *ret_from to the first new seq (above the batch's last
 * when nothing is new), or -ERANGE for a gap. Changes nothing: the caller moves
 * received_seq to the batch's last once the new seqs are handed over. */
int aggr_spool_new_from(const struct aggr_spool *s, uint64_t first, bool may_skip,
                        uint64_t *ret_from);

/* A commit of spool s's changes up to seq, whose row at seq has fingerprint
 * fp: held_seq and held_fp move up to them (never down). */
void aggr_spool_held(struct aggr_spool *s, uint64_t seq, uint64_t fp);

/* What a follower copied from the leader is committed up to seq (its row
 * there has fingerprint fp): the record holds at least that much from now
 * on. Returns 0 or -ENOMEM. */
int aggr_spools_copied(struct aggr_spools *t, const char *node_id, const char *spool_id,
                       uint64_t seq, uint64_t fp);

/* Forgets what was received but not committed (on losing leadership: the
 * agents replay it to the next leader). */
void aggr_spools_rewind(struct aggr_spools *t);

/* Frees every record; the table is empty afterwards. */
void aggr_spools_done(struct aggr_spools *t);
