"""Op semantics: SAME padding, the input window a shard reads, and the local op of a task."""

from models.graph import GraphBuilder
from models.kinds.window import same_padding
from models.op import OpKind, Padding, input_boxes, local_op, shard_box, task_input_boxes
from models.zoo import build_graph


def test_same_padding_matches_xla():
    # 64 rows, kernel 11, stride 4: out 16, total pad (15*4 + 11 - 64) = 7 -> (3, 4)
    assert same_padding(64, 11, 4) == (3, 4)
    assert same_padding(7, 5, 1) == (2, 2)
    assert same_padding(8, 1, 1) == (0, 0)


def test_input_box_of_a_height_split_conv_has_its_halo():
    conv1 = build_graph("alexnet", "tiny-imagenet", 8).op("conv1")
    # Output rows 8..16 of 16: input rows from 8*4-3 = 29 to 15*4-3+11 = 68, clipped to 64.
    box = input_boxes(conv1, ((0, 8), (8, 16), (0, 16), (0, 64)))
    assert box == (((0, 8), (29, 64), (0, 64), (0, 3)),)
    # Output rows 0..8: from -3 (clipped to 0) to 7*4-3+11 = 36.
    assert input_boxes(conv1, ((0, 8), (0, 8), (0, 16), (0, 64)))[0][1] == (0, 36)


def test_input_box_of_pool_keeps_channels_and_dense_reads_all_features():
    graph = build_graph("alexnet", "tiny-imagenet", 8)
    pool1 = graph.op("pool1")  # 16 -> 7, kernel 3 stride 2 VALID
    assert input_boxes(pool1, ((0, 4), (0, 7), (3, 7), (32, 64))) == (((0, 4), (0, 15), (6, 15), (32, 64)),)
    fc6 = graph.op("fc6")
    assert input_boxes(fc6, ((2, 4), (0, 2048))) == (((2, 4), (0, 256)),)
    assert input_boxes(graph.op("flatten"), ((0, 4), (0, 256))) == (((0, 4), (0, 1), (0, 1), (0, 256)),)


def test_local_op_of_a_batch_and_channel_split_conv_is_the_op_on_its_shard():
    conv2 = build_graph("alexnet", "tiny-imagenet", 128).op("conv2")  # (128,7,7,64) -> (128,7,7,192)
    local = local_op(conv2, (2, 1, 1, 2, 1))
    assert local.output_shape == (64, 7, 7, 96)
    assert local.input_shapes == ((64, 7, 7, 64),) and local.attrs.padding is Padding.SAME
    assert dict(local.param_shapes) == {"kernel": (5, 5, 64, 96), "bias": (96,)}
    assert local.forward_flops * 4 == conv2.forward_flops
    assert local.name == ""


def test_local_op_of_a_spatially_split_conv_reads_its_halo_window():
    conv1 = build_graph("alexnet", "tiny-imagenet", 128).op("conv1")  # (128,64,64,3) -> (128,16,16,64), k11 s4
    local = local_op(conv1, (1, 2, 1, 1, 1))
    assert local.output_shape == (128, 8, 16, 64)
    # Height: (8-1)*4 + 11 = 39 rows with the halo; width: (16-1)*4 + 11 = 71 columns, padding included.
    assert local.input_shapes == ((128, 39, 71, 3),) and local.attrs.padding is Padding.VALID
    assert local.forward_flops * 2 == conv1.forward_flops


def test_local_op_cost_key_ignores_the_name_and_splits_weights():
    toy = GraphBuilder("toy", "toy", (8, 6, 6, 4))
    toy.conv2d("first", 4, kernel=3)
    toy.conv2d("a", 4, kernel=3)
    toy.conv2d("b", 4, kernel=3)
    toy_graph = toy.build(8)
    assert local_op(toy_graph.op("a"), (2, 1, 1, 1, 1)).cost_key == local_op(toy_graph.op("b"), (2, 1, 1, 1, 1)).cost_key
    assert local_op(toy_graph.op("a"), (2, 1, 1, 1, 1)).cost_key != local_op(toy_graph.op("a"), (1, 2, 1, 1, 1)).cost_key
    # The first op reads the data batch, which needs no gradient: another computation.
    assert "no-input-grad" in local_op(toy_graph.op("first"), (2, 1, 1, 1, 1)).cost_key
    graph = build_graph("alexnet", "tiny-imagenet", 128)
    fc7 = local_op(graph.op("fc7"), (1, 4, 1))
    assert fc7.cost_key == "dense relu in=128x4096 out=128x1024 params=4096x1024,1024 float32"
    assert fc7.kind is OpKind.DENSE


def test_shard_box():
    assert shard_box((8, 16), (2, 4), (1, 3)) == ((4, 8), (12, 16))


def test_a_channel_split_conv_reads_its_input_whole_in_height_and_width():
    conv2 = build_graph("alexnet", "tiny-imagenet", 8).op("conv2")  # (8,7,7,64) -> (8,7,7,192)
    out_box = ((0, 4), (0, 7), (0, 7), (96, 192))
    assert task_input_boxes(conv2, (2, 1, 1, 2, 1), out_box) == (((0, 4), (0, 7), (0, 7), (0, 64)),)
    conv1 = build_graph("alexnet", "tiny-imagenet", 8).op("conv1")
    halo_only = ((0, 8), (8, 16), (0, 16), (0, 64))
    assert task_input_boxes(conv1, (1, 2, 1, 1, 1), halo_only) == input_boxes(conv1, halo_only)
    assert task_input_boxes(conv1, (1, 2, 1, 2, 1), halo_only)[0][1] == (0, 64)
