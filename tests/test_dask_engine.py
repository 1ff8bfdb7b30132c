"""`--engine dask` (issue #14): the parts of the logs parsed as Dask tasks on a real cluster, the partials merged
by a tree on the workers, give the single process's document: the same queries, calls, totals, lines,
skipped lines and server events.

The log is a real server's, written for real clients: pgbench in the simple and the prepared protocol, with
new connections per transaction for a share (sessions), and a psycopg 3 application with bound parameters
(DETAIL lines) and a failing statement (an error by SQLSTATE). The cluster is real processes: a `dask
scheduler` and two `dask worker`s (each a nanny and its worker process) on 127.0.0.1, or the local cluster
the advisor starts itself. ADVISOR_MIN_PART_BYTES (read by LogFiles) cuts this modest log into several parts,
as 32 MB does to a large one. One test kills a worker while it parses; Dask runs its tasks again elsewhere.
Remote inputs: the same files served over loopback HTTP (with byte ranges, as object stores serve them) and
read through fsspec, split into ranges.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
from helpers import EVENT_LOGGING, advisor, started_cluster

from advisor.db.embedded import EmbeddedCluster
from advisor.workload.logs.formats import sniff
from advisor.workload.sources.logs import parts_of

distributed = pytest.importorskip("distributed", reason="the dask extra is not installed (scripts/setup.sh installs it)")

PART_BYTES = 128 << 10  # parts of this log: several per file
SPLIT = {"ADVISOR_MIN_PART_BYTES": str(PART_BYTES)}
DASK = [str(Path(sys.executable).parent / "dask")]
MARKER = "SELECT 'dask engine end'"


@pytest.fixture(scope="module")
def server_log(tmp_path_factory) -> Path:
    """A copy of a real server's stderr log after pgbench and a psycopg application ran against it."""
    cluster = started_cluster(EVENT_LOGGING)
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        _drive(cluster, cluster.dsn("bench"))
        copy = tmp_path_factory.mktemp("logs") / "postgresql.log"
        shutil.copyfile(cluster.stderr_log, copy)
        return copy
    finally:
        cluster.stop()


def _drive(cluster: EmbeddedCluster, dsn: str) -> None:
    pgbench = str(cluster.bin_dir / "pgbench")
    subprocess.run([pgbench, "-i", "-s", "1", "-q", dsn], check=True, capture_output=True, timeout=120)
    for options in (["-M", "simple", "-t", "150"], ["-M", "prepared", "-t", "150"], ["-C", "-t", "20"]):
        subprocess.run([pgbench, "-n", "-c", "2", *options, dsn], check=True, capture_output=True, timeout=120)
    with psycopg.connect(dsn, autocommit=True, application_name="shop") as conn:
        for aid in range(1, 200):
            conn.execute("SELECT abalance FROM pgbench_accounts WHERE aid = %s AND bid = %s", (aid, 1)).fetchall()
        for _ in range(3):
            with pytest.raises(psycopg.errors.UniqueViolation):
                conn.execute("INSERT INTO pgbench_branches (bid, bbalance) VALUES (%s, 0)", (1,))
        conn.execute(MARKER)
    deadline = time.monotonic() + 15
    while MARKER not in cluster.stderr_log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the server log never showed the marker"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def logs(server_log: Path, tmp_path_factory) -> Path:
    """The log as a rotated set: three files cut where executions start, the middle one gzip-compressed."""
    folder = tmp_path_factory.mktemp("rotated")
    data = server_log.read_bytes()
    cuts = [part.start for part in parts_of(str(server_log), sniff(str(server_log)), 3, 1)] + [len(data)]
    assert len(cuts) == 4
    for k, name in enumerate(("postgresql-1.log", "postgresql-2.log.gz", "postgresql-3.log")):
        chunk = data[cuts[k]:cuts[k + 1]]
        (folder / name).write_bytes(gzip.compress(chunk) if name.endswith(".gz") else chunk)
    return folder


