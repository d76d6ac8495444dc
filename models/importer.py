"""A user's flax nnx module imported as the operator graph the zoo builds, with the module's own parameters.

    module = load_user_model("path/to/file.py:NAME")        # models.user_model (or any nnx.Module)
    imported = import_model(module, "tiny-imagenet", 128)
    imported = import_model(gpt, "tokens", 8, seq_len=64)     # a token model: [8 64] int32 ids
    imported.graph                                           # an OpGraph ending with the softmax_xent loss
    imported.params, imported.state                          # op name -> {name: array}, as models.network
    module_with(imported.graph, imported.params)             # the graph's network on the module's parameters
    imported.module_paths(grads)                             # per-op values keyed by the module's nnx paths

An abstract module (`nnx.eval_shape(lambda: Model(rngs=nnx.Rngs(0)))`) imports as well, its arrays then
jax.ShapeDtypeStruct: enough for the graph, the search and the simulator.

How: models.trace turns `module(images)` (training mode) into live primitive steps, each knowing the
innermost module call computing it. The importer walks them in order, giving every variable a meaning:
the images, an op's output, a view of a parameter (reshaped or broadcast), a constant, or a partial
pattern (a window sum awaiting its divisor). Patterns, one small function per primitive:

    conv_general_dilated(x, kernel)   NHWC x HWIO, any pads, kernel dilation, feature groups -> conv2d
                                      (SAME or VALID where the pads are those, else explicit;
                                      feature_group_count G: groups=G, depthwise where G = C)
    dot_general(x, kernel)            (N, F) x (F, U), or (N, H, W, F) x (F, U) per pixel    -> dense
    + bias                            a channel vector right after a conv or dense product   -> fused bias
    max(x, 0)                         after conv, dense, batch_norm or add, read nowhere else -> fused ReLU
                                      after anything else                                    -> activation relu
    reduce_window_max                 (1, kh, kw, 1) windows                                 -> pool2d
    reduce_window_sum / (kh * kw)     flax's avg_pool (padding counted)                      -> avg_pool2d
    reduce_sum over H, W / (H * W)    a mean over height and width                           -> global_avg_pool
    reduce_max over H, W              a maximum over height and width                        -> global_max_pool
    split / slice on the last axis    jnp.split(x, n, -1), x[..., a:b] of a layer's output  -> channel_slice each
    reshape (N, H, W, C) -> (N, HWC)                                                         -> flatten
    x + y of two activations                                                                 -> add
    concatenate on the last dim                                                              -> concat
    every step of one nnx.BatchNorm call (training mode)                                     -> batch_norm
    every step of one nnx.LayerNorm / nnx.RMSNorm call (over the last axis)                  -> layer_norm
    every step of one nnx.GroupNorm call (NHWC images)                                       -> group_norm
    every step of one nnx.Dropout call (training mode, rate > 0; rate 0 computes nothing)    -> dropout
    the element-wise steps of jax.nn.gelu (tanh or erf), silu, tanh, sigmoid of one activation -> activation

An activation function is recognised by its arithmetic: the element-wise steps of one activation (and
scalars) are gathered into one canonical expression (a partial value, as a window sum awaiting its
divisor), which becomes an activation op where a step other than an element-wise one reads it and it
equals the expression of one of the activation kind's functions, traced from the kind's own JAX function
(`_templates`). A chain that equals none of them is an error where it is read.

Batch norm is taken by its module boundary rather than its arithmetic: a call of an nnx.BatchNorm (flax's
own __call__, not a subclass's) reads one activation and its scale and bias and returns one activation
(its running averages, updated beside, feed nothing the logits need). The module's settings must be the
ones models/kinds/batch_norm.py computes. In an image model, layer norm, group norm and dropout are taken
the same way (a dropout call reads one activation and its random key; SOAP draws its own masks,
models/kinds/dropout.py).

Token models (dataset `tokens`: [b s] int32 ids, the loss token_xent on [b s vocab] logits) map onto the
zoo's transformer kinds: models.import_tokens holds those patterns (embeddings, projections to and from
heads, attention by hand or nnx.MultiHeadAttention, layer norms, element-wise functions by evaluation),
the matcher here handing it a token model's steps.

Anything else (a sort, a while loop, a custom call, a multiply of images) is one ModelImportError line
naming the primitive, the module path, the user's file and line, and what is supported.

Program order is the order the forward computes the ops in. The graph holds every parameter the module
holds (a parameter the forward never reads, or reads twice, is an error), so parameter counts agree, and
its FLOPs are the kinds' formulas on the traced shapes.

Names: an op with parameters is named after the module owning its kernel (batch norm: its scale), e.g.
`blocks.3.conv`; where one module's parameters feed several ops, or the root module owns them, after the
parameter's own path (`w`). An op
without parameters is named after the innermost module computing it when it is that module's only such op
(a residual block's add: `res_a`), else `<module>.<kind>` (`blocks.3.add`; `add` at the root), with `_1`,
`_2`, ... where one module computes several of a kind. The loss is `loss`.

Parameters keep their layout: flax's Conv kernel is HWIO and Linear's (in, out), as models.network builds
them, so each op's arrays are the module's own, unchanged.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.datasets import TOKEN_DATASETS, dataset_shape
from models.errors import ModelImportError, ShapeError, SoapError
from models.graph import GraphBuilder, OpGraph
from models.kinds import batch_norm as batch_norm_kind
from models.import_tokens import TokenMatcher, add_token_op, is_token_layer, token_input, token_logits
from models.import_values import Draft, ParamView, StateView, Tensor, is_flax_call
from models.kinds.activation import FUNCTIONS, Activation, ActivationAttrs
from models.kinds.channel_slice import ChannelSliceAttrs
from models.kinds.conv import ConvAttrs
from models.kinds.dropout import DropoutAttrs
from models.kinds.group_norm import GroupNormAttrs
from models.kinds.layer_norm import LayerNormAttrs
from models.kinds.window import same_padding
from models.op import OpKind, Padding
from models.trace import Const, Path, Step, Trace, path_str, trace_module
from models.user_model import summary

SUPPORTED = ("SOAP imports nnx.Conv (or lax.conv: NHWC, HWIO, any padding, kernel_dilation, grouped or depthwise "
             "by feature_group_count), nnx.Linear on (batch, features) or on each pixel of NHWC images, "
             "nnx.BatchNorm in training mode, nnx.LayerNorm and nnx.RMSNorm over the last axis, nnx.GroupNorm on "
             "images, nnx.Dropout, ReLU (fused into a conv, dense, batch norm or add), jax.nn.gelu (either form), "
             "silu, tanh and sigmoid, nnx.max_pool, nnx.avg_pool, a mean or maximum over height and width, a "
             "reshape to (batch, features), the sum of two activations, jnp.concatenate and jnp.split on the "
             "channels; on tokens nnx.Embed (ids, learned positions, attend), nnx.Linear / LinearGeneral / Einsum "
             "as (d, f) projections or to and from heads, nnx.MultiHeadAttention (self- or cross-attention, a "
             "causal mask or none), nnx.LayerNorm, nnx.RMSNorm, nnx.Dropout, gelu, silu, tanh, relu, sigmoid, the "
             "product or sum of two activations, reshapes to and from heads, and attention written as einsum, "
             "1/sqrt(k) scale, causal jnp.where mask, jax.nn.softmax, einsum")
LOSS_NAME = "loss"


@dataclass(frozen=True)
class Source:
    """Where one array of the graph's layout lives in the user's module: op `op`'s `name` is the module's
    variable at nnx state path `path` (a trainable nnx.Param, or non-trainable state). `shapes`: (the
    module's shape, the graph's) where the graph holds the variable reshaped, its dims merged (an
    nnx.MultiHeadAttention's [d h k] query kernel as a dense's [d (h k)]); None where it is the same array."""

    op: str
    name: str
    path: Path
    trainable: bool
    shapes: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    def to_graph(self, value):
        """The module's array (or a gradient of it) in the graph's layout."""
        return value if self.shapes is None else _reshaped(value, self.shapes[1])

    def to_module(self, value):
        """The graph's array (or a gradient of it) in the module's layout."""
        return value if self.shapes is None else _reshaped(value, self.shapes[0])


@dataclass(frozen=True, eq=False)
class ImportedModel:
    """A user's module as SOAP sees it: its operator graph and its own parameters and state, laid out per op
    as models.network lays them out (op name -> {param name -> array}). Treat as a value."""

    graph: OpGraph
    params: dict[str, dict[str, jax.Array]]
    state: dict[str, dict[str, jax.Array]]
    sources: tuple[Source, ...]

    def module_paths(self, values: Mapping[str, Mapping[str, object]]) -> dict[Path, object]:
        """Per-op arrays (parameters, gradients) keyed by the user's nnx state paths instead, each in the
        module's layout."""
        return {source.path: source.to_module(values[source.op][source.name]) for source in self.sources
                if source.op in values and source.name in values[source.op]}


