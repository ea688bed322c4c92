/* Shared-token credentials: reading the token file (which must be readable
 * by its owner only) and comparing tokens in constant time. */
#pragma once

#include <stdbool.h>

/* Reads the first line of path, trimmed. Refuses (-EPERM) a file that group
 * or others can read, and (-EINVAL) an empty token. Returns 0 and *ret. */
int mst_token_read(const char *path, char **ret);

/* Constant-time comparison (in the length of expected). NULL given counts as
 * empty. */
bool mst_token_equal(const char *expected, const char *given);
