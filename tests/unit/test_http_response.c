/* Unit tests for agentd/probe/http_response.c, the parser of what the server
 * of an http check answers: one table row per response, each parsed as it
 * would come in one read and again a byte at a time (the parser must not
 * care how the bytes are cut), then the caps with responses built here.
 * Links agent_core. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mst/macro.h"
#include "probe/http_response.h"

struct outcome {
  int r;
  unsigned status;
  bool body_found, body_full;
  uint64_t body_len;
  char error[256];
};

/* Feeds data in reads of at most `piece` bytes (0: all at once) until the
 * parser answers, then tells it the connection ended. */
static struct outcome parse(const char *data, size_t n, const char *expect, size_t piece) {
  struct agent_http_response p;
  struct outcome o = {0};
  size_t off = 0;
  int r = 0;

  agent_http_response_init(&p, expect);
  while (r == 0 && off < n) {
    size_t k = piece ? MST_MIN(piece, n - off) : n - off;
    r = agent_http_response_feed(&p, data + off, k);
    off += k;
  }
  if (r == 0)
    r = agent_http_response_eof(&p);
  o.r = r;
  o.status = p.status;
  o.body_found = p.body_found;
  o.body_full = p.body_full;
  o.body_len = p.body_len;
  snprintf(o.error, sizeof(o.error), "%s", r < 0 ? p.error : "");
  agent_http_response_done(&p);
  return o;
}

#define OK  1
#define BAD (-EBADMSG)

struct response_case {
  const char *name;
  const char *response;
  const char *expect_body; /* NULL: none */
  int want;                /* OK or BAD */
  unsigned status;
  uint64_t body_len;
  bool body_found;
  const char *error; /* the start of the message, for BAD */
  size_t len;        /* of response, when it holds a NUL; else 0 */
};

/* A complete response, and one the parser refuses with error. */
#define GOOD(name, response, expect, status, body_len, found)                                      \
  { name, response, expect, OK, status, body_len, found, NULL, 0 }
#define FAIL(name, response, error)                                                                \
  { name, response, NULL, BAD, 0, 0, false, error, 0 }

#define CRLF        "\r\n"
#define OK_HEAD     "HTTP/1.1 200 OK" CRLF
#define CHUNKED_HDR "Transfer-Encoding: chunked" CRLF

