/* The response side of an http check: an incremental HTTP/1.x parser fed
 * with whatever the socket gave, in pieces of any size.
 *
 * It keeps no copy of the response, unless the caller asks for the body's
 * first AGENT_HTTP_BODY_MAX bytes (a fetch, not a check). Lines (the status line, headers, chunk
 * sizes, trailers) go through one small line buffer; a longer line keeps
 * only its start, which is all that is looked at, unless a cut would change
 * what the line says: a Content-Length or Transfer-Encoding header, or a
 * chunk size whose digits run past the cut, is an error when cut (a number
 * with many leading zeros must not be read as its first few digits, which
 * would end the body early). The body is counted and,
 * when the check has expect_body, searched as it streams by, with a carry of
 * the last strlen(expect_body) - 1 bytes so that a match split between two
 * reads (or two chunks) is still found. What is bounded, and how:
 *
 *   - the status line and headers together: AGENT_HTTP_HEADERS_MAX, else an
 *     error; chunk-size lines and trailers: HTTP_FRAMING_MAX;
 *   - the body: AGENT_HTTP_BODY_MAX bytes are looked at, then the response
 *     counts as complete (body_full) and the caller stops reading.
 *
 * The body ends as HTTP/1.1 says: after Content-Length bytes, at the last
 * chunk of a chunked body, at the end of the connection otherwise (the
 * request asks for "Connection: close"), and at once for 204, 304 and
 * interim 1xx responses, which are skipped. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mst/macro.h"
#include "probe/http_response.h"
#include "util.h"

/* Bytes of chunk-size lines and trailers accepted after the headers. */
#define HTTP_FRAMING_MAX (1024 * 1024)

enum {
  PARSE_STATUS,
  PARSE_HEADERS,
  PARSE_BODY,       /* by length, or until the end of the connection */
  PARSE_CHUNK_SIZE, /* the "hex[;extension]" line */
  PARSE_CHUNK_DATA,
  PARSE_CHUNK_END, /* the CRLF after a chunk's data */
  PARSE_TRAILERS,
  PARSE_DONE,
};

void agent_http_response_init(struct agent_http_response *p, const char *expect_body) {
  *p = (struct agent_http_response){.state = PARSE_STATUS};
  if (expect_body && *expect_body) {
    p->expect = expect_body;
    p->expect_len = strlen(expect_body);
  }
}

void agent_http_response_done(struct agent_http_response *p) {
  free(p->carry);
  p->carry = NULL;
  free(p->kept);
  p->kept = NULL;
}

int agent_http_response_keep_body(struct agent_http_response *p) {
  p->kept = malloc(AGENT_HTTP_BODY_MAX + 1);
  if (!p->kept)
    return -ENOMEM;
  p->kept[0] = '\0';
  p->kept_len = 0;
  return 0;
}

_printf_(2, 3) static int parse_error(struct agent_http_response *p, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(p->error, sizeof(p->error), fmt, ap);
  va_end(ap);
  return -EBADMSG;
}

/* Looks for expect in the body as it streams by. */
static int body_search(struct agent_http_response *p, const char *data, size_t n) {
  size_t keep = p->expect_len - 1;

  if (p->body_found || n == 0)
    return 0;
  if (keep > 0 && !p->carry) {
    /* Room for the carry plus as much new data as a match can span. */
    p->carry = malloc(2 * keep);
    if (!p->carry)
      return -ENOMEM;
  }
  if (p->carry_len > 0) {
    size_t add = MST_MIN(n, keep);
    memcpy(p->carry + p->carry_len, data, add);
    if (memmem(p->carry, p->carry_len + add, p->expect, p->expect_len)) {
      p->body_found = true;
      return 0;
    }
  }
  if (memmem(data, n, p->expect, p->expect_len)) {
    p->body_found = true;
    return 0;
  }
  if (keep == 0)
    return 0;
  if (n >= keep) {
    memcpy(p->carry, data + n - keep, keep);
    p->carry_len = keep;
  } else {
    size_t total = p->carry_len + n, drop = total > keep ? total - keep : 0;
    memmove(p->carry, p->carry + drop, p->carry_len - drop);
    memcpy(p->carry + p->carry_len - drop, data, n);
    p->carry_len = total - drop;
  }
  return 0;
}

