"""A lag-aware read-replica router for applications (plain psycopg and SQLAlchemy 2).

Writes go to the primary; reads go to a *healthy* streaming replica, chosen by a
policy (``round_robin`` or ``least_busy``), and to the primary when no replica
qualifies. One background thread per replica probes it every
``probe_interval_s``:

* on the replica: ``pg_is_in_recovery()``, ``pg_last_wal_receive_lsn()``,
  ``pg_last_wal_replay_lsn()`` and ``pg_last_xact_replay_timestamp()``;
* on the primary: ``pg_current_wal_lsn()``.

Lag in bytes is primary LSN − replayed LSN. Lag in time is 0 when the replica
has replayed everything it received (``now() - pg_last_xact_replay_timestamp()``
keeps growing on an idle replica that is fully caught up, so it is not used
then), else ``now() - pg_last_xact_replay_timestamp()``, capped by how long the
router itself has seen the primary ahead of the replayed LSN (a replica idle for
an hour that receives one commit is not an hour behind). A replica beyond
``max_lag_ms`` or ``max_lag_bytes``, not in recovery, failing a probe (timeout,
connection error), whose probe is overdue, or whose connection just failed a
read, is *ejected* with the reason; a later passing probe re-admits it.

Read-your-writes (``read_your_writes``), per ``session`` key (a user id, a
request id, the SQLAlchemy Session):

``"lsn"``     after a write, remember the primary's WAL insert position (it is at or
              past the commit record, also with ``synchronous_commit=off``); a read
              for that session waits up to ``wait_s`` on the chosen replica until
              ``pg_last_wal_replay_lsn()`` reaches it, else it goes to the primary.
``"window"``  reads go to the primary for ``window_s`` after the session's last write.
``None``      no guarantee: a read right after a write may miss it on a replica.

Example (plain psycopg; connections come from one psycopg_pool.ConnectionPool per node)::

    from advisor.routing import ReplicaRouter

    with ReplicaRouter("postgresql://app@primary/db",
                       ["postgresql://app@replica1/db", "postgresql://app@replica2/db"],
                       max_lag_ms=1000, read_your_writes="lsn") as router:
        with router.write(session=user_id) as conn:          # the primary; committed on exit
            conn.execute("UPDATE users SET name = %s WHERE id = %s", (name, user_id))
        with router.read(session=user_id) as conn:           # a replica that has the update
            row = conn.execute("SELECT name FROM users WHERE id = %s", (user_id,)).fetchone()
        print(router.stats(), router.replicas())

Example (SQLAlchemy 2)::

    from sqlalchemy import create_engine, select
    from advisor.routing import ReplicaRouter, routing_sessionmaker

    primary = create_engine("postgresql+psycopg://app@primary/db")
    replicas = {dsn: create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))
                for dsn in ("postgresql://app@replica1/db", "postgresql://app@replica2/db")}
    router = ReplicaRouter("postgresql://app@primary/db", list(replicas), read_your_writes="lsn")
    Session = routing_sessionmaker(router, primary, replicas)
    with Session() as session:
        session.add(User(name="ada")); session.commit()            # flush + commit: the primary
        session.scalars(select(User)).all()                         # a replica that has replayed the commit
        session.scalars(select(User).with_for_update()).all()       # FOR UPDATE: the primary
    router.close()

Inside one SQLAlchemy transaction, reads stay on one replica (one snapshot
source) until the transaction writes; from then on everything goes to the
primary until it ends.

The router's own traffic is recognisable: its statements (probes, the commit
position, the replay wait) start with ``/* advisor */`` and its probe connections
are named ``advisor_router_probe`` (``<application_name>_probe`` when that starts
with ``advisor``), so a workload read from the logs or pg_stat_statements leaves
them out. The application's connections keep the DSN's ``application_name`` unless
``application_name`` is given: they carry the application's queries, which must
stay in its workload. With ``autocommit=False`` (psycopg's default) psycopg opens
each transaction with a bare ``BEGIN``; that is the application's own.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg import conninfo as pg_conninfo

from advisor.db.connect import TAG, redact_dsn

__all__ = ["ReplicaRouter", "ReplicaState", "RoutingSession", "routing_sessionmaker", "parse_lsn", "probe_replica"]

MiB = 1 << 20
ReadYourWrites = Literal["lsn", "window"] | None
Policy = Literal["round_robin", "least_busy"]
MAX_SESSIONS = 100_000  # read-your-writes marks kept (least recently written dropped first)
_HISTORY = 256  # primary LSN samples per replica for the lag-time cap

_REPLICA_PROBE = TAG + """SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
       extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000"""
_PRIMARY_PROBE = TAG + "SELECT pg_current_wal_lsn()::text"
# At or past the end of every commit that returned, also with synchronous_commit=off
# (pg_current_wal_lsn() is the *write* position, which may trail an asynchronous commit).
_COMMIT_LSN = TAG + "SELECT pg_current_wal_insert_lsn()::text"
_REPLAYED = TAG + "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn"


def parse_lsn(text: str | None) -> int | None:
    """'16/B374D848' -> an integer position (None stays None)."""
    if text is None:
        return None
    hi, _, lo = text.partition("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe of a replica (and of the primary, for the byte lag)."""

    in_recovery: bool
    receive_lsn: int | None
    replay_lsn: int | None
    primary_lsn: int | None
    lag_bytes: int | None
    lag_ms: float | None  # None: unknown (nothing replayed yet and not caught up)


