/* http checks: one GET over HTTP/1.1, on the agent's sd-event loop, with
 * TLS from GnuTLS for https:// URLs.
 *
 * The agent used libcurl for this. libcurl alone did not cost much, but it
 * brought its whole dependency tree into every agent: OpenSSL, Kerberos,
 * LDAP, SASL, libssh2, nghttp2, librtmp and more, each mapped, relocated and
 * partly resident, and OpenSSL initialized on top. That was about 5 MB of
 * the agent's 14 MB resident, for one request line and a status code. So
 * the check is built in, and does just what it needs (bench/README.md,
 * "Agent footprint", has the figures):
 *
 *   URL (http_url.c) ─▶ resolve ─▶ connect ─▶ [TLS handshake] ─▶ send ─▶ receive
 *                        (names       (each address        (system trust,     (http_response.c)
 *                         only)        in turn)             host name checked)
 *
 * One timer bounds the whole run at `timeout`. Each check uses a new
 * connection and asks the server to close it ("Connection: close"): a check
 * that rides on an old connection proves little about the server accepting
 * new ones. No proxy, whatever the environment says; no redirects (a 3xx is
 * judged like any other status); at most AGENT_HTTP_BODY_MAX bytes of the
 * body are looked at. OK means the expected status and, when expect_body is
 * set, the body containing it; anything else is CRITICAL, with the status or
 * the reason the request failed.
 *
 * Names: numeric addresses and "localhost" (127.0.0.1, as for tcp checks)
 * are used as they are. Any other host name goes to getaddrinfo_a(), which
 * resolves it on glibc's helper thread; its completion comes back as a
 * queued real-time signal (AGENT_RESOLVED_SIGNAL) carrying the request's
 * pointer, blocked in every thread and read by the loop through sd-event's
 * signalfd (the one door in). Not SIGEV_THREAD: glibc runs that function on
 * a new thread with every signal unblocked, where a SIGTERM meant for the
 * loop would kill the agent outright. A pointer is only followed when it is
 * one of the lookups in flight, since any process may queue a signal with
 * any value. A run that ends while its
 * name is being resolved leaves the request to finish on its own; the
 * loop frees it when it comes back.
 *
 * https: the system's trusted CAs are loaded once, when the profile has an
 * https check, and the certificate must match the URL's host, as with curl's
 * defaults.
 *
 * A fetch (agent_http_fetch()) is the same run for the agent's own use (the
 * Mesos id, from the local Mesos state): it keeps the body's first
 * AGENT_HTTP_BODY_MAX bytes and hands them, with the status, to a callback
 * instead of judging a component. */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "component.h"
#include "mst/duration.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "netaddr.h"
#include "probe/http.h"
#include "probe/http_response.h"
#include "probe/http_url.h"
#include "probe/probe.h"

#define HTTP_ADDRESSES_MAX    4 /* addresses of a name tried in turn */
#define HTTP_READ_PER_EVENT   (64 * 1024)
#define HTTP_READ_CHUNK       (8 * 1024)
#define HTTP_RESOLVE_DRAIN_MS 2000 /* at exit, for lookups still running */
#define HTTP_RESOLVE_MAX      64   /* lookups in flight, abandoned ones included */

struct http_resolve {
  struct http_run *run; /* NULL once the run has ended */
  struct gaicb request;
  struct addrinfo hints;
  struct sigevent notify;
  char port[8];
  char *host;
  struct http_resolve *next;
};

struct agent_http {
  struct agent *agent;
  gnutls_certificate_credentials_t tls_creds; /* NULL until an https check needs it */
  sd_event_source *resolved_signal;           /* NULL until a name is resolved */
  struct http_resolve *resolving;             /* lookups in flight, owned here */
};

enum http_phase {
  HTTP_RESOLVING,
  HTTP_CONNECTING,
  HTTP_HANDSHAKE,
  HTTP_SENDING,
  HTTP_RECEIVING,
};

