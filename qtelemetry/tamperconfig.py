"""Config of the tamper detectors (``exporter.tamper``, overridden per link by ``links[].tamper``).

Times are seconds, like the rest of the exporter config. The mean time between false alarms is
per link, all its detectors together; see ``qtelemetry.estimation.changedetect``.
"""

from __future__ import annotations

from pydantic import Field

from qtelemetry.drivers.base import StrictModel

#: Longest time a setting takes, s (about 30 years), as for simulator fields.
MAX_SECONDS = 1e9


class TamperConfig(StrictModel):
    """Sequential detectors on every decoy-BB84 link: what counts as a change, and how rare false alarms are."""

    enabled: bool = Field(True, description="run the detectors on decoy-BB84 links")
    mean_time_between_false_alarms_seconds: float = Field(
        30 * 86400.0, gt=0.0, le=MAX_SECONDS,
        description="mean time between false alarms of one link, all its detectors together (30 d)")
    warmup_seconds: float = Field(600.0, gt=0.0, le=MAX_SECONDS,
                                  description="data that sets the baseline at start (and after a re-arm with relearn)")
    qber_shift: float = Field(0.0125, gt=0.0, lt=0.5,
                              description="QBER rise to detect (intercept-resend on a fraction f adds f/4)")
    decoy_gain_shift: float = Field(0.2, gt=0.0, le=10.0,
                                    description="relative change of the decoy/signal gain ratio to detect, either way")
    vacuum_gain_factor: float = Field(3.0, gt=1.0, le=1e6,
                                      description="factor by which the vacuum gain (dark counts) rises or falls")


def resolve(default: TamperConfig, override: TamperConfig | None) -> TamperConfig:
    """A link's settings: the exporter's, with the fields its own ``tamper`` sets."""
    if override is None:
        return default
    return default.model_copy(update={name: getattr(override, name) for name in override.model_fields_set})
