/* exec checks: a command run through /bin/sh -c, judged by the Nagios plugin
 * convention (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; any other exit code,
 * death by a signal or a timeout count as UNKNOWN).
 *
 * What a check runs with (docs/runbook.md, "How exec checks run"): the child
 * is started with posix_spawn() (see exec_spawn()) in its own process group,
 * with stdin from /dev/null, stdout and stderr into one pipe, every other
 * descriptor closed, default signal dispositions and an empty signal mask
 * (the agent blocks SIGCHLD/SIGTERM/SIGINT and ignores SIGPIPE), and a clean
 * environment: PATH and LANG fixed (EXEC_PATH, EXEC_LANG), plus the agent's
 * own MUSTER_* variables, the one deliberate way to hand a setting to
 * checks. Nothing else of the agent's environment (the unit's, proxies,
 * credentials, NOTIFY_SOCKET) reaches a check, so a check cannot speak for
 * the agent and behaves the same however the agent was started.
 *
 * Three sources watch a run on the loop: the child's exit (sd-event needs
 * SIGCHLD blocked, which main() does before anything starts), the pipe
 * (non-blocking, read as data comes so that a chatty child never stalls on a
 * full pipe) and the timeout, which kills the whole group with SIGKILL.
 *
 * Only the first line of output is kept (bounded); the rest is read and
 * thrown away, at most EXEC_READ_PER_EVENT bytes per loop iteration and
 * EXEC_OUTPUT_MAX in all: past that the agent closes its end of the pipe,
 * and a child that goes on writing gets EPIPE or dies of SIGPIPE. The run is
 * over when the child has exited: whatever it wrote is then drained from the
 * pipe (within the same bound) without waiting for EOF, since a background
 * grandchild may hold the pipe open, and whatever is left of its process
 * group is killed. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "component.h"
#include "mst/duration.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "probe/exec.h"
#include "probe/probe.h"

/* The first line is kept up to this much: the text (capped later at
 * AGENT_OUTPUT_MAX) plus room for perfdata. */
#define EXEC_LINE_MAX       (2 * AGENT_OUTPUT_MAX)
#define EXEC_READ_PER_EVENT (256 * 1024)
#define EXEC_OUTPUT_MAX     (1024 * 1024) /* read per run, then the pipe is closed */

#define EXEC_PATH       "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
#define EXEC_LANG       "LANG=C.UTF-8"
#define EXEC_ENV_PREFIX "MUSTER_" /* the agent's variables that checks get */

extern char **environ;

struct exec_run {
  struct agent_component *c;
  pid_t pid;
  int pipe_fd;
  sd_event_source *child;
  sd_event_source *io;
  sd_event_source *timeout;
  bool timed_out;
  bool line_done; /* the first line is complete (newline seen or cap reached) */
  bool line_cut;  /* the first line was longer than EXEC_LINE_MAX */
  bool overflow;  /* EXEC_OUTPUT_MAX read: the pipe was closed on the child */
  size_t output_len;
  size_t line_len;
  char line[EXEC_LINE_MAX];
};

static void exec_run_free(struct exec_run *run) {
  if (!run)
    return;
  run->child = sd_event_source_disable_unref(run->child);
  run->io = sd_event_source_disable_unref(run->io);
  run->timeout = sd_event_source_disable_unref(run->timeout);
  if (run->pipe_fd >= 0)
    close(run->pipe_fd);
  free(run);
}

static void exec_kill_group(struct exec_run *run) {
  /* The group first; the child itself too, in case setpgid() lost a race. */
  (void)kill(-run->pid, SIGKILL);
  (void)kill(run->pid, SIGKILL);
}

/* Keeps what belongs to the first line, up to EXEC_LINE_MAX. */
static void exec_take_output(struct exec_run *run, const char *data, size_t n) {
  if (run->line_done || n == 0)
    return;
  const char *nl = memchr(data, '\n', n);
  size_t take = nl ? (size_t)(nl - data) : n;
  size_t room = sizeof(run->line) - run->line_len;

  if (take > room) {
    take = room;
    run->line_cut = true;
    run->line_done = true;
  }
  memcpy(run->line + run->line_len, data, take);
  run->line_len += take;
  if (nl)
    run->line_done = true;
  else if (run->line_len == sizeof(run->line)) {
    run->line_done = true;
    run->line_cut = true;
  }
}

static void exec_close_pipe(struct exec_run *run) {
  run->io = sd_event_source_disable_unref(run->io);
  if (run->pipe_fd >= 0)
    close(run->pipe_fd);
  run->pipe_fd = -1;
}

/* Reads what the pipe has, up to budget bytes and what is left of
 * EXEC_OUTPUT_MAX. Returns 0 at EOF, 1 when more may come, -ENOBUFS when
 * the run has read all it may, or -errno. */
