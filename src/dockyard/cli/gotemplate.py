"""Go's text/template, as far as docker's ``--format`` and ``inspect -f`` use it.

A template is parsed once (``parse``, cached) into a tree and executed once per object.
The data are what ``json.loads`` makes of docker's JSON (dicts, lists, str, int, float,
bool, None), and the behaviour is Go's on the same data decoded into ``interface{}``:

- actions ``{{.A.B}}``, ``{{.}}``, ``{{$}}``, ``{{$x.A}}``, ``{{(pipeline).A}}``;
  pipelines ``{{.X | json}}``; variables ``{{$x := ...}}`` and ``{{$x = ...}}``;
- ``{{if}}``/``{{else if}}``/``{{else}}``, ``{{with}}``, ``{{range}}`` over lists, maps
  (in key order) and integers, with ``$k, $v :=``, ``{{else}}``, ``{{break}}``,
  ``{{continue}}``; trim markers ``{{- -}}``; comments ``{{/* */}}``;
- literals: strings (``"..."`` and raw), characters, numbers, ``true``/``false``/``nil``;
- Go's functions (``index len slice printf print println eq ne lt le gt ge and or not``)
  and those docker adds (``json join split title lower upper pad truncate``).

A key missing from a map gives Go's invalid value, printed ``<no value>``; a field of
JSON ``null`` is Go's "nil pointer evaluating interface {}.X" error. Errors read as
Go's: ``template: :1: function "foo" not defined`` for a parse error, ``template: :1:4:
executing "" at <.A.B>: ...`` for an execution error.

Where docker runs the template over its typed structs rather than over JSON, dockyard
follows docker: ``join`` takes a list of strings (``Config.Cmd`` is a ``[]string``),
``json .`` keeps a dict's order (a struct's field order), and ranging over an integer
and ``{{else with}}`` work (Go 1.22 and 1.23, which docker 28 is built with).
``{{define}}``, ``{{template}}`` and ``{{block}}`` are refused.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

from dockyard.errors import InvalidArgument


class TemplateError(InvalidArgument):
    """A template that cannot be parsed or executed; ``str()`` is Go's message."""


class _Missing:
    """Go's invalid ``reflect.Value``: a key absent from a map, a nil pipeline result."""

    def __repr__(self) -> str:
        return "<no value>"


MISSING: Any = _Missing()
_NO_FINAL: Any = object()  # no value comes from an earlier pipeline stage


# --- Go's fmt ------------------------------------------------------------------------

def go_type(value: Any) -> str:
    """The Go type of a decoded JSON value, as error messages name it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "[]interface {}"
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    return "interface {}"


def _float_v(number: float) -> str:
    """``%v`` of a float64: the shortest digits, exponent form outside 1e-4..1e6."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if number == 0:
        return "-0" if math.copysign(1, number) < 0 else "0"
    # repr() has the shortest digits that read back as the same float, as Go's 'g' -1.
    mantissa, _, exponent = repr(abs(number)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    text = digits.strip("0")
    point = len(whole) - 1 - (len(digits) - len(digits.lstrip("0"))) + int(exponent or 0)
    sign = "-" if number < 0 else ""
    if point < -4 or point >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{sign}{mantissa}e{'-' if point < 0 else '+'}{abs(point):02d}"
    if point < 0:
        return f"{sign}0.{'0' * (-point - 1)}{text}"
    if point + 1 >= len(text):
        return sign + text + "0" * (point + 1 - len(text))
    return f"{sign}{text[:point + 1]}.{text[point + 1:]}"


def show(value: Any, nested: bool = False) -> str:
    """Go's ``%v`` of a value; a nil inside a list or map is ``<nil>``."""
    if value is MISSING or value is None:
        return "<nil>" if nested else "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _float_v(value)
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(show(v, True) for v in value) + "]"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{show(value[k], True)}" for k in sorted(value)) + "]"
    return str(value)


