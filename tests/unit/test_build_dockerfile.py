"""The Dockerfile parser: Docker's Dockerfile reference, case by case, and the errors
that name the file and the line."""

from __future__ import annotations

import random

import pytest

from dockyard.build.dockerfile import (
    Dockerfile,
    DockerfileError,
    Flag,
    Heredoc,
    Instruction,
    parse,
    parse_instruction,
)
from dockyard.errors import InvalidArgument


def only(text: str) -> Instruction:
    """The one instruction after ``FROM scratch`` in ``text``."""
    (stage,) = parse("FROM scratch\n" + text).stages
    (ins,) = stage.instructions
    return ins


def error(text: str, filename: str = "Dockerfile") -> str:
    with pytest.raises(DockerfileError) as caught:
        parse(text, filename)
    return str(caught.value)


# -- stages, ARG before FROM ---------------------------------------------------------------

def test_stages_meta_args_and_names() -> None:
    df = parse("ARG BASE=busybox\nARG TAG\n"
               "FROM ${BASE}:$TAG AS Build\nRUN make\n"
               "from --platform=$BUILDPLATFORM scratch\nCOPY --from=build /out /\n")
    assert isinstance(df, Dockerfile)
    assert [a.args for a in df.meta_args] == [("BASE=busybox",), ("TAG",)]
    first, second = df.stages
    assert (first.index, first.base, first.name, first.platform, first.line) == \
        (0, "${BASE}:$TAG", "build", None, 3)
    assert [i.keyword for i in first.instructions] == ["RUN"]
    assert (second.index, second.base, second.name, second.platform, second.line) == \
        (1, "scratch", None, "$BUILDPLATFORM", 5)
    assert second.instructions[0].flag("from") == "build"


def test_from_as_is_case_insensitive_and_kept_as_written() -> None:
    (stage,) = parse("FROM busybox as Builder-1.x_y\n").stages
    assert stage.name == "builder-1.x_y"


@pytest.mark.parametrize(("text", "message"), [
    ("FROM busybox AS 1st\n",
     'Dockerfile:1: invalid name for build stage: "1st", name can\'t start with a number'),
    ("FROM busybox AS a/b\n", "Dockerfile:1: invalid name for build stage"),
    ("FROM busybox LIKE x\n", "Dockerfile:1: FROM expects 'AS' as its second argument"),
    ("FROM busybox AS\n", "Dockerfile:1: FROM requires either one or three arguments"),
    ("FROM\n", "Dockerfile:1: FROM requires either one or three arguments"),
    ("FROM a AS x\nFROM b AS X\n", "Dockerfile:2: duplicate stage name 'x'"),
    ("FROM --chown=1 busybox\n", "Dockerfile:1: unknown flag: chown"),
])
def test_bad_from(text: str, message: str) -> None:
    assert error(text).startswith(message)


def test_instruction_before_from_other_than_arg() -> None:
    assert error("# hello\nARG A\nRUN echo\nFROM busybox\n").startswith(
        "Dockerfile:3: no build stage in current context")


def test_empty_and_stageless_files() -> None:
    assert error("\n# only a comment\n\n") == "Dockerfile: file with no instructions"
    assert error("ARG A=1\n").startswith("Dockerfile: dockerfile contains no stages")


# -- keywords, comments, white space, continuations -----------------------------------------

def test_keywords_are_case_insensitive_and_leading_space_is_ignored() -> None:
    df = parse("from busybox\n   run echo hi\n\tCmd [\"sh\"]\n")
    assert [(i.keyword, i.args, i.line) for i in df.stages[0].instructions] == [
        ("RUN", ("echo hi",), 2), ("CMD", ("sh",), 3)]


def test_comments_only_at_line_start() -> None:
    df = parse("# first\nFROM busybox\n  # indented comment\n"
               "RUN echo hi # not a comment\n#RUN echo gone\n")
    (ins,) = df.stages[0].instructions
    assert ins.args == ("echo hi # not a comment",)
    assert ins.line == 4


