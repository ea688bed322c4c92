/* libFuzzer target: the agent's HTTP response parser
 * (agentd/probe/http_response.c), which reads bytes from whatever server an
 * http check points at.
 *
 * Input: byte 0 picks how the response arrives (the sizes of the reads, see
 * next_piece()); byte 1 is the length L (0-31) of expect_body, taken from
 * the next L bytes (up to a NUL); the rest is the response. The response is
 * parsed three times: in one read, in the pieces byte 0 picks, and in one
 * read without expect_body. Each parse feeds until the parser answers, then
 * tells it the connection ended.
 *
 * Invariants: the three parses agree (how the bytes are cut into reads
 * must not matter, and neither must expect_body, except for body_found);
 * an error has a message; a complete response has a final status (not
 * 1xx, except 101), its headers done and at most AGENT_HTTP_BODY_MAX body
 * bytes looked at; the parser never reads more than it was given, and
 * done() frees what it allocated (AddressSanitizer and LeakSanitizer).
 * Seeds: typical responses, chunked and not (make_corpus.py). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "probe/http_response.h"

#define EXPECT_MAX 31

struct outcome {
  int r;
  unsigned status;
  bool headers_done, body_full, body_found;
  uint64_t body_len;
  char error[256];
};

/* Read sizes of 1 to 64 bytes from a small LCG seeded by the input; seed 0
 * feeds a byte at a time. */
static size_t next_piece(uint32_t *state) {
  if (*state == 0)
    return 1;
  *state = *state * 1103515245u + 12345u;
  return 1 + (*state >> 16) % 64;
}

/* data is an exact-size copy of the response, so that ASan sees any read
 * past its end; split 0xff feeds it in one read. */
static void parse(const char *data, size_t size, const char *expect, uint8_t split,
                  struct outcome *ret) {
  struct agent_http_response p;
  uint32_t state = split;
  size_t off = 0;
  int r = 0;

  agent_http_response_init(&p, expect);
  while (r == 0 && off < size) {
    size_t n = split == 0xff ? size - off : next_piece(&state);
    if (n > size - off)
      n = size - off;
    r = agent_http_response_feed(&p, data + off, n);
    off += n;
  }
  if (r == 0)
    r = agent_http_response_eof(&p);

  FUZZ_CHECK(r == 1 || r == -EBADMSG);
  FUZZ_CHECK(p.received <= size);
  if (r < 0) {
    FUZZ_CHECK(p.error[0] != '\0');
    FUZZ_CHECK(memchr(p.error, '\0', sizeof(p.error)) != NULL);
  } else {
    FUZZ_CHECK(p.headers_done);
    FUZZ_CHECK(p.status >= 100 && p.status <= 599);
    FUZZ_CHECK(p.status >= 200 || p.status == 101);
    FUZZ_CHECK(p.body_len <= AGENT_HTTP_BODY_MAX);
    FUZZ_CHECK(p.body_full == (p.body_len == AGENT_HTTP_BODY_MAX));
    FUZZ_CHECK(!p.body_found || (expect && *expect && p.body_len >= strlen(expect)));
  }
  *ret = (struct outcome){
      .r = r,
      .status = p.status,
      .headers_done = p.headers_done,
      .body_full = p.body_full,
      .body_found = p.body_found,
      .body_len = p.body_len,
  };
  memcpy(ret->error, p.error, sizeof(ret->error));
  agent_http_response_done(&p);
}

static void check_same(const struct outcome *a, const struct outcome *b, bool same_found) {
  FUZZ_CHECK(a->r == b->r);
  FUZZ_CHECK(strcmp(a->error, b->error) == 0);
  if (a->r < 0)
    return;
  FUZZ_CHECK(a->status == b->status);
  FUZZ_CHECK(a->headers_done == b->headers_done);
  FUZZ_CHECK(a->body_full == b->body_full);
  FUZZ_CHECK(a->body_len == b->body_len);
  if (same_found)
    FUZZ_CHECK(a->body_found == b->body_found);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char expect[EXPECT_MAX + 1];
  struct outcome whole, pieces, plain;
  uint8_t split;
  size_t len;

  if (size < 2)
    return 0;
  split = data[0];
  len = data[1] % (EXPECT_MAX + 1);
  if (len > size - 2)
    len = size - 2;
  memcpy(expect, data + 2, len);
  expect[len] = '\0';
  data += 2 + len;
  size -= 2 + len;

  char *response = malloc(size ? size : 1);
  FUZZ_CHECK(response);
  memcpy(response, data, size);
  parse(response, size, expect, 0xff, &whole);
  parse(response, size, expect, split == 0xff ? 0 : split, &pieces);
  parse(response, size, NULL, 0xff, &plain);
  free(response);
  check_same(&whole, &pieces, true);
  check_same(&whole, &plain, false);
  FUZZ_CHECK(!plain.body_found);
  return 0;
}
