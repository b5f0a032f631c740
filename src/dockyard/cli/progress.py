"""Pull and push progress, printed as the docker CLI prints it.

On a terminal each layer has a line that is rewritten in place (``Downloading
[=====>    ]  1.2MB/2.5MB``); elsewhere (a pipe, a CI log) each change of status is
one plain line and byte counts are left out, so that logs stay readable.
"""

from __future__ import annotations

import sys
from typing import TextIO

from dockyard.cli.formatting import human_size
from dockyard.engine.progress import Event, Status

_BAR_WIDTH = 50
# The statuses that carry byte counts worth a bar.
_MOVING = {Status.DOWNLOADING, Status.EXTRACTING, Status.PUSHING}


def bar(current: int, total: int) -> str:
    """``[=====>     ]  1.2MB/2.5MB``, as docker draws it."""
    filled = int(_BAR_WIDTH * min(current, total) / total) if total else 0
    arrow = ">" if filled < _BAR_WIDTH else "="
    body = ("=" * filled + arrow).ljust(_BAR_WIDTH)[:_BAR_WIDTH]
    return f"[{body}] {human_size(current):>8}/{human_size(total)}"


class ProgressPrinter:
    """A ``Progress`` callback that prints events; ``quiet`` prints nothing."""

    def __init__(self, out: TextIO | None = None, *, quiet: bool = False,
                 tty: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.quiet = quiet
        self.tty = self.out.isatty() if tty is None else tty
        self._lines: list[str] = []  # the ids with a line of their own, in order
        self._last: dict[str, str] = {}

    def __call__(self, event: Event) -> None:
        if self.quiet:
            return
        if event.status in (Status.RESOLVING, Status.DIGEST):
            return  # the command prints what it pulls, and the digest, itself
        text = str(event.status)
        if event.status in _MOVING and event.current is not None and event.total:
            moving = f"{text} {bar(event.current, event.total)}"
        else:
            moving = text
        if self.tty:
            self._redraw(event.id, f"{event.id}: {moving}")
        elif self._last.get(event.id) != text:
            self._last[event.id] = text
            self._plain(f"{event.id}: {text}")

    def _plain(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def _redraw(self, key: str, line: str) -> None:
        if key not in self._lines:
            self._lines.append(key)
            self.out.write(line + "\n")
        else:
            up = len(self._lines) - self._lines.index(key)
            # Up to the layer's line, clear it, write, and back down.
            self.out.write(f"\x1b[{up}A\r\x1b[2K{line}\x1b[{up}B\r")
        self.out.flush()
