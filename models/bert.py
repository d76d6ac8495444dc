"""BERT-base (Devlin et al. 2019) with its masked-LM head as an operator graph: post-norm blocks, the head's
decoder tied to the token table with its own bias, no pooler.

    python -m models bert_base --batch-size 8        # 109,514,298 parameters, sequences of 512

wte embedding -> add_position (512 learned rows) -> add_token_type (2 rows; one segment) -> layer_norm ->
dropout -> 12 x [q, k, v dense -> split_heads x 3 -> attention -> merge_heads -> dense -> dropout ->
residual add -> layer_norm -> dense 3072 -> GELU (exact) -> dense 768 -> dropout -> residual add ->
layer_norm] -> MLM head: dense 768 -> GELU -> layer_norm -> attend (tied to wte, own bias) -> token_xent
over every position (the tokens dataset labels each position with the next id; a masked-LM step would
predict 15% of the positions' own ids: the same shapes and cost).
Layer norm epsilon 1e-12 and dropout 0.1, as released.
"""

from __future__ import annotations

from models.graph import GraphBuilder, OpGraph
from models.transformer import TransformerSize, mlp, self_attention

DROPOUT_RATE = 0.1
LAYER_NORM_EPS = 1e-12
TOKEN_TYPES = 2
SIZES = {"bert_base": TransformerSize(12, 768, 12, 30522, 512)}


def bert(name: str, size: TransformerSize, dataset: str, sequence: int, batch_size: int) -> OpGraph:
    b = GraphBuilder(name, dataset, (batch_size, sequence))
    b.embedding("wte", size.vocab, size.width, input=None)
    b.add_position("pos", size.context)
    b.add_token_type("type", TOKEN_TYPES)
    b.layer_norm("emb_ln", LAYER_NORM_EPS)
    residual = b.dropout("emb_drop", DROPOUT_RATE)
    for layer in range(size.depth):
        residual = _block(b, f"layer{layer}", size, residual)
    b.dense("mlm.dense", size.width, relu=False, input=residual)
    b.activation("mlm.act", "gelu")
    b.layer_norm("mlm.ln", LAYER_NORM_EPS)
    b.attend("mlm.decoder", "wte", bias=True)
    b.token_xent("loss")
    return b.build(batch_size)


def _block(b: GraphBuilder, prefix: str, size: TransformerSize, residual: str) -> str:
    """One post-norm block; returns its output (the second layer norm)."""
    self_attention(b, prefix, residual, size.heads, causal=False)
    b.dropout(f"{prefix}.attn_drop", DROPOUT_RATE)
    b.add(f"{prefix}.add_1", inputs=[residual, f"{prefix}.attn_drop"])
    middle = b.layer_norm(f"{prefix}.ln_1", LAYER_NORM_EPS)
    mlp(b, prefix, middle, 4 * size.width, "gelu")
    b.dropout(f"{prefix}.mlp_drop", DROPOUT_RATE)
    b.add(f"{prefix}.add_2", inputs=[middle, f"{prefix}.mlp_drop"])
    return b.layer_norm(f"{prefix}.ln_2", LAYER_NORM_EPS)
