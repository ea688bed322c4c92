/* INI configuration: a line-tracking layer over libinih, and the table-driven
 * loader both daemons use for their config files.
 *
 * libinih does the splitting into sections and key = value pairs, but it
 * cannot say which line a pair came from, cannot announce section headers,
 * stops reporting after the first bad line, truncates long section names and
 * strips ';' comments even inside quotes. So inih reads through our own
 * reader function, which sees every line first: it counts lines, cuts inline
 * comments outside quotes, reports each line that is not blank, a comment, a
 * [section] or key = value, announces section headers to the handler, and
 * hands inih a cleaned line. The handler is then called with the line number
 * the reader just counted (inih reads exactly one line per reader call).
 *
 * mst_conf_load() applies a table of typed keys with bounds on top of that
 * and collects every error of the file rather than stopping at the first. */
#include <ini.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "mst/config.h"
#include "mst/duration.h"
#include "mst/dynbuf.h"
#include "mst/log.h"
#include "mst/str.h"

#define INI_LINE_MAX MST_INI_LINE_MAX
/* What ini_getline() keeps of a line: the longest accepted, a BOM and a
 * '\r' before the newline, and one byte more so that it sees a longer one. */
#define INI_RAW_MAX (INI_LINE_MAX + 5)

struct ini_parser {
  FILE *f;
  const char *path;
  mst_ini_handler handler;
  void *user;
  struct mst_diag *diag;

  unsigned lineno;
  char *section;  /* current section as written, "" before the first */
  uint64_t bytes; /* read so far, against MST_INI_FILE_MAX */
  bool cut;       /* the last line was longer than p->raw keeps */
  char raw[INI_RAW_MAX + 1];
  bool skip_keys;    /* under a broken section header: keys are not passed on */
  int error;         /* some error was reported */
  int fatal;         /* -errno that ends the parse (read error, OOM) */
  unsigned *flagged; /* lines the reader already reported */
  size_t n_flagged;
};

_printf_(2, 3) static void ini_report(struct ini_parser *p, const char *fmt, ...) {
  unsigned *flagged;
  va_list ap;

  va_start(ap, fmt);
  (void)mst_diag_addv(p->diag, p->path, p->lineno, fmt, ap);
  va_end(ap);
  p->error = 1;
  flagged = MST_ARRAY_APPEND(p->flagged, p->n_flagged);
  if (flagged) {
    *flagged = p->lineno;
    p->n_flagged++;
  }
}

static bool ini_line_flagged(const struct ini_parser *p, unsigned line) {
  for (size_t i = 0; i < p->n_flagged; i++)
    if (p->flagged[i] == line)
      return true;
  return false;
}

static bool is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

static char *strip(char *s) {
  size_t n;

  while (is_blank(*s))
    s++;
  n = strlen(s);
  while (n > 0 && is_blank(s[n - 1]))
    s[--n] = '\0';
  return s;
}

/* Cuts a ';' comment that starts the line or follows whitespace, unless it
 * is inside double quotes. */
static void cut_inline_comment(char *s) {
  bool quoted = false;

  for (char *c = s; *c; c++) {
    if (*c == '\\' && quoted && c[1]) {
      c++;
      continue;
    }
    if (*c == '"')
      quoted = !quoted;
    else if (*c == ';' && !quoted && (c == s || is_blank(c[-1]))) {
      *c = '\0';
      return;
    }
  }
}

/* Checks one cleaned, stripped, non-empty line. Returns the section name for
 * a header (pointing into line), NULL otherwise; reports syntax errors. */
static bool ini_line_ok(struct ini_parser *p, char *line, char **ret_section) {
  *ret_section = NULL;

  if (line[0] == '[') {
    size_t n = strlen(line);
    if (line[n - 1] != ']') {
      ini_report(p, "syntax error: section header '%s' does not end with ']'", line);
      return false;
    }
    line[n - 1] = '\0';
    char *name = strip(line + 1);
    if (*name == '\0' || strpbrk(name, "[]")) {
      line[n - 1] = ']';
      ini_report(p, "syntax error: bad section header '%s'", line);
      return false;
    }
    *ret_section = name;
    return true;
  }

  char *sep = strpbrk(line, "=:");
  if (!sep) {
    ini_report(p, "syntax error: '%s' is not a [section], a key = value or a comment", line);
    return false;
  }
  if (sep == line) {
    /* The line is stripped, so "= value" is the only way to have no key. */
    ini_report(p, "syntax error: missing key name in '%s'", line);
    return false;
  }
  return true;
}

