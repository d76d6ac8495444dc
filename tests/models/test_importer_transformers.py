"""The importer on token models: each transformer layer a user writes in flax nnx imports to the zoo's kind
(ops, shapes, attributes, parameters, FLOPs); a hand-written GPT's imported network gives the module's loss
and gradients; the nnx twin of the zoo's tiny GPT-2 imports to the zoo's graph and simulates alike; every
bad input is one line."""

import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from models.batch import synthetic_batch
from models.errors import ModelImportError, SoapError
from models.gpt2 import gpt2
from models.importer import import_model
from models.kinds.activation import Activation
from models.network import module_with
from models.op import OpKind
from models.resolve import resolve_model
from models.transformer import TransformerSize
from models.zoo import FamilyOptions
from simulator.simulate import Simulator
from soap.baselines import data_parallel, megatron
from tests.models.user_gpt import GPT
from tests.simulator.fakes import FlopCost, fake_machine

VOCAB, WIDTH, HEADS, BATCH, SEQUENCE = 64, 32, 4, 2, 8
E, D, A, L, N, DROP, ACT, MUL, ADD, SPLIT, MERGE, ATTN, POS = (
    OpKind.EMBEDDING, OpKind.DENSE, OpKind.ATTEND, OpKind.TOKEN_XENT, OpKind.LAYER_NORM, OpKind.DROPOUT,
    OpKind.ACTIVATION, OpKind.MULTIPLY, OpKind.ADD, OpKind.SPLIT_HEADS, OpKind.MERGE_HEADS, OpKind.ATTENTION,
    OpKind.ADD_POSITION)


class TokenModel(nnx.Module):
    """ids -> wte -> `body` -> the tied head: the minimal token model around one layer."""

    def __init__(self, body, rngs):
        self.wte = nnx.Embed(VOCAB, WIDTH, rngs=rngs)
        self.body = body(rngs)

    def __call__(self, ids):
        return self.wte.attend(self.body(self.wte(ids)))


class Apply(nnx.Module):
    """A function of the tokens with its layers: fn(self, x)."""

    def __init__(self, fn, layers, rngs):
        self.fn = fn
        self.layers = nnx.Dict({name: make(rngs) for name, make in layers.items()})

    def __call__(self, x):
        return self.fn(self.layers, x)


def apply(fn, **layers):
    return lambda rngs: Apply(fn, layers, rngs)


def linear(**options):
    return lambda rngs: nnx.Linear(WIDTH, WIDTH, rngs=rngs, **options)


