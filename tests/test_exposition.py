"""The hand-rendered exposition is what prometheus_client's own parsers read, in both formats."""

from __future__ import annotations

import gzip
import re

import numpy as np
import pytest
from conftest import parse_exposition, value
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from runtime_drivers import DeviceConfig, make_config, simulated

from qtelemetry.config import default_config
from qtelemetry import selfmetrics
from qtelemetry.exporter.exposition import Block, Exposition, format_values
from qtelemetry.exporter.otel import push_counter
from qtelemetry.exporter.network_metrics import ANALYSER_METRICS
from qtelemetry.exporter.server import EndpointMetrics
from qtelemetry.monitoring.catalogue import METRICS
from qtelemetry.runtime.runtime import Runtime


@pytest.fixture(scope="module")
def demo() -> tuple[Runtime, Exposition]:
    own = selfmetrics.registry()
    EndpointMetrics(own, lambda: 3, lambda: 512)  # the endpoint's instruments, as a server registers them
    push_counter(own)  # and the OTLP push's, as `run` registers them with exporter.otlp
    runtime = Runtime(default_config(), own)
    for now in (runtime.started + 1, runtime.started + 2):
        runtime.cycle(now)
    return runtime, Exposition(lambda: runtime.snapshot, own)


def families(text: str, openmetrics: bool = False) -> dict:
    parse = parse_openmetrics if openmetrics else text_string_to_metric_families
    return {f.name: f for f in parse(text)}


def test_text_and_openmetrics_carry_the_same_samples_and_types(demo):
    _, exposition = demo
    text = exposition.render(now=1e9).decode()
    om = exposition.render(openmetrics=True, now=1e9).decode()
    assert om.endswith("# EOF\n") and "# EOF" not in text
    by_text, by_om = families(text), families(om, openmetrics=True)
    own = {m.name for m in METRICS if m.own}  # the process's own figures move between the two renders
    samples = lambda fams: sorted((s.name, tuple(sorted(s.labels.items())), None if f.name in own else s.value)  # noqa: E731
                                  for f in fams.values() for s in f.samples)
    assert samples(by_text) == samples(by_om)
    for metric in METRICS:
        if metric.name in ANALYSER_METRICS:  # served by `qtelemetry network` only
            continue
        assert by_om[metric.name].type == metric.type, metric.name
        assert by_om[metric.name].documentation == metric.help


OWN_SAMPLE = re.compile(rf"^((?:{'|'.join(m.name for m in METRICS if m.own)})\S*) \S+$", re.M)


def test_gzip_stream_is_the_same_text(demo):
    """Byte for byte, but for the values of the process's own figures (CPU, RSS, render times),
    which move between two renders."""
    _, exposition = demo
    for openmetrics in (False, True):
        plain = exposition.render(openmetrics=openmetrics, now=1e9).decode()
        zipped = gzip.decompress(exposition.render(openmetrics=openmetrics, gzip=True, now=1e9)).decode()
        assert OWN_SAMPLE.sub(r"\1 _", zipped) == OWN_SAMPLE.sub(r"\1 _", plain)
        assert "process_resident_memory_bytes " in zipped


def test_a_snapshot_is_rendered_once_but_freshness_is_computed_per_scrape(demo):
    runtime, exposition = demo
    published = runtime.snapshot.published_at
    soon, later = parse_exposition(exposition.render(now=published + 1).decode()), \
        parse_exposition(exposition.render(now=published + 100).decode())
    assert value(later, "qtelemetry_estimation_lag_seconds") == pytest.approx(100, abs=1e-6)
    assert value(soon, "qlink_up", link="metro-10km") == 1
    assert value(later, "qlink_up", link="metro-10km") == 0  # same cached body, now stale
    received = runtime.snapshot.received_at[runtime.table.index["metro-10km"]]
    assert value(later, "qlink_data_age_seconds", link="metro-10km") == pytest.approx(published + 100 - received)
    assert value(soon, "qkd_channel_loss_db", link="metro-10km") == value(later, "qkd_channel_loss_db", link="metro-10km")


