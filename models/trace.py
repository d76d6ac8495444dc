"""A user's flax nnx module traced into a flat list of primitive steps, each knowing its module path.

    trace = trace_module(module, jax.ShapeDtypeStruct((128, 64, 64, 3), jnp.float32))   # models.importer's input
    trace = trace_module(module, jax.ShapeDtypeStruct((8, 64), jnp.int32))            # a token model's ids

`trace_module(module, images)` runs the module's `__call__` under `jax.make_jaxpr` on a copy merged from
the traced leaves (`nnx.split` outside, `nnx.merge` inside the traced function, so the user's module is
never touched), in training mode (`train()`: batch norm uses the batch's statistics). The function's
inputs are the module's state leaves, by their `nnx.state` path, and the input batch (NHWC images or [b s]
token ids; `Trace.images` names it either way); its output is the logits.

Module boundaries: while tracing, the `__call__` of every module class in the model runs inside
`jax.named_scope` of that module's path and a call number, so that every equation records the innermost
module call computing it (`Step.scope`, "" for the root, and `Step.call`). The classes get their
`__call__` back when tracing ends.

Flattening: the calls JAX nests (jit, custom_jvp / custom_vjp such as `jax.nn.relu`, checkpoint) are
inlined, so the importer sees primitives only; control flow (while, scan, cond) and every other primitive
stay as they are, for the importer to take or to name as unsupported. Steps that do not feed the logits
(batch norm's running averages, unused branches) are dropped.

Constants: a step whose inputs are all known constants (a causal mask built with `jnp.tril`, `jnp.arange(s)`
for learned positions, `1 / sqrt(head_dim)`) is evaluated while flattening and becomes a `Const` holding its
value, so the importer reads what the mask or the positions are. A broadcast is kept as a numpy view (no
copy: a [s s] mask broadcast over samples and heads stays s*s floats); other constants of more than
`FOLD_MAX_ELEMENTS` elements stay steps (their value unknown).

Each step also carries the user's source line that produced it (`Step.where`): the innermost frame of its
traceback outside JAX, flax and SOAP, for one-line errors.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import flax
import jax
import jax.extend.core as jcore
import numpy as np
from flax import nnx

Path = tuple  # an nnx state path: ("blocks", 3, "conv", "kernel")

# Call-like primitives whose body is inlined, and the parameter holding that body.
_INLINED = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
            "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr", "remat2": "jaxpr",
            "checkpoint": "jaxpr"}
_SCOPE_PREFIX = "soap-module:"
FOLD_MAX_ELEMENTS = 1 << 22  # a causal mask of 2048 x 2048 tokens; larger constants are not evaluated
# Frames that are not the user's: JAX, flax, numpy, and the scoping wrapper below.
_LIBRARY_PREFIXES = tuple(os.path.dirname(package.__file__) + os.sep for package in (jax, flax, np)) + (
    os.path.abspath(__file__),)


@dataclass(frozen=True, eq=False)
class Const:
    """A value that depends on neither the input batch nor the parameters: a literal or a small constant
    evaluated while flattening (ReLU's 0, a mean's divisor, a causal mask); `value` is None where it was too
    large to evaluate."""

    value: np.ndarray | None


Atom = int | Const  # a step's input: a variable's number, or a constant


@dataclass(frozen=True, eq=False)
class Step:
    """One primitive application: `outputs = primitive(*inputs, **params)`, variables numbered."""

    primitive: str
    params: dict = field(repr=False)
    inputs: tuple[Atom, ...]
    outputs: tuple[int, ...]
    scope: str  # the path of the innermost module computing it ("" for the root module)
    call: int  # which call of a module computes it (a module called twice has two); 0 for the root
    where: str  # "file.py:line" of the user's code, or "" where no frame is the user's


@dataclass(frozen=True, eq=False)
class Trace:
    """The module's forward as live steps in program order.

    Variables 0..len(leaf_paths)-1 are the module's state leaves, by path (`param_paths`: those that are
    nnx.Param); `images` is the input batch's variable (images or token ids) and `logits` the output's.
    `shapes` gives every variable's shape and `dtypes` its dtype; `uses` how many steps (and the output) read
    it; `modules` the module at each scope path.
    """

    steps: tuple[Step, ...]
    leaf_paths: tuple[Path, ...]
    param_paths: frozenset[Path]
    images: int
    logits: Atom
    shapes: dict[int, tuple[int, ...]]
    dtypes: dict[int, str]
    uses: Counter
    modules: dict[str, nnx.Module]


def path_str(path: Path) -> str:
    return ".".join(str(part) for part in path)


def trace_module(module: nnx.Module, images: jax.ShapeDtypeStruct) -> Trace:
    """Trace `module(images)` in training mode into live primitive steps (see the module docstring)."""
    graphdef, state = nnx.split(module)
    flat = list(nnx.to_flat_state(state))
    leaf_paths = tuple(path for path, _ in flat)
    param_paths = frozenset(path for path, variable in flat if isinstance(variable, nnx.Param))
    leaves = [variable.get_value() for _, variable in flat]
    scopes: dict[int, str] = {}

    def forward(leaves, images):
        copy = nnx.merge(graphdef, nnx.from_flat_state(list(zip(leaf_paths, leaves))))
        copy.train()
        scopes.update({id(node): path_str(path) for path, node in nnx.iter_graph(copy)
                       if isinstance(node, nnx.Module) and path})
        logits = copy(images)
        if not isinstance(logits, jax.Array):
            raise TypeError(f"__call__ returned {type(logits).__name__}, not one array of logits")
        return logits

    with _scoped_calls(module, scopes):
        closed = jax.make_jaxpr(forward)(leaves, images)
    modules = {path_str(path): node for path, node in nnx.iter_graph(module) if isinstance(node, nnx.Module)}
    return _flatten(closed, leaf_paths, param_paths, modules)


@contextlib.contextmanager
def _scoped_calls(module: nnx.Module, scopes: dict[int, str]) -> Iterator[None]:
    """Every `__call__` defined by a class of the model's modules runs in the named scope of the calling
    module's path (looked up in `scopes` by object id) until the block ends."""
    classes = {cls for _, node in nnx.iter_graph(module) if isinstance(node, nnx.Module)
               for cls in type(node).__mro__ if "__call__" in vars(cls) and cls not in (nnx.Module, object)}
    originals = {cls: vars(cls)["__call__"] for cls in classes}
    calls = itertools.count(1)
    for cls, call in originals.items():
        cls.__call__ = _scoped(call, scopes, calls)
    try:
        yield
    finally:
        for cls, call in originals.items():
            cls.__call__ = call


