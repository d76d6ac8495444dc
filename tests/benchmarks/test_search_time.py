"""benchmarks.search_time: the time-to-best table over several seeds."""

import pytest

from benchmarks.search_time import median_seconds, run_size
from models.zoo import build_graph


@pytest.mark.parametrize("seconds, expected", [
    ([0.3, 0.1, 0.2], 0.2),
    ([0.3, None, 0.1], 0.3),  # a seed not within 1% counts as the slowest
    ([None, 0.1, None], None),  # most seeds not within 1%: no median time
    ([0.1, None], None),  # half the seeds: the median is one of them
    ([0.4, 0.2, None, 0.1], 0.3),
])
def test_the_median_counts_a_seed_not_within_1pct_as_the_slowest(seconds, expected):
    assert median_seconds(seconds) == (pytest.approx(expected) if expected is not None else None)


def test_every_seed_is_timed_against_the_best_reference_of_all_seeds():
    graph = build_graph("alexnet", "tiny-imagenet", 128)
    row = run_size(graph, 4, iterations=40, seeds=(0, 1))
    assert row["seeds"] == [0, 1]
    assert row["reference_best_ms"] == min(row["reference_best_ms_by_seed"])
    assert all(0 < iterations <= 10 * 40 for iterations in row["reference_iterations"])
    for delta_s, full_s, searched_ms in zip(row["delta_s_by_seed"], row["full_s_by_seed"], row["searched_ms_by_seed"]):
        assert (delta_s is None) == (full_s is None)  # full and delta make the same decisions
        assert (delta_s is not None) == (searched_ms <= 1.01 * row["reference_best_ms"])
    assert row["within_1pct"] == sum(seconds is not None for seconds in row["delta_s_by_seed"])
    assert row["delta_s"] == median_seconds(row["delta_s_by_seed"])
    assert row["best_baseline_ms"] / row["reference_best_ms"] == pytest.approx(row["speedup_over_best_baseline"])


def test_a_given_reference_replaces_the_reference_searches():
    graph = build_graph("alexnet", "tiny-imagenet", 128)
    searched = run_size(graph, 4, iterations=40, seeds=(0,))["searched_ms_by_seed"][0]
    # Just above what the seed's search ends at: within 1% from some iteration on. Far below: never.
    reachable = run_size(graph, 4, iterations=40, seeds=(0,), reference_ms=searched)
    unreachable = run_size(graph, 4, iterations=40, seeds=(0,), reference_ms=searched / 2)
    for row in (reachable, unreachable):
        assert row["reference_best_ms_by_seed"] == [] and row["reference_iterations"] == []
    # The same search, stopped as soon as it is within 1% of the target, or run to its end.
    assert reachable["reference_best_ms"] == searched and reachable["within_1pct"] == 1
    assert searched <= reachable["searched_ms_by_seed"][0] <= 1.01 * searched
    assert unreachable["within_1pct"] == 0 and unreachable["delta_s"] is None
    assert unreachable["searched_ms_by_seed"] == [searched]
