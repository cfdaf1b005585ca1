"""The baseline of ``bench/fleet.py``: the same links, simulators and estimator, exported naively.

What many exporters do: one labelled prometheus_client Gauge per metric, every sample set on
every window, and the client library rendering the whole registry on each scrape. Only the
publication differs from ``qtelemetry run``, so the comparison isolates the scrape path.

    python bench/naive_exporter.py CONFIG PORT
"""

from __future__ import annotations

import sys
import threading
import time

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from qtelemetry.config import load_config
from qtelemetry.exporter.exposition import layout
from qtelemetry.runtime.runtime import Runtime


def main(config_path: str, port: int) -> None:
    config = load_config(config_path)
    runtime = Runtime(config)
    registry = CollectorRegistry()
    families = layout(runtime.table)
    gauges = {}
    for family in families:
        for block in family.blocks:
            if block.sample not in gauges:
                gauges[block.sample] = Gauge(block.sample, family.metric.help, block.label_names, registry=registry)
    start_http_server(port, addr="127.0.0.1", registry=registry)
    print(f"serving http://127.0.0.1:{port}/metrics", flush=True)
    window = config.exporter.window_seconds
    while True:
        started = time.monotonic()
        snap = runtime.cycle()
        now = time.time()
        for family in families:
            for block in family.blocks:
                gauge = gauges[block.sample]
                values, keep = block.values_at(snap, now)
                for labels, value, kept in zip(block.label_rows(), values.tolist(), keep.tolist()):
                    if kept:
                        gauge.labels(*labels).set(value) if labels else gauge.set(value)
        threading.Event().wait(max(0.0, window - (time.monotonic() - started)))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
