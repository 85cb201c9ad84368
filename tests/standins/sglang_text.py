"""The SGLang stand-in's text: tokens, word salad, the prefix cache, and constrained decoding (regex, EBNF,
JSON schema) that really holds for what it covers."""

from __future__ import annotations

import json
import math
import random
import re
import re._parser as _sre  # the stdlib's own regex parser: its tree drives the regex generator
import string
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any

_WORDS = (
    "sandbox",
    "token",
    "river",
    "quiet",
    "light",
    "agent",
    "cloud",
    "stone",
    "signal",
    "garden",
    "window",
    "engine",
    "morning",
    "thread",
    "ocean",
    "lantern",
    "paper",
    "circuit",
    "meadow",
    "harbor",
    "ember",
    "silver",
    "north",
    "echo",
    "field",
    "kernel",
    "winter",
    "bridge",
    "candle",
    "orbit",
)

# --- tokens and text -----------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*\S+|\s+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def token_ids(tokens: Sequence[str]) -> list[int]:
    return [zlib.crc32(token.encode()) % 200_000 for token in tokens]


def truncate(text: str, n_tokens: int) -> str:
    return "".join(tokenize(text)[:n_tokens])


def seeded(*parts: object) -> random.Random:
    return random.Random(zlib.crc32(json.dumps(parts, sort_keys=True, default=str).encode()))


def babble(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(n_words)]
    return (" ".join(words).capitalize() + ".") if words else ""


class PrefixCache:
    """RadixAttention as seen from outside: the longest prefix shared with any earlier prompt is cached.

    At most ``len - 1`` tokens: the last prompt token is always computed again, to get the next logits.
    """

    def __init__(self, keep: int = 512) -> None:
        self._seen: list[tuple[str, ...]] = []
        self._keep = keep
        self._lock = threading.Lock()

    def match_and_insert(self, tokens: Sequence[str]) -> int:
        current = tuple(tokens)
        with self._lock:
            best = max((_common_prefix(current, seen) for seen in self._seen), default=0)
            self._seen.append(current)
            del self._seen[: -self._keep]
        return min(best, max(len(current) - 1, 0))

    def flush(self) -> None:
        with self._lock:
            self._seen.clear()


def _common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# --- constrained decoding --------------------------------------------------------------------------------


