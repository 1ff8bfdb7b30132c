"""Real-shaped logs for the parse benchmark: a real server writes them for real clients.

    .venv/bin/python benchmarks/real_logs.py --kind pgbench --size-mb 200 [--workdir bench-out/real]

Three drivers, each on a throwaway cluster of its own (EmbeddedCluster, loopback only), each
looping its workload until the stderr log reaches the size asked for:

- ``pgbench``: ``pgbench -i``, then rounds of the default script over the simple protocol and
  ``-M prepared``, four clients, and a share of rounds with ``-C`` (a connection per transaction).
- ``psycopg``: a psycopg 3 shop application: server-side binding (the extended protocol, with
  ``DETAIL: parameters``), ``prepare=True`` statements, auto_explain JSON plans for a sample of
  statements, sorts that spill under a small work_mem, lock waits and deadlocks between threads,
  and a thread that connects per request.
- ``orm``: a SQLAlchemy 2 ORM application over the pooled engine (``postgresql+psycopg://``):
  relationships loaded lazily (N+1), with selectinload (IN lists of every length) and joinedload,
  inserts, updates and deletes through the unit of work.

Every statement is logged (log_min_duration_statement = 0), with sessions, temp files and lock
waits. pg_stat_statements is reset the moment statement logging starts (after the cluster's own
start-up queries), so the log and the server count the same statements; at the end the server's
counters go to ``<log>.truth.json`` beside the log (and its csvlog and jsonlog siblings).
Logs are cached under a name holding the kind, the size and DRIVER_VERSION.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from itertools import cycle
from pathlib import Path

import psycopg
from sqlalchemy import ForeignKey, create_engine, delete, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, joinedload, mapped_column, relationship, selectinload
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from advisor.db.embedded import EmbeddedCluster  # noqa: E402

DRIVER_VERSION = 1
KINDS = ("pgbench", "psycopg", "orm")
MIB = 1024 * 1024

# Statement logging starts at 0 through ALTER SYSTEM once pg_stat_statements is reset (see write_log).
SERVER_SETTINGS = {
    "log_min_duration_statement": "-1",
    "log_connections": "on",
    "log_disconnections": "on",
    "log_temp_files": "0",
    "log_lock_waits": "on",
    "deadlock_timeout": "100ms",
    # The log shows top-level statements only; so must the server's count.
    "pg_stat_statements.track": "top",
    "pg_stat_statements.max": "10000",  # room for every IN-list length: no entry evicted
}
AUTO_EXPLAIN = {  # psycopg driver: a JSON plan with actual rows for about one statement in 20
    "auto_explain.log_min_duration": "0",
    "auto_explain.sample_rate": "0.05",
    "auto_explain.log_format": "json",
    "auto_explain.log_analyze": "on",
    "auto_explain.log_timing": "off",
}
# The driver's own connection: neither logged, explained nor counted.
UNSEEN = "-c log_min_duration_statement=-1 -c pg_stat_statements.track=none -c auto_explain.log_min_duration=-1"
COMPARISON = ("server = pg_stat_statements' calls: the top-level statements that completed while statement logging "
              "was on, utility statements included (track_utility); failed statements are in neither. "
              "PostgreSQL 15 counts a utility statement run as a prepared statement (pgbench -M prepared's BEGIN "
              "and END) once per backend: expected adds the executions it missed, from pgbench's own tallies.")


def log_name(kind: str, size_mb: float) -> str:
    return f"real-{kind}-{size_mb:g}mb-v{DRIVER_VERSION}.log"


def truth_path(log: Path) -> Path:
    return log.with_name(log.name + ".truth.json")


def cached_log(workdir: Path, kind: str, size_mb: float) -> tuple[Path, dict, bool]:
    """The log of ``kind`` at ``size_mb``: reused when a complete one is cached, else written now.

    Returns (path, truth, whether it was written now)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / log_name(kind, size_mb)
    try:
        truth = json.loads(truth_path(log).read_text())
        if log.stat().st_size == truth["bytes"]:
            return log, truth, False
    except (OSError, ValueError, KeyError):
        pass
    return log, write_log(kind, log, size_mb), True


