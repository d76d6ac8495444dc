"""The strategy picture: written, different for different strategies, branches side by side."""

import matplotlib.image
import numpy as np

from models.graph import GraphBuilder
from models.zoo import build_graph
from search.picture import draw_strategies, layout
from soap.baselines import data_parallel, owt


def test_alexnet_owt_and_data_parallel_are_drawn_and_differ(tmp_path):
    graph = build_graph("alexnet", "tiny-imagenet", 128)
    paths = {}
    for name, baseline in (("owt", owt), ("data_parallel", data_parallel)):
        paths[name] = tmp_path / f"{name}.png"
        # a fake machine: 4 devices, 2 to a node
        draw_strategies([str(paths[name]), str(tmp_path / f"{name}.svg")], graph, {name: baseline(graph, 4)},
                        num_devices=4, devices_per_node=2, titles={name: name})
        assert paths[name].read_bytes()[:4] == b"\x89PNG"
        assert b"<svg" in (tmp_path / f"{name}.svg").read_bytes()[:1000]
    owt_pixels, dp_pixels = (matplotlib.image.imread(paths[name]) for name in ("owt", "data_parallel"))
    assert owt_pixels.shape == dp_pixels.shape and not np.array_equal(owt_pixels, dp_pixels)


def test_both_strategies_in_one_figure(tmp_path):
    graph = build_graph("alexnet", "tiny-imagenet", 128)
    path = tmp_path / "strategy.png"
    draw_strategies([str(path)], graph, {"owt": owt(graph, 4), "data_parallel": data_parallel(graph, 4)}, 4)
    one = tmp_path / "one.png"
    draw_strategies([str(one)], graph, {"owt": owt(graph, 4)}, 4)
    assert matplotlib.image.imread(path).shape[1] > matplotlib.image.imread(one).shape[1]  # two panels


def test_branches_sit_side_by_side_and_joins_return_to_the_first_lane():
    builder = GraphBuilder("fork", "toy", (8, 16, 16, 3))
    builder.conv2d("stem", 8, 3, input=None)
    builder.conv2d("left", 8, 3, input="stem")
    builder.conv2d("right_1", 8, 3, input="stem")
    builder.conv2d("right_2", 8, 3, input="right_1")
    builder.add("join", ["left", "right_2"])
    builder.conv2d("after", 8, 3)
    places = layout(builder.build(8))
    assert places == {"stem": (0, 0), "left": (1, 0), "right_1": (1, 1), "right_2": (2, 1), "join": (3, 0),
                      "after": (4, 0)}
