"""The link fit recovers a known latency and bandwidth from synthetic timings."""

import numpy as np
import pytest

from models.errors import SoapError
from simulator.linkfit import fit_link

SIZES = [4 * 2**10 * 4**k for k in range(8)]  # 4 KB .. 64 MB


def test_exact_line_is_recovered():
    latency, bandwidth = 50e-6, 2.5e9
    fit = fit_link(SIZES, [latency + b / bandwidth for b in SIZES])
    assert fit.latency_s == pytest.approx(latency, rel=1e-9)
    assert fit.bandwidth_bytes_per_s == pytest.approx(bandwidth, rel=1e-9)
    assert fit.r_squared == pytest.approx(1.0)


def test_noisy_timings_are_recovered_within_noise():
    rng = np.random.default_rng(0)
    latency, bandwidth = 1e-4, 0.8e9
    sizes = SIZES * 5
    seconds = [(latency + b / bandwidth) * (1 + rng.normal(0, 0.02)) for b in sizes]
    fit = fit_link(sizes, seconds)
    assert fit.bandwidth_bytes_per_s == pytest.approx(bandwidth, rel=0.03)
    assert fit.r_squared > 0.99


def test_too_few_sizes_and_flat_timings_are_refused():
    with pytest.raises(SoapError, match="needs timings at 3 or more message sizes, got 2"):
        fit_link([1, 2], [1.0, 2.0])
    with pytest.raises(SoapError, match="transfer times do not grow with message size"):
        fit_link([1, 2, 3], [3.0, 2.0, 1.0])