static const struct response_case response_cases[] = {
    /* the status line */
    GOOD("status and reason", OK_HEAD "Content-Length: 2" CRLF CRLF "ok", NULL, 200, 2, false),
    GOOD("status without reason", "HTTP/1.1 503" CRLF "Content-Length: 0" CRLF CRLF, NULL, 503, 0,
         false),
    GOOD("HTTP/1.0, LF only, body until the end", "HTTP/1.0 200 OK\nServer: x\n\nhello", NULL, 200,
         5, false),
    GOOD("blank lines before the status line",
         CRLF CRLF "HTTP/1.1 404 Not Found" CRLF "Content-Length: 2" CRLF CRLF "no", NULL, 404, 2,
         false),
    FAIL("HTTP/2 status line", "HTTP/2 200" CRLF CRLF, "not an HTTP/1.x response: 'HTTP/2 200'"),
    FAIL("status 600", "HTTP/1.1 600 Weird" CRLF CRLF, "not an HTTP/1.x response"),
    FAIL("two-digit status", "HTTP/1.1 20 OK" CRLF CRLF, "not an HTTP/1.x response"),
    FAIL("no space after the status", "HTTP/1.1 200OK" CRLF CRLF, "not an HTTP/1.x response"),
    FAIL("not HTTP at all", "SSH-2.0-OpenSSH_9.2" CRLF,
         "not an HTTP/1.x response: 'SSH-2.0-OpenSSH_9.2'"),
    /* interim and bodiless responses */
    GOOD("100 Continue, then the response",
         "HTTP/1.1 100 Continue" CRLF CRLF "HTTP/1.1 503 Unavailable" CRLF
         "Content-Length: 4" CRLF CRLF "down",
         NULL, 503, 4, false),
    GOOD("101 ends the response",
         "HTTP/1.1 101 Switching Protocols" CRLF "Upgrade: h2c" CRLF CRLF "xx", NULL, 101, 0,
         false),
    GOOD("204 has no body", "HTTP/1.1 204 No Content" CRLF "Content-Length: 9" CRLF CRLF, NULL, 204,
         0, false),
    GOOD("304 has no body", "HTTP/1.1 304 Not Modified" CRLF "Content-Length: 9" CRLF CRLF, NULL,
         304, 0, false),
    /* headers and Content-Length */
    GOOD("header names in any case, blanks around the value",
         OK_HEAD "content-LENGTH: 3 \t" CRLF CRLF "abc", NULL, 200, 3, false),
    GOOD("what follows the body is not looked at",
         OK_HEAD "Content-Length: 2" CRLF CRLF "okGARBAGE", "GARBAGE", 200, 2, false),
    GOOD("the same Content-Length twice",
         OK_HEAD "Content-Length: 2" CRLF "Content-Length: 2" CRLF CRLF "ok", NULL, 200, 2, false),
    FAIL("conflicting Content-Length",
         OK_HEAD "Content-Length: 2" CRLF "Content-Length: 3" CRLF CRLF,
         "conflicting Content-Length headers"),
    FAIL("Content-Length not a number", OK_HEAD "Content-Length: 1x" CRLF CRLF,
         "bad Content-Length '1x'"),
    FAIL("negative Content-Length", OK_HEAD "Content-Length: -1" CRLF CRLF,
         "bad Content-Length '-1'"),
    FAIL("empty Content-Length", OK_HEAD "Content-Length:" CRLF CRLF, "bad Content-Length ''"),
    FAIL("Content-Length past 64 bits", OK_HEAD "Content-Length: 99999999999999999999" CRLF CRLF,
         "bad Content-Length"),
    FAIL("obsolete line folding", OK_HEAD "X-A: a" CRLF " b" CRLF CRLF,
         "obsolete header line folding"),
    {"a NUL byte in a header", OK_HEAD "X-A: a\0b" CRLF CRLF, NULL, BAD, 0, 0, false,
     "a NUL byte in the response head", .len = sizeof(OK_HEAD "X-A: a\0b" CRLF CRLF) - 1},
    FAIL("unsupported Transfer-Encoding", OK_HEAD "Transfer-Encoding: gzip" CRLF CRLF,
         "unsupported Transfer-Encoding 'gzip'"),
    /* chunked */
    GOOD("chunked, with an extension and a trailer",
         OK_HEAD CHUNKED_HDR CRLF "4" CRLF "all " CRLF "7;ext=1" CRLF "is well" CRLF "0" CRLF
                                  "X-Trailer: 1" CRLF CRLF,
         "all is", 200, 11, true),
    GOOD("chunked as the last of several codings",
         OK_HEAD "Transfer-Encoding: gzip, chunked" CRLF CRLF "2" CRLF "ok" CRLF "0" CRLF CRLF,
         NULL, 200, 2, false),
    GOOD("chunked wins over Content-Length",
         OK_HEAD "Content-Length: 100" CRLF CHUNKED_HDR CRLF "2" CRLF "ok" CRLF "0" CRLF CRLF, NULL,
         200, 2, false),
    GOOD("upper-case chunk size", OK_HEAD CHUNKED_HDR CRLF "A" CRLF "0123456789" CRLF "0" CRLF CRLF,
         NULL, 200, 10, false),
    GOOD("connection closed in the trailers", OK_HEAD CHUNKED_HDR CRLF "2" CRLF "ok" CRLF "0" CRLF,
         NULL, 200, 2, false),
    FAIL("bad chunk size", OK_HEAD CHUNKED_HDR CRLF "zz" CRLF, "bad chunk size line 'zz'"),
    FAIL("chunk size followed by junk", OK_HEAD CHUNKED_HDR CRLF "2 x" CRLF,
         "bad chunk size line '2 x'"),
    FAIL("chunk size past 64 bits", OK_HEAD CHUNKED_HDR CRLF "10000000000000000" CRLF,
         "chunk size '10000000000000000' is too large"),
    FAIL("chunk data longer than its size", OK_HEAD CHUNKED_HDR CRLF "2" CRLF "okk" CRLF,
         "chunk data longer than its size"),
    FAIL("connection closed inside a chunk", OK_HEAD CHUNKED_HDR CRLF "9" CRLF "ok",
         "connection closed before the response was complete"),
    /* the end of the connection */
    FAIL("empty reply", "", "empty reply from server"),
    FAIL("closed in the headers", OK_HEAD "Server: x" CRLF,
         "connection closed before the response was complete"),
    FAIL("closed before the body's end", OK_HEAD "Content-Length: 100" CRLF CRLF "only this",
         "connection closed with 91 bytes of the body still to come"),
    /* expect_body */
    GOOD("expect_body found", OK_HEAD "Content-Length: 11" CRLF CRLF "all is well", "is", 200, 11,
         true),
    GOOD("expect_body at the very end", OK_HEAD "Content-Length: 11" CRLF CRLF "all is well",
         "well", 200, 11, true),
    GOOD("expect_body not there", OK_HEAD "Content-Length: 11" CRLF CRLF "all is well", "sick", 200,
         11, false),
    GOOD("expect_body longer than the body", OK_HEAD "Content-Length: 2" CRLF CRLF "ok", "okay",
         200, 2, false),
    GOOD("expect_body in the headers only",
         OK_HEAD "X-State: well" CRLF "Content-Length: 2" CRLF CRLF "ok", "well", 200, 2, false),
    GOOD("empty expect_body is none", OK_HEAD "Content-Length: 2" CRLF CRLF "ok", "", 200, 2,
         false),
};

