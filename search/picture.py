"""A picture of strategies: which slice of every op each device computes, one panel per strategy.

    python -m search.optimize --model alexnet --gpus 4 --machine p100-4x4    # writes strategy.png and .svg
    draw_strategies(["owt.png"], graph, {"owt": owt(graph, 4)}, num_devices=4, devices_per_node=4)

In a panel, ops run down in program order and devices across. The cell of (op, device) is the slice of
the op's output that device computes (task k computes output shard k on devices[k]: soap.config), drawn
as one band per label the op is split on, in its role's colour (sample: the batch; channel: the output
channels, which splits the weights; height and width: the image; heads, sequence, hidden, vocab for
transformers; replica: a copy of the whole op), hatched where the label is contracted (the device holds a
partial sum), shaded by the slice's index along the label, lightest first, and labelled with it (`S2/4`: the second of four batch slices) where the cells are
large enough. A grey cell computes the whole op; an empty one none of it. So data parallelism is a blue
block, OWT blue convolutions over orange dense layers, and ops on a subset of the devices leave the
others blank.

Ops of parallel branches (from a fork to its join, as in ResNet's projection shortcuts and Inception's
blocks) sit side by side, each branch in a lane of its own, a copy of the device columns: an op's row is
its depth (one more than its deepest producer), and it continues its producer's lane unless another op
already holds that cell. Faint lines separate the machine's nodes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from models.cli import write_figure
from models.graph import OpGraph
from models.labels import output_labels
from soap.strategy import Strategy

# One colour per label role a degree can split (models.labels.Role), with the letter of its label; a band of
# a label the output does not carry (a contracting label: the device holds a partial sum) is hatched.
ROLES = {
    "sample": ("S", "#1f77b4"),
    "channel": ("C", "#ff7f0e"),
    "height": ("H", "#2ca02c"),
    "width": ("W", "#17becf"),
    "heads": ("A", "#9467bd"),
    "sequence": ("L", "#8c564b"),
    "hidden": ("D", "#bcbd22"),
    "vocab": ("V", "#e377c2"),
    "replica": ("R", "#7f7f7f"),
}
WHOLE = "#b0b0b0"
LANE_BACKGROUND = "#f3f3f3"  # a device that computes nothing of an op
LANE_GAP = 0.6  # columns of blank between two lanes
LABEL_MIN_COLUMN_IN = 0.42  # slice labels only in cells at least this wide (inches)


def layout(graph: OpGraph) -> dict[str, tuple[int, int]]:
    """Op name -> (row, lane): row the op's depth, lane its branch (0 for a chain)."""
    places: dict[str, tuple[int, int]] = {}
    taken: set[tuple[int, int]] = set()
    for op in graph.ops:
        producers = graph.producers(op.name)
        row = 1 + max((places[p][0] for p in producers), default=-1)
        if len(producers) == 1:
            producer = producers[0]
            lane = places[producer][1] + graph.consumers(producer).index(op.name)  # a fork's k-th branch
        else:
            lane = min((places[p][1] for p in producers), default=0)  # a join returns to its first branch
        while (row, lane) in taken:
            lane += 1
        taken.add((row, lane))
        places[op.name] = (row, lane)
    return places


def _row_label(names: list[str]) -> str:
    """The ops of one row, left to right; a dotted prefix they all share said once (`Mixed_5b: a | b`)."""
    if len(names) == 1:
        return names[0]
    prefix = os.path.commonprefix(names)
    prefix = prefix[:prefix.rfind(".") + 1]
    joined = " | ".join(name[len(prefix):] for name in names)
    return f"{prefix[:-1]}: {joined}" if prefix else joined


def _shade(colour: str, index: int, degree: int) -> tuple[float, float, float]:
    """`colour` mixed with white: the first slice lightest, the last the colour itself."""
    from matplotlib.colors import to_rgb

    white = 0.6 * (1 - index / (degree - 1))
    return tuple(c + (1 - c) * white for c in to_rgb(colour))


