"""The contracts of the workload stage: what sources emit and what aggregation returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from advisor.workload.events import LogEvents


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs five times more, once per logged statement
class Execution:
    """One execution of one statement, as a source saw it (not changed once made).

    Sources fill what they know; everything but ``sql`` may be missing.
    ``timestamp`` is kept as the log's own text: lexical order is time order
    within one server's log, and parsing every timestamp would cost more than
    the rest of the line.
    """

    sql: str
    duration_ms: float | None = None
    timestamp: str | None = None
    session: str | None = None  # %c session id, else the pid
    pid: int | None = None
    user: str | None = None
    database: str | None = None
    application: str | None = None
    vxid: str | None = None  # virtual transaction id, "3/1234"
    query_id: int | None = None  # equals pg_stat_statements.queryid
    parameters: str | None = None  # the logged "$1 = '…', …" text
    plan: str | None = None  # auto_explain output attached to this statement
    file: str | None = None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class StatementRow:
    """One row of pg_stat_statements, as a source reads it."""

    query: str
    queryid: int
    calls: int
    total_ms: float
    mean_ms: float | None
    min_ms: float | None
    max_ms: float | None
    stddev_ms: float | None
    rows: int
    user: str | None
    database: str | None


@dataclass(frozen=True, slots=True)
class Skipped:
    """A line no format could read; kept so the user can find it."""

    file: str
    line: int
    reason: str
    text: str = ""


# The statement types the planner prices: what scan explains and suggest-indexes costs. A WITH whose main
# statement no one could tell is "with"; transaction control, SET and other utility commands have no plan.
PLANNED = frozenset({"select", "insert", "update", "delete", "merge", "with"})


@dataclass(frozen=True, slots=True)
class Query:
    """One fingerprint's aggregate over the whole workload."""

    fingerprint: str
    normalized: str
    parsed: bool  # False: sqlglot could not read it; fingerprinted from tokens
    statement_type: str  # select, insert, update, delete, merge, with, utility, unknown
    calls: int
    total_ms: float
    mean_ms: float | None
    min_ms: float | None
    max_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    timed_calls: int  # calls that came with a duration
    rows: int | None
    first_seen: str | None
    last_seen: str | None
    users: tuple[str, ...] = ()
    databases: tuple[str, ...] = ()
    applications: tuple[str, ...] = ()
    query_ids: tuple[int, ...] = ()
    sample: str = ""  # one statement as logged, with literals
    sample_parameters: str | None = None
    sources: tuple[str, ...] = ()  # "log", "pg_stat_statements"
    plan: str | None = None  # the auto_explain plan logged for its slowest execution that had one (JSON or text)
    plan_at: str | None = None  # when that execution was logged (the log's own timestamp text)


@dataclass(frozen=True, slots=True)
class RepeatPattern:
    """One fingerprint run many times in units of work with differing parameters (see sessions.py)."""

    kind: str  # n_plus_one (reads), n_plus_one_writes, or pagination (the same read with a growing OFFSET)
    child_fingerprint: str
    child_normalized: str
    parent_fingerprint: str | None  # what the unit ran just before the first child
    parent_normalized: str | None
    occurrences: int  # units of work with such a run
    statements: int  # child executions in those runs
    most_per_occurrence: int
    child_ms: float  # server time of those executions
    sessions: tuple[str, ...] = ()  # a few, to find them in the log
    applications: tuple[str, ...] = ()
    first_seen: str | None = None
    deepest_offset: int | None = None  # pagination: the largest OFFSET the loops reached
    discarded_share: float | None = None  # pagination: share of the rows read that the OFFSETs threw away


@dataclass(frozen=True, slots=True)
class CacheSimulation:
    """What LRU caches with a TTL would have served of one read fingerprint, replayed in log order."""

    fingerprint: str
    normalized: str
    lookups: int
    hits: tuple[tuple[float, int, int], ...]  # (TTL seconds, entries, hits)
    served_ms: float  # server time of the executions the largest cache would have answered


@dataclass(frozen=True, slots=True)
class Workload:
    """The first stage's result: every query by fingerprint, plus what was not read."""

    queries: tuple[Query, ...]
    sources: tuple[str, ...]
    lines: int
    statements: int
    other_events: int
    skipped_count: int
    skipped: tuple[Skipped, ...] = ()
    plans: int = 0  # auto_explain plans read; a plan counts as an execution only when its statement was not logged
    advisor_statements: int = 0  # executions the advisor itself sent, left out of everything above
    notes: tuple[str, ...] = field(default=())
    repeats: tuple[RepeatPattern, ...] = ()
    cache: tuple[CacheSimulation, ...] = ()
    events: LogEvents | None = None  # what the logs held beside statements (temp files, lock waits, …)
