/* muster-agentd's shared state and the interfaces between its files.
 *
 * One struct agent owns everything the daemon has: the parsed config, the
 * profile of this node's role, one struct agent_component per component of
 * that profile, the SQLite spool, the HTTP probes' shared state (TLS
 * credentials, the name resolver's door) and the stream to the aggregator.
 * All of it lives on one sd-event loop (the thread default loop of the main
 * thread); no function declared here may be called from another thread.
 *
 * How a result flows: a probe (probe_exec.c, probe_http.c, probe_tcp.c)
 * finishes and calls agent_probe_done() (probe.c), which turns raw output into
 * the kept text and hands the result to agent_component_result()
 * (component.c). There it is damped, the startup grace is applied, and a
 * state change is committed to the spool (spool.c) before the stream
 * (stream.c) is told that there is something new to send. systemd units are
 * not probed: probe_systemd.c reads them over D-Bus when systemd signals a
 * change, and hands the state it read to agent_component_observed(), which
 * skips the damping but is otherwise the same path. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "mst/damp.h"
#include "mst/profile.h"
#include "mst/state.h"
#include "probe/systemd_map.h"

#define AGENT_OUTPUT_MAX           4096           /* bytes of kept output text */
#define AGENT_TRUNCATED_MARK       "…[truncated]" /* appended when output was cut */
#define AGENT_DEFAULT_BOOT_ID_FILE "/proc/sys/kernel/random/boot_id"

/* The queued signal that brings a finished name lookup of an http check
 * back to the loop (probe_http.c); blocked from the start, like the others. */
#define AGENT_RESOLVED_SIGNAL (SIGRTMIN + 2)

struct agent_spool;
struct agent_stream;
struct agent_http;
struct agent_systemd;
struct mst_tls_creds;

/* [agent] and [log] of the config file; strings owned (mst_conf_free). */
struct agent_config {
  char *node_id;
  char *role;
  char *profiles;
  char *spool;
  char *aggregators;
  char *token_file;
  char *systemd;
  char *boot_id_file;
  uint64_t heartbeat_usec;
  uint64_t retention_usec;
  uint64_t max_frame;
  char *tls_ca;   /* [tls] ca: set, the stream is TLS and the aggregator is verified */
  char *tls_cert; /* [tls] cert and key: the agent's client certificate (mTLS) */
  char *tls_key;
  char *tls_server_name; /* [tls] server_name: the name to verify instead of the host */
  int log_level;
};

/* What the agent knows of the unit of a systemd component (probe_systemd.c),
 * kept for root-cause and progress work: the last complete read, with
 * NRestarts and the state timestamps, and the unit's Description split into
 * a display name and a description as DC/OS does (both owned, NULL before
 * the first read). */
struct agent_unit {
  struct agent_unit_props props;
  bool read;          /* props holds a complete read */
  uint64_t read_usec; /* CLOCK_MONOTONIC time of that read */
  char *display_name;
  char *description;
};

/* The runtime side of one profile component. */
struct agent_component {
  struct agent *agent;
  const struct mst_component *conf; /* owned by agent->profiles */
  struct mst_damp damp;
  enum mst_state state;      /* last state committed to the spool */
  uint64_t since_usec;       /* realtime of that change */
  char *output;              /* latest result's text (owned), never NULL */
  char *perfdata;            /* latest perfdata (owned), may be NULL */
  bool ever_healthy;         /* up at least once in the current boot */
  bool restored;             /* its row came from the spool */
  sd_event_source *schedule; /* timer of the next run */
  uint64_t run_started_usec; /* monotonic start of the current/last run */
  void *run;                 /* kind-specific in-flight probe, or NULL */
  struct agent_unit *unit;   /* systemd components: owned by agent->systemd */
};

struct agent {
  sd_event *event;
  struct agent_config cfg;
  struct mst_profile_set *profiles;
  const struct mst_profile *profile; /* of cfg.role, inside profiles */
  char *token;                       /* from token_file, trimmed; "" when none */
  struct mst_tls_creds *tls_creds;   /* from [tls]; NULL for a plain stream */
  const char *config_path;           /* for reloads */
  char *hostname;
  char *boot_id;
  uint64_t boot_start_usec; /* realtime start of the grace period's clock */
  bool boot_is_new;         /* first time this spool sees the boot */

  struct agent_component *components;
  size_t n_components;
  sd_event_source *grace_timer;
  sd_event_source *trim_timer; /* main.c: gives free heap pages back */

  struct agent_spool *spool;
  struct agent_http *http;       /* NULL when no component is checked over HTTP */
  struct agent_systemd *systemd; /* NULL when no component is a systemd unit */
  struct agent_stream *stream;

  uint64_t rng_state;
};

/* ---- config.c -------------------------------------------------------------- */

/* Loads and validates the config file into a->cfg, reads the token file, and
 * loads the profile set and this role's profile. Every problem goes to diag
 * as "path:line: message". Returns 0 or a negative errno (-EINVAL when diag
 * has the reasons). The caller frees with agent_config_done() either way. */
