/* The aggregator's rules for what an agent may send, apart from any socket
 * or loop state: decoding a frame's payload as an Envelope, which body is
 * allowed before and after the Hello, and the checks on the Hello's fields,
 * a ChangeBatch's changes and a Snapshot's entries (present names, length
 * caps, valid states, UTF-8). conn.c applies these before it touches the
 * model; the fuzz target tests/fuzz/fuzz_frame.c runs them on its own.
 *
 * What needs the aggregator's state (leadership, the token, the known roles)
 * stays in conn.c. Pure functions: any thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "muster.pb-c.h"

/* Why a frame is refused: the code for the Reject and its reason text. */
struct aggr_reject {
  Muster__RejectCode code;
  char reason[256];
};

/* A decoder for one thread's frames: each frame is decoded into memory the
 * decoder keeps and reuses (a bump allocator), instead of a malloc and a
 * free for every message and string in it. AGGR_DECODER_INIT makes an empty
 * one; aggr_decoder_done() gives its memory back. One thread at a time. */
struct aggr_decoder_chunk;
struct aggr_decoder {
  struct aggr_decoder_chunk *chunks; /* the newest first */
  size_t next_cap;                   /* the size of the next chunk */
  bool oom;                          /* an allocation failed in this decode */
};
#define AGGR_DECODER_INIT                                                                          \
  { 0 }

/* Decodes a frame's payload into d's memory. Returns 0 and *ret_env, valid
 * until the next call on d or aggr_decoder_done() and not to be freed;
 * -EBADMSG with *ret_reject filled when it does not decode or has no body;
 * -ENOMEM with a REJECT_OVERLOADED reason. */
int aggr_decoder_decode(struct aggr_decoder *d, const uint8_t *data, size_t len,
                        Muster__Envelope **ret_env, struct aggr_reject *ret_reject);
void aggr_decoder_done(struct aggr_decoder *d);

/* Checks a decoded Envelope from an agent. hello_done tells whether the
 * connection has had its Hello. Returns 0 when conn.c may act on it, or
 * -EPROTO (a body not allowed now), -EBADMSG (bad fields) or -ERANGE (a
 * batch whose seqs do not go up by one, or a seq above INT64_MAX) with
 * *ret_reject filled. env is only read. */
int aggr_envelope_check(const Muster__Envelope *env, bool hello_done,
                        struct aggr_reject *ret_reject);