/* Body bytes, whatever the framing. Returns 1 once AGENT_HTTP_BODY_MAX is seen. */
static int body_feed(struct agent_http_response *p, const char *data, size_t n) {
  size_t room = AGENT_HTTP_BODY_MAX - p->body_len;
  int r;

  if (n >= room) {
    n = room;
    p->body_full = true;
  }
  if (p->expect) {
    r = body_search(p, data, n);
    if (r < 0)
      return r;
  }
  if (p->kept) {
    memcpy(p->kept + p->kept_len, data, n);
    p->kept_len += n;
    p->kept[p->kept_len] = '\0';
  }
  p->body_len += n;
  return p->body_full ? 1 : 0;
}

static bool header_is(const char *line, const char *name, const char **ret_value) {
  size_t n = strlen(name);

  if (strncasecmp(line, name, n) != 0 || line[n] != ':')
    return false;
  const char *v = line + n + 1;
  while (*v == ' ' || *v == '\t')
    v++;
  *ret_value = v;
  return true;
}

/* After the blank line that ends the headers. */
static int headers_end(struct agent_http_response *p) {
  if (p->status >= 100 && p->status < 200 && p->status != 101) {
    /* An interim response: the real one follows. */
    p->state = PARSE_STATUS;
    p->status = 0;
    p->chunked = false;
    p->has_length = false;
    return 0;
  }
  p->headers_done = true;
  if (p->status == 204 || p->status == 304 || p->status == 101) {
    p->state = PARSE_DONE;
    return 1;
  }
  if (p->chunked) {
    /* chunked framing wins over a Content-Length (RFC 9112, 6.3) */
    p->has_length = false;
    p->state = PARSE_CHUNK_SIZE;
    return 0;
  }
  p->state = PARSE_BODY;
  if (p->has_length && p->remaining == 0) {
    p->state = PARSE_DONE;
    return 1;
  }
  return 0;
}

