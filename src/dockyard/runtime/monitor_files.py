"""What a monitor's state directory says, read from outside (the engine's reconcile,
``ps``, ``exec``...) without importing the monitor itself (``dockyard.runtime.monitor``
describes the files; it re-exports all of these).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from dockyard.errors import InvalidArgument
from dockyard.runtime.state import proc_start_time

PID_FILE = "monitor.pid"
EXIT_FILE = "exit.json"
NAME_FILE = "name"


@dataclass(frozen=True)
class ExitStatus:
    """One exit of the container (``exit.json``)."""

    exit_code: int           # the process's code, or 128 + the signal that killed it
    signal: int | None       # the signal that killed it
    oom_killed: bool         # the OOM killer killed a process of the container
    started_at: str          # RFC3339Nano, UTC
    finished_at: str
    restarts: int = 0        # how many times the monitor started it again so far
    restarting: bool = False  # the monitor will start it again
    stop_requested: bool = False


def read_exit(state_dir: str) -> ExitStatus | None:
    """The container's last exit as the monitor recorded it, or None if none was."""
    try:
        with open(os.path.join(state_dir, EXIT_FILE), "rb") as f:
            return ExitStatus(**json.loads(f.read()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as e:
        raise InvalidArgument(f"{state_dir}/{EXIT_FILE} is corrupt: {e}") from None


def monitor_alive(state_dir: str) -> bool:
    """Whether the monitor recorded in ``state_dir`` still runs (pid and start time)."""
    try:
        with open(os.path.join(state_dir, PID_FILE)) as f:
            pid, start = (int(word) for word in f.read().split())
    except (FileNotFoundError, ValueError):
        return False
    return proc_start_time(pid) == start
