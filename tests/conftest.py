"""Fixtures shared by every test tier: a busybox rootfs, OCI bundles, runtime state roots.

    busybox_rootfs   (session)  a rootfs built once per worker; never run directly
    make_bundle      make_bundle(["sh", "-c", "id"], hostname="x") -> fresh bundle dir
    container_id     container_id() -> a new unique container ID
    runtime_root     the temporary directory holding one ``--root`` per runtime
    run_runtime      run_runtime(binary, "run", "--bundle", str(b), cid) -> CompletedProcess

After each test that used them, and even when it failed, the sandbox deletes (``delete
--force``) every container left in its roots, kills any process still running inside one
of its bundles, unmounts anything left under its bundles or roots and removes the
cgroups named after its containers; then it fails the test if it had to do any of that,
because a runtime that leaks is a bug the test should show.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import bundles
from dockyard.linux import syscalls as sc

CGROUP_ROOT = Path("/sys/fs/cgroup")


class Sandbox:
    """What one test created through the fixtures, and how to take it all down."""

    def __init__(self, tmp: Path, rootfs_template: Path) -> None:
        self.roots = tmp / "roots"
        self.bundle_dir = tmp / "bundles"
        self.roots.mkdir()
        self.bundle_dir.mkdir()
        self.rootfs_template = rootfs_template
        self.binaries: dict[str, str] = {}  # root directory name -> runtime binary
        self.ids: list[str] = []

    def root_for(self, binary: str) -> Path:
        """The ``--root`` of ``binary``: runtimes must not share one (their layouts differ)."""
        name = Path(binary).name
        self.binaries[name] = binary
        return self.roots / name

    def new_id(self) -> str:
        # Unique across xdist workers and reruns: IDs name host cgroups.
        cid = f"dy-{uuid.uuid4().hex[:12]}"
        self.ids.append(cid)
        return cid

    def new_bundle(self, args: list[str], **overrides: Any) -> Path:
        return bundles.write_bundle(
            self.bundle_dir / uuid.uuid4().hex[:8], self.rootfs_template, args, **overrides
        )

    def cleanup(self) -> list[str]:
        """Take down whatever is left; return one line per thing that was left."""
        leaks: list[str] = []
        for name, binary in self.binaries.items():
            root = self.roots / name
            for cid in bundles.leftover_containers(root):
                leaks.append(f"{name}: container {cid} left in {root}")
                bundles.run_runtime(binary, root, "delete", "--force", cid)
        leaks += self._kill_processes_in_bundles()
        for area in (self.bundle_dir, self.roots):
            for point in bundles.mounts_under(area):
                leaks.append(f"mount left: {point}")
                subprocess.run(["umount", "--lazy", point], check=False)
        leaks += self._remove_cgroups()
        return leaks

    def _kill_processes_in_bundles(self) -> list[str]:
        # A runtime whose delete is broken leaves the container's processes behind;
        # they are recognised by a root directory inside one of our bundles.
        leaks = []
        prefix = str(self.bundle_dir.resolve()) + "/"
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                root = os.readlink(f"/proc/{pid}/root")
            except OSError:  # exited meanwhile, or a kernel thread
                continue
            if root.startswith(prefix):
                leaks.append(f"process {pid} left running in {root}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        return leaks

    def _remove_cgroups(self) -> list[str]:
        ids = set(self.ids)
        leaks = []
        for hierarchy in CGROUP_ROOT.iterdir():
            # Deepest first, so a leaked parent's children go before it.
            for directory, subdirs, _ in os.walk(hierarchy, topdown=False):
                for sub in subdirs:
                    if sub in ids:
                        path = Path(directory, sub)
                        leaks.append(f"cgroup left: {path}")
                        _rmdir_cgroup(path)
        return leaks


_PR_GET_CHILD_SUBREAPER = 37


def _rmdir_cgroup(path: Path) -> None:
    # A cgroup can only be removed once empty, and killed tasks leave it a moment
    # after SIGKILL; wait a little rather than leak it.
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox rootfs built once per worker; copied into each bundle, never run itself."""
    return bundles.build_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture
def sandbox(tmp_path: Path, busybox_rootfs: Path) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path, busybox_rootfs)
    yield box
    leaks = box.cleanup()
    if leaks:
        pytest.fail("the test left things behind (now removed):\n" + "\n".join(leaks))


@pytest.fixture
def make_bundle(sandbox: Sandbox) -> Callable[..., Path]:
    """``make_bundle(args, **overrides) -> Path``: a new bundle running ``args``.

    ``overrides`` are deep-merged into the base spec (``bundles.base_spec``), e.g.
    ``linux={"resources": {"memory": {"limit": 64 << 20}}}``.
    """
    return sandbox.new_bundle


@pytest.fixture
def container_id(sandbox: Sandbox) -> Callable[[], str]:
    """``container_id() -> str``: a fresh container ID, checked for leaked cgroups after."""
    return sandbox.new_id


@pytest.fixture
def runtime_root(sandbox: Sandbox) -> Path:
    """The directory under which each runtime gets its own ``--root`` (named after it)."""
    return sandbox.roots


@pytest.fixture
def run_runtime(sandbox: Sandbox) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_runtime(binary, *args, timeout=60, stdin=DEVNULL)``: run with this test's root."""

    def run(binary: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return bundles.run_runtime(binary, sandbox.root_for(binary), *args, **kwargs)

    return run


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI (``CI`` set), a skipped test fails: every peer a test needs is installed
    there, so a skip can only hide a broken setup."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where nothing may be: {report.longrepr}"


@pytest.fixture(autouse=True)
def _no_subreaper_left() -> Iterator[None]:
    """A test that runs containers in this process (``Runtime.create(reap=True)``, the
    engine's ``exec``, a build step) makes it a child subreaper; left so, it would
    adopt the orphans of later tests' commands (``exec -d``'s process) and never reap
    them, and a container's init then waits in its exit for them for ever (a pid
    namespace ends when all its processes are reaped). Undone after each test, and
    what it adopted is reaped."""
    yield
    flag = ctypes.c_int()
    sc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.addressof(flag))
    if flag.value:
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 0)
        reap_orphans()


def reap_orphans() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
