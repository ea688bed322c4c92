/* tcp checks (tcp.c): a non-blocking connect to a numeric address. The run
 * is owned by c->run until it ends through agent_probe_done(). Loop thread. */
#pragma once

struct agent_component;

/* Begins one run and sets c->run. When it returns an error (-errno) nothing
 * was started and no completion will come; a bad address or a refused
 * connection is a result, not an error. */
int agent_tcp_start(struct agent_component *c);
/* Ends a run without a result. */
void agent_tcp_cancel(struct agent_component *c);
