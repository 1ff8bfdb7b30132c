"""The benchmarks' output: the versioned JSON documents and the Rich renderings of `advisor bench pool` and
`advisor bench replicas`. The fields are documented where they are measured (the docstrings of
``advisor.bench.pool`` and ``advisor.bench.replicas``); the nightly report embeds the pool document."""

from __future__ import annotations

from dataclasses import asdict

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from advisor import __version__
from advisor.bench.pool import PoolBenchResult
from advisor.bench.replicas import ReplicaBenchResult
from advisor.bench.replicas_verdict import percent

POOL_SCHEMA_VERSION = 1
REPLICAS_SCHEMA_VERSION = 1


def _num(x: float | None, fmt: str = ",.2f") -> str:
    return "-" if x is None else format(x, fmt)


# --- bench pool ------------------------------------------------------------------------------


def pool_bench_document(result: PoolBenchResult) -> dict:
    """The versioned JSON document (see ``advisor.bench.pool``)."""
    return {
        "schema_version": POOL_SCHEMA_VERSION,
        "kind": "bench_pool",
        "tool_version": __version__,
        "dsn": result.dsn,
        "host_cores": result.host_cores,
        "server_local": result.server_local,
        "server_version_num": result.server_version_num,
        "max_connections": result.max_connections,
        "reserved_connections": result.reserved_connections,
        "query": result.query,
        "workload": result.workload,
        "settings": result.settings,
        "arms": [asdict(a) for a in result.arms],
        "verdict": result.verdict,
        "notes": list(result.notes),
    }


def _arm_table(title: str, columns: tuple[str, ...]) -> Table:
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1),
              collapse_padding=True, show_edge=False)
    for name in ("mode", "via", "conc", *columns):
        t.add_column(name, justify="left" if name in ("mode", "via") else "right", no_wrap=True)
    return t


def pool_bench_text(result: PoolBenchResult) -> Group:
    """The arms as a table, then the verdict and notes in plain words."""
    throughput = _arm_table("throughput", ("requests", "ops/s", "connect ms", "err/t.o.", "peak"))
    latency = _arm_table("latency of a request, ms", ("p50", "p95", "p99", "max"))
    for a in result.arms:
        arm = (a.mode, a.transport, str(a.concurrency))
        connect = "-" if a.connect_ms is None else f"{a.connect_ms:.2f}/{_num(a.connect_p95_ms)}"
        throughput.add_row(*arm, f"{a.requests:,}", _num(a.ops_per_s, ",.0f"), connect, f"{a.errors}/{a.timeouts}",
                           "-" if a.peak_backends is None else str(a.peak_backends))
        latency.add_row(*arm, _num(a.p50_ms), _num(a.p95_ms), _num(a.p99_ms), _num(a.max_ms))
    legend = Text("connect ms: mean/p95 to open one connection during the window (- none opened); err/t.o.: failed "
                  "and timed-out requests; peak: most backends of this database at once (sampled every 100 ms)",
                  style="dim")
    major, minor = divmod(result.server_version_num, 10000)
    head = Text(f"server: PostgreSQL {major}.{minor} ({result.dsn}), max_connections {result.max_connections}; "
                f"host cores: {result.host_cores}; query: {result.query}")
    notes = [Text(f"  {a.mode}/{a.transport}/{a.concurrency}: {a.note}") for a in result.arms if a.note]
    return Group(head, throughput, legend, latency, *_verdict_and_notes(result.verdict, notes, result.notes))


def _verdict_and_notes(verdict: dict, arm_notes: list[Text], notes: tuple[str, ...]) -> list[Text]:
    """The verdict's sentences, then what the arms noted, then the run's notes (if any)."""
    lines = [Text("verdict:", style="bold"), *(Text(f"  {s}") for s in verdict["summary"]), *arm_notes]
    if notes:
        lines.append(Text("notes:", style="bold"))
        lines += [Text(f"  {n}") for n in notes]
    return lines


# --- bench replicas ------------------------------------------------------------------------


def replica_bench_document(result: ReplicaBenchResult) -> dict:
    """The versioned JSON document (see ``advisor.bench.replicas``)."""
    return {
        "schema_version": REPLICAS_SCHEMA_VERSION,
        "kind": "bench_replicas",
        "tool_version": __version__,
        "primary": result.primary,
        "replicas": list(result.replicas),
        "host_cores": result.host_cores,
        "settings": result.settings,
        "arms": [dict(asdict(a), replica_share=None if a.replica_share is None else round(a.replica_share, 4))
                 for a in result.arms],
        "lag": result.lag,
        "drill": result.drill,
        "verdict": result.verdict,
        "notes": list(result.notes),
    }


def _replica_arms(result: ReplicaBenchResult) -> Table:
    t = Table(title="arms", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("arm", "rwy", "requests", "ops/s", "p50", "p95", "p99", "stale", "failed", "on replicas",
                "fallbacks", "eject"):
        t.add_column(col, justify="left" if col in ("arm", "rwy") else "right", no_wrap=True)
    for a in result.arms:
        t.add_row(a.name, a.read_your_writes or "-", f"{a.requests:,}", _num(a.ops_per_s, ",.0f"), _num(a.p50_ms),
                  _num(a.p95_ms), _num(a.p99_ms), str(a.stale_reads), str(a.failed_requests),
                  "-" if a.replica_share is None else percent(a.replica_share), str(a.fallbacks), str(a.ejections))
    return t


def _lag_and_drill(result: ReplicaBenchResult) -> list[Text]:
    """Each replica's worst lag over the run, and what the failure drill measured."""
    lines = []
    for rep in result.lag["replicas"]:
        ok = [s for s in rep["samples"] if s[1] is not None]
        if ok:
            lines.append(Text(f"lag {rep['dsn']}: max {max(s[1] for s in ok):,} bytes, "
                              f"max {max((s[2] or 0) for s in ok):,.0f} ms over {len(rep['samples'])} samples "
                              f"({len(rep['samples']) - len(ok)} failed)"))
    if result.drill:
        d = result.drill
        lines.append(Text(f"drill ({d['replica']}): ejected after {_num(d['ejected_after_s'])} s, "
                          f"failed reads {d['failed_reads']} ({d['failed_reads_after_ejection']} after ejection), "
                          f"restarted {d['restarted']}, re-admitted after {_num(d['readmitted_after_s'])} s, "
                          f"first read after restart {_num(d['first_read_after_restart_s'])} s"))
    return lines


def replica_bench_text(result: ReplicaBenchResult) -> Group:
    """Arms, lag summary, drill, verdict, notes."""
    head = Text(f"primary {result.primary}; replicas {', '.join(result.replicas)}; host cores {result.host_cores}")
    legend = Text("latency in ms per request (a read, or a write with its read-back); on replicas: the share of "
                  "reads a standby answered (pg_is_in_recovery() of the server, read with each row)", style="dim")
    notes = [Text(f"  {a.name}: {a.note}") for a in result.arms if a.note]
    return Group(head, _replica_arms(result), legend, *_lag_and_drill(result),
                 *_verdict_and_notes(result.verdict, notes, result.notes))
