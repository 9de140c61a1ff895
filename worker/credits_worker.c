/*-------------------------------------------------------------------------
 *
 * credits_worker.c
 *	  credits-worker: the payment worker shipped with the credits extension.
 *	  It claims pending recharges, runs a charge command for each, and
 *	  records the outcome with credits.complete_recharge(),
 *	  credits.fail_recharge() or credits.release_recharge().
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  worker/credits_worker.c
 *
 * Start-up.  Before anything is claimed the worker checks that the charge
 * command's program exists and is executable (exit 5 if not), connects,
 * checks that the database has the credits extension with leases (exit 6)
 * and that the role may call the four functions it uses (exit 7).  Every
 * session sets lock_timeout and statement_timeout.
 *
 * The loop.  Claim up to --batch recharges with one autocommitted
 * "SELECT ... FROM credits.claim_recharges($1)", so the claim (its
 * claim_token and lease) is committed before any card is charged.  Each
 * claimed recharge becomes a Held entry in memory.  For each one run the
 * charge command (fork and exec of /bin/sh -c in its own process group; the
 * recharge is passed only in the environment, never in the command string),
 * then record the outcome with one autocommitted call carrying the claim
 * token, values always passed as parameters.  When there is nothing to
 * claim, wait on the connection's socket until a NOTIFY credits_recharge
 * arrives, --poll-interval passes, or a held entry is due; then go round
 * again.  Notifications only make the worker quicker.
 *
 * Held entries.  A recharge stays in memory, in claim order, in one of three
 * states: to charge (claimed, not charged yet), to record (the outcome is
 * known, recording it hit a lock or statement timeout, a deadlock or a lost
 * connection: retried with backoff, 1 s doubling to 30 s), or to retry (the
 * outcome of the charge is unknown: charged again with the same recharge id
 * after --retry-interval, doubling, but only while the lease leaves room for
 * a whole charge; otherwise it is dropped and whoever claims it after its
 * lease expires charges it again).  An entry that cannot be settled now
 * never holds up the others: each pass handles every entry that is due.
 *
 * Outcomes.  Exit 0 with a valid payment reference on the first line of
 * stdout: complete_recharge.  Exit 1-125 but 75: a decline, fail_recharge with
 * stderr as the reason.  Exit 126/127 (the shell could not run the program)
 * or a failed fork: a worker fault, release_recharge hands the recharge back
 * to pending, the other unstarted claims are released too and claiming
 * pauses (--retry-interval doubling to 5 min).  Exit 75 (EX_TEMPFAIL: the
 * command itself does not know), killed by a signal, exit 129-192 (a shell
 * whose command was killed), no answer within
 * --charge-timeout (the process group gets SIGTERM, then SIGKILL after
 * KILL_GRACE_MS), or exit 0 with a blank, over-long or white-space-padded
 * reference: the outcome is unknown; the recharge is neither failed nor
 * completed.  MC020 (claim no longer held) drops the entry: another holder
 * settles it.
 *
 * Concurrency.  Any number of workers may run against one database:
 * claim_recharges() uses FOR UPDATE SKIP LOCKED, so concurrent claims return
 * disjoint rows; a lease that expires lets another worker claim the
 * recharge again, and the claim token makes the first holder's late
 * recording fail with MC020 instead of settling twice.  The worker holds no
 * lock and no open transaction while a charge command runs.  One process is
 * single-threaded and runs one charge command at a time.
 *
 * Signals.  SIGTERM and SIGINT set a flag and write a byte to a self-pipe
 * that every wait polls, so an idle worker stops at once.  After the first
 * signal the worker claims and charges nothing more: it records the charge
 * in hand, releases the claims it has not started, and keeps trying to
 * record known outcomes for STOP_GRACE_MS; a second signal cuts that to one
 * attempt each.  An outcome still not recorded is logged with the SQL that
 * records it and the worker exits 3.  Charge commands run in their own
 * process group, so a terminal's Ctrl-C reaches the worker only.
 *
 *-------------------------------------------------------------------------
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "libpq-fe.h"

#ifndef CREDITS_VERSION
#define CREDITS_VERSION "unknown"
#endif

#define PROGNAME			"credits-worker"
#define NOTIFY_CHANNEL		"credits_recharge"
#define DISABLED_CHANNEL	"credits_auto_recharge_disabled"

#define DEFAULT_BATCH		10
#define MAX_BATCH			1000
#define DEFAULT_POLL_MS		5000
#define DEFAULT_CHARGE_TIMEOUT_MS	120000
#define DEFAULT_LOCK_TIMEOUT_MS		5000
#define DEFAULT_STATEMENT_TIMEOUT_MS 60000
#define DEFAULT_HEARTBEAT_MS		60000
#define DEFAULT_RETRY_MS	30000
#define MAX_DURATION_MS		86400000	/* one day */
#define KILL_GRACE_MS		5000	/* SIGTERM to SIGKILL after a timeout */
#define LEASE_MARGIN_MS		2000	/* never start a charge closer to the
									 * end of its lease */
#define BACKOFF_MIN_MS		500
#define BACKOFF_MAX_MS		5000
#define DEFER_MIN_MS		1000	/* a deferred recording: first retry */
#define DEFER_MAX_MS		30000
#define RETRY_MAX_MS		300000	/* unknown outcome / command pause cap */
#define CONNECT_TIMEOUT_MS	30000
#define START_CONNECT_TRIES 3
#define STOP_GRACE_MS		10000
#define MAX_HELD			1000	/* stop claiming while holding this many */
#define MAX_REASON_BYTES	1000
#define MAX_REF_BYTES		255
#define MAX_CAPTURE_BYTES	65536
#define EXIT_TEMPFAIL		75	/* sysexits.h EX_TEMPFAIL: the charge
								 * command's "outcome unknown" */

/* Exit statuses; worker/README.md documents them. */
#define EXIT_STOPPED		0	/* clean stop, or --once settled everything */
#define EXIT_USAGE			1	/* bad command line */
#define EXIT_NO_CONNECTION	2	/* could not connect at start */
#define EXIT_ATTENTION		3	/* stopped with an outcome not recorded */
#define EXIT_ERRORS			4	/* --once: a refusal or an unknown outcome
								 * left; or out of memory */
#define EXIT_BAD_COMMAND	5	/* the charge command cannot run */
#define EXIT_NO_EXTENSION	6	/* no (or a too old) credits extension */
#define EXIT_NO_PRIVILEGE	7	/* the role lacks a needed privilege */

/* One claimed recharge, as text straight from the claim's result. */
typedef struct Recharge
{
	char		id[32];
	char		account_id[32];
	char		credits[32];
	char		token[48];		/* claim_token */
	char		lease_until[48];	/* lease_expires_at, for the log */
	int64_t		lease_end;		/* the same on our monotonic clock */
	int64_t		lease_ms;		/* the lease's length when claimed */
} Recharge;

typedef enum OutcomeKind
{
	OUT_CHARGED,				/* text: the payment reference */
	OUT_DECLINED,				/* text: the failure reason */
	OUT_UNKNOWN,				/* text: what happened, reference quoted */
	OUT_NOT_RUN					/* text: why the command did not run */
} OutcomeKind;

/* What the charge command said. */
typedef struct Outcome
{
	OutcomeKind kind;
	char	   *text;
} Outcome;

typedef enum HeldState
{
	HELD_TO_CHARGE,				/* claimed, not charged yet */
	HELD_TO_RECORD,				/* action known, not recorded yet */
	HELD_TO_RETRY				/* outcome unknown: charge again later */
} HeldState;

typedef enum Action
{
	ACT_COMPLETE,
	ACT_FAIL,
	ACT_RELEASE
} Action;

/* A recharge this worker holds a claim on. */
typedef struct Held
{
	Recharge	r;
	HeldState	state;
	Action		action;			/* HELD_TO_RECORD */
	char	   *text;			/* payment reference or failure reason */
	int64_t		next_try;		/* monotonic ms */
	int			wait_ms;		/* current backoff */
	int64_t		took_ms;		/* duration of the last charge, or -1 */
	bool		done;			/* settled or dropped: to be removed */
} Held;

typedef enum RecordResult
{
	REC_DONE,					/* committed (or already was) */
	REC_DEFER,					/* try again later */
	REC_STALE,					/* MC020: the claim is no longer ours */
	REC_BAD_REF,				/* MC021: the server refused the reference */
	REC_REFUSED					/* the server refused it for good */
} RecordResult;

/* Options */
static const char *opt_dbname = NULL;
static const char *opt_command = NULL;
static int	opt_batch = DEFAULT_BATCH;
static int	opt_poll_ms = DEFAULT_POLL_MS;
static int	opt_charge_timeout_ms = DEFAULT_CHARGE_TIMEOUT_MS;
static int	opt_lock_timeout_ms = DEFAULT_LOCK_TIMEOUT_MS;
static int	opt_statement_timeout_ms = DEFAULT_STATEMENT_TIMEOUT_MS;
static int	opt_heartbeat_ms = DEFAULT_HEARTBEAT_MS;
static int	opt_retry_ms = DEFAULT_RETRY_MS;
static bool opt_once = false;
static bool opt_quiet = false;

/* State */
static PGconn *conn = NULL;
static bool woken = false;		/* a notification arrived since the last claim */
static bool needs_attention = false;	/* exit EXIT_ATTENTION */
static bool had_errors = false; /* --once exits EXIT_ERRORS */
static bool command_fault = false;	/* --once exits EXIT_BAD_COMMAND */
static volatile sig_atomic_t stop_signals = 0;
static volatile sig_atomic_t last_signal = 0;
static int	wake_pipe[2] = {-1, -1};
static int64_t next_heartbeat = 0;
static int64_t claims_paused_until = 0; /* after a command that did not run */
static int	pause_ms = 0;

static Held *held = NULL;
static int	nheld = 0;
static int	held_size = 0;

/* Counters for the heartbeat, since start. */
static long n_claimed = 0;
static long n_succeeded = 0;
static long n_failed = 0;
static long n_unknown = 0;
static long n_deferred = 0;
static long n_released = 0;
static long n_stale = 0;

