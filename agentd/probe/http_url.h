/* The URL of an http check (http_url.c), parsed once into everything the
 * request will carry: the host and port to connect to, the Host header, the
 * request target and Basic credentials. config.c runs the same parser at
 * start so that a bad URL stops the agent with "path:line: message". Pure:
 * any thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A parsed http check URL; strings owned (agent_http_url_done()). */
struct agent_http_url {
  bool tls;          /* https:// */
  bool ipv6_literal; /* the host was written [v6] */
  bool numeric_host; /* an IP address rather than a name */
  uint16_t port;
  char *host;        /* without brackets */
  char *host_header; /* the Host header: host, and ":port" when not the default */
  char *target;      /* path and query, at least "/" */
  char *basic_auth;  /* base64 of the URL's "user:password", or NULL */
};

/* Parses an http:// or https:// URL. Returns 0, -ENOMEM, or -EINVAL with a
 * reason in err. ret is set only on success. */
int agent_http_url_parse(const char *url, struct agent_http_url *ret, char *err, size_t errsize);
void agent_http_url_done(struct agent_http_url *u);

/* The address to connect to when the host is numeric or "localhost"
 * (127.0.0.1). Returns 0, or -EADDRNOTAVAIL for a name to resolve. */
int agent_http_url_address(const struct agent_http_url *u, struct sockaddr_storage *ret,
                           socklen_t *ret_len);
