"""Fault scenarios for simulated links: scripted in the config or injected while running.

A fault changes one physical parameter of the simulator over time: it ramps linearly from no
effect to full ``magnitude`` over ``ramp_s``, holds for ``duration_s`` and then ends. Each kind
is one row of ``EFFECTS``: the parameter it moves and how (add, scale by, or move towards a
value), so the simulator's own physics decides what the operator sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from qtelemetry.drivers.base import StrictModel


@dataclass(frozen=True)
class Effect:
    parameter: str
    operation: Literal["add", "scale", "set"]
    default_magnitude: float
    why: str

    def apply(self, base: float, magnitude: float, level: float) -> float:
        """Parameter value at ``level`` ∈ [0, 1] of the fault's full strength."""
        if self.operation == "add":
            return base + level * magnitude
        if self.operation == "scale":
            return base * (1.0 + level * (magnitude - 1.0))
        return base + level * (magnitude - base)


EFFECTS: dict[str, Effect] = {
    "intercept-resend": Effect("eavesdrop_fraction", "set", 1.0,
                               "Eve measures this fraction of pulses (of the photons to site B, on an entangled-photon "
                               "link) in a random basis and resends (25% QBER on them; CHSH S x (1 - f/2))"),
    "fiber-cut": Effect("insertion_loss_db", "add", 300.0, "no light reaches the receiver"),
    "fiber-bend": Effect("insertion_loss_db", "add", 3.0, "a loss step of `magnitude` dB"),
    "misalignment-drift": Effect("misalignment_error", "add", 0.05, "polarisation/phase drift adds this error"),
    "dark-count-rise": Effect("dark_count_probability", "scale", 20.0, "detector noise rises by this factor"),
    "detector-blinding": Effect("blinding_fraction", "set", 1.0,
                                "Eve blinds the detectors and fakes clicks for this fraction of pulses"),
    "photon-number-splitting": Effect("pns_fraction", "set", 1.0,
                                      "Eve keeps a photon of each multi-photon pulse and blocks single photons, "
                                      "on this fraction of pulses (decoy/signal gain ratio falls)"),
    "source-power-drift": Effect("source_power_factor", "scale", 1.5, "emitted intensities drift by this factor"),
    "key-overconsumption": Effect("key_consumption_bps", "scale", 10.0, "applications ask for this factor more key"),
    "visibility-drop": Effect("visibility", "set", 0.6, "entangled source visibility falls towards this value"),
    "memory-decoherence": Effect("coherence_time_s", "scale", 0.05, "memory coherence time shrinks by this factor"),
}

FAULT_KINDS = tuple(EFFECTS)
FaultKind = Literal[FAULT_KINDS]  # type: ignore[valid-type]
#: Longest time a simulator field or a fault takes, s (about 30 years).
MAX_TIME_S = 1e9


class FaultConfig(StrictModel):
    """One fault on one simulated link; times are seconds since the exporter started."""

    kind: FaultKind
    start_s: float = Field(0.0, ge=0.0, le=MAX_TIME_S, description="when the fault begins")
    ramp_s: float = Field(0.0, ge=0.0, le=MAX_TIME_S, description="time to reach full strength")
    duration_s: float | None = Field(None, gt=0.0, le=MAX_TIME_S, description="how long it lasts after the ramp; omit: forever")
    magnitude: float | None = Field(None, description="strength; omit for the kind's default")

    @property
    def effect(self) -> Effect:
        return EFFECTS[self.kind]

    @property
    def strength(self) -> float:
        """The magnitude at full strength: the configured one, else the kind's default."""
        return self.effect.default_magnitude if self.magnitude is None else self.magnitude

    def level(self, t: float) -> float:
        """Strength in [0, 1] at time ``t``: 0 before, ramping, 1 while held, 0 after."""
        elapsed = t - self.start_s
        if elapsed < 0 or (self.duration_s is not None and elapsed > self.ramp_s + self.duration_s):
            return 0.0
        return 1.0 if self.ramp_s == 0 else min(1.0, elapsed / self.ramp_s)
