"""Regular expressions compiled to llama.cpp's GBNF grammars, so a regex constraint holds on llama.cpp too.

llama.cpp has no regex field. Its own JSON-schema ``pattern`` support wraps the match in JSON quotes and, for
any construct it does not know (``\\d``, ``\\w``, unanchored patterns...), silently accepts ANY string (a
warning in the server log only). So sandserve compiles the regex itself, from the tree of Python's own regex
parser: the whole output must match it (full-match semantics, as SGLang's ``regex``).

Refused (``CapabilityError``, use SGLang): lookarounds, backreferences, conditionals, atomic groups,
possessive repeats, anchors or word boundaries inside the pattern, case-insensitive matching. ``\\d``, ``\\w``
and ``\\s`` mean their ASCII sets ([0-9], [A-Za-z0-9_], whitespace), a subset of Python's Unicode meaning, so
every output still matches; what the grammar produces is checked against the regex anyway
(``constrained.py``).
"""

from __future__ import annotations

import re
import re._constants as sre_c  # the stdlib's own regex parser, the same one `re.compile` uses
import re._parser as sre_parser
from typing import Any

from sandserve.errors import CapabilityError, InvalidConstraintError

_DIGIT = [("0", "9")]
_WORD = [("a", "z"), ("A", "Z"), ("0", "9"), ("_", "_")]
_SPACE = [(c, c) for c in " \t\n\r\f\v"]
_PRINTABLE_ASCII = ("!", "~")
#: Negated classes are kept to printable ASCII (plus space), a subset of what the regex allows.
_NEGATED_CATEGORY = {
    sre_c.CATEGORY_NOT_DIGIT: [(" ", "/"), (":", "~")],
    sre_c.CATEGORY_NOT_WORD: [(" ", "/"), (":", "@"), ("[", "^"), ("`", "`"), ("{", "~")],
    sre_c.CATEGORY_NOT_SPACE: [_PRINTABLE_ASCII],
}
_CATEGORY = {sre_c.CATEGORY_DIGIT: _DIGIT, sre_c.CATEGORY_WORD: _WORD, sre_c.CATEGORY_SPACE: _SPACE}
_START_ANCHORS = (sre_c.AT_BEGINNING, sre_c.AT_BEGINNING_STRING)
_END_ANCHORS = (sre_c.AT_END, sre_c.AT_END_STRING)


class _Unsupported(Exception):
    pass


def regex_to_gbnf(pattern: str) -> str:
    """A GBNF grammar (start rule ``root``) whose language is a subset of the full matches of ``pattern``."""
    try:
        parsed = sre_parser.parse(pattern)
    except re.error as exc:
        raise InvalidConstraintError("regex", f"{exc} (in {pattern!r})") from exc
    flags = parsed.state.flags
    if flags & re.IGNORECASE:
        raise _needs_sglang("case-insensitive matching")
    try:
        body = _top_level(list(parsed), dotall=bool(flags & re.DOTALL))
    except _Unsupported as exc:
        raise _needs_sglang(str(exc)) from None
    return f"root ::= {body}\n"


def _needs_sglang(construct: str) -> CapabilityError:
    return CapabilityError(
        f"A regex with {construct}",
        "llamacpp",
        hint="llama.cpp has no regex support: sandserve compiles regexes to its GBNF grammars, which cannot "
        "express this. Serve with SGLang (`sandserve up --provider daytona`), or rewrite the pattern "
        "without it (or pass an equivalent GBNF grammar with --ebnf).",
    )


def _top_level(items: list[tuple[Any, Any]], *, dotall: bool) -> str:
    """Anchors are allowed at the very start and end only: the whole output is matched anyway."""
    if len(items) == 1 and items[0][0] is sre_c.BRANCH:
        alternatives = [_strip_anchors(list(alt)) for alt in items[0][1][1]]
        return " | ".join(_sequence(alt, dotall) for alt in alternatives)
    return _sequence(_strip_anchors(items), dotall)


