"""`advisor report` end to end: two nightly runs on the demo fixture, history, incremental logs, HTML in Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from html import escape
from pathlib import Path

import psycopg
import pytest
from helpers import advisor

from advisor import demo
from advisor.report.html import SECTIONS
from advisor.report.words import regression_text
from advisor.workload.fingerprint import fingerprint

SCALE = demo.Scale(lots=20, dies=25, requests=24)
PASSWORD = "S3cretPw0rd"
LINE = f"app={demo.DEMO_APP} LOG:  duration:"
ARTIFACTS = Path(os.environ.get("ADVISOR_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
SLOW = "SELECT count(*) FROM test_results a JOIN test_results b ON a.wafer_id = b.wafer_id AND a.test_name = b.test_name WHERE a.value > b.value"


# The same query, as often, on both nights; between them its table grows 300-fold: a real regression.
GROWING = "SELECT count(*) FROM growing WHERE v % 7 = 3"
GROWING_CALLS = 25
GROWTH = 300_000


def _replay_tail(cluster, dsn: str, extra: bool = False) -> tuple[str, int]:
    """Replay the app (twice, plus a slow query, when ``extra``) and the growing-table query; the demo
    app's log lines, and the statements sent."""
    log = cluster.stderr_log
    start = log.stat().st_size if log.exists() else 0
    with psycopg.connect(dsn, autocommit=True) as admin:  # not the app: its statements are not in the app's lines
        admin.execute("CREATE TABLE IF NOT EXISTS growing (id int, v int)")
        admin.execute(f"INSERT INTO growing SELECT g, g FROM generate_series(1, {GROWTH if extra else 1000}) g")
    with psycopg.connect(dsn, autocommit=True, application_name=demo.DEMO_APP) as conn:
        conn.execute("SET log_min_duration_statement = 0")
        for _ in range(GROWING_CALLS):  # first: the last statement of a log waits for the next run
            conn.execute(GROWING).fetchall()
    sent = 1 + GROWING_CALLS + demo.replay(dsn, SCALE)
    if extra:
        sent += demo.replay(dsn, SCALE, seed=8)
        with psycopg.connect(dsn, autocommit=True, application_name=demo.DEMO_APP) as conn:
            conn.execute("SET log_min_duration_statement = 0")
            for _ in range(3):
                conn.execute(SLOW).fetchall()
        sent += 4
    deadline = time.monotonic() + 15
    while True:
        lines = [ln for ln in log.read_bytes()[start:].decode(errors="replace").splitlines(keepends=True)
                 if f"app={demo.DEMO_APP} " in ln]
        if sum(LINE in ln and ("  statement: " in ln or "  execute " in ln) for ln in lines) >= sent:
            return "".join(lines), sent
        assert time.monotonic() < deadline, "the replay never reached the server log"
        time.sleep(0.1)


def _with_password(dsn: str) -> str:
    return f"{dsn} password={PASSWORD}" if "://" not in dsn else dsn  # trust auth: the password is never checked


@pytest.fixture(scope="module")
def runs(embedded_cluster, pg_dsn, tmp_path_factory):
    demo.load_fixture(pg_dsn, SCALE)
    folder = tmp_path_factory.mktemp("report")
    out, log = folder / "out", folder / "app.log"
    dsn = _with_password(pg_dsn)
    first_text, first_count = _replay_tail(embedded_cluster, pg_dsn)
    log.write_text(first_text)
    first = advisor("report", "--dsn", dsn, "--log", str(log), "--out", str(out), "--time-budget", "20")
    doc1 = json.loads((out / "report.json").read_text())
    files1 = {name: (out / name).read_text() for name in ("report.json", "report.html", "summary.md")}
    more_text, more_count = _replay_tail(embedded_cluster, pg_dsn, extra=True)
    with log.open("a") as f:
        f.write(more_text)
    second = advisor("report", "--dsn", dsn, "--log", str(log), "--out", str(out), "--time-budget", "20",
                     "--fail-on-regression", "1")
    doc2 = json.loads((out / "report.json").read_text())
    return {"first": first, "second": second, "doc1": doc1, "doc2": doc2, "out": out, "files1": files1, "log": str(log),
            "first_count": first_count, "more_count": more_count}


def test_three_files_with_every_documented_key(runs):
    assert runs["first"].returncode == 0, runs["first"].stderr
    for name in ("report.html", "report.json", "summary.md"):
        assert (runs["out"] / name).stat().st_size > 0
    doc = runs["doc1"]
    assert doc["schema_version"] == 1 and doc["kind"] == "report"
    assert set(doc) >= {"run", "workload", "scan", "indexes", "bench", "history", "unanalysed", "summary"}
    assert set(doc["run"]) >= {"started_at", "tool", "database", "server_version_num", "sources", "window"}
    assert doc["run"]["server_version_num"] >= 130000 and doc["run"]["window"]["first_seen"]
    assert set(doc["history"]) >= {"new_findings", "resolved_findings", "regressions", "trend"}
    assert doc["workload"]["kind"] == "workload" and doc["scan"]["kind"] == "scan"
    assert doc["indexes"] is not None or doc["indexes_reason"]
    assert doc["bench"] is None
    # the last statement waits for the next run: what follows it (a DETAIL line) may not be written yet
    assert doc["history"]["previous_run"] is None and doc["workload"]["statements"] in (runs["first_count"], runs["first_count"] - 1)
    assert {"ADV101", "ADV102"} & {f["code"] for f in doc["scan"]["findings"]}  # N+1 reads or writes
    assert "# advisor report" in runs["files1"]["summary.md"]


