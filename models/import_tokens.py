"""The importer's token section: a token model's layers, element-wise functions, heads and attention as the
zoo's transformer kinds, matched by `TokenMatcher`, the steps that models.importer's walk hands it.

    import_model(gpt, "tokens", 8, seq_len=64)      # models.importer: [8 64] int32 ids, these patterns

Token models (dataset `tokens`: [b s] int32 ids, the loss token_xent on [b s vocab] logits) map onto the
zoo's transformer kinds (models/gpt2.py), by module boundary where the layer is a flax class:

    nnx.Embed called on the ids                                                             -> embedding
    nnx.Embed called on jnp.arange(s), or an nnx.Param [ctx d] sliced to s, added          -> add_position
    embed.attend(x): x . the embedding's table (tied: the graph's one weight, read twice)   -> attend
    nnx.Linear, nnx.LinearGeneral, nnx.Einsum as a plain (d, f) projection on [b s d]       -> dense
    x [b s d] . kernel [d h k] (+ bias [h k]), nnx.LinearGeneral to heads         -> dense to h*k, split_heads
    heads [b s h k] . kernel [h k d] (+ bias [d]), from heads                     -> merge_heads, dense from h*k
    nnx.MultiHeadAttention (self- or cross-attention: inputs_k, inputs_v another activation; mask= causal or
    none): those projections around the attention
    nnx.LayerNorm, nnx.RMSNorm (epsilon from the module)                                    -> layer_norm
    nnx.Dropout in training mode (its rate; rate 0 computes nothing, so adds no op)         -> dropout
    an element-wise function of one activation equal to gelu (tanh or erf), silu, tanh,
    relu or sigmoid (checked by evaluating it)                                              -> activation
    the product of two activations / their sum                                              -> multiply / add
    reshape [b s (h k)] -> [b s h k] / back (transposes to [b h s k] followed)       -> split / merge_heads
    q . k over head_dim, * 1/sqrt(k), a causal mask (jnp.where with a constant lower-triangular mask), a
    softmax over the keys (jax.nn.softmax or its exp / sum), . v                            -> attention

The attention's steps are followed as partial values (`_Scores`: the scale so far, the mask, how far the
softmax is), and an element-wise expression as `_Expr` until something else reads it, where it becomes the
activation it equals on a probe of 1201 points in [-6, 6] (so any way of writing GELU is GELU); an
activation op therefore sits where its value is first read. The scale may be on the scores or on q.

A dense to or from heads holds its kernel (and bias) reshaped, [d h k] as [d (h k)]: the graph's array is
a view of the module's (models.importer.Source.shapes), so a split of h*k is a split of the heads (soap/plan.py); its
DenseAttrs name the heads, so that the space splits only whole heads (models/kinds/dense.py, soap/space.py). An
nnx.MultiHeadAttention with dropout on its probabilities, normalized q and k, or fewer kv heads than heads
(grouped-query attention) is one line: SOAP's attention computes none of them.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.errors import ModelImportError, SoapError
from models.graph import GraphBuilder
from models.import_values import Draft, ParamView, Tensor, is_flax_call
from models.kinds.activation import FUNCTIONS, Activation
from models.kinds.dense import DenseAttrs
from models.op import OpKind
from models.trace import Const, Path, Step, path_str


def token_input(module: nnx.Module, model: str, dataset: str, batch_size: int,
                seq_len: int | None) -> tuple[jax.ShapeDtypeStruct, tuple, str]:
    """The [batch seq_len] int32 ids, None for the logits' shape (`token_logits` reads it from the graph),
    and the batch in words."""
    if seq_len is None or seq_len < 1:
        raise SoapError(f"{dataset} needs a sequence length (got {seq_len}); pass --seq-len (e.g. --seq-len 64), "
                        f"or seq_len= to import_model")
    if not any(isinstance(node, nnx.Embed) for _, node in nnx.iter_graph(module)):
        raise ModelImportError(f"{model} has no nnx.Embed, so it cannot read {dataset} ({batch_size}x{seq_len} int32 "
                               f"token ids); a token model reads its ids through an nnx.Embed, or pick an image "
                               f"dataset for an image model")
    ids = jax.ShapeDtypeStruct((batch_size, seq_len), jnp.int32)
    return ids, None, f"{batch_size}x{seq_len} int32 token ids ({dataset})"


def token_logits(drafts: list[Draft], model: str, ids_shape: tuple[int, int]) -> tuple[int, int, int]:
    """[batch seq_len vocab]: the vocabulary is the rows of the nnx.Embed looking up the ids."""
    lookup = next((draft for draft in drafts if draft.kind is OpKind.EMBEDDING), None)
    if lookup is None:
        raise ModelImportError(f"{model} never looks its token ids up in an nnx.Embed; call the embedding on the "
                               f"ids (self.wte(ids)) first")
    return ids_shape + (dict(lookup.settings)["vocab"],)


# What a variable of a token model's trace means, beside models.import_values' meanings.
@dataclass(frozen=True)
class _Expr:
    """An element-wise function of the output of draft `source`, computed by `steps` (in program order): an
    activation, identified by evaluating it when something other than an element-wise step reads it."""

    source: int
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class _Heads:
    """A [b s h k] heads activation (draft `draft`) transposed (axis i holds label labels[i] of b, s, h, k)
    or scaled by a constant `scale` (queries scaled before their product with the keys)."""

    draft: int
    labels: tuple[str, ...]
    scale: float = 1.0


@dataclass(frozen=True)
class _Positions:
    """The first rows of a learned position table (parameter `path`), awaiting their add to the tokens."""

    path: Path


@dataclass(frozen=True)
class _TableT:
    """A 2-d parameter transposed: an embedding's table read by a tied head (`embed.attend`)."""

    path: Path


