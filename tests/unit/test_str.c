/* Unit tests for mst/str.h: the NULL-aware comparison, replacing an owned
 * string, and finding a name in a table. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>

#include "mst/macro.h"
#include "mst/str.h"

Test(str, eq_treats_null_as_its_own_value) {
  static const struct {
    const char *a, *b;
    bool want;
  } cases[] = {
      {NULL, NULL, true}, {NULL, "", false}, {"", NULL, false},
      {"", "", true},     {"a", "a", true},  {"a", "b", false},
  };
  for (size_t i = 0; i < ELEMENTSOF(cases); i++)
    cr_assert_eq(mst_str_eq(cases[i].a, cases[i].b), cases[i].want, "case %zu", i);
}

Test(str, replace_copies_and_frees) {
  char *field = NULL;
  cr_assert_eq(mst_str_replace(&field, "one"), 0);
  cr_assert_str_eq(field, "one");

  const char *before = field;
  cr_assert_eq(mst_str_replace(&field, "one"), 0);
  cr_assert_eq(field, before, "an equal value keeps the string");

  char value[] = "two";
  cr_assert_eq(mst_str_replace(&field, value), 0);
  value[0] = 'x';
  cr_assert_str_eq(field, "two", "the field owns a copy");

  cr_assert_eq(mst_str_replace(&field, NULL), 0);
  cr_assert_null(field);
  cr_assert_eq(mst_str_replace(&field, NULL), 0);
  cr_assert_null(field);
}

Test(str, table_find) {
  static const char *const table[] = {"zero", NULL, "two", "three"};
  cr_assert_eq(mst_str_table_find(table, ELEMENTSOF(table), "zero"), 0);
  cr_assert_eq(mst_str_table_find(table, ELEMENTSOF(table), "three"), 3);
  cr_assert_eq(mst_str_table_find(table, ELEMENTSOF(table), "one"), -EINVAL);
  cr_assert_eq(mst_str_table_find(table, ELEMENTSOF(table), "Two"), -EINVAL);
  cr_assert_eq(mst_str_table_find(table, ELEMENTSOF(table), NULL), -EINVAL);
  cr_assert_eq(mst_str_table_find(table, 2, "two"), -EINVAL, "only the first n names");
}
