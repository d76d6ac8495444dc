"""Inception-v3 (Szegedy et al., "Rethinking the Inception Architecture"; torchvision's layout), without
the auxiliary classifier (a training-time side head: left out, so the parameter count is torchvision's
27,161,264 less the head's 3,326,696 = 23,834,568).

    python -m models inception_v3 --dataset imagenet-299     # 5.7 G multiply-adds per 299x299 image

Every conv is torchvision's BasicConv2d: a conv without bias, then a batch norm with ReLU. Stem: 3x3/2
VALID (32), 3x3 VALID (32), 3x3 SAME (64), 3x3/2 max pool, 1x1 (80), 3x3 VALID (192), 3x3/2 max pool
(299 -> 35). Then three Inception-A blocks (35x35: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | 3x3 avg pool-1x1,
concatenated), the grid reduction B (35 -> 17: 3x3/2 | 1x1-3x3-3x3/2 | 3x3/2 max pool), four
Inception-C blocks (17x17: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avg pool-1x1), the grid reduction D
(17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool) and two Inception-E blocks (8x8: 1x1 | 1x1 then 1x3
and 3x1 side by side | 1x1-3x3 then 1x3 and 3x1 | avg pool-1x1), a global average pool, dense, loss.
Ops are named by module path as in torchvision: Mixed_5b.branch5x5_2.conv, Mixed_5b.branch5x5_2.bn,
Mixed_5b (the concat).

`width` scales every conv's channels (1.0: the real network) and `blocks` gives the number of A, C and E
blocks ((3, 4, 2)), so that tests build tiny members. Needs images of at least 75x75.
"""

from __future__ import annotations

from models.datasets import DatasetShape
from models.graph import GraphBuilder, OpGraph
from models.op import Padding

VALID, SAME = Padding.VALID, Padding.SAME
_LETTERS = "bcdefghijklmnopqrstuvwxyz"  # Mixed_5b, Mixed_5c, ...


