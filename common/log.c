/* Logging to stderr with sd-daemon "<N>" priority prefixes. Each message is
 * formatted into one stack buffer and written with a single write(2), so
 * lines from different threads never interleave and the journal sees one
 * record per message. Level and ident are set once at start-up.
 *
 * Messages quote what peers send (node ids, host names, reasons, paths), so
 * the formatted text is escaped before it is written: a newline in an
 * argument must not start a second, forged record with its own "<N>"
 * priority, and an ESC must not reach an operator's terminal. Escaping the
 * whole message here, rather than each argument at each call, keeps every
 * log call safe whatever it is given. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mst/log.h"
#include "mst/utf8.h"

#define LOG_LINE_MAX 4096
#define LOG_CUT_MARK "..."

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

/* Writes src[0..n) to dst as the "\x1b" form of each byte. Returns 4n. */
static size_t log_escape_bytes(char *dst, const unsigned char *src, size_t n) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    dst[4 * i] = '\\';
    dst[4 * i + 1] = 'x';
    dst[4 * i + 2] = hex[src[i] >> 4];
    dst[4 * i + 3] = hex[src[i] & 0xf];
  }
  return 4 * n;
}

/* Appends the text of src[0..n) to dst (which has len bytes and room for
 * max), escaped so that it holds no control character: C0 and DEL as "\n",
 * "\r", "\t" or "\x1b", the C1 controls (U+0080..U+009F, which some
 * terminals also obey) and every byte that is not well-formed UTF-8 as
 * "\xc2\x9b" (the journal shows a record that is not UTF-8 as a blob).
 * Printable text, backslashes included, is copied as it is, so an ordinary
 * message reads as before. Stops before a piece that would not fit; returns
 * the new length, and *ret_cut tells whether all of src was written. */
static size_t log_escape(char *dst, size_t len, size_t max, const char *src, size_t n,
                         bool *ret_cut) {
  const unsigned char *s = (const unsigned char *)src;
  size_t i = 0;

  while (i < n) {
    unsigned char c = s[i];
    char piece[16];
    size_t k, w;

    if (c >= 0x20 && c < 0x7f) {
      /* The common case: a run of printable ASCII, copied at once. */
      size_t run = 1;
      while (i + run < n && s[i + run] >= 0x20 && s[i + run] < 0x7f)
        run++;
      if (len + run > max) {
        memcpy(dst + len, s + i, max - len);
        *ret_cut = true;
        return max;
      }
      memcpy(dst + len, s + i, run);
      len += run;
      i += run;
      continue;
    } else if (c == '\n' || c == '\r' || c == '\t') {
      k = 1, w = 2;
      piece[0] = '\\';
      piece[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
    } else {
      k = c < 0x80 ? 0 : mst_utf8_char_len(src + i, n - i);
      if (k == 0 || (k == 2 && c == 0xC2 && s[i + 1] < 0xA0)) {
        k = k ? 2 : 1; /* a control character or a stray byte */
        w = log_escape_bytes(piece, s + i, k);
      } else {
        w = k;
        memcpy(piece, s + i, k);
      }
    }
    if (len + w > max) {
      *ret_cut = true;
      return len;
    }
    memcpy(dst + len, piece, w);
    len += w;
    i += k;
  }
  *ret_cut = false;
  return len;
}

void mst_log_internal(int level, const char *fmt, ...) {
  char msg[LOG_LINE_MAX], line[LOG_LINE_MAX];
  int saved_errno = errno;
  va_list ap;
  bool cut;

  if (level < 0 || level > MST_LOG_DEBUG)
    level = MST_LOG_ERR;

  va_start(ap, fmt);
  int m = vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (m < 0)
    goto out;

  /* The prefix and ident are ours; only the message is escaped. */
  int n = snprintf(line, sizeof(line), "<%d>%s", level, log_ident);
  if (n < 0)
    goto out;

  /* Room is kept for the mark and the newline, so a cut never splits a
   * character or an escape. */
  size_t room = sizeof(line) - 1 - strlen(LOG_CUT_MARK);
  size_t len = log_escape(line, (size_t)n, room, msg, MST_MIN((size_t)m, sizeof(msg) - 1), &cut);
  if (cut || (size_t)m >= sizeof(msg)) {
    /* Truncated: mark it so a reader knows the message was cut. */
    memcpy(line + len, LOG_CUT_MARK, strlen(LOG_CUT_MARK));
    len += strlen(LOG_CUT_MARK);
  }
  line[len++] = '\n';

  /* One write; a short write to stderr is not worth retrying. */
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
out:
  errno = saved_errno;
}
