/* http checks: a GET through libcurl's multi interface, driven by the agent's
 * sd-event loop.
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION: one io
 * source per socket, remembered with curl_multi_assign) and when to call it
 * back (CURLMOPT_TIMERFUNCTION: one shared timer source); both end in
 * curl_multi_socket_action(), after which finished transfers are collected.
 * curl is never called from inside its own callbacks.
 *
 * Each check uses a fresh connection (no reuse: a check that rides on an old
 * connection proves little about the server accepting new ones), no proxy
 * whatever the environment says, no redirects, http and https only, and
 * keeps at most HTTP_BODY_MAX bytes of the body: past that the transfer is
 * stopped and the status is judged on what arrived. OK means the expected
 * status and, when expect_body is set, the body containing it; anything else
 * is CRITICAL, with the status or curl's own error text. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/time.h"

#define HTTP_BODY_MAX (64 * 1024)

struct http_socket {
  struct agent_http *http;
  curl_socket_t fd;
  sd_event_source *io;
  struct http_socket *next;
};

struct agent_http {
  struct agent *agent;
  CURLM *multi;
  sd_event_source *timer;
  struct http_socket *sockets;
};

struct http_run {
  struct agent_component *c;
  CURL *easy;
  char *body;
  size_t body_len;
  bool body_full; /* stopped at HTTP_BODY_MAX */
  char error[CURL_ERROR_SIZE];
};

static void http_check_done(struct agent_http *h);

static void http_run_free(struct agent_http *h, struct http_run *run) {
  if (!run)
    return;
  if (run->easy) {
    (void)curl_multi_remove_handle(h->multi, run->easy);
    curl_easy_cleanup(run->easy);
  }
  free(run->body);
  free(run);
}

static void http_socket_free(struct agent_http *h, struct http_socket *s) {
  for (struct http_socket **p = &h->sockets; *p; p = &(*p)->next)
    if (*p == s) {
      *p = s->next;
      break;
    }
  s->io = sd_event_source_disable_unref(s->io);
  free(s);
}

static int http_on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
  struct http_socket *s = userdata;
  struct agent_http *h = s->http;
  int flags = 0, running;

  if (revents & EPOLLIN)
    flags |= CURL_CSELECT_IN;
  if (revents & EPOLLOUT)
    flags |= CURL_CSELECT_OUT;
  if (revents & (EPOLLERR | EPOLLHUP))
    flags |= CURL_CSELECT_ERR;
  /* s may be freed inside this call (CURL_POLL_REMOVE): use only h after. */
  (void)curl_multi_socket_action(h->multi, fd, flags, &running);
  http_check_done(h);
  return 0;
}

static int http_on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  struct agent_http *h = userp;
  struct http_socket *s = socketp;
  uint32_t events = 0;
  int r;

  if (what == CURL_POLL_REMOVE) {
    if (s) {
      (void)curl_multi_assign(h->multi, fd, NULL);
      http_socket_free(h, s);
    }
    return 0;
  }

  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
    events |= EPOLLIN;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
    events |= EPOLLOUT;

  if (s) {
    r = sd_event_source_set_io_events(s->io, events);
    if (r >= 0)
      r = sd_event_source_set_enabled(s->io, SD_EVENT_ON);
  } else {
    s = calloc(1, sizeof(*s));
    if (!s)
      return -1;
    s->http = h;
    s->fd = fd;
    r = sd_event_add_io(h->agent->event, &s->io, fd, events, http_on_io, s);
    if (r < 0) {
      free(s);
      log_warning("http checks: cannot watch a socket: %s", strerror(-r));
      return -1;
    }
    (void)sd_event_source_set_description(s->io, "http-socket");
    s->next = h->sockets;
    h->sockets = s;
    (void)curl_multi_assign(h->multi, fd, s);
  }
  if (r < 0) {
    log_warning("http checks: cannot update a socket watch: %s", strerror(-r));
    return -1;
  }
  return 0;
}

static int http_on_timer(sd_event_source *source, uint64_t usec, void *userdata) {
  struct agent_http *h = userdata;
  int running;

  (void)curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  http_check_done(h);
  return 0;
}

static int http_on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  struct agent_http *h = userp;
  int r;

  if (timeout_ms < 0)
    return sd_event_source_set_enabled(h->timer, SD_EVENT_OFF) < 0 ? -1 : 0;
  /* 0 means "as soon as possible": from the loop, not from here. */
  r = sd_event_source_set_time_relative(h->timer, (uint64_t)timeout_ms * USEC_PER_MSEC);
  if (r >= 0)
    r = sd_event_source_set_enabled(h->timer, SD_EVENT_ONESHOT);
  return r < 0 ? -1 : 0;
}

static size_t http_on_body(char *data, size_t size, size_t nmemb, void *userdata) {
  struct http_run *run = userdata;
  size_t n = size * nmemb;
  size_t room = HTTP_BODY_MAX - run->body_len;

  if (n > room) {
    /* Enough to judge; stop the transfer (curl reports a write error). */
    if (room > 0) {
      memcpy(run->body + run->body_len, data, room);
      run->body_len += room;
    }
    run->body_full = true;
    return 0;
  }
  memcpy(run->body + run->body_len, data, n);
  run->body_len += n;
  return n;
}