struct http_run {
  struct agent_component *c; /* the check's component; NULL for a fetch */
  struct agent_http *http;
  uint64_t timeout_usec, started_usec;
  agent_http_fetch_done_t fetch_done; /* a fetch's: its callback and its data */
  void *fetch_userdata;
  struct agent_http_url url;
  enum http_phase phase;
  struct http_resolve *resolve;
  struct sockaddr_storage addrs[HTTP_ADDRESSES_MAX];
  socklen_t addr_lens[HTTP_ADDRESSES_MAX];
  size_t n_addrs, next_addr;
  int fd;
  sd_event_source *io;
  sd_event_source *timeout;
  gnutls_session_t tls;
  char *request;
  size_t request_len, request_sent;
  struct agent_http_response response;
};

static const char *run_doing(const struct http_run *run) {
  switch (run->phase) {
  case HTTP_RESOLVING:
    return "resolving the host name";
  case HTTP_CONNECTING:
    return "connecting";
  case HTTP_HANDSHAKE:
    return "in the TLS handshake";
  case HTTP_SENDING:
    return "sending the request";
  default:
    return run->response.received > 0 ? "receiving the response" : "waiting for the response";
  }
}

static void http_resolve_free(struct http_resolve *res) {
  if (!res)
    return;
  if (res->request.ar_result)
    freeaddrinfo(res->request.ar_result);
  free(res->host);
  free(res);
}

static void http_resolve_unlink(struct agent_http *h, struct http_resolve *res) {
  for (struct http_resolve **p = &h->resolving; *p; p = &(*p)->next)
    if (*p == res) {
      *p = res->next;
      return;
    }
}

/* The run no longer wants its lookup: it is left to finish, and freed when
 * it comes back. Not gai_cancel(): glibc 2.36 then never frees the
 * notification's bookkeeping of the request (104 bytes a time, seen by
 * memcheck). The resolver's own timeouts bound how long it takes, and
 * HTTP_RESOLVE_MAX how many wait at once. */
static void http_resolve_abandon(struct http_resolve *res) {
  res->run = NULL;
}

static void http_run_free(struct http_run *run) {
  if (!run)
    return;
  if (run->resolve)
    http_resolve_abandon(run->resolve);
  run->io = sd_event_source_disable_unref(run->io);
  run->timeout = sd_event_source_disable_unref(run->timeout);
  if (run->tls) {
    /* A courtesy close_notify, without waiting for anything. */
    if (run->phase == HTTP_RECEIVING)
      (void)gnutls_bye(run->tls, GNUTLS_SHUT_WR);
    gnutls_deinit(run->tls);
  }
  if (run->fd >= 0)
    close(run->fd);
  agent_http_url_done(&run->url);
  agent_http_response_done(&run->response);
  free(run->request);
  free(run);
}

static void http_finish(struct http_run *run, enum mst_result result, const char *text) {
  struct agent_component *c = run->c;

  if (!c) {
    /* A fetch that failed: the status is 0, the text says why. */
    run->fetch_done(run->fetch_userdata, 0, NULL, 0, text);
    http_run_free(run);
    return;
  }
  c->run = NULL;
  http_run_free(run);
  agent_probe_done(c, result, text, NULL);
}

_printf_(2, 3) static void http_fail(struct http_run *run, const char *fmt, ...) {
  char msg[AGENT_OUTPUT_MAX];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  http_finish(run, MST_RESULT_CRITICAL, msg);
}

/* The response is complete (or enough of it was seen): judge it. */
static void http_judge(struct http_run *run) {
  const struct agent_http_response *p = &run->response;
  uint64_t ms = (mst_now_monotonic_usec() - run->started_usec) / USEC_PER_MSEC;
  char msg[AGENT_OUTPUT_MAX];

  if (!run->c) {
    /* A fetch: what the server said is the caller's to judge. */
    run->fetch_done(run->fetch_userdata, p->status, p->kept ? p->kept : "", p->kept_len, NULL);
    http_run_free(run);
    return;
  }
  const struct mst_component *conf = run->c->conf;

  if (p->status != conf->expect_status) {
    http_fail(run, "HTTP %u (expected %u)", p->status, conf->expect_status);
    return;
  }
  if (p->expect && !p->body_found) {
    http_fail(run, "HTTP %u but body does not contain '%s'%s", p->status, conf->expect_body,
              p->body_full ? " (in its first 64 KiB)" : "");
    return;
  }
  snprintf(msg, sizeof(msg), "HTTP %u in %llu ms", p->status, (unsigned long long)ms);
  http_finish(run, MST_RESULT_OK, msg);
}

