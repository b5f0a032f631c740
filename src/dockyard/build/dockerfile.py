"""The Dockerfile parser: text in, an AST out (``Dockerfile``), following Docker's
Dockerfile reference; nothing here knows images or containers.

CONTRACT (shared by the parser and the builder; change it only together):

- ``parse(text, filename="Dockerfile") -> Dockerfile``; every error is a
  ``DockerfileError`` whose message names the file and line: ``Dockerfile:7: unknown
  instruction: FOOBAR``.
- Nothing is expanded here: ``$VAR`` and quotes stay as written, because their values
  are only known while building. The builder expands with ``dockyard.build.shell``
  (``expand_word``/``expand_words``) where Docker does (ADD COPY ENV EXPOSE FROM
  LABEL STOPSIGNAL USER VOLUME WORKDIR, and ONBUILD never).
- ``Instruction.args`` by keyword:

  ======================  ==================================================
  RUN CMD ENTRYPOINT      JSON form: the array's strings, ``json=True``; shell
                          form: one string, the command text with line
                          continuations joined (and comment lines inside them
                          dropped), ``json=False``
  SHELL                   JSON form only: the array
  HEALTHCHECK             ``("NONE",)``; or ``("CMD", ...)`` followed by the
                          command as for RUN (``json`` tells the form); its
                          options (--interval...) are ``flags``
  COPY ADD                the words (sources..., destination) as written; JSON
                          form decoded; a heredoc source is the word ``<<EOF``
                          (``<<-EOF``, ``<<"EOF"``) with its body in ``heredocs``
  ENV LABEL               one ``key=value`` word per pair, quotes kept as
                          written; the legacy ``ENV key value words`` is
                          ``("key=value words",)``
  ARG                     one word per argument: ``name`` or ``name=default``
  FROM                    ``(image,)`` or ``(image, "AS", name)``
  EXPOSE VOLUME           the words (VOLUME's JSON form decoded)
  USER WORKDIR STOPSIGNAL the rest of the line as one string
  MAINTAINER              the rest of the line as one string
  ONBUILD                 the trigger's text as one string, its here-documents'
                          bodies and delimiters included (``parse_instruction``
                          parses it when a child build fires it)
  ======================  ==================================================

- ``flags`` are the ``--name=value`` (or bare ``--name``) options before the
  arguments, in order, repeatable (``RUN --mount=... --mount=...``). Only the flags in
  ``_FLAGS`` are accepted, each of its kind; any other is Docker's "unknown flag: x".
- ``DockerfileError.reason`` is the message without its place: an error found while
  building (an expansion, a source) is re-raised with the instruction's line.
- ``heredocs`` are the here-documents the instruction opened, in order. A heredoc
  whose delimiter was quoted is not expanded (``expand=False``); ``<<-`` strips
  leading tabs from its body (already done in ``content``).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from dockyard.errors import InvalidArgument

__all__ = ["Dockerfile", "DockerfileError", "Flag", "Heredoc", "Instruction", "Stage",
           "parse", "parse_instruction"]


class DockerfileError(InvalidArgument):
    """A Dockerfile that cannot be parsed or built; the message names the line."""

    def __init__(self, message: str, *, filename: str = "Dockerfile",
                 line: int | None = None) -> None:
        self.filename = filename
        self.line = line
        self.reason = message      # without the place, to re-raise it at another line
        super().__init__(f"{filename}:{line}: {message}" if line else f"{filename}: {message}")


@dataclass(frozen=True)
class Flag:
    name: str              # without the dashes: "from", "mount", "chown"
    value: str | None      # None for a bare flag such as --link


@dataclass(frozen=True)
class Heredoc:
    name: str              # the delimiter word, without quotes: "EOF"
    content: str           # the body, ending with "\n" as written; tabs stripped for <<-
    expand: bool           # False when the delimiter was quoted ("EOF" or 'EOF')


@dataclass(frozen=True)
class Instruction:
    keyword: str                       # upper case: "RUN", "COPY", ...
    args: tuple[str, ...]
    flags: tuple[Flag, ...] = ()
    json: bool = False
    heredocs: tuple[Heredoc, ...] = ()
    line: int = 0                      # the first line of the instruction, from 1
    original: str = ""                 # the source text, continuations joined

    def flag(self, name: str) -> str | None:
        """The last value of flag ``name`` ("" for a bare flag), None when absent."""
        for flag in reversed(self.flags):
            if flag.name == name:
                return "" if flag.value is None else flag.value
        return None

    def flag_values(self, name: str) -> list[str]:
        return [flag.value or "" for flag in self.flags if flag.name == name]


@dataclass(frozen=True)
class Stage:
    index: int                         # from 0, in file order
    base: str                          # FROM's image word, unexpanded
    name: str | None                   # the AS name, lower case
    platform: str | None               # FROM --platform, unexpanded
    line: int
    instructions: tuple[Instruction, ...] = ()   # after FROM, FROM itself excluded


@dataclass(frozen=True)
class Dockerfile:
    filename: str
    escape: str                        # "\\" or "`" (the escape directive)
    directives: dict[str, str] = field(default_factory=dict)   # syntax, escape, check
    meta_args: tuple[Instruction, ...] = ()   # the ARGs before the first FROM
    stages: tuple[Stage, ...] = ()


_KEYWORDS = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
    "WORKDIR",
})

# The flags each instruction takes, by kind: "string" (--name=value, once), "strings"
# (repeatable), "bool" (--name, --name=true|false). Docker's other flags (COPY
# --parents, --exclude, RUN --security...) are refused as unknown: the builder does not
# implement them, and a flag silently ignored would build something else.
_FLAGS: dict[str, dict[str, str]] = {
    "FROM": {"platform": "string"},
    "RUN": {"mount": "strings", "network": "string"},
    "COPY": {"from": "string", "chown": "string", "chmod": "string", "link": "bool"},
    "ADD": {"chown": "string", "chmod": "string", "link": "bool", "checksum": "string"},
    "HEALTHCHECK": {"interval": "string", "timeout": "string", "start-period": "string",
                    "start-interval": "string", "retries": "string"},
}

_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*")
_DIRECTIVES = frozenset({"syntax", "escape", "check"})
_HEREDOC_WORD = re.compile(r"(\d*)<<(-?)([^<]*)")
_HEREDOC_KEYWORDS = frozenset({"RUN", "COPY", "ADD"})
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
_SPACE = re.compile(r"[\t\v\f\r ]+")
_STAGE_NAME = re.compile(r"[a-z][a-z0-9-_.]*")
_ONBUILD_PREFIX = re.compile(r"^\s*ONBUILD\s*", re.IGNORECASE)
_NOT_STRINGS = "when using JSON array syntax, arrays must be comprised of strings only"


def parse(text: str, filename: str = "Dockerfile") -> Dockerfile:
    """Parse a whole Dockerfile."""
    lines = _Lines(text)
    directives = _directives(lines, filename)
    escape = directives.get("escape", "\\")
    instructions = _instructions(lines, escape, filename)
    if not instructions:
        raise DockerfileError("file with no instructions", filename=filename)
    meta_args: list[Instruction] = []
    stages: list[tuple[Instruction, list[Instruction]]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            stages.append((ins, []))
        elif stages:
            stages[-1][1].append(ins)
        elif ins.keyword == "ARG":
            meta_args.append(ins)
        else:
            raise DockerfileError("no build stage in current context: a Dockerfile starts "
                                  "with FROM (only ARG may come before it)",
                                  filename=filename, line=ins.line)
    if not stages:
        raise DockerfileError("dockerfile contains no stages to build: add a FROM",
                              filename=filename)
    return Dockerfile(filename=filename, escape=escape, directives=directives,
                      meta_args=tuple(meta_args),
                      stages=_stages(stages, filename))


def parse_instruction(text: str, *, escape: str = "\\", filename: str = "Dockerfile",
                      line: int = 1) -> Instruction:
    """Parse one instruction (an ONBUILD trigger); ``line`` is where ``text`` starts."""
    found = _instructions(_Lines(text, first=line), escape, filename)
    if len(found) != 1:
        raise DockerfileError(f"expected one instruction, found {len(found)}",
                              filename=filename, line=line)
    return found[0]


def _stages(found: list[tuple[Instruction, list[Instruction]]],
            filename: str) -> tuple[Stage, ...]:
    stages: list[Stage] = []
    names: set[str] = set()
    for index, (ins, body) in enumerate(found):
        name = ins.args[2].lower() if len(ins.args) == 3 else None
        if name is not None:
            if name in names:
                raise DockerfileError(f"duplicate stage name {name!r}: name each stage once",
                                      filename=filename, line=ins.line)
            names.add(name)
        stages.append(Stage(index=index, base=ins.args[0], name=name,
                            platform=ins.flag("platform"), line=ins.line,
                            instructions=tuple(body)))
    return tuple(stages)


class _Lines:
    """The physical lines of a text, each with its line break, read front to back."""

    def __init__(self, text: str, first: int = 1) -> None:
        self.lines: list[str] = re.findall(r"[^\n]*\n|[^\n]+", text.removeprefix("\ufeff"))
        self.index = 0
        self.first = first

    def next(self) -> str | None:
        if self.index == len(self.lines):
            return None
        self.index += 1
        return self.lines[self.index - 1]

    @property
    def number(self) -> int:
        """The number of the line ``next`` returned last."""
        return self.first + self.index - 1


def _chomp(line: str) -> str:
    return line.rstrip("\r\n")


def _directives(lines: _Lines, filename: str) -> dict[str, str]:
    """The parser directives: comments of the form ``# key=value`` at the very top; the
    first line that is not one (an empty line, another comment, an unknown key, an
    instruction) ends them, as in Docker."""
    found: dict[str, str] = {}
    for number, raw in enumerate(lines.lines, lines.first):
        text = _chomp(raw).lstrip()
        if number == lines.first and text.startswith("#!"):
            continue
        match = _DIRECTIVE.fullmatch(text)
        if match is None or match[1].lower() not in _DIRECTIVES:
            break
        key, value = match[1].lower(), match[2]
        if key in found:
            raise DockerfileError(f"only one {key} parser directive can be used",
                                  filename=filename, line=number)
        if key == "escape" and value not in ("\\", "`"):
            raise DockerfileError(f"invalid escape token '{value}' does not match ` or \\",
                                  filename=filename, line=number)
        found[key] = value
    return found


def _instructions(lines: _Lines, escape: str, filename: str) -> list[Instruction]:
    # The escape character ends a continued line, unless it is itself escaped ("\\").
    continuation = re.compile(f"(?<!{re.escape(escape)}){re.escape(escape)}[ \t]*$")

    def cut(text: str) -> tuple[str, bool]:
        match = continuation.search(text)
        return (text, False) if match is None else (text[:match.start()], True)

    found: list[Instruction] = []
    while (raw := lines.next()) is not None:
        text = _chomp(raw).lstrip()
        if text.startswith("#"):
            continue
        start = lines.number
        text, more = cut(text)
        # Inside a continuation, comment lines and empty lines are dropped; the
        # continued lines keep their leading white space.
        while more and (raw := lines.next()) is not None:
            part = _chomp(raw)
            if part.lstrip().startswith("#") or not part.strip():
                continue
            part, more = cut(part)
            text += part
        if text.strip():
            try:
                found.append(_instruction(text, lines, escape, start))
            except DockerfileError as e:
                if e.line is not None:
                    raise
                raise DockerfileError(e.reason, filename=filename, line=start) from None
    return found


def _instruction(text: str, lines: _Lines, escape: str, start: int) -> Instruction:
    word, flag_words, rest = _split_command(text)
    keyword = word.upper()
    if keyword not in _KEYWORDS:
        close = difflib.get_close_matches(keyword, sorted(_KEYWORDS), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise DockerfileError(f"unknown instruction: {word}{hint}")
    flags = tuple(_flag(w) for w in flag_words)
    heredocs = _read_heredocs(text, lines, escape) if _opens_heredocs(keyword, rest) else []
    original = text.strip()
    if keyword == "ONBUILD":
        args: tuple[str, ...] = (_onbuild(rest, original, heredocs, escape),)
        is_json = False
    else:
        args, is_json = _ARGUMENTS[keyword](rest, escape)
    if not (keyword == "HEALTHCHECK" and args[0] == "NONE"):
        _check_flags(keyword, flags)
    if keyword in ("COPY", "ADD") and _heredoc(args[-1]) is not None and not is_json:
        raise DockerfileError(f"{keyword} cannot accept a heredoc as a destination")
    return Instruction(keyword=keyword, args=args, flags=flags, json=is_json,
                       heredocs=tuple(h.heredoc() for h in heredocs), line=start,
                       original=original)


def _split_command(text: str) -> tuple[str, list[str], str]:
    """(the keyword as written, the ``--flag`` words, the rest)."""
    parts = _SPACE.split(text.strip(), maxsplit=1)
    if len(parts) == 1:
        return parts[0], [], ""
    rest, flags = _extract_flags(parts[1])
    return parts[0], flags, rest.strip()


def _extract_flags(line: str) -> tuple[str, list[str]]:
    """The leading words that start with ``--`` (quotes and ``\\`` escapes removed, a
    lone ``--`` ends them) and the text after them."""
    words: list[str] = []
    pos, end = 0, len(line)
    while True:
        while pos < end and line[pos].isspace():
            pos += 1
        if not line.startswith("--", pos):
            return line[pos:], words
        word: list[str] = []
        quote = ""
        while pos < end and (quote or not line[pos].isspace()):
            ch = line[pos]
            pos += 1
            if ch == "\\":
                if pos < end:
                    word.append(line[pos])
                    pos += 1
            elif ch == quote:
                quote = ""
            elif ch in "'\"" and not quote:
                quote = ch
            else:
                word.append(ch)
        if "".join(word) == "--":
            return line[pos:], words
        words.append("".join(word))


def _flag(word: str) -> Flag:
    name, eq, value = word[2:].partition("=")
    return Flag(name, value if eq else None)


def _check_flags(keyword: str, flags: tuple[Flag, ...]) -> None:
    known = _FLAGS.get(keyword, {})
    seen: set[str] = set()
    for flag in flags:
        kind = known.get(flag.name)
        if kind is None:
            raise DockerfileError(f"unknown flag: {flag.name}")
        if flag.name in seen and kind != "strings":
            raise DockerfileError(f"duplicate flag specified: {flag.name}")
        seen.add(flag.name)
        if kind == "bool":
            if flag.value == "":
                raise DockerfileError(f"missing a value on flag: {flag.name}")
            if flag.value is not None and flag.value.lower() not in ("true", "false"):
                raise DockerfileError(f"expecting boolean value for flag {flag.name}, "
                                      f"not: {flag.value}")
        elif flag.value is None:
            raise DockerfileError(f"missing a value on flag: {flag.name}")


@dataclass
class _OpenHeredoc:
    name: str
    chomp: bool
    expand: bool
    raw: str = ""          # the body as written, tabs kept

    def heredoc(self) -> Heredoc:
        content = _LEADING_TABS.sub("", self.raw) if self.chomp else self.raw
        return Heredoc(self.name, content, self.expand)


def _opens_heredocs(keyword: str, rest: str) -> bool:
    if keyword == "ONBUILD":
        trigger, _, rest = _split_command(rest)
        keyword = trigger.upper()
    return keyword in _HEREDOC_KEYWORDS and "<<" in rest and _json_array(rest) is None


def _heredoc(word: str) -> _OpenHeredoc | None:
    """The here-document that ``word`` opens (``<<EOF``, ``<<-"EOF"``), if it does."""
    match = _HEREDOC_WORD.fullmatch(word)
    if match is None or not match[3]:
        return None
    name, quoted = _unquote(match[3])
    return _OpenHeredoc(name, chomp=match[2] == "-", expand=not quoted) if name else None


def _read_heredocs(text: str, lines: _Lines, escape: str) -> list[_OpenHeredoc]:
    found = [h for h in map(_heredoc, _words(text, escape)) if h is not None]
    for heredoc in found:
        body: list[str] = []
        while (raw := lines.next()) is not None:
            line = _chomp(raw)
            if (line.lstrip("\t") if heredoc.chomp else line) == heredoc.name:
                break
            body.append(raw)
        else:
            raise DockerfileError(f"unterminated heredoc: no line {heredoc.name!r} ends the "
                                  f"here-document <<{heredoc.name}")
        heredoc.raw = "".join(body)
    return found


def _unquote(word: str) -> tuple[str, bool]:
    """``word`` with quotes and escapes removed, and whether it had quotes."""
    out: list[str] = []
    quote = ""
    quoted = False
    chars = iter(word)
    for ch in chars:
        if quote == "'" and ch != "'":
            out.append(ch)
        elif ch == "\\":
            out.append(next(chars, ""))
        elif ch == quote:
            quote = ""
        elif ch in "'\"" and not quote:
            quote, quoted = ch, True
        else:
            out.append(ch)
    if quote:
        raise DockerfileError(f"unterminated quote in heredoc delimiter: {word}")
    return "".join(out), quoted


def _words(text: str, escape: str) -> list[str]:
    """``text`` split on white space outside quotes, quotes and escapes kept (Docker's
    word splitting of ENV, LABEL and ARG)."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    keep = False           # a quoted empty word ("") is a word
    i = 0
    while i < len(text):
        ch = text[i]
        i += 1
        if not quote and ch.isspace():
            if word or keep:
                words.append("".join(word))
            word, keep = [], False
            continue
        if ch == escape and quote != "'":
            if i == len(text):
                break
            word.append(ch)
            ch = text[i]
            i += 1
        elif ch == quote:
            quote = ""
        elif ch in "'\"" and not quote:
            quote, keep = ch, True
        word.append(ch)
    if word or keep:
        words.append("".join(word))
    return words


