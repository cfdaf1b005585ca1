"""Config inputs that used to crash `check-config` or pass it and then break the run (issue 10,
rows 5, 6 and 9): each is now exit code 2 with an error naming the field, never a traceback."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import warnings
from pathlib import Path

import bcrypt
import numpy as np
import pytest
import yaml
from tls import make_pki

from qtelemetry.cli import main
from qtelemetry.config import CONFIDENCE_LEVEL_MAX, ConfigError, floats_per_window, load_config, parse_config
from qtelemetry.configfile import config_loader, load_yaml
from qtelemetry.estimation import PROTOCOLS
from qtelemetry.runtime.runtime import Runtime
from qtelemetry.runtime.window import SlidingWindow


def link(extra: str = "", name: str = "a", driver: str = "simulated-bb84") -> str:
    return f"  - {{name: {name}, driver: {{type: {driver}, fiber_length_km: 10{extra}}}}}\n"


def document(exporter: str = "", links: str | None = None) -> str:
    return (f"exporter: {{{exporter}}}\n" if exporter else "") + "links:\n" + (links or link())


def check(tmp_path: Path, capsys, text: str | bytes) -> tuple[int, str]:
    path = tmp_path / "c.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    code = main(["check-config", str(path)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def rejected(tmp_path: Path, capsys, text: str | bytes, field: str, reason: str) -> str:
    code, err = check(tmp_path, capsys, text)
    assert code == 2, err
    assert f"{tmp_path / 'c.yaml'}: {field}: " in err and reason in err, err
    return err


# -- row 5: the loader never raises anything but ConfigError ----------------------------------

HOSTILE = {
    "impossible YAML date": (link(", seed: 2001-13-45"), "links[0].driver.seed", "valid integer"),
    "a YAML date where a number goes": (link(", mu: 2001-01-01"), "links[0].driver.mu", "valid number"),
    "integer of 5,000 digits": (link(", seed: " + "9" * 5000), "links[0].driver.seed", "exceeded maximum size"),
    "float of 5,000 digits": (link(", mu: " + "9" * 5000 + ".0"), "links[0].driver.mu", "finite number"),
    "bool that is not one": (link(", seed: !!bool maybe"), "links[0].driver.seed", "valid integer"),
    "int tag on text": (link(", seed: !!int x"), "links[0].driver.seed", "valid integer"),
    "timestamp tag on text": (link(", seed: !!timestamp x"), "links[0].driver.seed", "valid integer"),
    "non-string key": (link(", 7: x"), "links[0].driver[7]", "Keys should be strings"),
    "key with a newline": (link(', "a\\nlevel=ERROR": 1'), "links[0].driver['a\\nlevel=ERROR']", "Extra inputs"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_values_name_their_field(case, tmp_path, capsys):
    text, field, reason = HOSTILE[case]
    rejected(tmp_path, capsys, document(links=text), field, reason)


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="libyaml's limit (the Python parser's is tested below)")
def test_deep_nesting_is_an_error_with_its_line(tmp_path, capsys):
    err = rejected(tmp_path, capsys, "links: " + "[" * 5000 + "]" * 5000, "line 1, column 1007",
                   "exceeded maximum nesting depth")
    assert err.count("\n") == 3  # the problem, the line, the caret


@pytest.mark.parametrize("depth", [500, 5000])
def test_pure_python_parser_refuses_deep_nesting_too(depth):
    """Without libyaml, PyYAML's Python parser recurses: RecursionError becomes a ConfigError."""
    try:
        load_yaml("links: " + "[" * depth + "]" * depth, "c.yaml", config_loader(yaml.SafeLoader))
    except ConfigError as exc:
        assert "nested too deeply" in str(exc)


def test_non_utf8_file_names_the_byte_and_line(tmp_path, capsys):
    rejected(tmp_path, capsys, document().encode() + b"# caf\xe9\n", "(file)", "not UTF-8 text: byte 0xe9 on line 3")


def test_directory_and_missing_file(tmp_path, capsys):
    assert main(["check-config", str(tmp_path)]) == 2
    assert "(file): Is a directory" in capsys.readouterr().err


