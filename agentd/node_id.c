/* The node id from a command: see node_id.h.
 *
 * This runs before the agent's loop exists (config load), so it is a plain
 * blocking fork, exec and poll with a deadline, not the exec probe's
 * machinery. The command gets its own process group so that a timeout
 * kills whatever it started too, and so does its end: a node id command
 * leaves nothing behind. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mst/duration.h"
#include "mst/frame.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "mst/utf8.h"
#include "node_id.h"
#include "util.h"

#define NODE_ID_STDERR_MAX 256 /* of its standard error, kept for the message */
#define NODE_ID_QUOTE_MAX  120 /* of what it printed, quoted in a message */
#define NODE_ID_REAP_STEP  10  /* ms between looks at whether it exited */

bool agent_node_id_valid(const char *s) {
  /* What the aggregator accepts in a Hello (envelope.c), and printable. */
  return agent_word_valid(s, MST_NODE_ID_MAX);
}

/* The child: never returns. Only async-signal-safe calls after fork(). */
_Noreturn static void child_exec(const char *command, int out, int err) {
  sigset_t all;
  int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

  (void)setpgid(0, 0);
  sigemptyset(&all);
  (void)sigprocmask(SIG_SETMASK, &all, NULL);
  (void)signal(SIGPIPE, SIG_DFL);
  if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 ||
      dup2(err, STDERR_FILENO) < 0)
    _exit(127);
  execl("/bin/sh", "sh", "-c", command, (char *)NULL);
  _exit(127);
}

/* One of the command's outputs, read as it comes: the first cap bytes are
 * kept, the rest only counted. */
struct capture {
  int fd; /* -1 once closed */
  char *buf;
  size_t cap, len, total;
};

/* Reads what c's pipe has; closes it at EOF or on an error. */
static void capture_read(struct capture *c) {
  char chunk[4096];

  for (;;) {
    ssize_t n = read(c->fd, chunk, sizeof(chunk));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
      return;
    if (n <= 0) {
      close(TAKE_FD(c->fd));
      return;
    }
    size_t keep = MST_MIN((size_t)n, c->cap - c->len);
    memcpy(c->buf + c->len, chunk, keep);
    c->len += keep;
    c->total += (size_t)n;
  }
}

/* The first line of text (NUL-terminated), cleaned to printable UTF-8 and
 * cut, for a message. Returns a malloc'd string or NULL. */
static char *first_line(const char *text) {
  size_t n = strcspn(text, "\n");
  return mst_utf8_clean(text, n, NODE_ID_QUOTE_MAX, "…", false);
}

static char *trim(char *s) {
  static const char space[] = " \t\r\n\v\f";
  s += strspn(s, space);
  size_t n = strlen(s);
  while (n > 0 && strchr(space, s[n - 1]))
    s[--n] = '\0';
  return s;
}

/* The id in what the command printed (out[0..len), NUL-terminated at len):
 * the white space around it removed, then checked. */
static int id_take(char *out, size_t len, char **ret_id, char *err, size_t errsize) {
  bool has_nul = memchr(out, '\0', len) != NULL;
  _cleanup_free_ char *said = mst_utf8_clean(out, len, NODE_ID_QUOTE_MAX, "…", false);
  const char *id = trim(out);

  if (has_nul || !agent_node_id_valid(id)) {
    snprintf(err, errsize,
             "printed '%s', which is not a node id (1-%d bytes of printable UTF-8 without spaces)",
             said ? trim(said) : "", MST_NODE_ID_MAX);
    return -EBADMSG;
  }
  *ret_id = strdup(id);
  if (!*ret_id) {
    snprintf(err, errsize, "out of memory");
    return -ENOMEM;
  }
  return 0;
}

