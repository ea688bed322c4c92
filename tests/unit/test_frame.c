/* Unit tests for mst/frame.h: varint framing of Envelopes in both
 * directions, partial input, the size cap that refuses a frame before its
 * body, malformed varints and undecodable bodies, and the caps on both
 * buffers. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mst/frame.h"
#include "mst/macro.h"

static Muster__Envelope heartbeat_envelope(Muster__Heartbeat *hb, int64_t sent_ms, uint64_t seq) {
  Muster__Envelope env = MUSTER__ENVELOPE__INIT;
  muster__heartbeat__init(hb);
  hb->sent_ms = sent_ms;
  hb->seq = seq;
  env.body_case = MUSTER__ENVELOPE__BODY_HEARTBEAT;
  env.heartbeat = hb;
  return env;
}

/* Encodes one heartbeat frame into out; returns its length. */
static size_t heartbeat_frame(uint8_t *out, size_t size, uint64_t seq) {
  Muster__Heartbeat hb;
  Muster__Envelope env = heartbeat_envelope(&hb, 1000, seq);
  struct mst_buf b;

  mst_buf_init(&b, 4096);
  cr_assert_eq(mst_frame_write_envelope(&b, &env, MST_FRAME_DEFAULT_MAX), 0);
  size_t n = mst_buf_pending(&b);
  cr_assert_leq(n, size);
  memcpy(out, b.data + b.off, n);
  mst_buf_done(&b);
  return n;
}

static uint64_t decode_heartbeat_seq(const uint8_t *data, size_t len) {
  _cleanup_envelope_ Muster__Envelope *env = NULL;
  cr_assert_eq(mst_envelope_decode(data, len, &env), 0);
  cr_assert_eq(env->body_case, MUSTER__ENVELOPE__BODY_HEARTBEAT);
  return env->heartbeat->seq;
}

Test(frame, round_trip_hello) {
  Muster__Envelope env = MUSTER__ENVELOPE__INIT;
  Muster__Hello hello = MUSTER__HELLO__INIT;
  char *addresses[] = {"10.0.0.1", "10.0.0.2"};
  struct mst_frame_reader r;
  struct mst_buf b;
  const uint8_t *data;
  size_t len;

  hello.node_id = "node-1";
  hello.role = "master";
  hello.profile_digest = "abc";
  hello.n_addresses = 2;
  hello.addresses = addresses;
  hello.last_seq = 1234567890123ULL;
  hello.protocol_version = 1;
  env.body_case = MUSTER__ENVELOPE__BODY_HELLO;
  env.hello = &hello;

  mst_buf_init(&b, 1 << 16);
  cr_assert_eq(mst_frame_write_envelope(&b, &env, MST_FRAME_DEFAULT_MAX), 0);
  size_t packed = muster__envelope__get_packed_size(&env);
  cr_assert_eq(mst_buf_pending(&b), packed + 1, "one length byte plus the body");
  cr_assert_eq(b.data[0], packed);

  mst_frame_reader_init(&r, 0);
  cr_assert_eq(r.max_frame, MST_FRAME_DEFAULT_MAX, "0 means the default cap");
  cr_assert_eq(mst_frame_reader_feed(&r, b.data, mst_buf_pending(&b)), 0);
  cr_assert_eq(mst_frame_reader_next(&r, &data, &len), 1);
  cr_assert_eq(len, packed);
  cr_assert_eq(mst_frame_reader_pending(&r), 0);
  cr_assert_eq(mst_frame_reader_next(&r, &data, &len), 0, "nothing more");

  cr_assert_eq(mst_frame_reader_feed(&r, b.data, mst_buf_pending(&b)), 0);
  cr_assert_eq(mst_frame_reader_next(&r, &data, &len), 1);
  _cleanup_envelope_ Muster__Envelope *got = NULL;
  cr_assert_eq(mst_envelope_decode(data, len, &got), 0);
  cr_assert_eq(got->body_case, MUSTER__ENVELOPE__BODY_HELLO);
  cr_assert_str_eq(got->hello->node_id, "node-1");
  cr_assert_str_eq(got->hello->role, "master");
  cr_assert_eq(got->hello->n_addresses, 2);
  cr_assert_str_eq(got->hello->addresses[1], "10.0.0.2");
  cr_assert_eq(got->hello->last_seq, 1234567890123ULL);

  mst_frame_reader_done(&r);
  mst_buf_done(&b);
}

