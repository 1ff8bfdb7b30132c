"""`advisor scan` end to end on the demo fixture: a real log, real plans, ranked findings."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from helpers import advisor

from advisor import demo

SCALE = demo.Scale(lots=120, dies=25, requests=24)  # 300k test results: full scans hurt, setup stays quick


@pytest.fixture(scope="module")
def demo_db(embedded_cluster, pg_dsn, tmp_path_factory):
    """The fixture loaded, the app replayed with logging on, and that part of the server log cut out."""
    demo.load_fixture(pg_dsn, SCALE)
    log = embedded_cluster.stderr_log
    start = log.stat().st_size if log.exists() else 0
    sent = demo.replay(pg_dsn, SCALE)
    deadline = time.monotonic() + 15
    while True:
        tail = log.read_bytes()[start:].decode(errors="replace")
        if tail.count(f"app={demo.DEMO_APP} LOG:  duration:") >= sent:
            break
        assert time.monotonic() < deadline, "the replay never reached the server log"
        time.sleep(0.1)
    path = tmp_path_factory.mktemp("scan") / "app.log"
    path.write_text(tail)
    return pg_dsn, str(path)


@pytest.fixture(scope="module")
def scanned(demo_db):
    dsn, log = demo_db
    run = advisor("scan", "--dsn", dsn, "--log", log, "--format", "json", "--time-budget", "60")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def by_code(doc: dict, code: str) -> list[dict]:
    return [f for f in doc["findings"] if f["code"] == code]


def test_the_documented_json_fields(scanned):
    assert scanned["schema_version"] == 1
    assert scanned["server"]["version_num"] >= 130000 and scanned["server"]["round_trip_ms"] > 0
    assert scanned["explained"] > 0
    for f in scanned["findings"]:
        assert set(f) >= {"code", "check", "severity", "title", "fingerprint", "normalized", "tables", "evidence", "impact_ms", "suggestion"}


def test_n_plus_one_of_the_replayed_app_is_found_with_its_batched_rewrite(scanned):
    (n1,) = by_code(scanned, "ADV101")
    assert "FROM wafers" in n1["normalized"] and "lots" in n1["evidence"]["parent"]
    assert n1["evidence"]["occurrences"] == 4  # 24 requests over 6 pages: 4 lot overviews
    assert "lot_id = ANY($1)" in n1["suggestion"] and "selectinload" in n1["suggestion"]
    assert by_code(scanned, "ADV102") and by_code(scanned, "ADV103")  # row-at-a-time audit inserts; repeated product reads


def test_the_full_scan_of_the_biggest_table_is_found(scanned):
    scans = [f for f in by_code(scanned, "ADV001") if "test_results" in " ".join(f["tables"]) + f["title"]]
    assert scans, [f["title"] for f in scanned["findings"]]


def test_findings_are_ranked_by_impact(scanned):
    impacts = [f["impact_ms"] for f in scanned["findings"] if f["impact_ms"] is not None]
    assert impacts == sorted(impacts, reverse=True)


def test_unindexed_foreign_key_the_workload_joins_on(scanned):
    hygiene = by_code(scanned, "ADV201")
    assert any("wafers" in f["title"] and "lot_id" in f["title"] for f in hygiene)


def test_log_only_scan_says_what_it_skipped(demo_db):
    _, log = demo_db
    run = advisor("scan", "--log", log, "--format", "json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["server"] is None and by_code(doc, "ADV101")
    skipped = {s["check"].split()[0]: s["reason"] for s in doc["skipped_checks"]}
    assert "ADV001" in skipped and "needs a database" in skipped["ADV001"]


def test_fail_on_sets_the_exit_code(demo_db):
    _, log = demo_db
    assert advisor("scan", "--log", log, "--fail-on", "low").returncode == 1
    assert advisor("scan", "--log", log, "--fail-on", "never").returncode == 0


def test_text_and_markdown_outputs(demo_db):
    _dsn, log = demo_db
    text = advisor("scan", "--log", log)
    assert "Findings, by estimated impact" in text.stdout and "fix:" in text.stdout
    md = advisor("scan", "--log", log, "--format", "markdown")
    assert md.stdout.startswith("# advisor scan") and "| # | severity |" in md.stdout


def test_scan_changes_no_row(demo_db):
    dsn, log = demo_db
    checksum = "SELECT md5(string_agg(md5(t::text), '' ORDER BY t::text)) FROM {} t"
    tables = ("lots", "wafers", "test_results", "audit_log", "products")
    with psycopg.connect(dsn) as conn:
        before = [conn.execute(checksum.format(t)).fetchone()[0] for t in tables]
    assert advisor("scan", "--dsn", dsn, "--log", log, "--format", "json").returncode == 0
    with psycopg.connect(dsn) as conn:
        assert [conn.execute(checksum.format(t)).fetchone()[0] for t in tables] == before
