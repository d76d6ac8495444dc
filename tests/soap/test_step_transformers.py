"""A tiny GPT trained by every kind of strategy computes what one device computes: the Megatron layouts
(heads, column and row splits, a vocabulary-parallel embedding, tied head and loss, sequence-parallel
norms), data parallelism, and random strategies in stages, with dropout on and a new mask every step.
So does a tiny ViT (patches, class token, no dropout)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from models.batch import synthetic_batch
from models.keys import op_key, step_key
from models.network import init_params
from models.zoo import FamilyOptions, build_graph
from soap.baselines import data_parallel, megatron, megatron_sp, random_strategy, single
from soap.lowering import strategy_shardings
from soap.optimizer import Optimizer
from soap.devices import ClusterJob, run_on_cluster
from soap.runner import RunConfig, reference_loss
from soap.step import TrainStep

GPT = build_graph("gpt2", "tokens", 8, FamilyOptions(depth=1, width=32, heads=4, vocab=64, seq_len=16))
VIT = build_graph("vit_b16", "tiny-imagenet", 8, FamilyOptions(depth=1, width=32, heads=4))
STEPS = 2


def _train(strategy, optimizer: Optimizer, graph=GPT):
    """Two steps on the seeded batch: (losses, params, optimizer state) on the host."""
    step = TrainStep(graph, strategy_shardings(graph, strategy), optimizer.transformation())
    state = step.init(init_params(graph, 0))
    batch = step.place_batch(*synthetic_batch(graph, 0))
    losses = []
    for _ in range(STEPS):
        loss, state = step(state, *batch)
        losses.append(float(loss))
    assert state.step == STEPS
    return losses, jax.tree.map(np.asarray, state.params), jax.tree.map(np.asarray, state.opt_state)


@functools.cache
def _one_device(optimizer: Optimizer, graph=GPT):
    """`graph` trained on one device (GPT or VIT, module constants: cached by identity), once per optimizer."""
    return _train(single(graph, 1), optimizer, graph)


@pytest.fixture(params=list(Optimizer), ids=lambda o: o.value)
def one_device(request):
    return request.param, _one_device(request.param)


def _assert_same_training(got, expected, optimizer: Optimizer) -> None:
    """Losses and parameters within float32 summation order (rtol 1e-5, atol 1e-7).

    AdamW divides each gradient by its own root mean square, so an element whose exact gradient is 0 but
    whose float sum is noise (+-1e-9: the key bias, which softmax cannot see, as it shifts every key's
    logit equally) moves by +-lr in a direction the summation order picks. Such elements (first moment
    under 1e-6 of the model's largest) are held to lr * steps; every other element to rtol 1e-5. The
    first moments are compared too where `got` has an optimizer state (a cluster run fetches parameters only).
    """
    (losses, params, opt_state), (ref_losses, ref_params, ref_opt) = got, expected
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert params.keys() == ref_params.keys()
    if optimizer is Optimizer.ADAMW:
        noise = 1e-6 * max(float(np.abs(mu).max()) for entry in ref_opt.values() for mu in entry[0].mu.values())
    for name, entry in ref_params.items():
        for key, value in entry.items():
            atol = np.full(value.shape, 1e-7, np.float32)
            if optimizer is Optimizer.ADAMW:
                mu = ref_opt[name][0].mu[key]
                atol[np.abs(mu) < noise] = 1e-3 * STEPS
                if opt_state is not None:
                    np.testing.assert_allclose(opt_state[name][0].mu[key], mu, rtol=1e-4, atol=noise,
                                               err_msg=f"{name}.{key} first moment")
            np.testing.assert_array_less(np.abs(params[name][key] - value), atol + 1e-5 * np.abs(value),
                                         err_msg=f"{name}.{key}")


def test_the_first_step_loss_is_the_flax_modules_with_the_same_dropout_masks(one_device):
    _, (losses, _, _) = one_device
    np.testing.assert_allclose(losses[0], reference_loss(GPT, 0), rtol=1e-6)
    assert losses[0] != losses[1]


@pytest.mark.parametrize("baseline,num_devices", [(data_parallel, 4), (megatron, 2), (megatron, 4),
                                                  (megatron_sp, 4)], ids=lambda x: getattr(x, "__name__", x))
def test_every_baseline_trains_as_one_device(baseline, num_devices, one_device):
    optimizer, expected = one_device
    _assert_same_training(_train(baseline(GPT, num_devices), optimizer), expected, optimizer)


@pytest.mark.parametrize("optimizer,num_devices,seed", [(Optimizer.SGD, 2, 0), (Optimizer.ADAMW, 4, 1)],
                         ids=["sgd-2", "adamw-4"])
def test_random_strategies_in_stages_train_as_one_device(optimizer, num_devices, seed):
    """Ops on device subsets, so the tied head may borrow the token table from an earlier stage."""
    expected = _one_device(optimizer)
    strategy = random_strategy(GPT, num_devices, np.random.default_rng(seed))
    step = TrainStep(GPT, strategy_shardings(GPT, strategy), optimizer.transformation())
    assert len(step.stages) > 1
    _assert_same_training(_train(strategy, optimizer), expected, optimizer)


def test_two_pinned_workers_train_megatron_and_a_staged_strategy_as_one_device():
    """Across processes: Megatron's all-reduces over gloo, and stages whose head borrows the token table
    from the other process and sends its gradient back."""
    strategies = [megatron(GPT, 2), random_strategy(GPT, 2, np.random.default_rng(0))]
    config = RunConfig(steps=STEPS, fetch_params=True, optimizer="adamw")
    report = run_on_cluster(ClusterJob.for_strategies(GPT, strategies, config), num_workers=2, timeout_s=600)
    expected = _one_device(Optimizer.ADAMW)
    assert report.results[1].num_stages > 1
    for result in report.results:
        _assert_same_training((list(result.losses), result.params, None), expected, Optimizer.ADAMW)


@pytest.mark.parametrize("build", [data_parallel, megatron,
                                   lambda graph, n: random_strategy(graph, n, np.random.default_rng(2))],
                         ids=["data_parallel", "megatron", "random"])
def test_a_tiny_vit_trains_as_one_device(build):
    """megatron_sp is megatron's strategy here: 17 tokens (16 patches and the class token) do not split 4 ways."""
    assert megatron_sp(VIT, 4) == megatron(VIT, 4)
    expected = _one_device(Optimizer.SGD, VIT)
    _assert_same_training(_train(build(VIT, 4), Optimizer.SGD, VIT), expected, Optimizer.SGD)


def test_a_dropout_mask_drawn_on_a_split_is_the_one_device_draw():
    """Partitionable threefry: each shard gets the bits of its own positions of the whole draw."""
    mesh = Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("sample", "hidden"), axis_types=(AxisType.Auto,) * 2)
    key = op_key(step_key(0, 3), "h0.attn_drop")

    def draw():
        return jax.random.bernoulli(key, 0.9, (8, 16, 32))

    whole = jax.jit(draw)()
    split = jax.jit(draw, out_shardings=NamedSharding(mesh, P("sample", None, "hidden")))()
    np.testing.assert_array_equal(np.asarray(split), np.asarray(whole))
    assert not np.array_equal(np.asarray(whole), np.asarray(jax.jit(lambda: jax.random.bernoulli(
        op_key(step_key(0, 4), "h0.attn_drop"), 0.9, (8, 16, 32)))()))
    assert 0.85 < float(jnp.mean(whole)) < 0.95
