/* Startup profiles: parsing and validating one role's INI file (components
 * and stages), and loading a directory of them.
 *
 * Parsing goes through mst_ini_parse(), so every error carries its line. A
 * profile is checked in two passes: values and keys while reading, then the
 * whole-file rules (required keys per check kind, stage references, cycles in
 * the stage graph) once everything is known, at the line of the declaration
 * or key at fault. The digest is the SHA-256 of the file's bytes, so agent
 * and aggregator can tell when they read different versions. */
#include <dirent.h>
#include <gnutls/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "mst/config.h"
#include "mst/duration.h"
#include "mst/dynbuf.h"
#include "mst/frame.h"
#include "mst/macro.h"
#include "mst/profile.h"
#include "mst/str.h"
#include "mst/utf8.h"

#define PROFILE_GRACE_MAX_USEC (7ULL * 24 * 3600 * USEC_PER_SEC)

enum component_key {
  COMP_CHECK,
  COMP_UNIT,
  COMP_COMMAND,
  COMP_URL,
  COMP_EXPECT_STATUS,
  COMP_EXPECT_BODY,
  COMP_ADDRESS,
  COMP_INTERVAL,
  COMP_TIMEOUT,
  COMP_RISE,
  COMP_FALL,
  _COMP_KEY_MAX,
};

static const char *const component_key_names[_COMP_KEY_MAX] = {
    [COMP_CHECK] = "check",
    [COMP_UNIT] = "unit",
    [COMP_COMMAND] = "command",
    [COMP_URL] = "url",
    [COMP_EXPECT_STATUS] = "expect_status",
    [COMP_EXPECT_BODY] = "expect_body",
    [COMP_ADDRESS] = "address",
    [COMP_INTERVAL] = "interval",
    [COMP_TIMEOUT] = "timeout",
    [COMP_RISE] = "rise",
    [COMP_FALL] = "fall",
};

enum stage_key {
  STAGE_COMPONENTS,
  STAGE_MILESTONES,
  STAGE_AFTER,
  STAGE_REQUIRES,
  _STAGE_KEY_MAX,
};

static const char *const stage_key_names[_STAGE_KEY_MAX] = {
    [STAGE_COMPONENTS] = "components",
    [STAGE_MILESTONES] = "milestones",
    [STAGE_AFTER] = "after",
    [STAGE_REQUIRES] = "requires",
};

enum profile_key {
  PROF_ROLE,
  PROF_STARTUP_GRACE,
  _PROF_KEY_MAX,
};

static const char *const profile_key_names[_PROF_KEY_MAX] = {
    [PROF_ROLE] = "role",
    [PROF_STARTUP_GRACE] = "startup_grace",
};

enum section_kind {
  SECTION_NONE,
  SECTION_PROFILE,
  SECTION_COMPONENT,
  SECTION_STAGE,
  SECTION_BAD, /* reported; its keys are skipped */
};

/* Where each key of an object was set (0: not set), for duplicates and for
 * the line of a whole-file error. */
struct component_lines {
  unsigned key[_COMP_KEY_MAX];
};
struct stage_lines {
  unsigned key[_STAGE_KEY_MAX];
};

struct profile_loader {
  struct mst_profile *p;
  const char *path;
  struct mst_diag *diag;
  enum section_kind section;
  size_t current; /* index of the component or stage being read */
  unsigned profile_key_line[_PROF_KEY_MAX];
  struct component_lines *component_lines; /* parallel to p->components */
  struct stage_lines *stage_lines;         /* parallel to p->stages */
  unsigned error;                          /* errors reported so far */
  int fatal;                               /* -ENOMEM */
};

_printf_(3, 4) static void profile_error(struct profile_loader *l, unsigned line, const char *fmt,
                                         ...) {
  va_list ap;
  int r;

  va_start(ap, fmt);
  r = mst_diag_addv(l->diag, l->path, line, fmt, ap);
  va_end(ap);
  if (r < 0)
    l->fatal = r;
  l->error++;
}

/* Names used in lists: no separators or quotes inside. They go to the
 * aggregator, which refuses strings that are not UTF-8. */
static bool name_is_valid(const char *s) {
  if (!s || !*s || !mst_utf8_valid(s))
    return false;
  for (; *s; s++)
    if (*s == ' ' || *s == '\t' || *s == ',' || *s == '"' || *s == ':' || *s == '@' ||
        (unsigned char)*s < 0x20)
      return false;
  return true;
}

