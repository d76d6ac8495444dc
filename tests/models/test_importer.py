"""The importer of a user's flax nnx module: models written here (not the zoo) import to the right ops,
shapes, parameter counts and FLOPs, and the graph's network on the module's own parameters gives the
module's loss and gradients; the zoo's ResNet-18 written as a plain module imports to the zoo's graph;
every bad input is one line."""

import dataclasses
import json
import math
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from models.batch import synthetic_batch
from models.datasets import dataset_shape
from models.errors import ModelImportError
from models.importer import import_model
from models.network import module_with
from models.op import OpKind
from models.resnet import resnet18
from models.user_model import load_user_model

DATASET = "tiny-imagenet"  # the smallest images: 64x64x3, 200 classes
CLASSES = 200
BATCH = 4


# A residual CNN with batch norm.

class ConvBN(nnx.Module):
    def __init__(self, cin, cout, rngs):
        self.conv = nnx.Conv(cin, cout, (3, 3), use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(cout, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.conv(x))


class Residual(nnx.Module):
    def __init__(self, channels, rngs):
        self.conv_a = ConvBN(channels, channels, rngs)
        self.conv_b = ConvBN(channels, channels, rngs)

    def __call__(self, x):
        return nnx.relu(self.conv_b(nnx.relu(self.conv_a(x))) + x)


class ResidualCNN(nnx.Module):
    def __init__(self, rngs):
        self.conv1 = nnx.Conv(3, 8, (3, 3), strides=2, rngs=rngs)
        self.bn1 = nnx.BatchNorm(8, rngs=rngs)
        self.res_a = Residual(8, rngs)
        self.res_b = Residual(8, rngs)
        self.fc = nnx.Linear(8, CLASSES, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        x = self.res_b(self.res_a(x))
        return self.fc(x.mean(axis=(1, 2)))


# A two-branch network joined by a concat.

class Branches(nnx.Module):
    def __init__(self, rngs):
        self.left = nnx.Conv(8, 4, (1, 1), rngs=rngs)
        self.right = nnx.Sequential(nnx.Conv(8, 4, (1, 1), rngs=rngs), nnx.relu,
                                    nnx.Conv(4, 6, (3, 3), rngs=rngs))

    def __call__(self, x):
        return jnp.concatenate([nnx.relu(self.left(x)), nnx.relu(self.right(x))], axis=-1)


class TwoBranch(nnx.Module):
    def __init__(self, rngs):
        self.stem = nnx.Conv(3, 8, (4, 4), strides=4, padding="VALID", rngs=rngs)
        self.branches = Branches(rngs)
        self.head = nnx.Linear(8 * 8 * 10, CLASSES, rngs=rngs)

    def __call__(self, x):
        x = self.branches(nnx.relu(self.stem(x)))
        x = nnx.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME")
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        return self.head(x.reshape(x.shape[0], -1))


# Global mean pooling and two dense layers.

class MeanMLP(nnx.Module):
    def __init__(self, rngs):
        self.conv1 = nnx.Conv(3, 8, (3, 3), strides=2, rngs=rngs)
        self.conv2 = nnx.Conv(8, 16, (3, 3), strides=2, rngs=rngs)
        self.hidden = nnx.Linear(16, 32, rngs=rngs)
        self.out = nnx.Linear(32, CLASSES, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv2(nnx.relu(self.conv1(x))))
        return self.out(nnx.relu(self.hidden(jnp.mean(x, axis=(1, 2)))))


# Hand-written layers: raw nnx.Param arrays, lax.conv, jnp.maximum, a sum of three, a root-owned dense.

class PlainConv(nnx.Module):
    def __init__(self, cin, cout, stride, rngs):
        self.w = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (3, 3, cin, cout)))
        self.b = nnx.Param(jnp.full((cout,), 0.1))
        self.stride = stride

    def __call__(self, x):
        y = jax.lax.conv_general_dilated(x, self.w[...], (self.stride, self.stride), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.maximum(y + self.b[...], 0.0)


class PlainLayers(nnx.Module):
    def __init__(self, rngs):
        self.a = PlainConv(3, 4, 2, rngs)
        self.b = PlainConv(4, 4, 1, rngs)
        self.c = PlainConv(4, 4, 1, rngs)
        self.w = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (4, CLASSES)))
        self.bias = nnx.Param(jnp.zeros((CLASSES,)))

    def __call__(self, x):
        x = self.a(x)
        y = self.b(x)
        x = jax.nn.relu(x + y + self.c(y))
        return jnp.mean(x, axis=(1, 2)) @ self.w[...] + self.bias[...]


