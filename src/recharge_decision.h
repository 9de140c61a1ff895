/*-------------------------------------------------------------------------
 *
 * recharge_decision.h
 *	  The auto-recharge rule as pure arithmetic, apart from any SQL.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/recharge_decision.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CREDITS_RECHARGE_DECISION_H
#define CREDITS_RECHARGE_DECISION_H

/* An account's auto-recharge policy as the debit trigger reads it. */
typedef struct RechargePolicy
{
	bool		enabled;		/* false also when no policy row exists */
	int64		min_balance;
	int64		max_credits;
	bool		has_target;
	int64		target_balance; /* >= min_balance */
	bool		has_monthly_limit;
	int64		monthly_limit;
} RechargePolicy;

/* What a debit of "cost" credits does to an account. */
typedef enum DebitVerdict
{
	DEBIT_PAID,					/* enough credits, or in-flight recharges
								 * already cover the account */
	DEBIT_NEEDS_RECHARGE,		/* pay, and buy "need" more credits */
	DEBIT_INSUFFICIENT,			/* refuse: auto-recharge is off */
	DEBIT_OVER_LIMIT,			/* refuse: need exceeds max_credits */
	DEBIT_OUT_OF_RANGE			/* refuse: a sum would overflow a bigint */
} DebitVerdict;

typedef struct DebitDecision
{
	DebitVerdict verdict;
	int64		balance_after;	/* balance - cost */
	int64		need;			/* > 0 only for DEBIT_NEEDS_RECHARGE and
								 * DEBIT_OVER_LIMIT */
	bool		shortfall;		/* balance_after < 0: the batch awaits
								 * credits */
} DebitDecision;

extern DebitDecision CreditsDecideDebit(int64 balance, int64 in_flight,
										int64 cost,
										const RechargePolicy *policy);
extern int64 CreditsRechargeAmount(const DebitDecision *d, int64 in_flight,
								   const RechargePolicy *policy);
extern int64 CreditsMonthlyRoom(int64 monthly_limit, int64 used_this_month);
extern int64 CreditsPendingGrowth(int64 pending_credits, int64 need,
								  int64 amount, int64 max_credits);

#endif							/* CREDITS_RECHARGE_DECISION_H */
