"""Building the stages a target needs, those that do not depend on each other at once.

A stage is ready once the stages it names (its base, ``COPY --from``, ``RUN --mount
from``) are built. Threads: much of a step's time is in other processes and the
kernel (RUN's containers, mounts, zlib's compression without the GIL), though the
Python work of the steps (the layer diffs, the runtime's setup) still takes turns:

    ready: one, nothing running   built in the calling thread, its output on ``out``
    ready: several                each in a thread of its own; the first of them
                                  started while no stage writes to ``out`` writes
                                  there live, the others to a spool file each,
                                  copied to ``out`` whole once they end and no
                                  stage is live

so the output of each stage stays together. When one fails, ``cancel`` is called
(the builder stops the others' running containers and their next steps), no stage is
started any more, the others are waited for, and the first error is raised; the
spools are copied out first, so that the failing step's output is shown.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TextIO

__all__ = ["build_stages"]


def build_stages(order: Sequence[int], deps: Mapping[int, Collection[int]],
                 build: Callable[[int, TextIO], None], out: TextIO, *,
                 cancel: Callable[[], None], spool_dir: str) -> None:
    """Run ``build(stage, output)`` for every stage of ``order`` (file order), each
    once the stages of its ``deps`` are done."""
    todo = list(order)
    done: set[int] = set()
    running: dict[Future[None], int] = {}
    spools: dict[int, TextIO] = {}
    ended: list[int] = []  # spooled stages that ended, their output not copied yet
    live: int | None = None
    error: BaseException | None = None
    pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1),
                              thread_name_prefix="stage")
    try:
        while todo or running:
            ready = [i for i in todo if set(deps[i]) <= done] if error is None else []
            if len(ready) == 1 and not running:
                todo.remove(ready[0])
                build(ready[0], out)
                done.add(ready[0])
                continue
            for index in ready:
                todo.remove(index)
                if live is None:
                    live, stream = index, out
                else:
                    stream = spools[index] = _spool(spool_dir)
                running[pool.submit(build, index, stream)] = index
            if not running:
                break  # after a failure: nothing more is started
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                index = running.pop(future)
                failure = future.exception()
                if failure is None:
                    done.add(index)
                elif error is None:
                    error = failure
                    cancel()
                if index == live:
                    live = None
                else:
                    ended.append(index)
            if live is None:
                for index in sorted(ended):
                    _copy_out(spools.pop(index), out)
                ended.clear()
    except BaseException:
        cancel()
        wait(running)
        raise
    finally:
        pool.shutdown(wait=True)
        for index in sorted(spools):
            _copy_out(spools[index], out)
    if error is not None:
        raise error


def _spool(directory: str) -> TextIO:
    """A file without a name for a stage's output. Appending: the stage's RUN
    containers write to the same open file as the stage's own lines do."""
    fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_APPEND | os.O_CLOEXEC, 0o600)
    return open(fd, "a", encoding="utf-8", errors="surrogateescape")


def _copy_out(spool: TextIO, out: TextIO) -> None:
    """The spool's bytes onto ``out`` (a stream with a file descriptor); then closed."""
    with spool:
        spool.flush()
        out.flush()
        offset = 0
        while chunk := os.pread(spool.fileno(), 1 << 16, offset):
            offset += len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(out.fileno(), view):]
