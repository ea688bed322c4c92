/* Non-blocking connects, shared by the TCP probe, the HTTP probe and the
 * stream to the aggregator. Addresses are parsed by common/addr.c
 * (mst_addr_parse()), which resolves nothing, so nothing here blocks the
 * agent's loop. */
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
