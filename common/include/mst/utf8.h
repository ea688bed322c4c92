/* UTF-8: the one decoder every side of muster uses. protobuf's proto3
 * strings must be valid UTF-8 and every JSON body muster serves must be, so
 * the aggregator refuses frames whose strings are not (mst_utf8_valid), the
 * agent makes what it reports printable UTF-8 before sending it
 * (mst_utf8_clean), both cut text only on a character boundary
 * (mst_utf8_cut, mst_utf8_truncate), and the JSON writer replaces what does
 * not decode (mst_utf8_char_len). One decoder means the agent can never
 * send what the aggregator refuses; tests/unit/test_utf8.c checks that.
 *
 * Well-formed follows Unicode's table 3-7 (RFC 3629): no overlong forms, no
 * surrogates, nothing past U+10FFFF. Pure functions: any thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* The length (1 to 4) of the well-formed character at s, which has n > 0
 * bytes left; 0 when the bytes there are not one. */
size_t mst_utf8_char_len(const char *s, size_t n);

/* True when s (NUL-terminated; NULL counts as valid) is well-formed UTF-8.
 * Control characters are valid: callers that care escape them. */
bool mst_utf8_valid(const char *s);

/* How many of the first len bytes of s to keep so that at most max remain,
 * cut back to the start of a character: len when it is not over max. s is
 * valid UTF-8 (a cut through ill-formed bytes is only kept within max). */
size_t mst_utf8_cut(const char *s, size_t len, size_t max);

/* Copies the NUL-terminated src into dst, at most max bytes plus the NUL:
 * when src is longer it is cut on a character boundary and mark (NULL for
 * none) is appended within the max; when even mark does not fit, dst is
 * empty. dst has room for min(strlen(src), max) + 1 bytes and may be src
 * (to cut in place). Returns the length written. */
size_t mst_utf8_truncate(char *dst, const char *src, size_t max, const char *mark);

/* Copies s[0..n) (any bytes, NULs included) as printable UTF-8: each byte
 * that does not start a well-formed character becomes '?', and each C0
 * control character and DEL a space, so the result has no control
 * characters. At most max bytes of text are kept, cut on a character
 * boundary; mark (NULL for none) is appended after them when the text was
 * cut, or when cut says it was already. Returns a malloc'd string that the
 * caller frees, or NULL when out of memory. */
char *mst_utf8_clean(const char *s, size_t n, size_t max, const char *mark, bool cut);
