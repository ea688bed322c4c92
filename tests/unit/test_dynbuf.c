/* Unit tests for mst_dynbuf (growth, the hard cap, and the failure contract:
 * a failed append frees the buffer and the error sticks until a reset) and
 * for mst_array_append. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "mst/dynbuf.h"

Test(dynbuf, grows_and_stays_terminated) {
  struct mst_dynbuf b = MST_DYNBUF_INIT(1 << 20);
  char *s;
  size_t len;

  cr_assert_null(b.buf);
  for (int i = 0; i < 1000; i++)
    cr_assert_eq(mst_dynbuf_addf(&b, "%d,", i % 10), 0);
  cr_assert_eq(b.len, 2000);
  cr_assert_eq(strlen(b.buf), 2000);
  cr_assert(b.cap > b.len);
  cr_assert_eq(mst_dynbuf_adds(&b, "end"), 0);
  cr_assert_eq(mst_dynbuf_addc(&b, '!'), 0);
  cr_assert_eq(mst_dynbuf_add(&b, "", 0), 0);
  cr_assert_eq(mst_dynbuf_take(&b, &s, &len), 0);
  cr_assert_eq(len, 2004);
  cr_assert_str_eq(s + 1998, "9,end!");
  cr_assert_null(b.buf);
  cr_assert_eq(b.len, 0);
  cr_assert_eq(b.max, 1 << 20, "take keeps the cap");
  free(s);
}

Test(dynbuf, take_of_empty_gives_empty_string) {
  struct mst_dynbuf b;
  char *s = NULL;
  size_t len = 99;

  mst_dynbuf_init(&b, 16);
  cr_assert_eq(mst_dynbuf_take(&b, &s, &len), 0);
  cr_assert_str_eq(s, "");
  cr_assert_eq(len, 0);
  free(s);
}

Test(dynbuf, reserve_and_commit) {
  struct mst_dynbuf b = MST_DYNBUF_INIT(64);
  char *p = mst_dynbuf_reserve(&b, 10);

  cr_assert_not_null(p);
  memcpy(p, "abc", 3);
  mst_dynbuf_commit(&b, 3);
  cr_assert_str_eq(b.buf, "abc");
  cr_assert_null(mst_dynbuf_reserve(&b, 62), "3 + 62 passes the cap");
  cr_assert_eq(b.error, -EMSGSIZE);
  mst_dynbuf_reset(&b);
}

/* Each way to append, driven to the cap: the one that would pass it fails
 * with -EMSGSIZE, and the buffer is then freed and stays failed. */
Test(dynbuf, cap_is_hard_and_failure_sticks) {
  static const struct {
    const char *what;
    size_t fill; /* bytes added before the one that fails */
  } cases[] = {{"add", 8}, {"addf", 7}, {"addc", 8}, {"adds", 5}};

  for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
    struct mst_dynbuf b = MST_DYNBUF_INIT(8);
    char *s = NULL;
    size_t len = 0;
    int r;

    cr_assert_eq(mst_dynbuf_add(&b, "xxxxxxxx", cases[i].fill), 0, "%s", cases[i].what);
    if (strcmp(cases[i].what, "add") == 0)
      r = mst_dynbuf_add(&b, "y", 1);
    else if (strcmp(cases[i].what, "addf") == 0)
      r = mst_dynbuf_addf(&b, "%s", "yz");
    else if (strcmp(cases[i].what, "addc") == 0)
      r = mst_dynbuf_addc(&b, 'y');
    else
      r = mst_dynbuf_adds(&b, "yyyy");
    cr_expect_eq(r, -EMSGSIZE, "%s", cases[i].what);
    cr_expect_null(b.buf, "%s: freed on failure", cases[i].what);
    cr_expect_eq(b.len, 0, "%s", cases[i].what);
    cr_expect_eq(b.cap, 0, "%s", cases[i].what);
    /* Sticky: even what would fit now fails, and nothing is handed over. */
    cr_expect_eq(mst_dynbuf_addc(&b, 'a'), -EMSGSIZE, "%s", cases[i].what);
    cr_expect_eq(mst_dynbuf_addf(&b, "a"), -EMSGSIZE, "%s", cases[i].what);
    cr_expect_null(mst_dynbuf_reserve(&b, 1), "%s", cases[i].what);
    cr_expect_null(b.buf, "%s", cases[i].what);
    cr_expect_eq(mst_dynbuf_take(&b, &s, &len), -EMSGSIZE, "%s", cases[i].what);
    cr_expect_null(s, "%s", cases[i].what);
    /* A reset clears the error and keeps the cap. */
    mst_dynbuf_reset(&b);
    cr_expect_eq(b.error, 0);
    cr_expect_eq(b.max, 8);
    cr_expect_eq(mst_dynbuf_adds(&b, "12345678"), 0, "%s", cases[i].what);
    cr_expect_str_eq(b.buf, "12345678");
    cr_expect_leq(b.cap, 9, "%s: never allocates past the cap", cases[i].what);
    mst_dynbuf_reset(&b);
  }
}

Test(dynbuf, exactly_at_the_cap) {
  struct mst_dynbuf b = MST_DYNBUF_INIT(300);
  for (int i = 0; i < 30; i++)
    cr_assert_eq(mst_dynbuf_addf(&b, "%09d,", i), 0);
  cr_assert_eq(b.len, 300);
  cr_assert_eq(mst_dynbuf_add(&b, "", 0), 0, "adding nothing at the cap is fine");
  cr_assert_eq(mst_dynbuf_addc(&b, 'x'), -EMSGSIZE);
  mst_dynbuf_reset(&b);
}

Test(array, append_grows_by_one_zeroed) {
  struct item {
    int a;
    char *s;
  } *v = NULL;
  size_t n = 0;

  for (int i = 0; i < 100; i++) {
    struct item *e = MST_ARRAY_APPEND(v, n);
    cr_assert_not_null(e);
    cr_assert_eq(e, &v[n]);
    cr_assert_eq(e->a, 0);
    cr_assert_null(e->s);
    e->a = i;
    n++;
  }
  for (int i = 0; i < 100; i++)
    cr_assert_eq(v[i].a, i);
  free(v);
}

Test(array, append_refuses_overflow) {
  void *v = NULL;
  cr_assert_null(mst_array_append(&v, SIZE_MAX / 8, 16));
  cr_assert_null(v, "unchanged");
  cr_assert_null(mst_array_append(&v, 0, 0));
}
