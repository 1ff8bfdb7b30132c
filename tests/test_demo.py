"""`advisor demo` end to end: its own throwaway server, fixture, replay and read-back."""

from __future__ import annotations

import json

import pytest
from helpers import advisor

from advisor.workload.fingerprint import fingerprint


@pytest.mark.usefixtures("pg_binaries")  # the demo starts a cluster of its own
def test_demo_replays_the_workload_and_reads_it_back(tmp_path):
    run = advisor("demo", "--scale", "0.05", "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "replayed" in run.stdout and "report.html" in run.stdout
    assert (tmp_path / "report.html").exists() and (tmp_path / "summary.md").exists()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["scan"]["findings"] and report["bench"] is not None
    doc = report["workload"]
    calls = {q["fingerprint"]: q["calls"] for q in doc["queries"]}
    # 40 requests cycle through 6 pages: 7 lot overviews, each looking up the wafers of
    # every active lot one by one; scale 0.05 makes 20 lots, of which 2 are active.
    n_plus_one = fingerprint("SELECT id, wafer_no, yield_pct FROM wafers WHERE lot_id = 1").id
    assert calls[n_plus_one] == 7 * 2
    assert calls[fingerprint("SELECT id, name, family FROM products WHERE id = 3").id] == 6 * 6
    assert doc["skipped_count"] == 0
    assert any(s.startswith("pg_stat_statements") for s in doc["source"])
    # The advisor's own statements never count as the user's workload.
    assert not any("pg_stat_statements" in q["normalized"] for q in doc["queries"])
