"""The two documented installs measured on a fresh copy of the checkout: wall time, venv size on
disk, packages, and the largest of them.

- ``demo``: the pip commands of the README's quick start; then the venv again after the demo
  exporter's first start (Python writes the bytecode of what it imports);
- ``test``: the pip commands of ``.ci/run``'s test line (the README's test command), pytest left out.

Each install gets a new venv made by ``--python`` and a ``git archive`` of ``--ref`` (what a fresh
clone holds); ``--baseline REF`` measures the same install of another commit in the same run and
prints the ratios, since this machine's download and build times are noisy. pip's cache is
whatever the machine has (say so when quoting the time)::

    python bench/install.py demo --python /root/.pyenv/versions/3.13.0/bin/python3 --baseline main
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1e6


@dataclass(frozen=True)
class Install:
    ref: str
    seconds: float
    disk_bytes: int
    packages: int
    largest: list[tuple[str, int]]
    after_run_bytes: int | None  #: demo: the venv once the exporter has started and been scraped


def disk_usage(path: Path) -> int:
    """Bytes of disk the tree takes, as ``du -s`` counts them (allocated blocks, hard links once)."""
    seen, total = set(), 0
    for folder, _, files in os.walk(path):
        for name in [".", *files]:
            status = os.lstat(os.path.join(folder, name))
            if (status.st_dev, status.st_ino) not in seen:
                seen.add((status.st_dev, status.st_ino))
                total += status.st_blocks * 512
    return total


def pip_commands(kind: str, source: Path) -> list[list[str]]:
    """The pip invocations of an install, as the checkout at ``source`` documents them."""
    document = source / ("README.md" if kind == "demo" else ".ci/run")
    line = next(l for l in document.read_text().splitlines() if l.startswith("python3 -m venv"))
    steps = [shlex.split(step) for step in line.split(" && ")]
    return [[Path(step[0]).name, *step[1:]] for step in steps if Path(step[0]).name == "pip"]


def measure(kind: str, ref: str, python: str, work: Path) -> Install:
    source, venv = work / f"src-{ref}", work / f"venv-{ref}"
    source.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    started = time.monotonic()
    for command in pip_commands(kind, source):
        print(f"[{ref}] {shlex.join(command)}", file=sys.stderr, flush=True)
        subprocess.run([str(venv / "bin" / "pip"), *command[1:]], cwd=source, check=True, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    listed = subprocess.run([str(venv / "bin" / "pip"), "list", "--format=json"], check=True,
                            capture_output=True, text=True).stdout
    [site] = (venv / "lib").glob("python3.*/site-packages")
    sizes = sorted(((entry.name, disk_usage(entry)) for entry in site.iterdir()
                    if entry.is_dir() and not entry.name.endswith((".dist-info", "__pycache__"))),
                   key=lambda item: -item[1])
    size = disk_usage(venv)
    return Install(ref, seconds, size, len(json.loads(listed)), sizes[:6],
                   first_run(venv) if kind == "demo" else None)


def first_run(venv: Path) -> int:
    """Start the demo exporter, scrape it once, stop it: the venv's size then."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as in a user's shell
    proc = subprocess.Popen([str(venv / "bin" / "qtelemetry"), "run", "--listen", "127.0.0.1:0"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            if match := re.search(r"url=(\S+)", line):
                urllib.request.urlopen(match.group(1), timeout=30).read()
                break
        else:
            raise RuntimeError(f"the demo exporter exited with {proc.wait()} before serving")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return disk_usage(venv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("demo", "test"))
    parser.add_argument("--python", default=sys.executable, help="interpreter that makes the venv (default: this one)")
    parser.add_argument("--ref", default="HEAD", help="commit to install (default HEAD)")
    parser.add_argument("--baseline", metavar="REF", help="also install this commit, in the same run, for ratios")
    args = parser.parse_args()
    version = subprocess.run([args.python, "--version"], check=True, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="qtelemetry-install-") as tmp:
        results = [measure(args.kind, ref, args.python, Path(tmp)) for ref in filter(None, (args.ref, args.baseline))]
    print(f"{args.kind} install, {version}")
    print(f"{'ref':>10}  {'time':>8}  {'venv':>8}  {'after run':>9}  {'packages':>8}  largest")
    for r in results:
        largest = ", ".join(f"{name} {size / MB:.0f}" for name, size in r.largest)
        after = "-" if r.after_run_bytes is None else f"{r.after_run_bytes / MB:.0f}MB"
        print(f"{r.ref:>10}  {r.seconds:7.0f}s  {r.disk_bytes / MB:6.0f}MB  {after:>9}  {r.packages:8d}  {largest} (MB)")
    if len(results) == 2:
        new, old = results
        print(f"{new.ref} / {old.ref}: time ×{new.seconds / old.seconds:.2f}, disk ×{new.disk_bytes / old.disk_bytes:.2f}")


if __name__ == "__main__":
    main()
