"""What the server logs beside statements: temp files, lock waits, deadlocks, errors, sessions,
checkpoints and autovacuum, tied to the statement and application they belong to (issue #13).

``LogEvents`` is a mergeable aggregate like ``WorkloadStats``: each log part fills its own and
partials merge in input order, so parts parsed apart add up to the single pass. Memory is
bounded as the rest of the workload's: at most ``QUERIES_KEPT`` queries per kind of event (the
events of the others still count in the totals), ``NAMES_KEPT`` blocking statements or cycle
statements per query, and session times as exact values then a sketch (``stats.Quantiles``).
Reading the events out of log records is ``workload/logs/server_events.py``'s work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from advisor.workload.sessions import timestamp_ms
from advisor.workload.stats import NAMES_KEPT, Quantiles
from advisor.workload.timeline import Timeline

QUERIES_KEPT = 500  # queries kept per kind of event; events past them count in the totals only
TABLES_KEPT = 2000  # tables kept in the autovacuum counts
APPLICATIONS_KEPT = 200  # applications kept in the session counts; past them, sessions count under "other"
OTHER_APPLICATION = "(other)"
SESSIONS_OPEN_KEPT = 10_000  # sessions followed from their start to their end; the oldest is counted as it is beyond
NO_APPLICATION = "(none)"  # the log names none (no %a in the prefix, a process that is not a session)


@dataclass(frozen=True, slots=True)
class Statement:
    """The statement an event belongs to, by fingerprint."""

    fingerprint: str
    normalized: str


@dataclass(slots=True)
class TempFiles:
    count: int = 0
    bytes: int = 0


@dataclass(slots=True)
class LockWaits:
    count: int = 0  # `still waiting` lines; an `acquired` line completes its wait
    max_wait_ms: float = 0.0
    acquired: int = 0  # waits an `acquired` line ended; the others ended otherwise (deadlock, timeout, cancel)
    acquired_ms: float = 0.0  # their waits, summed
    blocking: dict[tuple[str | None, str | None], None] = field(default_factory=dict)  # (normalized, application)


@dataclass(slots=True)
class Deadlocks:
    count: int = 0
    cycle: tuple[str, ...] = ()  # the normalized statements of the first cycle seen


@dataclass(slots=True)
class Errors:
    sqlstate: str
    message: str  # the first message seen, literals masked
    count: int = 0
    applications: dict[str, None] = field(default_factory=dict)  # who sent it, a few (a failing query may have no logged run)


@dataclass(slots=True)
class Sessions:
    """One application's sessions: either line of a session counts it (see ``count``)."""

    connections: int = 0
    disconnections: int = 0
    times: Quantiles = field(default_factory=Quantiles)  # session times, ms, from disconnection lines

    @property
    def count(self) -> int:
        # A log may hold either line or both; a window of it may cut a session's pair.
        return max(self.connections, self.disconnections)

    def merge(self, other: Sessions) -> None:
        self.connections += other.connections
        self.disconnections += other.disconnections
        self.times.merge(other.times)


@dataclass(slots=True)
class Checkpoints:
    count: int = 0  # `checkpoint starting` lines
    timed: int = 0
    write_ms: float = 0.0  # from `checkpoint complete` lines
    sync_ms: float = 0.0

    @property
    def requested(self) -> int:
        return self.count - self.timed


@dataclass(slots=True)
class Vacuums:
    vacuums: int = 0
    analyzes: int = 0
    removed_tuples: int = 0


