# credits: PGXS build for the credits extension.
#
#   make && make install                 build and install into $(PG_CONFIG)'s tree
#   make installcheck                    pg_regress suites (sql/ + expected/) and
#                                        isolation specs (test/specs/ + test/expected/)
#                                        against a running server (PGHOST/PGPORT)
#   scripts/test                         all of the above plus pgTAP, on a throwaway cluster

EXTENSION = credits
EXTVERSION = $(shell sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" $(EXTENSION).control)

MODULE_big = credits
OBJS = \
	src/credits.o \
	src/debit_trigger.o \
	src/recharge_decision.o \
	src/batch_guard.o \
	src/settle.o \
	src/plan_cache.o \
	src/debit_state.o \
	src/direct_access.o \
	src/ledger.o \
	src/row_write.o \
	src/draw_down.o \
	src/legacy.o

# Every install and update script: credits--0.1.0.sql is the base install
# (released scripts are never edited) and CREATE EXTENSION applies the update
# scripts after it to reach default_version.
DATA = $(wildcard $(EXTENSION)--*.sql)

REGRESS = \
	install \
	seed_example \
	debit \
	auto_recharge \
	recharge_worker \
	idempotency \
	batch_guard \
	privileges \
	policy_limits \
	reports \
	bulk \
	verify \
	leases \
	hardening \
	grants \
	plans \
	expiry \
	table_changes \
	direct_writes \
	direct_writes_ddl
REGRESS_OPTS = --inputdir=. --load-extension=$(EXTENSION)

ISOLATION = \
	spend_last_credits \
	concurrent_shortfall \
	idempotency_race \
	claim_while_extending \
	claim_disjoint \
	complete_vs_fail \
	complete_retry \
	disable_during_insert \
	insert_vs_add_credits \
	monthly_limit_race \
	recharge_notify \
	lease_expiry \
	release_vs_complete \
	ddl_during_debit \
	renew_vs_debit \
	renew_vs_renew \
	expire_vs_debit \
	expire_vs_refund \
	renew_vs_settle \
	expiring_notify \
	grant_edit_vs_debit \
	entry_order
ISOLATION_OPTS = --inputdir=test --load-extension=$(EXTENSION)

PG_CPPFLAGS = -I$(srcdir)/src -DCREDITS_VERSION="\"$(EXTVERSION)\""
# -Wextra as the house style asks; PostgreSQL's own headers have unused
# parameters (bufpage.h) and PG_FUNCTION_ARGS is often unused, so that one
# warning is off.
#
# WERROR=1 makes every warning an error (here and in worker/Makefile.inc):
# scripts/test and CI build with it, and so should development.  A plain
# "make" does not, so a newer compiler's new warning does not stop a user's
# build.
WERROR ?=
CREDITS_WERROR = $(if $(filter 1 yes true,$(WERROR)),-Werror)
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter $(CREDITS_WERROR)

EXTRA_CLEAN = results output_iso regression.diffs regression.out

# The payment worker program (libpq), installed into PostgreSQL's bindir.
include worker/Makefile.inc

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks header dependencies only in builds configured with
# --enable-depend; rebuild every object when any of our headers changes.
$(OBJS): $(wildcard src/*.h)
