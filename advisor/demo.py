"""`advisor demo`: the whole pipeline on a throwaway server, for someone with no database at hand.

It starts the embedded cluster, loads the bundled semiconductor fixture,
replays an application's workload with statement logging on (N+1 lookups, a
missing composite index, full scans, a deep OFFSET, repeated identical
reads, row-at-a-time inserts), then reads the server's log and
pg_stat_statements back as any user's would be read.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from advisor.db.connect import TAG
from advisor.db.embedded import EmbeddedCluster
from advisor.db.rows import one_row
from advisor.errors import AdvisorError
from advisor.progress import Step

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
DEMO_APP = "demo-app"


@dataclass(frozen=True, slots=True)
class Scale:
    lots: int = 400  # 25 wafers each
    dies: int = 25  # per wafer, four tests each: lots × 25 × dies × 4 result rows
    requests: int = 40  # page views the replayed application serves

    @property
    def result_rows(self) -> int:
        return self.lots * 25 * self.dies * 4


def load_fixture(dsn: str, scale: Scale) -> None:
    """The schema and deterministic data, sized by ``scale``."""
    if not FIXTURES.is_dir():
        raise AdvisorError(f"demo fixtures not found at {FIXTURES}", "run the demo from a clone of the repository")
    data = (FIXTURES / "data.sql").read_text().replace(":lots", str(scale.lots)).replace(":dies", str(scale.dies))
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Settle the tables as a database in service is: VACUUM marks the pages all-visible, which
        # it cannot do before the load's commit record is flushed (the embedded cluster commits
        # asynchronously); and the load's counters reach the statistics views before ANALYZE
        # resets them (else its rows would count as changed since, a write rate that is not there).
        conn.execute("SET synchronous_commit = on")
        conn.execute((FIXTURES / "schema.sql").read_text())
        conn.execute(data)
        if conn.info.server_version >= 150000:
            conn.execute("SELECT pg_stat_force_next_flush()")
            conn.execute("SELECT 1")
        conn.execute("VACUUM ANALYZE")
        vacuum_until_all_visible(conn, "products", "lots", "wafers", "test_results", "audit_log")


def vacuum_until_all_visible(conn: psycopg.Connection, *tables: str, tries: int = 50) -> bool:
    """VACUUM each table until the visibility map marks every page (index-only scans are priced by
    it); False if some table is still behind after ``tries`` rounds. A page stays unmarked while its
    rows' commit is not flushed to the WAL (asynchronous commit) or an older snapshot is open (an
    ANALYZE elsewhere, autovacuum's too), so the rounds are a fifth of a second apart."""
    for attempt in range(tries):
        behind = [t for t in tables if one_row(conn.execute(
            "SELECT relallvisible < relpages FROM pg_class WHERE oid = %s::regclass", (t,)))[0]]
        if not behind:
            return True
        time.sleep(0.2 if attempt else 0)
        conn.execute(f"VACUUM {', '.join(behind)}")
    return False


def replay(dsn: str, scale: Scale, seed: int = 7) -> int:
    """Serve ``scale.requests`` page views the way a lazy ORM app would; returns statements sent."""
    rng = random.Random(seed)
    with psycopg.connect(dsn, autocommit=True, application_name=DEMO_APP) as conn:
        conn.execute("SET log_min_duration_statement = 0")
        sent = 1
        for request in range(scale.requests):
            page = PAGES[request % len(PAGES)]
            with conn.transaction():  # one transaction per request, as web frameworks do
                sent += page(conn, rng, scale) + 2  # with BEGIN and COMMIT
    return sent


def _lot_overview(conn: psycopg.Connection, rng: random.Random, scale: Scale) -> int:
    """N+1: the active lots, then each lot's wafers one query at a time (and wafers.lot_id has no index)."""
    lots = conn.execute("SELECT id, lot_code FROM lots WHERE status = 'active' ORDER BY started_at DESC LIMIT 12").fetchall()
    for lot_id, _ in lots:
        conn.execute("SELECT id, wafer_no, yield_pct FROM wafers WHERE lot_id = %s", (lot_id,)).fetchall()
    return 1 + len(lots)