/* --- transport: plain or TLS ------------------------------------------------------ */

static int http_watch(struct http_run *run, uint32_t events) {
  int r = sd_event_source_set_io_events(run->io, events);
  if (r >= 0)
    r = sd_event_source_set_enabled(run->io, SD_EVENT_ON);
  return r;
}

/* Waits for what GnuTLS is blocked on. */
static int http_watch_tls(struct http_run *run) {
  return http_watch(run, gnutls_record_get_direction(run->tls) ? EPOLLOUT : EPOLLIN);
}

static void http_fail_tls(struct http_run *run, const char *doing, int error) {
  if (error == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
    unsigned status = gnutls_session_get_verify_cert_status(run->tls);
    gnutls_datum_t out = {};

    if (gnutls_certificate_verification_status_print(status, gnutls_certificate_type_get(run->tls),
                                                     &out, 0) == 0) {
      http_fail(run, "TLS: the certificate of %s is not valid: %s", run->url.host,
                (const char *)out.data);
      gnutls_free(out.data);
      return;
    }
  }
  http_fail(run, "TLS %s with %s: %s", doing, run->url.host_header, gnutls_strerror(error));
}

static void http_receive(struct http_run *run) {
  char buf[HTTP_READ_CHUNK];
  size_t budget = HTTP_READ_PER_EVENT;

  while (budget > 0) {
    ssize_t n;

    if (run->tls) {
      n = gnutls_record_recv(run->tls, buf, sizeof(buf));
      if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
        if (http_watch_tls(run) < 0)
          http_fail(run, "cannot watch the connection to %s", run->url.host_header);
        return;
      }
      /* A server that closes without close_notify has still answered: the
       * response framing says whether it is all there. */
      if (n == GNUTLS_E_PREMATURE_TERMINATION)
        n = 0;
      if (n < 0) {
        http_fail_tls(run, "receive", (int)n);
        return;
      }
    } else {
      n = recv(run->fd, buf, sizeof(buf), 0);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        if (errno == EAGAIN)
          return;
        http_fail(run, "receiving from %s: %s", run->url.host_header, strerror(errno));
        return;
      }
    }

    int r = n == 0 ? agent_http_response_eof(&run->response)
                   : agent_http_response_feed(&run->response, buf, (size_t)n);
    if (r == -ENOMEM) {
      http_finish(run, MST_RESULT_UNKNOWN, "out of memory reading the response");
      return;
    }
    if (r < 0) {
      http_fail(run, "bad response from %s: %s", run->url.host_header, run->response.error);
      return;
    }
    if (r > 0) {
      http_judge(run);
      return;
    }
    budget -= MST_MIN(budget, (size_t)n);
  }
}

static void http_send(struct http_run *run) {
  while (run->request_sent < run->request_len) {
    const char *data = run->request + run->request_sent;
    size_t left = run->request_len - run->request_sent;
    ssize_t n;

    if (run->tls) {
      n = gnutls_record_send(run->tls, data, left);
      if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
        if (http_watch_tls(run) < 0)
          http_fail(run, "cannot watch the connection to %s", run->url.host_header);
        return;
      }
      if (n < 0) {
        http_fail_tls(run, "send", (int)n);
        return;
      }
    } else {
      n = send(run->fd, data, left, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        if (errno == EAGAIN) {
          if (http_watch(run, EPOLLOUT) < 0)
            http_fail(run, "cannot watch the connection to %s", run->url.host_header);
          return;
        }
        http_fail(run, "sending to %s: %s", run->url.host_header, strerror(errno));
        return;
      }
    }
    run->request_sent += (size_t)n;
  }
  run->phase = HTTP_RECEIVING;
  if (http_watch(run, EPOLLIN) < 0)
    http_fail(run, "cannot watch the connection to %s", run->url.host_header);
}

