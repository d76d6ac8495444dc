"""The OWT table's rows: structure, the paper's speedup definition, and the search never losing to OWT."""

import pytest

from benchmarks.owt_table import main, owt_row
from search.mcmc import Budget

TINY = Budget(iterations=40, min_iterations=1)
KEYS = {"gpus", "batch", "single_gpu_batch128_ms", "owt_ms", "owt_speedup", "paper_owt_speedup",
        "paper_owt_speedup_fc128", "paper_hours", "searched_ms", "searched_speedup", "data_parallel_ms",
        "data_parallel_speedup", "owt_blocking_ms", "owt_blocking_speedup", "bound_ms", "bound_speedup",
        "search_iterations", "search_s"}


@pytest.fixture(scope="module")
def rows():
    return {n: owt_row(n, TINY, seed=0) for n in (1, 2)}


def test_rows_hold_every_column_for_128_images_per_gpu(rows):
    for n, row in rows.items():
        assert set(row) == KEYS
        assert row["gpus"] == n and row["batch"] == 128 * n


def test_one_gpu_is_the_paper_1x(rows):
    row = rows[1]
    assert row["owt_ms"] == row["single_gpu_batch128_ms"]
    for column in ("owt_speedup", "searched_speedup", "data_parallel_speedup"):
        assert row[column] == 1.0, column


def test_speedup_is_the_throughput_ratio(rows):
    row = rows[2]
    assert row["owt_speedup"] == pytest.approx(row["single_gpu_batch128_ms"] * 2 / row["owt_ms"])



def test_the_papers_speedups_are_its_training_hours_ratios(rows):
    # The paper's speedup column is 1-GPU hours / N-GPU hours (98.05 / 50.24 = 1.95): a copied figure
    # that disagrees with its own hours is a typo.
    for row in rows.values():
        assert row["paper_owt_speedup"] == pytest.approx(rows[1]["paper_hours"] / row["paper_hours"], abs=0.005)


def test_search_starts_from_owt_so_never_loses_to_it_nor_beats_the_bound(rows):
    for row in rows.values():
        assert row["bound_ms"] <= row["searched_ms"] <= row["owt_ms"] <= row["owt_blocking_ms"]


def test_a_bad_budget_is_one_line_and_exit_2(capsys):
    assert main(["--budget", "0"]) == 2
    assert "--budget must be a number of seconds > 0, got 0.0" in capsys.readouterr().err
