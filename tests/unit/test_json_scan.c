/* Unit tests for agentd/json_scan.c, which finds one string member of a JSON
 * object in a prefix of the document (the Mesos id in the first bytes of a
 * Mesos state), and for dcos_facts.c's check of what it finds: one table
 * row per document, each also cut at every length (a cut document must
 * never yield a wrong answer, only "not yet" or the right one). Links
 * agent_core. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dcos_facts.h"
#include "json_scan.h"
#include "mst/macro.h"

struct row {
  const char *doc, *key;
  int r;            /* what the whole document gives */
  const char *want; /* the value when r == 1 */
};

static const struct row rows[] = {
    {"{\"id\":\"abc-S1\"}", "id", 1, "abc-S1"},
    {" \n{ \"version\" : \"1.12.0\", \"id\" : \"m-1\" , \"pid\":\"x\"}", "id", 1, "m-1"},
    /* Values before it are skipped, whatever they hold. */
    {"{\"a\":{\"id\":\"inner\",\"b\":[1,{\"c\":\"}]\\\"\"}]},\"n\":-1.5e3,\"t\":true,"
     "\"z\":null,\"id\":\"outer\"}",
     "id", 1, "outer"},
    {"{\"s\":\"\\\"id\\\":\\\"no\\\"\",\"id\":\"yes\"}", "id", 1, "yes"},
    /* Escapes are decoded, in the name and the value. */
    {"{\"\\u0069d\":\"a\\u00e9\\ud83d\\ude00\\n\\/\"}", "id", 1, "a\xc3\xa9\xf0\x9f\x98\x80\n/"},
    {"{\"idx\":\"no\",\"i\":\"no\"}", "id", -ENOENT, NULL},
    {"{}", "id", -ENOENT, NULL},
    {"[\"id\"]", "id", -EBADMSG, NULL},
    {"\"id\"", "id", -EBADMSG, NULL},
    {"{\"id\":5}", "id", -EBADMSG, NULL},
    {"{\"id\":null}", "id", -EBADMSG, NULL},
    {"{\"a\" 1}", "id", -EBADMSG, NULL},
    {"{\"a\":1,}", "id", -EBADMSG, NULL},
    {"{\"a\":1 \"id\":\"x\"}", "id", -EBADMSG, NULL},
    {"{\"a\":]}", "id", -EBADMSG, NULL},
    {"{\"id\":\"a\\u0000b\"}", "id", -EBADMSG, NULL},
    {"{\"id\":\"a\\ud800\"}", "id", -EBADMSG, NULL},
    {"{\"id\":\"a\\udc00\"}", "id", -EBADMSG, NULL},
    {"{\"id\":\"a\\x\"}", "id", -EBADMSG, NULL},
    {"{\"id\":\"a\nb\"}", "id", -EBADMSG, NULL},
    {"", "id", -EAGAIN, NULL},
    {"{\"frameworks\":[{\"name\":\"a\"},{\"name\":\"b\"", "id", -EAGAIN, NULL},
};

static int find(const char *doc, size_t len, const char *key, char **ret) {
  char err[128] = "";
  int r = agent_json_find_string(doc, len, key, ret, err, sizeof(err));
  if (r == -EBADMSG)
    cr_expect(err[0], "an error without a reason for %s", doc);
  return r;
}

Test(json_scan, table) {
  for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
    const struct row *t = &rows[i];
    char *v = NULL;
    int r = find(t->doc, strlen(t->doc), t->key, &v);
    cr_expect_eq(r, t->r, "%s: %d, want %d", t->doc, r, t->r);
    if (r == 1 && t->want)
      cr_expect_str_eq(v, t->want, "%s", t->doc);
    free(v);
  }
}

/* A prefix answers "not yet" or exactly what the whole does: never another
 * value, never "not there" for a member further on. */
Test(json_scan, every_prefix) {
  for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
    const struct row *t = &rows[i];
    size_t n = strlen(t->doc);
    for (size_t cut = 0; cut < n; cut++) {
      char *copy = strndup(t->doc, cut), *v = NULL;
      int r = find(copy, cut, t->key, &v);
      cr_expect(r == -EAGAIN || r == t->r, "%s cut at %zu: %d", t->doc, cut, r);
      if (r == 1)
        cr_expect_str_eq(v, t->want, "%s cut at %zu", t->doc, cut);
      free(v);
      free(copy);
    }
  }
}

Test(json_scan, deep_nesting_costs_no_stack) {
  size_t depth = 1000000;
  char *doc = malloc(2 * depth + 32);
  size_t n = 0;
  n += (size_t)sprintf(doc, "{\"a\":");
  memset(doc + n, '[', depth);
  n += depth;
  memset(doc + n, ']', depth);
  n += depth;
  n += (size_t)sprintf(doc + n, ",\"id\":\"deep\"}");
  char *v = NULL;
  cr_expect_eq(find(doc, n, "id", &v), 1);
  cr_expect_str_eq(v, "deep");
  free(v);
  free(doc);
}

Test(json_scan, mesos_id_parse) {
  char err[256], *id = NULL;
  const char *ok = "{\"version\":\"1.12.0\",\"id\":\"0cf6-S1\",\"pid\":\"slave(1)@10.0.0.5:5051\"";
  cr_expect_eq(agent_mesos_id_parse(ok, strlen(ok), &id, err, sizeof(err)), 0);
  cr_expect_str_eq(id, "0cf6-S1");
  free(id);
  const char *none = "{\"version\":\"1.12.0\",\"pid\":\"slave(1)@10.0.0.5:5051\"}";
  cr_expect_eq(agent_mesos_id_parse(none, strlen(none), &id, err, sizeof(err)), -ENOENT);
  cr_expect(strstr(err, "has not registered"), "%s", err);
  const char *cut = "{\"version\":\"1.12.0\",\"frameworks\":[";
  cr_expect_eq(agent_mesos_id_parse(cut, strlen(cut), &id, err, sizeof(err)), -EBADMSG);
  cr_expect(strstr(err, "first 65536 bytes"), "%s", err);
  const char *spaced = "{\"id\":\"a b\"}";
  cr_expect_eq(agent_mesos_id_parse(spaced, strlen(spaced), &id, err, sizeof(err)), -EBADMSG);
  char long_id[200];
  snprintf(long_id, sizeof(long_id), "{\"id\":\"%0129d\"}", 0);
  cr_expect_eq(agent_mesos_id_parse(long_id, strlen(long_id), &id, err, sizeof(err)), -EBADMSG);
}