def import_model(module: nnx.Module, dataset: str, batch_size: int, *, seq_len: int | None = None) -> ImportedModel:
    """Trace `module` on the dataset's batch (images; for `tokens` [batch_size seq_len] int32 ids) and return
    its graph with its parameters and state."""
    if not isinstance(module, nnx.Module):
        raise ModelImportError(f"import_model takes an nnx.Module, got {type(module).__name__}; build the model first")
    if batch_size < 1:
        raise SoapError(f"batch size must be a positive integer, got {batch_size}; try --batch-size 128")
    model = type(module).__name__
    tokens = dataset in TOKEN_DATASETS
    inputs, logits, what = (token_input(module, model, dataset, batch_size, seq_len) if tokens
                            else _image_input(dataset, batch_size, seq_len))
    try:
        trace = trace_module(module, inputs)
    except Exception as error:  # the user's own forward failing on the dataset's batch: one line, not a traceback
        raise ModelImportError(f"calling {model} on {what} failed: {summary(error)}; its __call__ must take the "
                               f"dataset's batch and return the logits") from None
    drafts = _Matcher(trace, tokens).match()
    _require_logits(drafts[-1], model, dataset, logits if not tokens else token_logits(drafts, model, inputs.shape))
    _require_every_param_read(trace, drafts, model)
    names = _names(drafts)
    graph = _build(drafts, names, model, dataset, inputs.shape)
    sources = _sources(drafts, names)
    return ImportedModel(graph, *_values(module, sources), sources)


def _image_input(dataset: str, batch_size: int, seq_len: int | None) -> tuple[jax.ShapeDtypeStruct, tuple, str]:
    """The image batch, the logits' shape the loss needs, and the batch in words."""
    shape = dataset_shape(dataset)
    if seq_len is not None:
        raise SoapError(f"--seq-len {seq_len} sizes token sequences, but {dataset} holds images; drop --seq-len")
    images = jax.ShapeDtypeStruct((batch_size, shape.height, shape.width, shape.channels), jnp.float32)
    return images, (batch_size, shape.classes), f"a {_shape_str(images.shape)} float32 image batch ({dataset})"


# What else a variable of an image model's trace means (beside models.import_values'): a partial pattern.
@dataclass(frozen=True)
class _WindowSum:
    source: int | None
    window: tuple


@dataclass(frozen=True)
class _SpatialSum:
    source: int | None


@dataclass(frozen=True)
class _Elementwise:
    """An element-wise function of activation `root` (a variable; `source` its draft) being computed step
    by step, e.g. jax.nn.gelu's eight steps: `expr` its canonical expression (`_node`), `start` the step
    that began it and `last` the one computing it. It becomes an activation op where a step other than an
    element-wise one reads it and it is one of the activation kind's functions (`_templates`)."""

    root: int
    source: int | None
    expr: object
    start: Step
    last: Step