static int exec_read_pipe(struct exec_run *run, size_t budget) {
  char buf[16 * 1024];

  while (budget > 0) {
    size_t left = EXEC_OUTPUT_MAX - run->output_len;
    if (left == 0)
      return -ENOBUFS;
    ssize_t n = read(run->pipe_fd, buf, MST_MIN(sizeof(buf), MST_MIN(budget, left)));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN)
        return 1;
      return -errno;
    }
    if (n == 0)
      return 0;
    exec_take_output(run, buf, (size_t)n);
    run->output_len += (size_t)n;
    budget -= (size_t)n;
  }
  return 1;
}

static int exec_on_output(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
  struct exec_run *run = userdata;
  int r = exec_read_pipe(run, EXEC_READ_PER_EVENT);

  if (r == -ENOBUFS) {
    /* Enough: the child's next write fails (EPIPE, or SIGPIPE kills it). */
    log_debug("component %s: more than %d bytes of output, closing the pipe", run->c->conf->name,
              EXEC_OUTPUT_MAX);
    run->overflow = true;
    exec_close_pipe(run);
  } else if (r <= 0) {
    /* EOF or a broken pipe: nothing more to read; the exit decides. */
    exec_close_pipe(run);
  }
  return 0;
}

static int exec_on_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
  struct exec_run *run = userdata;

  run->timed_out = true;
  log_debug("component %s: check timed out, killing process group %d", run->c->conf->name,
            (int)run->pid);
  exec_kill_group(run);
  /* The exit of the child ends the run. */
  return 0;
}

static int exec_on_exit(sd_event_source *source, const siginfo_t *si, void *userdata) {
  struct exec_run *run = userdata;
  struct agent_component *c = run->c;
  _cleanup_free_ char *text = NULL, *perfdata = NULL, *msg = NULL;
  enum mst_result result;
  char duration[32];
  int r;

  /* The child is still a zombie here, so its pid (the group id) cannot have
   * been reused: leftovers of the group are safe to kill. */
  (void)kill(-run->pid, SIGKILL);
  if (run->pipe_fd >= 0 && exec_read_pipe(run, EXEC_OUTPUT_MAX) == -ENOBUFS)
    run->overflow = true;
  const char *overflow = run->overflow ? " after more than 1 MiB of output" : "";

  r = agent_output_parse(run->line, run->line_len, run->line_cut, &text, &perfdata);
  if (r < 0)
    text = NULL;
  const char *out = text ? text : "";

  if (run->timed_out) {
    result = MST_RESULT_UNKNOWN;
    r = asprintf(&msg, "timed out after %s",
                 mst_duration_format(c->conf->timeout_usec, duration, sizeof(duration)));
  } else if (si->si_code == CLD_EXITED && si->si_status >= 0 && si->si_status <= 3) {
    result = (enum mst_result)si->si_status;
    if (*out || si->si_status == 0)
      r = asprintf(&msg, "%s", out);
    else
      r = asprintf(&msg, "exit code %d", si->si_status);
  } else if (si->si_code == CLD_EXITED) {
    result = MST_RESULT_UNKNOWN;
    r = asprintf(&msg, "exit code %d%s%s%s", si->si_status, overflow, *out ? ": " : "", out);
  } else {
    const char *name = sigabbrev_np(si->si_status);
    char sig[32];

    if (name)
      snprintf(sig, sizeof(sig), "%d (SIG%s)", si->si_status, name);
    else
      snprintf(sig, sizeof(sig), "%d", si->si_status);
    result = MST_RESULT_UNKNOWN;
    r = asprintf(&msg, "killed by signal %s%s%s%s", sig, overflow, *out ? ": " : "", out);
  }
  if (r < 0)
    msg = NULL;

  c->run = NULL;
  exec_run_free(run);
  agent_probe_done(c, result, msg ? msg : "out of memory formatting the output", perfdata);
  return 0;
}

/* The environment of checks: PATH and LANG, and the agent's MUSTER_*
 * variables (borrowed from environ: only the child uses them). */
static char **exec_environment(void) {
  size_t n = 0, k = 0;
  char **env;

  while (environ && environ[n])
    n++;
  env = calloc(n + 3, sizeof(char *));
  if (!env)
    return NULL;
  env[k++] = (char *)EXEC_PATH;
  env[k++] = (char *)EXEC_LANG;
  for (size_t i = 0; i < n; i++)
    if (strncmp(environ[i], EXEC_ENV_PREFIX, strlen(EXEC_ENV_PREFIX)) == 0 &&
        strchr(environ[i], '='))
      env[k++] = environ[i];
  return env;
}

