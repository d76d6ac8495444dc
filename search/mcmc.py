"""A generic Metropolis-Hastings driver: minimise cost(state) by proposing neighbours.

    result = run_mcmc(start, propose, cost, rng, beta=..., budget=Budget(seconds=5.0))

A proposal S* from the current S is accepted with probability min(1, exp(beta * (cost(S) - cost(S*))))
(always when it is no worse). `beta` is in 1 / (cost unit): callers pricing in milliseconds pick it
relative to the start's cost (search.strategy_search uses beta = beta_relative / cost(start), so a
proposal 1% worse than the start's cost is accepted with probability exp(-beta_relative / 100)).
`propose(state, rng)` may return None for an invalid move; a cost of inf (invalid state) is never
accepted. The chain stops when the budget (seconds and/or iterations) is spent, or when the best has not
improved for half of the iterations so far (FlexFlow's rule, counted in iterations so that the same
seed gives the same result), once `min_iterations` have run; `stop_requested()` (a Ctrl-C handler's
flag) or a KeyboardInterrupt stops it and keeps the best.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

State = TypeVar("State")


@dataclass(frozen=True)
class Budget:
    seconds: float | None = None
    iterations: int | None = None
    min_iterations: int = 1000

    def __post_init__(self) -> None:
        assert self.seconds is not None or self.iterations is not None, "a budget needs seconds or iterations"


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
    on_iteration: Callable[[int, float], None] | None = None,
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
                on_iteration(iteration, best_cost)
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
    if iteration >= budget.min_iterations and iteration - best_at_iteration > iteration / 2:
        return "converged"
    return ""