def test_continuations_join_lines_keep_their_indent_and_skip_comments() -> None:
    ins = only("RUN apt-get update && \\\n"
               "    # a comment inside the continuation\n"
               "\n"
               "    apt-get install -y x \\  \t\n"
               "    && echo done\n"
               "CMD x\n".removesuffix("CMD x\n"))
    assert ins.args == ("apt-get update &&     apt-get install -y x     && echo done",)
    assert ins.original == "RUN apt-get update &&     apt-get install -y x     && echo done"
    assert ins.line == 2


def test_an_escaped_escape_does_not_continue_the_line() -> None:
    df = parse("FROM busybox\nRUN echo a\\\\\nRUN echo b\n")
    assert [i.args for i in df.stages[0].instructions] == [("echo a\\\\",), ("echo b",)]


def test_line_numbers_count_every_physical_line() -> None:
    df = parse("FROM busybox\nRUN a \\\n  b \\\n  c\n\n# c\nRUN d\n")
    assert [i.line for i in df.stages[0].instructions] == [2, 7]


def test_continuation_at_end_of_file_is_fine() -> None:
    assert only("RUN echo hi \\\n").args == ("echo hi",)
    assert only("RUN echo hi \\").args == ("echo hi",)


def test_crlf_line_ends_and_byte_order_mark() -> None:
    df = parse("\ufeff# escape=`\r\nFROM busybox\r\nRUN echo a `\r\n  b\r\n")
    assert df.escape == "`"
    assert df.stages[0].instructions[0].args == ("echo a   b",)


def test_a_lone_escape_line_starts_a_continued_instruction() -> None:
    assert only("\\\nRUN echo\n").args == ("echo",)


# -- parser directives -------------------------------------------------------------------

def test_directives_at_the_top() -> None:
    df = parse("# syntax=docker/dockerfile:1.7\n#  CHECK = skip=all\n#escape=`\n"
               "FROM busybox\nRUN echo a `\n  b\n")
    assert df.directives == {"syntax": "docker/dockerfile:1.7", "check": "skip=all",
                             "escape": "`"}
    assert df.escape == "`"
    assert df.stages[0].instructions[0].args == ("echo a   b",)


def test_backslash_is_literal_with_the_backtick_escape() -> None:
    df = parse("# escape=`\nFROM busybox\nCOPY c:\\src\\ c:\\dst\\\nRUN dir\n")
    copy, run = df.stages[0].instructions
    assert copy.args == ("c:\\src\\", "c:\\dst\\")
    assert run.args == ("dir",)


@pytest.mark.parametrize("text", [
    "\n# escape=`\nFROM busybox\n",            # after an empty line
    "# a comment\n# escape=`\nFROM busybox\n",  # after a comment
    "# unknown=x\n# escape=`\nFROM busybox\n",  # after an unknown directive
    "FROM busybox\n# escape=`\n",              # after an instruction
    "#  esc ape=`\nFROM busybox\n",          # not of the form key=value
])
def test_directives_elsewhere_are_comments(text: str) -> None:
    df = parse(text)
    assert df.escape == "\\"
    assert "escape" not in df.directives


def test_shebang_before_directives() -> None:
    assert parse("#!/usr/bin/env dockyard\n# escape=`\nFROM busybox\n").escape == "`"


def test_bad_directives() -> None:
    assert error("# escape=`\n# ESCAPE=\\\nFROM busybox\n") == \
        "Dockerfile:2: only one escape parser directive can be used"
    assert error("# escape=x\nFROM busybox\n") == \
        "Dockerfile:1: invalid escape token 'x' does not match ` or \\"


# -- JSON and shell forms ------------------------------------------------------------------

@pytest.mark.parametrize(("text", "args", "is_json"), [
    ('RUN ["echo", "a b", "\\u00e9"]', ("echo", "a b", "\u00e9"), True),
    ('CMD  [ "sh" , "-c" ]  ', ("sh", "-c"), True),
    ("CMD []", (), True),
    ("ENTRYPOINT [\"a\"] # x", ("a",), True),   # Docker ignores what follows the array
    ("RUN [bad json", ("[bad json",), False),
    ("RUN ['single', 'quotes']", ("['single', 'quotes']",), False),
    ("CMD [NaN]", ("[NaN]",), False),
    ("CMD echo $HOME", ("echo $HOME",), False),
    ("CMD", (), False),
    ("ENTRYPOINT", (), False),
])
def test_json_and_shell_forms(text: str, args: tuple[str, ...], is_json: bool) -> None:
    ins = only(text + "\n")
    assert (ins.args, ins.json) == (args, is_json)


