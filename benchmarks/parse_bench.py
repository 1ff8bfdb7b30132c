"""Log-parsing benchmark: `advisor parse` against pgBadger, on a generated log and on logs real servers wrote.

    .venv/bin/python benchmarks/parse_bench.py [--log all|generated|pgbench|psycopg|orm] [--size-mb N]
        [--jobs 1,2] [--dask-jobs 2] [--repeat N] [--profile] [--keep] [--workdir DIR]

For each log, in one run: pgBadger -j 1, advisor --jobs 1 and 2 in one process, and advisor
--engine dask --jobs 2 (a local Dask cluster of two workers; "not available" when the CLI
rejects it). The generated log (benchmarks/loggen.py) has ground truth per statement shape;
the real ones (benchmarks/real_logs.py: pgbench, a psycopg 3 application, a SQLAlchemy ORM
application) have the server's own counters (pg_stat_statements calls, temp files,
deadlocks). Reports speed (seconds, MB/s, lines/s, ratio to pgBadger -j 1), peak memory and
the statements each tool counted; --profile adds advisor -j1's top functions under cProfile.
Results go to stdout and to <workdir>/results.json. The exit status is non-zero only when a
tool fails; missed targets are printed, not asserted. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import loggen
import real_logs

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
PREFIX = loggen.LOG_LINE_PREFIX
TARGET_RATIO = 10.0  # advisor -j1 MB/s over pgBadger -j1 MB/s (issue #14)
TARGET_RSS_MB = 250.0
DURATION_STATS = ("min_ms", "max_ms", "p50_ms", "p95_ms", "p99_ms")
MIN_CALLS_FOR_QUANTILES = 100  # fewer calls: a sketch's quantile is too coarse to judge


# --- running a command and measuring it --------------------------------------

def _children(pid: int) -> list[int]:
    """Direct children of pid, from /proc/<pid>/task/*/children."""
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids.extend(int(x) for x in f.read().split())
    except OSError:
        pass
    return kids


def _memory_kb(pid: int) -> tuple[int, int]:
    """(Rss, Pss) of one process in kB; Pss splits shared pages among their sharers."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


class TreeSampler(threading.Thread):
    """Samples the summed memory of a process and all its descendants.

    The kernel's ru_maxrss is the peak of the largest single process; workers
    started with --jobs add up, so the sum is sampled from /proc as well (Pss,
    so pages shared after fork are not counted once per worker).
    """

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss_kb = self.peak_pss_kb = self.peak_procs = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            tree, stack = [], [self.pid]
            while stack:
                p = stack.pop()
                tree.append(p)
                stack.extend(_children(p))
            rss = pss = 0
            for p in tree:
                r, s = _memory_kb(p)
                rss, pss = rss + r, pss + s
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
            self.peak_procs = max(self.peak_procs, len(tree))


def measure(cmd: list[str], log_dir: Path, name: str) -> dict:
    """Run cmd; wall-clock seconds, exit code and memory (largest process and whole tree)."""
    out, err = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        # wait4 gives this child's own rusage: ru_maxrss is the peak of the largest
        # process among it and the descendants it reaped (kB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        sampler.done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "cmd": cmd,
        "rc": proc.returncode,
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "tree_rss_mb": round(sampler.peak_rss_kb / 1024, 1),
        "tree_pss_mb": round(sampler.peak_pss_kb / 1024, 1),
        "processes": sampler.peak_procs,
        "stderr_tail": err.read_text(errors="replace")[-2000:],
    }


# --- pgBadger ------------------------------------------------------------------

def _root_runner() -> list[str] | None:
    """How to run a command as root here: directly, through passwordless sudo, or not at all."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def ensure_pgbadger() -> str | None:
    """The pgbadger executable, installing the distribution package when we may."""
    found = shutil.which("pgbadger")
    if found:
        return found
    install = ["apt-get", "install", "-y", "-q", "pgbadger"]
    runner = _root_runner()
    if runner is None or not shutil.which("apt-get"):
        print("pgBadger is not installed and cannot be installed from here; run:\n"
              "    sudo apt-get install -y pgbadger\nSkipping the pgBadger arm.", file=sys.stderr)
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("installing pgBadger: " + " ".join(runner + install), file=sys.stderr)
    if subprocess.run(runner + install, env=env, capture_output=True).returncode != 0:
        # A bare machine has no package lists yet.
        subprocess.run(runner + ["apt-get", "update", "-q"], env=env, capture_output=True)
        subprocess.run(runner + install, env=env, capture_output=True)
    found = shutil.which("pgbadger")
    if not found:
        print("pgBadger installation failed; skipping the pgBadger arm.", file=sys.stderr)
    return found


def pgbadger_version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    return out.strip().replace("pgBadger version ", "")


def pgbadger_cmd(exe: str, log: Path, out: Path, jobs: int, workdir: Path, prefix: str = PREFIX) -> list[str]:
    # Own pid and temp dirs: another pgBadger on the machine must not block or mix with ours.
    return [exe, "-j", str(jobs), "-q", "-f", "stderr", "--prefix", prefix,
            "-o", str(out), "--pid-dir", str(workdir), "--tempdir", str(workdir), str(log)]


def read_pgbadger(path: Path) -> dict:
    """Totals and per-shape counts from pgBadger's JSON report."""
    doc = json.loads(path.read_bytes())
    overall = doc.get("overall_stat", {})
    pg = overall.get("postgres", {})
    normalized = doc.get("normalyzed_info", {}).get("postgres", {})
    queries = [{"text": text, "calls": int(info.get("count", 0)), "total_ms": float(info.get("duration", 0.0)),
                "stats": {"min_ms": _num(info.get("min")), "max_ms": _num(info.get("max"))}}
               for text, info in normalized.items()]
    return {
        "statements": int(overall.get("queries_number", 0)),
        # Its nlines is a per-database tally of entries, bumped more than once per entry:
        # not comparable with physical lines, so kept aside.
        "lines": None,
        "nlines_reported": overall.get("nlines"),
        "errors": int(overall.get("errors_number", 0)),
        # pgBadger folds parse and bind into the execution they lead to: their
        # durations are summed here, and they are not counted as queries.
        "duration_by_step_ms": pg.get("queries_duration", {}),
        "queries": queries,
    }


# --- advisor ---------------------------------------------------------------------

def advisor_exe(given: str | None) -> str | None:
    if given:
        return given
    local = REPO / ".venv" / "bin" / "advisor"
    return str(local) if local.exists() else shutil.which("advisor")


def advisor_version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).strip().splitlines()[-1] if (out.stdout or out.stderr).strip() else "?"


def advisor_revision() -> str | None:
    """The checked-out commit, marked dirty when advisor/ has uncommitted changes (read-only git)."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "advisor"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def advisor_cmd(exe: str, log: Path, out: Path, jobs: int, prefix: str = PREFIX, engine: str = "local") -> list[str]:
    return [exe, "parse", str(log), "--log-format", "stderr", "--log-line-prefix", prefix,
            "--jobs", str(jobs), "--format", "json", "--output", str(out),
            *(["--engine", engine] if engine != "local" else [])]


def read_advisor(path: Path) -> dict:
    doc = json.loads(path.read_bytes())
    queries = [{"text": q.get("normalized", ""), "calls": int(q.get("calls", 0)),
                "total_ms": float(q.get("total_ms") or 0.0),
                "stats": {k: _num(q.get(k)) for k in DURATION_STATS}}
               for q in doc.get("queries", [])]
    return {
        "schema_version": doc.get("schema_version"),
        "statements": int(doc.get("statements", 0)),
        "lines": doc.get("lines"),
        "skipped_count": doc.get("skipped_count"),
        "skipped_sample": (doc.get("skipped") or [])[:5],
        "plans": doc.get("plans"),
        "events": _event_counts(doc.get("events") or {}),
        "queries": queries,
    }


def _event_counts(events: dict) -> dict:
    """The server events the real logs' truth has the server's own counter for, and the sessions."""
    return {"temp_files": events.get("temp_files", {}).get("count"),
            "deadlocks": events.get("deadlocks", {}).get("count"),
            "lock_waits": events.get("lock_waits", {}).get("count"),
            "sessions": events.get("sessions", {}).get("count")}


# --- mapping tool output to generated shapes ---------------------------------------

def _num(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def by_shape(queries: list[dict]) -> dict:
    """Sum calls and time per shape tag found in each normalized text.

    A shape that appears under several normalized texts was split into several
    fingerprints (e.g. IN lists of different lengths not folded); texts without
    a tag are statements no shape produced (e.g. noise counted as a query).
    Duration statistics are kept for shapes that came out as one query.
    """
    calls, total, variants, stats = defaultdict(int), defaultdict(float), defaultdict(int), {}
    untagged = []
    for q in queries:
        m = loggen.TAG_RE.search(q["text"].lower())
        if not m:
            untagged.append({"normalized": q["text"][:300], "calls": q["calls"]})
            continue
        tag = "s" + m.group(1)
        calls[tag] += q["calls"]
        total[tag] += q["total_ms"]
        variants[tag] += 1
        stats[tag] = q["stats"]
    stats = {tag: st for tag, st in stats.items() if variants[tag] == 1}
    return {"distinct_queries": len(queries), "calls": dict(calls), "total_ms": dict(total),
            "variants": dict(variants), "stats": stats, "untagged": untagged}


def compare(truth: dict, result: dict) -> dict:
    """Per-shape differences between a tool's counts and the ground truth, with a likely cause."""
    mismatches, split = [], []
    for s in truth["shapes"]:
        tag, want = s["tag"], s["calls"]
        got = result["calls"].get(tag, 0)
        if result["variants"].get(tag, 0) > 1:
            split.append(tag)
        if got != want:
            mismatches.append({"tag": tag, "mode": s["mode"], "kind": s["kind"],
                               "multiline": s["multiline"], "truth": want, "got": got,
                               "diff": got - want, "likely": _likely_cause(s, got - want),
                               "template": s["template"][:200]})
    mismatches.sort(key=lambda m: -abs(m["diff"]))
    return {"shapes_matching": len(truth["shapes"]) - len(mismatches), "shapes": len(truth["shapes"]),
            "mismatches": mismatches, "split_shapes": split,
            "untagged_calls": sum(u["calls"] for u in result["untagged"]),
            "durations": compare_durations(truth, result)}


def compare_durations(truth: dict, result: dict) -> dict:
    """How close each shape's total, min, max and quantiles are to the exact values.

    Totals, min and max are sums and extremes of the logged (3-decimal) values,
    so they should match to rounding; quantiles from a sketch are judged by
    their relative error, on shapes with enough calls.
    """
    total_ok, checked = 0, 0
    worst: dict[str, tuple[float, str]] = {}
    exact = {"min_ms": 0, "max_ms": 0}
    for s in truth["shapes"]:
        tag = s["tag"]
        if not s["calls"] or result["calls"].get(tag) != s["calls"]:
            continue
        checked += 1
        got_total = result["total_ms"].get(tag, 0.0)
        total_ok += abs(got_total - s["total_ms"]) <= 0.0005 * s["calls"] + 0.01
        st = result["stats"].get(tag, {})
        for k in exact:
            exact[k] += st.get(k) is not None and abs(st[k] - s[k]) < 0.0005
        if s["calls"] < MIN_CALLS_FOR_QUANTILES:
            continue
        for k in ("p50_ms", "p95_ms", "p99_ms"):
            if st.get(k) is None or not s.get(k):
                continue
            # Both sides print milliseconds to 3 decimals: half a microsecond is rounding.
            err = max(0.0, abs(st[k] - s[k]) - 0.0005) / s[k]
            if err > worst.get(k, (-1.0, ""))[0]:
                worst[k] = (err, tag)
    return {"shapes_checked": checked, "total_ms_match": total_ok,
            **{f"{k}_match": v for k, v in exact.items()},
            "worst_relative_error": {k: {"error": round(e, 4), "shape": t} for k, (e, t) in worst.items()}}


def _likely_cause(shape: dict, diff: int) -> str:
    """Match a count difference against what the generator wrote besides executions."""
    extra = {"errors": shape["errors"], "binds": shape["binds"], "parses": shape["parses"],
             "temp_files": shape["temp_files"]}
    for name, n in extra.items():
        if n and diff == n:
            return f"counted the {name} entries as executions"
    if diff == extra["binds"] + extra["parses"] and diff:
        return "counted parse and bind entries as executions"
    if diff < 0 and shape["multiline"]:
        return "lost executions of a multi-line statement"
    if diff < 0:
        return "lost executions"
    return "counted extra executions"


# --- the run -----------------------------------------------------------------------

LOGS = ("generated", *real_logs.KINDS)
DEFAULT_SIZE_MB = {"generated": 1024.0, **dict.fromkeys(real_logs.KINDS, 200.0)}


def warm_cache(path: Path) -> float:
    """Read the log once so every tool starts from the page cache, not the disk."""
    start = time.perf_counter()
    with open(path, "rb") as f:
        while f.read(16 * MIB):
            pass
    return time.perf_counter() - start


def prepare_log(name: str, args: argparse.Namespace, workdir: Path) -> dict:
    """The log to measure: generated (ground truth per shape) or written by a real server (its counters)."""
    size = args.size_mb or DEFAULT_SIZE_MB[name]
    if name == "generated":
        path, truth, made = loggen.cached_log(str(workdir), size, args.seed, args.shapes)
        case = {"path": Path(path), "prefix": PREFIX, "statements": truth["statements"]}
        how = f"generated in {truth['generation_seconds']} s" if made else "cached"
    else:
        real, truth, made = real_logs.cached_log(workdir / "real", name, size)
        case = {"path": real, "prefix": truth["log_line_prefix"], "statements": truth["expected_statements"]}
        how = f"written by a real server in {truth['seconds']} s" if made else "cached"
    print(f"{name} log: {case['path']} ({truth['bytes'] / MIB:.1f} MiB, {truth['lines']} lines, "
          f"{case['statements']} statements; {how})", file=sys.stderr)
    print(f"page cache warmed in {warm_cache(case['path']):.1f} s", file=sys.stderr)
    return {"name": name, "truth": truth, **case}


def arms(case: dict, args: argparse.Namespace, exes: dict, workdir: Path) -> list[dict]:
    """Every arm run on this log: pgBadger at each -j, the advisor at each --jobs, in one process and through Dask."""
    log, prefix, found = case["path"], case["prefix"], []
    if exes.get("pgbadger"):
        for j in args.pgbadger_jobs:
            out = workdir / f"pgbadger-j{j}.json"
            found.append({"tool": "pgbadger", "jobs": j, "engine": None, "out": out, "reader": read_pgbadger,
                          "cmd": pgbadger_cmd(exes["pgbadger"], log, out, j, workdir, prefix)})
    if exes.get("advisor"):
        for engine, jobs in (("local", args.jobs), ("dask", args.dask_jobs)):
            for j in jobs:
                out = workdir / f"advisor-{engine}-j{j}.json"
                found.append({"tool": "advisor", "jobs": j, "engine": engine, "out": out, "reader": read_advisor,
                              "cmd": advisor_cmd(exes["advisor"], log, out, j, prefix, engine)})
    return found


def run_arm(arm: dict, case: dict, workdir: Path, repeat: int) -> dict:
    """Run one arm ``repeat`` times on the log: median seconds, the largest memory seen, the last output read."""
    name = _run_name(arm)
    print(f"{case['name']}: running {name} ...", file=sys.stderr, flush=True)
    measured = []
    for _ in range(repeat):
        arm["out"].unlink(missing_ok=True)  # a stale output must not pass for this run's
        measured.append(measure(arm["cmd"], workdir, f"{case['name']}-{name}"))
        if measured[-1]["rc"] != 0:
            break
    last = measured[-1]
    run = {"log": case["name"], "tool": arm["tool"], "jobs": arm["jobs"], "engine": arm["engine"], **last,
           "seconds": round(statistics.median(m["seconds"] for m in measured), 3),
           "seconds_each": [m["seconds"] for m in measured],
           **{k: max(m[k] for m in measured) for k in ("peak_rss_mb", "tree_rss_mb", "tree_pss_mb", "processes")}}
    run["mb_per_s"] = round(case["truth"]["bytes"] / MIB / run["seconds"], 2)
    run["lines_per_s"] = round(case["truth"]["lines"] / run["seconds"])
    if last["rc"] != 0 or not arm["out"].exists():
        tail = last["stderr_tail"].strip()
        if arm["engine"] == "dask" and ("No such option" in tail or "advisor[dask]" in tail):
            run["unavailable"] = tail.splitlines()[-1] if tail else "rejected"
        else:
            run["error"] = f"{name} exited with {last['rc']}: " + tail[-600:]
            print(run["error"], file=sys.stderr)
        return run
    try:
        result = arm["reader"](arm["out"])
    except (ValueError, KeyError, TypeError) as e:
        run["error"] = f"cannot read {arm['out']}: {e}"
        return run
    queries = result.pop("queries")
    result["distinct_queries"] = len(queries)
    if case["name"] == "generated":
        result.update(by_shape(queries))
        run["comparison"] = compare(case["truth"], result)
    run["result"] = result
    return run


def profile(case: dict, exe: str, workdir: Path, top: int) -> dict:
    """advisor parse --jobs 1 once under cProfile; the .prof file stays in the workdir."""
    prof = workdir / f"profile-{case['name']}.prof"
    out = workdir / f"profile-{case['name']}.json"
    python = Path(exe).parent / "python"
    cmd = [str(python if python.exists() else sys.executable), "-m", "cProfile", "-o", str(prof), "-m", "advisor.cli",
           *advisor_cmd(exe, case["path"], out, 1, case["prefix"])[1:]]
    print(f"{case['name']}: profiling advisor -j1 ...", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    out.unlink(missing_ok=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-600:]}
    stats = pstats.Stats(str(prof)).stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in stats.values())
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    return {"file": str(prof), "total_tottime": round(total, 3), "top": [
        {"function": _where(key), "ncalls": nc, "tottime": round(tt, 3), "cumtime": round(ct, 3)}
        for key, (_, nc, tt, ct, _) in rows]}


def _where(key: tuple[str, int, str]) -> str:
    """file:line(function), the file relative to the repo or site-packages."""
    path, line, func = key
    if path == "~":
        return func  # a built-in
    for root in (str(REPO) + "/", "site-packages/", "/lib/python"):
        if root in path:
            path = path.split(root, 1)[1]
            break
    return f"{path}:{line}({func})"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Benchmark `advisor parse` against pgBadger on generated and real logs.")
    ap.add_argument("--log", default="all", help=f"which logs, comma-separated: {', '.join(LOGS)} or all (default)")
    ap.add_argument("--size-mb", type=float, help="log size in MiB (default 1024 generated, 200 each real log)")
    ap.add_argument("--jobs", default="1,2", help="advisor --jobs values to run in one process, comma-separated")
    ap.add_argument("--dask-jobs", default="2", help="advisor --engine dask --jobs values ('' for none)")
    ap.add_argument("--pgbadger-jobs", default="1", help="pgBadger -j values to run (the ratio uses -j 1)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each arm; the table shows the median seconds")
    ap.add_argument("--profile", action="store_true", help="also run advisor -j1 once under cProfile on each log")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--shapes", type=int, default=300, help="distinct statement shapes (generated log)")
    ap.add_argument("--workdir", type=Path, default=REPO / "bench-out")
    ap.add_argument("--keep", action="store_true", help="keep the tools' output files (the logs are always cached)")
    ap.add_argument("--tools", default="pgbadger,advisor", help="which arms to run")
    ap.add_argument("--advisor", help="advisor executable (default: the repo's .venv/bin/advisor)")
    ap.add_argument("--top", type=int, default=15, help="rows in the per-shape table and the profile")
    args = ap.parse_args(argv)
    args.jobs, args.dask_jobs, args.pgbadger_jobs = ([int(j) for j in v.split(",") if j]
                                                     for v in (args.jobs, args.dask_jobs, args.pgbadger_jobs))
    args.tools = {t.strip() for t in args.tools.split(",")}
    args.logs = list(LOGS) if args.log == "all" else [n.strip() for n in args.log.split(",") if n.strip()]
    unknown = set(args.logs) - set(LOGS)
    if unknown:
        ap.error(f"unknown --log {', '.join(sorted(unknown))}: choose among {', '.join(LOGS)} or all")
    return args


def find_tools(args: argparse.Namespace) -> tuple[dict, dict, list[str]]:
    """The executables of the arms asked for, their versions, and what is missing."""
    exes: dict = {}
    versions: dict = {}
    errors: list[str] = []
    if "pgbadger" in args.tools:
        exes["pgbadger"] = ensure_pgbadger()
        if exes["pgbadger"]:
            versions["pgbadger"] = pgbadger_version(exes["pgbadger"])
    if "advisor" in args.tools:
        exes["advisor"] = advisor_exe(args.advisor)
        if not exes["advisor"]:
            errors.append("advisor executable not found: run scripts/setup.sh, or pass --advisor PATH")
        else:
            versions["advisor"] = advisor_version(exes["advisor"])
            versions["advisor_revision"] = advisor_revision()
    return exes, versions, errors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    exes, versions, errors = find_tools(args)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(), **versions}
    print(f"machine: {machine['cpus']} CPUs; pgBadger {versions.get('pgbadger', '-')}, "
          f"advisor {versions.get('advisor_revision') or versions.get('advisor', '-')}", file=sys.stderr)
    reports = {}
    for name in args.logs:
        case = prepare_log(name, args, workdir)
        runs = [run_arm(arm, case, workdir, args.repeat) for arm in arms(case, args, exes, workdir)]
        errors += [f"{name}: {r['error']}" for r in runs if "error" in r]
        reports[name] = build_report(case, runs)
        if args.profile and exes.get("advisor"):
            reports[name]["profile"] = profile(case, exes["advisor"], workdir, args.top)
        print_report(reports[name], case["truth"], args.top)
        if not args.keep:
            for arm in arms(case, args, {}, workdir):
                arm["out"].unlink(missing_ok=True)
    doc = {"machine": machine, "repeat": args.repeat, "logs": reports, "errors": errors}
    (workdir / "results.json").write_text(json.dumps(doc, indent=1))
    print(f"\nresults: {workdir / 'results.json'}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


def build_report(case: dict, runs: list[dict]) -> dict:
    base = next((r for r in runs if r["tool"] == "pgbadger" and r["jobs"] == 1 and "result" in r), None)
    for r in runs:
        r["ratio_vs_pgbadger"] = round(r["mb_per_s"] / base["mb_per_s"], 2) if base and "result" in r else None
    adv1 = next((r for r in runs if _run_name(r) == "advisor-j1" and "result" in r), None)
    targets = {
        "ratio_target": TARGET_RATIO,
        "ratio_j1": adv1["ratio_vs_pgbadger"] if adv1 else None,
        "rss_target_mb": TARGET_RSS_MB,
        "rss_by_run": {_run_name(r): r["peak_rss_mb"] for r in runs if r["tool"] == "advisor" and "result" in r},
    }
    truth = case["truth"]
    return {
        "name": case["name"],
        "log": {k: v for k, v in truth.items() if k != "shapes"} | {"path": str(case["path"]),
                                                                    "statements": case["statements"]},
        "runs": runs,
        "targets": targets,
        **({"shapes": truth["shapes"]} if "shapes" in truth else {}),
    }


# --- printing ----------------------------------------------------------------------

def _table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_report(report: dict, truth: dict, top: int) -> None:
    runs, log = report["runs"], report["log"]
    if "shapes" in report:
        what = (f"{log['statements']} executions ({log['counts']['simple']} simple, {log['counts']['unnamed']} unnamed "
                f"extended, {log['counts']['named']} named extended), {len(truth['shapes'])} shapes")
    else:
        what = f"written by a real server for {report['name']} clients, {log['statements']} statements expected"
    print(f"\n== {report['name']} log: {log['bytes'] / MIB:.1f} MiB, {log['lines']} lines, {what}; "
          f"{os.cpu_count()} CPUs\n")
    print(_table(["arm", "seconds", "MB/s", "lines/s", "vs pgBadger -j1", "peak RSS MB", "tree PSS MB", "procs",
                  "statements"], [_speed_row(r) for r in runs]))
    if any(len(r.get("seconds_each", ())) > 1 for r in runs):
        print("seconds: the median of " + "; ".join(f"{_run_name(r)} {r['seconds_each']}" for r in runs
                                                   if "seconds_each" in r))
    print_targets(report["targets"])
    if "shapes" in report:
        print_totals(runs, log, truth)
        print_per_shape(runs, truth, top)
        print_mismatches(runs)
        print_durations(runs)
    else:
        print_server_counts(runs, log)
    if "profile" in report:
        print_profile(report["name"], report["profile"])


def _speed_row(r: dict) -> list:
    if "unavailable" in r:
        return [_run_name(r), "not available", None, None, None, None, None, None, r["unavailable"][:60]]
    if "error" in r:
        return [_run_name(r), "failed", None, None, None, None, None, None, None]
    return [_run_name(r), r["seconds"], r["mb_per_s"], r["lines_per_s"],
            f"{r['ratio_vs_pgbadger']}x" if r.get("ratio_vs_pgbadger") else None,
            r["peak_rss_mb"], r["tree_pss_mb"], r["processes"], r["result"]["statements"]]


def print_server_counts(runs: list[dict], log: dict) -> None:
    """A real log's statements and events beside the server's own counters."""
    server, client = log["server"], log["client"]
    print(f"\nstatements expected in the log: {log['statements']} = pg_stat_statements calls "
          f"{server['pg_stat_statements_calls']} + {client.get('uncounted_utility', 0)} prepared utility executions "
          f"it does not count ({server['pg_stat_statements_dealloc']} entries evicted).")
    print("  " + log["comparison"])
    rows = []
    for r in runs:
        if "result" not in r:
            continue
        res = r["result"]
        events = res.get("events") or {}
        rows.append([_run_name(r), res["statements"], res["statements"] - log["statements"], res.get("plans"),
                     events.get("temp_files"), events.get("deadlocks"), events.get("lock_waits"),
                     events.get("sessions"), res.get("skipped_count")])
    rows.append(["server (expected)", log["statements"], 0, None, server["temp_files"], server["deadlocks"], None, None, None])
    print(_table(["source", "statements", "vs expected", "plans", "temp files", "deadlocks", "lock waits",
                  "sessions", "skipped"], rows))
    print("pgBadger counts each auto_explain plan as a query as well (its excess equals the advisor's plans); "
          "its events are not read here (benchmarks/pgbadger_events.py compares them).")


def print_profile(name: str, prof: dict) -> None:
    if "error" in prof:
        print(f"\nprofile of advisor -j1 on {name} failed: {prof['error']}")
        return
    print(f"\nprofile of advisor -j1 on {name}: top {len(prof['top'])} by own time of {prof['total_tottime']} s "
          f"({prof['file']})")
    print(_table(["tottime", "cumtime", "ncalls", "function"],
                 [[p["tottime"], p["cumtime"], p["ncalls"], p["function"]] for p in prof["top"]]))


def print_targets(t: dict) -> None:
    ratio = t["ratio_j1"]
    verdict = "-" if ratio is None else ("met" if ratio >= t["ratio_target"] else "MISSED")
    shown = "-" if ratio is None else f"{ratio}x"
    print(f"\ntarget: advisor -j1 >= {t['ratio_target']:g}x pgBadger -j1 MB/s: {shown} ({verdict})")
    for name, mb in t["rss_by_run"].items():
        print(f"target: {name} peak RSS < {t['rss_target_mb']:g} MB: {mb} MB "
              f"({'met' if mb < t['rss_target_mb'] else 'MISSED'})")


def _run_name(r: dict) -> str:
    return f"{r['tool']}{'-dask' if r.get('engine') == 'dask' else ''}-j{r['jobs']}"


def print_totals(runs: list[dict], log: dict, truth: dict) -> None:
    used = sum(1 for s in truth["shapes"] if s["calls"])
    rows = [["ground truth", log["statements"], used, log["lines"], None, None, None]]
    for r in runs:
        if "result" not in r:
            continue
        res, cmp_ = r["result"], r["comparison"]
        rows.append([_run_name(r), res["statements"], res["distinct_queries"], res.get("lines"),
                     f"{cmp_['shapes_matching']}/{cmp_['shapes']}", len(cmp_["split_shapes"]),
                     cmp_["untagged_calls"]])
    print("\nexecutions counted (parse/bind entries, errors and temp-file STATEMENTs are not executions):")
    print(_table(["source", "executions", "distinct queries", "lines", "shapes exact", "shapes split",
                  "untagged calls"], rows))
    for r in runs:
        if r["tool"] == "pgbadger" and "result" in r:
            res = r["result"]
            print(f"{_run_name(r)}: errors_number={res['errors']} (generated ERROR entries: "
                  f"{log['counts']['errors']}); parse/bind/execute durations (ms): "
                  f"{json.dumps(res['duration_by_step_ms'])}")
        if r["tool"] == "advisor" and "result" in r:
            res = r["result"]
            print(f"{_run_name(r)}: schema_version={res['schema_version']} skipped_count={res['skipped_count']}")


def print_per_shape(runs: list[dict], truth: dict, top: int) -> None:
    done = [r for r in runs if "result" in r]
    shapes = sorted(truth["shapes"], key=lambda s: -s["calls"])[:top]
    rows = []
    for s in shapes:
        row = [s["tag"], s["kind"], s["mode"] + ("+ml" if s["multiline"] else ""), s["calls"]]
        for r in done:
            got = r["result"]["calls"].get(s["tag"], 0)
            v = r["result"]["variants"].get(s["tag"], 0)
            row.append(f"{got}{'' if got == s['calls'] else ' !'}{f' ({v} fps)' if v > 1 else ''}")
        adv = next((r for r in done if r["tool"] == "advisor"), None)
        if adv:
            got_ms = adv["result"]["total_ms"].get(s["tag"], 0.0)
            row.append(f"{s['total_ms']:.1f}/{got_ms:.1f}")
        rows.append(row)
    headers = ["shape", "kind", "protocol", "truth"] + [_run_name(r) for r in done]
    if any(r["tool"] == "advisor" for r in done):
        headers.append("total ms truth/advisor")
    print(f"\ntop {top} shapes by executions ('!' differs from truth, 'fps' = split into fingerprints):")
    print(_table(headers, rows))


def print_mismatches(runs: list[dict]) -> None:
    for r in runs:
        if "comparison" not in r:
            continue
        c = r["comparison"]
        if not c["mismatches"] and not c["split_shapes"] and not c["untagged_calls"]:
            continue
        print(f"\n{_run_name(r)}: {len(c['mismatches'])} shapes with wrong counts, "
              f"{len(c['split_shapes'])} split, {c['untagged_calls']} calls on queries no shape produced")
        for m in c["mismatches"][:10]:
            print(f"  {m['tag']} ({m['mode']}{', multi-line' if m['multiline'] else ''}): truth {m['truth']}, "
                  f"got {m['got']} ({m['diff']:+d}; {m['likely']})\n      {m['template'][:150]!r}")
        for u in r["result"]["untagged"][:5]:
            print(f"  untagged: {u['calls']} calls: {u['normalized'][:150]!r}")


def print_durations(runs: list[dict]) -> None:
    print("\ndurations, on shapes whose count is right (total/min/max: equal to rounding; "
          f"quantiles: worst relative error beyond rounding, over shapes with >= {MIN_CALLS_FOR_QUANTILES} calls):")
    for r in runs:
        if "comparison" not in r:
            continue
        d = r["comparison"]["durations"]
        n = d["shapes_checked"]
        worst = ", ".join(f"{k[:-3]} {v['error']:.2%} ({v['shape']})" for k, v in d["worst_relative_error"].items())
        print(f"  {_run_name(r)}: total_ms {d['total_ms_match']}/{n}, min {d['min_ms_match']}/{n}, "
              f"max {d['max_ms_match']}/{n}" + (f"; {worst}" if worst else ""))


if __name__ == "__main__":
    sys.exit(main())