def draw_strategies(paths: Sequence[str], graph: OpGraph, strategies: Mapping[str, Strategy], num_devices: int,
                    devices_per_node: int | None = None, titles: Mapping[str, str] | None = None) -> None:
    """One figure, a panel per strategy in the given order, written to each path (its extension: png, svg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Patch, Rectangle

    places = layout(graph)
    rows = 1 + max(row for row, _ in places.values())
    lanes = 1 + max(lane for _, lane in places.values())
    columns = lanes * num_devices + (lanes - 1) * LANE_GAP
    column_in = min(0.5, max(0.06, 5.0 / columns))
    row_in = 0.3 if rows <= 40 else max(0.12, 12.0 / rows)
    row_ops: dict[int, list[str]] = {}
    for name, (row, lane) in sorted(places.items(), key=lambda item: item[1]):
        row_ops.setdefault(row, []).append(name)
    row_names = {row: _row_label(names) for row, names in row_ops.items()}
    label_in = min(4.5, 0.07 * max(len(text) for text in row_names.values()) + 0.2)
    font = 8 if row_in >= 0.2 else 5
    figure, axes = plt.subplots(1, len(strategies), sharey=True, squeeze=False,
                                figsize=(label_in + len(strategies) * (columns * column_in + 0.3),
                                         rows * row_in + 1.2))
    used_roles: set[str] = set()
    whole_used = False
    for ax, (name, strategy) in zip(axes[0], strategies.items()):
        patches = []
        for op in graph.ops:
            row, lane = places[op.name]
            config = strategy[op.name]
            dims = [label.role.value for label in op.config_labels]
            partial = [label.name not in output_labels(op.space) and label.role.value != "replica"
                       and label.name not in op.space.statistics for label in op.config_labels]
            split = [i for i, degree in enumerate(config.degrees) if degree > 1]
            for task, device in enumerate(config.devices):
                x = lane * (num_devices + LANE_GAP) + device
                index = config.task_index(task)
                if not split:
                    patches.append(Rectangle((x, row), 1, 1, facecolor=WHOLE))
                    whole_used = True
                    continue
                height = 1 / len(split)
                for band, i in enumerate(split):
                    used_roles.add(dims[i])
                    colour = _shade(ROLES[dims[i]][1], index[i], config.degrees[i])
                    patches.append(Rectangle((x, row + band * height), 1, height, facecolor=colour,
                                             hatch="////" if partial[i] else None))
                    if column_in >= LABEL_MIN_COLUMN_IN and row_in * height >= 0.14:
                        label = f"{ROLES[dims[i]][0]}{index[i] + 1}/{config.degrees[i]}"
                        ax.text(x + 0.5, row + (band + 0.5) * height, label, ha="center", va="center",
                                fontsize=6.5 if height == 1 else 5)
        ax.add_collection(PatchCollection(patches, match_original=True, edgecolor="white", linewidth=0.5))
        for lane in range(lanes):
            left = lane * (num_devices + LANE_GAP)
            ax.add_patch(Rectangle((left, 0), num_devices, rows, facecolor=LANE_BACKGROUND, zorder=0))
            if devices_per_node and devices_per_node < num_devices:
                for node in range(devices_per_node, num_devices, devices_per_node):
                    ax.axvline(left + node, color="#555555", linewidth=0.6, alpha=0.5)
        ax.set_xlim(-0.2, columns + 0.2)
        ax.set_ylim(rows, 0)
        step = 1 if column_in * 72 >= 3 * font else (4 if num_devices <= 16 else max(4, num_devices // 4))
        ticks = [(lane * (num_devices + LANE_GAP) + device, device)
                 for lane in range(lanes) for device in range(0, num_devices, step)]
        ax.set_xticks([x + 0.5 for x, _ in ticks], [str(device) for _, device in ticks], fontsize=font)
        ax.set_xlabel("device" if lanes == 1 else "device (each branch of a block in a lane of its own)",
                      fontsize=font + 1)
        ax.set_title((titles or {}).get(name, name), fontsize=9)
        ax.tick_params(length=0)
        for side in ("top", "right", "bottom", "left"):
            ax.spines[side].set_visible(False)
    axes[0][0].set_yticks([row + 0.5 for row in row_names], list(row_names.values()), fontsize=font)
    legend = [Patch(facecolor=LANE_BACKGROUND, label="computes none of the op")]
    legend += [Patch(facecolor=ROLES[role][1], label=f"{ROLES[role][0]}: {role} split") for role in ROLES
               if role in used_roles]
    if whole_used:
        legend.append(Patch(facecolor=WHOLE, label="whole op"))
    figure.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=8, frameon=False)
    figure.suptitle(f"{graph.model} {graph.dataset}, batch {graph.batch_size}: which slice of each op each "
                    f"device computes (lighter: earlier slice)", fontsize=10)
    figure.tight_layout(rect=(0, 0.06 if rows > 20 else 0.1, 1, 0.97))
    for path in paths:
        write_figure(path, figure)
    plt.close(figure)

