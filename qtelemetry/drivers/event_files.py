"""Config of a replayed link's event files: where they are and what the files do not say.

The replay driver embeds ``EventFiles``; ``windows()`` reads the files a chunk at a time and gives
the link's counts per window as they complete (``qtelemetry.drivers.formats.events``), ``batches()``
the same as a replayed link reads them (a ``WindowSource``).

Event files hold detections, not the numbers the estimator reads from a link's config (μ, ν,
detector efficiencies, ...): each model takes them as a simulated link of its protocol does,
with the simulated config's own fields (bounds, defaults, descriptions). What describes the
devices themselves (intensities, detector efficiencies) has no default here: a simulator's
assumption would silently skew a lab's key rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Iterator, Literal, Union

import numpy as np

from pydantic import Field

from qtelemetry.configfile import ConfigPath
from qtelemetry.drivers.base import FieldError, StrictModel, check
from qtelemetry.drivers.params import params_model
from qtelemetry.drivers.simulated_bb84 import SimulatedBB84Config
from qtelemetry.drivers.simulated_spdc import SimulatedSPDCConfig
from qtelemetry.estimation import PROTOCOLS
from qtelemetry.drivers.formats.events import Windows, iter_bb84_windows, iter_bbm92_windows, read_events

if TYPE_CHECKING:  # pyarrow: imported where a replay needs it, not by every run
    from qtelemetry.drivers.formats.recording import WindowBatch


#: Not checked at load: a file missing while running is a driver error, counted, not a config error.
EventPath = ConfigPath


class _EventFiles(StrictModel):
    """What every layout's files give a replayed link: its windows, and its estimator's parameters."""

    protocol: str
    window_s: float

    def windows(self) -> Iterator[Windows]:
        """The files' whole windows, counted a chunk at a time: each ``next()`` reads one chunk of
        the files and gives the windows it completed (perhaps none). ``EventError`` for a bad file."""
        raise NotImplementedError

    def batches(self) -> Iterator[WindowBatch]:
        """The windows as a replayed link reads them (a ``WindowSource``)."""
        from qtelemetry.drivers.formats.recording import WindowBatch

        for w in self.windows():
            yield WindowBatch(np.stack([w.start, w.end, np.full(len(w.start), self.window_s)], axis=1), w.counts)

    def estimation_params(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in PROTOCOLS[self.protocol].param_names}

    @property
    def paths(self) -> str:
        """The files, for messages."""
        return ", ".join(str(value) for value in self.__dict__.values() if isinstance(value, Path))


#: Parameters that describe the lab's source and detectors: required, where a simulated link has defaults.
DEVICE_PARAMS = ("mu", "nu", "detector_efficiency", "detector_efficiency_a", "detector_efficiency_b")


def _params_of(simulated: type[StrictModel]) -> type[_EventFiles]:
    """A base with the estimator parameters of ``simulated``'s protocol, its fields and rules reused."""
    return params_model(simulated.protocol, DEVICE_PARAMS, _EventFiles)  # type: ignore[attr-defined, return-value]


class BB84EventFiles(_params_of(SimulatedBB84Config)):  # type: ignore[misc]
    """Where a replayed decoy-BB84 link's detection records are, and what the file does not say."""

    protocol: Literal["bb84-decoy"]
    path: EventPath = Field(description=".npy or .parquet file of detection records (bb84 layout)")
    window_s: float = Field(gt=0.0, le=86400.0, description="acquisition window the counts are summed over")
    clock_rate_hz: float = Field(gt=0.0, le=1e11, description="Alice's pulse rate")
    p_signal: float = Field(gt=0.0, le=1.0)
    p_decoy: float = Field(gt=0.0, le=1.0)
    p_vacuum: float = Field(gt=0.0, le=1.0)
    epoch_s: float = Field(0.0, description="Unix time of time tag 0 (0: seconds on the tagger's clock)")

    @check
    def _probabilities(self) -> None:
        total = self.p_signal + self.p_decoy + self.p_vacuum
        if abs(total - 1.0) > 1e-9:
            raise FieldError("p_vacuum", f"p_signal + p_decoy + p_vacuum must be 1, not {total:g}")

    def windows(self) -> Iterator[Windows]:
        return iter_bb84_windows(read_events(self.path, "bb84"), self.window_s, self.clock_rate_hz,
                                 [self.p_signal, self.p_decoy, self.p_vacuum], self.epoch_s)


class BBM92EventFiles(_params_of(SimulatedSPDCConfig)):  # type: ignore[misc]
    """Where a replayed entangled-photon link's two tag streams are, and how to find coincidences."""

    protocol: Literal["bbm92-spdc"]
    path_a: EventPath = Field(description=".npy or .parquet file of side A's tags (tags layout)")
    path_b: EventPath = Field(description=".npy or .parquet file of side B's tags (tags layout)")
    window_s: float = Field(gt=0.0, le=86400.0, description="acquisition window the counts are summed over")
    coincidence_window_s: float = Field(gt=0.0, le=1e-3, description="width of the coincidence window τ")
    delay_s: float | None = Field(None, ge=-1.0, le=1.0, description="B's delay after A; omitted: searched for")
    max_delay_s: float = Field(1e-6, gt=0.0, le=1e-2, description="delay search range ±")
    accidental_offset_s: float | None = Field(None, gt=0.0, le=1e-2,
                                              description="offset of the accidentals window (default 10 τ)")
    gate_rate_hz: float | None = Field(None, gt=0.0, le=1e12, description="pump pulse rate (default 1/τ: CW pump)")
    epoch_s: float = Field(0.0, description="Unix time of time tag 0 (0: seconds on the tagger's clock)")

    @check
    def _windows_nest(self) -> "BBM92EventFiles":
        if self.coincidence_window_s >= self.window_s:
            raise FieldError("coincidence_window_s", "must be shorter than window_s")
        return self

    def windows(self) -> Iterator[Windows]:
        return iter_bbm92_windows(read_events(self.path_a, "tags"), read_events(self.path_b, "tags"), self.window_s,
                                  self.coincidence_window_s, delay_s=self.delay_s, max_delay_s=self.max_delay_s,
                                  accidental_offset_s=self.accidental_offset_s, gate_rate_hz=self.gate_rate_hz,
                                  epoch_s=self.epoch_s)


#: The event files of a replayed link, by the protocol whose counts they give.
EventFiles = Annotated[Union[BB84EventFiles, BBM92EventFiles], Field(discriminator="protocol")]
