/* FNV-1a, for the in-memory hash tables keyed by ids. Not for anything an
 * attacker could aim at a table's buckets with: those tables stay small or
 * are keyed by ids that authenticated agents chose. */
#pragma once

#include <stdint.h>

#define MST_HASH_INIT 14695981039346656037ULL

/* Folds the string s, and then a NUL as a separator, into h. */
static inline uint64_t mst_hash_str(uint64_t h, const char *s) {
  for (const char *p = s ? s : ""; *p; p++)
    h = (h ^ (unsigned char)*p) * 1099511628211ULL;
  return h * 1099511628211ULL;
}

/* Folds the 8 bytes of v, least significant first, into h. */
static inline uint64_t mst_hash_u64(uint64_t h, uint64_t v) {
  for (int i = 0; i < 8; i++, v >>= 8)
    h = (h ^ (v & 0xff)) * 1099511628211ULL;
  return h;
}

/* The fingerprint of one change as both ends store it: the agent in its
 * spool, the aggregator in its history (verbatim: the aggregator refuses
 * what it would have to alter). A Welcome carries the one of the row at
 * held_seq so that an agent whose spool was restored from a backup and then
 * overtook what is held sees that its row at that seq is another change.
 * The states are their names (mst_state_name()); NULL strings count as "".
 * Never 0, which the Welcome uses for "unknown". The fold is part of the
 * wire contract: tests/system/test_seq.py computes it too. */
static inline uint64_t mst_change_fingerprint(uint64_t seq, int64_t at_ms, const char *component,
                                              const char *from_state, const char *to_state,
                                              const char *boot_id) {
  uint64_t h = mst_hash_u64(mst_hash_u64(MST_HASH_INIT, seq), (uint64_t)at_ms);
  h = mst_hash_str(mst_hash_str(mst_hash_str(mst_hash_str(h, component), from_state), to_state),
                   boot_id);
  return h ? h : 1;
}
