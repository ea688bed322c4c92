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
