"""`qtelemetry plan`: output shapes, published reach at the GYS defaults, plot, and bad input → exit 2."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re

import numpy as np
import pytest

from qtelemetry import planner
from qtelemetry.cli import main
from qtelemetry.config import default_config, default_config_text
from qtelemetry.drivers.simulated import parameter_table
from qtelemetry.drivers.simulated_bb84 import SimulatedBB84Config, expected_counts
from qtelemetry.estimation import decoy
from qtelemetry.estimation.bb84 import BB84_DECOY
from conftest import value

POINT_KEYS = ["distance_km", "key_rate_per_pulse", "key_rate_bps", "mu", "plob_per_pulse"]


def plan(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["plan", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_shape_and_mqzl_vacuum_weak_reach(capsys):
    """Exact single-bound JSON shape; GYS defaults with ν = 0.05 reach MQZL's 140.55 km (§V.A)."""
    code, out, _ = plan(capsys, "--decoy", "vacuum-weak", "--nu", "0.05", "--format", "json")
    assert code == 0
    result = json.loads(out)
    assert list(result) == ["points", "max_distance_km"]
    assert [list(p) for p in result["points"]] == [POINT_KEYS] * 21
    assert [p["distance_km"] for p in result["points"]] == [10.0 * i for i in range(21)]
    assert result["max_distance_km"] == pytest.approx(140.55, abs=0.2)
    by_km = {p["distance_km"]: p for p in result["points"]}
    assert by_km[130.0]["key_rate_per_pulse"] > 0 and by_km[150.0]["key_rate_per_pulse"] == 0
    assert by_km[50.0]["key_rate_bps"] == pytest.approx(by_km[50.0]["key_rate_per_pulse"] * 2e6)
    assert {p["mu"] for p in result["points"]} == {0.48}
    assert by_km[0.0]["plob_per_pulse"] is None  # lossless channel: unbounded
    assert by_km[100.0]["plob_per_pulse"] == pytest.approx(-math.log2(1 - 10 ** (-0.21 * 100 / 10)))


def test_infinite_decoy_reach_is_mqzl_142_km(capsys):
    """MQZL, GYS simulation: infinitely many decoys reach 142.05 km."""
    code, out, _ = plan(capsys, "--decoy", "infinite", "--optimize-mu", "--format", "json", "--distances", "0:140:70")
    assert code == 0
    assert json.loads(out)["max_distance_km"] == pytest.approx(142.05, abs=0.25)


def test_several_bounds_nest_the_single_shape_under_bounds(capsys):
    """Documented extension: {"bounds": {name: single-bound object}} in the order asked."""
    code, out, _ = plan(capsys, "--decoy", "infinite", "--decoy", "vacuum-weak,finite", "--format", "json",
                        "--distances", "0:100:50")
    assert code == 0
    bounds = json.loads(out)["bounds"]
    assert list(bounds) == ["infinite", "vacuum-weak", "finite"]
    for result in bounds.values():
        assert list(result) == ["points", "max_distance_km"]
        assert [list(p) for p in result["points"]] == [POINT_KEYS] * 3
        assert result["points"][0]["key_rate_per_pulse"] > 0
    # vacuum + weak can only lose against infinitely many decoys (MQZL §V.A)
    assert bounds["vacuum-weak"]["max_distance_km"] < bounds["infinite"]["max_distance_km"]


def test_csv_and_table(capsys):
    """CSV: one row per distance with the reach repeated; table: aligned rows and the reach."""
    code, out, _ = plan(capsys, "--decoy", "vacuum-weak", "--nu", "0.05", "--format", "csv", "--distances", "0:200:50")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 5
    assert list(rows[0]) == ["decoy", *POINT_KEYS, "max_distance_km"]
    assert {r["decoy"] for r in rows} == {"vacuum-weak"} and rows[0]["plob_per_pulse"] == "inf"
    assert float(rows[-1]["key_rate_per_pulse"]) == 0.0
    assert float(rows[0]["max_distance_km"]) == pytest.approx(140.55, abs=0.2)

    code, out, _ = plan(capsys, "--decoy", "vacuum-weak", "--nu", "0.05", "--distances", "0:200:50")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2 + 5 and lines[1].split() == POINT_KEYS
    assert float(re.search(r"max distance with key: ([\d.]+) km", lines[0]).group(1)) == pytest.approx(140.55, abs=0.2)
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns


