"""A part boundary cuts nothing: a real server's log split at any line a part may begin at, and the
parts merged, gives exactly the single pass's workload (issue #14).

Clients run at once, so their lines interleave and a cut at one session's statement falls between
another session's statement and what completes it. The server logs every statement when it starts
(``log_statement = all``) and its time on a bare ``duration:`` line after it (``log_duration``), with
auto_explain's plans (text for some sessions, JSON for others) in between; one session logs its
statements when they end instead (``log_min_duration_statement``), so its simple-protocol plans come
before their statement. The clients use the simple protocol (psycopg's ClientCursor), the extended
one with parameters (``DETAIL: parameters``) and prepared statements, a server-side cursor, a portal
read a page at a time (``execute fetch from``, as JDBC's fetch size does: psycopg reads a portal
whole, so a few lines of the protocol stand in), and statements that fail.
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
import threading

import psycopg
import pytest
from helpers import advisor, started_cluster
from test_logs_server import _wait_for

from advisor.db.embedded import EmbeddedCluster
from advisor.report.jsondoc import events_document
from advisor.workload.logs.formats import LogFormat, sniff
from advisor.workload.sources import Partial, collect
from advisor.workload.sources.logs import Part, parse_part

SETTINGS = {
    "log_statement": "all",
    "log_duration": "on",
    "auto_explain.log_min_duration": "0",
    "log_connections": "on",
    "log_disconnections": "on",
}
CLIENTS = 4
ROUNDS = 4
END = "SELECT 'boundaries end'"


@pytest.fixture(scope="module")
def cluster():
    server = started_cluster(SETTINGS)
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as setup:
            setup.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
            setup.execute("INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 200) g")
        start = threading.Barrier(CLIENTS + 1)
        clients = [threading.Thread(target=_client, args=(server, n, start)) for n in range(CLIENTS)]
        clients.append(threading.Thread(target=_paged_client, args=(server, start)))
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        with psycopg.connect(server.dsn(), autocommit=True) as last:
            last.execute(END)
        _wait_for(server, "'boundaries end'")
        yield server
    finally:
        server.stop()


def _client(server: EmbeddedCluster, n: int, start: threading.Barrier) -> None:
    """One application's session; ``n`` picks its plan format and how its statements are logged."""
    with psycopg.connect(server.dsn(), autocommit=True, application_name=f"client{n}") as conn:
        conn.execute(f"SET auto_explain.log_format = {'json' if n % 2 else 'text'}")
        if n == 3:  # logged when they end: the simple protocol's plan comes before its statement line
            conn.execute("SET log_statement = none; SET log_duration = off; SET log_min_duration_statement = 0")
        simple = psycopg.ClientCursor(conn)
        start.wait()
        for i in range(ROUNDS):
            simple.execute(f"SELECT name FROM items WHERE id = {i + n}")
            conn.execute("SELECT id, name FROM items WHERE id BETWEEN %s AND %s", (i, i + 5)).fetchall()
            conn.execute("SELECT count(*) FROM items WHERE name LIKE %s", (f"n{i}%",), prepare=True).fetchone()
            conn.execute("UPDATE items SET name = %s WHERE id = %s", (f"n{i}", 100 + n))
            simple.execute("SELECT pg_sleep(0.002)")
            with conn.transaction(), conn.cursor(name=f"c{n}") as cursor:
                cursor.execute("SELECT id FROM items WHERE id > %s ORDER BY id", (i * 10,))
                cursor.fetchmany(3)
                cursor.fetchmany(3)
            with pytest.raises(psycopg.errors.UniqueViolation):
                conn.execute("INSERT INTO items VALUES (%s, 'again')", (1 + n,))
            with pytest.raises(psycopg.errors.DivisionByZero):
                simple.execute(f"SELECT {i} / 0")


