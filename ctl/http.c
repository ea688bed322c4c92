/* The libcurl side of musterctl (see http.h): an easy handle reused for
 * every request (redirects followed up to 5 hops, http and https only,
 * proxies as the environment says), a write callback with a hard cap, a
 * header callback that picks out X-Muster-Index, the bearer token and the
 * CA file when given, and curl's error codes turned into -errno at this
 * boundary, with the text kept for the user. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "http.h"
#include "mst/dynbuf.h"
#include "mst/macro.h"

/* At most this many aggregators in --server's list. */
#define CTL_HTTP_MAX_SERVERS 16
/* How long 503s (an election) are asked again when there are several. */
#define CTL_HTTP_BUSY_RETRY_MS 15000u

struct ctl_http {
  CURL *curl;
  char *base; /* the aggregator asked now: one of servers[] */
  bool https;
  char *servers[CTL_HTTP_MAX_SERVERS]; /* --server's list, in its order */
  size_t n_servers, current;
  volatile sig_atomic_t *interrupted;
  struct curl_slist *headers; /* Authorization, when a token was set */
  char *cacert;
};

/* Splits "URL[,URL...]" into servers[]: each gets http:// when it names no
 * scheme (main's server_url() gave the first one its scheme already) and
 * loses its trailing '/'. Returns 0, or -ENOMEM. */
static int add_servers(struct ctl_http *h, const char *list) {
  const char *p = list;
  do {
    size_t n = strcspn(p, ",");
    if (n > 0 && h->n_servers < CTL_HTTP_MAX_SERVERS) {
      char *u;
      bool scheme = memmem(p, n, "://", 3) != NULL;
      if (asprintf(&u, "%s%.*s", scheme ? "" : "http://", (int)n, p) < 0)
        return -ENOMEM;
      size_t len = strlen(u);
      while (len > 0 && u[len - 1] == '/')
        u[--len] = '\0';
      h->servers[h->n_servers++] = u;
    }
    p += n;
  } while (*p++ == ',');
  if (h->n_servers == 0) /* an empty list: keep it, for curl's own error */
    return (h->servers[h->n_servers++] = strdup(list)) ? 0 : -ENOMEM;
  return 0;
}

struct ctl_http *ctl_http_new(const char *base_url, volatile sig_atomic_t *interrupted) {
  struct ctl_http *h = calloc(1, sizeof(*h));
  if (!h)
    return NULL;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    goto fail;
  h->curl = curl_easy_init();
  if (!h->curl || add_servers(h, base_url) < 0)
    goto fail;
  h->base = h->servers[0];
  h->interrupted = interrupted;
  h->https = strncasecmp(h->base, "https://", 8) == 0;
  return h;
fail:
  ctl_http_free(h);
  return NULL;
}

void ctl_http_free(struct ctl_http *h) {
  if (!h)
    return;
  if (h->curl) {
    curl_easy_cleanup(h->curl);
    curl_global_cleanup();
  }
  if (h->headers) {
    /* the token is a secret: do not leave it in freed memory */
    for (struct curl_slist *l = h->headers; l; l = l->next)
      memset(l->data, 0, strlen(l->data));
    curl_slist_free_all(h->headers);
  }
  free(h->cacert);
  for (size_t i = 0; i < h->n_servers; i++)
    free(h->servers[i]);
  free(h);
}

int ctl_http_set_token(struct ctl_http *h, const char *token) {
  _cleanup_free_ char *line = NULL;
  if (asprintf(&line, "Authorization: Bearer %s", token) < 0) {
    line = NULL;
    return -ENOMEM;
  }
  struct curl_slist *l = curl_slist_append(h->headers, line);
  memset(line, 0, strlen(line));
  if (!l)
    return -ENOMEM;
  h->headers = l;
  return 0;
}

int ctl_http_set_cacert(struct ctl_http *h, const char *path) {
  free(h->cacert);
  h->cacert = strdup(path);
  return h->cacert ? 0 : -ENOMEM;
}

const char *ctl_http_server(const struct ctl_http *h) {
  return h->base;
}

bool ctl_http_has_token(const struct ctl_http *h) {
  return h->headers != NULL;
}

char *ctl_http_escape(struct ctl_http *h, const char *s) {
  char *e = curl_easy_escape(h->curl, s, 0);
  if (!e)
    return NULL;
  /* curl's string must go back through curl_free(); hand out a malloc'd copy */
  char *copy = strdup(e);
  curl_free(e);
  return copy;
}

void ctl_response_done(struct ctl_response *r) {
  free(r->body);
  r->body = NULL;
  r->size = 0;
}

struct transfer {
  struct ctl_response *resp;
  struct mst_dynbuf body; /* capped at CTL_HTTP_MAX_BODY */
  volatile sig_atomic_t *interrupted;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata) {
  struct transfer *t = userdata;
  size_t n = size * nmemb;
  /* Failing makes curl fail with CURLE_WRITE_ERROR; t->body.error says why. */
  return mst_dynbuf_add(&t->body, data, n) < 0 ? 0 : n;
}

