"""AlexNet as an operator graph (13 ops, as in FlexFlow's AlexNet; ReLU fused into conv and dense).

    python -m models alexnet --dataset dogs-vs-cats

conv1-conv5 use SAME padding (64-192-384-256-256 channels; 11x11 stride 4, 5x5, then 3x3), the three
max-pools are 3x3 stride 2 VALID. At 64x64 the spatial sizes after conv1, pool1, conv2, pool2, conv3,
conv4, conv5, pool5 are 16, 7, 7, 3, 3, 3, 3, 1 (flatten = 256 features); at 224x224 they are
56, 27, 27, 13, 13, 13, 13, 6 (flatten = 9216, the classic fc6 input).
"""

from __future__ import annotations

from models.datasets import DatasetShape
from models.graph import GraphBuilder, OpGraph


def alexnet(dataset: DatasetShape, batch_size: int) -> OpGraph:
    b = GraphBuilder("alexnet", dataset.name, (batch_size, dataset.height, dataset.width, dataset.channels))
    b.conv2d("conv1", 64, kernel=11, stride=4)
    b.pool2d("pool1")
    b.conv2d("conv2", 192, kernel=5)
    b.pool2d("pool2")
    b.conv2d("conv3", 384, kernel=3)
    b.conv2d("conv4", 256, kernel=3)
    b.conv2d("conv5", 256, kernel=3)
    b.pool2d("pool5")
    b.flatten("flatten")
    b.dense("fc6", 4096)
    b.dense("fc7", 4096)
    b.dense("fc8", dataset.classes, relu=False)
    b.softmax_xent("loss")
    return b.build(batch_size)
