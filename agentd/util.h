/* Small helpers of the agent that fit nowhere else (util.c): the PRNG of
 * jitter and probe spread, kernel random bytes, a capped file read, one hex digit
 * and the check of an id. The PRNG lives in a->rng_state and is for the loop thread; the
 * rest keeps no state and may be called from any thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct agent;

/* Seeds the agent's PRNG from getrandom(). Jitter only; not for secrets. */
void agent_random_seed(struct agent *a);
/* Uniform in [0, bound); 0 when bound is 0. */
uint64_t agent_random_below(struct agent *a, uint64_t bound);
/* Fills buf with n random bytes from the kernel (for ids). Returns 0 or -errno. */
int agent_random_bytes(void *buf, size_t n);

/* Reads a small file (at most max bytes, else -EFBIG; a NUL byte in it is
 * -EBADMSG) and returns its contents with surrounding whitespace removed
 * (malloc'd, the caller's). */
int agent_read_file_trimmed(const char *path, size_t max, char **ret);

/* The value of one hex digit (0-9, a-f, A-F), or -1 for any other byte. */
int agent_hex_digit(char c);

/* Whether s is 1 to max bytes of UTF-8 without spaces or control
 * characters: what an id may be (a node id, a Mesos id, a DC/OS version),
 * shown as it is in logs and bodies. */
bool agent_word_valid(const char *s, size_t max);
