"""Helpers shared by test modules (pytest puts tests/ on sys.path, so `from helpers import advisor`)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import psycopg
import pytest

from advisor.db.embedded import EmbeddedCluster, EmbeddedError

ADVISOR = (sys.executable, "-m", "advisor.cli")  # the installed entry point, in this interpreter

# What a server logs for the advisor's server events: every statement, temp files, lock waits (a deadlock
# is seen after 100 ms), sessions. Tests that start a cluster of their own add what else they need.
EVENT_LOGGING = {
    "log_min_duration_statement": "0",
    "log_temp_files": "0",
    "log_lock_waits": "on",
    "deadlock_timeout": "100ms",
    "log_connections": "on",
    "log_disconnections": "on",
}


def advisor(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`advisor ARGS` as a user runs it, in a subprocess; stdout and stderr as text, ``env`` added to ours."""
    return subprocess.run([*ADVISOR, *args], input=stdin, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@contextmanager
def session_names(admin_dsn: str, dbname: str) -> Iterator[set[str]]:
    """The application_name of every client backend of ``dbname`` while the block runs, sampled every 10 ms
    from another connection (a backend's state is null while it starts, before its name is reported)."""
    names: set[str] = set()
    stop = threading.Event()

    def sample() -> None:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            while not stop.is_set():
                names.update(r[0] for r in conn.execute(
                    "SELECT application_name FROM pg_stat_activity WHERE datname = %s "
                    "AND backend_type = 'client backend' AND state IS NOT NULL", (dbname,)))
                time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield names
    finally:
        stop.set()
        sampler.join()


def no_server(reason: str) -> NoReturn:
    """Skip a test that needs PostgreSQL when none can start; with ADVISOR_REQUIRE_PG=1 (CI), fail it."""
    if os.environ.get("ADVISOR_REQUIRE_PG") == "1":
        pytest.fail(f"no PostgreSQL server for the tests (ADVISOR_REQUIRE_PG=1): {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL server: {reason}")


def started_cluster(settings: dict[str, str]) -> EmbeddedCluster:
    """A throwaway cluster of the module's own with these settings (its logs are what the module reads)."""
    try:
        return EmbeddedCluster(settings=settings).start()
    except EmbeddedError as err:
        no_server(str(err))

