"""The one severity rule every check uses: a finding's cost as a share of the workload's time, and in all."""

from __future__ import annotations

import pytest

from advisor.findings import Severity
from advisor.thresholds import DEFAULT


@pytest.mark.parametrize(("impact_ms", "workload_ms", "expected"), [
    (49.0, 49.0, Severity.low),  # `pgbench -i`'s 200 inserts: all of its log, but 49 ms
    (34_000.0, 150_000.0, Severity.high),  # an N+1 of 34 s in a 2.5 min workload
    (34_000.0, 400_000.0, Severity.medium),  # the same N+1 in a longer log: 8.5 %
    (34_000.0, 3_600_000.0, Severity.low),  # … in an hour of heavy traffic: under 1 %
    (9_000.0, 10_000.0, Severity.medium),  # most of the time, but under 10 s in all
    (None, 1_000.0, Severity.low),  # no impact in time (index hygiene): nothing says it matters more
    (5_000.0, 0.0, Severity.low),  # no workload total to weigh it against
])
def test_severity_weighs_share_and_absolute_time(impact_ms, workload_ms, expected):
    assert DEFAULT.severity(impact_ms, workload_ms) is expected
