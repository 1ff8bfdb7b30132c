"""The log records that are server events, read into ``LogEvents``: which kind, its numbers, and
the statement it belongs to.

``messages.executions`` hands over every record that is not an execution (and DETAILs only while
an event waits for one), so this costs nothing on the lines that are statements. What PostgreSQL
writes, and how each event finds its statement:
- csvlog and jsonlog carry DETAIL and STATEMENT in the event's own record; stderr and syslog write
  them as the next records of the same backend, so an event collects them until that backend
  logs anything else.
- A STATEMENT follows LOG lines too by default (``log_min_error_statement`` ranks LOG above
  ERROR). Without one (a higher setting, a shipper that drops it), the event belongs to the
  statement its backend was running: the one ``log_statement`` logged when it started and that
  has no duration yet; else, for a temp file after an extended-protocol ``execute``, that
  execute (a sort's files go when the portal is dropped, after its duration was logged); else
  the statement its backend logs next, which ``log_min_duration_statement`` logs when it ends
  (a lock wait, a simple-protocol statement's temp files and a hash join's batches come before
  it). What the log cannot tell: a hash join's batches after another extended-protocol execute
  are tied to that execute. An error without a STATEMENT that no running statement explains, and
  an event whose statement is logged in the next part of a log parsed in parts (parts begin at
  statements), belong to no statement; they still count in the totals.
- The SQLSTATE comes from the record (csvlog, jsonlog, ``%e``), else from the message for the
  common ones (PostgreSQL's errcodes), else ``unknown``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from advisor.workload.events import LogEvents, Statement
from advisor.workload.fingerprint import fingerprint, mask_literals
from advisor.workload.logs.records import LogRecord
from advisor.workload.own_traffic import sent_by_advisor

MAX_OPEN = 10_000  # backends with events still waiting for their statement; the oldest is resolved beyond
WAITING_KEPT = 16  # events of one backend waiting for the statement it logs next

# A blocking process's last logged statement and application, looked up by pid in the log read so far.
Holder = Callable[[str], tuple[str | None, str | None]]

_TEMP = re.compile(r"temporary file: path \".*\", size (\d+)")
_LOCK = re.compile(r"process \d+ (still waiting for|acquired) .* after (\d+(?:\.\d+)?) ms")
_HOLDERS = re.compile(r"Process(?:es)? holding the lock: ([\d, ]+)\.")
_CYCLE = re.compile(r"^Process \d+: (.*?)(?=\nProcess \d+: |\Z)", re.M | re.S)
_SESSION_TIME = re.compile(r"disconnection: session time: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_APPLICATION = re.compile(r" application_name=(.*?)(?: SSL enabled \(| GSS \(|$)", re.S)
_CHECKPOINT_DONE = re.compile(r"write=(\d+(?:\.\d+)?) s, sync=(\d+(?:\.\d+)?) s")
_VACUUM = re.compile(r"automatic (vacuum|aggressive vacuum|analyze)(?: to prevent wraparound)? of table \"(.+?)\"(?=[:\s]|$)")
_REMOVED = re.compile(r"tuples: (\d+) removed")

# The SQLSTATE of the common errors, from their message, for stderr logs without %e (errcodes.txt).
_SQLSTATES = tuple((re.compile(pattern), code) for pattern, code in (
    (r"duplicate key value violates unique constraint", "23505"),
    (r"null value in column .* violates not-null constraint", "23502"),
    (r"(?:insert or update|update or delete) on table .* violates foreign key constraint", "23503"),
    (r"new row for relation .* violates check constraint", "23514"),
    (r"conflicting key value violates exclusion constraint", "23P01"),
    (r"canceling statement due to statement timeout", "57014"),
    (r"canceling statement due to user request", "57014"),
    (r"canceling autovacuum task", "57014"),
    (r"canceling statement due to lock timeout", "55P03"),
    (r"could not obtain lock on", "55P03"),
    (r"deadlock detected", "40P01"),
    (r"could not serialize access", "40001"),
    (r"canceling statement due to conflict with recovery", "40001"),
    (r"relation \".*\" does not exist", "42P01"),
    (r"missing FROM-clause entry for table", "42P01"),
    (r"syntax error at", "42601"),
    (r"column .* does not exist", "42703"),
    (r"column reference .* is ambiguous", "42702"),
    (r"(?:function|operator) .* does not exist", "42883"),
    (r"relation \".*\" already exists", "42P07"),
    (r"schema \".*\" does not exist", "3F000"),
    (r"permission denied", "42501"),
    (r"invalid input syntax for", "22P02"),
    (r"value too long for type", "22001"),
    (r"division by zero", "22012"),
    (r"(?:integer|bigint|smallint) out of range|numeric field overflow", "22003"),
    (r"invalid byte sequence for encoding", "22021"),
    (r"more than one row returned by a subquery", "21000"),
    (r"current transaction is aborted", "25P02"),
    (r"cannot execute .* in a read-only transaction", "25006"),
    (r"terminating connection due to idle-in-transaction timeout", "25P03"),
    (r"prepared statement \".*\" does not exist", "26000"),
    (r"password authentication failed", "28P01"),
    (r"no pg_hba\.conf entry|role \".*\" does not exist", "28000"),
    (r"database \".*\" does not exist", "3D000"),
    (r"sorry, too many clients already|remaining connection slots are reserved", "53300"),
    (r"out of memory", "53200"),
    (r"could not (?:extend|write to) file .*No space left on device", "53100"),
    (r"terminating connection due to administrator command", "57P01"),
    (r"the database system is (?:starting up|shutting down|in recovery mode)", "57P03"),
))
UNKNOWN_SQLSTATE = "unknown"
_ERRORS = frozenset({"ERROR", "FATAL", "PANIC"})
_CONTINUATIONS = frozenset({"DETAIL", "HINT", "CONTEXT", "QUERY", "LOCATION", "STATEMENT"})
# Which events belong to a statement, and which read their DETAIL.
_NEED_STATEMENT = frozenset({"temp", "wait", "acquired", "deadlock", "error"})
_NEED_DETAIL = frozenset({"wait", "deadlock"})


class Running:
    """What a backend's last logged execution tells an event about the statement it belongs to."""

    __slots__ = ("sql", "finished", "execute")

    def __init__(self, sql: str, finished: bool, execute: bool) -> None:
        self.sql, self.finished, self.execute = sql, finished, execute


