"""The generic MCMC driver on a toy cost, alone."""

import numpy as np
import pytest

from models.errors import SoapError
from search.mcmc import FLEXFLOW_MIN_ITERATIONS, Budget, BudgetError, Progress, run_mcmc

GRID = np.linspace(0.0, 1.0, 101)


def toy_cost(x: float) -> float:
    return (x - 0.5) ** 2


def step(x: float, rng: np.random.Generator) -> float | None:
    index = int(round(x * 100)) + int(rng.choice([-3, -2, -1, 1, 2, 3]))
    return None if not 0 <= index <= 100 else float(GRID[index])  # None: an invalid move


def test_driver_minimises_a_toy_cost():
    result = run_mcmc(0.0, step, toy_cost, np.random.default_rng(0), beta=50.0, budget=Budget(iterations=2000))
    assert result.best == 0.5 and result.best_cost == 0.0
    assert result.stop_reason in ("converged", "iterations")
    assert [cost for _, cost in result.history] == sorted((cost for _, cost in result.history), reverse=True)


def test_same_seed_same_chain_and_stop_by_convergence():
    runs = [run_mcmc(0.0, step, toy_cost, np.random.default_rng(7), beta=50.0,
                     budget=Budget(iterations=100_000, min_iterations=300)) for _ in range(2)]
    assert runs[0].best == runs[1].best and runs[0].iterations == runs[1].iterations
    assert runs[0].stop_reason == "converged"
    # FlexFlow's rule: stopped once the best had not improved for half the iterations so far.
    assert runs[0].iterations - runs[0].best_found_at_iteration > runs[0].iterations / 2 - 1


def test_infinite_cost_is_never_accepted_and_budget_in_seconds():
    ticks = iter(range(1000))
    result = run_mcmc(0.0, step, lambda x: float("inf") if x > 0.2 else toy_cost(x), np.random.default_rng(1),
                      beta=1e-9, budget=Budget(seconds=50), clock=lambda: float(next(ticks)))
    assert result.best <= 0.2 and result.stop_reason == "seconds" and result.seconds >= 50 and result.iterations < 50


def test_ctrl_c_keeps_the_best():
    calls = {"n": 0}

    def interrupting_cost(x: float) -> float:
        calls["n"] += 1
        if calls["n"] == 50:
            raise KeyboardInterrupt
        return toy_cost(x)

    result = run_mcmc(0.0, step, interrupting_cost, np.random.default_rng(0), beta=50.0, budget=Budget(iterations=500))
    assert result.stop_reason == "interrupted" and result.iterations <= 50
    assert result.best_cost == toy_cost(result.best) < toy_cost(0.0)


def test_a_stop_request_ends_the_chain_and_keeps_the_best():
    calls = {"n": 0}

    def requested() -> bool:
        calls["n"] += 1
        return calls["n"] > 30

    result = run_mcmc(0.0, step, toy_cost, np.random.default_rng(0), beta=50.0, budget=Budget(iterations=500),
                      stop_requested=requested)
    assert result.stop_reason == "interrupted" and result.iterations == 30
    assert result.best_cost == toy_cost(result.best) <= toy_cost(0.0)


@pytest.mark.parametrize("kwargs, message", [
    pytest.param({}, "needs seconds or iterations, got neither", id="no-limit"),
    pytest.param({"seconds": 0.0}, "seconds must be > 0, got 0.0", id="zero-seconds"),
    pytest.param({"iterations": 0}, "iterations must be an integer >= 1, got 0", id="zero-iterations"),
    pytest.param({"iterations": 10, "min_iterations": -5}, "min_iterations must be an integer >= 1, got -5",
                 id="negative-minimum"),
])
def test_a_budget_that_cannot_stop_a_chain_is_a_one_line_error(kwargs, message):
    with pytest.raises(BudgetError, match=message) as error:
        Budget(**kwargs)
    assert isinstance(error.value, SoapError) and "\n" not in str(error.value)


def test_convergence_is_judged_after_flexflows_minimum_unless_the_budget_sets_one():
    assert Budget(iterations=10).convergence_floor == FLEXFLOW_MIN_ITERATIONS == 1000
    assert Budget(iterations=10, min_iterations=40).convergence_floor == 40


@pytest.mark.parametrize("budget, iteration, best_at, elapsed_s, expected", [
    pytest.param(Budget(iterations=5000, min_iterations=1000), 100, 80, 1.0,
                 "converged if no gain in 900 iterations", id="before-the-minimum"),
    pytest.param(Budget(iterations=5000, min_iterations=1000), 1500, 1200, 1.0,
                 "converged if no gain in 901 iterations", id="half-rule"),
    pytest.param(Budget(iterations=1600, min_iterations=1000), 1500, 1200, 1.0,
                 "iteration budget in 100", id="iterations-first"),
    pytest.param(Budget(seconds=10.0, min_iterations=1000), 500, 400, 9.0,
                 "time budget in 1 s", id="seconds-first"),
])
def test_progress_says_what_stops_the_chain_first(budget, iteration, best_at, elapsed_s, expected):
    assert Progress(iteration, 1.0, best_at, elapsed_s, budget).waiting_for() == expected


def test_progress_reports_every_iteration_and_what_it_says_happens():
    seen = []
    budget = Budget(iterations=100_000, min_iterations=300)
    result = run_mcmc(0.0, step, toy_cost, np.random.default_rng(7), beta=50.0, budget=budget,
                      on_iteration=seen.append)
    assert [p.iteration for p in seen] == list(range(1, result.iterations + 1))
    # After the last improvement the chain converges exactly when its progress said it would.
    last = seen[-1]
    assert last.best_at_iteration == result.best_found_at_iteration
    assert last.waiting_for() == "converged if no gain in 0 iterations"
