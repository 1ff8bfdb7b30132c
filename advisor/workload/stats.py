"""Streaming, mergeable aggregation per fingerprint, in bounded memory.

Logs and pg_stat_statements describe the same executions, so they are not
added up: where the server's counters exist they give calls, total, min, max
and rows (they see every execution, a log only those above its threshold),
and the log gives what the server does not keep (percentiles, first and last
seen, the sample with its parameters).

Merging the aggregates of parts gives exactly the aggregate of the whole:
durations are summed as integer microseconds, quantiles are exact below
``EXACT_LIMIT`` values and a DDSketch above (its bins are the same whichever
order values arrive in), and ties keep the earlier part's sample.
"""

from __future__ import annotations

from ddsketch import LogCollapsingLowestDenseDDSketch

from advisor.workload.fingerprint import Fingerprint, fingerprint
from advisor.workload.model import Execution, Query, StatementRow

EXACT_LIMIT = 512  # durations kept exactly per query before switching to the sketch
RELATIVE_ACCURACY = 0.01  # of the sketch's quantiles
SKETCH_BINS = 2048  # caps the sketch's memory; covers 1 µs to hours at 1 %
PENDING_LIMIT = 256  # distinct durations waiting for the sketch (see Quantiles)
NAMES_KEPT = 16  # distinct users, databases, applications, query ids kept per query


class Quantiles:
    """Exact quantiles for small counts, a DDSketch (1 % relative error) beyond.

    Beyond ``EXACT_LIMIT`` values, durations wait in a count per distinct value before the
    sketch takes them: a log writes durations to the microsecond, so values repeat, and one
    weighted add per value costs less than one add per execution. The sketch's bins are the
    same either way."""

    __slots__ = ("values", "sketch", "pending")

    def __init__(self) -> None:
        self.values: list[float] | None = []  # exact, up to EXACT_LIMIT; then None, and the sketch holds them
        self.sketch: LogCollapsingLowestDenseDDSketch | None = None
        self.pending: dict[float, int] = {}  # value → executions, not yet in the sketch

    def add(self, value: float) -> None:
        if self.values is not None:
            self.values.append(value)
            if len(self.values) > EXACT_LIMIT:
                self._sketched()
        else:
            pending = self.pending
            pending[value] = pending.get(value, 0) + 1
            if len(pending) >= PENDING_LIMIT:
                self._sketched()

    def merge(self, other: Quantiles) -> None:
        if other.values is not None:
            for value in other.values:
                self.add(value)
            return
        self._sketched().merge(other._sketched())

    def quantile(self, q: float) -> float | None:
        """The value at rank floor(q·(n−1)), the rank rule DDSketch uses too."""
        if self.values is not None:
            if not self.values:
                return None
            ordered = sorted(self.values)
            return ordered[int(q * (len(ordered) - 1))]
        return self._sketched().get_quantile_value(q)

    def _sketched(self) -> LogCollapsingLowestDenseDDSketch:
        """The sketch with every value in it; made from the exact values on first use, which it then
        replaces (values None)."""
        if self.sketch is None:
            self.sketch = LogCollapsingLowestDenseDDSketch(RELATIVE_ACCURACY, bin_limit=SKETCH_BINS)
            for value in self.values or ():
                self.sketch.add(value)
            self.values = None
        if self.pending:
            add = self.sketch.add
            for value, count in self.pending.items():
                add(value, count)
            self.pending.clear()
        return self.sketch


