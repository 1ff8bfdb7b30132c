"""What one request does in each mode of `advisor bench pool` (a new connection, a psycopg_pool, a SQLAlchemy
engine, through PgBouncer or not), and the time every new connection took to open."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import psycopg

from advisor.bench.load import TaggedCursor, bench_connect, latency_quantiles

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool
    from sqlalchemy import Engine


class ConnectTimes:
    """Seconds each new connection took to open; list.append is atomic under the GIL."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def connect(self, conninfo: str, **kwargs) -> psycopg.Connection:
        t0 = time.perf_counter()
        conn = bench_connect(conninfo, **kwargs)
        self.times.append(time.perf_counter() - t0)
        return conn

    def connection_class(self) -> type[psycopg.Connection]:
        times = self.times

        class TimedConnection(psycopg.Connection):
            @classmethod
            def connect(cls, conninfo: str = "", **kwargs):
                t0 = time.perf_counter()
                conn = super().connect(conninfo, **kwargs)
                times.append(time.perf_counter() - t0)
                return conn

        return TimedConnection


def connect_stats(times: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """Mean, median and p95, in ms, of the connection times (seconds)."""
    if not times:
        return None, None, None
    p50, p95, _, _ = latency_quantiles(times)
    return statistics.fmean(t * 1000.0 for t in times), p50, p95


class Client:
    """What a request does in one mode; open() before the warm-up, close() after the window."""

    def __init__(self, mode: str, conninfo: str, concurrency: int, sql: str, timeout_s: float,
                 connects: ConnectTimes, pool_size: int | None = None) -> None:
        self.mode, self.conninfo, self.concurrency, self.sql = mode, conninfo, concurrency, sql
        self.timeout_s, self.connects = timeout_s, connects
        self.pool_size = pool_size or concurrency  # a client pool's size (threads wait for a connection beyond it)
        self.pool: ConnectionPool | None = None
        self.engine: Engine | None = None

    def open(self) -> None:
        if self.mode in ("psycopg_pool", "psycopg_pool_checked", "pgbouncer_pool", "pgbouncer_pool_prepared"):
            self._open_pool()
        elif self.mode in ("sqlalchemy_queuepool", "sqlalchemy_nullpool"):
            self._open_engine()

    def _open_pool(self) -> None:
        """A psycopg_pool of ``pool_size`` connections, every one open before the warm-up (close() closes it
        also when that fails)."""
        from psycopg_pool import ConnectionPool

        c, mode = self.pool_size, self.mode
        # Through PgBouncer's transaction pooling, psycopg's prepared statements (after prepare_threshold,
        # 5, runs of a query) meet another server connection: pgbouncer_pool turns them off, as the advice
        # says; pgbouncer_pool_prepared keeps psycopg's default, as an application that was not told would.
        kwargs = {"autocommit": True, "cursor_factory": TaggedCursor}
        if mode == "pgbouncer_pool":
            kwargs["prepare_threshold"] = None
        self.pool = pool = ConnectionPool(
            self.conninfo, min_size=c, max_size=c, open=True, name=f"advisor-bench-{mode}",
            connection_class=self.connects.connection_class(), kwargs=kwargs,
            check=ConnectionPool.check_connection if mode == "psycopg_pool_checked" else None,
            timeout=self.timeout_s, reconnect_timeout=self.timeout_s,
        )  # fmt: skip
        pool.wait(timeout=max(30.0, self.timeout_s))  # every connection open before the warm-up

    def _open_engine(self) -> None:
        """A SQLAlchemy engine on a QueuePool (filled now, not in the window) or a NullPool (close() disposes of
        it also when that fails)."""
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool, QueuePool

        def creator() -> psycopg.Connection:
            return self.connects.connect(self.conninfo)

        # No hstore lookup: psycopg runs it in a transaction of its own (an untagged BEGIN/COMMIT).
        options = {"creator": creator, "isolation_level": "AUTOCOMMIT", "use_native_hstore": False}
        if self.mode == "sqlalchemy_queuepool":
            c = self.pool_size
            self.engine = engine = create_engine("postgresql+psycopg://", poolclass=QueuePool, pool_size=c, max_overflow=0,
                                   pool_timeout=self.timeout_s, **options)
            held = [engine.connect() for _ in range(c)]  # fill the pool now, not in the window
            for conn in held:
                conn.close()
        else:
            self.engine = engine = create_engine("postgresql+psycopg://", poolclass=NullPool, **options)
            engine.connect().close()  # the dialect's one-time initialisation

    def request(self, params: tuple | None) -> None:
        if self.pool is not None:
            with self.pool.connection() as conn:
                conn.execute(self.sql, params).fetchall()
        elif self.engine is not None:
            with self.engine.connect() as connection:
                if params is None:  # SQLAlchemy still hands psycopg an empty tuple: '%' must be doubled
                    connection.exec_driver_sql(self.sql.replace("%", "%%")).fetchall()
                else:
                    connection.exec_driver_sql(self.sql, params).fetchall()
        else:  # new_connection, pgbouncer: one query per connection, so psycopg never prepares it
            conn = self.connects.connect(self.conninfo)
            try:
                conn.execute(self.sql, params).fetchall()
            finally:
                conn.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close(timeout=5.0)
        if self.engine is not None:
            self.engine.dispose()
