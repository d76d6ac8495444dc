"""The cheapest choice per op under an additive cost (per op + per edge), by a dynamic program over the
graph's series-parallel structure (OptCNN's graph reduction; Unity's machine mapping splits the graph the
same way). search.starts prices the choices by the simulator's tasks and makes it a start.

    choices, cost = min_cost_choices(num_ops, edges, op_costs, edge_costs)

Ops are 0..n-1 in a topological order; `op_costs[i][a]` is op i's cost under its choice a and
`edge_costs[(p, c)][a, b]` the cost of the edge p -> c under choices a of p and b of c. A virtual source
feeds every op without producers and a virtual sink reads every op without consumers. Between a source s
and a sink t (with the ops between them), the problem splits:
- in parallel: the ops fall into parts with no edge between them; given the choices of s and t, each
  part is solved alone and the costs add;
- in series: an op c that every path from s to t crosses (no edge jumps over it); the cost table from s
  to t is the min-plus product of the table s -> c, c's cost and the table c -> t.
A part that splits neither way (not series-parallel) raises NotSeriesParallelError. Tables are
(choices of s) x (choices of t) arrays, so one series step costs K^3 for K choices per op.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Choose = Callable[[int, int, int], dict[int, int]]


class NotSeriesParallelError(ValueError):
    """The graph has a part that is neither a series nor a parallel composition."""


def min_cost_choices(num_ops: int, edges: Sequence[tuple[int, int]], op_costs: Sequence[np.ndarray],
                     edge_costs: dict[tuple[int, int], np.ndarray]) -> tuple[list[int], float]:
    """The choice index of every op minimising the sum of op and edge costs, and that sum. Edges listed
    twice (an op read twice by one consumer) count once in `edge_costs`; the caller sums them there."""
    return batched_min_cost_choices(num_ops, edges, op_costs, edge_costs)[0]


def batched_min_cost_choices(num_ops: int, edges: Sequence[tuple[int, int]], op_costs: Sequence[np.ndarray],
                             edge_costs: dict[tuple[int, int], np.ndarray]) -> list[tuple[list[int], float]]:
    """`min_cost_choices` for several cost sets on one graph at once: each cost may have a leading axis
    over the sets (op i's [set, choice], an edge's [set, choice of p, choice of c]; one without it is the
    same in every set). One (choices, cost) per set, each what `min_cost_choices` gives for that set, bit
    for bit. The tables hold sets x K^3 floats per series step: the caller sizes the sets."""
    problem = _Problem(num_ops, edges, op_costs, edge_costs)
    table, choose = problem.solve(problem.source, problem.sink, tuple(range(num_ops)))
    solved = []
    for r in range(table.shape[0]):
        chosen = choose(r, 0, 0)
        solved.append(([chosen[i] for i in range(num_ops)], float(table[r, 0, 0])))
    return solved


class _Problem:
    """The graph with a virtual source and sink (one choice each, costs 0), and the recursive solve. Costs
    and tables carry a leading axis over the cost sets (of length 1 where one serves every set)."""

    def __init__(self, num_ops: int, edges: Sequence[tuple[int, int]], op_costs: Sequence[np.ndarray],
                 edge_costs: dict[tuple[int, int], np.ndarray]):
        self.source, self.sink = -1, num_ops
        self.op_costs = {i: _with_sets(op_costs[i], 1) for i in range(num_ops)}
        self.op_costs[self.source] = self.op_costs[self.sink] = np.zeros((1, 1))
        pairs = set(edges)
        has_producer = {c for _, c in pairs}
        has_consumer = {p for p, _ in pairs}
        pairs |= {(self.source, i) for i in range(num_ops) if i not in has_producer}
        pairs |= {(i, self.sink) for i in range(num_ops) if i not in has_consumer}
        self.consumers: dict[int, list[int]] = {}
        for p, c in sorted(pairs):
            self.consumers.setdefault(p, []).append(c)
        self.edge_costs = {pair: _with_sets(edge_costs.get(pair, 0.0), 2) * np.ones(
            (1, self.op_costs[pair[0]].shape[1], self.op_costs[pair[1]].shape[1])) for pair in pairs}

    def solve(self, s: int, t: int, inner: tuple[int, ...]) -> tuple[np.ndarray, Choose]:
        """(table, choose): table[r, a, b] is the least cost in set r of the `inner` ops and of every edge
        among s, the inner ops and t but a direct s -> t edge, given choices a of s and b of t; choose(r, a,
        b) gives the inner ops' choices reaching it. `inner` is in topological order."""
        if not inner:
            return np.zeros((1, self.op_costs[s].shape[1], self.op_costs[t].shape[1])), lambda r, a, b: {}
        parts = self._parts(inner)
        if len(parts) > 1:
            solved = [self.solve(s, t, part) for part in parts]
            return sum(table for table, _ in solved), lambda r, a, b: {
                op: choice for _, choose in solved for op, choice in choose(r, a, b).items()}
        return self._series(s, t, inner)

    def _series(self, s: int, t: int, inner: tuple[int, ...]) -> tuple[np.ndarray, Choose]:
        """The min-plus product along the ops every path from s to t crosses (the cuts), in order, each
        stretch between two of them solved on its own; iterative, so a 250-op chain recurses once."""
        cuts = self._cuts(s, t, inner)
        if not cuts:
            raise NotSeriesParallelError(f"ops {list(inner)} between {s} and {t} are neither in series nor in "
                                         f"parallel")
        stops = [s, *(inner[position] for position in cuts), t]
        stretches = [inner[a + 1:b] for a, b in zip([-1, *cuts], [*cuts, len(inner)])]
        solved = [self.solve(u, v, stretch) for u, v, stretch in zip(stops, stops[1:], stretches)]
        steps = [table + self.edge_costs.get((u, v), 0.0) for (table, _), u, v in zip(solved, stops, stops[1:])]
        # The cuts' own costs; t's is the caller's.
        stop_costs = [self.op_costs[v] for v in stops[1:-1]] + [np.zeros((1, self.op_costs[t].shape[1]))]
        reached = steps[0] + stop_costs[0][:, None, :]  # [set, choice of s, choice of the first cut]
        came_from = []
        for step, cost in zip(steps[1:], stop_costs[1:]):
            through = reached[:, :, :, None] + step[:, None, :, :] + cost[:, None, None, :]
            came_from.append(through.argmin(axis=2))
            reached = through.min(axis=2)

        def choose(r: int, a: int, b: int) -> dict[int, int]:
            choices = [b]
            for back in reversed(came_from):
                choices.append(int(back[r if len(back) > 1 else 0, a, choices[-1]]))
            choices = [a, *reversed(choices)]
            chosen = {stop: choice for stop, choice in zip(stops[1:-1], choices[1:-1])}
            for (_, stretch_choose), u_choice, v_choice in zip(solved, choices, choices[1:]):
                chosen.update(stretch_choose(r, u_choice, v_choice))
            return chosen

        return reached, choose

    def _cuts(self, s: int, t: int, inner: tuple[int, ...]) -> list[int]:
        """Positions in `inner` of the ops that no edge from s or an earlier inner op jumps over."""
        at = {op: position for position, op in enumerate(inner)}
        at[t] = len(inner)
        # s may feed ops of other parallel parts: only its edges into this one count.
        reach = max((at[c] for c in self.consumers.get(s, ()) if c in at and c != t), default=-1)
        cuts = []
        for position, c in enumerate(inner):
            if reach <= position:
                cuts.append(position)
            outside = [d for d in self.consumers.get(c, ()) if d not in at]
            if outside:
                raise NotSeriesParallelError(f"op {c} between {s} and {t} also feeds {outside}: the graph is "
                                             f"neither in series nor in parallel there")
            reach = max(reach, *(at[d] for d in self.consumers.get(c, ())))
        return cuts

    def _parts(self, inner: tuple[int, ...]) -> list[tuple[int, ...]]:
        """`inner` split into parts with no edge between them, each in topological order."""
        members = set(inner)
        root = {op: op for op in inner}

        def find(op: int) -> int:
            while root[op] != op:
                root[op] = root[root[op]]
                op = root[op]
            return op

        for p in inner:
            for c in self.consumers.get(p, ()):
                if c in members:
                    root[find(p)] = find(c)
        parts: dict[int, list[int]] = {}
        for op in inner:
            parts.setdefault(find(op), []).append(op)
        return [tuple(part) for part in parts.values()]


def _with_sets(costs, rank: int) -> np.ndarray:
    """`costs` as floats with a leading axis over the cost sets (length 1 where it has none)."""
    costs = np.asarray(costs, dtype=float)
    return costs if costs.ndim == rank + 1 else costs.reshape((1,) * (rank + 1 - costs.ndim) + costs.shape)