static void http_handshake(struct http_run *run) {
  int r = gnutls_handshake(run->tls);

  if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
    if (http_watch_tls(run) < 0)
      http_fail(run, "cannot watch the connection to %s", run->url.host_header);
    return;
  }
  if (r < 0) {
    http_fail_tls(run, "handshake", r);
    return;
  }
  run->phase = HTTP_SENDING;
  http_send(run);
}

static int http_tls_start(struct http_run *run) {
  struct agent_http *h = run->http;
  int r;

  if (!h->tls_creds) {
    /* The profile had no https check when the agent started; cannot happen
     * today, but costs nothing to handle. */
    r = gnutls_certificate_allocate_credentials(&h->tls_creds);
    if (r < 0)
      return r;
    (void)gnutls_certificate_set_x509_system_trust(h->tls_creds);
  }
  r = gnutls_init(&run->tls, GNUTLS_CLIENT | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
  if (r < 0) {
    run->tls = NULL;
    return r;
  }
  r = gnutls_set_default_priority(run->tls);
  if (r >= 0)
    r = gnutls_credentials_set(run->tls, GNUTLS_CRD_CERTIFICATE, h->tls_creds);
  /* SNI for names only: RFC 6066 forbids addresses there. */
  if (r >= 0 && !run->url.numeric_host)
    r = gnutls_server_name_set(run->tls, GNUTLS_NAME_DNS, run->url.host, strlen(run->url.host));
  if (r < 0)
    return r;
  gnutls_session_set_verify_cert(run->tls, run->url.host, 0);
  gnutls_transport_set_int(run->tls, run->fd);
  return 0;
}

static void http_connected(struct http_run *run) {
  int r;

  if (run->url.tls) {
    r = http_tls_start(run);
    if (r < 0) {
      http_fail(run, "TLS setup for %s: %s", run->url.host_header, gnutls_strerror(r));
      return;
    }
    run->phase = HTTP_HANDSHAKE;
    http_handshake(run);
    return;
  }
  run->phase = HTTP_SENDING;
  http_send(run);
}

static int http_on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata);

/* Connects to the next address; fails the run when none is left. */
static void http_connect_next(struct http_run *run, int last_error) {
  while (run->next_addr < run->n_addrs) {
    size_t i = run->next_addr++;
    bool connected;
    int r;

    run->io = sd_event_source_disable_unref(run->io);
    if (run->fd >= 0) {
      close(run->fd);
      run->fd = -1;
    }
    r = agent_connect_start((struct sockaddr *)&run->addrs[i], run->addr_lens[i], &connected);
    if (r < 0) {
      if (r == -EMFILE || r == -ENFILE || r == -ENOMEM || r == -ENOBUFS) {
        /* The agent's trouble, not the server's. */
        char msg[128];
        snprintf(msg, sizeof(msg), "cannot open a socket: %s", strerror(-r));
        http_finish(run, MST_RESULT_UNKNOWN, msg);
        return;
      }
      last_error = r;
      continue;
    }
    run->fd = r;
    r = sd_event_add_io(run->http->agent->event, &run->io, run->fd, EPOLLOUT, http_on_io, run);
    if (r < 0) {
      http_finish(run, MST_RESULT_UNKNOWN, "cannot watch a socket");
      return;
    }
    (void)sd_event_source_set_description(run->io, "http-connection");
    run->phase = HTTP_CONNECTING;
    if (connected)
      http_connected(run);
    return;
  }
  http_fail(run, "connect to %s port %u: %s", run->url.host, (unsigned)run->url.port,
            strerror(-last_error));
}

static int http_on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
  struct http_run *run = userdata;
  int r;

  switch (run->phase) {
  case HTTP_CONNECTING:
    r = agent_connect_result(fd);
    if (r < 0)
      http_connect_next(run, r);
    else
      http_connected(run);
    break;
  case HTTP_HANDSHAKE:
    http_handshake(run);
    break;
  case HTTP_SENDING:
    http_send(run);
    break;
  case HTTP_RECEIVING:
    http_receive(run);
    break;
  default:
    break;
  }
  return 0;
}