/* Reads the next line into p->raw, without its newline. At most
 * INI_RAW_MAX bytes are kept: the rest of a longer line is read and dropped,
 * never buffered, so a 300 MB line costs no memory. Returns the length
 * kept, or -1 at the end of the file, on a read error or past
 * MST_INI_FILE_MAX (p->fatal says which). */
static ssize_t ini_getline(struct ini_parser *p) {
  size_t n = 0;
  bool any = false;
  int c;

  p->cut = false;
  while ((c = getc_unlocked(p->f)) != EOF) {
    any = true;
    if (++p->bytes > MST_INI_FILE_MAX) {
      p->fatal = -EFBIG;
      return -1;
    }
    if (c == '\n')
      break;
    if (n < INI_RAW_MAX)
      p->raw[n++] = (char)c;
    else
      p->cut = true;
  }
  if (c == EOF && ferror(p->f)) {
    p->fatal = -EIO;
    return -1;
  }
  if (!any)
    return -1;
  p->raw[n] = '\0';
  return (ssize_t)n;
}

/* The ini_reader: returns one cleaned line (or an empty one in place of a bad
 * line) per call, and NULL at the end of the file. */
static char *ini_read_line(char *str, int num, void *stream) {
  struct ini_parser *p = stream;
  ssize_t n;

  if (p->fatal)
    return NULL;
  n = ini_getline(p);
  if (n < 0)
    return NULL;
  p->lineno++;

  char *line = p->raw;
  str[0] = '\0';

  if ((size_t)n != strlen(line)) {
    ini_report(p, "syntax error: line contains a NUL byte");
    goto blank;
  }
  if (p->lineno == 1 && (unsigned char)line[0] == 0xEF && (unsigned char)line[1] == 0xBB &&
      (unsigned char)line[2] == 0xBF)
    line += 3;
  /* A cut line is too long whatever the part kept looks like (a '\r' in
   * it would end strcspn early). */
  if (p->cut || strcspn(line, "\r\n") > INI_LINE_MAX) {
    ini_report(p, "line too long (over %d bytes)", INI_LINE_MAX);
    goto blank;
  }

  line = strip(line);
  if (line[0] == '#' || line[0] == ';')
    goto blank; /* a comment line, indented or not */
  cut_inline_comment(line);
  line = strip(line);
  if (*line == '\0')
    goto blank;

  char *section;
  if (!ini_line_ok(p, line, &section)) {
    /* The keys after a broken header belong to no known section; reporting
     * each of them again would only bury the real error. */
    if (line[0] == '[')
      p->skip_keys = true;
    goto blank;
  }

  if (section) {
    char *copy = strdup(section);
    if (!copy) {
      p->fatal = -ENOMEM;
      return NULL;
    }
    free(p->section);
    p->section = copy;
    p->skip_keys = false;
    if (p->handler(p->user, p->section, NULL, NULL, p->lineno) < 0)
      p->error = 1;
    /* inih keeps its own, possibly truncated, copy; we ignore it. */
    snprintf(str, (size_t)num, "[%s]\n", section);
    return str;
  }

  if (strlen(line) + 2 > (size_t)num) {
    ini_report(p, "line too long (over %d bytes)", INI_LINE_MAX);
    goto blank;
  }
  snprintf(str, (size_t)num, "%s\n", line);
  return str;

blank:
  snprintf(str, (size_t)num, "\n");
  return str;
}

/* A value that is exactly one double-quoted string ("...", with \" and \\
 * escapes) is unquoted; any other value is taken as written, so that a
 * command such as "/opt/x/check" --fast keeps its quotes. Returns a malloc'd
 * copy, or NULL on OOM. */
