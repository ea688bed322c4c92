/* libFuzzer target: the config parser (common/config.c). Each input is one
 * config file, read by mst_conf_load() with the aggregator's real key table
 * and again with the agent's (aggregatord/config_keys.c, agentd/
 * config_keys.c), then by the bare INI layer, mst_ini_parse(), with a
 * handler that splits section names and list values as the profile loader
 * does. Every diagnostic must name the file; every string a load set must
 * be freed by mst_conf_free() (LeakSanitizer checks).
 * Seeds: the files of deploy/examples and the configs of tests/ (make_corpus.py). */
#include <stdint.h>
#include <string.h>

#include "agent.h"
#include "aggr.h"
#include "fuzz.h"
#include "mst/config.h"
#include "mst/diag.h"
/* Both daemons name their table's header config_keys.h: include by path. */
#include "../../agentd/config_keys.h"
#include "../../aggregatord/config_keys.h"

static struct fuzz_memfile input;

static void check_diag(const struct mst_diag *d) {
  for (size_t i = 0; i < d->n; i++)
    FUZZ_CHECK(strncmp(d->lines[i], input.path, strlen(input.path)) == 0);
}

static void load_with(const struct mst_conf_key *keys, size_t n, void *target) {
  struct mst_diag diag = {0};
  int r = mst_conf_load(input.path, keys, n, target, &diag);

  FUZZ_CHECK(r == 0 || r == -EINVAL);
  FUZZ_CHECK(r == 0 ? diag.n == 0 : diag.n > 0);
  check_diag(&diag);
  mst_conf_free(keys, n, target);
  mst_diag_done(&diag);
}

static int on_ini(void *user, const char *section, const char *name, const char *value,
                  unsigned line) {
  size_t *lines = user;
  char *kind = NULL, *sname = NULL, **list = NULL;

  FUZZ_CHECK(line > 0 && line >= *lines);
  *lines = line;
  if (!name) {
    int r = mst_ini_section_split(section, &kind, &sname);
    FUZZ_CHECK(r == -EINVAL || r == -ENOMEM || r == 0 || r == 1);
    if (r >= 0)
      FUZZ_CHECK(kind && kind[0] && (r == 1) == (sname != NULL));
    free(kind);
    free(sname);
    return 0;
  }
  int n = mst_strv_split(value, &list);
  if (n >= 0) {
    FUZZ_CHECK(mst_strv_length(list) == (size_t)n);
    mst_strv_free(list);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct aggr_config aggr = {0};
  struct agent_config agent = {0};
  struct mst_diag diag = {0};
  size_t last_line = 0;

  if (fuzz_memfile_set(&input, data, size) < 0)
    return 0;
  load_with(aggr_config_keys, aggr_config_keys_count, &aggr);
  load_with(agent_config_keys, agent_config_keys_count, &agent);

  int r = mst_ini_parse(input.path, on_ini, &last_line, &diag);
  FUZZ_CHECK(r == 0 || r == -EINVAL);
  check_diag(&diag);
  mst_diag_done(&diag);
  return 0;
}
