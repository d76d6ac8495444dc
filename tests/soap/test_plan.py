"""The plan for a user's own training step (soap.plan): the example of docs/your-model.md runs as written;
the user's own jitted nnx step with the plan gives one device's loss, parameters and batch-norm averages
for data parallel, OWT, channel and spatial splits on 2 and 4 CPU devices; the state shardings match
nnx.state(model); a strategy of several stages, or a strategy file that cannot be read, is one line."""

import re
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from models.batch import synthetic_batch
from models.cli import UsageError
from models.importer import import_model
from soap.baselines import data_parallel, megatron, model_parallel, owt
from soap.config import ParallelConfig
from soap.errors import InvalidConfigError
from soap.plan import PlanError, shard_plan
from soap.space import validate_config
from soap.strategy import Strategy, strategy_to_json
from tests.models.test_importer import BATCH, DATASET, ResidualCNN, _build

YOUR_MODEL_MD = Path(__file__).resolve().parents[2] / "docs" / "your-model.md"
LEARNING_RATE, MOMENTUM = 0.01, 0.9


def _train_step(forward):
    """The user's own step: nnx.value_and_grad of the mean cross-entropy, then an optax SGD update."""
    @nnx.jit
    def train_step(model, optimizer, images, labels):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(forward(model, images), labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    return train_step


def _step(model, images, labels, forward=lambda model, images: model(images)):
    """One step of `model` in training mode; its loss (the model is updated in place)."""
    model.train()
    optimizer = nnx.Optimizer(model, optax.sgd(LEARNING_RATE, momentum=MOMENTUM), wrt=nnx.Param)
    return float(_train_step(forward)(model, optimizer, images, labels))


def _arrays(model) -> dict:
    return {path: np.asarray(variable.get_value()) for path, variable in nnx.to_flat_state(nnx.state(model))}


def _assert_same_step(loss, model, expected_loss, expected_model):
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    got, expected = _arrays(model), _arrays(expected_model)
    assert set(got) == set(expected)
    for path, value in expected.items():
        # atol: a conv's bias before a batch norm has a zero gradient in exact arithmetic (rounding noise).
        np.testing.assert_allclose(got[path], value, rtol=1e-5, atol=1e-7, err_msg=str(path))


def _docs_example() -> str:
    section = YOUR_MODEL_MD.read_text().split("## Train it in your own loop", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return code


def test_the_docs_example_runs_as_written_with_one_device_s_numerics(capsys):
    namespace = {"__name__": "docs_example"}
    exec(compile(_docs_example(), str(YOUR_MODEL_MD), "exec"), namespace)
    assert re.fullmatch(r"loss \d+\.\d{4}; fc kernel split P\(None, 'channel'\)\n", capsys.readouterr().out)
    one_device = namespace["Net"](rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    images, labels = rng.standard_normal((16, 64, 64, 3), np.float32), rng.integers(0, 200, 16, dtype=np.int32)
    _assert_same_step(float(namespace["loss"]), namespace["model"], _step(one_device, images, labels), one_device)


def _split(graph, num_devices: int, **wanted: int) -> Strategy:
    """Each op split as `wanted` (dim name -> degree) on the dims it has, where its shapes allow; else
    split on the batch over all devices."""
    configs = {}
    for op in graph.ops:
        degrees = tuple(wanted.get(dim.name, 1) for dim in op.config_labels)
        config = ParallelConfig(degrees, tuple(range(int(np.prod(degrees)))))
        try:
            assert config.num_tasks == num_devices
            validate_config(op, config, num_devices)
        except (AssertionError, InvalidConfigError):
            config = ParallelConfig(tuple(num_devices if dim.name == "sample" else 1 for dim in op.config_labels),
                                    tuple(range(num_devices)))
        configs[op.name] = config
    return Strategy.for_graph(graph, num_devices, configs)


STRATEGIES = {
    "2-data-parallel": lambda graph: data_parallel(graph, 2),
    "4-owt": lambda graph: owt(graph, 4),
    "2-channel": lambda graph: _split(graph, 2, channel=2),
    "4-spatial": lambda graph: _split(graph, 4, height=2, width=2),
}


@pytest.fixture(scope="module")
def one_device_step():
    """The residual CNN (batch norm, a residual add, pooling, a dense head) after one step on one device."""
    model = _build(ResidualCNN)
    images, labels = synthetic_batch(import_model(model, DATASET, BATCH).graph, seed=1)
    return model, images, labels, _step(model, images, labels)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_the_user_s_jitted_step_with_the_plan_gives_one_device_s_step(name, one_device_step):
    expected_model, images, labels, expected_loss = one_device_step
    model = _build(ResidualCNN)
    strategy = STRATEGIES[name](import_model(model, DATASET, BATCH).graph)
    plan = shard_plan(model, strategy, dataset=DATASET, batch_size=BATCH)
    nnx.update(model, jax.device_put(nnx.state(model), plan.state_shardings))
    placed = jax.device_put(images, plan.images_sharding), jax.device_put(labels, plan.labels_sharding)
    loss = _step(model, *placed, forward=plan.forward)
    _assert_same_step(loss, model, expected_loss, expected_model)
    assert len(plan.mesh.devices.flat) == strategy.num_devices


def test_the_state_shardings_match_the_model_s_state_and_the_strategy():
    model = nnx.eval_shape(lambda: ResidualCNN(rngs=nnx.Rngs(0)))
    graph = import_model(model, DATASET, BATCH).graph
    plan = shard_plan(model, _split(graph, 2, channel=2), dataset=DATASET, batch_size=BATCH)
    assert jax.tree.structure(plan.state_shardings) == jax.tree.structure(nnx.state(model))
    specs = {path: variable.get_value().spec for path, variable in nnx.to_flat_state(plan.state_shardings)}
    assert specs[("res_a", "conv_a", "conv", "kernel")] == jax.P(None, None, None, "channel")
    assert specs[("res_a", "conv_a", "bn", "mean")] == jax.P("channel")
    assert specs[("fc", "bias")] == jax.P("channel")
    assert plan.meshes["fc"].axis_names == ("sample", "channel", "in_channel")
    assert plan.labels_sharding.spec == jax.P("sample")  # the loss takes no channel split: on the batch


def test_a_strategy_file_is_a_plan(tmp_path):
    model = nnx.eval_shape(lambda: ResidualCNN(rngs=nnx.Rngs(0)))
    graph = import_model(model, DATASET, BATCH).graph
    path = tmp_path / "strategy.json"
    path.write_text(strategy_to_json(owt(graph, 2), graph))
    assert shard_plan(model, path, dataset=DATASET, batch_size=BATCH).strategy == owt(graph, 2)
    with pytest.raises(UsageError, match=r"^strategy '.*none\.json' cannot be read \(No such file or directory\)"):
        shard_plan(model, tmp_path / "none.json", dataset=DATASET, batch_size=BATCH)


def test_a_strategy_of_several_stages_says_how_to_run_it():
    model = nnx.eval_shape(lambda: ResidualCNN(rngs=nnx.Rngs(0)))
    graph = import_model(model, DATASET, BATCH).graph
    with pytest.raises(PlanError, match=r"^the strategy puts ResidualCNN's ops on different device sets \(\d+ stages, "
                                        r"the first \['conv1', .*\]\), which one jitted step cannot run; run it "
                                        r"through SOAP's staged runtime: python -m search\.optimize") as error:
        shard_plan(model, model_parallel(graph, 2), dataset=DATASET, batch_size=BATCH)
    assert "\n" not in str(error.value)


class AttentionLM(nnx.Module):
    """A token model around one nnx.MultiHeadAttention (causal mask) and a residual, its head tied."""

    def __init__(self, rngs, heads: int = 4):
        self.wte = nnx.Embed(64, 32, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, 32, decode=False, rngs=rngs)
        self.fc = nnx.Linear(32, 32, rngs=rngs)

    def __call__(self, ids):
        x = self.wte(ids)
        x = x + self.attn(x, mask=nnx.make_causal_mask(ids))
        return self.wte.attend(self.fc(x))


TOKENS = dict(dataset="tokens", batch_size=4, seq_len=8)


@pytest.fixture(scope="module")
def one_device_attention_step():
    rng = np.random.default_rng(0)
    ids, labels = (rng.integers(0, 64, (4, 8), dtype=np.int32) for _ in range(2))
    model = AttentionLM(rngs=nnx.Rngs(0))
    return model, ids, labels, _step(model, ids, labels)


@pytest.mark.parametrize("num_devices", [2, 4])
def test_nnx_multi_head_attention_under_megatron_gives_one_device_s_step(num_devices, one_device_attention_step):
    """The [d h k] query kernel is the graph's [d (h k)] dense kernel reshaped: Megatron's column split of h*k
    places it on the heads, the out kernel [h k d] on its heads too (the row split)."""
    expected_model, ids, labels, expected_loss = one_device_attention_step
    model = AttentionLM(rngs=nnx.Rngs(0))
    plan = shard_plan(model, megatron(import_model(model, **TOKENS).graph, num_devices), **TOKENS)
    specs = {path: variable.get_value().spec for path, variable in nnx.to_flat_state(plan.state_shardings)}
    assert specs[("attn", "query", "kernel")] == jax.P(None, "hidden", None)
    assert specs[("attn", "query", "bias")] == jax.P("hidden", None)
    assert specs[("attn", "out", "kernel")] == jax.P("in_hidden", None, None)
    nnx.update(model, jax.device_put(nnx.state(model), plan.state_shardings))
    placed = jax.device_put(ids, plan.images_sharding), jax.device_put(labels, plan.labels_sharding)
    _assert_same_step(_step(model, *placed, forward=plan.forward), model, expected_loss, expected_model)


def test_a_split_of_h_k_past_the_heads_is_no_strategy():
    """2 heads of 16, the query's dense split 4 ways on h*k: no split of the module's [d h k] kernel (an axis
    of 4 on 2 heads), so the space has no such config (soap.space) and the plan never meets one."""
    model = nnx.eval_shape(lambda: AttentionLM(rngs=nnx.Rngs(0), heads=2))
    graph = import_model(model, **TOKENS).graph
    configs = dict(data_parallel(graph, 4).items())
    configs["attn.query"] = ParallelConfig((1, 1, 4, 1), (0, 1, 2, 3))
    with pytest.raises(InvalidConfigError, match=r"^dense 'attn\.query': dim hidden=32 holds 2 heads of the module's "
                                                 r"kernel, which are not divisible by degree 4 \(a split of it must "
                                                 r"be whole heads\); valid degrees on 4 devices: 1, 2$"):
        Strategy.for_graph(graph, 4, configs)