int agent_config_load(struct agent *a, const char *path, struct mst_diag *diag);
void agent_config_done(struct agent *a);
/* Loads the [tls] files named in a->cfg: *ret is NULL when TLS is off
 * ([tls] ca unset). Problems go to diag as "path:line: message". Returns 0
 * or a negative errno. Loop thread (start-up and SIGHUP). */
int agent_tls_load(const struct agent *a, const char *path, struct mst_tls_creds **ret,
                   struct mst_diag *diag);

/* ---- main.c ---------------------------------------------------------------- */

/* Asks for a malloc_trim() within 5 s: something (a state change) has just
 * churned the heap. Cheap; does nothing before the loop runs. */
void agent_trim_soon(struct agent *a);

/* ---- util.c ---------------------------------------------------------------- */

/* Seeds the agent's PRNG from getrandom(). Jitter only; not for secrets. */
void agent_random_seed(struct agent *a);
/* Uniform in [0, bound); 0 when bound is 0. */
uint64_t agent_random_below(struct agent *a, uint64_t bound);
/* Fills buf with n random bytes from the kernel (for ids). Returns 0 or -errno. */
int agent_random_bytes(void *buf, size_t n);

/* Reads a small file (at most max bytes, else -EFBIG) and returns its
 * contents with surrounding whitespace removed (malloc'd). */
int agent_read_file_trimmed(const char *path, size_t max, char **ret);

/* ---- netaddr.c ------------------------------------------------------------- */

/* Parses "host:port" or "[v6]:port" into a socket address. The host must be
 * a numeric IPv4/IPv6 address or "localhost" (127.0.0.1): name resolution
 * would block the loop, so it is not done. Returns 0, or -EINVAL with a
 * reason in err. */
int agent_sockaddr_parse(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len, char *err,
                         size_t errsize);

/* Starts a non-blocking connect. Returns the socket (>= 0, non-blocking,
 * CLOEXEC) or -errno; *ret_connected tells whether it already connected. */
int agent_connect_start(const struct sockaddr *sa, socklen_t len, bool *ret_connected);

/* After EPOLLOUT: 0 when connected, else -errno from SO_ERROR. */
int agent_connect_result(int fd);

/* ---- boot.c ---------------------------------------------------------------- */

/* Reads the boot id (first line of path, trimmed, at most 128 bytes). */
int agent_boot_id_read(const char *path, char **ret);
/* The kernel's boot time (btime of /proc/stat) as realtime usec. */
int agent_boot_kernel_time(uint64_t *ret_usec);
/* The host name (gethostname), malloc'd. */
int agent_hostname(char **ret);
/* Non-loopback, non-link-local addresses of this host as strings
 * (getifaddrs). Returns the count and a NULL-terminated strv. */
int agent_host_addresses(char ***ret);

/* ---- component.c ----------------------------------------------------------- */

/* Builds a->components from the profile, restores their last states from the
 * spool and forgets spooled components that left the profile. Needs a->spool
 * and the boot facts. */
int agent_components_init(struct agent *a);
void agent_components_done(struct agent *a);

/* Feeds one probe result. text is the kept output (copied); perfdata may be
 * NULL. Records a state change when the effective state changes. */
void agent_component_result(struct agent_component *c, enum mst_result r, const char *text,
                            const char *perfdata);

/* Feeds a state read from an authoritative source (a systemd unit), which
 * is not damped: rise and fall do not apply, and the counter shows 1/1 or
 * 0/1. observed is healthy, starting, unhealthy or unknown; the startup
 * grace applies as for probe results. text is copied. Records a state
 * change only when the effective state differs from the recorded one, so a
 * repeated read never makes a change; a new text for a component that is
 * not healthy is sent without a change (agent_stream_outputs_changed()). */
void agent_component_observed(struct agent_component *c, enum mst_state observed, const char *text);

/* True while the node is inside its startup grace. */
bool agent_in_startup_grace(struct agent *a);

/* Arms the timer that re-evaluates grace-held components at the grace end. */
int agent_grace_timer_start(struct agent *a);

/* ---- probe.c --------------------------------------------------------------- */

/* Schedules every probed component: the first run at a random point within
 * min(interval, 200ms), then every interval. */
int agent_probes_start(struct agent *a);
/* Cancels in-flight probes and timers (kills exec children). */
void agent_probes_stop(struct agent *a);

/* Called by a probe kind when its run is over (after it cleared c->run).
 * text is preformatted by the kind and perfdata may be NULL (both copied);
 * the text is sanitized and capped again here. */
void agent_probe_done(struct agent_component *c, enum mst_result r, const char *text,
                      const char *perfdata);

/* Parses raw output: the first line, split at '|' into text and perfdata,
 * both trimmed, made printable UTF-8, the text capped at AGENT_OUTPUT_MAX
 * with AGENT_TRUNCATED_MARK appended when cut (also when was_cut says the
 * caller already dropped part of the line). Returns 0 or -ENOMEM. */
int agent_output_parse(const char *raw, size_t len, bool was_cut, char **ret_text,
                       char **ret_perfdata);

