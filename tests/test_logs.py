"""Logs are logfmt (or JSON) that a parser reads back exactly, one line per event, and no value can
forge another line or key (issue 10, rows 8 and 13). logfmtkv's strict mode parses like go-logfmt,
the parser behind Loki's and Prometheus' own logfmt."""

from __future__ import annotations

import ast
import io
import json
import logging
import re
import socket
import subprocess
import sys
import time
import unicodedata
import warnings
from pathlib import Path

import logfmtkv
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qtelemetry import logs
from qtelemetry.cli import main

RFC3339_UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PACKAGE = Path(__file__).resolve().parents[1] / "qtelemetry"
FORGED = 'fault\nts=2026-11-28T12:00:00.000Z level=ERROR logger=qtelemetry msg="forged" kind="x'


@pytest.fixture
def captured():
    """The root logger set up as `qtelemetry` does, writing to a buffer; restored afterwards."""
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    stream = io.StringIO()

    def configure(fmt: str = "logfmt", level: str = "debug") -> io.StringIO:
        # an earlier test that ran the CLI in this process left warnings captured into pytest's
        # record of that test: let go, so that configure captures them here
        logging.captureWarnings(False)
        logs.configure(level, fmt, stream)
        return stream

    yield configure
    root.handlers[:] = before[1]
    root.setLevel(before[0])
    logging.captureWarnings(False)


def lines(stream: io.StringIO) -> list[str]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return text[:-1].split("\n")


def test_line_is_strict_logfmt_with_an_rfc3339_timestamp(captured):
    stream = captured()
    logging.getLogger("qtelemetry.x").info("serving metrics", extra={"url": "http://127.0.0.1:9817/metrics", "links": 5})
    [line] = lines(stream)
    record = logfmtkv.parse(line, strict=True, duplicates="error")
    assert list(record) == ["ts", "level", "logger", "msg", "url", "links"]
    assert RFC3339_UTC_MS.match(record["ts"]), record["ts"]
    assert record["level"] == "INFO" and record["msg"] == "serving metrics" and record["links"] == "5"


def test_a_forged_line_in_a_message_argument_stays_inside_its_value(captured):
    """Row 8: the DELETE kind was logged verbatim, so a newline and level=ERROR wrote a second line."""
    stream = captured()
    logging.getLogger("qtelemetry.exporter.server").info("faults cleared link=%s kind=%s", "metro", FORGED)
    [line] = lines(stream)
    record = logfmtkv.parse(line, strict=True, duplicates="error")
    assert record["level"] == "INFO"
    assert record["msg"] == f"faults cleared link=metro kind={FORGED}"


def test_a_forged_field_value_stays_inside_its_value(captured):
    stream = captured()
    logging.getLogger("qtelemetry").warning("faults cleared", extra={"link": "metro", "kind": FORGED})
    [line] = lines(stream)
    record = logfmtkv.parse(line, strict=True, duplicates="error")
    assert (record["level"], record["kind"]) == ("WARNING", FORGED)


def test_library_messages_with_quotes_are_escaped(captured):
    """Row 13: messages of other libraries put raw quotes inside msg="…"."""
    stream = captured()
    logging.getLogger("urllib3.connectionpool").warning('Retrying "GET /x" after \'reset\'\r\n\tby peer')
    [line] = lines(stream)
    record = logfmtkv.parse(line, strict=True)
    assert record["logger"] == "urllib3.connectionpool"
    assert record["msg"] == 'Retrying "GET /x" after \'reset\'\r\n\tby peer'


def test_tracebacks_and_python_warnings_are_one_line_each(captured):
    stream = captured()
    try:
        raise RuntimeError("boom\nlevel=ERROR")
    except RuntimeError:
        logging.getLogger("qtelemetry").exception("estimation cycle failed")
    with warnings.catch_warnings():  # whatever filters earlier tests in this worker left
        warnings.simplefilter("always")
        warnings.warn("deprecated\nthing", DeprecationWarning, stacklevel=1)
    records = [logfmtkv.parse(line, strict=True) for line in lines(stream)]
    assert [r["level"] for r in records] == ["ERROR", "WARNING"]
    assert "RuntimeError: boom\nlevel=ERROR" in records[0]["exc_info"]
    assert records[1]["logger"] == "py.warnings" and "deprecated\nthing" in records[1]["msg"]