static void LogLine(bool always, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

#define LogInfo(...)	LogLine(false, __VA_ARGS__)
#define LogError(...)	LogLine(true, __VA_ARGS__)


/*
 * Milliseconds on the monotonic clock.
 */
static int64_t
NowMs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Makes a message fit on one log line: every run of white space that holds
 * a control character (a newline in a libpq error, say) becomes one space,
 * other control characters become spaces, and trailing white space goes.
 * Runs of plain spaces are kept, so a logged payment reference is exact.
 */
static void
SqueezeToOneLine(char *s)
{
	char	   *src = s;
	char	   *dst = s;

	while (*src)
	{
		unsigned char c = (unsigned char) *src;

		if (c < 0x20 || c == 0x7f)
		{
			/* swallow the whole white-space run around it */
			while (dst > s && dst[-1] == ' ')
				dst--;
			while (*src && ((unsigned char) *src < 0x20 ||
							(unsigned char) *src == 0x7f || *src == ' '))
				src++;
			if (dst != s)
				*dst++ = ' ';
			continue;
		}
		*dst++ = *src++;
	}
	while (dst > s && dst[-1] == ' ')
		dst--;
	*dst = '\0';
}

/*
 * Writes one line to stderr: UTC timestamp, program and pid, message.  The
 * line goes out in one write() so lines of several workers sharing a log do
 * not interleave; it is never cut, however long (a payment reference is
 * always logged whole).  Informational lines are dropped under --quiet.
 */
static void
LogLine(bool always, const char *fmt,...)
{
	char		small[2048];
	char	   *msg = small;
	char	   *line;
	char		stamp[32];
	time_t		now = time(NULL);
	struct tm	tm;
	va_list		ap;
	int			len;
	size_t		size;
	int			save_errno = errno;

	if (opt_quiet && !always)
		return;
	va_start(ap, fmt);
	len = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (len < 0)
		return;
	if ((size_t) len >= sizeof(small))
	{
		msg = malloc((size_t) len + 1);
		if (msg == NULL)
			msg = small;		/* cut, but still a line */
		else
		{
			va_start(ap, fmt);
			vsnprintf(msg, (size_t) len + 1, fmt, ap);
			va_end(ap);
		}
	}
	SqueezeToOneLine(msg);
	if (gmtime_r(&now, &tm) == NULL ||
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		strcpy(stamp, "-");
	size = strlen(msg) + 96;
	line = malloc(size);
	if (line != NULL)
	{
		len = snprintf(line, size, "%s %s[%d]: %s\n",
					   stamp, PROGNAME, (int) getpid(), msg);
		if (len > 0 && write(STDERR_FILENO, line, len) < 0)
		{
			/* nowhere left to complain */
		}
		free(line);
	}
	if (msg != small)
		free(msg);
	errno = save_errno;
}

static void *
AllocOrDie(size_t size)
{
	void	   *p = malloc(size);

	if (p == NULL)
	{
		LogError("out of memory");
		exit(EXIT_ERRORS);
	}
	return p;
}

static char *
CopyString(const char *s)
{
	size_t		len = strlen(s);
	char	   *p = AllocOrDie(len + 1);

	memcpy(p, s, len + 1);
	return p;
}

/*
 * A copy of s between single quotes for the log, quotes doubled (so it can
 * be pasted into SQL) and control characters shown as \xNN, so leading and
 * trailing white space and odd bytes are visible.  The caller frees it.
 */
static char *
QuoteForLog(const char *s)
{
	char	   *out = AllocOrDie(strlen(s) * 4 + 3);
	char	   *d = out;

	*d++ = '\'';
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if (c == '\'')
		{
			*d++ = '\'';
			*d++ = '\'';
		}
		else if (c < 0x20 || c == 0x7f)
		{
			snprintf(d, 5, "\\x%02x", c);
			d += 4;
		}
		else
			*d++ = *s;
	}
	*d++ = '\'';
	*d = '\0';
	return out;
}
/*
 * Makes buf[0..len) valid UTF-8 with no NUL byte, in place, replacing each
 * offending byte with '?', so the server never refuses a reason or a
 * payment reference for its encoding.  The rules are those of the server's
 * pg_utf8_islegal(): no overlong forms, no surrogates, nothing above
 * U+10FFFF.
 */
static void
MakeValidUtf8(char *buf, size_t len)
{
	unsigned char *s = (unsigned char *) buf;
	size_t		i = 0;

	while (i < len)
	{
		unsigned char c = s[i];
		size_t		need;
		unsigned char lo = 0x80;
		unsigned char hi = 0xbf;
		size_t		k;

		if (c == 0)
		{
			s[i++] = '?';
			continue;
		}
		if (c < 0x80)
		{
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			need = 1;
		else if (c >= 0xe0 && c <= 0xef)
		{
			need = 2;
			if (c == 0xe0)
				lo = 0xa0;		/* overlong */
			else if (c == 0xed)
				hi = 0x9f;		/* surrogates */
		}
		else if (c >= 0xf0 && c <= 0xf4)
		{
			need = 3;
			if (c == 0xf0)
				lo = 0x90;		/* overlong */
			else if (c == 0xf4)
				hi = 0x8f;		/* above U+10FFFF */
		}
		else
		{
			s[i++] = '?';
			continue;
		}
		if (i + need >= len)
		{
			/* truncated sequence at the end */
			s[i++] = '?';
			continue;
		}
		if (s[i + 1] < lo || s[i + 1] > hi)
		{
			s[i++] = '?';
			continue;
		}
		for (k = 2; k <= need; k++)
			if (s[i + k] < 0x80 || s[i + k] > 0xbf)
				break;
		if (k <= need)
		{
			s[i++] = '?';
			continue;
		}
		i += need + 1;
	}
}

/*
 * Cuts valid UTF-8 s to at most max bytes without splitting a character.
 */
static void
TruncateUtf8(char *s, size_t max)
{
	size_t		len = strlen(s);

	if (len <= max)
		return;
	len = max;
	while (len > 0 && ((unsigned char) s[len] & 0xc0) == 0x80)
		len--;
	s[len] = '\0';
}

/*
 * Trims leading and trailing white space in place; returns the new start.
 */
static char *
Trim(char *s)
{
	char	   *end;

	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' ||
		   *s == '\f' || *s == '\v')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' ||
					   end[-1] == '\r' || end[-1] == '\f' || end[-1] == '\v'))
		end--;
	*end = '\0';
	return s;
}


/*
 * Length in bytes of the white-space character outside ASCII that valid
 * UTF-8 s starts with, or 0: U+0085, U+00A0, U+1680, U+2000-U+200B, U+2028,
 * U+2029, U+202F, U+205F, U+3000 and U+FEFF, the extension's own list
 * (credits._check_payment_ref, MC021).
 */
static int
WideSpaceLength(const unsigned char *s)
{
	if (s[0] == 0xc2 && (s[1] == 0x85 || s[1] == 0xa0))
		return 2;
	if (s[0] == 0xe1 && s[1] == 0x9a && s[2] == 0x80)
		return 3;
	if (s[0] == 0xe2 && s[1] == 0x80 &&
		((s[2] >= 0x80 && s[2] <= 0x8b) || s[2] == 0xa8 || s[2] == 0xa9 ||
		 s[2] == 0xaf))
		return 3;
	if (s[0] == 0xef && s[1] == 0xbb && s[2] == 0xbf)
		return 3;
	if (s[0] == 0xe2 && s[1] == 0x81 && s[2] == 0x9f)
		return 3;
	if (s[0] == 0xe3 && s[1] == 0x80 && s[2] == 0x80)
		return 3;
	return 0;
}

/*
 * True when valid UTF-8 s (already trimmed of ASCII white space) starts or
 * ends with Unicode white space.
 */
static bool
HasWideSpaceAtEdges(const char *s)
{
	const unsigned char *u = (const unsigned char *) s;
	size_t		len = strlen(s);
	size_t		i;

	if (len == 0)
		return false;
	if (WideSpaceLength(u) > 0)
		return true;
	/* the last character starts at most 3 bytes before the end */
	for (i = len > 3 ? len - 3 : 0; i < len; i++)
		if ((u[i] & 0xc0) != 0x80)
		{
			int			n = WideSpaceLength(u + i);

			if (n > 0 && i + n == len)
				return true;
		}
	return false;
}


/* ---------------------------------------------------------------------
 * Signals and waiting
 * ---------------------------------------------------------------------
 */

static void
HandleStopSignal(int signo)
{
	int			save_errno = errno;

	last_signal = signo;
	if (stop_signals < 2)
		stop_signals = stop_signals + 1;
	if (write(wake_pipe[1], "x", 1) < 0)
	{
		/* pipe full: a wake-up is pending already */
	}
	errno = save_errno;
}

/* Logs each stop signal once, outside the handler. */
static void
NoteStopSignal(void)
{
	static int	noted = 0;

	if (stop_signals <= noted)
		return;
	noted = stop_signals;
	if (noted == 1)
		LogError("received %s: stopping; claiming and charging nothing more, recording what is known, releasing unstarted claims",
				 last_signal == SIGINT ? "SIGINT" : "SIGTERM");
	else
		LogError("received a second stop signal (%s): one last attempt to record, then exit",
				 last_signal == SIGINT ? "SIGINT" : "SIGTERM");
}

static bool
SetNonBlockingCloexec(int fd)
{
	int			flags = fcntl(fd, F_GETFL);

	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return false;
	flags = fcntl(fd, F_GETFD);
	if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
		return false;
	return true;
}

static void
SetUpSignals(void)
{
	struct sigaction sa;

	if (pipe(wake_pipe) != 0 ||
		!SetNonBlockingCloexec(wake_pipe[0]) ||
		!SetNonBlockingCloexec(wake_pipe[1]))
	{
		LogError("could not create the signal pipe: %s", strerror(errno));
		exit(EXIT_ERRORS);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = HandleStopSignal;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGTERM);
	sigaddset(&sa.sa_mask, SIGINT);
	sa.sa_flags = 0;			/* no SA_RESTART: waits see EINTR */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	/* A closed log pipe must not kill a worker holding a charged recharge. */
	signal(SIGPIPE, SIG_IGN);
}

static void
DrainWakePipe(void)
{
	char		buf[64];

	while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
		;
}

/*
 * Waits until sock (when >= 0) is ready for events, until the monotonic
 * deadline, or until stop_signals reaches stop_level.  Returns 1 when the
 * socket is ready, 0 at the deadline, -1 when stopped.
 */
static int
WaitReady(int sock, short events, int64_t deadline, int stop_level)
{
	for (;;)
	{
		struct pollfd pfd[2];
		int			nfds = 1;
		int64_t		left;
		int			rc;

		if (stop_signals >= stop_level)
			return -1;
		left = deadline - NowMs();
		if (left <= 0)
			return 0;
		if (left > INT_MAX)
			left = INT_MAX;
		pfd[0].fd = wake_pipe[0];
		pfd[0].events = POLLIN;
		pfd[0].revents = 0;
		if (sock >= 0)
		{
			pfd[1].fd = sock;
			pfd[1].events = events;
			pfd[1].revents = 0;
			nfds = 2;
		}
		rc = poll(pfd, nfds, (int) left);
		if (rc < 0)
		{
			if (errno == EINTR)
				continue;
			LogError("poll failed: %s", strerror(errno));
			return 0;
		}
		if (pfd[0].revents)
			DrainWakePipe();
		if (nfds == 2 && pfd[1].revents)
			return 1;
	}
}

