"""The op algebra: an op's computation over labelled dims (einsum style), and what a split of its labels means.

    from models.labels import tasks_input_boxes
    op.space                    # dense fc6: x[sample in_channel] . kernel[in_channel channel] -> y[sample channel]
    tasks_input_boxes(op.space, (2, 1), 0)      # the box of input 0 that each of the 2 tasks reads

A kind declares its computation as a `Space` (models/kinds/, `KindSpec.space`): every label with its size
and role, which labels each input, parameter, state array and the output carry, and which labels a config
may split (`config_labels`, in the order of a ParallelConfig's degrees). Everything a split implies follows
from the labels alone, here, and the simulator's task graph, the space, the lowering and the runtime all
ask these functions:
- task k computes the shard of every label given by its index in the degree grid (row-major), so its
  output box is its shard of the output's labels (`tasks_output_boxes`);
- it reads, of each input, its shard of the labels that input carries and all of the others
  (`tasks_input_boxes`); an input dim may also be a window over an output label (conv and pool: the halo
  of a height or width split, `Window`) or a part of one at an offset (concat's channels, `Part`);
- its parameters and state are its shard of their labels (`local_shape`, `param_axes`); tasks with the same
  index on the parameters' labels hold the same slice and all-reduce its gradient (`replica_groups`);
- the gradient of an input is a partial sum over the split labels the input does not carry (a dense or
  conv split on its output channels): the tasks that differ only there all-reduce it
  (`partial_sum_groups`, `has_partial_input_gradient`);
- a split of a label the output does not carry (a contracted one: a row-split dense, a conv or dense
  split on its input channels) leaves each task a partial sum of its output box, summed over the tasks
  that differ only there before a reader reads it (`output_partial`, `output_partial_groups`);
- statistics reduced over some labels (batch norm's) are all-reduced by the tasks that differ only on
  those (`statistics_groups`);
- at run time an input is sharded on the labels it shares with the split (`input_axes`), read whole where
  the kind says (`Space.whole_when_split`: a conv split on its channels reads its image whole) and where a
  split does not divide its dim; a kind may rule out splitting two labels at once (`Space.exclusive`,
  `exclusive_splits`: a conv's input channels and its height, which XLA computes wrongly).
Only what labels cannot say stays in a kind's module: halos (`Window`), the FLOPs, the JAX computation.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

Shape = tuple[int, ...]
# A box is a half-open [start, stop) range per dim of a tensor, in that tensor's global coordinates.
Box = tuple[tuple[int, int], ...]


class Role(str, enum.Enum):
    """What a label means to the policies that split it (baselines, starts): never a model's name."""

    SAMPLE = "sample"
    SEQUENCE = "sequence"
    HEADS = "heads"
    HIDDEN = "hidden"
    VOCAB = "vocab"
    CHANNEL = "channel"
    HEIGHT = "height"
    WIDTH = "width"
    WINDOW = "window"  # a kernel's taps (conv's kh, kw): never split
    REPLICA = "replica"  # copies of the whole computation (Megatron's layer norms on every rank): see `replicated`


@dataclass(frozen=True)
class Label:
    name: str
    size: int
    role: Role


@dataclass(frozen=True)
class Window:
    """An input dim read through a window over output label `label`: output rows [a, b) read input rows
    [a*stride - pad_lo, (b-1)*stride - pad_lo + kernel), clipped to the input's `size` (conv, pool)."""

    label: str
    size: int
    kernel: int
    stride: int
    pad_lo: int


@dataclass(frozen=True)
class Part:
    """An input dim that is the part [offset, offset + size) of output label `label` (a concat's input)."""

    label: str
    offset: int
    size: int


@dataclass(frozen=True)
class Offset:
    """An input dim whose part [offset, offset + label size) is output label `label` (a channel slice's input,
    the inverse of `Part`): rows [a, b) of the label read input rows [offset + a, offset + b) of its `size`."""

    label: str
    offset: int
    size: int


@dataclass(frozen=True)
class Merged:
    """A dim that is several labels merged row-major, e.g. hidden = (heads, head_dim) where a reshape splits
    or merges attention heads. Only its first label may be split: a shard of it is a contiguous range."""

    labels: tuple[str, ...]


