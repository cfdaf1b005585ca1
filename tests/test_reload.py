"""Reload of a real `qtelemetry run` process: SIGHUP and POST /-/reload (row 10 of issue 10)."""

from __future__ import annotations

import base64
import signal
import threading
import time
import urllib.error
import urllib.request

import bcrypt
import pytest
from conftest import parse_exposition, value
from web import TOKEN

from qtelemetry.exporter.reload import Reloader, Source
from qtelemetry.runtime.runtime import Runtime

EXPORTER = "exporter:\n  window_seconds: 0.1\n  sliding_windows: 5\n"
KEEP = "  - {name: keep, driver: {type: simulated-bb84, fiber_length_km: 20, seed: 1}}\n"
GONE = "  - {name: gone, driver: {type: simulated-bb84, fiber_length_km: 30, seed: 2}}\n"
NEW = "  - {name: new, driver: {type: simulated-spdc, fiber_length_km: 20, seed: 3}}\n"


def links(samples: dict) -> set[str]:
    return {s.labels["link"] for s in samples.get("qlink_info", [])}


class Watcher(threading.Thread):
    """Scrapes every 50 ms and keeps what a Prometheus would have stored of the kept link."""

    def __init__(self, exporter):
        super().__init__(daemon=True)
        self.exporter, self.seen, self.stop = exporter, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            s = self.exporter.scrape()
            self.seen.append((value(s, "qlink_batches_total", link="keep"), value(s, "qlink_up", link="keep"),
                              value(s, "qkd_pulses_total", link="keep", intensity="signal")))
            time.sleep(0.05)


def test_sighup_adds_and_removes_links_and_the_others_continue(start_exporter, tmp_path):
    exporter = start_exporter(EXPORTER + "links:\n" + KEEP + GONE)
    config = tmp_path / "config0.yaml"
    before = exporter.wait_for(lambda s: value(s, "qlink_batches_total", link="keep") >= 5)
    loaded_at = value(before, "qtelemetry_config_last_reload_success_timestamp_seconds")
    watcher = Watcher(exporter)
    watcher.start()
    config.write_text(EXPORTER + "links:\n" + KEEP + NEW)
    exporter.proc.send_signal(signal.SIGHUP)
    after = exporter.wait_for(lambda s: links(s) == {"keep", "new"} and value(s, "qlink_batches_total", link="new") >= 3)
    time.sleep(0.5)
    watcher.stop.set()
    watcher.join()
    # every scrape across the reload: the kept link's counters never went back, it never reported down
    batches, up, pulses = zip(*watcher.seen)
    assert list(batches) == sorted(batches) and list(pulses) == sorted(pulses) and set(up) == {1.0}
    assert batches[-1] > batches[0] >= value(before, "qlink_batches_total", link="keep")
    assert value(after, "qtelemetry_config_last_reload_successful") == 1
    assert value(after, "qtelemetry_config_last_reload_success_timestamp_seconds") > loaded_at
    assert value(after, "qtelemetry_links", protocol="bbm92-spdc") == 1
    assert "SIGHUP: reloading the config" in exporter.log() and "added=1 removed=1" in exporter.log()


def test_a_bad_config_is_rejected_and_the_old_one_keeps_running(start_exporter, tmp_path):
    exporter = start_exporter(EXPORTER + "links:\n" + KEEP)
    config = tmp_path / "config0.yaml"
    exporter.wait_for(lambda s: value(s, "qlink_batches_total", link="keep") >= 3)
    config.write_text(EXPORTER.replace("0.1", "1e300") + "links:\n" + KEEP + NEW)
    exporter.proc.send_signal(signal.SIGHUP)
    rejected = exporter.wait_for(lambda s: value(s, "qtelemetry_config_last_reload_successful") == 0)
    assert links(rejected) == {"keep"}
    counted = value(rejected, "qlink_batches_total", link="keep")
    later = exporter.wait_for(lambda s: value(s, "qlink_batches_total", link="keep") > counted + 5)
    assert value(later, "qtelemetry_estimation_interval_seconds") == 0.1 and value(later, "qlink_up", link="keep") == 1
    line = next(line for line in exporter.log().splitlines() if "config reload rejected" in line)
    assert "level=ERROR" in line and "field=exporter.window_seconds" in line
    assert exporter.proc.poll() is None
    config.write_text(EXPORTER + "links:\n" + KEEP + NEW)  # fixed: the next reload applies it
    exporter.proc.send_signal(signal.SIGHUP)
    fixed = exporter.wait_for(lambda s: value(s, "qtelemetry_config_last_reload_successful") == 1)
    assert links(fixed) == {"keep", "new"}


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode()}


def get(url: str, headers: dict[str, str], method: str = "GET") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers, method=method), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_post_reload_applies_new_credentials_and_restart_only_settings_are_logged(start_exporter, tmp_path):
    token = tmp_path / "admin.token"
    token.write_text(TOKEN)
    token.chmod(0o600)

    def config(password: bytes, otlp: str = "") -> str:
        hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds=4)).decode()
        return (EXPORTER + f"  admin_token_file: {token}\n  web: {{basic_auth_users: {{prometheus: '{hashed}'}}}}\n"
                + otlp + "links:\n" + KEEP)

    exporter = start_exporter(config(b"old-pass"))
    base = exporter.url.removesuffix("/metrics")
    assert get(exporter.url, basic("old-pass"))[0] == 200
    (tmp_path / "config0.yaml").write_text(config(b"new-pass", "  otlp: {endpoint: 'http://127.0.0.1:9/v1/metrics'}\n"))
    assert get(base + "/-/reload", basic("old-pass"), "POST")[0] == 401  # scrape credentials are not the admin's
    assert get(base + "/-/reload", {"Authorization": f"Bearer {TOKEN}"}, "POST") == (200, "config reloaded\n")
    assert get(exporter.url, basic("old-pass"))[0] == 401
    status, body = get(exporter.url, basic("new-pass"))
    assert status == 200 and value(parse_exposition(body), "qtelemetry_config_last_reload_successful") == 1
    line = next(line for line in exporter.log().splitlines() if "next restart" in line)
    assert "level=WARNING" in line and "field=exporter.otlp" in line
    assert "pushing metrics over OTLP" not in exporter.log()


@pytest.mark.parametrize("override, warned", [(None, True), ("127.0.0.1:0", False)])
def test_a_listen_address_change_waits_for_a_restart(tmp_path, caplog, override, warned):
    """Logged as such, unless --listen overrides the config's address anyway."""
    config = tmp_path / "c.yaml"
    config.write_text('exporter: {listen: "127.0.0.1:9817"}\nlinks:\n' + KEEP)
    source = Source(str(config), listen=override)
    settings = source.load()
    runtime = Runtime(settings.config)
    runtime.start()
    try:
        config.write_text('exporter: {listen: "0.0.0.0:9900"}\nlinks:\n' + KEEP)
        assert Reloader(source, runtime, settings).reload() == []
    finally:
        runtime.stop()
    assert [r.field for r in caplog.records if "next restart" in r.getMessage()] == (["exporter.listen"] if warned else [])
