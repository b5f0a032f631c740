"""docker's output conventions: sizes, ages, tables, and the Go templates of ``--format``.

The template cases are compared with Go: each expected text or error below is what Go's
text/template printed for the same template over the same data decoded from JSON into
``interface{}`` (with docker's functions added), and docker 28's client agrees where it
can be asked (``docker version --format``).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from dockyard.cli.formatting import (
    TemplateSyntaxError,
    format_rows,
    human_duration,
    human_size,
    print_inspected,
    render,
    table,
)
from dockyard.cli.gotemplate import Template, TemplateError, parse
from dockyard.cli.main import main
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


DATA: dict[str, Any] = {
    "B": True, "E": "", "F": 1.5, "I": 3, "L": ["a", "b"], "LN": [None, 1], "M": {"a": 1},
    "MN": {"a": None, "b": 2}, "N": None, "S": "str"}

# (template, output, error): output None for a parse error; an execution error comes
# with what Go had written before it.
GO_CASES = [
    ('{{.S}}|{{.I}}|{{.F}}|{{.B}}|{{.E}}|{{.L}}|{{.M}}', 'str|3|1.5|true||[a b]|map[a:1]', None),
    ('{{.}}',
     'map[B:true E: F:1.5 I:3 L:[a b] LN:[<nil> 1] M:map[a:1] MN:map[a:<nil> b:2] '
     'N:<nil> S:str]',
     None),
    ('{{.M.a}} {{.Q}} {{.Q.X}} {{.N}}', '1 <no value> <no value> <no value>', None),
    ('{{$x := .N}}{{$x.X}}', '<no value>', None),
    ('{{(.N).X}}', '<no value>', None),
    ('{{.S.X}}', '',
     'template: :1:4: executing "" at <.S.X>: can\'t evaluate field X in type interface {}'),
    ('{{.N.X}}', '',
     'template: :1:4: executing "" at <.N.X>: nil pointer evaluating interface {}.X'),
    ('{{.MN.a.b}}', '',
     'template: :1:5: executing "" at <.MN.a.b>: nil pointer evaluating interface {}.b'),
    ('{{.A 1}}', '', 'template: :1:2: executing "" at <.A>: A is not a method but has arguments'),
    ('{{3 4}}', '', 'template: :1:2: executing "" at <3>: can\'t give argument to non-function 3'),
    ('{{nil}}', '', 'template: :1:2: executing "" at <nil>: nil is not a command'),
    ('{{index .M "a"}} {{index .M "z"}} {{index .L 1}} {{index .S 0}} {{index .MN "a"}}',
     '1 <no value> b 115 <no value>',
     None),
    ('{{index .L 5}}', '',
     'template: :1:2: executing "" at <index .L 5>: error calling index: index out of '
     'range: 5'),
    ('{{index .L "a"}}', '',
     'template: :1:2: executing "" at <index .L "a">: error calling index: cannot index '
     'slice/array with type string'),
    ('{{index .M 1}}', '',
     'template: :1:2: executing "" at <index .M 1>: error calling index: value has type '
     'int; should be string'),
    ('{{index .Q 1}}', '',
     'template: :1:2: executing "" at <index .Q 1>: error calling index: index of '
     'untyped nil'),
    ('{{index 3 1}}', '',
     'template: :1:2: executing "" at <index 3 1>: error calling index: can\'t index '
     'item of type int'),
    ('{{len .S}} {{len .L}} {{len .M}} {{len "héllo"}}', '3 2 1 6', None),
    ('{{len .I}}', '',
     'template: :1:2: executing "" at <len .I>: error calling len: len of type int'),
    ('{{len .N}}', '',
     'template: :1:2: executing "" at <len .N>: error calling len: len of nil pointer'),
    ('{{slice .S 1 2}} {{slice .L 1}} {{slice .S}}', 't [b] str', None),
    ('{{slice .S 3 1}}', '',
     'template: :1:2: executing "" at <slice .S 3 1>: error calling slice: invalid slice '
     'index: 3 > 1'),
    ('{{slice .L 5}}', '',
     'template: :1:2: executing "" at <slice .L 5>: error calling slice: index out of '
     'range: 5'),
    ('{{range .L}}[{{.}}]{{end}}', '[a][b]', None),
    ('{{range .LN}}[{{.}}]{{end}}', '[<no value>][1]', None),
    ('{{range $i, $e := .L}}{{$i}}={{$e}},{{end}}', '0=a,1=b,', None),
    ('{{range $k, $v := .MN}}{{$k}}={{$v}};{{end}}', 'a=<no value>;b=2;', None),
    ('{{range $e := .L}}{{$e}}{{end}}', 'ab', None),
    ('{{range .M}}{{.}}{{end}}', '1', None),
    ('{{range .N}}x{{else}}e{{end}}', 'e', None),
    ('{{range .Q}}x{{else}}e{{end}}', 'e', None),
    ('{{range .S}}{{.}}{{end}}', '',
     'template: :1:8: executing "" at <.S>: range can\'t iterate over str'),
    ('{{range .L}}{{if eq . "b"}}{{break}}{{end}}{{.}}{{end}}', 'a', None),
    ('{{range $i, $e := .L}}{{if eq $i 0}}{{continue}}{{end}}{{$e}}{{end}}', 'b', None),
    ('{{range .L}}{{$.S}}{{end}}', 'strstr', None),
    ('{{range .LN}}{{.X}}{{end}}', '',
     'template: :1:15: executing "" at <.X>: nil pointer evaluating interface {}.X'),
    ('{{if .Q}}a{{else if .S}}b{{else}}c{{end}}', 'b', None),
    ('{{if .E}}a{{else if .Z}}b{{else}}c{{end}}', 'c', None),
    ('{{if and .S .I}}yes{{end}}', 'yes', None),
    ('{{if or .Q .E}}yes{{else}}no{{end}}', 'no', None),
    ('{{with .M}}{{.a}}{{else}}none{{end}}', '1', None),
    ('{{with .E}}x{{else}}none{{end}}', 'none', None),
    ('{{with $x := .S}}{{$x}}{{.}}{{end}}', 'strstr', None),
    ('{{$x := 1}}{{if .B}}{{$x = 2}}{{end}}{{$x}}', '2', None),
    ('{{$x := 1}}{{$x := 2}}{{$x}}', '2', None),
    ('{{$}} {{$.S}}',
     'map[B:true E: F:1.5 I:3 L:[a b] LN:[<nil> 1] M:map[a:1] MN:map[a:<nil> b:2] '
     'N:<nil> S:str] str',
     None),
    ('{{eq .I 3}} {{eq .S "x" "str"}} {{eq .N .Q}} {{ne 1 2}} {{le 1 1}} {{gt 2 1}} {{ge '
     '1 2}} {{lt 1.5 2.5}} {{lt .S "t"}}',
     'true true true true true true false true true',
     None),
    ('{{eq .I 3.0}}', '',
     'template: :1:2: executing "" at <eq .I 3.0>: error calling eq: incompatible types '
     'for comparison'),
    ('{{eq .L .L}}', '',
     'template: :1:2: executing "" at <eq .L .L>: error calling eq: non-comparable type '
     '[a b]: []interface {}'),
    ('{{lt .B true}}', '',
     'template: :1:2: executing "" at <lt .B true>: error calling lt: invalid type for '
     'comparison'),
    ('{{and 1 0 2}} {{or 0 "" 3}} {{not .L}} {{not .E}} {{and .Q 1}} {{or .Q 1}}',
     '0 3 false true <no value> 1',
     None),
    ('{{and}}', '',
     'template: :1:2: executing "" at <and>: wrong number of args for and: want at least '
     '1 got 0'),
    ('{{printf "%v|%v" .Q .N}}', '<nil>|<nil>', None),
    ('{{printf "%5s|%-5s|%05d|%x|%X|%q|%t|%v|%d" "ab" "cd" 42 255 "hi" "q\\"" true .L .I}}',
     '   ab|cd   |00042|ff|6869|"q\\""|true|[a b]|3',
     None),
    ('{{printf "%s %d" .I .S}}', '%!s(int=3) %!d(string=str)', None),
    ('{{printf "%d"}}', '%!d(MISSING)', None),
    ('{{printf "%s" 1 2}}', '%!s(int=1)%!(EXTRA int=2)', None),
    ('{{printf "%6.2f|%e|%g|%.3s|%c|%o|%b|%U" 3.14159 1234.5 0.00001 "abcdef" 65 8 5 65}}',
     '  3.14|1.234500e+03|1e-05|abc|A|10|101|U+0041',
     None),
    ('{{printf "%v %v %.2f %8.3f %-8d|" 1.5 100000000.0 2.0 3.14159 7}}',
     '1.5 1e+08 2.00    3.142 7       |',
     None),
    ('{{printf "%v %v %v %v" 1234567.0 0.0001 123456.0 -0.5}}', '1.234567e+06 0.0001 123456 -0.5',
     None),
    ('{{printf "%q" "a\\nb\\u00e9\\u0001"}}', '"a\\nbé\\x01"', None),
    ('{{printf "%s" .LN}}', '[<nil> %!s(int=1)]', None),
    ('{{printf "%T %T %T" 1 "s" .L}}', 'int string []interface {}', None),
    ('{{printf "%5t|%x|%3c|%+d|%x|%%" true "hi" 66 5 -255}}', ' true|6869|  B|+5|-ff|%', None),
    ('{{print 1 2 "a" "b" 3 .N}}', '1 2ab3 <nil>', None),
    ('{{println 1 "a"}}', '1 a\n', None),
    ('{{upper .Q}}', '', 'template: :1:8: executing "" at <.Q>: invalid value; expected string'),
    ('{{upper .N}}', '',
     'template: :1:8: executing "" at <.N>: wrong type for value; expected string; got '
     'interface {}'),
    ('{{upper .I}}', '',
     'template: :1:8: executing "" at <.I>: wrong type for value; expected string; got int'),
    ('{{.Q | upper}}', '',
     'template: :1:7: executing "" at <upper>: invalid value; expected string'),
    ('{{lower 1 2}}', '',
     'template: :1:2: executing "" at <lower>: wrong number of args for lower: want 1 got 2'),
    ('{{printf}}', '',
     'template: :1:2: executing "" at <printf>: wrong number of args for printf: want at '
     'least 1 got 0'),
    ('{{.S | upper | lower | title}}', 'Str', None),
    ('{{.S | printf "%s-%s" "a"}}', 'a-str', None),
    ('{{.S | len}}', '3', None),
    ('{{(index .L 0) | upper}}', 'A', None),
    ('{{pad .S 1 2}}|{{pad .E 1 1}}|', ' str  ||', None),
    ('{{truncate .S 2}} {{truncate .S 9}}', 'st str', None),
    ('{{title "hello wide-world o\'neil_x"}}', "Hello Wide-World O'Neil_x", None),
    ('{{json .M}} {{json .L}} {{json .N}} {{json .Q}} {{json "<&>é"}} {{json 1.0}} '
     '{{json .F}}',
     '{"a":1} ["a","b"] null null "<&>é" 1 1.5',
     None),
    ('{{split "a,b" ","}} {{split "ab" ""}} {{join (split "a,b" ",") "+"}}', '[a b] [a b] a+b',
     None),
    ('{{- /* c */ -}} a  {{- .S -}}  b', 'astrb', None),
    ('{{/* c */}}x', 'x', None),
    ('{{ .S }}', 'str', None),
    ('{{`raw\\n`}} {{"a\\tb\\u00e9"}} {{\'a\'}}', 'raw\\n a\tbé 97', None),
    ('{{0x1F}} {{1e3}} {{1.0}} {{-2}} {{017}} {{1_000}}', '31 1000 1 -2 15 1000', None),
    ('a\n{{.S}}', 'a\nstr', None),
    ('line1\nline2 {{.S.X}}', 'line1\nline2 ',
     'template: :2:10: executing "" at <.S.X>: can\'t evaluate field X in type interface {}'),
    ('{{$x}}', None, 'template: :1: undefined variable "$x"'),
    ('{{if}}x{{end}}', None, 'template: :1: missing value for if'),
    ('{{end}}', None, 'template: :1: unexpected {{end}}'),
    ('{{else}}', None, 'template: :1: unexpected {{else}}'),
    ('{{if .A}}', None, 'template: :1: unexpected EOF'),
    ('{{.A', None, 'template: :1: unclosed action'),
    ('{{"abc}}', None, 'template: :1: unterminated quoted string'),
    ('{{.A | 3}}', None, 'template: :1: non executable command in pipeline stage 2'),
    ('{{(.A}}', None, 'template: :1: unclosed left paren'),
    ('{{#}}', None, 'template: :1: unexpected "#" in command'),
    ('{{break}}', None, 'template: :1: {{break}} outside {{range}}'),
    ('{{foo}}', None, 'template: :1: function "foo" not defined'),
    ('{{.S | foo}}', None, 'template: :1: function "foo" not defined'),
    ('{{range $i, $e, $f := .L}}{{end}}', None, 'template: :1: too many declarations in range'),
    ('{{$a, $b := 1}}', None, 'template: :1: too many declarations in command'),
    ('{{if true}}{{$y := 1}}{{end}}{{$y}}', None, 'template: :1: undefined variable "$y"'),
    ('{{.S}}{{/* unclosed', None, 'template: :1: unclosed comment'),
    ('{{eq}}', '',
     'template: :1:2: executing "" at <eq>: wrong number of args for eq: want at least 1 '
     'got 0'),
    ('{{len}}', '',
     'template: :1:2: executing "" at <len>: wrong number of args for len: want 1 got 0'),
    ('{{range .L}}{{else}}{{else}}{{end}}', None, 'template: :1: expected end; found {{else}}'),
    ('{{if .S}}a{{else}}b{{end}}{{end}}', None, 'template: :1: unexpected {{end}}'),
    ('{{printf "%v %v %v %v %v" 1e21 1e20 0.1 100.0 1e-7}}', '1e+21 1e+20 0.1 100 1e-07', None),
    ('{{printf "%g %G %.3g %e %E %.0f" 1e21 1e-7 3.14159 0.0 5.0 2.5}}',
     '1e+21 1E-07 3.14 0.000000e+00 5.000000E+00 2',
     None),
    ('{{printf "%-10v|%10v|%05v" "ab" .L 42}}', 'ab        |[         a          b]|00042', None),
    ('{{printf "%5.1s|%.0s|%q" "abc" "abc" 65}}', "    a||'A'", None),
    ('{{printf "%d %d" .L .B}}', '[%!d(string=a) %!d(string=b)] %!d(bool=true)', None),
    ('{{printf "%s" .M}}', 'map[a:%!s(int=1)]', None),
    ('{{printf "%v" .MN}}', 'map[a:<nil> b:2]', None),
    ('{{printf "%x %X" .L "é"}}', '[61 62] C3A9', None),
    ('{{printf "%t %t" 1 .B}}', '%!t(int=1) true', None),
    ('{{printf "%c%c" 0x1F600 -1}}', '😀�', None),
    ('{{printf "%6d|%-6d|%06d|%+06d" -42 -42 -42 42}}', '   -42|-42   |-00042|+00042', None),
    ('{{ printf "%s" "a" | printf "%s-%s" "b" }}', 'b-a', None),
    ('{{range $i, $e := .L}}{{range $j, $f := $.L}}{{$i}}{{$j}}{{$e}}{{$f}} {{end}}{{end}}',
     '00aa 01ab 10ba 11bb ',
     None),
    ('{{range .L}}{{$x := .}}{{$x}}{{end}}', 'ab', None),
    ('{{with .M}}{{$.S}}{{.a}}{{end}}', 'str1', None),
    ('{{if not .Q}}none{{end}}', 'none', None),
    ('{{if eq .S "str"}}match{{end}}{{if ne .I 3}}no{{else}}three{{end}}', 'matchthree', None),
    ('{{(len .L)}} {{(.M).a}} {{((index .L 0))}}', '2 1 a', None),
    ('{{printf "%s" (print .S 1)}}', 'str1', None),
    ('x {{- " y " -}} z', 'x y z', None),
    ('x {{-  .S  -}}', 'xstr', None),
    ('\tz', '\tz', None),
    ('{{- .S}}', 'str', None),
    ('{{ 1 }}{{"a" | len}}', '11', None),
    ('{{.M | len}} {{.L | printf "%v"}}', '1 [a b]', None),
    ('{{range $k, $v := .M}}{{$k}}{{end}}{{range .MN}}{{.}}{{end}}', 'a<no value>2', None),
    ('{{index .LN 0}} {{index .L -1}}', '<no value> ',
     'template: :1:18: executing "" at <index .L -1>: error calling index: index out of '
     'range: -1'),
    ('{{slice .L 0 1 2}} {{slice .S 1 2 3}}', '[a] ',
     'template: :1:21: executing "" at <slice .S 1 2 3>: error calling slice: cannot '
     '3-index slice a string'),
    ('{{eq .F 1.5 2.5}} {{eq 1 .I}} {{eq "a" .I}}', 'true false ',
     'template: :1:32: executing "" at <eq "a" .I>: error calling eq: incompatible types '
     'for comparison'),
    ('{{ge .S .E}} {{le 2 1}} {{gt 1.5 1.0}}', 'true false true', None),
    ('{{print .L .M}} {{print "a" 1 "b"}} {{print 1 2}} {{print .Q}}',
     '[a b] map[a:1] a1b 1 2 <nil>',
     None),
    ('{{println}}', '\n', None),
    ('{{.I | printf "%d|%v"}}', '3|%!v(MISSING)', None),
    ('{{if .L}}{{else}}{{end}}x', 'x', None),
    ('{{range .L -}} {{.}} {{- end}}', 'ab', None),
    ('{{/*c*/}}', '', None),
    ('{{- /*c*/}}', '', None),
    ('{{/* a', None, 'template: :1: unclosed comment'),
    ('b */}}y', 'b */}}y', None),
    ('{{.}} {{-3}} {{+3}} {{1.5e2}} {{0b101}} {{0o17}} {{\'\\n\'}} {{"\\x41\\101\\u00e9"}}',
     'map[B:true E: F:1.5 I:3 L:[a b] LN:[<nil> 1] M:map[a:1] MN:map[a:<nil> b:2] '
     'N:<nil> S:str] -3 3 150 5 15 10 AAé',
     None),
    ('{{true}} {{false}} {{and true "x"}}', 'true false x', None),
    ('{{"a" "b"}}', '',
     'template: :1:2: executing "" at <"a">: can\'t give argument to non-function "a"'),
    ('{{.S "b"}}', '', 'template: :1:2: executing "" at <.S>: S is not a method but has arguments'),
    ('{{$ := 1}}', '', None),
    ('{{range $x := .L}}{{end}}{{$x}}', None, 'template: :1: undefined variable "$x"'),
    ('{{.S}}}', 'str}', None),
    ('}}{{', None, 'template: :1: unclosed action'),
    ('{{"a".X}}', None, 'template: :1: unexpected . after term "\\"a\\""'),
]


@pytest.mark.parametrize(("source", "output", "error"), GO_CASES)
def test_templates_print_what_go_prints(source: str, output: str | None,
                                        error: str | None) -> None:
    if output is None:
        with pytest.raises(TemplateError) as parsing:
            Template(source)
        assert str(parsing.value) == error
        return
    template = Template(source)
    written: list[str] = []
    if error is None:
        assert template.execute(DATA, written) == output
    else:
        with pytest.raises(TemplateError) as executing:
            template.execute(DATA, written)
        assert str(executing.value) == error
    assert "".join(written) == output


@pytest.mark.parametrize(("source", "output"), [
    # Go 1.22 ranges over an integer, Go 1.23 has {{else with}}: docker 28 has both.
    ("{{range 3}}{{.}}{{end}}", "012"),
    ('{{with $x := ""}}a{{else with 1}}b{{end}}', "b"),
    # docker's typed []string fields (Config.Cmd, Config.Env) can be joined.
    ('{{join .Cmd " "}}', "sh -c true"),
    # Struct fields keep their order in docker's JSON, as the engine's dicts do.
    ("{{json .}}", '{"Cmd":["sh","-c","true"],"Id":"abc"}'),
])
def test_templates_as_docker_28_prints_them(source: str, output: str) -> None:
    assert render(source, {"Cmd": ["sh", "-c", "true"], "Id": "abc"}) == output


def test_a_template_is_parsed_once() -> None:
    assert parse("{{.A}}") is parse("{{.A}}")
    started = time.perf_counter()
    rows = [{"ID": f"{n:012x}", "Names": f"box{n}", "Labels": {"a": str(n)}}
            for n in range(2000)]
    out = format_rows(rows, 'table {{.ID}}\t{{.Names}}\t{{index .Labels "a"}}', "", {})
    assert len(out.splitlines()) == 2001
    assert time.perf_counter() - started < 1.0


def test_docker_wraps_template_errors() -> None:
    with pytest.raises(TemplateSyntaxError, match=r'^template parsing error: template: :1: '
                       r'function "foo" not defined$'):
        render("{{foo}}", {})
    with pytest.raises(InvalidArgument, match=r"^template parsing error: template: :1:4: "
                       r'executing "" at <.A.B>: can\'t evaluate field B in type'):
        render("{{.A.B}}", {"A": "text"})
    # inspect, version and events take the text as it is; listings know \t and \n.
    assert render("{{.A}}\\t", {"A": 1}) == "1\\t"
    assert format_rows([{"A": 1}], "{{.A}}\\t{{.A}}\\n", "", {}) == "1\t1\n"


@pytest.mark.parametrize(("argv", "code"), [
    (["version", "--format", "{{foo}}"], 64),
    (["version", "--format", "{{range .Nope}}"], 64),
    (["version", "--format", "{{.Root.Nope}}"], 1),
])
def test_exit_codes_of_bad_templates(argv: list[str], code: int,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("Error: template parsing error: template: :1") and \
        err.count("\n") == 1


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
    # docker ps's header, as docker prints it over one container with no ports.
    ps = format_rows([{"ID": "0123456789ab", "Image": "busybox", "Command": '"sh"',
                       "RunningFor": "2 hours ago", "Status": "Up 2 hours", "Ports": "",
                       "Names": "box"}], None,
                     "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t"
                     "{{.Ports}}\t{{.Names}}", {"ID": "CONTAINER ID", "RunningFor": "CREATED"})
    assert ps.splitlines() == [
        "CONTAINER ID   IMAGE     COMMAND   CREATED       STATUS       PORTS     NAMES",
        '0123456789ab   busybox   "sh"      2 hours ago   Up 2 hours             box']
    assert format_rows(items, "{{.ID}}", "", {}) == "abc\ndef"
    assert format_rows(items[:1], "json", "", {}) == \
        '{"Repository":"busybox","Tag":"latest","ID":"abc"}'


def test_table_columns_like_docker_tabwriter() -> None:
    items = [{"ID": "a1", "Names": "web", "Labels": {"tier": "db"}, "Ports": ["80", "443"]}]
    # Columns at least 10 wide (docker's tabwriter minwidth), titles through header
    # functions that leave them alone, a column the template adds by range.
    out = format_rows(items, "table {{.ID}}\t{{upper .Names}}\t{{json .Labels}}|"
                      "{{pad .ID 1 1}}\t{{range .Ports}}{{.}}\t{{end}}", "", {"ID": "CONTAINER ID"})
    assert out.splitlines() == [
        "CONTAINER ID   NAMES     LABELS|CONTAINER ID   ",
        'a1             WEB       {"tier":"db"}| a1     80        443       ',
    ]
    # A title the header data cannot give (a field of a title) ends the header row there.
    out = format_rows(items, "table {{.ID}}\t{{.Labels.tier}}", "", {})
    assert out.splitlines() == ["ID        ", "a1        db"]
    # `--format table` alone is the command's default table.
    assert format_rows(items, "table", "table {{.Names}}", {}).splitlines() == ["NAMES", "web"]
    assert format_rows([], "table {{.Names}}\t{{.ID}}", "", {}) == "NAMES     ID"
    assert table([["1", "sh"]], ["PID", "CMD"]) == "PID   CMD\n1     sh"


def test_inspect_prints_each_object_or_json(capsys: pytest.CaptureFixture[str]) -> None:
    networks = [{"Name": "a", "IPAM": {"Config": [{"Subnet": "10.0.0.0/24"},
                                                  {"Subnet": "fd00::/64"}]}},
                {"Name": "b", "IPAM": {"Config": []}}]
    assert print_inspected(networks, ["No such network: c"],
                           "{{range .IPAM.Config}}{{.Subnet}} {{end}}") == 1
    out, err = capsys.readouterr()
    assert out == "10.0.0.0/24 fd00::/64 \n\n" and err == "Error: No such network: c\n"
    assert print_inspected(networks[1:], [], "json") == 0
    assert capsys.readouterr().out.startswith('[\n    {\n        "Name": "b"')
    with pytest.raises(TemplateSyntaxError):
        print_inspected(networks, [], "{{range .IPAM.Config}}")
    assert capsys.readouterr().out == ""  # parsed before anything is printed