def write_log(kind: str, log: Path, size_mb: float) -> dict:
    """Drive a fresh cluster with ``kind``'s workload until its stderr log holds ``size_mb`` MiB; copy the
    log (and its csvlog and jsonlog siblings) to ``log``; return the truth, also written beside it."""
    settings = {**SERVER_SETTINGS, **(AUTO_EXPLAIN if kind == "psycopg" else {})}
    started = time.perf_counter()
    cluster = EmbeddedCluster(settings).start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True, options=UNSEEN) as admin:
            admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            admin.execute("CREATE DATABASE app")
            before = database_counters(admin)
            admin.execute("SELECT pg_stat_statements_reset()")
            admin.execute("ALTER SYSTEM SET log_min_duration_statement = 0")
            admin.execute("SELECT pg_reload_conf()")
            time.sleep(1.0)  # the postmaster rereads the file before the first client connects
            client = DRIVERS[kind](cluster, cluster.dsn("app"), int(size_mb * MIB))
            time.sleep(1.5)  # backends that just ended have flushed their statistics
            server = server_counters(admin, before)
        cluster.halt()  # the collector writes its last lines and closes the files
        for source, suffix in ((cluster.stderr_log, ".log"), (cluster.csv_log, ".csv"), (cluster.json_log, ".json")):
            if source.exists():
                shutil.copyfile(source, log.with_suffix(suffix))
        prefix = cluster.log_line_prefix
    finally:
        cluster.stop()
    truth = {"kind": kind, "driver_version": DRIVER_VERSION, "size_mb": size_mb, "bytes": log.stat().st_size,
             "lines": count_lines(log), "log_line_prefix": prefix, "log_format": "stderr",
             "seconds": round(time.perf_counter() - started, 1), "server": server, "client": client,
             "expected_statements": server["pg_stat_statements_calls"] + client.get("uncounted_utility", 0),
             "comparison": COMPARISON}
    truth_path(log).write_text(json.dumps(truth, indent=1))
    return truth


def database_counters(conn: psycopg.Connection) -> tuple[int, int, int]:
    row = conn.execute("SELECT sum(temp_files), sum(temp_bytes), sum(deadlocks) FROM pg_stat_database").fetchone()
    return tuple(int(v or 0) for v in row)  # type: ignore[union-attr,return-value]


def server_counters(conn: psycopg.Connection, before: tuple[int, int, int]) -> dict:
    calls, dealloc = conn.execute(
        "SELECT (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements), dealloc FROM pg_stat_statements_info"
    ).fetchone()  # type: ignore[misc]
    after = database_counters(conn)
    return {"pg_stat_statements_calls": int(calls), "pg_stat_statements_dealloc": int(dealloc),
            "temp_files": after[0] - before[0], "temp_bytes": after[1] - before[1], "deadlocks": after[2] - before[2]}


def count_lines(path: Path) -> int:
    lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(16 * MIB):
            lines += chunk.count(b"\n")
    return lines


def until_size(cluster: EmbeddedCluster, target_bytes: int) -> Callable[[], bool]:
    """A test the drivers loop on: has the stderr log reached the size yet?"""
    return lambda: cluster.stderr_log.stat().st_size >= target_bytes


# --- (a) pgbench ------------------------------------------------------------------------------

PGBENCH_ROUNDS = (  # (protocol, connection per transaction, clients); about half a MB of log a round
    ("simple", False, 4), ("prepared", False, 4), ("simple", True, 2), ("prepared", False, 4), ("prepared", True, 2))
PGBENCH_TRANSACTIONS = 100  # per client and round
PGBENCH_STATEMENTS = 7  # the default (tpcb-like) script: BEGIN, 3 UPDATEs, SELECT, INSERT, END


def drive_pgbench(cluster: EmbeddedCluster, dsn: str, target_bytes: int) -> dict:
    pgbench = str(cluster.bin_dir / "pgbench")
    subprocess.run([pgbench, "-i", "-s", "4", "-q", dsn], check=True, capture_output=True, timeout=300)
    done = {"rounds": 0, "simple_transactions": 0, "prepared_transactions": 0, "connect_per_transaction": 0,
            "uncounted_utility": 0}
    full = until_size(cluster, target_bytes)
    for protocol, churn, clients in cycle(PGBENCH_ROUNDS):
        if full():
            break
        cmd = [pgbench, "-n", "-c", str(clients), "-j", "2", "-t", str(PGBENCH_TRANSACTIONS), "-M", protocol,
               *(["-C"] if churn else []), dsn]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600).stdout
        found = re.search(r"number of transactions actually processed: (\d+)", out)
        transactions = int(found.group(1)) if found else 0
        done["rounds"] += 1
        done[f"{protocol}_transactions"] += transactions
        done["connect_per_transaction"] += transactions if churn else 0
        if protocol == "prepared":  # BEGIN and END after each backend's first: not in pg_stat_statements
            backends = transactions if churn else clients
            done["uncounted_utility"] += 2 * (transactions - backends)
    done["statements_run"] = PGBENCH_STATEMENTS * (done["simple_transactions"] + done["prepared_transactions"])
    return done


