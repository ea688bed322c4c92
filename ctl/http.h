/* musterctl's HTTP client: one libcurl easy handle, GETs against the
 * aggregator's API (docs/api.md) with redirects from followers followed and
 * every response body capped. A CLI does one request at a time, so the easy
 * interface is enough; blocking reads simply take longer. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bodies larger than this are refused (the transfer is aborted). */
#define CTL_HTTP_MAX_BODY (64u * 1024u * 1024u)

struct ctl_http;

struct ctl_response {
  long status;    /* HTTP status of the last response (after redirects) */
  char *body;     /* NUL-terminated; owned by the response */
  size_t size;    /* bytes in body, without the NUL */
  uint64_t index; /* X-Muster-Index, when has_index */
  bool has_index;
  char error[640]; /* why a request failed, for the user (curl's text is up to 256) */
};

/* Creates a client for the server at base_url ("http://host:port" or
 * "https://host:port", a trailing '/' is dropped), or for several
 * aggregators, comma-separated (each without a scheme gets http://): a
 * request that cannot reach one, or whose connection is closed without an
 * answer, goes to the next (ctl_http_request()). interrupted, when not
 * NULL, is polled during transfers: a non-zero value aborts them (SIGINT in
 * `watch`). Returns NULL on OOM. The caller owns the client. Main thread
 * only. */
struct ctl_http *ctl_http_new(const char *base_url, volatile sig_atomic_t *interrupted);

/* Sends "Authorization: Bearer token" with every request from now on, also
 * after a follower's redirect to the leader (whose token is the same); a
 * client whose base URL is https:// then follows redirects to https:// only,
 * so the token never leaves TLS. Returns 0 or -ENOMEM. */
int ctl_http_set_token(struct ctl_http *h, const char *token);
/* Verifies an https:// server against the CA certificates in path (PEM)
 * instead of the system's. Returns 0 or -ENOMEM. */
int ctl_http_set_cacert(struct ctl_http *h, const char *path);
/* The aggregator that answered last (or is asked next): one of --server's
 * comma-separated list, which the client goes round on failures. */
const char *ctl_http_server(const struct ctl_http *h);
/* Whether a token was set (for the message of a 401). */
bool ctl_http_has_token(const struct ctl_http *h);
void ctl_http_free(struct ctl_http *h);

/* GETs base_url + path (path starts with '/', query already escaped), with a
 * total timeout of timeout_sec. Returns 0 when an HTTP answer arrived
 * (whatever its status; see ret->status), -ECONNREFUSED or -EHOSTUNREACH when
 * the server could not be reached, -EACCES when its TLS certificate could
 * not be verified, -ETIMEDOUT, -EFBIG when the body passed the cap, -EINTR
 * when interrupted, -EIO for other failures; ret->error says why. ret is reset first and must be
 * released with ctl_response_done(). */
int ctl_http_get(struct ctl_http *h, const char *path, long timeout_sec, struct ctl_response *ret);

/* Like ctl_http_get() with another method (PUT, DELETE) and, when body is
 * not NULL, a JSON body. The header X-Muster-Operator says who writes
 * (operator: the user's name; NULL: none). A follower's 307 is followed
 * with the same method and body. */
int ctl_http_request(struct ctl_http *h, const char *method, const char *path, const char *body,
                     const char *operator, long timeout_sec, struct ctl_response *ret);

/* Escapes one query value or path segment. The caller frees the result with
 * free(). Returns NULL on OOM. */
char *ctl_http_escape(struct ctl_http *h, const char *s);

void ctl_response_done(struct ctl_response *r);
