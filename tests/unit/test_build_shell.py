"""Docker's shell-word processing of Dockerfile arguments: quotes, escapes, variables and
their modifiers, word splitting, and the errors of malformed words."""

from __future__ import annotations

import re

import pytest

from dockyard.build.dockerfile import DockerfileError
from dockyard.build.shell import expand_word, expand_words, glob_regex, has_wildcards

ENV = {
    "A": "hello",
    "EMPTY": "",
    "P": "/usr/local/bin/app.tar.gz",
    "S": "a b  c",
    "Q": "it's",
    "HOME": "/root",
}


@pytest.mark.parametrize(("word", "value"), [
    ("plain", "plain"),
    ("$A", "hello"),
    ("${A}", "hello"),
    ("${A}x", "hellox"),
    ("$Ax", ""),                     # the name is Ax
    ("x${A}y$A", "xhelloyhello"),
    ("$UNSET", ""),
    ("${UNSET}", ""),
    ("$", "$"),
    ("a$", "a$"),
    ("$-x", "x"),                    # a special parameter, unset in a build
    ("$1x", "x"),
    ("$/x", "$/x"),
    # quotes
    ('"$A"', "hello"),
    ("'$A'", "$A"),
    ('"a b"', "a b"),
    ("'a\\b'", "a\\b"),
    ('"it\'s"', "it's"),
    ("'say \"hi\"'", 'say "hi"'),
    ('"$Q"', "it's"),
    ('a"b"c', "abc"),
    ('""', ""),
    # escapes
    ("\\$A", "$A"),
    ("a\\ b", "a b"),
    ("\\\\", "\\"),
    ('"a\\"b"', 'a"b'),
    ('"\\$A"', "$A"),
    ('"a\\b"', "a\\b"),              # inside quotes only " $ and \ are escaped
    ('"\\\\"', "\\"),
    ("trailing\\", "trailing"),
    # white space is kept by expand_word
    ("a  b", "a  b"),
    # modifiers
    ("${UNSET:-def}", "def"),
    ("${EMPTY:-def}", "def"),
    ("${A:-def}", "hello"),
    ("${UNSET-def}", "def"),
    ("${EMPTY-def}", ""),
    ("${A:+alt}", "alt"),
    ("${EMPTY:+alt}", ""),
    ("${EMPTY+alt}", "alt"),
    ("${UNSET+alt}", ""),
    ("${A:?}", "hello"),
    ("${EMPTY?}", ""),
    ("${UNSET:-${A}}", "hello"),
    ("${UNSET:-${ALSO:-deep}}", "deep"),
    ('${UNSET:-"a b"}', "a b"),
    ("${UNSET:-a\\}b}", "a}b"),
    ("${UNSET:-'$A'}", "$A"),
    ('"${UNSET:-$A}"', "hello"),
    # pattern removal and replacement
    ("${P#*/}", "usr/local/bin/app.tar.gz"),
    ("${P##*/}", "app.tar.gz"),
    ("${P%.*}", "/usr/local/bin/app.tar"),
    ("${P%%.*}", "/usr/local/bin/app"),
    ("${P#/usr}", "/local/bin/app.tar.gz"),
    ("${P#nomatch}", "/usr/local/bin/app.tar.gz"),
    ("${P%.t?r.gz}", "/usr/local/bin/app"),
    ("${P:##*/}", "app.tar.gz"),           # ":" changes nothing here, as in Docker
    ("${P##*[/.]}", "/usr/local/bin/app.tar.gz"),   # no bracket expressions, as Docker
    ("${A##h*[}", "hello"),
    ("${P%\\*}", "/usr/local/bin/app.tar.gz"),
    ("${A%l?}", "hel"),
    ("${A%%l*}", "he"),
    ("${A%l*}", "hel"),
    ("${A#\\*}", "hello"),
    ("${UNSET#x}", ""),
    ("${A/l/L}", "heLlo"),
    ("${A//l/L}", "heLLo"),
    ("${A//l*/_}", "he_"),                 # the pattern is greedy
    ("${UNSET/x/y}", ""),
    ("${A/nomatch/x}", "hello"),
    ("${A//l/}", "heo"),
])
def test_expand_word(word: str, value: str) -> None:
    assert expand_word(word, ENV) == value