# --- (b) a psycopg 3 application -----------------------------------------------------------------

SHOP_SCHEMA = (
    "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text, region text, "
    "created_at timestamptz DEFAULT now())",
    "CREATE TABLE products (id serial PRIMARY KEY, name text NOT NULL, price numeric(10,2), stock int)",
    "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers, status text, "
    "total numeric(12,2), created_at timestamptz DEFAULT now())",
    "CREATE TABLE order_items (id bigserial PRIMARY KEY, order_id bigint REFERENCES orders, "
    "product_id int REFERENCES products, qty int, price numeric(10,2))",
    "INSERT INTO customers (name, email, region) SELECT 'customer ' || g, 'c' || g || '@example.com', "
    "(ARRAY['north','south','east','west'])[1 + g % 4] FROM generate_series(1, 2000) g",
    "INSERT INTO products (name, price, stock) SELECT 'product ' || g, (g % 97) + 0.99, 1000 "
    "FROM generate_series(1, 500) g",
    "INSERT INTO orders (customer_id, status, total, created_at) SELECT 1 + g % 2000, "
    "(ARRAY['new','paid','shipped','cancelled'])[1 + g % 4], g % 500, now() - (g % 1000) * interval '1 hour' "
    "FROM generate_series(1, 20000) g",
    "INSERT INTO order_items (order_id, product_id, qty, price) SELECT 1 + g % 20000, 1 + g % 500, 1 + g % 5, "
    "(g % 97) + 0.99 FROM generate_series(1, 60000) g",
    "CREATE INDEX ON orders (customer_id)",
    "CREATE INDEX ON order_items (order_id)",
    "ANALYZE",
)
STATUSES = ("new", "paid", "shipped", "cancelled")


def shop_request(conn: psycopg.Connection, rng: random.Random) -> None:
    """One request of the shop's API: a few reads, sometimes an order written in a transaction."""
    customer = rng.randint(1, 2000)
    with conn.transaction():
        conn.execute("SELECT id, name, email FROM customers WHERE id = %s", (customer,)).fetchall()
        conn.execute("SELECT o.id, o.status, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id "
                     "WHERE o.customer_id = %s ORDER BY o.created_at DESC LIMIT 10", (customer,)).fetchall()
        ids = rng.sample(range(1, 501), rng.randint(1, 12))
        conn.execute(f"SELECT id, name, price FROM products WHERE id IN ({', '.join(['%s'] * len(ids))})",
                     ids).fetchall()
        conn.execute("SELECT stock FROM products WHERE id = %s", (ids[0],), prepare=True).fetchall()
    pick = rng.random()
    if pick < 0.3:
        place_order(conn, rng, customer)
    elif pick < 0.5:
        conn.execute("UPDATE orders SET status = %s WHERE id = %s", (rng.choice(STATUSES), rng.randint(1, 20000)))
    elif pick < 0.65:
        conn.execute("SELECT p.name, sum(i.qty) FROM order_items i JOIN products p ON p.id = i.product_id "
                     "WHERE i.order_id = ANY(%s) GROUP BY p.name", ([rng.randint(1, 20000) for _ in range(5)],)).fetchall()
    elif pick < 0.8:
        conn.execute("SELECT count(*) FROM orders WHERE status = %s AND created_at > now() - %s::interval",
                     (rng.choice(STATUSES), f"{rng.randint(1, 48)} hours"), prepare=True).fetchall()
    elif pick < 0.9:
        conn.execute("SELECT id, name FROM customers WHERE name ILIKE %s ORDER BY name LIMIT 20",
                     (f"customer {rng.randint(1, 99)}%",)).fetchall()
    else:
        conn.execute("DELETE FROM order_items WHERE order_id = %s AND qty = 0", (rng.randint(1, 20000),))


def place_order(conn: psycopg.Connection, rng: random.Random, customer: int) -> None:
    with conn.transaction():
        order = conn.execute("INSERT INTO orders (customer_id, status, total) VALUES (%s, 'new', %s) RETURNING id",
                             (customer, rng.randint(5, 500))).fetchone()[0]  # type: ignore[index]
        for _ in range(rng.randint(1, 4)):
            product = rng.randint(1, 500)
            conn.execute("INSERT INTO order_items (order_id, product_id, qty, price) VALUES (%s, %s, %s, %s)",
                         (order, product, rng.randint(1, 3), rng.randint(1, 99)))
            conn.execute("UPDATE products SET stock = stock - 1 WHERE id = %s", (product,))


