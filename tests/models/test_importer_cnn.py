"""The importer on modern CNN layers: a ConvNeXt-style model (depthwise conv, layer norm over the channels,
per-pixel dense layers, GELU, dropout, residual adds) imports to the right ops, shapes, parameter counts and
FLOPs, and the graph's network on the module's own parameters gives the module's loss and gradients; every
split on 4 devices of the new kinds' ops, each task computing its slices, assembles into the whole op."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from models.batch import synthetic_batch
from models.errors import ModelImportError, ShapeError
from models.graph import GraphBuilder
from models.graph_file import graph_from_json, graph_to_json
from models.importer import import_model
from models.kinds.activation import Activation
from models.labels import (Window, axis_labels, label_ranges, splits_statistics, splits_window, task_grid, tasks_array_boxes,
                           tasks_input_boxes, tasks_output_boxes)
from models.network import apply_op, module_with
from models.op import OpKind, Padding, local_op
from soap.space import enumerate_configs

DATASET, CLASSES, BATCH, WIDTH = "tiny-imagenet", 200, 2, 8


class Block(nnx.Module):
    """ConvNeXt's block: depthwise 7x7 conv -> layer norm -> dense 4x -> GELU -> dense -> dropout, + x."""

    def __init__(self, width, rate, bias, rngs):
        self.dwconv = nnx.Conv(width, width, (7, 7), feature_group_count=width, rngs=rngs)
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.up = nnx.Linear(width, 4 * width, rngs=rngs)
        self.down = nnx.Linear(4 * width, width, use_bias=bias, rngs=rngs)
        self.drop = nnx.Dropout(rate, rngs=rngs)

    def __call__(self, x):
        return x + self.drop(self.down(jax.nn.gelu(self.up(self.norm(self.dwconv(x))))))


class TinyConvNeXt(nnx.Module):
    """A patchify stem (8x8, stride 8: 64x64 -> 8x8) with its layer norm, two blocks (the second's
    projection without bias), a global mean, a layer norm and the head."""

    def __init__(self, rngs, rate=0.1):
        self.stem = nnx.Conv(3, WIDTH, (8, 8), strides=8, padding="VALID", use_bias=False, rngs=rngs)
        self.stem_norm = nnx.LayerNorm(WIDTH, rngs=rngs)
        self.blocks = nnx.List([Block(WIDTH, rate, index == 0, rngs) for index in range(2)])
        self.norm = nnx.LayerNorm(WIDTH, rngs=rngs)
        self.head = nnx.Linear(WIDTH, CLASSES, rngs=rngs)

    def __call__(self, x):
        x = self.stem_norm(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x.mean(axis=(1, 2))))


def _build(model, **kwargs):
    return model(rngs=nnx.Rngs(jax.random.key(0, impl="rbg")), **kwargs)


def _abstract(model, **kwargs):
    return nnx.eval_shape(lambda: model(rngs=nnx.Rngs(0), **kwargs))


IMAGE, HIDDEN = (BATCH, 8, 8, WIDTH), (BATCH, 8, 8, 4 * WIDTH)
BLOCK_OPS = [("dwconv", OpKind.CONV2D, IMAGE), ("norm", OpKind.LAYER_NORM, IMAGE), ("up", OpKind.DENSE, HIDDEN),
             ("activation", OpKind.ACTIVATION, HIDDEN), ("down", OpKind.DENSE, IMAGE),
             ("drop", OpKind.DROPOUT, IMAGE), ("add", OpKind.ADD, IMAGE)]
OPS = ([("stem", OpKind.CONV2D, IMAGE), ("stem_norm", OpKind.LAYER_NORM, IMAGE)]
       + [(f"blocks.{b}.{name}", kind, shape) for b in range(2) for name, kind, shape in BLOCK_OPS]
       + [("global_avg_pool", OpKind.GLOBAL_AVG_POOL, (BATCH, WIDTH)), ("norm", OpKind.LAYER_NORM, (BATCH, WIDTH)),
          ("head", OpKind.DENSE, (BATCH, CLASSES)), ("loss", OpKind.SOFTMAX_XENT, (BATCH,))])
