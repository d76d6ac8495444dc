"""Every zoo model through the space, the baselines, the search and the optimize command (simulation only),
and the search against exhaustive enumeration on a small branching graph."""

import itertools
import json
import math

import numpy as np
import pytest

from models.graph import GraphBuilder
from models.labels import Role
from models.zoo import IMAGE_MODELS, MODELS, TOKEN_MODELS, FamilyOptions, build_graph
from search.mcmc import Budget
from search.optimize import main
from search.strategy_search import baseline_strategies, search_strategy
from simulator.simulate import Simulator
from soap.baselines import BASELINES, data_parallel, model_parallel, owt, random_strategy, single
from soap.space import enumerate_configs, validate_config
from soap.strategy import Strategy
from tests.simulator.fakes import FlopCost, fake_machine

IMAGENET = {model: "imagenet-299" if model == "inception_v3" else "imagenet" for model in IMAGE_MODELS}


@pytest.mark.parametrize("model", sorted(IMAGE_MODELS))
def test_every_baseline_is_valid_at_imagenet_shapes(model):
    graph = build_graph(model, IMAGENET[model], 64)
    for num_devices in (2, 16):
        for name, baseline in BASELINES.items():
            strategy = baseline(graph, num_devices)
            for op in graph.ops:
                validate_config(op, strategy[op.name], num_devices)
        devices = [owt(graph, num_devices)[op.name] for op in graph.ops]
        for op, config in zip(graph.ops, devices):  # Krizhevsky: only fully-connected layers split channels
            split = {label.role: d for label, d in zip(op.config_labels, config.degrees)}
            assert split.get(Role.CHANNEL, 1) == 1 or op.spec.fully_connected, op.name


@pytest.mark.parametrize("model", ["vgg16", "resnet50", "inception_v3"])
def test_model_parallel_cuts_the_program_order_into_groups_of_about_equal_flops(model):
    graph = build_graph(model, IMAGENET[model], 8)
    strategy = model_parallel(graph, 4)
    placement = [strategy[op.name].devices for op in graph.ops]
    assert all(len(devices) == 1 for devices in placement)  # layer-wise: every op whole on one device
    order = [devices[0] for devices in placement]
    assert order == sorted(order) and set(order) == {0, 1, 2, 3}
    flops = [sum(op.forward_flops for op, d in zip(graph.ops, order) if d == device) for device in range(4)]
    assert max(flops) < 2 * graph.forward_flops / 4


def test_alexnet_keeps_the_seeds_model_parallel():
    graph = build_graph("alexnet", "tiny-imagenet", 8)
    assert model_parallel(graph, 2)["conv2"].degrees == (1, 1, 1, 2, 1)


