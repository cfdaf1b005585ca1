"""Run a document's runnable shell blocks exactly as written (see docs/writing-docs.md).

A fenced ``sh`` block preceded by ``<!-- runnable -->`` runs in a fresh ``bash`` with the venv
activated, from the root of a copy of the checkout, and must exit 0 within its timeout.
``<!-- runnable: background ready="REGEX" -->`` starts a long-running command (``qtelemetry run``)
and waits until its output matches REGEX; it runs until the document's last block has run.
Options: ``timeout=SECONDS`` (default 120; for a background block, the wait for REGEX).

    python tests/docblocks.py DOCUMENT CHECKOUT_COPY

runs one document's blocks in order; the test runs it in its own network namespace
(``unshare``), so the documents' fixed ports (9817, ...) never meet another test's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MARKER = re.compile(r"<!--\s*runnable(?::(?P<options>.*?))?\s*-->")
FENCE = re.compile(r"(`{3,}|~{3,})")
DEFAULT_TIMEOUT = 120.0


@dataclass(frozen=True)
class Block:
    line: int  # of the marker, 1-based
    body: str
    background: bool
    ready: str | None
    timeout: float


def blocks(text: str) -> list[Block]:
    """The runnable blocks of a Markdown text, in order (markers inside code blocks are examples,
    not markers); a malformed marker is a ValueError."""
    lines, found, fence, i = text.split("\n"), [], None, 0
    while i < len(lines):
        line = lines[i].strip()
        if fence:
            fence = None if line == fence else fence
        elif opening := FENCE.match(line):
            fence = opening.group(1)
        elif line.startswith("<!-- runnable"):
            found.append(_block(lines, i))
            i = i + 2 + found[-1].body.count("\n") + 1  # the closing fence
        i += 1
    return found


def _block(lines: list[str], i: int) -> Block:
    marker = MARKER.fullmatch(lines[i].strip())
    if not marker or i + 1 >= len(lines) or lines[i + 1] not in ("```sh", "```bash") or "```" not in lines[i + 2:]:
        raise ValueError(f"line {i + 1}: a runnable marker is one line, right before a fenced sh block")
    words = shlex.split(marker["options"] or "")
    options = dict(word.split("=", 1) if "=" in word else (word, "") for word in words)
    if set(options) - {"background", "ready", "timeout"} or ("background" in options) != ("ready" in options):
        raise ValueError(f"line {i + 1}: runnable options {sorted(options)}: a background block needs "
                         "ready=REGEX, the other option is timeout=SECONDS")
    body = lines[i + 2: lines.index("```", i + 2)]
    return Block(i + 1, "\n".join(body), "background" in options, options.get("ready"),
                 float(options.get("timeout", DEFAULT_TIMEOUT)))


def fresh_shell_env() -> dict[str, str]:
    """The environment of a new login shell: nothing of this interpreter's venv on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    venv = Path(sys.prefix).resolve()
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and not Path(p).resolve().is_relative_to(venv))
    return env


def shell(block: Block) -> list[str]:
    return ["bash", "-e", "-o", "pipefail", "-c", ". .venv/bin/activate\n" + block.body]


def run(document: Path, checkout: Path) -> int:
    """Run the document's blocks in ``checkout``; print each block's output; 1 at the first failure."""
    env, background = fresh_shell_env(), []
    try:
        for n, block in enumerate(blocks(document.read_text()), 1):
            print(f"--- {document.name}:{block.line} (block {n}{', background' if block.background else ''})\n"
                  f"{block.body}", flush=True)
            if block.background:
                log = checkout / f".runnable-{n}.log"
                with log.open("w") as out:
                    proc = subprocess.Popen(shell(block), cwd=checkout, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
                background.append(proc)
                deadline = time.monotonic() + block.timeout
                while not re.search(block.ready, log.read_text()):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        print(log.read_text() + f"\nFAILED: no output matching {block.ready!r} "
                              f"({'exited ' + str(proc.returncode) if proc.poll() is not None else 'timeout'})")
                        return 1
                    time.sleep(0.1)
                continue
            proc = subprocess.Popen(shell(block), cwd=checkout, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, start_new_session=True)
            try:
                print(proc.communicate(timeout=block.timeout)[0], end="")
            except subprocess.TimeoutExpired:
                stop(proc)
                print(f"{proc.communicate()[0]}\nFAILED: still running after {block.timeout:g} s")
                return 1
            if proc.returncode:
                print(f"FAILED: exit code {proc.returncode}")
                return 1
        return 0
    finally:
        for proc in background:
            stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """End a block's whole process group (the shell and what it started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


if __name__ == "__main__":
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)  # a new network namespace starts with it down
    sys.exit(run(Path(sys.argv[1]), Path(sys.argv[2])))