def _paged_client(server: EmbeddedCluster, start: threading.Barrier) -> None:
    """A portal read two rows at a time: its first Execute is logged as ``execute``, the next ones as
    ``execute fetch from``, each with its own duration."""

    def message(kind: bytes, body: bytes) -> bytes:
        return kind + struct.pack("!i", len(body) + 4) + body

    def text(value: str) -> bytes:
        return value.encode() + b"\0"

    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        startup = text("user") + text("postgres") + text("database") + text("postgres")
        startup += text("application_name") + text("paged") + b"\0"
        sock.sendall(struct.pack("!ii", len(startup) + 8, 196608) + startup)
        _until_ready(sock)
        start.wait()
        for i in range(ROUNDS):
            sql = f"SELECT id FROM items WHERE id > {i} ORDER BY id"
            batch = message(b"P", text("") + text(sql) + struct.pack("!h", 0))
            batch += message(b"B", text("C_1") + text("") + struct.pack("!hhh", 0, 0, 0))
            batch += b"".join(message(b"E", text("C_1") + struct.pack("!i", 2)) for _ in range(3))
            sock.sendall(batch + message(b"S", b""))
            _until_ready(sock)
        sock.sendall(message(b"X", b""))


def _until_ready(sock: socket.socket) -> None:
    """Read the server's messages up to ReadyForQuery; an ErrorResponse fails."""
    buffer = b""
    while True:
        while len(buffer) < 5 or len(buffer) < 1 + struct.unpack("!i", buffer[1:5])[0]:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection"
            buffer += chunk
        kind, length = buffer[:1], struct.unpack("!i", buffer[1:5])[0]
        body, buffer = buffer[5 : 1 + length], buffer[1 + length :]
        assert kind != b"E", body
        if kind == b"Z":
            return


def _cuts(path: str, fmt: LogFormat) -> list[int]:
    """Every byte offset a part may begin at (reader.split_points chooses among them)."""
    is_start, offsets, offset = fmt.is_unit_start(), [], 0
    with open(path, "rb") as f:
        for raw in f:
            if offset and is_start(raw.decode("utf-8", "replace").rstrip("\r\n")):
                offsets.append(offset)
            offset += len(raw)
    return offsets


def _parts(path: str, fmt: LogFormat, cuts: list[int]) -> list[Part]:
    bounds = [0, *cuts, None]
    return [Part(path, fmt, start, end, continues=start > 0, followed=end is not None)
            for start, end in itertools.pairwise(bounds)]


def _merged(parts: list[Part]) -> Partial:
    partials = [parse_part(p) for p in parts]
    whole = partials[0]
    for later in partials[1:]:
        whole.merge(later)
    return whole


def _read(partial: Partial) -> tuple:
    """What ``advisor parse`` prints of a workload, and the plans its queries carry."""
    w = collect(partial)
    queries = sorted((q.fingerprint, q.calls, q.total_ms, q.timed_calls, q.min_ms, q.max_ms, q.plan is not None)
                     for q in w.queries)
    return queries, w.lines, w.skipped_count, w.other_events, w.plans, events_document(w.events)


@pytest.mark.parametrize("log", ["stderr_log", "csv_log", "json_log"])
def test_a_log_cut_anywhere_gives_the_single_pass(cluster, log):
    path = str(getattr(cluster, log))
    fmt = sniff(path)
    single = _read(parse_part(Part(path, fmt)))
    queries = {q[0]: q for q in single[0]}
    assert sum(q[1] for q in queries.values()) > CLIENTS * ROUNDS * 8 and single[4] > CLIENTS * ROUNDS * 4
    assert all(q[3] == q[1] for q in queries.values())  # in one pass every execution has its time
    cuts = _cuts(path, fmt)
    every = cuts if log == "stderr_log" else cuts[:: len(cuts) // 40]  # every cut in one format, 40 in the others
    for cut in every:
        assert _read(_merged(_parts(path, fmt, [cut]))) == single, f"cut at byte {cut}"
    for first, second in zip(every[::9], every[4::9]):
        assert _read(_merged(_parts(path, fmt, [first, second]))) == single, f"cuts at bytes {first} and {second}"


def test_parse_in_parallel_prints_what_one_pass_prints(cluster):
    path = str(cluster.stderr_log)
    one = advisor("parse", "--jobs", "1", "--format", "json", path)
    two = advisor("parse", "--jobs", "2", "--format", "json", path, env={"ADVISOR_MIN_PART_BYTES": "20000"})
    assert one.returncode == two.returncode == 0, two.stderr
    document = json.loads(one.stdout)
    assert document["plans"] and document["queries"] and document["events"]
    assert json.loads(two.stdout) == document