static size_t on_header(char *data, size_t size, size_t nitems, void *userdata) {
  struct transfer *t = userdata;
  size_t n = size * nitems;
  static const char name[] = "x-muster-index:";

  /* Each response of a redirect chain starts with a status line: forget the
   * index a follower's 307 may have carried. */
  if (n >= 5 && strncmp(data, "HTTP/", 5) == 0)
    t->resp->has_index = false;
  if (n > sizeof(name) - 1 && strncasecmp(data, name, sizeof(name) - 1) == 0) {
    char buf[32];
    size_t len = MST_MIN(n - (sizeof(name) - 1), sizeof(buf) - 1);
    memcpy(buf, data + sizeof(name) - 1, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (errno == 0 && end != buf) {
      t->resp->index = v;
      t->resp->has_index = true;
    }
  }
  return n;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
  struct transfer *t = userdata;
  return t->interrupted && *t->interrupted ? 1 : 0;
}

int ctl_http_get(struct ctl_http *h, const char *path, long timeout_sec, struct ctl_response *ret) {
  return ctl_http_request(h, NULL, path, NULL, NULL, timeout_sec, ret);
}

/* One request to h->base. */
static int request_once(struct ctl_http *h, const char *method, const char *path, const char *body,
                        const char *operator, long timeout_sec, struct ctl_response *ret) {
  struct curl_slist *write_headers = NULL;
  struct transfer t = {
      .resp = ret, .body = MST_DYNBUF_INIT(CTL_HTTP_MAX_BODY), .interrupted = h->interrupted};
  char errbuf[CURL_ERROR_SIZE] = "";
  _cleanup_free_ char *url = NULL;
  CURLcode rc;

  memset(ret, 0, sizeof(*ret));
  if (asprintf(&url, "%s%s", h->base, path) < 0) {
    url = NULL;
    snprintf(ret->error, sizeof(ret->error), "out of memory");
    return -ENOMEM;
  }

  curl_easy_reset(h->curl);
  curl_easy_setopt(h->curl, CURLOPT_URL, url);
  curl_easy_setopt(h->curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(h->curl, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(h->curl, CURLOPT_PROTOCOLS_STR, "http,https");
  /* Once on TLS, never follow a redirect out of it (the token goes along). */
  curl_easy_setopt(h->curl, CURLOPT_REDIR_PROTOCOLS_STR, h->https ? "https" : "http,https");
  curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, errbuf);
  if (method) {
    /* A write: its own headers, the client's first. */
    _cleanup_free_ char *who = NULL;
    for (const struct curl_slist *l = h->headers; l; l = l->next)
      write_headers = curl_slist_append(write_headers, l->data);
    write_headers = curl_slist_append(write_headers, "Content-Type: application/json");
    if (operator&& asprintf(&who, "X-Muster-Operator: %s", operator) >= 0)
      write_headers = curl_slist_append(write_headers, who);
    curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, method);
    if (body)
      curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, write_headers);
    curl_easy_setopt(h->curl, CURLOPT_UNRESTRICTED_AUTH, 1L);
  } else if (h->headers) {
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, h->headers);
    /* A follower redirects to the leader, another host:port with the same
     * token; curl would drop the header there otherwise. */
    curl_easy_setopt(h->curl, CURLOPT_UNRESTRICTED_AUTH, 1L);
  }
  if (h->cacert)
    curl_easy_setopt(h->curl, CURLOPT_CAINFO, h->cacert);
  curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT, 5L);
  curl_easy_setopt(h->curl, CURLOPT_TIMEOUT, timeout_sec);
  curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h->curl, CURLOPT_USERAGENT, "musterctl/" MUSTER_VERSION);
  curl_easy_setopt(h->curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)CTL_HTTP_MAX_BODY);
  curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(h->curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h->curl, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(h->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(h->curl, CURLOPT_XFERINFODATA, &t);
  curl_easy_setopt(h->curl, CURLOPT_NOPROGRESS, 0L);

  rc = curl_easy_perform(h->curl);
  curl_slist_free_all(write_headers);
  if (rc == CURLE_OK) {
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &ret->status);
    if (mst_dynbuf_take(&t.body, &ret->body, &ret->size) < 0) {
      snprintf(ret->error, sizeof(ret->error), "out of memory");
      return -ENOMEM;
    }
    return 0;
  }

  bool too_big = t.body.error == -EMSGSIZE;
  mst_dynbuf_reset(&t.body);
  ctl_response_done(ret);
  ret->has_index = false;
  switch (rc) {
  case CURLE_COULDNT_CONNECT:
    snprintf(ret->error, sizeof(ret->error), "cannot reach the muster server at %s: %s", h->base,
             curl_easy_strerror(rc));
    return -ECONNREFUSED;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    snprintf(ret->error, sizeof(ret->error), "cannot reach the muster server at %s: unknown host",
             h->base);
    return -EHOSTUNREACH;
  case CURLE_OPERATION_TIMEDOUT:
    snprintf(ret->error, sizeof(ret->error), "%s did not answer in time", h->base);
    return -ETIMEDOUT;
  case CURLE_ABORTED_BY_CALLBACK:
    snprintf(ret->error, sizeof(ret->error), "interrupted");
    return -EINTR;
  case CURLE_FILESIZE_EXCEEDED:
  case CURLE_WRITE_ERROR:
    if (too_big || rc == CURLE_FILESIZE_EXCEEDED) {
      snprintf(ret->error, sizeof(ret->error), "answer from %s is larger than %u MiB, refused",
               h->base, CTL_HTTP_MAX_BODY / (1024u * 1024u));
      return -EFBIG;
    }
    snprintf(ret->error, sizeof(ret->error), "out of memory reading the answer");
    return -ENOMEM;
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CACERT_BADFILE:
    snprintf(ret->error, sizeof(ret->error), "TLS with %s failed: %s%s", h->base,
             errbuf[0] ? errbuf : curl_easy_strerror(rc),
             h->cacert ? "" : " (give the cluster's CA with --cacert PATH or $MUSTER_CACERT)");
    return -EACCES;
  case CURLE_TOO_MANY_REDIRECTS:
    snprintf(ret->error, sizeof(ret->error), "%s: more than 5 redirects", h->base);
    return -ELOOP;
  case CURLE_URL_MALFORMAT:
  case CURLE_UNSUPPORTED_PROTOCOL:
    snprintf(ret->error, sizeof(ret->error), "bad server URL %s: %s", h->base,
             curl_easy_strerror(rc));
    return -EINVAL;
  case CURLE_GOT_NOTHING:
  case CURLE_RECV_ERROR:
  case CURLE_SEND_ERROR:
    /* Connected, then the connection was closed or reset before an answer:
     * the aggregator stopped (a failover), or it speaks TLS. */
    snprintf(ret->error, sizeof(ret->error),
             "%s closed the connection without answering (%s): the aggregator stopped or "
             "restarted%s",
             h->base, errbuf[0] ? errbuf : curl_easy_strerror(rc),
             h->https ? "" : ", or it serves HTTPS only (then use https://)");
    return -ECONNRESET;
  default:
    snprintf(ret->error, sizeof(ret->error), "request to %s failed: %s", h->base,
             errbuf[0] ? errbuf : curl_easy_strerror(rc));
    return -EIO;
  }
}