/* Makes text printable UTF-8 and caps it like agent_output_parse(). */
char *agent_output_clean(const char *text);

/* ---- probe_exec.c / probe_http.c / probe_tcp.c ---------------------------- */

/* Each start function begins one run and sets c->run; when it returns an
 * error nothing was started and no completion will come. The run ends with
 * agent_probe_done(). cancel ends a run without a result. */
int agent_exec_start(struct agent_component *c);
void agent_exec_cancel(struct agent_component *c);

/* The HTTP probes' shared state; loads the system's trusted CAs when the
 * profile has an https check. Free waits up to 2 s for name lookups that
 * cannot be cancelled. */
int agent_http_new(struct agent *a, struct agent_http **ret);
void agent_http_free(struct agent_http *h);
int agent_http_start(struct agent_component *c);
void agent_http_cancel(struct agent_component *c);

/* ---- http_url.c ------------------------------------------------------------ */

/* A parsed http check URL; strings owned (agent_http_url_done()). */
struct agent_http_url {
  bool tls;          /* https:// */
  bool ipv6_literal; /* the host was written [v6] */
  bool numeric_host; /* an IP address rather than a name */
  uint16_t port;
  char *host;        /* without brackets */
  char *host_header; /* the Host header: host, and ":port" when not the default */
  char *target;      /* path and query, at least "/" */
  char *basic_auth;  /* base64 of the URL's "user:password", or NULL */
};

/* Parses an http:// or https:// URL. Returns 0, -ENOMEM, or -EINVAL with a
 * reason in err. ret is set only on success. */
int agent_http_url_parse(const char *url, struct agent_http_url *ret, char *err, size_t errsize);
void agent_http_url_done(struct agent_http_url *u);

/* The address to connect to when the host is numeric or "localhost"
 * (127.0.0.1). Returns 0, or -EADDRNOTAVAIL for a name to resolve. */
int agent_http_url_address(const struct agent_http_url *u, struct sockaddr_storage *ret,
                           socklen_t *ret_len);

/* ---- http_response.c ------------------------------------------------------- */

#define AGENT_HTTP_BODY_MAX    (64 * 1024) /* body bytes looked at */
#define AGENT_HTTP_HEADERS_MAX (64 * 1024) /* status line and headers */

/* The incremental parser of one response (see http_response.c). Set up with
 * agent_http_response_init(); expect_body is borrowed and must outlive it. */
struct agent_http_response {
  int state;
  unsigned status; /* 100-599, once the status line is in */
  bool headers_done;
  bool chunked;
  bool has_length;
  bool body_full;  /* AGENT_HTTP_BODY_MAX bytes were looked at */
  bool body_found; /* expect_body was seen */
  uint64_t remaining;
  uint64_t body_len;
  uint64_t received;
  size_t header_bytes;
  size_t framing_bytes;
  const char *expect;
  size_t expect_len;
  char *carry; /* the body's last expect_len - 1 bytes (owned) */
  size_t carry_len;
  size_t line_len;
  char line[512];
  char error[256]; /* why, after -EBADMSG */
};

void agent_http_response_init(struct agent_http_response *p, const char *expect_body);
void agent_http_response_done(struct agent_http_response *p);
/* Feeds n bytes. Returns 0 when more is wanted, 1 when the response is
 * complete (stop reading: what follows is not looked at), -EBADMSG with
 * p->error, or -ENOMEM. */
int agent_http_response_feed(struct agent_http_response *p, const char *data, size_t n);
/* The connection ended. Returns 1 when the response is complete, or
 * -EBADMSG with p->error. */
int agent_http_response_eof(struct agent_http_response *p);

int agent_tcp_start(struct agent_component *c);
void agent_tcp_cancel(struct agent_component *c);

/* ---- probe_systemd.c ------------------------------------------------------ */

/* Connects to the bus of cfg.systemd on a->event and starts watching the
 * unit of every systemd component (sets their c->unit). A bus that cannot be
 * reached is not an error: the components are reported unknown and the
 * connection is retried with backoff. Returns 0 or -errno (out of memory,
 * event sources). */
int agent_systemd_new(struct agent *a, struct agent_systemd **ret);
/* Closes the bus without waiting for it, and clears the components'
 * c->unit. Accepts NULL. */
void agent_systemd_free(struct agent_systemd *s);

/* ---- stream.c -------------------------------------------------------------- */

/* Creates the stream and starts connecting to the aggregators. */
int agent_stream_new(struct agent *a, struct agent_stream **ret);
void agent_stream_free(struct agent_stream *s);
/* A change was committed to the spool: send it when streaming. */
void agent_stream_changes_pending(struct agent_stream *s);
/* Tries to connect at once when the stream waits for its next attempt
 * (new credentials were loaded). Loop thread. */
void agent_stream_retry_now(struct agent_stream *s);
/* Some component's output changed without a state change: send a fresh
 * snapshot soon (rate-limited; see stream.c). Accepts NULL. */
void agent_stream_outputs_changed(struct agent_stream *s);
