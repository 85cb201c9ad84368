"""Regexes compiled to llama.cpp's GBNF: what is compiled, and what is refused with a pointer to SGLang.

Each grammar is read back into a Python regex (the subset of GBNF the compiler writes: quoted strings,
character classes, groups, alternation and repeats), so that the language of the grammar can be compared with
the original pattern's full matches on sample strings, without a server.
"""

from __future__ import annotations

import re

import pytest

from sandserve.engines.gbnf import regex_to_gbnf
from sandserve.errors import CapabilityError, InvalidConstraintError


def grammar_as_regex(grammar: str) -> re.Pattern[str]:
    """The root rule of a grammar this compiler writes, as an equivalent Python regex."""
    body = grammar.removeprefix("root ::= ").rstrip("\n")
    out, i = [], 0
    while i < len(body):
        char = body[i]
        if char == '"':
            end = i + 1
            while body[end] != '"':
                end += 2 if body[end] == "\\" else 1
            literal = body[i + 1 : end].encode().decode("unicode_escape").encode("latin-1").decode()
            out.append(re.escape(literal))
            i = end + 1
        elif char == "[":
            end = i + 1
            while body[end] != "]":
                end += 2 if body[end] == "\\" else 1
            out.append(body[i : end + 1])
            i = end + 1
        elif char == "(":
            out.append("(?:")
            i += 1
        elif char == " ":
            i += 1
        else:
            out.append(char)
            i += 1
    return re.compile("".join(out), re.DOTALL)


@pytest.mark.parametrize(
    ("pattern", "grammar"),
    [
        ("(red|green|blue)", 'root ::= (("red" | "green" | "blue"))\n'),
        (r"^\d{3}-\d{4}$", 'root ::= ([0-9]){3} "-" ([0-9]){4}\n'),
        ("[a-c]+x?", 'root ::= ([a-c])+ ("x")?\n'),
        ("a{2,}", 'root ::= ("a"){2,}\n'),
        (".", r"root ::= [^\n]" + "\n"),
        (r"\w\s", r"root ::= [a-zA-Z0-9_] [ \t\n\r\x0C\x0B]" + "\n"),
        ('say "hi"', 'root ::= "say \\"hi\\""\n'),
    ],
)
def test_what_a_regex_compiles_to(pattern: str, grammar: str):
    assert regex_to_gbnf(pattern) == grammar


SAMPLES = ["", "a", "aa", "aaa", "red", "green", "blue", "redd", "555-1234", "55-1234", "abcx", "abc", "x"]
SAMPLES += ["_ ", "a\n", "bbac", "é"]


@pytest.mark.parametrize(
    "pattern",
    [
        "(red|green|blue)",
        r"\d{3}-\d{4}",
        "[a-c]+x?",
        "a{2,}",
        "a{0,2}",
        "(a|b)*c?",
        r"[^\d]",
        r"\w\s",
        "a.|x",
        "red|gre+n",
    ],
)
def test_the_grammar_accepts_exactly_the_full_matches(pattern: str):
    grammar = grammar_as_regex(regex_to_gbnf(pattern))
    for sample in SAMPLES:
        assert bool(grammar.fullmatch(sample)) == bool(re.fullmatch(pattern, sample)), (pattern, sample)


def test_dotall_lets_a_dot_match_a_newline():
    assert grammar_as_regex(regex_to_gbnf("(?s)a.")).fullmatch("a\n")
    assert not grammar_as_regex(regex_to_gbnf("a.")).fullmatch("a\n")


@pytest.mark.parametrize(
    ("pattern", "construct"),
    [
        ("(?i)abc", "case-insensitive matching"),
        (r"(a)\1", "a backreference"),
        ("a(?=b)", "a lookahead/lookbehind"),
        ("a(?!b)", "a negative lookaround"),
        (r"a\bb", "an anchor or word boundary inside the pattern"),
        ("a++", "a possessive repeat"),
        ("(?>a)", "an atomic group"),
    ],
)
def test_what_gbnf_cannot_express_is_refused_with_sglang_named(pattern: str, construct: str):
    with pytest.raises(CapabilityError) as raised:
        regex_to_gbnf(pattern)
    assert construct in raised.value.message and "SGLang" in (raised.value.hint or "")


def test_an_invalid_regex_says_where():
    with pytest.raises(InvalidConstraintError, match="missing \\), unterminated subpattern"):
        regex_to_gbnf("(")


def test_a_negated_category_keeps_to_printable_ascii_a_subset_of_what_the_regex_allows():
    grammar = grammar_as_regex(regex_to_gbnf(r"\D+"))
    assert grammar.fullmatch("abc") and re.fullmatch(r"\D+", "abc")
    assert re.fullmatch(r"\D+", "é") and not grammar.fullmatch("é")
    for sample in SAMPLES:
        assert not grammar.fullmatch(sample) or re.fullmatch(r"\D+", sample), sample
