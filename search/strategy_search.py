"""The SOAP search: MCMC chains from several starts, each candidate priced by delta simulation.

    python -m search.optimize --model alexnet --gpus 2 [--budget 20]

Each start (the user's --init strategy if any, data parallel, OWT, model parallel, single, a random one,
then those search.starts derives by simulation: data parallel on the fastest narrower device block, the
least additive cost by a dynamic program and, on graphs of at most PLACED_MAX_OPS ops, the placed start:
the joint descent (search.joint_descent) from the fastest least placed cost of each op on either half of
the devices, then the greedy descent (search.descent) from there; each kept when faster than every start
before it) runs one chain with an equal share of the iterations, or of the seconds left when it begins
(building the derived starts counts in the budget), and its own random stream (seed, start index), so
the same seed gives the same strategy whenever chains stop by convergence or by iterations. Chains run
one after another, the cheapest start first, so a good start's chain is searched soonest. Without a
budget, the search sizes one by the graph, the device count and what a simulation takes
(`adaptive_budget`). A chain is judged converged (FlexFlow's rule) only after `adaptive_min_iterations`,
unless the budget sets the minimum. The proposals give one op a random config, its split drawn first
(search.proposals.random_op_random_split), copy a neighbour's config into one op (copy_from_neighbour),
give one random config to an op and the run of ops around it sharing its config (run_random_split), or
move one op to an adjacent split, one or two of its degrees doubled or halved on a block holding or
inside its own (adjacent_split); with --descent, they also descend greedily from the current strategy
(search.descent.descent_move). A strategy over a device's memory costs inf (never accepted). The result
is the best over all chains, never worse than the best start.

`recommend(result)` is what SOAP hands the user: the search's best, or the best known start (a baseline,
or the user's --init) when the search found nothing at least MIN_GAIN faster than it.
"""

from __future__ import annotations

import functools
import gc
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.errors import SoapError
from models.graph import OpGraph
from search.descent import descend, descent_move, op_neighbourhoods
from search.joint_descent import joint_descent
from search.mcmc import FLEXFLOW_MIN_ITERATIONS, Budget, MCMCResult, Progress, run_mcmc
from search.proposals import (Move, adjacent_split, copy_from_neighbour, mixture, random_op_random_split,
                              run_random_split)
from search.starts import (PricedCandidates, additive_start, narrower_data_parallel, placed_candidates,
                           placed_starts)
from simulator.cost import CostModel
from simulator.machine import Machine
from simulator.simulate import Simulator
from soap.baselines import BASELINES, TENSOR_PARALLEL, baselines_for, random_strategy
from soap.errors import BatchNotDivisibleError
from soap.space import on_all_devices, valid_degrees
from soap.strategy import Strategy