def _json_array(rest: str) -> list[str] | None:
    """The strings of ``rest`` when it is a JSON array, else None (the shell form)."""
    if not rest.startswith("["):
        return None
    try:
        # Docker decodes the first JSON value and ignores what follows it.
        value, _ = _JSON.raw_decode(rest)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise DockerfileError(_NOT_STRINGS)
    return value


def _not_json(constant: str) -> None:
    # Go's encoding/json, which Docker uses, has no NaN or Infinity.
    raise ValueError(constant)


_JSON = json.JSONDecoder(parse_constant=_not_json)


_Arguments = tuple[tuple[str, ...], bool]


def _command(rest: str, escape: str) -> _Arguments:
    array = _json_array(rest)
    if array is not None:
        return tuple(array), True
    return ((rest,) if rest else ()), False


def _run(rest: str, escape: str) -> _Arguments:
    args, is_json = _command(rest, escape)
    if not args:
        raise DockerfileError("RUN requires at least one argument")
    return args, is_json


def _shell(rest: str, escape: str) -> _Arguments:
    args, is_json = _command(rest, escape)
    if not args:
        raise DockerfileError("SHELL requires at least one argument")
    if not is_json:
        raise DockerfileError('SHELL requires the arguments to be in JSON form: '
                              'SHELL ["/bin/sh", "-c"]')
    return args, True


