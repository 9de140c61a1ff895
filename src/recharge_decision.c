/*-------------------------------------------------------------------------
 *
 * recharge_decision.c
 *	  The debit and auto-recharge rule of the credits extension.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/recharge_decision.c
 *
 * The rule (README, "How a batch is paid for"):
 *
 *	- auto-recharge off: the batch is paid if balance >= cost, else refused;
 *	- auto-recharge on: the batch is always debited; then, with
 *	  available = balance_after + in_flight (pending and processing
 *	  recharges), if available < min_balance the account needs
 *	  need = min_balance - available more credits, which must fit in one
 *	  recharge (need <= max_credits) or the batch is refused;
 *	- a batch that takes the balance below zero awaits credits.
 *
 *	- how much to buy: the need, or with a target_balance enough to bring
 *	  available up to the target, but never more than max_credits and never
 *	  less than the need; with a monthly_limit, never more than what the
 *	  month has left, and if the need itself does not fit, nothing.
 *
 * Pure arithmetic on values the caller read under the account row lock, so
 * it holds no lock and touches no table; every sum is overflow-checked.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/int.h"

#include "recharge_decision.h"

/*
 * CreditsDecideDebit
 *		What debiting "cost" credits from an account with this balance,
 *		in-flight recharges and policy must do.
 */
DebitDecision
CreditsDecideDebit(int64 balance, int64 in_flight, int64 cost,
				   const RechargePolicy *policy)
{
	DebitDecision d = {DEBIT_PAID, 0, 0, false};
	int64		available;

	if (pg_sub_s64_overflow(balance, cost, &d.balance_after))
	{
		d.verdict = DEBIT_OUT_OF_RANGE;
		return d;
	}
	d.shortfall = d.balance_after < 0;

	if (!policy->enabled)
	{
		if (d.shortfall)
			d.verdict = DEBIT_INSUFFICIENT;
		return d;
	}

	if (pg_add_s64_overflow(d.balance_after, in_flight, &available))
	{
		d.verdict = DEBIT_OUT_OF_RANGE;
		return d;
	}
	if (available >= policy->min_balance)
		return d;

	if (pg_sub_s64_overflow(policy->min_balance, available, &d.need))
	{
		/* the need does not even fit in a bigint: far above any cap */
		d.need = PG_INT64_MAX;
		d.verdict = DEBIT_OVER_LIMIT;
		return d;
	}
	d.verdict = d.need <= policy->max_credits ? DEBIT_NEEDS_RECHARGE : DEBIT_OVER_LIMIT;
	return d;
}

/*
 * CreditsRechargeAmount
 *		How many credits to buy for a DEBIT_NEEDS_RECHARGE decision, before
 *		the monthly limit: the need, or up to the target within max_credits.
 */
int64
CreditsRechargeAmount(const DebitDecision *d, int64 in_flight,
					  const RechargePolicy *policy)
{
	int64		available;
	int64		top_up;

	Assert(d->verdict == DEBIT_NEEDS_RECHARGE);
	if (!policy->has_target)
		return d->need;

	/* cannot overflow: CreditsDecideDebit computed both already */
	available = d->balance_after + in_flight;
	if (pg_sub_s64_overflow(policy->target_balance, available, &top_up))
		top_up = PG_INT64_MAX;
	return Max(d->need, Min(top_up, policy->max_credits));
}

/*
 * CreditsMonthlyRoom
 *		What auto-recharge may still buy this month; never negative.
 */
int64
CreditsMonthlyRoom(int64 monthly_limit, int64 used_this_month)
{
	return used_this_month >= monthly_limit ? 0 : monthly_limit - used_this_month;
}

/*
 * CreditsPendingGrowth
 *		How much a pending recharge of "pending_credits" should grow to serve
 *		a need (buying up to "amount"), or 0 when even the need does not fit
 *		under max_credits and a new recharge must be opened instead.
 */
int64
CreditsPendingGrowth(int64 pending_credits, int64 need, int64 amount,
					 int64 max_credits)
{
	int64		room = pending_credits >= max_credits ? 0 : max_credits - pending_credits;

	if (room < need)
		return 0;
	return Min(amount, room);
}