@dataclass(frozen=True)
class _Scores:
    """Attention scores of heads drafts `operands` (the product's two sides) on their way to probabilities.

    labels: per axis "b", "h", "0" (the positions of the first side), "1" (the second's) or "g" (a unit axis).
    stage: "logits" (scaled by `scale`; masked causally with side `queries` as the queries, None unmasked),
    "max" or "sum" (a reduction over side `keys` of the value whose origin is `of`), "shifted" (logits minus
    their max), "exp", "probs". origin: the variable that computed the value (a transpose keeps it)."""

    operands: tuple[int, int]
    labels: tuple[str, ...]
    scale: float = 1.0
    queries: Literal["0", "1"] | None = None
    keys: Literal["0", "1"] | None = None
    stage: Literal["logits", "max", "sum", "shifted", "exp", "probs"] = "logits"
    of: int | None = None
    origin: int | None = None


@dataclass(frozen=True)
class _Attended:
    """Attention's output (drafts q, k, v) in a layout other than [b s h k]: labels per axis of b, s, h, k."""

    qkv: tuple[int, int, int]
    causal: bool
    labels: tuple[str, ...]


class TokenMatcher:
    """The token model's handlers of models.importer's matcher (its base class): layers by their module
    boundary, steps by primitive. They read and write the matcher's state (`values`, `drafts`, `tables`)
    through its helpers (`_fail`, `_new`, `_arg`, `_read_param`, ...)."""

    def _require_attention_modules(self) -> None:
        """Each nnx.MultiHeadAttention called computes what its graph ops do (`_token_dot_general`: its
        projections; the attention kind: the core): no normalized q and k, as many kv heads as heads, and no
        dropout on the probabilities (one line each)."""
        for scope, module in self.trace.modules.items():
            if not isinstance(module, nnx.MultiHeadAttention):
                continue
            inside = [step for step in self.trace.steps if f"{step.scope}.".startswith(f"{scope}.")]
            if not inside:
                continue
            first = replace(inside[0], scope=scope)
            if module.normalize_qk:
                self._fail(first, "is an nnx.MultiHeadAttention with normalize_qk=True, where SOAP's attention "
                                  "normalizes neither q nor k; pass normalize_qk=False")
            if module.num_kv_heads != module.num_heads:
                self._fail(first, f"is an nnx.MultiHeadAttention with num_kv_heads={module.num_kv_heads} for "
                                  f"num_heads={module.num_heads} (grouped-query attention), where SOAP's attention "
                                  f"reads as many key and value heads as query heads; pass num_kv_heads="
                                  f"{module.num_heads}")
            if any(step.scope == scope and step.primitive.startswith("random") for step in inside):
                self._fail(first, f"is an nnx.MultiHeadAttention with dropout_rate={module.dropout_rate} in training "
                                  f"mode, which drops attention probabilities, where SOAP's attention drops none; "
                                  f"pass dropout_rate=0 (an nnx.Dropout on its output drops activations instead)")

    def _fuse_heads_bias(self, step: Step, product, bias) -> None:
        """An [h k] bias added to the heads a dense to h*k made (`_heads_projection`): that dense's bias."""
        view = self._arg(bias)
        split = self._fusable(product, (OpKind.SPLIT_HEADS,))
        index = split.inputs[0] if split is not None else None
        dense = self.drafts[index] if index is not None else None
        if (dense is None or dense.kind is not OpKind.DENSE or dense.output != product or len(dense.params) != 1
                or self._param_shape(view) != split.shape[-2:]):
            self._fail(step, f"adds {self._describe(bias)} other than as the bias of a projection to heads")
        graph_shape = (math.prod(split.shape[-2:]),)
        self.drafts[index] = replace(dense, output=step.outputs[0], params=dense.params + (
            ("bias", self._read_param(step, view)),), views=dense.views + (("bias", self._param_shape(view),
                                                                              graph_shape),))
        self._fuse(step, product, split)

    # Token models: layers taken by their module boundary.

    def _token_layer(self, steps: tuple[Step, ...]) -> None:
        """One call of an nnx.Embed, LayerNorm, RMSNorm or Dropout (flax's own __call__)."""
        first = steps[0]
        module = self.trace.modules[first.scope]
        produced = {output for step in steps for output in step.outputs}
        reads = list(dict.fromkeys(atom for step in steps for atom in step.inputs
                                   if isinstance(atom, int) and atom not in produced))
        for atom in reads:
            self._settle(atom)
        internal = Counter(atom for step in steps for atom in step.inputs if isinstance(atom, int) and atom in produced)
        outputs = [atom for atom in sorted(produced) if self.trace.uses[atom] > internal[atom]]
        tensors = [self.values[atom] for atom in reads if isinstance(self.values[atom], Tensor)]
        views = {self.values[atom].path for atom in reads if isinstance(self.values[atom], ParamView)}
        if len(outputs) != 1:
            self._fail(first, f"returns {len(outputs)} arrays the model reads, where SOAP takes one")
        step = replace(first, outputs=(outputs[0],))
        if isinstance(module, nnx.Embed):
            return self._embed(step, steps, tensors, views)
        if isinstance(module, nnx.Dropout):
            return self._dropout(step, module, tensors, views)
        self._layer_norm(step, module, tensors, views)

    def _embed(self, step: Step, steps: tuple[Step, ...], tensors: list, views: set) -> None:
        path = self._own_variable(step.scope, "embedding")
        rows, width = self._param_shape(self.values[self.leaf_numbers[path]])
        if views != {path}:
            self._fail(step, "is an nnx.Embed reading other parameters than its own table")
        if tensors == [Tensor(None)]:  # the ids
            self._new(step, OpKind.EMBEDDING, (None,), params=(("embedding", self._read_table(step, path)),),
                      settings=(("vocab", rows), ("width", width)))
            return
        lookups = [lookup.inputs[1] for lookup in steps if lookup.primitive == "gather"]
        ids = lookups[0].value if len(lookups) == 1 and isinstance(lookups[0], Const) else None
        shape = self._shape(step.outputs[0])  # [s d], or [1 s d] for jnp.arange(s)[None]
        if (tensors or len(shape) not in (2, 3) or set(shape[:-2]) - {1} or ids is None
                or not np.array_equal(ids.reshape(-1), np.arange(shape[-2]))):
            self._fail(step, "looks up other ids than the token ids or the positions jnp.arange(s)")
        self._alias(step, _Positions(path))

    def _read_table(self, step: Step, path: Path) -> Path:
        self.tables[path] = len(self.drafts)  # the embedding draft about to be added owns the table
        return self._read_param(step, self.values[self.leaf_numbers[path]])

    def _dropout(self, step: Step, module: nnx.Dropout, tensors: list, views: set) -> None:
        if len(tensors) != 1 or views or tensors[0].draft is None:
            self._fail(step, "is a dropout reading other than one activation")
        if tuple(module.broadcast_dims) != ():
            self._fail(step, f"is a dropout with broadcast_dims={tuple(module.broadcast_dims)}, where SOAP's "
                             f"dropout draws every element (broadcast_dims=())")
        self._new(step, OpKind.DROPOUT, (tensors[0].draft,), settings=(("rate", float(module.rate)),))

    def _layer_norm(self, step: Step, module, tensors: list, views: set) -> None:
        rms = isinstance(module, nnx.RMSNorm)
        expected = {"use_scale": True, "reduction_axes": -1, "feature_axes": -1, "axis_name": None}
        if not rms:
            expected |= {"use_bias": True, "use_fast_variance": True}
        for name, value in expected.items():
            actual = getattr(module, name, value)
            if actual != value and not (isinstance(actual, tuple) and actual == (value,)):
                self._fail(step, f"is a {type(module).__name__} with {name}={actual!r}, where SOAP's layer_norm "
                                 f"computes {name}={value!r} (flax's default)")
        names = ("scale",) if rms else ("scale", "bias")
        paths = tuple(self._own_variable(step.scope, name) for name in names)
        if len(tensors) != 1 or tensors[0].draft is None or views != set(paths):
            self._fail(step, "is a layer norm reading other than one activation and its own parameters")
        params = tuple((name, self._read_param(step, self.values[self.leaf_numbers[path]]))
                       for name, path in zip(names, paths))
        self._new(step, OpKind.LAYER_NORM, (tensors[0].draft,), params=params,
                  settings=(("eps", float(module.epsilon)), ("rms", rms)))

    # Token models: steps by primitive (element-wise functions, projections, heads, attention, positions).

    def _token_step(self, step: Step) -> bool:
        """Takes `step` where it belongs to a token pattern; False leaves it to the `_on_` handlers."""
        values = self._args(step)
        if any(isinstance(value, (_Scores, _Attended)) for value in values):
            self._scores_step(step, values)
            return True
        if self._extend_expr(step, values):
            return True
        for atom in step.inputs:
            if step.primitive == "dot_general":
                self._scaled_heads(atom)
            self._settle(atom)
        values = self._args(step)
        handler = getattr(self, "_token_" + step.primitive, None)
        return handler is not None and handler(step, values) is not False

    def _token_source(self, value) -> int | None:
        """The draft an element-wise function of `value` is a function of (a token activation's or an
        expression's source), else None."""
        if isinstance(value, _Expr):
            return value.source
        if isinstance(value, Tensor) and value.draft is not None:
            return value.draft
        return None

    def _extend_expr(self, step: Step, values: tuple) -> bool:
        """An element-wise step of one activation (and scalar constants) extends its expression."""
        if step.primitive not in _ELEMENTWISE or len(step.outputs) != 1:
            return False
        sources = {self._token_source(value) for value in values if not isinstance(value, Const)}
        if len(sources) != 1 or None in sources or any(_constant(value) is None for value in values
                                                       if isinstance(value, Const)):
            return False
        (source,) = sources
        if self._shape(step.outputs[0]) != self.drafts[source].shape:
            return False
        earlier = [step for value in values if isinstance(value, _Expr) for step in value.steps]
        self._alias(step, _Expr(source, tuple(dict.fromkeys(earlier)) + (step,)))
        return True

    def _settle(self, atom) -> None:
        """An expression read by a step of another kind becomes the activation op it computes (or its
        source, where it is the identity); one line where it is no activation SOAP has."""
        value = self.values.get(atom) if isinstance(atom, int) else None
        if not isinstance(value, _Expr):
            return
        (last,) = (step for step in value.steps if atom in step.outputs)
        fn = _identify(_evaluate(value, atom))
        if fn is None:
            self._fail(last, "computes an element-wise function of an activation that is none of "
                             f"{', '.join(a.value for a in Activation)} (checked by evaluating it)")
        if fn == "identity":
            self.values[atom] = Tensor(value.source)
            return
        self._new(replace(last, outputs=(atom,)), OpKind.ACTIVATION, (value.source,), settings=(("fn", fn),))

    def _token_tensor(self, value, rank: int | None = None) -> bool:
        return (isinstance(value, Tensor) and value.draft is not None
                and (rank is None or len(self.drafts[value.draft].shape) == rank))

    def _token_mul(self, step: Step, values: tuple) -> bool:
        a, b = values
        if not (self._token_tensor(a) and self._token_tensor(b)) or self._shape(step.inputs[0]) != self._shape(
                step.inputs[1]):
            self._fail(step, f"multiplies {self._describe(step.inputs[0])} and {self._describe(step.inputs[1])} "
                             f"(only two activations of one shape are multiplied)")
        self._new(step, OpKind.MULTIPLY, (a.draft, b.draft), settings=())
        return True

    def _token_add(self, step: Step, values: tuple) -> bool:
        """x + a learned position table's first s rows -> add_position; other adds: `_on_add`."""
        if not any(isinstance(value, _Positions) for value in values):
            return False
        table, x = values if isinstance(values[0], _Positions) else values[::-1]
        view = self.values[self.leaf_numbers[table.path]]
        positions, width = self._param_shape(view)
        shape = self._shape(step.outputs[0])
        if not self._token_tensor(x, rank=3) or shape[2] != width:
            self._fail(step, f"adds the position table '{path_str(table.path)}' to other than the [b s d] tokens")
        if shape[1] > positions:
            self._fail(step, f"adds positions for {shape[1]} tokens from '{path_str(table.path)}', a table of "
                             f"{positions} positions (the model's context); use --seq-len {positions} or less")
        self._new(step, OpKind.ADD_POSITION, (x.draft,), params=(("embedding", self._read_param(step, view)),),
                  settings=(("positions", positions),))
        return True

    def _position_rows(self, step: Step, value) -> _Positions | None:
        """A position table's rows, from the table itself (a 2-d parameter not read yet) or from rows of it."""
        if isinstance(value, _Positions):
            return value
        if isinstance(value, ParamView) and value.raw and len(self._param_shape(value)) == 2:
            return _Positions(value.path)
        return None

    def _token_slice(self, step: Step, values: tuple) -> bool:
        table = self._position_rows(step, values[0])
        params = step.params
        if table is None or tuple(params["start_indices"]) != (0, 0) or params["strides"] not in (None, (1, 1)) or (
                params["limit_indices"][1] != self._shape(step.inputs[0])[1]):
            return False
        self._alias(step, table)
        return True

    def _token_broadcast_in_dim(self, step: Step, values: tuple) -> bool:
        """A position table's rows broadcast over the samples ([s d] or [1 s d] -> [b s d])."""
        if self._heads_labels(values[0]) is not None and len(self._shape(step.outputs[0])) == 5:
            self._fail_grouped_query(step)
        table = self._position_rows(step, values[0])
        old, new = self._shape(step.inputs[0]), self._shape(step.outputs[0])
        if table is None or tuple(new[-2:]) != tuple(old[-2:]) or set(old[:-2]) - {1} or tuple(
                step.params["broadcast_dimensions"])[-2:] != (len(new) - 2, len(new) - 1):
            return False
        self._alias(step, table)
        return True

    def _token_reshape(self, step: Step, values: tuple) -> bool:
        """[b s (h k)] -> [b s h k]: split_heads; back: merge_heads; a position table given a leading 1."""
        (value,) = values
        old, new = self._shape(step.inputs[0]), self._shape(step.outputs[0])
        table = self._position_rows(step, value)
        if table is not None and new == (1,) + old:
            self._alias(step, table)
            return True
        if self._token_tensor(value, rank=3) and len(new) == 4 and new[:2] == old[:2] and new[2] * new[3] == old[2]:
            self._new(step, OpKind.SPLIT_HEADS, (value.draft,), settings=(("heads", new[2]),))
            return True
        if self._token_tensor(value, rank=4) and new == old[:2] + (old[2] * old[3],):
            self._new(step, OpKind.MERGE_HEADS, (value.draft,), settings=())
            return True
        heads = self._heads_labels(value)
        if heads is not None and len(new) == 5 and new[2] * new[3] == old[2] and new[3] > 1:
            self._fail_grouped_query(step)  # jax.nn.dot_product_attention's queries grouped over fewer kv heads
        labels = _unit_axes(heads.labels, old, new) if heads is not None else None
        if labels is not None:
            self._alias(step, Tensor(heads.draft) if labels == _HEADS and heads.scale == 1 else
                        replace(heads, labels=labels))
            return True
        if isinstance(value, _Heads):
            self._fail(step, f"reshapes heads laid out as [{' '.join(value.labels)}] to {new}; transpose them back "
                             f"to [b s h k] first")
        return False

    def _token_reduce_max(self, step: Step, values: tuple) -> bool:
        self._fail_token_reduction(step, "the maximum", "a standalone jax.nn.softmax or a max")

    def _token_reduce_sum(self, step: Step, values: tuple) -> bool:
        self._fail_token_reduction(step, "the sum", "a mean or a sum")

    def _fail_token_reduction(self, step: Step, what: str, which: str) -> None:
        """A reduction of a token activation outside attention: no kind of a token model computes one."""
        axes = tuple(int(axis) for axis in step.params["axes"])
        self._fail(step, f"takes {what} of {self._describe(step.inputs[0])} over axes {axes} ({which} outside "
                         f"attention), which no op of SOAP's token models computes; keep [b s d] activations to the "
                         f"[b s vocab] logits (a softmax inside attention is taken)")

    def _fail_grouped_query(self, step: Step) -> None:
        self._fail(step, "repeats or groups heads for grouped-query attention (fewer key and value heads than query "
                         "heads), where SOAP's attention reads as many key and value heads as query heads; project k "
                         "and v to as many heads as q")

    def _heads_labels(self, value) -> _Heads | None:
        """A heads activation, transposed or scaled or neither, as _Heads."""
        if isinstance(value, _Heads):
            return value
        if self._token_tensor(value, rank=4):
            return _Heads(value.draft, _HEADS)
        return None

    def _scaled_heads(self, atom) -> None:
        """A heads activation times a constant, read by a product: kept as scaled heads (not an activation)."""
        value = self.values.get(atom) if isinstance(atom, int) else None
        if isinstance(value, _Expr) and len(self.drafts[value.source].shape) == 4:
            factor = _linear_factor(_evaluate(value, atom))
            if factor is not None:
                self.values[atom] = _Heads(value.source, _HEADS, factor)

    def _token_transpose(self, step: Step, values: tuple) -> bool:
        (value,) = values
        permutation = tuple(step.params["permutation"])
        if isinstance(value, ParamView) and value.raw and permutation == (1, 0):
            self._alias(step, _TableT(value.path))
            return True
        heads = self._heads_labels(value)
        if heads is None:
            return False
        labels = tuple(heads.labels[axis] for axis in permutation)
        self._alias(step, Tensor(heads.draft) if labels == _HEADS and heads.scale == 1 else
                    replace(heads, labels=labels))
        return True

    def _token_dot_general(self, step: Step, values: tuple) -> bool:
        """x [b s d] . kernel [d f] -> dense; x . an embedding's table [v d] -> attend; heads . heads -> scores."""
        left, right = self._heads_labels(values[0]), self._heads_labels(values[1])
        if left is not None and right is not None:
            return self._scores_product(step, left, right)
        x, kernel = values
        numbers = step.params["dimension_numbers"]
        if self._heads_projection(step, x, kernel, numbers):
            return True
        if not self._token_tensor(x, rank=3) or numbers[1] != ((), ()):
            self._fail(step, f"multiplies {self._describe(step.inputs[0])} by {self._describe(step.inputs[1])} "
                             f"(on tokens SOAP takes x [b s d] . kernel [d f] and the products of attention)")
        table = kernel.path if isinstance(kernel, _TableT) and numbers[0] == ((2,), (0,)) else (
            kernel.path if isinstance(kernel, ParamView) and kernel.raw and numbers[0] == ((2,), (1,)) else None)
        if table is not None:
            if table not in self.tables:
                self._fail(step, f"multiplies by parameter '{path_str(table)}' transposed, which is no embedding "
                                 f"table looked up before (a tied head reads its nnx.Embed: embed.attend(x))")
            self._new(step, OpKind.ATTEND, (x.draft,), settings=(("table", self.tables[table]),))
            return True
        if not isinstance(kernel, ParamView) or not kernel.raw or len(self._shape(step.inputs[1])) != 2 or (
                numbers[0] != ((2,), (0,))):
            self._fail(step, f"multiplies the tokens by {self._describe(step.inputs[1])}, which is no (d, f) "
                             f"kernel parameter (nnx.Linear, or nnx.LinearGeneral / nnx.Einsum as a plain projection)")
        self._new(step, OpKind.DENSE, (x.draft,), params=(("kernel", self._read_param(step, kernel)),), settings=())
        return True

    def _heads_projection(self, step: Step, x, kernel, numbers) -> bool:
        """x [b s d] . kernel [d h k] -> a dense to h*k, then split_heads; heads [b s h k] . kernel [h k d]
        -> merge_heads, then a dense from h*k (nnx.LinearGeneral to or from heads, as nnx.MultiHeadAttention
        projects): the dense holds the kernel reshaped, its split of h*k a split of the heads."""
        if not isinstance(kernel, ParamView) or not kernel.raw or len(self._param_shape(kernel)) != 3:
            return False
        shape = self._param_shape(kernel)
        output = step.outputs[0]
        if self._token_tensor(x, rank=3) and numbers == (((2,), (0,)), ((), ())):
            d, h, k = shape
            b, s = self._shape(output)[:2]
            self._add_draft(step, Draft(OpKind.DENSE, (x.draft,), output, (b, s, h * k), step.scope, step.where,
                                        params=(("kernel", self._read_param(step, kernel)),),
                                        views=(("kernel", shape, (d, h * k)),), settings=(),
                                        attrs=DenseAttrs("hidden", h)))
            self._add_draft(step, Draft(OpKind.SPLIT_HEADS, (len(self.drafts) - 1,), output, (b, s, h, k),
                                        step.scope, step.where, settings=(("heads", h),)))
            return True
        if self._token_tensor(x, rank=4) and numbers == (((2, 3), (0, 1)), ((), ())):
            h, k, d = shape
            b, s = self._shape(output)[:2]
            self._add_draft(step, Draft(OpKind.MERGE_HEADS, (x.draft,), output, (b, s, h * k), step.scope,
                                        step.where, settings=()))
            self._add_draft(step, Draft(OpKind.DENSE, (len(self.drafts) - 1,), output, (b, s, d), step.scope,
                                        step.where, params=(("kernel", self._read_param(step, kernel)),),
                                        views=(("kernel", shape, (h * k, d)),), settings=(),
                                        attrs=DenseAttrs("in_hidden", h)))
            return True
        return False

    def _scores_product(self, step: Step, left, right) -> bool:
        """q . k over head_dim, batched over samples and heads: the attention scores."""
        (lc, rc), (lb, rb) = step.params["dimension_numbers"]
        batch = tuple(left.labels[axis] for axis in lb)
        if (len(lc) != 1 or left.labels[lc[0]] != "k" or right.labels[rc[0]] != "k" or set(batch) != {"b", "h"}
                or batch != tuple(right.labels[axis] for axis in rb)):
            self._fail(step, "multiplies two heads activations other than q . k over head_dim (batched over "
                             "samples and heads)")
        sides = _free_labels(left.labels, lc + lb, {"s": "0"}) + _free_labels(right.labels, rc + rb, {"s": "1"})
        self._alias(step, _Scores((left.draft, right.draft), batch + sides, scale=left.scale * right.scale,
                                  origin=step.outputs[0]))
        return True

    def _scores_step(self, step: Step, values: tuple) -> None:
        """One step from the scores to the attention's output: scale, causal mask, softmax, . v."""
        primitive = step.primitive
        scores = [value for value in values if isinstance(value, (_Scores, _Attended))]
        consts = [value for value in values if isinstance(value, Const)]
        first = scores[0]
        if isinstance(first, _Attended):
            if primitive == "transpose":
                return self._attended(step, first, tuple(first.labels[a] for a in step.params["permutation"]))
            labels = _unit_axes(first.labels, self._shape(step.inputs[0]), self._shape(step.outputs[0]))
            if primitive == "reshape" and labels is not None:
                return self._attended(step, first, labels)
            self._fail(step, f"computes '{primitive}' on the attention's output laid out as [{' '.join(first.labels)}]"
                             f" (transpose it to [b s h k] before anything else)")
        if primitive in ("convert_element_type", "stop_gradient", "copy", "copy_p") or (
                primitive in ("reshape", "broadcast_in_dim") and first.stage in ("max", "sum")):  # keepdims
            return self._alias(step, first)
        if primitive == "dot_general":
            return self._attention_output(step, values)
        if primitive == "transpose":  # a reduction's layout is not followed: only its origin and axis matter
            return self._alias(step, replace(first, labels=tuple(first.labels[a] for a in step.params["permutation"])))
        scalar = _constant(consts[0]) if len(consts) == 1 else None
        new = None
        if first.stage == "logits" and primitive == "mul" and scalar:
            new = replace(first, scale=first.scale * scalar)
        elif first.stage == "logits" and primitive == "div" and scalar and isinstance(values[0], _Scores):
            new = replace(first, scale=first.scale / scalar)
        elif first.stage == "logits" and primitive == "select_n" and first.queries is None:
            new = self._masked(step, first)
        elif first.stage == "logits" and primitive == "reduce_max":
            new = replace(first, stage="max", keys=self._reduced_side(step, first), of=first.origin)
        elif first.stage == "max" and primitive == "max" and scalar == -np.inf:
            new = first
        elif primitive == "sub" and len(scores) == 2 and scores[0].stage == "logits" and scores[1].stage == "max" \
                and scores[1].of == scores[0].origin:
            new = replace(scores[0], stage="shifted", keys=scores[1].keys)
        elif primitive == "exp" and first.stage in ("logits", "shifted"):
            new = replace(first, stage="exp", of=None)
        elif first.stage == "exp" and primitive == "reduce_sum":
            keys = self._reduced_side(step, first)
            if first.keys not in (None, keys):
                self._fail(step, "sums the softmax over another axis than its max")
            new = replace(first, stage="sum", keys=keys, of=first.origin)
        elif primitive == "div" and len(scores) == 2 and scores[0].stage == "exp" and scores[1].stage == "sum" \
                and scores[1].of == scores[0].origin:
            new = replace(scores[0], stage="probs", keys=scores[1].keys)
        if new is None:
            self._fail(step, f"computes '{primitive}' on attention scores; SOAP takes q . k, a constant scale, a "
                             f"causal jnp.where mask, a softmax over the keys, then . v")
        self._alias(step, replace(new, origin=step.outputs[0]))

    def _reduced_side(self, step: Step, scores: _Scores) -> str:
        axes = tuple(step.params["axes"])
        side = scores.labels[axes[0]] if len(axes) == 1 else None
        if side not in ("0", "1"):
            self._fail(step, f"reduces the attention scores over axes {axes}, where a softmax runs over the keys")
        return side

    def _masked(self, step: Step, scores: _Scores) -> _Scores:
        """jnp.where(mask, scores, very negative): a causal mask (lower-triangular, either side the queries)."""
        pred, on_false, on_true = (self._arg(atom) for atom in step.inputs)
        fill = on_false if isinstance(on_true, _Scores) else on_true
        if not isinstance(pred, Const) or pred.value is None or (_constant(fill) or 0) > -1e9:
            self._fail(step, "selects from the attention scores other than with a constant mask and a very negative "
                             "fill (jnp.where(mask, scores, jnp.finfo(jnp.float32).min))")
        kept = np.broadcast_to(pred.value if pred.value.dtype == bool else pred.value != 0, self._shape(step.outputs[0]))
        sides = {scores.labels.index("0"), scores.labels.index("1")}
        kept = kept[tuple(slice(None) if axis in sides or kept.strides[axis] else slice(0, 1)  # broadcast: once
                          for axis in range(kept.ndim))]
        kept = kept if isinstance(on_true, _Scores) else ~kept
        rows, columns = (self._side_positions(scores, side, kept.ndim) for side in ("0", "1"))
        if np.array_equal(kept, np.broadcast_to(rows >= columns, kept.shape)):
            return replace(scores, queries="0")
        if np.array_equal(kept, np.broadcast_to(columns >= rows, kept.shape)):
            return replace(scores, queries="1")
        self._fail(step, "masks the attention scores with a mask other than the causal one (query i sees keys up "
                         "to i)")

    def _side_positions(self, scores: _Scores, side: str, rank: int) -> np.ndarray:
        axis = scores.labels.index(side)
        length = self.drafts[scores.operands[int(side)]].shape[1]
        return np.arange(length).reshape((length,) + (1,) * (rank - axis - 1))

    def _attention_output(self, step: Step, values: tuple) -> None:
        """probabilities . v over the keys, batched over samples and heads."""
        probs_left = isinstance(values[0], _Scores)
        probs, v = values if probs_left else values[::-1]
        heads = self._heads_labels(v)
        (lc, rc), (lb, rb) = step.params["dimension_numbers"]
        (pc, vc), (pb, vb) = ((lc, rc), (lb, rb)) if probs_left else ((rc, lc), (rb, lb))
        if (probs.stage != "probs" or heads is None or heads.scale != 1 or len(pc) != 1
                or probs.labels[pc[0]] != probs.keys or heads.labels[vc[0]] != "s"
                or tuple(probs.labels[a] for a in pb) != tuple(heads.labels[a] for a in vb)):
            self._fail(step, "multiplies the attention scores by other than v over the keys (after the softmax)")
        if probs.queries not in (None, "1" if probs.keys == "0" else "0"):
            self._fail(step, "attends with a causal mask whose queries are the softmax's keys")
        query = "1" if probs.keys == "0" else "0"
        q, k = probs.operands[int(query)], probs.operands[int(probs.keys)]
        head_dim = self.drafts[q].shape[-1]
        if not np.isclose(probs.scale, 1 / math.sqrt(head_dim), rtol=1e-5):
            self._fail(step, f"scales the attention scores by {probs.scale:.6g}, where SOAP's attention scales by "
                             f"1/sqrt(head_dim) = {1 / math.sqrt(head_dim):.6g}")
        batch = tuple(probs.labels[a] for a in pb)
        probs_free = _free_labels(probs.labels, pc + pb, {query: "s"})
        v_free = _free_labels(heads.labels, vc + vb, {})
        if set(batch) != {"b", "h"} or set(probs_free) - {"g"} != {"s"} or set(v_free) - {"g"} != {"k"}:
            self._fail(step, "multiplies the attention scores by v with other axes than samples, heads, queries "
                             "and head_dim")
        free = probs_free + v_free if probs_left else v_free + probs_free
        self._attended(step, _Attended((q, k, heads.draft), probs.queries is not None, batch + free), batch + free)

    def _attended(self, step: Step, attended: _Attended, labels: tuple[str, ...]) -> None:
        if labels != _HEADS:
            return self._alias(step, replace(attended, labels=labels))
        self._new(step, OpKind.ATTENTION, attended.qkv, settings=(("causal", attended.causal),))


