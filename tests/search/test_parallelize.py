"""soap.parallelize (search.parallelize): the example of docs/library.md runs as written and trains two AdamW
steps with one device's numerics, as a hand-written GPT does; the plan is of the SPMD space, annotates the model as flax reads it,
saves and loads back equal; it needs devices only for its shardings; bad inputs are one line each."""

import json
import math
import re
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import nnx

import soap
from models.errors import ModelImportError, SoapError
from search.parallelize import Batch, example_batch
from simulator.cost import RooflineCostModel
from simulator.machine import MachineError, load_machine
from soap.errors import StrategyFileError
from soap.baselines import megatron
from soap.lowering import LoweringError
from soap.plan import lower_plan
from soap.space import enumerate_configs, on_all_devices
from tests.models.user_gpt import GPT

LIBRARY_MD = Path(__file__).resolve().parents[2] / "docs" / "library.md"


def _docs_example() -> str:
    section = LIBRARY_MD.read_text().split("## Train it in your own loop", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return code


def _one_device_losses(model, images, labels) -> list[float]:
    """Two AdamW steps of `model` itself (model(images)) on one device."""
    optimizer = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, images, labels):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(images), labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    model.train()
    return [float(train_step(model, optimizer, images, labels)) for _ in range(2)]


def _arrays(model) -> dict:
    """Every array of the model's state, random keys as their data."""
    def numpy(value):
        return np.asarray(jax.random.key_data(value) if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key)
                          else value)

    return {path: numpy(variable.get_value()) for path, variable in nnx.to_flat_state(nnx.state(model))}


def _specs(state) -> dict:
    return {path: variable.get_value() for path, variable in nnx.to_flat_state(state)}


