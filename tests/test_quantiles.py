"""stats.Quantiles: exact below EXACT_LIMIT values, a DDSketch beyond whose answers stay within its
stated relative error and do not depend on how the values were split into merged parts."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from ddsketch import LogCollapsingLowestDenseDDSketch

from advisor.workload.stats import EXACT_LIMIT, PENDING_LIMIT, RELATIVE_ACCURACY, SKETCH_BINS, Quantiles

QS = (0.5, 0.95, 0.99)


def _durations(n: int, seed: int) -> list[float]:
    """Durations as a log writes them: milliseconds to three decimals, heavy-tailed, many repeats."""
    rng = random.Random(seed)
    return [round(rng.lognormvariate(-2.5, 1.2), 3) + 0.001 for _ in range(n)]


def _filled(values: list[float]) -> Quantiles:
    q = Quantiles()
    for v in values:
        q.add(v)
    return q


@pytest.mark.parametrize("n", [EXACT_LIMIT, EXACT_LIMIT + 1, 20_000])
def test_quantiles_stay_within_the_stated_error(n):
    values = _durations(n, seed=n)
    q, ordered = _filled(values), sorted(values)
    for rank in QS:
        exact = ordered[int(rank * (n - 1))]
        if n <= EXACT_LIMIT:
            assert q.quantile(rank) == exact
        else:
            assert abs(q.quantile(rank) - exact) <= RELATIVE_ACCURACY * exact


def test_waiting_counts_give_the_sketch_one_add_per_value_would():
    values = _durations(50_000, seed=7)
    assert len(set(values[EXACT_LIMIT:])) > PENDING_LIMIT  # the waiting counts are flushed several times
    plain = LogCollapsingLowestDenseDDSketch(RELATIVE_ACCURACY, bin_limit=SKETCH_BINS)
    for v in values:
        plain.add(v)
    assert [_filled(values).quantile(r) for r in QS] == [plain.get_quantile_value(r) for r in QS]


@pytest.mark.parametrize("cuts", [(1,), (EXACT_LIMIT - 3,), (100, 5_000, 9_000), (EXACT_LIMIT + 7, 19_000)])
def test_merged_parts_answer_as_the_single_pass(cuts):
    values = _durations(20_000, seed=3)
    bounds = [0, *cuts, len(values)]
    parts = [_filled(values[a:b]) for a, b in pairwise(bounds)]
    whole = parts[0]
    for part in parts[1:]:
        whole.merge(part)
    single = _filled(values)
    assert [whole.quantile(r) for r in QS] == [single.quantile(r) for r in QS]