def test_values_are_formatted_as_prometheus_reads_them():
    values = np.array([0.0, 3.0, 2.5e-7, np.inf, -np.inf, 1e300, 12345678901.5, 0.1 + 0.2])
    assert format_values(values) == ["0", "3", "2.5e-07", "+Inf", "-Inf", "1e+300", "12345678901.5", "0.3"]
    assert format_values(np.array([0.0, 7.0, 2.0**52])) == ["0", "7", str(2**52)]  # counts stay exact
    # 12 significant digits: within half a unit of the 12th digit, and a rounding that keeps order
    rng = np.random.default_rng(1)
    floats = np.sort(rng.random(10_000) * 10.0 ** rng.integers(-9, 15, 10_000))
    written = np.array([float(v) for v in format_values(floats)])
    np.testing.assert_allclose(written, floats, rtol=5e-12)
    assert np.all(np.diff(written) >= 0)


def test_the_fast_and_the_general_path_write_the_same_lines():
    """Blocks with every value shown use one %-format; blocks with values left out go line by line."""
    values = [np.array([1.5, np.nan, 2.25e-9, 7.0]), np.array([1.5, 3.0, 2.25e-9, 7.0])]
    block = Block("x", ("link",), [("a",), ("b",), ("c",), ("d",)], (), lambda s, n: values.pop(0))
    general = block.render(None, 0.0)  # type: ignore[arg-type]
    fast = block.render(None, 0.0)  # type: ignore[arg-type]
    assert general == 'x{link="a"} 1.5\nx{link="c"} 2.25e-09\nx{link="d"} 7\n'
    assert fast == 'x{link="a"} 1.5\nx{link="b"} 3\nx{link="c"} 2.25e-09\nx{link="d"} 7\n'


def test_label_values_are_escaped():
    block = Block("x", ("link", "why"), [("a",)], (('quote " back \\ new\nline',),), lambda s, n: np.array([1.0]))
    text = "# TYPE x gauge\n" + block.render(None, 0.0)  # type: ignore[arg-type]
    (sample,) = next(iter(text_string_to_metric_families(text))).samples
    assert sample.labels == {"link": "a", "why": 'quote " back \\ new\nline'}


def test_links_before_their_first_window_export_no_estimates_and_are_down():
    own = selfmetrics.registry()
    runtime = Runtime(make_config({"sim": simulated(1), "polled": DeviceConfig()}), own)
    samples = parse_exposition(Exposition(lambda: runtime.snapshot, own).render().decode())
    assert {s.value for s in samples["qlink_up"]} == {0}
    assert "qlink_data_age_seconds" not in samples and "qkd_channel_loss_db" not in samples
    assert value(samples, "qtelemetry_estimation_duration_seconds_count") == 0
    # only polled links carry the poll reasons
    reasons = {(s.labels["link"], s.labels["reason"]) for s in samples["qlink_driver_errors_total"]}
    assert ("polled", "timeout") in reasons and ("sim", "timeout") not in reasons


def test_a_scrape_is_served_the_newest_rendered_snapshot_if_recent_enough():
    """While the newest snapshot is being rendered, a recent one is served, with its own age."""
    runtime = Runtime(make_config({"sim": simulated(1)}))
    exposition = Exposition(lambda: runtime.snapshot)
    runtime.cycle(now=runtime.started + 1)
    exposition.render()
    runtime.cycle(now=runtime.started + 2)
    served = parse_exposition(exposition.render(now=runtime.started + 2.5).decode())
    assert value(served, "qlink_batches_total", link="sim") == 1  # one window old: served as rendered
    assert value(served, "qlink_data_age_seconds", link="sim") == pytest.approx(1.5)  # and its age told
    runtime.cycle(now=runtime.started + 3)
    runtime.cycle(now=runtime.started + 4)
    served = parse_exposition(exposition.render(now=runtime.started + 4.5).decode())
    assert value(served, "qlink_batches_total", link="sim") == 4  # three windows old: the newest is rendered
    assert value(served, "qlink_data_age_seconds", link="sim") == pytest.approx(0.5)
