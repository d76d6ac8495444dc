"""ResNet-18, -50 and -101 (He et al.; torchvision's v1.5 layout: the stride on the 3x3 conv).

    python -m models resnet50 --dataset imagenet    # 25,557,032 parameters, 4.1 G multiply-adds per image

Stem: conv1 7x7/2 (64) -> bn_conv1 + ReLU -> pool1 3x3/2 SAME max pool. Four stages of blocks (64, 128,
256, 512 channels at `width` 64; strides 1, 2, 2, 2). A basic block (ResNet-18) is two 3x3 convs; a
bottleneck block (ResNet-50, -101) a 1x1, a 3x3 and a 1x1 conv to 4x the channels. Every conv has no bias
and a batch norm after it (ReLU fused into the norm, except the last of a block, whose ReLU follows the
residual add); the first block of a stage that changes the shape adds a projection shortcut (1x1 conv
with the stride, and its norm). Head: global average pool, dense to the classes, softmax cross-entropy.
Ops are named as in the Caffe release: res2a_branch2a / bn2a_branch2a, res2a_branch1, res2a (the add).
"""

from __future__ import annotations

from models.datasets import DatasetShape
from models.graph import GraphBuilder, OpGraph

_BLOCK_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _block_name(stage: int, index: int) -> str:
    return f"{stage}{_BLOCK_LETTERS[index]}" if index < len(_BLOCK_LETTERS) else f"{stage}b{index}"


def _conv_bn(b: GraphBuilder, name: str, source: str, channels: int, kernel: int, stride: int, relu: bool) -> str:
    b.conv2d(f"res{name}", channels, kernel=kernel, stride=stride, relu=False, bias=False, input=source)
    return b.batch_norm(f"bn{name}", relu=relu)


def resnet(model: str, dataset: DatasetShape, batch_size: int, blocks: tuple[int, ...], bottleneck: bool,
           width: int = 64) -> OpGraph:
    b = GraphBuilder(model, dataset.name, (batch_size, dataset.height, dataset.width, dataset.channels))
    b.conv2d("conv1", width, kernel=7, stride=2, relu=False, bias=False, input=None)
    b.batch_norm("bn_conv1", relu=True)
    x = b.pool2d("pool1", kernel=3, stride=2, padding="SAME")
    expansion = 4 if bottleneck else 1
    for stage, count in enumerate(blocks):
        channels = width * 2 ** stage
        for index in range(count):
            name = _block_name(stage + 2, index)
            stride = 2 if stage > 0 and index == 0 else 1
            if bottleneck:
                y = _conv_bn(b, f"{name}_branch2a", x, channels, 1, 1, relu=True)
                y = _conv_bn(b, f"{name}_branch2b", y, channels, 3, stride, relu=True)
                y = _conv_bn(b, f"{name}_branch2c", y, channels * expansion, 1, 1, relu=False)
            else:
                y = _conv_bn(b, f"{name}_branch2a", x, channels, 3, stride, relu=True)
                y = _conv_bn(b, f"{name}_branch2b", y, channels, 3, 1, relu=False)
            shortcut = x
            if stride != 1 or b.shape(x)[-1] != channels * expansion:
                shortcut = _conv_bn(b, f"{name}_branch1", x, channels * expansion, 1, stride, relu=False)
            x = b.add(f"res{name}", inputs=[y, shortcut], relu=True)
    b.global_avg_pool("pool5", input=x)
    b.dense("fc", dataset.classes, relu=False)
    b.softmax_xent("loss")
    return b.build(batch_size)


def resnet18(dataset: DatasetShape, batch_size: int, width: int = 64, blocks: tuple[int, ...] = (2, 2, 2, 2)) -> OpGraph:
    return resnet("resnet18", dataset, batch_size, blocks, bottleneck=False, width=width)


def resnet50(dataset: DatasetShape, batch_size: int, width: int = 64, blocks: tuple[int, ...] = (3, 4, 6, 3)) -> OpGraph:
    return resnet("resnet50", dataset, batch_size, blocks, bottleneck=True, width=width)


def resnet101(dataset: DatasetShape, batch_size: int, width: int = 64,
              blocks: tuple[int, ...] = (3, 4, 23, 3)) -> OpGraph:
    return resnet("resnet101", dataset, batch_size, blocks, bottleneck=True, width=width)