class _Matcher(TokenMatcher):
    """Walks the trace's steps in order, turning them into drafts (one handler per primitive; a token
    model's steps go to the handlers of models.import_tokens.TokenMatcher)."""

    def __init__(self, trace: Trace, tokens: bool = False):
        self.trace = trace
        self.tokens = tokens  # a token model: its element-wise steps, heads and attention are read as such
        self.values: dict[int, object] = {trace.images: Tensor(None)}
        for number, path in enumerate(trace.leaf_paths):
            self.values[number] = (ParamView(path, True, len(trace.shapes[number]) == 1)
                                   if path in trace.param_paths else StateView(path))
        self.leaf_numbers = {path: number for number, path in enumerate(trace.leaf_paths)}
        self.drafts: list[Draft] = []
        self.read_params: set[Path] = set()
        self.batch_norms: set[str] = set()
        self.tables: dict[Path, int] = {}  # an embedding's table -> the draft looking it up (for tied heads)

    def match(self) -> list[Draft]:
        steps = self.trace.steps
        if self.tokens:
            self._require_attention_modules()
        index = 0
        while index < len(steps):
            step = steps[index]
            handler = self._module_call_handler(self.trace.modules.get(step.scope))
            if handler is not None:
                end = index
                while end < len(steps) and (steps[end].scope, steps[end].call) == (step.scope, step.call):
                    end += 1
                self._materialize_reads(steps[index:end])
                handler(steps[index:end])
                index = end
                continue
            if self.tokens and is_token_layer(self.trace.modules.get(step.scope)):
                end = _call_end(steps, index)
                self._token_layer(steps[index:end])
                index = end
                continue
            self._step(step)
            index += 1
        if isinstance(self.trace.logits, int):  # a partial value the logits are: settled into its op
            (self._settle if self.tokens else self._materialize)(self.trace.logits)
        logits = self.values.get(self.trace.logits) if isinstance(self.trace.logits, int) else None
        if not isinstance(logits, Tensor) or logits.draft is None:
            raise ModelImportError(f"the module's output is not computed by any layer from the images; "
                                   f"__call__ must return the logits. {SUPPORTED}")
        assert logits.draft == len(self.drafts) - 1, "program order ends with the logits' op"
        return self.drafts

    def _step(self, step: Step) -> None:
        if all(isinstance(atom, Const) for atom in step.inputs):  # constants beside the model (iota, casts)
            self.values.update((output, Const(None)) for output in step.outputs)
            return
        if self.tokens:  # a token model's element-wise steps, heads and attention (the token section below)
            if self._token_step(step):
                return
        else:
            if self._extend_elementwise(step):
                return
            self._materialize_reads((step,))
        handler = getattr(self, "_on_" + step.primitive, None)
        if handler is None:
            self._fail(step, f"computes '{step.primitive}'")
        handler(step)

    def _module_call_handler(self, module):
        """The handler taking a call of `module` whole by its boundary (flax's own __call__), or None."""
        if is_flax_call(module, nnx.BatchNorm):
            return self._batch_norm
        return None if self.tokens else self._cnn_module_call_handler(module)  # tokens: _token_layer

    # Helpers.

    def _fail(self, step: Step, what: str) -> None:
        module = type(self.trace.modules[step.scope]).__name__
        where = f"module '{step.scope}' ({module})" if step.scope else f"the root module ({module})"
        raise ModelImportError(f"{step.where or 'unknown line'}: cannot import {where}: it {what}. {SUPPORTED}")

    def _arg(self, atom):
        return atom if isinstance(atom, Const) else self.values[atom]

    def _args(self, step: Step) -> tuple:
        return tuple(self._arg(atom) for atom in step.inputs)

    def _shape(self, atom) -> tuple[int, ...]:
        return self.trace.shapes[atom]

    def _tensor(self, step: Step, atom, rank: int | None = None) -> Tensor:
        value = self._arg(atom)
        if not isinstance(value, Tensor) or (rank is not None and len(self._shape(atom)) != rank):
            self._fail(step, f"applies '{step.primitive}' to {self._describe(atom)}")
        return value

    def _describe(self, atom) -> str:
        value = self._arg(atom)
        if isinstance(value, ParamView):
            return f"parameter '{path_str(value.path)}'"
        if isinstance(value, StateView):
            return f"non-trainable variable '{path_str(value.path)}'"
        if isinstance(value, Const):
            return "a constant"
        if isinstance(value, Tensor):
            return f"an activation of shape {self._shape(atom)}"
        if isinstance(value, _Elementwise):
            return (f"an element-wise function of an activation (from {value.start.where or 'an unknown line'}) "
                    f"that is none of {', '.join(fn.value for fn in _templates().values())}")
        return "a partial reduction"

    def _add_draft(self, step: Step, draft: Draft) -> None:
        if self.trace.dtypes[draft.output] != "float32":
            self._fail(step, f"computes in {self.trace.dtypes[draft.output]} (SOAP's graphs are float32)")
        self.drafts.append(draft)
        self.values[draft.output] = Tensor(len(self.drafts) - 1)

    def _new(self, step: Step, kind: OpKind, inputs: tuple[int | None, ...], **fields) -> None:
        output = step.outputs[0]
        self._add_draft(step, Draft(kind, inputs, output, self._shape(output), step.scope, step.where, **fields))

    def _read_param(self, step: Step, view: ParamView) -> Path:
        if view.path in self.read_params:
            self._fail(step, f"reads parameter '{path_str(view.path)}' a second time (shared weights)")
        if self.trace.dtypes[self.leaf_numbers[view.path]] != "float32":
            self._fail(step, f"holds parameter '{path_str(view.path)}' in a dtype other than float32")
        self.read_params.add(view.path)
        return view.path

    def _fusable(self, atom, kinds: tuple[OpKind, ...]) -> Draft | None:
        """The draft whose current output `atom` is, if one of `kinds` and nothing else reads `atom`."""
        value = self._arg(atom)
        if not isinstance(value, Tensor) or value.draft is None or self.trace.uses[atom] != 1:
            return None
        draft = self.drafts[value.draft]
        return draft if draft.kind in kinds and draft.output == atom else None

    def _fuse(self, step: Step, atom, draft: Draft) -> None:
        index = self.values[atom].draft
        self.drafts[index] = replace(draft, output=step.outputs[0])
        self.values[step.outputs[0]] = Tensor(index)

    def _alias(self, step: Step, value) -> None:
        self.values[step.outputs[0]] = value

    # Layers with parameters.

    def _on_conv_general_dilated(self, step: Step) -> None:
        x, kernel = step.inputs
        source = self._tensor(step, x, rank=4)
        view = self._arg(kernel)
        params = step.params
        numbers = params["dimension_numbers"]
        if not isinstance(view, ParamView) or not view.raw or len(self._shape(kernel)) != 4:
            self._fail(step, f"convolves with {self._describe(kernel)} instead of a 4-d kernel parameter")
        if (tuple(numbers.lhs_spec), tuple(numbers.rhs_spec), tuple(numbers.out_spec)) != ((0, 3, 1, 2), (3, 2, 0, 1),
                                                                                         (0, 3, 1, 2)):
            self._fail(step, "computes a convolution whose layout is not NHWC images and an HWIO kernel")
        if set(params["lhs_dilation"]) != {1}:
            self._fail(step, f"computes a transposed convolution of strides {tuple(params['lhs_dilation'])} (input "
                             f"dilation: nnx.ConvTranspose with strides above 1), which no kind of SOAP computes; "
                             f"a stride-1 nnx.ConvTranspose imports as the conv it is")
        if params["batch_group_count"] != 1:
            self._fail(step, f"computes a convolution grouped over the batch (batch_group_count="
                             f"{params['batch_group_count']}), which no kind of SOAP computes")
        kh, kw = self._shape(kernel)[:2]
        dilation = tuple(params["rhs_dilation"])
        pads = tuple(tuple(pad) for pad in params["padding"])
        window = self._window(step, self._shape(x), (kh, kw), tuple(params["window_strides"]), pads, dilation)
        attrs = ConvAttrs(**window, groups=params["feature_group_count"], dilation_hw=dilation,
                          pads=pads if window["padding"] is Padding.EXPLICIT else None)
        self._new(step, OpKind.CONV2D, (source.draft,), params=(("kernel", self._read_param(step, view)),),
                  attrs=attrs, **window)

    def _on_dot_general(self, step: Step) -> None:
        x, kernel = step.inputs
        source = self._tensor(step, x)
        rank = len(self._shape(x))
        if rank not in (2, 4):
            self._fail(step, f"applies 'dot_general' to {self._describe(x)}")
        view = self._arg(kernel)
        if not isinstance(view, ParamView) or not view.raw or len(self._shape(kernel)) != 2:
            self._fail(step, f"multiplies by {self._describe(kernel)} instead of a 2-d kernel parameter")
        if step.params["dimension_numbers"] != (((rank - 1,), (0,)), ((), ())):
            self._fail(step, "computes a dot_general other than (..., in) x (in, out)")
        self._new(step, OpKind.DENSE, (source.draft,), params=(("kernel", self._read_param(step, view)),))

    def _batch_norm(self, steps: tuple[Step, ...]) -> None:
        first = steps[0]
        module = self.trace.modules[first.scope]
        if first.scope in self.batch_norms:
            self._fail(first, "is called a second time (shared weights)")
        self.batch_norms.add(first.scope)
        self._require_batch_norm_settings(first, module)
        read_values, outputs = self._call_io(steps)
        if any(isinstance(value, StateView) for value in read_values.values()):
            self._fail(first, "normalizes with its running averages (evaluation mode: use_running_average=True "
                              "passed in __call__), where SOAP trains with the batch's statistics")
        tensors = {atom for atom, value in read_values.items() if isinstance(value, Tensor)}
        views = {value.path for value in read_values.values() if isinstance(value, ParamView)}
        scale, bias = (self._own_variable(first.scope, name) for name in ("scale", "bias"))
        if len(tensors) != 1 or views != {scale, bias} or len(outputs) != 1:
            self._fail(first, "is a batch norm reading other than one activation and its own scale and bias")
        (x,) = tensors
        for path in (scale, bias):
            self._read_param(first, self.values[self.leaf_numbers[path]])
        state = tuple((name, self._own_variable(first.scope, name)) for name in ("mean", "var"))
        self._new(replace(first, outputs=(outputs[0],)), OpKind.BATCH_NORM, (self.values[x].draft,),
                  params=(("scale", scale), ("bias", bias)), state=state)

    def _call_io(self, steps: tuple[Step, ...]) -> tuple[dict[int, object], list[int]]:
        """What one module call reads from before it (variable -> meaning) and the variables it computes
        that steps after it (or the logits) read."""
        produced = {output for step in steps for output in step.outputs}
        reads = {atom: self.values[atom] for step in steps for atom in step.inputs
                 if isinstance(atom, int) and atom not in produced}
        internal = Counter(atom for step in steps for atom in step.inputs if atom in produced)
        return reads, [atom for atom in sorted(produced) if self.trace.uses[atom] > internal[atom]]

    def _own_variable(self, scope: str, name: str) -> Path:
        """The state path of variable `name` of the module at `scope`."""
        (path,) = (path for path in self.trace.leaf_paths if path[-1] == name and path_str(path[:-1]) == scope)
        return path

    def _require_batch_norm_settings(self, step: Step, module: nnx.BatchNorm) -> None:
        self._require_settings(step, module, OpKind.BATCH_NORM, {
            "epsilon": batch_norm_kind.EPSILON, "momentum": batch_norm_kind.MOMENTUM, "use_bias": True,
            "use_scale": True, "use_fast_variance": True, "axis": -1, "axis_name": None})

    def _require_settings(self, step: Step, module: nnx.Module, kind: OpKind, expected: dict) -> None:
        """Each of the module's settings `expected` names is the value SOAP's `kind` computes (flax's default)."""
        for name, value in expected.items():
            actual = getattr(module, name, value)
            if actual != value and not (isinstance(value, float) and np.isclose(actual, value, rtol=1e-6)):
                self._fail(step, f"is a {type(module).__name__} with {name}={actual!r}, where SOAP's {kind.value} "
                                 f"computes {name}={value!r} (flax's default)")

    # Elementwise and shape steps.

    def _on_add(self, step: Step) -> None:
        a, b = step.inputs
        values = self._args(step)
        if isinstance(values[0], ParamView) or isinstance(values[1], ParamView):
            product, bias = (b, a) if isinstance(values[0], ParamView) else (a, b)
            self._fuse_bias(step, product, bias)
        elif all(isinstance(value, Tensor) for value in values) and a != b and self._shape(a) == self._shape(b):
            if None in (values[0].draft, values[1].draft):
                self._fail(step, "adds the image batch itself (read it through a layer first)")
            self._new(step, OpKind.ADD, (values[0].draft, values[1].draft))
        else:
            self._fail(step, f"adds {self._describe(a)} and {self._describe(b)}")

    def _fuse_bias(self, step: Step, product, bias) -> None:
        view = self._arg(bias)
        if view.heads_last:
            return self._fuse_heads_bias(step, product, bias)
        draft = self._fusable(product, (OpKind.CONV2D, OpKind.DENSE))
        if (draft is None or draft.relu or len(draft.params) != 1 or not view.channels_last
                or self._param_shape(view) != (draft.shape[-1],)):
            self._fail(step, f"adds {self._describe(bias)} other than as the bias right after a conv or dense product")
        self._fuse(step, product, replace(draft, params=draft.params + (("bias", self._read_param(step, view)),)))

    def _param_shape(self, view: ParamView) -> tuple[int, ...]:
        return self.trace.shapes[self.leaf_numbers[view.path]]

    def _on_max(self, step: Step) -> None:
        a, b = step.inputs
        if _is_zero(self._arg(b)):
            x = a
        elif _is_zero(self._arg(a)):
            x = b
        else:
            self._fail(step, f"takes the maximum of {self._describe(a)} and {self._describe(b)} (only ReLU is taken)")
        draft = self._fusable(x, (OpKind.CONV2D, OpKind.DENSE, OpKind.BATCH_NORM, OpKind.ADD))
        if draft is None or draft.relu:
            source = self._tensor(step, x)  # a ReLU after another op (a group norm's): an activation op
            return self._new(step, OpKind.ACTIVATION, (source.draft,), attrs=ActivationAttrs(Activation.RELU))
        self._fuse(step, x, replace(draft, relu=True))

    def _on_reduce_window_max(self, step: Step) -> None:
        source = self._tensor(step, step.inputs[0], rank=4)
        self._new(step, OpKind.POOL2D, (source.draft,), **self._pool_window(step))

    def _on_reduce_window_sum(self, step: Step) -> None:
        source = self._tensor(step, step.inputs[0], rank=4)
        window = self._pool_window(step)
        self._alias(step, _WindowSum(source.draft, tuple(window.items())))

    def _on_reduce_sum(self, step: Step) -> None:
        source = self._spatial_reduction(step, "sums", "a mean or sum")
        self._alias(step, _SpatialSum(source.draft))

    def _spatial_reduction(self, step: Step, what: str, which: str) -> Tensor:
        """The images a reduction over height and width reads; one line for any other axes."""
        source = self._tensor(step, step.inputs[0])
        axes = tuple(int(axis) for axis in step.params["axes"])
        if len(self._shape(step.inputs[0])) != 4 or axes != (1, 2):
            self._fail(step, f"{what} {self._describe(step.inputs[0])} over axes {axes} ({which} over other axes "
                             f"than height and width, or a standalone jax.nn.softmax), which no op of SOAP's image "
                             f"models computes; only a mean or maximum over height and width of NHWC images is taken")
        return source

    def _on_div(self, step: Step) -> None:
        total, divisor = step.inputs
        value, count = self._arg(total), self._arg(divisor)
        if isinstance(value, _SpatialSum) and self.trace.uses[total] == 1:
            _, height, width, _ = self._sum_input_shape(value)
            if _scalar(count) == height * width:
                return self._new(step, OpKind.GLOBAL_AVG_POOL, (value.source,))
        if isinstance(value, _WindowSum) and self.trace.uses[total] == 1:
            window = dict(value.window)
            if _scalar(count) == math.prod(window["kernel_hw"]):
                return self._new(step, OpKind.AVG_POOL2D, (value.source,), **window)
        self._fail(step, f"divides {self._describe(total)} by {self._describe(divisor)} (only a mean over height and "
                         f"width and flax's avg_pool are taken)")

    def _sum_input_shape(self, value: _SpatialSum) -> tuple[int, ...]:
        if value.source is None:
            return self.trace.shapes[self.trace.images]
        return self.drafts[value.source].shape

    def _on_reshape(self, step: Step) -> None:
        (atom,) = step.inputs
        value, old, new = self._arg(atom), self._shape(atom), self._shape(step.outputs[0])
        if isinstance(value, ParamView):
            param = self._param_shape(value)
            vector = len(param) == 1 and set(new[:-1]) <= {1} and new[-1] == math.prod(new)
            heads = len(param) == 2 and set(new[:-2]) <= {1} and new[-2:] == param
            return self._alias(step, ParamView(value.path, False, vector, heads))
        source = self._tensor(step, atom)
        if new == old:
            return self._alias(step, source)
        if len(old) == 4 and new == (old[0], math.prod(old[1:])):
            return self._new(step, OpKind.FLATTEN, (source.draft,))
        self._fail(step, f"reshapes an activation from {old} to {new} (only (N, H, W, C) -> (N, H*W*C) is taken)")

    def _on_broadcast_in_dim(self, step: Step) -> None:
        (atom,) = step.inputs
        value, old, new = self._arg(atom), self._shape(atom), self._shape(step.outputs[0])
        if not isinstance(value, ParamView):
            self._fail(step, f"broadcasts {self._describe(atom)}")
        dims = tuple(step.params["broadcast_dimensions"])
        vector = value.channels_last and dims[-1] == len(new) - 1 and old[-1] == new[-1]
        self._alias(step, ParamView(value.path, False, vector))

    def _on_convert_element_type(self, step: Step) -> None:
        (atom,) = step.inputs
        if self.trace.dtypes[atom] != str(np.dtype(step.params["new_dtype"])):
            self._fail(step, f"converts {self._describe(atom)} to {np.dtype(step.params['new_dtype'])}")
        self._alias(step, self._arg(atom))

    def _on_copy(self, step: Step) -> None:
        self._alias(step, self._arg(step.inputs[0]))

    _on_copy_p = _on_copy

    def _on_concatenate(self, step: Step) -> None:
        sources = [self._tensor(step, atom) for atom in step.inputs]
        rank = len(self._shape(step.outputs[0]))
        if step.params["dimension"] != rank - 1 or any(source.draft is None for source in sources):
            self._fail(step, f"concatenates on axis {step.params['dimension']} of rank-{rank} activations "
                             f"(only layer outputs joined on their channels, the last axis, are taken)")
        self._new(step, OpKind.CONCAT, tuple(source.draft for source in sources))

    # Windows.

    def _pool_window(self, step: Step) -> dict:
        params = step.params
        dims, strides, pads = (tuple(params[key]) for key in ("window_dimensions", "window_strides", "padding"))
        if (dims[0], dims[3], strides[0], strides[3], pads[0], pads[3]) != (1, 1, 1, 1, (0, 0), (0, 0)) or (
                set(params["base_dilation"]) | set(params["window_dilation"]) != {1}):
            self._fail(step, f"pools with windows {dims} and strides {strides} (only over height and width)")
        return self._window(step, self._shape(step.inputs[0]), dims[1:3], strides[1:3], pads[1:3])

    def _window(self, step: Step, in_shape, kernel_hw, stride_hw, pads, dilation_hw=None) -> dict:
        """The window fields of a pool or (with `dilation_hw`) a conv: SAME or VALID where the pads are
        those, else, for a conv, EXPLICIT (the pads then in its ConvAttrs)."""
        sizes = in_shape[1:3]
        spans = tuple((k - 1) * d + 1 for k, d in zip(kernel_hw, dilation_hw or (1, 1)))
        same = tuple(same_padding(size, k, s) for size, k, s in zip(sizes, spans, stride_hw))
        pads = tuple(tuple(pad) for pad in pads)
        if pads == same:
            padding = Padding.SAME
        elif pads == ((0, 0), (0, 0)):
            padding = Padding.VALID
        elif dilation_hw is not None:
            padding = Padding.EXPLICIT
        else:
            self._fail(step, f"pads by {pads}, which is neither SAME {same} nor VALID for a {kernel_hw[0]}x"
                             f"{kernel_hw[1]} window of stride {stride_hw} on {sizes[0]}x{sizes[1]} images")
        return dict(kernel_hw=tuple(kernel_hw), stride_hw=tuple(stride_hw), padding=padding)

    # Modern CNN layers (ConvNeXt-style): layer norm and dropout by their module boundary, activation
    # functions by their arithmetic.

    def _cnn_module_call_handler(self, module):
        if is_flax_call(module, nnx.LayerNorm) or is_flax_call(module, nnx.RMSNorm):
            return self._image_layer_norm
        if is_flax_call(module, nnx.Dropout):
            return self._image_dropout
        if is_flax_call(module, nnx.GroupNorm):
            return self._group_norm
        return None

    def _image_layer_norm(self, steps: tuple[Step, ...]) -> None:
        """One nnx.LayerNorm (or nnx.RMSNorm) call over the last axis of any activation: a layer_norm op."""
        first = steps[0]
        module = self.trace.modules[first.scope]
        rms = isinstance(module, nnx.RMSNorm)
        self._require_settings(first, module, OpKind.LAYER_NORM, {
            "use_scale": True, "reduction_axes": -1, "feature_axes": -1, "axis_name": None,
            "use_fast_variance": True, **({} if rms else {"use_bias": True})})
        names = ("scale",) if rms else ("scale", "bias")
        x, paths, output = self._normalization_call(steps, names)
        self._new(replace(first, outputs=(output,)), OpKind.LAYER_NORM, (self.values[x].draft,),
                  params=tuple(zip(names, paths)), attrs=LayerNormAttrs(eps=float(module.epsilon), rms=rms))

    def _normalization_call(self, steps: tuple[Step, ...], names: tuple[str, ...]) -> tuple[int, tuple[Path, ...], int]:
        """The activation a normalization module's call reads, the paths of its own parameters `names`
        (now read) and the variable it returns; anything else it reads or returns is one error line."""
        first = steps[0]
        reads, outputs = self._call_io(steps)
        paths = tuple(self._own_variable(first.scope, name) for name in names)
        tensors = [atom for atom, value in reads.items() if isinstance(value, Tensor)]
        views = {value.path for value in reads.values() if isinstance(value, ParamView)}
        if len(tensors) != 1 or len(reads) != 1 + len(paths) or views != set(paths) or len(outputs) != 1:
            self._fail(first, f"reads other than one activation and its own {' and '.join(names)}")
        for path in paths:
            self._read_param(first, self.values[self.leaf_numbers[path]])
        return tensors[0], paths, outputs[0]

    def _group_norm(self, steps: tuple[Step, ...]) -> None:
        """One nnx.GroupNorm call on NHWC images (statistics over height, width and each group): a group_norm op."""
        first = steps[0]
        module = self.trace.modules[first.scope]
        self._require_settings(first, module, OpKind.GROUP_NORM, {
            "use_scale": True, "use_bias": True, "reduction_axes": None, "axis_name": None,
            "use_fast_variance": True})
        x, (scale, bias), output = self._normalization_call(steps, ("scale", "bias"))
        if len(self._shape(x)) != 4:
            self._fail(first, f"normalizes {self._describe(x)} in groups (only NHWC images are taken)")
        self._new(replace(first, outputs=(output,)), OpKind.GROUP_NORM, (self.values[x].draft,),
                  params=(("scale", scale), ("bias", bias)),
                  attrs=GroupNormAttrs(groups=int(module.num_groups), eps=float(module.epsilon)))

    def _image_dropout(self, steps: tuple[Step, ...]) -> None:
        """One nnx.Dropout call in training mode: a dropout op of its rate (its mask is SOAP's own, drawn
        from each step's key: the same rate, other bits than flax's)."""
        first = steps[0]
        module = self.trace.modules[first.scope]
        if tuple(module.broadcast_dims):
            self._fail(first, f"is a Dropout with broadcast_dims={tuple(module.broadcast_dims)}, where SOAP's "
                              f"dropout draws every element (broadcast_dims=())")
        reads, outputs = self._call_io(steps)
        tensors = [atom for atom, value in reads.items() if isinstance(value, Tensor)]
        if len(tensors) != 1 or any(isinstance(value, ParamView) for value in reads.values()) or len(outputs) != 1:
            self._fail(first, "is a dropout reading other than one activation and its random key")
        self._new(replace(first, outputs=(outputs[0],)), OpKind.DROPOUT, (reads[tensors[0]].draft,),
                  attrs=DropoutAttrs(rate=float(module.rate)))

    def _on_split(self, step: Step) -> None:
        """jnp.split on the channels: a channel slice per output read after it."""
        source = self._tensor(step, step.inputs[0])
        rank = len(self._shape(step.inputs[0]))
        if step.params["axis"] != rank - 1 or source.draft is None:
            self._fail(step, f"splits {self._describe(step.inputs[0])} on axis {step.params['axis']} (only a layer's "
                             f"output on its channels, the last axis, is taken)")
        offset = 0
        for output, size in zip(step.outputs, step.params["sizes"]):
            if self.trace.uses[output]:
                self._add_draft(step, Draft(OpKind.CHANNEL_SLICE, (source.draft,), output, self._shape(output),
                                            step.scope, step.where, attrs=ChannelSliceAttrs(offset=offset)))
            offset += int(size)

    def _on_slice(self, step: Step) -> None:
        """x[..., a:b] of a layer's output: a channel slice."""
        source = self._tensor(step, step.inputs[0])
        old, new = self._shape(step.inputs[0]), self._shape(step.outputs[0])
        start = tuple(step.params["start_indices"])
        if (source.draft is None or old[:-1] != new[:-1] or any(start[:-1]) or
                set(step.params["strides"] or (1,)) != {1}):
            self._fail(step, f"slices {self._describe(step.inputs[0])} to {new} (only a range of a layer's channels, "
                             f"the last axis, is taken)")
        self._new(step, OpKind.CHANNEL_SLICE, (source.draft,), attrs=ChannelSliceAttrs(offset=start[-1]))

    def _on_reduce_max(self, step: Step) -> None:
        source = self._spatial_reduction(step, "takes the maximum of", "a max")
        self._new(step, OpKind.GLOBAL_MAX_POOL, (source.draft,))

    def _extend_elementwise(self, step: Step) -> bool:
        """Take `step` into an element-wise function of one activation (`_Elementwise`) where it is one:
        a primitive some activation function computes with (`_elementwise_primitives`), of that activation,
        scalars and the function's own partial results (a sum of two activations is an add op)."""
        values = self._args(step)
        if step.primitive not in _elementwise_primitives() or len(step.outputs) != 1 or not all(
                isinstance(value, (Tensor, _Elementwise)) or _scalar(value) is not None for value in values):
            return False
        pending = [value for value in values if isinstance(value, _Elementwise)]
        tensors = {atom for atom, value in zip(step.inputs, values) if isinstance(value, Tensor)}
        if pending:
            roots = {value.root for value in pending}
            if len(roots) != 1 or not tensors <= roots:
                return False
            root, start = pending[0].root, pending[0].start
        else:
            if len(tensors) != 1:
                return False
            (root,), start = tensors, step
        if self._shape(root) != self._shape(step.outputs[0]):
            return False
        children = tuple("x" if isinstance(value, Tensor) else value.expr if isinstance(value, _Elementwise)
                         else ("const", _scalar(value)) for value in values)
        expr = _node(step.primitive, step.params, children)
        self._alias(step, _Elementwise(root, self.values[root].draft, expr, start, step))
        return True

    def _materialize_reads(self, steps: tuple[Step, ...]) -> None:
        for atom in {atom for step in steps for atom in step.inputs if isinstance(atom, int)}:
            self._materialize(atom)

    def _materialize(self, atom: int) -> None:
        """An element-wise function read by a step that is not one, as an activation op where it is one of
        the activation kind's functions (else it stays, for the reading step to name)."""
        value = self.values.get(atom)
        if not isinstance(value, _Elementwise) or value.expr not in _templates():
            return
        fn = _templates()[value.expr]
        self._add_draft(value.last, Draft(OpKind.ACTIVATION, (value.source,), atom, self._shape(atom),
                                          value.last.scope, value.last.where, attrs=ActivationAttrs(fn)))


