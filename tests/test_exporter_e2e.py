"""End to end: `qtelemetry run` subprocess, scraped over HTTP, checked against the channel model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import value

LINK_25KM = """
exporter:
  window_seconds: 0.1
  sliding_windows: 30
  confidence_level: 0.99
links:
  - name: corridor-25km
    site_a: alpha
    site_b: beta
    driver:
      type: simulated-bb84
      fiber_length_km: 25
      attenuation_db_per_km: 0.2
      detector_efficiency: 0.1
      dark_count_probability: 1.0e-6
      misalignment_error: 0.02
      clock_rate_hz: 1.0e9
      mu: 0.5
      nu: 0.1
      p_signal: 0.8
      p_decoy: 0.1
      p_vacuum: 0.1
      ec_efficiency: 1.16
      seed: 7
  - name: metro-5km
    driver: {type: simulated-bb84, fiber_length_km: 5, seed: 8}
"""


def h2(p: float) -> float:
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def analytic_vacuum_weak_rate_bps() -> float:
    """Expected key rate for LINK_25KM, written out from Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005).

    Model gains (their §II) fed into the vacuum+weak bounds (their §V.A) and GLLP; kept
    independent of qtelemetry's own implementation on purpose.
    """
    mu, nu, y0, ed, f = 0.5, 0.1, 1e-6, 0.02, 1.16
    eta = 10 ** (-25 * 0.2 / 10) * 0.1
    q = lambda x: y0 + 1 - math.exp(-eta * x)  # noqa: E731
    eq = lambda x: 0.5 * y0 + ed * (1 - math.exp(-eta * x))  # noqa: E731
    y1 = mu / (mu * nu - nu**2) * (q(nu) * math.exp(nu) - q(mu) * math.exp(mu) * nu**2 / mu**2 - (mu**2 - nu**2) / mu**2 * y0)
    e1 = (eq(nu) * math.exp(nu) - 0.5 * y0) / (y1 * nu)
    rate = 0.5 * (-q(mu) * f * h2(eq(mu) / q(mu)) + mu * math.exp(-mu) * y1 * (1 - h2(e1)))
    return rate * 0.8 * 1e9  # per signal pulse × signal pulses per second


def enough_windows(samples: dict) -> bool:
    return value(samples, "qlink_batches_total", link="corridor-25km") >= 30


def test_metrics_match_the_model(start_exporter):
    exporter = start_exporter(LINK_25KM)
    samples = exporter.wait_for(enough_windows)

    assert value(samples, "qlink_up", link="corridor-25km") == 1.0
    assert value(samples, "qlink_info", link="corridor-25km", site_a="alpha", protocol="bb84-decoy") == 1.0
    # loss: 25 km × 0.2 dB/km = 5 dB
    assert abs(value(samples, "qkd_channel_loss_db", link="corridor-25km") - 5.0) < 0.5

    # QBER: model E_μ = (e0·Y0 + e_d(1 − e^(−ημ)))/Q_μ; consistent within 5 binomial σ
    eta = 10 ** -0.5 * 0.1
    q_mu = 1e-6 + 1 - math.exp(-eta * 0.5)
    e_mu = (0.5e-6 + 0.02 * (1 - math.exp(-eta * 0.5))) / q_mu
    for basis in ("Z", "X"):
        qber = value(samples, "qkd_qber_ratio", link="corridor-25km", basis=basis)
        # over the window: ≈ 30 windows × 1e8 pulses × 0.8 × Q_μ × 1/4 sifted bits per basis
        n = 30 * 1e8 * 0.8 * q_mu / 4
        assert abs(qber - e_mu) < 5 * math.sqrt(e_mu * (1 - e_mu) / n)
        upper = value(samples, "qkd_qber_upper_bound_ratio", link="corridor-25km", basis=basis)
        assert qber < upper < qber + 0.01

    key_rate = value(samples, "qkd_asymptotic_secret_key_rate_bits_per_second", link="corridor-25km")
    expected = analytic_vacuum_weak_rate_bps()
    assert abs(key_rate / expected - 1) < 0.05, (key_rate, expected)

    # finite-key rate (Lim et al. 2014) sits below the asymptotic one: the finite-size penalty
    finite = value(samples, "qkd_secret_key_rate_bits_per_second", link="corridor-25km")
    assert 0 < finite < key_rate
    # PLOB: -log2(1 - η) per pulse for the 5 dB channel, η = 10^-0.5, at 10^9 pulses/s
    plob = value(samples, "qkd_repeaterless_bound_bits_per_second", link="corridor-25km")
    assert plob == pytest.approx(-math.log2(1 - 10**-0.5) * 1e9, rel=0.03)
    assert value(samples, "qkd_repeaterless_bound_ratio", link="corridor-25km") == pytest.approx(finite / plob, rel=0.03)

    # counters for both sides of every ratio, so rate() works over any window
    pulses = value(samples, "qkd_pulses_total", link="corridor-25km", intensity="signal")
    detections = value(samples, "qkd_detections_total", link="corridor-25km", intensity="signal")
    assert np.isclose(detections / pulses, q_mu, rtol=0.02)
    assert value(samples, "qlink_up", link="metro-5km") == 1.0
    assert "qtelemetry_estimation_duration_seconds_count" in samples


def test_demo_config_serves_three_distinct_links(start_exporter):
    exporter = start_exporter()
    samples = exporter.wait_for(lambda s: all(x.value >= 2 for x in s.get("qlink_batches_total", [])) and
                                len(s.get("qkd_channel_loss_db", [])) >= 3, timeout=30)
    losses = sorted(s.value for s in samples["qkd_channel_loss_db"])
    assert len(losses) >= 3 and losses[-1] - losses[0] > 10  # a metro link and a long-haul one
    assert "serving metrics" in exporter.log()