Axis = str | Window | Part | Offset | Merged  # what one dim of a tensor carries (an output: a label or Merged)


def axis_label(axis: Axis) -> str:
    """The label whose split shards the dim (a merged dim's first)."""
    if isinstance(axis, str):
        return axis
    return axis.labels[0] if isinstance(axis, Merged) else axis.label


def axis_labels(axis: Axis) -> tuple[str, ...]:
    """Every label the dim carries."""
    return axis.labels if isinstance(axis, Merged) else (axis_label(axis),)


@dataclass(frozen=True)
class Space:
    """An op's labelled iteration space. `output` and `inputs[j]` name what each dim of the output and of
    input j carries; `params` and `state` name each array's labels (a dim may be `Merged`: a grouped conv's
    kernel channels, whole groups first); `config_labels` are the labels a config
    gives degrees to, in order, `splittable` those it may split above 1 (a label the output does not carry,
    split, leaves each task a partial sum of the output: `output_partial`); `statistics` the labels the
    op's statistics reduce over (all-reduced inside the op, so never a partial output: a vocabulary-split
    cross-entropy's max and sum);
    `whole_when_split`: (label, labels) pairs, a split of the first making the op read its inputs whole on
    the others; `exclusive`: (label, labels) pairs, a split of the first ruling out splits of the others
    (see models/kinds/conv.py for why: XLA computes such splits wrongly); `units`: (label, count) pairs, a
    label that is `count` equal units merged whose shards must be whole units, so its degree divides `count`
    rather than its size (a dense's h*k features that the user's module holds as h heads:
    models/kinds/dense.py)."""

    labels: tuple[Label, ...]
    output: tuple[str | Merged, ...]
    inputs: tuple[tuple[Axis, ...], ...]
    params: tuple[tuple[str, tuple[str | Merged, ...]], ...] = ()
    state: tuple[tuple[str, tuple[str | Merged, ...]], ...] = ()
    config_labels: tuple[str, ...] | None = None  # None: the output's labels
    splittable: frozenset[str] | None = None  # None: every config label
    statistics: frozenset[str] = frozenset()
    whole_when_split: tuple[tuple[str, frozenset[str]], ...] = ()
    units: tuple[tuple[str, int], ...] = ()
    exclusive: tuple[tuple[str, frozenset[str]], ...] = ()

    def __post_init__(self) -> None:
        names = [label.name for label in self.labels]
        assert len(set(names)) == len(names), names
        if self.config_labels is None:
            object.__setattr__(self, "config_labels", self.output)
        if self.splittable is None:
            object.__setattr__(self, "splittable", frozenset(self.config_labels))
        used = {*(n for a in self.output for n in axis_labels(a)), *(n for axes in self.inputs for a in axes for n in axis_labels(a)),
                *(n for _, axes in self.params + self.state for a in axes for n in axis_labels(a)), *self.config_labels}
        assert used <= set(names), used - set(names)
        sizes = dict(zip(names, (label.size for label in self.labels)))
        assert all(name in self.config_labels and sizes[name] % count == 0 for name, count in self.units), self.units

    @functools.cached_property
    def by_name(self) -> Mapping[str, Label]:
        return {label.name: label for label in self.labels}

    def size(self, name: str) -> int:
        return self.by_name[name].size

    def shape(self, names: tuple[str, ...]) -> Shape:
        return tuple(self.size(n) for n in names)

    def degree_map(self, degrees: tuple[int, ...]) -> dict[str, int]:
        """Label -> degree under a config's `degrees` (labels it does not name: 1)."""
        assert len(degrees) == len(self.config_labels), (self.config_labels, degrees)
        return dict(zip(self.config_labels, degrees))


REPLICA = Label("replica", 1, Role.REPLICA)


def replicated(space: Space) -> Space:
    """`space` with a `replica` config label: a degree r > 1 has r tasks compute the same shard, as
    Megatron computes layer norms, dropout and residuals whole on every rank of a tensor-parallel group.
    No tensor carries it, so replicas read, write and hold the same boxes; they need no partial sums and
    no gradient all-reduce among themselves (their gradients are equal), and a reader takes the replica on
    its own device where there is one (simulator.taskgraph). Its degree divides the device count, not a
    size (soap.space)."""
    return dataclasses.replace(space, labels=space.labels + (REPLICA,),
                               config_labels=space.config_labels + (REPLICA.name,),
                               splittable=space.splittable | {REPLICA.name})