Test(frame, several_frames_in_one_feed) {
  uint8_t all[1024];
  size_t n = 0;
  struct mst_frame_reader r;
  const uint8_t *data;
  size_t len;

  for (uint64_t seq = 1; seq <= 5; seq++)
    n += heartbeat_frame(all + n, sizeof(all) - n, seq);

  mst_frame_reader_init(&r, 1024);
  cr_assert_eq(mst_frame_reader_feed(&r, all, n), 0);
  for (uint64_t seq = 1; seq <= 5; seq++) {
    cr_assert_eq(mst_frame_reader_next(&r, &data, &len), 1);
    cr_assert_eq(decode_heartbeat_seq(data, len), seq);
  }
  cr_assert_eq(mst_frame_reader_next(&r, &data, &len), 0);
  mst_frame_reader_done(&r);
}

Test(frame, byte_by_byte) {
  uint8_t all[1024];
  size_t n = 0, frames = 0;
  struct mst_frame_reader r;
  const uint8_t *data;
  size_t len;

  n += heartbeat_frame(all + n, sizeof(all) - n, 7);
  n += heartbeat_frame(all + n, sizeof(all) - n, 300);
  size_t first_end = n / 2; /* both frames have the same size */

  mst_frame_reader_init(&r, 1024);
  for (size_t i = 0; i < n; i++) {
    cr_assert_eq(mst_frame_reader_feed(&r, all + i, 1), 0);
    int ret = mst_frame_reader_next(&r, &data, &len);
    if (i + 1 == first_end || i + 1 == n) {
      cr_assert_eq(ret, 1, "a frame completes at byte %zu", i);
      cr_assert_eq(decode_heartbeat_seq(data, len), frames == 0 ? 7 : 300);
      frames++;
    } else {
      cr_assert_eq(ret, 0, "byte %zu completes nothing", i);
    }
  }
  cr_assert_eq(frames, 2);
  mst_frame_reader_done(&r);
}

Test(frame, partial_varint) {
  /* A two-byte length (200) arriving one byte at a time. */
  struct mst_frame_reader r;
  const uint8_t *data;
  size_t len;
  uint8_t body[200];

  memset(body, 0, sizeof(body));
  mst_frame_reader_init(&r, 1024);
  cr_assert_eq(mst_frame_reader_feed(&r, "\xc8", 1), 0);
  cr_assert_eq(mst_frame_reader_next(&r, &data, &len), 0);
  cr_assert_eq(mst_frame_reader_feed(&r, "\x01", 1), 0);
  cr_assert_eq(mst_frame_reader_next(&r, &data, &len), 0);
  cr_assert_eq(mst_frame_reader_feed(&r, body, 199), 0);
  cr_assert_eq(mst_frame_reader_next(&r, &data, &len), 0, "truncated body");
  cr_assert_eq(mst_frame_reader_pending(&r), 201);
  cr_assert_eq(mst_frame_reader_feed(&r, body, 1), 0);
  cr_assert_eq(mst_frame_reader_next(&r, &data, &len), 1);
  cr_assert_eq(len, 200);
  mst_frame_reader_done(&r);
}

Test(frame, empty_frame) {
  struct mst_frame_reader r;
  const uint8_t *data = NULL;
  size_t len = 99;
  Muster__Envelope *env = NULL;

  mst_frame_reader_init(&r, 1024);
  cr_assert_eq(mst_frame_reader_feed(&r, "\x00", 1), 0);
  cr_assert_eq(mst_frame_reader_next(&r, &data, &len), 1);
  cr_assert_eq(len, 0);
  cr_assert_eq(mst_envelope_decode(data, len, &env), -EBADMSG, "an empty envelope has no body");
  cr_assert_null(env);
  mst_frame_reader_done(&r);
}