def format_line(message: str, **fields: object) -> str:
    record = logging.LogRecord("qtelemetry", logging.INFO, __file__, 1, "%s", (message,), None)
    record.__dict__.update(fields)
    return logs.LogfmtFormatter().format(record)


TEXT = st.text(st.characters(exclude_categories=["Cs"]))  # any code point but lone surrogates


def unsafe(line: str) -> list[str]:
    """Control characters and line or paragraph separators in ``line``."""
    return [c for c in line if unicodedata.category(c) in ("Cc", "Zl", "Zp")]


@settings(max_examples=300, deadline=None)
@given(message=TEXT, value=TEXT, number=st.integers() | st.floats(allow_nan=False))
def test_any_text_round_trips_through_one_logfmt_line(message, value, number):
    line = format_line(message, value=value, number=number)
    assert len(line.splitlines()) <= 1 and not unsafe(line)  # no break for any splitter, no terminal escape
    parsed = logfmtkv.parse(line, strict=True, duplicates="error")
    assert (parsed["msg"], parsed["value"], parsed["number"]) == (message, value, str(number))


UNICODE_BREAKS = "metro\u2028ts=2026-11-28T12:00:00.000Z level=ERROR msg=forged\x85\u2029\x1c\x1b[2J\x9b"


@pytest.mark.parametrize("fmt", logs.FORMATS)
def test_device_text_with_unicode_line_breaks_and_escapes_stays_one_printable_line(captured, fmt):
    """U+2028 and U+0085 in a device's text reached the log raw: a consumer splitting on Unicode
    line boundaries saw a forged level=ERROR line, a terminal ran the escapes."""
    stream = captured(fmt)
    logging.getLogger("qtelemetry.drivers").warning("device says", extra={"detail": UNICODE_BREAKS})
    line = stream.getvalue()[:-1]
    assert len(line.splitlines()) == 1 and not unsafe(line)
    parsed = json.loads(line) if fmt == "json" else logfmtkv.parse(line, strict=True, duplicates="error")
    assert parsed["detail"] == UNICODE_BREAKS and parsed["level"] == "WARNING"


def test_lone_surrogates_still_give_one_parseable_line():
    line = format_line("a\ud800b\nc")
    assert "\n" not in line
    assert logfmtkv.parse(line, strict=True)["msg"] == "a\ufffdb\nc"  # go-logfmt's reading of an invalid code point


def test_json_format_is_one_json_object_per_line(captured):
    stream = captured("json")
    logging.getLogger("qtelemetry").info("faults cleared link=%s", FORGED, extra={"kind": FORGED, "count": 1})
    [line] = lines(stream)
    record = json.loads(line)
    assert RFC3339_UTC_MS.match(record["ts"])
    assert (record["level"], record["logger"], record["kind"], record["count"]) == ("INFO", "qtelemetry", FORGED, 1)
    assert record["msg"] == f"faults cleared link={FORGED}"


@pytest.mark.parametrize("argv, level, fmt", [
    (["check-config", "F"], "info", "logfmt"),
    (["--log-level", "debug", "check-config", "F"], "debug", "logfmt"),
    (["check-config", "F", "--log-level", "error", "--log-format", "json"], "error", "json"),
    (["--log-level", "debug", "check-config", "--log-level", "warning", "F"], "warning", "logfmt"),
    (["fault", "clear", "--token-file", "T", "--link", "l", "--log-format", "json"], "info", "json"),
])
def test_log_options_work_before_and_after_the_verb(argv, level, fmt):
    from qtelemetry.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.log_level, args.log_format) == (level, fmt)


def test_exporter_start_and_stop_lines_are_logfmt(tmp_path):
    """A real `qtelemetry run`: every line it writes parses strictly, with the fields call sites give."""
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "qtelemetry", "run", "--listen", "127.0.0.1:0",
                                 "--log-level", "debug"], stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while "serving metrics" not in log.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    records = [logfmtkv.parse(line, strict=True, duplicates="error") for line in log.read_text().splitlines()]
    serving = next(r for r in records if r.get("msg") == "serving metrics")
    assert serving["url"].startswith("http://127.0.0.1:") and serving["control_plane"] == "off"
    assert records[-1]["msg"] == "shutting down"