def test_the_docs_example_trains_two_adamw_steps_with_one_device_s_numerics(tmp_path, monkeypatch, capsys):
    """docs/library.md's GPT (nnx.MultiHeadAttention, a tied head) on [8 16] token ids: the plan's two steps
    equal the module's own on one device."""
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "docs_example"}
    exec(compile(_docs_example(), str(LIBRARY_MD), "exec"), namespace)
    out = capsys.readouterr().out
    assert re.search(r"^searched +\d+\.\d{3} ", out, re.M) and re.search(r"^data_parallel ", out, re.M)
    assert re.search(r"^losses \d+\.\d{4} \d+\.\d{4}$", out, re.M)
    plan, model = namespace["plan"], namespace["model"]
    assert on_all_devices(plan.strategy.values(), 4)
    assert plan.mesh.devices.size == 4 and set(plan.mesh.devices.flat) == set(jax.devices()[:4])

    rng = np.random.default_rng(0)
    ids, labels = (rng.integers(0, 64, (8, 16), dtype=np.int32) for _ in range(2))
    one_device = namespace["GPT"](vocab=64, context=16, width=32, heads=4, depth=2, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(namespace["losses"], _one_device_losses(one_device, ids, labels), rtol=1e-5)
    got, expected = _arrays(model), _arrays(one_device)
    assert set(got) == set(expected)
    for path, value in expected.items():
        # atol: AdamW divides by the gradient's size, so an entry whose gradient is near 0 (summed in another
        # order here) moves by a share of lr (1e-3) that rounding changes; 1% of a step.
        np.testing.assert_allclose(got[path], value, rtol=1e-5, atol=1e-5, err_msg=str(path))

    # flax reads the plan back from the model, on the plan's mesh, and the arrays live there
    assert _specs(nnx.get_partition_spec(nnx.state(model))) == _specs(plan.partition_specs)
    assert set(plan.mesh.axis_names) >= {name for spec in _specs(plan.partition_specs).values() for entry in spec
                                         if entry for name in ((entry,) if isinstance(entry, str) else entry)}
    for path, variable in nnx.to_flat_state(nnx.state(model)):
        expected_sharding = jax.sharding.NamedSharding(plan.mesh, _specs(plan.partition_specs)[path])
        assert variable.get_value().sharding.is_equivalent_to(expected_sharding, variable.get_value().ndim), path

    loaded = soap.load_plan(one_device, "strategy.json", ids)
    assert loaded == plan and loaded.strategy == plan.strategy
    assert _specs(loaded.state_shardings) == _specs(plan.state_shardings)


class Tiny(nnx.Module):
    """A dense model on tiny-imagenet's images: the fastest graph to import and search."""

    def __init__(self, rngs, classes: int = 200, channels: int = 8):
        self.conv = nnx.Conv(3, channels, (3, 3), strides=4, rngs=rngs)
        self.fc = nnx.Linear(channels, classes, rngs=rngs)

    def __call__(self, x):
        return self.fc(nnx.relu(self.conv(x)).mean(axis=(1, 2)))


def _tiny(**kwargs) -> Tiny:
    return nnx.eval_shape(lambda: Tiny(rngs=nnx.Rngs(0), **kwargs))


IMAGES = jax.ShapeDtypeStruct((8, 64, 64, 3), np.float32)


def test_a_plan_for_more_devices_than_present_needs_them_only_for_its_shardings(tmp_path):
    model, images = _tiny(), jax.ShapeDtypeStruct((16, 64, 64, 3), np.float32)
    plan = soap.parallelize(model, images, num_devices=16, machine="p100-4x4", budget_s=1, seed=1)
    assert on_all_devices(plan.strategy.values(), 16) and plan.strategy.num_devices == 16
    assert re.search(r"^searched ", plan.table, re.M)
    plan.save(tmp_path / "strategy.json")
    assert soap.load_plan(model, tmp_path / "strategy.json", images) == plan
    with pytest.raises(LoweringError, match=r"^the strategy is for 16 devices but JAX has 8; run it on 16 devices"):
        plan.mesh


def test_a_machine_value_and_the_local_machine(monkeypatch):
    model = _tiny()
    plan = soap.parallelize(model, IMAGES, num_devices=2, machine=load_machine("h100x8"), budget_s=1)
    assert on_all_devices(plan.strategy.values(), 2)
    assert soap.parallelize(model, IMAGES, machine="h100x8", budget_s=1).strategy.num_devices == 8  # all of it
    calls = []

    def calibrate(graph, num_devices, optimizer):  # the local profile, as search.optimize --no-run gets it
        calls.append((graph.model, num_devices, optimizer))
        machine = load_machine("h100x8", num_devices)
        return machine, RooflineCostModel(machine.device)

    monkeypatch.setattr("search.parallelize.calibrate", calibrate)
    soap.parallelize(model, IMAGES, num_devices=2, budget_s=1, optimizer="adamw")
    assert calls == [("Tiny", 2, "adamw")]


def test_images_name_the_dataset_of_their_size_and_the_model_s_classes():
    images = jax.ShapeDtypeStruct((4, 224, 224, 3), np.float32)
    assert example_batch(_tiny(classes=2), images) == Batch("dogs-vs-cats", 4)
    assert example_batch(_tiny(classes=1000), images) == Batch("imagenet", 4)
    assert example_batch(_tiny(), jax.ShapeDtypeStruct((4, 128), np.int32)) == Batch("tokens", 4, 128)


@pytest.mark.parametrize("inputs, classes, message", [
    pytest.param(jax.ShapeDtypeStruct((8, 32, 32, 3), np.float32), 200,
                 r"example_inputs of shape \(8, 32, 32, 3\) and dtype float32 \(no dataset of that image size\) match "
                 r"no dataset; pass one global batch of float32 NHWC images \(tiny-imagenet 64x64x3 with 200 classes, "
                 r".*\) or of \[batch, seq\] int32 token ids", id="image-size"),
    pytest.param(jax.ShapeDtypeStruct((8, 64, 64, 3), np.float32), 10,
                 r"example_inputs of shape \(8, 64, 64, 3\) and dtype float32 \(logits of 10 classes\) match no "
                 r"dataset", id="classes"),
    pytest.param(jax.ShapeDtypeStruct((8, 64, 64, 3), np.float64), 200, r"example_inputs of shape \(8, 64, 64, 3\) "
                 r"and dtype float64 \(neither images nor token ids\) match no dataset", id="dtype"),
    pytest.param(np.zeros((8, 16), np.int64), 200, r"example_inputs of shape \(8, 16\) and dtype int64 \(neither",
                 id="token-dtype"),
    pytest.param([1, 2, 3], 200, r"example_inputs of shape \(\) and dtype object", id="a-list"),
])
def test_inputs_no_dataset_matches_are_one_line(inputs, classes, message):
    with pytest.raises(SoapError, match="^" + message) as error:
        soap.parallelize(_tiny(classes=classes), inputs, num_devices=2, machine="h100x8", budget_s=1)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("kwargs, error, message", [
    pytest.param({"num_devices": 0}, SoapError, r"num_devices must be an integer >= 1, got 0$", id="no-devices"),
    pytest.param({"machine": "h200x9"}, MachineError, r"unknown machine 'h200x9'; presets: .*h100x8", id="machine"),
    pytest.param({"optimizer": "lion"}, SoapError, r"unknown optimizer 'lion'; one of sgd, adamw$", id="optimizer"),
    pytest.param({"num_devices": 3}, SoapError,
                 r"conv2d 'conv' \(sample=8, height=16, width=16, channel=8\) splits into no 3 equal tasks, so one "
                 r"jitted step cannot run it on all 3 devices; pass a batch size that 3 divides \(got 8\) or fewer "
                 r"devices$", id="batch"),
])
def test_bad_arguments_are_one_line(kwargs, error, message):
    with pytest.raises(error, match="^" + message):
        soap.parallelize(_tiny(), IMAGES, **{"num_devices": 2, "machine": "h100x8", "budget_s": 1, **kwargs})


def test_a_plan_file_for_another_model_or_device_count_is_one_line(tmp_path):
    path = tmp_path / "strategy.json"
    soap.parallelize(_tiny(), IMAGES, num_devices=2, machine="h100x8", budget_s=1).save(path)
    with pytest.raises(StrategyFileError, match=r"^plan '.*strategy\.json' is for num_devices 2 but this run has "
                                                r"num_devices 4; pass a strategy made for the same num_devices"):
        soap.load_plan(_tiny(), path, IMAGES, num_devices=4)
    with pytest.raises(StrategyFileError, match=r"^plan '.*strategy\.json' is for graph '\w+' but Tiny here is graph"):
        soap.load_plan(_tiny(channels=16), path, IMAGES)
    with pytest.raises(StrategyFileError, match=r"^plan '.*strategy\.json' is for batch_size 8 but this run has "
                                                r"batch_size 4"):
        soap.load_plan(_tiny(), path, jax.ShapeDtypeStruct((4, 64, 64, 3), np.float32))


def test_a_model_whose_forward_fails_is_one_line():
    class Broken(Tiny):
        def __call__(self, x):
            return self.fc(x)

    model = nnx.eval_shape(lambda: Broken(rngs=nnx.Rngs(0)))
    with pytest.raises(ModelImportError, match=r"^calling Broken on example_inputs \(8, 64, 64, 3\) float32 failed: "):
        soap.parallelize(model, IMAGES, num_devices=2, machine="h100x8", budget_s=1)


def test_a_hand_written_gpt_trains_two_adamw_steps_with_one_device_s_numerics():
    """tests/models/user_gpt.py's GPT (a tied head, hand-written causal attention; one layer, no dropout)
    on [8 16] token ids: the plan's step equals the module's own on one device."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 64, (8, 16), dtype=np.int32)
    labels = rng.integers(0, 64, (8, 16), dtype=np.int32)
    model = _one_layer_gpt()
    plan = soap.parallelize(model, ids, num_devices=4, machine="h100x8", budget_s=1, optimizer="adamw")
    assert plan.graph.dataset == "tokens" and plan.graph.batch_size == 8
    assert on_all_devices(plan.strategy.values(), 4)
    assert re.search(r"^megatron ", plan.table, re.M) and re.search(r"^searched ", plan.table, re.M)
    plan.annotate(model)
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, nnx.get_named_sharding(state, plan.mesh)))
    optimizer = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)
    state = nnx.state(optimizer)
    nnx.update(optimizer, jax.device_put(state, nnx.get_named_sharding(state, plan.mesh)))

    @nnx.jit
    def train_step(model, optimizer, ids, labels):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(plan.forward(model, ids), labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    model.train()
    placed = jax.device_put(ids, plan.inputs_sharding), jax.device_put(labels, plan.labels_sharding)
    losses = [float(train_step(model, optimizer, *placed)) for _ in range(2)]
    one_device = _one_layer_gpt()
    np.testing.assert_allclose(losses, _one_device_losses(one_device, ids, labels), rtol=1e-5)
    got, expected = _arrays(model), _arrays(one_device)
    assert set(got) == set(expected)
    for path, value in expected.items():
        if path[-2:] == ("k", "bias"):
            # A key bias adds one constant to each query's scores, which softmax removes: its gradient is 0
            # in exact arithmetic, and AdamW scales either side's rounding noise up to steps of up to lr.
            assert np.abs(got[path]).max() <= 2e-3 and np.abs(value).max() <= 2e-3, path
            continue
        # atol: AdamW divides by the gradient's size, so an entry whose gradient is near 0 (summed in
        # another order here) moves by a share of lr (1e-3) that rounding changes; 1% of a step.
        np.testing.assert_allclose(got[path], value, rtol=1e-5, atol=1e-5, err_msg=str(path))


def _one_layer_gpt() -> GPT:
    return GPT(vocab=64, context=16, width=32, heads=4, depth=1, rate=0.0, rngs=nnx.Rngs(0))


def test_dropout_draws_from_the_step_s_key():
    model = GPT(vocab=64, context=16, width=32, heads=4, depth=1, rate=0.5, rngs=nnx.Rngs(0))
    ids = np.random.default_rng(0).integers(0, 64, (4, 16), dtype=np.int32)
    plan = soap.parallelize(model, ids, num_devices=2, machine="h100x8", budget_s=1)
    model.train()
    forward = nnx.jit(plan.forward)
    first, again, other = (np.asarray(forward(model, ids, jax.random.key(step))) for step in (1, 1, 2))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


class HeadsLM(nnx.Module):
    """Token ids -> an nnx.MultiHeadAttention of `heads` heads of 8 (its q, k, v and out kernels [d h k] and
    [h k d], the graph's denses to and from h*k) -> the tied head."""

    def __init__(self, rngs, heads: int = 12):
        self.wte = nnx.Embed(64, 8 * heads, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, 8 * heads, decode=False, rngs=rngs)

    def __call__(self, ids):
        x = self.wte(ids)
        return self.wte.attend(x + self.attn(x, mask=nnx.make_causal_mask(ids)))


@pytest.mark.parametrize("heads, num_devices, degrees", [pytest.param(12, 8, {1, 2, 4}, id="12-heads-8-devices"),
                                                         pytest.param(6, 4, {1, 2}, id="6-heads-4-devices")])
def test_heads_that_the_devices_do_not_divide_split_whole_or_not_at_all(heads, num_devices, degrees):
    """The space offers a dense to or from heads only degrees of h*k that its heads divide (a split the plan
    places on the module's [d h k] kernel); the searched plan and Megatron's (its heads split 4 or 2 ways)
    build their shardings, each kernel's heads dim split by a divisor of the heads."""
    model = nnx.eval_shape(lambda: HeadsLM(rngs=nnx.Rngs(0), heads=heads))
    ids = jax.ShapeDtypeStruct((num_devices, 8), np.int32)
    plan = soap.parallelize(model, ids, num_devices=num_devices, machine="h100x8", budget_s=1)
    merged = {"attn.query": "hidden", "attn.key": "hidden", "attn.value": "hidden", "attn.out": "in_hidden"}
    assert {op.name: op.attrs.label for op in plan.graph.ops
            if op.kind.value == "dense" and op.attrs.label is not None} == merged
    for name, label in merged.items():
        op = plan.graph.op(name)
        index = [dim.name for dim in op.config_labels].index(label)
        assert {config.degrees[index] for config in enumerate_configs(op, num_devices, spmd=True)} == degrees, name
    tensor_parallel = megatron(plan.graph, num_devices)
    assert tensor_parallel["attn.query"].degrees[2] == max(degrees)
    for strategy in (plan.strategy, tensor_parallel):
        shardings = dict(nnx.to_flat_state(lower_plan(plan.graph, plan.sources, plan.state, strategy,
                                                      jax.devices()[:num_devices]).state_shardings))
        for part, heads_dim in (("query", 1), ("key", 1), ("value", 1), ("out", 0)):
            kernel = shardings[("attn", part, "kernel")].get_value()
            entry = (tuple(kernel.spec) + (None,) * 3)[heads_dim]
            names = () if entry is None else (entry,) if isinstance(entry, str) else entry
            assert heads % math.prod(kernel.mesh.shape[name] for name in names) == 0, part
    assert shardings[("attn", "query", "kernel")].get_value().spec == jax.P(None, "hidden", None)  # Megatron's


def test_a_plan_file_splitting_heads_apart_is_one_line(tmp_path):
    """A strategy file (edited by hand) splitting 6 heads' q projection 4 ways: the divisibility line."""
    model = nnx.eval_shape(lambda: HeadsLM(rngs=nnx.Rngs(0), heads=6))
    ids = jax.ShapeDtypeStruct((4, 8), np.int32)
    path = tmp_path / "strategy.json"
    soap.parallelize(model, ids, num_devices=4, machine="h100x8", budget_s=1).save(path)
    document = json.loads(path.read_text())
    document["ops"]["attn.query"] = {"degrees": {"hidden": 4}, "devices": [0, 1, 2, 3]}
    path.write_text(json.dumps(document))
    with pytest.raises(StrategyFileError, match=r"^plan '.*strategy\.json': dense 'attn\.query': dim "
                                                r"hidden=48 holds 6 heads of the module's kernel, which are not "
                                                r"divisible by degree 4 \(a split of it must be whole heads\); valid "
                                                r"degrees on 4 devices: 1, 2, 3$"):
        soap.load_plan(model, path, ids)