PIXELS = BATCH * 8 * 8
BLOCK_FLOPS = (2 * PIXELS * WIDTH * 49          # depthwise: one input channel per output channel
               + 7 * PIXELS * WIDTH             # layer norm
               + 2 * 2 * PIXELS * WIDTH * 4 * WIDTH  # up and down
               + 9 * PIXELS * 4 * WIDTH         # GELU (tanh)
               + 2 * PIXELS * WIDTH             # dropout
               + PIXELS * WIDTH)                # residual add
FORWARD_FLOPS = (2 * PIXELS * WIDTH * 64 * 3 + 7 * PIXELS * WIDTH + 2 * BLOCK_FLOPS + PIXELS * WIDTH
                 + 7 * BATCH * WIDTH + 2 * BATCH * WIDTH * CLASSES + 5 * BATCH * CLASSES)


def _module_params(module) -> dict:
    return {path: variable.get_value() for path, variable in nnx.to_flat_state(nnx.state(module, nnx.Param))}


def test_a_convnext_style_model_imports_to_its_ops_shapes_parameters_and_flops():
    module = _abstract(TinyConvNeXt)
    graph = import_model(module, DATASET, BATCH).graph
    assert [(op.name, op.kind, op.output_shape) for op in graph.ops] == OPS
    assert graph.param_count == sum(math.prod(value.shape) for value in _module_params(module).values())
    assert graph.forward_flops == FORWARD_FLOPS
    dwconv = graph.op("blocks.0.dwconv")
    assert (dwconv.attrs.groups, dict(dwconv.param_shapes)) == (WIDTH, {"kernel": (7, 7, 1, WIDTH), "bias": (WIDTH,)})
    assert graph.op("stem").attrs.plain and not graph.op("blocks.0.up").attrs.relu
    assert dict(graph.op("blocks.1.down").param_shapes) == {"kernel": (4 * WIDTH, WIDTH)}
    assert graph.op("blocks.0.norm").attrs.eps == pytest.approx(1e-6)
    assert graph.op("blocks.0.activation").attrs.fn is Activation.GELU_TANH
    assert graph.op("blocks.0.drop").attrs.rate == pytest.approx(0.1)
    assert graph.producers("blocks.1.add") == ("blocks.0.add", "blocks.1.drop")


class ExactGelu(nnx.Module):
    def __init__(self, rngs):
        self.stem = nnx.Conv(3, WIDTH, (8, 8), strides=8, rngs=rngs)
        self.head = nnx.Linear(WIDTH, CLASSES, rngs=rngs)

    def __call__(self, x):
        return self.head(jax.nn.gelu(self.stem(x), approximate=False).mean(axis=(1, 2)))


def test_dropout_at_rate_0_is_no_op_and_exact_gelu_is_its_own_function():
    graph = import_model(_abstract(TinyConvNeXt, rate=0.0), DATASET, BATCH).graph
    assert not any(op.kind is OpKind.DROPOUT for op in graph.ops)
    exact = import_model(_abstract(ExactGelu), DATASET, BATCH)
    assert exact.graph.op("activation").attrs.fn is Activation.GELU


def _user_loss(module, images, labels):
    return optax.softmax_cross_entropy_with_integer_labels(module(images), labels).mean()


def _network_loss(network, images, labels):
    return network(images, labels).mean()


class DilatedPadded(nnx.Module):
    """nnx.Conv's kernel_dilation and explicit padding, nnx.GroupNorm, a ReLU after it and a global maximum."""

    def __init__(self, rngs):
        self.stem = nnx.Conv(3, WIDTH, (8, 8), strides=8, padding="VALID", rngs=rngs)
        self.dilated = nnx.Conv(WIDTH, WIDTH, (3, 3), kernel_dilation=2, rngs=rngs)
        self.group_norm = nnx.GroupNorm(WIDTH, num_groups=4, rngs=rngs)
        self.padded = nnx.Conv(WIDTH, WIDTH, (3, 3), padding=((1, 1), (2, 2)), rngs=rngs)
        self.head = nnx.Linear(WIDTH, CLASSES, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.padded(nnx.relu(self.group_norm(self.dilated(self.stem(x))))))
        return self.head(jnp.max(x, axis=(1, 2)))


