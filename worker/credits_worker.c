/*-------------------------------------------------------------------------
 *
 * credits_worker.c
 *	  credits-worker: the payment worker shipped with the credits extension.
 *	  It claims pending recharges, runs a charge command for each, and
 *	  records the outcome with credits.complete_recharge() or
 *	  credits.fail_recharge().
 *
 * Copyright (c) 2026, credits developers
 *
 * IDENTIFICATION
 *	  worker/credits_worker.c
 *
 * The loop.  Claim up to --batch recharges with one autocommitted
 * "SELECT ... FROM credits.claim_recharges($1)", so the claim is committed
 * before any card is charged.  For each claimed recharge run the charge
 * command once (fork and exec of /bin/sh -c; the recharge is passed only in
 * the environment, never in the command string), then record the outcome
 * with one autocommitted call, values always passed as parameters.  When a
 * claim comes back empty, wait on the connection's socket until a
 * NOTIFY credits_recharge arrives or --poll-interval passes, then claim
 * again.  Notifications only make the worker quicker: the timer alone finds
 * every recharge.
 *
 * Concurrency.  Any number of workers may run against one database:
 * claim_recharges() uses FOR UPDATE SKIP LOCKED, so concurrent claims return
 * disjoint rows and each recharge goes to exactly one worker.  The worker
 * holds no lock and no open transaction while a charge command runs.  One
 * process is single-threaded and runs one charge command at a time.
 *
 * Failures.  A claimed recharge is charged at most once: the outcome is kept
 * in memory and only its recording is retried.  If the connection drops
 * after the charge, the worker reconnects and repeats the same
 * complete_recharge(id, ref) or fail_recharge(id, reason) call, which the
 * extension turns into a no-op when the first one did commit.  Connection
 * errors and transient SQLSTATEs (classes 08, 40, 53, 57, 58, and 25006,
 * 55006, 55P03) are retried with backoff, 0.5 s doubling to 5 s; any other
 * error is logged and the worker moves on.  A claim whose reply is lost to a
 * connection failure may have committed: its recharges then stay in
 * processing, which the extension has no way to undo (see worker/README.md).
 *
 * Signals.  SIGTERM and SIGINT set a flag and write a byte to a self-pipe
 * that every wait polls, so an idle worker stops at once.  After the first
 * signal the worker claims nothing more, settles what it has already
 * claimed, and exits 0.  A recording still failing STOP_GRACE_MS after the
 * signal, or a second signal, makes it log what is left and exit 3.  Charge
 * commands run in their own process group, so a terminal's Ctrl-C reaches
 * the worker only and never kills a charge half-way.
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

#define DEFAULT_BATCH		10
#define MAX_BATCH			1000
#define DEFAULT_POLL_MS		5000
#define MAX_POLL_SECONDS	86400
#define BACKOFF_MIN_MS		500
#define BACKOFF_MAX_MS		5000
#define CONNECT_TIMEOUT_MS	30000
#define START_CONNECT_TRIES 3
#define STOP_GRACE_MS		10000
#define MAX_REASON_BYTES	1000
#define MAX_CAPTURE_BYTES	65536
#define LOG_LINE_BYTES		2048

/* Exit statuses; worker/README.md documents them. */
#define EXIT_STOPPED		0	/* clean stop, or --once found nothing left */
#define EXIT_USAGE			1	/* bad command line */
#define EXIT_NO_CONNECTION	2	/* could not connect at start */
#define EXIT_ATTENTION		3	/* stopped with recharges needing a human */
#define EXIT_ERRORS			4	/* --once: the server refused a claim or a
								 * recording; or out of memory */

/* One claimed recharge, as text straight from the claim's result. */
typedef struct Recharge
{
	char		id[32];
	char		account_id[32];
	char		credits[32];
} Recharge;

/* What the charge command said. */
typedef struct Outcome
{
	bool		charged;		/* true: text is the payment reference */
	char	   *text;			/* payment reference, or failure reason */
} Outcome;

typedef enum RecordResult
{
	RECORD_DONE,				/* committed (or already was) */
	RECORD_REFUSED,				/* the server refused it for good */
	RECORD_GAVE_UP				/* stopping before it could be recorded */
} RecordResult;

/* Options */
static const char *opt_dbname = NULL;
static const char *opt_command = NULL;
static int	opt_batch = DEFAULT_BATCH;
static int	opt_poll_ms = DEFAULT_POLL_MS;
static bool opt_once = false;
static bool opt_quiet = false;