def attention_by_hand(causal: bool, heads_first: bool):
    """q = k = v = the split tokens; einsum, 1/sqrt(k) (on the queries; [b h s k]: on the scores), optional
    causal mask (flax's make_causal_mask), softmax, einsum."""
    def fn(layers, x):
        b, s, d = x.shape
        q = x.reshape(b, s, HEADS, d // HEADS)
        if heads_first:
            q = q.transpose(0, 2, 1, 3)
            scores = jnp.einsum("bhqd,bhkd->bhqk", q, q) * (1 / math.sqrt(d // HEADS))
        else:
            scores = jnp.einsum("bqhd,bkhd->bhqk", q / math.sqrt(d // HEADS), q)
        if causal:
            scores = jnp.where(nnx.make_causal_mask(jnp.ones((b, s))), scores, -1e10)
        probs = jax.nn.softmax(scores, axis=-1)
        if heads_first:
            return jnp.einsum("bhqk,bhkd->bhqd", probs, q).transpose(0, 2, 1, 3).reshape(b, s, d)
        return jnp.einsum("bhqk,bkhd->bqhd", probs, q).reshape(b, s, d)
    return apply(fn)


def jax_attention(causal: bool):
    """jax.nn.dot_product_attention on q = k = v = the split tokens (it lays q out with a unit group axis)."""
    return apply(lambda _, x: jax.nn.dot_product_attention(x.reshape(T4), x.reshape(T4), x.reshape(T4),
                                                           is_causal=causal).reshape(T3))


def multi_head_attention(causal: bool, **options):
    """nnx.MultiHeadAttention on the tokens (self-attention), with flax's causal mask or none."""
    def fn(layers, x):
        mask = nnx.make_causal_mask(jnp.ones(x.shape[:2])) if causal else None
        return layers["attn"](x, mask=mask)
    return apply(fn, attn=lambda rngs: nnx.MultiHeadAttention(HEADS, WIDTH, decode=False, rngs=rngs, **options))


def cross_attention():
    """nnx.MultiHeadAttention attending from the tokens to a memory computed beside them (encoder-decoder
    attention: inputs_k = inputs_v = the memory, no mask): q from the tokens, k and v from the memory."""
    return apply(lambda m, x: m["attn"](x, m["memory"](x), mask=None), memory=linear(),
                 attn=lambda rngs: nnx.MultiHeadAttention(HEADS, WIDTH, decode=False, rngs=rngs))


def positions_param(rngs):
    class Positions(nnx.Module):
        def __init__(self):
            self.wpe = nnx.Param(jax.random.normal(rngs.params(), (2 * SEQUENCE, WIDTH)))

        def __call__(self, x):
            return x + self.wpe[:x.shape[1]]
    return Positions()


T3 = (BATCH, SEQUENCE, WIDTH)
T4 = (BATCH, SEQUENCE, HEADS, WIDTH // HEADS)
HEAD = [(A, (BATCH, SEQUENCE, VOCAB)), (L, (BATCH, SEQUENCE))]
MHA = [(D, T3), (SPLIT, T4)] * 3 + [(ATTN, T4), (MERGE, T3), (D, T3)]  # q, k, v, the core, the output
LAYERS = {  # body, its ops between wte and the head (kind, shape), an attribute to check
    "linear": (linear(), [(D, T3)], ("body", {"kernel": (WIDTH, WIDTH), "bias": (WIDTH,)})),
    "linear-no-bias": (linear(use_bias=False), [(D, T3)], ("body", {"kernel": (WIDTH, WIDTH)})),
    "linear-general": (lambda rngs: nnx.LinearGeneral(WIDTH, WIDTH, rngs=rngs), [(D, T3)], None),
    "einsum": (lambda rngs: nnx.Einsum("bsd,df->bsf", (WIDTH, WIDTH), (WIDTH,), rngs=rngs), [(D, T3)], None),
    "layer-norm": (lambda rngs: nnx.LayerNorm(WIDTH, epsilon=1e-5, rngs=rngs), [(N, T3)], ("body", (1e-5, False))),
    "rms-norm": (lambda rngs: nnx.RMSNorm(WIDTH, rngs=rngs), [(N, T3)], ("body", (1e-6, True))),
    "dropout": (lambda rngs: nnx.Dropout(0.25, rngs=rngs), [(DROP, T3)], ("body", 0.25)),
    "gelu-tanh": (apply(lambda _, x: jax.nn.gelu(x, approximate=True)), [(ACT, T3)], ("body", Activation.GELU_TANH)),
    "gelu-erf": (apply(lambda _, x: jax.nn.gelu(x, approximate=False)), [(ACT, T3)], ("body", Activation.GELU)),
    "silu": (apply(lambda _, x: jax.nn.silu(x)), [(ACT, T3)], ("body", Activation.SILU)),
    "tanh": (apply(lambda _, x: jnp.tanh(x)), [(ACT, T3)], ("body", Activation.TANH)),
    "relu": (apply(lambda _, x: jax.nn.relu(x)), [(ACT, T3)], ("body", Activation.RELU)),
    "gated-mlp": (apply(lambda m, x: m["down"](jax.nn.silu(m["gate"](x)) * m["up"](x)),
                        gate=linear(use_bias=False), up=linear(use_bias=False), down=linear(use_bias=False)),
                  [(D, T3), (D, T3), (ACT, T3), (MUL, T3), (D, T3)], None),  # the activation where first read
    "residual": (apply(lambda m, x: x + m["fc"](x), fc=linear()), [(D, T3), (ADD, T3)], None),
    "heads": (apply(lambda _, x: x.reshape(T4).reshape(T3)), [(SPLIT, T4), (MERGE, T3)], None),
    "attention": (attention_by_hand(causal=False, heads_first=False), [(SPLIT, T4), (ATTN, T4), (MERGE, T3)],
                  ("body.attention", False)),
    "causal-attention-heads-first": (attention_by_hand(causal=True, heads_first=True),
                                     [(SPLIT, T4), (ATTN, T4), (MERGE, T3)], ("body.attention", True)),
    "jax-attention": (jax_attention(causal=False), [(SPLIT, T4), (SPLIT, T4), (SPLIT, T4), (ATTN, T4), (MERGE, T3)],
                      ("body.attention", False)),
    "jax-attention-causal": (jax_attention(causal=True), [(SPLIT, T4), (SPLIT, T4), (SPLIT, T4), (ATTN, T4),
                                                          (MERGE, T3)], ("body.attention", True)),
    "multi-head-attention": (multi_head_attention(causal=False), MHA, ("body.layers.attn", False)),
    "multi-head-attention-causal": (multi_head_attention(causal=True), MHA, ("body.layers.attn", True)),
    "multi-head-attention-no-bias": (multi_head_attention(causal=True, use_bias=False), MHA,
                                     ("body.layers.attn.query", {"kernel": (WIDTH, WIDTH)})),
    "cross-attention": (cross_attention(), [(D, T3)] + MHA, ("body.layers.attn", False)),
    "linear-general-to-heads": (apply(lambda m, x: m["qkv"](x).reshape(T3), qkv=lambda rngs: nnx.LinearGeneral(
        WIDTH, (HEADS, WIDTH // HEADS), rngs=rngs)), [(D, T3), (SPLIT, T4), (MERGE, T3)],
                                ("body.layers.qkv", {"kernel": (WIDTH, WIDTH), "bias": (WIDTH,)})),
    "positions-embed": (apply(lambda m, x: x + m["wpe"](jnp.arange(x.shape[1])),
                              wpe=lambda rngs: nnx.Embed(2 * SEQUENCE, WIDTH, rngs=rngs)),
                        [(POS, T3)], ("body.layers.wpe", {"embedding": (2 * SEQUENCE, WIDTH)})),
    "positions-embed-batched": (apply(lambda m, x: x + m["wpe"](jnp.arange(x.shape[1])[None, :]),
                                      wpe=lambda rngs: nnx.Embed(2 * SEQUENCE, WIDTH, rngs=rngs)),
                                [(POS, T3)], ("body.layers.wpe", {"embedding": (2 * SEQUENCE, WIDTH)})),
    "positions-param": (positions_param, [(POS, T3)], ("body", {"embedding": (2 * SEQUENCE, WIDTH)})),
}


def _attribute(op):
    """What a layer's check reads of its op."""
    if op.kind in (D, POS):
        return dict(op.param_shapes)
    if op.kind is N:
        return (op.attrs.eps, op.attrs.rms)
    if op.kind is DROP:
        return op.attrs.rate
    if op.kind is ACT:
        return op.attrs.fn
    return op.attrs.causal


def _abstract(model):
    return nnx.eval_shape(lambda: model(rngs=nnx.Rngs(0)))


def _param_count(module) -> int:
    return sum(math.prod(value.shape) for value in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_each_layer_imports_to_its_kind_shapes_parameters_and_flops(layer):
    body, ops, check = LAYERS[layer]
    module = _abstract(lambda rngs: TokenModel(body, rngs))
    graph = import_model(module, "tokens", BATCH, seq_len=SEQUENCE).graph
    assert [(op.kind, op.output_shape) for op in graph.ops] == [(E, T3)] + ops + HEAD
    assert graph.ops[-2].tied == (("embedding", "wte"),)
    assert graph.param_count == _param_count(module)
    assert all(op.forward_flops > 0 for op in graph.ops if op.kind not in (E, SPLIT, MERGE))
    if check is not None:
        name, expected = check
        assert _attribute(graph.op(name)) == expected


def _user_loss(module, ids, labels):
    return optax.softmax_cross_entropy_with_integer_labels(module(ids), labels).mean()


def _network_loss(network, ids, labels):
    return network(ids, labels).mean()


def test_a_hand_written_gpt_s_network_gives_the_module_s_loss_and_gradients():
    module = GPT(VOCAB, 2 * SEQUENCE, WIDTH, HEADS, 2, 0.0, nnx.Rngs(jax.random.key(0, impl="rbg")))
    imported = import_model(module, "tokens", BATCH, seq_len=SEQUENCE)
    assert [op.kind for op in imported.graph.ops].count(ATTN) == 2
    ids, labels = synthetic_batch(imported.graph, seed=1)
    module.train()
    loss, grads = jax.jit(nnx.value_and_grad(_user_loss))(module, ids, labels)
    network = module_with(imported.graph, imported.params)
    network_loss, network_grads = jax.jit(nnx.value_and_grad(_network_loss))(network, ids, labels)
    np.testing.assert_allclose(network_loss, loss, rtol=1e-5)
    expected = {path: variable.get_value() for path, variable in nnx.to_flat_state(grads)}
    mapped = imported.module_paths(nnx.to_pure_dict(network_grads)["layers"])
    assert set(mapped) == set(expected)
    scale = max(float(jnp.abs(value).max()) for value in expected.values())
    for path, value in expected.items():  # the tied table's gradient: the lookup's and the head's summed
        np.testing.assert_allclose(mapped[path], value, rtol=1e-5, atol=1e-6 * scale, err_msg=str(path))


@pytest.mark.parametrize("layer", ["causal-attention-heads-first", "jax-attention-causal", "gated-mlp", "rms-norm",
                                   "positions-param", "multi-head-attention", "multi-head-attention-causal",
                                   "cross-attention"])
def test_a_layer_s_network_gives_the_module_s_loss_and_gradients(layer):
    module = TokenModel(LAYERS[layer][0], nnx.Rngs(jax.random.key(0, impl="rbg")))
    imported = import_model(module, "tokens", BATCH, seq_len=SEQUENCE)
    ids, labels = synthetic_batch(imported.graph, seed=1)
    loss, grads = jax.jit(nnx.value_and_grad(_user_loss))(module, ids, labels)
    network_loss, network_grads = jax.jit(nnx.value_and_grad(_network_loss))(
        module_with(imported.graph, imported.params), ids, labels)
    np.testing.assert_allclose(network_loss, loss, rtol=1e-5)
    mapped = imported.module_paths(nnx.to_pure_dict(network_grads)["layers"])
    for path, variable in nnx.to_flat_state(grads):
        np.testing.assert_allclose(mapped[path], variable.get_value(), rtol=1e-5, atol=1e-7, err_msg=str(path))


def test_cross_attention_reads_its_queries_from_the_tokens_and_its_keys_and_values_from_the_memory():
    graph = import_model(_abstract(lambda rngs: TokenModel(cross_attention(), rngs)), "tokens", BATCH,
                         seq_len=SEQUENCE).graph
    reads = {part: graph.producers(f"body.layers.attn.{part}") for part in ("query", "key", "value")}
    assert reads == {"query": ("wte",), "key": ("body.layers.memory",), "value": ("body.layers.memory",)}


def _structure(graph):
    """The graph without its names: each op unnamed, its producers and tied owners by program index."""
    return [(dataclasses.replace(op, name="", tied=tuple((w, graph.index(owner)) for w, owner in op.tied)),
             tuple(graph.index(p) for p in graph.producers(op.name))) for op in graph.ops]


def test_the_nnx_twin_of_the_zoo_s_tiny_gpt2_imports_to_the_zoo_s_graph_and_simulates_alike():
    depth, width, heads, vocab, context, sequence, batch = 2, 32, 4, 64, 32, 16, 4
    twin = _abstract(lambda rngs: GPT(vocab, context, width, heads, depth, 0.1, rngs))
    imported = import_model(twin, "tokens", batch, seq_len=sequence).graph
    zoo = gpt2("gpt2", TransformerSize(depth, width, heads, vocab, context), "tokens", sequence, batch)
    assert _structure(imported) == _structure(zoo)
    assert (imported.forward_flops, imported.backward_flops, imported.param_count) == (
        zoo.forward_flops, zoo.backward_flops, zoo.param_count)
    for baseline in (data_parallel, megatron):
        times = [Simulator(graph, fake_machine(4), FlopCost()).full(baseline(graph, 4)).step_ms
                 for graph in (imported, zoo)]
        assert times[0] == times[1] > 0, baseline.__name__


# Bad inputs: one line each.

class ImageNet(nnx.Module):
    def __init__(self, rngs):
        self.fc = nnx.Linear(3, 10, rngs=rngs)

    def __call__(self, images):
        return self.fc(images.mean(axis=(1, 2)))


def unscaled_attention(_, x):
    q = x.reshape(T4)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, q)), q).reshape(T3)


class Sorted(nnx.Module):
    def __init__(self, rngs):
        self.wte = nnx.Embed(VOCAB, WIDTH, rngs=rngs)

    def __call__(self, ids):
        return self.wte.attend(jnp.sort(self.wte(ids), axis=-1))  # unsupported: sort


def grouped_query(group):
    """q in HEADS heads, k and v in HEADS // 2 (projected to half the width), `group` matching them up."""
    def fn(layers, x):
        b, s, d = x.shape
        q = layers["q"](x).reshape(b, s, HEADS, d // HEADS)
        k, v = (layers[name](x).reshape(b, s, HEADS // 2, d // HEADS) for name in ("k", "v"))
        return group(q, k, v).reshape(b, s, d)
    half = lambda rngs: nnx.Linear(WIDTH, WIDTH // 2, rngs=rngs)
    return apply(fn, q=linear(), k=half, v=half)


def repeated_kv(q, k, v):
    k, v = (jnp.repeat(x, 2, axis=2) for x in (k, v))  # grouped-query: repeat
    return jax.nn.dot_product_attention(q, k, v, is_causal=True)


def broadcast_kv(q, k, v):
    k, v = (jnp.broadcast_to(x[:, :, :, None], x.shape[:3] + (2,) + x.shape[3:]).reshape(q.shape) for x in (k, v))  # grouped-query: broadcast
    return jax.nn.dot_product_attention(q, k, v)


def _line(marker: str) -> int:
    with open(__file__) as file:
        (line,) = (number for number, text in enumerate(file, 1) if f"# {marker}" in text)
    return line


@pytest.mark.parametrize("model, seq_len, error, match", [
    pytest.param(lambda rngs: TokenModel(linear(), rngs), None, SoapError,
                 r"^tokens needs a sequence length \(got None\); pass --seq-len", id="no-seq-len"),
    pytest.param(ImageNet, SEQUENCE, ModelImportError, r"^ImageNet has no nnx\.Embed, so it cannot read tokens "
                 r"\(2x8 int32 token ids\)", id="image-model-fed-tokens"),
    pytest.param(Sorted, SEQUENCE, ModelImportError, rf"^{__file__}:{_line('unsupported: sort')}: cannot import the "
                 r"root module \(Sorted\): it computes 'sort'\. SOAP imports", id="unsupported-primitive"),
    pytest.param(lambda rngs: TokenModel(apply(lambda _, x: 2 * x + 1), rngs), SEQUENCE, ModelImportError,
                 r"cannot import module 'body' \(Apply\): it computes an element-wise function of an activation "
                 r"that is none of gelu, gelu_tanh, silu", id="affine-is-no-activation"),
    pytest.param(lambda rngs: TokenModel(lambda rngs: nnx.LayerNorm(WIDTH, use_bias=False, rngs=rngs), rngs),
                 SEQUENCE, ModelImportError, r"module 'body' \(LayerNorm\): it is a LayerNorm with use_bias=False, "
                 r"where SOAP's layer_norm computes use_bias=True", id="layer-norm-without-bias"),
    pytest.param(lambda rngs: TokenModel(multi_head_attention(True, dropout_rate=0.1, deterministic=False), rngs),
                 SEQUENCE, ModelImportError, r"module 'body\.layers\.attn' \(MultiHeadAttention\): it is an "
                 r"nnx\.MultiHeadAttention with dropout_rate=0\.1 in training mode, which drops attention "
                 r"probabilities, where SOAP's attention drops none; pass dropout_rate=0", id="mha-dropout"),
    pytest.param(lambda rngs: TokenModel(multi_head_attention(True, num_kv_heads=2), rngs), SEQUENCE,
                 ModelImportError, r"it is an nnx\.MultiHeadAttention with num_kv_heads=2 for num_heads=4 "
                 r"\(grouped-query attention\), where SOAP's attention reads as many key and value heads as query "
                 r"heads; pass num_kv_heads=4\.", id="mha-grouped-query"),
    pytest.param(lambda rngs: TokenModel(grouped_query(repeated_kv), rngs), SEQUENCE, ModelImportError,
                 rf"^{__file__}:{_line('grouped-query: repeat')}: cannot import module 'body' \(Apply\): it repeats or "
                 r"groups heads for grouped-query attention \(fewer key and value heads than query heads\), where "
                 r"SOAP's attention reads as many key and value heads as query heads; project k and v to as many "
                 r"heads as q\.", id="grouped-query-repeat"),
    pytest.param(lambda rngs: TokenModel(grouped_query(broadcast_kv), rngs), SEQUENCE, ModelImportError,
                 rf"^{__file__}:{_line('grouped-query: broadcast')}: cannot import module 'body' \(Apply\): it "
                 r"repeats or groups heads for grouped-query attention", id="grouped-query-broadcast"),
    pytest.param(lambda rngs: TokenModel(grouped_query(jax.nn.dot_product_attention), rngs), SEQUENCE,
                 ModelImportError, r"cannot import module 'body' \(Apply\): it repeats or groups heads for "
                 r"grouped-query attention", id="grouped-query-jax"),
    pytest.param(lambda rngs: TokenModel(apply(lambda _, x: jax.nn.softmax(x, axis=-1)), rngs), SEQUENCE,  # softmax
                 ModelImportError, rf"^{__file__}:{_line('softmax')}: cannot import module 'body' \(Apply\): it takes "
                 r"the maximum of an activation of shape \(2, 8, 32\) over axes \(2,\) \(a standalone "
                 r"jax\.nn\.softmax or a max outside attention\), which no op of SOAP's token models computes",
                 id="standalone-softmax"),
    pytest.param(lambda rngs: TokenModel(apply(lambda _, x: x - x.mean(axis=1, keepdims=True)), rngs), SEQUENCE,
                 ModelImportError, r"it takes the sum of an activation of shape \(2, 8, 32\) over axes \(1,\) \(a "
                 r"mean or a sum outside attention\)", id="mean-over-sequence"),
    pytest.param(lambda rngs: TokenModel(apply(lambda _, x: x + x.max(axis=1, keepdims=True)), rngs), SEQUENCE,
                 ModelImportError, r"it takes the maximum of an activation of shape \(2, 8, 32\) over axes \(1,\)",
                 id="max-over-sequence"),
    pytest.param(lambda rngs: TokenModel(multi_head_attention(True, normalize_qk=True), rngs), SEQUENCE,
                 ModelImportError, r"it is an nnx\.MultiHeadAttention with normalize_qk=True", id="mha-normalize-qk"),
    pytest.param(lambda rngs: TokenModel(apply(unscaled_attention), rngs), SEQUENCE, ModelImportError,
                 r"it scales the attention scores by 1, where SOAP's attention scales by 1/sqrt\(head_dim\) = "
                 r"0\.353553", id="attention-unscaled"),
    pytest.param(lambda rngs: TokenModel(LAYERS["positions-embed"][0], rngs), 4 * SEQUENCE, ModelImportError,
                 r"it adds positions for 32 tokens from 'body\.layers\.wpe\.embedding', a table of 16 positions "
                 r"\(the model's context\); use --seq-len 16 or less", id="sequence-over-context"),
])
def test_a_bad_token_model_is_one_line(model, seq_len, error, match):
    with pytest.raises(error, match=match) as raised:
        import_model(_abstract(model), "tokens", BATCH, seq_len=seq_len)
    assert "\n" not in str(raised.value)


def test_seq_len_on_an_image_dataset_is_one_line():
    with pytest.raises(SoapError, match=r"^--seq-len 8 sizes token sequences, but tiny-imagenet holds images"):
        import_model(_abstract(ImageNet), "tiny-imagenet", BATCH, seq_len=SEQUENCE)


USER_GPT = f"{Path(__file__).parent / 'user_gpt.py'}:tiny_gpt"


def test_a_user_s_gpt_file_resolves_at_the_sequence_length_given():
    model = resolve_model(USER_GPT, "tokens", BATCH, FamilyOptions(seq_len=SEQUENCE))
    assert (model.graph.model, model.graph.ops[0].output_shape, model.graph.ops[-1].kind) == ("GPT", T3, L)
    assert model.imported.params["wte"]["embedding"].shape == (VOCAB, WIDTH)


def test_a_family_size_for_a_user_s_gpt_is_one_line():
    with pytest.raises(SoapError, match=r"^--depth sizes the transformer families .*, not .*user_gpt\.py:tiny_gpt; "
                                        r"drop --depth$"):
        resolve_model(USER_GPT, "tokens", BATCH, FamilyOptions(depth=1, seq_len=SEQUENCE))


def test_a_causal_mask_broadcast_past_the_folding_limit_is_still_read():
    """2 samples x 4 heads x 1024 x 1024 scores: 8M mask elements, over trace.FOLD_MAX_ELEMENTS, yet the mask
    (a broadcast view of its 1024 x 1024 rows) is checked and the attention is causal."""
    twin = _abstract(lambda rngs: GPT(VOCAB, 1024, WIDTH, HEADS, 1, 0.0, rngs))
    graph = import_model(twin, "tokens", BATCH, seq_len=1024).graph
    assert [op.attrs.causal for op in graph.ops if op.kind is ATTN] == [True]