def _conv_flops(out_hw, cout, kernel, cin):
    return 2 * BATCH * out_hw * out_hw * cout * kernel * kernel * cin


# (model, [(op name, kind, output shape, relu)], forward FLOPs written out op by op)
CASES = {
    "residual": (ResidualCNN, [
        ("conv1", OpKind.CONV2D, (BATCH, 32, 32, 8), False),
        ("bn1", OpKind.BATCH_NORM, (BATCH, 32, 32, 8), True),
        ("pool2d", OpKind.POOL2D, (BATCH, 16, 16, 8), False),
        ("res_a.conv_a.conv", OpKind.CONV2D, (BATCH, 16, 16, 8), False),
        ("res_a.conv_a.bn", OpKind.BATCH_NORM, (BATCH, 16, 16, 8), True),
        ("res_a.conv_b.conv", OpKind.CONV2D, (BATCH, 16, 16, 8), False),
        ("res_a.conv_b.bn", OpKind.BATCH_NORM, (BATCH, 16, 16, 8), False),
        ("res_a", OpKind.ADD, (BATCH, 16, 16, 8), True),
        ("res_b.conv_a.conv", OpKind.CONV2D, (BATCH, 16, 16, 8), False),
        ("res_b.conv_a.bn", OpKind.BATCH_NORM, (BATCH, 16, 16, 8), True),
        ("res_b.conv_b.conv", OpKind.CONV2D, (BATCH, 16, 16, 8), False),
        ("res_b.conv_b.bn", OpKind.BATCH_NORM, (BATCH, 16, 16, 8), False),
        ("res_b", OpKind.ADD, (BATCH, 16, 16, 8), True),
        ("global_avg_pool", OpKind.GLOBAL_AVG_POOL, (BATCH, 8), False),
        ("fc", OpKind.DENSE, (BATCH, CLASSES), False),
        ("loss", OpKind.SOFTMAX_XENT, (BATCH,), False),
    ], (_conv_flops(32, 8, 3, 3) + 7 * BATCH * 32 * 32 * 8          # conv1, bn1
        + BATCH * 16 * 16 * 8 * 9                                     # 3x3 max pool
        + 2 * (2 * (_conv_flops(16, 8, 3, 8) + 7 * BATCH * 16 * 16 * 8) + BATCH * 16 * 16 * 8)  # two blocks
        + BATCH * 16 * 16 * 8                                         # mean
        + 2 * BATCH * 8 * CLASSES + 5 * BATCH * CLASSES)),            # fc, loss
    "two-branch": (TwoBranch, [
        ("stem", OpKind.CONV2D, (BATCH, 16, 16, 8), True),
        ("branches.left", OpKind.CONV2D, (BATCH, 16, 16, 4), True),
        ("branches.right.layers.0", OpKind.CONV2D, (BATCH, 16, 16, 4), True),
        ("branches.right.layers.2", OpKind.CONV2D, (BATCH, 16, 16, 6), True),
        ("branches", OpKind.CONCAT, (BATCH, 16, 16, 10), False),
        ("avg_pool2d", OpKind.AVG_POOL2D, (BATCH, 16, 16, 10), False),
        ("pool2d", OpKind.POOL2D, (BATCH, 8, 8, 10), False),
        ("flatten", OpKind.FLATTEN, (BATCH, 640), False),
        ("head", OpKind.DENSE, (BATCH, CLASSES), False),
        ("loss", OpKind.SOFTMAX_XENT, (BATCH,), False),
    ], (_conv_flops(16, 8, 4, 3) + _conv_flops(16, 4, 1, 8) + _conv_flops(16, 4, 1, 8) + _conv_flops(16, 6, 3, 4)
        + BATCH * 16 * 16 * 10 * 9 + BATCH * 8 * 8 * 10 * 4          # avg pool, max pool
        + 2 * BATCH * 640 * CLASSES + 5 * BATCH * CLASSES)),
    "plain-layers": (PlainLayers, [
        ("a", OpKind.CONV2D, (BATCH, 32, 32, 4), True),
        ("b", OpKind.CONV2D, (BATCH, 32, 32, 4), True),
        ("add_1", OpKind.ADD, (BATCH, 32, 32, 4), False),
        ("c", OpKind.CONV2D, (BATCH, 32, 32, 4), True),
        ("add_2", OpKind.ADD, (BATCH, 32, 32, 4), True),
        ("global_avg_pool", OpKind.GLOBAL_AVG_POOL, (BATCH, 4), False),
        ("w", OpKind.DENSE, (BATCH, CLASSES), False),
        ("loss", OpKind.SOFTMAX_XENT, (BATCH,), False),
    ], (_conv_flops(32, 4, 3, 3) + 2 * _conv_flops(32, 4, 3, 4) + 2 * BATCH * 32 * 32 * 4 + BATCH * 32 * 32 * 4
        + 2 * BATCH * 4 * CLASSES + 5 * BATCH * CLASSES)),
    "mean-mlp": (MeanMLP, [
        ("conv1", OpKind.CONV2D, (BATCH, 32, 32, 8), True),
        ("conv2", OpKind.CONV2D, (BATCH, 16, 16, 16), True),
        ("global_avg_pool", OpKind.GLOBAL_AVG_POOL, (BATCH, 16), False),
        ("hidden", OpKind.DENSE, (BATCH, 32), True),
        ("out", OpKind.DENSE, (BATCH, CLASSES), False),
        ("loss", OpKind.SOFTMAX_XENT, (BATCH,), False),
    ], (_conv_flops(32, 8, 3, 3) + _conv_flops(16, 16, 3, 8) + BATCH * 16 * 16 * 16
        + 2 * BATCH * 16 * 32 + 2 * BATCH * 32 * CLASSES + 5 * BATCH * CLASSES)),
}


