"""The model zoo: published parameter counts and multiply-adds at ImageNet shapes, the real architectures'
structure, tiny members of each family, minimum sizes, and the models command's JSON."""

import json

import pytest

from models.datasets import DatasetShape
from models.errors import ShapeError, UnknownModelError
from models.inception import inception_v3
from models.op import OpKind
from models.resnet import resnet18, resnet50
from models.vgg import vgg16
from models.zoo import IMAGE_MODELS, build_graph, minimum_image_size

# (parameters, multiply-adds per image of the convs and dense layers, in G) as published: torchvision's
# model cards (parameters; Inception-v3 without its auxiliary head: 27,161,264 - 3,326,696) and the
# papers' / torchvision's GFLOPS, which count multiply-adds.
PUBLISHED = {
    "alexnet": ("imagenet", 61_100_840, 0.72),
    "vgg16": ("imagenet", 138_357_544, 15.47),
    "resnet18": ("imagenet", 11_689_512, 1.81),
    "resnet50": ("imagenet", 25_557_032, 4.09),
    "resnet101": ("imagenet", 44_549_160, 7.80),
    "inception_v3": ("imagenet-299", 23_834_568, 5.71),
}
TOY = DatasetShape("toy", 32, 32, 3, 10)


def _multiply_adds(graph) -> float:
    return sum(op.forward_flops // 2 for op in graph.ops if op.kind in (OpKind.CONV2D, OpKind.DENSE))


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_parameters_and_multiply_adds_match_the_published_figures(model):
    dataset, params, gmacs = PUBLISHED[model]
    graph = build_graph(model, dataset, 1)
    assert graph.param_count == params
    assert _multiply_adds(graph) / 1e9 == pytest.approx(gmacs, rel=0.01)


def test_resnet50_structure():
    graph = build_graph("resnet50", "imagenet", 2)
    kinds = [op.kind for op in graph.ops]
    assert kinds.count(OpKind.CONV2D) == 53 and kinds.count(OpKind.BATCH_NORM) == 53  # 49 + 4 projections
    assert kinds.count(OpKind.ADD) == 16
    # A projection block: res3a adds the main branch and the projected shortcut, then its ReLU.
    assert graph.producers("res3a") == ("bn3a_branch2c", "bn3a_branch1")
    assert graph.op("res3a").attrs.relu and graph.op("res3a").output_shape == (2, 28, 28, 512)
    # An identity block adds the block's input.
    assert graph.producers("res3b") == ("bn3b_branch2c", "res3a")
    # The stride is on the 3x3 conv (v1.5), convs before a norm have no bias.
    assert graph.op("res3a_branch2b").attrs.stride_hw == (2, 2)
    assert dict(graph.op("res3a_branch2a").param_shapes) == {"kernel": (1, 1, 256, 128)}
    assert graph.op("bn3a_branch2a").attrs.relu and not graph.op("bn3a_branch2c").attrs.relu
    assert dict(graph.op("bn3a_branch2a").state_shapes) == {"mean": (128,), "var": (128,)}
    assert graph.op("pool5").output_shape == (2, 2048)


def test_inception_v3_structure():
    graph = build_graph("inception_v3", "imagenet-299", 1)
    assert graph.op("maxpool2").output_shape == (1, 35, 35, 192)
    widths = {name: graph.op(name).output_shape[1:] for name in
              ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")}
    assert widths == {"Mixed_5b": (35, 35, 256), "Mixed_5c": (35, 35, 288), "Mixed_5d": (35, 35, 288),
                      "Mixed_6a": (17, 17, 768), "Mixed_6e": (17, 17, 768), "Mixed_7a": (8, 8, 1280),
                      "Mixed_7b": (8, 8, 2048), "Mixed_7c": (8, 8, 2048)}
    assert graph.producers("Mixed_5b") == ("Mixed_5b.branch1x1.bn", "Mixed_5b.branch5x5_2.bn",
                                           "Mixed_5b.branch3x3dbl_3.bn", "Mixed_5b.branch_pool.bn")
    assert graph.op("Mixed_6b.branch7x7_2.conv").attrs.kernel_hw == (1, 7)
    assert graph.op("Mixed_6b.branch7x7_3.conv").attrs.kernel_hw == (7, 1)
    # Inception-E nests a concat of 1x3 and 3x1 inside its concat.
    assert graph.op("Mixed_7b.branch3x3").kind is OpKind.CONCAT
    assert graph.op("Mixed_5b.branch_pool.avg").kind is OpKind.AVG_POOL2D


@pytest.mark.parametrize("build, kinds", [
    (lambda: vgg16(TOY, 4, width=4, fc_units=8, groups=(1, 1, 1, 1, 1)), {"conv2d", "pool2d", "dense"}),
    (lambda: resnet18(TOY, 4, width=4, blocks=(1, 1)), {"conv2d", "batch_norm", "add", "global_avg_pool"}),
    (lambda: resnet50(TOY, 4, width=4, blocks=(1, 1)), {"conv2d", "batch_norm", "add", "global_avg_pool"}),
    (lambda: inception_v3(DatasetShape("toy", 75, 75, 3, 10), 4, width=1 / 16, blocks=(1, 1, 1)),
     {"conv2d", "batch_norm", "concat", "avg_pool2d", "pool2d"}),
])
def test_tiny_members_of_each_family_build(build, kinds):
    graph = build()
    assert kinds <= {op.kind.value for op in graph.ops}
    assert graph.ops[-1].kind is OpKind.SOFTMAX_XENT and graph.ops[-1].output_shape == (4,)
    assert len(graph) < 100


def test_minimum_image_sizes_and_the_too_small_error():
    assert minimum_image_size("inception_v3") == 75
    assert minimum_image_size("vgg16") == 32
    inception_v3(DatasetShape("edge", 75, 75, 3, 10), 1, width=1 / 16, blocks=(1, 1, 1))
    with pytest.raises(ShapeError):
        inception_v3(DatasetShape("edge", 74, 74, 3, 10), 1, width=1 / 16, blocks=(1, 1, 1))
    with pytest.raises(ShapeError, match=r"^inception_v3 needs images of at least 75x75, but tiny-imagenet has "
                                         r"64x64; pick a dataset with larger images$"):
        build_graph("inception_v3", "tiny-imagenet")
    with pytest.raises(UnknownModelError, match="known models: alexnet, vgg16, resnet18, resnet50, resnet101, "
                                                "inception_v3"):
        build_graph("resnet34", "imagenet")
    with pytest.raises(UnknownModelError, match="unknown model 'resnet34'"):
        minimum_image_size("resnet34")


@pytest.mark.parametrize("model", sorted(IMAGE_MODELS))
def test_every_model_builds_at_tiny_imagenet_or_says_why(model):
    if minimum_image_size(model) > 64:
        with pytest.raises(ShapeError):
            build_graph(model, "tiny-imagenet", 8)
    else:
        assert build_graph(model, "tiny-imagenet", 8).ops[0].input_shapes == ((8, 64, 64, 3),)


def test_models_command_writes_the_graph_as_json(tmp_path, capsys):
    from models.__main__ import main

    path = tmp_path / "resnet18.json"
    assert main(["resnet18", "--dataset", "imagenet", "--batch-size", "2", "--json", str(path)]) == 0
    table = capsys.readouterr().out
    assert "res2a" in table and "bn2a_branch2b, pool1" in table  # an add shows both its inputs
    document = json.loads(path.read_text())
    graph = build_graph("resnet18", "imagenet", 2)
    assert document["param_count"] == graph.param_count == 11_689_512
    assert document["forward_flops"] == graph.forward_flops
    ops = {op["name"]: op for op in document["ops"]}
    assert len(ops) == len(graph)
    assert ops["res2a"]["inputs"] == ["bn2a_branch2b", "pool1"]
    assert ops["res2a"]["input_shapes"] == [[2, 56, 56, 64], [2, 56, 56, 64]]
    assert ops["conv1"]["inputs"] == ["data"]
    assert ops["bn_conv1"]["param_count"] == 128 and ops["bn_conv1"]["state"] == {"mean": [64], "var": [64]}
    assert ops["fc"]["backward_flops"] == graph.op("fc").backward_flops
    assert main(["resnet18", "--dataset", "imagenet", "--json", str(tmp_path / "missing" / "g.json")]) == 2
    assert "does not exist; create it or pass another path" in capsys.readouterr().err