@pytest.fixture(scope="module")
def one_process(server_log: Path, logs: Path) -> dict[str, dict]:
    """The documents one process gives, to compare with: of the log, and of its rotated set (a glob)."""
    return {"log": _document(str(server_log), "--jobs", "1"), "glob": _document(str(logs / "postgresql-*"), "--jobs", "1")}


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A Dask scheduler and two single-threaded workers, each a real process (a nanny and its worker), on loopback."""
    file = tmp_path_factory.mktemp("dask") / "scheduler.json"
    loopback = ["--host", "127.0.0.1", "--no-dashboard"]
    started = [_start([*DASK, "scheduler", "--port", "0", "--scheduler-file", str(file), *loopback])]
    try:
        _wait(file.exists, "the Dask scheduler never wrote its address")
        address = json.loads(file.read_text())["address"]
        worker = [*DASK, "worker", address, "--nthreads", "1", *loopback]
        started += [_start(worker), _start(worker)]
        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for process in reversed(started):
            os.killpg(process.pid, signal.SIGTERM)  # its own session: the nanny and the worker it started
            process.wait(timeout=30)


def _start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _wait(predicate, message: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, message
        time.sleep(0.02)
    return found


def _document(*args: str, env: dict[str, str] | None = None) -> dict:
    """`advisor parse ARGS --format json` as a user runs it, read back."""
    done = advisor("parse", *args, "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _compared(doc: dict) -> dict:
    """What must be equal: every count and query; the sources are named apart (local paths, URLs)."""
    assert doc["statements"] > 1000 and doc["queries"] and doc["events"]["errors"]
    return {k: v for k, v in doc.items() if k != "source"}


def test_a_log_in_parts_on_a_local_cluster_gives_the_single_process_document(server_log, one_process):
    path = str(server_log)
    assert len(parts_of(path, sniff(path), 2, PART_BYTES)) == 2  # the dask run below parses two parts
    assert _document(path, "--engine", "dask", "--jobs", "2", env=SPLIT) == one_process["log"]


def test_an_existing_cluster_parses_more_parts_than_it_has_workers(server_log, scheduler, one_process):
    path = str(server_log)
    assert len(parts_of(path, sniff(path), 5, PART_BYTES)) == 5  # an odd count: the tree carries one up a level
    assert _document(path, "--dask-scheduler", scheduler, "--jobs", "5", env=SPLIT) == one_process["log"]


def test_a_glob_of_rotated_files_with_a_compressed_one(logs, scheduler, one_process):
    single, whole = one_process["glob"], one_process["log"]
    assert len(single["source"]) == 3
    assert (single["lines"], single["statements"]) == (whole["lines"], whole["statements"])
    assert _document(str(logs / "postgresql-*"), "--dask-scheduler", scheduler, "--jobs", "4", env=SPLIT) == single


def test_a_worker_killed_mid_run_leaves_the_result_exact(logs, scheduler, one_process):
    """A worker process dies while it parses a part: its nanny starts a new one, and the scheduler runs the lost
    tasks (the part, and any merge whose input it held) again, on either worker."""
    pattern = str(logs / "postgresql-*")
    run = subprocess.Popen([sys.executable, "-m", "advisor.cli", "parse", pattern, "--dask-scheduler", scheduler,
                            "--jobs", "12", "--format", "json"], env={**os.environ, "ADVISOR_MIN_PART_BYTES": "16384"},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with distributed.Client(scheduler, timeout=30) as client:
        busy = _wait(lambda: [w for w, keys in client.processing().items()
                              if any("parse_part" in str(k) for k in keys)], "no worker ever parsed a part")
        pids = client.run(os.getpid)
        assert run.poll() is None  # the advisor is still waiting on its tasks
        os.kill(pids[busy[0]], signal.SIGKILL)
        out, errors = run.communicate(timeout=300)
        assert run.returncode == 0, errors
        client.wait_for_workers(2, timeout=60)  # the nanny brought the killed worker back
        assert pids[busy[0]] not in client.run(os.getpid).values()
    assert json.loads(out) == one_process["glob"]


def test_the_nightly_report_ingests_through_the_cluster(server_log, scheduler, tmp_path):
    """`advisor report --dask-scheduler`: the logs read into the report's workload as the local engine reads them.
    The database is unreachable (a closed port), which the night notes after it has read its logs."""
    documents = []
    for name, engine in (("local", []), ("dask", ["--dask-scheduler", scheduler])):
        out = tmp_path / name
        done = advisor("report", "--dsn", "postgresql://advisor@127.0.0.1:1/app", "--out", str(out),
                       "--log", str(server_log), *engine)
        assert done.returncode == 2 and (out / "report.json").exists(), done.stderr
        documents.append(json.loads((out / "report.json").read_text())["workload"])
    assert documents[0]["statements"] > 1000 and documents[1] == documents[0]


class _RangeHandler(SimpleHTTPRequestHandler):
    """Python's file server, plus the byte ranges object stores serve (fsspec seeks with them)."""

    def send_head(self):
        wanted = self.headers.get("Range")
        path = self.translate_path(self.path)
        if not wanted or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        first, _, last = wanted.removeprefix("bytes=").partition("-")
        start, end = int(first), min(int(last) if last else size - 1, size - 1)
        f = open(path, "rb")  # closed by the base class once copied, as its own send_head's file is
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        return _Limited(f, end - start + 1)

    def log_message(self, *args) -> None:
        pass