/* Sleeps ms milliseconds; false when a stop signal cut it short. */
static bool
SleepMs(int ms, int stop_level)
{
	return WaitReady(-1, 0, NowMs() + ms, stop_level) == 0;
}

/* Counts held entries by state. */
static void
CountHeld(int *to_charge, int *to_record, int *to_retry)
{
	int			i;

	*to_charge = *to_record = *to_retry = 0;
	for (i = 0; i < nheld; i++)
	{
		if (held[i].done)
			continue;
		if (held[i].state == HELD_TO_CHARGE)
			(*to_charge)++;
		else if (held[i].state == HELD_TO_RECORD)
			(*to_record)++;
		else
			(*to_retry)++;
	}
}

/* Logs the counters every --heartbeat (0: never). */
static void
MaybeHeartbeat(void)
{
	int64_t		now;
	int			c,
				r,
				t;

	if (opt_heartbeat_ms <= 0)
		return;
	now = NowMs();
	if (now < next_heartbeat)
		return;
	next_heartbeat = now + opt_heartbeat_ms;
	CountHeld(&c, &r, &t);
	LogInfo("heartbeat: claimed %ld, succeeded %ld, failed %ld, unknown outcome %ld, deferred %ld, released %ld, claim lost %ld; holding %d to charge, %d to record, %d to retry%s",
			n_claimed, n_succeeded, n_failed, n_unknown, n_deferred,
			n_released, n_stale, c, r, t,
			conn == NULL ? "; not connected" : "");
}


/* ---------------------------------------------------------------------
 * Connection
 * ---------------------------------------------------------------------
 */

/*
 * NOTIFY credits_auto_recharge_disabled carries an account id.  Anyone who
 * may connect can send a NOTIFY, so the payload is trusted only when it
 * comes from this worker's own session, where the only statements are the
 * extension's functions (fail_recharge sends it when it turns auto-recharge
 * off); from another session it is logged as what it is, a hint.
 */
static void
LogAutoRechargeOff(const PGnotify *n)
{
	char		payload[72];
	size_t		i;

	snprintf(payload, sizeof(payload), "%s", n->extra ? n->extra : "");
	for (i = 0; payload[i]; i++)
		if ((unsigned char) payload[i] < 0x20 || payload[i] == '\'' ||
			(unsigned char) payload[i] >= 0x7f)
			payload[i] = '?';
	if (conn != NULL && n->be_pid == PQbackendPID(conn))
		LogError("account %s: auto-recharge turned itself off after repeated payment failures (our own fail_recharge said so); it stays off until credits.enable_auto_recharge() is called",
				 payload);
	else
		LogError("notification on %s from server process %d says auto-recharge was turned off for account '%s' (probably another worker's fail_recharge; a hint, not verified: check credits.auto_recharge)",
				 DISABLED_CHANNEL, n->be_pid, payload);
}

/* Takes the queued notifications. */
static void
DrainNotifies(void)
{
	PGnotify   *n;

	if (conn == NULL)
		return;
	while ((n = PQnotifies(conn)) != NULL)
	{
		if (strcmp(n->relname, DISABLED_CHANNEL) == 0)
			LogAutoRechargeOff(n);
		else
			woken = true;
		PQfreemem(n);
	}
}

/* Logs the loss and forgets the connection; the next step reconnects. */
static void
DropConnection(const char *when)
{
	LogError("connection lost %s: %s", when,
			 conn ? PQerrorMessage(conn) : "no connection");
	if (conn)
		PQfinish(conn);
	conn = NULL;
}

/* Server notices and errors that arrive outside a query go to the log. */
static void
NoticeToLog(void *arg, const char *message)
{
	(void) arg;
	LogError("server: %s", message);
}

/*
 * One connection attempt, non-blocking so that a stop signal at stop_level
 * can cut it short.  On success sets conn, the session's lock_timeout and
 * statement_timeout, and LISTENs.  The application name defaults to
 * credits-worker; client_encoding is forced to UTF8 because reasons and
 * references are sent as UTF-8 (see MakeValidUtf8).
 */
static bool
ConnectOnce(int stop_level, int64_t deadline)
{
	const char *keys[] = {"dbname", "fallback_application_name",
	"client_encoding", NULL};
	const char *values[] = {opt_dbname, PROGNAME, "UTF8", NULL};
	PostgresPollingStatusType state = PGRES_POLLING_WRITING;
	PGconn	   *c;
	PGresult   *res;
	char		lock_ms[32];
	char		statement_ms[32];
	const char *params[2];

	c = PQconnectStartParams(keys, values, 1);
	if (c == NULL)
	{
		LogError("could not connect: out of memory");
		return false;
	}
	PQsetNoticeProcessor(c, NoticeToLog, NULL);
	while (PQstatus(c) != CONNECTION_BAD &&
		   state != PGRES_POLLING_OK && state != PGRES_POLLING_FAILED)
	{
		int			rc;

		rc = WaitReady(PQsocket(c),
					   state == PGRES_POLLING_READING ? POLLIN : POLLOUT,
					   deadline, stop_level);
		if (rc < 0)
		{
			PQfinish(c);
			return false;
		}
		if (rc == 0)
		{
			LogError("could not connect: timed out");
			PQfinish(c);
			return false;
		}
		state = PQconnectPoll(c);
	}
	if (PQstatus(c) != CONNECTION_OK)
	{
		LogError("could not connect: %s", PQerrorMessage(c));
		PQfinish(c);
		return false;
	}
	conn = c;
	LogInfo("connected to database \"%s\" as \"%s\" on %s port %s",
			PQdb(conn), PQuser(conn), PQhost(conn), PQport(conn));

	/*
	 * A row lock held by a long application transaction must delay one
	 * account only: a recording that waits longer than lock_timeout fails
	 * with 55P03 and is retried later, while the worker goes on.
	 */
	snprintf(lock_ms, sizeof(lock_ms), "%dms", opt_lock_timeout_ms);
	snprintf(statement_ms, sizeof(statement_ms), "%dms", opt_statement_timeout_ms);
	params[0] = lock_ms;
	params[1] = statement_ms;
	res = PQexecParams(conn,
					   "SELECT pg_catalog.set_config('lock_timeout', $1, false),"
					   " pg_catalog.set_config('statement_timeout', $2, false)",
					   2, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		LogError("could not set lock_timeout and statement_timeout: %s",
				 PQerrorMessage(conn));
	PQclear(res);

	res = PQexec(conn, "LISTEN " NOTIFY_CHANNEL "; LISTEN " DISABLED_CHANNEL);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		LogError("could not listen on %s and %s, relying on the poll timer: %s",
				 NOTIFY_CHANNEL, DISABLED_CHANNEL, PQerrorMessage(conn));
	PQclear(res);
	if (PQstatus(conn) == CONNECTION_BAD)
		DropConnection("after connecting");
	return conn != NULL;
}

/* At start: a few tries, then give up (EXIT_NO_CONNECTION). */
static bool
ConnectAtStart(void)
{
	int			backoff = BACKOFF_MIN_MS;
	int			attempt;

	for (attempt = 1; attempt <= START_CONNECT_TRIES; attempt++)
	{
		if (ConnectOnce(1, NowMs() + CONNECT_TIMEOUT_MS))
			return true;
		if (attempt == START_CONNECT_TRIES || !SleepMs(backoff, 1))
			break;
		backoff *= 2;
	}
	return false;
}

/* After a loss: retry forever with backoff; false only when stopped. */
static bool
Reconnect(void)
{
	int			backoff = BACKOFF_MIN_MS;

	for (;;)
	{
		MaybeHeartbeat();
		if (!SleepMs(backoff, 1))
			return false;
		if (ConnectOnce(1, NowMs() + CONNECT_TIMEOUT_MS))
			return true;
		if (stop_signals > 0)
			return false;
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
	}
}

/*
 * The statement failed because the connection did: libpq's own errors carry
 * no SQLSTATE; class 08 is connection exception; 57P01-57P03 are server
 * shutdown and start-up.
 */
static bool
IsConnectionProblem(const PGresult *res)
{
	const char *state;

	if (conn == NULL || PQstatus(conn) == CONNECTION_BAD || res == NULL)
		return true;
	state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (state == NULL)
		return true;
	return strncmp(state, "08", 2) == 0 || strncmp(state, "57P0", 4) == 0;
}

/*
 * Worth trying again later: a connection problem, or a state that passes by
 * itself (serialization failure and deadlock, resources, operator
 * intervention including statement_timeout 57014, system error, a read-only
 * server during a fail-over, lock_timeout 55P03 and other lock waits).
 */
static bool
IsRetryable(const PGresult *res)
{
	const char *state;

	if (IsConnectionProblem(res))
		return true;
	state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	return strncmp(state, "40", 2) == 0 ||
		strncmp(state, "53", 2) == 0 ||
		strncmp(state, "57", 2) == 0 ||
		strncmp(state, "58", 2) == 0 ||
		strcmp(state, "25006") == 0 ||
		strcmp(state, "55006") == 0 ||
		strcmp(state, "55P03") == 0;
}

static bool
HasState(const PGresult *res, const char *want)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	return state != NULL && strcmp(state, want) == 0;
}

static const char *
ResultError(const PGresult *res)
{
	if (res != NULL && PQresultErrorMessage(res)[0] != '\0')
		return PQresultErrorMessage(res);
	return conn ? PQerrorMessage(conn) : "no connection";
}


/* ---------------------------------------------------------------------
 * Start-up checks
 * ---------------------------------------------------------------------
 */

/* Shell words that are not programs on PATH (builtins and keywords). */
static bool
IsShellBuiltin(const char *w)
{
	static const char *const words[] = {
		":", ".", "[", "alias", "bg", "break", "case", "cd", "command",
		"continue", "echo", "eval", "exec", "exit", "export", "false", "fg",
		"for", "getopts", "hash", "if", "jobs", "kill", "printf", "pwd",
		"read", "readonly", "return", "set", "shift", "test", "times",
		"trap", "true", "type", "ulimit", "umask", "unalias", "unset",
		"until", "wait", "while", "!", "{", NULL
	};
	int			i;

	for (i = 0; words[i]; i++)
		if (strcmp(w, words[i]) == 0)
			return true;
	return false;
}