/* State */
static PGconn *conn = NULL;
static bool woken = false;		/* a notification arrived since the last claim */
static bool needs_attention = false;	/* exit EXIT_ATTENTION */
static bool had_errors = false; /* --once exits EXIT_ERRORS */
static volatile sig_atomic_t stop_signals = 0;
static int	wake_pipe[2] = {-1, -1};

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
 * Replaces every control character with a space and squeezes runs of
 * spaces, so a message (a libpq error, a charge command's stderr) fits on
 * one log line.
 */
static void
SqueezeToOneLine(char *s)
{
	char	   *src = s;
	char	   *dst = s;
	bool		space = false;

	for (; *src; src++)
	{
		unsigned char c = (unsigned char) *src;

		if (c < 0x20 || c == 0x7f || c == ' ')
		{
			if (!space && dst != s)
				*dst++ = ' ';
			space = true;
			continue;
		}
		*dst++ = *src;
		space = false;
	}
	while (dst > s && dst[-1] == ' ')
		dst--;
	*dst = '\0';
}

/*
 * Writes one line to stderr: UTC timestamp, program and pid, message.  The
 * line goes out in one write() so lines of several workers sharing a log do
 * not interleave.  Informational lines are dropped under --quiet.
 */
static void
LogLine(bool always, const char *fmt,...)
{
	char		msg[LOG_LINE_BYTES];
	char		line[LOG_LINE_BYTES + 64];
	char		stamp[32];
	time_t		now = time(NULL);
	struct tm	tm;
	va_list		ap;
	int			len;
	int			save_errno = errno;

	if (opt_quiet && !always)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	SqueezeToOneLine(msg);
	if (gmtime_r(&now, &tm) == NULL ||
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		strcpy(stamp, "-");
	len = snprintf(line, sizeof(line), "%s %s[%d]: %s\n",
				   stamp, PROGNAME, (int) getpid(), msg);
	if (len < 0)
		return;
	if ((size_t) len >= sizeof(line))
	{
		len = sizeof(line) - 1;
		line[len - 1] = '\n';
	}
	if (write(STDERR_FILENO, line, len) < 0)
	{
		/* nowhere left to complain */
	}
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


/* ---------------------------------------------------------------------
 * Signals and waiting
 * ---------------------------------------------------------------------
 */

static void
HandleStopSignal(int signo)
{
	int			save_errno = errno;

	(void) signo;
	if (stop_signals < 2)
		stop_signals = stop_signals + 1;
	if (write(wake_pipe[1], "x", 1) < 0)
	{
		/* pipe full: a wake-up is pending already */
	}
	errno = save_errno;
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


/* ---------------------------------------------------------------------
 * Connection
 * ---------------------------------------------------------------------
 */

/* Takes the queued notifications; any of them means "claim again". */
static void
DrainNotifies(void)
{
	PGnotify   *n;

	if (conn == NULL)
		return;
	while ((n = PQnotifies(conn)) != NULL)
	{
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
 * can cut it short.  On success sets conn and LISTENs.  The application
 * name defaults to credits-worker; client_encoding is forced to UTF8 because
 * reasons and references are sent as UTF-8 (see MakeValidUtf8).
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

	res = PQexec(conn, "LISTEN " NOTIFY_CHANNEL);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		LogError("could not listen on %s, relying on the poll timer: %s",
				 NOTIFY_CHANNEL, PQerrorMessage(conn));
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
 * intervention, system error, a read-only server during a fail-over, locks).
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

static const char *
ResultError(const PGresult *res)
{
	if (res != NULL && PQresultErrorMessage(res)[0] != '\0')
		return PQresultErrorMessage(res);
	return conn ? PQerrorMessage(conn) : "no connection";
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
SetFailure(Outcome *o, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

static void
SetFailure(Outcome *o, const char *fmt,...)
{
	char		reason[MAX_REASON_BYTES + 256];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	MakeValidUtf8(reason, strlen(reason));
	TruncateUtf8(reason, MAX_REASON_BYTES);
	o->charged = false;
	o->text = CopyString(reason);
}

/*
 * Runs the charge command for r, reading its stdout and stderr together
 * with poll() so neither pipe can fill up and block it, and decides the
 * outcome: exit 0 with a non-empty first line on stdout is a success with
 * that line (trimmed) as the payment reference; anything else is a failure
 * whose reason is stderr (trimmed, at most MAX_REASON_BYTES) or a
 * description of the exit.  Once the command has exited, whatever it left
 * running in the background is not waited for.
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
	int			status = 0;
	int64_t		drain_end = 0;
	pid_t		pid;
	char	   *text;

	if (pipe(outpipe) != 0 || pipe(errpipe) != 0)
	{
		SetFailure(o, "could not run the charge command: pipe: %s",
				   strerror(errno));
		goto close_pipes;
	}
	pid = fork();
	if (pid < 0)
	{
		SetFailure(o, "could not run the charge command: fork: %s",
				   strerror(errno));
		goto close_pipes;
	}
	if (pid == 0)
		ExecChargeCommand(r, outpipe, errpipe);

	close(outpipe[1]);
	close(errpipe[1]);
	outpipe[1] = errpipe[1] = -1;
	SetNonBlockingCloexec(outpipe[0]);
	SetNonBlockingCloexec(errpipe[0]);

	while (out_open || err_open)
	{
		struct pollfd pfd[2];
		int			rc;

		pfd[0].fd = out_open ? outpipe[0] : -1;
		pfd[0].events = POLLIN;
		pfd[0].revents = 0;
		pfd[1].fd = err_open ? errpipe[0] : -1;
		pfd[1].events = POLLIN;
		pfd[1].revents = 0;
		rc = poll(pfd, 2, exited ? 0 : 100);
		if (rc < 0 && errno != EINTR)
			break;
		if (rc > 0)
		{
			if (pfd[0].revents)
				out_open = ReadAvailable(outpipe[0], out, &outlen);
			if (pfd[1].revents)
				err_open = ReadAvailable(errpipe[0], err, &errlen);
		}
		if (!exited)
		{
			if (waitpid(pid, &status, WNOHANG) == pid)
			{
				exited = true;
				drain_end = NowMs() + 1000;
			}
		}
		else if (rc == 0 || NowMs() >= drain_end)
			break;				/* it exited; what holds the pipes now is
								 * something it left in the background */
	}
	while (!exited)
	{
		if (waitpid(pid, &status, 0) == pid)
			exited = true;
		else if (errno != EINTR)
		{
			status = 0;
			SetFailure(o, "could not wait for the charge command: %s",
					   strerror(errno));
			goto close_pipes;
		}
	}

	out[outlen] = '\0';
	err[errlen] = '\0';
	MakeValidUtf8(out, outlen);
	MakeValidUtf8(err, errlen);

	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
	{
		char	   *nl = strchr(out, '\n');

		if (nl)
			*nl = '\0';
		text = Trim(out);
		if (*text == '\0')
			SetFailure(o, "charge command printed no payment reference");
		else
		{
			o->charged = true;
			o->text = CopyString(text);
		}
	}
	else if (WIFEXITED(status))
	{
		text = Trim(err);
		if (*text)
			SetFailure(o, "%s", text);
		else
			SetFailure(o, "charge command exited with status %d",
					   WEXITSTATUS(status));
	}
	else if (WIFSIGNALED(status))
	{
		text = Trim(err);
		SetFailure(o, "charge command was killed by signal %d%s%s",
				   WTERMSIG(status), *text ? ": " : "", text);
	}
	else
		SetFailure(o, "charge command ended with wait status %d", status);

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

/*
 * Claims up to --batch recharges in one autocommitted statement, to be
 * charged oldest first.  Returns the result (the caller clears it), or NULL after an error: conn is then
 * NULL when the connection was lost.
 */
static PGresult *
Claim(void)
{
	char		batch[16];
	const char *params[1];
	PGresult   *res;

	snprintf(batch, sizeof(batch), "%d", opt_batch);
	params[0] = batch;
	woken = false;
	res = PQexecParams(conn,
					   "SELECT recharge_id, account_id, credits"
					   " FROM credits.claim_recharges($1) ORDER BY recharge_id",
					   1, NULL, params, NULL, NULL, 0);
	DrainNotifies();
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQnfields(res) == 3)
		return res;
	if (IsConnectionProblem(res))
		DropConnection("while claiming (if that claim committed, its recharges stay in processing)");
	else
	{
		LogError("could not claim recharges: %s", ResultError(res));
		had_errors = true;
	}
	PQclear(res);
	return NULL;
}

/*
 * Records an outcome: complete_recharge(id, ref) or fail_recharge(id,
 * reason), both idempotent for the same arguments, so a call repeated after
 * a lost reply is harmless.  Retries until it commits or the server refuses
 * it for good; once a stop signal has arrived, for STOP_GRACE_MS more, and
 * not at all after a second one.
 */
static RecordResult
RecordOutcome(const Recharge *r, const Outcome *o, char *error, size_t errsize)
{
	const char *sql = o->charged ?
		"SELECT status FROM credits.complete_recharge($1, $2)" :
		"SELECT status FROM credits.fail_recharge($1, $2)";
	const char *params[2];
	int			backoff = BACKOFF_MIN_MS;
	int64_t		grace_end = -1;
	char		when[96];

	params[0] = r->id;
	params[1] = o->text;
	snprintf(when, sizeof(when), "while recording recharge %s, retrying", r->id);
	for (;;)
	{
		int64_t		deadline;

		if (stop_signals > 0 && grace_end < 0)
			grace_end = NowMs() + STOP_GRACE_MS;

		if (conn == NULL)
		{
			deadline = NowMs() + CONNECT_TIMEOUT_MS;
			if (grace_end >= 0 && grace_end < deadline)
				deadline = grace_end;
			ConnectOnce(2, deadline);
		}
		if (conn != NULL)
		{
			PGresult   *res = PQexecParams(conn, sql, 2, NULL, params,
										   NULL, NULL, 0);

			DrainNotifies();
			if (PQresultStatus(res) == PGRES_TUPLES_OK)
			{
				PQclear(res);
				return RECORD_DONE;
			}
			if (!IsRetryable(res))
			{
				snprintf(error, errsize, "%s", ResultError(res));
				PQclear(res);
				return RECORD_REFUSED;
			}
			if (IsConnectionProblem(res))
				DropConnection(when);
			else
				LogError("recharge %s: could not record the outcome, retrying: %s",
						 r->id, ResultError(res));
			PQclear(res);
		}
		if (stop_signals >= 2 || (grace_end >= 0 && NowMs() >= grace_end))
			return RECORD_GAVE_UP;
		deadline = NowMs() + backoff;
		if (grace_end >= 0 && grace_end < deadline)
			deadline = grace_end;
		WaitReady(-1, 0, deadline, 2);
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
	}
}

/* Doubles single quotes so a logged value can be pasted into SQL. */
static void
QuoteForLog(char *dst, size_t dstsize, const char *src)
{
	size_t		j = 0;

	for (; *src && j + 3 < dstsize; src++)
	{
		if (*src == '\'')
			dst[j++] = '\'';
		dst[j++] = *src;
	}
	dst[j] = '\0';
}

/*
 * Charges and records each claimed recharge, one log line each.  After a
 * second stop signal the ones not yet charged are left alone (in
 * processing) and named in the log.
 */
static void
SettleClaimed(const PGresult *claimed)
{
	int			n = PQntuples(claimed);
	int			i;

	for (i = 0; i < n; i++)
	{
		Recharge	r;
		Outcome		o;
		char		error[LOG_LINE_BYTES];
		char		quoted[LOG_LINE_BYTES];

		snprintf(r.id, sizeof(r.id), "%s", PQgetvalue(claimed, i, 0));
		snprintf(r.account_id, sizeof(r.account_id), "%s", PQgetvalue(claimed, i, 1));
		snprintf(r.credits, sizeof(r.credits), "%s", PQgetvalue(claimed, i, 2));

		if (stop_signals >= 2)
		{
			LogError("recharge %s account %s credits %s: not charged, left in processing (stopped)",
					 r.id, r.account_id, r.credits);
			needs_attention = true;
			continue;
		}

		o.charged = false;
		o.text = NULL;
		RunCharge(&r, &o);

		switch (RecordOutcome(&r, &o, error, sizeof(error)))
		{
			case RECORD_DONE:
				if (o.charged)
					LogInfo("recharge %s account %s credits %s: succeeded ref=%s",
							r.id, r.account_id, r.credits, o.text);
				else
					LogInfo("recharge %s account %s credits %s: failed: %s",
							r.id, r.account_id, r.credits, o.text);
				break;
			case RECORD_REFUSED:
				LogError("recharge %s account %s credits %s: %s %s but the server refused to record it: %s",
						 r.id, r.account_id, r.credits,
						 o.charged ? "charged, ref" : "failed, reason",
						 o.text, error);
				had_errors = true;
				break;
			case RECORD_GAVE_UP:
				QuoteForLog(quoted, sizeof(quoted), o.text);
				LogError("recharge %s account %s credits %s: %s but NOT RECORDED (stopped); record it with: SELECT credits.%s(%s, '%s');",
						 r.id, r.account_id, r.credits,
						 o.charged ? "charged" : "failed",
						 o.charged ? "complete_recharge" : "fail_recharge",
						 r.id, quoted);
				needs_attention = true;
				break;
		}
		free(o.text);
	}
}

/*
 * Waits for work: a notification on credits_recharge, the poll interval, or
 * a stop signal.  A lost connection ends the wait too.
 */
static void
WaitForWork(void)
{
	int64_t		deadline = NowMs() + opt_poll_ms;

	while (!woken && conn != NULL)
	{
		if (WaitReady(PQsocket(conn), POLLIN, deadline, 1) <= 0)
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
			"  -d, --dbname=CONNINFO        database to connect to: a libpq connection string\n"
			"                               or a database name (default: the PG* environment)\n"
			"  -c, --command=COMMAND        charge command, run with /bin/sh -c per recharge\n"
			"  -b, --batch=N                recharges claimed at a time (default %d)\n"
			"  -i, --poll-interval=SECONDS  look for work at least this often, even without\n"
			"                               a notification (default %d)\n"
			"  -1, --once                   settle everything pending, then exit\n"
			"  -q, --quiet                  log errors only\n"
			"      --help                   show this help, then exit\n"
			"      --version                show the version, then exit\n"
			"\n"
			"The command gets CREDITS_RECHARGE_ID, CREDITS_ACCOUNT_ID and CREDITS_CREDITS\n"
			"in its environment.  Exit 0 printing a payment reference on the first line of\n"
			"stdout: the recharge succeeded.  Any other end: it failed, stderr is the reason.\n"
			"\n"
			"Exit status: 0 stopped, 1 bad usage, 2 could not connect at start, 3 stopped\n"
			"with recharges needing attention (see the log), 4 --once met a server error.\n",
			PROGNAME, PROGNAME, DEFAULT_BATCH, DEFAULT_POLL_MS / 1000);
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

static void
ParseOptions(int argc, char **argv)
{
	static const struct option long_options[] = {
		{"dbname", required_argument, NULL, 'd'},
		{"command", required_argument, NULL, 'c'},
		{"batch", required_argument, NULL, 'b'},
		{"poll-interval", required_argument, NULL, 'i'},
		{"once", no_argument, NULL, '1'},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0}
	};
	int			c;
	char	   *end;
	long		n;
	double		seconds;

	while ((c = getopt_long(argc, argv, "d:c:b:i:1q", long_options, NULL)) != -1)
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
				errno = 0;
				seconds = strtod(optarg, &end);
				if (errno != 0 || end == optarg || *end != '\0' ||
					!(seconds >= 0.001 && seconds <= MAX_POLL_SECONDS))
					BadUsage("--poll-interval must be a number of seconds from 0.001 to 86400, not \"%s\"", optarg);
				opt_poll_ms = (int) (seconds * 1000 + 0.5);
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

int
main(int argc, char **argv)
{
	EnsureStandardDescriptors();
	ParseOptions(argc, argv);
	SetUpSignals();

	LogInfo("starting (credits %s): batch %d, poll interval %.3g s%s",
			CREDITS_VERSION, opt_batch, opt_poll_ms / 1000.0,
			opt_once ? ", once" : "");
	if (!ConnectAtStart())
	{
		if (stop_signals > 0)
		{
			LogInfo("stopped");
			return EXIT_STOPPED;
		}
		LogError("giving up: could not connect after %d tries", START_CONNECT_TRIES);
		return EXIT_NO_CONNECTION;
	}

	while (stop_signals == 0)
	{
		PGresult   *claimed;
		int			n;

		if (conn == NULL && !Reconnect())
			break;
		claimed = Claim();
		if (claimed == NULL)
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
		n = PQntuples(claimed);
		SettleClaimed(claimed);
		PQclear(claimed);
		if (n > 0 || woken)
			continue;
		if (opt_once)
			break;
		WaitForWork();
	}

	if (conn != NULL)
		PQfinish(conn);
	if (needs_attention)
	{
		LogError("stopped, with recharges needing attention (see above)");
		return EXIT_ATTENTION;
	}
	if (opt_once && had_errors)
	{
		LogError("finished, with errors (see above)");
		return EXIT_ERRORS;
	}
	LogInfo(opt_once && stop_signals == 0 ? "finished: nothing pending" : "stopped");
	return EXIT_STOPPED;
}