def test_plot_writes_a_png(capsys, tmp_path):
    path = tmp_path / "plan.png"
    code, _, _ = plan(capsys, "--decoy", "infinite,vacuum-weak", "--plot", str(path), "--distances", "0:150:10")
    assert code == 0
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_link_from_config_equals_the_same_flags(capsys, tmp_path):
    """--config/--link take a simulated-bb84 link's parameters (driver defaults included)."""
    config = tmp_path / "config.yaml"
    config.write_text(default_config_text())
    _, from_config, _ = plan(capsys, "--config", str(config), "--link", "metro-10km", "--format", "json")
    _, from_flags, _ = plan(
        capsys, "--attenuation-db-per-km", "0.2", "--insertion-loss-db", "1", "--detector-efficiency", "0.1",
        "--dark-count-probability", "1e-6", "--misalignment-error", "0.01", "--clock-rate-hz", "1e8",
        "--mu", "0.5", "--nu", "0.1", "--ec-efficiency", "1.16", "--format", "json",
    )
    assert json.loads(from_config) == json.loads(from_flags)

    code, _, err = plan(capsys, "--config", str(config), "--link", "entangled-20km")
    assert code == 2 and err.startswith("error: --link: ")


def test_finite_bound_takes_the_links_block_size_and_shares_the_exporters_default(capsys, tmp_path):
    """--config/--link also take the link's finite-key settings; without them planner and exporter
    use one default block size (and ε), shown in --help."""
    config = tmp_path / "config.yaml"
    config.write_text(default_config_text().replace("      seed: 1\n", "      seed: 1\n      block_size: 1.0e5\n", 1))
    parser = argparse.ArgumentParser()
    planner.register(parser.add_subparsers())
    link = planner._link_model(parser.parse_args(["plan", "--config", str(config), "--link", "metro-10km"]))
    assert (link.block_size, link.epsilon_sec, link.epsilon_cor) == (1e5, 1e-10, 1e-15)
    assert planner._link_model(parser.parse_args(["plan", "--block-size", "3e6"])).block_size == 3e6

    driver = SimulatedBB84Config.model_fields
    default = planner._link_model(parser.parse_args(["plan"]))
    assert default.block_size == driver["block_size"].default == 1e8
    assert (default.epsilon_sec, default.epsilon_cor) == (driver["epsilon_sec"].default, driver["epsilon_cor"].default)
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    assert re.search(r"sifted key bits per block\s+\(default\s+1e\+08,", capsys.readouterr().out)


