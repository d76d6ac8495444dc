"""Fit a link's latency and bandwidth to measured transfer times, and the non-decreasing curve that prices it.

    python -m simulator.calibrate --model alexnet --gpus 2     # measures 4 KB - 64 MB, fits, plots links.png

An ordinary least-squares line through (bytes, seconds) (scipy.stats.linregress): the intercept is the
latency (clipped at 0: a negative intercept is noise), the slope 1/bandwidth; R^2 says how well a line
explains the timings. For an all-reduce the bytes on the x axis are the ring's traffic per device,
2(r-1)/r * message bytes, so the fitted bandwidth is the one the simulator's ring formula uses.

The simulator prices a measured link by interpolating its points (simulator.machine.Link), which only makes
sense if the points never fall as messages grow: moving more bytes cannot take less time (the larger message
holds the smaller one). A point below a smaller message's is noise: on this 2-core machine 64 KB once timed
3.9 ms and 256 KB 0.64 ms. monotonic_points replaces the points by their isotonic regression (least squares
under the constraint "non-decreasing", scipy.optimize.isotonic_regression): each run of points that breaks
the order becomes its mean, so neither the slow point nor the fast one is trusted alone (a running maximum
would let one slow outlier raise every larger size; a running minimum from the large end, one fast one lower
every smaller size); points already in order are kept as measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.optimize import isotonic_regression

from models.errors import SoapError

Points = tuple[tuple[float, float], ...]  # (bytes, seconds), bytes increasing


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


def monotonic_points(points: Points) -> Points:
    """`points` with their times made non-decreasing in bytes by isotonic regression (module docstring)."""
    seconds = isotonic_regression([s for _, s in points], increasing=True).x
    return tuple((b, float(s)) for (b, _), s in zip(points, seconds))


def plot_links(path: str, links: dict[str, tuple[Points, Points, LinkFit]], title: str) -> None:
    """One panel per link (name -> measured points, priced points, fitted line), log-log: the measured
    timings as dots, the priced (monotonic) curve as a line, the fitted latency + bytes / bandwidth dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from models.cli import write_figure

    figure, panels = plt.subplots(1, len(links), figsize=(4.5 * len(links), 4), squeeze=False)
    for axes, (name, (measured, priced, fit)) in zip(panels[0], links.items()):
        sizes = np.array([b for b, _ in measured])
        axes.scatter(sizes, [s * 1e3 for _, s in measured], label="measured", zorder=3)
        axes.plot(sizes, [s * 1e3 for _, s in priced], marker=".", label="priced (monotonic)")
        axes.plot(sizes, (fit.latency_s + sizes / fit.bandwidth_bytes_per_s) * 1e3, "k--", linewidth=1,
                  label=f"fit: {fit.bandwidth_bytes_per_s / 1e9:.2f} GB/s + {fit.latency_s * 1e6:.0f} us")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("bytes moved per device (received; all-reduce: ring traffic)")
        axes.set_ylabel("time (ms)")
        axes.set_title(name, fontsize=9)
        axes.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    write_figure(path, figure)
    plt.close(figure)
