/* Network address helpers shared by both daemons and musterctl. Numeric
 * addresses only, so that nothing on a loop thread waits for DNS. */
#pragma once

#include <netinet/in.h>

/* Parses "A.B.C.D:PORT" (or "localhost:PORT", or "*:PORT" / ":PORT" for any
 * address) into sin. Returns 0 or -EINVAL. */
int mst_parse_host_port(const char *s, struct sockaddr_in *sin);