def _healthcheck(rest: str, escape: str) -> _Arguments:
    parts = rest.split(maxsplit=1)
    if not parts:
        raise DockerfileError("HEALTHCHECK requires at least one argument")
    kind = parts[0].upper()
    command, is_json = _command(parts[1] if len(parts) == 2 else "", escape)
    if kind == "NONE":
        if command:
            raise DockerfileError("HEALTHCHECK NONE takes no arguments")
        return ("NONE",), False
    if kind != "CMD":
        raise DockerfileError(f'Unknown type "{parts[0]}" in HEALTHCHECK (try CMD)')
    if not command:
        raise DockerfileError("Missing command after HEALTHCHECK CMD")
    return ("CMD", *command), is_json


def _list(keyword: str, least: int, *, allow_json: bool) -> Callable[[str, str], _Arguments]:
    def arguments(rest: str, escape: str) -> _Arguments:
        array = _json_array(rest) if allow_json else None
        args = tuple(array) if array is not None else tuple(w for w in _SPACE.split(rest) if w)
        if len(args) < least:
            raise DockerfileError(
                f"{keyword} requires at least one argument" if least == 1 else
                f"{keyword} requires at least two arguments, but only one was provided. "
                "Destination could not be determined")
        return args, array is not None
    return arguments


def _volume(rest: str, escape: str) -> _Arguments:
    args, is_json = _list("VOLUME", 1, allow_json=True)(rest, escape)
    if any(not arg.strip() for arg in args):
        raise DockerfileError("VOLUME specified can not be an empty string")
    return args, is_json


