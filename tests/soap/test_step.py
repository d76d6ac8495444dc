"""The training step on hand-made JAX shardings (no soap): SGD by hand, stages, input placement, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from models.batch import synthetic_batch
from models.errors import PlacementError
from models.graph import GraphBuilder
from models.labels import output_axes
from models.network import apply_op, init_params
from models.op import Padding
from models.zoo import build_graph
from soap.step import Shardings, TrainStep, input_sharding, sgd_momentum, step_stages

LEARNING_RATE, MOMENTUM = 0.05, 0.9


def _toy_graph(batch=8):
    """Small but with every op kind; spatial sizes 18 -> 9 -> 4 -> 2 so that height and width split in 2."""
    b = GraphBuilder("toy", "toy", (batch, 18, 18, 3))
    b.conv2d("conv_same", 8, kernel=3, stride=2)
    b.pool2d("pool")
    b.conv2d("conv_valid", 4, kernel=3, padding=Padding.VALID)
    b.flatten("flatten")
    b.dense("fc", 6)
    b.dense("logits", 5, relu=False)
    b.softmax_xent("loss")
    return b.build(batch)


GRAPH = _toy_graph()


def _placement(op, devices, **degrees):
    """The mesh of an op over `devices` shaped by its degrees, its output and parameter shardings."""
    shape = tuple(degrees.get(dim.name, 1) for dim in op.config_labels)
    mesh = Mesh(np.array([jax.devices()[i] for i in devices]).reshape(shape),
                tuple(dim.name for dim in op.config_labels), axis_types=(AxisType.Auto,) * len(shape))
    output = NamedSharding(mesh, P(*output_axes(op.space, shape)))
    channel = "channel" if degrees.get("channel", 1) > 1 else None
    params = {name: NamedSharding(mesh, P(*(None,) * (len(s) - 1), channel)) for name, s in op.param_shapes}
    return output, params


def _shardings(plan, graph=GRAPH):
    """plan: op name -> (devices, {dim: degree}), for every op of the graph."""
    activations, params = {}, {}
    for op in graph.ops:
        devices, degrees = plan[op.name]
        activations[op.name], op_params = _placement(op, devices, **degrees)
        if op_params:
            params[op.name] = op_params
    return Shardings(activations, params)


ONE_DEVICE = {op.name: ((0,), {}) for op in GRAPH.ops}
# One SPMD program on 4 devices mixing every kind of split; conv_valid is split on width and channels
# while its input (pool's output) is split on height and width: the case XLA's partitioner gets wrong.
MIXED_4 = {
    "conv_same": ((0, 1, 2, 3), {"height": 2, "channel": 2}),
    "pool": ((0, 1, 2, 3), {"height": 2, "width": 2}),
    "conv_valid": ((0, 1, 2, 3), {"width": 2, "channel": 2}),
    "flatten": ((0, 1, 2, 3), {"sample": 4}),
    "fc": ((0, 1, 2, 3), {"sample": 2, "channel": 2}),
    "logits": ((0, 1, 2, 3), {"sample": 4}),
    "loss": ((0, 1, 2, 3), {"sample": 4}),
}
# Five stages on device subsets: {0,1}, {2}, {0,1,2,3}, {3}, {0,1}.
STAGED = {
    "conv_same": ((0, 1), {"width": 2}),
    "pool": ((0, 1), {"channel": 2}),
    "conv_valid": ((2,), {}),
    "flatten": ((0, 1, 2, 3), {"sample": 4}),
    "fc": ((0, 1, 2, 3), {"sample": 2, "channel": 2}),
    "logits": ((3,), {}),
    "loss": ((0, 1), {"sample": 2}),
}


def _steps(plan, count):
    """The step, its losses and the state after `count` steps from seed-0 parameters and batch."""
    step = TrainStep(GRAPH, _shardings(plan), sgd_momentum(LEARNING_RATE, MOMENTUM))
    state = step.init(jax.tree.map(np.asarray, init_params(GRAPH, seed=0)))
    batch = step.place_batch(*synthetic_batch(GRAPH, seed=0))
    losses = []
    for _ in range(count):
        loss, state = step(state, *batch)
        losses.append(float(loss))
    return step, losses, state


@pytest.fixture(scope="module")
def one_device():
    _, losses, state = _steps(ONE_DEVICE, 2)
    return losses, jax.tree.map(np.asarray, state.params)


def test_two_steps_on_one_device_are_sgd_with_momentum_by_hand():
    params = init_params(GRAPH, seed=0)
    images, labels = synthetic_batch(GRAPH, seed=0)

    def loss_fn(p):
        x = images
        for op in GRAPH.ops:
            x = apply_op(op, p.get(op.name), (x,), labels)
        return jnp.mean(x)

    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
    loss1, g1 = value_and_grad(params)
    params1 = jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, g1)
    loss2, g2 = value_and_grad(params1)
    # Momentum: the trace is g1, then 0.9 * g1 + g2.
    params2 = jax.tree.map(lambda p, a, b: p - LEARNING_RATE * (MOMENTUM * a + b), params1, g1, g2)
    step, losses, state = _steps(ONE_DEVICE, 2)
    assert len(step.stages) == 1
    np.testing.assert_allclose(losses, [loss1, loss2], rtol=1e-6)
    got = jax.tree.map(np.asarray, state.params)
    for name in params2:
        for key in params2[name]:
            np.testing.assert_allclose(got[name][key], params2[name][key], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("plan, num_stages", [pytest.param(MIXED_4, 1, id="4dev-one-program-mixed-splits"),
                                              pytest.param(STAGED, 5, id="4dev-five-stages")])
def test_sharded_steps_equal_one_device(plan, num_stages, one_device):
    want_losses, want = one_device
    step, losses, state = _steps(plan, 2)
    got = jax.tree.map(np.asarray, state.params)
    assert len(step.stages) == num_stages
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    for name in want:
        for key in want[name]:
            # atol: entries near zero, where a sum split over devices adds in another order (~1e-9).
            np.testing.assert_allclose(got[name][key], want[name][key], rtol=1e-5, atol=1e-8, err_msg=name)


def test_parameters_keep_their_shardings_after_a_step():
    step, _, state = _steps(STAGED, 1)
    for name, entry in step.shardings.params.items():
        for key, sharding in entry.items():
            assert state.params[name][key].sharding == sharding, (name, key)
            assert state.opt_state[name][0].trace[key].sharding == sharding, (name, key)


def test_stages_are_runs_of_ops_on_one_device_set():
    stages = step_stages(GRAPH, _shardings(STAGED))
    assert [stage.names for stage in stages] == \
        [("conv_same", "pool"), ("conv_valid",), ("flatten", "fc"), ("logits",), ("loss",)]


def test_a_stage_lists_its_devices_in_one_order():
    plan = dict(ONE_DEVICE, conv_same=((0, 1), {"sample": 2}), pool=((1, 0), {"sample": 2}))
    with pytest.raises(PlacementError, match=r"op 'pool' \(output\) orders its devices \(1, 0\) but op 'conv_same' "
                                             r"of the same stage orders them \(0, 1\)"):
        step_stages(GRAPH, _shardings(plan))


def test_stage_grids_must_nest():
    # On 6 devices, conv_valid as 3x2 (sample x channel) and fc as 2x3 in one stage: no mesh refines both
    # (strides 2 and 3), and a staged forward needs one to name its residuals.
    graph, six = _toy_graph(batch=12), (0, 1, 2, 3, 4, 5)
    plan = {op.name: ((0,), {}) for op in graph.ops}
    plan.update(conv_valid=(six, {"sample": 3, "channel": 2}), flatten=(six, {"sample": 6}),
                fc=(six, {"sample": 2, "channel": 3}))
    with pytest.raises(PlacementError, match=r"a stage mixes the device grids \[\(2, 3, 1\), \(3, 1, 1, 2, 1\), \(6, 1\)\], "
                                             r"which share no common refinement \(strides 2 and 3\)"):
        TrainStep(graph, _shardings(plan, graph), sgd_momentum())


@pytest.mark.parametrize(
    "op, degrees, spec",
    [
        pytest.param("conv_same", {"height": 2}, P(None, "height", None, None), id="conv-height-splits-input"),
        pytest.param("conv_same", {"height": 2, "channel": 2}, P(None, None, None, None),
                     id="conv-channel-split-reads-whole-image"),
        pytest.param("pool", {"sample": 2, "channel": 2}, P("sample", None, None, "channel"), id="pool-channels"),
        pytest.param("pool", {"height": 2}, P(None, None, None, None), id="indivisible-input-whole"),
        pytest.param("fc", {"sample": 2, "channel": 2}, P("sample", None), id="dense-reads-all-features"),
        pytest.param("flatten", {"sample": 4}, P("sample", None, None, None), id="flatten-batch-only"),
    ],
)
def test_where_an_op_reads_its_input(op, degrees, spec):
    devices = tuple(range(math.prod(degrees.values())))
    output, _ = _placement(GRAPH.op(op), devices, **degrees)
    assert input_sharding(GRAPH.op(op), output).spec == spec


@pytest.mark.parametrize("model, dataset, has_uneven", [("alexnet", "tiny-imagenet", True),
                                                        ("resnet18", "tiny-imagenet", False),  # powers of 2
                                                        ("inception_v3", "imagenet-299", True)])
def test_the_runtime_reads_what_the_simulator_charges_for_every_split(model, dataset, has_uneven):
    # Where a split does not divide an input dim (height 55 read by a pool with output height 27, split 3),
    # the runtime places that dim whole (input_sharding) and the simulator charges the whole dim
    # (task_input_boxes): for every op and every split on up to 4 devices, the two agree dim by dim.
    from models.op import input_degrees, shard_box, task_input_boxes
    from soap.config import ParallelConfig
    from soap.lowering import op_mesh, output_sharding
    from soap.space import valid_degrees

    graph = build_graph(model, dataset, 4)
    uneven = 0
    for op in graph.ops:
        for degrees in valid_degrees(op, 4):
            config = ParallelConfig(degrees, tuple(range(math.prod(degrees))))
            output = output_sharding(op, config, op_mesh(op, config, jax.devices()[:len(config.devices)]))
            boxes = task_input_boxes(op, degrees, shard_box(op.output_shape, degrees, (0,) * len(degrees)))
            for k, (shape, split) in enumerate(zip(op.input_shapes, input_degrees(op, degrees))):
                placed_whole = [entry is None for entry in input_sharding(op, output, k).spec] + [True] * len(shape)
                for dim, (size, degree) in enumerate(zip(shape, split)):
                    if degree > 1 and size % degree:
                        uneven += 1
                        assert placed_whole[dim] and boxes[k][dim] == (0, size), (op.name, degrees, k, dim)
                    elif degree > 1:
                        assert not placed_whole[dim], (op.name, degrees, k, dim)
    assert (uneven > 0) == has_uneven


def test_init_names_the_first_op_whose_parameters_or_state_do_not_match():
    from models.network import init_state
    from soap.baselines import single
    from soap.lowering import strategy_shardings

    graph = build_graph("resnet18", "tiny-imagenet", 2)
    step = TrainStep(graph, strategy_shardings(graph, single(graph, 1)), sgd_momentum())
    params = init_params(graph, 0)
    with pytest.raises(PlacementError, match=r"init: parameters that do not fit resnet18's ops \(first difference: "
                                             r"op 'fc'\); pass the parameters that init_params builds"):
        step.init({name: entry for name, entry in params.items() if name != "fc"})
    state = init_state(graph)
    state["bn_conv1"] = {"mean": state["bn_conv1"]["mean"][:3], "var": state["bn_conv1"]["var"]}
    with pytest.raises(PlacementError, match=r"init: model state that do not fit resnet18's ops \(first difference: "
                                             r"op 'bn_conv1'\); pass the model state that init_state builds"):
        step.init(params, state)