# Token models: what the matcher reads as a layer, an activation, a heads layout.

_HEADS = ("b", "s", "h", "k")  # split_heads' layout: samples, sequence, heads, head_dim
_TOKEN_LAYERS = (nnx.Embed, nnx.LayerNorm, nnx.RMSNorm, nnx.Dropout)
_ELEMENTWISE = {  # the element-wise primitives an activation is written with, as functions of arrays
    "add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply, "div": jnp.divide, "neg": jnp.negative,
    "max": jnp.maximum, "min": jnp.minimum, "pow": jnp.power, "exp": jnp.exp, "exp2": jnp.exp2, "log": jnp.log,
    "log1p": jnp.log1p, "expm1": jnp.expm1, "tanh": jnp.tanh, "logistic": jax.nn.sigmoid,
    "erf": jax.scipy.special.erf, "erfc": jax.scipy.special.erfc, "sqrt": jnp.sqrt, "rsqrt": jax.lax.rsqrt,
    "square": jnp.square, "abs": jnp.abs, "sign": jnp.sign, "integer_pow": None, "convert_element_type": None,
}
_PROBE = np.linspace(-6, 6, 1201, dtype=np.float32)  # where an expression is compared with the activations


def is_token_layer(module) -> bool:
    """An nnx.Embed, LayerNorm, RMSNorm or Dropout computing flax's own __call__."""
    return any(is_flax_call(module, cls) for cls in _TOKEN_LAYERS)