def _from(rest: str, escape: str) -> _Arguments:
    args = tuple(w for w in _SPACE.split(rest) if w)
    if len(args) == 3 and args[1].upper() == "AS":
        if not _STAGE_NAME.fullmatch(args[2].lower()):
            raise DockerfileError(f'invalid name for build stage: "{args[2]}", name can\'t '
                                  "start with a number or contain symbols")
        return (args[0], "AS", args[2]), False
    if len(args) == 3:
        raise DockerfileError(f"FROM expects 'AS' as its second argument, not {args[1]!r}: "
                              "FROM image AS name")
    if len(args) != 1:
        raise DockerfileError("FROM requires either one or three arguments: "
                              "FROM image [AS name]")
    return args, False


def _one(keyword: str) -> Callable[[str, str], _Arguments]:
    def arguments(rest: str, escape: str) -> _Arguments:
        if not rest:
            raise DockerfileError(f"{keyword} requires exactly one argument")
        return (rest,), False
    return arguments


def _pairs(keyword: str) -> Callable[[str, str], _Arguments]:
    def arguments(rest: str, escape: str) -> _Arguments:
        words = _words(rest, escape)
        if not words:
            raise DockerfileError(f"{keyword} requires at least one argument")
        if "=" not in words[0]:
            # The legacy form: KEY name the value, spaces and all.
            parts = _SPACE.split(rest, maxsplit=1)
            if len(parts) < 2:
                raise DockerfileError(f"{keyword} must have two arguments")
            return (f"{parts[0]}={parts[1]}",), False
        for word in words:
            if "=" not in word:
                raise DockerfileError(f'Syntax error - can\'t find = in "{word}". '
                                      "Must be of the form: name=value")
            if word.startswith("="):
                raise DockerfileError(f"{keyword} names can not be blank")
        return tuple(words), False
    return arguments


