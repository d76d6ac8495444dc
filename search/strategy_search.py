"""The SOAP search: MCMC chains from several starts, each candidate priced by delta simulation.

    python -m search.optimize --model alexnet --gpus 2 --budget 20

Each start (the user's --init strategy if any, data parallel, OWT, model parallel, single, a random one)
runs one chain with an equal share of the budget and its own random stream (seed, start index), so the
same seed gives the same strategy whenever chains stop by convergence or by iterations. Chains run one
after another, the cheapest start first, so a good start's chain is searched soonest. Each proposal
changes one op: half of them give it a random config, its split drawn first
(search.proposals.random_op_random_split), half copy a neighbour's config (copy_from_neighbour). A
strategy over a device's memory costs inf (never accepted). The result is the best over all chains,
never worse than the best start.

`recommend(result)` is what SOAP hands the user: the search's best, or the best known start (a baseline,
or the user's --init) when the search found nothing at least MIN_GAIN faster than it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.errors import SoapError
from models.graph import OpGraph
from search.mcmc import Budget, MCMCResult, run_mcmc
from search.proposals import copy_from_neighbour, mixture, random_op_random_split
from simulator.cost import CostModel
from simulator.machine import Machine
from simulator.simulate import Simulator
from soap.baselines import BASELINES, random_strategy
from soap.errors import BatchNotDivisibleError
from soap.strategy import Strategy

BETA_RELATIVE = 100.0  # a move 1% worse than the start's step time is accepted with p = exp(-1)
RANDOM_START = "random"
# The share of proposals that copy a neighbour's config. AlexNet on p100-4x4, 8 and 16 GPUs, seeds 0-2
# (2026-11-25): within 1% of the best known in 0.1-1.2 s, against 0.6-2.2 s (one seed never) with random
# configs alone; shares of 0.3 and 0.7 did no better.
COPY_SHARE = 0.5
# A found strategy replaces the best known start only when simulated at least this fraction faster.
# Closer than that, the simulator does not rank two strategies reliably: on the local 2-worker cluster
# (README, Dogs vs Cats), OWT with fc8 and the loss whole on one device was simulated 0.3% faster than
# OWT and measured 0.7-2.7% slower; one strategy's measured step time varies 1-3% from run to run.
MIN_GAIN = 0.02


@dataclass(frozen=True)
class ChainResult:
    start_name: str
    start_ms: float
    mcmc: MCMCResult[Strategy]
    began_at_s: float  # when the chain started, in seconds since the search began


@dataclass(frozen=True)
class SearchResult:
    best: Strategy
    best_ms: float
    chains: tuple[ChainResult, ...]
    starts: tuple[tuple[str, Strategy, float], ...]  # (name, strategy, simulated ms; inf if over memory)
    seconds: float
    best_found_at_s: float
    interrupted: bool

    @property
    def iterations(self) -> int:
        return sum(chain.mcmc.iterations for chain in self.chains)

    @property
    def simulations_per_second(self) -> float:
        return self.iterations / self.seconds if self.seconds > 0 else 0.0


def baseline_strategies(graph: OpGraph, num_devices: int) -> tuple[dict[str, Strategy], list[str]]:
    """The baselines that exist for this graph and device count, and a note for those that do not (one
    note for all that need the batch split over every device, when the device count does not divide it)."""
    strategies, notes, unsplit = {}, [], []
    for name, build in BASELINES.items():
        try:
            strategies[name] = build(graph, num_devices)
        except BatchNotDivisibleError:
            unsplit.append(name)
        except SoapError as error:
            notes.append(f"{name} left out: {error}")
    if unsplit:
        notes.insert(0, f"batch size {graph.batch_size} is not divisible by {num_devices} devices: no strategy "
                        f"splits the batch over all of them ({' and '.join(unsplit)} left out); a multiple of "
                        f"{num_devices} allows it")
    return strategies, notes


def search_starts(graph: OpGraph, num_devices: int, baselines: dict[str, Strategy], seed: int,
                  init: Strategy | None = None) -> list[tuple[str, Strategy]]:
    """Where the search starts: the user's strategy, data parallel, OWT, model parallel, one device (the
    fastest where the links are slow and the batch small) and a random one."""
    starts = ([("init", init)] if init else []) + [(name, baselines[name]) for name in
                                                   ("data_parallel", "owt", "model_parallel", "single")
                                                   if name in baselines]
    return starts + [(RANDOM_START, random_strategy(graph, num_devices, np.random.default_rng(seed)))]


def search_strategy(
    graph: OpGraph,
    machine: Machine,
    cost_model: CostModel,
    starts: list[tuple[str, Strategy]],
    budget: Budget,
    seed: int,
    beta_relative: float = BETA_RELATIVE,
    on_iteration: Callable[[str, int, float], None] | None = None,
    simulation: Literal["delta", "full"] = "delta",
    stop_requested: Callable[[], bool] = lambda: False,
) -> SearchResult:
    """Search from every start; `simulation="full"` prices each candidate by a full simulation instead
    (same chain, same result, only slower: what benchmarks.search_time compares)."""
    share = Budget(
        seconds=None if budget.seconds is None else budget.seconds / len(starts),
        iterations=None if budget.iterations is None else max(1, budget.iterations // len(starts)),
        min_iterations=budget.min_iterations,
    )
    propose = mixture([(1 - COPY_SHARE, random_op_random_split(graph, machine.num_devices)),
                       (COPY_SHARE, copy_from_neighbour(graph, machine.num_devices))])
    began = time.perf_counter()
    simulator = Simulator(graph, machine, cost_model)
    price = simulator.delta if simulation == "delta" else simulator.full
    start_costs = [_priced(simulator.full(start)) for _, start in starts]
    order = sorted(range(len(starts)), key=lambda index: start_costs[index])
    chains: list[ChainResult] = []
    for index in order:
        name, start, start_ms = starts[index][0], starts[index][1], start_costs[index]
        beta = beta_relative / start_ms if math.isfinite(start_ms) else 0.0
        report = (lambda i, best, name=name: on_iteration(name, i, best)) if on_iteration else None
        mcmc = run_mcmc(start, propose, lambda s: _priced(price(s)), np.random.default_rng([seed, index]),
                        beta, share, on_iteration=report, stop_requested=stop_requested)
        chains.append(ChainResult(name, start_ms, mcmc, time.perf_counter() - began - mcmc.seconds))
        if mcmc.stop_reason == "interrupted":
            break
    winner = min(chains, key=lambda chain: chain.mcmc.best_cost)
    return SearchResult(
        best=winner.mcmc.best, best_ms=winner.mcmc.best_cost, chains=tuple(chains),
        starts=tuple((name, start, ms) for (name, start), ms in zip(starts, start_costs)),
        seconds=time.perf_counter() - began, best_found_at_s=winner.began_at_s + winner.mcmc.best_found_at_s,
        interrupted=chains[-1].mcmc.stop_reason == "interrupted",
    )


def _priced(result) -> float:
    return result.step_ms if result.fits_memory else math.inf


@dataclass(frozen=True)
class Recommendation:
    """The strategy SOAP recommends: the search's best, or the known start it `kept`."""

    strategy: Strategy
    step_ms: float
    kept: str | None  # the known start recommended instead of the search's best; None: the search's best
    note: str  # one line: what was chosen and why


def recommend(result: SearchResult, min_gain: float = MIN_GAIN) -> Recommendation:
    """The search's best if it is simulated at least `min_gain` (a fraction) faster than every known start
    (the baselines and --init; not the random one), else the fastest known start."""
    known = [(ms, name, start) for name, start, ms in result.starts if name != RANDOM_START]
    if not known:
        return Recommendation(result.best, result.best_ms, None, "the search's best (no known start to compare)")
    known_ms, name, start = min(known, key=lambda entry: entry[0])
    if result.best_ms < known_ms * (1 - min_gain):
        gain = 1 - result.best_ms / known_ms
        return Recommendation(result.best, result.best_ms, None,
                              f"the search's best, simulated {gain:.1%} faster than {name}")
    gain = 1 - result.best_ms / known_ms if math.isfinite(known_ms) else 0.0
    return Recommendation(start, known_ms, name,
                          f"kept {name}: the best strategy found ({result.best_ms:.1f} ms) is simulated only "
                          f"{gain:.1%} faster, under the minimum gain of {min_gain * 100:g}% (--min-gain)")
