"""The timed load both benchmarks drive (`advisor bench pool`, `advisor bench replicas`), and what surrounds it.

A *phase* is ``concurrency`` threads sending one request after another until
its duration ends or its request budget is spent; every successful request's
latency is kept, so the quantiles are exact. Failures are counted (timeouts
apart), never raised. Around it: the figures an arm reports from a phase, the
temporary ``advisor_bench_<random>`` schema a workload lives in, and the
connection-string and host helpers both commands use.

Our traffic is recognisable: every benchmark session is named ``advisor_bench…``
and runs in autocommit with ``TaggedCursor``, so every statement it sends, also
those a driver or ORM sends itself (SQLAlchemy's dialect start-up, psycopg_pool's
health check), starts with ``TAG``. Autocommit matters: psycopg opens a transaction
with a bare ``BEGIN`` that no cursor sees, and pg_stat_statements would count it
with the application's own ``BEGIN``.
"""

from __future__ import annotations

import os
import random
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import errors as pg_errors
from psycopg import sql as pg_sql

from advisor.db.connect import TAG, connect, scrub_secrets
from advisor.errors import AdvisorError
from advisor.progress import Step

__all__ = [
    "APPLICATION_NAME", "ERROR_BACKOFF_S", "MAX_REQUESTS_PER_ARM", "Phase", "Step", "TaggedCursor", "add_options",
    "bench_connect", "bench_session", "conninfo_params", "create_schema", "drop_schema", "first_line", "host_cores",
    "latency_quantiles", "new_schema_name", "rounded", "run_phase", "scrubber", "tagged",
]

APPLICATION_NAME = "advisor_bench"  # every benchmark session; readers of workloads leave "advisor…" out
MAX_REQUESTS_PER_ARM = 1_000_000  # memory bound for the latency list (~40 MB at worst)
ERROR_BACKOFF_S = 0.005  # after a failed request: do not spin on a refusing server

A = TypeVar("A")


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0]


# --- running a phase ------------------------------------------------------------------------


@dataclass(slots=True)
class Phase:
    latencies: list[float]  # seconds, one per successful request
    errors: int
    timeouts: int
    elapsed_s: float
    first_error: str | None
    stuck: int  # workers that did not end in time

    def figures(self) -> dict:
        """An arm's requests, elapsed_s, ops_per_s, p50_ms, p95_ms, p99_ms and max_ms for this phase."""
        n = len(self.latencies)
        p50, p95, p99, mx = latency_quantiles(self.latencies)
        return {"requests": n, "elapsed_s": round(self.elapsed_s, 4),
                "ops_per_s": round(n / self.elapsed_s, 1) if self.elapsed_s > 0 else 0.0,
                "p50_ms": rounded(p50), "p95_ms": rounded(p95), "p99_ms": rounded(p99), "max_ms": rounded(mx)}


def _is_timeout(err: BaseException) -> bool:
    err = getattr(err, "orig", None) or err  # SQLAlchemy wraps the driver's exception
    if isinstance(err, pg_errors.QueryCanceled):
        return True
    name = type(err).__name__
    if name in ("PoolTimeout", "TimeoutError"):  # psycopg_pool, sqlalchemy.exc
        return True
    return isinstance(err, psycopg.OperationalError) and "timeout expired" in str(err)


def run_phase(request: Callable[[A], object], concurrency: int, duration_s: float, requests: int | None,
              args: Callable[[random.Random], A], join_slack_s: float) -> Phase:
    """``concurrency`` threads call ``request(args(rng))`` until ``duration_s`` passes or ``requests`` are done.

    ``args`` runs outside the timed part; each thread has its own seeded ``rng``. The
    window starts when every thread is ready and ends when the last one has stopped, or
    ``join_slack_s`` after the duration for a thread stuck in a request (counted in ``stuck``).
    """
    total = requests if requests is not None else MAX_REQUESTS_PER_ARM
    quotas = [total // concurrency + (1 if i < total % concurrency else 0) for i in range(concurrency)]
    start: list[float] = []
    barrier = threading.Barrier(concurrency + 1, action=lambda: start.append(time.perf_counter()))
    per_worker: list[list[float]] = [[] for _ in range(concurrency)]
    counts = [[0, 0] for _ in range(concurrency)]  # errors, timeouts
    first_error: list[str] = []

    def worker(i: int) -> None:
        rng = random.Random(i * 7919 + 17)
        lat, count = per_worker[i], counts[i]
        try:
            barrier.wait(timeout=60)
        except threading.BrokenBarrierError:
            return
        deadline = start[0] + duration_s
        done = 0
        while done < quotas[i] and time.perf_counter() < deadline:
            done += 1
            a = args(rng)
            t0 = time.perf_counter()
            try:
                request(a)
            except Exception as err:  # counted, never raised: one failure must not end the arm
                count[1 if _is_timeout(err) else 0] += 1
                if not first_error:
                    first_error.append(f"{type(err).__name__}: {first_line(err)}")
                time.sleep(ERROR_BACKOFF_S)
                continue
            lat.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True, name=f"advisor-bench-{i}")
               for i in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait(timeout=60)
    end_by = start[0] + duration_s + join_slack_s
    for t in threads:
        t.join(timeout=max(0.0, end_by - time.perf_counter()))
    elapsed = time.perf_counter() - start[0]
    stuck = sum(t.is_alive() for t in threads)
    latencies = [x for lst in per_worker for x in lst[:]]
    return Phase(latencies, sum(c[0] for c in counts), sum(c[1] for c in counts), elapsed,
                 first_error[0] if first_error else None, stuck)


