/* UTF-8 validation, following the well-formed byte sequences of Unicode's
 * table 3-7: overlong encodings, surrogates and values past U+10FFFF are
 * refused. */
#include <stdint.h>

#include "mst/utf8.h"

bool mst_utf8_valid(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  if (!p)
    return true;
  while (*p) {
    unsigned char c = *p;
    int n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
      p++;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF)
      n = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0)
        lo = 0xA0;
      else if (c == 0xED)
        hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0)
        lo = 0x90;
      else if (c == 0xF4)
        hi = 0x8F;
    } else
      return false;
    p++;
    for (int i = 0; i < n; i++, p++) {
      unsigned char lo_i = i == 0 ? lo : 0x80, hi_i = i == 0 ? hi : 0xBF;
      if (*p < lo_i || *p > hi_i)
        return false;
    }
  }
  return true;
}
