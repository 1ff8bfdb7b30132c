"""What a check reads. A check never opens a connection: everything it needs is here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from advisor.checks.config import DEFAULT, Thresholds
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


@dataclass(frozen=True, slots=True)
class Context:
    workload: Workload
    catalog: Catalog | None = None  # None when no database was given
    explained: tuple[ExplainedQuery, ...] = ()
    config: Thresholds = DEFAULT
