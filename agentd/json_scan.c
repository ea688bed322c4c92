/* One string member of a JSON object, from a prefix of the document: see
 * json_scan.h.
 *
 * Why not jansson, which the daemons link: it parses whole documents, and
 * the Mesos state is kept only up to its first 64 KiB (its "id" comes
 * early; the tasks that make it large come after). This reads the
 * top-level object member by member and skips each value it does not want
 * by counting brackets outside strings. Skipped scalars are not checked
 * (a number is whatever runs to the next delimiter): the member asked for
 * is checked in full, and nothing else of the document is used. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_scan.h"
#include "mst/macro.h"
#include "util.h"

struct scan {
  const char *s;
  size_t len, at;
  char *err;
  size_t errsize;
};

/* The text ended: the member may be further on. */
#define SCAN_MORE (-EAGAIN)

static int scan_bad(struct scan *sc, const char *what) {
  snprintf(sc->err, sc->errsize, "%s at byte %zu", what, sc->at);
  return -EBADMSG;
}

static void skip_space(struct scan *sc) {
  while (sc->at < sc->len && strchr(" \t\r\n", sc->s[sc->at]) && sc->s[sc->at])
    sc->at++;
}

static int hex4(const char *p, uint32_t *ret) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    int d = agent_hex_digit(p[i]);
    if (d < 0)
      return -EBADMSG;
    v = v << 4 | (uint32_t)d;
  }
  *ret = v;
  return 0;
}

static size_t utf8_put(char *out, uint32_t cp) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xe0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  out[0] = (char)(0xf0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  out[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* The escape at sc->at (just past the backslash): its text goes to out
 * (when not NULL) and *n is how many bytes it wrote. */
static int scan_escape(struct scan *sc, char *out, size_t *n) {
  static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
  char e;
  uint32_t cp, low;

  if (sc->at >= sc->len)
    return SCAN_MORE;
  e = sc->s[sc->at];
  const char *k = e ? strchr(from, e) : NULL;
  if (k) {
    if (out)
      out[0] = to[k - from];
    *n = 1;
    sc->at++;
    return 0;
  }
  if (e != 'u')
    return scan_bad(sc, "an unknown escape");
  if (sc->at + 5 > sc->len)
    return SCAN_MORE;
  if (hex4(sc->s + sc->at + 1, &cp) < 0)
    return scan_bad(sc, "a bad \\u escape");
  sc->at += 5;
  if (cp >= 0xdc00 && cp <= 0xdfff)
    return scan_bad(sc, "a lone low surrogate");
  if (cp >= 0xd800 && cp <= 0xdbff) {
    /* What is there already may show that no low half follows. */
    const char *lone = "a high surrogate without its low half";
    if ((sc->at < sc->len && sc->s[sc->at] != '\\') ||
        (sc->at + 1 < sc->len && sc->s[sc->at + 1] != 'u'))
      return scan_bad(sc, lone);
    if (sc->at + 6 > sc->len)
      return SCAN_MORE;
    if (hex4(sc->s + sc->at + 2, &low) < 0 || low < 0xdc00 || low > 0xdfff)
      return scan_bad(sc, lone);
    sc->at += 6;
    cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
  }
  if (cp == 0)
    return scan_bad(sc, "a NUL in a string");
  char buf[4];
  *n = utf8_put(out ? out : buf, cp);
  return 0;
}

/* The string at sc->at (its opening quote). With ret, its decoded text is
 * malloc'd there; without, it is only skipped. */
static int scan_string(struct scan *sc, char **ret) {
  _cleanup_free_ char *out = NULL;
  size_t n = 0;
  int r;

  sc->at++; /* the quote */
  /* Decoding never makes a string longer than its JSON text. */
  if (ret && !(out = malloc(sc->len - sc->at + 1)))
    return -ENOMEM;
  for (;;) {
    if (sc->at >= sc->len)
      return SCAN_MORE;
    unsigned char c = (unsigned char)sc->s[sc->at];
    if (c == '"')
      break;
    if (c < 0x20)
      return scan_bad(sc, c ? "a control character in a string" : "a NUL in a string");
    if (c == '\\') {
      size_t w = 0;
      sc->at++;
      r = scan_escape(sc, out ? out + n : NULL, &w);
      if (r < 0)
        return r;
      n += w;
      continue;
    }
    if (out)
      out[n] = (char)c;
    n++;
    sc->at++;
  }
  sc->at++; /* the closing quote */
  if (ret) {
    out[n] = '\0';
    *ret = TAKE_PTR(out);
  }
  return 0;
}

/* Skips the value at sc->at: a string, a nested object or array (brackets
 * counted outside strings), or a scalar up to the next delimiter. */
static int skip_value(struct scan *sc) {
  size_t depth = 0;
  int r;

  do {
    if (sc->at >= sc->len)
      return SCAN_MORE;
    char c = sc->s[sc->at];
    if (c == '"') {
      r = scan_string(sc, NULL);
      if (r < 0)
        return r;
    } else if (c == '{' || c == '[') {
      depth++;
      sc->at++;
    } else if (c == '}' || c == ']') {
      if (depth == 0)
        return scan_bad(sc, "a value missing");
      depth--;
      sc->at++;
    } else if (depth > 0 && (strchr(" \t\r\n,:", c) && c)) {
      sc->at++;
    } else {
      size_t start = sc->at;
      while (sc->at < sc->len && !strchr(" \t\r\n,:{}[]\"", sc->s[sc->at]) && sc->s[sc->at])
        sc->at++;
      if (sc->at == start)
        return scan_bad(sc, "an unexpected character");
      if (sc->at >= sc->len)
        return SCAN_MORE; /* a scalar may go on */
    }
  } while (depth > 0);
  return 0;
}

/* Skips white space: *ret is the next character, or SCAN_MORE at the end. */
static int next_char(struct scan *sc, char *ret) {
  skip_space(sc);
  if (sc->at >= sc->len)
    return SCAN_MORE;
  *ret = sc->s[sc->at];
  return 0;
}

int agent_json_find_string(const char *text, size_t len, const char *key, char **ret, char *err,
                           size_t errsize) {
  struct scan sc = {.s = text, .len = len, .err = err, .errsize = errsize};
  char c;
  int r;

  if ((r = next_char(&sc, &c)) < 0)
    return r;
  if (c != '{')
    return scan_bad(&sc, "not a JSON object");
  sc.at++;
  for (bool first = true;; first = false) {
    if ((r = next_char(&sc, &c)) < 0)
      return r;
    if (c == '}')
      return first ? -ENOENT : scan_bad(&sc, "a ',' before '}'");
    if (c != '"')
      return scan_bad(&sc, "a member name missing");
    _cleanup_free_ char *name = NULL;
    if ((r = scan_string(&sc, &name)) < 0 || (r = next_char(&sc, &c)) < 0)
      return r;
    if (c != ':')
      return scan_bad(&sc, "a ':' missing");
    sc.at++;
    if ((r = next_char(&sc, &c)) < 0)
      return r;
    if (strcmp(name, key) == 0) {
      if (c != '"') {
        snprintf(err, errsize, "\"%s\" is not a string", key);
        return -EBADMSG;
      }
      r = scan_string(&sc, ret);
      return r < 0 ? r : 1;
    }
    if ((r = skip_value(&sc)) < 0 || (r = next_char(&sc, &c)) < 0)
      return r;
    if (c == '}')
      return -ENOENT;
    if (c != ',')
      return scan_bad(&sc, "a ',' or '}' missing");
    sc.at++;
  }
}