/* Empty when path is an executable regular file, else why not. */
static const char *
ExecutableProblem(const char *path)
{
	struct stat st;

	if (stat(path, &st) != 0)
		return errno == ENOENT ? "no such file" : strerror(errno);
	if (!S_ISREG(st.st_mode))
		return "not a regular file";
	if (access(path, X_OK) != 0)
		return "not executable";
	return "";
}

/*
 * Checks, before anything is claimed, that the program the charge command
 * runs exists and is executable, the way /bin/sh will look for it: the first
 * word of the command (after "exec", "command" and VAR=value words) as a
 * path if it has a slash, else on the worker's PATH, which the command
 * inherits.  A command whose first word uses shell syntax (quotes,
 * expansions, redirections) or is a shell builtin cannot be checked this
 * way: that is logged and left to run time, where exit 126/127 hands the
 * recharge back.  Exits EXIT_BAD_COMMAND when the program is missing.
 */
static void
CheckCommand(void)
{
	const char *p = opt_command;
	char		word[PATH_MAX];
	const char *problem;

	problem = ExecutableProblem("/bin/sh");
	if (*problem)
	{
		LogError("cannot run charge commands: /bin/sh: %s", problem);
		exit(EXIT_BAD_COMMAND);
	}
	for (;;)
	{
		size_t		len = 0;

		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		while (*p && *p != ' ' && *p != '\t' && *p != '\n' && len < sizeof(word) - 1)
			word[len++] = *p++;
		word[len] = '\0';
		if (len == 0)
		{
			LogError("the charge command \"%s\" is empty; refusing to start", opt_command);
			exit(EXIT_BAD_COMMAND);
		}
		if (strpbrk(word, "\"'`$\\*?[]~(){}<>|;&#") != NULL && strcmp(word, "[") != 0)
		{
			LogInfo("charge command: its program (\"%s\") uses shell syntax and cannot be checked before it runs",
					word);
			return;
		}
		if (strcmp(word, "exec") == 0 || strcmp(word, "command") == 0)
			continue;
		if (strchr(word, '=') != NULL && strchr(word, '/') == NULL)
			continue;			/* VAR=value */
		break;
	}

	if (strchr(word, '/') != NULL)
	{
		problem = ExecutableProblem(word);
		if (*problem)
		{
			LogError("the charge command's program \"%s\" cannot run: %s; refusing to start",
					 word, problem);
			exit(EXIT_BAD_COMMAND);
		}
		LogInfo("charge command: runs %s", word);
		return;
	}
	else
	{
		const char *path = getenv("PATH");
		const char *dir;
		char		full[PATH_MAX * 2];

		if (path == NULL)
			path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
		dir = path;
		for (;;)
		{
			const char *end = strchr(dir, ':');
			size_t		dlen = end ? (size_t) (end - dir) : strlen(dir);

			/* an empty PATH entry means the current directory */
			if (dlen == 0)
				snprintf(full, sizeof(full), "./%s", word);
			else
				snprintf(full, sizeof(full), "%.*s/%s", (int) dlen, dir, word);
			if (*ExecutableProblem(full) == '\0')
			{
				LogInfo("charge command: runs %s", full);
				return;
			}
			if (end == NULL)
				break;
			dir = end + 1;
		}
		if (IsShellBuiltin(word))
		{
			LogInfo("charge command: \"%s\" is a shell builtin", word);
			return;
		}
		LogError("the charge command's program \"%s\" was not found as an executable file on PATH (%s); refusing to start",
				 word, path);
		exit(EXIT_BAD_COMMAND);
	}
}

/*
 * Checks, right after the first connection, that the database has the
 * credits extension with leases and that the role may use it, so that a
 * worker pointed at the wrong database or role says so once and exits
 * (EXIT_NO_EXTENSION, EXIT_NO_PRIVILEGE) instead of logging the same error
 * on every claim.  Only catalogs and privilege functions are read, so the
 * check needs no privilege of its own.
 */
static void
CheckDatabase(void)
{
	static const char *const funcs[] = {
		"claim_recharges(integer)",
		"complete_recharge(bigint, text, uuid)",
		"fail_recharge(bigint, text, uuid)",
		"release_recharge(bigint, uuid)"
	};
	PGresult   *res;
	char		missing[1024] = "";
	char		denied[1024] = "";
	char		version[64];
	int			i;

	res = PQexec(conn,
				 "SELECT e.extversion, pg_catalog.has_schema_privilege(e.extnamespace, 'USAGE')"
				 " FROM pg_catalog.pg_extension e WHERE e.extname = 'credits'");
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		LogError("could not check for the credits extension: %s", ResultError(res));
		PQclear(res);
		exit(EXIT_NO_CONNECTION);
	}
	if (PQntuples(res) == 0)
	{
		LogError("database \"%s\" does not have the credits extension (no row in pg_extension); point -d at the right database, or run CREATE EXTENSION credits there",
				 PQdb(conn));
		PQclear(res);
		exit(EXIT_NO_EXTENSION);
	}
	snprintf(version, sizeof(version), "%s", PQgetvalue(res, 0, 0));
	if (strcmp(PQgetvalue(res, 0, 1), "t") != 0)
		snprintf(denied, sizeof(denied), "USAGE on schema credits, ");
	PQclear(res);

	res = PQexec(conn,
				 "SELECT f.sig, p.oid IS NOT NULL,"
				 " p.oid IS NOT NULL AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE')"
				 " FROM (VALUES (1, 'claim_recharges(integer)'),"
				 " (2, 'complete_recharge(bigint, text, uuid)'),"
				 " (3, 'fail_recharge(bigint, text, uuid)'),"
				 " (4, 'release_recharge(bigint, uuid)')) AS f(n, sig)"
				 " LEFT JOIN pg_catalog.pg_proc p"
				 " ON p.pronamespace = (SELECT e.extnamespace FROM pg_catalog.pg_extension e"
				 " WHERE e.extname = 'credits')"
				 " AND pg_catalog.format('%s(%s)', p.proname,"
				 " pg_catalog.oidvectortypes(p.proargtypes)) = f.sig"
				 " ORDER BY f.n");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 4)
	{
		LogError("could not check the credits functions: %s", ResultError(res));
		PQclear(res);
		exit(EXIT_NO_CONNECTION);
	}
	for (i = 0; i < 4; i++)
	{
		char	   *list = strcmp(PQgetvalue(res, i, 1), "t") != 0 ? missing :
			strcmp(PQgetvalue(res, i, 2), "t") != 0 ? denied : NULL;

		if (list != NULL)
			snprintf(list + strlen(list), 1024 - strlen(list),
					 "%scredits.%s, ", list == denied ? "EXECUTE on " : "",
					 funcs[i]);
	}
	PQclear(res);
	if (missing[0])
	{
		missing[strlen(missing) - 2] = '\0';
		LogError("the credits extension in database \"%s\" is version %s and lacks %s: this worker needs 0.1.1 or later (claim tokens and leases); run ALTER EXTENSION credits UPDATE",
				 PQdb(conn), version, missing);
		exit(EXIT_NO_EXTENSION);
	}
	if (denied[0])
	{
		denied[strlen(denied) - 2] = '\0';
		LogError("role \"%s\" lacks %s; grant what worker/README.md (Privileges) lists",
				 PQuser(conn), denied);
		exit(EXIT_NO_PRIVILEGE);
	}

	/* A charge should fit in a lease; say so once if it may not. */
	res = PQexec(conn,
				 "SELECT (EXTRACT(epoch FROM pg_catalog.current_setting('credits.claim_lease', true)::interval) * 1000)::bigint");
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
		!PQgetisnull(res, 0, 0))
	{
		long long	lease_ms = atoll(PQgetvalue(res, 0, 0));

		if (lease_ms > 0 &&
			lease_ms <= (long long) opt_charge_timeout_ms + KILL_GRACE_MS)
			LogError("credits.claim_lease (%lld ms) is not longer than --charge-timeout plus the %d ms kill grace: a slow charge may outlast its lease and be charged again by another worker (the charge command must be idempotent)",
					 lease_ms, KILL_GRACE_MS);
	}
	PQclear(res);
}


/* ---------------------------------------------------------------------
 * The charge command
 * ---------------------------------------------------------------------
 */

/* In the child: plumbing, environment, exec.  Never returns. */
static void
ExecChargeCommand(const Recharge *r, int outpipe[2], int errpipe[2])
{
	int			devnull;
	static const char msg[] = PROGNAME ": could not execute /bin/sh\n";

	setpgid(0, 0);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	devnull = open("/dev/null", O_RDONLY);
	if (devnull >= 0 && devnull != STDIN_FILENO)
	{
		dup2(devnull, STDIN_FILENO);
		close(devnull);
	}
	if (dup2(outpipe[1], STDOUT_FILENO) < 0 ||
		dup2(errpipe[1], STDERR_FILENO) < 0)
		_exit(126);
	close(outpipe[0]);
	close(outpipe[1]);
	close(errpipe[0]);
	close(errpipe[1]);
	if (setenv("CREDITS_RECHARGE_ID", r->id, 1) != 0 ||
		setenv("CREDITS_ACCOUNT_ID", r->account_id, 1) != 0 ||
		setenv("CREDITS_CREDITS", r->credits, 1) != 0)
		_exit(126);
	execl("/bin/sh", "sh", "-c", opt_command, (char *) NULL);
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
	{
		/* nothing more to do */
	}
	_exit(127);
}

/*
 * Reads what fd has now into buf (keeping at most MAX_CAPTURE_BYTES, reading
 * on past that so the command never blocks on a full pipe).  Returns false
 * at end of file.
 */
static bool
ReadAvailable(int fd, char *buf, size_t *len)
{
	for (;;)
	{
		char		chunk[4096];
		ssize_t		n = read(fd, chunk, sizeof(chunk));

		if (n > 0)
		{
			size_t		keep = MAX_CAPTURE_BYTES - *len;

			if ((size_t) n < keep)
				keep = n;
			memcpy(buf + *len, chunk, keep);
			*len += keep;
			continue;
		}
		if (n == 0)
			return false;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return true;
		return false;
	}
}

static void
SetOutcome(Outcome *o, OutcomeKind kind, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));

/*
 * Sets the outcome and its text; a failure reason is made valid UTF-8 and
 * cut to MAX_REASON_BYTES (it is stored), the other texts are only logged.
 */