/* Whether the aggregator answered "not now" (503: no leader known during an
 * election, a lease that ran out, not ready yet): another try may do. */
static bool answer_busy(const struct ctl_response *r) {
  return r->status == 503;
}

/* Transport failures another aggregator may not have. */
static bool transport_failed(int r) {
  return r == -ECONNREFUSED || r == -EHOSTUNREACH || r == -ECONNRESET || r == -ETIMEDOUT;
}

static void use_server(struct ctl_http *h, size_t i) {
  h->current = i;
  h->base = h->servers[i];
  h->https = strncasecmp(h->base, "https://", 8) == 0;
}

static void pause_ms(struct ctl_http *h, unsigned ms) {
  for (unsigned i = 0; i < ms / 100 && !(h->interrupted && *h->interrupted); i++) {
    struct timespec ts = {.tv_nsec = 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

/* Asks the aggregators of --server's list in turn, starting with the one
 * that answered last: one that cannot be reached, or closes the connection
 * without answering (killed, or stepping down), hands over to the next, and
 * a 503 (an election under way) is asked again for a while, since a leader
 * is usually elected within seconds. Says on stderr what happened whenever it
 * moves on, so a failover reads as one. */
int ctl_http_request(struct ctl_http *h, const char *method, const char *path, const char *body,
                     const char *operator, long timeout_sec, struct ctl_response *ret) {
  unsigned busy_ms = 0;
  int r;

  for (size_t tried = 0;;) {
    r = request_once(h, method, path, body, operator, timeout_sec, ret);
    if (r == 0 && answer_busy(ret) && h->n_servers > 1 && busy_ms < CTL_HTTP_BUSY_RETRY_MS &&
        !(h->interrupted && *h->interrupted)) {
      if (busy_ms == 0)
        fprintf(stderr,
                "musterctl: %s has no leader to answer for now (503): an election may be under "
                "way; asking the aggregators again\n",
                h->base);
      ctl_response_done(ret);
      use_server(h, (h->current + 1) % h->n_servers);
      pause_ms(h, 500);
      busy_ms += 500;
      continue;
    }
    if (!transport_failed(r) || ++tried >= h->n_servers)
      return r;
    size_t next = (h->current + 1) % h->n_servers;
    fprintf(stderr, "musterctl: %s; trying %s\n", ret->error, h->servers[next]);
    use_server(h, next);
  }
}
