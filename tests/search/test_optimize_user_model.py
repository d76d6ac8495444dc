"""The optimize command on a user's own flax model (--model path/to/file.py:NAME): imported, searched and
simulated end to end, its strategy file made for the imported graph."""

import json
from pathlib import Path

from models.importer import import_model
from models.user_model import load_user_model
from search.optimize import main
from soap.strategy import strategy_from_json

MODEL = f"{Path(__file__).resolve().parents[1] / 'models' / 'test_importer.py'}:ResidualCNN"


def test_optimize_imports_searches_and_simulates_a_user_model(tmp_path, capsys):
    assert main(["--model", MODEL, "--gpus", "2", "--batch-size", "16", "--machine", "p100x2-pcie", "--iterations",
                 "50", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ResidualCNN / tiny-imagenet, batch 16, 2 devices of machine p100x2-pcie")
    assert "res_a.conv_a.bn" in out  # the searched strategy, op by op, under the module's paths
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["model"], report["batch_size"], report["search"]["iterations"]) == ("ResidualCNN", 16, 50)
    assert [row["name"] for row in report["strategies"]] == ["single", "data_parallel", "model_parallel", "owt",
                                                             "searched"]
    graph = import_model(load_user_model(MODEL), "tiny-imagenet", 16).graph
    strategy = strategy_from_json((tmp_path / "strategy.json").read_text(), graph, 2)
    assert set(strategy) == {op.name for op in graph.ops}
