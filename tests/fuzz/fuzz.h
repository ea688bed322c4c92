/* Helpers the fuzz targets share: a check that holds in every build type
 * (assert() vanishes under NDEBUG), and a file made from the input for the
 * parsers that read a path. Header-only: each target is one .c file. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken invariant is a finding: print where, and crash for libFuzzer. */
#define FUZZ_CHECK(cond)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                     \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

/* The input as a file in memory, reachable by path, so that code which
 * opens a path (mst_ini_parse, mst_profile_load) reads it without touching
 * the disk. The memfd is made on the first call; each call replaces its
 * contents. Returns 0, or -1 when the memfd cannot be made or written. */
struct fuzz_memfile {
  int fd;        /* 0 (stdin, never a memfd) until the first call */
  char path[64]; /* "/proc/self/fd/N" */
};

static inline int fuzz_memfile_set(struct fuzz_memfile *f, const uint8_t *data, size_t size) {
  size_t off = 0;

  if (f->fd <= 0) {
    f->fd = memfd_create("fuzz-input", MFD_CLOEXEC);
    if (f->fd < 0)
      return -1;
    snprintf(f->path, sizeof(f->path), "/proc/self/fd/%d", f->fd);
  }
  if (ftruncate(f->fd, 0) < 0)
    return -1;
  while (off < size) {
    ssize_t n = pwrite(f->fd, data + off, size - off, (off_t)off);
    if (n <= 0)
      return -1;
    off += (size_t)n;
  }
  return 0;
}
