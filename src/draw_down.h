/*-------------------------------------------------------------------------
 *
 * draw_down.h
 *	  The order in which a debit spends an account's grants.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/draw_down.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CREDITS_DRAW_DOWN_H
#define CREDITS_DRAW_DOWN_H

#include "debit_state.h"

extern void CreditsSortGrants(CachedGrant *grants, int n);
extern bool CreditsGrantExpired(const CachedGrant *grant, TimestampTz now);

#endif							/* CREDITS_DRAW_DOWN_H */
