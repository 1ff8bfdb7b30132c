"""The run history: each nightly run's query statistics and findings, to show trends and what changed.

A SQLite file by default (``sqlite:///path`` or a bare path), or a PostgreSQL
database (``postgresql://…``, run through psycopg 3). Tables are created when
missing. Only masked SQL is stored (``Query.normalized``), never a sample with
literals or parameters, and a run is filed under a
database *name* (see ``database_label``), never a DSN: nothing here can hold a
password.

    with History("sqlite:///advisor-history.db") as h:
        run_id = h.record(database_label(dsn), workload, findings)
        change = h.compare(database_label(dsn))
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    insert,
    select,
)
from sqlalchemy.engine import Engine

from advisor import __version__
from advisor.findings import Finding, Severity
from advisor.workload.events import LogEvents
from advisor.workload.model import Workload

metadata = MetaData()

runs_table = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("database", String(255), nullable=False),
    Column("started_at", String(40), nullable=False),  # UTC ISO 8601, fixed width: sorts as text
    Column("tool_version", String(40), nullable=False),
    Column("source", Text, nullable=False, default=""),
    Column("queries", Integer, nullable=False, default=0),
    Column("statements", BigInteger, nullable=False, default=0),
    Index("runs_database_started", "database", "started_at"),
)

query_stats_table = Table(
    "query_stats",
    metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("fingerprint", String(64), primary_key=True),
    Column("normalized", Text, nullable=False),
    Column("calls", BigInteger, nullable=False),
    Column("total_ms", Float, nullable=False),
    Column("p95_ms", Float, nullable=True),
    Index("query_stats_fingerprint", "fingerprint"),
)

findings_table = Table(
    "findings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("code", String(32), nullable=False),
    Column("fingerprint", String(64), nullable=True),
    Column("severity", String(16), nullable=False),
    Column("title", Text, nullable=False),
    Column("impact_ms", Float, nullable=True),
)

# The error kinds of the runs that read logs (issue #13): a row in event_runs says the run's errors were
# recorded (a run stored before these tables, or one that read no log, has none and is not compared).
event_runs_table = Table(
    "event_runs",
    metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("errors", BigInteger, nullable=False),
)

error_kinds_table = Table(
    "error_kinds",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("fingerprint", String(64), nullable=True),  # null: the SQLSTATE over all queries
    Column("normalized", Text, nullable=True),
    Column("sqlstate", String(16), nullable=False),
    Column("count", BigInteger, nullable=False),
)


# --- the data it returns ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    id: int
    database: str
    started_at: str
    tool_version: str
    source: str
    queries: int
    statements: int


@dataclass(frozen=True, slots=True)
class TrendPoint:
    started_at: str
    calls: int
    total_ms: float
    p95_ms: float | None

    def __iter__(self):  # unpacks as (started_at, calls, total_ms, p95_ms)
        return iter((self.started_at, self.calls, self.total_ms, self.p95_ms))


@dataclass(frozen=True, slots=True)
class StoredFinding:
    code: str
    fingerprint: str | None
    severity: Severity
    title: str
    impact_ms: float | None

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.code, self.fingerprint)


@dataclass(frozen=True, slots=True)
class RegressionRule:
    """When a query's rise between two runs is a regression and not noise. All of these must hold,
    for each metric on its own (p95 and total time):"""

    # The metric rose by more than this (--fail-on-regression sets it).
    threshold_pct: float = 20.0
    # Calls on both sides: a p95 of a handful of calls is one unlucky call.
    min_calls: int = 20
    # An absolute floor, so sub-millisecond statements (BEGIN at 0.034 → 0.043 ms) never qualify:
    # the p95 rose by at least this much ...
    min_p95_rise_ms: float = 1.0
    # ... the total (server time over the run's window) by at least this much.
    min_total_rise_ms: float = 100.0
    # A margin over the run-to-run spread of this query in history: the rise must exceed the largest
    # relative move of the metric between consecutive earlier runs times this factor (a query that
    # always jumps ±40 % is not flagged at +45 %).
    spread_factor: float = 1.25
    # Earlier runs whose moves make the spread.
    spread_runs: int = 10


@dataclass(frozen=True, slots=True)
class Regression:
    fingerprint: str
    normalized: str
    metrics: tuple[str, ...]  # which regressed: "p95_ms", "total_ms"
    calls_before: int
    calls_after: int
    total_ms_before: float
    total_ms_after: float
    p95_ms_before: float | None
    p95_ms_after: float | None
    spread_pct: dict[str, float] = field(default_factory=dict, hash=False)  # metric → largest earlier move

    @property
    def total_change_pct(self) -> float | None:
        return _pct(self.total_ms_before, self.total_ms_after)

    @property
    def p95_change_pct(self) -> float | None:
        return _pct(self.p95_ms_before, self.p95_ms_after)

    def change_pct(self, metric: str) -> float | None:
        return self.p95_change_pct if metric == "p95_ms" else self.total_change_pct


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """A SQLSTATE a query's statements failed with (``fingerprint`` None: the SQLSTATE over all of them)."""

    fingerprint: str | None
    normalized: str | None
    sqlstate: str
    count: int

    @property
    def key(self) -> tuple[str | None, str]:
        return (self.fingerprint, self.sqlstate)


