"""Optional dependencies: ``qtelemetry run`` needs none of them; the commands and config sections
that do say which extra brings them (exit code 2), never an ImportError."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from types import ModuleType


class MissingExtra(Exception):
    """An optional dependency is not installed; the message says which extra brings it."""

    def __init__(self, package: str, extra: str):
        super().__init__(f"{package} is not installed: pip install 'qtelemetry[{extra}]' "
                         f"(in a source checkout: pip install -e '.[{extra}]')")


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, which needs the package extra ``extra``; MissingExtra if it can't."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise MissingExtra((exc.name or module).split(".")[0], extra) from None


def check_installed(modules: Iterable[str], extra: str) -> None:
    """MissingExtra for the first of ``modules`` (which ``extra`` brings) that cannot be found,
    without importing any: a config is checked without paying for what it will load."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # its parent package is missing
            found = False
        if not found:
            raise MissingExtra(module.split(".")[0], extra)