/* A role travels in every Hello, which the aggregator refuses when it is
 * longer than MST_ROLE_MAX: such a profile is refused here instead. */
static bool role_is_valid(const char *s) {
  return name_is_valid(s) && strlen(s) <= MST_ROLE_MAX;
}

static char **strv_new_empty(void) {
  return calloc(1, sizeof(char *));
}

static void component_done(struct mst_component *c) {
  free(c->name);
  free(c->unit);
  free(c->command);
  free(c->url);
  free(c->expect_body);
  free(c->address);
}

static void stage_done(struct mst_stage *s) {
  free(s->name);
  mst_strv_free(s->components);
  mst_strv_free(s->milestones);
  mst_strv_free(s->after);
  mst_strv_free(s->requires);
}

void mst_profile_free(struct mst_profile *p) {
  if (!p)
    return;
  for (size_t i = 0; i < p->n_components; i++)
    component_done(&p->components[i]);
  for (size_t i = 0; i < p->n_stages; i++)
    stage_done(&p->stages[i]);
  free(p->components);
  free(p->stages);
  free(p->path);
  free(p->role);
  free(p);
}

const struct mst_component *mst_profile_find_component(const struct mst_profile *p,
                                                       const char *name) {
  for (size_t i = 0; i < p->n_components; i++)
    if (strcmp(p->components[i].name, name) == 0)
      return &p->components[i];
  return NULL;
}

static const struct mst_stage *profile_find_stage(const struct mst_profile *p, const char *name) {
  for (size_t i = 0; i < p->n_stages; i++)
    if (strcmp(p->stages[i].name, name) == 0)
      return &p->stages[i];
  return NULL;
}

/* --- sections --------------------------------------------------------------- */

static int component_add(struct profile_loader *l, const char *name, unsigned line) {
  struct mst_profile *p = l->p;
  const struct mst_component *prev = mst_profile_find_component(p, name);
  struct mst_component *components;
  struct component_lines *lines;

  if (prev) {
    profile_error(l, line, "duplicate component '%s' (first declared on line %u)", name,
                  prev->line);
    return -EINVAL;
  }
  components = MST_ARRAY_APPEND(p->components, p->n_components);
  if (!components)
    return -ENOMEM;
  lines = MST_ARRAY_APPEND(l->component_lines, p->n_components);
  if (!lines)
    return -ENOMEM;

  char *copy = strdup(name);
  if (!copy)
    return -ENOMEM;
  p->components[p->n_components] = (struct mst_component){
      .name = copy,
      .check = MST_CHECK_UNSPECIFIED,
      .expect_status = 200,
      .interval_usec = MST_PROFILE_DEFAULT_INTERVAL_USEC,
      .timeout_usec = MST_PROFILE_DEFAULT_TIMEOUT_USEC,
      .rise = 2,
      .fall = 3,
      .line = line,
  };
  l->component_lines[p->n_components] = (struct component_lines){{0}};
  l->current = p->n_components++;
  return 0;
}

static int stage_add(struct profile_loader *l, const char *name, unsigned line) {
  struct mst_profile *p = l->p;
  const struct mst_stage *prev = profile_find_stage(p, name);
  struct mst_stage *stages;
  struct stage_lines *lines;

  if (prev) {
    profile_error(l, line, "duplicate stage '%s' (first declared on line %u)", name, prev->line);
    return -EINVAL;
  }
  stages = MST_ARRAY_APPEND(p->stages, p->n_stages);
  if (!stages)
    return -ENOMEM;
  lines = MST_ARRAY_APPEND(l->stage_lines, p->n_stages);
  if (!lines)
    return -ENOMEM;

  struct mst_stage s = {.line = line};
  s.name = strdup(name);
  s.components = strv_new_empty();
  s.milestones = strv_new_empty();
  s.requires = strv_new_empty();
  /* after stays NULL until the end: it then defaults to the previous stage */
  if (!s.name || !s.components || !s.milestones || !s.requires) {
    stage_done(&s);
    return -ENOMEM;
  }
  p->stages[p->n_stages] = s;
  l->stage_lines[p->n_stages] = (struct stage_lines){{0}};
  l->current = p->n_stages++;
  return 0;
}