def _call_end(steps: tuple[Step, ...], index: int) -> int:
    """The end of the module call whose first step is steps[index]."""
    end = index
    while end < len(steps) and (steps[end].scope, steps[end].call) == (steps[index].scope, steps[index].call):
        end += 1
    return end


_COMMUTATIVE = frozenset({"add", "mul", "max", "min"})


def _node(primitive: str, params: dict, children: tuple) -> object:
    """The canonical expression of `primitive(*children)`: a copy is its input, the inputs of a commutative
    primitive are sorted, parameters (integer_pow's exponent) are part of it."""
    if primitive in ("copy", "copy_p"):
        return children[0]
    if primitive in _COMMUTATIVE:
        children = tuple(sorted(children, key=repr))
    return primitive, tuple(sorted((key, repr(value)) for key, value in params.items())), children


class _Apply(nnx.Module):
    def __init__(self, function):
        self.function = function

    def __call__(self, x):
        return self.function(x)


@functools.cache
def _templates() -> dict[object, Activation]:
    """The canonical expression of each function of the activation kind (models/kinds/activation.py),
    traced from the kind's own JAX function as the user's module is; ReLU is fused where it is taken."""
    templates = {}
    for fn, function in FUNCTIONS.items():
        if fn is Activation.RELU:
            continue
        trace = trace_module(_Apply(function), jax.ShapeDtypeStruct((2,), jnp.float32))
        exprs = {trace.images: "x"}
        for step in trace.steps:
            children = tuple(exprs[atom] if isinstance(atom, int) else ("const", _scalar(atom)) for atom in step.inputs)
            exprs[step.outputs[0]] = _node(step.primitive, step.params, children)
        templates[exprs[trace.logits]] = fn
    return templates