def _scoped(call, scopes: dict[int, str], calls: Iterator[int]):
    @functools.wraps(call)
    def scoped_call(self, *args, **kwargs):
        path = scopes.get(id(self))
        if path is None:
            return call(self, *args, **kwargs)
        with jax.named_scope(f"{_SCOPE_PREFIX}{next(calls)}:{path}"):
            return call(self, *args, **kwargs)

    return scoped_call


class _Flattener:
    """Inlines nested calls, numbering every variable afresh (one body may be inlined several times)."""

    def __init__(self):
        self.counter = itertools.count()
        self.steps: list[Step] = []
        self.shapes: dict[int, tuple[int, ...]] = {}
        self.dtypes: dict[int, str] = {}

    def new_var(self, aval) -> int:
        number = next(self.counter)
        self.shapes[number] = tuple(aval.shape)
        self.dtypes[number] = str(aval.dtype)
        return number

    def inline(self, jaxpr: jcore.Jaxpr, consts, inputs: tuple[Atom, ...], scope: tuple[str, int],
               where: str) -> tuple[Atom, ...]:
        env: dict = dict(zip(jaxpr.constvars, (Const(np.asarray(c)) for c in consts)))
        env.update(zip(jaxpr.invars, inputs))

        def read(atom) -> Atom:
            return Const(np.asarray(atom.val)) if isinstance(atom, jcore.Literal) else env[atom]

        for eqn in jaxpr.eqns:
            eqn_scope = _innermost_scope(eqn) or scope
            eqn_where = _user_line(eqn) or where
            args = tuple(read(atom) for atom in eqn.invars)
            name = eqn.primitive.name
            folded = _fold(eqn, args)
            if folded is not None:
                env.update(zip(eqn.outvars, folded))
                continue
            if name in _INLINED:
                body = eqn.params[_INLINED[name]]
                inner, inner_consts = (body.jaxpr, body.consts) if isinstance(body, jcore.ClosedJaxpr) else (body, ())
                results = self.inline(inner, inner_consts, args, eqn_scope, eqn_where)
            else:
                results = tuple(self.new_var(var.aval) for var in eqn.outvars)
                self.steps.append(Step(name, dict(eqn.params), args, results, *eqn_scope, eqn_where))
            env.update(zip(eqn.outvars, results))
        return tuple(read(atom) for atom in jaxpr.outvars)


