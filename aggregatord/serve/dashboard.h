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

extern const struct aggr_asset aggr_dashboard_assets[];
extern const size_t aggr_dashboard_assets_count;

/* Looks up the asset for a request path ("/" is the page itself). Returns 0
 * and sets the out parameters when found, -1 otherwise. */
int aggr_dashboard_find(const char *path, const char **ret_type, const unsigned char **ret_data,
                        size_t *ret_len);
