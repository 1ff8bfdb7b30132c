"""`advisor bench replicas`' vocabulary: the arms, the configuration and the result dataclasses
(fields described in ``advisor.bench.replicas``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from advisor.routing import Policy, ReadYourWrites

ROWS = 1_000  # rows of the workload's kv table
# name, policy, lag check, read-your-writes
ARMS: tuple[tuple[str, Policy, bool, ReadYourWrites], ...] = (
    ("primary_only", "round_robin", False, None),
    ("round_robin", "round_robin", False, None),
    ("least_busy", "least_busy", False, None),
    ("lag_aware", "round_robin", True, None),
    ("lag_aware_rwy_lsn", "round_robin", True, "lsn"),
    ("lag_aware_rwy_window", "round_robin", True, "window"),
)


@dataclass(frozen=True, slots=True)
class ReplicaBenchConfig:
    primary_dsn: str | None = None
    replica_dsns: tuple[str, ...] = ()
    local_replicas: int = 0  # > 0: start a throwaway primary with this many replicas
    read_ratio: float = 0.9
    concurrency: int = 4
    duration_s: float = 5.0
    max_lag_ms: float = 1000.0
    max_lag_bytes: int = 16 << 20
    probe_interval_s: float = 0.25
    drill: bool = False
    arms: tuple[str, ...] = tuple(a[0] for a in ARMS)


@dataclass(frozen=True, slots=True)
class ReplicaArm:
    name: str
    policy: str
    lag_check: bool
    read_your_writes: str | None
    requests: int
    elapsed_s: float
    ops_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    reads: int
    writes: int
    stale_reads: int
    failed_requests: int
    replica_reads: int
    primary_reads: int
    fallbacks: int
    ejections: int
    note: str | None = None
    answered_by_replicas: int = 0  # reads (read-backs too) whose server said pg_is_in_recovery()
    answered_by_primary: int = 0
    reads_by_server: dict = field(default_factory=dict)  # redacted DSN -> reads the router sent there
    fallback_reasons: dict = field(default_factory=dict)  # why reads went to the primary -> count
    replica_problems: dict = field(default_factory=dict)  # redacted DSN -> why it was not used (first seen)

    @property
    def replica_share(self) -> float | None:
        """The share of reads a replica answered, as measured on the server; None without reads."""
        answered = self.answered_by_replicas + self.answered_by_primary
        return self.answered_by_replicas / answered if answered else None


@dataclass(frozen=True, slots=True)
class ReplicaBenchResult:
    primary: str
    replicas: tuple[str, ...]
    host_cores: int
    settings: dict
    arms: tuple[ReplicaArm, ...]
    lag: dict
    drill: dict | None
    verdict: dict
    notes: tuple[str, ...] = field(default_factory=tuple)

