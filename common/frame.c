/* Varint-delimited framing of Envelope messages (the standard protobuf
 * "delimited" format) with hard caps on both directions.
 *
 * The reader checks a frame's announced length as soon as its varint is
 * complete, so an oversized frame is refused before any of its body is read,
 * and the buffer never has to grow past max_frame plus a varint (fill() reads
 * only into that room). Consumed bytes are reclaimed by moving the unread
 * tail down once the read position passes half of the buffer.
 *
 * The writer side is a capped output buffer: a peer that stops reading gets
 * cut off (-ENOBUFS) instead of growing the sender's memory. */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mst/frame.h"
#include "mst/macro.h"

#define FRAME_FILL_CHUNK (64 * 1024)
#define FRAME_MIN_ALLOC  4096

/* Room for one maximal frame and its length prefix. */
static size_t reader_limit(const struct mst_frame_reader *r) {
  return r->max_frame + 16;
}

void mst_frame_reader_init(struct mst_frame_reader *r, size_t max_frame) {
  *r = (struct mst_frame_reader){
      .max_frame = max_frame > 0 ? max_frame : MST_FRAME_DEFAULT_MAX,
  };
}

void mst_frame_reader_done(struct mst_frame_reader *r) {
  free(r->buf);
  *r = (struct mst_frame_reader){.max_frame = r->max_frame};
}

size_t mst_frame_reader_pending(const struct mst_frame_reader *r) {
  return r->len - r->start;
}

static void reader_compact(struct mst_frame_reader *r) {
  if (r->start == r->len) {
    r->start = r->len = 0;
  } else if (r->start > r->cap / 2) {
    memmove(r->buf, r->buf + r->start, r->len - r->start);
    r->len -= r->start;
    r->start = 0;
  }
}

/* Makes room for `want` more bytes at the end, moving the unread bytes down
 * first when that is enough. */
static int reader_reserve(struct mst_frame_reader *r, size_t want) {
  if (r->cap - r->len >= want)
    return 0;
  if (r->start > 0) {
    memmove(r->buf, r->buf + r->start, r->len - r->start);
    r->len -= r->start;
    r->start = 0;
    if (r->cap - r->len >= want)
      return 0;
  }

  size_t need = r->len + want;
  if (need < r->len)
    return -ENOMEM;
  size_t cap = MST_MAX(r->cap, (size_t)FRAME_MIN_ALLOC);
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  /* Growth driven by fill() stops at the limit; feed() may go past it by the
   * size of the caller's own chunk (see mst_frame_reader_feed). */
  if (cap > reader_limit(r) && need <= reader_limit(r))
    cap = reader_limit(r);

  uint8_t *buf = realloc(r->buf, cap);
  if (!buf)
    return -ENOMEM;
  r->buf = buf;
  r->cap = cap;
  return 0;
}

int mst_frame_reader_feed(struct mst_frame_reader *r, const void *data, size_t n) {
  int ret;

  reader_compact(r);
  /* Pending bytes beyond one maximal frame mean the caller is not taking
   * frames out; refuse rather than buffer without bound. A single feed may
   * still exceed the limit by its own size, which the caller chose. */
  if (mst_frame_reader_pending(r) > reader_limit(r))
    return -ENOBUFS;
  if (n == 0)
    return 0;

  ret = reader_reserve(r, n);
  if (ret < 0)
    return ret;
  memcpy(r->buf + r->len, data, n);
  r->len += n;
  return 0;
}

static ssize_t fd_read(void *ctx, void *buf, size_t n) {
  int fd = *(const int *)ctx;
  ssize_t r;

  do
    r = read(fd, buf, n);
  while (r < 0 && errno == EINTR);
  if (r < 0)
    return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  return r;
}

ssize_t mst_frame_reader_fill_with(struct mst_frame_reader *r, mst_read_fn read_fn, void *ctx) {
  size_t pending, room;
  ssize_t n;
  int ret;

  reader_compact(r);
  pending = mst_frame_reader_pending(r);
  if (pending >= reader_limit(r))
    return -ENOBUFS; /* holds a whole frame already: call next() first */
  room = MST_MIN(reader_limit(r) - pending, (size_t)FRAME_FILL_CHUNK);

  ret = reader_reserve(r, room);
  if (ret < 0)
    return ret;

  n = read_fn(ctx, r->buf + r->len, room);
  if (n > 0)
    r->len += (size_t)n;
  return n;
}

ssize_t mst_frame_reader_fill(struct mst_frame_reader *r, int fd) {
  return mst_frame_reader_fill_with(r, fd_read, &fd);
}

