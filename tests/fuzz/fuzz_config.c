/* libFuzzer target: the config parser (common/config.c). Each input is one
 * config file, read by mst_conf_load() with the aggregator's real key table
 * and again with the agent's (aggregatord/config_keys.c, agentd/
 * config_keys.c), then by the bare INI layer, mst_ini_parse(), with a
 * handler that splits section names and list values as the profile loader
 * does. Every diagnostic must name the file; every string a load set must
 * be freed by mst_conf_free() (LeakSanitizer checks).
 *
 * The caps (MST_INI_LINE_MAX, MST_INI_FILE_MAX) are past libFuzzer's input
 * sizes, so two bytes expand: 0x01 into MST_INI_LINE_MAX + 1 bytes of 'x'
 * (its line is then over the line cap), 0x02 into a little over
 * MST_INI_FILE_MAX / 2 of comment lines (two of them put the file over the
 * file cap). Then a file over
 * the cap must be refused as a whole (-EFBIG, with nothing passed to a
 * handler), and a line over the cap that holds no NUL must be reported as
 * too long.
 * Seeds: the files of deploy/examples and the configs of tests/ (make_corpus.py). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
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

#define EXPAND_LINE     0x01
#define EXPAND_FILE     0x02
#define EXPAND_LINE_LEN (MST_INI_LINE_MAX + 1)
#define EXPAND_FILE_LEN (MST_INI_FILE_MAX / 2 + 1024)
#define EXPAND_FILE_MAX 3 /* expansions of EXPAND_FILE kept: past the cap already */

/* What the input expands to, and what the parser must then say of it. */
struct expanded {
  uint8_t *data;
  size_t size;
  bool too_large; /* over MST_INI_FILE_MAX */
  bool long_line; /* a line, without NUL, well over MST_INI_LINE_MAX (a BOM, a \r) */
};

static int expand(const uint8_t *data, size_t size, struct expanded *e) {
  size_t n_line = 0, n_file = 0;

  for (size_t i = 0; i < size; i++) {
    n_line += data[i] == EXPAND_LINE;
    n_file += data[i] == EXPAND_FILE && n_file < EXPAND_FILE_MAX;
  }
  e->size = 0;
  e->data = malloc(size + n_line * EXPAND_LINE_LEN + n_file * EXPAND_FILE_LEN);
  if (!e->data)
    return -1;
  n_file = 0;
  for (size_t i = 0; i < size; i++) {
    if (data[i] == EXPAND_LINE) {
      memset(e->data + e->size, 'x', EXPAND_LINE_LEN);
      e->size += EXPAND_LINE_LEN;
    } else if (data[i] == EXPAND_FILE && n_file < EXPAND_FILE_MAX) {
      /* Comment lines of 1 KiB: few lines, so each run stays quick. */
      for (size_t k = 0; k < EXPAND_FILE_LEN; k++)
        e->data[e->size + k] = k % 1024 == 1023 ? '\n' : '#';
      e->size += EXPAND_FILE_LEN;
      n_file++;
    } else
      e->data[e->size++] = data[i];
  }
  e->too_large = e->size > MST_INI_FILE_MAX;
  e->long_line = false;
  for (size_t start = 0; start < e->size;) {
    const uint8_t *nl = memchr(e->data + start, '\n', e->size - start);
    size_t len = (nl ? (size_t)(nl - e->data) : e->size) - start;
    if (len > MST_INI_LINE_MAX + 8 && !memchr(e->data + start, '\0', len))
      e->long_line = true;
    start += len + 1;
  }
  return 0;
}

static struct expanded file;

static void check_diag(const struct mst_diag *d) {
  for (size_t i = 0; i < d->n; i++)
    FUZZ_CHECK(strncmp(d->lines[i], input.path, strlen(input.path)) == 0);
}

static void load_with(const struct mst_conf_key *keys, size_t n, void *target) {
  struct mst_diag diag = {0};
  int r = mst_conf_load(input.path, keys, n, target, &diag);

  FUZZ_CHECK(file.too_large ? r == -EFBIG : r == 0 || r == -EINVAL);
  FUZZ_CHECK(r == 0 ? diag.n == 0 : diag.n > 0);
  if (file.long_line && !file.too_large)
    FUZZ_CHECK(r == -EINVAL && mst_diag_contains(&diag, "line too long"));
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
  int r;

  if (expand(data, size, &file) < 0)
    return 0;
  r = fuzz_memfile_set(&input, file.data, file.size);
  free(file.data);
  if (r < 0)
    return 0;
  load_with(aggr_config_keys, aggr_config_keys_count, &aggr);
  load_with(agent_config_keys, agent_config_keys_count, &agent);

  r = mst_ini_parse(input.path, on_ini, &last_line, &diag);
  FUZZ_CHECK(file.too_large ? r == -EFBIG && last_line == 0 : r == 0 || r == -EINVAL);
  if (file.long_line && !file.too_large)
    FUZZ_CHECK(r == -EINVAL && mst_diag_contains(&diag, "line too long"));
  check_diag(&diag);
  mst_diag_done(&diag);
  return 0;
}
