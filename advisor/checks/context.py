"""What a check reads. A check never opens a connection: everything it needs is here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from advisor.findings import Severity
from advisor.thresholds import DEFAULT, Thresholds
from advisor.workload.model import Query, Workload

if TYPE_CHECKING:
    from advisor.db.catalog import Catalog
    from advisor.plans import Plan


@dataclass(frozen=True, slots=True)
class ExplainedQuery:
    """One workload query with the plan the server gave for its sample."""

    query: Query
    plan: Plan
    analyzed: bool  # EXPLAIN ANALYZE (actual rows and times) or plain EXPLAIN (estimates only)
    note: str | None = None  # why it was not analyzed (a write, no logged parameters)
    logged_at: str | None = None  # the plan is auto_explain's, from the log: when its execution was logged


@dataclass(frozen=True, slots=True)
class Context:
    workload: Workload
    catalog: Catalog | None = None  # None when no database was given
    explained: tuple[ExplainedQuery, ...] = ()
    config: Thresholds = DEFAULT
    connect_ms: float | None = None  # median time to open a connection to the target, when scan measured it
    workload_ms: float = field(init=False)  # the workload's total time: what a finding's impact is a share of
    _by_fingerprint: dict[str, Query] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "workload_ms", sum(q.total_ms or 0.0 for q in self.workload.queries))
        object.__setattr__(self, "_by_fingerprint", {q.fingerprint: q for q in self.workload.queries})

    def query(self, fingerprint: str) -> Query | None:
        """The workload's query of this fingerprint (the server events name theirs by fingerprint)."""
        return self._by_fingerprint.get(fingerprint)

    def severity(self, impact_ms: float | None) -> Severity:
        """Every check's severity: the finding's impact against this workload (Thresholds.severity)."""
        return self.config.severity(impact_ms, self.workload_ms)
