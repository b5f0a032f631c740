"""containerd drives the runtime: ``ctr run --runc-binary RUNTIME`` through the runc shim.

The shim calls the runtime with runc's command line (``--root``, ``--log``,
``--log-format json``, ``create --bundle --pid-file [--console-socket]``, ``start``,
``state``, ``kill``, ``delete``), so this proves ``dockyard-runtime`` can stand in for
runc under containerd (and so under Kubernetes). The same tests run with runc itself,
which proves the harness.

containerd runs on its own socket, root and state directory, from its default config
with the CRI plugin disabled; the image is a busybox OCI archive made here with umoci,
since no public registry is reachable.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import bundles

IMAGE = "docker.io/library/busybox:latest"
NAMESPACE = "dockyard-test"
START_TIMEOUT = 30.0
CTR_TIMEOUT = 60.0


def set_toml_keys(text: str, values: dict[tuple[str, str], object]) -> str:
    """Replace ``key = ...`` lines of ``[section]`` (``""`` for the top level) in ``text``.

    Editing the default config line by line keeps every other default as containerd
    ships it; a key that is not found fails loudly, as the config's shape has changed.
    """
    section = ""
    lines = text.splitlines()
    pending = dict(values)
    for number, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped.strip("[]")
            continue
        key = stripped.partition("=")[0].strip()
        if (section, key) in pending:
            indent = line[: len(line) - len(line.lstrip())]
            # JSON strings and arrays of strings are valid TOML values.
            lines[number] = f"{indent}{key} = {json.dumps(pending.pop((section, key)))}"
    if pending:
        raise KeyError(f"not in containerd's default config: {sorted(pending)}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Containerd:
    """A running containerd of our own, and ``ctr`` pointed at it."""

    address: Path
    root: Path
    state: Path

    def ctr(self, *args: str, timeout: float = CTR_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.address), "--namespace", NAMESPACE, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )


def _shim_pids(address: Path) -> list[int]:
    # Shims outlive containerd by design; ours are the ones given our socket address.
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"containerd-shim-runc-v2") and str(address).encode() in argv:
            pids.append(int(pid))
    return pids


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """containerd on its own socket, root and state; stopped and unmounted after."""
    home = tmp_path_factory.mktemp("containerd")
    daemon = Containerd(address=home / "containerd.sock", root=home / "root", state=home / "state")
    default = subprocess.run(
        ["containerd", "config", "default"], check=True, capture_output=True, text=True
    ).stdout
    config = home / "config.toml"
    config.write_text(
        set_toml_keys(
            default,
            {
                ("", "root"): str(daemon.root),
                ("", "state"): str(daemon.state),
                # The CRI plugin wants CNI and an image service: nothing here needs it.
                ("", "disabled_plugins"): ["io.containerd.grpc.v1.cri"],
                ("grpc", "address"): str(daemon.address),
            },
        )
    )
    with open(home / "containerd.log", "ab") as log:
        process = subprocess.Popen(
            ["containerd", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while daemon.ctr("version", timeout=5).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                log_tail = (home / "containerd.log").read_text()[-2000:]
                pytest.fail(f"containerd did not start:\n{log_tail}")
            time.sleep(0.1)
        yield daemon
    finally:
        _stop(process)
        for pid in _shim_pids(daemon.address):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for area in (daemon.root, daemon.state):
            for point in bundles.mounts_under(area):
                subprocess.run(["umount", "--lazy", point], check=False)
        # ctr puts each container's cgroup under /NAMESPACE; the runtime removes the
        # container's own, the parent is containerd's to remove, and it never does.
        for parent in Path("/sys/fs/cgroup").glob(f"*/{NAMESPACE}"):
            with contextlib.suppress(OSError):
                parent.rmdir()


@pytest.fixture(scope="module")
def busybox_image_archive(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> Path:
    """An OCI image archive of the busybox rootfs, made with umoci; its CMD is ``sh``."""
    work = tmp_path_factory.mktemp("image")
    layout = work / "layout"
    image = f"{layout}:latest"
    for command in (
        ["umoci", "init", "--layout", str(layout)],
        ["umoci", "new", "--image", image],
        ["umoci", "insert", "--image", image, str(busybox_rootfs), "/"],
        ["umoci", "config", "--image", image, "--config.cmd", "sh"],
    ):
        subprocess.run(command, check=True, capture_output=True)
    archive = work / "busybox.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(layout, arcname=".")
    return archive


@pytest.fixture(scope="module")
def busybox_image(containerd: Containerd, busybox_image_archive: Path) -> str:
    # umoci only annotates the tag ("latest"); --base-name gives the image its name.
    done = containerd.ctr(
        "images",
        "import",
        "--snapshotter",
        "overlayfs",
        "--base-name",
        IMAGE.rpartition(":")[0],
        str(busybox_image_archive),
    )
    assert done.returncode == 0, done.stderr
    return IMAGE


@pytest.fixture
def ctr_container(containerd: Containerd, container_id) -> Iterator[str]:
    """A container ID for ``ctr run --rm``; whatever the run left is removed and reported."""
    cid = container_id()
    yield cid
    leaks = [
        f"containerd {kind} {cid} left"
        for kind in ("task", "container")
        if cid in containerd.ctr(f"{kind}s", "list", "--quiet").stdout.split()
    ]
    containerd.ctr("tasks", "kill", "--signal", "SIGKILL", cid)
    containerd.ctr("tasks", "delete", "--force", cid)
    containerd.ctr("containers", "delete", cid)
    if leaks:
        pytest.fail("\n".join(leaks))


def run_in_pty(command: list[str]) -> tuple[int, str]:
    """Run ``command`` with a pseudo-terminal as its stdin, stdout and stderr.

    ``ctr run --tty`` puts its stdin in raw mode and fails without a terminal.
    """
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        # Only the child may hold the slave end: the master reads EIO once it is gone.
        os.close(slave)
        slave = -1
        output = bytearray()
        deadline = time.monotonic() + CTR_TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every holder of the slave has exited
                break
            if not chunk:
                break
            output += chunk
        else:
            process.kill()
        return process.wait(timeout=CTR_TIMEOUT), output.decode(errors="replace")
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


@pytest.mark.parametrize("tty", [False, True], ids=["notty", "tty"])
@pytest.mark.parametrize("runtime", ["runc", "dockyard-runtime"])
def test_ctr_run(
    containerd: Containerd,
    busybox_image: str,
    ctr_container: str,
    runtime_root: Path,
    runtime: str,
    tty: bool,
) -> None:
    """``ctr run --rm`` prints the container's output and exits with its code."""
    binary = bundles.runtime_binary(runtime)
    command = [
        "ctr",
        "--address",
        str(containerd.address),
        "--namespace",
        NAMESPACE,
        "run",
        "--rm",
        "--snapshotter",
        "overlayfs",
        "--runc-binary",
        binary,
        # The shim passes --root RUNC_ROOT/NAMESPACE to the runtime.
        "--runc-root",
        str(runtime_root / "containerd"),
        *(["--tty"] if tty else []),
        busybox_image,
        ctr_container,
        "sh",
        "-c",
        "echo hi; exit 7",
    ]
    if tty:
        code, output = run_in_pty(command)
    else:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=CTR_TIMEOUT, stdin=subprocess.DEVNULL
        )
        code, output = done.returncode, done.stdout + done.stderr
    # Each terminal on the way (the container's pty, then ours) may turn "\n" into "\r\n".
    assert (code, output.replace("\r", "")) == (7, "hi\n"), output
    state = runtime_root / "containerd" / NAMESPACE
    assert not state.exists() or not any(state.iterdir()), f"{runtime} state left in {state}"