# A move 1% worse than the start's step time is accepted with p = exp(-3). AlexNet on p100-4x4 with run moves
# (2026-11-30, seeds 0-3, median iterations to within 1% of the best a 40,000-iteration search finds, 8 /
# 16 / 32 / 64 GPUs): 265 / 1687 / 3546 / 2015 at 300, 331 / 5027 / 1831 / 1590 at 100 (exp(-1)); at 30,
# seeds 0 and 1 never came within 1% on 16 and 64 GPUs.
BETA_RELATIVE = 300.0
RANDOM_START = "random"
INIT_START = "init"
ADDITIVE_START = "additive"
PLACED_START = "placed"
# The most ops of a graph the placed start is built for. Its dynamic program prices twice the additive
# start's candidates, four times its pairs: on Inception-v3 (219 ops) on 64 p100-4x4 GPUs 13.7 s (the
# additive start 9.2 s) for a start 0.15% faster (71.528 against 71.634 ms, one charge). On AlexNet (13
# ops, seed 0) the placed start with its joint descent takes 0.11 / 0.30 / 1.09 / 1.91 CPU s on 8 / 16 / 32
# / 64 GPUs, after the additive start has priced its candidates (0.04 / 0.09 / 0.22 / 0.98 s), and is 8% /
# 9% / 19% / 29% faster than the additive start.
PLACED_MAX_OPS = 32
# The placed start's random charges come from the stream (seed, PLACED_STREAM), apart from the chains'
# streams (seed, start index).
PLACED_STREAM = 2**20
# The shares of proposals that copy a neighbour's config, that move a run of ops and that move one op to an
# adjacent split; the rest give one op a random config. AlexNet on p100-4x4, 8 and 16 GPUs, seeds 0-2
# (2026-11-25): copies at 0.5 found the best known within 1% in 0.1-1.2 s, against 0.6-2.2 s (one seed never)
# with random configs alone (0.3 and 0.7 did no better). Thirds with run moves (2026-11-30, seeds 0-3,
# iterations to within 1% of the best a 40,000-iteration search finds, median, beta 100): 8 GPUs 331 against
# 1295 without them, 16 GPUs 5027 against 2 seeds of 4 never; see BETA_RELATIVE for both at 300. Adjacent
# splits at 0.3, the random configs' share lowered to 0.2 (2026-12-01, 4,000 iterations, within 1% of the
# bests found without them, 1.941 / 1.637 / 1.342 ms: benchmarks.search_time --sizes 16 32 64 --seeds 0 1 2 3
# 4 5 6 7 --reference-ms 1.941 1.637 1.342): 5 / 5 / 4 of 8 seeds on 16 / 32 / 64 GPUs, against about 13 / 10
# / 0 of 20 without; shares of 0.25 and 0.35 did about as well (10-13 of 16 on 16 and 32 GPUs, 5 of 19 and 2
# of 16 on 64).
COPY_SHARE = 0.25
RUN_SHARE = 0.25
ADJACENT_SHARE = 0.3
# The share of the greedy descent (search.descent) among the proposals, with search_strategy(descent=True),
# out of the random configs' share. AlexNet on p100-4x4, 16 GPUs, seeds 4-11, 4,000 iterations, within 1% of
# 1.894 ms (the best of four 40,000-iteration searches without it; /tmp harness on the benchmark's
# _search_until): 8 of 8 seeds at 0.005 (0.65-1.93 s), 6 of 8 at 0.01, 8 of 8 at 0.02 (slower: 0.81-2.80 s),
# 5 of 8 at 0.0025, 0 of 8 without. One descent prices an op's whole neighbourhood for each op visited:
# hundreds of simulations on AlexNet, 3,538 (98 s) on Inception-v3 on 64 GPUs.
DESCENT_SHARE = 0.005
# A found strategy replaces the best known start only when simulated at least this fraction faster.
# Closer than that, the simulator does not rank two strategies reliably. On the local 2-worker cluster,
# AlexNet strategies simulated 2.4%, 3.5% and 3.6% faster than OWT measured 6%, 3.6% and 3.2% slower
# (README; the simulator's error per strategy spans -6.9% to +7.0% there), while the ResNet-18 and
# Inception-v3 strategies simulated 9% and 12% faster than the best baseline measured 4% and 6% faster;
# one strategy's measured step time varies 1-3% from run to run.
MIN_GAIN = 0.05
# The most seconds the default budget (`adaptive_budget`) allows: FlexFlow's longest search budget, 30
# minutes, for Inception-v3 and ResNet-101-sized graphs (the estimate for Inception-v3 on 64 GPUs is hours).
MAX_ADAPTIVE_BUDGET_S = 1800.0
# The seconds of a chain whose share of the budget is spent before it begins: it prices its start only.
_NO_TIME_S = 1e-9


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
    descent_simulations: int = 0  # the strategies the descents priced (the placed start's; the chains' with descent)
    # (seconds since the search began, ms) each time a strategy it priced was faster than every one before:
    # the starts, the strategies their derivation priced, the descents' steps, the chains' bests.
    improvements: tuple[tuple[float, float], ...] = ()

    @property
    def iterations(self) -> int:
        return sum(chain.mcmc.iterations for chain in self.chains)

    @property
    def simulations_per_second(self) -> float:
        """Strategies priced a second: one per iteration, and each a descent priced."""
        return (self.iterations + self.descent_simulations) / self.seconds if self.seconds > 0 else 0.0


