/* Startup profiles: parsing and validating one role's INI file (components
 * and stages), and loading a directory of them.
 *
 * Parsing goes through mst_ini_parse(), so every error carries its line. A
 * profile is checked in two passes: values and keys while reading, then the
 * whole-file rules (required keys per check kind, stage references, cycles in
 * the stage graph) once everything is known, at the line of the declaration
 * or key at fault. A directory of profiles is checked once more as a whole:
 * the requires across roles, and the cycles they close. The digest is the SHA-256 of the file's
 * bytes, so agent and aggregator can tell when they read different versions. */
#include <dirent.h>
#include <gnutls/crypto.h>
#include <limits.h>
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
/* A stack restart's units start within seconds of each other; a window
 * beyond an hour would merge unrelated restarts into one startup. */
#define PROFILE_RESTART_WINDOW_MIN_USEC (100 * USEC_PER_MSEC)
#define PROFILE_RESTART_WINDOW_MAX_USEC (3600 * USEC_PER_SEC)

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
  COMP_DESCRIPTION,
  COMP_NAME,
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
    [COMP_DESCRIPTION] = "description",
    [COMP_NAME] = "name",
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
  PROF_RESTART_WINDOW,
  PROF_LEADER_COMPONENT,
  _PROF_KEY_MAX,
};

static const char *const profile_key_names[_PROF_KEY_MAX] = {
    [PROF_ROLE] = "role",
    [PROF_STARTUP_GRACE] = "startup_grace",
    [PROF_RESTART_WINDOW] = "restart_window",
    [PROF_LEADER_COMPONENT] = "leader_component",
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
  bool too_many;                           /* said the profile has too many components */
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
  free(c->description);
  free(c->display_name);
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
  free(p->leader_component);
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
  /* The aggregator refuses a node with more (by default): its agent would
   * be refused at its first snapshot, again at every reconnection. Said
   * once, at the first one over. */
  if (p->n_components >= MST_COMPONENTS_PER_NODE_MAX) {
    if (!l->too_many)
      profile_error(l, line,
                    "component '%s': more than %d components (an aggregator refuses a node with "
                    "more than its max_components_per_node, %d by default)",
                    name, MST_COMPONENTS_PER_NODE_MAX, MST_COMPONENTS_PER_NODE_MAX);
    l->too_many = true;
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
  case PROF_RESTART_WINDOW:
    (void)parse_duration_in(l, line, "[profile]", "restart_window", value,
                            PROFILE_RESTART_WINDOW_MIN_USEC, PROFILE_RESTART_WINDOW_MAX_USEC,
                            &l->p->restart_window_usec);
    return 0;
  case PROF_LEADER_COMPONENT:
    /* Whether it names a component is known at the end of the file. */
    if (!name_is_valid(value)) {
      profile_error(l, line, "[profile] leader_component: invalid component name '%s'", value);
      return 0;
    }
    return mst_str_replace(&l->p->leader_component, value);
  }
  return 0;
}

/* A description or display name goes to the aggregator, which refuses one
 * over its cap or not UTF-8, and to operators' screens: refused here at its
 * line instead (an INI value has no newline; a tab or another control
 * character would show as garbage). */
