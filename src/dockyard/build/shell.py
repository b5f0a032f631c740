"""Docker's shell-word processing of Dockerfile arguments (BuildKit's ``shell.Lex``).

The builder expands the arguments of ADD COPY ENV EXPOSE FROM LABEL STOPSIGNAL USER
VOLUME WORKDIR with these rules, which are a small subset of a POSIX shell's:

- ``'...'`` keeps everything literally; ``"..."`` expands ``$`` and lets the escape
  character escape only ``"``, ``$`` and itself; outside quotes the escape character
  makes the next character literal (and is dropped).
- ``$NAME``, ``${NAME}``, and the modifiers ``${NAME:-word}`` ``${NAME-word}``
  ``${NAME:+word}`` ``${NAME+word}`` ``${NAME:?msg}`` ``${NAME?msg}`` ``${NAME#pat}``
  ``${NAME##pat}`` ``${NAME%pat}`` ``${NAME%%pat}`` ``${NAME/pat/repl}``
  ``${NAME//pat/repl}``; ``word`` may itself hold quotes and expansions, ``pat`` has
  ``*`` and ``?`` but no bracket expressions. An unset variable is "".
- ``expand_words`` splits on unquoted white space, including the white space that an
  unquoted expansion produces (``EXPOSE $PORTS``), and drops empty words, as Docker does.

``has_wildcards`` and ``glob_regex`` are the other patterns of a build: Go's
``filepath.Match``, which COPY sources and ``.dockerignore`` use.

A malformed word raises ``DockerfileError`` without a line: the builder knows the line
and re-raises with it (``DockerfileError.reason`` is the bare message).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from dockyard.build.dockerfile import DockerfileError

__all__ = ["expand_word", "expand_words", "glob_regex", "has_wildcards"]

_SPECIAL_PARAMS = "@*#?-$!0"
_WILDCARDS = "*?["
_MAX_DEPTH = 64
_SPACES = re.compile(r"\s+")


def expand_word(word: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """``word`` with its quotes removed, escapes applied and variables expanded; white
    space stays as written."""
    return _Lexer(word, env, escape).run(None)[0]


def expand_words(text: str, env: Mapping[str, str], *, escape: str = "\\") -> list[str]:
    """``text`` split into words on unquoted white space, each expanded."""
    return _Lexer(text, env, escape).run(None)[1]


def has_wildcards(pattern: str, *, escape: str = "\\") -> bool:
    """Whether ``pattern`` holds an unescaped ``*``, ``?`` or ``[`` (Go's
    ``filepath.Match`` syntax, as Docker tests COPY sources)."""
    i = 0
    while i < len(pattern):
        if pattern[i] == escape:
            i += 2
            continue
        if pattern[i] in _WILDCARDS:
            return True
        i += 1
    return False


def glob_regex(pattern: str) -> str:
    """A regular expression (without anchors) for a path element pattern of Go's
    ``filepath.Match``: ``*`` and ``?`` never match ``/``, ``[...]`` is a class that
    ``[^...]`` negates, ``\\`` makes the next character literal; a malformed class is
    an error."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i < len(pattern):
            out.append(re.escape(pattern[i]))
            i += 1
        elif ch == "[":
            i, body = _char_class(pattern, i)
            out.append(body)
        else:
            out.append(re.escape(ch))
    return "".join(out)


def _char_class(pattern: str, i: int) -> tuple[int, str]:
    """The class opened by the ``[`` before ``pattern[i]``, read as Go's
    ``filepath.Match`` reads it: (index after its ``]``, regex). An item may not start
    with an unescaped ``-`` or ``]``; a reversed range matches nothing."""
    negated = pattern.startswith("^", i)
    i += negated
    items: list[str] = []
    count = 0
    while not (count and pattern.startswith("]", i)):
        low, i = _class_char(pattern, i)
        high = low
        if pattern.startswith("-", i):
            high, i = _class_char(pattern, i + 1)
        count += 1
        if low <= high:
            items.append(re.escape(low) if low == high else
                         f"{re.escape(low)}-{re.escape(high)}")
    if not items:
        return i + 1, "[\\s\\S]" if negated else "(?!)"
    return i + 1, f"[{'^' if negated else ''}{''.join(items)}]"


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    if i < len(pattern) and pattern[i] == "\\":
        i += 1
    elif i < len(pattern) and pattern[i] in "-]":
        i = len(pattern)
    if i + 1 >= len(pattern):   # a class needs its "]" after this character
        raise DockerfileError(f"syntax error in pattern: {pattern}")
    return pattern[i], i + 1


def _shell_pattern(pattern: str, *, greedy: bool, reverse: bool = False) -> re.Pattern[str]:
    """The pattern of ``${VAR#pattern}`` or ``${VAR/pattern/...}`` as Docker reads it:
    ``*`` and ``?`` only (no bracket expressions); ``\\`` escapes ``*``, ``?`` and
    itself, and before ``}`` or ``/`` it is dropped; any other escape is an error.
    ``reverse`` reads it from its end, to match against a reversed value."""
    atoms: list[str] = []
    chars = iter(pattern)
    for ch in chars:
        if ch == "*":
            atoms.append(".*" if greedy else ".*?")
        elif ch == "?":
            atoms.append(".")
        elif ch == "\\":
            escaped = next(chars, "")
            if escaped not in ("*", "?", "\\", "}", "/"):
                raise DockerfileError(f"invalid pattern ({pattern}) in substitution: "
                                      f"invalid escape '\\{escaped}'")
            atoms.append(re.escape(escaped))
        else:
            atoms.append(re.escape(ch))
    return re.compile("".join(reversed(atoms) if reverse else atoms))


class _Words:
    """Word splitting as Docker does it: raw text never splits, expanded text does."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.word = ""

    def add_raw(self, text: str) -> None:
        self.word += text

    def add(self, text: str) -> None:
        first, *others = _SPACES.split(text)
        self.word += first
        for piece in others:
            self._close()
            self.word = piece

    def _close(self) -> None:
        if self.word:
            self.words.append(self.word)
            self.word = ""

    def result(self) -> list[str]:
        self._close()
        return self.words


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.text = text
        self.env = env
        self.escape = escape
        self.pos = 0
        # ``${VAR#pat}`` keeps escapes in ``pat`` so that the pattern sees them.
        self.raw_escapes = False
        self.depth = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += len(ch)
        return ch

    def run(self, stops: str | None, *, raw_escapes: bool = False) -> tuple[str, list[str]]:
        """Process up to one of ``stops`` (consumed) or the end: (text, words)."""
        saved, self.raw_escapes = self.raw_escapes, raw_escapes or self.raw_escapes
        try:
            return self._run(stops)
        finally:
            self.raw_escapes = saved

    def _run(self, stops: str | None) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        while (ch := self.peek()) != "":
            if stops and ch in stops:
                self.next()
                return "".join(result), words.result()
            if ch == "$":
                value = self.dollar()
                words.add(value)
            elif ch in "'\"":
                value = self.single_quoted() if ch == "'" else self.double_quoted()
                words.add_raw(value)
            else:
                self.next()
                if ch == self.escape:
                    value = ch if self.raw_escapes else ""
                    escaped = self.next()
                    if not escaped:
                        result.append(value)
                        break
                    value += escaped
                    words.add_raw(value)
                else:
                    value = ch
                    words.add(value)
            result.append(value)
        if stops:
            raise DockerfileError(
                f"unexpected end of statement while looking for matching {stops}")
        return "".join(result), words.result()

    def single_quoted(self) -> str:
        self.next()
        end = self.text.find("'", self.pos)
        if end < 0:
            raise DockerfileError(
                "unexpected end of statement while looking for matching single-quote")
        value, self.pos = self.text[self.pos:end], end + 1
        return value

    def double_quoted(self) -> str:
        self.next()
        result: list[str] = []
        while True:
            ch = self.peek()
            if ch == "":
                raise DockerfileError(
                    "unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                return "".join(result)
            if ch == "$":
                result.append(self.dollar())
                continue
            self.next()
            if ch == self.escape and self.peek() in ('"', "$", self.escape) and self.peek():
                if self.raw_escapes:
                    result.append(ch)
                ch = self.next()
            result.append(ch)

    def name(self) -> str:
        start = self.pos
        ch = self.peek()
        if ch.isdigit():
            while self.peek().isdigit():
                self.next()
            return self.text[start:self.pos]
        if ch and ch in _SPECIAL_PARAMS:
            return self.next()
        while (ch := self.peek()) and (ch.isalnum() or ch == "_"):
            self.next()
        return self.text[start:self.pos]

    def dollar(self) -> str:
        self.depth += 1
        try:
            return self._dollar()
        finally:
            self.depth -= 1

    def _dollar(self) -> str:
        # A word from a Dockerfile is hostile: its nesting must not exhaust the stack.
        if self.depth > _MAX_DEPTH:
            raise DockerfileError(f"substitution nested more than {_MAX_DEPTH} levels deep")
        self.next()
        if self.peek() != "{":
            name = self.name()
            return self.env.get(name, "") if name else "$"
        self.next()
        ch = self.peek()
        if ch == "":
            raise DockerfileError("syntax error: missing '}'")
        if ch in "{}:":
            raise DockerfileError("syntax error: bad substitution")
        name = self.name()
        op = self.next()
        if op == "}":
            return self.env.get(name, "")
        if op == "":
            raise DockerfileError("syntax error: missing '}'")
        null_is_unset = op == ":"
        if null_is_unset:
            op = self.next()
            if op not in ("+", "-", "?", "#", "%"):
                raise DockerfileError(f"unsupported modifier (:{op}) in substitution")
        if op == "/":
            return self.replace(name)
        if op not in ("+", "-", "?", "#", "%"):
            raise DockerfileError(f"unsupported modifier ({op}) in substitution")
        word = self.modifier_word("}", raw_escapes=op in "#%")
        value = self.env.get(name)
        unset = value is None or (null_is_unset and value == "")
        if op == "-":
            return word if unset else value or ""
        if op == "+":
            return "" if unset else word
        if op == "?":
            if unset:
                default = "is not allowed to be unset" if value is None else \
                    "is not allowed to be empty"
                raise DockerfileError(f"{name}: {word or default}")
            return value or ""
        return _trim(value or "", word, op)

    def modifier_word(self, stop: str, *, raw_escapes: bool) -> str:
        try:
            return self.run(stop, raw_escapes=raw_escapes)[0]
        except DockerfileError:
            if self.peek() == "":
                missing = "'}'" if stop == "}" else "'/' in ${}"
                raise DockerfileError(f"syntax error: missing {missing}") from None
            raise

    def replace(self, name: str) -> str:
        every = self.peek() == "/"
        if every:
            self.next()
        pattern = self.modifier_word("/", raw_escapes=True)
        replacement = self.modifier_word("}", raw_escapes=True)
        regex = _shell_pattern(pattern, greedy=True)
        return regex.sub(lambda _: replacement, self.env.get(name, ""),
                         count=0 if every else 1)


def _trim(value: str, word: str, op: str) -> str:
    """``${VAR#word}`` and friends: the shortest match, or the longest when doubled. A
    suffix is a prefix of the reversed value, as Docker finds it."""
    longest = word.startswith(op)
    if longest:
        word = word[1:]
    if op == "#":
        match = _shell_pattern(word, greedy=longest).match(value)
        return value[match.end():] if match else value
    reversed_value = value[::-1]
    match = _shell_pattern(word, greedy=longest, reverse=True).match(reversed_value)
    return reversed_value[match.end():][::-1] if match else value
