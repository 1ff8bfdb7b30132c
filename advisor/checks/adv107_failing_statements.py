"""ADV107 failing_statements: statements the server refused or cancelled, by query and SQLSTATE.

Problem: a statement that fails did its work for nothing (a timeout runs until
it is cancelled), and the application retries, loses data or shows an error.
Each kind of failure has its own cause and its own fix.
Signal: ERROR records in the log tied to a query (``Workload.events``), at
least ``failing_min_count`` of one query with one SQLSTATE (from csvlog,
jsonlog or ``%e``; else from the message).
Impact: the failed statements' count, in the evidence; they carry no duration
in the log, so no time, and the severity is the one rule's without one (low).
Fix, by class: 57014 (statement timeout) → the query's plan: the plan findings
scan gives for it (ADV0NN, from auto_explain or ``--dsn``); 23505 (unique
violation) → ``INSERT … ON CONFLICT``; 40P01 (deadlock) → ADV106; 55P03 (lock
timeout) → ADV105; 40001 (serialization) → retry the transaction; 25P02 → roll
back at the first error; 42P01, 42703, 42883, 42601 (undefined table, column,
function; syntax) and other class 42 → a bug in the application, named with
the application that sent it; class 22 (data) → values checked before sending.
"""

from __future__ import annotations

from collections.abc import Iterable

from advisor.checks.context import Context
from advisor.findings import Finding
from advisor.words import plural
from advisor.workload.events import Errors, Statement
from advisor.workload.model import Query
from advisor.workload.tables import tables_of

CODE = "ADV107"
NAME = "failing_statements"

KINDS = {  # SQLSTATE → what it is
    "57014": "statement timeout", "23505": "unique violation", "40P01": "deadlock", "55P03": "lock timeout",
    "40001": "serialization failure", "25P02": "in a failed transaction", "42P01": "undefined table",
    "42703": "undefined column", "42883": "undefined function", "42601": "syntax error",
    "23503": "foreign key violation", "23502": "not-null violation",
}
APPLICATION_BUG = "42"  # syntax error or access rule violation: the statement can never succeed as written


def run(ctx: Context) -> Iterable[Finding]:
    events = ctx.workload.events
    if events is None:
        return
    explained = {eq.query.fingerprint for eq in ctx.explained}
    for (statement, _), err in events.errors_by_query.items():
        if err.count >= ctx.config.failing_min_count:
            yield _finding(ctx, statement, err, ctx.query(statement.fingerprint), statement.fingerprint in explained)


def _finding(ctx: Context, statement: Statement, err: Errors, query: Query | None, explained: bool) -> Finding:
    named = {**err.applications, **dict.fromkeys(query.applications if query is not None else ())}
    applications = ", ".join(named) or None  # the failures' own, then those of its logged runs
    kind = KINDS.get(err.sqlstate) or ("application bug" if err.sqlstate.startswith(APPLICATION_BUG) else err.sqlstate)
    evidence = {"failed": err.count, "sqlstate": err.sqlstate, "kind": kind, "message": err.message,
                "succeeded": query.calls if query is not None else 0, "source": "log (ERROR records)"}
    return Finding(
        code=CODE, check=NAME, severity=ctx.severity(None),
        title=f"Failed {plural(err.count, 'time')} with {err.sqlstate} ({kind}): {err.message}",
        suggestion=_fix(statement, err.sqlstate, applications, explained),
        fingerprint=statement.fingerprint, normalized=statement.normalized,
        tables=tables_of(statement.normalized), evidence=evidence, application=applications)


def _fix(statement: Statement, state: str, applications: str | None, explained: bool) -> str:
    sql = statement.normalized.strip().rstrip(";")
    if state == "57014":
        where = ("in the plan findings (ADV0NN) this scan gives for it" if explained
                 else "in its plan: scan --dsn explains it (a cancelled statement leaves no auto_explain plan)")
        return (f"It ran into statement_timeout (or was cancelled): find why it is slow {where}; "
                "raising the timeout only hides it.")
    if state == "23505":
        return ("Let the server decide instead of failing on the duplicate:\n"
                f"{sql} ON CONFLICT DO NOTHING;\n"
                "-- or ON CONFLICT (the key's columns) DO UPDATE SET … = EXCLUDED.… to keep the newest row.")
    if state == "40P01":
        return "A deadlock victim: see the deadlock finding (ADV106) for the cycle and the order that avoids it."
    if state == "55P03":
        return "It gave up waiting for a lock (lock_timeout): see the lock-wait finding (ADV105) for who held it."
    if state == "40001":
        return "A serialization failure: retry the whole transaction, as SERIALIZABLE and REPEATABLE READ require."
    if state == "25P02":
        return ("An earlier statement of its transaction failed and the application went on: "
                "ROLLBACK (or ROLLBACK TO SAVEPOINT) at the first error.")
    if state.startswith(APPLICATION_BUG):
        sender = (f"the application {applications}" if applications
                  else "the application that sends it (the log names none: add %a to log_line_prefix)")
        return (f"A bug in {sender}: the statement can never succeed as written ({KINDS.get(state, state)}); "
                "fix the query or the migration it expects.")
    if state.startswith("22"):
        return "The application sends values the column cannot hold: check them before sending."
    return f"See the message for SQLSTATE {state}: it fails the same way every time it is sent."
