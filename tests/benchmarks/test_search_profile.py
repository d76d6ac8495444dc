"""benchmarks.search_profile: one chain of the search, timed and profiled."""

import json

from benchmarks.search_profile import main


def test_one_chain_is_timed_and_profiled_with_the_same_decisions(tmp_path, capsys):
    path = tmp_path / "profile.json"
    args = ["--model", "alexnet", "--sizes", "2", "--start", "owt", "--iterations", "30", "--json", str(path)]
    assert main(args) == 0
    row = json.loads(path.read_text())["rows"][0]
    assert row["gpus"] == 2 and row["start"] == "owt" and row["iterations"] == 30
    assert row["best_ms"] <= row["start_ms"] and row["iterations_per_s"] > 0
    shares = [entry["share"] for entry in row["top_functions"]]
    assert 0 < len(shares) <= 12 and shares == sorted(shares, reverse=True) and sum(shares) <= 1
    assert any(entry["function"].startswith("simulator/") for entry in row["top_functions"])
    assert "one chain from owt" in capsys.readouterr().out