def _linear_factor(values: np.ndarray) -> float | None:
    """c where `values` is c times `_PROBE` (c not 0), else None."""
    factor = float(values @ _PROBE / (_PROBE @ _PROBE))
    return factor if factor and np.allclose(values, factor * _PROBE, rtol=1e-6, atol=1e-6 * abs(factor)) else None


def _free_labels(labels: tuple[str, ...], used: tuple[int, ...], renamed: dict[str, str]) -> tuple[str, ...]:
    """The labels of a product's operand on the axes neither contracted nor batched (`used`), in order, as the
    product's output lays them out; `renamed` gives some a new name (a side's positions)."""
    return tuple(renamed.get(label, label) for axis, label in enumerate(labels) if axis not in used)


def _unit_axes(labels: tuple[str, ...], old: tuple[int, ...], new: tuple[int, ...]) -> tuple[str, ...] | None:
    """The labels after a reshape from `old` to `new` that inserts a unit axis ("g": a group of one query
    head per key head, as jax.nn.dot_product_attention lays its queries out) or removes one; else None."""
    if len(new) == len(old) + 1:
        return next((labels[:i] + ("g",) + labels[i:] for i in range(len(new))
                     if new[i] == 1 and new[:i] + new[i + 1:] == old), None)
    if len(new) == len(old) - 1:
        return next((labels[:i] + labels[i + 1:] for i in range(len(old))
                     if labels[i] == "g" and old[:i] + old[i + 1:] == new), None)
    return None