static void http_finish(struct agent_http *h, struct http_run *run, CURLcode code) {
  struct agent_component *c = run->c;
  const struct mst_component *conf = c->conf;
  enum mst_result result = MST_RESULT_CRITICAL;
  char msg[AGENT_OUTPUT_MAX];
  long status = 0;

  (void)curl_easy_getinfo(run->easy, CURLINFO_RESPONSE_CODE, &status);
  if (code != CURLE_OK && !(code == CURLE_WRITE_ERROR && run->body_full)) {
    snprintf(msg, sizeof(msg), "%s", run->error[0] ? run->error : curl_easy_strerror(code));
  } else if (status != (long)conf->expect_status) {
    snprintf(msg, sizeof(msg), "HTTP %ld (expected %u)", status, conf->expect_status);
  } else if (conf->expect_body && *conf->expect_body &&
             !memmem(run->body, run->body_len, conf->expect_body, strlen(conf->expect_body))) {
    snprintf(msg, sizeof(msg), "HTTP %ld but body does not contain '%s'%s", status,
             conf->expect_body, run->body_full ? " (in its first 64 KiB)" : "");
  } else {
    uint64_t ms = (mst_now_monotonic_usec() - c->run_started_usec) / USEC_PER_MSEC;
    snprintf(msg, sizeof(msg), "HTTP %ld in %llu ms", status, (unsigned long long)ms);
    result = MST_RESULT_OK;
  }

  c->run = NULL;
  http_run_free(h, run);
  agent_probe_done(c, result, msg, NULL);
}

static void http_check_done(struct agent_http *h) {
  CURLMsg *m;
  int left;

  while ((m = curl_multi_info_read(h->multi, &left))) {
    struct http_run *run = NULL;

    if (m->msg != CURLMSG_DONE)
      continue;
    CURL *easy = m->easy_handle;
    CURLcode code = m->data.result;
    (void)curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&run);
    if (run)
      http_finish(h, run, code);
  }
}

int agent_http_new(struct agent *a, struct agent_http **ret) {
  struct agent_http *h;
  int r;

  h = calloc(1, sizeof(*h));
  if (!h)
    return -ENOMEM;
  h->agent = a;
  h->multi = curl_multi_init();
  if (!h->multi) {
    free(h);
    return -ENOMEM;
  }
  r = sd_event_add_time_relative(a->event, &h->timer, CLOCK_MONOTONIC, 0, USEC_PER_MSEC,
                                 http_on_timer, h);
  if (r < 0) {
    agent_http_free(h);
    return r;
  }
  (void)sd_event_source_set_description(h->timer, "http-timer");
  (void)sd_event_source_set_enabled(h->timer, SD_EVENT_OFF);

  if (curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, http_on_socket) != CURLM_OK ||
      curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h) != CURLM_OK ||
      curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, http_on_curl_timer) != CURLM_OK ||
      curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h) != CURLM_OK) {
    agent_http_free(h);
    return -EIO;
  }
  *ret = h;
  return 0;
}

void agent_http_free(struct agent_http *h) {
  if (!h)
    return;
  /* Runs were cancelled by agent_probes_stop(); curl may still call back
   * about its sockets while cleaning up, so our watches go last. */
  if (h->multi)
    curl_multi_cleanup(h->multi);
  while (h->sockets)
    http_socket_free(h, h->sockets);
  h->timer = sd_event_source_disable_unref(h->timer);
  free(h);
}

int agent_http_start(struct agent_component *c) {
  struct agent_http *h = c->agent->http;
  const struct mst_component *conf = c->conf;
  struct http_run *run;
  CURLMcode mc;
  int ok = 1;

  if (!h || !conf->url)
    return -EINVAL;
  run = calloc(1, sizeof(*run));
  if (!run)
    return -ENOMEM;
  run->c = c;
  run->body = malloc(HTTP_BODY_MAX);
  run->easy = curl_easy_init();
  if (!run->body || !run->easy) {
    http_run_free(h, run);
    return -ENOMEM;
  }

  long timeout_ms = (long)MST_MAX(conf->timeout_usec / USEC_PER_MSEC, (uint64_t)1);
  CURL *e = run->easy;
  ok &= curl_easy_setopt(e, CURLOPT_URL, conf->url) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_NOPROXY, "*") == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_USERAGENT, "muster-agentd/" MUSTER_VERSION) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_on_body) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_WRITEDATA, run) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, run->error) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_PRIVATE, run) == CURLE_OK;
  if (!ok) {
    http_run_free(h, run);
    return -EINVAL;
  }

  mc = curl_multi_add_handle(h->multi, e);
  if (mc != CURLM_OK) {
    log_warning("component %s: curl_multi_add_handle: %s", conf->name, curl_multi_strerror(mc));
    curl_easy_cleanup(run->easy);
    run->easy = NULL;
    http_run_free(h, run);
    return -EIO;
  }
  c->run = run;
  return 0;
}

void agent_http_cancel(struct agent_component *c) {
  http_run_free(c->agent->http, c->run);
  c->run = NULL;
}