static int profile_on_section(struct profile_loader *l, const char *section, unsigned line) {
  _cleanup_free_ char *kind = NULL, *name = NULL;
  int r;

  l->section = SECTION_BAD;
  r = mst_ini_section_split(section, &kind, &name);
  if (r == -ENOMEM)
    return r;
  if (r < 0) {
    profile_error(l, line, "bad section header [%s] (write [component \"NAME\"])", section);
    return 0;
  }

  if (strcmp(kind, "profile") == 0 && r == 0) {
    l->section = SECTION_PROFILE;
    return 0;
  }
  if (strcmp(kind, "component") != 0 && strcmp(kind, "stage") != 0) {
    profile_error(l, line, "unknown section [%s]", section);
    return 0;
  }
  if (r == 0) {
    profile_error(l, line, "section [%s] needs a name: [%s \"NAME\"]", kind, kind);
    return 0;
  }
  if (!mst_utf8_valid(name)) {
    profile_error(l, line, "invalid %s name: not UTF-8", kind);
    return 0;
  }
  if (!name_is_valid(name)) {
    profile_error(l, line, "invalid %s name '%s' (no spaces, commas, quotes, ':' or '@')", kind,
                  name);
    return 0;
  }

  bool is_component = strcmp(kind, "component") == 0;
  /* The aggregator refuses every report that carries a longer one. */
  size_t name_len = strlen(name);
  if (is_component && name_len > MST_COMPONENT_NAME_MAX) {
    profile_error(l, line, "component name '%.*s...' is longer than %d bytes",
                  (int)mst_utf8_cut(name, name_len, 40), name, MST_COMPONENT_NAME_MAX);
    return 0;
  }
  r = is_component ? component_add(l, name, line) : stage_add(l, name, line);
  if (r == -ENOMEM)
    return r;
  if (r == 0)
    l->section = is_component ? SECTION_COMPONENT : SECTION_STAGE;
  return 0;
}

/* --- keys --------------------------------------------------------------------- */

static int parse_duration_in(struct profile_loader *l, unsigned line, const char *section,
                             const char *key, const char *value, uint64_t min, uint64_t max,
                             uint64_t *ret) {
  char lo[32], hi[32];
  uint64_t v;

  if (mst_duration_parse(value, &v) < 0) {
    profile_error(l, line, "%s %s: invalid duration '%s' (write e.g. 500ms, 5s, 15m)", section, key,
                  value);
    return -EINVAL;
  }
  if (v < min || v > max) {
    profile_error(l, line, "%s %s: '%s' is out of range: must be between %s and %s", section, key,
                  value, mst_duration_format(min, lo, sizeof(lo)),
                  mst_duration_format(max, hi, sizeof(hi)));
    return -EINVAL;
  }
  *ret = v;
  return 0;
}

static int parse_unsigned_in(struct profile_loader *l, unsigned line, const char *section,
                             const char *key, const char *value, unsigned min, unsigned max,
                             unsigned *ret) {
  unsigned long long v = 0;
  const char *c = value;

  if (*c < '0' || *c > '9')
    goto invalid;
  for (; *c >= '0' && *c <= '9'; c++) {
    v = v * 10 + (unsigned)(*c - '0');
    if (v > max)
      break;
  }
  if (v <= max && *c != '\0')
    goto invalid;
  if (v < min || v > max) {
    profile_error(l, line, "%s %s: '%s' is out of range: must be between %u and %u", section, key,
                  value, min, max);
    return -EINVAL;
  }
  *ret = (unsigned)v;
  return 0;

invalid:
  profile_error(l, line, "%s %s: invalid number '%s'", section, key, value);
  return -EINVAL;
}

static int profile_on_profile_key(struct profile_loader *l, const char *name, const char *value,
                                  unsigned line) {
  int k = mst_str_table_find(profile_key_names, _PROF_KEY_MAX, name);

  if (k < 0) {
    profile_error(l, line, "unknown key '%s' in section [profile]", name);
    return 0;
  }
  if (l->profile_key_line[k]) {
    profile_error(l, line, "duplicate key '%s' in section [profile] (first set on line %u)", name,
                  l->profile_key_line[k]);
    return 0;
  }
  l->profile_key_line[k] = line;

  switch (k) {
  case PROF_ROLE:
    if (!name_is_valid(value)) {
      profile_error(l, line, "[profile] role: invalid role '%s'", value);
      return 0;
    }
    if (!role_is_valid(value)) {
      profile_error(l, line, "[profile] role: longer than %d bytes", MST_ROLE_MAX);
      return 0;
    }
    return mst_str_replace(&l->p->role, value);
  case PROF_STARTUP_GRACE:
    (void)parse_duration_in(l, line, "[profile]", "startup_grace", value, 0, PROFILE_GRACE_MAX_USEC,
                            &l->p->startup_grace_usec);
    return 0;
  }
  return 0;
}