Test(frame, oversized_refused_before_body) {
  struct mst_frame_reader r;
  const uint8_t *data;
  size_t len;
  uint8_t v[MST_VARINT_MAX_BYTES];

  /* Exactly the cap: accepted, waits for the body. */
  mst_frame_reader_init(&r, 100);
  cr_assert_eq(mst_frame_reader_feed(&r, v, mst_varint_encode(100, v)), 0);
  cr_assert_eq(mst_frame_reader_next(&r, &data, &len), 0);
  mst_frame_reader_done(&r);

  /* One over: refused with only the length varint buffered. */
  mst_frame_reader_init(&r, 100);
  cr_assert_eq(mst_frame_reader_feed(&r, v, mst_varint_encode(101, v)), 0);
  cr_assert_eq(mst_frame_reader_next(&r, &data, &len), -EMSGSIZE);
  mst_frame_reader_done(&r);

  /* A huge announced length in a partial stream. */
  mst_frame_reader_init(&r, MST_FRAME_DEFAULT_MAX);
  cr_assert_eq(mst_frame_reader_feed(&r, v, mst_varint_encode(UINT64_MAX >> 1, v)), 0);
  cr_assert_eq(mst_frame_reader_next(&r, &data, &len), -EMSGSIZE);
  mst_frame_reader_done(&r);
}

struct varint_case {
  uint8_t bytes[12];
  size_t n;
  int ret;
};

