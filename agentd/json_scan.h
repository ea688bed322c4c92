/* One string member of a JSON object, found by reading as little as needed
 * (json_scan.c): the agent wants the "id" of the local Mesos state, which
 * comes near the start of a body that can be megabytes on a large cluster,
 * so it keeps only the first AGENT_HTTP_BODY_MAX bytes and looks there.
 * Pure: any thread. */
#pragma once

#include <stddef.h>

/* Looks for the member key of the top-level object in text[0..len) (a
 * prefix of a document is fine), skipping the values of the members before
 * it without decoding them. Returns:
 *   1        found, and a string: *ret is its decoded text (malloc'd, the
 *            caller's; UTF-8, without NUL);
 *   -ENOENT  the object ended without the member;
 *   -EAGAIN  the text ended before the member (a cut prefix);
 *   -EBADMSG not an object, broken JSON before the member, or the member
 *            is not a string (err says which, with the byte offset);
 *   -ENOMEM.
 * ret is set only on success. Nesting is skipped without recursion, so a
 * deep document costs nothing on the stack. */
int agent_json_find_string(const char *text, size_t len, const char *key, char **ret, char *err,
                           size_t errsize);
