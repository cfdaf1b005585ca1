"""The links of one config as arrays: everything about a link that is constant while it runs.

Built once at start (and at reload), so that neither a cycle nor a scrape recomputes a plan, a
budget or a label: per-link constants are arrays in config order, and each protocol group knows
which links it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Mapping

import numpy as np
from numpy.typing import NDArray

from qtelemetry.config import LOSS_MARGIN_DB, Config, LinkConfig
from qtelemetry.drivers.base import FleetConfig, IODriverConfig
from qtelemetry.drivers.faults import EFFECTS, FAULT_KINDS
from qtelemetry.drivers.simulated import SimulatedConfig
from qtelemetry.estimation import PROTOCOLS
from qtelemetry.estimation.network import Topology
from qtelemetry.runtime.network import build_topology

#: Reasons the runtime itself drops a window for, on every link (overflow: the link's slot was
#: full, which only a polled link's can be; exported for all so a fleet-wide rate always exists).
RUNTIME_REASONS = ("driver_exception", "stalled", "overflow", "malformed_batch", "invalid_counts", "inconsistent_counts")
#: Reasons only polled (I/O) links can have: the poll timed out.
POLL_REASONS = ("timeout",)


@cache
def _no_estimate_reasons(protocol: str) -> tuple[str, ...]:
    """The reasons a protocol can skip an estimate for (asked of an empty one-link window)."""
    proto = PROTOCOLS[protocol]
    empty = {name: np.zeros((1, *shape)) for name, shape in proto.count_shapes.items()}
    return tuple(proto.no_estimate(empty))


@dataclass(frozen=True)
class LinkTable:
    """Per-link constants in config order, and the links of each protocol group."""

    links: tuple[LinkConfig, ...]
    names: tuple[str, ...]
    index: Mapping[str, int]
    #: protocol -> config indices of its links, in the group's row order
    groups: Mapping[str, NDArray[np.intp]]
    #: every error reason any link can have; ``reason_mask[i, r]``: link i exports reason r
    reasons: tuple[str, ...]
    reason_mask: NDArray[np.bool_]
    #: every reason an estimate can be skipped for; ``skip_mask[i, s]``: link i's protocol has it
    skip_reasons: tuple[str, ...]
    skip_mask: NDArray[np.bool_]
    #: ``fault_mask[i, k]``: fault kind k can act on link i (simulated links only)
    fault_mask: NDArray[np.bool_]
    #: a link with no new data for this long is down, seconds
    stall_timeout: NDArray[np.float64]
    loss_budget_db: NDArray[np.float64]  #: NaN: none
    expected_key_rate_bps: NDArray[np.float64]  #: NaN: none
    network: Topology | None = None  #: the sites and demands of the network view, if configured

    @classmethod
    def build(cls, config: Config) -> "LinkTable":
        links = tuple(config.links)
        n = len(links)
        names = tuple(link.name for link in links)
        groups: dict[str, list[int]] = {}
        for i, link in enumerate(links):
            groups.setdefault(link.driver.protocol, []).append(i)
        reasons = list(RUNTIME_REASONS + POLL_REASONS)
        for link in links:
            reasons += [r for r in link.driver.error_reasons if r not in reasons]
        reason_mask = np.zeros((n, len(reasons)), bool)
        skip_reasons = sorted({r for p in groups for r in _no_estimate_reasons(p)})
        skip_mask = np.zeros((n, len(skip_reasons)), bool)
        fault_mask = np.zeros((n, len(FAULT_KINDS)), bool)
        stall = np.full(n, config.exporter.stall_timeout_seconds)
        for i, link in enumerate(links):
            driver = link.driver
            own = RUNTIME_REASONS + (POLL_REASONS + driver.error_reasons if isinstance(driver, IODriverConfig) else ())
            reason_mask[i, [reasons.index(r) for r in own]] = True
            skip_mask[i, [skip_reasons.index(r) for r in _no_estimate_reasons(driver.protocol)]] = True
            if isinstance(driver, SimulatedConfig):
                fault_mask[i] = _fault_kinds(type(driver))
            if isinstance(driver, IODriverConfig):  # a poll may take its interval plus its timeout
                stall[i] = max(stall[i], 2 * driver.poll_interval_seconds + driver.timeout_seconds)
        budget, expected = _plans(links)
        return cls(
            links=links, names=names, index={name: i for i, name in enumerate(names)},
            groups={p: np.array(rows, np.intp) for p, rows in groups.items()},
            reasons=tuple(reasons), reason_mask=reason_mask,
            skip_reasons=tuple(skip_reasons), skip_mask=skip_mask, fault_mask=fault_mask,
            stall_timeout=stall, loss_budget_db=budget, expected_key_rate_bps=expected,
            network=None if config.network is None else build_topology(config.network, links),
        )

    def __len__(self) -> int:
        return len(self.names)


@cache
def _fault_kinds(config_type: type[SimulatedConfig]) -> NDArray[np.bool_]:
    """Which fault kinds move a parameter this simulator has."""
    return np.array([EFFECTS[kind].parameter in config_type.model_fields for kind in FAULT_KINDS])


def _plans(links: tuple[LinkConfig, ...]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Loss budget (configured, else the model's loss + margin) and planned key rate per link.

    Each fleet type computes its links' model figures in one vectorised call.
    """
    n = len(links)
    nominal, expected = np.full(n, np.nan), np.full(n, np.nan)
    by_type: dict[type, list[int]] = {}
    for i, link in enumerate(links):
        if isinstance(link.driver, FleetConfig):
            by_type.setdefault(type(link.driver), []).append(i)
    for config_type, rows in by_type.items():
        configs = [links[i].driver for i in rows]
        nominal[rows] = config_type.nominal_loss_db(configs)
        expected[rows] = config_type.expected_key_rate_bps(configs)
    known = np.array([link.driver.plan() for link in links], float).reshape(n, 2)
    configured_budget = np.array([known[i, 0] if l.loss_budget_db is None else l.loss_budget_db
                                  for i, l in enumerate(links)])
    configured_rate = np.array([known[i, 1] if l.expected_secret_key_rate_bps is None else l.expected_secret_key_rate_bps
                                for i, l in enumerate(links)])
    return (np.where(np.isnan(configured_budget), nominal + LOSS_MARGIN_DB, configured_budget),
            np.where(np.isnan(configured_rate), expected, configured_rate))
