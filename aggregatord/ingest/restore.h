/* What a start reads back from the history database before the writer
 * thread owns it: the leadership epoch, every spool's held seq, the node
 * registry and the stage completions (durations the estimates learn from,
 * stages each node's latest boot reached). Start-up, on the main thread. */
#pragma once

#include <sqlite3.h>
#include <stdint.h>

struct aggr_model;
struct aggr_stage;
struct aggr_spools;

/* Reads db into spools, model and the stage engine, and takes the next epoch: the previous
 * one + 1 (1 on an empty database), stored in db before returning in
 * *ret_epoch. Returns 0, -ENOMEM, or -EIO after logging SQLite's message. */
int aggr_restore(sqlite3 *db, struct aggr_spools *spools, struct aggr_model *model,
                 struct aggr_stage *stage, uint64_t *ret_epoch);
