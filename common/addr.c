/* Network addresses (addr.h): the one parser of "host:port" for config keys
 * (listen_stream, listen_http, advertise_*, aggregators, [zookeeper] hosts,
 * tcp checks), musterctl and the bench tools, and the one formatter for
 * addresses shown in logs, peers and redirects. IPv6 goes in brackets, as in
 * URLs (RFC 3986), so the port is always what follows the last "]:" or the
 * only ':'. Parsing uses getaddrinfo() with AI_NUMERICHOST, which never asks
 * a resolver, so it does not block and it knows scope ids. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mst/addr.h"
#include "mst/macro.h"

/* Splits s into its host (brackets removed) and port text. */
static int split_host_port(const char *s, char *host, size_t host_size, const char **ret_port,
                           bool *ret_bracketed, char *err, size_t errsize) {
  const char *port;
  size_t host_len;

  if (!s || !*s) {
    snprintf(err, errsize, "empty address, expected host:port");
    return -EINVAL;
  }
  if (s[0] == '[') {
    const char *close = strchr(s, ']');
    if (!close || close[1] != ':') {
      snprintf(err, errsize, "'%s' is not [address]:port", s);
      return -EINVAL;
    }
    host_len = (size_t)(close - s - 1);
    s++;
    port = close + 2;
    *ret_bracketed = true;
  } else {
    const char *colon = strrchr(s, ':');
    if (!colon) {
      snprintf(err, errsize, "'%s' is not host:port", s);
      return -EINVAL;
    }
    if (memchr(s, ':', (size_t)(colon - s))) {
      snprintf(err, errsize, "'%s': write an IPv6 address in brackets, as [address]:port", s);
      return -EINVAL;
    }
    host_len = (size_t)(colon - s);
    port = colon + 1;
    *ret_bracketed = false;
  }
  if (host_len >= host_size) {
    snprintf(err, errsize, "'%.*s...' has no valid host", 64, s);
    return -EINVAL;
  }
  memcpy(host, s, host_len);
  host[host_len] = '\0';
  *ret_port = port;
  return 0;
}

int mst_addr_parse(const char *s, unsigned flags, struct mst_addr *ret, char *err, size_t errsize) {
  char host[INET6_ADDRSTRLEN + 24];
  const char *port;
  bool bracketed, listen = flags & MST_ADDR_LISTEN;
  int r;

  r = split_host_port(s, host, sizeof(host), &port, &bracketed, err, errsize);
  if (r < 0)
    return r;

  char *end;
  errno = 0;
  unsigned long p = strtoul(port, &end, 10);
  if (*port < '0' || *port > '9' || *end || errno || p > 65535 || (p == 0 && !listen)) {
    snprintf(err, errsize, "'%s' has no valid port (%s-65535)", s, listen ? "0" : "1");
    return -EINVAL;
  }

  if (!bracketed && strcmp(host, "localhost") == 0)
    snprintf(host, sizeof(host), "127.0.0.1");
  else if (!bracketed && (strcmp(host, "*") == 0 || host[0] == '\0')) {
    if (!listen) {
      snprintf(err, errsize, "'%s' has no host", s);
      return -EINVAL;
    }
    snprintf(host, sizeof(host), "0.0.0.0");
  }

  struct addrinfo hints = {
      .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
      .ai_family = bracketed ? AF_INET6 : AF_INET,
      .ai_socktype = SOCK_STREAM,
  };
  struct addrinfo *res = NULL;
  char portbuf[8];
  struct in_addr a4;
  snprintf(portbuf, sizeof(portbuf), "%lu", p);
  /* getaddrinfo() also takes inet_aton()'s forms ("1.2.3", "0x7f.1"). */
  int rc = !bracketed && inet_pton(AF_INET, host, &a4) != 1
               ? EAI_NONAME
               : getaddrinfo(host, portbuf, &hints, &res);
  if (rc != 0 || !res || res->ai_addrlen > sizeof(ret->ss)) {
    if (bracketed)
      snprintf(err, errsize, "'%s': '%s' is not an IPv6 address", s, host);
    else
      snprintf(err, errsize,
               "'%s': the host must be a numeric IPv4 address, [IPv6] address or localhost "
               "(names are not resolved: that could block)",
               s);
    if (res)
      freeaddrinfo(res);
    return -EINVAL;
  }
  memset(ret, 0, sizeof(*ret));
  memcpy(&ret->ss, res->ai_addr, res->ai_addrlen);
  ret->len = res->ai_addrlen;
  freeaddrinfo(res);
  return 0;
}

/* The IPv4 address inside sa: its own, or an IPv4-mapped IPv6 one's. */
static const struct in_addr *ipv4_of(const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET)
    return &((const struct sockaddr_in *)sa)->sin_addr;
  if (sa->sa_family == AF_INET6) {
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a6))
      return (const struct in_addr *)&a6->s6_addr[12];
  }
  return NULL;
}

