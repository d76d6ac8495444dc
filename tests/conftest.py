"""Test setup: 8 CPU devices in this process, and the one-device training step every strategy must match.

XLA reads XLA_FLAGS when JAX creates its CPU backend, so the flag is set here, before any test module
imports jax. The local-cluster workers drop it again (one device each).
"""

import os

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]
).strip()

from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from models.graph import OpGraph  # noqa: E402
from models.zoo import build_graph  # noqa: E402
from soap.baselines import single  # noqa: E402
from soap.runner import RunConfig, RunResult, run_strategy  # noqa: E402


@dataclass(frozen=True)
class Reference:
    """One SGD step of AlexNet (tiny-imagenet, batch 8) on one device: what every strategy must give."""

    graph: OpGraph
    result: RunResult

    def assert_matches(self, result: RunResult) -> None:
        """Same loss and updated parameters, up to float32 summation order.

        rtol 1e-5; atol 1e-8 for entries near zero (biases start at 0 and move by lr * grad), where a sum
        split across devices adds in another order and differs by about 1e-9 (measured).
        """
        np.testing.assert_allclose(result.losses, self.result.losses, rtol=1e-5)
        assert result.params.keys() == self.result.params.keys()
        for name, entry in self.result.params.items():
            for key, value in entry.items():
                np.testing.assert_allclose(result.params[name][key], value, rtol=1e-5, atol=1e-8,
                                           err_msg=f"{name}.{key}")


@pytest.fixture(scope="session")
def reference() -> Reference:
    graph = build_graph("alexnet", "tiny-imagenet", 8)
    return Reference(graph, run_strategy(graph, single(graph, 1), RunConfig(fetch_params=True)))
