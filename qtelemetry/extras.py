"""Optional dependencies: the exporter needs none of them; ``plan --plot`` and ``generate`` do."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(Exception):
    """An optional dependency is not installed; the message says which extra brings it."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, which needs the package extra ``extra``; MissingExtra if it can't."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        package = (exc.name or module).split(".")[0]
        raise MissingExtra(f"{package} is not installed: pip install 'qtelemetry[{extra}]' "
                           f"(in a source checkout: pip install -e '.[{extra}]')") from None
