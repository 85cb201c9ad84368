"""Forcing a tool call on llama.cpp, where ``tool_choice`` forces nothing (free text may come first).

The recipe, for the first request only:
- a ``logit_bias`` of +100 on the template's ``<tool_call>`` token (its id from ``/tokenize``), and the same
  ``presence_penalty``, so the token is neutral once emitted (otherwise the bias floods every JSON string);
- -100 on ``</tool_call>``, so it cannot appear inside a string and end the call early (the stop string);
- ``stop: ["</tool_call>"]``, ``parallel_tool_calls: false``, at least 256 tokens;
- in that request's tool schemas, free string arguments (no pattern, enum or format) limited to plain ASCII
  (``FORCED_STRING_CHARS``), 48 characters unless maxLength says otherwise. A random model almost never ends a
  string by itself, and its byte-level tokens can leave broken UTF-8 in one, which llama.cpp's grammar lets
  through but its tool-call parser then rejects with a 500. The arguments are schema-valid, not meaningful.
The requests after the forced call send ``tool_choice: "none"``: the model answers from the result.
"""

from __future__ import annotations

import copy
from typing import Any

from sandserve.engines.base import Tokenize
from sandserve.errors import CapabilityError

TOOL_CALL_TOKEN = "<tool_call>"
TOOL_CALL_END_TOKEN = "</tool_call>"
FORCING_BIAS = 100
FORCED_MIN_TOKENS = 256
#: No quote or backslash (the grammar puts pattern characters into the JSON string raw), ASCII only.
FORCED_STRING_CHARS = "[A-Za-z0-9 ,.:;!?'()/-]"
FORCED_STRING_MAX_LENGTH = 48


def forced_call_params(
    params: dict[str, Any], tool_specs: list[dict[str, Any]], tokenize: Tokenize
) -> dict[str, Any]:
    start, end = (
        _special_token_id(tokenize, TOOL_CALL_TOKEN),
        _special_token_id(tokenize, TOOL_CALL_END_TOKEN),
    )
    extra = dict(params.get("extra_body") or {})
    extra["chat_template_kwargs"] = {**extra.get("chat_template_kwargs", {}), "enable_thinking": False}
    return {
        **params,
        "tools": [_bounded_strings(spec) for spec in tool_specs],
        "logit_bias": {str(start): FORCING_BIAS, str(end): -FORCING_BIAS},
        "presence_penalty": FORCING_BIAS,
        "stop": [TOOL_CALL_END_TOKEN],
        "parallel_tool_calls": False,
        "max_tokens": max(int(params.get("max_tokens") or 0), FORCED_MIN_TOKENS),
        "extra_body": extra,
    }


def _special_token_id(tokenize: Tokenize, text: str) -> int:
    """The id of ``text`` as one token of the model's vocabulary (``<tool_call>``...)."""
    tokens = tokenize(text)
    if len(tokens) != 1:
        raise CapabilityError(
            "Forcing a tool call",
            "llamacpp",
            hint="The recipe needs a chat template whose calls are wrapped in the single tokens "
            f"{TOOL_CALL_TOKEN} and {TOOL_CALL_END_TOKEN} (Hermes/Qwen style); this model's are not. "
            "Serve with SGLang, where tool_choice forces the call.",
        )
    token = tokens[0]
    return int(token["id"] if isinstance(token, dict) else token)


def _bounded_strings(spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    _cap_strings(spec["function"]["parameters"])
    return spec


def _cap_strings(schema: Any) -> None:
    if not isinstance(schema, dict):
        return
    free_string = schema.get("type") == "string" and not {"enum", "const", "pattern", "format"} & set(schema)
    if free_string:
        low = int(schema.pop("minLength", 0))
        high = max(low, int(schema.pop("maxLength", FORCED_STRING_MAX_LENGTH)))
        schema["pattern"] = f"^{FORCED_STRING_CHARS}{{{low},{high}}}$"
    for child in (schema.get("properties") or {}).values():
        _cap_strings(child)
    for key in ("items", "additionalProperties"):
        _cap_strings(schema.get(key))
    for key in ("anyOf", "oneOf", "allOf"):
        for child in schema.get(key) or []:
            _cap_strings(child)
