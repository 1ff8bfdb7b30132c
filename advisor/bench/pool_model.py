"""`advisor bench pool`'s vocabulary: the modes and transports, the configuration, and the arm and result
dataclasses (fields described in ``advisor.bench.pool``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from advisor.bench.pgbouncer import POOL_MODES

MODES = ("new_connection", "psycopg_pool", "psycopg_pool_checked", "sqlalchemy_queuepool", "sqlalchemy_nullpool",
         "pgbouncer", "pgbouncer_pool", "pgbouncer_pool_prepared")
PGBOUNCER_MODES = ("pgbouncer", "pgbouncer_pool", "pgbouncer_pool_prepared")  # run only through a PgBouncer
# pgbouncer_pool_prepared shows what the default prepare_threshold does through PgBouncer; it is not advice
POOLED_MODES = ("psycopg_pool", "psycopg_pool_checked", "sqlalchemy_queuepool", "pgbouncer", "pgbouncer_pool")
TRANSPORTS = ("tcp", "unix")
REQUESTS_TIME_CAP_S = 300.0  # a --requests run without --duration still ends


@dataclass(frozen=True, slots=True)
class PoolBenchConfig:
    dsn: str
    query: str | None = None
    concurrency: tuple[int, ...] = (1, 4, 16)
    duration_s: float | None = None  # None: 5 s, or only the time cap when ``requests`` is given
    requests: int | None = None  # in total per arm, shared by its threads
    warmup_s: float = 1.0
    pgbouncer_dsn: str | None = None
    local_pgbouncer: bool = False  # start a throwaway PgBouncer per PgBouncer arm (advisor.bench.pgbouncer)
    pgbouncer_pool_size: int | None = None  # its server connections; None: see default_pgbouncer_pool_size
    pgbouncer_pool_modes: tuple[str, ...] = POOL_MODES
    modes: tuple[str, ...] = MODES  # the PGBOUNCER_MODES run only with pgbouncer_dsn or local_pgbouncer
    transports: tuple[str, ...] = TRANSPORTS
    request_timeout_s: float = 10.0

    @property
    def window_s(self) -> float:
        """Seconds of each arm's measured window: duration_s, else 5 s, or only the time cap with ``requests``."""
        if self.duration_s is not None:
            return self.duration_s
        return REQUESTS_TIME_CAP_S if self.requests is not None else 5.0


@dataclass(frozen=True, slots=True)
class Arm:
    mode: str
    transport: str
    concurrency: int
    requests: int
    elapsed_s: float
    ops_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    connect_ms: float | None
    connect_p50_ms: float | None
    connect_p95_ms: float | None
    connections_opened: int
    errors: int
    timeouts: int
    peak_backends: int | None
    peak_server_backends: int | None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class PoolBenchResult:
    dsn: str  # redacted
    host_cores: int
    server_local: bool
    server_version_num: int
    max_connections: int
    reserved_connections: int
    query: str  # masked
    workload: dict
    settings: dict
    arms: tuple[Arm, ...]
    verdict: dict
    notes: tuple[str, ...] = field(default_factory=tuple)