def test_nesting_is_bounded() -> None:
    assert expand_word("${A:-" * 64 + "x" + "}" * 64, {}) == "x"
    with pytest.raises(DockerfileError, match="nested more than 64 levels deep"):
        expand_word("${A:-" * 5000 + "x" + "}" * 5000, {})


def test_backtick_escape() -> None:
    assert expand_word("c:\\dir\\`$A", ENV, escape="`") == "c:\\dir\\$A"
    assert expand_word('"a`"b"', ENV, escape="`") == 'a"b'


@pytest.mark.parametrize(("text", "words"), [
    ("a b\tc", ["a", "b", "c"]),
    ("  lead  trail  ", ["lead", "trail"]),
    ('"a b" c', ["a b", "c"]),
    ("a\\ b c", ["a b", "c"]),
    ("$S", ["a", "b", "c"]),             # an unquoted expansion splits
    ('"$S"', ["a b  c"]),               # a quoted one does not
    ("x$S", ["xa", "b", "c"]),
    ("${UNSET:-80 443}", ["80", "443"]),
    ('"" x', ["x"]),                     # an empty quoted word is dropped, as in Docker
    ("$EMPTY $UNSET", []),
    ("80/tcp $A/udp", ["80/tcp", "hello/udp"]),
    ("", []),
])
def test_expand_words(text: str, words: list[str]) -> None:
    assert expand_words(text, ENV) == words


@pytest.mark.parametrize(("word", "message"), [
    ("${A", "syntax error: missing '}'"),
    ("${", "syntax error: missing '}'"),
    ("${UNSET:-x", "syntax error: missing '}'"),
    ("${}", "syntax error: bad substitution"),
    ("${:-x}", "syntax error: bad substitution"),
    ('"abc', "unexpected end of statement while looking for matching double-quote"),
    ("'abc", "unexpected end of statement while looking for matching single-quote"),
    ("${UNSET:?set it with --build-arg}", "UNSET: set it with --build-arg"),
    ("${UNSET?}", "UNSET: is not allowed to be unset"),
    ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
    ("${A:x}", "unsupported modifier (:x) in substitution"),
    ("${A/l}", "syntax error: missing '/' in ${}"),
    ("${A/l/L", "syntax error: missing '}'"),
    ("${A^}", "unsupported modifier (^) in substitution"),
    ("${A#\\x}", "invalid pattern (\\x) in substitution: invalid escape '\\x'"),
])
def test_malformed_words(word: str, message: str) -> None:
    with pytest.raises(DockerfileError) as caught:
        expand_word(word, ENV)
    assert caught.value.reason == message
    assert caught.value.line is None


def test_wildcards() -> None:
    assert has_wildcards("*.py")
    assert has_wildcards("src/[ab].c")
    assert has_wildcards("file?.txt")
    assert not has_wildcards("plain/path.txt")
    assert not has_wildcards("a\\*b")
    assert has_wildcards("a`*b") is True
    assert not has_wildcards("a`*b", escape="`")


@pytest.mark.parametrize(("pattern", "name", "matches"), [
    ("*.py", "a.py", True),
    ("*.py", "dir/a.py", False),
    ("?.py", "a.py", True),
    ("?.py", "/.py", False),
    ("[a-c].txt", "b.txt", True),
    ("[^a-c].txt", "b.txt", False),
    ("[^a-c].txt", "d.txt", True),
    ("[!a].txt", "!.txt", True),         # Go's filepath.Match negates with ^ only
    ("[\\]].txt", "].txt", True),
    ("[a\\-z]", "-", True),
    ("[a\\-z]", "b", False),
    ("[z-a]x", "bx", False),              # a reversed range matches nothing
    ("[^z-a]x", "bx", True),
    ("[^/]", "/", False),
    ("\\*.txt", "*.txt", True),
    ("\\*.txt", "a.txt", False),
    ("a.b", "axb", False),
])
def test_path_globs(pattern: str, name: str, matches: bool) -> None:
    assert bool(re.fullmatch(glob_regex(pattern), name)) is matches


@pytest.mark.parametrize("pattern", ["[abc", "[]a]", "[-a]", "[a-]", "[a", "x[", "[\\"])
def test_bad_path_glob(pattern: str) -> None:
    with pytest.raises(DockerfileError, match="syntax error in pattern"):
        glob_regex(pattern)
