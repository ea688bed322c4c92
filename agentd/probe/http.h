/* http checks (http.c): one GET over HTTP/1.1, or HTTPS with GnuTLS, on the
 * loop. struct agent_http (a->http) holds what the runs share: the system's
 * trusted CAs and the name lookups in flight, which glibc's resolver thread
 * finishes and hands back by a queued signal (AGENT_RESOLVED_SIGNAL), the
 * one door in from that thread. A run is owned by c->run until it ends
 * through agent_probe_done(). Loop thread. */
#pragma once

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

/* The queued signal that brings a finished name lookup back to the loop;
 * blocked from the start (main.c), like the others. */
#define AGENT_RESOLVED_SIGNAL (SIGRTMIN + 2)

struct agent;
struct agent_component;
struct agent_http;
struct http_run;

/* A fetch's end, on the loop: status is the HTTP status and body (NUL-
 * terminated, len bytes, at most AGENT_HTTP_BODY_MAX) its first bytes; or
 * status 0, body NULL and error saying why it failed ("connect to 10.0.0.1
 * port 5051: Connection refused", "timed out after 5s ..."). The run is
 * over and freed right after: the callback forgets it and must not cancel
 * it. */
typedef void (*agent_http_fetch_done_t)(void *userdata, unsigned status, const char *body,
                                        size_t len, const char *error);

/* Begins one run and sets c->run. When it returns an error (-errno) nothing
 * was started and no completion will come. */
int agent_http_start(struct agent_component *c);
/* Ends a run without a result; a name lookup still in flight is left to
 * finish and freed when it comes back. */
void agent_http_cancel(struct agent_component *c);

/* One GET of url for the agent itself (the Mesos id), not a check: the
 * same client, bounded by timeout_usec. *ret is set to the run before
 * anything can end it; done is called exactly once, possibly before this
 * returns, unless the run is cancelled first. Returns 0, or -errno with
 * nothing started (done is never called, *ret NULL). */
int agent_http_fetch(struct agent_http *h, const char *url, uint64_t timeout_usec,
                     agent_http_fetch_done_t done, void *userdata, struct http_run **ret);
/* Ends a fetch without calling its callback. */
void agent_http_fetch_cancel(struct http_run *run);

/* The HTTP probes' shared state; loads the system's trusted CAs when the
 * profile has an https check. Returns 0 or -errno. */
int agent_http_new(struct agent *a, struct agent_http **ret);
/* Waits up to 2 s for name lookups that cannot be cancelled, then frees.
 * The runs must have been cancelled (agent_probes_stop()). Accepts NULL. */
void agent_http_free(struct agent_http *h);