static int component_text(struct profile_loader *l, unsigned line, const char *where,
                          const char *key, const char *value, size_t max, char **field) {
  size_t len = strlen(value);

  if (len == 0 || len > max) {
    profile_error(l, line, "%s %s: must be 1 to %zu bytes (is %zu)", where, key, max, len);
    return 0;
  }
  if (!mst_utf8_valid(value)) {
    profile_error(l, line, "%s %s: not UTF-8", where, key);
    return 0;
  }
  for (const char *p = value; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f) {
      profile_error(l, line, "%s %s: contains a control character", where, key);
      return 0;
    }
  return mst_str_replace(field, value);
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
  case COMP_DESCRIPTION:
    return component_text(l, line, where, "description", value, MST_DESCRIPTION_MAX,
                          &c->description);
  case COMP_NAME:
    return component_text(l, line, where, "name", value, MST_DISPLAY_NAME_MAX, &c->display_name);
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
    s->after_line = line;
    break;
  case STAGE_REQUIRES:
    s->requires_line = line;
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

/* --- the dependency graph: after and requires, across roles ------------------ */

/* A stage waits for the stages it comes after on its node, and for the
 * stages it requires on other nodes (or on its peers: a same-role require).
 * A cycle among those edges can never be resolved: its stages stay pending
 * forever while nothing is failing, so it is refused at load time. The
 * vertices are the stages of a list of profiles (one profile when it is
 * loaded alone, the whole set after), numbered profile by profile; names are
 * resolved through sorted tables and the search is an iterative depth-first
 * search with colours: O((V + E) log V) whatever the file holds. */

/* Cycles reported per search: each back edge is one, and a file written to
 * have many would otherwise make the report quadratic. A key that closes
 * several is reported once. */
#define PROFILE_CYCLES_REPORTED 16

struct dep_name {
  const char *name;
  size_t index;
};

struct dep_edge {
  size_t to;
  const char *requires; /* the requires entry as written; NULL: an after edge */
  bool reported;        /* a cycle was reported at its key */
};

struct dep_graph {
  const struct mst_profile *const *profiles;
  size_t n_profiles;
  bool whole_set; /* a role not in profiles is unknown (else: not checked here) */
  struct mst_diag *diag;
  unsigned errors;
  int fatal;                    /* -ENOMEM from the diagnostics */
  size_t n;                     /* vertices */
  size_t *first;                /* per profile: its first vertex; [n_profiles] = n */
  struct dep_name *stage_names; /* per profile, sorted by name, from first[k] on */
  struct dep_name *roles;       /* sorted by role */
  size_t *edge_first;           /* per vertex: its first edge; [n] = edges (after first[]) */
  struct dep_edge *edges;
  unsigned cycles; /* reported so far */
};

_printf_(4, 5) static void dep_error(struct dep_graph *g, size_t profile, unsigned line,
                                     const char *fmt, ...) {
  va_list ap;
  int r;

  va_start(ap, fmt);
  r = mst_diag_addv(g->diag, g->profiles[profile]->path, line, fmt, ap);
  va_end(ap);
  if (r < 0)
    g->fatal = r;
  g->errors++;
}

static int compare_dep_names(const void *a, const void *b) {
  return strcmp(((const struct dep_name *)a)->name, ((const struct dep_name *)b)->name);
}

static size_t dep_lookup(const struct dep_name *v, size_t n, const char *name) {
  struct dep_name key = {.name = name};
  const struct dep_name *hit = bsearch(&key, v, n, sizeof(*v), compare_dep_names);
  return hit ? hit->index : SIZE_MAX;
}

static void dep_graph_done(struct dep_graph *g) {
  free(g->first);
  free(g->stage_names);
  free(g->roles);
  free(g->edges);
}

/* The profile of vertex v: the last one starting at or before it. */
static size_t dep_owner(const struct dep_graph *g, size_t v) {
  size_t lo = 0, hi = g->n_profiles;
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (g->first[mid] <= v)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

/* The vertex a requires entry names, or SIZE_MAX: reported when it names a
 * role or stage that does not exist (a role only when the whole set is
 * known), skipped when badly written (reported while reading). */
static int dep_resolve(struct dep_graph *g, size_t k, const struct mst_stage *s, const char *req,
                       size_t *ret) {
  const char *colon = strchr(req, ':');

  *ret = SIZE_MAX;
  if (!requirement_is_valid(req))
    return 0;
  _cleanup_free_ char *role = strndup(req, (size_t)(colon - req));
  _cleanup_free_ char *stage = strndup(colon + 1, strcspn(colon + 1, "@"));
  if (!role || !stage)
    return -ENOMEM;

  size_t other = dep_lookup(g->roles, g->n_profiles, role);
  if (other == SIZE_MAX) {
    if (g->whole_set)
      dep_error(g, k, s->requires_line, "stage '%s': requires '%s' names unknown role '%s'",
                s->name, req, role);
    return 0;
  }
  size_t base = g->first[other];
  size_t i = dep_lookup(g->stage_names + base, g->first[other + 1] - base, stage);
  if (i == SIZE_MAX) {
    dep_error(g, k, s->requires_line,
              "stage '%s': requires '%s' names stage '%s', which role '%s' does not have", s->name,
              req, stage, role);
    return 0;
  }
  *ret = base + i;
  return 0;
}

static int dep_graph_build(struct dep_graph *g) {
  size_t np = g->n_profiles, n = 0, max_edges = 0;

  for (size_t k = 0; k < np; k++)
    for (size_t i = 0; i < g->profiles[k]->n_stages; i++) {
      const struct mst_stage *s = &g->profiles[k]->stages[i];
      max_edges += mst_strv_length(s->after) + mst_strv_length(s->requires);
      n++;
    }
  g->n = n;
  /* first[] and edge_first[] share one allocation */
  g->first = calloc(np + 1 + n + 1, sizeof(size_t));
  g->stage_names = calloc(n ? n : 1, sizeof(struct dep_name));
  g->roles = calloc(np ? np : 1, sizeof(struct dep_name));
  g->edges = calloc(max_edges ? max_edges : 1, sizeof(struct dep_edge));
  if (!g->first || !g->stage_names || !g->roles || !g->edges)
    return -ENOMEM;
  g->edge_first = g->first + np + 1;

  for (size_t k = 0, v = 0; k < np; k++) {
    const struct mst_profile *p = g->profiles[k];
    g->first[k] = v;
    g->roles[k] = (struct dep_name){.name = p->role, .index = k};
    for (size_t i = 0; i < p->n_stages; i++, v++)
      g->stage_names[v] = (struct dep_name){.name = p->stages[i].name, .index = i};
    qsort(g->stage_names + g->first[k], p->n_stages, sizeof(struct dep_name), compare_dep_names);
  }
  g->first[np] = n;
  qsort(g->roles, np, sizeof(struct dep_name), compare_dep_names);

  size_t e = 0;
  for (size_t v = 0; v < n; v++) {
    size_t k = dep_owner(g, v), base = g->first[k];
    const struct mst_profile *p = g->profiles[k];
    const struct mst_stage *s = &p->stages[v - base];

    g->edge_first[v] = e;
    for (char **a = s->after; a && *a; a++) {
      size_t w = dep_lookup(g->stage_names + base, p->n_stages, *a);
      if (w != SIZE_MAX) /* else reported as unknown */
        g->edges[e++] = (struct dep_edge){.to = base + w};
    }
    for (char **req = s->requires; req && *req; req++) {
      size_t w;
      int r = dep_resolve(g, k, s, *req, &w);
      if (r < 0)
        return r;
      if (w != SIZE_MAX)
        g->edges[e++] = (struct dep_edge){.to = w, .requires = *req};
    }
  }
  g->edge_first[n] = e;
  return 0;
}

enum { DEP_WHITE, DEP_GRAY, DEP_BLACK };

struct dep_frame {
  size_t v;
  size_t next; /* its next edge to follow: the one followed last is next - 1 */
};

static const struct mst_stage *dep_stage(const struct dep_graph *g, size_t v, size_t *ret_profile) {
  size_t k = dep_owner(g, v);
  *ret_profile = k;
  return &g->profiles[k]->stages[v - g->first[k]];
}

/* The cycle made of stack[from..depth-1], closed by the edge followed last
 * from the top. A cycle through a requires is reported at the line of the
 * requires key that closes it (the last on the way), as a chain of
 * role:stage that starts there; one of after edges alone (a profile loaded
 * by itself) at the after key of its first stage, with plain stage names. */
static int dep_report_cycle(struct dep_graph *g, const struct dep_frame *stack, size_t from,
                            size_t depth) {
  size_t at = depth, k;

  for (size_t j = depth; j-- > from && at == depth;)
    if (g->edges[stack[j].next - 1].requires)
      at = j;
  bool via_requires = at < depth;
  if (!via_requires)
    at = from;
  size_t edge = stack[at].next - 1;
  if (g->edges[edge].reported || g->cycles >= PROFILE_CYCLES_REPORTED)
    return 0;
  g->edges[edge].reported = true;
  g->cycles++;

  _cleanup_free_ char *chain = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&chain, &len);
  if (!f)
    return -ENOMEM;
  for (size_t j = 0; j <= depth - from; j++) {
    size_t v = stack[from + (at - from + j) % (depth - from)].v;
    const struct mst_stage *s = dep_stage(g, v, &k);
    if (via_requires)
      fprintf(f, "%s%s:%s", j ? " -> " : "", g->profiles[k]->role, s->name);
    else
      fprintf(f, "%s%s", j ? " -> " : "", s->name);
  }
  if (fclose(f) != 0)
    return -ENOMEM;

  const struct mst_stage *s = dep_stage(g, stack[at].v, &k);
  if (via_requires)
    dep_error(g, k, s->requires_line ? s->requires_line : s->line,
              "stage '%s': requires '%s' closes a dependency cycle, which can never be met: %s",
              s->name, g->edges[edge].requires, chain);
  else
    dep_error(g, k, s->after_line ? s->after_line : s->line, "stage '%s': dependency cycle %s",
              s->name, chain);
  return 0;
}

static int dep_find_cycles(struct dep_graph *g) {
  _cleanup_free_ unsigned char *color = calloc(g->n ? g->n : 1, 1);
  _cleanup_free_ size_t *pos = calloc(g->n ? g->n : 1, sizeof(size_t));
  _cleanup_free_ struct dep_frame *stack = calloc(g->n ? g->n : 1, sizeof(struct dep_frame));

  if (!color || !pos || !stack)
    return -ENOMEM;
  for (size_t root = 0; root < g->n; root++) {
    size_t depth = 0;
    if (color[root] != DEP_WHITE)
      continue;
    color[root] = DEP_GRAY;
    stack[depth++] = (struct dep_frame){.v = root, .next = g->edge_first[root]};
    while (depth > 0) {
      struct dep_frame *top = &stack[depth - 1];
      if (top->next == g->edge_first[top->v + 1]) {
        color[top->v] = DEP_BLACK;
        depth--;
        continue;
      }
      size_t w = g->edges[top->next++].to;
      if (color[w] == DEP_GRAY) {
        int r = dep_report_cycle(g, stack, pos[w], depth);
        if (r < 0)
          return r;
      } else if (color[w] == DEP_WHITE) {
        color[w] = DEP_GRAY;
        pos[w] = depth;
        stack[depth++] = (struct dep_frame){.v = w, .next = g->edge_first[w]};
      }
    }
  }
  return 0;
}

/* Resolves the requires of profiles (reporting names that do not exist) and
 * reports every dependency cycle among their stages. Returns the number of
 * errors reported, or -ENOMEM. */
static int dep_check(const struct mst_profile *const *profiles, size_t n_profiles, bool whole_set,
                     struct mst_diag *diag) {
  struct dep_graph g = {
      .profiles = profiles, .n_profiles = n_profiles, .whole_set = whole_set, .diag = diag};
  int r = dep_graph_build(&g);

  if (r >= 0)
    r = dep_find_cycles(&g);
  dep_graph_done(&g);
  if (r < 0 || g.fatal < 0)
    return r < 0 ? r : g.fatal;
  return (int)MST_MIN(g.errors, (unsigned)INT_MAX);
}

/* The leader component names one of the file's components, in no stage: a
 * follower's is never healthy, which must hold back neither its health nor
 * its startup. */
static void validate_leader_component(struct profile_loader *l) {
  const char *name = l->p->leader_component;
  unsigned line = l->profile_key_line[PROF_LEADER_COMPONENT];

  if (!name)
    return;
  if (!mst_profile_find_component(l->p, name)) {
    profile_error(l, line, "[profile] leader_component: unknown component '%s'", name);
    return;
  }
  for (size_t i = 0; i < l->p->n_stages; i++) {
    const struct mst_stage *s = &l->p->stages[i];
    char *const *lists[] = {s->components, s->milestones};
    for (size_t k = 0; k < ELEMENTSOF(lists); k++)
      for (char *const *n = lists[k]; n && *n; n++)
        if (strcmp(*n, name) == 0)
          profile_error(l, line,
                        "[profile] leader_component: '%s' is in stage '%s' (line %u): the "
                        "leader component counts for neither health nor progress, so it is in "
                        "no stage",
                        name, s->name, s->line);
  }
}

static int profile_validate(struct profile_loader *l) {
  int r;

  for (size_t i = 0; i < l->p->n_components; i++)
    validate_component(l, i);
  validate_leader_component(l);
  for (size_t i = 0; i < l->p->n_stages; i++) {
    r = validate_stage_refs(l, i);
    if (r < 0)
      return r;
  }
  /* Alone, a profile knows its own role: the requires of other roles wait
   * for the set (mst_profile_set_load). */
  const struct mst_profile *self = l->p;
  r = dep_check(&self, 1, false, l->diag);
  if (r < 0)
    return r;
  l->error += (unsigned)r;
  return 0;
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
  p->restart_window_usec = MST_PROFILE_DEFAULT_RESTART_WINDOW_USEC;
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
  /* A model made without profiles (the unit tests) has none to find. */
  for (size_t i = 0; s && i < s->n; i++)
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

  /* Each profile's own rules hold: what is left is across roles. */
  r = dep_check((const struct mst_profile *const *)set->profiles, set->n, true, diag);
  if (r < 0)
    return r;
  if (r > 0)
    failed = true;
  if (failed)
    return -EINVAL;
  *ret = TAKE_PTR(set);
  return 0;
}
