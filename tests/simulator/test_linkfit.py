"""The link fit recovers a known latency and bandwidth from synthetic timings."""

import numpy as np
import pytest

from models.errors import SoapError
from simulator.linkfit import fit_link, monotonic_points, plot_links
from simulator.machine import Link

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


def test_monotonic_points_pool_what_breaks_the_order_and_keep_the_rest():
    # The timings: 64 KB at 3.9 ms, then 256 KB at 0.64 ms; the sizes around them in order.
    points = ((16e3, 0.5e-3), (64e3, 3.9e-3), (256e3, 0.64e-3), (1e6, 4.1e-3), (4e6, 9e-3))
    priced = monotonic_points(points)
    assert [b for b, _ in priced] == [b for b, _ in points]
    assert [s for _, s in priced] == pytest.approx([0.5e-3, 2.27e-3, 2.27e-3, 4.1e-3, 9e-3])
    assert monotonic_points(priced) == priced
    link = Link(1e9, 0.0, measured=priced)
    times = [link.transfer_ms(b) for b in np.geomspace(1e3, 1e8, 200)]
    assert all(a <= b for a, b in zip(times, times[1:]))


def test_the_links_plot_is_a_png(tmp_path):
    points = tuple((float(b), 1e-4 + b / 1e9) for b in SIZES)
    plot_links(str(tmp_path / "links.png"), {"all-reduce": (points, monotonic_points(points), fit_link(
        [b for b, _ in points], [s for _, s in points]))}, "fake")
    assert (tmp_path / "links.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
