/*-------------------------------------------------------------------------
 *
 * draw_down.c
 *	  The order in which a debit spends an account's grants, as pure
 *	  functions (no SQL, no state).
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/draw_down.c
 *
 * The order, for every debit: priority (lower first), then the soonest
 * expires_at (grants that never expire last), then the oldest grant
 * (grant_id).  By default plan credits (priority 10) go first, then free
 * credits (signup, 20), promotions (30), then bought ones (purchase and
 * recharge, 50).  ledger.c's SQL (PLAN_OPEN_GRANTS) sorts the same way;
 * keep the two in step.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "draw_down.h"

static int	CompareGrants(const void *a, const void *b);

/*
 * CreditsSortGrants
 *		Sorts grants into draw-down order.
 */
void
CreditsSortGrants(CachedGrant *grants, int n)
{
	if (n > 1)
		qsort(grants, n, sizeof(CachedGrant), CompareGrants);
}

/*
 * CreditsGrantExpired
 *		Whether what is left of the grant has lapsed at "now".
 */
bool
CreditsGrantExpired(const CachedGrant *grant, TimestampTz now)
{
	return grant->expires && grant->expires_at <= now;
}

static int
CompareGrants(const void *a, const void *b)
{
	const CachedGrant *x = a;
	const CachedGrant *y = b;

	if (x->priority != y->priority)
		return x->priority < y->priority ? -1 : 1;
	if (x->expires != y->expires)
		return x->expires ? -1 : 1;
	if (x->expires && x->expires_at != y->expires_at)
		return x->expires_at < y->expires_at ? -1 : 1;
	return (x->grant_id > y->grant_id) - (x->grant_id < y->grant_id);
}