@functools.cache
def _elementwise_primitives() -> frozenset[str]:
    """The primitives the activation kind's functions compute with (jax.nn.gelu: integer_pow, mul, add, tanh)."""
    def primitives(expr) -> set[str]:
        if expr == "x" or expr[0] == "const":
            return set()
        return {expr[0]}.union(*(primitives(child) for child in expr[2]))

    return frozenset().union(*(primitives(expr) for expr in _templates()))


def _is_zero(value) -> bool:
    return isinstance(value, Const) and value.value is not None and value.value.size == 1 and value.value == 0


def _scalar(value) -> float | None:
    if isinstance(value, Const) and value.value is not None and value.value.size == 1:
        return float(value.value)
    return None


def _shape_str(shape) -> str:
    return "x".join(str(d) for d in shape)


def _require_logits(last: Draft, model: str, dataset: str, expected: tuple[int, ...]) -> None:
    if last.shape != expected:
        dims, end = (("batch, classes", f"{expected[1]} classes") if len(expected) == 2 else
                     ("batch, sequence, vocabulary", f"the vocabulary of its first nnx.Embed, {expected[2]}"))
        raise ModelImportError(f"{model} returns logits of shape {last.shape} on {dataset}, but the loss needs "
                               f"({dims}) = {expected}; end the module with a layer to {end}")


