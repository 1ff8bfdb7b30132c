"""``ReplicaRouter``: writes to the primary, reads to a healthy replica by policy, read-your-writes, a pool per node."""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg_pool import ConnectionPool

from advisor.db.connect import redact_dsn
from advisor.routing.health import HealthRules, Node, ReplicaHealth, ReplicaState
from advisor.routing.lsn import commit_lsn, wait_replayed
from advisor.routing.marks import SessionMarks, WriteMark

MiB = 1 << 20
ReadYourWrites = Literal["lsn", "window"] | None
Policy = Literal["round_robin", "least_busy"]


def _pool(dsn: str, name: str, timeout: float, application_name: str | None, min_size: int, max_size: int,
          kwargs: dict[str, Any]) -> ConnectionPool:
    info = pg_conninfo.make_conninfo(dsn, application_name=application_name) if application_name else dsn
    return ConnectionPool(info, min_size=min_size, max_size=max_size, open=True, name=name, kwargs=kwargs,
                          timeout=timeout)


class ReplicaRouter:
    """Routes writes to the primary and reads to healthy replicas; see the ``advisor.routing`` docstring."""

    def __init__(
        self,
        primary_dsn: str,
        replica_dsns: Sequence[str],
        *,
        max_lag_ms: float | None = 1000,
        max_lag_bytes: int | None = 16 * MiB,
        probe_interval_s: float = 0.5,
        probe_timeout_s: float = 1.0,
        read_your_writes: ReadYourWrites = "lsn",
        window_s: float = 2.0,
        wait_s: float = 1.0,
        policy: Policy = "round_robin",
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        checkout_timeout_s: float = 5.0,
        connect_kwargs: Mapping[str, Any] | None = None,
        application_name: str | None = None,
    ) -> None:
        if read_your_writes not in ("lsn", "window", None):
            raise ValueError(f"read_your_writes must be 'lsn', 'window' or None, not {read_your_writes!r}")
        if policy not in ("round_robin", "least_busy"):
            raise ValueError(f"policy must be 'round_robin' or 'least_busy', not {policy!r}")
        self.primary_dsn = primary_dsn
        self.max_lag_ms = max_lag_ms
        self.max_lag_bytes = max_lag_bytes
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.read_your_writes = read_your_writes
        self.window_s = window_s
        self.wait_s = wait_s
        self.policy = policy
        self.checkout_timeout_s = checkout_timeout_s
        probe_app = f"{application_name}_probe" if (application_name or "").startswith("advisor") \
            else "advisor_router_probe"
        pool_args = (application_name, pool_min_size, pool_max_size, dict(connect_kwargs or {}))

        self._lock = threading.Lock()
        self._rr = itertools.count()
        self._marks = SessionMarks()
        self._reads: collections.Counter[str] = collections.Counter()
        self._writes = 0
        self._fallbacks: collections.Counter[str] = collections.Counter()
        self._closed = False
        self.primary = Node(primary_dsn, _pool(primary_dsn, "advisor-router-primary", checkout_timeout_s, *pool_args),
                            -1, healthy=True, reason=None)
        # A replica checkout waits no longer than a probe would: the primary is the fallback.
        replica_timeout = min(checkout_timeout_s, probe_timeout_s)
        self.nodes = [Node(d, _pool(d, f"advisor-router-replica-{i}", replica_timeout, *pool_args), i)
                      for i, d in enumerate(replica_dsns)]
        rules = HealthRules(max_lag_ms, max_lag_bytes, probe_interval_s, probe_timeout_s)
        self._health = ReplicaHealth(self.nodes, primary_dsn, rules, probe_app, self._lock)
        self._health.start()

    # -- lifecycle
    def __enter__(self) -> ReplicaRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._health.stop()
        for node in [self.primary, *self.nodes]:
            with contextlib.suppress(Exception):
                node.pool.close(timeout=5.0)

    def wait_ready(self, timeout_s: float = 10.0) -> bool:
        """Wait until every replica was probed once (healthy or not); True when all are healthy."""
        return self._health.wait_ready(timeout_s)

    # -- choosing
    def _pick(self, exclude: Node | None = None) -> Node | None:
        nodes = [n for n in self._health.healthy_nodes() if n is not exclude]
        if not nodes:
            return None
        if self.policy == "least_busy":
            with self._lock:
                return min(nodes, key=lambda n: (n.in_flight, n.lag_bytes or 0, n.index))
        return nodes[next(self._rr) % len(nodes)]

    def _mark(self, session: Any) -> WriteMark | None:
        if session is None or self.read_your_writes is None:
            return None
        return self._marks.get(session)

    def _route(self, mark: WriteMark | None) -> tuple[Node, str | None]:
        """The node for a read and the fallback reason (None when a replica serves it)."""
        if mark is not None and self.read_your_writes == "window" and time.monotonic() - mark.at < self.window_s:
            return self.primary, "read_your_writes_window"
        node = self._pick()
        if node is None:
            return self.primary, "no_healthy_replica" if self.nodes else None
        return node, None

    def _waits_for(self, mark: WriteMark | None) -> int | None:
        """The commit position a read must wait for on a replica ("lsn" read-your-writes), if any."""
        return mark.lsn if mark is not None and self.read_your_writes == "lsn" else None

    def _wait_replayed(self, node: Node, conn: psycopg.Connection, lsn: int) -> bool:
        if self._health.replayed(node, lsn):
            return True
        try:
            return wait_replayed(conn, lsn, self.wait_s)
        finally:
            if not conn.autocommit:
                conn.rollback()  # the application's transaction starts after the wait, with a fresh snapshot

    def _count_read(self, node: Node, fallback: str | None = None) -> None:
        with self._lock:
            self._reads[node.dsn] += 1
            if fallback:
                self._fallbacks[fallback] += 1

    # -- the psycopg API
    @contextlib.contextmanager
    def write(self, session: Any = None) -> Iterator[psycopg.Connection]:
        """A primary connection; committed on a clean exit (rolled back on an exception), then the
        session's write position is recorded for read-your-writes."""
        with self._lock:
            self._writes += 1
        pool = self.primary.pool
        conn = pool.getconn()
        try:
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.rollback()
                raise
            conn.commit()
            if session is not None and self.read_your_writes is not None:
                self._record(session, conn)
        finally:
            pool.putconn(conn)

    def _record(self, session: Any, conn: psycopg.Connection | None = None) -> None:
        lsn = None
        if self.read_your_writes == "lsn":
            if conn is None:
                with self.primary.pool.connection() as c:
                    lsn = commit_lsn(c)
            else:
                lsn = commit_lsn(conn)
                if not conn.autocommit:
                    conn.rollback()
        self._marks.put(session, WriteMark(lsn, time.monotonic()))

    def note_write(self, session: Any) -> None:
        """Record a write that went around ``write()`` (another client, an ORM): read-your-writes for ``session``."""
        if self.read_your_writes is not None:
            self._record(session)

    @contextlib.contextmanager
    def read(self, session: Any = None) -> Iterator[psycopg.Connection]:
        """A connection to a healthy replica (by policy), or to the primary when none qualifies or
        read-your-writes needs it; committed on exit (a read-only transaction ends either way)."""
        node, conn = self._checkout_read(self._mark(session))
        try:
            try:
                yield conn
            except psycopg.OperationalError:
                if node is not self.primary and (conn.closed or conn.broken):
                    self._health.eject(node, "a read's connection failed")
                with contextlib.suppress(Exception):
                    conn.rollback()
                raise
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.rollback()
                raise
            conn.commit()
        finally:
            with self._lock:
                node.in_flight -= 1
            node.pool.putconn(conn)

    def _checkout_read(self, mark: WriteMark | None) -> tuple[Node, psycopg.Connection]:
        node, fallback = self._route(mark)
        lsn = self._waits_for(mark)
        tried: Node | None = None
        while node is not self.primary:
            self._hold(node, +1)
            try:
                conn = node.pool.getconn()
            except Exception:
                self._hold(node, -1)
                self._health.eject(node, "no connection within the checkout timeout")
                fallback = "replica_error"
                break
            try:
                if lsn is not None and not self._wait_replayed(node, conn, lsn):
                    self._hold(node, -1)
                    node.pool.putconn(conn)
                    fallback = "read_your_writes_lsn_timeout"
                    break
            except psycopg.Error:
                self._hold(node, -1)
                node.pool.putconn(conn)
                self._health.eject(node, "a read's connection failed")
                fallback = "replica_error"
                if tried is None:  # one more replica, then the primary
                    tried = node
                    node = self._pick(exclude=node) or self.primary
                    continue
                break
            self._count_read(node)
            return node, conn
        return self._checkout_primary(fallback)

    def _hold(self, node: Node, change: int) -> None:
        with self._lock:
            node.in_flight += change

    def _checkout_primary(self, fallback: str | None) -> tuple[Node, psycopg.Connection]:
        node = self.primary
        with self._lock:
            node.in_flight += 1
            self._reads[node.dsn] += 1
            if fallback:
                self._fallbacks[fallback] += 1
        try:
            return node, node.pool.getconn()
        except BaseException:
            self._hold(node, -1)
            raise

    # -- for the SQLAlchemy session
    def choose_replica(self, mark: WriteMark | None = None, current: str | None = None) -> str | None:
        """The DSN of the replica a read should use (``current`` if still healthy), or None for the primary.
        With read-your-writes "lsn" it waits (up to ``wait_s``) until that replica has replayed ``mark``."""
        if current is not None and mark is None:
            for n in self._health.healthy_nodes():
                if n.dsn == current:
                    self._count_read(n)
                    return n.dsn
        node, fallback = self._route(mark)
        lsn = self._waits_for(mark)
        if node is not self.primary and lsn is not None:
            try:
                with node.pool.connection() as conn:
                    ok = self._wait_replayed(node, conn, lsn)
            except Exception:
                self._health.eject(node, "a read's connection failed")
                ok, fallback = False, "replica_error"
            if not ok:
                node, fallback = self.primary, fallback or "read_your_writes_lsn_timeout"
        self._count_read(node, fallback)
        return None if node is self.primary else node.dsn

    def count_primary_read(self) -> None:
        self._count_read(self.primary)

    # -- reporting
    def stats(self) -> dict[str, Any]:
        """Reads per node (redacted DSN), writes, fallbacks to the primary by reason, ejections, re-admissions."""
        with self._lock:
            reads = {redact_dsn(n.dsn): self._reads.get(n.dsn, 0) for n in [self.primary, *self.nodes]}
            return {
                "reads": reads,
                "primary_reads": self._reads.get(self.primary.dsn, 0),
                "replica_reads": sum(self._reads.get(n.dsn, 0) for n in self.nodes),
                "writes": self._writes,
                "fallbacks": sum(self._fallbacks.values()),
                "fallback_reasons": dict(self._fallbacks),
                **self._health.counts(),  # under the same lock
            }

    def replicas(self) -> list[ReplicaState]:
        return self._health.states()
