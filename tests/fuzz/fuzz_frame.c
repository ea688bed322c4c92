/* libFuzzer target: the aggregator's side of an agent stream, without the
 * socket. The input is a byte stream as an agent would send it, cut into
 * reads of a size chosen by the input: frames come out of the frame reader
 * (common/frame.c), each is decoded and checked as conn.c does
 * (aggregatord/ingest/envelope.c), and the conversation goes on after a good Hello
 * as it would on a connection, until something is refused.
 *
 * Input: byte 0 picks how bytes arrive (bit 0: through a pipe and
 * mst_frame_reader_fill(), as conn.c reads a socket, or by
 * mst_frame_reader_feed(); the other bits: the size of each write), byte 1
 * the frame cap; the rest is the stream. Every frame that passes is also
 * packed again with mst_frame_write_envelope() and read back, which must
 * give the same bytes.
 *
 * The seqs of the change batches are followed as conn.c follows them
 * (spools.h: aggr_spool_new_from()): what it would hand to the writer and
 * then acknowledge is checked against the rule, over the whole sequence of
 * frames, not one frame: the seqs handed to the writer go up by one (a skip
 * only before the first of the stream: the agent's pruned rows), none is
 * above INT64_MAX, and the Ack after the commit covers only seqs handed in
 * that order.
 * Seeds: tests/fuzz/make_corpus.py. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "ingest/envelope.h"
#include "ingest/spools.h"
#include "fuzz.h"
#include "mst/auth.h"
#include "mst/frame.h"
#include "mst/macro.h"
#include "mst/state.h"

/* What conn.c reads of a change it accepts, so that the sanitizers see the
 * same accesses (names of enums that are not checked, string lengths). */
static size_t touch_accepted(const Muster__Envelope *env) {
  size_t n = 0;

  switch (env->body_case) {
  case MUSTER__ENVELOPE__BODY_HELLO:
    n += mst_token_equal("fuzz-token", env->hello->token);
    n += strlen(env->hello->role) + strlen(env->hello->hostname) + strlen(env->hello->boot_id);
    break;
  case MUSTER__ENVELOPE__BODY_CHANGES:
    for (size_t i = 0; i < env->changes->n_changes; i++) {
      const Muster__Change *ch = env->changes->changes[i];
      n += mst_check_kind_to_string((enum mst_check_kind)ch->check) != NULL;
      n += mst_state_to_string((enum mst_state)ch->from) != NULL;
      n += mst_state_to_string((enum mst_state)ch->to) != NULL;
      n += strlen(ch->component) + strlen(ch->output) + strlen(ch->boot_id);
    }
    break;
  case MUSTER__ENVELOPE__BODY_SNAPSHOT:
    for (size_t i = 0; i < env->snapshot->n_components; i++) {
      const Muster__ComponentStatus *cs = env->snapshot->components[i];
      n += mst_check_kind_to_string((enum mst_check_kind)cs->check) != NULL;
      n += strlen(cs->component) + strlen(cs->output);
    }
    break;
  default:
    break;
  }
  return n;
}

/* Packs env as the aggregator and the agent write frames, reads it back with
 * a fresh reader, and checks that the payload is the same. */
static void check_round_trip(const Muster__Envelope *env, size_t max_frame) {
  struct mst_frame_reader rd;
  struct mst_buf b;
  const uint8_t *payload;
  size_t payload_len, size = muster__envelope__get_packed_size(env);
  uint8_t *packed;
  int r;

  mst_buf_init(&b, max_frame + MST_VARINT_MAX_BYTES);
  r = mst_frame_write_envelope(&b, env, max_frame);
  if (size > max_frame) {
    /* Repacking can grow a message (a negative enum read from a short
     * varint is written in ten bytes): then it must be refused, intact. */
    FUZZ_CHECK(r == -EMSGSIZE && mst_buf_pending(&b) == 0);
    mst_buf_done(&b);
    return;
  }
  FUZZ_CHECK(r == 0);

  packed = malloc(size ? size : 1);
  FUZZ_CHECK(packed);
  muster__envelope__pack(env, packed);

  mst_frame_reader_init(&rd, max_frame);
  FUZZ_CHECK(mst_frame_reader_feed(&rd, b.data + b.off, mst_buf_pending(&b)) == 0);
  FUZZ_CHECK(mst_frame_reader_next(&rd, &payload, &payload_len) == 1);
  FUZZ_CHECK(payload_len == size && memcmp(payload, packed, size) == 0);
  FUZZ_CHECK(mst_frame_reader_pending(&rd) == 0);

  free(packed);
  mst_frame_reader_done(&rd);
  mst_buf_done(&b);
}