def _require_every_param_read(trace: Trace, drafts: list[Draft], model: str) -> None:
    read = {path for draft in drafts for _, path in draft.params}
    unread = sorted(path_str(path) for path in trace.param_paths - read)
    if unread:
        raise ModelImportError(f"{model} holds parameters its forward never reads ({', '.join(unread[:5])}"
                               f"{', ...' if len(unread) > 5 else ''}); the graph must hold every parameter the "
                               f"module holds: remove them or use them")


def _names(drafts: list[Draft]) -> list[str]:
    """Each draft's op name (see the module docstring)."""
    owners = [path_str(draft.params[0][1][:-1]) if draft.params else None for draft in drafts]  # kernel or scale
    shared = {owner for owner, count in Counter(owners).items() if count > 1}
    names: list[str | None] = [None] * len(drafts)
    for index, (draft, owner) in enumerate(zip(drafts, owners)):
        if owner is not None:
            names[index] = owner if owner and owner not in shared else path_str(draft.params[0][1])
    taken = {name for name in names if name is not None}
    plain = [index for index, name in enumerate(names) if name is None]
    per_scope = Counter(drafts[index].scope for index in plain)
    per_kind = Counter((drafts[index].scope, drafts[index].kind) for index in plain)
    seen: Counter = Counter()
    for index in plain:
        draft = drafts[index]
        if draft.scope and per_scope[draft.scope] == 1 and draft.scope not in taken:
            name = draft.scope
        else:
            name = f"{draft.scope}.{draft.kind.value}" if draft.scope else draft.kind.value
            if per_kind[draft.scope, draft.kind] > 1:
                seen[draft.scope, draft.kind] += 1
                name += f"_{seen[draft.scope, draft.kind]}"
        names[index] = name
    return names