def replica_degree(space: Space, degrees: tuple[int, ...]) -> int:
    """How many copies of each shard the split makes (1 without a replica label)."""
    return space.degree_map(degrees).get(REPLICA.name, 1)


def task_grid(degrees: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Shard indices in task order (row-major over the degree grid)."""
    return list(itertools.product(*(range(d) for d in degrees)))


def _shard(size: int, degree: int, index: int) -> tuple[int, int]:
    return index * (size // degree), (index + 1) * (size // degree)


def shard_box(shape: Shape, degrees: tuple[int, ...], index: tuple[int, ...]) -> Box:
    """The box of shard `index` (one index per dim) of a tensor split into equal parts by `degrees`."""
    return tuple(_shard(size, d, i) for size, d, i in zip(shape, degrees, index))


def shard_shape(shape: Shape, degrees: tuple[int, ...]) -> Shape:
    return tuple(size // d for size, d in zip(shape, degrees))


def label_ranges(space: Space, degrees: tuple[int, ...], index: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    """The range of every config label that task `index` computes."""
    return {name: _shard(space.size(name), degree, i) for name, degree, i in zip(space.config_labels, degrees, index)}


def tasks_output_boxes(space: Space, degrees: tuple[int, ...]) -> list[Box]:
    """The output box of each task, in task order (tasks holding partial sums of one box share it)."""
    result = []
    for index in task_grid(degrees):
        ranges = label_ranges(space, degrees, index)
        result.append(tuple(_axis_range(space, axis, ranges) for axis in space.output))
    return result


def tasks_array_boxes(space: Space, degrees: tuple[int, ...], names: tuple[str | Merged, ...]) -> list[Box]:
    """The box of an array carrying labels `names` (a parameter) that each task holds, in task order."""
    return [tuple(_axis_range(space, axis, ranges) for axis in names)
            for ranges in (label_ranges(space, degrees, index) for index in task_grid(degrees))]


def whole_labels(space: Space, degrees: tuple[int, ...]) -> frozenset[str]:
    """The labels the op reads whole under `degrees` whatever their split (`Space.whole_when_split`)."""
    split = space.degree_map(degrees)
    return frozenset(n for label, names in space.whole_when_split if split[label] > 1 for n in names)


def exclusive_splits(space: Space, degrees: tuple[int, ...]) -> tuple[str, str] | None:
    """A pair of labels that `degrees` splits both of although `Space.exclusive` rules it out, else None."""
    split = space.degree_map(degrees)
    return next(((label, other) for label, others in space.exclusive if split[label] > 1
                 for other in sorted(others) if split[other] > 1), None)


def input_box(space: Space, input_index: int, ranges: Mapping[str, tuple[int, int]],
              whole: frozenset[str] = frozenset(), split: tuple[int, ...] | None = None) -> Box:
    """The box of input `input_index` that computing the label `ranges` reads: the range of each label the
    input carries (a window's halo, a part's overlap), the whole of labels `ranges` lacks or `whole` names,
    and the whole dim where its run-time split (`split`, one degree per dim) does not divide it."""
    box = []
    for d, axis in enumerate(space.inputs[input_index]):
        size, name = _axis_size(space, axis), axis_label(axis)
        degree = 1 if split is None else split[d]
        if name in whole or name not in ranges or (degree > 1 and size % degree):
            box.append((0, size))
        else:
            box.append(_axis_range(space, axis, ranges))
    return tuple(box)


def tasks_input_boxes(space: Space, degrees: tuple[int, ...], input_index: int) -> list[Box]:
    """The box of input `input_index` each task reads at run time, in task order (`input_box` with the
    labels the kind reads whole, `whole_labels`, and the run-time split of `input_degrees`)."""
    whole = whole_labels(space, degrees)
    split = input_degrees(space, degrees)[input_index]
    return [input_box(space, input_index, label_ranges(space, degrees, index), whole, split)
            for index in task_grid(degrees)]


def _axis_size(space: Space, axis: Axis) -> int:
    if isinstance(axis, str):
        return space.size(axis)
    if isinstance(axis, Merged):
        return math.prod(space.size(n) for n in axis.labels)
    return axis.size


def _axis_range(space: Space, axis: Axis, ranges: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
    """The range of a dim for the label `ranges` (a label `ranges` lacks: whole)."""
    if isinstance(axis, Merged):
        inner = math.prod(space.size(n) for n in axis.labels[1:])
        assert all(ranges.get(n, (0, space.size(n))) == (0, space.size(n)) for n in axis.labels[1:]), axis
        start, stop = ranges.get(axis.labels[0], (0, space.size(axis.labels[0])))
        return start * inner, stop * inner
    name = axis_label(axis)
    if name not in ranges:
        return 0, _axis_size(space, axis)
    start, stop = ranges[name]
    if isinstance(axis, Window):
        first = start * axis.stride - axis.pad_lo
        last = (stop - 1) * axis.stride - axis.pad_lo + axis.kernel
        return max(first, 0), min(last, axis.size)
    if isinstance(axis, Part):
        low, high = max(start, axis.offset) - axis.offset, min(stop, axis.offset + axis.size) - axis.offset
        return (low, high) if low < high else (0, 0)
    if isinstance(axis, Offset):
        return start + axis.offset, stop + axis.offset
    return start, stop


def input_axes(space: Space, degrees: tuple[int, ...]) -> tuple[tuple[str | None, ...], ...]:
    """For each input, the config label each of its dims is sharded on at run time (None: whole): a label
    the input carries and the config splits, unless the kind reads it whole (`whole_labels`); a part
    (concat's) and an offset range (a channel slice's: its shards do not align with the input's) are read
    whole. Dims a split does not divide are left to the caller (`input_degrees`)."""
    split = space.degree_map(degrees)
    whole = whole_labels(space, degrees)
    return tuple(tuple(_sharded_on(a, split, whole) for a in axes) for axes in space.inputs)


def _sharded_on(axis: Axis, split: Mapping[str, int], whole: frozenset[str] = frozenset()) -> str | None:
    name = axis_label(axis)
    return name if not isinstance(axis, (Part, Offset)) and split.get(name, 1) > 1 and name not in whole else None


def output_axes(space: Space, degrees: tuple[int, ...]) -> tuple[str | None, ...]:
    """The config label each output dim is sharded on (None: whole, or replicated over a partial sum's
    labels once it is summed)."""
    split = space.degree_map(degrees)
    return tuple(_sharded_on(axis, split) for axis in space.output)


def input_degrees(space: Space, degrees: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """For each input, the degree each of its dims is split by at run time (`input_axes`)."""
    split = space.degree_map(degrees)
    return tuple(tuple(1 if name is None else split[name] for name in names) for names in input_axes(space, degrees))


def local_shape(space: Space, degrees: tuple[int, ...], names: tuple[str | Merged, ...]) -> Shape:
    """The shape one task holds of a tensor carrying labels `names` (parameters, state, output)."""
    split = space.degree_map(degrees)
    return tuple(math.prod(space.size(n) // split.get(n, 1) for n in axis_labels(axis)) for axis in names)


def local_input_shape(space: Space, degrees: tuple[int, ...], input_index: int) -> Shape:
    """The shape of input `input_index` one task's local op reads: its shard of each label; where the split
    divides a windowed label, every window's span (its halo included; the local op is then a VALID window,
    the same computation for edge and middle shards), else the whole dim; a part's share."""
    split = space.degree_map(degrees)
    out_local = dict(zip(space.config_labels, shard_shape(space.shape(space.config_labels), degrees)))
    windowed = splits_window(space, degrees)
    shape = []
    for axis in space.inputs[input_index]:
        if isinstance(axis, Window):
            shape.append((out_local[axis.label] - 1) * axis.stride + axis.kernel if windowed else axis.size)
        elif isinstance(axis, Part):
            shape.append(max(axis.size // split.get(axis.label, 1), 1))
        else:
            shape.append(math.prod(space.size(n) // split.get(n, 1) for n in axis_labels(axis)))
    return tuple(shape)


def splits_window(space: Space, degrees: tuple[int, ...]) -> bool:
    """Whether the split divides a label some input reads through a window (a task then computes a halo)."""
    split = space.degree_map(degrees)
    return any(isinstance(a, Window) and split.get(a.label, 1) > 1 for axes in space.inputs for a in axes)


def param_axes(space: Space, names: tuple[str | Merged, ...], degrees: tuple[int, ...]) -> tuple[str | None, ...]:
    """The config label splitting each axis of a parameter or state array carrying `names` (None: whole)."""
    split = space.degree_map(degrees)
    return tuple(axis_label(axis) if split.get(axis_label(axis), 1) > 1 else None for axis in names)


def groups_by(space: Space, degrees: tuple[int, ...], key_labels: frozenset[str]) -> list[list[int]]:
    """Task indices grouped by their shard index on `key_labels` (of the config labels), in task order."""
    positions = [p for p, name in enumerate(space.config_labels) if name in key_labels]
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, index in enumerate(task_grid(degrees)):
        groups.setdefault(tuple(index[p] for p in positions), []).append(k)
    return list(groups.values())


def param_labels(space: Space) -> frozenset[str]:
    """The labels some parameter carries."""
    return frozenset(n for _, names in space.params for axis in names for n in axis_labels(axis))


def _copies(space: Space) -> frozenset[str]:
    return frozenset(label.name for label in space.labels if label.role is Role.REPLICA)


def replica_groups(space: Space, degrees: tuple[int, ...]) -> list[list[int]]:
    """Tasks holding the same parameter slice (same index on the parameters' labels) from different data:
    they all-reduce its gradient before the update (copies of one computation, `replicated`, do not)."""
    return groups_by(space, degrees, param_labels(space) | _copies(space))


def _carried(axes: tuple[Axis, ...]) -> frozenset[str]:
    return frozenset(n for a in axes for n in axis_labels(a))


def partial_sum_groups(space: Space, degrees: tuple[int, ...], input_index: int) -> list[list[int]]:
    """Tasks reading the same box of input `input_index` (same index on the labels it carries): where the
    split divides a label it does not carry, each holds a partial sum of its gradient, summed over the group."""
    return groups_by(space, degrees, _carried(space.inputs[input_index]) | _copies(space))


def has_partial_input_gradient(space: Space, degrees: tuple[int, ...], input_index: int) -> bool:
    """Whether the split divides a config label input `input_index` does not carry (see `partial_sum_groups`)."""
    carried = _carried(space.inputs[input_index]) | _copies(space)
    return any(d > 1 and name not in carried for name, d in zip(space.config_labels, degrees))


def output_labels(space: Space) -> frozenset[str]:
    """The labels the output carries."""
    return _carried(space.output)


def output_partial(space: Space, degrees: tuple[int, ...]) -> bool:
    """Whether each task's output is a partial sum: the split divides a label the output does not carry
    (a contracting label: a row-split dense, a vocabulary-split embedding), which is not a statistic."""
    carried = _carried(space.output) | space.statistics | _copies(space)
    return any(d > 1 and name not in carried for name, d in zip(space.config_labels, degrees))


def output_partial_groups(space: Space, degrees: tuple[int, ...]) -> list[list[int]]:
    """Tasks holding partial sums of one output box (same index on the output's labels): summed over the
    group before a consumer reads it (an all-reduce, or a reduce-scatter)."""
    return groups_by(space, degrees, _carried(space.output) | _copies(space))


def statistics_groups(space: Space, degrees: tuple[int, ...]) -> list[list[int]]:
    """Tasks all-reducing one slice of the op's statistics: those differing only on `Space.statistics`."""
    return groups_by(space, degrees, frozenset(space.config_labels) - space.statistics)


def splits_statistics(space: Space, degrees: tuple[int, ...]) -> bool:
    split = space.degree_map(degrees)
    return any(split.get(n, 1) > 1 for n in space.statistics)


def splits_inner_dim(space: Space, degrees: tuple[int, ...]) -> bool:
    """Whether the output is split on its last dim (channels, features) and has more than one dim: XLA then
    transposes around the collectives that move it (simulator.machine's inner-dim link)."""
    split = space.degree_map(degrees)
    return len(space.output) > 1 and split.get(axis_label(space.output[-1]), 1) > 1