/* Starts /bin/sh -c command with posix_spawn(): glibc's vfork-style clone
 * shares the agent's memory until the exec, so starting a check costs no
 * page-table copy and no copy-on-write faults in the agent afterwards. The
 * child's setup (process group, signals, descriptors) is done by the spawn
 * attributes and file actions, before the exec. */
static int exec_spawn(const char *command, char **env, int stdin_fd, int out_fd, pid_t *ret_pid) {
  char *argv[] = {(char *)"/bin/sh", (char *)"-c", (char *)command, NULL};
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  sigset_t none, all;
  pid_t pid = 0;
  int r;

  r = posix_spawnattr_init(&attr);
  if (r != 0)
    return -r;
  r = posix_spawn_file_actions_init(&actions);
  if (r != 0) {
    posix_spawnattr_destroy(&attr);
    return -r;
  }
  sigemptyset(&none);
  sigfillset(&all);
  if ((r = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                               POSIX_SPAWN_SETSIGDEF)) != 0 ||
      (r = posix_spawnattr_setpgroup(&attr, 0)) != 0 ||
      (r = posix_spawnattr_setsigmask(&attr, &none)) != 0 ||
      (r = posix_spawnattr_setsigdefault(&attr, &all)) != 0 ||
      (r = posix_spawn_file_actions_adddup2(&actions, stdin_fd, STDIN_FILENO)) != 0 ||
      (r = posix_spawn_file_actions_adddup2(&actions, out_fd, STDOUT_FILENO)) != 0 ||
      (r = posix_spawn_file_actions_adddup2(&actions, out_fd, STDERR_FILENO)) != 0 ||
      (r = posix_spawn_file_actions_addclosefrom_np(&actions, 3)) != 0)
    goto out;

  r = posix_spawn(&pid, "/bin/sh", &actions, &attr, argv, env);
  if (r == 0)
    *ret_pid = pid;

out:
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  return -r;
}

int agent_exec_start(struct agent_component *c) {
  struct agent *a = c->agent;
  _cleanup_close_ int devnull = -1, out_r = -1, out_w = -1;
  _cleanup_free_ char **env = NULL;
  struct exec_run *run;
  int fds[2], r;
  pid_t pid = 0;

  if (!c->conf->command)
    return -EINVAL;
  env = exec_environment();
  if (!env)
    return -ENOMEM;
  devnull = open("/dev/null", O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (devnull < 0)
    return -errno;
  /* Blocking for the child's end; non-blocking only for ours. */
  if (pipe2(fds, O_CLOEXEC) < 0)
    return -errno;
  out_r = fds[0];
  out_w = fds[1];
  if (fcntl(out_r, F_SETFL, O_NONBLOCK) < 0)
    return -errno;

  run = calloc(1, sizeof(*run));
  if (!run)
    return -ENOMEM;
  run->c = c;
  run->pipe_fd = -1;

  r = exec_spawn(c->conf->command, env, devnull, out_w, &pid);
  if (r < 0) {
    free(run);
    return r;
  }

  run->pid = pid;
  run->pipe_fd = TAKE_FD(out_r);

  r = sd_event_add_child(a->event, &run->child, pid, WEXITED, exec_on_exit, run);
  if (r < 0)
    goto fail;
  (void)sd_event_source_set_description(run->child, "exec-child");
  r = sd_event_add_io(a->event, &run->io, run->pipe_fd, EPOLLIN, exec_on_output, run);
  if (r < 0)
    goto fail;
  (void)sd_event_source_set_description(run->io, "exec-output");
  r = sd_event_add_time_relative(a->event, &run->timeout, CLOCK_MONOTONIC, c->conf->timeout_usec,
                                 USEC_PER_MSEC, exec_on_timeout, run);
  if (r < 0)
    goto fail;
  (void)sd_event_source_set_description(run->timeout, "exec-timeout");

  log_debug("component %s: started '%s' as pid %d", c->conf->name, c->conf->command, (int)pid);
  c->run = run;
  return 0;

fail:
  /* The callback will never come: take the child down here. */
  exec_kill_group(run);
  run->child = sd_event_source_disable_unref(run->child);
  (void)waitpid(pid, NULL, 0);
  exec_run_free(run);
  return r;
}

void agent_exec_cancel(struct agent_component *c) {
  struct exec_run *run = c->run;

  if (!run)
    return;
  exec_kill_group(run);
  run->child = sd_event_source_disable_unref(run->child);
  /* SIGKILLed: the wait is short, and it leaves no zombie behind. */
  while (waitpid(run->pid, NULL, 0) < 0 && errno == EINTR)
    ;
  c->run = NULL;
  exec_run_free(run);
}
