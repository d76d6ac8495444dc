"""The generic MCMC driver on a toy cost, alone."""

import numpy as np

from search.mcmc import Budget, run_mcmc

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
