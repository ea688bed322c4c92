/* Collected diagnostics for the config and profile loaders: every problem of
 * a file is appended as one "path:line: message" string, so that a daemon can
 * print them all before refusing to start and a unit test can look for a
 * given line. Owned by the caller; not thread-safe. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mst/diag.h"
#include "mst/dynbuf.h"
#include "mst/log.h"

int mst_diag_addv(struct mst_diag *d, const char *path, unsigned line, const char *fmt,
                  va_list ap) {
  _cleanup_free_ char *msg = NULL;
  char *full = NULL;
  int r;

  r = vasprintf(&msg, fmt, ap);
  if (r < 0) {
    msg = NULL;
    goto oom;
  }

  if (line > 0)
    r = asprintf(&full, "%s:%u: %s", path ? path : "-", line, msg);
  else
    r = asprintf(&full, "%s: %s", path ? path : "-", msg);
  if (r < 0)
    goto oom;

  char **slot = MST_ARRAY_APPEND(d->lines, d->n);
  if (!slot) {
    free(full);
    goto oom;
  }
  *slot = full;
  d->n++;
  return 0;

oom:
  /* The diagnostic cannot be kept; at least say so where an operator looks. */
  log_error("out of memory recording a diagnostic for %s:%u", path ? path : "-", line);
  return -ENOMEM;
}

void mst_diag_add(struct mst_diag *d, const char *path, unsigned line, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  (void)mst_diag_addv(d, path, line, fmt, ap);
  va_end(ap);
}

void mst_diag_print(const struct mst_diag *d) {
  for (size_t i = 0; i < d->n; i++)
    fprintf(stderr, "%s\n", d->lines[i]);
  fflush(stderr);
}

int mst_diag_contains(const struct mst_diag *d, const char *needle) {
  for (size_t i = 0; i < d->n; i++)
    if (strstr(d->lines[i], needle))
      return 1;
  return 0;
}

void mst_diag_done(struct mst_diag *d) {
  if (!d)
    return;
  for (size_t i = 0; i < d->n; i++)
    free(d->lines[i]);
  free(d->lines);
  d->lines = NULL;
  d->n = 0;
}
