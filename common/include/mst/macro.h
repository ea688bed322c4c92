/* Small helpers every module uses: scope-bound cleanup in the style of
 * systemd's _cleanup_, ownership transfer, and array sizes. */
#pragma once

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f)   __attribute__((cleanup(f)))
#define _unused_       __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* Hands ownership of *p to the caller and leaves NULL behind. */
#define TAKE_PTR(p)                                                                                \
  ({                                                                                               \
    __typeof__(p) _took_ = (p);                                                                    \
    (p) = NULL;                                                                                    \
    _took_;                                                                                        \
  })

#define TAKE_FD(fd)                                                                                \
  ({                                                                                               \
    int _fd_ = (fd);                                                                               \
    (fd) = -1;                                                                                     \
    _fd_;                                                                                          \
  })

static inline void freep(void *p) {
  free(*(void **)p);
}

static inline void closep(int *fd) {
  if (*fd >= 0) {
    int saved = errno;
    close(*fd);
    errno = saved;
  }
}

#define _cleanup_free_  _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)

#define MST_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MST_MAX(a, b) ((a) > (b) ? (a) : (b))

#define USEC_PER_SEC  1000000ULL
#define USEC_PER_MSEC 1000ULL