static int profile_on_component_key(struct profile_loader *l, const char *name, const char *value,
                                    unsigned line) {
  struct mst_component *c = &l->p->components[l->current];
  struct component_lines *lines = &l->component_lines[l->current];
  int k = mst_str_table_find(component_key_names, _COMP_KEY_MAX, name);
  char where[64];
  int r;

  snprintf(where, sizeof(where), "component '%s':", c->name);
  if (k < 0) {
    profile_error(l, line, "unknown key '%s' in section [component \"%s\"]", name, c->name);
    return 0;
  }
  if (lines->key[k]) {
    profile_error(l, line,
                  "duplicate key '%s' in section [component \"%s\"] (first set on line %u)", name,
                  c->name, lines->key[k]);
    return 0;
  }
  lines->key[k] = line;

  switch ((enum component_key)k) {
  case COMP_CHECK:
    r = mst_check_kind_from_string(value);
    if (r < 0) {
      profile_error(l, line, "%s check: unknown check '%s' (systemd, exec, http or tcp)", where,
                    value);
      return 0;
    }
    c->check = (enum mst_check_kind)r;
    return 0;
  case COMP_UNIT:
    return mst_str_replace(&c->unit, value);
  case COMP_COMMAND:
    return mst_str_replace(&c->command, value);
  case COMP_URL:
    if (strncmp(value, "http://", 7) != 0 && strncmp(value, "https://", 8) != 0) {
      profile_error(l, line, "%s url: '%s' is not an http:// or https:// URL", where, value);
      return 0;
    }
    return mst_str_replace(&c->url, value);
  case COMP_EXPECT_BODY:
    return mst_str_replace(&c->expect_body, value);
  case COMP_ADDRESS: {
    const char *colon = strrchr(value, ':');
    unsigned port;
    if (!colon || colon == value) {
      profile_error(l, line, "%s address: '%s' is not host:port", where, value);
      return 0;
    }
    if (parse_unsigned_in(l, line, where, "address port", colon + 1, 1, 65535, &port) < 0)
      return 0;
    return mst_str_replace(&c->address, value);
  }
  case COMP_EXPECT_STATUS:
    (void)parse_unsigned_in(l, line, where, "expect_status", value, 100, 599, &c->expect_status);
    return 0;
  case COMP_INTERVAL:
    (void)parse_duration_in(l, line, where, "interval", value, 100 * USEC_PER_MSEC,
                            24ULL * 3600 * USEC_PER_SEC, &c->interval_usec);
    return 0;
  case COMP_TIMEOUT:
    (void)parse_duration_in(l, line, where, "timeout", value, 10 * USEC_PER_MSEC,
                            3600ULL * USEC_PER_SEC, &c->timeout_usec);
    return 0;
  case COMP_RISE:
    (void)parse_unsigned_in(l, line, where, "rise", value, 1, 100, &c->rise);
    return 0;
  case COMP_FALL:
    (void)parse_unsigned_in(l, line, where, "fall", value, 1, 100, &c->fall);
    return 0;
  case _COMP_KEY_MAX:
    break;
  }
  return 0;
}

/* ROLE:STAGE, ROLE:STAGE@quorum or ROLE:STAGE@all. */
static bool requirement_is_valid(const char *s) {
  const char *colon = strchr(s, ':'), *at;
  size_t role_len, stage_len;

  if (!colon)
    return false;
  role_len = (size_t)(colon - s);
  at = strchr(colon + 1, '@');
  stage_len = at ? (size_t)(at - colon - 1) : strlen(colon + 1);
  if (role_len == 0 || stage_len == 0)
    return false;
  if (at && strcmp(at, "@quorum") != 0 && strcmp(at, "@all") != 0)
    return false;
  for (const char *c = s; c < colon; c++)
    if (*c == '@' || *c == '"')
      return false;
  for (const char *c = colon + 1; c < colon + 1 + stage_len; c++)
    if (*c == ':' || *c == '"')
      return false;
  return true;
}