def _build(model):
    """The model with its own initial parameters (the "rbg" generator: its initializers compile in a fifth
    of the time of the default threefry's on one core)."""
    return model(rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))


def _abstract(model):
    """The model's structure without its arrays (nnx.eval_shape): enough to import its graph."""
    return nnx.eval_shape(lambda: model(rngs=nnx.Rngs(0)))


def _module_params(module) -> dict:
    return {path: variable.get_value() for path, variable in nnx.to_flat_state(nnx.state(module, nnx.Param))}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_user_model_imports_to_its_ops_shapes_parameters_and_flops(case):
    model, ops, forward_flops = CASES[case]
    module = _abstract(model)
    graph = import_model(module, DATASET, BATCH).graph
    assert [(op.name, op.kind, op.output_shape, op.flat_fields.relu) for op in graph.ops] == ops
    assert graph.param_count == sum(math.prod(value.shape) for value in _module_params(module).values())
    assert graph.forward_flops == forward_flops


def test_the_graph_records_bias_producers_and_state():
    graph = import_model(_abstract(ResidualCNN), DATASET, BATCH).graph
    assert dict(graph.op("conv1").param_shapes) == {"kernel": (3, 3, 3, 8), "bias": (8,)}
    assert dict(graph.op("res_a.conv_a.conv").param_shapes) == {"kernel": (3, 3, 8, 8)}
    assert dict(graph.op("res_a.conv_a.bn").state_shapes) == {"mean": (8,), "var": (8,)}
    assert graph.producers("res_a") == ("res_a.conv_b.bn", "pool2d")
    assert graph.op("pool2d").attrs.padding.value == "SAME" and graph.op("conv1").attrs.stride_hw == (2, 2)


def _user_loss(module, images, labels):
    return optax.softmax_cross_entropy_with_integer_labels(module(images), labels).mean()


def _network_loss(network, images, labels):
    return network(images, labels).mean()


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_network_on_the_imported_parameters_gives_the_module_s_loss_and_gradients(case):
    module = _build(CASES[case][0])
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
    # Gradients that are zero in exact arithmetic (a conv's bias before a batch norm) are rounding noise:
    # compared at the scale of the largest gradient.
    scale = max(float(jnp.abs(value).max()) for value in expected.values())
    for path, value in expected.items():
        np.testing.assert_allclose(mapped[path], value, rtol=1e-5, atol=1e-6 * scale, err_msg=str(path))


