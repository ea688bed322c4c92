/* Unit tests for mst/utf8.h: the decoder against every code point and every
 * short byte sequence, validation, cutting on a character boundary, and the
 * property that issue 15 asks for: whatever the agent's cleaner and cutter
 * make of any bytes, the aggregator's own checks (aggr_decoder_decode and
 * aggr_envelope_check, the code conn.c runs) accept it. The agent's steps
 * are the ones agentd/probe/probe.c and agentd/stream.c take: clean the
 * output (mst_utf8_clean, capped at AGENT_OUTPUT_MAX with the mark), clean
 * it again (agent_probe_done), and cut it to fit a frame
 * (mst_utf8_truncate). */
#include <criterion/criterion.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "component.h"
#include "ingest/envelope.h"
#include "mst/frame.h"
#include "mst/macro.h"
#include "mst/utf8.h"

#define MARK     AGENT_TRUNCATED_MARK
#define MARK_LEN (sizeof(AGENT_TRUNCATED_MARK) - 1)

Test(utf8, accepts_well_formed) {
  static const char *const ok[] = {"",
                                   "plain ascii",
                                   "caf\xc3\xa9",
                                   "\xe2\x82\xac 5",
                                   "\xf0\x9f\x98\x80",
                                   "\xed\x9f\xbf",
                                   "\xf4\x8f\xbf\xbf",
                                   "ctl\x01\x1f\x7f"};
  for (size_t i = 0; i < ELEMENTSOF(ok); i++)
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
      "\xf0\x80\x80\x80", /* overlong 4-byte */
      "a\xe2\x82z",       /* truncated in the middle */
  };
  for (size_t i = 0; i < ELEMENTSOF(bad); i++)
    cr_expect(!mst_utf8_valid(bad[i]), "case %zu", i);
}