static int profile_on_stage_key(struct profile_loader *l, const char *name, const char *value,
                                unsigned line) {
  struct mst_stage *s = &l->p->stages[l->current];
  struct stage_lines *lines = &l->stage_lines[l->current];
  int k = mst_str_table_find(stage_key_names, _STAGE_KEY_MAX, name);
  char **list = NULL;
  int r;

  if (k < 0) {
    profile_error(l, line, "unknown key '%s' in section [stage \"%s\"]", name, s->name);
    return 0;
  }
  if (lines->key[k]) {
    profile_error(l, line, "duplicate key '%s' in section [stage \"%s\"] (first set on line %u)",
                  name, s->name, lines->key[k]);
    return 0;
  }
  lines->key[k] = line;

  r = mst_strv_split(value, &list);
  if (r < 0)
    return r;

  switch ((enum stage_key)k) {
  case STAGE_COMPONENTS:
    mst_strv_free(s->components);
    s->components = list;
    break;
  case STAGE_MILESTONES:
    mst_strv_free(s->milestones);
    s->milestones = list;
    break;
  case STAGE_AFTER:
    mst_strv_free(s->after);
    s->after = list;
    break;
  case STAGE_REQUIRES:
    for (char **i = list; *i; i++)
      if (!requirement_is_valid(*i))
        profile_error(l, line,
                      "stage '%s': bad requires '%s' (write ROLE:STAGE, ROLE:STAGE@quorum or "
                      "ROLE:STAGE@all)",
                      s->name, *i);
    mst_strv_free(s->requires);
    s->requires = list;
    break;
  case _STAGE_KEY_MAX:
    mst_strv_free(list);
    break;
  }
  return 0;
}

static int profile_on_ini(void *user, const char *section, const char *name, const char *value,
                          unsigned line) {
  struct profile_loader *l = user;
  unsigned errors_before = l->error;
  int r = 0;

  if (l->fatal)
    return l->fatal;
  if (!name)
    r = profile_on_section(l, section, line);
  else
    switch (l->section) {
    case SECTION_NONE:
      profile_error(l, line, "key '%s' is outside of any section", name);
      break;
    case SECTION_PROFILE:
      r = profile_on_profile_key(l, name, value, line);
      break;
    case SECTION_COMPONENT:
      r = profile_on_component_key(l, name, value, line);
      break;
    case SECTION_STAGE:
      r = profile_on_stage_key(l, name, value, line);
      break;
    case SECTION_BAD:
      break;
    }

  if (r == -ENOMEM)
    l->fatal = r;
  return l->error > errors_before || r < 0 ? -EINVAL : 0;
}

/* --- whole-file rules ----------------------------------------------------------- */

static void validate_component(struct profile_loader *l, size_t i) {
  static const struct {
    enum mst_check_kind kind;
    enum component_key required;
  } required_keys[] = {
      {MST_CHECK_SYSTEMD, COMP_UNIT},
      {MST_CHECK_EXEC, COMP_COMMAND},
      {MST_CHECK_HTTP, COMP_URL},
      {MST_CHECK_TCP, COMP_ADDRESS},
  };
  static const enum component_key http_only[] = {COMP_EXPECT_STATUS, COMP_EXPECT_BODY};
  const struct mst_component *c = &l->p->components[i];
  const struct component_lines *lines = &l->component_lines[i];

  if (c->check == MST_CHECK_UNSPECIFIED) {
    /* An unknown value was reported where it was written. */
    if (!lines->key[COMP_CHECK])
      profile_error(l, c->line, "component '%s': missing 'check' (systemd, exec, http or tcp)",
                    c->name);
    return;
  }

  for (size_t k = 0; k < ELEMENTSOF(required_keys); k++) {
    enum component_key key = required_keys[k].required;
    bool wanted = required_keys[k].kind == c->check;

    if (wanted && !lines->key[key])
      profile_error(l, c->line, "component '%s': check = %s needs '%s'", c->name,
                    mst_check_kind_to_string(c->check), component_key_names[key]);
    else if (!wanted && lines->key[key])
      profile_error(l, lines->key[key], "component '%s': '%s' does not apply to check = %s",
                    c->name, component_key_names[key], mst_check_kind_to_string(c->check));
  }
  if (c->check != MST_CHECK_HTTP)
    for (size_t k = 0; k < ELEMENTSOF(http_only); k++)
      if (lines->key[http_only[k]])
        profile_error(l, lines->key[http_only[k]],
                      "component '%s': '%s' does not apply to check = %s", c->name,
                      component_key_names[http_only[k]], mst_check_kind_to_string(c->check));
}

