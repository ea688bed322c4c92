/* Unit tests for mst/log.h: the "<N>" priority prefix and ident, one line
 * per message, the level filter that skips evaluating arguments, level
 * names, truncation of an over-long message, and the escaping that keeps an
 * argument from forging a second line or reaching a terminal raw. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "mst/log.h"
#include "mst/macro.h"

static int saved_stderr = -1;
static int pipe_read = -1;

static void capture_stderr(void) {
  int fds[2];
  cr_assert_eq(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
  saved_stderr = dup(STDERR_FILENO);
  cr_assert_geq(saved_stderr, 0);
  cr_assert_eq(dup2(fds[1], STDERR_FILENO), STDERR_FILENO);
  close(fds[1]);
  pipe_read = fds[0];
}

static void restore_stderr(void) {
  dup2(saved_stderr, STDERR_FILENO);
  close(saved_stderr);
  close(pipe_read);
  mst_log_set_ident(NULL);
  mst_log_set_level(MST_LOG_INFO);
}

TestSuite(log, .init = capture_stderr, .fini = restore_stderr);

/* Everything written so far, as one string. */
static char *captured(void) {
  static char buf[16384];
  ssize_t n = read(pipe_read, buf, sizeof(buf) - 1);
  buf[n > 0 ? n : 0] = '\0';
  return buf;
}

Test(log, prefix_and_ident) {
  cr_assert_eq(mst_log_max_level, MST_LOG_INFO, "the default level is info");
  log_info("hello %d", 42);
  cr_assert_str_eq(captured(), "<6>hello 42\n");

  mst_log_set_ident("aggregatord: ");
  log_error("disk %s", "full");
  log_warning("w");
  log_notice("n");
  cr_assert_str_eq(captured(), "<3>aggregatord: disk full\n<4>aggregatord: w\n<5>aggregatord: n\n");
}

static int evaluated;

static int side_effect(void) {
  evaluated++;
  return 1;
}

Test(log, level_filter_skips_arguments) {
  evaluated = 0;
  log_debug("not shown %d", side_effect());
  cr_assert_eq(evaluated, 0, "arguments below the level are not evaluated");
  cr_assert_str_eq(captured(), "");

  mst_log_set_level(MST_LOG_DEBUG);
  log_debug("shown %d", side_effect());
  cr_assert_eq(evaluated, 1);
  cr_assert_str_eq(captured(), "<7>shown 1\n");

  mst_log_set_level(MST_LOG_ERR);
  log_warning("hidden");
  log_error("kept");
  cr_assert_str_eq(captured(), "<3>kept\n");
}

Test(log, errno_is_preserved) {
  errno = EPIPE;
  log_info("x");
  cr_assert_eq(errno, EPIPE);
  (void)captured();
}

/* What was captured: one line under max bytes, ending with the cut mark. */
static char *captured_cut_line(size_t max) {
  char *out = captured();
  size_t n = strlen(out);
  cr_assert_lt(n, max, "bounded");
  cr_assert_eq(strcmp(out + n - 4, "...\n"), 0, "ends with a mark and one newline");
  cr_assert_eq(strchr(out, '\n'), out + n - 1, "one line");
  return out;
}

Test(log, long_message_is_cut_with_a_mark) {
  char *big = malloc(10000);
  cr_assert_not_null(big);
  memset(big, 'a', 9999);
  big[9999] = '\0';
  log_info("%s", big);
  free(big);

  char *out = captured_cut_line(5000);
  cr_assert_eq(strncmp(out, "<6>aaa", 6), 0);
}

Test(log, level_names) {
  static const struct {
    const char *name;
    int level;
  } cases[] = {
      {"err", MST_LOG_ERR},       {"warning", MST_LOG_WARNING},
      {"notice", MST_LOG_NOTICE}, {"info", MST_LOG_INFO},
      {"debug", MST_LOG_DEBUG},   {"error", -EINVAL},
      {"INFO", -EINVAL},          {"", -EINVAL},
      {"crit", -EINVAL},
  };
  for (size_t i = 0; i < ELEMENTSOF(cases); i++)
    cr_assert_eq(mst_log_level_from_string(cases[i].name), cases[i].level, "'%s'", cases[i].name);
  cr_assert_eq(mst_log_level_from_string(NULL), -EINVAL);
}

Test(log, control_characters_cannot_forge_a_line) {
  mst_log_set_ident("aggregatord: ");
  log_warning("node %s refused", "n1\n<2>aggregatord: forged\r\x1b[31mred\x7f\t.");
  cr_assert_str_eq(
      captured(),
      "<4>aggregatord: node n1\\n<2>aggregatord: forged\\r\\x1b[31mred\\x7f\\t. refused\n");

  /* A NUL inside the formatted text is escaped too, not a cut. */
  log_info("a%cb", 0);
  cr_assert_str_eq(captured(), "<6>aggregatord: a\\x00b\n");
}

Test(log, utf8_is_kept_and_what_is_not_utf8_is_escaped) {
  /* Printable UTF-8 and backslashes read as before; C1 controls (U+009B is
   * a CSI to some terminals), stray and overlong bytes are escaped. */
  log_info("%s", "caf\xc3\xa9 \xe2\x9c\x93 C:\\dir \xc2\x9b"
                 "2J \xff\xc0\xaf \xe2\x9c");
  cr_assert_str_eq(captured(), "<6>caf\xc3\xa9 \xe2\x9c\x93 C:\\dir \\xc2\\x9b"
                               "2J \\xff\\xc0\\xaf \\xe2\\x9c\n");
}

Test(log, long_escaped_message_is_cut_whole) {
  /* Each ESC becomes four bytes: the line is still bounded, ends with the
   * mark, and no escape or character is cut in half. */
  char *big = malloc(5000);
  cr_assert_not_null(big);
  for (size_t i = 0; i < 4999; i++)
    big[i] = i % 3 == 0 ? '\x1b' : i % 3 == 1 ? '\xc3' : '\xa9';
  big[4999] = '\0';
  log_info("%s", big);
  free(big);

  char *out = captured_cut_line(4097);
  size_t n = strlen(out);
  cr_assert_eq(strchr(out, '\x1b'), NULL, "no raw ESC");
  /* What precedes the mark is whole pieces: "\x1b" then "é". */
  const char *p = out + 3;
  while (p < out + n - 4) {
    cr_assert_eq(strncmp(p, "\\x1b\xc3\xa9", 6), 0, "a whole piece at %zu", (size_t)(p - out));
    p += 6;
  }
}
