"""Capability names and numbers: no root needed."""

from __future__ import annotations

import pytest

from dockyard.errors import InvalidArgument
from dockyard.linux import capabilities


def test_numbers_follow_the_kernel_header() -> None:
    assert capabilities.NUMBERS["CAP_CHOWN"] == 0
    assert capabilities.NUMBERS["CAP_SETPCAP"] == 8
    assert capabilities.NUMBERS["CAP_SYS_ADMIN"] == 21
    assert capabilities.NUMBERS["CAP_AUDIT_WRITE"] == 29
    assert capabilities.NUMBERS["CAP_CHECKPOINT_RESTORE"] == 40
    assert len(capabilities.NAMES) == 41


def test_name_of_a_number() -> None:
    assert capabilities.name(13) == "CAP_NET_RAW"
    assert capabilities.name(63) == "CAP_63"


def test_parse_docker_defaults() -> None:
    caps = capabilities.parse(["CAP_CHOWN", "CAP_KILL", "CAP_KILL", "CAP_SETFCAP"])
    assert caps == {0, 5, 31}


def test_parse_refuses_an_unknown_name() -> None:
    with pytest.raises(InvalidArgument, match="unknown capability 'CAP_FOO'"):
        capabilities.parse(["CAP_CHOWN", "CAP_FOO"])


def test_parse_wants_the_kernel_spelling() -> None:
    with pytest.raises(InvalidArgument, match="'chown'"):
        capabilities.parse(["chown"])


def test_last_cap_reads_the_running_kernel() -> None:
    # Every kernel since 5.9 knows CAP_CHECKPOINT_RESTORE.
    assert capabilities.last_cap() >= 40


def test_current_has_the_five_sets() -> None:
    sets = capabilities.current()
    assert set(sets) == {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}
    assert sets["CapEff"] & ~sets["CapPrm"] == 0