static ssize_t stage_index(const struct mst_profile *p, const char *name) {
  for (size_t i = 0; i < p->n_stages; i++)
    if (strcmp(p->stages[i].name, name) == 0)
      return (ssize_t)i;
  return -1;
}

static int validate_stage_refs(struct profile_loader *l, size_t i) {
  struct mst_stage *s = &l->p->stages[i];
  const struct stage_lines *lines = &l->stage_lines[i];

  for (char **n = s->components; *n; n++)
    if (!mst_profile_find_component(l->p, *n))
      profile_error(l, lines->key[STAGE_COMPONENTS], "stage '%s': unknown component '%s'", s->name,
                    *n);
  for (char **n = s->milestones; *n; n++)
    if (!mst_profile_find_component(l->p, *n))
      profile_error(l, lines->key[STAGE_MILESTONES], "stage '%s': unknown component '%s'", s->name,
                    *n);

  if (!s->after) {
    /* Default: the previous stage in file order, written down explicitly. */
    s->after = calloc(2, sizeof(char *));
    if (!s->after)
      return -ENOMEM;
    if (i > 0) {
      s->after[0] = strdup(l->p->stages[i - 1].name);
      if (!s->after[0])
        return -ENOMEM;
    }
    return 0;
  }
  for (char **n = s->after; *n; n++)
    if (stage_index(l->p, *n) < 0)
      profile_error(l, lines->key[STAGE_AFTER], "stage '%s': 'after' names unknown stage '%s'",
                    s->name, *n);
  return 0;
}

enum { DFS_WHITE, DFS_GRAY, DFS_BLACK };

struct cycle_search {
  struct profile_loader *l;
  unsigned char *color;
  size_t *stack;
  size_t depth;
};

static int report_cycle(struct cycle_search *cs, size_t from) {
  const struct mst_profile *p = cs->l->p;
  const struct mst_stage *first = &p->stages[cs->stack[from]];
  _cleanup_free_ char *chain = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&chain, &len);

  if (!f)
    return -ENOMEM;
  for (size_t k = from; k < cs->depth; k++)
    fprintf(f, "%s -> ", p->stages[cs->stack[k]].name);
  fputs(first->name, f);
  if (fclose(f) != 0)
    return -ENOMEM;

  unsigned line = cs->l->stage_lines[cs->stack[from]].key[STAGE_AFTER];
  profile_error(cs->l, line ? line : first->line, "stage '%s': dependency cycle %s", first->name,
                chain);
  return 0;
}

/* Depth-first search along `after` edges; each back edge is one cycle. */
static int find_cycles_from(struct cycle_search *cs, size_t v) {
  const struct mst_stage *s = &cs->l->p->stages[v];
  int r;

  cs->color[v] = DFS_GRAY;
  cs->stack[cs->depth++] = v;
  for (char **n = s->after; *n; n++) {
    ssize_t w = stage_index(cs->l->p, *n);
    if (w < 0)
      continue; /* reported as unknown */
    if (cs->color[w] == DFS_GRAY) {
      size_t from = 0;
      while (cs->stack[from] != (size_t)w)
        from++;
      r = report_cycle(cs, from);
      if (r < 0)
        return r;
    } else if (cs->color[w] == DFS_WHITE) {
      r = find_cycles_from(cs, (size_t)w);
      if (r < 0)
        return r;
    }
  }
  cs->depth--;
  cs->color[v] = DFS_BLACK;
  return 0;
}

static int validate_stage_graph(struct profile_loader *l) {
  size_t n = l->p->n_stages;
  _cleanup_free_ unsigned char *color = calloc(n ? n : 1, 1);
  _cleanup_free_ size_t *stack = calloc(n ? n : 1, sizeof(size_t));
  struct cycle_search cs = {.l = l, .color = color, .stack = stack};
  int r;

  if (!color || !stack)
    return -ENOMEM;
  for (size_t i = 0; i < n; i++)
    if (color[i] == DFS_WHITE) {
      r = find_cycles_from(&cs, i);
      if (r < 0)
        return r;
    }
  return 0;
}

