/* The web dashboard's files (aggregatord/dashboard/), embedded at build time
 * by cmake/embed_assets.cmake and served by http.c: GET / is index.html and
 * GET /ui/<name> is one of the files. */
#pragma once

#include <stddef.h>

struct aggr_asset {
  const char *path; /* "/ui/<name>" */
  const char *content_type;
  const unsigned char *data;
  size_t len;
};

/* The page's Content-Security-Policy: its script, styles and favicon come
 * from here only, no inline script or style, no frames, no plugins. Reads may
 * go to other aggregators (connect-src): a page whose aggregator died asks
 * the others' /readyz (which answer with Access-Control-Allow-Origin: *)
 * where the new leader is. Nothing else leaves the origin. */
#define AGGR_DASHBOARD_CSP                                                                         \
  "default-src 'self'; connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; "      \
  "frame-ancestors 'none'; form-action 'self'"

extern const struct aggr_asset aggr_dashboard_assets[];
extern const size_t aggr_dashboard_assets_count;

/* Looks up the asset for a request path ("/" is the page itself). Returns 0
 * and sets the out parameters when found, -1 otherwise. */
int aggr_dashboard_find(const char *path, const char **ret_type, const unsigned char **ret_data,
                        size_t *ret_len);