def test_invalid_yaml_names_the_file_and_points_at_the_column(tmp_path, capsys):
    err = rejected(tmp_path, capsys, "links:\n  - name: a\n    driver: {type: simulated-bb84, fiber_length_km: 10\n",
                   "line 3, column 13", "did not find expected ',' or '}'")
    assert "<unicode string>" not in err
    problem, snippet, caret = err.splitlines()
    assert snippet == "    " + "    driver: {type: simulated-bb84, fiber_length_km: 10"
    assert caret == "    " + " " * 12 + "^"  # under the unclosed '{'


def test_a_key_given_twice_is_an_error_not_a_silent_override(tmp_path, capsys):
    err = rejected(tmp_path, capsys, document(links=link(", mu: 0.5, mu: 0.05")), "line 2, column 76",
                   "found duplicate key 'mu'")
    assert err.splitlines()[-1].endswith("^")


def test_yaml_merge_keys_still_work():
    config = parse_config("links:\n  - {name: a, driver: &d {type: simulated-bb84, fiber_length_km: 10, mu: 0.6}}\n"
                          "  - {name: b, driver: {<<: *d, mu: 0.4}}\n")
    assert [l.driver.mu for l in config.links] == [0.6, 0.4]


def test_quoted_and_plain_scalars_keep_their_types():
    assert load_yaml("[1, '1', 1, '1', true, 'true', null, 'null', 1]", "x") == [
        1, "1", 1, "1", True, "true", None, "null", 1]


def test_garbage_collector_runs_again_after_a_failed_load():
    with pytest.raises(ConfigError):
        load_yaml("links: [1, 2", "x")
    assert gc.isenabled()