def _fold(eqn, args: tuple[Atom, ...]) -> tuple[Const, ...] | None:
    """The equation's outputs as constants, where every input is a known constant and the outputs are small;
    else None (it stays a step)."""
    if (eqn.primitive.name in _INLINED or eqn.effects
            or not all(isinstance(arg, Const) and arg.value is not None for arg in args)):
        return None
    if eqn.primitive.name == "broadcast_in_dim" and len(args) == 1:
        return (Const(_broadcast(args[0].value, tuple(eqn.params["shape"]), eqn.params["broadcast_dimensions"])),)
    if any(np.prod(var.aval.shape, dtype=np.int64) > FOLD_MAX_ELEMENTS for var in eqn.outvars):
        return None
    try:
        results = eqn.primitive.bind(*(arg.value for arg in args), **eqn.params)
    except Exception:  # a primitive that does not evaluate eagerly stays a step, as it would unfolded
        return None
    return tuple(Const(np.asarray(result))
                 for result in (results if eqn.primitive.multiple_results else (results,)))


def _broadcast(value: np.ndarray, shape: tuple[int, ...], dims) -> np.ndarray:
    """lax.broadcast_in_dim as a read-only numpy view (operand axis i becomes output axis dims[i])."""
    placed = [1] * len(shape)
    for axis, dim in enumerate(dims):
        placed[dim] = value.shape[axis]
    return np.broadcast_to(value.reshape(placed), shape)


def _flatten(closed: jcore.ClosedJaxpr, leaf_paths: tuple[Path, ...], param_paths: frozenset[Path],
             modules: dict[str, nnx.Module]) -> Trace:
    flattener = _Flattener()
    inputs = tuple(flattener.new_var(var.aval) for var in closed.jaxpr.invars)
    assert len(inputs) == len(leaf_paths) + 1, (len(inputs), len(leaf_paths))
    (logits,) = flattener.inline(closed.jaxpr, closed.consts, inputs, ("", 0), "")
    steps = _live(flattener.steps, logits)
    uses = Counter(atom for step in steps for atom in step.inputs if isinstance(atom, int))
    uses[logits] += 1
    return Trace(tuple(steps), leaf_paths, param_paths, inputs[-1], logits, flattener.shapes, flattener.dtypes,
                 uses, modules)


def _live(steps: list[Step], output: Atom) -> list[Step]:
    """The steps the output depends on, in their order."""
    needed = {output}
    kept = []
    for step in reversed(steps):
        if needed.intersection(step.outputs):
            kept.append(step)
            needed.update(atom for atom in step.inputs if isinstance(atom, int))
    return kept[::-1]


def _innermost_scope(eqn) -> tuple[str, int] | None:
    """(module path, call number) of the innermost module call in the equation's name stack."""
    for entry in reversed(eqn.source_info.name_stack.stack):
        name = getattr(entry, "name", "")
        if isinstance(name, str) and name.startswith(_SCOPE_PREFIX):
            call, path = name[len(_SCOPE_PREFIX):].split(":", 1)
            return path, int(call)
    return None


def _user_line(eqn) -> str | None:
    traceback = eqn.source_info.traceback
    for frame in (traceback.frames if traceback is not None else ()):
        if not os.path.abspath(frame.file_name).startswith(_LIBRARY_PREFIXES):
            return f"{frame.file_name}:{frame.line_num}"
    return None
