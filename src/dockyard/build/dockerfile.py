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
  ONBUILD                 the trigger's text as one string (``parse_instruction``
                          parses it when a child build fires it)
  ======================  ==================================================

- ``flags`` are the ``--name=value`` (or bare ``--name``) options before the
  arguments, in order, repeatable (``RUN --mount=... --mount=...``).
- ``heredocs`` are the here-documents the instruction opened, in order. A heredoc
  whose delimiter was quoted is not expanded (``expand=False``); ``<<-`` strips
  leading tabs from its body (already done in ``content``).
"""

from __future__ import annotations

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


def parse(text: str, filename: str = "Dockerfile") -> Dockerfile:
    """Parse a whole Dockerfile."""
    raise NotImplementedError


def parse_instruction(text: str, *, escape: str = "\\", filename: str = "Dockerfile",
                      line: int = 1) -> Instruction:
    """Parse one instruction (an ONBUILD trigger)."""
    raise NotImplementedError