_QUOTED = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
           "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def go_quote(text: str) -> str:
    """strconv.Quote: printable characters kept, the rest escaped."""
    out = []
    for char in text:
        if char in _QUOTED:
            out.append(_QUOTED[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


class _Spec(NamedTuple):
    flags: str
    width: int | None
    precision: int | None
    verb: str


def _pad(text: str, spec: _Spec, numeric: bool = False) -> str:
    if spec.width is None or len(text) >= spec.width:
        return text
    if "-" in spec.flags:
        return text.ljust(spec.width)
    if "0" in spec.flags:
        sign = text[0] if numeric and text[:1] in "+-" and text else ""
        return sign + text[len(sign):].rjust(spec.width - len(sign), "0")
    return text.rjust(spec.width)


def _bad_verb(value: Any, verb: str) -> str:
    if value is None or value is MISSING:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({go_type(value)}={show(value, True)})"


def _char(code: int) -> str:
    return chr(code) if 0 <= code < 0x110000 else "\ufffd"


def _format_element(value: Any, spec: _Spec) -> str:
    return _pad("<nil>", spec) if value is None else _format_one(value, spec)


def _format_one(value: Any, spec: _Spec) -> str:
    verb = spec.verb
    if verb == "T":
        return _pad("<nil>" if value is None else go_type(value), spec)
    # The verb, width and flags apply to each element of a list or map.
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_format_element(v, spec) for v in value) + "]"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{_format_element(k, spec)}:{_format_element(value[k], spec)}"
                                 for k in sorted(value)) + "]"
    if verb == "v" or (verb == "s" and isinstance(value, str)):
        text = show(value, True)
        if spec.precision is not None and isinstance(value, str):
            text = text[:spec.precision]
        return _pad(text, spec)
    if verb == "q" and isinstance(value, str):
        return _pad(go_quote(value), spec)
    if verb == "t" and isinstance(value, bool):
        return _pad(show(value), spec)
    if isinstance(value, int) and not isinstance(value, bool) and verb in "dboxXcqU":
        plus = "+" if "+" in spec.flags and value >= 0 else ""
        text = {"d": f"{value:d}", "b": f"{value:b}", "o": f"{value:o}",
                "x": f"{value:x}", "X": f"{value:X}", "c": _char(value),
                "q": "'" + go_quote(_char(value))[1:-1] + "'",
                "U": f"U+{value:04X}"}[verb]
        return _pad(plus + text, spec, numeric=verb in "dboxX")
    if isinstance(value, float) and verb in "eEfFgG":
        if verb in "gG" and spec.precision is None:
            text = _float_v(value)
            text = text.upper() if verb == "G" else text
        else:
            precision = 6 if spec.precision is None else spec.precision
            text = f"{value:{'+' if '+' in spec.flags else ''}.{precision}{verb}}"
        return _pad(text, spec, numeric=True)
    if isinstance(value, str) and verb in "xX":
        text = value.encode().hex()
        return _pad(text.upper() if verb == "X" else text, spec)
    return _bad_verb(value, verb)


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d*))?([a-zA-Z%])")