def shop_events(dsn: str, rng: random.Random, round_: int) -> None:
    """What the shop's back office does now and then: a report whose sort spills, a hot row two clerks
    update at once (a lock wait), and every tenth time two transactions that deadlock."""
    with psycopg.connect(dsn, application_name="shop-reports") as conn:
        with conn.transaction():
            conn.execute("SET LOCAL work_mem = '64kB'")
            conn.execute("SELECT customer_id, total FROM orders WHERE total > %s ORDER BY total DESC, created_at",
                         (rng.randint(0, 50),)).fetchall()
    with psycopg.connect(dsn, application_name="shop-clerk") as holder, \
            psycopg.connect(dsn, autocommit=True, application_name="shop-clerk") as waiter:
        holder.execute("UPDATE products SET stock = stock + 10 WHERE id = %s", (1,))
        wait = threading.Thread(target=waiter.execute, args=("UPDATE products SET stock = stock - 1 WHERE id = %s", (1,)))
        wait.start()
        time.sleep(0.15)  # past deadlock_timeout: the wait is logged
        holder.commit()
        wait.join()
    if round_ % 10 == 1:
        deadlock(dsn)


def deadlock(dsn: str) -> None:
    with psycopg.connect(dsn, application_name="shop-batch") as one, \
            psycopg.connect(dsn, application_name="shop-batch") as two:
        one.execute("UPDATE products SET stock = stock WHERE id = %s", (2,))
        two.execute("UPDATE products SET stock = stock WHERE id = %s", (3,))

        def cross(conn: psycopg.Connection, row: int) -> None:
            try:
                conn.execute("UPDATE products SET stock = stock WHERE id = %s", (row,))
                conn.commit()
            except psycopg.errors.DeadlockDetected:
                conn.rollback()
        other = threading.Thread(target=cross, args=(two, 2))
        other.start()
        cross(one, 3)
        other.join()


def per_request(dsn: str, rng: random.Random) -> None:
    """A client without a pool: a connection for each request."""
    with psycopg.connect(dsn, autocommit=True, application_name="shop-cron") as conn:
        conn.execute("SELECT id, status FROM orders WHERE id = %s", (rng.randint(1, 20000),)).fetchall()


