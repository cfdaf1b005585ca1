"""The SeQUeNCe side of the ``sequence`` driver: one link simulated in a process of its own.

Run as ``python -m qtelemetry.drivers.sequence_sim``. The first line on stdin is the link's
settings (JSON, see ``SequenceConfig.settings``); every further line asks for one window of
simulated time, answered by one JSON line on stdout: what the simulation measured in that
window (``counts``, in the layout of the link's protocol) and its length in simulated seconds.
So the simulation runs at most one window ahead of the exporter and idles when nobody reads.
A failure is answered with ``{"error": ...}`` and the process exits.

Two links, built from SeQUeNCe 0.8's own components and protocols:

- ``bb84-cascade``: two ``QKDNode``s with quantum and classical channels both ways (SeQUeNCe's
  BB84 needs a quantum channel back to the sender), BB84 sifting with Cascade error correction
  above it. Its BB84 draws bases 50/50 and has no decoy states. Per window: pulses and Bob's
  valid clicks per light period, sifted bits and errors per basis of every key BB84 hands
  Cascade (Alice's and Bob's bits compared, as SeQUeNCe's own ``error_rates`` do), and the bits
  of corrected keys Cascade releases.
- ``barrett-kok``: two end nodes with one single-atom memory each and SeQUeNCe's ``BSMNode`` at
  the midpoint, running ``EntanglementGenerationA`` (Barrett & Kok, PRA 71, 060310 (2005)) one
  attempt after another. Every heralded pair is measured in a random Pauli basis (X, Y, Z) by
  SeQUeNCe's quantum manager and scored against Φ+, the state the protocol leaves.

With ``reference_log`` set, the process also appends per window what SeQUeNCe's own objects
report (BB84 ``error_rates``, Cascade ``throughput``, memories' ``fidelity``, ...) to that file as
JSON lines: figures to cross-check the exported ones against.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from typing import IO, Any, Callable

import numpy as np

#: Picoseconds per second: SeQUeNCe's clock ticks in ps.
PS = 10**12
#: SeQUeNCe's fiber parameters are per metre.
M_PER_KM = 1e3
#: Pauli bases of the fidelity measurements and the product of the two outcomes (±1) Φ+ gives.
PHI_PLUS_CORRELATION = {"X": 1, "Y": -1, "Z": 1}


def bb84_link(settings: dict[str, Any]) -> Callable[[int], tuple[dict[str, Any], dict[str, Any]]]:
    """A BB84 + Cascade link; returns ``run(stop_ps) -> (counts, sequence's own figures)``."""
    from sequence.components.optical_channel import ClassicalChannel, QuantumChannel
    from sequence.kernel.timeline import Timeline
    from sequence.qkd.BB84 import BB84, BB84MsgType, pair_bb84_protocols
    from sequence.qkd.cascade import pair_cascade_protocols
    from sequence.topology.node import QKDNode

    class BB84Counter:
        """Counts what SeQUeNCe's BB84 measures: pulses and valid clicks per light period (Bob),
        sifted bits and errors per basis of each key it hands up (Alice).

        It wraps methods of the two protocol instances rather than subclassing BB84, because
        ``QKDNode`` routes messages to protocols whose type is exactly ``BB84``.
        """

        def __init__(self, alice: BB84, bob: BB84):
            self.alice, self.bob = alice, bob
            self.pulses = self.detections = 0
            self.sifted, self.errors = np.zeros(2, np.int64), np.zeros(2, np.int64)
            self.key_lengths: list[int] = []  # length of each key Alice's BB84 handed up
            self._sent_bases: deque[np.ndarray] = deque()
            self._key_bases: list[int] = []
            for node, method in ((alice, "start_protocol"), (alice, "received_message"), (alice, "set_key"),
                                 (bob, "end_photon_pulse")):
                setattr(node, method, self._wrap(getattr(node, method), getattr(self, f"_{method}")))

        @staticmethod
        def _wrap(original: Callable[..., None], hook: Callable[..., None]) -> Callable[..., None]:
            def wrapped(*args: Any) -> None:
                hook(original, *args)
            return wrapped

        def _start_protocol(self, original: Callable[[], None]) -> None:
            if self.alice.key_lengths:  # a new request: BB84 drops the bits of the last one
                self._sent_bases.clear()
                self._key_bases.clear()
            original()

        def _received_message(self, original: Callable[[str, Any], None], src: str, msg: Any) -> None:
            a = self.alice
            if a.working and a.owner.timeline.now() < a.end_run_times[0]:  # BB84's own test that a message counts
                if msg.msg_type is BB84MsgType.RECEIVED_QUBITS:
                    self._sent_bases.append(np.asarray(a.basis_lists[0]))
                elif msg.msg_type is BB84MsgType.MATCHING_INDICES:
                    self._key_bases.extend(self._sent_bases.popleft()[np.asarray(msg.indices, np.intp)].tolist())
            original(src, msg)

        def _set_key(self, original: Callable[[], None]) -> None:
            length = self.alice.key_lengths[0]
            self.key_lengths.append(length)
            bases = np.asarray(self._key_bases[:length])
            wrong = np.asarray(self.alice.key_bits[:length]) != np.asarray(self.bob.key_bits[:length])
            del self._key_bases[:length]
            self.sifted += np.bincount(bases, minlength=2)
            self.errors += np.bincount(bases, weights=wrong, minlength=2).astype(np.int64)
            original()

        def _end_photon_pulse(self, original: Callable[[], None]) -> None:
            before = len(self.bob.bit_lists)
            original()
            for bits in self.bob.bit_lists[before:]:
                self.pulses += len(bits)
                self.detections += sum(b != -1 for b in bits)

    tl = Timeline()
    Timeline.seed(settings["seed"])  # SeQUeNCe's BB84 draws bases and bits from numpy's global generator
    source = {"frequency": settings["source_frequency_hz"], "mean_photon_num": settings["mean_photon_number"]}
    alice = QKDNode("alice", tl, component_templates={"LightSource": source})
    bob = QKDNode("bob", tl)
    for i, node in enumerate((alice, bob)):
        node.set_seed(settings["seed"] + 1 + i)
    for i in range(2):
        detector = bob.components["bob.qsdetector"].detectors[i]
        detector.efficiency = settings["detector_efficiency"]
        detector.dark_count = settings["dark_count_rate_hz"]
    bb84_a, bb84_b = alice.protocol_stack[0], bob.protocol_stack[0]
    cascade_a, cascade_b = alice.protocol_stack[1], bob.protocol_stack[1]
    pair_bb84_protocols(bb84_a, bb84_b)
    pair_cascade_protocols(cascade_a, cascade_b)
    counter = BB84Counter(bb84_a, bb84_b)
    distance_m = settings["fiber_length_km"] * M_PER_KM
    for src, dst in ((alice, bob), (bob, alice)):
        ClassicalChannel(f"cc.{src.name}.{dst.name}", tl, distance=distance_m).set_ends(src, dst.name)
        channel = QuantumChannel(f"qc.{src.name}.{dst.name}", tl, distance=distance_m,
                                 attenuation=settings["attenuation_db_per_km"] / M_PER_KM,
                                 polarization_fidelity=settings["polarization_fidelity"])
        channel.set_ends(src, dst.name)
        channel.owner = src  # its polarisation noise then draws from the sender's seeded generator, not a fresh one

    class KeySink:
        """Where Cascade hands its corrected keys (SeQUeNCe's examples call it a key manager)."""

        def pop(self, key: int) -> None:  # the key itself is dropped at once
            pass

    for cascade in (cascade_a, cascade_b):
        cascade.upper_protocols.append(KeySink())
    tl.init()
    key_bits = settings["key_length_bits"]
    cascade_a.push(key_bits, frame_num=sys.maxsize)
    last = {"pulses": 0, "detections": 0, "sifted": np.zeros(2, np.int64), "errors": np.zeros(2, np.int64),
            "corrected": 0, "keys": 0}

    def run(stop_ps: int) -> tuple[dict[str, Any], dict[str, Any]]:
        tl.stop_time = stop_ps
        tl.run()
        corrected = len(cascade_a.valid_keys) * key_bits
        new_keys = list(zip(counter.key_lengths[last["keys"]:], bb84_a.error_rates[last["keys"]:]))
        counts = {
            "pulses": [counter.pulses - last["pulses"]],
            "detections": [counter.detections - last["detections"]],
            "sifted": (counter.sifted - last["sifted"])[:, None].tolist(),
            "errors": (counter.errors - last["errors"])[:, None].tolist(),
            "corrected_key_bits": corrected - last["corrected"],
        }
        own = {
            "bb84_keys": new_keys,  # (length, error rate) of each key BB84 made, its error_rates
            "bb84_throughputs": bb84_a.throughputs[last["keys"]:],
            "cascade_valid_keys": len(cascade_a.valid_keys),
            "cascade_key_length": key_bits,
            "cascade_throughput_bps": cascade_a.throughput,
            "cascade_error_bit_rate": cascade_a.error_bit_rate,
            "cascade_disclosed_bits": cascade_a.disclosed_bits_counter,
        }
        last.update(pulses=counter.pulses, detections=counter.detections, sifted=counter.sifted.copy(),
                    errors=counter.errors.copy(), corrected=corrected, keys=len(counter.key_lengths))
        return counts, own

    return run


def barrett_kok_link(settings: dict[str, Any]) -> Callable[[int], tuple[dict[str, Any], dict[str, Any]]]:
    """A Barrett–Kok link; returns ``run(stop_ps) -> (counts, sequence's own figures)``."""
    from sequence.components.circuit import Circuit
    from sequence.components.memory import Memory
    from sequence.components.optical_channel import ClassicalChannel, QuantumChannel
    from sequence.entanglement_management.generation import EntanglementGenerationA
    from sequence.kernel.event import Event
    from sequence.kernel.process import Process
    from sequence.kernel.timeline import Timeline
    from sequence.topology.node import BSMNode, Node

    tl = Timeline()
    Timeline.seed(settings["seed"])
    rng = np.random.default_rng(settings["seed"])
    circuits = {}
    for basis in PHI_PLUS_CORRELATION:
        circuit = Circuit(2)
        for q in (0, 1):
            if basis == "Y":
                circuit.sdg(q)
            if basis != "Z":
                circuit.h(q)
            circuit.measure(q)
        circuits[basis] = circuit
    tally = {"attempts": 0, "successes": 0, "tomography": np.zeros((3, 2), np.int64),
             "memory_fidelity": 0.0, "state_fidelity": 0.0, "mismatched": 0}

    class Results:
        """The end nodes' resource manager: collects each attempt's outcome at both ends, measures a
        heralded pair, and starts the next attempt once both ends are done."""

        def __init__(self) -> None:
            self.outcomes: dict[str, str] = {}

        def update(self, protocol: Any, memory: Any, state: str) -> None:
            self.outcomes[protocol.owner.name] = state
            if len(self.outcomes) == 2:
                finish_attempt(set(self.outcomes.values()))
                self.outcomes.clear()

    class EndNode(Node):
        """A quantum router reduced to what Barrett–Kok generation needs: one memory, a resource manager."""

        def __init__(self, name: str, results: Results, seed: int):
            super().__init__(name, tl, seed)
            self.resource_manager = results
            self.memory = Memory(f"{name}.memory", tl, fidelity=settings["memory_fidelity"],
                                 frequency=settings["memory_frequency_hz"], efficiency=settings["memory_efficiency"],
                                 coherence_time=-1, wavelength=500)
            self.add_component(self.memory)
            self.memory.add_receiver(self)

        def get(self, photon: Any, **kwargs: Any) -> None:
            self.send_qubit(kwargs["dst"], photon)

    results = Results()
    ends = (EndNode("a", results, settings["seed"] + 1), EndNode("b", results, settings["seed"] + 2))
    detector = {"efficiency": settings["detector_efficiency"], "dark_count": settings["dark_count_rate_hz"],
                "count_rate": 1e11, "time_resolution": 1}
    middle = BSMNode("m", tl, [e.name for e in ends], seed=settings["seed"] + 3,
                     component_templates={"SingleAtomBSM": {"detectors": [detector, dict(detector)]}})
    arm_m = settings["fiber_length_km"] * M_PER_KM / 2.0
    for end in ends:
        QuantumChannel(f"qc.{end.name}.m", tl, attenuation=settings["attenuation_db_per_km"] / M_PER_KM,
                       distance=arm_m, frequency=settings["memory_frequency_hz"]).set_ends(end, middle.name)
    nodes = (*ends, middle)
    for src in nodes:
        for dst in nodes:
            if src is not dst:
                distance = arm_m if middle in (src, dst) else 2.0 * arm_m
                ClassicalChannel(f"cc.{src.name}.{dst.name}", tl, distance=distance).set_ends(src, dst.name)
    tl.init()
    attempt = {"n": 0, "protocols": []}

    def start_attempt() -> None:
        for node in ends:
            for p in attempt["protocols"]:
                if p in node.protocols:
                    node.protocols.remove(p)
        protocols = [EntanglementGenerationA.create(end, f"eg.{end.name}.{attempt['n']}", middle=middle.name,
                                                    other=other.name, memory=end.memory)
                     for end, other in (ends, ends[::-1])]
        for (end, p), other in zip(zip(ends, protocols), protocols[::-1]):
            end.protocols.append(p)
            p.set_others(other.name, other.owner.name, [other.memory.name])
            tl.schedule(Event(tl.now(), Process(p, "start", [])))
        attempt["protocols"] = protocols
        attempt["n"] += 1

    def finish_attempt(states: set[str]) -> None:
        tally["attempts"] += 1
        if states == {"ENTANGLED"}:
            tally["successes"] += 1
            measure_pair()
        elif "ENTANGLED" in states:  # the two ends disagree: not a usable pair
            tally["mismatched"] += 1
        for end in ends:
            end.memory.reset()
        tl.schedule(Event(tl.now() + 1, Process(StartNext(), "run", [])))

    class StartNext:
        """Starts the next attempt from the event queue (not from inside the last one's callbacks)."""

        def run(self) -> None:
            start_attempt()

    def measure_pair() -> None:
        a, b = ends
        tally["memory_fidelity"] += a.memory.fidelity
        keys = [a.memory.qstate_key, b.memory.qstate_key]
        state = np.asarray(tl.quantum_manager.get(keys[0]).state, complex)
        phi_plus = np.array([1, 0, 0, 1]) / np.sqrt(2)
        tally["state_fidelity"] += float(abs(np.vdot(phi_plus, state)) ** 2)
        basis = "XYZ"[rng.integers(3)]
        outcome = tl.quantum_manager.run_circuit(circuits[basis], keys, rng.random())
        product = (1 - 2 * outcome[keys[0]]) * (1 - 2 * outcome[keys[1]])
        tally["tomography"]["XYZ".index(basis), int(product != PHI_PLUS_CORRELATION[basis])] += 1

    start_attempt()
    last = {"attempts": 0, "successes": 0, "tomography": np.zeros((3, 2), np.int64)}

    def run(stop_ps: int) -> tuple[dict[str, Any], dict[str, Any]]:
        tl.stop_time = stop_ps
        tl.run()
        counts = {
            "attempts": tally["attempts"] - last["attempts"],
            "successes": tally["successes"] - last["successes"],
            "tomography": (tally["tomography"] - last["tomography"]).tolist(),
        }
        own = {
            "attempts": tally["attempts"],  # attempts both ends have finished
            "successes": tally["successes"],  # both memories ENTANGLED, per SeQUeNCe's resource manager updates
            "mismatched_outcomes": tally["mismatched"],
            "memory_fidelity_sum": tally["memory_fidelity"],  # Memory.fidelity of heralded pairs (SeQUeNCe's figure)
            "state_fidelity_sum": tally["state_fidelity"],  # <Φ+|ψ> of the quantum manager's state, squared
        }
        last.update(attempts=tally["attempts"], successes=tally["successes"], tomography=tally["tomography"].copy())
        return counts, own

    return run


LINKS = {"bb84-cascade": bb84_link, "barrett-kok": barrett_kok_link}


def serve(settings: dict[str, Any], requests: IO[str], out: IO[str]) -> None:
    """Answer each request line with one window; return when the requests end."""
    log = open(settings["reference_log"], "a", encoding="utf-8") if settings.get("reference_log") else None
    run = LINKS[settings["kind"]](settings)
    window_ps = round(settings["window_simulated_seconds"] * PS)
    try:
        for index, _ in enumerate(requests, start=1):
            counts, own = run(index * window_ps)
            out.write(json.dumps({"simulated_s": window_ps / PS, "counts": counts}) + "\n")
            out.flush()
            if log is not None:
                log.write(json.dumps({"window": index, "simulated_s": index * window_ps / PS, "sequence": own}) + "\n")
                log.flush()
    finally:
        if log is not None:
            log.close()


def main() -> int:
    try:
        serve(json.loads(sys.stdin.readline()), sys.stdin, sys.stdout)
    except Exception as exc:  # reported to the driver, which counts and logs it
        sys.stdout.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        sys.stdout.flush()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
