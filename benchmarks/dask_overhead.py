"""What `--engine dask` costs beside the local engine: the local cluster's start, the scheduler's overhead per
task, and `advisor parse` throughput on one file through each engine.

    python benchmarks/dask_overhead.py --log bench-out/parse.log [--repeat 3] [--tasks 200]

Prints medians over --repeat runs. The throughput arms are `advisor parse FILE --format json` subprocesses
(as a user runs them, so the cluster's start is inside the dask arm's time), their documents compared:
every arm must print the same one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from advisor.workload.logs.formats import sniff
from advisor.workload.sources.dask_engine import DaskCluster
from advisor.workload.sources.logs import Part, parse_part

ARMS = {"local --jobs 1": ["--jobs", "1"], "local --jobs 2": ["--jobs", "2"],
        "dask --jobs 2": ["--engine", "dask", "--jobs", "2"]}


def cluster_start(jobs: int) -> tuple[float, float]:
    """Seconds to a local cluster whose workers answer, and to close it."""
    began = time.perf_counter()
    cluster = DaskCluster(jobs)
    cluster.client.wait_for_workers(jobs)
    ready = time.perf_counter()
    cluster.__exit__(None, None, None)
    return ready - began, time.perf_counter() - ready


def per_task(tasks: int, jobs: int) -> tuple[float, float]:
    """Milliseconds per part of a one-line log: through the cluster (tasks and the merge tree), and in this process."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "one.log")
        Path(path).write_text("2024-03-04 00:00:00.000 UTC [1] u@d LOG:  duration: 1.000 ms  statement: SELECT 1\n")
        parts = [Part(path, sniff(path))] * tasks
        with DaskCluster(jobs) as cluster:
            cluster.parse(parts[:jobs])  # warm: the workers have imported the parser
            began = time.perf_counter()
            cluster.parse(parts)
            remote = time.perf_counter() - began
        began = time.perf_counter()
        for part in parts:
            parse_part(part)
        here = time.perf_counter() - began
    return remote / tasks * 1000, here / tasks * 1000


def throughput(log: str, args: list[str]) -> tuple[float, dict]:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "advisor.cli", "parse", log, "--format", "json", *args],
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - began, json.loads(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2)
    opts = ap.parse_args()
    print(f"cores: {os.cpu_count()}")
    starts = [cluster_start(opts.jobs) for _ in range(opts.repeat)]
    print(f"local cluster of {opts.jobs} workers: start {statistics.median(s for s, _ in starts):.2f} s, "
          f"close {statistics.median(c for _, c in starts):.2f} s")
    costs = [per_task(opts.tasks, opts.jobs) for _ in range(opts.repeat)]
    print(f"per task ({opts.tasks} one-line parts, merge tree included): dask {statistics.median(r for r, _ in costs):.1f} ms, "
          f"in process {statistics.median(h for _, h in costs):.2f} ms")
    size_mb = os.path.getsize(opts.log) / (1 << 20)
    first: dict | None = None
    for name, args in ARMS.items():
        runs = [throughput(opts.log, args) for _ in range(opts.repeat)]
        seconds = statistics.median(s for s, _ in runs)
        for _, doc in runs:
            first = first or doc
            assert doc == first, f"{name} printed another document"
        print(f"{name:16} {seconds:7.2f} s  {size_mb / seconds:6.2f} MB/s")


if __name__ == "__main__":
    main()
