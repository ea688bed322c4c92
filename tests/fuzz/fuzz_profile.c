/* libFuzzer target: the profile loader (common/profile.c). The input is one
 * or two profile files, separated by a line "#--- next profile ---": they
 * are loaded as a directory (mst_profile_set_load), as roles "a" and "b", so
 * that each file's own rules (components, stages, after, cycles) and the
 * cross-role requires ("b:STAGE") are both checked. The directory holds
 * symlinks to memfds, made once; each input only rewrites the memfds.
 * Seeds: the files of deploy/profiles and the profiles of tests/ (make_corpus.py). */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "mst/diag.h"
#include "mst/profile.h"

#define SEPARATOR "#--- next profile ---\n"

static struct fuzz_memfile files[2];
static char dir[PATH_MAX];
static char links[2][PATH_MAX];

static void cleanup(void) {
  for (size_t i = 0; i < 2; i++)
    if (links[i][0])
      unlink(links[i]);
  if (dir[0])
    rmdir(dir);
}

static int setup(void) {
  const char *tmp = getenv("TMPDIR");

  snprintf(dir, sizeof(dir), "%s/muster-fuzz-profile-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir))
    return -1;
  atexit(cleanup);
  for (size_t i = 0; i < 2; i++) {
    if (fuzz_memfile_set(&files[i], NULL, 0) < 0)
      return -1;
    snprintf(links[i], sizeof(links[i]), "%s/%c.ini", dir, (char)('a' + i));
    if (symlink(files[i].path, links[i]) < 0)
      return -1;
  }
  return 0;
}

/* What the daemons read of a loaded profile: every name a stage lists
 * resolves, and each profile's role is found in the set. */
static void walk(const struct mst_profile_set *set) {
  for (size_t i = 0; i < set->n; i++) {
    const struct mst_profile *p = set->profiles[i];
    FUZZ_CHECK(mst_profile_set_find(set, p->role) == p);
    FUZZ_CHECK(strlen(p->digest) == 64);
    for (size_t s = 0; s < p->n_stages; s++) {
      const struct mst_stage *st = &p->stages[s];
      for (char **c = st->components; *c; c++)
        FUZZ_CHECK(mst_profile_find_component(p, *c) != NULL);
      for (char **c = st->milestones; *c; c++)
        FUZZ_CHECK(mst_profile_find_component(p, *c) != NULL);
      FUZZ_CHECK(st->after != NULL);
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int ready;
  struct mst_profile_set *set = NULL;
  struct mst_diag diag = {0};
  const uint8_t *second = NULL;
  size_t first_size = size;

  if (!ready)
    ready = setup() == 0 ? 1 : -1;
  FUZZ_CHECK(ready == 1);

  second = memmem(data, size, SEPARATOR, strlen(SEPARATOR));
  if (second) {
    first_size = (size_t)(second - data);
    second += strlen(SEPARATOR);
  }
  if (fuzz_memfile_set(&files[0], data, first_size) < 0 ||
      fuzz_memfile_set(&files[1], second, second ? size - (size_t)(second - data) : 0) < 0)
    return 0;

  int r = mst_profile_set_load(dir, &set, &diag);
  FUZZ_CHECK(r == 0 || r == -EINVAL);
  FUZZ_CHECK(r == 0 ? set != NULL : diag.n > 0);
  if (set)
    walk(set);
  mst_profile_set_free(set);
  mst_diag_done(&diag);
  return 0;
}