def baseline_strategies(graph: OpGraph, num_devices: int, devices_per_node: int | None = None
                        ) -> tuple[dict[str, Strategy], list[str]]:
    """The baselines that exist for this graph and device count, and a note for those that do not (one
    note for all that need the batch split over every device, when the device count does not divide it).
    Megatron's tensor groups stay inside a node of `devices_per_node` devices (None: one node of all)."""
    strategies, notes, unsplit = {}, [], []
    for name, build in baselines_for(graph).items():
        try:
            strategies[name] = (build(graph, num_devices, devices_per_node) if name in TENSOR_PARALLEL
                                else build(graph, num_devices))
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
                  init: Strategy | None = None, spmd: bool = False) -> list[tuple[str, Strategy]]:
    """Where the search starts: the user's strategy, data parallel, OWT, model parallel, one device (the
    fastest where the links are slow and the batch small), Megatron's layouts for a transformer, and a
    random one; `spmd`: those of the SPMD space (soap.space.on_all_devices), the random one drawn from it."""
    starts = ([(INIT_START, init)] if init else []) + [(name, baselines[name]) for name in
                                                   ("data_parallel", "owt", "model_parallel", "single",
                                                    *TENSOR_PARALLEL) if name in baselines]
    if spmd:
        starts = [(name, start) for name, start in starts if on_all_devices(start.values(), num_devices)]
    return starts + [(RANDOM_START, random_strategy(graph, num_devices, np.random.default_rng(seed), spmd))]