static void check_case(const struct response_case *c, const struct outcome *o, size_t piece) {
  cr_assert_eq(o->r, c->want, "%s (reads of %zu): returned %d (%s)", c->name, piece, o->r,
               o->error);
  if (c->want == BAD) {
    cr_assert(strncmp(o->error, c->error, strlen(c->error)) == 0,
              "%s (reads of %zu): error '%s', want '%s'", c->name, piece, o->error, c->error);
    return;
  }
  cr_assert_eq(o->status, c->status, "%s (reads of %zu): status %u", c->name, piece, o->status);
  cr_assert_eq(o->body_len, c->body_len, "%s (reads of %zu): body_len %llu", c->name, piece,
               (unsigned long long)o->body_len);
  cr_assert_eq(o->body_found, c->body_found, "%s (reads of %zu): body_found", c->name, piece);
  cr_assert_not(o->body_full, "%s", c->name);
}

Test(http_response, table) {
  for (size_t i = 0; i < ELEMENTSOF(response_cases); i++) {
    const struct response_case *c = &response_cases[i];
    size_t n = c->len ? c->len : strlen(c->response);
    static const size_t pieces[] = {0, 1, 3};

    for (size_t k = 0; k < ELEMENTSOF(pieces); k++) {
      struct outcome o = parse(c->response, n, c->expect_body, pieces[k]);
      check_case(c, &o, pieces[k]);
    }
  }
}

/* A response of head, then body_len bytes of 'w', then tail; malloc'd. */
static char *build(const char *head, size_t body_len, const char *tail, size_t *ret_len) {
  size_t h = strlen(head), t = strlen(tail);
  char *s = malloc(h + body_len + t + 1);

  cr_assert_not_null(s);
  memcpy(s, head, h);
  memset(s + h, 'w', body_len);
  memcpy(s + h + body_len, tail, t + 1);
  *ret_len = h + body_len + t;
  return s;
}

Test(http_response, body_cap) {
  char head[128];
  size_t n;

  /* 70,000 bytes: the first 64 KiB are looked at, then the response counts
   * as complete without waiting for the rest. */
  snprintf(head, sizeof(head), OK_HEAD "Content-Length: %d" CRLF CRLF, 70000);
  char *s = build(head, 70000 - 4, "well", &n);
  struct outcome o = parse(s, n, "well", 0);
  cr_assert_eq(o.r, OK);
  cr_assert(o.body_full);
  cr_assert_eq(o.body_len, AGENT_HTTP_BODY_MAX);
  cr_assert_not(o.body_found, "past the cap: not looked at");
  o = parse(s, n, "www", 1000);
  cr_assert(o.body_full);
  cr_assert(o.body_found);
  free(s);

  /* Until the end of the connection, likewise. */
  s = build("HTTP/1.0 200 OK" CRLF CRLF, AGENT_HTTP_BODY_MAX + 10, "", &n);
  o = parse(s, n, NULL, 0);
  cr_assert_eq(o.r, OK);
  cr_assert(o.body_full);
  cr_assert_eq(o.body_len, AGENT_HTTP_BODY_MAX);
  free(s);
}

Test(http_response, expect_body_across_reads) {
  /* Every cut of "needle" between two reads, in a body and across chunks. */
  static const char *const bodies[] = {
      OK_HEAD "Content-Length: 20" CRLF CRLF "xxxxxxxneedlexxxxxxx",
      OK_HEAD CHUNKED_HDR CRLF "9" CRLF "xxxxxxxne" CRLF "4" CRLF "edle" CRLF "0" CRLF CRLF,
      OK_HEAD CHUNKED_HDR CRLF "1" CRLF "n" CRLF "1" CRLF "e" CRLF "4" CRLF "edle" CRLF
                               "0" CRLF CRLF,
  };
  for (size_t b = 0; b < ELEMENTSOF(bodies); b++)
    for (size_t piece = 1; piece <= 8; piece++) {
      struct outcome o = parse(bodies[b], strlen(bodies[b]), "needle", piece);
      cr_assert_eq(o.r, OK, "body %zu, reads of %zu: %s", b, piece, o.error);
      cr_assert(o.body_found, "body %zu, reads of %zu", b, piece);
      o = parse(bodies[b], strlen(bodies[b]), "needles", piece);
      cr_assert_not(o.body_found, "body %zu, reads of %zu", b, piece);
    }
}

