"""A stand-in for SGLang's HTTP server (facts/sglang.md SHAPES), for machines with no GPU.

Two ways to run it:

* in-process: ``with SGLangStandin(reasoning_parser="gpt-oss") as server: ... server.url ...`` (a thread,
  a free 127.0.0.1 port);
* as SGLang itself: ``PYTHONPATH=tests/standins/fake_sglang python -m sglang.launch_server --model-path ...``
  prints SGLang's real start-up log lines (to stderr, as SGLang's logger does), then serves. Environment:
  ``SANDSERVE_FAKE_SGLANG_FAIL`` = kv_oom | cuda_oom | host_oom | context | gated | not_found prints that
  failure's real log and exits non-zero (kv_oom and cuda_oom the way SGLang does: "Scheduler hit an
  exception", "Received sigquit from a child process", then the parent SIGKILLs its own tree);
  ``SANDSERVE_FAKE_SGLANG_WARMUP_SECONDS`` (default 0.5) is how long /health* answer 503 after the port
  opens; ``SANDSERVE_FAKE_SGLANG_READY_FILE`` holds warm-up until that file exists;
  ``SANDSERVE_FAKE_SGLANG_LOG_STEP`` (default 0.02) is the pause between log lines;
  ``SANDSERVE_FAKE_SGLANG_KV_TOKENS`` the KV pool size it reports;
  ``SANDSERVE_FAKE_SGLANG_DECODE_SECONDS`` (default 0) how long each generation takes once running. At most
  ``--max-running-requests`` generate at once; the rest wait (``/v1/loads`` counts them as waiting).

The "model" is deterministic word salad seeded by the prompt. A token is a whitespace-led chunk of text
(``\\s*\\S+``). Constrained decoding really holds for what the generators below cover: regexes the
stdlib parses, minus lookarounds and backreferences (as xgrammar); EBNF with literals, character classes,
rule references, groups, ``| * + ? {m,n}``; JSON schemas via a minimal instance of type/properties/items/
enum/const/anyOf/oneOf/allOf/$ref/min-max bounds/pattern/format.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import heapq
import itertools
import json
import math
import os
import random
import re
import re._parser as _sre  # the stdlib's own regex parser: its tree drives the regex generator
import signal
import socket
import string
import sys
import threading
import time
import traceback
import uuid
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

try:  # as part of the tests' `standins` package, or run as SGLang from tests/standins (fake_sglang)
    from .sglang_boot_model import BootModel
except ImportError:
    from sglang_boot_model import BootModel  # type: ignore[no-redef]

VERSION = "0.5.12.post1"
FAIL_ENV = "SANDSERVE_FAKE_SGLANG_FAIL"
WARMUP_ENV = "SANDSERVE_FAKE_SGLANG_WARMUP_SECONDS"
READY_FILE_ENV = "SANDSERVE_FAKE_SGLANG_READY_FILE"
LOG_STEP_ENV = "SANDSERVE_FAKE_SGLANG_LOG_STEP"
KV_TOKENS_ENV = "SANDSERVE_FAKE_SGLANG_KV_TOKENS"
DECODE_SECONDS_ENV = "SANDSERVE_FAKE_SGLANG_DECODE_SECONDS"
FAILURES = ("kv_oom", "cuda_oom", "host_oom", "context", "gated", "not_found")

TOOL_CALL_PARSERS = (
    "deepseekv3",
    "deepseekv31",
    "deepseekv32",
    "deepseekv4",
    "glm",
    "glm45",
    "glm47",
    "gpt-oss",
    "kimi_k2",
    "lfm2",
    "llama3",
    "mimo",
    "mistral",
    "poolside_v1",
    "pythonic",
    "qwen",
    "qwen25",
    "qwen3_coder",
    "step3",
    "step3p5",
    "minimax-m2",
    "trinity",
    "interns1",
    "hermes",
    "hunyuan",
    "gigachat3",
    "gemma4",
    "auto",
)
REASONING_PARSERS = (
    "deepseek-r1",
    "deepseek-v3",
    "deepseek-v4",
    "glm45",
    "hunyuan",
    "gpt-oss",
    "kimi",
    "kimi_k2",
    "mimo",
    "poolside_v1",
    "qwen3",
    "qwen3-thinking",
    "minimax",
    "minimax-append-think",
    "step3",
    "step3p5",
    "mistral",
    "nemotron_3",
    "interns1",
    "gemma4",
    "auto",
)
EOS_ID = 200002
REASONING_WORDS = {"none": 4, "minimal": 4, "low": 12, "medium": 32, "high": 96}
ANSWER_WORDS = 20
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


# --- configuration: the launch flags SGLang takes ----------------------------------------------------


@dataclass
class ServerConfig:
    model_path: str = "openai/gpt-oss-20b"
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 30000
    api_key: str | None = None
    enable_cache_report: bool = False
    enable_metrics: bool = False
    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    context_length: int | None = None
    mem_fraction_static: float | None = None
    cuda_graph_max_bs: int | None = None
    max_running_requests: int | None = None
    chunked_prefill_size: int | None = None
    schedule_policy: str = "fcfs"
    enable_priority_scheduling: bool = False
    default_priority_value: int | None = None
    schedule_low_priority_values_first: bool = False
    max_total_num_tokens: int = 1_220_512
    """What the GPU would give the KV pool (not a flag)."""
    model_context_len: int = 131_072
    """The model's own context length (not a flag)."""

    @property
    def name(self) -> str:
        return self.served_model_name or self.model_path

    @property
    def context_len(self) -> int:
        return self.context_length or self.model_context_len

    @property
    def running_requests(self) -> int:
        return self.max_running_requests or 2048


#: server_args.py's --schedule-policy choices (0.5.12.post1); priority scheduling takes only fcfs and lof.
SCHEDULE_POLICIES = ("lpm", "random", "fcfs", "dfs-weight", "lof", "priority", "routing-key")
PRIORITY_POLICIES = ("fcfs", "lof")


def parse_args(argv: Sequence[str]) -> ServerConfig:
    """SGLang's flags that matter here; every other flag is accepted and ignored."""
    parser = argparse.ArgumentParser(prog="python3 -m sglang.launch_server")
    parser.add_argument("--model-path", "--model", dest="model_path", required=True)
    parser.add_argument("--served-model-name")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--api-key")
    parser.add_argument("--enable-cache-report", action="store_true")
    parser.add_argument("--enable-metrics", action="store_true")
    parser.add_argument("--reasoning-parser", choices=REASONING_PARSERS)
    parser.add_argument("--tool-call-parser", choices=TOOL_CALL_PARSERS)
    parser.add_argument("--context-length", type=int)
    parser.add_argument("--mem-fraction-static", type=float)
    parser.add_argument("--cuda-graph-max-bs", type=int)
    parser.add_argument("--max-running-requests", type=int)
    parser.add_argument("--chunked-prefill-size", type=int)
    parser.add_argument("--schedule-policy", default="fcfs", choices=SCHEDULE_POLICIES)
    parser.add_argument("--enable-priority-scheduling", action="store_true")
    parser.add_argument("--default-priority-value", type=int)
    parser.add_argument("--schedule-low-priority-values-first", action="store_true")
    args, _unknown = parser.parse_known_args(list(argv))
    config = ServerConfig(**vars(args))
    if KV_TOKENS_ENV in os.environ:
        config.max_total_num_tokens = int(os.environ[KV_TOKENS_ENV])
    return config


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