static void
SetOutcome(Outcome *o, OutcomeKind kind, const char *fmt,...)
{
	char		small[MAX_REASON_BYTES + 256];
	char	   *text = small;
	va_list		ap;
	int			len;

	va_start(ap, fmt);
	len = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (len >= 0 && (size_t) len >= sizeof(small) && kind != OUT_DECLINED)
	{
		text = AllocOrDie((size_t) len + 1);
		va_start(ap, fmt);
		vsnprintf(text, (size_t) len + 1, fmt, ap);
		va_end(ap);
	}
	MakeValidUtf8(text, strlen(text));
	if (kind == OUT_DECLINED)
		TruncateUtf8(text, MAX_REASON_BYTES);
	o->kind = kind;
	o->text = CopyString(text);
	if (text != small)
		free(text);
}

/* Decides what a charge command that exited with status 0 said. */
static void
JudgeReference(char *out, Outcome *o)
{
	char	   *nl = strchr(out, '\n');
	char	   *ref;
	char	   *quoted;
	size_t		len;

	if (nl)
		*nl = '\0';
	ref = Trim(out);
	len = strlen(ref);
	quoted = QuoteForLog(ref);
	if (len == 0)
		SetOutcome(o, OUT_UNKNOWN, "exit 0 but the payment reference (first line of stdout) is blank");
	else if (len > MAX_REF_BYTES)
		SetOutcome(o, OUT_UNKNOWN, "exit 0 but the payment reference is %zu bytes, more than %d: %s",
				   len, MAX_REF_BYTES, quoted);
	else if (HasWideSpaceAtEdges(ref))
		SetOutcome(o, OUT_UNKNOWN, "exit 0 but the payment reference has leading or trailing white space: %s",
				   quoted);
	else if (strpbrk(ref, "\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"
					 "\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f") != NULL)
		SetOutcome(o, OUT_UNKNOWN, "exit 0 but the payment reference has control characters: %s",
				   quoted);
	else
	{
		o->kind = OUT_CHARGED;
		o->text = CopyString(ref);
	}
	free(quoted);
}

/*
 * Runs the charge command for r in its own process group, reading its stdout
 * and stderr together with poll() so neither pipe can fill up and block it,
 * and decides the outcome (see the file header).  A command still running
 * after --charge-timeout gets SIGTERM, its whole process group with it, and
 * whatever is left of the group SIGKILL KILL_GRACE_MS later (the shell
 * running the command may die at once while the program it started cleans
 * up).  Until the command exits it is unreaped, so its pid, the group's id,
 * cannot be reused; after that the group id stays reserved by the kernel as
 * long as a member lives, and the worker, a child subreaper on Linux, reaps
 * the members that die so an empty group shows as ESRCH.  A command that
 * exits by itself is not waited for beyond 1 s of reading what it left in
 * the pipes, and what it left running is not killed.
 */
static void
RunCharge(const Recharge *r, Outcome *o)
{
	static char out[MAX_CAPTURE_BYTES + 1];
	static char err[MAX_CAPTURE_BYTES + 1];
	size_t		outlen = 0;
	size_t		errlen = 0;
	int			outpipe[2] = {-1, -1};
	int			errpipe[2] = {-1, -1};
	bool		out_open = true;
	bool		err_open = true;
	bool		exited = false;
	bool		timed_out = false;
	bool		reaped = false;
	int			status = 0;
	int64_t		start = NowMs();
	int64_t		drain_end = 0;
	int64_t		kill_at = 0;
	pid_t		pid;
	char	   *text;

	if (pipe(outpipe) != 0 || pipe(errpipe) != 0)
	{
		SetOutcome(o, OUT_NOT_RUN, "pipe: %s", strerror(errno));
		goto close_pipes;
	}
	pid = fork();
	if (pid < 0)
	{
		SetOutcome(o, OUT_NOT_RUN, "fork: %s", strerror(errno));
		goto close_pipes;
	}
	if (pid == 0)
		ExecChargeCommand(r, outpipe, errpipe);
	/* also here, so a timeout right away finds the group */
	setpgid(pid, pid);

	close(outpipe[1]);
	close(errpipe[1]);
	outpipe[1] = errpipe[1] = -1;
	SetNonBlockingCloexec(outpipe[0]);
	SetNonBlockingCloexec(errpipe[0]);

	for (;;)
	{
		struct pollfd pfd[2];
		int			rc;
		int64_t		now;

		pfd[0].fd = out_open ? outpipe[0] : -1;
		pfd[0].events = POLLIN;
		pfd[0].revents = 0;
		pfd[1].fd = err_open ? errpipe[0] : -1;
		pfd[1].events = POLLIN;
		pfd[1].revents = 0;
		rc = poll(pfd, 2, exited ? 10 : (out_open || err_open) ? 100 : 10);
		if (rc < 0 && errno != EINTR)
		{
			out_open = err_open = false;
			rc = 0;
		}
		if (rc > 0)
		{
			if (pfd[0].revents)
				out_open = ReadAvailable(outpipe[0], out, &outlen);
			if (pfd[1].revents)
				err_open = ReadAvailable(errpipe[0], err, &errlen);
		}
		now = NowMs();
		if (!exited)
		{
			siginfo_t	info;

			memset(&info, 0, sizeof(info));
			if (waitid(P_PID, pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
				info.si_pid == pid)
			{
				exited = true;
				drain_end = now + 1000;
				if (timed_out)
				{
					/*
					 * The command (or the shell wrapping it) is gone, but
					 * what it started may still be cleaning up: the group
					 * keeps its grace.  Reap the command now so that an
					 * empty group shows as ESRCH below.
					 */
					while (waitpid(pid, &status, 0) != pid && errno == EINTR)
						;
					reaped = true;
				}
			}
		}
		if (exited && timed_out)
		{
			/* orphans of the group are our children (subreaper): reap */
			while (waitpid(-pid, NULL, WNOHANG) > 0)
				;
			if (kill(-pid, 0) != 0 && errno == ESRCH)
				break;			/* the whole group is gone */
			if (kill_at > 0 && now >= kill_at)
			{
				LogError("recharge %s: processes of the charge command are still running %d ms after SIGTERM: SIGKILL to its process group %d",
						 r->id, KILL_GRACE_MS, (int) pid);
				kill(-pid, SIGKILL);
				kill_at = 0;
			}
			else if (kill_at == 0)
				break;			/* killed; init or the main loop reaps */
		}
		else if (exited && ((!out_open && !err_open) || now >= drain_end))
			break;				/* what holds the pipes now is something it
								 * left in the background */
		if (!exited && !timed_out && now - start >= opt_charge_timeout_ms)
		{
			timed_out = true;
			kill_at = now + KILL_GRACE_MS;
			LogError("recharge %s account %s: the charge command did not answer within %.3g s: SIGTERM to its process group %d",
					 r->id, r->account_id, opt_charge_timeout_ms / 1000.0, (int) pid);
			kill(-pid, SIGTERM);
		}
		else if (!exited && timed_out && kill_at > 0 && now >= kill_at)
		{
			LogError("recharge %s: the charge command is still running %d ms after SIGTERM: SIGKILL to its process group %d",
					 r->id, KILL_GRACE_MS, (int) pid);
			kill(-pid, SIGKILL);
			kill_at = 0;
		}
		MaybeHeartbeat();
		NoteStopSignal();
	}
	while (!reaped && waitpid(pid, &status, 0) != pid)
	{
		if (errno != EINTR)
		{
			SetOutcome(o, OUT_UNKNOWN, "could not wait for the charge command: %s",
					   strerror(errno));
			goto close_pipes;
		}
	}

	out[outlen] = '\0';
	err[errlen] = '\0';
	MakeValidUtf8(out, outlen);
	MakeValidUtf8(err, errlen);
	text = Trim(err);

	if (timed_out)
		SetOutcome(o, OUT_UNKNOWN, "no answer within --charge-timeout (%.3g s), killed%s%s",
				   opt_charge_timeout_ms / 1000.0, *text ? "; stderr: " : "", text);
	else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		JudgeReference(out, o);
	else if (WIFEXITED(status) &&
			 (WEXITSTATUS(status) == 126 || WEXITSTATUS(status) == 127))
		SetOutcome(o, OUT_NOT_RUN, "exit status %d%s%s", WEXITSTATUS(status),
				   *text ? ": " : "", text);
	else if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_TEMPFAIL)
		SetOutcome(o, OUT_UNKNOWN, "exit status %d: the command does not know whether the card was charged%s%s",
				   EXIT_TEMPFAIL, *text ? "; stderr: " : "", text);
	else if (WIFEXITED(status) && WEXITSTATUS(status) > 128 &&
			 WEXITSTATUS(status) <= 128 + 64)
		SetOutcome(o, OUT_UNKNOWN, "exit status %d, as a shell reports a command killed by signal %d%s%s",
				   WEXITSTATUS(status), WEXITSTATUS(status) - 128,
				   *text ? "; stderr: " : "", text);
	else if (WIFEXITED(status))
	{
		if (*text)
			SetOutcome(o, OUT_DECLINED, "%s", text);
		else
			SetOutcome(o, OUT_DECLINED, "charge command exited with status %d",
					   WEXITSTATUS(status));
	}
	else if (WIFSIGNALED(status))
		SetOutcome(o, OUT_UNKNOWN, "the charge command was killed by signal %d%s%s",
				   WTERMSIG(status), *text ? "; stderr: " : "", text);
	else
		SetOutcome(o, OUT_UNKNOWN, "the charge command ended with wait status %d", status);

close_pipes:
	if (outpipe[0] >= 0)
		close(outpipe[0]);
	if (outpipe[1] >= 0)
		close(outpipe[1]);
	if (errpipe[0] >= 0)
		close(errpipe[0]);
	if (errpipe[1] >= 0)
		close(errpipe[1]);
}


/* ---------------------------------------------------------------------
 * Claiming and recording
 * ---------------------------------------------------------------------
 */

static Held *
FindHeld(const char *id)
{
	int			i;

	for (i = 0; i < nheld; i++)
		if (!held[i].done && strcmp(held[i].r.id, id) == 0)
			return &held[i];
	return NULL;
}

/* Removes the entries marked done, keeping claim order. */
static void
CompactHeld(void)
{
	int			i,
				j = 0;

	for (i = 0; i < nheld; i++)
	{
		if (held[i].done)
		{
			free(held[i].text);
			continue;
		}
		if (i != j)
			held[j] = held[i];
		j++;
	}
	nheld = j;
}

static void
SetHeldText(Held *h, char *text)
{
	free(h->text);
	h->text = text;
}

