/* Varint-delimited framing of Envelope messages on a byte stream, with a hard
 * cap on the frame size, plus the growable output buffer a stream writes
 * through. Both ends of the agent stream and the tests use it.
 *
 * Reading: bytes go in with mst_frame_reader_fill() (from a non-blocking fd)
 * or mst_frame_reader_feed() (from memory); whole frames come out of
 * mst_frame_reader_next(). A frame whose announced length is over the cap is
 * refused before its body is read, and a length varint longer than 10 bytes is
 * refused as malformed. Not thread-safe; owned by one connection. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "muster.pb-c.h"

#define MST_FRAME_DEFAULT_MAX (1024 * 1024)
#define MST_VARINT_MAX_BYTES  10

/* Caps on the texts in an agent's Envelopes, in bytes. The aggregator
 * refuses longer ones (aggregatord/ingest/envelope.c) rather than store and
 * serve whatever a peer sends, so the agent must never send them: the
 * profile loader refuses a longer component name or role, the boot id
 * reader a longer boot id, and the probes cut output at MST_OUTPUT_MAX. */
#define MST_NODE_ID_MAX        253 /* a DNS name */
#define MST_HOSTNAME_MAX       253 /* a DNS name */
#define MST_SPOOL_ID_MAX       128
#define MST_ROLE_MAX           128
#define MST_BOOT_ID_MAX        128
#define MST_PROFILE_DIGEST_MAX 64 /* hex SHA-256 */
#define MST_AGENT_VERSION_MAX  128
#define MST_COMPONENT_NAME_MAX 256
#define MST_STARTUP_CAUSE_MAX  32  /* "boot", "install", "restart" (agentd/startup.c) */
#define MST_AGENT_FAULT_MAX    256 /* Heartbeat.fault */
/* ComponentStatus.description and .display_name: what DC/OS shows of a
 * unit (systemd's Description=, or the profile's description and name). The
 * profile loader refuses longer keys; the agent cuts a longer Description=. */
#define MST_DESCRIPTION_MAX  512
#define MST_DISPLAY_NAME_MAX 128
/* Hello.dcos_version and Hello/Heartbeat.mesos_id: what DC/OS shows of a
 * node (docs/dcos.md). DC/OS versions are short ("2.2.0"); a Mesos id is a
 * UUID and a serial ("…-S3", "…-0001"). The agent refuses longer ones. */
#define MST_DCOS_VERSION_MAX 64
#define MST_MESOS_ID_MAX     128
/* A component's output: the first line, cut at MST_OUTPUT_MAX bytes of text
 * with MST_OUTPUT_CUT_MARK after it (SPEC: "capped at 4 KiB, with a mark"). */
#define MST_OUTPUT_MAX      4096
#define MST_OUTPUT_CUT_MARK "…[truncated]"
#define MST_OUTPUT_WIRE_MAX (MST_OUTPUT_MAX + sizeof(MST_OUTPUT_CUT_MARK) - 1)

/* Components one node may have. The aggregator refuses a snapshot or a
 * change batch that would take a node over its [aggregator]
 * max_components_per_node, this by default, so that no stream can make
 * the loop walk an unbounded node; the agent refuses a profile with more
 * (common/profile.c). Real profiles have tens. */
#define MST_COMPONENTS_PER_NODE_MAX 1000

struct mst_frame_reader {
  uint8_t *buf;
  size_t start; /* first unconsumed byte */
  size_t len;   /* end of valid bytes */
  size_t cap;
  size_t max_frame;
};

void mst_frame_reader_init(struct mst_frame_reader *r, size_t max_frame);
void mst_frame_reader_done(struct mst_frame_reader *r);

/* Appends n bytes. Returns 0 or -ENOMEM. */
int mst_frame_reader_feed(struct mst_frame_reader *r, const void *data, size_t n);

/* Reads what the non-blocking fd has (up to 64 KiB a call). Returns bytes
 * read (> 0), 0 at EOF, -EAGAIN when nothing is there, or -errno. */
ssize_t mst_frame_reader_fill(struct mst_frame_reader *r, int fd);

/* A transport's read or write, for TLS: bytes (> 0; 0 at EOF for reads),
 * -EAGAIN, or -errno. */
typedef ssize_t (*mst_read_fn)(void *ctx, void *buf, size_t n);
typedef ssize_t (*mst_write_fn)(void *ctx, const void *buf, size_t n);

/* mst_frame_reader_fill() through read_fn: one call of it, into up to
 * 64 KiB of room. Same returns. */
ssize_t mst_frame_reader_fill_with(struct mst_frame_reader *r, mst_read_fn read_fn, void *ctx);

/* Takes the next whole frame. Returns 1 with *ret_data and *ret_len pointing
 * into the reader (valid until the next call on r), 0 when more bytes are
 * needed, -EMSGSIZE when the announced length is over max_frame, -EBADMSG
 * when the length varint is malformed (over 10 bytes). After an error the
 * reader is unusable: close the connection. */
int mst_frame_reader_next(struct mst_frame_reader *r, const uint8_t **ret_data, size_t *ret_len);

/* Bytes buffered but not yet returned as frames. */
size_t mst_frame_reader_pending(const struct mst_frame_reader *r);

/* Unpacks an Envelope. Returns 0 and *ret (free with
 * muster__envelope__free_unpacked(*ret, NULL)), or -EBADMSG when it does not
 * decode or has no body set. */
int mst_envelope_decode(const uint8_t *data, size_t len, Muster__Envelope **ret);

static inline void mst_envelope_freep(Muster__Envelope **e) {
  if (*e)
    muster__envelope__free_unpacked(*e, NULL);
}
#define _cleanup_envelope_ __attribute__((cleanup(mst_envelope_freep)))

/* Output buffer with a hard cap: a peer that does not read is cut off rather
 * than growing memory without bound. */
struct mst_buf {
  uint8_t *data;
  size_t off; /* first unsent byte */
  size_t len; /* end of queued bytes */
  size_t cap;
  size_t max; /* hard cap on queued bytes */
};

void mst_buf_init(struct mst_buf *b, size_t max);
void mst_buf_done(struct mst_buf *b);
/* Queued bytes not yet written. */
size_t mst_buf_pending(const struct mst_buf *b);
/* Appends n bytes. Returns 0, -ENOBUFS over the cap, or -ENOMEM. */
int mst_buf_append(struct mst_buf *b, const void *data, size_t n);
/* Writes as much as the non-blocking fd takes. Returns 0 when empty, -EAGAIN
 * when bytes remain, or -errno (e.g. -EPIPE) on a write error. */
int mst_buf_flush(struct mst_buf *b, int fd);
/* mst_buf_flush() through write_fn, which may take less than it is given. */
int mst_buf_flush_with(struct mst_buf *b, mst_write_fn write_fn, void *ctx);

/* Appends varint(length) + packed Envelope to b. Returns 0, -EMSGSIZE when
 * the packed envelope is over max_frame, -ENOBUFS/-ENOMEM from the buffer. */
int mst_frame_write_envelope(struct mst_buf *b, const Muster__Envelope *env, size_t max_frame);

/* Encodes v as a varint into out (at least 10 bytes). Returns its length. */
size_t mst_varint_encode(uint64_t v, uint8_t *out);