def _strip_anchors(items: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    if items and items[0][0] is sre_c.AT and items[0][1] in _START_ANCHORS:
        items = items[1:]
    if items and items[-1][0] is sre_c.AT and items[-1][1] in _END_ANCHORS:
        items = items[:-1]
    return items


def _sequence(items: list[tuple[Any, Any]], dotall: bool) -> str:
    parts: list[str] = []
    literal = ""  # consecutive literal characters become one quoted string
    for op, av in items:
        if op is sre_c.LITERAL:
            literal += _literal_char(chr(av))
            continue
        if literal:
            parts.append(f'"{literal}"')
            literal = ""
        parts.append(_item(op, av, dotall))
    if literal:
        parts.append(f'"{literal}"')
    return " ".join(parts) if parts else '""'


def _item(op: Any, av: Any, dotall: bool) -> str:
    if op is sre_c.LITERAL:
        return _literal(chr(av))
    if op is sre_c.NOT_LITERAL:
        return f"[^{_class_char(chr(av))}]"
    if op is sre_c.ANY:
        return r"[\U00000000-\U0010FFFF]" if dotall else r"[^\n]"
    if op is sre_c.IN:
        return _char_class(av)
    if op is sre_c.BRANCH:
        return "(" + " | ".join(_sequence(list(alt), dotall) for alt in av[1]) + ")"
    if op is sre_c.SUBPATTERN:
        _group, add_flags, _del_flags, sub = av
        if add_flags & re.IGNORECASE:
            raise _Unsupported("case-insensitive matching")
        return "(" + _sequence(list(sub), dotall) + ")"
    if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
        low, high, sub = av
        return _repeat("(" + _sequence(list(sub), dotall) + ")", low, high)
    if op is sre_c.AT:
        raise _Unsupported("an anchor or word boundary inside the pattern")
    names = {
        sre_c.ASSERT: "a lookahead/lookbehind",
        sre_c.ASSERT_NOT: "a negative lookaround",
        sre_c.GROUPREF: "a backreference",
        sre_c.GROUPREF_EXISTS: "a conditional group",
        sre_c.POSSESSIVE_REPEAT: "a possessive repeat",
        sre_c.ATOMIC_GROUP: "an atomic group",
    }
    raise _Unsupported(names.get(op, f"the construct {op}"))


def _repeat(sub: str, low: int, high: int) -> str:
    unbounded = high == sre_c.MAXREPEAT
    if (low, unbounded) == (0, True):
        return sub + "*"
    if (low, unbounded) == (1, True):
        return sub + "+"
    if unbounded:
        return f"{sub}{{{low},}}"
    if (low, high) == (0, 1):
        return sub + "?"
    if low == high:
        return f"{sub}{{{low}}}"
    return f"{sub}{{{low},{high}}}"


def _char_class(items: list[tuple[Any, Any]]) -> str:
    negate = bool(items) and items[0][0] is sre_c.NEGATE
    ranges: list[tuple[str, str]] = []
    negated_categories = []
    for op, av in items[1:] if negate else items:
        if op is sre_c.LITERAL:
            ranges.append((chr(av), chr(av)))
        elif op is sre_c.RANGE:
            ranges.append((chr(av[0]), chr(av[1])))
        elif op is sre_c.CATEGORY and av in _CATEGORY:
            ranges.extend(_CATEGORY[av])
        elif op is sre_c.CATEGORY and av in _NEGATED_CATEGORY:
            negated_categories.append(av)
        else:
            raise _Unsupported(f"the character-class item {op} {av}")
    if negated_categories:
        # [\D] alone is expressible (as a printable-ASCII subset); mixed with others or negated, it is not.
        if negate or ranges or len(negated_categories) > 1:
            raise _Unsupported("a negated shorthand (\\D, \\W, \\S) combined with other class items")
        ranges = _NEGATED_CATEGORY[negated_categories[0]]
    body = "".join(_class_range(lo, hi) for lo, hi in ranges)
    return f"[{'^' if negate else ''}{body}]"


def _class_range(low: str, high: str) -> str:
    return _class_char(low) if low == high else f"{_class_char(low)}-{_class_char(high)}"


def _escape(char: str) -> str | None:
    code = ord(char)
    named = {"\n": r"\n", "\r": r"\r", "\t": r"\t", "\\": "\\\\"}
    if char in named:
        return named[char]
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02X}"
    return None


def _literal(char: str) -> str:
    return f'"{_literal_char(char)}"'


def _literal_char(char: str) -> str:
    return '\\"' if char == '"' else (_escape(char) or char)


def _class_char(char: str) -> str:
    if char in "]-[":
        return "\\" + char
    if char == "^":  # GBNF has no \^ escape, and a leading ^ would negate the class
        return "\\x5E"
    return _escape(char) or char