@dataclass(slots=True)
class LogEvents:
    """Every kind of event the logs held, with totals and per-query (or per-table, per-application) counts."""

    temp_files: TempFiles = field(default_factory=TempFiles)
    temp_by_query: dict[Statement, TempFiles] = field(default_factory=dict)
    lock_waits: int = 0
    waits_by_query: dict[Statement, LockWaits] = field(default_factory=dict)
    deadlocks: int = 0
    deadlocks_by_query: dict[Statement, Deadlocks] = field(default_factory=dict)
    errors: int = 0
    errors_by_sqlstate: dict[str, int] = field(default_factory=dict)
    errors_by_query: dict[tuple[Statement, str], Errors] = field(default_factory=dict)
    sessions: dict[str, Sessions] = field(default_factory=dict)  # by application; read ``applications()``
    open_sessions: dict[str, str] = field(default_factory=dict)  # backend → application ("": not named yet)
    ends_unmatched: dict[str, tuple[str, float]] = field(default_factory=dict)  # backend → (application, ms)
    checkpoints: Checkpoints = field(default_factory=Checkpoints)
    autovacuum: dict[str, Vacuums] = field(default_factory=dict)  # by "db.schema.table"
    first_seen: str | None = None  # the log's first and last timestamps, as logged: its span
    last_seen: str | None = None
    timeline: Timeline = field(default_factory=Timeline)  # the same events per minute or hour (timeline.py)

    def __bool__(self) -> bool:
        return bool(self.temp_files.count or self.lock_waits or self.waits_by_query or self.deadlocks
                    or self.errors or self.sessions or self.open_sessions or self.ends_unmatched or self.checkpoints.count or self.checkpoints.write_ms
                    or self.autovacuum)

    # --- what a log part adds --------------------------------------------------------------

    def temp_file(self, q: Statement | None, size: int, count: int = 1) -> None:
        """``count`` temp files of ``size`` bytes in all."""
        self.temp_files.count += count
        self.temp_files.bytes += size
        entry = _entry(self.temp_by_query, q, TempFiles)
        if entry is not None:
            entry.count += count
            entry.bytes += size

    def lock_wait(self, q: Statement | None, wait_ms: float, blocking: list[tuple[str | None, str | None]],
                  *, acquired: bool = False) -> None:
        """A `still waiting` line (counted), or an `acquired` one (only the wait it completes)."""
        self.lock_waits += not acquired
        entry = _entry(self.waits_by_query, q, LockWaits)
        if entry is not None:
            entry.count += not acquired
            entry.max_wait_ms = max(entry.max_wait_ms, wait_ms)
            entry.acquired += acquired
            entry.acquired_ms = round(entry.acquired_ms + (wait_ms if acquired else 0.0), 3)  # µs: any merge order, one sum
            for holder in blocking:
                _keep(entry.blocking, holder)

    def deadlock(self, q: Statement | None, cycle: tuple[str, ...]) -> None:
        self.deadlocks += 1
        entry = _entry(self.deadlocks_by_query, q, Deadlocks)
        if entry is not None:
            entry.count += 1
            entry.cycle = entry.cycle or cycle[:NAMES_KEPT]

    def error(self, q: Statement | None, sqlstate: str, message: str, application: str | None = None) -> None:
        self.errors += 1
        self.errors_by_sqlstate[sqlstate] = self.errors_by_sqlstate.get(sqlstate, 0) + 1
        if q is None:
            return
        key = (q, sqlstate)
        entry = self.errors_by_query.get(key)
        if entry is None:
            if len(self.errors_by_query) >= QUERIES_KEPT:
                return
            entry = self.errors_by_query[key] = Errors(sqlstate, message)
        entry.count += 1
        if application:
            _keep(entry.applications, application)

    def connected(self, backend: str, application: str | None) -> None:
        """A `connection authorized` line. A session whose application the log names only at its end
        (a backend logs "[unknown]" before it knows it) is counted there."""
        if application:
            self._application(application).connections += 1
        self._left_open(backend, application or "")

    def disconnected(self, backend: str, application: str | None, ms: float) -> None:
        """A `disconnection` line with its session time."""
        known = self.open_sessions.pop(backend, None)
        if known is None and backend not in self.ends_unmatched and len(self.ends_unmatched) < SESSIONS_OPEN_KEPT:
            self.ends_unmatched[backend] = (application or "", ms)  # a part before may hold its start
            return
        name = application or known or None
        entry = self._application(name)
        entry.connections += known == ""  # counted now that its application is known
        entry.disconnections += 1
        entry.times.add(ms)

    def applications(self) -> dict[str, Sessions]:
        """Sessions per application, those whose start or end the log does not show included."""
        result = {}
        for name, s in self.sessions.items():
            result[name] = Sessions(s.connections, s.disconnections)
            result[name].times.merge(s.times)
        for application, ms in self.ends_unmatched.values():  # began before the log
            entry = result.setdefault(application or NO_APPLICATION, Sessions())
            entry.disconnections += 1
            entry.times.add(ms)
        for application in self.open_sessions.values():  # still open, its application never named
            if not application:
                result.setdefault(NO_APPLICATION, Sessions()).connections += 1
        return result

    def _unended(self, application: str) -> None:
        if not application:  # not counted yet
            self._application(None).connections += 1

    def _application(self, application: str | None) -> Sessions:
        name = application or NO_APPLICATION
        entry = self.sessions.get(name)
        if entry is None:
            if len(self.sessions) >= APPLICATIONS_KEPT:
                name = OTHER_APPLICATION
            entry = self.sessions.setdefault(name, Sessions())
        return entry

    def checkpoint_started(self, timed: bool) -> None:
        self.checkpoints.count += 1
        self.checkpoints.timed += timed

    def checkpoint_done(self, write_ms: float, sync_ms: float) -> None:
        self.checkpoints.write_ms = round(self.checkpoints.write_ms + write_ms, 3)  # µs, as acquired_ms
        self.checkpoints.sync_ms = round(self.checkpoints.sync_ms + sync_ms, 3)

    def vacuumed(self, table: str, *, analyze: bool, removed: int = 0) -> None:
        entry = self.autovacuum.get(table)
        if entry is None:
            if len(self.autovacuum) >= TABLES_KEPT:
                return
            entry = self.autovacuum[table] = Vacuums()
        if analyze:
            entry.analyzes += 1
        else:
            entry.vacuums += 1
            entry.removed_tuples += removed

    def seen(self, first: str | None, last: str | None) -> None:
        """The span of a part: its first and last timestamps (parts come in input order)."""
        self.first_seen = self.first_seen or first
        self.last_seen = last or self.last_seen

    def span_seconds(self) -> float | None:
        """Seconds between the log's first and last timestamps; None when they cannot be read."""
        first, last = _seconds(self.first_seen), _seconds(self.last_seen)
        return None if first is None or last is None else abs(last - first)

    # --- merging ---------------------------------------------------------------------------

    def merge(self, later: LogEvents) -> LogEvents:
        """Add what ``later`` (a later part of the input) read; returns self."""
        self.temp_files.count += later.temp_files.count
        self.temp_files.bytes += later.temp_files.bytes
        for q, t in later.temp_by_query.items():
            if (mine := _entry(self.temp_by_query, q, TempFiles)) is not None:
                mine.count += t.count
                mine.bytes += t.bytes
        self.lock_waits += later.lock_waits
        for q, w in later.waits_by_query.items():
            if (wait := _entry(self.waits_by_query, q, LockWaits)) is not None:
                wait.count += w.count
                wait.max_wait_ms = max(wait.max_wait_ms, w.max_wait_ms)
                wait.acquired, wait.acquired_ms = wait.acquired + w.acquired, round(wait.acquired_ms + w.acquired_ms, 3)
                for holder in w.blocking:
                    _keep(wait.blocking, holder)
        self.deadlocks += later.deadlocks
        for q, d in later.deadlocks_by_query.items():
            if (dead := _entry(self.deadlocks_by_query, q, Deadlocks)) is not None:
                dead.count += d.count
                dead.cycle = dead.cycle or d.cycle
        self._merge_errors(later)
        self._merge_sessions(later)
        c, other = self.checkpoints, later.checkpoints
        c.count, c.timed = c.count + other.count, c.timed + other.timed
        c.write_ms, c.sync_ms = round(c.write_ms + other.write_ms, 3), round(c.sync_ms + other.sync_ms, 3)
        for table, v in later.autovacuum.items():
            mine_v = self.autovacuum.get(table)
            if mine_v is None:
                if len(self.autovacuum) < TABLES_KEPT:
                    self.autovacuum[table] = v
                continue
            mine_v.vacuums += v.vacuums
            mine_v.analyzes += v.analyzes
            mine_v.removed_tuples += v.removed_tuples
        self.seen(later.first_seen, later.last_seen)
        self.timeline.merge(later.timeline)
        return self

    def _merge_sessions(self, later: LogEvents) -> None:
        """Sessions cut by a part boundary are stitched: a later part's first end of a backend meets
        the start an earlier part left open, as one pass would have seen them."""
        for name, s in later.sessions.items():
            if name not in self.sessions and len(self.sessions) >= APPLICATIONS_KEPT:
                name = OTHER_APPLICATION
            self.sessions.setdefault(name, Sessions()).merge(s)
        for backend, (application, ms) in later.ends_unmatched.items():
            if backend in self.open_sessions or backend not in self.ends_unmatched:
                self.disconnected(backend, application or None, ms)
            else:  # two ends without a start between: the later one began before it, unseen
                entry = self._application(application or None)
                entry.disconnections += 1
                entry.times.add(ms)
        for backend, application in later.open_sessions.items():
            self._left_open(backend, application)

    def _left_open(self, backend: str, application: str) -> None:
        """A session whose end is not seen yet (its connection already counted if it named its application)."""
        if backend in self.open_sessions:  # the pid came back without a disconnection line
            self._unended(self.open_sessions.pop(backend))
        elif len(self.open_sessions) >= SESSIONS_OPEN_KEPT:
            self._unended(self.open_sessions.pop(next(iter(self.open_sessions))))
        self.open_sessions[backend] = application

    def _merge_errors(self, later: LogEvents) -> None:
        self.errors += later.errors
        for state, n in later.errors_by_sqlstate.items():
            self.errors_by_sqlstate[state] = self.errors_by_sqlstate.get(state, 0) + n
        for key, e in later.errors_by_query.items():
            mine = self.errors_by_query.get(key)
            if mine is not None:
                mine.count += e.count
                for application in e.applications:
                    _keep(mine.applications, application)
            elif len(self.errors_by_query) < QUERIES_KEPT:
                self.errors_by_query[key] = e


def _entry(by_query: dict, q: Statement | None, make):
    """The query's entry, made if there is room; None for an event tied to no statement, or past the cap."""
    if q is None:
        return None
    entry = by_query.get(q)
    if entry is None and len(by_query) < QUERIES_KEPT:
        entry = by_query[q] = make()
    return entry


def _keep(names: dict, name) -> None:
    if name not in names and len(names) < NAMES_KEPT:
        names[name] = None


_SYSLOG_DATE = re.compile(r"([A-Z][a-z]{2}) +(\d+) (\d\d):(\d\d):(\d\d)")
_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}


def _seconds(timestamp: str | None) -> float | None:
    """A logged timestamp as seconds, for differences only: one log has one time zone (%m, %t, ISO,
    epoch %n, syslog's yearless date)."""
    if not timestamp:
        return None
    if (ms := timestamp_ms(timestamp)) is not None:  # dated and epoch timestamps, as the session rules read them
        return ms / 1000
    if m := _SYSLOG_DATE.match(timestamp):
        named = _MONTHS.get(m.group(1))
        if named is None:
            return None
        day, hour, minute, second = (int(g) for g in m.groups()[1:])
        return datetime(2000, named, day, hour, minute, second).timestamp()
    return None