@pytest.mark.parametrize("args, flag", [
    (["--attenuation-db-per-km", "-0.1"], "--attenuation-db-per-km"),
    (["--insertion-loss-db", "-1"], "--insertion-loss-db"),
    (["--detector-efficiency", "0"], "--detector-efficiency"),
    (["--detector-efficiency", "1.5"], "--detector-efficiency"),
    (["--dark-count-probability", "1"], "--dark-count-probability"),
    (["--misalignment-error", "0.7"], "--misalignment-error"),
    (["--ec-efficiency", "0.9"], "--ec-efficiency"),
    (["--mu", "0.1", "--nu", "0.1"], "--mu"),
    (["--mu", "nan"], "--mu"),
    (["--nu", "0"], "--nu"),
    (["--clock-rate-hz", "0"], "--clock-rate-hz"),
    (["--epsilon-sec", "0"], "--epsilon-sec"),
    (["--epsilon-cor", "1"], "--epsilon-cor"),
    (["--decoy", "finite", "--block-size", "1000"], "--block-size"),
    (["--distances", "50:10:10"], "--distances"),
    (["--distances", "0:100:0"], "--distances"),
    (["--distances", "0:200"], "--distances"),
    (["--distances", "a:b:c"], "--distances"),
    (["--distances", "0:1e7:1"], "--distances"),  # 10⁷ rows: gigabytes before the first one printed
    (["--distances", "0:1e12:1e-3"], "--distances"),
    (["--plot", "/nonexistent-dir/plan.png"], "--plot"),
    (["--plot", "plan.xyz"], "--plot"),
    (["--link", "metro-10km"], "--config"),
    (["--config", "/nonexistent.yaml", "--link", "x"], "--config"),
])
def test_bad_input_exits_2_naming_the_flag(capsys, args, flag):
    code, out, err = plan(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {flag}: ")


def test_the_reach_of_an_almost_lossless_fibre_is_found(capsys):
    """A reach beyond 10¹³ km, where floats are coarser than the 1 mm resolution, ends (it looped
    for ever): the reach scales as 1 / attenuation (the loss budget is the same), checked against
    the GYS reach. A child process, so that a hang fails the test instead of hanging the suite."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "qtelemetry", "plan", "--attenuation-db-per-km", "1e-12", "--distances",
                           "0:0:1", "--format", "json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    gys = plan(capsys, "--distances", "0:0:1", "--format", "json")[1]
    reach = json.loads(done.stdout)["max_distance_km"]
    assert reach * 1e-12 == pytest.approx(json.loads(gys)["max_distance_km"] * 0.21, rel=1e-4)


@pytest.mark.parametrize("args, flag", [
    (["--decoy", "bogus"], "--decoy"),
    (["--mu", "abc"], "--mu"),
    (["--format", "xml"], "--format"),
])
def test_argparse_rejects_malformed_values_with_exit_2(capsys, args, flag):
    with pytest.raises(SystemExit) as exit_info:
        plan(capsys, *args)
    assert exit_info.value.code == 2 and flag in capsys.readouterr().err


def test_plan_reads_only_the_link_it_plans(capsys, tmp_path):
    """The exporter's admin token file, TLS keys and other links' devices need not be readable by the
    one planning: plan validates its link alone (and still names that link's errors by field)."""
    config = tmp_path / "config.yaml"
    kme_link = ("  - {name: kme-link, driver: {type: etsi014, kme_url: 'https://kme', slave_sae_id: b, "
                "tls: {ca_file: /nonexistent/ca.pem}}}\n")
    config.write_text(default_config_text().replace("exporter:\n", "exporter:\n  admin_token_file: /nonexistent/admin.token\n")
                      .replace("\nnetwork:", f"\n{kme_link}network:"))
    assert main(["check-config", str(config)]) == 2
    capsys.readouterr()
    code, from_config, _ = plan(capsys, "--config", str(config), "--link", "metro-10km", "--format", "json")
    assert code == 0 and json.loads(from_config)["points"]
    config.write_text(config.read_text().replace("fiber_length_km: 10\n", "fiber_length_km: 10\n      mu: -1\n", 1))
    code, _, err = plan(capsys, "--config", str(config), "--link", "metro-10km")
    assert code == 2 and err.startswith(f"error: --config: {config}: links[0].driver.mu: Input should be greater than 0")


# -- one rate model for plan and exporter -----------------------------------------------------------

DEMO_BB84 = [link for link in default_config().links if link.driver.type == "simulated-bb84"]


def planned(capsys, config, link, *bounds: str) -> dict[str, float]:
    """bit/s that `plan --config CONFIG --link NAME` gives for the link at its own length, by bound."""
    length = f"{link.driver.fiber_length_km:g}"
    code, out, _ = plan(capsys, "--config", str(config), "--link", link.name, "--format", "json",
                        "--distances", f"{length}:{length}:1", *(("--decoy", ",".join(bounds)) if bounds else ()))
    assert code == 0
    result = json.loads(out)
    by_bound = result["bounds"] if "bounds" in result else {bounds[0] if bounds else "default": result}
    return {name: r["points"][0]["key_rate_bps"] for name, r in by_bound.items()}


def test_the_asymptotic_plan_counts_key_on_signal_pulses_only(capsys, tmp_path):
    """MQZL's GLLP rate (eq. 1) is the key of a signal pulse: its gain Q_μ and single-photon part Q1
    are the signal state's, and decoy pulses only estimate. The plan gave it for every pulse, 1/0.8
    = 25 % above the exporter's asymptotic rate, which counts signal pulses: now the plan equals the
    estimator's rate on counts that follow the model, and that is p_signal × MQZL's rate."""
    config = tmp_path / "demo.yaml"
    config.write_text(default_config_text())
    p = parameter_table([link.driver for link in DEMO_BB84])
    estimated = BB84_DECOY.estimate(expected_counts(p), np.ones(len(DEMO_BB84)),
                                    {n: np.asarray(getattr(p, n), float) for n in BB84_DECOY.param_names}, 0.99)
    eta = decoy.transmittance(p.fiber_length_km, p.attenuation_db_per_km, p.insertion_loss_db) * p.detector_efficiency
    per_signal_pulse = decoy.model_vacuum_weak_rate(eta, p.mu, p.nu, p.dark_count_probability, p.misalignment_error,
                                                    p.ec_efficiency)
    for i, link in enumerate(DEMO_BB84):
        rate = planned(capsys, config, link, "vacuum-weak")["vacuum-weak"]
        assert rate == pytest.approx(estimated["asymptotic_key_rate_bps"][i], rel=1e-9)
        assert rate == pytest.approx(per_signal_pulse[i] * p.p_signal[i] * p.clock_rate_hz[i], rel=1e-12)
        assert rate > 0


def test_plan_and_a_running_exporter_expect_the_same_rate(capsys, tmp_path, start_exporter):
    """`plan --config demo.yaml --link X` (its default bound) and the gauge a real `qtelemetry run` of
    the demo serves for X: one model, to 1e-9."""
    config = tmp_path / "demo.yaml"
    config.write_text(default_config_text())
    samples = start_exporter().wait_for(lambda s: len(s.get("qkd_expected_secret_key_rate_bits_per_second", [])) >= 3)
    for link in DEMO_BB84:
        served = value(samples, "qkd_expected_secret_key_rate_bits_per_second", link=link.name)
        assert served > 0 and planned(capsys, config, link)["default"] == pytest.approx(served, rel=1e-9)