def test_a_json_array_of_non_strings_is_an_error() -> None:
    assert error("FROM busybox\nCMD [\"a\", 1]\n") == ("Dockerfile:2: when using JSON array "
                                                      "syntax, arrays must be comprised of "
                                                      "strings only")


def test_shell_needs_json() -> None:
    assert only('SHELL ["/bin/bash", "-eu", "-c"]\n').args == ("/bin/bash", "-eu", "-c")
    assert error("FROM busybox\nSHELL /bin/bash -c\n").startswith(
        "Dockerfile:2: SHELL requires the arguments to be in JSON form")
    assert error("FROM busybox\nSHELL []\n") == \
        "Dockerfile:2: SHELL requires at least one argument"


# -- flags ---------------------------------------------------------------------------------

def test_flags_in_order_repeatable_with_quotes() -> None:
    ins = only('RUN --mount=type=cache,target=/root/.cache --network=none '
               '--mount="type=tmpfs,target=/t" echo --not-a-flag\n')
    assert ins.flags == (Flag("mount", "type=cache,target=/root/.cache"),
                         Flag("network", "none"), Flag("mount", "type=tmpfs,target=/t"))
    assert ins.flag_values("mount") == ["type=cache,target=/root/.cache",
                                        "type=tmpfs,target=/t"]
    assert ins.flag("network") == "none"
    assert ins.flag("chown") is None
    assert ins.args == ("echo --not-a-flag",)


def test_bare_flag_and_double_dash() -> None:
    ins = only("COPY --link --chmod=755 -- --odd-name /dst\n")
    assert ins.flags == (Flag("link", None), Flag("chmod", "755"))
    assert ins.flag("link") == ""
    assert ins.args == ("--odd-name", "/dst")


def test_json_form_after_flags() -> None:
    ins = only('RUN --network=host ["echo", "x"]\n')
    assert (ins.args, ins.json, ins.flag("network")) == (("echo", "x"), True, "host")


@pytest.mark.parametrize(("text", "message"), [
    ("RUN --chown=1 echo", "unknown flag: chown"),
    ("CMD --port 80", "unknown flag: port"),
    ("ENV --x=1 A=1", "unknown flag: x"),
    ("COPY --from=a --from=b x /", "duplicate flag specified: from"),
    ("COPY --from x /", "missing a value on flag: from"),
    ("COPY --link= x /", "missing a value on flag: link"),
    ("COPY --link=maybe x /", "expecting boolean value for flag link, not: maybe"),
    ("RUN --mount echo", "missing a value on flag: mount"),
])
def test_bad_flags(text: str, message: str) -> None:
    assert error(f"FROM busybox\n{text}\n") == f"Dockerfile:2: {message}"


# -- heredocs ------------------------------------------------------------------------------

def test_run_heredoc() -> None:
    ins = only("RUN <<EOF\necho hello\n  # kept\n\necho $HOME \\\nEOF\n")
    assert ins.args == ("<<EOF",)
    assert ins.heredocs == (Heredoc("EOF", "echo hello\n  # kept\n\necho $HOME \\\n", True),)


def test_heredoc_after_a_command_and_with_a_quoted_delimiter() -> None:
    ins = only("RUN python3 <<'PY'\nprint('$x')\nPY\n")
    assert ins.args == ("python3 <<'PY'",)
    assert ins.heredocs == (Heredoc("PY", "print('$x')\n", False),)
    ins = only('RUN <<"EOF" cat > /x\n$y\nEOF\n')
    assert ins.heredocs == (Heredoc("EOF", "$y\n", False),)


def test_heredoc_with_dash_strips_tabs() -> None:
    ins = only("RUN <<-EOF\n\t\techo a\n\t  echo b\n\tEOF\n")
    assert ins.heredocs == (Heredoc("EOF", "echo a\n  echo b\n", True),)