static int http_on_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
  struct http_run *run = userdata;
  char duration[32];

  http_fail(run, "timed out after %s %s (%s)",
            mst_duration_format(run->timeout_usec, duration, sizeof(duration)), run_doing(run),
            run->url.host_header);
  return 0;
}

/* --- names ------------------------------------------------------------------------ */

static void http_resolved(struct agent_http *h, struct http_resolve *res) {
  struct http_run *run = res->run;
  int rc = gai_error(&res->request);

  http_resolve_unlink(h, res);
  if (!run) {
    http_resolve_free(res);
    return;
  }
  run->resolve = NULL;
  if (rc != 0) {
    char msg[512];

    snprintf(msg, sizeof(msg), "cannot resolve %s: %s", res->host,
             rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
    http_resolve_free(res);
    http_fail(run, "%s", msg);
    return;
  }
  for (struct addrinfo *ai = res->request.ar_result; ai && run->n_addrs < HTTP_ADDRESSES_MAX;
       ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof(run->addrs[0]))
      continue;
    memcpy(&run->addrs[run->n_addrs], ai->ai_addr, ai->ai_addrlen);
    run->addr_lens[run->n_addrs++] = ai->ai_addrlen;
  }
  if (run->n_addrs == 0) {
    http_fail(run, "cannot resolve %s: no address to connect to", res->host);
    http_resolve_free(res);
    return;
  }
  http_resolve_free(res);
  http_connect_next(run, -EADDRNOTAVAIL);
}

/* A completion signal: follows its pointer only to a lookup in flight. */
static void http_on_completion(struct agent_http *h, const struct signalfd_siginfo *si) {
  struct http_resolve *res = (struct http_resolve *)(uintptr_t)si->ssi_ptr;

  if (si->ssi_code != SI_ASYNCNL || si->ssi_pid != (uint32_t)getpid()) {
    log_debug("http checks: a signal %u not from a name lookup (code %d, pid %u), ignoring",
              si->ssi_signo, si->ssi_code, si->ssi_pid);
    return;
  }
  for (struct http_resolve *i = h->resolving; i; i = i->next)
    if (i == res) {
      http_resolved(h, res);
      return;
    }
  log_debug("http checks: a name lookup completion for no lookup in flight, ignoring");
}

static int http_on_resolved(sd_event_source *source, const struct signalfd_siginfo *si,
                            void *userdata) {
  http_on_completion(userdata, si);
  return 0;
}

static int http_resolver_setup(struct agent_http *h) {
  int r;

  if (h->resolved_signal)
    return 0;
  r = sd_event_add_signal(h->agent->event, &h->resolved_signal, AGENT_RESOLVED_SIGNAL,
                          http_on_resolved, h);
  if (r < 0)
    return r;
  (void)sd_event_source_set_description(h->resolved_signal, "http-resolved");
  return 0;
}

static int http_resolve_start(struct http_run *run) {
  struct agent_http *h = run->http;
  struct http_resolve *res;
  int r, rc;

  r = http_resolver_setup(h);
  if (r < 0)
    return r;
  size_t n = 0;
  for (res = h->resolving; res; res = res->next)
    n++;
  if (n >= HTTP_RESOLVE_MAX)
    return -EBUSY;
  res = calloc(1, sizeof(*res));
  if (!res)
    return -ENOMEM;
  res->host = strdup(run->url.host);
  if (!res->host) {
    free(res);
    return -ENOMEM;
  }
  snprintf(res->port, sizeof(res->port), "%u", (unsigned)run->url.port);
  res->hints = (struct addrinfo){
      /* No AI_ADDRCONFIG: it ignores loopback, so on a host whose only
       * IPv4 address is 127.0.0.1 a name for it would not resolve. An
       * address of a family the host lacks fails to connect, and the next
       * one is tried. */
      .ai_flags = AI_NUMERICSERV,
      .ai_family = AF_UNSPEC,
      .ai_socktype = SOCK_STREAM,
  };
  res->request =
      (struct gaicb){.ar_name = res->host, .ar_service = res->port, .ar_request = &res->hints};
  res->notify = (struct sigevent){
      .sigev_notify = SIGEV_SIGNAL,
      .sigev_signo = AGENT_RESOLVED_SIGNAL,
      .sigev_value.sival_ptr = res,
  };
  struct gaicb *list[] = {&res->request};
  rc = getaddrinfo_a(GAI_NOWAIT, list, 1, &res->notify);
  if (rc != 0) {
    r = rc == EAI_MEMORY ? -ENOMEM : rc == EAI_SYSTEM ? -errno : -EAGAIN;
    http_resolve_free(res);
    return r;
  }
  res->run = run;
  res->next = h->resolving;
  h->resolving = res;
  run->resolve = res;
  run->phase = HTTP_RESOLVING;
  return 0;
}

