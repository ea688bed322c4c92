/* Growable memory: one text buffer with a hard cap (after curl's dynbuf,
 * docs/internals/DYNBUF.md) and one helper for arrays grown an element at a
 * time.
 *
 * A dynbuf holds at most max bytes, always NUL-terminated once it holds
 * anything. The failure contract: when an append fails (out of memory, or
 * the result would pass max), the buffer is freed, its length drops to 0,
 * and the error sticks: every later append fails at once with the same
 * error and changes nothing, until mst_dynbuf_reset(). So a writer can
 * append many pieces and check once, at mst_dynbuf_take() or through
 * b->error. Owned by the caller; not thread-safe (one thread at a time). */
#pragma once

#include <stdarg.h>
#include <stddef.h>

#include "mst/macro.h"

struct mst_dynbuf {
  char *buf;  /* the bytes, NUL-terminated; NULL while nothing was added */
  size_t len; /* bytes held, without the NUL */
  size_t cap; /* bytes allocated */
  size_t max; /* the hard cap on len */
  int error;  /* 0, or the -errno of the first failed append (sticky) */
};

#define MST_DYNBUF_INIT(max_len)                                                                   \
  { .max = (max_len) }

/* Starts an empty buffer that may grow to max bytes (max > 0). */
void mst_dynbuf_init(struct mst_dynbuf *b, size_t max);
/* Frees the bytes and clears the error; the cap stays. Accepts an unused
 * buffer. */
void mst_dynbuf_reset(struct mst_dynbuf *b);

/* Appends n bytes at p. Returns 0, or -ENOMEM, or -EMSGSIZE when len would
 * pass max; on failure the buffer is freed (see above). */
int mst_dynbuf_add(struct mst_dynbuf *b, const void *p, size_t n);
/* Appends the string s (without its NUL). */
int mst_dynbuf_adds(struct mst_dynbuf *b, const char *s);
/* One byte; inline, since JSON and text writers add single bytes often. */
static inline int mst_dynbuf_addc(struct mst_dynbuf *b, char c) {
  if (b->buf && b->cap - b->len > 1) { /* room for c and the NUL (a failed buffer has none) */
    b->buf[b->len++] = c;
    b->buf[b->len] = 0;
    return 0;
  }
  return mst_dynbuf_add(b, &c, 1);
}

/* Appends printf output. Also fails with -EINVAL for a format error. */
int mst_dynbuf_addf(struct mst_dynbuf *b, const char *fmt, ...) _printf_(2, 3);
int mst_dynbuf_vaddf(struct mst_dynbuf *b, const char *fmt, va_list ap) _printf_(2, 0);

/* Room to write up to n bytes straight at the end: returns where they go
 * (followed by room for the NUL), or NULL when growing failed (the buffer
 * then fails as for an append). Say how many were written with
 * mst_dynbuf_commit(). */
char *mst_dynbuf_reserve(struct mst_dynbuf *b, size_t n);
/* After mst_dynbuf_reserve(b, m): counts n <= m bytes written there. */
void mst_dynbuf_commit(struct mst_dynbuf *b, size_t n);

/* Hands the bytes over: *ret (malloc'd, NUL-terminated, "" when empty; the
 * caller frees it) and *ret_len, and leaves b empty. Returns 0, or the
 * sticky error (nothing handed over; b stays failed). */
int mst_dynbuf_take(struct mst_dynbuf *b, char **ret, size_t *ret_len);

/* Grows the array *v, which holds n elements of size bytes, to n + 1 and
 * returns the new element (zeroed), or NULL (out of memory, or the size
 * would overflow) with *v unchanged. The caller counts the element. Use it
 * through MST_ARRAY_APPEND. */
void *mst_array_append(void **v, size_t n, size_t size);

/* MST_ARRAY_APPEND(v, n): v is an lvalue pointer to an array of n
 * elements; it is reallocated to n + 1 and the new element, zeroed, is
 * returned (typed), or NULL with v unchanged. */
#define MST_ARRAY_APPEND(v, n)                                                                     \
  ({                                                                                               \
    void *_arr_ = (v);                                                                             \
    __typeof__(v) _elem_ = mst_array_append(&_arr_, (n), sizeof(*(v)));                            \
    if (_elem_)                                                                                    \
      (v) = _arr_;                                                                                 \
    _elem_;                                                                                        \
  })