/* Encodes cp the plain way, whatever it is (surrogates and all). */
static size_t encode(uint32_t cp, char *out) {
  unsigned char *o = (unsigned char *)out;
  if (cp < 0x80) {
    o[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (unsigned char)(0xC0 | cp >> 6);
    o[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (unsigned char)(0xE0 | cp >> 12);
    o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (unsigned char)(0xF0 | cp >> 18);
  o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
  o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
  o[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

Test(utf8, decodes_every_code_point) {
  char buf[5];
  for (uint32_t cp = 1; cp <= 0x10FFFF; cp++) {
    size_t n = encode(cp, buf);
    bool surrogate = cp >= 0xD800 && cp <= 0xDFFF;
    buf[n] = '\0';
    cr_assert_eq(mst_utf8_char_len(buf, n), surrogate ? 0 : n, "U+%04X", (unsigned)cp);
    cr_assert_eq(mst_utf8_valid(buf), !surrogate, "U+%04X", (unsigned)cp);
    /* One byte short is never a character. */
    if (n > 1)
      cr_assert_eq(mst_utf8_char_len(buf, n - 1), 0, "U+%04X cut", (unsigned)cp);
  }
}

/* Every 2- and 3-byte sequence: exactly the shortest forms of the code
 * points in their range are accepted, and no more. */
Test(utf8, accepts_only_shortest_forms) {
  unsigned char b[4] = {0};
  size_t two = 0, three = 0;
  for (unsigned x = 0x80; x <= 0xFF; x++)
    for (unsigned y = 0; y <= 0xFF; y++) {
      b[0] = (unsigned char)x, b[1] = (unsigned char)y, b[2] = 0;
      two += mst_utf8_char_len((const char *)b, 2) == 2;
      for (unsigned z = 0x80; z <= 0xBF; z++) {
        b[2] = (unsigned char)z;
        three += mst_utf8_char_len((const char *)b, 3) == 3;
      }
    }
  cr_assert_eq(two, 0x800 - 0x80);
  cr_assert_eq(three, 0x10000 - 0x800 - 0x800 /* surrogates */);
}

Test(utf8, cut_backs_up_to_a_character) {
  const char *s = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"; /* a é € 😀: 1+2+3+4 */
  static const size_t want[] = {0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10, 10};
  for (size_t max = 0; max < ELEMENTSOF(want); max++)
    cr_expect_eq(mst_utf8_cut(s, strlen(s), max), want[max], "max %zu", max);
}

Test(utf8, truncate_marks_within_max) {
  char buf[64];
  cr_assert_eq(mst_utf8_truncate(buf, "short", 5, "~"), 5);
  cr_assert_str_eq(buf, "short");
  cr_assert_eq(mst_utf8_truncate(buf, "longer", 5, "~"), 5);
  cr_assert_str_eq(buf, "long~");
  cr_assert_eq(mst_utf8_truncate(buf, "\xc3\xa9\xc3\xa9\xc3\xa9", 4, "~"), 3);
  cr_assert_str_eq(buf, "\xc3\xa9~");
  cr_assert_eq(mst_utf8_truncate(buf, "longer", 0, "~"), 0);
  cr_assert_str_eq(buf, "");
  cr_assert_eq(mst_utf8_truncate(buf, "longer", 3, NULL), 3);
  cr_assert_str_eq(buf, "lon");
  strcpy(buf, "in place");
  cr_assert_eq(mst_utf8_truncate(buf, buf, 4, "~"), 4);
  cr_assert_str_eq(buf, "in ~");
}

Test(utf8, clean_makes_printable_text) {
  static const struct {
    const char *in;
    size_t n;
    size_t max;
    bool cut;
    const char *want;
  } cases[] = {
      {"ok", 2, 10, false, "ok"},
      {"a\0b\tc\x7f", 6, 10, false, "a b c "},
      {"\xc0\xaf\xed\xa0\x80!", 6, 10, false,
       "?????"
       "!"},
      {"caf\xc3\xa9", 5, 10, false, "caf\xc3\xa9"},
      {"caf\xc3\xa9", 4, 10, false, "caf?"},    /* a character cut by the caller */
      {"caf\xc3\xa9", 5, 4, false, "caf" MARK}, /* not split by the cap */
      {"abc", 3, 3, true, "abc" MARK},          /* cut before */
      {"abcd", 4, 2, false, "ab" MARK},
  };
  for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
    _cleanup_free_ char *out =
        mst_utf8_clean(cases[i].in, cases[i].n, cases[i].max, MARK, cases[i].cut);
    cr_assert_str_eq(out, cases[i].want, "case %zu", i);
  }
  _cleanup_free_ char *plain = mst_utf8_clean("abcd", 4, 2, NULL, false);
  cr_assert_str_eq(plain, "ab");
}

/* --- the property: whatever the agent emits, the aggregator accepts ------ */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 11);
}

/* Appends one piece of adversarial input to buf, at most 8 bytes. */
static size_t random_piece(char *buf) {
  static const char *const bad[] = {
      "\xc0\x80",
      "\xc1\xbf",
      "\xe0\x80\x80",
      "\xe0\x9f\xbf",
      "\xed\xa0\x80",
      "\xed\xbf\xbf",
      "\xf0\x80\x80\x80",
      "\xf0\x8f\xbf\xbf",
      "\xf4\x90\x80\x80",
      "\xf7\xbf\xbf\xbf",
      "\xf8\x88\x80\x80",
      "\xfe",
      "\xff",
      "\xe2\x82",
      "\xf0\x9f\x98",
      "\xc3",
  };
  static const uint32_t edges[] = {0x7F,   0x80,   0x7FF,   0x800,    0xD7FF, 0xE000,
                                   0xFFFD, 0xFFFF, 0x10000, 0x10FFFF, 0x2026, 0xFEFF};
  switch (rng() % 8) {
  case 0: /* printable ASCII, the usual case */
    buf[0] = (char)(0x20 + rng() % 0x5F);
    return 1;
  case 1: /* control characters, NUL and DEL */
    buf[0] = (char)(rng() % 3 == 0 ? 0x7F : rng() % 0x20);
    return 1;
  case 2: /* any byte */
    buf[0] = (char)(rng() & 0xFF);
    return 1;
  case 3: /* continuation bytes and leads on their own */
    buf[0] = (char)(0x80 + rng() % 0x80);
    return 1;
  case 4: { /* a well-formed character anywhere in the range */
    uint32_t cp = rng() % 0x110000;
    if (cp >= 0xD800 && cp <= 0xDFFF)
      cp -= 0x800;
    return encode(cp, buf);
  }
  case 5:
    return encode(edges[rng() % ELEMENTSOF(edges)], buf);
  case 6: /* surrogates, overlongs, past U+10FFFF, truncated */
  {
    const char *b = bad[rng() % ELEMENTSOF(bad)];
    memcpy(buf, b, strlen(b));
    return strlen(b);
  }
  default: /* a character with one byte changed */
  {
    size_t n = encode(0x80 + rng() % 0x10FF80, buf);
    buf[rng() % n] = (char)(rng() & 0xFF);
    return n;
  }
  }
}

/* Sends text as the output (and name) of a change and of a snapshot entry,
 * through protobuf and the aggregator's decoder and checks. */
static void assert_aggregator_accepts(const char *component, const char *text) {
  struct aggr_decoder decoder = AGGR_DECODER_INIT;
  Muster__Change ch = MUSTER__CHANGE__INIT;
  Muster__Change *changes[] = {&ch};
  Muster__ChangeBatch batch = MUSTER__CHANGE_BATCH__INIT;
  Muster__ComponentStatus cs = MUSTER__COMPONENT_STATUS__INIT;
  Muster__ComponentStatus *statuses[] = {&cs};
  Muster__Snapshot snap = MUSTER__SNAPSHOT__INIT;
  Muster__Envelope env[2] = {MUSTER__ENVELOPE__INIT, MUSTER__ENVELOPE__INIT};

  ch.seq = 1;
  ch.component = (char *)component;
  ch.to = MUSTER__STATE__STATE_HEALTHY;
  ch.output = (char *)text;
  ch.boot_id = (char *)"b";
  batch.n_changes = 1;
  batch.changes = changes;
  env[0].body_case = MUSTER__ENVELOPE__BODY_CHANGES;
  env[0].changes = &batch;
  cs.component = (char *)component;
  cs.state = MUSTER__STATE__STATE_WARNING;
  cs.output = (char *)text;
  snap.n_components = 1;
  snap.components = statuses;
  env[1].body_case = MUSTER__ENVELOPE__BODY_SNAPSHOT;
  env[1].snapshot = &snap;

  for (size_t i = 0; i < ELEMENTSOF(env); i++) {
    uint8_t buf[16384];
    size_t len = muster__envelope__get_packed_size(&env[i]);
    Muster__Envelope *got = NULL;
    struct aggr_reject rej = {0};

    cr_assert_leq(len, sizeof(buf));
    muster__envelope__pack(&env[i], buf);
    cr_assert_eq(aggr_decoder_decode(&decoder, buf, len, &got, &rej), 0, "%s", rej.reason);
    cr_assert_eq(aggr_envelope_check(got, true, &rej), 0, "refused: %s", rej.reason);
  }
  aggr_decoder_done(&decoder);
}

/* What the agent's cleaner guarantees on top of UTF-8: no control
 * characters (no NUL either, so nothing is lost at the C string) and the cap. */
static void assert_clean(const char *text, size_t max) {
  cr_assert(mst_utf8_valid(text));
  cr_assert_leq(strlen(text), max + MARK_LEN);
  for (const unsigned char *p = (const unsigned char *)text; *p; p++)
    cr_assert(*p >= 0x20 && *p != 0x7F, "control byte 0x%02x", *p);
}

/* The agent's path for one raw output, every string it could send checked. */
static void agent_path(const char *raw, size_t n, bool was_cut) {
  _cleanup_free_ char *text = mst_utf8_clean(raw, n, AGENT_OUTPUT_MAX, MARK, was_cut);
  cr_assert_not_null(text);
  assert_clean(text, AGENT_OUTPUT_MAX);
  _cleanup_free_ char *again = mst_utf8_clean(text, strlen(text), AGENT_OUTPUT_MAX, MARK, false);
  cr_assert_not_null(again);
  assert_clean(again, AGENT_OUTPUT_MAX);
  assert_aggregator_accepts("c", again);

  /* Cut to fit a frame, at a few budgets and right around the length. */
  size_t len = strlen(again);
  size_t budgets[] = {rng() % (len + 1), len > 0 ? len - 1 : 0, rng() % 64, MARK_LEN};
  for (size_t i = 0; i < ELEMENTSOF(budgets); i++) {
    _cleanup_free_ char *cut = strdup(again);
    cr_assert_not_null(cut);
    size_t got = mst_utf8_truncate(cut, cut, budgets[i], MARK);
    cr_assert_eq(got, strlen(cut));
    cr_assert_leq(got, budgets[i]);
    assert_clean(cut, budgets[i]);
    assert_aggregator_accepts("c", cut);
  }
}

Test(utf8, aggregator_accepts_whatever_the_agent_emits) {
  char *raw = malloc(AGENT_OUTPUT_MAX * 2 + 8);
  cr_assert_not_null(raw);
  for (int round = 0; round < 3000; round++) {
    /* Mostly short outputs; some over the cap, to be cut there. */
    size_t target =
        round % 10 == 0 ? AGENT_OUTPUT_MAX - 16 + rng() % AGENT_OUTPUT_MAX : rng() % 200;
    size_t n = 0;
    while (n < target)
      n += random_piece(raw + n);
    agent_path(raw, n, rng() % 4 == 0);
  }
  free(raw);
}

/* A text of 1- to 4-byte characters and adversarial bytes, cleaned from
 * every prefix (cutting sequences anywhere) and cut at every length. */
Test(utf8, aggregator_accepts_every_cut) {
  char raw[600];
  size_t n = 0;
  while (n < sizeof(raw) - 8)
    n += random_piece(raw + n);
  for (size_t len = 0; len <= n; len++)
    agent_path(raw, len, false);

  _cleanup_free_ char *text = mst_utf8_clean(raw, n, AGENT_OUTPUT_MAX, MARK, false);
  for (size_t max = 0; max <= strlen(text) + 1; max++) {
    _cleanup_free_ char *cut = mst_utf8_clean(raw, n, max, MARK, false);
    assert_clean(cut, max);
    assert_aggregator_accepts("c", cut);
    /* Cut on a boundary: what is kept is a prefix of the uncut text. */
    size_t kept = strlen(cut) >= MARK_LEN && strcmp(cut + strlen(cut) - MARK_LEN, MARK) == 0
                      ? strlen(cut) - MARK_LEN
                      : strlen(cut);
    cr_assert(strncmp(cut, text, kept) == 0, "max %zu", max);
  }
}

/* aggr_envelope_check() of a snapshot with one entry. */
static int check_snapshot(const char *component, const char *output, struct aggr_reject *rej) {
  Muster__ComponentStatus cs = MUSTER__COMPONENT_STATUS__INIT;
  Muster__ComponentStatus *statuses[] = {&cs};
  Muster__Snapshot snap = MUSTER__SNAPSHOT__INIT;
  Muster__Envelope env = MUSTER__ENVELOPE__INIT;
  cs.component = (char *)component;
  cs.state = MUSTER__STATE__STATE_HEALTHY;
  cs.output = (char *)output;
  snap.n_components = 1;
  snap.components = statuses;
  env.body_case = MUSTER__ENVELOPE__BODY_SNAPSHOT;
  env.snapshot = &snap;
  return aggr_envelope_check(&env, true, rej);
}

/* The names the profile loader lets through are names the aggregator takes:
 * the loader refuses what is not UTF-8 or longer than the cap. */
Test(utf8, component_name_cap_is_the_aggregators) {
  char name[MST_COMPONENT_NAME_MAX + 2];
  memset(name, 'x', sizeof(name) - 1);
  name[MST_COMPONENT_NAME_MAX] = '\0';
  assert_aggregator_accepts(name, "ok");
  name[MST_COMPONENT_NAME_MAX] = 'x';
  name[MST_COMPONENT_NAME_MAX + 1] = '\0';

  struct aggr_reject rej = {0};
  cr_assert_lt(check_snapshot(name, "", &rej), 0, "one byte over the cap is refused");
}

/* The longest output the agent makes (a cut one: MST_OUTPUT_MAX bytes and
 * the mark) is taken; one byte more, which no agent sends, is refused. */
Test(utf8, output_cap_is_the_aggregators) {
  char *raw = malloc(3 * MST_OUTPUT_MAX);
  cr_assert_not_null(raw);
  memset(raw, 'o', 3 * MST_OUTPUT_MAX);
  _cleanup_free_ char *text =
      mst_utf8_clean(raw, 3 * MST_OUTPUT_MAX, AGENT_OUTPUT_MAX, MARK, false);
  free(raw);
  cr_assert_eq(strlen(text), MST_OUTPUT_WIRE_MAX);
  assert_aggregator_accepts("c", text);

  _cleanup_free_ char *over = malloc(MST_OUTPUT_WIRE_MAX + 2);
  cr_assert_not_null(over);
  memset(over, 'o', MST_OUTPUT_WIRE_MAX + 1);
  over[MST_OUTPUT_WIRE_MAX + 1] = '\0';
  struct aggr_reject rej = {0};
  cr_assert_lt(check_snapshot("c", over, &rej), 0);
  cr_assert(strstr(rej.reason, "output over"), "%s", rej.reason);
}

/* Each text of a Hello is taken at its cap and refused one byte over it,
 * with a reason that names the field. */
Test(utf8, hello_text_caps) {
  static const struct {
    const char *name;
    size_t offset, max;
  } fields[] = {
      {"node_id", offsetof(Muster__Hello, node_id), MST_NODE_ID_MAX},
      {"spool_id", offsetof(Muster__Hello, spool_id), MST_SPOOL_ID_MAX},
      {"hostname", offsetof(Muster__Hello, hostname), MST_HOSTNAME_MAX},
      {"role", offsetof(Muster__Hello, role), MST_ROLE_MAX},
      {"boot_id", offsetof(Muster__Hello, boot_id), MST_BOOT_ID_MAX},
      {"profile_digest", offsetof(Muster__Hello, profile_digest), MST_PROFILE_DIGEST_MAX},
      {"agent_version", offsetof(Muster__Hello, agent_version), MST_AGENT_VERSION_MAX},
  };
  char text[1024];

  for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
    for (size_t len = fields[i].max; len <= fields[i].max + 1; len++) {
      Muster__Hello h = MUSTER__HELLO__INIT;
      Muster__Envelope env = MUSTER__ENVELOPE__INIT;
      struct aggr_reject rej = {0};
      char want[128];

      h.node_id = (char *)"n1";
      h.spool_id = (char *)"s1";
      cr_assert_lt(len, sizeof(text));
      memset(text, 'a', len);
      text[len] = '\0';
      *(char **)((char *)&h + fields[i].offset) = text;
      env.body_case = MUSTER__ENVELOPE__BODY_HELLO;
      env.hello = &h;
      int r = aggr_envelope_check(&env, false, &rej);
      if (len == fields[i].max) {
        cr_assert_eq(r, 0, "%s at its cap: %s", fields[i].name, rej.reason);
        continue;
      }
      snprintf(want, sizeof(want), "Hello with an overlong %s (%zu bytes, at most %zu)",
               fields[i].name, len, fields[i].max);
      cr_assert_lt(r, 0);
      cr_assert_str_eq(rej.reason, want);
    }
  }
}
