"""benchmarks.parallelize_time: a tiny user GPT's import, search and plan, each timed, printed and written."""

import json

import pytest

from benchmarks.parallelize_time import main


def test_a_tiny_gpt_s_phases_are_timed_and_written(tmp_path, capsys):
    path = tmp_path / "times.json"
    assert main(["--layers", "1", "--width", "32", "--heads", "4", "--vocab", "64", "--seq-len", "16",
                 "--batch-size", "4", "--gpus", "2", "--budget-s", "0.5", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    for phase in ("import", "search", "plan", "total"):
        assert f"\n{phase} " in out
    row = json.loads(path.read_text())
    assert (row["layers"], row["width"], row["heads"], row["gpus"], row["machine"]) == (1, 32, 4, 2, "h100x8")
    assert row["ops"] > 10 and row["searched_ms"] > 0
    assert all(row[key] > 0 for key in ("import_s", "search_s", "plan_s"))
    assert row["total_s"] == pytest.approx(row["import_s"] + row["search_s"] + row["plan_s"])


def test_a_width_the_heads_do_not_divide_is_one_line(capsys):
    assert main(["--width", "32", "--heads", "5"]) == 2
    assert capsys.readouterr().err == ("error: --width 32 does not split into 5 heads; pass --heads dividing the "
                                       "width\n")
