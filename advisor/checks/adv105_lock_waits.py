"""ADV105 lock_waits: statements waited on locks other sessions held.

Problem: a statement that waits for a row or table lock does nothing while it
waits; its client, and every client queued behind it, waits too. The blocker
is a transaction that holds its locks until it ends, often long after the
statement that took them.
Signal: ``log_lock_waits`` lines tied to the waiting query (``Workload.events``):
at least ``lock_wait_min_count`` of them. Each already waited
``deadlock_timeout`` (1 s by default) before the server logged it.
Impact: the time the waits lasted, as far as the log shows it: the sum of the
waits an ``acquired`` line ended (a lower bound: waits ended by a deadlock, a
timeout or a cancel show no end). Severity: from that impact
(``Thresholds.severity``).
Fix, by pattern: a queue (the waiter locks rows with ``FOR UPDATE``) →
``SKIP LOCKED``; DDL blocking → ``lock_timeout`` on the DDL and a retry,
``CREATE INDEX CONCURRENTLY``; the same statement on both sides (a hot row) →
commit right after it, or batch the increments; writes on one table from
different statements → one update order in every transaction; always: keep
transactions short (the blocking statement shown is the last the blocker ran,
not necessarily the one that took the lock) and ``lock_timeout`` where
failing fast beats waiting.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from advisor.checks.context import Context
from advisor.findings import Finding
from advisor.words import plural
from advisor.workload.events import LockWaits, Statement
from advisor.workload.tables import tables_of, written_tables

CODE = "ADV105"
NAME = "lock_waits"

_ROW_LOCK = re.compile(r"\bFOR\s+(?:NO\s+KEY\s+UPDATE|UPDATE|KEY\s+SHARE|SHARE)(?:\s+OF\s+[\w.\", ]+?)?(?=\s+(?:NOWAIT|SKIP)|\s*$)",
                       re.IGNORECASE)
_DDL = re.compile(r"^\s*(ALTER|DROP|TRUNCATE|LOCK|VACUUM|CLUSTER|REINDEX|CREATE\s+(?:UNIQUE\s+)?INDEX(?!\s+CONCURRENTLY))\b",
                  re.IGNORECASE)
ALWAYS = ("Keep transactions short: a lock is held until its transaction ends, so commit right after the last write "
          "(the blocking statement shown is the last one its transaction ran). Where failing fast beats waiting: "
          "SET lock_timeout = '2s' and retry.")


def run(ctx: Context) -> Iterable[Finding]:
    events = ctx.workload.events
    if events is None:
        return
    for statement, waits in events.waits_by_query.items():
        if waits.count >= ctx.config.lock_wait_min_count:
            query = ctx.query(statement.fingerprint)
            yield _finding(ctx, statement, waits, ", ".join(query.applications) if query is not None else "")


def _finding(ctx: Context, statement: Statement, waits: LockWaits, applications: str) -> Finding:
    blocking = [{"normalized": sql, "application": app} for sql, app in waits.blocking]
    pattern, fix = _pattern(statement.normalized, [sql for sql, _ in waits.blocking if sql])
    impact = round(waits.acquired_ms, 3) or None
    evidence = {
        "waits": waits.count, "acquired": waits.acquired, "max_wait_ms": round(waits.max_wait_ms, 3),
        "total_wait_ms_at_least": round(waits.acquired_ms, 3),
        "blocking": blocking, "pattern": pattern, "source": "log (log_lock_waits)",
    }
    # A log that begins mid-wait shows its `acquired` line only: each line is a wait of its own.
    seen = max(waits.count, waits.acquired)
    return Finding(
        code=CODE, check=NAME, severity=ctx.severity(impact),
        title=f"Waited on locks {plural(seen, 'time')}, up to {waits.max_wait_ms:,.0f} ms, {_blockers(blocking)}",
        suggestion=f"{fix}\n{ALWAYS}" if fix else ALWAYS,
        fingerprint=statement.fingerprint, normalized=statement.normalized,
        tables=tables_of(statement.normalized), evidence=evidence, impact_ms=impact,
        application=applications or None)


def _blockers(blocking: list[dict]) -> str:
    named = [f"{b['normalized']} ({b['application'] or 'application not logged'})" for b in blocking if b["normalized"]]
    if named:
        return "behind " + "; ".join(named)
    return "behind sessions whose statements the log does not show" if blocking else "the blocker not logged"


def _pattern(waiting: str, blocking: list[str]) -> tuple[str, str | None]:
    """The shape of the wait and its own fix (None: the general advice only)."""
    if _ROW_LOCK.search(waiting) and not re.search(r"\b(SKIP\s+LOCKED|NOWAIT)\b", waiting, re.IGNORECASE):
        return "queue", ("Workers taking rows off a queue wait for each other's rows: skip the locked ones.\n"
                         f"{_ROW_LOCK.sub(lambda m: m.group(0) + ' SKIP LOCKED', waiting, count=1)};")
    if any(_DDL.match(sql) for sql in blocking):
        return "ddl", ("DDL holds a lock every query of its table queues behind: run it with SET lock_timeout = '1s' "
                       "and retry, at a quiet time; build indexes with CREATE INDEX CONCURRENTLY.")
    if waiting in blocking:
        return "hot_row", ("The same statement blocks itself on a few rows (a counter, a balance): commit right after "
                           "it, or write increments to a table of their own and sum them later.")
    written = set(written_tables(waiting))
    if written and any(written & set(written_tables(sql)) for sql in blocking):
        return "update_order", ("Different statements write the same rows: take them in one order in every "
                                "transaction (e.g. by key), so one waits briefly instead of both in turn.")
    return "long_transaction", None
