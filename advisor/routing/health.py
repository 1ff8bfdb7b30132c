"""The replicas' health: one probe thread per replica measures its lag, ejects it with the reason, re-admits it."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from advisor.db.connect import redact_dsn
from advisor.routing.lsn import format_lsn
from advisor.routing.probe import Probe, ReplicaProbe

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

_HISTORY = 256  # primary LSN samples per replica for the lag-time cap
NOT_PROBED = "not probed yet"


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """What ``router.replicas()`` reports for one replica."""

    dsn: str  # redacted
    healthy: bool
    lag_bytes: int | None
    lag_ms: float | None
    reason: str | None  # why it is ejected (None when healthy)
    replay_lsn: str | None
    probed_at: float | None  # time.time() of the last successful probe
    in_flight: int


@dataclass(slots=True, eq=False)
class Node:
    """One server behind the router: its connection pool, reads in flight, and (for a replica) its health."""

    dsn: str
    pool: ConnectionPool
    index: int  # -1 for the primary
    healthy: bool = False
    reason: str | None = NOT_PROBED
    lag_bytes: int | None = None
    lag_ms: float | None = None
    replay_lsn: int | None = None
    probed_at: float | None = None
    last_ok: float | None = None  # monotonic
    in_flight: int = 0
    history: collections.deque[tuple[float, int]] = field(default_factory=lambda: collections.deque(maxlen=_HISTORY))


@dataclass(frozen=True, slots=True)
class HealthRules:
    """When a replica is out: lag limits (None: no limit), and how often and how long it is probed."""

    max_lag_ms: float | None
    max_lag_bytes: int | None
    probe_interval_s: float
    probe_timeout_s: float

    def capped_lag_ms(self, node: Node, probe: Probe, now: float) -> float | None:
        """The probe's lag in time, capped by how long the router has seen the primary ahead of what the replica
        replayed (resolution: one probe): a replica idle for an hour that receives one commit is not an hour behind."""
        lag_ms = probe.lag_ms
        if lag_ms and probe.replay_lsn is not None and node.history:
            ahead = [t for t, lsn in node.history if lsn > probe.replay_lsn]
            if ahead and len(ahead) < len(node.history):
                lag_ms = min(lag_ms, (now - ahead[0]) * 1000.0 + self.probe_interval_s * 1000.0)
        return lag_ms

    def ejection(self, probe: Probe, lag_ms: float | None) -> str | None:
        """Why a replica so probed gets no reads (None: it may)."""
        if not probe.in_recovery:
            return "not in recovery (promoted, or not a replica)"
        if self.max_lag_bytes is not None and probe.lag_bytes is not None and probe.lag_bytes > self.max_lag_bytes:
            return f"lag {probe.lag_bytes:,} bytes > max_lag_bytes {self.max_lag_bytes:,}"
        if self.max_lag_ms is not None and lag_ms is not None and lag_ms > self.max_lag_ms:
            return f"lag {lag_ms:,.0f} ms > max_lag_ms {self.max_lag_ms:,.0f}"
        return None

    def fresh(self, node: Node, now: float) -> bool:
        # A probe that hangs (a frozen server) must not keep a replica in: overdue means unhealthy.
        overdue = self.probe_interval_s + self.probe_timeout_s * 2 + 1.0
        return node.healthy and node.last_ok is not None and now - node.last_ok <= overdue


class ReplicaHealth:
    """Probes every replica on a thread of its own and keeps each node's health, under the router's lock."""

    def __init__(self, nodes: list[Node], primary_dsn: str, rules: HealthRules, probe_app: str,
                 lock: threading.Lock) -> None:
        self.nodes, self.primary_dsn, self.rules, self.probe_app = nodes, primary_dsn, rules, probe_app
        self._lock = lock  # shared with the router: a node's health and its reads in flight change together
        self._stop = threading.Event()
        self._ejections: collections.Counter[str] = collections.Counter()
        self._readmissions = 0
        self._threads = [threading.Thread(target=self._probe_loop, args=(n,), daemon=True,
                                          name=f"advisor-router-probe-{n.index}") for n in nodes]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.rules.probe_timeout_s + 5)

    def _probe_loop(self, node: Node) -> None:
        interval = self.rules.probe_interval_s
        links = ReplicaProbe(node.dsn, self.primary_dsn, self.rules.probe_timeout_s, self.probe_app)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._judge(node, links.probe())
            except Exception as err:  # any failure ejects: timeouts, refused connections, a shut-down server
                links.reset()
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                self.eject(node, f"probe failed: {type(err).__name__}: {first}")
            self._stop.wait(max(0.0, interval - (time.monotonic() - started)))
        links.close()

    def _judge(self, node: Node, probe: Probe) -> None:
        now = time.monotonic()
        if probe.primary_lsn is not None:
            node.history.append((now, probe.primary_lsn))
        lag_ms = self.rules.capped_lag_ms(node, probe, now)
        reason = self.rules.ejection(probe, lag_ms)
        with self._lock:
            node.lag_bytes, node.lag_ms, node.replay_lsn = probe.lag_bytes, lag_ms, probe.replay_lsn
            node.probed_at, node.last_ok = time.time(), now
        if reason is None:
            self._admit(node)
        else:
            self.eject(node, reason)

    def _admit(self, node: Node) -> None:
        with self._lock:
            if not node.healthy and node.reason != NOT_PROBED:
                self._readmissions += 1
            node.healthy, node.reason = True, None

    def eject(self, node: Node, reason: str) -> None:
        """No reads for ``node`` until a probe passes again."""
        with self._lock:
            if node.healthy:
                self._ejections[node.dsn] += 1
            node.healthy, node.reason = False, reason

    def healthy_nodes(self) -> list[Node]:
        now = time.monotonic()
        with self._lock:
            return [n for n in self.nodes if self.rules.fresh(n, now)]

    def replayed(self, node: Node, lsn: int) -> bool:
        """Whether ``node``'s last probe already saw ``lsn`` replayed."""
        with self._lock:
            return node.replay_lsn is not None and node.replay_lsn >= lsn

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until every replica was probed once (healthy or not); True when all are healthy."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if all(n.reason != NOT_PROBED for n in self.nodes):
                    return all(n.healthy for n in self.nodes)
            time.sleep(0.02)
        return False

    def counts(self) -> dict[str, Any]:
        """Ejections (in all and per redacted DSN) and re-admissions; the caller holds the lock."""
        return {
            "ejections": sum(self._ejections.values()),
            "ejections_by_replica": {redact_dsn(d): c for d, c in self._ejections.items()},
            "readmissions": self._readmissions,
        }

    def states(self) -> list[ReplicaState]:
        now = time.monotonic()
        with self._lock:
            out = []
            for n in self.nodes:
                fresh = self.rules.fresh(n, now)
                reason = n.reason if not n.healthy else (None if fresh else "probe overdue")
                out.append(ReplicaState(redact_dsn(n.dsn), fresh, n.lag_bytes,
                                        None if n.lag_ms is None else round(n.lag_ms, 1), reason,
                                        None if n.replay_lsn is None else format_lsn(n.replay_lsn),
                                        n.probed_at, n.in_flight))
            return out
