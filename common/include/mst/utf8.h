/* UTF-8 validation for strings that arrive from outside. protobuf's proto3
 * strings must be valid UTF-8 and every JSON body muster serves must be, so
 * the aggregator refuses frames whose strings are not. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* True when s (NUL-terminated; NULL counts as valid) is well-formed UTF-8:
 * no overlong forms, surrogates or code points above U+10FFFF. */
bool mst_utf8_valid(const char *s);
