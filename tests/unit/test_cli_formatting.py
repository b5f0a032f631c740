"""docker's output conventions: sizes, ages, templates and tables."""

from __future__ import annotations

import pytest

from dockyard.cli.formatting import format_rows, human_duration, human_size, render
from dockyard.errors import InvalidArgument


@pytest.mark.parametrize(("size", "text"), [
    (0, "0B"), (999, "999B"), (1000, "1kB"), (4_261_000, "4.261MB"), (1_234_567_890, "1.235GB"),
])
def test_sizes_in_decimal_units(size: int, text: str) -> None:
    assert human_size(size) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (0.2, "Less than a second"), (1, "1 second"), (45, "45 seconds"), (61, "About a minute"),
    (600, "10 minutes"), (3600, "About an hour"), (7200, "2 hours"), (86400 * 3, "3 days"),
    (86400 * 20, "2 weeks"), (86400 * 100, "3 months"), (86400 * 800, "2 years"),
])
def test_durations_like_docker(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_templates() -> None:
    data = {"Repository": "busybox", "Tag": "latest", "Labels": {"a": "1"}, "N": 3}
    assert render("{{.Repository}}:{{.Tag}}", data) == "busybox:latest"
    assert render("{{json .Labels}}", data) == '{"a":"1"}'
    assert render('{{index .Labels "a"}}', data) == "1"
    assert render("{{.Repository | upper}}\\t{{.N}}", data) == "BUSYBOX\t3"
    with pytest.raises(InvalidArgument, match="can't evaluate field Nope"):
        render("{{.Nope}}", data)
    with pytest.raises(InvalidArgument, match="not defined"):
        render("{{printf .Tag}}", data)


def test_tables_align_under_docker_headers() -> None:
    items = [{"Repository": "busybox", "Tag": "latest", "ID": "abc"},
             {"Repository": "debian", "Tag": "bookworm", "ID": "def"}]
    out = format_rows(items, None, "table {{.Repository}}\t{{.Tag}}\t{{.ID}}",
                      {"ID": "IMAGE ID"})
    assert out.splitlines() == [
        "REPOSITORY   TAG        IMAGE ID",
        "busybox      latest     abc",
        "debian       bookworm   def",
    ]
    assert format_rows(items, "{{.ID}}", "", {}) == "abc\ndef"
    assert format_rows(items[:1], "json", "", {}) == \
        '{"Repository":"busybox","Tag":"latest","ID":"abc"}'