class _Event:
    """One event being read: its record, then its DETAIL and STATEMENT as they come."""

    __slots__ = ("kind", "record", "detail", "statement", "fallback", "after", "collecting", "number", "count", "blocking")

    def __init__(self, kind: str, record: LogRecord, number: float, running: Running | None) -> None:
        self.kind, self.record, self.number = kind, record, number
        self.count = 1  # temp files waiting for the same statement are kept as one (a hash join writes hundreds)
        self.detail, self.statement = record.detail, record.statement
        self.collecting = True  # DETAIL and STATEMENT records of its backend may follow (stderr)
        self.blocking: list[tuple[str | None, str | None]] = []
        # Without a STATEMENT: the running statement, or the one its backend logs next (``after``).
        self.fallback: str | None = None
        self.after = False
        if running is not None and (not running.finished or (kind == "temp" and running.execute)):
            self.fallback = running.sql
        elif kind in ("temp", "wait", "acquired"):
            self.after = True

    def complete(self) -> bool:
        """Whether nothing that comes later can tell more about it."""
        return ((self.statement is not None or self.kind not in _NEED_STATEMENT)
                and (self.detail is not None or self.kind not in _NEED_DETAIL))


class EventReader:
    """Reads the events of one log part into ``events``; ``finish`` resolves what still waits."""

    def __init__(self, events: LogEvents, holder: Holder) -> None:
        self.events, self.holder = events, holder
        self.open: dict[str, list[_Event]] = {}  # backend → its events still waiting, oldest first
        self.own: set[str] = set()  # backends of the advisor's own sessions, whose end is left out too
        self.adding = True  # False: records of the next part, read only for what they complete here

    def detail(self, key: str, text: str) -> None:
        """A DETAIL record of a backend that has an event open (stderr, syslog)."""
        event = self.open[key][-1]
        if event.collecting and event.detail is None:
            event.detail = text
            if event.kind == "wait":
                event.blocking = self._holders(text)

    def take(self, r: LogRecord, key: str, running: Running | None) -> None:
        """A record that is not an execution: an event, a continuation of one, or neither."""
        severity = r.severity
        if severity in _CONTINUATIONS:
            waiting = self.open.get(key)
            if waiting and severity == "STATEMENT" and waiting[-1].collecting and waiting[-1].statement is None:
                waiting[-1].statement = r.message
                self._settle(key, waiting)
            return
        if key in self.open:
            self.stop_collecting(key)
        if not self.adding:
            return
        event = self._event(r, running)
        if event is None:
            return
        if event.kind == "wait" and event.detail is not None:
            event.blocking = self._holders(event.detail)
        if event.complete():
            self._add(event, event.statement)
            return
        waiting = self.open.setdefault(key, [])
        waiting.append(event)
        if len(waiting) > WAITING_KEPT:
            old = waiting.pop(0)
            self._add(old, old.fallback)
        if len(self.open) > MAX_OPEN:
            oldest = next(iter(self.open))
            self.stop_collecting(oldest)
            for old in self.open.pop(oldest, ()):
                self._add(old, old.statement or old.fallback)

    def stop_collecting(self, key: str) -> None:
        """Its backend logged something else: no DETAIL or STATEMENT will come for its last event."""
        waiting = self.open[key]
        waiting[-1].collecting = False
        self._settle(key, waiting)

    def ran(self, key: str, sql: str) -> None:
        """Its backend logged an execution: events waiting for the statement logged next take it."""
        waiting = self.open.pop(key)
        waiting[-1].collecting = False
        for event in waiting:
            self._add(event, event.statement or event.fallback or (sql if event.after else None))

    def finish(self) -> None:
        for waiting in self.open.values():
            for event in waiting:
                self._add(event, event.statement or event.fallback)
        self.open.clear()

    def _settle(self, key: str, waiting: list[_Event]) -> None:
        """Add the events that wait no more (all but those waiting for the next statement)."""
        keep: list[_Event] = []
        for event in waiting:
            if event.collecting:
                keep.append(event)
            elif event.statement is not None or not event.after:
                self._add(event, event.statement or event.fallback)
            elif event.kind == "temp" and keep and keep[-1].kind == "temp" and not keep[-1].collecting:
                keep[-1].number += event.number  # both wait for the statement their backend logs next
                keep[-1].count += event.count
            else:
                keep.append(event)
        if keep:
            self.open[key] = keep
        else:
            del self.open[key]

    def _event(self, r: LogRecord, running: Running | None) -> _Event | None:
        """The event ``r`` is, if it is one; events that need no statement are added at once."""
        message, severity = r.message, r.severity
        if severity in _ERRORS:
            if sent_by_advisor(r.statement or "", r.application):
                return None
            return _Event("deadlock" if message.startswith("deadlock detected") else "error", r, 0.0, running)
        if severity != "LOG" or sent_by_advisor("", r.application):
            return None
        first = message[:1]
        if first == "t" and (m := _TEMP.match(message)):
            return _Event("temp", r, float(m.group(1)), running)
        if first == "p" and (m := _LOCK.match(message)):
            kind = "wait" if m.group(1)[0] == "s" else "acquired"
            return _Event(kind, r, float(m.group(2)), running)
        if first in ("c", "d", "a"):
            self._instant(r, message)
        return None

    def _instant(self, r: LogRecord, message: str) -> None:
        """Events with no statement: sessions, checkpoints, autovacuum."""
        events, key = self.events, r.session or r.pid or ""
        if message.startswith("connection authorized: "):
            m = _APPLICATION.search(message)
            app = (m.group(1) if m else None) or _named(r.application)
            if app and sent_by_advisor("", app):  # the advisor's own sessions are left out, as its statements
                if len(self.own) < MAX_OPEN:
                    self.own.add(key)
            else:
                events.connected(key, app)
                events.timeline.bucket(r.timestamp).connections += 1
        elif message.startswith("disconnection: "):
            if key in self.own:
                self.own.discard(key)
            elif (t := _SESSION_TIME.match(message)) is not None:
                hours, minutes, seconds = t.groups()
                ms = ((int(hours) * 60 + int(minutes)) * 60 + float(seconds)) * 1000
                events.disconnected(key, _named(r.application), ms)
                events.timeline.bucket(r.timestamp).disconnections += 1
        elif message.startswith("checkpoint starting: "):
            events.checkpoint_started("time" in message[21:].split())
        elif message.startswith("checkpoint complete: "):
            if (c := _CHECKPOINT_DONE.search(message)) is not None:
                events.checkpoint_done(float(c.group(1)) * 1000, float(c.group(2)) * 1000)
        elif message.startswith("automatic ") and (v := _VACUUM.match(message)) is not None:
            analyze = v.group(1) == "analyze"
            removed = _REMOVED.search(message) if not analyze else None
            events.vacuumed(v.group(2), analyze=analyze, removed=int(removed.group(1)) if removed else 0)

    def _holders(self, detail: str) -> list[tuple[str | None, str | None]]:
        m = _HOLDERS.search(detail)
        if m is None:
            return []
        holders = []
        for pid in m.group(1).replace(" ", "").split(","):
            if pid:
                sql, app = self.holder(pid)
                holders.append((_statement(sql).normalized if sql else None, app))
        return holders

    def _add(self, event: _Event, sql: str | None) -> None:
        events, r = self.events, event.record
        q = _statement(sql) if sql else None
        when = events.timeline.bucket(r.timestamp)
        if event.kind == "temp":
            events.temp_file(q, int(event.number), event.count)
            when.temp_files, when.temp_bytes = when.temp_files + event.count, when.temp_bytes + int(event.number)
        elif event.kind in ("wait", "acquired"):
            events.lock_wait(q, event.number, event.blocking, acquired=event.kind == "acquired")
            when.lock_waits += event.kind == "wait"
        else:
            when.errors += 1
            if event.kind == "deadlock":
                cycle = tuple(_statement(s).normalized for s in _CYCLE.findall(event.detail or ""))
                events.deadlock(q, cycle)
            events.error(q, r.sqlstate or sqlstate_of(r.message), mask_literals(r.message), _named(r.application))


def _named(application: str | None) -> str | None:
    """The application, unless the log names none (a backend logs "[unknown]" before it knows it)."""
    return None if application in (None, "", "[unknown]") else application


def sqlstate_of(message: str) -> str:
    """The SQLSTATE an error message stands for (the common ones), else ``unknown``."""
    for pattern, code in _SQLSTATES:
        if pattern.match(message):
            return code
    return UNKNOWN_SQLSTATE


def _statement(sql: str) -> Statement:
    fp = fingerprint(sql)
    return Statement(fp.id, fp.normalized)
