"""A generic Metropolis-Hastings driver: minimise cost(state) by proposing neighbours.

    result = run_mcmc(start, propose, cost, rng, beta=..., budget=Budget(seconds=5.0))

A proposal S* from the current S is accepted with probability min(1, exp(beta * (cost(S) - cost(S*))))
(always when it is no worse). `beta` is in 1 / (cost unit): callers pricing in milliseconds pick it
relative to the start's cost (search.strategy_search uses beta = beta_relative / cost(start), so a
proposal 1% worse than the start's cost is accepted with probability exp(-beta_relative / 100)).
`propose(state, rng)` may return None for an invalid move; a cost of inf (invalid state) is never
accepted. The chain stops when the budget (seconds and/or iterations) is spent, or when the best has not
improved for half of the iterations so far (FlexFlow's rule, counted in iterations so that the same
seed gives the same result), once `min_iterations` have run (FlexFlow's 1000 unless the caller sizes it:
search.strategy_search does, by the graph and the device count); `stop_requested()` (a Ctrl-C handler's
flag) or a KeyboardInterrupt stops it and keeps the best. `on_iteration` gets a `Progress`, which says
what the chain is waiting for (`Progress.waiting_for`).
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

import numpy as np

from models.errors import SoapError

State = TypeVar("State")

FLEXFLOW_MIN_ITERATIONS = 1000


class BudgetError(SoapError):
    """A search budget that cannot stop a chain, or a non-positive limit."""


@dataclass(frozen=True)
class Budget:
    """When a chain stops: `seconds` or `iterations` spent (either or both), or converged; convergence is
    judged only after `min_iterations` (None: FlexFlow's 1000, or what the caller sizes for its problem)."""

    seconds: float | None = None
    iterations: int | None = None
    min_iterations: int | None = None

    def __post_init__(self) -> None:
        if self.seconds is None and self.iterations is None:
            raise BudgetError("a search budget needs seconds or iterations, got neither; give --budget SECONDS "
                              "or --iterations N")
        if self.seconds is not None and not self.seconds > 0:
            raise BudgetError(f"a search budget's seconds must be > 0, got {self.seconds}; give a positive time")
        for name in ("iterations", "min_iterations"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, numbers.Integral) or value < 1):
                raise BudgetError(f"a search budget's {name} must be an integer >= 1, got {value!r}; "
                                  f"give a positive count")

    @property
    def convergence_floor(self) -> int:
        """The iterations before convergence is judged."""
        return FLEXFLOW_MIN_ITERATIONS if self.min_iterations is None else self.min_iterations


class Progress(NamedTuple):
    """Where a chain stands after an iteration, for a progress report."""

    iteration: int
    best_cost: float
    best_at_iteration: int
    elapsed_s: float
    budget: Budget

    def waiting_for(self) -> str:
        """What stops the chain first if the best does not improve: convergence (no gain for half the
        iterations so far, after the budget's minimum), the iteration budget or the time budget (compared
        at the chain's rate so far)."""
        converges_in = max(self.budget.convergence_floor, 2 * self.best_at_iteration + 1) - self.iteration
        rate = self.iteration / self.elapsed_s if self.elapsed_s > 0 else math.inf
        ends = [(converges_in, f"converged if no gain in {converges_in} iterations")]
        if self.budget.iterations is not None:
            left = self.budget.iterations - self.iteration
            ends.append((left, f"iteration budget in {left}"))
        if self.budget.seconds is not None:
            left_s = max(0.0, self.budget.seconds - self.elapsed_s)
            ends.append((left_s * rate, f"time budget in {left_s:.0f} s"))
        return min(ends, key=lambda end: end[0])[1]


@dataclass
class MCMCResult(Generic[State]):
    best: State
    best_cost: float
    iterations: int
    best_found_at_iteration: int
    best_found_at_s: float
    seconds: float
    stop_reason: str  # "converged", "iterations", "seconds" or "interrupted"
    history: list[tuple[float, float]] = field(default_factory=list)  # (seconds, best cost) at each improvement


def run_mcmc(
    start: State,
    propose: Callable[[State, np.random.Generator], State | None],
    cost: Callable[[State], float],
    rng: np.random.Generator,
    beta: float,
    budget: Budget,
    on_iteration: Callable[[Progress], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    stop_requested: Callable[[], bool] = lambda: False,
) -> MCMCResult[State]:
    """Run one chain; `stop_requested()` (e.g. set by a Ctrl-C handler) ends it like the budget does."""
    began = clock()
    current, current_cost = start, cost(start)
    best, best_cost = current, current_cost
    best_at_iteration, best_at_s = 0, 0.0
    history = [(0.0, best_cost)]
    iteration, stop_reason = 0, "interrupted"
    try:
        while True:
            elapsed = clock() - began
            stop_reason = "interrupted" if stop_requested() else _stop_reason(budget, iteration, elapsed,
                                                                              best_at_iteration)
            if stop_reason:
                break
            iteration += 1
            candidate = propose(current, rng)
            if candidate is not None:
                candidate_cost = cost(candidate)
                if _accept(current_cost, candidate_cost, beta, rng):
                    current, current_cost = candidate, candidate_cost
                    if current_cost < best_cost:
                        best, best_cost = current, current_cost
                        best_at_iteration, best_at_s = iteration, clock() - began
                        history.append((best_at_s, best_cost))
            if on_iteration is not None:
                on_iteration(Progress(iteration, best_cost, best_at_iteration, clock() - began, budget))
    except KeyboardInterrupt:
        stop_reason = "interrupted"
    return MCMCResult(best, best_cost, iteration, best_at_iteration, best_at_s, clock() - began, stop_reason, history)


def _accept(current_cost: float, candidate_cost: float, beta: float, rng: np.random.Generator) -> bool:
    if candidate_cost == math.inf:
        return False
    if candidate_cost <= current_cost:
        return True
    return rng.random() < math.exp(beta * (current_cost - candidate_cost))


def _stop_reason(budget: Budget, iteration: int, elapsed_s: float, best_at_iteration: int) -> str:
    if budget.iterations is not None and iteration >= budget.iterations:
        return "iterations"
    if budget.seconds is not None and elapsed_s >= budget.seconds:
        return "seconds"
    if iteration >= budget.convergence_floor and iteration - best_at_iteration > iteration / 2:
        return "converged"
    return ""
