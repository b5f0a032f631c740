"""Output the way the docker CLI prints it: sizes, ages, tables and ``--format``.

``--format`` takes Go templates, run by ``dockyard.cli.gotemplate``. As in docker, a
listing's format (``ps``, ``images``...) may start with ``table``, which prints
aligned columns under titles, and understands the ``\\t`` and ``\\n`` escapes; the
formats of ``inspect -f``, ``version`` and ``events`` are taken as they are. A
template that does not parse is docker's ``template parsing error: ...``, exit 64
where docker exits 64 (inspect, version, events), 1 for a listing.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from dockyard.cli.gotemplate import Template, TemplateError, parse
from dockyard.errors import InvalidArgument

_ESCAPES = {"\\t": "\t", "\\n": "\n"}


class TemplateSyntaxError(InvalidArgument):
    """A template that does not parse: docker's ``cli.StatusError`` with status 64."""

    exit_code = 64


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


def _template(source: str, *, header: bool = False) -> Template:
    try:
        return parse(source, header)
    except TemplateError as e:
        raise TemplateSyntaxError(f"template parsing error: {e}") from None


def _execute(template: Template, data: Any) -> str:
    try:
        return template.execute(data)
    except TemplateError as e:
        raise InvalidArgument(f"template parsing error: {e}") from None


def render(template: str, data: Mapping[str, Any]) -> str:
    """Fill one Go template with ``data``, as ``inspect -f``, ``version --format`` and
    ``events --format`` do: the text is taken as it is (no ``\\t`` escapes)."""
    return _execute(_template(template), data)


def check(template: str) -> None:
    """Refuse a template that does not parse, before there is anything to fill it with
    (``events --format`` with no event yet fails as docker's does)."""
    _template(template)


class _Titles(dict[str, str]):
    """The data of a table's header row: every field name gives its column title."""

    def __init__(self, titles: Mapping[str, str]) -> None:
        super().__init__(titles)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str)

    def __missing__(self, key: str) -> str:
        return key.upper()


def _align(lines: list[list[str]], minwidth: int, padding: int) -> list[str]:
    """Go's text/tabwriter: each line's cells but the last are tab-terminated, and a
    column is aligned over each block of consecutive lines that have a cell in it."""
    widths: list[int] = []
    out: list[str] = [""] * len(lines)

    def write(start: int, end: int) -> None:
        for n in range(start, end):
            out[n] = "".join(cell.ljust(widths[j]) if j < len(widths) else cell
                             for j, cell in enumerate(lines[n]))

    def block(start: int, end: int) -> None:
        column = len(widths)
        this = start
        while this < end:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write(start, this)
            start = this
            width = minwidth
            while this < end and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            block(start, this)
            widths.pop()
            start = this
        write(start, end)

    block(0, len(lines))
    return out


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    """Columns padded like Go's tabwriter in docker: at least three spaces between."""
    lines = _align([list(headers), *[list(r) for r in rows]], 0, 3)
    return "\n".join(line.rstrip() for line in lines)


def format_rows(items: Sequence[Mapping[str, Any]], fmt: str | None, default: str,
                headers: Mapping[str, str]) -> str:
    """Print ``items`` with ``--format fmt`` or the command's ``default`` table format.

    ``headers`` maps a field name to its column title (``ID`` to ``IMAGE ID``); a field
    without one gets its name in capitals, as docker does.
    """
    source = fmt if fmt else default
    if source == "json":
        return "\n".join(json.dumps(item, separators=(",", ":")) for item in items)
    is_table = source.startswith("table")
    if is_table:
        source = source[len("table"):].strip(" ") or default[len("table"):]
    source = source.strip(" ")
    for escape, char in _ESCAPES.items():
        source = source.replace(escape, char)
    try:
        template = _template(source)
    except TemplateSyntaxError as e:
        raise InvalidArgument(str(e)) from None  # docker's listings exit 1, not 64
    rows = [_execute(template, item) for item in items]
    if not is_table:
        return "\n".join(rows)
    # docker renders the titles with the same template over a map of titles, and with
    # functions that leave them as they are; an error there only cuts the row short.
    title: list[str] = []
    with contextlib.suppress(TemplateError):
        _template(source, header=True).execute(_Titles(headers), title)
    text = "\n".join(["".join(title), *rows])
    return "\n".join(_align([line.split("\t") for line in text.split("\n")], 10, 3))


def print_inspected(found: Sequence[Mapping[str, Any]], failed: Sequence[str],
                    fmt: str | None) -> int:
    """What every ``inspect`` prints: a JSON array (or ``--format`` per object), then one
    ``Error:`` line per name not found; exit 1 if there was one."""
    if fmt and fmt != "json":
        template = _template(fmt)
        for item in found:
            print(_execute(template, item))
    else:
        print(json.dumps(list(found), indent=4))
    for message in failed:
        print(f"Error: {message}", file=sys.stderr)
    return 1 if failed else 0