def probe_replica(replica: psycopg.Connection, primary: psycopg.Connection | None) -> Probe:
    """Read a replica's position and the primary's; the replica first, so the lag is never underestimated."""
    in_rec, receive, replay, age_ms = replica.execute(_REPLICA_PROBE).fetchone()
    primary_lsn = parse_lsn(primary.execute(_PRIMARY_PROBE).fetchone()[0]) if primary is not None else None
    receive_i, replay_i = parse_lsn(receive), parse_lsn(replay)
    if receive_i is not None and receive_i == replay_i:
        lag_ms: float | None = 0.0  # caught up with all it received: the replay timestamp's age means nothing
    else:
        lag_ms = None if age_ms is None else max(0.0, float(age_ms))
    lag_bytes = None
    if primary_lsn is not None and replay_i is not None:
        lag_bytes = max(0, primary_lsn - replay_i)
        if lag_bytes == 0:
            lag_ms = 0.0  # replayed all the primary has written (e.g. just restarted, not streaming yet)
    return Probe(bool(in_rec), receive_i, replay_i, primary_lsn, lag_bytes, lag_ms)


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


@dataclass(slots=True)
class _WriteMark:
    lsn: int | None
    at: float  # time.monotonic()


@dataclass(slots=True, eq=False)
class _Node:
    dsn: str
    pool: Any
    index: int
    healthy: bool = False
    reason: str | None = "not probed yet"
    lag_bytes: int | None = None
    lag_ms: float | None = None
    replay_lsn: int | None = None
    probed_at: float | None = None
    last_ok: float | None = None  # monotonic
    in_flight: int = 0
    history: collections.deque = field(default_factory=lambda: collections.deque(maxlen=_HISTORY))


def _with_timeouts(dsn: str, timeout_s: float, application_name: str) -> str:
    params = {k: v for k, v in pg_conninfo.conninfo_to_dict(dsn).items() if v is not None}
    params.setdefault("connect_timeout", str(max(2, round(timeout_s))))
    params["application_name"] = application_name
    ms = max(1, int(timeout_s * 1000))
    params["options"] = f"{params.get('options', '')} -c statement_timeout={ms} -c lock_timeout={ms}".strip()
    return pg_conninfo.make_conninfo("", **params)


