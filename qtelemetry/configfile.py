"""Reading config files: bounded size, UTF-8, safe YAML, and problems that say where they are.

A problem is a (where, what) pair: a line and column, or ``(file)`` (``qtelemetry.config`` adds
field paths). A YAML error comes with the offending line and a caret under the spot, on lines
of their own, and the ConfigError names the file (PyYAML would say ``<unicode string>``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, ValidationInfo

from qtelemetry.errors import ConfigError

#: Largest config file read; a 10,000-link config is about 1 MB.
MAX_CONFIG_BYTES = 64 * 2**20


def _from_config_dir(path: Path, info: ValidationInfo) -> Path:
    """Relative paths are taken from the config file's directory, as Prometheus does."""
    return (info.context or {}).get("config_dir", Path.cwd()) / path


def _readable_file(path: Path, info: ValidationInfo) -> Path:
    """An existing, readable regular file (relative to the config file's directory)."""
    path = _from_config_dir(path, info)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ValueError(f"{path} is not a regular file")
        with open(path, "rb"):
            pass
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {str(path)[:200]!r}: {getattr(exc, 'strerror', None) or exc}") from None
    return path


#: Largest token file read; a token is a line of text.
MAX_TOKEN_BYTES = 4096


def read_token(path: Path) -> str:
    """The bearer token in ``path``: one line of visible ASCII; ValueError saying what is wrong."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_TOKEN_BYTES:
        raise ValueError(f"longer than {MAX_TOKEN_BYTES} bytes: not a token file")
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text (a binary file?)") from None
    if not token:
        raise ValueError("the file is empty: an empty token would switch authentication off")
    if not all("!" <= c <= "~" for c in token):
        raise ValueError("the token must be printable ASCII without spaces (it travels in an HTTP header)")
    return token


def _token_file(path: Path) -> Path:
    read_token(path)
    return path


#: A file path in a config, relative to the config file's directory; not checked (read while running).
ConfigPath = Annotated[Path, AfterValidator(_from_config_dir)]
#: A file the config needs at load: it must exist and be readable.
ReadableFile = Annotated[Path, AfterValidator(_readable_file)]
#: A file holding a bearer token (``read_token``), checked at load: what the run would refuse, check-config refuses.
TokenFile = Annotated[Path, AfterValidator(_readable_file), AfterValidator(_token_file)]


_TIMESTAMP = "tag:yaml.org,2002:timestamp"


def config_loader(base: type[yaml.SafeLoader] | type[yaml.CSafeLoader]) -> type:
    """Safe YAML for configs on ``base`` (SafeLoader, or CSafeLoader: libyaml's parser).

    No field is a date, so ``2001-13-45`` stays text; a scalar that does not convert to its tag's
    type (``!!int x``, ``!!bool maybe``, an integer of more than 4,300 digits) stays text too, so the
    model rejects it naming its field; a key given twice in one mapping is an error, not a silent
    override.
    """

    class Loader(base):  # type: ignore[misc, valid-type]
        yaml_implicit_resolvers = {
            first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
            for first, resolvers in base.yaml_implicit_resolvers.items()
        }

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {str(key)[:100]!r}", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    for name in ("null", "bool", "int", "float", "timestamp"):
        Loader.add_constructor(f"tag:yaml.org,2002:{name}", _text_if_unconvertible(base.yaml_constructors[
            f"tag:yaml.org,2002:{name}"]))
    return Loader


def _text_if_unconvertible(construct: Any) -> Any:
    def scalar(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
        try:
            return construct(loader, node)
        except (ValueError, TypeError, AttributeError, OverflowError, LookupError):
            return loader.construct_scalar(node)

    return scalar


ConfigLoader = config_loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def printable(text: str, limit: int = 300) -> str:
    """``text`` on one line, control characters escaped, cut at ``limit`` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit + 1])
    return text if len(text) <= limit else text[:limit] + "…"


def _yaml_problem(exc: yaml.YAMLError, text: str) -> tuple[str, str]:
    """(where, what) of a YAML error: line and column, the problem, the line with a caret under it.

    A problem found at the end of the file (an unclosed bracket) points at where the unclosed
    construct began instead.
    """
    lines = text.splitlines()
    mark, context_mark = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
    if mark is None and context_mark is None:  # a reader error: a character YAML does not allow
        position = getattr(exc, "position", None)
        if position is None:
            return "(yaml)", "invalid YAML: " + printable(str(exc))
        column = position - (text.rfind("\n", 0, position) + 1)
        mark = yaml.Mark("", position, text.count("\n", 0, position), column, None, None)
        char = getattr(exc, "character", 0)
        problem = f"character U+{char if isinstance(char, int) else ord(char[:1] or ' '):04X} is not allowed in YAML"
    else:
        problem = ", ".join(str(p) for p in (exc.context, exc.problem) if p)  # type: ignore[attr-defined]
        mark = mark or context_mark
        if mark.line >= len(lines) or mark.index >= len(text):
            problem += " (at the end of the file)"
            mark = context_mark if context_mark is not None and context_mark.index < len(text) else None
    if mark is None:
        return "(yaml)", f"invalid YAML: {printable(problem)}"
    line = lines[mark.line] if mark.line < len(lines) else ""
    start = max(0, mark.column - 60)
    snippet = printable(line[start: mark.column + 60], 120)
    caret = " " * len(printable(line[start: mark.column], 120)) + "^"
    return f"line {mark.line + 1}, column {mark.column + 1}", f"invalid YAML: {printable(problem)}\n    {snippet}\n    {caret}"


@contextlib.contextmanager
def _collection_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a document is built: its nodes are a million
    young objects, which made it run over and over (half of a 10,000-link config's load)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_yaml(text: str, source: str, loader: type = ConfigLoader) -> Any:
    """Parse config YAML; any problem is a ConfigError with the line, column and a caret."""
    try:
        with _collection_paused():
            return yaml.load(text, Loader=loader)  # noqa: S506 - a config_loader is a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(source, [_yaml_problem(exc, text)]) from None
    except RecursionError:
        raise ConfigError(source, [("(yaml)", "nested too deeply")]) from None
    except (ValueError, TypeError, LookupError, AttributeError, OverflowError) as exc:  # a constructor PyYAML left unguarded
        raise ConfigError(source, [("(yaml)", f"invalid YAML: {printable(str(exc))}")]) from None


def read_text(path: str | Path) -> str:
    """A config file's text; a missing, unreadable, huge or non-UTF-8 file is a ConfigError naming it."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(path), [("(file)", exc.strerror or str(exc))]) from None
    except ValueError as exc:  # a NUL byte in the path
        raise ConfigError(printable(str(path)), [("(file)", str(exc))]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(str(path), [("(file)", f"larger than {MAX_CONFIG_BYTES // 2**20} MiB: not a config file")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(str(path), [("(file)", f"not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line}")]) from None