def sprintf(template: str, args: list[Any]) -> str:
    """Go's fmt.Sprintf for the verbs people use: ``%s %d %v %q %t %x %f %e %g``..."""
    out = []
    position = 0
    used = 0
    for match in _VERB.finditer(template):
        out.append(template[position:match.start()])
        position = match.end()
        flags, width, precision, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        if used >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        spec = _Spec(flags, int(width) if width else None,
                     None if precision is None else int(precision or 0), verb)
        out.append(_format_one(args[used], spec))
        used += 1
    out.append(template[position:])
    if used < len(args):
        extra = ", ".join(f"{go_type(a)}={show(a, True)}" if a is not None
                          else "<nil>" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def sprint(args: list[Any]) -> str:
    """fmt.Sprint: a space between two operands when neither is a string."""
    out = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(show(arg, True))
    return "".join(out)


def truth(value: Any) -> bool:
    """Go's template truth: false, 0, nil, and empty strings, lists and maps are false."""
    if value is MISSING or value is None:
        return False
    if isinstance(value, (bool, int, float, str, list, tuple, Mapping)):
        return bool(value)
    return True


# --- functions -----------------------------------------------------------------------

class _Fail(Exception):
    """A function's error, reported as ``error calling NAME: ...``."""


def _basic_kind(value: Any) -> str:
    if value is None or value is MISSING:
        return "nil"
    kind = go_type(value)
    if kind.startswith(("[", "map")):
        raise _Fail(f"non-comparable type {sprintf('%s', [value])}: {kind}")
    return kind


def _eq(first: Any, *others: Any) -> bool:
    if not others:
        raise _Fail("missing argument for comparison")
    kind = _basic_kind(first)
    for other in others:
        other_kind = _basic_kind(other)
        if "nil" in (kind, other_kind):
            if kind == other_kind:
                return True
            continue
        if kind != other_kind:
            raise _Fail("incompatible types for comparison")
        if first == other:
            return True
    return False


def _lt(first: Any, second: Any) -> bool:
    kinds = _basic_kind(first), _basic_kind(second)
    if {"bool", "nil"} & set(kinds):
        raise _Fail("invalid type for comparison")
    if kinds[0] != kinds[1]:
        raise _Fail("incompatible types for comparison")
    return bool(first < second)


def _member(mapping: Mapping[str, Any], key: str) -> Any:
    # Through __getitem__, which a mapping may override where dict.get would not.
    try:
        return mapping[key]
    except KeyError:
        return MISSING


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if item is MISSING:
            raise _Fail("index of untyped nil")
        if item is None:
            raise _Fail("index of nil pointer")
        if isinstance(item, Mapping):
            if not isinstance(key, str):
                raise _Fail(f"value has type {go_type(key)}; should be string")
            item = _member(item, key)
        elif isinstance(item, (list, tuple, str)):
            if not isinstance(key, int) or isinstance(key, bool):
                raise _Fail(f"cannot index slice/array with type {go_type(key)}")
            data = item.encode() if isinstance(item, str) else item
            if not 0 <= key < len(data):
                raise _Fail(f"index out of range: {key}")
            item = data[key]
        else:
            raise _Fail(f"can't index item of type {go_type(item)}")
    return item


def _slice(item: Any, *bounds: Any) -> Any:
    if item is MISSING or item is None:
        raise _Fail("slice of untyped nil")
    if not isinstance(item, (list, tuple, str)):
        raise _Fail(f"can't slice item of type {go_type(item)}")
    if len(bounds) == 3 and isinstance(item, str):
        raise _Fail("cannot 3-index slice a string")
    if len(bounds) > 3:
        raise _Fail(f"too many slice indexes: {len(bounds)}")
    for bound in bounds:
        if not isinstance(bound, int) or isinstance(bound, bool):
            raise _Fail(f"cannot index slice/array with type {go_type(bound)}")
        if not 0 <= bound <= len(item):
            raise _Fail(f"index out of range: {bound}")
    start, end = (list(bounds) + [0, len(item)][len(bounds):])[:2]
    if start > end:
        raise _Fail(f"invalid slice index: {start} > {end}")
    return item[start:end]


def _len(item: Any) -> int:
    if item is MISSING or item is None:
        raise _Fail("len of nil pointer")
    if isinstance(item, str):
        return len(item.encode())
    if isinstance(item, (list, tuple, Mapping)):
        return len(item)
    raise _Fail(f"len of type {go_type(item)}")


def _go_numbers(value: Any) -> Any:
    """Floats with no fraction as ints, as Go's encoder writes ``1`` for ``1.0``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_go_numbers(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _go_numbers(v) for k, v in value.items()}
    return value


def to_json(value: Any) -> str:
    """docker's ``json``: compact, no HTML escaping, non-ASCII kept."""
    text = json.dumps(None if value is MISSING else _go_numbers(value),
                      separators=(",", ":"), ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _title(text: str) -> str:
    """strings.Title: a letter after a space or punctuation becomes upper case."""
    out = []
    previous = " "
    for char in text:
        out.append(char.upper() if not (previous.isalnum() or previous == "_") else char)
        previous = char
    return "".join(out)


def _split(text: str, separator: str) -> list[str]:
    return list(text) if separator == "" else text.split(separator)


def _pad_spaces(text: str, before: int, after: int) -> str:
    return text if text == "" else " " * before + text + " " * after


def _first(truthful: bool, values: Iterator[Any]) -> Any:
    """``and`` (the first false value) and ``or`` (the first true one), else the last:
    the arguments after it are not evaluated."""
    value = MISSING
    for value in values:
        if truth(value) == truthful:
            break
    return value


class Function(NamedTuple):
    """A template function: ``call`` and the Go types of its parameters (``any``,
    ``string``, ``int``, ``[]string``; ``...`` marks the last as variadic). ``raw``
    functions see invalid values as they are (Go's ``reflect.Value`` parameters);
    ``lazy`` ones get an iterator that evaluates their arguments as it goes."""

    call: Callable[..., Any]
    params: tuple[str, ...]
    raw: bool = False
    lazy: bool = False


FUNCTIONS: dict[str, Function] = {
    "index": Function(_index, ("any", "...any"), raw=True),
    "slice": Function(_slice, ("any", "...any"), raw=True),
    "len": Function(_len, ("any",), raw=True),
    "printf": Function(lambda f, *a: sprintf(f, list(a)), ("string", "...any")),
    "print": Function(lambda *a: sprint(list(a)), ("...any",)),
    "println": Function(lambda *a: " ".join(show(v, True) for v in a) + "\n", ("...any",)),
    "eq": Function(_eq, ("any", "...any"), raw=True),
    "ne": Function(lambda a, b: not _eq(a, b), ("any", "any"), raw=True),
    "lt": Function(_lt, ("any", "any"), raw=True),
    "le": Function(lambda a, b: _lt(a, b) or _eq(a, b), ("any", "any"), raw=True),
    "gt": Function(lambda a, b: not (_lt(a, b) or _eq(a, b)), ("any", "any"), raw=True),
    "ge": Function(lambda a, b: not _lt(a, b), ("any", "any"), raw=True),
    "not": Function(lambda a: not truth(a), ("any",), raw=True),
    "and": Function(functools.partial(_first, False), ("any", "...any"), lazy=True),
    "or": Function(functools.partial(_first, True), ("any", "...any"), lazy=True),
    "json": Function(to_json, ("any",)),
    "split": Function(_split, ("string", "string")),
    "join": Function(lambda items, sep: sep.join(items), ("[]string", "string")),
    "title": Function(_title, ("string",)),
    "lower": Function(str.lower, ("string",)),
    "upper": Function(str.upper, ("string",)),
    "pad": Function(_pad_spaces, ("string", "int", "int")),
    "truncate": Function(lambda text, n: text[:n], ("string", "int")),
}

# docker's HeaderFunctions: in a table's header row its functions leave the title as is.
HEADER_FUNCTIONS: dict[str, Function] = {
    **FUNCTIONS, **{name: Function(lambda text, *_: text, ("string", *FUNCTIONS[name].params[1:]))
                    for name in ("json", "split", "join", "title", "lower", "upper", "pad",
                                 "truncate")}}


# --- the parse tree ------------------------------------------------------------------
# Every node has its offset and source text, for error messages.

class _Text(NamedTuple):
    """Text outside actions, written as it is."""

    pos: int
    source: str


class _Field(NamedTuple):
    """``.A.B``: ``names`` from dot."""

    pos: int
    source: str
    names: tuple[str, ...]


class _Variable(NamedTuple):
    """``$x.A.B``: a variable and the fields chained on it."""

    pos: int
    source: str
    name: str
    names: tuple[str, ...]


class _Chain(NamedTuple):
    """``(pipeline).A.B``."""

    pos: int
    source: str
    node: _Pipeline
    names: tuple[str, ...]


class _Literal(NamedTuple):
    """A constant (``kind`` "const"), ``.`` ("dot") or ``nil`` ("nil")."""

    pos: int
    source: str
    value: Any
    kind: str


class _Identifier(NamedTuple):
    """A function's name (``source``)."""

    pos: int
    source: str


class _Command(NamedTuple):
    pos: int
    source: str
    args: list[_Node]


class _Pipeline(NamedTuple):
    """``$a, $b := cmd | cmd``; ``assign`` for ``=``."""

    pos: int
    source: str
    declare: list[str]
    assign: bool
    commands: list[_Command]


class _Action(NamedTuple):
    pos: int
    source: str
    pipe: _Pipeline


class _Control(NamedTuple):
    """``{{if}}``, ``{{with}}`` and ``{{range}}``."""

    pos: int
    source: str
    keyword: str
    pipe: _Pipeline
    body: list[_Node]
    otherwise: list[_Node]


class _Jump(NamedTuple):
    """``{{break}}`` or ``{{continue}}`` (``source``)."""

    pos: int
    source: str


_Node = (_Text | _Field | _Variable | _Chain | _Literal | _Identifier | _Command | _Pipeline
         | _Action | _Control | _Jump)


# --- lexing --------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\n]+)
  | (?P<declare>:=) | (?P<assign>=) | (?P<pipe>\|) | (?P<open>\() | (?P<close>\)) | (?P<comma>,)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\\n]|\\.[^']*)')
  | (?P<number>[+-]?(?:0[xX][0-9a-fA-F_]+|0[oObB][0-7_]+
        |(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?))
  | (?P<field>\.[A-Za-z_]\w*)
  | (?P<dot>\.)
  | (?P<variable>\$\w*)
  | (?P<identifier>[A-Za-z_]\w*)
""", re.VERBOSE)
_ESCAPE = re.compile(r"\\(?:[abfnrtv\\'\"]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}"
                     r"|[0-7]{3}|.)")
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                   "v": "\v", "\\": "\\", "'": "'", '"': '"'}
_KEYWORDS = {"if", "else", "end", "range", "with", "break", "continue", "define",
             "template", "block"}
_SPACES = " \t\r\n"
_OCTAL = re.compile(r"[+-]?0[0-7]+")


class _Token(NamedTuple):
    kind: str
    text: str
    pos: int
    spaced: bool  # preceded by spaces: ``.A .B`` are two arguments, ``.A.B`` one field


class _ParseError(Exception):
    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.pos = pos


def _unescape(token: str, pos: int) -> str:
    def one(match: re.Match[str]) -> str:
        text = match.group()[1:]
        if text in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[text]
        if text[0] in "xuU":
            return chr(int(text[1:], 16))
        if text[0] in "01234567" and len(text) == 3:
            return chr(int(text, 8))
        raise _ParseError(f"invalid syntax: {token}", pos)
    return _ESCAPE.sub(one, token[1:-1])


def _number(text: str, pos: int) -> int | float:
    plain = text.replace("_", "")
    try:
        if plain.lstrip("+-")[:2].lower() in ("0x", "0o", "0b"):
            return int(plain, 0)
        if _OCTAL.fullmatch(plain):
            return int(plain, 8)
        return float(plain) if any(c in plain for c in ".eE") else int(plain)
    except ValueError:
        raise _ParseError(f"bad number syntax: \"{text}\"", pos) from None


def _lex_action(template: str, start: int) -> tuple[list[_Token], int, bool]:
    """The tokens of the action starting at ``start`` (after ``{{`` and any trim
    marker), the offset after its ``}}``, and whether it ended with ``-}}``."""
    tokens: list[_Token] = []
    pos = start
    spaced = True
    while True:
        if template.startswith("}}", pos):
            return tokens, pos + 2, False
        if pos >= len(template):
            raise _ParseError("unclosed action", start)
        match = _TOKEN.match(template, pos)
        if match is None or match.lastgroup is None:
            if template[pos] in "\"'":
                raise _ParseError("unterminated quoted string" if template[pos] == '"'
                                  else "unterminated character constant", pos)
            if template[pos] == "`":
                raise _ParseError("unterminated raw quoted string", pos)
            raise _ParseError(f"unexpected \"{template[pos]}\" in command", pos)
        kind = match.lastgroup
        if kind == "space":
            after = match.end()
            if template.startswith("-}}", after):
                return tokens, after + 3, True
            spaced = True
        else:
            tokens.append(_Token(kind, match.group(), pos, spaced))
            spaced = False
        pos = match.end()


class _Parser:
    """Recursive descent over the lexed actions, checking what Go checks when it parses:
    functions defined, variables declared, blocks closed."""

    def __init__(self, template: str, functions: Mapping[str, Function]) -> None:
        self.template = template
        self.functions = functions
        self.pieces = list(self._pieces())
        self.at = 0
        self.variables: list[str] = ["$"]
        self.ranges = 0

    def _pieces(self) -> Iterator[str | tuple[list[_Token], int]]:
        """Texts, and actions as (tokens, offset), trim markers applied."""
        template = self.template
        pos = 0
        trim_next = False
        while pos <= len(template):
            start = template.find("{{", pos)
            text = template[pos:] if start < 0 else template[pos:start]
            if trim_next:
                text = text.lstrip(_SPACES)
            if start < 0:
                if text:
                    yield text
                return
            inner = start + 2
            if template.startswith("-", inner) and \
                    template[inner + 1:inner + 2] in tuple(_SPACES):
                text = text.rstrip(_SPACES)
                inner += 2
            if text:
                yield text
            if template.startswith("/*", inner):
                close = template.find("*/", inner + 2)
                if close < 0:
                    raise _ParseError("unclosed comment", inner)
                trim_next = template.startswith(" -}}", close + 2)
                if not trim_next and not template.startswith("}}", close + 2):
                    raise _ParseError("comment ends before closing delimiter", inner)
                pos = close + (6 if trim_next else 4)
                continue
            tokens, pos, trim_next = _lex_action(template, inner)
            yield tokens, inner

    def parse(self) -> list[_Node]:
        nodes, stop = self.list_()
        if stop is not None:
            tokens, pos = stop
            raise _ParseError(f"unexpected {{{{{tokens[0].text}}}}}", pos)
        return nodes

    def list_(self) -> tuple[list[_Node], tuple[list[_Token], int] | None]:
        """Nodes up to an ``{{end}}`` or ``{{else}}`` (returned) or the end (None)."""
        nodes: list[_Node] = []
        while self.at < len(self.pieces):
            piece = self.pieces[self.at]
            self.at += 1
            if isinstance(piece, str):
                nodes.append(_Text(0, piece))
                continue
            tokens, pos = piece
            if not tokens:
                raise _ParseError("missing value for command", pos)
            word = tokens[0].text if tokens[0].kind == "identifier" else ""
            if word in ("end", "else"):
                return nodes, piece
            if word in ("if", "with", "range"):
                nodes.append(self.control(word, tokens[1:], pos))
            elif word in ("break", "continue"):
                if not self.ranges:
                    raise _ParseError(f"{{{{{word}}}}} outside {{{{range}}}}", pos)
                if len(tokens) > 1:
                    raise _ParseError(f"unexpected \"{tokens[1].text}\" in {{{{{word}}}}}",
                                     pos)
                nodes.append(_Jump(pos, word))
            elif word in _KEYWORDS:
                raise _ParseError(f"{{{{{word}}}}} is not supported in --format", pos)
            else:
                pipe = self.pipeline(tokens, pos, "command")
                nodes.append(_Action(pipe.pos, pipe.source, pipe))
        return nodes, None

    def control(self, keyword: str, tokens: list[_Token], pos: int) -> _Control:
        mark = len(self.variables)
        pipe = self.pipeline(tokens, pos, keyword)
        self.ranges += keyword == "range"
        body, stop = self.list_()
        self.ranges -= keyword == "range"
        del self.variables[mark + len(pipe.declare):]
        otherwise: list[_Node] = []
        if stop is None:
            raise _ParseError("unexpected EOF", len(self.template))
        stop_tokens, stop_pos = stop
        if stop_tokens[0].text == "else":
            rest = stop_tokens[1:]
            if rest and rest[0].kind == "identifier" and rest[0].text in ("if", "with"):
                # {{else if x}} is {{else}}{{if x}}...{{end}}, sharing the outer {{end}}
                # (and {{else with}} since Go 1.23).
                otherwise = [self.control(rest[0].text, rest[1:], stop_pos)]
            else:
                if rest:
                    raise _ParseError(f"unexpected \"{rest[0].text}\" in else", stop_pos)
                otherwise, stop = self.list_()
                if stop is None or stop[0][0].text != "end":
                    raise _ParseError("expected end; found " + (
                        "EOF" if stop is None else "{{else}}"), stop_pos)
                stop_tokens = stop[0]
        elif len(stop_tokens) > 1:
            raise _ParseError(f"unexpected \"{stop_tokens[1].text}\" in end", stop_pos)
        del self.variables[mark:]
        return _Control(pipe.pos, pipe.source, keyword, pipe, body, otherwise)

    def pipeline(self, tokens: list[_Token], pos: int, context: str) -> _Pipeline:
        source_end = tokens[-1].pos + len(tokens[-1].text) if tokens else pos
        source = self.template[tokens[0].pos:source_end] if tokens else ""
        declare: list[str] = []
        assign = False
        names: list[str] = []
        i = 0
        while i + 1 < len(tokens) and tokens[i].kind == "variable" and \
                tokens[i + 1].kind in ("comma", "declare", "assign"):
            names.append(tokens[i].text)
            i += 2
            if tokens[i - 1].kind != "comma":
                declare, assign = names, tokens[i - 1].kind == "assign"
                break
        else:
            i = 0
        if len(declare) > (2 if context == "range" else 1):
            raise _ParseError(f"too many declarations in {context}", pos)
        commands = self.commands(tokens[i:], pos, context)
        if assign:
            for name in declare:
                if name not in self.variables:
                    raise _ParseError(f"undefined variable \"{name}\"", pos)
        else:
            self.variables.extend(declare)
        return _Pipeline(tokens[0].pos if tokens else pos, source, declare, assign, commands)

    def commands(self, tokens: list[_Token], pos: int, context: str) -> list[_Command]:
        if not tokens:
            raise _ParseError(f"missing value for {context}", pos)
        commands: list[_Command] = []
        args: list[_Node] = []
        i = start = 0
        while True:
            if i == len(tokens) or tokens[i].kind == "pipe":
                if not args:
                    raise _ParseError("missing value for command", pos)
                end = tokens[i - 1].pos + len(tokens[i - 1].text)
                commands.append(_Command(start, self.template[start:end], args))
                if i == len(tokens):
                    break
                args = []
                i += 1
                continue
            if args and not tokens[i].spaced and tokens[i].kind not in ("open", "close"):
                raise _ParseError(f"missing space? unexpected \"{tokens[i].text}\"",
                                 tokens[i].pos)
            if not args:
                start = tokens[i].pos
            node, i = self.operand(tokens, i)
            args.append(node)
        for stage, command in enumerate(commands[1:], start=2):
            if isinstance(command.args[0], _Literal):
                raise _ParseError(f"non executable command in pipeline stage {stage}", pos)
        return commands

    @staticmethod
    def chained(tokens: list[_Token], i: int) -> tuple[tuple[str, ...], int, int]:
        """The fields written right after a term (``$x.A.B``), the index after them, and
        the offset of the first (where Go places the whole, for error messages)."""
        names: list[str] = []
        first = -1
        while i < len(tokens) and tokens[i].kind == "field" and not tokens[i].spaced:
            first = tokens[i].pos if first < 0 else first
            names.append(tokens[i].text[1:])
            i += 1
        return tuple(names), i, first

    def operand(self, tokens: list[_Token], i: int) -> tuple[_Node, int]:
        token = tokens[i]
        kind, text, pos = token.kind, token.text, token.pos
        i += 1
        if kind == "open":
            depth, j = 1, i
            while j < len(tokens) and depth:
                depth += {"open": 1, "close": -1}.get(tokens[j].kind, 0)
                j += 1
            if depth:
                raise _ParseError("unclosed left paren", pos)
            inner = self.pipeline(tokens[i:j - 1], pos, "parenthesized pipeline")
            i = j
        names, i, first = self.chained(tokens, i)
        source = self.template[pos:tokens[i - 1].pos + len(tokens[i - 1].text)]
        at = first if first >= 0 else pos
        if kind == "open":
            return (_Chain(at, source, inner, names) if names else inner), i
        if kind == "field":
            return _Field(first if len(names) else pos, source, (text[1:], *names)), i
        if kind == "variable":
            if text not in self.variables:
                raise _ParseError(f"undefined variable \"{text}\"", pos)
            return _Variable(at, source, text, names), i
        if names:
            raise _ParseError(f"unexpected . after term {go_quote(text)}", pos)
        if kind == "dot":
            return _Literal(pos, text, None, "dot"), i
        if kind in ("string", "raw"):
            value = _unescape(text, pos) if kind == "string" else text[1:-1]
            return _Literal(pos, text, value, "const"), i
        if kind == "char":
            value = _unescape(text, pos)
            if len(value) != 1:
                raise _ParseError(f"malformed character constant: {text}", pos)
            return _Literal(pos, text, ord(value), "const"), i
        if kind == "number":
            return _Literal(pos, text, _number(text, pos), "const"), i
        if kind == "identifier":
            if text in ("true", "false"):
                return _Literal(pos, text, text == "true", "const"), i
            if text == "nil":
                return _Literal(pos, text, None, "nil"), i
            if text not in self.functions:
                raise _ParseError(f"function \"{text}\" not defined", pos)
            return _Identifier(pos, text), i
        if kind == "close":
            raise _ParseError("unexpected right paren", pos)
        raise _ParseError(f"unexpected \"{text}\" in operand", pos)


# --- execution -----------------------------------------------------------------------

class _ExecError(Exception):
    def __init__(self, node: _Node, message: str) -> None:
        super().__init__(message)
        self.node = node


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Executor:
    def __init__(self, functions: Mapping[str, Function], out: list[str]) -> None:
        self.functions = functions
        self.out = out
        self.variables: list[list[Any]] = []

    def walk(self, dot: Any, nodes: list[_Node]) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                self.out.append(node.source)
            elif isinstance(node, _Action):
                value = self.pipeline(dot, node.pipe)
                if not node.pipe.declare:
                    self.out.append(value if isinstance(value, str) else show(value))
            elif isinstance(node, _Control):
                self.control(dot, node)
            elif isinstance(node, _Jump):
                raise _Break() if node.source == "break" else _Continue()

    def control(self, dot: Any, node: _Control) -> None:
        mark = len(self.variables)
        value = self.pipeline(dot, node.pipe)
        try:
            if node.keyword == "range":
                self.range_(node, value)
            elif truth(value):
                self.walk(value if node.keyword == "with" else dot, node.body)
            else:
                self.walk(dot, node.otherwise)
        finally:
            del self.variables[mark:]

    def range_(self, node: _Control, value: Any) -> None:
        items: Iterator[tuple[Any, Any]]
        if isinstance(value, (list, tuple)):
            items = iter(enumerate(value))
        elif isinstance(value, Mapping):
            items = ((key, value[key]) for key in sorted(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            items = ((n, n) for n in range(value))
        elif value is None or value is MISSING:
            items = iter(())
        else:
            raise _ExecError(node.pipe.commands[-1],
                             f"range can't iterate over {show(value)}")
        mark = len(self.variables)
        empty = True
        names = node.pipe.declare
        for key, element in items:
            empty = False
            del self.variables[mark:]
            if len(names) == 2:
                self.assign(names[0], key)
            if names:
                self.assign(names[-1], element)
            try:
                self.walk(element, node.body)
            except _Continue:
                continue
            except _Break:
                break
        if empty:
            del self.variables[mark:]
            self.walk(MISSING, node.otherwise)

    def pipeline(self, dot: Any, pipe: _Pipeline) -> Any:
        value: Any = _NO_FINAL
        for command in pipe.commands:
            value = self.command(dot, command, value)
            if value is None:
                value = MISSING  # Go unwraps a nil interface{} into an invalid value
        for name in pipe.declare:
            if pipe.assign:
                self.assign(name, value)
            else:
                self.variables.append([name, value])
        return value

    def assign(self, name: str, value: Any) -> None:
        for binding in reversed(self.variables):
            if binding[0] == name:
                binding[1] = value
                return

    def variable(self, name: str) -> Any:
        for binding_name, value in reversed(self.variables):
            if binding_name == name:
                return value
        raise AssertionError(f"undefined variable {name}")  # the parser checked

    def command(self, dot: Any, command: _Command, final: Any) -> Any:
        first = command.args[0]
        if isinstance(first, _Field):
            return self.fields(first, dot, first.names, command.args, final)
        if isinstance(first, _Variable):
            return self.fields(first, self.variable(first.name), first.names, command.args,
                               final)
        if isinstance(first, _Chain):
            return self.fields(first, self.argument(dot, first.node), first.names,
                               command.args, final)
        if isinstance(first, _Identifier):
            return self.call(dot, first, command, final)
        if len(command.args) > 1 or final is not _NO_FINAL:
            raise _ExecError(first, f"can't give argument to non-function {first.source}")
        return self.argument(dot, first)

    def argument(self, dot: Any, node: _Node) -> Any:
        if isinstance(node, _Literal):
            if node.kind == "nil":
                raise _ExecError(node, "nil is not a command")
            return dot if node.kind == "dot" else node.value
        if isinstance(node, _Field):
            return self.fields(node, dot, node.names, [node], _NO_FINAL)
        if isinstance(node, _Variable):
            return self.fields(node, self.variable(node.name), node.names, [node], _NO_FINAL)
        if isinstance(node, _Chain):
            return self.fields(node, self.argument(dot, node.node), node.names, [node],
                               _NO_FINAL)
        if isinstance(node, _Pipeline):
            value = self.pipeline(dot, node)
            return MISSING if value is None else value
        if isinstance(node, _Identifier):
            return self.call(dot, node, _Command(node.pos, node.source, [node]), _NO_FINAL)
        raise AssertionError(node)

    def fields(self, node: _Node, receiver: Any, names: tuple[str, ...], args: list[_Node],
               final: Any) -> Any:
        for i, name in enumerate(names):
            if receiver is MISSING:
                return MISSING
            if receiver is None:
                raise _ExecError(node, f"nil pointer evaluating interface {{}}.{name}")
            if not isinstance(receiver, Mapping):
                # A variable or a pipeline holds a value of its own type; a map holds
                # interface{} values.
                held = i == 0 and isinstance(node, (_Variable, _Chain))
                kind = go_type(receiver) if held else "interface {}"
                raise _ExecError(node, f"can't evaluate field {name} in type {kind}")
            if i == len(names) - 1 and (len(args) > 1 or final is not _NO_FINAL):
                raise _ExecError(node, f"{name} is not a method but has arguments")
            # A mapping that stands for a Go struct (its ``go_struct`` names the type)
            # has no member it lacks, where a map prints <no value>.
            struct = getattr(receiver, "go_struct", None)
            if struct is not None and name not in receiver:
                raise _ExecError(node, f"can't evaluate field {name} in type {struct}")
            receiver = _member(receiver, name)
        if not names and (len(args) > 1 or final is not _NO_FINAL):
            raise _ExecError(node, f"can't give argument to non-function {node.source}")
        return receiver

    def call(self, dot: Any, identifier: _Identifier, command: _Command, final: Any) -> Any:
        name = identifier.source
        function = self.functions[name]
        nodes = command.args[1:]
        count = len(nodes) + (final is not _NO_FINAL)
        fixed = [p for p in function.params if not p.startswith("...")]
        variadic = len(fixed) < len(function.params)
        if count < len(fixed) or (not variadic and count > len(fixed)):
            want = f"at least {len(fixed)}" if variadic else str(len(fixed))
            raise _ExecError(identifier,
                             f"wrong number of args for {name}: want {want} got {count}")
        if function.lazy:
            def lazily() -> Iterator[Any]:
                yield from (self.argument(dot, node) for node in nodes)
                if final is not _NO_FINAL:
                    yield final
            return function.call(lazily())
        values = []
        for i, node in enumerate(nodes):
            param = function.params[min(i, len(function.params) - 1)].lstrip(".")
            values.append(self.convert(node, self.argument(dot, node), param, function.raw))
        if final is not _NO_FINAL:
            param = function.params[min(len(nodes), len(function.params) - 1)].lstrip(".")
            values.append(self.convert(identifier, final, param, function.raw))
        try:
            return function.call(*values)
        except _Fail as e:
            raise _ExecError(command, f"error calling {name}: {e}") from None

    @staticmethod
    def convert(node: _Node, value: Any, param: str, raw: bool) -> Any:
        """Go's check of an argument against the function's parameter type."""
        if param == "any":
            return value if raw or value is not MISSING else None
        if value is MISSING:
            raise _ExecError(node, f"invalid value; expected {param}")
        ok = {"string": lambda v: isinstance(v, str),
              "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "[]string": lambda v: isinstance(v, (list, tuple)) and
              all(isinstance(s, str) for s in v)}[param]
        if not ok(value):
            got = "interface {}" if value is None else go_type(value)
            raise _ExecError(node, f"wrong type for value; expected {param}; got {got}")
        return value


class Template:
    """A parsed template: ``execute`` renders it for one object."""

    def __init__(self, source: str, functions: Mapping[str, Function] = FUNCTIONS) -> None:
        self.source = source
        self.functions = functions
        try:
            self.nodes = _Parser(source, functions).parse()
        except _ParseError as e:
            raise TemplateError(f"template: :{self._line(e.pos)}: {e}") from None

    def _line(self, pos: int) -> int:
        return self.source.count("\n", 0, pos) + 1

    def execute(self, data: Any, out: list[str] | None = None) -> str:
        """The text for ``data``; on an error, ``out`` (if given) keeps what was
        written before it, as Go's writer would."""
        parts: list[str] = [] if out is None else out
        try:
            executor = _Executor(self.functions, parts)
            executor.variables.append(["$", data])
            executor.walk(data, self.nodes)
        except _ExecError as e:
            line = self._line(e.node.pos)
            column = e.node.pos - (self.source.rfind("\n", 0, e.node.pos) + 1)
            raise TemplateError(f"template: :{line}:{column}: executing \"\" at "
                                f"<{e.node.source}>: {e}") from None
        return "".join(parts)


@functools.lru_cache(maxsize=64)
def parse(source: str, header: bool = False) -> Template:
    """The parsed template (cached: a command renders the same one for every row);
    ``header`` uses docker's header functions, for a table's titles."""
    return Template(source, HEADER_FUNCTIONS if header else FUNCTIONS)
