/* Small helpers of the agent that fit nowhere else: the PRNG behind the
 * probe spread and the reconnect jitter (splitmix64 seeded from the kernel;
 * jitter needs no cryptographic quality, ids use agent_random_bytes()),
 * reading a small file such as the token or the boot id with a size cap,
 * and the value of a hex digit (chunk sizes, percent escapes). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "mst/macro.h"
#include "mst/utf8.h"
#include "util.h"

int agent_random_bytes(void *buf, size_t n) {
  uint8_t *p = buf;

  while (n > 0) {
    ssize_t k = getrandom(p, n, 0);
    if (k < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

void agent_random_seed(struct agent *a) {
  uint64_t seed;

  if (agent_random_bytes(&seed, sizeof(seed)) < 0) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)getpid();
  }
  a->rng_state = seed;
}

static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t agent_random_below(struct agent *a, uint64_t bound) {
  if (bound == 0)
    return 0;
  /* The modulo bias is irrelevant for jitter. */
  return splitmix64(&a->rng_state) % bound;
}

static bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

int agent_read_file_trimmed(const char *path, size_t max, char **ret) {
  _cleanup_close_ int fd = -1;
  _cleanup_free_ char *buf = NULL;
  size_t len = 0;

  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return -errno;
  buf = malloc(max + 1);
  if (!buf)
    return -ENOMEM;
  for (;;) {
    ssize_t n = read(fd, buf + len, max + 1 - len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (n == 0)
      break;
    len += (size_t)n;
    if (len > max)
      return -EFBIG;
  }
  buf[len] = '\0';
  if (memchr(buf, '\0', len))
    return -EBADMSG;

  size_t start = 0;
  while (start < len && is_space(buf[start]))
    start++;
  while (len > start && is_space(buf[len - 1]))
    len--;
  memmove(buf, buf + start, len - start);
  buf[len - start] = '\0';
  *ret = TAKE_PTR(buf);
  return 0;
}

int agent_hex_digit(char c) {
  static const char digits[] = "0123456789abcdef";
  const char *d = memchr(digits, c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c, 16);

  return d ? (int)(d - digits) : -1;
}

bool agent_word_valid(const char *s, size_t max) {
  size_t n = strlen(s);

  if (n == 0 || n > max || !mst_utf8_valid(s))
    return false;
  for (const char *c = s; *c; c++)
    if ((unsigned char)*c <= 0x20 || (unsigned char)*c == 0x7f)
      return false;
  return true;
}
