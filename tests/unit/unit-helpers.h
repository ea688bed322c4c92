/* Small helpers shared by the unit tests: a private temporary directory per
 * test, writing files into it, and removing it again. Header-only so that
 * each tests/unit/test_*.c stays a single translation unit. */
#pragma once

#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline char *unit_tmpdir(void) {
  char *dir = strdup("/tmp/muster-unit-XXXXXX");
  cr_assert_not_null(dir);
  cr_assert_not_null(mkdtemp(dir), "mkdtemp failed");
  return dir;
}

static inline int unit_rm_entry(const char *path, const struct stat *st, int flag,
                                struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* Removes dir and everything in it, and frees the name. */
static inline void unit_rmtree(char *dir) {
  if (!dir)
    return;
  cr_expect_eq(nftw(dir, unit_rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0, "cannot remove %s", dir);
  free(dir);
}

/* Writes content to dir/name and returns the malloc'd path. */
static inline char *unit_write_file(const char *dir, const char *name, const char *content) {
  char *path = NULL;
  cr_assert_geq(asprintf(&path, "%s/%s", dir, name), 0);
  FILE *f = fopen(path, "we");
  cr_assert_not_null(f, "cannot create %s", path);
  cr_assert_eq(fwrite(content, 1, strlen(content), f), strlen(content));
  cr_assert_eq(fclose(f), 0);
  return path;
}
