"""Pull/push progress as the docker CLI prints it, on a terminal and in a log."""

from __future__ import annotations

import io

from dockyard.cli.progress import ProgressPrinter, bar
from dockyard.engine.progress import Event, Status


def test_bar_like_docker() -> None:
    assert bar(0, 100) == "[>" + " " * 49 + "]       0B/100B"
    assert bar(50, 100).startswith("[" + "=" * 25 + ">")
    assert bar(100, 100) == "[" + "=" * 50 + "]     100B/100B"


def test_plain_output_prints_each_status_once() -> None:
    out = io.StringIO()
    show = ProgressPrinter(out, tty=False)
    show(Event("docker.io/library/busybox:latest", Status.RESOLVING))
    for n in (0, 10, 20):
        show(Event("a3ed95caeb02", Status.DOWNLOADING, n, 20))
    show(Event("a3ed95caeb02", Status.PULL_COMPLETE))
    show(Event("b1c2d3e4f5a6", Status.ALREADY_EXISTS))
    assert out.getvalue().splitlines() == [
        "a3ed95caeb02: Downloading", "a3ed95caeb02: Pull complete",
        "b1c2d3e4f5a6: Already exists"]


def test_terminal_output_rewrites_each_layers_line() -> None:
    out = io.StringIO()
    show = ProgressPrinter(out, tty=True)
    show(Event("aaaaaaaaaaaa", Status.WAITING))
    show(Event("bbbbbbbbbbbb", Status.WAITING))
    show(Event("aaaaaaaaaaaa", Status.DOWNLOADING, 5, 10))
    text = out.getvalue()
    assert text.startswith("aaaaaaaaaaaa: Waiting\nbbbbbbbbbbbb: Waiting\n")
    # Two lines up, clear, the new text, two lines down.
    assert "\x1b[2A\r\x1b[2Kaaaaaaaaaaaa: Downloading [" in text and text.endswith("\x1b[2B\r")


def test_quiet_prints_nothing() -> None:
    out = io.StringIO()
    ProgressPrinter(out, quiet=True)(Event("a", Status.PULL_COMPLETE))
    assert out.getvalue() == ""
