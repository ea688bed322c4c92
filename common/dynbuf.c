/* The growable buffer and array helper of dynbuf.h. Capacity doubles, from
 * DYNBUF_MIN_CAP, and never passes max + 1 (the NUL). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mst/dynbuf.h"

#define DYNBUF_MIN_CAP 256

void mst_dynbuf_init(struct mst_dynbuf *b, size_t max) {
  *b = (struct mst_dynbuf){.max = max};
}

void mst_dynbuf_reset(struct mst_dynbuf *b) {
  free(b->buf);
  *b = (struct mst_dynbuf){.max = b->max};
}

/* The failure contract: free, empty, and remember why. */
static int dynbuf_fail(struct mst_dynbuf *b, int error) {
  free(b->buf);
  *b = (struct mst_dynbuf){.max = b->max, .error = error};
  return error;
}

/* Makes room for n more bytes and the NUL. */
static int dynbuf_grow(struct mst_dynbuf *b, size_t n) {
  if (b->error)
    return b->error;
  if (n > b->max || b->len > b->max - n)
    return dynbuf_fail(b, -EMSGSIZE);
  size_t need = b->len + n + 1;
  if (need <= b->cap)
    return 0;
  size_t cap = b->cap ? b->cap : DYNBUF_MIN_CAP;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  cap = MST_MIN(cap, b->max + 1);
  char *p = realloc(b->buf, cap);
  if (!p)
    return dynbuf_fail(b, -ENOMEM);
  b->buf = p;
  b->cap = cap;
  return 0;
}

int mst_dynbuf_add(struct mst_dynbuf *b, const void *p, size_t n) {
  int r = dynbuf_grow(b, n);
  if (r < 0)
    return r;
  if (n > 0)
    memcpy(b->buf + b->len, p, n);
  b->len += n;
  b->buf[b->len] = 0;
  return 0;
}

int mst_dynbuf_adds(struct mst_dynbuf *b, const char *s) {
  return mst_dynbuf_add(b, s, strlen(s));
}

int mst_dynbuf_vaddf(struct mst_dynbuf *b, const char *fmt, va_list ap) {
  va_list again;
  int n, r;

  if (b->error)
    return b->error;
  /* Try in the room there is; grow once when it was too small (what fits
   * in cap fits in max: cap never passes max + 1). */
  va_copy(again, ap);
  n = vsnprintf(b->buf ? b->buf + b->len : NULL, b->buf ? b->cap - b->len : 0, fmt, ap);
  if (n < 0) {
    va_end(again);
    return dynbuf_fail(b, -EINVAL);
  }
  if (!b->buf || b->len + (size_t)n >= b->cap) {
    if ((r = dynbuf_grow(b, (size_t)n)) < 0) {
      va_end(again);
      return r;
    }
    vsnprintf(b->buf + b->len, b->cap - b->len, fmt, again);
  }
  va_end(again);
  b->len += (size_t)n;
  return 0;
}

int mst_dynbuf_addf(struct mst_dynbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = mst_dynbuf_vaddf(b, fmt, ap);
  va_end(ap);
  return r;
}

char *mst_dynbuf_reserve(struct mst_dynbuf *b, size_t n) {
  return dynbuf_grow(b, n) < 0 ? NULL : b->buf + b->len;
}

void mst_dynbuf_commit(struct mst_dynbuf *b, size_t n) {
  if (b->error || !b->buf)
    return;
  b->len += n;
  b->buf[b->len] = 0;
}

int mst_dynbuf_take(struct mst_dynbuf *b, char **ret, size_t *ret_len) {
  if (b->error)
    return b->error;
  if (!b->buf && dynbuf_grow(b, 0) < 0)
    return b->error;
  b->buf[b->len] = 0;
  *ret = b->buf;
  if (ret_len)
    *ret_len = b->len;
  *b = (struct mst_dynbuf){.max = b->max};
  return 0;
}

void *mst_array_append(void **v, size_t n, size_t size) {
  if (size == 0 || n >= SIZE_MAX / size - 1)
    return NULL;
  char *p = realloc(*v, (n + 1) * size);
  if (!p)
    return NULL;
  *v = p;
  memset(p + n * size, 0, size);
  return p + n * size;
}