static const struct varint_case varint_cases[] = {
    /* nine continuation bytes: still incomplete */
    {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9, 0},
    /* ten continuation bytes: never ends */
    {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 10, -EBADMSG},
    {{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, 11, -EBADMSG},
    /* 10th byte over 1: more than 64 bits */
    {{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02}, 10, -EBADMSG},
    /* 10th byte 1: 2^63, well formed but over the cap */
    {{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, 10, -EMSGSIZE},
    /* non-minimal encoding of 0 is still a valid varint */
    {{0x80, 0x00}, 2, 1},
};

ParameterizedTestParameters(frame, malformed_varint) {
  return cr_make_param_array(struct varint_case, varint_cases, ELEMENTSOF(varint_cases));
}

ParameterizedTest(const struct varint_case *c, frame, malformed_varint) {
  struct mst_frame_reader r;
  const uint8_t *data;
  size_t len;

  mst_frame_reader_init(&r, 1024);
  cr_assert_eq(mst_frame_reader_feed(&r, c->bytes, c->n), 0);
  cr_assert_eq(mst_frame_reader_next(&r, &data, &len), c->ret);
  mst_frame_reader_done(&r);
}

struct decode_case {
  char name[32];
  uint8_t bytes[8];
  size_t n;
};

static const struct decode_case undecodable_cases[] = {
    {"length beyond the data", {0x0a, 0x7f, 0x01}, 3},
    {"truncated varint field", {0x08}, 1},
    {"invalid wire type", {0x0f, 0x00}, 2},
    {"unknown field only", {0x78, 0x01}, 2},
    {"field number zero", {0x02, 0x00}, 2},
    {"submessage garbage", {0x3a, 0x02, 0xff, 0xff}, 4},
};

ParameterizedTestParameters(frame, undecodable) {
  return cr_make_param_array(struct decode_case, undecodable_cases, ELEMENTSOF(undecodable_cases));
}

ParameterizedTest(const struct decode_case *c, frame, undecodable) {
  Muster__Envelope *env = NULL;
  cr_assert_eq(mst_envelope_decode(c->bytes, c->n, &env), -EBADMSG, "%s", c->name);
  cr_assert_null(env);
}

Test(frame, decode_accepts_each_body) {
  Muster__Envelope env = MUSTER__ENVELOPE__INIT;
  Muster__Ack ack = MUSTER__ACK__INIT;
  uint8_t buf[64];

  ack.seq = 99;
  env.body_case = MUSTER__ENVELOPE__BODY_ACK;
  env.ack = &ack;
  size_t n = muster__envelope__pack(&env, buf);

  _cleanup_envelope_ Muster__Envelope *got = NULL;
  cr_assert_eq(mst_envelope_decode(buf, n, &got), 0);
  cr_assert_eq(got->body_case, MUSTER__ENVELOPE__BODY_ACK);
  cr_assert_eq(got->ack->seq, 99);
}

struct encode_case {
  uint64_t v;
  uint8_t bytes[10];
  size_t n;
};

static const struct encode_case encode_cases[] = {
    {0, {0x00}, 1},
    {1, {0x01}, 1},
    {127, {0x7f}, 1},
    {128, {0x80, 0x01}, 2},
    {300, {0xac, 0x02}, 2},
    {16384, {0x80, 0x80, 0x01}, 3},
    {UINT64_MAX, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 10},
};

ParameterizedTestParameters(frame, varint_encode) {
  return cr_make_param_array(struct encode_case, encode_cases, ELEMENTSOF(encode_cases));
}

ParameterizedTest(const struct encode_case *c, frame, varint_encode) {
  uint8_t out[MST_VARINT_MAX_BYTES];
  cr_assert_eq(mst_varint_encode(c->v, out), c->n);
  cr_assert_arr_eq(out, c->bytes, c->n);
}

static void nonblocking_pipe(int fds[2]) {
  cr_assert_eq(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
}

Test(frame, fill_reads_within_the_cap) {
  uint8_t frame[64], stream[4096];
  size_t flen = heartbeat_frame(frame, sizeof(frame), 5), n = 0, frames = 0;
  struct mst_frame_reader r;
  const uint8_t *data;
  size_t len;
  int fds[2];

  while (n + flen <= sizeof(stream)) {
    memcpy(stream + n, frame, flen);
    n += flen;
  }
  nonblocking_pipe(fds);
  cr_assert_eq(write(fds[1], stream, n), (ssize_t)n);

  mst_frame_reader_init(&r, 100);
  cr_assert_eq(mst_frame_reader_fill(&r, fds[0]), 116, "reads only max_frame + 16");
  for (;;) {
    int ret;
    while ((ret = mst_frame_reader_next(&r, &data, &len)) == 1) {
      cr_assert_eq(decode_heartbeat_seq(data, len), 5);
      frames++;
    }
    cr_assert_eq(ret, 0);
    ssize_t got = mst_frame_reader_fill(&r, fds[0]);
    cr_assert_leq(r.cap, 116, "the buffer never grows past max_frame + 16");
    if (got == -EAGAIN)
      break;
    cr_assert_gt(got, 0);
  }
  cr_assert_eq(frames, n / flen);
  cr_assert_eq(mst_frame_reader_pending(&r), 0);

  close(fds[1]);
  cr_assert_eq(mst_frame_reader_fill(&r, fds[0]), 0, "EOF");
  close(fds[0]);
  mst_frame_reader_done(&r);
}

Test(frame, fill_refuses_when_a_frame_is_not_taken) {
  uint8_t junk[200];
  struct mst_frame_reader r;
  int fds[2];

  memset(junk, 0x01, sizeof(junk)); /* frames of length 1 */
  nonblocking_pipe(fds);
  cr_assert_eq(write(fds[1], junk, sizeof(junk)), (ssize_t)sizeof(junk));
  mst_frame_reader_init(&r, 100);
  cr_assert_eq(mst_frame_reader_fill(&r, fds[0]), 116);
  cr_assert_eq(mst_frame_reader_fill(&r, fds[0]), -ENOBUFS);
  close(fds[0]);
  close(fds[1]);
  mst_frame_reader_done(&r);
}

Test(frame, feed_refuses_a_caller_that_never_takes_frames) {
  uint8_t junk[200];
  struct mst_frame_reader r;

  memset(junk, 0x01, sizeof(junk));
  mst_frame_reader_init(&r, 100);
  /* One chunk may exceed the cap (the caller chose its size)... */
  cr_assert_eq(mst_frame_reader_feed(&r, junk, sizeof(junk)), 0);
  /* ...but piling more on undrained bytes is refused. */
  cr_assert_eq(mst_frame_reader_feed(&r, junk, 1), -ENOBUFS);
  mst_frame_reader_done(&r);
}

Test(frame, consumed_bytes_are_reclaimed) {
  uint8_t frame[64];
  size_t flen = heartbeat_frame(frame, sizeof(frame), 9);
  struct mst_frame_reader r;
  const uint8_t *data;
  size_t len;

  mst_frame_reader_init(&r, 1024);
  /* Keep one partial frame pending at all times while 10000 frames pass. */
  cr_assert_eq(mst_frame_reader_feed(&r, frame, 3), 0);
  for (int i = 0; i < 10000; i++) {
    cr_assert_eq(mst_frame_reader_feed(&r, frame + 3, flen - 3), 0);
    cr_assert_eq(mst_frame_reader_feed(&r, frame, 3), 0);
    cr_assert_eq(mst_frame_reader_next(&r, &data, &len), 1);
    cr_assert_eq(decode_heartbeat_seq(data, len), 9);
    cr_assert_eq(mst_frame_reader_next(&r, &data, &len), 0);
  }
  cr_assert_eq(mst_frame_reader_pending(&r), 3);
  cr_assert_leq(r.cap, 4096, "the buffer stays small: cap %zu", r.cap);
  mst_frame_reader_done(&r);
}

Test(frame, buf_cap) {
  struct mst_buf b;
  uint8_t data[100];

  memset(data, 'x', sizeof(data));
  mst_buf_init(&b, 250);
  cr_assert_eq(mst_buf_append(&b, data, 100), 0);
  cr_assert_eq(mst_buf_append(&b, data, 100), 0);
  cr_assert_eq(mst_buf_append(&b, data, 51), -ENOBUFS);
  cr_assert_eq(mst_buf_pending(&b), 200, "a refused append adds nothing");
  cr_assert_eq(mst_buf_append(&b, data, 50), 0);
  cr_assert_eq(mst_buf_pending(&b), 250);
  cr_assert_leq(b.cap, 250, "never allocates past the cap");
  mst_buf_done(&b);
}

Test(frame, write_envelope_caps) {
  Muster__Envelope env = MUSTER__ENVELOPE__INIT;
  Muster__Reject reject = MUSTER__REJECT__INIT;
  char reason[300];
  struct mst_buf b;

  memset(reason, 'r', sizeof(reason) - 1);
  reason[sizeof(reason) - 1] = '\0';
  reject.code = MUSTER__REJECT_CODE__REJECT_TOO_LARGE;
  reject.reason = reason;
  env.body_case = MUSTER__ENVELOPE__BODY_REJECT;
  env.reject = &reject;
  size_t packed = muster__envelope__get_packed_size(&env);

  mst_buf_init(&b, 1 << 20);
  cr_assert_eq(mst_frame_write_envelope(&b, &env, packed - 1), -EMSGSIZE);
  cr_assert_eq(mst_buf_pending(&b), 0);
  cr_assert_eq(mst_frame_write_envelope(&b, &env, packed), 0);
  cr_assert_eq(mst_buf_pending(&b), packed + 2);
  mst_buf_done(&b);

  mst_buf_init(&b, packed + 1); /* one byte short of the frame */
  cr_assert_eq(mst_frame_write_envelope(&b, &env, packed), -ENOBUFS);
  cr_assert_eq(mst_buf_pending(&b), 0, "nothing half-written");
  mst_buf_done(&b);
}

Test(frame, flush_to_a_pipe) {
  struct mst_buf b;
  uint8_t chunk[4096], back[4096];
  int fds[2];
  size_t total = 0, received = 0;
  int r;

  nonblocking_pipe(fds);
  mst_buf_init(&b, 1 << 20);
  cr_assert_eq(mst_buf_flush(&b, fds[1]), 0, "empty buffer");

  /* More than a pipe holds (64 KiB by default). */
  for (int i = 0; i < 64; i++) {
    memset(chunk, i, sizeof(chunk));
    cr_assert_eq(mst_buf_append(&b, chunk, sizeof(chunk)), 0);
    total += sizeof(chunk);
  }
  while ((r = mst_buf_flush(&b, fds[1])) == -EAGAIN) {
    ssize_t n;
    while ((n = read(fds[0], back, sizeof(back))) > 0) {
      for (ssize_t k = 0; k < n; k++)
        cr_assert_eq(back[k], (uint8_t)((received + (size_t)k) / sizeof(chunk)));
      received += (size_t)n;
    }
  }
  cr_assert_eq(r, 0);
  cr_assert_eq(mst_buf_pending(&b), 0);
  ssize_t n;
  while ((n = read(fds[0], back, sizeof(back))) > 0)
    received += (size_t)n;
  cr_assert_eq(received, total);
  close(fds[0]);
  close(fds[1]);
  mst_buf_done(&b);
}

Test(frame, flush_to_a_closed_peer) {
  struct mst_buf b;
  int sv[2];

  cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  close(sv[1]);
  mst_buf_init(&b, 1024);
  cr_assert_eq(mst_buf_append(&b, "hello", 5), 0);
  cr_assert_eq(mst_buf_flush(&b, sv[0]), -EPIPE, "EPIPE, and no SIGPIPE");
  cr_assert_eq(mst_buf_pending(&b), 5);
  close(sv[0]);
  mst_buf_done(&b);
}

/* A transport that takes or gives at most a few bytes a call and says
 * "again" every other call, like a TLS session on a busy socket. */
struct trickle {
  uint8_t data[256];
  size_t len, pos;
  unsigned calls;
};

static ssize_t trickle_write(void *ctx, const void *buf, size_t n) {
  struct trickle *t = ctx;
  if (t->calls++ % 2 == 1)
    return -EAGAIN;
  size_t take = MST_MIN(n, (size_t)3);
  cr_assert_leq(t->len + take, sizeof(t->data));
  memcpy(t->data + t->len, buf, take);
  t->len += take;
  return (ssize_t)take;
}

static ssize_t trickle_read(void *ctx, void *buf, size_t n) {
  struct trickle *t = ctx;
  if (t->calls++ % 2 == 1)
    return -EAGAIN;
  if (t->pos == t->len)
    return 0;
  size_t give = MST_MIN(MST_MIN(n, (size_t)3), t->len - t->pos);
  memcpy(buf, t->data + t->pos, give);
  t->pos += give;
  return (ssize_t)give;
}

Test(frame, through_a_transport_that_trickles) {
  struct trickle t = {0};
  struct mst_buf b;
  struct mst_frame_reader rd;
  uint8_t frame[64];
  size_t n = heartbeat_frame(frame, sizeof(frame), 42);
  const uint8_t *data;
  size_t len;
  int r;

  mst_buf_init(&b, 4096);
  cr_assert_eq(mst_buf_append(&b, frame, n), 0);
  cr_assert_eq(mst_buf_append(&b, frame, n), 0);
  while ((r = mst_buf_flush_with(&b, trickle_write, &t)) == -EAGAIN)
    ;
  cr_assert_eq(r, 0);
  cr_assert_eq(mst_buf_pending(&b), 0);
  cr_assert_eq(t.len, 2 * n);
  mst_buf_done(&b);

  t.calls = 0;
  mst_frame_reader_init(&rd, MST_FRAME_DEFAULT_MAX);
  unsigned frames = 0;
  ssize_t got;
  while ((got = mst_frame_reader_fill_with(&rd, trickle_read, &t)) != 0) {
    cr_assert(got > 0 || got == -EAGAIN, "fill returned %zd", got);
    while ((r = mst_frame_reader_next(&rd, &data, &len)) == 1) {
      cr_assert_eq(decode_heartbeat_seq(data, len), 42);
      frames++;
    }
    cr_assert_eq(r, 0);
  }
  cr_assert_eq(frames, 2);
  mst_frame_reader_done(&rd);
}
