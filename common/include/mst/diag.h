/* Collected diagnostics: config and profile loaders report every error in a
 * file as "path:line: message" here, and the caller prints them all (or a
 * unit test inspects them). Owned by the caller; not thread-safe. */
#pragma once

#include <stdarg.h>
#include <stddef.h>

#include "mst/macro.h"

struct mst_diag {
  char **lines; /* each "path:line: message", owned */
  size_t n;
};

/* Appends "path:line: message". line 0 means "no line": "path: message". */
void mst_diag_add(struct mst_diag *d, const char *path, unsigned line, const char *fmt, ...)
    _printf_(4, 5);
/* The same with a va_list, for loaders that wrap it. Returns 0, or -ENOMEM
 * when the line could not be kept (which it logs). */
int mst_diag_addv(struct mst_diag *d, const char *path, unsigned line, const char *fmt, va_list ap)
    _printf_(4, 0);

/* Prints every line to stderr, one per line, without log prefixes. */
void mst_diag_print(const struct mst_diag *d);

/* True when some line contains needle (for tests). */
int mst_diag_contains(const struct mst_diag *d, const char *needle);

void mst_diag_done(struct mst_diag *d);
