/* Numeric addresses and non-blocking connects (netaddr.c), shared by the
 * tcp probe and the stream. Nothing here resolves names or blocks; nothing
 * keeps state, so any thread may call it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* Parses "host:port" or "[v6]:port" into a socket address. The host must be
 * a numeric IPv4/IPv6 address or "localhost" (127.0.0.1): name resolution
 * would block the loop, so it is not done. Returns 0, or -EINVAL with a
 * reason in err. ret and ret_len are set only on success. */
int agent_sockaddr_parse(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len, char *err,
                         size_t errsize);

/* Starts a non-blocking connect. Returns the socket (>= 0, non-blocking,
 * CLOEXEC, the caller's to close) or -errno; *ret_connected tells whether it
 * already connected. */
int agent_connect_start(const struct sockaddr *sa, socklen_t len, bool *ret_connected);

/* After EPOLLOUT: 0 when connected, else -errno from SO_ERROR. */
int agent_connect_result(int fd);