@dataclass(frozen=True, slots=True)
class Comparison:
    """The last run against the one before it. ``before`` is None when there is only one run (or none)."""

    before: Run | None
    after: Run | None
    new_findings: tuple[StoredFinding, ...] = ()
    resolved_findings: tuple[StoredFinding, ...] = ()
    regressions: tuple[Regression, ...] = ()
    threshold_pct: float = 20.0
    new_error_kinds: tuple[ErrorKind, ...] = ()  # in the last run, not in the one before (both read logs)


def _pct(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before <= 0:
        return None
    return (after - before) / before * 100.0


# --- names and URLs -----------------------------------------------------------------


_KV_DBNAME = re.compile(r"\bdbname\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
_KV_HOST = re.compile(r"\bhost\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
_KV_PORT = re.compile(r"\bport\s*=\s*(\S+)")


def database_label(dsn: str) -> str:
    """What a run is filed under: ``host:port/dbname`` from a DSN, with no user and no password.

    A plain name (no ``://`` and no ``=``) is returned as it is.
    """
    if "://" in dsn:
        parts = urlsplit(dsn)
        host = parts.hostname or ""
        try:
            port: int | str | None = parts.port
        except ValueError:
            port = None
        dbname = unquote(parts.path.lstrip("/"))
        if not dbname:  # ?dbname=… in the query string
            m = re.search(r"(?:^|&)dbname=([^&]*)", parts.query)
            dbname = unquote(m.group(1)) if m else ""
    elif "=" in dsn:
        def kv(pattern: re.Pattern[str]) -> str:
            m = pattern.search(dsn)
            return re.sub(r"\\(.)", r"\1", m.group(1).strip("'")) if m else ""

        host, port, dbname = kv(_KV_HOST), kv(_KV_PORT) or None, kv(_KV_DBNAME)
    else:
        return dsn
    where = f"{host}:{port}" if host and port else host
    return f"{where}/{dbname}" if where else dbname or "postgres"


def engine_url(url: str) -> str:
    """``postgresql://`` (and ``postgres://``) through psycopg 3; a bare path is a SQLite file."""
    if re.match(r"postgres(?:ql)?://", url, re.IGNORECASE):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if "://" not in url and not re.search(r"\w\s*=", url):
        return "sqlite:///" + os.path.abspath(url)
    return url


def _make_engine(url: str) -> Engine:
    if "://" not in url and re.search(r"\w\s*=", url):  # libpq key=value DSN
        return create_engine("postgresql+psycopg://", connect_args={"conninfo": url})
    url = engine_url(url)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        folder = os.path.dirname(url[len("sqlite:///"):])
        if folder:
            os.makedirs(folder, exist_ok=True)
    return create_engine(url)


def _source_summary(workload: Workload) -> str:
    """Where the workload came from, without credentials: log paths, and 'pg_stat_statements'."""
    logs = [s for s in workload.sources if not s.startswith("pg_stat_statements")]
    parts = []
    if logs:
        parts.append(f"{len(logs)} log file{'s' if len(logs) != 1 else ''}: " + ", ".join(logs))
    if len(logs) != len(workload.sources):
        parts.append("pg_stat_statements")
    return "; ".join(parts)[:4000]


def _error_kinds(events: LogEvents) -> list[dict]:
    rows = [{"fingerprint": q.fingerprint, "normalized": q.normalized, "sqlstate": state, "count": e.count}
            for (q, state), e in events.errors_by_query.items()]
    return rows + [{"fingerprint": None, "normalized": None, "sqlstate": state, "count": n}
                   for state, n in events.errors_by_sqlstate.items()]


def _utc_iso(when: datetime | str | None) -> str:
    if when is None:
        when = datetime.now(UTC)
    elif isinstance(when, str):
        when = datetime.fromisoformat(when)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds")


# --- the store ------------------------------------------------------------------------


class History:
    def __init__(self, url: str, *, create: bool = True) -> None:
        self.engine = _make_engine(url)
        if create:
            metadata.create_all(self.engine)

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    # -- writing

    def record(
        self,
        database: str,
        workload: Workload,
        findings: Iterable[Finding],
        started_at: datetime | str | None = None,
        *,
        source: str | None = None,
    ) -> int:
        """Store one run; returns its id. ``database`` is a name; a DSN given by mistake is reduced to one."""
        database = database_label(database)
        queries: dict[str, dict] = {}
        for q in workload.queries:
            if q.fingerprint in queries:  # one row per fingerprint: fold any duplicate in
                row = queries[q.fingerprint]
                row["calls"] += q.calls
                row["total_ms"] += q.total_ms
                row["p95_ms"] = max(filter(None, (row["p95_ms"], q.p95_ms)), default=None)
                continue
            queries[q.fingerprint] = {"fingerprint": q.fingerprint, "normalized": q.normalized, "calls": q.calls,
                                      "total_ms": q.total_ms, "p95_ms": q.p95_ms}
        finding_rows = [{"code": f.code, "fingerprint": f.fingerprint, "severity": Severity(f.severity).name,
                         "title": f.title, "impact_ms": f.impact_ms} for f in findings]
        with self.engine.begin() as conn:
            run_id = conn.execute(
                insert(runs_table).values(
                    database=database,
                    started_at=_utc_iso(started_at),
                    tool_version=__version__,
                    source=source if source is not None else _source_summary(workload),
                    queries=len(queries),
                    statements=workload.statements,
                ).returning(runs_table.c.id)
            ).scalar_one()
            if queries:
                conn.execute(insert(query_stats_table), [dict(r, run_id=run_id) for r in queries.values()])
            if finding_rows:
                conn.execute(insert(findings_table), [dict(r, run_id=run_id) for r in finding_rows])
            if workload.events is not None:
                conn.execute(insert(event_runs_table).values(run_id=run_id, errors=workload.events.errors))
                kinds = _error_kinds(workload.events)
                if kinds:
                    conn.execute(insert(error_kinds_table), [dict(r, run_id=run_id) for r in kinds])
        return run_id

    def prune(self, database: str, keep: int) -> int:
        """Keep the newest ``keep`` runs of ``database``; returns how many were deleted."""
        database = database_label(database)
        with self.engine.begin() as conn:
            ids = conn.execute(
                select(runs_table.c.id).where(runs_table.c.database == database)
                .order_by(runs_table.c.started_at.desc(), runs_table.c.id.desc()).offset(max(keep, 0))
            ).scalars().all()
            # explicit deletes: SQLite enforces ON DELETE CASCADE only with a pragma
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                conn.execute(delete(findings_table).where(findings_table.c.run_id.in_(chunk)))
                conn.execute(delete(error_kinds_table).where(error_kinds_table.c.run_id.in_(chunk)))
                conn.execute(delete(event_runs_table).where(event_runs_table.c.run_id.in_(chunk)))
                conn.execute(delete(query_stats_table).where(query_stats_table.c.run_id.in_(chunk)))
                conn.execute(delete(runs_table).where(runs_table.c.id.in_(chunk)))
        return len(ids)

    # -- reading

    def runs(self, database: str, limit: int = 10) -> list[Run]:
        """The newest runs first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(runs_table).where(runs_table.c.database == database_label(database))
                .order_by(runs_table.c.started_at.desc(), runs_table.c.id.desc()).limit(limit)
            ).all()
        return [Run(r.id, r.database, r.started_at, r.tool_version, r.source, r.queries, r.statements) for r in rows]

    def trend(self, database: str, fingerprint: str, limit: int = 10) -> list[TrendPoint]:
        """The fingerprint's numbers in the last ``limit`` runs that saw it, oldest first."""
        r, q = runs_table.c, query_stats_table.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(r.started_at, q.calls, q.total_ms, q.p95_ms)
                .select_from(runs_table.join(query_stats_table, q.run_id == r.id))
                .where(r.database == database_label(database), q.fingerprint == fingerprint)
                .order_by(r.started_at.desc(), r.id.desc()).limit(limit)
            ).all()
        return [TrendPoint(row.started_at, row.calls, row.total_ms, row.p95_ms) for row in reversed(rows)]

    def findings(self, run_id: int) -> list[StoredFinding]:
        f = findings_table.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(findings_table).where(f.run_id == run_id).order_by(f.id)).all()
        return [StoredFinding(x.code, x.fingerprint, Severity[x.severity], x.title, x.impact_ms) for x in rows]

    def error_kinds(self, run_id: int) -> list[ErrorKind] | None:
        """The run's error kinds, most errors first; None for a run whose errors were not recorded."""
        k = error_kinds_table.c
        with self.engine.connect() as conn:
            if conn.execute(select(event_runs_table.c.run_id).where(event_runs_table.c.run_id == run_id)).first() is None:
                return None
            rows = conn.execute(select(k.fingerprint, k.normalized, k.sqlstate, k.count.label("n"))
                                .where(k.run_id == run_id).order_by(k.count.desc(), k.id)).all()
        return [ErrorKind(x.fingerprint, x.normalized, x.sqlstate, x.n) for x in rows]

    def query_stats(self, run_id: int) -> dict[str, tuple[str, int, float, float | None]]:
        """fingerprint → (normalized, calls, total_ms, p95_ms) for one run."""
        q = query_stats_table.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(query_stats_table).where(q.run_id == run_id)).all()
        return {x.fingerprint: (x.normalized, x.calls, x.total_ms, x.p95_ms) for x in rows}

    def compare(self, database: str, threshold_pct: float = 20.0, rule: RegressionRule | None = None) -> Comparison:
        """The last two runs: findings that appeared and went away, and queries that got slower
        (by ``rule``, see RegressionRule; ``threshold_pct`` is its threshold)."""
        rule = replace(rule or RegressionRule(), threshold_pct=threshold_pct)
        last = self.runs(database, limit=2)
        if len(last) < 2:
            return Comparison(None, last[0] if last else None, threshold_pct=threshold_pct)
        after, before = last
        old = {f.key: f for f in self.findings(before.id)}
        new = {f.key: f for f in self.findings(after.id)}
        stats_before, stats_after = self.query_stats(before.id), self.query_stats(after.id)
        regressions = []
        for fp, (normalized, calls, total, p95) in stats_after.items():
            if fp not in stats_before:
                continue
            _, calls0, total0, p950 = stats_before[fp]
            if min(calls0, calls) < rule.min_calls:
                continue
            pairs = {"p95_ms": (p950, p95, rule.min_p95_rise_ms), "total_ms": (total0, total, rule.min_total_rise_ms)}
            risen = {m: pct for m, (a, b, floor) in pairs.items()
                     if a is not None and b is not None and (pct := _pct(a, b)) is not None
                     and pct > rule.threshold_pct and b - a >= floor}
            spread = self._spread(database, fp, list(risen), rule) if risen else {}
            metrics = tuple(m for m, pct in risen.items() if pct > spread[m] * rule.spread_factor)
            if metrics:
                regressions.append(Regression(fp, normalized, metrics, calls0, calls, total0, total, p950, p95,
                                              {m: spread[m] for m in metrics}))
        regressions.sort(key=lambda g: -(g.total_ms_after - g.total_ms_before))
        return Comparison(
            before,
            after,
            new_findings=tuple(f for k, f in new.items() if k not in old),
            # A finding whose query did not run in this window is not resolved, only unseen (an incremental
            # log read may hold none of it): resolved means its query ran and the finding did not fire.
            resolved_findings=tuple(f for k, f in old.items()
                                    if k not in new and (f.fingerprint is None or f.fingerprint in stats_after)),
            regressions=tuple(regressions),
            threshold_pct=threshold_pct,
            new_error_kinds=self._new_error_kinds(before.id, after.id),
        )

    def _new_error_kinds(self, before: int, after: int) -> tuple[ErrorKind, ...]:
        """A (query, SQLSTATE) the last run saw and the one before did not; and a SQLSTATE new to the
        whole run that no new (query, SQLSTATE) already tells (its statements unknown, say)."""
        old, new = self.error_kinds(before), self.error_kinds(after)
        if old is None or new is None:
            return ()
        seen = {k.key for k in old}
        states = {k.sqlstate for k in old}
        fresh = [k for k in new if k.fingerprint is not None and k.key not in seen]
        told = {k.sqlstate for k in fresh}
        fresh += [k for k in new if k.fingerprint is None and k.sqlstate not in states and k.sqlstate not in told]
        return tuple(fresh)

    def _spread(self, database: str, fingerprint: str, metrics: list[str], rule: RegressionRule) -> dict[str, float]:
        """metric → the largest relative move (%, up or down) between consecutive runs before the last one."""
        points = self.trend(database, fingerprint, limit=rule.spread_runs + 1)[:-1]
        spread = {}
        for metric in metrics:
            values = [p.p95_ms if metric == "p95_ms" else p.total_ms for p in points]
            moves = [abs(m) for a, b in itertools.pairwise(values) if (m := _pct(a, b)) is not None]
            spread[metric] = max(moves, default=0.0)
        return spread


__all__ = ["Comparison", "ErrorKind", "History", "Regression", "RegressionRule", "Run", "StoredFinding", "TrendPoint", "database_label",
           "engine_url", "metadata"]
