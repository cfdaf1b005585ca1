"""`promtool check metrics` on a real scrape of the demo exporter finds nothing but the documented
choice: key material is counted in bits, the field's unit (docs/metrics.md)."""

from __future__ import annotations

import re
import subprocess
import urllib.request

from qtelemetry.monitoring.catalogue import METRICS
from test_generate import promtool

BITS = 'use base unit "bytes" instead of "bits"'


def test_promtool_check_metrics_flags_only_the_bits_units(start_exporter):
    tool = promtool()
    exporter = start_exporter()
    exporter.wait_for(lambda s: {"qkd_secret_key_rate_bits_per_second", "qent_chsh_value",
                                 "qent_heralded_fidelity_ratio"} <= s.keys(), timeout=30)
    with urllib.request.urlopen(exporter.url, timeout=10) as response:
        text = response.read()
    done = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    findings = [line for line in (done.stdout + done.stderr).decode().splitlines() if line.strip()]
    served = {line.split("{")[0].split()[0] for line in text.decode().splitlines() if line and not line.startswith("#")}
    bits = {m.sample_name for m in METRICS if "bits" in m.unit and m.sample_name in served}
    unexpected = [f for f in findings if not (f.endswith(BITS) and f.split()[0] in bits)]
    assert not unexpected, "\n".join(unexpected)
    assert bits and {f.split()[0] for f in findings} == bits, "every served metric in bits is reported: the check ran"


def test_metric_names_follow_the_conventions():
    for metric in METRICS:
        assert not re.search(r"_s(_|$)", metric.name), f"{metric.name}: _s reads as seconds"
        if "duration" in metric.name:
            assert metric.type == "histogram", f"{metric.name}: durations are histograms"