/*
 * Claims up to max recharges in one autocommitted statement and adds them
 * to the held entries, oldest first.  A recharge we still hold from an
 * earlier claim (its lease expired and we claimed it again) keeps what we
 * know about it under the new token: a known outcome is recorded, not
 * charged again.  Returns how many were claimed, or -1 after an error: conn
 * is then NULL when the connection was lost.
 */
static int
Claim(int max)
{
	static bool warned = false;
	char		batch[16];
	const char *params[1];
	PGresult   *res;
	int64_t		sent;
	int			n;
	int			i;

	snprintf(batch, sizeof(batch), "%d", max);
	params[0] = batch;
	woken = false;
	sent = NowMs();
	res = PQexecParams(conn,
					   "SELECT r.recharge_id, r.account_id, r.credits, r.claim_token,"
					   " r.lease_expires_at,"
					   " (EXTRACT(epoch FROM r.lease_expires_at - pg_catalog.now()) * 1000)::bigint,"
					   " r.claim_count"
					   " FROM credits.claim_recharges($1) AS r ORDER BY r.recharge_id",
					   1, NULL, params, NULL, NULL, 0);
	DrainNotifies();
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != 7)
	{
		if (IsConnectionProblem(res))
			DropConnection("while claiming (a claim that committed comes back when its lease expires)");
		else
		{
			LogError("could not claim recharges: %s", ResultError(res));
			had_errors = true;
		}
		PQclear(res);
		return -1;
	}
	n = PQntuples(res);
	for (i = 0; i < n; i++)
	{
		Held	   *h = FindHeld(PQgetvalue(res, i, 0));
		long long	lease_ms = atoll(PQgetvalue(res, i, 5));

		if (h == NULL)
		{
			if (nheld == held_size)
			{
				held_size = held_size ? held_size * 2 : 64;
				held = realloc(held, held_size * sizeof(Held));
				if (held == NULL)
				{
					LogError("out of memory");
					exit(EXIT_ERRORS);
				}
			}
			h = &held[nheld++];
			memset(h, 0, sizeof(Held));
			h->state = HELD_TO_CHARGE;
			h->took_ms = -1;
		}
		else if (h->state == HELD_TO_RETRY ||
				 (h->state == HELD_TO_RECORD && h->action == ACT_RELEASE))
			h->state = HELD_TO_CHARGE;
		h->next_try = 0;
		h->wait_ms = 0;
		snprintf(h->r.id, sizeof(h->r.id), "%s", PQgetvalue(res, i, 0));
		snprintf(h->r.account_id, sizeof(h->r.account_id), "%s", PQgetvalue(res, i, 1));
		snprintf(h->r.credits, sizeof(h->r.credits), "%s", PQgetvalue(res, i, 2));
		snprintf(h->r.token, sizeof(h->r.token), "%s", PQgetvalue(res, i, 3));
		snprintf(h->r.lease_until, sizeof(h->r.lease_until), "%s", PQgetvalue(res, i, 4));
		h->r.lease_end = sent + lease_ms;
		h->r.lease_ms = lease_ms;
		n_claimed++;
		if (atoi(PQgetvalue(res, i, 6)) > 1)
			LogInfo("recharge %s account %s credits %s: claimed again (claim %s; an earlier claim's outcome was unknown or released): charged with the same CREDITS_RECHARGE_ID",
					h->r.id, h->r.account_id, h->r.credits, PQgetvalue(res, i, 6));
		if (!warned && lease_ms <= (long long) opt_charge_timeout_ms + KILL_GRACE_MS)
		{
			warned = true;
			LogError("claim lease (%lld ms) is not longer than --charge-timeout plus the %d ms kill grace: a slow charge may outlast its lease and be charged again by another worker (the charge command must be idempotent)",
					 lease_ms, KILL_GRACE_MS);
		}
	}
	PQclear(res);
	return n;
}

/*
 * One attempt to record h's action with its claim token.  Retryable errors
 * (a lost connection, lock_timeout, statement_timeout, deadlock, ...) defer
 * it; MC020 means the claim is not ours any more; MC021 that the server
 * refused the payment reference.
 */
static RecordResult
RecordOnce(Held *h, char *error, size_t errsize)
{
	const char *sql;
	const char *params[3];
	int			nparams;
	PGresult   *res;
	RecordResult result;

	error[0] = '\0';
	if (conn == NULL)
	{
		snprintf(error, errsize, "not connected");
		return REC_DEFER;
	}
	params[0] = h->r.id;
	if (h->action == ACT_RELEASE)
	{
		sql = "SELECT status FROM credits.release_recharge($1::bigint, $2::uuid)";
		params[1] = h->r.token;
		nparams = 2;
	}
	else
	{
		sql = h->action == ACT_COMPLETE ?
			"SELECT status FROM credits.complete_recharge($1::bigint, $2::text, $3::uuid)" :
			"SELECT status FROM credits.fail_recharge($1::bigint, $2::text, $3::uuid)";
		params[1] = h->text;
		params[2] = h->r.token;
		nparams = 3;
	}
	res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	DrainNotifies();
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		result = REC_DONE;
	else
	{
		snprintf(error, errsize, "%s", ResultError(res));
		SqueezeToOneLine(error);
		if (IsRetryable(res))
		{
			result = REC_DEFER;
			if (IsConnectionProblem(res))
			{
				char		when[96];

				snprintf(when, sizeof(when), "while recording recharge %s", h->r.id);
				DropConnection(when);
			}
		}
		else if (HasState(res, "MC020") ||
				 (HasState(res, "MC015") && h->action != ACT_RELEASE))
			result = REC_STALE; /* MC015: released, pending again */
		else if (HasState(res, "MC021") && h->action == ACT_COMPLETE)
			result = REC_BAD_REF;
		else
			result = REC_REFUSED;
	}
	PQclear(res);
	return result;
}

/* "ref='...'", "reason='...'" or "" for the log; the caller frees it. */
static char *
WhatForLog(const Held *h)
{
	char	   *quoted;
	char	   *s;

	if (h->action == ACT_RELEASE || h->text == NULL)
		return CopyString("");
	quoted = QuoteForLog(h->text);
	s = AllocOrDie(strlen(quoted) + 16);
	sprintf(s, "%s=%s", h->action == ACT_COMPLETE ? "ref" : "reason", quoted);
	free(quoted);
	return s;
}

static void
RetryLater(Held *h)
{
	int64_t		now = NowMs();

	h->state = HELD_TO_RETRY;
	h->wait_ms = h->wait_ms ? h->wait_ms * 2 : opt_retry_ms;
	if (h->wait_ms > RETRY_MAX_MS)
		h->wait_ms = RETRY_MAX_MS;
	h->next_try = now + h->wait_ms;
}

/*
 * Records h's action now if it can, else keeps it for later.  Marks h done
 * when there is nothing left to do with it.
 */
static void
RecordHeld(Held *h)
{
	char		error[2048];
	char	   *what;
	char		took[48] = "";

	if (h->took_ms >= 0)
		snprintf(took, sizeof(took), " (charge took %.3f s)", h->took_ms / 1000.0);
	h->state = HELD_TO_RECORD;
	switch (RecordOnce(h, error, sizeof(error)))
	{
		case REC_DONE:
			h->done = true;
			if (h->action == ACT_COMPLETE)
			{
				n_succeeded++;
				LogInfo("recharge %s account %s credits %s: succeeded ref=%s%s",
						h->r.id, h->r.account_id, h->r.credits, h->text, took);
			}
			else if (h->action == ACT_FAIL)
			{
				n_failed++;
				LogInfo("recharge %s account %s credits %s: failed: %s%s",
						h->r.id, h->r.account_id, h->r.credits, h->text, took);
			}
			else
			{
				n_released++;
				LogInfo("recharge %s account %s credits %s: released back to pending",
						h->r.id, h->r.account_id, h->r.credits);
			}
			break;
		case REC_DEFER:
			n_deferred++;
			h->wait_ms = h->wait_ms ? h->wait_ms * 2 : DEFER_MIN_MS;
			if (h->wait_ms > DEFER_MAX_MS)
				h->wait_ms = DEFER_MAX_MS;
			h->next_try = NowMs() + h->wait_ms;
			what = WhatForLog(h);
			LogError("recharge %s account %s credits %s: could not record %s now, kept in memory and retried in %.3g s (other recharges go on): %s%s%s",
					 h->r.id, h->r.account_id, h->r.credits,
					 h->action == ACT_COMPLETE ? "the success" :
					 h->action == ACT_FAIL ? "the failure" : "the release",
					 h->wait_ms / 1000.0, what, *what ? "; " : "", error);
			free(what);
			break;
		case REC_STALE:
			n_stale++;
			h->done = true;
			what = WhatForLog(h);
			LogError("recharge %s account %s credits %s: claim no longer held (its lease expired and it was claimed again, or it was released): not %s; its current holder settles it. Dropped: %s%s%s",
					 h->r.id, h->r.account_id, h->r.credits,
					 h->action == ACT_COMPLETE ? "completed" :
					 h->action == ACT_FAIL ? "failed" : "released",
					 what, *what ? "; " : "", error);
			free(what);
			break;
		case REC_BAD_REF:
			n_unknown++;
			what = WhatForLog(h);
			LogError("recharge %s account %s credits %s: outcome UNKNOWN: the server refused the payment reference, %s; not failed, charged again later with the same CREDITS_RECHARGE_ID: %s",
					 h->r.id, h->r.account_id, h->r.credits, what, error);
			free(what);
			RetryLater(h);
			break;
		case REC_REFUSED:
			h->done = true;
			had_errors = true;
			what = WhatForLog(h);
			LogError("recharge %s account %s credits %s: %s but the server refused to record it: %s%s%s",
					 h->r.id, h->r.account_id, h->r.credits,
					 h->action == ACT_COMPLETE ? "charged" :
					 h->action == ACT_FAIL ? "declined" : "to be released",
					 what, *what ? "; " : "", error);
			free(what);
			break;
	}
}

/*
 * The charge command did not run: pause claiming (--retry-interval,
 * doubling to RETRY_MAX_MS) and hand back the claims not started, which
 * would meet the same fault.
 */
static void
CommandFault(void)
{
	int			i;

	command_fault = true;
	pause_ms = pause_ms ? pause_ms * 2 : opt_retry_ms;
	if (pause_ms > RETRY_MAX_MS)
		pause_ms = RETRY_MAX_MS;
	claims_paused_until = NowMs() + pause_ms;
	LogError("the charge command cannot run: a worker fault, not a payment failure; releasing unstarted claims, no claims or charges for %.3g s",
			 pause_ms / 1000.0);
	for (i = 0; i < nheld; i++)
	{
		Held	   *h = &held[i];

		if (!h->done && h->state == HELD_TO_CHARGE)
		{
			h->action = ACT_RELEASE;
			h->took_ms = -1;
			RecordHeld(h);
		}
	}
}

