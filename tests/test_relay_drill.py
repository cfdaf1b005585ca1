"""A failure drill: trusted node m1 lost for 2 h in a simulated week (examples/drill-network.yaml),
through `qtelemetry history --fail`, a promtool backfill, a real Prometheus and `qtelemetry report`.

The scripted truth is worked out here from the script alone: the fault acts on the 25 windows
that start in its 2 h (a fault holds through its last instant); the relay leaves m1's route at the
end of the first of them and comes back at the end of the first window after; meanwhile the detour
over m2 serves the demand from stores that start full and gain the detour's key rate (the
simulator's model) each window, so the demand is short in the windows where they cannot give
40 kbit/s × 300 s. The report must give the time short and the reroutes to one step.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from qtelemetry.cli import main
from qtelemetry.config import load_config
from qtelemetry.runtime.engine import Engine
from realstack import PROMTOOL_BIN, backfilled_prometheus, require_binaries

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "drill-network.yaml"
T0 = datetime(2026, 11, 2, tzinfo=timezone.utc).timestamp()
LOST_AT, LOST_FOR = 3 * 86400, 7200  # m1@3d/2h


def qtelemetry(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qtelemetry", *args], capture_output=True, text=True, timeout=300)


def truth() -> dict:
    """Windows short and bits unmet while the detour serves the demand, from the script alone."""
    script = yaml.safe_load(CONFIG.read_text())
    step = script["exporter"]["window_seconds"]
    need = script["network"]["demands"][0]["bits_per_second"] * step
    detour = next(link for link in script["links"] if link["name"] == "a-m2")["driver"]
    capacity = float(detour["key_buffer_capacity_bits"])  # YAML 1.1 reads 2.0e7 as a string
    fleet, row = Engine(load_config(CONFIG), 0.0).fleet_of("a-m2")  # the simulator's model of its key rate
    made = fleet.secret_key_rate_bps(fleet.params)[row] * step
    stored, short, unmet = capacity, 0, 0.0
    for _ in range(LOST_FOR // step + 1):  # both detour hops alike: same length, same model
        filled = min(capacity, stored + made)
        given = min(need, filled)
        stored = filled - given
        short += given < need
        unmet += need - given
    return {"step": step, "short_s": short * step, "unmet_bits": unmet, "outage_s": (LOST_FOR // step + 1) * step}


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> dict:
    require_binaries("prometheus", PROMTOOL_BIN)
    work = tmp_path_factory.mktemp("drill")
    history, out = work / "drill.om", work / "out"
    written = qtelemetry("history", "--config", str(CONFIG), "--fail", f"m1@{LOST_AT // 86400}d/{LOST_FOR // 3600}h",
                         "--start", "2026-11-02T00:00:00Z", "--days", "7", "--out", str(history))
    assert written.returncode == 0, written.stderr
    prometheus = backfilled_prometheus(history, work)
    try:
        report = qtelemetry("report", "--prometheus", prometheus.url, "--start", "2026-11-02T00:00:00Z",
                            "--end", "2026-11-09T00:00:00Z", "--out", str(out))
        assert report.returncode == 0, report.stderr
    finally:
        prometheus.stop()
    with (out / "demands.csv").open(newline="") as f:
        return {"demand": next(csv.DictReader(f)), "html": (out / "report.html").read_text()}


def test_the_drill_reproduces_the_scripted_truth(drill):
    want, got = truth(), drill["demand"]
    assert want["short_s"] > 3 * want["step"]  # the shape the drill is built for: the detour runs dry
    assert got["demand"] == "bank-a-b" and (got["src"], got["dst"]) == ("bank-a", "bank-b")
    assert abs(float(got["unmet_s"]) - want["short_s"]) <= want["step"]
    assert int(got["reroutes"]) == 2  # off m1 when it is lost, back when it returns
    assert abs(float(got["time_to_reroute_s"]) - want["step"]) <= want["step"]  # the failover acts at the next cycle
    assert float(got["unmet_bits"]) == pytest.approx(want["unmet_bits"], rel=0.01)
    assert float(got["requested_bits"]) == pytest.approx(40000 * 7 * 86400 - 40000 * 300, rel=1e-9)  # from the first window's end
    assert "QNetDemandUnmet" in got["alerts"]
    hours = f"{want['outage_s'] / 3600:.1f} h"
    assert f"Losing site m1 for {hours} left demand bank-a-b short for" in drill["html"], drill["html"][:3000]
    assert 'id="demands"' in drill["html"]


@pytest.mark.parametrize("fail,message", [
    ("m1", "expected SITE_OR_LINK@OFFSET/DURATION"),
    ("m9@1d/2h", "no link or site is named 'm9'"),
    ("m1@1x/2h", "not a duration: '1x'"),
    ("a-m1@1d/0s", "the duration must be positive"),
])
def test_a_bad_failure_is_a_usage_error(fail, message, tmp_path, capsys):
    code = main(["history", "--config", str(CONFIG), "--fail", fail, "--start", "0", "--days", "1",
                 "--out", str(tmp_path / "x.om")])
    err = capsys.readouterr().err
    assert code == 2 and f"--fail {fail!r}" in err and message in err and "Traceback" not in err, err
    assert not (tmp_path / "x.om").exists()


COMPETING = """
exporter: {window_seconds: 300, sliding_windows: 1, stall_timeout_seconds: 600}
links:
  - {name: a-m, site_a: bank-a, site_b: m, driver: {type: simulated-bb84, fiber_length_km: 20, key_buffer_capacity_bits: 6.0e+7, seed: 1}}
  - {name: m-b, site_a: m, site_b: bank-b, driver: {type: simulated-bb84, fiber_length_km: 20, key_buffer_capacity_bits: 6.0e+7, seed: 2}}
  - {name: m-c, site_a: m, site_b: bank-c, driver: {type: simulated-bb84, fiber_length_km: 20, key_buffer_capacity_bits: 6.0e+7, seed: 3}}