static char *ini_unquote(const char *value) {
  size_t n = strlen(value), o = 0;
  _cleanup_free_ char *out = NULL;
  const char *c;

  if (n < 2 || value[0] != '"' || value[n - 1] != '"')
    return strdup(value);

  out = malloc(n);
  if (!out)
    return NULL;
  for (c = value + 1; *c && *c != '"'; c++) {
    if (*c == '\\' && (c[1] == '"' || c[1] == '\\'))
      c++;
    out[o++] = *c;
  }
  if (c != value + n - 1)
    return strdup(value); /* several quoted parts: not a single string */
  out[o] = '\0';
  return TAKE_PTR(out);
}

static int ini_on_pair(void *user, const char *section, const char *name, const char *value) {
  struct ini_parser *p = user;
  _cleanup_free_ char *unquoted = NULL;

  (void)section; /* ours is complete; inih's may be truncated */
  if (!name || !value || p->skip_keys)
    return 1;

  unquoted = ini_unquote(value);
  if (!unquoted) {
    p->fatal = -ENOMEM;
    return 0;
  }

  if (p->handler(p->user, p->section, name, unquoted, p->lineno) < 0)
    p->error = 1;
  /* Always "success" for inih: the error, if any, is already reported. */
  return 1;
}

static void ini_setup_once(void) {
  /* Process-wide libinih settings (Debian builds it with runtime knobs). */
  ini_allow_multiline = false;
  ini_allow_inline_comments = false; /* done by ini_read_line, quote-aware */
  ini_allow_no_value = false;
  ini_stop_on_first_error = false;
  ini_use_stack = false;
  ini_allow_realloc = false;
  ini_max_line = INI_LINE_MAX + 16;
  ini_initial_alloc = INI_LINE_MAX + 16;
}