class ReplicaRouter:
    """Routes writes to the primary and reads to healthy replicas; see the module docstring."""

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
        from psycopg_pool import ConnectionPool

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
        self._probe_app = f"{application_name}_probe" if (application_name or "").startswith("advisor") \
            else "advisor_router_probe"
        kwargs = dict(connect_kwargs or {})

        def pool(dsn: str, name: str, timeout: float) -> ConnectionPool:
            info = pg_conninfo.make_conninfo(dsn, application_name=application_name) if application_name else dsn
            return ConnectionPool(info, min_size=pool_min_size, max_size=pool_max_size, open=True, name=name,
                                  kwargs=kwargs, timeout=timeout)

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rr = itertools.count()
        self._marks: collections.OrderedDict[Any, _WriteMark] = collections.OrderedDict()
        self._reads: collections.Counter[str] = collections.Counter()
        self._writes = 0
        self._fallbacks: collections.Counter[str] = collections.Counter()
        self._ejections: collections.Counter[str] = collections.Counter()
        self._readmissions = 0
        self._closed = False
        self.primary = _Node(primary_dsn, pool(primary_dsn, "advisor-router-primary", checkout_timeout_s), -1,
                             healthy=True, reason=None)
        # A replica checkout waits no longer than a probe would: the primary is the fallback.
        self.nodes = [_Node(d, pool(d, f"advisor-router-replica-{i}", min(checkout_timeout_s, probe_timeout_s)), i)
                      for i, d in enumerate(replica_dsns)]
        self._threads = [threading.Thread(target=self._probe_loop, args=(n,), daemon=True,
                                          name=f"advisor-router-probe-{n.index}") for n in self.nodes]
        for t in self._threads:
            t.start()

    # -- lifecycle
    def __enter__(self) -> ReplicaRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.probe_timeout_s + 5)
        for node in [self.primary, *self.nodes]:
            with contextlib.suppress(Exception):
                node.pool.close(timeout=5.0)

    def wait_ready(self, timeout_s: float = 10.0) -> bool:
        """Wait until every replica was probed once (healthy or not); True when all are healthy."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if all(n.reason != "not probed yet" for n in self.nodes):
                    return all(n.healthy for n in self.nodes)
            time.sleep(0.02)
        return False

    # -- probing
    def _probe_conn(self, dsn: str) -> psycopg.Connection:
        return psycopg.connect(_with_timeouts(dsn, self.probe_timeout_s, self._probe_app), autocommit=True)

    def _probe_loop(self, node: _Node) -> None:
        rconn = pconn = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if rconn is None or rconn.closed:
                    rconn = self._probe_conn(node.dsn)
                primary_ok = True
                try:
                    if pconn is None or pconn.closed:
                        pconn = self._probe_conn(self.primary_dsn)
                except psycopg.Error:
                    primary_ok = False
                try:
                    probe = probe_replica(rconn, pconn if primary_ok else None)
                except psycopg.Error:
                    if rconn.closed or rconn.broken or not primary_ok:
                        raise
                    # the primary half failed: measure the replica alone
                    with contextlib.suppress(Exception):
                        pconn.close()
                    pconn, primary_ok = None, False
                    probe = probe_replica(rconn, None)
                self._judge(node, probe, primary_ok)
            except Exception as err:  # any failure ejects: timeouts, refused connections, a shut-down server
                for c in (rconn,):
                    with contextlib.suppress(Exception):
                        c.close()
                rconn = None
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                self._eject(node, f"probe failed: {type(err).__name__}: {first}")
            self._stop.wait(max(0.0, self.probe_interval_s - (time.monotonic() - started)))
        for c in (rconn, pconn):
            with contextlib.suppress(Exception):
                if c is not None:
                    c.close()

    def _judge(self, node: _Node, probe: Probe, primary_ok: bool) -> None:
        now = time.monotonic()
        lag_ms = probe.lag_ms
        if probe.primary_lsn is not None:
            node.history.append((now, probe.primary_lsn))
        if lag_ms and probe.replay_lsn is not None and node.history:
            # cap by how long we have seen the primary ahead of what is replayed (resolution: one probe)
            ahead = [t for t, lsn in node.history if lsn > probe.replay_lsn]
            if ahead and len(ahead) < len(node.history):
                lag_ms = min(lag_ms, (now - ahead[0]) * 1000.0 + self.probe_interval_s * 1000.0)
        reason = None
        if not probe.in_recovery:
            reason = "not in recovery (promoted, or not a replica)"
        elif self.max_lag_bytes is not None and probe.lag_bytes is not None and probe.lag_bytes > self.max_lag_bytes:
            reason = f"lag {probe.lag_bytes:,} bytes > max_lag_bytes {self.max_lag_bytes:,}"
        elif self.max_lag_ms is not None and lag_ms is not None and lag_ms > self.max_lag_ms:
            reason = f"lag {lag_ms:,.0f} ms > max_lag_ms {self.max_lag_ms:,.0f}"
        with self._lock:
            node.lag_bytes, node.lag_ms, node.replay_lsn = probe.lag_bytes, lag_ms, probe.replay_lsn
            node.probed_at, node.last_ok = time.time(), now
        if reason is None:
            self._admit(node)
        else:
            self._eject(node, reason)

    def _admit(self, node: _Node) -> None:
        with self._lock:
            if not node.healthy and node.reason != "not probed yet":
                self._readmissions += 1
            node.healthy, node.reason = True, None

    def _eject(self, node: _Node, reason: str) -> None:
        with self._lock:
            if node.healthy:
                self._ejections[node.dsn] += 1
            node.healthy, node.reason = False, reason

    def _fresh(self, node: _Node, now: float) -> bool:
        # A probe that hangs (a frozen server) must not keep a replica in: overdue means unhealthy.
        overdue = self.probe_interval_s + self.probe_timeout_s * 2 + 1.0
        return node.healthy and node.last_ok is not None and now - node.last_ok <= overdue

    # -- choosing
    def _candidates(self) -> list[_Node]:
        now = time.monotonic()
        with self._lock:
            return [n for n in self.nodes if self._fresh(n, now)]

    def _pick(self, exclude: _Node | None = None) -> _Node | None:
        nodes = [n for n in self._candidates() if n is not exclude]
        if not nodes:
            return None
        if self.policy == "least_busy":
            with self._lock:
                return min(nodes, key=lambda n: (n.in_flight, n.lag_bytes or 0, n.index))
        return nodes[next(self._rr) % len(nodes)]

    def _mark(self, session: Any) -> _WriteMark | None:
        if session is None or self.read_your_writes is None:
            return None
        if hasattr(session, "info") and isinstance(session.info, dict) and "advisor_write" in session.info:
            return session.info["advisor_write"]
        with self._lock:
            return self._marks.get(session)

    def _route(self, mark: _WriteMark | None) -> tuple[_Node, str | None]:
        """The node for a read and the fallback reason (None when a replica serves it)."""
        if mark is not None and self.read_your_writes == "window" and time.monotonic() - mark.at < self.window_s:
            return self.primary, "read_your_writes_window"
        node = self._pick()
        if node is None:
            return self.primary, "no_healthy_replica" if self.nodes else None
        return node, None

    def _wait_replayed(self, node: _Node, conn: psycopg.Connection, lsn: int) -> bool:
        with self._lock:
            if node.replay_lsn is not None and node.replay_lsn >= lsn:
                return True
        deadline = time.monotonic() + self.wait_s
        pause = 0.001
        text = format_lsn(lsn)
        try:
            while True:
                ok = conn.execute(_REPLAYED, (text,)).fetchone()[0]
                if ok:
                    return True
                if time.monotonic() + pause > deadline:
                    return False
                time.sleep(pause)
                pause = min(pause * 2, 0.02)
        finally:
            if not conn.autocommit:
                conn.rollback()  # the application's transaction starts after the wait, with a fresh snapshot

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

    def _record(self, session: Any, conn: psycopg.Connection | None = None) -> _WriteMark:
        lsn = None
        if self.read_your_writes == "lsn":
            if conn is None:
                with self.primary.pool.connection() as c:
                    lsn = parse_lsn(c.execute(_COMMIT_LSN).fetchone()[0])
            else:
                lsn = parse_lsn(conn.execute(_COMMIT_LSN).fetchone()[0])
                if not conn.autocommit:
                    conn.rollback()
        mark = _WriteMark(lsn, time.monotonic())
        if hasattr(session, "info") and isinstance(session.info, dict):
            session.info["advisor_write"] = mark
            return mark
        with self._lock:
            self._marks[session] = mark
            self._marks.move_to_end(session)
            while len(self._marks) > MAX_SESSIONS:
                self._marks.popitem(last=False)
        return mark

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
                    self._eject(node, "a read's connection failed")
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

    def _checkout_read(self, mark: _WriteMark | None) -> tuple[_Node, psycopg.Connection]:
        node, fallback = self._route(mark)
        tried: _Node | None = None
        while node is not self.primary:
            with self._lock:
                node.in_flight += 1
            try:
                conn = node.pool.getconn()
            except Exception:
                with self._lock:
                    node.in_flight -= 1
                self._eject(node, "no connection within the checkout timeout")
                fallback = "replica_error"
                break
            try:
                if mark is not None and mark.lsn is not None and self.read_your_writes == "lsn":
                    if not self._wait_replayed(node, conn, mark.lsn):
                        with self._lock:
                            node.in_flight -= 1
                        node.pool.putconn(conn)
                        fallback = "read_your_writes_lsn_timeout"
                        break
            except psycopg.Error:
                with self._lock:
                    node.in_flight -= 1
                node.pool.putconn(conn)
                self._eject(node, "a read's connection failed")
                if tried is None:  # one more replica, then the primary
                    tried = node
                    node = self._pick(exclude=node) or self.primary
                    fallback = "replica_error"
                    continue
                fallback = "replica_error"
                break
            with self._lock:
                self._reads[node.dsn] += 1
            return node, conn
        node = self.primary
        with self._lock:
            node.in_flight += 1
            self._reads[node.dsn] += 1
            if fallback:
                self._fallbacks[fallback] += 1
        try:
            return node, node.pool.getconn()
        except BaseException:
            with self._lock:
                node.in_flight -= 1
            raise

    # -- for the SQLAlchemy session
    def choose_replica(self, mark: _WriteMark | None = None, current: str | None = None) -> str | None:
        """The DSN of the replica a read should use (``current`` if still healthy), or None for the primary.
        With read-your-writes "lsn" it waits (up to ``wait_s``) until that replica has replayed ``mark``."""
        if current is not None and mark is None:
            for n in self._candidates():
                if n.dsn == current:
                    with self._lock:
                        self._reads[n.dsn] += 1
                    return n.dsn
        node, fallback = self._route(mark)
        if node is not self.primary and mark is not None and mark.lsn is not None and self.read_your_writes == "lsn":
            try:
                with node.pool.connection() as conn:
                    ok = self._wait_replayed(node, conn, mark.lsn)
            except Exception:
                self._eject(node, "a read's connection failed")
                ok, fallback = False, "replica_error"
            if not ok:
                node, fallback = self.primary, fallback or "read_your_writes_lsn_timeout"
        with self._lock:
            self._reads[node.dsn] += 1
            if fallback:
                self._fallbacks[fallback] += 1
        return None if node is self.primary else node.dsn

    def count_primary_read(self) -> None:
        with self._lock:
            self._reads[self.primary.dsn] += 1

    # -- reporting
    def stats(self) -> dict:
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
                "ejections": sum(self._ejections.values()),
                "ejections_by_replica": {redact_dsn(d): c for d, c in self._ejections.items()},
                "readmissions": self._readmissions,
            }

    def replicas(self) -> list[ReplicaState]:
        now = time.monotonic()
        with self._lock:
            out = []
            for n in self.nodes:
                fresh = self._fresh(n, now)
                reason = n.reason if not n.healthy else (None if fresh else "probe overdue")
                out.append(ReplicaState(redact_dsn(n.dsn), fresh, n.lag_bytes,
                                        None if n.lag_ms is None else round(n.lag_ms, 1), reason,
                                        None if n.replay_lsn is None else format_lsn(n.replay_lsn),
                                        n.probed_at, n.in_flight))
            return out


# --- SQLAlchemy 2 -------------------------------------------------------------------------

_WRITE_TEXT = re.compile(r"^\s*(?:/\*.*?\*/\s*)*(?!select\b|show\b|values\b|table\b|explain\b)\w", re.I | re.S)
_LOCKING_TEXT = re.compile(r"\bfor\s+(?:no\s+key\s+)?(?:update|share|key\s+share)\b", re.I)

try:
    from sqlalchemy import event as _sa_event
    from sqlalchemy.orm import Session as _SASession
    from sqlalchemy.orm import sessionmaker as _sa_sessionmaker
    from sqlalchemy.sql.dml import UpdateBase as _UpdateBase
    from sqlalchemy.sql.elements import TextClause as _TextClause
except ImportError:  # pragma: no cover - SQLAlchemy is optional for the psycopg API
    _SASession = object  # type: ignore[assignment,misc]


class RoutingSession(_SASession):
    """A Session whose ``get_bind`` routes: the primary engine for flushes, INSERT/UPDATE/DELETE,
    ``SELECT … FOR UPDATE/SHARE``, and anything in a transaction that has written; else a healthy
    replica's engine chosen by the router (read-your-writes keyed by this Session). Build it with
    ``routing_sessionmaker``."""

    router: ReplicaRouter | None = None
    primary_engine: Any = None
    replica_engines: Mapping[str, Any] = {}

    def _advisor_state(self) -> dict:
        return self.info.setdefault("advisor_routing", {"wrote": False, "replica": None})

    def get_bind(self, mapper=None, clause=None, **kw):
        state = self._advisor_state()
        if self.router is None or self.primary_engine is None:
            return super().get_bind(mapper, clause=clause, **kw)
        if self._flushing or _is_write(clause):
            state["wrote"] = True
            return self.primary_engine
        if state["wrote"] or _is_locking(clause):
            self.router.count_primary_read()
            return self.primary_engine
        mark = self.info.get("advisor_write") if self.router.read_your_writes else None
        if mark is not None and self.router.read_your_writes == "lsn" and state.get("mark_checked") is mark:
            mark = None  # this transaction already waited for it on its replica
        dsn = self.router.choose_replica(mark, current=state["replica"])
        if dsn is None or dsn not in self.replica_engines:
            state["replica"] = None
            return self.primary_engine
        state["replica"] = dsn
        state["mark_checked"] = self.info.get("advisor_write")
        return self.replica_engines[dsn]


def _is_write(clause) -> bool:
    if clause is None:
        return False
    if isinstance(clause, _UpdateBase):
        return True
    return isinstance(clause, _TextClause) and bool(_WRITE_TEXT.match(clause.text))


def _is_locking(clause) -> bool:
    if clause is None:
        return False
    if getattr(clause, "_for_update_arg", None) is not None:
        return True
    return isinstance(clause, _TextClause) and bool(_LOCKING_TEXT.search(clause.text))


if _SASession is not object:

    @_sa_event.listens_for(RoutingSession, "after_flush")
    def _after_flush(session, flush_context) -> None:
        session.info.setdefault("advisor_routing", {"wrote": False, "replica": None})["wrote"] = True

    @_sa_event.listens_for(RoutingSession, "after_commit")
    def _after_commit(session) -> None:
        state = session.info.get("advisor_routing")
        if state and state["wrote"] and session.router is not None and session.router.read_your_writes:
            session.router.note_write(session)  # the mark lives in session.info

    @_sa_event.listens_for(RoutingSession, "after_transaction_end")
    def _after_transaction_end(session, transaction) -> None:
        if transaction.parent is None:  # the root transaction: next one starts clean
            session.info["advisor_routing"] = {"wrote": False, "replica": None}


def routing_sessionmaker(router: ReplicaRouter, primary_engine, replica_engines: Mapping[str, Any], **kw):
    """A ``sessionmaker`` of ``RoutingSession``; ``replica_engines`` maps each replica DSN given to the
    router to its Engine (a replica without an engine is never chosen for the ORM)."""
    unknown = set(replica_engines) - {n.dsn for n in router.nodes}
    if unknown:
        raise ValueError(f"replica engines for DSNs the router does not know: {sorted(redact_dsn(d) for d in unknown)}")
    cls = type("BoundRoutingSession", (RoutingSession,), {
        "router": router, "primary_engine": primary_engine, "replica_engines": dict(replica_engines)})
    return _sa_sessionmaker(class_=cls, **kw)