def test_importing_leaves_the_module_and_the_layer_classes_as_they_were():
    calls = {cls: cls.__call__ for cls in (ResidualCNN, Residual, ConvBN, TwoBranch, Branches, nnx.Conv,
                                           nnx.BatchNorm, nnx.Linear, nnx.Sequential)}
    module = _abstract(ResidualCNN)
    module.eval()
    import_model(module, DATASET, BATCH)
    # The head's 640 inputs are 8x8x10 at 64x64: 224x224 images fail inside the forward.
    with pytest.raises(ModelImportError, match=r"^calling TwoBranch on a 4x224x224x3 float32 image batch "
                                               r"\(dogs-vs-cats\) failed: TypeError: dot_general requires"):
        import_model(_abstract(TwoBranch), "dogs-vs-cats", BATCH)
    assert {cls: cls.__call__ for cls in calls} == calls
    assert module.bn1.use_running_average


def test_the_imported_state_is_the_module_s_running_averages():
    module = _build(ResidualCNN)
    module.res_a.conv_b.bn.mean.set_value(jnp.arange(8.0))
    imported = import_model(module, DATASET, BATCH)
    np.testing.assert_array_equal(imported.state["res_a.conv_b.bn"]["mean"], np.arange(8.0))
    assert sorted(imported.state) == ["bn1", "res_a.conv_a.bn", "res_a.conv_b.bn", "res_b.conv_a.bn", "res_b.conv_b.bn"]
    assert imported.module_paths(imported.state)[("res_a", "conv_b", "bn", "var")].shape == (8,)


# The zoo's ResNet-18 (models/resnet.py at width 8) written as a plain flax module.

class BasicBlock(nnx.Module):
    def __init__(self, cin, cout, stride, rngs):
        self.conv_a = nnx.Conv(cin, cout, (3, 3), strides=stride, use_bias=False, rngs=rngs)
        self.bn_a = nnx.BatchNorm(cout, rngs=rngs)
        self.conv_b = nnx.Conv(cout, cout, (3, 3), use_bias=False, rngs=rngs)
        self.bn_b = nnx.BatchNorm(cout, rngs=rngs)
        projects = stride != 1 or cin != cout
        self.projection = nnx.Conv(cin, cout, (1, 1), strides=stride, use_bias=False, rngs=rngs) if projects else None
        self.projection_bn = nnx.BatchNorm(cout, rngs=rngs) if projects else None

    def __call__(self, x):
        y = self.bn_b(self.conv_b(nnx.relu(self.bn_a(self.conv_a(x)))))
        shortcut = x if self.projection is None else self.projection_bn(self.projection(x))
        return nnx.relu(y + shortcut)


class ResNet18(nnx.Module):
    def __init__(self, rngs, width=8, classes=CLASSES):
        self.conv1 = nnx.Conv(3, width, (7, 7), strides=2, use_bias=False, rngs=rngs)
        self.bn_conv1 = nnx.BatchNorm(width, rngs=rngs)
        blocks, cin = [], width
        for stage in range(4):
            cout = width * 2 ** stage
            for index in range(2):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and index == 0 else 1, rngs))
                cin = cout
        self.blocks = nnx.List(blocks)
        self.fc = nnx.Linear(cin, classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn_conv1(self.conv1(x)))
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for block in self.blocks:
            x = block(x)
        return self.fc(x.mean(axis=(1, 2)))


def _anonymous(graph):
    """The graph without its names: each op unnamed, with its producers by program index."""
    return [(dataclasses.replace(op, name=""), tuple(graph.index(p) for p in graph.producers(op.name)))
            for op in graph.ops]


def test_the_zoo_s_resnet18_written_as_a_flax_module_imports_to_the_zoo_s_graph():
    imported = import_model(_abstract(ResNet18), DATASET, BATCH).graph
    zoo = resnet18(dataset_shape(DATASET), BATCH, width=8)
    assert _anonymous(imported) == _anonymous(zoo)
    assert (imported.forward_flops, imported.backward_flops, imported.param_count) == (
        zoo.forward_flops, zoo.backward_flops, zoo.param_count)
    assert imported.op("blocks.2").kind is OpKind.ADD and imported.op("blocks.2.projection").attrs.stride_hw == (2, 2)


