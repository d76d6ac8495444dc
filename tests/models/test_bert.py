"""BERT-base with its masked-LM head in the zoo: the published parameter count, post-norm blocks, the
decoder tied to the token table with its own bias, and the token-type embedding of one segment."""

import jax.numpy as jnp
import numpy as np

from models.batch import synthetic_batch
from models.graph import GraphBuilder
from models.graph_file import graph_from_json, graph_to_json
from models.network import apply_op, init_params, module_with
from models.op import OpKind
from models.zoo import FamilyOptions, build_graph


def test_bert_base_with_its_mlm_head_is_the_published_model():
    graph = build_graph("bert_base", "tokens", 1)
    assert graph.param_count == 109_514_298  # no pooler; the decoder's table is wte's, its bias its own
    assert graph.op("wte").output_shape == (1, 512, 768) and graph.op("loss").output_shape == (1, 512)
    decoder = graph.op("mlm.decoder")
    assert decoder.tied == (("embedding", "wte"),) and decoder.param_count == 30522
    assert graph.op("type").param_shapes == (("embedding", (2, 768)),)
    # Post-norm: a block's attention reads the previous block's last layer norm, not a norm of its own.
    assert graph.producers("layer1.q") == ("layer0.ln_2",) and graph.op("layer0.ln_2").attrs.eps == 1e-12
    assert [graph.op(f"layer0.{n}").kind for n in ("add_2", "ln_2")] == [OpKind.ADD, OpKind.LAYER_NORM]


def test_a_smaller_bert_and_its_sequence_rule():
    graph = build_graph("bert_base", "tokens", 2, FamilyOptions(depth=2, width=64, heads=4, vocab=100, seq_len=32))
    assert graph.op("layer1.attn").output_shape == (2, 32, 4, 16) and not graph.op("layer1.attn").attrs.causal


def test_token_type_adds_row_0_of_its_table():
    b = GraphBuilder("types", "tokens", (2, 3, 4))
    b.add_token_type("type", 2, input=None)
    op = b.build(2).op("type")
    x, table = jnp.ones((2, 3, 4)), jnp.arange(8.0).reshape(2, 4)
    np.testing.assert_array_equal(apply_op(op, {"embedding": table}, (x,)), x + table[0])
    assert (op.forward_flops, op.backward_flops) == (24, 24)


def test_a_tiny_bert_round_trips_and_runs_as_a_network():
    graph = build_graph("bert_base", "tokens", 2, FamilyOptions(depth=1, width=16, heads=2, vocab=32, seq_len=8))
    assert graph_from_json(graph_to_json(graph)).signature == graph.signature
    params = init_params(graph, seed=0)
    assert set(params["mlm.decoder"]) == {"bias"} and set(params["type"]) == {"embedding"}
    ids, labels = synthetic_batch(graph, seed=2)
    losses = module_with(graph, params)(jnp.asarray(ids), jnp.asarray(labels))
    assert losses.shape == (2, 8) and bool(jnp.isfinite(losses).all())
