"""``qtelemetry report`` against a broken or hostile Prometheus, and against one without our series.

Every answer below came from a review that fed the report's client what a broken proxy, a
wrong endpoint or a hostile server sends: 8 of its 15 shapes ended in a traceback, a 1.5 GiB
answer grew the process to 4.9 GB, a server dripping one byte every 5 s hung it, and a period
without data crashed with ``KeyError: 'link'`` leaving empty CSVs. Now each bad answer is a
``report failed`` naming what was wrong (exit 1), and a period without data is a report that says
what is missing and what to check (exit 3), without tables.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from hostile import HostileServer, Reply, Shape, body, grid, matrix
from realstack import PROMTOOL_BIN, Prometheus, find_binary, require_binaries

from qtelemetry.cli import main


def series(form: dict[str, str], value: str = "1", **labels: str) -> dict:
    return {"metric": {"link": "metro", **labels}, "values": [[t, value] for t in grid(form)]}


def _text(document: str):
    return lambda path, form: body(document)


SHAPES: dict[str, tuple[Shape, str]] = {
    "a list": (Shape(_text("[1,2,3]")), "the answer: Input should be an object"),
    "data without result": (Shape(_text('{"status": "success", "data": {"resultType": "matrix"}}')),
                            "data.result: Field required"),
    "metric as a string": (Shape(lambda p, f: body(matrix({"metric": "link", "values": [[float(f["start"]), "1"]]}))),
                           "data.result.0.metric: Input should be an object"),
    "empty values": (Shape(lambda p, f: body(matrix({"metric": {"link": "metro"}, "values": []}))),
                     "data.result.0.values: List should have at least 1 item"),
    "non-numeric values": (Shape(lambda p, f: body(matrix(series(f, "lots")))), "sample value 'lots' is not a number"),
    "100k-deep JSON": (Shape(_text("[" * 100_000 + "]" * 100_000)), "recursion limit exceeded"),
    "timestamps outside the range": (Shape(lambda p, f: body(matrix({"metric": {"link": "metro"}, "values": [[0, "1"]]}))),
                                     "timestamp 0.0 is not a step of the queried range"),
    "NaN timestamps": (Shape(lambda p, f: body('{"status": "success", "data": {"resultType": "matrix", "result": '
                                               '[{"metric": {}, "values": [[NaN, "1"]]}]}}')), "timestamp nan"),
    "values as numbers": (Shape(lambda p, f: body(matrix({"metric": {}, "values": [[float(f["start"]), 1]]}))),
                          "data.result.0.values.0.1: Input should be a valid string"),
    "a label value that is no string": (Shape(lambda p, f: body(matrix({"metric": {"link": 5}, "values": []}))),
                                        "data.result.0.metric.link: Input should be a valid string"),
    "a vector, not a matrix": (Shape(_text('{"status": "success", "data": {"resultType": "vector", "result": []}}')),
                               "data.resultType: Input should be 'matrix'"),
    "an HTML error page": (Shape(lambda p, f: Reply(502, [b"<html>Bad gateway\x1b[2J</html>"], content_type="text/html")),
                           r"HTTP 502 without a Prometheus answer (<html>Bad gateway\\x1b[2J</html>)"),
    "an error with terminal escapes": (
        Shape(lambda p, f: Reply(400, [b'{"status": "error", "errorType": "bad_data", "error": "no\\u001b[31m"}'])),
        r"HTTP 400: bad_data: no\\x1b[31m"),
    "an answer that breaks off": (Shape(lambda p, f: Reply(200, [b'{"status": "success", "da'], content_length=1000)),
                                  "no answer from Prometheus at http://127.0.0.1"),
    "series metadata that is no list": (Shape(lambda p, f: body(matrix(series(f))),
                                              _text('{"status": "success", "data": {"metro": "up"}}')),
                                        "data: Input should be a valid array"),
}


def report(url: str, out: Path, *extra: str) -> list[str]:
    return ["report", "--prometheus", url, "--start", "1800000000", "--end", "1800003600", "--step", "5m",
            "--out", str(out), *extra]


def report_from(answer, out: Path, capsys) -> tuple[int, str]:
    """Exit code and stderr of a report (in this process) from a server giving ``answer``."""
    server = HostileServer(answer)
    try:
        code = main(report(server.url, out))
    finally:
        server.stop()
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", SHAPES)
def test_a_bad_answer_is_a_clean_failure_naming_what_was_wrong(name: str, tmp_path: Path, capsys) -> None:
    shape, expected = SHAPES[name]
    code, err = report_from(shape, tmp_path / "out", capsys)
    assert code == 1, err
    assert 'msg="report failed"' in err and expected in err, err
    assert "Traceback" not in err and "\x1b" not in err  # escapes are escaped (logfmt doubles the backslash)
    assert not (tmp_path / "out" / "links.csv").exists()


def test_weird_but_valid_answers_give_a_report(tmp_path: Path, capsys) -> None:
    """Infinite and NaN values, a link name with markup and escapes: numbers as Prometheus
    reports them, text escaped in the page."""
    def answer(path: str, form: dict[str, str]) -> Reply:
        if not path.endswith("query_range"):
            return body({"status": "success", "data": []})
        values = "+Inf" if "key_rate" in form["query"] else "NaN" if "qber" in form["query"] else "1"
        return body(matrix(series(form, values, link="<b>x\x1b</b>", protocol="decoy-bb84")))

    code, err = report_from(answer, tmp_path / "out", capsys)
    assert code == 0, err
    page = (tmp_path / "out" / "report.html").read_text()
    assert "&lt;b&gt;x" in page and "<b>x" not in page


#: ``python -m qtelemetry ARGS`` that writes its peak RSS (kB) to the file named first. The process'
#: own high-water mark (VmHWM, its memory map's since exec), not wait4's ru_maxrss, which also
#: holds the pytest worker's peak (Linux carries it across the fork and exec of a child).
WITH_PEAK = """
import atexit, re, runpy, sys
path = sys.argv.pop(1)
status = lambda: open("/proc/self/status").read()
atexit.register(lambda: open(path, "w").write(re.search(r"VmHWM:\\s+(\\d+)", status()).group(1)))
sys.argv[0] = "qtelemetry"
runpy.run_module("qtelemetry", run_name="__main__")
"""


def test_a_huge_answer_is_cut_off_and_does_not_grow_the_process(tmp_path: Path) -> None:
    """1.5 GiB of well-formed series (any range asked): read up to the cap, asked again in smaller
    chunks down to one step, then refused; the process stays within a few caps of memory."""
    one = b'{"metric": {"link": "metro"}, "values": [[1800000000, "1"]]},'
    total = int(1.5 * 2**30)

    def answer(path: str, form: dict[str, str]) -> Reply:
        head = b'{"status": "success", "data": {"resultType": "matrix", "result": ['
        return Reply(200, (head if i == 0 else one * 4096 for i in range(total // (len(one) * 4096))))

    server = HostileServer(answer)
    peak = tmp_path / "peak-kb"
    try:
        done = subprocess.run([sys.executable, "-c", WITH_PEAK, str(peak), *report(server.url, tmp_path / "out")],
                              stderr=subprocess.PIPE, text=True, timeout=600)
    finally:
        server.stop()
    assert done.returncode == 1, done.stderr
    assert "the answer is over 32 MiB for a single step" in done.stderr and "Traceback" not in done.stderr
    # the imports (pandas, matplotlib) take ~150 MB; the cap is 32 MiB
    assert int(peak.read_text()) * 1024 < 500 * 2**20, peak.read_text()
    assert server.bytes_sent < 0.5 * total  # each request was cut off near the cap, not read to the end


def failed_report(answer, tmp_path: Path, *options: str) -> str:
    """stderr of a report (its own process, bounded by a test timeout) that must fail cleanly."""
    server = HostileServer(answer)
    try:
        result = subprocess.run([sys.executable, "-m", "qtelemetry", *report(server.url, tmp_path / "out"), *options],
                                capture_output=True, text=True, timeout=120)
    finally:
        server.stop()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


def _answer(form: dict[str, str]) -> bytes:
    return json.dumps(matrix(series(form))).encode()


def test_a_server_that_drips_is_cut_off_at_the_query_deadline(tmp_path: Path) -> None:
    """One byte every 0.5 s is never a read timeout; the whole answer has a deadline."""
    def answer(path: str, form: dict[str, str]) -> Reply:
        text = _answer(form)
        return Reply(200, (text[i:i + 1] for i in range(len(text))), pause_s=0.5)

    assert "no complete answer from http://127.0.0.1" in failed_report(answer, tmp_path, "--query-timeout", "3s")


def test_the_whole_report_has_a_deadline(tmp_path: Path) -> None:
    """Each answer takes 1.5 s, well within a query's deadline: the report's own deadline ends it."""
    def answer(path: str, form: dict[str, str]) -> Reply:
        text = _answer(form)
        return Reply(200, [text[:10], text[10:]], pause_s=1.5)

    assert "before the report's deadline" in failed_report(answer, tmp_path, "--timeout", "3s")


@pytest.fixture(scope="module")
def empty_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A real Prometheus that has never scraped anything."""
    require_binaries("prometheus")
    prometheus = Prometheus(tmp_path_factory.mktemp("empty"), [])
    yield prometheus
    prometheus.stop()


