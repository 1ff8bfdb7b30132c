"""The one render dispatch: a command's result and an output format to what is written.

A renderer returns a JSON document (a dict), plain text (markdown, SQL) or a Rich renderable
(the text tables); ``write`` puts any of them on stdout or into a file. The CLI asks for
nothing else, so a new result or format is one line in ``RENDERERS``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType

from advisor.bench.pool_model import PoolBenchResult
from advisor.bench.replicas_model import ReplicaBenchResult
from advisor.findings import ScanResult
from advisor.indexes.selection import Advice
from advisor.report.bench import pool_bench_document, pool_bench_text, replica_bench_document, replica_bench_text
from advisor.report.jsondoc import advice_document, scan_document, workload_document
from advisor.report.markdown import scan_markdown
from advisor.report.migration import advice_migration
from advisor.report.text import advice_summary, scan_summary, workload_summary
from advisor.workload.model import Workload

Rendered = dict | str | RenderableType


@dataclass(frozen=True, slots=True)
class View:
    """What the user asked to see: how many rows (None: the format's default) and literal values or not."""

    top: int | None = None
    show_values: bool = False


RENDERERS: dict[tuple[type, str], Callable[[Any, View], Rendered]] = {
    (Workload, "json"): lambda w, v: workload_document(w, top=v.top, show_values=v.show_values),
    (Workload, "text"): lambda w, v: workload_summary(w, top=v.top or 20),
    (ScanResult, "json"): lambda r, v: scan_document(r, show_values=v.show_values),
    (ScanResult, "markdown"): lambda r, v: scan_markdown(r, top=v.top or 20),
    (ScanResult, "text"): lambda r, v: scan_summary(r, top=v.top or 20, show_values=v.show_values),
    (Advice, "json"): lambda a, _: advice_document(a),
    (Advice, "sql"): lambda a, _: advice_migration(a),
    (Advice, "text"): lambda a, _: advice_summary(a),
    (PoolBenchResult, "json"): lambda r, _: pool_bench_document(r),
    (PoolBenchResult, "text"): lambda r, _: pool_bench_text(r),
    (ReplicaBenchResult, "json"): lambda r, _: replica_bench_document(r),
    (ReplicaBenchResult, "text"): lambda r, _: replica_bench_text(r),
}


def render(result: object, fmt: str, view: View = View()) -> Rendered:
    return RENDERERS[type(result), fmt](result, view)


def write(rendered: Rendered, output: Path | None = None) -> None:
    """JSON indented, text as it is, a Rich renderable to the terminal, or to a file (at a width that does not fold)."""
    if isinstance(rendered, dict):
        rendered = json.dumps(rendered, indent=2, ensure_ascii=False) + "\n"
    if isinstance(rendered, str):
        if output is None:
            sys.stdout.write(rendered)
        else:
            output.write_text(rendered)
        return
    if output is None:
        Console().print(rendered)
        return
    with open(output, "w") as file:
        Console(file=file, width=200).print(rendered)