def test_dilation_explicit_padding_and_group_norm_import():
    graph = import_model(_abstract(DilatedPadded), DATASET, BATCH).graph
    assert [(op.name, op.kind) for op in graph.ops] == [
        ("stem", OpKind.CONV2D), ("dilated", OpKind.CONV2D), ("group_norm", OpKind.GROUP_NORM),
        ("activation", OpKind.ACTIVATION), ("padded", OpKind.CONV2D), ("global_max_pool", OpKind.GLOBAL_MAX_POOL),
        ("head", OpKind.DENSE), ("loss", OpKind.SOFTMAX_XENT)]
    assert graph.op("activation").attrs.fn is Activation.RELU and graph.op("padded").attrs.relu  # unfusable, fused
    norm = graph.op("group_norm")
    assert (norm.attrs.groups, norm.attrs.eps, dict(norm.param_shapes)) == (4, 1e-6, {"scale": (8,), "bias": (8,)})
    assert norm.space.size("channel") == 4 and norm.space.splittable == {"sample", "channel"}
    dilated, padded = graph.op("dilated"), graph.op("padded")
    assert (dilated.attrs.padding, dilated.attrs.dilation_hw, dilated.output_shape) == (Padding.SAME, (2, 2), IMAGE)
    assert (padded.attrs.padding, padded.attrs.pads, padded.output_shape) == (
        Padding.EXPLICIT, ((1, 1), (2, 2)), (BATCH, 8, 10, WIDTH))
    assert "dilation_hw=(2, 2)" in dilated.cost_key and "EXPLICIT" in padded.cost_key
    assert padded.forward_flops == 2 * BATCH * 8 * 10 * WIDTH * 9 * WIDTH