/*
 * Charges h (claimed, or an unknown outcome to retry) and records the
 * outcome.  A first charge starts only while the lease has LEASE_MARGIN_MS
 * left (a quarter of the lease if that is less, so a fresh claim always
 * qualifies); a claim that waited too long for its turn is released.  A
 * retry starts only while the lease has room for a whole charge, kill grace
 * and margin included, so it never overlaps another worker's claim; else
 * it is left to whoever claims it after the lease.
 */
static void
ChargeHeld(Held *h)
{
	Outcome		o;
	int64_t		start;
	int64_t		left = h->r.lease_end - NowMs();
	int64_t		margin = h->r.lease_ms / 4 < LEASE_MARGIN_MS ?
		h->r.lease_ms / 4 : LEASE_MARGIN_MS;

	if (h->state == HELD_TO_RETRY &&
		left < (int64_t) opt_charge_timeout_ms + KILL_GRACE_MS + LEASE_MARGIN_MS)
	{
		h->done = true;
		LogError("recharge %s account %s credits %s: outcome still unknown; its lease ends at %s, too soon to charge again: left in processing, claimed again (same recharge id) by any worker once the lease expires",
				 h->r.id, h->r.account_id, h->r.credits, h->r.lease_until);
		return;
	}
	if (h->state == HELD_TO_CHARGE && left < margin)
	{
		LogError("recharge %s account %s credits %s: its lease ends at %s, before its turn to be charged: releasing it",
				 h->r.id, h->r.account_id, h->r.credits, h->r.lease_until);
		h->action = ACT_RELEASE;
		RecordHeld(h);
		return;
	}

	o.kind = OUT_UNKNOWN;
	o.text = NULL;
	start = NowMs();
	RunCharge(&h->r, &o);
	h->took_ms = NowMs() - start;
	switch (o.kind)
	{
		case OUT_CHARGED:
			pause_ms = 0;
			h->action = ACT_COMPLETE;
			SetHeldText(h, o.text);
			h->wait_ms = 0;
			RecordHeld(h);
			break;
		case OUT_DECLINED:
			pause_ms = 0;
			h->action = ACT_FAIL;
			SetHeldText(h, o.text);
			h->wait_ms = 0;
			RecordHeld(h);
			break;
		case OUT_UNKNOWN:
			n_unknown++;
			pause_ms = 0;
			RetryLater(h);
			LogError("recharge %s account %s credits %s: outcome UNKNOWN after %.3f s: %s; not failed, not completed: it stays processing and is charged again with the same CREDITS_RECHARGE_ID (by this worker in %.3g s, or by any worker after its lease ends at %s)",
					 h->r.id, h->r.account_id, h->r.credits,
					 h->took_ms / 1000.0, o.text, h->wait_ms / 1000.0,
					 h->r.lease_until);
			free(o.text);
			break;
		case OUT_NOT_RUN:
			LogError("recharge %s account %s credits %s: the charge command did not run (%s) after %.3f s: not a decline; releasing the recharge",
					 h->r.id, h->r.account_id, h->r.credits, o.text,
					 h->took_ms / 1000.0);
			free(o.text);
			h->action = ACT_RELEASE;
			h->took_ms = -1;
			h->wait_ms = 0;
			RecordHeld(h);
			CommandFault();
			break;
	}
}

/*
 * One pass over the held entries, oldest claim first: records what is due,
 * charges what is claimed, retries unknown outcomes that are due.  An entry
 * that cannot be settled now is left for a later pass; the others go on.
 * While stopping only recordings are attempted, each one at once.  Ends
 * early when the connection is lost (nothing is charged without one) or a
 * stop signal arrives after a charge.
 */
static void
ProcessHeld(void)
{
	int			i;

	for (i = 0; i < nheld; i++)
	{
		Held	   *h = &held[i];

		MaybeHeartbeat();
		NoteStopSignal();
		if (h->done)
			continue;
		if (conn == NULL)
			break;
		if (h->state == HELD_TO_RECORD)
		{
			if (stop_signals > 0 || h->next_try <= NowMs())
				RecordHeld(h);
			continue;
		}
		if (stop_signals > 0)
			continue;			/* the stop path handles the others */
		if (NowMs() < claims_paused_until)
			continue;
		if (h->state == HELD_TO_CHARGE ||
			(h->state == HELD_TO_RETRY && h->next_try <= NowMs()))
			ChargeHeld(h);
	}
	CompactHeld();
}

/*
 * Waits until deadline for a notification on credits_recharge, or a stop
 * signal.  A lost connection ends the wait too.
 */
static void
WaitForWork(int64_t deadline)
{
	while (!woken && conn != NULL)
	{
		int64_t		until = deadline;

		if (opt_heartbeat_ms > 0 && next_heartbeat < until)
			until = next_heartbeat;
		if (WaitReady(PQsocket(conn), POLLIN, until, 1) < 0)
			return;
		MaybeHeartbeat();
		if (NowMs() >= deadline)
			return;
		if (!PQconsumeInput(conn) || PQstatus(conn) == CONNECTION_BAD)
		{
			DropConnection("while waiting");
			return;
		}
		DrainNotifies();
	}
}


/* ---------------------------------------------------------------------
 * Stopping
 * ---------------------------------------------------------------------
 */

/*
 * After a stop signal: unstarted claims are to be released, unknown
 * outcomes are left to their lease.  Returns true when nothing is left to
 * record.
 */
static bool
PrepareToStop(void)
{
	int			i;
	int			c,
				r,
				t;

	for (i = 0; i < nheld; i++)
	{
		Held	   *h = &held[i];

		if (h->done)
			continue;
		if (h->state == HELD_TO_CHARGE)
		{
			h->state = HELD_TO_RECORD;
			h->action = ACT_RELEASE;
			h->took_ms = -1;
			h->next_try = 0;
		}
		else if (h->state == HELD_TO_RETRY)
		{
			h->done = true;
			LogError("recharge %s account %s credits %s: outcome unknown, left in processing (the worker is exiting); any worker claims it again (same recharge id) once its lease ends at %s",
					 h->r.id, h->r.account_id, h->r.credits, h->r.lease_until);
		}
	}
	CompactHeld();
	CountHeld(&c, &r, &t);
	return r == 0;
}

/*
 * Gives up on what could not be recorded: a release is left to the lease;
 * a known outcome is logged with the SQL that records it (EXIT_ATTENTION).
 */
static void
GiveUp(void)
{
	int			i;

	for (i = 0; i < nheld; i++)
	{
		Held	   *h = &held[i];
		char	   *quoted;

		if (h->done)
			continue;
		h->done = true;
		if (h->action == ACT_RELEASE)
		{
			LogError("recharge %s account %s credits %s: not charged, left in processing (stopped); any worker claims it once its lease ends at %s",
					 h->r.id, h->r.account_id, h->r.credits, h->r.lease_until);
			continue;
		}
		quoted = QuoteForLog(h->text);
		LogError("recharge %s account %s credits %s: %s but NOT RECORDED (stopped); record it with: SELECT credits.%s(%s, %s, '%s');",
				 h->r.id, h->r.account_id, h->r.credits,
				 h->action == ACT_COMPLETE ? "charged" : "declined",
				 h->action == ACT_COMPLETE ? "complete_recharge" : "fail_recharge",
				 h->r.id, quoted, h->r.token);
		free(quoted);
		needs_attention = true;
	}
	CompactHeld();
}


/* ---------------------------------------------------------------------
 * Command line and main loop
 * ---------------------------------------------------------------------
 */

static void
Usage(FILE *f)
{
	fprintf(f,
			"%s claims pending recharges of the credits extension, runs a charge\n"
			"command for each, and records the outcome.\n"
			"\n"
			"Usage:\n"
			"  %s -c COMMAND [OPTION]...\n"
			"\n"
			"Options:\n"
			"  -d, --dbname=CONNINFO          database to connect to: a libpq connection string\n"
			"                                 or a database name (default: the PG* environment)\n"
			"  -c, --command=COMMAND          charge command, run with /bin/sh -c per recharge\n"
			"  -b, --batch=N                  recharges claimed at a time (default %d)\n"
			"  -i, --poll-interval=DURATION   look for work at least this often, even without\n"
			"                                 a notification (default %ds)\n"
			"  -t, --charge-timeout=DURATION  kill a charge command running longer; its outcome\n"
			"                                 is then unknown (default %ds)\n"
			"      --lock-timeout=DURATION    the session's lock_timeout (default %ds; 0: none)\n"
			"      --statement-timeout=DURATION\n"
			"                                 the session's statement_timeout (default %ds; 0: none)\n"
			"      --retry-interval=DURATION  first wait before charging an unknown outcome again,\n"
			"                                 and pause after a command that did not run;\n"
			"                                 doubles up to 5min (default %ds)\n"
			"      --heartbeat=DURATION       log counters this often (default %ds; 0: never)\n"
			"  -1, --once                     settle everything pending, then exit\n"
			"  -q, --quiet                    log errors only\n"
			"      --help                     show this help, then exit\n"
			"      --version                  show the version, then exit\n"
			"\n"
			"DURATION: a number of seconds, or a number followed by ms, s, min or h.\n"
			"\n"
			"The command gets CREDITS_RECHARGE_ID, CREDITS_ACCOUNT_ID and CREDITS_CREDITS\n"
			"in its environment and must be idempotent on CREDITS_RECHARGE_ID.  Exit 0\n"
			"printing a payment reference on the first line of stdout: charged.  Exit 1-125\n"
			"(not 75): declined, stderr is the reason.  Exit 126/127: the command did not\n"
			"run (the recharge is handed back).  Exit 75, killed, timed out, exit 129-192,\n"
			"or a blank or bad reference: outcome unknown, charged again later with the\n"
			"same recharge id.\n"
			"\n"
			"Exit status: 0 stopped, 1 bad usage, 2 could not connect at start, 3 stopped\n"
			"with outcomes not recorded (see the log), 4 --once left errors or unknown\n"
			"outcomes, 5 the charge command cannot run, 6 no credits extension (0.1.1 or\n"
			"later) in the database, 7 the role lacks a privilege.\n",
			PROGNAME, PROGNAME, DEFAULT_BATCH, DEFAULT_POLL_MS / 1000,
			DEFAULT_CHARGE_TIMEOUT_MS / 1000, DEFAULT_LOCK_TIMEOUT_MS / 1000,
			DEFAULT_STATEMENT_TIMEOUT_MS / 1000, DEFAULT_RETRY_MS / 1000,
			DEFAULT_HEARTBEAT_MS / 1000);
}