int mst_ini_parse(const char *path, mst_ini_handler h, void *user, struct mst_diag *diag) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  struct ini_parser p = {
      .path = path,
      .handler = h,
      .user = user,
      .diag = diag,
  };
  int r;

  pthread_once(&once, ini_setup_once);

  p.f = fopen(path, "re");
  if (!p.f) {
    r = -errno;
    mst_diag_add(diag, path, 0, "cannot open: %s", strerror(-r));
    return r;
  }
  /* A regular file that is too large is refused before it is read; what
   * fstat cannot size (/dev/zero says 0, a pipe) is capped while reading. */
  struct stat st;
  if (fstat(fileno(p.f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > MST_INI_FILE_MAX) {
    r = -EFBIG;
    goto out_fatal;
  }
  p.section = strdup("");
  if (!p.section) {
    r = -ENOMEM;
    goto out;
  }

  r = ini_parse_stream(ini_read_line, &p, ini_on_pair, &p);
  if (p.fatal) {
    r = p.fatal;
    goto out_fatal;
  }
  if (r == -2) {
    r = -ENOMEM;
    mst_diag_add(diag, path, 0, "%s", strerror(ENOMEM));
    goto out;
  }
  if (r > 0 && !ini_line_flagged(&p, (unsigned)r)) {
    mst_diag_add(diag, path, (unsigned)r, "syntax error");
    p.error = 1;
  }
  r = p.error ? -EINVAL : 0;
  goto out;

out_fatal:
  if (r == -EFBIG)
    mst_diag_add(diag, path, 0, "file is larger than %d bytes", MST_INI_FILE_MAX);
  else
    mst_diag_add(diag, path, p.lineno, "%s", r == -EIO ? "read error" : strerror(-r));
out:
  fclose(p.f);
  free(p.section);
  free(p.flagged);
  return r;
}

struct key_line_query {
  const char *section, *key;
  unsigned line;
};

static int key_line_visit(void *user, const char *section, const char *name, const char *value,
                          unsigned line) {
  struct key_line_query *q = user;
  if (name && q->line == 0 && strcmp(section, q->section) == 0 && strcmp(name, q->key) == 0)
    q->line = line;
  return 0;
}

unsigned mst_conf_key_line(const char *path, const char *section, const char *key) {
  struct key_line_query q = {section, key, 0};
  struct mst_diag scratch = {0};

  if (!path)
    return 0;
  (void)mst_ini_parse(path, key_line_visit, &q, &scratch);
  mst_diag_done(&scratch);
  return q.line;
}

int mst_ini_section_split(const char *section, char **ret_kind, char **ret_name) {
  const char *s = section, *kind_end, *q, *name_end;
  _cleanup_free_ char *kind = NULL, *name = NULL;

  while (is_blank(*s))
    s++;
  kind_end = s;
  while (*kind_end && !is_blank(*kind_end) && *kind_end != '"')
    kind_end++;
  q = kind_end;
  while (is_blank(*q))
    q++;

  if (*q == '\0') {
    if (kind_end == s)
      return -EINVAL;
    kind = strndup(s, (size_t)(kind_end - s));
    if (!kind)
      return -ENOMEM;
    *ret_kind = TAKE_PTR(kind);
    *ret_name = NULL;
    return 0;
  }

  /* kind "name": one quoted, non-empty name and nothing after it. */
  if (kind_end == s || *q != '"')
    return -EINVAL;
  name_end = strchr(q + 1, '"');
  if (!name_end || name_end == q + 1)
    return -EINVAL;
  for (const char *t = name_end + 1; *t; t++)
    if (!is_blank(*t))
      return -EINVAL;

  kind = strndup(s, (size_t)(kind_end - s));
  name = strndup(q + 1, (size_t)(name_end - q - 1));
  if (!kind || !name)
    return -ENOMEM;
  *ret_kind = TAKE_PTR(kind);
  *ret_name = TAKE_PTR(name);
  return 1;
}

void mst_strv_free(char **v) {
  if (!v)
    return;
  for (char **i = v; *i; i++)
    free(*i);
  free(v);
}

size_t mst_strv_length(char *const *v) {
  size_t n = 0;

  if (!v)
    return 0;
  while (v[n])
    n++;
  return n;
}

int mst_strv_split(const char *s, char ***ret) {
  static const char separators[] = " \t\r\n,";
  char **v = NULL;
  size_t n = 0;

  v = calloc(1, sizeof(char *));
  if (!v)
    return -ENOMEM;
  for (const char *c = s ? s : ""; *c;) {
    c += strspn(c, separators);
    size_t len = strcspn(c, separators);
    if (len == 0)
      break;
    if (!MST_ARRAY_APPEND(v, n + 1)) /* room for the NULL after it */
      goto oom;
    v[n] = strndup(c, len);
    if (!v[n])
      goto oom;
    v[++n] = NULL;
    c += len;
  }
  if (n > INT32_MAX)
    goto oom;
  *ret = v;
  return (int)n;

oom:
  mst_strv_free(v);
  return -ENOMEM;
}

/* --- typed values --------------------------------------------------------- */

static int parse_uint(const char *s, uint64_t *ret) {
  uint64_t v = 0;

  if (!s || *s < '0' || *s > '9')
    return -EINVAL;
  for (; *s >= '0' && *s <= '9'; s++) {
    if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
      return -ERANGE;
    v = v * 10 + (uint64_t)(*s - '0');
  }
  if (*s != '\0')
    return -EINVAL;
  *ret = v;
  return 0;
}

static const struct {
  const char *suffix;
  uint64_t factor;
} size_suffixes[] = {
    {"", 1},
    {"K", 1ULL << 10},
    {"KiB", 1ULL << 10},
    {"M", 1ULL << 20},
    {"MiB", 1ULL << 20},
    {"G", 1ULL << 30},
    {"GiB", 1ULL << 30},
};

static int parse_size(const char *s, uint64_t *ret) {
  uint64_t v = 0;
  const char *c = s;

  if (*c < '0' || *c > '9')
    return -EINVAL;
  for (; *c >= '0' && *c <= '9'; c++) {
    if (v > (UINT64_MAX - (uint64_t)(*c - '0')) / 10)
      return -ERANGE;
    v = v * 10 + (uint64_t)(*c - '0');
  }
  while (*c == ' ')
    c++;
  for (size_t i = 0; i < ELEMENTSOF(size_suffixes); i++)
    if (strcmp(c, size_suffixes[i].suffix) == 0) {
      if (v > UINT64_MAX / size_suffixes[i].factor)
        return -ERANGE;
      *ret = v * size_suffixes[i].factor;
      return 0;
    }
  return -EINVAL;
}

static void format_size(uint64_t v, char *buf, size_t size) {
  if (v != 0 && v % (1ULL << 30) == 0)
    snprintf(buf, size, "%lluGiB", (unsigned long long)(v >> 30));
  else if (v != 0 && v % (1ULL << 20) == 0)
    snprintf(buf, size, "%lluMiB", (unsigned long long)(v >> 20));
  else if (v != 0 && v % (1ULL << 10) == 0)
    snprintf(buf, size, "%lluKiB", (unsigned long long)(v >> 10));
  else
    snprintf(buf, size, "%llu", (unsigned long long)v);
}

static void format_bound(const struct mst_conf_key *k, uint64_t v, char *buf, size_t size) {
  switch (k->type) {
  case MST_CONF_DURATION:
    mst_duration_format(v, buf, size);
    break;
  case MST_CONF_SIZE:
    format_size(v, buf, size);
    break;
  default:
    snprintf(buf, size, "%llu", (unsigned long long)v);
  }
}

static int parse_bool(const char *s) {
  static const char *const yes[] = {"yes", "true", "on", "1"};
  static const char *const no[] = {"no", "false", "off", "0"};

  for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
    if (strcasecmp(s, yes[i]) == 0)
      return 1;
    if (strcasecmp(s, no[i]) == 0)
      return 0;
  }
  return -EINVAL;
}