int agent_node_id_run(const char *command, uint64_t timeout_usec, char **ret_id, char *err,
                      size_t errsize) {
  char out[AGENT_NODE_ID_OUTPUT_MAX + 1], errtext[NODE_ID_STDERR_MAX + 1];
  struct capture cout = {.fd = -1, .buf = out, .cap = AGENT_NODE_ID_OUTPUT_MAX},
                 cerr = {.fd = -1, .buf = errtext, .cap = NODE_ID_STDERR_MAX};
  int pout[2] = {-1, -1}, perr[2] = {-1, -1}, status = 0, r = 0;
  uint64_t deadline = mst_now_monotonic_usec() + timeout_usec;
  bool exited = false;
  pid_t pid;

  if (pipe2(pout, O_CLOEXEC | O_NONBLOCK) < 0 || pipe2(perr, O_CLOEXEC | O_NONBLOCK) < 0) {
    r = -errno;
    snprintf(err, errsize, "cannot make a pipe: %s", strerror(-r));
    goto close;
  }
  pid = fork();
  if (pid < 0) {
    r = -errno;
    snprintf(err, errsize, "cannot start it: %s", strerror(-r));
    goto close;
  }
  if (pid == 0)
    child_exec(command, pout[1], perr[1]);
  (void)setpgid(pid, pid); /* also here: no race with the kill below */
  close(TAKE_FD(pout[1]));
  close(TAKE_FD(perr[1]));
  cout.fd = TAKE_FD(pout[0]);
  cerr.fd = TAKE_FD(perr[0]);

  /* Read both until they close (or too much comes), then wait for the
   * exit, all within the one deadline. */
  while (cout.fd >= 0 || cerr.fd >= 0 || !exited) {
    uint64_t now = mst_now_monotonic_usec();
    if (now >= deadline) {
      r = -ETIMEDOUT;
      break;
    }
    int wait_ms = (int)MST_MIN((deadline - now + 999) / 1000, (uint64_t)1000);
    if (cout.fd < 0 && cerr.fd < 0) {
      pid_t w = waitpid(pid, &status, WNOHANG);
      if (w == pid) {
        exited = true;
        break;
      }
      if (w < 0 && errno != EINTR) {
        r = -errno;
        break;
      }
      (void)poll(NULL, 0, MST_MIN(wait_ms, NODE_ID_REAP_STEP));
      continue;
    }
    struct capture *cs[2] = {&cout, &cerr};
    struct pollfd fds[2];
    for (size_t k = 0; k < 2; k++)
      fds[k] = (struct pollfd){.fd = cs[k]->fd, .events = POLLIN};
    if (poll(fds, 2, wait_ms) < 0 && errno != EINTR) {
      r = -errno;
      break;
    }
    for (size_t k = 0; k < 2; k++)
      if (cs[k]->fd >= 0 && fds[k].revents)
        capture_read(cs[k]);
    if (cout.total > AGENT_NODE_ID_OUTPUT_MAX) {
      r = -EFBIG;
      break;
    }
  }
  /* Whatever it left running goes with it; then it is reaped. */
  (void)kill(-pid, SIGKILL);
  if (!exited)
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
      ;
  out[cout.len] = '\0';
  errtext[cerr.len] = '\0';

  if (r == -ETIMEDOUT) {
    char d[32];
    snprintf(err, errsize, "did not exit within %s (killed)",
             mst_duration_format(timeout_usec, d, sizeof(d)));
    goto close;
  }
  if (r == -EFBIG) {
    snprintf(err, errsize, "printed more than %d bytes (killed): not a node id",
             AGENT_NODE_ID_OUTPUT_MAX);
    goto close;
  }
  if (r < 0) {
    snprintf(err, errsize, "cannot wait for it: %s", strerror(-r));
    goto close;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    _cleanup_free_ char *said = first_line(cerr.len ? errtext : out);
    if (WIFSIGNALED(status))
      snprintf(err, errsize, "was killed by signal %d%s%s", WTERMSIG(status),
               said && *said ? ": " : "", said ? said : "");
    else
      snprintf(err, errsize, "exited with status %d%s%s", WEXITSTATUS(status),
               said && *said ? ": " : "", said ? said : "");
    r = -EBADMSG;
    goto close;
  }
  r = id_take(out, cout.len, ret_id, err, errsize);

close:
  for (size_t i = 0; i < 2; i++) {
    if (pout[i] >= 0)
      close(pout[i]);
    if (perr[i] >= 0)
      close(perr[i]);
  }
  if (cout.fd >= 0)
    close(cout.fd);
  if (cerr.fd >= 0)
    close(cerr.fd);
  return r;
}
