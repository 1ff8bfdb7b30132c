"""The one render dispatch: a command's result and an output format to what is written.

A renderer returns a JSON document (a dict), plain text (markdown, SQL) or a Rich renderable
(the text tables); ``write`` puts any of them on stdout or into a file. The CLI asks for
nothing else, so a new result or format is one line in ``RENDERERS``.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType

Rendered = dict | str | RenderableType


@dataclass(frozen=True, slots=True)
class View:
    """What the user asked to see: how many rows (None: the format's default) and literal values or not."""

    top: int | None = None
    show_values: bool = False


def _lazy(module: str, name: str) -> Callable[..., Rendered]:
    """A renderer imported when first called: a command loads only its own (``parse`` neither the
    index advice's nor the benchmarks', which bring psycopg, sqlglot's optimizer and the bench models)."""

    def call(*args: Any, **kwargs: Any) -> Rendered:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


_JSON, _TEXT, _BENCH = "advisor.report.jsondoc", "advisor.report.text", "advisor.report.bench"

# Keyed by the result's type name, so that no result's module is imported before it is rendered.
RENDERERS: dict[tuple[str, str], Callable[[Any, View], Rendered]] = {
    ("Workload", "json"): lambda w, v: _lazy(_JSON, "workload_document")(w, top=v.top, show_values=v.show_values),
    ("Workload", "text"): lambda w, v: _lazy(_TEXT, "workload_summary")(w, top=v.top or 20),
    ("ScanResult", "json"): lambda r, v: _lazy(_JSON, "scan_document")(r, show_values=v.show_values),
    ("ScanResult", "markdown"): lambda r, v: _lazy("advisor.report.markdown", "scan_markdown")(r, top=v.top or 20),
    ("ScanResult", "text"): lambda r, v: _lazy(_TEXT, "scan_summary")(r, top=v.top or 20, show_values=v.show_values),
    ("Advice", "json"): lambda a, _: _lazy(_JSON, "advice_document")(a),
    ("Advice", "sql"): lambda a, _: _lazy("advisor.report.migration", "advice_migration")(a),
    ("Advice", "text"): lambda a, _: _lazy(_TEXT, "advice_summary")(a),
    ("PoolBenchResult", "json"): lambda r, _: _lazy(_BENCH, "pool_bench_document")(r),
    ("PoolBenchResult", "text"): lambda r, _: _lazy(_BENCH, "pool_bench_text")(r),
    ("ReplicaBenchResult", "json"): lambda r, _: _lazy(_BENCH, "replica_bench_document")(r),
    ("ReplicaBenchResult", "text"): lambda r, _: _lazy(_BENCH, "replica_bench_text")(r),
}


def render(result: object, fmt: str, view: View = View()) -> Rendered:
    return RENDERERS[type(result).__name__, fmt](result, view)


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