class QueryStats:
    """The running aggregate of one fingerprint."""

    __slots__ = (
        "fp", "calls", "timed_calls", "total_us", "min_ms", "max_ms", "quantiles", "rows",
        "first_seen", "last_seen", "users", "databases", "applications", "query_ids",
        "sample", "sample_parameters", "sample_ms", "sources", "server", "plan", "plan_ms", "plan_at",
    )  # fmt: skip

    def __init__(self, fp: Fingerprint) -> None:
        self.fp = fp
        self.calls = self.timed_calls = self.total_us = 0
        self.min_ms: float | None = None
        self.max_ms: float | None = None
        self.quantiles = Quantiles()
        self.rows: int | None = None
        self.first_seen: str | None = None
        self.last_seen: str | None = None
        self.users: dict[str, None] = {}  # dicts as ordered sets
        self.databases: dict[str, None] = {}
        self.applications: dict[str, None] = {}
        self.query_ids: dict[int, None] = {}
        self.sample = ""
        self.sample_parameters: str | None = None
        self.sample_ms = -1.0
        self.sources: dict[str, None] = {}
        self.server: ServerTotals | None = None
        # One plan per fingerprint, the slowest execution's: the one whose plan is worth checking.
        self.plan: str | None = None
        self.plan_ms = -1.0
        self.plan_at: str | None = None

    def add(self, e: Execution, source: str = "log") -> None:
        # This runs per execution: comparisons written out, no helper calls in the common case.
        self.calls += 1
        ms = e.duration_ms
        if ms is not None:
            self.timed_calls += 1
            self.total_us += round(ms * 1000)
            if self.min_ms is None or ms < self.min_ms:
                self.min_ms = ms
            if self.max_ms is None or ms > self.max_ms:
                self.max_ms = ms
            self.quantiles.add(ms)
        at = e.timestamp
        if at is not None:
            if self.first_seen is None or at < self.first_seen:
                self.first_seen = at
            if self.last_seen is None or at > self.last_seen:
                self.last_seen = at
        if e.user not in self.users:
            _keep(self.users, e.user)
        if e.database not in self.databases:
            _keep(self.databases, e.database)
        if e.application not in self.applications:
            _keep(self.applications, e.application)
        if e.query_id not in self.query_ids:
            _keep(self.query_ids, e.query_id)
        if source not in self.sources:
            _keep(self.sources, source)
        # The slowest execution is the one worth explaining later.
        duration = -1.0 if ms is None else ms
        if duration > self.sample_ms or not self.sample:
            self.sample, self.sample_parameters, self.sample_ms = e.sql, e.parameters, duration
        if e.plan is not None and (duration > self.plan_ms or self.plan is None):
            self.plan, self.plan_ms, self.plan_at = e.plan, duration, e.timestamp

    def merge(self, other: QueryStats) -> None:
        self.calls += other.calls
        self.timed_calls += other.timed_calls
        self.total_us += other.total_us
        self.min_ms = _pick(min, self.min_ms, other.min_ms)
        self.max_ms = _pick(max, self.max_ms, other.max_ms)
        self.quantiles.merge(other.quantiles)
        self.rows = _pick(int.__add__, self.rows, other.rows)
        self.first_seen = _pick(min, self.first_seen, other.first_seen)
        self.last_seen = _pick(max, self.last_seen, other.last_seen)
        for mine, theirs in (
            (self.users, other.users), (self.databases, other.databases),
            (self.applications, other.applications), (self.query_ids, other.query_ids),
            (self.sources, other.sources),
        ):  # fmt: skip
            for name in theirs:
                _keep(mine, name)
        if other.sample_ms > self.sample_ms or not self.sample:
            self.sample, self.sample_parameters, self.sample_ms = other.sample, other.sample_parameters, other.sample_ms
        if other.plan is not None and (other.plan_ms > self.plan_ms or self.plan is None):
            self.plan, self.plan_ms, self.plan_at = other.plan, other.plan_ms, other.plan_at
        if other.server is not None:
            if self.server is None:
                self.server = ServerTotals()
            self.server.merge(other.server)

    def add_server_row(self, row: StatementRow) -> None:
        if self.server is None:
            self.server = ServerTotals()
        self.server.add(row)
        _keep(self.users, row.user)
        _keep(self.databases, row.database)
        _keep(self.query_ids, row.queryid)
        _keep(self.sources, "pg_stat_statements")
        if not self.sample:
            self.sample = row.query

    def query(self) -> Query:
        totals = self.server or self
        total_ms = totals.total_us / 1000
        q = self.quantiles.quantile
        return Query(
            fingerprint=self.fp.id,
            normalized=self.fp.normalized,
            parsed=self.fp.parsed,
            statement_type=self.fp.statement_type,
            calls=totals.calls,
            total_ms=total_ms,
            mean_ms=total_ms / totals.timed_calls if totals.timed_calls else None,
            min_ms=totals.min_ms,
            max_ms=totals.max_ms,
            p50_ms=q(0.50),
            p95_ms=q(0.95),
            p99_ms=q(0.99),
            timed_calls=totals.timed_calls,
            rows=totals.rows,
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            users=tuple(self.users),
            databases=tuple(self.databases),
            applications=tuple(self.applications),
            query_ids=tuple(self.query_ids),
            sample=self.sample,
            sample_parameters=self.sample_parameters,
            sources=tuple(self.sources),
            plan=self.plan,
            plan_at=self.plan_at,
        )


class ServerTotals:
    """pg_stat_statements' counters for one fingerprint, summed over its rows (users, databases)."""

    __slots__ = ("calls", "timed_calls", "total_us", "min_ms", "max_ms", "rows")

    def __init__(self) -> None:
        self.calls = self.timed_calls = self.total_us = self.rows = 0
        self.min_ms: float | None = None
        self.max_ms: float | None = None

    def add(self, row: StatementRow) -> None:
        self.calls += row.calls
        self.timed_calls += row.calls
        self.total_us += round(row.total_ms * 1000)
        self.rows += row.rows
        self.min_ms = _pick(min, self.min_ms, row.min_ms)
        self.max_ms = _pick(max, self.max_ms, row.max_ms)

    def merge(self, other: ServerTotals) -> None:
        self.calls += other.calls
        self.timed_calls += other.timed_calls
        self.total_us += other.total_us
        self.rows += other.rows
        self.min_ms = _pick(min, self.min_ms, other.min_ms)
        self.max_ms = _pick(max, self.max_ms, other.max_ms)


class WorkloadStats:
    """Every fingerprint's QueryStats; fed executions, merged with other parts."""

    def __init__(self) -> None:
        self.queries: dict[str, QueryStats] = {}
        self.statements = 0

    def add(self, e: Execution, source: str = "log") -> Fingerprint:
        fp = fingerprint(e.sql)
        self._stats(fp).add(e, source)
        self.statements += 1
        return fp

    def add_server_rows(self, rows: list[StatementRow]) -> None:
        for row in rows:
            self._stats(fingerprint(row.query)).add_server_row(row)

    def _stats(self, fp: Fingerprint) -> QueryStats:
        stats = self.queries.get(fp.id)
        if stats is None:
            stats = self.queries[fp.id] = QueryStats(fp)
        return stats

    def merge(self, other: WorkloadStats) -> None:
        self.statements += other.statements
        for key, theirs in other.queries.items():
            mine = self.queries.get(key)
            if mine is None:
                self.queries[key] = theirs
            else:
                mine.merge(theirs)

    def queries_by_total_time(self) -> tuple[Query, ...]:
        queries = [s.query() for s in self.queries.values()]
        queries.sort(key=lambda q: (-q.total_ms, -q.calls, q.fingerprint))
        return tuple(queries)


def _keep(names: dict, name) -> None:
    if name is not None and name not in names and len(names) < NAMES_KEPT:
        names[name] = None


def _pick(fn, a, b):
    if a is None:
        return b
    if b is None:
        return a
    return fn(a, b)
