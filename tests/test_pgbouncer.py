"""`advisor bench pool --local-pgbouncer` against a real PgBouncer in front of the harness server.

One in-process run (pool size 3, 6 clients, a fixed number of requests per arm and no warm-up,
so that pg_stat_statements must count exactly the requests the arms report) while this module
samples pg_stat_activity itself; then a short CLI run for the text output.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
from helpers import advisor
from psycopg import conninfo

from advisor.bench.pgbouncer import PREPARED_SINCE, LocalPgBouncer, PgBouncerError, find_pgbouncer, pgbouncer_version
from advisor.bench.pool import PoolBenchConfig, run_pool_bench
from advisor.db.embedded import EmbeddedCluster

PASSWORD = "s3cret-bouncer-pw"
POOL_SIZE = 3
CLIENTS = 6
REQUESTS = 240  # per arm: enough runs per client connection for psycopg to prepare (after 5)
BOUNCER_MODES = ("pgbouncer", "pgbouncer_pool", "pgbouncer_pool_prepared")
POOL_MODES = ("transaction", "session")
_MONITOR = "%pg_stat_activity%"  # the bench's own monitor; its last query reads pg_stat_activity


@pytest.fixture(scope="module")
def pgbouncer():
    """The pgbouncer binary; a missing one skips, or fails where ADVISOR_REQUIRE_PG=1 (CI)."""
    try:
        return find_pgbouncer()
    except PgBouncerError as err:
        if os.environ.get("ADVISOR_REQUIRE_PG") == "1":
            pytest.fail(f"{err.cause} (ADVISOR_REQUIRE_PG=1): {err.fix}", pytrace=False)
        pytest.skip(f"{err.cause}: {err.fix}")


@pytest.fixture(scope="module")
def dsn(pg_cluster, pg_dsn) -> str:
    """pg_dsn with a password (our trust-auth cluster ignores it): the auth_file carries it, nothing prints it."""
    if not isinstance(pg_cluster, EmbeddedCluster):
        return pg_dsn
    return conninfo.make_conninfo(pg_dsn, password=PASSWORD)


def _admin(pg_cluster) -> psycopg.Connection:
    return psycopg.connect(pg_cluster.dsn(), autocommit=True)


class _Sampler:
    """Backends of the database per arm, read from pg_stat_activity by this test (not by the bench)."""

    def __init__(self, pg_cluster, dbname: str) -> None:
        self.pg_cluster, self.dbname = pg_cluster, dbname
        self.arm = ""
        self.peak: dict[str, int] = {}
        self.names: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def step(self, text: str) -> None:
        self.arm = text

    def _run(self) -> None:
        with _admin(self.pg_cluster) as conn:
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT application_name, state FROM pg_stat_activity WHERE datname = %s "
                    "AND backend_type = 'client backend' AND query NOT LIKE %s", (self.dbname, _MONITOR)).fetchall()
                arm = self.arm
                self.peak[arm] = max(self.peak.get(arm, 0), len(rows))
                self.names.update(name for name, state in rows if state is not None)  # null while starting
                time.sleep(0.005)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def bench(pgbouncer, pg_cluster, dsn):
    """One run of every PgBouncer arm in both modes, beside a direct new connection per request."""
    dbname = conninfo.conninfo_to_dict(dsn)["dbname"]
    with _admin(pg_cluster) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")  # to read the module's database from here
        oid = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (dbname,)).fetchone()[0]
        conn.execute("SELECT pg_stat_statements_reset(0, %s::oid, 0)", (oid,))
    with _Sampler(pg_cluster, dbname) as sampler:
        result = run_pool_bench(PoolBenchConfig(
            dsn=dsn, concurrency=(CLIENTS,), requests=REQUESTS, warmup_s=0, transports=("tcp",),
            modes=("new_connection", *BOUNCER_MODES), local_pgbouncer=True, pgbouncer_pool_size=POOL_SIZE),
            step=sampler.step)
    with _admin(pg_cluster) as conn:
        statements = conn.execute(
            "SELECT query, calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s",
            (dbname,)).fetchall()
    return result, sampler, statements


def _arms(result, mode=None, pool_mode=None):
    return [a for a in result.arms if (mode is None or a.mode == mode)
            and (pool_mode is None or a.transport == f"pgbouncer-{pool_mode}")]


def test_every_arm_runs_without_errors_in_both_modes(bench):
    result, _, _ = bench
    assert {(a.mode, a.transport) for a in result.arms} == {("new_connection", "tcp")} | {
        (m, f"pgbouncer-{p}") for m in BOUNCER_MODES for p in POOL_MODES}
    for arm in result.arms:
        if arm.mode == "pgbouncer_pool_prepared" and arm.transport == "pgbouncer-transaction":
            continue  # the failure this module reproduces on purpose, below
        assert (arm.requests, arm.errors, arm.timeouts) == (REQUESTS, 0, 0), arm
    assert result.settings["pgbouncer"]["pool_size"] == POOL_SIZE


def test_the_server_counted_exactly_the_requests_and_only_tagged_statements(bench):
    """pg_stat_statements saw every successful request once (prepared or not), and nothing untagged."""
    result, _, statements = bench
    schema = result.workload["schema"]
    lookups = sum(calls for query, calls in statements if f"{schema}.accounts WHERE id" in query)
    assert lookups == sum(a.requests for a in result.arms)
    assert [q for q, _ in statements if not q.startswith("/* advisor */")] == []  # PgBouncer's own too


def test_backends_stay_within_the_pool_size(bench):
    result, sampler, _ = bench
    for arm in result.arms:
        seen = sampler.peak[f"{arm.mode} over {arm.transport}, concurrency {CLIENTS}"]
        if arm.mode == "new_connection":  # straight to the server: a backend per client
            assert seen > POOL_SIZE, (arm, seen)
            continue
        # The prepared arm fails by design on PgBouncer < 1.21 (DuplicatePreparedStatement): PgBouncer
        # replaces a server connection after such an error, and a sample can catch the old backend still
        # exiting beside its replacement (seen once in CI under load).
        most = POOL_SIZE + 1 if arm.mode == "pgbouncer_pool_prepared" and arm.errors else POOL_SIZE
        assert 1 <= arm.peak_backends <= most, arm
        assert 1 <= seen <= most, (arm, seen)
    assert sampler.names and all(name.startswith("advisor") for name in sampler.names), sampler.names
    served = {s["pool_mode"]: s for s in result.verdict["pgbouncer"]["served"]}
    assert set(served) == set(POOL_MODES)
    for _pool_mode, s in served.items():
        assert s["pool_size"] == POOL_SIZE and s["peak_backends"] <= POOL_SIZE
        assert f"{CLIENTS} clients served by {s['peak_backends']} backends" in " ".join(result.verdict["summary"])


def test_a_new_connection_through_pgbouncer_opens_faster_than_one_to_the_server(bench):
    """Medians of the same run: PgBouncer answers the login itself; the server forks a backend."""
    result, _, _ = bench
    direct = _arms(result, "new_connection")[0]
    assert direct.connections_opened == REQUESTS
    for pool_mode in POOL_MODES:
        through = _arms(result, "pgbouncer", pool_mode)[0]
        assert through.connections_opened == REQUESTS
        assert through.connect_p50_ms < direct.connect_p50_ms, (pool_mode, through, direct)


def test_prepared_statements_fail_through_transaction_pooling_and_the_fix_passes(bench, pgbouncer):
    result, _, _ = bench
    version = pgbouncer_version(pgbouncer)
    tried = _arms(result, "pgbouncer_pool_prepared", "transaction")[0]
    fixed = _arms(result, "pgbouncer_pool", "transaction")[0]
    prepared = result.verdict["pgbouncer"]["prepared_statements"]
    assert prepared["pgbouncer_version"] == ".".join(map(str, version))
    assert (fixed.errors, fixed.requests) == (0, REQUESTS)
    assert prepared["prepare_threshold_none"]["errors"] == 0
    if version >= PREPARED_SINCE:  # max_prepared_statements is set: psycopg's default works
        assert tried.errors == 0 and prepared["max_prepared_statements"]
        return
    assert tried.errors > 0 and tried.requests + tried.errors == REQUESTS
    assert re.search(r'prepared statement "_pg3_\d+" (does not exist|already exists)', tried.note), tried.note
    assert prepared["default_prepare_threshold"]["errors"] == tried.errors
    words = " ".join(result.verdict["summary"])
    assert "prepare_threshold=None" in words and "max_prepared_statements" in words and "NullPool" in words
    # session pooling pins a server connection to each client: psycopg's prepared statements work there
    assert _arms(result, "pgbouncer_pool_prepared", "session")[0].errors == 0


def test_the_throwaway_pgbouncer_asks_for_the_password_and_keeps_it_private(pgbouncer, pg_cluster, dsn):
    params = conninfo.conninfo_to_dict(dsn)
    with psycopg.connect(dsn) as conn:
        user, dbname = conn.execute("SELECT current_user, current_database()").fetchone()
    bouncer = LocalPgBouncer(params, user=user, dbname=dbname, pool_mode="transaction", pool_size=1, max_clients=2,
                             session_settings={"application_name": "advisor_bench"})
    with bouncer:
        base = bouncer.base_dir
        auth = base / "userlist.txt"
        assert stat.S_IMODE(auth.stat().st_mode) == 0o600 and stat.S_IMODE(base.stat().st_mode) == 0o700
        assert bouncer.password not in (base / "pgbouncer.ini").read_text()
        with psycopg.connect(bouncer.conninfo(application_name="advisor_test")) as conn:
            assert conn.execute("/* advisor */ SELECT current_database()").fetchone()[0] == dbname
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(bouncer.conninfo(password="wrong"), connect_timeout=5)
    assert not base.exists()  # the auth_file goes with its directory


def test_the_cli_prints_the_pgbouncer_verdict_and_no_password(pgbouncer, dsn):
    run = advisor("bench", "pool", "--dsn", dsn, "--local-pgbouncer", "--pgbouncer-modes", "transaction",
                  "--pgbouncer-pool-size", "2", "--modes", "new_connection,pgbouncer", "--transports", "tcp",
                  "--concurrency", "3", "--requests", "30", "--warmup", "0")
    assert run.returncode == 0, run.stderr
    out = " ".join(run.stdout.split())  # rich wraps long lines
    assert "pgbouncer-transaction" in out and "3 clients served by" in out and "PgBouncer 1." in out, out
    assert "straight to the server" in out
    assert PASSWORD not in run.stdout + run.stderr


def test_local_pgbouncer_and_a_pgbouncer_dsn_are_refused_together(dsn):
    run = advisor("bench", "pool", "--dsn", dsn, "--local-pgbouncer", "--pgbouncer-dsn", dsn)
    assert run.returncode == 2 and "give one of them" in run.stderr and "Traceback" not in run.stderr
    assert PASSWORD not in run.stdout + run.stderr


PW_ROLE = "advisor_pgbouncer_pw"
PW_SECRET = "pw-through-bouncer-7"


@pytest.fixture
def password_role(embedded_cluster, pg_dsn):
    """A role the server asks a SCRAM password of (a pg_hba.conf line for it alone, first), removed after."""
    hba = embedded_cluster.data_dir / "pg_hba.conf"
    before = hba.read_text()
    with _admin(embedded_cluster) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {PW_ROLE}")
        conn.execute(f"CREATE ROLE {PW_ROLE} LOGIN PASSWORD '{PW_SECRET}'")
        hba.write_text(f"host all {PW_ROLE} 127.0.0.1/32 scram-sha-256\n" + before)
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.2)  # the postmaster reloads on SIGHUP
    yield conninfo.make_conninfo(pg_dsn, user=PW_ROLE, password=PW_SECRET)
    hba.write_text(before)
    with _admin(embedded_cluster) as conn:
        conn.execute("SELECT pg_reload_conf()")
        conn.execute(f"DROP ROLE IF EXISTS {PW_ROLE}")


def test_a_password_dsn_logs_in_through_the_throwaway_pgbouncer(pgbouncer, password_role):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(conninfo.make_conninfo(password_role, password="wrong"), connect_timeout=5)
    result = run_pool_bench(PoolBenchConfig(
        dsn=password_role, concurrency=(2,), requests=20, warmup_s=0, transports=("tcp",),
        modes=("pgbouncer", "pgbouncer_pool"), local_pgbouncer=True, pgbouncer_pool_size=1,
        pgbouncer_pool_modes=("transaction",)))
    assert [(a.mode, a.requests, a.errors) for a in result.arms] == [("pgbouncer", 20, 0), ("pgbouncer_pool", 20, 0)]
    assert PW_SECRET not in repr(result)


def test_a_missing_pgbouncer_is_said_before_anything_runs(dsn, monkeypatch, tmp_path):
    import advisor.bench.pgbouncer as launcher

    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    monkeypatch.setattr(launcher, "_SEARCH", ())
    steps: list[str] = []
    with pytest.raises(PgBouncerError) as err:
        run_pool_bench(PoolBenchConfig(dsn=dsn, local_pgbouncer=True), step=steps.append)
    assert "pgbouncer is not installed" in err.value.cause and "scripts/setup.sh" in err.value.fix
    assert steps == []  # no schema created, no arm started


# --- docker/: the compose PgBouncer in front of the primary ------------------------------------

DOCKER = Path(__file__).resolve().parent.parent / "docker"


def test_compose_pgbouncer_fronts_the_primary_and_the_nightly_bench_uses_it():
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the compose file (pip install '.[test]')")
    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    bouncer, adv = services["pgbouncer"], services["advisor"]
    assert bouncer["build"]["context"] == "./pgbouncer" and bouncer["environment"]["PGBOUNCER_TARGET_HOST"] == "primary"
    assert bouncer["depends_on"]["primary"]["condition"] == "service_healthy"
    assert all(p.startswith("127.0.0.1:") for p in bouncer["ports"])
    assert adv["depends_on"]["pgbouncer"]["condition"] == "service_healthy"
    assert re.fullmatch(r"postgresql://advisor@pgbouncer:6432/\$\{POSTGRES_DB:-app\}",
                        adv["environment"]["ADVISOR_PGBOUNCER_DSN"])
    script = adv["command"][0].replace("$$", "$").replace("\\\n", " ")
    assert re.search(r'if \[ "\$\{ADVISOR_BENCH_POOL:-0\}" = 1 \]; then\s+advisor bench pool --dsn "\$ADVISOR_DSN" '
                     r'--pgbouncer-dsn "\$ADVISOR_PGBOUNCER_DSN"', script), script
    dockerfile = (DOCKER / "pgbouncer" / "Dockerfile").read_text()
    assert "apt-get install -y --no-install-recommends pgbouncer" in dockerfile and "\nUSER postgres" in dockerfile


@pytest.fixture
def run_dir():
    """A folder the unprivileged user PgBouncer runs as may enter (pytest's tmp_path is root's only)."""
    from advisor.db.embedded import run_as

    path = Path(tempfile.mkdtemp(prefix="advisor-test-pgbouncer-"))
    if (user := run_as()) is not None:
        os.chown(path, user.pw_uid, user.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_compose_entrypoint_runs_a_pgbouncer_that_reaches_the_server(pgbouncer, pg_dsn, run_dir):
    """docker/pgbouncer/pgbouncer-entrypoint.sh run here, against the harness server: its auth_file is 0600
    and SCRAM with the user's password passes through to the server, a wrong one does not."""
    from advisor.db.embedded import free_port, run_as, user_kwargs

    params = conninfo.conninfo_to_dict(pg_dsn)
    user = run_as()
    port = free_port()
    env = {"PATH": f"{pgbouncer.parent}:{os.environ['PATH']}", "PGBOUNCER_RUN_DIR": str(run_dir),
           "PGBOUNCER_LISTEN_PORT": str(port), "PGBOUNCER_TARGET_HOST": params.get("host") or "127.0.0.1",
           "PGBOUNCER_TARGET_PORT": str(params.get("port") or 5432), "POSTGRES_PASSWORD": PASSWORD,
           "ADVISOR_DB_PASSWORD": 'with "quotes"'}
    proc = subprocess.Popen(["bash", str(DOCKER / "pgbouncer" / "pgbouncer-entrypoint.sh")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **user_kwargs(user))
    try:
        dsn = conninfo.make_conninfo(pg_dsn, host="127.0.0.1", port=str(port), user="postgres", password=PASSWORD)
        for _ in range(100):  # until PgBouncer listens
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            time.sleep(0.05)
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            assert conn.execute("/* advisor */ SELECT current_database()").fetchone()[0] == params["dbname"]
        assert stat.S_IMODE((run_dir / "userlist.txt").stat().st_mode) == 0o600
        with pytest.raises(psycopg.OperationalError, match="authentication failed"):
            psycopg.connect(conninfo.make_conninfo(dsn, password="wrong"), connect_timeout=5)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
