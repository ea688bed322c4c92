/* Unit tests for mst_utf8_valid: well-formed text passes, and each kind of
 * ill-formed sequence is refused. */
#include <criterion/criterion.h>

#include "mst/utf8.h"

Test(utf8, accepts_well_formed) {
  static const char *const ok[] = {"",
                                   "plain ascii",
                                   "caf\xc3\xa9",
                                   "\xe2\x82\xac 5",
                                   "\xf0\x9f\x98\x80",
                                   "\xed\x9f\xbf",
                                   "\xf4\x8f\xbf\xbf"};
  for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
    cr_expect(mst_utf8_valid(ok[i]), "case %zu", i);
  cr_expect(mst_utf8_valid(NULL));
}

Test(utf8, refuses_ill_formed) {
  static const char *const bad[] = {
      "\x80",             /* lone continuation */
      "\xc0\xaf",         /* overlong '/' */
      "\xc3",             /* truncated */
      "\xe0\x80\xaf",     /* overlong 3-byte */
      "\xed\xa0\x80",     /* surrogate */
      "\xf4\x90\x80\x80", /* past U+10FFFF */
      "\xf5\x80\x80\x80", /* invalid lead */
      "ok\xff",           /* invalid byte at the end */
      "\xe2\x82",         /* truncated 3-byte */
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    cr_expect(!mst_utf8_valid(bad[i]), "case %zu", i);
}
