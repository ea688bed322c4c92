/* URLs of http checks: "http://" or "https://", an optional "user:password@"
 * (sent as Basic authorization), a host (a name, a numeric IPv4 address or
 * an [IPv6] address), an optional port, and the path with its query. The
 * fragment is dropped, as a browser does. Everything the request will carry
 * is decided here, once, so that http.c only sends it: the host and
 * port to connect to, the Host header and the request target.
 *
 * The parser is strict where a mistake would put bytes on the wire that the
 * operator did not mean: spaces and control characters are refused anywhere
 * in the URL (they would split the request line or inject a header), and so
 * are characters that no host name holds. config.c runs the same parser over
 * every http component, so a bad URL stops the agent at start with
 * "path:line: message" instead of failing at each run. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mst/macro.h"
#include "probe/http_url.h"
#include "util.h"

/* Percent-decodes s[0..n) into a new string. Returns NULL on a bad escape
 * or a decoded NUL (errno EINVAL) or out of memory (ENOMEM). */
static char *percent_decode(const char *s, size_t n) {
  char *out = malloc(n + 1);
  size_t o = 0;

  if (!out) {
    errno = ENOMEM;
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    if (s[i] != '%') {
      out[o++] = s[i];
      continue;
    }
    int hi = i + 1 < n ? agent_hex_digit(s[i + 1]) : -1;
    int lo = i + 2 < n ? agent_hex_digit(s[i + 2]) : -1;
    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
      free(out);
      errno = EINVAL;
      return NULL;
    }
    out[o++] = (char)(hi << 4 | lo);
    i += 2;
  }
  out[o] = '\0';
  return out;
}

static bool host_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_';
}

static const char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64_encode(const char *s) {
  size_t n = strlen(s);
  char *out = malloc(4 * ((n + 2) / 3) + 1);
  size_t o = 0;

  if (!out)
    return NULL;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)(unsigned char)s[i] << 16;
    if (i + 1 < n)
      v |= (uint32_t)(unsigned char)s[i + 1] << 8;
    if (i + 2 < n)
      v |= (uint32_t)(unsigned char)s[i + 2];
    out[o++] = base64_alphabet[(v >> 18) & 0x3f];
    out[o++] = base64_alphabet[(v >> 12) & 0x3f];
    out[o++] = i + 1 < n ? base64_alphabet[(v >> 6) & 0x3f] : '=';
    out[o++] = i + 2 < n ? base64_alphabet[v & 0x3f] : '=';
  }
  out[o] = '\0';
  return out;
}

void agent_http_url_done(struct agent_http_url *u) {
  if (!u)
    return;
  free(u->host);
  free(u->host_header);
  free(u->target);
  free(u->basic_auth);
  *u = (struct agent_http_url){};
}

