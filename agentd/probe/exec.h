/* exec checks (exec.c): a command run through /bin/sh -c, judged by the
 * Nagios plugin convention. The run (child, pipe, timeout) is owned by
 * c->run until it ends through agent_probe_done(). Loop thread; SIGCHLD
 * must be blocked before the first start (main.c does it first). */
#pragma once

struct agent_component;

/* Begins one run and sets c->run. When it returns an error (-errno) nothing
 * was started and no completion will come. */
int agent_exec_start(struct agent_component *c);
/* Ends a run without a result: kills the child's group and reaps it. */
void agent_exec_cancel(struct agent_component *c);
