"""A container's log in Docker's ``json-file`` format, rotated by size.

One JSON object per line, exactly what dockerd writes, so that ``docker logs``-style
readers (and people who grep the file) need nothing new::

    {"log":"hello\\n","stream":"stdout","time":"2024-05-01T10:00:00.123456789Z"}

How the bytes a container writes become entries, as dockerd's log copier does it:

- Output is cut at each newline; the entry keeps its ``\\n``. A pty's output ends its
  lines with ``\\r\\n``, and so do its entries (dockerd does not clean them either).
- A line longer than 16 KiB (dockerd's copier buffer) is written as several entries;
  all but the last have no ``\\n``: readers join entries until one ends with it.
- Bytes without a newline wait for more; when the stream ends they are written as a
  last entry without ``\\n`` (a "partial" line).
- ``time`` is when the bytes were read, in UTC, Go's RFC3339Nano (trailing zeros of
  the fraction dropped). ``log`` is the text as UTF-8, invalid bytes replaced by
  U+FFFD, escaped as Go's encoding/json does (``<``, ``>``, ``&``, U+2028 and U+2029
  as ``\\uXXXX``; control characters other than ``\\n``, ``\\r``, ``\\t`` likewise).

Rotation follows json-file's ``max-size`` / ``max-file``: before an entry is written,
a file that reached ``max_size`` bytes becomes ``LOG.1`` (``LOG.1`` becomes ``LOG.2``...,
the oldest beyond ``max_files - 1`` is dropped) and a new ``LOG`` is started; with
``max_files == 1`` the file is truncated instead. A file may so exceed ``max_size`` by
one entry, as dockerd's do. dockyard's default is 10 MiB x 3 files: dockerd's own
default keeps everything forever (a full disk is a worse failure than lost old lines),
its ``local`` driver keeps 20 MiB x 5.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time

DEFAULT_MAX_SIZE = 10 << 20
DEFAULT_MAX_FILES = 3

# dockerd's copier reads into a 16 KiB buffer and cuts a longer line at its end.
MAX_ENTRY = 16 * 1024

# What Go's encoding/json escapes and Python's json does not, or spells differently.
_GO_ESCAPES = re.compile(r'\\\\|\\b|\\f|[<>&\u2028\u2029]')
_GO_FORMS = {"\\\\": "\\\\", "\\b": "\\u0008", "\\f": "\\u000c", "<": "\\u003c",
             ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def rfc3339nano(ns: int) -> str:
    """A time in ns since the epoch as Go's ``time.RFC3339Nano`` prints it in UTC."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def encode_entry(data: bytes, stream: str, ns: int) -> bytes:
    """One json-file line (newline included) for ``data`` read from ``stream``."""
    text = json.dumps(data.decode("utf-8", "replace"), ensure_ascii=False)
    # The regex sees "\\" pairs first, so an escaped backslash followed by "b" is kept.
    text = _GO_ESCAPES.sub(lambda m: _GO_FORMS[m.group()], text)
    return f'{{"log":{text},"stream":"{stream}","time":"{rfc3339nano(ns)}"}}\n'.encode()


class JsonFileLog:
    """The log file of one container, fed with the raw output of each of its streams.

    Each entry is written with one ``write(2)``, unbuffered: what was read before the
    monitor is killed is on disk.
    """

    def __init__(self, path: str, max_size: int = DEFAULT_MAX_SIZE,
                 max_files: int = DEFAULT_MAX_FILES) -> None:
        self.path = path
        self.max_size = max_size
        self.max_files = max_files
        self._pending: dict[str, bytes] = {}  # per stream: a line not ended yet
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size

    def write(self, stream: str, data: bytes) -> None:
        """Log bytes just read from ``stream`` (``stdout`` or ``stderr``)."""
        buf = self._pending.pop(stream, b"") + data
        now = time.time_ns()
        start = 0
        while True:
            end = buf.find(b"\n", start, start + MAX_ENTRY)
            if end >= 0:
                self._entry(stream, buf[start:end + 1], now)
                start = end + 1
            elif len(buf) - start >= MAX_ENTRY:
                self._entry(stream, buf[start:start + MAX_ENTRY], now)
                start += MAX_ENTRY
            else:
                break
        if start < len(buf):
            self._pending[stream] = buf[start:]

    def end(self, stream: str) -> None:
        """``stream`` was closed: write what is left of its last line, without newline."""
        rest = self._pending.pop(stream, b"")
        if rest:
            self._entry(stream, rest, time.time_ns())

    def close(self) -> None:
        """End every stream and close the file."""
        for stream in list(self._pending):
            self.end(stream)
        os.close(self._fd)

    def _entry(self, stream: str, message: bytes, ns: int) -> None:
        if self._size >= self.max_size:
            self._rotate()
        line = encode_entry(message, stream, ns)
        os.write(self._fd, line)
        self._size += len(line)

    def _rotate(self) -> None:
        if self.max_files <= 1:
            os.ftruncate(self._fd, 0)
            self._size = 0
            return
        os.close(self._fd)
        for n in range(self.max_files - 1, 0, -1):
            older = f"{self.path}.{n - 1}" if n > 1 else self.path
            with contextlib.suppress(FileNotFoundError):
                os.rename(older, f"{self.path}.{n}")
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                           0o640)
        self._size = 0