#: Two hours of qlink_up under another job, three days ago (backfilled)
OTHER = (time.time() // 3600 - 72) * 3600


@pytest.fixture(scope="module")
def other_job_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A real Prometheus whose only qlink_up series is link metro of job other, three days ago."""
    require_binaries("prometheus", PROMTOOL_BIN)
    work = tmp_path_factory.mktemp("other")
    history = work / "other.om"
    history.write_text("# TYPE qlink_up gauge\n" + "".join(
        f'qlink_up{{job="other",instance="x",link="metro"}} 1 {OTHER + 60 * i:.0f}\n' for i in range(121)) + "# EOF\n")
    blocks = subprocess.run([find_binary(PROMTOOL_BIN), "tsdb", "create-blocks-from", "openmetrics", str(history),
                             str(work / "tsdb")], capture_output=True, text=True)
    assert blocks.returncode == 0, blocks.stderr
    prometheus = Prometheus(work, [], storage=work / "tsdb")
    yield prometheus
    prometheus.stop()


def no_data_report(url: str, out: Path, *options: str) -> str:
    """The no-data report's page (checked: exit 3, a warning, no traceback, no CSV tables)."""
    out.mkdir()
    (out / "links.csv").write_text("link,availability\nold,0.5\n")  # an earlier report's table
    code = main(["report", "--prometheus", url, "--out", str(out), *options])
    assert code == 3
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]  # no CSV of nothing, none left from before
    page = html.unescape((out / "report.html").read_text())
    assert "No data in the period" in page
    return page


