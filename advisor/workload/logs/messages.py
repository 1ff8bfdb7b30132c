"""Log records to executions: what each server message means, whatever the format.

The rules, from what PostgreSQL writes:
- ``duration: X ms  statement: SQL`` and ``duration: X ms  execute NAME: SQL``
  are one execution each; ``statement:`` and ``execute NAME:`` without a
  duration (``log_statement``) are too, and a bare ``duration: X ms`` that
  follows in the same session gives them their time.
- ``parse`` and ``bind`` belong to an execution that is logged separately by
  its ``execute``: they are never counted. ``execute fetch from`` fetches more
  rows from the same portal: its time is added to that execution, as
  pg_stat_statements counts it once.
- ``DETAIL:  parameters: …`` right after an execute belongs to it (csvlog and
  jsonlog carry it in the same record); after a parse or bind it does not.
- ``duration: X ms  plan:`` is auto_explain: a plan, never an execution of its
  own when its statement is logged too. auto_explain writes it when the
  executor ends, so where it lands depends on the protocol and the statement:
  before a ``duration: … statement:`` line (simple protocol) and before the
  ``execute`` line of an INSERT/UPDATE/DELETE, but after the ``execute`` line
  of a SELECT (the portal is dropped at Sync, or at the next Bind inside a
  transaction) and after lines that ``log_statement`` writes when a statement
  starts. So a plan is matched to its execution by backend and ``Query Text``
  (whitespace aside), in either direction, and by time: a plan cannot take
  longer than the execution it belongs to. A plan that matches no logged
  execution (the statement ran under ``log_min_duration_statement`` but over
  ``auto_explain.log_min_duration``) is the only trace of that execution and
  counts as one.
- A statement ``log_statement`` wrote when it started and that then failed
  (its ERROR names it) is not an execution, as pg_stat_statements counts it.

The boundary rule. A log parsed in parts is cut at lines that start an execution, but other
sessions' lines go on across a cut: what completes an execution (its bare duration, ``execute
fetch from``, its plan, the ERROR of a statement logged when it started) can land in the next
part, and what a record means depends on what its session logged before it (a plan before its
statement, a bare duration after a statement of the previous part). So a part also reads the
records around it, through the same matching: the previous part's last ``CONTEXT_BYTES``
(from a line a part may begin at), and the next part's records until nothing of its own still
waits for one (at most ``CONTEXT_RECORDS``). Each part yields and counts only what its own
records start: an execution whose statement or execute line is its own (with the time, plan and
parameters the next part's records give it), an unmatched plan whose plan line is its own, the
tallies and server events of its own records (``CONTEXT_LINE`` marks the others). Both sides of a
cut see the same records in the same order, so they agree on every record's fate, and merged
parts give the single pass exactly as long as what a cut separates lies within those bounds;
beyond them a part decides from what it read (a statement that runs past ``CONTEXT_RECORDS``
records of the log loses its time, as it did before the rule).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Generator, Iterable, Iterator

from advisor.workload.events import LogEvents
from advisor.workload.logs.records import LogRecord, Tally
from advisor.workload.logs.server_events import EventReader, Holder, Running
from advisor.workload.model import Execution
from advisor.workload.own_traffic import sent_by_advisor

MAX_OPEN_SESSIONS = 10_000  # sessions followed at once; the least recently active is closed beyond
RECENT_KEPT = 4  # executions per session whose plan may still come (a cursor's portal closes later)
# A plan's duration (executor run and finish) against its statement's (which also covers
# parsing, planning and the protocol): allow the log's rounding and a little clock noise.
PLAN_SLACK_MS, PLAN_SLACK_RATIO = 0.05, 0.1
# How far a part reads into its neighbours for what a boundary cuts (the boundary rule, above).
CONTEXT_BYTES = 2 << 20  # of the previous part, before the part's first byte
CONTEXT_RECORDS = 20_000  # of the next part, at most: fewer once nothing of the part's own still waits
CONTEXT_LINE = 0  # a neighbouring part's record's line (that part numbers it); falsy, so hot paths test record.line

# An optional duration, then what the message is about; a bare duration has no verb.
_MESSAGE = re.compile(
    r"(?:duration: (\d+(?:\.\d+)?) ms(?:  |$))?"
    r"(?:(statement|execute (?:fetch from )?[^:]*|parse [^:]*|bind [^:]*|plan):[ \n]?|$)",
    re.ASCII,
)
_QUERY_TEXT = "Query Text: "
# The first plan node of a text-format plan: auto_explain always prints costs.
_PLAN_NODE = re.compile(r"\n[^\n]*  \(cost=\d")


class _Pending:
    """An execution still open to what the session logs next: parameters, time, its plan."""

    __slots__ = ("record", "sql", "duration", "parameters", "plan", "before")

    def __init__(self, record: LogRecord, sql: str, duration: float | None, parameters: str | None):
        self.record, self.sql, self.duration, self.parameters = record, sql, duration, parameters
        self.plan: str | None = None
        self.before: _Plan | None = None  # a plan logged before this execute: its own, unless one follows


class _Plan:
    """An auto_explain entry: the query it names and how long the executor ran."""

    __slots__ = ("record", "text", "query", "duration", "claimed", "_key")

    def __init__(self, record: LogRecord, text: str, duration: float | None):
        self.record, self.text, self.duration = record, text, duration
        self.query = _plan_query(text)
        self.claimed = False  # a logged execution already accounts for it
        self._key: str | None = None

    def names(self, sql: str) -> bool:
        if self._key is None:
            self._key = _squash(self.query)
        return bool(self._key) and self._key == _squash(sql)

    def fits(self, duration: float | None) -> bool:
        """Whether an execution that took ``duration`` could have run this plan."""
        return (duration is None or self.duration is None
                or self.duration <= duration * (1 + PLAN_SLACK_RATIO) + PLAN_SLACK_MS)


class _Session:
    """What one backend has logged that later lines may still complete."""

    __slots__ = ("open", "details", "plan", "recent", "error")

    def __init__(self) -> None:
        self.open: _Pending | None = None  # the last execution, until the next one starts
        self.details = False  # a DETAIL now belongs to ``open`` (nothing else was logged since)
        self.plan: _Plan | None = None  # a plan waiting for the statement line that follows it
        self.recent: list[_Pending] = []  # closed executions without a plan, newest last
        self.error = False  # an ERROR was logged whose STATEMENT line comes next (stderr)

    def resolve(self, p: _Pending, execute: bool, file: str) -> Iterator[Execution]:
        """``p`` begins: the plan waiting for a statement line is its own, or an orphan."""
        plan, self.plan = self.plan, None
        if plan is None:  # none waits
            return
        # Only lines written when a statement ends can follow their plan.
        if p.duration is not None and plan.names(p.sql) and plan.fits(p.duration):
            if execute:  # an INSERT/UPDATE/DELETE's plan comes before, a SELECT's after: wait and see
                p.before = plan
            else:
                p.plan = plan.text
        else:
            yield from _orphan(plan, file)

    def take_plan(self, plan: _Plan, file: str) -> Iterator[Execution]:
        """A plan arrives: it belongs to an execution already logged, or waits for the next one."""
        p = self.open
        if p is not None and p.plan is None and plan.names(p.sql):
            if plan.fits(p.duration):
                p.plan = plan.text
                if p.before is not None:  # then the plan before was an unlogged execution's
                    yield from _orphan(p.before, file)
                    p.before = None
                return
            plan.claimed = True  # its own statement line may still follow; if not, it is p's
        else:
            for r in reversed(self.recent):
                if r.plan is None and plan.names(r.sql):
                    r.plan = plan.text  # one plan per execution
                    plan.claimed = True
                    break
        if self.plan is not None:
            yield from _orphan(self.plan, file)
        self.plan = plan

    def close(self, file: str) -> Execution | None:
        """The open execution is done (a plan for it may still come: a cursor's portal closes later).
        Returns it unless it is a neighbouring part's; a function, not a generator: it runs per statement."""
        p, self.open = self.open, None
        if p is None:
            return None
        if p.before is not None:  # no plan followed it: the one before was its own
            p.plan, p.before = p.before.text, None
        if p.plan is None:
            self.recent.append(p)
            if len(self.recent) > RECENT_KEPT:
                del self.recent[0]
        return _execution(p, file) if p.record.line else None  # not a neighbouring part's

    def finish(self, file: str) -> Iterator[Execution]:
        if (closed := self.close(file)) is not None:
            yield closed
        if self.plan is not None:
            yield from _orphan(self.plan, file)
        self.plan = None


class _Matcher:
    """The sessions of one part and what they still wait for, across the records read for it: the
    previous part's tail, its own, and the next part's head (the boundary rule, above)."""

    __slots__ = ("file", "sessions", "plans_seen")

    def __init__(self, file: str) -> None:
        self.file = file
        self.sessions: dict[str, _Session] = {}  # least recently started execution first
        self.plans_seen = False  # only logs with plans need more than the execution itself

    def run(self, records: Iterable[LogRecord], tally: Tally, reader: EventReader) -> Generator[Execution, None, LogRecord | None]:
        """The executions ``records`` complete, in order within each session; returns the last record.
        The other records' server events go to ``reader`` (only records that are not executions cost it)."""
        file, sessions, plans_seen = self.file, self.sessions, self.plans_seen
        waiting = reader.open  # backends with an event waiting for a DETAIL, a STATEMENT or their statement
        message_match = _MESSAGE.match
        r = None
        for r in records:
            key = r.session or r.pid or ""
            s = sessions.get(key)
            severity = r.severity
            if severity == "DETAIL":
                # details: no other line since the open execution's; it may be gone (_forget_failed)
                if s is not None and s.details and s.open is not None and r.message.startswith("parameters: "):
                    s.open.parameters = r.message[12:]
                if waiting and key in waiting:
                    reader.detail(key, r.message)
                continue
            m = message_match(r.message) if severity == "LOG" else None
            if m is None:
                tally.other_events += 1
                reader.take(r, key, _running(s))
                if s is not None and s.open is not None and severity in _FAILED:
                    _forget_failed(s, r)
                continue
            duration_text, verb = m.group(1, 2)
            duration = float(duration_text) if duration_text is not None else None
            if s is None:
                s = sessions[key] = _Session()
                if len(sessions) > MAX_OPEN_SESSIONS:
                    yield from sessions.pop(next(iter(sessions))).finish(file)
            s.details = False
            if verb is None:  # bare duration: the time of the statement logged before it
                p = s.open
                if duration is not None and p is not None and p.duration is None:
                    p.duration = duration
                else:
                    tally.other_events += 1  # an empty message, or log_duration's line for something not logged
            elif verb[0] == "p":
                if verb == "plan":
                    plan, plans_seen = _Plan(r, r.message[m.end() :], duration), True
                    tally.plans += not sent_by_advisor(plan.query, r.application)  # as its execution is left out
                    yield from s.take_plan(plan, file)
                # parse: counted by its execute.
            elif verb[0] == "e" and verb.startswith("execute fetch from"):  # more rows from an open portal: the same execution
                p = s.open
                if p is not None and duration is not None:
                    p.duration = (p.duration or 0.0) + duration
            elif verb[0] == "s" or verb[0] == "e":  # statement, execute
                detail = r.detail  # csvlog's and jsonlog's parameters come in the record
                p = _Pending(r, r.message[m.end() :], duration,
                             detail[12:] if detail is not None and detail.startswith("parameters: ") else None)
                if waiting and key in waiting:
                    reader.ran(key, p.sql)
                if s.plan is not None:
                    yield from s.resolve(p, verb[0] == "e", file)
                if s.open is not None:
                    if plans_seen:
                        if (closed := s.close(file)) is not None:
                            yield closed
                    elif s.open.record.line:  # not a neighbouring part's
                        yield _execution(s.open, file)
                s.open, s.details = p, True
                del sessions[key]  # kept in order of activity: the idlest session is closed first
                sessions[key] = s
            # bind: counted by its execute.
        self.plans_seen = plans_seen
        return r

    def waits(self) -> bool:
        """Whether a record still to come can change what this part yields: an execution of its own
        open to a duration, a plan or an error, or a plan of its own not yet known to be one's."""
        return any(_owns(s.open) or _owns(s.plan) or (s.open is not None and _owns(s.open.before))
                   for s in self.sessions.values())

    def finish(self) -> Iterator[Execution]:
        for s in self.sessions.values():
            yield from s.finish(self.file)


def executions(records: Iterable[LogRecord], file: str, tally: Tally, events: LogEvents | None = None,
               before: Iterable[LogRecord] = (), after: Iterable[LogRecord] = ()) -> Iterator[Execution]:
    """The executions in ``records``, in order within each session; the other records' server events
    go to ``events`` (see server_events.py: only records that are not executions cost it).

    ``before`` and ``after`` are the records around ``records`` when they are a part of a log parsed in
    parts: read for what they tell about ``records``, never counted (the boundary rule, above)."""
    matcher = _Matcher(file)
    holder = _holder(matcher.sessions)
    behind = EventReader(LogEvents(), holder)  # the previous part's events are its own
    yield from matcher.run(_context(before), Tally(file), behind)
    reader = EventReader(events if events is not None else LogEvents(), holder)
    reader.own = behind.own  # the advisor's sessions that began before this part
    records = iter(records)
    first = next(records, None)  # the part's first and last records give its span
    last = yield from matcher.run(itertools.chain((first,), records) if first is not None else (), tally, reader)
    reader.adding = False  # the next part's events are its own too; it may only complete ours
    yield from matcher.run(_ahead(after, matcher, reader), Tally(file), reader)
    yield from matcher.finish()
    reader.finish()
    if first is not None and last is not None:
        reader.events.seen(first.timestamp, last.timestamp)


def _owns(item: _Pending | _Plan | None) -> bool:
    """Whether the part holds the record ``item`` began with (not a neighbouring part)."""
    return item is not None and item.record.line != CONTEXT_LINE


def _context(records: Iterable[LogRecord]) -> Iterator[LogRecord]:
    """Records of a neighbouring part, marked so: what they start is that part's to yield and count."""
    for r in records:
        r.line = CONTEXT_LINE
        yield r


def _ahead(records: Iterable[LogRecord], matcher: _Matcher, reader: EventReader) -> Iterator[LogRecord]:
    """The next part's records for as long as they can complete this part's executions and events."""
    for n, r in enumerate(_context(records)):
        if n == CONTEXT_RECORDS or (n % 256 == 0 and not (reader.open or matcher.waits())):
            return
        yield r


def _running(s: _Session | None) -> Running | None:
    """What the backend's last logged execution tells an event (see server_events.py)."""
    p = s.open if s is not None else None
    if p is None:
        return None
    message = p.record.message
    return Running(p.sql, p.duration is not None, message.startswith("execute ") or "  execute " in message)


def _holder(sessions: dict[str, _Session]) -> Holder:
    """Look a blocking process up by pid: its last logged statement and application."""

    def holder(pid: str) -> tuple[str | None, str | None]:
        s = sessions.get(pid)
        if s is None and pid.isdigit():  # sessions are keyed by %c, "start.pid" in hex
            suffix = f".{int(pid):x}"
            s = next((v for k, v in reversed(sessions.items()) if k.endswith(suffix)), None)
        p = s.open if s is not None else None
        if p is None and s is not None and s.recent:
            p = s.recent[-1]
        return (p.sql, p.record.application) if p is not None else (None, None)

    return holder


_FAILED = frozenset({"ERROR", "FATAL", "STATEMENT"})


def _forget_failed(s: _Session, r: LogRecord) -> None:
    """A statement ``log_statement`` logged when it started, then failed, was not an execution:
    pg_stat_statements does not count it, and with ``log_min_duration_statement`` it is not
    logged at all. The error names it (csvlog and jsonlog in the record, stderr on the
    STATEMENT line that follows); a statement that already has its duration had finished."""
    if r.severity == "STATEMENT":
        failed, s.error = (r.message if s.error else None), False
    else:
        failed, s.error = r.statement, r.statement is None
    p = s.open
    if failed and p is not None and p.duration is None and p.plan is None and _squash(failed) == _squash(p.sql):
        s.open = None


def _orphan(plan: _Plan, file: str) -> Iterator[Execution]:
    """A plan no logged execution accounts for is the only trace of its execution."""
    if not plan.claimed and plan.query and plan.record.line:  # a neighbouring part's plan is its own
        p = _Pending(plan.record, plan.query, plan.duration, None)
        p.plan = plan.text
        yield _execution(p, file)


def _plan_query(text: str) -> str:
    """The query an auto_explain entry names (text or JSON format), as the server logged it."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return str(json.loads(stripped).get("Query Text", "")).strip()
        except (ValueError, AttributeError):
            return ""
    start = text.find(_QUERY_TEXT)
    if start < 0:
        return ""
    body = text[start + len(_QUERY_TEXT) :]
    # A multi-line query runs into the plan in the text format: it ends before the first node.
    node = _PLAN_NODE.search(body)
    query = body[: node.start()] if node else body.partition("\n")[0]
    return query.partition("\nQuery Parameters: ")[0].strip()  # PostgreSQL 16 prints them in between


def _squash(sql: str) -> str:
    """The text with runs of whitespace made one space: log shippers and formats differ only there."""
    return " ".join(sql.split())


def _execution(p: _Pending, file: str) -> Execution:
    r = p.record
    pid, query_id = r.pid, r.query_id
    # By position, in Execution's field order: this runs once per logged statement.
    return Execution(
        p.sql, p.duration, r.timestamp, r.session or pid,
        int(pid) if pid and pid.isdigit() else None,
        r.user, r.database, r.application, r.vxid,
        int(query_id) if query_id and query_id != "0" and query_id.lstrip("-").isdigit() else None,
        p.parameters, p.plan, file, r.line,
    )