class InceptionBlocks:
    """The BasicConv2d and the A-E blocks of Inception-v3 on a GraphBuilder, channels scaled by `width`."""

    def __init__(self, b: GraphBuilder, width: float):
        self.b = b
        self.width = width

    def conv(self, name: str, source: str | None, channels: int, kernel, stride: int = 1, padding=SAME) -> str:
        """BasicConv2d: conv (no bias), batch norm, ReLU."""
        scaled = max(1, round(channels * self.width))
        self.b.conv2d(f"{name}.conv", scaled, kernel=kernel, stride=stride, padding=padding, relu=False, bias=False,
                      input=source)
        return self.b.batch_norm(f"{name}.bn", relu=True)

    def block_a(self, name: str, x: str, pool_features: int) -> str:
        b1 = self.conv(f"{name}.branch1x1", x, 64, 1)
        b5 = self.conv(f"{name}.branch5x5_2", self.conv(f"{name}.branch5x5_1", x, 48, 1), 64, 5)
        b3 = self.conv(f"{name}.branch3x3dbl_1", x, 64, 1)
        b3 = self.conv(f"{name}.branch3x3dbl_2", b3, 96, 3)
        b3 = self.conv(f"{name}.branch3x3dbl_3", b3, 96, 3)
        pool = self.b.avg_pool2d(f"{name}.branch_pool.avg", 3, 1, SAME, input=x)
        bp = self.conv(f"{name}.branch_pool", pool, pool_features, 1)
        return self.b.concat(name, inputs=[b1, b5, b3, bp])

    def block_b(self, name: str, x: str) -> str:
        b3 = self.conv(f"{name}.branch3x3", x, 384, 3, stride=2, padding=VALID)
        bd = self.conv(f"{name}.branch3x3dbl_1", x, 64, 1)
        bd = self.conv(f"{name}.branch3x3dbl_2", bd, 96, 3)
        bd = self.conv(f"{name}.branch3x3dbl_3", bd, 96, 3, stride=2, padding=VALID)
        pool = self.b.pool2d(f"{name}.branch_pool", 3, 2, VALID, input=x)
        return self.b.concat(name, inputs=[b3, bd, pool])

    def block_c(self, name: str, x: str, c7: int) -> str:
        b1 = self.conv(f"{name}.branch1x1", x, 192, 1)
        b7 = self.conv(f"{name}.branch7x7_1", x, c7, 1)
        b7 = self.conv(f"{name}.branch7x7_2", b7, c7, (1, 7))
        b7 = self.conv(f"{name}.branch7x7_3", b7, 192, (7, 1))
        bd = self.conv(f"{name}.branch7x7dbl_1", x, c7, 1)
        bd = self.conv(f"{name}.branch7x7dbl_2", bd, c7, (7, 1))
        bd = self.conv(f"{name}.branch7x7dbl_3", bd, c7, (1, 7))
        bd = self.conv(f"{name}.branch7x7dbl_4", bd, c7, (7, 1))
        bd = self.conv(f"{name}.branch7x7dbl_5", bd, 192, (1, 7))
        pool = self.b.avg_pool2d(f"{name}.branch_pool.avg", 3, 1, SAME, input=x)
        bp = self.conv(f"{name}.branch_pool", pool, 192, 1)
        return self.b.concat(name, inputs=[b1, b7, bd, bp])

    def block_d(self, name: str, x: str) -> str:
        b3 = self.conv(f"{name}.branch3x3_1", x, 192, 1)
        b3 = self.conv(f"{name}.branch3x3_2", b3, 320, 3, stride=2, padding=VALID)
        b7 = self.conv(f"{name}.branch7x7x3_1", x, 192, 1)
        b7 = self.conv(f"{name}.branch7x7x3_2", b7, 192, (1, 7))
        b7 = self.conv(f"{name}.branch7x7x3_3", b7, 192, (7, 1))
        b7 = self.conv(f"{name}.branch7x7x3_4", b7, 192, 3, stride=2, padding=VALID)
        pool = self.b.pool2d(f"{name}.branch_pool", 3, 2, VALID, input=x)
        return self.b.concat(name, inputs=[b3, b7, pool])

    def block_e(self, name: str, x: str) -> str:
        b1 = self.conv(f"{name}.branch1x1", x, 320, 1)
        b3 = self.conv(f"{name}.branch3x3_1", x, 384, 1)
        b3 = self.b.concat(f"{name}.branch3x3", inputs=[self.conv(f"{name}.branch3x3_2a", b3, 384, (1, 3)),
                                                        self.conv(f"{name}.branch3x3_2b", b3, 384, (3, 1))])
        bd = self.conv(f"{name}.branch3x3dbl_1", x, 448, 1)
        bd = self.conv(f"{name}.branch3x3dbl_2", bd, 384, 3)
        bd = self.b.concat(f"{name}.branch3x3dbl", inputs=[self.conv(f"{name}.branch3x3dbl_3a", bd, 384, (1, 3)),
                                                           self.conv(f"{name}.branch3x3dbl_3b", bd, 384, (3, 1))])
        pool = self.b.avg_pool2d(f"{name}.branch_pool.avg", 3, 1, SAME, input=x)
        bp = self.conv(f"{name}.branch_pool", pool, 192, 1)
        return self.b.concat(name, inputs=[b1, b3, bd, bp])


def inception_v3(dataset: DatasetShape, batch_size: int, width: float = 1.0,
                 blocks: tuple[int, int, int] = (3, 4, 2)) -> OpGraph:
    b = GraphBuilder("inception_v3", dataset.name, (batch_size, dataset.height, dataset.width, dataset.channels))
    n = InceptionBlocks(b, width)
    x = n.conv("Conv2d_1a_3x3", None, 32, 3, stride=2, padding=VALID)
    x = n.conv("Conv2d_2a_3x3", x, 32, 3, padding=VALID)
    x = n.conv("Conv2d_2b_3x3", x, 64, 3)
    x = b.pool2d("maxpool1", 3, 2, VALID)
    x = n.conv("Conv2d_3b_1x1", x, 80, 1, padding=VALID)
    x = n.conv("Conv2d_4a_3x3", x, 192, 3, padding=VALID)
    x = b.pool2d("maxpool2", 3, 2, VALID)
    count_a, count_c, count_e = blocks
    for index in range(count_a):
        x = n.block_a(f"Mixed_5{_LETTERS[index]}", x, 32 if index == 0 else 64)
    x = n.block_b("Mixed_6a", x)
    for index in range(count_c):
        x = n.block_c(f"Mixed_6{_LETTERS[index]}", x, (128, 160, 160, 192)[min(index, 3)])
    x = n.block_d("Mixed_7a", x)
    for index in range(count_e):
        x = n.block_e(f"Mixed_7{_LETTERS[index]}", x)
    b.global_avg_pool("avgpool", input=x)
    b.dense("fc", dataset.classes, relu=False)
    b.softmax_xent("loss")
    return b.build(batch_size)