static int parse_status_line(struct agent_http_response *p, const char *line) {
  /* HTTP/1.x SP 3DIGIT [SP reason] */
  if (strncmp(line, "HTTP/1.", 7) != 0 || !(line[7] >= '0' && line[7] <= '9') || line[8] != ' ' ||
      !(line[9] >= '1' && line[9] <= '5') || !(line[10] >= '0' && line[10] <= '9') ||
      !(line[11] >= '0' && line[11] <= '9') || (line[12] != '\0' && line[12] != ' '))
    return parse_error(p, "not an HTTP/1.x response: '%.80s'", line);
  p->status = (unsigned)((line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0'));
  p->state = PARSE_HEADERS;
  return 0;
}

static int parse_header(struct agent_http_response *p, const char *line) {
  const char *v;

  if ((header_is(line, "Content-Length", &v) || header_is(line, "Transfer-Encoding", &v)) &&
      p->line_cut)
    return parse_error(p, "header line longer than %zu bytes: '%.40s...'", sizeof(p->line) - 1,
                       line);
  if (header_is(line, "Content-Length", &v)) {
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    while (*end == ' ' || *end == '\t')
      end++;
    if (*v < '0' || *v > '9' || errno || *end)
      return parse_error(p, "bad Content-Length '%.40s'", v);
    if (p->has_length && p->remaining != n)
      return parse_error(p, "%s", "conflicting Content-Length headers");
    p->has_length = true;
    p->remaining = n;
  } else if (header_is(line, "Transfer-Encoding", &v)) {
    /* chunked is the last coding when present (RFC 9112, 6.1) */
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
      n--;
    p->chunked = n >= 7 && strncasecmp(v + n - 7, "chunked", 7) == 0;
    if (!p->chunked)
      return parse_error(p, "unsupported Transfer-Encoding '%.40s'", v);
  }
  return 0;
}

static int parse_chunk_size(struct agent_http_response *p, const char *line) {
  uint64_t size = 0;
  const char *c = line;

  if (agent_hex_digit(*c) < 0)
    return parse_error(p, "bad chunk size line '%.40s'", line);
  for (; agent_hex_digit(*c) >= 0; c++) {
    if (size >> 60)
      return parse_error(p, "chunk size '%.40s' is too large", line);
    size = size << 4 | (uint64_t)agent_hex_digit(*c);
  }
  if (!*c && p->line_cut)
    return parse_error(p, "chunk size line longer than %zu bytes: '%.40s...'", sizeof(p->line) - 1,
                       line);
  while (*c == ' ' || *c == '\t')
    c++;
  if (*c && *c != ';')
    return parse_error(p, "bad chunk size line '%.40s'", line);
  if (size == 0) {
    p->state = PARSE_TRAILERS;
    return 0;
  }
  p->remaining = size;
  p->state = PARSE_CHUNK_DATA;
  return 0;
}

/* A complete line (CR LF or LF stripped). Returns 1 when the response is
 * complete, 0 to go on, or -EBADMSG. */
static int line_done(struct agent_http_response *p, const char *line) {
  switch (p->state) {
  case PARSE_STATUS:
    /* Leading empty lines before a status line are tolerated (RFC 9112). */
    if (!*line)
      return 0;
    return parse_status_line(p, line);
  case PARSE_HEADERS:
    if (!*line)
      return headers_end(p);
    if (line[0] == ' ' || line[0] == '\t')
      return parse_error(p, "%s", "obsolete header line folding");
    return parse_header(p, line);
  case PARSE_CHUNK_SIZE:
    return parse_chunk_size(p, line);
  case PARSE_CHUNK_END:
    if (*line)
      return parse_error(p, "%s", "chunk data longer than its size");
    p->state = PARSE_CHUNK_SIZE;
    return 0;
  case PARSE_TRAILERS:
    if (!*line) {
      p->state = PARSE_DONE;
      return 1;
    }
    return 0;
  default:
    return 0;
  }
}

static bool in_line_state(const struct agent_http_response *p) {
  return p->state == PARSE_STATUS || p->state == PARSE_HEADERS || p->state == PARSE_CHUNK_SIZE ||
         p->state == PARSE_CHUNK_END || p->state == PARSE_TRAILERS;
}

int agent_http_response_feed(struct agent_http_response *p, const char *data, size_t n) {
  int r;

  p->received += n;
  while (n > 0 && p->state != PARSE_DONE) {
    if (in_line_state(p)) {
      const char *nl = memchr(data, '\n', n);
      size_t take = nl ? (size_t)(nl - data) : n;

      if (!p->headers_done) {
        p->header_bytes += take + (nl ? 1 : 0);
        if (p->header_bytes > AGENT_HTTP_HEADERS_MAX)
          return parse_error(p, "%s", "response headers longer than 64 KiB");
      } else {
        p->framing_bytes += take + (nl ? 1 : 0);
        if (p->framing_bytes > HTTP_FRAMING_MAX)
          return parse_error(p, "%s", "chunk framing and trailers longer than 1 MiB");
      }
      size_t room = sizeof(p->line) - 1 - p->line_len;
      if (take > room)
        p->line_cut = true;
      memcpy(p->line + p->line_len, data, MST_MIN(take, room));
      p->line_len += MST_MIN(take, room);
      data += take;
      n -= take;
      if (!nl)
        continue;
      data++;
      n--;
      if (p->line_len > 0 && p->line[p->line_len - 1] == '\r')
        p->line_len--;
      p->line[p->line_len] = '\0';
      for (size_t i = 0; i < p->line_len; i++)
        if (p->line[i] == '\0')
          return parse_error(p, "%s", "a NUL byte in the response head");
      r = line_done(p, p->line);
      p->line_len = 0;
      p->line_cut = false;
      if (r != 0)
        return r;
      continue;
    }

    /* Body bytes: PARSE_BODY or PARSE_CHUNK_DATA. */
    size_t take = n;
    if (p->state == PARSE_CHUNK_DATA || p->has_length)
      take = (size_t)MST_MIN((uint64_t)n, p->remaining);
    r = body_feed(p, data, take);
    if (r < 0)
      return r;
    data += take;
    n -= take;
    if (r > 0) {
      p->state = PARSE_DONE;
      return 1;
    }
    if (p->state == PARSE_CHUNK_DATA || p->has_length) {
      p->remaining -= take;
      if (p->remaining == 0) {
        if (p->state == PARSE_CHUNK_DATA) {
          p->state = PARSE_CHUNK_END;
        } else {
          p->state = PARSE_DONE;
          return 1;
        }
      }
    }
  }
  return p->state == PARSE_DONE ? 1 : 0;
}

int agent_http_response_eof(struct agent_http_response *p) {
  switch (p->state) {
  case PARSE_DONE:
    return 1;
  case PARSE_BODY:
    if (!p->has_length) {
      p->state = PARSE_DONE;
      return 1;
    }
    snprintf(p->error, sizeof(p->error),
             "connection closed with %llu bytes of the body still to come",
             (unsigned long long)p->remaining);
    return -EBADMSG;
  case PARSE_TRAILERS:
    /* The last chunk came; the trailers' end is a formality. */
    p->state = PARSE_DONE;
    return 1;
  case PARSE_STATUS:
    if (p->received == 0) {
      snprintf(p->error, sizeof(p->error), "empty reply from server");
      return -EBADMSG;
    }
    /* fall through */
  default:
    snprintf(p->error, sizeof(p->error), "connection closed before the response was complete");
    return -EBADMSG;
  }
}
