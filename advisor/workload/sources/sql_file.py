"""A file of SQL statements as a workload source: each statement one untimed execution.

``advisor suggest-indexes --sql FILE`` costs the statements a team plans to run, or a
workload written down by hand. Like every source it aggregates by fingerprint: two
statements that differ only in literals are one query that weighs 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from advisor.errors import AdvisorError
from advisor.workload.model import Execution
from advisor.workload.sources.partial import Partial, Reading
from advisor.workload.stats import WorkloadStats


@dataclass(frozen=True, slots=True)
class SqlFile:
    """The source: statements in ``path``, each ending with ';' at the end of a line."""

    path: Path
    label: str = "reading the SQL file"

    def read(self, reading: Reading) -> Partial:
        stats = WorkloadStats()
        for line, sql in statements(self.path):
            stats.add(Execution(sql, file=str(self.path), line=line), source="sql")
        return Partial(stats, reading.patterns(), other_sources=[str(self.path)])


def statements(path: Path) -> list[tuple[int, str]]:
    """(line where it starts, text without the ';') of every statement in the file."""
    try:
        text = path.read_text()
    except OSError as e:
        raise AdvisorError(f"cannot read {path}: {e.strerror}", "check the path given to --sql") from e
    found, line = [], 1
    for chunk in text.replace("\r\n", "\n").split(";\n"):
        sql = chunk.strip().rstrip(";").strip()
        if sql:
            leading = chunk[: len(chunk) - len(chunk.lstrip())]
            found.append((line + leading.count("\n"), sql))
        line += chunk.count("\n") + 1
    if not found:
        raise AdvisorError(f"no statements in {path}", "end each statement with ';' at the end of a line")
    return found
