"""The CNN zoo's simulated baselines and graph signatures, bit for bit: what the op algebra must not change.

    python -m benchmarks.zoo_table      # the same baselines beside the searched strategy

Each model at ImageNet's shapes (inception_v3 at 299), 64 images per GPU, on the datasheet machines
p100-4x4 (16 GPUs) and k80-16x4 (64), roofline costs: the step time of every baseline as the simulator
priced it before the labelled algebra (models.labels) replaced the per-kind rules (commit fdc9d61), and
each graph's signature at its default dataset, batch 8 (AlexNet's 59a39a26afea61d7 is the one its strategy
files carry at batch 128). Two differ on purpose: Inception-v3's model_parallel moves a block's input once
to the device its branches share (simulator.taskgraph's twin readers: XLA reshards one tensor to one
sharding once, and the runtime moves a tensor once per stage boundary), where fdc9d61 moved it once per
branch: 1.1% faster on p100-4x4, 0.2% on k80-16x4.
"""

import pytest

from models.zoo import build_graph, default_dataset
from simulator.cost import RooflineCostModel
from simulator.machine import machine_preset
from simulator.simulate import Simulator
from soap.baselines import BASELINES

STEP_MS = [
    ("alexnet", "k80-16x4", "data_parallel", 248.20862508253967),
    ("alexnet", "k80-16x4", "model_parallel", 1656.5323681269842),
    ("alexnet", "k80-16x4", "owt", 267.1697896380952),
    ("alexnet", "k80-16x4", "single", 10306.339175282537),
    ("alexnet", "p100-4x4", "data_parallel", 84.51289466729905),
    ("alexnet", "p100-4x4", "model_parallel", 238.20616342499085),
    ("alexnet", "p100-4x4", "owt", 60.31397485207135),
    ("alexnet", "p100-4x4", "single", 685.502704228697),
    ("inception_v3", "k80-16x4", "data_parallel", 1791.9491092349201),
    ("inception_v3", "k80-16x4", "model_parallel", 125304.69879847004),  # fdc9d61: 125552.57093881289
    ("inception_v3", "k80-16x4", "owt", 1789.8212649015868),
    ("inception_v3", "k80-16x4", "single", 94230.45632459065),
    ("inception_v3", "p100-4x4", "data_parallel", 483.9599497335946),
    ("inception_v3", "p100-4x4", "model_parallel", 8431.20374401928),  # fdc9d61: 8525.531426152294
    ("inception_v3", "p100-4x4", "owt", 483.3388875626656),
    ("inception_v3", "p100-4x4", "single", 6398.174026743698),
    ("resnet101", "k80-16x4", "data_parallel", 2476.876719863486),
    ("resnet101", "k80-16x4", "model_parallel", 157543.50798668605),
    ("resnet101", "k80-16x4", "owt", 2474.748875530153),
    ("resnet101", "k80-16x4", "single", 134158.66492481917),
    ("resnet101", "p100-4x4", "data_parallel", 679.8664296214151),
    ("resnet101", "p100-4x4", "model_parallel", 10721.145032320632),
    ("resnet101", "p100-4x4", "owt", 679.2453674504862),
    ("resnet101", "p100-4x4", "single", 9189.375906548883),
    ("resnet18", "k80-16x4", "data_parallel", 527.9836025047617),
    ("resnet18", "k80-16x4", "model_parallel", 44036.81772852694),
    ("resnet18", "k80-16x4", "owt", 526.6174435047617),
    ("resnet18", "k80-16x4", "single", 28790.14143163809),
    ("resnet18", "p100-4x4", "data_parallel", 144.29309197566764),
    ("resnet18", "p100-4x4", "model_parallel", 2949.42213880416),
    ("resnet18", "p100-4x4", "owt", 144.00297227992993),
    ("resnet18", "p100-4x4", "single", 1948.18528012653),
    ("resnet50", "k80-16x4", "data_parallel", 1336.4218402190472),
    ("resnet50", "k80-16x4", "model_parallel", 99270.78153175232),
    ("resnet50", "k80-16x4", "owt", 1334.2939958857137),
    ("resnet50", "k80-16x4", "single", 72863.81956446341),
    ("resnet50", "p100-4x4", "data_parallel", 370.01993793174506),
    ("resnet50", "p100-4x4", "model_parallel", 6802.783157962709),
    ("resnet50", "p100-4x4", "owt", 369.39887576081617),
    ("resnet50", "p100-4x4", "single", 5029.600728312661),
    ("vgg16", "k80-16x4", "data_parallel", 3770.912816066668),
    ("vgg16", "k80-16x4", "model_parallel", 297185.1999671557),
    ("vgg16", "k80-16x4", "owt", 3817.4136641777786),
    ("vgg16", "k80-16x4", "single", 228875.80227826664),
    ("vgg16", "p100-4x4", "data_parallel", 1042.282038434423),
    ("vgg16", "p100-4x4", "model_parallel", 21580.682354169425),
    ("vgg16", "p100-4x4", "owt", 990.7432661456069),
    ("vgg16", "p100-4x4", "single", 15176.972938998857),
]

SIGNATURES = {
    "alexnet": "7dc1ba5abb638a9e",
    "inception_v3": "e1e468428bec2f62",
    "resnet101": "bb715e852661f2e6",
    "resnet18": "b71cd7cc7571ae6f",
    "resnet50": "7553b46d5203deda",
    "vgg16": "1ff221f654c762fb",
}


@pytest.mark.parametrize("model,preset,baseline,step_ms", [pytest.param(*row, id="-".join(row[:3])) for row in STEP_MS])
def test_zoo_baseline_step_times_are_unchanged(model, preset, baseline, step_ms):
    num_devices = 16 if preset == "p100-4x4" else 64
    graph = build_graph(model, "imagenet-299" if model == "inception_v3" else "imagenet", 64 * num_devices)
    machine = machine_preset(preset, num_devices)
    result = Simulator(graph, machine, RooflineCostModel(machine.device)).full(BASELINES[baseline](graph, num_devices))
    assert result.step_ms == step_ms


@pytest.mark.parametrize("model", sorted(SIGNATURES))
def test_zoo_graph_signatures_are_unchanged(model):
    assert build_graph(model, default_dataset(model), 8).signature == SIGNATURES[model]


def test_alexnet_signature_of_its_strategy_files():
    assert build_graph("alexnet", "tiny-imagenet", 128).signature == "59a39a26afea61d7"