def test_several_heredocs_in_one_instruction() -> None:
    df = parse("FROM busybox\nRUN <<A cat /dev/stdin - <<B\na\nA\nb\nB\nRUN echo next\n")
    first, second = df.stages[0].instructions
    assert first.heredocs == (Heredoc("A", "a\n", True), Heredoc("B", "b\n", True))
    assert (second.args, second.line) == (("echo next",), 7)


def test_copy_heredocs() -> None:
    ins = only("COPY --chmod=755 <<one.sh <<two.sh /usr/bin/\n#!/bin/sh\nONE\none.sh\n"
               "echo two\ntwo.sh\n")
    assert ins.args == ("<<one.sh", "<<two.sh", "/usr/bin/")
    assert ins.heredocs == (Heredoc("one.sh", "#!/bin/sh\nONE\n", True),
                            Heredoc("two.sh", "echo two\n", True))


def test_empty_heredoc_a_file_descriptor_and_a_continued_opening_line() -> None:
    assert only("RUN <<EOF\nEOF\n").heredocs == (Heredoc("EOF", "", True),)
    assert only("RUN cat 3<<EOF\nx\nEOF\n").heredocs == (Heredoc("EOF", "x\n", True),)
    ins = only("RUN <<EOF bash \\\n  -x\necho hi\nEOF\n")
    assert ins.args == ("<<EOF bash   -x",)
    assert ins.heredocs == (Heredoc("EOF", "echo hi\n", True),)


def test_heredoc_delimiters_partly_quoted_or_escaped() -> None:
    assert only('RUN <<E"O"F\n$x\nEOF\n').heredocs == (Heredoc("EOF", "$x\n", False),)
    # as in Docker, an escape is not a quote: the body is still expanded
    assert only("RUN <<\\EOF\n$x\nEOF\n").heredocs == (Heredoc("EOF", "$x\n", True),)
    # an empty delimiter opens nothing
    assert only('RUN echo <<""\n').heredocs == ()


def test_onbuild_copy_heredoc_with_the_backtick_escape() -> None:
    df = parse("# escape=`\nFROM busybox\nONBUILD COPY <<EOF C:\\app\\\nhello\nEOF\n")
    (ins,) = df.stages[0].instructions
    assert ins.args == ("COPY <<EOF C:\\app\\\nhello\nEOF",)
    trigger = parse_instruction(ins.args[0], escape="`")
    assert trigger.args == ("<<EOF", "C:\\app\\")
    assert trigger.heredocs == (Heredoc("EOF", "hello\n", True),)


def test_heredoc_needs_an_exact_terminator() -> None:
    ins = only("RUN <<EOF\n EOF\nEOF \nEOF\n")
    assert ins.heredocs[0].content == " EOF\nEOF \n"


def test_no_heredoc_in_json_form_quotes_or_other_instructions() -> None:
    assert only('RUN ["sh", "-c", "cat <<EOF"]\n').heredocs == ()
    assert only("RUN echo '<<EOF'\n").heredocs == ()
    assert only("RUN cat <<< here\n").heredocs == ()
    df = parse("FROM busybox\nCMD cat <<EOF\nRUN echo\n")
    assert [i.keyword for i in df.stages[0].instructions] == ["CMD", "RUN"]


def test_heredoc_lines_count() -> None:
    assert error("FROM busybox\nRUN <<EOF\na\nb\nEOF\nFOO\n") == \
        "Dockerfile:6: unknown instruction: FOO"


def test_unterminated_heredoc() -> None:
    assert error("FROM busybox\nRUN echo\nRUN <<EOF\necho hi\n").startswith(
        "Dockerfile:3: unterminated heredoc")


def test_heredoc_destination_is_refused() -> None:
    assert error("FROM busybox\nCOPY a <<EOF\nx\nEOF\n") == \
        "Dockerfile:2: COPY cannot accept a heredoc as a destination"


# -- every instruction's arguments ---------------------------------------------------------

