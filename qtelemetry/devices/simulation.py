"""The simulated links of a device process: a Runtime of simulated links, seen link by link.

``qtelemetry simulate`` runs the same Runtime as the exporter on simulated key-distilling links
(decoy BB84, entangled photons). Each ``RuntimeLink`` is one of them as the devices serving it
see it (the ``SimulatedLink`` interface):

- its key store is the fleet's own store, which the runtime fills with distilled key every
  window and drains by the configured ``key_consumption_bps``; ``withdraw`` takes key from that
  same store under the fleet's lock, so keys handed out by a KME really consume key;
- its live figures are what qtelemetry's estimator computes from the simulated counts (the
  runtime's latest snapshot): the simulated node reports the finite-key secret key rate and
  the Z-basis QBER of the link, as a real node reports its own.

How the ETSI GS QKD 015 figures are derived (``figures``):

- ``skr``: the estimated secret key rate while the link generates key (up, with a positive
  estimate), else 0;
- ``eskr``: equal to ``skr``: the simulation models no key consumed inside the link
  (authentication of the classical channel, key relay), which is what eskr subtracts;
- ``qkdl_status`` by the definitions of etsi-qkd-node-types: ACTIVE while generating key,
  PASSIVE when not generating with key left in the store, PENDING when the link has not
  delivered its first window yet and holds no key, OFF when not generating with no key left;
- QBER: the estimated Z-basis QBER while the link is up (also when it distils no key: a node
  still measures it); not reported otherwise;
- ``expected_consumption``: the configured ``key_consumption_bps`` (the applications' known demand).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from qtelemetry.devices.links import LinkFigures
from qtelemetry.drivers.simulated import KeyDistillingFleet
from qtelemetry.runtime.runtime import Runtime


def link_status(generating: bool, stored_bits: float, delivered: bool) -> str:
    """ETSI GS QKD 015 ``qkdl_status`` of a link (identities of etsi-qkd-node-types)."""
    if generating:
        return "ACTIVE"  # "link actively generating keys"
    if stored_bits > 0:
        return "PASSIVE"  # "no key generation on key association link but the pool of keys are still available"
    return "OFF" if delivered else "PENDING"  # "no key generation and no keys are available" / "waiting for activation"


@dataclass(frozen=True)
class RuntimeLink:
    """One simulated link of ``runtime``: config index ``index``, row ``row`` of ``fleet`` and of its group."""

    name: str
    site_a: str
    site_b: str
    runtime: Runtime
    index: int
    fleet: KeyDistillingFleet
    row: int
    group_row: int
    protocol: str
    demand_bps: float

    def key_store(self) -> tuple[float, float]:
        return self.fleet.key_store(self.row)

    def withdraw(self, bits: int) -> bool:
        return self.fleet.withdraw(self.row, bits)

    def figures(self) -> LinkFigures:
        snapshot, i = self.runtime.snapshot, self.index
        stored, _ = self.key_store()
        group = snapshot.groups.get(self.protocol)
        up = snapshot.up(time.time())[i]
        if group is None or not up:
            status = link_status(False, stored, not math.isnan(snapshot.received_at[i]))
            return LinkFigures(status, 0.0, 0.0, math.nan, self.demand_bps)
        skr = float(group.estimates["secret_key_rate_bps"][self.group_row])
        generating = skr > 0  # NaN (no estimate possible) is not generating
        rate = skr if generating else 0.0
        return LinkFigures(link_status(generating, stored, True), rate, rate,
                           float(group.estimates["qber_z"][self.group_row]), self.demand_bps)


def runtime_links(runtime: Runtime) -> list[RuntimeLink]:
    """The links of ``runtime`` as its devices see them, in config order; every link must distil key."""
    table, links, missing = runtime.table, [], []
    for index, link in enumerate(table.links):
        fleet, row = runtime.fleet_of(link.name)
        if not isinstance(fleet, KeyDistillingFleet):
            missing.append(link.name)
            continue
        protocol = link.driver.protocol
        group_row = int(np.flatnonzero(table.groups[protocol] == index)[0])
        links.append(RuntimeLink(link.name, link.site_a, link.site_b, runtime, index, fleet, row, group_row,
                                 protocol, link.driver.key_consumption_bps))
    if missing:
        raise ValueError(f"links without a simulated key store: {', '.join(missing)}")
    return links
