/*-------------------------------------------------------------------------
 *
 * credits.h
 *	  Declarations shared by the credits extension's C files: the SQLSTATEs
 *	  it raises and the few pieces of backend-local state.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/credits.h
 *
 * Every error a user can cause has its own SQLSTATE in class "CR"; the
 * README's Errors table lists them.  Keep the two in step.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CREDITS_H
#define CREDITS_H

#include "utils/elog.h"

#define ERRCODE_CREDITS_INSUFFICIENT_CREDITS		MAKE_SQLSTATE('C','R','0','0','1')
#define ERRCODE_CREDITS_RECHARGE_LIMIT_EXCEEDED	MAKE_SQLSTATE('C','R','0','0','2')
#define ERRCODE_CREDITS_UNKNOWN_ACCOUNT			MAKE_SQLSTATE('C','R','0','0','3')
#define ERRCODE_CREDITS_UNKNOWN_CHANNEL			MAKE_SQLSTATE('C','R','0','0','4')
#define ERRCODE_CREDITS_UNKNOWN_RECHARGE			MAKE_SQLSTATE('C','R','0','0','5')
#define ERRCODE_CREDITS_RECHARGE_SETTLED			MAKE_SQLSTATE('C','R','0','0','6')
#define ERRCODE_CREDITS_MANAGED_COLUMN			MAKE_SQLSTATE('C','R','0','0','7')
#define ERRCODE_CREDITS_BATCH_IMMUTABLE			MAKE_SQLSTATE('C','R','0','0','8')
#define ERRCODE_CREDITS_LEDGER_APPEND_ONLY		MAKE_SQLSTATE('C','R','0','0','9')
#define ERRCODE_CREDITS_ACCOUNT_EXISTS			MAKE_SQLSTATE('C','R','0','1','0')
#define ERRCODE_CREDITS_INVALID_MESSAGES			MAKE_SQLSTATE('C','R','0','1','1')
#define ERRCODE_CREDITS_AMOUNT_OUT_OF_RANGE		MAKE_SQLSTATE('C','R','0','1','2')
/* Raised by the SQL functions only; listed so that this is the one list. */
#define ERRCODE_CREDITS_INVALID_POLICY			MAKE_SQLSTATE('C','R','0','1','3')
#define ERRCODE_CREDITS_INVALID_AMOUNT			MAKE_SQLSTATE('C','R','0','1','4')
#define ERRCODE_CREDITS_RECHARGE_NOT_CLAIMED		MAKE_SQLSTATE('C','R','0','1','5')
#define ERRCODE_CREDITS_PAYMENT_REF_IN_USE		MAKE_SQLSTATE('C','R','0','1','7')
#define ERRCODE_CREDITS_MONTHLY_LIMIT_EXCEEDED	MAKE_SQLSTATE('C','R','0','1','8')
#define ERRCODE_CREDITS_NESTED_DEBIT				MAKE_SQLSTATE('C','R','0','1','9')

/* GUCs (credits.c) */
extern int	CreditsMaxPaymentFailures;
extern int	CreditsRechargeExpiry;

/*
 * True only while credits._settle_batches() rewrites batch statuses; the
 * send_batches guard trigger lets status and recharge_id change then and
 * never otherwise.
 */
extern bool credits_settling_batches;

#endif							/* CREDITS_H */