@pytest.mark.parametrize(("text", "args"), [
    ("COPY a b /dst/", ("a", "b", "/dst/")),
    ('COPY ["a b", "/d st/"]', ("a b", "/d st/")),
    ("ADD --chown=1:2 https://x/y.tgz /", ("https://x/y.tgz", "/")),
    ("ENV A=1 B=\"two words\" C=x\\ y D=", ("A=1", 'B="two words"', "C=x\\ y", "D=")),
    ("ENV PATH /usr/local/bin:$PATH", ("PATH=/usr/local/bin:$PATH",)),
    ("ENV MSG hello   big world", ("MSG=hello   big world",)),
    ('LABEL "com.x"="a b" version=1', ('"com.x"="a b"', "version=1")),
    ("ARG A B=2 C=\"x y\"", ("A", "B=2", 'C="x y"')),
    ("EXPOSE 80/tcp  443 $PORT", ("80/tcp", "443", "$PORT")),
    ("VOLUME /a /b", ("/a", "/b")),
    ('VOLUME ["/data", "/var/log"]', ("/data", "/var/log")),
    ("USER app:app", ("app:app",)),
    ("WORKDIR /path with/spaces", ("/path with/spaces",)),
    ("STOPSIGNAL SIGKILL", ("SIGKILL",)),
    ("MAINTAINER Jane Doe <jane@example.com>", ("Jane Doe <jane@example.com>",)),
    ("HEALTHCHECK NONE", ("NONE",)),
    ("healthcheck none", ("NONE",)),
    ("HEALTHCHECK CMD curl -f http://localhost/", ("CMD", "curl -f http://localhost/")),
    ('HEALTHCHECK cmd ["curl", "-f", "x"]', ("CMD", "curl", "-f", "x")),
])
def test_arguments(text: str, args: tuple[str, ...]) -> None:
    assert only(text + "\n").args == args


def test_healthcheck_options_are_flags() -> None:
    ins = only("HEALTHCHECK --interval=5m --timeout=3s --start-period=1s "
               "--start-interval=2s --retries=3 CMD [\"true\"]\n")
    assert ins.json
    assert [(f.name, f.value) for f in ins.flags] == [
        ("interval", "5m"), ("timeout", "3s"), ("start-period", "1s"),
        ("start-interval", "2s"), ("retries", "3")]


def test_maintainer_is_still_read() -> None:
    assert only("MAINTAINER someone\n").keyword == "MAINTAINER"


@pytest.mark.parametrize(("text", "message"), [
    ("RUN", "RUN requires at least one argument"),
    ("COPY onlyone", "COPY requires at least two arguments, but only one was provided"),
    ("ADD", "ADD requires at least two arguments"),
    ("ENV", "ENV requires at least one argument"),
    ("ENV A", "ENV must have two arguments"),
    ("ENV A=1 B", 'Syntax error - can\'t find = in "B". Must be of the form: name=value'),
    ("ENV =1", "ENV names can not be blank"),
    ("LABEL", "LABEL requires at least one argument"),
    ("ARG", "ARG requires at least one argument"),
    ("ARG =x", "ARG names can not be blank"),
    ("EXPOSE", "EXPOSE requires at least one argument"),
    ("VOLUME", "VOLUME requires at least one argument"),
    ('VOLUME ["/a", " "]', "VOLUME specified can not be an empty string"),
    ("USER", "USER requires exactly one argument"),
    ("WORKDIR", "WORKDIR requires exactly one argument"),
    ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
    ("MAINTAINER", "MAINTAINER requires exactly one argument"),
    ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
    ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
    ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
    ("HEALTHCHECK CURL x", 'Unknown type "CURL" in HEALTHCHECK (try CMD)'),
    ("ONBUILD", "ONBUILD requires at least one argument"),
    ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ("ONBUILD from busybox", "FROM isn't allowed as an ONBUILD trigger"),
    ("ONBUILD MAINTAINER me", "MAINTAINER isn't allowed as an ONBUILD trigger"),
    ("ONBUILD FOO bar", "invalid ONBUILD trigger: unknown instruction: FOO"),
    ("ONBUILD COPY x", "invalid ONBUILD trigger: COPY requires at least two arguments"),
])
def test_missing_and_bad_arguments(text: str, message: str) -> None:
    assert error(f"FROM busybox\n\n{text}\n").startswith(f"Dockerfile:3: {message}")


