"""A GPT written as a user writes it in flax nnx (the importer's token fixture): learned positions, pre-norm
blocks with hand-written causal attention (einsum, 1/sqrt(k), jnp.tril mask, jax.nn.softmax, einsum), a GELU
MLP, dropout and a head tied to the token embedding; the layers mirror models/gpt2.py one for one.

    python -m search.optimize --model tests/models/user_gpt.py:tiny_gpt --dataset tokens --seq-len 64 --gpus 2 \
        --batch-size 8
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx


class Block(nnx.Module):
    def __init__(self, width: int, heads: int, rate: float, rngs: nnx.Rngs):
        self.heads = heads
        self.ln_1 = nnx.LayerNorm(width, epsilon=1e-5, rngs=rngs)
        self.q = nnx.Linear(width, width, rngs=rngs)
        self.k = nnx.Linear(width, width, rngs=rngs)
        self.v = nnx.Linear(width, width, rngs=rngs)
        self.attn_proj = nnx.Linear(width, width, rngs=rngs)
        self.attn_drop = nnx.Dropout(rate, rngs=rngs)
        self.ln_2 = nnx.LayerNorm(width, epsilon=1e-5, rngs=rngs)
        self.fc = nnx.Linear(width, 4 * width, rngs=rngs)
        self.mlp_proj = nnx.Linear(4 * width, width, rngs=rngs)
        self.mlp_drop = nnx.Dropout(rate, rngs=rngs)

    def attention(self, x):
        batch, sequence, width = x.shape
        head_dim = width // self.heads
        q, k, v = (layer(x).reshape(batch, sequence, self.heads, head_dim) for layer in (self.q, self.k, self.v))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_dim)
        causal = jnp.tril(jnp.ones((sequence, sequence), dtype=bool))
        scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
        return self.attn_proj(out.reshape(batch, sequence, width))

    def __call__(self, x):
        x = x + self.attn_drop(self.attention(self.ln_1(x)))
        return x + self.mlp_drop(self.mlp_proj(jax.nn.gelu(self.fc(self.ln_2(x)), approximate=True)))


class GPT(nnx.Module):
    def __init__(self, vocab: int, context: int, width: int, heads: int, depth: int, rate: float, rngs: nnx.Rngs):
        self.wte = nnx.Embed(vocab, width, rngs=rngs)
        self.wpe = nnx.Embed(context, width, rngs=rngs)
        self.drop = nnx.Dropout(rate, rngs=rngs)
        self.h = nnx.List([Block(width, heads, rate, rngs) for _ in range(depth)])
        self.ln_f = nnx.LayerNorm(width, epsilon=1e-5, rngs=rngs)

    def __call__(self, ids):
        x = self.drop(self.wte(ids) + self.wpe(jnp.arange(ids.shape[1])))
        for block in self.h:
            x = block(x)
        return self.wte.attend(self.ln_f(x))


def tiny_gpt(rngs: nnx.Rngs) -> GPT:
    """Vocabulary 64, context 64, width 32, 4 heads, 2 layers, no dropout."""
    return GPT(64, 64, 32, 4, 2, 0.0, rngs)