/* "invalid value 'x' (full, normal)": the values an ENUM key takes. */
static void enum_expected(const struct mst_conf_key *k, const char *value, char *err,
                          size_t errsize) {
  size_t n = (size_t)snprintf(err, errsize, "invalid value '%s' (", value);
  for (int i = 0; k->names && k->names[i] && n < errsize; i++)
    n += (size_t)snprintf(err + n, errsize - n, "%s%s", i ? ", " : "", k->names[i]);
  if (n < errsize)
    snprintf(err + n, errsize - n, ")");
}
/* The numeric key types: how each is parsed, and what its errors say. */
struct number_kind {
  int (*parse)(const char *s, uint64_t *ret);
  const char *what; /* "number", ... */
  const char *hint; /* after "invalid <what> '<value>'" */
};

static const struct number_kind number_kinds[] = {
    [MST_CONF_UINT] = {parse_uint, "number", ""},
    [MST_CONF_DURATION] = {mst_duration_parse, "duration", " (write e.g. 500ms, 5s, 15m, 2h, 7d)"},
    [MST_CONF_SIZE] = {parse_size, "size", " (bytes, or with K, KiB, M, MiB, G, GiB)"},
};

int mst_conf_parse_value(const struct mst_conf_key *k, const char *value, void *target, char *err,
                         size_t errsize) {
  void *field = (char *)target + k->offset;
  const struct number_kind *number;
  uint64_t v;
  int r;

  if (!value) {
    snprintf(err, errsize, "missing value");
    return -EINVAL;
  }

  switch (k->type) {
  case MST_CONF_STRING:
    if (mst_str_replace((char **)field, value) < 0) {
      snprintf(err, errsize, "out of memory");
      return -ENOMEM;
    }
    return 0;

  case MST_CONF_BOOL:
    r = parse_bool(value);
    if (r < 0) {
      snprintf(err, errsize, "invalid boolean '%s' (yes/no, true/false, on/off, 1/0)", value);
      return -EINVAL;
    }
    *(bool *)field = r;
    return 0;

  case MST_CONF_LOGLEVEL:
    r = mst_log_level_from_string(value);
    if (r < 0) {
      snprintf(err, errsize, "invalid log level '%s' (err, warning, notice, info, debug)", value);
      return -EINVAL;
    }
    *(int *)field = r;
    return 0;

  case MST_CONF_ENUM:
    for (int i = 0; k->names && k->names[i]; i++)
      if (strcasecmp(value, k->names[i]) == 0) {
        *(int *)field = i;
        return 0;
      }
    enum_expected(k, value, err, errsize);
    return -EINVAL;

  case MST_CONF_UINT:
  case MST_CONF_DURATION:
  case MST_CONF_SIZE:
    number = &number_kinds[k->type];
    r = number->parse(value, &v);
    if (r == -ERANGE) {
      snprintf(err, errsize, "%s '%s' is too large", number->what, value);
      return -EINVAL;
    }
    if (r < 0) {
      snprintf(err, errsize, "invalid %s '%s'%s", number->what, value, number->hint);
      return -EINVAL;
    }
    break;

  default:
    snprintf(err, errsize, "unsupported key type %d", (int)k->type);
    return -EINVAL;
  }

  if ((k->min != 0 || k->max != 0) && (v < k->min || v > k->max)) {
    char lo[32], hi[32];
    format_bound(k, k->min, lo, sizeof(lo));
    format_bound(k, k->max, hi, sizeof(hi));
    snprintf(err, errsize, "'%s' is out of range: must be between %s and %s", value, lo, hi);
    return -EINVAL;
  }
  *(uint64_t *)field = v;
  return 0;
}