# -- unknown instructions and error lines --------------------------------------------------

def test_unknown_instruction_names_file_and_line() -> None:
    text = "FROM busybox\nRUN echo\nFOOBAR baz\n"
    assert error(text) == "Dockerfile:3: unknown instruction: FOOBAR"
    assert error(text, "build/app.Dockerfile") == \
        "build/app.Dockerfile:3: unknown instruction: FOOBAR"


def test_unknown_instruction_suggests_a_close_one() -> None:
    assert error("FROM busybox\nRUNN echo\n") == \
        "Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)"


def test_error_is_an_invalid_argument_with_its_place() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse("FROM busybox\n\nWORKDIR\n", "df")
    assert isinstance(caught.value, DockerfileError)
    assert (caught.value.filename, caught.value.line, caught.value.reason) == \
        ("df", 3, "WORKDIR requires exactly one argument")
    assert caught.value.exit_code == 125


def test_error_in_a_continued_instruction_names_its_first_line() -> None:
    assert error("FROM busybox\nUSER \\\n\n# c\n").startswith(
        "Dockerfile:2: USER requires exactly one argument")


# -- ONBUILD ---------------------------------------------------------------------------------

def test_onbuild_keeps_the_trigger_text_and_parse_instruction_reads_it() -> None:
    ins = only("ONBUILD  COPY --chown=1 . /app\n")
    assert ins.args == ("COPY --chown=1 . /app",)
    trigger = parse_instruction(ins.args[0])
    assert (trigger.keyword, trigger.args, trigger.flag("chown")) == \
        ("COPY", (".", "/app"), "1")


def test_onbuild_trigger_with_a_heredoc() -> None:
    ins = only("onbuild run <<-EOF\n\techo from the child\n\tEOF\n")
    trigger = parse_instruction(ins.args[0], line=7)
    assert (trigger.keyword, trigger.line) == ("RUN", 7)
    assert trigger.heredocs == (Heredoc("EOF", "echo from the child\n", True),)


def test_parse_instruction_with_the_backtick_escape() -> None:
    trigger = parse_instruction("RUN echo a `\n  b", escape="`")
    assert trigger.args == ("echo a   b",)


def test_parse_instruction_wants_exactly_one() -> None:
    with pytest.raises(DockerfileError, match="expected one instruction, found 2"):
        parse_instruction("RUN a\nRUN b")
    with pytest.raises(DockerfileError, match="unknown instruction: NOPE"):
        parse_instruction("NOPE x", line=4)


# -- hostile input ---------------------------------------------------------------------------

KEYWORDS = ["RUN", "COPY", "ADD", "ENV", "ARG", "ONBUILD RUN", "HEALTHCHECK", "CMD", "SHELL",
            "LABEL", "EXPOSE", "VOLUME", "USER", "WORKDIR", "FROM", "  run", "#"]
TOKENS = ["a", "b=c", " ", "\t", "\\\n", "\\", "`", "`\n", "#", "<<EOF", "<<-'E'",
          "\nEOF", "\n\tE", "[", "]", '"', "'", ",", "=", "--mount=x", "--link", "${A:-x}",
          "$", "\r", "\ufeff", "\x00", "é", "\n"]


def test_random_input_fails_only_with_dockerfile_errors() -> None:
    rng = random.Random(6)
    parsed = 0
    for _ in range(3000):
        lines = [rng.choice(["", "# escape=`\n", "\n"]), "FROM a\n"]
        for _ in range(rng.randint(0, 6)):
            words = "".join(rng.choice(TOKENS) for _ in range(rng.randint(0, 6)))
            lines.append(f"{rng.choice(KEYWORDS)} {words}\n")
        try:
            df = parse("".join(lines))
        except DockerfileError as e:
            assert e.line is None or e.line >= 1
            continue
        parsed += 1
        for stage in df.stages:
            assert all(ins.line > stage.line for ins in stage.instructions)
    assert parsed > 300       # the generator makes valid files too
