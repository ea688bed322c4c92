/* INI configuration, table-driven. Each daemon declares one table of
 * mst_conf_key rows (section, key, type, bounds, default) pointing into its
 * config struct; mst_conf_load() applies the defaults, reads the file through
 * libinih and reports *every* problem as "path:line: message" into a diag:
 * syntax errors, unknown sections and keys, duplicate keys, bad values and
 * values out of bounds.
 *
 * mst_ini_parse() is the line-tracking layer underneath, also used by the
 * profile loader for its named sections ([component "name"]). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mst/diag.h"

enum mst_conf_type {
  MST_CONF_STRING,   /* char * (owned by the target struct) */
  MST_CONF_UINT,     /* uint64_t, within [min, max] */
  MST_CONF_DURATION, /* uint64_t microseconds, within [min, max] */
  MST_CONF_SIZE,     /* uint64_t bytes: "1048576", "512KiB", "1MiB", "1GiB" */
  MST_CONF_BOOL,     /* bool: yes/no, true/false, on/off, 1/0 */
  MST_CONF_LOGLEVEL, /* int: err, warning, notice, info, debug */
  MST_CONF_ENUM,     /* int: the index in names[] of the value (case-insensitive) */
};

struct mst_conf_key {
  const char *section;
  const char *name;
  enum mst_conf_type type;
  size_t offset; /* offsetof() the field in the target struct */
  uint64_t min;  /* bounds for UINT/DURATION/SIZE; 0,0 means unbounded */
  uint64_t max;
  const char *dflt;         /* default, written as in a file; NULL leaves it zero */
  const char *const *names; /* ENUM: the values allowed, NULL-terminated */
};

/* Sets every default, then reads path (when non-NULL) into target. Returns 0;
 * -EINVAL when diag received errors; -errno (and a diag line) when the file
 * cannot be read. All errors of a file are collected, not just the first.
 * Call mst_conf_free() afterwards in every case. */
int mst_conf_load(const char *path, const struct mst_conf_key *table, size_t n, void *target,
                  struct mst_diag *diag);

/* Frees the strings the table's STRING fields own. */
void mst_conf_free(const struct mst_conf_key *table, size_t n, void *target);

/* Parses one value for a key (also used for defaults). Returns 0 or -EINVAL
 * with a message in err. */
int mst_conf_parse_value(const struct mst_conf_key *k, const char *value, void *target, char *err,
                         size_t errsize);

/* Called once per key (name and value non-NULL) and once per section header
 * (name and value NULL), with the 1-based line. Return 0, or a negative errno
 * after adding a diag line (parsing continues either way). */
typedef int (*mst_ini_handler)(void *user, const char *section, const char *name, const char *value,
                               unsigned line);

/* Caps on what mst_ini_parse() reads, in bytes. A config or profile file is
 * the operator's, but a wrong path (/dev/zero, a log file) must fail fast
 * with a line to fix rather than grow memory: a longer line is refused
 * without being buffered, and reading stops at the file cap. */
#define MST_INI_LINE_MAX 4096              /* without its newline */
#define MST_INI_FILE_MAX (4 * 1024 * 1024) /* checked on the fd and while reading */

/* Reads path with libinih, calling h with line numbers. Lines that are not a
 * section, a key=value, a comment or blank are reported as syntax errors, and
 * so are lines over MST_INI_LINE_MAX. Returns 0, -EINVAL when any error was
 * reported (by this parser or by h), -EFBIG when the file is over
 * MST_INI_FILE_MAX, or -errno when the file cannot be opened or read. */
int mst_ini_parse(const char *path, mst_ini_handler h, void *user, struct mst_diag *diag);

/* The line where [section] key was first set in path, or 0 (unset, or the
 * file unreadable): for errors found after parsing, such as a file a key
 * names that cannot be loaded. */
unsigned mst_conf_key_line(const char *path, const char *section, const char *key);

/* Splits a named section header `kind "name"` into its parts: returns 1 and
 * sets *ret_kind and *ret_name (malloc'd) for a named section, 0 for a plain one
 * (only *ret_kind set), -EINVAL when the quoting is broken. */
int mst_ini_section_split(const char *section, char **ret_kind, char **ret_name);

/* Splits a whitespace- or comma-separated list. Returns the count, with
 * *ret a NULL-terminated malloc'd array of malloc'd strings. */
int mst_strv_split(const char *s, char ***ret);
void mst_strv_free(char **v);
size_t mst_strv_length(char *const *v);
