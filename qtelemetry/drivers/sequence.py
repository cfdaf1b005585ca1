"""SeQUeNCe driver: a link simulated by the SeQUeNCe quantum network simulator, in a background process.

The simulation (``qtelemetry.drivers.sequence_sim``, SeQUeNCe's own components and protocols)
runs in a child process started with the exporter's Python; each poll takes the window of
simulated time it finished and asks for the next, so it runs one window ahead and idles when
nobody reads. Counts are per simulated window and its length is the batch's ``duration_s``, so
rates are per *simulated* second. A simulation that exits or answers garbage is counted
(``simulation_exited``, ``invalid_record``) and started afresh at the next poll (the poll loop's
back-off spaces the restarts); one that takes longer than ``timeout_seconds`` for a window is
killed and counted as ``simulation_hung``. The link is down meanwhile.

Needs the ``sequence`` extra (SeQUeNCe 0.8, the last release for Python 3.11).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field

from qtelemetry.drivers.base import CountBatch, DriverError, FieldError, IODriverConfig, StrictModel, check
from qtelemetry.estimation.heralded import HERALDED
from qtelemetry.estimation.sifted import BB84_SIFTED
from qtelemetry.standards.documents import loggable

log = logging.getLogger(__name__)

#: SeQUeNCe releases the simulation is written against (1.x needs Python ≥ 3.12 and changed its API).
SUPPORTED_SERIES = "0.8."
INSTALL = "pip install 'qtelemetry[sequence]' (in a source checkout: pip install -e '.[sequence]')"
#: Longest line the simulation may answer with.
MAX_RECORD_BYTES = 1 << 16


class FiberLink(StrictModel):
    """What both simulated links have: fiber, its attenuation, and detectors with dark counts."""

    attenuation_db_per_km: float = Field(0.2, ge=0.0, le=10.0, description="fiber attenuation, dB/km")
    dark_count_rate_hz: float = Field(0.0, ge=0.0, le=1e7, description="dark counts per second of each detector")


class Bb84Cascade(FiberLink):
    """SeQUeNCe's BB84 between two QKD nodes, with its Cascade error correction."""

    kind: Literal["bb84-cascade"]
    fiber_length_km: float = Field(10.0, gt=0.0, le=500.0, description="fiber between the two nodes, km")
    polarization_fidelity: float = Field(0.99, ge=0.0, le=1.0,
                                         description="probability a photon keeps its polarisation in the fiber")
    source_frequency_hz: float = Field(1e6, gt=0.0, le=1e10, description="pulse rate of Alice's source, Hz")
    mean_photon_number: float = Field(0.5, gt=0.0, le=10.0, description="mean photons per pulse (no decoy states)")
    detector_efficiency: float = Field(0.8, gt=0.0, le=1.0, description="efficiency of Bob's two detectors")
    key_length_bits: int = Field(256, ge=1, le=10240,
                                 description="length of the keys Cascade releases from each 10240-bit frame")


class BarrettKok(FiberLink):
    """SeQUeNCe's Barrett–Kok entanglement generation between two single-atom memories."""

    kind: Literal["barrett-kok"]
    fiber_length_km: float = Field(10.0, gt=0.0, le=500.0,
                                   description="fiber between the two memory nodes (station at the midpoint), km")
    memory_efficiency: float = Field(0.9, gt=0.0, le=1.0, description="probability an excited memory emits its photon")
    memory_fidelity: float = Field(0.9, ge=0.0, le=1.0, description="fidelity of a heralded pair (SeQUeNCe's raw_fidelity)")
    memory_frequency_hz: float = Field(8e7, gt=0.0, le=1e12, description="highest excitation rate of a memory, Hz")
    detector_efficiency: float = Field(0.9, gt=0.0, le=1.0, description="efficiency of the midpoint's two detectors")


SequenceLink = Annotated[Union[Bb84Cascade, BarrettKok], Field(discriminator="kind")]
PROTOCOL_OF = {"bb84-cascade": BB84_SIFTED.name, "barrett-kok": HERALDED.name}


