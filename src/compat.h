/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Every PG_VERSION_NUM difference the credits extension cares about,
 *	  in one place.  Supported: PostgreSQL 13 to 17 (tested on 15 and 17);
 *	  the PostgreSQL 18 API changes known so far are guarded too.
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  src/compat.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CREDITS_COMPAT_H
#define CREDITS_COMPAT_H

#if PG_VERSION_NUM < 130000
#error "credits requires PostgreSQL 13 or later"
#endif

/*
 * MarkGUCPrefixReserved() replaced EmitWarningsOnPlaceholders() in 15; the
 * old name still works there but warns of deprecation in later releases.
 */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

/*
 * HASH_STRINGS appeared in 14; before it, string keys were hash_create()'s
 * default when no other key kind was named.
 */
#if PG_VERSION_NUM < 140000
#define HASH_STRINGS 0
#endif

/*
 * index_beginscan() gained an IndexScanInstrumentation argument in 18.
 */
#if PG_VERSION_NUM >= 180000
#define credits_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan(heap, index, snapshot, NULL, nkeys, norderbys)
#else
#define credits_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan(heap, index, snapshot, nkeys, norderbys)
#endif

/*
 * 18 marks functions that do not return with the prefix pg_noreturn
 * (C11 _Noreturn) and dropped the suffix pg_attribute_noreturn().  Write
 *		pg_noreturn static void f(void) CREDITS_NORETURN;
 * and both work.
 */
#ifdef pg_noreturn
#define CREDITS_NORETURN
#else
#define pg_noreturn
#define CREDITS_NORETURN pg_attribute_noreturn()
#endif

/*
 * Ownership checks by catalog and OID replaced the per-catalog functions in
 * 16 (pg_class_ownercheck became object_ownercheck(RelationRelationId, ...)).
 */
#if PG_VERSION_NUM >= 160000
#define credits_owns_relation(relid, roleid) \
	object_ownercheck(RelationRelationId, relid, roleid)
#else
#define credits_owns_relation(relid, roleid) pg_class_ownercheck(relid, roleid)
#endif

/*
 * Writing rows without SPI (row_write.c).  table_tuple_update() reports
 * which indexes need new entries as a TU_UpdateIndexes from 16 on (a bool
 * before), and ExecInsertIndexTuples() takes the matching onlySummarizing
 * flag from 16, its ResultRelInfo as an argument from 14 (through the
 * EState in 13).  getIdentitySequence() takes the Relation from 17.
 */
#if PG_VERSION_NUM >= 160000
#define credits_update_indexes TU_UpdateIndexes
#define CREDITS_NO_INDEX_UPDATE TU_None
#define credits_insert_index_tuples(rri, slot, estate, update, upd) \
	ExecInsertIndexTuples(rri, slot, estate, update, false, NULL, NIL, \
						  (upd) == TU_Summarizing)
#elif PG_VERSION_NUM >= 140000
#define credits_update_indexes bool
#define CREDITS_NO_INDEX_UPDATE false
#define credits_insert_index_tuples(rri, slot, estate, update, upd) \
	ExecInsertIndexTuples(rri, slot, estate, update, false, NULL, NIL)
#else
#define credits_update_indexes bool
#define CREDITS_NO_INDEX_UPDATE false
#define credits_insert_index_tuples(rri, slot, estate, update, upd) \
	((estate)->es_result_relation_info = (rri), \
	 ExecInsertIndexTuples(slot, estate, false, NULL, NIL))
#endif

#if PG_VERSION_NUM >= 170000
#define credits_identity_sequence(rel, attnum) getIdentitySequence(rel, attnum, false)
#define credits_identity_sequence_if_any(rel, attnum) getIdentitySequence(rel, attnum, true)
#else
#define credits_identity_sequence(rel, attnum) \
	getIdentitySequence(RelationGetRelid(rel), attnum, false)
#define credits_identity_sequence_if_any(rel, attnum) \
	getIdentitySequence(RelationGetRelid(rel), attnum, true)
#endif

/* PG_MODULE_MAGIC_EXT (18+) lets the server report name and version. */
#ifdef PG_MODULE_MAGIC_EXT
#define CREDITS_MODULE_MAGIC PG_MODULE_MAGIC_EXT(.name = "credits", .version = CREDITS_VERSION)
#else
#define CREDITS_MODULE_MAGIC PG_MODULE_MAGIC
#endif

#endif							/* CREDITS_COMPAT_H */
