"""``qtelemetry fault`` against an endpoint that is not the exporter it expects.

The third review found the client printing error bodies raw (a terminal ran their escapes),
reporting a nonsense 200 as success, and reading answers without a cap (711 MB for a 300 MB
answer). Now what it prints is escaped and cut, an answer of the wrong shape is a failure, and
it reads at most 64 KiB.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile import HostileServer, Reply

from qtelemetry.cli import main


def fault(url: str, tmp_path: Path, action: str = "inject") -> list[str]:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    args = ["fault", action, "--url", url, "--token-file", str(token), "--link", "metro"]
    return args + (["--kind", "fiber-cut"] if action == "inject" else [])


def run(reply: Reply, tmp_path: Path, capsys, action: str = "inject") -> tuple[int, str, HostileServer]:
    server = HostileServer(lambda path, form: reply)
    try:
        code = main(fault(server.url, tmp_path, action))
    finally:
        server.stop()
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out + captured.err, server


def test_error_bodies_are_printed_escaped(tmp_path, capsys):
    code, printed, _ = run(Reply(400, ["no such link\x1b[2J\u2028forged\r\n".encode()]), tmp_path, capsys)
    assert code == 1 and "400 no such link\\x1b[2J\\u2028forged" in printed
    assert "\x1b" not in printed and "\u2028" not in printed


@pytest.mark.parametrize("action, answer, said", [
    ("inject", b"{}", "kind: Field required"),
    ("inject", b"<html>ok</html>", "not the exporter's answer (the answer: Invalid JSON"),
    ("inject", b'{"kind": "fiber-cut", "magnitude": "3"}', "magnitude: Input should be a valid number"),
    ("clear", b"[1]", "not the exporter's answer (the answer: Input should be an object"),
    ("clear", b'{"ended": -1}', "ended: Input should be greater than or equal to 0"),
    ("clear", b'{"ended": true}', "ended: Input should be a valid integer"),
])
def test_a_nonsense_200_is_a_failure(action, answer, said, tmp_path, capsys):
    code, printed, _ = run(Reply(200, [answer]), tmp_path, capsys, action)
    assert code == 1 and said in printed, printed
    assert "injected" not in printed and "ended" not in printed.split("error:")[0]


@pytest.mark.parametrize("status", [200, 500])
def test_answers_are_read_with_a_cap(status, tmp_path, capsys):
    """A 300 MB answer: at most 64 KiB is read, the rest is never sent for."""
    chunk = b"x" * 2**20
    code, printed, server = run(Reply(status, (chunk for _ in range(300))), tmp_path, capsys)
    assert code == 1 and "longer than 65536 bytes" in printed, printed
    assert server.bytes_sent < 50 * 2**20