class SequenceConfig(IODriverConfig):
    """A link simulated by SeQUeNCe in a process of its own."""

    error_reasons: ClassVar[tuple[str, ...]] = ("simulation_exited", "simulation_hung", "invalid_record")

    type: Literal["sequence"]
    simulation: SequenceLink = Field(description="what SeQUeNCe simulates, by kind: bb84-cascade or barrett-kok")
    window_simulated_seconds: float = Field(0.01, ge=1e-6, le=3600.0,
                                            description="simulated time per window the simulation hands over, s")
    seed: int = Field(0, ge=0, lt=2**31, description="seed of SeQUeNCe's random generators (a run is reproducible)")
    reference_log_file: Path | None = Field(
        None, description="optional JSON-lines file where the simulation appends, per window, SeQUeNCe's own figures")
    poll_interval_seconds: float = Field(1.0, gt=0.0, le=3600.0, description="period of polls (wall time)")
    timeout_seconds: float = Field(120.0, gt=0.0, le=3600.0,
                                   description="wall time a window (the first includes SeQUeNCe's import) may take "
                                               "before the simulation counts as hung")

    @property
    def protocol(self) -> str:  # type: ignore[override]  # per instance: the kind of simulation decides
        return PROTOCOL_OF[self.simulation.kind]

    @check
    def _installed(self) -> "SequenceConfig":
        try:
            version = importlib.metadata.version("sequence")
        except importlib.metadata.PackageNotFoundError:
            raise FieldError("type", f"SeQUeNCe is not installed: {INSTALL}") from None
        if not version.startswith(SUPPORTED_SERIES):
            raise FieldError("type", f"needs SeQUeNCe {SUPPORTED_SERIES}x (Python 3.11), found {version}: {INSTALL}")
        log_file = self.reference_log_file
        if log_file is not None and (log_file.is_dir() or not log_file.parent.is_dir()):
            raise FieldError("reference_log_file", f"{log_file} is a directory or its directory does not exist")
        return self

    def settings(self) -> dict[str, Any]:
        """What the simulation process reads from its first line."""
        return {**self.simulation.model_dump(), "seed": self.seed, "window_simulated_seconds": self.window_simulated_seconds,
                "reference_log": None if self.reference_log_file is None else str(self.reference_log_file)}

    def build(self) -> "SequenceDriver":
        return SequenceDriver(self)


class SequenceDriver:
    """Keeps one simulation process running and takes its windows; use it on the runtime's event loop."""

    def __init__(self, config: SequenceConfig):
        self.config = config
        self._process: asyncio.subprocess.Process | None = None

    async def _start(self) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "qtelemetry.drivers.sequence_sim", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, limit=MAX_RECORD_BYTES)
        log.info("SeQUeNCe simulation started", extra={"pid": process.pid, "kind": self.config.simulation.kind})
        process.stdin.write(json.dumps(self.config.settings()).encode() + b"\n")
        return process

    async def _request(self) -> None:
        """Ask for the next window; if the process has gone, the next read says so."""
        try:
            self._process.stdin.write(b"\n")
            await self._process.stdin.drain()
        except (ConnectionError, RuntimeError):
            pass

    async def acquire(self) -> CountBatch:
        if self._process is None:
            self._process = await self._start()
            await self._request()
        try:
            async with asyncio.timeout(self.config.timeout_seconds):
                line = await self._process.stdout.readline()
        except TimeoutError:
            await self._stop()
            raise DriverError("simulation_hung", f"no window within {self.config.timeout_seconds:g} s; "
                                                 "simulation killed, restarted at the next poll") from None
        except (ValueError, asyncio.LimitOverrunError):
            await self._stop()
            raise DriverError("invalid_record", f"simulation answered a line over {MAX_RECORD_BYTES} bytes") from None
        try:
            record = self._parse(line)
        except DriverError as exc:
            code = await self._stop()
            raise DriverError(exc.reason, f"{exc} (exit code {code}); restarted at the next poll") from None
        await self._request()
        return CountBatch(start=time.time() - record["simulated_s"], duration_s=record["simulated_s"],
                          counts=record["counts"])

    @staticmethod
    def _parse(line: bytes) -> dict[str, Any]:
        """The window in ``line``; DriverError for a closed pipe, an error report or a malformed record."""
        if not line:
            raise DriverError("simulation_exited", "simulation process ended")
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and "error" in record:
            raise DriverError("simulation_exited", f"simulation failed: {loggable(str(record['error']), 300)}")
        duration = record.get("simulated_s") if isinstance(record, dict) else None
        if not (isinstance(duration, (int, float)) and math.isfinite(duration) and duration > 0
                and isinstance(record.get("counts"), dict)):
            raise DriverError("invalid_record", "simulation answered something that is not a window record")
        return record

    async def _stop(self) -> int | None:
        """End the simulation process; its exit code (None: there was none)."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.returncode is None:
            process.kill()
        return await process.wait()

    async def aclose(self) -> None:
        await self._stop()
