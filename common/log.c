/* Logging to stderr with sd-daemon "<N>" priority prefixes. Each message is
 * formatted into one stack buffer and written with a single write(2), so
 * lines from different threads never interleave and the journal sees one
 * record per message. Level and ident are set once at start-up. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mst/log.h"

#define LOG_LINE_MAX 4096

int mst_log_max_level = MST_LOG_INFO;

static char log_ident[64];

static const char *const log_level_names[] = {
    [MST_LOG_ERR] = "err",   [MST_LOG_WARNING] = "warning", [MST_LOG_NOTICE] = "notice",
    [MST_LOG_INFO] = "info", [MST_LOG_DEBUG] = "debug",
};

void mst_log_set_level(int level) {
  mst_log_max_level = level;
}

int mst_log_level_from_string(const char *s) {
  if (!s)
    return -EINVAL;
  for (size_t i = 0; i < ELEMENTSOF(log_level_names); i++)
    if (log_level_names[i] && strcmp(log_level_names[i], s) == 0)
      return (int)i;
  return -EINVAL;
}

void mst_log_set_ident(const char *ident) {
  snprintf(log_ident, sizeof(log_ident), "%s", ident ? ident : "");
}

void mst_log_internal(int level, const char *fmt, ...) {
  char line[LOG_LINE_MAX];
  int saved_errno = errno;
  va_list ap;
  int n;

  if (level < 0 || level > MST_LOG_DEBUG)
    level = MST_LOG_ERR;

  n = snprintf(line, sizeof(line), "<%d>%s", level, log_ident);
  if (n < 0)
    goto out;

  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
  va_end(ap);
  if (m < 0)
    goto out;

  size_t len = (size_t)n + (size_t)m;
  if (len > sizeof(line) - 2) {
    /* Truncated: mark it so a reader knows the message was cut. */
    len = sizeof(line) - 2;
    memcpy(line + len - 3, "...", 3);
  }
  line[len++] = '\n';

  /* One write; a short write to stderr is not worth retrying. */
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
out:
  errno = saved_errno;
}