/* Waits (bounded) for the lookups still running, so that what they hold is
 * freed. */
static void http_resolver_drain(struct agent_http *h) {
  uint64_t deadline = mst_now_monotonic_usec() + HTTP_RESOLVE_DRAIN_MS * USEC_PER_MSEC;

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, AGENT_RESOLVED_SIGNAL);
  while (h->resolving) {
    uint64_t now = mst_now_monotonic_usec(), left;
    siginfo_t info;

    if (now >= deadline)
      break;
    left = deadline - now;
    /* The signal is blocked, so it waits here for the taking. */
    if (sigtimedwait(&set, &info,
                     &(struct timespec){.tv_sec = (time_t)(left / USEC_PER_SEC),
                                        .tv_nsec = (long)(left % USEC_PER_SEC) * 1000}) < 0)
      continue;
    struct signalfd_siginfo si = {
        .ssi_signo = (uint32_t)info.si_signo,
        .ssi_code = info.si_code,
        .ssi_pid = (uint32_t)info.si_pid,
        .ssi_ptr = (uint64_t)(uintptr_t)info.si_value.sival_ptr,
    };
    http_on_completion(h, &si);
  }
}

/* --- the check ---------------------------------------------------------------------- */

static bool profile_has_https(const struct mst_profile *p) {
  for (size_t i = 0; i < p->n_components; i++)
    if (p->components[i].check == MST_CHECK_HTTP && p->components[i].url &&
        strncmp(p->components[i].url, "https://", 8) == 0)
      return true;
  return false;
}

int agent_http_new(struct agent *a, struct agent_http **ret) {
  struct agent_http *h;
  int r;

  h = calloc(1, sizeof(*h));
  if (!h)
    return -ENOMEM;
  h->agent = a;

  if (profile_has_https(a->profile)) {
    r = gnutls_certificate_allocate_credentials(&h->tls_creds);
    if (r < 0) {
      log_error("https checks: cannot allocate TLS credentials: %s", gnutls_strerror(r));
      free(h);
      return -ENOMEM;
    }
    r = gnutls_certificate_set_x509_system_trust(h->tls_creds);
    if (r < 0)
      log_warning("https checks: cannot load the system's trusted CAs: %s; certificates will "
                  "not verify, ignoring",
                  gnutls_strerror(r));
    else
      log_debug("https checks: %d trusted CAs loaded", r);
  }
  *ret = h;
  return 0;
}

void agent_http_free(struct agent_http *h) {
  if (!h)
    return;
  /* Runs were cancelled by agent_probes_stop(). */
  if (h->resolving)
    http_resolver_drain(h);
  h->resolved_signal = sd_event_source_disable_unref(h->resolved_signal);
  if (h->resolving)
    /* glibc still holds the requests (and their signals stay blocked, to
     * no effect): they stay, as the process is ending anyway. */
    log_notice("http checks: %s still being resolved at exit, leaving it, ignoring",
               h->resolving->host);
  if (h->tls_creds)
    gnutls_certificate_free_credentials(h->tls_creds);
  free(h);
}

