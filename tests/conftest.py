"""The test harness: a real PostgreSQL for every test module, and the shared log corpus.

Server: ``ADVISOR_TEST_DSN`` if set, else a throwaway local cluster (see
advisor/db/embedded.py), else a Docker container where an engine answers.
With ``ADVISOR_REQUIRE_PG=1`` (CI) a missing server fails the run instead of
skipping the tests that need one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import psycopg
import pytest
from helpers import no_server
from psycopg import conninfo, sql

from advisor.db.embedded import (
    ContainerCluster,
    EmbeddedCluster,
    EmbeddedError,
    PostgresNotFoundError,
    docker_available,
    find_binaries,
)

PROJECT_ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
CORPUS_DIR = PROJECT_ROOT.parent / "shared" / "corpus" / "pgbadger"


# --- servers ------------------------------------------------------------------


class ExternalServer:
    """A server we did not start (ADVISOR_TEST_DSN): DSNs and databases only."""

    external = True

    def __init__(self, dsn: str) -> None:
        self._base = dsn

    def dsn(self, dbname: str = "postgres") -> str:
        params = conninfo.conninfo_to_dict(self._base)
        params["dbname"] = dbname
        return conninfo.make_conninfo(**params)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            # A previous run may have left it behind; FORCE (PG 13+) drops its sessions too.
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    @property
    def has_hypopg(self) -> bool:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            return bool(conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'hypopg'").fetchone())

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        pass




def _start_server():
    if dsn := os.environ.get("ADVISOR_TEST_DSN"):
        return ExternalServer(dsn)
    try:
        return EmbeddedCluster().start()
    except EmbeddedError as err:
        if not docker_available():
            no_server(f"{err.cause} — {err.fix}")
        try:
            return ContainerCluster().start()
        except Exception as docker_err:  # testcontainers raises its own types (DockerException, …)
            no_server(f"{err.cause}; Docker: {docker_err}")


@pytest.fixture(scope="session")
def pg_cluster():
    """The session's server: an object with .dsn(dbname), .create_database(name), .has_hypopg."""
    server = _start_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def embedded_cluster(pg_cluster):
    """The session's server when we started it ourselves: log files and replicas are available."""
    if not isinstance(pg_cluster, EmbeddedCluster):
        pytest.skip("needs a local throwaway cluster (server log files, replicas); "
                    "ADVISOR_TEST_DSN or Docker gives only a DSN")
    return pg_cluster


def module_dbname(module_name: str) -> str:
    """tests.test_stat_statements -> advisor_test_stat_statements (a valid, short identifier)."""
    tail = module_name.rsplit(".", 1)[-1]
    return ("advisor_" + re.sub(r"[^a-z0-9_]", "_", tail.lower()))[:63]


@pytest.fixture(scope="module")
def pg_dsn(pg_cluster, request):
    """A fresh database for this test module, with pg_stat_statements (and hypopg when present)."""
    name = module_dbname(request.module.__name__)
    dsn = pg_cluster.create_database(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if pg_cluster.has_hypopg:
            conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
    yield dsn
    if isinstance(pg_cluster, ExternalServer):  # a throwaway cluster vanishes whole; a shared server must not fill up
        pg_cluster.drop_database(name)


@pytest.fixture(scope="module")
def schema_conn(pg_dsn, request):
    """A connection to the module's database after the module's SCHEMA ran, one statement at a time
    (VACUUM refuses a transaction)."""
    with psycopg.connect(pg_dsn, autocommit=True) as connection:
        for statement in filter(str.strip, request.module.SCHEMA.split(";")):
            connection.execute(statement)
        yield connection


@pytest.fixture(scope="session")
def pg_binaries() -> Path:
    """Local server binaries, for tests that start clusters of their own (works beside ADVISOR_TEST_DSN)."""
    try:
        return find_binaries()
    except PostgresNotFoundError as err:
        if os.environ.get("ADVISOR_TEST_DSN"):  # the server under test is elsewhere: nothing is missing
            pytest.skip(f"{err.cause} — {err.fix}")
        no_server(f"{err.cause} — {err.fix}")


# --- corpus ---------------------------------------------------------------------


def corpus_path(name: str = "") -> Path:
    """A file (or the folder) of ../shared/corpus/pgbadger; skips the test when absent."""
    path = CORPUS_DIR / name if name else CORPUS_DIR
    if not path.exists():
        pytest.skip(f"corpus not found at {path} (it sits beside the clone in CI; see ../shared/corpus/README.md)")
    return path


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    return corpus_path()
