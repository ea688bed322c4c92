/* The keys of the agent's config file ([agent] and [log]): one table with
 * bounds and defaults, applied by mst_conf_load(). Kept apart from
 * config.c so that the config fuzz target parses with the real table. */
#pragma once

#include <stddef.h>

#include "mst/config.h"

/* Rows pointing into struct agent_config (config.h). */
extern const struct mst_conf_key agent_config_keys[];
extern const size_t agent_config_keys_count;
