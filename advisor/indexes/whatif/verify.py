"""``--verify``: build the picks for real and measure the queries before and after (scratch databases only).

All of it in one transaction rolled back, that the backend gives without its own
what-if indexes (``IndexBackend.bare_transaction``): HypoPG, on a connection of its
own, where no hypothetical index exists; the scratch backend, in a savepoint of its
own transaction (another session would wait on the locks it holds) that first drops
the indexes built for costing. Every query is run ``runs`` times before and after
(the fastest counts, so the "after" is not flattered by caches the "before"
warmed); only reads get EXPLAIN ANALYZE, writes and generic plans only their costs
(times None). Statistics are not refreshed between: the new indexes are planned
with the table's statistics.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from advisor.db.session import Session
from advisor.indexes.model import IndexCandidate
from advisor.indexes.whatif.backend import IndexBackend, explain_in_savepoint
from advisor.indexes.whatif.errors import QueryNotCosted, WhatIfUnavailable
from advisor.indexes.whatif.queries import PreparedQuery
from advisor.indexes.whatif.scratch import build_index

__all__ = ["Measured", "verify"]

Measured = dict[str, Any]  # "before_ms", "after_ms", "cost_before", "cost_after", and "error" when it failed


def verify(backend: IndexBackend, queries: list[PreparedQuery | QueryNotCosted],
           candidates: Iterable[IndexCandidate], runs: int) -> dict[str, Measured]:
    """fingerprint -> what was measured, before and after building ``candidates`` (see the module doc)."""
    results: dict[str, Measured] = {
        q.fingerprint: {"before_ms": None, "after_ms": None, "cost_before": None, "cost_after": None}
        for q in queries}
    for q in queries:
        if isinstance(q, QueryNotCosted):
            results[q.fingerprint]["error"] = q.reason
    with backend.bare_transaction() as session:
        for phase in ("before", "after"):
            if phase == "after":
                for n, candidate in enumerate(candidates, 1):
                    build_index(session, candidate, f"advisor_verify_{n}", backend.table_oid, backend.timeout_ms)
            for q in queries:
                if isinstance(q, PreparedQuery):
                    _measure(session, q, phase, runs, results[q.fingerprint], backend.timeout_ms)
    return results


def _measure(session: Session, query: PreparedQuery, phase: str, runs: int, out: Measured, timeout_ms: int) -> None:
    mode = "analyze" if query.kind == "read" and query.mode != "generic" else query.mode
    best: dict[str, Any] | None = None
    session.run("SAVEPOINT advisor_measure")
    try:
        session.run("SET LOCAL transaction_read_only = on")  # the indexes are built; the queries only read
        for _ in range(runs if mode == "analyze" else 1):
            plan = explain_in_savepoint(session, query, mode, timeout_ms)
            if best is None or plan.get("Execution Time", 0) < best.get("Execution Time", 0):
                best = plan
    except psycopg.Error as err:
        if session.lost:
            raise WhatIfUnavailable(session.describe(err, timeout_ms), "check the server") from None
        error = f"{phase}: {session.describe(err, timeout_ms)}"
        out["error"] = f"{out['error']}; {error}" if "error" in out else error
        return
    finally:
        if not session.lost:
            session.run("ROLLBACK TO SAVEPOINT advisor_measure")
            session.run("RELEASE SAVEPOINT advisor_measure")
    if best is None:  # runs < 1: nothing measured
        return
    out[f"cost_{phase}"] = float(best["Plan"]["Total Cost"])
    if "Execution Time" in best:
        out[f"{phase}_ms"] = round(float(best["Execution Time"]), 3)
