"""The json-file log writer of the monitor, on its own: entries, partial lines, rotation."""

from __future__ import annotations

import json
from pathlib import Path

from dockyard.runtime.logfile import MAX_ENTRY, JsonFileLog, encode_entry, rfc3339nano


def entries(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_time_is_go_rfc3339nano_in_utc() -> None:
    assert rfc3339nano(0) == "1970-01-01T00:00:00Z"
    assert rfc3339nano(1_500_000_000) == "1970-01-01T00:00:01.5Z"
    assert rfc3339nano(1_000_000_001) == "1970-01-01T00:00:01.000000001Z"


def test_entries_are_escaped_like_go_encoding_json() -> None:
    line = encode_entry(b'a\\b "q" <&> \x08\x0c\x01 \xff\xe2\x80\xa8\n', "stderr", 0)
    assert line == (b'{"log":"a\\\\b \\"q\\" \\u003c\\u0026\\u003e \\u0008\\u000c\\u0001 '
                    b'\xef\xbf\xbd\\u2028\\n","stream":"stderr",'
                    b'"time":"1970-01-01T00:00:00Z"}\n')
    assert json.loads(line)["log"] == 'a\\b "q" <&> \x08\x0c\x01 \ufffd\u2028\n'


def test_lines_are_cut_at_newlines_and_16k_and_the_rest_waits(tmp_path: Path) -> None:
    log = JsonFileLog(str(tmp_path / "log"))
    log.write("stdout", b"one\ntw")
    log.write("stderr", b"e")
    log.write("stdout", b"o\n" + b"x" * (MAX_ENTRY + 10))
    log.end("stdout")
    log.close()
    got = [(e["stream"], e["log"]) for e in entries(tmp_path / "log")]
    assert got == [("stdout", "one\n"), ("stdout", "two\n"), ("stdout", "x" * MAX_ENTRY),
                   ("stdout", "x" * 10), ("stderr", "e")]


def test_rotation_keeps_max_files(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = JsonFileLog(str(path), max_size=200, max_files=2)
    for i in range(20):
        log.write("stdout", f"line {i}\n".encode())
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log", "log.1"]
    kept = [e["log"] for e in entries(path.with_name("log.1")) + entries(path)]
    assert kept[-1] == "line 19\n" and kept[0] != "line 0\n"


def test_one_file_is_truncated_instead_of_rotated(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = JsonFileLog(str(path), max_size=100, max_files=1)
    for i in range(10):
        log.write("stdout", f"line {i}\n".encode())
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["log"]
    assert entries(path)[-1]["log"] == "line 9\n"
    assert path.stat().st_size < 200
