"""Config of the tamper detectors (``exporter.tamper``, overridden per link by ``links[].tamper``).

Times are seconds, like the rest of the exporter config. False alarms are budgeted for the whole
exporter: ``fleet_mean_time_between_false_alarms_seconds`` is shared out equally among the links
whose detectors run, except that a link may keep its own mean time; ``link_mean_times`` does the
arithmetic (the link rates add up to the fleet's). See ``qtelemetry.estimation.changedetect``.
"""

from __future__ import annotations

from typing import Annotated, Sequence

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from qtelemetry.drivers.base import StrictModel
from qtelemetry.estimation.changedetect import Settings

#: Longest time a setting takes, s (about 30 years), as for simulator fields.
MAX_SECONDS = 1e9
#: The QBER rises the bank of CUSUMs is tuned to: intercept-resend on 1, 2, 5 and 10 % of the pulses.
QBER_SHIFTS = (0.0025, 0.005, 0.0125, 0.025)
#: Most members of a QBER bank (each one takes a share of the link's false-alarm budget).
MAX_BANK = 8

QberShift = Annotated[float, Field(gt=0.0, lt=0.5)]


class TamperSettings(StrictModel):
    """What counts as a change on a link, for each detector."""

    enabled: bool = Field(True, description="run the detectors on decoy-BB84 and entangled-photon (BBM92) links")
    warmup_seconds: float = Field(600.0, gt=0.0, le=MAX_SECONDS,
                                  description="data that sets the baseline at start (and after a re-arm with relearn)")
    qber_shifts: tuple[QberShift, ...] = Field(
        QBER_SHIFTS, min_length=1, max_length=MAX_BANK,
        description="QBER rises a bank of detectors per basis is tuned to, one each (intercept-resend on a fraction f adds f/4)")
    decoy_gain_shift: float = Field(0.2, gt=0.0, le=10.0,
                                    description="relative change of the decoy/signal gain ratio to detect, either way")
    vacuum_gain_factor: float = Field(3.0, gt=1.0, le=1e6,
                                      description="factor by which the vacuum gain (dark counts) rises or falls")
    chsh_shift: float = Field(0.1, gt=0.0, le=4.0,
                              description="fall of the CHSH value S to detect on entangled-photon links")


class TamperConfig(TamperSettings):
    """``exporter.tamper``: the settings of every link, and the exporter's false-alarm budget."""

    fleet_mean_time_between_false_alarms_seconds: float = Field(
        90 * 86400.0, gt=0.0, le=MAX_SECONDS,
        description="mean time between false alarms of the whole exporter, all links and detectors together (90 d)")


class LinkTamperConfig(TamperSettings):
    """``links[].tamper``: the fields set here replace the exporter's for this link."""

    mean_time_between_false_alarms_seconds: float | None = Field(
        None, gt=0.0, le=MAX_SECONDS,
        description="this link's own mean time between false alarms, all its detectors together; omit: its share "
                    "of the fleet's")


def resolve(default: TamperConfig, override: LinkTamperConfig | None) -> LinkTamperConfig:
    """A link's settings: the exporter's, with the fields its own ``tamper`` sets."""
    settings = {name: getattr(default, name) for name in TamperSettings.model_fields}
    if override is not None:
        settings.update({name: getattr(override, name) for name in override.model_fields_set})
    return LinkTamperConfig.model_construct(**{"mean_time_between_false_alarms_seconds": None, **settings})


def link_mean_times(fleet_s: float, own: Sequence[float | None]) -> NDArray[np.float64]:
    """Mean time between false alarms of each watched link: its own where set, else an equal share of the
    rate the fleet budget leaves, so that the links' alarm rates add up to at most 1/``fleet_s``.

    ValueError when the links' own settings leave nothing for the others.
    """
    own_s = np.array([np.nan if t is None else t for t in own], float)
    shared = np.isnan(own_s)
    left = 1.0 / fleet_s - np.sum(1.0 / own_s[~shared])
    if left < 0 or (left <= 0 and shared.any()):
        raise ValueError((
            f"{fleet_s:g} s is not enough for the links' own mean_time_between_false_alarms_seconds: they alarm "
            f"{np.sum(1.0 / own_s[~shared]) * fleet_s:.3g} times as often as the whole exporter may; raise it or "
            "lengthen the links' own"))
    return np.where(shared, shared.sum() / left if shared.any() else np.inf, own_s)


def detector_settings(resolved: Sequence[LinkTamperConfig], mean_times: NDArray[np.float64]) -> Settings:
    """Detector settings of links with ``resolved`` configs and these mean times between false alarms;
    QBER banks of different sizes padded with NaN (members a link does not have)."""
    column = lambda name: np.array([getattr(t, name) for t in resolved], float)  # noqa: E731
    bank = max((len(t.qber_shifts) for t in resolved), default=1)
    shifts = np.full((len(resolved), bank), np.nan)
    for i, t in enumerate(resolved):
        shifts[i, :len(t.qber_shifts)] = t.qber_shifts
    return Settings(np.asarray(mean_times, float), column("warmup_seconds"), shifts, column("decoy_gain_shift"),
                    column("vacuum_gain_factor"), column("chsh_shift"))
