"""Fixtures of the dockyard-runtime integration tests: a user's session with the runtime.

    dy     a ``Session``: ``dockyard-runtime`` with this test's own ``--root``, bundles
           made from ``dockyard.runtime.spec.default_spec()`` (terminal off), and every
           container it made deleted with ``delete --force`` after the test
    api    a ``dockyard.runtime.Runtime`` on its own root, for the tests of the Python
           API; the test process stops being a child subreaper after it

The ``sandbox`` fixture of ``tests/conftest.py`` runs after these and fails the test if
anything (container state, mount, cgroup, process) is still there once the containers
were deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import bundles
from dockyard.oci import runtime as oci
from dockyard.runtime import Runtime
from dockyard.runtime.spec import default_spec

CGROUP_ROOT = Path("/sys/fs/cgroup")
RUNTIME = bundles.dockyard_runtime_binary()


def spec_dict(args: list[str], **overrides: Any) -> dict[str, Any]:
    """``default_spec()`` as JSON, terminal off, running ``args``, ``overrides`` merged."""
    spec: dict[str, Any] = json.loads(oci.dump(default_spec()))
    spec["process"]["terminal"] = False
    spec["process"]["args"] = list(args)
    return bundles.merge(spec, overrides)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.05)


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Assert ``result`` failed with exactly one line on stderr that mentions ``words``."""
    assert result.returncode != 0, f"expected a failure, got: {result}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line of error, got:\n{result.stderr}"
    line = lines[0]
    assert "Traceback" not in line
    for word in words:
        assert word.lower() in line.lower(), f"{word!r} not in the error: {line}"
    return line


def container_cgroups(cid: str) -> list[Path]:
    """The cgroup directories named after container ``cid`` (in any hierarchy)."""
    return [p for p in CGROUP_ROOT.glob(f"*/dockyard/{cid}") if p.is_dir()]


def processes_in_cgroup(cid: str) -> list[int]:
    """Live processes whose cgroup (in any hierarchy) is the container's."""
    pattern = re.compile(rf":/dockyard/{re.escape(cid)}(/|$)", re.M)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if pattern.search(text) and "State:\tZ" not in status:
            found.append(int(pid))
    return found


def processes_rooted_in(directory: Path) -> list[int]:
    """Live processes whose root directory is at or below ``directory``."""
    prefix = str(directory.resolve())
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            root = os.readlink(f"/proc/{pid}/root")
        except OSError:
            continue
        if root == prefix or root.startswith(prefix + "/"):
            found.append(int(pid))
    return found