def test_second_run_reads_only_the_appended_log_and_compares_with_history(runs):
    doc, before = runs["doc2"], runs["doc1"]
    held_back = runs["first_count"] - before["workload"]["statements"]  # read now, with the appended part
    assert doc["workload"]["statements"] in (runs["more_count"] + held_back, runs["more_count"] + held_back - 1)
    assert doc["run"]["log_reads"][0]["reason"] == "appended"
    assert doc["run"]["log_reads"][0]["start"] == before["run"]["log_reads"][0]["end"] > 0
    whole = json.loads(advisor("parse", runs["log"], "--format", "json").stdout)
    read = before["workload"]["statements"] + doc["workload"]["statements"]
    assert read in (whole["statements"], whole["statements"] - 1)  # the very last statement waits for a later run
    h = doc["history"]
    assert h["previous_run"] == runs["doc1"]["run"]["started_at"] or h["previous_run"]
    # The growing table's query regressed, in p95 and in total; each metric printed with its own change.
    key = fingerprint(GROWING).id
    [g] = [g for g in h["regressions"] if g["fingerprint"] == key]
    p95 = [next(q["p95_ms"] for q in d["workload"]["queries"] if q["fingerprint"] == key) for d in (before, doc)]
    assert g["calls_before"] == g["calls_after"] == GROWING_CALLS
    assert "p95_ms" in g["metrics"] and (g["changes"]["p95_ms"]["before"], g["changes"]["p95_ms"]["after"]) == tuple(p95)
    assert g["changes"]["p95_ms"]["change_pct"] == round((p95[1] - p95[0]) / p95[0] * 100, 1) > 100
    assert f"`{key}` {regression_text(g)}" in (runs["out"] / "summary.md").read_text()
    assert any(len(t["points"]) == 2 for t in h["trend"])
    assert h["new_findings"] or any(q["normalized"].startswith("SELECT count(*) FROM test_results AS a")
                                    or ("test_results" in q["normalized"] and "JOIN" in q["normalized"])
                                    for q in doc["workload"]["queries"])


def test_plan_excerpts_keep_the_servers_numbers_in_json_and_html(runs, pg_dsn):
    """Item 7 of issue 11: literal masking never reaches a plan's rows, loops or times."""
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT count(*) FROM test_results").fetchone()[0]
    html = (runs["out"] / "report.html").read_text()
    scans = [f for f in runs["doc2"]["scan"]["findings"] if f["code"] == "ADV001" and "test_results" in f["title"]]
    assert scans
    for f in scans:
        plan = f["evidence"]["plan"]
        assert f"on test_results (rows {rows:,} scanned, " in plan and re.search(r"[\d,]+\.\d ms self", plan)
        assert "?," not in plan.split("filter:")[0] and escape(plan) in html


def test_fail_on_regression_exits_1(runs):
    assert runs["second"].returncode == 1, runs["second"].stderr
    assert runs["doc2"]["exit"]["code"] == 1 and "regression" in runs["doc2"]["exit"]["reasons"][0]


def test_no_password_and_no_external_reference_in_any_output(runs):
    texts = [*runs["files1"].values()] + [(runs["out"] / n).read_text() for n in ("report.json", "report.html", "summary.md")]
    for text in texts:
        assert PASSWORD not in text
    html = (runs["out"] / "report.html").read_text()
    assert "<script" not in html.lower()
    # URLs may only appear escaped, as text: never as an attribute value or a CSS url()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html, re.I)
    assert "url(" not in html.lower()
    assert not re.search(r"<[^>]*https?://", html, re.I)  # inside a tag: never; in text it can only be escaped user text
    for section in SECTIONS:
        assert f'<section id="{section}">' in html


def test_unreachable_database_still_writes_a_report(tmp_path):
    out = tmp_path / "out"
    run = advisor("report", "--dsn", f"postgresql://bob:{PASSWORD}@127.0.0.1:1/shop", "--out", str(out))
    assert run.returncode == 2, run.stdout + run.stderr
    doc = json.loads((out / "report.json").read_text())
    assert doc["unanalysed"][0]["reason"].startswith("database unreachable: ")
    for name in ("report.json", "report.html", "summary.md"):
        text = (out / name).read_text()
        assert PASSWORD not in text and "database unreachable" in text
    assert PASSWORD not in run.stdout + run.stderr


def test_html_renders_in_headless_chromium(runs, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("ADVISOR_REQUIRE_PG") == "1":
            pytest.fail("chromium is not installed (bash scripts/setup.sh installs it)", pytrace=False)
        pytest.skip("chromium is not installed: run bash scripts/setup.sh (apt-get install chromium)")
    html = runs["out"] / "report.html"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    run = subprocess.run([*common, f"--screenshot={shot}", "--window-size=1280,2000", html.as_uri()],
                         capture_output=True, text=True, timeout=60)
    assert shot.exists() and shot.stat().st_size > 10_000, run.stderr[-2000:]
    dom = subprocess.run([*common, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in SECTIONS:
        assert re.search(rf'<section id="{section}">\s*<h2>', dom.stdout), section
    assert "<svg" in dom.stdout and "<polyline" in dom.stdout