# What the importer cannot take: one line naming the primitive, the module path, the file and line.

class Sorter(nnx.Module):
    def __call__(self, x):
        return jnp.sort(x, axis=-1)  # unsupported: sort


class Looper(nnx.Module):
    def __call__(self, x):
        return jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * 2.0), (0, x))[1]  # unsupported: while


class Callback(nnx.Module):
    def __call__(self, x):
        return jax.pure_callback(np.negative, jax.ShapeDtypeStruct(x.shape, x.dtype), x)  # unsupported: callback


class EvalNorm(nnx.Module):
    def __init__(self, rngs):
        self.bn = nnx.BatchNorm(8, rngs=rngs)

    def __call__(self, x):
        return self.bn(x, use_running_average=True)


class NormThenReLU(nnx.BatchNorm):
    def __call__(self, x):
        return nnx.relu(super().__call__(x))


class OverHeight(nnx.Module):
    """A dense layer over the images' height (a dense over their channels is taken)."""

    def __init__(self, rngs):
        self.w = nnx.Param(jnp.ones((8, 8)))

    def __call__(self, x):
        return jnp.tensordot(x, self.w[...], axes=([1], [0]))


class WithUnsupported(nnx.Module):
    """A conv, then the layer under test (`inner`, built by a function of rngs), then a dense layer."""

    def __init__(self, rngs, inner):
        self.conv = nnx.Conv(3, 8, (3, 3), strides=8, rngs=rngs)
        self.inner = inner(rngs)
        self.fc = nnx.Linear(8 * 8 * 8, CLASSES, rngs=rngs)

    def __call__(self, x):
        x = self.inner(nnx.relu(self.conv(x)))
        return self.fc(x.reshape(x.shape[0], -1))


class Fn(nnx.Module):
    """A function of the activation, no parameters."""

    def __init__(self, function):
        self.function = function

    def __call__(self, x):
        return self.function(x)


def _line(marker: str) -> int:
    with open(__file__) as file:
        (line,) = (number for number, text in enumerate(file, 1) if f"# {marker}" in text)
    return line


@pytest.mark.parametrize("inner, primitive, marker", [
    pytest.param(Sorter, "sort", "unsupported: sort", id="sort"),
    pytest.param(Looper, "while", "unsupported: while", id="while"),
    pytest.param(Callback, "pure_callback", "unsupported: callback", id="callback"),
])
def test_an_unsupported_primitive_is_one_line_naming_it_its_module_and_line(inner, primitive, marker):
    module = _abstract(lambda rngs: WithUnsupported(rngs, lambda _: inner()))
    with pytest.raises(ModelImportError) as error:
        import_model(module, DATASET, BATCH)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{__file__}:{_line(marker)}: cannot import module 'inner' ({inner.__name__}): it "
                              f"computes '{primitive}'. SOAP imports nnx.Conv")


@pytest.mark.parametrize("inner, match", [
    pytest.param(EvalNorm, r"cannot import module 'inner\.bn' \(BatchNorm\): it normalizes with its running "
                 r"averages \(evaluation mode",
                 id="eval-batch-norm"),
    pytest.param(lambda rngs: nnx.BatchNorm(8, momentum=0.9, rngs=rngs),
                 r"module 'inner' \(BatchNorm\): it is a BatchNorm with momentum=0\.9, where SOAP's "
                 r"batch_norm computes momentum=0\.99",
                 id="batch-norm-momentum"),
    pytest.param(lambda rngs: NormThenReLU(8, rngs=rngs), r"module 'inner' \(NormThenReLU\): it computes 'square'",
                 id="batch-norm-subclass"),
    pytest.param(lambda rngs: OverHeight(rngs), r"module 'inner' \(OverHeight\): it computes a dot_general other "
                 r"than \(\.\.\., in\) x \(in, out\)", id="dense-over-height"),
    pytest.param(lambda rngs: Fn(lambda x: x - x.mean(axis=3, keepdims=True)),  # mean over channels
                 rf"^{__file__}:{_line('mean over channels')}: cannot import module 'inner' \(Fn\): it sums an "
                 r"activation of shape \(4, 8, 8, 8\) over axes \(3,\) \(a mean or sum over other axes than height "
                 r"and width, or a standalone jax\.nn\.softmax\), which no op of SOAP's image models computes",
                 id="mean-over-channels"),
    pytest.param(lambda rngs: Fn(lambda x: jax.nn.softmax(x)), r"module 'inner' \(Fn\): it takes the maximum of an "
                 r"activation of shape \(4, 8, 8, 8\) over axes \(3,\) \(a max over other axes", id="softmax"),
])
def test_an_unsupported_layer_is_one_line(inner, match):
    with pytest.raises(ModelImportError, match=match) as error:
        import_model(_abstract(lambda rngs: WithUnsupported(rngs, inner)), DATASET, BATCH)
    assert "\n" not in str(error.value)