/* OK_HEAD, then `lines` header lines of 1 KiB, then the blank line. */
static char *build_head(size_t lines, size_t *ret_len) {
  char line[1024];
  size_t n = strlen(OK_HEAD);
  char *s = malloc(n + lines * sizeof(line) + 3);

  cr_assert_not_null(s);
  memset(line, 'a', sizeof(line));
  memcpy(line, "X-Filler: ", 10);
  memcpy(line + sizeof(line) - 2, CRLF, 2);
  memcpy(s, OK_HEAD, n);
  for (size_t i = 0; i < lines; i++, n += sizeof(line))
    memcpy(s + n, line, sizeof(line));
  memcpy(s + n, CRLF, 3);
  *ret_len = n + 2;
  return s;
}

Test(http_response, head_cap) {
  /* The status line and headers may take 64 KiB, blank line included. */
  size_t fit = (AGENT_HTTP_HEADERS_MAX - strlen(OK_HEAD) - 2) / 1024, n;
  char *s = build_head(fit, &n);
  struct outcome o = parse(s, n, NULL, 0);

  cr_assert_eq(o.r, OK, "%s", o.error);
  cr_assert_eq(o.status, 200);
  free(s);

  s = build_head(fit + 1, &n);
  o = parse(s, n, NULL, 0);
  cr_assert_eq(o.r, BAD);
  cr_assert_str_eq(o.error, "response headers longer than 64 KiB");
  free(s);
}

Test(http_response, framing_cap) {
  /* Trailers are counted, and cut off at 1 MiB. */
  static const char trailer[] = "X-T: 0123456789012345678901234567890123456789" CRLF;
  const char *head = OK_HEAD CHUNKED_HDR CRLF "0" CRLF;
  size_t per = sizeof(trailer) - 1, lines = 1024 * 1024 / per + 2, n = strlen(head);
  char *s = malloc(n + lines * per + 3);

  cr_assert_not_null(s);
  memcpy(s, head, n);
  for (size_t i = 0; i < lines; i++, n += per)
    memcpy(s + n, trailer, per);
  memcpy(s + n, CRLF, 3);
  struct outcome o = parse(s, n + 2, NULL, 0);
  cr_assert_eq(o.r, BAD);
  cr_assert_str_eq(o.error, "chunk framing and trailers longer than 1 MiB");
  free(s);
}

Test(http_response, long_lines) {
  char *s;
  size_t n;

  /* A long header that is not looked at is fine: only its start is kept. */
  s = build(OK_HEAD "X-Long: ", 2000, CRLF "Content-Length: 2" CRLF CRLF "ok", &n);
  struct outcome o = parse(s, n, NULL, 0);
  cr_assert_eq(o.r, OK, "%s", o.error);
  cr_assert_eq(o.body_len, 2);
  free(s);

  /* A Content-Length cut inside its digits would read as another number:
   * 600 leading zeros must not make it 0. */
  char head[1024];
  snprintf(head, sizeof(head), OK_HEAD "Content-Length: %0600d" CRLF CRLF "hello", 5);
  o = parse(head, strlen(head), "hello", 0);
  cr_assert_eq(o.r, BAD);
  cr_assert(strncmp(o.error, "header line longer than 511 bytes", 33) == 0, "%s", o.error);

  /* Likewise a chunk size, which would read as the last chunk. */
  snprintf(head, sizeof(head), OK_HEAD CHUNKED_HDR CRLF "%0600d" CRLF "hello" CRLF "0" CRLF CRLF,
           5);
  o = parse(head, strlen(head), NULL, 3);
  cr_assert_eq(o.r, BAD);
  cr_assert(strncmp(o.error, "chunk size line longer than 511 bytes", 37) == 0, "%s", o.error);

  /* A long chunk extension after the size is not looked at. */
  s = build(OK_HEAD CHUNKED_HDR CRLF "2;x=", 2000, CRLF "ok" CRLF "0" CRLF CRLF, &n);
  o = parse(s, n, NULL, 0);
  cr_assert_eq(o.r, OK, "%s", o.error);
  cr_assert_eq(o.body_len, 2);
  free(s);
}
