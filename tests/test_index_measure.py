"""index_bench --measure's rank correlation (benchmarks/index_measure.py): Spearman's rho, ties averaged,
checked against values worked out by hand and against scipy's definition (Pearson's r of average ranks)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parent.parent / "benchmarks" / "index_measure.py"


def _module():
    spec = importlib.util.spec_from_file_location("index_measure", MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


im = _module()


def test_ranks_average_ties():
    assert im.ranks([10.0, 30.0, 20.0, 30.0]) == [1.0, 3.5, 2.0, 3.5]


def test_same_and_reversed_order():
    assert im.spearman([1, 2, 3, 4], [10, 20, 30, 400]) == pytest.approx(1.0)
    assert im.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_without_ties_it_is_the_textbook_formula():
    xs, ys = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    d2 = sum((a - b) ** 2 for a, b in zip(im.ranks(xs), im.ranks(ys)))
    assert im.spearman(xs, ys) == pytest.approx(1 - 6 * d2 / (5 * (25 - 1)))  # 0.8


def test_ties_by_hand():
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 2, 3, 4]: r = 4.5 / sqrt(4.5 * 5)
    assert im.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)


def test_constant_or_short_input_has_no_correlation():
    assert im.spearman([1, 1, 1], [1, 2, 3]) is None
    assert im.spearman([1], [2]) is None


def test_named_index_ddl():
    name, table, ddl = im.named("CREATE INDEX ON public.lineitem USING btree (l_partkey) INCLUDE (l_qty)", 3)
    assert (name, table) == ("bench_measure_3", "public.lineitem")
    assert ddl == "CREATE INDEX bench_measure_3 ON public.lineitem USING btree (l_partkey) INCLUDE (l_qty)"


def test_correlations_per_query_pooled_and_by_ratio():
    arms = [im.Arm("none", [], [10.0, 20.0]), im.Arm("a", [], [5.0, 20.0]), im.Arm("b", [], [1.0, 10.0])]

    def result(real, seconds):
        return {"real_costs": real, "queries": [{"seconds": s} for s in seconds]}

    results = [result([10, 20], [1.0, 2.0]), result([5, 20], [0.6, 2.1]), result([1, 10], [0.2, 1.0])]
    out = im.correlations(arms, results)
    assert out["spearman_per_query"][0] == pytest.approx(1.0)  # costs 10 > 5 > 1, seconds 1 > 0.6 > 0.2
    assert out["spearman_per_query"][1] == pytest.approx(im.spearman([20, 20, 10], [2.0, 2.1, 1.0]))
    assert out["spearman_all"] == pytest.approx(im.spearman([10, 20, 5, 20, 1, 10], [1, 2, 0.6, 2.1, 0.2, 1]))
    # the arms but the first, as ratios to it: costs 0.5, 1, 0.1, 0.5; seconds 0.6, 1.05, 0.2, 0.5
    assert out["spearman_ratios"] == pytest.approx(im.spearman([0.5, 1, 0.1, 0.5], [0.6, 1.05, 0.2, 0.5]))