void mst_conf_free(const struct mst_conf_key *table, size_t n, void *target) {
  for (size_t i = 0; i < n; i++)
    if (table[i].type == MST_CONF_STRING) {
      char **field = (char **)((char *)target + table[i].offset);
      free(*field);
      *field = NULL;
    }
}

/* --- the table-driven loader ------------------------------------------------ */

struct conf_loader {
  const char *path;
  const struct mst_conf_key *table;
  size_t n;
  void *target;
  struct mst_diag *diag;
  unsigned *set_on_line; /* per key: line where the file set it, 0 if not */
  bool section_known;
};

static bool conf_section_known(const struct conf_loader *c, const char *section) {
  for (size_t i = 0; i < c->n; i++)
    if (strcmp(c->table[i].section, section) == 0)
      return true;
  return false;
}

static int conf_on_pair(void *user, const char *section, const char *name, const char *value,
                        unsigned line) {
  struct conf_loader *c = user;
  char err[256];

  if (!name) {
    c->section_known = conf_section_known(c, section);
    if (!c->section_known) {
      mst_diag_add(c->diag, c->path, line, "unknown section [%s]", section);
      return -EINVAL;
    }
    return 0;
  }

  if (section[0] == '\0') {
    mst_diag_add(c->diag, c->path, line, "key '%s' is outside of any section", name);
    return -EINVAL;
  }
  if (!c->section_known)
    return -EINVAL; /* the section header was reported already */

  for (size_t i = 0; i < c->n; i++) {
    const struct mst_conf_key *k = &c->table[i];
    if (strcmp(k->section, section) != 0 || strcmp(k->name, name) != 0)
      continue;

    if (c->set_on_line[i]) {
      mst_diag_add(c->diag, c->path, line,
                   "duplicate key '%s' in section [%s] (first set on line %u)", name, section,
                   c->set_on_line[i]);
      return -EINVAL;
    }
    c->set_on_line[i] = line;
    if (mst_conf_parse_value(k, value, c->target, err, sizeof(err)) < 0) {
      mst_diag_add(c->diag, c->path, line, "[%s] %s: %s", section, name, err);
      return -EINVAL;
    }
    return 0;
  }

  mst_diag_add(c->diag, c->path, line, "unknown key '%s' in section [%s]", name, section);
  return -EINVAL;
}

int mst_conf_load(const char *path, const struct mst_conf_key *table, size_t n, void *target,
                  struct mst_diag *diag) {
  _cleanup_free_ unsigned *set_on_line = NULL;
  char err[256];
  bool failed = false;
  int r;

  for (size_t i = 0; i < n; i++) {
    if (!table[i].dflt)
      continue;
    r = mst_conf_parse_value(&table[i], table[i].dflt, target, err, sizeof(err));
    if (r < 0) {
      /* A bug in the table, not in the file; still reported, not asserted. */
      mst_diag_add(diag, path ? path : "(defaults)", 0, "built-in default of [%s] %s: %s",
                   table[i].section, table[i].name, err);
      if (r == -ENOMEM)
        return r;
      failed = true;
    }
  }
  if (!path)
    return failed ? -EINVAL : 0;

  set_on_line = calloc(n ? n : 1, sizeof(unsigned));
  if (!set_on_line)
    return -ENOMEM;
  struct conf_loader c = {
      .path = path,
      .table = table,
      .n = n,
      .target = target,
      .diag = diag,
      .set_on_line = set_on_line,
      .section_known = false,
  };

  r = mst_ini_parse(path, conf_on_pair, &c, diag);
  if (r < 0 && r != -EINVAL)
    return r;
  return (r < 0 || failed) ? -EINVAL : 0;
}
