/* Non-blocking connects (netaddr.c), shared by the probes and the stream;
 * addresses come from mst_addr_parse() (mst/addr.h). Nothing here resolves
 * names or blocks; nothing keeps state, so any thread may call it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* Starts a non-blocking connect. Returns the socket (>= 0, non-blocking,
 * CLOEXEC, the caller's to close) or -errno; *ret_connected tells whether it
 * already connected. */
int agent_connect_start(const struct sockaddr *sa, socklen_t len, bool *ret_connected);

/* After EPOLLOUT: 0 when connected, else -errno from SO_ERROR. */
int agent_connect_result(int fd);
