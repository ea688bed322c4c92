/* The embedded dashboard: a lookup in the generated table. */
#include <string.h>

#include "serve/dashboard.h"

int aggr_dashboard_find(const char *path, const char **ret_type, const unsigned char **ret_data,
                        size_t *ret_len) {
  if (strcmp(path, "/") == 0)
    path = "/ui/index.html";
  for (size_t i = 0; i < aggr_dashboard_assets_count; i++) {
    const struct aggr_asset *a = &aggr_dashboard_assets[i];
    if (strcmp(a->path, path) == 0) {
      *ret_type = a->content_type;
      *ret_data = a->data;
      *ret_len = a->len;
      return 0;
    }
  }
  return -1;
}
