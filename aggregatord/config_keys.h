/* The keys of the aggregator's config file (docs/configuration.md): one
 * table with bounds and defaults, applied by mst_conf_load(). Kept apart
 * from main.c so that the config fuzz target parses with the real table. */
#pragma once

#include <stddef.h>

#include "mst/config.h"

/* Rows pointing into struct aggr_config (aggr.h). */
extern const struct mst_conf_key aggr_config_keys[];
extern const size_t aggr_config_keys_count;
