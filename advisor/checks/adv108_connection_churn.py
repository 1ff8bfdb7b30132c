"""ADV108 connection_churn: an application opens a connection per request.

Problem: every new session forks a backend, authenticates and warms its
caches before it runs a statement; an application that connects per request
pays that on every request, and under load the server spends its time
starting processes instead of answering.
Signal: an application's sessions in the log (``log_connections``,
``log_disconnections``; ``Workload.events``): at least ``churn_min_sessions``
of them, at least ``churn_min_per_s`` a second over the log's span, with a
median session time of at most ``churn_max_median_ms``. An application holding
a few long sessions (a pool) fails the last two and is not flagged.
Impact: the time lost to connecting, sessions × the connect cost: measured
when scan has a database (``Context.connect_ms``: the median of a few new
connections to it, opened only when this check would fire), else the assumed
``Thresholds.connect_ms`` (a few ms on loopback; more across a network or with
TLS); the evidence says which, as the log does not time the connect.
Severity: from that impact (``Thresholds.severity``).
Fix: a pool sized from the concurrency the log shows (Little's law: sessions a
second × session time; the median for ``min_size``, the p95 ×
``pool_headroom`` for ``max_size``): psycopg_pool ``ConnectionPool``,
SQLAlchemy ``QueuePool``, or PgBouncer in front of the server; and ``advisor
bench pool --local-pgbouncer`` to measure what it buys on this server.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from advisor.checks.context import Context
from advisor.findings import Finding
from advisor.thresholds import Thresholds
from advisor.words import plural
from advisor.workload.events import Sessions
from advisor.workload.model import Workload

CODE = "ADV108"
NAME = "connection_churn"


def run(ctx: Context) -> Iterable[Finding]:
    for application, s, per_s, median in churning(ctx.workload, ctx.config):
        yield _finding(ctx, application, s, per_s, median)


def churning(workload: Workload, config: Thresholds) -> list[tuple[str, Sessions, float | None, float]]:
    """The applications that open a connection per request: name, sessions, sessions a second, median ms.

    Public so scan measures the connect cost only when this check will fire.
    """
    events = workload.events
    if events is None or not events.sessions:
        return []
    span = events.span_seconds()
    found = []
    for application, s in events.applications().items():
        median = s.times.quantile(0.5)
        per_s = s.count / span if span else None
        if (s.count >= config.churn_min_sessions and median is not None and median <= config.churn_max_median_ms
                and (per_s is None or per_s >= config.churn_min_per_s)):
            found.append((application, s, per_s, median))
    return found


def _finding(ctx: Context, application: str, s: Sessions, per_s: float | None, median_ms: float) -> Finding:
    config = ctx.config
    p95_ms = s.times.quantile(0.95) or median_ms
    measured = ctx.connect_ms is not None
    connect_ms = ctx.connect_ms if ctx.connect_ms is not None else config.connect_ms
    lost = round(s.count * connect_ms, 3)
    low, high = _pool_sizes(per_s, median_ms, p95_ms, config.pool_headroom)
    evidence = {
        "sessions": s.count, "per_second": round(per_s, 3) if per_s is not None else None,
        "median_session_ms": round(median_ms, 3), "p95_session_ms": round(p95_ms, 3),
        "concurrency_median": round(per_s * median_ms / 1000, 3) if per_s is not None else None,
        "connect_ms": connect_ms,
        "connect_ms_is": ("measured (the median of new connections to the database scanned)" if measured
                          else "assumed (the log does not time it; bench pool measures it)"),
        "time_lost_to_connecting_ms": lost, "pool_min_size": low, "pool_max_size": high,
    }
    rate = f", {per_s:,.1f} a second" if per_s is not None else ""
    return Finding(
        code=CODE, check=NAME, severity=ctx.severity(lost),
        title=(f"{application} opened {plural(s.count, 'session')}{rate}, a median {median_ms:,.1f} ms each: "
               "a connection per request"),
        suggestion=_suggestion(low, high), evidence=evidence, impact_ms=lost, application=application)


def _pool_sizes(per_s: float | None, median_ms: float, p95_ms: float, headroom: float) -> tuple[int, int]:
    """min_size and max_size from the sessions in flight (Little's law); without a rate, a small pool."""
    if per_s is None:
        return 1, 4
    low = max(1, math.ceil(per_s * median_ms / 1000))
    return low, max(low + 1, math.ceil(per_s * p95_ms / 1000 * headroom))


def _suggestion(low: int, high: int) -> str:
    return (
        "Open connections once and reuse them, with a pool sized from the concurrency the log shows:\n"
        f"  psycopg_pool: ConnectionPool(conninfo, min_size={low}, max_size={high})\n"
        f"  SQLAlchemy:   create_engine(url, poolclass=QueuePool, pool_size={low}, max_overflow={high - low}, "
        "pool_pre_ping=True)\n"
        f"  PgBouncer:    pool_mode = transaction, default_pool_size = {high} (for clients that cannot keep a pool)\n"
        "Measure what it buys on this server: advisor bench pool --dsn … --local-pgbouncer"
    )
