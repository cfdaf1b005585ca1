"""Check generated JSON/YAML against a project's published TypeScript types with ``tsc``.

Several upstreams publish their data model on npm (Grafana's ``@grafana/schema``; the Prometheus
operator's API as ``@kubernetes-models/prometheus-operator``). The pinned packages are installed
with npm into a folder under pytest's cache (``.pytest_cache/d/``, reused while the versions
match; never committed). Each object is written as a typed object literal, so ``tsc --noEmit``
reports stray fields (excess-property checks), missing required ones and wrong enum values.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

TS_ERROR = re.compile(r"^(\w+)\.ts\((\d+),\d+\): error (TS\d+: .*)$", re.M)


def npm_toolchain(cache: Path, packages: dict[str, str], purpose: str) -> Path:
    """``cache`` with ``node_modules`` holding the pinned ``packages``, installed by npm on first use.

    Skipped locally without node and npm, a failure in CI (the machines have them)."""
    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        reason = f"node and npm are needed for {purpose}: install nodejs and npm"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}", pytrace=False)
        pytest.skip(reason)
    stamp = cache / "installed.json"
    if not stamp.exists() or json.loads(stamp.read_text()) != packages:
        (cache / "package.json").write_text(json.dumps({"private": True, "dependencies": packages}))
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
                              cwd=cache, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"npm install failed:\n{done.stdout}{done.stderr}"
        stamp.write_text(json.dumps(packages))
    return cache


def tsc_errors(work: Path, sources: dict[str, tuple[str, list[str]]]) -> dict[str, list[str]]:
    """Type-check each source (stem -> (TypeScript text, what each line holds)) in ``work`` (which
    has ``typescript`` installed); the errors of each, named by what the failing line holds.

    Fails on any tsc output that is not an error in one of the sources (a broken setup must not
    pass as "no errors")."""
    for stem, (text, _) in sources.items():
        (work / f"{stem}.ts").write_text(text)
    (work / "tsconfig.json").write_text(json.dumps({
        "compilerOptions": {"strict": True, "noEmit": True, "module": "nodenext", "moduleResolution": "nodenext",
                            "target": "es2022", "types": [], "skipLibCheck": True},
        "files": [f"{stem}.ts" for stem in sources]}))
    done = subprocess.run(["node", "node_modules/typescript/bin/tsc", "-p", "tsconfig.json"], cwd=work,
                          capture_output=True, text=True, timeout=300)
    errors: dict[str, list[str]] = {stem: [] for stem in sources}
    for stem, line, message in TS_ERROR.findall(done.stdout):
        errors[stem].append(f"{sources[stem][1][int(line) - 1]}: {message[:300]}")
    unparsed = [l for l in done.stdout.splitlines() if l.strip() and not TS_ERROR.match(l) and not l.startswith(" ")]
    assert not unparsed and not done.stderr.strip(), done.stdout + done.stderr
    return errors
