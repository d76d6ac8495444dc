"""The optimizers a training step applies, and what each costs beside the parameters.

    python -m search.optimize --model gpt2 --optimizer adamw ...

- `sgd`: SGD with momentum 0.9 (Krizhevsky's, and the CNN baselines'): one state array per parameter
  (the momentum); an update reads the weight, its gradient and momentum and writes the weight and
  momentum: 5 parameter-sized arrays of traffic.
- `adamw`: Adam with decoupled weight decay (Loshchilov & Hutter 2019; optax.adamw defaults): two state
  arrays per parameter (first and second moments); an update reads weight, gradient and both moments and
  writes the weight and both moments: 7 arrays.
The simulator charges a task (2 + states) x its parameter slice in memory (weights, gradients, states)
and the calibrated (or roofline) update time.
"""

from __future__ import annotations

import enum

import optax

from soap.step import sgd_momentum


class Optimizer(str, enum.Enum):
    SGD = "sgd"
    ADAMW = "adamw"

    @property
    def states(self) -> int:
        """State arrays kept per parameter array."""
        return {Optimizer.SGD: 1, Optimizer.ADAMW: 2}[self]

    @property
    def update_traffic(self) -> int:
        """Parameter-sized arrays one update reads and writes."""
        return {Optimizer.SGD: 5, Optimizer.ADAMW: 7}[self]

    def transformation(self, learning_rate: float | None = None) -> optax.GradientTransformation:
        """The optax transformation, at `learning_rate` or the optimizer's usual one (0.01 for SGD with
        momentum, the runs'; 1e-3 for AdamW)."""
        if self is Optimizer.SGD:
            return sgd_momentum(0.01 if learning_rate is None else learning_rate)
        return optax.adamw(1e-3 if learning_rate is None else learning_rate)
