"""Real-component test harness: Prometheus, Alertmanager and a webhook receiver on loopback.

The tests start Debian's ``prometheus`` (2.42) and ``prometheus-alertmanager`` (0.25) as
subprocesses on free loopback ports with temporary storage, wait on ``/-/ready``, and stop them
by PID (SIGTERM, then SIGKILL after a timeout). Every process logs to a file under the test's
tmp dir; when a test fails while a stack is running, the tail of each log is attached to the
failure report ("realstack logs" section).

Nothing here sleeps a fixed time: every wait polls a condition with a deadline and, on timeout,
says what it was waiting for and what it saw last.

Timing facts of these versions that the helpers are built around:

- Prometheus applies scrape targets and Alertmanager targets through its discovery managers,
  which push updates at most every 5 s: the first scrape and the first alert send come ~5 s
  after start. ``wait_for_target_up`` and ``wait_for_alertmanager`` poll for it.
- Prometheus drops alerts it evaluates before an Alertmanager is discovered, and by default
  re-sends an alert only every minute (``--rules.alert.resend-delay=1m``). The harness starts
  Prometheus with ``--rules.alert.resend-delay=2s`` so that an alert which fired before
  discovery still reaches Alertmanager within 2 s of it (Alertmanager deduplicates).
- A reload (``/-/reload``) rebuilds the notifier's Alertmanager set, and 2.42 again drops every
  alert until discovery re-applies the Alertmanager target, ~5 s later: a resolved alert after
  a rule change reaches Alertmanager only on the first re-send after that gap. Meanwhile a
  firing alert's ``endsAt`` is 4 x resend-delay after its last send; with a 1 s resend delay
  (4 s) Alertmanager would time the alert out *before* Prometheus's resolve arrives, and a test
  would see a "resolved" that Prometheus never sent. 2 s (8 s validity) keeps the real path.

Use it through the ``prometheus_stack`` fixture (see ``conftest.py``)::

    def test_x(start_exporter, prometheus_stack, tmp_path):
        exporter = start_exporter()
        stack = prometheus_stack(exporter.url, [rule_file])
        stack.prometheus.wait_for_target_up()
        stack.prometheus.query('qkd_qber_ratio')
        stack.webhook.wait_for(lambda notes: ..., timeout=30)

or build a ``Stack`` directly with ``start_stack`` for a module-scoped stack.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pytest
import yaml

PROMETHEUS_BIN = "prometheus"
ALERTMANAGER_BIN = "prometheus-alertmanager"  # Debian's name; upstream tarballs call it "alertmanager"
VICTORIA_BIN = "victoria-metrics"  # Debian's victoria-metrics (single-node server)
PROMTOOL_BIN = "promtool"

LOG_TAIL_LINES = 60


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller retries on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_binary(name: str) -> str:
    """Path of ``name``, or skip the test (fail under CI, which installs the binaries)."""
    path = shutil.which(name)
    if path:
        return path
    reason = (
        f"{name} not found on PATH: install Debian's prometheus, prometheus-alertmanager and victoria-metrics "
        "(`apt-get install -y --no-install-recommends prometheus prometheus-alertmanager victoria-metrics`, "
        "or run `bash .ci/run`)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(reason)


def require_binaries(*names: str) -> None:
    for name in names or (PROMETHEUS_BIN, ALERTMANAGER_BIN):
        find_binary(name)


def poll(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.1,
    describe: Callable[[], str] | None = None,
) -> Any:
    """Call ``condition`` until it returns a truthy value; return that value.

    On timeout raise AssertionError naming ``what`` and, if given, ``describe()`` (the last
    thing seen). Exceptions raised by ``condition`` propagate immediately.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = f"\nlast seen: {describe()}" if describe else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def _http(method: str, url: str, data: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------

# Processes alive right now; the report hook attaches their log tails to failing tests.
_LIVE: list["ManagedProcess"] = []
_LIVE_LOCK = threading.Lock()


class ManagedProcess:
    """A server subprocess on a free loopback port, logging to a file, ready on ``/-/ready``.

    ``argv_for(port)`` builds the command line; if the process dies at startup because the
    port was taken in the meantime, it is restarted on another port (up to 3 attempts).
    """

    name = "process"

    def __init__(self, argv_for: Callable[[int], list[str]], log_path: Path, ready_timeout: float = 30.0):
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._log = None
        self._log_start = 0
        for attempt in range(3):
            self.port = free_port()
            self._spawn(argv_for(self.port))
            try:
                self._wait_ready(ready_timeout)
                return
            except _PortClash:
                self.stop()
                if attempt == 2:
                    raise AssertionError(f"{self.name}: port clash three times:\n{_tail(self.log_path)}") from None
            except BaseException:
                self.stop()  # never leave a half-started server behind
                raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _spawn(self, argv: list[str]) -> None:
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()
        self._log.write(f"# {' '.join(argv)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        with _LIVE_LOCK:
            _LIVE.append(self)

    def _wait_ready(self, timeout: float) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                with self.log_path.open("rb") as log:  # this attempt's output only
                    log.seek(self._log_start)
                    output = log.read().decode(errors="replace")
                if "address already in use" in output:
                    raise _PortClash()
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode} at startup:\n{_tail(self.log_path)}")
            try:
                status, _ = _http("GET", self.url + "/-/ready", timeout=2)
            except OSError:
                return False
            return status == 200

        poll(ready, timeout, f"{self.name} {self.url}/-/ready", describe=lambda: _tail(self.log_path, 10))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID, SIGKILL if still alive after ``timeout``; idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        with _LIVE_LOCK:
            if self in _LIVE:
                _LIVE.remove(self)


class _PortClash(Exception):
    pass


class PromQLError(AssertionError):
    """A query the Prometheus HTTP API rejected; carries its error type and text."""

    def __init__(self, expr: str, error_type: str, error: str):
        super().__init__(f"{error_type}: {error}\n  query: {expr}")
        self.expr, self.error_type, self.error = expr, error_type, error


class Prometheus(ManagedProcess):
    """Prometheus 2.42 scraping given targets as job ``qtelemetry`` every second.

    Rules are evaluated every second; alerts go to ``alertmanager`` (an ``host:port``) if given.
    Started with ``--web.enable-lifecycle`` so ``reload()`` re-reads config and rule files.
    ``targets`` are ``host:port`` strings, or static-config target groups
    (``{"targets": [...], "labels": {...}}``) to give targets labels such as a cluster.
    ``external_labels`` and ``remote_write`` (URLs) build a leaf of a global view;
    ``remote_write_receiver`` makes this server accept remote writes (the global one).
    ``storage`` is the TSDB directory (default: a new one in ``workdir``), e.g. backfilled blocks;
    ``extra_args`` go on the command line as they are.
    """

    name = "prometheus"

    def __init__(
        self,
        workdir: Path,
        targets: Sequence[str | dict],
        rule_files: Sequence[Path | str] = (),
        alertmanager: str | None = None,
        metrics_path: str = "/metrics",
        job: str = "qtelemetry",
        interval: str = "1s",
        resend_delay: str = "2s",
        binary: str | None = None,
        external_labels: dict[str, str] | None = None,
        remote_write: Sequence[str] = (),
        remote_write_receiver: bool = False,
        storage: Path | None = None,
        extra_args: Sequence[str] = (),
    ):
        self.workdir = workdir
        self.job = job
        self.config_path = workdir / "prometheus.yml"
        self.rule_files = [Path(p).resolve() for p in rule_files]
        groups = [t if isinstance(t, dict) else {"targets": [t]} for t in targets]
        self.config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [{"job_name": job, "metrics_path": metrics_path, "static_configs": groups}] if groups else [],
        }
        if external_labels:
            self.config["global"]["external_labels"] = dict(external_labels)
        if remote_write:  # ship every second, so a test sees the global view within seconds
            self.config["remote_write"] = [{"url": url, "queue_config": {"batch_send_deadline": "1s"}}
                                           for url in remote_write]
        if alertmanager:
            self.config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.check_config()
        binary = binary or find_binary(PROMETHEUS_BIN)
        storage = storage or workdir / "prometheus-data"

        def argv(port: int) -> list[str]:
            return [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
                f"--rules.alert.resend-delay={resend_delay}",
                "--log.level=info",
                *(["--web.enable-remote-write-receiver"] if remote_write_receiver else []),
                *extra_args,
            ]

        super().__init__(argv, workdir / "prometheus.log")

    def check_config(self) -> None:
        """``promtool check config`` (which also checks the rule files): fail with its output."""
        promtool = shutil.which(PROMTOOL_BIN)
        if not promtool:
            return
        result = subprocess.run([promtool, "check", "config", str(self.config_path)], capture_output=True, text=True)
        if result.returncode != 0:
            raise AssertionError(f"promtool check config failed:\n{result.stdout}{result.stderr}")

    # --- HTTP API ------------------------------------------------------------------------

    def api(self, path: str, params: dict[str, str] | None = None, method: str = "GET") -> Any:
        """``data`` of a /api/v1 call; raises PromQLError with the server's error text."""
        url = f"{self.url}/api/v1/{path}"
        data = None
        if params and method == "GET":
            url += "?" + urllib.parse.urlencode(params)
        elif params:
            data = urllib.parse.urlencode(params).encode()
        status, body = _http(method, url, data)
        try:
            payload = json.loads(body)
        except ValueError:
            raise AssertionError(f"{url}: HTTP {status}, not JSON: {body[:500]!r}") from None
        if payload.get("status") != "success":
            raise PromQLError((params or {}).get("query", path), payload.get("errorType", f"HTTP {status}"),
                              payload.get("error", body.decode(errors="replace")))
        return payload["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """Instant query: list of ``{"metric": {...}, "value": [ts, "v"]}`` (scalars as one sample).

        POSTed so long expressions are fine; raises PromQLError on a parse or execution error.
        """
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", params, method="POST")
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"}
        return self.api("query_range", params, method="POST")["result"]

    def wait_for_query(
        self, expr: str, predicate: Callable[[list[dict]], bool] = bool, timeout: float = 30.0
    ) -> list[dict]:
        """Query until ``predicate(result)`` holds; default: a non-empty result."""
        last: list[list[dict]] = [[]]

        def check() -> list[dict] | None:
            last[0] = self.query(expr)
            return last[0] if predicate(last[0]) else None

        result = poll(check, timeout, f"query {expr!r} to satisfy its predicate",
                      describe=lambda: json.dumps(last[0])[:2000], interval=0.25)
        return result

    def targets(self) -> list[dict]:
        return self.api("targets", {"state": "active"})["activeTargets"]

    def wait_for_target_up(self, job: str | None = None, timeout: float = 30.0) -> list[dict]:
        """Wait until every active target of ``job`` (default: the scrape job) has health "up"."""
        job = job or self.job
        last: list[list[dict]] = [[]]

        def up() -> list[dict] | None:
            targets = [t for t in self.targets() if t["labels"].get("job") == job]
            last[0] = targets
            return targets if targets and all(t["health"] == "up" for t in targets) else None

        def describe() -> str:
            return "; ".join(f"{t['scrapeUrl']} health={t['health']} lastError={t['lastError']!r}" for t in last[0]) \
                or "no active targets yet (discovery applies targets ~5 s after start)"

        return poll(up, timeout, f"scrape job {job!r} to be up", describe=describe, interval=0.25)

    def wait_for_alertmanager(self, timeout: float = 30.0) -> list[dict]:
        """Wait until Prometheus has discovered its Alertmanager (~5 s after start)."""
        return poll(lambda: self.api("alertmanagers")["activeAlertmanagers"], timeout,
                    "Prometheus to discover its Alertmanager")

    def rules(self, type_: str | None = None) -> list[dict]:
        """All rules of all groups, from /api/v1/rules."""
        params = {"type": type_} if type_ else None
        return [rule for group in self.api("rules", params)["groups"] for rule in group["rules"]]

    def rule_groups(self) -> list[dict]:
        return self.api("rules")["groups"]

    def wait_for_rule_evaluations(self, timeout: float = 30.0, after: float | None = None) -> list[dict]:
        """Wait until every loaded rule has been evaluated (after ``after``, a unix time, if given).

        Fails at once if a rule's last evaluation errored, with the rule and its error. A group
        with a long ``interval:`` is first evaluated up to one interval after start (at an
        offset hashed from its name): load such files through ``fast_rule_copies``.
        """
        last: list[list[dict]] = [[]]

        def evaluated() -> list[dict] | None:
            groups = last[0] = self.rule_groups()
            rules = [r for g in groups for r in g["rules"]]
            broken = [r for r in rules if r.get("health") == "err"]
            if broken:
                raise AssertionError("rule evaluation failed:\n" + "\n".join(
                    f"  {r.get('name')}: {r.get('lastError')}\n    expr: {r.get('query')}" for r in broken))
            done = [r for r in rules if _rfc3339_after(r.get("lastEvaluation"), after)]
            return rules if rules and len(done) == len(rules) else None

        def describe() -> str:
            return "; ".join(f"group {g['name']} (interval {g['interval']}s) last evaluated {g.get('lastEvaluation')}"
                             for g in last[0] if not _rfc3339_after(g.get("lastEvaluation"), after))

        return poll(evaluated, timeout, "every rule to be evaluated", interval=0.25, describe=describe)

    def alerts(self) -> list[dict]:
        """Prometheus's own view of pending/firing alerts (/api/v1/alerts)."""
        return self.api("alerts")["alerts"]

    def reload(self, timeout: float = 10.0) -> None:
        """POST /-/reload (re-reads config and rule files); raises with the server's message on error."""
        status, body = _http("POST", self.url + "/-/reload", data=b"", timeout=timeout)
        if status != 200:
            raise AssertionError(f"prometheus reload failed: HTTP {status}: {body.decode(errors='replace')}")


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def rfc3339_seconds(stamp: str) -> float:
    """Unix time of a Go RFC 3339 timestamp as Prometheus and Alertmanager print them (ns cut to µs)."""
    match = _RFC3339.match(stamp)
    if not match:
        raise AssertionError(f"unexpected timestamp format: {stamp!r}")
    head, frac, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(head + zone).timestamp() + float(f"0.{frac or 0}")


def _rfc3339_after(stamp: str | None, after: float | None) -> bool:
    """True if ``stamp`` (e.g. a rule's lastEvaluation) is set and later than ``after``."""
    if not stamp or stamp.startswith("0001-01-01"):
        return False
    return after is None or rfc3339_seconds(stamp) > after


def backfilled_prometheus(history: Path, work: Path) -> Prometheus:
    """A Prometheus over the history ``qtelemetry history`` wrote (the file is removed once backfilled).

    One block for the whole file (promtool's default 2 h blocks each re-read all of it). Samples
    come every 5 minutes and a backfill has no staleness markers: a lookback just under the step
    makes a series missing from one exposition missing at that step, as live; the retention
    keeps blocks of any age.
    """
    from qtelemetry.report.cli import BACKFILL_BLOCK

    tsdb = work / "tsdb"
    blocks = subprocess.run([find_binary(PROMTOOL_BIN), "tsdb", "create-blocks-from", "openmetrics",
                             f"--max-block-duration={BACKFILL_BLOCK}", str(history), str(tsdb)], capture_output=True, text=True)
    assert blocks.returncode == 0, blocks.stderr
    history.unlink()
    return Prometheus(work, [], storage=tsdb, extra_args=["--storage.tsdb.retention.time=100y", "--query.lookback-delta=4m"])


class VictoriaMetrics(ManagedProcess):
    """A single-node VictoriaMetrics: a Prometheus remote-write target (``/api/v1/write``) with a
    Prometheus-compatible query API. Queries see samples up to 1 s old (its default holds the
    newest 30 s back)."""

    name = "victoria-metrics"

    def __init__(self, workdir: Path):
        binary = find_binary(VICTORIA_BIN)
        super().__init__(lambda port: [binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={workdir / 'vm-data'}",
                                       "-search.latencyOffset=1s", "-retentionPeriod=1d"], workdir / "victoria-metrics.log")

    @property
    def write_url(self) -> str:
        return self.url + "/api/v1/write"


class Alertmanager(ManagedProcess):
    """Alertmanager 0.25, clustering off, every alert routed to one webhook.

    ``group_wait`` 0 s, ``group_interval`` 1 s, ``repeat_interval`` 4 h: notifications (and the
    resolved one) arrive within about a second of the alert change, with no repeats. ``config``
    replaces all of that with a whole Alertmanager config of the test's own.
    """

    name = "alertmanager"

    def __init__(
        self,
        workdir: Path,
        webhook_url: str,
        group_by: Sequence[str] = ("alertname",),
        group_wait: str = "0s",
        group_interval: str = "1s",
        repeat_interval: str = "4h",
        binary: str | None = None,
        inhibit_rules: Sequence[dict] = (),
        config: dict | None = None,
    ):
        self.config_path = workdir / "alertmanager.yml"
        self.config = config or {
            "route": {
                "receiver": "webhook",
                "group_by": list(group_by),
                "group_wait": group_wait,
                "group_interval": group_interval,
                "repeat_interval": repeat_interval,
            },
            "receivers": [{"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
        }
        if inhibit_rules and config is None:
            self.config["inhibit_rules"] = list(inhibit_rules)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        binary = binary or find_binary(ALERTMANAGER_BIN)
        storage = workdir / "alertmanager-data"

        def argv(port: int) -> list[str]:
            return [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",  # no gossip port, no peers: ready at once
                "--log.level=info",
            ]

        super().__init__(argv, workdir / "alertmanager.log")

    def post_alerts(self, alerts: list[dict]) -> None:
        """POST alerts to the API v2, as Prometheus does."""
        request = urllib.request.Request(self.url + "/api/v2/alerts", data=json.dumps(alerts).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, response.status

    def alerts(self) -> list[dict]:
        """Alerts Alertmanager holds (API v2)."""
        status, body = _http("GET", self.url + "/api/v2/alerts")
        if status != 200:
            raise AssertionError(f"alertmanager /api/v2/alerts: HTTP {status}: {body[:500]!r}")
        return json.loads(body)


class WebhookReceiver:
    """An http.server on a free loopback port recording every notification JSON it receives."""

    def __init__(self, log_path: Path | None = None):
        self.notifications: list[dict] = []
        self._lock = threading.Lock()
        self._log_path = log_path
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    note = json.loads(body)
                except ValueError:
                    note = {"_unparsed": body.decode(errors="replace")}
                if not isinstance(note, dict):  # e.g. a list of alerts POSTed to /api/v2/alerts
                    note = {"_json": note}
                note["_received_at"] = time.time()
                note["_path"] = self.path
                receiver._record(note)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _record(self, note: dict) -> None:
        with self._lock:
            self.notifications.append(note)
        if self._log_path is not None:
            with self._log_path.open("a") as log:
                log.write(json.dumps(note, sort_keys=True) + "\n")

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.notifications)

    def alerts(self, status: str | None = None) -> list[dict]:
        """Every alert of every notification so far (``status`` "firing"/"resolved" filters)."""
        return [a for note in self.snapshot() for a in note.get("alerts", []) if status in (None, a.get("status"))]

    def wait_for(self, predicate: Callable[[list[dict]], Any], timeout: float = 30.0) -> Any:
        """Wait until ``predicate(notifications)`` is truthy; return its value."""
        def describe() -> str:
            notes = self.snapshot()
            return f"{len(notes)} notifications: " + json.dumps(notes)[:3000]

        return poll(lambda: predicate(self.snapshot()), timeout, "webhook notifications", describe=describe)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# the stack
# --------------------------------------------------------------------------------------------


@dataclass
class Stack:
    prometheus: Prometheus
    alertmanager: Alertmanager | None = None
    webhook: WebhookReceiver | None = None
    workdir: Path | None = None
    _stopped: bool = field(default=False, repr=False)

    def query(self, expr: str) -> list[dict]:
        return self.prometheus.query(expr)

    def wait_for_query(self, expr: str, predicate: Callable[[list[dict]], bool] = bool, timeout: float = 30.0):
        return self.prometheus.wait_for_query(expr, predicate, timeout)

    def wait_for_target_up(self, timeout: float = 30.0) -> list[dict]:
        return self.prometheus.wait_for_target_up(timeout=timeout)

    def reload(self) -> None:
        self.prometheus.reload()

    def logs(self) -> str:
        parts = []
        for proc in (self.prometheus, self.alertmanager):
            if proc is not None:
                parts.append(f"--- {proc.name} ({proc.log_path}) ---\n{_tail(proc.log_path)}")
        if self.webhook is not None:
            parts.append(f"--- webhook: {len(self.webhook.snapshot())} notifications ---")
        return "\n".join(parts)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for part in (self.prometheus, self.alertmanager, self.webhook):
            if part is not None:
                part.stop()


def fast_rule_copies(rule_files: Iterable[Path | str], dest: Path, hold: str | None = None) -> list[Path]:
    """Copies of rule files without the groups' ``interval:`` (so the harness's 1 s applies).

    Generated groups evaluate every 1m or 5m, and Prometheus first evaluates a group at an
    offset of up to one interval after start: a test would wait minutes. Expressions, labels
    and annotations are untouched. ``hold`` replaces every alert's ``for:`` and drops its
    ``keep_firing_for:`` (the durations themselves are proven by the promtool unit tests, which
    run on simulated time).
    """
    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for i, path in enumerate(rule_files):
        path = Path(path)
        doc = yaml.safe_load(path.read_text())
        for group in doc.get("groups", []):
            group.pop("interval", None)
            for rule in group["rules"]:
                if hold is not None and "alert" in rule:
                    rule["for"] = hold
                    rule.pop("keep_firing_for", None)
        copy = dest / f"{i:02d}-{path.name}"
        copy.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
        copies.append(copy)
    return copies


def target_of(url: str) -> tuple[str, str]:
    """``host:port`` and metrics path of an exporter URL like ``http://127.0.0.1:1234/metrics``."""
    parts = urllib.parse.urlsplit(url)
    return parts.netloc, parts.path or "/metrics"


def start_stack(
    workdir: Path,
    exporter_url: str | Sequence[tuple[str, dict[str, str]]],
    rule_files: Iterable[Path | str] = (),
    alerting: bool = True,
    group_by: Sequence[str] = ("alertname",),
) -> Stack:
    """Start webhook receiver → Alertmanager → Prometheus (in that order) scraping ``exporter_url``
    (or several exporters, each given as ``(url, target labels)``; they share one metrics path)."""
    require_binaries(PROMETHEUS_BIN, *([ALERTMANAGER_BIN] if alerting else []))
    workdir.mkdir(parents=True, exist_ok=True)
    started: list[Any] = []
    try:
        webhook = alertmanager = None
        if alerting:
            webhook = WebhookReceiver(workdir / "webhook.jsonl")
            started.append(webhook)
            alertmanager = Alertmanager(workdir, webhook.url, group_by=group_by)
            started.append(alertmanager)
        exporters = [(exporter_url, {})] if isinstance(exporter_url, str) else list(exporter_url)
        groups = [{"targets": [target_of(url)[0]], "labels": labels} for url, labels in exporters]
        path = target_of(exporters[0][0])[1]
        prometheus = Prometheus(workdir, groups, list(rule_files),
                                alertmanager=alertmanager.address if alertmanager else None, metrics_path=path)
        return Stack(prometheus, alertmanager, webhook, workdir)
    except BaseException:
        for part in reversed(started):
            part.stop()
        raise


# --------------------------------------------------------------------------------------------
# pytest glue: fixture and "logs on failure"
# --------------------------------------------------------------------------------------------


class _LogsOnFailure:
    """Attach the log tails of every live harness process to a failing test's report."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        report = outcome.get_result()
        if report.failed and report.when in ("setup", "call"):
            with _LIVE_LOCK:
                live = list(_LIVE)
            for proc in live:
                report.sections.append((f"realstack {proc.name} log (tail, {proc.log_path})", _tail(proc.log_path)))


_PLUGIN_NAME = "qtelemetry-realstack-logs"


def register_log_plugin(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(_PLUGIN_NAME):
        config.pluginmanager.register(_LogsOnFailure(), _PLUGIN_NAME)


@pytest.fixture
def prometheus_stack(tmp_path: Path, request: pytest.FixtureRequest):
    """Factory: ``prometheus_stack(exporter_url, rule_files=(), alerting=True) -> Stack``.

    Each call starts a webhook receiver, an Alertmanager (unless ``alerting=False``) and a
    Prometheus scraping the exporter; all are stopped at teardown. Skips if the binaries are
    missing (fails instead when the CI environment variable is set).
    """
    register_log_plugin(request.config)
    require_binaries(PROMETHEUS_BIN)  # skip before the test starts anything else
    stacks: list[Stack] = []

    def start(exporter_url: str, rule_files: Iterable[Path | str] = (), alerting: bool = True,
              group_by: Sequence[str] = ("alertname",)) -> Stack:
        stack = start_stack(tmp_path / f"stack{len(stacks)}", exporter_url, rule_files, alerting, group_by)
        stacks.append(stack)
        return stack

    yield start
    for stack in reversed(stacks):
        stack.stop()