@pytest.mark.parametrize("model", sorted(IMAGE_MODELS))
def test_optimize_searches_and_reports_every_zoo_model_in_simulation(model, tmp_path, capsys):
    code = main(["--model", model, "--dataset", IMAGENET[model], "--batch-size", "4", "--gpus", "2",
                 "--machine", "p100x2-pcie", "--iterations", "20", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["model"] == model
    simulated = {row["name"]: row["simulated_step_ms"] for row in report["strategies"]}
    assert simulated["searched"] <= min(simulated[name] for name in BASELINES)
    assert (tmp_path / "strategy.json").exists() and (tmp_path / "trace.json").exists()


def test_optimize_help_lists_every_zoo_model(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(model in out for model in MODELS)


def test_a_too_small_dataset_names_the_minimum(capsys):
    assert main(["--model", "inception_v3", "--gpus", "2", "--machine", "p100x2-pcie"]) == 2
    assert "inception_v3 needs images of at least 75x75" in capsys.readouterr().err


def fork_join():
    """(1x1 conv | 3x3 conv) on the data -> concat -> global pool -> dense -> loss: 6 ops, 12,960 strategies
    on 2 devices (the dense, without a ReLU, also splits its input channels)."""
    b = GraphBuilder("fork", "toy", (4, 8, 8, 3))
    left = b.conv2d("left", 8, kernel=1, input=None)
    right = b.conv2d("right", 16, kernel=3, input=None)
    b.concat("join", inputs=[left, right])
    b.global_avg_pool("pool")
    b.dense("fc", 4, relu=False)
    b.softmax_xent("loss")
    return b.build(4)


def test_search_finds_the_exhaustive_optimum_on_a_branching_graph():
    graph = fork_join()
    machine, cost = fake_machine(2, bandwidth_bytes_per_s=2e8, latency_s=1e-5), FlopCost(ms_per_gflop=1e4)
    names = [op.name for op in graph.ops]
    spaces = [enumerate_configs(op, 2) for op in graph.ops]
    assert math.prod(len(space) for space in spaces) == 6 * 6 * 6 * 4 * 5 * 3
    simulator = Simulator(graph, machine, cost)
    best, best_apart, best_together = math.inf, math.inf, math.inf
    for configs in itertools.product(*spaces):
        step_ms = simulator.full(Strategy.for_graph(graph, 2, dict(zip(names, configs)))).step_ms
        best = min(best, step_ms)
        if configs[0].devices in ((0,), (1,)) and configs[1].devices in ((0,), (1,)):
            if configs[0].devices == configs[1].devices:
                best_together = min(best_together, step_ms)
            else:
                best_apart = min(best_apart, step_ms)
    # Whole branches run faster on two devices at once than one after the other on one.
    assert best_apart < best_together
    starts = [("single", single(graph, 2)), ("data_parallel", data_parallel(graph, 2)),
              ("random", random_strategy(graph, 2, np.random.default_rng(0)))]
    # Five chains (the three starts, the additive and the placed one), 1,500 iterations each; the chain from
    # single gets there (the others end at 2.5032 ms, the placed start).
    found = search_strategy(graph, machine, cost, starts, Budget(iterations=7500, min_iterations=1500), seed=1)
    assert found.best_ms == pytest.approx(best, rel=1e-12)


def test_a_batch_no_split_divides_is_searched_unsplit_and_said_once(tmp_path, capsys):
    code = main(["--model", "resnet18", "--batch-size", "7", "--gpus", "2", "--machine", "p100x2-pcie",
                 "--iterations", "20", "--out", str(tmp_path)])
    assert code == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == ["note: batch size 7 is not divisible by 2 devices: no strategy splits the batch over all of "
                     "them (data_parallel and owt left out); a multiple of 2 allows it"]
    strategy = json.loads((tmp_path / "strategy.json").read_text())
    assert all(config["degrees"].get("sample", 1) == 1 for config in strategy["ops"].values())


def token_mlp():
    """ids [2 2] -> embedding (vocab 8, width 4) -> dense 8 -> dense 8 -> token_xent: column and row splits,
    a vocabulary split and partial sums both ways in a space small enough to enumerate."""
    b = GraphBuilder("token_mlp", "tokens", (2, 2))
    b.embedding("embed", 8, 4, input=None)
    b.dense("up", 8, relu=False)
    b.dense("down", 8, relu=False)
    b.token_xent("loss")
    return b.build(2)


def test_search_finds_the_exhaustive_optimum_on_a_token_mlp():
    graph = token_mlp()
    machine, cost = fake_machine(2, bandwidth_bytes_per_s=2e6, latency_s=1e-5), FlopCost(ms_per_gflop=1e6)
    names = [op.name for op in graph.ops]
    spaces = [enumerate_configs(op, 2) for op in graph.ops]
    assert [len(space) for space in spaces] == [6, 6, 6, 5]
    simulator = Simulator(graph, machine, cost)
    best = min(simulator.full(Strategy.for_graph(graph, 2, dict(zip(names, configs)))).step_ms
               for configs in itertools.product(*spaces))
    starts = [("single", single(graph, 2)), ("data_parallel", data_parallel(graph, 2)),
              ("random", random_strategy(graph, 2, np.random.default_rng(0)))]
    found = search_strategy(graph, machine, cost, starts, Budget(iterations=4000, min_iterations=800), seed=1)
    assert found.best_ms == pytest.approx(best, rel=1e-12)
    assert found.best_ms < simulator.full(single(graph, 2)).step_ms  # a split pays here


@pytest.mark.parametrize("model", sorted(TOKEN_MODELS))
def test_every_baseline_of_a_transformer_is_valid(model):
    graph = build_graph(model, "tokens", 16, FamilyOptions(seq_len=32))
    for num_devices in (8, 16):
        strategies, notes = baseline_strategies(graph, num_devices)
        for strategy in strategies.values():
            for op in graph.ops:
                validate_config(op, strategy[op.name], num_devices)
        heads = next(op.space.size("heads") for op in graph.ops if op.kind.value == "attention")
        # Megatron needs a tensor degree above 1 dividing the heads (GPT-2 XL's 25 share none with 8 or 16).
        assert ("megatron" in strategies) == (math.gcd(heads, num_devices) > 1), notes
        assert {"data_parallel", "owt", "model_parallel", "single"} <= set(strategies)
