/* Addresses and non-blocking connects, shared by the TCP probe and the stream
 * to the aggregator.
 *
 * getaddrinfo() may block for as long as a DNS server takes, and nothing may
 * block the agent's loop. So addresses are resolved only when that cannot
 * block: numeric hosts (AI_NUMERICHOST | AI_NUMERICSERV), plus "localhost",
 * which is taken to mean 127.0.0.1 without asking the resolver. A host name
 * is refused with a message that says so; the config check reports it, so an
 * operator learns it at start, not at the first probe. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "mst/macro.h"
#include "netaddr.h"

int agent_sockaddr_parse(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len, char *err,
                         size_t errsize) {
  char host[INET6_ADDRSTRLEN + 8];
  const char *port, *colon;
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
    if (host_len == 0 || host_len >= sizeof(host)) {
      snprintf(err, errsize, "'%s' has no valid IPv6 address", s);
      return -EINVAL;
    }
    memcpy(host, s + 1, host_len);
    port = close + 2;
  } else {
    colon = strrchr(s, ':');
    if (!colon) {
      snprintf(err, errsize, "'%s' is not host:port", s);
      return -EINVAL;
    }
    if (memchr(s, ':', (size_t)(colon - s))) {
      snprintf(err, errsize, "'%s': write IPv6 addresses as [address]:port", s);
      return -EINVAL;
    }
    host_len = (size_t)(colon - s);
    if (host_len == 0 || host_len >= sizeof(host)) {
      snprintf(err, errsize, "'%s' has no valid host", s);
      return -EINVAL;
    }
    memcpy(host, s, host_len);
    port = colon + 1;
  }
  host[host_len] = '\0';

  char *end;
  errno = 0;
  unsigned long p = strtoul(port, &end, 10);
  if (*port < '0' || *port > '9' || *end || errno || p == 0 || p > 65535) {
    snprintf(err, errsize, "'%s' has no valid port (1-65535)", s);
    return -EINVAL;
  }

  if (strcmp(host, "localhost") == 0)
    snprintf(host, sizeof(host), "127.0.0.1");

  struct addrinfo hints = {
      .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
      .ai_family = AF_UNSPEC,
      .ai_socktype = SOCK_STREAM,
  };
  struct addrinfo *res = NULL;
  char portbuf[8];
  snprintf(portbuf, sizeof(portbuf), "%lu", p);
  int rc = getaddrinfo(host, portbuf, &hints, &res);
  if (rc != 0 || !res) {
    if (rc == EAI_NONAME)
      snprintf(err, errsize,
               "'%s': host must be a numeric IP address or localhost (names are not resolved: "
               "that could block)",
               s);
    else
      snprintf(err, errsize, "'%s': %s", s, gai_strerror(rc));
    if (res)
      freeaddrinfo(res);
    return -EINVAL;
  }
  if (res->ai_addrlen > sizeof(*ret)) {
    freeaddrinfo(res);
    snprintf(err, errsize, "'%s': address too long", s);
    return -EINVAL;
  }
  memset(ret, 0, sizeof(*ret));
  memcpy(ret, res->ai_addr, res->ai_addrlen);
  *ret_len = res->ai_addrlen;
  freeaddrinfo(res);
  return 0;
}

int agent_connect_start(const struct sockaddr *sa, socklen_t len, bool *ret_connected) {
  _cleanup_close_ int fd = -1;

  fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0)
    return -errno;
  if (connect(fd, sa, len) == 0) {
    *ret_connected = true;
    return TAKE_FD(fd);
  }
  if (errno != EINPROGRESS)
    return -errno;
  *ret_connected = false;
  return TAKE_FD(fd);
}

int agent_connect_result(int fd) {
  int error = 0;
  socklen_t len = sizeof(error);

  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
    return -errno;
  return error > 0 ? -error : 0;
}
