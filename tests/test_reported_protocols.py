"""Protocols of device-reported figures (ETSI 014/015): count specs, consistency, estimates, catalogue wiring."""

from __future__ import annotations

import numpy as np
import pytest

from qtelemetry.estimation.reported import ETSI014_KME, ETSI015_NODE, REQUEST_BUCKETS
from qtelemetry.monitoring.catalogue import METRICS

PROTOCOLS = (ETSI014_KME, ETSI015_NODE)
NAN = np.nan


def zeros(protocol, links: int = 3) -> dict[str, np.ndarray]:
    return {name: np.zeros((links, *shape)) for name, shape in protocol.count_shapes.items()}


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
def test_every_count_has_a_kind_and_axes(protocol):
    assert set(protocol.count_kinds) == set(protocol.count_axes) == set(protocol.count_shapes)
    assert set(protocol.count_kinds.values()) <= {"count", "amount", "level"}
    assert protocol.param_names == ()


def test_kme_consistency_and_trend():
    counts = zeros(ETSI014_KME)
    counts["key_stored_bits"][:] = [10.0, 20.0, NAN]
    counts["key_capacity_bits"][:] = [10.0, 10.0, 5.0]
    assert list(ETSI014_KME.consistent(counts)) == [True, False, True]  # NaN: not reported, not impossible
    counts["buffer_increase_bits"][:] = [100.0, 0.0, 0.0]
    counts["buffer_decrease_bits"][:] = [40.0, 30.0, 0.0]
    out = ETSI014_KME.estimate(counts, np.array([60.0, 30.0, 0.0]), {}, 0.99)
    assert list(out["key_buffer_trend_bps"][:2]) == [1.0, -1.0] and np.isnan(out["key_buffer_trend_bps"][2])
    assert set(out) == {"key_buffer_trend_bps"}  # level and capacity are exported as the levels they are


def test_node_consistency_and_estimates():
    counts = zeros(ETSI015_NODE)
    counts["link_status"][:] = [[1, 0, 0, 0], [1, 1, 0, 0], [NAN] * 4]
    counts["phys_perf"][:] = [[0.02, 12.0], [0.02, NAN], [1.5, NAN]]
    assert list(ETSI015_NODE.consistent(counts)) == [True, False, False]
    out = ETSI015_NODE.estimate(counts, np.ones(3), {}, 0.99)
    assert list(out["qber_z"][:2]) == [0.02, 0.02] and np.isnan(out["qber_x"]).all()
    assert out["link_active"][0] == 1.0 and np.isnan(out["link_active"][2]) and out["snr"][0] == 12.0


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
def test_catalogue_metrics_read_what_the_protocol_provides(protocol):
    """Gauges read an estimate key or a level; counters a count or amount; histograms per-bucket counts."""
    estimate_keys = set(protocol.estimate(zeros(protocol, 1), np.ones(1), {}, 0.99))
    kinds = protocol.count_kinds
    metrics = [m for m in METRICS if protocol.name in m.protocols]
    assert metrics
    for metric in metrics:
        keys = [key for _, key in metric.series] or [metric.source]
        if metric.type == "gauge":
            assert all(key in estimate_keys or kinds.get(key) == "level" for key in keys), metric.name
            if metric.source in kinds:  # a level exported as it is: one label per axis
                assert len(metric.labels) == 1 + len(protocol.count_axes[metric.source]), metric.name
        elif metric.type == "counter":
            assert kinds[metric.source] in ("count", "amount"), metric.name
            assert len(metric.labels) == 1 + len(protocol.count_axes[metric.source]), metric.name
        else:
            assert metric.type == "histogram" and kinds[metric.source] == "count" and kinds[metric.sum_source] == "amount"
            assert protocol.count_shapes[metric.source][-1] == len(metric.buckets) + 1 == len(REQUEST_BUCKETS) + 1
            assert protocol.count_shapes[metric.sum_source] == protocol.count_shapes[metric.source][:-1]