def without_cyclic_collector(search: Callable) -> Callable:
    """`search` run with CPython's cyclic garbage collector off, then on again if it was. A search
    allocates millions of short-lived tuples (tasks, configs, strategies), which refcounting frees; each
    700 of them set off a collection that walks the live ones, and the simulator keeps up to 4,096 built
    segments alive. Off, the same search (same strategy, same peak memory) takes less CPU: AlexNet on
    p100-4x4, 4,000 iterations, 2.26 -> 1.52 s on 16 GPUs and 7.83 -> 6.10 s on 64 (364 MB either way);
    Inception-v3, 300 iterations on 64 GPUs, 16.6 -> 14.6 s (431 MB either way)."""
    @functools.wraps(search)
    def run(*args, **kwargs):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return search(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return run


@without_cyclic_collector
def search_strategy(
    graph: OpGraph,
    machine: Machine,
    cost_model: CostModel,
    starts: list[tuple[str, Strategy]],
    budget: Budget | None,
    seed: int,
    beta_relative: float = BETA_RELATIVE,
    on_iteration: Callable[[str, Progress], None] | None = None,
    simulation: Literal["delta", "full"] = "delta",
    stop_requested: Callable[[], bool] = lambda: False,
    on_building: Callable[[str], None] | None = None,
    on_starts: Callable[[list[tuple[str, float]], Budget], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    descent: bool = False,
    spmd: bool = False,
) -> SearchResult:
    """Search from every start, and from the starts search.starts derives (data parallelism on the
    fastest narrower device block, the least additive cost, then the placed start), each when faster
    than every start before it; `simulation="full"` prices each candidate by a full simulation instead
    (same chain, same result, only slower: what benchmarks.search_time compares). A budget without min_iterations gets
    `adaptive_min_iterations`; no budget (None) gets `adaptive_budget`. Building the derived starts counts
    in the budget's seconds and in the time to the best; `on_building(what)` is called as each begins,
    `on_starts([(name, ms), ...], budget)` once every start and the budget are known, before the chains
    run. `clock` measures the budget and the times (the benchmarks pass time.process_time: the search's own
    CPU seconds, which a process paused or sharing its core does not spend). `descent=True` adds the greedy
    descent (search.descent) to the proposals, DESCENT_SHARE of them. `spmd=True` searches the SPMD space
    only (soap.space: every op on all the devices, what one jitted step runs): its starts must be in it
    (`search_starts(..., spmd=True)`), the proposals and the descents stay in it, and of the derived starts
    only the additive one is built, among SPMD candidates."""
    began = clock()
    simulator = Simulator(graph, machine, cost_model)
    # A strategy over memory is priced inf whatever its time, so a delta need not time it.
    price = ((lambda strategy: simulator.delta(strategy, time_over_memory=False)) if simulation == "delta"
             else simulator.full)
    improvements: list[tuple[float, float]] = []

    def noted(ms: float) -> float:
        if not improvements or ms < improvements[-1][1]:
            improvements.append((clock() - began, ms))
        return ms

    pricing_began = clock()
    start_costs = [noted(priced_ms(simulator.full(start))) for _, start in starts]
    simulation_s = (clock() - pricing_began) / len(starts)
    descent_simulations = 0

    def descent_price(strategy: Strategy) -> float:
        nonlocal descent_simulations
        descent_simulations += 1
        return noted(priced_ms(price(strategy)))

    def start_descent_stops() -> bool:
        return stop_requested() or (budget is not None and budget.seconds is not None
                                    and clock() - began >= budget.seconds)

    for what, build in _derived_starts(graph, simulator, seed, stop_requested,
                                       lambda s: noted(priced_ms(simulator.full(s))),
                                       lambda s: noted(priced_ms(price(s))), descent_price, start_descent_stops,
                                       spmd):
        if stop_requested():
            break
        if on_building is not None:
            on_building(what)
        derived = build()
        if derived is not None and derived[2] < min(start_costs):
            starts, start_costs = starts + [derived[:2]], start_costs + [derived[2]]
    if budget is None:
        budget = adaptive_budget(len(starts), adaptive_min_iterations(graph, machine.num_devices, spmd),
                                 simulation_s, clock() - began)
    if on_starts is not None:
        on_starts([(name, ms) for (name, _), ms in zip(starts, start_costs)], budget)
    min_iterations = (adaptive_min_iterations(graph, machine.num_devices, spmd) if budget.min_iterations is None
                      else budget.min_iterations)
    chain_ends_at = math.inf  # a descent stops at its chain's time budget too, like a Ctrl-C

    def descent_stops() -> bool:
        return stop_requested() or clock() >= chain_ends_at

    descent_proposal = (descent_move(graph, machine.num_devices, descent_price, descent_stops, spmd) if descent
                        else None)
    propose = proposal(graph, machine.num_devices, descent_proposal, spmd)
    order = sorted(range(len(starts)), key=lambda index: start_costs[index])
    chains: list[ChainResult] = []
    for position, index in enumerate(order):
        name, start, start_ms = starts[index][0], starts[index][1], start_costs[index]
        beta = beta_relative / start_ms if math.isfinite(start_ms) else 0.0
        report = (lambda progress, name=name: on_iteration(name, progress)) if on_iteration else None
        share = _chain_budget(budget, len(starts), position, min_iterations, clock() - began)
        chain_ends_at = math.inf if share.seconds is None else clock() + share.seconds
        mcmc = run_mcmc(start, propose, lambda s: priced_ms(price(s)), np.random.default_rng([seed, index]),
                        beta, share, on_iteration=report, clock=clock, stop_requested=stop_requested)
        chains.append(ChainResult(name, start_ms, mcmc, clock() - began - mcmc.seconds))
        if mcmc.stop_reason == "interrupted":
            break
    winner = min(chains, key=lambda chain: chain.mcmc.best_cost)
    for chain in chains:
        improvements.extend((chain.began_at_s + seconds, ms) for seconds, ms in chain.mcmc.history)
    return SearchResult(
        best=winner.mcmc.best, best_ms=winner.mcmc.best_cost, chains=tuple(chains),
        starts=tuple((name, start, ms) for (name, start), ms in zip(starts, start_costs)),
        seconds=clock() - began, best_found_at_s=winner.began_at_s + winner.mcmc.best_found_at_s,
        interrupted=chains[-1].mcmc.stop_reason == "interrupted", descent_simulations=descent_simulations,
        improvements=_running_bests(improvements),
    )


def _running_bests(events: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """The (seconds, ms) events in time order that are faster than every one before them."""
    bests: list[tuple[float, float]] = []
    for seconds, ms in sorted(events):
        if not bests or ms < bests[-1][1]:
            bests.append((seconds, ms))
    return tuple(bests)


def _chain_budget(budget: Budget, num_chains: int, position: int, min_iterations: int, spent_s: float) -> Budget:
    """Chain `position`'s share of the budget: an equal share of the iterations (the remainder to the first
    chains, so that the chains together run exactly the iterations asked for), and of the seconds left
    after `spent_s` (building the starts, the chains before) among the chains not yet run. A chain left
    no time still prices its start."""
    iterations = None
    if budget.iterations is not None:
        iterations = max(1, budget.iterations // num_chains + (position < budget.iterations % num_chains))
    seconds = None
    if budget.seconds is not None:
        seconds = max(budget.seconds - spent_s, 0.0) / (num_chains - position) or _NO_TIME_S
    return Budget(seconds=seconds, iterations=iterations, min_iterations=min_iterations)


def proposal(graph: OpGraph, num_devices: int, descent: Move | None = None, spmd: bool = False) -> Move:
    """The search's proposal: a random config for one op, a neighbour's config copied (COPY_SHARE), a
    random config for a run of ops sharing one (RUN_SHARE), an adjacent split for one op (ADJACENT_SHARE),
    and, when given, `descent` (search.descent.descent_move: DESCENT_SHARE, out of the random configs'
    share); `spmd`: each within the SPMD space (soap.space)."""
    moves = [(COPY_SHARE, copy_from_neighbour(graph, num_devices, spmd)),
             (RUN_SHARE, run_random_split(graph, num_devices, spmd=spmd)),
             (ADJACENT_SHARE, adjacent_split(graph, num_devices, spmd))]
    moves += [(DESCENT_SHARE, descent)] if descent else []
    random_share = 1.0
    for share, _ in moves:
        random_share -= share
    return mixture([(random_share, random_op_random_split(graph, num_devices, spmd)), *moves])


def adaptive_budget(num_chains: int, min_iterations: int, simulation_s: float, spent_s: float) -> Budget:
    """The default budget, once the starts are built (in `spent_s`): twice its convergence floor
    (`min_iterations`) for each of `num_chains` chains, so that FlexFlow's rule judges every chain whose
    best came in its first half; and, in case simulations run slower than the starts' did, seconds for
    twice those iterations at `simulation_s` a candidate (what a full simulation of a start took; a delta
    takes less), at most MAX_ADAPTIVE_BUDGET_S. Both grow with the graph and the device count (the floor
    counts their (op, split) pairs, a simulation their tasks). While the iterations bind, the same seed
    gives the same strategy."""
    iterations = num_chains * 2 * min_iterations
    seconds = min(spent_s + 2 * iterations * simulation_s, MAX_ADAPTIVE_BUDGET_S)
    return Budget(seconds=max(seconds, _NO_TIME_S), iterations=iterations, min_iterations=min_iterations)


def adaptive_min_iterations(graph: OpGraph, num_devices: int, spmd: bool = False) -> int:
    """The iterations a chain runs before FlexFlow's convergence rule may stop it: one per (op, split)
    pair of the space, at least FlexFlow's 1000 (AlexNet: 1000 up to 64 GPUs; Inception-v3: 1897 on 4
    GPUs, 22165 on 64). Half the proposals draw a random split for a random op, so by then each (op,
    split) pair has been proposed about half a time: FlexFlow's fixed 1000 stopped Inception-v3 and
    ResNet-101 chains after a few proposals per op. `spmd`: the pairs of the SPMD space (soap.space)."""
    num_splits = sum(len(valid_degrees(op, num_devices, spmd)) for op in graph.ops)
    return max(FLEXFLOW_MIN_ITERATIONS, num_splits)


def _derived_starts(graph: OpGraph, simulator: Simulator, seed: int, stop_requested: Callable[[], bool],
                    price: Callable[[Strategy], float], search_price: Callable[[Strategy], float],
                    descent_price: Callable[[Strategy], float], descent_stops: Callable[[], bool],
                    spmd: bool = False) -> Iterator[tuple[str, Callable[[], tuple[str, Strategy, float] | None]]]:
    """search.starts' starts in order: (what is built, for a progress line; a function building it and
    returning (name, strategy, simulated ms), or None where the graph has none or a stop was requested).
    A start is priced by `price` (a full simulation); the placed strategies are ranked by `search_price`
    (the search's own simulation: a delta prices the many alike strategies faster). The placed start is
    the joint descent (search.joint_descent) from the fastest of them, then the greedy descent
    (search.descent) from there, both priced by `descent_price` and stopped by `descent_stops`. `spmd`: the
    additive start only, among SPMD candidates (the others put ops on fewer devices)."""
    with_placed = len(graph.ops) <= PLACED_MAX_OPS and not spmd
    priced = []  # the placed start's candidates, priced once for the additive start (a part of them) and it

    def additive() -> tuple[str, Strategy, float] | None:
        if with_placed:
            priced.append(placed_candidates(graph, simulator.builder, stop_requested))
            if priced[0] is None:
                return None
        strategy = additive_start(graph, simulator.builder, stop_requested, priced[0] if priced else None, spmd)
        return None if strategy is None else (ADDITIVE_START, strategy, price(strategy))

    def placed() -> tuple[str, Strategy, float] | None:
        best = placed_start(graph, simulator, seed, search_price, descent_price, stop_requested, descent_stops,
                            priced[0] if priced else None)
        return None if best is None else (PLACED_START, best, price(best))

    if not spmd:
        yield ("data parallel on fewer devices",
               lambda: narrower_data_parallel(graph, simulator.machine.num_devices, price))
    yield f"{ADDITIVE_START} (a dynamic program over {len(graph.ops)} ops)", additive
    if with_placed:
        yield (f"{PLACED_START} (the dynamic program with each op on either half of the devices, then a joint "
               f"and a greedy descent)", placed)


def placed_start(graph: OpGraph, simulator: Simulator, seed: int, search_price: Callable[[Strategy], float],
                 descent_price: Callable[[Strategy], float], stop_requested: Callable[[], bool] = lambda: False,
                 descent_stops: Callable[[], bool] = lambda: False, priced: PricedCandidates | None = None
                 ) -> Strategy | None:
    """The placed start: the placed strategies (search.starts.placed_starts; `priced`: their candidates
    already priced) ranked by `search_price`, the joint descent from the fastest, then the greedy descent
    from there, both priced by `descent_price` and stopped by `descent_stops`; None as for placed_starts."""
    found = placed_starts(graph, simulator.builder, search_price, np.random.default_rng([seed, PLACED_STREAM]),
                          stop_requested, priced)
    if found is None:
        return None
    joint = joint_descent(found.ranked[0], descent_price, graph, found.candidates, found.pair_tables, descent_stops)
    return descend(joint.strategy, descent_price, graph, op_neighbourhoods(graph, simulator.machine.num_devices),
                   descent_stops).strategy


def priced_ms(result) -> float:
    """What the search optimises: the simulated step time, inf over a device's memory (never accepted)."""
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
    (the baselines and --init; not the random one, nor the starts the search derived by simulation, which
    are found strategies like its best), else the fastest known start."""
    known = [(ms, name, start) for name, start, ms in result.starts
             if name in BASELINES or name in TENSOR_PARALLEL or name == INIT_START]
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
