"""VGG-16 (Simonyan and Zisserman, configuration D): 13 3x3 convs in five groups, each group ending in a
2x2 stride-2 max pool, then three fully-connected layers. A chain, like AlexNet.

    python -m models vgg16 --dataset imagenet      # 138,357,544 parameters, 15.5 G multiply-adds per image

`width` scales the convs (64-128-256-512-512 at 64) and `fc_units` the hidden dense layers (4096), so
that tests build tiny members of the family; `groups` gives the convs per group ((2, 2, 3, 3, 3)).
Needs images of at least 32x32 (five halvings).
"""

from __future__ import annotations

from models.datasets import DatasetShape
from models.graph import GraphBuilder, OpGraph
from models.op import Padding


def vgg16(dataset: DatasetShape, batch_size: int, width: int = 64, fc_units: int = 4096,
          groups: tuple[int, ...] = (2, 2, 3, 3, 3)) -> OpGraph:
    b = GraphBuilder("vgg16", dataset.name, (batch_size, dataset.height, dataset.width, dataset.channels))
    source = None
    for group, convs in enumerate(groups, start=1):
        channels = width * min(2 ** (group - 1), 8)
        for index in range(1, convs + 1):
            source = b.conv2d(f"conv{group}_{index}", channels, kernel=3, input=source)
        source = b.pool2d(f"pool{group}", kernel=2, stride=2, padding=Padding.VALID)
    b.flatten("flatten")
    b.dense("fc6", fc_units)
    b.dense("fc7", fc_units)
    b.dense("fc8", dataset.classes, relu=False)
    b.softmax_xent("loss")
    return b.build(batch_size)