def host_status(pid: int, field: str) -> str:
    """A field of /proc/PID/status, as the host sees it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == field:
            return value.strip()
    raise KeyError(field)


def is_gone(pid: int) -> bool:
    """Whether ``pid`` exited (a zombie waiting for its reaper counts as gone)."""
    try:
        return host_status(pid, "State").startswith(("Z", "X"))
    except (FileNotFoundError, ProcessLookupError):
        return True


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class Session:
    """One user's session with ``dockyard-runtime``: its root, its bundles, its containers."""

    def __init__(self, sandbox: Any) -> None:
        if RUNTIME is None:
            pytest.fail("dockyard-runtime is not installed: pip install -e . in .venv")
        self.sandbox = sandbox
        self.binary = RUNTIME
        self.root = sandbox.root_for(RUNTIME)
        self.bundle_dir: Path = sandbox.bundle_dir
        self.ids: list[str] = []

    # -- running the command -------------------------------------------------------

    def __call__(self, *args: str, timeout: float = 60,
                 stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
        """``dockyard-runtime --root ROOT ARGS...``; output captured, never raises."""
        return bundles.run_runtime(self.binary, self.root, *args, timeout=timeout, stdin=stdin)

    def ok(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Like calling the session, but the command must succeed."""
        result = self(*args, **kwargs)
        assert result.returncode == 0, (
            f"dockyard-runtime {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stderr}{result.stdout}")
        return result

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen([self.binary, "--root", str(self.root), *args], **kwargs)

    # -- bundles and containers ----------------------------------------------------

    def new_id(self) -> str:
        cid = self.sandbox.new_id()
        self.ids.append(cid)
        return cid

    spec = staticmethod(spec_dict)

    def bundle(self, args: list[str], *, parent: Path | None = None,
               **overrides: Any) -> Path:
        """A new bundle: a copy of the busybox rootfs and ``spec_dict(args, **overrides)``.

        It is made in this test's bundle directory unless ``parent`` says where.
        """
        return self.bundle_from_spec(spec_dict(args, **overrides), parent=parent)

    def bundle_from_spec(self, spec: dict[str, Any], *, parent: Path | None = None) -> Path:
        bundle = (parent or self.bundle_dir) / uuid.uuid4().hex[:8]
        bundle.mkdir(parents=True)
        shutil.copytree(self.sandbox.rootfs_template, bundle / "rootfs", symlinks=True)
        (bundle / "config.json").write_text(json.dumps(spec, indent=2))
        return bundle

    def create(self, args: list[str], *flags: str, parent: Path | None = None,
               **overrides: Any) -> str:
        """Create a container running ``args``; returns its ID."""
        cid = self.new_id()
        bundle = self.bundle(args, parent=parent, **overrides)
        self.ok("create", "--bundle", str(bundle), *flags, cid)
        return cid

    def start(self, args: list[str], *, parent: Path | None = None, **overrides: Any) -> str:
        """Create and start a container; returns its ID once it is running."""
        cid = self.create(args, parent=parent, **overrides)
        self.ok("start", cid)
        return cid

    def run(self, args: list[str], *flags: str, timeout: float = 60,
            **overrides: Any) -> subprocess.CompletedProcess[str]:
        """``dockyard-runtime run`` of a new container running ``args``."""
        cid = self.new_id()
        bundle = self.bundle(args, **overrides)
        return self("run", "--bundle", str(bundle), *flags, cid, timeout=timeout)

    def sh(self, script: str, *flags: str, **overrides: Any) -> subprocess.CompletedProcess[str]:
        """``run`` of ``sh -c SCRIPT``."""
        return self.run(["sh", "-c", script], *flags, **overrides)

    def state(self, cid: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.ok("state", cid).stdout)
        return result

    def status(self, cid: str) -> str:
        return str(self.state(cid)["status"])

    def wait_stopped(self, cid: str, timeout: float = 20) -> None:
        wait_for(lambda: self.status(cid) == "stopped", timeout, f"{cid} to stop")

    # -- what a failed command must not leave ----------------------------------------

    def leftovers(self, cid: str) -> list[str]:
        """Everything container ``cid`` left on the host, one line each."""
        left = []
        if cid and (self.root / cid).exists():
            left.append(f"state directory {self.root / cid}")
        left += [f"cgroup {p}" for p in container_cgroups(cid)] if cid else []
        left += [f"process {p} in its cgroup" for p in processes_in_cgroup(cid)] if cid else []
        left += [f"process {p} rooted in a bundle"
                 for p in processes_rooted_in(self.bundle_dir)]
        for area in (self.bundle_dir, self.root):
            left += [f"mount {m}" for m in bundles.mounts_under(area)]
        return left

    def assert_nothing_left(self, cid: str) -> None:
        left = self.leftovers(cid)
        assert not left, "left behind:\n" + "\n".join(left)

    # The module's helpers, for the test modules (which cannot import a conftest).
    wait_for = staticmethod(wait_for)
    one_line_error = staticmethod(one_line_error)
    cgroups = staticmethod(container_cgroups)
    host_status = staticmethod(host_status)
    kill_quietly = staticmethod(kill_quietly)
    is_gone = staticmethod(is_gone)
    processes_rooted_in = staticmethod(processes_rooted_in)

    def cleanup(self) -> None:
        for cid in self.ids:
            if (self.root / cid).exists():
                self("delete", "--force", cid)


@pytest.fixture
def dy(sandbox: Any) -> Iterator[Session]:
    session = Session(sandbox)
    try:
        yield session
    finally:
        session.cleanup()


@pytest.fixture
def api(sandbox: Any) -> Iterator[Runtime]:
    """A ``Runtime`` on this test's root; its containers are deleted after the test.

    ``create(..., reap=True)`` and ``exec`` make the test process a child subreaper;
    that is undone after the test (``_no_subreaper_left`` in tests/conftest.py).
    """
    rt = Runtime(sandbox.roots / "api")
    try:
        yield rt
    finally:
        for record, _ in rt.list():
            with contextlib.suppress(Exception):
                rt.delete(record.id, force=True)