struct conversation {
  struct mst_frame_reader rd;
  size_t max_frame;
  bool hello_done;
  bool closed;
  size_t frames;
  size_t sink;
  /* The seq/ack model: the spool record conn.c keeps (held and received:
   * every handed seq is committed at once here), whether a batch came, and
   * the run of seqs handed to the writer in order (run_first..handed). */
  struct aggr_spool spool;
  bool changes_seen;
  uint64_t run_first, handed, acked;
};

/* FUZZ_VERBOSE=1: say what happened to each frame (for triage). */
static int verbose = -1;
/* Where the reads of accepted frames go, so that they are not optimized out. */
static volatile size_t fuzz_sink;

/* Frames decode into memory reused from frame to frame, as on the
 * aggregator's loop (one decoder for the process's life). */
static struct aggr_decoder decoder = AGGR_DECODER_INIT;

/* A ChangeBatch that passed aggr_envelope_check(): where conn.c would take
 * it from, what it would hand to the writer, and the Ack after the commit.
 * Returns false when conn.c refuses it (the stream closes). */
static bool follow_seqs(struct conversation *cv, const Muster__ChangeBatch *b) {
  uint64_t from;

  if (b->n_changes == 0)
    return true;
  uint64_t first = b->changes[0]->seq, last = b->changes[b->n_changes - 1]->seq;
  FUZZ_CHECK(last >= first && last - first == b->n_changes - 1 && last <= INT64_MAX);
  if (aggr_spool_new_from(&cv->spool, first, !cv->changes_seen, &from) < 0) {
    /* Refused only for a gap after the first batch. */
    FUZZ_CHECK(cv->changes_seen && first > cv->spool.received_seq + 1);
    return false;
  }
  for (size_t i = 0; i < b->n_changes; i++) {
    uint64_t seq = b->changes[i]->seq;
    if (seq < from) {
      FUZZ_CHECK(seq <= cv->spool.received_seq); /* a replay of what is held */
      continue;
    }
    FUZZ_CHECK(seq <= INT64_MAX);
    if (cv->handed == 0)
      cv->run_first = seq; /* the first of the stream may skip */
    else
      FUZZ_CHECK(seq == cv->handed + 1);
    cv->handed = cv->spool.received_seq = seq;
  }
  cv->changes_seen = true;
  /* Committed: what is held grows to what was handed, and the Ack says so. */
  cv->spool.held_seq = cv->spool.received_seq;
  cv->acked = cv->spool.held_seq;
  FUZZ_CHECK(cv->acked == 0 || (cv->acked >= cv->run_first && cv->acked <= cv->handed));
  return true;
}

/* Takes every whole frame out of the reader and handles it as conn.c does;
 * the first refusal closes the conversation. */
