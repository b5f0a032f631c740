"""Output the way the docker CLI prints it: sizes, ages, tables and ``--format``.

``--format`` takes Go templates in docker; the subset here covers what people write
on the command line: ``{{.Field}}`` (and ``{{.A.B}}``), ``{{json .}}`` and
``{{json .Field}}``, ``{{index .Map "key"}}``, ``{{lower .F}}``/``{{upper .F}}``,
``{{.F | json}}``, and the ``table`` prefix, which prints aligned columns under
headers. Anything else is refused with a clear error instead of printing something
wrong.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dockyard.errors import InvalidArgument

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")
_ESCAPES = {"\\t": "\t", "\\n": "\n"}


def human_size(size: float, *, binary: bool = False) -> str:
    """docker's sizes: decimal units (``4.261MB``), or with ``binary`` its
    ``BytesSize`` (``1.5MiB``), both with four significant digits."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB") if binary else \
        ("B", "kB", "MB", "GB", "TB", "PB")
    step = 1024 if binary else 1000
    index = 0
    while size >= step and index < len(units) - 1:
        size /= step
        index += 1
    return f"{size:.4g}{units[index]}"


def human_duration(seconds: float) -> str:
    """What docker prints for a duration: ``Less than a second``, ``2 hours``..."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def ago(timestamp: float, now: float | None = None) -> str:
    """``2 hours ago``, for a Unix timestamp."""
    return human_duration((now if now is not None else time.time()) - timestamp) + " ago"


def _lookup(value: Any, path: str) -> Any:
    for name in filter(None, path.split(".")):
        if isinstance(value, Mapping) and name in value:
            value = value[name]
        else:
            raise InvalidArgument(f"template: can't evaluate field {name}")
    return value


def _text(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(_text(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{_text(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "json": lambda v: json.dumps(v, separators=(",", ":")),
    "lower": lambda v: str(v).lower(),
    "upper": lambda v: str(v).upper(),
    "index": lambda m, k: m.get(k) if isinstance(m, Mapping) else None,
}


def _argument(token: str, data: Mapping[str, Any]) -> Any:
    if token.startswith("."):
        return _lookup(data, token)
    if token.startswith('"') and token.endswith('"') and len(token) >= 2:
        return token[1:-1]
    raise InvalidArgument(f"template: unsupported argument {token!r}")


def _evaluate(action: str, data: Mapping[str, Any]) -> Any:
    stages = [s.strip() for s in action.split("|")]
    value: Any = None
    for i, stage in enumerate(stages):
        words = stage.split()
        if not words:
            raise InvalidArgument(f"template: empty action in {{{{{action}}}}}")
        if words[0] in _FUNCTIONS:
            args = [_argument(w, data) for w in words[1:]]
            if i > 0:
                args.append(value)
            value = _FUNCTIONS[words[0]](*args)
        elif len(words) == 1 and i == 0:
            value = _argument(words[0], data)
        else:
            raise InvalidArgument(f"template: function {words[0]!r} not defined")
    return value


def render(template: str, data: Mapping[str, Any]) -> str:
    """Fill one Go-style template with ``data``."""
    for escape, char in _ESCAPES.items():
        template = template.replace(escape, char)
    out = []
    position = 0
    for match in _ACTION.finditer(template):
        out.append(template[position:match.start()])
        value = _evaluate(match.group(1), data)
        out.append(value if isinstance(value, str) else _text(value))
        position = match.end()
    out.append(template[position:])
    return "".join(out)


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    """Columns padded like Go's tabwriter in docker: at least three spaces between."""
    all_rows = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(headers))]
    lines = []
    for row in all_rows:
        cells = [cell.ljust(widths[i] + 3) if i < len(row) - 1 else cell
                 for i, cell in enumerate(row)]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)


def format_rows(items: Sequence[Mapping[str, Any]], fmt: str | None, default: str,
                headers: Mapping[str, str]) -> str:
    """Print ``items`` with ``--format fmt`` or the command's ``default`` table format.

    ``headers`` maps a field name to its column title (``ID`` to ``IMAGE ID``); a field
    without one gets its name in capitals, as docker does.
    """
    template = fmt if fmt else default
    if template == "json":
        return "\n".join(json.dumps(item, separators=(",", ":")) for item in items)
    if not template.startswith("table"):
        return "\n".join(render(template, item) for item in items)
    body = template[len("table"):].strip() or default[len("table"):].strip()
    for escape, char in _ESCAPES.items():
        body = body.replace(escape, char)
    columns = body.split("\t")
    titles = []
    for column in columns:
        fields = re.findall(r"\{\{\s*\.(\w+)\s*\}\}", column)
        titles.append(" ".join(headers.get(f, f.upper()) for f in fields) or column)
    rows = [[render(column, item) for column in columns] for item in items]
    return table(rows, titles)


def print_inspected(found: Sequence[Mapping[str, Any]], failed: Sequence[str],
                    fmt: str | None) -> int:
    """What every ``inspect`` prints: a JSON array (or ``--format`` per object), then one
    ``Error:`` line per name not found; exit 1 if there was one."""
    if fmt:
        for item in found:
            print(render(fmt, item))
    else:
        print(json.dumps(list(found), indent=4))
    for message in failed:
        print(f"Error: {message}", file=sys.stderr)
    return 1 if failed else 0
