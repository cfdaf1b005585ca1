"""The docs' network figure is drawn by a script from the demo's own analysis: the script keeps running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_network_figure_script_draws_the_demo(tmp_path):
    out = tmp_path / "network.png"
    done = subprocess.run([sys.executable, str(DOCS / "network_figure.py"), "--out", str(out), "--seconds", "10"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert (DOCS / "network-demo.png").exists(), "commit the figure the docs show (python docs/network_figure.py)"


def test_plan_network_figure_script_draws_the_worked_example(tmp_path):
    out = tmp_path / "tokyo.png"
    done = subprocess.run([sys.executable, str(DOCS / "plan_network_figure.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert (DOCS / "plan-network-tokyo.png").exists(), "commit the figure the docs show (python docs/plan_network_figure.py)"