def _constant(value) -> float | None:
    """The one value of a constant holding a single value (a scalar, or one broadcast), else None."""
    if not isinstance(value, Const) or value.value is None or value.value.size == 0:
        return None
    array = value.value
    array = array[tuple(0 if stride == 0 else slice(None) for stride in array.strides)]  # a broadcast: once
    first = array.reshape(-1)[0]
    return float(first) if np.all(array == first) else None


def _evaluate(expr: _Expr, atom: int) -> np.ndarray:
    """What expression `expr` computes at variable `atom`, its source being `_PROBE`."""
    computed: dict[int, jax.Array] = {}
    for step in expr.steps:
        args = [computed.get(arg, _PROBE) if isinstance(arg, int) else _constant(arg) for arg in step.inputs]
        if step.primitive == "integer_pow":
            result = args[0] ** step.params["y"]
        elif step.primitive == "convert_element_type":
            result = args[0]
        else:
            result = _ELEMENTWISE[step.primitive](*args)
        computed[step.outputs[0]] = jnp.asarray(result, jnp.float32) * jnp.ones_like(_PROBE)
    return np.asarray(computed[atom])


def _identify(values: np.ndarray) -> Activation | str | None:
    """The activation that gives `values` on `_PROBE` ("identity" where it is the probe itself), else None."""
    if np.allclose(values, _PROBE, rtol=1e-6, atol=1e-7):
        return "identity"
    return next((fn for fn in Activation if np.allclose(values, np.asarray(FUNCTIONS[fn](_PROBE)), rtol=1e-5,
                                                         atol=1e-6)), None)