def _die_detail(conn: psycopg.Connection, rng: random.Random, scale: Scale) -> int:
    """A missing composite index: results by wafer and die position, sorted by test."""
    wafers = scale.lots * 25
    for _ in range(3):  # three dies to compare: fewer than an N+1 run
        conn.execute(
            "SELECT test_name, value, passed FROM test_results WHERE wafer_id = %s AND die_x = %s AND die_y = %s ORDER BY test_name",
            (rng.randint(1, wafers), rng.randint(0, 9), rng.randint(0, max(0, (scale.dies - 1) // 10))),
        ).fetchall()
    return 3


def _failure_report(conn: psycopg.Connection, rng: random.Random, scale: Scale) -> int:
    """A full scan of the biggest table that keeps a small share of its rows."""
    conn.execute(
        "SELECT wafer_id, count(*) FROM test_results WHERE NOT passed AND test_name = %s GROUP BY wafer_id ORDER BY 2 DESC LIMIT 10",
        (rng.choice(["leakage", "vth"]),),
    ).fetchall()
    return 1


def _lot_archive(conn: psycopg.Connection, rng: random.Random, scale: Scale) -> int:
    """Deep pagination: OFFSET makes the server read and throw away every earlier row."""
    offset = rng.randrange(scale.lots // 2, scale.lots, 50)
    conn.execute("SELECT id, lot_code, status FROM lots ORDER BY started_at LIMIT 50 OFFSET %s", (offset,)).fetchall()
    return 1


def _catalog(conn: psycopg.Connection, rng: random.Random, scale: Scale) -> int:
    """The same product read again and again with the same key: a cache candidate."""
    for _ in range(6):
        conn.execute("SELECT id, name, family FROM products WHERE id = %s", (3,)).fetchall()
    return 6


def _audit(conn: psycopg.Connection, rng: random.Random, scale: Scale) -> int:
    """Row-at-a-time inserts: N+1 writes."""
    lots = rng.sample(range(1, scale.lots + 1), min(12, scale.lots))  # a small --scale has fewer lots than that
    for lot_id in lots:
        conn.execute("INSERT INTO audit_log (lot_id, action) VALUES (%s, %s)", (lot_id, "viewed"))
    return len(lots)


PAGES: tuple[Callable[[psycopg.Connection, random.Random, Scale], int], ...] = (
    _lot_overview, _die_detail, _failure_report, _lot_archive, _catalog, _audit,
)  # fmt: skip


@dataclass(slots=True)
class DemoRun:
    cluster: EmbeddedCluster
    dsn: str
    statements_sent: int


def run(scale: Scale, step: Step = lambda _: None) -> DemoRun:
    """Start, load, replay, read back. The caller stops ``run.cluster`` (or keeps it)."""
    step("starting a throwaway PostgreSQL")
    cluster = EmbeddedCluster().start()
    try:
        dsn = cluster.create_database("advisor_demo")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            if cluster.has_hypopg:
                conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
        step(f"loading the semiconductor fixture ({scale.result_rows:,} test results)")
        load_fixture(dsn, scale)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(TAG + "SELECT pg_stat_statements_reset()")
        step(f"replaying {scale.requests} application requests with statement logging on")
        sent = replay(dsn, scale)
        _wait_for_log(cluster, sent)
        return DemoRun(cluster, dsn, sent)
    except BaseException:
        cluster.stop()
        raise


def _wait_for_log(cluster: EmbeddedCluster, sent: int, timeout: float = 10.0) -> None:
    """The logging collector writes asynchronously; wait until the replay's lines are there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = cluster.stderr_log.read_text(errors="replace") if cluster.stderr_log.exists() else ""
        if text.count(f"app={DEMO_APP} LOG:  duration:") >= sent:
            return
        time.sleep(0.1)
