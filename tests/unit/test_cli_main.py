"""The dockyard command line: global options, usage errors and exit codes."""

from __future__ import annotations

import json
import pathlib

import pytest

from dockyard.cli.main import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("dockyard version ")
    assert main(["--root", "/tmp/x", "version", "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["Root"] == "/tmp/x" and info["Runtime"] == "dockyard-runtime"


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "Usage:  dockyard [OPTIONS] COMMAND" in out and "version" in out


@pytest.mark.parametrize("argv", [["bogus"], ["version", "--bogus"],
                                  ["--storage-driver", "zfs", "version"]])
def test_bad_command_lines_exit_125_with_one_line(argv: list[str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 125
    err = capsys.readouterr().err
    assert err.startswith("dockyard: ") and err.count("\n") <= 2


def test_flag_values_may_start_with_a_dash_and_a_digit(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    # docker reads `--since -1m` as "a minute from now"; argparse took "-1m" for a flag.
    roots = ["--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "run")]
    assert main([*roots, "events", "--since", "-1m", "--until", "0"]) == 0
    assert capsys.readouterr() == ("", "")
    # A word that is not a number still is an option, as it is for docker.
    assert main([*roots, "events", "--until", "-x"]) == 125
    assert "--until: expected one argument" in capsys.readouterr().err