static void read_frames(struct conversation *cv) {
  while (!cv->closed) {
    const uint8_t *frame;
    size_t len;
    struct aggr_reject rej;
    Muster__Envelope *env = NULL; /* in the decoder's memory, until its next frame */

    int r = mst_frame_reader_next(&cv->rd, &frame, &len);
    if (r == 0)
      return;
    if (r < 0) {
      if (verbose)
        fprintf(stderr, "frame %zu: %s\n", cv->frames, strerror(-r));
      FUZZ_CHECK(r == -EMSGSIZE || r == -EBADMSG);
      cv->closed = true;
      return;
    }
    FUZZ_CHECK(len <= cv->max_frame);
    if (aggr_decoder_decode(&decoder, frame, len, &env, &rej) < 0 ||
        aggr_envelope_check(env, cv->hello_done, &rej) < 0) {
      if (verbose)
        fprintf(stderr, "frame %zu: rejected (%d): %s\n", cv->frames, (int)rej.code, rej.reason);
      FUZZ_CHECK(rej.code != MUSTER__REJECT_CODE__REJECT_UNSPECIFIED);
      FUZZ_CHECK(memchr(rej.reason, '\0', sizeof(rej.reason)) != NULL);
      cv->closed = true;
      return;
    }
    if (verbose)
      fprintf(stderr, "frame %zu: accepted body %d\n", cv->frames, (int)env->body_case);
    cv->frames++;
    cv->sink += touch_accepted(env);
    check_round_trip(env, cv->max_frame);
    if (env->body_case == MUSTER__ENVELOPE__BODY_HELLO)
      cv->hello_done = true;
    if (env->body_case == MUSTER__ENVELOPE__BODY_CHANGES && !follow_seqs(cv, env->changes)) {
      if (verbose)
        fprintf(stderr, "frame %zu: refused: seq gap\n", cv->frames - 1);
      cv->closed = true;
      return;
    }
  }
}

/* The bytes arrive in memory, chunk by chunk. */
static void deliver_by_feed(struct conversation *cv, const uint8_t *data, size_t size,
                            size_t chunk) {
  for (size_t off = 0; !cv->closed && off < size;) {
    size_t n = MST_MIN(chunk, size - off);
    if (mst_frame_reader_feed(&cv->rd, data + off, n) < 0)
      return;
    off += n;
    read_frames(cv);
  }
}

/* The bytes arrive on a non-blocking pipe, chunk by chunk, and each wake
 * does what conn_io() does: one fill(), then the frames. Since the frames
 * are taken out after every fill(), the reader must never be full
 * (-ENOBUFS), whatever the sizes. */
static void deliver_by_fill(struct conversation *cv, const uint8_t *data, size_t size,
                            size_t chunk) {
  static int fds[2] = {-1, -1};
  size_t off = 0, in_pipe = 0;

  if (fds[0] < 0) {
    FUZZ_CHECK(pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    FUZZ_CHECK(fcntl(fds[1], F_SETPIPE_SZ, 64 * 1024) >= 0);
  }
  while (!cv->closed) {
    if (in_pipe == 0 && off < size) {
      ssize_t w = write(fds[1], data + off, MST_MIN(chunk, size - off));
      FUZZ_CHECK(w > 0);
      off += (size_t)w;
      in_pipe += (size_t)w;
    }
    ssize_t n = mst_frame_reader_fill(&cv->rd, fds[0]);
    if (n == -EAGAIN) {
      FUZZ_CHECK(in_pipe == 0);
      if (off >= size)
        break;
      continue;
    }
    FUZZ_CHECK(n > 0 && (size_t)n <= in_pipe);
    in_pipe -= (size_t)n;
    read_frames(cv);
  }
  /* Leave the pipe empty for the next input. */
  uint8_t drain[4096];
  while (in_pipe > 0) {
    ssize_t n = read(fds[0], drain, MST_MIN(sizeof(drain), in_pipe));
    FUZZ_CHECK(n > 0);
    in_pipe -= (size_t)n;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct conversation cv = {0};
  size_t chunk;

  if (verbose < 0)
    verbose = getenv("FUZZ_VERBOSE") != NULL;
  if (size < 2)
    return 0;
  chunk = (size_t)(data[0] >> 1) * 8 + 1;      /* 1 .. 1017 bytes a write */
  cv.max_frame = (size_t)64 << (data[1] % 12); /* 64 B .. 128 KiB */

  mst_frame_reader_init(&cv.rd, cv.max_frame);
  if (data[0] & 1)
    deliver_by_fill(&cv, data + 2, size - 2, chunk);
  else
    deliver_by_feed(&cv, data + 2, size - 2, chunk);
  fuzz_sink = cv.sink;
  mst_frame_reader_done(&cv.rd);
  return 0;
}
