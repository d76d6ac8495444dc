"""Fit a link's latency and bandwidth to measured transfer times: time = latency + bytes / bandwidth.

    python -m simulator.calibrate --model alexnet --gpus 2     # measures 4 KB - 64 MB, then fits

An ordinary least-squares line through (bytes, seconds) (scipy.stats.linregress): the intercept is the
latency (clipped at 0: a negative intercept is noise), the slope 1/bandwidth; R^2 says how well a line
explains the timings. For an all-reduce the bytes on the x axis are the ring's traffic per device,
2(r-1)/r * message bytes, so the fitted bandwidth is the one the simulator's ring formula uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from models.errors import SoapError


@dataclass(frozen=True)
class LinkFit:
    latency_s: float
    bandwidth_bytes_per_s: float
    r_squared: float


def fit_link(num_bytes: list[float], seconds: list[float]) -> LinkFit:
    x, y = np.asarray(num_bytes, dtype=float), np.asarray(seconds, dtype=float)
    if len(x) < 3 or len(set(x.tolist())) < 2:
        raise SoapError(f"a link fit needs timings at 3 or more message sizes, got {len(x)}; measure more sizes")
    line = stats.linregress(x, y)
    if line.slope <= 0:
        raise SoapError(f"transfer times do not grow with message size (slope {line.slope:.3g} s/B); the link "
                        f"timings are noise: measure larger messages or more repeats")
    return LinkFit(max(float(line.intercept), 0.0), float(1.0 / line.slope), float(line.rvalue ** 2))
