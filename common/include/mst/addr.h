/* Network addresses as they appear in config files, on the command line, in
 * ZooKeeper and on the wire: the one parser and the one formatter both
 * daemons, musterctl and the bench tools share, so that every place an
 * address goes takes IPv4 and IPv6 alike and says the same thing about a
 * bad one. Numeric addresses only (and "localhost"): resolving a name could
 * block a loop thread for as long as a DNS server takes. Nothing here keeps
 * state; any thread may call it. */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* "[v6%scope]:port" with the longest IPv6 text and interface name fits. */
#define MST_ADDR_STRLEN (INET6_ADDRSTRLEN + 16 + 10)

/* A parsed address. len is what bind() and connect() take. */
struct mst_addr {
  struct sockaddr_storage ss;
  socklen_t len;
};

enum {
  /* A listen address: the wildcard forms "*:PORT" and ":PORT" (IPv4's any)
   * and port 0 (the system picks one) are accepted. */
  MST_ADDR_LISTEN = 1u << 0,
};

/* Parses "A.B.C.D:PORT", "[IPV6]:PORT" (a scope id as "%eth0" allowed) or
 * "localhost:PORT" (127.0.0.1). An IPv6 address must be in brackets: in
 * "fd00::1:7610" the port cannot be told from the address. Returns 0 and
 * sets *ret, or -EINVAL with the reason in err (which quotes s). */
int mst_addr_parse(const char *s, unsigned flags, struct mst_addr *ret, char *err, size_t errsize);

/* True for 0.0.0.0 and :: (an address nobody else can connect to). */
bool mst_addr_is_any(const struct sockaddr *sa);
/* True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. */
bool mst_addr_is_loopback(const struct sockaddr *sa);
/* The port in host order, 0 for a family without one. */
uint16_t mst_addr_port(const struct sockaddr *sa);

/* The host as text, without port or brackets; an IPv4-mapped IPv6 address
 * (a dual-stack socket's IPv4 peer) as plain IPv4. Returns 0 or -EINVAL
 * (an unknown family, or size too small). */
int mst_addr_format_host(const struct sockaddr *sa, char *buf, size_t size);
/* "A.B.C.D:PORT" or "[IPV6]:PORT", the form mst_addr_parse() reads back (an
 * IPv4-mapped address as IPv4). Returns 0 or -EINVAL. */
int mst_addr_format(const struct sockaddr *sa, char *buf, size_t size);

/* Opens a non-blocking, close-on-exec TCP listening socket on a, with
 * SO_REUSEADDR. The IPv6 wildcard "[::]" listens dual stack (IPV6_V6ONLY
 * off) so that IPv4 clients reach it too, where the system allows it.
 * Returns the socket (the caller's) or -errno. */
int mst_addr_listen(const struct mst_addr *a, int backlog);

/* Checks a ZooKeeper connect string ("HOST:PORT,HOST:PORT[/chroot]", each
 * host as mst_addr_parse() reads it, or a DNS name, which libzookeeper
 * resolves itself) and rewrites it for libzookeeper, which
 * splits each host at its last ':' and passes no brackets to getaddrinfo():
 * "[fd00::1]:2181" becomes "fd00::1:2181". Returns 0 and a malloc'd string
 * in *ret (the caller's), -EINVAL with the reason in err, or -ENOMEM. */
int mst_addr_zk_hosts(const char *s, char **ret, char *err, size_t errsize);