static int profile_validate(struct profile_loader *l) {
  int r;

  for (size_t i = 0; i < l->p->n_components; i++)
    validate_component(l, i);
  for (size_t i = 0; i < l->p->n_stages; i++) {
    r = validate_stage_refs(l, i);
    if (r < 0)
      return r;
  }
  return validate_stage_graph(l);
}

/* --- loading ------------------------------------------------------------------- */

static int profile_digest(const char *path, char ret[static 65], struct mst_diag *diag) {
  unsigned char hash[32], chunk[64 * 1024];
  gnutls_hash_hd_t h;
  size_t size = 0, n;
  FILE *f;
  int r;

  f = fopen(path, "re");
  if (!f) {
    r = -errno;
    mst_diag_add(diag, path, 0, "cannot open: %s", strerror(-r));
    return r;
  }
  /* The same cap as the INI reader's: refused before reading when fstat
   * knows the size, and while reading when it does not (/dev/zero). */
  struct stat st;
  if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > MST_INI_FILE_MAX) {
    fclose(f);
    mst_diag_add(diag, path, 0, "file is larger than %d bytes", MST_INI_FILE_MAX);
    return -EFBIG;
  }
  if (gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0) {
    fclose(f);
    mst_diag_add(diag, path, 0, "cannot compute SHA-256");
    return -EIO;
  }
  /* Hashed as it is read: no buffer of the whole file. */
  r = 0;
  while (r == 0 && size <= MST_INI_FILE_MAX && (n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
    size += n;
    r = gnutls_hash(h, chunk, n);
  }
  bool hash_failed = r < 0, read_failed = ferror(f);
  fclose(f);
  gnutls_hash_deinit(h, hash);
  if (hash_failed || read_failed) {
    mst_diag_add(diag, path, 0, "%s", read_failed ? "read error" : "cannot compute SHA-256");
    return -EIO;
  }
  if (size > MST_INI_FILE_MAX) {
    mst_diag_add(diag, path, 0, "file is larger than %d bytes", MST_INI_FILE_MAX);
    return -EFBIG;
  }

  for (size_t i = 0; i < sizeof(hash); i++)
    snprintf(ret + 2 * i, 3, "%02x", hash[i]);
  return 0;
}

static char *role_from_path(const char *path) {
  const char *base = strrchr(path, '/');
  size_t n;

  base = base ? base + 1 : path;
  n = strlen(base);
  if (n > 4 && strcmp(base + n - 4, ".ini") == 0)
    n -= 4;
  return strndup(base, n);
}

static void profile_freep(struct mst_profile **p) {
  mst_profile_free(*p);
}

int mst_profile_load(const char *path, struct mst_profile **ret, struct mst_diag *diag) {
  _cleanup_(profile_freep) struct mst_profile *p = NULL;
  struct profile_loader l = {.path = path, .diag = diag};
  int r;

  p = calloc(1, sizeof(*p));
  if (!p)
    return -ENOMEM;
  p->startup_grace_usec = MST_PROFILE_DEFAULT_GRACE_USEC;
  p->path = strdup(path);
  if (!p->path)
    return -ENOMEM;
  l.p = p;

  r = profile_digest(path, p->digest, diag);
  if (r < 0)
    return r;

  r = mst_ini_parse(path, profile_on_ini, &l, diag);
  if (l.fatal)
    r = l.fatal;
  if (r < 0 && r != -EINVAL)
    goto out;
  /* Syntax errors are counted by the INI layer, not by our handler. */
  bool syntax_error = r == -EINVAL;

  if (!p->role) {
    p->role = role_from_path(path);
    if (!p->role) {
      r = -ENOMEM;
      goto out;
    }
    if (!role_is_valid(p->role))
      profile_error(&l, 0, "role '%s' from the file name is not a valid name, set [profile] role",
                    p->role);
  }

  r = profile_validate(&l);
  if (r < 0)
    goto out;
  r = l.fatal ? l.fatal : (l.error || syntax_error) ? -EINVAL : 0;
  if (r == 0)
    *ret = TAKE_PTR(p);

out:
  free(l.component_lines);
  free(l.stage_lines);
  return r;
}

/* --- a directory of profiles -------------------------------------------------- */