# --- statistics ---------------------------------------------------------------------------


def latency_quantiles(values: Sequence[float]) -> tuple[float | None, float | None, float | None, float | None]:
    """p50, p95, p99, max in ms of ``values`` in seconds: exact, from every recorded value."""
    if not values:
        return None, None, None, None
    ms = sorted(v * 1000.0 for v in values)
    if len(ms) == 1:
        return ms[0], ms[0], ms[0], ms[0]
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return q[49], q[94], q[98], ms[-1]


def rounded(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


# --- our sessions: named and tagged ------------------------------------------------------------


def tagged(query):
    """``query`` (str, bytes or a psycopg.sql Composable already rendered to str) led by ``TAG``, once."""
    if isinstance(query, bytes):
        return query if query.lstrip().startswith(TAG.strip().encode()) else TAG.encode() + query
    return query if query.lstrip().startswith(TAG.strip()) else TAG + query


class TaggedCursor(psycopg.Cursor):
    """A cursor that leads every statement with ``TAG``, whoever wrote it (see the module docstring)."""

    def execute(self, query, params=None, **kwargs):
        if isinstance(query, pg_sql.Composable):
            query = query.as_string(self)
        return super().execute(tagged(query), params, **kwargs)

    def executemany(self, query, params_seq, **kwargs):
        if isinstance(query, pg_sql.Composable):
            query = query.as_string(self)
        return super().executemany(tagged(query), params_seq, **kwargs)


def bench_connect(conninfo: str, **kwargs) -> psycopg.Connection:
    """A benchmark connection: autocommit, every statement tagged (``conninfo`` names it ``advisor_bench…``)."""
    return psycopg.connect(conninfo, autocommit=True, cursor_factory=TaggedCursor, **kwargs)


def bench_session(dsn: str, statement_timeout_ms: int = 60_000, lock_timeout_ms: int = 1_000) -> psycopg.Connection:
    """A setup/teardown session: the safe session of ``advisor.db.connect``, named ``advisor_bench``, in autocommit
    with tagged statements (no driver ``BEGIN``/``COMMIT``: each statement commits on its own)."""
    conn = connect(dsn, statement_timeout_ms=statement_timeout_ms, lock_timeout_ms=lock_timeout_ms,
                   application_name=APPLICATION_NAME)
    conn.autocommit = True
    conn.cursor_factory = TaggedCursor
    return conn


# --- connection strings and the host ---------------------------------------------------------


def conninfo_params(dsn: str) -> dict[str, str]:
    """The DSN's parameters (those set); an AdvisorError, password masked, when it does not parse."""
    try:
        return {k: str(v) for k, v in pg_conninfo.conninfo_to_dict(dsn).items() if v is not None}
    except psycopg.ProgrammingError as err:
        raise AdvisorError(f"invalid connection string: {scrub_secrets(str(err), dsn)}",
                           "use postgresql://user@host:port/dbname or key=value pairs") from None


def add_options(params: dict[str, str], options: str) -> dict[str, str]:
    """``params`` with ``options`` (e.g. ``-c name=value``) after the server options it already has."""
    return dict(params, options=f"{params.get('options') or ''} {options}".strip())


def scrubber(*dsns: str | None) -> Callable[[str], str]:
    """A function that masks every secret of ``dsns`` (None skipped) in a text."""
    def scrub(text: str) -> str:
        for dsn in dsns:
            if dsn:
                text = scrub_secrets(text, dsn)
        return text

    return scrub


def host_cores() -> int:
    """Cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# --- the workload's temporary schema -------------------------------------------------------------


def new_schema_name() -> str:
    return f"advisor_bench_{secrets.token_hex(4)}"


def create_schema(conn: psycopg.Connection, schema: str, *statements: pg_sql.Composed) -> None:
    """CREATE SCHEMA ``schema``, then ``statements`` (its tables and rows), on a ``bench_session``.

    Each commits on its own (no transaction, see the module docstring): callers drop the
    schema in a ``finally`` that also covers a creation that failed half-way."""
    for stmt in (pg_sql.SQL("CREATE SCHEMA {}").format(pg_sql.Identifier(schema)), *statements):
        conn.execute(stmt)


def drop_schema(dsn: str, schema: str) -> str | None:
    """Drop the benchmark's schema; a note when that failed (with the statement to run by hand)."""
    try:
        with bench_session(dsn, lock_timeout_ms=10_000) as conn:
            conn.execute(pg_sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(pg_sql.Identifier(schema)))
        return None
    except (psycopg.Error, AdvisorError) as err:
        first = (scrub_secrets(str(err), dsn).strip().splitlines() or [type(err).__name__])[0]
        return f"could not drop the temporary schema {schema} ({first}): run DROP SCHEMA {schema} CASCADE"