int mst_frame_reader_next(struct mst_frame_reader *r, const uint8_t **ret_data, size_t *ret_len) {
  uint64_t length = 0;
  size_t avail, header = 0;

  reader_compact(r);
  avail = mst_frame_reader_pending(r);
  const uint8_t *p = r->buf + r->start;

  for (size_t i = 0;; i++) {
    if (i >= avail)
      return 0; /* the varint itself is incomplete */
    uint8_t b = p[i];
    /* The 10th byte may only carry the 64th bit. */
    if (i == MST_VARINT_MAX_BYTES - 1 && b > 1)
      return -EBADMSG;
    length |= (uint64_t)(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) {
      header = i + 1;
      break;
    }
  }

  if (length > r->max_frame)
    return -EMSGSIZE;
  if (avail - header < length)
    return 0;

  *ret_data = p + header;
  *ret_len = (size_t)length;
  r->start += header + (size_t)length;
  return 1;
}

int mst_envelope_decode(const uint8_t *data, size_t len, Muster__Envelope **ret) {
  static const uint8_t empty[1];
  Muster__Envelope *env;

  env = muster__envelope__unpack(NULL, len, data ? data : empty);
  if (!env)
    return -EBADMSG;
  if (env->body_case == MUSTER__ENVELOPE__BODY__NOT_SET) {
    muster__envelope__free_unpacked(env, NULL);
    return -EBADMSG;
  }
  *ret = env;
  return 0;
}

void mst_buf_init(struct mst_buf *b, size_t max) {
  *b = (struct mst_buf){.max = max};
}

void mst_buf_done(struct mst_buf *b) {
  free(b->data);
  *b = (struct mst_buf){.max = b->max};
}

size_t mst_buf_pending(const struct mst_buf *b) {
  return b->len - b->off;
}

/* Returns where n more bytes can be written, after checking the cap, or NULL
 * with *ret_error set. The caller then advances b->len itself. */
static uint8_t *buf_reserve(struct mst_buf *b, size_t n, int *ret_error) {
  size_t pending = mst_buf_pending(b);

  if (n > b->max || pending > b->max - n) {
    *ret_error = -ENOBUFS;
    return NULL;
  }
  if (b->cap - b->len < n && b->off > 0) {
    memmove(b->data, b->data + b->off, pending);
    b->len = pending;
    b->off = 0;
  }
  if (b->cap - b->len < n) {
    size_t need = b->len + n;
    size_t cap = MST_MAX(b->cap, (size_t)FRAME_MIN_ALLOC);
    while (cap < need)
      cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    cap = MST_MIN(cap, MST_MAX(b->max, need));

    uint8_t *data = realloc(b->data, cap);
    if (!data) {
      *ret_error = -ENOMEM;
      return NULL;
    }
    b->data = data;
    b->cap = cap;
  }
  return b->data + b->len;
}

int mst_buf_append(struct mst_buf *b, const void *data, size_t n) {
  uint8_t *dst;
  int r;

  if (n == 0)
    return 0;
  dst = buf_reserve(b, n, &r);
  if (!dst)
    return r;
  memcpy(dst, data, n);
  b->len += n;
  return 0;
}

static ssize_t fd_write(void *ctx, const void *data, size_t n) {
  int fd = *(const int *)ctx;
  ssize_t w;

  /* send() with MSG_NOSIGNAL so a closed peer is -EPIPE, not SIGPIPE;
   * write() for pipes and other non-sockets. */
  do {
    w = send(fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 && errno == ENOTSOCK)
      w = write(fd, data, n);
  } while (w < 0 && errno == EINTR);
  if (w < 0)
    return (errno == EAGAIN || errno == EWOULDBLOCK) ? -EAGAIN : -errno;
  return w;
}

int mst_buf_flush_with(struct mst_buf *b, mst_write_fn write_fn, void *ctx) {
  while (b->off < b->len) {
    ssize_t w = write_fn(ctx, b->data + b->off, b->len - b->off);

    if (w < 0)
      return (int)w;
    b->off += (size_t)w;
  }
  b->off = b->len = 0;
  return 0;
}

int mst_buf_flush(struct mst_buf *b, int fd) {
  return mst_buf_flush_with(b, fd_write, &fd);
}

size_t mst_varint_encode(uint64_t v, uint8_t *out) {
  size_t n = 0;

  while (v >= 0x80) {
    out[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  out[n++] = (uint8_t)v;
  return n;
}

int mst_frame_write_envelope(struct mst_buf *b, const Muster__Envelope *env, size_t max_frame) {
  uint8_t header[MST_VARINT_MAX_BYTES];
  size_t size, header_len;
  uint8_t *dst;
  int r;

  size = muster__envelope__get_packed_size(env);
  if (size > max_frame)
    return -EMSGSIZE;
  header_len = mst_varint_encode(size, header);

  /* Reserve the whole frame first so that a refusal leaves b unchanged. */
  dst = buf_reserve(b, header_len + size, &r);
  if (!dst)
    return r;
  memcpy(dst, header, header_len);
  muster__envelope__pack(env, dst + header_len);
  b->len += header_len + size;
  return 0;
}