void mst_profile_set_free(struct mst_profile_set *s) {
  if (!s)
    return;
  for (size_t i = 0; i < s->n; i++)
    mst_profile_free(s->profiles[i]);
  free(s->profiles);
  free(s);
}

const struct mst_profile *mst_profile_set_find(const struct mst_profile_set *s, const char *role) {
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->profiles[i]->role, role) == 0)
      return s->profiles[i];
  return NULL;
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_ini_name(const char *name) {
  size_t n = strlen(name);
  return name[0] != '.' && n > 4 && strcmp(name + n - 4, ".ini") == 0;
}

static void profile_set_freep(struct mst_profile_set **s) {
  mst_profile_set_free(*s);
}

static void strv_freep(char ***v) {
  mst_strv_free(*v);
}

/* Every ROLE:STAGE a stage requires must name a loaded role and its stage. */
static bool profile_set_check_requires(const struct mst_profile_set *set, struct mst_diag *diag) {
  bool ok = true;

  for (size_t i = 0; i < set->n; i++) {
    const struct mst_profile *p = set->profiles[i];
    for (size_t j = 0; j < p->n_stages; j++)
      for (char **req = p->stages[j].requires; *req; req++) {
        const char *colon = strchr(*req, ':');
        size_t stage_len = strcspn(colon + 1, "@");
        _cleanup_free_ char *role = strndup(*req, (size_t)(colon - *req));
        _cleanup_free_ char *stage = strndup(colon + 1, stage_len);
        const struct mst_profile *other;

        if (!role || !stage)
          return false;
        other = mst_profile_set_find(set, role);
        if (!other) {
          mst_diag_add(diag, p->path, p->stages[j].line,
                       "stage '%s': requires '%s' names unknown role '%s'", p->stages[j].name, *req,
                       role);
          ok = false;
        } else if (!profile_find_stage(other, stage)) {
          mst_diag_add(diag, p->path, p->stages[j].line,
                       "stage '%s': requires '%s' names stage '%s', which role '%s' does not have",
                       p->stages[j].name, *req, stage, role);
          ok = false;
        }
      }
  }
  return ok;
}

int mst_profile_set_load(const char *dir, struct mst_profile_set **ret, struct mst_diag *diag) {
  _cleanup_(profile_set_freep) struct mst_profile_set *set = NULL;
  _cleanup_(strv_freep) char **names = NULL;
  size_t n_names = 0;
  struct dirent *de;
  bool failed = false;
  DIR *d;
  int r = 0;

  d = opendir(dir);
  if (!d) {
    r = -errno;
    mst_diag_add(diag, dir, 0, "cannot open profile directory: %s", strerror(-r));
    return r;
  }
  names = calloc(1, sizeof(char *));
  if (!names) {
    closedir(d);
    return -ENOMEM;
  }
  while ((de = readdir(d))) {
    if (!is_ini_name(de->d_name))
      continue;
    if (!MST_ARRAY_APPEND(names, n_names + 1)) { /* room for the NULL after it */
      r = -ENOMEM;
      break;
    }
    if (asprintf(&names[n_names], "%s/%s", dir, de->d_name) < 0) {
      names[n_names] = NULL;
      r = -ENOMEM;
      break;
    }
    names[++n_names] = NULL;
  }
  closedir(d);
  if (r < 0)
    return r;
  qsort(names, n_names, sizeof(char *), compare_names);

  set = calloc(1, sizeof(*set));
  if (!set)
    return -ENOMEM;
  set->profiles = calloc(n_names ? n_names : 1, sizeof(struct mst_profile *));
  if (!set->profiles)
    return -ENOMEM;

  for (size_t i = 0; i < n_names; i++) {
    struct mst_profile *p = NULL;

    r = mst_profile_load(names[i], &p, diag);
    if (r == -ENOMEM)
      return r;
    if (r < 0) {
      failed = true;
      continue;
    }
    const struct mst_profile *prev = mst_profile_set_find(set, p->role);
    if (prev) {
      mst_diag_add(diag, p->path, 0, "duplicate role '%s' (already defined by %s)", p->role,
                   prev->path);
      mst_profile_free(p);
      failed = true;
      continue;
    }
    set->profiles[set->n++] = p;
  }

  if (!profile_set_check_requires(set, diag))
    failed = true;
  if (failed)
    return -EINVAL;
  *ret = TAKE_PTR(set);
  return 0;
}