# --- the server --------------------------------------------------------------------------------------------


@dataclass
class Metrics:
    prompt_tokens: int = 0
    generation_tokens: int = 0
    cached_tokens: int = 0
    requests: int = 0

    def record(self, prompt: int, generated: int, cached: int) -> None:
        self.prompt_tokens += prompt
        self.generation_tokens += generated
        self.cached_tokens += cached
        self.requests += 1


@dataclass
class ServerState:
    config: ServerConfig
    cache: PrefixCache = field(default_factory=PrefixCache)
    metrics: Metrics = field(default_factory=Metrics)
    ready: bool = False
    access_log: bool = False
    started: float = field(default_factory=time.time)
    decode_seconds: float = 0.0
    """How long each generation takes once it runs (the stand-in answers at once otherwise)."""
    scheduler: PriorityScheduler | None = None

    def __post_init__(self) -> None:
        self.scheduler = PriorityScheduler(self.config)


class PriorityScheduler:
    """The scheduler's waiting queue as seen from outside: at most ``max_running_requests`` run; the rest wait
    first come, first served, or, with --enable-priority-scheduling, by priority then arrival
    (schedule_policy.py ``_sort_by_priority_and_fcfs``; higher values first unless
    --schedule-low-priority-values-first). A request without a priority gets --default-priority-value
    (tokenizer_manager.py ``_set_default_priority``), else the lowest there is (scheduler.py
    ``_set_or_validate_priority``). Without priority scheduling a request's priority is ignored."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.enabled = config.enable_priority_scheduling
        self.sign = 1 if config.schedule_low_priority_values_first else -1
        self.waiting: list[tuple[int, int, int, asyncio.Future[None]]] = []
        self.running: Counter[int | None] = Counter()
        self.started: list[int | None] = []
        """Every request's priority, in the order the scheduler started them."""
        self.labels: Counter[str] = Counter()
        """Finished requests per ``priority`` metric label (tokenizer_manager.py ``collect_metrics``)."""
        self._arrivals = itertools.count()

    def label(self, given: int | None) -> int | None:
        """The priority the tokenizer manager passes on (its default filled in)."""
        if self.enabled and given is None:
            return self.config.default_priority_value
        return given

    def effective(self, given: int | None) -> int | None:
        labelled = self.label(given)
        if not self.enabled:
            return None
        if labelled is None:
            return sys.maxsize if self.config.schedule_low_priority_values_first else -sys.maxsize - 1
        return labelled

    async def run(
        self, given: int | None, work: Callable[[], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        priority = self.effective(given)
        ready = asyncio.get_running_loop().create_future()
        order = (self.sign * priority) if priority is not None else 0
        heapq.heappush(self.waiting, (order, next(self._arrivals), priority or 0, ready))
        self._start_next()
        try:
            await ready
        except asyncio.CancelledError:
            if ready.done() and not ready.cancelled():
                self._finish(priority)
            raise
        try:
            return await work()
        finally:
            label = self.label(given)
            self.labels["" if label is None or not self.enabled else str(label)] += 1
            self._finish(priority)

    def _finish(self, priority: int | None) -> None:
        self.running[priority] -= 1
        self._start_next()

    def _start_next(self) -> None:
        while self.waiting and sum(self.running.values()) < self.config.running_requests:
            _, _, value, ready = heapq.heappop(self.waiting)
            if ready.done():
                continue
            priority = value if self.enabled else None
            self.running[priority] += 1
            self.started.append(priority)
            ready.set_result(None)

    def queued(self) -> Counter[int]:
        return Counter(value for _, _, value, ready in self.waiting if not ready.done())


@dataclass
class Reply:
    """One chat answer, before it is shaped into a response or a stream."""

    reasoning: str | None
    content: str | None
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str
    matched_stop: int | str | None

    @property
    def reasoning_tokens(self) -> int:
        return len(tokenize(self.reasoning or ""))

    @property
    def completion_tokens(self) -> int:
        calls = "".join(call["function"]["arguments"] for call in self.tool_calls or [])
        return self.reasoning_tokens + len(tokenize((self.content or "") + calls))


class BadRequest(Exception):
    """A 400 from the OpenAI routes; ``kind``: "BadRequestError" (serving checks), "Bad Request" (schema)."""

    def __init__(self, message: str, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.kind = kind


def _error_response(message: str, kind: str = "BadRequestError", status: int = 400) -> web.Response:
    body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    return web.json_response(body, status=status)


def build_app(state: ServerState) -> web.Application:
    in_flight: dict[int, int] = {}  # request -> its prompt tokens, while it is being generated (/v1/loads)
    app = web.Application(
        middlewares=[
            _access_log_middleware(state),
            _auth_middleware(state),
            _in_flight_middleware(state, in_flight),
        ]
    )
    routes = [
        web.get("/health", _health(state)),
        web.get("/health_generate", _health(state)),
        web.get("/v1/models", _models(state)),
        web.get("/server_info", _server_info(state)),
        web.get("/get_server_info", _server_info(state)),
        web.get("/model_info", _model_info(state)),
        web.get("/get_model_info", _model_info(state)),
        web.get("/flush_cache", _flush_cache(state)),
        web.post("/flush_cache", _flush_cache(state)),
        web.post("/generate", _generate(state)),
        web.post("/v1/chat/completions", _chat(state)),
        web.get("/metrics", _metrics(state)),
        web.get("/v1/loads", _v1_loads(state, in_flight)),
    ]
    app.add_routes(routes)
    return app


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _auth_middleware(state: ServerState) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = state.config.api_key
        open_path = request.path.startswith(("/health", "/ready", "/metrics"))
        if key and request.method != "OPTIONS" and not open_path:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            bearer_ok = scheme.lower() == "bearer" and token == key
            if not (bearer_ok or request.headers.get("x-api-key") == key):
                return web.json_response({"error": "Unauthorized"}, status=401)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return web.json_response({"detail": "Not Found"}, status=404)
        except web.HTTPMethodNotAllowed:
            return web.json_response({"detail": "Method Not Allowed"}, status=405)

    return middleware


def _access_log_middleware(state: ServerState) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if state.access_log and not request.path.startswith("/health"):
            peer = request.transport.get_extra_info("peername") if request.transport else None
            who = f"{peer[0]}:{peer[1]}" if peer else "127.0.0.1:0"
            line = f'"{request.method} {request.path_qs} HTTP/1.1" {response.status} {response.reason}'
            log(f"INFO:     {who} - {line}")
        return response

    return middleware


def _health(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=200 if state.ready else 503)

    return handler


def _models(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        card = {
            "id": state.config.name,
            "object": "model",
            "created": int(state.started),
            "owned_by": "sglang",
            "root": state.config.model_path,
            "parent": None,
            "max_model_len": state.config.context_len,
        }
        return web.json_response({"object": "list", "data": [card]})

    return handler


def server_args(config: ServerConfig) -> dict[str, Any]:
    return {
        "model_path": config.model_path,
        "tokenizer_path": config.model_path,
        "host": config.host,
        "port": config.port,
        "api_key": config.api_key,
        "served_model_name": config.name,
        "reasoning_parser": config.reasoning_parser,
        "tool_call_parser": config.tool_call_parser,
        "enable_cache_report": config.enable_cache_report,
        "enable_metrics": config.enable_metrics,
        "context_length": config.context_length,
        "mem_fraction_static": config.mem_fraction_static or 0.85,
        "cuda_graph_max_bs": config.cuda_graph_max_bs or 256,
        "max_running_requests": config.running_requests,
        "chunked_prefill_size": config.chunked_prefill_size or 8192,
        "schedule_policy": config.schedule_policy,
        "enable_priority_scheduling": config.enable_priority_scheduling,
        "default_priority_value": config.default_priority_value,
        "schedule_low_priority_values_first": config.schedule_low_priority_values_first,
        "tp_size": 1,
        "dp_size": 1,
        "trust_remote_code": False,
    }


def _server_info(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        config = state.config
        internal = {
            "max_total_num_tokens": config.max_total_num_tokens,
            "max_running_requests": config.running_requests,
            "context_len": config.context_len,
            "last_gen_throughput": 0.0,
        }
        info = {
            **server_args(config),
            "max_total_num_tokens": config.max_total_num_tokens,
            "max_req_input_len": config.context_len - 5,
            "internal_states": [internal],
            "version": VERSION,
        }
        return web.json_response(info)

    return handler


def _model_info(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        arch, model_type, _ = architecture(state.config.model_path)
        return web.json_response(
            {
                "model_path": state.config.model_path,
                "tokenizer_path": state.config.model_path,
                "is_generation": True,
                "preferred_sampling_params": None,
                "weight_version": "default",
                "has_image_understanding": False,
                "has_audio_understanding": False,
                "model_type": model_type,
                "architectures": [arch],
            }
        )

    return handler


def _flush_cache(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        state.cache.flush()
        return web.Response(
            text="Cache flushed.\nPlease check backend logs for more details. (When there are running or "
            "waiting requests, the operation will not be performed.)\n"
        )

    return handler


def _metrics(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        if not state.config.enable_metrics:
            return web.json_response({"detail": "Not Found"}, status=404)
        m, name = state.metrics, state.config.name
        hit_rate = m.cached_tokens / m.prompt_tokens if m.prompt_tokens else 0.0
        rows = [
            ("counter", "prompt_tokens_total", m.prompt_tokens),
            ("counter", "generation_tokens_total", m.generation_tokens),
            ("counter", "cached_tokens_total", m.cached_tokens),
            ("counter", "num_requests_total", m.requests),
            ("gauge", "num_running_reqs", 0),
            ("gauge", "num_queue_reqs", 0),
            ("gauge", "cache_hit_rate", hit_rate),
            ("gauge", "token_usage", 0.0),
            ("gauge", "gen_throughput", 0.0),
            ("gauge", "max_total_num_tokens", state.config.max_total_num_tokens),
        ]
        scheduler = state.scheduler
        assert scheduler is not None
        if scheduler.enabled:
            return web.Response(text=_priority_metrics(rows, name, scheduler), content_type="text/plain")
        lines = []
        for kind, metric, value in rows:
            lines += [f"# HELP sglang:{metric} {metric}.", f"# TYPE sglang:{metric} {kind}"]
            lines.append(f'sglang:{metric}{{model_name="{name}"}} {float(value)}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    return handler


def _priority_metrics(rows: list[tuple[str, str, float]], name: str, scheduler: PriorityScheduler) -> str:
    """With priority scheduling every series has a ``priority`` label: counters per request priority (the
    tokenizer's labels), the queue gauges as a total under ``priority=""`` plus one series per priority
    (metrics_collector.py ``_log_gauge_queue_count``)."""
    running = Counter(p for p, n in scheduler.running.items() for _ in range(n) if p is not None)
    by_gauge = {"num_running_reqs": running, "num_queue_reqs": scheduler.queued()}
    lines = []
    for kind, metric, value in rows:
        lines += [f"# HELP sglang:{metric} {metric}.", f"# TYPE sglang:{metric} {kind}"]
        if metric == "num_requests_total":
            for label, count in sorted(scheduler.labels.items()):
                lines.append(f'sglang:{metric}{{model_name="{name}",priority="{label}"}} {float(count)}')
            continue
        if metric in by_gauge:
            value = sum(by_gauge[metric].values())
        lines.append(f'sglang:{metric}{{model_name="{name}",priority=""}} {float(value)}')
        for priority, count in sorted(by_gauge.get(metric, Counter()).items()):
            lines.append(f'sglang:{metric}{{model_name="{name}",priority="{priority}"}} {float(count)}')
    return "\n".join(lines) + "\n"


# --- /v1/loads (SGLang's entrypoints/v1_loads.py: one entry per DP rank, None fields and timestamp dropped,
# num_total_reqs added, then an aggregate) ----------------------------------------------------------------

_GENERATION_PATHS = ("/generate", "/v1/chat/completions", "/v1/completions")


def _in_flight_middleware(state: ServerState, in_flight: dict[int, int]) -> Any:
    """Keeps ``in_flight`` (request -> prompt tokens) for the requests being generated: what the scheduler
    would hold. At most ``max_running_requests`` run at once, each for ``decode_seconds``; the rest wait."""
    scheduler = state.scheduler
    assert scheduler is not None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST" or request.path not in _GENERATION_PATHS:
            return await handler(request)
        body = await request.read()  # aiohttp keeps it for the handler
        given = _given_priority(body)
        if isinstance(given, str):  # not an integer: the route's own validation answers 400
            return await handler(request)
        key = id(request)
        in_flight[key] = len(tokenize(body.decode(errors="replace")))

        async def generate() -> web.StreamResponse:
            if state.decode_seconds:
                await asyncio.sleep(state.decode_seconds)
            return await handler(request)

        try:
            return await scheduler.run(given, generate)
        finally:
            in_flight.pop(key, None)

    return middleware


def _given_priority(body: bytes) -> int | str | None:
    try:
        value = json.loads(body).get("priority")
    except (ValueError, AttributeError):
        return None
    return priority_value(value)


def priority_value(value: Any) -> int | str | None:
    """A request's ``priority`` as pydantic reads ``Optional[int]`` (lax: "3" and 3.0 are 3); the text of
    pydantic's complaint when it is not an integer."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    if isinstance(value, float):
        return (
            "{'type': 'int_from_float', 'loc': ('body', 'priority'), 'msg': 'Input should be a valid "
            "integer, got a number with a fractional part'}"
        )
    return (
        "{'type': 'int_parsing', 'loc': ('body', 'priority'), 'msg': 'Input should be a valid integer, "
        "unable to parse string as an integer'}"
    )


def _v1_loads(state: ServerState, in_flight_table: dict[int, int]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        include = request.query.get("include")
        sections = {s.strip() for s in include.split(",")} if include else {"all"}
        valid = {"core", "memory", "spec", "lora", "disagg", "queues", "all"}
        if sections - valid:
            message = f"Invalid include sections: {sections - valid}. Valid options: {sorted(valid)}"
            return _error_response(message, kind="Bad Request")
        config = state.config
        in_flight = list(in_flight_table.values())
        running = min(len(in_flight), config.running_requests)
        waiting = len(in_flight) - running
        used = sum(in_flight[:running])
        m = state.metrics
        load: dict[str, Any] = {
            "dp_rank": 0,
            "num_running_reqs": running,
            "num_waiting_reqs": waiting,
            "num_used_tokens": used,
            "num_total_tokens": sum(in_flight),
            "max_total_num_tokens": config.max_total_num_tokens,
            "token_usage": round(used / config.max_total_num_tokens, 4),
            "gen_throughput": 0.0,
            "cache_hit_rate": round(m.cached_tokens / m.prompt_tokens, 4) if m.prompt_tokens else 0.0,
            "utilization": round(running / config.running_requests, 4),
            "max_running_requests": config.running_requests,
        }
        if sections & {"memory", "all"}:
            capacity = config.max_total_num_tokens
            load["memory"] = {
                "weight_gb": 12.81,
                "kv_cache_gb": 27.94,
                "graph_gb": 0.6,
                "token_capacity": capacity,
            }
        if sections & {"queues", "all"}:
            load["queues"] = {"waiting": waiting, "grammar": 0, "paused": 0, "retracted": 0}
        load["num_total_reqs"] = running + waiting
        loads = [load]
        if request.query.get("format") == "prometheus":
            lines = []
            for key, value in load.items():
                if isinstance(value, (int, float)) and key not in ("dp_rank", "num_total_reqs"):
                    lines += [f"# TYPE sglang_{key} gauge", f'sglang_{key}{{dp_rank="0"}} {value}']
            return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
        aggregate = {
            "total_running_reqs": running,
            "total_waiting_reqs": waiting,
            "total_reqs": running + waiting,
            "avg_token_usage": load["token_usage"],
            "avg_throughput": load["gen_throughput"],
            "avg_utilization": load["utilization"],
        }
        return web.json_response(
            {
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                "version": VERSION,
                "dp_rank_count": len(loads),
                "loads": loads,
                "aggregate": aggregate,
            }
        )

    return handler


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"JSON decode error: {e}", "Bad Request") from e


def _sse(data: Any) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


async def _start_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    return response


# --- /generate (SGLang's native API) ------------------------------------------------------------------------


def _generate(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object")
            text, input_ids = body.get("text"), body.get("input_ids")
            if text is None and input_ids is None:
                raise BadRequest("Either text, input_ids or input_embeds should be provided.")
            params = body.get("sampling_params") or {}
            if isinstance(text, list):
                return web.json_response([_native_output(state, item, None, params) for item in text])
            if body.get("stream"):
                output = _native_output(state, text, input_ids, params)
                return await _stream_native(request, output)
            return web.json_response(_native_output(state, text, input_ids, params))
        except (BadRequest, ValueError) as e:
            return web.json_response({"error": {"message": str(e)}}, status=400)

    return handler


def _native_output(state: ServerState, text: str | None, input_ids: list[int] | None, params: dict) -> dict:
    started = time.perf_counter()
    prompt_tokens = tokenize(text) if text is not None else [str(i) for i in input_ids or []]
    kinds = [kind for kind in ("regex", "ebnf", "json_schema") if params.get(kind) is not None]
    if len(kinds) > 1:
        raise ValueError("Only one of regex, json_schema, or ebnf can be set.")
    max_new = int(params.get("max_new_tokens", 128))
    rng = seeded(prompt_tokens, params)
    if kinds:
        kind = "json" if kinds[0] == "json_schema" else kinds[0]
        output = constraint_sample(kind, params[kinds[0]], rng)
    elif params.get("ignore_eos"):
        output = " " + babble(rng, max_new)
    else:
        output = " " + babble(rng, 16)
    output, finish = _finish(output, max_new, params.get("stop"))
    cached = state.cache.match_and_insert(prompt_tokens)
    out_tokens = tokenize(output)
    state.metrics.record(len(prompt_tokens), len(out_tokens), cached)
    return {
        "text": output,
        "output_ids": token_ids(out_tokens),
        "meta_info": {
            "id": uuid.uuid4().hex,
            "finish_reason": finish,
            "prompt_tokens": len(prompt_tokens),
            "weight_version": "default",
            "completion_tokens": len(out_tokens),
            "cached_tokens": cached,
            "reasoning_tokens": 0,
            "e2e_latency": time.perf_counter() - started,
        },
    }


def _finish(output: str, max_new: int, stop: str | list[str] | None) -> tuple[str, dict[str, Any]]:
    for word in [stop] if isinstance(stop, str) else stop or []:
        if word and word in output:
            return output[: output.index(word)], {"type": "stop", "matched": word}
    if len(tokenize(output)) > max_new:
        return truncate(output, max_new), {"type": "length", "length": max_new}
    return output, {"type": "stop", "matched": EOS_ID}


async def _stream_native(request: web.Request, output: dict[str, Any]) -> web.StreamResponse:
    response = await _start_stream(request)
    pieces = tokenize(output["text"]) or [""]
    for i in range(1, len(pieces) + 1):
        last = i == len(pieces)
        finish = output["meta_info"]["finish_reason"] if last else None
        meta = {**output["meta_info"], "completion_tokens": i, "finish_reason": finish}
        chunk = {"text": "".join(pieces[:i]), "output_ids": output["output_ids"][:i], "meta_info": meta}
        await response.write(_sse(chunk))
        await asyncio.sleep(0)
    await response.write(b"data: [DONE]\n\n")
    return response


# --- /v1/chat/completions -----------------------------------------------------------------------------------

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_GENERIC_NAME_PARTS = {"get", "set", "list", "fetch", "find", "search", "lookup", "call", "make", "create"}


def _validate_chat(body: Any) -> None:
    """The pydantic side of ChatCompletionRequest: missing or ill-typed fields."""
    if not isinstance(body, dict):
        raise BadRequest(
            "[{'type': 'model_attributes_type', 'loc': ('body',), 'msg': 'Input should be a valid "
            "dictionary or object to extract fields from'}]",
            "Bad Request",
        )
    problems = []
    messages = body.get("messages")
    if messages is None:
        problems.append("{'type': 'missing', 'loc': ('body', 'messages'), 'msg': 'Field required'}")
    elif not isinstance(messages, list):
        problems.append(
            "{'type': 'list_type', 'loc': ('body', 'messages'), 'msg': 'Input should be a valid list'}"
        )
    else:
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in _ROLES:
                problems.append(
                    f"{{'type': 'union_tag_invalid', 'loc': ('body', 'messages', {i}), "
                    f"'msg': 'Input tag does not match any of the expected tags'}}"
                )
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in REASONING_WORDS:
        problems.append(
            "{'type': 'literal_error', 'loc': ('body', 'reasoning_effort'), "
            "'msg': \"Input should be 'low', 'medium' or 'high'\"}"
        )
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            problems.append(
                f"{{'type': 'int_type', 'loc': ('body', '{name}'), 'msg': 'Input should be a valid integer'}}"
            )
    priority = priority_value(body.get("priority"))
    if isinstance(priority, str):
        problems.append(priority)
    if problems:
        raise BadRequest("[" + ", ".join(problems) + "]", "Bad Request")


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def render_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    """The chat template: no shared preamble, so unrelated prompts share no cached prefix."""
    parts = [f"<|{m['role']}|>{_text_of(m.get('content'))}" for m in messages]
    if tools:
        parts.append("<|tools|>" + json.dumps([t.get("function", t) for t in tools]))
    return "\n".join(parts) + "\n<|assistant|>"


def _constraint(body: dict[str, Any]) -> tuple[str, Any] | None:
    found = [(kind, body[kind]) for kind in ("regex", "ebnf") if body.get(kind) is not None]
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        found.append(("json", (fmt.get("json_schema") or {}).get("schema", {})))
    elif fmt.get("type") == "json_object":
        found.append(("json", {"type": "object", "properties": {"answer": {"type": "string"}}}))
    if len(found) > 1:
        raise BadRequest("Only one of regex, json_schema, or ebnf can be set.")
    return found[0] if found else None


def _tool_to_call(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    tools = [t.get("function", t) for t in body.get("tools") or []]
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none" or messages[-1].get("role") == "tool":
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        named = [tool for tool in tools if tool.get("name") == wanted]
        if not named:
            raise BadRequest(f"Tool '{wanted}' not found in 'tools'.")
        return named[0]
    user = _last_user_text(messages).lower()
    for tool in tools:
        name = tool.get("name", "").lower()
        parts = [p for p in re.split(r"[_\W]+", name) if len(p) >= 4 and p not in _GENERIC_NAME_PARTS]
        if name in user or any(part in user for part in parts):
            return tool
    return tools[0] if choice == "required" else None


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    return _text_of(next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), ""))


def _proper_nouns(messages: list[dict[str, Any]]) -> list[str]:
    """Capitalised words of the last user message past its first word: plausible string arguments."""
    user = _last_user_text(messages)
    return [word.strip(".,!?;:'\"") for word in user.split()[1:] if word[:1].isupper()]


def compose_reply(config: ServerConfig, body: dict[str, Any], prompt_tokens: list[str]) -> Reply:
    messages = body["messages"]
    rng = seeded(prompt_tokens, body.get("temperature"), body.get("seed"))
    kwargs = body.get("chat_template_kwargs") or {}
    thinking = (
        config.reasoning_parser is not None
        and kwargs.get("enable_thinking", True) is not False
        and kwargs.get("thinking", True) is not False
    )
    reasoning = babble(rng, REASONING_WORDS[body.get("reasoning_effort") or "medium"]) if thinking else ""
    tool = _tool_to_call(body, messages)
    tool_calls: list[dict[str, Any]] | None = None
    content: str | None
    if tool is not None:
        parameters = tool.get("parameters") or {"type": "object"}
        arguments = json_schema_sample(parameters, rng, _proper_nouns(messages))
        if config.tool_call_parser:
            tool_calls = [
                {
                    "id": f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "index": 0,
                    "function": {"name": tool["name"], "arguments": arguments},
                }
            ]
            content = None
        else:  # without a parser the call stays raw text in content
            content = json.dumps({"name": tool["name"], "arguments": json.loads(arguments)})
    elif (constraint := _constraint(body)) is not None:
        content = constraint_sample(constraint[0], constraint[1], rng, _proper_nouns(messages))
    elif messages[-1].get("role") == "tool":
        content = f"{_text_of(messages[-1].get('content'))}. " + babble(rng, ANSWER_WORDS // 2)
    else:
        content = babble(rng, ANSWER_WORDS)

    budget = body.get("max_completion_tokens") or body.get("max_tokens")
    budget = budget or config.context_len - len(prompt_tokens)
    finish, matched = ("tool_calls", None) if tool_calls else ("stop", EOS_ID)
    if len(tokenize(reasoning)) >= budget:
        reasoning, content, tool_calls = truncate(reasoning, budget), None, None
        finish, matched = "length", None
    elif content is not None:
        room = budget - len(tokenize(reasoning))
        stop = body.get("stop")
        for word in [stop] if isinstance(stop, str) else stop or []:
            if word and word in content:
                content, finish, matched = content[: content.index(word)], "stop", word
        if len(tokenize(content)) > room:
            content, finish, matched = truncate(content, room), "length", None
    if thinking and body.get("separate_reasoning") is False:
        content, reasoning = reasoning + (content or ""), ""
    return Reply(reasoning or None, content, tool_calls, finish, matched)


def _usage(config: ServerConfig, prompt: int, cached: int, reply: Reply) -> dict[str, Any]:
    details = {"cached_tokens": cached} if config.enable_cache_report and cached > 0 else None
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + reply.completion_tokens,
        "completion_tokens": reply.completion_tokens,
        "prompt_tokens_details": details,
        "reasoning_tokens": reply.reasoning_tokens,
    }


def _chat(state: ServerState) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        config = state.config
        stream = False
        try:
            body = await _json_body(request)
            _validate_chat(body)
            stream = bool(body.get("stream"))
            if not body["messages"]:
                raise BadRequest("Messages cannot be empty.")
            prompt_tokens = tokenize(render_prompt(body["messages"], body.get("tools")))
            if len(prompt_tokens) >= config.context_len:
                raise BadRequest(
                    f"The input ({len(prompt_tokens)} tokens) is longer than the model's context length "
                    f"({config.context_len} tokens)."
                )
            reply = compose_reply(config, body, prompt_tokens)
        except (BadRequest, GrammarError) as e:
            kind = e.kind if isinstance(e, BadRequest) else "BadRequestError"
            if stream and kind == "BadRequestError":  # a started stream reports errors as a chunk
                return await _stream_error(request, str(e))
            return _error_response(str(e), kind)
        cached = state.cache.match_and_insert(prompt_tokens)
        state.metrics.record(len(prompt_tokens), reply.completion_tokens, cached)
        usage = _usage(config, len(prompt_tokens), cached, reply)
        model = body.get("model") or config.name
        rid = uuid.uuid4().hex
        if stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await _stream_chat(request, rid, model, reply, usage if include_usage else None)
        message = {
            "role": "assistant",
            "content": reply.content,
            "reasoning_content": reply.reasoning,
            "tool_calls": reply.tool_calls,
        }
        return web.json_response(
            {
                "id": rid,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": reply.finish_reason,
                        "matched_stop": reply.matched_stop,
                    }
                ],
                "usage": usage,
                "metadata": {"weight_version": "default"},
            }
        )

    return handler


async def _stream_error(request: web.Request, message: str) -> web.StreamResponse:
    response = await _start_stream(request)
    error = {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}
    await response.write(_sse({"error": error}))
    await response.write(b"data: [DONE]\n\n")
    return response


async def _stream_chat(
    request: web.Request, rid: str, model: str, reply: Reply, usage: dict[str, Any] | None
) -> web.StreamResponse:
    response = await _start_stream(request)
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, matched: Any = None) -> dict[str, Any]:
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish,
            "matched_stop": matched,
        }
        return {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": None,
        }

    async for delta in _deltas(reply):
        await response.write(_sse(chunk(delta)))
    await response.write(_sse(chunk({"reasoning_content": None}, reply.finish_reason, reply.matched_stop)))
    if usage is not None:
        await response.write(
            _sse(
                {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        )
    await response.write(b"data: [DONE]\n\n")
    return response


async def _deltas(reply: Reply) -> AsyncIterator[dict[str, Any]]:
    """Deltas shaped as SGLang 0.5.12 writes them. Text chunks come from ``sse_utils.StreamDelta`` (msgspec,
    omit_defaults): ``reasoning_content`` has no default there, so it is ALWAYS sent (null or text), because
    the OpenAI SDK's ``ChoiceDelta`` only has the attribute when the key is present; ``role`` and ``content``
    are left out when None. Tool-call chunks are pydantic ``DeltaMessage`` dumps: every key present."""
    yield {"reasoning_content": None, "role": "assistant", "content": ""}
    for field_name, text in (("reasoning_content", reply.reasoning), ("content", reply.content)):
        pieces = tokenize(text or "")
        for i in range(0, len(pieces), 4):
            yield {"reasoning_content": None, field_name: "".join(pieces[i : i + 4])}
            await asyncio.sleep(0)
    for call in reply.tool_calls or []:
        function = call["function"]
        empty = {"role": None, "content": None, "reasoning_content": None}
        yield {
            **empty,
            "tool_calls": [
                {
                    "id": call["id"],
                    "index": 0,
                    "type": "function",
                    "function": {"name": function["name"], "arguments": ""},
                }
            ],
        }
        yield {
            **empty,
            "tool_calls": [
                {
                    "id": None,
                    "index": 0,
                    "type": "function",
                    "function": {"name": None, "arguments": function["arguments"]},
                }
            ],
        }


# --- running it ---------------------------------------------------------------------------------------------


class _Runner:
    """The aiohttp site plus its warm-up, on whatever loop calls ``serve``."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.port: int | None = None
        self.stop_requested: asyncio.Event | None = None

    async def serve(self, started: Callable[[int], None], warm_up: Callable[[], Awaitable[None]]) -> None:
        self.stop_requested = asyncio.Event()
        sock = socket.socket(socket.AF_INET6 if ":" in self.state.config.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.state.config.host, self.state.config.port))
        runner = web.AppRunner(build_app(self.state), access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self.port = sock.getsockname()[1]
        started(self.port)
        warm = asyncio.ensure_future(warm_up())
        try:
            await self.stop_requested.wait()
        finally:
            warm.cancel()
            await runner.cleanup()


class SGLangStandin:
    """The stand-in in a background thread on a free 127.0.0.1 port.

    ``warmup_seconds``: how long /health and /health_generate answer 503; ``hold_warmup``: answer 503
    until ``finish_warmup()``; ``decode_seconds``: how long each generation runs. Other keyword arguments are
    ``ServerConfig`` fields (the launch flags).
    """

    def __init__(
        self,
        *,
        warmup_seconds: float = 0.0,
        hold_warmup: bool = False,
        decode_seconds: float = 0.0,
        **flags: Any,
    ) -> None:
        config = ServerConfig(**{"host": "127.0.0.1", "port": 0, **flags})
        self.state = ServerState(config, decode_seconds=decode_seconds)
        self._runner = _Runner(self.state)
        self._warmup_seconds = warmup_seconds
        self._release = threading.Event()
        if not hold_warmup:
            self._release.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def config(self) -> ServerConfig:
        return self.state.config

    @property
    def url(self) -> str:
        if self._runner.port is None:
            raise RuntimeError("the stand-in is not started")
        return f"http://127.0.0.1:{self._runner.port}"

    def start(self) -> SGLangStandin:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="sglang-standin", daemon=True)
        self._thread.start()
        self._started.wait(timeout=10)
        if self._error is not None or self._runner.port is None:
            raise RuntimeError(f"the SGLang stand-in did not start: {self._error}")
        return self

    def finish_warmup(self) -> None:
        self._release.set()

    def stop(self) -> None:
        if self._loop is not None and self._runner.stop_requested is not None:
            self._loop.call_soon_threadsafe(self._runner.stop_requested.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> SGLangStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            serving = self._runner.serve(lambda _port: self._started.set(), self._warm_up)
            self._loop.run_until_complete(serving)
        except BaseException as e:
            self._error = e
            self._started.set()
        finally:
            self._loop.close()

    async def _warm_up(self) -> None:
        await asyncio.sleep(self._warmup_seconds)
        while not self._release.is_set():
            await asyncio.sleep(0.02)
        self.state.ready = True


# --- the process: SGLang's start-up log, its failures, then serving -----------------------------------------

_ARCHITECTURES = (
    ("gpt-oss", "GptOssForCausalLM", "gpt_oss"),
    ("qwen3-coder", "Qwen3MoeForCausalLM", "qwen3_moe"),
    ("a3b", "Qwen3MoeForCausalLM", "qwen3_moe"),
    ("qwen3", "Qwen3ForCausalLM", "qwen3"),
    ("distill-qwen", "Qwen2ForCausalLM", "qwen2"),
    ("mistral", "MistralForCausalLM", "mistral"),
    ("magistral", "MistralForCausalLM", "mistral"),
)


def architecture(model_path: str) -> tuple[str, str, str]:
    """(architecture, model_type, weight details as "Load weight end" prints them)."""
    lowered = model_path.lower()
    for needle, arch, model_type in _ARCHITECTURES:
        if needle in lowered:
            return arch, model_type, "quant=mxfp4, " if model_type == "gpt_oss" else ""
    return "LlamaForCausalLM", "llama", ""


def log(message: str) -> None:
    """One line as SGLang's logger writes it: ``[%Y-%m-%d %H:%M:%S] message`` on stderr."""
    raw(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}\n")


def raw(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


_SITE = "/sgl-workspace/sglang/python/sglang"
_MAIN_FRAMES = (
    '  File "<frozen runpy>", line 198, in _run_module_as_main\n'
    '  File "<frozen runpy>", line 88, in _run_code\n'
    f'  File "{_SITE}/launch_server.py", line 32, in <module>\n'
    "    run_server(server_args)\n"
)


def _hub_traceback(model: str, kind: str) -> str:
    url = f"https://huggingface.co/{model}/resolve/main/config.json"
    request_id = "Root=1-6740f3a1-3c1b2d4e5f60718293a4b5c6;0e6f4c1a-6b4f-4e53-9d1e-2f1a0b7c8d9e"
    if kind == "gated":
        hub_error = (
            "huggingface_hub.errors.GatedRepoError: 401 Client Error. (Request ID: " + request_id + ")\n\n"
            f"Cannot access gated repo for url {url}.\n"
            f"Access to model {model} is restricted. You must have access to it and be authenticated to "
            "access it. Please log in.\n"
        )
        final = (
            "OSError: You are trying to access a gated repo.\n"
            f"Make sure to have access to it at https://huggingface.co/{model}.\n"
            + hub_error.split(": ", 1)[1]
        )
    else:
        hub_error = (
            "huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error. (Request ID: "
            + request_id
            + ")\n\n"
            f"Repository Not Found for url: {url}.\n"
            "Please make sure you specified the correct `repo_id` and `repo_type`.\n"
            "If you are trying to access a private or gated repo, make sure you are authenticated. For more "
            "details, see https://huggingface.co/docs/huggingface_hub/authentication\n"
            "Invalid username or password.\n"
        )
        final = (
            f"OSError: {model} is not a local folder and is not a valid model identifier listed on "
            "'https://huggingface.co/models'\nIf this is a private repository, make sure to pass a token "
            "having permission to this repo either by logging in with `hf auth login` or by passing "
            "`token=<your_token>`\n"
        )
    return (
        "Traceback (most recent call last):\n"
        '  File "/usr/local/lib/python3.12/dist-packages/huggingface_hub/utils/_http.py", line 402, in '
        "hf_raise_for_status\n    response.raise_for_status()\n"
        f"httpx.HTTPStatusError: Client error '401 Unauthorized' for url '{url}'\n\n"
        "The above exception was the direct cause of the following exception:\n\n"
        "Traceback (most recent call last):\n"
        '  File "/usr/local/lib/python3.12/dist-packages/transformers/utils/hub.py", line 479, in '
        "cached_files\n"
        "    hf_hub_download(\n"
        f"{hub_error}\n"
        "The above exception was the direct cause of the following exception:\n\n"
        "Traceback (most recent call last):\n"
        + _MAIN_FRAMES
        + f'  File "{_SITE}/srt/server_args.py", line 5128, in get_model_config\n'
        "    self.model_config = ModelConfig.from_server_args(self)\n"
        '  File "/usr/local/lib/python3.12/dist-packages/transformers/utils/hub.py", line 543, in '
        "cached_files\n"
        "    raise OSError(\n" + final
    )


def _context_traceback(requested: int, derived: int) -> str:
    return (
        "Traceback (most recent call last):\n"
        + _MAIN_FRAMES
        + f'  File "{_SITE}/srt/configs/model_config.py", line 421, in _derive_context_length\n'
        "    raise ValueError(\n"
        f"ValueError: Warning: User-specified context_length ({requested}) is greater than the derived "
        f"context_length ({derived}). This may lead to incorrect model outputs or CUDA errors. Note that the "
        "derived context_length may differ from max_position_embeddings in the model's config. To allow "
        "overriding this maximum, set the env var SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1\n"
    )


def _priority_policy_traceback(policy: str) -> str:
    """ServerArgs' check of the scheduling policy under priority scheduling (server_args.py)."""
    return (
        "Traceback (most recent call last):\n"
        + _MAIN_FRAMES
        + f'  File "{_SITE}/srt/server_args.py", line 7328, in check_server_args\n'
        "    assert self.schedule_policy in [\n"
        "AssertionError: To use priority scheduling, schedule_policy must be 'fcfs' or 'lof'. "
        f"'{policy}' is not supported.\n"
    )


def _scheduler_exception(frames: str, error: str) -> None:
    """A scheduler child's failure: its traceback, then the parent's SIGQUIT handler kills the whole tree."""
    log(
        "Scheduler hit an exception: Traceback (most recent call last):\n"
        f'  File "{_SITE}/srt/managers/scheduler.py", line 3571, in run_scheduler_process\n'
        "    scheduler = Scheduler(\n" + frames + error + "\n"
    )
    log("Received sigquit from a child process. It usually means the child failed.")
    os.kill(os.getpid(), signal.SIGKILL)  # kill_process_tree(os.getpid()) ends with the parent itself


class Boot:
    """What ``python3 -m sglang.launch_server`` prints, step by step, and the failure a test asked for."""

    def __init__(self, config: ServerConfig, fail: str | None, step: float) -> None:
        self.config = config
        self.fail = fail
        self.step = step
        self.boot = BootModel.from_environment(config.model_path)

    def line(self, message: str) -> None:
        log(message)
        time.sleep(self.step)

    def run(self) -> int:
        config = self.config
        allow_longer = os.environ.get("SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN") in ("1", "true", "True")
        if self.fail in ("gated", "not_found"):
            raw(_hub_traceback(config.model_path, self.fail))
            return 1
        if self.fail == "context" or (config.context_len > config.model_context_len and not allow_longer):
            requested = max(config.context_len, 2 * config.model_context_len)
            raw(_context_traceback(requested, config.model_context_len))
            return 1
        if config.enable_priority_scheduling and config.schedule_policy not in PRIORITY_POLICIES:
            raw(_priority_policy_traceback(config.schedule_policy))
            return 1
        self.boot.wait("start")
        args = ", ".join(f"{key}={value!r}" for key, value in server_args(config).items())
        self.line(f"server_args=ServerArgs({args})")
        self.line("Using default HuggingFace chat template with detected content format: string")
        self.line("Init torch distributed begin.")
        self.line("Init torch distributed ends. elapsed=0.21 s, mem usage=0.10 GB")
        self.line("Load weight begin. avail mem=78.41 GB")
        self.boot.fetch_weights(self.line)
        self.line("Using model weights format ['*.safetensors']")
        self.shards(done=1 if self.fail == "host_oom" else 3)
        if self.fail == "host_oom":
            raw(
                "Traceback (most recent call last):\n"
                + _MAIN_FRAMES
                + f'  File "{_SITE}/srt/entrypoints/engine.py", line 1277, in _wait_for_scheduler_ready\n'
                "    raise _scheduler_died_error(i, scheduler_procs[i])\n"
                "RuntimeError: Rank 0 scheduler died during initialization (exit code: -9). If exit code is "
                "-9 (SIGKILL), a common cause is the OS OOM killer. Run `dmesg -T | grep -i oom` to check.\n"
            )
            return 1
        arch, _, details = architecture(config.model_path)
        self.boot.wait("load")
        self.line(
            f"Load weight end. elapsed=41.20 s, type={arch}, {details}avail mem=64.12 GB, mem usage=14.29 GB."
        )
        if self.fail == "kv_oom":
            fraction = config.mem_fraction_static or 0.85
            _scheduler_exception(
                f'  File "{_SITE}/srt/model_executor/model_runner.py", line 612, in initialize\n'
                "    self.init_memory_pool(min_per_gpu_memory)\n"
                f'  File "{_SITE}/srt/model_executor/pool_configurator.py", line 86, in __post_init__\n'
                "    raise RuntimeError(msg)\n",
                "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static. "
                f"Current value: mem_fraction_static={fraction}",
            )
        self.kv_pool()
        self.boot.compile_kernels(self.line)
        self.boot.capture_graphs()
        self.cuda_graphs()
        self.line(
            f"max_total_num_tokens={config.max_total_num_tokens}, chunked_prefill_size="
            f"{config.chunked_prefill_size or 8192}, max_prefill_tokens=16384, max_running_requests="
            f"{config.running_requests}, context_len={config.context_len}, available_gpu_mem=8.71 GB"
        )
        return self.serve()

    def shards(self, done: int) -> None:
        for n in range(done + 1):
            timing = "00:00<?, ?it/s" if n == 0 else f"00:{12 * n:02d}<00:{12 * (3 - n):02d}, 12.10s/it"
            raw(f"Loading safetensors checkpoint shards: {100 * n // 3:3d}% Completed | {n}/3 [{timing}]\n")
            time.sleep(self.step)

    def kv_pool(self) -> None:
        total = self.config.max_total_num_tokens
        self.line("Using KV cache dtype: torch.bfloat16")
        if architecture(self.config.model_path)[1] == "gpt_oss":
            swa = total * 4 // 5
            self.line(f"Use sliding window memory pool. full_layer_tokens={total}, swa_layer_tokens={swa}")
            self.line(f"KV Cache is allocated. #tokens: {swa}, K size: 11.18 GB, V size: 11.18 GB")
        self.line(f"KV Cache is allocated. #tokens: {total}, K size: 13.97 GB, V size: 13.97 GB")
        self.line("Memory pool end. avail mem=9.87 GB")

    def cuda_graphs(self) -> None:
        max_bs = self.config.cuda_graph_max_bs or 256
        ladder = (1, 2, 4, 8, 12, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256)
        sizes = [bs for bs in ladder if bs <= max_bs]
        self.line("Capture cuda graph begin. This can take up to several minutes. avail mem=9.31 GB")
        self.line(f"Capture cuda graph bs {sizes}")
        if self.fail == "cuda_oom":
            _scheduler_exception(
                f'  File "{_SITE}/srt/model_executor/cuda_graph_runner.py", line 412, in __init__\n'
                "    raise Exception(\n",
                "Exception: Capture cuda graph failed: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 "
                "has a total capacity of 79.19 GiB of which 1.05 GiB is free. Including non-PyTorch memory, "
                "this process has 78.13 GiB memory in use. Of the allocated memory 75.31 GiB is allocated by "
                "PyTorch, and 1.12 GiB is reserved by PyTorch but unallocated. If reserved but unallocated "
                "memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid "
                "fragmentation.  See documentation for Memory Management  "
                "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)\n"
                "Possible solutions:\n"
                "1. set --mem-fraction-static to a smaller value (e.g., 0.8 or 0.7)\n"
                "2. set --cuda-graph-max-bs to a smaller value (e.g., 16)\n"
                "3. disable torch compile by not using --enable-torch-compile\n"
                "4. disable CUDA graph by --disable-cuda-graph. (Not recommended. Huge performance loss)\n"
                "Open an issue on GitHub https://github.com/sgl-project/sglang/issues/new/choose \n",
            )
        raw(
            f"Capturing batches (bs=1 avail_mem=8.71 GB): 100%|██████████| {len(sizes)}/{len(sizes)} "
            "[00:09<00:00,  3.88it/s]\n"
        )
        self.line("Capture cuda graph end. Time elapsed: 9.41 s. mem usage=0.60 GB. avail mem=8.71 GB.")

    def serve(self) -> int:
        state = ServerState(
            self.config, access_log=True, decode_seconds=float(os.environ.get(DECODE_SECONDS_ENV, "0"))
        )
        runner = _Runner(state)
        ready_file = os.environ.get(READY_FILE_ENV)
        warmup = float(os.environ.get(WARMUP_ENV, "0.5"))

        def started(port: int) -> None:
            log(f"INFO:     Started server process [{os.getpid()}]")
            log("INFO:     Waiting for application startup.")
            log("INFO:     Application startup complete.")
            log(f"INFO:     Uvicorn running on http://{self.config.host}:{port} (Press CTRL+C to quit)")

        async def warm_up() -> None:
            await asyncio.sleep(warmup)
            while ready_file and not Path(ready_file).exists():
                await asyncio.sleep(0.05)
            log('INFO:     127.0.0.1:40512 - "GET /model_info HTTP/1.1" 200 OK')
            log(
                "Prefill batch, #new-seq: 1, #new-token: 7, #cached-token: 0, token usage: 0.00, "
                "#running-req: 0, #queue-req: 0, "
            )
            log('INFO:     127.0.0.1:40516 - "POST /generate HTTP/1.1" 200 OK')
            state.ready = True
            log("The server is fired up and ready to roll!")

        async def serve_until_signal() -> None:
            loop = asyncio.get_running_loop()
            serving = asyncio.ensure_future(runner.serve(started, warm_up))
            while runner.stop_requested is None:
                await asyncio.sleep(0.01)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, runner.stop_requested.set)
            await serving

        try:
            asyncio.run(serve_until_signal())
        except OSError as e:  # the port is taken, as uvicorn reports it
            log(
                f"ERROR:    [Errno {e.errno}] error while attempting to bind on address "
                f"('{self.config.host}', {self.config.port}): {e.strerror}"
            )
            return 1
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    # Inside a Daytona stand-in sandbox with remapped ports, "port 8000" is a distinct local port per sandbox.
    remapped = os.environ.get(f"DAYTONA_STANDIN_PORT_{config.port}")
    if remapped:
        config = dataclasses.replace(config, port=int(remapped))
    fail = os.environ.get(FAIL_ENV) or None
    if fail is not None and fail not in FAILURES:
        raw(f"{FAIL_ENV}={fail!r}: use one of {', '.join(FAILURES)}\n")
        return 2
    try:
        return Boot(config, fail, float(os.environ.get(LOG_STEP_ENV, "0.02"))).run()
    except KeyboardInterrupt:
        return 130
    except Exception:
        raw(traceback.format_exc())
        return 1


if __name__ == "__main__":
    sys.exit(main())
