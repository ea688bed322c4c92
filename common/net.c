/* Network address parsing for config values such as listen_stream and
 * aggregators. Only numeric IPv4 addresses (and "localhost") are accepted:
 * resolving names would block the loop thread. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mst/net.h"

int mst_parse_host_port(const char *s, struct sockaddr_in *sin) {
  char host[64];
  const char *colon;
  char *end;
  unsigned long port;
  size_t hl;

  if (!s)
    return -EINVAL;
  colon = strrchr(s, ':');
  if (!colon)
    return -EINVAL;
  hl = (size_t)(colon - s);
  if (hl >= sizeof(host))
    return -EINVAL;
  memcpy(host, s, hl);
  host[hl] = '\0';
  if (!colon[1])
    return -EINVAL;
  errno = 0;
  port = strtoul(colon + 1, &end, 10);
  if (errno || *end || port > 65535 || colon[1] == '-' || colon[1] == '+')
    return -EINVAL;

  memset(sin, 0, sizeof(*sin));
  sin->sin_family = AF_INET;
  sin->sin_port = htons((uint16_t)port);
  if (hl == 0 || strcmp(host, "*") == 0)
    sin->sin_addr.s_addr = htonl(INADDR_ANY);
  else if (strcmp(host, "localhost") == 0)
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
    return -EINVAL;
  return 0;
}
