"""Capabilities applied to a forked child on the real kernel, as root."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pytest

import forked
from dockyard.linux import capabilities
from dockyard.runtime.spec import DEFAULT_CAPABILITIES

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

DOCKER_DEFAULT = capabilities.parse(DEFAULT_CAPABILITIES)
DOCKER_MASK = "00000000a80425fb"  # what `docker run` shows in CapEff
BUSYBOX = "/usr/bin/busybox"


def in_child(body: Callable[[int], None]) -> tuple[int, str]:
    status, output = forked.in_child(body)
    return status, output.decode()


def status_lines(text: str) -> dict[str, str]:
    return dict(line.split(":\t") for line in text.splitlines() if line.startswith("Cap"))


def test_docker_defaults_as_root() -> None:
    def body(out: int) -> None:
        capabilities.apply(DOCKER_DEFAULT, DOCKER_DEFAULT, DOCKER_DEFAULT, set(), set())
        with open("/proc/self/status") as status:
            os.write(out, status.read().encode())

    status, output = in_child(body)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert status_lines(output) == {
        "CapInh": "0000000000000000",
        "CapPrm": DOCKER_MASK,
        "CapEff": DOCKER_MASK,
        "CapBnd": DOCKER_MASK,
        "CapAmb": "0000000000000000",
    }


def test_current_reads_what_apply_set() -> None:
    def body(out: int) -> None:
        chown = {capabilities.NUMBERS["CAP_CHOWN"]}
        capabilities.apply(DOCKER_DEFAULT, chown, DOCKER_DEFAULT, chown, chown)
        os.write(out, repr(capabilities.current()).encode())

    status, output = in_child(body)
    assert os.waitstatus_to_exitcode(status) == 0, output
    mask = int(DOCKER_MASK, 16)
    assert eval(output) == {
        "CapInh": 1,
        "CapPrm": mask,
        "CapEff": 1,
        "CapBnd": mask,
        "CapAmb": 1,
    }


def test_ambient_caps_survive_setuid_and_exec() -> None:
    def body(out: int) -> None:
        capabilities.keep_caps(True)
        os.setgroups([])
        os.setresgid(1000, 1000, 1000)
        os.setresuid(1000, 1000, 1000)
        capabilities.keep_caps(False)
        capabilities.apply(
            DOCKER_DEFAULT, DOCKER_DEFAULT, DOCKER_DEFAULT, DOCKER_DEFAULT, DOCKER_DEFAULT
        )
        os.dup2(out, 1)
        os.execv(BUSYBOX, [BUSYBOX, "grep", "Cap", "/proc/self/status"])

    status, output = in_child(body)
    assert os.waitstatus_to_exitcode(status) == 0, output
    # Without ambient caps, a non-root exec of a file without file caps would end
    # with empty permitted and effective sets.
    assert status_lines(output) == {
        "CapInh": DOCKER_MASK,
        "CapPrm": DOCKER_MASK,
        "CapEff": DOCKER_MASK,
        "CapBnd": DOCKER_MASK,
        "CapAmb": DOCKER_MASK,
    }


def test_setuid_without_ambient_loses_caps_at_exec() -> None:
    def body(out: int) -> None:
        capabilities.keep_caps(True)
        os.setresuid(1000, 1000, 1000)
        capabilities.apply(DOCKER_DEFAULT, DOCKER_DEFAULT, DOCKER_DEFAULT, set(), set())
        os.dup2(out, 1)
        os.execv(BUSYBOX, [BUSYBOX, "grep", "Cap", "/proc/self/status"])

    status, output = in_child(body)
    assert os.waitstatus_to_exitcode(status) == 0, output
    lines = status_lines(output)
    assert lines["CapPrm"] == lines["CapEff"] == "0000000000000000"
    assert lines["CapBnd"] == DOCKER_MASK


def test_ambient_needs_inheritable() -> None:
    def body(out: int) -> None:
        try:
            capabilities.apply(DOCKER_DEFAULT, DOCKER_DEFAULT, DOCKER_DEFAULT, set(), {0})
        except OSError as exc:
            os.write(out, f"{exc.errno} {exc}".encode())

    status, output = in_child(body)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert output.startswith(f"{errno.EPERM} ")
    assert "prctl" in output


def test_permitted_cannot_grow_back() -> None:
    def body(out: int) -> None:
        capabilities.apply(DOCKER_DEFAULT, DOCKER_DEFAULT, DOCKER_DEFAULT, set(), set())
        sys_admin = capabilities.NUMBERS["CAP_SYS_ADMIN"]
        try:
            capabilities.apply(DOCKER_DEFAULT, set(), DOCKER_DEFAULT | {sys_admin}, set(), set())
        except OSError as exc:
            os.write(out, f"{exc.errno} {exc}".encode())

    status, output = in_child(body)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert output.startswith(f"{errno.EPERM} ")
    assert "capset" in output