def _build(drafts: list[Draft], names: list[str], model: str, dataset: str, input_shape) -> OpGraph:
    """The drafts as an OpGraph (program order: the order they were found), ending with the loss."""
    builder = GraphBuilder(model, dataset, tuple(input_shape))
    for draft, name in zip(drafts, names):
        sources = [None if source is None else names[source] for source in draft.inputs]
        try:
            if draft.settings is not None:
                add_token_op(builder, draft, name, sources, names)
            else:
                _add(builder, draft, name, sources)
        except ShapeError as error:
            raise ModelImportError(f"{draft.where}: {error}") from None
        assert builder.shape(name) == draft.shape, (name, builder.shape(name), draft.shape)
    if dataset in TOKEN_DATASETS:
        builder.token_xent(LOSS_NAME if LOSS_NAME not in names else OpKind.TOKEN_XENT.value, input=names[-1])
        return builder.build(input_shape[0])
    loss = LOSS_NAME if LOSS_NAME not in names else OpKind.SOFTMAX_XENT.value
    builder.softmax_xent(loss, input=names[-1])
    return builder.build(input_shape[0])


def _add(builder: GraphBuilder, draft: Draft, name: str, sources: list[str | None]) -> None:
    window = dict(kernel=draft.kernel_hw, stride=draft.stride_hw, padding=draft.padding)
    kind = draft.kind
    if kind is OpKind.CONV2D:
        attrs = draft.attrs
        window["padding"] = attrs.pads or draft.padding
        builder.conv2d(name, draft.shape[-1], relu=draft.relu, bias=len(draft.params) > 1, groups=attrs.groups,
                       dilation=attrs.dilation_hw, input=sources[0], **window)
    elif kind is OpKind.DENSE:
        builder.dense(name, draft.shape[-1], relu=draft.relu, bias=len(draft.params) > 1,
                      pixels=len(draft.shape) == 4, input=sources[0])
    elif kind is OpKind.LAYER_NORM:
        builder.layer_norm(name, eps=draft.attrs.eps, rms=draft.attrs.rms, input=sources[0])
    elif kind is OpKind.DROPOUT:
        builder.dropout(name, draft.attrs.rate, input=sources[0])
    elif kind is OpKind.GROUP_NORM:
        builder.group_norm(name, draft.attrs.groups, eps=draft.attrs.eps, input=sources[0])
    elif kind is OpKind.ACTIVATION:
        builder.activation(name, draft.attrs.fn, input=sources[0])
    elif kind is OpKind.POOL2D:
        builder.pool2d(name, input=sources[0], **window)
    elif kind is OpKind.AVG_POOL2D:
        builder.avg_pool2d(name, input=sources[0], **window)
    elif kind is OpKind.GLOBAL_AVG_POOL:
        builder.global_avg_pool(name, input=sources[0])
    elif kind is OpKind.GLOBAL_MAX_POOL:
        builder.global_max_pool(name, input=sources[0])
    elif kind is OpKind.CHANNEL_SLICE:
        builder.channel_slice(name, draft.attrs.offset, draft.shape[-1], input=sources[0])
    elif kind is OpKind.BATCH_NORM:
        builder.batch_norm(name, relu=draft.relu, input=sources[0])
    elif kind is OpKind.ADD:
        builder.add(name, inputs=sources, relu=draft.relu)
    elif kind is OpKind.CONCAT:
        builder.concat(name, inputs=sources)
    else:
        assert kind is OpKind.FLATTEN, kind
        builder.flatten(name, input=sources[0])


def _sources(drafts: list[Draft], names: list[str]) -> tuple[Source, ...]:
    return tuple(Source(name, array, path, trainable, _view_shapes(draft, array))
                 for draft, name in zip(drafts, names)
                 for arrays, trainable in ((draft.params, True), (draft.state, False))
                 for array, path in arrays)


def _reshaped(value, shape: tuple[int, ...]):
    """An array reshaped, or an abstract one (a jax.ShapeDtypeStruct of an nnx.eval_shape model) reshaped alike."""
    if isinstance(value, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(shape, value.dtype)
    return value.reshape(shape)


def _view_shapes(draft: Draft, array: str) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    return next(((module, graph) for name, module, graph in draft.views if name == array), None)


def _values(module: nnx.Module, sources: tuple[Source, ...]) -> tuple[dict, dict]:
    """The module's own arrays in the per-op layout: (params, state)."""
    variables = dict(nnx.to_flat_state(nnx.state(module)))
    params: dict[str, dict[str, jax.Array]] = {}
    state: dict[str, dict[str, jax.Array]] = {}
    for source in sources:
        (params if source.trainable else state).setdefault(source.op, {})[source.name] = \
            source.to_graph(variables[source.path].get_value())
    return params, state