class GrammarError(ValueError):
    """A constraint SGLang's grammar backend would refuse: the message is SGLang's."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"Failed to compile {kind} grammar: {detail}")


_ALPHABET = string.ascii_lowercase + string.digits + " " + string.ascii_uppercase + string.punctuation


def regex_sample(pattern: str, rng: random.Random) -> str:
    """A string that fully matches ``pattern``."""
    try:
        compiled = re.compile(pattern)
        tree = _sre.parse(pattern)
        text = _from_sre(tree, rng)
    except re.error as e:
        raise GrammarError("regex", str(e)) from e
    if not compiled.fullmatch(text):
        raise GrammarError("regex", f"unsupported construct in {pattern!r}")
    return text


def _from_sre(items: Any, rng: random.Random) -> str:
    out = []
    for op, arg in items:
        name = str(getattr(op, "name", op))
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":
            out.append(_pick(lambda c, arg=arg: ord(c) != arg, rng))
        elif name == "ANY":
            out.append(_pick(lambda c: c != "\n", rng))
        elif name == "IN":
            out.append(_pick(lambda c, arg=arg: _in_class(c, arg), rng))
        elif name == "BRANCH":
            out.append(_from_sre(rng.choice(arg[1]), rng))
        elif name == "SUBPATTERN":
            out.append(_from_sre(arg[3], rng))
        elif name == "ATOMIC_GROUP":
            out.append(_from_sre(arg, rng))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = arg
            count = low + rng.randint(0, min(high - low, 3))
            out.extend(_from_sre(sub, rng) for _ in range(count))
        elif name == "AT":
            continue  # anchors match the empty string at the ends
        else:  # lookarounds, backreferences, conditionals: xgrammar refuses them too
            raise GrammarError("regex", f"{name.lower()} is not supported")
    return "".join(out)


def _in_class(char: str, items: Any) -> bool:
    negate, hit = False, False
    for op, arg in items:
        name = str(getattr(op, "name", op))
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            hit = hit or ord(char) == arg
        elif name == "RANGE":
            hit = hit or arg[0] <= ord(char) <= arg[1]
        elif name == "CATEGORY":
            hit = hit or _in_category(char, str(getattr(arg, "name", arg)))
    return hit != negate


def _in_category(char: str, category: str) -> bool:
    tests: dict[str, Callable[[str], bool]] = {
        "DIGIT": str.isdigit,
        "SPACE": str.isspace,
        "WORD": lambda c: c.isalnum() or c == "_",
        "LINEBREAK": lambda c: c == "\n",
    }
    base = category.removeprefix("CATEGORY_").removeprefix("NOT_")
    result = tests[base](char)
    return not result if category.startswith("CATEGORY_NOT_") else result


def _pick(allowed: Callable[[str], bool], rng: random.Random) -> str:
    candidates = [c for c in _ALPHABET if allowed(c)]
    if not candidates:
        raise GrammarError("regex", "a character class that no printable ASCII character matches")
    return rng.choice(candidates[:10])


# EBNF (xgrammar's GBNF dialect): root ::= ... ; nodes are tuples ("lit", s) ("cls", negated, ranges)
# ("ref", name) ("seq", [nodes]) ("alt", [nodes]) ("rep", node, min, max|None).
_RULE_HEAD = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*::=")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


class _EbnfParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str) -> GrammarError:
        line = self.text.count("\n", 0, self.pos) + 1
        column = self.pos - (self.text.rfind("\n", 0, self.pos) + 1) + 1
        return GrammarError("ebnf", f"EBNF parse error at line {line}, column {column}: {message}")

    def skip(self) -> None:
        while self.pos < len(self.text):
            if self.text[self.pos].isspace():
                self.pos += 1
            elif self.text[self.pos] == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                break

    def rules(self) -> dict[str, tuple]:
        rules: dict[str, tuple] = {}
        self.skip()
        while self.pos < len(self.text):
            head = _RULE_HEAD.match(self.text, self.pos)
            if not head:
                raise self.error("expect rule name followed by '::='")
            self.pos = head.end()
            rules[head.group(1)] = self.alternation(top=True)
            self.skip()
        return rules

    def alternation(self, top: bool = False) -> tuple:
        options = [self.sequence(top)]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence(top))
        return options[0] if len(options) == 1 else ("alt", options)

    def sequence(self, top: bool) -> tuple:
        items = []
        while True:
            self.skip()
            char = self.peek()
            if char in ("", "|", ")") or (top and _RULE_HEAD.match(self.text, self.pos)):
                break
            items.append(self.postfix(self.element()))
        if not items:
            raise self.error("empty alternative")
        return items[0] if len(items) == 1 else ("seq", items)

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def element(self) -> tuple:
        char = self.text[self.pos]
        if char == '"':
            return ("lit", self.quoted('"'))
        if char == "[":
            return self.char_class()
        if char == "(":
            self.pos += 1
            inner = self.alternation()
            if self.peek() != ")":
                raise self.error("expect ')'")
            self.pos += 1
            return inner
        ident = _IDENT.match(self.text, self.pos)
        if not ident:
            raise self.error(f"unexpected character {char!r}")
        self.pos = ident.end()
        return ("ref", ident.group())

    def postfix(self, node: tuple) -> tuple:
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in "*+?":
                self.pos += 1
                node = ("rep", node, 1 if char == "+" else 0, 1 if char == "?" else None)
            elif char == "{":
                bounds = re.compile(r"\{\s*(\d+)\s*(,\s*(\d*)\s*)?\}").match(self.text, self.pos)
                if not bounds:
                    raise self.error("bad repetition bounds")
                self.pos = bounds.end()
                low = int(bounds.group(1))
                high = low if bounds.group(2) is None else (int(bounds.group(3)) if bounds.group(3) else None)
                node = ("rep", node, low, high)
            else:
                break
        return node

    def quoted(self, end: str) -> str:
        self.pos += 1
        out = []
        while self.pos < len(self.text) and self.text[self.pos] != end:
            out.append(self.escaped())
        if self.pos >= len(self.text):
            raise self.error("unterminated string literal" if end == '"' else "unterminated character class")
        self.pos += 1
        return "".join(out)

    def escaped(self) -> str:
        char = self.text[self.pos]
        self.pos += 1
        if char != "\\":
            return char
        code = self.text[self.pos : self.pos + 1]
        self.pos += 1
        if code in ("x", "u"):
            digits = 2 if code == "x" else 4
            value = self.text[self.pos : self.pos + digits]
            self.pos += digits
            return chr(int(value, 16))
        return {"n": "\n", "t": "\t", "r": "\r"}.get(code, code)

    def char_class(self) -> tuple:
        self.pos += 1
        negated = self.text.startswith("^", self.pos)
        self.pos += negated
        ranges = []
        while self.pos < len(self.text) and self.text[self.pos] != "]":
            low = self.escaped()
            high = low
            if self.text.startswith("-", self.pos) and not self.text.startswith("-]", self.pos):
                self.pos += 1
                high = self.escaped()
            ranges.append((low, high))
        if self.pos >= len(self.text):
            raise self.error("unterminated character class")
        self.pos += 1
        return ("cls", negated, ranges)


def ebnf_sample(grammar: str, rng: random.Random) -> str:
    rules = _EbnfParser(grammar).rules()
    if "root" not in rules:
        raise GrammarError("ebnf", 'The root rule with name "root" is not found.')
    for name in _references(rules):
        if name not in rules:
            raise GrammarError("ebnf", f'Rule "{name}" is not defined')
    heights = _rule_heights(rules)
    if heights["root"] == float("inf"):
        raise GrammarError("ebnf", "the root rule never terminates")
    return _from_ebnf(rules["root"], rules, heights, rng, depth=0)


def _references(rules: dict[str, tuple]) -> set[str]:
    found: set[str] = set()

    def walk(node: tuple) -> None:
        if node[0] == "ref":
            found.add(node[1])
        elif node[0] in ("seq", "alt"):
            for child in node[1]:
                walk(child)
        elif node[0] == "rep":
            walk(node[1])

    for body in rules.values():
        walk(body)
    return found


def _rule_heights(rules: dict[str, tuple]) -> dict[str, float]:
    """How deep the shortest derivation of each rule goes (inf: it never terminates)."""
    heights = {name: float("inf") for name in rules}
    for _ in range(len(rules) + 1):
        heights = {name: _height(body, heights) for name, body in rules.items()}
    return heights


def _height(node: tuple, heights: dict[str, float]) -> float:
    kind = node[0]
    if kind in ("lit", "cls"):
        return 0
    if kind == "ref":
        return 1 + heights[node[1]]
    if kind == "seq":
        return max(_height(child, heights) for child in node[1])
    if kind == "alt":
        return min(_height(child, heights) for child in node[1])
    return 0 if node[2] == 0 else _height(node[1], heights)


def _from_ebnf(
    node: tuple, rules: dict[str, tuple], heights: dict[str, float], rng: random.Random, depth: int
) -> str:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "cls":
        _, negated, ranges = node
        allowed = [c for c in _ALPHABET if any(low <= c <= high for low, high in ranges) != negated]
        if not allowed:
            raise GrammarError("ebnf", "a character class that no printable ASCII character matches")
        return rng.choice(allowed[:10])
    if kind == "ref":
        return _from_ebnf(rules[node[1]], rules, heights, rng, depth + 1)
    if kind == "seq":
        return "".join(_from_ebnf(child, rules, heights, rng, depth) for child in node[1])
    if kind == "alt":
        options = node[1]
        if depth > 8:  # deep enough: head for the exit
            options = [min(options, key=lambda child: _height(child, heights))]
        finite = [child for child in options if _height(child, heights) < float("inf")]
        return _from_ebnf(rng.choice(finite), rules, heights, rng, depth)
    _, child, low, high = node
    extra = 0 if depth > 8 else rng.randint(0, 2 if high is None else min(high - low, 2))
    return "".join(_from_ebnf(child, rules, heights, rng, depth + 1) for _ in range(low + extra))


def json_schema_sample(
    schema_text: str | dict[str, Any], rng: random.Random, words: Sequence[str] = ()
) -> str:
    """A minimal valid JSON instance of the schema, as compact JSON text."""
    try:
        schema = json.loads(schema_text) if isinstance(schema_text, str) else schema_text
    except json.JSONDecodeError as e:
        raise GrammarError("json", f"Invalid JSON schema: {e}") from e
    if not isinstance(schema, (dict, bool)):
        raise GrammarError("json", "the schema must be a JSON object or a boolean")
    try:
        import jsonschema

        jsonschema.validators.validator_for(schema).check_schema(schema)
    except ImportError:
        pass
    except jsonschema.SchemaError as e:
        raise GrammarError("json", e.message) from e
    return json.dumps(_instance(schema, schema, rng, list(words), depth=0), ensure_ascii=False)


def _instance(schema: Any, root: Any, rng: random.Random, words: list[str], depth: int) -> Any:
    if schema is True or schema == {}:
        return rng.choice(_WORDS)
    if not isinstance(schema, dict):
        raise GrammarError("json", "a schema that no value satisfies")
    if "$ref" in schema:
        return _instance(_resolve(schema["$ref"], root), root, rng, words, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "allOf" in schema:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _resolve(part["$ref"], root) if "$ref" in part else part
            merged.setdefault("properties", {}).update(part.get("properties", {}))
            merged["required"] = [*merged.get("required", []), *part.get("required", [])]
            merged.update({k: v for k, v in part.items() if k not in ("properties", "required")})
        return _instance(merged, root, rng, words, depth + 1)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return _instance(schema[key][0], root, rng, words, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties", {})
        out = {name: _instance(sub, root, rng, words, depth + 1) for name, sub in properties.items()}
        for name in schema.get("required", []):
            out.setdefault(name, rng.choice(_WORDS))
        return out
    if kind == "array":
        items = schema.get("items", {})
        count = min(schema.get("minItems", 1), schema.get("maxItems", 1 << 30))
        prefix = schema.get("prefixItems", [])
        subs = [prefix[i] if i < len(prefix) else items for i in range(count)]
        return [_instance(sub, root, rng, words, depth + 1) for sub in subs]
    if kind == "string":
        return _string(schema, rng, words)
    if kind == "integer":
        low = math.floor(schema.get("exclusiveMinimum", -1)) + 1
        low = math.ceil(schema["minimum"]) if "minimum" in schema else low
        high = math.ceil(schema.get("exclusiveMaximum", low + 101)) - 1
        high = math.floor(schema["maximum"]) if "maximum" in schema else high
        return rng.randint(low, max(low, high))
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if low is not None and high is not None:
            return (low + high) / 2
        if low is not None or high is not None:
            return float(low + 1.5 if low is not None else high - 1.5)
        return float(rng.randint(0, 100))
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def _resolve(ref: str, root: Any) -> Any:
    if not ref.startswith("#"):
        raise GrammarError("json", f"Cannot resolve $ref {ref}")
    node = root
    for part in filter(None, ref[1:].split("/")):
        if not isinstance(node, dict) or part not in node:
            raise GrammarError("json", f"Cannot find field {part} in {ref}")
        node = node[part]
    return node


_FORMATS = {
    "date-time": "2025-06-01T12:00:00Z",
    "date": "2025-06-01",
    "time": "12:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
    "ipv4": "192.0.2.1",
}


def _string(schema: dict[str, Any], rng: random.Random, words: list[str]) -> str:
    if "pattern" in schema:
        return regex_sample(schema["pattern"], rng)
    if schema.get("format") in _FORMATS:
        return _FORMATS[schema["format"]]
    text = rng.choice(words) if words else " ".join(rng.choice(_WORDS) for _ in range(2))
    text = text.ljust(schema.get("minLength", 0), "a")
    return text[: schema["maxLength"]] if "maxLength" in schema else text


def constraint_sample(kind: str, value: Any, rng: random.Random, words: Sequence[str] = ()) -> str:
    if kind == "regex":
        return regex_sample(value, rng)
    if kind == "ebnf":
        return ebnf_sample(value, rng)
    return json_schema_sample(value, rng, words)
