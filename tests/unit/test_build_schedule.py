"""The order stages are built in (``schedule.build_stages``): a stage after those it
needs, independent ones at once, each stage's output kept together, the first failure
raised once the others have stopped."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

from dockyard.build.schedule import build_stages


@pytest.fixture
def out(tmp_path: Path) -> Iterator[TextIO]:
    with open(tmp_path / "out", "w+") as f:
        yield f


def _read(out: TextIO) -> list[str]:
    out.flush()
    out.seek(0)
    return out.read().splitlines()


def test_independent_stages_run_at_once_and_their_lines_stay_together(
        out: TextIO, tmp_path: Path) -> None:
    both = threading.Barrier(2, timeout=10)  # broken unless 0 and 1 run at once
    seen: list[int] = []

    def build(index: int, stream: TextIO) -> None:
        stream.write(f"{index} starts\n")
        if index in (0, 1):
            both.wait()
        stream.write(f"{index} ends\n")
        seen.append(index)

    build_stages([0, 1, 2], {0: set(), 1: set(), 2: {0, 1}}, build, out,
                 cancel=lambda: None, spool_dir=str(tmp_path))
    assert seen[-1] == 2
    lines = _read(out)
    first, second = sorted(lines[:4:2])
    assert [first, second] == ["0 starts", "1 starts"]
    for i in (0, 2):  # each stage's two lines, one after the other
        assert lines[i].split()[0] == lines[i + 1].split()[0]
    assert lines[4:] == ["2 starts", "2 ends"]


def test_the_first_failure_is_raised_after_the_others_stop(
        out: TextIO, tmp_path: Path) -> None:
    cancelled = threading.Event()

    def build(index: int, stream: TextIO) -> None:
        stream.write(f"{index} runs\n")
        if index == 1:
            raise RuntimeError("stage 1 failed")
        if index == 0:
            assert cancelled.wait(10)  # stopped by cancel, as the builder's are
            raise KeyError("stopped")
        raise AssertionError("stage 2 needs 1: it must not start")

    with pytest.raises(RuntimeError, match="stage 1 failed"):
        build_stages([0, 1, 2], {0: set(), 1: set(), 2: {1}}, build, out,
                     cancel=cancelled.set, spool_dir=str(tmp_path))
    assert sorted(_read(out)) == ["0 runs", "1 runs"]  # the spooled output too


def test_a_chain_runs_in_the_calling_thread(out: TextIO, tmp_path: Path) -> None:
    threads: list[str] = []

    def build(index: int, stream: TextIO) -> None:
        assert stream is out
        threads.append(threading.current_thread().name)

    build_stages([0, 1, 2], {0: set(), 1: {0}, 2: {1}}, build, out, cancel=lambda: None,
                 spool_dir=str(tmp_path))
    assert threads == [threading.main_thread().name] * 3
