"""Durable writes: a file replaced whole, its directory fsynced."""

import os
import stat
from pathlib import Path

import pytest

from dockyard.storage.durable import fsync_dir, replace_file


def test_replace_file_writes_new_and_replaces_old(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    replace_file(target, b"one")
    assert target.read_bytes() == b"one"
    replace_file(str(target), b"two")
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["state.json"]  # no temporary file left
    fsync_dir(str(tmp_path))


def test_a_failed_replace_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    replace_file(target, b"old")
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        replace_file(tmp_path / "dir", b"new")  # rename over a directory fails
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["dir", "state.json"]