/* Builds the request text. */
static int http_request_build(struct http_run *run) {
  const struct agent_http_url *u = &run->url;
  int n;

  n = asprintf(&run->request,
               "GET %s HTTP/1.1\r\n"
               "Host: %s\r\n"
               "User-Agent: muster-agentd/" MUSTER_VERSION "\r\n"
               "Accept: */*\r\n"
               "%s%s%s"
               "Connection: close\r\n"
               "\r\n",
               u->target, u->host_header, u->basic_auth ? "Authorization: Basic " : "",
               u->basic_auth ? u->basic_auth : "", u->basic_auth ? "\r\n" : "");
  if (n < 0) {
    run->request = NULL;
    return -ENOMEM;
  }
  run->request_len = (size_t)n;
  return 0;
}

/* Starts run (its owner already set) on url: parses it, then connects or
 * resolves, under one timer of run->timeout_usec. Returns 0 once the run
 * is under way or has finished (a bad URL or too many lookups end it
 * through http_finish()), or -errno with nothing started: the caller frees
 * the run. */
static int http_run_start(struct http_run *run, const char *url) {
  char err[512];
  int r;

  run->started_usec = mst_now_monotonic_usec();
  /* config.c refused bad URLs at start: this is a safety net. */
  r = agent_http_url_parse(url, &run->url, err, sizeof(err));
  if (r == -ENOMEM)
    return r;
  if (r < 0) {
    http_finish(run, MST_RESULT_UNKNOWN, err);
    return 0;
  }
  r = http_request_build(run);
  if (r < 0)
    return r;
  r = sd_event_add_time_relative(run->http->agent->event, &run->timeout, CLOCK_MONOTONIC,
                                 run->timeout_usec, USEC_PER_MSEC, http_on_timeout, run);
  if (r < 0)
    return r;
  (void)sd_event_source_set_description(run->timeout, "http-timeout");

  if (agent_http_url_address(&run->url, &run->addrs[0], &run->addr_lens[0]) == 0) {
    run->n_addrs = 1;
    http_connect_next(run, -EADDRNOTAVAIL);
    return 0;
  }
  r = http_resolve_start(run);
  if (r == -EBUSY) {
    http_fail(run, "not resolving %s: %d name lookups are still running", run->url.host,
              HTTP_RESOLVE_MAX);
    return 0;
  }
  return r;
}

int agent_http_start(struct agent_component *c) {
  struct agent_http *h = c->agent->http;
  const struct mst_component *conf = c->conf;
  struct http_run *run;
  int r;

  if (!h || !conf->url)
    return -EINVAL;
  run = calloc(1, sizeof(*run));
  if (!run)
    return -ENOMEM;
  run->c = c;
  run->http = h;
  run->fd = -1;
  run->timeout_usec = conf->timeout_usec;
  agent_http_response_init(&run->response, conf->expect_body);
  c->run = run;
  r = http_run_start(run, conf->url);
  if (r < 0) {
    c->run = NULL;
    http_run_free(run);
  }
  return r;
}

int agent_http_fetch(struct agent_http *h, const char *url, uint64_t timeout_usec,
                     agent_http_fetch_done_t done, void *userdata, struct http_run **ret) {
  struct http_run *run;
  int r;

  run = calloc(1, sizeof(*run));
  if (!run)
    return -ENOMEM;
  run->http = h;
  run->fd = -1;
  run->timeout_usec = timeout_usec;
  run->fetch_done = done;
  run->fetch_userdata = userdata;
  agent_http_response_init(&run->response, NULL);
  r = agent_http_response_keep_body(&run->response);
  if (r < 0) {
    http_run_free(run);
    return r;
  }
  /* The caller holds the run before it can end, even at once. */
  *ret = run;
  r = http_run_start(run, url);
  if (r < 0) {
    *ret = NULL;
    http_run_free(run);
  }
  return r;
}

void agent_http_fetch_cancel(struct http_run *run) {
  http_run_free(run);
}

void agent_http_cancel(struct agent_component *c) {
  http_run_free(c->run);
  c->run = NULL;
}
