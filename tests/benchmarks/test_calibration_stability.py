"""benchmarks.calibration_stability: calibrations from an empty cache, compared."""

import json

import pytest

from benchmarks.calibration_stability import Try, differences, main, report, try_line, zero_components
from simulator.calibration_plan import needed_local_ops
from simulator.cost import ProfileEntry
from soap.timing import Estimate
from tests.simulator.fakes import branchy_cnn


def _entries(graph, forward_ms: float, zero_backward: int = 0) -> dict[str, ProfileEntry]:
    """An entry per op shape of `graph` on 1 device: forward `forward_ms`, backward 1 ms (0 for the first
    `zero_backward` op shapes), SGD update 1 ms for an op with parameters."""
    entries = {}
    for number, op in enumerate(needed_local_ops(graph, 1)):
        updates = (("sgd", Estimate(1.0, 0.01, 5)),) if op.param_bytes else ()
        backward = Estimate(0.0 if number < zero_backward else 1.0, 0.01, 5)
        entries[op.cost_key] = ProfileEntry(Estimate(forward_ms, 0.01, 5), backward, updates)
    return entries


def test_a_try_line_counts_zero_components_and_compares_op_times_with_the_first_try():
    graph = branchy_cnn(2)
    first = Try(12.0, _entries(graph, 2.0))
    later = Try(11.0, _entries(graph, 2.0 * 1.1, zero_backward=2))
    assert zero_components(graph, 1, first.entries) == []
    assert len(zero_components(graph, 1, later.entries)) == 2
    assert try_line(1, graph, 1, first, first) == f"try 1: 12.0 s, {len(first.entries)} op shapes, 0 with a zero component, 0 flagged"
    line = try_line(2, graph, 1, later, first)
    assert line.startswith(f"try 2: 11.0 s, {len(later.entries)} op shapes, 2 with a zero component, 0 flagged; "
                           f"op times against try 1: median |difference| ")
    # Forwards 0.2 ms longer: an op with parameters 2 + 1 + 1 -> 4.2 ms (+5%), one without 3 -> 3.2 ms (+6.7%).
    median, p90 = differences(first.entries, _entries(graph, 2.2))
    assert {round(median, 3), round(p90, 3)} <= {0.05, 0.067}


def test_two_calibrations_of_a_tiny_cnn_from_an_empty_cache_have_no_zero_component(tmp_path, capsys):
    path = tmp_path / "stability.json"
    assert report(branchy_cnn(2), 1, 2, str(path)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("try 1: ") and ", 0 with a zero component" in lines[0]
    assert lines[1].startswith("try 2: ") and "op times against try 1: median |difference| " in lines[1]
    tries = json.loads(path.read_text())["tries"]
    assert len(tries) == 2 and all(t["zero_components"] == [] and t["wall_s"] > 0 for t in tries)


def test_a_bad_flag_is_one_line(capsys):
    assert main(["--tries", "0"]) == 2
    assert "--tries" in capsys.readouterr().err
