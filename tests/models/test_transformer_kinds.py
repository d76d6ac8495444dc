"""The transformer kinds: shapes, FLOPs (each module docstring's formula, by hand), the boxes a split reads,
every task's computation on its slices assembled into the whole op's, and each kind's JAX computation
against flax's module or a jax.numpy reference."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.errors import ShapeError
from models.graph import GraphBuilder
from models.kinds.attention import AttentionAttrs
from models.labels import (REPLICA, axis_labels, label_ranges, output_partial, output_partial_groups, splits_statistics,
                           statistics_groups, task_grid, tasks_input_boxes, tasks_output_boxes)
from models.network import apply_op, layer_params, op_layer
from models.op import OpKind, local_op
from soap.space import enumerate_configs

BATCH, SEQUENCE, VOCAB, WIDTH, HEADS, CONTEXT = 2, 4, 8, 8, 2, 6


def tiny_transformer():
    """One op of every token kind on ids [2 4]: vocabulary 8, width 8, 2 heads of 4, context 6, 2 token types."""
    b = GraphBuilder("tiny", "tokens", (BATCH, SEQUENCE))
    b.embedding("wte", VOCAB, WIDTH, input=None)
    b.add_position("wpe", CONTEXT)
    b.add_token_type("type", 2)
    b.dropout("drop", 0.0)
    b.layer_norm("ln")
    for name in ("q", "k", "v"):
        b.dense(name, WIDTH, relu=False, input="ln")
        b.split_heads(f"{name}_heads", HEADS)
    b.attention("attn", inputs=["q_heads", "k_heads", "v_heads"], causal=True)
    b.merge_heads("merged")
    b.dense("proj", WIDTH, relu=False, bias=False)
    b.add("res", inputs=["drop", "proj"])
    b.layer_norm("rms", rms=True)
    b.dense("up", 2 * WIDTH, relu=False)
    b.activation("gelu", "gelu_tanh")
    b.dense("gate", 2 * WIDTH, relu=False, input="rms")
    b.activation("silu", "silu")
    b.multiply("mul", inputs=["gelu", "silu"])
    b.dense("down", WIDTH, relu=False)
    b.attend("head", "wte", bias=True)
    b.token_xent("loss")
    return b.build(BATCH)


def tiny_vit():
    """ViT's token kinds on images [2 4 4 3]: a 2x2 patch conv of 8 channels -> 4 tokens -> class token (5)
    -> first token -> dense 3 -> loss."""
    b = GraphBuilder("tiny_vit", "toy", (2, 4, 4, 3))
    b.conv2d("patches", 8, kernel=2, stride=2, padding="VALID", relu=False)
    b.image_tokens("tokens")
    b.class_token("cls")
    b.first_token("first")
    b.dense("head", 3, relu=False)
    return b.build(2)


GRAPH = tiny_transformer()
VIT = tiny_vit()
TOKENS = (BATCH, SEQUENCE, WIDTH)


def test_shapes_and_parameters():
    shapes = {op.name: (op.input_shapes, op.output_shape, dict(op.param_shapes)) for op in GRAPH.ops}
    assert shapes["wte"] == (((2, 4),), TOKENS, {"embedding": (8, 8)})
    assert shapes["wpe"] == ((TOKENS,), TOKENS, {"embedding": (6, 8)})
    assert shapes["ln"] == ((TOKENS,), TOKENS, {"scale": (8,), "bias": (8,)})
    assert shapes["rms"] == ((TOKENS,), TOKENS, {"scale": (8,)})
    assert shapes["q"] == ((TOKENS,), TOKENS, {"kernel": (8, 8), "bias": (8,)})
    assert shapes["q_heads"] == ((TOKENS,), (2, 4, 2, 4), {})
    assert shapes["attn"] == (((2, 4, 2, 4),) * 3, (2, 4, 2, 4), {})
    assert shapes["merged"] == (((2, 4, 2, 4),), TOKENS, {})
    assert shapes["proj"] == ((TOKENS,), TOKENS, {"kernel": (8, 8)})
    assert shapes["up"][1] == (2, 4, 16) and shapes["mul"][0] == ((2, 4, 16),) * 2
    assert shapes["head"] == ((TOKENS,), (2, 4, 8), {"embedding": (8, 8), "bias": (8,)})
    assert shapes["loss"] == (((2, 4, 8),), (2, 4), {})
    assert GRAPH.op("head").tied == (("embedding", "wte"),)
    assert GRAPH.op("head").param_count == 8  # its bias; the table counts at wte
    assert GRAPH.producers("attn") == ("q_heads", "k_heads", "v_heads")
    assert not GRAPH.op("wte").input_grad and GRAPH.op("wte").spec.input_dtypes(GRAPH.op("wte")) == ("int32",)
    assert GRAPH.op("q").spec.input_dtypes(GRAPH.op("q")) == ("float32",)


# (op, forward FLOPs, backward FLOPs) by the formulas of the kinds' docstrings; tokens b*s = 8.
FLOPS = [
    ("wte", 0, 8 * 8),  # a gather; backward scatter-adds b*s*d = 64
    ("wpe", 64, 64),  # one add per element
    ("type", 64, 64),
    ("drop", 128, 64),  # 2 * 64 forward, 64 backward
    ("ln", 7 * 64, 14 * 64),
    ("rms", 4 * 64, 8 * 64),
    ("q", 2 * 64 * 8, 4 * 64 * 8),  # 2 * elements(y) * in = 1024
    ("q_heads", 0, 0),
    # 4 * b*s*t*h*k + 5 * b*h*s*t = 4 * 2*4*4*2*4 + 5 * 2*2*4*4 = 1024 + 320 = 1344
    ("attn", 1344, 2688),
    ("up", 2 * 128 * 8, 4 * 128 * 8),
    ("gelu", 9 * 128, 18 * 128),
    ("silu", 5 * 128, 10 * 128),
    ("mul", 128, 256),
    ("head", 2 * 64 * 8, 4 * 64 * 8),  # 2 * b*s*v*d = 2 * 8*8*8
    ("loss", 5 * 64, 2 * 64),
]


@pytest.mark.parametrize("name,forward,backward", FLOPS, ids=[f[0] for f in FLOPS])
def test_flops_follow_the_module_docstring(name, forward, backward):
    op = GRAPH.op(name)
    assert (op.forward_flops, op.backward_flops) == (forward, backward)


def test_worked_numbers_of_the_docstrings():
    b = GraphBuilder("gpt2", "tokens", (8, 1024))
    b.embedding("wte", 50257, 768, input=None)
    b.dense("up", 3072, relu=False)
    b.split_heads("heads", 12, input="wte")
    b.attention("attn", inputs=["heads", "heads", "heads"], causal=True)
    b.attend("head", "wte", input="wte")
    graph = b.build(8)
    assert graph.op("up").forward_flops == 2 * 8 * 1024 * 3072 * 768 == 38_654_705_664
    assert graph.op("attn").forward_flops == 25_769_803_776 + 503_316_480  # 25.77 + 0.50 GFLOP
    assert round(graph.op("head").forward_flops / 1e9) == 632


# --- boxes ---------------------------------------------------------------------------------------------

def test_dense_row_split_reads_its_features_and_leaves_partial_sums():
    space = GRAPH.op("proj").space  # config labels (sample, sequence, hidden, in_hidden)
    assert space.config_labels == ("sample", "sequence", "hidden", "in_hidden")
    degrees = (1, 1, 1, 2)
    assert output_partial(space, degrees) and output_partial_groups(space, degrees) == [[0, 1]]
    assert tasks_input_boxes(space, degrees, 0) == [((0, 2), (0, 4), (0, 4)), ((0, 2), (0, 4), (4, 8))]
    assert tasks_output_boxes(space, degrees) == [((0, 2), (0, 4), (0, 8))] * 2
    column = (1, 2, 2, 1)  # a sequence and column split: whole features in, a quarter of y out
    assert tasks_input_boxes(space, column, 0)[3] == ((0, 2), (2, 4), (0, 8))
    assert tasks_output_boxes(space, column)[3] == ((0, 2), (2, 4), (4, 8))
    assert not output_partial(space, column)


def test_a_fused_relu_keeps_the_row_split_out():
    b = GraphBuilder("relu", "tokens", (2, 4, 8))
    b.dense("fc", 8, input=None)  # relu=True
    assert b.build(2).op("fc").space.splittable == {"sample", "sequence", "hidden"}


def test_attention_split_on_the_query_sequence_reads_keys_and_values_whole():
    space = GRAPH.op("attn").space
    assert space.splittable == {"sample", "sequence", "heads"}
    degrees = (1, 2, 2, 1)  # sample, sequence, heads, head_dim
    assert tasks_input_boxes(space, degrees, 0)[3] == ((0, 2), (2, 4), (1, 2), (0, 4))  # its queries
    assert tasks_input_boxes(space, degrees, 1)[3] == ((0, 2), (0, 4), (1, 2), (0, 4))  # all keys of its head
    assert tasks_output_boxes(space, degrees)[3] == ((0, 2), (2, 4), (1, 2), (0, 4))


def test_heads_reshapes_split_the_features_by_heads():
    split = GRAPH.op("q_heads").space
    assert tasks_input_boxes(split, (1, 1, 2, 1), 0) == [((0, 2), (0, 4), (0, 4)), ((0, 2), (0, 4), (4, 8))]
    merge = GRAPH.op("merged").space
    assert merge.config_labels == ("sample", "sequence", "heads")
    assert tasks_output_boxes(merge, (1, 1, 2)) == [((0, 2), (0, 4), (0, 4)), ((0, 2), (0, 4), (4, 8))]


def test_embedding_vocabulary_split_is_a_partial_sum():
    space = GRAPH.op("wte").space
    assert space.config_labels == ("sample", "sequence", "hidden", "vocab")
    assert output_partial(space, (1, 1, 1, 2)) and not output_partial(space, (2, 1, 2, 1))
    assert tasks_input_boxes(space, (1, 1, 1, 2), 0) == [((0, 2), (0, 4))] * 2  # every task reads every id


def test_position_table_is_whole_and_shared_by_sequence_shards():
    op = GRAPH.op("wpe")
    assert local_op(op, (1, 2, 1, 1)).param_shapes == (("embedding", (6, 8)),)
    assert local_op(op, (1, 1, 2, 1)).param_shapes == (("embedding", (6, 4)),)
    assert local_op(op, (1, 1, 1, 2)).param_shapes == (("embedding", (6, 8)),)  # a copy holds it whole


def test_statistics_of_layer_norm_and_token_loss():
    ln, loss = GRAPH.op("ln"), GRAPH.op("loss")
    assert ln.spec.stats_bytes(ln, (2, 1, 1, 1)) == 0 and ln.spec.stats_bytes(ln, (1, 2, 1, 1)) == 0
    assert ln.spec.stats_bytes(ln, (1, 1, 1, 2)) == 0  # copies hold whole rows
    # Hidden split: 2 floats for each of the task's 2 * 4 tokens.
    assert ln.spec.stats_bytes(ln, (1, 1, 2, 1)) == 2 * 8 * 4 == 64
    assert ln.spec.stats_bytes(ln, (2, 1, 2, 1)) == 2 * 4 * 4
    assert statistics_groups(ln.space, (1, 2, 2, 1)) == [[0, 1], [2, 3]]
    # Vocabulary split: max, sum of exps and the label's logit for each of the task's tokens.
    assert loss.space.config_labels == ("sample", "sequence", "vocab")
    assert loss.spec.stats_bytes(loss, (1, 1, 4)) == 3 * 8 * 4 and loss.spec.stats_bytes(loss, (2, 1, 1)) == 0
    assert not output_partial(loss.space, (1, 1, 4))


# --- every task's computation, assembled -----------------------------------------------------------------

def _random(shape, seed, dtype="float32"):
    rng = np.random.default_rng(seed)
    if dtype == "int32":
        return jnp.asarray(rng.integers(0, VOCAB, size=shape, dtype=np.int32))
    return jnp.asarray(rng.standard_normal(shape, dtype=np.float32))


def _inputs(op, seed):
    return tuple(_random(shape, seed + 10 * j, dtype)
                 for j, (shape, dtype) in enumerate(zip(op.input_shapes, op.spec.input_dtypes(op))))


def _params(op, seed):
    return {name: _random(shape, seed + i + 1) for i, (name, shape) in enumerate(op.param_shapes)} or None


def _slice(array, box):
    return array[tuple(slice(start, stop) for start, stop in box)]


def assembled(op, degrees, params, inputs, labels):
    """Every task's `task_apply` on its slices, written into its output box (partial sums added; of a
    replicated op's copies, the first); asserts each task's slices have its local op's shapes and every
    output element has as many writers as there are partial sums of it."""
    space, local = op.space, local_op(op, degrees)
    boxes = [tasks_input_boxes(space, degrees, j) for j in range(len(inputs))]
    total, writers = np.zeros(op.output_shape, np.float32), np.zeros(op.output_shape, np.int32)
    for k, (index, out_box) in enumerate(zip(task_grid(degrees), tasks_output_boxes(space, degrees))):
        ranges = label_ranges(space, degrees, index)
        task_inputs = tuple(_slice(x, boxes[j][k]) for j, x in enumerate(inputs))
        assert tuple(x.shape for x in task_inputs) == local.input_shapes
        task_params = None if params is None else {
            name: _slice(params[name], tuple(ranges.get(n, (0, params[name].shape[d])) for d, n in enumerate(names)))
            for name, names in space.params}
        if task_params is not None:
            assert {n: tuple(p.shape) for n, p in task_params.items()} == dict(local.param_shapes)
        task_labels = None if labels is None else _slice(labels, out_box[:labels.ndim])
        y = op.spec.task_apply(op, degrees, index, task_params, task_inputs, task_labels)
        assert tuple(y.shape) == local.output_shape
        if any(i and name == REPLICA.name for name, i in zip(space.config_labels, index)):
            continue  # a copy of the first replica's shard
        region = tuple(slice(start, stop) for start, stop in out_box)
        total[region] += np.asarray(y)
        writers[region] += 1
    carried = {n for axis in space.output for n in axis_labels(axis)}
    sums = math.prod(d for name, d in zip(space.config_labels, degrees) if name not in carried | {REPLICA.name})
    assert (writers == sums).all()
    return total


ASSEMBLED = [pytest.param(GRAPH, op.name, id=op.name) for op in GRAPH.ops] + [
    pytest.param(VIT, name, id=name) for name in ("tokens", "cls", "first")]


@pytest.mark.parametrize("graph,name", ASSEMBLED)
def test_tasks_assemble_into_the_whole_op(graph, name):
    """Every split of `soap.space.enumerate_configs` on 4 devices but those dividing statistics (a layer norm
    split on hidden, a loss on its vocabulary: their tasks all-reduce statistics inside the op)."""
    op = graph.op(name)
    params, inputs = _params(op, 1), _inputs(op, 2)
    labels = _random(op.output_shape, 3, "int32") if op.spec.reads_labels else None
    whole = np.asarray(apply_op(op, params, inputs, labels))
    checked = 0
    for degrees in sorted({config.degrees for config in enumerate_configs(op, 4)}):
        if splits_statistics(op.space, degrees):
            continue
        np.testing.assert_allclose(assembled(op, degrees, params, inputs, labels), whole, rtol=1e-5, atol=1e-5,
                                   err_msg=str(degrees))
        checked += 1
    assert checked >= 4


# --- the JAX computations against flax and jax.numpy ------------------------------------------------------

def _with_random_params(layer, seed):
    """The layer with random values in its parameters (a scale of 1 or a bias of 0 would hide one)."""
    for i, (path, variable) in enumerate(sorted(nnx.iter_graph(layer), key=lambda item: str(item[0]))):
        if isinstance(variable, nnx.Param):
            variable[...] = _random(variable[...].shape, seed + i)
    return layer


def _check(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["q", "proj", "ln", "rms", "wte", "wpe"])
def test_apply_matches_the_flax_module(name):
    op = GRAPH.op(name)
    layer = _with_random_params(op_layer(op, nnx.Rngs(0)), 5)
    params, (x,) = layer_params(layer), _inputs(op, 6)
    assert {n: tuple(p.shape) for n, p in params.items()} == dict(op.param_shapes)
    expected = layer(jnp.arange(SEQUENCE)) + x if op.kind is OpKind.ADD_POSITION else layer(x)
    _check(apply_op(op, params, (x,)), expected)


def test_attend_matches_flax_embed_attend_with_its_bias():
    op, wte = GRAPH.op("head"), GRAPH.op("wte")
    table = _with_random_params(op_layer(wte, nnx.Rngs(0)), 7)
    bias = _random((VOCAB,), 8)
    (x,) = _inputs(op, 9)
    params = {"embedding": layer_params(table)["embedding"], "bias": bias}
    _check(apply_op(op, params, (x,)), table.attend(x) + bias)
    assert set(layer_params(op_layer(op, nnx.Rngs(0)))) == {"bias"}  # the table is wte's


def test_attention_matches_jax_dot_product_attention():
    causal = GRAPH.op("attn")
    q, k, v = _inputs(causal, 10)
    for op in (causal, dataclasses.replace(causal, attrs=AttentionAttrs(causal=False))):
        _check(apply_op(op, None, (q, k, v)), jax.nn.dot_product_attention(q, k, v, is_causal=op.attrs.causal))


@pytest.mark.parametrize("name,reference", [
    ("gelu", lambda x: nnx.gelu(x, approximate=True)), ("silu", nnx.silu)], ids=["gelu_tanh", "silu"])
def test_apply_activation(name, reference):
    op = GRAPH.op(name)
    (x,) = _inputs(op, 11)
    _check(apply_op(op, None, (x,)), reference(x))


def test_every_activation_and_multiply():
    x, y = _random((2, 3), 12), _random((2, 3), 13)
    references = {"gelu": lambda v: jax.scipy.special.erf(v / jnp.sqrt(2.0)) * v / 2 + v / 2, "tanh": jnp.tanh,
                  "relu": lambda v: jnp.maximum(v, 0), "sigmoid": lambda v: 1 / (1 + jnp.exp(-v))}
    for fn, reference in references.items():
        b = GraphBuilder("act", "toy", (2, 3))
        b.activation("a", fn, input=None)
        _check(apply_op(b.build(2).op("a"), None, (x,)), reference(x))
    _check(apply_op(GRAPH.op("mul"), None, (x, y)), x * y)


def test_token_xent_is_logsumexp_minus_the_labels_logit():
    op = GRAPH.op("loss")
    (logits,), labels = _inputs(op, 14), _random((2, 4), 15, "int32")
    chosen = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    _check(apply_op(op, None, (logits,), labels), jax.nn.logsumexp(logits, axis=-1) - chosen)


def test_dropout_keeps_and_scales_a_fixed_mask_per_op():
    b = GraphBuilder("drop", "tokens", (4, 64, 64))
    b.dropout("d1", 0.5, input=None)
    b.dropout("d2", 0.5, input=None)
    graph = b.build(4)
    x = jnp.ones((4, 64, 64))
    y1, y2 = (np.asarray(apply_op(graph.op(n), None, (x,))) for n in ("d1", "d2"))
    assert set(np.unique(y1)) == {0.0, 2.0} and abs((y1 == 0).mean() - 0.5) < 0.02
    assert (y1 != y2).any() and (y1 == np.asarray(apply_op(graph.op("d1"), None, (x,)))).all()
    _check(apply_op(GRAPH.op("drop"), None, (x,)), x)  # rate 0: identity


def test_vit_token_kinds():
    tokens, cls, first = (VIT.op(name) for name in ("tokens", "cls", "first"))
    assert (tokens.output_shape, cls.output_shape, first.output_shape) == ((2, 4, 8), (2, 5, 8), (2, 8))
    assert dict(cls.param_shapes) == {"cls": (8,)} and cls.param_count == 8
    # A split of the image's rows is a contiguous range of its tokens (row-major: 2 tokens a row).
    assert tasks_output_boxes(tokens.space, (1, 2, 1)) == [((0, 2), (0, 2), (0, 8)), ((0, 2), (2, 4), (0, 8))]
    assert cls.space.splittable == {"sample", "hidden"}
    assert tasks_input_boxes(first.space, (2, 1), 0)[1] == ((1, 2), (0, 5), (0, 8))  # every token of its sample
    x = _random((2, 2, 2, 8), 17)
    _check(apply_op(tokens, None, (x,)), x.reshape(2, 4, 8))
    t, vector = _random((2, 4, 8), 18), _random((8,), 19)
    y = apply_op(cls, {"cls": vector}, (t,))
    _check(y[:, 1:], t)
    _check(y[:, 0], jnp.stack([vector, vector]))
    _check(apply_op(first, None, (y,)), y[:, 0])
    assert layer_params(op_layer(cls, nnx.Rngs(0)))["cls"].shape == (8,)


def test_heads_round_trip():
    x = _random(TOKENS, 16)
    heads = apply_op(GRAPH.op("q_heads"), None, (x,))
    _check(heads[:, :, 1, :], x[:, :, 4:])
    _check(apply_op(GRAPH.op("merged"), None, (heads,)), x)


# --- builder errors ----------------------------------------------------------------------------------------

def test_builder_rules_are_one_line():
    b = GraphBuilder("bad", "tokens", (2, 8))
    b.embedding("wte", 16, 6, input=None)
    with pytest.raises(ShapeError, match=r"^op 'wpe': sequence length 8 is over the model's context of 4 positions; "
                                         r"use a sequence length of at most 4$"):
        b.add_position("wpe", 4, input="wte")
    with pytest.raises(ShapeError, match=r"^op 'h': 4 heads do not divide the width 6; use a number of heads that "
                                         r"divides 6$"):
        b.split_heads("h", 4, input="wte")
    with pytest.raises(ShapeError, match=r"^attend 'head' reads the table of 'nope', which is not an embedding"):
        b.attend("head", "nope", input="wte")
    b.split_heads("h", 2, input="wte")
    b.split_heads("h3", 3, input="wte")
    with pytest.raises(ShapeError, match=r"^attention 'a' reads h \(2, 8, 2, 3\), h3 \(2, 8, 3, 2\), h "
                                         r"\(2, 8, 2, 3\); it needs queries \[b s h k\] and keys and values"):
        b.attention("a", inputs=["h", "h3", "h"])
    with pytest.raises(ShapeError, match=r"^multiply 'm' reads h \(2, 8, 2, 3\), h3 \(2, 8, 3, 2\); it multiplies "
                                         r"two tensors of one shape$"):
        b.multiply("m", inputs=["h", "h3"])