def drive_psycopg(cluster: EmbeddedCluster, dsn: str, target_bytes: int) -> dict:
    with psycopg.connect(dsn, autocommit=True, application_name="shop-setup") as conn:
        for statement in SHOP_SCHEMA:
            conn.execute(statement)
    counts = {"requests": 0, "event_rounds": 0, "connections_per_request": 0}
    lock = threading.Lock()

    def api(seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(dsn, autocommit=True, application_name="shop-api") as conn:
            while not stop.is_set():
                shop_request(conn, rng)
                with lock:
                    counts["requests"] += 1

    def back_office() -> None:
        rng = random.Random(99)
        while not stop.is_set():
            counts["event_rounds"] += 1
            shop_events(dsn, rng, counts["event_rounds"])
            for _ in range(5):
                per_request(dsn, rng)
                counts["connections_per_request"] += 1

    stop = threading.Event()
    run_until(cluster, target_bytes, stop, [lambda s=s: api(s) for s in range(3)] + [back_office])
    return counts


def run_until(cluster: EmbeddedCluster, target_bytes: int, stop: threading.Event, workers: list[Callable]) -> None:
    """Run the workers in threads until the log is full; a worker's failure fails the run."""
    failures: list[BaseException] = []

    def guarded(work: Callable) -> None:
        try:
            work()
        except BaseException as err:
            failures.append(err)
            stop.set()

    threads = [threading.Thread(target=guarded, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    full = until_size(cluster, target_bytes)
    while not stop.is_set() and not full():
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]


# --- (c) a SQLAlchemy 2 ORM application ----------------------------------------------------------

class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    country: Mapped[str]
    books: Mapped[list[Book]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"), index=True)
    title: Mapped[str]
    year: Mapped[int]
    author: Mapped[Author] = relationship(back_populates="books")
    reviews: Mapped[list[Review]] = relationship(back_populates="book", cascade="all, delete-orphan")


class Review(Base):
    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(primary_key=True)
    book_id: Mapped[int] = mapped_column(ForeignKey("books.id"), index=True)
    stars: Mapped[int]
    body: Mapped[str]
    book: Mapped[Book] = relationship(back_populates="reviews")


COUNTRIES = ("fr", "de", "it", "es", "pt", "nl")
AUTHORS, BOOKS = 300, 3000


def library_setup(session: Session) -> None:
    rng = random.Random(7)
    authors = [Author(name=f"author {i}", country=rng.choice(COUNTRIES)) for i in range(AUTHORS)]
    session.add_all(authors)
    session.flush()
    session.add_all(Book(author=rng.choice(authors), title=f"book {i}", year=rng.randint(1900, 2025),
                         reviews=[Review(stars=rng.randint(1, 5), body="fine") for _ in range(rng.randint(0, 3))])
                    for i in range(BOOKS))
    session.commit()


def library_request(session: Session, rng: random.Random) -> None:
    """One page of the library's site, read and written through the ORM."""
    pick = rng.random()
    if pick < 0.2:  # lazy loads: a query per author (N+1)
        for author in session.scalars(select(Author).where(Author.country == rng.choice(COUNTRIES)).limit(rng.randint(3, 8))):
            _ = [b.title for b in author.books]
    elif pick < 0.4:  # selectinload: the books' IN list as long as the page
        ids = rng.sample(range(1, BOOKS + 1), rng.randint(1, 25))
        for book in session.scalars(select(Book).where(Book.id.in_(ids)).options(selectinload(Book.reviews))):
            _ = len(book.reviews)
    elif pick < 0.55:
        session.scalars(select(Book).options(joinedload(Book.author)).where(Book.year > rng.randint(1900, 2020))
                        .order_by(Book.year.desc(), Book.id).limit(20)).all()
    elif pick < 0.65:
        session.execute(select(Author.country, func.count(Book.id)).join(Author.books)
                        .where(Book.year.between(1950, rng.randint(1960, 2025))).group_by(Author.country)).all()
    elif pick < 0.8:
        reviewed = session.get(Book, rng.randint(1, BOOKS))
        if reviewed is not None:
            reviewed.reviews.append(Review(stars=rng.randint(1, 5), body="a review " * rng.randint(1, 4)))
    elif pick < 0.9:
        renamed = session.get(Author, rng.randint(1, AUTHORS))
        if renamed is not None:
            renamed.name = f"author {renamed.id} ({rng.randint(1, 9)})"
    else:
        session.execute(delete(Review).where(Review.book_id == rng.randint(1, BOOKS), Review.stars == 1))
    session.commit()


def drive_orm(cluster: EmbeddedCluster, dsn: str, target_bytes: int) -> dict:
    url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    pooled = create_engine(url, pool_size=4, max_overflow=2, connect_args={"application_name": "library-web"})
    unpooled = create_engine(url, poolclass=NullPool, connect_args={"application_name": "library-jobs"})
    Base.metadata.create_all(pooled)
    with Session(pooled) as session:
        library_setup(session)
    counts = {"requests": 0, "unpooled_requests": 0}
    lock = threading.Lock()

    def web(engine, key: str, seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            with Session(engine) as session:
                library_request(session, rng)
            with lock:
                counts[key] += 1

    stop = threading.Event()
    try:
        run_until(cluster, target_bytes, stop,
                  [lambda s=s: web(pooled, "requests", s) for s in range(3)] + [lambda: web(unpooled, "unpooled_requests", 9)])
    finally:
        pooled.dispose()
        unpooled.dispose()
    return counts


DRIVERS: dict[str, Callable[[EmbeddedCluster, str, int], dict]] = {
    "pgbench": drive_pgbench, "psycopg": drive_psycopg, "orm": drive_orm}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=(*KINDS, "all"), default="all")
    ap.add_argument("--size-mb", type=float, default=200, help="stderr log size in MiB (default 200)")
    ap.add_argument("--workdir", type=Path, default=REPO / "bench-out" / "real")
    args = ap.parse_args(argv)
    for kind in KINDS if args.kind == "all" else (args.kind,):
        log, truth, written = cached_log(args.workdir, kind, args.size_mb)
        how = f"written in {truth['seconds']} s" if written else "cached"
        print(f"{log}: {truth['bytes'] / MIB:.1f} MiB, {truth['lines']} lines, server counted "
              f"{truth['server']['pg_stat_statements_calls']} statements (expected in the log: "
              f"{truth['expected_statements']}); {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
