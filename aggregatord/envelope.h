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

/* Decodes a frame's payload. Returns 0 and *ret_env (free with
 * muster__envelope__free_unpacked(), or _cleanup_envelope_), or -EBADMSG
 * with *ret_reject filled when it does not decode or has no body. */
int aggr_envelope_decode(const uint8_t *data, size_t len, Muster__Envelope **ret_env,
                         struct aggr_reject *ret_reject);

/* Checks a decoded Envelope from an agent. hello_done tells whether the
 * connection has had its Hello. Returns 0 when conn.c may act on it, or
 * -EPROTO (a body not allowed now) or -EBADMSG (bad fields) with
 * *ret_reject filled. env is only read. */
int aggr_envelope_check(const Muster__Envelope *env, bool hello_done,
                        struct aggr_reject *ret_reject);
