"""`advisor suggest-indexes` (and the nightly job's index advice): a workload to index advice.

The top queries by total time are costed, each weighed by its calls or its total time; with
calls, the time the log spans lets table counters stand in for writes the log did not hold.
"""

from __future__ import annotations

from advisor.db.session import Session
from advisor.indexes.advice import advise_workload, advised_queries, workload_seconds
from advisor.indexes.selection import Advice
from advisor.progress import Step
from advisor.workload.model import Workload


def suggest(session: Session, workload: Workload, *, by_time: bool = False, max_queries: int = 200,
            source_notes: bool = True, step: Step = lambda _: None, **limits) -> Advice:
    """``limits``: what ``advise_workload`` takes (budget, width, scratch, verify, sessions, …).
    ``source_notes``: the advice repeats what hid part of the workload (the nightly report shows it once, itself)."""
    queries = advised_queries(workload, by_time=by_time, limit=max_queries)
    span = None if by_time else workload_seconds(workload)  # weights in ms are not calls over a span
    return advise_workload(session, queries, workload=workload if source_notes else None, workload_seconds=span,
                           step=step, **limits)