def add_token_op(builder: GraphBuilder, draft: Draft, name: str, sources: list[str | None], names: list[str]) -> None:
    """A token model's op (`draft.settings` are its builder's keywords)."""
    settings, kind, source = dict(draft.settings), draft.kind, sources[0]
    if kind is OpKind.EMBEDDING:
        builder.embedding(name, settings["vocab"], settings["width"], input=None)
    elif kind is OpKind.ADD_POSITION:
        builder.add_position(name, settings["positions"], input=source)
    elif kind is OpKind.DENSE:
        builder.dense(name, draft.shape[-1], relu=False, bias=len(draft.params) > 1, heads=draft.attrs, input=source)
    elif kind is OpKind.LAYER_NORM:
        builder.layer_norm(name, settings["eps"], settings["rms"], input=source)
    elif kind is OpKind.DROPOUT:
        builder.dropout(name, settings["rate"], input=source)
    elif kind is OpKind.ACTIVATION:
        builder.activation(name, settings["fn"], input=source)
    elif kind is OpKind.MULTIPLY:
        builder.multiply(name, inputs=sources)
    elif kind is OpKind.SPLIT_HEADS:
        builder.split_heads(name, settings["heads"], input=source)
    elif kind is OpKind.MERGE_HEADS:
        builder.merge_heads(name, input=source)
    elif kind is OpKind.ATTENTION:
        builder.attention(name, inputs=sources, causal=settings["causal"])
    else:
        assert kind is OpKind.ATTEND, kind
        builder.attend(name, names[settings["table"]], input=source)