def test_logits_of_the_wrong_shape_and_unread_parameters_are_one_line():
    with pytest.raises(ModelImportError, match=r"^MeanMLP returns logits of shape \(4, 200\) on dogs-vs-cats, but "
                                               r"the loss needs \(batch, classes\) = \(4, 2\)"):
        import_model(_abstract(MeanMLP), "dogs-vs-cats", BATCH)
    module = _abstract(MeanMLP)
    module.spare = nnx.eval_shape(lambda: nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    with pytest.raises(ModelImportError,
                       match=r"holds parameters its forward never reads \(spare\.bias, spare\.kernel\)"):
        import_model(module, DATASET, BATCH)


# load_user_model: a model named as path/to/file.py:NAME.

GOOD_FILE = """
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.fc = nnx.Linear(64 * 64 * 3, 200, rngs=rngs)

        def __call__(self, x):
            return self.fc(x.reshape(x.shape[0], -1))

    def make(rngs):
        return Model(rngs=rngs)

    def not_a_model(rngs):
        return 3

    NUMBER = 3
    """


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "user_model.py"
    path.write_text(textwrap.dedent(GOOD_FILE))
    return str(path)


@pytest.mark.parametrize("name", ["Model", "make"])
def test_a_model_file_loads_and_imports(model_file, name):
    graph = import_model(load_user_model(f"{model_file}:{name}"), DATASET, BATCH).graph
    assert [op.name for op in graph.ops] == ["flatten", "fc", "loss"]


def test_every_bad_model_spec_is_one_line(model_file, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import math\n\nraise RuntimeError('no GPU here\\nsecond line')\n")
    cases = {
        "no-colon.py": r"^model 'no-colon\.py' is not of the form path/to/file\.py:NAME$",
        f"{tmp_path}/missing.py:Model": r"^model file '.*missing\.py' does not exist; pass path/to/file\.py:NAME$",
        f"{broken}:Model": r"^model file '.*broken\.py' does not import \(line 3: RuntimeError: no GPU here\); fix the "
                           r"file$",
        f"{model_file}:Missing": r"^.*user_model\.py has no 'Missing'; the nnx\.Module classes it defines: Model$",
        f"{model_file}:NUMBER": r"^'NUMBER' in .*user_model\.py is not an nnx\.Module subclass or a function "
                                r"returning one \(its type: int\)$",
        f"{model_file}:not_a_model": r"^not_a_model\(rngs=nnx\.Rngs\(0\)\) in .*user_model\.py returned an object "
                                     r"of type int, not an nnx\.Module$",
    }
    for spec, match in cases.items():
        with pytest.raises(ModelImportError, match=match):
            load_user_model(spec)


def test_a_constructor_that_fails_is_one_line(tmp_path):
    path = tmp_path / "needs_width.py"
    path.write_text("from flax import nnx\n\nclass Wide(nnx.Module):\n    def __init__(self, width, rngs):\n"
                    "        pass\n")
    with pytest.raises(ModelImportError, match=r"^Wide\(rngs=nnx\.Rngs\(0\)\) from .*needs_width\.py failed "
                                               r"\(TypeError: .*width.*\); NAME must take rngs as a keyword"):
        load_user_model(f"{path}:Wide")


def test_python_m_models_prints_and_writes_a_user_model_s_graph(model_file, tmp_path, capsys):
    from models.__main__ import main

    assert main([f"{model_file}:Model", "--batch-size", "4", "--json", str(tmp_path / "graph.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Model / tiny-imagenet, batch 4, 3 ops") and "\nfc " in out
    assert [op["name"] for op in json.loads((tmp_path / "graph.json").read_text())["ops"]] == ["flatten", "fc", "loss"]
