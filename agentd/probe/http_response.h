/* The response side of an http check (http_response.c): an incremental
 * HTTP/1.x parser fed with whatever the socket gave, in pieces of any size,
 * from a server the agent does not control. Every count it keeps is capped
 * (see the constants). The struct is the caller's, usually inside the run;
 * it allocates only the expect_body carry, freed by
 * agent_http_response_done(). Pure: any thread, one parser per thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_HTTP_BODY_MAX    (64 * 1024) /* body bytes looked at */
#define AGENT_HTTP_HEADERS_MAX (64 * 1024) /* status line and headers */

/* The state of one response. Set up with agent_http_response_init();
 * expect_body is borrowed and must outlive it. Read status, headers_done,
 * body_full, body_found and error; the rest is the parser's. */
struct agent_http_response {
  int state;
  unsigned status; /* 100-599, once the status line is in */
  bool headers_done;
  bool chunked;
  bool has_length;
  bool body_full;  /* AGENT_HTTP_BODY_MAX bytes were looked at */
  bool body_found; /* expect_body was seen */
  uint64_t remaining;
  uint64_t body_len;
  uint64_t received;
  size_t header_bytes;
  size_t framing_bytes;
  const char *expect;
  size_t expect_len;
  char *carry; /* the body's last expect_len - 1 bytes (owned) */
  size_t carry_len;
  size_t line_len;
  bool line_cut; /* the line was longer than line[] holds: only its start is in */
  char line[512];
  char error[256]; /* why, after -EBADMSG */
  /* The body's first bytes, when the caller asked for them
   * (agent_http_response_keep_body()): AGENT_HTTP_BODY_MAX at most, then
   * a NUL; owned, NULL otherwise. */
  char *kept;
  size_t kept_len;
};

/* expect_body may be NULL or "" (the body is then only counted). */
void agent_http_response_init(struct agent_http_response *p, const char *expect_body);
void agent_http_response_done(struct agent_http_response *p);
/* Keeps the body's first AGENT_HTTP_BODY_MAX bytes in p->kept (a fetch
 * wants what the server said, not only whether it said something). Call
 * after init, before feeding. Returns 0 or -ENOMEM. */
int agent_http_response_keep_body(struct agent_http_response *p);
/* Feeds n bytes. Returns 0 when more is wanted, 1 when the response is
 * complete (stop reading: what follows is not looked at), -EBADMSG with
 * p->error, or -ENOMEM. After 1 more bytes are ignored (1 again); after an
 * error the parser is spent: feed no more. */
int agent_http_response_feed(struct agent_http_response *p, const char *data, size_t n);
/* The connection ended. Returns 1 when the response is complete, or
 * -EBADMSG with p->error. */
int agent_http_response_eof(struct agent_http_response *p);