static void BadUsage(const char *fmt,...)
			__attribute__((format(printf, 1, 2), noreturn));

static void
BadUsage(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "%s: ", PROGNAME);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry \"%s --help\" for more information.\n", PROGNAME);
	exit(EXIT_USAGE);
}

/*
 * Parses a duration: a number of seconds, or a number followed by ms, s,
 * min or h.  Exits with EXIT_USAGE unless it is within [min_ms, max_ms].
 */
static int
ParseDuration(const char *option, const char *arg, int min_ms, int max_ms)
{
	char	   *end;
	double		value;
	double		ms;

	errno = 0;
	value = strtod(arg, &end);
	if (errno != 0 || end == arg || !(value >= 0))
		BadUsage("%s must be a duration (e.g. 5, 1.5s, 500ms, 2min), not \"%s\"", option, arg);
	if (*end == '\0' || strcmp(end, "s") == 0)
		ms = value * 1000;
	else if (strcmp(end, "ms") == 0)
		ms = value;
	else if (strcmp(end, "min") == 0)
		ms = value * 60000;
	else if (strcmp(end, "h") == 0)
		ms = value * 3600000;
	else
		BadUsage("%s must be a duration (e.g. 5, 1.5s, 500ms, 2min), not \"%s\"", option, arg);
	ms += 0.5;
	if (ms < min_ms || ms > max_ms)
		BadUsage("%s must be from %d ms to %d ms (or 0 where allowed), not \"%s\"",
				 option, min_ms, max_ms, arg);
	return (int) ms;
}

enum
{
	OPT_LOCK_TIMEOUT = 256,
	OPT_STATEMENT_TIMEOUT,
	OPT_RETRY_INTERVAL,
	OPT_HEARTBEAT
};

static void
ParseOptions(int argc, char **argv)
{
	static const struct option long_options[] = {
		{"dbname", required_argument, NULL, 'd'},
		{"command", required_argument, NULL, 'c'},
		{"batch", required_argument, NULL, 'b'},
		{"poll-interval", required_argument, NULL, 'i'},
		{"charge-timeout", required_argument, NULL, 't'},
		{"lock-timeout", required_argument, NULL, OPT_LOCK_TIMEOUT},
		{"statement-timeout", required_argument, NULL, OPT_STATEMENT_TIMEOUT},
		{"retry-interval", required_argument, NULL, OPT_RETRY_INTERVAL},
		{"heartbeat", required_argument, NULL, OPT_HEARTBEAT},
		{"once", no_argument, NULL, '1'},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0}
	};
	int			c;
	char	   *end;
	long		n;

	while ((c = getopt_long(argc, argv, "d:c:b:i:t:1q", long_options, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				opt_dbname = optarg;
				break;
			case 'c':
				opt_command = optarg;
				break;
			case 'b':
				errno = 0;
				n = strtol(optarg, &end, 10);
				if (errno != 0 || end == optarg || *end != '\0' ||
					n < 1 || n > MAX_BATCH)
					BadUsage("--batch must be a whole number from 1 to 1000, not \"%s\"", optarg);
				opt_batch = (int) n;
				break;
			case 'i':
				opt_poll_ms = ParseDuration("--poll-interval", optarg, 1, MAX_DURATION_MS);
				break;
			case 't':
				opt_charge_timeout_ms = ParseDuration("--charge-timeout", optarg, 100, MAX_DURATION_MS);
				break;
			case OPT_LOCK_TIMEOUT:
				opt_lock_timeout_ms = ParseDuration("--lock-timeout", optarg, 0, MAX_DURATION_MS);
				break;
			case OPT_STATEMENT_TIMEOUT:
				opt_statement_timeout_ms = ParseDuration("--statement-timeout", optarg, 0, MAX_DURATION_MS);
				break;
			case OPT_RETRY_INTERVAL:
				opt_retry_ms = ParseDuration("--retry-interval", optarg, 100, RETRY_MAX_MS);
				break;
			case OPT_HEARTBEAT:
				opt_heartbeat_ms = ParseDuration("--heartbeat", optarg, 0, MAX_DURATION_MS);
				break;
			case '1':
				opt_once = true;
				break;
			case 'q':
				opt_quiet = true;
				break;
			case 'h':
				Usage(stdout);
				exit(EXIT_STOPPED);
			case 'V':
				printf("%s (credits) %s\n", PROGNAME, CREDITS_VERSION);
				exit(EXIT_STOPPED);
			default:
				fprintf(stderr, "Try \"%s --help\" for more information.\n", PROGNAME);
				exit(EXIT_USAGE);
		}
	}
	if (optind < argc)
		BadUsage("unexpected argument \"%s\"", argv[optind]);
	if (opt_command == NULL || opt_command[0] == '\0')
		BadUsage("a charge command is required (-c COMMAND)");
	if (opt_statement_timeout_ms > 0 && opt_lock_timeout_ms > 0 &&
		opt_lock_timeout_ms >= opt_statement_timeout_ms)
		BadUsage("--lock-timeout must be shorter than --statement-timeout");
}

/* Descriptors 0-2 must be open, or a pipe could land on one of them. */
static void
EnsureStandardDescriptors(void)
{
	int			fd;

	for (fd = 0; fd <= 2; fd++)
	{
		if (fcntl(fd, F_GETFD) < 0)
		{
			int			nfd = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);

			if (nfd >= 0 && nfd != fd)
				close(nfd);
		}
	}
}

/* The earliest time a held entry is due, or INT64_MAX. */
static int64_t
NextDue(void)
{
	int64_t		due = INT64_MAX;
	int			i;

	for (i = 0; i < nheld; i++)
	{
		int64_t		t;

		if (held[i].done)
			continue;
		t = held[i].next_try;
		if (held[i].state != HELD_TO_RECORD && t < claims_paused_until)
			t = claims_paused_until;
		if (t < due)
			due = t;
	}
	return due;
}

/*
 * The stop path: record what is known, release what was not started, for
 * at most STOP_GRACE_MS (one attempt each after a second signal).  Returns
 * when done.
 */
static void
Stop(void)
{
	int64_t		grace_end = NowMs() + STOP_GRACE_MS;
	bool		last_pass = false;

	for (;;)
	{
		NoteStopSignal();
		if (PrepareToStop())
			return;
		if (last_pass || NowMs() >= grace_end)
		{
			GiveUp();
			return;
		}
		if (stop_signals >= 2)
			last_pass = true;
		if (conn == NULL && !last_pass)
		{
			int64_t		deadline = NowMs() + CONNECT_TIMEOUT_MS;

			if (deadline > grace_end)
				deadline = grace_end;
			ConnectOnce(2, deadline);
		}
		if (conn != NULL)
			ProcessHeld();
		if (!PrepareToStop() && !last_pass)
		{
			int64_t		deadline = NowMs() + BACKOFF_MIN_MS;

			if (deadline > grace_end)
				deadline = grace_end;
			WaitReady(-1, 0, deadline, 2);
		}
	}
}

int
main(int argc, char **argv)
{
	EnsureStandardDescriptors();
	ParseOptions(argc, argv);
	SetUpSignals();
#ifdef PR_SET_CHILD_SUBREAPER
	/* what a charge command leaves behind is ours to reap (RunCharge) */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
		LogError("could not become a child subreaper: %s", strerror(errno));
#endif

	LogInfo("starting (credits %s): batch %d, poll interval %.3g s, charge timeout %.3g s, lock timeout %.3g s, statement timeout %.3g s%s",
			CREDITS_VERSION, opt_batch, opt_poll_ms / 1000.0,
			opt_charge_timeout_ms / 1000.0, opt_lock_timeout_ms / 1000.0,
			opt_statement_timeout_ms / 1000.0, opt_once ? ", once" : "");
	CheckCommand();
	if (!ConnectAtStart())
	{
		if (stop_signals > 0)
		{
			NoteStopSignal();
			LogInfo("stopped");
			return EXIT_STOPPED;
		}
		LogError("giving up: could not connect after %d tries", START_CONNECT_TRIES);
		return EXIT_NO_CONNECTION;
	}
	CheckDatabase();
	next_heartbeat = NowMs() + opt_heartbeat_ms;

	while (stop_signals == 0)
	{
		int			n = 0;
		int			c,
					r,
					t;
		int64_t		deadline;

		MaybeHeartbeat();
		/* no charge runs now: reap what charge commands left behind */
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		if (conn == NULL && !Reconnect())
			break;
		ProcessHeld();
		if (stop_signals > 0)
			break;
		if (conn == NULL)
			continue;
		if (opt_once && command_fault)
			break;				/* --once: no point waiting for a fix */
		CountHeld(&c, &r, &t);
		if (c == 0 && nheld < MAX_HELD && NowMs() >= claims_paused_until)
		{
			n = Claim(opt_batch);
			if (n < 0)
			{
				if (conn != NULL)
				{
					/* refused by the server: logged; try again later */
					if (opt_once)
						break;
					SleepMs(opt_poll_ms, 1);
				}
				continue;
			}
			if (n > 0 || woken)
				continue;
			CountHeld(&c, &r, &t);
			if (opt_once && r == 0)
				break;			/* nothing to claim, nothing to record */
		}
		if (c > 0 && NowMs() >= claims_paused_until)
			continue;			/* more to charge (not while paused: no spin) */
		deadline = NowMs() + opt_poll_ms;
		if (NextDue() < deadline)
			deadline = NextDue();
		if (claims_paused_until > NowMs() && claims_paused_until < deadline)
			deadline = claims_paused_until;
		if (deadline > NowMs())
			WaitForWork(deadline);
	}

	NoteStopSignal();
	if (opt_once && stop_signals == 0)
	{
		/* unknown outcomes are left to their lease, as on a stop */
		int			c,
					r,
					t;

		CountHeld(&c, &r, &t);
		if (t > 0)
			had_errors = true;
	}
	Stop();
	if (conn != NULL)
		PQfinish(conn);
	if (needs_attention)
	{
		LogError("stopped, with outcomes not recorded (see above)");
		return EXIT_ATTENTION;
	}
	if (opt_once && command_fault)
	{
		LogError("finished: the charge command did not run (see above)");
		return EXIT_BAD_COMMAND;
	}
	if (opt_once && had_errors)
	{
		LogError("finished, with errors or unknown outcomes (see above)");
		return EXIT_ERRORS;
	}
	LogInfo(opt_once && stop_signals == 0 ? "finished: nothing pending" : "stopped");
	return EXIT_STOPPED;
}
