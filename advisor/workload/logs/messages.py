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
- ``DETAIL:  parameters: …`` after an execute belongs to it (csvlog and
  jsonlog carry it in the same record).
- ``duration: X ms  plan:`` is auto_explain: a plan for the statement the same
  session logs next, not an execution of its own, unless no statement log
  follows (when the plan threshold is below the statement threshold).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator

from advisor.workload.logs.records import LogRecord, Tally
from advisor.workload.model import Execution

MAX_OPEN_SESSIONS = 10_000  # sessions with a pending execution; the oldest is flushed beyond

# An optional duration, then what the message is about; a bare duration has no verb.
_MESSAGE = re.compile(
    r"(?:duration: (\d+(?:\.\d+)?) ms(?:  |$))?"
    r"(?:(statement|execute (?:fetch from )?[^:]*|parse [^:]*|bind [^:]*|plan):[ \n]?|$)"
)
_QUERY_TEXT = re.compile(r"\s*Query Text: (.*)")


class _Pending:
    __slots__ = ("record", "sql", "duration", "parameters", "plan")

    def __init__(self, record: LogRecord, sql: str, duration: float | None, parameters: str | None, plan: str | None = None):
        self.record, self.sql, self.duration, self.parameters, self.plan = record, sql, duration, parameters, plan


def executions(records: Iterable[LogRecord], file: str, tally: Tally) -> Iterator[Execution]:
    """The executions in ``records``, in order within each session."""
    pending: dict[str, _Pending] = {}  # an execution waiting for its DETAIL or duration
    plans: dict[str, _Pending] = {}  # an auto_explain plan waiting for its statement
    message_match = _MESSAGE.match
    for r in records:
        key = r.session or r.pid or ""
        if r.severity == "DETAIL":
            p = pending.get(key)
            if p is not None and r.message.startswith("parameters: "):
                p.parameters = r.message[12:]
            continue
        m = message_match(r.message) if r.severity == "LOG" else None
        if m is None:
            tally.other_events += 1
            continue
        duration_text, verb = m.group(1, 2)
        duration = float(duration_text) if duration_text is not None else None
        if verb is None:  # bare duration: the time of the statement logged just before
            if duration is None:  # an empty message
                tally.other_events += 1
                continue
            p = pending.get(key)
            if p is not None and p.duration is None:
                p.duration = duration
                del pending[key]
                yield _execution(p, file)
            else:
                tally.other_events += 1  # log_duration's line for something not logged
            continue
        if verb.startswith("execute fetch from"):  # more rows from an open portal: the same execution
            p = pending.get(key)
            if p is not None and duration is not None:
                p.duration = (p.duration or 0.0) + duration
            continue
        p = pending.pop(key, None)  # any new message of the session closes its pending one
        if p is not None:
            yield _execution(p, file)
        sql = r.message[m.end() :]
        if verb == "plan":
            tally.plans += 1
            yield from _orphan_plan(plans.pop(key, None), file)
            plans[key] = _plan(r, sql, duration)
        elif verb[0] == "s" or verb[0] == "e":  # statement, execute
            p = _Pending(r, sql, duration, _parameters(r.detail))
            if plans:
                plan = plans.pop(key, None)
                if plan is not None and _plans_query(plan, sql):
                    p.plan = plan.plan
                else:
                    yield from _orphan_plan(plan, file)
            pending[key] = p
            if len(pending) > MAX_OPEN_SESSIONS:
                yield _execution(pending.pop(next(iter(pending))), file)
        # parse and bind: counted by their execute.
    for p in pending.values():
        yield _execution(p, file)
    for p in plans.values():
        yield from _orphan_plan(p, file)


def _parameters(detail: str | None) -> str | None:
    if detail and detail.startswith("parameters: "):
        return detail[12:]
    return None


def _plan(record: LogRecord, text: str, duration: float | None) -> _Pending:
    """An auto_explain plan, with the query it names (text or JSON format)."""
    query = ""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            query = json.loads(stripped).get("Query Text", "")
        except (ValueError, AttributeError):
            pass
    else:
        m = _QUERY_TEXT.match(text)
        if m:
            query = m.group(1)
    return _Pending(record, query.strip(), duration, None, plan=text)


def _plans_query(plan: _Pending, sql: str) -> bool:
    # In the text format a multi-line query text runs into the plan: match its first line.
    return bool(plan.sql) and sql.strip().startswith(plan.sql.split("\n", 1)[0])


def _orphan_plan(plan: _Pending | None, file: str) -> Iterator[Execution]:
    """A plan whose statement was not logged is the only trace of that execution."""
    if plan is not None and plan.sql:
        yield _execution(plan, file)


def _execution(p: _Pending, file: str) -> Execution:
    r = p.record
    return Execution(
        sql=p.sql,
        duration_ms=p.duration,
        timestamp=r.timestamp,
        session=r.session or r.pid,
        pid=int(r.pid) if r.pid and r.pid.isdigit() else None,
        user=r.user,
        database=r.database,
        application=r.application,
        vxid=r.vxid,
        query_id=int(r.query_id) if r.query_id and r.query_id.lstrip("-").isdigit() and r.query_id != "0" else None,
        parameters=p.parameters,
        plan=p.plan,
        file=file,
        line=r.line,
    )
