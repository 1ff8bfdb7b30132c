"""What checks report: findings, ranked by estimated impact. Shared by scan, index advice and reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from advisor.workload.model import Workload


class Severity(IntEnum):
    """Ordered, so ``--fail-on medium`` means medium and above."""

    info = 0
    low = 1
    medium = 2
    high = 3

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Finding:
    code: str  # stable, e.g. "ADV001"; documented in the check's module docstring
    check: str  # the check's name, e.g. "full_scan"
    severity: Severity
    title: str  # one line a person reads first
    suggestion: str  # the fix: SQL or code, ready to use
    fingerprint: str | None = None  # the query it is about, if any
    normalized: str | None = None  # that query's normalized text (literals masked)
    tables: tuple[str, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict)  # numbers and plan excerpts behind the finding
    impact_ms: float | None = None  # estimated time the problem costs over the workload's window
    application: str | None = None  # application_name or sqlcommenter tags: where the query comes from

    def sort_key(self) -> tuple:
        """Highest impact first, then severity; findings without an impact estimate last."""
        return (self.impact_ms is None, -(self.impact_ms or 0.0), -self.severity, self.code, self.fingerprint or "")


@dataclass(frozen=True, slots=True)
class NotExplained:
    fingerprint: str
    normalized: str
    reason: str


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What `advisor scan` found, with what it read and what it could not examine: what renderers read."""

    workload: Workload
    findings: tuple[Finding, ...]
    explained: int = 0
    not_explained: tuple[NotExplained, ...] = ()
    skipped_checks: tuple[tuple[str, str], ...] = ()  # (check code and name, why)
    server_version_num: int | None = None
    superuser: bool = False
    round_trip_ms: float | None = None  # measured; None when assumed from the config
    notes: tuple[str, ...] = ()
