/* Logging to stderr with sd-daemon "<N>" priority prefixes, so that the
 * journal keeps the levels when a daemon runs under systemd. Arguments are
 * not evaluated for messages below the configured level.
 * Thread-safe: one write(2) per message. */
#pragma once

#include <syslog.h>

#include "mst/macro.h"

enum mst_log_level {
  MST_LOG_ERR = LOG_ERR,         /* 3 */
  MST_LOG_WARNING = LOG_WARNING, /* 4 */
  MST_LOG_NOTICE = LOG_NOTICE,   /* 5 */
  MST_LOG_INFO = LOG_INFO,       /* 6 */
  MST_LOG_DEBUG = LOG_DEBUG,     /* 7 */
};

extern int mst_log_max_level;

/* Sets the highest level that is printed. Any thread, at start-up. */
void mst_log_set_level(int level);

/* Parses "err", "warning", "notice", "info", "debug". Returns the level, or
 * -EINVAL. */
int mst_log_level_from_string(const char *s);

/* Prefix printed after "<N>" on every line, such as "aggregatord: ". */
void mst_log_set_ident(const char *ident);

void mst_log_internal(int level, const char *fmt, ...) _printf_(2, 3);

#define mst_log(level, ...)                                                                        \
  do {                                                                                             \
    if ((level) <= mst_log_max_level)                                                              \
      mst_log_internal((level), __VA_ARGS__);                                                      \
  } while (0)

#define log_error(...)   mst_log(MST_LOG_ERR, __VA_ARGS__)
#define log_warning(...) mst_log(MST_LOG_WARNING, __VA_ARGS__)
#define log_notice(...)  mst_log(MST_LOG_NOTICE, __VA_ARGS__)
#define log_info(...)    mst_log(MST_LOG_INFO, __VA_ARGS__)
#define log_debug(...)   mst_log(MST_LOG_DEBUG, __VA_ARGS__)