bool mst_addr_is_any(const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET)
    return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
  return sa->sa_family == AF_INET6 &&
         IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
}

bool mst_addr_is_loopback(const struct sockaddr *sa) {
  const struct in_addr *a4 = ipv4_of(sa);
  if (a4)
    return (ntohl(a4->s_addr) >> 24) == 127;
  return sa->sa_family == AF_INET6 &&
         IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
}

uint16_t mst_addr_port(const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET)
    return ntohs(((const struct sockaddr_in *)sa)->sin_port);
  if (sa->sa_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
  return 0;
}

int mst_addr_format_host(const struct sockaddr *sa, char *buf, size_t size) {
  const struct in_addr *a4 = ipv4_of(sa);
  if (a4)
    return inet_ntop(AF_INET, a4, buf, (socklen_t)size) ? 0 : -EINVAL;
  if (sa->sa_family != AF_INET6)
    return -EINVAL;
  /* getnameinfo() adds the scope id ("%eth0") that inet_ntop() drops. */
  return getnameinfo(sa, sizeof(struct sockaddr_in6), buf, (socklen_t)size, NULL, 0,
                     NI_NUMERICHOST) == 0
             ? 0
             : -EINVAL;
}

int mst_addr_format(const struct sockaddr *sa, char *buf, size_t size) {
  char host[MST_ADDR_STRLEN];
  int r = mst_addr_format_host(sa, host, sizeof(host)), n;
  if (r < 0)
    return r;
  if (ipv4_of(sa))
    n = snprintf(buf, size, "%s:%u", host, mst_addr_port(sa));
  else
    n = snprintf(buf, size, "[%s]:%u", host, mst_addr_port(sa));
  return n >= 0 && (size_t)n < size ? 0 : -EINVAL;
}

int mst_addr_listen(const struct mst_addr *a, int backlog) {
  const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
  _cleanup_close_ int fd = -1;
  int one = 1, zero = 0;

  fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  /* Linux defaults to dual stack unless net.ipv6.bindv6only says otherwise;
   * a listener on [::] means "every address", so say it. A host without
   * IPv4 refuses the option: it then listens on IPv6 alone. */
  if (sa->sa_family == AF_INET6 && mst_addr_is_any(sa))
    (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  if (bind(fd, sa, a->len) < 0 || listen(fd, backlog) < 0)
    return -errno;
  return TAKE_FD(fd);
}

/* "name:port" with a DNS name: libzookeeper resolves names itself. */
static bool is_host_name_port(const char *s) {
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
      atoi(colon + 1) < 1 || atoi(colon + 1) > 65535 || strlen(colon + 1) > 5)
    return false;
  for (const char *c = s; c < colon; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
          *c == '-' || *c == '.'))
      return false;
  return true;
}

int mst_addr_zk_hosts(const char *s, char **ret, char *err, size_t errsize) {
  _cleanup_free_ char *out = NULL;
  const char *chroot, *p;
  size_t n = 0;

  if (!s || !*s) {
    snprintf(err, errsize, "the list is empty");
    return -EINVAL;
  }
  /* The chroot starts at the first '/'; no address holds one. */
  chroot = strchr(s, '/');
  out = malloc(strlen(s) + 1);
  if (!out)
    return -ENOMEM;
  p = s;
  while (p < (chroot ? chroot : s + strlen(s))) {
    const char *endp = chroot ? chroot : s + strlen(s);
    const char *comma = memchr(p, ',', (size_t)(endp - p));
    size_t len = (size_t)((comma ? comma : endp) - p);
    char one[MST_ADDR_STRLEN + 8];
    struct mst_addr a;
    int r;

    if (len == 0 || len >= sizeof(one)) {
      snprintf(err, errsize, "'%s': %s", s, len ? "an address is too long" : "an address is empty");
      return -EINVAL;
    }
    memcpy(one, p, len);
    one[len] = '\0';
    r = mst_addr_parse(one, 0, &a, err, errsize);
    if (r < 0 && !is_host_name_port(one))
      return r;
    if (n)
      out[n++] = ',';
    /* Brackets off, for libzookeeper's split at the last ':'. */
    if (one[0] == '[') {
      char *close = strchr(one, ']');
      memcpy(out + n, one + 1, (size_t)(close - one - 1));
      n += (size_t)(close - one - 1);
      n += (size_t)sprintf(out + n, "%s", close + 1);
    } else {
      memcpy(out + n, one, len);
      n += len;
    }
    p += len + (comma ? 1 : 0);
    if (comma && p == endp) {
      snprintf(err, errsize, "'%s': an address is empty", s);
      return -EINVAL;
    }
  }
  if (n == 0) {
    snprintf(err, errsize, "'%s' names no server", s);
    return -EINVAL;
  }
  strcpy(out + n, chroot ? chroot : "");
  *ret = TAKE_PTR(out);
  return 0;
}