def _arg(rest: str, escape: str) -> _Arguments:
    words = _words(rest, escape)
    if not words:
        raise DockerfileError("ARG requires at least one argument")
    if any(word.startswith("=") for word in words):
        raise DockerfileError("ARG names can not be blank")
    return tuple(words), False


def _onbuild(rest: str, original: str, heredocs: list[_OpenHeredoc], escape: str) -> str:
    if not rest:
        raise DockerfileError("ONBUILD requires at least one argument")
    trigger = _SPACE.split(rest, maxsplit=1)[0].upper()
    if trigger == "ONBUILD":
        raise DockerfileError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("MAINTAINER", "FROM"):
        raise DockerfileError(f"{trigger} isn't allowed as an ONBUILD trigger")
    # The trigger keeps its here-documents, so that the child build parses it whole.
    text = _ONBUILD_PREFIX.sub("", original) + "".join(
        f"\n{h.raw}{h.name}" for h in heredocs)
    try:
        parse_instruction(text, escape=escape)
    except DockerfileError as e:
        raise DockerfileError(f"invalid ONBUILD trigger: {e.reason}") from None
    return text


_ARGUMENTS: dict[str, Callable[[str, str], _Arguments]] = {
    "ADD": _list("ADD", 2, allow_json=True),
    "ARG": _arg,
    "CMD": _command,
    "COPY": _list("COPY", 2, allow_json=True),
    "ENTRYPOINT": _command,
    "ENV": _pairs("ENV"),
    "EXPOSE": _list("EXPOSE", 1, allow_json=False),
    "FROM": _from,
    "HEALTHCHECK": _healthcheck,
    "LABEL": _pairs("LABEL"),
    "MAINTAINER": _one("MAINTAINER"),
    "RUN": _run,
    "SHELL": _shell,
    "STOPSIGNAL": _one("STOPSIGNAL"),
    "USER": _one("USER"),
    "VOLUME": _volume,
    "WORKDIR": _one("WORKDIR"),
}
