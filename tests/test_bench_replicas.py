"""`advisor bench replicas --local-replicas 1` end to end (subprocess): every field of every arm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from advisor.bench.replicas import ARMS

ROOT = Path(__file__).resolve().parents[1]
ARM_FIELDS = ("name", "ops_per_s", "p50_ms", "p95_ms", "p99_ms", "stale_reads", "read_your_writes", "failed_requests")


def test_local_replicas_json_document(pg_binaries):
    proc = subprocess.run(
        [sys.executable, "-m", "advisor.cli", "bench", "replicas", "--local-replicas", "1", "--duration", "1",
         "--concurrency", "2", "--format", "json"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, env=dict(os.environ, NO_COLOR="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["schema_version"] == 1 and doc["kind"] == "bench_replicas"
    assert doc["host_cores"] >= 1 and any("shared its" in n for n in doc["notes"])
    assert [a["name"] for a in doc["arms"]] == [a[0] for a in ARMS]
    for arm in doc["arms"]:
        for key in ARM_FIELDS:
            assert key in arm, (arm["name"], key)
        assert arm["ops_per_s"] > 0 and arm["p50_ms"] is not None and arm["p99_ms"] >= arm["p50_ms"]
        assert arm["failed_requests"] == 0, arm
    by = {a["name"]: a for a in doc["arms"]}
    assert by["primary_only"]["replica_reads"] == 0
    assert by["round_robin"]["replica_reads"] > 0
    assert by["lag_aware_rwy_lsn"]["stale_reads"] == 0 and by["lag_aware_rwy_lsn"]["read_your_writes"] == "lsn"
    assert by["lag_aware_rwy_window"]["stale_reads"] == 0
    (series,) = doc["lag"]["replicas"]
    assert len(series["samples"]) >= 5 and all(len(s) == 3 for s in series["samples"])
    drill = doc["drill"]
    assert drill["ejected_after_s"] is not None and drill["failed_reads_after_ejection"] == 0
    assert drill["reads_on_stopped_after_ejection"] == 0
    assert drill["restarted"] and drill["readmitted_after_s"] is not None
