/* UTF-8 decoding, validation, cutting and cleaning, all on one decoder
 * (mst_utf8_char_len), so that what the agent cleans is exactly what the
 * aggregator accepts and what the JSON writer passes through. See
 * mst/utf8.h. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mst/macro.h"
#include "mst/utf8.h"

size_t mst_utf8_char_len(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  unsigned char c = p[0];
  size_t len;
  uint32_t cp;

  if (c < 0x80)
    return 1;
  if (c >= 0xC2 && c <= 0xDF)
    len = 2, cp = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF)
    len = 3, cp = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4)
    len = 4, cp = c & 0x07;
  else
    return 0; /* a continuation byte, an overlong lead (C0, C1) or past U+10FFFF */
  if (n < len)
    return 0;
  /* Byte by byte, so that a NUL ends the sequence before anything past it
   * is read: mst_utf8_valid() relies on that. */
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xC0) != 0x80)
      return 0;
    cp = cp << 6 | (p[i] & 0x3F);
  }
  if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)))
    return 0;
  if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))
    return 0;
  return len;
}

bool mst_utf8_valid(const char *s) {
  const unsigned char *p = (const unsigned char *)s;

  if (!p)
    return true;
  for (;;) {
    /* Names and outputs are almost always ASCII: a plain loop passes it. */
    while (*p && *p < 0x80)
      p++;
    if (!*p)
      return true;
    /* At most 4 bytes are looked at, and the NUL stops the decoder. */
    size_t len = mst_utf8_char_len((const char *)p, 4);
    if (len == 0)
      return false;
    p += len;
  }
}

size_t mst_utf8_cut(const char *s, size_t len, size_t max) {
  if (len <= max)
    return len;
  /* s[max] is the first byte dropped: back up while it continues a
   * character that starts before it. */
  while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
    max--;
  return max;
}

size_t mst_utf8_truncate(char *dst, const char *src, size_t max, const char *mark) {
  size_t len = strlen(src);
  size_t mark_len = mark ? strlen(mark) : 0;

  if (len <= max) {
    memmove(dst, src, len + 1);
    return len;
  }
  if (max < mark_len) {
    dst[0] = '\0';
    return 0;
  }
  len = mst_utf8_cut(src, len, max - mark_len);
  memmove(dst, src, len);
  memcpy(dst + len, mark ? mark : "", mark_len + 1);
  return len + mark_len;
}

char *mst_utf8_clean(const char *s, size_t n, size_t max, const char *mark, bool cut) {
  size_t mark_len = mark ? strlen(mark) : 0;
  char *out = malloc(MST_MIN(n, max) + mark_len + 1);
  size_t o = 0, i = 0;

  if (!out)
    return NULL;
  while (i < n) {
    const unsigned char *p = (const unsigned char *)s + i;
    size_t len = mst_utf8_char_len((const char *)p, n - i);

    if (o + MST_MAX(len, (size_t)1) > max) {
      cut = true;
      break;
    }
    if (len == 0) {
      out[o++] = '?';
      i++;
    } else if (len == 1) {
      out[o++] = (*p < 0x20 || *p == 0x7F) ? ' ' : (char)*p;
      i++;
    } else {
      memcpy(out + o, p, len);
      o += len;
      i += len;
    }
  }
  if (cut && mark) {
    memcpy(out + o, mark, mark_len);
    o += mark_len;
  }
  out[o] = '\0';
  return out;
}