int agent_http_url_parse(const char *url, struct agent_http_url *ret, char *err, size_t errsize) {
  _cleanup_(agent_http_url_done) struct agent_http_url u = {};
  const char *p, *authority, *authority_end, *host_start, *host_end, *port_start = NULL;
  unsigned long port;

  if (!url || !*url) {
    snprintf(err, errsize, "empty URL");
    return -EINVAL;
  }
  for (const char *c = url; *c; c++)
    if ((unsigned char)*c <= 0x20 || *c == 0x7f) {
      snprintf(err, errsize, "'%s' holds a space or a control character (percent-encode it)", url);
      return -EINVAL;
    }
  if (strncmp(url, "http://", 7) == 0) {
    p = url + 7;
    port = 80;
  } else if (strncmp(url, "https://", 8) == 0) {
    p = url + 8;
    u.tls = true;
    port = 443;
  } else {
    snprintf(err, errsize, "'%s' is not an http:// or https:// URL", url);
    return -EINVAL;
  }

  authority = p;
  authority_end = authority + strcspn(authority, "/?#");

  /* user:password@ (the last '@' of the authority ends it) */
  const char *at = NULL;
  for (const char *c = authority; c < authority_end; c++)
    if (*c == '@')
      at = c;
  if (at) {
    _cleanup_free_ char *userinfo = percent_decode(authority, (size_t)(at - authority));
    if (!userinfo) {
      if (errno == ENOMEM)
        return -ENOMEM;
      snprintf(err, errsize, "'%s' has a bad percent escape in its user:password", url);
      return -EINVAL;
    }
    u.basic_auth = base64_encode(userinfo);
    explicit_bzero(userinfo, strlen(userinfo));
    if (!u.basic_auth)
      return -ENOMEM;
    host_start = at + 1;
  } else {
    host_start = authority;
  }

  if (*host_start == '[') {
    const char *close = memchr(host_start, ']', (size_t)(authority_end - host_start));
    if (!close || close == host_start + 1) {
      snprintf(err, errsize, "'%s' has no valid [IPv6] host", url);
      return -EINVAL;
    }
    for (const char *c = host_start + 1; c < close; c++)
      if (!(agent_hex_digit(*c) >= 0 || *c == ':' || *c == '.')) {
        snprintf(err, errsize, "'%s' has no valid [IPv6] host", url);
        return -EINVAL;
      }
    u.ipv6_literal = true;
    host_end = close + 1;
    if (host_end < authority_end) {
      if (*host_end != ':') {
        snprintf(err, errsize, "'%s': expected ':port' after the [IPv6] host", url);
        return -EINVAL;
      }
      port_start = host_end + 1;
    }
    u.host = strndup(host_start + 1, (size_t)(close - host_start - 1));
  } else {
    const char *colon = memchr(host_start, ':', (size_t)(authority_end - host_start));
    host_end = colon ? colon : authority_end;
    if (host_end == host_start) {
      snprintf(err, errsize, "'%s' has no host", url);
      return -EINVAL;
    }
    for (const char *c = host_start; c < host_end; c++)
      if (!host_name_char(*c)) {
        snprintf(err, errsize, "'%s': the host holds '%c', which no host name has", url, *c);
        return -EINVAL;
      }
    if (colon)
      port_start = colon + 1;
    u.host = strndup(host_start, (size_t)(host_end - host_start));
  }
  if (!u.host)
    return -ENOMEM;
  if (u.ipv6_literal) {
    struct in6_addr a6;
    if (inet_pton(AF_INET6, u.host, &a6) != 1) {
      snprintf(err, errsize, "'%s' has no valid [IPv6] host", url);
      return -EINVAL;
    }
    u.numeric_host = true;
  } else {
    struct in_addr a4;
    u.numeric_host = inet_pton(AF_INET, u.host, &a4) == 1;
  }

  /* An empty port ("host:/") means the default, as in curl. */
  if (port_start && port_start < authority_end) {
    port = 0;
    for (const char *c = port_start; c < authority_end; c++) {
      if (*c < '0' || *c > '9' || port > 65535) {
        snprintf(err, errsize, "'%s' has no valid port (1-65535)", url);
        return -EINVAL;
      }
      port = port * 10 + (unsigned long)(*c - '0');
    }
    if (port == 0 || port > 65535) {
      snprintf(err, errsize, "'%s' has no valid port (1-65535)", url);
      return -EINVAL;
    }
  }
  u.port = (uint16_t)port;

  /* The Host header names the port only when it is not the scheme's own. */
  char port_part[8] = "";
  if (u.port != (u.tls ? 443 : 80))
    snprintf(port_part, sizeof(port_part), ":%u", (unsigned)u.port);
  if (asprintf(&u.host_header, "%s%s%s%s", u.ipv6_literal ? "[" : "", u.host,
               u.ipv6_literal ? "]" : "", port_part) < 0) {
    u.host_header = NULL;
    return -ENOMEM;
  }

  /* Path and query, without the fragment; "/" when there is no path. */
  size_t target_len = strcspn(authority_end, "#");
  if (asprintf(&u.target, "%s%.*s", *authority_end == '/' ? "" : "/", (int)target_len,
               authority_end) < 0) {
    u.target = NULL;
    return -ENOMEM;
  }

  *ret = u;
  u = (struct agent_http_url){};
  return 0;
}

int agent_http_url_address(const struct agent_http_url *u, struct sockaddr_storage *ret,
                           socklen_t *ret_len) {
  struct sockaddr_in *sin = (struct sockaddr_in *)ret;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ret;

  memset(ret, 0, sizeof(*ret));
  if (strcmp(u->host, "localhost") == 0 ||
      (!u->ipv6_literal && inet_pton(AF_INET, u->host, &sin->sin_addr) == 1)) {
    if (strcmp(u->host, "localhost") == 0)
      sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(u->port);
    *ret_len = sizeof(*sin);
    return 0;
  }
  if (u->ipv6_literal && inet_pton(AF_INET6, u->host, &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(u->port);
    *ret_len = sizeof(*sin6);
    return 0;
  }
  return -EADDRNOTAVAIL;
}
