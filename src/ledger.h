/*-------------------------------------------------------------------------
 *
 * ledger.h
 *	  The one writer of balances: every write of accounts.balance,
 *	  accounts.in_flight and credits.ledger goes through here.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/ledger.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CREDITS_LEDGER_H
#define CREDITS_LEDGER_H

/* A queued debit, as debit_state.c keeps them. */
typedef struct LedgerDebits
{
	int			n;				/* ledger rows */
	int64	   *account;
	int64	   *delta;
	int64	   *balance_after;
	int64	   *batch;
} LedgerDebits;

/* An account row to write at the end of a statement. */
typedef struct LedgerAccountRows
{
	int			n;
	int64	   *account;
	int64	   *balance;
	int64	   *in_flight;
} LedgerAccountRows;

extern bool LedgerOpenAccount(int64 account_id, int64 initial_credits);
extern int64 LedgerPost(int64 account_id, int64 delta, const char *kind,
						int64 batch_id, int64 recharge_id, const char *note,
						int64 in_flight_delta);
extern void LedgerAddInFlight(int64 account_id, int64 delta);
extern void LedgerWriteDebits(const LedgerDebits *debits,
							  const LedgerAccountRows *accounts);

#endif							/* CREDITS_LEDGER_H */
