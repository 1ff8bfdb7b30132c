"""From a workload to index advice: which queries are costed, how they weigh, and --verify."""

from __future__ import annotations

from dataclasses import replace

from advisor.db.privileges import privilege_notes, read_privileges
from advisor.db.session import Session, session_for
from advisor.errors import AdvisorError
from advisor.indexes.model import AdvisedQuery
from advisor.indexes.selection import Advice, advise
from advisor.indexes.whatif import WhatIf
from advisor.workload.model import PLANNED, Workload
from advisor.workload.sessions import timestamp_ms


def advised_queries(workload: Workload, *, by_time: bool = False, limit: int = 200) -> list[AdvisedQuery]:
    """The top queries by total time, each weighted by its calls (or its total time), with what was measured
    (mean, rows per call): a ``$n`` without a logged value is costed with values that match it."""
    chosen = [q for q in workload.queries if q.sample and q.statement_type in PLANNED][:limit]
    return [
        AdvisedQuery(q.fingerprint, q.sample, q.sample_parameters, q.total_ms if by_time else float(q.calls),
                     q.normalized, q.mean_ms, q.rows / q.calls if q.rows is not None and q.calls else None)
        for q in chosen
    ]


def workload_seconds(workload: Workload) -> float | None:
    """The time from the first to the last statement logged: what the calls were counted over.
    None without timestamps, and when pg_stat_statements gave calls, since it counts them over
    its own period."""
    if any("pg_stat_statements" in q.sources for q in workload.queries):
        return None
    stamps = [ms for q in workload.queries for ms in (timestamp_ms(q.first_seen), timestamp_ms(q.last_seen)) if ms is not None]
    return (max(stamps) - min(stamps)) / 1000 if len(stamps) > 1 and max(stamps) > min(stamps) else None


def advise_workload(target: str | Session, queries: list[AdvisedQuery], *, scratch: bool = False, verify: bool = False,
                    workload: Workload | None = None, **limits) -> Advice:
    """HypoPG when the database has it; real indexes rolled back on a scratch database otherwise; --verify measures.

    ``workload``: where the queries came from; what it could not read (pg_stat_statements rows this role
    may not see, …) is said in the notes, or in the error when nothing is left to advise on.
    ``target``: a DSN, or the command's open Session, which does all but the parallel costing.
    """
    with session_for(target) as session:
        advice = _advise(session, queries, workload, scratch, limits)
        if not verify or not advice.recommendations:
            return advice
        with WhatIf(session, backend="real", scratch=True) as whatif:
            measured = whatif.verify(queries, [r.candidate for r in advice.recommendations])
    recs = tuple(
        replace(r, validated="measured (--verify)", measured={q.fingerprint: measured[q.fingerprint] for q in r.queries if q.fingerprint in measured})
        for r in advice.recommendations
    )
    return replace(advice, recommendations=recs, validation="measured (--verify)")


def _advise(session: Session, queries: list[AdvisedQuery], workload: Workload | None, scratch: bool,
            limits: dict) -> Advice:
    hidden = _source_notes(session, workload)
    if not queries:
        cause = "the workload has no query to advise on" + (f": {'; '.join(hidden)}" if hidden else "")
        raise AdvisorError(cause, "run the GRANT above, or connect as a role that has it" if hidden else
                           "give a log, --pg-stat-statements or --sql with SELECT/UPDATE/DELETE statements")
    # Without HypoPG, a scratch database gets real indexes in a transaction that is rolled back.
    backend = "real" if scratch and session.extension("hypopg").schema is None else "hypopg"
    advice = advise(session, queries, backend=backend, scratch=scratch, **limits)
    return replace(advice, notes=(*hidden, *advice.notes)) if hidden else advice


def _source_notes(session: Session, workload: Workload | None) -> list[str]:
    """The workload's notes (hidden pg_stat_statements rows, …) and what this role cannot read, with the GRANT."""
    if workload is None:
        return []
    return list(dict.fromkeys([*workload.notes, *privilege_notes(read_privileges(session.conn), workload)]))
