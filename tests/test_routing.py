"""advisor.routing against a real primary and streaming replicas (loopback, throwaway cluster)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import psycopg
import pytest

from advisor.routing import Probe, ReplicaRouter, routing_sessionmaker
from advisor.routing.health import HealthRules, Node

SYNC = "options='-c synchronous_commit=on'"  # the embedded cluster commits asynchronously by default


def _dsn(base: str) -> str:
    return f"{base} {SYNC}" if "://" not in base else base + ("&" if "?" in base else "?") + \
        "options=-c%20synchronous_commit%3Don"


def _poll(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def nodes(embedded_cluster, pg_dsn):
    dbname = pg_dsn.rsplit("/", 1)[1]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS kv (id int PRIMARY KEY, v int NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS noise (id bigserial PRIMARY KEY, filler text)")
    replica = embedded_cluster.add_replica()
    try:
        yield {"primary": _dsn(pg_dsn), "replica": replica.dsn(dbname), "replica_cluster": replica,
               "cluster": embedded_cluster, "dbname": dbname}
    finally:
        replica.stop()


def _on_replica(conn) -> bool:
    return conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]


@pytest.fixture()
def replay_control(nodes):
    with psycopg.connect(nodes["replica"], autocommit=True) as conn:
        yield conn
        conn.execute("SELECT pg_wal_replay_resume()")


def _pause(conn) -> None:
    conn.execute("SELECT pg_wal_replay_pause()")
    _poll(lambda: conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] == "paused",
          what="replay to pause")


def test_writes_go_to_primary_reads_to_replica(nodes):
    with ReplicaRouter(nodes["primary"], [nodes["replica"]], probe_interval_s=0.1) as router:
        assert router.wait_ready(), router.replicas()
        with router.write(session="u1") as conn:
            assert not _on_replica(conn)
            conn.execute("INSERT INTO kv VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET v = 1")
        with router.read(session="other") as conn:
            assert _on_replica(conn)
        with router.read(session="u1") as conn:  # lsn mode: waits for the replay, stays on the replica
            assert _on_replica(conn)
            assert conn.execute("SELECT v FROM kv WHERE id = 1").fetchone() == (1,)
        stats = router.stats()
        assert stats["writes"] == 1 and stats["replica_reads"] == 2 and stats["primary_reads"] == 0
        (state,) = router.replicas()
        assert state.healthy and state.reason is None and state.lag_bytes is not None


def test_lsn_read_your_writes_never_stale_under_write_load(nodes):
    stop = threading.Event()

    def load() -> None:
        with psycopg.connect(nodes["primary"], autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO noise (filler) SELECT repeat('x', 200) FROM generate_series(1, 20)")

    writers = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    for t in writers:
        t.start()
    stale = 0
    try:
        with ReplicaRouter(nodes["primary"], [nodes["replica"]], probe_interval_s=0.1, read_your_writes="lsn",
                           wait_s=5.0, max_lag_ms=None, max_lag_bytes=None) as router:
            assert router.wait_ready(), router.replicas()
            for i in range(1000, 1200):
                with router.write(session=i % 7) as conn:
                    conn.execute("INSERT INTO kv VALUES (%s, %s)", (i, i))
                with router.read(session=i % 7) as conn:
                    if conn.execute("SELECT v FROM kv WHERE id = %s", (i,)).fetchone() != (i,):
                        stale += 1
            stats = router.stats()
    finally:
        stop.set()
        for t in writers:
            t.join(timeout=10)
    assert stale == 0
    assert stats["replica_reads"] > 0, stats


def test_without_read_your_writes_a_paused_replica_serves_stale_reads_lsn_mode_falls_back(nodes, replay_control):
    with ReplicaRouter(nodes["primary"], [nodes["replica"]], probe_interval_s=0.1, read_your_writes=None,
                       max_lag_ms=None, max_lag_bytes=None) as plain, \
         ReplicaRouter(nodes["primary"], [nodes["replica"]], probe_interval_s=0.1, read_your_writes="lsn",
                       wait_s=0.3, max_lag_ms=None, max_lag_bytes=None) as lsn:
        assert plain.wait_ready() and lsn.wait_ready()
        _pause(replay_control)
        with plain.write(session="s") as conn:
            conn.execute("INSERT INTO kv VALUES (2000, 1)")
        with lsn.write(session="s") as conn:
            conn.execute("INSERT INTO kv VALUES (2001, 1)")
        with plain.read(session="s") as conn:
            assert _on_replica(conn)
            assert conn.execute("SELECT 1 FROM kv WHERE id = 2000").fetchone() is None  # certainly stale
        with lsn.read(session="s") as conn:
            assert not _on_replica(conn)  # the replica could not catch up within wait_s: the primary
            assert conn.execute("SELECT 1 FROM kv WHERE id = 2001").fetchone() == (1,)
        assert lsn.stats()["fallback_reasons"] == {"read_your_writes_lsn_timeout": 1}


def test_window_mode_reads_the_primary_right_after_a_write(nodes):
    with ReplicaRouter(nodes["primary"], [nodes["replica"]], probe_interval_s=0.1, read_your_writes="window",
                       window_s=30.0) as router:
        assert router.wait_ready()
        with router.write(session="w") as conn:
            conn.execute("SELECT 1")
        with router.read(session="w") as conn:
            assert not _on_replica(conn)
        with router.read(session="someone-else") as conn:
            assert _on_replica(conn)


def test_lagging_replica_is_ejected_then_readmitted(nodes, replay_control):
    threshold = 256 * 1024
    with ReplicaRouter(nodes["primary"], [nodes["replica"]], probe_interval_s=0.1, read_your_writes=None,
                       max_lag_bytes=threshold, max_lag_ms=None) as router, \
         psycopg.connect(nodes["primary"], autocommit=True) as primary:
        assert router.wait_ready()
        _pause(replay_control)

        def lagging():
            primary.execute("INSERT INTO noise (filler) SELECT repeat('y', 500) FROM generate_series(1, 500)")
            (state,) = router.replicas()
            return not state.healthy and state.lag_bytes > threshold and "bytes" in state.reason

        _poll(lagging, what="the replica's ejection for lag")
        for _ in range(20):
            with router.read() as conn:
                assert not _on_replica(conn)
        stats = router.stats()
        assert stats["replica_reads"] == 0 and stats["ejections"] == 1
        assert stats["fallback_reasons"]["no_healthy_replica"] == 20

        replay_control.execute("SELECT pg_wal_replay_resume()")
        _poll(lambda: router.replicas()[0].healthy, what="re-admission after the replay resumed")
        with router.read() as conn:
            assert _on_replica(conn)
        assert router.stats()["readmissions"] == 1


def test_stopped_replica_is_routed_around(nodes):
    spare = nodes["cluster"].add_replica()
    try:
        spare_dsn = spare.dsn(nodes["dbname"])
        with ReplicaRouter(nodes["primary"], [nodes["replica"], spare_dsn], probe_interval_s=0.1,
                           probe_timeout_s=1.0, read_your_writes=None) as router:
            assert router.wait_ready(), router.replicas()
            seen = set()
            for _ in range(6):
                with router.read() as conn:
                    seen.add(conn.execute("SELECT inet_server_port()").fetchone()[0])
            assert spare.port in seen  # round robin used both
            spare.stop()
            _poll(lambda: not router.replicas()[1].healthy, what="the stopped replica's ejection")
            ports, failures = [], 0
            for _ in range(50):
                try:
                    with router.read() as conn:
                        ports.append(conn.execute("SELECT inet_server_port()").fetchone()[0])
                except psycopg.Error:
                    failures += 1
            assert failures == 0
            assert spare.port not in ports and ports
            assert "probe failed" in router.replicas()[1].reason or "connection" in router.replicas()[1].reason
            assert router.stats()["ejections"] >= 1
    finally:
        spare.stop()


def test_sqlalchemy_routing_session(nodes):
    pytest.importorskip("sqlalchemy")
    from sqlalchemy import Integer, String, create_engine, event, select
    from sqlalchemy.orm import DeclarativeBase, mapped_column

    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = "items"
        id = mapped_column(Integer, primary_key=True, autoincrement=False)
        name = mapped_column(String(50), nullable=False)

    def engine(dsn: str):
        return create_engine(dsn.split("?")[0].replace("postgresql://", "postgresql+psycopg://"),
                             connect_args={"options": "-c synchronous_commit=on"})

    primary = engine(nodes["primary"])
    replica = engine(nodes["replica"])
    Base.metadata.create_all(primary)
    sent: list[tuple[str, str]] = []
    for name, eng in (("primary", primary), ("replica", replica)):
        event.listen(eng, "before_cursor_execute",
                     lambda conn, cur, stmt, params, ctx, many, name=name: sent.append((name, stmt.split()[0].upper())))
    try:
        with ReplicaRouter(nodes["primary"], [nodes["replica"]], probe_interval_s=0.1,
                           read_your_writes="lsn", wait_s=5.0) as router:
            assert router.wait_ready()
            Session = routing_sessionmaker(router, primary, {nodes["replica"]: replica})
            with Session() as session:
                session.add(Item(id=1, name="ada"))
                session.commit()
                assert ("primary", "INSERT") in sent
                sent.clear()
                names = session.scalars(select(Item.name)).all()  # read-your-writes: the replica has it
                assert names == ["ada"]
                assert sent == [("replica", "SELECT")]
                session.commit()
                sent.clear()
                locked = session.scalars(select(Item).where(Item.id == 1).with_for_update()).one()
                assert locked.name == "ada" and sent == [("primary", "SELECT")]
                session.rollback()
                sent.clear()
                item = session.get(Item, 1)
                item.name = "grace"
                session.flush()  # the flush: primary; reads later in this transaction stay there
                session.scalars(select(Item.name)).all()
                assert [s[0] for s in sent] == ["replica", "primary", "primary"]
                session.commit()
            with router.read() as conn:
                assert _on_replica(conn)
    finally:
        primary.dispose()
        replica.dispose()


def test_the_routers_own_traffic_is_tagged_and_named_the_applications_keeps_its_name(nodes):
    """Probes and LSN reads start with /* advisor */ and come from advisor_router_probe sessions, so workload
    readers leave them out; the application's own connections keep its application_name (they carry its queries)."""
    primary = psycopg.conninfo.make_conninfo(nodes["primary"], application_name="shop")
    with psycopg.connect(nodes["primary"], autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
    with ReplicaRouter(primary, [nodes["replica"]], read_your_writes="lsn", probe_interval_s=0.05) as router:
        assert router.wait_ready(timeout_s=10)
        with router.write(session="u") as conn:
            conn.execute("INSERT INTO kv VALUES (4242, 1) ON CONFLICT (id) DO UPDATE SET v = kv.v + 1")
            assert conn.execute("SELECT current_setting('application_name')").fetchone()[0] == "shop"
        with router.read(session="u") as conn:
            assert _on_replica(conn)
        with psycopg.connect(nodes["primary"], autocommit=True) as conn:
            probes = [r[0] for r in conn.execute(
                "SELECT DISTINCT application_name FROM pg_stat_activity WHERE query LIKE %s",
                ("%pg_current_wal_lsn()%",))]
    assert probes == ["advisor_router_probe"]
    with psycopg.connect(nodes["primary"], autocommit=True) as conn:
        router_sql = [q for (q,) in conn.execute(
            "SELECT query FROM pg_stat_statements WHERE query ~ 'pg_current_wal_(insert_)?lsn|pg_last_wal_replay_lsn'")]
    assert any("pg_current_wal_insert_lsn" in q for q in router_sql), router_sql  # the write's commit position
    assert router_sql and all(q.startswith("/* advisor */") for q in router_sql), router_sql


def test_an_idle_replica_that_receives_one_commit_is_not_an_hour_behind():
    """The replay timestamp's age is capped by how long the router has seen the primary ahead of the replica."""
    rules = HealthRules(max_lag_ms=1000, max_lag_bytes=None, probe_interval_s=0.5, probe_timeout_s=1.0)
    idle_for_an_hour = Probe(True, 6000, 5000, 6000, 1000, 3_600_000.0)
    node = Node("replica", pool=None, index=0)
    node.history.extend([(100.0, 5000), (100.5, 5000), (101.0, 6000)])  # the primary wrote once, at 101.0
    # seen ahead for 0.2 s, plus one probe interval (the resolution)
    assert rules.capped_lag_ms(node, idle_for_an_hour, now=101.2) == pytest.approx(700.0)
    assert rules.ejection(idle_for_an_hour, 700.0) is None
    never_seen_caught_up = Node("replica", pool=None, index=0)
    never_seen_caught_up.history.append((101.0, 6000))
    lag_ms = rules.capped_lag_ms(never_seen_caught_up, idle_for_an_hour, now=101.2)
    assert lag_ms == 3_600_000.0
    assert rules.ejection(idle_for_an_hour, lag_ms) == "lag 3,600,000 ms > max_lag_ms 1,000"


def test_the_psycopg_api_loads_without_sqlalchemy():
    """Only advisor.routing.sqlalchemy imports SQLAlchemy, on first use of RoutingSession or routing_sessionmaker."""
    code = ("import sys, advisor.routing as routing; assert 'sqlalchemy' not in sys.modules; "
            "routing.routing_sessionmaker; assert 'sqlalchemy' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
