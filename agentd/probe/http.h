/* http checks (http.c): one GET over HTTP/1.1, or HTTPS with GnuTLS, on the
 * loop. struct agent_http (a->http) holds what the runs share: the system's
 * trusted CAs and the name lookups in flight, which glibc's resolver thread
 * finishes and hands back by a queued signal (AGENT_RESOLVED_SIGNAL), the
 * one door in from that thread. A run is owned by c->run until it ends
 * through agent_probe_done(). Loop thread. */
#pragma once

#include <signal.h>

/* The queued signal that brings a finished name lookup back to the loop;
 * blocked from the start (main.c), like the others. */
#define AGENT_RESOLVED_SIGNAL (SIGRTMIN + 2)

struct agent;
struct agent_component;
struct agent_http;

/* Begins one run and sets c->run. When it returns an error (-errno) nothing
 * was started and no completion will come. */
int agent_http_start(struct agent_component *c);
/* Ends a run without a result; a name lookup still in flight is left to
 * finish and freed when it comes back. */
void agent_http_cancel(struct agent_component *c);

/* The HTTP probes' shared state; loads the system's trusted CAs when the
 * profile has an https check. Returns 0 or -errno. */
int agent_http_new(struct agent *a, struct agent_http **ret);
/* Waits up to 2 s for name lookups that cannot be cancelled, then frees.
 * The runs must have been cancelled (agent_probes_stop()). Accepts NULL. */
void agent_http_free(struct agent_http *h);
