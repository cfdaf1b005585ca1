"""Split one link set across exporter replicas: ``qtelemetry run --shard I/N``.

Every replica reads the same config and keeps the links a stable hash assigns to its shard, so
each link is served by exactly one replica and always by the same one, whatever the order of
the config or the host. The hash is BLAKE2b of the link name (never Python's ``hash()``, which
is salted per process). Changing N moves most links (N/(N+1) of them from N to N+1), like any
modulo scheme: plan the shard count up front (docs/operations.md).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the hash itself needs nothing but hashlib
    from qtelemetry.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``I/N`` with 0 <= I < N; argparse reports the ValueError as a usage error (exit 2)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected I/N (e.g. 0/4), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= I < N (shards are numbered from 0)")
    return Shard(index, count)


def shard_of(link: str, count: int) -> int:
    """The shard that serves ``link`` among ``count``: a fixed-key hash, the same on every host."""
    digest = hashlib.blake2b(link.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def select(config: Config, shard: Shard) -> Config:
    """The config with only the links of ``shard`` (possibly none: the exporter then serves its
    own metrics and no link).

    The tamper false-alarm budget is the whole link set's: the shard keeps the part of it its links
    take, so that each of them gets the same share as unsharded and the replicas add up to the budget.
    """
    mine = np.array([shard_of(link.name, shard.count) == shard.index for link in config.links], bool)
    links = [link for link, kept in zip(config.links, mine) if kept]
    log.info("shard selected", extra={"shard": str(shard), "links": len(links), "of_links": len(config.links)})
    rates = 1.0 / config.tamper_mean_times()[mine]
    tamper = config.exporter.tamper
    if np.nansum(rates) > 0:
        tamper = tamper.model_copy(update={"fleet_mean_time_between_false_alarms_seconds": 1.0 / np.nansum(rates)})
    exporter = config.exporter.model_copy(update={"tamper": tamper})
    return config.model_copy(update={"links": links, "exporter": exporter, "network": None})  # a shard sees part of the graph