def test_a_fresh_prometheus_gives_a_report_saying_there_is_no_data(empty_prometheus, tmp_path: Path, capsys) -> None:
    """The README's own first report, --start now-7d on a fresh Prometheus."""
    page = no_data_report(empty_prometheus.url, tmp_path / "out", "--start", "now-7d")
    err = capsys.readouterr().err
    assert "Traceback" not in err and 'msg="no data in the period' in err
    assert 'no series of qlink_up, qkd_secret_key_rate_bits_per_second' in page
    assert 'matched {job="qtelemetry"}' in page
    assert "Prometheus has no qlink_up series at all: check that it scrapes the exporter" in page


@pytest.mark.parametrize("selector, options, hint", [
    (None, [], 'the selector job="qtelemetry" matches none of the qlink_up series in the period, whose jobs are other'),
    ('job="other"', ["--link", "metro-1Okm"], "--link metro-1Okm: no such link in the period; links with data: metro"),
    ('job="other"', ["--start", str(OTHER + 86400), "--end", str(OTHER + 90000)],
     "Prometheus has qlink_up outside the period only: check --start and --end"),
])
def test_a_period_without_data_says_what_to_check(other_job_prometheus, selector: str | None, options: list[str],
                                                  hint: str, tmp_path: Path, capsys) -> None:
    if selector is not None:
        (tmp_path / "monitoring.yaml").write_text(f"selector: '{selector}'\n")
        options = [*options, "--config", str(tmp_path / "monitoring.yaml")]
    if "--start" not in options:
        options = [*options, "--start", str(OTHER), "--end", str(OTHER + 7200)]
    page = no_data_report(other_job_prometheus.url, tmp_path / "out", *options)
    assert "Traceback" not in capsys.readouterr().err
    assert hint in page, page