class _Limited:
    def __init__(self, f, length: int):
        self.f, self.left = f, length

    def read(self, n: int = -1) -> bytes:
        block = self.f.read(self.left if n < 0 else min(n, self.left))
        self.left -= len(block)
        return block

    def close(self) -> None:
        self.f.close()


@pytest.fixture(scope="module")
def served(logs):
    """The rotated logs served on 127.0.0.1 over HTTP, directory listings and byte ranges included."""
    pytest.importorskip("fsspec", reason="the remote extra is not installed")
    pytest.importorskip("aiohttp", reason="the remote extra is not installed")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_RangeHandler, directory=str(logs)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_logs_served_over_http_read_through_fsspec(served, scheduler, one_process):
    """A glob of URLs, a compressed one among them, read in byte ranges by this machine's processes and by the
    Dask workers, which open the URLs themselves."""
    single = one_process["glob"]
    urls = _document(f"{served}/postgresql-*", "--jobs", "2", env=SPLIT)
    assert urls["source"] == [f"{served}/{name}" for name in ("postgresql-1.log", "postgresql-2.log.gz", "postgresql-3.log")]
    assert _compared(urls) == _compared(single)
    through_dask = _document(f"{served}/postgresql-*", "--dask-scheduler", scheduler, "--jobs", "4", env=SPLIT)
    assert through_dask == urls


@pytest.mark.parametrize(("missing", "args", "fix"), [
    ("distributed", ["--engine", "dask"], "pip install 'advisor[dask]'"),
    ("fsspec", ["http://127.0.0.1:9/postgresql.log"], "pip install 'advisor[remote]'"),
], ids=["dask", "fsspec"])
def test_a_missing_extra_is_named_with_its_install_line(server_log, missing, args, fix):
    """The extra's package made unimportable in the advisor's process: one line of cause, one of fix, no traceback."""
    blocked = f"import sys; sys.modules[{missing!r}] = None; from advisor.cli import main; sys.argv[0] = 'advisor'; main()"
    done = subprocess.run([sys.executable, "-c", blocked, "parse", str(server_log), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert fix in done.stderr and "Traceback" not in done.stderr


def test_a_server_that_answers_no_byte_range_is_one_line_not_a_traceback(logs, tmp_path):
    """Python's own http.server ignores Range headers: fsspec reads such a file only as far as its first
    block (5 MB) and then says so mid-read. That reaches the user as the cause naming the URL, exit 2, as an
    unreadable local file does, not as a traceback."""
    pytest.importorskip("aiohttp", reason="the remote extra is not installed")
    text = (logs / "postgresql-1.log").read_bytes()
    (tmp_path / "big.log").write_bytes(text * (12 * 2**20 // len(text) + 1))  # past fsspec's first block
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/big.log"
        done = advisor("parse", url, "--jobs", "1", "--format", "json")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 2, done.stderr
    assert f"cannot read {url}" in done.stderr and "range" in done.stderr and "Traceback" not in done.stderr