def test_config_errors_of_run_are_log_lines_naming_the_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("links: [{name: a, driver: {type: simulated-bb84, fiber_length_km: 10, mu: 0.1, nu: 0.2}}]\n")
    done = subprocess.run([sys.executable, "-m", "qtelemetry", "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    [record] = [logfmtkv.parse(line, strict=True) for line in done.stderr.splitlines()]
    assert (record["level"], record["msg"], record["field"]) == ("ERROR", "invalid config", "links[0].driver")
    assert record["reason"] == "nu (0.2) must be smaller than mu (0.1)"


def test_main_can_be_called_twice_without_doubling_lines(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("links: [{name: a, driver: {type: simulated-bb84, fiber_length_km: 10}}]\n")
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        main(["check-config", str(path)])
        main(["check-config", str(path)])
        logging.getLogger("qtelemetry").warning("once")
        assert capsys.readouterr().err.count("msg=once") == 1
    finally:
        root.handlers[:] = before


def start_failure(tmp_path, exporter: str, *args: str) -> dict[str, str | bool]:
    path = tmp_path / "c.yaml"
    path.write_text(f"exporter: {{{exporter}}}\nlinks: [{{name: a, driver: {{type: simulated-bb84, fiber_length_km: 10}}}}]\n")
    done = subprocess.run([sys.executable, "-m", "qtelemetry", "run", "--config", str(path), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    [record] = [logfmtkv.parse(line, strict=True) for line in done.stderr.splitlines()]
    return record


def test_a_port_in_use_is_one_error_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        record = start_failure(tmp_path, f'listen: "127.0.0.1:{port}"')
    assert (record["msg"], record["address"], record["reason"]) == ("cannot listen", f"127.0.0.1:{port}",
                                                                     "Address already in use")


def test_a_certificate_that_is_not_pem_is_a_tls_error_not_a_listen_error(tmp_path):
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_text("not a certificate\n")
    record = start_failure(tmp_path, "web: {tls_cert_file: tls.crt, tls_key_file: tls.key}", "--listen", "127.0.0.1:0")
    assert (record["msg"], record["field"]) == ("invalid config", "exporter.web")
    assert record["reason"].startswith("cannot set up TLS: ")


# -- every field is a field -------------------------------------------------------------------------

LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}


def _messages_with_data() -> list[str]:
    """Log calls of the package whose message is not one fixed string (``%s`` arguments, an f-string,
    a variable), as ``file:line``. A function that passes its parameter on as the message
    (``_refuse(message, ...)``) is a logging call itself: its callers' messages are checked."""
    trees = {path: ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}
    loggers, bad = set(LOG_METHODS), []
    for _ in range(3):  # forwarders of forwarders
        for tree in trees.values():
            for function in ast.walk(tree):
                if isinstance(function, ast.FunctionDef):
                    params = {a.arg for a in function.args.args}
                    for call in ast.walk(function):
                        if (isinstance(call, ast.Call) and _name(call.func) in loggers and call.args
                                and isinstance(call.args[0], ast.Name) and call.args[0].id in params):
                            loggers.add(function.name)
    for path, tree in trees.items():
        forwarding = {id(call) for function in ast.walk(tree) if isinstance(function, ast.FunctionDef)
                      and function.name in loggers - LOG_METHODS for call in ast.walk(function)}
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and _name(call.func) in loggers and id(call) not in forwarding:
                first = call.args[0] if call.args else None
                fixed = isinstance(first, ast.Constant) and isinstance(first.value, str) and "%" not in first.value
                if not fixed or len(call.args) > 1:
                    bad.append(f"{path.relative_to(PACKAGE.parent)}:{call.lineno}")
    return bad


def _name(func: ast.expr) -> str | None:
    """``log.info`` → info (a method of anything called log, logger, ...), ``_refuse`` → _refuse."""
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and "log" in func.value.id.lower():
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def test_every_log_message_is_fixed_text_and_its_data_are_fields():
    """``log.info("config reloaded links=%d", n)`` puts a field inside msg, where no logfmt parser finds
    it; the data go in ``extra``, one key each."""
    assert _messages_with_data() == []