def test_check_config_process_exits_2_without_traceback(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(document(links=link(", seed: 2001-13-45")))
    done = subprocess.run([sys.executable, "-m", "qtelemetry", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{path}: links[0].driver.seed: " in done.stderr


# -- row 6: bounds that would break the run ----------------------------------------------------

BOUNDS = {
    "window 1e300": ("window_seconds: 1e300", "exporter.window_seconds", "less than or equal to 3600"),
    "window .inf": ("window_seconds: .inf", "exporter.window_seconds", "finite number"),
    "window 1e-6": ("window_seconds: 1.0e-6", "exporter.window_seconds", "greater than or equal to 0.05"),
    "confidence 1 - 1e-16": ("confidence_level: 0.9999999999999999", "exporter.confidence_level",
                             "less than or equal to 0.999999999"),
    "confidence nan": ("confidence_level: .nan", "exporter.confidence_level", "finite number"),
    "stall shorter than the window": ("window_seconds: 5, stall_timeout_seconds: 2", "exporter.stall_timeout_seconds",
                                      "must be at least window_seconds (5 s)"),
    "stall .inf": ("stall_timeout_seconds: .inf", "exporter.stall_timeout_seconds", "finite number"),
}


@pytest.mark.parametrize("case", sorted(BOUNDS))
def test_exporter_bounds(case, tmp_path, capsys):
    exporter, field, reason = BOUNDS[case]
    rejected(tmp_path, capsys, document(exporter), field, reason)


@pytest.mark.parametrize("seed, reason", [(-1, "greater than or equal to 0"), (2**63, "less than 9223372036854775808")])
def test_seed_fits_numpy(seed, reason, tmp_path, capsys):
    rejected(tmp_path, capsys, document(links=link(f", seed: {seed}")), "links[0].driver.seed", reason)
    np.random.default_rng(2**63 - 1)  # the largest accepted seed is one NumPy takes


@pytest.mark.parametrize("value", ["1e999", ".inf", "-.inf", ".nan"])
def test_no_driver_field_takes_a_non_finite_number(value, tmp_path, capsys):
    rejected(tmp_path, capsys, document(links=link(f", fiber_length_km: {value}").replace("fiber_length_km: 10, ", "")),
             "links[0].driver.fiber_length_km", "finite number")


def test_extreme_accepted_values(tmp_path, capsys):
    assert check(tmp_path, capsys, document("window_seconds: 0.05, stall_timeout_seconds: 0.05, "
                                            f"confidence_level: {CONFIDENCE_LEVEL_MAX!r}",
                                            link(f", seed: {2**63 - 1}")))[0] == 0
    assert check(tmp_path, capsys, document("window_seconds: 3600, stall_timeout_seconds: 7200"))[0] == 0


def test_highest_confidence_level_estimates_without_a_floating_point_error():
    """Every protocol's estimator at CONFIDENCE_LEVEL_MAX: no division by zero, no NaN from the bounds.
    (At 1 - 1e-16, the largest float below 1, the entanglement estimators divide by zero.)"""
    config = parse_config(document(links=link(", seed: 1") + link(", seed: 1", "b", "simulated-spdc")
                                   + link(", seed: 1", "c", "simulated-heralded")))
    for spec in config.links:
        protocol = PROTOCOLS[spec.driver.protocol]
        window = SlidingWindow(protocol, [spec.driver], 1)
        batch = type(spec.driver).fleet([spec.driver], started=0.0).sample(1.0)
        window.fold(np.arange(1), batch.counts, np.ones(1))
        with warnings.catch_warnings(), np.errstate(all="raise"):
            warnings.simplefilter("error")
            estimates = protocol.estimate(window.window(), window.duration, window.params, CONFIDENCE_LEVEL_MAX)
        assert all(np.isfinite(v).all() for v in estimates.values()), spec.driver.protocol


def test_ring_memory_is_refused_with_its_figure(tmp_path, capsys):
    """Issue row 6: 100,000 sliding windows × 1,000 links reserved 13.6 GB."""
    links = "".join(link(name=f"l{i}") for i in range(1000))
    rejected(tmp_path, capsys, document("sliding_windows: 100000", links), "exporter.sliding_windows",
             "100000 windows of 1000 links need 15.6 GiB of count history, over the limit of 2 GiB")


def test_ring_memory_is_what_the_runtime_allocates():
    """floats_per_window (from the protocols' count shapes) is the size of the runtime's ring."""
    # decoy BB84 and BBM92: their counts plus the key store's three amounts
    assert {p: floats_per_window(p) for p in PROTOCOLS} == {"bb84-decoy": 21, "bbm92-spdc": 21,
                                                           "heralded-entanglement": 8, "etsi-qkd-014": 31,
                                                           "etsi-qkd-015": 3, "bb84-sifted": 7}
    config = parse_config(document("sliding_windows: 7", link(name="a") + link(name="b", driver="simulated-spdc")
                                   + link(name="c", driver="simulated-heralded") + link(name="d")))
    allocated = 0
    for protocol in PROTOCOLS:
        links = [l for l in config.links if l.driver.protocol == protocol]
        allocated += sum(a.nbytes for a in SlidingWindow(PROTOCOLS[protocol], [l.driver for l in links], 7).ring.values())
    assert config.ring_memory_bytes() == allocated


def test_duplicate_names_are_listed_with_where_they_are(tmp_path, capsys):
    links = "".join(link(name=f"l{i % 9_998}") for i in range(10_000))
    rejected(tmp_path, capsys, document(links=links), "links",
             "duplicate link names: l0 (links[0], links[9998]), l1 (links[1], links[9999])")


# -- row 9: bcrypt hashes and token files -----------------------------------------------------

def users(hashed: str) -> str:
    return document(links=link()) + f"exporter: {{web: {{basic_auth_users: {{prometheus: '{hashed}'}}}}}}\n"


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
def test_bcrypt_hash_forms_that_bcrypt_verifies_are_accepted(prefix, tmp_path, capsys):
    hashed = prefix + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()[4:]
    assert bcrypt.checkpw(b"pw", hashed.encode())
    assert check(tmp_path, capsys, users(hashed))[0] == 0


def hash_variants() -> dict[str, str]:
    good = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    return {"$2$ prefix": "$2$" + good[4:], "cost 03": good[:4] + "03" + good[6:],
            "cost 32": good[:4] + "32" + good[6:],
            "salt ending in a character bcrypt refuses": good[:28] + ("A" if good[28] != "A" else "B") + good[29:]}


@pytest.mark.parametrize("case", sorted(hash_variants()))
def test_bcrypt_hashes_that_bcrypt_would_refuse_are_config_errors(case, tmp_path, capsys):
    hashed = hash_variants()[case]
    with pytest.raises(ValueError):  # what the server would have hit on the first request
        bcrypt.checkpw(b"pw", hashed.encode())
    rejected(tmp_path, capsys, users(hashed), "exporter.web.basic_auth_users", "expected a bcrypt hash")


def test_legacy_2x_hashes_are_refused(tmp_path, capsys):
    """$2x$ marks hashes of crypt_blowfish's 8-bit bug; OpenBSD and Go's bcrypt don't make them."""
    hashed = "$2x$" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()[4:]
    rejected(tmp_path, capsys, users(hashed), "exporter.web.basic_auth_users", "($2a$, $2b$ or $2y$, cost 04-31)")


def test_basic_auth_user_names_cannot_hold_a_colon(tmp_path, capsys):
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    rejected(tmp_path, capsys, users(hashed).replace("prometheus:", "'a:b':"), "exporter.web.basic_auth_users",
             "without ':'")


TOKENS = {
    "empty": (b"", "the file is empty"),
    "whitespace only": (b" \n\t\n", "the file is empty"),
    "binary": (b"\xff\xfe\x00\x01", "not UTF-8 text"),
    "control characters": (b"abc\x00def", "printable ASCII without spaces"),
    "a space inside": (b"two words", "printable ASCII without spaces"),
    "huge": (b"x" * 10_000, "longer than 4096 bytes"),
}


def token_config(tmp_path: Path, data: bytes | None, mode: int = 0o600) -> str:
    token = tmp_path / "token"
    if data is not None:
        token.write_bytes(data)
        token.chmod(mode)
    return f"exporter: {{admin_token_file: {token}}}\n" + document()


@pytest.mark.parametrize("case", sorted(TOKENS))
def test_unusable_token_files_are_config_errors(case, tmp_path, capsys):
    data, reason = TOKENS[case]
    rejected(tmp_path, capsys, token_config(tmp_path, data), "exporter.admin_token_file", reason)


def test_unreadable_token_paths_are_config_errors(tmp_path, capsys):
    (tmp_path / "token").mkdir()
    rejected(tmp_path, capsys, token_config(tmp_path, None), "exporter.admin_token_file", "is not a regular file")
    (tmp_path / "token").rmdir()
    (tmp_path / "token").symlink_to(tmp_path / "nowhere")
    rejected(tmp_path, capsys, token_config(tmp_path, None), "exporter.admin_token_file", "No such file or directory")


def test_run_refuses_a_binary_token_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(token_config(tmp_path, b"\x00\xff\xfe"))
    done = subprocess.run([sys.executable, "-m", "qtelemetry", "run", "--config", str(path), "--listen", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "field=exporter.admin_token_file" in done.stderr and "not UTF-8 text" in done.stderr


def owned_by_a_user(path: Path) -> None:
    """Tests run as root in CI: hand the file to a user, as an operator's own files are."""
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o666, 0o620])
def test_token_file_others_can_read_or_write_is_a_warning(mode, tmp_path, capsys):
    text = token_config(tmp_path, b"s3cret-token\n", mode)
    owned_by_a_user(tmp_path / "token")
    code, err = check(tmp_path, capsys, text)
    assert code == 0
    assert f"exporter.admin_token_file: warning: {tmp_path / 'token'} has mode {mode:04o}" in err
    assert "s3cret" not in err


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can own a file as root")
def test_root_owned_secret_readable_by_its_group_is_how_kubernetes_mounts_it(tmp_path, capsys):
    assert check(tmp_path, capsys, token_config(tmp_path, b"s3cret-token\n", 0o440)) == (0, "")


def key_configs(tmp_path: Path) -> tuple[dict[str, tuple[str, list[str]]], dict[str, Path]]:
    """Configs with a private key in each place one goes, by the field that names it, with the
    check-config arguments."""
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config: {{cert_file: {pki['server_cert']}, key_file: {pki['server_key']}}}\n")
    tls = f"{{ca_file: {pki['ca']}, cert_file: {pki['client_cert']}, key_file: {pki['client_key']}}}"
    etsi = "".join(f"  - {{name: kme{i}, driver: {{type: etsi014, kme_url: 'https://127.0.0.1:8441', "
                   f"slave_sae_id: b, tls: {tls}}}}}\n" for i in range(3))  # three links, one key: one warning
    return {
        "exporter.web.tls_key_file": (document(f"web: {{tls_cert_file: {pki['server_cert']}, tls_key_file: "
                                               f"{pki['server_key']}}}"), []),
        "links[1].driver.tls.key_file": (document(links=link() + etsi), []),
        "tls_server_config.key_file": (document(), ["--web.config.file", str(web)]),
    }, pki


@pytest.mark.parametrize("field", ["exporter.web.tls_key_file", "links[1].driver.tls.key_file",
                                   "tls_server_config.key_file"])
def test_private_key_others_can_read_is_a_warning(field, tmp_path, capsys):
    configs, pki = key_configs(tmp_path)
    text, args = configs[field]
    key = pki["client_key" if field.startswith("links") else "server_key"]
    (tmp_path / "c.yaml").write_text(text)
    assert main(["check-config", str(tmp_path / "c.yaml"), *args]) == 0
    assert capsys.readouterr().err == ""
    key.chmod(0o644)
    assert main(["check-config", str(tmp_path / "c.yaml"), *args]) == 0
    err = capsys.readouterr().err
    assert f"{field}: warning: {key} has mode 0644: other users can read or change" in err
    assert err.count("warning:") == 1
    assert "PRIVATE KEY" not in err


def test_private_token_file_gives_no_warning(tmp_path, capsys):
    assert check(tmp_path, capsys, token_config(tmp_path, b"s3cret-token\n", 0o600)) == (0, "")


def test_run_logs_the_token_file_warning_at_start(tmp_path, start_exporter):
    exporter = start_exporter(token_config(tmp_path, b"s3cret-token\n", 0o644))
    line = next(l for l in exporter.log().splitlines() if "admin_token_file" in l)
    assert "level=WARNING" in line and "field=exporter.admin_token_file" in line and "mode 0644" in line


def test_relative_paths_are_taken_from_the_config_files_directory(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "admin.token").write_text("t0ken\n")
    (site / "c.yaml").write_text("exporter: {admin_token_file: admin.token}\n" + document())
    monkeypatch.chdir(tmp_path)
    config = load_config("site/c.yaml")
    assert config.exporter.admin_token_file == site / "admin.token"
    assert config.exporter.admin_token() == "t0ken"
    monkeypatch.chdir(site)
    assert load_config("c.yaml").exporter.admin_token_file == site / "admin.token"


EXTREMES = {
    "bb84, dead channel, no dark counts, fiber cut": "type: simulated-bb84, fiber_length_km: 1.0e+5, "
        "attenuation_db_per_km: 1000, insertion_loss_db: 1000, dark_count_probability: 0, clock_rate_hz: 1.0e+12, "
        "mu: 10, nu: 9.99, source_power_factor: 100, faults: [{kind: fiber-cut}]",
    "bb84, every pulse clicks": "type: simulated-bb84, fiber_length_km: 0, attenuation_db_per_km: 0, "
        "detector_efficiency: 1, dark_count_probability: 1, misalignment_error: 0.5, mu: 10, nu: 1.0e-300",
    "spdc at its limits": "type: simulated-spdc, fiber_length_km: 1.0e+5, clock_rate_hz: 1.0e+12, "
        "coincidence_window_s: 1.0e-12, mean_pair_number: 10, source_power_factor: 100, dark_count_rate_hz: 1.0e+12",
    "heralded, instant decoherence": "type: simulated-heralded, fiber_length_km: 1.0e+5, attempt_rate_hz: 1.0e+12, "
        "coherence_time_s: 5.0e-324, storage_time_s: 1.0e+9, dark_count_probability: 0",
    "heralded, perfect memories": "type: simulated-heralded, fiber_length_km: 0, coherence_time_s: 1.0e+9, "
        "scheme: single-click, bright_state_population: 0.5",
}


@pytest.mark.parametrize("case", sorted(EXTREMES))
def test_links_at_their_field_limits_sample_and_estimate_a_window(case):
    """The bounds are the runtime's: a link at them samples an hour-long window and is estimated."""
    config = parse_config(f"exporter: {{window_seconds: 3600, stall_timeout_seconds: 3600}}\n"
                          f"links: [{{name: a, driver: {{{EXTREMES[case]}}}}}]\n")
    runtime = Runtime(config)
    snapshot = runtime.cycle(now=runtime.started + 3600.0)
    assert snapshot.batches.tolist() == [1] and snapshot.errors.sum() == 0  # sampled, checked, folded in
    assert snapshot.groups[config.links[0].driver.protocol].estimates  # and estimated


@pytest.mark.parametrize("field, value", [("fiber_length_km", "1.0e+6"), ("mu", "11"), ("clock_rate_hz", "1.0e+13"),
                                          ("key_buffer_capacity_bits", "1.0e+19")])
def test_driver_fields_beyond_their_limits_are_refused(field, value, tmp_path, capsys):
    extra = f", {field}: {value}"
    text = link(extra).replace("fiber_length_km: 10, ", "") if field == "fiber_length_km" else link(extra)
    rejected(tmp_path, capsys, document(links=text), f"links[0].driver.{field}", "less than or equal to")
