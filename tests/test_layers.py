"""The package's layers, from the import graph: nothing runs back up.

From the bottom: the estimation core (physics and statistics), the drivers with the file formats
they read (``drivers.formats``), then the runtime, the exporter, monitoring and the verbs. Every
import statement of every module counts, those inside functions and ``TYPE_CHECKING`` blocks too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qtelemetry"
#: What sits above the drivers, the formats and the estimation core.
ABOVE = ("runtime", "exporter", "monitoring", "report", "recording", "cli", "devices", "planner", "sharding")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, source: str | None = None) -> set[str]:
    """Every qtelemetry module ``path`` (or ``source`` as if it were there) imports, relative imports resolved."""
    package = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[:len(package) - node.level + 1], *([base] if base else [])])
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "qtelemetry" or name.startswith("qtelemetry.")}


def modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (PACKAGE / package).rglob("*.py"))


def reaches(name: str, layers: tuple[str, ...]) -> bool:
    return any(name == f"qtelemetry.{layer}" or name.startswith(f"qtelemetry.{layer}.") for layer in layers)


@pytest.mark.parametrize("path", modules("drivers", "estimation"), ids=lambda p: module_name(p))
def test_drivers_formats_and_estimation_import_nothing_above_them(path):
    assert not [name for name in imports(path) if reaches(name, ABOVE)]


@pytest.mark.parametrize("path", modules("estimation"), ids=lambda p: module_name(p))
def test_the_estimation_core_imports_no_driver(path):
    assert not [name for name in imports(path) if reaches(name, ("drivers",))]


@pytest.mark.parametrize("path", modules("drivers/formats"), ids=lambda p: module_name(p))
def test_file_formats_do_not_import_the_drivers_that_read_them(path):
    assert not [name for name in imports(path) if reaches(name, ("drivers.replay", "drivers.event_files"))]


def test_the_walk_sees_imports_inside_functions_and_relative_ones():
    source = "from . import recording\ndef f():\n    from qtelemetry.runtime import engine\n    import qtelemetry.cli\n"
    found = imports(PACKAGE / "drivers" / "formats" / "probe.py", source)
    assert found == {"qtelemetry.drivers.formats.recording", "qtelemetry.runtime.engine", "qtelemetry.cli"}