network:
  sites: [{name: bank-a, trusted: false}, {name: bank-b, trusted: false}, {name: bank-c, trusted: false}, {name: m}]
  demands:
    - {name: a-b, from: bank-a, to: bank-b, bits_per_second: 120000}
    - {name: a-c, from: bank-a, to: bank-c, bits_per_second: 120000}
"""


def test_demands_competing_for_a_hop_are_reported_short_by_the_relay(tmp_path):
    """Two demands of 120 kbit/s share the 20 km hop a-m (~171 kbit/s): each alone is met, so the
    capacity alerts stay silent, but the relay cannot serve both once a-m's store has run dry:
    QNetDemandRelayShort fires for both (it was silence before it), QNetDemandUnmet for neither."""
    require_binaries("prometheus", PROMTOOL_BIN)
    config, history, out = tmp_path / "competing.yaml", tmp_path / "competing.om", tmp_path / "out"
    config.write_text(COMPETING)
    written = qtelemetry("history", "--config", str(config), "--start", "2026-11-02T00:00:00Z", "--days", "0.25",
                         "--out", str(history))
    assert written.returncode == 0, written.stderr
    prometheus = backfilled_prometheus(history, tmp_path)
    try:
        report = qtelemetry("report", "--prometheus", prometheus.url, "--start", "2026-11-02T00:00:00Z",
                            "--end", "2026-11-02T06:00:00Z", "--out", str(out))
        assert report.returncode == 0, report.stderr
    finally:
        prometheus.stop()
    with (out / "demands.csv").open(newline="") as f:
        rows = {row["demand"]: row for row in csv.DictReader(f)}
    assert rows.keys() == {"a-b", "a-c"}
    for row in rows.values():
        assert float(row["unmet_bits"]) > 0, row  # the relay fell short ...
        assert "QNetDemandRelayShort" in row["alerts"] and "QNetDemandUnmet" not in row["alerts"], row  # ... and said so
