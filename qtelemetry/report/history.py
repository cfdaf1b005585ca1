"""Accelerated history: a simulated config run on a virtual clock, written as OpenMetrics.

The real engine (fleets, checks, sliding windows, estimators) runs one cycle per window of
simulated time, and the real exposition renders each snapshot at that virtual time, so
``qlink_up`` and data ages are what a scrape at that moment would have seen. Every sample gets
the virtual time as its timestamp and the target labels a scrape would add (``job``,
``instance``); ``promtool tsdb create-blocks-from openmetrics`` turns the file into TSDB blocks.
A week of minutes thus becomes a Prometheus history in seconds, with faults at known times.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from dataclasses import dataclass
from typing import IO, Sequence

import numpy as np
import pandas as pd

from qtelemetry.config import Config
from qtelemetry.drivers.faults import FaultConfig
from qtelemetry.drivers.simulated import check_fault_applies
from qtelemetry.exporter.exposition import layout
from qtelemetry.monitoring.config import duration_seconds
from qtelemetry.runtime.engine import Engine
from qtelemetry.runtime.network import Durations, snapshot_inputs, timed_analysis

log = logging.getLogger(__name__)

#: Key amounts the history keeps per link and step, for checking a report against the simulation.
LEDGER = ("key_generated_bits", "key_requested_bits", "key_delivered_bits")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


_FAILURE = re.compile(r"^([^@/]+)@([^@/]+)/([^@/]+)$")


def with_failures(config: Config, failures: Sequence[str]) -> Config:
    """``config`` with scripted failures ``NAME@OFFSET/DURATION`` (PromQL durations from the start
    of the history): a fibre cut of link NAME, or of every link of site NAME (a site lost). ValueError
    naming the failure that is wrong."""
    faults: dict[str, list[FaultConfig]] = {}
    for spec in failures:
        match = _FAILURE.match(spec)
        if match is None:
            raise ValueError(f"--fail {spec!r}: expected SITE_OR_LINK@OFFSET/DURATION, e.g. m1@2d/2h")
        name, offset, duration = match.groups()
        try:
            start_s, duration_s = duration_seconds(offset), duration_seconds(duration)
        except ValueError as exc:
            raise ValueError(f"--fail {spec!r}: {exc} (use e.g. 2d3h, 90m, 0s)") from None
        if duration_s <= 0:
            raise ValueError(f"--fail {spec!r}: the duration must be positive")
        links = [link for link in config.links if name in (link.name, link.site_a, link.site_b)]
        if not links:
            raise ValueError(f"--fail {spec!r}: no link or site is named {name!r}")
        for link in links:
            try:
                fault = FaultConfig(kind="fiber-cut", start_s=start_s, duration_s=duration_s)
                check_fault_applies(type(link.driver), fault)
            except ValueError as exc:  # a time beyond what a fault takes, or a link without fibre loss
                raise ValueError(f"--fail {spec!r}: link {link.name!r}: {str(exc).splitlines()[-1].strip()}") from None
            faults.setdefault(link.name, []).append(fault)
    links = [link if link.name not in faults else link.model_copy(update={"driver": link.driver.model_copy(
        update={"faults": [*link.driver.faults, *faults[link.name]]})}) for link in config.links]
    return config.model_copy(update={"links": links})


@dataclass(frozen=True)
class History:
    """What was written: the sample times and the key ledger (cumulative bits per link at each time)."""

    times: np.ndarray
    ledger: pd.DataFrame  #: index: Unix time; columns: (link, quantity)
    samples: int


def _relabel(text: str, target: str, timestamp: str) -> list[str]:
    """Sample lines of one exposition with the target labels added and a timestamp appended."""
    lines = []
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = _SAMPLE.match(line)
        if match is None:  # the exposition renders every line it writes this way
            raise ValueError(f"unexpected exposition line: {line!r}")
        name, labels, value = match.groups()
        lines.append(f"{name}{{{target}{',' + labels if labels else ''}}} {value} {timestamp}\n")
    return lines


def write_history(config: Config, start: float, end: float, out: IO[str], job: str = "qtelemetry",
                  instance: str = "history", progress_every: float = 30.0) -> History:
    """Run ``config``'s simulated links from ``start`` to ``end`` (Unix s) one window per step and
    write every step's exposition to ``out`` as OpenMetrics with timestamps.

    Families are written one after the other (OpenMetrics forbids interleaving them), each with
    its samples in time order, as promtool requires; a step's text is kept per family until the
    end, so memory grows with the history (about 60 MB per link-week at one-minute steps).
    """
    step = config.exporter.window_seconds
    times = start + step * np.arange(1, int((end - start) // step) + 1)
    engine = Engine(config, start)
    families = layout(engine.table)
    target = f'job="{job}",instance="{instance}"'
    per_family: list[list[str]] = [[] for _ in families]
    names = engine.table.names
    ledger = np.zeros((times.size, len(names), len(LEDGER)))
    clock, last_log = time.monotonic(), time.monotonic()
    durations = Durations()
    for i, now in enumerate(times.tolist()):
        snapshot = engine.snapshot(engine.cycle(now), sequence=i + 1, published_at=now, window_seconds=step,
                                   reload_success_at=start)
        if engine.table.network is not None:  # the network view, analysed at every step
            network = timed_analysis(engine.table.network, snapshot_inputs(snapshot, now), durations, now)
            snapshot = dataclasses.replace(snapshot, network=network)
        stamp = repr(now)
        for lines, family in zip(per_family, families):
            lines += _relabel(family.render(snapshot, now, openmetrics=False), target, stamp)
        for protocol, group in snapshot.groups.items():
            members = engine.table.groups[protocol]
            for j, key in enumerate(LEDGER):
                if key in group.totals:
                    ledger[i, members, j] = group.totals[key]
        if time.monotonic() - last_log > progress_every:
            last_log = time.monotonic()
            log.info("simulating history", extra={"done": f"{(i + 1) / times.size:.0%}", "step": i + 1, "steps": times.size})
    # what a scrape adds: the target was up at every step
    out.write("# TYPE up gauge\n")
    out.writelines(f"up{{{target}}} 1 {now!r}\n" for now in times.tolist())
    samples = times.size
    for lines, family in zip(per_family, families):
        if lines:
            out.write(family.header(openmetrics=True))
            out.writelines(lines)
            samples += len(lines)
    out.write("# EOF\n")
    log.info("history written", extra={"steps": times.size, "samples": samples, "seconds": f"{time.monotonic() - clock:.1f}"})
    columns = pd.MultiIndex.from_product([names, LEDGER], names=["link", "quantity"])
    return History(times, pd.DataFrame(ledger.reshape(times.size, -1), index=times, columns=columns), samples)