class SplitChannels(nnx.Module):
    """An RMS norm, jnp.split on the channels into two branches, joined again, then a range of the channels."""

    def __init__(self, rngs):
        self.stem = nnx.Conv(3, WIDTH, (8, 8), strides=8, padding="VALID", rngs=rngs)
        self.rms = nnx.RMSNorm(WIDTH, rngs=rngs)
        self.left = nnx.Conv(WIDTH // 2, WIDTH // 2, (3, 3), rngs=rngs)
        self.right = nnx.Conv(WIDTH // 2, WIDTH, (1, 1), rngs=rngs)
        self.head = nnx.Linear(6, CLASSES, rngs=rngs)

    def __call__(self, x):
        left, right = jnp.split(self.rms(self.stem(x)), 2, axis=-1)
        x = jnp.concatenate([nnx.relu(self.left(left)), nnx.relu(self.right(right))], axis=-1)
        return self.head(x[..., 3:9].mean(axis=(1, 2)))


def test_a_split_on_the_channels_is_a_channel_slice_per_part():
    graph = import_model(_abstract(SplitChannels), DATASET, BATCH).graph
    assert [(op.name, op.kind, op.output_shape) for op in graph.ops[:7]] == [
        ("stem", OpKind.CONV2D, IMAGE), ("rms", OpKind.LAYER_NORM, IMAGE), ("channel_slice_1", OpKind.CHANNEL_SLICE, (BATCH, 8, 8, 4)),
        ("channel_slice_2", OpKind.CHANNEL_SLICE, (BATCH, 8, 8, 4)), ("left", OpKind.CONV2D, (BATCH, 8, 8, 4)),
        ("right", OpKind.CONV2D, IMAGE), ("concat", OpKind.CONCAT, (BATCH, 8, 8, 12))]
    assert [graph.op(name).attrs.offset for name in ("channel_slice_1", "channel_slice_2", "channel_slice_3")] == [
        0, 4, 3]
    assert graph.op("channel_slice_3").output_shape == (BATCH, 8, 8, 6)
    assert graph.op("rms").attrs.rms and dict(graph.op("rms").param_shapes) == {"scale": (WIDTH,)}


@pytest.mark.parametrize("model", [pytest.param(lambda rngs: TinyConvNeXt(rngs, rate=0.0), id="convnext"),
                                   pytest.param(DilatedPadded, id="dilated-padded"),
                                   pytest.param(SplitChannels, id="split-channels"),
                                   pytest.param(lambda rngs: Transposed(rngs), id="conv-transpose-stride-1")])
def test_the_network_on_the_imported_parameters_gives_the_module_s_loss_and_gradients(model):
    module = _build(model)
    imported = import_model(module, DATASET, BATCH)
    images, labels = synthetic_batch(imported.graph, seed=1)
    module.train()
    loss, grads = jax.jit(nnx.value_and_grad(_user_loss))(module, images, labels)
    network = module_with(imported.graph, imported.params)
    network_loss, network_grads = jax.jit(nnx.value_and_grad(_network_loss))(network, images, labels)
    np.testing.assert_allclose(network_loss, loss, rtol=1e-5)
    expected = {path: variable.get_value() for path, variable in nnx.to_flat_state(grads)}
    mapped = imported.module_paths(nnx.to_pure_dict(network_grads)["layers"])
    assert set(mapped) == set(expected)
    scale = max(float(jnp.abs(value).max()) for value in expected.values())
    for path, value in expected.items():
        np.testing.assert_allclose(mapped[path], value, rtol=1e-5, atol=1e-6 * scale, err_msg=str(path))


# --- every task's computation, assembled ------------------------------------------------------------------

def _random(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def _slice(array, box):
    return array[tuple(slice(start, stop) for start, stop in box)]


def _task_input(op, degrees, x, ranges, box):
    """What a task computes on of input `x`: its box; where the split divides a windowed label, each
    window's span of the zero-padded image (a halo shard's local op is a VALID window over it; a task
    reading the image whole, a channel split's, holds that span too)."""
    windowed = splits_window(op.space, degrees)
    region, pads = [], []
    for axis, (start, stop) in zip(op.space.inputs[0], box):
        if windowed and isinstance(axis, Window):
            low, high = ranges[axis.label]
            start, stop = low * axis.stride - axis.pad_lo, (high - 1) * axis.stride - axis.pad_lo + axis.kernel
            pads.append((max(-start, 0), max(stop - axis.size, 0)))
            start, stop = max(start, 0), min(stop, axis.size)
        else:
            pads.append((0, 0))
        region.append(slice(start, stop))
    return jnp.pad(x[tuple(region)], pads)


def assembled(op, degrees, params, x):
    """Every task's `task_apply` on its slices written into its output box (partial sums added); asserts
    each task's slices have its local op's shapes and every output element has as many writers as there
    are partial sums of it (a split of the input channels)."""
    space, local = op.space, local_op(op, degrees)
    boxes = tasks_input_boxes(space, degrees, 0)
    param_boxes = {name: tasks_array_boxes(space, degrees, names) for name, names in space.params}
    total, writers = np.zeros(op.output_shape, np.float32), np.zeros(op.output_shape, np.int32)
    for k, (index, out_box) in enumerate(zip(task_grid(degrees), tasks_output_boxes(space, degrees))):
        task_x = _task_input(op, degrees, x, label_ranges(space, degrees, index), boxes[k])
        assert task_x.shape == local.input_shapes[0]
        task_params = {name: _slice(params[name], boxes_[k]) for name, boxes_ in param_boxes.items()} or None
        if task_params:
            assert {name: p.shape for name, p in task_params.items()} == dict(local.param_shapes)
        y = op.spec.task_apply(op, degrees, index, task_params, (task_x,), None)
        assert y.shape == local.output_shape
        region = tuple(slice(start, stop) for start, stop in out_box)
        total[region] += np.asarray(y)
        writers[region] += 1
    carried = {n for axis in space.output for n in axis_labels(axis)}
    sums = math.prod(d for name, d in zip(space.config_labels, degrees) if name not in carried)
    assert (writers == sums).all()
    return total


def _kind_graph():
    """The new kinds on 8x8 images of 8 channels: depthwise, grouped (2 groups, 8 -> 12; 4 groups) and
    strided grouped convs, a dilated depthwise conv, a conv of explicit padding, strided and dilated on its
    width (4x2 outputs), a per-pixel dense with and without bias, layer norm, group norm (4 groups),
    GELU, dropout, a global maximum, the channels [2, 6)."""
    b = GraphBuilder("kinds", "toy", IMAGE)
    b.conv2d("stem", WIDTH, kernel=1, relu=False, input=None)
    b.conv2d("depthwise", WIDTH, kernel=7, groups=WIDTH, relu=False, input="stem")
    b.conv2d("grouped", 12, kernel=3, groups=2, relu=False, bias=False, input="stem")
    b.conv2d("strided", WIDTH, kernel=3, stride=2, groups=4, relu=True, input="stem")
    b.conv2d("dilated", WIDTH, kernel=3, dilation=2, groups=WIDTH, relu=False, input="stem")
    b.conv2d("padded", 4, kernel=(3, 5), stride=2, padding=((1, 1), (2, 2)), dilation=(1, 2), input="stem")
    b.layer_norm("norm", eps=1e-6, input="stem")
    b.group_norm("group_norm", 4, input="stem")
    b.dense("up", 4 * WIDTH, relu=False, pixels=True, input="stem")
    b.dense("down", WIDTH, relu=False, bias=False, pixels=True, input="stem")
    b.activation("gelu", "gelu_tanh", input="stem")
    b.dropout("drop", 0.0, input="stem")
    b.global_max_pool("max", input="stem")
    b.channel_slice("slice", 2, 4, input="stem")
    return b.build(BATCH)


KINDS = _kind_graph()


@pytest.mark.parametrize("name", [op.name for op in KINDS.ops if op.name != "stem"])
def test_tasks_assemble_into_the_whole_op(name):
    """Every split of `soap.space.enumerate_configs` on 4 devices but those dividing statistics (a layer norm
    split on the channels: its tasks all-reduce statistics inside the op)."""
    op = KINDS.op(name)
    params = {param: _random(shape, i + 1) for i, (param, shape) in enumerate(op.param_shapes)} or None
    x = _random(op.input_shapes[0], 0)
    whole = np.asarray(apply_op(op, params, (x,)))
    checked = 0
    for degrees in sorted({config.degrees for config in enumerate_configs(op, 4)}):
        if splits_statistics(op.space, degrees):
            continue
        np.testing.assert_allclose(assembled(op, degrees, params, x), whole, rtol=1e-5, atol=1e-5,
                                   err_msg=str(degrees))
        checked += 1
    assert checked >= 5


def test_a_grouped_conv_splits_whole_groups_and_reads_their_input_channels():
    op = KINDS.op("grouped")  # 8 -> 12 channels in 2 groups: 4 input and 6 output channels each
    assert [label.name for label in op.config_labels] == ["sample", "height", "width", "channel"]
    assert op.space.size("channel") == 2 and op.forward_flops == 2 * BATCH * 64 * 12 * 9 * 4
    channel_split = (1, 1, 1, 2)
    assert [box[3] for box in tasks_input_boxes(op.space, channel_split, 0)] == [(0, 4), (4, 8)]
    assert [box[3] for box in tasks_output_boxes(op.space, channel_split)] == [(0, 6), (6, 12)]
    assert tasks_array_boxes(op.space, channel_split, dict(op.space.params)["kernel"])[1] == (
        (0, 3), (0, 3), (0, 4), (6, 12))
    local = local_op(op, channel_split)  # one group each: a plain conv, of a plain conv's cost key
    assert (local.attrs.plain, local.input_shapes, dict(local.param_shapes)) == (
        True, ((BATCH, 8, 8, 4),), {"kernel": (3, 3, 4, 6)})
    assert local_op(KINDS.op("strided"), (1, 1, 1, 2)).attrs.groups == 2
    assert "groups=2" in op.cost_key and "groups" not in KINDS.op("stem").cost_key


def test_a_grouped_conv_matches_flax_s_conv():
    op = KINDS.op("strided")
    layer = op.spec.layer(op, nnx.Rngs(0))
    layer.kernel[...] = _random(layer.kernel[...].shape, 3)
    x = _random(op.input_shapes[0], 4)
    params = {"kernel": layer.kernel[...], "bias": layer.bias[...]}
    np.testing.assert_allclose(apply_op(op, params, (x,)), jax.nn.relu(layer(x)), rtol=1e-5, atol=1e-5)


def test_the_graph_file_keeps_groups_and_per_pixel_dense_layers():
    read = graph_from_json(graph_to_json(KINDS))
    assert read.signature == KINDS.signature and read.op("grouped").attrs == KINDS.op("grouped").attrs


def test_groups_that_do_not_divide_the_channels_are_one_line():
    b = GraphBuilder("bad", "toy", IMAGE)
    with pytest.raises(ShapeError, match=r"^conv 'g': 3 groups do not divide its 8 input and 8 output channels; "
                                        r"use a number of groups dividing both$"):
        b.conv2d("g", WIDTH, kernel=3, groups=3, input=None)
    with pytest.raises(ShapeError, match=r"^group norm 'n': 3 groups do not divide its 8 channels; use a number of "
                                         r"groups dividing 8$"):
        b.group_norm("n", 3, input=None)


# --- what stays unsupported: one line ------------------------------------------------------------------

class Cube(ExactGelu):
    def __call__(self, x):
        return self.head((self.stem(x) ** 3).mean(axis=(1, 2)))  # unsupported: cube


class BroadcastDropout(TinyConvNeXt):
    def __init__(self, rngs):
        super().__init__(rngs)
        self.blocks[0].drop = nnx.Dropout(0.1, broadcast_dims=(1, 2), rngs=rngs)


class NoBiasNorm(TinyConvNeXt):
    def __init__(self, rngs):
        super().__init__(rngs)
        self.stem_norm = nnx.LayerNorm(WIDTH, use_bias=False, rngs=rngs)


def test_an_unknown_element_wise_function_is_one_line_naming_where_it_began():
    with pytest.raises(ModelImportError) as error:
        import_model(_abstract(Cube), DATASET, BATCH)
    message = str(error.value)
    with open(__file__) as file:
        line = next(number for number, text in enumerate(file, 1) if "# unsupported: cube" in text)
    assert "\n" not in message
    assert message.startswith(f"{__file__}:{line}: cannot import the root module (Cube): it applies 'reduce_sum' to "
                              f"an element-wise function of an activation (from {__file__}:{line}) that is none of "
                              f"gelu, gelu_tanh, silu, tanh, sigmoid. SOAP imports")


@pytest.mark.parametrize("model, match", [
    pytest.param(BroadcastDropout, r"module 'blocks\.0\.drop' \(Dropout\): it is a Dropout with "
                 r"broadcast_dims=\(1, 2\), where SOAP's dropout draws every element", id="broadcast-dropout"),
    pytest.param(NoBiasNorm, r"module 'stem_norm' \(LayerNorm\): it is a LayerNorm with use_bias=False, where SOAP's "
                 r"layer_norm computes use_bias=True", id="layer-norm-without-bias"),
])
def test_an_unsupported_setting_is_one_line(model, match):
    with pytest.raises(ModelImportError, match=match) as error:
        import_model(_abstract(model), DATASET, BATCH)
    assert "\n" not in str(error.value)


class Transposed(nnx.Module):
    """nnx.ConvTranspose: a convolution of the input dilated by the strides (lhs_dilation)."""

    def __init__(self, rngs, strides: int = 1):
        self.up = nnx.ConvTranspose(3, WIDTH, (3, 3), strides=strides, rngs=rngs)
        self.head = nnx.Linear(WIDTH, CLASSES, rngs=rngs)

    def __call__(self, x):
        return self.head(self.up(x).mean(axis=(1, 2)))


def test_a_conv_transpose_of_stride_1_is_the_conv_it_computes_and_a_strided_one_is_one_line():
    # flax's ConvTranspose (transpose_kernel=False) is lax.conv_general_dilated with lhs_dilation = strides:
    # at stride 1 a plain convolution of its own kernel, at stride 2 an input dilation no conv2d computes.
    graph = import_model(_abstract(Transposed), DATASET, BATCH).graph
    assert [op.kind for op in graph.ops][:1] == [OpKind.CONV2D] and graph.ops[0].attrs.kernel_hw == (3, 3)
    with pytest.raises(ModelImportError, match=r"^.*test_importer_cnn\.py:\d+: cannot import module 'up' "
                                               r"\(ConvTranspose\): it computes a transposed convolution of strides "
                                               r"\(2, 2\) \(input dilation: nnx\.ConvTranspose with strides above 1\), "
                                               r"which no kind of SOAP computes; a stride-1 nnx\.ConvTranspose "
                                               r"imports as the conv it is\. SOAP imports ") as error:
        import_model(_abstract(Transposed, strides=2), DATASET, BATCH)
    assert "\n" not in str(error.value)
