/*-------------------------------------------------------------------------
 *
 * row_write.h
 *	  Writing a statement's debits without SPI: the account rows, the
 *	  grant rows and the ledger rows, straight into the heap and its
 *	  indexes.  Only ledger.c calls this.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/row_write.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CREDITS_ROW_WRITE_H
#define CREDITS_ROW_WRITE_H

#include "ledger.h"

typedef struct RowWriter RowWriter;

/* credits.direct_writes: off sends every write through SQL (SPI) */
extern bool CreditsDirectWrites;

extern RowWriter *RowWriterBegin(void);
extern void RowWriterUpdateAccount(RowWriter *w, int64 account_id, ItemPointer tid,
								   int64 balance, int64 in_flight);
extern void RowWriterUpdateGrant(RowWriter *w, int64 grant_id, ItemPointer tid,
								 int64 remaining);
extern void RowWriterInsertLedger(RowWriter *w, const LedgerDebits *rows);
extern void RowWriterEnd(RowWriter *w);

#endif							/* CREDITS_ROW_WRITE_H */
