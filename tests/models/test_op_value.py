"""The operator value: cost keys pinned as literal strings, and the import order of op and kinds.

Measured profile caches are keyed by `Op.cost_key` and strategy files by the graph signature: both are
pinned here for whole ops and task-local ops (halo, im2col, grouped, dilated, explicitly padded) of
AlexNet, ResNet-18, Inception-v3, a small GPT-2 and a ConvNeXt-like pair of convs, so that a change to how
an op holds its fields cannot change either.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

from models.graph import GraphBuilder
from models.op import local_op
from models.zoo import FamilyOptions, build_graph

MODELS_DIR = pathlib.Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def graphs():
    builder = GraphBuilder("convnext_block", "tiny-imagenet", (8, 16, 16, 32))
    builder.conv2d("dw", 32, 7, groups=32, bias=True, relu=False)
    builder.conv2d("dil", 32, 3, dilation=2, padding=((1, 2), (2, 1)))
    return {"alexnet": build_graph("alexnet", "imagenet", 128),
            "resnet18": build_graph("resnet18", "tiny-imagenet", 64),
            "inception_v3": build_graph("inception_v3", "imagenet-299", 32),
            "gpt2": build_graph("gpt2", "tokens", 8, FamilyOptions(depth=1, width=64, heads=2, vocab=128, seq_len=32)),
            "builder": builder.build(8)}


@pytest.mark.parametrize("model, name, degrees, key", [
    pytest.param("alexnet", "conv1", None,
                 "conv2d k11x11 s4x4 SAME relu no-input-grad in=128x224x224x3 out=128x56x56x64 params=11x11x3x64,64 float32",
                 id="alexnet-conv1"),
    pytest.param("alexnet", "conv1", (1, 2, 1, 1),
                 "conv2d k11x11 s4x4 VALID relu halo no-input-grad in=128x119x231x3 out=128x28x56x64 params=11x11x3x64,64 float32",
                 id="alexnet-conv1-1x2x1x1"),
    pytest.param("alexnet", "pool1", None,
                 "pool2d k3x3 s2x2 VALID in=128x56x56x64 out=128x27x27x64 float32",
                 id="alexnet-pool1"),
    pytest.param("alexnet", "pool1", (1, 1, 2, 1),
                 "pool2d k3x3 s2x2 VALID halo in=128x55x27x64 out=128x27x13x64 float32",
                 id="alexnet-pool1-1x1x2x1"),
    pytest.param("alexnet", "fc6", (1, 4),
                 "dense relu in=128x9216 out=128x1024 params=9216x1024,1024 float32",
                 id="alexnet-fc6-1x4"),
    pytest.param("alexnet", "loss", None,
                 "softmax_xent in=128x1000 out=128 float32",
                 id="alexnet-loss"),
    pytest.param("resnet18", "bn_conv1", None,
                 "batch_norm relu in=64x32x32x64 out=64x32x32x64 params=64,64 float32",
                 id="resnet18-bn_conv1"),
    pytest.param("resnet18", "res2a", None,
                 "add relu in=64x16x16x64,64x16x16x64 out=64x16x16x64 float32",
                 id="resnet18-res2a"),
    pytest.param("resnet18", "res5a_branch2b", None,
                 "conv2d k3x3 s1x1 SAME im2col in=64x2x2x512 out=64x2x2x512 params=3x3x512x512 float32",
                 id="resnet18-res5a_branch2b"),
    pytest.param("resnet18", "res5a_branch2b", (2, 1, 1, 1),
                 "conv2d k3x3 s1x1 SAME im2col in=32x2x2x512 out=32x2x2x512 params=3x3x512x512 float32",
                 id="resnet18-res5a_branch2b-2x1x1x1"),
    pytest.param("resnet18", "pool5", None,
                 "global_avg_pool in=64x2x2x512 out=64x512 float32",
                 id="resnet18-pool5"),
    pytest.param("inception_v3", "Conv2d_1a_3x3.conv", None,
                 "conv2d k3x3 s2x2 VALID no-input-grad in=32x299x299x3 out=32x149x149x32 params=3x3x3x32 float32",
                 id="inception_v3-Conv2d_1a_3x3.conv"),
    pytest.param("inception_v3", "Mixed_5b.branch_pool.avg", None,
                 "avg_pool2d k3x3 s1x1 SAME in=32x35x35x192 out=32x35x35x192 float32",
                 id="inception_v3-Mixed_5b.branch_pool.avg"),
    pytest.param("inception_v3", "Mixed_5b", None,
                 "concat in=32x35x35x64,32x35x35x64,32x35x35x96,32x35x35x32 out=32x35x35x256 float32",
                 id="inception_v3-Mixed_5b"),
    pytest.param("gpt2", "wte", None,
                 "embedding no-input-grad in=8x32 out=8x32x64 params=128x64 float32",
                 id="gpt2-wte"),
    pytest.param("gpt2", "drop", None,
                 "dropout rate=0.1 in=8x32x64 out=8x32x64 float32",
                 id="gpt2-drop"),
    pytest.param("gpt2", "h0.ln_1", None,
                 "layer_norm eps=1e-05 rms=False in=8x32x64 out=8x32x64 params=64,64 float32",
                 id="gpt2-h0.ln_1"),
    pytest.param("gpt2", "h0.q", None,
                 "dense in=8x32x64 out=8x32x64 params=64x64,64 float32",
                 id="gpt2-h0.q"),
    pytest.param("gpt2", "h0.attn", None,
                 "attention causal=True in=8x32x2x32,8x32x2x32,8x32x2x32 out=8x32x2x32 float32",
                 id="gpt2-h0.attn"),
    pytest.param("gpt2", "h0.act", None,
                 "activation fn=gelu_tanh in=8x32x256 out=8x32x256 float32",
                 id="gpt2-h0.act"),
    pytest.param("gpt2", "h0.add_1", None,
                 "add in=8x32x64,8x32x64 out=8x32x64 float32",
                 id="gpt2-h0.add_1"),
    pytest.param("gpt2", "lm_head", None,
                 "attend in=8x32x64 out=8x32x128 params=128x64 float32",
                 id="gpt2-lm_head"),
    pytest.param("gpt2", "loss", None,
                 "token_xent in=8x32x128 out=8x32 float32",
                 id="gpt2-loss"),
    pytest.param("gpt2", "h0.attn_proj", (1, 1, 1, 2),
                 "dense in=8x32x32 out=8x32x64 params=32x64,64 float32",
                 id="gpt2-h0.attn_proj-1x1x1x2"),
    pytest.param("builder", "dw", None,
                 "conv2d k7x7 s1x1 SAME groups=32 dilation_hw=(1, 1) pads=None no-input-grad in=8x16x16x32 out=8x16x16x32 params=7x7x1x32,32 float32",
                 id="builder-dw"),
    pytest.param("builder", "dw", (1, 1, 1, 4),
                 "conv2d k7x7 s1x1 SAME groups=8 dilation_hw=(1, 1) pads=None no-input-grad in=8x16x16x8 out=8x16x16x8 params=7x7x1x8,8 float32",
                 id="builder-dw-1x1x1x4"),
    pytest.param("builder", "dil", None,
                 "conv2d k3x3 s1x1 EXPLICIT relu groups=1 dilation_hw=(2, 2) pads=((1, 2), (2, 1)) in=8x16x16x32 out=8x15x15x32 params=3x3x32x32,32 float32",
                 id="builder-dil"),
    pytest.param("builder", "dil", (1, 2, 1, 1),
                 "conv2d k3x3 s1x1 VALID relu groups=1 dilation_hw=(2, 2) pads=None halo in=8x11x19x32 out=8x7x15x32 params=3x3x32x32,32 float32",
                 id="builder-dil-1x2x1x1"),
])
def test_cost_keys_are_pinned(graphs, model, name, degrees, key):
    op = graphs[model].op(name)
    if degrees:  # pinned before a conv's and an image dense's in_channel label (the config's last), unsplit
        degrees += (1,) * (len(op.config_labels) - len(degrees))
    assert (local_op(op, degrees) if degrees else op).cost_key == key


@pytest.mark.parametrize("model, signature", [
    pytest.param("alexnet", "f763f46e5f3ece50", id="alexnet"),
    pytest.param("resnet18", "c4347d8c0fc4065c", id="resnet18"),
    pytest.param("inception_v3", "af79ff6b97d06696", id="inception_v3"),
    pytest.param("gpt2", "11788b7780b8684d", id="gpt2"),
    pytest.param("builder", "f910212ccdbf4c68", id="grouped-dilated-explicit"),
])
def test_graph_signatures_are_pinned(graphs, model, signature):
    assert graphs[model].signature == signature


@pytest.mark.parametrize("module", ["models.kinds.conv", "models.op", "models.op_value", "models.kinds"])
def test_each_module_imports_first_in_a_fresh_interpreter(module):
    """Op, the kinds and the registry import in any order (no cycle between models.op and models.kinds)."""
    code = f"import {module}; from models.op import Op, kind_spec, OpKind; assert kind_spec(OpKind.CONV2D)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=MODELS_DIR.parent)


def test_no_kind_imports_models_op():
    """The kinds import the operator value from the leaf models.op_value; models.op imports the kinds."""
    for path in sorted((MODELS_DIR / "kinds").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) else [])
            assert "models.op" not in names, path.name
