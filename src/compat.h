/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Every PG_VERSION_NUM difference the credits extension cares about,
 *	  in one place.  Supported: PostgreSQL 13 to 17.
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

/* PG_MODULE_MAGIC_EXT (18+) lets the server report name and version. */
#ifdef PG_MODULE_MAGIC_EXT
#define CREDITS_MODULE_MAGIC PG_MODULE_MAGIC_EXT(.name = "credits", .version = CREDITS_VERSION)
#else
#define CREDITS_MODULE_MAGIC PG_MODULE_MAGIC
#endif

#endif							/* CREDITS_COMPAT_H */
